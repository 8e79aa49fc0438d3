//! Property tests: any frame encodes and decodes back to itself, however the bytes are chopped.

use bytes::{Bytes, BytesMut};
use ferry_resp::{encode_command, encode_frame, Decoder, Frame, RespCodec};
use proptest::prelude::*;

fn bytes_strategy() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn line_strategy() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..20,
    )
    .prop_map(Bytes::from)
}

fn double_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(0.0),
        Just(-0.0),
        Just(1e300),
        Just(f64::MIN_POSITIVE),
    ]
}

fn scalar() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_strategy().prop_map(Frame::Simple),
        bytes_strategy().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes_strategy().prop_map(Frame::Bulk),
        Just(Frame::Null),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        double_strategy().prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        ("-?[1-9][0-9]{0,40}|0").prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        (any::<[u8; 3]>(), bytes_strategy())
            .prop_map(|(format, text)| Frame::Verbatim { format, text }),
    ]
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        let list = prop::collection::vec(inner.clone(), 0..6);
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            list.clone().prop_map(Frame::Array),
            list.clone().prop_map(Frame::Set),
            list.prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (pairs, inner).prop_map(|(attributes, frame)| Frame::Attribute {
                attributes,
                frame: Box::new(frame)
            }),
        ]
    })
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode_frame(f, &mut out);
    }
    out.to_vec()
}

/// Feeds `wire` in the given chunk sizes (cycled) and collects every decoded frame.
fn decode_chunked(wire: &[u8], chunks: &[usize]) -> Vec<Frame> {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < wire.len() {
        let n = chunks[i % chunks.len()].max(1).min(wire.len() - pos);
        i += 1;
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        while let Some(f) = dec.decode(&mut buf).expect("valid input decodes") {
            out.push(f);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_frame_roundtrips(frame in frame_strategy()) {
        let wire = encode_all(std::slice::from_ref(&frame));
        let mut buf = BytesMut::from(&wire[..]);
        let decoded = Decoder::new().decode(&mut buf).unwrap();
        prop_assert_eq!(decoded, Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frames_decode_the_same_when_split_at_every_offset(
        frames in prop::collection::vec(frame_strategy(), 1..4)
    ) {
        let wire = encode_all(&frames);
        for split in 0..=wire.len() {
            let mut dec = Decoder::new();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut out = Vec::new();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&out, &frames, "split at {}", split);
        }
        prop_assert_eq!(&decode_chunked(&wire, &[1]), &frames);
    }

    #[test]
    fn frames_decode_the_same_in_random_chunks(
        frames in prop::collection::vec(frame_strategy(), 1..8),
        chunks in prop::collection::vec(1usize..64, 1..16),
    ) {
        let wire = encode_all(&frames);
        prop_assert_eq!(&decode_chunked(&wire, &chunks), &frames);
    }

    #[test]
    fn commands_decode_as_arrays_of_bulks(argv in prop::collection::vec(bytes_strategy(), 0..8)) {
        let mut buf = BytesMut::new();
        encode_command(&argv, &mut buf);
        let frame = Decoder::new().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(frame, Frame::Array(argv.into_iter().map(Frame::Bulk).collect()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }

    #[test]
    fn corrupted_frames_never_panic(frame in frame_strategy(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut wire = encode_all(std::slice::from_ref(&frame));
        let i = at.index(wire.len());
        wire[i] = byte;
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&wire[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
}

#[test]
fn codec_roundtrips_through_framed_io() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(7); // tiny buffer: frames cross it in pieces
        let mut tx = Framed::new(a, RespCodec::new());
        let mut rx = Framed::new(b, RespCodec::new());
        let frames = vec![
            Frame::bulk("x".repeat(1000)),
            Frame::Map(vec![(Frame::simple("k"), Frame::Double(2.5))]),
            Frame::Integer(i64::MIN),
        ];
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            for f in sent {
                tx.send(f).await.unwrap();
            }
        });
        for want in frames {
            assert_eq!(rx.next().await.unwrap().unwrap(), want);
        }
        writer.await.unwrap();
    });
}
