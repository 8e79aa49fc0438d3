//! The job: connects the source, the pipeline and the sink, and keeps them going across faults.
//!
//! Each session starts from the target's checkpoint: PSYNC from the committed offset (`+CONTINUE`) in the
//! database the stream had selected there, or a full resync when there is none or the source's backlog no
//! longer holds it. Any broken link (source or target) or a target that refuses writes for a while (`OOM`,
//! `MISCONF`...) ends the session; the next one starts again from what the target committed, after a backoff
//! that doubles up to a cap, so nothing is lost and nothing is applied twice. An error a reconnect cannot fix
//! (a refused password, a peer that is not Redis, a command the target does not know) stops the job after a
//! few attempts, with that error.

use std::time::Duration;

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection};
use ferry_topology::CommandTable;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::cluster_source::{ShardFollower, ShardsHandle, ShardsView};
use crate::error::Error;
use crate::fullsync;
use crate::gate::ReplicaGate;
use crate::pipeline::convert::{
    adapt_for_target, exact_trim_without_limit, fit_command_keyed, several_for_target,
    xclaim_for_older_target, ConflictPolicy, PolicyReport, TargetFormat, TargetPolicy,
};
use crate::pipeline::dbmap::DbMap;
use crate::pipeline::filter::{Decision, Filter, FilterConfig};
use crate::pipeline::{Command, Unit};
use crate::sentinel::{self, Follower};
use crate::sink::cluster::ClusterSink;
use crate::sink::standalone::StandaloneSink;
use crate::sink::{Sink, SinkOptions};
use crate::source::{Resume, Source, SourceMonitor, SourceOptions, Start, StreamEvent};
use crate::status::{JobEvent, JobEventKind, Phase, Rates, StatusHandle};

/// Everything a sync job needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The source and how to follow it.
    pub source: SourceOptions,
    /// The target (any node of it when `target_cluster`).
    pub target: ConnectOptions,
    /// The target is a Redis Cluster (7.0+): commands are routed by slot, one checkpoint per master.
    pub target_cluster: bool,
    /// Windows, batches, error policy and checkpoints of the sink.
    pub sink: SinkOptions,
    /// What to do with keys of a full sync that already exist on the target.
    pub conflict: ConflictPolicy,
    /// What to do with a key or a live command the target cannot hold (field expiries on a target before
    /// Redis 7.4 / Valkey 9, a module type it has no module for, a command it does not know): stop naming the
    /// key (the default), skip it, or convert it with a loss; [`crate::Status`] lists what was skipped and
    /// converted.
    pub target_policy: TargetPolicy,
    /// Which databases, keys and commands are copied.
    pub filter: FilterConfig,
    /// Source database to target database.
    pub db_map: DbMap,
    /// When a full sync must be redone over data an earlier sync of this job wrote (a restart during the RDB,
    /// or the backlog no longer holding the checkpoint), empty the target first (`FLUSHALL`), as a Redis
    /// replica does. Without it (the default) a redo deletes the keys the source no longer has only when the
    /// job owns the target (none of the keys it may write was there before its first copy); otherwise keys
    /// deleted on the source in between may stay on the target (see `crate::fullsync`'s module
    /// documentation).
    pub flush_target_on_resync: bool,
    /// Empty the target (`FLUSHALL`) before every full copy, the first one included (RedisShake's
    /// `empty_db_before_sync`): a job resumed from its checkpoint does not copy, so does not flush. Not while
    /// the target holds the checkpoint of another job (another tag): then it warns and flushes nothing. Ignored
    /// by the shards of a cluster source.
    pub flush_target_before_copy: bool,
    /// Values whose RDB encoding is bigger than this go as batches of element commands instead of one
    /// `RESTORE`.
    pub max_restore_bytes: usize,
    /// First pause between sessions after an error; it doubles (with jitter) after each failed session, up
    /// to `reconnect_backoff_max`, and starts again once a session reaches the live phase.
    pub reconnect_backoff: Duration,
    /// The longest pause between sessions.
    pub reconnect_backoff_max: Duration,
    /// The source is the master of a sentinel-managed group: each session resolves it through these sentinels
    /// (their `data_connect` is the template of the connection to it; `source.connect` is then only used for
    /// what it says besides the address), and ends when a failover of it starts, to continue on the promoted
    /// replica with PSYNC2.
    pub source_sentinel: Option<ferry_sentinel::SentinelPoolOptions>,
    /// The target is the master of a sentinel-managed group: each session writes to the master the sentinels
    /// name (`data_connect` is the connection template) and ends when a failover of it starts; the next one
    /// starts from the checkpoint the promoted replica holds.
    pub target_sentinel: Option<ferry_sentinel::SentinelPoolOptions>,
    /// The source is a Redis Cluster: one stream per shard (see [`crate::cluster_source`]); `source.connect` is
    /// then only the template of what it says besides the address (the seeds carry their own).
    pub source_cluster: Option<crate::cluster_source::ClusterSource>,
    /// Sessions tried in a row when each fails with an error a reconnect does not fix (refused credentials, a
    /// peer that is not Redis, an unknown command) before the job stops with it.
    pub max_attempts: u32,
    /// What the source is: a PSYNC replica of `source` (the default), an RDB file, or a scan of `source`.
    pub source_kind: SourceKind,
}

