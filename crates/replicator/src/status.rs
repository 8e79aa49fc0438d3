//! The status of a running job: what it is doing, how far it is, how far behind.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::error::Error;
use crate::pipeline::convert::{PolicyKey, PolicyReport};

/// What the job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Connecting to the target and the source, PSYNC handshake.
    #[default]
    Handshake,
    /// Applying the RDB of a full resync.
    FullSync,
    /// Following the live command stream.
    Incremental,
    /// Waiting before a reconnect after an error.
    Reconnecting,
    /// Stopped.
    Stopped,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Handshake => "handshake",
            Phase::FullSync => "full sync",
            Phase::Incremental => "incremental",
            Phase::Reconnecting => "reconnecting",
            Phase::Stopped => "stopped",
        })
    }
}

/// A snapshot of a job's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// What the job is doing.
    pub phase: Phase,
    /// The source's replication id being followed.
    pub replid: String,
    /// Keys of the current full sync written so far.
    pub keys_done: u64,
    /// Keys of the current full sync announced by the RDB (sum of its `RESIZEDB` sizes), when it says.
    pub keys_expected: Option<u64>,
    /// Keys copied over the life of the job (all full syncs).
    pub keys_copied: u64,
    /// Keys of full syncs copied as element commands because they were bigger than the bound.
    pub keys_as_commands: u64,
    /// Keys of full syncs re-encoded for an older target.
    pub keys_reencoded: u64,
    /// Keys left as they were on the target (conflict policy `skip`).
    pub keys_skipped: u64,
    /// Keys of full copies left out by the filters (databases, key prefixes and patterns).
    pub keys_filtered: u64,
    /// A scan source's live phase: keys changed on the source (keyspace notifications) and not yet re-read
    /// and written to the target.
    pub keys_pending: u64,
    /// Commands of the live stream applied.
    pub commands_applied: u64,
    /// Commands not forwarded because of the filters.
    pub commands_filtered: u64,
    /// Commands whose keys only partly passed the filters (reported, not forwarded).
    pub commands_partial: u64,
    /// Bytes received from the source (RDB and stream).
    pub bytes_read: u64,
    /// Bytes of commands written to the target.
    pub bytes_written: u64,
    /// Bytes received from the source and waiting for the target (in memory and in the spool file).
    pub spooled_bytes: u64,
    /// Operations (keys or commands) per second over the last second.
    pub ops_per_sec: f64,
    /// The source offset received.
    pub source_offset: u64,
    /// The source offset the target has applied (and checkpointed).
    pub applied_offset: u64,
    /// The offset ferry last acknowledged to the source (`REPLCONF ACK`): what the target committed.
    pub acked_offset: u64,
    /// `REPLCONF ACK`s sent on the current link.
    pub acks_sent: u64,
    /// `source_offset - applied_offset`.
    pub lag_bytes: u64,
    /// How long the oldest received and not yet applied data has waited.
    pub lag_seconds: f64,
    /// Error replies of the target.
    pub errors: u64,
    /// Reconnects after errors.
    pub reconnects: u64,
    /// Full syncs done (a fallback from PSYNC counts too).
    pub full_syncs: u64,
    /// Keys deleted by the sweeps of redone full copies: written by an earlier copy of this job, no longer on
    /// the source (see `flush_target_on_resync` in docs/config.md).
    pub keys_swept: u64,
    /// Full copies redone over this job's earlier writes that deleted nothing, because the target held other
    /// keys before the job's first copy (or the source is a cluster): keys deleted on the source meanwhile may
    /// remain on the target.
    pub redo_unswept: u64,
    /// The last error, for humans.
    pub last_error: Option<String>,
    /// Keys the target policy left out because the target cannot hold them (since the last full sync; with
    /// checkpoints, read back from the target when a job continues, so keys of earlier processes count too).
    pub policy_keys_skipped: u64,
    /// Keys the target policy wrote with a loss (field expiries dropped).
    pub policy_keys_converted: u64,
    /// Live commands the target policy did not forward (unknown to the target, or on a skipped key).
    pub policy_commands_skipped: u64,
    /// Live commands the target policy rewrote with a loss.
    pub policy_commands_converted: u64,
    /// The skipped keys with what the target could not hold (the first 1000).
    pub policy_skipped: Vec<PolicyKey>,
    /// The converted keys with what was lost (the first 1000).
    pub policy_converted: Vec<PolicyKey>,
}

