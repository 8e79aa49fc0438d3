//! The cluster sink: one [`StandaloneSink`] per master of the target cluster, commands routed by slot.
//!
//! Each master applies its share of the stream as chained batch scripts (see [`super::chain`]), with its own
//! checkpoint key, hash-tagged to a slot it owns. A command is routed to the master owning its keys' slots; one
//! whose keys live on several masters is split where that keeps its meaning (`DEL`, `UNLINK`, `EXISTS`,
//! `TOUCH`, `MSET`) and is otherwise refused by the error policy; `PUBLISH` goes to the master owning its
//! channel's slot only (the cluster bus delivers it to every node's subscribers, so sending it to every master
//! would deliver it once per master); other keyless commands (`FLUSHALL`, `FUNCTION LOAD`...) go to every
//! master. A source `MULTI`/`EXEC` group whose keys live on several masters is applied atomically per master
//! only, and counted.
//!
//! # Topology changes
//!
//! A batch that meets a moved slot stops there (its checkpoint key is declared, so a moved checkpoint slot
//! refuses the whole batch with `MOVED`/`ASK`; a data key that moved fails with "non local key" and the batch
//! stores its checkpoint right before it), and so does a batch on a master that failed over (`READONLY`, a
//! broken link) or lost writes in the failover (the chain does not hold). Every such error is transient: the
//! session ends, everything in flight is dropped, and the next session reads the slot map again and continues
//! from what each master committed.
//!
//! Each checkpoint names the node that wrote it and the slots it owned then, and says: every write of the
//! stream to a key of those slots up to its offset is applied, wherever the slot lives now (a migration moves
//! the keys, a failover promotes a replica holding the same writes and the checkpoint that covers them). So the
//! resume point of a slot is the highest offset among the checkpoints that cover it, and a command is skipped
//! only when its unit ends at or before the resume point of its slot: a key moved between masters whose
//! checkpoints differ is neither lost nor applied twice. A master whose checkpoint key covers other slots than
//! it owns now (after resharding) keeps that key as it is (it is still true for its slots) and writes under a
//! new key; a key of a slot no checkpoint covers, a `fullsync` marker anywhere, or a partly applied source
//! transaction whose slots moved, cannot be resumed exactly: the job takes a full sync and says why.

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection, Frame};
use ferry_topology::split::split_by_slot;
use ferry_topology::{key_slot, tag_for_slot, CommandTable, SlotMap, SLOT_COUNT};
use tracing::{debug, info, warn};

use crate::checkpoint::{self, Checkpoint, Position};
use crate::error::{Error, KeyDisplay};
use crate::pipeline::convert::{ConflictPolicy, PolicyKey, ReportEntry, TargetFormat};
use crate::pipeline::{command_name, Command, Unit};
use crate::sink::cross_slot::{b, cross_slot_kind, scratch_key, CrossSlot};
use crate::sink::standalone::{NodeSlots, StandaloneSink};
use crate::sink::strings::{SlotGather, SLOT_GROUP_KEYS};
use crate::sink::{ErrorPolicy, SinkCounters, SinkOptions};

/// Where a command goes.
enum Route {
    /// To one node, for the keys of `slot` (`None`: keyless).
    Node(usize, Option<u16>),
    /// To every master.
    All,
    /// In parts, each to its node, with its slot.
    Parts(Vec<(usize, u16, Vec<Bytes>)>),
}

/// A key's expiry as read from the target.
enum Expiry {
    None,
    /// Absolute, Unix milliseconds.
    At(i64),
    /// Milliseconds left (a target before 7.0, without `PEXPIRETIME`).
    In(i64),
}

/// A checkpoint found on a master.
#[derive(Debug, Clone)]
struct Claim {
    /// The master it was found on (index in `nodes`).
    node: usize,
    key: String,
    /// The value as stored (the chain compares it byte for byte).
    raw: String,
    position: Position,
}

/// The nodes of a cluster target (masters and replicas) learned from its slot map, kept across the sessions
/// of a job: the seeds of the next session's slot map after the configured node.
#[derive(Debug, Default)]
pub(crate) struct KnownNodes(std::sync::Mutex<Vec<(String, u16)>>);

