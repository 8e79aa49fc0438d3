//! A sync job: [`SyncJob`] checks a [`SyncConfig`], [`SyncJob::start`] runs it on the current tokio runtime and
//! gives a [`JobHandle`] with the status, the events, `stop` and `wait`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Endpoint, Source, SyncConfig};
use crate::error::{Error, ErrorKind};
use crate::metrics::JobMetrics;
use crate::verify::{VerifyOptions, VerifyReport};

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Connecting, PSYNC handshake.
    #[default]
    Handshake,
    /// Applying the full copy.
    FullSync,
    /// Following the live change stream.
    Incremental,
    /// Waiting to reconnect after a broken link.
    Reconnecting,
    /// The target has caught up with the source after the full copy: as an event, the moment it happened (a live
    /// job then goes on in `incremental`); as the phase of a status, the job ended because of it
    /// (`until_caught_up`).
    CaughtUp,
    /// Stopped.
    Stopped,
}

impl Phase {
    /// The serde name (`handshake`, `full_sync`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FullSync => "full_sync",
            Phase::Incremental => "incremental",
            Phase::Reconnecting => "reconnecting",
            Phase::CaughtUp => "caught_up",
            Phase::Stopped => "stopped",
        }
    }

    /// Every phase, for gauges.
    pub const ALL: [Phase; 6] = [
        Phase::Handshake,
        Phase::FullSync,
        Phase::Incremental,
        Phase::Reconnecting,
        Phase::CaughtUp,
        Phase::Stopped,
    ];

    fn from_replicator(p: ferry_replicator::Phase) -> Phase {
        match p {
            ferry_replicator::Phase::Handshake => Phase::Handshake,
            ferry_replicator::Phase::FullSync => Phase::FullSync,
            ferry_replicator::Phase::Incremental => Phase::Incremental,
            ferry_replicator::Phase::Reconnecting => Phase::Reconnecting,
            ferry_replicator::Phase::Stopped => Phase::Stopped,
            #[allow(unreachable_patterns)]
            _ => Phase::Incremental,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replication stream of a job (one per source shard; a standalone source has one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The stream's name: for a shard of a cluster source, the shard's name (the node id of its first master,
    /// kept across failovers and restarts; the tag of its checkpoints is `<checkpoint tag>:<name>`); for other
    /// sources, the source's `host:port`.
    pub name: String,
    /// The source node streamed from now, `host:port`.
    pub source: String,
    /// What this stream is doing.
    pub phase: Phase,
    /// The source's replication id.
    pub replid: String,
    /// The source offset received.
    pub source_offset: u64,
    /// The source offset the target has applied and checkpointed.
    pub applied_offset: u64,
    /// Keys copied by this stream's full copies.
    pub keys_copied: u64,
    /// Live commands applied.
    pub commands_applied: u64,
    /// `source_offset - applied_offset`.
    pub lag_bytes: u64,
    /// Age of the oldest received and not yet applied data, in milliseconds.
    pub lag_ms: u64,
    /// Full copies of this stream (a fallback from PSYNC counts too).
    pub full_syncs: u64,
    /// Reconnects of this stream after broken links and failovers.
    pub reconnects: u64,
    /// The last error of this stream.
    pub last_error: Option<String>,
    /// The shard is gone from the source cluster and its stream was stopped.
    pub retired: bool,
}

/// A snapshot of a job's status (serde: what `--status-addr` serves).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// What the job is doing.
    pub phase: Phase,
    /// Keys copied over the life of the job (all full copies).
    pub keys_copied: u64,
    /// Keys of the current full copy done so far.
    pub keys_done: u64,
    /// Keys the current full copy announced (the RDB's `RESIZEDB` sums), when known.
    pub keys_expected: Option<u64>,
    /// Keys left as they were on the target (conflict policy `skip`).
    pub keys_skipped: u64,
    /// Keys of full copies left out by the filters.
    pub keys_filtered: u64,
    /// A scan source's live phase: keys the source's notifications named that are not yet read again and
    /// written (0: the target has every change heard so far).
    pub keys_pending: u64,
    /// A scan source: the comparison of source and target run at the end of the copy (`None` until it
    /// ended, and for other sources). While notifications are followed the source moves, so differing keys
    /// are checked again after a second before they count.
    pub verify: Option<VerifyReport>,
    /// Live commands applied (for a scan source: keys read again and written after a notification).
    pub commands_applied: u64,
    /// Live commands not forwarded because of the filters.
    pub commands_filtered: u64,
    /// Bytes received from the source (RDB and stream).
    pub bytes_read: u64,
    /// Bytes of commands written to the target.
    pub bytes_written: u64,
    /// Keys (full copy) or commands (live) per second, over the last second.
    pub ops_per_sec: f64,
    /// Bytes received and not yet applied (sum over shards).
    pub lag_bytes: u64,
    /// Age of the oldest received and not yet applied data, in milliseconds (max over shards).
    pub lag_ms: u64,
    /// Full copies done (a fallback from PSYNC counts too).
    pub full_syncs: u64,
    /// Keys deleted by redone full copies: written by an earlier copy of this job into a target it owns, no
    /// longer on the source (`flush_target_on_resync` in docs/config.md).
    #[serde(default)]
    pub keys_swept: u64,
    /// Full copies redone over this job's earlier writes that deleted nothing, because the target held keys
    /// of the job's databases and filters before its first copy: keys deleted on the source meanwhile may
    /// remain (`ferry verify` shows them).
    #[serde(default)]
    pub redo_unswept: u64,
    /// Reconnects after broken links.
    pub reconnects: u64,
    /// Error replies of the target.
    pub errors: u64,
    /// Per-shard detail.
    pub shards: Vec<ShardStatus>,
    /// What the target policy (`target_policy = "skip"` or `"convert"`) left out of the target or wrote with a
    /// loss, since the job's full copy began (with checkpoints, across restarts).
    #[serde(default)]
    pub policy: PolicyStatus,
    /// The last error, for humans (no secrets).
    pub last_error: Option<String>,
    /// Every stream is live and the target has applied all that ferry received (no lag in bytes; for a scan
    /// source, no changed key waiting to be read again): what RedisShake's status calls `consistent`, the usual
    /// test before a cut-over. It says nothing of what the source has not sent yet; a source that keeps writing
    /// makes it flicker.
    #[serde(default)]
    pub consistent: bool,
}

/// The keys and commands the target policy skipped or converted (see [`Status::policy`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyStatus {
    /// Keys left out of the target.
    pub keys_skipped: u64,
    /// Keys written with a loss (hash field expiries dropped).
    pub keys_converted: u64,
    /// Live commands not forwarded (a command the target does not know, or one on a skipped key).
    pub commands_skipped: u64,
    /// Live commands rewritten with a loss.
    pub commands_converted: u64,
    /// The skipped keys (the first 1000).
    pub skipped: Vec<PolicyKey>,
    /// The converted keys (the first 1000).
    pub converted: Vec<PolicyKey>,
}

/// A key the target policy skipped or converted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyKey {
    /// The source database.
    pub db: i64,
    /// The key as `verify` shows keys: in double quotes, bytes other than printable ASCII as `\xNN`.
    pub key: String,
    /// What the target cannot hold, for humans (`hash field expiries (2 field(s))`): dropped for a converted key,
    /// the reason for a skipped one.
    pub loss: String,
}

