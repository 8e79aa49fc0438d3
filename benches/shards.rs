//! A 3-shard source into a 3-shard target, in one run: the `ferry` program (one job, one PSYNC stream per source
//! shard) side by side with the shards' native replicas, then the live apply rate with writes on all shards.
//!
//! - **Source**: a cluster of 3 masters (no replicas) filled with N strings of 16 bytes (`fill:<i>`), each
//!   written on the master that owns its slot: one pipelined `MSET` per slot and chunk of keys, so a cluster
//!   that accepts them holds every key in its slot (`DEBUG POPULATE` on each master would not: it writes keys
//!   whatever their slot; testkit's `fill` is slot-correct but writes a fixed mix of every type, not N small
//!   strings). The masters' output buffer for replicas is unlimited, so a lagging stream is not cut.
//! - **Native replicas**: three fresh standalone servers each `REPLICAOF` one source master, sent back to back;
//!   timed until all three have `master_link_status:up` with their master's key count.
//! - **ferry**, for each target (a fresh 3-master cluster, then a fresh 3+3 cluster): `ferry sync --source-type
//!   cluster --target-type cluster --until-caught-up`, as a user runs a one-time copy, timed to its exit (every
//!   shard caught up), with the peak RSS of the process. Then the target holds the N keys (counted without
//!   ferry's own `ferry:` keys).
//! - **Live phase**, for each target: `ferry sync` resumed from the checkpoints the copy left (no shard makes a
//!   new full copy: its status says so) with `--status-addr`; `redis-benchmark --cluster` writes SET, INCR,
//!   LPUSH and HSET on all three masters at once. ferry's rate is the commands its shards' statuses count from
//!   the start of the writes until every shard's applied offset reaches its master's `master_repl_offset`; its
//!   peak is the most commands applied in a window of at least one second, from the status sampled every 100 ms
//!   (stderr says how many samples and the longest gap). The commands the source executed (`INFO
//!   commandstats`) are printed beside, and at the end the target holds as many keys as the source; then the
//!   benchmark's keys are deleted from the source, so the next target copies the same N keys.
//!
//! ```text
//! cargo bench -p ferry-benches --bench shards                         # 3M keys, 1M requests per command
//! FERRY_SHARDS_KEYS=30000 FERRY_SHARDS_REQUESTS=20000 cargo bench -p ferry-benches --bench shards
//! FERRY_SHARDS_TARGETS=0 cargo bench -p ferry-benches --bench shards  # replicas per target master: 3+0 only
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::{Phase, Status};
use ferry_benches::{
    data_keys, dbsize, ferry_binary, link_up, peak_rss_mib, redis_benchmark, run_ferry, scan,
    server, wait_timed,
};
use ferry_testkit::{key_slot, wait_for, Cluster, ClusterOptions, Server, Version, SLOTS};

