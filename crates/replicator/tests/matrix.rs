//! The version matrix on real servers: Redis 8.2, Valkey 9.1, Redis 7.0 and 6.2, each pair under each target
//! policy, with every type and encoding the source has (`fill`: field expiries on 8.2 and 9.1, a vector set on
//! 8.2, big values read in chunks) and live writes during and after the full copy.
//!
//! Each cell runs the sync job ([`ferry_replicator::Replicator`]) under a [`TargetPolicy`], stops it in the
//! middle of the live writes and starts it again (it continues from its checkpoint). At the end the target must
//! equal the source by value, minus exactly the keys the job's status lists: skipped keys are absent, converted
//! keys hold the same fields without their expiries, and the status names nothing else. Under
//! [`TargetPolicy::Stop`] a cell whose target cannot hold a key ends with the job stopped, naming the key.

mod common;

use std::collections::BTreeSet;

use common::{counter, expire_short_keys, workload, Job, DEADLINE};
use ferry_replicator::{Loss, TargetPolicy};
use ferry_replicator::{Phase, Status};
use ferry_replicator::{Source, SourceOptions};
use ferry_resp::ConnectOptions;
use ferry_testkit::{
    compare, fill, CompareOptions, DifferenceKind, FillOptions, Server, ServerOptions, Target,
    Version,
};

/// Values past this many serialized bytes arrive in chunks (the fill's big values do).
const BIG_VALUE_BYTES: usize = 64 * 1024;

/// Live writes of every kind the source has: the shared workload (INCR, APPEND, expiries, MULTI/EXEC, EVAL,
/// streams with groups, two databases), plus field expiries (`HSET` then `HPEXPIRE`, `HSETEX`) and `VADD`
/// where the source has them.
fn live_writes(source: &Server, rounds: u64, tag: &str) -> u64 {
    let n = workload(source, rounds, tag);
    let v = source.version();
    let mut c = source.client();
    for i in 0..rounds / 10 {
        // Redis 8 propagates this as `HSETEX key KEEPTTL FIELDS 1 f v`, which an older target gets as the `HSET`
        // it is, under every policy: nothing is lost, so the key is neither listed nor a reason to stop.
        redis::cmd("HINCRBYFLOAT")
            .arg(format!("ferry:live:hincrbyfloat:{tag}:{}", i % 3))
            .arg("f")
            .arg(0.5)
            .exec(&mut c)
            .unwrap();
        if v.field_expiry() {
            let key = format!("ferry:live:fieldttl:{tag}:{i}");
            redis::cmd("HSET")
                .arg(&key)
                .arg("a")
                .arg(i)
                .arg("b")
                .arg("x")
                .exec(&mut c)
                .unwrap();
            redis::cmd("HPEXPIRE")
                .arg(&key)
                .arg(900_000_000u64)
                .arg("FIELDS")
                .arg(1)
                .arg("a")
                .exec(&mut c)
                .unwrap();
            redis::cmd("HSETEX")
                .arg(format!("ferry:live:hsetex:{tag}:{i}"))
                .arg("PX")
                .arg(900_000_000u64)
                .arg("FIELDS")
                .arg(2)
                .arg("f")
                .arg(i)
                .arg("g")
                .arg("y")
                .exec(&mut c)
                .unwrap();
        }
        if v.vector_sets() {
            redis::cmd("VADD")
                .arg(format!("ferry:live:vset:{tag}"))
                .arg("VALUES")
                .arg(2)
                .arg(i as f64 / 10.0)
                .arg(1.0)
                .arg(format!("e{i}"))
                .exec(&mut c)
                .unwrap();
        }
    }
    restore_copies(&mut c, &v, tag);
    n
}

/// A `DUMP` of a key of each type the source has (field-expiry hashes and vector sets included where it has
/// them) given back to it with `RESTORE` under another name, with and without an absolute TTL: the source
/// propagates the payload in its own RDB version, which an older target or the other family refuses as it is.
fn restore_copies(c: &mut redis::Connection, v: &Version, tag: &str) {
    let mut originals: Vec<String> = Vec::new();
    let mut made = |key: String, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&key);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.exec(c).unwrap();
        originals.push(key);
    };
    let base = format!("ferry:live:dumped:{tag}");
    made(format!("{base}:string"), &["SET", "some text"]);
    made(format!("{base}:int"), &["SET", "12345"]);
    made(format!("{base}:list"), &["RPUSH", "a", "b", "3"]);
    made(format!("{base}:set"), &["SADD", "a", "b", "c"]);
    made(format!("{base}:intset"), &["SADD", "1", "2", "3"]);
    made(format!("{base}:zset"), &["ZADD", "1", "a", "2.5", "b"]);
    made(format!("{base}:hash"), &["HSET", "f", "v", "g", "w"]);
    made(format!("{base}:stream"), &["XADD", "*", "f", "v"]);
    if v.field_expiry() {
        originals.push(format!("ferry:live:fieldttl:{tag}:0"));
    }
    if v.vector_sets() {
        originals.push(format!("ferry:live:vset:{tag}"));
    }
    let far = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 900_000_000)
        .to_string();
    for key in originals {
        let Some(payload) = redis::cmd("DUMP")
            .arg(&key)
            .query::<Option<Vec<u8>>>(c)
            .unwrap()
        else {
            continue;
        };
        redis::cmd("RESTORE")
            .arg(format!("{key}:restored"))
            .arg(0)
            .arg(&payload)
            .arg("REPLACE")
            .exec(c)
            .unwrap();
        redis::cmd("RESTORE")
            .arg(format!("{key}:restored-ttl"))
            .arg(&far)
            .arg(&payload)
            .arg("ABSTTL")
            .exec(c)
            .unwrap();
    }
}

/// Keys of the source whose hashes hold field expiries, and keys of module types, by database (0 to 2).
/// Keys by `(db, key)`.
type Keys = BTreeSet<(i64, Vec<u8>)>;

