//! The standalone sink: one target server, pipelined writes, checkpoints in the same `MULTI`/`EXEC` as the
//! writes they cover.
//!
//! During a full sync keys go as `RESTORE`s without a transaction (the RDB is not resumable: a `fullsync`
//! marker is stored first, and the checkpoint only once every key is acknowledged). In the live phase the
//! commands are grouped in batches, each one `MULTI`, the commands, `SET ferry:checkpoint:{tag} "<replid>
//! <offset>"`, `EXEC`: the target holds a write if and only if it holds the checkpoint that covers it. A batch
//! never splits a source transaction, so source `MULTI`/`EXEC` groups stay atomic.

use std::collections::VecDeque;

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection, Frame};
use tracing::{debug, warn};

use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, KeyDisplay};
use crate::pipeline::convert::ConflictPolicy;
use crate::pipeline::{command_name, wire_size, Command, Unit};
use crate::sink::{ErrorPolicy, SinkCounters, SinkOptions};

/// The script a cluster node runs per batch: `ARGV` is the checkpoint key and value, then each command as its
/// argument count followed by its arguments. Every command runs with `redis.pcall` (an error is returned in its
/// place, like `EXEC` does), then the checkpoint is set; the reply has one entry per command.
pub const BATCH_SCRIPT: &str = "#!lua flags=allow-cross-slot-keys
local out = {}
local i = 3
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  local reply = redis.pcall(unpack(ARGV, i + 1, i + argc))
  if reply == false or reply == nil then reply = 0 end
  out[#out + 1] = reply
  i = i + argc + 1
end
redis.call('SET', ARGV[1], ARGV[2])
return out
";

/// Most arguments one command may have inside a cluster batch script (Lua's `unpack` limit).
pub const MAX_SCRIPT_ARGS: usize = 7000;

/// Flush the connection's write buffer once this many bytes are buffered.
const FLUSH_BYTES: usize = 256 * 1024;

/// What the reply to a written command must be, and what it covers.
#[derive(Debug)]
enum Expect {
    /// `+OK` (SELECT, MULTI, the checkpoint SET outside a transaction, FLUSHALL).
    Ok { what: &'static str, bytes: usize },
    /// The reply to a `RESTORE` of the full sync.
    Restore { key: Bytes, bytes: usize },
    /// The reply to `MSET` (policy rewrite) or `MSETNX` of small strings of the full sync; for `MSETNX` the
    /// pairs are kept to find the existing keys one by one if it is refused.
    Strings {
        db: i64,
        count: u64,
        nx: Option<Vec<(Bytes, Bytes)>>,
        bytes: usize,
    },
    /// The reply to `SET key value NX` after a refused `MSETNX`.
    SetNx { key: Bytes, bytes: usize },
    /// An element command of a big key, or a plain live command (no checkpoints).
    Plain {
        name: String,
        end_offset: Option<u64>,
        bytes: usize,
    },
    /// `+QUEUED` inside a transaction.
    Queued { name: String },
    /// The reply to `EXEC`: one entry per queued command (`None` for our own SELECT/SET).
    Exec {
        names: Vec<Option<String>>,
        end_offset: Option<u64>,
        bytes: usize,
    },
}

impl Expect {
    fn bytes(&self) -> usize {
        match self {
            Expect::Ok { bytes, .. }
            | Expect::Restore { bytes, .. }
            | Expect::Strings { bytes, .. }
            | Expect::SetNx { bytes, .. }
            | Expect::Plain { bytes, .. }
            | Expect::Exec { bytes, .. } => *bytes,
            Expect::Queued { .. } => 0,
        }
    }
}

/// A sink writing to one standalone server.
pub struct StandaloneSink {
    conn: Connection,
    opts: SinkOptions,
    checkpoint_key: String,
    /// The database selected on the connection once everything written is executed.
    db: i64,
    expects: VecDeque<Expect>,
    inflight_bytes: usize,
    unflushed_bytes: usize,
    /// Conflict handling of the current full sync.
    conflict: ConflictPolicy,
    /// Live phase: the replication id, the units of the open batch, its size.
    replid: String,
    batch: Vec<Unit>,
    batch_commands: usize,
    batch_bytes: usize,
    /// The latest source offset seen by the sink (units and skipped frames).
    seen_offset: u64,
    /// Units ending at or before this offset are already in the target.
    skip_until: u64,
    /// The highest offset the target acknowledged.
    committed_offset: u64,
    queue_error: Option<(String, String)>,
    counters: SinkCounters,
    client_id: Option<i64>,
    client_name: String,
    /// A cluster node: batches go as one script (`allow-cross-slot-keys`) instead of `MULTI`/`EXEC`, since a
    /// cluster transaction must stay in one slot.
    script: bool,
    /// The highest offset written as a checkpoint.
    checkpointed: u64,
}

impl std::fmt::Debug for StandaloneSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneSink")
            .field("peer", &self.conn.peer_addr())
            .field("in_flight", &self.expects.len())
            .field("committed_offset", &self.committed_offset)
            .finish_non_exhaustive()
    }
}

