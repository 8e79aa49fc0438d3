//! Sentinel-managed targets and sources: `SENTINEL FAILOVER` in the middle of a live stream, followed without a
//! restart and without a second full copy, ending with equal datasets and exact counters.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferry_replicator::{Config, JobEventKind};
use ferry_resp::ConnectOptions;
use ferry_sentinel::{Addr, SentinelPool, SentinelPoolOptions};
use ferry_testkit::{
    compare, AclUser, CompareOptions, SentinelGroup, SentinelOptions, Server, ServerOptions,
    Target, Version,
};

const DATA_USER: &str = "ferry-data";
const DATA_PASS: &str = "data-secret";
const SENTINEL_PASS: &str = "sentinel-secret";

/// A group of 1 master, 2 replicas and 3 sentinels, with an ACL user on the data nodes and a separate sentinel
/// password.
fn start_group() -> SentinelGroup {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    SentinelGroup::start(
        SentinelOptions::new(Version::V7_0)
            .master_user(AclUser::new(DATA_USER, DATA_PASS))
            .sentinel_password(SENTINEL_PASS),
    )
    .expect("sentinel group starts")
}

/// Pool options for `group`: sentinel auth apart from the data nodes' auth, test-friendly timings.
fn sentinel_options(group: &SentinelGroup) -> SentinelPoolOptions {
    let mut o = SentinelPoolOptions::new(
        group.master_name.clone(),
        group
            .sentinels
            .iter()
            .map(|s| Addr::new(s.host(), s.port())),
    )
    .sentinel_auth(None, SENTINEL_PASS)
    .data_auth(Some(DATA_USER), DATA_PASS)
    .poll_interval(Duration::from_millis(500))
    .listener_retry_base(Duration::from_millis(200))
    .resolve_timeout(Duration::from_secs(30));
    o.listener_retry_max = Duration::from_secs(1);
    o
}

/// Asserts that databases 0, 1 and 2 of `a` and `b` are equal.
fn assert_equal(a: &Server, b: &Server) {
    let opts = CompareOptions::default().dbs(vec![0, 1, 2]);
    let report = compare(&Target::from(a), &Target::from(b), &opts).expect("compare");
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
}

#[test]
fn target_sentinel_failover_mid_stream_continues_on_the_promoted_replica_exactly() {
    // The backlog must hold what the source writes while the target fails over (a few seconds of a fast
    // writer), as a replica's would.
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb"))
            .unwrap();
    let group = start_group();
    // Data before the job: the full copy.
    let before = workload(&source, 200, "before");

    let mut config = Config::new(
        ConnectOptions::from_url(&source.url()).unwrap(),
        // Only the address is replaced by the resolved master; the sentinel options carry the auth.
        ConnectOptions::new("127.0.0.1", 1),
    );
    config.sink.checkpoint_db = CHECKPOINT_DB;
    config.reconnect_backoff = Duration::from_millis(200);
    config.target_sentinel = Some(sentinel_options(&group));
    let job = Job::start_with(config);
    job.wait_incremental();

    let writer = workload_in_background(&source, 3000, "live");
    // Fail the target over while the stream is being applied.
    ferry_testkit::wait_until(DEADLINE, "live writes to reach the target", || {
        counter(group.current_master().unwrap(), "live") >= 200
    })
    .unwrap();
    let old = group.current_master_addr().unwrap();
    let new = group.failover().expect("SENTINEL FAILOVER completes");
    assert_ne!(old, new);
    let live = writer.join().expect("writer");

    job.wait_caught_up(&source);
    let target = group.current_master().unwrap();
    assert_eq!(target.addr(), new, "the job writes to the promoted replica");
    assert_eq!(counter(&source, "before"), before);
    assert_eq!(counter(&source, "live"), live);
    assert_eq!(counter(target, "before"), before);
    assert_eq!(counter(target, "live"), live);
    assert_equal(&source, target);
    let s = job.status.snapshot();
    assert_eq!(s.full_syncs, 1, "{s}");
    assert!(s.reconnects >= 1, "the failover ended a session: {s}");
    job.stop().expect("job stops cleanly");
}

