//! Per-type value grammars, read one unit at a time (see the parser's module docs).

use bytes::Bytes;

use crate::cursor::{corrupt, int_bytes, share, Bad, Cur, RStr, Stop, R};
use crate::encoding::{
    intset_for_each, listpack_for_each, packed_count_hint, ziplist_for_each, zipmap_for_each, Elem,
};
use crate::parser::types::*;
use crate::parser::{module_value, Entry};
use crate::value::{
    Consumer, ConsumerGroup, HashField, PendingEntry, Stream, StreamEntry, StreamId, StreamIdmp,
    Value,
};
use crate::visit::{Shape, Visitor};

/// True for every value type byte this crate decodes.
pub(crate) fn is_value_type(t: u8) -> bool {
    matches!(t, 0..=7 | 9..=26)
}

/// Accumulated, not yet decoded, parts of a value.
enum Acc {
    None,
    Str(Bytes),
    Elems(Vec<Bytes>),
    Zset(Vec<(Bytes, f64)>),
    Hash(Vec<HashField>),
    /// (container, blob): quicklist nodes (container 1 = plain element, 2 = packed listpack,
    /// 0 = ziplist) or single-blob encodings.
    Blobs(Vec<(u8, Bytes)>),
    Stream(Vec<([u8; 16], Bytes)>),
    Module(u64, Vec<u8>),
}

/// Stream metadata after the listpacks.
struct StreamTail {
    length: u64,
    last_id: StreamId,
    first_id: Option<StreamId>,
    max_deleted_id: StreamId,
    entries_added: Option<u64>,
    groups: Vec<ConsumerGroup>,
    idmp: Option<StreamIdmp>,
}

pub(crate) struct ValueState {
    pub t: u8,
    pub key: Bytes,
    valkey: bool,
    pub raw: Option<Vec<u8>>,
    keep: bool,
    offset: u64,
    expire: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
    db: u64,
    phase: u8,
    remaining: u64,
    min_expire: u64,
    acc: Acc,
    tail: Option<StreamTail>,
    /// Stream metadata still to read: groups, entries of the current group's PEL, consumers of the current
    /// group, entries of the current consumer's PEL.
    groups_left: u64,
    pel_left: u64,
    consumers_left: u64,
    consumer_pel_left: u64,
    size: u64,
    pub pending_bytes: usize,
    /// First live stream entry seen in an earlier chunk (v1 streams do not store it).
    first_live: Option<StreamId>,
    /// The big-value bound: a plain string longer than this is read in pieces of this size.
    pub big: Option<usize>,
    pub started: bool,
    pub finished: bool,
}

fn cap(n: u64) -> usize {
    n.min(4096) as usize
}

