//! `DrPair`: the façade's disaster-recovery pair for Node, its four calls and its run, on napi's tokio runtime.
//! Results are the façade's serde forms as plain objects; the JS layer (`index.js`) gives them their types.

use std::sync::Arc;

use ferry::{DrConfig, DrEvents, DrHandle, RecoverChoice};
use napi_derive::napi;

use crate::error::{self, Code};

fn json<T: serde::Serialize>(r: Result<T, ferry::Error>) -> napi::Result<serde_json::Value> {
    let v = r.map_err(error::ferry)?;
    serde_json::to_value(&v).map_err(|e| error::coded(Code::Data, e))
}

/// A disaster-recovery pair: checked when built, nothing connected until a call.
#[napi]
pub struct DrPair {
    pair: ferry::DrPair,
}

#[napi]
impl DrPair {
    /// Checks a configuration given as JSON (ferry's DR schema: `name`, `a`, `b`, `limits`, `timing`) or, when
    /// `tomlPath` is set, read from that TOML file. Throws `FERRY_CONFIG` when invalid.
    #[napi(constructor)]
    pub fn new(config_json: Option<String>, toml_path: Option<String>) -> napi::Result<DrPair> {
        let config = match (config_json, toml_path) {
            (Some(text), None) => DrConfig::from_json_str(&text),
            (None, Some(path)) => DrConfig::from_path(path),
            _ => {
                return Err(error::coded(
                    Code::Config,
                    "a DrPair needs a configuration object or the path of a TOML file",
                ))
            }
        }
        .map_err(error::ferry)?;
        Ok(DrPair {
            pair: ferry::DrPair::new(config).map_err(error::ferry)?,
        })
    }

    /// Where the pair is and the next call.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn status(&self) -> napi::Result<serde_json::Value> {
        json(self.pair.status().await)
    }

    /// Writes the first record (`normal`, epoch 1); `run()` then does the A -> B full copy.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn init(&self) -> napi::Result<serde_json::Value> {
        json(self.pair.init().await)
    }

    /// Fences A -> B and makes B the primary.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn failover(&self) -> napi::Result<serde_json::Value> {
        json(self.pair.failover().await)
    }

    /// Writes B's changes back to A; `choice` is `none` (default), `b_wins` or `abort`.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn recover(&self, choice: Option<String>) -> napi::Result<serde_json::Value> {
        let choice: RecoverChoice = match choice {
            Some(c) => c.parse().map_err(error::ferry)?,
            None => RecoverChoice::None,
        };
        json(self.pair.recover(choice).await)
    }

    /// Makes A the primary again without a full copy.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn switchback(&self) -> napi::Result<serde_json::Value> {
        json(self.pair.switchback().await)
    }

    /// Starts the job of the current direction; it follows the record.
    #[napi]
    pub async fn run(&self) -> napi::Result<DrRun> {
        let handle = self.pair.run().map_err(error::ferry)?;
        Ok(DrRun {
            events: Arc::new(tokio::sync::Mutex::new(handle.events())),
            handle,
        })
    }
}

/// A running pair.
#[napi]
pub struct DrRun {
    handle: DrHandle,
    events: Arc<tokio::sync::Mutex<DrEvents>>,
}

#[napi]
impl DrRun {
    /// The record followed and the job's status.
    #[napi(ts_return_type = "Record<string, unknown>")]
    pub fn status(&self) -> napi::Result<serde_json::Value> {
        json(Ok(self.handle.status()))
    }

    /// The next event of the run (from when it started); `null` once it has stopped.
    #[napi(ts_return_type = "Promise<Record<string, unknown> | null>")]
    pub async fn next_event(&self) -> napi::Result<Option<serde_json::Value>> {
        let next = self.events.lock().await.recv().await;
        next.map(|e| json(Ok(e))).transpose()
    }

    /// Stops the job (drain, commit) and the run; the last status.
    #[napi(ts_return_type = "Promise<Record<string, unknown>>")]
    pub async fn stop(&self) -> napi::Result<serde_json::Value> {
        json(self.handle.stop().await)
    }
}