impl StandaloneSink {
    /// Connects to the target.
    pub async fn connect(
        target: &ConnectOptions,
        opts: SinkOptions,
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
        Ok(StandaloneSink {
            conn,
            checkpoint_key,
            db: target.db,
            expects: VecDeque::new(),
            inflight_bytes: 0,
            unflushed_bytes: 0,
            conflict: ConflictPolicy::Panic,
            replid: String::new(),
            batch: Vec::new(),
            batch_commands: 0,
            batch_bytes: 0,
            seen_offset: 0,
            skip_until: 0,
            committed_offset: 0,
            queue_error: None,
            counters: SinkCounters::default(),
            client_id: None,
            client_name,
            script: false,
            checkpointed: 0,
            opts,
        })
    }

    /// Connects to one master of a cluster target: batches go as scripts.
    pub async fn connect_cluster_node(
        node: &ConnectOptions,
        opts: SinkOptions,
    ) -> Result<StandaloneSink, Error> {
        let mut sink = StandaloneSink::connect(node, opts).await?;
        sink.script = true;
        Ok(sink)
    }

    /// This connection's `CLIENT ID` on the target (asked once).
    pub async fn client_id(&mut self) -> Result<i64, Error> {
        if let Some(id) = self.client_id {
            return Ok(id);
        }
        self.drain().await?;
        let id = self
            .conn
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
        let name = self.client_name.clone();
        let list = self
            .conn
            .call(&["CLIENT", "LIST", "TYPE", "normal"])
            .await?;
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
            if n == name && id != me.to_string() {
                debug!(client = %id, "fencing off an earlier connection of this job");
                match self.conn.call(&["CLIENT", "KILL", "ID", id.as_str()]).await {
                    Ok(_) => {}
                    Err(e) if e.server_error().is_some() => {} // gone already
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// What the sink did so far.
    pub fn counters(&self) -> &SinkCounters {
        &self.counters
    }

    /// The highest source offset the target acknowledged (checkpointed when checkpoints are on).
    pub fn committed_offset(&self) -> u64 {
        self.committed_offset
    }

    /// The highest source offset handed to the sink.
    pub fn seen_offset(&self) -> u64 {
        self.seen_offset
    }

    /// The checkpoint stored in the target, if any.
    pub async fn read_checkpoint(&mut self) -> Result<Option<Checkpoint>, Error> {
        self.drain().await?;
        self.select_now(self.opts.checkpoint_db).await?;
        let reply = self
            .conn
            .call(&["GET", self.checkpoint_key.as_str()])
            .await?;
        match reply {
            Frame::Bulk(value) => Ok(Some(Checkpoint::decode(&value)?)),
            f if f.is_null() => Ok(None),
            other => Err(Error::Checkpoint(format!("GET returned {other:?}"))),
        }
    }

    /// The RDB version the target loads, from its `redis_version`.
    pub async fn rdb_version(&mut self) -> Result<u16, Error> {
        self.drain().await?;
        let info = self.conn.call(&["INFO", "server"]).await?;
        let text = info
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .ok_or_else(|| Error::Protocol("INFO server has no redis_version".into()))?;
        Ok(crate::pipeline::convert::rdb_version_for(version.trim()))
    }

    /// Starts a full sync: optionally empties the target, then stores the `fullsync` marker (so a restart
    /// knows the target holds part of an RDB).
    pub async fn begin_full_sync(
        &mut self,
        conflict: ConflictPolicy,
        flush: bool,
    ) -> Result<(), Error> {
        self.drain().await?;
        self.conflict = conflict;
        if flush {
            warn!("emptying the target (FLUSHALL) before the full sync");
            self.write(&[Bytes::from_static(b"FLUSHALL")], |bytes| Expect::Ok {
                what: "FLUSHALL",
                bytes,
            });
        }
        if self.opts.checkpoint {
            self.write_checkpoint(&Checkpoint::FullSyncInProgress);
        }
        self.drain().await
    }

    /// Writes one `RESTORE` (built by [`crate::pipeline::convert::restore_command`]) in database `db`.
    pub async fn restore(&mut self, db: i64, key: Bytes, argv: &[Bytes]) -> Result<(), Error> {
        self.select(db);
        self.write(argv, |bytes| Expect::Restore { key, bytes });
        self.make_room().await
    }

    /// Writes small string keys of the full sync in one `MSET` (policy rewrite) or `MSETNX` (otherwise; when the
    /// target refuses it because a key exists, the keys are retried one by one with `SET ... NX` so the
    /// conflict policy applies per key). Cheaper for the target than one `RESTORE` per key.
    pub async fn set_strings(&mut self, db: i64, pairs: Vec<(Bytes, Bytes)>) -> Result<(), Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.select(db);
        let count = pairs.len() as u64;
        let rewrite = self.conflict == ConflictPolicy::Rewrite;
        let mut argv = Vec::with_capacity(1 + 2 * pairs.len());
        argv.push(Bytes::from_static(if rewrite {
            b"MSET"
        } else {
            b"MSETNX"
        }));
        for (k, v) in &pairs {
            argv.push(k.clone());
            argv.push(v.clone());
        }
        let nx = if rewrite { None } else { Some(pairs) };
        self.write(&argv, |bytes| Expect::Strings {
            db,
            count,
            nx,
            bytes,
        });
        self.make_room().await
    }

    /// Writes one command outside any transaction (element commands of a big key).
    pub async fn write_plain(&mut self, db: i64, argv: &[Bytes]) -> Result<(), Error> {
        self.select(db);
        let name = command_name(argv);
        self.write(argv, |bytes| Expect::Plain {
            name,
            end_offset: None,
            bytes,
        });
        self.make_room().await
    }

    /// Whether `key` exists in database `db` (waits for everything written before).
    pub async fn exists(&mut self, db: i64, key: &Bytes) -> Result<bool, Error> {
        self.select_now(db).await?;
        let reply = self
            .conn
            .call(&[Bytes::from_static(b"EXISTS"), key.clone()])
            .await?;
        Ok(reply.as_integer().unwrap_or(0) > 0)
    }

    /// Counts a key of the full sync left as it was on the target.
    pub fn count_skipped(&mut self) {
        self.counters.keys_skipped += 1;
    }

    /// Ends a full sync: waits for every reply, then stores the checkpoint `(replid, offset)`.
    pub async fn finish_full_sync(&mut self, replid: &str, offset: u64) -> Result<(), Error> {
        self.drain().await?;
        if self.opts.checkpoint {
            self.write_checkpoint(&Checkpoint::Committed {
                replid: replid.to_string(),
                offset,
            });
            self.drain().await?;
        }
        self.committed_offset = offset;
        self.seen_offset = offset;
        self.skip_until = offset;
        self.checkpointed = offset;
        Ok(())
    }

    /// Starts the live phase in history `replid` at `offset`; units ending at or before `skip_until` are
    /// already in the target and are dropped.
    pub fn start_stream(&mut self, replid: &str, offset: u64, skip_until: u64) {
        self.replid = replid.to_string();
        self.seen_offset = offset;
        self.committed_offset = self.committed_offset.max(offset.min(skip_until));
        self.skip_until = skip_until;
        self.checkpointed = self.checkpointed.max(offset.min(skip_until));
    }

    /// Records that the stream moved to `offset` without anything to apply.
    pub fn advance(&mut self, offset: u64) {
        self.seen_offset = self.seen_offset.max(offset);
    }

    /// Adds a unit of the live stream (already filtered and mapped) to the open batch; the batch is written
    /// when it is full. Call [`StandaloneSink::flush_batch`] when the source has nothing more buffered.
    pub async fn push(&mut self, unit: Unit) -> Result<(), Error> {
        self.advance(unit.end_offset);
        if unit.end_offset <= self.skip_until {
            self.counters.commands_already_applied += unit.commands.len() as u64;
            return Ok(());
        }
        if !self.opts.checkpoint {
            return self.write_unit_unwrapped(unit).await;
        }
        self.batch_commands += unit.commands.len();
        self.batch_bytes += unit.commands.iter().map(Command::wire_size).sum::<usize>();
        self.batch.push(unit);
        if self.batch_commands >= self.opts.batch_commands
            || self.batch_bytes >= self.opts.batch_bytes
        {
            self.flush_batch().await?;
        }
        Ok(())
    }

    /// Writes the open batch as `MULTI`, its commands, the checkpoint, `EXEC` (without waiting for the reply
    /// beyond what the windows require).
    pub async fn flush_batch(&mut self) -> Result<(), Error> {
        // Without checkpoints units are written as they come and the batch stays empty.
        if self.batch.is_empty() {
            return self.flush_io().await;
        }
        let units = std::mem::take(&mut self.batch);
        self.batch_commands = 0;
        self.batch_bytes = 0;
        let end_offset = self.seen_offset;
        if self.script {
            return self.write_script_batch(units, end_offset).await;
        }
        let checkpoint = self.committed(end_offset);
        self.write_transaction(
            units.into_iter().flat_map(|u| u.commands),
            Some(checkpoint),
            end_offset,
        );
        self.make_room().await?;
        self.flush_io().await
    }

    /// A cluster batch: one `EVAL` of [`BATCH_SCRIPT`] running the commands and then the checkpoint `SET`,
    /// atomically, across the slots of this node.
    async fn write_script_batch(&mut self, units: Vec<Unit>, end_offset: u64) -> Result<(), Error> {
        let cp = self.committed(end_offset);
        let mut argv = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from_static(BATCH_SCRIPT.as_bytes()),
            Bytes::from_static(b"0"),
            Bytes::from(self.checkpoint_key.clone()),
            Bytes::from(cp.encode()),
        ];
        let mut names = Vec::new();
        for unit in units {
            for cmd in unit.commands {
                names.push(Some(cmd.name()));
                argv.push(Bytes::from(cmd.argv.len().to_string()));
                argv.extend(cmd.argv);
            }
        }
        self.write(&argv, |bytes| Expect::Exec {
            names,
            end_offset: Some(end_offset),
            bytes,
        });
        self.checkpointed = self.checkpointed.max(end_offset);
        self.make_room().await?;
        self.flush_io().await
    }

    /// When everything written is acknowledged and the stream moved on without anything for this target
    /// (pings, filtered or other nodes' commands), stores the newer offset as the checkpoint: a plain `SET`
    /// is enough, as nothing is in flight. Keeps the resume point of a quiet node recent.
    async fn checkpoint_idle(&mut self) -> Result<(), Error> {
        if !self.opts.checkpoint || self.replid.is_empty() || self.seen_offset <= self.checkpointed
        {
            return Ok(());
        }
        self.write_checkpoint(&self.committed(self.seen_offset));
        self.checkpointed = self.seen_offset;
        self.drain().await?;
        self.committed_offset = self.committed_offset.max(self.checkpointed);
        Ok(())
    }

    /// Waits for every reply of what was written.
    pub async fn drain(&mut self) -> Result<(), Error> {
        while !self.expects.is_empty() {
            self.read_one().await?;
        }
        Ok(())
    }

    /// Flushes the open batch and waits for every reply.
    pub async fn sync(&mut self) -> Result<(), Error> {
        self.flush_batch().await?;
        self.drain().await?;
        self.checkpoint_idle().await
    }

    /// Without checkpoints: a single command as is, a source transaction as `MULTI`/.../`EXEC`.
    async fn write_unit_unwrapped(&mut self, unit: Unit) -> Result<(), Error> {
        let end_offset = unit.end_offset;
        if unit.transaction {
            self.write_transaction(unit.commands, None, end_offset);
        } else {
            for cmd in unit.commands {
                self.select(cmd.db);
                let name = cmd.name();
                self.write(&cmd.argv, |bytes| Expect::Plain {
                    name,
                    end_offset: Some(end_offset),
                    bytes,
                });
            }
        }
        self.make_room().await
    }

    /// Writes `MULTI`, the commands (with the `SELECT`s they need), the checkpoint `SET` if any, `EXEC`; the
    /// reply to `EXEC` covers the source up to `end_offset`.
    fn write_transaction(
        &mut self,
        commands: impl IntoIterator<Item = Command>,
        checkpoint: Option<Checkpoint>,
        end_offset: u64,
    ) {
        let mut names: Vec<Option<String>> = Vec::new();
        let mut bytes = 0;
        self.write_tracked(&[Bytes::from_static(b"MULTI")], &mut bytes, None);
        for cmd in commands {
            if cmd.db != self.db {
                self.select_queued(cmd.db, &mut names, &mut bytes);
            }
            let name = cmd.name();
            self.write_tracked(&cmd.argv, &mut bytes, Some(name.clone()));
            names.push(Some(name));
        }
        if let Some(cp) = checkpoint {
            if self.db != self.opts.checkpoint_db {
                self.select_queued(self.opts.checkpoint_db, &mut names, &mut bytes);
            }
            let set = self.checkpoint_set(&cp);
            self.write_tracked(&set, &mut bytes, Some("set".into()));
            names.push(None);
        }
        // The commands queued so far are accounted for in the reply to `EXEC`.
        self.inflight_bytes += bytes;
        self.counters.bytes_written += bytes as u64;
        self.write(&[Bytes::from_static(b"EXEC")], |size| Expect::Exec {
            names,
            end_offset: Some(end_offset),
            bytes: bytes + size,
        });
    }

    /// The checkpoint of history `replid` at `offset`.
    fn committed(&self, offset: u64) -> Checkpoint {
        Checkpoint::Committed {
            replid: self.replid.clone(),
            offset,
        }
    }

    /// `SET <checkpoint key> <checkpoint>`.
    fn checkpoint_set(&self, checkpoint: &Checkpoint) -> [Bytes; 3] {
        [
            Bytes::from_static(b"SET"),
            Bytes::from(self.checkpoint_key.clone()),
            Bytes::from(checkpoint.encode()),
        ]
    }

    /// Outside a transaction: writes the checkpoint in the checkpoint database.
    fn write_checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.select(self.opts.checkpoint_db);
        let argv = self.checkpoint_set(checkpoint);
        self.write(&argv, |bytes| Expect::Ok {
            what: "SET checkpoint",
            bytes,
        });
    }

