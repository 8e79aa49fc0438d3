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

    /// Asks the job to stop without waiting for it ([`Job::stop`] waits).
    pub fn request_stop(&self) {
        self.token.cancel();
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

/// A sync job running as a separate process (the `ferry` program), so it can be killed with SIGKILL.
pub struct ProcJob {
    child: std::process::Child,
    /// The address of its status endpoint, once it logged it.
    status_addr: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl ProcJob {
    /// Starts `ferry sync` with checkpoints (db 15) and `--flush-target-on-resync`.
    pub fn start(source: &Server, target: &Server) -> ProcJob {
        let db = CHECKPOINT_DB.to_string();
        ProcJob::start_with(source, target, &["--checkpoint-db", &db])
    }

    /// Starts `ferry sync` into a cluster (`target` is one of its masters); the workload's database 1 is
    /// filtered out (a cluster has only database 0).
    pub fn start_cluster(source: &Server, target: &Server) -> ProcJob {
        ProcJob::start_with(
            source,
            target,
            &["--target-type", "cluster", "--block-db", "1"],
        )
    }

    /// Starts `ferry sync` with checkpoints, `--flush-target-on-resync`, `--conflict rewrite` and `extra`
    /// arguments.
    pub fn start_with(source: &Server, target: &Server, extra: &[&str]) -> ProcJob {
        let defaults = ["--flush-target-on-resync", "--conflict", "rewrite"];
        ProcJob::start_args(source, target, &[&defaults[..], extra].concat())
    }

    /// Starts `ferry sync` with the job's defaults and only `args` (a status endpoint is always added).
    pub fn start_args(source: &Server, target: &Server, args: &[&str]) -> ProcJob {
        let bin = ferry_binary();
        let mut child = std::process::Command::new(&bin)
            .args(["sync", "--source", &source.url(), "--target", &target.url()])
            .args(["--status-addr", "127.0.0.1:0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .expect("start ferry sync");
        let stderr = child.stderr.take().unwrap();
        let status_addr = std::sync::Arc::new(std::sync::Mutex::new(None));
        let sink = status_addr.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("status at http://").nth(1) {
                    *sink.lock().unwrap() = rest.split('/').next().map(str::to_string);
                }
            }
        });
        ProcJob { child, status_addr }
    }

    /// The job's status as `phase=<phase> offset=<applied offset> full_syncs=<n> ...`, read from its status
    /// endpoint (empty until it answers).
    pub fn status_line(&self) -> String {
        let Some(addr) = self.status_addr.lock().unwrap().clone() else {
            return String::new();
        };
        let Some(body) = http_get(&addr, "/status") else {
            return String::new();
        };
        let Ok(s) = serde_json::from_str::<serde_json::Value>(&body) else {
            return String::new();
        };
        format!(
            "phase={} offset={} full_syncs={} reconnects={} last_error={}",
            s["phase"].as_str().unwrap_or(""),
            s["shards"][0]["applied_offset"].as_u64().unwrap_or(0),
            s["full_syncs"].as_u64().unwrap_or(0),
            s["reconnects"].as_u64().unwrap_or(0),
            s["last_error"]
        )
    }

    fn field(&self, name: &str) -> Option<String> {
        let line = self.status_line();
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
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

/// A plain HTTP GET on the loopback: the body, or `None` when the endpoint does not answer (yet).
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The `ferry` program's binary, built with the cargo that runs the tests (the process tests of the sync job
/// run the product, which replaced the old `sync` example).
fn ferry_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .unwrap()
                .to_path_buf();
            let bin = profile_dir.join("ferry");
            let target_dir = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "-p", "ferry", "--bin", "ferry", "--target-dir"])
                .arg(target_dir)
                .status()
                .expect("run cargo to build the ferry program");
            assert!(status.success(), "building the ferry program failed");
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

/// Copies bytes both ways between two connected sockets, each way on a thread of its own; each side is shut
/// down when the other ends (a relay in front of a server, for tests that cut or hold links).
pub fn relay(client: std::net::TcpStream, server: std::net::TcpStream) {
    use std::io::{Read, Write};
    let pairs = [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ];
    for (mut from, mut to) in pairs {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}
