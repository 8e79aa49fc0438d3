//! [`Command`]: one client command (a RESP array of bulk strings) as one buffer plus offsets.

use std::fmt;

use bytes::Bytes;

use crate::decode::Span;

/// How many argument ranges a [`Command`] stores inline before spilling to a `Vec`.
/// Six covers the commands a replication stream is made of (`SET k v PX n`, `HSET k f v`,
/// `SELECT n`, `EXPIREAT k t`, `PING`, `MULTI`/`EXEC`, ...).
pub(crate) const INLINE_ARGS: usize = 6;

/// The argument ranges of a command: inline for up to [`INLINE_ARGS`] arguments, else a `Vec`
/// grown one received argument at a time (never sized by the declared count).
#[derive(Debug, Clone)]
pub(crate) enum ArgSpans {
    Inline { len: u8, spans: [Span; INLINE_ARGS] },
    Heap(Vec<Span>),
}

impl Default for ArgSpans {
    fn default() -> ArgSpans {
        ArgSpans::Inline {
            len: 0,
            spans: [Span { start: 0, end: 0 }; INLINE_ARGS],
        }
    }
}

impl ArgSpans {
    #[inline]
    pub(crate) fn push(&mut self, span: Span) {
        match self {
            ArgSpans::Inline { len, spans } => {
                let n = usize::from(*len);
                if n < INLINE_ARGS {
                    spans[n] = span;
                    *len += 1;
                } else {
                    let mut v = Vec::with_capacity(INLINE_ARGS * 2);
                    v.extend_from_slice(&spans[..]);
                    v.push(span);
                    *self = ArgSpans::Heap(v);
                }
            }
            ArgSpans::Heap(v) => v.push(span),
        }
    }

    /// Forgets every range (keeping no spilled `Vec`, so one huge command does not pin memory).
    #[inline]
    pub(crate) fn clear(&mut self) {
        match self {
            ArgSpans::Inline { len, .. } => *len = 0,
            ArgSpans::Heap(_) => *self = ArgSpans::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn as_slice_for_test(&self) -> &[Span] {
        self.as_slice()
    }

    #[inline]
    fn as_slice(&self) -> &[Span] {
        match self {
            ArgSpans::Inline { len, spans } => &spans[..usize::from(*len)],
            ArgSpans::Heap(v) => v,
        }
    }
}

/// One command as a client (or a master feeding its replicas) sends it: a RESP array of one or
/// more bulk strings, decoded by [`Decoder::decode_command`](crate::Decoder::decode_command).
///
/// It holds a single [`Bytes`], the command's exact wire bytes, plus the byte range of each
/// argument within them (inline for up to six arguments, so a typical command costs no
/// allocation at all). Arguments are borrowed as `&[u8]`; [`Command::arg_bytes`] gives an owned,
/// zero-copy slice when one is needed. [`Command::raw`] can be forwarded to another server
/// verbatim, without re-encoding, and [`Command::len_on_wire`] is what the command adds to a
/// replication offset.
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::{encode_command, Decoder};
///
/// let mut buf = BytesMut::new();
/// encode_command(&["SET", "key", "value"], &mut buf);
/// let wire = buf.clone().freeze();
/// let cmd = Decoder::new().decode_command(&mut buf).unwrap().unwrap();
/// assert_eq!(cmd.name(), b"SET");
/// assert!(cmd.name().eq_ignore_ascii_case(b"set"));
/// assert_eq!(cmd.argc(), 3);
/// assert_eq!(cmd.arg(1), Some(&b"key"[..]));
/// assert_eq!(cmd.arg(3), None);
/// assert_eq!(cmd.args().collect::<Vec<_>>(), [&b"SET"[..], b"key", b"value"]);
/// assert_eq!(cmd.raw(), &wire);
/// assert_eq!(cmd.len_on_wire(), wire.len());
/// ```
#[derive(Clone)]
pub struct Command {
    raw: Bytes,
    args: ArgSpans,
}

impl Command {
    /// Builds a command from checked parts: every span lies inside `raw` and there is at
    /// least one.
    pub(crate) fn from_parts(raw: Bytes, args: ArgSpans) -> Command {
        Command { raw, args }
    }

    /// The number of arguments, the command name included (always at least 1).
    #[inline]
    pub fn argc(&self) -> usize {
        self.args.as_slice().len()
    }

    /// Argument `i` (0 is the command name), or `None` past the last one.
    #[inline]
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let span = self.args.as_slice().get(i)?;
        self.raw.get(span.start..span.end)
    }

    /// The command name (the first argument) as sent, in the sender's case.
    #[inline]
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }

    /// The arguments in order, the command name first.
    #[inline]
    pub fn args(&self) -> Args<'_> {
        Args {
            raw: &self.raw,
            spans: self.args.as_slice().iter(),
        }
    }

    /// Argument `i` as an owned [`Bytes`]: a zero-copy slice of [`Command::raw`] (one reference
    /// count increment), or `None` past the last argument.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        let span = self.args.as_slice().get(i)?;
        Some(self.raw.slice(span.start..span.end))
    }

    /// The command's exact bytes as received (`*<argc>\r\n$<len>\r\n<arg>\r\n...`), e.g. to
    /// forward it verbatim to another server.
    #[inline]
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Takes the command's exact wire bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The number of bytes the command took on the wire (what it adds to a replication offset).
    #[inline]
    pub fn len_on_wire(&self) -> usize {
        self.raw.len()
    }
}

/// Compares the wire bytes, which determine the arguments.
impl PartialEq for Command {
    fn eq(&self, other: &Command) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Command {}

/// Shows the arguments, each escaped and cut at 64 bytes, and the wire length.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Arg<'a>(&'a [u8]);
        impl fmt::Debug for Arg<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let shown = &self.0[..self.0.len().min(64)];
                write!(f, "\"{}\"", shown.escape_ascii())?;
                if shown.len() < self.0.len() {
                    write!(f, "...({} bytes)", self.0.len())?;
                }
                Ok(())
            }
        }
        f.debug_struct("Command")
            .field("args", &self.args().map(Arg).collect::<Vec<_>>())
            .field("len_on_wire", &self.len_on_wire())
            .finish()
    }
}

/// Iterator over a [`Command`]'s arguments, from [`Command::args`].
#[derive(Debug, Clone)]
pub struct Args<'a> {
    raw: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let span = self.spans.next()?;
        Some(self.raw.get(span.start..span.end).unwrap_or_default())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Args<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let span = self.spans.next_back()?;
        Some(self.raw.get(span.start..span.end).unwrap_or_default())
    }
}

impl ExactSizeIterator for Args<'_> {}

impl<'a> IntoIterator for &'a Command {
    type Item = &'a [u8];
    type IntoIter = Args<'a>;

    fn into_iter(self) -> Args<'a> {
        self.args()
    }
}
