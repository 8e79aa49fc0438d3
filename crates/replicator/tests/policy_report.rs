//! The target policy's report across a kill: the keys a job skipped or converted are stored in the target with
//! the writes they belong to, so the job that continues after a SIGKILL lists every key skipped or converted
//! since the copy began (in the copy, in the killed process's live stream, while no job ran, and after), each
//! once, and the target equals the source by value minus exactly those keys.

mod common;

use std::collections::BTreeSet;

use common::{config, Job, ProcJob, CHECKPOINT_DB};
use ferry_replicator::checkpoint;
use ferry_replicator::{Loss, PolicyKey, TargetPolicy};
use ferry_testkit::{
    compare, Cluster, CompareOptions, DifferenceKind, Server, ServerOptions, Target, Version,
};

type Keys = BTreeSet<(i64, Vec<u8>)>;

/// A hash `key` in `db` with one field under an expiry (what a 7.0 target cannot hold), and a plain string
/// beside it (what it can).
fn field_expiry_hash(source: &Server, db: i64, key: &str) -> (i64, Vec<u8>) {
    let mut c = source.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("HSET")
        .arg(key)
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .exec(&mut c)
        .unwrap();
    redis::cmd("HPEXPIRE")
        .arg(key)
        .arg(900_000_000u64)
        .arg("FIELDS")
        .arg(1)
        .arg("a")
        .exec(&mut c)
        .unwrap();
    redis::cmd("SET")
        .arg(format!("plain:{key}"))
        .arg(key)
        .exec(&mut c)
        .unwrap();
    (db, key.as_bytes().to_vec())
}

/// `HSETEX` (a live command a 7.0 target does not know) of a new key.
fn hsetex(source: &Server, key: &str) -> (i64, Vec<u8>) {
    let mut c = source.client();
    redis::cmd("HSETEX")
        .arg(key)
        .arg("PX")
        .arg(900_000_000u64)
        .arg("FIELDS")
        .arg(1)
        .arg("f")
        .arg("v")
        .exec(&mut c)
        .unwrap();
    (0, key.as_bytes().to_vec())
}

fn listed(keys: &[PolicyKey]) -> Keys {
    keys.iter().map(|k| (k.db, k.key.to_vec())).collect()
}

