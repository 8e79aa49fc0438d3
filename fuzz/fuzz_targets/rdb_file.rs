//! Fuzzes the streaming RDB parser: arbitrary bytes after a valid magic, fed in chunks whose size
//! comes from the first input byte, in decoded, raw and chunked modes. Must never panic.
#![no_main]

use ferry_rdb::{Parser, ParserOptions, ValueMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = (data[0] as usize % 64) + 1;
    let (mode, big) = match data[1] % 3 {
        0 => (ValueMode::Decoded, None),
        1 => (ValueMode::Raw, None),
        _ => (ValueMode::DecodedAndRaw, Some(64)),
    };
    let mut input = b"REDIS0011".to_vec();
    if data.len() > 2 && (data[2] == b'R' || data[2] == b'V') {
        input.clear(); // let the fuzzer try its own header too (REDIS or VALKEY magic)
    }
    input.extend_from_slice(&data[2..]);
    let mut p = Parser::new(ParserOptions {
        mode,
        big_value_bytes: big,
        verify_checksum: false,
        max_string_len: 1 << 20,
    });
    for c in input.chunks(chunk) {
        p.feed(c);
        loop {
            match p.next_item() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = p.finish();
});
