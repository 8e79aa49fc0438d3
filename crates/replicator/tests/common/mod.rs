//! Helpers shared by the integration tests: a job running in the background, a mixed write workload, and
//! waits with generous deadlines.

#![allow(dead_code)]

use std::thread::JoinHandle;
use std::time::Duration;

use ferry_replicator::{Config, Phase, Replicator, Status, StatusHandle};
use ferry_resp::ConnectOptions;
use ferry_testkit::{compare, CompareOptions, Server, Target};
use tokio_util::sync::CancellationToken;

/// Every wait of the tests: long, since the machine may be loaded.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// The database the tests keep checkpoints in, apart from the data.
pub const CHECKPOINT_DB: i64 = 15;

/// A sync job running on its own runtime thread.
pub struct Job {
    pub status: StatusHandle,
    token: CancellationToken,
    thread: Option<JoinHandle<Result<(), ferry_replicator::Error>>>,
}

impl Job {
    /// Starts a job from `source` to `target`, after `tweak` adjusts the configuration.
    pub fn start(source: &Server, target: &Server, tweak: impl FnOnce(&mut Config)) -> Job {
        let mut config = config(source, target);
        tweak(&mut config);
        Job::start_with(config)
    }

    /// Starts a job with a full configuration.
    pub fn start_with(config: Config) -> Job {
        let job = Replicator::new(config).expect("valid configuration");
        let status = job.status();
        let token = CancellationToken::new();
        let t = token.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(job.run(t))
        });
        Job {
            status,
            token,
            thread: Some(thread),
        }
    }

    /// Stops the job and returns how it ended.
    pub fn stop(mut self) -> Result<(), ferry_replicator::Error> {
        self.token.cancel();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("job thread panicked")
    }

    /// Waits until the job applied everything the source has written so far.
    pub fn wait_caught_up(&self, source: &Server) {
        let target_offset = master_offset(source);
        self.wait_live("the job to apply the source's offset", |s| {
            s.applied_offset >= target_offset
        });
    }

    /// Waits until the job is in the live phase.
    pub fn wait_incremental(&self) {
        self.wait_live("the job to reach the live phase", |_| true);
    }

    /// Waits until the job is in the live phase and `done` holds; fails at once if the job stopped.
    fn wait_live(&self, what: &str, done: impl Fn(&Status) -> bool) {
        ferry_testkit::wait_until(DEADLINE, what, || {
            let s = self.status.snapshot();
            assert!(s.phase != Phase::Stopped, "the job stopped: {s}");
            s.phase == Phase::Incremental && done(&s)
        })
        .unwrap_or_else(|e| panic!("{e}; status: {}", self.status.snapshot()));
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The default test configuration: checkpoints in db 15.
pub fn config(source: &Server, target: &Server) -> Config {
    let mut config = Config::new(
        ConnectOptions::from_url(&source.url()).unwrap(),
        ConnectOptions::from_url(&target.url()).unwrap(),
    );
    config.sink.checkpoint_db = CHECKPOINT_DB;
    config.reconnect_backoff = Duration::from_millis(200);
    config
}

/// The source's `master_repl_offset`.
pub fn master_offset(server: &Server) -> u64 {
    let info = server.info("replication").expect("INFO replication");
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("master_repl_offset in INFO")
}

/// Asserts that the data databases (0, 1, 2) of both servers are equal.
pub fn assert_same_data(source: &Server, target: &Server, functions: bool) {
    let opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .functions(functions);
    let report = compare(&Target::from(source), &Target::from(target), &opts).expect("compare");
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
}

/// Runs a mixed write workload on `server`: INCR, APPEND, expiries, MULTI/EXEC, EVAL, XADD/XREADGROUP/XACK,
/// deletes, in databases 0 and 1. Returns how many times the counter was incremented.
pub fn workload(server: &Server, rounds: u64, tag: &str) -> u64 {
    workload_on(&mut server.client(), rounds, tag)
}

/// `workload` on a connection.
pub fn workload_on(c: &mut redis::Connection, rounds: u64, tag: &str) -> u64 {
    let counter = format!("ferry:counter:{tag}");
    let stream = format!("ferry:stream:{tag}");
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query(c);
    for i in 0..rounds {
        redis::cmd("INCR").arg(&counter).exec(c).unwrap();
        redis::cmd("APPEND")
            .arg(format!("ferry:log:{tag}"))
            .arg(format!("{i},"))
            .exec(c)
            .unwrap();
        redis::cmd("SET")
            .arg(format!("ferry:ttl:{tag}:{i}"))
            .arg(i)
            .arg("EX")
            .arg(100_000)
            .exec(c)
            .unwrap();
        redis::cmd("SET")
            .arg(format!("ferry:short:{tag}:{i}"))
            .arg(i)
            .arg("PX")
            .arg(5)
            .exec(c)
            .unwrap();
        redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(format!("ferry:txn:{tag}:a"))
            .cmd("HSET")
            .arg(format!("ferry:txn:{tag}:h"))
            .arg(format!("f{}", i % 50))
            .arg(i)
            .exec(c)
            .unwrap();
        redis::cmd("EVAL")
            .arg("redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], ARGV[1]); return 1")
            .arg(2)
            .arg(format!("ferry:lua:{tag}:n"))
            .arg(format!("ferry:lua:{tag}:l"))
            .arg(i)
            .exec(c)
            .unwrap();
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("i")
            .arg(i)
            .exec(c)
            .unwrap();
        if i % 3 == 0 {
            let read: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c1")
                .arg("COUNT")
                .arg(2)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query(c)
                .unwrap();
            if let Some(id) = first_stream_id(&read) {
                redis::cmd("XACK")
                    .arg(&stream)
                    .arg("g")
                    .arg(id)
                    .exec(c)
                    .unwrap();
            }
        }
        if i % 5 == 0 {
            redis::cmd("DEL")
                .arg(format!("ferry:ttl:{tag}:{}", i / 2))
                .exec(c)
                .unwrap();
            redis::cmd("SELECT").arg(1).exec(c).unwrap();
            redis::cmd("SADD")
                .arg(format!("ferry:db1:{tag}"))
                .arg(i)
                .exec(c)
                .unwrap();
            redis::cmd("SELECT").arg(0).exec(c).unwrap();
        }
    }
    rounds
}

fn first_stream_id(v: &redis::Value) -> Option<String> {
    // [[stream, [[id, [f, v]], ...]]]
    let redis::Value::Array(streams) = v else {
        return None;
    };
    let redis::Value::Array(pair) = streams.first()? else {
        return None;
    };
    let redis::Value::Array(entries) = pair.get(1)? else {
        return None;
    };
    let redis::Value::Array(entry) = entries.first()? else {
        return None;
    };
    match entry.first()? {
        redis::Value::BulkString(id) => Some(String::from_utf8_lossy(id).into_owned()),
        _ => None,
    }
}

/// Touches the short-lived keys of `workload` so the source expires them now (lazy expiry) and replicates
/// their deletion, instead of whenever its active expiry gets to them.
pub fn expire_short_keys(server: &Server, rounds: u64, tag: &str) {
    let mut c = server.client();
    for i in 0..rounds {
        let key = format!("ferry:short:{tag}:{i}");
        ferry_testkit::wait_until(DEADLINE, "a 5 ms key to expire", || {
            redis::cmd("EXISTS").arg(&key).query::<u64>(&mut c).unwrap() == 0
        })
        .unwrap();
    }
}

/// The counter of `workload` on a server.
pub fn counter(server: &Server, tag: &str) -> u64 {
    let mut c = server.client();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("ferry:counter:{tag}"))
        .query(&mut c)
        .unwrap();
    v.unwrap_or(0)
}

