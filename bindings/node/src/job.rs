//! `SyncJob`, `verify` and `rdb.restore`: the façade's async calls, on napi's tokio runtime.
//!
//! Nothing here holds a ref'd handle on the Node event loop between calls: events are pulled one promise at a
//! time (`nextEvent`), and `close()` settles every pending pull and wait, so a closed job never keeps the
//! process alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry::{Events, JobHandle, SyncConfig};
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

use crate::error::{self, Code};

/// A sync job: checked when built, run by `start()`.
#[napi]
pub struct SyncJob {
    /// The checked job until `start()` takes it.
    job: Mutex<Option<ferry::SyncJob>>,
    /// The running job.
    handle: Mutex<Option<JobHandle>>,
    /// The event receiver the JS layer pulls from (one pull at a time).
    events: Arc<tokio::sync::Mutex<Option<Events>>>,
    /// Cancelled by `close()`.
    closed: CancellationToken,
    /// Waits that an `AbortSignal` may cancel, by the id the JS layer chose.
    waits: Mutex<HashMap<u32, CancellationToken>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data (options) is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn json<T: serde::Serialize>(v: &T) -> napi::Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| error::coded(Code::Data, e))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> napi::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| error::coded(Code::Config, format!("invalid {what}: {e}")))
}

#[napi]
impl SyncJob {
    /// Checks a configuration given as JSON (ferry's schema) or, when `tomlPath` is set, read from that TOML
    /// file (ferry's schema or RedisShake's `sync.toml` / `shake.toml`). Throws `FERRY_CONFIG` when invalid.
    #[napi(constructor)]
    pub fn new(config_json: Option<String>, toml_path: Option<String>) -> napi::Result<SyncJob> {
        let config = match (config_json, toml_path) {
            (Some(text), None) => SyncConfig::from_json_str(&text),
            (None, Some(path)) => SyncConfig::from_path(path),
            _ => {
                return Err(error::coded(
                    Code::Config,
                    "a SyncJob needs a configuration object or the path of a TOML file",
                ))
            }
        }
        .map_err(error::ferry)?;
        let job = ferry::SyncJob::new(config).map_err(error::ferry)?;
        Ok(SyncJob {
            job: Mutex::new(Some(job)),
            handle: Mutex::new(None),
            events: Arc::new(tokio::sync::Mutex::new(None)),
            closed: CancellationToken::new(),
            waits: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration with every secret masked (`null` once started).
    #[napi(ts_return_type = "Record<string, unknown> | null")]
    pub fn redacted_config(&self) -> napi::Result<serde_json::Value> {
        match lock(&self.job).as_ref() {
            Some(job) => Ok(job.config().to_redacted_json()),
            None => Ok(serde_json::Value::Null),
        }
    }

    /// Starts the job. Rejects with `FERRY_CONFIG` for kinds of source or target not supported yet, and with
    /// `FERRY_STOPPED` when the job was already started or closed.
    #[napi]
    pub async fn start(&self) -> napi::Result<()> {
        if self.closed.is_cancelled() {
            return Err(error::coded(Code::Stopped, "the job is closed"));
        }
        let job = lock(&self.job)
            .take()
            .ok_or_else(|| error::coded(Code::Stopped, "the job was already started"))?;
        let handle = job.start().map_err(error::ferry)?;
        *self.events.lock().await = Some(handle.events());
        *lock(&self.handle) = Some(handle);
        Ok(())
    }

    /// A snapshot of the status (`null` before `start()`).
    #[napi(ts_return_type = "Record<string, unknown> | null")]
    pub fn status(&self) -> napi::Result<serde_json::Value> {
        match lock(&self.handle).as_ref() {
            Some(h) => json(&h.status()),
            None => Ok(serde_json::Value::Null),
        }
    }

    /// Whether the job has ended.
    #[napi(getter)]
    pub fn finished(&self) -> bool {
        lock(&self.handle)
            .as_ref()
            .is_some_and(JobHandle::is_finished)
    }

    /// The next event; `null` once the job has ended (and every event was delivered) or the job was closed.
    #[napi(ts_return_type = "Promise<Record<string, unknown> | null>")]
    pub async fn next_event(&self) -> napi::Result<Option<serde_json::Value>> {
        let events = Arc::clone(&self.events);
        let closed = self.closed.clone();
        let mut guard = tokio::select! {
            g = events.lock() => g,
            _ = closed.cancelled() => return Ok(None),
        };
        let Some(rx) = guard.as_mut() else {
            return Ok(None);
        };
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = closed.cancelled() => None,
        };
        event.as_ref().map(json).transpose()
    }

    /// Stops the job (what was received is written and checkpointed) and returns the final status.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn stop(&self) -> napi::Result<serde_json::Value> {
        let handle = self.started()?;
        let status = handle.stop().await.map_err(error::ferry)?;
        json(&status)
    }

    /// Registers the wait `id` before `wait(id)` runs, so that `cancelWait(id)` called at once still ends it.
    #[napi]
    pub fn begin_wait(&self, id: u32) {
        lock(&self.waits).insert(id, self.closed.child_token());
    }

    /// Waits until the job ends and returns its final status; `null` when `cancelWait(id)` or `close()` ended
    /// the wait first (or `beginWait(id)` was not called).
    #[napi(ts_return_type = "Promise<Record<string, unknown> | null>")]
    pub async fn wait(&self, id: u32) -> napi::Result<Option<serde_json::Value>> {
        let handle = self.started();
        let cancel = lock(&self.waits).get(&id).cloned();
        let result = match (handle, cancel) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Ok(None),
            (Ok(handle), Some(cancel)) => {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Ok(None),
                    r = handle.wait() => Ok(Some(r)),
                }
            }
        };
        lock(&self.waits).remove(&id);
        match result? {
            Some(r) => Ok(Some(json(&r.map_err(error::ferry)?)?)),
            None => Ok(None),
        }
    }

    /// Ends the wait `id` (it resolves `null`); the job goes on.
    #[napi]
    pub fn cancel_wait(&self, id: u32) {
        if let Some(t) = lock(&self.waits).get(&id) {
            t.cancel();
        }
    }

    /// Asks a running job to stop without waiting, settles every pending `nextEvent` and `wait`, and lets go
    /// of the job. Safe to call twice.
    #[napi]
    pub fn close(&self) {
        if let Some(h) = lock(&self.handle).as_ref() {
            h.request_stop();
        }
        self.closed.cancel();
        lock(&self.job).take();
    }
}

