//! `SyncJob` and `verify` for Python: the façade's job handle and verify call, results as JSON text that the
//! Python layer turns into dataclasses (so the Rust serde names are the only schema).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry::{JobHandle, Source, SyncConfig, SyncJob, Target, VerifyOptions};
use pyo3::prelude::*;

use crate::convert::to_json;
use crate::errors::{self, ferry_error};
use crate::runtime;

/// A running (or ended) sync job, created by `start_json` / `start_path`.
#[pyclass(module = "redis_ferry._native", name = "JobHandle", frozen)]
pub(crate) struct NativeJob {
    handle: JobHandle,
    pid: u32,
}

fn start(config: SyncConfig) -> PyResult<NativeJob> {
    let job = SyncJob::new(config).map_err(ferry_error)?;
    let rt = runtime::handle()?;
    let _entered = rt.enter();
    let handle = job.start().map_err(ferry_error)?;
    Ok(NativeJob {
        handle,
        pid: std::process::id(),
    })
}

impl NativeJob {
    fn handle(&self) -> PyResult<JobHandle> {
        if self.pid != std::process::id() {
            return Err(errors::error(
                "stopped",
                format!(
                    "this job was started in process {} before a fork; it does not run in process {}",
                    self.pid,
                    std::process::id()
                ),
            ));
        }
        Ok(self.handle.clone())
    }
}

fn status_json(r: Result<ferry::Status, ferry::Error>) -> PyResult<String> {
    to_json(&r.map_err(ferry_error)?)
}

#[pymethods]
impl NativeJob {
    /// Checks a configuration given as ferry's JSON schema and starts the job.
    #[staticmethod]
    fn start_json(config_json: &str) -> PyResult<NativeJob> {
        start(SyncConfig::from_json_str(config_json).map_err(ferry_error)?)
    }

    /// Reads a TOML file (ferry's schema, RedisShake v3 sync.toml or v4 shake.toml) and starts the job.
    #[staticmethod]
    fn start_path(path: PathBuf) -> PyResult<NativeJob> {
        start(SyncConfig::from_path(&path).map_err(ferry_error)?)
    }

    /// The status snapshot as JSON.
    fn status_json(&self) -> PyResult<String> {
        to_json(&self.handle.status())
    }

    /// Whether the job has ended.
    fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Asks the job to stop without waiting.
    fn request_stop(&self) -> PyResult<()> {
        self.handle()?.request_stop();
        Ok(())
    }

    /// Stops the job (drain, commit) and returns the final status as JSON; the GIL is released, Ctrl-C heard.
    fn stop(&self, py: Python<'_>) -> PyResult<String> {
        let h = self.handle()?;
        status_json(runtime::block_on(py, async move { h.stop().await })?)
    }

    /// The same as an awaitable.
    fn stop_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        runtime::into_awaitable(py, async move { status_json(h.stop().await) })
    }

    /// Waits until the job ends; the final status as JSON, or None when `timeout` seconds passed first.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        let h = self.handle()?;
        let timeout = timeout
            .map(|t| {
                Duration::try_from_secs_f64(t).map_err(|_| {
                    errors::error(
                        "config",
                        format!("timeout must be a non-negative number, got {t}"),
                    )
                })
            })
            .transpose()?;
        match runtime::block_on_timeout(py, timeout, async move { h.wait().await })? {
            Some(r) => status_json(r).map(Some),
            None => Ok(None),
        }
    }

    /// The same as an awaitable (asyncio.wait_for gives it a deadline).
    fn wait_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        runtime::into_awaitable(py, async move { status_json(h.wait().await) })
    }

    /// A receiver of the job's events from now on.
    fn events(&self) -> PyResult<NativeEvents> {
        let handle = self.handle()?;
        Ok(NativeEvents {
            events: Arc::new(tokio::sync::Mutex::new(handle.events())),
            handle,
        })
    }
}

/// A job's events, each as JSON (`{"type": "phase", "phase": "full_sync"}`, ...).
#[pyclass(module = "redis_ferry._native", name = "Events", frozen)]
pub(crate) struct NativeEvents {
    events: Arc<tokio::sync::Mutex<ferry::Events>>,
    handle: JobHandle,
}

/// The next event, or None once the job has ended and nothing is left. The handle keeps the job's event
/// channel open, so the end of the job is watched too (`Events::recv` alone would wait forever after it).
async fn next_event(
    events: Arc<tokio::sync::Mutex<ferry::Events>>,
    handle: JobHandle,
) -> PyResult<Option<String>> {
    let mut events = events.lock().await;
    let next = tokio::select! {
        biased;
        e = events.recv() => e,
        _ = handle.wait() => events.try_recv(),
    };
    next.map(|e| to_json(&e)).transpose()
}

#[pymethods]
impl NativeEvents {
    /// The next event, waiting for it (GIL released, Ctrl-C heard); None once the job ended and all were read.
    fn next(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let (events, handle) = (self.events.clone(), self.handle.clone());
        runtime::block_on(py, next_event(events, handle))?
    }

    /// The same as an awaitable.
    fn next_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (events, handle) = (self.events.clone(), self.handle.clone());
        runtime::into_awaitable(py, next_event(events, handle))
    }
}

fn verify_args(
    source_json: &str,
    target_json: &str,
    options_json: &str,
) -> PyResult<(Source, Target, VerifyOptions)> {
    let source: Source = serde_json::from_str(source_json)
        .map_err(|e| errors::error("config", format!("invalid source: {e}")))?;
    let target: Target = serde_json::from_str(target_json)
        .map_err(|e| errors::error("config", format!("invalid target: {e}")))?;
    let options: VerifyOptions = serde_json::from_str(options_json)
        .map_err(|e| errors::error("config", format!("invalid verify options: {e}")))?;
    Ok((source, target, options))
}

/// Compares source and target key by key; the report as JSON.
#[pyfunction]
pub(crate) fn verify_json(
    py: Python<'_>,
    source_json: &str,
    target_json: &str,
    options_json: &str,
) -> PyResult<String> {
    let (source, target, options) = verify_args(source_json, target_json, options_json)?;
    let report = runtime::block_on(
        py,
        async move { ferry::verify(&source, &target, options).await },
    )?
    .map_err(ferry_error)?;
    to_json(&report)
}

/// The same as an awaitable.
#[pyfunction]
pub(crate) fn verify_json_async<'py>(
    py: Python<'py>,
    source_json: &str,
    target_json: &str,
    options_json: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let (source, target, options) = verify_args(source_json, target_json, options_json)?;
    runtime::into_awaitable(py, async move {
        let report = ferry::verify(&source, &target, options)
            .await
            .map_err(ferry_error)?;
        to_json(&report)
    })
}

/// Checks a configuration (ferry JSON, or a TOML file when `path` is given) without starting anything; returns
/// it as JSON with every secret masked.
#[pyfunction]
#[pyo3(signature = (config_json=None, path=None))]
pub(crate) fn check_config(config_json: Option<&str>, path: Option<PathBuf>) -> PyResult<String> {
    let config = match (config_json, path) {
        (Some(text), None) => SyncConfig::from_json_str(text),
        (None, Some(path)) => SyncConfig::from_path(&path),
        _ => {
            return Err(errors::error(
                "config",
                "give either config_json or path".into(),
            ))
        }
    }
    .map_err(ferry_error)?;
    SyncJob::new(config.clone()).map_err(ferry_error)?;
    Ok(config.to_redacted_json().to_string())
}
