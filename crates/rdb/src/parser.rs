//! The sans-I/O RDB parser: feed it bytes in any chunking, pull [`Item`]s out.
//!
//! # How it stays streaming and linear
//!
//! A value is read as a sequence of *units*: one element of a list or set, one field/value pair
//! of a hash, one quicklist node, one stream listpack, and so on. A unit is parsed only when all
//! its bytes are buffered; if they are not, the parser remembers how many bytes it needs and
//! returns `Ok(None)` without re-reading anything until that many have been fed. Completed units
//! are dropped from the buffer at once, so the buffer holds at most one unit (plus one fed chunk),
//! and no byte is parsed twice except for the one unit that straddled a chunk boundary. A stream's
//! metadata after its listpacks is read the same way: a group's header, each entry of its PEL, each
//! consumer and each entry of a consumer's PEL are units of their own, so a stream with millions of
//! pending entries never has more than one of them buffered. (The decoded groups are kept until the
//! value ends, as a `RESTORE` or `XCLAIM`s need them: about 40 bytes per pending entry.)
//!
//! # Big values
//!
//! Decoded values are built in memory, so a value costs about its serialized size. When
//! [`ParserOptions::big_value_bytes`] is set, a collection whose serialized size passes that bound
//! is not built whole: the parser yields [`Item::EntryStart`], then [`Item::ValueChunk`]s of about
//! that many bytes each (list elements, set members, hash fields, sorted-set pairs, stream
//! entries; the last stream chunk carries the metadata and consumer groups), then
//! [`Item::EntryEnd`]. A replicator turns chunks into RPUSH/SADD/HSET/ZADD/XADD batches. Raw bytes
//! are not kept for such a value. A plain (not LZF-compressed) string longer than the bound comes
//! the same way as `Value::String` pieces (SET then APPEND), read without buffering it whole. LZF
//! strings (whose compressed and decompressed forms must both be in memory) and single-blob
//! encodings (ziplist, listpack, intset), which servers bound by their own limits, are always
//! yielded whole.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::crc64::crc64;
use crate::cursor::{corrupt, Bad, Cur, RStr, Stop, R};
use crate::error::{Error, KeyContext};
use crate::value::{module_name_from_id, ModuleValue, Value};
use crate::values;
use crate::visit::Visitor;

/// Size of the buffers input is collected in (a unit longer than this gets a buffer of its own).
const CHUNK: usize = 64 * 1024;

/// Highest Redis RDB version this crate reads.
pub const MAX_RDB_VERSION: u32 = 13;

/// Highest Valkey RDB version (`VALKEY080` files, DUMP footers of 80) this crate reads and writes: Valkey 9.0
/// and 9.1. Valkey numbers its own formats from 80 up and reserves 12 to 79 for Redis's.
pub const MAX_VALKEY_RDB_VERSION: u32 = 80;

/// True when an RDB version is one of Valkey's own (80 and up; 12 to 79 are Redis's).
pub fn is_valkey_version(version: u32) -> bool {
    version >= 80
}

/// True when a server that writes RDB `target` (its newest version: 9 for 6.2, 10 for 7.0, 12 for Redis 7.4 to
/// 8.2, 80 for Valkey 9) loads a payload of RDB `source`. Redis loads every version up to its own; Valkey 9
/// loads up to 11 and its own 80+, but refuses Redis's 12 to 79 (`rdb-version-check strict`, the default).
pub fn loads_version(target: u32, source: u32) -> bool {
    if source == 0 {
        return false;
    }
    if is_valkey_version(target) {
        source <= 11 || (80..=target).contains(&source)
    } else {
        source <= target
    }
}

/// RDB type bytes and opcodes (see Redis's rdb.h).
#[allow(missing_docs)]
pub mod types {
    pub const STRING: u8 = 0;
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const ZSET: u8 = 3;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const MODULE_PRE_GA: u8 = 6;
    pub const MODULE_2: u8 = 7;
    pub const HASH_ZIPMAP: u8 = 9;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    pub const SET_LISTPACK: u8 = 20;
    pub const STREAM_LISTPACKS_3: u8 = 21;
    /// Redis 7.4 RC hash with field TTLs; under `VALKEY` magic this is Valkey's `HASH_2`.
    pub const HASH_METADATA_PRE_GA: u8 = 22;
    /// Valkey 9's hash with field expiries (`RDB_TYPE_HASH_2`): the same byte as Redis's pre-GA type 22.
    pub const VALKEY_HASH_2: u8 = 22;
    pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
    pub const HASH_METADATA: u8 = 24;
    pub const HASH_LISTPACK_EX: u8 = 25;
    pub const STREAM_LISTPACKS_4: u8 = 26;

    /// Redis: key metadata. Under `VALKEY` magic the same byte is [`OP_SLOT_IMPORT`].
    pub const OP_KEY_META: u8 = 243;
    /// Valkey 9: a slot import in progress (job name, then slot ranges), skipped.
    pub const OP_SLOT_IMPORT: u8 = 243;
    pub const OP_SLOT_INFO: u8 = 244;
    pub const OP_FUNCTION2: u8 = 245;
    pub const OP_FUNCTION_PRE_GA: u8 = 246;
    pub const OP_MODULE_AUX: u8 = 247;
    pub const OP_IDLE: u8 = 248;
    pub const OP_FREQ: u8 = 249;
    pub const OP_AUX: u8 = 250;
    pub const OP_RESIZEDB: u8 = 251;
    pub const OP_EXPIRETIME_MS: u8 = 252;
    pub const OP_EXPIRETIME: u8 = 253;
    pub const OP_SELECTDB: u8 = 254;
    pub const OP_EOF: u8 = 255;
    /// Redis Enterprise only: RAM LRU (one length), skipped.
    pub const OP_ENT_RAM_LRU: u8 = 107;
}
use types::*;

