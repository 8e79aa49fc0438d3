//! `redis_ferry.rdb`: streaming an RDB file's keys into Python objects.
//!
//! A reading thread decodes the file (ferry's `rdb::entries`, no GIL needed) a few batches ahead of Python, so on
//! a machine with a free core the decoding overlaps with building the Python objects. The reading thread does not
//! build ferry's `Value`s: it visits each value (`Entries::next_visit`) and copies its strings and elements into
//! one flat buffer per batch, where Python's `bytes` are made from (one copy into a batch instead of one
//! allocation or reference count per element; values other than strings, lists, sets and plain hashes come as a
//! `Value`). Memory stays bounded: at most [`BATCHES_AHEAD`] batches of [`BATCH_ENTRIES`] keys (or
//! [`BATCH_BYTES`] bytes, whichever comes first) wait. A batch Python has converted goes back to the reading
//! thread, which reuses its vectors.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Mutex;
use std::time::Duration;

use ferry::rdb::{Elem, Entries, Shape, Value, Visitor};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString};

use crate::convert::{value_to_py, FieldCache};
use crate::errors::{self, ferry_error};
use crate::runtime;

/// Keys the reading thread hands over at once, at most (a hand-over wakes the other thread: not one per few keys).
const BATCH_ENTRIES: usize = 4096;
/// Bytes after which a batch is handed over before it has [`BATCH_ENTRIES`] keys.
const BATCH_BYTES: usize = 1 << 20;
/// Entries a `for` loop is given at once (see `RdbReader::__iter__`): few enough that the Python objects just built
/// are still in the CPU's cache when the loop reaches them.
const LIST_ENTRIES: usize = 128;
/// Batches decoded ahead of Python, at most.
const BATCHES_AHEAD: usize = 2;
/// How long one GIL-free wait for the reading thread lasts before signals are checked again.
const SIGNAL_SLICE: Duration = Duration::from_millis(20);

/// What the reading thread sends: keys in file order, or the error that ended the file.
type Sent = Result<Batch, ferry::Error>;

/// A key's value in a [`Batch`]. Nothing here needs dropping, so emptying a batch's keys costs nothing per key.
#[derive(Clone)]
enum BatchValue {
    /// None (a value ferry does not decode).
    Nothing,
    /// A string: its bytes in the batch's buffer.
    String(Range<usize>),
    /// A list, set or hash: its elements in the batch's `elements` (a hash: field, value, ...).
    Collection(Shape, Range<usize>),
    /// Any other value, decoded: its index in the batch's `decoded`.
    Decoded(usize),
}

/// A key's metadata without `Option`s (18 bytes instead of 34): keys and entries are read by the Python thread
/// from another core's cache, and the `Entry` object is zeroed when allocated, so smaller is cheaper.
#[derive(Clone, Copy)]
struct Meta {
    db: u64,
    expire_at_ms: i64,
    idle: u64,
    freq: u8,
    /// Which of `expire_at_ms`, `idle` and `freq` the file gave ([`Meta::EXPIRE`], [`Meta::IDLE`], [`Meta::FREQ`]).
    present: u8,
    /// The RDB type byte (the Redis type name comes from it).
    rdb_type: u8,
}

impl Meta {
    const EXPIRE: u8 = 1;
    const IDLE: u8 = 2;
    const FREQ: u8 = 4;

    fn of(e: &ferry::rdb::Entry) -> Meta {
        let mut present = 0;
        if e.expire_at_ms.is_some() {
            present |= Meta::EXPIRE;
        }
        if e.idle_secs.is_some() {
            present |= Meta::IDLE;
        }
        if e.freq.is_some() {
            present |= Meta::FREQ;
        }
        Meta {
            db: e.db,
            expire_at_ms: e.expire_at_ms.unwrap_or(0),
            idle: e.idle_secs.unwrap_or(0),
            freq: e.freq.unwrap_or(0),
            present,
            rdb_type: e.rdb_type,
        }
    }

    fn expire_at_ms(&self) -> Option<i64> {
        (self.present & Meta::EXPIRE != 0).then_some(self.expire_at_ms)
    }

