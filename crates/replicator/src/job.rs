//! The job: connects the source, the pipeline and the sink, and keeps them going across faults.
//!
//! Each session starts from the target's checkpoint: PSYNC from the committed offset (`+CONTINUE`), or a full
//! resync when there is none or the source's backlog no longer holds it. Any broken link (source or target)
//! ends the session; the next one starts again from what the target acknowledged, so nothing is lost and
//! nothing is applied twice.

use std::time::Duration;

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection};
use ferry_topology::CommandTable;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::Error;
use crate::fullsync;
use crate::pipeline::convert::{adapt_for_target, ConflictPolicy};
use crate::pipeline::dbmap::DbMap;
use crate::pipeline::filter::{Decision, Filter, FilterConfig};
use crate::pipeline::Unit;
use crate::sink::cluster::ClusterSink;
use crate::sink::standalone::StandaloneSink;
use crate::sink::{Sink, SinkOptions};
use crate::source::{Source, SourceOptions, Start, StreamEvent};
use crate::status::{Phase, Rates, StatusHandle};

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
    /// Which databases, keys and commands are copied.
    pub filter: FilterConfig,
    /// Source database to target database.
    pub db_map: DbMap,
    /// When a full sync must be redone over data an earlier sync of this job wrote (a restart during the RDB,
    /// or the backlog no longer holding the checkpoint), empty the target first (`FLUSHALL`), as a Redis
    /// replica does. Without it keys deleted on the source in between may stay on the target.
    pub flush_target_on_resync: bool,
    /// Values whose RDB encoding is bigger than this go as batches of element commands instead of one
    /// `RESTORE`.
    pub max_restore_bytes: usize,
    /// Pause between sessions after a connection error.
    pub reconnect_backoff: Duration,
}

impl Config {
    /// A configuration with the defaults: conflict policy `panic`, no filters, checkpoints on.
    pub fn new(source: ConnectOptions, target: ConnectOptions) -> Config {
        Config {
            source: SourceOptions::new(source),
            target,
            target_cluster: false,
            sink: SinkOptions::default(),
            conflict: ConflictPolicy::Panic,
            filter: FilterConfig::default(),
            db_map: DbMap::default(),
            flush_target_on_resync: false,
            max_restore_bytes: 16 * 1024 * 1024,
            reconnect_backoff: Duration::from_millis(500),
        }
    }
}

/// A sync job: runs until stopped, reconnecting after faults.
#[derive(Debug)]
pub struct Replicator {
    config: Config,
    filter: Filter,
    status: StatusHandle,
}

impl Replicator {
    /// Checks the configuration.
    pub fn new(config: Config) -> Result<Replicator, Error> {
        let filter = Filter::new(config.filter.clone())?;
        if config.sink.window_commands == 0 || config.sink.window_bytes == 0 {
            return Err(Error::Config("the sink windows must not be zero".into()));
        }
        Ok(Replicator {
            config,
            filter,
            status: StatusHandle::default(),
        })
    }

