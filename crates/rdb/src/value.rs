//! The value model: what a key holds, independent of how it was encoded on disk.

use bytes::Bytes;

/// A decoded value. Collections keep the order they had in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (int-encoded and LZF strings are returned as their bytes).
    String(Bytes),
    /// A list, head first.
    List(Vec<Bytes>),
    /// A set's members.
    Set(Vec<Bytes>),
    /// A sorted set's `(member, score)` pairs.
    SortedSet(Vec<(Bytes, f64)>),
    /// A hash's fields, each with an optional absolute field expiry (Redis 7.4 / Valkey 9).
    Hash(Vec<HashField>),
    /// A stream with its consumer groups.
    Stream(Box<Stream>),
    /// A module value, kept raw (boxed: rare and larger than the other variants).
    Module(Box<ModuleValue>),
}

impl Value {
    /// The Redis type name (`string`, `list`, `set`, `zset`, `hash`, `stream`, `module`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::SortedSet(_) => "zset",
            Value::Hash(_) => "hash",
            Value::Stream(_) => "stream",
            Value::Module(_) => "module",
        }
    }

    /// Number of elements (1 for strings and modules, entries for streams).
    pub fn len(&self) -> usize {
        match self {
            Value::String(_) | Value::Module(_) => 1,
            Value::List(v) | Value::Set(v) => v.len(),
            Value::SortedSet(v) => v.len(),
            Value::Hash(v) => v.len(),
            Value::Stream(s) => s.entries.len(),
        }
    }

    /// True for an empty collection.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::String(_) | Value::Module(_) => false,
            Value::Stream(s) => s.entries.is_empty() && s.groups.is_empty(),
            _ => self.len() == 0,
        }
    }

    /// True for a hash with at least one field expiry (Redis 7.4+ / Valkey 9 only).
    pub fn has_field_expiry(&self) -> bool {
        matches!(self, Value::Hash(fields) if fields.iter().any(|f| f.expire_at_ms.is_some()))
    }

    /// Removes the hash fields whose expiry is at or before `now_ms` (Unix milliseconds): such a field is gone for
    /// every command, though a server reclaims it only when it next touches it or in its expiry cycle, so a file
    /// or a `DUMP` may still hold it. Returns how many were removed; other types are left as they are.
    pub fn drop_expired_fields(&mut self, now_ms: i64) -> usize {
        let Value::Hash(fields) = self else {
            return 0;
        };
        let before = fields.len();
        fields.retain(|f| f.expire_at_ms.is_none_or(|t| t as i64 > now_ms));
        before - fields.len()
    }

    /// Removes every hash field expiry (the fields and values stay); returns how many fields had one.
    /// Other types are left as they are.
    pub fn drop_field_expiries(&mut self) -> usize {
        let Value::Hash(fields) = self else {
            return 0;
        };
        let mut n = 0;
        for f in fields {
            if f.expire_at_ms.take().is_some() {
                n += 1;
            }
        }
        n
    }

    /// Approximate number of payload bytes (strings, members, fields and values).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::List(v) | Value::Set(v) => v.iter().map(|b| b.len()).sum(),
            Value::SortedSet(v) => v.iter().map(|(m, _)| m.len() + 8).sum(),
            Value::Hash(v) => v.iter().map(|f| f.field.len() + f.value.len()).sum(),
            Value::Stream(s) => s
                .entries
                .iter()
                .map(|e| {
                    16 + e
                        .fields
                        .iter()
                        .map(|(f, v)| f.len() + v.len())
                        .sum::<usize>()
                })
                .sum(),
            Value::Module(m) => m.payload.len(),
        }
    }
}

/// One hash field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashField {
    /// Field name.
    pub field: Bytes,
    /// Field value.
    pub value: Bytes,
    /// Absolute expiry in Unix milliseconds, `None` when the field does not expire.
    pub expire_at_ms: Option<u64>,
}

impl HashField {
    /// A field without expiry.
    pub fn new(field: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        HashField {
            field: field.into(),
            value: value.into(),
            expire_at_ms: None,
        }
    }
}

/// A stream entry ID `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// Builds an ID.
    pub fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }
    /// Reads the 16-byte big-endian form used for node keys and PEL entries.
    pub fn from_be_bytes(b: &[u8; 16]) -> Self {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&b[..8]);
        seq.copy_from_slice(&b[8..]);
        StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        }
    }
    /// The 16-byte big-endian form.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One stream entry (deleted entries are not returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Entry ID.
    pub id: StreamId,
    /// Field/value pairs in order.
    pub fields: Vec<(Bytes, Bytes)>,
}

