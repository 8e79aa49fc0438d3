//! The streaming, zero-copy RESP2/RESP3 decoder.
//!
//! Decoding is check-then-build. The check walks the buffer without allocating frames and
//! records what it found as small tokens (kind + byte offsets) in a scratch vector the decoder
//! keeps. When the buffer ends before the frame does, the check stops and remembers where it was:
//! the offset of the next token, the aggregates still open, how far a line was already searched
//! for its CRLF, and the buffer length needed before another attempt can make progress. The next
//! call resumes there, so a 100 MiB bulk arriving in 64 KiB pieces costs one comparison per piece,
//! not a rescan. Once the whole frame is present, the frame's bytes are split off the buffer and
//! frozen, and every payload becomes a [`Bytes`] slice of them.

use bytes::{Buf, Bytes, BytesMut};

use crate::command::{ArgSpans, Command};
use crate::error::Error;
use crate::frame::Frame;

/// Bounds on what a peer may declare. Exceeding one gives [`Error::LimitExceeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (and verbatim / blob error) accepted, in bytes; also bounds simple
    /// string, error, double and big number lines. Default 512 MiB, Redis's `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// Deepest nesting of aggregates (array, map, set, push, attribute). Default 128.
    pub max_depth: usize,
    /// Most elements one aggregate may declare (a map's pairs count twice). Default 2^28.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_depth: 128,
            max_elements: 1 << 28,
        }
    }
}

/// Longest line allowed for a length, integer, boolean or null line.
const MAX_HEADER_LINE: usize = 32;

/// A byte range of the frame being decoded, relative to the start of the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// What the check found, in wire order. Aggregates carry their declared element count.
#[derive(Debug, Clone, Copy)]
enum Token {
    Simple(Span),
    Error(Span),
    Integer(i64),
    Bulk(Span),
    NullBulk,
    NullArray,
    Null,
    Double(f64),
    Boolean(bool),
    BigNumber(Span),
    Verbatim([u8; 3], Span),
    Array(usize),
    Map(usize),
    Set(usize),
    Push(usize),
    Attribute(usize),
}

/// The outcome of checking one line: its content span and where the next token starts.
enum Line {
    Complete { content: Span, next: usize },
    Incomplete,
}

