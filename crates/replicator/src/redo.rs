//! A full copy redone over this job's own earlier writes: which target keys are this job's, and the sweep that
//! deletes the ones the source no longer has.
//!
//! A copy is redone when the job restarts during an RDB copy (the checkpoint key holds the `fullsync` marker),
//! when the source cannot continue from the checkpoint (`+FULLRESYNC` after a live phase, in a new process or
//! after a dropped link), and when a source without a stream (a scan, an RDB file) starts its copy again in the
//! same process. The RDB rewrites every key the source has, but a key the source deleted meanwhile would stay
//! on the target.
//!
//! The target does not say who wrote a key, so ownership is decided once, before the first key of a job's
//! first copy: the job's **domain** is every key it could ever write (a key passing the key filters, in a
//! target database that a source database passing the database filters maps to; never one of ferry's own
//! keys). When the domain is empty on the target at that moment, the target is **owned** by the job: every
//! domain key found there later was written by it. A job with checkpoints stores the decision in the target,
//! next to its checkpoint, in `ferry:checkpoint:{<tag>}:owner` (`owned` or `shared`), so it survives restarts;
//! a job without (a scan, an RDB file) cannot resume after a restart and keeps it in memory: its copy done
//! again in the same process sweeps, a restarted one is a first copy again.
//!
//! On a redo over an owned target, the copy records a 128-bit hash of each source key it reads (per target
//! database: about 16 to 32 bytes per key while the copy runs) and, once the whole RDB is applied and before
//! the copy's checkpoint commits, `SCAN`s the domain on the target (every master of a cluster) and deletes each
//! key the copy did not read. A crash during the sweep leaves the `fullsync` marker: the next session copies
//! and sweeps again, so the result stays exact. Over a shared target nothing is deleted (a key someone else
//! wrote is never deleted) and one warning says so.
//!
//! A cluster source's shards share one record, under the job's tag: the first shard to copy in the job's first
//! run decides it for the whole domain before any shard writes (the others wait for it). A shard's redone copy
//! sweeps only the slots its master serves when the copy is applied, leaving out those being migrated: every
//! later write of such a slot is in that shard's stream (applied after the sweep), and no other shard writes
//! them. A slot it gave up meanwhile is not swept (a warning counts it in `status.redo_unswept` when none is
//! left). A job whose checkpoints predate the record has none and never sweeps.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use tracing::{info, warn};

use crate::cluster_source::FlushScope;
use crate::error::Error;
use crate::job::Replicator;
use crate::pipeline::convert::ConflictPolicy;
use crate::pipeline::dbmap::DbMap;
use crate::pipeline::filter::Filter;
use crate::sink::standalone::StandaloneSink;
use crate::sink::Sink;

/// Whether the job's domain on the target held keys of others before the job's first copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// The domain was empty: every domain key is this job's.
    Owned,
    /// The domain held keys: a redo deletes nothing.
    Shared,
}

impl Ownership {
    fn encode(self) -> &'static str {
        match self {
            Ownership::Owned => "owned",
            Ownership::Shared => "shared",
        }
    }

    fn decode(value: &[u8]) -> Result<Ownership, Error> {
        match value {
            b"owned" => Ok(Ownership::Owned),
            b"shared" => Ok(Ownership::Shared),
            other => Err(Error::Checkpoint(format!(
                "the ownership record holds {:?}, not owned or shared",
                String::from_utf8_lossy(other)
            ))),
        }
    }
}

/// The key recording the ownership of the job tagged `tag`: `ferry:checkpoint:{<tag>}:owner` (one of ferry's
/// own keys, never copied; on a cluster it lives with the tag's slot).
pub(crate) fn owner_key(tag: &str) -> String {
    format!("{}:owner", crate::checkpoint::key_name(tag))
}

/// The ownership record stored in the target under `key`, if any.
async fn stored_ownership(sink: &mut Sink, key: &str) -> Result<Option<Ownership>, Error> {
    sink.state_get(key)
        .await?
        .map(|v| Ownership::decode(&v))
        .transpose()
}

/// The source keys a copy read, as 128-bit hashes per target database.
#[derive(Debug, Default)]
pub(crate) struct CopiedKeys {
    by_db: HashMap<i64, HashSet<u128>>,
}

impl CopiedKeys {
    /// Records `key` of target database `db`.
    pub(crate) fn insert(&mut self, db: i64, key: &[u8]) {
        self.by_db.entry(db).or_default().insert(hash128(key));
    }

