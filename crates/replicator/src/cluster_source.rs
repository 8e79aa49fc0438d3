//! A Redis Cluster as the source: one PSYNC stream per shard, in one job.
//!
//! The job discovers the shards (`CLUSTER SHARDS` on 7.0+, `CLUSTER NODES` where that command is unknown) from
//! its seeds and from every node it has seen since, and runs each shard as one instance of the ordinary
//! session loop ([`crate::Replicator`]): its own source link, its own sink, its own checkpoint chain, its own
//! backoff and status. One shard's error does not stop the others; the job ends when no shard runs any more
//! (with the first shard error, if any) or when it is stopped.
//!
//! # How a shard is named
//!
//! A shard's checkpoints live in the target under the tag `<checkpoint tag>:<shard name>` (see
//! [`crate::checkpoint::key_name`]; a cluster target adds its own per-master suffix). The name must survive a
//! failover of the shard (its master changes) and a restart of the job (nothing is kept in memory), so it is
//! not an address:
//!
//! 1. While the job runs, a shard is a set of node ids (its master and replicas). A discovered group of nodes is
//!    the same shard as a running one when any node id is in both; the set grows with every member seen.
//! 2. A shard seen for the first time is named by the node id of its master then (40 hex characters).
//! 3. When the job starts, the names already in the target (from its checkpoint keys) are matched first: a
//!    shard takes the name that is the node id of any of its current members (the founding master is now a
//!    replica, or still the master); failing that, the name whose checkpoint's replication id is the current
//!    master's `master_replid` or `master_replid2` (the PSYNC2 lineage: the founding node is gone, its replica
//!    took over and still knows the old history). Only a shard matching neither is new (a full copy of it).
//!
//! A checkpoint found by name is then only used if the source agrees: PSYNC answers `+CONTINUE` only for a
//! replication id and offset of the node's own history, so a wrong match costs a full copy, never a wrong
//! resume.
//!
//! # Failover of a source shard
//!
//! Each shard's session ends when its master changes (seen by the discovery, which runs every
//! [`ClusterSource::discover_interval`], or by the broken link of a killed master); the next session resolves
//! the new master and continues with PSYNC2 from the checkpoint. A `CLUSTER FAILOVER` pauses the master's
//! clients (and its replication pings) until the replica has its offset, so the old master never has stream bytes
//! the promoted replica lacks. A master that dies may have sent ferry bytes its replica never received; those
//! writes are lost by the cluster itself, and ferry must not have applied them. So, by default, a shard
//! streamed from its master applies a part of the stream only once a replica of that master has acknowledged it
//! ([`ClusterSource::replica_gate`]): what ferry's checkpoint covers is then on a replica, and the promoted one
//! can continue from it. A shard without replicas is not gated (there is no one to fail over to).
//!
//! # A slot migrated on the source
//!
//! Redis propagates `MIGRATE` as two commands in two streams: the importing node runs (and propagates)
//! `RESTORE-ASKING key ttl payload`, then the exporting node deletes the key and propagates a plain `DEL key`.
//! ferry reads the two streams independently, so without care the exporter's `DEL` (or an older write of the
//! exporter on that key, if its stream lags) could reach the target after the importer's `RESTORE` and the
//! writes that follow it, and the key would be lost or go back in time. The ordering rule:
//!
//! - a `RESTORE-ASKING key ...` in a shard's stream is held until the exporting shard's stream is applied up to
//!   and including its `DEL key`: ferry waits until the key no longer exists on the exporting master (an
//!   `-ASK`/`-MOVED` answer means the same), reads that master's `master_repl_offset` (which then covers the
//!   `DEL`, since Redis appends it to the stream before it serves another client), and waits until the
//!   exporting shard's stream has committed that offset on the target;
//! - it is then applied as `RESTORE key ttl payload [ABSTTL] REPLACE` (the key may still be on the target from
//!   the exporter's stream when that one is ahead: `REPLACE` makes that harmless).
//!
//! So on the target every write of the exporter on the key comes before the importer's `RESTORE`, and every
//! write of the importer after it. The exporter is the shard that owns the key's slot in the latest
//! discovery, or the one that owned it before (the discovery keeps each slot's previous owner).
//!
//! Limits of the rule: it costs time, not exactness. Each migrated key holds the importing shard's stream until
//! the exporter's stream has committed the exporter's offset read after the key left it; with writes going on,
//! that is about one apply round of the exporter (bounded by its replica gate, see
//! [`ClusterSource::replica_gate`]). When the gate waited for the replicas' once-a-second acknowledgements, a
//! slot of many keys migrated during the sync was applied at tens of keys per second; the gate now reads the
//! replicas' own offsets, which cuts that wait to milliseconds (not re-measured for migrations). The source is not slowed: its stream is spooled. A `MIGRATE ... COPY` (which leaves the key on the exporter) or a `MIGRATE` that failed
//! after the `RESTORE` make ferry wait for the key to leave the exporter for at most
//! [`MIGRATE_WAIT`], then apply the `RESTORE` without that guarantee (with a warning); two shards importing from
//! each other at the same moment wait for each other at most as long.
//!
//! A key that moved before a shard's full copy took its snapshot (the shard was added while the job was stopped,
//! or before the discovery found it; its copy is redone) is in that copy, and the exporter's `DEL` of it is in
//! the exporter's stream, maybe not yet applied. So a shard's full copy writes its first key only once every
//! other shard that continues its stream has applied it up to the offset its master has after the snapshot
//! (`Shared::before_copy`; shards copying at the same time do not wait for each other, and a shard whose lease
//! another job holds is that job's). A slot migrated while its exporter's shard is run by another process is
//! covered by each shard's checkpoint only.
//!
//! # A slot migrated atomically (Valkey 9's `CLUSTER MIGRATESLOTS`)
//!
//! Valkey 9 moves whole slots without `MIGRATE`. The importing master's stream then carries, between
//! `CLUSTER SYNCSLOTS ESTABLISH SOURCE <node> NAME <name> SLOTSRANGE <a> <b> ...` and `CLUSTER SYNCSLOTS FINISH
//! ... NAME <name>`, a copy of the slots (`SET`, `RPUSH`, `HMSET`... of every key) followed by the writes the
//! exporter took on them meanwhile; once the slots are handed over, the exporter deletes its copies and
//! propagates one `UNLINK` per key. Both streams hold every write of those slots up to the handover, so
//! applying both would apply them twice, and the exporter's `UNLINK`s would delete the keys the importer copied.
//! The ordering rule:
//!
//! - the `CLUSTER SYNCSLOTS` commands are never forwarded;
//! - at an `ESTABLISH` the importing shard's stream waits until the migration has ended (`CLUSTER
//!   GETSLOTMIGRATIONS` on its master gives a final state). When it succeeded, it further waits until the exporter
//!   holds no key of the slots (its `UNLINK`s are then in its stream), reads the exporter's `master_repl_offset`,
//!   and waits until the exporter's stream has committed that offset on the target. The target then holds none of
//!   those keys, and the importer's copy, the writes it forwarded and the writes that follow apply in its order
//!   on top: every write of the slots once. Each key of the copy is deleted on the target before its first
//!   command (the copy writes a list as `RPUSH`es), so whatever the exporter's stream left of it never counts
//!   twice;
//! - an exporter that gave up its last slot turns into a replica of the importer and propagates no `UNLINK`s:
//!   its stream ends, and the wait ends with what it had applied. Its shard is retired; the discovery matches a
//!   shard to the running shard of its master, so the importer's shard, which the old exporter now belongs to,
//!   keeps its own stream;
//! - when the migration failed or was cancelled, the importer's commands on keys of those slots are left out
//!   (the exporter kept the slots, and its stream carries their writes) until another migration into the same
//!   slots begins.
//!
//! Limits: the wait holds the importing shard's whole stream for the migration's length (it is spooled, the
//! source is not slowed), at most [`SLOT_MIGRATION_WAIT`] for the migration and [`MIGRATE_WAIT`] six times over
//! for the exporter, then the stream goes on with a warning. The exporter must be a shard of the same job. A
//! shard whose full copy is taken while a migration into it is in progress gets the keys copied so far in its
//! RDB; `ferry verify` shows what that leaves.
//!
//! # Several jobs, one cluster: shard leases
//!
//! Each shard's sessions hold a lease in the target, `ferry:lease:{<checkpoint tag>:<shard name>}` (the hash
//! tag of the shard's checkpoints), set with `SET ... NX PX` to an id of the job's shard (the same for all its
//! sessions, so a session that follows a broken one takes it back at once) and renewed every
//! [`LEASE_TTL`] / 3 while it runs. A job that finds the lease held by another waits (its shard's status says
//! so) and takes the shard over once the lease expires (the holder stopped or died), continuing from the
//! shard's checkpoint. So jobs given overlapping `shards` lists never run one shard twice at once; and even
//! if a lease were lost while its holder still wrote, the chained checkpoints (`crate::sink::chain`) refuse
//! the older writer's batches: nothing is applied twice.
//!
//! # A flush of a source master
//!
//! A `FLUSHALL` or `FLUSHDB` in a shard's stream emptied that master only; it is applied as the deletion of the
//! keys of the master's slots on the target (`crate::shard_flush` has the rules).
//!
//! # Limits
//!
//! - A shard's full copy never empties the target first (`flush_target_on_resync` is ignored for shards): the
//!   target holds the other shards' keys. A shard's redone copy deletes the keys the source no longer has, as a
//!   standalone source's does on a target the job owns (`crate::redo`), but only in the slots its master serves
//!   when the copy is applied and is not migrating: the other shards write theirs meanwhile, and a migrating
//!   slot's keys are on two nodes. Keys deleted on the source in a slot it gave up, or one migrating at that
//!   moment, may stay (`ferry verify`).
//! - A shard added while the job runs (scale-out) is picked up by the next discovery, and one added while the
//!   job was stopped when it starts again; its full copy replaces keys the target already has (they came from
//!   the shards that exported them).
//! - A shard that disappears from the cluster (all its nodes forgotten) is retired: its session stops after
//!   committing what it received; its checkpoint keys stay in the target.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection, Frame};
use ferry_topology::{Health, SlotMap};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Error;
use crate::pipeline::Unit;
use crate::status::{JobEventKind, Phase, Status, StatusHandle};

