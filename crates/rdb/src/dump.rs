//! DUMP / RESTORE payloads: `[type][payload][2-byte LE RDB version][8-byte LE CRC-64]`.

use crate::crc64::crc64;
use crate::encode::encode_value;
use crate::error::Error;
use crate::parser::{decode_value, is_valkey_version, loads_version, MAX_RDB_VERSION};
use crate::value::Value;

/// A DUMP payload split into its parts (checksum verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpParts<'a> {
    /// Type byte + serialized value.
    pub serialized: &'a [u8],
    /// RDB version from the footer.
    pub rdb_version: u16,
}

/// Splits a DUMP payload and verifies its CRC-64 (exact match, as Redis requires).
pub fn split_dump(payload: &[u8]) -> Result<DumpParts<'_>, Error> {
    if payload.len() < 11 {
        return Err(Error::Truncated {
            offset: payload.len() as u64,
            what: "a DUMP payload (type, value, version and checksum need at least 11 bytes)",
            key: Default::default(),
        });
    }
    let body = payload.len() - 10;
    let mut c = [0u8; 8];
    c.copy_from_slice(&payload[payload.len() - 8..]);
    let stored = u64::from_le_bytes(c);
    let computed = crc64(0, &payload[..payload.len() - 8]);
    if stored != computed {
        return Err(Error::Checksum {
            where_: " in DUMP payload",
            stored,
            computed,
        });
    }
    let rdb_version = u16::from_le_bytes([payload[body], payload[body + 1]]);
    Ok(DumpParts {
        serialized: &payload[..body],
        rdb_version,
    })
}

/// Decodes a DUMP payload: checks CRC and version, returns the value and the payload's RDB version.
///
/// ```
/// let payload = ferry_rdb::encode_dump(&ferry_rdb::Value::String("hello".into()), 9).unwrap();
/// let (value, version) = ferry_rdb::decode_dump(&payload).unwrap();
/// assert_eq!(version, 9);
/// assert_eq!(value, ferry_rdb::Value::String("hello".into()));
/// ```
pub fn decode_dump(payload: &[u8]) -> Result<(Value, u16), Error> {
    let parts = split_dump(payload)?;
    let v = parts.rdb_version as u32;
    // Valkey 9 writes DUMP payloads with its own version numbers (80 and up).
    let valkey = is_valkey_version(v);
    if (v > MAX_RDB_VERSION && !valkey) || v > crate::parser::MAX_VALKEY_RDB_VERSION {
        return Err(Error::UnsupportedVersion {
            version: v,
            max: MAX_RDB_VERSION,
        });
    }
    Ok((decode_value(parts.serialized, valkey)?, parts.rdb_version))
}

