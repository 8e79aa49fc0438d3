//! The version matrix on real servers: Redis 8.2, Valkey 9.1, Redis 7.0 and 6.2, each pair under each target
//! policy, with every type and encoding the source has (`fill`: field expiries on 8.2 and 9.1, a vector set on
//! 8.2, big values read in chunks) and live writes during and after the full copy.
//!
//! The copy here is driven with the replicator's public pieces, the way the job drives them: the PSYNC
//! handshake and stream ([`Source`]), the RDB parser, the target policy ([`fit_entry`], [`fit_value`],
//! [`fit_command`]) and the command builders of `convert`. At the end the target must equal the source by value,
//! minus exactly the keys the [`PolicyReport`] names: skipped keys are absent, converted keys hold the same
//! fields without their expiries, and the report names nothing else.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{counter, expire_short_keys, master_offset, workload, DEADLINE};
use ferry_rdb::{Item, Parser, ParserOptions, ValueMode};
use ferry_replicator::pipeline::convert::{
    adapt_for_target, expire_command, fit_command, fit_entry, fit_value, restore_command,
    value_commands, Loss, PolicyReport, TargetFormat, TargetPolicy,
};
use ferry_replicator::source::{Source, SourceOptions, Start, StreamEvent};
use ferry_resp::ConnectOptions;
use ferry_testkit::{
    compare, fill, CompareOptions, DifferenceKind, FillOptions, Server, ServerOptions, Target,
    Version,
};

/// Values past this many serialized bytes arrive in chunks (the fill's big values do).
const BIG_VALUE_BYTES: usize = 64 * 1024;

/// Copies `source` into `target` until `goal` (a source offset, 0 = not known yet) is applied or `stop` is set.
/// Returns the policy report, or the error that stopped the copy.
struct Mirror {
    goal: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(PolicyReport, u32), ferry_replicator::Error>>>,
    started_live: Arc<AtomicBool>,
}

