//! A Redis Cluster as the source: one job, one PSYNC stream per source shard, each with its own checkpoint,
//! into a cluster target and into a sentinel-managed target; full copy of every type, then live writes on all
//! shards from several clients; datasets equal key by key and INCR counters equal to the acknowledged
//! increments.

mod common;

use common::runtime;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ferry::{Event, JobHandle, SyncConfig, SyncJob};
use ferry_testkit::{
    fill, wait_until, Cluster, FillOptions, SentinelGroup, SentinelOptions, Server, Target, Version,
};

/// Counter keys per writer: enough that every writer's counters land on every shard.
const COUNTERS: usize = 12;

fn counter_key(writer: usize, i: usize) -> String {
    prefixed_counter("live:", writer, i)
}

fn prefixed_counter(prefix: &str, writer: usize, i: usize) -> String {
    format!("{prefix}w{writer}:counter:{i}")
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
        Writers::start_with(source, clients, "live:")
    }

    /// Writers whose keys all start with `prefix` (a hash tag puts them all in one slot).
    fn start_with(source: &Cluster, clients: usize, prefix: &str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let urls: Vec<String> = source.nodes.iter().map(Server::url).collect();
        let threads = (0..clients)
            .map(|w| {
                let stop = stop.clone();
                let urls = urls.clone();
                let prefix = prefix.to_string();
                std::thread::spawn(move || write_counters(&prefix, w, &urls, &stop))
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

/// A cluster connection through whichever nodes answer (some may be down).
fn connect(urls: &[String]) -> redis::cluster::ClusterConnection {
    ferry_testkit::wait_for(common::DEADLINE, "a cluster connection", || {
        redis::cluster::ClusterClient::new(urls.to_vec())
            .ok()?
            .get_connection()
            .ok()
    })
    .unwrap()
}

/// One writer: INCR then `WAIT 1` (the increment is on a replica, so a failover keeps it); an increment whose
/// outcome is unknown (an error, or no replica acknowledged it in time) is resolved by reading the counter back
/// once the cluster answers again: only this writer increments it.
fn write_counters(
    prefix: &str,
    w: usize,
    urls: &[String],
    stop: &AtomicBool,
) -> HashMap<String, u64> {
    let mut conn = connect(urls);
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = prefixed_counter(prefix, w, (round as usize) % COUNTERS);
        let n = acked.entry(key.clone()).or_default();
        let incr: redis::RedisResult<u64> = redis::cmd("INCR").arg(&key).query(&mut conn);
        let durable = incr.is_ok()
            && redis::cmd("WAIT")
                .arg(1)
                .arg(2000)
                .query::<u64>(&mut conn)
                .is_ok_and(|r| r >= 1);
        match incr {
            Ok(v) if durable => {
                assert_eq!(v, *n + 1, "only this writer increments {key}");
                *n = v;
            }
            _ => {
                // Unknown: read it back from whoever serves the slot once the cluster settles.
                let v =
                    ferry_testkit::wait_for(common::DEADLINE, "the counter to be readable", || {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        conn = connect(urls);
                        let v: Option<u64> = redis::cmd("GET").arg(&key).query(&mut conn).ok()?;
                        let v = v.unwrap_or(0);
                        // A write not yet visible on the new master right after a failover settles first.
                        redis::cmd("WAIT")
                            .arg(1)
                            .arg(2000)
                            .query::<u64>(&mut conn)
                            .ok()?;
                        Some(v)
                    })
                    .unwrap();
                assert!(
                    v == *n || v == *n + 1,
                    "{key}: {v} after {n} acknowledged increments (a write acknowledged by a replica was lost)"
                );
                *n = v;
            }
        }
        let _ = redis::cmd("SET")
            .arg(format!("{prefix}w{w}:value:{}", round % 97))
            .arg(round)
            .query::<()>(&mut conn);
        round += 1;
    }
    acked
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

/// Waits until the job streams three shards, all in the live phase.
fn wait_three_shards_live(job: &JobHandle) {
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
}

/// The full copy, then live writes from several clients on all shards: equal at the end, exact counters, one
/// stream and one full copy per shard.
fn full_copy_then_live_writes(source: &Cluster, target: &Target, job: &JobHandle) {
    wait_three_shards_live(job);
    wait_until(
        common::DEADLINE,
        "the job's status to sum its shards",
        || {
            let s = job.status();
            s.phase == ferry::Phase::Incremental && s.full_syncs == 3 && s.keys_copied > 0
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

/// The node indexes of the master owning `slot` and of its replica, from `CLUSTER NODES` of a live node.
fn shard_nodes(cluster: &Cluster, slot: u16) -> (usize, usize) {
    ferry_testkit::wait_for(common::DEADLINE, "the shard of a slot", || {
        let text: String = cluster.nodes.iter().find_map(|n| {
            let mut c = n.try_client().ok()?;
            redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok()
        })?;
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        let owns = |l: &Vec<&str>| {
            l.iter().skip(8).any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            })
        };
        let master = lines
            .iter()
            .find(|l| l[2].contains("master") && !l[2].contains("fail") && owns(l))?;
        let replica = lines
            .iter()
            .find(|l| l[3] == master[0] && !l[2].contains("fail"))?;
        let index = |l: &Vec<&str>| {
            let port: u16 = l[1].split(['@', ',']).next()?.rsplit(':').next()?.parse().ok()?;
            cluster.nodes.iter().position(|n| n.port() == port)
        };
        Some((index(master)?, index(replica)?))
    })
    .unwrap()
}

fn is_master(server: &Server) -> bool {
    server
        .try_client()
        .ok()
        .and_then(|mut c| redis::cmd("ROLE").query::<redis::Value>(&mut c).ok())
        .is_some_and(|v| matches!(v, redis::Value::Array(ref items) if matches!(items.first(), Some(redis::Value::BulkString(r)) if r == b"master")))
}

/// Two clusters and a job between them, caught up, with writers running on every shard.
fn running_pair(seed: u64) -> (Cluster, Cluster, tokio::runtime::Runtime, JobHandle) {
    running_pair_with(seed, false)
}

/// [`running_pair`], the job streaming each shard from a replica when `prefer_replica`.
fn running_pair_with(
    seed: u64,
    prefer_replica: bool,
) -> (Cluster, Cluster, tokio::runtime::Runtime, JobHandle) {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Cluster::start(Version::V7_0).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(seed).dbs(vec![0])).unwrap();
    let seeds: Vec<_> = target
        .nodes
        .iter()
        .map(|n| serde_json::json!({ "url": n.url() }))
        .collect();
    let mut source_json = cluster_source_json(&source);
    source_json["prefer_replica"] = serde_json::Value::Bool(prefer_replica);
    let (rt, job) = start_job(serde_json::json!({
        "source": source_json,
        "target": { "type": "cluster", "seeds": seeds },
    }));
    wait_three_shards_live(&job);
    (source, target, rt, job)
}

/// After a fault of the shard streamed from `old_addr`: more writes reach the target through the new master,
/// then the writers stop; equal, exact counters, no second full copy of any shard, the others untouched.
fn ends_exact_after_shard_failover(
    source: &Cluster,
    target: &Cluster,
    job: &JobHandle,
    writers: Writers,
    shard: &str,
    new_addr: &str,
) {
    wait_until(
        common::DEADLINE,
        "the shard to stream from its new master",
        || {
            job.status().shards.iter().any(|s| {
                s.name == shard && s.source == new_addr && s.phase == ferry::Phase::Incremental
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", job.status()));
    // The first receiver has the events since the job's start: the failover followed is announced once, with
    // the shard and the node it continues on, and no other shard's.
    let mut events = job.events();
    let mut announced = Vec::new();
    let followed = |seen: &[Event]| -> Vec<(String, String)> {
        seen.iter()
            .filter_map(|e| match e {
                Event::ShardFailoverFollowed { shard, node } => Some((shard.clone(), node.clone())),
                _ => None,
            })
            .collect()
    };
    wait_until(common::DEADLINE, "the failover followed announced", || {
        while let Some(e) = events.try_recv() {
            announced.push(e);
        }
        !followed(&announced).is_empty()
    })
    .unwrap();
    let seen = get_counter(&target.target(), &counter_key(0, 0));
    wait_until(
        common::DEADLINE,
        "more live writes after the failover",
        || get_counter(&target.target(), &counter_key(0, 0)) >= seen + 30,
    )
    .unwrap();
    let acked = writers.stop();
    common::wait_equal(&source.target(), &target.target());
    for (key, n) in &acked {
        assert_eq!(get_counter(&source.target(), key), *n, "source {key}");
        assert_eq!(
            get_counter(&target.target(), key),
            *n,
            "target {key}: counters exact"
        );
    }
    while let Some(e) = events.try_recv() {
        announced.push(e);
    }
    assert_eq!(
        followed(&announced),
        [(shard.to_string(), new_addr.to_string())]
    );
    // The job's phases combine its shards': it starts in the handshake, copies, and is live only once every
    // shard is (how the shards' start-ups interleave decides whether `handshake` shows again in between).
    let phases = common::phases(&announced);
    assert_eq!(
        phases[..2],
        [ferry::Phase::Handshake, ferry::Phase::FullSync],
        "{announced:?}"
    );
    let job_live = announced
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::Phase {
                    phase: ferry::Phase::Incremental
                }
            )
        })
        .expect("the job went live");
    assert!(
        announced[..job_live]
            .iter()
            .all(|e| !matches!(e, Event::Phase { phase } if !matches!(phase, ferry::Phase::Handshake | ferry::Phase::FullSync))),
        "only handshake and full_sync before the job is live: {announced:?}"
    );
    let shards_live: std::collections::HashSet<&str> = announced[..job_live]
        .iter()
        .filter_map(|e| match e {
            Event::ShardPhase {
                shard,
                phase: ferry::Phase::Incremental,
            } => Some(shard.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        shards_live.len(),
        3,
        "every shard live before the job: {announced:?}"
    );
    let copies = announced
        .iter()
        .filter(|e| matches!(e, Event::FullResync { shard: Some(_), .. }))
        .count();
    assert_eq!(copies, 3, "one full copy per shard: {announced:?}");
    let status = job.status();
    assert_eq!(status.shards.len(), 3, "{status:?}");
    for s in &status.shards {
        assert_eq!(s.full_syncs, 1, "no new full copy of any shard: {status:?}");
        if s.name == shard {
            assert!(
                s.reconnects >= 1,
                "the shard followed its failover: {status:?}"
            );
        } else {
            assert_eq!(
                s.reconnects, 0,
                "the other shards are unaffected: {status:?}"
            );
        }
    }
}

/// `CLUSTER FAILOVER` on the replica of slot 0's shard while the job streams every shard (from its master, or
/// from a replica when `prefer_replica`); ends exact, the shard followed onto the node it must stream from now:
/// the promoted replica, or with `prefer_replica` the demoted master (the shard's only replica now).
fn failover_of_slot_0_shard_is_followed(seed: u64, prefer_replica: bool) {
    let (source, target, rt, job) = running_pair_with(seed, prefer_replica);
    let writers = Writers::start(&source, 3);
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(&target.target(), &counter_key(0, 0)) >= 30
    })
    .unwrap();
    let (master, replica) = shard_nodes(&source, 0);
    let (streamed, next) = if prefer_replica {
        (replica, master)
    } else {
        (master, replica)
    };
    let shard = job
        .status()
        .shards
        .iter()
        .find(|s| s.source == source.nodes[streamed].addr())
        .map(|s| s.name.clone())
        .unwrap_or_else(|| {
            panic!(
                "slot 0's shard streamed from node {streamed}: {:?}",
                job.status()
            )
        });
    redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .exec(&mut source.nodes[replica].client())
        .unwrap();
    wait_until(common::DEADLINE, "the replica to be promoted", || {
        is_master(&source.nodes[replica]) && !is_master(&source.nodes[master])
    })
    .unwrap();
    let new_addr = source.nodes[next].addr();
    ends_exact_after_shard_failover(&source, &target, &job, writers, &shard, &new_addr);
    rt.block_on(job.stop()).unwrap();
}

#[test]
fn a_source_shard_cluster_failover_continues_on_the_promoted_replica_without_a_full_copy() {
    failover_of_slot_0_shard_is_followed(33, false);
}

#[test]
fn with_prefer_replica_a_failover_of_the_replica_streamed_from_continues_on_the_demoted_master() {
    failover_of_slot_0_shard_is_followed(38, true);
}

#[test]
fn a_source_master_sigkilled_continues_on_its_promoted_replica_without_a_full_copy() {
    let (mut source, target, rt, job) = running_pair(34);
    let writers = Writers::start(&source, 3);
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(&target.target(), &counter_key(0, 0)) >= 30
    })
    .unwrap();
    let (master, replica) = shard_nodes(&source, 0);
    let shard = job
        .status()
        .shards
        .iter()
        .find(|s| s.source == source.nodes[master].addr())
        .map(|s| s.name.clone())
        .expect("a shard streamed from the master of slot 0");
    source.nodes[master].kill();
    wait_until(common::DEADLINE, "the replica to take over", || {
        is_master(&source.nodes[replica])
    })
    .unwrap();
    let new_addr = source.nodes[replica].addr();
    ends_exact_after_shard_failover(&source, &target, &job, writers, &shard, &new_addr);
    rt.block_on(job.stop()).unwrap();
}

/// The job's status, read from a `ferry sync` process's status endpoint.
fn process_status(addr: &str) -> serde_json::Value {
    serde_json::from_str(&common::http_get(addr, "/status")).expect("status JSON")
}

fn wait_all_shards_live(addr: &str) -> serde_json::Value {
    ferry_testkit::wait_for(common::DEADLINE, "three shards in the live phase", || {
        let s = process_status(addr);
        let shards = s["shards"].as_array()?;
        let live = shards.len() == 3 && shards.iter().all(|x| x["phase"] == "incremental");
        (live && s["phase"] == "incremental").then_some(s)
    })
    .unwrap()
}

fn shard_names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_sigkilled_cluster_source_process_resumes_every_shard_from_its_checkpoint() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Cluster::start(Version::V7_0).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(35).dbs(vec![0])).unwrap();
    let args = [
        "sync".to_string(),
        "--source".into(),
        source.nodes[0].url(),
        "--source-type".into(),
        "cluster".into(),
        "--target".into(),
        target.nodes[0].url(),
        "--target-type".into(),
        "cluster".into(),
        "--status-addr".into(),
        "127.0.0.1:0".into(),
    ];
    let mut first = common::Ferry::spawn(&args);
    let addr = first.served_addr("status");
    let before = wait_all_shards_live(&addr);
    let writers = Writers::start(&source, 3);
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(&target.target(), &counter_key(0, 0)) >= 30
    })
    .unwrap();
    drop(first); // SIGKILL
    let mut second = common::Ferry::spawn(&args);
    let addr = second.served_addr("status");
    let after = wait_all_shards_live(&addr);
    assert_eq!(
        shard_names(&before),
        shard_names(&after),
        "the same shards by name"
    );
    let seen = get_counter(&target.target(), &counter_key(0, 0));
    wait_until(common::DEADLINE, "live writes after the restart", || {
        get_counter(&target.target(), &counter_key(0, 0)) >= seen + 30
    })
    .unwrap();
    let acked = writers.stop();
    common::wait_equal(&source.target(), &target.target());
    for (key, n) in &acked {
        assert_eq!(
            get_counter(&target.target(), key),
            *n,
            "target {key}: counters exact"
        );
    }
    let status = process_status(&addr);
    for s in status["shards"].as_array().unwrap() {
        assert_eq!(
            s["full_syncs"], 0,
            "each shard resumed from its checkpoint: {status}"
        );
    }
    second.terminate();
    assert_eq!(second.wait(), 0, "{}", second.stderr());
}

