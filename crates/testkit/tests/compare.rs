//! `compare` finds equal datasets equal (after replication, across versions, cluster vs standalone) and names
//! planted differences readably.

use std::time::Duration;

/// Two servers filled separately got their relative TTLs at slightly different moments.
const INDEPENDENT: Duration = Duration::from_secs(5);

use ferry_testkit::{
    compare, fill, Cluster, CompareOptions, DifferenceKind, FillOptions, ReplicaSet, Server,
    ServerOptions, Target, ValueCheck, Version,
};

#[test]
fn replica_equals_master_after_replication_on_both_versions() {
    for v in Version::all() {
        let set = ReplicaSet::start(v, 1).unwrap();
        let filled = fill(&set.target(), &FillOptions::default()).unwrap();
        set.wait_synced(Duration::from_secs(30)).unwrap();
        let replica = Target::from(&set.replicas[0]);
        let report = compare(&set.target(), &replica, &CompareOptions::default()).unwrap();
        assert!(report.is_equal(), "{v}: {report}");
        assert_eq!(report.keys_compared, filled.total_keys);
        assert_eq!(report.dbs, vec![0, 1, 2]);
        assert_eq!(report.value_check, "digest");
        let by_values = compare(
            &set.target(),
            &replica,
            &CompareOptions::default().values(ValueCheck::Values),
        )
        .unwrap();
        assert!(by_values.is_equal(), "{v}: {by_values}");
        assert_eq!(by_values.value_check, "values");
    }
}

#[test]
fn planted_differences_are_named_readably() {
    let a = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let b = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let opts = FillOptions::seed(7);
    fill(&Target::from(&a), &opts).unwrap();
    fill(&Target::from(&b), &opts).unwrap();
    let (ta, tb) = (Target::from(&a), Target::from(&b));
    let independent = CompareOptions::default().expiry_tolerance(INDEPENDENT);
    assert!(compare(&ta, &tb, &independent).unwrap().is_equal());

    let mut con = b.client();
    redis::cmd("SET")
        .arg("ferry:str:short:0")
        .arg("planted")
        .exec(&mut con)
        .unwrap();
    redis::cmd("DEL")
        .arg("ferry:hash:small:1")
        .exec(&mut con)
        .unwrap();
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg("ferry:ttl:abs:0")
        .query(&mut con)
        .unwrap();
    redis::cmd("PEXPIREAT")
        .arg("ferry:ttl:abs:0")
        .arg(at + 60_000)
        .exec(&mut con)
        .unwrap();
    redis::cmd("PERSIST")
        .arg("ferry:ttl:rel:1")
        .exec(&mut con)
        .unwrap();
    redis::cmd("HSET")
        .arg("ferry:hash:large")
        .arg("f0-0")
        .arg("changed")
        .exec(&mut con)
        .unwrap();
    redis::cmd("ZADD")
        .arg("ferry:zset:large")
        .arg("XX")
        .arg(42.5)
        .arg(first_zset_member(&mut con))
        .exec(&mut con)
        .unwrap();
    redis::cmd("SELECT").arg(2).exec(&mut con).unwrap();
    redis::cmd("SET")
        .arg("extra:in:b")
        .arg("1")
        .exec(&mut con)
        .unwrap();
    redis::cmd("DEL")
        .arg("ferry:list:small:0")
        .exec(&mut con)
        .unwrap();
    redis::cmd("SADD")
        .arg("ferry:list:small:0")
        .arg("x")
        .exec(&mut con)
        .unwrap();
    redis::cmd("SELECT").arg(0).exec(&mut con).unwrap();
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("ferry:stream:groups")
        .arg("g2")
        .exec(&mut con)
        .unwrap();
    redis::cmd("FUNCTION").arg("FLUSH").exec(&mut con).unwrap();

    for check in [ValueCheck::Auto, ValueCheck::Values] {
        let report = compare(&ta, &tb, &independent.clone().values(check)).unwrap();
        let text = report.to_string();
        assert!(!report.is_equal());
        assert_eq!(report.total_differences, 10, "{text}");
        let has = |kind: DifferenceKind, db: Option<u32>, key: Option<&str>, detail: &str| {
            assert!(
                report.differences.iter().any(|d| d.kind == kind
                    && d.db == db
                    && d.key.as_deref() == key.map(str::as_bytes)
                    && d.detail.contains(detail)),
                "missing {kind:?} {key:?} {detail:?} in:\n{text}"
            );
        };
        has(
            DifferenceKind::Value,
            Some(0),
            Some("ferry:str:short:0"),
            "vs b \"planted\"",
        );
        has(
            DifferenceKind::OnlyInA,
            Some(0),
            Some("ferry:hash:small:1"),
            "",
        );
        has(
            DifferenceKind::Expiry,
            Some(0),
            Some("ferry:ttl:abs:0"),
            &format!("a expires at {at} ms, b expires at {} ms", at + 60_000),
        );
        has(
            DifferenceKind::Expiry,
            Some(0),
            Some("ferry:ttl:rel:1"),
            "b no expiry",
        );
        has(
            DifferenceKind::Value,
            Some(0),
            Some("ferry:hash:large"),
            "field \"f0-0\"",
        );
        has(
            DifferenceKind::Value,
            Some(0),
            Some("ferry:zset:large"),
            "vs b 42.5",
        );
        has(DifferenceKind::OnlyInB, Some(2), Some("extra:in:b"), "");
        has(
            DifferenceKind::Type,
            Some(2),
            Some("ferry:list:small:0"),
            "a is list, b is set",
        );
        has(
            DifferenceKind::StreamState,
            Some(0),
            Some("ferry:stream:groups"),
            "group g2",
        );
        has(
            DifferenceKind::Functions,
            None,
            None,
            "library ferry_lib_7 only in a",
        );
        assert!(
            text.contains("db 0 key \"ferry:str:short:0\" value differs"),
            "{text}"
        );
    }

    let capped = compare(&ta, &tb, &independent.clone().max_differences(3)).unwrap();
    assert_eq!(capped.differences.len(), 3);
    assert_eq!(capped.total_differences, 10);
    assert!(capped.to_string().contains("... and 7 more"), "{capped}");
}

