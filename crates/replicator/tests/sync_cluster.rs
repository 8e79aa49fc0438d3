//! A standalone source into a 3-master cluster target.

mod common;

use common::{config, expire_short_keys, workload, workload_in_background, Job, ProcJob, DEADLINE};
use ferry_replicator::checkpoint;
use ferry_testkit::{
    compare, fill, Cluster, CompareOptions, FillOptions, Server, ServerOptions, Target, Version,
};

fn cluster_counter(cluster: &Cluster, tag: &str) -> u64 {
    let mut c = cluster.cluster_client().unwrap();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("ferry:counter:{tag}"))
        .query(&mut c)
        .unwrap();
    v.unwrap_or(0)
}

/// How many times the cluster's masters ran `command` (lower case), from `INFO commandstats`.
fn calls_on_masters(cluster: &Cluster, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    cluster
        .masters()
        .iter()
        .map(|m| {
            let stats = m.info("commandstats").unwrap_or_default();
            stats
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// A 7.0 source whose backlog holds what a test's workload writes while the job is away: with the 1 MB default
/// PSYNC rightly falls back to a full copy on a loaded machine (faults.rs covers that fallback on its own).
fn source_with_backlog() -> Server {
    Server::start(ServerOptions::new(Version::V7_0).config("repl-backlog-size", "64mb")).unwrap()
}

#[test]
fn redis_7_0_standalone_to_3_master_cluster_ends_equal() {
    let source = source_with_backlog();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(21).dbs(vec![0])).unwrap();
    let entry = cluster.masters()[0];
    let mut cfg = config(&source, entry);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    // The workload also writes in database 1, which a cluster does not have.
    cfg.filter.block_dbs = vec![1];
    let job = Job::start_with(cfg);
    let rounds = workload(&source, 300, "cluster");
    expire_short_keys(&source, rounds, "cluster");
    job.wait_caught_up(&source);
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    assert_eq!(cluster_counter(&cluster, "cluster"), rounds);
    job.stop().unwrap();
}

#[test]
fn cluster_target_resumes_after_a_restart_without_repeating_incr() {
    let source = source_with_backlog();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(22).dbs(vec![0])).unwrap();
    let make = || {
        let mut cfg = config(&source, cluster.masters()[0]);
        cfg.target_cluster = true;
        cfg.sink.checkpoint_db = 0;
        cfg.filter.block_dbs = vec![1];
        cfg
    };
    let job = Job::start_with(make());
    let first = workload(&source, 200, "resume");
    job.wait_caught_up(&source);
    job.stop().unwrap();
    let second = workload(&source, 200, "resume");
    let job = Job::start_with(make());
    expire_short_keys(&source, first + second, "resume");
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 0,
        "the restarted job continues with PSYNC: {status}"
    );
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    assert_eq!(cluster_counter(&cluster, "resume"), first + second);
    job.stop().unwrap();
}

#[test]
fn sigkill_during_live_stream_into_a_cluster_loses_and_repeats_nothing() {
    let source = source_with_backlog();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(23).dbs(vec![0])).unwrap();
    let entry = cluster.masters()[0];
    let job = ProcJob::start_cluster(&source, entry);
    job.wait_caught_up(&source);
    let writer = workload_in_background(&source, 1500, "ckill");
    ferry_testkit::wait_until(DEADLINE, "some live writes applied", || {
        cluster_counter(&cluster, "ckill") > 100
    })
    .unwrap();
    job.kill();
    let job = ProcJob::start_cluster(&source, entry);
    let rounds = writer.join().unwrap();
    expire_short_keys(&source, rounds, "ckill");
    job.wait_caught_up(&source);
    assert_eq!(
        job.full_syncs(),
        0,
        "the restarted job continues with PSYNC: {}",
        job.status_line()
    );
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    assert_eq!(cluster_counter(&cluster, "ckill"), rounds);
}

