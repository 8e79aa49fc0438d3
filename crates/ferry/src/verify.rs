//! Comparing two deployments key by key: type, value, absolute expiry, per database, in bounded memory.
//!
//! Every master of each side is walked with `SCAN`; for each batch of keys both sides are asked, pipelined,
//! for `DUMP` and the absolute expiry (`PEXPIRETIME`, or `PTTL` on servers before 7.0). Values are equal when
//! the payloads are byte for byte equal, or (mode `auto`/`value`) when the values decoded by ferry-rdb's DUMP
//! decoder are equal once the order of sets and hashes is put aside, so two servers of different versions or
//! encodings compare fine. Keys of the target that the source lacks are found by walking the target the same
//! way. Differing keys can be checked again after a delay, so a run during a live sync gives no false alarm.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_resp::{ConnectOptions, Connection, Frame};
use ferry_topology::{ClusterClient, ClusterOptions};
use serde::{Deserialize, Serialize};

use crate::config::{FilterConfig, Source, SyncConfig, Target};
use crate::error::{Error, ErrorKind};

/// How values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Compare {
    /// Equal DUMP payloads, else equal decoded values (the default).
    #[default]
    Auto,
    /// Equal DUMP payloads only (strict: the same value in another encoding is a difference).
    Dump,
    /// Equal decoded values (always decodes both sides).
    Value,
    /// Equal `DEBUG DIGEST-VALUE` (the servers compute a digest; nothing but the digest crosses the network).
    /// Needs `DEBUG` on both sides (`enable-debug-command` on 7.0+); digests of one value can differ between
    /// encodings or versions, so use it between servers of one version.
    Digest,
}

/// What [`verify`] checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Only these source databases (default: every database holding keys on either side; a cluster has only 0).
    pub dbs: Option<Vec<u32>>,
    /// Check at most this many keys of each side per database (default: all).
    pub sample: Option<u64>,
    /// Largest accepted gap between the two absolute expiry times, in milliseconds (at least 2000 when a side
    /// has no `PEXPIRETIME`, i.e. before Redis 7.0).
    pub ttl_tolerance_ms: u64,
    /// How values are compared.
    pub compare: Compare,
    /// How many differences the report lists (all are counted).
    pub max_differences: usize,
    /// Check differing keys again after this many milliseconds; those equal then are not differences.
    pub recheck_after_ms: Option<u64>,
    /// Keys starting with one of these are skipped on both sides (default: ferry's checkpoint keys and the
    /// target policy's stored report). ferry's own keys (checkpoints, stored reports, a DR pair's state
    /// records, a cluster source's shard leases: `ferry_replicator::RESERVED_KEY_PREFIXES`) are skipped
    /// whatever this holds.
    pub ignore_prefixes: Vec<String>,
    /// Keys per `SCAN` and per pipelined batch.
    pub batch: usize,
    /// Only the databases and keys a sync job with this filter copies (its database and key rules; its command
    /// rules do not apply). Keys it leaves out are not compared on either side.
    pub filter: FilterConfig,
    /// Source database to target database (`{"1": 0}`), as a sync job's `db_map`: each source database is
    /// compared with the target database it goes to; unlisted databases keep their number.
    pub db_map: BTreeMap<String, u32>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            dbs: None,
            sample: None,
            ttl_tolerance_ms: 1000,
            compare: Compare::Auto,
            max_differences: 20,
            recheck_after_ms: None,
            ignore_prefixes: vec![
                ferry_replicator::checkpoint::KEY_PREFIX.to_string(),
                ferry_replicator::checkpoint::SKIPPED_PREFIX.to_string(),
                ferry_replicator::checkpoint::CONVERTED_PREFIX.to_string(),
            ],
            batch: 512,
            filter: FilterConfig::default(),
            db_map: BTreeMap::new(),
        }
    }
}

impl VerifyOptions {
    /// Only these databases.
    pub fn with_dbs(mut self, dbs: Vec<u32>) -> VerifyOptions {
        self.dbs = Some(dbs);
        self
    }

    /// At most `n` keys of each side per database.
    pub fn with_sample(mut self, n: u64) -> VerifyOptions {
        self.sample = Some(n);
        self
    }

    /// Check differing keys again after `ms` milliseconds.
    pub fn with_recheck_after_ms(mut self, ms: u64) -> VerifyOptions {
        self.recheck_after_ms = Some(ms);
        self
    }

    /// The compare mode.
    pub fn with_compare(mut self, compare: Compare) -> VerifyOptions {
        self.compare = compare;
        self
    }

    /// Only the databases and keys `filter` lets through.
    pub fn with_filter(mut self, filter: FilterConfig) -> VerifyOptions {
        self.filter = filter;
        self
    }

    /// Source database `from` is compared with target database `to`.
    pub fn with_db_map(mut self, from: u32, to: u32) -> VerifyOptions {
        self.db_map.insert(from.to_string(), to);
        self
    }

    /// The filter and database map of a sync job: compares what the job copies, where it copies it.
    pub fn with_job(mut self, job: &SyncConfig) -> VerifyOptions {
        self.filter = job.filter.clone();
        self.db_map = job.db_map.clone();
        self
    }
}