/// Which servers wrote the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `REDIS` magic.
    Redis,
    /// `VALKEY` magic (Valkey 9+ format, version 80 and up).
    Valkey,
}

/// What the parser returns for each key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueMode {
    /// Decode every value into [`Value`].
    #[default]
    Decoded,
    /// Keep only the exact serialized bytes (type byte + payload) in [`Entry::raw`].
    Raw,
    /// Both the decoded value and the raw bytes.
    DecodedAndRaw,
}

/// Parser settings.
#[derive(Debug, Clone)]
pub struct ParserOptions {
    /// Decoded values, raw bytes, or both.
    pub mode: ValueMode,
    /// Verify the CRC-64 at the end of the file (a stored 0 means "disabled" and is accepted).
    pub verify_checksum: bool,
    /// Yield collections whose serialized size passes this many bytes in chunks (see module docs).
    pub big_value_bytes: Option<usize>,
    /// Largest single string accepted (a longer declared length is an error, not an allocation).
    pub max_string_len: usize,
}

impl Default for ParserOptions {
    fn default() -> Self {
        ParserOptions {
            mode: ValueMode::Decoded,
            verify_checksum: true,
            big_value_bytes: None,
            max_string_len: 4 << 30,
        }
    }
}

/// The outcome of the end-of-file checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Stored and computed checksums are equal.
    Verified(u64),
    /// The stored checksum is 0: the writer disabled checksums.
    Disabled,
    /// RDB versions before 5 carry no checksum.
    Absent,
    /// Verification was turned off; the stored value and what was computed.
    NotVerified {
        /// Stored in the file.
        stored: u64,
        /// Computed over the input.
        computed: u64,
    },
}

/// One key with its value.
///
/// The key and the strings of the value are slices of the parser's input buffers (about 64 KiB each, or one
/// big value's), not copies: holding one holds its buffer. Copy (`Bytes::copy_from_slice`) what is kept for long.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Database number.
    pub db: u64,
    /// The key.
    pub key: Bytes,
    /// Absolute expiry in Unix milliseconds.
    pub expire_at_ms: Option<i64>,
    /// LRU idle time in seconds (`IDLE` opcode).
    pub idle_secs: Option<u64>,
    /// LFU frequency (`FREQ` opcode).
    pub freq: Option<u8>,
    /// The RDB type byte of the value as stored.
    pub rdb_type: u8,
    /// Offset of the value's type byte in the input.
    pub offset: u64,
    /// Serialized size of the value (type byte + payload).
    pub serialized_len: u64,
    /// The decoded value (modes `Decoded` and `DecodedAndRaw`; `None` in `EntryStart`).
    pub value: Option<Value>,
    /// Type byte + payload exactly as in the input (modes `Raw` and `DecodedAndRaw`).
    pub raw: Option<Bytes>,
}

/// One thing found in an RDB stream, in file order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Item {
    /// The magic header.
    Header {
        /// RDB version (Valkey files: the number after `VALKEY`, e.g. 80).
        version: u32,
        /// Redis or Valkey.
        flavor: Flavor,
    },
    /// An AUX field (`redis-ver`, `ctime`, `repl-id`, `lua` ...).
    Aux {
        /// Field name.
        key: Bytes,
        /// Field value.
        value: Bytes,
    },
    /// `SELECTDB`.
    SelectDb(u64),
    /// `RESIZEDB` hint for the current database.
    ResizeDb {
        /// The database selected by the last `SELECTDB`.
        db: u64,
        /// Keys in the db.
        db_size: u64,
        /// Keys with expiry.
        expires_size: u64,
    },
    /// Cluster slot sizing hint.
    SlotInfo {
        /// Slot number.
        slot: u64,
        /// Keys in the slot.
        size: u64,
        /// Keys with expiry in the slot.
        expires_size: u64,
    },
    /// Module auxiliary data, kept raw.
    ModuleAux {
        /// Module ID.
        module_id: u64,
        /// Module type name from the ID.
        name: String,
        /// When it was saved (before/after keys).
        when: u64,
        /// Opcodes up to and including the module EOF.
        payload: Bytes,
    },
    /// A function library (`FUNCTION2`): its source code.
    Function {
        /// The library code as given to FUNCTION LOAD.
        code: Bytes,
    },
    /// A complete key.
    Entry(Entry),
    /// A big value follows in chunks; `value` and `raw` are `None` here, and `serialized_len`
    /// counts only the bytes read so far.
    EntryStart(Entry),
    /// Part of the value announced by the last `EntryStart` (same type, a slice of its elements).
    ValueChunk(Value),
    /// The chunked value is complete.
    EntryEnd,
    /// End of file, with the checksum outcome. Bytes after it are left in the parser.
    Eof {
        /// Checksum outcome.
        checksum: Checksum,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyMeta {
    expire: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
}

enum St {
    Header,
    Ops,
    Value(Box<values::ValueState>),
    Checksum { crc_end: usize },
    Done,
    Failed,
}

/// The push parser. See the module documentation.
///
/// ```
/// use ferry_rdb::{Parser, ParserOptions, Item};
/// let file = ferry_rdb::Writer::write_to_vec(11, |w| {
///     w.select_db(0)?;
///     w.write_entry(b"k", &ferry_rdb::Value::String("v".into()), None)
/// }).unwrap();
/// let mut p = Parser::new(ParserOptions::default());
/// let mut keys = 0;
/// for chunk in file.chunks(3) {
///     p.feed(chunk);
///     while let Some(item) = p.next_item().unwrap() {
///         if let Item::Entry(e) = item { assert_eq!(&e.key[..], b"k"); keys += 1; }
///     }
/// }
/// p.finish().unwrap();
/// assert_eq!(keys, 1);
/// ```
pub struct Parser {
    opts: ParserOptions,
    /// The input being parsed, frozen so that keys, values and elements are handed out as slices of it (no copy
    /// per string). A slice keeps its buffer alive; buffers are about [`CHUNK`] bytes, or one big unit.
    buf: Bytes,
    /// Input fed but not yet parseable (fewer than `need` bytes): collected here, frozen into `buf` once the
    /// unit the parser waits for is complete. When it holds bytes, `buf` holds no unconsumed ones.
    grow: BytesMut,
    /// Absolute offset of `buf[0]`.
    base: u64,
    /// Bytes of `buf` consumed.
    pos: usize,
    /// CRC over all bytes before `buf[crc_at]`.
    crc: u64,
    crc_at: usize,
    /// Do not try again until `buf.len() >= need`.
    need: usize,
    need_what: &'static str,
    state: St,
    version: u32,
    flavor: Flavor,
    db: u64,
    meta: KeyMeta,
    queue: VecDeque<Item>,
    keep: bool,
    /// A finished value state kept to save an allocation per key.
    spare: Option<Box<values::ValueState>>,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("offset", &(self.base + self.pos as u64))
            .field("buffered", &self.remaining().len())
            .field("version", &self.version)
            .finish()
    }
}

