//! The cluster sink: one [`StandaloneSink`] per master of the target cluster, commands routed by slot.
//!
//! A Redis Cluster transaction must stay within one slot (`MULTI`/`EXEC` over keys of two slots fails with
//! `CROSSSLOT`, even on one node), so a node's batch goes as one script declared `allow-cross-slot-keys`
//! (Redis 7.0+): it runs the batch's commands, then sets that node's checkpoint key, atomically. Each node's
//! checkpoint key carries a hash tag of a slot the node owns. A command is routed to the node owning its keys'
//! slots; one whose keys live on several nodes is split where that keeps its meaning (`DEL`, `UNLINK`,
//! `EXISTS`, `TOUCH`, `MSET`) and is otherwise refused by the error policy; keyless commands (`FLUSHALL`,
//! `FUNCTION LOAD`...) go to every master. A source `MULTI`/`EXEC` group whose keys live on several nodes is
//! applied atomically per node only, and counted.

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection};
use ferry_topology::split::split_by_slot;
use ferry_topology::{key_slot, CommandTable, SlotMap, SLOT_COUNT};
use tracing::warn;

use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, KeyDisplay};
use crate::pipeline::convert::ConflictPolicy;
use crate::pipeline::{command_name, Command, Unit};
use crate::sink::standalone::{StandaloneSink, MAX_SCRIPT_ARGS};
use crate::sink::{ErrorPolicy, SinkCounters, SinkOptions};

/// Where a command goes.
enum Route {
    /// To one node.
    Node(usize),
    /// To every master.
    All,
    /// In parts, each to its node.
    Parts(Vec<(usize, Vec<Bytes>)>),
}

/// A sink writing to a Redis Cluster.
pub struct ClusterSink {
    nodes: Vec<StandaloneSink>,
    addrs: Vec<String>,
    owner: Vec<u16>,
    table: std::sync::Arc<CommandTable>,
    on_error: ErrorPolicy,
    split_transactions: u64,
    refused: u64,
    last_error: Option<String>,
}