/// What differs about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DifferenceKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// Of another type.
    Type,
    /// Another value.
    Value,
    /// Another expiry (or one side has none).
    Ttl,
}

impl DifferenceKind {
    fn as_str(&self) -> &'static str {
        match self {
            DifferenceKind::Missing => "missing",
            DifferenceKind::Extra => "extra",
            DifferenceKind::Type => "type",
            DifferenceKind::Value => "value",
            DifferenceKind::Ttl => "ttl",
        }
    }
}

/// One differing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Difference {
    /// What differs.
    pub kind: DifferenceKind,
    /// The database (of the source; of the target too unless a database map sends it elsewhere).
    pub db: u32,
    /// The target's database (`db` unless a database map sends it elsewhere).
    pub target_db: u32,
    /// The key in double quotes, bytes other than printable ASCII as `\xNN` (longer keys shortened).
    pub key: String,
    /// Details for humans (the two types, lengths or expiry times).
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// No difference found.
    pub equal: bool,
    /// Keys of the source compared with the target.
    pub keys_checked: u64,
    /// Keys of the target checked for existence on the source.
    pub target_keys_checked: u64,
    /// Keys on the source, not on the target.
    pub missing: u64,
    /// Keys on the target, not on the source.
    pub extra: u64,
    /// Keys of different types.
    pub type_mismatch: u64,
    /// Keys with different values.
    pub value_mismatch: u64,
    /// Keys with different expiry.
    pub ttl_mismatch: u64,
    /// Differences found in the first pass and checked again after `recheck_after_ms`.
    pub rechecked: u64,
    /// Of those, how many were equal on the second look (not counted as differences).
    pub resolved_on_recheck: u64,
    /// The databases compared.
    pub dbs: Vec<u32>,
    /// The first differences (at most `max_differences`).
    pub differences: Vec<Difference>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.equal {
            write!(f, "equal: {} keys compared", self.keys_checked)?;
        } else {
            write!(
                f,
                "DIFFERENT: {} keys compared, {} missing on the target, {} extra on the target, {} of another \
                 type, {} with another value, {} with another expiry",
                self.keys_checked,
                self.missing,
                self.extra,
                self.type_mismatch,
                self.value_mismatch,
                self.ttl_mismatch
            )?;
        }
        write!(f, " (dbs {:?}, {} ms", self.dbs, self.elapsed_ms)?;
        if self.rechecked > 0 {
            write!(
                f,
                ", {} rechecked, {} equal on the second look",
                self.rechecked, self.resolved_on_recheck
            )?;
        }
        writeln!(f, ")")?;
        for d in &self.differences {
            let db = if d.db == d.target_db {
                d.db.to_string()
            } else {
                format!("{}->{}", d.db, d.target_db)
            };
            writeln!(
                f,
                "  {:<7} db {db} {}: {}",
                d.kind.as_str(),
                d.key,
                d.detail
            )?;
        }
        let listed = self.differences.len() as u64;
        let total = self.missing
            + self.extra
            + self.type_mismatch
            + self.value_mismatch
            + self.ttl_mismatch;
        if total > listed {
            writeln!(f, "  ... and {} more", total - listed)?;
        }
        Ok(())
    }
}

/// Most differing keys kept for the recheck (the rest are counted as found).
const MAX_RECHECK: usize = 100_000;