/// The replicas' addresses of a cluster, from `ROLE`.
fn replica_addrs(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .filter(|n| !is_master(n))
        .map(Server::addr)
        .collect()
}

#[test]
fn the_redisshake_v4_cluster_reader_with_prefer_replica_streams_each_shard_from_a_replica() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target =
        ferry_testkit::Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(36).dbs(vec![0])).unwrap();
    let text =
        std::fs::read_to_string(common::shared_dir().join("fixtures/redisshake-v4-shake.toml"))
            .unwrap()
            .replace("127.0.0.1:30001", &source.nodes[0].addr())
            .replace("127.0.0.1:6380", &target.addr())
            .replace("prefer_replica = false", "prefer_replica = true");
    let (_dir, path) = common::write_file("shake.toml", &text);
    let mut ferry = common::Ferry::spawn([
        "sync".as_ref(),
        "-c".as_ref(),
        path.as_os_str(),
        "--status-addr".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let addr = ferry.served_addr("status");
    let status = wait_all_shards_live(&addr);
    let replicas = replica_addrs(&source);
    for s in status["shards"].as_array().unwrap() {
        let from = s["source"].as_str().unwrap().to_string();
        assert!(
            replicas.contains(&from),
            "{from} is a replica of {replicas:?}: {status}\n{}",
            ferry.stderr()
        );
    }
    let writers = Writers::start(&source, 2);
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(&Target::from(&target), &counter_key(0, 0)) >= 30
    })
    .unwrap();
    let acked = writers.stop();
    common::wait_equal(&source.target(), &Target::from(&target));
    for (key, n) in &acked {
        assert_eq!(
            get_counter(&Target::from(&target), key),
            *n,
            "target {key}: counters exact"
        );
    }
    ferry.terminate();
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
}

