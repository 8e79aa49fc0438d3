//! The full sync: the RDB that follows `+FULLRESYNC`, streamed through ferry-rdb's push parser straight into
//! the sink, one key at a time. Nothing is spooled and no key is held beyond its own value; a value bigger than
//! the configured bound arrives in chunks and goes as batches of element commands.
//!
//! # A full sync redone over this job's earlier writes
//!
//! When a job must copy again into a target it wrote before (stopped or killed during the RDB, its checkpoint
//! no longer in the source's backlog after a restart or a dropped link, a scan or file copy started again in the
//! same process),
//! every key the source has is rewritten (`RESTORE ... REPLACE`), and a key the source deleted in between must
//! not stay behind. The default is exact and deletes only this job's keys ([`crate::redo`]):
//!
//! - Before the first key of a job's first copy, ferry records in the target whether the keys the job may
//!   write (its databases and filters, never ferry's own `ferry:checkpoint:`/`ferry:state:`/`ferry:lease:`
//!   keys) were all absent: then the target is *owned* by the job (`ferry:checkpoint:{<tag>}:owner`, next to
//!   the checkpoint; in memory for a job without checkpoints). Such keys another writer adds later cannot be
//!   told from the job's: a target shared with other writers keeps them apart by database or key filters.
//! - A redo over an owned target records a 128-bit hash of each key it reads from the source (about 16 to
//!   32 bytes per key while the copy runs, then freed) and, once the whole RDB is applied and before the
//!   copy's checkpoint commits, scans those databases of the target (every master of a cluster) and deletes
//!   each key of the job's filters the copy did not read. A crash during the sweep leaves the `fullsync`
//!   marker, so the next session copies and sweeps again.
//! - A redo over a target that held such keys before the first copy deletes nothing (a key this job never
//!   wrote is never deleted, and the target does not say who wrote which key) and logs one warning
//!   (`status.redo_unswept` counts them): keys deleted on the source meanwhile may remain.
//!   [`crate::Config::flush_target_on_resync`] (`FLUSHALL` first, as a Redis replica does) is the explicit
//!   choice for a target this job owns alone; `ferry verify` shows what differs.
//! - A shard of a cluster source sweeps only the slots its master serves and is not migrating when the copy
//!   is applied (the other shards write theirs at the same time); the job's first copy decides the ownership
//!   for all its shards ([`crate::redo`]).
//!
//! Why not flush by default: `FLUSHALL` deletes keys of every other writer of the target, and a list of
//! written keys kept in the target would cost the live phase a write per write. On a cluster target the
//! checkpoints of the earlier sync are deleted before the copy either way (they describe data being
//! rewritten).

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
use crate::redo::CopiedKeys;
use crate::sink::Sink;
use crate::source::Source;
use crate::status::StatusHandle;

/// The RDB type byte of a string value.
const RDB_TYPE_STRING: u8 = 0;
/// Strings up to this serialized size go in `MSET` batches.
const SMALL_STRING: usize = 1024;

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
    /// Small plain strings go in `MSET` batches (per slot on a cluster target). Off where each key must reach the
    /// target before the next read (the live phase of a scan source).
    pub batch_strings: bool,
    /// Records every source key read that passes the filters (the sweep of a redone copy keeps
    /// exactly these, see [`crate::redo`]).
    pub record_keys: bool,
}

/// What a full copy did.
#[derive(Debug, Default)]
pub(crate) struct Copied {
    /// Keys written as element commands (the sink does not count them as keys).
    pub big_keys: u64,
    /// The source keys read, when [`Options::record_keys`].
    pub keys: CopiedKeys,
    /// The replication id and offset the RDB says it was made at (its `repl-id` and `repl-offset` AUX fields),
    /// when it has both.
    pub position: Option<(String, u64)>,
}

impl Options {
    /// The target's RDB version as the command builders take it (they only compare it with 10).
    fn target_rdb(&self) -> u16 {
        u16::try_from(self.target.rdb_version).unwrap_or(u16::MAX)
    }
}

