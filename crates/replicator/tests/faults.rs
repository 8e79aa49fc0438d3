//! The fault matrix: each case ends with equal datasets and exact INCR counters.

mod common;

use common::{
    assert_same_data, checkpoint_value, counter, expire_short_keys, master_offset, workload,
    workload_in_background, Job, ProcJob, DEADLINE,
};
use ferry_replicator::Phase;
use ferry_testkit::{
    fill, wait_until, FillOptions, ReplicaSet, Server, ServerOptions, Target, Version,
};

fn servers() -> (Server, Server) {
    // The backlog must hold what the workload writes while the job is away, or PSYNC rightly falls back to a full
    // copy (a 1 MB default is overrun on a loaded machine); backlog_overrun_* covers that fallback.
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb"))
            .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    (source, target)
}

#[test]
fn sigkill_during_live_stream_resumes_without_losing_or_repeating_incr() {
    let (source, target) = servers();
    fill(&Target::from(&source), &FillOptions::seed(11)).unwrap();
    let job = ProcJob::start(&source, &target);
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 2000, "kill");
    wait_until(DEADLINE, "some live writes applied", || {
        counter(&target, "kill") > 200
    })
    .unwrap();
    job.kill();
    let applied_at_kill = counter(&target, "kill");
    let job = ProcJob::start(&source, &target);
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "kill");
    job.wait_caught_up(&source);
    assert_eq!(
        job.full_syncs(),
        0,
        "the restarted job must continue with PSYNC: {}",
        job.status_line()
    );
    assert!(
        applied_at_kill < rounds,
        "the kill happened before the end of the writes"
    );
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "kill"), rounds);
}

#[test]
fn sigkill_during_rdb_redoes_the_full_sync_and_ends_equal() {
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("rdb-key-save-delay", "10000"))
            .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(12)).unwrap();
    let job = ProcJob::start(&source, &target);
    wait_until(DEADLINE, "the full sync to be half-way", || {
        let mut c = target.client();
        let keys: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        checkpoint_value(&target).as_deref() == Some("fullsync") && keys > 20
    })
    .unwrap();
    job.kill();
    assert_eq!(
        checkpoint_value(&target).as_deref(),
        Some("fullsync"),
        "killed during the RDB"
    );
    let rounds = workload(&source, 300, "rdbkill");
    let mut c = source.client();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg("0")
        .exec(&mut c)
        .unwrap();
    let job = ProcJob::start(&source, &target);
    expire_short_keys(&source, rounds, "rdbkill");
    job.wait_caught_up(&source);
    assert_eq!(job.full_syncs(), 1);
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "rdbkill"), rounds);
}

#[test]
fn source_link_killed_continues_with_psync_continue() {
    let (source, target) = servers();
    fill(&Target::from(&source), &FillOptions::seed(13)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "link");
    for _ in 0..3 {
        let before = job.status.snapshot().reconnects;
        wait_until(DEADLINE, "the job to be following", || {
            job.status.snapshot().phase == Phase::Incremental
        })
        .unwrap();
        let mut c = source.client();
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query(&mut c)
            .unwrap();
        assert_eq!(killed, 1);
        wait_until(DEADLINE, "the job to reconnect", || {
            job.status.snapshot().reconnects > before
        })
        .unwrap();
    }
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "link");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 1,
        "reconnects must continue with +CONTINUE: {status}"
    );
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "link"), rounds);
}

#[test]
fn target_restarted_job_resumes_from_its_checkpoint() {
    // The backlog must hold what the workload writes while the job is away, or PSYNC rightly falls back to a full
    // copy (a 1 MB default is overrun on a loaded machine); backlog_overrun_* covers that fallback.
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb"))
            .unwrap();
    let mut target = Server::start(
        ServerOptions::new(Version::V7_0)
            .config("appendonly", "yes")
            .config("appendfsync", "always"),
    )
    .unwrap();
    fill(&Target::from(&source), &FillOptions::seed(14)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "target");
    wait_until(DEADLINE, "some live writes applied", || {
        counter(&target, "target") > 100
    })
    .unwrap();
    target.kill();
    target.restart().unwrap();
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "target");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert!(status.reconnects >= 1, "{status}");
    assert_eq!(
        status.full_syncs, 1,
        "the restarted target kept its checkpoint: {status}"
    );
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "target"), rounds);
}