    /// Whether the copy read `key` for target database `db`.
    pub(crate) fn contains(&self, db: i64, key: &[u8]) -> bool {
        self.by_db
            .get(&db)
            .is_some_and(|keys| keys.contains(&hash128(key)))
    }

    /// Keys recorded.
    pub(crate) fn len(&self) -> usize {
        self.by_db.values().map(HashSet::len).sum()
    }
}

/// Two SipHash runs with different prefixes: 128 bits, so a collision (a stale key kept) is out of reach for
/// any dataset size.
fn hash128(key: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// The keys a job may write on the target (see the module documentation).
pub(crate) struct Domain<'a> {
    filter: &'a Filter,
    dbmap: &'a DbMap,
    /// Only keys of these slots (indexed by slot): a shard of a cluster source sweeps its own slots.
    slots: Option<&'a [bool]>,
    /// Only these target databases (a `FLUSHDB`).
    dbs: Option<&'a [i64]>,
}

impl<'a> Domain<'a> {
    /// The domain of a job with these filters and database map.
    pub(crate) fn new(filter: &'a Filter, dbmap: &'a DbMap) -> Domain<'a> {
        Domain {
            filter,
            dbmap,
            slots: None,
            dbs: None,
        }
    }

    /// The part of the domain in `slots` (indexed by slot).
    pub(crate) fn in_slots(self, slots: &'a [bool]) -> Domain<'a> {
        Domain {
            slots: Some(slots),
            ..self
        }
    }

    /// The part of the domain in target databases `dbs`.
    pub(crate) fn in_dbs(self, dbs: &'a [i64]) -> Domain<'a> {
        Domain {
            dbs: Some(dbs),
            ..self
        }
    }

    /// Whether the job writes target database `db`.
    fn db(&self, db: i64) -> bool {
        self.dbs.is_none_or(|d| d.contains(&db)) && self.source_db(db).is_some()
    }

    /// A source database whose keys the job writes into target database `db`.
    fn source_db(&self, db: i64) -> Option<i64> {
        self.dbmap
            .sources_of(db)
            .into_iter()
            .find(|&s| self.filter.db_passes(s))
    }

    /// Whether the job may write `key` (ferry's own keys never pass).
    fn key(&self, key: &[u8]) -> bool {
        self.filter.key_passes(key)
            && self.slots.is_none_or(|s| {
                s.get(usize::from(ferry_topology::key_slot(key)))
                    .copied()
                    .unwrap_or(false)
            })
    }
}

/// What a copy does about the keys of its earlier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyPlan {
    /// The copy is redone over earlier writes of this job.
    pub redo: bool,
    /// Keys that exist on the target: a redo rewrites what the earlier copy wrote, a first copy follows the
    /// job's policy.
    pub conflict: ConflictPolicy,
    /// The copy records its keys and sweeps the domain before its checkpoint commits.
    pub sweep: bool,
}

