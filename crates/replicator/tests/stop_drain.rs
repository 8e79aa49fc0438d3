//! Stopping a job in the live phase drains: what the source link had received when the stop came is applied
//! and committed before the job ends, so a stopped job leaves the target at the source's position of that
//! moment, not somewhere before it.

mod common;

use common::{assert_same_data, checkpoint_value, counter, master_offset, workload, Job, DEADLINE};
use ferry_testkit::{Frozen, Server, ServerOptions, Version};

#[test]
fn a_stop_in_the_live_phase_applies_and_commits_what_the_job_had_received() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    job.wait_caught_up(&source);

    // The target frozen: what the source writes now reaches ferry but cannot be applied yet.
    let frozen = Frozen::freeze(&[&target]);
    let increments = workload(&source, 300, "drain");
    let offset = master_offset(&source);
    ferry_testkit::wait_until(DEADLINE, "the job to receive the source's writes", || {
        job.status.snapshot().source_offset >= offset
    })
    .unwrap();
    let applied_at_stop = job.status.snapshot().applied_offset;
    assert!(
        applied_at_stop < offset,
        "the frozen target cannot have applied everything yet: {}",
        job.status.snapshot()
    );

    // Stop while the target is frozen, then let the target answer again: the stop waits for what was received.
    job.request_stop();
    frozen.resume();
    let status = job.status.clone();
    job.stop().expect("a stopped job ends with Ok");

    // At least what the source had written when the stop came (its periodic PING may have added a few bytes).
    let s = status.snapshot();
    assert!(
        s.applied_offset >= offset,
        "the stop committed what had been received: {s}"
    );
    let checkpoint = checkpoint_value(&target).expect("a checkpoint");
    let stored: u64 = checkpoint
        .split(' ')
        .nth(2)
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("a v2 checkpoint: {checkpoint}"));
    assert!(
        stored >= offset,
        "the checkpoint covers the source's offset {offset}: {checkpoint}"
    );
    assert_same_data(&source, &target, false);
    assert_eq!(counter(&target, "drain"), increments);
}