#[test]
fn backlog_overrun_falls_back_to_a_full_resync_and_ends_equal() {
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "16kb"))
            .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(15)).unwrap();
    let job = Job::start(&source, &target, |c| c.flush_target_on_resync = true);
    job.wait_caught_up(&source);
    job.stop().unwrap();
    let before = master_offset(&source);
    let rounds = workload(&source, 500, "overrun");
    assert!(
        master_offset(&source) - before > 64 * 1024,
        "the writes overran the backlog"
    );
    let job = Job::start(&source, &target, |c| c.flush_target_on_resync = true);
    expire_short_keys(&source, rounds, "overrun");
    job.wait_caught_up(&source);
    assert_eq!(job.status.snapshot().full_syncs, 1);
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "overrun"), rounds);
}

#[test]
fn promoted_replica_continues_the_stream_without_a_full_sync() {
    let set = ReplicaSet::start(Version::V7_0, 1).unwrap();
    let (master, replica) = (&set.master, &set.replicas[0]);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(master), &FillOptions::seed(16)).unwrap();
    let job = Job::start(master, &target, |_| {});
    let rounds = workload(master, 300, "promote");
    expire_short_keys(master, rounds, "promote");
    job.wait_caught_up(master);
    job.stop().unwrap();
    let offset = master_offset(master);
    wait_until(DEADLINE, "the replica to catch up", || {
        let info = replica.info("replication").unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("slave_repl_offset:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|o| o >= offset)
    })
    .unwrap();
    let mut r = replica.client();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut r)
        .unwrap();
    let more = workload(replica, 300, "promote2");
    expire_short_keys(replica, more, "promote2");
    let job = Job::start(replica, &target, |_| {});
    job.wait_caught_up(replica);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 0,
        "PSYNC2 must continue on the promoted replica: {status}"
    );
    assert_same_data(replica, &target, true);
    assert_eq!(counter(&target, "promote"), rounds);
    assert_eq!(counter(&target, "promote2"), more);
}

#[test]
fn source_without_master_link_is_retried_until_it_can_serve() {
    let mut set = ReplicaSet::start(Version::V7_0, 1).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&set.master), &FillOptions::seed(17)).unwrap();
    set.master.stop();
    wait_until(DEADLINE, "the replica to lose its master", || {
        set.replicas[0]
            .info("replication")
            .unwrap()
            .contains("master_link_status:down")
    })
    .unwrap();
    // The replica answers PSYNC with -NOMASTERLINK: the job keeps asking.
    let job = Job::start(&set.replicas[0], &target, |c| {
        c.flush_target_on_resync = true
    });
    wait_until(DEADLINE, "the job's PSYNC to be refused", || {
        set.replicas[0]
            .info("commandstats")
            .unwrap()
            .contains("cmdstat_psync:")
    })
    .unwrap();
    assert_eq!(job.status.snapshot().phase, Phase::Handshake);
    set.master.restart().unwrap();
    fill(&Target::from(&set.master), &FillOptions::seed(18)).unwrap();
    job.wait_incremental();
    let replica = &set.replicas[0];
    wait_until(DEADLINE, "the replica to catch up", || {
        let info = replica.info("replication").unwrap();
        info.contains("master_link_status:up")
            && master_offset(replica) >= master_offset(&set.master)
    })
    .unwrap();
    job.wait_caught_up(replica);
    assert_same_data(replica, &target, true);
    job.stop().unwrap();
}