impl PolicyStatus {
    fn from_replicator(r: &ferry_replicator::Status) -> PolicyStatus {
        let keys = |list: &[ferry_replicator::PolicyKey]| {
            list.iter()
                .map(|k| PolicyKey {
                    db: k.db,
                    key: crate::verify::show_key(&k.key),
                    loss: k.loss.to_string(),
                })
                .collect()
        };
        PolicyStatus {
            keys_skipped: r.policy_keys_skipped,
            keys_converted: r.policy_keys_converted,
            commands_skipped: r.policy_commands_skipped,
            commands_converted: r.policy_commands_converted,
            skipped: keys(&r.policy_skipped),
            converted: keys(&r.policy_converted),
        }
    }
}

impl Status {
    /// One line for logs and terminals.
    pub fn line(&self) -> String {
        let mut s = format!("phase={}", self.phase);
        if self.phase == Phase::FullSync {
            match self.keys_expected {
                Some(n) => s.push_str(&format!(" keys={}/{n}", self.keys_done)),
                None => s.push_str(&format!(" keys={}", self.keys_done)),
            }
        }
        s.push_str(&format!(
            " copied={} applied={} ops/s={:.0} read={}B written={}B lag={}B/{}ms full_syncs={} reconnects={} errors={}",
            self.keys_copied,
            self.commands_applied,
            self.ops_per_sec,
            self.bytes_read,
            self.bytes_written,
            self.lag_bytes,
            self.lag_ms,
            self.full_syncs,
            self.reconnects,
            self.errors
        ));
        if self.keys_pending > 0 {
            s.push_str(&format!(" pending_keys={}", self.keys_pending));
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!(" last_error={e:?}"));
        }
        s
    }
}