    /// A handle on the job's status, usable while it runs.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Runs until `shutdown` is cancelled (then returns `Ok`) or an error that a reconnect cannot fix.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), Error> {
        let result = self.run_sessions(&shutdown).await;
        self.status.update(|s| {
            s.phase = Phase::Stopped;
            if let Err(e) = &result {
                s.last_error = Some(e.to_string());
            }
        });
        result
    }

    async fn run_sessions(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        loop {
            let result = tokio::select! {
                r = self.session(shutdown) => r,
                () = shutdown.cancelled() => Err(Error::Stopped),
            };
            match result {
                Ok(()) | Err(Error::Stopped) => return Ok(()),
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "link lost, reconnecting from the target's checkpoint");
                    self.status.update(|s| {
                        s.phase = Phase::Reconnecting;
                        s.reconnects += 1;
                        s.last_error = Some(e.to_string());
                    });
                    tokio::select! {
                        () = tokio::time::sleep(self.config.reconnect_backoff) => {}
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
                Err(e) => {
                    error!(error = %e, "sync job stopped");
                    return Err(e);
                }
            }
        }
    }

    /// One session: checkpoint, handshake, full sync if needed, then the stream until an error or shutdown.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let cfg = &self.config;
        self.status.update(|s| s.phase = Phase::Handshake);
        let commands = if self.filter.has_key_rules() || cfg.target_cluster {
            Some(std::sync::Arc::new(self.command_table().await?))
        } else {
            None
        };
        let mut sink = match &commands {
            Some(table) if cfg.target_cluster => Sink::Cluster(
                ClusterSink::connect(&cfg.target, cfg.sink.clone(), table.clone()).await?,
            ),
            _ => Sink::Standalone(Box::new(
                StandaloneSink::connect(&cfg.target, cfg.sink.clone()).await?,
            )),
        };
        if cfg.target_cluster && sink.rdb_version().await? < 10 {
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

        let mut source_opts = cfg.source.clone();
        source_opts.connect.read_timeout = None;
        let (mut source, start) = Source::open(
            &source_opts,
            resume.as_ref().map(|r| (r.replid.as_str(), r.offset)),
        )
        .await?;
        let replid = match start {
            Start::Full { replid, offset } => {
                if let Some(old) = &resume {
                    warn!(
                        checkpoint_replid = %old.replid, checkpoint_offset = old.offset, new_replid = %replid,
                        "the source cannot continue from the checkpoint (backlog overrun or another history): \
                         falling back to a full resync"
                    );
                }
                let redo = checkpoints.iter().any(Option::is_some);
                let conflict = if redo {
                    ConflictPolicy::Rewrite
                } else {
                    cfg.conflict
                };
                self.status.update(|s| {
                    s.phase = Phase::FullSync;
                    s.replid = replid.clone();
                    s.keys_done = 0;
                    s.keys_expected = None;
                    s.full_syncs += 1;
                });
                sink.begin_full_sync(conflict, redo && cfg.flush_target_on_resync)
                    .await?;
                let target_rdb = sink.rdb_version().await?;
                let opts = fullsync::Options {
                    conflict,
                    max_restore_bytes: cfg.max_restore_bytes,
                    target_rdb_version: target_rdb,
                };
                fullsync::run(
                    &mut source,
                    &mut sink,
                    &self.filter,
                    &cfg.db_map,
                    &opts,
                    &self.status,
                )
                .await?;
                sink.finish_full_sync(&replid, offset).await?;
                let c = sink.counters();
                self.status.update(|s| {
                    s.keys_copied = c.keys_restored;
                    s.keys_skipped = c.keys_skipped;
                    s.bytes_written = c.bytes_written;
                    s.applied_offset = offset;
                });
                info!(%replid, offset, keys = c.keys_restored, "full sync applied");
                sink.start_stream(&replid, offset, &[]).await?;
                replid
            }
            Start::Continue { replid, offset } => {
                sink.start_stream(&replid, offset, &checkpoints).await?;
                replid
            }
        };
        self.status.update(|s| {
            s.phase = Phase::Incremental;
            s.replid = replid.clone();
        });
        let target_rdb = sink.rdb_version().await?;
        self.follow(
            &mut source,
            &mut sink,
            commands.as_deref(),
            target_rdb,
            shutdown,
        )
        .await
    }

    /// The live phase.
    async fn follow(
        &self,
        source: &mut Source,
        sink: &mut Sink,
        commands: Option<&CommandTable>,
        target_rdb: u16,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let mut rates = Rates::new();
        let mut filtered = 0u64;
        let mut partial = 0u64;
        let base = sink.counters().commands_applied;
        let (start_offset, base_read) = (source.offset(), self.status.snapshot().bytes_read);
        let mut tick = tokio::time::Instant::now();
        loop {
            let event = tokio::select! {
                e = source.next_event() => e?,
                () = shutdown.cancelled() => {
                    sink.sync().await?;
                    return Err(Error::Stopped);
                }
            };
            match event {
                StreamEvent::Unit(unit) => {
                    let end = unit.end_offset;
                    match self.filter_unit(unit, commands, target_rdb, &mut filtered, &mut partial)
                    {
                        Some(unit) => sink.push(unit, source.stream_db()).await?,
                        None => sink.advance(end, source.stream_db()),
                    }
                }
                StreamEvent::Skipped { end_offset } => sink.advance(end_offset, source.stream_db()),
                StreamEvent::GetAck { .. } => {}
            }
            // Nothing more to batch: send what is open and wait for it, so the checkpoint and the status
            // catch up while the source is quiet.
            let idle = !source.has_buffered();
            if idle {
                sink.sync().await?;
            }
            if idle || tick.elapsed() >= Duration::from_millis(200) {
                tick = tokio::time::Instant::now();
                let c = sink.counters();
                let (offset, applied) = (source.offset(), sink.committed_offset());
                self.status.update(|s| {
                    s.commands_applied = c.commands_applied;
                    s.commands_filtered = filtered;
                    s.commands_partial = partial;
                    s.bytes_written = c.bytes_written;
                    s.bytes_read = base_read + (offset - start_offset);
                    s.errors = c.errors;
                    if c.last_error.is_some() {
                        s.last_error = c.last_error.clone();
                    }
                    rates.sample(s, c.commands_applied - base, offset, applied);
                });
            }
        }
    }

    /// Applies the filters and the database map to a unit; `None` when nothing of it is forwarded.
    fn filter_unit(
        &self,
        mut unit: Unit,
        commands: Option<&CommandTable>,
        target_rdb: u16,
        filtered: &mut u64,
        partial: &mut u64,
    ) -> Option<Unit> {
        if !self.filter.is_pass_all() {
            unit.commands.retain(|cmd| {
                let name = cmd.name();
                let keys: Vec<&[u8]> = match commands {
                    Some(table) => table.keys(&cmd.argv).unwrap_or_default(),
                    None => Vec::new(),
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
        if unit.commands.is_empty() {
            return None;
        }
        for cmd in &mut unit.commands {
            cmd.db = self.config.db_map.target(cmd.db);
            self.config.db_map.map_arguments(&mut cmd.argv);
            adapt_for_target(&mut cmd.argv, target_rdb);
        }
        Some(unit)
    }

    /// The source's command table, for key extraction by the filters.
    async fn command_table(&self) -> Result<CommandTable, Error> {
        let mut conn = Connection::connect(&self.config.source.connect).await?;
        let reply = conn.call(&[Bytes::from_static(b"COMMAND")]).await?;
        CommandTable::from_command_reply(&reply)
            .map_err(|e| Error::Config(format!("COMMAND of the source: {e}")))
    }
}