const DEADLINE: Duration = Duration::from_secs(3600);
/// Keys generated per round of the fill (each master keeps those of its slots).
const FILL_CHUNK: u64 = 300_000;
/// The prefix of the filled keys; every other key of the source is the live phase's.
const FILL_PREFIX: &str = "fill:";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env("FERRY_SHARDS_KEYS", 3_000_000);
    let requests = env("FERRY_SHARDS_REQUESTS", 1_000_000);
    let targets: Vec<usize> = std::env::var("FERRY_SHARDS_TARGETS")
        .unwrap_or_else(|_| "0,1".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let ferry = ferry_binary();

    let source = cluster(0);
    let masters = source.masters();
    for m in &masters {
        // The live phase may leave ferry behind by more than the default limits of a replica's output buffer.
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("client-output-buffer-limit")
            .arg("replica 0 0 0")
            .exec(&mut m.client())
            .unwrap();
    }
    let filled = Instant::now();
    fill(&masters, n);
    let per_master: Vec<u64> = masters.iter().map(|m| dbsize(m)).collect();
    assert_eq!(per_master.iter().sum::<u64>(), n, "every key filled");
    eprintln!(
        "filled {n} keys in {:.1} s, per master {per_master:?}",
        filled.elapsed().as_secs_f64()
    );

    let native = native_replicas(&masters);
    let mut copies = Vec::new();
    let mut lives = Vec::new();
    for &replicas in &targets {
        let target = cluster(replicas);
        copies.push((replicas, copy(&ferry, &source, &target, n)));
        lives.push((replicas, live(&ferry, &source, &target, requests)));
        delete_live_keys(&masters);
    }

    println!("| {n} keys, 3 source shards | time | x native | keys/s | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| 3 native replicas (REPLICAOF, in parallel) | {:.2} s | 1.00x | {:.0} | |",
        native.as_secs_f64(),
        n as f64 / native.as_secs_f64()
    );
    for (replicas, c) in &copies {
        println!(
            "| ferry sync into a 3+{} cluster (to exit) | {:.2} s | {:.2}x | {:.0} | {:.0} MiB |",
            3 * replicas,
            c.took.as_secs_f64(),
            c.took.as_secs_f64() / native.as_secs_f64(),
            n as f64 / c.took.as_secs_f64(),
            c.rss_mib
        );
    }
    println!();
    println!(
        "live phase: redis-benchmark --cluster on the 3 source masters, {requests} x SET/INCR/LPUSH/HSET, 50 clients, pipeline 16"
    );
    println!("| target | redis-benchmark into the source | ferry applied / source executed | start of writes to every shard caught up | ferry applying | ferry peak over one second | ferry peak RSS (resume + live) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (replicas, l) in &lives {
        println!(
            "| 3+{} cluster | {:.0} ops/s | {} / {} | {:.2} s | {:.0} ops/s | {:.0} ops/s | {:.0} MiB |",
            3 * replicas,
            (4 * requests) as f64 / l.writes.as_secs_f64(),
            l.applied,
            l.written,
            l.caught_up.as_secs_f64(),
            l.applied as f64 / l.caught_up.as_secs_f64(),
            l.peak_ops,
            l.rss_mib
        );
    }
}

/// A testkit cluster of 3 masters with `replicas` replicas each.
fn cluster(replicas: usize) -> Cluster {
    let mut opts = ClusterOptions::new(Version::V7_0);
    opts.replicas_per_master = replicas;
    Cluster::start_with(opts).expect("start a cluster")
}

/// The index in `masters` of the owner of every slot (`CLUSTER SLOTS` of the first master).
fn slot_owners(masters: &[&Server]) -> Vec<usize> {
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut masters[0].client())
        .unwrap();
    let mut owners = vec![usize::MAX; usize::from(SLOTS)];
    for range in ranges {
        let (redis::Value::Int(first), redis::Value::Int(last), redis::Value::Array(node)) =
            (&range[0], &range[1], &range[2])
        else {
            panic!("CLUSTER SLOTS: unexpected entry {range:?}")
        };
        let redis::Value::Int(port) = node[1] else {
            panic!("CLUSTER SLOTS: unexpected node {node:?}")
        };
        let owner = masters
            .iter()
            .position(|m| i64::from(m.port()) == port)
            .expect("a slot owned by a known master");
        for slot in *first..=*last {
            owners[slot as usize] = owner;
        }
    }
    assert!(owners.iter().all(|&o| o != usize::MAX), "every slot owned");
    owners
}

/// Writes `fill:0` .. `fill:<n-1>` (16-byte values), each key on the master owning its slot: one thread per
/// master, one pipelined `MSET` per slot and chunk of keys (the cluster refuses a key outside the node's slots).
fn fill(masters: &[&Server], n: u64) {
    let owners = slot_owners(masters);
    std::thread::scope(|scope| {
        for (me, master) in masters.iter().enumerate() {
            let owners = &owners;
            scope.spawn(move || {
                let mut con = master.client();
                for start in (0..n).step_by(FILL_CHUNK as usize) {
                    let mut by_slot: HashMap<u16, redis::Cmd> = HashMap::new();
                    for i in start..(start + FILL_CHUNK).min(n) {
                        let key = format!("{FILL_PREFIX}{i}");
                        let slot = key_slot(key.as_bytes());
                        if owners[usize::from(slot)] == me {
                            by_slot
                                .entry(slot)
                                .or_insert_with(|| redis::cmd("MSET"))
                                .arg(key)
                                .arg(format!("value:{i:010}"));
                        }
                    }
                    let mut pipe = redis::pipe();
                    for cmd in by_slot.into_values() {
                        pipe.add_command(cmd).ignore();
                    }
                    pipe.exec(&mut con).expect("MSET on the slot's owner");
                }
            });
        }
    });
}

