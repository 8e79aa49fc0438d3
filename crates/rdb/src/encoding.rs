//! The compact encodings Redis stores inside RDB strings: ziplist, listpack, intset and zipmap.
//! Decoders validate every length against the blob (never reading outside it); encoders produce
//! blobs that Redis's own integrity checks accept.

use bytes::Bytes;

/// An element of a ziplist or listpack: bytes or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem<'a> {
    /// A string element.
    Str(&'a [u8]),
    /// An integer element.
    Int(i64),
}

impl Elem<'_> {
    /// The element as bytes (integers in decimal).
    pub fn to_bytes(self) -> Bytes {
        match self {
            Elem::Str(s) => Bytes::copy_from_slice(s),
            Elem::Int(i) => Bytes::from(i.to_string()),
        }
    }
    /// The element as an integer, parsing strings.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(i),
            Elem::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }
    /// The element as a double (sorted-set scores in ziplists/listpacks).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Elem::Int(i) => Some(i as f64),
            Elem::Str(s) => parse_double(s),
        }
    }
}

/// Parses a score the way Redis writes them (`inf`, `-inf`, `nan`, decimal and exponent forms).
pub fn parse_double(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    match t {
        "inf" | "+inf" | "infinity" | "+infinity" | "Infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" | "-Infinity" => Some(f64::NEG_INFINITY),
        "nan" | "-nan" => Some(f64::NAN),
        _ => t.parse().ok(),
    }
}

fn rd_u16(b: &[u8], p: usize) -> u16 {
    u16::from_le_bytes([b[p], b[p + 1]])
}
fn rd_u32(b: &[u8], p: usize) -> u32 {
    u32::from_le_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]])
}

fn need(b: &[u8], p: usize, n: usize, what: &str) -> Result<(), String> {
    if p.checked_add(n).is_none_or(|e| e > b.len()) {
        Err(format!(
            "{what} runs past the end of the blob (offset {p}, {n} bytes, blob {} bytes)",
            b.len()
        ))
    } else {
        Ok(())
    }
}

/// Reads an `n`-byte (1 to 8) little-endian signed integer at `p`, sign-extended.
fn rd_int(b: &[u8], p: usize, n: usize) -> i64 {
    let mut a = [0u8; 8];
    a[8 - n..].copy_from_slice(&b[p..p + n]);
    i64::from_le_bytes(a) >> (8 * (8 - n))
}

/// Returns the `l` bytes at `*p` and moves `*p` past them.
fn take_str<'a>(b: &'a [u8], p: &mut usize, l: usize, what: &str) -> Result<&'a [u8], String> {
    need(b, *p, l, what)?;
    let s = &b[*p..*p + l];
    *p += l;
    Ok(s)
}

/// Checks the minimum size and the leading 32-bit total length of a ziplist or listpack.
fn check_total(b: &[u8], min: usize, what: &str) -> Result<(), String> {
    if b.len() < min {
        return Err(format!("{what} too short ({} bytes)", b.len()));
    }
    let total = rd_u32(b, 0) as usize;
    if total != b.len() {
        return Err(format!(
            "{what} header says {total} bytes but blob is {}",
            b.len()
        ));
    }
    Ok(())
}

/// Checks that the terminator at `p` ends the blob and that the header count (0xffff = unknown)
/// matches the `n` entries read.
fn check_end(b: &[u8], p: usize, count: usize, n: usize, what: &str) -> Result<(), String> {
    if p + 1 != b.len() {
        return Err(format!("{what} terminator before end of blob"));
    }
    if count != 0xffff && count != n {
        return Err(format!("{what} header count {count} but {n} entries"));
    }
    Ok(())
}

/// The element count a ziplist (`listpack` false) or listpack header declares, for sizing a vector: at most one
/// element per two bytes of the blob (a damaged header cannot ask for more), 0 when the header is too short.
pub(crate) fn packed_count_hint(b: &[u8], listpack: bool) -> usize {
    let at = if listpack { 4 } else { 8 };
    if b.len() < at + 2 {
        return 0;
    }
    (rd_u16(b, at) as usize).min(b.len() / 2)
}

/// The 16-bit element count written in ziplist and listpack headers (0xffff when it does not fit).
fn header_count(count: usize) -> u16 {
    count.min(0xffff) as u16
}

