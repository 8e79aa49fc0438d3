//! ferry: copies a Redis dataset from one deployment to another and keeps it in sync.
//!
//! WIP
pub mod config;
mod error;
mod job;
mod metrics;
pub mod rdb;
pub mod verify;
pub use config::*;
pub use error::{Error, ErrorKind};
pub use job::{Event, Events, JobHandle, Phase, ShardStatus, Status, SyncJob};
pub use verify::{verify, Compare, Difference, DifferenceKind, VerifyOptions, VerifyReport};
