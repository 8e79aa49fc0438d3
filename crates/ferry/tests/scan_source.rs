//! The scan source (`Source::Scan`) against a real server whose `PSYNC` and `SYNC` are renamed away, as some
//! managed services do: a copy of every type by SCAN + DUMP, then live changes by keyspace notifications, from
//! several clients while the copy runs and after it; equal key by key at the end, counters exact.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use ferry::{ErrorKind, Phase, SyncConfig, SyncJob};
use ferry_testkit::{
    compare, fill, AclUser, FillOptions, Server, ServerOptions, Target as TkTarget, Version,
};

/// A 7.0 server that refuses to be replicated.
fn no_psync_server() -> ServerOptions {
    ServerOptions::new(Version::V7_0)
        .config("rename-command", "PSYNC \"\"")
        .config("rename-command", "SYNC \"\"")
}

fn scan_config(source: &Server, target: &Server, notifications: bool) -> SyncConfig {
    SyncConfig::from_json_str(
        &serde_json::json!({
            "source": { "type": "scan", "endpoint": source.url(), "notifications": notifications },
            "target": { "type": "standalone", "url": target.url() },
        })
        .to_string(),
    )
    .unwrap()
}

fn get_u64(server: &Server, key: &str) -> u64 {
    let v: Option<u64> = redis::cmd("GET")
        .arg(key)
        .query(&mut server.client())
        .unwrap();
    v.unwrap_or(0)
}