/// A sync job running as a separate process (the `sync` example), so it can be killed with SIGKILL.
pub struct ProcJob {
    child: std::process::Child,
    last: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ProcJob {
    /// Starts `examples/sync` with checkpoints (db 15) and `--flush-on-resync`.
    pub fn start(source: &Server, target: &Server) -> ProcJob {
        let db = CHECKPOINT_DB.to_string();
        ProcJob::start_with(source, target, &["--checkpoint-db", &db])
    }

    /// Starts `examples/sync` into a cluster (`target` is one of its masters); the workload's database 1 is
    /// filtered out (a cluster has only database 0).
    pub fn start_cluster(source: &Server, target: &Server) -> ProcJob {
        ProcJob::start_with(source, target, &["--target-cluster", "--block-db", "1"])
    }

    /// Starts `examples/sync` with checkpoints, `--flush-on-resync`, `--conflict rewrite` and `extra` arguments.
    pub fn start_with(source: &Server, target: &Server, extra: &[&str]) -> ProcJob {
        let bin = sync_example();
        let mut child = std::process::Command::new(&bin)
            .args([
                "--source",
                &source.url(),
                "--target",
                &target.url(),
                "--checkpoint",
            ])
            .args(["--flush-on-resync", "--conflict", "rewrite"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the sync example");
        let stdout = child.stdout.take().unwrap();
        let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = last.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                *sink.lock().unwrap() = line;
            }
        });
        ProcJob { child, last }
    }