#[test]
fn small_strings_go_as_one_mset_per_slot_and_skip_keeps_what_the_cluster_had() {
    let source = source_with_backlog();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(20_000)
        .arg("small")
        .exec(&mut source.client())
        .unwrap();
    // Keys the target already has, on every master: policy `skip` leaves them as they are.
    let mut c = cluster.cluster_client().unwrap();
    for i in (0..20_000).step_by(997) {
        redis::cmd("SET")
            .arg(format!("small:{i}"))
            .arg("kept")
            .exec(&mut c)
            .unwrap();
    }
    let kept = (0..20_000).step_by(997).count() as u64;
    let entry = cluster.masters()[0];
    let mut cfg = config(&source, entry);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    cfg.conflict = ferry_replicator::ConflictPolicy::Skip;
    let job = Job::start_with(cfg);
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(status.keys_copied, 20_000 - kept, "{status:?}");
    assert_eq!(status.keys_skipped, kept, "{status:?}");
    for m in cluster.masters() {
        let stats = m.info("commandstats").unwrap_or_default();
        assert!(
            !stats.contains("cmdstat_restore:"),
            "small strings are not restored one by one: {stats}"
        );
    }
    let msets = calls_on_masters(&cluster, "msetnx");
    assert!(
        msets > 0 && msets < 20_000,
        "MSETNX per slot group: {msets}"
    );
    for i in 0..20_000u64 {
        let v: String = redis::cmd("GET")
            .arg(format!("small:{i}"))
            .query(&mut c)
            .unwrap();
        if i % 997 == 0 {
            assert_eq!(v, "kept", "small:{i}");
        } else {
            assert_eq!(v, format!("value:{i}"), "small:{i}");
        }
    }
    job.stop().unwrap();
}

#[test]
fn small_strings_sharing_a_slot_go_in_groups_as_they_fill_and_rewrite_replaces_what_the_cluster_had(
) {
    let source = source_with_backlog();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    // 1,000 keys of one slot (a hash tag): their group goes out each time it is full, long before the gathered
    // total of all slots would send it.
    let mut s = source.client();
    let mut pipe = redis::pipe();
    for i in 0..1_000u64 {
        pipe.cmd("SET")
            .arg(format!("{{one}}:{i}"))
            .arg(format!("value:{i}"))
            .ignore();
    }
    pipe.exec(&mut s).unwrap();
    let mut c = cluster.cluster_client().unwrap();
    redis::cmd("SET")
        .arg("{one}:7")
        .arg("target")
        .exec(&mut c)
        .unwrap();
    let mut cfg = config(&source, cluster.masters()[0]);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    cfg.conflict = ferry_replicator::ConflictPolicy::Rewrite;
    let job = Job::start_with(cfg);
    job.wait_caught_up(&source);
    let msets = calls_on_masters(&cluster, "mset");
    assert_eq!(
        msets, 4,
        "groups of 256 keys of the slot: 256 + 256 + 256 + 232"
    );
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    job.stop().unwrap();
}

/// A standalone source propagates `SPUBLISH`; on a cluster target only the shard that owns the channel's slot
/// takes it (another node's batch script fails with "non local key"). The job sends each to that master: every
/// message is run once on the cluster and the job stays live (it reconnected forever before).
#[test]
fn shard_channel_messages_go_to_the_master_of_their_channel() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let mut cfg = config(&source, cluster.masters()[0]);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    let job = Job::start_with(cfg);
    job.wait_incremental();
    let mut c = source.client();
    for i in 0..30 {
        redis::cmd("SPUBLISH")
            .arg(format!("channel:{i}"))
            .arg("hello")
            .exec(&mut c)
            .unwrap();
        redis::cmd("INCR")
            .arg("ferry:counter:spub")
            .exec(&mut c)
            .unwrap();
    }
    job.wait_caught_up(&source);
    assert_eq!(calls_on_masters(&cluster, "spublish"), 30);
    assert_eq!(cluster_counter(&cluster, "spub"), 30);
    assert_eq!(job.status.snapshot().reconnects, 0);
    job.stop().unwrap();
}
