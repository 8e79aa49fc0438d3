//! `redis_ferry.rdb`: streaming an RDB file's keys into Python objects.
//!
//! A reading thread decodes the file (ferry's `rdb::entries`, no GIL needed) a few batches ahead of Python, so on
//! a machine with a free core the decoding overlaps with building the Python objects. Memory stays bounded: at
//! most [`BATCHES_AHEAD`] batches of [`BATCH_ENTRIES`] keys (or [`BATCH_BYTES`] bytes, whichever comes first) wait.
//! A batch Python has converted goes back to the reading thread, which frees its keys and values and reuses the
//! vector: memory is freed by the thread that allocated it (cheaper for the allocator than freeing across threads).

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Mutex;
use std::time::Duration;

use ferry::rdb::Entries;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{value_to_py, FieldCache};
use crate::errors::{self, ferry_error};
use crate::runtime;

/// Keys the reading thread hands over at once, at most.
const BATCH_ENTRIES: usize = 256;
/// Serialized bytes after which a batch is handed over before it has [`BATCH_ENTRIES`] keys.
const BATCH_BYTES: u64 = 1 << 20;
/// Batches decoded ahead of Python, at most.
const BATCHES_AHEAD: usize = 2;
/// How long one GIL-free wait for the reading thread lasts before signals are checked again.
const SIGNAL_SLICE: Duration = Duration::from_millis(20);

/// What the reading thread sends: keys in file order, or the error that ended the file.
type Batch = Result<Vec<ferry::rdb::Entry>, ferry::Error>;

/// One key of an RDB file.
#[pyclass(module = "redis_ferry._native", frozen, name = "Entry", freelist = 256)]
pub(crate) struct Entry {
    /// Database number.
    #[pyo3(get)]
    db: u64,
    /// The key.
    #[pyo3(get)]
    key: Py<PyBytes>,
    /// Redis type name: string, list, set, zset, hash, stream or module.
    type_name: &'static str,
    /// The value as Python types (see the module docs).
    #[pyo3(get)]
    value: Py<PyAny>,
    /// Absolute expiry in Unix milliseconds, or None.
    #[pyo3(get)]
    expire_at_ms: Option<i64>,
    /// LRU idle seconds, when the file records them.
    #[pyo3(get)]
    idle: Option<u64>,
    /// LFU frequency, when the file records it.
    #[pyo3(get)]
    freq: Option<u8>,
}

impl Entry {
    /// The Python entry of a decoded one.
    fn new(py: Python<'_>, e: &ferry::rdb::Entry, fields: &mut FieldCache) -> PyResult<Entry> {
        let (value, type_name) = match &e.value {
            Some(v) => (value_to_py(py, v, fields)?, v.type_name()),
            None => (py.None(), ferry::rdb::type_name_of(e.rdb_type)),
        };
        Ok(Entry {
            db: e.db,
            key: PyBytes::new(py, &e.key).unbind(),
            type_name,
            value,
            expire_at_ms: e.expire_at_ms,
            idle: e.idle_secs,
            freq: e.freq,
        })
    }
}

#[pymethods]
impl Entry {
    /// Redis type name: string, list, set, zset, hash, stream or module (one shared str per name).
    #[getter]
    fn r#type<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyString> {
        match self.type_name {
            "string" => pyo3::intern!(py, "string").clone(),
            "list" => pyo3::intern!(py, "list").clone(),
            "set" => pyo3::intern!(py, "set").clone(),
            "zset" => pyo3::intern!(py, "zset").clone(),
            "hash" => pyo3::intern!(py, "hash").clone(),
            other => pyo3::types::PyString::new(py, other),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Entry(db={}, key={}, type={:?}, expire_at_ms={:?})",
            self.db,
            self.key
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            self.type_name,
            self.expire_at_ms
        )
    }
}

/// Starts the thread that decodes `entries` into batches; it ends at the end of the file, after an error, or
/// when the receiver is dropped (the reader closed). Returns the batches' receiver and where used batches go back.
fn spawn_reading_thread(
    mut entries: Entries,
) -> PyResult<(Receiver<Batch>, SyncSender<Vec<ferry::rdb::Entry>>)> {
    let (tx, rx) = sync_channel::<Batch>(BATCHES_AHEAD);
    let (recycle, used) = sync_channel::<Vec<ferry::rdb::Entry>>(BATCHES_AHEAD + 1);
    std::thread::Builder::new()
        .name("ferry-rdb-reader".into())
        .spawn(move || loop {
            let mut batch = match used.try_recv() {
                Ok(mut old) => {
                    old.clear();
                    old
                }
                Err(_) => Vec::with_capacity(BATCH_ENTRIES),
            };
            let mut bytes = 0u64;
            let mut failed = None;
            let mut at_end = false;
            while batch.len() < BATCH_ENTRIES && bytes < BATCH_BYTES {
                match entries.next() {
                    Some(Ok(e)) => {
                        bytes += e.serialized_len + e.key.len() as u64;
                        batch.push(e);
                    }
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => {
                        at_end = true;
                        break;
                    }
                }
            }
            if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                return;
            }
            if let Some(e) = failed {
                let _ = tx.send(Err(e));
                return;
            }
            if at_end {
                // Dropping the sender tells the receiver that the file is done.
                return;
            }
        })
        .map_err(|e| errors::error("data", format!("cannot start the RDB reading thread: {e}")))?;
    Ok((rx, recycle))
}