/// A streaming RESP2/RESP3 decoder.
///
/// Feed it a growing [`BytesMut`] (append only between calls): [`Decoder::decode`] returns the
/// next complete frame and removes its bytes, or `Ok(None)` when more bytes are needed. Input may
/// be split at any byte. Payloads are slices of the buffer, not copies.
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::{Decoder, Frame};
///
/// let mut dec = Decoder::new();
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1"[..]);
/// assert_eq!(dec.decode(&mut buf).unwrap(), None);
/// buf.extend_from_slice(b"\r\nk\r\n");
/// let frame = dec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(frame, Frame::Array(vec![Frame::bulk("GET"), Frame::bulk("k")]));
/// assert!(buf.is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    limits: Limits,
    /// Tokens of the frame being checked.
    tokens: Vec<Token>,
    /// Remaining element count of each open aggregate, innermost last.
    open: Vec<usize>,
    /// Offset where the next token starts.
    pos: usize,
    /// Offset from which the CRLF search of the line at `pos` resumes (0 = from the start).
    scanned: usize,
    /// Buffer length below which a new attempt cannot progress.
    need: usize,
    /// The saved progress belongs to [`Decoder::decode_command`] rather than [`Decoder::decode`].
    command_mode: bool,
    /// Command path: arguments still expected after the ones in `cmd_args`.
    cmd_left: usize,
    /// Command path: ranges of the arguments checked so far.
    cmd_args: ArgSpans,
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> Decoder {
        Decoder {
            limits,
            ..Decoder::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets a partly checked frame. Call this after consuming bytes from the buffer by other
    /// means (for example raw reads), since the saved progress refers to buffer offsets.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.open.clear();
        self.pos = 0;
        self.scanned = 0;
        self.need = 0;
        self.cmd_left = 0;
        self.cmd_args.clear();
    }

    /// Whether a frame has been partly checked and waits for more bytes.
    pub fn is_pending(&self) -> bool {
        self.pos > 0 || self.scanned > 0
    }

    /// Decodes the next frame from the front of `buf`, removing exactly its bytes (so
    /// `len_before - len_after` is the frame's wire size, e.g. for replication offsets).
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (nothing is removed, and the
    /// progress made is remembered). Between calls the caller may only append to `buf`.
    /// Errors: [`Error::Protocol`] for malformed input, [`Error::LimitExceeded`] when a declared
    /// length, nesting depth or element count is above the limits. After an error the stream is
    /// not recoverable; the decoder itself is reset.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if self.command_mode {
            // Progress saved by `decode_command` does not apply here: start the frame over.
            self.reset();
            self.command_mode = false;
        }
        if buf.len() < self.need {
            return Ok(None);
        }
        if self.pos > buf.len() || self.scanned > buf.len() {
            // The buffer was changed behind our back: start over rather than trust stale offsets.
            self.reset();
        }
        match self.check(buf) {
            Ok(true) => {
                let end = self.pos;
                let data = buf.split_to(end).freeze();
                let frame = Builder::new(&self.tokens, data).build();
                self.reset();
                Ok(Some(frame))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    /// Decodes the next command (a RESP array of one or more bulk strings) from the front of
    /// `buf`, removing exactly its bytes, like [`Decoder::decode`] does for frames.
    ///
    /// This is the fast path for streams made only of commands: what a server reads from its
    /// clients, and what a master sends its replicas after the RDB. The whole command stays one
    /// [`Bytes`] (see [`Command`]): no per-argument reference counting and, for up to six
    /// arguments, no allocation. Inline commands (`PING\r\n` typed by hand) are not accepted:
    /// a replication stream never carries them, and servers only take them as a courtesy to
    /// telnet users.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a command (nothing is removed, progress
    /// is remembered, so a command split at any byte is never rescanned). Between calls the
    /// caller may only append to `buf`. Errors: [`Error::NotACommand`] for valid RESP that is
    /// not a command (another top-level type, `*0` or `*-1`, or an element that is not a bulk
    /// string, such as an integer, a null bulk or a nested array); [`Error::Protocol`] for
    /// malformed RESP; [`Error::LimitExceeded`] for a bulk length or an argument count above
    /// the [`Limits`] (`max_bulk_len`, `max_elements`). After an error the stream is not
    /// recoverable; the decoder itself is reset.
    ///
    /// Calls may be mixed with [`Decoder::decode`] between whole items; switching method in the
    /// middle of an item starts that item over (correct, only slower).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use ferry_resp::{Decoder, Error};
    ///
    /// let mut dec = Decoder::new();
    /// let mut buf = BytesMut::from(&b"*2\r\n$6\r\nSELECT\r\n$1"[..]);
    /// assert!(dec.decode_command(&mut buf).unwrap().is_none());
    /// buf.extend_from_slice(b"\r\n3\r\n+PONG\r\n");
    /// let cmd = dec.decode_command(&mut buf).unwrap().unwrap();
    /// assert_eq!((cmd.name(), cmd.arg(1)), (&b"SELECT"[..], Some(&b"3"[..])));
    /// assert_eq!(cmd.len_on_wire(), 23);
    /// assert!(matches!(dec.decode_command(&mut buf), Err(Error::NotACommand(_))));
    /// ```
    pub fn decode_command(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, Error> {
        if !self.command_mode {
            // Progress saved by `decode` does not apply here: start the item over.
            self.reset();
            self.command_mode = true;
        }
        if buf.len() < self.need {
            return Ok(None);
        }
        if self.pos > buf.len() {
            // The buffer was changed behind our back: start over rather than trust stale offsets.
            self.reset();
        }
        match self.check_command(buf) {
            Ok(true) => {
                let raw = buf.split_to(self.pos).freeze();
                let args = std::mem::take(&mut self.cmd_args);
                self.pos = 0;
                self.need = 0;
                self.cmd_left = 0;
                Ok(Some(Command::from_parts(raw, args)))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    /// Checks a command from `self.pos`; true when the whole command has been checked. On
    /// `false`, `pos`, `cmd_left`, `cmd_args` and `need` say where to resume.
    #[inline]
    fn check_command(&mut self, buf: &[u8]) -> Result<bool, Error> {
        let mut pos = self.pos;
        if pos == 0 {
            match buf.first() {
                Some(b'*') => {}
                Some(&kind) => return Err(not_a_command_at(kind, 0)),
                None => {
                    self.need = 1;
                    return Ok(false);
                }
            }
            let (n, next) = match parse_number(buf, 1, "invalid aggregate length")? {
                Number::Complete(n, next) => (n, next),
                Number::Incomplete(need) => {
                    self.need = need;
                    return Ok(false);
                }
            };
            let n = match usize::try_from(n) {
                Ok(0) => return Err(Error::NotACommand("empty array".into())),
                Ok(n) => n,
                Err(_) if n == -1 => return Err(Error::NotACommand("null array".into())),
                Err(_) => return Err(Error::Protocol(format!("invalid aggregate length {n}"))),
            };
            if n > self.limits.max_elements {
                return Err(Error::LimitExceeded(format!(
                    "aggregate of {n} elements is above the limit of {}",
                    self.limits.max_elements
                )));
            }
            if self.limits.max_depth == 0 {
                return Err(Error::LimitExceeded(
                    "nesting deeper than the limit of 0".into(),
                ));
            }
            self.cmd_left = n;
            pos = next;
        }
        while self.cmd_left > 0 {
            let Some(&kind) = buf.get(pos) else {
                self.pos = pos;
                self.need = pos + 1;
                return Ok(false);
            };
            if kind != b'$' {
                return Err(not_a_command_at(kind, pos));
            }
            let (len, next) = match parse_number(buf, pos + 1, "invalid bulk length")? {
                Number::Complete(len, next) => (len, next),
                Number::Incomplete(need) => {
                    self.pos = pos;
                    self.need = need;
                    return Ok(false);
                }
            };
            let Ok(len) = usize::try_from(len) else {
                return Err(if len == -1 {
                    Error::NotACommand(format!("null bulk string at offset {pos}"))
                } else {
                    Error::Protocol(format!("invalid bulk length {len}"))
                });
            };
            if len > self.limits.max_bulk_len {
                return Err(Error::LimitExceeded(format!(
                    "bulk length {len} is above the limit of {} bytes",
                    self.limits.max_bulk_len
                )));
            }
            let end = next.saturating_add(len).saturating_add(2);
            if buf.len() < end {
                self.pos = pos;
                self.need = end;
                return Ok(false);
            }
            if buf[end - 2] != b'\r' || buf[end - 1] != b'\n' {
                return Err(Error::Protocol("bulk string not terminated by CRLF".into()));
            }
            self.cmd_args.push(Span {
                start: next,
                end: end - 2,
            });
            self.cmd_left -= 1;
            pos = end;
        }
        self.pos = pos;
        Ok(true)
    }

    /// Walks tokens from `self.pos`; true when a whole frame has been checked.
    fn check(&mut self, buf: &[u8]) -> Result<bool, Error> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                self.need = self.pos + 1;
                return Ok(false);
            };
            let complete = match kind {
                b'+' | b'-' | b'(' | b',' => {
                    let Line::Complete { content, next } =
                        self.line(buf, self.limits.max_bulk_len)?
                    else {
                        return Ok(false);
                    };
                    let text = &buf[content.start..content.end];
                    let token = match kind {
                        b'+' => Token::Simple(content),
                        b'-' => Token::Error(content),
                        b'(' => {
                            check_big_number(text)?;
                            Token::BigNumber(content)
                        }
                        _ => Token::Double(parse_double(text)?),
                    };
                    self.push_scalar(token, next)
                }
                b'_' | b'#' => {
                    let Line::Complete { content, next } = self.line(buf, MAX_HEADER_LINE)? else {
                        return Ok(false);
                    };
                    let text = &buf[content.start..content.end];
                    let token = match (kind, text) {
                        (b'_', b"") => Token::Null,
                        (b'_', _) => return Err(protocol("invalid null", text)),
                        (_, b"t") => Token::Boolean(true),
                        (_, b"f") => Token::Boolean(false),
                        _ => return Err(protocol("invalid boolean", text)),
                    };
                    self.push_scalar(token, next)
                }
                b':' => {
                    let Some((v, next)) = self.number(buf, "invalid integer")? else {
                        return Ok(false);
                    };
                    self.push_scalar(Token::Integer(v), next)
                }
                b'$' | b'=' | b'!' => {
                    let Some((len, next)) = self.number(buf, "invalid bulk length")? else {
                        return Ok(false);
                    };
                    if len == -1 && kind == b'$' {
                        self.push_scalar(Token::NullBulk, next)
                    } else {
                        let len = usize::try_from(len)
                            .map_err(|_| Error::Protocol(format!("invalid bulk length {len}")))?;
                        if len > self.limits.max_bulk_len {
                            return Err(Error::LimitExceeded(format!(
                                "bulk length {len} is above the limit of {} bytes",
                                self.limits.max_bulk_len
                            )));
                        }
                        let end = next.saturating_add(len).saturating_add(2);
                        if buf.len() < end {
                            self.need = end;
                            return Ok(false);
                        }
                        if buf[end - 2] != b'\r' || buf[end - 1] != b'\n' {
                            return Err(Error::Protocol(
                                "bulk string not terminated by CRLF".into(),
                            ));
                        }
                        let body = Span {
                            start: next,
                            end: end - 2,
                        };
                        let token = match kind {
                            b'$' => Token::Bulk(body),
                            b'!' => Token::Error(body),
                            _ => verbatim(buf, body)?,
                        };
                        self.push_scalar(token, end)
                    }
                }
                b'*' | b'%' | b'~' | b'>' | b'|' => {
                    let Some((n, next)) = self.number(buf, "invalid aggregate length")? else {
                        return Ok(false);
                    };
                    if n == -1 && kind == b'*' {
                        self.push_scalar(Token::NullArray, next)
                    } else {
                        let n = usize::try_from(n).map_err(|_| {
                            Error::Protocol(format!("invalid aggregate length {n}"))
                        })?;
                        self.open_aggregate(kind, n, next)?
                    }
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "invalid type byte 0x{other:02x} at offset {}",
                        self.pos
                    )))
                }
            };
            if complete {
                return Ok(true);
            }
        }
    }

    /// Parses the decimal `i64` line that starts at `self.pos` (after its type byte); see
    /// [`parse_number`]. Returns the value and where the next token starts, or `None` (with
    /// `self.need` set) when the line is incomplete.
    #[inline]
    fn number(&mut self, buf: &[u8], what: &str) -> Result<Option<(i64, usize)>, Error> {
        match parse_number(buf, self.pos + 1, what)? {
            Number::Complete(v, next) => Ok(Some((v, next))),
            Number::Incomplete(need) => {
                self.need = need;
                Ok(None)
            }
        }
    }

    /// Finds the CRLF ending the line that starts at `self.pos` (after its type byte).
    ///
    /// Resumes the search where the last attempt stopped; lines longer than `max` are refused.
    fn line(&mut self, buf: &[u8], max: usize) -> Result<Line, Error> {
        let start = self.pos + 1;
        let from = self.scanned.max(start);
        let limit_end = start.saturating_add(max).saturating_add(1).min(buf.len());
        let found = if from < limit_end {
            memchr::memchr2(b'\r', b'\n', &buf[from..limit_end]).map(|i| from + i)
        } else {
            None
        };
        match found {
            Some(lf) if buf[lf] == b'\n' => {
                Err(Error::Protocol(format!("LF without CR at offset {lf}")))
            }
            Some(cr) => {
                if cr + 1 >= buf.len() {
                    self.scanned = cr;
                    self.need = cr + 2;
                    return Ok(Line::Incomplete);
                }
                if buf[cr + 1] != b'\n' {
                    return Err(Error::Protocol(format!("CR without LF at offset {}", cr)));
                }
                self.scanned = 0;
                Ok(Line::Complete {
                    content: Span { start, end: cr },
                    next: cr + 2,
                })
            }
            None if buf.len() - start > max => {
                if max == MAX_HEADER_LINE {
                    Err(protocol("line too long", &buf[start..start + max]))
                } else {
                    Err(Error::LimitExceeded(format!(
                        "line longer than the limit of {max} bytes"
                    )))
                }
            }
            None => {
                self.scanned = buf.len();
                self.need = buf.len() + 1;
                Ok(Line::Incomplete)
            }
        }
    }

    /// Records a scalar ending at `next`; true when it completes the top-level frame.
    fn push_scalar(&mut self, token: Token, next: usize) -> bool {
        self.tokens.push(token);
        self.pos = next;
        self.value_done()
    }

    /// Records an aggregate header declaring `n` elements; true when it completes the frame
    /// (an empty aggregate).
    fn open_aggregate(&mut self, kind: u8, n: usize, next: usize) -> Result<bool, Error> {
        if n > self.limits.max_elements {
            return Err(Error::LimitExceeded(format!(
                "aggregate of {n} elements is above the limit of {}",
                self.limits.max_elements
            )));
        }
        if self.open.len() >= self.limits.max_depth {
            return Err(Error::LimitExceeded(format!(
                "nesting deeper than the limit of {}",
                self.limits.max_depth
            )));
        }
        let pairs = |n: usize| {
            n.checked_mul(2)
                .filter(|c| *c <= self.limits.max_elements)
                .ok_or_else(|| {
                    Error::LimitExceeded(format!(
                        "map of {n} pairs is above the limit of {} elements",
                        self.limits.max_elements
                    ))
                })
        };
        let (token, children) = match kind {
            b'*' => (Token::Array(n), n),
            b'~' => (Token::Set(n), n),
            b'>' => (Token::Push(n), n),
            b'%' => (Token::Map(n), pairs(n)?),
            _ => (Token::Attribute(n), pairs(n)?.saturating_add(1)),
        };
        self.tokens.push(token);
        self.pos = next;
        if children == 0 {
            Ok(self.value_done())
        } else {
            self.open.push(children);
            Ok(false)
        }
    }

    /// Counts one finished value against the open aggregates, closing those that are full.
    /// True when nothing is left open: the top-level frame is complete.
    fn value_done(&mut self) -> bool {
        while let Some(top) = self.open.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }
}

