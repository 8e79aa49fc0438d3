//! Cluster client throughput: ferry-topology's `ClusterClient` side by side with redis-rs's
//! cluster-async client, against the same local 3-master cluster, with 1, 8 and 64 concurrent callers.
//!
//! Each caller runs `GET k` / `SET k v` alternately on keys spread over every slot (so every node
//! is used), each one awaited before the next (a request/reply loop, as an application does). A
//! round runs `FERRY_BENCH_OPS` operations (default 40,000) per implementation and caller count;
//! rounds alternate which implementation goes first, and the table gives the best and the median
//! round of `FERRY_BENCH_ROUNDS` (default 7).
//!
//! ```text
//! cargo bench -p ferry-benches --bench cluster_client
//! FERRY_BENCH_ROUNDS=11 FERRY_BENCH_OPS=100000 cargo bench -p ferry-benches --bench cluster_client
//! FERRY_BENCH_CALLERS=64 cargo bench -p ferry-benches --bench cluster_client   # one caller count
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_benches::Rng;
use ferry_resp::ConnectOptions;
use ferry_testkit::{Cluster, ClusterOptions as TestClusterOptions, Version};
use ferry_topology::{ClusterClient, ClusterOptions};

const CALLERS: [usize; 3] = [1, 8, 64];
const KEYS: u64 = 10_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The key of operation `i` of a caller (drawn from `KEYS` keys, so all slots are hit).
fn key(rng: &mut Rng) -> String {
    format!("bench:{}", rng.below(KEYS))
}

/// Runs `ops` operations split over `callers` tasks through `op`, returns operations per second.
async fn drive<F, Fut>(callers: usize, ops: usize, op: F) -> f64
where
    F: Fn(usize, String, bool) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let per_caller = ops / callers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let op = op.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                for i in 0..per_caller {
                    op(c, key(&mut rng), i % 2 == 0).await;
                }
                done.fetch_add(per_caller as u64, Ordering::Relaxed);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn ferry_round(client: &ClusterClient, callers: usize, ops: usize) -> f64 {
    let client = client.clone();
    drive(callers, ops, move |_, k, set| {
        let client = client.clone();
        async move {
            let r = if set {
                client.call(&["SET", k.as_str(), "value-0123456789"]).await
            } else {
                client.call(&["GET", k.as_str()]).await
            };
            r.expect("ferry command");
        }
    })
    .await
}

async fn redis_rs_round(
    con: &redis::cluster_async::ClusterConnection,
    callers: usize,
    ops: usize,
) -> f64 {
    let con = con.clone();
    drive(callers, ops, move |_, k, set| {
        let mut con = con.clone();
        async move {
            if set {
                redis::cmd("SET")
                    .arg(&k)
                    .arg("value-0123456789")
                    .query_async::<()>(&mut con)
                    .await
                    .expect("redis-rs SET");
            } else {
                redis::cmd("GET")
                    .arg(&k)
                    .query_async::<Option<String>>(&mut con)
                    .await
                    .expect("redis-rs GET");
            }
        }
    })
    .await
}

/// Reads the cluster's servers did so far (`total_reads_processed`, summed over the nodes).
fn server_reads(cluster: &Cluster) -> u64 {
    cluster
        .nodes
        .iter()
        .filter_map(|n| {
            n.info_field("stats", "total_reads_processed")
                .ok()
                .flatten()
        })
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() - 1], v[v.len() / 2])
}

fn main() {
    let rounds = env("FERRY_BENCH_ROUNDS", 7).max(1);
    let ops = env("FERRY_BENCH_OPS", 40_000).max(64);
    let mut opts = TestClusterOptions::new(Version::V7_0);
    opts.replicas_per_master = 0;
    let cluster = Cluster::start_with(opts).expect("start a 3-master cluster");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seed = &cluster.nodes[0];
    let ferry = rt
        .block_on(ClusterClient::connect(ClusterOptions::new(
            ConnectOptions::new(seed.host(), seed.port()),
        )))
        .expect("ferry cluster client");
    let redis_client = redis::cluster::ClusterClient::new(
        cluster
            .nodes
            .iter()
            .map(|n| format!("redis://{}", n.addr()))
            .collect::<Vec<_>>(),
    )
    .expect("redis-rs cluster client");
    let redis_con = rt
        .block_on(redis_client.get_async_connection())
        .expect("redis-rs cluster connection");

    // Warm up both (connections to every node, caches).
    rt.block_on(ferry_round(&ferry, 8, 4_000));
    rt.block_on(redis_rs_round(&redis_con, 8, 4_000));

    println!(
        "cluster client throughput, {ops} ops per round (GET/SET alternately, {KEYS} keys), {rounds} rounds"
    );
    println!("| callers | ferry ops/s (best / median) | redis-rs ops/s (best / median) | ferry / redis-rs (median) | server reads per op (ferry / redis-rs) |");
    println!("|---:|---:|---:|---:|---:|");
    let callers_list: Vec<usize> = std::env::var("FERRY_BENCH_CALLERS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| CALLERS.to_vec());
    for callers in callers_list {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut our_reads, mut their_reads) = (0u64, 0u64);
        for round in 0..rounds {
            for first in [round % 2 == 0, round % 2 != 0] {
                let before = server_reads(&cluster);
                if first {
                    ours.push(rt.block_on(ferry_round(&ferry, callers, ops)));
                    our_reads += server_reads(&cluster) - before;
                } else {
                    theirs.push(rt.block_on(redis_rs_round(&redis_con, callers, ops)));
                    their_reads += server_reads(&cluster) - before;
                }
            }
        }
        let per_op = |reads: u64| reads as f64 / (rounds * ops) as f64;
        let (ob, om) = summary(ours);
        let (tb, tm) = summary(theirs);
        println!(
            "| {callers} | {ob:.0} / {om:.0} | {tb:.0} / {tm:.0} | {:.2}x | {:.2} / {:.2} |",
            om / tm,
            per_op(our_reads),
            per_op(their_reads)
        );
    }
    std::thread::sleep(Duration::from_millis(10));
}