/// Something that happened to a job (serde: tagged by `type`, the variant's name in snake case), sent by the
/// code that made it happen, in the order it happened (docs/events.md lists them all).
///
/// A job's `phase` events are the phases of the job as a whole: for a cluster source, the phase
/// [`ferry_replicator::Phase::combine`] gives from its shards' (`full_sync` while any shard copies, then
/// `handshake`, `reconnecting` while any shard is in them, `incremental` once every running shard follows its live
/// stream); each shard's own phases come as `shard_phase`. The last phase event is the job's final phase
/// (`stopped`, or `caught_up` for a job that ended because it caught up); a job that failed then sends its
/// `error`, the last event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The job entered a phase.
    Phase {
        /// The new phase.
        phase: Phase,
    },
    /// A shard of a cluster source entered a phase.
    ShardPhase {
        /// The shard's name ([`ShardStatus::name`]).
        shard: String,
        /// The new phase.
        phase: Phase,
    },
    /// A full copy starts: the first one, or a redo because the source could not continue from the target's
    /// checkpoint (the reason says which).
    FullResync {
        /// The shard of a cluster source that copies; `None` for other sources.
        shard: Option<String>,
        /// Why, for humans.
        reason: String,
    },
    /// A session ended with an error the job recovers from (the `error` event just before says which): it
    /// connects again after `delay_ms`, from the target's checkpoint.
    Reconnecting {
        /// The shard of a cluster source that reconnects; `None` for other sources.
        shard: Option<String>,
        /// The pause before the next attempt, in milliseconds.
        delay_ms: u64,
    },
    /// The sentinel-managed source failed over and the job followed its new master.
    FailoverFollowed {
        /// The new master, `host:port`.
        new_master: String,
    },
    /// A shard of a cluster source failed over (`CLUSTER FAILOVER`, a master replaced by its replica) and its
    /// stream continues on another node: the promoted replica (or, with `prefer_replica`, another replica).
    ShardFailoverFollowed {
        /// The shard's name ([`ShardStatus::name`]).
        shard: String,
        /// The node streamed from now, `host:port`.
        node: String,
    },
    /// The sentinel-managed target failed over: the job writes to its new master, from the checkpoint that
    /// master holds.
    TargetFailoverFollowed {
        /// The shard of a cluster source whose stream followed it; `None` for other sources.
        shard: Option<String>,
        /// The target's new master, `host:port`.
        new_master: String,
    },
    /// A cluster target's masters changed (a failover, a master added or removed): the job writes to these.
    TargetTopologyChanged {
        /// The shard of a cluster source whose stream saw it; `None` for other sources.
        shard: Option<String>,
        /// The target's masters now, `host:port`.
        masters: Vec<String>,
    },
    /// An error: a broken link the job recovers from, a write the target refused that the error policy `log`
    /// skipped, a shard of a cluster source that stopped while the others go on, or the one that ended the job.
    /// An error of a shard names it in its message (`source shard <name>: ...`).
    Error {
        /// Its kind.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
}

/// A job's events. A receiver that falls behind skips the oldest; the job never waits for it.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    /// The next event; `None` when the job has ended and every event was received.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// A checked job, not started yet.
#[derive(Debug)]
pub struct SyncJob {
    config: SyncConfig,
}

impl SyncJob {
    /// Checks the configuration (without connecting).
    pub fn new(config: SyncConfig) -> Result<SyncJob, Error> {
        config.validate()?;
        Ok(SyncJob { config })
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Starts the job on the current tokio runtime (panics outside one, as `tokio::spawn` does). Kinds of
    /// source or target that are not supported yet fail here with [`ErrorKind::Config`].
    pub fn start(self) -> Result<JobHandle, Error> {
        let config = self.config;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("SyncJob::start needs a tokio runtime"))?;
        if let Some(note) = config.selection()?.note {
            tracing::info!("{note}");
        }
        let source = match &config.source {
            Source::Standalone(e) => e.clone(),
            // The file's path names the stream in the status; the replicator reads the file.
            Source::RdbFile { path } | Source::AofFile { path, .. } => {
                Endpoint::new(path.display().to_string())
            }
            Source::Scan { endpoint, .. } => endpoint.clone(),
            // The first sentinel names the stream in the status; the replicator resolves the master.
            Source::Sentinel { sentinels, .. } => sentinels.first().cloned().ok_or_else(|| {
                Error::config("source: a sentinel group needs at least one sentinel")
            })?,
            // The first seed names the job in the metrics; the replicator discovers the shards.
            Source::Cluster { seeds, .. } => seeds
                .first()
                .cloned()
                .ok_or_else(|| Error::config("source: a cluster needs at least one seed"))?,
        };
        let sentinel = match &config.source {
            Source::Sentinel {
                sentinels,
                master,
                master_auth,
            } => Some(crate::config::sentinel_pool_options(
                sentinels,
                master,
                master_auth,
            )?),
            _ => None,
        };
        let replicator = ferry_replicator::Replicator::new(config.to_replicator(&source)?)?;
        // Subscribed before the job runs: every event it sends reaches the monitor.
        let replicator_events = replicator.events();
        let (done_tx, done_rx) = watch::channel(None);
        let cluster = matches!(config.source, Source::Cluster { .. });
        let shared = Arc::new(Shared {
            status: replicator.status(),
            shards: cluster.then(|| replicator.shards()),
            cancel: CancellationToken::new(),
            events: EventChannel::new(256),
            done: done_rx,
            caught_up: Mutex::new(false),
            until_caught_up: config.until_caught_up,
            shard_name: source.host_port(),
            verify: Mutex::new(None),
        });
        let metrics = JobMetrics::new(&config.checkpoint.tag, &shared.shard_name);
        let run_cancel = shared.cancel.clone();
        let run = runtime.spawn(async move { replicator.run(run_cancel).await });
        let monitor = Monitor {
            shared: shared.clone(),
            metrics,
            until_caught_up: config.until_caught_up,
            source,
            scan: matches!(config.source, Source::Scan { .. }),
            cluster,
            sentinel,
            copy_check: CopyCheck::of(&config),
            events: replicator_events,
            shard_phases: std::collections::HashMap::new(),
            last_phase: None,
            last_error: None,
        };
        runtime.spawn(monitor.run(run, done_tx));
        Ok(JobHandle { shared })
    }
}

