//! The target refuses batches in the middle of the live stream; the chain stops at the refused command, and the
//! job resumes from what the target committed: nothing skipped, nothing applied twice.

mod common;

use common::{
    assert_same_data, counter, expire_short_keys, workload, workload_in_background, Job, DEADLINE,
};
use ferry_testkit::{fill, wait_until, FillOptions, Server, ServerOptions, Target, Version};

fn config_set(server: &Server, name: &str, value: &str) {
    let mut c = server.client();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .exec(&mut c)
        .unwrap();
}

fn wait_error(job: &Job, code: &str) {
    wait_until(DEADLINE, "the target to refuse a batch", || {
        let s = job.status.snapshot();
        s.last_error.as_deref().is_some_and(|e| e.contains(code))
    })
    .unwrap_or_else(|e| panic!("{e}; status: {}", job.status.snapshot()));
}

#[test]
fn target_out_of_memory_mid_stream_resumes_without_loss_or_double_incr() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(31)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "oom");
    wait_until(DEADLINE, "some live writes applied", || {
        counter(&target, "oom") > 50
    })
    .unwrap();
    // Every write of the target is refused with OOM from now on (noeviction, the default policy).
    config_set(&target, "maxmemory", "1");
    wait_error(&job, "OOM");
    let during = counter(&target, "oom");
    wait_error(&job, "OOM");
    assert_eq!(counter(&target, "oom"), during, "nothing applied while OOM");
    config_set(&target, "maxmemory", "0");
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "oom");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "resumed with PSYNC: {status}");
    assert!(status.reconnects >= 1, "{status}");
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "oom"), rounds);
}

#[test]
fn target_misconf_mid_stream_resumes_without_loss_or_double_incr() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target =
        Server::start(ServerOptions::new(Version::V7_0).config("enable-protected-configs", "yes"))
            .unwrap();
    fill(&Target::from(&source), &FillOptions::seed(32)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "misconf");
    wait_until(DEADLINE, "some live writes applied", || {
        counter(&target, "misconf") > 50
    })
    .unwrap();
    // A snapshot that cannot be renamed into place (its name is a directory) fails, and a target with
    // stop-writes-on-bgsave-error (the default) refuses writes with MISCONF until a snapshot succeeds.
    // (Redis refuses writes for a failed snapshot only when snapshots are configured.)
    config_set(&target, "save", "3600 1");
    std::fs::create_dir_all(target.dir().join("blocker")).unwrap();
    config_set(&target, "dbfilename", "blocker");
    let mut c = target.client();
    redis::cmd("BGSAVE").exec(&mut c).unwrap();
    wait_until(DEADLINE, "the snapshot to fail", || {
        target
            .info("persistence")
            .unwrap()
            .contains("rdb_last_bgsave_status:err")
    })
    .unwrap();
    wait_error(&job, "MISCONF");
    config_set(&target, "dbfilename", "dump.rdb");
    redis::cmd("BGSAVE").exec(&mut c).unwrap();
    wait_until(DEADLINE, "a snapshot to succeed", || {
        target
            .info("persistence")
            .unwrap()
            .contains("rdb_last_bgsave_status:ok")
    })
    .unwrap();
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "misconf");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 1, "resumed with PSYNC: {status}");
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "misconf"), rounds);
}

/// A key of the wrong type planted on the target, written by the second command of a source transaction: the
/// first command of the transaction applies, the job stops at the second with a clear error; once the key is
/// removed, a restarted job applies the rest of the transaction without repeating its first command.
fn wrongtype_inside_a_transaction(target_version: Version) {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(target_version)).unwrap();
    fill(
        &Target::from(&source),
        &FillOptions::seed(33).dbs(vec![0, 1]),
    )
    .unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    let mut t = target.client();
    redis::cmd("SET")
        .arg("ferry:txn:wt:h")
        .arg("planted")
        .exec(&mut t)
        .unwrap();
    let rounds = workload(&source, 300, "wt");
    let error = ferry_testkit::wait_for(DEADLINE, "the job to stop at the refused write", || {
        let s = job.status.snapshot();
        (s.phase == ferry_replicator::Phase::Stopped).then_some(s.last_error)
    })
    .unwrap()
    .unwrap_or_default();
    assert!(
        error.contains("WRONGTYPE") && error.contains("hset"),
        "a clear error: {error}"
    );
    assert!(job.stop().is_err());
    let applied: u64 = redis::cmd("GET")
        .arg("ferry:txn:wt:a")
        .query(&mut t)
        .unwrap();
    assert_eq!(applied, 1, "the transaction's first command applied once");
    redis::cmd("DEL")
        .arg("ferry:txn:wt:h")
        .exec(&mut t)
        .unwrap();
    let job = Job::start(&source, &target, |_| {});
    expire_short_keys(&source, rounds, "wt");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.full_syncs, 0, "resumed with PSYNC: {status}");
    // A 6.2 target cannot hold the source's function library.
    assert_same_data(&source, &target, target_version.is_7());
    assert_eq!(counter(&target, "wt"), rounds);
}

#[test]
fn wrongtype_planted_on_a_7_0_target_stops_then_resumes_inside_the_transaction() {
    wrongtype_inside_a_transaction(Version::V7_0);
}

#[test]
fn wrongtype_planted_on_a_6_2_target_stops_then_resumes_inside_the_transaction() {
    wrongtype_inside_a_transaction(Version::V6_2);
}

#[test]
fn target_6_2_out_of_memory_mid_stream_resumes_exactly() {
    let source = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(34)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);
    config_set(&target, "maxmemory", "1");
    let rounds = workload(&source, 200, "oom62");
    wait_error(&job, "OOM");
    config_set(&target, "maxmemory", "0");
    expire_short_keys(&source, rounds, "oom62");
    job.wait_caught_up(&source);
    assert_eq!(job.status.snapshot().full_syncs, 1);
    assert_same_data(&source, &target, false);
    assert_eq!(counter(&target, "oom62"), rounds);
}