#[test]
fn a_scan_source_copies_a_server_without_psync_then_follows_live_changes_exactly() {
    let source = Server::start(no_psync_server()).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let refused = redis::cmd("PSYNC")
        .arg("?")
        .arg("-1")
        .exec(&mut source.client())
        .unwrap_err();
    assert!(refused.to_string().contains("unknown command"), "{refused}");
    let filled = fill(
        &TkTarget::from(&source),
        &FillOptions::seed(51).dbs(vec![0, 3]),
    )
    .unwrap();

    // Writers from several clients, started before the job: they write while the scan runs and after it.
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(AtomicU64::new(0));
    let rounds = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (stop, shared, rounds, url) =
                (stop.clone(), shared.clone(), rounds.clone(), source.url());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut own = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    redis::cmd("INCR")
                        .arg(format!("counter:{t}"))
                        .exec(&mut c)
                        .unwrap();
                    own += 1;
                    redis::cmd("INCR")
                        .arg("counter:shared")
                        .exec(&mut c)
                        .unwrap();
                    shared.fetch_add(1, Ordering::Relaxed);
                    let slot = i % 40;
                    redis::cmd("SET")
                        .arg(format!("live:{t}:{slot}"))
                        .arg(format!("v{i}"))
                        .exec(&mut c)
                        .unwrap();
                    if i.is_multiple_of(5) {
                        redis::cmd("DEL")
                            .arg(format!("live:{t}:{}", (i + 20) % 40))
                            .exec(&mut c)
                            .unwrap();
                    }
                    if i.is_multiple_of(7) {
                        // Keys that expire on the source a moment later.
                        redis::cmd("SET")
                            .arg(format!("short:{t}:{i}"))
                            .arg("x")
                            .arg("PX")
                            .arg(150)
                            .exec(&mut c)
                            .unwrap();
                    }
                    if i.is_multiple_of(11) {
                        redis::cmd("PEXPIRE")
                            .arg(format!("live:{t}:{slot}"))
                            .arg(600_000)
                            .exec(&mut c)
                            .unwrap();
                    }
                    redis::cmd("HSET")
                        .arg(format!("hash:{t}"))
                        .arg(format!("f{slot}"))
                        .arg(i)
                        .exec(&mut c)
                        .unwrap();
                    redis::cmd("RPUSH")
                        .arg(format!("list:{t}"))
                        .arg(i)
                        .exec(&mut c)
                        .unwrap();
                    redis::cmd("LTRIM")
                        .arg(format!("list:{t}"))
                        .arg(-30)
                        .arg(-1)
                        .exec(&mut c)
                        .unwrap();
                    redis::cmd("ZINCRBY")
                        .arg(format!("zset:{t}"))
                        .arg(1)
                        .arg(format!("m{}", i % 13))
                        .exec(&mut c)
                        .unwrap();
                    redis::cmd("SADD")
                        .arg(format!("set:{t}"))
                        .arg(i % 17)
                        .exec(&mut c)
                        .unwrap();
                    i += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
                own
            })
        })
        .collect();
    ferry_testkit::wait_until(DEADLINE, "writers under way", || {
        rounds.load(Ordering::Relaxed) >= 300
    })
    .unwrap();

    let rt = runtime();
    let job = rt.block_on(async {
        SyncJob::new(scan_config(&source, &target, true))
            .unwrap()
            .start()
            .unwrap()
    });
    ferry_testkit::wait_until(DEADLINE, "the copy done, notifications followed", || {
        let s = job.status();
        assert!(s.phase != Phase::Stopped, "the job stopped: {s:?}");
        s.phase == Phase::Incremental
    })
    .unwrap();
    let copied = job.status();
    assert!(copied.keys_copied >= filled.total_keys, "{copied:?}");
    assert_eq!(copied.full_syncs, 1);
    // More writes after the copy, then the writers stop.
    let after_copy = rounds.load(Ordering::Relaxed);
    ferry_testkit::wait_until(DEADLINE, "live writes after the copy", || {
        rounds.load(Ordering::Relaxed) >= after_copy + 1500
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let own: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // The verify the job ran at the end of its copy is in the status.
    let verify = ferry_testkit::wait_for(DEADLINE, "the verify at the end of the copy", || {
        job.status().verify
    })
    .unwrap();
    assert!(verify.keys_checked > 0, "{verify:?}");

    // Every change was heard and read again: the target ends equal, key by key.
    let mut last = String::new();
    let waited = ferry_testkit::wait_until(DEADLINE, "the target equal to the source", || {
        if job.status().keys_pending > 0 {
            return false;
        }
        let r = compare(
            &TkTarget::from(&source),
            &TkTarget::from(&target),
            &Default::default(),
        )
        .unwrap();
        last = r.to_string();
        r.is_equal()
    });
    assert!(waited.is_ok(), "{last}\n{:?}", job.status());
    let report = compare(
        &TkTarget::from(&source),
        &TkTarget::from(&target),
        &Default::default(),
    )
    .unwrap();
    assert!(report.is_equal(), "{report}");
    for (t, n) in own.iter().enumerate() {
        assert_eq!(get_u64(&source, &format!("counter:{t}")), *n);
        assert_eq!(
            get_u64(&target, &format!("counter:{t}")),
            *n,
            "counter:{t} exact"
        );
    }
    let shared = shared.load(Ordering::Relaxed);
    assert_eq!(
        get_u64(&target, "counter:shared"),
        shared,
        "shared counter exact"
    );
    let status = job.status();
    assert!(status.commands_applied > 0, "{status:?}");
    assert_eq!(status.full_syncs, 1, "no second scan: {status:?}");
    let end = rt.block_on(job.stop()).unwrap();
    assert_eq!(end.phase, Phase::Stopped);
}

#[test]
fn a_scan_without_notifications_is_a_one_time_copy_that_ends_verified() {
    let source = Server::start(no_psync_server()).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(
        &TkTarget::from(&source),
        &FillOptions::seed(52).dbs(vec![0, 1, 2]),
    )
    .unwrap();
    // The program, as a user runs it.
    let mut ferry = Ferry::spawn([
        "sync",
        "--source",
        &source.url(),
        "--source-type",
        "scan",
        "--target",
        &target.url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    assert!(
        ferry
            .stderr()
            .contains("verify at the end of the scan: equal"),
        "{}",
        ferry.stderr()
    );
    let report = compare(
        &TkTarget::from(&source),
        &TkTarget::from(&target),
        &Default::default(),
    )
    .unwrap();
    assert!(report.is_equal(), "{report}");
    assert_eq!(report.keys_compared, filled.total_keys);
    // The same through the library: the final status carries the verify.
    redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
    let status = runtime()
        .block_on(async {
            SyncJob::new(scan_config(&source, &target, false))?
                .start()?
                .wait()
                .await
        })
        .unwrap();
    assert_eq!(status.keys_copied, filled.total_keys);
    let verify = status.verify.expect("a verify report");
    assert!(verify.equal, "{verify:?}");
    assert_eq!(verify.keys_checked, filled.total_keys);

    // Database 1 only, into database 4 (named in the URLs): the verify at the end compares what was copied.
    redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
    let mut ferry = Ferry::spawn([
        "sync",
        "--source",
        &format!("{}/1", source.url()),
        "--source-type",
        "scan",
        "--target",
        &format!("{}/4", target.url()),
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let in_db1 = dbsize(&source, 1);
    assert!(in_db1 > 0);
    assert!(
        ferry.stderr().contains(&format!(
            "verify at the end of the scan: equal: {in_db1} keys compared (dbs [1]"
        )),
        "{}",
        ferry.stderr()
    );
    assert_eq!(
        (dbsize(&target, 4), dbsize(&target, 1), dbsize(&target, 0)),
        (in_db1, 0, 0)
    );

    // Scanned databases that the filter leaves out are not compared either.
    redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
    let mut ferry = Ferry::spawn([
        "sync",
        "--source",
        &source.url(),
        "--source-type",
        "scan",
        "--scan-db",
        "0",
        "--scan-db",
        "1",
        "--allow-db",
        "1",
        "--target",
        &target.url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    assert!(
        ferry.stderr().contains(&format!(
            "verify at the end of the scan: equal: {in_db1} keys compared (dbs [1]"
        )),
        "{}",
        ferry.stderr()
    );
}

#[test]
fn notifications_off_and_config_set_refused_is_an_error_that_says_what_to_set() {
    let source = Server::start(
        no_psync_server()
            .acl_user(AclUser::new("app", "app-secret").rules("~* &* +@all -config|set"))
            .client_user("app"),
    )
    .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let err = runtime()
        .block_on(async {
            SyncJob::new(scan_config(&source, &target, true))?
                .start()?
                .wait()
                .await
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceRefused, "{err}");
    let text = err.to_string();
    assert!(text.contains("notify-keyspace-events"), "{text}");
    assert!(!text.contains("app-secret"), "{text}");
}

#[test]
fn a_lost_notification_subscriber_makes_the_job_scan_again_and_end_exact() {
    let source = Server::start(no_psync_server()).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&TkTarget::from(&source), &FillOptions::seed(53)).unwrap();
    let rt = runtime();
    let job = rt.block_on(async {
        SyncJob::new(scan_config(&source, &target, true))
            .unwrap()
            .start()
            .unwrap()
    });
    ferry_testkit::wait_until(DEADLINE, "the live phase", || {
        job.status().phase == Phase::Incremental
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (stop, url) = (stop.clone(), source.url());
        move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                redis::cmd("INCR").arg("counter").exec(&mut c).unwrap();
                redis::cmd("SET")
                    .arg(format!("k:{}", n % 100))
                    .arg(n)
                    .exec(&mut c)
                    .unwrap();
                n += 1;
            }
            n
        }
    });
    // The server drops the subscriber (as it does at the pub/sub output buffer limit): what was published
    // meanwhile is lost to ferry, which must notice and copy everything again.
    ferry_testkit::wait_until(DEADLINE, "live writes applied", || {
        job.status().commands_applied >= 200
    })
    .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut source.client())
        .unwrap();
    assert_eq!(killed, 1);
    ferry_testkit::wait_until(DEADLINE, "a second scan, then the live phase", || {
        let s = job.status();
        s.full_syncs == 2 && s.phase == Phase::Incremental && s.commands_applied >= 200
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    let mut last = String::new();
    let waited = ferry_testkit::wait_until(DEADLINE, "the target equal to the source", || {
        if job.status().keys_pending > 0 {
            return false;
        }
        let r = compare(
            &TkTarget::from(&source),
            &TkTarget::from(&target),
            &Default::default(),
        )
        .unwrap();
        last = r.to_string();
        r.is_equal()
    });
    assert!(waited.is_ok(), "{last}\n{:?}", job.status());
    assert_eq!(get_u64(&target, "counter"), acked, "counter exact");
    assert_eq!(job.status().reconnects, 1);
    rt.block_on(job.stop()).unwrap();
}

#[test]
fn a_cluster_scan_source_copies_every_master_and_follows_each_masters_notifications() {
    let cluster = ferry_testkit::Cluster::start(Version::V7_0).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(&cluster.target(), &FillOptions::seed(54)).unwrap();
    let seed = format!("redis://{}", cluster.masters()[0].addr());
    let config = SyncConfig::from_json_str(
        &serde_json::json!({
            "source": { "type": "scan", "endpoint": seed, "notifications": true, "cluster": true },
            "target": { "type": "standalone", "url": target.url() },
        })
        .to_string(),
    )
    .unwrap();
    let rt = runtime();
    let job = rt.block_on(async { SyncJob::new(config).unwrap().start().unwrap() });
    ferry_testkit::wait_until(DEADLINE, "the live phase", || {
        let s = job.status();
        assert!(s.phase != Phase::Stopped, "the job stopped: {s:?}");
        s.phase == Phase::Incremental
    })
    .unwrap();
    assert_eq!(job.status().keys_copied, filled.total_keys);
    // Writes on every master (keys of many slots) from two clients.
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let url = seed.clone();
            std::thread::spawn(move || {
                let client = redis::cluster::ClusterClient::new(vec![url]).unwrap();
                let mut c = client.get_connection().unwrap();
                let mut counts = vec![0u64; 30];
                for i in 0..900u64 {
                    let k = (i % 30) as usize;
                    redis::cmd("INCR")
                        .arg(format!("counter:{t}:{k}"))
                        .exec(&mut c)
                        .unwrap();
                    counts[k] += 1;
                    redis::cmd("SET")
                        .arg(format!("s:{t}:{}", i % 50))
                        .arg(i)
                        .exec(&mut c)
                        .unwrap();
                    if i % 9 == 0 {
                        redis::cmd("DEL")
                            .arg(format!("s:{t}:{}", (i + 25) % 50))
                            .exec(&mut c)
                            .unwrap();
                    }
                }
                counts
            })
        })
        .collect();
    let counts: Vec<Vec<u64>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut last = String::new();
    let waited = ferry_testkit::wait_until(DEADLINE, "the target equal to the cluster", || {
        if job.status().keys_pending > 0 {
            return false;
        }
        let r = compare(
            &cluster.target(),
            &TkTarget::from(&target),
            &Default::default(),
        )
        .unwrap();
        last = r.to_string();
        r.is_equal()
    });
    assert!(waited.is_ok(), "{last}\n{:?}", job.status());
    for (t, per) in counts.iter().enumerate() {
        for (k, n) in per.iter().enumerate() {
            assert_eq!(
                get_u64(&target, &format!("counter:{t}:{k}")),
                *n,
                "counter:{t}:{k}"
            );
        }
    }
    // The verify the job ran at the end of its copy walked every master (the writes ran meanwhile, so it is
    // not asked to be equal here).
    let verify = ferry_testkit::wait_for(DEADLINE, "the verify at the end of the copy", || {
        job.status().verify
    })
    .unwrap();
    assert!(verify.keys_checked >= filled.total_keys, "{verify:?}");
    rt.block_on(job.stop()).unwrap();
}

#[test]
fn a_scan_with_notifications_until_caught_up_ends_once_no_change_waits() {
    let source = Server::start(no_psync_server()).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(&TkTarget::from(&source), &FillOptions::seed(55)).unwrap();
    let status = runtime()
        .block_on(async {
            SyncJob::new(scan_config(&source, &target, true).with_until_caught_up(true))?
                .start()?
                .wait()
                .await
        })
        .unwrap();
    assert_eq!(status.phase, Phase::CaughtUp, "{status:?}");
    assert_eq!(status.keys_pending, 0);
    assert_eq!(status.keys_copied, filled.total_keys);
    let report = compare(
        &TkTarget::from(&source),
        &TkTarget::from(&target),
        &Default::default(),
    )
    .unwrap();
    assert!(report.is_equal(), "{report}");
}
