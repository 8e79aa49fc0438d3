//! An RDB file as the source of a `SyncJob` (`Source::RdbFile`): files of every RDB version the fixture corpus
//! holds, restored into real servers of every target kind, with the job's filters and policies; bad files give
//! an error naming the file and the byte offset, and nothing is claimed as done.

mod common;

use common::runtime;

use std::path::{Path, PathBuf};

use ferry::rdb::Value;
use ferry::{Conflict, ErrorKind, Phase, Source, SyncConfig, SyncJob, Target, TargetPolicy};
use ferry_testkit::{
    fill, Cluster, CompareOptions, FillOptions, SentinelGroup, SentinelOptions, Server,
    ServerOptions, Target as TkTarget, Version,
};

fn fixture(rel: &str) -> PathBuf {
    common::shared_dir().join("rdb-fixtures").join(rel)
}

/// Runs a job to its end and returns its final status (or its error).
fn run(config: SyncConfig) -> Result<ferry::Status, ferry::Error> {
    runtime().block_on(async { SyncJob::new(config)?.start()?.wait().await })
}

/// A value with the order the server may change put aside (set members, hash fields, sorted-set members;
/// streams by their entries and their group names).
fn canonical(v: &Value) -> String {
    match v {
        Value::Set(m) => {
            let mut m = m.clone();
            m.sort();
            format!("set {m:?}")
        }
        Value::Hash(f) => {
            let mut f: Vec<_> = f
                .iter()
                .map(|f| (f.field.clone(), f.value.clone()))
                .collect();
            f.sort();
            format!("hash {f:?}")
        }
        Value::SortedSet(m) => {
            let mut m: Vec<_> = m.iter().map(|(k, s)| (k.clone(), s.to_bits())).collect();
            m.sort();
            format!("zset {m:?}")
        }
        Value::Stream(s) => {
            let groups: Vec<_> = s.groups.iter().map(|g| g.name.clone()).collect();
            format!("stream {:?} groups {groups:?}", s.entries)
        }
        other => format!("{other:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every key of the file that has not expired is on `server` with the file's value, and nothing else is.
fn assert_holds_file(server: &Server, path: &Path) {
    let mut con = server.client();
    let mut expected = 0u64;
    for entry in ferry::rdb::entries(path).unwrap() {
        let e = entry.unwrap();
        if e.expire_at_ms.is_some_and(|at| at <= now_ms()) {
            continue;
        }
        // A collection without an element is no key: Redis's loader skips it, and so does the copy.
        if e.value.as_ref().is_some_and(|v| {
            matches!(
                v,
                Value::List(_) | Value::Set(_) | Value::SortedSet(_) | Value::Hash(_)
            ) && v.is_empty()
        }) {
            continue;
        }
        expected += 1;
        redis::cmd("SELECT").arg(e.db).exec(&mut con).unwrap();
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&e.key[..]).query(&mut con).unwrap();
        let dump = dump
            .unwrap_or_else(|| panic!("{}: key {:?} missing on the target", path.display(), e.key));
        let (value, _) = ferry::rdb::decode_dump(&dump).unwrap();
        let want = e.value.expect("decoded value");
        assert_eq!(
            canonical(&value),
            canonical(&want),
            "{}: key {:?}",
            path.display(),
            e.key
        );
        if let Some(at) = e.expire_at_ms {
            let got: i64 = redis::cmd("PEXPIRETIME")
                .arg(&e.key[..])
                .query(&mut con)
                .unwrap();
            assert_eq!(got, at, "{}: expiry of {:?}", path.display(), e.key);
        }
    }
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    let held: u64 = info
        .lines()
        .filter_map(|l| {
            l.split_once("keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(held, expected, "{}: keys on the target", path.display());
}

#[test]
fn rdb_files_of_every_version_restore_into_a_standalone_target_as_a_job() {
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    // RDB v2 to v11 (Redis 2.4 to 7.2): zipmaps, ziplists, intsets, quicklists, listpacks, streams, expiries.
    let files = [
        "hdt3213/cases/parser_filters.rdb",
        "cupcake/dictionary.rdb",
        "cupcake/zipmap_that_compresses_easily.rdb",
        "cupcake/integer_keys.rdb",
        "cupcake/keys_with_mixed_expiry.rdb",
        "cupcake/multiple_databases.rdb",
        "cupcake/rdb_v7_list_quicklist.rdb",
        "cupcake/ziplist_with_integers.rdb",
        "hdt3213/cases/rdb_version_8_with_64b_length_and_scores.rdb",
        "hdt3213/cases/memory.rdb",
        "hdt3213/cases/stream_listpacks_1.rdb",
        "hdt3213/cases/listpack.rdb",
        "hdt3213/cases/issue27.rdb",
        "hdt3213/cases/set_listpack.rdb",
        "hdt3213/cases/expiration.rdb",
        // Nine empty collections (left by old servers' bugs): left out, as Redis's loader leaves them out.
        "redis/corrupt_empty_keys.rdb",
    ];
    for rel in files {
        let path = fixture(rel);
        redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
        let status = run(SyncConfig::new(
            Source::rdb_file(&path),
            Target::standalone(target.url()),
        ))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(status.phase, Phase::Stopped, "{rel}");
        assert_eq!(status.full_syncs, 1, "{rel}");
        assert_holds_file(&target, &path);
    }
}

#[test]
fn redis_8_and_valkey_9_files_restore_with_the_target_policy() {
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    // RDB v13 (Redis 8 streams with IDMP state): the stream's entries and groups reach a 7.0 target.
    let v13 = fixture("librdb/test/dumps-pr-rdb-v13/stream_v13_idmp.rdb");
    let status = run(
        SyncConfig::new(Source::rdb_file(&v13), Target::standalone(target.url()))
            .with_target_policy(TargetPolicy::Convert),
    )
    .unwrap();
    assert!(status.keys_copied >= 1);
    assert_holds_file(&target, &v13);

    // A Valkey 9 file (VALKEY080) with hash field expiries: a 7.0 target cannot hold them. Policy stop (the
    // default) names the key; convert writes the fields without their expiries.
    let valkey = fixture("hdt3213/cases/valkey_hash2_with_hfe.rdb");
    redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
    let err = run(SyncConfig::new(
        Source::rdb_file(&valkey),
        Target::standalone(target.url()),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("field"), "{err}");
    let status = run(
        SyncConfig::new(Source::rdb_file(&valkey), Target::standalone(target.url()))
            .with_target_policy(TargetPolicy::Convert),
    )
    .unwrap();
    assert_eq!(status.keys_copied, 1);
    // The status names the key written with a loss.
    let file_keys: Vec<String> = ferry::rdb::entries(&valkey)
        .unwrap()
        .map(|e| format!("\"{}\"", e.unwrap().key.escape_ascii()))
        .collect();
    assert_eq!(status.policy.keys_converted, 1, "{:?}", status.policy);
    assert_eq!(status.policy.converted.len(), 1);
    assert_eq!(status.policy.converted[0].key, file_keys[0]);
    assert!(
        status.policy.converted[0].loss.contains("hash field"),
        "{:?}",
        status.policy
    );
    // Policy skip leaves it out and lists it.
    redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
    let skipped = run(
        SyncConfig::new(Source::rdb_file(&valkey), Target::standalone(target.url()))
            .with_target_policy(TargetPolicy::Skip),
    )
    .unwrap();
    assert_eq!(
        (skipped.policy.keys_skipped, skipped.policy.skipped.len()),
        (1, 1)
    );
    assert_eq!(skipped.policy.skipped[0].key, file_keys[0]);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut target.client()).unwrap();
    assert_eq!(dbsize, 0, "the skipped key is not on the target");
    let status = run(
        SyncConfig::new(Source::rdb_file(&valkey), Target::standalone(target.url()))
            .with_target_policy(TargetPolicy::Convert),
    )
    .unwrap();
    assert_eq!(status.keys_copied, 1);
    let mut con = target.client();
    for entry in ferry::rdb::entries(&valkey).unwrap() {
        let e = entry.unwrap();
        let Some(Value::Hash(fields)) = e.value else {
            panic!("a hash")
        };
        let live: Vec<_> = fields
            .iter()
            .filter(|f| f.expire_at_ms.is_none_or(|at| at as i64 > now_ms()))
            .collect();
        let len: usize = redis::cmd("HLEN").arg(&e.key[..]).query(&mut con).unwrap();
        assert_eq!(len, live.len());
        for f in live {
            let v: Vec<u8> = redis::cmd("HGET")
                .arg(&e.key[..])
                .arg(&f.field[..])
                .query(&mut con)
                .unwrap();
            assert_eq!(v, f.value.to_vec());
        }
    }
}

/// A filled server's saved RDB file.
fn saved(dbs: &[u32], seed: u64) -> (Server, ferry_testkit::FillReport, PathBuf) {
    let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(
        &TkTarget::from(&server),
        &FillOptions::seed(seed).dbs(dbs.to_vec()),
    )
    .unwrap();
    redis::cmd("SAVE").exec(&mut server.client()).unwrap();
    let path = server.dir().join("dump.rdb");
    (server, filled, path)
}

#[test]
fn an_rdb_file_job_takes_the_filters_the_db_map_and_the_conflict_policy() {
    let (source, _filled, path) = saved(&[0, 1, 2], 41);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut config = SyncConfig::new(Source::rdb_file(&path), Target::standalone(target.url()))
        .with_db_map(2, 5);
    config.filter.allow_dbs = vec![0, 2];
    let status = run(config.clone()).unwrap();
    assert!(status.keys_filtered > 0, "{status:?}");
    // db 0 as it is, db 2 in db 5, db 1 left out.
    let src = TkTarget::from(&source);
    let tgt = TkTarget::from(&target);
    let only = |dbs: Vec<u32>| CompareOptions {
        dbs: Some(dbs),
        ..Default::default()
    };
    let r = ferry_testkit::compare(&src, &tgt, &only(vec![0])).unwrap();
    assert!(r.is_equal() && r.keys_compared > 0, "{r}");
    let mut con = target.client();
    let in_db = |con: &mut redis::Connection, db: u32| -> u64 {
        redis::cmd("SELECT").arg(db).exec(con).unwrap();
        redis::cmd("DBSIZE").query(con).unwrap()
    };
    let mut scon = source.client();
    assert_eq!(in_db(&mut con, 1), 0);
    assert_eq!(in_db(&mut con, 2), 0);
    assert_eq!(in_db(&mut con, 5), in_db(&mut scon, 2));
    // Again: every key exists now. Policy panic stops naming a key; skip leaves them; rewrite rewrites.
    let err = run(config.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetRefused, "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    let status = run(config.clone().with_conflict(Conflict::Skip)).unwrap();
    assert_eq!(status.keys_copied, 0);
    assert!(status.keys_skipped > 0);
    let status = run(config.with_conflict(Conflict::Rewrite)).unwrap();
    assert!(status.keys_copied > 0);
    let r = ferry_testkit::compare(&src, &tgt, &only(vec![0])).unwrap();
    assert!(r.is_equal(), "{r}");
}

#[test]
fn an_rdb_file_job_writes_a_cluster_target_and_a_sentinel_target() {
    let (source, filled, path) = saved(&[0], 42);
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let seed = format!("redis://{}", cluster.masters()[0].addr());
    let status = run(SyncConfig::new(
        Source::rdb_file(&path),
        Target::cluster(seed),
    ))
    .unwrap();
    assert_eq!(status.keys_copied, filled.total_keys);
    let r = ferry_testkit::compare(
        &TkTarget::from(&source),
        &cluster.target(),
        &Default::default(),
    )
    .unwrap();
    assert!(r.is_equal(), "{r}");
    assert_eq!(r.keys_compared, filled.total_keys);
    // No checkpoint key left on any master.
    for m in cluster.masters() {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("ferry:checkpoint:*")
            .query(&mut m.client())
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }

    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0)).unwrap();
    let config = SyncConfig::from_json_str(
        &serde_json::json!({
            "source": { "type": "rdb_file", "path": path },
            "target": {
                "type": "sentinel",
                "sentinels": group.sentinels.iter().map(|s| format!("redis://{}", s.addr())).collect::<Vec<_>>(),
                "master": group.master_name,
            },
        })
        .to_string(),
    )
    .unwrap();
    let status = run(config).unwrap();
    assert_eq!(status.keys_copied, filled.total_keys);
    let r = ferry_testkit::compare(
        &TkTarget::from(&source),
        &TkTarget::from(group.current_master().unwrap()),
        &Default::default(),
    )
    .unwrap();
    assert!(r.is_equal(), "{r}");
}

#[test]
fn a_truncated_or_corrupt_file_fails_naming_the_file_and_the_offset() {
    let (_source, _filled, path) = saved(&[0], 43);
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let check = |file: &Path, bytes: &[u8]| {
        std::fs::write(file, bytes).unwrap();
        redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
        let rt = runtime();
        let (err, status) = rt.block_on(async {
            let job = SyncJob::new(SyncConfig::new(
                Source::rdb_file(file),
                Target::standalone(target.url()),
            ))
            .unwrap()
            .start()
            .unwrap();
            let err = job.wait().await.unwrap_err();
            (err, job.status())
        });
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Data, "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(text.contains("at byte"), "{text}");
        assert_eq!(status.phase, Phase::Stopped);
        assert!(status.last_error.is_some());
        text
    };
    // Cut in the middle of the keys.
    let truncated = dir.path().join("truncated.rdb");
    let text = check(&truncated, &bytes[..bytes.len() / 2]);
    assert!(text.contains("truncated"), "{text}");
    // Cut right after the header.
    check(&dir.path().join("header-only.rdb"), &bytes[..9]);
    // A byte changed in the middle: the checksum (or the structure) says so.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    check(&dir.path().join("corrupt.rdb"), &bad);
    // Not an RDB file at all.
    let text = check(
        &dir.path().join("not-rdb.rdb"),
        b"hello, this is not an RDB file",
    );
    assert!(text.contains("magic"), "{text}");
    // A file that does not exist.
    let missing = dir.path().join("missing.rdb");
    let err = run(SyncConfig::new(
        Source::rdb_file(&missing),
        Target::standalone(target.url()),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("missing.rdb"), "{err}");
}

#[test]
fn ferry_sync_takes_an_rdb_file_by_flags_and_by_a_redisshake_v4_rdb_reader() {
    let (source, filled, path) = saved(&[0, 1], 44);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut ferry = common::Ferry::spawn([
        "sync",
        "--source-type",
        "rdb",
        "--source-path",
        path.to_str().unwrap(),
        "--target",
        &target.url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let r = ferry_testkit::compare(
        &TkTarget::from(&source),
        &TkTarget::from(&target),
        &Default::default(),
    )
    .unwrap();
    assert!(r.is_equal(), "{r}");
    assert_eq!(r.keys_compared, filled.total_keys);

    // RedisShake v4's layout: the fixture's [redis_writer] and [advanced], with an [rdb_reader] in place of its
    // [sync_reader], and the writer's address rewritten to the local target.
    redis::cmd("FLUSHALL").exec(&mut target.client()).unwrap();
    let fixture =
        std::fs::read_to_string(common::shared_dir().join("fixtures/redisshake-v4-shake.toml"))
            .unwrap();
    let writer_and_rest = &fixture[fixture.find("[redis_writer]").unwrap()..];
    let text = format!(
        "[rdb_reader]\nfilepath = {:?}\n\n{}",
        path.to_str().unwrap(),
        writer_and_rest
            .replace("127.0.0.1:6380", &target.addr())
            .replace("block_db = [15]", "block_db = [1]")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shake.toml");
    std::fs::write(&file, text).unwrap();
    let mut ferry = common::Ferry::spawn(["sync", "-c", file.to_str().unwrap()]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let only_db0 = CompareOptions {
        dbs: Some(vec![0]),
        ..Default::default()
    };
    let r = ferry_testkit::compare(
        &TkTarget::from(&source),
        &TkTarget::from(&target),
        &only_db0,
    )
    .unwrap();
    assert!(r.is_equal() && r.keys_compared > 0, "{r}");
    let mut con = target.client();
    redis::cmd("SELECT").arg(1).exec(&mut con).unwrap();
    let in_db1: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(in_db1, 0, "block_db = [1] left db 1 out");

    // A truncated file: exit code of a data error, the file and the offset named.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.rdb");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let mut ferry = common::Ferry::spawn([
        "sync",
        "--source-type",
        "rdb",
        "--source-path",
        cut.to_str().unwrap(),
        "--target",
        &target.url(),
        "--conflict",
        "rewrite",
    ]);
    assert_ne!(ferry.wait(), 0);
    let err = ferry.stderr();
    assert!(err.contains("cut.rdb") && err.contains("at byte"), "{err}");
}