    fn idle(&self) -> Option<u64> {
        (self.present & Meta::IDLE != 0).then_some(self.idle)
    }

    fn freq(&self) -> Option<u8> {
        (self.present & Meta::FREQ != 0).then_some(self.freq)
    }

    fn type_name(&self) -> &'static str {
        ferry::rdb::type_name_of(self.rdb_type)
    }
}

/// What a [`Batch`] keeps of a parser's entry, taken from it in place.
struct Taken {
    key: bytes::Bytes,
    meta: Meta,
    value: Option<Value>,
    serialized_len: u64,
}

impl Taken {
    fn from(e: &mut ferry::rdb::Entry) -> Taken {
        Taken {
            key: std::mem::take(&mut e.key),
            meta: Meta::of(e),
            value: e.value.take(),
            serialized_len: e.serialized_len,
        }
    }
}

/// One key of a [`Batch`].
struct BatchKey {
    key: Range<usize>,
    value: BatchValue,
    meta: Meta,
}

/// Keys decoded by the reading thread: their bytes copied one after the other into `bytes`.
#[derive(Default)]
struct Batch {
    /// Keys, strings and elements (integer elements as their decimal text).
    bytes: Vec<u8>,
    /// Where each element of the collections lies in `bytes`.
    elements: Vec<Range<usize>>,
    keys: Vec<BatchKey>,
    /// The values of the keys whose value is `BatchValue::Decoded`.
    decoded: Vec<Value>,
    /// Serialized bytes of the `Decoded` values.
    decoded_bytes: usize,
    /// The value of the key being visited.
    current: Option<BatchValue>,
}

impl Batch {
    /// Empties the batch for reuse; a batch that held one big value does not keep its vectors for the small ones.
    fn clear(&mut self) {
        self.bytes.clear();
        self.elements.clear();
        self.keys.clear();
        self.decoded.clear();
        self.decoded_bytes = 0;
        self.current = None;
        if self.bytes.capacity() > 2 * BATCH_BYTES {
            self.bytes = Vec::new();
        }
        if self.elements.capacity() * std::mem::size_of::<Range<usize>>() > 2 * BATCH_BYTES {
            self.elements = Vec::new();
        }
    }

    /// True when the batch is to be handed over: [`BATCH_ENTRIES`] keys or [`BATCH_BYTES`] bytes.
    fn full(&self) -> bool {
        self.keys.len() >= BATCH_ENTRIES || self.bytes.len() + self.decoded_bytes >= BATCH_BYTES
    }

    /// Appends `s` to the batch's bytes; returns where it lies.
    fn copy(&mut self, s: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(s);
        start..self.bytes.len()
    }

    /// Adds the key whose value was just visited (or is in `e.value`).
    fn push(&mut self, e: Taken) {
        let key = self.copy(&e.key);
        let meta = e.meta;
        let value = match e.value {
            Some(v) => {
                self.decoded_bytes += e.serialized_len as usize;
                self.decoded.push(v);
                BatchValue::Decoded(self.decoded.len() - 1)
            }
            None => self.current.take().unwrap_or(BatchValue::Nothing),
        };
        self.keys.push(BatchKey { key, value, meta });
    }
}

impl Visitor for Batch {
    fn string(&mut self, s: &[u8]) {
        let r = self.copy(s);
        self.current = Some(BatchValue::String(r));
    }

    fn begin(&mut self, shape: Shape, _len_hint: usize) {
        let at = self.elements.len();
        self.current = Some(BatchValue::Collection(shape, at..at));
    }

    fn element(&mut self, e: Elem<'_>) {
        let r = match e {
            Elem::Str(s) => self.copy(s),
            Elem::Int(i) => {
                use std::io::Write;
                let start = self.bytes.len();
                // Writing into a Vec cannot fail.
                let _ = write!(self.bytes, "{i}");
                start..self.bytes.len()
            }
        };
        self.elements.push(r);
        if let Some(BatchValue::Collection(_, range)) = &mut self.current {
            range.end += 1;
        }
    }

    fn value(&mut self, v: Value) {
        self.decoded.push(v);
        self.current = Some(BatchValue::Decoded(self.decoded.len() - 1));
    }
}