/// What the handle, the monitor and the job share.
#[derive(Debug)]
struct Shared {
    status: ferry_replicator::StatusHandle,
    /// A cluster source: its shards.
    shards: Option<ferry_replicator::ShardsView>,
    cancel: CancellationToken,
    /// Closed once the job has ended: receivers then see the end after the last event.
    events: EventChannel<Event>,
    /// `Some` once the job has ended: its final status or its error (kind and message).
    done: watch::Receiver<Option<Result<Status, (ErrorKind, String)>>>,
    caught_up: Mutex<bool>,
    /// The job ends when it catches up.
    until_caught_up: bool,
    shard_name: String,
    /// The verify run at the end of a scan source's copy, once it ended.
    verify: Mutex<Option<VerifyReport>>,
}

/// The events of a job or of a DR run: a broadcast channel whose first receiver, made with it, has the events
/// since the start (the latest `capacity`), handed to the first [`EventChannel::receiver`] call.
#[derive(Debug)]
pub(crate) struct EventChannel<T> {
    /// `None` once closed.
    tx: Mutex<Option<broadcast::Sender<T>>>,
    first: Mutex<Option<broadcast::Receiver<T>>>,
}

impl<T: Clone> EventChannel<T> {
    pub(crate) fn new(capacity: usize) -> EventChannel<T> {
        let (tx, first) = broadcast::channel(capacity);
        EventChannel {
            tx: Mutex::new(Some(tx)),
            first: Mutex::new(Some(first)),
        }
    }

    /// Sends an event to the receivers there are (none is fine).
    pub(crate) fn send(&self, event: T) {
        if let Ok(guard) = self.tx.lock() {
            if let Some(tx) = guard.as_ref() {
                let _ = tx.send(event);
            }
        }
    }

    /// The first receiver, then new ones; after [`EventChannel::close`], one that is closed at once (past the
    /// events still in the channel, for the first).
    pub(crate) fn receiver(&self) -> broadcast::Receiver<T> {
        if let Some(rx) = self.first.lock().ok().and_then(|mut f| f.take()) {
            return rx;
        }
        match self
            .tx
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|tx| tx.subscribe()))
        {
            Some(rx) => rx,
            None => broadcast::channel(1).1,
        }
    }

    /// Ends the stream: receivers see the end after the last event.
    pub(crate) fn close(&self) {
        if let Ok(mut guard) = self.tx.lock() {
            guard.take();
        }
    }
}

impl Shared {
    /// Sends an event to the receivers there are (none is fine).
    fn emit(&self, event: Event) {
        self.events.send(event);
    }

    /// Ends the event stream.
    fn close_events(&self) {
        self.events.close();
    }

