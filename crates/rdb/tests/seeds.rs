//! The fuzz seeds saved by Redis 8.2 and Valkey 9.1 (`fuzz/seeds`, made with `SAVE` and `DUMP` from a small
//! dataset of every type: field-expiry hashes as listpack and hashtable, a vector set on 8.2, a stream with a
//! group, a function library) decode to what was written.

use std::path::PathBuf;

use ferry_rdb::{Checksum, Item, ParserOptions, Reader, Value};

fn seeds(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(dir)
}

fn entries(file: &str) -> (Vec<Item>, Vec<ferry_rdb::Entry>) {
    let bytes = std::fs::read(seeds("rdb_file").join(file)).unwrap();
    // A fuzz input: chunk size and mode bytes, then the file.
    let items: Vec<Item> = Reader::new(&bytes[2..], ParserOptions::default())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(matches!(
        items.last(),
        Some(Item::Eof {
            checksum: Checksum::Verified(_)
        })
    ));
    let entries = items
        .iter()
        .filter_map(|i| match i {
            Item::Entry(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    (items, entries)
}

fn check(file: &str, header: (u32, ferry_rdb::Flavor)) {
    let (items, entries) = entries(file);
    assert!(
        matches!(items[0], Item::Header { version, flavor } if (version, flavor) == header),
        "{:?}",
        items[0]
    );
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::Function { code } if code.starts_with(b"#!lua name=seedlib"))));
    let get = |k: &str| {
        entries
            .iter()
            .find(|e| &e.key[..] == k.as_bytes())
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{file}: no {k}"))
    };
    for (k, field, at) in [
        ("h:lp", "a", 4_102_444_800_123u64),
        ("h:ht", "f1", 4_102_444_800_456),
    ] {
        let Value::Hash(h) = get(k) else {
            panic!("{k}")
        };
        let f = h.iter().find(|f| &f.field[..] == field.as_bytes()).unwrap();
        assert_eq!(f.expire_at_ms, Some(at), "{file} {k}");
        assert_eq!(
            h.iter().filter(|f| f.expire_at_ms.is_some()).count(),
            if k == "h:lp" { 1 } else { 2 }
        );
    }
    assert_eq!(get("s:int"), Value::String("12345".into()));
    assert_eq!(get("z").len(), 4);
    let Value::Stream(s) = get("st") else {
        panic!("st")
    };
    assert_eq!(
        (s.entries.len(), s.groups.len(), s.groups[0].pending.len()),
        (2, 1, 1)
    );
    assert!(entries.iter().any(|e| e.db == 1 && &e.key[..] == b"other"));
}

#[test]
fn redis_8_2_seed_file_decodes_with_field_expiries_and_a_vector_set() {
    check("redis-8.2-mode0.bin", (12, ferry_rdb::Flavor::Redis));
    let (_, entries) = entries("redis-8.2-mode0.bin");
    let vs = entries.iter().find(|e| &e.key[..] == b"vs").unwrap();
    assert!(matches!(vs.value.as_ref().unwrap(), Value::Module(m) if m.name == "vectorset"));
}

#[test]
fn valkey_9_1_seed_file_decodes_with_its_own_hash_type() {
    check("valkey-9.1-mode0.bin", (80, ferry_rdb::Flavor::Valkey));
}

#[test]
fn every_dump_seed_decodes_as_its_server_wrote_it() {
    let mut n = 0;
    for entry in std::fs::read_dir(seeds("rdb_dump")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let valkey = name.starts_with("valkey");
        let v = ferry_rdb::decode_value(&bytes, valkey).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.contains("h-") {
            assert!(v.has_field_expiry(), "{name}");
        }
        n += 1;
    }
    assert_eq!(n, 21);
}