/// What a job reads: the replication stream of a server, or a source without one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SourceKind {
    /// A `PSYNC` replica of [`Config::source`]: the RDB of a full resync, then the live stream, checkpointed.
    #[default]
    Replica,
    /// An RDB file: its keys are written to the target (filters, database map, conflict and target policies,
    /// conversion as for the RDB of a full resync) and the job ends. Nothing is checkpointed; a job that must
    /// start the file again (a broken target link) rewrites what it wrote (`RESTORE ... REPLACE`) and, on a
    /// target it owns, deletes the keys it wrote that the file does not have (a key of a cut file).
    RdbFile(std::path::PathBuf),
    /// A scan of [`Config::source`] for servers that refuse `PSYNC`, then its keyspace notifications (see
    /// `crate::source::scan` for what this can and cannot promise).
    Scan(crate::source::scan::ScanOptions),
    /// An append-only file (single, with or without an RDB preamble, or multi-part through its manifest),
    /// replayed into the target up to its end or a recovery timestamp, and the job ends (see
    /// `crate::source::aof`). Nothing is checkpointed; a replay that must start again (a broken target link)
    /// starts from the first file.
    AofFile(crate::source::aof::AofOptions),
}

impl Config {
    /// A configuration with the defaults: conflict policy `panic`, target policy `stop`, no filters,
    /// checkpoints on.
    pub fn new(source: ConnectOptions, target: ConnectOptions) -> Config {
        Config {
            source: SourceOptions::new(source),
            target,
            target_cluster: false,
            sink: SinkOptions::default(),
            conflict: ConflictPolicy::Panic,
            target_policy: TargetPolicy::Stop,
            filter: FilterConfig::default(),
            db_map: DbMap::default(),
            flush_target_on_resync: false,
            flush_target_before_copy: false,
            max_restore_bytes: 16 * 1024 * 1024,
            reconnect_backoff: Duration::from_millis(500),
            reconnect_backoff_max: Duration::from_secs(30),
            max_attempts: 3,
            source_sentinel: None,
            target_sentinel: None,
            source_cluster: None,
            source_kind: SourceKind::Replica,
        }
    }
}

/// How long a stopping job keeps applying what the source link received before the stop (a transaction the
/// source has only half sent may never complete).
const STOP_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Where a session failed in a way the next session may meet again at the same place: after the source
/// accepted the PSYNC (it closed the link before the RDB, e.g. a Valkey source that cannot write the RDB version
/// asked for), or during the full copy at a byte count of the RDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailPoint {
    /// The handshake, after the source answered it.
    Handshake,
    /// The full copy, with the RDB bytes read when it failed.
    FullSync {
        /// RDB bytes read.
        rdb_bytes: u64,
    },
}

/// Sessions that failed in a row at the same point: the same [`FailPoint`], or the same phase with the same
/// error text. A broken link is retried without end, but not one that breaks at the same place every time.
#[derive(Debug, Default)]
struct Repeats {
    last: Option<(FailPoint, String)>,
    count: u32,
}

impl Repeats {
    /// Records a failed session (`point`: where, `None` when not at a point that counts) and returns how many
    /// sessions in a row failed at this point.
    fn record(&mut self, point: Option<FailPoint>, message: String) -> u32 {
        let Some(point) = point else {
            *self = Repeats::default();
            return 0;
        };
        let same = self.last.as_ref().is_some_and(|(p, m)| {
            *p == point
                || (std::mem::discriminant(p) == std::mem::discriminant(&point) && *m == message)
        });
        self.count = if same { self.count + 1 } else { 1 };
        self.last = Some((point, message));
        self.count
    }
}

/// A task aborted when this is dropped (at the end of a session, however it ends).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A sync job: runs until stopped, reconnecting after faults.
#[derive(Debug)]
pub struct Replicator {
    pub(crate) config: Config,
    pub(crate) filter: Filter,
    pub(crate) status: StatusHandle,
    source_sentinel: Option<Follower>,
    pub(crate) target_sentinel: Option<Follower>,
    /// A shard of a cluster source: the sessions stream from the node it names.
    pub(crate) source_shard: Option<ShardFollower>,
    /// A cluster source: its shards' status.
    pub(crate) shards: ShardsHandle,
    /// A cluster target's nodes learned by earlier sessions.
    pub(crate) target_nodes: crate::sink::cluster::KnownNodes,
    /// A cluster target's masters (`host:port`, sorted) the last session wrote to.
    target_masters: std::sync::Mutex<Vec<String>>,
    /// A job without checkpoints: the ownership its first copy found ([`crate::redo`]).
    pub(crate) ownership: std::sync::Mutex<Option<crate::redo::Ownership>>,
    /// Whether the source's replication backlog was looked at ([`Replicator::check_backlog`]).
    backlog_checked: std::sync::atomic::AtomicBool,
}

/// A command's keys, as clones of its arguments: by the source's command table (none for `FUNCTION LOAD`,
/// `SWAPDB`...); without a table, or for a command it does not know, by
/// [`crate::pipeline::convert::keys_without_table`].
fn command_keys(commands: Option<&CommandTable>, argv: &[Bytes]) -> Vec<Bytes> {
    match commands.map(|table| table.key_positions(argv)) {
        Some(Ok(at)) => at.iter().filter_map(|&i| argv.get(i).cloned()).collect(),
        _ => crate::pipeline::convert::keys_without_table(argv),
    }
}

/// A source backlog this small (Redis's default `repl-backlog-size`, 1 MB) is worth a word at the job's start.
const SMALL_BACKLOG: u64 = 1024 * 1024;

