//! The full sync: the RDB that follows `+FULLRESYNC`, streamed through ferry-rdb's push parser straight into
//! the sink, one key at a time. Nothing is spooled and no key is held beyond its own value; a value bigger than
//! the configured bound arrives in chunks and goes as batches of element commands.
//!
//! # A full sync redone over this job's earlier writes
//!
//! When a job must copy again into a target it wrote before (killed during the RDB, or its checkpoint no longer
//! in the source's backlog), every key the source has is rewritten (`RESTORE ... REPLACE`), but a key the source
//! deleted in between stays on the target unless something deletes it. The target does not say which of its
//! keys this job wrote: other applications may write the same target, and ferry keeps no list of the keys it
//! wrote (recording each written key would cost the live phase a write per write). So the default is to delete
//! nothing: a key this job never wrote is never deleted, at the price of stale keys the source dropped while the
//! job was away. [`crate::Config::flush_target_on_resync`] empties the target first (`FLUSHALL`, as a Redis
//! replica does on a full resync) and is right only for a target this job owns alone; it is off by default
//! because it deletes keys other writers own. On a cluster target the checkpoints of the earlier sync are
//! deleted before the copy either way (they describe data being rewritten).

use bytes::Bytes;
use ferry_rdb::{Item, Parser, ParserOptions, ValueMode};
use tracing::{debug, warn};

use crate::error::{Error, KeyDisplay};
use crate::pipeline::convert::{
    expire_command, fit_entry, fit_value, restore_command, value_commands, ConflictPolicy,
    EvictionHint, PolicyReport, TargetFormat, TargetPolicy,
};
use crate::pipeline::dbmap::DbMap;
use crate::pipeline::filter::Filter;
use crate::sink::Sink;
use crate::source::Source;
use crate::status::StatusHandle;

/// The RDB type byte of a string value.
const RDB_TYPE_STRING: u8 = 0;
/// Strings up to this serialized size go in `MSET` batches.
const SMALL_STRING: usize = 1024;
/// Keys per `MSET` batch.
const STRINGS_PER_BATCH: usize = 128;

/// How the RDB is applied.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Keys that exist on the target.
    pub conflict: ConflictPolicy,
    /// Values bigger than this (serialized) go as element commands.
    pub max_restore_bytes: usize,
    /// What the target loads and knows (its RDB version, field expiries, module types).
    pub target: TargetFormat,
    /// What to do with a key the target cannot hold.
    pub policy: TargetPolicy,
}

impl Options {
    /// The target's RDB version as the command builders take it (they only compare it with 10).
    fn target_rdb(&self) -> u16 {
        u16::try_from(self.target.rdb_version).unwrap_or(u16::MAX)
    }
}

/// A big value being written in chunks.
struct BigKey {
    /// The source database (the policy report names keys by it).
    source_db: i64,
    /// The target database.
    db: i64,
    key: Bytes,
    expire_at_ms: Option<i64>,
    /// The key is filtered out or kept as it is on the target: chunks are dropped.
    drop: bool,
    /// Chunks written so far (a big string comes as pieces: `SET`, then `APPEND`s).
    chunks: u64,
}

