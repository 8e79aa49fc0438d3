//! `ferry verify` run as a process: equal deployments, and each kind of planted difference.

mod common;

use common::*;
use ferry_testkit::{fill, FillOptions, ReplicaSet, Server, ServerOptions, Target, Version};

/// A master and a promoted copy of it (a replica, synced, then `REPLICAOF NO ONE`): equal, made by Redis.
fn twins(version: Version) -> (ReplicaSet, u64) {
    let set = ReplicaSet::start(version, 1).unwrap();
    let mut con = set.master.client();
    for key in ["plant:missing", "plant:value", "plant:ttl"] {
        redis::cmd("SET")
            .arg(key)
            .arg("original")
            .exec(&mut con)
            .unwrap();
    }
    redis::cmd("PEXPIREAT")
        .arg("plant:ttl")
        .arg(4_102_444_800_000u64)
        .exec(&mut con)
        .unwrap();
    let filled = fill(&set.target(), &FillOptions::seed(11)).unwrap();
    set.wait_synced(DEADLINE).unwrap();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut set.replicas[0].client())
        .unwrap();
    (set, filled.total_keys + 3)
}

#[test]
fn verify_reports_equal_for_equal_deployments() {
    let (set, keys) = twins(Version::V7_0);
    let mut ferry = Ferry::spawn([
        "verify",
        "--source",
        &set.master.url(),
        "--target",
        &set.replicas[0].url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}\n{}", ferry.stdout(), ferry.stderr());
    assert!(
        ferry
            .stdout()
            .starts_with(&format!("equal: {keys} keys compared")),
        "{}",
        ferry.stdout()
    );
}

#[test]
fn verify_finds_a_missing_key_a_changed_value_a_changed_ttl_and_an_extra_key() {
    let (set, keys) = twins(Version::V7_0);
    let mut con = set.replicas[0].client();
    redis::cmd("DEL")
        .arg("plant:missing")
        .exec(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("plant:value")
        .arg("changed")
        .arg("KEEPTTL")
        .exec(&mut con)
        .unwrap();
    redis::cmd("PEXPIREAT")
        .arg("plant:ttl")
        .arg(4_102_444_800_000u64 + 3_600_000)
        .exec(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("plant:extra")
        .arg("x")
        .exec(&mut con)
        .unwrap();
    let (source, target) = (set.master.url(), set.replicas[0].url());

    let mut text = Ferry::spawn(["verify", "--source", &source, "--target", &target]);
    assert_eq!(text.wait(), 1, "{}", text.stderr());
    let out = text.stdout();
    assert!(out.starts_with("DIFFERENT:"), "{out}");
    for line in [
        "missing db 0 \"plant:missing\"",
        "value   db 0 \"plant:value\"",
        "ttl     db 0 \"plant:ttl\"",
        "extra   db 0 \"plant:extra\"",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    let mut json = Ferry::spawn(["verify", "--source", &source, "--target", &target, "--json"]);
    assert_eq!(json.wait(), 1, "{}", json.stderr());
    let r: serde_json::Value = serde_json::from_str(&json.stdout()).expect("JSON report");
    assert_eq!(r["equal"], false);
    assert_eq!(r["keys_checked"].as_u64(), Some(keys), "{r}");
    for (field, n) in [
        ("missing", 1),
        ("extra", 1),
        ("value_mismatch", 1),
        ("ttl_mismatch", 1),
        ("type_mismatch", 0),
    ] {
        assert_eq!(r[field], n, "{field} in {r}");
    }
    let kinds: Vec<(String, String)> = r["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(
        kinds.contains(&("ttl".into(), "\"plant:ttl\"".into())),
        "{kinds:?}"
    );
}

#[test]
fn verify_finds_a_changed_type() {
    let (set, _) = twins(Version::V7_0);
    let mut con = set.replicas[0].client();
    redis::cmd("DEL").arg("plant:value").exec(&mut con).unwrap();
    redis::cmd("RPUSH")
        .arg("plant:value")
        .arg("a")
        .exec(&mut con)
        .unwrap();
    let mut ferry = Ferry::spawn([
        "verify",
        "--source",
        &set.master.url(),
        "--target",
        &set.replicas[0].url(),
        "--json",
    ]);
    assert_eq!(ferry.wait(), 1);
    let r: serde_json::Value = serde_json::from_str(&ferry.stdout()).unwrap();
    assert_eq!(r["type_mismatch"], 1, "{r}");
    assert_eq!(
        r["differences"][0]["detail"], "string on the source, list on the target",
        "{r}"
    );
}

#[test]
fn verify_compares_decoded_values_across_versions_after_a_sync_from_62_to_70() {
    let source = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(12)).unwrap();
    let mut sync = Ferry::spawn([
        "sync",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--until-caught-up",
    ]);
    assert_eq!(sync.wait(), 0, "{}", sync.stderr());
    // The payloads differ (RDB 9 vs 10 encodings); the values do not.
    let mut ferry = Ferry::spawn([
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
    ]);
    assert_eq!(ferry.wait(), 0, "{}\n{}", ferry.stdout(), ferry.stderr());
    let mut strict = Ferry::spawn([
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--compare",
        "dump",
        "--json",
    ]);
    assert_eq!(
        strict.wait(),
        1,
        "strict DUMP comparison sees the other encodings"
    );
    let r: serde_json::Value = serde_json::from_str(&strict.stdout()).unwrap();
    assert!(r["value_mismatch"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn verify_rechecks_differences_so_a_target_catching_up_gives_no_false_alarm() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    fill(&Target::from(&source), &FillOptions::seed(13)).unwrap();
    let sync_args = [
        "sync",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--until-caught-up",
    ];
    assert_eq!(Ferry::spawn(sync_args).wait(), 0);
    // The source moves on while the target is behind...
    let mut con = source.client();
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("moved:{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    redis::cmd("DEL").arg("ferry:str:0").exec(&mut con).ok();
    let mut verify = Ferry::spawn([
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--recheck-after-ms",
        "20000",
        "--json",
    ]);
    // ...and catches up between the first look and the recheck.
    verify.wait_stderr("rechecking the differing keys");
    assert_eq!(Ferry::spawn(sync_args).wait(), 0);
    assert_eq!(verify.wait(), 0, "{}\n{}", verify.stdout(), verify.stderr());
    let r: serde_json::Value = serde_json::from_str(&verify.stdout()).unwrap();
    assert!(r["rechecked"].as_u64().unwrap() >= 100, "{r}");
    assert_eq!(r["resolved_on_recheck"], r["rechecked"], "{r}");
}

#[test]
fn verify_by_digest_finds_a_changed_value_and_reports_equal_otherwise() {
    let (set, keys) = twins(Version::V7_0);
    let (source, target) = (set.master.url(), set.replicas[0].url());
    let mut equal = Ferry::spawn([
        "verify",
        "--source",
        &source,
        "--target",
        &target,
        "--compare",
        "digest",
        "--json",
    ]);
    assert_eq!(equal.wait(), 0, "{}\n{}", equal.stdout(), equal.stderr());
    let r: serde_json::Value = serde_json::from_str(&equal.stdout()).unwrap();
    assert_eq!(r["keys_checked"].as_u64(), Some(keys), "{r}");
    redis::cmd("SET")
        .arg("plant:value")
        .arg("changed")
        .exec(&mut set.replicas[0].client())
        .unwrap();
    let mut differ = Ferry::spawn([
        "verify",
        "--source",
        &source,
        "--target",
        &target,
        "--compare",
        "digest",
        "--json",
    ]);
    assert_eq!(differ.wait(), 1);
    let r: serde_json::Value = serde_json::from_str(&differ.stdout()).unwrap();
    assert_eq!(r["value_mismatch"], 1, "{r}");
    assert_eq!(r["differences"][0]["detail"], "the digests differ", "{r}");
}

#[test]
fn verify_samples_and_selects_databases() {
    let (set, _) = twins(Version::V7_0);
    let (source, target) = (set.master.url(), set.replicas[0].url());
    let mut sampled = Ferry::spawn([
        "verify", "--source", &source, "--target", &target, "--sample", "10", "--json",
    ]);
    assert_eq!(sampled.wait(), 0, "{}", sampled.stderr());
    let r: serde_json::Value = serde_json::from_str(&sampled.stdout()).unwrap();
    assert_eq!(
        r["keys_checked"], 30,
        "10 keys of each of the 3 databases: {r}"
    );
    let mut one_db = Ferry::spawn([
        "verify", "--source", &source, "--target", &target, "--db", "1", "--json",
    ]);
    assert_eq!(one_db.wait(), 0, "{}", one_db.stderr());
    let r: serde_json::Value = serde_json::from_str(&one_db.stdout()).unwrap();
    assert_eq!(r["dbs"], serde_json::json!([1]), "{r}");
    let in_db1: u64 = redis::cmd("DBSIZE")
        .query(&mut {
            let mut c = set.master.client();
            redis::cmd("SELECT").arg(1).exec(&mut c).unwrap();
            c
        })
        .unwrap();
    assert_eq!(r["keys_checked"].as_u64(), Some(in_db1), "{r}");
}

#[test]
fn json_logs_are_one_json_object_a_line() {
    let (set, _) = twins(Version::V7_0);
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let mut ferry = Ferry::spawn([
        "--log-format",
        "json",
        "sync",
        "--source",
        &set.master.url(),
        "--target",
        &target.url(),
        "--until-caught-up",
    ]);
    assert_eq!(ferry.wait(), 0, "{}", ferry.stderr());
    let err = ferry.stderr();
    let mut lines = 0;
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 2, "{err}");
}

/// Milliseconds of the server's clock (`TIME`).
fn server_ms(con: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    secs * 1000 + micros / 1000
}

/// `ferry verify --json` of two servers: the exit code and the report.
fn verify_json(source: &Server, target: &Server) -> (i32, serde_json::Value) {
    let mut ferry = Ferry::spawn([
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--json",
    ]);
    let code = ferry.wait();
    let report: serde_json::Value = serde_json::from_str(&ferry.stdout())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", ferry.stdout(), ferry.stderr()));
    (code, report)
}

#[test]
fn a_hash_field_whose_expiry_passed_is_no_difference_while_the_target_still_holds_it() {
    // A server that loaded a file dropped such a field at load; one the key was restored into (or whose expiry
    // cycle has not come by yet) keeps it in its DUMP, though no command sees it.
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let mut src = source.client();
    let mut tgt = target.client();
    redis::cmd("HSET")
        .arg("h")
        .arg("live")
        .arg("v")
        .exec(&mut src)
        .unwrap();
    redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .exec(&mut tgt)
        .unwrap();
    redis::cmd("HSET")
        .arg("h")
        .arg("live")
        .arg("v")
        .arg("gone")
        .arg("v")
        .exec(&mut tgt)
        .unwrap();
    let at = server_ms(&mut tgt) + 200;
    redis::cmd("HPEXPIREAT")
        .arg("h")
        .arg(at)
        .arg("FIELDS")
        .arg(1)
        .arg("gone")
        .exec(&mut tgt)
        .unwrap();
    // Wait on the clock only: reading the field would reclaim it.
    ferry_testkit::wait_until(DEADLINE, "the field's expiry to pass", || {
        server_ms(&mut tgt) > at
    })
    .unwrap();
    let dump = |con: &mut redis::Connection| -> Vec<u8> {
        redis::cmd("DUMP").arg("h").query(con).unwrap()
    };
    assert_ne!(
        dump(&mut src),
        dump(&mut tgt),
        "the target still holds the expired field"
    );

    let verify = || verify_json(&source, &target);
    let (code, report) = verify();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["keys_checked"], 1, "{report}");

    // A field that has not expired still counts.
    redis::cmd("HSET")
        .arg("h")
        .arg("live")
        .arg("changed")
        .exec(&mut tgt)
        .unwrap();
    let (code, report) = verify();
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["value_mismatch"], 1, "{report}");
}

/// Vector sets (Redis 8) hold an HNSW graph that a server rebuilds when it loads or restores one, and that a
/// replayed `VADD` builds with its own random levels: the same elements serialize differently on two servers
/// (and on one after a `DUMP`/`RESTORE` round trip). Verify compares their elements, vectors and attributes.
#[test]
fn vector_sets_holding_the_same_elements_are_equal_whatever_their_graphs() {
    let source = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let mut src = source.client();
    let mut tgt = target.client();
    // (key, the options of every VADD): default q8 with attributes on some elements, fp32, binary, a random
    // projection (REDUCE), and another M.
    let sets: [(&str, &[&str]); 5] = [
        ("vs:q8", &[]),
        ("vs:fp32", &["NOQUANT"]),
        ("vs:bin", &["BIN"]),
        ("vs:reduce", &["REDUCE", "2"]),
        ("vs:m", &["M", "6"]),
    ];
    let vadd = |con: &mut redis::Connection, key: &str, opts: &[&str], i: u32| {
        let mut cmd = redis::cmd("VADD");
        cmd.arg(key);
        let reduce = opts.first() == Some(&"REDUCE");
        if reduce {
            cmd.arg(&opts[..2]);
        }
        cmd.arg("VALUES").arg(4);
        for d in 0..4u32 {
            cmd.arg(f64::from((i * 7 + d * 13) % 29) / 10.0 - 1.0);
        }
        cmd.arg(format!("e{i}"));
        if !reduce {
            cmd.arg(opts);
        }
        if i.is_multiple_of(3) {
            cmd.arg("SETATTR").arg(format!("{{\"i\":{i}}}"));
        }
        cmd.exec(con).unwrap();
    };
    for (key, opts) in sets {
        for i in 0..150 {
            vadd(&mut src, key, opts, i);
        }
    }
    // On the target: the random projection by DUMP/RESTORE (a replayed VADD would draw another matrix), the
    // others by the same VADDs in the reverse order.
    for (key, opts) in sets {
        if key == "vs:reduce" {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut src).unwrap();
            redis::cmd("RESTORE")
                .arg(key)
                .arg(0)
                .arg(dump)
                .exec(&mut tgt)
                .unwrap();
        } else {
            for i in (0..150).rev() {
                vadd(&mut tgt, key, opts, i);
            }
        }
    }
    let dump = |con: &mut redis::Connection, key: &str| -> Vec<u8> {
        redis::cmd("DUMP").arg(key).query(con).unwrap()
    };
    for (key, _) in sets {
        assert_ne!(
            dump(&mut src, key),
            dump(&mut tgt, key),
            "{key}: the graphs serialize differently"
        );
    }

    let verify = || verify_json(&source, &target);
    let (code, report) = verify();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["keys_checked"], 5, "{report}");

    // An attribute, a vector and an element each make a difference.
    redis::cmd("VSETATTR")
        .arg("vs:q8")
        .arg("e3")
        .arg("{\"i\":-3}")
        .exec(&mut tgt)
        .unwrap();
    redis::cmd("VADD")
        .arg("vs:fp32")
        .arg("VALUES")
        .arg(4)
        .arg(&[0.5, 0.5, 0.5, 0.5])
        .arg("e7")
        .arg("NOQUANT")
        .exec(&mut tgt)
        .unwrap();
    redis::cmd("VREM")
        .arg("vs:m")
        .arg("e8")
        .exec(&mut tgt)
        .unwrap();
    let (code, report) = verify();
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["value_mismatch"], 3, "{report}");
}