/// Compares `source` and `target` key by key; see the module documentation.
pub async fn verify(
    source: &Source,
    target: &Target,
    options: VerifyOptions,
) -> Result<VerifyReport, Error> {
    let started = Instant::now();
    let (filter, map) = selection(source, target, &options)?;
    if let Some(d) = options
        .dbs
        .iter()
        .flatten()
        .find(|&&d| !filter.db_passes(i64::from(d)))
    {
        // Comparing nothing there would report "equal" for a selection that contradicts itself.
        return Err(Error::config(format!(
            "database {d} is asked for, but the filter (or the database the source URL names) leaves it out"
        )));
    }
    let mut src = Side::open(side_of_source(source)?.resolve("source").await?, "source").await?;
    let mut tgt = Side::open(side_of_target(target)?.resolve("target").await?, "target").await?;
    let mut dbs = match &options.dbs {
        Some(d) => d.clone(),
        None => {
            // The source's databases, and those whose keys land in a target database that holds keys.
            let mut d = src.dbs().await?;
            for t in tgt.dbs().await? {
                d.extend(
                    map.sources_of(i64::from(t))
                        .into_iter()
                        .filter_map(db_number),
                );
            }
            d
        }
    };
    dbs.retain(|&d| filter.db_passes(i64::from(d)));
    dbs.sort_unstable();
    dbs.dedup();
    let target_of = |db: u32| db_number(map.target(i64::from(db))).unwrap_or(db);
    // Each target database compared, with the source databases that go to it.
    let mut sources_of: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &db in &dbs {
        sources_of.entry(target_of(db)).or_default().push(db);
    }
    let tolerance = if src.has_expiretime && tgt.has_expiretime {
        options.ttl_tolerance_ms
    } else {
        options.ttl_tolerance_ms.max(2000)
    };
    let mut acc = Acc {
        report: VerifyReport {
            dbs: dbs.clone(),
            ..Default::default()
        },
        pending: Vec::new(),
        options: &options,
        filter: &filter,
        sources_of: &sources_of,
        tolerance,
    };
    let sampled_out = |n: u64| options.sample.is_some_and(|s| n >= s);
    // Source -> target: every key of the source, compared. The next SCAN runs while the batch is read.
    for &db in &dbs {
        let at = Dbs {
            source: db,
            target: target_of(db),
        };
        let mut n = 0u64;
        for node in src.scan_nodes() {
            let mut scanner = Scanner::connect(&node, db, options.batch).await?;
            let mut batch = scanner.next().await?;
            while let Some(keys) = batch {
                let keys = acc.keep(keys, n);
                n += keys.len() as u64;
                let more = !sampled_out(n);
                let (next, a, b) = tokio::join!(
                    async {
                        if more {
                            scanner.next().await
                        } else {
                            Ok(None)
                        }
                    },
                    src.read(at.source, &keys, options.compare),
                    tgt.read(at.target, &keys, options.compare)
                );
                acc.compare(at, &keys, &a?, &b?, false);
                batch = next?;
            }
        }
    }
    // Target -> source: keys only the target has.
    for (&db, sources) in &sources_of {
        let at = Dbs {
            source: sources[0],
            target: db,
        };
        let mut n = 0u64;
        for node in tgt.scan_nodes() {
            let mut scanner = Scanner::connect(&node, db, options.batch).await?;
            let mut batch = scanner.next().await?;
            while let Some(keys) = batch {
                let keys = acc.keep(keys, n);
                n += keys.len() as u64;
                let more = !sampled_out(n);
                let (next, exists) = tokio::join!(
                    async {
                        if more {
                            scanner.next().await
                        } else {
                            Ok(None)
                        }
                    },
                    src.exists_in_any(sources, &keys)
                );
                acc.report.target_keys_checked += keys.len() as u64;
                for (key, there) in keys.iter().zip(exists?) {
                    if !there {
                        acc.found(at, key, DifferenceKind::Extra, "not on the source".into());
                    }
                }
                batch = next?;
            }
        }
    }
    if let Some(ms) = options.recheck_after_ms {
        acc.recheck(&mut src, &mut tgt, Duration::from_millis(ms))
            .await?;
    } else {
        acc.flush_pending();
    }
    let mut report = acc.report;
    report.equal = report.missing
        + report.extra
        + report.type_mismatch
        + report.value_mismatch
        + report.ttl_mismatch
        == 0;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The filter and database map of a verify: the options' with the databases the URLs name (as a sync job
/// takes them, `config/url_db.rs`).
fn selection(
    source: &Source,
    target: &Target,
    options: &VerifyOptions,
) -> Result<(ferry_replicator::Filter, ferry_replicator::DbMap), Error> {
    let (mut filter, mut db_map) = (options.filter.clone(), options.db_map.clone());
    if let Some(note) = crate::config::apply_url_dbs(source, target, &mut filter, &mut db_map)? {
        tracing::info!("{note}");
    }
    let filter = ferry_replicator::Filter::new(filter.to_replicator())
        .map_err(|e| Error::config(format!("filter: {e}")))?;
    Ok((
        filter,
        ferry_replicator::DbMap::new(crate::config::db_pairs(&db_map)?),
    ))
}

/// A database number as verify keeps it (the map's are `i64`; negative ones name no database).
fn db_number(db: i64) -> Option<u32> {
    u32::try_from(db).ok()
}

/// A source database and the target database it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Dbs {
    source: u32,
    target: u32,
}

/// A differing key waiting for its recheck.
struct Pending {
    at: Dbs,
    key: Bytes,
    kind: DifferenceKind,
    detail: String,
}

/// Counts and the list of differences.
struct Acc<'a> {
    report: VerifyReport,
    pending: Vec<Pending>,
    options: &'a VerifyOptions,
    filter: &'a ferry_replicator::Filter,
    /// Each target database compared, with the source databases compared with it.
    sources_of: &'a BTreeMap<u32, Vec<u32>>,
    tolerance: u64,
}

