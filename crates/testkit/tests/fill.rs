//! `fill` writes every intended type and encoding, deterministically, on both versions and on a cluster.

use ferry_testkit::{fill, Cluster, FillOptions, Server, ServerOptions, Target, Version};

fn encoding(server_con: &mut redis::Connection, db: u32, key: &[u8]) -> String {
    redis::cmd("SELECT").arg(db).exec(server_con).unwrap();
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(server_con)
        .unwrap()
}

#[test]
fn fill_writes_every_intended_encoding_on_every_version() {
    for v in Version::every() {
        let server = Server::start(ServerOptions::new(v)).unwrap();
        let report = fill(&Target::from(&server), &FillOptions::default()).unwrap();
        let mut con = server.client();
        for s in &report.samples {
            let got = encoding(&mut con, s.db, &s.key);
            assert_eq!(
                got,
                s.encoding,
                "{v}: {} ({}) in db {}",
                s.what,
                String::from_utf8_lossy(&s.key),
                s.db
            );
            let kind: String = redis::cmd("TYPE").arg(&s.key).query(&mut con).unwrap();
            assert_eq!(kind, s.kind);
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &report.samples {
            seen.insert(s.encoding.as_str());
        }
        // 8.2 and Valkey 9.1 have the same encodings as 7.0 (listpacks, no ziplists).
        let expected: &[&str] = if v.is_7() {
            &[
                "embstr",
                "hashtable",
                "int",
                "intset",
                "listpack",
                "quicklist",
                "raw",
                "skiplist",
                "stream",
            ]
        } else {
            &[
                "embstr",
                "hashtable",
                "int",
                "intset",
                "quicklist",
                "raw",
                "skiplist",
                "stream",
                "ziplist",
            ]
        };
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected, "{v}");

        // Every db holds what the report says, every type is present.
        for db in [0u32, 1, 2] {
            redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
            let size: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
            assert_eq!(size, report.keys_in(db), "{v} db {db}");
            for kind in ["string", "list", "set", "zset", "hash", "stream"] {
                assert!(report.count(db, kind) > 0, "{v} db {db} has no {kind}");
            }
        }
        redis::cmd("SELECT").arg(0).exec(&mut con).unwrap();

        // Streams have groups, consumers and pending entries.
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg("ferry:stream:groups")
            .arg("g1")
            .query(&mut con)
            .unwrap();
        assert!(
            matches!(pending[0], redis::Value::Int(n) if n > 0),
            "{v}: no pending entries: {pending:?}"
        );
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("ferry:stream:groups")
            .query(&mut con)
            .unwrap();
        assert_eq!(groups.len(), 2);
        let len: u64 = redis::cmd("XLEN")
            .arg("ferry:stream:emptied")
            .query(&mut con)
            .unwrap();
        assert_eq!(len, 0);

        // Expiry is set, far away.
        let ttl: i64 = redis::cmd("PTTL")
            .arg("ferry:ttl:abs:0")
            .query(&mut con)
            .unwrap();
        assert!(ttl > 86_400_000, "{v}: {ttl}");
        assert_eq!(report.keys_with_expiry, 45, "15 per db");

        // Field expiries where the server has them (Redis 8.2, Valkey 9.1), vector sets on Redis 8.2.
        if v.field_expiry() {
            assert_eq!(report.hashes_with_field_expiry.len(), 12, "{v}: 4 per db");
            let times: Vec<i64> = redis::cmd("HPEXPIRETIME")
                .arg("ferry:hash:fieldttl:small:0")
                .arg("FIELDS")
                .arg(2)
                .arg("field0")
                .arg("field1")
                .query(&mut con)
                .unwrap();
            assert!(
                times[0] > 4_000_000_000_000 && times[1] == -1,
                "{v}: {times:?}"
            );
        } else {
            assert!(report.hashes_with_field_expiry.is_empty());
        }
        if v.vector_sets() {
            assert_eq!(report.module_keys.len(), 3, "{v}: one per db");
            let card: u64 = redis::cmd("VCARD")
                .arg("ferry:vset:0")
                .query(&mut con)
                .unwrap();
            assert_eq!(card, 20);
        } else {
            assert!(report.module_keys.is_empty());
        }

        if v.is_7() {
            assert_eq!(report.function_libraries, vec!["ferry_lib_1".to_string()]);
            let echoed: String = redis::cmd("FCALL")
                .arg("ferry_lib_1_echo")
                .arg(0)
                .arg("hi")
                .query(&mut con)
                .unwrap();
            assert_eq!(echoed, "hi");
        } else {
            assert!(report.function_libraries.is_empty());
        }

        if v.is_7() {
            // The big list element sits in a PLAIN quicklist node (printed by the server to its stdout, which
            // is flushed when it shuts down).
            redis::cmd("DEBUG")
                .arg("QUICKLIST")
                .arg("ferry:list:bigelem")
                .arg(1)
                .exec(&mut con)
                .unwrap();
        }

        // Same seed, same data: a second server filled alike has identical digests.
        let again = Server::start(ServerOptions::new(v)).unwrap();
        let report2 = fill(&Target::from(&again), &FillOptions::default()).unwrap();
        assert_eq!(report, report2);
        let mut con2 = again.client();
        for db in [0u32, 1, 2] {
            redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
            redis::cmd("SELECT").arg(db).exec(&mut con2).unwrap();
            let d1: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut con).unwrap();
            let d2: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut con2).unwrap();
            assert_eq!(
                d1, d2,
                "{v} db {db} differs between two fills with the same seed"
            );
        }
        if v.is_7() {
            let mut server = server;
            server.stop();
            assert!(
                server.log().contains("container : PLAIN"),
                "no plain node in: {}",
                server.log_tail(40)
            );
        }
    }
}

#[test]
fn scale_grows_the_dataset_and_keeps_the_encodings() {
    let server = Server::start(ServerOptions::new(Version::V6_2)).unwrap();
    let small = fill(
        &Target::from(&server),
        &FillOptions::seed(5).dbs(vec![0]).prefix("s1"),
    )
    .unwrap();
    let big = fill(
        &Target::from(&server),
        &FillOptions::seed(5).dbs(vec![0]).prefix("s3").scale(3),
    )
    .unwrap();
    assert!(
        big.total_keys > 2 * small.total_keys,
        "{} vs {}",
        big.total_keys,
        small.total_keys
    );
    let mut con = server.client();
    for s in &big.samples {
        let got: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&s.key)
            .query(&mut con)
            .unwrap();
        assert_eq!(got, s.encoding, "{}", s.what);
    }
    let size: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, small.total_keys + big.total_keys);
}

#[test]
fn fill_on_a_cluster_routes_keys_to_slot_owners() {
    let cluster = Cluster::start(Version::V7_0).unwrap();
    let report = fill(&cluster.target(), &FillOptions::default()).unwrap();
    assert_eq!(report.keys.keys().copied().collect::<Vec<_>>(), vec![0]);
    let mut total = 0;
    for m in cluster.masters() {
        let mut con = m.client();
        let n: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert!(n > 0, "master {} got no keys", m.addr());
        total += n;
        let libs: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query(&mut con).unwrap();
        assert_eq!(libs.len(), 1, "function library missing on {}", m.addr());
    }
    assert_eq!(total, report.total_keys);
}
