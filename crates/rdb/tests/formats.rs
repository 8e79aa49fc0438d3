//! Formats outside the main line, built byte by byte from the servers' own layouts: the pre-GA function
//! opcode 246 (Redis 7.0 RC1/RC2), module values of type 6 (Redis 4.0 RCs), Valkey 9's slot-import opcode,
//! and Valkey 9's own hash with field expiries written and read back.

use ferry_rdb::encode::{put_len, put_string};
use ferry_rdb::{
    decode_dump, encode_dump, loads_version, reencode_for, HashField, Item, ParserOptions, Reader,
    Value,
};

/// A file: magic, `body`, EOF and a zero (disabled) checksum.
fn file(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut f = magic.to_vec();
    f.extend_from_slice(body);
    f.push(0xff);
    f.extend_from_slice(&[0u8; 8]);
    f
}

fn items(bytes: &[u8]) -> Result<Vec<Item>, ferry_rdb::Error> {
    Reader::new(bytes, ParserOptions::default()).collect()
}

fn string_entry(body: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    body.push(0);
    put_string(body, key);
    put_string(body, value);
}

#[test]
fn pre_ga_function_opcode_246_becomes_loadable_library_code() {
    let mut body = vec![0xfe, 0];
    body.push(246);
    put_string(&mut body, b"mylib");
    put_string(&mut body, b"LUA");
    put_len(&mut body, 1);
    put_string(&mut body, b"a description");
    put_string(
        &mut body,
        b"redis.register_function('f', function() return 1 end)",
    );
    string_entry(&mut body, b"k", b"v");
    let got = items(&file(b"REDIS0010", &body)).unwrap();
    let code = got
        .iter()
        .find_map(|i| match i {
            Item::Function { code } => Some(code.clone()),
            _ => None,
        })
        .expect("a function item");
    assert_eq!(
        &code[..],
        &b"#!lua name=mylib\nredis.register_function('f', function() return 1 end)"[..]
    );
    assert!(got
        .iter()
        .any(|i| matches!(i, Item::Entry(e) if &e.key[..] == b"k")));

    // Without a description.
    let mut body = vec![246];
    put_string(&mut body, b"l2");
    put_string(&mut body, b"LUA");
    put_len(&mut body, 0);
    put_string(&mut body, b"return 1");
    let got = items(&file(b"REDIS0010", &body)).unwrap();
    assert!(got
        .iter()
        .any(|i| matches!(i, Item::Function { code } if &code[..] == b"#!lua name=l2\nreturn 1")));
}

#[test]
fn pre_ga_function_with_a_bad_description_flag_is_a_clean_error() {
    let mut body = vec![246];
    put_string(&mut body, b"l");
    put_string(&mut body, b"LUA");
    put_len(&mut body, 7);
    let err = items(&file(b"REDIS0010", &body)).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(err.to_string().contains("description flag"), "{err}");
}

/// A module type 6 value: module id, then typed opcodes up to EOF (0).
fn module_value_6(opcodes: &[u8]) -> Vec<u8> {
    let mut body = vec![6];
    put_string(&mut body, b"mod");
    put_len(&mut body, 0x1234_5678_9abc_0001);
    body.extend_from_slice(opcodes);
    body
}

