//! DrPair against real servers: the disaster-recovery walk-through with an application writing in every phase,
//! fencing of a job of the old direction, and recover when A has writes B never received.

mod common;

use common::runtime;

use std::sync::atomic::Ordering;

use common::dr::{assert_counters, job_full_syncs, wait_job, Addr, App};
use ferry::{
    Deployment, DrConfig, DrEvent, DrPair, DrPhase, ErrorKind, RecoverChoice, RecoverOutcome, Side,
    SyncJob,
};
use ferry_testkit::{
    fill, wait_until, Cluster, FillOptions, SentinelGroup, SentinelOptions, Server, ServerOptions,
    Target as TkTarget, Version,
};

/// A server with a replication backlog that holds every write of a test.
fn server() -> Server {
    Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb")).unwrap()
}

/// The walk-through with an application writing in every phase; `a_url` / `b_url` are where the application
/// writes (the masters).
fn walk_through(name: &str, a: Deployment, b: Deployment, a_url: &Addr, b_url: &Addr) {
    let pair = DrPair::new(DrConfig::new(name, a, b)).unwrap();
    let tk = |addr: &Addr| match addr {
        Addr::One(url) => TkTarget::Standalone(url.clone()),
        Addr::Cluster(nodes) => TkTarget::Cluster(nodes.clone()),
    };
    let (ta, tb) = (tk(a_url), tk(b_url));
    fill(&ta, &FillOptions::seed(5)).unwrap();
    runtime().block_on(async {
        let status = pair.init().await.unwrap();
        assert_eq!(
            (status.phase, status.epoch, status.primary),
            (DrPhase::Normal, 1, Side::A)
        );
        let run = pair.run().unwrap();
        let mut events = run.events();
        wait_job(&run, ferry::Direction::AToB, 1);
        assert!(
            job_full_syncs(&run) >= Some(1),
            "the first A -> B is a full copy"
        );

        // 1. Normal: A serves, A -> B runs.
        let app = App::start(a_url, b_url, name);
        app.wait_writes(Side::A, 300);

        // 2. A is lost for the application; failover.
        app.a_down.store(true, Ordering::SeqCst);
        let f = pair.failover().await.unwrap();
        assert!(f.changed && f.rpo.is_some(), "{f:?}");
        assert_eq!(f.lag_bytes, Some(0), "a planned failover drains: {f:?}");
        let again = pair.failover().await.unwrap();
        assert!(!again.changed, "a retry finds it done");
        assert_eq!(
            (again.rpo, again.b_position),
            (f.rpo.clone(), f.b_position.clone())
        );
        app.wait_writes(Side::B, 300);
        let s = pair.status().await.unwrap();
        assert_eq!(
            (s.phase, s.primary, s.direction),
            (DrPhase::FailedOver, Side::B, None)
        );
        assert!(s.next.starts_with("recover"), "{}", s.next);

        // 3. A is back: recover incrementally while B keeps taking writes.
        app.a_down.store(false, Ordering::SeqCst);
        let r = pair.recover(RecoverChoice::None).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::Incremental, "{r:?}");
        assert_eq!(r.extra_writes_on_a, Some(0));
        wait_job(&run, ferry::Direction::BToA, r.epoch);
        app.wait_writes(Side::B, 300);
        assert_eq!(job_full_syncs(&run), Some(0), "B -> A continues B's stream");

        // A stale A -> B job started by hand with the old epoch is refused.
        let mut stale =
            ferry::SyncConfig::new(pair.config().a.as_source(), pair.config().b.as_target());
        stale.checkpoint.tag = ferry::Direction::AToB.checkpoint_tag(name);
        stale.checkpoint.epoch = 1;
        let e = SyncJob::new(stale)
            .unwrap()
            .start()
            .unwrap()
            .wait()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");

        // 4. Switch back under writes.
        let sb = pair.switchback().await.unwrap();
        assert!(sb.changed);
        let pause = sb.write_pause_ms.unwrap();
        println!("switchback write pause: {pause} ms");
        wait_job(&run, ferry::Direction::AToB, sb.epoch);
        app.wait_writes(Side::A, 300);
        assert_eq!(
            job_full_syncs(&run),
            Some(0),
            "A -> B continues from A's seeded position"
        );
        let s = pair.status().await.unwrap();
        assert_eq!(
            (s.phase, s.primary, s.a_epoch, s.b_epoch),
            (DrPhase::Normal, Side::A, Some(sb.epoch), Some(sb.epoch))
        );
        assert_eq!(s.state.unwrap().switchback_pause_ms, Some(pause));
        let again = pair.switchback().await.unwrap();
        assert!(!again.changed && again.a_position == sb.a_position);

        let acked = app.finish();
        common::wait_equal(&ta, &tb);
        assert_counters(a_url, &acked);
        assert_counters(b_url, &acked);
        run.stop().await.unwrap();
        let mut primaries = Vec::new();
        while let Some(e) = events.try_recv() {
            if let DrEvent::Primary { side, .. } = e {
                primaries.push(side);
            }
        }
        // The run polls the record: each epoch it saw is one event, in order.
        assert_eq!(primaries.first(), Some(&Side::A), "{primaries:?}");
        assert_eq!(primaries.last(), Some(&Side::A), "{primaries:?}");
        assert!(primaries.contains(&Side::B), "{primaries:?}");
    });
}