impl Mirror {
    fn start(source: &Server, target: &Server, policy: TargetPolicy) -> Mirror {
        let goal = Arc::new(AtomicU64::new(0));
        let started_live = Arc::new(AtomicBool::new(false));
        let opts = SourceOptions::new(ConnectOptions::from_url(&source.url()).unwrap());
        let mut con = target.client();
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
        let format = TargetFormat::from_info(&info);
        let (g, live) = (goal.clone(), started_live.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(copy(opts, con, format, policy, g, live))
        });
        Mirror {
            goal,
            thread: Some(thread),
            started_live,
        }
    }

    /// Tells the copy to end once the source's current offset is applied, and waits for it.
    /// The report and the RDB version of the source's full copy.
    fn finish(mut self, source: &Server) -> Result<(PolicyReport, u32), ferry_replicator::Error> {
        self.goal
            .store(master_offset(source).max(1), Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("copy thread")
    }

    fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// Selects `db` on the target connection when it is not the selected one.
fn select(con: &mut redis::Connection, selected: &mut i64, db: i64) {
    if *selected != db {
        redis::cmd("SELECT").arg(db).exec(con).unwrap();
        *selected = db;
    }
}

fn send(con: &mut redis::Connection, argv: &[Bytes]) -> redis::RedisResult<()> {
    let mut c = redis::cmd(std::str::from_utf8(&argv[0]).unwrap_or("X"));
    for a in &argv[1..] {
        c.arg(&a[..]);
    }
    c.exec(con)
}

fn target_error(argv: &[Bytes], e: redis::RedisError) -> ferry_replicator::Error {
    panic!(
        "the target refused {:?}: {e}",
        String::from_utf8_lossy(&argv[0])
    )
}

async fn copy(
    opts: SourceOptions,
    mut con: redis::Connection,
    target: TargetFormat,
    policy: TargetPolicy,
    goal: Arc<AtomicU64>,
    started_live: Arc<AtomicBool>,
) -> Result<(PolicyReport, u32), ferry_replicator::Error> {
    let mut report = PolicyReport::new(100_000);
    let (mut source, start) = Source::open(&opts, None).await?;
    assert!(matches!(start, Start::Full { .. }), "{start:?}");
    let target_rdb = target.rdb_version.min(u32::from(u16::MAX)) as u16;
    let mut parser = Parser::new(ParserOptions {
        mode: ValueMode::Raw,
        big_value_bytes: Some(BIG_VALUE_BYTES),
        ..ParserOptions::default()
    });
    let mut selected = -1i64;
    let mut source_version = 0u32;
    // A big value: (db, key, expiry, dropped, chunks so far).
    let mut big: Option<(i64, Bytes, Option<i64>, bool, u64)> = None;
    while let Some(chunk) = source.read_rdb().await? {
        parser.feed(&chunk);
        while let Some(item) = parser
            .next_item()
            .map_err(|e| ferry_replicator::Error::Rdb(e.to_string()))?
        {
            match item {
                Item::Header { version, .. } => source_version = version,
                Item::Function { code } if target.rdb_version >= 10 => {
                    let argv = [
                        Bytes::from_static(b"FUNCTION"),
                        Bytes::from_static(b"LOAD"),
                        Bytes::from_static(b"REPLACE"),
                        code,
                    ];
                    send(&mut con, &argv).map_err(|e| target_error(&argv, e))?;
                }
                Item::Entry(e) => {
                    let db = e.db as i64;
                    let raw = e.raw.expect("raw mode");
                    let Some(payload) = fit_entry(
                        db,
                        &e.key,
                        &raw,
                        source_version,
                        &target,
                        policy,
                        &mut report,
                    )?
                    else {
                        continue;
                    };
                    select(&mut con, &mut selected, db);
                    let argv = restore_command(e.key, payload, e.expire_at_ms, true, None);
                    send(&mut con, &argv).map_err(|e| target_error(&argv, e))?;
                }
                Item::EntryStart(e) => {
                    let db = e.db as i64;
                    select(&mut con, &mut selected, db);
                    send(&mut con, &[Bytes::from_static(b"DEL"), e.key.clone()]).unwrap();
                    big = Some((db, e.key, e.expire_at_ms, false, 0));
                }
                Item::ValueChunk(mut value) => {
                    let (db, key, _, dropped, chunks) = big.as_mut().expect("a chunk in a value");
                    if *dropped || !fit_value(*db, key, &mut value, &target, policy, &mut report)? {
                        *dropped = true;
                        continue;
                    }
                    select(&mut con, &mut selected, *db);
                    let mut commands = Vec::new();
                    match &value {
                        ferry_rdb::Value::String(piece) if *chunks > 0 => commands.push(vec![
                            Bytes::from_static(b"APPEND"),
                            key.clone(),
                            piece.clone(),
                        ]),
                        _ => value_commands(key, &value, target_rdb, &mut |c| commands.push(c))?,
                    }
                    for argv in commands {
                        send(&mut con, &argv).map_err(|e| target_error(&argv, e))?;
                    }
                    *chunks += 1;
                }
                Item::EntryEnd => {
                    let (db, key, expire, dropped, _) = big.take().expect("the end of a value");
                    if let (Some(at), false) = (expire, dropped) {
                        select(&mut con, &mut selected, db);
                        send(&mut con, &expire_command(&key, at)).unwrap();
                    }
                }
                _ => {}
            }
        }
    }
    parser
        .finish()
        .map_err(|e| ferry_replicator::Error::Rdb(e.to_string()))?;
    started_live.store(true, Ordering::SeqCst);

    // The live stream, until the goal offset is applied.
    let mut applied = source.offset();
    loop {
        let g = goal.load(Ordering::SeqCst);
        if g > 0 && applied >= g {
            return Ok((report, source_version));
        }
        let event =
            match tokio::time::timeout(std::time::Duration::from_millis(200), source.next_event())
                .await
            {
                Ok(e) => e?,
                Err(_) => continue,
            };
        match event {
            StreamEvent::Unit(unit) => {
                let mut out = Vec::new();
                for c in &unit.commands {
                    if let Some(mut argv) =
                        fit_command(c.db, &c.argv, &target, policy, &mut report)?
                    {
                        adapt_for_target(&mut argv, target_rdb);
                        out.push((c.db, argv));
                    }
                }
                if unit.transaction && !out.is_empty() {
                    select(&mut con, &mut selected, out[0].0);
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    for (db, argv) in &out {
                        let mut c = redis::cmd(std::str::from_utf8(&argv[0]).unwrap());
                        if *db != out[0].0 {
                            pipe.cmd("SELECT").arg(*db);
                        }
                        for a in &argv[1..] {
                            c.arg(&a[..]);
                        }
                        pipe.add_command(c);
                    }
                    pipe.exec(&mut con)
                        .unwrap_or_else(|e| panic!("the target refused a transaction: {e}"));
                    // A transaction may end in another database than it began.
                    selected = -1;
                } else {
                    for (db, argv) in out {
                        select(&mut con, &mut selected, db);
                        send(&mut con, &argv).map_err(|e| target_error(&argv, e))?;
                    }
                }
                applied = unit.end_offset;
            }
            StreamEvent::Skipped { end_offset } | StreamEvent::GetAck { end_offset } => {
                applied = end_offset;
            }
        }
    }
}

/// Live writes of every kind the source has: the shared workload (INCR, APPEND, expiries, MULTI/EXEC, EVAL,
/// streams with groups, two databases), plus field expiries (`HSET` then `HPEXPIRE`, `HSETEX`) and `VADD`
/// where the source has them.
fn live_writes(source: &Server, rounds: u64, tag: &str) -> u64 {
    let n = workload(source, rounds, tag);
    let v = source.version();
    let mut c = source.client();
    for i in 0..rounds / 10 {
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
    n
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

fn listed(keys: &[ferry_replicator::pipeline::convert::PolicyKey]) -> Keys {
    keys.iter().map(|k| (k.db, k.key.to_vec())).collect()
}

/// One cell of the matrix: fill, copy under `policy` with live writes, then check the result against the
/// report.
fn pair(from: Version, to: Version, policy: TargetPolicy) {
    let source = Server::start(ServerOptions::new(from)).unwrap();
    let target = Server::start(ServerOptions::new(to)).unwrap();
    fill(
        &Target::from(&source),
        &FillOptions::seed(21).big_values(200 * 1024),
    )
    .unwrap();
    let mirror = Mirror::start(&source, &target, policy);
    // Live writes while the full copy runs, and after it.
    let tag = "m";
    let rounds = live_writes(&source, 200, tag);
    ferry_testkit::wait_until(DEADLINE, "the copy to reach the live stream", || {
        mirror.started_live.load(Ordering::SeqCst) || !mirror.is_running()
    })
    .unwrap();
    let rounds = rounds + live_writes(&source, 100, "after");
    expire_short_keys(&source, 200, tag);
    expire_short_keys(&source, 100, "after");
    let (ttl_keys, module_keys) = keys_needing_policy(&source);
    // The fill and the live writes made what each source has: the cells below are not vacuous.
    assert_eq!(!ttl_keys.is_empty(), from.field_expiry(), "{from}");
    assert_eq!(!module_keys.is_empty(), from.vector_sets(), "{from}");
    let needs_policy = (!to.field_expiry() && !ttl_keys.is_empty())
        || (!to.vector_sets() && !module_keys.is_empty());
    let result = mirror.finish(&source);
    let cell = format!("{from} -> {to} under {policy:?}");
    if needs_policy && policy == TargetPolicy::Stop {
        let err = result.expect_err(&cell).to_string();
        assert!(
            err.contains("cannot be held by the target") || err.contains("does not know"),
            "{cell}: {err}"
        );
        assert!(
            err.contains("ferry:"),
            "{cell}: the error names the key: {err}"
        );
        return;
    }
    let (report, rdb_version) = result.unwrap_or_else(|e| panic!("{cell}: {e}"));
    // Each source sent its native format (Valkey 9.1: VALKEY080, because the handshake said what ferry reads).
    assert_eq!(rdb_version, from.rdb_version(), "{cell}");
    let skipped = listed(&report.skipped);
    let converted = listed(&report.converted);
    assert_eq!(report.keys_skipped as usize, skipped.len(), "{cell}");
    assert_eq!(report.keys_converted as usize, converted.len(), "{cell}");
    // The report names exactly what the target cannot hold.
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
    for k in &report.converted {
        assert!(
            matches!(k.loss, Loss::FieldExpiries { .. }),
            "{cell}: {k:?}"
        );
    }
    // Equal by value, minus exactly the skipped keys (absent on the target); converted keys hold the same
    // fields (the target has no field expiry to compare).
    let functions = from.is_7() && to.is_7();
    let mut opts = CompareOptions::default()
        .dbs(vec![0, 1, 2])
        .functions(functions)
        .max_differences(100_000);
    if !from.is_7() {
        // 6.2 sends `SET .. EX` and `EXPIRE` relative: this copy applies them when it gets them, so the target's
        // absolute expiry is later by the copy's lag (making them absolute at receipt is the job's business).
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
        counter(&target, tag) + counter(&target, "after"),
        rounds,
        "{cell}: INCR counters"
    );
    eprintln!(
        "{cell}: RDB {rdb_version}, {} keys compared, {} skipped, {} converted, {} live commands skipped, {} \
         converted",
        report_cmp.keys_compared,
        report.keys_skipped,
        report.keys_converted,
        report.commands_skipped,
        report.commands_converted
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

/// The job itself (full sync, live stream, checkpoints) across a pair: dropped in the middle of live writes
/// and started again, it resumes from its checkpoint and ends equal with exact counters.
///
/// Only the pairs the job's full sync handles today are here: a Valkey 9.1 source or target with field
/// expiries needs the full sync to take the target's format from `TargetFormat::from_info` and each key's
/// payload from `fit_entry` (it reads Valkey 9.1 as RDB 11 and decodes type 22 as Redis's).
fn job_dropped_and_restarted_ends_equal(from: Version, to: Version) {
    use common::Job;
    let source = Server::start(ServerOptions::new(from)).unwrap();
    let target = Server::start(ServerOptions::new(to)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(31)).unwrap();
    let job = Job::start(&source, &target, |_| {});
    let first = workload(&source, 150, "j");
    job.wait_caught_up(&source);
    job.stop().unwrap();
    let second = workload(&source, 150, "j");
    let job = Job::start(&source, &target, |_| {});
    let third = workload(&source, 100, "j");
    expire_short_keys(&source, 150, "j");
    job.wait_caught_up(&source);
    let functions = from.is_7() && to.is_7();
    common::assert_same_data(&source, &target, functions);
    assert_eq!(counter(&target, "j"), first + second + third);
    job.stop().unwrap();
}

#[test]
fn job_8_2_to_8_2_dropped_and_restarted_ends_equal() {
    job_dropped_and_restarted_ends_equal(Version::V8_2, Version::V8_2);
}

#[test]
fn job_7_0_to_9_1_dropped_and_restarted_ends_equal() {
    job_dropped_and_restarted_ends_equal(Version::V7_0, Version::V9_1);
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