impl Replicator {
    /// Checks the configuration.
    pub fn new(config: Config) -> Result<Replicator, Error> {
        let filter = Filter::new(config.filter.clone())?;
        if config.sink.window_commands == 0 || config.sink.window_bytes == 0 {
            return Err(Error::Config("the sink windows must not be zero".into()));
        }
        if config.source_cluster.is_some() && !matches!(config.source_kind, SourceKind::Replica) {
            return Err(Error::Config(
                "a cluster source is read by PSYNC: it cannot also be a file or a scan source"
                    .into(),
            ));
        }
        if config.source_cluster.is_some() && config.source_sentinel.is_some() {
            return Err(Error::Config(
                "a source is either a cluster or sentinel-managed, not both".into(),
            ));
        }
        if config
            .source_cluster
            .as_ref()
            .is_some_and(|c| c.seeds.is_empty())
        {
            return Err(Error::Config(
                "a cluster source needs at least one seed".into(),
            ));
        }
        if config.target_sentinel.is_some() && config.target_cluster {
            return Err(Error::Config(
                "a target is either a cluster or sentinel-managed, not both".into(),
            ));
        }
        Ok(Replicator {
            backlog_checked: Default::default(),
            target_nodes: Default::default(),
            target_masters: Default::default(),
            ownership: Default::default(),
            source_sentinel: config
                .source_sentinel
                .clone()
                .map(|o| Follower::new(o, "source")),
            target_sentinel: config
                .target_sentinel
                .clone()
                .map(|o| Follower::new(o, "target")),
            config,
            filter,
            status: StatusHandle::default(),
            source_shard: None,
            shards: ShardsHandle::default(),
        })
    }