#[test]
fn walk_through_standalone_pair_with_live_writes_loses_no_acknowledged_write() {
    let a = server();
    let b = server();
    walk_through(
        "walk",
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
        &Addr::One(a.url()),
        &Addr::One(b.url()),
    );
}

#[test]
fn walk_through_standalone_a_and_sentinel_group_b_loses_no_acknowledged_write() {
    let a = server();
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    group.wait_converged(common::DEADLINE).unwrap();
    let sentinels: Vec<String> = group.sentinels.iter().map(Server::url).collect();
    let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    let master = group.current_master().unwrap().url();
    walk_through(
        "walk-sentinel",
        Deployment::standalone(a.url()),
        Deployment::sentinel(&sentinels, group.master_name.clone()),
        &Addr::One(a.url()),
        &Addr::One(master),
    );
}

#[test]
fn walk_through_cluster_a_and_sentinel_group_b_loses_no_acknowledged_write() {
    let a = Cluster::start(Version::V7_0).unwrap();
    a.wait_ok(common::DEADLINE).unwrap();
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    group.wait_converged(common::DEADLINE).unwrap();
    let sentinels: Vec<String> = group.sentinels.iter().map(Server::url).collect();
    let sentinels: Vec<&str> = sentinels.iter().map(String::as_str).collect();
    let master = group.current_master().unwrap().url();
    let nodes: Vec<String> = a.masters().iter().map(|s| s.url()).collect();
    walk_through(
        "walk-cluster",
        Deployment::cluster(nodes[0].clone()),
        Deployment::sentinel(&sentinels, group.master_name.clone()),
        &Addr::Cluster(nodes),
        &Addr::One(master),
    );
}

