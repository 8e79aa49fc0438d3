//! The [`Frame`] value model: one variant per RESP2 / RESP3 type.

use std::fmt;

use bytes::Bytes;

/// One RESP2 or RESP3 value, as read from or written to the wire.
///
/// Byte payloads are [`Bytes`] slices of the buffer they were read from (no copy).
/// Callers match on it exhaustively, so the enum is deliberately not `#[non_exhaustive]`.
///
/// Equality treats two `Double(NaN)` as equal (so a decoded frame compares equal to the frame
/// that was encoded); everything else compares structurally.
#[derive(Clone)]
pub enum Frame {
    /// `+OK\r\n`: a simple string (no CR or LF inside).
    Simple(Bytes),
    /// `-ERR message\r\n` (or the RESP3 blob error `!<len>\r\n...`): an error reply.
    Error(Bytes),
    /// `:<i64>\r\n`: a signed 64-bit integer.
    Integer(i64),
    /// `$<len>\r\n<bytes>\r\n`: a binary-safe bulk string.
    Bulk(Bytes),
    /// `*<n>\r\n...`: an array of `n` frames.
    Array(Vec<Frame>),
    /// RESP3 `_\r\n`: the null value.
    Null,
    /// RESP2 `$-1\r\n`: the null bulk string.
    NullBulk,
    /// RESP2 `*-1\r\n`: the null array.
    NullArray,
    /// RESP3 `%<n>\r\n...`: `n` key/value pairs, in wire order.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~<n>\r\n...`: an unordered collection of `n` frames, in wire order.
    Set(Vec<Frame>),
    /// RESP3 `,<double>\r\n`, including `inf`, `-inf` and `nan`.
    Double(f64),
    /// RESP3 `#t\r\n` / `#f\r\n`.
    Boolean(bool),
    /// RESP3 `(<digits>\r\n`: an arbitrary-precision integer, kept as its decimal text.
    BigNumber(Bytes),
    /// RESP3 `=<len>\r\n<fmt>:<text>\r\n`: a string with a three-byte format such as `txt` or `mkd`.
    Verbatim {
        /// The format, e.g. `*b"txt"`.
        format: [u8; 3],
        /// The text after the `fmt:` prefix.
        text: Bytes,
    },
    /// RESP3 `><n>\r\n...`: an out-of-band push (pub/sub message, invalidation, ...).
    Push(Vec<Frame>),
    /// RESP3 `|<n>\r\n...`: attributes (key/value pairs) that precede and describe `frame`.
    Attribute {
        /// The attribute pairs.
        attributes: Vec<(Frame, Frame)>,
        /// The reply the attributes describe.
        frame: Box<Frame>,
    },
}