impl ValueState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        t: u8,
        key: Bytes,
        valkey: bool,
        raw: bool,
        keep: bool,
        offset: u64,
        expire: Option<i64>,
        idle: Option<u64>,
        freq: Option<u8>,
        db: u64,
    ) -> Self {
        ValueState {
            t,
            key,
            valkey,
            raw: raw.then(Vec::new),
            keep,
            offset,
            expire,
            idle,
            freq,
            db,
            phase: 0,
            remaining: 0,
            min_expire: 0,
            acc: Acc::None,
            tail: None,
            groups_left: 0,
            pel_left: 0,
            consumers_left: 0,
            consumer_pel_left: 0,
            size: 1,
            pending_bytes: 0,
            first_live: None,
            big: None,
            started: false,
            finished: false,
        }
    }

    /// Records bytes of a completed unit.
    pub(crate) fn commit(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.raw {
            if r.is_empty() {
                // First unit: most values are one unit, so this is usually the only allocation.
                r.reserve(1 + bytes.len());
                r.push(self.t);
            }
            r.extend_from_slice(bytes);
        }
        self.size += bytes.len() as u64;
        self.pending_bytes += bytes.len();
    }

    /// The entry (header fields plus the given value). `last` moves the key out.
    pub(crate) fn entry(&mut self, value: Option<Value>, last: bool) -> Entry {
        Entry {
            db: self.db,
            key: if last {
                std::mem::take(&mut self.key)
            } else {
                self.key.clone()
            },
            expire_at_ms: self.expire,
            idle_secs: self.idle,
            freq: self.freq,
            rdb_type: self.t,
            offset: self.offset,
            serialized_len: self.size,
            value,
            raw: self.raw.take().map(|mut r| {
                if r.is_empty() {
                    r.push(self.t);
                }
                Bytes::from(r)
            }),
        }
    }

    /// True while in the element loop of a type that can be chunked.
    pub(crate) fn chunkable(&self) -> bool {
        self.t == STRING && self.phase == 1
            || matches!(
                self.t,
                LIST | SET
                    | ZSET
                    | ZSET_2
                    | HASH
                    | LIST_QUICKLIST
                    | LIST_QUICKLIST_2
                    | HASH_METADATA
                    | HASH_METADATA_PRE_GA
            ) && self.phase >= 1
            || matches!(
                self.t,
                STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 | STREAM_LISTPACKS_4
            ) && self.phase == 1
    }

    fn keep_str(&self, s: RStr<'_>) -> R<Bytes> {
        if self.keep {
            s.to_bytes()
        } else {
            Ok(Bytes::new())
        }
    }

    /// A blob (quicklist node, stream listpack) to keep, or `None` when values are not kept;
    /// compressed blobs are decompressed either way, to validate them.
    fn keep_blob(&self, s: RStr<'_>) -> R<Option<Bytes>> {
        if self.keep {
            return s.to_bytes().map(Some);
        }
        if let RStr::Lzf { .. } = s {
            s.to_bytes()?;
        }
        Ok(None)
    }

    /// Reads the element count that opens a collection, moves to `phase` and sets up the
    /// accumulator `acc` (given the capped capacity). True when the collection is empty.
    fn begin(
        &mut self,
        c: &mut Cur<'_>,
        what: &'static str,
        phase: u8,
        acc: fn(usize) -> Acc,
    ) -> R<bool> {
        self.remaining = c.len(what)?;
        self.phase = phase;
        self.acc = acc(cap(self.remaining));
        Ok(self.remaining == 0)
    }

    /// Counts one element of the collection as read; true after the last.
    fn element_done(&mut self) -> bool {
        self.remaining -= 1;
        self.remaining == 0
    }

    /// Keeps one hash field (when values are kept).
    fn push_field(&mut self, f: RStr<'_>, v: RStr<'_>, expire_at_ms: Option<u64>) -> R<()> {
        if self.keep {
            let hf = HashField {
                field: f.to_bytes()?,
                value: v.to_bytes()?,
                expire_at_ms,
            };
            if let Acc::Hash(h) = &mut self.acc {
                h.push(hf);
            }
        }
        Ok(())
    }

    /// Parses one unit. Returns true when the value is complete. On `Stop::More` the caller
    /// rewinds to the unit start (nothing here has been changed in that case).
    pub(crate) fn unit(&mut self, c: &mut Cur<'_>) -> R<bool> {
        match self.t {
            STRING if self.phase == 1 => {
                // A big plain string, read in pieces without buffering it whole.
                let piece = self.big.unwrap_or(usize::MAX).max(1) as u64;
                let want = self.remaining.min(piece) as usize;
                let n = c.avail().min(want);
                if n == 0 {
                    c.take(want, "a string value")?;
                }
                let part = c.take(n, "a string value")?;
                if let Acc::Elems(v) = &mut self.acc {
                    v.push(match c.src {
                        Some(src) => share(src, part),
                        None => Bytes::copy_from_slice(part),
                    });
                }
                self.remaining -= n as u64;
                Ok(self.remaining == 0)
            }
            STRING => {
                if let Some(big) = self.big {
                    let mut probe = Cur::new(c.b, c.p, c.max_string);
                    if let Ok((len, false)) = probe.len_enc("the length of a string value") {
                        if len > big as u64 {
                            c.p = probe.p;
                            self.phase = 1;
                            self.remaining = len;
                            self.acc = Acc::Elems(Vec::new());
                            return Ok(false);
                        }
                    }
                }
                let s = c.string("a string value")?;
                let b = self.keep_str(s)?;
                self.acc = Acc::Str(b);
                Ok(true)
            }
            LIST | SET => {
                let (len_what, elem_what) = if self.t == LIST {
                    ("the length of a list", "a list element")
                } else {
                    ("the length of a set", "a set member")
                };
                if self.phase == 0 {
                    return self.begin(c, len_what, 1, |n| Acc::Elems(Vec::with_capacity(n)));
                }
                let s = c.string(elem_what)?;
                let b = self.keep_str(s)?;
                if self.keep {
                    if let Acc::Elems(v) = &mut self.acc {
                        v.push(b);
                    }
                }
                Ok(self.element_done())
            }
            ZSET | ZSET_2 => {
                if self.phase == 0 {
                    return self.begin(c, "the length of a sorted set", 1, |n| {
                        Acc::Zset(Vec::with_capacity(n))
                    });
                }
                let m = c.string("a sorted set member")?;
                let score = if self.t == ZSET {
                    c.ascii_double("a sorted set score")?
                } else {
                    c.f64_le("a sorted set score")?
                };
                let b = self.keep_str(m)?;
                if self.keep {
                    if let Acc::Zset(v) = &mut self.acc {
                        v.push((b, score));
                    }
                }
                Ok(self.element_done())
            }
            HASH | HASH_METADATA_PRE_GA if self.t == HASH || self.valkey => {
                // HASH: count, then (field, value). Valkey HASH_2: count, then (field, value,
                // 8-byte LE expiry ms, -1 = none).
                if self.phase == 0 {
                    return self.begin(c, "the length of a hash", 1, hash_acc);
                }
                let f = c.string("a hash field")?;
                let v = c.string("a hash value")?;
                let expire = if self.t == HASH {
                    None
                } else {
                    let exp = c.u64_le("a hash field expiry")? as i64;
                    (exp >= 0).then_some(exp as u64)
                };
                self.push_field(f, v, expire)?;
                Ok(self.element_done())
            }
            HASH_METADATA | HASH_METADATA_PRE_GA => {
                if self.phase == 0 && self.t == HASH_METADATA {
                    self.min_expire = c.u64_le("the minimum field expiry of a hash")?;
                    self.phase = 1;
                    return Ok(false);
                }
                if self.phase <= 1 {
                    return self.begin(c, "the length of a hash", 2, hash_acc);
                }
                let at = c.p;
                let ttl = c.len("a hash field TTL")?;
                let f = c.string("a hash field")?;
                let v = c.string("a hash value")?;
                let expire = if ttl == 0 {
                    None
                } else if self.t == HASH_METADATA {
                    Some(ttl.wrapping_add(self.min_expire).wrapping_sub(1))
                } else {
                    Some(ttl)
                };
                if let Some(e) = expire {
                    if e > 0x0000_FFFF_FFFF_FFFF {
                        return corrupt(at, format!("hash field expiry {e} is beyond the maximum"));
                    }
                }
                self.push_field(f, v, expire)?;
                Ok(self.element_done())
            }
            HASH_ZIPMAP
            | LIST_ZIPLIST
            | SET_INTSET
            | ZSET_ZIPLIST
            | HASH_ZIPLIST
            | HASH_LISTPACK
            | ZSET_LISTPACK
            | SET_LISTPACK
            | HASH_LISTPACK_EX_PRE_GA
            | HASH_LISTPACK_EX => {
                if self.t == HASH_LISTPACK_EX && self.phase == 0 {
                    c.u64_le("the minimum field expiry of a hash")?;
                    self.phase = 1;
                    return Ok(false);
                }
                let s = c.string("an encoded value blob")?;
                let b = s.to_bytes()?;
                self.acc = Acc::Blobs(vec![(0, b)]);
                Ok(true)
            }
            LIST_QUICKLIST | LIST_QUICKLIST_2 => {
                if self.phase == 0 {
                    return self.begin(c, "the node count of a quicklist", 1, |n| {
                        Acc::Blobs(Vec::with_capacity(n))
                    });
                }
                let container = if self.t == LIST_QUICKLIST_2 {
                    let at = c.p;
                    let k = c.len("the container type of a quicklist node")?;
                    if k != 1 && k != 2 {
                        return corrupt(
                            at,
                            format!("quicklist node container type {k} (expected 1 or 2)"),
                        );
                    }
                    k as u8
                } else {
                    0
                };
                let s = c.string("a quicklist node")?;
                if let Some(b) = self.keep_blob(s)? {
                    if let Acc::Blobs(v) = &mut self.acc {
                        v.push((container, b));
                    }
                }
                Ok(self.element_done())
            }
            MODULE_2 | MODULE_PRE_GA => {
                // Type 6 (Redis 4.0 RCs) has the same shape when the module wrote its value with the typed
                // opcodes; a value that is not such a sequence stops at its first unknown opcode.
                if self.phase == 0 {
                    let id = c.len("the module ID of a module value")?;
                    self.phase = 1;
                    self.acc = Acc::Module(id, Vec::new());
                    return Ok(false);
                }
                // One opcode with its operand per unit.
                let start = c.p;
                let op = match c.module_opcode() {
                    Err(Stop::Bad { at, kind: Bad::Corrupt(m) }) if self.t == MODULE_PRE_GA => {
                        return Err(Stop::Bad {
                            at,
                            kind: Bad::Unsupported(format!(
                                "pre-GA module value type 6 that cannot be skipped by its opcodes ({m})"
                            )),
                        })
                    }
                    r => r?,
                };
                if let Acc::Module(_, p) = &mut self.acc {
                    p.extend_from_slice(&c.b[start..c.p]);
                }
                Ok(op == 0)
            }
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 | STREAM_LISTPACKS_4 => {
                self.stream_unit(c)
            }
            t => corrupt(c.p, format!("unknown value type {t}")),
        }
    }

    fn stream_unit(&mut self, c: &mut Cur<'_>) -> R<bool> {
        match self.phase {
            0 => {
                self.remaining = c.len("the listpack count of a stream")?;
                self.phase = if self.remaining == 0 { 2 } else { 1 };
                self.acc = Acc::Stream(Vec::with_capacity(cap(self.remaining)));
                Ok(false)
            }
            1 => {
                let at = c.p;
                let owned;
                let key = match c.string("the master ID of a stream node")? {
                    RStr::Plain(s, _) => s,
                    other => {
                        owned = other.to_bytes()?;
                        &owned[..]
                    }
                };
                let Ok(id) = <[u8; 16]>::try_from(key) else {
                    return corrupt(
                        at,
                        format!("stream node key is {} bytes, not 16", key.len()),
                    );
                };
                let lp = c.string("a stream listpack")?;
                if let Some(b) = self.keep_blob(lp)? {
                    if let Acc::Stream(v) = &mut self.acc {
                        v.push((id, b));
                    }
                }
                if self.element_done() {
                    self.phase = 2;
                }
                Ok(false)
            }
            _ => self.stream_tail_unit(c),
        }
    }

    /// One unit of the metadata after a stream's listpacks: the header (length, IDs, group count), a group's
    /// header, one entry of its PEL, its consumer count, a consumer's header, one entry of a consumer's PEL,
    /// or the IDMP state. So a stream with millions of pending entries never has more than one of them
    /// buffered, and nothing is parsed twice.
    fn stream_tail_unit(&mut self, c: &mut Cur<'_>) -> R<bool> {
        const HEADER: u8 = 2;
        const GROUP: u8 = 3;
        const GROUP_PEL: u8 = 4;
        const CONSUMERS: u8 = 5;
        const CONSUMER: u8 = 6;
        const CONSUMER_PEL: u8 = 7;
        const IDMP: u8 = 8;
        let t = self.t;
        match self.phase {
            HEADER => {
                let length = c.len("the length of a stream")?;
                let last_id = len_id(c, "the last ID of a stream")?;
                let (first_id, max_deleted_id, entries_added) = if t >= STREAM_LISTPACKS_2 {
                    let f = len_id(c, "the first ID of a stream")?;
                    let m = len_id(c, "the max deleted ID of a stream")?;
                    let a = c.len("the entries-added counter of a stream")?;
                    (Some(f), m, Some(a))
                } else {
                    (None, StreamId::default(), None)
                };
                let ngroups = c.len("the consumer group count of a stream")?;
                self.tail = Some(StreamTail {
                    length,
                    last_id,
                    first_id,
                    max_deleted_id,
                    entries_added,
                    groups: Vec::with_capacity(cap(ngroups).min(64)),
                    idmp: None,
                });
                self.groups_left = ngroups;
                self.phase = GROUP;
            }
            GROUP => {
                let name = c.string("a consumer group name")?.to_bytes()?;
                let last = len_id(c, "a consumer group last ID")?;
                let entries_read = if t >= STREAM_LISTPACKS_2 {
                    Some(c.len("a consumer group entries-read counter")?)
                } else {
                    None
                };
                let npel = c.len("the PEL size of a consumer group")?;
                self.tail_groups().push(ConsumerGroup {
                    name,
                    last_id: last,
                    entries_read,
                    pending: Vec::with_capacity(cap(npel)),
                    consumers: Vec::new(),
                });
                self.pel_left = npel;
                self.phase = GROUP_PEL;
            }
            GROUP_PEL if self.pel_left > 0 => {
                let id = StreamId::from_be_bytes(&c.id16("a PEL entry ID")?);
                let delivery_time_ms = c.u64_le("a PEL delivery time")?;
                let delivery_count = c.len("a PEL delivery count")?;
                if self.keep {
                    if let Some(g) = self.tail_groups().last_mut() {
                        g.pending.push(PendingEntry {
                            id,
                            delivery_time_ms,
                            delivery_count,
                        });
                    }
                }
                self.pel_left -= 1;
            }
            GROUP_PEL => self.phase = CONSUMERS,
            CONSUMERS => {
                let ncons = c.len("the consumer count of a consumer group")?;
                if let Some(g) = self.tail_groups().last_mut() {
                    g.consumers.reserve(cap(ncons));
                }
                self.consumers_left = ncons;
                self.phase = CONSUMER;
            }
            CONSUMER if self.consumers_left > 0 => {
                let name = c.string("a consumer name")?.to_bytes()?;
                let seen_time_ms = c.u64_le("a consumer seen time")?;
                let active_time_ms = if t >= STREAM_LISTPACKS_3 {
                    Some(c.u64_le("a consumer active time")?)
                } else {
                    None
                };
                let np = c.len("the PEL size of a consumer")?;
                if let Some(g) = self.tail_groups().last_mut() {
                    g.consumers.push(Consumer {
                        name,
                        seen_time_ms,
                        active_time_ms,
                        pending: Vec::with_capacity(cap(np)),
                    });
                }
                self.consumer_pel_left = np;
                self.consumers_left -= 1;
                self.phase = CONSUMER_PEL;
            }
            CONSUMER => {
                // The group is complete.
                self.groups_left = self.groups_left.saturating_sub(1);
                self.phase = GROUP;
            }
            CONSUMER_PEL if self.consumer_pel_left > 0 => {
                let id = StreamId::from_be_bytes(&c.id16("a consumer PEL entry ID")?);
                if self.keep {
                    let consumer = self
                        .tail_groups()
                        .last_mut()
                        .and_then(|g| g.consumers.last_mut());
                    if let Some(consumer) = consumer {
                        consumer.pending.push(id);
                    }
                }
                self.consumer_pel_left -= 1;
            }
            CONSUMER_PEL => self.phase = CONSUMER,
            _ => {
                let idmp = read_stream_idmp(c)?;
                if let Some(tail) = &mut self.tail {
                    tail.idmp = Some(idmp);
                }
                return Ok(true);
            }
        }
        // After the last group: the IDMP state of RDB 13 streams, or the end.
        if self.phase == GROUP && self.groups_left == 0 {
            if t >= STREAM_LISTPACKS_4 {
                self.phase = IDMP;
                return Ok(false);
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn tail_groups(&mut self) -> &mut Vec<ConsumerGroup> {
        &mut self
            .tail
            .get_or_insert_with(|| StreamTail {
                length: 0,
                last_id: StreamId::default(),
                first_id: None,
                max_deleted_id: StreamId::default(),
                entries_added: None,
                groups: Vec::new(),
                idmp: None,
            })
            .groups
    }

    /// Decodes the accumulated units into a chunk value and clears them.
    pub(crate) fn take_chunk(&mut self, last: bool) -> Result<Option<Value>, String> {
        self.pending_bytes = 0;
        let fresh = match &self.acc {
            Acc::Elems(_) => Acc::Elems(Vec::new()),
            Acc::Zset(_) => Acc::Zset(Vec::new()),
            Acc::Hash(_) => Acc::Hash(Vec::new()),
            Acc::Blobs(_) => Acc::Blobs(Vec::new()),
            Acc::Stream(_) => Acc::Stream(Vec::new()),
            _ => Acc::None,
        };
        let acc = std::mem::replace(&mut self.acc, fresh);
        let tail = if last { self.tail.take() } else { None };
        let mut v = build_value(self.t, acc, tail)?;
        if let Value::Stream(s) = &mut v {
            if self.first_live.is_none() {
                self.first_live = s.entries.first().map(|e| e.id);
            }
            if last && self.t == STREAM_LISTPACKS {
                s.first_id = self.first_live.unwrap_or_default();
            }
        }
        if !last && v.is_empty() {
            return Ok(None);
        }
        Ok(Some(v))
    }

    /// Decodes the whole value.
    pub(crate) fn build(&mut self) -> Result<Value, String> {
        let acc = std::mem::replace(&mut self.acc, Acc::None);
        build_value(self.t, acc, self.tail.take())
    }

    /// Gives the whole value to `v` (see [`crate::visit`]): strings, lists, sets and plain hashes element by
    /// element, slices of the accumulated buffers; any other value built as [`ValueState::build`] does.
    pub(crate) fn visit(&mut self, v: &mut dyn Visitor) -> Result<(), String> {
        let acc = std::mem::replace(&mut self.acc, Acc::None);
        match (self.t, acc) {
            (STRING, Acc::Str(s)) => v.string(&s),
            (STRING, Acc::Elems(parts)) if parts.len() == 1 => v.string(&parts[0]),
            (LIST | SET, Acc::Elems(items)) => {
                v.begin(
                    if self.t == LIST {
                        Shape::List
                    } else {
                        Shape::Set
                    },
                    items.len(),
                );
                for b in &items {
                    v.element(Elem::Str(b));
                }
            }
            (LIST | LIST_QUICKLIST | LIST_QUICKLIST_2, Acc::None) => v.begin(Shape::List, 0),
            (SET, Acc::None) => v.begin(Shape::Set, 0),
            (HASH, Acc::None) => v.begin(Shape::Hash, 0),
            (HASH, Acc::Hash(fields)) => {
                v.begin(Shape::Hash, fields.len());
                for f in &fields {
                    v.element(Elem::Str(&f.field));
                    v.element(Elem::Str(&f.value));
                }
            }
            (LIST_QUICKLIST | LIST_QUICKLIST_2, Acc::Blobs(nodes)) => {
                let hint = nodes
                    .iter()
                    .map(|(container, blob)| match container {
                        1 => 1,
                        c => packed_count_hint(blob, *c != 0),
                    })
                    .sum();
                v.begin(Shape::List, hint);
                for (container, blob) in &nodes {
                    if *container == 1 {
                        v.element(Elem::Str(blob));
                    } else {
                        packed_for_each(blob, *container != 0, |e| {
                            v.element(e);
                            Ok(())
                        })?;
                    }
                }
            }
            (
                HASH_ZIPMAP | LIST_ZIPLIST | SET_INTSET | SET_LISTPACK | HASH_ZIPLIST
                | HASH_LISTPACK,
                Acc::Blobs(nodes),
            ) if nodes.len() == 1 => visit_blob(self.t, &nodes[0].1, v)?,
            (t, acc) => v.value(build_value(t, acc, self.tail.take())?),
        }
        Ok(())
    }
}

/// Gives the elements of a single-blob list, set or hash to `v`, with the checks [`decode_blob`] makes.
fn visit_blob(t: u8, blob: &[u8], v: &mut dyn Visitor) -> Result<(), String> {
    match t {
        HASH_ZIPMAP => {
            v.begin(Shape::Hash, 0);
            zipmap_for_each(blob, |f, val| {
                v.element(Elem::Str(f));
                v.element(Elem::Str(val));
            })?;
        }
        SET_INTSET => {
            v.begin(Shape::Set, blob.len().saturating_sub(8) / 2);
            intset_for_each(blob, |i| v.element(Elem::Int(i)))?;
        }
        LIST_ZIPLIST | SET_LISTPACK => {
            let listpack = t == SET_LISTPACK;
            let shape = if listpack { Shape::Set } else { Shape::List };
            v.begin(shape, packed_count_hint(blob, listpack));
            packed_for_each(blob, listpack, |e| {
                v.element(e);
                Ok(())
            })?;
        }
        _ => {
            let listpack = t == HASH_LISTPACK;
            v.begin(Shape::Hash, packed_count_hint(blob, listpack) / 2);
            let n = packed_for_each(blob, listpack, |e| {
                v.element(e);
                Ok(())
            })?;
            if n % 2 != 0 {
                return Err(format!("hash blob has an odd number of elements ({n})"));
            }
        }
    }
    Ok(())
}

fn hash_acc(n: usize) -> Acc {
    Acc::Hash(Vec::with_capacity(n))
}

/// Reads a stream ID stored as two RDB lengths (ms, seq).
fn len_id(c: &mut Cur<'_>, what: &'static str) -> R<StreamId> {
    Ok(StreamId::new(c.len(what)?, c.len(what)?))
}

/// The IDMP state of an RDB 13 stream (`STREAM_LISTPACKS_4`).
fn read_stream_idmp(c: &mut Cur<'_>) -> R<StreamIdmp> {
    let duration = c.len("the IDMP duration of a stream")?;
    let max_entries = c.len("the IDMP max entries of a stream")?;
    let np = c.len("the IDMP producer count of a stream")?;
    let mut producers = Vec::with_capacity(cap(np));
    for _ in 0..np {
        let pid = c.string("an IDMP producer ID")?.to_bytes()?;
        let ne = c.len("the IDMP entry count of a producer")?;
        let mut es = Vec::with_capacity(cap(ne));
        for _ in 0..ne {
            let iid = c.string("an IDMP entry IID")?.to_bytes()?;
            let id = len_id(c, "an IDMP entry stream ID")?;
            es.push((iid, id));
        }
        producers.push((pid, es));
    }
    let iids_added = c.len("the IDMP iids-added counter")?;
    let iids_duplicates = c.len("the IDMP iids-duplicates counter")?;
    Ok(StreamIdmp {
        duration,
        max_entries,
        producers,
        iids_added,
        iids_duplicates,
    })
}

fn pairs_from<'a>(items: &[Elem<'a>], what: &str) -> Result<Vec<(Elem<'a>, Elem<'a>)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err(format!(
            "{what} has an odd number of elements ({})",
            items.len()
        ));
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// Decodes a listpack (`listpack`) or a ziplist, calling `f` for each element.
fn packed_for_each<'a>(
    b: &'a [u8],
    listpack: bool,
    f: impl FnMut(Elem<'a>) -> Result<(), String>,
) -> Result<usize, String> {
    if listpack {
        listpack_for_each(b, f)
    } else {
        ziplist_for_each(b, f)
    }
}