/// Where the bytes of an RDB come from: the `PSYNC` link ([`Source`]) or a file
/// ([`crate::source::file::RdbFile`]). The full sync reads any of them the same way.
pub(crate) trait RdbInput {
    /// The next chunk of the RDB, or `None` once it is complete.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error>;
    /// RDB bytes read so far.
    fn bytes_read(&self) -> u64;
    /// What the input is, for errors ("the source's RDB", "file /x/dump.rdb").
    fn describe(&self) -> String;
}

impl RdbInput for Source {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        self.read_rdb().await
    }

    fn bytes_read(&self) -> u64 {
        self.rdb_bytes()
    }

    fn describe(&self) -> String {
        "the source's RDB".into()
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

/// Reads the whole RDB from `input` and writes every key that passes the filters to `sink`; what the target
/// cannot hold follows `opts.policy` and is listed in `report`. An error of the RDB names the input and the byte
/// offset where reading stopped.
pub(crate) async fn run(
    input: &mut impl RdbInput,
    sink: &mut Sink,
    filter: &Filter,
    dbmap: &DbMap,
    opts: &Options,
    report: &mut PolicyReport,
    status: &StatusHandle,
) -> Result<Copied, Error> {
    let (copied, _) = run_to(input, false, sink, filter, dbmap, opts, report, status).await?;
    Ok(copied)
}

/// [`run`] for an input whose RDB is followed by other data (an AOF preamble): reading stops at the RDB's end
/// and what was read past it is returned with the count of big keys.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_prefix(
    input: &mut impl RdbInput,
    sink: &mut Sink,
    filter: &Filter,
    dbmap: &DbMap,
    opts: &Options,
    report: &mut PolicyReport,
    status: &StatusHandle,
) -> Result<(Copied, Bytes), Error> {
    run_to(input, true, sink, filter, dbmap, opts, report, status).await
}

#[allow(clippy::too_many_arguments)]
async fn run_to(
    input: &mut impl RdbInput,
    stop_at_end: bool,
    sink: &mut Sink,
    filter: &Filter,
    dbmap: &DbMap,
    opts: &Options,
    report: &mut PolicyReport,
    status: &StatusHandle,
) -> Result<(Copied, Bytes), Error> {
    let mut parser = Parser::new(ParserOptions {
        mode: ValueMode::Raw,
        verify_checksum: true,
        big_value_bytes: Some(opts.max_restore_bytes),
        ..ParserOptions::default()
    });
    let mut applier = Applier::new(filter, dbmap, opts, report, status);
    let located = |e: ferry_rdb::Error, at: u64, input: &dyn Fn() -> String| {
        let at = e.offset().unwrap_or(at);
        Error::Rdb(format!("{} (at byte {at}): {e}", input()))
    };
    while let Some(chunk) = input.next_chunk().await? {
        parser.feed(&chunk);
        loop {
            let item = match parser.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => return Err(located(e, parser.offset(), &|| input.describe())),
            };
            match applier.gathered(sink, &item)? {
                Some(true) => sink.send_gathered().await?,
                Some(false) => {}
                None => applier.item(sink, item).await?,
            }
        }
        applier.progress(sink, input.bytes_read(), false);
        if stop_at_end && parser.is_done() {
            break;
        }
    }
    parser
        .finish()
        .map_err(|e| located(e, parser.offset(), &|| input.describe()))?;
    let rest = Bytes::copy_from_slice(parser.remaining());
    Ok((applier.finish(sink, input.bytes_read()).await?, rest))
}

/// Writes the keys of a full copy to the sink: filters, database map, target policy, conversion, small
/// strings in `MSET` batches, big values as element commands. The full sync feeds it the items of an RDB; the
/// scan source feeds it `DUMP` payloads ([`Applier::dumped`]).
pub(crate) struct Applier<'a> {
    filter: &'a Filter,
    dbmap: &'a DbMap,
    opts: &'a Options,
    report: &'a mut PolicyReport,
    status: &'a StatusHandle,
    /// The RDB version of the values (the file's header; each DUMP payload's footer).
    source_version: u16,
    expected: u64,
    done: u64,
    filtered: u64,
    converted: u64,
    big_keys: u64,
    /// Lists, sets, sorted sets and hashes without an element, left out (see [`Applier::key`]).
    empty: u64,
    big: Option<BigKey>,
    copied: CopiedKeys,
    last_report: u64,
    started: std::time::Instant,
    repl_id: Option<String>,
    repl_offset: Option<u64>,
}

