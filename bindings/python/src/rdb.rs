//! `redis_ferry.rdb`: streaming an RDB file's keys into Python objects.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use ferry_rdb::{Item, ParserOptions, Reader};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::value_to_py;
use crate::errors;

/// One key of an RDB file.
#[pyclass(module = "redis_ferry._native", frozen, name = "Entry")]
pub(crate) struct Entry {
    /// Database number.
    #[pyo3(get)]
    db: u64,
    /// The key.
    #[pyo3(get)]
    key: Py<PyBytes>,
    /// Redis type name: string, list, set, zset, hash, stream or module.
    #[pyo3(get, name = "type")]
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

#[pymethods]
impl Entry {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Entry(db={}, key={}, type={:?}, expire_at_ms={:?})",
            self.db,
            self.key.bind(py).repr().map(|r| r.to_string()).unwrap_or_default(),
            self.type_name,
            self.expire_at_ms
        )
    }
}

/// Iterates the keys of an RDB file; reads the file in a fixed-size buffer, one key at a time.
#[pyclass(module = "redis_ferry._native", name = "RdbReader")]
pub(crate) struct RdbReader {
    reader: Option<Reader<BufReader<File>>>,
    path: PathBuf,
}

#[pymethods]
impl RdbReader {
    /// Opens `path` for reading.
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let file = File::open(&path).map_err(|e| {
            errors::error("config", format!("cannot open RDB file {}: {e}", path.display()))
        })?;
        Ok(RdbReader {
            reader: Some(Reader::new(BufReader::with_capacity(256 * 1024, file), ParserOptions::default())),
            path,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Entry>> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        loop {
            match reader.next() {
                None => {
                    self.reader = None;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    self.reader = None;
                    return Err(errors::error("data", format!("{}: {e}", self.path.display())));
                }
                Some(Ok(Item::Entry(e))) => {
                    let value = match &e.value {
                        Some(v) => value_to_py(py, v)?,
                        None => py.None(),
                    };
                    return Ok(Some(Entry {
                        db: e.db,
                        key: PyBytes::new(py, &e.key).unbind(),
                        type_name: e.value.as_ref().map(|v| v.type_name()).unwrap_or_else(|| ferry_rdb::type_name_of(e.rdb_type)),
                        value,
                        expire_at_ms: e.expire_at_ms,
                        idle: e.idle_secs,
                        freq: e.freq,
                    }));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Stops reading and closes the file.
    fn close(&mut self) {
        self.reader = None;
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
        self.reader = None;
        false
    }
}
