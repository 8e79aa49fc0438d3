//! RDB files: iterate their keys, summarize them, restore them into a target.
//!
//! The value model and the streaming parser are ferry-rdb's, re-exported here. [`restore`] writes through the
//! replicator's sinks (the same pipelined, windowed writers and `RESTORE ... ABSTTL` commands a sync uses), so
//! a file and a live source reach a target the same way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use ferry_rdb::{
    decode_dump, encode_dump, json, type_name_of, Checksum, Entry, HashField, Item, Parser,
    ParserOptions, Reader, Stream, StreamEntry, StreamId, Value, ValueMode, Writer,
};

use crate::config::{Conflict, Target};
use crate::error::{Error, ErrorKind};

fn open(path: &Path) -> Result<BufReader<File>, Error> {
    let file = File::open(path)
        .map_err(|e| Error::data(format!("cannot open {}: {e}", path.display())))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

/// The keys of an RDB file, in file order, each with its decoded value. Memory holds one key at a time.
pub struct Entries {
    reader: Reader<BufReader<File>>,
    path: PathBuf,
    done: bool,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("path", &self.path).finish()
    }
}

impl Iterator for Entries {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.reader.next_item() {
                Ok(Some(Item::Entry(e))) => return Some(Ok(e)),
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
    /// Values bigger than this (serialized) go as element commands instead of one RESTORE.
    pub max_restore_bytes: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            conflict: Conflict::Panic,
            dbs: None,
            max_restore_bytes: 16 * 1024 * 1024,
        }
    }
}