impl KnownNodes {
    /// Reads `CLUSTER SLOTS` from `target`, or, when it fails, from the first known node that answers; each
    /// reply within `timeout`. Remembers the map's nodes. The error of `target` when no node answers.
    async fn read_slot_map(
        &self,
        target: &ConnectOptions,
        timeout: std::time::Duration,
    ) -> Result<SlotMap, Error> {
        let configured = (target.host.clone(), target.port);
        let mut candidates = vec![configured.clone()];
        let learned = self.0.lock().map(|k| k.clone()).unwrap_or_default();
        candidates.extend(learned.into_iter().filter(|n| *n != configured));
        let mut first_error = None;
        for (host, port) in candidates {
            let mut opts = target.clone();
            opts.host = host;
            opts.port = port;
            match slot_map_of(&opts, timeout).await {
                Ok(map) => {
                    if first_error.is_some() {
                        warn!(node = %format!("{}:{}", opts.host, opts.port),
                              "the configured target node did not answer: read the slot map through a node \
                               learned earlier");
                    }
                    let nodes = map
                        .shards()
                        .iter()
                        .flat_map(|s| std::iter::once(&s.master).chain(&s.replicas))
                        .map(|n| (n.addr.host.clone(), n.addr.port))
                        .collect();
                    if let Ok(mut k) = self.0.lock() {
                        *k = nodes;
                    }
                    return Ok(map);
                }
                Err(e) => {
                    debug!(node = %format!("{}:{}", opts.host, opts.port), error = %e,
                           "no slot map from this node");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::Config("no target node to ask".into())))
    }
}

/// The slot map as the node at `opts` answers it (`CLUSTER SLOTS`), the reply within `timeout`.
async fn slot_map_of(
    opts: &ConnectOptions,
    timeout: std::time::Duration,
) -> Result<SlotMap, Error> {
    let mut seed = Connection::connect(opts).await?;
    seed.set_read_timeout(Some(timeout));
    let reply = seed.call(&["CLUSTER", "SLOTS"]).await?;
    let mut map = SlotMap::from_cluster_slots(&reply)
        .map_err(|e| Error::Config(format!("the target's CLUSTER SLOTS: {e}")))?;
    map.fill_unknown_hosts(&opts.host);
    Ok(map)
}

/// A sink writing to a Redis Cluster.
pub struct ClusterSink {
    nodes: Vec<StandaloneSink>,
    addrs: Vec<String>,
    /// Each master's node id and slot ranges.
    slots: Vec<NodeSlots>,
    owner: Vec<u16>,
    table: std::sync::Arc<CommandTable>,
    opts: SinkOptions,
    /// Per slot: commands of units ending at or before this offset are in the target already.
    until: Vec<u64>,
    /// Per master: the same for keyless commands, and the highest resume point of its slots.
    keyless_until: Vec<u64>,
    max_until: Vec<u64>,
    /// Per master: its own checkpoint, when it covers exactly the slots it owns now.
    own: Vec<Option<Checkpoint>>,
    /// Every checkpoint of this job found on the masters.
    claims: Vec<Claim>,
    split_transactions: u64,
    refused: u64,
    last_error: Option<String>,
    /// Small strings of the full copy, gathered per slot (none until the first, none again after the copy).
    strings: Option<SlotGather>,
    /// A slot whose group is complete and not sent yet (see [`ClusterSink::gather_string`]).
    ready_slot: Option<usize>,
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
        ClusterSink::connect_known(target, &KnownNodes::default(), opts, table).await
    }

    /// The masters written to, `host:port`.
    pub(crate) fn masters(&self) -> &[String] {
        &self.addrs
    }

    /// Like [`ClusterSink::connect`], and when `target` does not answer, reads the slot map through the nodes
    /// an earlier session learned (`known`), which this call updates with the nodes of the map it reads: a
    /// job whose configured node died follows the cluster through the others.
    pub(crate) async fn connect_known(
        target: &ConnectOptions,
        known: &KnownNodes,
        opts: SinkOptions,
        table: std::sync::Arc<CommandTable>,
    ) -> Result<ClusterSink, Error> {
        let map = known.read_slot_map(target, opts.reply_timeout).await?;
        if !map.is_complete() {
            // A master was lost and no replica took over yet: a transient state.
            return Err(Error::Target {
                command: "CLUSTER SLOTS".into(),
                message: format!(
                    "CLUSTERDOWN the target cluster does not serve every slot ({} uncovered)",
                    map.uncovered_slots()
                ),
            });
        }
        let shards = map.shards().to_vec();
        let mut owner = vec![0u16; usize::from(SLOT_COUNT)];
        let mut ranges: Vec<Vec<(u16, u16)>> = vec![Vec::new(); shards.len()];
        for slot in 0..SLOT_COUNT {
            let master = map.master_for_slot(slot).map(|n| n.addr.clone());
            let index = shards
                .iter()
                .position(|s| Some(&s.master.addr) == master.as_ref())
                .unwrap_or(0);
            owner[usize::from(slot)] = index as u16;
            match ranges[index].last_mut() {
                Some((_, end)) if *end + 1 == slot => *end = slot,
                _ => ranges[index].push((slot, slot)),
            }
        }
        let mut nodes = Vec::with_capacity(shards.len());
        let mut addrs = Vec::with_capacity(shards.len());
        let mut slots = Vec::with_capacity(shards.len());
        for (i, shard) in shards.iter().enumerate() {
            let mut node_opts = target.clone();
            node_opts.host = shard.master.addr.host.clone();
            node_opts.port = shard.master.addr.port;
            node_opts.db = 0;
            let addr = format!("{}:{}", node_opts.host, node_opts.port);
            let node = NodeSlots {
                id: shard.master.id.clone().unwrap_or_else(|| addr.clone()),
                slots: ranges[i].clone(),
            };
            let mut sink_opts = opts.clone();
            sink_opts.checkpoint = true;
            sink_opts.checkpoint_db = 0;
            sink_opts.checkpoint_tag = tag_for_node(&opts.checkpoint_tag, &owner, i, 0);
            nodes.push(
                StandaloneSink::connect_cluster_node(&node_opts, sink_opts, node.clone()).await?,
            );
            addrs.push(addr);
            slots.push(node);
        }
        let masters = nodes.len();
        Ok(ClusterSink {
            nodes,
            addrs,
            slots,
            owner,
            table,
            opts,
            until: vec![0; usize::from(SLOT_COUNT)],
            keyless_until: vec![0; masters],
            max_until: vec![0; masters],
            own: vec![None; masters],
            claims: Vec::new(),
            split_transactions: 0,
            refused: 0,
            last_error: None,
            strings: None,
            ready_slot: None,
        })
    }