    /// A handle on the job's status, usable while it runs.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// A receiver of the job's events from now on: phases, full resyncs, reconnects, failovers followed,
    /// errors (see [`JobEventKind`]), sent as they happen. Subscribe before [`Replicator::run`] to see them all.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<JobEvent> {
        self.status.subscribe()
    }

    /// Records the masters a cluster target's session writes to, and announces a change from the last session's.
    fn target_masters_now(&self, masters: &[String]) {
        let mut now = masters.to_vec();
        now.sort();
        let mut last = self
            .target_masters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !last.is_empty() && *last != now {
            info!(masters = ?now, "the cluster target's masters changed");
            self.status.emit(JobEventKind::TargetTopologyChanged {
                masters: now.clone(),
            });
        }
        *last = now;
    }

    /// A cluster source: the status of each shard (empty for other sources).
    pub fn shards(&self) -> ShardsView {
        ShardsView(self.shards.clone())
    }

    /// Runs until `shutdown` is cancelled (then returns `Ok`) or an error that a reconnect cannot fix. A
    /// cluster source runs until stopped or until no shard's stream runs any more.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), Error> {
        let result = match &self.config.source_cluster {
            Some(cluster) if self.source_shard.is_none() => {
                self.run_cluster(cluster, &shutdown).await
            }
            _ => self.run_sessions(&shutdown).await,
        };
        for f in [&self.source_sentinel, &self.target_sentinel]
            .into_iter()
            .flatten()
        {
            f.close().await;
        }
        self.status.set_phase(Phase::Stopped, |s| {
            if let Err(e) = &result {
                s.last_error = Some(e.to_string());
            }
        });
        result
    }

    async fn run_sessions(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let cfg = &self.config;
        let mut backoff = Backoff::new(cfg.reconnect_backoff, cfg.reconnect_backoff_max);
        let mut hopeless = 0u32;
        let mut report = PolicyReport::default();
        let mut repeats = Repeats::default();
        loop {
            let mut live = false;
            let mut fail_at = None;
            let applied_before = self.status.snapshot().applied_offset;
            let result = {
                let session = self.session(shutdown, &mut live, &mut fail_at, &mut report);
                tokio::pin!(session);
                tokio::select! {
                    r = &mut session => r,
                    () = shutdown.cancelled() => {
                        // A PSYNC session in the live phase sees the same signal and first applies and commits
                        // what the source link has received (`follow`); give it the time to, within a bound. In
                        // any other phase nothing received can be committed before the end: stop at once.
                        let draining = matches!(cfg.source_kind, SourceKind::Replica)
                            && self.status.snapshot().phase == Phase::Incremental;
                        if draining {
                            tokio::time::timeout(STOP_DRAIN_LIMIT + Duration::from_secs(5), &mut session)
                                .await
                                .unwrap_or(Err(Error::Stopped))
                        } else {
                            Err(Error::Stopped)
                        }
                    }
                }
            };
            if live {
                backoff.reset();
                // A session that fails again at the same place (an unknown command in the stream) made no
                // progress: only moving on resets the count of hopeless attempts.
                if self.status.snapshot().applied_offset > applied_before {
                    hopeless = 0;
                }
            }
            let e = match result {
                Ok(()) | Err(Error::Stopped) => return Ok(()),
                Err(e) => e,
            };
            // An append-only file's commands are not checkpointed: once some were applied, replaying the file
            // again could apply them twice (an INCR), so the job stops and says so.
            if live && matches!(cfg.source_kind, SourceKind::AofFile(_)) {
                error!(error = %e, "the replay of the append-only file broke after its commands started; it is not started again (a command could be applied twice): replay it into an empty target");
                return Err(e);
            }
            // A source that breaks the link at the same point of the handshake or the full copy every time
            // (it cannot produce the RDB) is not retried forever.
            let point = fail_at.filter(|_| e.is_connection());
            let repeated = repeats.record(point, e.to_string());
            if repeated >= cfg.max_attempts.max(1) {
                let e = Error::GaveUp {
                    attempts: repeated,
                    last: Box::new(e),
                };
                error!(error = %e, point = ?point, "sync job stopped: the source failed at the same point each time");
                return Err(e);
            }
            // An RDB file is a one-shot copy: a target that cannot be reached (or keeps refusing) ends it
            // after the bounded attempts instead of being waited for like a live sync.
            let one_shot = matches!(
                cfg.source_kind,
                SourceKind::RdbFile(_) | SourceKind::AofFile(_)
            );
            if (e.is_connection() || e.is_transient()) && !one_shot {
                warn!(error = %e, same_point = repeated, "session ended, reconnecting from the target's checkpoint");
            } else if e.is_retried_a_few_times() || e.is_connection() || e.is_transient() {
                hopeless += 1;
                if hopeless >= cfg.max_attempts.max(1) {
                    let e = Error::GaveUp {
                        attempts: hopeless,
                        last: Box::new(e),
                    };
                    error!(error = %e, "sync job stopped");
                    return Err(e);
                }
                if one_shot {
                    warn!(error = %e, attempt = hopeless, of = cfg.max_attempts,
                          "the RDB file restore failed, trying again");
                } else {
                    warn!(error = %e, attempt = hopeless, of = cfg.max_attempts,
                          "session failed with an error a reconnect may not fix, trying again");
                }
            } else if matches!(e, Error::Fenced(_)) {
                // Another job took the target over (a DR direction change): this one ends as designed.
                warn!(error = %e, "sync job stopped: fenced");
                return Err(e);
            } else {
                error!(error = %e, "sync job stopped");
                return Err(e);
            }
            let delay = backoff.next_delay();
            let message = e.to_string();
            self.status.emit(JobEventKind::Reconnecting {
                error: std::sync::Arc::new(e),
                delay,
            });
            self.status.set_phase(Phase::Reconnecting, |s| {
                s.reconnects += 1;
                s.last_error = Some(message);
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// One session: resolves sentinel-managed masters, then runs [`Replicator::session_with`] until it ends
    /// or a failover of one of those masters starts. `live` is set once the session reaches the live phase.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        live: &mut bool,
        fail_at: &mut Option<FailPoint>,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        self.status.set_phase(Phase::Handshake, |_| {});
        let mut source = self.config.source.clone();
        let mut target = self.config.target.clone();
        let source_master = match &self.source_sentinel {
            Some(f) => Some(f.master().await?),
            None => None,
        };
        let target_master = match &self.target_sentinel {
            Some(f) => Some(f.master().await?),
            None => None,
        };
        if let Some(m) = &source_master {
            source.connect = m.connect.clone();
            if m.followed {
                self.status
                    .emit(JobEventKind::SourceFailover { node: m.addr() });
            }
        }
        if let Some(m) = &target_master {
            target = m.connect.clone();
            if m.followed {
                self.status
                    .emit(JobEventKind::TargetFailover { master: m.addr() });
            }
        }
        // A shard of a cluster source runs in one job at a time: its lease in the target.
        let lease = match &self.source_shard {
            Some(shard) => Some(
                crate::cluster_source::Lease::acquire(
                    &target,
                    self.config.target_cluster,
                    &self.config.sink.checkpoint_tag,
                    &shard.lease_owner,
                    |holder| {
                        self.status.update(|s| {
                            s.last_error =
                                Some(format!("{} ({holder})", crate::cluster_source::LEASE_WAIT));
                        })
                    },
                )
                .await?,
            ),
            None => None,
        };
        if lease.is_some() {
            self.status.update(|s| {
                if s.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(crate::cluster_source::LEASE_WAIT))
                {
                    s.last_error = None;
                }
            });
        }
        let shard_node = match &self.source_shard {
            Some(f) => Some(f.resolve().await?),
            None => None,
        };
        if let Some(n) = &shard_node {
            source.connect = n.connect.clone();
            if n.followed {
                self.status.emit(JobEventKind::SourceFailover {
                    node: format!("{}:{}", n.connect.host, n.connect.port),
                });
            }
        }
        let shard_replaced = async {
            match (&self.source_shard, &shard_node) {
                (Some(f), Some(n)) => f.replaced(n).await,
                _ => std::future::pending().await,
            }
        };
        // A stream from a master is applied only as far as one of its replicas holds it, so a failover never
        // leaves the target ahead of the promoted replica (which would take a full copy to undo): a cluster
        // shard's master (unless switched off), and a sentinel-managed source's master.
        let gate = match (&shard_node, &source_master) {
            (Some(n), _) if n.gate_on_replicas => Some(ReplicaGate::start(n.connect.clone())),
            (None, Some(m)) => Some(ReplicaGate::start(m.connect.clone())),
            _ => None,
        };
        let mut lease = lease.map(crate::cluster_source::Lease::keep_in_task);
        let keep_lease = async {
            match lease.as_mut() {
                Some(l) => l.lost().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = self.session_with(&source, &target, Stop { shutdown, gate: gate.as_ref() }, live, fail_at, report) => r,
            e = shard_replaced => Err(e),
            e = keep_lease => Err(e),
            e = sentinel::replaced(source_master.as_ref(), "source") => Err(e),
            e = sentinel::replaced(target_master.as_ref(), "target") => Err(e),
        };
        // A job that stops, or is fenced (it ends for good), lets another take the shard at once (a dead one's
        // lease expires).
        if let Some(l) = lease {
            l.finish(matches!(&result, Err(Error::Stopped | Error::Fenced(_))))
                .await;
        }
        result
    }

    /// Once per job (for a cluster source, per shard), when the first session reaches the live stream: reads the
    /// source's `repl_backlog_size` and warns when it is Redis's default 1 MB or less, the most ferry can be
    /// behind and still continue after a dropped link, a restart or a failover without a full copy. Says nothing
    /// when the source does not answer `INFO` within 2 s.
    async fn check_backlog(&self, source: &ConnectOptions) {
        if self
            .backlog_checked
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let mut opts = source.clone();
        opts.connect_timeout = opts.connect_timeout.min(Duration::from_secs(2));
        opts.read_timeout = Some(Duration::from_secs(2));
        let check = async {
            let Ok(mut c) = Connection::connect(&opts).await else {
                return;
            };
            let Ok(text) = crate::cluster_source::info_text(&mut c, "replication").await else {
                return;
            };
            let size = text
                .lines()
                .find_map(|l| l.strip_prefix("repl_backlog_size:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(size) = size.filter(|&s| s <= SMALL_BACKLOG) {
                warn!(
                    source = %format!("{}:{}", opts.host, opts.port),
                    repl_backlog_size = size,
                    "the source keeps {size} bytes of replication backlog: a dropped link, a restart of the job or a \
                     failover that leaves ferry further behind than that takes a full copy; a larger \
                     `repl-backlog-size` on the source (for example 256mb) lets ferry continue where it was"
                );
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), check).await;
    }

    /// One session with the given source and target: checkpoint, handshake, full sync if needed, then the
    /// stream until an error or shutdown. `live` is set once the session reaches the live phase.
    async fn session_with(
        &self,
        source: &SourceOptions,
        target: &ConnectOptions,
        stop: Stop<'_>,
        live: &mut bool,
        fail_at: &mut Option<FailPoint>,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        let Stop { shutdown, gate } = stop;
        let cfg = &self.config;
        let source_node = source.connect.clone();
        match &cfg.source_kind {
            SourceKind::Replica => {}
            SourceKind::RdbFile(path) => return self.file_session(path, target, report).await,
            SourceKind::AofFile(aof) => return self.aof_session(aof, target, live, report).await,
            SourceKind::Scan(scan) => {
                return self
                    .scan_session(&source.connect, scan, target, live, report)
                    .await
            }
        }
        let commands = match self.command_table(&source.connect).await {
            Ok(table) => Some(std::sync::Arc::new(table)),
            // Without a table only filters on keys and a cluster target cannot work; a source that refuses
            // or does not know `COMMAND` (renamed, ACL) can still be followed.
            Err(e)
                if self.filter.has_key_rules()
                    || cfg.target_cluster
                    || !(matches!(e, Error::Config(_))
                        || matches!(&e, Error::Resp(r) if r.server_error().is_some())) =>
            {
                return Err(e)
            }
            Err(e) => {
                warn!(error = %e, "no command table from the source: ferry's own keys are recognized as \
                      the first argument of a command only");
                None
            }
        };
        let mut sink = match &commands {
            Some(table) if cfg.target_cluster => Sink::Cluster(
                ClusterSink::connect_known(
                    target,
                    &self.target_nodes,
                    cfg.sink.clone(),
                    table.clone(),
                )
                .await?,
            ),
            _ => Sink::Standalone(Box::new(
                StandaloneSink::connect(target, cfg.sink.clone()).await?,
            )),
        };
        if let Sink::Cluster(c) = &sink {
            self.target_masters_now(c.masters());
        }
        let target = sink.target_format().await?;
        if cfg.target_cluster && target.rdb_version < 10 {
            return Err(Error::Config(
                "a cluster target must run Redis 7.0 or newer (its batches are scripts with allow-cross-slot-keys)"
                    .into(),
            ));
        }
        let checkpoints = if cfg.sink.checkpoint || cfg.target_cluster {
            sink.fence().await?;
            sink.read_checkpoints().await?
        } else {
            Vec::new()
        };
        let resume = crate::checkpoint::resume_from(&checkpoints);
        // With checkpoints the report of the target policy is stored in the target with the writes it
        // describes: a job that continues (after a kill too) starts from what is committed there.
        report.persist = cfg.sink.checkpoint || cfg.target_cluster;
        if report.persist && resume.is_some() {
            let (skipped, converted) = sink.read_report().await?;
            report.load(skipped, converted);
            self.status.update(|s| s.set_policy(report));
        }

        let mut source_opts = source.clone();
        source_opts.connect.read_timeout = None;
        let at = resume.as_ref().map(|r| Resume {
            replid: &r.replid,
            offset: r.offset,
            db: r.db,
        });
        let (mut source, start) = Source::open(&source_opts, at).await.inspect_err(|e| {
            // The source answered, then broke the handshake (a plain connect failure does not count).
            if matches!(e, Error::Protocol(_) | Error::SourceClosed(_)) {
                *fail_at = Some(FailPoint::Handshake);
            }
        })?;
        let _refresher = self.refresh_link_status(source.monitor());
        let replid = match start {
            Start::Full { replid, offset } => {
                let reason = match &resume {
                    Some(old) => {
                        warn!(
                            checkpoint_replid = %old.replid, checkpoint_offset = old.offset, new_replid = %replid,
                            "the source cannot continue from the checkpoint (backlog overrun or another history): \
                             falling back to a full resync (if this repeats, another job may write into this \
                             target under the same checkpoint tag: jobs that share a target need distinct tags)"
                        );
                        format!(
                            "the source cannot continue from the checkpoint ({}:{}; backlog overrun or another \
                             history)",
                            old.replid, old.offset
                        )
                    }
                    None if cfg.sink.checkpoint || cfg.target_cluster => {
                        "no checkpoint of this job in the target".to_string()
                    }
                    None => "checkpoints are off: every session copies in full".to_string(),
                };
                self.status.emit(JobEventKind::FullResync { reason });
                let redo = checkpoints.iter().any(Option::is_some);
                // Without checkpoints (a standalone target with them off) the ownership record tells a redo.
                let by_checkpoint = (cfg.sink.checkpoint || cfg.target_cluster).then_some(redo);
                let plan = self.start_copy(&mut sink, by_checkpoint).await?;
                self.status.set_phase(Phase::FullSync, |s| {
                    s.replid = replid.clone();
                    s.keys_done = 0;
                    s.keys_expected = None;
                    s.full_syncs += 1;
                });
                // Announced as copying first: shards copying at once do not wait for each other.
                if let Some(shard) = &self.source_shard {
                    shard.shared().before_copy(shard.name()).await;
                }
                // The report describes what this copy leaves out of the target (the stored one is cleared
                // with the copy's start, `start_copy`).
                report.clear();
                let opts = fullsync::Options {
                    conflict: plan.conflict,
                    max_restore_bytes: cfg.max_restore_bytes,
                    target: target.clone(),
                    policy: cfg.target_policy,
                    batch_strings: true,
                    record_keys: plan.sweep,
                };
                let copied = fullsync::run(
                    &mut source,
                    &mut sink,
                    &self.filter,
                    &cfg.db_map,
                    &opts,
                    report,
                    &self.status,
                )
                .await;
                if copied.is_err() {
                    *fail_at = Some(FailPoint::FullSync {
                        rdb_bytes: source.rdb_bytes(),
                    });
                }
                let copied = copied?;
                // A stream served as SYNC learns where it starts from its RDB.
                let (replid, offset) = match &copied.position {
                    Some((id, at)) if replid == crate::source::psync::SYNC_REPLID => {
                        info!(replid = %id, offset = at, "the SYNC stream's position, from its RDB");
                        source.rebase(*at);
                        self.status.update(|s| s.replid = id.clone());
                        (id.clone(), *at)
                    }
                    _ => (replid, offset),
                };
                let big_keys = copied.big_keys;
                if let Some(g) = gate {
                    g.wait_for(offset).await?;
                }
                self.sweep(&mut sink, plan, &copied.keys).await?;
                sink.finish_full_sync_reporting(&replid, offset, report)
                    .await?;
                source.acknowledge(offset);
                let c = sink.counters();
                self.status.update(|s| {
                    // Big keys went as element commands, which the sink does not count as keys.
                    s.keys_copied = c.keys_restored + big_keys;
                    s.keys_skipped = c.keys_skipped;
                    s.bytes_written = c.bytes_written;
                    s.applied_offset = offset;
                });
                info!(%replid, offset, keys = c.keys_restored + big_keys, "full sync applied");
                sink.start_stream(&replid, offset, &[]).await?;
                replid
            }
            Start::Continue { replid, offset } => {
                sink.start_stream(&replid, offset, &checkpoints).await?;
                replid
            }
        };
        self.status.set_phase(Phase::Incremental, |s| {
            s.replid = replid.clone();
        });
        *live = true;
        // Once the handshake worked (a source that fails it gets no second connection from this).
        self.check_backlog(&source_node).await;
        self.follow(
            &mut source,
            &mut sink,
            commands.as_deref(),
            &target,
            report,
            Stop { shutdown, gate },
        )
        .await
    }

    /// The live phase.
    async fn follow(
        &self,
        source: &mut Source,
        sink: &mut Sink,
        commands: Option<&CommandTable>,
        target: &TargetFormat,
        report: &mut PolicyReport,
        stop: Stop<'_>,
    ) -> Result<(), Error> {
        let Stop { shutdown, gate } = stop;
        let mut rates = Rates::new();
        let mut filtered = 0u64;
        let mut partial = 0u64;
        let base = sink.counters().commands_applied;
        let (start_offset, base_read) = (source.offset(), self.status.snapshot().bytes_read);
        let mut tick = tokio::time::Instant::now();
        // Set when the job is asked to stop: the stream offset the source link had received then, and the
        // deadline for applying it.
        let mut drain: Option<(u64, tokio::time::Instant)> = None;
        loop {
            // Stopping: once everything received at the stop is applied (or the deadline passed, when the
            // source sent half a transaction), the end of this turn commits it, publishes the status and ends.
            let drained = drain.is_some_and(|(to, deadline)| {
                source.offset() >= to || tokio::time::Instant::now() >= deadline
            });
            if !drained {
                let event = tokio::select! {
                    e = source.next_event() => e?,
                    () = shutdown.cancelled(), if drain.is_none() => {
                        drain = Some((
                            source.monitor().received_offset(),
                            tokio::time::Instant::now() + STOP_DRAIN_LIMIT,
                        ));
                        continue;
                    }
                    () = tokio::time::sleep_until(drain.map_or_else(tokio::time::Instant::now, |d| d.1)),
                        if drain.is_some() => continue,
                };
                match event {
                    StreamEvent::Unit(mut unit) => {
                        let (end, end_db) = (unit.end_offset, unit.end_db);
                        if let Some(shard) = &self.source_shard {
                            let waits = crate::cluster_source::has_import(&unit);
                            if waits || shard.drops_imports() {
                                // Keys migrated into this shard wait for their exporter's DEL, and slots
                                // migrated atomically for their exporter's deletes; what is open commits first.
                                if waits {
                                    sink.sync().await?;
                                    source.acknowledge(sink.committed_offset());
                                }
                                let first_key = |argv: &[Bytes]| {
                                    command_keys(commands, argv).into_iter().next()
                                };
                                tokio::select! {
                                    r = shard.import(&mut unit, first_key) => r?,
                                    () = shutdown.cancelled() => return Err(Error::Stopped),
                                }
                            }
                        }
                        if let Some(g) = gate {
                            if !g.passes(end) {
                                // What is open is covered: commit it while waiting for the replicas.
                                sink.sync().await?;
                                source.acknowledge(sink.committed_offset());
                                tokio::select! {
                                    r = g.wait_for(end) => r?,
                                    () = shutdown.cancelled() => return Err(Error::Stopped),
                                }
                            }
                        }
                        let fitted = self.filter_unit(
                            unit,
                            commands,
                            target,
                            report,
                            &mut filtered,
                            &mut partial,
                        )?;
                        match (fitted, &self.source_shard) {
                            // A shard's flush empties its master's slots, not the target
                            // (`crate::shard_flush`): the target holds everything before it first.
                            (Some(unit), Some(shard)) if crate::shard_flush::has_flush(&unit) => {
                                sink.sync().await?;
                                source.acknowledge(sink.committed_offset());
                                self.delete_flushed(sink, shard, &unit).await?;
                                let unit = crate::shard_flush::without_flushes(unit, |argv| {
                                    command_keys(commands, argv)
                                });
                                if unit.commands.is_empty() && unit.report.is_empty() {
                                    sink.advance(end, end_db);
                                } else {
                                    sink.push(unit).await?;
                                }
                            }
                            (Some(unit), _) => sink.push(unit).await?,
                            (None, _) => sink.advance(end, end_db),
                        }
                    }
                    StreamEvent::Skipped { end_offset, db } => sink.advance(end_offset, db),
                    StreamEvent::GetAck { .. } => {}
                }
            }
            // Nothing more to batch: send what is open and wait for it, so the checkpoint and the status
            // catch up while the source is quiet.
            let idle = drained || !source.has_buffered();
            if idle {
                sink.sync().await?;
            }
            // The source hears what the target holds, not what was read.
            source.acknowledge(sink.committed_offset());
            if idle || tick.elapsed() >= Duration::from_millis(200) {
                tick = tokio::time::Instant::now();
                let c = sink.counters();
                let (offset, applied) = (source.offset(), sink.committed_offset());
                let received = source.monitor().received_offset();
                let mut refused = None;
                self.status.update(|s| {
                    s.commands_applied = c.commands_applied;
                    s.commands_filtered = filtered;
                    s.commands_partial = partial;
                    s.bytes_written = c.bytes_written;
                    s.bytes_read = base_read + (offset - start_offset);
                    s.errors = c.errors;
                    if c.last_error.is_some() && c.last_error != s.last_error {
                        s.last_error = c.last_error.clone();
                        refused = c.last_error.clone();
                    }
                    rates.sample(s, c.commands_applied - base, received, applied);
                    s.set_policy(report);
                });
                if let Some(message) = refused.take() {
                    self.status.emit(JobEventKind::WriteRefused { message });
                }
            }
            if drained {
                return Err(Error::Stopped);
            }
        }
    }

    /// Applies the filters, the target policy and the database map to a unit; `Ok(None)` when nothing of it is
    /// forwarded, `Err` when the policy stops the job on a command the target cannot hold.
    pub(crate) fn filter_unit(
        &self,
        mut unit: Unit,
        commands: Option<&CommandTable>,
        target: &TargetFormat,
        report: &mut PolicyReport,
        filtered: &mut u64,
        partial: &mut u64,
    ) -> Result<Option<Unit>, Error> {
        // Valkey's atomic slot migration protocol is the cluster's own (a cluster source follows it, see
        // `crate::cluster_source`); one cluster node followed as a standalone source cannot, and says so.
        if unit
            .commands
            .iter()
            .any(|c| crate::cluster_source::is_slot_sync(&c.argv))
        {
            let established = unit
                .commands
                .iter()
                .any(|c| crate::cluster_source::slot_import(&c.argv).is_some());
            unit.commands
                .retain(|c| !crate::cluster_source::is_slot_sync(&c.argv));
            if established {
                warn!("the source is a cluster node taking part in an atomic slot migration: follow the cluster as a cluster source (`--source-type cluster`), which keeps the migrated keys exact; here its copy of the slots is applied as it comes");
            }
        }
        // ferry's own keys are never copied; the scan for their common prefix is cheap, the key extraction only
        // runs when it finds one.
        let maybe_reserved = unit
            .commands
            .iter()
            .any(|c| c.argv.iter().skip(1).any(|a| a.starts_with(b"ferry:")));
        if !self.filter.is_pass_all() {
            // `MOVE` and `COPY ... DB` write into another database: when the filters leave that one out, only
            // their effect on the copied database reaches the target (a `MOVE` deletes the key there, a `COPY`
            // changes nothing there), never a write into a database that is not copied (which a cluster target
            // does not have).
            unit.commands
                .retain_mut(|cmd| match into_other_db(&cmd.argv) {
                    Some(to) if !self.filter.db_passes(to) => {
                        if cmd.argv[0].eq_ignore_ascii_case(b"move") {
                            cmd.argv = vec![Bytes::from_static(b"DEL"), cmd.argv[1].clone()];
                            true
                        } else {
                            *filtered += 1;
                            false
                        }
                    }
                    _ => true,
                });
        }
        if !self.filter.is_pass_all() || maybe_reserved {
            unit.commands.retain(|cmd| {
                let name = cmd.name();
                let keys: Vec<&[u8]> = match commands {
                    Some(table) => table.keys(&cmd.argv).unwrap_or_default(),
                    None => cmd.argv.get(1).map(|k| vec![&k[..]]).unwrap_or_default(),
                };
                match self.filter.decide(cmd.db, &name, &keys) {
                    Decision::Pass => true,
                    Decision::Drop => {
                        *filtered += 1;
                        false
                    }
                    Decision::Partial { blocked } => {
                        *partial += 1;
                        let shown: Vec<String> = blocked
                            .iter()
                            .map(|k| crate::error::KeyDisplay(k.clone()).to_string())
                            .collect();
                        warn!(
                            command = %name, offset = cmd.end_offset, blocked_keys = ?shown,
                            "a command's keys only partly pass the filters: not forwarded"
                        );
                        false
                    }
                }
            });
        }
        // What the target cannot hold, by the source's database (the report names keys by it).
        let mut fitted = Vec::with_capacity(unit.commands.len());
        for mut cmd in unit.commands {
            let keys = command_keys(commands, &cmd.argv);
            if let Some(several) = several_for_target(cmd.db, &cmd.argv, &keys, target, report) {
                for argv in several {
                    fitted.push(Command {
                        argv,
                        db: cmd.db,
                        end_offset: cmd.end_offset,
                    });
                }
                continue;
            }
            if let Some(argv) = fit_command_keyed(
                cmd.db,
                &cmd.argv,
                &keys,
                target,
                self.config.target_policy,
                report,
            )? {
                cmd.argv = argv;
                fitted.push(cmd);
            }
        }
        unit.commands = fitted;
        // The keys skipped or converted here are stored with the batch that applies the unit.
        unit.report = report.take_pending();
        if unit.commands.is_empty() && unit.report.is_empty() {
            return Ok(None);
        }
        let target_rdb = u16::try_from(target.rdb_version).unwrap_or(u16::MAX);
        // A source of 7.0 or later (its command table has key specs) drops deleted entries from a group's
        // pending list where a target before 7.0 would keep them (`xclaim_for_older_target`).
        let pel_cleanup = target_rdb < 10
            && commands
                .and_then(|t| t.get(b"xclaim"))
                .is_some_and(|c| c.key_specs.is_some());
        for cmd in &mut unit.commands {
            cmd.db = self.config.db_map.target(cmd.db);
            self.config.db_map.map_arguments(&mut cmd.argv);
            adapt_for_target(&mut cmd.argv, target_rdb);
            exact_trim_without_limit(&mut cmd.argv);
            if pel_cleanup {
                if let Some(script) = xclaim_for_older_target(&cmd.argv) {
                    cmd.argv = script;
                }
            }
        }
        Ok(Some(unit))
    }

    /// Copies the source link's counters into the status every 200 ms while the session runs, so the status
    /// shows what was received and acknowledged even while the job waits on a slow target.
    fn refresh_link_status(&self, monitor: SourceMonitor) -> AbortOnDrop {
        let status = self.status.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                status.update(|s| {
                    s.source_offset = monitor.received_offset();
                    s.lag_bytes = s.source_offset.saturating_sub(s.applied_offset);
                    s.acked_offset = monitor.acked_offset();
                    s.acks_sent = monitor.acks_sent();
                    s.spooled_bytes = monitor.spooled_bytes();
                });
            }
        }))
    }

    /// The source's command table, for key extraction by the filters.
    pub(crate) async fn command_table(
        &self,
        source: &ConnectOptions,
    ) -> Result<CommandTable, Error> {
        let mut conn = Connection::connect(source).await?;
        // A source that accepts the connection and never answers ends the session, like its handshake.
        conn.set_read_timeout(Some(self.config.source.handshake.line_timeout));
        let reply = conn.call(&[Bytes::from_static(b"COMMAND")]).await?;
        CommandTable::from_command_reply(&reply)
            .map_err(|e| Error::Config(format!("COMMAND of the source: {e}")))
    }
}