/// Turns the tokens of a checked frame into a [`Frame`] over the frozen frame bytes.
///
/// The tokens were produced by a successful check of `data`, so spans are in bounds and counts
/// match; the recursion depth is bounded by [`Limits::max_depth`]. Each payload is a slice of
/// `data` (one reference count increment), except the last one, which takes `data` itself.
struct Builder<'a> {
    tokens: &'a [Token],
    next: usize,
    data: Bytes,
    /// Index of the last token that carries a byte span.
    last_span: usize,
}

impl<'a> Builder<'a> {
    fn new(tokens: &'a [Token], data: Bytes) -> Builder<'a> {
        let last_span = tokens
            .iter()
            .rposition(|t| {
                matches!(
                    t,
                    Token::Simple(_)
                        | Token::Error(_)
                        | Token::Bulk(_)
                        | Token::BigNumber(_)
                        | Token::Verbatim(..)
                )
            })
            .unwrap_or(usize::MAX);
        Builder {
            tokens,
            next: 0,
            data,
            last_span,
        }
    }

    /// The bytes of `span` for the token at `index`.
    fn slice(&mut self, index: usize, span: Span) -> Bytes {
        if index == self.last_span {
            let mut own = std::mem::take(&mut self.data);
            own.truncate(span.end);
            own.advance(span.start);
            own
        } else {
            self.data.slice(span.start..span.end)
        }
    }

    fn build(&mut self) -> Frame {
        let index = self.next;
        let Some(&token) = self.tokens.get(index) else {
            // Unreachable after a successful check; a null is safer than a panic.
            return Frame::Null;
        };
        self.next += 1;
        match token {
            Token::Simple(s) => Frame::Simple(self.slice(index, s)),
            Token::Error(s) => Frame::Error(self.slice(index, s)),
            Token::Integer(v) => Frame::Integer(v),
            Token::Bulk(s) => Frame::Bulk(self.slice(index, s)),
            Token::NullBulk => Frame::NullBulk,
            Token::NullArray => Frame::NullArray,
            Token::Null => Frame::Null,
            Token::Double(d) => Frame::Double(d),
            Token::Boolean(b) => Frame::Boolean(b),
            Token::BigNumber(s) => Frame::BigNumber(self.slice(index, s)),
            Token::Verbatim(format, s) => Frame::Verbatim {
                format,
                text: self.slice(index, s),
            },
            Token::Array(n) => Frame::Array(self.list(n)),
            Token::Set(n) => Frame::Set(self.list(n)),
            Token::Push(n) => Frame::Push(self.list(n)),
            Token::Map(n) => Frame::Map(self.pairs(n)),
            Token::Attribute(n) => {
                let attributes = self.pairs(n);
                let frame = Box::new(self.build());
                Frame::Attribute { attributes, frame }
            }
        }
    }

    /// Builds `n` consecutive frames. `n` was checked against tokens actually received, so the
    /// capacity is bounded by the input, not by a bare declaration.
    fn list(&mut self, n: usize) -> Vec<Frame> {
        let mut v = Vec::with_capacity(n.min(self.tokens.len() - self.next));
        for _ in 0..n {
            // Bulk elements (every command argument) skip the recursive call.
            let frame = match self.tokens.get(self.next) {
                Some(&Token::Bulk(s)) => {
                    self.next += 1;
                    Frame::Bulk(self.slice(self.next - 1, s))
                }
                _ => self.build(),
            };
            v.push(frame);
        }
        v
    }

    /// Builds `n` consecutive key/value pairs.
    fn pairs(&mut self, n: usize) -> Vec<(Frame, Frame)> {
        let mut v = Vec::with_capacity(n.min((self.tokens.len() - self.next) / 2));
        for _ in 0..n {
            let k = self.build();
            let val = self.build();
            v.push((k, val));
        }
        v
    }
}

/// The outcome of parsing a length or integer line.
enum Number {
    /// The value and the offset just past its CRLF.
    Complete(i64, usize),
    /// The line is cut short; the buffer length needed before trying again.
    Incomplete(usize),
}

/// Parses the decimal `i64` line starting at `start` (just after its type byte) in one pass,
/// without a separate CRLF search: the common case of every length and integer line.
#[inline(always)]
fn parse_number(buf: &[u8], start: usize, what: &str) -> Result<Number, Error> {
    let mut i = start;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let digits_start = i;
    let mut v: u64 = 0;
    while let Some(&c) = buf.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i - digits_start == 19 {
            return Err(protocol(what, &buf[start..=i]));
        }
        v = v * 10 + u64::from(d);
        i += 1;
    }
    let Some(&c) = buf.get(i) else {
        return Ok(Number::Incomplete(i + 1));
    };
    if c != b'\r' || i == digits_start {
        return Err(protocol(what, &buf[start..(i + 1).min(buf.len())]));
    }
    match buf.get(i + 1) {
        None => return Ok(Number::Incomplete(i + 2)),
        Some(b'\n') => {}
        Some(_) => return Err(protocol(what, &buf[start..i + 2])),
    }
    let v = if neg {
        if v > i64::MAX as u64 + 1 {
            return Err(protocol(what, &buf[start..i]));
        }
        (v as i64).wrapping_neg()
    } else {
        i64::try_from(v).map_err(|_| protocol(what, &buf[start..i]))?
    };
    Ok(Number::Complete(v, i + 2))
}