impl<'a> Applier<'a> {
    /// An applier of one full copy.
    pub(crate) fn new(
        filter: &'a Filter,
        dbmap: &'a DbMap,
        opts: &'a Options,
        report: &'a mut PolicyReport,
        status: &'a StatusHandle,
    ) -> Applier<'a> {
        Applier {
            filter,
            dbmap,
            opts,
            report,
            status,
            source_version: 0,
            expected: 0,
            done: 0,
            filtered: 0,
            converted: 0,
            big_keys: 0,
            empty: 0,
            big: None,
            copied: CopiedKeys::default(),
            last_report: 0,
            started: std::time::Instant::now(),
            repl_id: None,
            repl_offset: None,
        }
    }

    /// Adds to the keys the copy expects (the status' `keys_expected`).
    pub(crate) fn expect(&mut self, keys: u64) {
        self.expected += keys;
        let expected = self.expected;
        self.status.update(|s| s.keys_expected = Some(expected));
    }

    /// The full copy's hot path, without an await (an async call per key moves its future's state, several
    /// hundred bytes, and the item): a small plain string without expiry or eviction hint is filtered and
    /// gathered here. Any other item gives `None`, having changed nothing, and goes to [`Applier::item`].
    /// `Some(true)`: the sink completed a group, and [`Sink::send_gathered`] must run before the next item.
    fn gathered(&mut self, sink: &mut Sink, item: &Item) -> Result<Option<bool>, Error> {
        let Item::Entry(entry) = item else {
            return Ok(None);
        };
        let Some(raw) = &entry.raw else {
            return Ok(None);
        };
        if !self.opts.batch_strings
            || entry.expire_at_ms.is_some()
            || entry.idle_secs.is_some()
            || entry.freq.is_some()
            || raw.first() != Some(&RDB_TYPE_STRING)
            || raw.len() > SMALL_STRING
        {
            return Ok(None);
        }
        let db = entry.db as i64;
        if !self.filter.db_passes(db) || !self.filter.key_passes(&entry.key) {
            self.filtered += 1;
            return Ok(Some(false));
        }
        let Some(value) = small_string(raw)? else {
            return Ok(None);
        };
        let tdb = self.dbmap.target(db);
        if self.opts.record_keys {
            self.copied.insert(tdb, &entry.key);
        }
        let send = sink.gather_string(tdb, &entry.key, &value)?;
        self.done += 1;
        Ok(Some(send))
    }

    /// Applies one item of an RDB.
    async fn item(&mut self, sink: &mut Sink, item: Item) -> Result<(), Error> {
        match item {
            Item::Header { version, .. } => {
                self.source_version = u16::try_from(version).unwrap_or(u16::MAX);
                debug!(
                    source_version = self.source_version,
                    target_version = self.opts.target.rdb_version,
                    "RDB header"
                );
            }
            Item::ResizeDb { db_size, .. } => self.expect(db_size),
            Item::Function { code } => self.function(sink, code).await?,
            Item::Entry(entry) => {
                let hint = match (entry.idle_secs, entry.freq) {
                    (Some(s), _) => Some(EvictionHint::IdleSeconds(s)),
                    (None, Some(f)) => Some(EvictionHint::Frequency(f)),
                    _ => None,
                };
                let raw = entry
                    .raw
                    .ok_or_else(|| Error::Rdb("the parser gave no raw value".into()))?;
                self.key(
                    sink,
                    entry.db as i64,
                    entry.key,
                    raw,
                    entry.expire_at_ms,
                    hint,
                )
                .await?;
            }
            Item::EntryStart(entry) => {
                self.start_big(
                    sink,
                    entry.db as i64,
                    entry.key,
                    entry.expire_at_ms,
                    entry.serialized_len,
                )
                .await?;
            }
            Item::ValueChunk(value) => self.chunk(sink, value).await?,
            Item::EntryEnd => self.end_big(sink).await?,
            Item::ModuleAux { name, .. } => {
                warn!(module = %name, "module auxiliary data in the RDB is not copied");
            }
            Item::Aux { key, value } => match &key[..] {
                b"repl-id" => {
                    self.repl_id = std::str::from_utf8(&value)
                        .ok()
                        .filter(|id| crate::checkpoint::is_replid(id))
                        .map(str::to_string);
                }
                b"repl-offset" => {
                    self.repl_offset = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|o| o.parse().ok());
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// A function library (`FUNCTION LOAD REPLACE`; a target before 7.0 has no functions: a warning).
    pub(crate) async fn function(&mut self, sink: &mut Sink, code: Bytes) -> Result<(), Error> {
        if self.opts.target.rdb_version >= 10 {
            let argv = [
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"LOAD"),
                Bytes::from_static(b"REPLACE"),
                code,
            ];
            sink.write_plain(0, &argv).await
        } else {
            warn!("the source has a function library the target (before 7.0) cannot load");
            Ok(())
        }
    }

    /// The start of a big value, copied with element commands.
    async fn start_big(
        &mut self,
        sink: &mut Sink,
        db: i64,
        key: Bytes,
        expire_at_ms: Option<i64>,
        serialized_len: u64,
    ) -> Result<(), Error> {
        let tdb = self.dbmap.target(db);
        let passes = self.filter.db_passes(db) && self.filter.key_passes(&key);
        let mut drop = !passes;
        if passes && self.opts.record_keys {
            self.copied.insert(tdb, &key);
        }
        if passes {
            debug!(key = %KeyDisplay(key.to_vec()), bytes = serialized_len,
                   "big value: copying it with element commands");
            drop = !prepare_key(sink, tdb, &key, self.opts.conflict).await?;
        } else {
            self.filtered += 1;
        }
        self.big = Some(BigKey {
            source_db: db,
            db: tdb,
            key,
            expire_at_ms,
            drop,
            chunks: 0,
        });
        Ok(())
    }

    /// The end of a big value: its expiry.
    async fn end_big(&mut self, sink: &mut Sink) -> Result<(), Error> {
        let b = self
            .big
            .take()
            .ok_or_else(|| Error::Rdb("end of a big value never started".into()))?;
        if !b.drop {
            if let Some(at) = b.expire_at_ms {
                sink.write_plain(b.db, &expire_command(&b.key, at)).await?;
            }
            self.big_keys += 1;
            self.done += 1;
        }
        Ok(())
    }

    /// One chunk of a big value.
    async fn chunk(&mut self, sink: &mut Sink, mut value: ferry_rdb::Value) -> Result<(), Error> {
        let opts = self.opts;
        let b = self
            .big
            .as_mut()
            .ok_or_else(|| Error::Rdb("value chunk outside a big value".into()))?;
        if !b.drop
            && !fit_value(
                b.source_db,
                &b.key,
                &mut value,
                &opts.target,
                opts.policy,
                self.report,
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
                    let argv = [Bytes::from_static(b"APPEND"), b.key.clone(), piece.clone()];
                    sink.write_plain(b.db, &argv).await?;
                }
                _ => write_value(sink, b.db, &b.key, &value, opts.target_rdb()).await?,
            }
            b.chunks += 1;
        }
        Ok(())
    }

    /// Applies a key read with `DUMP` (the scan source): `payload` as `DUMP` returned it, `expire_at_ms` the
    /// absolute expiry. A value bigger than `max_restore_bytes` goes as element commands.
    pub(crate) async fn dumped(
        &mut self,
        sink: &mut Sink,
        db: i64,
        key: Bytes,
        payload: &[u8],
        expire_at_ms: Option<i64>,
    ) -> Result<(), Error> {
        let parts = ferry_rdb::split_dump(payload)
            .map_err(|e| Error::Rdb(format!("DUMP of key {}: {e}", KeyDisplay(key.to_vec()))))?;
        self.source_version = parts.rdb_version;
        let raw = Bytes::copy_from_slice(parts.serialized);
        if raw.len() <= self.opts.max_restore_bytes {
            return self.key(sink, db, key, raw, expire_at_ms, None).await;
        }
        // A big value: decoded whole (DUMP returned it whole), written as element commands.
        let valkey = ferry_rdb::is_valkey_version(u32::from(self.source_version));
        let value = ferry_rdb::decode_value(&raw, valkey)
            .map_err(|e| Error::Rdb(format!("DUMP of key {}: {e}", KeyDisplay(key.to_vec()))))?;
        self.start_big(sink, db, key, expire_at_ms, raw.len() as u64)
            .await?;
        self.chunk(sink, value).await?;
        self.end_big(sink).await
    }

    /// One key with its raw RDB value (type byte and encoding).
    async fn key(
        &mut self,
        sink: &mut Sink,
        db: i64,
        key: Bytes,
        raw: Bytes,
        expire_at_ms: Option<i64>,
        hint: Option<EvictionHint>,
    ) -> Result<(), Error> {
        let opts = self.opts;
        if !self.filter.db_passes(db) || !self.filter.key_passes(&key) {
            self.filtered += 1;
            return Ok(());
        }
        if raw.first() != Some(&RDB_TYPE_STRING) && ferry_rdb::is_empty_collection(&raw) {
            // A collection without an element is no key to Redis: its loader skips one found in an RDB file
            // ("empty keys skipped") and `RESTORE` refuses it. Left out the same way; nothing is lost.
            self.empty += 1;
            if self.empty <= 10 {
                warn!(key = %KeyDisplay(key.to_vec()), db, "the RDB holds an empty {} under this key: left out, as \
                      Redis's loader leaves it out", ferry_rdb::type_name_of(raw[0]));
            }
            return Ok(());
        }
        let tdb = self.dbmap.target(db);
        if opts.record_keys {
            self.copied.insert(tdb, &key);
        }
        if opts.batch_strings && expire_at_ms.is_none() && hint.is_none() {
            // A small plain string: batched into one MSET/MSETNX.
            if let Some(value) = small_string(&raw)? {
                sink.push_string(tdb, &key, &value).await?;
                self.done += 1;
                return Ok(());
            }
        }
        let source_version = u32::from(self.source_version);
        let Some(payload) = fit_entry(
            db,
            &key,
            &raw,
            source_version,
            &opts.target,
            opts.policy,
            self.report,
        )?
        else {
            return Ok(());
        };
        if !opts.target.loads(source_version) {
            self.converted += 1;
        }
        let replace = opts.conflict == ConflictPolicy::Rewrite;
        let argv = restore_command(key.clone(), payload, expire_at_ms, replace, hint);
        sink.restore(tdb, key, &argv).await?;
        self.done += 1;
        Ok(())
    }

    /// Puts the counts in the status every 1000 keys (`now`: at once).
    pub(crate) fn progress(&mut self, sink: &Sink, bytes_read: u64, now: bool) {
        if !now && self.done - self.last_report < 1000 {
            return;
        }
        self.last_report = self.done;
        let c = sink.counters();
        let keys_per_sec = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let (done, filtered, big_keys) = (self.done, self.filtered, self.big_keys);
        let report = &*self.report;
        self.status.update(|s| {
            s.keys_done = done;
            s.keys_filtered = filtered;
            s.ops_per_sec = keys_per_sec;
            s.bytes_written = c.bytes_written;
            s.bytes_read = bytes_read;
            s.keys_copied = c.keys_restored + big_keys;
            s.set_policy(report);
        });
    }

    /// Writes what is batched and puts the final counts in the status; returns the keys written as element
    /// commands (the sink counts the others once their replies are in) and the keys read.
    pub(crate) async fn finish(
        mut self,
        sink: &mut Sink,
        bytes_read: u64,
    ) -> Result<Copied, Error> {
        sink.flush_strings().await?;
        if self.empty > 0 {
            warn!(
                keys = self.empty,
                "empty keys left out: the RDB held lists, sets, sorted sets or hashes without an element"
            );
        }
        debug!(
            keys = self.done,
            reencoded = self.converted,
            big_keys = self.big_keys,
            "full copy read to its end"
        );
        let c = sink.counters();
        let (done, filtered, big_keys, converted) =
            (self.done, self.filtered, self.big_keys, self.converted);
        let report = &*self.report;
        self.status.update(|s| {
            s.keys_done = done;
            s.keys_filtered = filtered;
            s.bytes_read = bytes_read;
            s.keys_copied = c.keys_restored + big_keys;
            s.keys_as_commands += big_keys;
            s.keys_reencoded += converted;
            s.keys_skipped = c.keys_skipped;
            s.set_policy(report);
        });
        Ok(Copied {
            big_keys,
            keys: std::mem::take(&mut self.copied),
            position: self.repl_id.take().zip(self.repl_offset),
        })
    }
}

