//! A sentinel-managed target through the façade: the job follows `SENTINEL FAILOVER` of the target without a
//! restart and ends equal, with exact counters.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ferry::{Event, SyncConfig, SyncJob};
use ferry_testkit::{
    AclUser, SentinelGroup, SentinelOptions, Server, ServerOptions, Target as TkTarget, Version,
};

const SENTINEL_PASS: &str = "sentinel-secret";

/// The pause between two writes of a test's writer (a failover test needs writes going on, not a flood).
const WRITE_PACE: std::time::Duration = std::time::Duration::from_millis(1);

fn master_offset(server: &Server) -> u64 {
    server
        .info("replication")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("master_repl_offset")
}

fn counter(server: &Server) -> u64 {
    let v: Option<u64> = redis::cmd("GET")
        .arg("live-counter")
        .query(&mut server.client())
        .unwrap();
    v.unwrap_or(0)
}

/// A sentinel group whose data nodes ferry reaches as the user `ferry-data`, its sentinels with a password.
fn start_group() -> SentinelGroup {
    SentinelGroup::start(
        SentinelOptions::new(Version::V7_0)
            .master_user(AclUser::new("ferry-data", "data-secret"))
            .sentinel_password(SENTINEL_PASS),
    )
    .unwrap()
}

/// The group as a source or target of ferry's configuration.
fn group_json(group: &SentinelGroup) -> serde_json::Value {
    let sentinels: Vec<_> = group
        .sentinels
        .iter()
        .map(|s| serde_json::json!({ "url": format!("redis://:{SENTINEL_PASS}@{}", s.addr()) }))
        .collect();
    serde_json::json!({
        "type": "sentinel",
        "sentinels": sentinels,
        "master": group.master_name,
        "master_auth": { "username": "ferry-data", "password": "data-secret" },
    })
}

/// Waits until the job has applied the replication offset `source` has now.
fn wait_applied(job: &ferry::JobHandle, source: &Server) {
    let offset = master_offset(source);
    ferry_testkit::wait_until(common::DEADLINE, "the job to catch up", || {
        job.status()
            .shards
            .first()
            .is_some_and(|s| s.applied_offset >= offset)
    })
    .unwrap();
}

/// Starts a job of ferry's configuration from `source` into `target`, on a runtime of its own.
fn start_job(
    source: serde_json::Value,
    target: serde_json::Value,
) -> (tokio::runtime::Runtime, ferry::JobHandle) {
    let config = SyncConfig::from_json_str(
        &serde_json::json!({ "source": source, "target": target }).to_string(),
    )
    .expect("valid config");
    let rt = common::runtime();
    let job = rt.block_on(async { SyncJob::new(config).unwrap().start().unwrap() });
    (rt, job)
}