impl std::fmt::Debug for ClusterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSink")
            .field("masters", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl ClusterSink {
    /// Reads the slot map from `target` (any node) and connects to every master. `table` gives the keys of
    /// the source's commands.
    pub async fn connect(
        target: &ConnectOptions,
        opts: SinkOptions,
        table: std::sync::Arc<CommandTable>,
    ) -> Result<ClusterSink, Error> {
        let mut seed = Connection::connect(target).await?;
        let reply = seed.call(&["CLUSTER", "SLOTS"]).await?;
        let mut map = SlotMap::from_cluster_slots(&reply)
            .map_err(|e| Error::Config(format!("the target's CLUSTER SLOTS: {e}")))?;
        map.fill_unknown_hosts(&target.host);
        if !map.is_complete() {
            return Err(Error::Config(format!(
                "the target cluster does not serve every slot ({} uncovered)",
                map.uncovered_slots()
            )));
        }
        let shards = map.shards().to_vec();
        let mut owner = vec![0u16; usize::from(SLOT_COUNT)];
        for slot in 0..SLOT_COUNT {
            let master = map.master_for_slot(slot).map(|n| n.addr.clone());
            let index = shards
                .iter()
                .position(|s| Some(&s.master.addr) == master.as_ref())
                .unwrap_or(0);
            owner[usize::from(slot)] = index as u16;
        }
        let mut nodes = Vec::with_capacity(shards.len());
        let mut addrs = Vec::with_capacity(shards.len());
        for (i, shard) in shards.iter().enumerate() {
            let mut node_opts = target.clone();
            node_opts.host = shard.master.addr.host.clone();
            node_opts.port = shard.master.addr.port;
            node_opts.db = 0;
            let mut sink_opts = opts.clone();
            sink_opts.checkpoint = true;
            sink_opts.checkpoint_db = 0;
            sink_opts.checkpoint_tag = tag_for_node(&opts.checkpoint_tag, &owner, i);
            nodes.push(StandaloneSink::connect_cluster_node(&node_opts, sink_opts).await?);
            addrs.push(format!("{}:{}", node_opts.host, node_opts.port));
        }
        Ok(ClusterSink {
            nodes,
            addrs,
            owner,
            table,
            on_error: opts.on_error,
            split_transactions: 0,
            refused: 0,
            last_error: None,
        })
    }

    /// The masters, as `host:port`.
    pub fn masters(&self) -> &[String] {
        &self.addrs
    }

    /// Fences earlier connections of this job on every master.
    pub async fn fence(&mut self) -> Result<(), Error> {
        for node in &mut self.nodes {
            node.fence().await?;
        }
        Ok(())
    }

    /// The checkpoint of every master.
    pub async fn read_checkpoints(&mut self) -> Result<Vec<Option<Checkpoint>>, Error> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for node in &mut self.nodes {
            out.push(node.read_checkpoint().await?);
        }
        Ok(out)
    }

    /// The lowest RDB version the masters load.
    pub async fn rdb_version(&mut self) -> Result<u16, Error> {
        let mut version = u16::MAX;
        for node in &mut self.nodes {
            version = version.min(node.rdb_version().await?);
        }
        Ok(version)
    }

    /// Starts a full sync on every master.
    pub async fn begin_full_sync(
        &mut self,
        conflict: ConflictPolicy,
        flush: bool,
    ) -> Result<(), Error> {
        for node in &mut self.nodes {
            node.begin_full_sync(conflict, flush).await?;
        }
        Ok(())
    }

    /// A `RESTORE` to the master owning `key`.
    pub async fn restore(&mut self, db: i64, key: Bytes, argv: &[Bytes]) -> Result<(), Error> {
        check_db(db)?;
        let node = self.node_of(&key);
        self.nodes[node].restore(0, key, argv).await
    }

    /// A command outside the live stream (element commands of a big key, `FUNCTION LOAD`).
    pub async fn write_plain(&mut self, db: i64, argv: &[Bytes]) -> Result<(), Error> {
        check_db(db)?;
        match self.route(argv)? {
            Route::Node(n) => self.nodes[n].write_plain(0, argv).await,
            Route::All => {
                for node in &mut self.nodes {
                    node.write_plain(0, argv).await?;
                }
                Ok(())
            }
            Route::Parts(parts) => {
                for (n, part) in parts {
                    self.nodes[n].write_plain(0, &part).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether `key` exists on its master.
    pub async fn exists(&mut self, db: i64, key: &Bytes) -> Result<bool, Error> {
        check_db(db)?;
        let node = self.node_of(key);
        self.nodes[node].exists(0, key).await
    }

    /// Counts a key of the full sync left as it was.
    pub fn count_skipped(&mut self) {
        if let Some(node) = self.nodes.first_mut() {
            node.count_skipped();
        }
    }

    /// Ends a full sync on every master.
    pub async fn finish_full_sync(&mut self, replid: &str, offset: u64) -> Result<(), Error> {
        for node in &mut self.nodes {
            node.finish_full_sync(replid, offset).await?;
        }
        Ok(())
    }

    /// Starts the live phase: each master skips what its own checkpoint covers.
    pub fn start_stream(&mut self, replid: &str, offset: u64, checkpoints: &[Option<Checkpoint>]) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let skip = checkpoint::skip_until(checkpoints.get(i), offset);
            node.start_stream(replid, offset, skip);
        }
    }

    /// Records that the stream moved to `offset`.
    pub fn advance(&mut self, offset: u64) {
        for node in &mut self.nodes {
            node.advance(offset);
        }
    }

    /// Routes a unit of the live stream to the masters.
    pub async fn push(&mut self, unit: Unit) -> Result<(), Error> {
        let mut per_node: Vec<Vec<Command>> = vec![Vec::new(); self.nodes.len()];
        for cmd in unit.commands {
            check_db(cmd.db)?;
            let route = match self.route(&cmd.argv) {
                Ok(r) => r,
                Err(e) => {
                    self.refuse(&cmd, e)?;
                    continue;
                }
            };
            match route {
                Route::Node(n) => per_node[n].push(cmd),
                Route::All => {
                    for list in &mut per_node {
                        list.push(cmd.clone());
                    }
                }
                Route::Parts(parts) => {
                    for (n, argv) in parts {
                        per_node[n].push(Command {
                            db: 0,
                            argv,
                            end_offset: cmd.end_offset,
                        });
                    }
                }
            }
        }
        let used = per_node.iter().filter(|c| !c.is_empty()).count();
        if unit.transaction && used > 1 {
            self.split_transactions += 1;
            warn!(
                nodes = used,
                offset = unit.end_offset,
                "a source transaction spans several target masters: applied atomically per master"
            );
        }
        for (n, commands) in per_node.into_iter().enumerate() {
            let node = &mut self.nodes[n];
            if commands.is_empty() {
                node.advance(unit.end_offset);
                continue;
            }
            if commands.iter().any(|c| c.argv.len() > MAX_SCRIPT_ARGS) {
                // Too many arguments for the batch script: applied on their own, then checkpointed.
                node.flush_batch().await?;
                for cmd in commands {
                    node.write_plain(0, &cmd.argv).await?;
                }
                node.advance(unit.end_offset);
                continue;
            }
            node.push(Unit {
                commands,
                transaction: unit.transaction,
                end_offset: unit.end_offset,
                end_db: unit.end_db,
            })
            .await?;
        }
        Ok(())
    }

    /// Writes the open batches.
    pub async fn flush_batch(&mut self) -> Result<(), Error> {
        for node in &mut self.nodes {
            node.flush_batch().await?;
        }
        Ok(())
    }

    /// Writes the open batches and waits for every reply.
    pub async fn sync(&mut self) -> Result<(), Error> {
        self.flush_batch().await?;
        for node in &mut self.nodes {
            node.sync().await?;
        }
        Ok(())
    }

    /// What the masters did, summed.
    pub fn counters(&self) -> SinkCounters {
        let mut total = SinkCounters::default();
        for node in &self.nodes {
            let c = node.counters();
            total.keys_restored += c.keys_restored;
            total.keys_skipped += c.keys_skipped;
            total.commands_applied += c.commands_applied;
            total.commands_already_applied += c.commands_already_applied;
            total.errors += c.errors;
            total.bytes_written += c.bytes_written;
            if c.last_error.is_some() {
                total.last_error = c.last_error.clone();
            }
        }
        total.errors += self.refused;
        if self.last_error.is_some() {
            total.last_error = self.last_error.clone();
        }
        total
    }

    /// Source transactions applied atomically per master only.
    pub fn split_transactions(&self) -> u64 {
        self.split_transactions
    }

    /// The lowest offset every master acknowledged.
    pub fn committed_offset(&self) -> u64 {
        self.nodes
            .iter()
            .map(StandaloneSink::committed_offset)
            .min()
            .unwrap_or(0)
    }

    fn node_of(&self, key: &[u8]) -> usize {
        usize::from(self.owner[usize::from(key_slot(key))])
    }

    fn route(&self, argv: &[Bytes]) -> Result<Route, Error> {
        let keys = self.table.keys(argv).map_err(|e| Error::Target {
            command: command_name(argv),
            message: format!("cannot route it to a cluster node: {e}"),
        })?;
        let Some(first) = keys.first() else {
            return Ok(Route::All);
        };
        let node = self.node_of(first);
        if keys.iter().all(|k| self.node_of(k) == node) {
            return Ok(Route::Node(node));
        }
        match split_by_slot(argv) {
            Some(Ok(split)) => {
                let parts = split
                    .parts
                    .into_iter()
                    .map(|p| {
                        (
                            usize::from(self.owner[usize::from(p.slot)]),
                            p.argv.into_iter().map(Bytes::from).collect(),
                        )
                    })
                    .collect();
                Ok(Route::Parts(parts))
            }
            _ => Err(Error::Target {
                command: command_name(argv),
                message: format!(
                    "its keys live on several masters of the target cluster (first key {})",
                    KeyDisplay(first.to_vec())
                ),
            }),
        }
    }

    /// A command that cannot be routed: stops the job, or is counted and logged (error policy `log`).
    fn refuse(&mut self, cmd: &Command, error: Error) -> Result<(), Error> {
        self.refused += 1;
        self.last_error = Some(error.to_string());
        match self.on_error {
            ErrorPolicy::Stop => Err(error),
            ErrorPolicy::Log => {
                warn!(command = %cmd.name(), offset = cmd.end_offset, %error, "not applied (error policy: log)");
                Ok(())
            }
        }
    }
}

/// A cluster has only database 0.
fn check_db(db: i64) -> Result<(), Error> {
    if db == 0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "the target is a cluster (database 0 only): map database {db} to 0 or filter it out"
        )))
    }
}

/// A checkpoint tag whose key hashes to a slot owned by node `index`.
fn tag_for_node(base: &str, owner: &[u16], index: usize) -> String {
    (0u32..1_000_000)
        .map(|n| format!("{base}-{n}"))
        .find(|tag| {
            usize::from(owner[usize::from(key_slot(checkpoint::key_name(tag).as_bytes()))]) == index
        })
        .unwrap_or_else(|| base.to_string())
}