fn keys_needing_policy(source: &Server) -> (Keys, Keys) {
    let mut ttl = BTreeSet::new();
    let mut modules = BTreeSet::new();
    let mut c = source.client();
    for db in 0..3i64 {
        redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        for k in keys {
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
            match t.as_str() {
                "hash" if source.version().field_expiry() => {
                    let fields: Vec<Vec<u8>> = redis::cmd("HKEYS").arg(&k).query(&mut c).unwrap();
                    let times: Vec<i64> = redis::cmd("HPEXPIRETIME")
                        .arg(&k)
                        .arg("FIELDS")
                        .arg(fields.len())
                        .arg(&fields)
                        .query(&mut c)
                        .unwrap();
                    if times.iter().any(|&t| t >= 0) {
                        ttl.insert((db, k));
                    }
                }
                "string" | "list" | "set" | "zset" | "hash" | "stream" | "none" => {}
                _ => {
                    modules.insert((db, k));
                }
            }
        }
    }
    (ttl, modules)
}

fn listed(keys: &[ferry_replicator::PolicyKey]) -> Keys {
    keys.iter().map(|k| (k.db, k.key.to_vec())).collect()
}

/// Starts the job of a matrix cell.
fn start_job(source: &Server, target: &Server, policy: TargetPolicy) -> Job {
    Job::start(source, target, |c| {
        c.target_policy = policy;
        c.max_restore_bytes = BIG_VALUE_BYTES;
    })
}

/// Waits until the job reached the live phase or stopped.
fn wait_live_or_stopped(job: &Job) {
    ferry_testkit::wait_until(DEADLINE, "the job to reach the live stream or stop", || {
        let phase = job.status.snapshot().phase;
        phase == Phase::Incremental || phase == Phase::Stopped
    })
    .unwrap_or_else(|e| panic!("{e}; status: {}", job.status.snapshot()));
}

/// One cell of the matrix: fill, run the job under `policy` with live writes during and after the full copy,
/// stop it and start it again in the middle of the live writes, then check the result against the keys its
/// status lists.
fn pair(from: Version, to: Version, policy: TargetPolicy) {
    let source = Server::start(ServerOptions::new(from)).unwrap();
    let target = Server::start(ServerOptions::new(to)).unwrap();
    fill(
        &Target::from(&source),
        &FillOptions::seed(21).big_values(200 * 1024),
    )
    .unwrap();
    let cell = format!("{from} -> {to} under {policy:?}");
    let job = start_job(&source, &target, policy);
    // Live writes while the full copy runs, and after it.
    let mut rounds = live_writes(&source, 200, "m");
    wait_live_or_stopped(&job);
    if job.status.snapshot().phase == Phase::Stopped {
        // Only a target that cannot hold a key under the policy `stop` ends the job, naming the key.
        let err = job.stop().expect_err(&cell).to_string();
        let (ttl_keys, module_keys) = keys_needing_policy(&source);
        let needs_policy = (!to.field_expiry() && !ttl_keys.is_empty())
            || (!to.vector_sets() && !module_keys.is_empty());
        assert!(
            needs_policy && policy == TargetPolicy::Stop,
            "{cell}: {err}"
        );
        assert!(
            err.contains("cannot be held by the target") || err.contains("does not know"),
            "{cell}: {err}"
        );
        assert!(
            err.contains("\"ferry:"),
            "{cell}: the error names the key: {err}"
        );
        return;
    }
    job.wait_caught_up(&source);
    let mut statuses: Vec<Status> = vec![job.status.snapshot()];
    job.stop().unwrap_or_else(|e| panic!("{cell}: {e}"));
    // Written while no job runs: the next one continues from its checkpoint.
    rounds += live_writes(&source, 100, "between");
    let job = start_job(&source, &target, policy);
    rounds += live_writes(&source, 100, "after");
    for (tag, n) in [("m", 200), ("between", 100), ("after", 100)] {
        expire_short_keys(&source, n, tag);
    }
    let (ttl_keys, module_keys) = keys_needing_policy(&source);
    // The fill and the live writes made what each source has: the cells below are not vacuous.
    assert_eq!(!ttl_keys.is_empty(), from.field_expiry(), "{from}");
    assert_eq!(!module_keys.is_empty(), from.vector_sets(), "{from}");
    let needs_policy = (!to.field_expiry() && !ttl_keys.is_empty())
        || (!to.vector_sets() && !module_keys.is_empty());
    assert!(
        !(needs_policy && policy == TargetPolicy::Stop),
        "{cell}: the job did not stop"
    );
    job.wait_caught_up(&source);
    let last = job.status.snapshot();
    assert_eq!(
        last.full_syncs, 0,
        "{cell}: the restarted job continued: {last}"
    );
    statuses.push(last);
    job.stop().unwrap_or_else(|e| panic!("{cell}: {e}"));
    let mut skipped = Keys::new();
    let mut converted = Keys::new();
    for s in &statuses {
        assert_eq!(
            s.policy_keys_skipped as usize,
            s.policy_skipped.len(),
            "{cell}"
        );
        assert_eq!(
            s.policy_keys_converted as usize,
            s.policy_converted.len(),
            "{cell}"
        );
        skipped.extend(listed(&s.policy_skipped));
        converted.extend(listed(&s.policy_converted));
        for k in &s.policy_converted {
            assert!(
                matches!(k.loss, Loss::FieldExpiries { .. }),
                "{cell}: {k:?}"
            );
        }
    }
    // The status names exactly what the target cannot hold.
    let mut expected_skipped = BTreeSet::new();
    let mut expected_converted = BTreeSet::new();
    if !to.vector_sets() {
        expected_skipped.extend(module_keys.iter().cloned());
    }
    if !to.field_expiry() {
        match policy {
            TargetPolicy::Skip => expected_skipped.extend(ttl_keys.iter().cloned()),
            _ => expected_converted.extend(ttl_keys.iter().cloned()),
        }
    }
    assert_eq!(skipped, expected_skipped, "{cell}: skipped keys");
    assert_eq!(converted, expected_converted, "{cell}: converted keys");
    // Equal by value, minus exactly the skipped keys (absent on the target); converted keys hold the same
    // fields (the target has no field expiry to compare).
    let functions = from.is_7() && to.is_7();
    let mut opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .functions(functions)
        .max_differences(100_000);
    if !from.is_7() {
        // 6.2 sends `SET .. EX` and `EXPIRE` relative; the job makes them absolute at receipt, later than the
        // source did by the link's delay.
        opts = opts.expiry_tolerance(std::time::Duration::from_secs(60));
    }
    let report_cmp = compare(&Target::from(&source), &Target::from(&target), &opts).unwrap();
    let mut differing = BTreeSet::new();
    for d in &report_cmp.differences {
        assert_eq!(d.kind, DifferenceKind::OnlyInA, "{cell}: {report_cmp}");
        differing.insert((i64::from(d.db.unwrap()), d.key.clone().unwrap()));
    }
    assert_eq!(
        report_cmp.total_differences as usize,
        differing.len(),
        "{cell}"
    );
    assert_eq!(differing, expected_skipped, "{cell}: {report_cmp}");
    assert_eq!(
        counter(&target, "m") + counter(&target, "between") + counter(&target, "after"),
        rounds,
        "{cell}: INCR counters"
    );
    let s = statuses.last().unwrap();
    eprintln!(
        "{cell}: {} keys compared, {} skipped, {} converted, {} live commands skipped, {} converted",
        report_cmp.keys_compared,
        skipped.len(),
        converted.len(),
        s.policy_commands_skipped,
        s.policy_commands_converted
    );
}

