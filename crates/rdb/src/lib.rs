//! ferry-rdb: read and write Redis RDB data without a network.
//!
//! - [`Parser`]: a sans-I/O, streaming parser. Feed bytes in any chunking (a file, a PSYNC
//!   stream), pull [`Item`]s: header, AUX fields, `SELECTDB`, `RESIZEDB`, each key as an
//!   [`Entry`] (db, key, absolute expiry in ms, LRU idle / LFU freq, decoded [`Value`] and/or the
//!   exact serialized bytes), functions, module AUX data, slot info, and EOF with the checksum
//!   outcome. RDB versions 1 to 13 (Redis up to 8.x, hash field expiry types 22 to 25, the pre-GA
//!   function opcode 246 of 7.0 RC1/RC2, module values of type 6 and 7 that carry typed opcodes) and
//!   Valkey's `VALKEY080` files (Valkey 9.0/9.1: its own type 22, `HASH_2`, and the slot-import opcode)
//!   are read; big collections can be yielded in chunks (see [`parser`]).
//! - [`Reader`]: the same over any `std::io::Read`.
//! - [`decode_dump`] / [`encode_dump`] / [`build_dump`]: DUMP/RESTORE payloads.
//! - [`encode_value`]: serialize a value for a target RDB version using only encodings it loads
//!   (a 7.0 listpack value becomes ziplists for 6.2; hash field expiries become Redis's type 24 for
//!   RDB 12+ or Valkey's type 22 for 80), and [`Writer`] for whole files. [`loads_version`] says which
//!   payloads a target takes as they are; [`reencode_for`] converts the others.
//! - [`json`]: one-key-per-line JSON rendering.
//! - [`visit`]: values handed to a [`visit::Visitor`] as borrowed slices instead of built as [`Value`]s.
//!
//! ```
//! use ferry_rdb::{Item, Reader, Value, Writer};
//!
//! // Write a small RDB 9 file (Redis 6.2) ...
//! let file = Writer::write_to_vec(9, |w| {
//!     w.select_db(0)?;
//!     w.write_entry(b"list", &Value::List(vec!["a".into(), "b".into()]), None)?;
//!     w.write_entry(b"n", &Value::String("42".into()), Some(1_900_000_000_000))
//! })?;
//!
//! // ... and read it back.
//! let mut keys = Vec::new();
//! for item in Reader::new(&file[..], Default::default()) {
//!     if let Item::Entry(e) = item? {
//!         keys.push((e.key, e.expire_at_ms, e.value.unwrap()));
//!     }
//! }
//! assert_eq!(keys[0].2, Value::List(vec!["a".into(), "b".into()]));
//! assert_eq!(keys[1].1, Some(1_900_000_000_000));
//! # Ok::<(), ferry_rdb::Error>(())
//! ```

pub mod crc64;
mod cursor;
pub mod dump;
pub mod encode;
pub mod encoding;
mod error;
pub mod json;
pub mod lzf;
pub mod module;
pub mod parser;
pub mod reader;
pub mod value;
mod values;
pub mod visit;
pub mod writer;

pub use dump::{
    build_dump, decode_dump, encode_dump, function_payload_from_pre_ga, payload_version_for,
    reencode_for, split_dump, DumpParts,
};
pub use encode::encode_value;
pub use error::{Error, KeyContext, Result};
pub use module::{ModuleItem, VectorSet, VectorSetElement};
pub use parser::{
    decode_value, is_empty_collection, is_valkey_version, loads_version, pre_ga_library_code,
    Checksum, Entry, Flavor, Item, Parser, ParserOptions, ValueMode, MAX_RDB_VERSION,
    MAX_VALKEY_RDB_VERSION,
};
pub use reader::Reader;
pub use value::{
    Consumer, ConsumerGroup, HashField, ModuleValue, PendingEntry, Stream, StreamEntry, StreamId,
    StreamIdmp, Value,
};
pub use writer::Writer;

/// The Redis type name for an RDB type byte (`string`, `list`, `set`, `zset`, `hash`, `stream`,
/// `module`), or `unknown`.
pub fn type_name_of(rdb_type: u8) -> &'static str {
    use parser::types::*;
    match rdb_type {
        STRING => "string",
        LIST | LIST_ZIPLIST | LIST_QUICKLIST | LIST_QUICKLIST_2 => "list",
        SET | SET_INTSET | SET_LISTPACK => "set",
        ZSET | ZSET_2 | ZSET_ZIPLIST | ZSET_LISTPACK => "zset",
        HASH
        | HASH_ZIPMAP
        | HASH_ZIPLIST
        | HASH_LISTPACK
        | HASH_METADATA_PRE_GA
        | HASH_LISTPACK_EX_PRE_GA
        | HASH_METADATA
        | HASH_LISTPACK_EX => "hash",
        STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 | STREAM_LISTPACKS_4 => "stream",
        MODULE_2 | MODULE_PRE_GA => "module",
        _ => "unknown",
    }
}