/// One write of the counter writer: `INCR` through the pool, then `WAIT` for both replicas.
#[derive(Debug)]
struct Write {
    generation: u64,
    replicated: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_sentinel_failover_mid_stream_continues_with_psync_without_a_second_full_copy() {
    let group = start_group();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    // Data of every kind before the job: the full copy.
    let master_url = group.master.url();
    let before = tokio::task::spawn_blocking(move || workload_url(&master_url, 200, "before"))
        .await
        .unwrap();

    let mut config = Config::new(
        ConnectOptions::new("127.0.0.1", 1),
        ConnectOptions::from_url(&target.url()).unwrap(),
    );
    config.sink.checkpoint_db = CHECKPOINT_DB;
    config.reconnect_backoff = Duration::from_millis(200);
    config.source_sentinel = Some(sentinel_options(&group));
    let job = Job::start_with(config);
    let mut events = job.status.subscribe();
    tokio::task::block_in_place(|| job.wait_incremental());

    // Live writes through a sentinel-aware pool, so none lands on the demoted master.
    let pool = SentinelPool::new(sentinel_options(&group)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            let mut writes = Vec::new();
            let mut unsure = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut conn = match pool.get().await {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                let generation = conn.generation();
                let cmds = vec![
                    vec!["INCR".to_string(), "ferry:counter:live".to_string()],
                    vec!["WAIT".to_string(), "2".to_string(), "100".to_string()],
                ];
                match conn.pipeline(&cmds).await {
                    Ok(replies) => {
                        let replicated = match &replies[1] {
                            ferry_sentinel::Frame::Integer(n) => *n,
                            _ => 0,
                        };
                        writes.push(Write {
                            generation,
                            replicated,
                        });
                    }
                    // Not sent: safe to do again.
                    Err(e) if e.is_safe_to_retry() => {}
                    Err(_) => unsure += 1,
                }
            }
            (writes, unsure)
        }
    });
    let wait_counter = |n: u64| {
        tokio::task::block_in_place(|| {
            ferry_testkit::wait_until(DEADLINE, "live writes to reach the target", || {
                counter(&target, "live") >= n
            })
            .unwrap()
        })
    };
    wait_counter(100);
    let old = group.current_master_addr().unwrap();
    let new = tokio::task::block_in_place(|| group.failover()).expect("SENTINEL FAILOVER");
    assert_ne!(old, new);
    let seen = tokio::task::block_in_place(|| counter(group.current_master().unwrap(), "live"));
    wait_counter(seen + 100);
    stop.store(true, Ordering::Relaxed);
    let (writes, unsure) = writer.await.unwrap();
    pool.close();

    let master = group.current_master().unwrap();
    tokio::task::block_in_place(|| job.wait_caught_up(master));
    // Writes acknowledged by the final master, or by every replica before the failover, cannot be lost.
    let final_generation = writes.last().map(|w| w.generation).unwrap_or_default();
    let sure = writes
        .iter()
        .filter(|w| w.generation == final_generation || w.replicated >= 2)
        .count() as u64;
    let on_source = counter(master, "live");
    assert!(
        sure <= on_source && on_source <= writes.len() as u64 + unsure,
        "source counter {on_source}, sure {sure}, acknowledged {}, unsure {unsure}",
        writes.len()
    );
    assert_eq!(counter(&target, "live"), on_source, "counters exact");
    assert_eq!(counter(&target, "before"), before);
    assert_equal(master, &target);
    let s = job.status.snapshot();
    assert_eq!(s.full_syncs, 1, "one full copy only: {s}");
    assert!(s.reconnects >= 1, "the failover ended a session: {s}");
    tokio::task::block_in_place(|| job.stop()).expect("job stops cleanly");
    let mut followed = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let JobEventKind::SourceFailover { node } = &e.kind {
            assert_eq!(e.shard, None);
            followed.push(node.clone());
        }
    }
    assert_eq!(
        followed,
        [new],
        "the failover followed is announced once, naming the promoted replica"
    );
}