/// Decodes a ziplist, calling `f` for each element in order. Validates header, prevlen chain,
/// tail offset, count and terminator.
pub fn ziplist_for_each<'a>(
    b: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> Result<(), String>,
) -> Result<usize, String> {
    check_total(b, 11, "ziplist")?;
    let tail = rd_u32(b, 4) as usize;
    let count = rd_u16(b, 8) as usize;
    let mut p = 10;
    let mut prev_len = 0usize;
    let mut last_start = None;
    let mut n = 0usize;
    loop {
        need(b, p, 1, "ziplist entry")?;
        if b[p] == 0xff {
            break;
        }
        let start = p;
        let (plen, hdr) = if b[p] < 254 {
            (b[p] as usize, 1)
        } else {
            need(b, p, 5, "ziplist prevlen")?;
            (rd_u32(b, p + 1) as usize, 5)
        };
        if plen != prev_len {
            return Err(format!(
                "ziplist entry {n} prevlen {plen} does not match previous entry length {prev_len}"
            ));
        }
        p += hdr;
        need(b, p, 1, "ziplist encoding")?;
        let enc = b[p];
        let elem = match enc >> 6 {
            0 => {
                let l = (enc & 0x3f) as usize;
                p += 1;
                Elem::Str(take_str(b, &mut p, l, "ziplist string")?)
            }
            1 => {
                need(b, p, 2, "ziplist 14-bit length")?;
                let l = (((enc & 0x3f) as usize) << 8) | b[p + 1] as usize;
                p += 2;
                Elem::Str(take_str(b, &mut p, l, "ziplist string")?)
            }
            2 => {
                need(b, p, 5, "ziplist 32-bit length")?;
                let l = u32::from_be_bytes([b[p + 1], b[p + 2], b[p + 3], b[p + 4]]) as usize;
                p += 5;
                Elem::Str(take_str(b, &mut p, l, "ziplist string")?)
            }
            _ if (0xf1..=0xfd).contains(&enc) => {
                p += 1;
                Elem::Int((enc & 0x0f) as i64 - 1)
            }
            _ => {
                let (width, what) = match enc {
                    0xc0 => (2, "ziplist int16"),
                    0xd0 => (4, "ziplist int32"),
                    0xe0 => (8, "ziplist int64"),
                    0xf0 => (3, "ziplist int24"),
                    0xfe => (1, "ziplist int8"),
                    _ => return Err(format!("invalid ziplist encoding byte {enc:#04x}")),
                };
                need(b, p + 1, width, what)?;
                p += 1 + width;
                Elem::Int(rd_int(b, p - width, width))
            }
        };
        prev_len = p - start;
        last_start = Some(start);
        n += 1;
        f(elem)?;
    }
    check_end(b, p, count, n, "ziplist")?;
    let expect_tail = last_start.unwrap_or(10);
    if tail != expect_tail {
        return Err(format!(
            "ziplist tail offset {tail} does not point at the last entry ({expect_tail})"
        ));
    }
    Ok(n)
}

/// Decodes a listpack, calling `f` for each element. Validates total bytes, every backlen,
/// count and terminator.
pub fn listpack_for_each<'a>(
    b: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> Result<(), String>,
) -> Result<usize, String> {
    check_total(b, 7, "listpack")?;
    let count = rd_u16(b, 4) as usize;
    let mut p = 6;
    let mut n = 0usize;
    loop {
        need(b, p, 1, "listpack entry")?;
        let enc = b[p];
        if enc == 0xff {
            break;
        }
        let start = p;
        let elem;
        if enc & 0x80 == 0 {
            p += 1;
            elem = Elem::Int((enc & 0x7f) as i64);
        } else if enc & 0xc0 == 0x80 {
            let l = (enc & 0x3f) as usize;
            p += 1;
            elem = Elem::Str(take_str(b, &mut p, l, "listpack string")?);
        } else if enc & 0xe0 == 0xc0 {
            need(b, p, 2, "listpack 13-bit int")?;
            let u = (((enc & 0x1f) as u16) << 8) | b[p + 1] as u16;
            let v = if u >= 1 << 12 {
                u as i64 - (1 << 13)
            } else {
                u as i64
            };
            p += 2;
            elem = Elem::Int(v);
        } else if enc & 0xf0 == 0xe0 {
            need(b, p, 2, "listpack 12-bit length")?;
            let l = (((enc & 0x0f) as usize) << 8) | b[p + 1] as usize;
            p += 2;
            elem = Elem::Str(take_str(b, &mut p, l, "listpack string")?);
        } else if enc == 0xf0 {
            need(b, p, 5, "listpack 32-bit length")?;
            let l = rd_u32(b, p + 1) as usize;
            p += 5;
            elem = Elem::Str(take_str(b, &mut p, l, "listpack string")?);
        } else {
            let (width, what) = match enc {
                0xf1 => (2, "listpack int16"),
                0xf2 => (3, "listpack int24"),
                0xf3 => (4, "listpack int32"),
                0xf4 => (8, "listpack int64"),
                _ => return Err(format!("invalid listpack encoding byte {enc:#04x}")),
            };
            need(b, p, 1 + width, what)?;
            elem = Elem::Int(rd_int(b, p + 1, width));
            p += 1 + width;
        }
        let entry_len = p - start;
        let bl = backlen_size(entry_len as u64);
        need(b, p, bl, "listpack backlen")?;
        let mut buf = [0u8; 5];
        encode_backlen(&mut buf, entry_len as u64);
        if b[p..p + bl] != buf[..bl] {
            return Err(format!(
                "listpack entry {n} backlen does not match its length {entry_len}"
            ));
        }
        p += bl;
        n += 1;
        f(elem)?;
    }
    check_end(b, p, count, n, "listpack")?;
    Ok(n)
}