/// The elements of a listpack (`listpack`) or a ziplist.
fn collect_packed(b: &[u8], listpack: bool) -> Result<Vec<Elem<'_>>, String> {
    let mut v = Vec::with_capacity(packed_count_hint(b, listpack));
    packed_for_each(b, listpack, |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}

fn score(e: Elem<'_>) -> Result<f64, String> {
    e.as_f64()
        .ok_or_else(|| "invalid sorted set score in encoded blob".to_string())
}

fn build_value(t: u8, acc: Acc, tail: Option<StreamTail>) -> Result<Value, String> {
    Ok(match (t, acc) {
        (STRING, Acc::Str(s)) => Value::String(s),
        (STRING, Acc::Elems(parts)) => Value::String(if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            Bytes::from(parts.concat())
        }),
        (LIST, Acc::Elems(v)) => Value::List(v),
        (SET, Acc::Elems(v)) => Value::Set(v),
        (ZSET | ZSET_2, Acc::Zset(v)) => Value::SortedSet(v),
        (HASH | HASH_METADATA | HASH_METADATA_PRE_GA, Acc::Hash(v)) => Value::Hash(v),
        (LIST | LIST_QUICKLIST | LIST_QUICKLIST_2, Acc::None) => Value::List(Vec::new()),
        (SET, Acc::None) => Value::Set(Vec::new()),
        (ZSET | ZSET_2, Acc::None) => Value::SortedSet(Vec::new()),
        (HASH | HASH_METADATA | HASH_METADATA_PRE_GA, Acc::None) => Value::Hash(Vec::new()),
        (LIST_QUICKLIST | LIST_QUICKLIST_2, Acc::Blobs(nodes)) => {
            let mut out = Vec::new();
            for (container, blob) in &nodes {
                if *container == 1 {
                    out.push(blob.clone());
                } else {
                    packed_for_each(blob, *container != 0, |e| {
                        out.push(elem_bytes(blob, e));
                        Ok(())
                    })?;
                }
            }
            Value::List(out)
        }
        (_, Acc::Blobs(mut nodes)) if nodes.len() == 1 => {
            let (_, blob) = nodes.pop().unwrap_or_default();
            decode_blob(t, &blob)?
        }
        (MODULE_2 | MODULE_PRE_GA, Acc::Module(id, payload)) => {
            Value::Module(Box::new(module_value(id, Bytes::from(payload))))
        }
        (STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 | STREAM_LISTPACKS_4, acc) => {
            let nodes = match acc {
                Acc::Stream(n) => n,
                _ => Vec::new(),
            };
            let mut s = Stream::default();
            for (id, lp) in &nodes {
                decode_stream_node(StreamId::from_be_bytes(id), lp, &mut s.entries)?;
            }
            if let Some(tail) = tail {
                s.length = tail.length;
                s.last_id = tail.last_id;
                s.first_id = tail
                    .first_id
                    .unwrap_or_else(|| s.entries.first().map(|e| e.id).unwrap_or_default());
                s.max_deleted_id = tail.max_deleted_id;
                s.entries_added = tail.entries_added.unwrap_or(tail.length);
                s.groups = tail.groups;
                s.idmp = tail.idmp;
            }
            Value::Stream(Box::new(s))
        }
        (t, _) => return Err(format!("internal: no decoder for value type {t}")),
    })
}