/// Checks a verbatim string body (`fmt:text`) and returns its token.
fn verbatim(buf: &[u8], body: Span) -> Result<Token, Error> {
    let b = &buf[body.start..body.end];
    if b.len() < 4 || b[3] != b':' {
        return Err(protocol("verbatim string without a format prefix", b));
    }
    Ok(Token::Verbatim(
        [b[0], b[1], b[2]],
        Span {
            start: body.start + 4,
            end: body.end,
        },
    ))
}

/// Parses a RESP3 double line: decimal or exponent notation, `inf`, `-inf`, `nan`.
fn parse_double(text: &[u8]) -> Result<f64, Error> {
    let s = std::str::from_utf8(text).map_err(|_| protocol("invalid double", text))?;
    match s {
        "inf" | "+inf" => return Ok(f64::INFINITY),
        "-inf" => return Ok(f64::NEG_INFINITY),
        "nan" | "-nan" => return Ok(f64::NAN),
        _ => {}
    }
    // Rust's parser also takes "infinity" and "NaN" spellings; RESP3 does not use them.
    if s.is_empty()
        || s.bytes()
            .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    {
        return Err(protocol("invalid double", text));
    }
    s.parse::<f64>()
        .map_err(|_| protocol("invalid double", text))
}

/// Checks a RESP3 big number line: an optional sign and at least one digit.
fn check_big_number(text: &[u8]) -> Result<(), Error> {
    let digits = match text.first() {
        Some(b'-') | Some(b'+') => &text[1..],
        _ => text,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(protocol("invalid big number", text));
    }
    Ok(())
}