/// How long a shard's lease lasts without renewal (see the module documentation).
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How a shard's status says that another job holds its lease (its `last_error` starts with this).
pub(crate) const LEASE_WAIT: &str = "waiting for the shard's lease, held by another job";

/// The longest a `RESTORE-ASKING` waits for its exporter (see the module documentation).
pub const MIGRATE_WAIT: Duration = Duration::from_secs(10);

/// The longest an atomic slot migration's `ESTABLISH` holds the importing shard's stream while the migration
/// runs (see the module documentation).
pub const SLOT_MIGRATION_WAIT: Duration = Duration::from_secs(600);

/// A cluster source: where to find it and which of its shards this job takes.
#[derive(Debug, Clone)]
pub struct ClusterSource {
    /// Any nodes of the source cluster (their credentials and TLS are used for every node).
    pub seeds: Vec<ConnectOptions>,
    /// Only the shards named here: a shard name (see the module documentation), or the node id or
    /// `host:port` of any of its nodes. All shards when `None`.
    pub shards: Option<Vec<String>>,
    /// Stream each shard from one of its replicas (an online one) instead of its master, to spare the masters;
    /// the master when it has none.
    pub prefer_replica: bool,
    /// How often the topology is read again (failovers, shards added or removed).
    pub discover_interval: Duration,
    /// Apply a shard's stream from its master only once a replica of that master holds it (its acknowledgement,
    /// or the offset it reports itself when ferry can reach it), so a master killed before its replica got the
    /// last writes never leaves the target ahead of the promoted replica.
    pub replica_gate: bool,
}

impl ClusterSource {
    /// A cluster source found through `seeds`, all shards, streamed from the masters, with the replica gate.
    pub fn new(seeds: Vec<ConnectOptions>) -> ClusterSource {
        ClusterSource {
            seeds,
            shards: None,
            prefer_replica: false,
            discover_interval: Duration::from_millis(500),
            replica_gate: true,
        }
    }
}

/// The status of one shard of a cluster source.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard's name (see [`crate::cluster_source`]): the tag of its checkpoints is
    /// `<checkpoint tag>:<name>`.
    pub name: String,
    /// The node the shard is streamed from now, `host:port`.
    pub source: String,
    /// The shard no longer exists in the source; its stream was stopped.
    pub retired: bool,
    /// The shard's stream.
    pub status: Status,
}

/// One node of a discovered shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Member {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub master: bool,
    pub online: bool,
}

impl Member {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A shard as one discovery saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ShardView {
    /// The master first, then the replicas.
    pub members: Vec<Member>,
    /// Slots the master serves.
    pub slots: usize,
    /// The slot ranges (inclusive) it serves.
    pub ranges: Vec<(u16, u16)>,
}

impl ShardView {
    fn master(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.master)
    }

    /// The node to stream from: the online master, or (`prefer_replica`) an online replica first.
    fn serving(&self, prefer_replica: bool) -> Option<&Member> {
        let master = self.master().filter(|m| m.online);
        if prefer_replica {
            if let Some(r) = self.members.iter().find(|m| !m.master && m.online) {
                return Some(r);
            }
        }
        master
    }
}

/// The node a shard session streams from.
pub(crate) struct ShardNode {
    pub connect: ConnectOptions,
    pub id: String,
    /// The node is the shard's master and has replicas: gate the stream on what they hold (see `gate`).
    pub gate_on_replicas: bool,
    /// Another node than the one the shard's session before streamed from (a failover followed).
    pub followed: bool,
}

/// What a shard's sessions know of their shard: its latest view, from the job's discovery.
#[derive(Debug)]
pub(crate) struct ShardFollower {
    name: String,
    view: watch::Receiver<Option<ShardView>>,
    template: ConnectOptions,
    prefer_replica: bool,
    replica_gate: bool,
    current: Arc<Mutex<String>>,
    shared: Arc<Shared>,
    /// The value of this shard's lease while this job holds it: the same for all its sessions, so a session
    /// that follows a broken one takes the lease back at once.
    pub(crate) lease_owner: String,
    /// Slot ranges of atomic slot migrations into this shard that failed or were cancelled: its stream's
    /// commands on their keys are left out (see the module documentation).
    dropped_imports: Mutex<Vec<(u16, u16)>>,
    /// The copy of an atomic slot migration being read (from its `ESTABLISH` to its `SNAPSHOT-EOF`).
    snapshot: Mutex<Option<SlotCopy>>,
}

/// The copy of an atomic slot migration being read: its slot ranges and the last key of those slots it wrote
/// (a key's commands come one after another).
#[derive(Debug)]
struct SlotCopy {
    ranges: Vec<(u16, u16)>,
    last: Option<(i64, Bytes)>,
}

/// The slots a master serves in its line of `CLUSTER NODES` (indexed by slot).
fn served_slots(me: &ferry_topology::ClusterNodeInfo) -> Vec<bool> {
    let mut slots = vec![false; usize::from(ferry_topology::SLOT_COUNT)];
    for r in &me.slots {
        for slot in r.start..=r.end.min(ferry_topology::SLOT_COUNT - 1) {
            slots[usize::from(slot)] = true;
        }
    }
    slots
}

/// What a flush of a source shard empties on the target (see [`ShardFollower::flush_scope`]).
#[derive(Debug)]
pub(crate) struct FlushScope {
    /// The slots whose keys the flush deleted (indexed by slot).
    pub slots: Vec<bool>,
    /// Slots in a migration between the master and another node: that node. A key of such a slot is the
    /// flushed master's only when the other node does not hold it.
    peers: HashMap<u16, ConnectOptions>,
}

impl FlushScope {
    /// Of `keys` (target keys of source database `db`, all in the scope's slots), the ones the flush emptied:
    /// every key of a slot in no migration, and a key of a migrating slot that the other node of the migration
    /// does not hold (asked with `ASKING`, which lets a node importing the slot answer for it).
    pub(crate) async fn flushed(&self, db: i64, keys: Vec<Bytes>) -> Result<Vec<Bytes>, Error> {
        // One connection per other node, however many of its slots migrate.
        let mut conns: HashMap<(String, u16), Connection> = HashMap::new();
        let mut flushed = Vec::with_capacity(keys.len());
        for key in keys {
            let slot = ferry_topology::key_slot(&key);
            let Some(peer) = self.peers.get(&slot) else {
                flushed.push(key);
                continue;
            };
            let conn = match conns.entry((peer.host.clone(), peer.port)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut c = Connection::connect(peer).await?;
                    if db != 0 {
                        c.call(&[Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())])
                            .await?;
                    }
                    e.insert(c)
                }
            };
            let mut replies = conn
                .pipeline(&[
                    vec![Bytes::from_static(b"ASKING")],
                    vec![Bytes::from_static(b"EXISTS"), key.clone()],
                ])
                .await?;
            match replies.pop().unwrap_or(Frame::Null) {
                Frame::Integer(0) => flushed.push(key),
                Frame::Integer(_) => {}
                // A redirection: the other node no longer takes part in the slot (the migration ended or was
                // given up since the scope was read). The key stays; should the slot have gone back to the
                // flushed master, `ferry verify` shows it.
                Frame::Error(_) => {}
                other => {
                    return Err(Error::Protocol(format!(
                        "EXISTS on {}:{} answered {other:?}",
                        peer.host, peer.port
                    )))
                }
            }
        }
        Ok(flushed)
    }
}

/// What the shards of one job know of each other: for the ordering of migrated keys.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Per slot: the shard that owns it in the latest discovery, and the one that owned it before.
    owners: Mutex<Vec<(Option<String>, Option<String>)>>,
    /// Per shard: its latest view and the status of its stream.
    shards: Mutex<HashMap<String, (ShardView, StatusHandle)>>,
    /// The connection template of the source's nodes.
    template: ConnectOptions,
    /// The job's checkpoint tag (its shards' tags are `<tag>:<shard name>`).
    job_tag: String,
    /// The target held no checkpoint of this job when it started: no shard of it has written there yet.
    first_run: bool,
    /// The job's ownership of its keys on the target, once a shard has read or decided it (`Some(None)`: no
    /// record, and not the job's first run; see [`crate::redo`]). One shard at a time decides.
    pub(crate) ownership: tokio::sync::Mutex<Option<Option<crate::redo::Ownership>>>,
}

impl Shared {
    fn new(template: ConnectOptions, job_tag: String, first_run: bool) -> Shared {
        Shared {
            owners: Mutex::new(vec![(None, None); usize::from(ferry_topology::SLOT_COUNT)]),
            shards: Mutex::new(HashMap::new()),
            template,
            job_tag,
            first_run,
            ownership: tokio::sync::Mutex::new(None),
        }
    }

    /// How to reach `member` of the source: the job's credentials, database 0, reads bounded to 5 s.
    fn node(&self, member: &Member) -> ConnectOptions {
        let mut c = self.template.clone();
        c.host = member.host.clone();
        c.port = member.port;
        c.db = 0;
        c.read_timeout = Some(Duration::from_secs(5));
        c
    }