fn all_policies(from: Version, to: Version) {
    for policy in [
        TargetPolicy::Stop,
        TargetPolicy::Skip,
        TargetPolicy::Convert,
    ] {
        pair(from, to, policy);
    }
}

#[test]
fn redis_8_2_to_redis_8_2_is_exact_under_every_policy() {
    all_policies(Version::V8_2, Version::V8_2);
}

#[test]
fn redis_8_2_to_valkey_9_1_keeps_field_expiries_and_leaves_out_only_vector_sets() {
    all_policies(Version::V8_2, Version::V9_1);
}

#[test]
fn valkey_9_1_to_valkey_9_1_is_exact_under_every_policy() {
    all_policies(Version::V9_1, Version::V9_1);
}

#[test]
fn valkey_9_1_to_redis_8_2_is_exact_under_every_policy() {
    all_policies(Version::V9_1, Version::V8_2);
}

#[test]
fn valkey_9_1_to_redis_7_0_follows_the_policy_for_field_expiries() {
    all_policies(Version::V9_1, Version::V7_0);
}

#[test]
fn valkey_9_1_to_redis_6_2_follows_the_policy_for_field_expiries() {
    all_policies(Version::V9_1, Version::V6_2);
}

#[test]
fn redis_7_0_to_valkey_9_1_is_exact_under_every_policy() {
    all_policies(Version::V7_0, Version::V9_1);
}

#[test]
fn redis_8_2_to_redis_7_0_follows_the_policy_for_field_expiries_and_vector_sets() {
    all_policies(Version::V8_2, Version::V7_0);
}

#[test]
fn redis_8_2_to_redis_6_2_follows_the_policy_for_field_expiries_and_vector_sets() {
    all_policies(Version::V8_2, Version::V6_2);
}

#[test]
fn redis_7_0_to_redis_8_2_is_exact_under_every_policy() {
    all_policies(Version::V7_0, Version::V8_2);
}

#[test]
fn redis_6_2_to_redis_8_2_and_valkey_9_1_is_exact_under_every_policy() {
    all_policies(Version::V6_2, Version::V8_2);
    all_policies(Version::V6_2, Version::V9_1);
}

/// The job as a process (the `sync` example) across a pair under a policy: SIGKILLed in the middle of live
/// writes and started again, it continues from its checkpoint (no second full copy) and the target ends equal
/// to the source by value, minus exactly the keys the policy leaves out, with exact counters.
fn job_killed_and_restarted_ends_equal(from: Version, to: Version, policy: &str) {
    use common::{ProcJob, CHECKPOINT_DB};
    let cell = format!("{from} -> {to} under {policy}, SIGKILL");
    let source = Server::start(ServerOptions::new(from)).unwrap();
    let target = Server::start(ServerOptions::new(to)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(31)).unwrap();
    let db = CHECKPOINT_DB.to_string();
    let args = ["--checkpoint-db", &db, "--target-policy", policy];
    let job = ProcJob::start_with(&source, &target, &args);
    let first = live_writes(&source, 150, "j");
    job.wait_caught_up(&source);
    let before_kill = live_writes(&source, 50, "k");
    job.kill();
    let second = live_writes(&source, 100, "j2");
    let job = ProcJob::start_with(&source, &target, &args);
    let third = live_writes(&source, 100, "j3");
    for (tag, n) in [("j", 150), ("k", 50), ("j2", 100), ("j3", 100)] {
        expire_short_keys(&source, n, tag);
    }
    job.wait_caught_up(&source);
    assert_eq!(job.full_syncs(), 0, "{cell}: {}", job.status_line());
    let (ttl_keys, module_keys) = keys_needing_policy(&source);
    let mut expected_skipped = BTreeSet::new();
    if !to.vector_sets() {
        expected_skipped.extend(module_keys.iter().cloned());
    }
    if !to.field_expiry() && policy == "skip" {
        expected_skipped.extend(ttl_keys.iter().cloned());
    }
    let functions = from.is_7() && to.is_7();
    let opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .functions(functions)
        .max_differences(100_000);
    let report = compare(&Target::from(&source), &Target::from(&target), &opts).unwrap();
    let differing: BTreeSet<(i64, Vec<u8>)> = report
        .differences
        .iter()
        .map(|d| {
            assert_eq!(d.kind, DifferenceKind::OnlyInA, "{cell}: {report}");
            (i64::from(d.db.unwrap()), d.key.clone().unwrap())
        })
        .collect();
    assert_eq!(report.total_differences as usize, differing.len(), "{cell}");
    assert_eq!(differing, expected_skipped, "{cell}: {report}");
    let counted: u64 = ["j", "k", "j2", "j3"]
        .iter()
        .map(|t| counter(&target, t))
        .sum();
    assert_eq!(counted, first + before_kill + second + third, "{cell}");
}

#[test]
fn job_8_2_to_8_2_killed_and_restarted_ends_equal() {
    job_killed_and_restarted_ends_equal(Version::V8_2, Version::V8_2, "stop");
}

