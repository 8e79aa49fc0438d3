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
