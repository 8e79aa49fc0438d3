//! Against real servers (ferry-testkit): files saved by 7.0, 6.2, Redis 8.2 and Valkey 9.1 decode to
//! what the servers report (field expiries and vector sets included), DUMP payloads decode to the same values, values re-encoded for v9/v10 RESTORE with equal
//! digests, and a file written by [`ferry_rdb::Writer`] passes redis-check-rdb and loads into both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ferry_rdb::{Entry, Item, ParserOptions, Reader, Value, ValueMode};
use ferry_testkit::{fill, FillOptions, Server, ServerOptions, Target, Version};
use redis::Value as RV;

fn rv_bytes(v: &RV) -> Vec<u8> {
    match v {
        RV::BulkString(b) => b.clone(),
        RV::SimpleString(s) => s.clone().into_bytes(),
        RV::Int(i) => i.to_string().into_bytes(),
        RV::Okay => b"OK".to_vec(),
        other => panic!("not a string reply: {other:?}"),
    }
}

fn rv_array(v: RV) -> Vec<RV> {
    match v {
        RV::Array(a) | RV::Set(a) => a,
        RV::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        RV::Nil => Vec::new(),
        other => panic!("not an array reply: {other:?}"),
    }
}

fn q(con: &mut redis::Connection, args: &[&[u8]]) -> RV {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

fn save_and_read(server: &Server) -> Vec<u8> {
    let mut con = server.client();
    q(&mut con, &[b"SAVE"]);
    let dir: Vec<RV> = rv_array(q(&mut con, &[b"CONFIG", b"GET", b"dbfilename"]));
    let name = String::from_utf8(rv_bytes(&dir[1])).unwrap();
    std::fs::read(server.dir().join(name)).unwrap()
}

fn decode_file(bytes: &[u8], mode: ValueMode) -> (Vec<Entry>, Vec<Item>) {
    let items: Vec<Item> = Reader::new(
        bytes,
        ParserOptions {
            mode,
            ..Default::default()
        },
    )
    .collect::<Result<_, _>>()
    .unwrap();
    assert!(matches!(
        items.last(),
        Some(Item::Eof {
            checksum: ferry_rdb::Checksum::Verified(_)
        })
    ));
    let entries = items
        .iter()
        .filter_map(|i| {
            if let Item::Entry(e) = i {
                Some(e.clone())
            } else {
                None
            }
        })
        .collect();
    (entries, items)
}

fn select(con: &mut redis::Connection, db: u64) {
    q(con, &[b"SELECT", db.to_string().as_bytes()]);
}

/// Checks one decoded entry against what the server reports for the key.
fn check_against_server(con: &mut redis::Connection, e: &Entry, version: Version) {
    let v7 = version.is_7();
    let key = &e.key[..];
    let ctx = format!("db {} key {:?}", e.db, String::from_utf8_lossy(key));
    let t = String::from_utf8(rv_bytes(&q(con, &[b"TYPE", key]))).unwrap();
    let v = e.value.as_ref().unwrap();
    if let Value::Module(m) = v {
        // Redis 8's vector sets are a built-in module type: TYPE says the module's name.
        assert_eq!(t, m.name, "{ctx}");
        assert_eq!(m.name, "vectorset", "{ctx}");
    } else {
        assert_eq!(t, v.type_name(), "{ctx}");
    }
    let strs = |r: RV| rv_array(r).iter().map(rv_bytes).collect::<Vec<_>>();
    let ours = |v: &[Bytes]| v.iter().map(|b| b.to_vec()).collect::<Vec<_>>();
    match v {
        Value::String(s) => assert_eq!(rv_bytes(&q(con, &[b"GET", key])), s.to_vec(), "{ctx}"),
        Value::List(l) => assert_eq!(
            strs(q(con, &[b"LRANGE", key, b"0", b"-1"])),
            ours(l),
            "{ctx}"
        ),
        Value::Set(m) => {
            let got: BTreeSet<Vec<u8>> = strs(q(con, &[b"SMEMBERS", key])).into_iter().collect();
            assert_eq!(got, ours(m).into_iter().collect::<BTreeSet<_>>(), "{ctx}");
            assert_eq!(got.len(), m.len(), "{ctx}: duplicate members");
        }
        Value::SortedSet(z) => {
            let flat = strs(q(con, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]));
            let got: BTreeMap<Vec<u8>, f64> = flat
                .chunks(2)
                .map(|p| {
                    (
                        p[0].clone(),
                        ferry_rdb::encoding::parse_double(&p[1]).unwrap(),
                    )
                })
                .collect();
            assert_eq!(got.len(), z.len(), "{ctx}");
            for (m, s) in z {
                assert_eq!(got[&m.to_vec()], *s, "{ctx}");
            }
        }
        Value::Hash(h) => {
            let flat = strs(q(con, &[b"HGETALL", key]));
            let got: BTreeMap<Vec<u8>, Vec<u8>> = flat
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            let want: BTreeMap<Vec<u8>, Vec<u8>> = h
                .iter()
                .map(|f| (f.field.to_vec(), f.value.to_vec()))
                .collect();
            assert_eq!(got, want, "{ctx}");
            if version.field_expiry() {
                let fields: Vec<&[u8]> = h.iter().map(|f| &f.field[..]).collect();
                let n = fields.len().to_string();
                let mut args: Vec<&[u8]> = vec![b"HPEXPIRETIME", key, b"FIELDS", n.as_bytes()];
                args.extend(fields);
                let times: Vec<i64> = rv_array(q(con, &args))
                    .into_iter()
                    .map(|t| match t {
                        RV::Int(i) => i,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                for (f, t) in h.iter().zip(times) {
                    assert_eq!(
                        f.expire_at_ms.map(|e| e as i64).unwrap_or(-1),
                        t,
                        "{ctx} field {:?}",
                        f.field
                    );
                }
            }
        }
        Value::Stream(s) => {
            let got: Vec<(String, Vec<Vec<u8>>)> = rv_array(q(con, &[b"XRANGE", key, b"-", b"+"]))
                .into_iter()
                .map(|e| {
                    let mut p = rv_array(e).into_iter();
                    let id = String::from_utf8(rv_bytes(&p.next().unwrap())).unwrap();
                    (id, strs(p.next().unwrap()))
                })
                .collect();
            let want: Vec<(String, Vec<Vec<u8>>)> = s
                .entries
                .iter()
                .map(|e| {
                    (
                        e.id.to_string(),
                        e.fields
                            .iter()
                            .flat_map(|(f, v)| [f.to_vec(), v.to_vec()])
                            .collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{ctx}");
            assert_eq!(s.length as usize, got.len(), "{ctx}");
            let groups = rv_array(q(con, &[b"XINFO", b"GROUPS", key]));
            assert_eq!(groups.len(), s.groups.len(), "{ctx}");
            for (g, ours) in groups.into_iter().zip(&s.groups) {
                let kv: BTreeMap<String, RV> = rv_array(g)
                    .chunks(2)
                    .map(|p| (String::from_utf8(rv_bytes(&p[0])).unwrap(), p[1].clone()))
                    .collect();
                assert_eq!(rv_bytes(&kv["name"]), ours.name.to_vec(), "{ctx}");
                assert_eq!(
                    String::from_utf8(rv_bytes(&kv["last-delivered-id"])).unwrap(),
                    ours.last_id.to_string()
                );
                assert_eq!(
                    rv_bytes(&kv["pending"]),
                    ours.pending.len().to_string().into_bytes(),
                    "{ctx}"
                );
                assert_eq!(
                    rv_bytes(&kv["consumers"]),
                    ours.consumers.len().to_string().into_bytes(),
                    "{ctx}"
                );
            }
        }
        Value::Module(_) => {}
    }
    // Expiry: exact on 7.0 (PEXPIRETIME); on 6.2 only PTTL exists, so check presence and range.
    if v7 {
        let at = match q(con, &[b"PEXPIRETIME", key]) {
            RV::Int(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.expire_at_ms, (at >= 0).then_some(at), "{ctx}: expiry");
    } else {
        let ttl = match q(con, &[b"PTTL", key]) {
            RV::Int(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.expire_at_ms.is_some(), ttl >= 0, "{ctx}: expiry presence");
    }
}

/// A value with the members of unordered types sorted (for comparisons that must not depend on order).
fn canonical(v: &Value) -> Value {
    let mut v = v.clone();
    match &mut v {
        Value::Set(m) => m.sort(),
        Value::Hash(h) => h.sort_by(|a, b| a.field.cmp(&b.field)),
        Value::SortedSet(z) => z.sort_by(|a, b| a.0.cmp(&b.0)),
        _ => {}
    }
    v
}

fn dbsize(con: &mut redis::Connection) -> u64 {
    match q(con, &[b"DBSIZE"]) {
        RV::Int(i) => i as u64,
        other => panic!("{other:?}"),
    }
}

fn saved_file_matches_server_and_dumps(version: Version) {
    let server = Server::start(ServerOptions::new(version)).unwrap();
    let report = fill(&Target::from(&server), &FillOptions::seed(7)).unwrap();
    let bytes = save_and_read(&server);
    let (entries, items) = decode_file(&bytes, ValueMode::DecodedAndRaw);
    assert_eq!(
        entries.len() as u64,
        report.total_keys,
        "every key of the fill is in the file"
    );
    let v7 = version.is_7();
    let mut con = server.client();
    let mut per_db: BTreeMap<u64, u64> = BTreeMap::new();
    for e in &entries {
        select(&mut con, e.db);
        check_against_server(&mut con, e, version);
        *per_db.entry(e.db).or_default() += 1;
        // The DUMP payload decodes to the same value and carries the same serialized bytes.
        let payload = rv_bytes(&q(&mut con, &[b"DUMP", &e.key]));
        let (dv, ver) = ferry_rdb::decode_dump(&payload).unwrap();
        assert_eq!(ver as u32, version.rdb_version());
        let file_value = e.value.as_ref().unwrap();
        if &dv != file_value {
            // Valkey 9's hash tables may walk a hash or set in another order for DUMP than for SAVE:
            // the same members, and then the bytes differ too.
            assert_eq!(canonical(&dv), canonical(file_value), "DUMP of {:?}", e.key);
            assert_eq!(version, Version::V9_1, "order differs for {:?}", e.key);
            continue;
        }
        let parts = ferry_rdb::split_dump(&payload).unwrap();
        assert_eq!(
            Some(parts.serialized),
            e.raw.as_deref(),
            "DUMP bytes of {:?}",
            e.key
        );
    }
    for (db, n) in per_db {
        select(&mut con, db);
        assert_eq!(dbsize(&mut con), n, "db {db}");
    }
    if v7 {
        assert!(
            items.iter().any(|i| matches!(i, Item::Function { .. })),
            "the fill's function library is in the file"
        );
    }
}

#[test]
fn redis_7_0_save_decodes_to_what_the_server_reports() {
    saved_file_matches_server_and_dumps(Version::V7_0);
}

#[test]
fn redis_6_2_save_decodes_to_what_the_server_reports() {
    saved_file_matches_server_and_dumps(Version::V6_2);
}

#[test]
fn redis_8_2_save_with_field_expiries_and_vector_sets_decodes_to_what_the_server_reports() {
    saved_file_matches_server_and_dumps(Version::V8_2);
}

#[test]
fn valkey_9_1_save_with_field_expiries_decodes_to_what_the_server_reports() {
    saved_file_matches_server_and_dumps(Version::V9_1);
}

fn digest(con: &mut redis::Connection, key: &[u8]) -> Vec<u8> {
    // DIGEST-VALUE replies with one digest per key asked.
    rv_bytes(&rv_array(q(con, &[b"DEBUG", b"DIGEST-VALUE", key]))[0])
}

fn restore_everything(source: &[Entry], target: &Server, rdb_version: u32) {
    let mut con = target.client();
    for e in source {
        let v = e.value.as_ref().unwrap();
        let payload = ferry_rdb::encode_dump(v, rdb_version).unwrap();
        select(&mut con, e.db);
        let ttl = e
            .expire_at_ms
            .map(|t| t.to_string())
            .unwrap_or_else(|| "0".into());
        let mut args: Vec<&[u8]> = vec![b"RESTORE", &e.key, ttl.as_bytes(), &payload];
        if e.expire_at_ms.is_some() {
            args.push(b"ABSTTL");
        }
        q(&mut con, &args);
    }
}

fn assert_same_digests(source: &Server, target: &Server, entries: &[Entry]) {
    let mut a = source.client();
    let mut b = target.client();
    for e in entries {
        select(&mut a, e.db);
        select(&mut b, e.db);
        assert_eq!(
            digest(&mut a, &e.key),
            digest(&mut b, &e.key),
            "digest of {:?}",
            e.key
        );
        assert_eq!(
            rv_bytes(&q(&mut a, &[b"TYPE", &e.key])),
            rv_bytes(&q(&mut b, &[b"TYPE", &e.key])),
            "type of {:?}",
            e.key
        );
    }
    select(&mut a, 0);
    select(&mut b, 0);
    assert_eq!(
        rv_bytes(&q(&mut a, &[b"DEBUG", b"DIGEST"])),
        rv_bytes(&q(&mut b, &[b"DEBUG", b"DIGEST"]))
    );
}

#[test]
fn values_from_7_0_reencoded_for_v9_restore_into_6_2_and_for_v10_into_7_0_with_equal_digests() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(
        &Target::from(&source),
        &FillOptions::seed(11).dbs(vec![0, 3]),
    )
    .unwrap();
    let bytes = save_and_read(&source);
    let (entries, _) = decode_file(&bytes, ValueMode::Decoded);
    for (target_version, rdb) in [(Version::V6_2, 9), (Version::V7_0, 10)] {
        let target = Server::start(ServerOptions::new(target_version)).unwrap();
        restore_everything(&entries, &target, rdb);
        assert_same_digests(&source, &target, &entries);
    }
}

fn start_with_file(version: Version, file: &Path) -> Server {
    let dir = file.parent().unwrap().to_string_lossy().into_owned();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    Server::start(
        ServerOptions::new(version)
            .config("dir", format!("\"{dir}\""))
            .config("dbfilename", format!("\"{name}\"")),
    )
    .unwrap()
}

#[test]
fn a_file_written_for_v9_passes_redis_check_rdb_and_loads_into_both_servers_with_equal_digests() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(5)).unwrap();
    let bytes = save_and_read(&source);
    let (entries, _) = decode_file(&bytes, ValueMode::Decoded);
    let tmp = tempfile::tempdir().unwrap();
    for rdb_version in [9u32, 10] {
        let path = tmp.path().join(format!("written-v{rdb_version}.rdb"));
        let mut w =
            ferry_rdb::Writer::new(std::fs::File::create(&path).unwrap(), rdb_version).unwrap();
        w.aux(b"redis-ver", b"6.2.0").unwrap();
        let mut db = None;
        for e in &entries {
            if db != Some(e.db) {
                w.select_db(e.db).unwrap();
                db = Some(e.db);
            }
            w.write_entry(&e.key, e.value.as_ref().unwrap(), e.expire_at_ms)
                .unwrap();
        }
        w.finish().unwrap();
        let check = std::process::Command::new("/usr/bin/redis-check-rdb")
            .arg(&path)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success() && out.contains("RDB looks OK"),
            "redis-check-rdb: {out}"
        );
        // Our own reader agrees, and the file round-trips.
        let (again, _) = decode_file(&std::fs::read(&path).unwrap(), ValueMode::Decoded);
        assert_eq!(again.len(), entries.len());
        let versions: &[Version] = if rdb_version == 9 {
            &[Version::V6_2, Version::V7_0]
        } else {
            &[Version::V7_0]
        };
        for &v in versions {
            let loaded = start_with_file(v, &path);
            ferry_testkit::wait_until(Duration::from_secs(30), "the RDB file to be loaded", || {
                let mut c = loaded.client();
                matches!(redis::cmd("INFO").arg("persistence").query::<String>(&mut c), Ok(s) if s.contains("loading:0"))
            })
            .unwrap();
            assert_same_digests(&source, &loaded, &entries);
        }
    }
}

#[test]
fn a_big_list_arrives_in_chunks_when_a_value_bound_is_set() {
    let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut con = server.client();
    let n = 20_000;
    for chunk in (0..n).collect::<Vec<u32>>().chunks(1000) {
        let mut c = redis::cmd("RPUSH");
        c.arg("big");
        for i in chunk {
            c.arg(format!("element-{i:08}"));
        }
        c.exec(&mut con).unwrap();
    }
    q(&mut con, &[b"SET", b"small", b"v"]);
    let bytes = save_and_read(&server);
    let opts = ParserOptions {
        mode: ValueMode::Raw,
        big_value_bytes: Some(16 * 1024),
        ..Default::default()
    };
    let items: Vec<Item> = Reader::new(&bytes[..], opts)
        .collect::<Result<_, _>>()
        .unwrap();
    let mut collected = Vec::new();
    let mut chunks = 0;
    let mut in_big = false;
    let mut small_raw = None;
    for it in items {
        match it {
            Item::EntryStart(e) => {
                assert_eq!(&e.key[..], b"big");
                in_big = true;
            }
            Item::ValueChunk(Value::List(l)) => {
                assert!(in_big);
                chunks += 1;
                collected.extend(l);
            }
            Item::EntryEnd => in_big = false,
            Item::Entry(e) => {
                assert_eq!(&e.key[..], b"small");
                small_raw = e.raw;
            }
            _ => {}
        }
    }
    assert!(chunks > 5, "{chunks} chunks");
    assert_eq!(collected.len(), n as usize);
    assert_eq!(&collected[123][..], b"element-00000123");
    assert!(small_raw.is_some());
}

/// Saves `from`'s fill, re-encodes every key for `to` with `reencode_for` and RESTOREs it; keys the target
/// cannot hold (field expiries before Redis 7.4 / Valkey 9, a vector set without its module) must be refused
/// by the encoder (or by RESTORE for the module) and are left out; everything else must be equal by value.
fn reencoded_across_families_restore_equal(from: Version, to: Version) {
    use ferry_testkit::{compare, CompareOptions, DifferenceKind};
    let source = Server::start(ServerOptions::new(from)).unwrap();
    let target = Server::start(ServerOptions::new(to)).unwrap();
    fill(
        &Target::from(&source),
        &FillOptions::seed(11).dbs([0u32, 1]),
    )
    .unwrap();
    let bytes = save_and_read(&source);
    let (entries, _) = decode_file(&bytes, ValueMode::DecodedAndRaw);
    let mut con = target.client();
    let mut left_out: Vec<Vec<u8>> = Vec::new();
    for e in &entries {
        let v = e.value.as_ref().unwrap();
        let raw = e.raw.as_ref().unwrap();
        let payload = match ferry_rdb::reencode_for(raw, from.rdb_version(), to.rdb_version()) {
            Ok(p) => p,
            Err(err) => {
                assert!(
                    v.has_field_expiry() && !to.field_expiry(),
                    "{from} -> {to}: {:?} refused: {err}",
                    e.key
                );
                left_out.push(e.key.to_vec());
                continue;
            }
        };
        select(&mut con, e.db);
        let ttl = e
            .expire_at_ms
            .map(|t| t.to_string())
            .unwrap_or_else(|| "0".into());
        let mut c = redis::cmd("RESTORE");
        c.arg(&e.key[..]).arg(&ttl).arg(&payload[..]).arg("ABSTTL");
        match c.exec(&mut con) {
            Ok(()) => {}
            Err(err) if matches!(v, Value::Module(_)) && !to.vector_sets() => {
                left_out.push(e.key.to_vec());
                let _ = err;
            }
            Err(err) => panic!("{from} -> {to}: RESTORE {:?}: {err}", e.key),
        }
    }
    let report = compare(
        &Target::from(&source),
        &Target::from(&target),
        // Only keys are restored here; the function library is the replicator's business.
        &CompareOptions::default().functions(false),
    )
    .unwrap();
    let mut missing: Vec<Vec<u8>> = report
        .differences
        .iter()
        .map(|d| {
            assert_eq!(d.kind, DifferenceKind::OnlyInA, "{from} -> {to}: {report}");
            d.key.clone().unwrap()
        })
        .collect();
    missing.sort();
    left_out.sort();
    assert_eq!(report.total_differences as usize, missing.len(), "{report}");
    assert_eq!(missing, left_out, "{from} -> {to}: {report}");
    if from.field_expiry() && to.field_expiry() {
        assert!(left_out.iter().all(|k| k.starts_with(b"ferry:vset")));
    }
}

#[test]
fn redis_8_2_values_reencoded_for_valkey_9_1_keep_field_expiries() {
    reencoded_across_families_restore_equal(Version::V8_2, Version::V9_1);
}

#[test]
fn valkey_9_1_values_reencoded_for_redis_8_2_keep_field_expiries() {
    reencoded_across_families_restore_equal(Version::V9_1, Version::V8_2);
}

#[test]
fn valkey_9_1_and_redis_8_2_values_reencoded_for_7_0_and_6_2_leave_out_only_field_expiry_hashes() {
    reencoded_across_families_restore_equal(Version::V9_1, Version::V7_0);
    reencoded_across_families_restore_equal(Version::V8_2, Version::V6_2);
}

#[test]
fn redis_7_0_values_pass_into_valkey_9_1_as_they_are() {
    reencoded_across_families_restore_equal(Version::V7_0, Version::V9_1);
}