/// Copy, live stream, SIGKILL, writes while no job runs, a job that continues, more writes: the last job's
/// status names every key the policy took, once, and nothing else. With `cluster`, the target is a 3-master
/// 7.0 cluster (database 0 only; each master stores the keys of its slots).
fn report_survives_a_kill(policy: TargetPolicy, name: &str, cluster: bool) {
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let nodes = cluster.then(|| Cluster::start(Version::V7_0).unwrap());
    let standalone = (!cluster).then(|| Server::start(ServerOptions::new(Version::V7_0)).unwrap());
    let (target, compared): (&Server, Target) = match (&nodes, &standalone) {
        (Some(n), _) => (n.masters()[0], Target::from(n)),
        (_, Some(s)) => (s, Target::from(s)),
        _ => unreachable!(),
    };
    let mut expected = Keys::new();
    // In the copy (two databases on a standalone target).
    for i in 0..5 {
        expected.insert(field_expiry_hash(&source, 0, &format!("copy:{i}")));
    }
    if !cluster {
        expected.insert(field_expiry_hash(&source, 1, "copy:db1"));
    }
    let db = CHECKPOINT_DB.to_string();
    let mut args = vec!["--target-policy", name];
    if cluster {
        args.extend(["--target-type", "cluster"]);
    } else {
        args.extend(["--checkpoint-db", &db]);
    }
    let killed = ProcJob::start_with(&source, target, &args);
    killed.wait_caught_up(&source);
    // In the live stream of the process that is killed.
    for i in 0..5 {
        expected.insert(field_expiry_hash(&source, 0, &format!("live:{i}")));
    }
    expected.insert(hsetex(&source, "live:hsetex"));
    killed.wait_caught_up(&source);
    assert_eq!(killed.full_syncs(), 1);
    killed.kill();
    // While no job runs, then after the restart.
    for i in 0..3 {
        expected.insert(field_expiry_hash(&source, 0, &format!("down:{i}")));
    }
    let job = Job::start_with({
        let mut c = config(&source, target);
        c.target_policy = policy;
        if cluster {
            c.target_cluster = true;
            c.sink.checkpoint_db = 0;
        }
        c
    });
    for i in 0..3 {
        expected.insert(field_expiry_hash(&source, 0, &format!("after:{i}")));
    }
    expected.insert(hsetex(&source, "after:hsetex"));
    // A later write to a key skipped before the kill: still skipped (or still converted, and applied).
    let mut c = source.client();
    redis::cmd("HSET")
        .arg("copy:1")
        .arg("c")
        .arg("3")
        .exec(&mut c)
        .unwrap();
    job.wait_caught_up(&source);
    let s = job.status.snapshot();
    assert_eq!(
        s.full_syncs, 0,
        "the job continued from its checkpoint: {s}"
    );
    let (taken, other, count, other_count) = match policy {
        TargetPolicy::Skip => (
            &s.policy_skipped,
            &s.policy_converted,
            s.policy_keys_skipped,
            s.policy_keys_converted,
        ),
        _ => (
            &s.policy_converted,
            &s.policy_skipped,
            s.policy_keys_converted,
            s.policy_keys_skipped,
        ),
    };
    // Exactly the keys the policy took, each once, with what was lost.
    assert_eq!(listed(taken), expected, "{policy:?}: {s}");
    assert_eq!(taken.len(), expected.len(), "{policy:?}: listed once each");
    assert_eq!(count as usize, expected.len(), "{policy:?}");
    assert!(other.is_empty() && other_count == 0, "{policy:?}: {s}");
    // What was lost: under `skip`, a key of the copy for its field expiries, a key of the stream for the
    // command the target does not know (`HPEXPIREAT`, `HSETEX`); under `convert`, field expiries.
    for k in taken {
        let from_stream = policy == TargetPolicy::Skip && !k.key.starts_with(b"copy:");
        match &k.loss {
            Loss::UnknownCommand { name } if from_stream => {
                assert!(name == "hpexpireat" || name == "hsetex", "{k:?}")
            }
            Loss::FieldExpiries { .. } if !from_stream => {}
            other => panic!("{policy:?}: {k:?}: {other:?}"),
        }
    }
    job.stop().unwrap();
    if let Some(nodes) = &nodes {
        // Each master stored the keys of its own slots.
        let holding = nodes
            .masters()
            .iter()
            .filter(|m| {
                let mut c = m.client();
                let found: Vec<String> = redis::cmd("KEYS")
                    .arg("ferry:*ed:{ferry-*}")
                    .query(&mut c)
                    .unwrap();
                !found.is_empty()
            })
            .count();
        assert!(holding >= 2, "the report is spread over the masters");
    }
    // Equal by value minus exactly the skipped keys; converted keys hold the same fields.
    let opts = CompareOptions::default()
        .dbs(if cluster { vec![0] } else { vec![0, 1] })
        .ignore_prefix(checkpoint::KEY_PREFIX)
        .ignore_prefix(checkpoint::SKIPPED_PREFIX)
        .ignore_prefix(checkpoint::CONVERTED_PREFIX)
        .max_differences(1000);
    let cmp = compare(&Target::from(&source), &compared, &opts).unwrap();
    let mut differing = Keys::new();
    for d in &cmp.differences {
        assert_eq!(d.kind, DifferenceKind::OnlyInA, "{policy:?}: {cmp}");
        differing.insert((i64::from(d.db.unwrap()), d.key.clone().unwrap()));
    }
    assert_eq!(cmp.total_differences as usize, differing.len());
    match policy {
        TargetPolicy::Skip => assert_eq!(differing, expected, "{cmp}"),
        _ => assert!(differing.is_empty(), "{cmp}"),
    }
    // The plain keys beside them (one per hash of field expiries) are on both sides, and under `convert` the
    // converted keys too.
    let plain = expected.len() - 2;
    let both = match policy {
        TargetPolicy::Skip => plain,
        _ => plain + expected.len(),
    };
    assert_eq!(cmp.keys_compared as usize, both, "{cmp}");
}

#[test]
fn skipped_keys_before_and_after_a_kill_are_all_listed_once() {
    report_survives_a_kill(TargetPolicy::Skip, "skip", false);
}

#[test]
fn converted_keys_before_and_after_a_kill_are_all_listed_once() {
    report_survives_a_kill(TargetPolicy::Convert, "convert", false);
}

#[test]
fn skipped_keys_on_a_cluster_target_before_and_after_a_kill_are_all_listed_once() {
    report_survives_a_kill(TargetPolicy::Skip, "skip", true);
}

#[test]
fn converted_keys_on_a_cluster_target_before_and_after_a_kill_are_all_listed_once() {
    report_survives_a_kill(TargetPolicy::Convert, "convert", true);
}

/// The fields of the stored report hash `hash` (checkpoint database of a standalone target).
fn stored(target: &Server, hash: &str) -> BTreeSet<Vec<u8>> {
    let mut c = target.client();
    redis::cmd("SELECT")
        .arg(CHECKPOINT_DB)
        .exec(&mut c)
        .unwrap();
    redis::cmd("HKEYS").arg(hash).query(&mut c).unwrap()
}

