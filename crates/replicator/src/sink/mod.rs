//! Sinks: where the commands go. A sink pipelines its writes within windows (by count and by bytes), so a slow
//! target slows the reading of the source instead of growing memory, and it handles every reply: error replies
//! are counted and handled by policy, none is ignored.
//!
//! The writers are small types without I/O, each accounting for the replies of what it sent through one
//! `Writer` trait: `restore::RestoreWriter` (the full sync), `chain::ChainWriter` (the live phase with
//! checkpoints: chained batch scripts, on a standalone server and on each cluster master alike) and
//! `unwrapped::UnwrappedWriter` (the live phase without checkpoints). [`standalone::StandaloneSink`] owns the
//! connection (`pipe::Pipe`) and drives them; [`cluster::ClusterSink`] routes to one per master.

pub mod chain;
pub mod cluster;
mod cross_slot;
mod pipe;
mod restore;
pub mod standalone;
mod strings;
mod unwrapped;

use std::time::Duration;

use bytes::Bytes;
use ferry_resp::Frame;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::pipeline::convert::{ConflictPolicy, PolicyKey, PolicyReport, TargetFormat};
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
    /// A live-phase batch (one script with its checkpoint) is closed after this many commands...
    pub batch_commands: usize,
    /// ...or this many bytes (a source transaction is never split, so a batch can be bigger).
    pub batch_bytes: usize,
    /// Error replies other than conflicts.
    pub on_error: ErrorPolicy,
    /// Write checkpoints (live batches go as chained batch scripts, see `chain`).
    pub checkpoint: bool,
    /// The tag of the checkpoint key, `ferry:checkpoint:{<tag>}`.
    pub checkpoint_tag: String,
    /// The database the checkpoint key lives in (a standalone target; a cluster has only 0).
    pub checkpoint_db: i64,
    /// Deadline for each reply of the target.
    pub reply_timeout: Duration,
    /// The fencing epoch written into every checkpoint (see [`crate::checkpoint`]); a job refuses a checkpoint
    /// of a newer epoch or a fence. 0 for a job outside a DR pair.
    pub epoch: u64,
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
            epoch: 0,
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

/// A writer of one phase: accounts for the reply to each command it sent, in order.
pub(crate) trait Writer {
    /// What the reply to a command must be (kept while the command is in flight).
    type Pending;

    /// Handles the reply to one command: counts it, and returns the error that ends the session (by the error
    /// policy) or that stops the chain.
    fn on_reply(
        &mut self,
        pending: Self::Pending,
        reply: Frame,
        counters: &mut SinkCounters,
    ) -> Result<(), Error>;
}

impl Writer for chain::ChainWriter {
    type Pending = chain::Pending;

    fn on_reply(
        &mut self,
        pending: chain::Pending,
        reply: Frame,
        counters: &mut SinkCounters,
    ) -> Result<(), Error> {
        chain::ChainWriter::on_reply(self, pending, reply, counters)
    }
}

/// Counts an error reply and builds the error (the command name only, never its arguments).
pub(crate) fn target_error(counters: &mut SinkCounters, command: &str, message: &[u8]) -> Error {
    chain::refused(
        counters,
        command,
        String::from_utf8_lossy(message).into_owned(),
    )
}