/// One key of an RDB file.
#[pyclass(module = "redis_ferry._native", frozen, name = "Entry")]
pub(crate) struct Entry {
    /// The key.
    #[pyo3(get)]
    key: Py<PyBytes>,
    /// The value as Python types (see the module docs).
    #[pyo3(get)]
    value: Py<PyAny>,
    /// Database number, type, expiry, LRU idle seconds, LFU frequency (see the getters).
    meta: Meta,
}

impl Entry {
    /// The Python entry of a key of `batch`.
    fn new(
        py: Python<'_>,
        batch: &Batch,
        k: &BatchKey,
        fields: &mut FieldCache,
    ) -> PyResult<Entry> {
        let b = &batch.bytes;
        let value = match &k.value {
            BatchValue::Nothing => py.None(),
            BatchValue::String(r) => PyBytes::new(py, &b[r.clone()]).into_any().unbind(),
            BatchValue::Collection(shape, r) => {
                let elements = &batch.elements[r.clone()];
                match shape {
                    Shape::List => {
                        PyList::new(py, elements.iter().map(|e| PyBytes::new(py, &b[e.clone()])))?
                            .into_any()
                            .unbind()
                    }
                    Shape::Set => {
                        let set = PySet::empty(py)?;
                        for e in elements {
                            set.add(PyBytes::new(py, &b[e.clone()]))?;
                        }
                        set.into_any().unbind()
                    }
                    _ => {
                        let dict = PyDict::new(py);
                        for pair in elements.chunks_exact(2) {
                            dict.set_item(
                                fields.bytes(py, &b[pair[0].clone()]),
                                PyBytes::new(py, &b[pair[1].clone()]),
                            )?;
                        }
                        dict.into_any().unbind()
                    }
                }
            }
            BatchValue::Decoded(i) => match batch.decoded.get(*i) {
                Some(v) => value_to_py(py, v, fields)?,
                None => py.None(),
            },
        };
        Ok(Entry {
            key: PyBytes::new(py, &b[k.key.clone()]).unbind(),
            value,
            meta: k.meta,
        })
    }
}

#[pymethods]
impl Entry {
    /// Database number.
    #[getter]
    fn db(&self) -> u64 {
        self.meta.db
    }

    /// Absolute expiry in Unix milliseconds, or None.
    #[getter]
    fn expire_at_ms(&self) -> Option<i64> {
        self.meta.expire_at_ms()
    }

    /// LRU idle seconds, when the file records them.
    #[getter]
    fn idle(&self) -> Option<u64> {
        self.meta.idle()
    }

    /// LFU frequency, when the file records it.
    #[getter]
    fn freq(&self) -> Option<u8> {
        self.meta.freq()
    }

    /// Redis type name: string, list, set, zset, hash, stream or module (one shared str per name).
    #[getter]
    fn r#type<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        match self.meta.type_name() {
            "string" => pyo3::intern!(py, "string").clone(),
            "list" => pyo3::intern!(py, "list").clone(),
            "set" => pyo3::intern!(py, "set").clone(),
            "zset" => pyo3::intern!(py, "zset").clone(),
            "hash" => pyo3::intern!(py, "hash").clone(),
            other => PyString::new(py, other),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Entry(db={}, key={}, type={:?}, expire_at_ms={:?})",
            self.meta.db,
            self.key
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            self.meta.type_name(),
            self.meta.expire_at_ms()
        )
    }
}