/// The error for type byte `kind` at `offset` where a command (or one of its bulk strings) was
/// expected: [`Error::NotACommand`] for a valid RESP type, [`Error::Protocol`] otherwise.
fn not_a_command_at(kind: u8, offset: usize) -> Error {
    let what = match kind {
        b'+' => "simple string",
        b'-' => "error",
        b':' => "integer",
        b'$' => "bulk string",
        b'*' => "array",
        b'_' => "null",
        b',' => "double",
        b'#' => "boolean",
        b'(' => "big number",
        b'=' => "verbatim string",
        b'!' => "blob error",
        b'%' => "map",
        b'~' => "set",
        b'>' => "push",
        b'|' => "attribute",
        _ => return Error::Protocol(format!("invalid type byte 0x{kind:02x} at offset {offset}")),
    };
    if offset == 0 {
        Error::NotACommand(format!(
            "{what} where an array of bulk strings was expected"
        ))
    } else {
        Error::NotACommand(format!(
            "{what} at offset {offset} where a bulk string argument was expected"
        ))
    }
}

/// A protocol error quoting (a prefix of) the offending bytes.
fn protocol(what: &str, bytes: &[u8]) -> Error {
    let shown = &bytes[..bytes.len().min(40)];
    Error::Protocol(format!("{what}: {:?}", String::from_utf8_lossy(shown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Frame>, Error> {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn huge_declared_bulk_length_is_a_limit_error() {
        let err = decode_all(b"$999999999999\r\n").unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    }

    #[test]
    fn bulk_length_above_i64_is_a_protocol_error() {
        let err = decode_all(b"$99999999999999999999999\r\n").unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    }

    #[test]
    fn huge_declared_array_is_a_limit_error_without_allocation() {
        let err = decode_all(b"*999999999999\r\n").unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
        // Below the limit, a big declaration just waits for the elements.
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&b"*100000000\r\n:1\r\n"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn deep_nesting_is_a_limit_error() {
        let input = b"*1\r\n".repeat(10_000);
        let err = decode_all(&input).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    }

    #[test]
    fn nesting_at_the_limit_decodes() {
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        let mut dec = Decoder::with_limits(limits);
        let mut buf = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert!(dec.decode(&mut buf).unwrap().is_some());
        let mut buf = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert!(matches!(dec.decode(&mut buf), Err(Error::LimitExceeded(_))));
    }

    #[test]
    fn garbage_type_byte_is_a_protocol_error() {
        let err = decode_all(b"@hello\r\n").unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        let err = decode_all(b"*2\r\n:1\r\nX\r\n").unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    }

    #[test]
    fn malformed_lines_are_protocol_errors() {
        for bad in [
            &b":12a\r\n"[..],
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"#x\r\n",
            b"_x\r\n",
            b",1.5x\r\n",
            b",infinity\r\n",
            b"(12a\r\n",
            b"=3\r\ntxt\r\n",
            b"=5\r\ntxt-x\r\n",
            b"+ok\rx",
            b"+o\nk\r\n",
            b"*-2\r\n",
            b"%-1\r\n",
            b"$?\r\n",
        ] {
            let err = decode_all(bad).unwrap_err();
            assert!(
                matches!(err, Error::Protocol(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn overlong_length_line_is_rejected_before_crlf_arrives() {
        let err = decode_all(&[b'$'; 100]).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    }

    #[test]
    fn overlong_simple_line_is_a_limit_error() {
        let limits = Limits {
            max_bulk_len: 16,
            ..Limits::default()
        };
        let mut dec = Decoder::with_limits(limits);
        let mut buf = BytesMut::from(&b"+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert!(matches!(dec.decode(&mut buf), Err(Error::LimitExceeded(_))));
    }

    #[test]
    fn every_type_decodes() {
        let input = b"+OK\r\n-ERR bad\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n_\r\n\
            ,3.5\r\n,inf\r\n,-inf\r\n,nan\r\n#t\r\n#f\r\n(3492890328409238509324850943850943825024385\r\n\
            =15\r\ntxt:Some string\r\n!8\r\nSYNTAX x\r\n%1\r\n+k\r\n:1\r\n~2\r\n:1\r\n:2\r\n\
            >2\r\n+message\r\n+hi\r\n|1\r\n+key-popularity\r\n:90\r\n+real\r\n*0\r\n";
        let frames = decode_all(input).unwrap();
        let expected = vec![
            Frame::simple("OK"),
            Frame::Error(Bytes::from_static(b"ERR bad")),
            Frame::Integer(-42),
            Frame::bulk("hello"),
            Frame::bulk(""),
            Frame::NullBulk,
            Frame::NullArray,
            Frame::Null,
            Frame::Double(3.5),
            Frame::Double(f64::INFINITY),
            Frame::Double(f64::NEG_INFINITY),
            Frame::Double(f64::NAN),
            Frame::Boolean(true),
            Frame::Boolean(false),
            Frame::BigNumber(Bytes::from_static(
                b"3492890328409238509324850943850943825024385",
            )),
            Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"Some string"),
            },
            Frame::Error(Bytes::from_static(b"SYNTAX x")),
            Frame::Map(vec![(Frame::simple("k"), Frame::Integer(1))]),
            Frame::Set(vec![Frame::Integer(1), Frame::Integer(2)]),
            Frame::Push(vec![Frame::simple("message"), Frame::simple("hi")]),
            Frame::Attribute {
                attributes: vec![(Frame::simple("key-popularity"), Frame::Integer(90))],
                frame: Box::new(Frame::simple("real")),
            },
            Frame::Array(vec![]),
        ];
        assert_eq!(frames, expected);
    }

    #[test]
    fn decoded_payloads_share_the_read_buffer() {
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"$5\r\nhello\r\n");
        let base = buf.as_ptr() as usize;
        let frame = Decoder::new().decode(&mut buf).unwrap().unwrap();
        let Frame::Bulk(b) = frame else {
            panic!("not a bulk")
        };
        assert_eq!(b.as_ptr() as usize, base + 4);
    }

    #[test]
    fn bulk_arriving_in_pieces_is_not_rescanned() {
        // After the header is seen, feeding more bytes short of the end returns at once via
        // the remembered needed length.
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&b"$1000000\r\n"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(dec.need, 1_000_000 + 12);
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert_eq!(dec.decode(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(b"\r\n");
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.as_bytes().map(<[u8]>::len), Some(1_000_000));
    }

    #[test]
    fn long_simple_line_in_pieces_resumes_the_crlf_search() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&b"+"[..]);
        for _ in 0..100 {
            buf.extend_from_slice(&[b'a'; 100]);
            assert_eq!(dec.decode(&mut buf).unwrap(), None);
            assert_eq!(dec.scanned, buf.len());
        }
        buf.extend_from_slice(b"\r");
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.as_bytes().map(<[u8]>::len), Some(10_000));
    }

    #[test]
    fn command_argument_arriving_in_pieces_is_not_rescanned() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n"[..]);
        assert!(dec.decode_command(&mut buf).unwrap().is_none());
        // Resumes at the value's header, and waits for the value's end without looking.
        assert_eq!(dec.pos, 20);
        assert_eq!(dec.need, 20 + 12 + 1_000_000);
        assert_eq!(dec.cmd_args.clone().as_slice_for_test().len(), 2);
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert!(dec.decode_command(&mut buf).unwrap().is_none());
        }
        buf.extend_from_slice(b"\r\n");
        let cmd = dec.decode_command(&mut buf).unwrap().unwrap();
        assert_eq!(cmd.arg(2).map(<[u8]>::len), Some(1_000_000));
        assert!(!dec.is_pending());
    }

    #[test]
    fn command_header_split_resumes_without_losing_arguments() {
        let wire = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n";
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = dec.decode_command(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == wire.len() - 1, "at byte {i}");
            if let Some(cmd) = got {
                assert_eq!(cmd.args().collect::<Vec<_>>(), [&b"INCR"[..], b"n"]);
            }
        }
    }
}
