//! `rdb.entries(path)` and `rdb.stats(path)`: reading RDB files off the JS thread.
//!
//! Entries come in batches: one libuv work item reads up to `max` keys, then the batch becomes JS objects on
//! the JS thread. The package's `rdb.entries` turns the batches into an async iterator.

use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};

use ferry_rdb::{Entry, Item, Reader};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;

use crate::error::{self, Code};
use crate::js::Entries;

type FileReader = Reader<BufReader<File>>;

/// Opens an RDB file for reading; errors name the path.
fn open(path: &str) -> napi::Result<FileReader> {
    let file = File::open(path)
        .map_err(|e| error::coded(Code::Config, format!("cannot open RDB file {path}: {e}")))?;
    Ok(Reader::new(
        BufReader::with_capacity(256 * 1024, file),
        Default::default(),
    ))
}

/// An open RDB file, read in batches of entries.
#[napi]
pub struct RdbReader {
    /// `None` once the end was reached or `close()` was called.
    reader: Arc<Mutex<Option<FileReader>>>,
}

#[napi]
impl RdbReader {
    /// Opens `path`; nothing is read yet.
    #[napi(constructor)]
    pub fn new(path: String) -> napi::Result<RdbReader> {
        Ok(RdbReader {
            reader: Arc::new(Mutex::new(Some(open(&path)?))),
        })
    }

    /// Reads up to `max` entries (fewer at the end; an empty array means the file is done). Rejects with
    /// `FERRY_DATA` when the file is corrupt or truncated.
    #[napi(ts_return_type = "Promise<Array<RdbEntry>>")]
    pub fn next_batch(&self, max: u32) -> AsyncTask<NextBatch> {
        AsyncTask::new(NextBatch {
            reader: Arc::clone(&self.reader),
            max: max.max(1) as usize,
        })
    }

    /// Releases the file. Further batches are empty.
    #[napi]
    pub fn close(&self) {
        if let Ok(mut r) = self.reader.lock() {
            *r = None;
        }
    }
}

/// The work item behind `nextBatch`.
pub struct NextBatch {
    reader: Arc<Mutex<Option<FileReader>>>,
    max: usize,
}

impl Task for NextBatch {
    type Output = Vec<Entry>;
    type JsValue = Entries;

    fn compute(&mut self) -> napi::Result<Vec<Entry>> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| error::coded(Code::Data, "RDB reader poisoned by an earlier panic"))?;
        let mut out = Vec::with_capacity(self.max.min(4096));
        while out.len() < self.max {
            let Some(reader) = guard.as_mut() else { break };
            match reader.next_item() {
                Ok(Some(Item::Entry(e))) => out.push(e),
                Ok(Some(_)) => {}
                Ok(None) => *guard = None,
                Err(e) => {
                    *guard = None;
                    return Err(error::rdb(e));
                }
            }
        }
        Ok(out)
    }

    fn resolve(&mut self, _env: Env, output: Vec<Entry>) -> napi::Result<Entries> {
        Ok(Entries(output))
    }
}

/// What `rdb.stats(path)` reports.
#[napi(object)]
pub struct RdbStats {
    /// RDB format version.
    pub version: u32,
    /// `redis` or `valkey`.
    pub flavor: String,
    /// Keys in the file.
    pub keys: f64,
    /// Keys with an expiry.
    pub expires: f64,
    /// Keys per type name (`string`, `list`, `set`, `zset`, `hash`, `stream`, `module`).
    pub types: std::collections::HashMap<String, f64>,
    /// Keys per database (`"0"`, `"3"`, ...).
    pub dbs: std::collections::HashMap<String, f64>,
    /// Serialized bytes of all values.
    pub value_bytes: f64,
    /// AUX fields (`redis-ver`, `ctime`, ...), as text.
    pub aux: std::collections::HashMap<String, String>,
    /// `verified`, `disabled` (stored as 0), `absent` (RDB < 5) or `not_verified`.
    pub checksum: String,
}

/// The work item behind `rdb.stats`.
pub struct Stats {
    path: String,
}

impl Task for Stats {
    type Output = RdbStats;
    type JsValue = RdbStats;

    fn compute(&mut self) -> napi::Result<RdbStats> {
        let mut reader = open(&self.path)?;
        let mut s = RdbStats {
            version: 0,
            flavor: "redis".into(),
            keys: 0.0,
            expires: 0.0,
            types: Default::default(),
            dbs: Default::default(),
            value_bytes: 0.0,
            aux: Default::default(),
            checksum: "absent".into(),
        };
        while let Some(item) = reader.next_item().map_err(error::rdb)? {
            match item {
                Item::Header { version, flavor } => {
                    s.version = version;
                    if flavor == ferry_rdb::Flavor::Valkey {
                        s.flavor = "valkey".into();
                    }
                }
                Item::Aux { key, value } => {
                    s.aux.insert(
                        String::from_utf8_lossy(&key).into_owned(),
                        String::from_utf8_lossy(&value).into_owned(),
                    );
                }
                Item::Entry(e) => {
                    s.keys += 1.0;
                    if e.expire_at_ms.is_some() {
                        s.expires += 1.0;
                    }
                    s.value_bytes += e.serialized_len as f64;
                    *s.types
                        .entry(ferry_rdb::type_name_of(e.rdb_type).into())
                        .or_default() += 1.0;
                    *s.dbs.entry(e.db.to_string()).or_default() += 1.0;
                }
                Item::Eof { checksum } => {
                    s.checksum = match checksum {
                        ferry_rdb::Checksum::Verified(_) => "verified",
                        ferry_rdb::Checksum::Disabled => "disabled",
                        ferry_rdb::Checksum::Absent => "absent",
                        ferry_rdb::Checksum::NotVerified { .. } => "not_verified",
                    }
                    .into();
                }
                _ => {}
            }
        }
        Ok(s)
    }

    fn resolve(&mut self, _env: Env, output: RdbStats) -> napi::Result<RdbStats> {
        Ok(output)
    }
}

/// Counts what an RDB file holds (keys, types, dbs, expiries, AUX fields) without keeping any value.
#[napi(js_name = "rdbStats")]
pub fn rdb_stats(path: String) -> AsyncTask<Stats> {
    AsyncTask::new(Stats { path })
}
