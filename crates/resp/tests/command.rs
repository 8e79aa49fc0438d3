//! The command path: `Decoder::decode_command`, `Command`, `CommandCodec`.

use bytes::{Bytes, BytesMut};
use ferry_resp::{encode_command, encode_frame, CommandCodec, Decoder, Error, Frame, Limits};
use proptest::prelude::*;

fn argv_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // 1..12 arguments covers the inline storage (up to 6) and the spill to a Vec.
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..12)
}

fn encode_all(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for argv in cmds {
        encode_command(argv, &mut out);
    }
    out.to_vec()
}

/// Decodes `wire` fed in pieces of the given sizes (cycled), checking each command's raw bytes
/// against the wire position it came from.
fn decode_chunked(wire: &[u8], chunks: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let (mut fed, mut consumed, mut i) = (0, 0, 0);
    while fed < wire.len() {
        let n = chunks[i % chunks.len()].max(1).min(wire.len() - fed);
        i += 1;
        buf.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.len();
            let Some(cmd) = dec.decode_command(&mut buf).expect("valid stream") else {
                break;
            };
            assert_eq!(before - buf.len(), cmd.len_on_wire());
            assert_eq!(
                &cmd.raw()[..],
                &wire[consumed..consumed + cmd.len_on_wire()]
            );
            consumed += cmd.len_on_wire();
            out.push(cmd.args().map(<[u8]>::to_vec).collect());
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

fn first_error(input: &[u8], limits: Limits) -> Error {
    let mut dec = Decoder::with_limits(limits);
    let mut buf = BytesMut::from(input);
    loop {
        match dec.decode_command(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error for {:?}", input.escape_ascii().to_string()),
            Err(e) => return e,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_argv_decodes_back_with_exact_raw_bytes(argv in argv_strategy()) {
        let mut buf = BytesMut::new();
        encode_command(&argv, &mut buf);
        let wire = buf.clone().freeze();
        let cmd = Decoder::new().decode_command(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(cmd.raw(), &wire);
        prop_assert_eq!(cmd.len_on_wire(), wire.len());
        prop_assert_eq!(cmd.argc(), argv.len());
        prop_assert_eq!(cmd.name(), &argv[0][..]);
        prop_assert_eq!(cmd.args().len(), argv.len());
        for (i, a) in argv.iter().enumerate() {
            prop_assert_eq!(cmd.arg(i), Some(&a[..]));
            let owned = cmd.arg_bytes(i).unwrap();
            prop_assert_eq!(&owned[..], &a[..]);
        }
        prop_assert_eq!(cmd.arg(argv.len()), None);
        prop_assert_eq!(cmd.arg_bytes(argv.len()), None);
        let back: Vec<Vec<u8>> = cmd.args().rev().map(<[u8]>::to_vec).collect();
        let mut expected = argv.clone();
        expected.reverse();
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn commands_decode_the_same_when_split_at_every_offset(
        cmds in prop::collection::vec(argv_strategy(), 1..4),
    ) {
        let wire = encode_all(&cmds);
        for split in 0..=wire.len() {
            let got = decode_chunked(&wire, &[split.max(1), wire.len()]);
            prop_assert_eq!(&got, &cmds, "split at {}", split);
            // Also split into a head of `split` bytes followed by single bytes.
            let got = decode_chunked(&wire, &[split.max(1), 1, 1, 1, 1, 1, 1, 1]);
            prop_assert_eq!(&got, &cmds, "split at {} then bytes", split);
        }
    }

    #[test]
    fn commands_decode_the_same_in_random_chunks(
        cmds in prop::collection::vec(argv_strategy(), 1..8),
        chunks in prop::collection::vec(1usize..40, 1..16),
    ) {
        let wire = encode_all(&cmds);
        prop_assert_eq!(decode_chunked(&wire, &chunks), cmds);
    }

    #[test]
    fn command_and_frame_decoders_agree(cmds in prop::collection::vec(argv_strategy(), 1..6)) {
        let wire = encode_all(&cmds);
        let mut a = BytesMut::from(&wire[..]);
        let mut b = BytesMut::from(&wire[..]);
        let mut dec_a = Decoder::new();
        let mut dec_b = Decoder::new();
        while let Some(cmd) = dec_a.decode_command(&mut a).unwrap() {
            let frame = dec_b.decode(&mut b).unwrap().unwrap();
            prop_assert_eq!(a.len(), b.len());
            let expected = Frame::Array(cmd.args().map(Frame::bulk).collect());
            prop_assert_eq!(frame, expected);
        }
        prop_assert!(b.is_empty());
    }

    #[test]
    fn random_bytes_never_panic_the_command_decoder(
        data in prop::collection::vec(any::<u8>(), 0..256),
        chunk in 1usize..16,
    ) {
        let mut dec = Decoder::with_limits(Limits { max_bulk_len: 64, max_depth: 4, max_elements: 8 });
        let mut buf = BytesMut::new();
        'feed: for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode_command(&mut buf) {
                    Ok(Some(cmd)) => {
                        let _ = (cmd.name(), cmd.args().count(), format!("{cmd:?}"));
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    #[test]
    fn corrupted_commands_never_panic(argv in argv_strategy(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut buf = BytesMut::new();
        encode_command(&argv, &mut buf);
        let i = at.index(buf.len());
        buf[i] = byte;
        let _ = Decoder::new().decode_command(&mut buf);
    }
}

#[test]
fn many_arguments_spill_past_the_inline_storage() {
    let argv: Vec<String> = (0..1000).map(|i| format!("arg{i}")).collect();
    let mut buf = BytesMut::new();
    encode_command(&argv, &mut buf);
    let cmd = Decoder::new().decode_command(&mut buf).unwrap().unwrap();
    assert_eq!(cmd.argc(), 1000);
    assert_eq!(cmd.arg(999), Some(&b"arg999"[..]));
    assert!(cmd
        .args()
        .map(<[u8]>::to_vec)
        .eq(argv.iter().map(|a| a.as_bytes().to_vec())));
}

#[test]
fn bulk_above_the_limit_is_a_limit_error() {
    let limits = Limits {
        max_bulk_len: 10,
        ..Limits::default()
    };
    let err = first_error(b"*2\r\n$3\r\nGET\r\n$11\r\n", limits);
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    // At the limit it decodes.
    let mut buf = BytesMut::from(&b"*1\r\n$10\r\n0123456789\r\n"[..]);
    let cmd = Decoder::with_limits(limits)
        .decode_command(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(cmd.name(), b"0123456789");
}

#[test]
fn huge_declared_bulk_is_a_limit_error_before_its_bytes_arrive() {
    let err = first_error(b"*1\r\n$999999999999\r\n", Limits::default());
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
}

#[test]
fn too_many_arguments_is_a_limit_error_without_allocation() {
    let limits = Limits {
        max_elements: 4,
        ..Limits::default()
    };
    let err = first_error(b"*5\r\n", limits);
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    let err = first_error(b"*999999999999\r\n", Limits::default());
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    // Below the limit, a big declaration just waits for the arguments.
    let mut dec = Decoder::new();
    let mut buf = BytesMut::from(&b"*100000000\r\n$1\r\na\r\n"[..]);
    assert!(dec.decode_command(&mut buf).unwrap().is_none());
    assert!(dec.is_pending());
}

#[test]
fn non_bulk_elements_are_not_a_command() {
    for bad in [
        &b"*2\r\n$3\r\nGET\r\n:1\r\n"[..],
        b"*2\r\n$3\r\nGET\r\n+k\r\n",
        b"*2\r\n$3\r\nGET\r\n$-1\r\n",
        b"*2\r\n$3\r\nGET\r\n_\r\n",
        b"*1\r\n=7\r\ntxt:abc\r\n",
        b"*2\r\n$3\r\nGET\r\n%1\r\n+a\r\n+b\r\n",
    ] {
        let err = first_error(bad, Limits::default());
        assert!(err.is_not_a_command(), "{}: {err:?}", bad.escape_ascii());
    }
}

#[test]
fn nested_arrays_are_not_a_command() {
    let err = first_error(b"*2\r\n$4\r\nEXEC\r\n*1\r\n$1\r\nx\r\n", Limits::default());
    assert!(matches!(err, Error::NotACommand(_)), "{err:?}");
    assert!(err.to_string().contains("array"), "{err}");
}

#[test]
fn other_top_level_types_and_empty_arrays_are_not_a_command() {
    for bad in [
        &b"+OK\r\n"[..],
        b"-ERR x\r\n",
        b":1\r\n",
        b"$3\r\nfoo\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n",
    ] {
        let err = first_error(bad, Limits::default());
        assert!(err.is_not_a_command(), "{}: {err:?}", bad.escape_ascii());
        assert!(err.is_connection_lost());
    }
}

#[test]
fn inline_commands_are_rejected() {
    let err = first_error(b"PING\r\n", Limits::default());
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[test]
fn malformed_commands_are_protocol_errors() {
    for bad in [
        &b"*x\r\n"[..],
        b"*-2\r\n",
        b"*1\r\n$-2\r\n",
        b"*1\r\n$3\r\nabcd\r\n",
        b"*1\r\n$3\r\nabc\n\r",
        b"*1\r\n$3x\r\n",
        b"*1\r\n@\r\n",
        b"*1\r\n$99999999999999999999999\r\n",
    ] {
        let err = first_error(bad, Limits::default());
        assert!(
            matches!(err, Error::Protocol(_)),
            "{}: {err:?}",
            bad.escape_ascii()
        );
    }
}

#[test]
fn decoder_starts_clean_after_an_error() {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::from(&b"*1\r\n:1\r\n"[..]);
    assert!(dec.decode_command(&mut buf).is_err());
    let mut fresh = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
    assert_eq!(
        dec.decode_command(&mut fresh).unwrap().unwrap().name(),
        b"PING"
    );
}

#[test]
fn mixing_frame_and_command_decoding_on_one_decoder_works() {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    encode_frame(&Frame::simple("FULLRESYNC"), &mut buf);
    encode_command(&["SELECT", "0"], &mut buf);
    encode_command(&["SET", "k", "v"], &mut buf);
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        Some(Frame::simple("FULLRESYNC"))
    );
    // A half-checked frame, then the command path takes over: it starts the item over.
    let full = buf.split_off(0);
    buf.extend_from_slice(&full[..8]);
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(&full[8..]);
    let select = dec.decode_command(&mut buf).unwrap().unwrap();
    assert_eq!(select.args().collect::<Vec<_>>(), [&b"SELECT"[..], b"0"]);
    let set = dec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        set,
        Frame::Array(vec![Frame::bulk("SET"), Frame::bulk("k"), Frame::bulk("v")])
    );
}

#[test]
fn large_argument_in_pieces_decodes_and_shares_the_buffer() {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(2_000_100);
    buf.extend_from_slice(b"*2\r\n$3\r\nSET\r\n$1000000\r\n");
    let base = buf.as_ptr() as usize;
    assert!(dec.decode_command(&mut buf).unwrap().is_none());
    for _ in 0..1000 {
        buf.extend_from_slice(&[b'x'; 1000]);
        assert!(dec.decode_command(&mut buf).unwrap().is_none());
    }
    buf.extend_from_slice(b"\r\n");
    let cmd = dec.decode_command(&mut buf).unwrap().unwrap();
    assert_eq!(cmd.arg(1).map(<[u8]>::len), Some(1_000_000));
    let value: Bytes = cmd.arg_bytes(1).unwrap();
    assert_eq!(value.as_ptr() as usize, base + 23);
    assert_eq!(cmd.raw().as_ptr() as usize, base);
}

#[test]
fn debug_output_shows_arguments_shortened() {
    let mut buf = BytesMut::new();
    encode_command(&[&b"SET"[..], b"k\n", &[b'v'; 100]], &mut buf);
    let cmd = Decoder::new().decode_command(&mut buf).unwrap().unwrap();
    let shown = format!("{cmd:?}");
    assert!(shown.contains(r#""SET""#), "{shown}");
    assert!(shown.contains(r#""k\n""#), "{shown}");
    assert!(shown.contains("(100 bytes)"), "{shown}");
}

#[test]
fn command_codec_decodes_and_forwards_verbatim() {
    use tokio_util::codec::{Decoder as _, Encoder as _};
    let mut codec = CommandCodec::new();
    let mut input = BytesMut::new();
    encode_command(&["MULTI"], &mut input);
    encode_command(&["INCR", "n"], &mut input);
    encode_command(&["EXEC"], &mut input);
    let wire = input.clone();
    input.extend_from_slice(b"*1\r\n$4\r\nPI");
    let mut out = BytesMut::new();
    let mut names = Vec::new();
    while let Some(cmd) = codec.decode(&mut input).unwrap() {
        names.push(String::from_utf8(cmd.name().to_vec()).unwrap());
        codec.encode(cmd, &mut out).unwrap();
    }
    assert_eq!(names, ["MULTI", "INCR", "EXEC"]);
    assert_eq!(out, wire);
    let err = codec.decode_eof(&mut input).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}