/// The target of a job: a standalone server or a cluster.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per job: its size does not matter
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

    /// The checkpoint of each target node (one for a standalone target; for a cluster, see
    /// [`cluster::ClusterSink::read_checkpoints`]). [`crate::checkpoint::resume_from`] gives the resume point.
    pub async fn read_checkpoints(&mut self) -> Result<Vec<Option<Checkpoint>>, Error> {
        match self {
            Sink::Standalone(s) => Ok(vec![s.read_checkpoint().await?]),
            Sink::Cluster(c) => c.read_checkpoints().await,
        }
    }

    /// What the target loads and knows (for a cluster, what every master does).
    pub async fn target_format(&mut self) -> Result<TargetFormat, Error> {
        each!(self, s => s.target_format().await)
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

    /// Gathers a small plain string of the full copy for an `MSET`/`MSETNX` (grouped by database on a
    /// standalone target, by slot on a cluster); [`Sink::flush_strings`] or the end of the full sync writes what
    /// is left.
    pub async fn push_string(&mut self, db: i64, key: &[u8], value: &[u8]) -> Result<(), Error> {
        each!(self, s => s.push_string(db, key, value).await)
    }

    /// [`Sink::push_string`] without the await: gathers, and returns true when [`Sink::send_gathered`] must
    /// run before the next string.
    pub(crate) fn gather_string(
        &mut self,
        db: i64,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, Error> {
        match self {
            Sink::Standalone(s) => Ok(s.gather_string(db, key, value)),
            Sink::Cluster(s) => s.gather_string(db, key, value),
        }
    }

    /// Sends the groups of small strings [`Sink::gather_string`] completed.
    pub(crate) async fn send_gathered(&mut self) -> Result<(), Error> {
        each!(self, s => s.send_gathered().await)
    }

    /// Writes the small strings gathered by [`Sink::push_string`].
    pub async fn flush_strings(&mut self) -> Result<(), Error> {
        each!(self, s => s.flush_strings().await)
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

    /// Ends a full sync, storing the keys the target policy skipped or converted in the copy (`report`'s new
    /// keys) before its checkpoint.
    pub async fn finish_full_sync_reporting(
        &mut self,
        replid: &str,
        offset: u64,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        let entries = report.take_pending();
        each!(self, s => s.finish_full_sync_reporting(replid, offset, &entries).await)
    }

    /// The report stored in the target: the keys the target policy skipped and converted since the current
    /// copy began, as committed (for a cluster, every master's).
    pub async fn read_report(&mut self) -> Result<(Vec<PolicyKey>, Vec<PolicyKey>), Error> {
        each!(self, s => s.read_report().await)
    }

    /// Starts the live phase at stream `offset` of `replid`; each node skips what its checkpoint (in
    /// `checkpoints`, as [`Sink::read_checkpoints`] returned them; empty right after a full sync) covers.
    pub async fn start_stream(
        &mut self,
        replid: &str,
        offset: u64,
        checkpoints: &[Option<Checkpoint>],
    ) -> Result<(), Error> {
        match self {
            Sink::Standalone(s) => {
                s.start_stream(replid, offset, checkpoints.first().and_then(Option::as_ref))
                    .await
            }
            Sink::Cluster(c) => c.start_stream(replid, offset, checkpoints).await,
        }
    }

    /// Records that the stream moved to `offset` (the source stream's database there is `stream_db`) without
    /// anything to apply.
    pub fn advance(&mut self, offset: u64, stream_db: i64) {
        each!(self, s => s.advance(offset, stream_db))
    }

    /// Adds a unit of the live stream.
    pub async fn push(&mut self, unit: Unit) -> Result<(), Error> {
        each!(self, s => s.push(unit).await)
    }

    /// Writes the open batches and waits for every reply.
    pub async fn sync(&mut self) -> Result<(), Error> {
        each!(self, s => s.sync().await)
    }

    /// Waits for the reply to everything written (a copy without a live stream: an RDB file, a scan).
    pub async fn drain(&mut self) -> Result<(), Error> {
        match self {
            Sink::Standalone(s) => s.drain().await,
            Sink::Cluster(c) => c.drain().await,
        }
    }

    /// Deletes the checkpoint keys this sink wrote (a cluster target's per-master keys; a standalone sink
    /// with checkpoints off wrote none): a copy without a replication stream leaves none behind.
    pub async fn delete_own_checkpoints(&mut self) -> Result<(), Error> {
        match self {
            Sink::Standalone(_) => Ok(()),
            Sink::Cluster(c) => c.delete_own_checkpoints().await,
        }
    }

    /// Every server written to: the one of a standalone target, each master of a cluster.
    pub(crate) fn servers(&mut self) -> Vec<&mut standalone::StandaloneSink> {
        match self {
            Sink::Standalone(s) => vec![&mut **s],
            Sink::Cluster(c) => c.nodes_mut().iter_mut().collect(),
        }
    }

    /// The server that holds one of ferry's own keys (a standalone target's checkpoint database; the master of
    /// the key's slot).
    fn server_of(&mut self, key: &str) -> &mut standalone::StandaloneSink {
        match self {
            Sink::Standalone(s) => s,
            Sink::Cluster(c) => c.node_for(key.as_bytes()),
        }
    }

    /// The value of one of ferry's own keys.
    pub(crate) async fn state_get(&mut self, key: &str) -> Result<Option<Bytes>, Error> {
        match self.server_of(key).state_call(&["GET", key]).await? {
            Frame::Bulk(v) => Ok(Some(v)),
            f if f.is_null() => Ok(None),
            other => Err(Error::Protocol(format!("GET {key} returned {other:?}"))),
        }
    }

    /// Sets one of ferry's own keys.
    pub(crate) async fn state_set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.server_of(key)
            .state_call(&["SET", key, value])
            .await
            .map(drop)
    }

    /// Sets one of ferry's own keys unless it exists.
    pub(crate) async fn state_set_nx(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.server_of(key)
            .state_call(&["SET", key, value, "NX"])
            .await
            .map(drop)
    }

    /// What the sink did so far.
    pub fn counters(&self) -> SinkCounters {
        match self {
            Sink::Standalone(s) => s.counters(),
            Sink::Cluster(c) => c.counters(),
        }
    }

    /// The highest offset every node acknowledged.
    pub fn committed_offset(&self) -> u64 {
        each!(self, s => s.committed_offset())
    }
}