impl Acc<'_> {
    /// Drops ignored keys and keys beyond the sample.
    fn keep(&self, keys: Vec<Bytes>, seen: u64) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = keys
            .into_iter()
            .filter(|k| {
                // The filter never lets ferry's own keys through.
                self.filter.key_passes(k)
                    && !self
                        .options
                        .ignore_prefixes
                        .iter()
                        .any(|p| k.starts_with(p.as_bytes()))
            })
            .collect();
        if let Some(s) = self.options.sample {
            keys.truncate(s.saturating_sub(seen) as usize);
        }
        keys
    }

    fn found(&mut self, at: Dbs, key: &Bytes, kind: DifferenceKind, detail: String) {
        if self.options.recheck_after_ms.is_some() && self.pending.len() < MAX_RECHECK {
            self.pending.push(Pending {
                at,
                key: key.clone(),
                kind,
                detail,
            });
        } else {
            self.count(at, key, kind, detail);
        }
    }

    fn count(&mut self, at: Dbs, key: &[u8], kind: DifferenceKind, detail: String) {
        let r = &mut self.report;
        match kind {
            DifferenceKind::Missing => r.missing += 1,
            DifferenceKind::Extra => r.extra += 1,
            DifferenceKind::Type => r.type_mismatch += 1,
            DifferenceKind::Value => r.value_mismatch += 1,
            DifferenceKind::Ttl => r.ttl_mismatch += 1,
        }
        if r.differences.len() < self.options.max_differences {
            r.differences.push(Difference {
                kind,
                db: at.source,
                target_db: at.target,
                key: show_key(key),
                detail,
            });
        }
    }

    fn flush_pending(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            self.count(p.at, &p.key, p.kind, p.detail);
        }
    }

    /// Compares one batch read from both sides.
    fn compare(&mut self, at: Dbs, keys: &[Bytes], a: &[KeyState], b: &[KeyState], recheck: bool) {
        if !recheck {
            self.report.keys_checked +=
                keys.iter().zip(a).filter(|(_, s)| s.kind.is_some()).count() as u64;
        }
        for ((key, a), b) in keys.iter().zip(a).zip(b) {
            if let Some((kind, detail)) = self.differs(a, b) {
                if recheck {
                    self.count(at, key, kind, detail);
                } else {
                    self.found(at, key, kind, detail);
                }
            }
        }
    }

    /// How two states of a key differ, if they do. A key gone from the source is no difference (it was
    /// deleted while the walk went on; the reverse walk sees the target's copy if it stays).
    fn differs(&self, a: &KeyState, b: &KeyState) -> Option<(DifferenceKind, String)> {
        let ta = a.kind?;
        let Some(tb) = b.kind else {
            return Some((DifferenceKind::Missing, "not on the target".into()));
        };
        if ta != tb {
            return Some((
                DifferenceKind::Type,
                format!("{ta} on the source, {tb} on the target"),
            ));
        }
        let same = if self.options.compare == Compare::Digest {
            a.payload == b.payload
        } else {
            self.same_value(&a.payload, &b.payload)
        };
        if !same {
            let detail = if self.options.compare == Compare::Digest {
                "the digests differ".to_string()
            } else {
                let mut detail = format!(
                    "{} bytes serialized on the source, {} on the target",
                    a.payload.len(),
                    b.payload.len()
                );
                if ta == "module" {
                    detail.push_str(&module_note(&a.payload));
                }
                detail
            };
            return Some((DifferenceKind::Value, detail));
        }
        let close = match (a.expire_at_ms, b.expire_at_ms) {
            (None, None) => true,
            (Some(x), Some(y)) => x.abs_diff(y) <= self.tolerance,
            _ => false,
        };
        if !close {
            let show = |t: Option<i64>| t.map_or("none".to_string(), |t| format!("{t} ms"));
            return Some((
                DifferenceKind::Ttl,
                format!(
                    "expires at {} on the source, {} on the target",
                    show(a.expire_at_ms),
                    show(b.expire_at_ms)
                ),
            ));
        }
        None
    }

    fn same_value(&self, a: &[u8], b: &[u8]) -> bool {
        if self.options.compare != Compare::Value && a == b {
            return true;
        }
        if self.options.compare == Compare::Dump {
            return false;
        }
        match (ferry_rdb::decode_dump(a), ferry_rdb::decode_dump(b)) {
            (Ok((x, vx)), Ok((y, vy))) => {
                let now = now_ms();
                let (mut x, mut y) = (normalized(x, now), normalized(y, now));
                if vx != vy {
                    forget_stream_metadata(&mut x);
                    forget_stream_metadata(&mut y);
                }
                if x != y {
                    tracing::debug!(source = ?x, target = ?y, "values differ");
                }
                x == y
            }
            _ => false,
        }
    }

    /// Reads the differing keys again after `delay` and counts only those still differing.
    async fn recheck(
        &mut self,
        src: &mut Side,
        tgt: &mut Side,
        delay: Duration,
    ) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(
            keys = pending.len(),
            delay_ms = delay.as_millis() as u64,
            "rechecking the differing keys after a delay"
        );
        tokio::time::sleep(delay).await;
        self.report.rechecked = pending.len() as u64;
        let before = self.total();
        for chunk in pending.chunks(self.options.batch.max(1)) {
            let mut by_db: BTreeMap<Dbs, Vec<&Pending>> = BTreeMap::new();
            for p in chunk {
                by_db.entry(p.at).or_default().push(p);
            }
            for (at, items) in by_db {
                let (extra, other): (Vec<&Pending>, Vec<&Pending>) = items
                    .into_iter()
                    .partition(|p| p.kind == DifferenceKind::Extra);
                if !other.is_empty() {
                    let keys: Vec<Bytes> = other.iter().map(|p| p.key.clone()).collect();
                    let (a, b) = tokio::join!(
                        src.read(at.source, &keys, self.options.compare),
                        tgt.read(at.target, &keys, self.options.compare)
                    );
                    self.compare(at, &keys, &a?, &b?, true);
                }
                if !extra.is_empty() {
                    let keys: Vec<Bytes> = extra.iter().map(|p| p.key.clone()).collect();
                    let alone = [at.source];
                    let sources = self
                        .sources_of
                        .get(&at.target)
                        .map_or(&alone[..], Vec::as_slice);
                    let on_target = tgt.exists(at.target, &keys).await?;
                    let on_source = src.exists_in_any(sources, &keys).await?;
                    for ((key, t), s) in keys.iter().zip(on_target).zip(on_source) {
                        if t && !s {
                            self.count(at, key, DifferenceKind::Extra, "not on the source".into());
                        }
                    }
                }
            }
        }
        let still = self.total() - before;
        self.report.resolved_on_recheck = self.report.rechecked.saturating_sub(still);
        Ok(())
    }

    fn total(&self) -> u64 {
        let r = &self.report;
        r.missing + r.extra + r.type_mismatch + r.value_mismatch + r.ttl_mismatch
    }
}

