//! `ferry rdb json | stats | restore` on the RDB file of a filled server.

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use common::*;
use ferry_testkit::{
    fill, Cluster, FillOptions, FillReport, Server, ServerOptions, Target, Version,
};

/// A filled server and its saved RDB file.
fn saved(dbs: &[u32], seed: u64) -> (Server, FillReport, std::path::PathBuf) {
    let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let filled = fill(
        &Target::from(&server),
        &FillOptions::seed(seed).dbs(dbs.to_vec()),
    )
    .unwrap();
    redis::cmd("SAVE").exec(&mut server.client()).unwrap();
    let path = server.dir().join("dump.rdb");
    assert!(path.exists());
    (server, filled, path)
}

fn key_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        other => base64::engine::general_purpose::STANDARD
            .decode(other["base64"].as_str().expect("a base64 key"))
            .unwrap(),
    }
}

/// Sets are unordered: compare them sorted.
fn normalized(mut v: serde_json::Value, kind: &str) -> serde_json::Value {
    if kind == "set" {
        if let Some(items) = v.as_array_mut() {
            items.sort_by_key(|i| i.to_string());
        }
    }
    v
}

/// `ZRANGE key 0 -1 WITHSCORES` as `(member, score)` pairs.
fn zrange(con: &mut redis::Connection, key: &[u8]) -> Vec<(bytes::Bytes, f64)> {
    let flat: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(con)
        .unwrap();
    flat.chunks(2)
        .map(|p| {
            let score = std::str::from_utf8(&p[1]).unwrap();
            let score = match score {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap(),
            };
            (bytes::Bytes::from(p[0].clone()), score)
        })
        .collect()
}

#[test]
fn rdb_json_gives_sorted_sets_in_zrange_order_whatever_their_encoding() {
    let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut con = server.client();
    // A listpack zset, and one of 300 members (a skiplist, which Redis saves from the highest score down),
    // with ties on the score ordered by member.
    for (key, n) in [("small", 20u32), ("big", 300)] {
        for i in 0..n {
            redis::cmd("ZADD")
                .arg(key)
                .arg((n - i) / 3)
                .arg(format!("m{i:03}"))
                .exec(&mut con)
                .unwrap();
        }
    }
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("big")
        .query(&mut con)
        .unwrap();
    assert_eq!(encoding, "skiplist");
    redis::cmd("SAVE").exec(&mut con).unwrap();
    let path = server.dir().join("dump.rdb");
    let mut ferry = Ferry::spawn(["rdb", "json", path.to_str().unwrap()]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let mut seen = 0;
    for line in ferry.stdout().lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = key_bytes(&j["key"]);
        let expected = ferry_rdb::json::value(&ferry_rdb::Value::SortedSet(zrange(&mut con, &key)));
        assert_eq!(j["value"], expected, "{}", String::from_utf8_lossy(&key));
        seen += 1;
    }
    assert_eq!(seen, 2);
}

#[test]
fn rdb_json_matches_the_decoded_values_of_a_filled_server() {
    let (server, filled, path) = saved(&[0, 1, 2], 21);
    let mut ferry = Ferry::spawn(["rdb", "json", path.to_str().unwrap()]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let out = ferry.stdout();
    let mut con = server.client();
    let mut lines = 0u64;
    for line in out.lines() {
        let j: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        lines += 1;
        let db = j["db"].as_u64().unwrap();
        let key = key_bytes(&j["key"]);
        redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut con).unwrap();
        let (value, _) = ferry_rdb::decode_dump(&dump).unwrap();
        let kind = j["type"].as_str().unwrap();
        assert_eq!(kind, value.type_name());
        // A sorted set comes in ZRANGE order, whatever order the file (and DUMP) hold it in.
        let value = match value {
            ferry_rdb::Value::SortedSet(_) => ferry_rdb::Value::SortedSet(zrange(&mut con, &key)),
            other => other,
        };
        assert_eq!(
            normalized(j["value"].clone(), kind),
            normalized(ferry_rdb::json::value(&value), kind),
            "value of {line}"
        );
        let expire: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con).unwrap();
        assert_eq!(
            j["expire_at_ms"].as_i64(),
            (expire >= 0).then_some(expire),
            "expiry of {line}"
        );
    }
    assert_eq!(lines, filled.total_keys);
}