/// Decodes an intset, calling `f` with each integer.
pub fn intset_for_each(b: &[u8], mut f: impl FnMut(i64)) -> Result<usize, String> {
    if b.len() < 8 {
        return Err(format!("intset too short ({} bytes)", b.len()));
    }
    let enc = rd_u32(b, 0) as usize;
    let len = rd_u32(b, 4) as usize;
    if !matches!(enc, 2 | 4 | 8) {
        return Err(format!("invalid intset encoding {enc}"));
    }
    if len.checked_mul(enc).and_then(|x| x.checked_add(8)) != Some(b.len()) {
        return Err(format!(
            "intset of {len} x {enc}-byte integers does not fit blob of {} bytes",
            b.len()
        ));
    }
    for i in 0..len {
        f(rd_int(b, 8 + i * enc, enc));
    }
    Ok(len)
}

/// Decodes a zipmap (pre-2.6 small hashes) into field/value pairs.
pub fn zipmap_for_each<'a>(
    b: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]),
) -> Result<usize, String> {
    need(b, 0, 1, "zipmap header")?;
    let mut p = 1;
    let mut n = 0;
    let read_len = |p: &mut usize| -> Result<Option<usize>, String> {
        need(b, *p, 1, "zipmap length")?;
        let x = b[*p];
        if x == 0xff {
            return Ok(None);
        }
        if x < 254 {
            *p += 1;
            Ok(Some(x as usize))
        } else if x == 254 {
            need(b, *p, 5, "zipmap 32-bit length")?;
            let l = rd_u32(b, *p + 1) as usize;
            *p += 5;
            Ok(Some(l))
        } else {
            Err("invalid zipmap length byte 255".into())
        }
    };
    while let Some(kl) = read_len(&mut p)? {
        need(b, p, kl, "zipmap field")?;
        let k = &b[p..p + kl];
        p += kl;
        let Some(vl) = read_len(&mut p)? else {
            return Err("zipmap field without value".into());
        };
        need(b, p, 1, "zipmap free byte")?;
        let free = b[p] as usize;
        p += 1;
        need(b, p, vl + free, "zipmap value")?;
        let v = &b[p..p + vl];
        p += vl + free;
        n += 1;
        f(k, v);
    }
    Ok(n)
}

/// Parses `s` as Redis does for compact integer encoding (`string2ll`): canonical decimal only
/// (no leading zeros, no `+`, no `-0`), fitting an i64, at most 20 characters.
pub fn canonical_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s.len() == 1 && s[0] == b'0' {
        return Some(0);
    }
    let (neg, digits) = if s[0] == b'-' {
        (true, &s[1..])
    } else {
        (false, s)
    };
    if digits.is_empty() || digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

fn backlen_size(l: u64) -> usize {
    if l <= 127 {
        1
    } else if l < 16383 {
        2
    } else if l < 2097151 {
        3
    } else if l < 268435455 {
        4
    } else {
        5
    }
}

fn encode_backlen(buf: &mut [u8; 5], l: u64) -> usize {
    let n = backlen_size(l);
    // Most significant 7-bit group first; every byte but the first has the high bit set.
    for (i, slot) in buf.iter_mut().take(n).enumerate() {
        let shift = 7 * (n - 1 - i);
        let mut byte = ((l >> shift) & 127) as u8;
        if i > 0 {
            byte |= 128;
        }
        *slot = byte;
    }
    n
}