/// A value with what is not data put aside: the order of unordered collections, and the bookkeeping of stream
/// consumer groups that each server keeps for itself (consumers' seen/active times, which a replica sets when it
/// applies a read, and the `entries_read` estimate, which a replica may not know), and hash fields whose expiry
/// has passed (`now`, Unix ms). Such a field is gone for every command, but a server reclaims it lazily or in
/// its expiry cycle: a server that loaded it from an RDB file dropped it at load, one it was restored into
/// keeps it in its `DUMP` until then.
/// A vector set (Redis 8) is compared by its elements, vectors and attributes, not its graph: a server that
/// loads or restores one rebuilds the graph's order, and a replayed `VADD` draws its own random levels.
/// A HyperLogLog is compared by its registers, not the cardinality it caches in its header: `PFCOUNT` rewrites
/// that cache without a keyspace event, so a scan source's copy can hold an older one for the same registers.
fn normalized(mut v: ferry_rdb::Value, now: i64) -> ferry_rdb::Value {
    use ferry_rdb::Value;
    v.drop_expired_fields(now);
    match v {
        Value::String(s) if is_hyperloglog(&s) => {
            let mut h = s.to_vec();
            h[HLL_CACHE].fill(0);
            Value::String(h.into())
        }
        Value::Stream(mut s) => {
            for g in &mut s.groups {
                g.entries_read = None;
                for c in &mut g.consumers {
                    c.seen_time_ms = 0;
                    c.active_time_ms = None;
                }
            }
            Value::Stream(s)
        }
        Value::Set(mut m) => {
            m.sort();
            Value::Set(m)
        }
        Value::Hash(mut h) => {
            h.sort_by(|a, b| a.field.cmp(&b.field));
            Value::Hash(h)
        }
        Value::SortedSet(mut z) => {
            z.sort_by(|a, b| a.0.cmp(&b.0));
            Value::SortedSet(z)
        }
        Value::Module(mut m) => {
            if let Some(set) = m.vector_set() {
                m.payload = set.canonical_payload();
            }
            Value::Module(m)
        }
        other => other,
    }
}

/// The header of a HyperLogLog string: `HYLL`, its encoding, 3 unused bytes, then the cached cardinality.
const HLL_HEADER: usize = 16;
/// Where a HyperLogLog caches its cardinality (the last byte's top bit marks the cache stale).
const HLL_CACHE: std::ops::Range<usize> = 8..16;

/// Whether a string has a HyperLogLog's header: `HYLL`, encoding 0 (dense) or 1 (sparse), three zero bytes.
fn is_hyperloglog(s: &[u8]) -> bool {
    s.len() >= HLL_HEADER && s.starts_with(b"HYLL") && s[4] <= 1 && s[5..8] == [0, 0, 0]
}

/// Stream metadata that RDB versions before 10 (Redis 6.2) do not store and a newer server computes when it
/// loads such a payload: compared only between payloads of one version.
fn forget_stream_metadata(v: &mut ferry_rdb::Value) {
    if let ferry_rdb::Value::Stream(s) = v {
        s.first_id = Default::default();
        s.max_deleted_id = Default::default();
        s.entries_added = 0;
    }
}

/// What a differing module value's detail adds: a module other than Redis 8's vector sets (which are compared
/// without their graph) is compared by its serialized form only, and a module may serialize equal data in
/// another form (a FalkorDB graph that had nodes deleted on the source serializes longer there than on a target
/// that received it afterwards), so the reader is told to compare it with the module's own commands.
fn module_note(payload: &[u8]) -> String {
    match ferry_rdb::decode_dump(payload) {
        Ok((ferry_rdb::Value::Module(m), _)) if m.name != "vectorset" => format!(
            " (a `{}` module value, compared by its serialized form: its module may serialize equal data \
             differently, so compare it with the module's own commands)",
            m.name
        ),
        _ => String::new(),
    }
}