/// Reads the whole RDB from `source` and writes every key that passes the filters to `sink`; what the target
/// cannot hold follows `opts.policy` and is listed in `report`.
pub(crate) async fn run(
    source: &mut Source,
    sink: &mut Sink,
    filter: &Filter,
    dbmap: &DbMap,
    opts: &Options,
    report: &mut PolicyReport,
    status: &StatusHandle,
) -> Result<(), Error> {
    let mut parser = Parser::new(ParserOptions {
        mode: ValueMode::Raw,
        verify_checksum: true,
        big_value_bytes: Some(opts.max_restore_bytes),
        ..ParserOptions::default()
    });
    let mut source_version: u16 = 0;
    let mut expected = 0u64;
    let mut done = 0u64;
    let mut converted = 0u64;
    let mut big_keys = 0u64;
    let mut big: Option<BigKey> = None;
    let mut strings = StringBatch::default();
    let mut last_report = 0u64;
    let started = std::time::Instant::now();
    while let Some(chunk) = source.read_rdb().await? {
        parser.feed(&chunk);
        while let Some(item) = parser.next_item().map_err(rdb_error)? {
            match item {
                Item::Header { version, .. } => {
                    source_version = u16::try_from(version).unwrap_or(u16::MAX);
                    debug!(
                        source_version,
                        target_version = opts.target.rdb_version,
                        "RDB header"
                    );
                }
                Item::ResizeDb { db_size, .. } => {
                    expected += db_size;
                    status.update(|s| s.keys_expected = Some(expected));
                }
                Item::Function { code } => {
                    if opts.target.rdb_version >= 10 {
                        let argv = [
                            Bytes::from_static(b"FUNCTION"),
                            Bytes::from_static(b"LOAD"),
                            Bytes::from_static(b"REPLACE"),
                            code,
                        ];
                        sink.write_plain(0, &argv).await?;
                    } else {
                        warn!(
                            "the source has a function library the target (before 7.0) cannot load"
                        );
                    }
                }
                Item::Entry(entry) => {
                    let db = entry.db as i64;
                    if !filter.db_passes(db) || !filter.key_passes(&entry.key) {
                        continue;
                    }
                    let tdb = dbmap.target(db);
                    let hint = match (entry.idle_secs, entry.freq) {
                        (Some(s), _) => Some(EvictionHint::IdleSeconds(s)),
                        (None, Some(f)) => Some(EvictionHint::Frequency(f)),
                        _ => None,
                    };
                    let raw = entry
                        .raw
                        .ok_or_else(|| Error::Rdb("the parser gave no raw value".into()))?;
                    if sink.batches_strings() && entry.expire_at_ms.is_none() && hint.is_none() {
                        // A small plain string: batched into one MSET/MSETNX.
                        if let Some(value) = small_string(&raw)? {
                            strings.push(sink, tdb, entry.key, value).await?;
                            done += 1;
                            continue;
                        }
                    }
                    let Some(payload) = fit_entry(
                        db,
                        &entry.key,
                        &raw,
                        u32::from(source_version),
                        &opts.target,
                        opts.policy,
                        report,
                    )?
                    else {
                        continue;
                    };
                    if !opts.target.loads(u32::from(source_version)) {
                        converted += 1;
                    }
                    let replace = opts.conflict == ConflictPolicy::Rewrite;
                    let argv = restore_command(
                        entry.key.clone(),
                        payload,
                        entry.expire_at_ms,
                        replace,
                        hint,
                    );
                    sink.restore(tdb, entry.key, &argv).await?;
                    done += 1;
                }
                Item::EntryStart(entry) => {
                    let db = entry.db as i64;
                    let tdb = dbmap.target(db);
                    let mut drop = !filter.db_passes(db) || !filter.key_passes(&entry.key);
                    if !drop {
                        debug!(key = %KeyDisplay(entry.key.to_vec()), bytes = entry.serialized_len,
                               "big value: copying it with element commands");
                        drop = !prepare_key(sink, tdb, &entry.key, opts.conflict).await?;
                    }
                    big = Some(BigKey {
                        source_db: db,
                        db: tdb,
                        key: entry.key,
                        expire_at_ms: entry.expire_at_ms,
                        drop,
                        chunks: 0,
                    });
                }
                Item::ValueChunk(mut value) => {
                    let b = big
                        .as_mut()
                        .ok_or_else(|| Error::Rdb("value chunk outside a big value".into()))?;
                    if !b.drop
                        && !fit_value(
                            b.source_db,
                            &b.key,
                            &mut value,
                            &opts.target,
                            opts.policy,
                            report,
                        )?
                    {
                        // Left out by the policy: what earlier chunks wrote goes too.
                        b.drop = true;
                        if b.chunks > 0 {
                            sink.write_plain(b.db, &[Bytes::from_static(b"DEL"), b.key.clone()])
                                .await?;
                        }
                    }
                    if !b.drop {
                        match &value {
                            ferry_rdb::Value::String(piece) if b.chunks > 0 => {
                                let argv =
                                    [Bytes::from_static(b"APPEND"), b.key.clone(), piece.clone()];
                                sink.write_plain(b.db, &argv).await?;
                            }
                            _ => write_value(sink, b.db, &b.key, &value, opts.target_rdb()).await?,
                        }
                        b.chunks += 1;
                    }
                }
                Item::EntryEnd => {
                    let b = big
                        .take()
                        .ok_or_else(|| Error::Rdb("end of a big value never started".into()))?;
                    if !b.drop {
                        if let Some(at) = b.expire_at_ms {
                            sink.write_plain(b.db, &expire_command(&b.key, at)).await?;
                        }
                        big_keys += 1;
                        done += 1;
                    }
                }
                Item::ModuleAux { name, .. } => {
                    warn!(module = %name, "module auxiliary data in the RDB is not copied");
                }
                _ => {}
            }
        }
        if done - last_report >= 1000 {
            last_report = done;
            let (rdb_bytes, c) = (source.rdb_bytes(), sink.counters());
            let keys_per_sec = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            status.update(|s| {
                s.keys_done = done;
                s.ops_per_sec = keys_per_sec;
                s.bytes_written = c.bytes_written;
                s.bytes_read = rdb_bytes;
                s.keys_copied = c.keys_restored + big_keys;
                s.set_policy(report);
            });
        }
    }
    parser.finish().map_err(rdb_error)?;
    strings.finish(sink).await?;
    debug!(
        keys = done,
        reencoded = converted,
        big_keys,
        "RDB read to its end"
    );
    let (rdb_bytes, c) = (source.rdb_bytes(), sink.counters());
    status.update(|s| {
        s.keys_done = done;
        s.bytes_read = rdb_bytes;
        s.keys_copied = c.keys_restored + big_keys;
        s.keys_as_commands += big_keys;
        s.keys_reencoded += converted;
        s.keys_skipped = c.keys_skipped;
        s.set_policy(report);
    });
    Ok(())
}