/// Iterates the keys of an RDB file (ferry's `rdb::entries`), decoded a few batches ahead by a reading thread.
#[pyclass(module = "redis_ferry._native", name = "RdbReader")]
pub(crate) struct RdbReader {
    /// `None` once the end was reached, an error was raised, or `close()` was called. (The mutex only makes the
    /// class `Sync` as pyo3 requires: the receiver is used through `&mut self`, never locked.)
    rx: Option<Mutex<Receiver<Batch>>>,
    /// The batch being handed out, and the index of its next entry.
    current: Vec<ferry::rdb::Entry>,
    at: usize,
    /// Where a converted batch goes back to be freed by the reading thread.
    recycle: SyncSender<Vec<ferry::rdb::Entry>>,
    /// The process that started the reading thread (a forked child has no such thread).
    pid: u32,
    /// Hash field names seen recently, shared between the keys' dicts.
    fields: FieldCache,
}

impl RdbReader {
    /// The next batch: waits for the reading thread with the GIL released, hearing Ctrl-C. `Ok(None)` at the end.
    fn next_batch(&mut self, py: Python<'_>) -> PyResult<Option<Vec<ferry::rdb::Entry>>> {
        let Some(rx) = self.rx.take() else {
            return Ok(None);
        };
        let rx = rx.into_inner().unwrap_or_else(|p| p.into_inner());
        if self.pid != std::process::id() {
            return Err(errors::error(
                "stopped",
                format!(
                    "this RDB reader was opened in process {} before a fork; open the file again in process {}",
                    self.pid,
                    std::process::id()
                ),
            ));
        }
        let mut rx = rx;
        let got = loop {
            match rx.try_recv() {
                Ok(batch) => break Some(batch),
                Err(TryRecvError::Disconnected) => break None,
                Err(TryRecvError::Empty) => {}
            }
            let (back, waited) = py.detach(move || {
                let r = rx.recv_timeout(SIGNAL_SLICE);
                (rx, r)
            });
            rx = back;
            match waited {
                Ok(batch) => break Some(batch),
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) => {
                    // Ctrl-C: the reader stays usable (the thread waits for us).
                    if let Err(e) = py.check_signals() {
                        self.rx = Some(Mutex::new(rx));
                        return Err(e);
                    }
                }
            }
        };
        match got {
            Some(Ok(batch)) => {
                self.rx = Some(Mutex::new(rx));
                Ok(Some(batch))
            }
            Some(Err(e)) => Err(ferry_error(e)),
            None => Ok(None),
        }
    }
}

#[pymethods]
impl RdbReader {
    /// Opens `path` for reading and starts decoding it.
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let entries = ferry::rdb::entries(&path).map_err(ferry_error)?;
        let (rx, recycle) = spawn_reading_thread(entries)?;
        Ok(RdbReader {
            rx: Some(Mutex::new(rx)),
            current: Vec::new(),
            at: 0,
            recycle,
            pid: std::process::id(),
            fields: FieldCache::new(),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Entry>> {
        loop {
            if let Some(e) = self.current.get(self.at) {
                self.at += 1;
                return Entry::new(py, e, &mut self.fields).map(Some);
            }
            let used = std::mem::take(&mut self.current);
            if used.capacity() > 0 {
                // Full (the thread is gone or busy): then it is freed here.
                let _ = self.recycle.try_send(used);
            }
            self.at = 0;
            match self.next_batch(py)? {
                Some(batch) => self.current = batch,
                None => return Ok(None),
            }
        }
    }

    /// Stops reading and closes the file (the reading thread ends).
    fn close(&mut self) {
        self.rx = None;
        self.current = Vec::new();
        self.at = 0;
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}

/// `rdb.stats(path)`: the summary of an RDB file as JSON (types, encodings, expiry histogram, biggest keys).
#[pyfunction]
pub(crate) fn rdb_stats_json(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let stats = py
        .detach(|| ferry::rdb::stats(&path))
        .map_err(ferry_error)?;
    crate::convert::to_json(&stats)
}

fn restore_args(
    target_json: &str,
    options_json: &str,
) -> PyResult<(ferry::Target, ferry::rdb::RestoreOptions)> {
    let target: ferry::Target = serde_json::from_str(target_json)
        .map_err(|e| errors::error("config", format!("invalid target: {e}")))?;
    let options: ferry::rdb::RestoreOptions = serde_json::from_str(options_json)
        .map_err(|e| errors::error("config", format!("invalid restore options: {e}")))?;
    Ok((target, options))
}

/// `rdb.restore(path, target, **options)`: writes the file's keys into the target; returns the report as JSON.
#[pyfunction]
pub(crate) fn rdb_restore_json(
    py: Python<'_>,
    path: PathBuf,
    target_json: &str,
    options_json: &str,
) -> PyResult<String> {
    let (target, options) = restore_args(target_json, options_json)?;
    let report = runtime::block_on(py, async move {
        ferry::rdb::restore(&path, &target, options).await
    })?
    .map_err(ferry_error)?;
    crate::convert::to_json(&report)
}

/// The same as an awaitable.
#[pyfunction]
pub(crate) fn rdb_restore_json_async<'py>(
    py: Python<'py>,
    path: PathBuf,
    target_json: &str,
    options_json: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let (target, options) = restore_args(target_json, options_json)?;
    runtime::into_awaitable(py, async move {
        let report = ferry::rdb::restore(&path, &target, options)
            .await
            .map_err(ferry_error)?;
        crate::convert::to_json(&report)
    })
}