/// The static name of a `TYPE` reply.
fn type_name(t: &[u8]) -> &'static str {
    match t {
        b"string" => "string",
        b"list" => "list",
        b"set" => "set",
        b"zset" => "zset",
        b"hash" => "hash",
        b"stream" => "stream",
        _ => "module",
    }
}

fn type_of(dump: &[u8]) -> &'static str {
    dump.first()
        .map_or("unknown", |&t| ferry_rdb::type_name_of(t))
}

/// A key as read from one side.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// The type name; `None` when the key does not exist.
    kind: Option<&'static str>,
    /// The DUMP payload, or the digest in mode [`Compare::Digest`].
    payload: Bytes,
    expire_at_ms: Option<i64>,
}

/// One deployment being compared.
enum SideKind {
    Standalone(Box<ConnectOptions>),
    Cluster(Vec<ConnectOptions>),
}

/// A side as configured: a sentinel-managed group is compared on the master its sentinels name when the verify
/// starts.
enum SideSpec {
    Kind(SideKind),
    Sentinel(Box<ferry_sentinel::SentinelPoolOptions>),
}

impl SideSpec {
    async fn resolve(self, name: &str) -> Result<SideKind, Error> {
        match self {
            SideSpec::Kind(k) => Ok(k),
            SideSpec::Sentinel(o) => Ok(SideKind::Standalone(Box::new(
                crate::config::sentinel_master(&o)
                    .await
                    .map_err(|e| e.context(format!("{name}: resolving the master")))?,
            ))),
        }
    }
}

struct Side {
    name: &'static str,
    kind: SideKind,
    cluster: Option<ClusterClient>,
    /// A connection per database of a standalone side.
    conn: Option<(u32, Connection)>,
    has_expiretime: bool,
}

fn side_of_source(source: &Source) -> Result<SideSpec, Error> {
    match source {
        Source::Scan {
            endpoint: e,
            cluster: true,
            ..
        } => Ok(SideSpec::Kind(SideKind::Cluster(
            vec![e.connect_options()?],
        ))),
        Source::Standalone(e) | Source::Scan { endpoint: e, .. } => Ok(SideSpec::Kind(
            SideKind::Standalone(Box::new(e.connect_options()?)),
        )),
        Source::Cluster { seeds, .. } => Ok(SideSpec::Kind(SideKind::Cluster(
            seeds
                .iter()
                .map(|s| s.connect_options())
                .collect::<Result<_, _>>()?,
        ))),
        Source::Sentinel {
            sentinels,
            master,
            master_auth,
        } => Ok(SideSpec::Sentinel(Box::new(
            crate::config::sentinel_pool_options(sentinels, master, master_auth)?,
        ))),
        Source::RdbFile { .. } => Err(Error::not_supported("verify of an RDB file")),
        Source::AofFile { .. } => Err(Error::not_supported("verify of an append-only file")),
    }
}

fn side_of_target(target: &Target) -> Result<SideSpec, Error> {
    match target {
        Target::Standalone(e) => Ok(SideSpec::Kind(SideKind::Standalone(Box::new(
            e.connect_options()?,
        )))),
        Target::Cluster { seeds } => Ok(SideSpec::Kind(SideKind::Cluster(
            seeds
                .iter()
                .map(|s| s.connect_options())
                .collect::<Result<_, _>>()?,
        ))),
        Target::Sentinel {
            sentinels,
            master,
            master_auth,
        } => Ok(SideSpec::Sentinel(Box::new(
            crate::config::sentinel_pool_options(sentinels, master, master_auth)?,
        ))),
    }
}

impl Side {
    async fn open(kind: SideKind, name: &'static str) -> Result<Side, Error> {
        let (kind, cluster) = match kind {
            SideKind::Standalone(o) => (SideKind::Standalone(o), None),
            SideKind::Cluster(seeds) => {
                let first = seeds
                    .first()
                    .cloned()
                    .ok_or_else(|| Error::config(format!("{name}: no cluster seed")))?;
                let mut opts = ClusterOptions::new(first.clone());
                opts.seeds = seeds
                    .iter()
                    .skip(1)
                    .map(|s| ferry_topology::NodeAddr::new(s.host.clone(), s.port))
                    .collect();
                let client = ClusterClient::connect(opts)
                    .await
                    .map_err(|e| Error::from(e).context(name))?;
                let masters = client
                    .slot_map()
                    .shards()
                    .iter()
                    .map(|s| {
                        let mut o = first.clone();
                        o.host = s.master.addr.host.clone();
                        o.port = s.master.addr.port;
                        o
                    })
                    .collect();
                (SideKind::Cluster(masters), Some(client))
            }
        };
        let mut side = Side {
            name,
            kind,
            cluster,
            conn: None,
            has_expiretime: false,
        };
        let first = side
            .scan_nodes()
            .into_iter()
            .next()
            .ok_or_else(|| Error::config(format!("{name}: no node")))?;
        let mut conn = Connection::connect(&first)
            .await
            .map_err(|e| Error::from(e).context(name))?;
        let info = ferry_resp::probe::info_server(&mut conn)
            .await
            .map_err(|e| Error::from(e).context(name))?;
        let major = ferry_resp::probe::major_version(&info);
        side.has_expiretime = major >= 7;
        Ok(side)
    }