/// Three fresh servers, each `REPLICAOF` one master (sent back to back); the time until all three are linked
/// with their master's keys loaded.
fn native_replicas(masters: &[&Server]) -> Duration {
    let expected: Vec<u64> = masters.iter().map(|m| dbsize(m)).collect();
    let replicas: Vec<Server> = masters.iter().map(|_| server(&[])).collect();
    let mut cons: Vec<redis::Connection> = replicas.iter().map(Server::client).collect();
    let started = Instant::now();
    for (con, master) in cons.iter_mut().zip(masters) {
        redis::cmd("REPLICAOF")
            .arg(master.host())
            .arg(master.port())
            .exec(con)
            .unwrap();
    }
    wait_timed("the three native replicas to load", || {
        replicas
            .iter()
            .zip(&expected)
            .all(|(r, &e)| link_up(r) && dbsize(r) == e)
    });
    started.elapsed()
}

/// The arguments of `ferry sync` from `source` to `target`, both clusters (one node of each).
fn sync_args(source: &Cluster, target: &Cluster) -> Vec<String> {
    [
        "sync",
        "--source-type",
        "cluster",
        "--source",
        &source.masters()[0].url(),
        "--target-type",
        "cluster",
        "--target",
        &target.masters()[0].url(),
    ]
    .map(String::from)
    .to_vec()
}

/// What the timed copy took.
struct Copy {
    took: Duration,
    rss_mib: f64,
}