/// The node id of a server.
fn node_id(server: &Server) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut server.client())
        .unwrap()
}

#[test]
fn a_slot_migrated_on_the_source_under_live_writes_ends_exact_on_the_target() {
    let (source, target, rt, job) = running_pair(37);
    let slot = ferry_testkit::key_slot(b"mig");
    // Keys of the slot that only the migration moves.
    set_cluster_keys(&source, "{mig}:static:", 300, 0);
    let others = Writers::start(&source, 2);
    let movers = Writers::start_with(&source, 2, "{mig}:");
    let on_target = |key: &str| get_counter(&target.target(), key);
    wait_until(
        common::DEADLINE,
        "live writes to the slot on the target",
        || on_target(&prefixed_counter("{mig}:", 0, 0)) >= 20,
    )
    .unwrap();
    let (from, _) = shard_nodes(&source, slot);
    let to = (0..source.nodes.len())
        .find(|&i| i != from && is_master(&source.nodes[i]))
        .unwrap();
    migrate_slot(&source.nodes, slot, &source.nodes[from], &source.nodes[to]);
    // More writes to the slot, now served by the importer.
    let seen = on_target(&prefixed_counter("{mig}:", 0, 0));
    wait_until(
        common::DEADLINE,
        "writes to the moved slot on the target",
        || on_target(&prefixed_counter("{mig}:", 0, 0)) >= seen + 20,
    )
    .unwrap();
    end_exact_without_new_copies(&source, &target.target(), [others, movers], rt, job);
}

