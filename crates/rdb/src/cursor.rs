//! Low-level readers over a byte slice that report "need more bytes" instead of failing, so the
//! streaming parser can retry a unit once more input has arrived.

use bytes::Bytes;

use crate::lzf;

/// Why a read stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The buffer must hold at least `need` bytes (index into the buffer) to continue.
    More { need: usize, what: &'static str },
    /// The data is bad at buffer index `at`.
    Bad { at: usize, kind: Bad },
}

/// Kinds of bad data.
#[derive(Debug)]
pub(crate) enum Bad {
    Corrupt(String),
    Unsupported(String),
    Limit(String),
    Checksum { stored: u64, computed: u64 },
}

pub(crate) type R<T> = Result<T, Stop>;

pub(crate) fn corrupt<T>(at: usize, msg: impl Into<String>) -> R<T> {
    Err(Stop::Bad {
        at,
        kind: Bad::Corrupt(msg.into()),
    })
}

/// An RDB string as found in the input, not yet copied out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RStr<'a> {
    /// The bytes, and the buffer they lie in when it can hand them out as a slice.
    Plain(&'a [u8], Option<&'a Bytes>),
    Int(i64),
    Lzf {
        data: &'a [u8],
        ulen: usize,
        at: usize,
    },
}

impl RStr<'_> {
    /// The string as owned bytes: a slice of the input buffer when there is one (no copy), else copied,
    /// decompressed or formatted.
    pub(crate) fn to_bytes(self) -> R<Bytes> {
        match self {
            RStr::Plain(s, Some(src)) => Ok(share(src, s)),
            RStr::Plain(s, None) => Ok(Bytes::copy_from_slice(s)),
            RStr::Int(i) => Ok(int_bytes(i)),
            RStr::Lzf { data, ulen, at } => match lzf::decompress(data, ulen) {
                Ok(v) => Ok(Bytes::from(v)),
                Err(e) => corrupt(
                    at,
                    format!("{e} (compressed {} bytes, declared {ulen})", data.len()),
                ),
            },
        }
    }
}

/// The decimal text of `i` (one allocation of its exact length).
pub(crate) fn int_bytes(i: i64) -> Bytes {
    use std::io::Write;
    let mut text = [0u8; 20];
    let mut at = &mut text[..];
    // 20 bytes hold every i64 ("-9223372036854775808"), so the write cannot fail.
    let _ = write!(at, "{i}");
    let len = 20 - at.len();
    Bytes::copy_from_slice(&text[..len])
}

