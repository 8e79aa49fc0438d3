//! Encoding values for a chosen target RDB version, using only encodings that version loads.
//!
//! | value | compact form (small values) | plain form | needs |
//! |---|---|---|---|
//! | list | quicklist2 of listpacks (v10+), quicklist of ziplists (v7-9) | `LIST` | - |
//! | set | intset (all integers, <= 512), listpack (v11+, <= 128 x 64 B) | `SET` | - |
//! | zset | listpack (v10+), ziplist (v2-9) (<= 128 x 64 B) | `ZSET_2` (v8+), `ZSET` | - |
//! | hash | listpack (v10+), ziplist (v4-9) (<= 128 x 64 B) | `HASH` | field TTLs: v12+ (type 24), Valkey 80 (type 22) |
//! | stream | - | `STREAM_LISTPACKS` 1/2/3/4 by version (3 for Valkey 80) | v9+ |
//!
//! Version 80 is Valkey 9's format: the same encodings as RDB 11, plus `HASH_2` for hashes with field expiries.
//! | module | - | `MODULE_2` | v8+ |
//!
//! Strings that are canonical integers in the 32-bit range are written int-encoded, as Redis does.

use crate::encoding::{build_intset, canonical_int, ListpackBuilder, ZiplistBuilder};
use crate::error::Error;
use crate::parser::types::*;
use crate::value::{HashField, Stream, StreamEntry, StreamId, Value};

/// Entries per quicklist node / stream node and the byte bound of a node.
const NODE_ENTRIES: usize = 128;
const NODE_BYTES: usize = 8 * 1024;
const STREAM_NODE_ENTRIES: usize = 100;
/// Limits under which the compact encodings are used (Redis's defaults).
const SMALL_ENTRIES: usize = 128;
const SMALL_VALUE: usize = 64;
const INTSET_ENTRIES: usize = 512;