#[test]
fn rdb_stats_counts_keys_per_db_and_type() {
    let (_server, filled, path) = saved(&[0, 3], 22);
    let mut ferry = Ferry::spawn(["rdb", "stats", path.to_str().unwrap(), "--json"]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let s: serde_json::Value = serde_json::from_str(&ferry.stdout()).unwrap();
    assert_eq!(s["keys"].as_u64(), Some(filled.total_keys), "{s}");
    assert_eq!(
        s["keys_with_expiry"].as_u64(),
        Some(filled.keys_with_expiry),
        "{s}"
    );
    assert_eq!(s["checksum"], "verified");
    let mut per: BTreeMap<(u32, String), u64> = BTreeMap::new();
    for (db, types) in s["per_db"].as_object().unwrap() {
        for (t, ts) in types.as_object().unwrap() {
            per.insert(
                (db.parse().unwrap(), t.clone()),
                ts["keys"].as_u64().unwrap(),
            );
        }
    }
    let expected: BTreeMap<(u32, String), u64> = filled
        .keys
        .iter()
        .flat_map(|(db, types)| types.iter().map(move |(t, n)| ((*db, t.clone()), *n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(per, expected);
    assert!(!s["biggest"].as_array().unwrap().is_empty());
    let mut text = Ferry::spawn(["rdb", "stats", path.to_str().unwrap()]);
    assert_eq!(text.wait(), 0);
    assert!(text.stdout().contains("biggest keys:"), "{}", text.stdout());
}

#[test]
fn rdb_restore_into_a_standalone_target_ends_equal() {
    let (server, _filled, path) = saved(&[0, 1, 2], 23);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut ferry = Ferry::spawn([
        "rdb",
        "restore",
        path.to_str().unwrap(),
        "--target",
        &target.url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    assert_equal(&Target::from(&server), &Target::from(&target));
    // Again with policy panic: every key exists now.
    let mut again = Ferry::spawn([
        "rdb",
        "restore",
        path.to_str().unwrap(),
        "--target",
        &target.url(),
    ]);
    assert_eq!(again.wait(), 4);
    assert!(
        again.stderr().contains("already exists on the target"),
        "{}",
        again.stderr()
    );
}

/// One database of a file into another database of the target: `--db` and `--db-map`, or the target's URL
/// naming the database (which, without a map, does not say which of the file's databases goes there).
#[test]
fn rdb_restore_maps_a_database_of_the_file_to_another_of_the_target() {
    let (server, _filled, path) = saved(&[0, 1], 24);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let file = path.to_str().unwrap();
    let into_3 = format!("{}/3", target.url());
    let mut refused = Ferry::spawn(["rdb", "restore", file, "--target", &into_3]);
    assert_eq!(refused.wait(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("map the file's database with db_map (`--db-map N:3`"),
        "{}",
        refused.stderr()
    );
    let mut ferry = Ferry::spawn([
        "rdb", "restore", file, "--target", &into_3, "--db", "1", "--db-map", "1:3",
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    assert!(dbsize(&server, 1) > 0);
    assert_eq!(
        (dbsize(&target, 0), dbsize(&target, 1), dbsize(&target, 3)),
        (0, 0, dbsize(&server, 1))
    );
    // The library's verify, given the same map, finds the two equal.
    let report = runtime()
        .block_on(ferry::verify(
            &ferry::Source::standalone(server.url()),
            &ferry::Target::standalone(target.url()),
            ferry::VerifyOptions::default()
                .with_dbs(vec![1])
                .with_db_map(1, 3),
        ))
        .unwrap();
    assert!(report.equal, "{report}");
    assert_eq!(report.keys_checked, dbsize(&server, 1));
}

#[test]
fn rdb_restore_into_a_cluster_target_ends_equal_and_leaves_no_checkpoint() {
    let (server, filled, path) = saved(&[0], 24);
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let seed = format!("redis://{}", cluster.masters()[0].addr());
    let mut ferry = Ferry::spawn([
        "rdb",
        "restore",
        path.to_str().unwrap(),
        "--target",
        &seed,
        "--target-type",
        "cluster",
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let report = ferry_testkit::compare(
        &Target::from(&server),
        &cluster.target(),
        &Default::default(),
    )
    .unwrap();
    assert!(report.is_equal(), "{report}");
    assert_eq!(report.keys_compared, filled.total_keys);
    // ferry's own verify, cluster-aware, agrees.
    let mut verify = Ferry::spawn([
        "verify",
        "--source",
        &server.url(),
        "--target",
        &seed,
        "--target-type",
        "cluster",
    ]);
    assert_eq!(verify.wait(), 0, "{}", verify.stdout());
}

#[test]
fn rdb_restore_to_an_unreachable_target_fails_with_a_connection_error() {
    let (_server, _filled, path) = saved(&[0], 25);
    // A port of 127.0.0.1 that nothing listens on any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut ferry = Ferry::spawn([
        "rdb",
        "restore",
        path.to_str().unwrap(),
        "--target",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert_eq!(ferry.wait(), 3, "{}", ferry.stderr());
    let stderr = ferry.stderr();
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) || stderr.to_lowercase().contains("connect"),
        "{stderr}"
    );
}

#[test]
fn rdb_restore_with_a_wrong_password_fails_with_an_auth_error() {
    let (_server, _filled, path) = saved(&[0], 26);
    let target = Server::start(ServerOptions::new(Version::V7_0).password("right")).unwrap();
    let mut ferry = Ferry::spawn([
        "rdb",
        "restore",
        path.to_str().unwrap(),
        "--target",
        &format!("redis://:wrong@{}", target.addr()),
    ]);
    assert_eq!(ferry.wait(), 3, "{}", ferry.stderr());
    let stderr = ferry.stderr();
    assert!(
        ["WRONGPASS", "auth", "password"]
            .iter()
            .any(|w| stderr.contains(w)),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong@"),
        "the password is not printed: {stderr}"
    );
    let keys: u64 = redis::cmd("DBSIZE").query(&mut target.client()).unwrap();
    assert_eq!(keys, 0);
}

/// `HGETALL` as a sorted map.
fn hgetall(con: &mut redis::Connection, key: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(con).unwrap()
}

#[test]
fn rdb_restore_follows_the_target_policy_for_field_expiries_and_leaves_expired_fields_out() {
    // An 8.2 file: "live" has a field that expires in 2100, "past" only one whose expiry had passed when the
    // file was read (written with active expiry off, so the save keeps it).
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let mut con = source.client();
    redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .exec(&mut con)
        .unwrap();
    for key in ["live", "past"] {
        redis::cmd("HSET")
            .arg(key)
            .arg("plain")
            .arg("1")
            .arg("expiring")
            .arg("2")
            .exec(&mut con)
            .unwrap();
    }
    redis::cmd("HPEXPIREAT")
        .arg("live")
        .arg(4_102_444_800_000u64)
        .arg("FIELDS")
        .arg(1)
        .arg("expiring")
        .exec(&mut con)
        .unwrap();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut con).unwrap();
    let at = (secs + 1) * 1000;
    redis::cmd("HPEXPIREAT")
        .arg("past")
        .arg(at)
        .arg("FIELDS")
        .arg(1)
        .arg("expiring")
        .exec(&mut con)
        .unwrap();
    redis::cmd("SAVE").exec(&mut con).unwrap();
    let path = source.dir().join("dump.rdb");
    // Wait on the clock only, until the field's expiry has passed.
    ferry_testkit::wait_until(DEADLINE, "the field's expiry to pass", || {
        let (now, _): (u64, u64) = redis::cmd("TIME").query(&mut con).unwrap();
        now * 1000 > at
    })
    .unwrap();

    let restore = |target: &Server, policy: Option<&str>| {
        let mut args = vec![
            "rdb".to_string(),
            "restore".into(),
            path.to_str().unwrap().into(),
            "--target".into(),
            target.url(),
        ];
        if let Some(p) = policy {
            args.extend(["--target-policy".into(), p.into()]);
        }
        let mut ferry = Ferry::spawn(args);
        let code = ferry.wait();
        (code, ferry.stdout(), ferry.stderr())
    };
    let fields = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect()
    };

    // Stop (the default) names the key that needs field expiries; the expired one needs none.
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let (code, _, stderr) = restore(&target, None);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("\"live\"") && stderr.contains("target policy stop"),
        "{stderr}"
    );
    assert!(!stderr.contains("\"past\""), "{stderr}");

    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let (code, stdout, stderr) = restore(&target, Some("skip"));
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["policy"]["keys_skipped"], 1, "{report}");
    assert_eq!(
        report["policy"]["skipped"][0]["key"], "\"live\"",
        "{report}"
    );
    let mut t = target.client();
    assert_eq!(hgetall(&mut t, "live"), BTreeMap::new());
    assert_eq!(hgetall(&mut t, "past"), fields(&[("plain", "1")]));

    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let (code, stdout, stderr) = restore(&target, Some("convert"));
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["policy"]["keys_converted"], 1, "{report}");
    let mut t = target.client();
    assert_eq!(
        hgetall(&mut t, "live"),
        fields(&[("plain", "1"), ("expiring", "2")])
    );
    // The expired field does not come back as one that never expires.
    assert_eq!(hgetall(&mut t, "past"), fields(&[("plain", "1")]));
}
