//! Writing a whole RDB file for a chosen version.

use std::io::Write;

use crate::crc64::crc64;
use crate::encode::{cannot, encode_value, put_len, put_string};
use crate::error::Error;
use crate::parser::types::*;
use crate::parser::MAX_RDB_VERSION;
use crate::value::Value;

/// Streams an RDB file to any `Write`, computing the CRC-64 on the way.
///
/// ```
/// use ferry_rdb::{Writer, Value};
/// let mut w = Writer::new(Vec::new(), 9).unwrap();
/// w.aux(b"redis-ver", b"6.2.0").unwrap();
/// w.select_db(0).unwrap();
/// w.write_entry(b"greeting", &Value::String("hi".into()), Some(4_102_444_800_000)).unwrap();
/// let bytes = w.finish().unwrap();
/// assert!(bytes.starts_with(b"REDIS0009"));
/// ```
#[derive(Debug)]
pub struct Writer<W: Write> {
    w: W,
    version: u32,
    crc: u64,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Starts a file of RDB `version` (1 to 13, or 80 for a Valkey 9 `VALKEY080` file) by writing the
    /// magic header.
    pub fn new(w: W, version: u32) -> Result<Self, Error> {
        let valkey = crate::parser::is_valkey_version(version);
        if version == 0
            || (version > MAX_RDB_VERSION && !valkey)
            || version > crate::parser::MAX_VALKEY_RDB_VERSION
        {
            return Err(cannot("an RDB file", version));
        }
        let mut me = Writer {
            w,
            version,
            crc: 0,
            scratch: Vec::with_capacity(4096),
        };
        let magic = if valkey {
            format!("VALKEY{version:03}")
        } else {
            format!("REDIS{version:04}")
        };
        me.scratch.extend_from_slice(magic.as_bytes());
        me.flush_scratch()?;
        Ok(me)
    }

    /// The target RDB version.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn flush_scratch(&mut self) -> Result<(), Error> {
        self.crc = crc64(self.crc, &self.scratch);
        self.w.write_all(&self.scratch)?;
        self.scratch.clear();
        Ok(())
    }

    /// Writes an AUX field (version 7+; ignored silently for older versions, which lack AUX).
    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        if self.version < 7 {
            return Ok(());
        }
        self.scratch.push(OP_AUX);
        put_string(&mut self.scratch, key);
        put_string(&mut self.scratch, value);
        self.flush_scratch()
    }

    /// Writes `SELECTDB`.
    pub fn select_db(&mut self, db: u64) -> Result<(), Error> {
        self.scratch.push(OP_SELECTDB);
        put_len(&mut self.scratch, db);
        self.flush_scratch()
    }

    /// Writes a `RESIZEDB` hint (version 7+).
    pub fn resize_db(&mut self, db_size: u64, expires_size: u64) -> Result<(), Error> {
        if self.version < 7 {
            return Ok(());
        }
        self.scratch.push(OP_RESIZEDB);
        put_len(&mut self.scratch, db_size);
        put_len(&mut self.scratch, expires_size);
        self.flush_scratch()
    }

    /// Writes a function library (`FUNCTION2`, version 10+).
    pub fn function(&mut self, code: &[u8]) -> Result<(), Error> {
        if self.version < 10 {
            return Err(cannot("a function library", self.version));
        }
        self.scratch.push(OP_FUNCTION2);
        put_string(&mut self.scratch, code);
        self.flush_scratch()
    }

    fn expire(&mut self, expire_at_ms: Option<i64>) -> Result<(), Error> {
        if let Some(ms) = expire_at_ms {
            if self.version >= 3 {
                self.scratch.push(OP_EXPIRETIME_MS);
                self.scratch.extend_from_slice(&ms.to_le_bytes());
            } else {
                let secs = i32::try_from(ms / 1000).map_err(|_| {
                    cannot(
                        format!("expiry {ms} ms (RDB 1-2 store 32-bit seconds)"),
                        self.version,
                    )
                })?;
                self.scratch.push(OP_EXPIRETIME);
                self.scratch.extend_from_slice(&secs.to_le_bytes());
            }
        }
        Ok(())
    }

    /// Encodes and writes one key.
    pub fn write_entry(
        &mut self,
        key: &[u8],
        value: &Value,
        expire_at_ms: Option<i64>,
    ) -> Result<(), Error> {
        let ser = encode_value(value, self.version)?;
        self.write_raw_entry(key, &ser, expire_at_ms)
    }

    /// Writes one key whose value is already serialized (type byte + payload) for this version.
    pub fn write_raw_entry(
        &mut self,
        key: &[u8],
        serialized: &[u8],
        expire_at_ms: Option<i64>,
    ) -> Result<(), Error> {
        let Some((&t, payload)) = serialized.split_first() else {
            return Err(cannot("an empty serialized value", self.version));
        };
        self.expire(expire_at_ms)?;
        self.scratch.push(t);
        put_string(&mut self.scratch, key);
        self.flush_scratch()?;
        self.crc = crc64(self.crc, payload);
        self.w.write_all(payload)?;
        Ok(())
    }

    /// Writes EOF and the checksum (version 5+) and returns the inner writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.scratch.push(OP_EOF);
        self.flush_scratch()?;
        if self.version >= 5 {
            let crc = self.crc;
            self.w.write_all(&crc.to_le_bytes())?;
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

impl Writer<Vec<u8>> {
    /// Builds a whole file in memory: `f` writes the content, EOF and checksum are added.
    pub fn write_to_vec(
        version: u32,
        f: impl FnOnce(&mut Writer<Vec<u8>>) -> Result<(), Error>,
    ) -> Result<Vec<u8>, Error> {
        let mut w = Writer::new(Vec::new(), version)?;
        f(&mut w)?;
        w.finish()
    }
}
