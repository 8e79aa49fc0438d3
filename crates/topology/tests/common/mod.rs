//! Helpers shared by the integration tests: turning redis-rs replies into ferry frames, so replies
//! captured with the independent client can be fed to ferry-topology's parsers.
#![allow(dead_code)]

use bytes::Bytes;
use ferry_resp::Frame;

/// Converts a redis-rs reply into the equivalent RESP frame.
pub fn to_frame(value: &redis::Value) -> Frame {
    use redis::Value as V;
    match value {
        V::Nil => Frame::NullBulk,
        V::Int(i) => Frame::Integer(*i),
        V::BulkString(b) => Frame::Bulk(Bytes::copy_from_slice(b)),
        V::Array(items) => Frame::Array(items.iter().map(to_frame).collect()),
        V::SimpleString(s) => Frame::Simple(Bytes::copy_from_slice(s.as_bytes())),
        V::Okay => Frame::Simple(Bytes::from_static(b"OK")),
        V::Map(pairs) => Frame::Map(
            pairs
                .iter()
                .map(|(k, v)| (to_frame(k), to_frame(v)))
                .collect(),
        ),
        V::Attribute { data, attributes } => Frame::Attribute {
            attributes: attributes
                .iter()
                .map(|(k, v)| (to_frame(k), to_frame(v)))
                .collect(),
            frame: Box::new(to_frame(data)),
        },
        V::Set(items) => Frame::Set(items.iter().map(to_frame).collect()),
        V::Double(d) => Frame::Double(*d),
        V::Boolean(b) => Frame::Boolean(*b),
        V::VerbatimString { text, .. } => Frame::Bulk(Bytes::copy_from_slice(text.as_bytes())),
        V::Push { data, .. } => Frame::Push(data.iter().map(to_frame).collect()),
        V::ServerError(e) => Frame::Error(Bytes::from(format!(
            "{} {}",
            e.code(),
            e.details().unwrap_or("")
        ))),
        other => Frame::Bulk(Bytes::from(format!("{other:?}"))),
    }
}

/// Runs one command with the independent client and returns the raw reply as a frame.
pub fn query(con: &mut redis::Connection, argv: &[&[u8]]) -> Frame {
    let mut cmd = redis::cmd(std::str::from_utf8(argv[0]).expect("command name is UTF-8"));
    for a in &argv[1..] {
        cmd.arg(*a);
    }
    let value: redis::Value = cmd
        .query(con)
        .unwrap_or_else(|e| panic!("{:?} failed: {e}", String::from_utf8_lossy(argv[0])));
    to_frame(&value)
}