    /// The last status line printed.
    pub fn status_line(&self) -> String {
        self.last.lock().unwrap().clone()
    }

    fn field(&self, name: &str) -> Option<String> {
        let line = self.status_line();
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_end_matches('B').to_string())
    }

    /// Waits until the job has applied everything the source wrote so far.
    pub fn wait_caught_up(&self, source: &Server) {
        let target_offset = master_offset(source);
        ferry_testkit::wait_until(
            DEADLINE,
            "the sync process to apply the source's offset",
            || {
                self.status_line().starts_with("phase=incremental")
                    && self
                        .field("offset")
                        .and_then(|o| o.parse::<u64>().ok())
                        .unwrap_or(0)
                        >= target_offset
            },
        )
        .unwrap_or_else(|e| panic!("{e}; last status: {}", self.status_line()));
    }

    /// How many full syncs the process did.
    pub fn full_syncs(&self) -> u64 {
        self.field("full_syncs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ProcJob {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sync` example's binary, built with the cargo that runs the tests (a plain `cargo test` builds it already;
/// `cargo test --test faults` does not).
fn sync_example() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .unwrap()
                .to_path_buf();
            let bin = profile_dir.join("examples").join("sync");
            let target_dir = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "ferry-replicator",
                    "--example",
                    "sync",
                    "--target-dir",
                ])
                .arg(target_dir)
                .status()
                .expect("run cargo to build the sync example");
            assert!(status.success(), "building the sync example failed");
            assert!(bin.exists(), "{} is missing after the build", bin.display());
            bin
        })
        .clone()
}

/// The checkpoint value stored in the target (db 15), if any.
pub fn checkpoint_value(target: &Server) -> Option<String> {
    let mut c = target.client();
    redis::cmd("SELECT")
        .arg(CHECKPOINT_DB)
        .exec(&mut c)
        .unwrap();
    redis::cmd("GET")
        .arg("ferry:checkpoint:{ferry}")
        .query(&mut c)
        .unwrap()
}

/// Runs `workload` on another thread.
pub fn workload_in_background(server: &Server, rounds: u64, tag: &str) -> JoinHandle<u64> {
    let url = server.url();
    let tag = tag.to_string();
    std::thread::spawn(move || workload_url(&url, rounds, &tag))
}

/// `workload` against a URL (for threads).
pub fn workload_url(url: &str, rounds: u64, tag: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    workload_on(&mut c, rounds, tag)
}