#[test]
fn job_7_0_to_9_1_killed_and_restarted_ends_equal() {
    job_killed_and_restarted_ends_equal(Version::V7_0, Version::V9_1, "stop");
}

#[test]
fn job_9_1_to_9_1_with_field_expiries_killed_and_restarted_ends_equal() {
    job_killed_and_restarted_ends_equal(Version::V9_1, Version::V9_1, "stop");
}

#[test]
fn job_9_1_to_8_2_with_field_expiries_killed_and_restarted_ends_equal() {
    job_killed_and_restarted_ends_equal(Version::V9_1, Version::V8_2, "stop");
}

#[test]
fn job_8_2_to_9_1_killed_and_restarted_leaves_out_only_vector_sets() {
    job_killed_and_restarted_ends_equal(Version::V8_2, Version::V9_1, "skip");
}

#[test]
fn job_8_2_to_7_0_killed_and_restarted_converts_field_expiries() {
    job_killed_and_restarted_ends_equal(Version::V8_2, Version::V7_0, "convert");
}

#[test]
fn job_9_1_to_7_0_killed_and_restarted_skips_field_expiry_hashes() {
    job_killed_and_restarted_ends_equal(Version::V9_1, Version::V7_0, "skip");
}

/// Field expiries written live (after the job reached the stream): `HSET` + `HPEXPIRE` and `HSETEX`.
fn live_field_expiries(server: &Server, n: u64, tag: &str) {
    let mut c = server.client();
    for i in 0..n {
        let key = format!("ferry:fe:{tag}:{i}");
        redis::cmd("HSET")
            .arg(&key)
            .arg("a")
            .arg(i)
            .arg("b")
            .arg(1)
            .exec(&mut c)
            .unwrap();
        redis::cmd("HPEXPIRE")
            .arg(&key)
            .arg(900_000_000u64)
            .arg("FIELDS")
            .arg(1)
            .arg("a")
            .exec(&mut c)
            .unwrap();
    }
}

#[test]
fn valkey_9_1_sentinel_failover_continues_with_psync2_without_a_second_full_copy() {
    use common::Job;
    use ferry_testkit::{SentinelGroup, SentinelOptions};
    let group = SentinelGroup::start(SentinelOptions::new(Version::V9_1)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let first = workload(&group.master, 150, "s");
    let job = Job::start(&group.master, &target, |_| {});
    job.wait_incremental();
    live_field_expiries(&group.master, 20, "before");
    let second = workload(&group.master, 100, "s");
    job.wait_caught_up(&group.master);
    // The application stops writing, the job stops with its checkpoint, the replicas hold everything.
    job.stop().unwrap();
    group.wait_all_replicating(DEADLINE).unwrap();
    let old = group.master.addr();
    let promoted = group.failover().unwrap();
    assert_ne!(promoted, old);
    let new_master = group.server_by_addr(&promoted).unwrap();
    let job = Job::start(new_master, &target, |_| {});
    let third = workload(new_master, 100, "s");
    live_field_expiries(new_master, 20, "after");
    expire_short_keys(new_master, 350, "s");
    job.wait_caught_up(new_master);
    let status = job.status.snapshot();
    assert_eq!(
        status.full_syncs, 0,
        "the job continued on the promoted replica with PSYNC2: {status}"
    );
    common::assert_same_data(new_master, &target, true);
    assert_eq!(counter(&target, "s"), first + second + third);
    job.stop().unwrap();
}

#[test]
fn valkey_9_1_source_into_a_3_plus_3_valkey_9_1_cluster_ends_equal() {
    use common::{config, Job};
    use ferry_replicator::checkpoint;
    use ferry_testkit::Cluster;
    let source = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let cluster = Cluster::start(Version::V9_1).unwrap();
    assert_eq!((cluster.masters().len(), cluster.replicas().len()), (3, 3));
    let first = workload(&source, 150, "c");
    let mut cfg = config(&source, cluster.masters()[0]);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    // The workload also writes in database 1, which a cluster does not have.
    cfg.filter.block_dbs = vec![1];
    let job = Job::start_with(cfg);
    job.wait_incremental();
    live_field_expiries(&source, 30, "c");
    let second = workload(&source, 150, "c");
    expire_short_keys(&source, 300, "c");
    job.wait_caught_up(&source);
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&cluster), &opts).unwrap();
    assert!(report.is_equal(), "datasets differ:\n{report}");
    let mut c = cluster.cluster_client().unwrap();
    let n: u64 = redis::cmd("GET")
        .arg("ferry:counter:c")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, first + second);
    job.stop().unwrap();
}

/// A source that answers the handshake like Valkey 9, then closes the link after `+FULLRESYNC` without an
/// RDB (what a Valkey 9 source does when it cannot write a key in the RDB version its replica asked for):
/// the error says so instead of a bare "connection closed".
#[test]
fn a_source_closing_the_link_after_fullresync_without_an_rdb_is_named() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        let mut commands = Vec::new();
        loop {
            // One RESP array of bulk strings per command.
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let n: usize = line.trim_start_matches('*').trim().parse().unwrap();
            let mut argv = Vec::new();
            for _ in 0..n {
                let mut len = String::new();
                reader.read_line(&mut len).unwrap();
                let mut arg = String::new();
                reader.read_line(&mut arg).unwrap();
                argv.push(arg.trim_end().to_string());
            }
            let name = argv[0].to_ascii_uppercase();
            commands.push(argv.join(" "));
            match name.as_str() {
                "PING" => out.write_all(b"+PONG\r\n").unwrap(),
                "INFO" => {
                    let text = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n";
                    out.write_all(format!("${}\r\n{text}\r\n", text.len()).as_bytes())
                        .unwrap()
                }
                "REPLCONF" => out.write_all(b"+OK\r\n").unwrap(),
                "PSYNC" => {
                    out.write_all(b"+FULLRESYNC 8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb 0\r\n")
                        .unwrap();
                    break;
                }
                _ => out.write_all(b"-ERR unexpected\r\n").unwrap(),
            }
        }
        commands
    });
    let opts =
        SourceOptions::new(ConnectOptions::from_url(&format!("redis://127.0.0.1:{port}")).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(Source::open(&opts, None)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("valkey 9.1.2 closed the link after +FULLRESYNC without sending an RDB"),
        "{text}"
    );
    let commands = seen.join().unwrap();
    assert!(
        commands.iter().any(|c| c == "REPLCONF version 9.1.0"),
        "the handshake told Valkey what ferry reads: {commands:?}"
    );
}