/// Stops the writers; the target ends equal to the source with every counter at its acknowledged increments,
/// and no shard copied a second time.
fn end_exact_without_new_copies<const N: usize>(
    source: &Cluster,
    target: &Target,
    writers: [Writers; N],
    rt: tokio::runtime::Runtime,
    job: JobHandle,
) {
    let mut acked = HashMap::new();
    for w in writers {
        acked.extend(w.stop());
    }
    common::wait_equal(&source.target(), target);
    for (key, n) in &acked {
        assert_eq!(get_counter(&source.target(), key), *n, "source {key}");
        assert_eq!(get_counter(target, key), *n, "target {key}: counters exact");
    }
    let status = job.status();
    for s in &status.shards {
        assert_eq!(s.full_syncs, 1, "no new full copy: {status:?}");
    }
    rt.block_on(job.stop()).unwrap();
}

/// Moves `slot` from `from` to `to` the way `redis-cli --cluster reshard` does, while clients keep writing:
/// IMPORTING, MIGRATING, `MIGRATE` of the keys a few at a time, then `SETSLOT NODE` on every master.
fn migrate_slot(all: &[Server], slot: u16, from: &Server, to: &Server) {
    begin_migration(slot, from, to);
    let mut moved = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(5)
            .query(&mut from.client())
            .unwrap();
        if keys.is_empty() {
            break;
        }
        migrate_keys(from, to, &keys);
        moved += keys.len();
    }
    assert!(moved > 0, "the slot had keys to move");
    end_migration(all, slot, to);
}

/// `CLUSTER SETSLOT <slot> <args>` on `node`.
fn setslot(node: &Server, slot: u16, args: &[&str]) {
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(args)
        .exec(&mut node.client())
        .unwrap_or_else(|e| {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut node.client())
                .unwrap_or_default();
            panic!("SETSLOT {args:?} on {}: {e}\n{nodes}", node.addr())
        });
}

/// Marks `slot` importing on `to` and migrating on `from`.
fn begin_migration(slot: u16, from: &Server, to: &Server) {
    setslot(to, slot, &["IMPORTING", &node_id(from)]);
    setslot(from, slot, &["MIGRATING", &node_id(to)]);
}

/// `MIGRATE`s `keys` from `from` to `to`.
fn migrate_keys(from: &Server, to: &Server, keys: &[String]) {
    redis::cmd("MIGRATE")
        .arg(to.host())
        .arg(to.port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys)
        .exec(&mut from.client())
        .unwrap();
}

/// Gives `slot` to `to`: on `to` first (so it never refuses the slot's commands), then on every other master.
fn end_migration(all: &[Server], slot: u16, to: &Server) {
    let to_id = node_id(to);
    setslot(to, slot, &["NODE", &to_id]);
    for node in all.iter().filter(|n| n.port() != to.port() && is_master(n)) {
        setslot(node, slot, &["NODE", &to_id]);
    }
}

/// Starts a cluster-enabled master and has the source's first node meet it; returns it and its node id.
fn meet_new_master(source: &Cluster) -> (Server, String) {
    let added = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0).cluster()).unwrap();
    redis::cmd("CLUSTER")
        .arg("MEET")
        .arg(added.host())
        .arg(added.port())
        .exec(&mut source.nodes[0].client())
        .unwrap();
    let id = node_id(&added);
    (added, id)
}

/// Waits until every node of `source` lists node `id`.
fn wait_every_node_knows(source: &Cluster, id: &str) {
    wait_until(
        common::DEADLINE,
        "every node to know the added master",
        || {
            source.nodes.iter().all(|n| {
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut n.client())
                    .is_ok_and(|t| t.contains(id))
            })
        },
    )
    .unwrap();
}