/// Builds a listpack from elements, using integer encodings for canonical integers.
#[derive(Debug)]
pub struct ListpackBuilder {
    buf: Vec<u8>,
    count: usize,
}

impl Default for ListpackBuilder {
    /// The same as [`ListpackBuilder::new`]: a builder with its header in place.
    fn default() -> Self {
        Self::new()
    }
}

impl ListpackBuilder {
    /// An empty listpack.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0u8; 6]);
        ListpackBuilder { buf, count: 0 }
    }
    /// Number of elements so far.
    pub fn len(&self) -> usize {
        self.count
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes so far (header included, terminator not).
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
    /// Appends a string element (encoded as an integer when it is a canonical integer).
    pub fn push_str(&mut self, s: &[u8]) {
        if let Some(i) = canonical_int(s) {
            self.push_int(i);
            return;
        }
        let start = self.buf.len();
        let l = s.len();
        if l < 64 {
            self.buf.push(0x80 | l as u8);
        } else if l < 4096 {
            self.buf.push(0xe0 | (l >> 8) as u8);
            self.buf.push((l & 0xff) as u8);
        } else {
            self.buf.push(0xf0);
            self.buf.extend_from_slice(&(l as u32).to_le_bytes());
        }
        self.buf.extend_from_slice(s);
        self.finish_entry(start);
    }
    /// Appends an integer element.
    pub fn push_int(&mut self, v: i64) {
        let start = self.buf.len();
        if (0..=127).contains(&v) {
            self.buf.push(v as u8);
        } else if (-4096..=4095).contains(&v) {
            let u = (v as i16 as u16) & 0x1fff;
            self.buf.push(0xc0 | (u >> 8) as u8);
            self.buf.push((u & 0xff) as u8);
        } else if (-32768..=32767).contains(&v) {
            self.buf.push(0xf1);
            self.buf.extend_from_slice(&(v as i16).to_le_bytes());
        } else if (-8388608..=8388607).contains(&v) {
            self.buf.push(0xf2);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
            self.buf.push(0xf3);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.buf.push(0xf4);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.finish_entry(start);
    }
    fn finish_entry(&mut self, start: usize) {
        let mut bl = [0u8; 5];
        let n = encode_backlen(&mut bl, (self.buf.len() - start) as u64);
        self.buf.extend_from_slice(&bl[..n]);
        self.count += 1;
    }
    /// Finishes the listpack (header and terminator).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(0xff);
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        self.buf[4..6].copy_from_slice(&header_count(self.count).to_le_bytes());
        self.buf
    }
}

/// Builds a ziplist from elements, with correct prevlen chain, tail offset and integer encodings.
#[derive(Debug)]
pub struct ZiplistBuilder {
    buf: Vec<u8>,
    count: usize,
    /// Offset of the last entry (the header's end while empty); the last entry runs from here
    /// to the end of `buf`, so its length (the next entry's prevlen) is not kept separately.
    tail: usize,
}

impl Default for ZiplistBuilder {
    /// The same as [`ZiplistBuilder::new`]: a builder with its header in place.
    fn default() -> Self {
        Self::new()
    }
}