impl SyncJob {
    /// The running job; `FERRY_STOPPED` before `start()` and after `close()`.
    fn started(&self) -> napi::Result<JobHandle> {
        if self.closed.is_cancelled() {
            return Err(error::coded(Code::Stopped, "the job is closed"));
        }
        lock(&self.handle)
            .clone()
            .ok_or_else(|| error::coded(Code::Stopped, "the job was not started"))
    }
}

/// Compares a source and a target key by key (`source`, `target` and `options` as JSON of ferry's schema) and
/// returns the report.
#[napi(
    js_name = "verify",
    ts_return_type = "Promise<Record<string, unknown>>"
)]
pub async fn verify(
    source: String,
    target: String,
    options: Option<String>,
) -> napi::Result<serde_json::Value> {
    let source: ferry::Source = parse("source", &source)?;
    let target: ferry::Target = parse("target", &target)?;
    let options: ferry::VerifyOptions = match options {
        Some(o) => parse("verify options", &o)?,
        None => Default::default(),
    };
    let report = ferry::verify(&source, &target, options)
        .await
        .map_err(error::ferry)?;
    json(&report)
}

/// Restores the RDB file at `path` into `target` (JSON of ferry's schema) and returns what was written.
#[napi(
    js_name = "rdbRestore",
    ts_return_type = "Promise<Record<string, unknown>>"
)]
pub async fn rdb_restore(
    path: String,
    target: String,
    options: Option<String>,
) -> napi::Result<serde_json::Value> {
    let target: ferry::Target = parse("target", &target)?;
    let options: ferry::rdb::RestoreOptions = match options {
        Some(o) => parse("restore options", &o)?,
        None => Default::default(),
    };
    let report = ferry::rdb::restore(&path, &target, options)
        .await
        .map_err(error::ferry)?;
    json(&report)
}
