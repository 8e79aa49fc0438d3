//! Fuzzes the streaming RESP decoder.
//!
//! The first byte picks a chunk size; the rest is the wire input. Properties checked:
//! - no panic, whatever the input and however it is chopped;
//! - decoding in chunks gives the same frames (and the same first error kind) as decoding the
//!   whole input at once;
//! - every decoded frame re-encodes to bytes that decode back to an equal frame.
#![no_main]

use bytes::BytesMut;
use ferry_resp::{encode_frame, Decoder, Error, Frame, Limits};
use libfuzzer_sys::fuzz_target;

/// Small limits so the fuzzer reaches the limit paths quickly.
const LIMITS: Limits = Limits {
    max_bulk_len: 4096,
    max_depth: 16,
    max_elements: 256,
};

/// Decodes `input` fed in `chunk`-byte pieces; returns the frames and the error, if any.
fn decode(input: &[u8], chunk: usize) -> (Vec<Frame>, Option<Error>) {
    let mut dec = Decoder::with_limits(LIMITS);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn same_kind(a: &Option<Error>, b: &Option<Error>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 32) + 1;

    let (whole, whole_err) = decode(input, input.len().max(1));
    let (chopped, chopped_err) = decode(input, chunk);
    assert_eq!(whole, chopped, "chunked decoding differs (chunk {chunk})");
    assert!(
        same_kind(&whole_err, &chopped_err),
        "{whole_err:?} vs {chopped_err:?}"
    );

    for frame in whole {
        let mut wire = BytesMut::new();
        encode_frame(&frame, &mut wire);
        let mut dec = Decoder::with_limits(LIMITS);
        let again = dec
            .decode(&mut wire)
            .expect("re-encoded frame decodes")
            .expect("complete");
        assert_eq!(again, frame);
        assert!(wire.is_empty());
    }
});