/// A stream: entries, metadata and consumer groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stream {
    /// Live entries in ID order.
    pub entries: Vec<StreamEntry>,
    /// Number of live entries as recorded in the file.
    pub length: u64,
    /// Last generated ID.
    pub last_id: StreamId,
    /// First live ID (computed for v1 streams).
    pub first_id: StreamId,
    /// Largest deleted ID (0-0 for v1 streams).
    pub max_deleted_id: StreamId,
    /// Entries ever added (`length` for v1 streams).
    pub entries_added: u64,
    /// Consumer groups.
    pub groups: Vec<ConsumerGroup>,
    /// IDMP (idempotent producer) state of RDB 13 streams.
    pub idmp: Option<StreamIdmp>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroup {
    /// Group name.
    pub name: Bytes,
    /// Last delivered ID.
    pub last_id: StreamId,
    /// Entries read counter (RDB 10+; `None` when the file predates it), as the file stores it: Redis keeps it
    /// as a signed number and writes -1 (here `u64::MAX`) when it does not know it, as for a group created
    /// without `ENTRIESREAD` behind the stream's first entry. [`ConsumerGroup::entries_read_known`] reads it.
    pub entries_read: Option<u64>,
    /// Group pending entries list.
    pub pending: Vec<PendingEntry>,
    /// Consumers.
    pub consumers: Vec<Consumer>,
}

impl ConsumerGroup {
    /// The entries read counter when the server knew it: `None` when the file predates the counter or holds
    /// Redis's "unknown" (-1, or any value beyond a signed 64-bit number).
    pub fn entries_read_known(&self) -> Option<u64> {
        self.entries_read.filter(|&n| i64::try_from(n).is_ok())
    }
}

/// An entry of a group's PEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingEntry {
    /// Entry ID.
    pub id: StreamId,
    /// Last delivery time, Unix ms.
    pub delivery_time_ms: u64,
    /// Delivery count.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Consumer name.
    pub name: Bytes,
    /// Seen time, Unix ms.
    pub seen_time_ms: u64,
    /// Active time, Unix ms (RDB 11+ streams; `None` before).
    pub active_time_ms: Option<u64>,
    /// IDs this consumer owns in the group PEL.
    pub pending: Vec<StreamId>,
}

/// IDMP state stored by RDB 13 (`STREAM_LISTPACKS_4`) streams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamIdmp {
    /// IDMP duration (seconds).
    pub duration: u64,
    /// Maximum tracked entries.
    pub max_entries: u64,
    /// Producers with their recorded `(iid, stream id)` entries.
    pub producers: Vec<(Bytes, Vec<(Bytes, StreamId)>)>,
    /// Total IIDs added.
    pub iids_added: u64,
    /// Duplicate IIDs seen.
    pub iids_duplicates: u64,
}

/// A module value (`MODULE_2`), whose payload is kept as serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleValue {
    /// The 64-bit module type ID (name and encoding version).
    pub module_id: u64,
    /// The 9-character module type name decoded from the ID (e.g. `ReJSON-RL`).
    pub name: String,
    /// The module's encoding version (low 10 bits of the ID).
    pub encver: u16,
    /// The serialized opcodes after the ID, up to and including the module EOF opcode.
    pub payload: Bytes,
}

const MODULE_CHARSET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 64-bit module ID of a 9-character module type name and an encoding version (the inverse of
/// [`module_name_from_id`]); `None` for a name that is not 9 characters of `A-Z a-z 0-9 - _`, or a version over
/// 1023.
pub fn module_id_from_name(name: &str, encver: u16) -> Option<u64> {
    if name.len() != 9 || encver > 1023 {
        return None;
    }
    let mut id = 0u64;
    for b in name.bytes() {
        id = id << 6 | MODULE_CHARSET.iter().position(|&c| c == b)? as u64;
    }
    Some(id << 10 | u64::from(encver))
}

/// Decodes the 9-character module type name from a 64-bit module ID.
pub fn module_name_from_id(id: u64) -> String {
    let mut v = id >> 10;
    let mut name = [0u8; 9];
    for j in (0..9).rev() {
        name[j] = MODULE_CHARSET[(v & 63) as usize];
        v >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_entries_read_counter_reads_as_none() {
        let group = |entries_read| ConsumerGroup {
            name: Bytes::from_static(b"g"),
            last_id: StreamId::default(),
            entries_read,
            pending: Vec::new(),
            consumers: Vec::new(),
        };
        assert_eq!(group(Some(7)).entries_read_known(), Some(7));
        assert_eq!(group(None).entries_read_known(), None);
        // Redis writes its -1 ("unknown") as a 64-bit length.
        assert_eq!(group(Some(u64::MAX)).entries_read_known(), None);
        assert_eq!(group(Some(1 << 63)).entries_read_known(), None);
    }
}
