//! Encoding frames and commands straight into a [`BytesMut`].

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use crate::frame::Frame;

/// Appends the wire form of `frame` to `out`.
///
/// A `Simple` frame whose text contains CR or LF cannot be a simple string and is written as a
/// bulk string; an `Error` frame containing CR or LF is written as a RESP3 blob error (`!`).
/// `BigNumber` text is written as given (it must be digits with an optional sign).
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::{encode_frame, Frame};
///
/// let mut out = BytesMut::new();
/// encode_frame(&Frame::Array(vec![Frame::Integer(-7), Frame::bulk("hi")]), &mut out);
/// assert_eq!(&out[..], b"*2\r\n:-7\r\n$2\r\nhi\r\n");
/// ```
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Simple(s) if has_crlf(s) => put_blob(out, b'$', s),
        Frame::Simple(s) => put_line(out, b'+', s),
        Frame::Error(s) if has_crlf(s) => put_blob(out, b'!', s),
        Frame::Error(s) => put_line(out, b'-', s),
        Frame::Integer(i) => {
            out.put_u8(b':');
            put_i64(out, *i);
            out.put_slice(b"\r\n");
        }
        Frame::Bulk(b) => put_blob(out, b'$', b),
        Frame::Array(v) => put_list(out, b'*', v),
        Frame::Null => out.put_slice(b"_\r\n"),
        Frame::NullBulk => out.put_slice(b"$-1\r\n"),
        Frame::NullArray => out.put_slice(b"*-1\r\n"),
        Frame::Map(pairs) => put_pairs(out, b'%', pairs),
        Frame::Set(v) => put_list(out, b'~', v),
        Frame::Double(d) => {
            out.put_u8(b',');
            put_double(out, *d);
            out.put_slice(b"\r\n");
        }
        Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::BigNumber(b) => put_line(out, b'(', b),
        Frame::Verbatim { format, text } => {
            put_header(out, b'=', text.len() + 4);
            out.reserve(text.len() + 6);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Frame::Push(v) => put_list(out, b'>', v),
        Frame::Attribute { attributes, frame } => {
            put_pairs(out, b'|', attributes);
            encode_frame(frame, out);
        }
    }
}

/// Appends a command (an array of bulk strings, the form servers accept) to `out`.
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::encode_command;
///
/// let mut out = BytesMut::new();
/// encode_command(&["SET", "k", "v"], &mut out);
/// assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
/// ```
pub fn encode_command<A: AsRef<[u8]>>(argv: &[A], out: &mut BytesMut) {
    // Headers are at most 1 + 20 + 2 bytes, the trailing CRLF 2 more.
    let body: usize = argv.iter().map(|a| a.as_ref().len() + 25).sum();
    out.reserve(body + 25);
    encode_array_header(argv.len(), out);
    for arg in argv {
        encode_bulk(arg.as_ref(), out);
    }
}

/// Appends the header of an array of `len` elements (`*len\r\n`), for a caller that writes the elements itself
/// (see [`encode_bulk`]).
pub fn encode_array_header(len: usize, out: &mut BytesMut) {
    put_header(out, b'*', len);
}

