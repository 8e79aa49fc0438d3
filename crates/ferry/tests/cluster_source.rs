//! A Redis Cluster as the source: one job, one PSYNC stream per source shard, each with its own checkpoint,
//! into a cluster target and into a sentinel-managed target; full copy of every type, then live writes on all
//! shards from several clients; datasets equal key by key and INCR counters equal to the acknowledged
//! increments.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ferry::{JobHandle, SyncConfig, SyncJob};
use ferry_testkit::{
    fill, wait_until, Cluster, FillOptions, SentinelGroup, SentinelOptions, Server, Target, Version,
};

/// Counter keys per writer: enough that every writer's counters land on every shard.
const COUNTERS: usize = 12;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn counter_key(writer: usize, i: usize) -> String {
    format!("live:w{writer}:counter:{i}")
}

/// Raises every node's backlog, so a job away for a while continues with PSYNC.
fn big_backlogs(cluster: &Cluster) {
    for node in &cluster.nodes {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-backlog-size")
            .arg("64mb")
            .exec(&mut node.client())
            .unwrap();
    }
}

/// Several clients writing on all shards: each INCRs its own counters (so an increment whose reply was lost
/// in a fault can be resolved exactly by reading the counter back) and SETs other keys.
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<HashMap<String, u64>>>,
}

impl Writers {
    fn start(source: &Cluster, clients: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|w| {
                let stop = stop.clone();
                let mut conn = source.cluster_client().unwrap();
                std::thread::spawn(move || {
                    let mut acked: HashMap<String, u64> = HashMap::new();
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = counter_key(w, (round as usize) % COUNTERS);
                        let done: redis::RedisResult<u64> =
                            redis::cmd("INCR").arg(&key).query(&mut conn);
                        match done {
                            Ok(v) => {
                                let n = acked.entry(key.clone()).or_default();
                                *n += 1;
                                assert_eq!(v, *n, "only this writer increments {key}");
                            }
                            Err(e) => panic!("INCR {key}: {e}"),
                        }
                        let _: () = redis::cmd("SET")
                            .arg(format!("live:w{w}:value:{}", round % 97))
                            .arg(round)
                            .query(&mut conn)
                            .unwrap();
                        round += 1;
                    }
                    acked
                })
            })
            .collect();
        Writers { stop, threads }
    }

    /// Stops the writers and returns the acknowledged increments of every counter.
    fn stop(self) -> HashMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = HashMap::new();
        for t in self.threads {
            all.extend(t.join().unwrap());
        }
        all
    }
}

fn get_counter(target: &Target, key: &str) -> u64 {
    let v: Option<u64> = match target {
        Target::Standalone(url) => redis::cmd("GET")
            .arg(key)
            .query(
                &mut redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
            .unwrap(),
        Target::Cluster(urls) => {
            let client = redis::cluster::ClusterClient::new(urls.clone()).unwrap();
            redis::cmd("GET")
                .arg(key)
                .query(&mut client.get_connection().unwrap())
                .unwrap()
        }
        _ => unreachable!("testkit targets are standalone or cluster"),
    };
    v.unwrap_or(0)
}

fn start_job(config: serde_json::Value) -> (tokio::runtime::Runtime, JobHandle) {
    let config = SyncConfig::from_json_str(&config.to_string()).expect("valid config");
    let rt = runtime();
    let job = rt.block_on(async { SyncJob::new(config).unwrap().start().unwrap() });
    (rt, job)
}

fn cluster_source_json(source: &Cluster) -> serde_json::Value {
    let seeds: Vec<_> = source
        .nodes
        .iter()
        .take(2)
        .map(|n| serde_json::json!({ "url": n.url() }))
        .collect();
    serde_json::json!({ "type": "cluster", "seeds": seeds })
}

/// The full copy, then live writes from several clients on all shards: equal at the end, exact counters, one
/// stream and one full copy per shard.
fn full_copy_then_live_writes(source: &Cluster, target: &Target, job: &JobHandle) {
    wait_until(
        common::DEADLINE,
        "three shards, all in the live phase",
        || {
            let s = job.status();
            s.shards.len() == 3
                && s.shards
                    .iter()
                    .all(|s| s.phase == ferry::Phase::Incremental)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", job.status()));
    common::wait_equal(&source.target(), target);
    let writers = Writers::start(source, 4);
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(target, &counter_key(0, 0)) >= 50
    })
    .unwrap();
    let acked = writers.stop();
    common::wait_equal(&source.target(), target);
    for (key, n) in &acked {
        assert_eq!(get_counter(&source.target(), key), *n, "source {key}");
        assert_eq!(get_counter(target, key), *n, "target {key}: counters exact");
    }
    assert_eq!(acked.len(), 4 * COUNTERS, "every counter was written");
    let status = job.status();
    let names: Vec<&str> = status.shards.iter().map(|s| s.name.as_str()).collect();
    let masters = source_master_ids(source);
    for s in &status.shards {
        assert_eq!(s.full_syncs, 1, "one full copy per shard: {status:?}");
        assert!(
            masters.contains(&s.name),
            "a shard is named by its master's node id: {names:?}"
        );
        assert!(
            s.commands_applied > 0,
            "every shard streamed live writes: {status:?}"
        );
    }
}

/// The node ids of the source's masters.
fn source_master_ids(cluster: &Cluster) -> Vec<String> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut cluster.nodes[0].client())
        .unwrap();
    text.lines()
        .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master")))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_cluster_source_syncs_into_a_cluster_target_one_stream_per_shard_exactly() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Cluster::start(Version::V7_0).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(31).dbs(vec![0])).unwrap();
    let seeds: Vec<_> = target
        .nodes
        .iter()
        .map(|n| serde_json::json!({ "url": n.url() }))
        .collect();
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "cluster", "seeds": seeds },
    }));
    full_copy_then_live_writes(&source, &target.target(), &job);
    let status = rt.block_on(job.stop()).unwrap();
    assert_eq!(status.full_syncs, 3, "{status:?}");
}

#[test]
fn a_cluster_source_syncs_into_a_sentinel_target_exactly() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(32).dbs(vec![0])).unwrap();
    let sentinels: Vec<_> = group
        .sentinels
        .iter()
        .map(|s| serde_json::json!({ "url": format!("redis://{}", s.addr()) }))
        .collect();
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "sentinel", "sentinels": sentinels, "master": group.master_name },
    }));
    let target = Target::from(group.current_master().unwrap() as &Server);
    full_copy_then_live_writes(&source, &target, &job);
    let status = rt.block_on(job.stop()).unwrap();
    assert_eq!(status.full_syncs, 3, "{status:?}");
}