#[test]
fn module_type_6_with_typed_opcodes_is_skipped_and_kept_raw() {
    let mut ops = Vec::new();
    put_len(&mut ops, 2); // unsigned integer
    put_len(&mut ops, 42);
    put_len(&mut ops, 5); // string
    put_string(&mut ops, b"payload");
    put_len(&mut ops, 4); // double
    ops.extend_from_slice(&1.5f64.to_le_bytes());
    put_len(&mut ops, 0); // EOF
    let mut body = module_value_6(&ops);
    string_entry(&mut body, b"after", b"1");
    let got = items(&file(b"REDIS0008", &body)).unwrap();
    let entries: Vec<_> = got
        .iter()
        .filter_map(|i| match i {
            Item::Entry(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].rdb_type, 6);
    match entries[0].value.as_ref().unwrap() {
        Value::Module(m) => {
            assert_eq!(m.module_id, 0x1234_5678_9abc_0001);
            assert_eq!(&m.payload[..], &ops[..]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ferry_rdb::type_name_of(6), "module");
    assert_eq!(&entries[1].key[..], b"after");
}

#[test]
fn module_type_6_that_cannot_be_skipped_is_an_unsupported_error_naming_the_key() {
    // Opcode 9 does not exist: the value was written without annotations.
    let body = module_value_6(&[9, 1, 2, 3]);
    let err = items(&file(b"REDIS0008", &body)).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("type 6") && text.contains("\"mod\""),
        "{text}"
    );
}

#[test]
fn valkey_slot_import_opcode_is_skipped_but_stays_unsupported_in_a_redis_file() {
    let mut body = vec![243];
    put_string(&mut body, &[b'a'; 40]);
    put_len(&mut body, 2);
    for (a, b) in [(0u64, 100u64), (5000, 5460)] {
        put_len(&mut body, a);
        put_len(&mut body, b);
    }
    body.extend_from_slice(&[0xfe, 0]);
    string_entry(&mut body, b"k", b"v");
    let got = items(&file(b"VALKEY080", &body)).unwrap();
    assert!(got
        .iter()
        .any(|i| matches!(i, Item::Entry(e) if &e.key[..] == b"k")));
    let err = items(&file(b"REDIS0012", &body)).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
}

fn ttl_hash() -> Value {
    Value::Hash(vec![
        HashField {
            field: "a".into(),
            value: "1".into(),
            expire_at_ms: Some(4_102_444_800_123),
        },
        HashField::new("b", "two"),
    ])
}

#[test]
fn field_expiry_hashes_are_written_as_valkey_hash_2_for_80_and_as_type_24_for_12() {
    let v = ttl_hash();
    let valkey = encode_dump(&v, 80).unwrap();
    assert_eq!(valkey[0], 22);
    let (back, ver) = decode_dump(&valkey).unwrap();
    assert_eq!((back, ver), (v.clone(), 80));
    let redis = encode_dump(&v, 12).unwrap();
    assert_eq!(redis[0], 24);
    // Each converts into the other family's form.
    let split = ferry_rdb::split_dump(&redis).unwrap();
    let for_valkey = reencode_for(split.serialized, 12, 80).unwrap();
    assert_eq!(for_valkey[0], 22);
    assert_eq!(decode_dump(&for_valkey).unwrap().0, v);
    let split = ferry_rdb::split_dump(&valkey).unwrap();
    let for_redis = reencode_for(split.serialized, 80, 12).unwrap();
    assert_eq!(decode_dump(&for_redis).unwrap(), (v.clone(), 12));
    // Below Redis 7.4 there is no form for field expiries; without them the hash fits.
    assert!(reencode_for(split.serialized, 80, 10).is_err());
    let mut plain = v.clone();
    assert_eq!(plain.drop_field_expiries(), 1);
    assert!(!plain.has_field_expiry());
    assert_eq!(
        decode_dump(&encode_dump(&plain, 10).unwrap()).unwrap().0,
        plain
    );
}

#[test]
fn valkey_targets_take_11_and_80_but_not_redis_12() {
    assert!(loads_version(80, 11));
    assert!(loads_version(80, 80));
    assert!(!loads_version(80, 12));
    assert!(loads_version(12, 11));
    assert!(!loads_version(12, 80));
    assert!(!loads_version(10, 11));
    // A Redis 8.2 payload without field expiries goes to Valkey as RDB 11.
    let v = Value::List(vec!["a".into(), "b".into()]);
    let ser = ferry_rdb::encode_value(&v, 12).unwrap();
    let out = reencode_for(&ser, 12, 80).unwrap();
    assert_eq!(decode_dump(&out).unwrap(), (v, 11));
}

#[test]
fn a_valkey_file_written_by_the_writer_reads_back_with_its_magic() {
    let bytes = ferry_rdb::Writer::write_to_vec(80, |w| {
        w.select_db(0)?;
        w.write_entry(b"h", &ttl_hash(), None)
    })
    .unwrap();
    assert!(bytes.starts_with(b"VALKEY080"));
    let got = items(&bytes).unwrap();
    assert!(got
        .iter()
        .any(|i| matches!(i, Item::Entry(e) if e.value.as_ref() == Some(&ttl_hash()))));
}

#[test]
fn a_stream_with_a_huge_pel_is_read_one_pending_entry_at_a_time() {
    use ferry_rdb::{Consumer, ConsumerGroup, Parser, PendingEntry, Stream, StreamEntry, StreamId};
    const PENDING: u64 = 50_000;
    let ids: Vec<StreamId> = (1..=PENDING).map(|i| StreamId::new(i, 0)).collect();
    let stream = Stream {
        entries: ids
            .iter()
            .take(3)
            .map(|&id| StreamEntry {
                id,
                fields: vec![("f".into(), "v".into())],
            })
            .collect(),
        length: 3,
        last_id: StreamId::new(PENDING, 0),
        entries_added: PENDING,
        groups: vec![ConsumerGroup {
            name: "g".into(),
            last_id: StreamId::new(PENDING, 0),
            entries_read: Some(PENDING),
            pending: ids
                .iter()
                .map(|&id| PendingEntry {
                    id,
                    delivery_time_ms: 1_700_000_000_000,
                    delivery_count: 1,
                })
                .collect(),
            consumers: vec![Consumer {
                name: "c".into(),
                seen_time_ms: 1_700_000_000_000,
                active_time_ms: Some(1_700_000_000_000),
                pending: ids.clone(),
            }],
        }],
        ..Default::default()
    };
    let value = Value::Stream(Box::new(stream));
    let bytes = ferry_rdb::Writer::write_to_vec(11, |w| {
        w.select_db(0)?;
        w.write_entry(b"s", &value, None)
    })
    .unwrap();
    assert!(bytes.len() > 1_500_000, "{}", bytes.len());
    for big in [None, Some(4096)] {
        let mut p = Parser::new(ParserOptions {
            big_value_bytes: big,
            ..ParserOptions::default()
        });
        let mut most_buffered = 0;
        let mut pending = 0usize;
        for chunk in bytes.chunks(1024) {
            p.feed(chunk);
            while let Some(item) = p.next_item().unwrap() {
                match item {
                    Item::Entry(e) => match e.value {
                        Some(Value::Stream(s)) => pending += s.groups[0].pending.len(),
                        other => panic!("{other:?}"),
                    },
                    Item::ValueChunk(Value::Stream(s)) => {
                        pending += s.groups.iter().map(|g| g.pending.len()).sum::<usize>()
                    }
                    _ => {}
                }
            }
            most_buffered = most_buffered.max(p.remaining().len());
        }
        p.finish().unwrap();
        assert_eq!(pending as u64, PENDING, "big {big:?}");
        // Never more than one fed chunk and one unit: the metadata is not buffered whole.
        assert!(
            most_buffered < 2048,
            "buffered up to {most_buffered} bytes (big {big:?})"
        );
    }
}
