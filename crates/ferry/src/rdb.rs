//! RDB files: iterate their keys, summarize them, restore them into a target.
//!
//! The value model and the streaming parser are ferry-rdb's, re-exported here. [`restore`] writes through the
//! replicator's sinks (the same pipelined, windowed writers and `RESTORE ... ABSTTL` commands a sync uses), so
//! a file and a live source reach a target the same way.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use ferry_rdb::{
    decode_dump, encode_dump, json, type_name_of, Checksum, Entry, HashField, Item, Parser,
    ParserOptions, Reader, Stream, StreamEntry, StreamId, Value, ValueMode, Writer,
};

pub use ferry_rdb::encoding::Elem;
pub use ferry_rdb::visit::{Shape, Visitor};

use crate::config::{Conflict, Target, TargetPolicy};
use crate::error::Error;

/// The file at `path`, unbuffered: [`Reader`] reads it in 64 KiB chunks of its own (a `BufReader` would only add
/// a copy of every byte).
fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| Error::data(format!("cannot open {}: {e}", path.display())))
}

/// The keys of an RDB file, in file order, each with its decoded value. Memory holds one key at a time.
///
/// A sorted set's members come in `ZRANGE` order (by score, then by member), whatever order the file holds them
/// in (Redis writes a big sorted set from the highest score down).
pub struct Entries {
    reader: Reader<File>,
    path: PathBuf,
    done: bool,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("path", &self.path).finish()
    }
}

impl Entries {
    /// The next key, its value given to `visitor` (see [`ferry_rdb::visit`]) rather than built: the entry's `value`
    /// is `None`. Sorted sets reach [`Visitor::value`] in `ZRANGE` order, as [`Entries`] gives them.
    pub fn next_visit(&mut self, visitor: &mut dyn Visitor) -> Option<Result<Entry, Error>> {
        self.next_inner(Some(&mut InZrangeOrder(visitor)), take_entry)
    }

    /// [`Entries::next_visit`], handing the entry to `f` where the parser left it instead of returning it: `f`
    /// takes what it needs (no move of the whole entry through the layers, which shows for millions of small keys).
    pub fn next_visit_with<T>(
        &mut self,
        visitor: &mut dyn Visitor,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Option<Result<T, Error>> {
        self.next_inner(Some(&mut InZrangeOrder(visitor)), f)
    }

    fn next_inner<T>(
        &mut self,
        mut visitor: Option<&mut dyn Visitor>,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Option<Result<T, Error>> {
        if self.done {
            return None;
        }
        loop {
            let mut item = match visitor.as_mut() {
                Some(v) => self.reader.next_item_visit(&mut **v),
                None => self.reader.next_item(),
            };
            // Matched by reference: the entry stays where the reader returned it.
            match &mut item {
                Ok(Some(Item::Entry(e))) => {
                    if let Some(Value::SortedSet(members)) = &mut e.value {
                        in_zrange_order(members);
                    }
                    return Some(Ok(f(e)));
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::data(format!("{}: {e}", self.path.display()))));
                }
            }
        }
    }
}

/// The entry, moved out (what [`Entries::next`] and [`Entries::next_visit`] return).
fn take_entry(e: &mut Entry) -> Entry {
    std::mem::replace(
        e,
        Entry {
            db: 0,
            key: bytes::Bytes::new(),
            expire_at_ms: None,
            idle_secs: None,
            freq: None,
            rdb_type: 0,
            offset: 0,
            serialized_len: 0,
            value: None,
            raw: None,
        },
    )
}

impl Iterator for Entries {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_inner(None, take_entry)
    }
}

/// A visitor that puts sorted sets in `ZRANGE` order before passing everything on.
struct InZrangeOrder<'a>(&'a mut dyn Visitor);

impl Visitor for InZrangeOrder<'_> {
    fn string(&mut self, s: &[u8]) {
        self.0.string(s)
    }
    fn begin(&mut self, shape: Shape, len_hint: usize) {
        self.0.begin(shape, len_hint)
    }
    fn element(&mut self, e: Elem<'_>) {
        self.0.element(e)
    }
    fn value(&mut self, mut v: Value) {
        if let Value::SortedSet(members) = &mut v {
            in_zrange_order(members);
        }
        self.0.value(v)
    }
}