/// ferry's own keys are no data: a cluster source's shard leases (held in the target while the job runs), a DR
/// pair's state record and checkpoints on one side only are no difference, whatever `ignore_prefixes` holds.
#[test]
fn ferrys_own_keys_on_one_side_are_no_difference() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    for s in [&source, &target] {
        redis::cmd("SET")
            .arg("data")
            .arg("same")
            .exec(&mut s.client())
            .unwrap();
    }
    for key in [
        "ferry:lease:{ferry:0123abcd}",
        "ferry:state:{ferry}",
        "ferry:checkpoint:{ferry}",
    ] {
        redis::cmd("SET")
            .arg(key)
            .arg("held")
            .exec(&mut target.client())
            .unwrap();
    }
    let (code, report) = verify_json(&source, &target);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["keys_checked"], 1, "{report}");

    // Through the library with prefixes of the user's own: still skipped.
    let mut options = ferry::VerifyOptions::default();
    options.ignore_prefixes = vec!["tmp:".into()];
    let report = runtime()
        .block_on(ferry::verify(
            &ferry::Source::standalone(source.url()),
            &ferry::Target::standalone(target.url()),
            options,
        ))
        .unwrap();
    assert!(report.equal, "{report:?}");
}

/// `SET key value` in database `db`.
/// `PFCOUNT` rewrites the cardinality a HyperLogLog caches in its header without a keyspace event (a scan
/// source's copy keeps the older cache): two HyperLogLogs with the same registers are equal whatever their
/// caches, in dense and sparse form; one more element on one side is a difference.
#[test]
fn hyperloglogs_are_compared_by_their_registers_not_their_cached_counts() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    for s in [&source, &target] {
        let mut c = s.client();
        let mut sparse = redis::cmd("PFADD");
        sparse.arg("sparse");
        let mut dense = redis::cmd("PFADD");
        dense.arg("dense");
        for i in 0..20_000 {
            dense.arg(format!("e{i}"));
            if i < 50 {
                sparse.arg(format!("e{i}"));
            }
        }
        sparse.exec(&mut c).unwrap();
        dense.exec(&mut c).unwrap();
    }
    // Only the source counts (and caches the count).
    for key in ["sparse", "dense"] {
        redis::cmd("PFCOUNT")
            .arg(key)
            .exec(&mut source.client())
            .unwrap();
    }
    let dump = |s: &Server, key: &str| -> Vec<u8> {
        redis::cmd("DUMP").arg(key).query(&mut s.client()).unwrap()
    };
    assert_ne!(
        dump(&source, "dense"),
        dump(&target, "dense"),
        "the caches differ"
    );
    let (code, report) = verify_json(&source, &target);
    assert_eq!(code, 0, "{report}");
    redis::cmd("PFADD")
        .arg("sparse")
        .arg("one more")
        .exec(&mut target.client())
        .unwrap();
    let (code, report) = verify_json(&source, &target);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["value_mismatch"], 1, "{report}");
}