    /// Fences earlier connections of this job on every master.
    pub async fn fence(&mut self) -> Result<(), Error> {
        for node in &mut self.nodes {
            node.fence().await?;
        }
        Ok(())
    }

    /// Finds every checkpoint of this job on every master (`SCAN`), picks each master's own checkpoint key
    /// (a new one when its old key covers other slots than it owns now), and works out the resume point of
    /// every slot. Returns, per master, the checkpoint that gives the lowest resume point of its slots (what
    /// [`crate::checkpoint::resume_from`] needs), plus a `None` when the target cannot be resumed exactly.
    pub async fn read_checkpoints(&mut self) -> Result<Vec<Option<Checkpoint>>, Error> {
        self.claims = self.find_claims().await?;
        let mut fullsync = self.claims.iter().any(|c| c.position.offset == u64::MAX);
        self.claims.retain(|c| c.position.offset != u64::MAX);
        // Each master's own key: the first tag of its slots whose key is absent or covers exactly its slots.
        for i in 0..self.nodes.len() {
            let mut n = 0;
            loop {
                let tag = tag_for_node(&self.opts.checkpoint_tag, &self.owner, i, n);
                let key = checkpoint::key_name(&tag);
                match self.claims.iter().find(|c| c.key == key) {
                    Some(c) if c.node == i && c.position.slots == self.slots[i].slots => {
                        if c.position.node.as_deref() != Some(self.slots[i].id.as_str()) {
                            info!(master = %self.addrs[i], written_by = ?c.position.node,
                                  "a master continues the checkpoint another node wrote for the same slots (failover)");
                        }
                        self.own[i] = Some(Checkpoint::Committed(c.position.clone()));
                        self.nodes[i].set_checkpoint(&tag, Some(c.raw.clone()));
                        break;
                    }
                    Some(c) => {
                        info!(master = %self.addrs[i], key = %key, slots = %checkpoint::encode_slots(&c.position.slots),
                              "a checkpoint covers other slots than its master owns now (resharding): kept, a new key is used");
                        n += 1;
                    }
                    None => {
                        self.own[i] = None;
                        self.nodes[i].set_checkpoint(&tag, None);
                        break;
                    }
                }
            }
        }
        if self.claims.is_empty() {
            return Ok(if fullsync {
                vec![Some(Checkpoint::FullSyncInProgress), None]
            } else {
                vec![None]
            });
        }
        // The resume point of each slot: the highest offset of the checkpoints covering it.
        let mut until: Vec<Option<&Position>> = vec![None; usize::from(SLOT_COUNT)];
        for claim in &self.claims {
            let found_on = &self.slots[claim.node];
            for slot in 0..SLOT_COUNT {
                let covers = if claim.position.node.is_some() {
                    claim.position.covers_slot(slot)
                } else {
                    // A version 1 checkpoint covered the slots of the master it is on.
                    found_on.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
                };
                let u = &mut until[usize::from(slot)];
                if covers && u.is_none_or(|p| claim.position.offset > p.offset) {
                    *u = Some(&claim.position);
                }
            }
        }
        let uncovered = until.iter().filter(|u| u.is_none()).count();
        if uncovered > 0 {
            warn!(uncovered_slots = uncovered,
                  "no checkpoint covers some slots of the target (checkpoint keys lost or a master replaced without a replica): a full sync is needed");
            fullsync = true;
        }
        // A partly applied source transaction can only be resumed by the master that applied it, on the slots
        // it had.
        for (i, own) in self.own.iter().enumerate() {
            let part_elsewhere = self.claims.iter().any(|c| {
                c.position.part > 0
                    && own.as_ref().and_then(Checkpoint::position) != Some(&c.position)
            });
            let own_part_moved = own
                .as_ref()
                .and_then(Checkpoint::position)
                .is_some_and(|p| {
                    p.part > 0
                        && self.slots[i].slots.iter().any(|&(a, b)| {
                            (a..=b)
                                .any(|s| until[usize::from(s)].is_some_and(|u| u.offset > p.offset))
                        })
                });
            if part_elsewhere || own_part_moved {
                warn!("a source transaction was partly applied on slots that moved since: a full sync is needed");
                fullsync = true;
            }
        }
        let mut out = Vec::with_capacity(self.nodes.len() + 1);
        for (i, node) in self.slots.iter().enumerate() {
            let lowest = node
                .slots
                .iter()
                .flat_map(|&(a, b)| a..=b)
                .filter_map(|s| until[usize::from(s)])
                .min_by_key(|p| p.offset);
            let highest = node
                .slots
                .iter()
                .flat_map(|&(a, b)| a..=b)
                .filter_map(|s| until[usize::from(s)])
                .map(|p| p.offset)
                .max()
                .unwrap_or(0);
            self.max_until[i] = highest;
            self.keyless_until[i] = match self.own[i].as_ref().and_then(Checkpoint::position) {
                Some(p) => p.offset,
                None => lowest.map_or(0, |p| p.offset),
            };
            out.push(lowest.cloned().map(Checkpoint::Committed));
        }
        for (slot, u) in until.iter().enumerate() {
            self.until[slot] = u.map_or(0, |p| p.offset);
        }
        if fullsync {
            out.push(None);
        }
        Ok(out)
    }

