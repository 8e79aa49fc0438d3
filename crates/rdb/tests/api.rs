//! Library behaviour without servers: chunked big values, JSON lines, DUMP helpers, the writer for
//! every version.

use bytes::Bytes;
use ferry_rdb::{
    json, Consumer, ConsumerGroup, HashField, Item, ParserOptions, PendingEntry, Reader, Stream,
    StreamEntry, StreamId, Value, ValueMode, Writer,
};

fn sample_values() -> Vec<(Vec<u8>, Value)> {
    let big_list = Value::List(
        (0..5000)
            .map(|i| Bytes::from(format!("element-{i}")))
            .collect(),
    );
    let big_hash = Value::Hash(
        (0..3000)
            .map(|i| HashField::new(format!("f{i}"), format!("value-{i}")))
            .collect(),
    );
    let big_zset = Value::SortedSet(
        (0..3000)
            .map(|i| (Bytes::from(format!("m{i}")), i as f64 / 3.0))
            .collect(),
    );
    let big_set = Value::Set((0..3000).map(|i| Bytes::from(format!("s{i}"))).collect());
    let stream = Value::Stream(Box::new(Stream {
        entries: (0..700)
            .map(|i| StreamEntry {
                id: StreamId::new(1000 + i, i % 3),
                fields: if i % 5 == 0 {
                    vec![("other".into(), Bytes::from(format!("{i}")))]
                } else {
                    vec![
                        ("a".into(), Bytes::from(format!("{i}"))),
                        ("b".into(), "x".into()),
                    ]
                },
            })
            .collect(),
        length: 700,
        last_id: StreamId::new(1699, 0),
        first_id: StreamId::new(1000, 0),
        max_deleted_id: StreamId::default(),
        entries_added: 700,
        groups: vec![ConsumerGroup {
            name: "g".into(),
            last_id: StreamId::new(1001, 1),
            entries_read: Some(2),
            pending: vec![PendingEntry {
                id: StreamId::new(1001, 1),
                delivery_time_ms: 5,
                delivery_count: 2,
            }],
            consumers: vec![Consumer {
                name: "c".into(),
                seen_time_ms: 5,
                active_time_ms: Some(5),
                pending: vec![StreamId::new(1001, 1)],
            }],
        }],
        idmp: None,
    }));
    vec![
        (b"s".to_vec(), Value::String("hello".into())),
        (b"n".to_vec(), Value::String("-12345".into())),
        (b"bl".to_vec(), big_list),
        (b"bh".to_vec(), big_hash),
        (b"bz".to_vec(), big_zset),
        (b"bs".to_vec(), big_set),
        (b"st".to_vec(), stream),
        (
            b"small".to_vec(),
            Value::List(vec!["1".into(), "two".into()]),
        ),
    ]
}

fn write_file(version: u32, values: &[(Vec<u8>, Value)]) -> Vec<u8> {
    Writer::write_to_vec(version, |w| {
        w.select_db(0)?;
        for (k, v) in values {
            if matches!(v, Value::Stream(_)) && version < 9 {
                continue;
            }
            w.write_entry(
                k,
                v,
                Some(if version >= 3 {
                    4_102_444_800_000
                } else {
                    2_000_000_000_000
                }),
            )?;
        }
        Ok(())
    })
    .unwrap()
}

fn merge(into: &mut Option<Value>, chunk: Value) {
    match (into, chunk) {
        (slot @ None, c) => *slot = Some(c),
        (Some(Value::List(a)), Value::List(b)) | (Some(Value::Set(a)), Value::Set(b)) => {
            a.extend(b)
        }
        (Some(Value::Hash(a)), Value::Hash(b)) => a.extend(b),
        (Some(Value::SortedSet(a)), Value::SortedSet(b)) => a.extend(b),
        (Some(Value::Stream(a)), Value::Stream(b)) => {
            let mut b = *b;
            let mut entries = std::mem::take(&mut a.entries);
            entries.append(&mut b.entries);
            b.entries = entries;
            **a = b;
        }
        (a, b) => panic!("chunk of another type: {a:?} / {b:?}"),
    }
}

