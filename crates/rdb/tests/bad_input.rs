//! Bad input: truncation at every byte, corrupted bytes and forged lengths give errors, never
//! panics, and never allocations sized by a length that the input does not back.
#![allow(unsafe_code)] // only for the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_rdb::{Error, Item, Parser, ParserOptions, Reader};
use proptest::prelude::*;

/// Records the largest single allocation made while `TRACK` is on.
struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static TRACK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) > 0 {
            LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) > 0 {
            LARGEST.fetch_max(new, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/rdb-fixtures"
    ))
    .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const FILES: &[&str] = &[
    "hdt3213/cases/memory.rdb",
    "hdt3213/cases/stream_listpacks_1.rdb",
    "hdt3213/cases/listpack.rdb",
    "hdt3213/cases/hash_with_hfe.rdb",
    "hdt3213/cases/hash_as_listpack_with_hfe.rdb",
    "hdt3213/cases/valkey_hash2_with_hfe.rdb",
    "hdt3213/cases/issue27.rdb",
    "librdb/test/dumps-pr-rdb-v13/stream_v13_idmp.rdb",
    "librdb/test/dumps/function2.rdb",
    "librdb/test/dumps/module_aux_v12.rdb",
    "librdb/test/dumps/plain_zset_v6.rdb",
    "rdbtools/redis_50_with_streams.rdb",
    "cupcake/ziplist_with_integers.rdb",
    "hdt3213/cases/parser_filters.rdb",
];

fn decode(bytes: &[u8]) -> Result<Vec<Item>, Error> {
    Reader::new(bytes, ParserOptions::default()).collect()
}

#[test]
fn every_prefix_of_several_files_is_a_truncation_error() {
    for f in FILES {
        let bytes = fixture(f);
        let step = if bytes.len() > 10_000 { 7 } else { 1 };
        for len in (0..bytes.len()).step_by(step) {
            match decode(&bytes[..len]) {
                Err(e) => {
                    assert!(e.is_truncated(), "{f} cut at {len}: {e}");
                    assert!(
                        e.to_string().contains(&format!("at byte {len} ")),
                        "{f} cut at {len}: {e}"
                    );
                }
                Ok(_) => panic!("{f} cut at {len} decoded without error"),
            }
        }
    }
}

#[test]
fn truncation_errors_say_what_was_being_read_and_in_which_key() {
    let bytes = fixture("hdt3213/cases/memory.rdb");
    let msgs: Vec<String> = (0..bytes.len())
        .filter_map(|n| decode(&bytes[..n]).err())
        .map(|e| e.to_string())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("while reading a list") || m.contains("quicklist")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("in value of key \"")),
        "{msgs:?}"
    );
    let bad = decode(&bytes[..bytes.len() - 3]).unwrap_err().to_string();
    assert!(
        bad.starts_with(&format!(
            "truncated input at byte {} while reading the checksum",
            bytes.len() - 3
        )),
        "{bad}"
    );
}