/// Sends one command on `c`, returning its reply as a redis value.
fn run(c: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The keys a job's status lists as skipped.
fn skipped_keys(job: &Job) -> Keys {
    listed(&job.status.snapshot().policy_skipped)
}

/// Ends a cell of the options test: caught up, the target equal to the source but for exactly `skipped`
/// (absent on the target), and the status listing exactly those.
fn equal_but_for(job: Job, source: &Server, target: &Server, skipped: &[&str], cell: &str) {
    job.wait_caught_up(source);
    let expected: Keys = skipped.iter().map(|k| (0, k.as_bytes().to_vec())).collect();
    assert_eq!(
        skipped_keys(&job),
        expected,
        "{cell}: the status lists the skipped keys"
    );
    job.stop().unwrap_or_else(|e| panic!("{cell}: {e}"));
    let opts = CompareOptions::default().dbs(vec![0]).max_differences(1000);
    let report = compare(&Target::from(source), &Target::from(target), &opts).unwrap();
    let mut differing = Keys::new();
    for d in &report.differences {
        assert_eq!(d.kind, DifferenceKind::OnlyInA, "{cell}: {report}");
        differing.insert((0, d.key.clone().unwrap()));
    }
    assert_eq!(differing, expected, "{cell}: {report}");
}

/// Redis 8.2 and Valkey 9 each propagate options the other (and older servers) refuse as a syntax error:
/// Redis 8.2's stream reference policies and `BITOP` operations, Valkey's `SET ... IFEQ`. The job sends the
/// same write without an option that changes nothing on a replica, the same result by other commands where
/// there is one (`BITOP DIFF`, Valkey's `MSETEX`), and lets the target policy decide the rest.
#[test]
fn options_new_in_one_server_family_reach_the_other_as_the_same_write_or_follow_the_policy() {
    // Redis 8.2 into Valkey 9.1.
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let mut c = source.client();
    run(&mut c, &["SET", "a", "\u{ff}\u{0f}"]);
    run(&mut c, &["SET", "b", "\u{f0}"]);
    let job = start_job(&source, &target, TargetPolicy::Skip);
    job.wait_incremental();
    for i in 0..10 {
        run(
            &mut c,
            &[
                "XADD",
                "st",
                "KEEPREF",
                "MAXLEN",
                "5",
                "*",
                "f",
                &i.to_string(),
            ],
        );
    }
    run(&mut c, &["XADD", "st", "DELREF", "*", "f", "delref"]);
    run(&mut c, &["XGROUP", "CREATE", "st", "g", "0"]);
    run(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "2",
            "STREAMS",
            "st",
            ">",
        ],
    );
    run(&mut c, &["XTRIM", "st", "MAXLEN", "4", "KEEPREF"]);
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("st")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    run(
        &mut c,
        &["XDELEX", "st", "IDS", "1", &last.last().unwrap().0],
    );
    run(&mut c, &["BITOP", "DIFF", "d", "a", "b"]);
    run(
        &mut c,
        &["XADD", "acked", "ACKED", "MAXLEN", "1", "*", "f", "1"],
    );
    run(&mut c, &["XADD", "acked", "*", "f", "2"]);
    run(&mut c, &["SET", "after", "1"]);
    // The `BITOP DIFF` went as the operations Valkey knows: only the trim that needs `ACKED` is left out.
    equal_but_for(job, &source, &target, &["acked"], "8.2 -> 9.1 under skip");
    // Under `stop` that trim stops the job, naming the option and the key.
    let target = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let job = start_job(&source, &target, TargetPolicy::Stop);
    job.wait_incremental();
    run(
        &mut c,
        &["XADD", "acked", "ACKED", "MAXLEN", "1", "*", "f", "3"],
    );
    ferry_testkit::wait_until(DEADLINE, "the job to stop", || {
        job.status.snapshot().phase == Phase::Stopped
    })
    .unwrap();
    let err = job.stop().unwrap_err().to_string();
    assert!(
        err.contains("does not know `xadd acked`") && err.contains("\"acked\""),
        "{err}"
    );

    // Valkey 9.1 into Redis 8.2.
    let source = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let mut c = source.client();
    run(&mut c, &["SET", "k", "v"]);
    let job = start_job(&source, &target, TargetPolicy::Convert);
    job.wait_incremental();
    run(&mut c, &["SET", "k", "v2", "IFEQ", "v", "KEEPTTL"]);
    run(&mut c, &["SET", "k", "never", "IFEQ", "other"]);
    run(&mut c, &["SET", "gone", "x"]);
    run(&mut c, &["DELIFEQ", "gone", "x"]);
    run(
        &mut c,
        &["MSETEX", "2", "m1", "1", "m2", "2", "PX", "900000000"],
    );
    run(&mut c, &["SET", "after", "1"]);
    // `MSETEX` went as one `SET` per key with its absolute expiry: nothing is left out.
    equal_but_for(job, &source, &target, &[], "9.1 -> 8.2 under convert");
    let mut t = target.client();
    let k: String = redis::cmd("GET").arg("k").query(&mut t).unwrap();
    assert_eq!(k, "v2");
    for key in ["m1", "m2"] {
        let at: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut t).unwrap();
        let want: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut c).unwrap();
        assert_eq!(at, want, "{key}: the source's expiry, to the millisecond");
    }
}