    /// Inside a transaction: queues a `SELECT`.
    fn select_queued(&mut self, db: i64, names: &mut Vec<Option<String>>, bytes: &mut usize) {
        let argv = [Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
        self.write_tracked(&argv, bytes, Some("select".into()));
        names.push(None);
        self.db = db;
    }

    /// Inside a transaction: writes a command whose reply is `+OK` (MULTI, `name == None`) or `+QUEUED`.
    fn write_tracked(&mut self, argv: &[Bytes], bytes: &mut usize, queued: Option<String>) {
        let size = wire_size(argv);
        *bytes += size;
        self.conn.write_command(argv);
        self.unflushed_bytes += size;
        match queued {
            Some(name) => self.expects.push_back(Expect::Queued { name }),
            None => self.expects.push_back(Expect::Ok {
                what: "MULTI",
                bytes: 0,
            }),
        }
    }

    /// Outside a transaction: writes `SELECT db` if the connection is elsewhere.
    fn select(&mut self, db: i64) {
        if db != self.db {
            let argv = [Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
            self.write(&argv, |bytes| Expect::Ok {
                what: "SELECT",
                bytes,
            });
            self.db = db;
        }
    }

    async fn select_now(&mut self, db: i64) -> Result<(), Error> {
        self.select(db);
        self.drain().await
    }

    fn write(&mut self, argv: &[Bytes], expect: impl FnOnce(usize) -> Expect) {
        let size = wire_size(argv);
        self.conn.write_command(argv);
        self.unflushed_bytes += size;
        self.inflight_bytes += size;
        self.counters.bytes_written += size as u64;
        self.expects.push_back(expect(size));
    }

    /// Reads replies until the windows have room; flushes big write buffers.
    async fn make_room(&mut self) -> Result<(), Error> {
        if self.unflushed_bytes >= FLUSH_BYTES {
            self.flush_io().await?;
        }
        while self.expects.len() > self.opts.window_commands
            || self.inflight_bytes > self.opts.window_bytes
        {
            self.read_one().await?;
        }
        Ok(())
    }

    async fn flush_io(&mut self) -> Result<(), Error> {
        if self.unflushed_bytes > 0 {
            self.conn.flush().await?;
            self.unflushed_bytes = 0;
        }
        Ok(())
    }

    /// Reads the reply of the oldest written command and handles it.
    async fn read_one(&mut self) -> Result<(), Error> {
        self.flush_io().await?;
        let Some(expect) = self.expects.pop_front() else {
            return Ok(());
        };
        // The connection's read timeout (the reply timeout) bounds the wait.
        let reply = self.conn.read_frame().await?;
        self.inflight_bytes -= expect.bytes();
        match expect {
            Expect::Ok { what, .. } => {
                if let Frame::Error(e) = &reply {
                    return Err(self.target_error(what, e));
                }
            }
            Expect::Restore { key, .. } => match &reply {
                Frame::Error(e) if e.starts_with(b"BUSYKEY") => self.key_exists(&key)?,
                Frame::Error(e) => self.handle_error("restore", e)?,
                _ => self.counters.keys_restored += 1,
            },
            Expect::Strings { db, count, nx, .. } => match (&reply, nx) {
                (Frame::Error(e), _) => self.handle_error("mset", e)?,
                (_, None) => self.counters.keys_restored += count,
                (r, Some(_)) if r.as_integer() == Some(1) => self.counters.keys_restored += count,
                (_, Some(pairs)) => {
                    // Some key exists: find which, one by one (the replies come after those in flight).
                    self.select(db);
                    for (key, value) in pairs {
                        let argv = [
                            Bytes::from_static(b"SET"),
                            key.clone(),
                            value,
                            Bytes::from_static(b"NX"),
                        ];
                        self.write(&argv, |bytes| Expect::SetNx { key, bytes });
                    }
                }
            },
            Expect::SetNx { key, .. } => match &reply {
                Frame::Error(e) => self.handle_error("set", e)?,
                r if r.is_null() => self.key_exists(&key)?,
                _ => self.counters.keys_restored += 1,
            },
            Expect::Plain {
                name, end_offset, ..
            } => {
                if let Frame::Error(e) = &reply {
                    self.handle_error(&name, e)?;
                } else if end_offset.is_some() {
                    self.counters.commands_applied += 1;
                }
                if let Some(o) = end_offset {
                    self.committed_offset = self.committed_offset.max(o);
                }
            }
            Expect::Queued { name } => {
                if let Frame::Error(e) = &reply {
                    self.counters.errors += 1;
                    if self.queue_error.is_none() {
                        self.queue_error = Some((name, String::from_utf8_lossy(e).into_owned()));
                    }
                }
            }
            Expect::Exec {
                names, end_offset, ..
            } => self.handle_exec(reply, names, end_offset)?,
        }
        Ok(())
    }

    fn handle_exec(
        &mut self,
        reply: Frame,
        names: Vec<Option<String>>,
        end_offset: Option<u64>,
    ) -> Result<(), Error> {
        let items = match reply {
            Frame::Array(items) => items,
            Frame::Error(e) => {
                // A command was refused when queued (unknown command, wrong arity): nothing of the batch was
                // applied, and skipping it would reorder writes, so the job stops.
                let (command, message) = self
                    .queue_error
                    .take()
                    .unwrap_or_else(|| ("exec".into(), String::from_utf8_lossy(&e).into_owned()));
                self.counters.last_error = Some(format!("{command}: {message}"));
                return Err(Error::Target { command, message });
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected reply to EXEC: {other:?}"
                )))
            }
        };
        if items.len() != names.len() {
            return Err(Error::Protocol(format!(
                "EXEC answered {} replies for {} commands",
                items.len(),
                names.len()
            )));
        }
        for (item, name) in items.iter().zip(&names) {
            match (item, name) {
                (Frame::Error(e), Some(name)) => self.handle_error(name, e)?,
                (Frame::Error(e), None) => {
                    return Err(self.target_error("SELECT/SET checkpoint", e))
                }
                (_, Some(_)) => self.counters.commands_applied += 1,
                (_, None) => {}
            }
        }
        if let Some(o) = end_offset {
            self.committed_offset = self.committed_offset.max(o);
            debug!(offset = o, "batch committed");
        }
        Ok(())
    }

    /// A key of the full sync that exists on the target: skipped or an error, by the conflict policy.
    fn key_exists(&mut self, key: &Bytes) -> Result<(), Error> {
        if self.conflict == ConflictPolicy::Skip {
            self.counters.keys_skipped += 1;
            return Ok(());
        }
        self.counters.errors += 1;
        Err(Error::Conflict {
            key: KeyDisplay(key.to_vec()),
        })
    }

    /// An error reply to a write: stops the job or is logged, by the error policy.
    fn handle_error(&mut self, command: &str, message: &[u8]) -> Result<(), Error> {
        let error = self.target_error(command, message);
        match self.opts.on_error {
            ErrorPolicy::Stop => Err(error),
            ErrorPolicy::Log => {
                let message = String::from_utf8_lossy(message);
                warn!(command, error = %message, "the target refused a write (error policy: log)");
                Ok(())
            }
        }
    }

    fn target_error(&mut self, what: &str, message: &[u8]) -> Error {
        self.counters.errors += 1;
        let message = String::from_utf8_lossy(message).into_owned();
        self.counters.last_error = Some(format!("{what}: {message}"));
        Error::Target {
            command: what.to_string(),
            message,
        }
    }
}