#[test]
fn big_values_arrive_in_chunks_that_reassemble_to_the_whole_value() {
    for version in [7u32, 9, 10, 11] {
        let file = write_file(version, &sample_values());
        let whole: Vec<Item> = Reader::new(&file[..], ParserOptions::default())
            .collect::<Result<_, _>>()
            .unwrap();
        let opts = ParserOptions {
            mode: ValueMode::Raw,
            big_value_bytes: Some(4096),
            ..Default::default()
        };
        let chunked: Vec<Item> = Reader::new(&file[..], opts)
            .collect::<Result<_, _>>()
            .unwrap();
        let mut rebuilt = Vec::new();
        let mut current: Option<(Bytes, Option<Value>)> = None;
        let mut chunks = 0;
        for it in chunked {
            match it {
                Item::EntryStart(e) => {
                    assert!(e.value.is_none() && e.raw.is_none());
                    current = Some((e.key, None));
                }
                Item::ValueChunk(c) => {
                    chunks += 1;
                    merge(&mut current.as_mut().unwrap().1, c);
                }
                Item::EntryEnd => {
                    let (k, v) = current.take().unwrap();
                    rebuilt.push((k, v.unwrap()));
                }
                Item::Entry(e) => {
                    let v = ferry_rdb::decode_value(e.raw.as_ref().unwrap(), false).unwrap();
                    rebuilt.push((e.key, v));
                }
                _ => {}
            }
        }
        assert!(chunks > 10, "v{version}: {chunks} chunks");
        let want: Vec<(Bytes, Value)> = whole
            .into_iter()
            .filter_map(|i| {
                if let Item::Entry(e) = i {
                    Some((e.key, e.value.unwrap()))
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(rebuilt, want, "v{version}");
    }
}

#[test]
fn the_writer_produces_files_every_version_reads_back() {
    let values = sample_values();
    for version in 1..=ferry_rdb::MAX_RDB_VERSION {
        let file = write_file(version, &values);
        let items: Vec<Item> = Reader::new(&file[..], ParserOptions::default())
            .collect::<Result<_, _>>()
            .unwrap();
        let got: Vec<(Vec<u8>, Value)> = items
            .into_iter()
            .filter_map(|i| {
                if let Item::Entry(e) = i {
                    Some((e.key.to_vec(), e.value.unwrap()))
                } else {
                    None
                }
            })
            .collect();
        let want: Vec<&(Vec<u8>, Value)> = values
            .iter()
            .filter(|(_, v)| version >= 9 || !matches!(v, Value::Stream(_)))
            .collect();
        assert_eq!(got.len(), want.len(), "v{version}");
        for ((gk, gv), (wk, wv)) in got.iter().zip(want) {
            assert_eq!(gk, wk);
            match (gv, wv) {
                // Compact set and zset encodings store members in their own order.
                (Value::Set(a), Value::Set(b)) => {
                    let (mut a, mut b) = (a.clone(), b.clone());
                    a.sort();
                    b.sort();
                    assert_eq!(a, b, "v{version}");
                }
                (Value::SortedSet(a), Value::SortedSet(b)) => {
                    let (mut a, mut b) = (a.clone(), b.clone());
                    a.sort_by(|x, y| x.0.cmp(&y.0));
                    b.sort_by(|x, y| x.0.cmp(&y.0));
                    assert_eq!(a, b, "v{version}");
                }
                (Value::Stream(a), Value::Stream(b)) => {
                    assert_eq!(a.entries, b.entries, "v{version}");
                    assert_eq!(a.groups.len(), b.groups.len());
                    assert_eq!(a.groups[0].pending, b.groups[0].pending);
                }
                (a, b) => assert_eq!(a, b, "v{version} key {:?}", String::from_utf8_lossy(gk)),
            }
        }
    }
}

#[test]
fn hashes_with_field_ttls_need_rdb_12() {
    let v = Value::Hash(vec![HashField {
        field: "f".into(),
        value: "v".into(),
        expire_at_ms: Some(4_102_444_800_000),
    }]);
    let e = ferry_rdb::encode_value(&v, 11).unwrap_err();
    assert!(e.to_string().contains("field expiries"), "{e}");
    let enc = ferry_rdb::encode_value(&v, 12).unwrap();
    assert_eq!(ferry_rdb::decode_value(&enc, false).unwrap(), v);
}

#[test]
fn json_lines_follow_the_documented_shape() {
    let file = Writer::write_to_vec(12, |w| {
        w.select_db(0)?;
        w.write_entry(b"s", &Value::String("text".into()), Some(123))?;
        w.write_entry(
            b"bin",
            &Value::String(Bytes::from_static(&[0xff, 0x00])),
            None,
        )?;
        w.write_entry(
            b"z",
            &Value::SortedSet(vec![("a".into(), f64::INFINITY), ("b".into(), 1.5)]),
            None,
        )?;
        w.write_entry(b"h", &Value::Hash(vec![HashField::new("f", "v")]), None)?;
        w.write_entry(
            b"ht",
            &Value::Hash(vec![HashField {
                field: "f".into(),
                value: "v".into(),
                expire_at_ms: Some(4_102_444_800_000),
            }]),
            None,
        )
    })
    .unwrap();
    let lines: Vec<String> = Reader::new(&file[..], ParserOptions::default())
        .filter_map(|i| match i.unwrap() {
            Item::Entry(e) => Some(json::entry_line(&e)),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines[0],
        r#"{"db":0,"key":"s","type":"string","expire_at_ms":123,"value":"text"}"#
    );
    assert_eq!(
        lines[1],
        r#"{"db":0,"key":"bin","type":"string","expire_at_ms":null,"value":{"base64":"/wA="}}"#
    );
    assert_eq!(
        lines[2],
        r#"{"db":0,"key":"z","type":"zset","expire_at_ms":null,"value":[["b",1.5],["a","inf"]]}"#
    );
    assert_eq!(
        lines[3],
        r#"{"db":0,"key":"h","type":"hash","expire_at_ms":null,"value":{"f":"v"}}"#
    );
    assert_eq!(
        lines[4],
        r#"{"db":0,"key":"ht","type":"hash","expire_at_ms":null,"value":[["f","v",4102444800000]]}"#
    );
}

#[test]
fn reencode_for_passes_bytes_through_or_downgrades_encodings() {
    let v = Value::Hash(vec![HashField::new("a", "1"), HashField::new("b", "2")]);
    let raw10 = ferry_rdb::encode_value(&v, 10).unwrap();
    assert_eq!(raw10[0], 16, "listpack hash for 7.0");
    let same = ferry_rdb::reencode_for(&raw10, 10, 11).unwrap();
    assert_eq!(ferry_rdb::split_dump(&same).unwrap().serialized, &raw10[..]);
    let down = ferry_rdb::reencode_for(&raw10, 10, 9).unwrap();
    let parts = ferry_rdb::split_dump(&down).unwrap();
    assert_eq!(parts.serialized[0], 13, "ziplist hash for 6.2");
    assert_eq!(parts.rdb_version, 9);
    assert_eq!(ferry_rdb::decode_dump(&down).unwrap().0, v);
}

#[test]
fn a_dump_payload_with_a_bad_crc_or_future_version_is_rejected_clearly() {
    let mut p = ferry_rdb::encode_dump(&Value::String("x".into()), 10).unwrap();
    let last = p.len() - 1;
    p[last] ^= 1;
    assert!(ferry_rdb::decode_dump(&p).unwrap_err().is_checksum());
    let future = ferry_rdb::build_dump(&[0, 1, b'x'], 14);
    let e = ferry_rdb::decode_dump(&future).unwrap_err();
    assert!(e.is_unsupported() && e.to_string().contains("14"), "{e}");
}

#[test]
fn a_big_string_arrives_in_pieces_without_being_buffered_whole() {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let file = Writer::write_to_vec(10, |w| {
        w.select_db(0)?;
        w.write_entry(b"big", &Value::String(Bytes::from(big.clone())), None)?;
        w.write_entry(b"small", &Value::String("x".into()), None)
    })
    .unwrap();
    for feed in [1usize, 7, 4096, 1 << 20] {
        let mut p = ferry_rdb::Parser::new(ParserOptions {
            big_value_bytes: Some(8192),
            ..Default::default()
        });
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut events = Vec::new();
        for c in file.chunks(feed) {
            p.feed(c);
            while let Some(it) = p.next_item().unwrap() {
                match it {
                    Item::EntryStart(e) => {
                        events.push(format!("start {}", String::from_utf8_lossy(&e.key)))
                    }
                    Item::ValueChunk(Value::String(s)) => {
                        assert!(s.len() <= 8192 + 8192, "piece of {} bytes", s.len());
                        pieces.push(s);
                    }
                    Item::EntryEnd => events.push("end".into()),
                    Item::Entry(e) => {
                        events.push(format!("entry {}", String::from_utf8_lossy(&e.key)))
                    }
                    _ => {}
                }
            }
        }
        p.finish().unwrap();
        assert_eq!(events, ["start big", "end", "entry small"], "feed {feed}");
        assert!(pieces.len() >= 6, "feed {feed}: {} pieces", pieces.len());
        assert_eq!(pieces.concat(), big, "feed {feed}");
    }
}

#[test]
fn keys_and_compact_elements_are_slices_of_one_buffer_not_copies() {
    // Small keys, a string and an RDB 9 list (a ziplist): all fed at once, so all in one input buffer.
    let file = Writer::write_to_vec(9, |w| {
        w.select_db(0)?;
        w.write_entry(b"first", &Value::String("one".into()), None)?;
        w.write_entry(
            b"second",
            &Value::List(vec!["a".into(), "bb".into(), "ccc".into()]),
            None,
        )
    })
    .unwrap();
    let mut p = ferry_rdb::Parser::new(ParserOptions::default());
    p.feed(&file);
    let mut entries = Vec::new();
    while let Some(item) = p.next_item().unwrap() {
        if let Item::Entry(e) = item {
            entries.push(e);
        }
    }
    assert_eq!(entries.len(), 2);
    let (first, second) = (&entries[0], &entries[1]);
    let in_file = |needle: &[u8]| {
        file.windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    // The second key sits where the file has it, counted from the first key: the same buffer, no copy.
    let distance = (second.key.as_ptr() as usize).wrapping_sub(first.key.as_ptr() as usize);
    assert_eq!(distance, in_file(b"second") - in_file(b"first"));
    let Some(Value::List(items)) = &second.value else {
        panic!("not a list: {:?}", second.value);
    };
    assert_eq!(
        items,
        &vec![Bytes::from("a"), Bytes::from("bb"), Bytes::from("ccc")]
    );
    // The ziplist's elements are slices of the same buffer too: each where the file has it after the key.
    let after_key = &file[in_file(b"second")..];
    for item in items {
        let at = (item.as_ptr() as usize).wrapping_sub(second.key.as_ptr() as usize);
        assert!(
            at < after_key.len(),
            "{item:?} is a copy, not in the input buffer"
        );
        assert_eq!(&after_key[at..at + item.len()], &item[..]);
    }
}