/// Redis 7.0 propagates an expiry set under a condition (`EXPIRE k 100 NX`) as `PEXPIREAT k <ms> NX`, which a
/// 6.2 target refuses: it gets the same expiry without the condition.
#[test]
fn expiries_set_under_a_condition_reach_a_6_2_target() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let job = start_job(&source, &target, TargetPolicy::Stop);
    job.wait_incremental();
    let mut c = source.client();
    for i in 0..20 {
        let k = format!("k{i}");
        run(&mut c, &["SET", &k, "v"]);
        run(&mut c, &["EXPIRE", &k, "1000", "NX"]);
        run(&mut c, &["EXPIRE", &k, "2000", "GT"]);
        run(&mut c, &["PEXPIRE", &k, "1500000", "LT"]);
        run(&mut c, &["EXPIRE", &k, "10", "XX"]);
        run(&mut c, &["EXPIRE", &k, "5000", "NX"]); // refused by the source: not propagated
    }
    run(&mut c, &["SET", "after", "1"]);
    equal_but_for(job, &source, &target, &[], "7.0 -> 6.2");
}

/// The `BITOP` operations of Redis 8.2 (`DIFF`, `DIFF1`, `ANDOR`, `ONE`) reach a target without them (Valkey
/// 9.1, standalone and a 3+3 cluster; Redis 7.0) as `BITOP OR`/`AND`/`XOR` through scratch keys, under the
/// policy `stop`: the job never stops, every destination ends equal to the source's, byte for byte, and no
/// scratch key stays. The inputs are random: missing keys, empty strings, unequal lengths, the destination
/// among its inputs, expiries on the destination (which `BITOP` drops).
#[test]
fn redis_8_2_bitop_operations_reach_older_targets_as_the_same_bytes() {
    use ferry_testkit::Cluster;
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let valkey = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let redis70 = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let cluster = Cluster::start(Version::V9_1).unwrap();
    let jobs = [
        start_job(&source, &valkey, TargetPolicy::Stop),
        start_job(&source, &redis70, TargetPolicy::Stop),
        stop_job_into_cluster(&source, &cluster),
    ];
    for job in &jobs {
        job.wait_incremental();
    }
    let mut c = source.client();
    // Keys of one slot, as a cluster source would need: the target cluster holds them on one master.
    let keys: Vec<String> = (0..5).map(|i| format!("{{bits}}:{i}")).collect();
    let mut next = random_below(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        for k in &keys {
            match next(6) {
                0 => run(&mut c, &["DEL", k]),
                1 => run(&mut c, &["SET", k, ""]),
                _ => {
                    let len = next(7) as usize;
                    let value: Vec<u8> = (0..len).map(|_| next(256) as u8).collect();
                    redis::cmd("SET").arg(k).arg(value).query(&mut c).unwrap()
                }
            };
        }
        let op = ["DIFF", "DIFF1", "ANDOR", "ONE"][next(4) as usize];
        let least = if op == "ONE" { 1 } else { 2 };
        let n = least + next(4 - least as u64 + 1) as usize;
        let srcs: Vec<&str> = (0..n)
            .map(|_| keys[next(keys.len() as u64) as usize].as_str())
            .collect();
        let dest = if next(2) == 0 {
            "{bits}:dest"
        } else {
            srcs[next(n as u64) as usize]
        };
        if round % 7 == 0 {
            run(&mut c, &["SET", dest, "old", "PX", "900000"]);
        }
        let mut bitop = vec!["BITOP", op, dest];
        bitop.extend(&srcs);
        run(&mut c, &bitop);
    }
    run(&mut c, &["SET", "after", "1"]);
    let targets = [
        (Target::from(&valkey), "Valkey 9.1"),
        (Target::from(&redis70), "Redis 7.0"),
        (Target::from(&cluster), "a 3+3 Valkey 9.1 cluster"),
    ];
    end_equal_with_nothing_left_out(jobs, &source, &Target::from(&source), targets);
    // No scratch key stays (the comparison leaves ferry's own keys aside).
    for server in [&valkey, &redis70] {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("ferry:bitop:*")
            .query(&mut server.client())
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
    for node in cluster.masters() {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("ferry:bitop:*")
            .query(&mut node.client())
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Redis 8.2's `XACKDEL` and `XDELEX` under each reference policy (`KEEPREF`, `DELREF`, `ACKED`), and its trims
/// under `DELREF` (`XADD ... DELREF MAXLEN ~ n`, `XTRIM ... DELREF`), reach a target without them (Valkey 9.1 with and without checkpoints, Redis 7.0, a 3+3 Valkey 9.1 cluster) as a script that
/// writes the same, under the policy `stop`: consumer groups read, acknowledge and claim at random, and the
/// streams end equal (entries, groups, pending lists, deleted-entry marks), with nothing left out.
///
/// Equal to a native replica of the source, not to the source itself: Redis 8.2 does not propagate an
/// `XDELEX ... DELREF` none of whose entries is in the stream any more, yet it drops those entries' dangling
/// pending references on the master (seen with `redis-cli --replica` while writing this), so the master keeps a
/// state that none of its replicas gets, ferry's targets included.
#[test]
fn redis_8_2_stream_reference_commands_reach_older_targets_as_the_same_writes() {
    use ferry_testkit::{Cluster, ReplicaSet};
    let native = ReplicaSet::start(Version::V8_2, 1).unwrap();
    let (source, replica) = (&native.master, &native.replicas[0]);
    let valkey = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let unchained = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let redis70 = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let cluster = Cluster::start(Version::V9_1).unwrap();
    let jobs = [
        start_job(source, &valkey, TargetPolicy::Stop),
        Job::start(source, &unchained, |c| {
            c.target_policy = TargetPolicy::Stop;
            c.sink.checkpoint = false;
        }),
        start_job(source, &redis70, TargetPolicy::Stop),
        stop_job_into_cluster(source, &cluster),
    ];
    for job in &jobs {
        job.wait_incremental();
    }
    let mut c = source.client();
    let mut next = random_below(0x2545_f491_4f6c_dd1d);
    let streams = ["{st}:a", "{st}:b"];
    let groups = ["g1", "g2", "g3"];
    for s in streams {
        for i in 1..=30 {
            run(&mut c, &["XADD", s, &format!("{i}-{}", next(3)), "f", "v"]);
        }
        for g in groups {
            run(
                &mut c,
                &["XGROUP", "CREATE", s, g, &format!("{}", next(10))],
            );
        }
    }
    for round in 0..600u64 {
        let s = streams[next(2) as usize];
        let g = groups[next(3) as usize];
        // Some IDs as they were added, some without a sequence, some that were never there.
        let id = |r: u64| match r % 3 {
            0 => format!("{}-0", 1 + r % 40),
            1 => format!("{}", 1 + r % 40),
            _ => format!("{}-{}", 1 + r % 40, r % 3),
        };
        let ids: Vec<String> = (0..1 + next(3)).map(|_| id(next(1000))).collect();
        let policy = ["", "KEEPREF", "DELREF", "ACKED"][next(4) as usize];
        let count = ids.len().to_string();
        match next(8) {
            0 => {
                run(
                    &mut c,
                    &[
                        "XREADGROUP",
                        "GROUP",
                        g,
                        "c",
                        "COUNT",
                        "3",
                        "STREAMS",
                        s,
                        ">",
                    ],
                );
            }
            1 => {
                let mut cmd = vec!["XACK", s, g];
                cmd.extend(ids.iter().map(String::as_str));
                run(&mut c, &cmd);
            }
            2 => {
                run(&mut c, &["XADD", s, "*", "f", &round.to_string()]);
            }
            // Trims under DELREF, exact or approximate (the source propagates the exact trim it did).
            6 => {
                let len = (20 + next(15)).to_string();
                let mut cmd = vec!["XADD", s, "DELREF", "MAXLEN"];
                if next(2) == 0 {
                    cmd.extend(["~", &len, "LIMIT", "3"]);
                } else {
                    cmd.push(&len);
                }
                cmd.extend(["*", "f", "trim"]);
                run(&mut c, &cmd);
            }
            7 => {
                let min = id(next(1000));
                run(&mut c, &["XTRIM", s, "MINID", &min, "DELREF"]);
            }
            // XDELEX key [policy] IDS n id... and XACKDEL key group [policy] IDS n id...
            kind => {
                let mut cmd = if kind == 3 {
                    vec!["XDELEX", s]
                } else {
                    vec!["XACKDEL", s, g]
                };
                cmd.extend(
                    [policy, "IDS", &count]
                        .into_iter()
                        .filter(|a| !a.is_empty()),
                );
                cmd.extend(ids.iter().map(String::as_str));
                run(&mut c, &cmd);
            }
        }
    }
    run(&mut c, &["SET", "after", "1"]);
    native.wait_synced(DEADLINE).unwrap();
    let targets = [
        (Target::from(&valkey), "Valkey 9.1"),
        (Target::from(&unchained), "Valkey 9.1 without checkpoints"),
        (Target::from(&redis70), "Redis 7.0"),
        (Target::from(&cluster), "a 3+3 Valkey 9.1 cluster"),
    ];
    end_equal_with_nothing_left_out(jobs, source, &Target::from(replica), targets);
    // The comparison reads entries, groups, consumers and pending lists; the marks a deletion moves are read
    // here: the stream's deleted-entry mark, entries added and first entry, each group's entries read.
    let marks = |conn: &mut redis::Connection, s: &str| -> Vec<String> {
        let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(s)
            .query(conn)
            .unwrap();
        let mut out: Vec<String> = [
            "max-deleted-entry-id",
            "entries-added",
            "recorded-first-entry-id",
        ]
        .iter()
        .map(|f| format!("{f} {:?}", info.get(*f)))
        .collect();
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(s)
            .query(conn)
            .unwrap();
        for g in groups {
            out.push(format!(
                "{:?} entries-read {:?}",
                g.get("name"),
                g.get("entries-read")
            ));
        }
        out
    };
    for s in streams {
        let want = marks(&mut replica.client(), s);
        for (server, name) in [
            (&valkey, "Valkey 9.1"),
            (&unchained, "Valkey 9.1 without checkpoints"),
            (&redis70, "Redis 7.0"),
        ] {
            assert_eq!(marks(&mut server.client(), s), want, "{s} on {name}");
        }
    }
}

/// A job from `source` into the 3+3 `cluster` under the policy `stop` (checkpoints in database 0).
fn stop_job_into_cluster(source: &Server, cluster: &ferry_testkit::Cluster) -> Job {
    let mut cfg = common::config(source, cluster.masters()[0]);
    cfg.target_cluster = true;
    cfg.sink.checkpoint_db = 0;
    cfg.target_policy = TargetPolicy::Stop;
    Job::start_with(cfg)
}

/// Numbers below the given bound, the same sequence for the same seed (xorshift).
fn random_below(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// Ends each job once caught up with `source`, with nothing left out by the target policy, and compares its
/// target (named for the message) with `reference` in database 0, ferry's checkpoints aside.
fn end_equal_with_nothing_left_out<const N: usize>(
    jobs: [Job; N],
    source: &Server,
    reference: &Target,
    targets: [(Target, &str); N],
) {
    let opts = CompareOptions::default()
        .dbs(vec![0])
        .ignore_prefix(ferry_replicator::checkpoint::KEY_PREFIX);
    for (job, (target, name)) in jobs.into_iter().zip(targets) {
        job.wait_caught_up(source);
        assert!(
            job.status.snapshot().policy_skipped.is_empty(),
            "{name}: nothing is left out"
        );
        job.stop().unwrap();
        let report = compare(reference, &target, &opts).unwrap();
        assert!(report.is_equal(), "{name}: datasets differ:\n{report}");
    }
}

/// Since 7.0 an `XCLAIM` or `XAUTOCLAIM` that meets a pending entry the stream no longer has (trimmed or deleted)
/// drops it from the group's pending list and propagates an `XCLAIM ... FORCE JUSTID` of it, which a 6.2 server
/// takes as a claim: it kept the entry pending, so a 6.2 target's `XPENDING` grew with every trimmed entry a
/// group had read. With consumer groups reading, claiming and acknowledging while the streams are trimmed and
/// entries deleted, both 6.2 targets (with checkpoints, the claim runs inside the batch script; without, as an
/// `EVAL`) end equal to the source, pending lists and last delivered IDs included.
#[test]
fn a_7_0_source_s_claims_of_deleted_entries_leave_a_6_2_target_s_pending_lists_as_on_the_source() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let chained = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let unchained = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let jobs = [
        start_job(&source, &chained, TargetPolicy::Stop),
        Job::start(&source, &unchained, |c| {
            c.target_policy = TargetPolicy::Stop;
            c.sink.checkpoint = false;
        }),
    ];
    for job in &jobs {
        job.wait_incremental();
    }
    let mut c = source.client();
    let mut next = random_below(0x9e37_79b9_7f4a_7c15);
    let streams = ["s1", "s2"];
    let groups = ["g1", "g2"];
    for s in streams {
        run(&mut c, &["XADD", s, "*", "f", "v"]);
        for g in groups {
            run(&mut c, &["XGROUP", "CREATE", s, g, "0"]);
        }
    }
    let mut trimmed_pending = 0;
    for round in 0..500u64 {
        let s = streams[next(2) as usize];
        let g = groups[next(2) as usize];
        let consumer = ["c1", "c2", "c3"][next(3) as usize];
        match next(7) {
            0 | 1 => {
                run(&mut c, &["XADD", s, "*", "f", &round.to_string()]);
            }
            2 => {
                run(
                    &mut c,
                    &[
                        "XREADGROUP",
                        "GROUP",
                        g,
                        consumer,
                        "COUNT",
                        "3",
                        "STREAMS",
                        s,
                        ">",
                    ],
                );
            }
            3 => {
                // Exact trims, so that entries still pending leave the stream.
                let len = (2 + next(6)).to_string();
                run(&mut c, &["XTRIM", s, "MAXLEN", &len]);
            }
            4 => {
                let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(s)
                    .arg(g)
                    .arg("-")
                    .arg("+")
                    .arg(10)
                    .query(&mut c)
                    .unwrap();
                if let Some((id, ..)) = pending.get(next(10) as usize % pending.len().max(1)) {
                    let len: u64 = redis::cmd("XRANGE")
                        .arg(s)
                        .arg(id)
                        .arg(id)
                        .query::<Vec<redis::Value>>(&mut c)
                        .unwrap()
                        .len() as u64;
                    trimmed_pending += u64::from(len == 0);
                    run(&mut c, &["XCLAIM", s, g, consumer, "0", id]);
                }
            }
            5 => {
                run(
                    &mut c,
                    &["XAUTOCLAIM", s, g, consumer, "0", "0-0", "COUNT", "4"],
                );
            }
            _ => {
                let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(s)
                    .arg(g)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .query(&mut c)
                    .unwrap();
                if let Some((id, ..)) = pending.first() {
                    run(&mut c, &["XACK", s, g, id]);
                }
            }
        }
    }
    assert!(
        trimmed_pending > 0,
        "the workload claimed entries the stream no longer had"
    );
    run(&mut c, &["SET", "after", "1"]);
    let targets = [
        (Target::from(&chained), "Redis 6.2"),
        (Target::from(&unchained), "Redis 6.2 without checkpoints"),
    ];
    // The pending lists as XPENDING gives them (entry, consumer, delivery count) and each group's last delivered
    // ID, on the source and on the targets.
    let pending = |conn: &mut redis::Connection| -> Vec<String> {
        let mut out = Vec::new();
        for s in streams {
            for g in groups {
                let p: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(s)
                    .arg(g)
                    .arg("-")
                    .arg("+")
                    .arg(10_000)
                    .query(conn)
                    .unwrap();
                out.extend(
                    p.into_iter()
                        .map(|(id, who, _, n)| format!("{s} {g} {id} {who} {n}")),
                );
            }
            let info: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(s)
                .query(conn)
                .unwrap();
            for g in info {
                out.push(format!(
                    "{s} {:?} {:?}",
                    g.get("name"),
                    g.get("last-delivered-id")
                ));
            }
        }
        out
    };
    let want = pending(&mut source.client());
    for (job, _) in jobs.iter().zip(&targets) {
        job.wait_caught_up(&source);
    }
    for (server, name) in [
        (&chained, "Redis 6.2"),
        (&unchained, "Redis 6.2 without checkpoints"),
    ] {
        assert_eq!(pending(&mut server.client()), want, "{name}");
    }
    end_equal_with_nothing_left_out(jobs, &source, &Target::from(&source), targets);
}

/// `FUNCTION RESTORE` carries a payload with the RDB version of the server that dumped it (Redis 8.2 writes 12,
/// Valkey 9 writes 80), which a target of another version or family refused as a whole. Restored live on the
/// source, the libraries reach each target and run there.
#[test]
fn function_restore_of_a_newer_server_reaches_older_targets_and_the_other_family() {
    for (from, targets) in [
        (Version::V8_2, [Version::V7_0, Version::V9_1]),
        (Version::V9_1, [Version::V8_2, Version::V7_0]),
    ] {
        let source = Server::start(ServerOptions::new(from)).unwrap();
        let servers: Vec<Server> = targets
            .iter()
            .map(|v| Server::start(ServerOptions::new(*v)).unwrap())
            .collect();
        let jobs: Vec<Job> = servers
            .iter()
            .map(|t| start_job(&source, t, TargetPolicy::Stop))
            .collect();
        for job in &jobs {
            job.wait_incremental();
        }
        let mut c = source.client();
        run(
            &mut c,
            &[
                "FUNCTION",
                "LOAD",
                "#!lua name=restored\nredis.register_function('answer', function() return 42 end)",
            ],
        );
        let payload: Vec<u8> = redis::cmd("FUNCTION").arg("DUMP").query(&mut c).unwrap();
        run(&mut c, &["FUNCTION", "FLUSH"]);
        redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(&payload)
            .arg("REPLACE")
            .exec(&mut c)
            .unwrap();
        run(&mut c, &["SET", "after", "1"]);
        for ((job, server), version) in jobs.iter().zip(&servers).zip(targets) {
            job.wait_caught_up(&source);
            let answer: i64 = redis::cmd("FCALL")
                .arg("answer")
                .arg(0)
                .query(&mut server.client())
                .unwrap_or_else(|e| panic!("{from} -> {version}: {e}"));
            assert_eq!(answer, 42, "{from} -> {version}");
        }
        for job in jobs {
            job.stop().unwrap();
        }
    }
}