/// `part` as a slice of `src` (no copy) when it lies inside `src`, else a copy of it.
pub(crate) fn share(src: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
    if part.is_empty() {
        Bytes::new()
    } else if start < src.len() && part.len() <= src.len() - start {
        src.slice(start..start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// A cursor over the parser's buffer.
pub(crate) struct Cur<'a> {
    pub b: &'a [u8],
    pub p: usize,
    pub max_string: usize,
    /// The buffer `b` is, when strings may be handed out as slices of it.
    pub src: Option<&'a Bytes>,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(b: &'a [u8], p: usize, max_string: usize) -> Self {
        Cur {
            b,
            p,
            max_string,
            src: None,
        }
    }

    /// A cursor whose strings are slices of `b` rather than copies.
    pub(crate) fn shared(b: &'a Bytes, p: usize, max_string: usize) -> Self {
        Cur {
            b,
            p,
            max_string,
            src: Some(b),
        }
    }

    #[inline]
    pub(crate) fn avail(&self) -> usize {
        self.b.len() - self.p
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> R<&'a [u8]> {
        if self.avail() < n {
            return Err(Stop::More {
                need: self.p.saturating_add(n),
                what,
            });
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> R<u8> {
        if self.p >= self.b.len() {
            return Err(Stop::More {
                need: self.p + 1,
                what,
            });
        }
        let v = self.b[self.p];
        self.p += 1;
        Ok(v)
    }

    /// Reads the next `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(crate) fn u64_le(&mut self, what: &'static str) -> R<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn f64_le(&mut self, what: &'static str) -> R<f64> {
        Ok(f64::from_bits(self.u64_le(what)?))
    }

    pub(crate) fn id16(&mut self, what: &'static str) -> R<[u8; 16]> {
        self.array(what)
    }

    /// Reads an RDB length; returns `(value, is_encoded_string_marker)`.
    #[inline]
    pub(crate) fn len_enc(&mut self, what: &'static str) -> R<(u64, bool)> {
        let start = self.p;
        let b0 = self.u8(what)?;
        match b0 >> 6 {
            0 => Ok(((b0 & 0x3f) as u64, false)),
            1 => {
                let b1 = self.u8(what).inspect_err(|_| self.p = start)?;
                Ok(((((b0 & 0x3f) as u64) << 8) | b1 as u64, false))
            }
            2 => match b0 {
                0x80 => Ok((u32::from_be_bytes(self.array(what)?) as u64, false)),
                0x81 => Ok((u64::from_be_bytes(self.array(what)?), false)),
                _ => corrupt(
                    start,
                    format!("invalid length prefix byte {b0:#04x} while reading {what}"),
                ),
            },
            _ => Ok(((b0 & 0x3f) as u64, true)),
        }
    }

    /// Reads a plain RDB length (an encoded-string marker here is corruption).
    #[inline]
    pub(crate) fn len(&mut self, what: &'static str) -> R<u64> {
        let start = self.p;
        let (v, enc) = self.len_enc(what)?;
        if enc {
            return corrupt(
                start,
                format!("unexpected string encoding marker while reading {what}"),
            );
        }
        Ok(v)
    }

    /// Reads an RDB string (raw, int-encoded or LZF).
    #[inline]
    pub(crate) fn string(&mut self, what: &'static str) -> R<RStr<'a>> {
        // Most strings are plain and shorter than 64 bytes (a one-byte length): taken here when wholly buffered.
        // Every other case (and every error) goes the general way below.
        if let Some(&b0) = self.b.get(self.p) {
            let n = b0 as usize;
            if n < 0x40 && n < self.avail() && n <= self.max_string {
                let s = &self.b[self.p + 1..self.p + 1 + n];
                self.p += 1 + n;
                return Ok(RStr::Plain(s, self.src));
            }
        }
        let start = self.p;
        let (v, enc) = self.len_enc(what)?;
        if !enc {
            let n = self.check_len(v, start, what)?;
            return Ok(RStr::Plain(self.take(n, what)?, self.src));
        }
        match v {
            0 => Ok(RStr::Int(self.u8(what)? as i8 as i64)),
            1 => Ok(RStr::Int(i16::from_le_bytes(self.array(what)?) as i64)),
            2 => Ok(RStr::Int(i32::from_le_bytes(self.array(what)?) as i64)),
            3 => {
                let clen = self.len("the compressed length of an LZF string")?;
                let ulen = self.len("the uncompressed length of an LZF string")?;
                let clen = self.check_len(clen, start, what)?;
                let ulen = self.check_len(ulen, start, what)?;
                if ulen > clen.saturating_mul(lzf::MAX_EXPANSION) {
                    return corrupt(
                        start,
                        format!(
                            "LZF string declares {ulen} bytes from only {clen} compressed bytes"
                        ),
                    );
                }
                let at = self.p;
                let data = self.take(clen, what)?;
                Ok(RStr::Lzf { data, ulen, at })
            }
            x => corrupt(
                start,
                format!("unknown string encoding {x} while reading {what}"),
            ),
        }
    }

    fn check_len(&self, v: u64, at: usize, what: &'static str) -> R<usize> {
        if v > self.max_string as u64 {
            return Err(Stop::Bad {
                at,
                kind: Bad::Limit(format!(
                    "{what} declares {v} bytes, more than the limit of {} bytes",
                    self.max_string
                )),
            });
        }
        Ok(v as usize)
    }

    /// Skips a string without copying it.
    pub(crate) fn skip_string(&mut self, what: &'static str) -> R<()> {
        self.string(what).map(|_| ())
    }

    /// Reads a score written as text (type ZSET): 253 = NaN, 254 = +inf, 255 = -inf.
    pub(crate) fn ascii_double(&mut self, what: &'static str) -> R<f64> {
        let start = self.p;
        let l = self.u8(what)?;
        match l {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let s = self.take(n as usize, what)?;
                match crate::encoding::parse_double(s) {
                    Some(v) => Ok(v),
                    None => corrupt(
                        start,
                        format!("invalid score {:?}", String::from_utf8_lossy(s)),
                    ),
                }
            }
        }
    }

    /// Reads and skips one module value opcode with its operand; returns the opcode (0 = the
    /// module EOF opcode).
    pub(crate) fn module_opcode(&mut self) -> R<u64> {
        let at = self.p;
        let op = self.len("a module value opcode")?;
        use crate::module::{OP_DOUBLE, OP_EOF, OP_FLOAT, OP_SINT, OP_STRING, OP_UINT};
        match op {
            OP_EOF => {}
            OP_SINT | OP_UINT => {
                self.len("a module integer")?;
            }
            OP_FLOAT => {
                self.take(4, "a module float")?;
            }
            OP_DOUBLE => {
                self.take(8, "a module double")?;
            }
            OP_STRING => self.skip_string("a module string")?,
            x => return corrupt(at, format!("unknown module opcode {x}")),
        }
        Ok(op)
    }

    /// Reads and skips a module value's opcodes up to and including the module EOF opcode.
    pub(crate) fn module_opcodes(&mut self) -> R<()> {
        while self.module_opcode()? != 0 {}
        Ok(())
    }
}