    fn snapshot(&self) -> Status {
        let r = self.status.snapshot();
        let caught_up = self.caught_up.lock().map(|c| *c).unwrap_or(false);
        let mut phase = Phase::from_replicator(r.phase);
        // A job that ended because it caught up says so; a live job that caught up once stays `incremental`
        // (its lag tells how far behind it is now).
        if caught_up && self.until_caught_up && phase == Phase::Stopped {
            phase = Phase::CaughtUp;
        }
        let lag_ms = (r.lag_seconds * 1000.0).round() as u64;
        let mut status = Status {
            phase,
            keys_copied: r.keys_copied,
            keys_done: r.keys_done,
            keys_expected: r.keys_expected,
            keys_skipped: r.keys_skipped,
            commands_applied: r.commands_applied,
            commands_filtered: r.commands_filtered,
            bytes_read: r.bytes_read,
            bytes_written: r.bytes_written,
            ops_per_sec: r.ops_per_sec,
            lag_bytes: r.lag_bytes,
            lag_ms,
            full_syncs: r.full_syncs,
            keys_swept: r.keys_swept,
            redo_unswept: r.redo_unswept,
            reconnects: r.reconnects,
            errors: r.errors,
            keys_filtered: r.keys_filtered,
            keys_pending: r.keys_pending,
            verify: self.verify.lock().ok().and_then(|v| v.clone()),
            shards: match &self.shards {
                Some(view) => view.snapshot().iter().map(shard_status).collect(),
                None => vec![ShardStatus {
                    name: self.shard_name.clone(),
                    source: self.shard_name.clone(),
                    phase,
                    replid: r.replid.clone(),
                    source_offset: r.source_offset,
                    applied_offset: r.applied_offset,
                    keys_copied: r.keys_copied,
                    commands_applied: r.commands_applied,
                    lag_bytes: r.lag_bytes,
                    lag_ms,
                    full_syncs: r.full_syncs,
                    reconnects: r.reconnects,
                    last_error: r.last_error.clone(),
                    retired: false,
                }],
            },
            policy: PolicyStatus::from_replicator(&r),
            last_error: r.last_error.clone(),
            consistent: false,
        };
        status.consistent = status.phase == Phase::Incremental
            && status.lag_bytes == 0
            && status.keys_pending == 0
            && status
                .shards
                .iter()
                .all(|s| s.retired || (s.phase == Phase::Incremental && s.lag_bytes == 0));
        status
    }
}

/// The façade's view of one shard of a cluster source.
fn shard_status(s: &ferry_replicator::ShardStatus) -> ShardStatus {
    let r = &s.status;
    ShardStatus {
        name: s.name.clone(),
        source: s.source.clone(),
        phase: Phase::from_replicator(r.phase),
        replid: r.replid.clone(),
        source_offset: r.source_offset,
        applied_offset: r.applied_offset,
        keys_copied: r.keys_copied,
        commands_applied: r.commands_applied,
        lag_bytes: r.lag_bytes,
        lag_ms: (r.lag_seconds * 1000.0).round() as u64,
        full_syncs: r.full_syncs,
        reconnects: r.reconnects,
        last_error: r.last_error.clone(),
        retired: s.retired,
    }
}

/// A running (or ended) job. Cheap to clone; every clone sees the same job.
#[derive(Debug, Clone)]
pub struct JobHandle {
    shared: Arc<Shared>,
}

impl JobHandle {
    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        self.shared.snapshot()
    }

    /// The replicator's own status (counts the façade's [`Status`] does not show).
    pub(crate) fn replicator_status(&self) -> ferry_replicator::Status {
        self.shared.status.snapshot()
    }

    /// A receiver of the job's events: the first call gets every event since [`SyncJob::start`] (the latest 256
    /// when more came before it), later calls the events from then on.
    pub fn events(&self) -> Events {
        Events {
            rx: self.shared.events.receiver(),
        }
    }

    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        self.shared.done.borrow().is_some()
    }

    /// Asks the job to stop without waiting: it writes what it has received, commits the checkpoint and ends.
    pub fn request_stop(&self) {
        self.shared.cancel.cancel();
    }

    /// Stops the job: what was received is written and committed (checkpoint), then the final status is
    /// returned. Stopping an ended job returns how it ended.
    pub async fn stop(&self) -> Result<Status, Error> {
        self.request_stop();
        self.wait().await
    }

    /// Waits until the job ends: by an error, by catching up (`until_caught_up`) or by [`JobHandle::stop`].
    pub async fn wait(&self) -> Result<Status, Error> {
        let mut done = self.shared.done.clone();
        let result = match done.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => Some(Err((
                ErrorKind::Stopped,
                "the job ended without a result".into(),
            ))),
        };
        match result {
            Some(Ok(status)) => Ok(status),
            Some(Err((kind, message))) => Err(Error::new(kind, message)),
            None => Err(Error::new(
                ErrorKind::Stopped,
                "the job ended without a result",
            )),
        }
    }
}

