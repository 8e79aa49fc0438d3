//! The standalone sink: one target server (or one master of a cluster target, see [`super::cluster`]), one
//! pipelined connection (`Pipe`) shared by the writers of the job's phases:
//!
//! - the full sync: `RestoreWriter` (`RESTORE`s, string batches, element commands of big keys), between a
//!   `fullsync` marker and the checkpoint stored once every key is acknowledged;
//! - the live phase with checkpoints: `ChainWriter`, chained batch scripts (see [`super::chain`]);
//! - the live phase without checkpoints: `UnwrappedWriter`.

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection, Frame};
use tracing::{debug, info, warn};

use crate::checkpoint::{self, Checkpoint, Position};
use crate::error::Error;
use crate::pipeline::convert::{ConflictPolicy, PolicyKey, ReportEntry, TargetFormat};
use crate::pipeline::{command_name, Unit};
use crate::sink::chain::{self, Alone, AloneOutcome, ChainWriter, Step};
use crate::sink::pipe::Pipe;
use crate::sink::restore::{self, RestoreWriter};
use crate::sink::strings::{StringGroup, STANDALONE_GROUP_KEYS};
use crate::sink::unwrapped::{self, UnwrappedWriter};
use crate::sink::{target_error, ErrorPolicy, SinkCounters, SinkOptions, Writer};

/// What the reply to a command on the connection must be, by the writer that sent it.
#[derive(Debug)]
enum Pending {
    /// `+OK` of our own `SELECT`, `FLUSHALL` or checkpoint `SET`.
    Ok(&'static str),
    /// An integer reply of our own write (`DEL`, `HSET` of the stored report).
    Integer(&'static str),
    Restore(restore::Pending),
    Batch(chain::Pending),
    Unwrapped(unwrapped::Pending),
}

/// The live-phase writer.
#[derive(Debug)]
enum Live {
    Chain(Box<ChainWriter>),
    Unwrapped(UnwrappedWriter),
}

/// A cluster master this sink writes to: its node id and the slots it owned when the session started, named in
/// its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSlots {
    pub id: String,
    pub slots: Vec<(u16, u16)>,
}

/// A sink writing to one server.
pub struct StandaloneSink {
    pipe: Pipe<Pending>,
    opts: SinkOptions,
    checkpoint_key: String,
    restore: RestoreWriter,
    live: Live,
    counters: SinkCounters,
    client_id: Option<i64>,
    client_name: String,
    /// A cluster master: batch scripts with `allow-cross-slot-keys`, checkpoints naming the node and slots.
    node: Option<NodeSlots>,
    /// The checkpoint key's value as last read or written (the chain's start).
    stored: Option<String>,
    /// Small strings of the full copy waiting for their `MSET`/`MSETNX`.
    strings: Option<StringGroup>,
    /// A group complete and not sent yet (see [`StandaloneSink::gather_string`]).
    ready_strings: Option<StringGroup>,
    /// The target's `COMMAND` table once read (see [`StandaloneSink::command_table`]); `Some(None)`: refused.
    command_table: Option<Option<std::sync::Arc<ferry_topology::CommandTable>>>,
}

impl std::fmt::Debug for StandaloneSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneSink")
            .field("peer", &self.pipe.peer())
            .field("in_flight", &self.pipe.in_flight())
            .field("committed_offset", &self.committed_offset())
            .finish_non_exhaustive()
    }
}

impl StandaloneSink {
    /// Connects to the target.
    pub async fn connect(
        target: &ConnectOptions,
        opts: SinkOptions,
    ) -> Result<StandaloneSink, Error> {
        StandaloneSink::open(target, opts, None).await
    }

    /// Connects to one master of a cluster target.
    pub(crate) async fn connect_cluster_node(
        node: &ConnectOptions,
        opts: SinkOptions,
        slots: NodeSlots,
    ) -> Result<StandaloneSink, Error> {
        StandaloneSink::open(node, opts, Some(slots)).await
    }

    async fn open(
        target: &ConnectOptions,
        opts: SinkOptions,
        node: Option<NodeSlots>,
    ) -> Result<StandaloneSink, Error> {
        let mut target = target.clone();
        let tag: String = opts
            .checkpoint_tag
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        let client_name = format!("ferry-replicator-{tag}");
        target.client_name = Some(client_name.clone());
        let mut conn = Connection::connect(&target).await?;
        conn.set_read_timeout(Some(opts.reply_timeout));
        let checkpoint_key = checkpoint::key_name(&opts.checkpoint_tag);
        let live = if opts.checkpoint {
            Live::Chain(Box::new(ChainWriter::new(
                &checkpoint_key,
                Bytes::new(),
                node.is_none(),
                &opts,
            )))
        } else {
            Live::Unwrapped(UnwrappedWriter::new(opts.on_error))
        };
        Ok(StandaloneSink {
            pipe: Pipe::new(conn, target.db, opts.window_commands, opts.window_bytes),
            restore: RestoreWriter::new(opts.on_error),
            live,
            counters: SinkCounters::default(),
            client_id: None,
            client_name,
            checkpoint_key,
            node,
            stored: None,
            strings: None,
            ready_strings: None,
            command_table: None,
            opts,
        })
    }