#[test]
fn a_master_added_to_the_source_is_followed_and_a_removed_one_is_retired() {
    let (source, target, rt, job) = running_pair(38);
    let writers = Writers::start(&source, 2);
    let (added, added_id) = meet_new_master(&source);
    wait_until(
        common::DEADLINE,
        "the job to follow the added master",
        || {
            let s = job.status();
            s.shards.len() == 4
                && s.shards
                    .iter()
                    .all(|s| s.phase == ferry::Phase::Incremental)
                && s.shards.iter().any(|s| s.name == added_id)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", job.status()));
    wait_every_node_knows(&source, &added_id);
    // Scale in: the (empty) master is forgotten and shut down.
    for node in &source.nodes {
        redis::cmd("CLUSTER")
            .arg("FORGET")
            .arg(&added_id)
            .exec(&mut node.client())
            .unwrap();
    }
    drop(added);
    wait_until(
        common::DEADLINE,
        "the removed master's stream to be retired",
        || {
            job.status()
                .shards
                .iter()
                .any(|s| s.name == added_id && s.retired && s.phase == ferry::Phase::Stopped)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", job.status()));
    let acked = writers.stop();
    common::wait_equal(&source.target(), &target.target());
    for (key, n) in &acked {
        assert_eq!(
            get_counter(&target.target(), key),
            *n,
            "target {key}: counters exact"
        );
    }
    let status = job.status();
    assert_eq!(status.shards.len(), 4, "{status:?}");
    for s in status.shards.iter().filter(|s| !s.retired) {
        assert_eq!(s.full_syncs, 1, "one full copy per shard: {status:?}");
        assert_eq!(
            s.reconnects, 0,
            "the other shards are unaffected: {status:?}"
        );
    }
    rt.block_on(job.stop()).unwrap();
}

fn wait_shards_live(addr: &str, n: usize) -> serde_json::Value {
    ferry_testkit::wait_for(
        common::DEADLINE,
        "the job's shards in the live phase",
        || {
            let s = process_status(addr);
            let shards = s["shards"].as_array()?;
            (shards.len() == n && shards.iter().all(|x| x["phase"] == "incremental")).then_some(s)
        },
    )
    .unwrap()
}

#[test]
fn two_jobs_given_the_same_shard_one_waits_for_the_lease_and_takes_over_without_a_full_copy() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(39).dbs(vec![0])).unwrap();
    let mut masters = source_master_ids(&source);
    masters.sort();
    let (shared, rest) = (masters[0].clone(), masters[1..].join(","));
    let job = |shards: &str| {
        common::Ferry::spawn([
            "sync",
            "--source",
            &source.nodes[0].url(),
            "--source-type",
            "cluster",
            "--shards",
            shards,
            "--target",
            &target.url(),
            "--status-addr",
            "127.0.0.1:0",
        ])
    };
    let mut others = job(&rest);
    let others_addr = others.served_addr("status");
    let mut first = job(&shared);
    let first_addr = first.served_addr("status");
    let s = wait_shards_live(&first_addr, 1);
    assert_eq!(s["shards"][0]["name"], shared.as_str(), "{s}");
    wait_shards_live(&others_addr, 2);
    let mut second = job(&shared);
    let second_addr = second.served_addr("status");
    ferry_testkit::wait_until(
        common::DEADLINE,
        "the second job to wait for the lease",
        || {
            let s = process_status(&second_addr);
            s["shards"][0]["phase"] == "handshake"
                && s["shards"][0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("lease"))
        },
    )
    .unwrap();
    let writers = Writers::start(&source, 3);
    let on_target = |key: &str| get_counter(&Target::from(&target), key);
    wait_until(common::DEADLINE, "live writes on the target", || {
        on_target(&counter_key(0, 0)) >= 30
    })
    .unwrap();
    let s = process_status(&second_addr);
    assert_eq!(
        s["shards"][0]["full_syncs"], 0,
        "the waiting job applied nothing: {s}"
    );
    drop(first); // SIGKILL: its lease expires, the second job takes the shard over
    let s = wait_shards_live(&second_addr, 1);
    assert_eq!(s["shards"][0]["name"], shared.as_str(), "{s}");
    let seen = on_target(&counter_key(0, 0));
    wait_until(common::DEADLINE, "live writes after the takeover", || {
        on_target(&counter_key(0, 0)) >= seen + 30
    })
    .unwrap();
    let acked = writers.stop();
    common::wait_equal(&source.target(), &Target::from(&target));
    for (key, n) in &acked {
        assert_eq!(on_target(key), *n, "target {key}: counters exact");
    }
    let s = process_status(&second_addr);
    assert_eq!(
        s["shards"][0]["full_syncs"], 0,
        "the takeover continued from the checkpoint: {s}"
    );
    for p in [&mut second, &mut others] {
        p.terminate();
        assert_eq!(p.wait(), 0, "{}", p.stderr());
    }
}

#[test]
fn a_redis_6_2_cluster_source_is_found_with_cluster_nodes_and_synced_exactly() {
    let source = Cluster::start(Version::V6_2).unwrap();
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(40).dbs(vec![0])).unwrap();
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "standalone", "url": target.url() },
    }));
    full_copy_then_live_writes(&source, &Target::from(&target), &job);
    rt.block_on(job.stop()).unwrap();
}

#[test]
fn until_caught_up_with_a_cluster_source_ends_once_every_shard_has_applied_its_master() {
    let source = Cluster::start(Version::V7_0).unwrap();
    fill(&source.target(), &FillOptions::seed(33).dbs(vec![0])).unwrap();
    // Writes while the copy runs: each shard must apply its master's stream up to where it was seen live.
    let writers = Writers::start(&source, 2);
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "standalone", "url": target.url() },
        "until_caught_up": true,
    }));
    wait_until(common::DEADLINE, "every shard live", || {
        let s = job.status();
        s.shards.len() == 3
            && s.shards
                .iter()
                .all(|s| s.phase == ferry::Phase::Incremental || s.phase == ferry::Phase::Stopped)
    })
    .unwrap();
    let acked = writers.stop();
    let status = rt.block_on(job.wait()).expect("the job ends by itself");
    assert_eq!(status.phase, ferry::Phase::CaughtUp, "{status:?}");
    assert_eq!(status.full_syncs, 3, "{status:?}");
    // What was written before the job caught up may still be arriving only if written after each shard's
    // mark; the writers stopped before the end, so a new job catching up again ends equal.
    let (rt2, again) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "standalone", "url": target.url() },
        "until_caught_up": true,
    }));
    let status = rt2
        .block_on(again.wait())
        .expect("the second job ends by itself");
    assert_eq!(status.phase, ferry::Phase::CaughtUp);
    assert_eq!(
        status.full_syncs, 0,
        "continued from the checkpoints: {status:?}"
    );
    let target = Target::from(&target);
    common::assert_equal(&source.target(), &target);
    for (key, n) in acked {
        assert_eq!(get_counter(&target, &key), n, "{key}");
    }
    drop(rt);
}

/// Valkey 9's atomic slot migration (`CLUSTER MIGRATESLOTS`), run on the source's master and polled until it
/// succeeds.
fn migrate_slots_atomically(from: &Server, ranges: &[(u16, u16)], to: &Server) {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("MIGRATESLOTS").arg("SLOTSRANGE");
    for (a, b) in ranges {
        cmd.arg(a).arg(b);
    }
    cmd.arg("NODE").arg(node_id(to));
    cmd.exec(&mut from.client()).unwrap();
    wait_until(
        common::DEADLINE,
        "the atomic slot migration to succeed",
        || {
            let v: redis::Value = redis::cmd("CLUSTER")
                .arg("GETSLOTMIGRATIONS")
                .query(&mut to.client())
                .unwrap();
            let text = format!("{v:?}");
            assert!(
                !text.contains("failed") && !text.contains("cancelled"),
                "{text}"
            );
            // Every migration of this test has succeeded once none is in another state.
            let states = text.matches("\"state\"").count();
            states > 0 && text.matches("success").count() >= states
        },
    )
    .unwrap();
}