/// Watches the job: events, metrics, caught-up detection, and the final result.
struct Monitor {
    shared: Arc<Shared>,
    metrics: JobMetrics,
    until_caught_up: bool,
    source: Endpoint,
    /// The source is a scan: no replication offsets.
    scan: bool,
    /// The source is a cluster: one stream per shard, each caught up on its own.
    cluster: bool,
    /// The source is a sentinel-managed group: its offset is the master's the sentinels name.
    sentinel: Option<ferry_sentinel::SentinelPoolOptions>,
    copy_check: Option<CopyCheck>,
    /// The replicator's events, forwarded as the façade's.
    events: broadcast::Receiver<ferry_replicator::JobEvent>,
    /// A cluster source: each shard's phase, as its events announced it.
    shard_phases: std::collections::HashMap<String, ferry_replicator::Phase>,
    /// The job's phase last announced.
    last_phase: Option<Phase>,
    /// The message of the last error event: a cluster job's final error is the one its shard announced when it
    /// stopped, and is not announced twice.
    last_error: Option<String>,
}

/// The verify a scan source's job runs at the end of its copy: a scan is not a snapshot, so the comparison is
/// what shows the copy complete.
#[derive(Debug, Clone)]
struct CopyCheck {
    source: Source,
    target: crate::config::Target,
    options: VerifyOptions,
}

impl CopyCheck {
    /// For a scan source: the verify compares the keys the job's filters let through, in the databases its
    /// database map sends them to.
    fn of(config: &SyncConfig) -> Option<CopyCheck> {
        let Source::Scan {
            endpoint,
            dbs,
            cluster,
            ..
        } = &config.source
        else {
            return None;
        };
        // The job's filters and database map are the verify's: it compares what the job copies.
        let mut options = VerifyOptions::default()
            .with_recheck_after_ms(1000)
            .with_job(config);
        // The scan's databases that the job copies (its filter and the source URL may leave some out).
        let copied =
            ferry_replicator::Filter::new(config.selection().ok()?.filter.to_replicator()).ok()?;
        options.dbs = dbs.as_ref().map(|d| {
            d.iter()
                .copied()
                .filter(|&db| copied.db_passes(i64::from(db)))
                .collect()
        });
        let source = match cluster {
            true => Source::Cluster {
                seeds: vec![endpoint.clone()],
                shards: None,
                prefer_replica: false,
            },
            false => Source::Standalone(endpoint.clone()),
        };
        Some(CopyCheck {
            source,
            target: config.target.clone(),
            options,
        })
    }

    /// Runs the verify and stores its report in the status (an error of the verify itself is logged).
    async fn run(self, shared: Arc<Shared>) {
        match crate::verify::verify(&self.source, &self.target, self.options).await {
            Ok(report) => {
                tracing::info!("verify at the end of the scan: {report}");
                if let Ok(mut v) = shared.verify.lock() {
                    *v = Some(report);
                }
            }
            Err(e) => tracing::warn!(error = %e, "the verify at the end of the scan failed"),
        }
    }
}

impl Monitor {
    /// Records that the target caught up (and ends the job when it runs until then).
    fn caught_up(&mut self) {
        if let Ok(mut c) = self.shared.caught_up.lock() {
            *c = true;
        }
        self.job_phase(Phase::CaughtUp);
        if self.until_caught_up {
            self.shared.cancel.cancel();
        }
    }

    /// Announces the job's phase when it changed. `stopped` is left to the end of [`Monitor::run`], which
    /// announces the final phase (`stopped` or `caught_up`) before the error of a failed job.
    fn job_phase(&mut self, phase: Phase) {
        if phase != Phase::Stopped && self.last_phase != Some(phase) {
            self.last_phase = Some(phase);
            self.shared.emit(Event::Phase { phase });
        }
    }

    /// Announces a replicator error with the façade's kind (an error of a shard names the shard).
    fn error(&mut self, shard: Option<&str>, error: &ferry_replicator::Error) {
        let kind = crate::error::replicator_kind(error);
        let message = match shard {
            Some(s) if !matches!(error, ferry_replicator::Error::Shard { .. }) => {
                format!("source shard {s}: {error}")
            }
            _ => error.to_string(),
        };
        self.last_error = Some(message.clone());
        self.shared.emit(Event::Error { kind, message });
    }