#[test]
fn a_new_full_copy_starts_the_stored_report_over() {
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    for i in 0..3 {
        field_expiry_hash(&source, 0, &format!("copy:{i}"));
    }
    let start = || {
        Job::start_with({
            let mut c = config(&source, &target);
            c.target_policy = TargetPolicy::Skip;
            c.conflict = ferry_replicator::ConflictPolicy::Rewrite;
            c
        })
    };
    let job = start();
    job.wait_caught_up(&source);
    job.stop().unwrap();
    let (skipped, _) = checkpoint::report_key_names("ferry");
    let names = |keys: &[&str]| -> BTreeSet<Vec<u8>> {
        keys.iter().map(|k| format!("0:{k}").into_bytes()).collect()
    };
    assert_eq!(
        stored(&target, &skipped),
        names(&["copy:0", "copy:1", "copy:2"])
    );
    // The source no longer has copy:0; without its checkpoint the next job copies everything again.
    let mut c = source.client();
    redis::cmd("DEL").arg("copy:0").exec(&mut c).unwrap();
    let mut t = target.client();
    redis::cmd("SELECT")
        .arg(CHECKPOINT_DB)
        .exec(&mut t)
        .unwrap();
    redis::cmd("DEL")
        .arg(checkpoint::key_name("ferry"))
        .exec(&mut t)
        .unwrap();
    let job = start();
    job.wait_caught_up(&source);
    let s = job.status.snapshot();
    assert_eq!(s.full_syncs, 1, "{s}");
    assert_eq!(
        listed(&s.policy_skipped),
        [(0, b"copy:1".to_vec()), (0, b"copy:2".to_vec())].into()
    );
    job.stop().unwrap();
    assert_eq!(stored(&target, &skipped), names(&["copy:1", "copy:2"]));
}

#[test]
fn swapdb_of_the_checkpoint_database_keeps_the_stored_report_with_the_checkpoint() {
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let taken = field_expiry_hash(&source, 0, "copy:0");
    let start = || {
        Job::start_with({
            let mut c = config(&source, &target);
            c.target_policy = TargetPolicy::Skip;
            c
        })
    };
    let job = start();
    job.wait_caught_up(&source);
    let mut c = source.client();
    redis::cmd("SELECT").arg(1).exec(&mut c).unwrap();
    redis::cmd("SET").arg("in1").arg("x").exec(&mut c).unwrap();
    redis::cmd("SWAPDB")
        .arg(1)
        .arg(CHECKPOINT_DB)
        .exec(&mut c)
        .unwrap();
    job.wait_caught_up(&source);
    job.stop().unwrap();
    let (skipped, _) = checkpoint::report_key_names("ferry");
    assert_eq!(stored(&target, &skipped), [b"0:copy:0".to_vec()].into());
    let mut t = target.client();
    redis::cmd("SELECT").arg(1).exec(&mut t).unwrap();
    let in1: Vec<String> = redis::cmd("KEYS").arg("ferry:*").query(&mut t).unwrap();
    assert!(in1.is_empty(), "{in1:?}");
    let job = start();
    job.wait_caught_up(&source);
    let s = job.status.snapshot();
    assert_eq!(s.full_syncs, 0, "{s}");
    assert_eq!(listed(&s.policy_skipped), [taken].into());
    job.stop().unwrap();
}

#[test]
fn a_flushall_of_the_source_keeps_the_stored_report_like_the_jobs_memory() {
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let before = field_expiry_hash(&source, 0, "copy:0");
    let start = || {
        Job::start_with({
            let mut c = config(&source, &target);
            c.target_policy = TargetPolicy::Skip;
            c
        })
    };
    let job = start();
    job.wait_caught_up(&source);
    let mut c = source.client();
    redis::cmd("FLUSHALL").exec(&mut c).unwrap();
    let after = field_expiry_hash(&source, 0, "live:0");
    job.wait_caught_up(&source);
    let in_memory = listed(&job.status.snapshot().policy_skipped);
    assert_eq!(in_memory, [before, after].into());
    job.stop().unwrap();
    let (skipped, _) = checkpoint::report_key_names("ferry");
    assert_eq!(
        stored(&target, &skipped),
        [b"0:copy:0".to_vec(), b"0:live:0".to_vec()].into()
    );
    let job = start();
    job.wait_caught_up(&source);
    let s = job.status.snapshot();
    assert_eq!(s.full_syncs, 0, "{s}");
    assert_eq!(listed(&s.policy_skipped), in_memory);
    job.stop().unwrap();
    let opts = CompareOptions::default().dbs(vec![0, 1]);
    let cmp = compare(&Target::from(&source), &Target::from(&target), &opts).unwrap();
    let differing: Keys = cmp
        .differences
        .iter()
        .map(|d| (i64::from(d.db.unwrap()), d.key.clone().unwrap()))
        .collect();
    assert_eq!(differing, [(0, b"live:0".to_vec())].into(), "{cmp}");
}