impl Status {
    /// Copies the counts and key lists of the target policy's report, when they changed.
    pub(crate) fn set_policy(&mut self, report: &PolicyReport) {
        let counts = (
            report.keys_skipped,
            report.keys_converted,
            report.commands_skipped,
            report.commands_converted,
        );
        if counts
            == (
                self.policy_keys_skipped,
                self.policy_keys_converted,
                self.policy_commands_skipped,
                self.policy_commands_converted,
            )
        {
            return;
        }
        self.policy_keys_skipped = report.keys_skipped;
        self.policy_keys_converted = report.keys_converted;
        self.policy_commands_skipped = report.commands_skipped;
        self.policy_commands_converted = report.commands_converted;
        self.policy_skipped.clone_from(&report.skipped);
        self.policy_converted.clone_from(&report.converted);
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase={}", self.phase)?;
        if self.phase == Phase::FullSync {
            match self.keys_expected {
                Some(n) => write!(f, " keys={}/{}", self.keys_done, n)?,
                None => write!(f, " keys={}", self.keys_done)?,
            }
        }
        write!(
            f,
            " copied={} applied={} ops/s={:.0} read={}B written={}B spooled={}B offset={} lag={}B/{:.1}s \
             errors={} full_syncs={} reconnects={}",
            self.keys_copied,
            self.commands_applied,
            self.ops_per_sec,
            self.bytes_read,
            self.bytes_written,
            self.spooled_bytes,
            self.applied_offset,
            self.lag_bytes,
            self.lag_seconds,
            self.errors,
            self.full_syncs,
            self.reconnects
        )?;
        if self.policy_keys_skipped + self.policy_keys_converted + self.policy_commands_skipped > 0
        {
            write!(
                f,
                " policy_skipped={} policy_converted={} policy_commands_skipped={} policy_commands_converted={}",
                self.policy_keys_skipped,
                self.policy_keys_converted,
                self.policy_commands_skipped,
                self.policy_commands_converted
            )?;
        }
        if self.keys_swept + self.redo_unswept > 0 {
            write!(
                f,
                " keys_swept={} redo_unswept={}",
                self.keys_swept, self.redo_unswept
            )?;
        }
        if let Some(e) = &self.last_error {
            write!(f, " last_error={e:?}")?;
        }
        Ok(())
    }
}

impl Phase {
    /// The phase of a job made of several streams (the shards of a cluster source), from theirs: `stopped`
    /// when none runs; else `full_sync` while any copies, `handshake` while any connects, `reconnecting` while
    /// any waits to reconnect, and `incremental` once every running stream follows its live stream.
    pub fn combine(phases: impl IntoIterator<Item = Phase>) -> Phase {
        let live: Vec<Phase> = phases
            .into_iter()
            .filter(|p| *p != Phase::Stopped)
            .collect();
        if live.is_empty() {
            return Phase::Stopped;
        }
        [Phase::FullSync, Phase::Handshake, Phase::Reconnecting]
            .into_iter()
            .find(|p| live.contains(p))
            .unwrap_or(Phase::Incremental)
    }
}

/// A shared view of a job's status, and the sender of its events; cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    inner: Arc<Mutex<Status>>,
    events: EventSink,
}

impl Default for StatusHandle {
    fn default() -> StatusHandle {
        StatusHandle {
            inner: Arc::default(),
            events: EventSink {
                tx: broadcast::channel(EVENT_CAPACITY).0,
                shard: None,
                announced: Arc::default(),
            },
        }
    }
}

/// Events a receiver may fall behind by before it misses the oldest.
const EVENT_CAPACITY: usize = 4096;

/// Where a stream's events go: the job's channel, labelled with the stream's shard.
#[derive(Debug, Clone)]
struct EventSink {
    tx: broadcast::Sender<JobEvent>,
    /// The shard of a cluster source this stream is (`None`: the job itself).
    shard: Option<String>,
    /// The phase last announced (the first one set is announced even when it is the default).
    announced: Arc<Mutex<Option<Phase>>>,
}