#[test]
fn a_sentinel_target_config_follows_a_target_failover_and_ends_exact() {
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb"))
            .unwrap();
    let group = start_group();
    let (rt, job) = start_job(
        serde_json::json!({ "type": "standalone", "url": source.url() }),
        group_json(&group),
    );
    let mut events = job.events();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = std::thread::spawn({
        let (stop, acked, url) = (stop.clone(), acked.clone(), source.url());
        move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            while !stop.load(Ordering::Relaxed) {
                redis::cmd("INCR").arg("live-counter").exec(&mut c).unwrap();
                acked.fetch_add(1, Ordering::Relaxed);
                // Paced: on 2 loaded cores an unpaced writer can starve the sentinels into aborting the failover.
                std::thread::sleep(WRITE_PACE);
            }
        }
    });
    ferry_testkit::wait_until(common::DEADLINE, "live writes on the target", || {
        counter(group.current_master().unwrap()) >= 500
    })
    .unwrap();
    let new = group.failover().expect("SENTINEL FAILOVER");
    ferry_testkit::wait_until(common::DEADLINE, "live writes on the new master", || {
        group.current_master().unwrap().addr() == new
            && counter(group.current_master().unwrap()) > 0
    })
    .unwrap();
    let seen = counter(group.current_master().unwrap());
    ferry_testkit::wait_until(common::DEADLINE, "more writes after the failover", || {
        counter(group.current_master().unwrap()) >= seen + 500
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    wait_applied(&job, &source);
    let target = group.current_master().unwrap();
    let acked = acked.load(Ordering::Relaxed);
    assert_eq!(counter(&source), acked);
    assert_eq!(counter(target), acked, "counters exact");
    common::assert_equal(&TkTarget::from(&source), &TkTarget::from(target));
    let status = rt.block_on(job.stop()).unwrap();
    assert_eq!(status.full_syncs, 1, "{status:?}");
    assert!(status.reconnects >= 1, "{status:?}");
    let mut followed = Vec::new();
    while let Some(e) = events.try_recv() {
        if let Event::TargetFailoverFollowed { shard, new_master } = e {
            assert_eq!(shard, None);
            followed.push(new_master);
        }
    }
    assert_eq!(followed, [new], "the target failover followed is announced");
}

#[test]
fn until_caught_up_with_a_sentinel_source_ends_once_the_master_the_sentinels_name_is_applied() {
    let group = start_group();
    let master = group.current_master().unwrap();
    ferry_testkit::fill(
        &TkTarget::from(master as &Server),
        &ferry_testkit::FillOptions::seed(41),
    )
    .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let config_json = serde_json::json!({
        "source": group_json(&group),
        "target": { "type": "standalone", "url": target.url() },
        "until_caught_up": true,
    })
    .to_string();
    let config = SyncConfig::from_json_str(&config_json).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt
        .block_on(async { SyncJob::new(config)?.start()?.wait().await })
        .expect("the job ends by itself");
    assert_eq!(status.phase, ferry::Phase::CaughtUp, "{status:?}");
    common::assert_equal(&TkTarget::from(master as &Server), &TkTarget::from(&target));
    // verify resolves the group's master through its sentinels.
    let config = SyncConfig::from_json_str(&config_json).unwrap();
    let report = rt
        .block_on(ferry::verify(
            &config.source,
            &config.target,
            Default::default(),
        ))
        .unwrap();
    assert!(report.equal, "{report:?}");
    assert!(report.keys_checked > 0, "{report:?}");
}

#[test]
fn a_sentinel_source_failover_under_writes_is_announced_with_the_promoted_replica_and_ends_exact() {
    let group = start_group();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let (rt, job) = start_job(
        group_json(&group),
        serde_json::json!({ "type": "standalone", "url": target.url() }),
    );
    let mut events = job.events();
    let stop = AtomicBool::new(false);
    let new = std::thread::scope(|scope| {
        // Writes to whichever master the sentinels name (a write the failover loses is lost on the source too:
        // the comparison is with the final master).
        let writer = scope.spawn(|| {
            let mut c = group.current_master().unwrap().client();
            while !stop.load(Ordering::Relaxed) {
                if redis::cmd("INCR").arg("live-counter").exec(&mut c).is_err() {
                    if let Ok(m) = group.current_master() {
                        c = m.client();
                    }
                }
                std::thread::sleep(WRITE_PACE);
            }
        });
        ferry_testkit::wait_until(common::DEADLINE, "live writes on the target", || {
            counter(&target) >= 300
        })
        .unwrap();
        let new = group.failover().expect("SENTINEL FAILOVER");
        let seen = counter(&target);
        ferry_testkit::wait_until(common::DEADLINE, "live writes after the failover", || {
            counter(&target) >= seen + 300
        })
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        new
    });
    let master = group.current_master().unwrap();
    assert_eq!(master.addr(), new);
    wait_applied(&job, master);
    assert_eq!(counter(&target), counter(master), "counters exact");
    common::assert_equal(&TkTarget::from(master), &TkTarget::from(&target));
    let status = rt.block_on(job.stop()).unwrap();
    assert_eq!(status.full_syncs, 1, "no second full copy: {status:?}");
    let mut followed = Vec::new();
    while let Some(e) = events.try_recv() {
        if let Event::FailoverFollowed { new_master } = e {
            followed.push(new_master);
        }
    }
    assert_eq!(followed, [new], "the failover followed is announced once");
}

#[test]
fn a_sentinel_source_master_killed_under_writes_continues_on_the_promoted_replica_without_a_full_copy(
) {
    // The stream is applied only as far as a replica holds it, so when the master dies with writes its replicas
    // never got, the target is not ahead of the replica promoted in its place, and the job continues there
    // with PSYNC2 instead of copying everything again.
    let mut group = start_group();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let (rt, job) = start_job(
        group_json(&group),
        serde_json::json!({ "type": "standalone", "url": target.url() }),
    );
    let old = group.master.addr();
    let mut c = group.master.client();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    // Pipelined increments: the master's stream runs ahead of its replicas by whatever is in flight.
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut p = redis::pipe();
                for _ in 0..50 {
                    p.cmd("INCR").arg("live-counter");
                }
                match p.query::<Vec<u64>>(&mut c) {
                    Ok(v) => acked.store(*v.last().unwrap(), Ordering::Relaxed),
                    Err(_) => return,
                }
                std::thread::sleep(WRITE_PACE);
            }
        })
    };
    ferry_testkit::wait_until(common::DEADLINE, "live writes on the target", || {
        counter(&target) >= 5000
    })
    .unwrap();
    group.master.kill();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let new = group
        .wait_master_changed(&old, common::DEADLINE)
        .expect("the sentinels promote a replica");
    let master = group.server_by_addr(&new).unwrap();
    let survived = counter(master);
    // Increments the dead master acknowledged and no replica got are lost on the source too.
    assert!(survived <= acked.load(Ordering::Relaxed));
    let mut c = master.client();
    for _ in 0..300 {
        redis::cmd("INCR").arg("live-counter").exec(&mut c).unwrap();
    }
    wait_applied(&job, master);
    assert_eq!(counter(&target), survived + 300, "counters exact");
    common::assert_equal(&TkTarget::from(master), &TkTarget::from(&target));
    let status = rt.block_on(job.stop()).unwrap();
    assert_eq!(status.full_syncs, 1, "no second full copy: {status:?}");
}
