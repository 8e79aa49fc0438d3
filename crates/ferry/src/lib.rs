//! ferry: copies a Redis dataset from one deployment to another and keeps it in sync.
//!
//! This is the façade the `ferry` program and the Python and Node packages share: few types, serde options,
//! one error with a kind.
//!
//! - [`SyncJob`]: a sync job built from a [`SyncConfig`] ([`Source`], [`Target`], filters, conflict policy,
//!   checkpoints, limits). [`SyncJob::start`] gives a [`JobHandle`]: [`status`](JobHandle::status) (a serde
//!   [`Status`] snapshot), [`events`](JobHandle::events) (each [`Event`] sent as it happens: phases, per shard of a
//!   cluster source too, full resyncs with their reason, reconnects, source and target failovers followed,
//!   errors with their kind; docs/events.md lists them and when they fire), [`stop`](JobHandle::stop) (drain and
//!   commit) and [`wait`](JobHandle::wait).
//! - [`SyncConfig::from_toml_str`] / [`SyncConfig::from_path`] read ferry's TOML schema (docs/config.md) and
//!   RedisShake's v3 `sync.toml` and v4 `shake.toml`; [`SyncConfig::from_json_str`] reads what the bindings pass.
//! - [`verify()`]: compares two deployments key by key, in bounded memory; a [`VerifyReport`] lists the first
//!   differences.
//! - [`rdb`]: the keys of an RDB file, its statistics, and a restore into a target.
//! - [`DrPair`]: a disaster-recovery pair of deployments ([`DrConfig`]): `init`, `status`, `failover`, `recover`,
//!   `switchback`, and `run` for the job of the current direction, all fenced by an epoch (docs/dr.md); [`dr::node`]
//!   switches a plain master/replica pair with guards.
//! - [`Error`] with [`ErrorKind`]: what a binding maps to an exception class or an error code.
//! - Re-exports: [`SentinelPool`] (the sentinel-aware pool) and [`ClusterClient`] (the cluster client).
//!
//! ```no_run
//! use ferry::{Conflict, Source, SyncConfig, SyncJob, Target};
//!
//! # async fn demo() -> Result<(), ferry::Error> {
//! let config = SyncConfig::new(
//!     Source::standalone("redis://127.0.0.1:6379"),
//!     Target::cluster("redis://127.0.0.1:7000"),
//! )
//! .with_conflict(Conflict::Rewrite)
//! .with_until_caught_up(true);
//! let job = SyncJob::new(config)?.start()?;
//! let mut events = job.events();
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("{}", serde_json::to_string(&event).unwrap());
//!     }
//! });
//! let status = job.wait().await?; // returns once caught up
//! println!("{} keys copied", status.keys_copied);
//!
//! let report = ferry::verify(
//!     &Source::standalone("redis://127.0.0.1:6379"),
//!     &Target::cluster("redis://127.0.0.1:7000"),
//!     ferry::VerifyOptions::default(),
//! )
//! .await?;
//! assert!(report.equal, "{report}");
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod dr;
mod error;
mod job;
mod metrics;
pub mod rdb;
pub mod verify;

pub use config::{
    redact_url, CheckpointConfig, ConfigFormat, Conflict, Endpoint, FilterConfig, Limits,
    LoadedConfig, MasterAuth, OnError, RunConfig, Secret, Source, SyncConfig, Target, TargetPolicy,
    TlsConfig,
};
pub use dr::{
    Deployment, Direction, DrConfig, DrEvent, DrEvents, DrHandle, DrPair, DrPhase, DrRunStatus,
    DrState, DrStatus, DrTiming, FailoverReport, RecoverChoice, RecoverOutcome, RecoverReport,
    ReplPosition, ShardPosition, Side, SwitchbackReport,
};
pub use error::{Error, ErrorKind};
pub use job::{
    Event, Events, JobHandle, Phase, PolicyKey, PolicyStatus, ShardStatus, Status, SyncJob,
};
pub use verify::{verify, Compare, Difference, DifferenceKind, VerifyOptions, VerifyReport};

/// The sentinel-aware connection pool (ferry-sentinel).
pub use ferry_sentinel::{SentinelPool, SentinelPoolOptions};
/// The Redis Cluster client (ferry-topology).
pub use ferry_topology::{ClusterClient, ClusterOptions};