/// Small plain strings of one database waiting for their `MSET`/`MSETNX`.
#[derive(Default)]
struct StringBatch {
    db: Option<i64>,
    pairs: Vec<(Bytes, Bytes)>,
}

impl StringBatch {
    /// Adds a key; first writes the batch when it is full or of another database.
    async fn push(
        &mut self,
        sink: &mut Sink,
        db: i64,
        key: Bytes,
        value: Bytes,
    ) -> Result<(), Error> {
        if self.db != Some(db) || self.pairs.len() >= STRINGS_PER_BATCH {
            let batch_db = self.db.unwrap_or(db);
            sink.set_strings(batch_db, std::mem::take(&mut self.pairs))
                .await?;
        }
        self.db = Some(db);
        self.pairs.push((key, value));
        Ok(())
    }

    /// Writes what is left.
    async fn finish(self, sink: &mut Sink) -> Result<(), Error> {
        match self.db {
            Some(db) => sink.set_strings(db, self.pairs).await,
            None => Ok(()),
        }
    }
}

/// The value of a raw RDB entry that is a plain string small enough for a string batch.
fn small_string(raw: &[u8]) -> Result<Option<Bytes>, Error> {
    if raw.first() != Some(&RDB_TYPE_STRING) || raw.len() > SMALL_STRING {
        return Ok(None);
    }
    match ferry_rdb::decode_value(raw, false).map_err(rdb_error)? {
        ferry_rdb::Value::String(value) => Ok(Some(value)),
        _ => Ok(None),
    }
}

/// Before a key is built with element commands: returns false when it must be left alone (policy `skip` and
/// the key exists); policy `panic` stops on an existing key; `rewrite` deletes it.
async fn prepare_key(
    sink: &mut Sink,
    db: i64,
    key: &Bytes,
    conflict: ConflictPolicy,
) -> Result<bool, Error> {
    match conflict {
        ConflictPolicy::Rewrite => {
            sink.write_plain(db, &[Bytes::from_static(b"DEL"), key.clone()])
                .await?;
            Ok(true)
        }
        ConflictPolicy::Skip | ConflictPolicy::Panic => {
            if !sink.exists(db, key).await? {
                return Ok(true);
            }
            if conflict == ConflictPolicy::Skip {
                sink.count_skipped();
                Ok(false)
            } else {
                Err(Error::Conflict {
                    key: KeyDisplay(key.to_vec()),
                })
            }
        }
    }
}

async fn write_value(
    sink: &mut Sink,
    db: i64,
    key: &Bytes,
    value: &ferry_rdb::Value,
    target_rdb: u16,
) -> Result<(), Error> {
    let mut commands = Vec::new();
    value_commands(key, value, target_rdb, &mut |c| commands.push(c))?;
    for argv in commands {
        sink.write_plain(db, &argv).await?;
    }
    Ok(())
}

fn rdb_error(e: ferry_rdb::Error) -> Error {
    Error::Rdb(e.to_string())
}