/// The slot ranges `server` (a master) serves, from `CLUSTER NODES`.
fn owned_ranges(server: &Server) -> Vec<(u16, u16)> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut server.client())
        .unwrap();
    ferry_topology::parse_cluster_nodes(text.as_bytes())
        .unwrap()
        .into_iter()
        .filter(|n| n.flags.myself)
        .flat_map(|n| n.slots)
        .map(|r| (r.start, r.end))
        .collect()
}

#[test]
fn valkey_atomic_slot_migrations_on_the_source_under_live_writes_end_exact_on_the_target() {
    let source = Cluster::start(Version::V9_1).unwrap();
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V9_1)).unwrap();
    big_backlogs(&source);
    // Every type, so the importer's copy of the slots (`RPUSH`, `HMSET`, `XADD`... per key) meets each.
    fill(&source.target(), &FillOptions::seed(41).dbs(vec![0])).unwrap();
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "standalone", "url": target.url() },
    }));
    wait_three_shards_live(&job);
    let slot = ferry_testkit::key_slot(b"mig");
    let others = Writers::start(&source, 2);
    let movers = Writers::start_with(&source, 2, "{mig}:");
    let on_target = |key: &str| get_counter(&Target::from(&target), key);
    wait_until(
        common::DEADLINE,
        "live writes to the slot on the target",
        || on_target(&prefixed_counter("{mig}:", 0, 0)) >= 20,
    )
    .unwrap();
    let (from, _) = shard_nodes(&source, slot);
    let to = (0..source.nodes.len())
        .find(|&i| i != from && is_master(&source.nodes[i]))
        .unwrap();
    let (from, to) = (&source.nodes[from], &source.nodes[to]);
    // First the half of the exporter's slots that holds the writers' slot: it stays a master.
    let ranges = owned_ranges(from);
    let (a, b) = ranges
        .iter()
        .copied()
        .find(|&(a, b)| a <= slot && slot <= b)
        .unwrap();
    let half = if slot - a > b - slot {
        (a, slot)
    } else {
        (slot, b)
    };
    migrate_slots_atomically(from, &[half], to);
    let seen = on_target(&prefixed_counter("{mig}:", 0, 0));
    wait_until(
        common::DEADLINE,
        "writes to the moved slots on the target",
        || on_target(&prefixed_counter("{mig}:", 0, 0)) >= seen + 20,
    )
    .unwrap();
    // Then everything it has left: it gives up its last slot and turns into a replica of the importer.
    migrate_slots_atomically(from, &owned_ranges(from), to);
    let seen = on_target(&prefixed_counter("live:", 0, 0));
    wait_until(common::DEADLINE, "more live writes on the target", || {
        on_target(&prefixed_counter("live:", 0, 0)) >= seen + 20
    })
    .unwrap();
    end_exact_without_new_copies(&source, &Target::from(&target), [others, movers], rt, job);
}

/// Gives the master of `{hot}`'s slot a backlog (16 kB) that a few writes overrun; returns its node index.
fn shrink_backlog_of_hot_shard(source: &Cluster) -> usize {
    let (hot, _) = shard_nodes(source, ferry_testkit::key_slot(b"{hot}"));
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-backlog-size")
        .arg("16kb")
        .exec(&mut source.nodes[hot].client())
        .unwrap();
    hot
}

/// Writes string keys `<prefix>N` (N below `n`) through a cluster connection, each value `len` bytes or more.
fn set_cluster_keys(cluster: &Cluster, prefix: &str, n: usize, len: usize) {
    let urls: Vec<String> = cluster.nodes.iter().map(Server::url).collect();
    let mut c = connect(&urls);
    for i in 0..n {
        redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(format!("v{i}{}", "x".repeat(len)))
            .exec(&mut c)
            .unwrap();
    }
}

/// The `ferry sync` process of a cluster source into `target` (a cluster when `cluster_target`).
fn cluster_job(source: &Cluster, target: &[String], cluster_target: bool) -> common::Ferry {
    let mut args = vec![
        "sync".to_string(),
        "--source".into(),
        source.nodes[0].url(),
        "--source-type".into(),
        "cluster".into(),
        "--target".into(),
        target[0].clone(),
        "--status-addr".into(),
        "127.0.0.1:0".into(),
    ];
    if cluster_target {
        args.extend(["--target-type".into(), "cluster".into()]);
    }
    common::Ferry::spawn(args)
}

/// Stopped while the source changes, the job finds one shard's backlog overrun (16 kB) and the others whole:
/// that shard copies again, and its copy deletes the keys of its slots that the source deleted meanwhile; the
/// other shards continue (their streams carry their deletes) and the sweep leaves their slots alone, while
/// writers run on every shard. Returns the target's final status.
fn a_shard_redone_over_an_owned_target(
    source: &Cluster,
    target: &Target,
    target_urls: &[String],
    cluster_target: bool,
) -> serde_json::Value {
    big_backlogs(source);
    set_cluster_keys(source, "doomed:", 300, 0);
    set_cluster_keys(source, "kept:", 100, 0);
    let mut job = cluster_job(source, target_urls, cluster_target);
    let addr = job.served_addr("status");
    wait_all_shards_live(&addr);
    common::wait_equal(&source.target(), target);
    job.terminate();
    assert_eq!(job.wait(), 0, "{}", job.stderr());

    let hot = shrink_backlog_of_hot_shard(source);
    let urls: Vec<String> = source.nodes.iter().map(Server::url).collect();
    let mut c = connect(&urls);
    let ranges = owned_ranges(&source.nodes[hot]);
    let mut swept_there = 0u64;
    for i in 0..300 {
        let key = format!("doomed:{i}");
        let slot = ferry_testkit::key_slot(key.as_bytes());
        if ranges.iter().any(|&(a, b)| a <= slot && slot <= b) {
            swept_there += 1;
        }
        redis::cmd("DEL").arg(&key).exec(&mut c).unwrap();
    }
    assert!(swept_there > 0, "some deleted keys are in the hot shard");
    set_cluster_keys(source, "fresh:", 50, 0);
    set_cluster_keys(source, "{hot}:pad:", 100, 1024);

    let writers = Writers::start(source, 3);
    let mut job = cluster_job(source, target_urls, cluster_target);
    let addr = job.served_addr("status");
    let s = wait_all_shards_live(&addr);
    let mut copies: Vec<u64> = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["full_syncs"].as_u64().unwrap())
        .collect();
    copies.sort();
    assert_eq!(
        copies,
        [0, 0, 1],
        "only the overrun shard copied again: {s}"
    );
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(target, &counter_key(0, 0)) >= 30
    })
    .unwrap();
    let acked = writers.stop();
    common::wait_equal(&source.target(), target);
    for (key, n) in &acked {
        assert_eq!(get_counter(target, key), *n, "target {key}: counters exact");
    }
    let s = process_status(&addr);
    assert!(
        s["keys_swept"].as_u64().unwrap() >= swept_there,
        "the redone copy deleted the {swept_there} keys of its slots the source deleted: {s}"
    );
    assert_eq!(s["redo_unswept"], 0, "{s}");
    job.terminate();
    assert_eq!(job.wait(), 0, "{}", job.stderr());
    s
}