impl Frame {
    /// The byte payload of a `Simple`, `Bulk`, `Verbatim` (its text) or `BigNumber` frame.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::BigNumber(b) => Some(b),
            Frame::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value of an `Integer`, or of a `Simple` / `Bulk` whose text is a decimal `i64`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Frame::Integer(i) => Some(*i),
            Frame::Simple(b) | Frame::Bulk(b) => parse_i64(b),
            _ => None,
        }
    }

    /// Whether this is one of the null variants (`Null`, `NullBulk`, `NullArray`).
    pub fn is_null(&self) -> bool {
        matches!(self, Frame::Null | Frame::NullBulk | Frame::NullArray)
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// The elements of an `Array`, `Set` or `Push`.
    pub fn into_array(self) -> Option<Vec<Frame>> {
        match self {
            Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => Some(v),
            _ => None,
        }
    }

    /// An `Error` frame becomes `Err(ServerError)`; every other frame is returned as it is.
    pub fn into_result(self) -> Result<Frame, ServerError> {
        match self {
            Frame::Error(b) => Err(ServerError::new(b)),
            other => Ok(other),
        }
    }

    /// A bulk string frame holding a copy of `data` (convenient for tests and commands).
    pub fn bulk(data: impl AsRef<[u8]>) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    /// A simple string frame holding a copy of `text`.
    pub fn simple(text: impl AsRef<[u8]>) -> Frame {
        Frame::Simple(Bytes::copy_from_slice(text.as_ref()))
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        use Frame::*;
        match (self, other) {
            (Simple(a), Simple(b)) | (Error(a), Error(b)) | (Bulk(a), Bulk(b)) => a == b,
            (BigNumber(a), BigNumber(b)) => a == b,
            (Integer(a), Integer(b)) => a == b,
            (Array(a), Array(b)) | (Set(a), Set(b)) | (Push(a), Push(b)) => a == b,
            (Null, Null) | (NullBulk, NullBulk) | (NullArray, NullArray) => true,
            (Map(a), Map(b)) => a == b,
            (Double(a), Double(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Boolean(a), Boolean(b)) => a == b,
            (
                Verbatim {
                    format: fa,
                    text: ta,
                },
                Verbatim {
                    format: fb,
                    text: tb,
                },
            ) => fa == fb && ta == tb,
            (
                Attribute {
                    attributes: aa,
                    frame: fa,
                },
                Attribute {
                    attributes: ab,
                    frame: fb,
                },
            ) => aa == ab && fa == fb,
            _ => false,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Simple(b) => write!(f, "Simple({:?})", Lossy(b)),
            Frame::Error(b) => write!(f, "Error({:?})", Lossy(b)),
            Frame::Integer(i) => write!(f, "Integer({i})"),
            Frame::Bulk(b) => write!(f, "Bulk({:?})", Lossy(b)),
            Frame::Array(v) => f.debug_tuple("Array").field(v).finish(),
            Frame::Null => f.write_str("Null"),
            Frame::NullBulk => f.write_str("NullBulk"),
            Frame::NullArray => f.write_str("NullArray"),
            Frame::Map(v) => f.debug_tuple("Map").field(v).finish(),
            Frame::Set(v) => f.debug_tuple("Set").field(v).finish(),
            Frame::Double(d) => write!(f, "Double({d:?})"),
            Frame::Boolean(b) => write!(f, "Boolean({b})"),
            Frame::BigNumber(b) => write!(f, "BigNumber({:?})", Lossy(b)),
            Frame::Verbatim { format, text } => {
                write!(f, "Verbatim({:?}, {:?})", Lossy(format), Lossy(text))
            }
            Frame::Push(v) => f.debug_tuple("Push").field(v).finish(),
            Frame::Attribute { attributes, frame } => f
                .debug_struct("Attribute")
                .field("attributes", attributes)
                .field("frame", frame)
                .finish(),
        }
    }
}

/// Debug-prints bytes as an escaped string, shortened when long.
struct Lossy<'a>(&'a [u8]);

impl fmt::Debug for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 128;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        f.write_str("\"")?;
        for &b in shown {
            for c in std::ascii::escape_default(b) {
                f.write_str(char::from(c).encode_utf8(&mut [0; 4]))?;
            }
        }
        f.write_str("\"")?;
        if self.0.len() > SHOWN {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// An error reply from the server, split into its code (the first word) and the rest.
///
/// `-MOVED 3999 127.0.0.1:6381` has code `MOVED` and message `3999 127.0.0.1:6381`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerError {
    text: String,
    code_len: usize,
}

impl ServerError {
    /// Builds a server error from the raw error line (without the leading `-`).
    pub fn new(line: impl AsRef<[u8]>) -> ServerError {
        let text = String::from_utf8_lossy(line.as_ref()).into_owned();
        let code_len = text.find(' ').unwrap_or(text.len());
        ServerError { text, code_len }
    }

    /// The error code: the first word, e.g. `ERR`, `MOVED`, `READONLY`, `WRONGPASS`.
    pub fn code(&self) -> &str {
        &self.text[..self.code_len]
    }

    /// The text after the code (empty when the line is a single word).
    pub fn message(&self) -> &str {
        self.text[self.code_len..].trim_start()
    }

    /// The whole error line as the server sent it (without the leading `-`).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerError({:?})", self.text)
    }
}

impl std::error::Error for ServerError {}

/// Parses a decimal `i64` (optional leading `-`), rejecting empty input, `+`, and overflow.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    if neg {
        if v <= i64::MAX as u64 + 1 {
            Some((v as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_i64_accepts_extremes_and_rejects_overflow() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"99999999999999999999"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b"1a"), None);
    }

    #[test]
    fn server_error_splits_code_and_message() {
        let e = ServerError::new("MOVED 3999 127.0.0.1:6381");
        assert_eq!(e.code(), "MOVED");
        assert_eq!(e.message(), "3999 127.0.0.1:6381");
        let e = ServerError::new("LOADING");
        assert_eq!(e.code(), "LOADING");
        assert_eq!(e.message(), "");
    }

    #[test]
    fn nan_doubles_compare_equal() {
        assert_eq!(Frame::Double(f64::NAN), Frame::Double(f64::NAN));
        assert_ne!(Frame::Double(1.0), Frame::Double(2.0));
    }
}
