//! Sinks: where the commands go. A sink pipelines its writes within windows (by count and by bytes), so a slow
//! target slows the reading of the source instead of growing memory, and it handles every reply: error replies
//! are counted and handled by policy, none is ignored.

pub mod cluster;
pub mod standalone;

use std::time::Duration;

use bytes::Bytes;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::pipeline::convert::ConflictPolicy;
use crate::pipeline::Unit;

/// What to do when the target answers a write with an error (other than a key conflict of the full sync,
/// which the conflict policy decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop the job with the error.
    #[default]
    Stop,
    /// Log it, count it and go on.
    Log,
}

/// Windows, batches and policies of a sink.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// At most this many commands written and not yet answered.
    pub window_commands: usize,
    /// At most this many bytes of commands written and not yet answered.
    pub window_bytes: usize,
    /// A live-phase batch (one `MULTI`/`EXEC` with its checkpoint) is closed after this many commands...
    pub batch_commands: usize,
    /// ...or this many bytes (a source transaction is never split, so a batch can be bigger).
    pub batch_bytes: usize,
    /// Error replies other than conflicts.
    pub on_error: ErrorPolicy,
    /// Write checkpoints (and wrap live batches in `MULTI`/`EXEC`).
    pub checkpoint: bool,
    /// The tag of the checkpoint key, `ferry:checkpoint:{<tag>}`.
    pub checkpoint_tag: String,
    /// The database the checkpoint key lives in (a standalone target; a cluster has only 0).
    pub checkpoint_db: i64,
    /// Deadline for each reply of the target.
    pub reply_timeout: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            window_commands: 4096,
            window_bytes: 8 * 1024 * 1024,
            batch_commands: 512,
            batch_bytes: 4 * 1024 * 1024,
            on_error: ErrorPolicy::Stop,
            checkpoint: true,
            checkpoint_tag: "ferry".to_string(),
            checkpoint_db: 0,
            reply_timeout: Duration::from_secs(120),
        }
    }
}

/// What a sink did, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Keys restored during full syncs.
    pub keys_restored: u64,
    /// Keys of the full sync left as they were on the target (conflict policy `skip`).
    pub keys_skipped: u64,
    /// Commands of the live stream applied.
    pub commands_applied: u64,
    /// Commands not sent because the target already had them (checkpoint ahead of the stream).
    pub commands_already_applied: u64,
    /// Error replies of the target (all kinds).
    pub errors: u64,
    /// Bytes of commands written to the target.
    pub bytes_written: u64,
    /// The last error reply, for the status.
    pub last_error: Option<String>,
}

/// The target of a job: a standalone server or a cluster.
#[derive(Debug)]
pub enum Sink {
    /// One server.
    Standalone(Box<standalone::StandaloneSink>),
    /// A Redis Cluster.
    Cluster(cluster::ClusterSink),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Sink::Standalone($s) => $e,
            Sink::Cluster($s) => $e,
        }
    };
}

impl Sink {
    /// Fences off earlier connections of this job.
    pub async fn fence(&mut self) -> Result<(), Error> {
        each!(self, s => s.fence().await)
    }

    /// The checkpoint of each target node (one for a standalone target).
    pub async fn read_checkpoints(&mut self) -> Result<Vec<Option<Checkpoint>>, Error> {
        match self {
            Sink::Standalone(s) => Ok(vec![s.read_checkpoint().await?]),
            Sink::Cluster(c) => c.read_checkpoints().await,
        }
    }

    /// The RDB version the target loads (the lowest of its nodes).
    pub async fn rdb_version(&mut self) -> Result<u16, Error> {
        each!(self, s => s.rdb_version().await)
    }

    /// Starts a full sync (optionally emptying the target first).
    pub async fn begin_full_sync(
        &mut self,
        conflict: ConflictPolicy,
        flush: bool,
    ) -> Result<(), Error> {
        each!(self, s => s.begin_full_sync(conflict, flush).await)
    }

    /// Writes one `RESTORE`.
    pub async fn restore(&mut self, db: i64, key: Bytes, argv: &[Bytes]) -> Result<(), Error> {
        each!(self, s => s.restore(db, key, argv).await)
    }

    /// Whether small strings can be batched in `MSET`s (not on a cluster, where they would cross slots).
    pub fn batches_strings(&self) -> bool {
        matches!(self, Sink::Standalone(_))
    }

    /// Writes small strings in one `MSET`/`MSETNX` (standalone only; see [`Sink::batches_strings`]).
    pub async fn set_strings(&mut self, db: i64, pairs: Vec<(Bytes, Bytes)>) -> Result<(), Error> {
        match self {
            Sink::Standalone(s) => s.set_strings(db, pairs).await,
            Sink::Cluster(_) => Err(Error::Config(
                "string batches are not used with a cluster target".into(),
            )),
        }
    }

    /// Writes a command outside the live stream.
    pub async fn write_plain(&mut self, db: i64, argv: &[Bytes]) -> Result<(), Error> {
        each!(self, s => s.write_plain(db, argv).await)
    }

    /// Whether a key exists.
    pub async fn exists(&mut self, db: i64, key: &Bytes) -> Result<bool, Error> {
        each!(self, s => s.exists(db, key).await)
    }

    /// Counts a key left as it was on the target.
    pub fn count_skipped(&mut self) {
        each!(self, s => s.count_skipped())
    }

    /// Ends a full sync and stores its checkpoint.
    pub async fn finish_full_sync(&mut self, replid: &str, offset: u64) -> Result<(), Error> {
        each!(self, s => s.finish_full_sync(replid, offset).await)
    }

    /// Starts the live phase at `offset`; each node skips what its checkpoint (in `checkpoints`, one per node
    /// as [`Sink::read_checkpoints`] returned them) covers.
    pub fn start_stream(&mut self, replid: &str, offset: u64, checkpoints: &[Option<Checkpoint>]) {
        match self {
            Sink::Standalone(s) => {
                let skip = crate::checkpoint::skip_until(checkpoints.first(), offset);
                s.start_stream(replid, offset, skip)
            }
            Sink::Cluster(c) => c.start_stream(replid, offset, checkpoints),
        }
    }

    /// Records that the stream moved on without anything to apply.
    pub fn advance(&mut self, offset: u64) {
        each!(self, s => s.advance(offset))
    }

    /// Adds a unit of the live stream.
    pub async fn push(&mut self, unit: Unit) -> Result<(), Error> {
        each!(self, s => s.push(unit).await)
    }

    /// Writes the open batches.
    pub async fn flush_batch(&mut self) -> Result<(), Error> {
        each!(self, s => s.flush_batch().await)
    }

    /// Writes the open batches and waits for every reply.
    pub async fn sync(&mut self) -> Result<(), Error> {
        each!(self, s => s.sync().await)
    }

    /// What the sink did so far.
    pub fn counters(&self) -> SinkCounters {
        match self {
            Sink::Standalone(s) => s.counters().clone(),
            Sink::Cluster(c) => c.counters(),
        }
    }

    /// The highest offset every node acknowledged.
    pub fn committed_offset(&self) -> u64 {
        each!(self, s => s.committed_offset())
    }
}