#[test]
fn a_declared_string_length_beyond_the_input_waits_instead_of_allocating() {
    // A key whose value claims 3 GiB (32-bit length) and then 2^62 bytes (64-bit length).
    for len_bytes in [
        &[0x80u8, 0xc0, 0, 0, 0][..],
        &[0x81, 0x40, 0, 0, 0, 0, 0, 0, 0][..],
    ] {
        let mut input = b"REDIS0011\xfe\x00\x00\x01k".to_vec();
        input.extend_from_slice(len_bytes);
        input.extend_from_slice(&[b'x'; 100]);
        LARGEST.store(0, Ordering::Relaxed);
        TRACK.fetch_add(1, Ordering::Relaxed);
        let mut p = Parser::new(ParserOptions {
            max_string_len: usize::MAX,
            ..Default::default()
        });
        p.feed(&input);
        let mut res = Ok(None);
        for _ in 0..5 {
            res = p.next_item();
            if !matches!(res, Ok(Some(_))) {
                break;
            }
        }
        let fin = p.finish();
        TRACK.fetch_sub(1, Ordering::Relaxed);
        assert!(matches!(res, Ok(None)), "{res:?}");
        assert!(fin.unwrap_err().is_truncated());
        assert!(
            LARGEST.load(Ordering::Relaxed) < 1 << 20,
            "allocated {}",
            LARGEST.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn a_declared_element_count_beyond_the_input_does_not_preallocate() {
    // A list claiming 2^40 elements, then a set, then a DUMP payload claiming a huge LZF output.
    let mut input = b"REDIS0011\xfe\x00\x01\x01k\x81\x00\x00\x01\x00\x00\x00\x00\x00".to_vec();
    input.extend_from_slice(&[1, b'a'].repeat(10));
    LARGEST.store(0, Ordering::Relaxed);
    TRACK.fetch_add(1, Ordering::Relaxed);
    let r = decode(&input);
    let lzf = ferry_rdb::decode_value(
        &[0, 0xc3, 0x05, 0x81, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5],
        false,
    );
    TRACK.fetch_sub(1, Ordering::Relaxed);
    assert!(r.unwrap_err().is_truncated());
    assert!(lzf.unwrap_err().is_corrupt());
    assert!(
        LARGEST.load(Ordering::Relaxed) < 1 << 20,
        "allocated {}",
        LARGEST.load(Ordering::Relaxed)
    );
}

#[test]
fn a_string_longer_than_the_configured_limit_is_a_clear_error() {
    let input = b"REDIS0011\xfe\x00\x00\x01k\x80\x10\x00\x00\x00".to_vec();
    let mut p = Parser::new(ParserOptions {
        max_string_len: 1 << 20,
        ..Default::default()
    });
    p.feed(&input);
    let mut r = p.next_item();
    while let Ok(Some(_)) = r {
        r = p.next_item();
    }
    let e = r.unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    assert!(e.to_string().contains("\"k\""), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn corrupted_files_give_errors_not_panics(
        file in 0..FILES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        chunk in 1usize..200,
    ) {
        let mut bytes = fixture(FILES[file]);
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let mut p = Parser::new(ParserOptions { verify_checksum: false, ..Default::default() });
        'outer: for c in bytes.chunks(chunk) {
            p.feed(c);
            loop {
                match p.next_item() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
        let _ = p.finish();
    }

    #[test]
    fn random_dump_payloads_give_errors_not_panics(body in proptest::collection::vec(any::<u8>(), 0..300), t in 0u8..30) {
        let mut ser = vec![t];
        ser.extend_from_slice(&body);
        let _ = ferry_rdb::decode_value(&ser, false);
        let _ = ferry_rdb::decode_value(&ser, true);
        // A value called empty (a copy leaves it out) never decodes to one with an element.
        if ferry_rdb::is_empty_collection(&ser) {
            for valkey in [false, true] {
                if let Ok(v) = ferry_rdb::decode_value(&ser, valkey) {
                    prop_assert!(v.is_empty(), "{ser:?} decodes to {v:?}");
                }
            }
        }
        let payload = ferry_rdb::build_dump(&ser, 11);
        let _ = ferry_rdb::decode_dump(&payload);
    }

    /// A vector set's module payload with bytes changed: its operands and its vector-set view read as an
    /// error or a value, never a panic (verify reads both from any module value a server hands it).
    #[test]
    fn damaged_vector_set_payloads_give_errors_not_panics(
        elements in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..12), 0u64..40), 0..12),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        use ferry_rdb::{ModuleItem, ModuleValue};
        let mut items = vec![
            ModuleItem::Unsigned(4),
            ModuleItem::Unsigned(elements.len() as u64),
            ModuleItem::Unsigned(1 | 16 << 8),
            ModuleItem::Unsigned(2),
        ];
        for (name, params) in &elements {
            items.push(ModuleItem::String(bytes::Bytes::copy_from_slice(name)));
            items.push(ModuleItem::String(bytes::Bytes::new()));
            items.push(ModuleItem::String(bytes::Bytes::from_static(b"vect")));
            items.push(ModuleItem::Unsigned(*params));
            items.extend((0..*params).map(ModuleItem::Unsigned));
        }
        let mut payload = ferry_rdb::module::encode_module_items(&items).to_vec();
        let value = |payload: &[u8]| ModuleValue {
            module_id: 0,
            name: "vectorset".into(),
            encver: 0,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        let whole = value(&payload).vector_set().expect("the undamaged payload is a vector set");
        prop_assert_eq!(whole.elements.len(), elements.len());
        let short = value(&payload[..cut.index(payload.len())]);
        prop_assert!(short.items().is_err());
        prop_assert!(short.vector_set().is_none());
        for (i, b) in edits {
            let at = i.index(payload.len());
            payload[at] = b;
        }
        let damaged = value(&payload);
        let _ = damaged.items();
        let _ = damaged.vector_set();
    }

    #[test]
    fn encoded_values_round_trip_through_every_version(
        items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..300),
        version in 1u32..=13,
    ) {
        use ferry_rdb::{Value, HashField};
        let list = Value::List(items.iter().map(|i| bytes::Bytes::copy_from_slice(i)).collect());
        let enc = ferry_rdb::encode_value(&list, version).unwrap();
        prop_assert_eq!(ferry_rdb::decode_value(&enc, false).unwrap(), list);
        let mut uniq = items.clone();
        uniq.sort();
        uniq.dedup();
        let hash = Value::Hash(uniq.iter().map(|i| HashField::new(bytes::Bytes::copy_from_slice(i), bytes::Bytes::copy_from_slice(i))).collect());
        let enc = ferry_rdb::encode_value(&hash, version).unwrap();
        prop_assert_eq!(ferry_rdb::decode_value(&enc, false).unwrap(), hash);
        let zset: Vec<(bytes::Bytes, f64)> = uniq.iter().enumerate().map(|(n, i)| (bytes::Bytes::copy_from_slice(i), n as f64 * 1.25 - 7.0)).collect();
        let enc = ferry_rdb::encode_value(&Value::SortedSet(zset.clone()), version).unwrap();
        let mut got = match ferry_rdb::decode_value(&enc, false).unwrap() { Value::SortedSet(z) => z, _ => unreachable!() };
        let mut want = zset;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(got, want);
        let set = Value::Set(uniq.iter().map(|i| bytes::Bytes::copy_from_slice(i)).collect());
        let enc = ferry_rdb::encode_value(&set, version).unwrap();
        let mut got = match ferry_rdb::decode_value(&enc, false).unwrap() { Value::Set(s) => s, _ => unreachable!() };
        got.sort();
        let mut want = match set { Value::Set(s) => s, _ => unreachable!() };
        want.sort();
        prop_assert_eq!(got, want);
    }
}
