//! Sync benchmarks: full sync of N small keys by ferry side by side with a native Redis replica (REPLICAOF) of
//! the same source, the live phase against redis-benchmark, and the peak memory of the job.
//!
//! ```text
//! cargo bench -p ferry-benches --bench sync                       # 1M and 5M keys, live phase
//! FERRY_SYNC_KEYS=200000 cargo bench -p ferry-benches --bench sync
//! FERRY_SYNC_MEMORY=1 cargo bench -p ferry-benches --bench sync   # + 2 GB dataset and one 500 MB hash
//! FERRY_SYNC_TARGETS=1 cargo bench -p ferry-benches --bench sync  # only: standalone vs 3+0 and 3+3 cluster targets
//! ```

use std::time::{Duration, Instant};

use ferry_benches::{
    data_keys, dbsize, link_up, peak_rss_mib, populate, redis_benchmark, server, wait_timed,
};
use ferry_replicator::{Config, Phase, Replicator, StatusHandle};
use ferry_resp::ConnectOptions;
use ferry_testkit::{wait_until, Server, Version};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(3600);

fn main() {
    let keys: Vec<u64> = std::env::var("FERRY_SYNC_KEYS")
        .unwrap_or_else(|_| "1000000,5000000".into())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    if std::env::var("FERRY_SYNC_TARGETS").is_ok() {
        let rounds = std::env::var("FERRY_SYNC_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(2);
        for &n in &keys {
            standalone_vs_cluster(n, rounds);
        }
        return;
    }
    println!("| keys | native replica | ferry | ferry / native | ferry keys/s | ferry peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in &keys {
        full_sync(n);
    }
    if let Some(&n) = keys.first() {
        full_sync_cluster(n);
    }
    live_phase();
    if std::env::var("FERRY_SYNC_MEMORY").is_ok() {
        memory_big_dataset();
        memory_big_key();
    }
}

fn info_field(server: &Server, section: &str, field: &str) -> Option<String> {
    let info = server.info(section).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// Resets the kernel's peak-RSS counter of this process.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct RunningJob {
    status: StatusHandle,
    token: CancellationToken,
    thread: std::thread::JoinHandle<Result<(), ferry_replicator::Error>>,
}

fn start_job(source: &Server, target: &Server) -> RunningJob {
    start_job_with(source, target, false)
}

fn start_job_with(source: &Server, target: &Server, cluster: bool) -> RunningJob {
    let mut config = Config::new(
        ConnectOptions::from_url(&source.url()).unwrap(),
        ConnectOptions::from_url(&target.url()).unwrap(),
    );
    config.target_cluster = cluster;
    if !cluster {
        config.sink.checkpoint_db = 15; // keep db 0 for the data, so DBSIZE counts only copied keys
    }
    let job = Replicator::new(config).unwrap();
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
    RunningJob {
        status,
        token,
        thread,
    }
}

impl RunningJob {
    fn stop(self) {
        self.token.cancel();
        self.thread.join().unwrap().unwrap();
    }
}

/// What one timed full sync took.
struct FullSyncRun {
    took: Duration,
    rss_mib: f64,
    cpu_seconds: f64,
}

/// Runs a job from `source` to `target` until its full sync is applied, then stops it.
fn timed_full_sync(source: &Server, target: &Server, cluster: bool, what: &str) -> FullSyncRun {
    reset_peak_rss();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let job = start_job_with(source, target, cluster);
    let status = job.status.clone();
    wait_timed(what, || status.snapshot().phase == Phase::Incremental);
    let took = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let rss_mib = peak_rss_mib("self").unwrap_or(0.0);
    job.stop();
    FullSyncRun {
        took,
        rss_mib,
        cpu_seconds: cpu,
    }
}

fn full_sync(n: u64) {
    let source = server(&[]);
    populate(&source, n, "key", 16);

    // Native: a replica of the same source, timed from REPLICAOF to the dataset loaded.
    let replica = server(&[]);
    let mut r = replica.client();
    let started = Instant::now();
    redis::cmd("REPLICAOF")
        .arg(source.host())
        .arg(source.port())
        .exec(&mut r)
        .unwrap();
    wait_timed("the native replica to load", || {
        info_field(&replica, "replication", "master_link_status").as_deref() == Some("up")
            && dbsize(&replica) == n
    });
    let native = started.elapsed();
    drop(replica);

    let target = server(&[]);
    let run = timed_full_sync(&source, &target, false, "ferry's full sync");
    eprintln!(
        "ferry process CPU during the full sync: {:.2} s",
        run.cpu_seconds
    );
    let (ferry, rss) = (run.took, run.rss_mib);
    assert_eq!(dbsize(&target), n, "every key copied");
    let restore = target.info("commandstats").unwrap_or_default();
    let restore = restore
        .lines()
        .find(|l| l.starts_with("cmdstat_restore:"))
        .unwrap_or("")
        .to_string();
    eprintln!("target {restore}");
    println!(
        "| {n} | {:.2} s | {:.2} s | {:.2}x | {:.0} | {:.0} MiB |",
        native.as_secs_f64(),
        ferry.as_secs_f64(),
        ferry.as_secs_f64() / native.as_secs_f64(),
        n as f64 / ferry.as_secs_f64(),
        rss
    );
}

/// The same full sync into a 3-master cluster (small strings as one `MSET` per slot, routed by slot).
fn full_sync_cluster(n: u64) {
    let source = server(&[]);
    populate(&source, n, "key", 16);
    let cluster = ferry_testkit::Cluster::start(Version::V7_0).expect("start a cluster");
    let entry = cluster.masters()[0];
    let run = timed_full_sync(&source, entry, true, "ferry's full sync into the cluster");
    let (took, rss) = (run.took, run.rss_mib);
    assert_eq!(data_keys(&cluster.masters()), n, "every key copied");
    println!();
    println!(
        "| {n} keys into a 3-master cluster | {:.2} s | {:.0} keys/s | ferry peak RSS {rss:.0} MiB |",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// The same full copy into a standalone target, a standalone target with one replica (1+1), a 3+0 cluster (3
/// masters, no replicas) and a 3+3 cluster, from one source, in the same run: `rounds` of each, the order rotated
/// every round, each into a fresh target. The 3+0 row tells how much of the 3+3 cluster's cost is its replicas
/// applying the same writes on the same cores; the 1+1 row is the standalone copy with that same replica work (one
/// replica per master), so 3+3 against 1+1 compares like with like on this machine.
fn standalone_vs_cluster(n: u64, rounds: u32) {
    let source = server(&[]);
    populate(&source, n, "key", 16);
    println!("| round | keys | standalone | standalone + replica (1+1) | 3+0 cluster | 3+3 cluster | 3+0 / standalone | 3+3 / standalone | 3+3 / 1+1 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let standalone = |with_replica: bool| {
        let target = server(&[]);
        let replica = with_replica.then(|| {
            let replica = server(&[]);
            redis::cmd("REPLICAOF")
                .arg(target.host())
                .arg(target.port())
                .exec(&mut replica.client())
                .unwrap();
            wait_until(DEADLINE, "the target's replica to attach", || {
                link_up(&replica)
            })
            .unwrap();
            replica
        });
        let run = timed_full_sync(&source, &target, false, "ferry's full sync");
        assert_eq!(dbsize(&target), n, "every key copied");
        if let Some(replica) = replica {
            // The replica holds what its master holds (as with the 3+3 cluster's replicas below).
            wait_until(DEADLINE, "the target's replica to catch up", || {
                dbsize(&replica) == dbsize(&target)
            })
            .unwrap();
        }
        run.took
    };
    let cluster = |replicas_per_master: usize| {
        let mut opts = ferry_testkit::ClusterOptions::new(Version::V7_0);
        opts.replicas_per_master = replicas_per_master;
        let cluster = ferry_testkit::Cluster::start_with(opts).expect("start a cluster");
        let entry = cluster.masters()[0];
        let run = timed_full_sync(&source, entry, true, "ferry's full sync into the cluster");
        assert_eq!(data_keys(&cluster.masters()), n, "every key copied");
        if replicas_per_master > 0 {
            // The replicas hold what their masters hold (the cost of the row includes their applying it).
            wait_until(DEADLINE, "the target's replicas to catch up", || {
                data_keys(&cluster.replicas()) == n
            })
            .unwrap();
        }
        run.took
    };
    for round in 1..=rounds {
        let mut took = [Duration::ZERO; 4];
        for i in 0..4 {
            let kind = (i + round as usize - 1) % 4;
            took[kind] = match kind {
                0 => standalone(false),
                1 => standalone(true),
                2 => cluster(0),
                _ => cluster(1),
            };
        }
        let [s, s1, c0, c1] = took.map(|d| d.as_secs_f64());
        println!(
            "| {round} | {n} | {s:.2} s | {s1:.2} s | {c0:.2} s | {c1:.2} s | {:.2}x | {:.2}x | {:.2}x |",
            c0 / s,
            c1 / s,
            c1 / s1
        );
    }
}

fn live_phase() {
    let requests = 1_000_000u64;
    // redis-benchmark straight into a server: what the target can take.
    let direct = server(&[]);
    let (direct_time, _) = redis_benchmark(&direct, requests, false);
    drop(direct);

    let source = server(&[]);
    let target = server(&[]);
    let job = start_job(&source, &target);
    let status = job.status.clone();
    wait_until(DEADLINE, "the live phase", || {
        status.snapshot().phase == Phase::Incremental
    })
    .unwrap();
    reset_peak_rss();
    let sampler = {
        let status = status.clone();
        std::thread::spawn(move || {
            let mut max_lag = (0u64, 0f64);
            let mut max_ops = 0f64;
            let started = Instant::now();
            while started.elapsed() < DEADLINE {
                let s = status.snapshot();
                max_lag.0 = max_lag.0.max(s.lag_bytes);
                max_lag.1 = max_lag.1.max(s.lag_seconds);
                max_ops = max_ops.max(s.ops_per_sec);
                if s.phase == Phase::Stopped {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (max_lag, max_ops)
        })
    };
    let started = Instant::now();
    let (source_time, _) = redis_benchmark(&source, requests, false);
    let offset: u64 = info_field(&source, "replication", "master_repl_offset")
        .unwrap()
        .parse()
        .unwrap();
    wait_timed("the job to catch up", || {
        status.snapshot().applied_offset >= offset
    });
    let caught_up = started.elapsed();
    let applied = status.snapshot().commands_applied;
    let rss = peak_rss_mib("self").unwrap_or(0.0);
    job.stop();
    let ((lag_bytes, lag_secs), max_ops) = sampler.join().unwrap();
    println!();
    println!(
        "| live phase ({} commands of SET/INCR/LPUSH/HSET, 50 clients, pipeline 16) | |",
        applied
    );
    println!("|---|---:|");
    println!(
        "| redis-benchmark into one server directly | {:.0} ops/s |",
        (4 * requests) as f64 / direct_time.as_secs_f64()
    );
    println!(
        "| redis-benchmark into the source | {:.0} ops/s |",
        (4 * requests) as f64 / source_time.as_secs_f64()
    );
    println!(
        "| ferry applying the stream (until caught up) | {:.0} ops/s |",
        applied as f64 / caught_up.as_secs_f64()
    );
    println!("| ferry peak ops/s over one second | {max_ops:.0} ops/s |");
    println!("| max lag | {lag_bytes} bytes, {lag_secs:.1} s |");
    println!("| ferry peak RSS | {rss:.0} MiB |");
}

fn memory_big_dataset() {
    let source = server(&[]);
    // 2.1 M keys of 1000 bytes: over 2 GB of values.
    populate(&source, 2_100_000, "big", 1000);
    let used = info_field(&source, "memory", "used_memory_human").unwrap_or_default();
    let target = server(&[]);
    let run = timed_full_sync(&source, &target, false, "the 2 GB full sync");
    let (took, rss) = (run.took, run.rss_mib);
    println!();
    println!(
        "| 2.1 M keys x 1000 B (source used_memory {used}) | full sync {:.1} s | ferry peak RSS {rss:.0} MiB |",
        took.as_secs_f64()
    );
}

fn memory_big_key() {
    let source = server(&[("rdbcompression", "no"), ("proto-max-bulk-len", "1gb")]);
    let mut c = source.client();
    // One hash of 520,000 fields x 1000 bytes (distinct values, no compression): about 520 MB.
    let script = "for i = 1, 520000 do \
        redis.call('HSET', KEYS[1], i, string.rep(redis.sha1hex(tostring(i)), 25)) end return 1";
    redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("bighash")
        .exec(&mut c)
        .unwrap();
    let used = info_field(&source, "memory", "used_memory_human").unwrap_or_default();
    let target = server(&[]);
    let run = timed_full_sync(&source, &target, false, "the big key's full sync");
    let (took, rss) = (run.took, run.rss_mib);
    let mut t = target.client();
    let fields: u64 = redis::cmd("HLEN").arg("bighash").query(&mut t).unwrap();
    assert_eq!(fields, 520_000);
    println!(
        "| one hash of 520,000 x 1000 B fields (source used_memory {used}) | full sync {:.1} s | ferry peak RSS {rss:.0} MiB |",
        took.as_secs_f64()
    );
}