/// Starts the thread that decodes `entries` into batches; it ends at the end of the file, after an error, or
/// when the receiver is dropped (the reader closed). Returns the batches' receiver and where used batches go back.
fn spawn_reading_thread(mut entries: Entries) -> PyResult<(Receiver<Sent>, SyncSender<Batch>)> {
    let (tx, rx) = sync_channel::<Sent>(BATCHES_AHEAD);
    let (recycle, used) = sync_channel::<Batch>(BATCHES_AHEAD + 1);
    std::thread::Builder::new()
        .name("ferry-rdb-reader".into())
        .spawn(move || loop {
            let mut batch = match used.try_recv() {
                Ok(mut old) => {
                    old.clear();
                    old
                }
                Err(_) => Batch::default(),
            };
            let mut failed = None;
            let mut at_end = false;
            while !batch.full() {
                batch.current = None;
                // What the batch keeps is taken from the entry where the parser left it (no move of the whole).
                match entries.next_visit_with(&mut batch, Taken::from) {
                    Some(Ok(t)) => batch.push(t),
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
            if !batch.keys.is_empty() && tx.send(Ok(batch)).is_err() {
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
/// `iter()` (a `for` loop) gives an iterator that takes the entries a list at a time, `next()` takes one: both
/// take from the same stream, each key once.
#[pyclass(module = "redis_ferry._native", name = "RdbReader")]
pub(crate) struct RdbReader {
    /// `None` once the end was reached, an error was raised, or `close()` was called. (The mutex only makes the
    /// class `Sync` as pyo3 requires: the receiver is used through `&mut self`, never locked.)
    rx: Option<Mutex<Receiver<Sent>>>,
    /// The batch being handed out, and the index of its next key.
    current: Option<Batch>,
    at: usize,
    /// Where a converted batch goes back to be reused by the reading thread.
    recycle: SyncSender<Batch>,
    /// The process that started the reading thread (a forked child has no such thread).
    pid: u32,
    /// Hash field names seen recently, shared between the keys' dicts.
    fields: FieldCache,
}

impl RdbReader {
    /// True when the current batch has keys left to hand out, after taking the next batch if it had none; false at
    /// the end of the file.
    fn has_current(&mut self, py: Python<'_>) -> PyResult<bool> {
        if let Some(batch) = &self.current {
            if self.at < batch.keys.len() {
                return Ok(true);
            }
        }
        if let Some(used) = self.current.take() {
            // Full (the thread is gone or busy): then it is freed here.
            let _ = self.recycle.try_send(used);
        }
        self.at = 0;
        self.current = self.next_batch(py)?;
        Ok(self.current.is_some())
    }

    /// The next batch: waits for the reading thread with the GIL released, hearing Ctrl-C. `Ok(None)` at the end.
    fn next_batch(&mut self, py: Python<'_>) -> PyResult<Option<Batch>> {
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
            current: None,
            at: 0,
            recycle,
            pid: std::process::id(),
            fields: FieldCache::new(),
        })
    }

    /// An iterator over the entries not yet handed out: a C-level chain over lists of a batch's entries each, so
    /// a `for` loop costs no call into this module per key (one per batch of keys).
    fn __iter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let batches = py
            .import(pyo3::intern!(py, "builtins"))?
            .getattr(pyo3::intern!(py, "iter"))?
            .call1((
                slf.getattr(pyo3::intern!(py, "_next_batch"))?,
                PyList::empty(py),
            ))?;
        py.import(pyo3::intern!(py, "itertools"))?
            .getattr(pyo3::intern!(py, "chain"))?
            .call_method1(pyo3::intern!(py, "from_iterable"), (batches,))
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Entry>> {
        while self.has_current(py)? {
            if let Some(batch) = &self.current {
                if let Some(k) = batch.keys.get(self.at) {
                    self.at += 1;
                    return Entry::new(py, batch, k, &mut self.fields).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// The next entries of the current batch (or of the next batch), at most [`LIST_ENTRIES`], as a list; empty at
    /// the end.
    fn _next_batch<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        if !self.has_current(py)? {
            return Ok(PyList::empty(py));
        }
        let Some(batch) = &self.current else {
            return Ok(PyList::empty(py));
        };
        let keys = &batch.keys[self.at..batch.keys.len().min(self.at + LIST_ENTRIES)];
        let mut entries = Vec::with_capacity(keys.len());
        for k in keys {
            entries.push(Bound::new(py, Entry::new(py, batch, k, &mut self.fields)?)?);
            self.at += 1;
        }
        // Made at its final size (no growing by appends).
        PyList::new(py, entries)
    }

    /// Stops reading and closes the file (the reading thread ends).
    fn close(&mut self) {
        self.rx = None;
        self.current = None;
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