/// An element of `blob` as bytes: a slice of it for a string, the decimal text of an integer.
fn elem_bytes(blob: &Bytes, e: Elem<'_>) -> Bytes {
    match e {
        Elem::Str(s) => share(blob, s),
        Elem::Int(i) => int_bytes(i),
    }
}

/// Decodes a single-blob value; its string elements are slices of `blob`.
fn decode_blob(t: u8, blob: &Bytes) -> Result<Value, String> {
    Ok(match t {
        HASH_ZIPMAP => {
            let mut v = Vec::new();
            zipmap_for_each(blob, |f, val| {
                v.push(HashField::new(share(blob, f), share(blob, val)))
            })?;
            Value::Hash(v)
        }
        LIST_ZIPLIST => {
            let mut v = Vec::with_capacity(packed_count_hint(blob, false));
            ziplist_for_each(blob, |e| {
                v.push(elem_bytes(blob, e));
                Ok(())
            })?;
            Value::List(v)
        }
        SET_INTSET => {
            let mut v = Vec::new();
            intset_for_each(blob, |i| v.push(int_bytes(i)))?;
            Value::Set(v)
        }
        SET_LISTPACK => {
            let mut v = Vec::with_capacity(packed_count_hint(blob, true));
            listpack_for_each(blob, |e| {
                v.push(elem_bytes(blob, e));
                Ok(())
            })?;
            Value::Set(v)
        }
        ZSET_ZIPLIST | ZSET_LISTPACK => {
            let items = collect_packed(blob, t == ZSET_LISTPACK)?;
            let mut v = Vec::with_capacity(items.len() / 2);
            for (m, s) in pairs_from(&items, "sorted set blob")? {
                v.push((elem_bytes(blob, m), score(s)?));
            }
            Value::SortedSet(v)
        }
        HASH_ZIPLIST | HASH_LISTPACK => {
            let items = collect_packed(blob, t == HASH_LISTPACK)?;
            let mut v = Vec::with_capacity(items.len() / 2);
            for (f, val) in pairs_from(&items, "hash blob")? {
                v.push(HashField::new(elem_bytes(blob, f), elem_bytes(blob, val)));
            }
            Value::Hash(v)
        }
        HASH_LISTPACK_EX | HASH_LISTPACK_EX_PRE_GA => {
            let items = collect_packed(blob, true)?;
            if items.len() % 3 != 0 {
                return Err(format!(
                    "hash listpack with TTLs has {} elements, not a multiple of 3",
                    items.len()
                ));
            }
            let mut v = Vec::with_capacity(items.len() / 3);
            for tr in items.chunks_exact(3) {
                let ttl = tr[2]
                    .as_i64()
                    .ok_or("hash field TTL in listpack is not an integer")?;
                if !(0..=0x0000_FFFF_FFFF_FFFF).contains(&ttl) {
                    return Err(format!("hash field TTL {ttl} out of range"));
                }
                v.push(HashField {
                    field: elem_bytes(blob, tr[0]),
                    value: elem_bytes(blob, tr[1]),
                    expire_at_ms: (ttl != 0).then_some(ttl as u64),
                });
            }
            Value::Hash(v)
        }
        t => return Err(format!("internal: value type {t} is not a single blob")),
    })
}

