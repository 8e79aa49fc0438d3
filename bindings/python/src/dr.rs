//! `DrPair` for Python: the façade's disaster-recovery pair, its four calls and its run, blocking and asyncio.
//! Results cross as JSON text that the Python layer turns into dataclasses (the Rust serde names are the schema).

use std::path::PathBuf;

use ferry::{DrConfig, DrHandle, DrPair, RecoverChoice};
use pyo3::prelude::*;

use crate::convert::to_json;
use crate::errors::{self, ferry_error};
use crate::runtime;

/// Fails in a forked child: the pair's run (tokio tasks) stays in the process that started it.
fn same_process(pid: u32, what: &str) -> PyResult<()> {
    if pid == std::process::id() {
        return Ok(());
    }
    Err(errors::error(
        "stopped",
        format!(
            "this {what} was created in process {pid} before a fork; create a new one in process {}",
            std::process::id()
        ),
    ))
}

fn json<T: serde::Serialize>(r: Result<T, ferry::Error>) -> PyResult<String> {
    to_json(&r.map_err(ferry_error)?)
}

/// A DR pair built from a configuration (ferry's JSON schema or a TOML file).
#[pyclass(module = "redis_ferry._native", name = "DrPair", frozen)]
pub(crate) struct NativeDrPair {
    pair: DrPair,
    pid: u32,
}

impl NativeDrPair {
    fn pair(&self) -> PyResult<DrPair> {
        same_process(self.pid, "DrPair")?;
        Ok(self.pair.clone())
    }
}

/// The call of one of the pair's async methods by name, its result as JSON.
macro_rules! call {
    ($py:expr, $pair:expr, $method:ident $(, $arg:expr)?) => {{
        let pair = $pair;
        json(runtime::block_on($py, async move { pair.$method($($arg)?).await })?)
    }};
}

/// The same, as an awaitable.
macro_rules! call_async {
    ($py:expr, $pair:expr, $method:ident $(, $arg:expr)?) => {{
        let pair = $pair;
        runtime::into_awaitable($py, async move { json(pair.$method($($arg)?).await) })
    }};
}

fn choice(choice: &str) -> PyResult<RecoverChoice> {
    choice.parse().map_err(ferry_error)
}

#[pymethods]
impl NativeDrPair {
    /// Checks a configuration given as ferry's JSON schema (without connecting).
    #[staticmethod]
    fn from_json(config_json: &str) -> PyResult<NativeDrPair> {
        let config = DrConfig::from_json_str(config_json).map_err(ferry_error)?;
        NativeDrPair::build(config)
    }

    /// Reads a TOML file (the `[a]`, `[b]`, `name` of `ferry dr`).
    #[staticmethod]
    fn from_path(path: PathBuf) -> PyResult<NativeDrPair> {
        let config = DrConfig::from_path(&path).map_err(ferry_error)?;
        NativeDrPair::build(config)
    }

    /// Where the pair is and the next call, as JSON.
    fn status(&self, py: Python<'_>) -> PyResult<String> {
        call!(py, self.pair()?, status)
    }

    /// The same as an awaitable.
    fn status_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call_async!(py, self.pair()?, status)
    }

    /// Writes the first record; the status as JSON.
    fn init(&self, py: Python<'_>) -> PyResult<String> {
        call!(py, self.pair()?, init)
    }

    /// The same as an awaitable.
    fn init_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call_async!(py, self.pair()?, init)
    }

    /// Fences A -> B and makes B the primary; the report as JSON.
    fn failover(&self, py: Python<'_>) -> PyResult<String> {
        call!(py, self.pair()?, failover)
    }

    /// The same as an awaitable.
    fn failover_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call_async!(py, self.pair()?, failover)
    }

    /// Writes B's changes back to A (`choice`: none, b_wins or abort); the report as JSON.
    fn recover(&self, py: Python<'_>, choice: &str) -> PyResult<String> {
        let c = self::choice(choice)?;
        call!(py, self.pair()?, recover, c)
    }

    /// The same as an awaitable.
    fn recover_async<'py>(&self, py: Python<'py>, choice: &str) -> PyResult<Bound<'py, PyAny>> {
        let c = self::choice(choice)?;
        call_async!(py, self.pair()?, recover, c)
    }

    /// Makes A the primary again without a full copy; the report as JSON.
    fn switchback(&self, py: Python<'_>) -> PyResult<String> {
        call!(py, self.pair()?, switchback)
    }

    /// The same as an awaitable.
    fn switchback_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call_async!(py, self.pair()?, switchback)
    }

    /// Starts the job of the current direction on the process runtime, following the record.
    fn run(&self) -> PyResult<NativeDrRun> {
        let pair = self.pair()?;
        let rt = runtime::handle()?;
        let _entered = rt.enter();
        Ok(NativeDrRun {
            handle: pair.run().map_err(ferry_error)?,
            pid: std::process::id(),
        })
    }
}

impl NativeDrPair {
    fn build(config: DrConfig) -> PyResult<NativeDrPair> {
        Ok(NativeDrPair {
            pair: DrPair::new(config).map_err(ferry_error)?,
            pid: std::process::id(),
        })
    }
}

/// A running pair (`DrPair.run()`).
#[pyclass(module = "redis_ferry._native", name = "DrRun", frozen)]
pub(crate) struct NativeDrRun {
    handle: DrHandle,
    pid: u32,
}

impl NativeDrRun {
    fn handle(&self) -> PyResult<DrHandle> {
        same_process(self.pid, "DrPair run")?;
        Ok(self.handle.clone())
    }
}

#[pymethods]
impl NativeDrRun {
    /// The record followed and the job's status, as JSON.
    fn status(&self) -> PyResult<String> {
        to_json(&self.handle.status())
    }

    /// The events from now on.
    fn events(&self) -> PyResult<NativeDrEvents> {
        Ok(NativeDrEvents {
            events: std::sync::Arc::new(tokio::sync::Mutex::new(self.handle()?.events())),
        })
    }

    /// Asks the run to stop without waiting.
    fn request_stop(&self) -> PyResult<()> {
        self.handle()?.request_stop();
        Ok(())
    }

    /// Stops the job (drain, commit) and the run; the last status as JSON.
    fn stop(&self, py: Python<'_>) -> PyResult<String> {
        let h = self.handle()?;
        json(runtime::block_on(py, async move { h.stop().await })?)
    }

    /// The same as an awaitable.
    fn stop_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle()?;
        runtime::into_awaitable(py, async move { json(h.stop().await) })
    }
}

/// The events of a running pair, each as JSON; `None` once the run has ended.
#[pyclass(module = "redis_ferry._native", name = "DrEvents", frozen)]
pub(crate) struct NativeDrEvents {
    events: std::sync::Arc<tokio::sync::Mutex<ferry::DrEvents>>,
}

async fn next_event(
    events: std::sync::Arc<tokio::sync::Mutex<ferry::DrEvents>>,
) -> PyResult<Option<String>> {
    let next = events.lock().await.recv().await;
    next.map(|e| to_json(&e)).transpose()
}

#[pymethods]
impl NativeDrEvents {
    /// The next event (blocking; Ctrl-C heard), or None at the end of the run.
    fn next(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let events = self.events.clone();
        runtime::block_on(py, next_event(events))?
    }

    /// The same as an awaitable.
    fn next_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        runtime::into_awaitable(py, next_event(events))
    }
}