/// The database a `MOVE key db` or a `COPY src dst ... DB db ...` writes into (`None` for other commands, a
/// `COPY` within its database, and database numbers that do not parse).
fn into_other_db(argv: &[Bytes]) -> Option<i64> {
    let name = argv.first()?;
    let at = if name.eq_ignore_ascii_case(b"move") && argv.len() == 3 {
        2
    } else if name.eq_ignore_ascii_case(b"copy") {
        (3..argv.len().saturating_sub(1)).find(|&i| argv[i].eq_ignore_ascii_case(b"db"))? + 1
    } else {
        return None;
    };
    std::str::from_utf8(&argv[at]).ok()?.parse().ok()
}

/// What holds a session back or ends it: the job's shutdown, and the replica gate of a cluster shard.
#[derive(Clone, Copy)]
struct Stop<'a> {
    shutdown: &'a CancellationToken,
    gate: Option<&'a ReplicaGate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_a_move_or_copy_writes_into_is_read_from_its_arguments() {
        let argv = |w: &[&str]| -> Vec<Bytes> {
            w.iter()
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect()
        };
        assert_eq!(into_other_db(&argv(&["MOVE", "k", "3"])), Some(3));
        assert_eq!(
            into_other_db(&argv(&["copy", "a", "b", "REPLACE", "db", "1"])),
            Some(1)
        );
        assert_eq!(into_other_db(&argv(&["COPY", "a", "b", "REPLACE"])), None);
        assert_eq!(into_other_db(&argv(&["COPY", "a", "b", "DB"])), None);
        assert_eq!(into_other_db(&argv(&["MOVE", "k", "x"])), None);
        assert_eq!(into_other_db(&argv(&["SET", "k", "3"])), None);
    }

    #[test]
    fn failures_at_the_same_point_or_with_the_same_text_count_up_and_others_reset() {
        let mut r = Repeats::default();
        let at = |n| Some(FailPoint::FullSync { rdb_bytes: n });
        assert_eq!(r.record(at(100), "closed".into()), 1);
        assert_eq!(r.record(at(100), "reset".into()), 2);
        // Another byte count with the same text: the same failure.
        assert_eq!(r.record(at(250), "reset".into()), 3);
        // Another byte count and text: a new point.
        assert_eq!(r.record(at(300), "other".into()), 1);
        // The same text in another phase is another point.
        assert_eq!(r.record(Some(FailPoint::Handshake), "other".into()), 1);
        assert_eq!(r.record(Some(FailPoint::Handshake), "closed".into()), 2);
        // A failure that does not count (a refused connect) starts over.
        assert_eq!(r.record(None, "closed".into()), 0);
        assert_eq!(r.record(Some(FailPoint::Handshake), "closed".into()), 1);
    }
}