/// Sorts a sorted set's members as `ZRANGE` gives them: by score, equal scores by member bytes. (Already sorted
/// or reversed input, what files hold, costs one pass.)
fn in_zrange_order(members: &mut [(bytes::Bytes, f64)]) {
    members.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
}

/// Iterates the keys of the RDB file at `path` (checksum verified at the end).
pub fn entries(path: impl AsRef<Path>) -> Result<Entries, Error> {
    let path = path.as_ref();
    Ok(Entries {
        reader: Reader::new(open(path)?, ParserOptions::default()),
        path: path.to_path_buf(),
        done: false,
    })
}

/// Keys and serialized bytes of one type in one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TypeStats {
    /// Keys.
    pub keys: u64,
    /// Serialized bytes of their values.
    pub bytes: u64,
}

/// One of the biggest keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BigKey {
    /// Database.
    pub db: u64,
    /// The key (non-UTF-8 bytes escaped).
    pub key: String,
    /// Redis type.
    pub r#type: String,
    /// Serialized bytes.
    pub bytes: u64,
}

/// A summary of an RDB file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RdbStats {
    /// RDB version of the file.
    pub version: u32,
    /// AUX fields (`redis-ver`, `ctime`, ...), non-UTF-8 values escaped.
    pub aux: BTreeMap<String, String>,
    /// Keys in the file.
    pub keys: u64,
    /// Keys with an expiry.
    pub keys_with_expiry: u64,
    /// Per database, per type.
    pub per_db: BTreeMap<u64, BTreeMap<String, TypeStats>>,
    /// Keys per storage encoding (`ziplist`, `listpack`, `quicklist2`, `intset`, ...).
    pub encodings: BTreeMap<String, u64>,
    /// Keys by time to expiry from now: `expired`, `<1h`, `<1d`, `<7d`, `<30d`, `>=30d`.
    pub expiry_histogram: BTreeMap<String, u64>,
    /// The 20 biggest keys, biggest first.
    pub biggest: Vec<BigKey>,
    /// Function libraries in the file.
    pub functions: u64,
    /// Checksum outcome: `verified`, `disabled` or `absent`.
    pub checksum: String,
}

/// The storage encoding of an RDB type byte.
fn encoding_name(t: u8) -> &'static str {
    match t {
        0 => "string",
        1 => "linkedlist",
        2 => "hashtable-set",
        3 => "skiplist-v1",
        4 => "hashtable",
        5 => "skiplist",
        6 | 7 => "module",
        9 => "zipmap",
        10 => "ziplist-list",
        11 => "intset",
        12 => "ziplist-zset",
        13 => "ziplist-hash",
        14 => "quicklist",
        15 | 19 | 21 => "stream",
        16 | 22 => "hash-listpack",
        17 => "zset-listpack",
        18 => "quicklist2",
        20 => "set-listpack",
        23..=25 => "hash-with-field-expiry",
        _ => "unknown",
    }
}

const BIGGEST: usize = 20;