    /// Forwards one event of the replicator as the façade's.
    fn forward(&mut self, event: ferry_replicator::JobEvent) {
        use ferry_replicator::JobEventKind as K;
        let shard = event.shard;
        match event.kind {
            K::Phase(p) => match shard {
                Some(name) => {
                    self.shared.emit(Event::ShardPhase {
                        shard: name.clone(),
                        phase: Phase::from_replicator(p),
                    });
                    self.shard_phases.insert(name, p);
                    let job = ferry_replicator::Phase::combine(self.shard_phases.values().copied());
                    self.job_phase(Phase::from_replicator(job));
                }
                None => self.job_phase(Phase::from_replicator(p)),
            },
            K::FullResync { reason } => self.shared.emit(Event::FullResync { shard, reason }),
            K::Reconnecting { error, delay } => {
                self.error(shard.as_deref(), &error);
                self.shared.emit(Event::Reconnecting {
                    shard,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                });
            }
            K::SourceFailover { node } => self.shared.emit(match shard {
                Some(shard) => Event::ShardFailoverFollowed { shard, node },
                None => Event::FailoverFollowed { new_master: node },
            }),
            K::TargetFailover { master } => self.shared.emit(Event::TargetFailoverFollowed {
                shard,
                new_master: master,
            }),
            K::TargetTopologyChanged { masters } => self
                .shared
                .emit(Event::TargetTopologyChanged { shard, masters }),
            K::WriteRefused { message } => self.shared.emit(Event::Error {
                kind: ErrorKind::TargetRefused,
                message: match shard {
                    Some(s) => format!("source shard {s}: {message}"),
                    None => message,
                },
            }),
            K::Error(error) => self.error(shard.as_deref(), &error),
            _ => {}
        }
    }

    /// Forwards the replicator's events waiting now.
    fn forward_pending(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(e) => self.forward(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "the job's events came faster than they were forwarded"
                    )
                }
                Err(_) => return,
            }
        }
    }

    async fn run(
        mut self,
        mut run: tokio::task::JoinHandle<Result<(), ferry_replicator::Error>>,
        done: watch::Sender<Option<Result<Status, (ErrorKind, String)>>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut catch_up_target: Option<u64> = None;
        // The warning that the source refuses INFO to the caught-up check, given once.
        let mut warned_offset = false;
        // A cluster source: per shard, the node streamed from and its offset when its live phase was seen.
        let mut shard_targets: std::collections::HashMap<String, (String, u64)> =
            std::collections::HashMap::new();
        let mut incremental_since_ticks = 0u32;
        let mut verifying: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            // Events are forwarded as they come; the status is sampled each tick for the metrics and the
            // caught-up detection.
            tokio::select! {
                r = &mut run => break r,
                e = self.events.recv() => {
                    match e {
                        Ok(e) => self.forward(e),
                        Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(
                            missed = n,
                            "the job's events came faster than they were forwarded"
                        ),
                        // The replicator is gone: its end is `run`'s.
                        Err(broadcast::error::RecvError::Closed) => break (&mut run).await,
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            // What the replicator announced before this sample comes first (a `caught_up` after the
            // `incremental` it follows).
            self.forward_pending();
            let status = self.shared.snapshot();
            self.metrics.record(&status);
            // Caught up: in the live phase, the target has applied the source's offset as it was read once the
            // live phase began.
            if status.phase == Phase::Incremental {
                if let Some(check) = self.copy_check.take() {
                    verifying = Some(tokio::spawn(check.run(self.shared.clone())));
                }
            }
            let caught = self.shared.caught_up.lock().map(|c| *c).unwrap_or(true);
            if !caught && self.cluster {
                // Every shard streaming live, and each has applied what its source node had when first seen so.
                let live: Vec<&ShardStatus> = status.shards.iter().filter(|s| !s.retired).collect();
                let all_live =
                    !live.is_empty() && live.iter().all(|s| s.phase == Phase::Incremental);
                if all_live {
                    let mut done = true;
                    for s in &live {
                        let known = shard_targets
                            .get(&s.name)
                            .filter(|(node, _)| *node == s.source);
                        let target = match known {
                            Some(&(_, t)) => Some(t),
                            None => {
                                let asked = node_offset(&self.source, &s.source).await;
                                let t = offset_to_reach(asked, s.source_offset, &mut warned_offset);
                                if let Some(t) = t {
                                    shard_targets.insert(s.name.clone(), (s.source.clone(), t));
                                }
                                t
                            }
                        };
                        done &= target.is_some_and(|t| s.applied_offset >= t);
                    }
                    if done {
                        tracing::info!(
                            shards = live.len(),
                            "every shard of the source has caught up"
                        );
                        self.caught_up();
                    }
                } else {
                    // A shard copying again (a new shard, a full resync) sets a new mark once it is live.
                    for s in &live {
                        if s.phase == Phase::FullSync {
                            shard_targets.remove(&s.name);
                        }
                    }
                }
            } else if !caught && status.phase == Phase::Incremental && self.scan {
                // A scan source has no offsets: caught up when no heard change waits to be read again.
                incremental_since_ticks += 1;
                if incremental_since_ticks > 1 && status.keys_pending == 0 {
                    self.caught_up();
                }
            } else if !caught && status.phase == Phase::Incremental {
                incremental_since_ticks += 1;
                let applied = status.shards.first().map(|s| s.applied_offset).unwrap_or(0);
                let received = status.shards.first().map(|s| s.source_offset).unwrap_or(0);
                if catch_up_target.is_none() {
                    let asked = match &self.sentinel {
                        Some(o) => sentinel_master_offset(o).await,
                        None => source_offset(&self.source).await,
                    };
                    catch_up_target = offset_to_reach(asked, received, &mut warned_offset);
                }
                if let Some(target) = catch_up_target {
                    if incremental_since_ticks > 1
                        && (applied >= target || (received >= target && status.lag_bytes == 0))
                    {
                        tracing::info!(
                            offset = applied,
                            "the target has caught up with the source"
                        );
                        self.caught_up();
                    }
                }
            } else if status.phase != Phase::Incremental {
                incremental_since_ticks = 0;
                if status.phase == Phase::FullSync {
                    catch_up_target = None;
                }
            }
        };
        // A scan without notifications ends with its copy: verify it now, so the final status has the report.
        if let (Some(check), Ok(Ok(()))) = (self.copy_check.take(), &result) {
            // Not after a stop: the copy may be unfinished.
            if !self.shared.cancel.is_cancelled() {
                check.run(self.shared.clone()).await;
            }
        }
        if let Some(task) = verifying {
            if task.is_finished() {
                let _ = task.await;
            } else {
                task.abort();
            }
        }
        // Everything the replicator announced before it ended, then the final phase, then the error.
        self.forward_pending();
        let status = self.shared.snapshot();
        self.metrics.record(&status);
        let final_phase = status.phase;
        if self.last_phase != Some(final_phase) {
            self.last_phase = Some(final_phase);
            self.shared.emit(Event::Phase { phase: final_phase });
        }
        let outcome = match result {
            Ok(Ok(())) => Ok(status),
            Ok(Err(e)) => {
                // A cluster job ends with the error of the shard that stopped: announced by the shard already.
                let announced = matches!(e, ferry_replicator::Error::Shard { .. })
                    && self.last_error.as_deref() == Some(e.to_string().as_str());
                let e = Error::from(e);
                self.metrics.error();
                if !announced {
                    self.shared.emit(Event::Error {
                        kind: e.kind(),
                        message: e.to_string(),
                    });
                }
                Err((e.kind(), e.to_string()))
            }
            Err(join) => Err((
                ErrorKind::Stopped,
                format!("the job's task ended abnormally: {join}"),
            )),
        };
        self.shared.close_events();
        let _ = done.send(Some(outcome));
    }
}

/// A source node's replication offset, for the caught-up check: the offset, or `Refused` when the user may
/// not run `INFO` (a replication user given only `psync`, `replconf` and `ping`, as Redis documents for a
/// replica's `masteruser`), or `None` when the node could not be asked now (asked again later).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Offset {
    At(u64),
    Refused(String),
}