    /// Whether this sink writes to one master of a cluster target.
    pub(crate) fn is_cluster_node(&self) -> bool {
        self.node.is_some()
    }

    /// This connection's `CLIENT ID` on the target (asked once).
    pub async fn client_id(&mut self) -> Result<i64, Error> {
        if let Some(id) = self.client_id {
            return Ok(id);
        }
        self.drain().await?;
        let id = self
            .pipe
            .call(&["CLIENT", "ID"])
            .await?
            .as_integer()
            .ok_or_else(|| Error::Protocol("CLIENT ID did not answer an integer".into()))?;
        self.client_id = Some(id);
        Ok(id)
    }

    /// Fences off the connections of earlier sessions and processes of this job (same client name): `CLIENT
    /// KILL ID` each. Once the target has run this, whatever they sent is either applied or discarded for good,
    /// so the checkpoint read next is final.
    pub async fn fence(&mut self) -> Result<(), Error> {
        let me = self.client_id().await?;
        let list = match self.pipe.call(&["CLIENT", "LIST", "TYPE", "normal"]).await {
            Ok(list) => list,
            // `CLIENT LIST` is in `@admin`/`@dangerous`, which an application user is often denied. The batch
            // chain still refuses a batch of an earlier connection that lands after this session read the
            // checkpoint (it would not find the checkpoint it chains to), and that session's restart from
            // the checkpoint then is exact; what the fence adds is that nothing of an earlier process lands
            // at all, for a full copy's writes too.
            Err(Error::Resp(e)) if ferry_resp::probe::is_refused(&e) => {
                warn!(
                    error = %e,
                    "the target user may not list clients: connections of an earlier run of this job are not \
                     fenced off (allow `client|list` and `client|kill` to this user, or make sure no earlier \
                     process of this job is still running)"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let text = list
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        for line in text.lines() {
            let field = |k: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .map(str::to_string)
            };
            let (Some(id), Some(n)) = (field("id="), field("name=")) else {
                continue;
            };
            if n == self.client_name && id != me.to_string() {
                debug!(client = %id, "fencing off an earlier connection of this job");
                match self.pipe.call(&["CLIENT", "KILL", "ID", id.as_str()]).await {
                    Ok(_) => {}
                    Err(e) if matches!(&e, Error::Resp(r) if r.server_error().is_some()) => {} // gone already
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// What the sink did so far.
    pub fn counters(&self) -> SinkCounters {
        let mut c = self.counters.clone();
        c.bytes_written = self.pipe.bytes_written;
        c
    }

    /// The highest source offset the target acknowledged (checkpointed when checkpoints are on).
    pub fn committed_offset(&self) -> u64 {
        match &self.live {
            Live::Chain(w) => w.committed(),
            Live::Unwrapped(w) => w.committed(),
        }
    }

    /// The checkpoint stored in the target, if any.
    pub async fn read_checkpoint(&mut self) -> Result<Option<Checkpoint>, Error> {
        self.select_now(self.opts.checkpoint_db).await?;
        let key = self.checkpoint_key.clone();
        match self.pipe.call(&["GET", key.as_str()]).await? {
            Frame::Bulk(value) => {
                let cp = Checkpoint::decode(&value)?;
                crate::checkpoint::admit(&cp, self.opts.epoch)?;
                self.stored = Some(String::from_utf8_lossy(&value).into_owned());
                Ok(Some(cp))
            }
            f if f.is_null() => {
                self.stored = None;
                Ok(None)
            }
            other => Err(Error::Checkpoint(format!("GET returned {other:?}"))),
        }
    }

    /// What the target loads and knows (family, version, RDB version, field expiries), from its `INFO server`:
    /// a Valkey 9 target reports `redis_version:7.2.4` and loads RDB 80 with field expiries.
    ///
    /// An ACL user without `INFO` (it is in `@dangerous`, which application users are often denied) gets the
    /// family and version from `HELLO` (without arguments: Redis 6.2 and later; in `@connection`).
    pub async fn target_format(&mut self) -> Result<TargetFormat, Error> {
        self.drain().await?;
        let text = match ferry_resp::probe::info_server(self.pipe.direct().await?).await {
            Ok(text) => text,
            Err(e) if e.server_error().is_some() => {
                return Err(Error::Target {
                    command: "INFO".into(),
                    message: format!(
                        "{e}; ferry needs INFO or HELLO to learn the target's version"
                    ),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if !text.lines().any(|l| l.starts_with("redis_version:")) {
            return Err(Error::Protocol("INFO server has no redis_version".into()));
        }
        // The module types it holds come from the modules it has loaded; a server that refuses `MODULE LIST`
        // (before 4.0, or an ACL without it) is taken to hold none, so module keys follow the target policy.
        let modules = match self.pipe.call(&["MODULE", "LIST"]).await {
            Ok(Frame::Array(entries)) => entries.iter().filter_map(module_name).collect(),
            Ok(_) => Vec::new(),
            Err(Error::Resp(e)) if e.server_error().is_some() => Vec::new(),
            Err(other) => return Err(other),
        };
        let format = TargetFormat::from_info(&text).with_loaded_modules(modules);
        // The commands it knows, so a live command it does not know follows the target policy before it is sent;
        // without its table, known by version.
        Ok(match self.command_table().await? {
            Some(table) => format.with_commands(table.commands().map(|c| c.name.as_str())),
            None => format,
        })
    }

    /// Starts a full sync: optionally empties the target, then stores the `fullsync` marker (so a restart
    /// knows the target holds part of an RDB).
    pub async fn begin_full_sync(
        &mut self,
        conflict: ConflictPolicy,
        flush: bool,
    ) -> Result<(), Error> {
        self.drain().await?;
        self.restore.conflict = conflict;
        if flush {
            warn!("emptying the target (FLUSHALL) before the full sync");
            self.pipe.write(&["FLUSHALL"], Pending::Ok("FLUSHALL"));
        }
        if self.opts.checkpoint {
            self.write_checkpoint(&Checkpoint::FullSyncInProgress);
            // The stored report describes the copy this one replaces.
            let (skipped, converted) = checkpoint::report_key_names(&self.opts.checkpoint_tag);
            self.pipe.write(
                &["DEL", skipped.as_str(), converted.as_str()],
                Pending::Integer("DEL report"),
            );
        }
        self.drain().await
    }

    /// Writes one `RESTORE` (built by [`crate::pipeline::convert::restore_command`]) in database `db`.
    pub async fn restore(&mut self, db: i64, key: Bytes, argv: &[Bytes]) -> Result<(), Error> {
        self.select(db);
        self.pipe
            .write(argv, Pending::Restore(restore::Pending::Restore { key }));
        self.make_room().await
    }

    /// Gathers a small string key of the full sync for an `MSET` (policy rewrite) or `MSETNX` (otherwise; when
    /// the target refuses it because a key exists, the keys are retried one by one with `SET ... NX` so the
    /// conflict policy applies per key) of up to [`STANDALONE_GROUP_KEYS`] keys: cheaper for the target than
    /// one `RESTORE` per key. [`StandaloneSink::finish_full_sync`] writes what is left.
    pub async fn push_string(&mut self, db: i64, key: &[u8], value: &[u8]) -> Result<(), Error> {
        if self.gather_string(db, key, value) {
            self.send_gathered().await?;
        }
        Ok(())
    }

    /// The part of [`StandaloneSink::push_string`] that only gathers (no await, for the full copy's hot loop):
    /// true when a group is complete and [`StandaloneSink::send_gathered`] must run before the next string.
    pub(crate) fn gather_string(&mut self, db: i64, key: &[u8], value: &[u8]) -> bool {
        if let Some(group) = self.strings.take_if(|g| g.db != db) {
            self.ready_strings = Some(group);
        }
        let group = self
            .strings
            .get_or_insert_with(|| StringGroup::new(db, 64 * STANDALONE_GROUP_KEYS));
        group.push(key, value);
        if group.len() >= STANDALONE_GROUP_KEYS {
            // Both due at once only with groups of one key: then this one waits in `strings`, which
            // `send_gathered` also sends when full.
            let full = self.strings.take();
            if self.ready_strings.is_none() {
                self.ready_strings = full;
            } else {
                self.strings = full;
                return true;
            }
        }
        self.ready_strings.is_some()
    }

    /// Sends the groups [`StandaloneSink::gather_string`] completed.
    pub(crate) async fn send_gathered(&mut self) -> Result<(), Error> {
        if let Some(group) = self.ready_strings.take() {
            self.send_strings(group).await?;
        }
        if let Some(group) = self.strings.take_if(|g| g.len() >= STANDALONE_GROUP_KEYS) {
            self.send_strings(group).await?;
        }
        Ok(())
    }

    /// Writes the small strings gathered by [`StandaloneSink::push_string`].
    pub async fn flush_strings(&mut self) -> Result<(), Error> {
        self.send_gathered().await?;
        match self.strings.take() {
            Some(group) => self.send_strings(group).await,
            None => Ok(()),
        }
    }

    /// Writes one group of small strings as `MSET`/`MSETNX`.
    pub(crate) async fn send_strings(&mut self, group: StringGroup) -> Result<(), Error> {
        self.select(group.db);
        let (head, args, pending) = self.restore.strings(group);
        self.pipe
            .write_encoded(&head, &args, Pending::Restore(pending));
        self.make_room().await
    }

    /// Writes one command outside any transaction (element commands of a big key, `FUNCTION LOAD`).
    pub async fn write_plain(&mut self, db: i64, argv: &[Bytes]) -> Result<(), Error> {
        self.select(db);
        let name = command_name(argv);
        self.pipe
            .write(argv, Pending::Restore(restore::Pending::Element { name }));
        self.make_room().await
    }

    /// Whether `key` exists in database `db` (waits for everything written before).
    pub async fn exists(&mut self, db: i64, key: &Bytes) -> Result<bool, Error> {
        self.select_now(db).await?;
        let reply = self
            .pipe
            .call(&[Bytes::from_static(b"EXISTS"), key.clone()])
            .await?;
        Ok(reply.as_integer().unwrap_or(0) > 0)
    }

    /// Counts a key of the full sync left as it was on the target.
    pub fn count_skipped(&mut self) {
        self.counters.keys_skipped += 1;
    }

    /// The checkpoint position this sink writes for `replid` at `offset` (stream database `db`).
    fn position(&self, replid: &str, offset: u64, db: i64) -> Position {
        let mut p = Position::new(replid, offset, db);
        p.epoch = self.opts.epoch;
        if let Some(node) = &self.node {
            p.node = Some(node.id.clone());
            p.slots = node.slots.clone();
        }
        p
    }

    /// Ends a full sync: waits for every reply, stores the keys the target policy skipped or converted in the
    /// copy (see [`StandaloneSink::finish_full_sync_reporting`]), then the checkpoint at `offset` of `replid` (the stream that follows an RDB starts in
    /// database 0 and selects before its first write). A job killed before the checkpoint is stored finds the
    /// `fullsync` marker and copies again, which clears the report first: the report lists a key of the copy
    /// exactly when the copy is committed.
    pub async fn finish_full_sync(&mut self, replid: &str, offset: u64) -> Result<(), Error> {
        self.finish_full_sync_reporting(replid, offset, &[]).await
    }

    /// [`StandaloneSink::finish_full_sync`], storing `report` (the keys the target policy skipped or converted
    /// in the copy) before the checkpoint.
    pub(crate) async fn finish_full_sync_reporting(
        &mut self,
        replid: &str,
        offset: u64,
        report: &[ReportEntry],
    ) -> Result<(), Error> {
        self.flush_strings().await?;
        self.drain().await?;
        if self.opts.checkpoint {
            // A DR pair may have fenced this job while it copied: the fence stays, the job stops.
            self.read_checkpoint().await?;
            self.write_report(report).await?;
            let cp = Checkpoint::Committed(self.position(replid, offset, 0));
            self.write_checkpoint(&cp);
            self.drain().await?;
            self.stored = Some(cp.encode());
        }
        if let Live::Unwrapped(w) = &mut self.live {
            w.set_committed(offset);
        }
        Ok(())
    }

    /// `HSET`s of `entries` into the stored report's hashes (checkpoint database), outside any batch: the full
    /// copy's keys, stored before its checkpoint.
    async fn write_report(&mut self, entries: &[ReportEntry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.select(self.opts.checkpoint_db);
        let (skipped, converted) = checkpoint::report_key_names(&self.opts.checkpoint_tag);
        for (hash, kind) in [(skipped, true), (converted, false)] {
            let of_kind: Vec<&ReportEntry> = entries.iter().filter(|e| e.skipped == kind).collect();
            for chunk in of_kind.chunks(256) {
                let mut argv = vec![Bytes::from_static(b"HSET"), Bytes::from(hash.clone())];
                for e in chunk {
                    argv.push(e.key.member());
                    argv.push(e.key.reason());
                }
                self.pipe.write(&argv, Pending::Integer("HSET report"));
                self.make_room().await?;
            }
        }
        self.drain().await
    }

    /// The keys stored in the report hash `hash` (checkpoint database): what the target policy skipped or
    /// converted since the current copy began, as committed. A field that does not decode (written by
    /// something else) is left out with a warning.
    pub(crate) async fn read_report_hash(&mut self, hash: &str) -> Result<Vec<PolicyKey>, Error> {
        self.select_now(self.opts.checkpoint_db).await?;
        let mut list = Vec::new();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let reply = self
                .pipe
                .call(&[
                    Bytes::from_static(b"HSCAN"),
                    Bytes::from(hash.to_string()),
                    cursor.clone(),
                    Bytes::from_static(b"COUNT"),
                    Bytes::from_static(b"1000"),
                ])
                .await?;
            let items = match reply {
                Frame::Array(items) if items.len() == 2 => items,
                Frame::Error(e) => return Err(target_error(&mut self.counters, "HSCAN", &e)),
                other => return Err(Error::Protocol(format!("HSCAN answered {other:?}"))),
            };
            let mut items = items.into_iter();
            cursor = items
                .next()
                .and_then(|f| f.as_bytes().map(Bytes::copy_from_slice))
                .ok_or_else(|| Error::Protocol("HSCAN without a cursor".into()))?;
            let pairs = match items.next() {
                Some(Frame::Array(pairs)) => pairs,
                _ => Vec::new(),
            };
            for pair in pairs.chunks(2) {
                let (Some(member), Some(reason)) = (
                    pair.first().and_then(Frame::as_bytes),
                    pair.get(1).and_then(Frame::as_bytes),
                ) else {
                    continue;
                };
                match PolicyKey::decode(member, reason) {
                    Some(k) => list.push(k),
                    None => warn!(
                        hash,
                        "a field of the stored policy report does not decode: left out"
                    ),
                }
            }
            if &cursor[..] == b"0" {
                return Ok(list);
            }
        }
    }

    /// The stored report of this sink's checkpoint tag: skipped keys, converted keys (see
    /// [`StandaloneSink::read_report_hash`]).
    pub(crate) async fn read_report(&mut self) -> Result<(Vec<PolicyKey>, Vec<PolicyKey>), Error> {
        let (skipped, converted) = checkpoint::report_key_names(&self.opts.checkpoint_tag);
        Ok((
            self.read_report_hash(&skipped).await?,
            self.read_report_hash(&converted).await?,
        ))
    }

    /// Starts the live phase in history `replid` at stream position `start` (the stored checkpoint's position
    /// when there is one, else the stream's start); units up to `skip` (offset, part) are in the target
    /// already. Loads the batch script.
    pub(crate) async fn start_live(
        &mut self,
        replid: &str,
        start: &Position,
        skip: (u64, u32),
    ) -> Result<(), Error> {
        self.drain().await?;
        let base = self.position(replid, 0, 0);
        let Live::Chain(_) = &self.live else {
            if let Live::Unwrapped(w) = &mut self.live {
                w.set_committed(start.offset);
            }
            return Ok(());
        };
        let sha = self.load_script().await?;
        let noscript = self.noscript_commands().await?;
        let stored = self.stored.clone().unwrap_or_default();
        if let Live::Chain(w) = &mut self.live {
            **w = ChainWriter::new(&self.checkpoint_key, sha, self.node.is_none(), &self.opts);
            w.set_noscript(noscript);
            w.start(base, stored, start, skip);
        }
        Ok(())
    }

    /// The commands the target refuses inside a script (flag `noscript`): the batch script cannot carry them
    /// (a module's, such as FalkorDB's `GRAPH.QUERY`, besides the built-in ones the chain knows). A target that
    /// refuses `COMMAND` leaves the built-in list.
    async fn noscript_commands(&mut self) -> Result<std::collections::HashSet<String>, Error> {
        let Some(table) = self.command_table().await? else {
            return Ok(Default::default());
        };
        Ok(table
            .commands()
            .filter(|c| c.has_flag("noscript"))
            .map(|c| c.name.to_ascii_lowercase())
            .collect())
    }

    /// The target's `COMMAND` table, read once per connection; `None` when it refuses `COMMAND` (renamed, or an
    /// ACL without it) or answers something that is not a command table.
    async fn command_table(
        &mut self,
    ) -> Result<Option<std::sync::Arc<ferry_topology::CommandTable>>, Error> {
        if let Some(table) = &self.command_table {
            return Ok(table.clone());
        }
        let reply = self
            .pipe
            .call_all(&[vec![Bytes::from_static(b"COMMAND")]])
            .await?
            .pop()
            .unwrap_or(Frame::Null);
        let table = ferry_topology::CommandTable::from_command_reply(&reply)
            .ok()
            .map(std::sync::Arc::new);
        self.command_table = Some(table.clone());
        Ok(table)
    }

    /// `SCRIPT LOAD` of the batch script (with flags on a cluster node); its SHA1.
    async fn load_script(&mut self) -> Result<Bytes, Error> {
        let text = chain::script_text(self.node.is_some());
        match self.pipe.call(&["SCRIPT", "LOAD", text.as_str()]).await? {
            Frame::Bulk(sha) => Ok(sha),
            Frame::Error(e) => Err(target_error(&mut self.counters, "SCRIPT LOAD", &e)),
            other => Err(Error::Protocol(format!("SCRIPT LOAD answered {other:?}"))),
        }
    }

    /// Starts the live phase at stream `offset` given this target's stored checkpoint (see
    /// `StandaloneSink::start_live`).
    pub async fn start_stream(
        &mut self,
        replid: &str,
        offset: u64,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), Error> {
        let start = checkpoint
            .and_then(Checkpoint::position)
            .filter(|p| p.offset >= offset)
            .cloned()
            .unwrap_or_else(|| Position::new(replid, offset, 0));
        let skip = (start.offset, start.part);
        self.start_live(replid, &start, skip).await
    }

    /// Records that the stream moved to `offset` (stream database `db`) without anything to apply.
    pub fn advance(&mut self, offset: u64, db: i64) {
        if let Live::Chain(w) = &mut self.live {
            w.advance(offset, db);
        }
    }

    /// Adds a unit of the live stream (already filtered and mapped) to the open batch; a full batch is
    /// written. Call [`StandaloneSink::flush_batch`] when the source has nothing more buffered.
    pub async fn push(&mut self, unit: Unit) -> Result<(), Error> {
        match &mut self.live {
            Live::Chain(w) => {
                let steps = w.push(unit, &mut self.counters);
                for step in steps {
                    self.write_step(step).await?;
                }
                Ok(())
            }
            Live::Unwrapped(w) => {
                let mut db = self.pipe.db();
                for (argv, p) in w.unit(unit, &mut db) {
                    self.pipe.write(&argv, Pending::Unwrapped(p));
                }
                self.pipe.set_db(db);
                self.make_room().await
            }
        }
    }

    async fn write_step(&mut self, step: Step) -> Result<(), Error> {
        match step {
            Step::Batch(batch) => {
                self.pipe.write(&batch.argv, Pending::Batch(batch.pending));
                self.make_room().await
            }
            Step::Alone(alone) => self.apply_alone(alone).await,
        }
    }

    /// Writes the open batch (without waiting for its reply beyond what the windows require).
    pub async fn flush_batch(&mut self) -> Result<(), Error> {
        if let Live::Chain(w) = &mut self.live {
            if let Some(batch) = w.flush() {
                self.write_step(Step::Batch(batch)).await?;
            }
        }
        self.pipe.flush().await
    }

    /// Flushes the open batch, waits for every reply, and moves the checkpoint to the latest stream position
    /// when the stream moved on without anything for this target (so a quiet target's resume point stays
    /// recent).
    pub async fn sync(&mut self) -> Result<(), Error> {
        self.flush_batch().await?;
        self.drain().await?;
        if let Live::Chain(w) = &mut self.live {
            if let Some(batch) = w.checkpoint_only() {
                self.write_step(Step::Batch(batch)).await?;
                self.drain().await?;
            }
        }
        Ok(())
    }

    /// A command that cannot run in the batch script, applied alone once everything before it is acknowledged:
    /// `WATCH` the checkpoint, check it, then `MULTI`, the command, the checkpoint `SET`, `EXEC`.
    async fn apply_alone(&mut self, alone: Alone) -> Result<(), Error> {
        self.drain().await?;
        let key = self.checkpoint_key.clone();
        let cp_db = self.opts.checkpoint_db;
        self.select_now(cp_db).await?;
        self.pipe.call(&["WATCH", key.as_str()]).await?;
        let stored = match self.pipe.call(&["GET", key.as_str()]).await? {
            Frame::Bulk(v) => String::from_utf8_lossy(&v).into_owned(),
            _ => String::new(),
        };
        let Live::Chain(w) = &mut self.live else {
            return Err(Error::Protocol(
                "a command alone without a checkpoint chain".into(),
            ));
        };
        if stored != alone.expected {
            self.pipe.call(&["UNWATCH"]).await?;
            return Err(chain::chain_broken(
                &mut self.counters,
                format!("stored {stored:?}"),
            ));
        }
        let name = command_name(&alone.command.argv);
        info!(command = %name, "applying a command that cannot run in a batch script on its own, with its checkpoint");
        let cmd_db = alone.command.db;
        let mut commands: Vec<Vec<Bytes>> = vec![vec![Bytes::from_static(b"MULTI")]];
        if self.node.is_none() && cmd_db != cp_db {
            commands.push(vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from(cmd_db.to_string()),
            ]);
            commands.push(alone.command.argv.clone());
            commands.push(vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from(cp_db.to_string()),
            ]);
        } else {
            commands.push(alone.command.argv.clone());
        }
        commands.push(vec![
            Bytes::from_static(b"SET"),
            Bytes::from(key.clone()),
            Bytes::from(alone.after.clone()),
        ]);
        commands.push(vec![Bytes::from_static(b"EXEC")]);
        let mut replies = self.pipe.call_all(&commands).await?;
        let exec = replies.pop().unwrap_or(Frame::Null);
        // A command refused when queued makes `EXEC` answer `EXECABORT`: the refusal itself says why.
        let exec = match (&exec, replies.iter().find(|f| matches!(f, Frame::Error(_)))) {
            (Frame::Error(_), Some(refusal)) => refusal.clone(),
            _ => exec,
        };
        let outcome = w.on_alone_reply(&alone, &exec, &mut self.counters);
        let reload = name == "script";
        match outcome {
            Ok(AloneOutcome::Applied) => {
                self.stored = Some(alone.after.clone());
            }
            Ok(AloneOutcome::Failed(message)) => {
                // The checkpoint moved past a command that failed. With the error policy `log` that is what
                // the job does with a failed write; otherwise the checkpoint is put back before the job stops.
                let error = target_error(&mut self.counters, &name, message.as_bytes());
                if self.opts.on_error == ErrorPolicy::Log && !error.is_transient() {
                    warn!(command = %name, %error, "the target refused a write (error policy: log)");
                    self.stored = Some(alone.after.clone());
                } else {
                    self.pipe
                        .call(&[
                            Bytes::from_static(b"SET"),
                            Bytes::from(key),
                            Bytes::from(alone.expected.clone()),
                        ])
                        .await?;
                    return Err(error);
                }
            }
            Err(e) => {
                // EXECABORT (refused when queued: nothing applied) or a broken chain.
                if self.opts.on_error == ErrorPolicy::Log
                    && matches!(e, Error::Target { .. })
                    && !e.is_transient()
                {
                    warn!(command = %name, error = %e, "the target refused a write (error policy: log)");
                    self.pipe
                        .call(&[
                            Bytes::from_static(b"SET"),
                            Bytes::from(key),
                            Bytes::from(alone.after.clone()),
                        ])
                        .await?;
                    self.stored = Some(alone.after.clone());
                } else {
                    return Err(e);
                }
            }
        }
        if reload {
            // `SCRIPT FLUSH` from the source emptied the script cache: load the batch script again.
            let sha = self.load_script().await?;
            if let Live::Chain(w) = &mut self.live {
                w.set_sha(sha);
            }
        }
        Ok(())
    }

    /// The name of the checkpoint key.
    pub(crate) fn checkpoint_key(&self) -> String {
        self.checkpoint_key.clone()
    }

    /// Uses the checkpoint key of `tag`, whose stored value is `stored` (a cluster master picks its key after
    /// reading every checkpoint of the job).
    pub(crate) fn set_checkpoint(&mut self, tag: &str, stored: Option<String>) {
        self.checkpoint_key = checkpoint::key_name(tag);
        self.opts.checkpoint_tag = tag.to_string();
        self.stored = stored;
    }

    /// Deletes a key of database 0 (a checkpoint of an earlier sync, before a full sync).
    pub(crate) async fn delete_key(&mut self, key: &str) -> Result<(), Error> {
        self.select_now(0).await?;
        self.pipe.call(&["DEL", key]).await?;
        Ok(())
    }

    /// A command on one of ferry's own keys, in the checkpoint database, and its reply (an error reply is an
    /// error).
    pub(crate) async fn state_call(&mut self, argv: &[&str]) -> Result<Frame, Error> {
        self.select_now(self.opts.checkpoint_db).await?;
        match self.pipe.call(argv).await? {
            Frame::Error(e) => Err(target_error(&mut self.counters, argv[0], &e)),
            reply => Ok(reply),
        }
    }

    /// The databases of the server that hold keys (`INFO keyspace`; for a user denied `INFO`, `DBSIZE` of each
    /// database until `SELECT` finds no more).
    pub(crate) async fn keyspace_dbs(&mut self) -> Result<Vec<i64>, Error> {
        self.drain().await?;
        let db = self.pipe.db();
        let conn = self.pipe.direct().await?;
        match ferry_resp::probe::keyspace(conn, db.max(0)).await {
            Ok(dbs) => Ok(dbs.into_iter().map(|(db, _)| db).collect()),
            Err(e) => {
                // The connection may be in another database now.
                self.pipe.set_db(-1);
                Err(e.into())
            }
        }
    }

    /// One `SCAN` page of database `db` from `cursor`: the next cursor and the keys (waits for everything
    /// written before).
    pub(crate) async fn scan_page(
        &mut self,
        db: i64,
        cursor: &Bytes,
    ) -> Result<(Bytes, Vec<Bytes>), Error> {
        self.select_now(db).await?;
        let argv = [
            Bytes::from_static(b"SCAN"),
            cursor.clone(),
            Bytes::from_static(b"COUNT"),
            Bytes::from_static(b"1000"),
        ];
        let Frame::Array(items) = self.pipe.call(&argv).await? else {
            return Err(Error::Protocol("SCAN did not answer an array".into()));
        };
        let mut items = items.into_iter();
        let next = match items.next() {
            Some(Frame::Bulk(c)) => c,
            _ => return Err(Error::Protocol("SCAN without a cursor".into())),
        };
        let keys = match items.next() {
            Some(Frame::Array(keys)) => keys
                .into_iter()
                .filter_map(|k| match k {
                    Frame::Bulk(k) => Some(k),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((next, keys))
    }

    /// Counts commands not sent because the target holds them already.
    pub(crate) fn count_already_applied(&mut self, n: u64) {
        self.counters.commands_already_applied += n;
    }

    /// A command and its reply, once everything written before is answered.
    pub(crate) async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        self.drain().await?;
        self.pipe.call(argv).await
    }

    /// Waits for every reply of what was written.
    pub async fn drain(&mut self) -> Result<(), Error> {
        while self.read_one().await? {}
        Ok(())
    }

    /// Outside a transaction: writes the checkpoint in the checkpoint database.
    fn write_checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.select(self.opts.checkpoint_db);
        let argv = [
            Bytes::from_static(b"SET"),
            Bytes::from(self.checkpoint_key.clone()),
            Bytes::from(checkpoint.encode()),
        ];
        self.pipe.write(&argv, Pending::Ok("SET checkpoint"));
    }

    fn select(&mut self, db: i64) {
        self.pipe.select(db, || Pending::Ok("SELECT"));
    }

    /// Selects `db` at once (its `SELECT` sent and answered).
    pub(crate) async fn select_now(&mut self, db: i64) -> Result<(), Error> {
        self.select(db);
        self.drain().await
    }

    /// Reads replies until the windows have room; sends big write buffers.
    async fn make_room(&mut self) -> Result<(), Error> {
        self.pipe.flush_if_big().await?;
        if self.pipe.is_full() {
            // Read until an eighth of the command window is free: with small commands, reading one reply per
            // new command would also send each command alone (what is buffered is sent before a reply is read),
            // one write and one wake-up per command. (Big commands fill the byte window first and go one for
            // one, which measured faster for them.)
            while self.pipe.needs_room() {
                self.read_one().await?;
            }
        }
        Ok(())
    }

    /// Reads the reply of the oldest written command and hands it to its writer; false when nothing was in
    /// flight.
    async fn read_one(&mut self) -> Result<bool, Error> {
        let Some((pending, reply)) = self.pipe.read_reply().await? else {
            return Ok(false);
        };
        let counters = &mut self.counters;
        match pending {
            Pending::Ok(what) | Pending::Integer(what) => {
                if let Frame::Error(e) = &reply {
                    return Err(target_error(counters, what, e));
                }
            }
            Pending::Restore(p) => {
                self.restore.on_reply(p, reply, counters)?;
                for (db, argv, p) in self.restore.take_followups() {
                    self.select(db);
                    self.pipe.write(&argv, Pending::Restore(p));
                }
            }
            Pending::Batch(p) => match &mut self.live {
                Live::Chain(w) => w.on_reply(p, reply, counters)?,
                Live::Unwrapped(_) => {
                    return Err(Error::Protocol("a batch reply without a chain".into()))
                }
            },
            Pending::Unwrapped(p) => match &mut self.live {
                Live::Unwrapped(w) => w.on_reply(p, reply, counters)?,
                Live::Chain(_) => {
                    return Err(Error::Protocol("an unwrapped reply in a chain".into()))
                }
            },
        }
        Ok(true)
    }
}

/// The `name` of one `MODULE LIST` entry (a flat array of field/value pairs in RESP2, a map in RESP3).
fn module_name(entry: &Frame) -> Option<String> {
    let text = |f: &Frame| {
        f.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    match entry {
        Frame::Array(items) => items
            .chunks(2)
            .find(|pair| pair.len() == 2 && text(&pair[0]).as_deref() == Some("name"))
            .and_then(|pair| text(&pair[1])),
        Frame::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some("name"))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}