/// Reads the whole file at `path` and summarizes it (values are not decoded: fast, small memory).
pub fn stats(path: impl AsRef<Path>) -> Result<RdbStats, Error> {
    let path = path.as_ref();
    let opts = ParserOptions {
        mode: ValueMode::Raw,
        big_value_bytes: Some(1 << 20),
        ..Default::default()
    };
    let mut reader = Reader::new(open(path)?, opts);
    let mut s = RdbStats::default();
    let now = now_ms();
    let mut biggest: Vec<BigKey> = Vec::new();
    let mut big: Option<Entry> = None;
    let count = |s: &mut RdbStats, e: &Entry, biggest: &mut Vec<BigKey>| {
        let t = type_name_of(e.rdb_type).to_string();
        s.keys += 1;
        let ts = s
            .per_db
            .entry(e.db)
            .or_default()
            .entry(t.clone())
            .or_default();
        ts.keys += 1;
        ts.bytes += e.serialized_len;
        *s.encodings
            .entry(encoding_name(e.rdb_type).to_string())
            .or_default() += 1;
        if let Some(at) = e.expire_at_ms {
            s.keys_with_expiry += 1;
            let left = at - now;
            let bucket = match left {
                l if l <= 0 => "expired",
                l if l < 3_600_000 => "<1h",
                l if l < 86_400_000 => "<1d",
                l if l < 7 * 86_400_000 => "<7d",
                l if l < 30 * 86_400_000 => "<30d",
                _ => ">=30d",
            };
            *s.expiry_histogram.entry(bucket.to_string()).or_default() += 1;
        }
        biggest.push(BigKey {
            db: e.db,
            key: crate::verify::show_key(&e.key),
            r#type: t,
            bytes: e.serialized_len,
        });
        if biggest.len() > BIGGEST * 10 {
            biggest.sort_by_key(|b| std::cmp::Reverse(b.bytes));
            biggest.truncate(BIGGEST);
        }
    };
    loop {
        let item = reader
            .next_item()
            .map_err(|e| Error::data(format!("{}: {e}", path.display())))?;
        match item {
            None => break,
            Some(Item::Header { version, .. }) => s.version = version,
            Some(Item::Aux { key, value }) => {
                s.aux.insert(
                    String::from_utf8_lossy(&key).into_owned(),
                    crate::verify::show_key(&value),
                );
            }
            Some(Item::Entry(e)) => count(&mut s, &e, &mut biggest),
            Some(Item::EntryStart(e)) => big = Some(e),
            Some(Item::EntryEnd) => {
                if let Some(mut e) = big.take() {
                    e.serialized_len = reader.parser().offset().saturating_sub(e.offset);
                    count(&mut s, &e, &mut biggest);
                }
            }
            Some(Item::Function { .. }) => s.functions += 1,
            Some(Item::Eof { checksum }) => {
                s.checksum = match checksum {
                    Checksum::Verified(_) => "verified",
                    Checksum::Disabled => "disabled",
                    Checksum::Absent => "absent",
                    Checksum::NotVerified { .. } => "not_verified",
                }
                .to_string();
            }
            Some(_) => {}
        }
    }
    biggest.sort_by_key(|b| std::cmp::Reverse(b.bytes));
    biggest.truncate(BIGGEST);
    s.biggest = biggest;
    Ok(s)
}

/// How [`restore`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Keys that already exist on the target.
    pub conflict: Conflict,
    /// Only these databases of the file (default: all).
    pub dbs: Option<Vec<u32>>,
    /// The file's database to the target's (`{"0": 3}`); unlisted databases keep their number.
    pub db_map: std::collections::BTreeMap<String, u32>,
    /// Values bigger than this (serialized) go as element commands instead of one RESTORE.
    pub max_restore_bytes: usize,
    /// Keys the target cannot hold (hash field expiries before Redis 7.4 / Valkey 9, a module type the target
    /// does not load): `stop` (default) ends the restore naming the key, `skip` leaves them out, `convert`
    /// writes what has a lesser form (fields without their expiries); both list them in the report's `policy`.
    pub target_policy: TargetPolicy,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            conflict: Conflict::Panic,
            dbs: None,
            db_map: Default::default(),
            max_restore_bytes: 16 * 1024 * 1024,
            target_policy: TargetPolicy::Stop,
        }
    }
}

impl RestoreOptions {
    /// Sets the conflict policy.
    pub fn with_conflict(mut self, conflict: Conflict) -> RestoreOptions {
        self.conflict = conflict;
        self
    }

    /// Sets the target policy.
    pub fn with_target_policy(mut self, policy: TargetPolicy) -> RestoreOptions {
        self.target_policy = policy;
        self
    }