/// The value of a raw RDB entry that is a plain string small enough for a string batch: a slice of `raw` when
/// the string is stored as it is (a length, then the bytes), else decoded (an integer or LZF encoding).
fn small_string(raw: &Bytes) -> Result<Option<Bytes>, Error> {
    if raw.first() != Some(&RDB_TYPE_STRING) || raw.len() > SMALL_STRING {
        return Ok(None);
    }
    if let Some(value) = stored_as_is(raw) {
        return Ok(Some(value));
    }
    match ferry_rdb::decode_value(raw, false).map_err(rdb_error)? {
        ferry_rdb::Value::String(value) => Ok(Some(value)),
        _ => Ok(None),
    }
}

/// The bytes of a string value (`raw`: the type byte, then the string) whose RDB length encoding is a plain
/// length (6, 14, 32 or 64 bits) followed by exactly that many bytes; `None` for the special encodings (an
/// integer, LZF) and for anything else, which the decoder then reads (and reports if it is corrupt).
fn stored_as_is(raw: &Bytes) -> Option<Bytes> {
    let first = *raw.get(1)?;
    let (len, start) = match first >> 6 {
        0 => (u64::from(first & 0x3f), 2),
        1 => (u64::from(first & 0x3f) << 8 | u64::from(*raw.get(2)?), 3),
        2 if first == 0x80 => (
            u64::from(u32::from_be_bytes(raw.get(2..6)?.try_into().ok()?)),
            6,
        ),
        2 if first == 0x81 => (u64::from_be_bytes(raw.get(2..10)?.try_into().ok()?), 10),
        _ => return None,
    };
    (usize::try_from(len).ok()?.checked_add(start)? == raw.len()).then(|| raw.slice(start..))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized(value: &[u8], version: u32) -> Bytes {
        Bytes::from(
            ferry_rdb::encode_value(
                &ferry_rdb::Value::String(Bytes::copy_from_slice(value)),
                version,
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_string_stored_as_is_is_sliced_and_equals_what_the_decoder_reads() {
        // Lengths across the 6- and 14-bit encodings, integers (an encoding of their own) and compressible text.
        let mut values: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"v".to_vec(),
            vec![b'x'; 63],
            vec![b'y'; 64],
            b"12345".to_vec(),
            b"-7".to_vec(),
        ];
        values.push((0..200u8).collect());
        values.push(b"abc".repeat(100));
        for value in values {
            let raw = serialized(&value, 9);
            let got = small_string(&raw).unwrap().unwrap();
            assert_eq!(&got[..], &value[..], "{raw:?}");
            if let Some(slice) = stored_as_is(&raw) {
                assert_eq!(&slice[..], &value[..]);
            }
        }
        // A 32-bit length, written by hand: the type byte, 0x80, the length, the bytes.
        let mut raw = vec![RDB_TYPE_STRING, 0x80, 0, 0, 0, 3];
        raw.extend_from_slice(b"abc");
        assert_eq!(&stored_as_is(&Bytes::from(raw)).unwrap()[..], b"abc");
    }

    #[test]
    fn a_string_whose_length_does_not_match_its_bytes_is_left_to_the_decoder() {
        // Declares 5 bytes, holds 3: not sliced, and the decoder reports it.
        let raw = Bytes::from_static(&[RDB_TYPE_STRING, 5, b'a', b'b', b'c']);
        assert_eq!(stored_as_is(&raw), None);
        assert!(small_string(&raw).is_err());
        // A huge declared length does not overflow.
        let raw = Bytes::from_static(&[
            RDB_TYPE_STRING,
            0x81,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        assert_eq!(stored_as_is(&raw), None);
        assert!(stored_as_is(&Bytes::from_static(&[RDB_TYPE_STRING])).is_none());
    }
}