#[test]
fn recover_counts_writes_a_has_beyond_b_and_refuses_until_b_wins() {
    let a = server();
    let b = server();
    fill(&TkTarget::from(&a), &FillOptions::seed(8)).unwrap();
    let name = "extra";
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    runtime().block_on(async {
        pair.init().await.unwrap();
        // A job of the pair's A -> B direction, run by hand (a process the failover does not know of).
        let mut config = ferry::SyncConfig::new(
            ferry::Source::standalone(a.url()),
            ferry::Target::standalone(b.url()),
        )
        .with_conflict(ferry::Conflict::Rewrite);
        config.checkpoint.tag = ferry::Direction::AToB.checkpoint_tag(name);
        config.checkpoint.epoch = 1;
        let job = SyncJob::new(config).unwrap().start().unwrap();
        wait_until(common::DEADLINE, "the A -> B job to go live", || {
            job.status().phase == ferry::Phase::Incremental
        })
        .unwrap();
        let mut ca = a.client();
        let mut cb = b.client();
        for _ in 0..5 {
            redis::cmd("INCR").arg("n").exec(&mut ca).unwrap();
        }
        common::wait_equal(&TkTarget::from(&a), &TkTarget::from(&b));
        pair.failover().await.unwrap();
        // A keeps taking writes after the failover (it "kept serving"); the old job is fenced at its next batch.
        for _ in 0..3 {
            redis::cmd("INCR").arg("n").exec(&mut ca).unwrap();
        }
        redis::cmd("SET")
            .arg("only-on-a")
            .arg("1")
            .exec(&mut ca)
            .unwrap();
        let e = job.wait().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        let n: i64 = redis::cmd("GET").arg("n").query(&mut cb).unwrap();
        assert_eq!(n, 5, "the fenced job wrote nothing after the failover");
        // B serves.
        for _ in 0..10 {
            redis::cmd("INCR").arg("n").exec(&mut cb).unwrap();
        }
        let r = pair.recover(RecoverChoice::None).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::Refused, "{r:?}");
        assert_eq!(r.extra_writes_on_a, Some(4), "3 INCR and 1 SET: {r:?}");
        assert!(r.reason.contains("4 writes"), "{}", r.reason);
        assert_eq!(
            pair.status().await.unwrap().phase,
            DrPhase::FailedOver,
            "refused: nothing changed"
        );
        let r = pair.recover(RecoverChoice::Abort).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::Aborted);
        let r = pair.recover(RecoverChoice::BWins).await.unwrap();
        assert_eq!(r.outcome, RecoverOutcome::FullCopy, "{r:?}");
        let run = pair.run().unwrap();
        wait_job(&run, ferry::Direction::BToA, r.epoch);
        common::wait_equal(&TkTarget::from(&b), &TkTarget::from(&a));
        let n: i64 = redis::cmd("GET").arg("n").query(&mut ca).unwrap();
        assert_eq!(n, 15, "B's value: A's extra increments are gone");
        let gone: Option<String> = redis::cmd("GET").arg("only-on-a").query(&mut ca).unwrap();
        assert_eq!(gone, None);
        run.stop().await.unwrap();
    });
}

#[test]
fn a_failover_interrupted_before_a_got_the_record_is_finished_by_calling_it_again() {
    let a = server();
    let b = server();
    let name = "retry";
    let pair = DrPair::new(DrConfig::new(
        name,
        Deployment::standalone(a.url()),
        Deployment::standalone(b.url()),
    ))
    .unwrap();
    runtime().block_on(async {
        pair.init().await.unwrap();
        let key = format!("ferry:state:{{dr-{name}}}");
        let mut ca = a.client();
        let before: String = redis::cmd("GET").arg(&key).query(&mut ca).unwrap();
        let f = pair.failover().await.unwrap();
        // The state a crash right after B's script leaves: B moved, A still holds the old record.
        redis::cmd("SET")
            .arg(&key)
            .arg(&before)
            .exec(&mut ca)
            .unwrap();
        let s = pair.status().await.unwrap();
        assert_eq!(
            (s.phase, s.a_epoch, s.b_epoch),
            (DrPhase::FailedOver, Some(1), Some(2))
        );
        assert!(
            s.next
                .starts_with("failover again: the record on A is behind"),
            "{}",
            s.next
        );
        let again = pair.failover().await.unwrap();
        assert!(!again.changed);
        assert_eq!(
            (again.rpo, again.b_position, again.epoch),
            (f.rpo, f.b_position, f.epoch)
        );
        let s = pair.status().await.unwrap();
        assert_eq!((s.a_epoch, s.b_epoch), (Some(2), Some(2)));
        assert!(s.next.starts_with("recover"), "{}", s.next);
    });
}

#[test]
fn walk_through_cluster_a_and_cluster_b_loses_no_acknowledged_write() {
    let a = Cluster::start(Version::V7_0).unwrap();
    let b = Cluster::start(Version::V7_0).unwrap();
    a.wait_ok(common::DEADLINE).unwrap();
    b.wait_ok(common::DEADLINE).unwrap();
    let a_nodes: Vec<String> = a.masters().iter().map(|s| s.url()).collect();
    let b_nodes: Vec<String> = b.masters().iter().map(|s| s.url()).collect();
    walk_through(
        "walk-clusters",
        Deployment::cluster(a_nodes[0].clone()),
        Deployment::cluster(b_nodes[0].clone()),
        &Addr::Cluster(a_nodes),
        &Addr::Cluster(b_nodes),
    );
}
