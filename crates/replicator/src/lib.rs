//! ferry-replicator: copies a Redis dataset and keeps a target in sync with it, the way a replica does.
//!
//! The job connects to the source as a replica (`PSYNC`), streams the RDB of a full resync through
//! ferry-rdb's parser straight into `RESTORE`s on the target, then forwards the live command stream, with
//! source `MULTI`/`EXEC` groups kept as groups. The source's replication id, offset and selected database are
//! stored in the target by the same batch script as the writes they cover, each batch chained to the one before
//! (the batch chain, `sink/chain.rs`), so a restarted job continues with `PSYNC` from exactly what the target holds: no write
//! lost, none applied twice.
//!
//! - [`Source`]: the PSYNC handshake and the replication stream with byte-exact offsets ([`StreamParser`]). The
//!   source link runs as a task of its own: it reads at network speed into a bounded spool (memory, then a local
//!   file: [`SpoolOptions`]) so a slow target never makes the source drop ferry at its
//!   `client-output-buffer-limit replica`, and it sends `REPLCONF ACK` every second with the offset the target
//!   has committed, so `WAIT` on the source means the target holds the write.
//! - sources without a replication stream ([`Config::source_kind`], [`SourceKind`]): an RDB file, restored
//!   through the same full-copy code as the RDB of a full resync, after which the job ends; and a scan
//!   ([`ScanOptions`]: `SCAN` + `DUMP`, then keyspace notifications) for servers that refuse `PSYNC`, with the
//!   limits `source/scan.rs` states.
//! - the pipeline ([`FilterConfig`], [`DbMap`]): filters, the database map, conversion of RDB values into commands, and the target policy
//!   ([`TargetPolicy`], [`Config::target_policy`]): what the target cannot hold (hash field expiries before
//!   Redis 7.4 / Valkey 9, a module type, an unknown command) stops the job naming the key, is skipped or is
//!   converted, and the status lists those keys.
//! - the sinks ([`SinkOptions`]): the standalone target with pipelined, windowed writes, and the cluster target (one sink per master,
//!   commands routed by slot, each master's batch and checkpoint applied atomically by one script).
//! - sentinel-managed sources and targets ([`Config::source_sentinel`], [`Config::target_sentinel`]): each
//!   session resolves the master through the sentinels and ends when a failover of it starts.
//! - a Redis Cluster source ([`Config::source_cluster`], [`cluster_source`]): one stream per shard in one job,
//!   each with its own checkpoint, following failovers of the shards.
//! - [`checkpoint`], [`status`] (and the job's events, [`Replicator::events`]), [`Error`].
//!
//! ```no_run
//! use ferry_replicator::{Config, Replicator};
//! use ferry_resp::ConnectOptions;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), ferry_replicator::Error> {
//! let source = ConnectOptions::from_url("redis://127.0.0.1:6379")?;
//! let target = ConnectOptions::from_url("redis://127.0.0.1:6380")?;
//! let job = Replicator::new(Config::new(source, target))?;
//! let status = job.status();
//! let shutdown = CancellationToken::new();
//! tokio::spawn({
//!     let shutdown = shutdown.clone();
//!     async move {
//!         tokio::signal::ctrl_c().await.ok();
//!         shutdown.cancel();
//!     }
//! });
//! job.run(shutdown).await?;
//! println!("{}", status.snapshot());
//! # Ok(())
//! # }
//! ```

mod backoff;
pub mod checkpoint;
pub mod cluster_source;
mod error;
mod fullsync;
mod gate;
mod job;
mod pipeline;
mod redo;
mod sentinel;
mod sessions;
mod shard_flush;
mod sink;
mod source;
pub mod status;

pub use cluster_source::{ClusterSource, ShardStatus, ShardsView};
pub use error::{Error, KeyDisplay};
pub use job::{Config, Replicator, SourceKind};
pub use pipeline::convert::{
    ConflictPolicy, Loss, PolicyKey, PolicyReport, ServerFamily, TargetFormat, TargetPolicy,
};
pub use pipeline::dbmap::DbMap;
pub use pipeline::filter::{is_reserved_key, Filter, FilterConfig, RESERVED_KEY_PREFIXES};
pub use pipeline::{Command, Unit};
pub use sink::cluster::tag_for_node;
pub use sink::{ErrorPolicy, SinkOptions};
pub use source::aof::AofOptions;
pub use source::psync::HandshakeOptions;
pub use source::scan::ScanOptions;
pub use source::{Resume, Source, SourceOptions, SpoolOptions, Start, StreamEvent, StreamParser};
pub use status::{JobEvent, JobEventKind, Phase, Status, StatusHandle};

/// What the benches in `benches/` measure inside the crate; not API.
#[doc(hidden)]
pub mod bench {
    pub use crate::pipeline::convert::{fit_command, fit_command_keyed};
    pub use crate::sink::chain::script_text;
}