impl RestoreOptions {
    /// Sets the conflict policy.
    pub fn with_conflict(mut self, conflict: Conflict) -> RestoreOptions {
        self.conflict = conflict;
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
}

/// The checkpoint tag of restores: its keys are removed when the restore ends.
const RESTORE_TAG: &str = "ferry-rdb-restore";

/// Restores the RDB file at `path` into `target` (standalone or cluster).
pub async fn restore(
    path: impl AsRef<Path>,
    target: &Target,
    options: RestoreOptions,
) -> Result<RestoreReport, Error> {
    use ferry_replicator::pipeline::convert::{
        expire_command, restore_command, value_commands, ConflictPolicy, EvictionHint,
    };
    use ferry_replicator::sink::{cluster::ClusterSink, standalone::StandaloneSink, Sink};
    use tokio::io::AsyncReadExt;

    let path = path.as_ref();
    let (connect, cluster) = target.resolve()?;
    let sink_opts = ferry_replicator::sink::SinkOptions {
        checkpoint: false,
        checkpoint_tag: RESTORE_TAG.into(),
        ..Default::default()
    };
    let mut masters = Vec::new();
    let mut sink = if cluster {
        let mut conn = ferry_resp::Connection::connect(&connect).await?;
        let reply = conn.call(&["COMMAND"]).await?;
        let table = ferry_topology::CommandTable::from_command_reply(&reply).map_err(|e| {
            Error::new(
                ErrorKind::TargetRefused,
                format!("COMMAND of the target: {e}"),
            )
        })?;
        let c = ClusterSink::connect(&connect, sink_opts, Arc::new(table)).await?;
        masters = c.masters().to_vec();
        Sink::Cluster(c)
    } else {
        Sink::Standalone(Box::new(
            StandaloneSink::connect(&connect, sink_opts).await?,
        ))
    };
    let conflict = match options.conflict {
        Conflict::Panic => ConflictPolicy::Panic,
        Conflict::Rewrite => ConflictPolicy::Rewrite,
        Conflict::Skip => ConflictPolicy::Skip,
    };
    sink.begin_full_sync(conflict, false).await?;
    let target = sink.target_format().await?;
    let target_rdb = target.rdb_version;
    // What the target cannot hold stops the restore with the key's name (the sync job's default policy).
    let mut fitted = ferry_replicator::PolicyReport::default();
    let mut parser = Parser::new(ParserOptions {
        mode: ValueMode::Raw,
        big_value_bytes: Some(options.max_restore_bytes),
        ..Default::default()
    });
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::data(format!("cannot open {}: {e}", path.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut report = RestoreReport::default();
    let mut version: u16 = 0;
    // A big value being written by elements: (db, key, expiry, skip it).
    let mut big: Option<(i64, Bytes, Option<i64>, bool, u64)> = None;
    let wanted = |db: u64| {
        options
            .dbs
            .as_ref()
            .map_or(true, |d| d.iter().any(|&x| u64::from(x) == db))
    };
    let rdb_err = |e: ferry_rdb::Error| Error::data(format!("{}: {e}", path.display()));
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Error::data(format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        parser.feed(&buf[..n]);
        while let Some(item) = parser.next_item().map_err(rdb_err)? {
            match item {
                Item::Header { version: v, .. } => version = u16::try_from(v).unwrap_or(u16::MAX),
                Item::Function { code } if target_rdb >= 10 => {
                    let argv = [
                        Bytes::from_static(b"FUNCTION"),
                        Bytes::from_static(b"LOAD"),
                        Bytes::from_static(b"REPLACE"),
                        code,
                    ];
                    sink.write_plain(0, &argv).await?;
                }
                Item::Function { .. } => {
                    tracing::warn!(
                        "the file has a function library the target (before 7.0) cannot load"
                    );
                }
                Item::Entry(e) => {
                    if !wanted(e.db) {
                        report.keys_filtered += 1;
                        continue;
                    }
                    let raw = e
                        .raw
                        .ok_or_else(|| Error::data("the parser gave no raw value"))?;
                    let source_version = u32::from(version);
                    if !target.loads(source_version) {
                        report.keys_reencoded += 1;
                    }
                    let Some(payload) = ferry_replicator::pipeline::convert::fit_entry(
                        e.db as i64,
                        &e.key,
                        &raw,
                        source_version,
                        &target,
                        ferry_replicator::TargetPolicy::Stop,
                        &mut fitted,
                    )?
                    else {
                        continue;
                    };
                    let hint = match (e.idle_secs, e.freq) {
                        (Some(s), _) => Some(EvictionHint::IdleSeconds(s)),
                        (None, Some(f)) => Some(EvictionHint::Frequency(f)),
                        _ => None,
                    };
                    let argv = restore_command(
                        e.key.clone(),
                        payload,
                        e.expire_at_ms,
                        conflict == ConflictPolicy::Rewrite,
                        hint,
                    );
                    sink.restore(e.db as i64, e.key, &argv).await?;
                }
                Item::EntryStart(e) => {
                    let db = e.db as i64;
                    let mut skip = !wanted(e.db);
                    if skip {
                        report.keys_filtered += 1;
                    } else if conflict == ConflictPolicy::Rewrite {
                        sink.write_plain(db, &[Bytes::from_static(b"DEL"), e.key.clone()])
                            .await?;
                    } else if sink.exists(db, &e.key).await? {
                        if conflict == ConflictPolicy::Panic {
                            return Err(Error::new(
                                ErrorKind::TargetRefused,
                                format!("key {} already exists on the target (conflict policy is panic)", crate::verify::show_key(&e.key)),
                            ));
                        }
                        report.keys_skipped += 1;
                        skip = true;
                    }
                    big = Some((db, e.key, e.expire_at_ms, skip, 0));
                }
                Item::ValueChunk(value) => {
                    let Some((db, key, _, skip, chunks)) = big.as_mut() else {
                        return Err(Error::data("a value chunk outside a big value"));
                    };
                    if *skip {
                        continue;
                    }
                    let mut cmds = Vec::new();
                    match &value {
                        Value::String(piece) if *chunks > 0 => cmds.push(vec![
                            Bytes::from_static(b"APPEND"),
                            key.clone(),
                            piece.clone(),
                        ]),
                        _ => value_commands(
                            key,
                            &value,
                            u16::try_from(target_rdb).unwrap_or(u16::MAX),
                            &mut |c| cmds.push(c),
                        )?,
                    }
                    for argv in cmds {
                        sink.write_plain(*db, &argv).await?;
                    }
                    *chunks += 1;
                }
                Item::EntryEnd => {
                    let Some((db, key, expire, skip, _)) = big.take() else {
                        return Err(Error::data("the end of a big value that never started"));
                    };
                    if !skip {
                        if let Some(at) = expire {
                            sink.write_plain(db, &expire_command(&key, at)).await?;
                        }
                        report.keys_as_commands += 1;
                    }
                }
                _ => {}
            }
        }
    }
    parser.finish().map_err(rdb_err)?;
    sink.finish_full_sync("", 0).await?;
    let c = sink.counters();
    report.keys_restored = c.keys_restored + report.keys_as_commands;
    report.keys_skipped += c.keys_skipped;
    report.bytes_written = c.bytes_written;
    drop(sink);
    if cluster {
        remove_restore_checkpoints(&connect, &masters).await?;
    }
    Ok(report)
}

/// A cluster sink always writes per-master checkpoint keys; a restore leaves none behind.
async fn remove_restore_checkpoints(
    seed: &ferry_resp::ConnectOptions,
    masters: &[String],
) -> Result<(), Error> {
    let pattern = format!(
        "{}{{{RESTORE_TAG}*",
        ferry_replicator::checkpoint::KEY_PREFIX
    );
    for addr in masters {
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let mut o = seed.clone();
        o.host = host.to_string();
        o.port = port.parse().unwrap_or(o.port);
        let mut conn = ferry_resp::Connection::connect(&o).await?;
        let mut cursor = b"0".to_vec();
        loop {
            let reply = conn
                .call(&[
                    b"SCAN".as_slice(),
                    &cursor,
                    b"MATCH",
                    pattern.as_bytes(),
                    b"COUNT",
                    b"1000",
                ])
                .await?;
            let ferry_resp::Frame::Array(parts) = reply else {
                break;
            };
            let mut parts = parts.into_iter();
            let next = parts
                .next()
                .and_then(|f| f.as_bytes().map(|b| b.to_vec()))
                .unwrap_or_else(|| b"0".to_vec());
            if let Some(ferry_resp::Frame::Array(keys)) = parts.next() {
                for k in keys {
                    if let Some(k) = k.as_bytes() {
                        conn.call(&[b"DEL".as_slice(), k]).await?;
                    }
                }
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
