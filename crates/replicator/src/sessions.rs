//! Sessions of the sources without a replication stream: an RDB file ([`SourceKind::RdbFile`]) and a scan
//! ([`SourceKind::Scan`]). They run inside the job's session loop (the same reconnects, backoff, sentinel-managed
//! target and status) and write through the same full-copy code as the RDB of a `PSYNC` full resync
//! ([`crate::fullsync`]), so filters, the database map, the conflict and target policies and conversion for an
//! older target behave the same for every source.
//!
//! Neither has an offset to checkpoint: the target's sink runs without checkpoints (a cluster target's per-master
//! keys are deleted at the end of the copy). A session that must start again (a broken link, a scan's lost
//! notifications) copies everything again with `RESTORE ... REPLACE` over what it wrote before and, on a target
//! the job owns ([`crate::redo`]), deletes the keys it wrote that the source no longer has. A restarted job is a
//! first copy again: nothing in the target says which keys an earlier process wrote.
//!
//! [`SourceKind::RdbFile`]: crate::SourceKind::RdbFile
//! [`SourceKind::Scan`]: crate::SourceKind::Scan

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection};
use ferry_topology::CommandTable;
use tracing::{info, warn};

use crate::error::Error;
use crate::fullsync::{self, Applier, Copied, RdbInput};
use crate::job::Replicator;
use crate::job::SourceKind;
use crate::pipeline::convert::{ConflictPolicy, PolicyReport, TargetFormat};
use crate::redo::CopyPlan;
use crate::sink::cluster::ClusterSink;
use crate::sink::standalone::StandaloneSink;
use crate::sink::Sink;
use crate::source::aof::AofOptions;
use crate::source::file::RdbFile;
use crate::source::scan::{Notifications, Read, Reader, ScanOptions};
use crate::source::{StreamEvent, StreamParser};
use crate::status::{JobEventKind, Phase};

impl Replicator {
    /// Restores the RDB file at `path` into `target`; returns once every key is written and acknowledged.
    pub(crate) async fn file_session(
        &self,
        path: &Path,
        target: &ConnectOptions,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        let mut file = RdbFile::open(path).await?;
        let (mut sink, format) = self.copy_sink(target).await?;
        let (opts, plan) = self.begin_copy(&mut sink, &format, report).await?;
        info!(file = %path.display(), bytes = file.len(), "restoring an RDB file");
        let copied = fullsync::run(
            &mut file,
            &mut sink,
            &self.filter,
            &self.config.db_map,
            &opts,
            report,
            &self.status,
        )
        .await?;
        self.end_copy(&mut sink, plan, copied).await?;
        info!(file = %path.display(), keys = self.status.snapshot().keys_copied, "RDB file restored");
        Ok(())
    }

