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

/// A standalone source's multi-key commands on keys of different slots (no common hash tag), which a cluster
/// refuses as they are: sets, sorted sets, bitmaps, HyperLogLogs, geo sets and sorts written from other keys, copies, renames and
/// moves between keys, `MSETNX`, and `MOVE`/`COPY ... DB` into databases the job does not copy. Applied as
/// single-slot commands with the same result, with the job stopped and
/// started again in the middle and writes while it was away; the cluster ends equal to the source, with exact
/// counters and no scratch key left.
#[test]
fn multi_key_commands_on_keys_of_several_slots_reach_a_cluster_as_the_same_writes() {
    let source = source_with_backlog();
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let make = || {
        let mut cfg = config(&source, cluster.masters()[0]);
        cfg.target_cluster = true;
        cfg.sink.checkpoint_db = 0;
        cfg.filter.allow_dbs = vec![0];
        cfg
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut c = source.client();
    let mut counted = 0u64;
    let mut writes = |c: &mut redis::Connection, rounds: u64, next: &mut dyn FnMut(u64) -> u64| {
        let k = |prefix: &str, i: u64| format!("{prefix}{i}");
        for round in 0..rounds {
            let (a, b, d) = (next(8), next(8), next(8));
            let mut cmd = |args: &[&str]| {
                let mut r = redis::cmd(args[0]);
                for x in &args[1..] {
                    r.arg(*x);
                }
                // Some of these fail on the source (a rename of a missing key): then nothing is propagated.
                let _: redis::RedisResult<redis::Value> = r.query(c);
            };
            match next(16) {
                0 => cmd(&["SADD", &k("s", a), &round.to_string(), &next(5).to_string()]),
                1 => {
                    let op = ["SUNIONSTORE", "SINTERSTORE", "SDIFFSTORE"][next(3) as usize];
                    cmd(&[op, &k("s", d), &k("s", a), &k("s", b)]);
                }
                2 => cmd(&["SMOVE", &k("s", a), &k("s", b), &next(5).to_string()]),
                3 => cmd(&[
                    "ZADD",
                    &k("z", a),
                    &next(100).to_string(),
                    &format!("m{}", next(12)),
                ]),
                4 => {
                    let op = ["ZUNIONSTORE", "ZINTERSTORE"][next(2) as usize];
                    cmd(&[
                        op,
                        &k("z", d),
                        "2",
                        &k("z", a),
                        &k("z", b),
                        "WEIGHTS",
                        "1",
                        "3",
                    ]);
                }
                5 => cmd(&["ZDIFFSTORE", &k("z", d), "2", &k("z", a), &k("z", b)]),
                6 => cmd(&["ZRANGESTORE", &k("z", d), &k("z", a), "0", "3"]),
                7 => {
                    let (e, f) = (format!("e{round}"), format!("f{round}"));
                    cmd(&["RPUSH", &k("l", a), &e, &f]);
                    if next(3) == 0 {
                        cmd(&[
                            "SORT",
                            &k("l", b),
                            "ALPHA",
                            "LIMIT",
                            "0",
                            "6",
                            "STORE",
                            &k("l", d),
                        ]);
                    }
                }
                8 => {
                    let (from, to) = (
                        ["LEFT", "RIGHT"][next(2) as usize],
                        ["LEFT", "RIGHT"][next(2) as usize],
                    );
                    match next(3) {
                        0 => cmd(&["LMOVE", &k("l", a), &k("l", b), from, to]),
                        1 => cmd(&["RPOPLPUSH", &k("l", a), &k("l", b)]),
                        _ => cmd(&["BLMOVE", &k("l", a), &k("l", b), from, to, "0.01"]),
                    }
                }
                9 => cmd(&[
                    "SETRANGE",
                    &k("b", a),
                    &next(6).to_string(),
                    &format!("x{round}"),
                ]),
                10 => {
                    let op = ["AND", "OR", "XOR"][next(3) as usize];
                    if next(4) == 0 {
                        cmd(&["BITOP", "NOT", &k("b", d), &k("b", a)]);
                    } else {
                        cmd(&["BITOP", op, &k("b", d), &k("b", a), &k("b", b)]);
                    }
                }
                11 => {
                    cmd(&["PFADD", &k("h", a), &format!("v{}", next(50))]);
                    cmd(&["PFMERGE", &k("h", d), &k("h", a), &k("h", b)]);
                }
                12 => {
                    // The copy and the rename carry the source key's expiry.
                    if next(2) == 0 {
                        cmd(&["PEXPIRE", &k("s", a), "900000000"]);
                    }
                    cmd(&["COPY", &k("s", a), &k("s", b), "REPLACE"]);
                }
                13 => {
                    let op = ["RENAME", "RENAMENX"][next(2) as usize];
                    cmd(&[op, &k("z", a), &k("z", b)]);
                }
                14 => {
                    let (fa, fb) = (format!("fresh{round}a"), format!("fresh{round}b"));
                    cmd(&["MSETNX", &fa, "1", &fb, "2"]);
                    // Into a database the job does not copy (a cluster has none but 0): a move leaves database
                    // 0, a copy into another database changes nothing in it.
                    match next(3) {
                        0 => cmd(&["MOVE", &fb, "1"]),
                        1 => cmd(&["COPY", &k("s", a), &k("s", b), "DB", "2", "REPLACE"]),
                        _ => {}
                    }
                }
                _ => {
                    cmd(&[
                        "GEOADD",
                        &k("g", a),
                        "13.36",
                        "38.11",
                        &format!("p{}", next(9)),
                    ]);
                    cmd(&[
                        "GEOSEARCHSTORE",
                        &k("g", d),
                        &k("g", b),
                        "FROMLONLAT",
                        "15",
                        "37",
                        "BYRADIUS",
                        "400",
                        "km",
                        "ASC",
                    ]);
                    let store = ["STORE", "STOREDIST"][next(2) as usize];
                    cmd(&[
                        "GEORADIUS",
                        &k("g", a),
                        "15",
                        "37",
                        "500",
                        "km",
                        store,
                        &k("g", d),
                    ]);
                }
            }
            redis::cmd("INCR")
                .arg("ferry:counter:xslot")
                .exec(c)
                .unwrap();
            counted += 1;
        }
    };
    let job = Job::start_with(make());
    job.wait_incremental();
    writes(&mut c, 600, &mut next);
    job.wait_caught_up(&source);
    job.stop().unwrap();
    writes(&mut c, 300, &mut next);
    let job = Job::start_with(make());
    writes(&mut c, 600, &mut next);
    job.wait_caught_up(&source);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 0,
        "the restarted job continued: {status}"
    );
    assert_eq!(status.errors, 0, "{status}");
    job.stop().unwrap();
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report:?}");
    assert_eq!(cluster_counter(&cluster, "xslot"), counted);
    for m in cluster.masters() {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("ferry:xslot:*")
            .query(&mut m.client())
            .unwrap();
        assert!(left.is_empty(), "scratch keys left: {left:?}");
    }
}