fn set_in(server: &Server, db: u32, key: &str, value: &str) {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("SET").arg(key).arg(value).exec(&mut c).unwrap();
}

/// `ferry verify --json` with these arguments: the exit code and the report.
fn verify_args(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut ferry = Ferry::spawn(["verify", "--json"].iter().chain(args));
    let code = ferry.wait();
    let report = serde_json::from_str(&ferry.stdout()).unwrap_or(serde_json::Value::Null);
    (code, report, ferry.stderr())
}

/// A job with a filter and a database map leaves keys out and renumbers databases: verify given the same
/// filter and map (flags, the job's file, or databases named in the URLs) compares what the job copies, where
/// it copies it.
#[test]
fn verify_compares_what_a_filter_selects_where_a_db_map_sends_it() {
    let source = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let target = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    set_in(&source, 0, "app:1", "a");
    set_in(&source, 0, "tmp:1", "left out by the filter");
    set_in(&source, 2, "app:2", "b");
    set_in(&target, 0, "app:1", "a");
    set_in(
        &target,
        0,
        "other:1",
        "the target's own, outside the filter",
    );
    set_in(&target, 5, "app:2", "b");
    let (s, t) = (source.url(), target.url());

    // Without the job's view the sides differ.
    let (code, r, err) = verify_args(&["--source", &s, "--target", &t]);
    assert_eq!(code, 1, "{r}\n{err}");

    // With the filter and the map as flags: equal.
    let flags = [
        "--source",
        &s,
        "--target",
        &t,
        "--allow-key-prefix",
        "app:",
        "--db-map",
        "2:5",
    ];
    let (code, r, err) = verify_args(&flags);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["keys_checked"], 2, "{r}");
    // Source database 5 is compared too: the job would copy its keys into target database 5, which holds keys.
    assert_eq!(r["dbs"], serde_json::json!([0, 2, 5]), "{r}");

    // The same from the job's file.
    let (_dir, file) = write_file(
        "job.toml",
        &format!(
            "[source]\nurl = {s:?}\n[target]\nurl = {t:?}\n[filter]\nallow_key_prefixes = [\"app:\"]\n\
             [db_map]\n\"2\" = 5\n"
        ),
    );
    let (code, r, err) = verify_args(&["-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["keys_checked"], 2, "{r}");

    // Databases named in the URLs: source database 2 against target database 5.
    let (s2, t5) = (format!("{s}/2"), format!("{t}/5"));
    let (code, r, err) = verify_args(&["--source", &s2, "--target", &t5]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(
        (r["keys_checked"].clone(), r["dbs"].clone()),
        (1.into(), serde_json::json!([2])),
        "{r}"
    );
    // Against target database 2 (empty) the key is missing.
    let (code, r, _) = verify_args(&["--source", &s2, "--target", &format!("{t}/2")]);
    assert_eq!((code, r["missing"].clone()), (1, 1.into()), "{r}");

    // A changed value and an extra key in the mapped database are found there, and named by both numbers.
    set_in(&target, 5, "app:2", "changed");
    set_in(&target, 5, "app:3", "extra");
    let (code, r, err) = verify_args(&["--source", &s2, "--target", &t5]);
    assert_eq!(code, 1, "{r}\n{err}");
    assert_eq!(
        (r["value_mismatch"].clone(), r["extra"].clone()),
        (1.into(), 1.into()),
        "{r}"
    );
    for d in r["differences"].as_array().unwrap() {
        assert_eq!(
            (d["db"].clone(), d["target_db"].clone()),
            (2.into(), 5.into()),
            "{r}"
        );
    }
    let mut text = Ferry::spawn(["verify", "--source", &s2, "--target", &t5]);
    assert_eq!(text.wait(), 1);
    assert!(
        text.stdout().contains("value   db 2->5 \"app:2\""),
        "{}",
        text.stdout()
    );

    // A target database without the source's: which source database goes there is not said.
    let (code, _, err) = verify_args(&["--source", &s, "--target", &t5]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--db-map N:5"), "{err}");
    // A database asked for that the selection leaves out: an error, not "equal" over nothing.
    let (code, _, err) = verify_args(&["--source", &s2, "--target", &t5, "--db", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("database 3 is asked for"), "{err}");
}
