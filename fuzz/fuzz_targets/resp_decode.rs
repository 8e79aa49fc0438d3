//! Fuzzes the streaming RESP decoder, both its frame path and its command path.
//!
//! The first byte picks a chunk size; the rest is the wire input. Properties checked:
//! - no panic, whatever the input and however it is chopped;
//! - decoding in chunks gives the same frames (and the same first error kind) as decoding the
//!   whole input at once, for `decode` and for `decode_command` alike;
//! - every decoded frame re-encodes to bytes that decode back to an equal frame;
//! - the two paths agree: each command `decode_command` returns is, at the same position, the
//!   frame `decode` returns (an array of the same bulk strings) taking the same bytes; where the
//!   command path stops on a protocol or limit error, the frame path stops there with the same
//!   kind; where it stops on "not a command", the frame path's frame there is indeed not a
//!   non-empty array of bulk strings;
//! - a command's raw bytes are exactly the input bytes it came from, and re-encoding its
//!   arguments gives those bytes back.
#![no_main]

use bytes::BytesMut;
use ferry_resp::{encode_command, encode_frame, Command, Decoder, Error, Frame, Limits};
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

/// The same with `decode_command`.
fn decode_commands(input: &[u8], chunk: usize) -> (Vec<Command>, Option<Error>) {
    let mut dec = Decoder::with_limits(LIMITS);
    let mut buf = BytesMut::new();
    let mut cmds = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode_command(&mut buf) {
                Ok(Some(cmd)) => cmds.push(cmd),
                Ok(None) => break,
                Err(e) => return (cmds, Some(e)),
            }
        }
    }
    (cmds, None)
}

fn same_kind(a: &Option<Error>, b: &Option<Error>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => false,
    }
}

/// Whether `frame` is what a command looks like to the frame path.
fn is_command_frame(frame: &Frame) -> bool {
    matches!(frame, Frame::Array(items)
        if !items.is_empty() && items.iter().all(|f| matches!(f, Frame::Bulk(_))))
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

    let (cmds, cmd_err) = decode_commands(input, input.len().max(1));
    let (cmds_chopped, cmd_chopped_err) = decode_commands(input, chunk);
    assert_eq!(
        cmds, cmds_chopped,
        "chunked command decoding differs (chunk {chunk})"
    );
    assert!(
        same_kind(&cmd_err, &cmd_chopped_err),
        "{cmd_err:?} vs {cmd_chopped_err:?}"
    );

    // Agreement between the two paths.
    let mut offset = 0;
    for (i, cmd) in cmds.iter().enumerate() {
        let frame = whole.get(i).expect("the frame path decodes every command");
        let expected = Frame::Array(cmd.args().map(Frame::bulk).collect());
        assert_eq!(frame, &expected);
        assert!(cmd.argc() >= 1);
        assert_eq!(&cmd.raw()[..], &input[offset..offset + cmd.len_on_wire()]);
        offset += cmd.len_on_wire();
        let mut again = BytesMut::new();
        encode_command(&cmd.args().collect::<Vec<_>>(), &mut again);
        assert_eq!(&again[..], &cmd.raw()[..]);
    }
    let k = cmds.len();
    match &cmd_err {
        Some(Error::NotACommand(_)) => {
            if let Some(frame) = whole.get(k) {
                assert!(!is_command_frame(frame), "{frame:?} refused as a command");
            }
        }
        Some(e) => {
            assert_eq!(
                whole.len(),
                k,
                "frame path went past a command-path error {e:?}"
            );
            assert!(
                same_kind(&cmd_err, &whole_err),
                "{cmd_err:?} vs {whole_err:?}"
            );
        }
        None => {
            if let Some(frame) = whole.get(k) {
                assert!(
                    !is_command_frame(frame),
                    "{frame:?} complete but not decoded as a command"
                );
            }
        }
    }

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