fn lp_int(e: Elem<'_>, what: &str) -> Result<i64, String> {
    e.as_i64()
        .ok_or_else(|| format!("stream listpack: missing or non-integer {what}"))
}

/// Decodes one stream listpack node, appending live entries.
fn decode_stream_node(
    master: StreamId,
    lp: &[u8],
    out: &mut Vec<StreamEntry>,
) -> Result<(), String> {
    let items = collect_packed(lp, true)?;
    let mut i = 0usize;
    let mut next = |what: &str| -> Result<Elem<'_>, String> {
        let e = items
            .get(i)
            .copied()
            .ok_or_else(|| format!("stream listpack ends before {what}"))?;
        i += 1;
        Ok(e)
    };
    let count = lp_int(next("the entry count")?, "entry count")?;
    let deleted = lp_int(next("the deleted count")?, "deleted count")?;
    let nmaster = lp_int(next("the master field count")?, "master field count")?;
    if count < 0 || deleted < 0 || nmaster < 0 {
        return Err("stream listpack has negative counts".into());
    }
    let mut master_fields = Vec::with_capacity((nmaster as usize).min(items.len()));
    for _ in 0..nmaster {
        master_fields.push(next("a master field")?.to_bytes());
    }
    let zero = lp_int(next("the master terminator")?, "master terminator")?;
    if zero != 0 {
        return Err("stream listpack master entry not terminated by 0".into());
    }
    let total = count + deleted;
    for _ in 0..total {
        let flags = lp_int(next("entry flags")?, "entry flags")?;
        let ms = lp_int(next("entry ms delta")?, "entry ms delta")?;
        let seq = lp_int(next("entry seq delta")?, "entry seq delta")?;
        let id = StreamId::new(
            master.ms.wrapping_add(ms as u64),
            master.seq.wrapping_add(seq as u64),
        );
        let same = flags & 2 != 0;
        let mut fields = Vec::new();
        if same {
            for f in &master_fields {
                let v = next("an entry value")?.to_bytes();
                fields.push((f.clone(), v));
            }
        } else {
            let n = lp_int(next("entry field count")?, "entry field count")?;
            if n < 0 {
                return Err("stream entry has a negative field count".into());
            }
            for _ in 0..n {
                let f = next("an entry field")?.to_bytes();
                let v = next("an entry value")?.to_bytes();
                fields.push((f, v));
            }
        }
        let _lp_count = next("the entry lp-count")?;
        if flags & 1 == 0 {
            out.push(StreamEntry { id, fields });
        }
    }
    if i != items.len() {
        return Err(format!(
            "stream listpack has {} elements after its entries",
            items.len() - i
        ));
    }
    Ok(())
}