/// Appends an RDB length.
pub fn put_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push((n & 0xff) as u8);
    } else if n <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Appends an RDB string (int-encoded when it is a canonical 32-bit integer).
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 11 {
        if let Some(v) = canonical_int(s) {
            if let Ok(v8) = i8::try_from(v) {
                out.push(0xc0);
                out.push(v8 as u8);
                return;
            } else if let Ok(v16) = i16::try_from(v) {
                out.push(0xc1);
                out.extend_from_slice(&v16.to_le_bytes());
                return;
            } else if let Ok(v32) = i32::try_from(v) {
                out.push(0xc2);
                out.extend_from_slice(&v32.to_le_bytes());
                return;
            }
        }
    }
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Appends an RDB string without integer encoding (for binary blobs).
fn put_blob(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Formats a score so that it parses back to the same double (Redis reads it with strtod).
pub fn format_score(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x.is_nan() {
        return "nan".into();
    }
    if x == x.trunc() && x.abs() < 9.007_199_254_740_992e15 {
        return format!("{}", x as i64);
    }
    let d = format!("{x}");
    if d.len() <= 24 {
        d
    } else {
        format!("{x:e}")
    }
}

pub(crate) fn cannot(what: impl Into<String>, version: u32) -> Error {
    Error::CannotEncode {
        what: what.into(),
        version,
    }
}

/// A listpack or a ziplist being built: the compact encodings differ by target version, the
/// elements pushed into them do not.
enum Packer {
    Listpack(ListpackBuilder),
    Ziplist(ZiplistBuilder),
}

impl Packer {
    fn new(listpack: bool) -> Self {
        if listpack {
            Packer::Listpack(ListpackBuilder::new())
        } else {
            Packer::Ziplist(ZiplistBuilder::new())
        }
    }

    fn push(&mut self, s: &[u8]) {
        match self {
            Packer::Listpack(b) => b.push_str(s),
            Packer::Ziplist(b) => b.push_str(s),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Packer::Listpack(b) => b.finish(),
            Packer::Ziplist(b) => b.finish(),
        }
    }
}

/// Serializes `value` (type byte + payload) for target RDB `version` (1 to 13, or 80 for Valkey 9).
///
/// ```
/// use ferry_rdb::{encode_value, decode_value, Value};
/// let v = Value::List(vec!["a".into(), "1".into()]);
/// let for_62 = encode_value(&v, 9).unwrap();   // quicklist of ziplists
/// let for_70 = encode_value(&v, 10).unwrap();  // quicklist2 of listpacks
/// assert_eq!(for_62[0], 14);
/// assert_eq!(for_70[0], 18);
/// assert_eq!(decode_value(&for_62, false).unwrap(), v);
/// ```
pub fn encode_value(value: &Value, version: u32) -> Result<Vec<u8>, Error> {
    let valkey = crate::parser::is_valkey_version(version);
    if version == 0
        || (version > crate::parser::MAX_RDB_VERSION && !valkey)
        || version > crate::parser::MAX_VALKEY_RDB_VERSION
    {
        return Err(cannot("any value (unknown version)", version));
    }
    if value.is_empty() {
        return Err(cannot(
            format!(
                "an empty {} (servers do not store empty keys)",
                value.type_name()
            ),
            version,
        ));
    }
    let mut out = Vec::with_capacity(16 + value.payload_bytes() + value.len() * 2);
    match value {
        Value::String(s) => {
            out.push(STRING);
            put_string(&mut out, s);
        }
        Value::List(items) => encode_list(&mut out, items, version),
        Value::Set(items) => encode_set(&mut out, items, version),
        Value::SortedSet(items) => encode_zset(&mut out, items, version)?,
        Value::Hash(fields) => encode_hash(&mut out, fields, version)?,
        Value::Stream(s) => encode_stream(&mut out, s, version)?,
        Value::Module(m) => {
            if version < 8 {
                return Err(cannot("a module value (MODULE_2 needs RDB 8)", version));
            }
            out.push(MODULE_2);
            put_len(&mut out, m.module_id);
            out.extend_from_slice(&m.payload);
        }
    }
    Ok(out)
}

fn encode_list(out: &mut Vec<u8>, items: &[bytes::Bytes], version: u32) {
    if version >= 7 {
        // Split into nodes of at most NODE_ENTRIES entries and about NODE_BYTES bytes.
        let mut nodes: Vec<&[bytes::Bytes]> = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, it) in items.iter().enumerate() {
            if i > start && (i - start >= NODE_ENTRIES || bytes + it.len() > NODE_BYTES) {
                nodes.push(&items[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += it.len() + 11;
        }
        nodes.push(&items[start..]);
        // quicklist2 nodes are listpacks, each after its container type (2 = packed).
        let listpack = version >= 10;
        out.push(if listpack {
            LIST_QUICKLIST_2
        } else {
            LIST_QUICKLIST
        });
        put_len(out, nodes.len() as u64);
        for n in nodes {
            if listpack {
                put_len(out, 2);
            }
            let mut node = Packer::new(listpack);
            for it in n {
                node.push(it);
            }
            put_blob(out, &node.finish());
        }
    } else {
        out.push(LIST);
        put_len(out, items.len() as u64);
        for it in items {
            put_string(out, it);
        }
    }
}

fn encode_set(out: &mut Vec<u8>, items: &[bytes::Bytes], version: u32) {
    if items.len() <= INTSET_ENTRIES && version >= 2 {
        let ints: Option<Vec<i64>> = items.iter().map(|m| canonical_int(m)).collect();
        if let Some(ints) = ints {
            out.push(SET_INTSET);
            put_blob(out, &build_intset(&ints));
            return;
        }
    }
    if version >= 11 && items.len() <= SMALL_ENTRIES && items.iter().all(|m| m.len() <= SMALL_VALUE)
    {
        out.push(SET_LISTPACK);
        let mut lp = ListpackBuilder::new();
        for m in items {
            lp.push_str(m);
        }
        put_blob(out, &lp.finish());
        return;
    }
    out.push(SET);
    put_len(out, items.len() as u64);
    for m in items {
        put_string(out, m);
    }
}

fn encode_zset(
    out: &mut Vec<u8>,
    items: &[(bytes::Bytes, f64)],
    version: u32,
) -> Result<(), Error> {
    if items.iter().any(|(_, s)| s.is_nan()) {
        return Err(cannot("a sorted set with a NaN score", version));
    }
    let small = items.len() <= SMALL_ENTRIES && items.iter().all(|(m, _)| m.len() <= SMALL_VALUE);
    if small && version >= 2 {
        // Compact encodings must be ordered by (score, member).
        let mut sorted: Vec<&(bytes::Bytes, f64)> = items.iter().collect();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let listpack = version >= 10;
        out.push(if listpack {
            ZSET_LISTPACK
        } else {
            ZSET_ZIPLIST
        });
        let mut packed = Packer::new(listpack);
        for (m, s) in sorted {
            packed.push(m);
            packed.push(format_score(*s).as_bytes());
        }
        put_blob(out, &packed.finish());
        return Ok(());
    }
    if version >= 8 {
        out.push(ZSET_2);
        put_len(out, items.len() as u64);
        for (m, s) in items {
            put_string(out, m);
            out.extend_from_slice(&s.to_le_bytes());
        }
    } else {
        out.push(ZSET);
        put_len(out, items.len() as u64);
        for (m, s) in items {
            put_string(out, m);
            if *s == f64::INFINITY {
                out.push(254);
            } else if *s == f64::NEG_INFINITY {
                out.push(255);
            } else {
                let (exp, plain) = (format!("{s:e}"), format_score(*s));
                let t = if exp.len() < plain.len() { exp } else { plain };
                out.push(t.len() as u8);
                out.extend_from_slice(t.as_bytes());
            }
        }
    }
    Ok(())
}

fn encode_hash(out: &mut Vec<u8>, fields: &[HashField], version: u32) -> Result<(), Error> {
    let with_ttl = fields.iter().any(|f| f.expire_at_ms.is_some());
    if with_ttl && crate::parser::is_valkey_version(version) {
        // Valkey's HASH_2: count, then (field, value, absolute expiry ms as 8 bytes LE, -1 for none).
        out.push(VALKEY_HASH_2);
        put_len(out, fields.len() as u64);
        for f in fields {
            put_string(out, &f.field);
            put_string(out, &f.value);
            let at = f.expire_at_ms.map(|e| e as i64).unwrap_or(-1);
            out.extend_from_slice(&at.to_le_bytes());
        }
        return Ok(());
    }
    if with_ttl {
        if version < 12 {
            return Err(cannot(
                "a hash with field expiries (needs RDB 12, Redis 7.4, or 80, Valkey 9)",
                version,
            ));
        }
        let min = fields
            .iter()
            .filter_map(|f| f.expire_at_ms)
            .min()
            .unwrap_or(0);
        out.push(HASH_METADATA);
        out.extend_from_slice(&min.to_le_bytes());
        put_len(out, fields.len() as u64);
        for f in fields {
            put_len(out, f.expire_at_ms.map(|e| e - min + 1).unwrap_or(0));
            put_string(out, &f.field);
            put_string(out, &f.value);
        }
        return Ok(());
    }
    let small = fields.len() <= SMALL_ENTRIES
        && fields
            .iter()
            .all(|f| f.field.len() <= SMALL_VALUE && f.value.len() <= SMALL_VALUE);
    if small && version >= 4 {
        let listpack = version >= 10;
        out.push(if listpack {
            HASH_LISTPACK
        } else {
            HASH_ZIPLIST
        });
        let mut packed = Packer::new(listpack);
        for f in fields {
            packed.push(&f.field);
            packed.push(&f.value);
        }
        put_blob(out, &packed.finish());
    } else {
        out.push(HASH);
        put_len(out, fields.len() as u64);
        for f in fields {
            put_string(out, &f.field);
            put_string(out, &f.value);
        }
    }
    Ok(())
}

fn stream_node(entries: &[StreamEntry]) -> (StreamId, Vec<u8>) {
    let master = entries[0].id;
    let master_fields: Vec<&[u8]> = entries[0].fields.iter().map(|(f, _)| &f[..]).collect();
    let mut lp = ListpackBuilder::new();
    lp.push_int(entries.len() as i64);
    lp.push_int(0);
    lp.push_int(master_fields.len() as i64);
    for f in &master_fields {
        lp.push_str(f);
    }
    lp.push_int(0);
    for e in entries {
        let same = e.fields.len() == master_fields.len()
            && e.fields
                .iter()
                .zip(&master_fields)
                .all(|((f, _), m)| &f[..] == *m);
        lp.push_int(if same { 2 } else { 0 });
        lp.push_int(e.id.ms.wrapping_sub(master.ms) as i64);
        lp.push_int(e.id.seq.wrapping_sub(master.seq) as i64);
        let n = e.fields.len() as i64;
        if same {
            for (_, v) in &e.fields {
                lp.push_str(v);
            }
            lp.push_int(n + 3);
        } else {
            lp.push_int(n);
            for (f, v) in &e.fields {
                lp.push_str(f);
                lp.push_str(v);
            }
            lp.push_int(n + 3 + n + 1);
        }
    }
    (master, lp.finish())
}

fn encode_stream(out: &mut Vec<u8>, s: &Stream, version: u32) -> Result<(), Error> {
    if version < 9 {
        return Err(cannot("a stream (needs RDB 9, Redis 5)", version));
    }
    let redis13 = version >= 13 && !crate::parser::is_valkey_version(version);
    let t = if redis13 && s.idmp.is_some() {
        STREAM_LISTPACKS_4
    } else if version >= 11 {
        STREAM_LISTPACKS_3
    } else if version >= 10 {
        STREAM_LISTPACKS_2
    } else {
        STREAM_LISTPACKS
    };
    out.push(t);
    let chunks: Vec<&[StreamEntry]> = s.entries.chunks(STREAM_NODE_ENTRIES).collect();
    put_len(out, chunks.len() as u64);
    for c in chunks {
        let (master, lp) = stream_node(c);
        put_blob(out, &master.to_be_bytes());
        put_blob(out, &lp);
    }
    put_len(out, s.entries.len() as u64);
    put_len(out, s.last_id.ms);
    put_len(out, s.last_id.seq);
    if t >= STREAM_LISTPACKS_2 {
        let first = s.entries.first().map(|e| e.id).unwrap_or_default();
        put_len(out, first.ms);
        put_len(out, first.seq);
        put_len(out, s.max_deleted_id.ms);
        put_len(out, s.max_deleted_id.seq);
        put_len(out, s.entries_added.max(s.entries.len() as u64));
    }
    put_len(out, s.groups.len() as u64);
    for g in &s.groups {
        put_string(out, &g.name);
        put_len(out, g.last_id.ms);
        put_len(out, g.last_id.seq);
        if t >= STREAM_LISTPACKS_2 {
            let est = match g.entries_read {
                Some(n) => n,
                None if g.last_id >= s.last_id => s.entries_added.max(s.entries.len() as u64),
                None if g.last_id == StreamId::default() => 0,
                None => u64::MAX,
            };
            put_len(out, est);
        }
        put_len(out, g.pending.len() as u64);
        for p in &g.pending {
            out.extend_from_slice(&p.id.to_be_bytes());
            out.extend_from_slice(&p.delivery_time_ms.to_le_bytes());
            put_len(out, p.delivery_count);
        }
        put_len(out, g.consumers.len() as u64);
        for c in &g.consumers {
            put_string(out, &c.name);
            out.extend_from_slice(&c.seen_time_ms.to_le_bytes());
            if t >= STREAM_LISTPACKS_3 {
                out.extend_from_slice(&c.active_time_ms.unwrap_or(c.seen_time_ms).to_le_bytes());
            }
            put_len(out, c.pending.len() as u64);
            for id in &c.pending {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
    if t == STREAM_LISTPACKS_4 {
        let idmp = s.idmp.clone().unwrap_or_default();
        put_len(out, idmp.duration);
        put_len(out, idmp.max_entries);
        put_len(out, idmp.producers.len() as u64);
        for (pid, es) in &idmp.producers {
            put_blob(out, pid);
            put_len(out, es.len() as u64);
            for (iid, id) in es {
                put_blob(out, iid);
                put_len(out, id.ms);
                put_len(out, id.seq);
            }
        }
        put_len(out, idmp.iids_added);
        put_len(out, idmp.iids_duplicates);
    }
    Ok(())
}