    /// The nodes whose keys are walked: the server, or every master.
    fn scan_nodes(&self) -> Vec<ConnectOptions> {
        match &self.kind {
            SideKind::Standalone(o) => vec![(**o).clone()],
            SideKind::Cluster(m) => m.clone(),
        }
    }

    /// Databases holding keys (`INFO keyspace`); a cluster has only 0.
    async fn dbs(&mut self) -> Result<Vec<u32>, Error> {
        match &self.kind {
            SideKind::Cluster(_) => Ok(vec![0]),
            SideKind::Standalone(o) => {
                let mut conn = Connection::connect(o)
                    .await
                    .map_err(|e| Error::from(e).context(self.name))?;
                let dbs = ferry_resp::probe::keyspace(&mut conn, 0)
                    .await
                    .map_err(|e| Error::from(e).context(self.name))?;
                Ok(dbs.into_iter().map(|(db, _)| db as u32).collect())
            }
        }
    }

    /// Runs commands (one reply per command, in order) against database `db`.
    async fn run(&mut self, db: u32, cmds: &[Vec<Bytes>]) -> Result<Vec<Frame>, Error> {
        if let Some(client) = &self.cluster {
            if db != 0 {
                return Err(Error::config(format!(
                    "{}: a cluster has only database 0, and the other side has keys in database {db}: compare \
                     database 0 only (`--db 0`), or map that database to 0 (`--db-map {db}:0`)",
                    self.name
                )));
            }
            return client
                .pipeline(cmds)
                .await
                .into_iter()
                .map(|r| match r {
                    Ok(f) => Ok(f),
                    Err(e) => Err(Error::from(e).context(self.name)),
                })
                .collect();
        }
        let SideKind::Standalone(o) = &self.kind else {
            return Err(Error::new(ErrorKind::Data, "no connection"));
        };
        if self.conn.as_ref().map(|(d, _)| *d) != Some(db) {
            self.conn = Some((
                db,
                connect_db(o, db).await.map_err(|e| e.context(self.name))?,
            ));
        }
        let (_, conn) = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Data, "no connection"))?;
        match conn.pipeline(cmds).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                Err(Error::from(e).context(self.name))
            }
        }
    }

    /// `DUMP` (or `TYPE` and `DEBUG DIGEST-VALUE`) and the absolute expiry of each key.
    async fn read(
        &mut self,
        db: u32,
        keys: &[Bytes],
        compare: Compare,
    ) -> Result<Vec<KeyState>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let expire: &'static [u8] = if self.has_expiretime {
            b"PEXPIRETIME"
        } else {
            b"PTTL"
        };
        let digest = compare == Compare::Digest;
        let per_key = if digest { 3 } else { 2 };
        let mut cmds = Vec::with_capacity(keys.len() * per_key);
        for k in keys {
            if digest {
                cmds.push(vec![Bytes::from_static(b"TYPE"), k.clone()]);
                cmds.push(vec![
                    Bytes::from_static(b"DEBUG"),
                    Bytes::from_static(b"DIGEST-VALUE"),
                    k.clone(),
                ]);
            } else {
                cmds.push(vec![Bytes::from_static(b"DUMP"), k.clone()]);
            }
            cmds.push(vec![Bytes::from_static(expire), k.clone()]);
        }
        let replies = self.run(db, &cmds).await?;
        let now = now_ms();
        let refused = |what: &str, e: &[u8]| {
            Error::new(
                ErrorKind::Data,
                format!(
                    "{}: {what} refused: {}",
                    self.name,
                    String::from_utf8_lossy(e)
                ),
            )
        };
        let mut out = Vec::with_capacity(keys.len());
        for group in replies.chunks(per_key) {
            let mut state = KeyState::default();
            if digest {
                state.kind = match &group[0] {
                    Frame::Simple(t) | Frame::Bulk(t) if t.as_ref() != b"none" => {
                        Some(type_name(t))
                    }
                    Frame::Error(e) => return Err(refused("TYPE", e)),
                    _ => None,
                };
                state.payload = match &group[1] {
                    Frame::Array(d) => d
                        .first()
                        .and_then(|f| f.as_bytes())
                        .map(Bytes::copy_from_slice)
                        .unwrap_or_default(),
                    Frame::Error(e) => return Err(refused("DEBUG DIGEST-VALUE", e)),
                    _ => Bytes::new(),
                };
            } else {
                match &group[0] {
                    Frame::Bulk(b) => {
                        state.kind = Some(type_of(b));
                        state.payload = b.clone();
                    }
                    Frame::Error(e) => return Err(refused("DUMP", e)),
                    _ => {}
                }
            }
            state.expire_at_ms = match group.last() {
                Some(Frame::Integer(t)) if *t >= 0 => {
                    Some(if self.has_expiretime { *t } else { now + *t })
                }
                _ => None,
            };
            out.push(state);
        }
        Ok(out)
    }

    /// Whether each key exists.
    async fn exists(&mut self, db: u32, keys: &[Bytes]) -> Result<Vec<bool>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cmds: Vec<Vec<Bytes>> = keys
            .iter()
            .map(|k| vec![Bytes::from_static(b"EXISTS"), k.clone()])
            .collect();
        Ok(self
            .run(db, &cmds)
            .await?
            .iter()
            .map(|f| matches!(f, Frame::Integer(n) if *n > 0))
            .collect())
    }

    /// For each key, whether it exists in one of `dbs` (the source databases a database map sends to one
    /// target database).
    async fn exists_in_any(&mut self, dbs: &[u32], keys: &[Bytes]) -> Result<Vec<bool>, Error> {
        let mut found = vec![false; keys.len()];
        for &db in dbs {
            for (f, there) in found.iter_mut().zip(self.exists(db, keys).await?) {
                *f |= there;
            }
        }
        Ok(found)
    }
}

