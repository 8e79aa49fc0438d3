//! `redis_ferry.rdb`: streaming an RDB file's keys into Python objects.

use std::path::PathBuf;

use ferry::rdb::Entries;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::value_to_py;
use crate::errors::{self, ferry_error};
use crate::runtime;

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

/// Iterates the keys of an RDB file (ferry's `rdb::entries`): one key in memory at a time.
#[pyclass(module = "redis_ferry._native", name = "RdbReader")]
pub(crate) struct RdbReader {
    entries: Option<Entries>,
}

#[pymethods]
impl RdbReader {
    /// Opens `path` for reading.
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let entries = ferry::rdb::entries(&path).map_err(ferry_error)?;
        Ok(RdbReader {
            entries: Some(entries),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Entry>> {
        let Some(entries) = self.entries.as_mut() else {
            return Ok(None);
        };
        match entries.next() {
            None => {
                self.entries = None;
                Ok(None)
            }
            Some(Err(e)) => {
                self.entries = None;
                Err(ferry_error(e))
            }
            Some(Ok(e)) => {
                let value = match &e.value {
                    Some(v) => value_to_py(py, v)?,
                    None => py.None(),
                };
                Ok(Some(Entry {
                    db: e.db,
                    key: PyBytes::new(py, &e.key).unbind(),
                    type_name: match &e.value {
                        Some(v) => v.type_name(),
                        None => ferry::rdb::type_name_of(e.rdb_type),
                    },
                    value,
                    expire_at_ms: e.expire_at_ms,
                    idle: e.idle_secs,
                    freq: e.freq,
                }))
            }
        }
    }

    /// Stops reading and closes the file.
    fn close(&mut self) {
        self.entries = None;
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
        self.entries = None;
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