/// Builds a DUMP payload from serialized value bytes (type byte + payload) and an RDB version.
pub fn build_dump(serialized: &[u8], rdb_version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(serialized.len() + 10);
    out.extend_from_slice(serialized);
    out.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes `value` for RDB `version` and wraps it as a DUMP payload that a server of that
/// version accepts with RESTORE.
pub fn encode_dump(value: &Value, version: u32) -> Result<Vec<u8>, Error> {
    let ser = encode_value(value, version)?;
    Ok(build_dump(&ser, version as u16))
}

/// Re-encodes a serialized value (type byte + payload, e.g. [`crate::Entry::raw`]) read from a
/// source of RDB `source_version` as a DUMP payload for a target of RDB `target_version` (its newest:
/// 80 for Valkey 9). When the target loads the source's version ([`loads_version`]) the bytes pass
/// through unchanged; otherwise the value is decoded (Valkey's meaning of type 22 for a source of 80+)
/// and encoded again with encodings the target loads (7.0 listpacks become 6.2 ziplists, Redis 8's
/// field-expiry hashes become Valkey's `HASH_2` and back, and a Redis 12 payload for Valkey 9 is
/// written as 11, or 80 when it holds field expiries).
pub fn reencode_for(
    serialized: &[u8],
    source_version: u32,
    target_version: u32,
) -> Result<Vec<u8>, Error> {
    let known = source_version <= MAX_RDB_VERSION
        || (is_valkey_version(source_version)
            && source_version <= crate::parser::MAX_VALKEY_RDB_VERSION);
    if known && loads_version(target_version, source_version) {
        return Ok(build_dump(serialized, source_version as u16));
    }
    let value = decode_value(serialized, is_valkey_version(source_version))?;
    encode_dump(&value, payload_version_for(&value, target_version))
}

/// The footer version to write a value with for a target of RDB `target_version`: Valkey 9 gets RDB 11 for
/// everything it held before (so older Valkey and Redis 7.2 load it too) and 80 only for field expiries.
pub fn payload_version_for(value: &Value, target_version: u32) -> u32 {
    if is_valkey_version(target_version) && !value.has_field_expiry() {
        11
    } else {
        target_version
    }
}

/// A `FUNCTION DUMP` payload of Redis 7.0 RC1/RC2 (libraries under the pre-GA opcode 246, which every GA server
/// refuses: `Pre-GA function format not supported`) rewritten in the GA format (opcode 245, each library's
/// `FUNCTION LOAD` code, see [`crate::Item::Function`]) with RDB version 10, for `FUNCTION RESTORE` on a 7.0 or
/// later server. `Ok(None)` when the payload is not pre-GA; an error when it is corrupt. A library's
/// description has no place in the GA format and is dropped.
pub fn function_payload_from_pre_ga(payload: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    use crate::parser::types::{OP_EOF, OP_FUNCTION2, OP_FUNCTION_PRE_GA};
    use crate::parser::{Item, ParserOptions};
    if payload.first() != Some(&OP_FUNCTION_PRE_GA) {
        return Ok(None);
    }
    let parts = split_dump(payload)?;
    // The libraries are what an RDB file holds under the same opcode: read as one (a stored checksum of 0 is
    // not checked).
    let mut rdb = Vec::with_capacity(parts.serialized.len() + 18);
    rdb.extend_from_slice(b"REDIS0010");
    rdb.extend_from_slice(parts.serialized);
    rdb.push(OP_EOF);
    rdb.extend_from_slice(&[0; 8]);
    let mut out = Vec::with_capacity(payload.len());
    for item in crate::Reader::new(&rdb[..], ParserOptions::default()) {
        match item? {
            Item::Function { code } => {
                out.push(OP_FUNCTION2);
                crate::encode::put_string(&mut out, &code);
            }
            Item::Header { .. } | Item::Eof { .. } => {}
            _ => {
                return Err(Error::Corrupt {
                    offset: 0,
                    key: Default::default(),
                    message:
                        "a FUNCTION DUMP payload holds something other than function libraries"
                            .into(),
                })
            }
        }
    }
    Ok(Some(build_dump(&out, 10)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{put_len, put_string};
    use crate::parser::{Item, ParserOptions};

    #[test]
    fn a_pre_ga_function_payload_becomes_a_ga_one_with_the_same_libraries() {
        let mut libs = Vec::new();
        for (name, desc) in [("one", None), ("two", Some("described"))] {
            libs.push(246u8);
            put_string(&mut libs, name.as_bytes());
            put_string(&mut libs, b"LUA");
            put_len(&mut libs, u64::from(desc.is_some()));
            if let Some(d) = desc {
                put_string(&mut libs, d.as_bytes());
            }
            put_string(&mut libs, b"return 1");
        }
        let ga = function_payload_from_pre_ga(&build_dump(&libs, 10))
            .unwrap()
            .unwrap();
        let parts = split_dump(&ga).unwrap();
        assert_eq!(parts.rdb_version, 10);
        let mut rdb = b"REDIS0010".to_vec();
        rdb.extend_from_slice(parts.serialized);
        rdb.extend_from_slice(&[255, 0, 0, 0, 0, 0, 0, 0, 0]);
        let codes: Vec<bytes::Bytes> = crate::Reader::new(&rdb[..], ParserOptions::default())
            .filter_map(|i| match i.unwrap() {
                Item::Function { code } => Some(code),
                _ => None,
            })
            .collect();
        assert_eq!(
            codes,
            ["#!lua name=one\nreturn 1", "#!lua name=two\nreturn 1"]
        );
        assert_eq!(ga[0], 245, "opcode FUNCTION2");

        // A GA payload is left alone; a corrupt pre-GA one is an error.
        assert_eq!(function_payload_from_pre_ga(&ga).unwrap(), None);
        let mut cut = libs.clone();
        cut.truncate(5);
        assert!(function_payload_from_pre_ga(&build_dump(&cut, 10)).is_err());
    }
}