impl StatusHandle {
    /// A copy of the current status.
    pub fn snapshot(&self) -> Status {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A receiver of the job's events from now on (every shard's too). A receiver that falls behind by more
    /// than 4096 events misses the oldest; the job never waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.tx.subscribe()
    }

    /// The status of one shard of a cluster source: a status of its own, whose events go to this job's
    /// receivers labelled with `shard`.
    pub(crate) fn for_shard(&self, shard: &str) -> StatusHandle {
        StatusHandle {
            inner: Arc::default(),
            events: EventSink {
                tx: self.events.tx.clone(),
                shard: Some(shard.to_string()),
                announced: Arc::default(),
            },
        }
    }

    /// Changes the status.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.inner.lock() {
            f(&mut s);
        }
    }

    /// Enters `phase` (and changes the rest of the status with `f` at the same time); announces the phase
    /// when it is not the one announced last.
    pub(crate) fn set_phase(&self, phase: Phase, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.inner.lock() {
            s.phase = phase;
            f(&mut s);
            // Under the status lock: the events of one stream are sent in the order its phases changed.
            let mut announced = self
                .events
                .announced
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *announced != Some(phase) {
                *announced = Some(phase);
                self.emit(JobEventKind::Phase(phase));
            }
        }
    }

    /// Records `error` as the last error and announces it.
    pub(crate) fn error(&self, error: Error) {
        let error = Arc::new(error);
        self.update(|s| s.last_error = Some(error.to_string()));
        self.emit(JobEventKind::Error(error));
    }

    /// Sends an event (none listening is fine).
    pub(crate) fn emit(&self, kind: JobEventKind) {
        let _ = self.events.tx.send(JobEvent {
            shard: self.events.shard.clone(),
            kind,
        });
    }
}

/// Something that happened to a job, sent by the code that made it happen ([`StatusHandle::subscribe`],
/// [`crate::Replicator::events`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobEvent {
    /// The shard of a cluster source it happened to (its name, as in [`crate::ShardStatus::name`]); `None`
    /// for the job itself and for every other kind of source.
    pub shard: Option<String>,
    /// What happened.
    pub kind: JobEventKind,
}

/// What happened (see [`JobEvent`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum JobEventKind {
    /// The stream entered a phase. A cluster-source job announces its own `handshake` when it starts and
    /// `stopped` when it ends; its shards announce theirs ([`Phase::combine`] gives the job's from them).
    Phase(Phase),
    /// A full copy starts (the first one too), with why the stream could not continue from a checkpoint.
    FullResync {
        /// Why, for humans.
        reason: String,
    },
    /// A session ended with an error the job recovers from: it connects again after `delay`, from the
    /// target's checkpoint.
    Reconnecting {
        /// What ended the session.
        error: Arc<Error>,
        /// The pause before the next session.
        delay: Duration,
    },
    /// The source failed over and the stream continues on another node: the master the sentinels name now
    /// (a sentinel-managed source), or the node a shard of a cluster source is streamed from now (its
    /// promoted replica; or another replica with `prefer_replica`), `host:port`.
    SourceFailover {
        /// The node streamed from now.
        node: String,
    },
    /// The sentinel-managed target failed over: the job writes to its new master, `host:port`, from the
    /// checkpoint that master holds.
    TargetFailover {
        /// The master written to now.
        master: String,
    },
    /// A cluster target's masters changed between two sessions (a failover, a master added or removed): the
    /// job writes to these now (`host:port`), each from the checkpoint it holds.
    TargetTopologyChanged {
        /// The target's masters now.
        masters: Vec<String>,
    },
    /// The target refused a write that the error policy `log` skipped (the command and the target's reply).
    WriteRefused {
        /// `command: reply`.
        message: String,
    },
    /// An error: one the job retries without a new session (reading the source cluster's shards), or the
    /// error a shard's stream stopped with while the other shards go on. The error that ends the job is what
    /// [`crate::Replicator::run`] returns, not an event.
    Error(Arc<Error>),
}