impl ZiplistBuilder {
    /// An empty ziplist.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0u8; 10]);
        ZiplistBuilder {
            buf,
            count: 0,
            tail: 10,
        }
    }
    /// Number of elements so far.
    pub fn len(&self) -> usize {
        self.count
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes so far.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
    fn begin(&mut self) -> usize {
        let start = self.buf.len();
        let prev_len = start - self.tail;
        if prev_len < 254 {
            self.buf.push(prev_len as u8);
        } else {
            self.buf.push(0xfe);
            self.buf.extend_from_slice(&(prev_len as u32).to_le_bytes());
        }
        start
    }
    fn end(&mut self, start: usize) {
        self.tail = start;
        self.count += 1;
    }
    /// Appends a string element (integer-encoded when it is a canonical integer of at most 31 chars).
    pub fn push_str(&mut self, s: &[u8]) {
        if s.len() <= 31 {
            if let Some(i) = canonical_int(s) {
                self.push_int(i);
                return;
            }
        }
        let start = self.begin();
        let l = s.len();
        if l <= 0x3f {
            self.buf.push(l as u8);
        } else if l <= 0x3fff {
            self.buf.push(0x40 | (l >> 8) as u8);
            self.buf.push((l & 0xff) as u8);
        } else {
            self.buf.push(0x80);
            self.buf.extend_from_slice(&(l as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(s);
        self.end(start);
    }
    /// Appends an integer element.
    pub fn push_int(&mut self, v: i64) {
        let start = self.begin();
        if (0..=12).contains(&v) {
            self.buf.push(0xf1 + v as u8);
        } else if (-128..=127).contains(&v) {
            self.buf.push(0xfe);
            self.buf.push(v as i8 as u8);
        } else if (-32768..=32767).contains(&v) {
            self.buf.push(0xc0);
            self.buf.extend_from_slice(&(v as i16).to_le_bytes());
        } else if (-8388608..=8388607).contains(&v) {
            self.buf.push(0xf0);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
            self.buf.push(0xd0);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.buf.push(0xe0);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.end(start);
    }
    /// Finishes the ziplist.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(0xff);
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        self.buf[4..8].copy_from_slice(&(self.tail as u32).to_le_bytes());
        self.buf[8..10].copy_from_slice(&header_count(self.count).to_le_bytes());
        self.buf
    }
}

/// Builds an intset from integers (sorted, deduplicated, smallest width).
pub fn build_intset(values: &[i64]) -> Vec<u8> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    let enc: usize = if v
        .iter()
        .all(|&x| (i16::MIN as i64..=i16::MAX as i64).contains(&x))
    {
        2
    } else if v
        .iter()
        .all(|&x| (i32::MIN as i64..=i32::MAX as i64).contains(&x))
    {
        4
    } else {
        8
    };
    let mut out = Vec::with_capacity(8 + enc * v.len());
    out.extend_from_slice(&(enc as u32).to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        match enc {
            2 => out.extend_from_slice(&(x as i16).to_le_bytes()),
            4 => out.extend_from_slice(&(x as i32).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_builders_are_the_same_as_new_ones() {
        assert_eq!(
            ListpackBuilder::default().finish(),
            ListpackBuilder::new().finish()
        );
        assert_eq!(
            ZiplistBuilder::default().finish(),
            ZiplistBuilder::new().finish()
        );
    }

    fn lp_roundtrip(items: &[&[u8]]) {
        let mut b = ListpackBuilder::new();
        for i in items {
            b.push_str(i);
        }
        let lp = b.finish();
        let mut got = Vec::new();
        listpack_for_each(&lp, |e| {
            got.push(e.to_bytes());
            Ok(())
        })
        .unwrap();
        let want: Vec<Bytes> = items.iter().map(|s| Bytes::copy_from_slice(s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn listpack_round_trips_every_integer_width_and_string_length() {
        let big = vec![b'x'; 5000];
        let mid = vec![b'y'; 300];
        lp_roundtrip(&[
            b"0",
            b"127",
            b"128",
            b"-1",
            b"4095",
            b"-4096",
            b"4096",
            b"32767",
            b"-32768",
            b"8388607",
            b"-8388608",
            b"2147483647",
            b"-2147483648",
            b"9223372036854775807",
            b"-9223372036854775808",
            b"007",
            b"-0",
            b"+1",
            b"abc",
            b"",
            &mid,
            &big,
        ]);
    }

    #[test]
    fn ziplist_round_trips_and_keeps_prevlen_chain_valid() {
        let big = vec![b'z'; 300];
        let huge = vec![b'w'; 20000];
        let items: Vec<&[u8]> = vec![
            b"1",
            b"12",
            b"13",
            b"-1",
            b"200",
            b"40000",
            b"-8000000",
            b"3000000000",
            &big,
            b"a",
            &huge,
            b"x",
        ];
        let mut b = ZiplistBuilder::new();
        for i in &items {
            b.push_str(i);
        }
        let zl = b.finish();
        let mut got = Vec::new();
        ziplist_for_each(&zl, |e| {
            got.push(e.to_bytes());
            Ok(())
        })
        .unwrap();
        let want: Vec<Bytes> = items.iter().map(|s| Bytes::copy_from_slice(s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn intset_is_sorted_and_uses_smallest_width() {
        let is = build_intset(&[5, -3, 5, 70000]);
        assert_eq!(&is[..4], &4u32.to_le_bytes());
        let mut got = Vec::new();
        intset_for_each(&is, |v| got.push(v)).unwrap();
        assert_eq!(got, vec![-3, 5, 70000]);
    }

    #[test]
    fn canonical_int_matches_redis_rules() {
        assert_eq!(canonical_int(b"0"), Some(0));
        assert_eq!(canonical_int(b"-0"), None);
        assert_eq!(canonical_int(b"01"), None);
        assert_eq!(canonical_int(b"+1"), None);
        assert_eq!(canonical_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(canonical_int(b"9223372036854775808"), None);
    }
}