fn first_zset_member(con: &mut redis::Connection) -> Vec<u8> {
    let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg("ferry:zset:large")
        .arg(100)
        .arg(100)
        .query(con)
        .unwrap();
    v.into_iter().next().unwrap()
}

#[test]
fn same_fill_on_7_0_and_6_2_compares_equal_by_values_and_digest() {
    let a = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let b = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    fill(&Target::from(&a), &FillOptions::default()).unwrap();
    fill(&Target::from(&b), &FillOptions::default()).unwrap();
    for check in [ValueCheck::Values, ValueCheck::Digest] {
        let opts = CompareOptions::default()
            .values(check)
            .functions(false)
            .expiry_tolerance(INDEPENDENT);
        let report = compare(&Target::from(&a), &Target::from(&b), &opts).unwrap();
        assert!(report.is_equal(), "{check:?}: {report}");
    }
    // 6.2 has no functions: with functions compared, the library is reported missing on b.
    let report = compare(
        &Target::from(&a),
        &Target::from(&b),
        &CompareOptions::default().expiry_tolerance(INDEPENDENT),
    )
    .unwrap();
    assert_eq!(report.total_differences, 1, "{report}");
    assert_eq!(report.differences[0].kind, DifferenceKind::Functions);

    // A TTL difference beyond the tolerance is found across versions too.
    let mut con = b.client();
    redis::cmd("PEXPIRE")
        .arg("ferry:ttl:rel:0")
        .arg(1_000_000_000u64)
        .exec(&mut con)
        .unwrap();
    let report = compare(
        &Target::from(&a),
        &Target::from(&b),
        &CompareOptions::default()
            .functions(false)
            .expiry_tolerance(INDEPENDENT),
    )
    .unwrap();
    assert_eq!(report.total_differences, 1, "{report}");
    assert_eq!(report.differences[0].kind, DifferenceKind::Expiry);
}