/// Appends one bulk string (`$len\r\n<bytes>\r\n`), an element of a command built piece by piece.
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::{encode_array_header, encode_bulk};
///
/// let mut out = BytesMut::new();
/// encode_array_header(2, &mut out);
/// encode_bulk(b"GET", &mut out);
/// encode_bulk(b"k", &mut out);
/// assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
/// ```
pub fn encode_bulk(arg: &[u8], out: &mut BytesMut) {
    // Most arguments are short: the header, the bytes and the CRLF are put together on the stack and appended
    // in one copy (each append of a few bytes costs a call and a capacity check).
    let mut buf = [0u8; HEADER_MAX + SMALL_BULK + 2];
    let n = header(&mut buf, b'$', arg.len());
    if arg.len() <= SMALL_BULK {
        buf[n..n + arg.len()].copy_from_slice(arg);
        buf[n + arg.len()..n + arg.len() + 2].copy_from_slice(b"\r\n");
        out.put_slice(&buf[..n + arg.len() + 2]);
    } else {
        out.reserve(n + arg.len() + 2);
        out.put_slice(&buf[..n]);
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Arguments up to this many bytes are encoded on the stack and appended in one copy.
const SMALL_BULK: usize = 64;

/// The longest header: a type byte, 20 digits, CRLF.
const HEADER_MAX: usize = 23;

fn has_crlf(s: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', s).is_some()
}

fn put_line(out: &mut BytesMut, kind: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(kind);
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

fn put_blob(out: &mut BytesMut, kind: u8, s: &[u8]) {
    put_header(out, kind, s.len());
    out.reserve(s.len() + 2);
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

fn put_list(out: &mut BytesMut, kind: u8, v: &[Frame]) {
    put_header(out, kind, v.len());
    for f in v {
        encode_frame(f, out);
    }
}

fn put_pairs(out: &mut BytesMut, kind: u8, pairs: &[(Frame, Frame)]) {
    put_header(out, kind, pairs.len());
    for (k, v) in pairs {
        encode_frame(k, out);
        encode_frame(v, out);
    }
}

/// Writes `<kind><len>\r\n`.
fn put_header(out: &mut BytesMut, kind: u8, len: usize) {
    let mut buf = [0u8; HEADER_MAX];
    let n = header(&mut buf, kind, len);
    out.put_slice(&buf[..n]);
}

/// Writes `<kind><len>\r\n` at the start of `buf` (at least [`HEADER_MAX`] bytes) and returns its length.
fn header(buf: &mut [u8], kind: u8, len: usize) -> usize {
    let mut digits = [0u8; 20];
    let d = u64_digits(len as u64, &mut digits);
    buf[0] = kind;
    buf[1..1 + d.len()].copy_from_slice(d);
    buf[1 + d.len()..3 + d.len()].copy_from_slice(b"\r\n");
    3 + d.len()
}

/// Writes a decimal `i64` without allocating.
pub(crate) fn put_i64(out: &mut BytesMut, v: i64) {
    if v < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, v.unsigned_abs());
}

/// Writes a decimal `u64` without allocating.
pub(crate) fn put_u64(out: &mut BytesMut, n: u64) {
    let mut buf = [0u8; 20];
    out.put_slice(u64_digits(n, &mut buf));
}

/// The decimal digits of `n`, written right to left into `buf`, two at a time from a lookup table.
fn u64_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

/// Writes a double the way RESP3 spells it: `inf`, `-inf`, `nan`, or the shortest decimal that
/// reads back to the same value (exponent form for very large or small magnitudes).
fn put_double(out: &mut BytesMut, d: f64) {
    if d.is_nan() {
        out.put_slice(b"nan");
    } else if d.is_infinite() {
        out.put_slice(if d > 0.0 { b"inf" } else { b"-inf" });
    } else {
        let a = d.abs();
        // Writing into a BytesMut cannot fail.
        let _ = if a != 0.0 && !(1e-5..1e16).contains(&a) {
            write!(out, "{d:e}")
        } else {
            write!(out, "{d}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enc(f: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(f, &mut out);
        out.to_vec()
    }

    #[test]
    fn integers_format_like_std() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            -1,
            -10,
            i64::MAX,
            i64::MIN,
            1 << 40,
        ] {
            let mut out = BytesMut::new();
            put_i64(&mut out, v);
            assert_eq!(&out[..], v.to_string().as_bytes());
        }
        let mut out = BytesMut::new();
        put_u64(&mut out, u64::MAX);
        assert_eq!(&out[..], u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn bulks_and_headers_of_every_size_class_read_as_std_formats_them() {
        for len in [0usize, 1, 9, 10, 63, 64, 65, 99, 100, 1000, 100_000] {
            let arg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = BytesMut::from(&b"x"[..]);
            encode_bulk(&arg, &mut out);
            let mut expected = format!("x${len}\r\n").into_bytes();
            expected.extend_from_slice(&arg);
            expected.extend_from_slice(b"\r\n");
            assert_eq!(&out[..], &expected[..], "{len}-byte bulk");
        }
        for len in [0usize, 7, 10, 4_294_967_296, usize::MAX] {
            let mut out = BytesMut::new();
            encode_array_header(len, &mut out);
            assert_eq!(&out[..], format!("*{len}\r\n").as_bytes());
        }
    }

    #[test]
    fn doubles_use_resp3_spellings() {
        assert_eq!(enc(&Frame::Double(f64::INFINITY)), b",inf\r\n");
        assert_eq!(enc(&Frame::Double(f64::NEG_INFINITY)), b",-inf\r\n");
        assert_eq!(enc(&Frame::Double(f64::NAN)), b",nan\r\n");
        assert_eq!(enc(&Frame::Double(1.5)), b",1.5\r\n");
        assert_eq!(enc(&Frame::Double(1e300)), b",1e300\r\n");
    }

    #[test]
    fn strings_with_crlf_fall_back_to_binary_safe_forms() {
        assert_eq!(enc(&Frame::simple("a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(
            enc(&Frame::Error(Bytes::from_static(b"E\nx"))),
            b"!3\r\nE\nx\r\n"
        );
    }

    #[test]
    fn verbatim_and_attribute_encode() {
        let f = Frame::Verbatim {
            format: *b"txt",
            text: Bytes::from_static(b"hi"),
        };
        assert_eq!(enc(&f), b"=6\r\ntxt:hi\r\n");
        let f = Frame::Attribute {
            attributes: vec![(Frame::simple("a"), Frame::Integer(1))],
            frame: Box::new(Frame::Boolean(true)),
        };
        assert_eq!(enc(&f), b"|1\r\n+a\r\n:1\r\n#t\r\n");
    }
}
