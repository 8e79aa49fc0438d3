//! Fuzzes DUMP payload decoding and re-encoding: arbitrary serialized values (the CRC is fixed up
//! so the value decoder is reached, as a Redis payload and as a Valkey 9 one), and every decoded value must
//! re-encode for v9 to v12 and Valkey's 80 and decode back to itself; a module value's operands and vector-set view
//! read without panicking; a value `is_empty_collection` calls empty has no element. Must never panic.
#![no_main]

use ferry_rdb::{build_dump, decode_dump, decode_value, encode_value, is_empty_collection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_dump(data);
    // A value called empty (a copy leaves it out) never decodes to one with an element.
    if is_empty_collection(data) {
        for valkey in [false, true] {
            if let Ok(v) = decode_value(data, valkey) {
                assert!(v.is_empty(), "called empty, decodes to {v:?}");
            }
        }
    }
    let payload = build_dump(data, 11);
    if let Ok((value, _)) = decode_dump(&payload) {
        if let ferry_rdb::Value::Module(m) = &value {
            // A module payload's operands, and the vector-set view verify compares by.
            let _ = m.items();
            if let Some(set) = m.vector_set() {
                let mut canonical = (**m).clone();
                canonical.payload = set.canonical_payload();
                let again = canonical.vector_set().expect("a canonical payload reads as a vector set");
                assert_eq!(again.canonical_payload(), canonical.payload);
            }
        }
        for v in [9, 10, 11, 12] {
            if let Ok(enc) = encode_value(&value, v) {
                let back = decode_value(&enc, false).expect("our own encoding decodes");
                if let (ferry_rdb::Value::SortedSet(_), _) | (ferry_rdb::Value::Set(_), _) =
                    (&value, v)
                {
                    continue; // compact encodings reorder members
                }
                if let ferry_rdb::Value::Stream(_) = value {
                    continue; // metadata is normalised on encode
                }
                assert_eq!(back, value, "round trip for version {v}");
            }
        }
    }
    // The same bytes as a Valkey 9 payload (type 22 is its HASH_2), and Valkey's encoding round trip.
    let payload = build_dump(data, 80);
    if let Ok((value, _)) = decode_dump(&payload) {
        if let Ok(enc) = encode_value(&value, 80) {
            let back = decode_value(&enc, true).expect("our own encoding decodes");
            if !matches!(
                value,
                ferry_rdb::Value::SortedSet(_) | ferry_rdb::Value::Set(_) | ferry_rdb::Value::Stream(_)
            ) {
                assert_eq!(back, value, "round trip for Valkey 80");
            }
        }
    }
});