#[test]
fn cluster_compares_equal_to_standalone_with_same_data_and_finds_a_missing_key() {
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let single = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
    let opts = FillOptions::seed(3).dbs(vec![0]);
    let filled = fill(&cluster.target(), &opts).unwrap();
    fill(&Target::from(&single), &opts).unwrap();
    let opts = CompareOptions::default().expiry_tolerance(INDEPENDENT);
    let report = compare(&cluster.target(), &Target::from(&single), &opts).unwrap();
    assert!(report.is_equal(), "{report}");
    assert_eq!(report.keys_compared, filled.total_keys);

    // Keys under an ignored prefix (a sync's checkpoints) do not count.
    let mut single_con = single.client();
    redis::cmd("SET")
        .arg("ferry:checkpoint:{x}")
        .arg("replid:offset")
        .exec(&mut single_con)
        .unwrap();
    let ignoring = opts.clone().ignore_prefix("ferry:checkpoint:");
    assert!(
        compare(&cluster.target(), &Target::from(&single), &ignoring)
            .unwrap()
            .is_equal()
    );
    let report = compare(&cluster.target(), &Target::from(&single), &opts).unwrap();
    assert_eq!(report.total_differences, 1, "{report}");
    let opts = ignoring;

    // Databases other than 0 exist only on the standalone side.
    redis::cmd("SELECT").arg(1).exec(&mut single_con).unwrap();
    redis::cmd("SET")
        .arg("only:in:db1")
        .arg("x")
        .exec(&mut single_con)
        .unwrap();
    let report = compare(&cluster.target(), &Target::from(&single), &opts).unwrap();
    assert_eq!(report.total_differences, 1, "{report}");
    assert_eq!(
        report.differences[0].to_string(),
        "db 1 key \"only:in:db1\" only in b"
    );
    redis::cmd("DEL")
        .arg("only:in:db1")
        .exec(&mut single_con)
        .unwrap();

    let mut con = cluster.cluster_client().unwrap();
    redis::cmd("DEL")
        .arg("ferry:set:int32:0")
        .exec(&mut con)
        .unwrap();
    let report = compare(&cluster.target(), &Target::from(&single), &opts).unwrap();
    assert_eq!(report.total_differences, 1, "{report}");
    assert_eq!(report.differences[0].kind, DifferenceKind::OnlyInB);
    assert_eq!(
        report.differences[0].key.as_deref(),
        Some(&b"ferry:set:int32:0"[..])
    );
}

#[test]
fn compare_across_families_reads_values_and_field_expiries() {
    let redis82 = Server::start(ServerOptions::new(Version::V8_2)).unwrap();
    let valkey = Server::start(ServerOptions::new(Version::V9_1)).unwrap();
    let a = Target::from(&redis82);
    let b = Target::from(&valkey);
    let opts = FillOptions::seed(7).dbs([0u32]);
    let ra = fill(&a, &opts).unwrap();
    let rb = fill(&b, &opts).unwrap();
    assert_eq!(ra.hashes_with_field_expiry, rb.hashes_with_field_expiry);
    // Relative TTLs were set at two moments: allow for it.
    let copts = CompareOptions::default().expiry_tolerance(std::time::Duration::from_secs(60));
    let report = compare(&a, &b, &copts).unwrap();
    assert_eq!(
        report.value_check, "values",
        "digests differ across families"
    );
    // The vector set exists on Redis 8.2 only; everything else is equal by value, field expiries included.
    assert_eq!(report.total_differences, 1, "{report}");
    assert_eq!(report.differences[0].kind, DifferenceKind::OnlyInA);
    assert_eq!(
        report.differences[0].key.as_deref(),
        Some(&b"ferry:vset:0"[..])
    );

    // A field expiry changed on one side is a value difference naming the key.
    let mut c = valkey.client();
    redis::cmd("HPEXPIREAT")
        .arg("ferry:hash:fieldttl:small:0")
        .arg(4_200_000_000_000u64)
        .arg("FIELDS")
        .arg(1)
        .arg("field1")
        .exec(&mut c)
        .unwrap();
    let report = compare(&a, &b, &copts).unwrap();
    assert_eq!(report.total_differences, 2, "{report}");
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.kind == DifferenceKind::Value
                && d.key.as_deref() == Some(&b"ferry:hash:fieldttl:small:0"[..])
                && d.detail.contains("field expires at")),
        "{report}"
    );
}
