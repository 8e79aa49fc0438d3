//! `rdb.entries(path)` and `rdb.stats(path)`: reading RDB files off the JS thread.
//!
//! Entries come in batches: one libuv work item reads up to `max` keys, then the batch becomes JS objects on
//! the JS thread. The package's `rdb.entries` turns the batches into an async iterator.

use std::sync::{Arc, Mutex};

use ferry::rdb::{Entries as FileEntries, Entry};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;

use crate::error::{self, Code};
use crate::js::{Entries, Packed};

/// An open RDB file, read in batches of entries.
#[napi]
pub struct RdbReader {
    /// `None` once the end was reached or `close()` was called.
    reader: Arc<Mutex<Option<FileEntries>>>,
}

#[napi]
impl RdbReader {
    /// Opens `path`; nothing is read yet.
    #[napi(constructor)]
    pub fn new(path: String) -> napi::Result<RdbReader> {
        Ok(RdbReader {
            reader: Arc::new(Mutex::new(Some(
                ferry::rdb::entries(&path).map_err(error::ferry)?,
            ))),
        })
    }

    /// Reads up to `max` entries (fewer at the end; an empty array means the file is done). Rejects with
    /// `FERRY_DATA` when the file is corrupt or truncated.
    #[napi(ts_return_type = "Promise<Array<Record<string, unknown>>>")]
    pub fn next_batch(&self, max: u32) -> AsyncTask<NextBatch> {
        AsyncTask::new(NextBatch {
            reader: Arc::clone(&self.reader),
            max: max.max(1) as usize,
        })
    }

    /// Reads up to `max` entries packed for the JS layer (`rdb.entries` unpacks them; see `Packed` in src/js.rs):
    /// `[data, meta, extras]`, all bytes of the batch in one Buffer, their ends and the numbers in one
    /// Float64Array, and the entries that do not fit that shape as objects. An empty `meta` means the file is
    /// done. Rejects as `nextBatch`.
    #[napi(ts_return_type = "Promise<[Buffer, Float64Array, Array<Record<string, unknown>>]>")]
    pub fn next_packed(&self, max: u32) -> AsyncTask<NextPacked> {
        AsyncTask::new(NextPacked(NextBatch {
            reader: Arc::clone(&self.reader),
            max: max.max(1) as usize,
        }))
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
    reader: Arc<Mutex<Option<FileEntries>>>,
    max: usize,
}

impl NextBatch {
    /// Reads the next entries (fewer than `max` only at the end of the file).
    fn read(&mut self) -> napi::Result<Vec<Entry>> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| error::coded(Code::Data, "RDB reader poisoned by an earlier panic"))?;
        let mut out = Vec::with_capacity(self.max.min(4096));
        while out.len() < self.max {
            let Some(reader) = guard.as_mut() else { break };
            match reader.next() {
                Some(Ok(e)) => out.push(e),
                None => *guard = None,
                Some(Err(e)) => {
                    *guard = None;
                    return Err(error::ferry(e));
                }
            }
        }
        Ok(out)
    }
}

impl Task for NextBatch {
    type Output = Vec<Entry>;
    type JsValue = Entries;

    fn compute(&mut self) -> napi::Result<Vec<Entry>> {
        self.read()
    }

    fn resolve(&mut self, _env: Env, output: Vec<Entry>) -> napi::Result<Entries> {
        Ok(Entries(output))
    }
}

/// The work item behind `nextPacked`: the batch is read and packed on the libuv thread, so the JS thread only
/// wraps three values and the JS layer builds the entries.
pub struct NextPacked(NextBatch);

impl Task for NextPacked {
    type Output = Packed;
    type JsValue = Packed;

    fn compute(&mut self) -> napi::Result<Packed> {
        Ok(Packed::pack(self.0.read()?))
    }

    fn resolve(&mut self, _env: Env, output: Packed) -> napi::Result<Packed> {
        Ok(output)
    }
}

/// Summarizes an RDB file (keys per db and type, encodings, expiries, biggest keys) without decoding values.
#[napi(
    js_name = "rdbStats",
    ts_return_type = "Promise<Record<string, unknown>>"
)]
pub async fn rdb_stats(path: String) -> napi::Result<serde_json::Value> {
    let stats = tokio::task::spawn_blocking(move || ferry::rdb::stats(path))
        .await
        .map_err(|e| error::coded(Code::Data, e))?
        .map_err(error::ferry)?;
    serde_json::to_value(&stats).map_err(|e| error::coded(Code::Data, e))
}

/// The name of an RDB type byte as `rdb.entries` reports it (`string`, `list`, `set`, `zset`, `hash`, `stream`,
/// `module`, or `unknown`).
#[napi(js_name = "rdbTypeName")]
pub fn rdb_type_name(rdb_type: u32) -> &'static str {
    u8::try_from(rdb_type).map_or("unknown", ferry::rdb::type_name_of)
}