#[test]
fn a_redone_shard_copy_into_a_cluster_target_deletes_the_keys_of_its_slots_the_source_deleted() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Cluster::start(Version::V7_0).unwrap();
    let urls: Vec<String> = target.nodes.iter().map(Server::url).collect();
    a_shard_redone_over_an_owned_target(&source, &target.target(), &urls, true);
}

#[test]
fn a_redone_shard_copy_into_a_standalone_target_sweeps_only_its_slots_and_never_a_key_from_before()
{
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    let t = Target::from(&target);
    a_shard_redone_over_an_owned_target(&source, &t, &[target.url()], false);

    // The same job over a target that held a key of its domain before its first copy: nothing is deleted.
    let other = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    redis::cmd("SET")
        .arg("foreign")
        .arg("there before")
        .exec(&mut other.client())
        .unwrap();
    big_backlogs(&source);
    let mut job = cluster_job(&source, &[other.url()], false);
    let addr = job.served_addr("status");
    wait_all_shards_live(&addr);
    job.terminate();
    assert_eq!(job.wait(), 0, "{}", job.stderr());
    let hot = shrink_backlog_of_hot_shard(&source);
    set_cluster_keys(&source, "{hot}:pad:", 100, 2048);
    redis::cmd("DEL")
        .arg("{hot}:pad:1")
        .exec(&mut source.nodes[hot].client())
        .unwrap();
    let mut job = cluster_job(&source, &[other.url()], false);
    let addr = job.served_addr("status");
    let s = wait_all_shards_live(&addr);
    let mut c = other.client();
    let foreign: Option<String> = redis::cmd("GET").arg("foreign").query(&mut c).unwrap();
    assert_eq!(foreign.as_deref(), Some("there before"), "{s}");
    let pad1: i64 = redis::cmd("EXISTS")
        .arg("{hot}:pad:1")
        .query(&mut c)
        .unwrap();
    assert_eq!(pad1, 1, "a shared target: the redo deleted nothing: {s}");
    ferry_testkit::wait_until(common::DEADLINE, "the unswept redo counted", || {
        process_status(&addr)["redo_unswept"].as_u64() >= Some(1)
    })
    .unwrap();
    job.terminate();
    assert_eq!(job.wait(), 0, "{}", job.stderr());
}

#[test]
fn a_master_added_and_given_a_slot_while_the_job_was_stopped_gets_its_keys_after_the_exporters_deletes(
) {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    let t = Target::from(&target);
    big_backlogs(&source);
    let slot = ferry_testkit::key_slot(b"mig");
    set_cluster_keys(&source, "{mig}:static:", 300, 0);
    set_cluster_keys(&source, "kept:", 100, 0);
    let mut job = cluster_job(&source, &[target.url()], false);
    let addr = job.served_addr("status");
    wait_all_shards_live(&addr);
    common::wait_equal(&source.target(), &t);
    job.terminate();
    assert_eq!(job.wait(), 0, "{}", job.stderr());

    // While the job is away: the exporter takes many writes (its stream will take a while to apply), then a new
    // master joins and the slot moves to it, so the exporter's DELs of the slot's keys come last in its stream.
    let (from, _) = shard_nodes(&source, slot);
    let exporter = &source.nodes[from];
    let tag = (0..)
        .map(|i| format!("e{i}"))
        .find(|tag| {
            let s = ferry_testkit::key_slot(tag.as_bytes());
            s != slot && shard_nodes(&source, s).0 == from
        })
        .unwrap();
    {
        let mut c = exporter.client();
        let mut pipe = redis::pipe();
        for i in 0..200_000 {
            pipe.cmd("SET")
                .arg(format!("{{{tag}}}:busy:{}", i % 50_000))
                .arg(i)
                .ignore();
            if i % 5_000 == 4_999 {
                pipe.exec(&mut c).unwrap();
                pipe = redis::pipe();
            }
        }
    }
    let (added, added_id) = meet_new_master(&source);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-backlog-size")
        .arg("64mb")
        .exec(&mut added.client())
        .unwrap();
    wait_every_node_knows(&source, &added_id);
    wait_until(
        common::DEADLINE,
        "the added master to see the cluster up",
        || {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut added.client())
                .is_ok_and(|t| t.contains("cluster_state:ok"))
        },
    )
    .unwrap();
    migrate_slot(&source.nodes, slot, exporter, &added);

    let mut job = cluster_job(&source, &[target.url()], false);
    let addr = job.served_addr("status");
    wait_until(common::DEADLINE, "four shards live", || {
        let s = process_status(&addr);
        s["shards"]
            .as_array()
            .is_some_and(|a| a.len() == 4 && a.iter().all(|x| x["phase"] == "incremental"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", process_status(&addr), job.stderr()));
    let s = process_status(&addr);
    assert!(
        shard_names(&s).contains(&added_id),
        "the added master is followed: {s}"
    );
    common::wait_equal(&source.target(), &t);
    job.terminate();
    assert_eq!(job.wait(), 0, "{}", job.stderr());
}

/// The keys of a cluster's masters.
fn source_keys(cluster: &Cluster) -> i64 {
    cluster
        .nodes
        .iter()
        .filter(|n| is_master(n))
        .map(|n| redis::cmd("DBSIZE").query::<i64>(&mut n.client()).unwrap())
        .sum()
}

/// A hash tag whose slot the master `server` serves.
fn tag_on(server: &Server) -> String {
    let ranges = owned_ranges(server);
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| {
            let slot = ferry_testkit::key_slot(t.as_bytes());
            ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
        })
        .unwrap()
}

/// A `FLUSHALL` in a transaction on one source master (a write before it, one after) and a `FLUSHDB` on another
/// empty their own slots on the target and nothing else: no shard loses its checkpoint or copies again, and live
/// writes after them stay exact.
fn flushes_of_single_source_masters(target: &Target, target_json: serde_json::Value, seed: u64) {
    let source = Cluster::start(Version::V7_0).unwrap();
    big_backlogs(&source);
    fill(&source.target(), &FillOptions::seed(seed).dbs(vec![0])).unwrap();
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": target_json,
    }));
    wait_three_shards_live(&job);
    let writers = Writers::start(&source, 3);
    wait_until(common::DEADLINE, "live writes on the target", || {
        get_counter(target, &counter_key(0, 0)) >= 30
    })
    .unwrap();
    writers.stop();
    common::wait_equal(&source.target(), target);
    let keys_before = source_keys(&source);

    let masters: Vec<usize> = (0..source.nodes.len())
        .filter(|&i| is_master(&source.nodes[i]))
        .collect();
    let (m1, m2) = (masters[0], masters[1]);
    let tag = tag_on(&source.nodes[m1]);
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("{{{tag}}}:before"))
        .arg("1")
        .cmd("FLUSHALL")
        .cmd("SET")
        .arg(format!("{{{tag}}}:after"))
        .arg("2")
        .exec(&mut source.nodes[m1].client())
        .unwrap();
    let left = source_keys(&source);
    assert!(
        left > 1 && left < keys_before,
        "the flush emptied one master ({keys_before} keys before, {left} after)"
    );
    // Equal to the source: the flushed master's keys are gone from the target, the others' are there.
    common::wait_equal(&source.target(), target);
    redis::cmd("FLUSHDB")
        .exec(&mut source.nodes[m2].client())
        .unwrap();
    assert!(source_keys(&source) > 0, "the third master keeps its keys");
    common::wait_equal(&source.target(), target);

    let writers = Writers::start_with(&source, 3, "after:");
    wait_until(common::DEADLINE, "live writes after the flushes", || {
        get_counter(target, &prefixed_counter("after:", 0, 0)) >= 30
    })
    .unwrap();
    end_exact_without_new_copies(&source, target, [writers], rt, job);
}