impl Parser {
    /// A parser expecting a whole RDB file (magic first).
    pub fn new(opts: ParserOptions) -> Self {
        let keep = opts.mode != ValueMode::Raw || opts.big_value_bytes.is_some();
        Parser {
            opts,
            buf: Bytes::new(),
            grow: BytesMut::new(),
            base: 0,
            pos: 0,
            crc: 0,
            crc_at: 0,
            need: 0,
            need_what: "the RDB header",
            state: St::Header,
            version: 0,
            flavor: Flavor::Redis,
            db: 0,
            meta: KeyMeta::default(),
            queue: VecDeque::new(),
            keep,
            spare: None,
        }
    }

    /// Appends input bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // What `buf` still holds goes in front of the new bytes: its unconsumed part while parsing (positions
        // move to the front), all of it after the EOF opcode (positions stay, for the checksum and remaining()).
        let keep_from = if self.parsing() {
            self.compact();
            self.pos
        } else {
            0
        };
        let want = self.grow.len() + (self.buf.len() - keep_from) + data.len();
        if self.grow.capacity() < want {
            // A new buffer: earlier ones stay alive only while slices of them do.
            let mut fresh = BytesMut::with_capacity(want.max(CHUNK).max(self.grow.len() * 2));
            fresh.extend_from_slice(&self.grow);
            self.grow = fresh;
        }
        self.grow.extend_from_slice(&self.buf[keep_from..]);
        self.grow.extend_from_slice(data);
        self.buf = Bytes::new();
        self.pos -= keep_from;
        let runnable = !matches!(self.state, St::Done | St::Failed);
        if runnable && self.grow.len() >= self.need {
            self.buf = self.grow.split().freeze();
            if self.buf.len() > 4 * CHUNK {
                // One big unit: small slices cut later must not keep its buffer alive.
                self.grow = BytesMut::new();
            }
        }
    }

    /// True while the parser reads the header, opcodes or a value (before the EOF opcode).
    fn parsing(&self) -> bool {
        matches!(self.state, St::Header | St::Ops | St::Value(_))
    }

    /// How many more bytes the parser needs before it can make progress (0 when it can run now).
    pub fn bytes_needed(&self) -> usize {
        self.need.saturating_sub(self.buf.len() + self.grow.len())
    }

    /// Total bytes consumed so far (the absolute offset of the next unread byte).
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The RDB version from the header (0 before it is read).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// True once `Item::Eof` was returned.
    pub fn is_done(&self) -> bool {
        matches!(self.state, St::Done)
    }

    /// Bytes fed but not consumed (after EOF: whatever followed the RDB, e.g. AOF commands).
    pub fn remaining(&self) -> &[u8] {
        if self.grow.is_empty() {
            &self.buf[self.pos..]
        } else {
            &self.grow[self.pos..]
        }
    }

    /// Call at end of input: an error if the file ended before `Item::Eof`.
    pub fn finish(&self) -> Result<(), Error> {
        match self.state {
            St::Done => Ok(()),
            St::Failed => Err(Error::Finished),
            _ => Err(Error::Truncated {
                offset: self.base + (self.buf.len() + self.grow.len()) as u64,
                what: self.need_what,
                key: self.key_context(),
            }),
        }
    }

    fn key_context(&self) -> KeyContext {
        match &self.state {
            St::Value(vs) => KeyContext::from_key(&vs.key),
            _ => KeyContext(None),
        }
    }

    /// Folds the consumed bytes of `buf` into the checksum and the base offset (`buf` itself is replaced by the
    /// caller, [`Parser::feed`]); `pos` stays, as the index the unconsumed bytes start at.
    fn compact(&mut self) {
        let pos = self.pos;
        if pos == 0 {
            return;
        }
        self.crc = crc64(self.crc, &self.buf[self.crc_at..pos]);
        self.base += pos as u64;
        self.crc_at = 0;
        self.need = self.need.saturating_sub(pos);
    }

    fn error(&mut self, stop: Stop) -> Error {
        let key = self.key_context();
        self.state = St::Failed;
        stop_error(stop, self.base, key, " at end of file")
    }

    /// Returns the next item, `Ok(None)` when more input is needed (or after EOF).
    pub fn next_item(&mut self) -> Result<Option<Item>, Error> {
        self.next_inner(None)
    }

    /// [`Parser::next_item`], giving each complete key's value to `visitor` (see [`crate::visit`]) instead of
    /// building it: the `Item::Entry` that follows has `value: None`. Values announced by `Item::EntryStart`
    /// (see [`ParserOptions::big_value_bytes`]) still come as `Item::ValueChunk`s, and in [`ValueMode::Raw`]
    /// nothing is decoded.
    pub fn next_item_visit(&mut self, visitor: &mut dyn Visitor) -> Result<Option<Item>, Error> {
        self.next_inner(Some(visitor))
    }

    fn next_inner(&mut self, mut visitor: Option<&mut dyn Visitor>) -> Result<Option<Item>, Error> {
        if let Some(it) = self.queue.pop_front() {
            return Ok(Some(it));
        }
        match self.state {
            St::Failed => return Err(Error::Finished),
            St::Done => return Ok(None),
            _ => {}
        }
        if self.buf.len() < self.need {
            return Ok(None);
        }
        loop {
            match self.step(&mut visitor) {
                Ok(Some(item)) => return Ok(Some(item)),
                Ok(None) => {
                    if let Some(it) = self.queue.pop_front() {
                        return Ok(Some(it));
                    }
                    if matches!(self.state, St::Done) {
                        return Ok(None);
                    }
                }
                Err(Stop::More { need, what }) => {
                    self.need = need;
                    self.need_what = what;
                    return Ok(None);
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    fn cur(&self) -> Cur<'_> {
        Cur::shared(&self.buf, self.pos, self.opts.max_string_len)
    }

    fn step(&mut self, visitor: &mut Option<&mut dyn Visitor>) -> R<Option<Item>> {
        match std::mem::replace(&mut self.state, St::Ops) {
            St::Header => {
                self.state = St::Header;
                let mut c = self.cur();
                let m = c.take(9, "the RDB header (magic and version)")?;
                let (version, flavor) = parse_magic(m).map_err(|kind| Stop::Bad { at: 0, kind })?;
                self.pos = c.p;
                self.version = version;
                self.flavor = flavor;
                self.state = St::Ops;
                Ok(Some(Item::Header { version, flavor }))
            }
            St::Ops => self.step_opcode(visitor),
            St::Value(mut vs) => {
                let r = self.step_value(&mut vs, visitor);
                if !vs.finished {
                    self.state = St::Value(vs);
                } else {
                    self.spare = Some(vs);
                }
                r
            }
            St::Checksum { crc_end } => {
                self.state = St::Checksum { crc_end };
                let mut c = self.cur();
                let stored = c.u64_le("the checksum after the EOF opcode")?;
                self.pos = c.p;
                let computed = if self.crc_at <= crc_end {
                    crc64(self.crc, &self.buf[self.crc_at..crc_end])
                } else {
                    self.crc
                };
                self.crc = computed;
                self.crc_at = crc_end;
                self.state = St::Done;
                let checksum = if stored == 0 {
                    Checksum::Disabled
                } else if !self.opts.verify_checksum {
                    Checksum::NotVerified { stored, computed }
                } else if stored == computed {
                    Checksum::Verified(stored)
                } else {
                    self.state = St::Failed;
                    return Err(Stop::Bad {
                        at: self.pos - 8,
                        kind: Bad::Checksum { stored, computed },
                    });
                };
                Ok(Some(Item::Eof { checksum }))
            }
            St::Done => {
                self.state = St::Done;
                Ok(None)
            }
            St::Failed => {
                self.state = St::Failed;
                Ok(None)
            }
        }
    }

    fn step_opcode(&mut self, visitor: &mut Option<&mut dyn Visitor>) -> R<Option<Item>> {
        if self.buf.get(self.pos) == Some(&STRING)
            && self.opts.mode == ValueMode::Decoded
            && self.opts.big_value_bytes.is_none()
        {
            if let Some(v) = visitor.as_deref_mut() {
                if let Some(item) = self.visit_string_key(v) {
                    return Ok(Some(item));
                }
            }
        }
        if self.buf.get(self.pos) == Some(&STRING) && self.opts.mode == ValueMode::Raw {
            if let Some(item) = self.raw_string_key() {
                return Ok(Some(item));
            }
        }
        let mut c = Cur::shared(&self.buf, self.pos, self.opts.max_string_len);
        let op = c.u8("an opcode or value type")?;
        let item = match op {
            OP_EOF => {
                self.pos = c.p;
                if self.version >= 5 || self.flavor == Flavor::Valkey {
                    self.state = St::Checksum { crc_end: self.pos };
                    return Ok(None);
                }
                self.state = St::Done;
                return Ok(Some(Item::Eof {
                    checksum: Checksum::Absent,
                }));
            }
            OP_SELECTDB => {
                let db = c.len("the database number after SELECTDB")?;
                self.db = db;
                Item::SelectDb(db)
            }
            OP_RESIZEDB => {
                let db_size = c.len("the db size of RESIZEDB")?;
                let expires_size = c.len("the expires size of RESIZEDB")?;
                Item::ResizeDb {
                    db: self.db,
                    db_size,
                    expires_size,
                }
            }
            OP_AUX => {
                let key = c.string("the name of an AUX field")?.to_bytes()?;
                let value = c.string("the value of an AUX field")?.to_bytes()?;
                Item::Aux { key, value }
            }
            OP_EXPIRETIME_MS => {
                let ms = c.u64_le("the expire time (ms) of a key")? as i64;
                self.meta.expire = Some(ms);
                self.pos = c.p;
                return Ok(None);
            }
            OP_EXPIRETIME => {
                let secs = i32::from_le_bytes(c.array("the expire time (s) of a key")?) as i64;
                self.meta.expire = Some(secs * 1000);
                self.pos = c.p;
                return Ok(None);
            }
            OP_IDLE => {
                self.meta.idle = Some(c.len("the LRU idle time of a key")?);
                self.pos = c.p;
                return Ok(None);
            }
            OP_FREQ => {
                self.meta.freq = Some(c.u8("the LFU frequency of a key")?);
                self.pos = c.p;
                return Ok(None);
            }
            OP_ENT_RAM_LRU => {
                c.len("the RAM LRU value (Redis Enterprise opcode 107)")?;
                self.pos = c.p;
                return Ok(None);
            }
            OP_SLOT_INFO => {
                let slot = c.len("the slot of SLOT_INFO")?;
                let size = c.len("the slot size of SLOT_INFO")?;
                let expires_size = c.len("the slot expires size of SLOT_INFO")?;
                Item::SlotInfo {
                    slot,
                    size,
                    expires_size,
                }
            }
            OP_FUNCTION2 => {
                let code = c.string("a function library (FUNCTION2)")?.to_bytes()?;
                Item::Function { code }
            }
            OP_FUNCTION_PRE_GA => {
                // Redis 7.0 RC1/RC2: library name, engine name, a description flag (and the description),
                // then the body without its `#!` line. Given back as the code `FUNCTION LOAD` takes since 7.0 GA
                // (the description has no place there and is dropped).
                let name = c
                    .string("the name of a pre-GA function library")?
                    .to_bytes()?;
                let engine = c
                    .string("the engine of a pre-GA function library")?
                    .to_bytes()?;
                let at = c.p;
                let has_desc = c.len("the description flag of a pre-GA function library")?;
                match has_desc {
                    0 => {}
                    1 => c.skip_string("the description of a pre-GA function library")?,
                    x => {
                        return corrupt(
                            at,
                            format!("pre-GA function description flag is {x}, expected 0 or 1"),
                        )
                    }
                }
                let body = c
                    .string("the code of a pre-GA function library")?
                    .to_bytes()?;
                Item::Function {
                    code: pre_ga_library_code(&engine, &name, &body),
                }
            }
            OP_MODULE_AUX => {
                let module_id = c.len("the module ID of module AUX data")?;
                let at = c.p;
                let when_op = c.len("the 'when' opcode of module AUX data")?;
                if when_op != 2 {
                    return corrupt(
                        at,
                        format!("module AUX 'when' opcode is {when_op}, expected 2"),
                    );
                }
                let when = c.len("the 'when' of module AUX data")?;
                let start = c.p;
                c.module_opcodes()?;
                let payload = Bytes::copy_from_slice(&c.b[start..c.p]);
                Item::ModuleAux {
                    module_id,
                    name: module_name_from_id(module_id),
                    when,
                    payload,
                }
            }
            OP_SLOT_IMPORT if self.flavor == Flavor::Valkey => {
                // An atomic slot migration in progress on a Valkey 9 cluster node: nothing to copy.
                c.skip_string("the job name of a slot import")?;
                let ranges = c.len("the range count of a slot import")?;
                for _ in 0..ranges {
                    c.len("the first slot of a slot import range")?;
                    c.len("the last slot of a slot import range")?;
                }
                self.pos = c.p;
                return Ok(None);
            }
            OP_KEY_META => {
                return Err(Stop::Bad {
                    at: self.pos,
                    kind: Bad::Unsupported("key metadata opcode 243".into()),
                })
            }
            t => {
                if !values::is_value_type(t) {
                    return Err(Stop::Bad {
                        at: self.pos,
                        kind: Bad::Corrupt(format!("unknown opcode or value type {t}")),
                    });
                }
                let key = c.string("a key")?.to_bytes()?;
                let meta = std::mem::take(&mut self.meta);
                let offset = self.base + self.pos as u64;
                let raw = matches!(self.opts.mode, ValueMode::Raw | ValueMode::DecodedAndRaw);
                self.pos = c.p;
                let flavor_valkey = self.flavor == Flavor::Valkey;
                let state = values::ValueState::new(
                    t,
                    key,
                    flavor_valkey,
                    raw,
                    self.keep,
                    offset,
                    meta.expire,
                    meta.idle,
                    meta.freq,
                    self.db,
                );
                // The box of the last key is reused: one allocation for the whole file, not one per key.
                let mut boxed = match self.spare.take() {
                    Some(mut b) => {
                        *b = state;
                        b
                    }
                    None => Box::new(state),
                };
                boxed.big = self.opts.big_value_bytes;
                self.state = St::Value(boxed);
                return Ok(None);
            }
        };
        self.pos = c.p;
        Ok(Some(item))
    }

    /// The whole of a string key in [`ValueMode::Raw`], when it is wholly buffered, well formed and under
    /// [`ParserOptions::big_value_bytes`]: its key and serialized value (the type byte first) copied straight from
    /// the input, the bytes the general way would gather, without the per-value state (the common case of a
    /// full sync). `None` leaves everything as it was, for the general way.
    fn raw_string_key(&mut self) -> Option<Item> {
        let (key, raw, end) = {
            // Just after the type byte.
            let mut c = Cur::shared(&self.buf, self.pos + 1, self.opts.max_string_len);
            let key = c.string("a key").ok()?.to_bytes().ok()?;
            let value_at = c.p;
            c.string("a string value").ok()?;
            let len = c.p - value_at;
            if self.opts.big_value_bytes.is_some_and(|limit| len >= limit) {
                return None;
            }
            let mut raw = Vec::with_capacity(1 + len);
            raw.push(STRING);
            raw.extend_from_slice(&self.buf[value_at..c.p]);
            (key, raw, c.p)
        };
        let len = raw.len() - 1;
        Some(self.string_entry(key, len, Some(Bytes::from(raw)), end))
    }

    /// The whole of a string key, when it is wholly buffered and well formed, its value given to `visitor`
    /// straight from the input (the common case of a file, without the per-value state). `None` leaves everything
    /// as it was: the general way then reads the key again (and reports what stopped this one, if anything).
    fn visit_string_key(&mut self, visitor: &mut dyn Visitor) -> Option<Item> {
        let (key, value_at, end) = {
            // Just after the type byte.
            let mut c = Cur::shared(&self.buf, self.pos + 1, self.opts.max_string_len);
            let key = c.string("a key").ok()?.to_bytes().ok()?;
            let value_at = c.p;
            match c.string("a string value").ok()? {
                RStr::Plain(s, _) => visitor.string(s),
                other => visitor.string(&other.to_bytes().ok()?),
            }
            (key, value_at, c.p)
        };
        Some(self.string_entry(key, end - value_at, None, end))
    }

    /// The entry of a string key read straight from the input (its type byte at `self.pos`, its value `value_len`
    /// serialized bytes, the next item at `end`), with the metadata read before it; moves past it.
    fn string_entry(
        &mut self,
        key: Bytes,
        value_len: usize,
        raw: Option<Bytes>,
        end: usize,
    ) -> Item {
        let meta = std::mem::take(&mut self.meta);
        let entry = Entry {
            db: self.db,
            key,
            expire_at_ms: meta.expire,
            idle_secs: meta.idle,
            freq: meta.freq,
            rdb_type: STRING,
            offset: self.base + self.pos as u64,
            serialized_len: 1 + value_len as u64,
            value: None,
            raw,
        };
        self.pos = end;
        Item::Entry(entry)
    }

    fn step_value(
        &mut self,
        vs: &mut values::ValueState,
        visitor: &mut Option<&mut dyn Visitor>,
    ) -> R<Option<Item>> {
        let chunk_at = self.opts.big_value_bytes;
        let bad = |m: String, at: usize| Stop::Bad {
            at,
            kind: Bad::Corrupt(m),
        };
        loop {
            let mut c = Cur::shared(&self.buf, self.pos, self.opts.max_string_len);
            let done = vs.unit(&mut c)?;
            let consumed = &self.buf[self.pos..c.p];
            vs.commit(consumed);
            self.pos = c.p;
            if done {
                if vs.started {
                    let last = vs.take_chunk(true).map_err(|m| bad(m, self.pos))?;
                    vs.finished = true;
                    self.state = St::Ops;
                    if let Some(v) = last {
                        self.queue.push_back(Item::ValueChunk(v));
                    }
                    self.queue.push_back(Item::EntryEnd);
                    return Ok(None);
                }
                let value = match visitor {
                    _ if self.opts.mode == ValueMode::Raw => None,
                    Some(v) => {
                        vs.visit(&mut **v).map_err(|m| bad(m, self.pos))?;
                        None
                    }
                    None => Some(vs.build().map_err(|m| bad(m, self.pos))?),
                };
                vs.finished = true;
                self.state = St::Ops;
                return Ok(Some(Item::Entry(vs.entry(value, true))));
            }
            if let Some(limit) = chunk_at {
                if vs.chunkable() && vs.pending_bytes >= limit {
                    if !vs.started {
                        vs.started = true;
                        vs.raw = None;
                        self.queue
                            .push_back(Item::EntryStart(vs.entry(None, false)));
                    }
                    let chunk = vs.take_chunk(false).map_err(|m| bad(m, self.pos))?;
                    if let Some(v) = chunk {
                        self.queue.push_back(Item::ValueChunk(v));
                    }
                    // Put the state back before handing out items.
                    return Ok(None);
                }
            }
        }
    }
}

/// The error for `stop`, whose buffer indexes are relative to absolute offset `base`;
/// `checksum_where` is the [`Error::Checksum`] location.
pub(crate) fn stop_error(
    stop: Stop,
    base: u64,
    key: KeyContext,
    checksum_where: &'static str,
) -> Error {
    match stop {
        Stop::More { need, what } => Error::Truncated {
            offset: base + need as u64,
            what,
            key,
        },
        Stop::Bad { at, kind } => {
            let offset = base + at as u64;
            match kind {
                Bad::Corrupt(message) => Error::Corrupt {
                    offset,
                    key,
                    message,
                },
                Bad::Unsupported(what) => Error::Unsupported { what, offset, key },
                Bad::Limit(message) => Error::LimitExceeded {
                    offset,
                    key,
                    message,
                },
                Bad::Checksum { stored, computed } => Error::Checksum {
                    where_: checksum_where,
                    stored,
                    computed,
                },
            }
        }
    }
}

fn parse_magic(m: &[u8]) -> Result<(u32, Flavor), Bad> {
    let digits = |d: &[u8]| -> Option<u32> {
        if d.iter().all(|c| c.is_ascii_digit()) {
            std::str::from_utf8(d).ok()?.parse().ok()
        } else {
            None
        }
    };
    if &m[..5] == b"REDIS" {
        let v = digits(&m[5..9]).ok_or_else(|| {
            Bad::Corrupt(format!(
                "bad RDB version digits {:?}",
                String::from_utf8_lossy(&m[5..9])
            ))
        })?;
        if v == 0 || v > MAX_RDB_VERSION {
            return Err(Bad::Unsupported(format!(
                "RDB version {v} (this reader supports 1 to {MAX_RDB_VERSION})"
            )));
        }
        Ok((v, Flavor::Redis))
    } else if &m[..6] == b"VALKEY" {
        let v = digits(&m[6..9]).ok_or_else(|| {
            Bad::Corrupt(format!(
                "bad Valkey RDB version {:?}",
                String::from_utf8_lossy(&m[6..9])
            ))
        })?;
        if !(80..=MAX_VALKEY_RDB_VERSION).contains(&v) {
            return Err(Bad::Unsupported(format!(
                "Valkey RDB version {v} (this reader supports 80, Valkey 9.0 and 9.1)"
            )));
        }
        Ok((v, Flavor::Valkey))
    } else {
        Err(Bad::Corrupt(format!(
            "not an RDB file: magic {:?}",
            String::from_utf8_lossy(m)
        )))
    }
}

/// True when a serialized value (type byte + payload, as in `Entry::raw`) is a list, set, sorted set or hash
/// with no element: what some servers' bugs left in RDB files (Redis's own `corrupt_empty_keys.rdb` holds nine).
/// Redis's loader skips such keys, and `RESTORE` refuses them ("Bad data format"), so a copy leaves them out
/// too. Reads only the counts in the headers: a quicklist whose every node is an empty container is empty, a
/// compressed container is not (LZF is only tried on strings longer than any empty container). Strings,
/// streams (an empty stream is a valid key) and module values are never empty; a value too short to tell is
/// not empty either (the target then judges it).
pub fn is_empty_collection(serialized: &[u8]) -> bool {
    let Some(&t) = serialized.first() else {
        return false;
    };
    let mut c = Cur::new(serialized, 1, usize::MAX);
    // The element count of an uncompressed container blob (ziplist, listpack, intset, zipmap): `None` when it
    // cannot tell (compressed, a count too big for the header, or a container that does not read whole). A
    // header that says 0 is checked against the elements (a zipmap's header is only a hint).
    fn blob_count(c: &mut Cur<'_>, t: u8) -> Option<u64> {
        use crate::encoding::{
            intset_for_each, listpack_for_each, ziplist_for_each, zipmap_for_each,
        };
        let RStr::Plain(b, _) = c.string("a container").ok()? else {
            return None;
        };
        let u16_at = |p: usize| {
            b.get(p..p + 2)
                .map(|x| u64::from(u16::from_le_bytes([x[0], x[1]])))
        };
        let header = match t {
            HASH_ZIPMAP => b.first().map(|&n| u64::from(n)).filter(|&n| n < 254),
            SET_INTSET => b
                .get(4..8)
                .map(|x| u64::from(u32::from_le_bytes([x[0], x[1], x[2], x[3]]))),
            LIST_ZIPLIST | ZSET_ZIPLIST | HASH_ZIPLIST => u16_at(8).filter(|&n| n != 0xffff),
            _ => u16_at(4).filter(|&n| n != 0xffff),
        }?;
        if header != 0 {
            return Some(header);
        }
        let counted = match t {
            HASH_ZIPMAP => zipmap_for_each(b, |_, _| {}),
            SET_INTSET => intset_for_each(b, |_| {}),
            LIST_ZIPLIST | ZSET_ZIPLIST | HASH_ZIPLIST => ziplist_for_each(b, |_| Ok(())),
            _ => listpack_for_each(b, |_| Ok(())),
        };
        counted.ok().map(|n| n as u64)
    }
    match t {
        // Type 22 opens with its count both as Redis 7.4's pre-GA hash with metadata and as Valkey's HASH_2.
        LIST | SET | ZSET | ZSET_2 | HASH | HASH_METADATA_PRE_GA => {
            matches!(c.len("a count"), Ok(0))
        }
        HASH_METADATA => c.u64_le("a minimum expiry").is_ok() && matches!(c.len("a count"), Ok(0)),
        HASH_LISTPACK_EX => {
            c.u64_le("a minimum expiry").is_ok() && blob_count(&mut c, HASH_LISTPACK) == Some(0)
        }
        HASH_ZIPMAP
        | LIST_ZIPLIST
        | SET_INTSET
        | ZSET_ZIPLIST
        | HASH_ZIPLIST
        | HASH_LISTPACK
        | ZSET_LISTPACK
        | SET_LISTPACK
        | HASH_LISTPACK_EX_PRE_GA => blob_count(&mut c, t) == Some(0),
        LIST_QUICKLIST | LIST_QUICKLIST_2 => {
            let Ok(nodes) = c.len("a node count") else {
                return false;
            };
            for _ in 0..nodes {
                let node_type = if t == LIST_QUICKLIST_2 {
                    match c.len("a container type") {
                        // A plain node holds one element.
                        Ok(2) => LIST_QUICKLIST_2,
                        _ => return false,
                    }
                } else {
                    LIST_ZIPLIST
                };
                if blob_count(&mut c, node_type) != Some(0) {
                    return false;
                }
            }
            true
        }
        _ => false,
    }
}

/// Decodes one serialized value (type byte + payload, as in a DUMP payload or `Entry::raw`).
/// `valkey` selects Valkey's meaning of type 22.
pub fn decode_value(serialized: &[u8], valkey: bool) -> Result<Value, Error> {
    let ctx = KeyContext(None);
    let Some(&t) = serialized.first() else {
        return Err(Error::Truncated {
            offset: 0,
            what: "the value type byte",
            key: ctx,
        });
    };
    if !values::is_value_type(t) {
        return Err(Error::Unsupported {
            what: format!("value type {t}"),
            offset: 0,
            key: ctx,
        });
    }
    let mut vs =
        values::ValueState::new(t, Bytes::new(), valkey, false, true, 0, None, None, None, 0);
    let mut c = Cur::new(serialized, 1, usize::MAX);
    loop {
        let done = vs
            .unit(&mut c)
            .map_err(|stop| stop_error(stop, 0, KeyContext(None), ""))?;
        if done {
            break;
        }
    }
    if c.p != serialized.len() {
        return Err(Error::Corrupt {
            offset: c.p as u64,
            key: ctx,
            message: format!("{} bytes left after the value", serialized.len() - c.p),
        });
    }
    vs.build().map_err(|message| Error::Corrupt {
        offset: 0,
        key: KeyContext(None),
        message,
    })
}

/// The `FUNCTION LOAD` code of a Redis 7.0 RC library: `#!<engine> name=<name>` then its body (what an RC
/// server's `FUNCTION LOAD <engine> <name> ... <body>` and its RDB opcode 246 hold apart).
pub fn pre_ga_library_code(engine: &[u8], name: &[u8], body: &[u8]) -> Bytes {
    let mut code = Vec::with_capacity(16 + engine.len() + name.len() + body.len());
    code.extend_from_slice(b"#!");
    code.extend(engine.iter().map(u8::to_ascii_lowercase));
    code.extend_from_slice(b" name=");
    code.extend_from_slice(name);
    code.push(b'\n');
    code.extend_from_slice(body);
    Bytes::from(code)
}

/// The module value helper used by [`values`].
pub(crate) fn module_value(module_id: u64, payload: Bytes) -> ModuleValue {
    ModuleValue {
        module_id,
        name: module_name_from_id(module_id),
        encver: (module_id & 1023) as u16,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty listpack (total bytes, count 0, terminator) as a plain RDB string.
    const EMPTY_LISTPACK: [u8; 8] = [7, 7, 0, 0, 0, 0, 0, 0xff];

    fn with(t: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![t];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn empty_collections_are_told_from_their_headers() {
        let empty = [
            with(SET_INTSET, &[&[8, 2, 0, 0, 0, 0, 0, 0, 0]]),
            with(SET_LISTPACK, &[&EMPTY_LISTPACK]),
            with(HASH_LISTPACK, &[&EMPTY_LISTPACK]),
            with(ZSET_LISTPACK, &[&EMPTY_LISTPACK]),
            with(HASH_ZIPMAP, &[&[2, 0, 0xff]]),
            with(LIST_QUICKLIST_2, &[&[0]]),
            with(
                LIST_QUICKLIST_2,
                &[&[2, 2], &EMPTY_LISTPACK, &[2], &EMPTY_LISTPACK],
            ),
            with(HASH_METADATA, &[&[0; 8], &[0]]),
            with(HASH_LISTPACK_EX, &[&[0; 8], &EMPTY_LISTPACK]),
            with(HASH_METADATA_PRE_GA, &[&[0]]),
            with(LIST, &[&[0]]),
        ];
        for v in &empty {
            assert!(is_empty_collection(v), "{v:?}");
        }
        assert!(is_empty_collection(&with(VALKEY_HASH_2, &[&[0]])));
        let one = [9, 9, 0, 0, 0, 1, 0, 0x01, 0x01, 0xff];
        let not_empty = [
            with(STRING, &[&[0]]),
            with(STREAM_LISTPACKS_3, &[&[0]]),
            with(SET_LISTPACK, &[&one[..]]),
            with(SET_INTSET, &[&[12, 2, 0, 0, 0, 1, 0, 0, 0, 7, 0]]),
            // A plain node holds one element, whatever follows.
            with(LIST_QUICKLIST_2, &[&[2, 1, 1, b'a'], &[2], &EMPTY_LISTPACK]),
            with(
                LIST_QUICKLIST_2,
                &[&[2, 2], &EMPTY_LISTPACK, &[2], &one[..]],
            ),
            // A compressed container, a count too big for the header, a value cut short.
            with(SET_LISTPACK, &[&[0xc3, 2, 7, 0]]),
            with(HASH_ZIPMAP, &[&[2, 254, 0xff]]),
            // A header that says 0 over elements (a zipmap's count is only a hint).
            with(HASH_ZIPMAP, &[&[7, 0, 1, b'a', 1, 0, b'b', 0xff]]),
            with(SET, &[]),
            vec![],
        ];
        for v in &not_empty {
            assert!(!is_empty_collection(v), "{v:?}");
        }
    }
}