    /// Replays the append-only file(s) of `aof` into `target` (see [`crate::source::aof`]); returns once every
    /// command is written and acknowledged.
    pub(crate) async fn aof_session(
        &self,
        aof: &AofOptions,
        target: &ConnectOptions,
        live: &mut bool,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        let files = crate::source::aof::files(&aof.path)?;
        let commands = self.command_table(target).await.ok();
        let (mut sink, format) = self.copy_sink(target).await?;
        let (mut opts, mut plan) = self.begin_copy(&mut sink, &format, report).await?;
        // The commands after the base write keys no copy records: a redo of the replay never sweeps.
        (opts.record_keys, plan.sweep) = (false, false);
        let mut plan = Some(plan);
        info!(path = %aof.path.display(), files = files.len(), until = ?aof.timestamp, "replaying an append-only file");
        let mut streaming = false;
        let (mut offset, mut db) = (0u64, 0i64);
        let (mut filtered, mut partial, mut applied) = (0u64, 0u64, 0u64);
        'files: for path in &files {
            let mut file = RdbFile::open(path).await?;
            let mut rest = Bytes::new();
            let mut copied = Copied::default();
            if crate::source::aof::starts_with_rdb(path)? {
                if streaming {
                    return Err(Error::Aof(format!(
                        "{}: an RDB after the first file",
                        path.display()
                    )));
                }
                (copied, rest) = fullsync::run_prefix(
                    &mut file,
                    &mut sink,
                    &self.filter,
                    &self.config.db_map,
                    &opts,
                    report,
                    &self.status,
                )
                .await?;
            }
            if !streaming {
                // The base's keys are written: the commands follow as a stream without checkpoints.
                if let Some(plan) = plan.take() {
                    self.end_copy(&mut sink, plan, copied).await?;
                }
                // The copy's sink ended with its checkpoints deleted (a cluster target's masters keep one while
                // they write): the commands go through a fresh one, which deletes its own at the end.
                sink = self.copy_sink(target).await?.0;
                sink.start_stream("aof", 0, &[]).await?;
                self.status.set_phase(Phase::Incremental, |_| {});
                streaming = true;
                *live = true;
            }
            // Where the commands start in the file (after an RDB preamble), for the byte positions in messages.
            let in_file = file.bytes_read() - rest.len() as u64 - offset;
            let mut parser = StreamParser::new(offset, db);
            let mut at_end = false;
            parser.feed(&rest);
            loop {
                let event = if parser.at_annotation() {
                    match parser.next_annotation() {
                        Some(line) => {
                            let later = crate::source::aof::annotation_time(&line)
                                .zip(aof.timestamp)
                                .is_some_and(|(ts, until)| ts > until);
                            if later {
                                info!(file = %path.display(), annotation = %String::from_utf8_lossy(&line), "reached the recovery timestamp; the rest is not replayed");
                                break 'files;
                            }
                            continue;
                        }
                        None => None,
                    }
                } else {
                    parser.next_event().map_err(|e| {
                        // The decoder's errors speak of a connection; here the bytes are a file's.
                        let e = e.to_string();
                        let e = e.strip_prefix("connection error: ").unwrap_or(&e);
                        Error::Aof(format!(
                            "{} at byte {}: not a command: {e}",
                            path.display(),
                            parser.offset() + in_file
                        ))
                    })?
                };
                match event {
                    Some(StreamEvent::Unit(unit)) => {
                        applied += unit.commands.len() as u64;
                        let end = (unit.end_offset, unit.end_db);
                        match self.filter_unit(
                            unit,
                            commands.as_ref(),
                            &format,
                            report,
                            &mut filtered,
                            &mut partial,
                        )? {
                            Some(unit) => sink.push(unit).await?,
                            None => sink.advance(end.0, end.1),
                        }
                    }
                    Some(StreamEvent::Skipped { end_offset, db }) => sink.advance(end_offset, db),
                    Some(StreamEvent::GetAck { .. }) => {}
                    None if at_end => break,
                    None => match file.next_chunk().await? {
                        Some(chunk) => parser.feed(&chunk),
                        None => {
                            at_end = true;
                            if parser.buffered() > 0 || parser.in_transaction() {
                                warn!(
                                    file = %path.display(),
                                    at_byte = parser.boundary().0 + in_file,
                                    "the file ends inside a command or a MULTI without its EXEC: replayed up to the last complete one, as Redis loads it with aof-load-truncated"
                                );
                            }
                        }
                    },
                }
                if !parser.in_transaction() && parser.buffered() == 0 {
                    self.status.update(|s| {
                        s.commands_applied = applied;
                        s.commands_filtered = filtered;
                        s.commands_partial = partial;
                    });
                }
            }
            (offset, db) = (parser.boundary().0, parser.boundary().1);
        }
        sink.sync().await?;
        sink.drain().await?;
        sink.delete_own_checkpoints().await?;
        let c = sink.counters();
        self.status.update(|s| {
            s.commands_applied = applied;
            s.commands_filtered = filtered;
            s.commands_partial = partial;
            s.bytes_written = c.bytes_written;
            s.errors = c.errors;
            s.set_policy(report);
        });
        info!(path = %aof.path.display(), commands = applied, "append-only file replayed");
        Ok(())
    }

    /// Copies `source` by `SCAN` + `DUMP`, then (with notifications) re-reads every key it hears changed
    /// until the job is stopped. `live` is set once the copy is done.
    pub(crate) async fn scan_session(
        &self,
        source: &ConnectOptions,
        scan: &ScanOptions,
        target: &ConnectOptions,
        live: &mut bool,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        let mut source = source.clone();
        source.read_timeout = Some(self.config.sink.reply_timeout);
        let (mut sink, format) = self.copy_sink(target).await?;
        // A cluster source: every master, each scanned and followed on its own connections.
        let nodes = match scan.cluster {
            true => crate::source::scan::cluster_masters(&source).await?,
            false => vec![source.clone()],
        };
        // Subscribed before the scan starts: a change during the scan is heard and read again after it.
        let notes = match scan.notifications {
            true => Some(Notifications::subscribe(&nodes, scan.dbs.as_deref()).await?),
            false => None,
        };
        let mut readers = Vec::with_capacity(nodes.len());
        let mut keyspaces = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let mut reader = Reader::connect(node).await?;
            keyspaces.push(reader.keyspace(scan.dbs.as_deref()).await?);
            readers.push(reader);
        }
        let (opts, plan) = self.begin_copy(&mut sink, &format, report).await?;
        let batch = scan.batch.max(1);
        let mut bytes_read = 0u64;
        let copied = {
            let mut applier = Applier::new(
                &self.filter,
                &self.config.db_map,
                &opts,
                report,
                &self.status,
            );
            applier.expect(keyspaces.iter().flatten().map(|(_, keys)| keys).sum());
            // Function libraries (a change to them later is not followed: no notification names it).
            for code in readers[0].functions().await? {
                applier.function(&mut sink, code).await?;
            }
            for (reader, keyspace) in readers.iter_mut().zip(&keyspaces) {
                for &(db, _) in keyspace {
                    if !self.filter.db_passes(db) {
                        continue;
                    }
                    let mut cursor = Bytes::from_static(b"0");
                    loop {
                        let (next, keys) = reader.scan(db, &cursor, batch).await?;
                        let reads = reader.read(db, &keys).await?;
                        for (key, read) in keys.into_iter().zip(reads) {
                            if let Read::Value {
                                payload,
                                expire_at_ms,
                            } = read
                            {
                                bytes_read += payload.len() as u64;
                                applier
                                    .dumped(&mut sink, db, key, &payload, expire_at_ms)
                                    .await?;
                            }
                        }
                        applier.progress(&sink, bytes_read, false);
                        if &next[..] == b"0" {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
            applier.finish(&mut sink, bytes_read).await?
        };
        self.end_copy(&mut sink, plan, copied).await?;
        let keys = self.status.snapshot().keys_copied;
        let Some(notes) = notes else {
            info!(keys, "scan copied");
            return Ok(());
        };
        info!(
            keys,
            "scan copied; following the keyspace notifications of the source"
        );
        self.status.set_phase(Phase::Incremental, |_| {});
        *live = true;
        self.follow_notifications(&notes, &mut readers, &mut sink, &opts, batch, report)
            .await
    }

    /// The live phase of a scan source: each key a notification names is read again (`DUMP` + expiry) and
    /// written with `RESTORE ... REPLACE`, or deleted when it is gone.
    async fn follow_notifications(
        &self,
        notes: &Notifications,
        readers: &mut [Reader],
        sink: &mut Sink,
        copy: &fullsync::Options,
        batch: usize,
        report: &mut PolicyReport,
    ) -> Result<(), Error> {
        let opts = fullsync::Options {
            conflict: ConflictPolicy::Rewrite,
            batch_strings: false,
            record_keys: false,
            ..copy.clone()
        };
        let cfg = &self.config;
        let mut applied = 0u64;
        let mut rates = crate::status::Rates::new();
        let mut applier = Applier::new(&self.filter, &cfg.db_map, &opts, report, &self.status);
        loop {
            let (node, db, keys) = notes.next_batch(batch).await?;
            let reader = readers
                .get_mut(node)
                .ok_or_else(|| Error::Protocol(format!("a notification of unknown node {node}")))?;
            let reads = reader.read(db, &keys).await?;
            for (key, read) in keys.into_iter().zip(reads) {
                match read {
                    Read::Value {
                        payload,
                        expire_at_ms,
                    } => {
                        applier
                            .dumped(sink, db, key, &payload, expire_at_ms)
                            .await?
                    }
                    Read::Gone => {
                        if self.filter.db_passes(db) && self.filter.key_passes(&key) {
                            sink.write_plain(
                                cfg.db_map.target(db),
                                &[Bytes::from_static(b"DEL"), key],
                            )
                            .await?;
                        }
                    }
                }
                applied += 1;
            }
            let pending = notes.pending();
            if pending == 0 {
                sink.drain().await?;
            }
            let c = sink.counters();
            self.status.update(|s| {
                s.keys_pending = pending;
                s.commands_applied = applied;
                s.bytes_written = c.bytes_written;
                s.errors = c.errors;
                rates.sample(s, applied, 0, 0);
            });
        }
    }

    /// The target's sink for a copy without a replication stream: no checkpoints (a cluster target's are
    /// written under a tag of their own and deleted by [`Replicator::end_copy`]).
    async fn copy_sink(&self, target: &ConnectOptions) -> Result<(Sink, TargetFormat), Error> {
        let cfg = &self.config;
        let mut opts = cfg.sink.clone();
        opts.checkpoint = false;
        opts.checkpoint_tag = format!("{}-copy", cfg.sink.checkpoint_tag);
        let mut sink = if cfg.target_cluster {
            // The commands are written by ferry itself: the target's own table routes them.
            let mut conn = Connection::connect(target).await?;
            let reply = conn.call(&[Bytes::from_static(b"COMMAND")]).await?;
            let table = CommandTable::from_command_reply(&reply)
                .map_err(|e| Error::Config(format!("COMMAND of the target: {e}")))?;
            Sink::Cluster(ClusterSink::connect(target, opts, Arc::new(table)).await?)
        } else {
            Sink::Standalone(Box::new(StandaloneSink::connect(target, opts).await?))
        };
        let format = sink.target_format().await?;
        Ok((sink, format))
    }

    /// Starts a copy: the status, the conflict policy (a copy done again rewrites what the earlier one wrote),
    /// the sink's full-copy mode, what it does about earlier writes ([`crate::redo`]).
    async fn begin_copy(
        &self,
        sink: &mut Sink,
        format: &TargetFormat,
        report: &mut PolicyReport,
    ) -> Result<(fullsync::Options, CopyPlan), Error> {
        let cfg = &self.config;
        // No checkpoint says whether this is a redo: the ownership record and earlier copies of this process do.
        let plan = self.start_copy(sink, None).await?;
        let reason = match &cfg.source_kind {
            SourceKind::RdbFile(_) => "an RDB file source is copied in full",
            SourceKind::AofFile(_) => "an append-only file is replayed from its start",
            _ => "a scan source copies its keys by SCAN and DUMP",
        };
        self.status.emit(JobEventKind::FullResync {
            reason: reason.to_string(),
        });
        self.status.set_phase(Phase::FullSync, |s| {
            s.keys_done = 0;
            s.keys_expected = None;
            s.full_syncs += 1;
        });
        report.clear();
        let opts = fullsync::Options {
            conflict: plan.conflict,
            max_restore_bytes: cfg.max_restore_bytes,
            target: format.clone(),
            policy: cfg.target_policy,
            batch_strings: true,
            record_keys: plan.sweep,
        };
        Ok((opts, plan))
    }

    /// Ends a copy: the sweep of a redo, every write acknowledged, no checkpoint left behind, the counts in the
    /// status.
    async fn end_copy(&self, sink: &mut Sink, plan: CopyPlan, copied: Copied) -> Result<(), Error> {
        self.sweep(sink, plan, &copied.keys).await?;
        let big_keys = copied.big_keys;
        sink.finish_full_sync("", 0).await?;
        sink.delete_own_checkpoints().await?;
        let c = sink.counters();
        self.status.update(|s| {
            s.keys_copied = c.keys_restored + big_keys;
            s.keys_skipped = c.keys_skipped;
            s.bytes_written = c.bytes_written;
            s.errors = c.errors;
        });
        Ok(())
    }
}