async fn connect_db(node: &ConnectOptions, db: u32) -> Result<Connection, Error> {
    let mut o = node.clone();
    o.db = i64::from(db);
    Ok(Connection::connect(&o).await?)
}

/// Walks the keys of one database of one node with `SCAN`.
struct Scanner {
    conn: Connection,
    /// `None` once the walk is complete.
    cursor: Option<Vec<u8>>,
    count: usize,
}

impl Scanner {
    async fn connect(node: &ConnectOptions, db: u32, count: usize) -> Result<Scanner, Error> {
        Ok(Scanner {
            conn: connect_db(node, db).await?,
            cursor: Some(b"0".to_vec()),
            count,
        })
    }

    /// The next batch of keys (possibly empty), `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<Bytes>>, Error> {
        let Some(cursor) = self.cursor.take() else {
            return Ok(None);
        };
        let (next, keys) = scan(&mut self.conn, &cursor, self.count).await?;
        if next != b"0" {
            self.cursor = Some(next);
        }
        Ok(Some(keys))
    }
}

/// One `SCAN` step: the next cursor and the keys.
async fn scan(
    conn: &mut Connection,
    cursor: &[u8],
    count: usize,
) -> Result<(Vec<u8>, Vec<Bytes>), Error> {
    let count = count.to_string();
    let reply = conn
        .call(&[b"SCAN".as_slice(), cursor, b"COUNT", count.as_bytes()])
        .await?;
    let bad = || Error::new(ErrorKind::Data, "unexpected SCAN reply");
    let Frame::Array(parts) = reply else {
        return Err(bad());
    };
    let mut parts = parts.into_iter();
    let next = match parts.next() {
        Some(Frame::Bulk(b)) | Some(Frame::Simple(b)) => b.to_vec(),
        _ => return Err(bad()),
    };
    let keys = match parts.next() {
        Some(Frame::Array(items)) | Some(Frame::Set(items)) => items
            .into_iter()
            .filter_map(|f| match f {
                Frame::Bulk(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => return Err(bad()),
    };
    Ok((next, keys))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A key for humans: UTF-8 as is, other bytes escaped, long keys shortened.
pub(crate) fn show_key(key: &[u8]) -> String {
    ferry_replicator::KeyDisplay(key.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DUMP payload (RDB version 11) of a module value of type `name`, one unsigned operand.
    fn module_dump(name: &str, operand: u8) -> Vec<u8> {
        let id = ferry_rdb::value::module_id_from_name(name, 1).unwrap();
        let m = ferry_rdb::ModuleValue {
            module_id: id,
            name: name.to_string(),
            encver: 1,
            // OP_UINT, the operand, OP_EOF
            payload: Bytes::from(vec![2, operand, 0]),
        };
        ferry_rdb::encode_dump(&ferry_rdb::Value::Module(Box::new(m)), 11).unwrap()
    }

    #[test]
    fn a_differing_module_value_is_named_with_its_module_and_how_to_check_it() {
        let note = module_note(&module_dump("graphdata", 1));
        assert!(note.contains("`graphdata` module value"), "{note}");
        assert!(note.contains("module's own commands"), "{note}");
        assert_eq!(module_note(&module_dump("vectorset", 1)), "");
        assert_eq!(module_note(b"not a payload"), "");
    }

    #[test]
    fn a_hyperloglog_is_compared_by_its_registers_not_its_cached_cardinality() {
        use ferry_rdb::Value;
        let hll = |cache: u8, register: u8| {
            let mut v = b"HYLL\x01\x00\x00\x00".to_vec();
            v.extend([cache, 0, 0, 0, 0, 0, 0, 0x80 & cache]);
            v.extend([register, 0x7f]);
            normalized(Value::String(v.into()), 0)
        };
        assert_eq!(
            hll(0, 5),
            hll(0x81, 5),
            "a stale or fresh cache of the same registers"
        );
        assert_ne!(hll(0, 5), hll(0, 6), "other registers");
        // Other strings are compared whole, including ones shorter than a header.
        let s = |b: &'static [u8]| normalized(Value::String(Bytes::from_static(b)), 0);
        assert_ne!(s(b"HYLLxxxx00000000a"), s(b"HYLLxxxx10000000a"));
        assert_ne!(s(b"HYLL1"), s(b"HYLL2"));
    }
}