    /// Every shard's name, latest view and status.
    fn shard_list(&self) -> Vec<(String, ShardView, StatusHandle)> {
        self.shards
            .lock()
            .map(|s| {
                s.iter()
                    .map(|(n, (v, st))| (n.clone(), v.clone(), st.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The job's checkpoint tag, and whether the job had no checkpoint in the target when it started.
    pub(crate) fn job(&self) -> (&str, bool) {
        (&self.job_tag, self.first_run)
    }

    /// Records a shard's view: its slots and nodes.
    fn record(&self, name: &str, view: &ShardView, status: &StatusHandle) {
        if let Ok(mut owners) = self.owners.lock() {
            for &(a, b) in &view.ranges {
                for slot in a..=b.min(ferry_topology::SLOT_COUNT - 1) {
                    let o = &mut owners[usize::from(slot)];
                    if o.0.as_deref() != Some(name) {
                        o.1 = o.0.take();
                        o.0 = Some(name.to_string());
                    }
                }
            }
        }
        if let Ok(mut shards) = self.shards.lock() {
            shards.insert(name.to_string(), (view.clone(), status.clone()));
        }
    }

    /// The shard a key imported by `importer` came from: the slot's owner, or its previous owner.
    fn exporter(&self, importer: &str, slot: u16) -> Option<String> {
        let owners = self.owners.lock().ok()?;
        let (now, before) = owners[usize::from(slot)].clone();
        [now, before]
            .into_iter()
            .flatten()
            .find(|o| o.as_str() != importer)
    }

    /// Holds a `RESTORE-ASKING` of `key` by shard `importer` until the exporter's stream has applied its `DEL`
    /// (see the module documentation). Gives up after [`MIGRATE_WAIT`] with a warning.
    pub(crate) async fn before_import(&self, importer: &str, key: &[u8]) -> Result<(), Error> {
        let slot = ferry_topology::key_slot(key);
        let Some(exporter) = self.exporter(importer, slot) else {
            warn!(shard = %importer, slot, "a migrated key whose exporting shard is not known: applied without waiting");
            return Ok(());
        };
        let Some((view, status)) = self
            .shards
            .lock()
            .ok()
            .and_then(|s| s.get(&exporter).cloned())
        else {
            return Ok(());
        };
        let Some(master) = view.master().cloned() else {
            return Ok(());
        };
        let c = self.node(&master);
        let waited = tokio::time::timeout(MIGRATE_WAIT, async {
            let mut conn = Connection::connect(&c).await?;
            // Gone from the exporter: its DEL is in its stream.
            loop {
                match conn.call(&[&b"EXISTS"[..], key]).await {
                    Ok(Frame::Integer(0)) => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(e) if e.server_error().is_some() => break, // -ASK / -MOVED: not there
                    Err(e) => return Err(Error::from(e)),
                }
            }
            let offset = master_repl_offset(&mut conn).await?;
            loop {
                let s = status.snapshot();
                if s.applied_offset >= offset && s.phase == Phase::Incremental {
                    return Ok::<(), Error>(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is_connection() => Err(e),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                warn!(shard = %importer, exporter = %exporter, slot,
                      "a migrated key: the exporting shard did not apply its DEL in time; applied without the ordering guarantee");
                Ok(())
            }
        }
    }
}

impl Shared {
    /// Before the full copy of shard `copier` writes its first key (its snapshot is taken): waits until every
    /// other shard that continues its stream has applied it up to where its master stood then. A key that moved
    /// into `copier` from another shard before the snapshot is in the copy, and that shard's `DEL` of it (the
    /// `MIGRATE`) is in its stream before that point: so the copy's key lands after the `DEL`, not under it. A
    /// shard that copies as well is not waited for (its own snapshot has no such `DEL` ahead of it); one still in
    /// its handshake is waited for until it knows which it does. At most `MIGRATE_WAIT` six times over, then the
    /// copy goes on with a warning.
    pub(crate) async fn before_copy(&self, copier: &str) {
        let deadline = tokio::time::Instant::now() + MIGRATE_WAIT * 6;
        for (name, view, status) in self.shard_list() {
            if name == copier {
                continue;
            }
            let waited = tokio::time::timeout_at(deadline, async {
                // Continues or copies? (A shard whose link broke comes back one way or the other; one whose lease
                // another job holds is that job's to order.)
                loop {
                    let s = status.snapshot();
                    let undecided = matches!(s.phase, Phase::Handshake | Phase::Reconnecting);
                    if !undecided {
                        break;
                    }
                    if s.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with(LEASE_WAIT))
                    {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if status.snapshot().phase != Phase::Incremental {
                    return Ok(());
                }
                let Some(master) = view.master() else {
                    return Ok(());
                };
                let mut conn = Connection::connect(&self.node(master)).await?;
                let offset = master_repl_offset(&mut conn).await?;
                loop {
                    let s = status.snapshot();
                    if s.phase == Phase::Stopped
                        || (s.phase == Phase::Incremental && s.applied_offset >= offset)
                    {
                        return Ok::<(), Error>(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            match waited {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(shard = %copier, other = %name, error = %e,
                          "a full copy could not read where another shard's stream stands: copying without waiting for it");
                }
                Err(_) => {
                    warn!(shard = %copier, other = %name,
                          "a full copy did not see another shard's stream catch up in time: copying without waiting \
                           (a key migrated between them while the job was away may be deleted by that stream)");
                    return;
                }
            }
        }
    }

    /// Follows an atomic slot migration into `importer` (see the module documentation): waits until it ended
    /// and, when it succeeded, until the exporter's stream has committed its deletes of the slots' keys.
    /// Returns whether it succeeded. Waits that run out go on with a warning.
    async fn slot_import(&self, importer: &str, import: &SlotImport) -> Result<bool, Error> {
        let shards = self.shard_list();
        let Some(importer_master) = shards
            .iter()
            .find(|(n, _, _)| n == importer)
            .and_then(|(_, v, _)| v.master().cloned())
        else {
            warn!(shard = %importer, migration = %import.name, "an atomic slot migration into a shard whose master is not known: its copy is applied without waiting");
            return Ok(true);
        };
        info!(shard = %importer, migration = %import.name, slots = ?import.ranges,
              "an atomic slot migration into this shard: its stream waits until the migration ends");
        let ended = tokio::time::timeout(SLOT_MIGRATION_WAIT, async {
            let mut conn = Connection::connect(&self.node(&importer_master)).await?;
            loop {
                let reply = conn.call(&["CLUSTER", "GETSLOTMIGRATIONS"]).await?;
                let entry = slot_migrations(&reply)
                    .into_iter()
                    .find(|e| e.get("name") == Some(&import.name));
                let Some(entry) = entry else {
                    // Gone from the log (it keeps the latest ones, and not across restarts): the slots' owner says.
                    let nodes = conn.call(&["CLUSTER", "NODES"]).await?;
                    let first = import.ranges[0].0;
                    let owns =
                        ferry_topology::parse_cluster_nodes(nodes.as_bytes().unwrap_or_default())
                            .unwrap_or_default()
                            .iter()
                            .filter(|n| n.flags.myself)
                            .flat_map(|n| &n.slots)
                            .any(|r| r.start <= first && first <= r.end);
                    return Ok::<bool, Error>(owns);
                };
                match migration_outcome(&entry) {
                    Some(succeeded) => return Ok(succeeded),
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await;
        let succeeded = match ended {
            Ok(r) => r?,
            Err(_) => {
                warn!(shard = %importer, migration = %import.name,
                      "an atomic slot migration did not end in time: its copy is applied without the ordering guarantee");
                return Ok(true);
            }
        };
        if !succeeded {
            warn!(shard = %importer, migration = %import.name, slots = ?import.ranges,
                  "an atomic slot migration into this shard failed or was cancelled: its copy of the slots is left out");
            return Ok(false);
        }
        let Some((exporter, view, status)) = shards
            .iter()
            .find(|(_, v, _)| v.members.iter().any(|m| m.id == import.source))
            .cloned()
        else {
            warn!(shard = %importer, migration = %import.name, source = %import.source,
                  "an atomic slot migration from a node this job does not follow: applied without the ordering guarantee");
            return Ok(true);
        };
        let source = view
            .members
            .iter()
            .find(|m| m.id == import.source)
            .cloned()
            .unwrap_or_default();
        let slots: Vec<u16> = import.ranges.iter().flat_map(|&(a, b)| a..=b).collect();
        let waited = tokio::time::timeout(MIGRATE_WAIT * 6, async {
            // The exporter's deletes of the slots' keys are in its stream once it holds none of them.
            let mut conn = Connection::connect(&self.node(&source)).await.ok();
            let master = match conn.as_mut() {
                Some(c) => info_text(c, "replication")
                    .await?
                    .lines()
                    .any(|l| l.trim() == "role:master"),
                None => false,
            };
            let offset = match conn.filter(|_| master) {
                Some(mut conn) => {
                    loop {
                        let mut left = 0i64;
                        for chunk in slots.chunks(1024) {
                            let cmds: Vec<Vec<Bytes>> = chunk
                                .iter()
                                .map(|s| {
                                    vec![
                                        Bytes::from_static(b"CLUSTER"),
                                        Bytes::from_static(b"COUNTKEYSINSLOT"),
                                        Bytes::from(s.to_string()),
                                    ]
                                })
                                .collect();
                            for r in conn.pipeline(&cmds).await? {
                                if let Frame::Integer(n) = r {
                                    left += n;
                                }
                            }
                        }
                        if left == 0 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let info = info_text(&mut conn, "replication").await?;
                    let master = info.lines().any(|l| l.trim() == "role:master");
                    repl_offset_of(&info).filter(|_| master)
                }
                _ => None,
            };
            loop {
                let s = status.snapshot();
                // The exporter no longer a master (it gave up its last slots and follows another, without
                // deleting anything in its own stream): what its stream sent before is all there will be; the
                // importer's copy deletes each key before writing it.
                let done = match offset {
                    Some(o) => s.applied_offset >= o && s.phase == Phase::Incremental,
                    None => s.applied_offset >= s.source_offset || s.phase != Phase::Incremental,
                };
                if done {
                    return Ok::<(), Error>(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        match waited {
            Ok(r) => r?,
            Err(_) => warn!(shard = %importer, exporter = %exporter, migration = %import.name,
                            "an atomic slot migration: the exporting shard did not apply its deletes in time; applied without the ordering guarantee"),
        }
        info!(shard = %importer, exporter = %exporter, migration = %import.name,
              "an atomic slot migration into this shard ended: its copy of the slots follows the exporter's writes");
        Ok(true)
    }
}

/// Whether a unit carries a `RESTORE-ASKING` (a key migrated into this shard) or a `CLUSTER SYNCSLOTS` (an atomic
/// slot migration into it).
pub(crate) fn has_import(unit: &Unit) -> bool {
    unit.commands.iter().any(|c| {
        c.argv
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"restore-asking"))
            || is_slot_sync(&c.argv)
    })
}

/// Whether `argv` is a `CLUSTER SYNCSLOTS ...` of Valkey's atomic slot migration.
pub(crate) fn is_slot_sync(argv: &[Bytes]) -> bool {
    argv.len() >= 2
        && argv[0].eq_ignore_ascii_case(b"cluster")
        && argv[1].eq_ignore_ascii_case(b"syncslots")
}

/// An `ESTABLISH` of an atomic slot migration: the exporter's node id, the migration's name, the slot ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotImport {
    pub source: String,
    pub name: String,
    pub ranges: Vec<(u16, u16)>,
}

/// Reads `CLUSTER SYNCSLOTS ESTABLISH SOURCE <id> NAME <name> SLOTSRANGE <a> <b> [<a> <b> ...]` (its options in
/// any order); `None` for any other command or a malformed one.
pub(crate) fn slot_import(argv: &[Bytes]) -> Option<SlotImport> {
    if !is_slot_sync(argv) || !argv.get(2)?.eq_ignore_ascii_case(b"establish") {
        return None;
    }
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let (mut source, mut name, mut ranges) = (None, None, Vec::new());
    let mut i = 3;
    while i < argv.len() {
        let word = &argv[i];
        if word.eq_ignore_ascii_case(b"source") {
            source = Some(text(argv.get(i + 1)?));
            i += 2;
        } else if word.eq_ignore_ascii_case(b"name") {
            name = Some(text(argv.get(i + 1)?));
            i += 2;
        } else if word.eq_ignore_ascii_case(b"slotsrange") {
            i += 1;
            while let (Some(a), Some(b)) = (argv.get(i), argv.get(i + 1)) {
                let (Some(a), Some(b)) = (
                    std::str::from_utf8(a)
                        .ok()
                        .and_then(|a| a.parse::<u16>().ok()),
                    std::str::from_utf8(b)
                        .ok()
                        .and_then(|b| b.parse::<u16>().ok()),
                ) else {
                    break;
                };
                ranges.push((a.min(b), a.max(b)));
                i += 2;
            }
        } else {
            i += 1;
        }
    }
    Some(SlotImport {
        source: source?,
        name: name?,
        ranges: (!ranges.is_empty()).then_some(ranges)?,
    })
}

fn in_ranges(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
}

/// The entries of a `CLUSTER GETSLOTMIGRATIONS` reply (RESP2 flat arrays or RESP3 maps) as field maps.
fn slot_migrations(reply: &Frame) -> Vec<HashMap<String, String>> {
    let text = |f: &Frame| match f {
        Frame::Integer(n) => Some(n.to_string()),
        other => other
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    };
    let Frame::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let pairs: Vec<(String, String)> = match e {
                Frame::Array(items) => items
                    .chunks(2)
                    .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?)))
                    .collect(),
                Frame::Map(items) => items
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                    .collect(),
                _ => return None,
            };
            Some(pairs.into_iter().collect())
        })
        .collect()
}

/// How a `CLUSTER GETSLOTMIGRATIONS` entry ended: `Some(true)` succeeded, `Some(false)` failed or cancelled,
/// `None` still running.
fn migration_outcome(entry: &HashMap<String, String>) -> Option<bool> {
    match entry.get("state")?.to_ascii_lowercase().as_str() {
        "success" => Some(true),
        "failed" | "cancelled" | "canceled" => Some(false),
        _ => None,
    }
}

/// The `slot_ranges` field of a `CLUSTER GETSLOTMIGRATIONS` entry: `a-b` ranges (or single slots) separated by
/// spaces or commas. What does not parse is left out.
fn parse_slot_ranges(text: &str) -> Vec<(u16, u16)> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .filter_map(|w| {
            let (a, b) = w.split_once('-').unwrap_or((w, w));
            let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
            Some((a.min(b), a.max(b)))
        })
        .collect()
}

/// Rewrites `RESTORE-ASKING key ttl payload [...]` to `RESTORE key ttl payload [...] REPLACE`.
pub(crate) fn import_as_restore(argv: &mut Vec<Bytes>) {
    argv[0] = Bytes::from_static(b"RESTORE");
    if !argv
        .iter()
        .skip(4)
        .any(|a| a.eq_ignore_ascii_case(b"replace"))
    {
        argv.push(Bytes::from_static(b"REPLACE"));
    }
}

impl ShardFollower {
    /// Whether this shard's stream leaves out the commands on some slots (a failed atomic slot migration into
    /// it) or reads the copy of a migration: then every unit goes through [`ShardFollower::import`].
    pub(crate) fn drops_imports(&self) -> bool {
        self.dropped_imports.lock().is_ok_and(|d| !d.is_empty())
            || self.snapshot.lock().is_ok_and(|s| s.is_some())
    }

    /// Orders the migrated keys of a unit after their exporter's `DEL` and rewrites them into `RESTORE ...
    /// REPLACE`, and follows atomic slot migrations into this shard (see the module documentation).
    /// `first_key` gives a command's first key (the command table's answer).
    pub(crate) async fn import(
        &self,
        unit: &mut Unit,
        first_key: impl Fn(&[Bytes]) -> Option<Bytes>,
    ) -> Result<(), Error> {
        let mut kept = Vec::with_capacity(unit.commands.len());
        for mut cmd in std::mem::take(&mut unit.commands) {
            if is_slot_sync(&cmd.argv) {
                if let Some(import) = slot_import(&cmd.argv) {
                    let succeeded = self.shared.slot_import(&self.name, &import).await?;
                    if let Ok(mut dropped) = self.dropped_imports.lock() {
                        dropped.retain(|&(a, b)| {
                            !import.ranges.iter().any(|&(x, y)| a <= y && x <= b)
                        });
                        if !succeeded {
                            dropped.extend(import.ranges.iter().copied());
                        }
                    }
                    if let Ok(mut snapshot) = self.snapshot.lock() {
                        *snapshot = succeeded.then(|| SlotCopy {
                            ranges: import.ranges.clone(),
                            last: None,
                        });
                    }
                } else if cmd.argv.get(2).is_some_and(|w| {
                    w.eq_ignore_ascii_case(b"snapshot-eof") || w.eq_ignore_ascii_case(b"finish")
                }) {
                    if let Ok(mut snapshot) = self.snapshot.lock() {
                        *snapshot = None;
                    }
                }
                continue; // Valkey's own protocol: never forwarded
            }
            let dropped = self.dropped_imports.lock().is_ok_and(|d| {
                !d.is_empty()
                    && first_key(&cmd.argv)
                        .is_some_and(|k| in_ranges(&d, ferry_topology::key_slot(&k)))
            });
            if dropped {
                continue;
            }
            // The copy of migrated slots writes each key from nothing (`RPUSH` of its elements...): the key
            // is deleted on the target before its first command, whatever the target held of it.
            if let Ok(mut snapshot) = self.snapshot.lock() {
                if let Some(SlotCopy { ranges, last }) = snapshot.as_mut() {
                    if let Some(key) = first_key(&cmd.argv) {
                        let this = (cmd.db, key);
                        if in_ranges(ranges, ferry_topology::key_slot(&this.1))
                            && last.as_ref() != Some(&this)
                        {
                            kept.push(crate::pipeline::Command {
                                db: cmd.db,
                                argv: vec![Bytes::from_static(b"DEL"), this.1.clone()],
                                end_offset: cmd.end_offset,
                            });
                            *last = Some(this);
                        }
                    }
                }
            }
            if cmd.argv.len() >= 4 && cmd.argv[0].eq_ignore_ascii_case(b"restore-asking") {
                self.shared.before_import(&self.name, &cmd.argv[1]).await?;
                import_as_restore(&mut cmd.argv);
            }
            kept.push(cmd);
        }
        unit.commands = kept;
        Ok(())
    }

    /// Whether `member` still has the role the last discovery gave it: a master that turned replica (it failed
    /// over, or gave up its last slots and follows the master that took them) would stream another shard's data.
    /// A node that does not answer is taken as it is (the session reports what fails).
    async fn still_serves(&self, member: &Member) -> bool {
        let mut c = self.template.clone();
        c.host = member.host.clone();
        c.port = member.port;
        c.db = 0;
        c.connect_timeout = Duration::from_secs(2);
        c.read_timeout = Some(Duration::from_secs(2));
        let Ok(mut conn) = Connection::connect(&c).await else {
            return true;
        };
        match info_text(&mut conn, "replication").await {
            Ok(info) => {
                let master = info.lines().any(|l| l.trim() == "role:master");
                master == member.master
            }
            Err(_) => true,
        }
    }

    /// The node to stream from now; waits (up to 30 s) while the shard has none (a failover in progress).
    pub(crate) async fn resolve(&self) -> Result<ShardNode, Error> {
        let mut rx = self.view.clone();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let pick = {
                    let v = rx.borrow_and_update();
                    match v.as_ref() {
                        None => return Err(Error::Stopped),
                        Some(view) => view.serving(self.prefer_replica).map(|m| {
                            let replicas = view.members.iter().any(|r| !r.master);
                            (m.clone(), m.master && replicas)
                        }),
                    }
                };
                if let Some(p) = pick {
                    if self.still_serves(&p.0).await {
                        return Ok(p);
                    }
                    info!(shard = %self.name, node = %p.0.addr(),
                          "the node the last discovery named for this shard no longer serves it: waiting for the next discovery");
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Stopped);
                }
            }
        })
        .await
        .map_err(|_| {
            Error::Failover(format!(
                "source shard {} has no node to stream from (a failover in progress?)",
                self.name
            ))
        })??;
        let (member, has_replicas) = found;
        let mut connect = self.template.clone();
        connect.host = member.host.clone();
        connect.port = member.port;
        connect.db = 0;
        let followed = match self.current.lock() {
            Ok(mut c) => {
                let followed = !c.is_empty() && *c != member.addr();
                *c = member.addr();
                followed
            }
            Err(_) => false,
        };
        info!(shard = %self.name, node = %member.addr(), master = member.master, "source shard node resolved");
        Ok(ShardNode {
            connect,
            id: member.id,
            gate_on_replicas: self.replica_gate && has_replicas,
            followed,
        })
    }

    /// The shard's name (see the module documentation).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// What the shard's sessions share with the job's other shards.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The slots a redone copy of this shard may sweep (indexed by slot): the ones its master serves now with no
    /// migration of them in progress (a `MIGRATE`-based one, in `CLUSTER NODES`, or an atomic one, in Valkey's
    /// `CLUSTER GETSLOTMIGRATIONS`). Every write of such a slot since the copy's snapshot is in this shard's
    /// stream, which is applied after the sweep; a slot it gave up, or one whose keys are still on two nodes, is
    /// left alone. No slot when the master is not known or no longer one.
    pub(crate) async fn sweepable_slots(&self) -> Result<Vec<bool>, Error> {
        let Some((mut conn, parsed, me)) = self.master_nodes().await? else {
            return Ok(vec![false; usize::from(ferry_topology::SLOT_COUNT)]);
        };
        let me = &parsed[me];
        let mut slots = served_slots(me);
        for (slot, _) in me.migrating.iter().chain(&me.importing) {
            if let Some(s) = slots.get_mut(usize::from(*slot)) {
                *s = false;
            }
        }
        // Valkey 9: atomic migrations that have not ended (an error reply: a server without them).
        if let Ok(reply) = conn.call(&["CLUSTER", "GETSLOTMIGRATIONS"]).await {
            for entry in slot_migrations(&reply) {
                if migration_outcome(&entry).is_some() {
                    continue;
                }
                for (a, b) in entry
                    .get("slot_ranges")
                    .map(|r| parse_slot_ranges(r))
                    .unwrap_or_default()
                {
                    for slot in a..=b.min(ferry_topology::SLOT_COUNT - 1) {
                        slots[usize::from(slot)] = false;
                    }
                }
            }
        }
        Ok(slots)
    }

    /// A connection to the shard's master, its `CLUSTER NODES` and the index of its own line there; `None` when
    /// the master is not known or no longer one.
    async fn master_nodes(
        &self,
    ) -> Result<Option<(Connection, Vec<ferry_topology::ClusterNodeInfo>, usize)>, Error> {
        let master = self
            .view
            .borrow()
            .as_ref()
            .and_then(|v| v.master().cloned());
        let Some(master) = master else {
            return Ok(None);
        };
        let mut conn = Connection::connect(&self.shared.node(&master)).await?;
        let nodes = conn.call(&["CLUSTER", "NODES"]).await?;
        let parsed = ferry_topology::parse_cluster_nodes(nodes.as_bytes().unwrap_or_default())
            .map_err(|e| Error::Protocol(format!("CLUSTER NODES of {}: {e}", master.addr())))?;
        let me = parsed.iter().position(|n| n.flags.myself && n.flags.master);
        Ok(me.map(|me| (conn, parsed, me)))
    }

    /// What a `FLUSHALL` or `FLUSHDB` in this shard's stream emptied, read when it is applied: the slots its
    /// master serves, and for each slot of them in a `MIGRATE`-based migration (out of the master or into it),
    /// the other node of that migration. A master serves no slot when it is not known or no longer a master.
    pub(crate) async fn flush_scope(&self) -> Result<FlushScope, Error> {
        let Some((_, parsed, me)) = self.master_nodes().await? else {
            return Ok(FlushScope {
                slots: vec![false; usize::from(ferry_topology::SLOT_COUNT)],
                peers: HashMap::new(),
            });
        };
        let me = &parsed[me];
        let mut slots = served_slots(me);
        let mut peers = HashMap::new();
        for (slot, peer) in me.migrating.iter().chain(&me.importing) {
            let Some(s) = slots.get_mut(usize::from(*slot)) else {
                continue;
            };
            // A slot imported into the master is still served by the exporter: its keys there are the
            // exporter's, the ones already moved were this master's.
            *s = true;
            let addr = parsed
                .iter()
                .find(|n| &n.id == peer)
                .and_then(|n| n.addr.clone());
            match addr {
                Some(addr) if !addr.host.is_empty() => {
                    let mut c = self.template.clone();
                    c.host = addr.host;
                    c.port = addr.port;
                    c.db = 0;
                    c.read_timeout = Some(Duration::from_secs(5));
                    peers.insert(*slot, c);
                }
                // The other node is not known: the keys of that slot are this master's as far as anyone can
                // tell.
                _ => {
                    warn!(slot, peer = %peer, "a flushed source shard's slot is in a migration with a node of unknown address")
                }
            }
        }
        Ok(FlushScope { slots, peers })
    }

    /// Returns once the shard should be streamed from another node than `node` (a failover, the node failed,
    /// the shard was retired), with the error that ends the session.
    pub(crate) async fn replaced(&self, node: &ShardNode) -> Error {
        let mut rx = self.view.clone();
        loop {
            let moved = match rx.borrow_and_update().as_ref() {
                None => return Error::Stopped,
                Some(view) => match view.serving(self.prefer_replica) {
                    Some(m) => m.id != node.id,
                    // No node to stream from: the one in use failed, and its link breaks on its own.
                    None => false,
                },
            };
            if moved {
                return Error::Failover(format!(
                    "source shard {}: node {}:{} is no longer the one to stream from",
                    self.name, node.connect.host, node.connect.port
                ));
            }
            if rx.changed().await.is_err() {
                return Error::Stopped;
            }
        }
    }
}

/// A node's `master_repl_offset` (0 when `INFO` does not give it).
async fn master_repl_offset(conn: &mut Connection) -> Result<u64, Error> {
    Ok(repl_offset_of(&info_text(conn, "replication").await?).unwrap_or(0))
}

/// The `master_repl_offset` field of an `INFO replication` text.
fn repl_offset_of(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

/// One section of a node's `INFO`, as text (empty when the reply is not a string).
pub(crate) async fn info_text(conn: &mut Connection, section: &str) -> Result<String, Error> {
    let reply = conn.call(&["INFO", section]).await?;
    Ok(reply
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default())
}

/// Reads the shards from the first node of `nodes` that answers.
pub(crate) async fn discover(nodes: &[ConnectOptions]) -> Result<Vec<ShardView>, Error> {
    let mut last = None;
    for node in nodes {
        let mut opts = node.clone();
        opts.db = 0;
        opts.connect_timeout = opts.connect_timeout.min(Duration::from_secs(2));
        opts.read_timeout = Some(Duration::from_secs(5));
        match discover_from(&opts).await {
            Ok(views) if !views.is_empty() => return Ok(views),
            Ok(_) => {
                last = Some(Error::Config(format!(
                    "the source node {}:{} lists no shard",
                    opts.host, opts.port
                )))
            }
            Err(e) if e.is_auth() => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("a cluster source needs at least one seed".into())))
}

async fn discover_from(opts: &ConnectOptions) -> Result<Vec<ShardView>, Error> {
    let mut conn = Connection::connect(opts).await?;
    let map = match conn.call(&["CLUSTER", "SHARDS"]).await {
        Ok(reply) => SlotMap::from_cluster_shards(&reply)
            .map_err(|e| Error::Protocol(format!("CLUSTER SHARDS of the source: {e}")))?,
        // Before 7.0 there is no CLUSTER SHARDS.
        Err(e) if e.to_string().contains("cluster support disabled") => {
            return Err(Error::Config(format!(
                "the source node {}:{} is not a Redis Cluster node (cluster support disabled): \
                 use a standalone source for it",
                opts.host, opts.port
            )))
        }
        Err(e) if e.server_error().is_some() && !e.to_string().contains("NOAUTH") => {
            let reply = conn.call(&["CLUSTER", "NODES"]).await?;
            let text = reply.as_bytes().unwrap_or_default();
            SlotMap::from_cluster_nodes(text)
                .map_err(|e| Error::Protocol(format!("CLUSTER NODES of the source: {e}")))?
        }
        Err(e) => return Err(e.into()),
    };
    let mut map = map;
    map.fill_unknown_hosts(&opts.host);
    let mut slots: HashMap<String, Vec<(u16, u16)>> = HashMap::new();
    for (range, node) in map.ranges() {
        slots
            .entry(node.addr.to_string())
            .or_default()
            .push((range.start, range.end));
    }
    let member = |n: &ferry_topology::Node, master: bool| Member {
        id: n.id.clone().unwrap_or_else(|| n.addr.to_string()),
        host: n.addr.host.clone(),
        port: n.addr.port,
        master,
        // A node only suspected down, or a replica still loading, is not failed.
        online: n.health != Health::Failed,
    };
    Ok(map
        .shards()
        .iter()
        .filter(|s| !s.master.addr.host.is_empty() && s.master.addr.port != 0)
        .map(|s| {
            let mut members = vec![member(&s.master, true)];
            members.extend(s.replicas.iter().map(|r| member(r, false)));
            let ranges = slots
                .get(&s.master.addr.to_string())
                .cloned()
                .unwrap_or_default();
            ShardView {
                slots: ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum(),
                ranges,
                members,
            }
        })
        .collect())
}

/// `SCAN` for `pattern` with the values (`GET`) on one server.
pub(crate) async fn scan_values(
    conn: &mut Connection,
    pattern: &str,
) -> Result<Vec<(String, Bytes)>, Error> {
    let mut out = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let reply = conn
            .call(&["SCAN", cursor.as_str(), "MATCH", pattern, "COUNT", "1000"])
            .await?;
        let Frame::Array(items) = reply else {
            return Err(Error::Protocol("SCAN did not answer an array".into()));
        };
        cursor = items
            .first()
            .and_then(Frame::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| Error::Protocol("SCAN without a cursor".into()))?;
        if let Some(Frame::Array(keys)) = items.get(1) {
            for key in keys.iter().filter_map(Frame::as_bytes) {
                let key = String::from_utf8_lossy(key).into_owned();
                if let Ok(Frame::Bulk(v)) = conn.call(&["GET", key.as_str()]).await {
                    out.push((key, v));
                }
            }
        }
        if cursor == "0" {
            return Ok(out);
        }
    }
}

/// The shard names found in checkpoint keys `ferry:checkpoint:{<tag>:<name>[-<n>]}`, with the replication id
/// of a committed checkpoint when one says.
pub(crate) fn names_from_keys(
    tag: &str,
    keys: &[(String, Bytes)],
) -> HashMap<String, Option<String>> {
    let prefix = format!("{}{{{tag}:", crate::checkpoint::KEY_PREFIX);
    let mut out: HashMap<String, Option<String>> = HashMap::new();
    for (key, value) in keys {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        let Some(name) = rest.get(..40).filter(|n| crate::checkpoint::is_replid(n)) else {
            continue;
        };
        let replid = crate::checkpoint::Checkpoint::decode(value)
            .ok()
            .and_then(|c| c.position().map(|p| p.replid.clone()));
        let entry = out.entry(name.to_string()).or_default();
        if entry.is_none() {
            *entry = replid;
        }
    }
    out
}

/// One running shard.
struct Running {
    name: String,
    ids: BTreeSet<String>,
    view: watch::Sender<Option<ShardView>>,
    status: StatusHandle,
    current: Arc<Mutex<String>>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    result: Option<Result<(), String>>,
    retired: bool,
    absent: u32,
}

/// A live view of the shards of a cluster-source job ([`crate::Replicator::shards`]).
#[derive(Debug, Clone)]
pub struct ShardsView(pub(crate) ShardsHandle);

impl ShardsView {
    /// The status of each shard now (empty for a job whose source is not a cluster).
    pub fn snapshot(&self) -> Vec<ShardStatus> {
        self.0.snapshot()
    }
}

/// The shards of a cluster-source job, for its status.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardsHandle {
    inner: Arc<Mutex<Vec<ShardEntry>>>,
}

#[derive(Debug, Clone)]
struct ShardEntry {
    name: String,
    current: Arc<Mutex<String>>,
    status: StatusHandle,
    retired: bool,
}

impl ShardsHandle {
    pub(crate) fn snapshot(&self) -> Vec<ShardStatus> {
        let list = self.inner.lock().map(|l| l.clone()).unwrap_or_default();
        list.into_iter()
            .map(|e| ShardStatus {
                source: e.current.lock().map(|c| c.clone()).unwrap_or_default(),
                name: e.name,
                retired: e.retired,
                status: e.status.snapshot(),
            })
            .collect()
    }

    fn set(&self, running: &[Running]) {
        if let Ok(mut l) = self.inner.lock() {
            *l = running
                .iter()
                .map(|r| ShardEntry {
                    name: r.name.clone(),
                    current: r.current.clone(),
                    status: r.status.clone(),
                    retired: r.retired,
                })
                .collect();
        }
    }
}

/// The end of a shard's task.
async fn ended(task: tokio::task::JoinHandle<Result<(), Error>>) -> Result<(), Error> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(Error::Failover(format!(
            "the shard's task ended abnormally: {e}"
        ))),
    }
}

/// Whether a shard is one the job was asked to take.
fn selected(wanted: Option<&[String]>, name: &str, view: &ShardView) -> bool {
    let Some(wanted) = wanted else { return true };
    wanted
        .iter()
        .any(|w| w == name || view.members.iter().any(|m| &m.id == w || &m.addr() == w))
}

/// How often the job's status is summed up from its shards' between two discoveries.
const AGGREGATE_EVERY: Duration = Duration::from_millis(100);

/// Sums the shards' statuses into the job's.
fn aggregate(status: &StatusHandle, running: &[Running]) {
    let shards: Vec<Status> = running.iter().map(|r| r.status.snapshot()).collect();
    status.update(|s| {
        s.phase = Phase::combine(shards.iter().map(|x| x.phase));
        macro_rules! sum {
            ($($f:ident),*) => { $( s.$f = shards.iter().map(|x| x.$f).sum(); )* };
        }
        sum!(
            keys_done,
            keys_copied,
            keys_as_commands,
            keys_reencoded,
            keys_skipped,
            commands_applied,
            commands_filtered,
            commands_partial,
            bytes_read,
            bytes_written,
            spooled_bytes,
            source_offset,
            applied_offset,
            acked_offset,
            acks_sent,
            lag_bytes,
            errors,
            reconnects,
            full_syncs,
            keys_swept,
            redo_unswept,
            policy_keys_skipped,
            policy_keys_converted,
            policy_commands_skipped,
            policy_commands_converted
        );
        s.ops_per_sec = shards.iter().map(|x| x.ops_per_sec).sum();
        s.lag_seconds = shards.iter().map(|x| x.lag_seconds).fold(0.0, f64::max);
        s.keys_expected = shards.iter().map(|x| x.keys_expected).sum();
        s.replid = String::new();
        if let Some(e) = shards.iter().rev().find_map(|x| x.last_error.clone()) {
            s.last_error = Some(e);
        }
    });
}

impl crate::Replicator {
    /// Runs a cluster-source job: discovery, one session loop per shard, until stopped or no shard runs.
    pub(crate) async fn run_cluster(
        &self,
        cluster: &ClusterSource,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        self.status.set_phase(Phase::Handshake, |_| {});
        let tag = self.config.sink.checkpoint_tag.clone();
        let template = cluster
            .seeds
            .first()
            .cloned()
            .ok_or_else(|| Error::Config("a cluster source needs at least one seed".into()))?;
        let mut nodes = cluster.seeds.clone();
        let mut backoff = crate::backoff::Backoff::new(
            self.config.reconnect_backoff,
            self.config.reconnect_backoff_max,
        );
        // The first discovery, retried while the source is unreachable.
        let mut views = loop {
            match discover(&nodes).await {
                Ok(v) => break v,
                Err(e) if e.is_auth() || matches!(e, Error::Config(_)) => return Err(e),
                Err(e) => {
                    warn!(error = %e, "cannot read the source cluster's shards, trying again");
                    self.status.error(e);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        };
        let known = loop {
            match self.known_shard_names(&tag).await {
                Ok(k) => break k,
                Err(e) if e.is_auth() || matches!(e, Error::Config(_)) => return Err(e),
                Err(e) => {
                    warn!(error = %e, "cannot read the shard checkpoints in the target, trying again");
                    self.status.error(e);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        };
        let mut known: HashMap<String, Option<String>> = known;
        let shared = Arc::new(Shared::new(template.clone(), tag.clone(), known.is_empty()));
        let children = shutdown.child_token();
        let mut first_error: Option<(String, Arc<Error>)> = None;
        let mut running: Vec<Running> = Vec::new();
        let mut tick = tokio::time::interval(cluster.discover_interval);
        loop {
            self.place_views(
                cluster,
                &shared,
                &children,
                &mut running,
                &mut known,
                &views,
            )
            .await;
            self.shards.set(&running);
            // Collect ended shards.
            for r in &mut running {
                if r.task.as_ref().is_some_and(|t| t.is_finished()) {
                    let t = r.task.take().expect("checked");
                    let res = ended(t).await;
                    r.result = Some(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    if let Err(e) = res {
                        if !r.retired {
                            warn!(shard = %r.name, error = %e, "a source shard's stream stopped; the others go on");
                            let e = Arc::new(e);
                            r.status.emit(JobEventKind::Error(e.clone()));
                            if first_error.is_none() {
                                first_error = Some((r.name.clone(), e));
                            }
                        }
                    }
                }
            }
            aggregate(&self.status, &running);
            if !running.is_empty() && running.iter().all(|r| r.task.is_none()) {
                break;
            }
            // Until the next discovery, the job's figures follow its shards' every [`AGGREGATE_EVERY`].
            let next_discovery = tick.tick();
            tokio::pin!(next_discovery);
            let stopped = loop {
                tokio::select! {
                    _ = &mut next_discovery => break false,
                    () = shutdown.cancelled() => break true,
                    () = tokio::time::sleep(AGGREGATE_EVERY) => aggregate(&self.status, &running),
                }
            };
            if stopped {
                break;
            }
            match discover(&nodes).await {
                Ok(v) => {
                    for view in &v {
                        for m in &view.members {
                            if !nodes.iter().any(|n| n.host == m.host && n.port == m.port) {
                                let mut c = template.clone();
                                c.host = m.host.clone();
                                c.port = m.port;
                                nodes.push(c);
                            }
                        }
                    }
                    views = v;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the source cluster's shards now");
                }
            }
        }
        children.cancel();
        for r in &mut running {
            if let Some(t) = r.task.take() {
                let res = ended(t).await;
                r.result = Some(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                if let Err(e) = res {
                    if !r.retired && first_error.is_none() && !matches!(e, Error::Stopped) {
                        first_error = Some((r.name.clone(), Arc::new(e)));
                    }
                }
            }
        }
        self.shards.set(&running);
        aggregate(&self.status, &running);
        match first_error {
            Some((shard, error)) if !shutdown.is_cancelled() => Err(Error::Shard { shard, error }),
            _ => Ok(()),
        }
    }

    /// Matches the discovered views to the running shards, starts the new ones, retires the vanished.
    async fn place_views(
        &self,
        cluster: &ClusterSource,
        shared: &Arc<Shared>,
        children: &CancellationToken,
        running: &mut Vec<Running>,
        known: &mut HashMap<String, Option<String>>,
        views: &[ShardView],
    ) {
        // Shards found after the first discovery, or new to a job that ran before, may hold keys migrated from
        // others (already on the target).
        let late = !running.is_empty() || !shared.first_run;
        // Healthy masters with slots first, so a failed old master listed on its own does not take the name.
        let mut order: Vec<&ShardView> = views.iter().collect();
        order.sort_by_key(|v| {
            let online = v.master().is_some_and(|m| m.online);
            (!online, std::cmp::Reverse(v.slots))
        });
        let mut seen = vec![false; running.len()];
        for view in order {
            let ids: BTreeSet<String> = view.members.iter().map(|m| m.id.clone()).collect();
            // The running shard its master belongs to; else any that shares a node. A master that gave up its
            // last slots joins another shard as a replica: that shard stays the one of its own master.
            let by_master = view
                .master()
                .and_then(|m| running.iter().position(|r| r.ids.contains(&m.id)));
            if let Some(i) =
                by_master.or_else(|| running.iter().position(|r| !r.ids.is_disjoint(&ids)))
            {
                if i < seen.len() && seen[i] {
                    continue; // a stale entry of a node already placed
                }
                if i < seen.len() {
                    seen[i] = true;
                }
                let r = &mut running[i];
                shared.record(&r.name, view, &r.status);
                r.ids.extend(ids);
                r.absent = 0;
                r.view.send_if_modified(|v| {
                    if v.as_ref() == Some(view) {
                        false
                    } else {
                        *v = Some(view.clone());
                        true
                    }
                });
                continue;
            }
            // Not running: a shard of its own only with a master that serves (a failed node alone is not one).
            if !view.master().is_some_and(|m| m.online) {
                continue;
            }
            let name = self.name_for(view, known).await;
            if !selected(cluster.shards.as_deref(), &name, view) {
                continue;
            }
            known.insert(name.clone(), None);
            let r = self.spawn_shard(shared, children, name, ids, view.clone(), late);
            shared.record(&r.name, view, &r.status);
            running.push(r);
            seen.push(true);
        }
        for (i, r) in running.iter_mut().enumerate() {
            if seen.get(i).copied().unwrap_or(true) || r.retired {
                continue;
            }
            r.absent += 1;
            // Gone from several discoveries in a row: no node of it is in the cluster any more.
            if r.absent >= 5 {
                info!(shard = %r.name, "the source shard is gone from the cluster: its stream is retired");
                r.retired = true;
                r.view.send_replace(None);
            }
        }
    }

    /// The name of a shard seen for the first time in this process (see the module documentation).
    async fn name_for(&self, view: &ShardView, known: &HashMap<String, Option<String>>) -> String {
        if let Some(m) = view.members.iter().find(|m| known.contains_key(&m.id)) {
            return m.id.clone();
        }
        let master = view.master().expect("placed views have a master");
        if known.values().any(Option::is_some) {
            let mut c = self
                .config
                .source_cluster
                .as_ref()
                .and_then(|c| c.seeds.first().cloned())
                .unwrap_or_else(|| self.config.source.connect.clone());
            c.host = master.host.clone();
            c.port = master.port;
            c.db = 0;
            if let Ok(mut conn) = Connection::connect(&c).await {
                if let Ok(info) = info_text(&mut conn, "replication").await {
                    let field = |k: &str| {
                        info.lines()
                            .find_map(|l| l.strip_prefix(k))
                            .map(|v| v.trim().to_string())
                    };
                    let lineage = [field("master_replid:"), field("master_replid2:")];
                    if let Some((name, _)) = known.iter().find(|(_, replid)| {
                        replid
                            .as_ref()
                            .is_some_and(|r| lineage.iter().flatten().any(|l| l == r))
                    }) {
                        info!(shard = %name, master = %master.addr(),
                              "a source shard continues a known one by its replication history");
                        return name.clone();
                    }
                }
            }
        }
        master.id.clone()
    }

    fn spawn_shard(
        &self,
        shared: &Arc<Shared>,
        children: &CancellationToken,
        name: String,
        ids: BTreeSet<String>,
        view: ShardView,
        late: bool,
    ) -> Running {
        let (prefer_replica, replica_gate) = self
            .config
            .source_cluster
            .as_ref()
            .map_or((false, true), |c| (c.prefer_replica, c.replica_gate));
        let (tx, rx) = watch::channel(Some(view));
        let current = Arc::new(Mutex::new(String::new()));
        let mut config = self.config.clone();
        config.source_cluster = None;
        config.flush_target_on_resync = false;
        config.flush_target_before_copy = false;
        if late {
            // A shard added to the source while the job runs: its keys came from other shards by migration, and
            // may be on the target already.
            config.conflict = crate::ConflictPolicy::Rewrite;
        }
        config.sink.checkpoint_tag = format!("{}:{name}", self.config.sink.checkpoint_tag);
        let follower = ShardFollower {
            name: name.clone(),
            view: rx,
            template: shared.template.clone(),
            prefer_replica,
            replica_gate: replica_gate && !prefer_replica,
            current: current.clone(),
            shared: shared.clone(),
            lease_owner: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            dropped_imports: Mutex::new(Vec::new()),
            snapshot: Mutex::new(None),
        };
        info!(shard = %name, "source shard: starting its stream");
        let (status, task) = match crate::Replicator::new(config) {
            Ok(mut rep) => {
                rep.source_shard = Some(follower);
                rep.status = self.status.for_shard(&name);
                let status = rep.status();
                let cancel = children.child_token();
                let task = tokio::spawn(async move { rep.run(cancel).await });
                (status, task)
            }
            Err(e) => (
                self.status.for_shard(&name),
                tokio::spawn(async move { Err::<(), Error>(e) }),
            ),
        };
        // Announced now, with the others the same discovery starts: the job's phase counts this shard from here.
        status.set_phase(Phase::Handshake, |_| {});
        Running {
            name,
            ids,
            view: tx,
            status,
            current,
            task: Some(task),
            result: None,
            retired: false,
            absent: 0,
        }
    }

    /// The shard names in the target's checkpoint keys of this job, with their replication ids.
    async fn known_shard_names(&self, tag: &str) -> Result<HashMap<String, Option<String>>, Error> {
        let pattern = format!(
            "{}{{{}:*",
            crate::checkpoint::KEY_PREFIX,
            crate::sink::cluster::glob_escape(tag)
        );
        let mut target = self.config.target.clone();
        if let Some(f) = &self.target_sentinel {
            target = f.master().await?.connect;
        }
        let mut conn = Connection::connect(&target).await?;
        let mut found = Vec::new();
        if self.config.target_cluster {
            let reply = conn.call(&["CLUSTER", "SLOTS"]).await?;
            let mut map = SlotMap::from_cluster_slots(&reply)
                .map_err(|e| Error::Config(format!("the target's CLUSTER SLOTS: {e}")))?;
            map.fill_unknown_hosts(&target.host);
            for shard in map.shards() {
                let mut o = target.clone();
                o.host = shard.master.addr.host.clone();
                o.port = shard.master.addr.port;
                o.db = 0;
                let mut c = Connection::connect(&o).await?;
                found.extend(scan_values(&mut c, &pattern).await?);
            }
        } else {
            if self.config.sink.checkpoint_db != target.db {
                let db = self.config.sink.checkpoint_db.to_string();
                conn.call(&["SELECT", db.as_str()]).await?;
            }
            found = scan_values(&mut conn, &pattern).await?;
        }
        let names = names_from_keys(tag, &found);
        if !names.is_empty() {
            info!(
                shards = names.len(),
                "source shards known from the target's checkpoints"
            );
        }
        Ok(names)
    }
}

/// A shard's lease in the target (see the module documentation).
pub(crate) struct Lease {
    key: String,
    owner: String,
    conn: Connection,
}

/// A [`Lease`] renewed by its own task.
pub(crate) struct KeptLease {
    lost: tokio::sync::oneshot::Receiver<Error>,
    finish: Option<tokio::sync::oneshot::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeptLease {
    /// Resolves with the error that ends the session once the lease is lost; pending while it is kept.
    pub(crate) async fn lost(&mut self) -> Error {
        match (&mut self.lost).await {
            Ok(e) => e,
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops renewing; `release`: gives the lease up (a stopped job lets another take the shard at once),
    /// else it expires by itself.
    pub(crate) async fn finish(mut self, release: bool) {
        if let Some(f) = self.finish.take() {
            let _ = f.send(release);
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        // A session dropped without `finish` (its job cancelled): stop renewing.
        if self.finish.is_some() {
            self.task.abort();
        }
    }
}

/// Renews a lease if its value is still ours; 0 when it is not.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lease if its value is still ours.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// `SET key owner NX PX <LEASE_TTL>`: true when it set the key (it answers a null, RESP2 `$-1` or RESP3 `_`,
/// when another holds it).
async fn take_free(conn: &mut Connection, key: &str, owner: &str) -> Result<bool, Error> {
    let ttl = LEASE_TTL.as_millis().to_string();
    let got = conn
        .call(&["SET", key, owner, "NX", "PX", ttl.as_str()])
        .await?;
    Ok(!got.is_null())
}

/// Extends the lease by [`LEASE_TTL`] if `owner` holds it; false when it does not.
async fn renew_own(conn: &mut Connection, key: &str, owner: &str) -> Result<bool, Error> {
    let ttl = LEASE_TTL.as_millis().to_string();
    let renewed = conn
        .call(&["EVAL", RENEW, "1", key, owner, ttl.as_str()])
        .await?;
    Ok(matches!(renewed, Frame::Integer(1)))
}

impl Lease {
    /// The lease key of the shard whose checkpoints carry `tag`.
    pub(crate) fn key(tag: &str) -> String {
        format!("ferry:lease:{{{tag}}}")
    }

    /// Connects to the target node that holds the lease key (`cluster`: the master of its slot).
    async fn connect(
        target: &ConnectOptions,
        cluster: bool,
        key: &str,
    ) -> Result<Connection, Error> {
        let mut conn = Connection::connect(target).await?;
        if !cluster {
            return Ok(conn);
        }
        let reply = conn.call(&["CLUSTER", "SLOTS"]).await?;
        let mut map = SlotMap::from_cluster_slots(&reply)
            .map_err(|e| Error::Config(format!("the target's CLUSTER SLOTS: {e}")))?;
        map.fill_unknown_hosts(&target.host);
        let master = map
            .master_for_slot(ferry_topology::key_slot(key.as_bytes()))
            .ok_or_else(|| Error::Failover("no target master serves the lease's slot".into()))?;
        let mut o = target.clone();
        o.host = master.addr.host.clone();
        o.port = master.addr.port;
        o.db = 0;
        Ok(Connection::connect(&o).await?)
    }

    /// Takes the lease of the shard whose checkpoints carry `tag` for `owner` (or takes it back when it is
    /// still `owner`'s), waiting while another job holds it (calls `waiting` once when it starts to wait).
    pub(crate) async fn acquire(
        target: &ConnectOptions,
        cluster: bool,
        tag: &str,
        owner: &str,
        mut waiting: impl FnMut(&str),
    ) -> Result<Lease, Error> {
        let key = Lease::key(tag);
        let owner = owner.to_string();
        let mut told = false;
        loop {
            let mut conn = Lease::connect(target, cluster, &key).await?;
            if take_free(&mut conn, &key, &owner).await? {
                info!(lease = %key, "shard lease taken");
                return Ok(Lease { key, owner, conn });
            }
            if renew_own(&mut conn, &key, &owner).await? {
                return Ok(Lease { key, owner, conn });
            }
            if !told {
                told = true;
                let holder = conn
                    .call(&["GET", key.as_str()])
                    .await
                    .ok()
                    .and_then(|f| {
                        f.as_bytes()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                    })
                    .unwrap_or_default();
                warn!(lease = %key, holder = %holder, "another job runs this shard: waiting for its lease");
                waiting(&holder);
            }
            tokio::time::sleep(LEASE_TTL / 10).await;
        }
    }

    /// Renews the lease every [`LEASE_TTL`] / 3; returns the error that ends the session when it is lost.
    async fn keep(&mut self) -> Error {
        loop {
            tokio::time::sleep(LEASE_TTL / 3).await;
            if let Err(e) = self.renew().await {
                return e;
            }
        }
    }

    /// Renews the lease. A lease that expired (renewed too late: this process was starved of CPU for a
    /// [`LEASE_TTL`]) and that no other job took since is taken again; one another job holds is lost. Taking an
    /// expired lease again is safe: had another job run the shard meanwhile, its checkpoint would have moved,
    /// and this job's next batch, chained to the checkpoint it last wrote, would be refused.
    async fn renew(&mut self) -> Result<(), Error> {
        if renew_own(&mut self.conn, &self.key, &self.owner).await? {
            return Ok(());
        }
        if !take_free(&mut self.conn, &self.key, &self.owner).await? {
            return Err(Error::Failover(format!(
                "the shard lease {} was taken by another job",
                self.key
            )));
        }
        warn!(lease = %self.key, "the shard lease had expired before it was renewed (this process was slow): taken again");
        Ok(())
    }

    /// Keeps the lease alive from a task of its own, so a session busy decoding and writing never delays a
    /// renewal past the lease's expiry. See [`KeptLease`].
    pub(crate) fn keep_in_task(mut self) -> KeptLease {
        let (lost_tx, lost) = tokio::sync::oneshot::channel();
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<bool>();
        let task = tokio::spawn(async move {
            tokio::select! {
                e = self.keep() => {
                    let _ = lost_tx.send(e);
                }
                release = finish_rx => {
                    if release == Ok(true) {
                        self.release().await;
                    }
                }
            }
        });
        KeptLease {
            lost,
            finish: Some(finish),
            task,
        }
    }

    /// Gives the lease up (a stopped job lets another take the shard at once).
    pub(crate) async fn release(mut self) {
        let _ = self
            .conn
            .call(&["EVAL", RELEASE, "1", self.key.as_str(), self.owner.as_str()])
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn an_atomic_slot_migration_is_read_from_its_establish_command() {
        let cmd = words(&[
            "CLUSTER",
            "SYNCSLOTS",
            "ESTABLISH",
            "SOURCE",
            "f58e",
            "NAME",
            "089a",
            "SLOTSRANGE",
            "10922",
            "16383",
            "0",
            "5",
        ]);
        assert_eq!(
            slot_import(&cmd),
            Some(SlotImport {
                source: "f58e".into(),
                name: "089a".into(),
                ranges: vec![(10922, 16383), (0, 5)],
            })
        );
        assert!(is_slot_sync(&words(&["cluster", "syncslots", "ACK"])));
        assert_eq!(slot_import(&words(&["CLUSTER", "SYNCSLOTS", "ACK"])), None);
        assert_eq!(
            slot_import(&words(&["CLUSTER", "SYNCSLOTS", "ESTABLISH", "NAME", "x"])),
            None
        );
        assert!(!is_slot_sync(&words(&[
            "CLUSTER", "SETSLOT", "1", "NODE", "x"
        ])));
    }

    #[test]
    fn slot_migrations_are_read_from_resp2_and_resp3_replies() {
        let bulk = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        let resp2 = Frame::Array(vec![Frame::Array(vec![
            bulk("name"),
            bulk("a1"),
            bulk("state"),
            bulk("success"),
            bulk("create_time"),
            Frame::Integer(7),
        ])]);
        let resp3 = Frame::Array(vec![Frame::Map(vec![
            (bulk("name"), bulk("a1")),
            (bulk("state"), bulk("success")),
            (bulk("create_time"), Frame::Integer(7)),
        ])]);
        for reply in [resp2, resp3] {
            let entries = slot_migrations(&reply);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0]["name"], "a1");
            assert_eq!(entries[0]["state"], "success");
            assert_eq!(entries[0]["create_time"], "7");
        }
        assert!(slot_migrations(&Frame::Null).is_empty());
    }

    #[test]
    fn a_lease_held_by_another_job_is_waited_for_over_resp2_and_resp3() {
        use ferry_testkit::{Server, ServerOptions, Version};
        let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for (i, protocol) in ["2", "3"].into_iter().enumerate() {
                let url = format!("{}?protocol={protocol}", server.url());
                let opts = ConnectOptions::from_url(&url).unwrap();
                let tag = format!("job:shard{i}");
                let first = Lease::acquire(&opts, false, &tag, "first", |_| {})
                    .await
                    .unwrap();
                let (tx, rx) = tokio::sync::oneshot::channel();
                let mut tx = Some(tx);
                let o = opts.clone();
                let t = tag.clone();
                let second = tokio::spawn(async move {
                    Lease::acquire(&o, false, &t, "second", |holder| {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(holder.to_string());
                        }
                    })
                    .await
                    .map(|_| ())
                });
                // The second job waits (and says for whom) instead of taking the held lease.
                let holder = tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .expect("the second job to wait for the lease")
                    .unwrap();
                assert_eq!(holder, "first", "RESP{protocol}");
                second.abort();
                let mut c = Connection::connect(&opts).await.unwrap();
                let v = c.call(&["GET", Lease::key(&tag).as_str()]).await.unwrap();
                assert_eq!(v.as_bytes(), Some(&b"first"[..]), "RESP{protocol}");
                first.release().await;
            }
        });
    }

    #[test]
    fn a_lease_that_expired_unrenewed_is_taken_again_unless_another_job_took_it() {
        use ferry_testkit::{Server, ServerOptions, Version};
        let server = Server::start(ServerOptions::new(Version::V7_0)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let opts = ConnectOptions::from_url(&server.url()).unwrap();
            let key = Lease::key("job:late");
            let mut c = Connection::connect(&opts).await.unwrap();
            let mut lease = Lease::acquire(&opts, false, "job:late", "me", |_| {})
                .await
                .unwrap();
            // Expired (a process starved of CPU renews too late): nobody took it, so it is ours again.
            c.call(&["DEL", key.as_str()]).await.unwrap();
            lease.renew().await.unwrap();
            let v = c.call(&["GET", key.as_str()]).await.unwrap();
            assert_eq!(v.as_bytes(), Some(&b"me"[..]));
            let ttl = c.call(&["PTTL", key.as_str()]).await.unwrap();
            assert!(matches!(ttl, Frame::Integer(t) if t > 0), "{ttl:?}");
            // Taken by another job meanwhile: lost, and the other job keeps it.
            c.call(&["SET", key.as_str(), "other"]).await.unwrap();
            let e = lease.renew().await.unwrap_err();
            assert!(
                matches!(e, Error::Failover(ref m) if m.contains("taken by another job")),
                "{e}"
            );
            let v = c.call(&["GET", key.as_str()]).await.unwrap();
            assert_eq!(v.as_bytes(), Some(&b"other"[..]));
            // Kept by its own task: a loss reaches the session at the next renewal, and a finished lease
            // stops renewing (released: gone at once).
            c.call(&["DEL", key.as_str()]).await.unwrap();
            let lease = Lease::acquire(&opts, false, "job:late", "me", |_| {})
                .await
                .unwrap();
            let mut kept = lease.keep_in_task();
            c.call(&["SET", key.as_str(), "other"]).await.unwrap();
            let e = tokio::time::timeout(LEASE_TTL, kept.lost())
                .await
                .expect("the renewal task to report the loss");
            assert!(matches!(e, Error::Failover(_)), "{e}");
            kept.finish(false).await;
            c.call(&["DEL", key.as_str()]).await.unwrap();
            let lease = Lease::acquire(&opts, false, "job:late", "me", |_| {})
                .await
                .unwrap();
            let kept = lease.keep_in_task();
            kept.finish(true).await;
            let v = c.call(&["EXISTS", key.as_str()]).await.unwrap();
            assert!(
                matches!(v, Frame::Integer(0)),
                "a released lease is gone: {v:?}"
            );
        });
    }

    fn member(id: &str, master: bool, online: bool) -> Member {
        Member {
            id: id.into(),
            host: "127.0.0.1".into(),
            port: 1,
            master,
            online,
        }
    }

    #[test]
    fn a_shard_streams_from_its_online_master_or_a_replica_when_preferred() {
        let view = ShardView {
            members: vec![member("m", true, true), member("r", false, true)],
            slots: 10,
            ..Default::default()
        };
        assert_eq!(view.serving(false).unwrap().id, "m");
        assert_eq!(view.serving(true).unwrap().id, "r");
        let failed = ShardView {
            members: vec![member("m", true, false), member("r", false, true)],
            slots: 10,
            ..Default::default()
        };
        assert!(
            failed.serving(false).is_none(),
            "no master while a failover is in progress"
        );
    }

    #[test]
    fn shard_names_come_from_the_checkpoint_keys_of_the_tag() {
        let id = "a".repeat(40);
        let other = "b".repeat(40);
        let replid = "c".repeat(40);
        let keys = vec![
            (
                format!("ferry:checkpoint:{{job:{id}-3}}"),
                Bytes::from(format!("v2 {replid} 100 db=0 part=0 epoch=0")),
            ),
            (
                format!("ferry:checkpoint:{{job:{other}}}"),
                Bytes::from("fullsync"),
            ),
            (
                format!("ferry:checkpoint:{{jobx:{id}}}"),
                Bytes::from("fullsync"),
            ),
            (
                "ferry:checkpoint:{job:short}".to_string(),
                Bytes::from("fullsync"),
            ),
        ];
        let names = names_from_keys("job", &keys);
        assert_eq!(names.len(), 2);
        assert_eq!(names[&id], Some(replid));
        assert_eq!(names[&other], None);
    }

    #[test]
    fn an_import_becomes_a_restore_that_replaces() {
        let mut argv: Vec<Bytes> = ["RESTORE-ASKING", "k", "0", "payload"]
            .into_iter()
            .map(|a| Bytes::from_static(a.as_bytes()))
            .collect();
        import_as_restore(&mut argv);
        assert_eq!(argv, ["RESTORE", "k", "0", "payload", "REPLACE"]);
        let mut again = argv.clone();
        import_as_restore(&mut again);
        assert_eq!(again, argv, "REPLACE once");
    }

    #[test]
    fn the_exporter_of_a_slot_is_its_owner_or_previous_owner() {
        let shared = Shared::new(ConnectOptions::new("127.0.0.1", 1), "job".into(), true);
        let view = |a, b| ShardView {
            ranges: vec![(a, b)],
            ..Default::default()
        };
        let st = StatusHandle::default();
        shared.record("e", &view(0, 100), &st);
        shared.record("i", &view(101, 200), &st);
        // Migrating: the exporter still owns the slot.
        assert_eq!(shared.exporter("i", 50).as_deref(), Some("e"));
        // Done: the importer owns it, the exporter owned it before.
        shared.record("i", &view(50, 50), &st);
        assert_eq!(shared.exporter("i", 50).as_deref(), Some("e"));
        assert_eq!(shared.exporter("i", 150), None);
    }

    #[test]
    fn a_subset_selects_by_name_node_id_or_address() {
        let view = ShardView {
            members: vec![member("m1", true, true), member("r1", false, true)],
            slots: 1,
            ..Default::default()
        };
        assert!(selected(None, "n", &view));
        assert!(selected(Some(&["n".into()]), "n", &view));
        assert!(selected(Some(&["r1".into()]), "n", &view));
        assert!(selected(Some(&["127.0.0.1:1".into()]), "n", &view));
        assert!(!selected(Some(&["zz".into()]), "n", &view));
    }
}