/// `ferry sync --until-caught-up` from `source` into `target`, to its exit; then every key is on the target.
fn copy(ferry: &Path, source: &Cluster, target: &Cluster, n: u64) -> Copy {
    let mut args = sync_args(source, target);
    args.push("--until-caught-up".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (took, rss_mib, code) = run_ferry(ferry, &args);
    assert_eq!(code, 0, "ferry sync failed");
    assert_eq!(data_keys(&target.masters()), n, "every key copied");
    let own: Vec<String> = target
        .masters()
        .iter()
        .flat_map(|m| scan(m, "ferry:*"))
        .collect();
    eprintln!("ferry's own keys on the target: {own:?}");
    Copy { took, rss_mib }
}

/// What the live phase measured.
struct Live {
    /// redis-benchmark's wall time.
    writes: Duration,
    /// From the start of the writes until every shard caught up.
    caught_up: Duration,
    /// Commands ferry applied in that time (its status, summed over the shards).
    applied: u64,
    /// Write commands the source's masters executed in that time (`INFO commandstats`).
    written: u64,
    peak_ops: f64,
    rss_mib: f64,
}

/// A free port of 127.0.0.1 (for `--status-addr`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status `ferry --status-addr` serves at `addr`, if it answers.
fn status(addr: &str) -> Option<Status> {
    let mut sock = std::net::TcpStream::connect(addr).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    sock.write_all(b"GET /status HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    sock.read_to_string(&mut reply).ok()?;
    let (_, body) = reply.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Sends SIGTERM to the ferry process (it commits and exits) and waits for it.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let code = child.wait().expect("wait for ferry");
    assert!(code.success(), "ferry ended with {code}");
}

/// `ferry sync` resumed from the checkpoints of [`copy`], then `redis-benchmark --cluster` on the source.
fn live(ferry: &Path, source: &Cluster, target: &Cluster, requests: u64) -> Live {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(ferry)
        .args(sync_args(source, target))
        .args(["--status-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferry");
    let pid = child.id().to_string();
    let resumed = wait_for(DEADLINE, "ferry to resume every shard", || {
        status(&addr).filter(|s| {
            s.shards.len() == 3 && s.shards.iter().all(|s| s.phase == Phase::Incremental)
        })
    })
    .unwrap();
    assert!(
        resumed.shards.iter().all(|s| s.full_syncs == 0),
        "the resumed job continued every shard without a full copy: {resumed:?}"
    );
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, addr) = (sampling.clone(), addr.clone());
        std::thread::spawn(move || {
            // (when, commands applied by all shards), a sample every 100 ms; the peak is the most applied in a
            // window of at least one second.
            let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
            let (mut peak, mut taken, mut longest_gap) = (0f64, 0u32, Duration::ZERO);
            while sampling.load(Ordering::Relaxed) {
                if let Some(s) = status(&addr) {
                    let now = (Instant::now(), shards_applied(&s));
                    if let Some(last) = samples.back() {
                        longest_gap = longest_gap.max(now.0.duration_since(last.0));
                    }
                    taken += 1;
                    while samples.len() > 1
                        && now.0.duration_since(samples[1].0) >= Duration::from_secs(1)
                    {
                        samples.pop_front();
                    }
                    if let Some(&(then, applied)) = samples.front() {
                        let window = now.0.duration_since(then);
                        if window >= Duration::from_secs(1) {
                            peak = peak.max((now.1 - applied) as f64 / window.as_secs_f64());
                        }
                    }
                    samples.push_back(now);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!(
                "status samples: {taken}, longest gap between two {} ms",
                longest_gap.as_millis()
            );
            peak
        })
    };
    let masters = source.masters();
    let written_before = written_commands(&masters);
    let started = Instant::now();
    let (writes, out) = redis_benchmark(masters[0], requests, true);
    eprintln!("redis-benchmark --cluster:\n{}", out.trim());
    let offsets: HashMap<String, u64> = masters
        .iter()
        .map(|m| {
            let offset = m
                .info_field("replication", "master_repl_offset")
                .unwrap()
                .and_then(|o| o.parse().ok())
                .unwrap();
            (m.addr(), offset)
        })
        .collect();
    let caught = wait_for(DEADLINE, "every shard to catch up", || {
        status(&addr).filter(|s| {
            s.shards.len() == 3
                && s.shards.iter().all(|sh| {
                    offsets
                        .get(&sh.source)
                        .is_some_and(|&o| sh.applied_offset >= o)
                })
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", status(&addr)));
    let caught_up = started.elapsed();
    let rss_mib = peak_rss_mib(&pid).unwrap_or(0.0);
    sampling.store(false, Ordering::Relaxed);
    let peak_ops = sampler.join().unwrap();
    assert!(
        caught.shards.iter().all(|s| s.full_syncs == 0),
        "no full copy in the live phase: {caught:?}"
    );
    let applied = shards_applied(&caught) - shards_applied(&resumed);
    let written = written_commands(&masters) - written_before;
    stop(child);
    let source_keys: u64 = masters.iter().map(|m| dbsize(m)).sum();
    assert_eq!(
        data_keys(&target.masters()),
        source_keys,
        "the target holds every key of the source"
    );
    Live {
        writes,
        caught_up,
        applied,
        written,
        peak_ops,
        rss_mib,
    }
}

/// Deletes the live phase's keys (all but the filled ones) from the source's masters.
fn delete_live_keys(masters: &[&Server]) {
    for m in masters {
        // Not starting with `f`: the filled keys are passed over by the server.
        let keys: Vec<String> = scan(m, "[^f]*");
        let mut con = m.client();
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                // One key a command: the keys of a node span many slots.
                pipe.cmd("DEL").arg(key).ignore();
            }
            pipe.exec(&mut con).unwrap();
        }
    }
}

/// The commands applied by every shard of a job (the job's own sum is refreshed less often than its shards).
fn shards_applied(status: &Status) -> u64 {
    status.shards.iter().map(|s| s.commands_applied).sum()
}

/// Write commands the source's masters executed (`INFO commandstats`).
fn written_commands(masters: &[&Server]) -> u64 {
    masters
        .iter()
        .map(|m| {
            m.info("commandstats")
                .unwrap()
                .lines()
                .filter(|l| {
                    [
                        "cmdstat_set:",
                        "cmdstat_incr:",
                        "cmdstat_lpush:",
                        "cmdstat_hset:",
                    ]
                    .iter()
                    .any(|p| l.starts_with(p))
                })
                .filter_map(|l| {
                    l.split("calls=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
        })
        .sum()
}