    /// The file's database `from` goes to the target's database `to`.
    pub fn with_db_map(mut self, from: u32, to: u32) -> RestoreOptions {
        self.db_map.insert(from.to_string(), to);
        self
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Keys written.
    pub keys_restored: u64,
    /// Keys left as they were (policy `skip`).
    pub keys_skipped: u64,
    /// Keys written as element commands (bigger than `max_restore_bytes`).
    pub keys_as_commands: u64,
    /// Keys re-encoded for a target that cannot load the file's encoding.
    pub keys_reencoded: u64,
    /// Keys of databases not selected.
    pub keys_filtered: u64,
    /// Bytes of commands written.
    pub bytes_written: u64,
    /// The keys the target policy (`skip`, `convert`) left out or wrote with a loss.
    #[serde(default)]
    pub policy: crate::PolicyStatus,
}

/// Restores the RDB file at `path` into `target` (standalone, cluster or sentinel-managed).
///
/// A thin caller of [`crate::SyncJob`] with [`Source::RdbFile`](crate::Source::RdbFile): the file goes
/// through the same full-copy code as the RDB of a sync (conversion for an older target, big values as
/// element commands, the target policy of [`RestoreOptions::target_policy`]). A truncated or corrupt file fails with an error naming the
/// file and the byte offset.
pub async fn restore(
    path: impl AsRef<Path>,
    target: &Target,
    options: RestoreOptions,
) -> Result<RestoreReport, Error> {
    let mut config = crate::SyncConfig::new(crate::Source::rdb_file(path.as_ref()), target.clone())
        .with_conflict(options.conflict);
    config.target_policy = options.target_policy;
    config.limits.max_restore_bytes = options.max_restore_bytes;
    if let Some(dbs) = &options.dbs {
        config.filter.allow_dbs.clone_from(dbs);
    }
    config.db_map = options.db_map;
    config.checkpoint.tag = "ferry-rdb-restore".into();
    let job = crate::SyncJob::new(config)?.start()?;
    let status = job.wait().await?;
    let r = job.replicator_status();
    Ok(RestoreReport {
        keys_restored: status.keys_copied,
        keys_skipped: status.keys_skipped,
        keys_as_commands: r.keys_as_commands,
        keys_reencoded: r.keys_reencoded,
        keys_filtered: status.keys_filtered,
        bytes_written: status.bytes_written,
        policy: status.policy,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts what it is given (the test only needs to know a value reached it).
    #[derive(Default)]
    struct Count(usize);

    impl Visitor for Count {
        fn string(&mut self, _: &[u8]) {
            self.0 += 1;
        }
        fn begin(&mut self, _: Shape, _: usize) {
            self.0 += 1;
        }
        fn element(&mut self, _: Elem<'_>) {
            self.0 += 1;
        }
        fn value(&mut self, _: Value) {
            self.0 += 1;
        }
    }

    /// The readable `.rdb` files of the shared fixture corpus.
    fn fixture_files() -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).expect("fixture dir readable") {
                let p = e.expect("fixture dir entry").path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rdb") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/rdb-fixtures"
            )),
            &mut files,
        );
        files.sort();
        assert!(
            files.len() >= 170,
            "fixture corpus missing: {} files",
            files.len()
        );
        files
    }

    #[test]
    fn next_visit_with_hands_over_the_entries_next_visit_returns() {
        let mut keys = 0;
        for path in fixture_files() {
            let (Ok(mut returned), Ok(mut handed)) = (entries(&path), entries(&path)) else {
                continue;
            };
            loop {
                let (mut a, mut b) = (Count::default(), Count::default());
                let one = returned.next_visit(&mut a);
                let other = handed.next_visit_with(&mut b, |e| e.clone());
                match (one, other) {
                    (None, None) => break,
                    (Some(Ok(x)), Some(Ok(y))) => {
                        assert_eq!(x, y, "{}", path.display());
                        assert_eq!(a.0, b.0, "{}: visits of {:?}", path.display(), x.key);
                        keys += 1;
                    }
                    (Some(Err(x)), Some(Err(y))) => {
                        assert_eq!(x.to_string(), y.to_string());
                        break;
                    }
                    (x, y) => panic!("{}: {x:?} against {y:?}", path.display()),
                }
            }
        }
        // The corpus holds 674 keys in the files read to their end or to their first error.
        assert!(keys >= 600, "only {keys} keys compared");
    }
}
