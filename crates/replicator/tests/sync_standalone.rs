//! Full sync and live stream between real servers, across versions.

mod common;

use common::{assert_same_data, counter, expire_short_keys, workload, Job};
use ferry_testkit::{fill, FillOptions, Server, ServerOptions, Target, Version};

fn sync_fill_then_live_writes(source_version: Version, target_version: Version) {
    let source = Server::start(ServerOptions::new(source_version)).unwrap();
    let target = Server::start(ServerOptions::new(target_version)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(7)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    // Writes start while the full sync may still be running.
    let rounds = workload(&source, 300, "live");
    expire_short_keys(&source, rounds, "live");
    job.wait_caught_up(&source);
    if source_version == Version::V7_0 && target_version == Version::V6_2 {
        assert!(
            job.status.snapshot().keys_reencoded > 10,
            "{:?}",
            job.status.snapshot()
        );
    }
    let functions = source_version == Version::V7_0 && target_version == Version::V7_0;
    assert_same_data(&source, &target, functions);
    assert_eq!(counter(&target, "live"), rounds);
    job.stop().unwrap();
}

#[test]
fn redis_7_0_to_7_0_full_sync_and_live_stream_end_equal() {
    sync_fill_then_live_writes(Version::V7_0, Version::V7_0);
}

#[test]
fn redis_6_2_to_7_0_full_sync_and_live_stream_end_equal() {
    sync_fill_then_live_writes(Version::V6_2, Version::V7_0);
}

#[test]
fn redis_7_0_to_6_2_reencodes_values_and_ends_equal() {
    sync_fill_then_live_writes(Version::V7_0, Version::V6_2);
}

#[test]
fn disk_based_rdb_transfer_is_read_by_its_length() {
    let source =
        Server::start(ServerOptions::new(Version::V7_0).config("repl-diskless-sync", "no"))
            .unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(8)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    let rounds = workload(&source, 100, "disk");
    expire_short_keys(&source, rounds, "disk");
    job.wait_caught_up(&source);
    assert_same_data(&source, &target, true);
    job.stop().unwrap();
}

#[test]
fn values_bigger_than_the_bound_go_as_element_commands_and_end_equal() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(9)).unwrap();
    let job = Job::start(&source, &target, |c| c.max_restore_bytes = 512);
    job.wait_caught_up(&source);
    assert!(
        job.status.snapshot().keys_as_commands > 10,
        "{:?}",
        job.status.snapshot()
    );
    assert_same_data(&source, &target, true);
    job.stop().unwrap();
}

#[test]
fn keys_copied_after_a_full_sync_counts_the_big_keys_too() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut con = source.client();
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1000)
        .arg("small")
        .arg(16)
        .exec(&mut con)
        .unwrap();
    // Three values far bigger than the bound below: written as element commands.
    for k in 0..3 {
        let mut hset = redis::cmd("HSET");
        hset.arg(format!("big:{k}"));
        for f in 0..1000 {
            hset.arg(format!("field-{f}")).arg(format!("value-{f}-{k}"));
        }
        hset.exec(&mut con).unwrap();
    }
    let job = Job::start(&source, &target, |c| c.max_restore_bytes = 512);
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.keys_as_commands, 3, "{status:?}");
    assert_eq!(status.keys_copied, 1003, "{status:?}");
    assert_same_data(&source, &target, true);
    job.stop().unwrap();
}

#[test]
fn password_protected_source_and_target() {
    let source =
        Server::start(ServerOptions::new(Version::V7_0).password("source-secret")).unwrap();
    let target =
        Server::start(ServerOptions::new(Version::V7_0).password("target-secret")).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(10)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    let rounds = workload(&source, 100, "auth");
    expire_short_keys(&source, rounds, "auth");
    job.wait_caught_up(&source);
    assert_same_data(&source, &target, true);
    assert_eq!(counter(&target, "auth"), rounds);
    job.stop().unwrap();
}

#[test]
fn wait_on_the_source_counts_the_job_as_an_acknowledging_replica() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_incremental();
    let mut c = source.client();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("w{i}"))
            .arg(i)
            .exec(&mut c)
            .unwrap();
        // REPLCONF GETACK goes out; our REPLCONF ACK must cover this write, to the byte.
        let acked: u64 = redis::cmd("WAIT")
            .arg(1)
            .arg(120_000)
            .query(&mut c)
            .unwrap();
        assert_eq!(acked, 1);
    }
    job.stop().unwrap();
}