#[test]
fn a_flush_of_one_source_master_empties_its_slots_of_a_cluster_target_and_no_shard_copies_again() {
    let target = Cluster::start(Version::V7_0).unwrap();
    let seeds: Vec<_> = target
        .nodes
        .iter()
        .map(|n| serde_json::json!({ "url": n.url() }))
        .collect();
    flushes_of_single_source_masters(
        &target.target(),
        serde_json::json!({ "type": "cluster", "seeds": seeds }),
        51,
    );
}

#[test]
fn a_flush_of_one_source_master_empties_its_slots_of_a_standalone_target_and_no_shard_copies_again()
{
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    flushes_of_single_source_masters(
        &Target::from(&target),
        serde_json::json!({ "type": "standalone", "url": target.url() }),
        52,
    );
}

#[test]
fn a_flush_of_a_master_migrating_a_slot_keeps_the_keys_it_already_moved() {
    let source = Cluster::start(Version::V7_0).unwrap();
    let target = Server::start(ferry_testkit::ServerOptions::new(Version::V7_0)).unwrap();
    big_backlogs(&source);
    let slot = ferry_testkit::key_slot(b"mig");
    set_cluster_keys(&source, "{mig}:", 40, 0);
    set_cluster_keys(&source, "other:", 100, 0);
    let (rt, job) = start_job(serde_json::json!({
        "source": cluster_source_json(&source),
        "target": { "type": "standalone", "url": target.url() },
    }));
    wait_three_shards_live(&job);
    let t = Target::from(&target);
    common::wait_equal(&source.target(), &t);

    // Half of the slot's keys moved to another master, then the exporter is flushed.
    let (from, _) = shard_nodes(&source, slot);
    let to = (0..source.nodes.len())
        .find(|&i| i != from && is_master(&source.nodes[i]))
        .unwrap();
    let (from, to) = (&source.nodes[from], &source.nodes[to]);
    begin_migration(slot, from, to);
    let moved: Vec<String> = (0..20).map(|i| format!("{{mig}}:{i}")).collect();
    migrate_keys(from, to, &moved);
    // A write on the importer to a moved key: once the target has it, the importer's copies are there too.
    redis::pipe()
        .cmd("ASKING")
        .ignore()
        .cmd("SET")
        .arg("{mig}:0")
        .arg("imported")
        .ignore()
        .exec(&mut to.client())
        .unwrap();
    let mut c = target.client();
    wait_until(
        common::DEADLINE,
        "the importer's write on the target",
        || {
            let v: Option<String> = redis::cmd("GET").arg("{mig}:0").query(&mut c).unwrap();
            v.as_deref() == Some("imported")
        },
    )
    .unwrap();
    redis::cmd("FLUSHALL").exec(&mut from.client()).unwrap();

    // The flush has reached the target once the keys left on the exporter are gone there; the moved ones stay.
    wait_until(
        common::DEADLINE,
        "the exporter's flush on the target",
        || {
            let left: i64 = redis::cmd("EXISTS")
                .arg((20..40).map(|i| format!("{{mig}}:{i}")).collect::<Vec<_>>())
                .query(&mut c)
                .unwrap();
            left == 0
        },
    )
    .unwrap();
    let kept: i64 = redis::cmd("EXISTS").arg(&moved).query(&mut c).unwrap();
    assert_eq!(
        kept,
        20,
        "the keys moved before the flush stay: {:?}",
        job.status()
    );
    let v: Option<String> = redis::cmd("GET").arg("{mig}:0").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("imported"));

    end_migration(&source.nodes, slot, to);
    set_cluster_keys(&source, "later:", 50, 0);
    common::wait_equal(&source.target(), &t);
    let status = job.status();
    for s in &status.shards {
        assert_eq!(s.full_syncs, 1, "no new full copy: {status:?}");
    }
    rt.block_on(job.stop()).unwrap();
}