    /// Every `ferry:checkpoint:{<tag>-*}` key on every master, decoded (a `fullsync` marker as offset
    /// `u64::MAX`).
    async fn find_claims(&mut self) -> Result<Vec<Claim>, Error> {
        let pattern = format!(
            "{}{{{}-*",
            checkpoint::KEY_PREFIX,
            glob_escape(&self.opts.checkpoint_tag)
        );
        let mut claims = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            for (key, value) in node.scan_values(&pattern).await? {
                let cp = Checkpoint::decode(&value)?;
                checkpoint::admit(&cp, self.opts.epoch)?;
                let position = match cp {
                    Checkpoint::Committed(p) => p,
                    _ => Position::new(String::new(), u64::MAX, 0),
                };
                let raw = String::from_utf8_lossy(&value).into_owned();
                claims.push(Claim {
                    node: i,
                    key,
                    raw,
                    position,
                });
            }
        }
        Ok(claims)
    }

    /// What every master loads and knows (the least of them, should they differ).
    pub async fn target_format(&mut self) -> Result<TargetFormat, Error> {
        let mut format: Option<TargetFormat> = None;
        for node in &mut self.nodes {
            let f = node.target_format().await?;
            format = Some(match format {
                Some(common) => common.least(f),
                None => f,
            });
        }
        format.ok_or_else(|| Error::Config("the cluster target has no master".into()))
    }

    /// Starts a full sync on every master: the checkpoints of earlier syncs are deleted (the data they
    /// describe is being rewritten), then each master stores its `fullsync` marker.
    pub async fn begin_full_sync(
        &mut self,
        conflict: ConflictPolicy,
        flush: bool,
    ) -> Result<(), Error> {
        let own: Vec<String> = self
            .nodes
            .iter()
            .map(StandaloneSink::checkpoint_key)
            .collect();
        for claim in std::mem::take(&mut self.claims) {
            if !own.contains(&claim.key) {
                self.nodes[claim.node].delete_key(&claim.key).await?;
            }
        }
        // The stored reports of earlier copies (each master's own are deleted with its marker below).
        for (node, key) in self.report_keys().await? {
            self.nodes[node].delete_key(&key).await?;
        }
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

    /// Gathers a small string of the full copy into its slot's group (`MSET`/`MSETNX` need their keys in one
    /// slot): a group goes out as one `MSET`/`MSETNX` on the master owning its slot, with the conflict policy of
    /// a standalone target, once it holds [`SLOT_GROUP_KEYS`] keys, or with every other group once the gather
    /// is full ([`SlotGather::is_full`], [`ClusterSink::flush_strings`]). A group refused with `MOVED` ends the
    /// session like any refused write of the copy.
    pub async fn push_string(&mut self, db: i64, key: &[u8], value: &[u8]) -> Result<(), Error> {
        if self.gather_string(db, key, value)? {
            self.send_gathered().await?;
        }
        Ok(())
    }

    /// The part of [`ClusterSink::push_string`] that only gathers (no await, for the full copy's hot loop):
    /// true when a slot's group is complete or the gather is full, and [`ClusterSink::send_gathered`] must run
    /// before the next string.
    pub(crate) fn gather_string(
        &mut self,
        db: i64,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, Error> {
        check_db(db)?;
        let strings = self
            .strings
            .get_or_insert_with(|| SlotGather::new(usize::from(SLOT_COUNT)));
        let slot = usize::from(key_slot(key));
        if strings.push(slot, key, value) >= SLOT_GROUP_KEYS {
            self.ready_slot = Some(slot);
        }
        Ok(self.ready_slot.is_some() || strings.is_full())
    }

    /// Sends what [`ClusterSink::gather_string`] found due: a slot's complete group, or every group when the
    /// gather is full.
    pub(crate) async fn send_gathered(&mut self) -> Result<(), Error> {
        let Some(strings) = self.strings.as_mut() else {
            return Ok(());
        };
        if let Some(slot) = self.ready_slot.take() {
            let group = strings.take(slot);
            let node = usize::from(self.owner[slot]);
            self.nodes[node].send_strings(group).await?;
        }
        if strings.is_full() {
            self.flush_strings().await?;
        }
        Ok(())
    }

    /// Writes every group of small strings gathered, each to the master owning its slot. The groups go to the
    /// masters in turn, so every master's window is kept busy.
    pub async fn flush_strings(&mut self) -> Result<(), Error> {
        self.ready_slot = None;
        let Some(strings) = self.strings.as_mut() else {
            return Ok(());
        };
        let mut per_node: Vec<Vec<usize>> = self.nodes.iter().map(|_| Vec::new()).collect();
        for slot in strings.sort() {
            per_node[usize::from(self.owner[slot])].push(slot);
        }
        let mut queues: Vec<_> = per_node.into_iter().map(Vec::into_iter).collect();
        let mut sent = true;
        while sent {
            sent = false;
            for (node, queue) in queues.iter_mut().enumerate() {
                if let Some(slot) = queue.next() {
                    if let Err(e) = self.nodes[node].send_strings(strings.sorted(slot)).await {
                        strings.clear();
                        return Err(e);
                    }
                    sent = true;
                }
            }
        }
        strings.clear();
        Ok(())
    }

    /// A command outside the live stream (element commands of a big key, `FUNCTION LOAD`).
    pub async fn write_plain(&mut self, db: i64, argv: &[Bytes]) -> Result<(), Error> {
        check_db(db)?;
        match self.route(argv)? {
            Route::Node(n, _) => self.nodes[n].write_plain(0, argv).await,
            Route::All => {
                for node in &mut self.nodes {
                    node.write_plain(0, argv).await?;
                }
                Ok(())
            }
            Route::Parts(parts) => {
                for (n, _, part) in parts {
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
        self.finish_full_sync_reporting(replid, offset, &[]).await
    }

    /// Ends a full sync on every master, each storing the keys of `report` its slots hold (see
    /// [`StandaloneSink::finish_full_sync`]).
    pub(crate) async fn finish_full_sync_reporting(
        &mut self,
        replid: &str,
        offset: u64,
        report: &[ReportEntry],
    ) -> Result<(), Error> {
        self.flush_strings().await?;
        self.strings = None;
        let mut per_node: Vec<Vec<ReportEntry>> = vec![Vec::new(); self.nodes.len()];
        for e in report {
            per_node[self.node_of(&e.key.key)].push(e.clone());
        }
        for (node, entries) in self.nodes.iter_mut().zip(per_node) {
            node.finish_full_sync_reporting(replid, offset, &entries)
                .await?;
        }
        self.until.fill(offset);
        self.keyless_until.fill(offset);
        self.max_until.fill(offset);
        self.own = vec![None; self.nodes.len()];
        Ok(())
    }

    /// Starts the live phase at stream `offset`: a master whose own checkpoint covers exactly its slots
    /// continues its chain from it; the others start a new key; commands are skipped by their slot's resume
    /// point. `checkpoints` is empty right after a full sync.
    pub async fn start_stream(
        &mut self,
        replid: &str,
        offset: u64,
        checkpoints: &[Option<Checkpoint>],
    ) -> Result<(), Error> {
        let db = checkpoint::resume_from(checkpoints).map_or(0, |r| r.db);
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if checkpoints.is_empty() {
                node.start_stream(replid, offset, None).await?;
                continue;
            }
            let start = match self.own[i].as_ref().and_then(Checkpoint::position) {
                Some(p) => p.clone(),
                None => Position::new(replid, offset, db),
            };
            let skip = (start.offset, start.part);
            node.start_live(replid, &start, skip).await?;
        }
        Ok(())
    }

    /// Records that the stream moved to `offset`.
    pub fn advance(&mut self, offset: u64, stream_db: i64) {
        for node in &mut self.nodes {
            node.advance(offset, stream_db);
        }
    }

    /// Every stored report hash of this job on every master (`ferry:skipped:{<tag>-*}`,
    /// `ferry:converted:{<tag>-*}`): a master's own, and those of keys it used before a resharding.
    async fn report_keys(&mut self) -> Result<Vec<(usize, String)>, Error> {
        // One `SCAN` per master for both kinds.
        let pattern = format!("ferry:*ed:{{{}-*", glob_escape(&self.opts.checkpoint_tag));
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            for key in node.scan_keys(&pattern).await? {
                let tag = key
                    .strip_prefix(checkpoint::SKIPPED_PREFIX)
                    .or_else(|| key.strip_prefix(checkpoint::CONVERTED_PREFIX));
                if tag.is_some_and(|t| t.starts_with(&format!("{{{}-", self.opts.checkpoint_tag))) {
                    out.push((i, key));
                }
            }
        }
        Ok(out)
    }

    /// The stored report of every master, together: the keys the target policy skipped and converted since the
    /// current copy began, as committed.
    pub(crate) async fn read_report(&mut self) -> Result<(Vec<PolicyKey>, Vec<PolicyKey>), Error> {
        let mut out = (Vec::new(), Vec::new());
        for (node, key) in self.report_keys().await? {
            let keys = self.nodes[node].read_report_hash(&key).await?;
            if key.starts_with(checkpoint::SKIPPED_PREFIX) {
                out.0.extend(keys);
            } else {
                out.1.extend(keys);
            }
        }
        Ok(out)
    }

    /// Routes a unit of the live stream to the masters, leaving out what a slot's checkpoint covers.
    pub async fn push(&mut self, unit: Unit) -> Result<(), Error> {
        let (end, stream_db) = (unit.end_offset, unit.end_db);
        let mut per_node: Vec<Vec<Command>> = vec![Vec::new(); self.nodes.len()];
        // A key the policy skipped or converted is stored by the master owning it, with the batch that applies
        // the unit there.
        let mut reports: Vec<Vec<ReportEntry>> = vec![Vec::new(); self.nodes.len()];
        for e in unit.report {
            let slot = key_slot(&e.key.key);
            if end > self.until[usize::from(slot)] {
                reports[self.node_of(&e.key.key)].push(e);
            }
        }
        let mut already = 0u64;
        let single = unit.commands.len() == 1;
        for cmd in unit.commands {
            check_db(cmd.db)?;
            let route = match self.route(&cmd.argv) {
                Ok(r) => r,
                Err(e) => {
                    if single {
                        if let Some(kind) = cross_slot_kind(&cmd.argv) {
                            return self.push_across(cmd, kind, end, stream_db, reports).await;
                        }
                    }
                    self.refuse(&cmd, e)?;
                    continue;
                }
            };
            match route {
                Route::Node(_, Some(slot)) if end <= self.until[usize::from(slot)] => already += 1,
                Route::Node(n, _) => per_node[n].push(cmd),
                Route::All => {
                    for (n, list) in per_node.iter_mut().enumerate() {
                        if end <= self.keyless_until[n] {
                            already += 1;
                        } else if end <= self.max_until[n] {
                            return Err(Error::Config(format!(
                                "`{}` at offset {end} applies to a whole master whose slots were resumed from \
                                 different checkpoints (after resharding): it cannot be applied exactly, \
                                 restart the job with a full sync (delete its checkpoint keys)",
                                cmd.name()
                            )));
                        } else {
                            list.push(cmd.clone());
                        }
                    }
                }
                Route::Parts(parts) => {
                    for (n, slot, argv) in parts {
                        if end <= self.until[usize::from(slot)] {
                            already += 1;
                            continue;
                        }
                        per_node[n].push(Command {
                            db: 0,
                            argv,
                            end_offset: cmd.end_offset,
                        });
                    }
                }
            }
        }
        if let Some(node) = self.nodes.first_mut() {
            node.count_already_applied(already);
        }
        let used = per_node.iter().filter(|c| !c.is_empty()).count();
        if unit.transaction && used > 1 {
            self.split_transactions += 1;
            warn!(
                nodes = used,
                offset = end,
                "a source transaction spans several target masters: applied atomically per master"
            );
        }
        let mut reports = reports;
        self.push_parts(
            per_node,
            &mut reports,
            unit.transaction,
            end,
            stream_db,
            true,
        )
        .await
    }

    /// Pushes each master its commands of a unit ending at `end`, with the unit's report entries for it (taken
    /// from `reports`). With `settle`, a master without commands gets its report entries alone, or hears that the
    /// stream moved to `end`; without, it is left as it is (a later step of the same unit follows, and its
    /// checkpoint must not pass `end` before that step).
    async fn push_parts(
        &mut self,
        per_node: Vec<Vec<Command>>,
        reports: &mut [Vec<ReportEntry>],
        transaction: bool,
        end: u64,
        stream_db: i64,
        settle: bool,
    ) -> Result<(), Error> {
        for (n, commands) in per_node.into_iter().enumerate() {
            if commands.is_empty() && (!settle || reports[n].is_empty()) {
                if settle {
                    self.nodes[n].advance(end, stream_db);
                }
                continue;
            }
            let report = std::mem::take(&mut reports[n]);
            self.nodes[n]
                .push(Unit {
                    commands,
                    transaction,
                    end_offset: end,
                    end_db: stream_db,
                    report,
                })
                .await?;
        }
        Ok(())
    }

    /// Applies a unit of one command whose keys hash to several slots, as single-slot commands with the same
    /// result (see [`crate::sink::cross_slot`]), in up to two steps: the keys written from what is read, then
    /// (committed after the first) the keys a move empties. A part whose slot's checkpoint covers the unit is
    /// left out, and nothing is read for a step that is.
    async fn push_across(
        &mut self,
        cmd: Command,
        kind: CrossSlot,
        end: u64,
        stream_db: i64,
        mut reports: Vec<Vec<ReportEntry>>,
    ) -> Result<(), Error> {
        let argv = &cmd.argv;
        let until = |sink: &ClusterSink, slot: u16| end <= sink.until[usize::from(slot)];
        let mut first: Vec<(u16, Vec<Bytes>)> = Vec::new();
        let mut second: Vec<(u16, Vec<Bytes>)> = Vec::new();
        match kind {
            CrossSlot::Msetnx => {
                // Propagated only when every key was set: the `MSET` it was.
                let mut mset = argv.clone();
                mset[0] = b("MSET");
                let Some(Ok(split)) = split_by_slot(&mset) else {
                    return Err(across_error(argv, "it does not split by slot"));
                };
                for p in split.parts {
                    first.push((p.slot, p.argv.into_iter().map(Bytes::from).collect()));
                }
            }
            CrossSlot::Smove => {
                let (src, dst, member) = (&argv[1], &argv[2], &argv[3]);
                first.push((key_slot(dst), vec![b("SADD"), dst.clone(), member.clone()]));
                first.push((key_slot(src), vec![b("SREM"), src.clone(), member.clone()]));
            }
            CrossSlot::Copy | CrossSlot::Rename => {
                let (src, dst) = (&argv[1], &argv[2]);
                if !until(self, key_slot(dst)) {
                    self.sync().await?;
                    let Some(payload) = self.dump_of(src).await? else {
                        return Err(missing(argv, src));
                    };
                    let mut restore = vec![b("RESTORE"), dst.clone()];
                    match self.expiry_of(src).await? {
                        Expiry::None => restore.extend([b("0"), payload, b("REPLACE")]),
                        Expiry::At(ms) => restore.extend([
                            Bytes::from(ms.to_string()),
                            payload,
                            b("REPLACE"),
                            b("ABSTTL"),
                        ]),
                        Expiry::In(ms) => {
                            restore.extend([Bytes::from(ms.to_string()), payload, b("REPLACE")])
                        }
                    }
                    first.push((key_slot(dst), restore));
                }
                if kind == CrossSlot::Rename {
                    second.push((key_slot(src), vec![b("DEL"), src.clone()]));
                }
            }
            CrossSlot::Lmove { from_left, to_left } => {
                let (src, dst) = (&argv[1], &argv[2]);
                if !until(self, key_slot(dst)) {
                    self.sync().await?;
                    let at = if from_left { "0" } else { "-1" };
                    let node = self.node_of(src);
                    let element = match self.nodes[node]
                        .call(&[&b"LINDEX"[..], src, at.as_bytes()])
                        .await?
                    {
                        Frame::Bulk(e) => e,
                        _ => return Err(missing(argv, src)),
                    };
                    let push = if to_left { b("LPUSH") } else { b("RPUSH") };
                    first.push((key_slot(dst), vec![push, dst.clone(), element]));
                }
                let pop = if from_left { b("LPOP") } else { b("RPOP") };
                second.push((key_slot(src), vec![pop, src.clone()]));
            }
            CrossSlot::Store { dest } => {
                let dslot = key_slot(&argv[dest]);
                if !until(self, dslot) {
                    let positions = self
                        .table
                        .key_positions(argv)
                        .map_err(|e| across_error(argv, &e.to_string()))?;
                    self.sync().await?;
                    let tag = tag_for_slot(dslot).unwrap_or_default();
                    let mut scratch: Vec<(Bytes, Bytes)> = Vec::new();
                    let mut run = argv.clone();
                    for p in positions {
                        let key = &argv[p];
                        if p == dest || key_slot(key) == dslot {
                            continue;
                        }
                        if let Some((_, s)) = scratch.iter().find(|(k, _)| k == key) {
                            run[p] = s.clone();
                            continue;
                        }
                        let s = scratch_key(&tag, scratch.len());
                        // An input that does not exist stays absent (the scratch key was never written).
                        if let Some(payload) = self.dump_of(key).await? {
                            first.push((
                                dslot,
                                vec![b("RESTORE"), s.clone(), b("0"), payload, b("REPLACE")],
                            ));
                        }
                        run[p] = s.clone();
                        scratch.push((key.clone(), s));
                    }
                    first.push((dslot, run));
                    if !scratch.is_empty() {
                        let mut del = vec![b("DEL")];
                        del.extend(scratch.into_iter().map(|(_, s)| s));
                        first.push((dslot, del));
                    }
                }
            }
        }
        // A master of both steps applies its parts of both at once (one batch is atomic on its master).
        let firsts: std::collections::BTreeSet<usize> = first
            .iter()
            .map(|(s, _)| usize::from(self.owner[usize::from(*s)]))
            .collect();
        let (together, second): (Vec<_>, Vec<_>) = second
            .into_iter()
            .partition(|(s, _)| firsts.contains(&usize::from(self.owner[usize::from(*s)])));
        first.extend(together);
        let steps: Vec<_> = [first, second]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let count = steps.len();
        let mut already = 0u64;
        let mut per_node: Vec<Vec<Command>> = vec![Vec::new(); self.nodes.len()];
        for (i, step) in steps.into_iter().enumerate() {
            for (slot, argv) in step {
                if until(self, slot) {
                    already += 1;
                    continue;
                }
                per_node[usize::from(self.owner[usize::from(slot)])].push(Command {
                    db: 0,
                    argv,
                    end_offset: cmd.end_offset,
                });
            }
            if i + 1 < count {
                let step = std::mem::replace(&mut per_node, vec![Vec::new(); self.nodes.len()]);
                self.push_parts(step, &mut reports, true, end, stream_db, false)
                    .await?;
                // The first step is committed before the second starts.
                self.sync().await?;
            }
        }
        if let Some(node) = self.nodes.first_mut() {
            node.count_already_applied(already);
        }
        self.push_parts(per_node, &mut reports, true, end, stream_db, true)
            .await
    }

    /// `DUMP` of `key` on its master (`None`: no such key).
    async fn dump_of(&mut self, key: &Bytes) -> Result<Option<Bytes>, Error> {
        let node = self.node_of(key);
        match self.nodes[node].call(&[&b"DUMP"[..], key]).await? {
            Frame::Bulk(payload) => Ok(Some(payload)),
            _ => Ok(None),
        }
    }

    /// The expiry of `key` on its master: absolute (`PEXPIRETIME`, 7.0+), else what is left of it (`PTTL`).
    async fn expiry_of(&mut self, key: &Bytes) -> Result<Expiry, Error> {
        let node = self.node_of(key);
        let at = self.nodes[node].call(&[&b"PEXPIRETIME"[..], key]).await;
        let (reply, absolute) = match at {
            Ok(reply) => (reply, true),
            Err(Error::Resp(e)) if e.server_error().is_some() => {
                (self.nodes[node].call(&[&b"PTTL"[..], key]).await?, false)
            }
            Err(e) => return Err(e),
        };
        Ok(match reply.as_integer() {
            Some(ms) if ms >= 0 && absolute => Expiry::At(ms),
            Some(ms) if ms >= 0 => Expiry::In(ms.max(1)),
            _ => Expiry::None,
        })
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

    /// Waits for every master's replies.
    pub async fn drain(&mut self) -> Result<(), Error> {
        for node in &mut self.nodes {
            node.drain().await?;
        }
        Ok(())
    }

    /// Deletes each master's own checkpoint key (a copy without a replication stream leaves none).
    pub async fn delete_own_checkpoints(&mut self) -> Result<(), Error> {
        for node in &mut self.nodes {
            let key = node.checkpoint_key();
            node.delete_key(&key).await?;
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

    /// The lowest offset every master acknowledged.
    pub fn committed_offset(&self) -> u64 {
        self.nodes
            .iter()
            .map(StandaloneSink::committed_offset)
            .min()
            .unwrap_or(0)
    }

    /// Each master's sink.
    pub(crate) fn nodes_mut(&mut self) -> &mut [StandaloneSink] {
        &mut self.nodes
    }

    /// The sink of the master owning `key`'s slot.
    pub(crate) fn node_for(&mut self, key: &[u8]) -> &mut StandaloneSink {
        let node = self.node_of(key);
        &mut self.nodes[node]
    }

    fn node_of(&self, key: &[u8]) -> usize {
        usize::from(self.owner[usize::from(key_slot(key))])
    }

    fn route(&self, argv: &[Bytes]) -> Result<Route, Error> {
        let name = command_name(argv);
        if matches!(name.as_str(), "publish" | "spublish") {
            // PUBLISH: delivered to every node's subscribers by the cluster bus, so sent once, to one master.
            // SPUBLISH (a standalone source propagates it): only the shard that owns the channel's slot takes it,
            // the others refuse it (inside a batch script, "non local key"), so it goes to that master.
            let channel = argv.get(1).map_or(&b""[..], |c| c.as_ref());
            let slot = key_slot(channel);
            return Ok(Route::Node(
                usize::from(self.owner[usize::from(slot)]),
                Some(slot),
            ));
        }
        let keys = self.table.keys(argv).map_err(|e| Error::Target {
            command: name.clone(),
            message: format!("cannot route it to a cluster node: {e}"),
        })?;
        let Some(first) = keys.first() else {
            return Ok(Route::All);
        };
        let slot = key_slot(first);
        let node = self.node_of(first);
        if keys.iter().all(|k| key_slot(k) == slot) {
            return Ok(Route::Node(node, Some(slot)));
        }
        match split_by_slot(argv) {
            Some(Ok(split)) => {
                let parts = split
                    .parts
                    .into_iter()
                    .map(|p| {
                        (
                            usize::from(self.owner[usize::from(p.slot)]),
                            p.slot,
                            p.argv.into_iter().map(Bytes::from).collect(),
                        )
                    })
                    .collect();
                Ok(Route::Parts(parts))
            }
            _ => Err(Error::Target {
                command: name,
                message: format!(
                    "its keys hash to several slots of the target cluster (first key {})",
                    KeyDisplay(first.to_vec())
                ),
            }),
        }
    }

    /// A command that cannot be routed: stops the job, or is counted and logged (error policy `log`).
    fn refuse(&mut self, cmd: &Command, error: Error) -> Result<(), Error> {
        self.refused += 1;
        self.last_error = Some(error.to_string());
        match self.opts.on_error {
            ErrorPolicy::Stop => Err(error),
            ErrorPolicy::Log => {
                warn!(command = %cmd.name(), offset = cmd.end_offset, %error, "not applied (error policy: log)");
                Ok(())
            }
        }
    }
}

/// A command whose keys hash to several slots of a cluster target that cannot be applied there (`why`).
fn across_error(argv: &[Bytes], why: &str) -> Error {
    Error::Target {
        command: command_name(argv),
        message: format!("its keys hash to several slots of the target cluster and {why}"),
    }
}

/// The error for a key the source read and the target does not have: the target differs from the source.
fn missing(argv: &[Bytes], key: &Bytes) -> Error {
    Error::Target {
        command: command_name(argv),
        message: format!(
            "its keys hash to several slots of the target cluster, and key {} it reads is missing or empty on the \
             target where the source had it: the target differs from the source (`ferry verify` lists how)",
            KeyDisplay(key.to_vec())
        ),
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

/// The `skip`-th checkpoint tag whose key hashes to a slot owned by node `index` (`owner`: the node index of
/// every slot). The sink's own key on a master is the first (`skip` 0) unless that key covers other slots; a DR
/// pair seeds a master's checkpoint under it.
pub fn tag_for_node(base: &str, owner: &[u16], index: usize, skip: usize) -> String {
    (0u32..1_000_000)
        .map(|n| format!("{base}-{n}"))
        .filter(|tag| {
            usize::from(owner[usize::from(key_slot(checkpoint::key_name(tag).as_bytes()))]) == index
        })
        .nth(skip)
        .unwrap_or_else(|| base.to_string())
}

/// Escapes the glob characters of Redis `MATCH` patterns.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl StandaloneSink {
    /// `SCAN` of the selected database (0 on a cluster node) for keys matching `pattern`.
    pub(crate) async fn scan_keys(&mut self, pattern: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = self
                .call(&["SCAN", cursor.as_str(), "MATCH", pattern, "COUNT", "1000"])
                .await?;
            let Frame::Array(items) = reply else {
                return Err(Error::Protocol("SCAN did not answer an array".into()));
            };
            let next = items
                .first()
                .and_then(Frame::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| Error::Protocol("SCAN without a cursor".into()))?;
            if let Some(Frame::Array(keys)) = items.get(1) {
                out.extend(
                    keys.iter()
                        .filter_map(Frame::as_bytes)
                        .map(|b| String::from_utf8_lossy(b).into_owned()),
                );
            }
            if next == "0" {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// `SCAN` of database 0 for keys matching `pattern`, with their values (`GET`).
    pub(crate) async fn scan_values(
        &mut self,
        pattern: &str,
    ) -> Result<Vec<(String, Bytes)>, Error> {
        let mut out = Vec::new();
        for key in self.scan_keys(pattern).await? {
            if let Frame::Bulk(value) = self.call(&["GET", key.as_str()]).await? {
                out.push((key, value));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_route_to_their_node_and_skip_gives_the_next() {
        let mut owner = vec![0u16; usize::from(SLOT_COUNT)];
        for (slot, o) in owner.iter_mut().enumerate() {
            *o = u16::from(slot >= 8192);
        }
        let a = tag_for_node("job", &owner, 1, 0);
        let b = tag_for_node("job", &owner, 1, 1);
        assert_ne!(a, b);
        for tag in [&a, &b] {
            assert!(key_slot(checkpoint::key_name(tag).as_bytes()) >= 8192);
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