/// What the domain scan does with each domain key it finds.
pub(crate) enum Visit<'a> {
    /// Stop at the first one.
    FindAny,
    /// Delete it unless the copy read it.
    Sweep(&'a CopiedKeys),
    /// Delete it if a source shard's flush emptied it (`crate::shard_flush`).
    Flush(&'a FlushScope),
}

/// Scans the domain on every server of the target; returns 1 when `FindAny` found a key, or the keys deleted.
pub(crate) async fn scan_domain(
    sink: &mut Sink,
    domain: &Domain<'_>,
    visit: Visit<'_>,
) -> Result<u64, Error> {
    let mut count = 0u64;
    for server in sink.servers() {
        for db in server.keyspace_dbs().await? {
            if !domain.db(db) {
                continue;
            }
            count += scan_db(server, db, domain, &visit).await?;
            if matches!(visit, Visit::FindAny) && count > 0 {
                return Ok(count);
            }
        }
        server.drain().await?;
    }
    Ok(count)
}

/// The tag of a checkpoint in database `db` of the target that is not `own`'s, if there is one: another job
/// writes (or wrote) into this target. `own` covers the tags of `own`'s checkpoints on the masters of a cluster
/// target (`<own>-<n>`, see `sink::cluster::tag_for_node`).
async fn other_job_checkpoint(
    sink: &mut Sink,
    own: &str,
    db: i64,
) -> Result<Option<String>, Error> {
    let is_own = |tag: &str| {
        tag == own
            || tag
                .strip_prefix(own)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let prefix = format!("{}{{", crate::checkpoint::KEY_PREFIX);
    for server in sink.servers() {
        server.select_now(db).await?;
        for key in server.scan_keys(&format!("{prefix}*}}")).await? {
            let tag = &key[prefix.len()..key.len() - 1];
            if !is_own(tag) {
                return Ok(Some(tag.to_string()));
            }
        }
    }
    Ok(None)
}

async fn scan_db(
    server: &mut StandaloneSink,
    db: i64,
    domain: &Domain<'_>,
    visit: &Visit<'_>,
) -> Result<u64, Error> {
    let mut count = 0u64;
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let (next, keys) = server.scan_page(db, &cursor).await?;
        let mut stale = Vec::new();
        for key in keys.into_iter().filter(|k| domain.key(k)) {
            match visit {
                Visit::FindAny => return Ok(1),
                Visit::Sweep(copied) if !copied.contains(db, &key) => stale.push(key),
                Visit::Sweep(_) => {}
                Visit::Flush(_) => stale.push(key),
            }
        }
        if let Visit::Flush(scope) = visit {
            // The other node of a migrating slot is asked in the source database whose keys land here.
            let source_db = domain.source_db(db).unwrap_or(db);
            stale = scope.flushed(source_db, stale).await?;
        }
        count += stale.len() as u64;
        delete_keys(server, db, stale).await?;
        if &next[..] == b"0" {
            return Ok(count);
        }
        cursor = next;
    }
}

/// Deletes `keys` of database `db`: one `DEL` for all of them on a standalone target, one per slot on a cluster
/// master (a `DEL` of several keys must keep to one slot there).
async fn delete_keys(server: &mut StandaloneSink, db: i64, keys: Vec<Bytes>) -> Result<(), Error> {
    // On a standalone target every key is in one group.
    let cluster = server.is_cluster_node();
    let mut keyed: Vec<(u16, Bytes)> = keys
        .into_iter()
        .map(|k| {
            (
                if cluster {
                    ferry_topology::key_slot(&k)
                } else {
                    0
                },
                k,
            )
        })
        .collect();
    keyed.sort_unstable_by_key(|(slot, _)| *slot);
    for group in keyed.chunk_by(|a, b| a.0 == b.0) {
        let mut argv = Vec::with_capacity(1 + group.len());
        argv.push(Bytes::from_static(b"DEL"));
        argv.extend(group.iter().map(|(_, k)| k.clone()));
        server.write_plain(db, &argv).await?;
    }
    Ok(())
}

impl Replicator {
    /// Starts a full copy on `sink` (its `fullsync` marker, a `FLUSHALL` when configured for a redo) and decides
    /// what it does about earlier writes. `redo_by_checkpoint`: whether the target holds a checkpoint or
    /// `fullsync` marker of this job (`None` for a job without checkpoints: then an earlier copy in this process
    /// says it is a redo).
    pub(crate) async fn start_copy(
        &self,
        sink: &mut Sink,
        redo_by_checkpoint: Option<bool>,
    ) -> Result<CopyPlan, Error> {
        let cfg = &self.config;
        let conflict_of = |redo| match redo {
            true => ConflictPolicy::Rewrite,
            false => cfg.conflict,
        };
        if let Some(shard) = &self.source_shard {
            let redo = redo_by_checkpoint.unwrap_or_else(|| self.status.snapshot().full_syncs > 0);
            let conflict = conflict_of(redo);
            // Decided (or read) before this shard writes its first key.
            let ownership = self.job_ownership(sink, shard.shared()).await?;
            // A shard never empties the target (its configuration has both flush options off).
            sink.begin_full_sync(conflict, false).await?;
            let sweep = redo && ownership == Some(Ownership::Owned);
            if redo && !sweep {
                warn!("a shard of a cluster source copies again over its earlier writes, and the target held other \
                       keys before the job's first copy (or no record of it): keys deleted on the source meanwhile \
                       may remain on the target; check with `ferry verify`");
                self.status.update(|s| s.redo_unswept += 1);
            }
            return Ok(CopyPlan {
                redo,
                conflict,
                sweep,
            });
        }
        // A job with checkpoints keeps the record in the target, next to them; one without (a scan, a file)
        // cannot resume across a restart anyway and keeps it for the life of the process.
        let persistent = redo_by_checkpoint.is_some();
        let key = owner_key(&cfg.sink.checkpoint_tag);
        let stored = match persistent {
            true => stored_ownership(sink, &key).await?,
            false => *self.ownership.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let redo = redo_by_checkpoint.unwrap_or_else(|| self.status.snapshot().full_syncs > 0);
        // Asked to flush before every copy (RedisShake's `empty_db_before_sync`), where several jobs, one per
        // source server, often share the target: never over another job's keys.
        let flush = (redo && cfg.flush_target_on_resync)
            || (cfg.flush_target_before_copy
                && !self
                    .another_job_writes(
                        sink,
                        "the full copy does not empty the target first (flush_target_before_copy)",
                        "",
                    )
                    .await?);
        let conflict = conflict_of(redo);
        if !redo {
            // The first copy of this job into this target: ownership is decided before its first key.
            let ownership = self.ownership_found(sink).await?;
            self.record_ownership(sink, persistent, ownership).await?;
        }
        sink.begin_full_sync(conflict, flush).await?;
        if flush {
            // Emptied: whatever the domain holds from now on is this job's.
            self.record_ownership(sink, persistent, Ownership::Owned)
                .await?;
            return Ok(CopyPlan {
                redo,
                conflict,
                sweep: false,
            });
        }
        let sweep = redo && stored == Some(Ownership::Owned);
        if redo && !sweep {
            warn!("the full copy is redone over this job's earlier writes, and the target held other keys before \
                   the job's first copy (or no record of it): keys deleted on the source meanwhile may remain on \
                   the target; set flush_target_on_resync for a target this job owns alone, or check with \
                   `ferry verify`");
            self.status.update(|s| s.redo_unswept += 1);
        }
        Ok(CopyPlan {
            redo,
            conflict,
            sweep,
        })
    }

    /// After every key of a redone copy is applied and before its checkpoint commits: deletes the domain keys the
    /// copy did not read (when `plan` says so).
    pub(crate) async fn sweep(
        &self,
        sink: &mut Sink,
        plan: CopyPlan,
        copied: &CopiedKeys,
    ) -> Result<(), Error> {
        if !plan.sweep {
            return Ok(());
        }
        let mut domain = Domain::new(&self.filter, &self.config.db_map);
        // A shard of a cluster source sweeps only the slots its stream covers from the copy on: the other shards
        // write theirs meanwhile.
        let slots = match &self.source_shard {
            Some(shard) => Some(shard.sweepable_slots().await?),
            None => None,
        };
        if let Some(slots) = &slots {
            let n = slots.iter().filter(|&&s| s).count();
            if n == 0 {
                warn!("the redone copy of this source shard sweeps nothing: its master serves no slot that is not \
                       migrating (keys deleted on the source meanwhile may remain; check with `ferry verify`)");
                self.status.update(|s| s.redo_unswept += 1);
                return Ok(());
            }
            info!(
                slots = n,
                "redone copy of a source shard: sweeping the slots its master serves"
            );
            domain = domain.in_slots(slots);
        }
        if self.source_shard.is_none() {
            // A job's ownership says nothing of jobs that began writing into the target after its first copy
            // (one job per source master into one target, as RedisShake deployments run). Their checkpoints
            // in the target say they are there: their keys are not this job's to delete.
            if self
                .another_job_writes(
                    sink,
                    "the redone copy deletes nothing",
                    "; keys deleted on the source meanwhile may remain on the target (check with `ferry verify`)",
                )
                .await?
            {
                self.status.update(|s| s.redo_unswept += 1);
                return Ok(());
            }
        }
        let deleted = scan_domain(sink, &domain, Visit::Sweep(copied)).await?;
        info!(
            deleted,
            kept = copied.len(),
            "redone copy: deleted the keys of earlier copies the source no longer has"
        );
        self.status.update(|s| s.keys_swept += deleted);
        Ok(())
    }

    /// Whether the target holds the checkpoint of another job (another tag); if so, warns `what` (what this
    /// job leaves undone because of it), then `then`.
    async fn another_job_writes(
        &self,
        sink: &mut Sink,
        what: &str,
        then: &str,
    ) -> Result<bool, Error> {
        let cfg = &self.config.sink;
        let other = other_job_checkpoint(sink, &cfg.checkpoint_tag, cfg.checkpoint_db).await?;
        if let Some(other) = &other {
            warn!(
                other_tag = %other,
                "{what}: another job (checkpoint tag {other:?}) writes into this target, and its keys are not \
                 this job's to delete{then}"
            );
        }
        Ok(other.is_some())
    }

    /// The ownership of a cluster-source job, which its shards share: the record in the target under the job's
    /// tag; decided by the first shard to copy when the job has no checkpoint in the target yet (its whole domain
    /// scanned before any shard writes a key: the others wait on the lock). `None`: no record in a job that ran
    /// before (its shards never sweep). Another process taking other shards of the same job may decide at the
    /// same time: the first record written stands (`SET ... NX`).
    async fn job_ownership(
        &self,
        sink: &mut Sink,
        shared: &crate::cluster_source::Shared,
    ) -> Result<Option<Ownership>, Error> {
        let mut decided = shared.ownership.lock().await;
        if let Some(o) = *decided {
            return Ok(o);
        }
        let (tag, first_run) = shared.job();
        let key = owner_key(tag);
        let stored = match stored_ownership(sink, &key).await? {
            Some(o) => Some(o),
            None if first_run => {
                let ownership = self.ownership_found(sink).await?;
                sink.state_set_nx(&key, ownership.encode()).await?;
                // Another process may have written it first.
                Some(stored_ownership(sink, &key).await?.unwrap_or(ownership))
            }
            None => None,
        };
        *decided = Some(stored);
        Ok(stored)
    }

    /// Before the job's first copy: whether the target holds any key of the job's domain (see the module
    /// documentation).
    async fn ownership_found(&self, sink: &mut Sink) -> Result<Ownership, Error> {
        let domain = Domain::new(&self.filter, &self.config.db_map);
        let ownership = match scan_domain(sink, &domain, Visit::FindAny).await? {
            0 => Ownership::Owned,
            _ => Ownership::Shared,
        };
        info!(
            ownership = ownership.encode(),
            "first copy: the target's keys of this job's databases and filters are {}",
            match ownership {
                Ownership::Owned =>
                    "none (a redone copy will delete keys the source no longer has)",
                Ownership::Shared => "not empty (a redone copy will delete nothing)",
            }
        );
        Ok(ownership)
    }

    /// Records the ownership decided for the job: in the target (`persistent`) and in this process.
    async fn record_ownership(
        &self,
        sink: &mut Sink,
        persistent: bool,
        ownership: Ownership,
    ) -> Result<(), Error> {
        if persistent {
            let key = owner_key(&self.config.sink.checkpoint_tag);
            sink.state_set(&key, ownership.encode()).await?;
        }
        *self.ownership.lock().unwrap_or_else(|e| e.into_inner()) = Some(ownership);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::filter::FilterConfig;

    #[test]
    fn copied_keys_are_told_apart_by_database_and_bytes() {
        let mut k = CopiedKeys::default();
        k.insert(0, b"a");
        k.insert(2, b"b");
        assert!(k.contains(0, b"a") && k.contains(2, b"b"));
        assert!(!k.contains(1, b"a") && !k.contains(0, b"b") && !k.contains(0, b"a\0"));
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn ownership_round_trips_and_garbage_is_an_error() {
        for o in [Ownership::Owned, Ownership::Shared] {
            assert_eq!(Ownership::decode(o.encode().as_bytes()).unwrap(), o);
        }
        assert!(Ownership::decode(b"mine").is_err());
        assert_eq!(owner_key("job"), "ferry:checkpoint:{job}:owner");
    }

    #[test]
    fn the_domain_follows_the_filters_and_the_database_map() {
        let filter = Filter::new(FilterConfig {
            allow_dbs: vec![1, 2],
            block_key_prefixes: vec![b"tmp:".to_vec()],
            ..FilterConfig::default()
        })
        .unwrap();
        let map = DbMap::new([(1, 5)]);
        let d = Domain::new(&filter, &map);
        // Source 1 writes target 5; source 2 keeps its number; target 1 gets nothing (source 1 moved away).
        assert!(d.db(5) && d.db(2));
        assert!(!d.db(1) && !d.db(0));
        assert!(d.key(b"user:1"));
        assert!(
            !d.key(b"tmp:1")
                && !d.key(b"ferry:checkpoint:{x}")
                && !d.key(b"ferry:checkpoint:{x}:owner")
        );
    }
}