/// The replication offset of the cluster node at `addr` (`host:port`), reached with the seed's credentials.
async fn node_offset(seed: &Endpoint, addr: &str) -> Option<Offset> {
    let mut opts = seed.connect_options().ok()?;
    let (host, port) = addr.rsplit_once(':')?;
    opts.host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    opts.port = port.parse().ok()?;
    offset_at(&opts).await
}

/// The replication offset of the master the sentinels name.
async fn sentinel_master_offset(o: &ferry_sentinel::SentinelPoolOptions) -> Option<Offset> {
    offset_at(&crate::config::sentinel_master(o).await.ok()?).await
}

/// The source's `master_repl_offset` now (the offset the target must reach to be caught up).
async fn source_offset(source: &Endpoint) -> Option<Offset> {
    offset_at(&source.connect_options().ok()?).await
}

async fn offset_at(opts: &ferry_resp::ConnectOptions) -> Option<Offset> {
    let opts = opts.clone();
    let mut conn = ferry_resp::Connection::connect(&opts).await.ok()?;
    let reply = match conn.call(&["INFO", "replication"]).await {
        Ok(reply) => reply,
        Err(e) => {
            return ferry_resp::probe::is_refused(&e).then(|| Offset::Refused(e.to_string()));
        }
    };
    let text = reply
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())?;
    text.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .map(Offset::At)
}

/// The offset to reach for the caught-up check: the source's, or when the source refuses `INFO`, what ferry
/// has received of the stream so far (`received`): then writes the source accepted but had not yet sent are
/// not waited for, which a warning says once.
fn offset_to_reach(asked: Option<Offset>, received: u64, warned: &mut bool) -> Option<u64> {
    match asked? {
        Offset::At(o) => Some(o),
        Offset::Refused(e) => {
            if !std::mem::replace(warned, true) {
                tracing::warn!(
                    error = %e,
                    "the source user may not run INFO: caught up means the target applied what ferry had received \
                     when the live phase began, not what the source had accepted (allow `info` to this user)"
                );
            }
            Some(received)
        }
    }
}