/// Computes ops/s and lag in seconds from samples.
///
/// The lag in seconds is the age of the oldest data received and not yet applied: the time since the received
/// offset first reached what is applied now (from a short history of samples).
#[derive(Debug)]
pub(crate) struct Rates {
    last: Instant,
    last_ops: u64,
    history: std::collections::VecDeque<(u64, Instant)>,
}

impl Rates {
    pub(crate) fn new() -> Rates {
        Rates {
            last: Instant::now(),
            last_ops: 0,
            history: std::collections::VecDeque::new(),
        }
    }

    /// Updates `status` from the total ops so far and the offsets; rates change at most once a second.
    pub(crate) fn sample(
        &mut self,
        status: &mut Status,
        ops: u64,
        source_offset: u64,
        applied: u64,
    ) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last);
        if elapsed >= Duration::from_secs(1) {
            status.ops_per_sec = ops.saturating_sub(self.last_ops) as f64 / elapsed.as_secs_f64();
            self.last = now;
            self.last_ops = ops;
        }
        status.source_offset = source_offset;
        status.applied_offset = applied;
        status.lag_bytes = source_offset.saturating_sub(applied);
        if self.history.back().is_none_or(|&(o, _)| o < source_offset) {
            self.history.push_back((source_offset, now));
        }
        // Drop samples already applied, but keep the newest one at or below `applied`.
        while self.history.len() > 1 && self.history[1].0 <= applied {
            self.history.pop_front();
        }
        while self.history.len() > 4096 {
            self.history.pop_front();
        }
        status.lag_seconds = if status.lag_bytes == 0 {
            0.0
        } else {
            // The first sample beyond `applied` is the oldest unapplied data.
            self.history
                .iter()
                .find(|(o, _)| *o > applied)
                .map(|(_, t)| now.duration_since(*t).as_secs_f64())
                .unwrap_or(0.0)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_progress_of_full_sync() {
        let s = Status {
            phase: Phase::FullSync,
            keys_done: 5,
            keys_expected: Some(10),
            ..Default::default()
        };
        let line = s.to_string();
        assert!(line.starts_with("phase=full sync keys=5/10"), "{line}");
    }

    #[test]
    fn a_job_of_several_streams_is_live_only_when_every_running_stream_is() {
        use Phase::*;
        assert_eq!(Phase::combine([Incremental, FullSync, Handshake]), FullSync);
        assert_eq!(
            Phase::combine([Incremental, Reconnecting, Handshake]),
            Handshake
        );
        assert_eq!(Phase::combine([Incremental, Reconnecting]), Reconnecting);
        assert_eq!(
            Phase::combine([Incremental, Stopped, Incremental]),
            Incremental
        );
        assert_eq!(Phase::combine([Stopped, Stopped]), Stopped);
        assert_eq!(Phase::combine([]), Stopped);
    }

    #[test]
    fn a_phase_is_announced_once_when_entered_and_a_shard_labels_its_events() {
        let job = StatusHandle::default();
        let mut rx = job.subscribe();
        let shard = job.for_shard("s1");
        job.set_phase(Phase::Handshake, |_| {});
        job.set_phase(Phase::Handshake, |s| s.keys_done = 1);
        shard.set_phase(Phase::Handshake, |_| {});
        job.set_phase(Phase::FullSync, |_| {});
        let seen: Vec<(Option<String>, Phase)> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| match e.kind {
                JobEventKind::Phase(p) => Some((e.shard, p)),
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            [
                (None, Phase::Handshake),
                (Some("s1".to_string()), Phase::Handshake),
                (None, Phase::FullSync)
            ]
        );
        assert_eq!(job.snapshot().keys_done, 1);
        assert_eq!(shard.snapshot().phase, Phase::Handshake);
    }

    #[test]
    fn lag_is_zero_when_caught_up() {
        let mut rates = Rates::new();
        let mut s = Status::default();
        rates.sample(&mut s, 0, 100, 40);
        assert_eq!(s.lag_bytes, 60);
        rates.sample(&mut s, 0, 100, 100);
        assert_eq!((s.lag_bytes, s.lag_seconds), (0, 0.0));
        rates.sample(&mut s, 0, 200, 100);
        assert_eq!(s.lag_bytes, 100);
        assert!(s.lag_seconds >= 0.0);
    }
}
