//! The batch chain: live-stream batches that commit only if the batch before them committed, each with the
//! checkpoint that covers exactly what it applied.
//!
//! # Why a script and not `MULTI`/`EXEC`
//!
//! A `MULTI`/`EXEC` batch cannot stop at a failed command: a runtime error (`WRONGTYPE`) inside `EXEC` does not
//! stop the commands after it, and the checkpoint queued at the end commits past the failed write, which a
//! restart then skips forever. A queue-time error aborts the whole transaction (`EXECABORT`), but the batches
//! pipelined after it still commit their checkpoints past it. So each batch is one `EVALSHA` of the batch
//! script ([`script_text`]):
//!
//! 1. It reads the checkpoint key and refuses, before any write, unless it holds the value the previous batch
//!    stores when it commits (the chain). A failed batch changes the stored value to something else, so every
//!    batch pipelined after it refuses as a whole.
//! 2. It runs the commands with `redis.pcall`, counting what applied.
//! 3. At the first error it stops, stores the checkpoint at the position right before the failed command (if
//!    anything of the batch applied) and returns the number of commands applied and the error. The position
//!    comes from the batch's list of units (each unit, a command or a source `MULTI`/`EXEC` group, with its
//!    command count, end offset and the source stream's database there), read only on this path. A resume
//!    then sends exactly the failed command and what follows. Inside a source transaction the position is the
//!    unit's start plus `part` commands (see [`crate::checkpoint`]).
//! 4. Otherwise it stores the checkpoint at the batch's end, which the batch carries ready-made.
//!
//! What a command costs inside the script is what keeps the live phase fast, so the loop does the least it can
//! per command (one operation byte, one `pcall`, one error check); docs/benchmarks.md has the measurements.
//!
//! Scripts do not roll back, so "stop at the first error" is what keeps the checkpoint exact. Redis checks
//! `OOM` for a script before it runs (scripts with flags) or at its first write (scripts without), and
//! `MISCONF` at each write before any write can succeed: both refuse a batch before it writes anything, and the
//! checkpoint stays where it was. With the error policy `log`, errors other than the transient ones
//! ([`TRANSIENT_ERRORS`]) are logged and the batch goes on, as before.
//!
//! # Cluster nodes
//!
//! On a Redis 7.0 cluster the keys declared in `KEYS` must hash to one slot even with
//! `allow-cross-slot-keys` (the flag only lets the script *access* keys of other slots), so the batch declares
//! only its checkpoint key: a batch whose checkpoint slot moved is refused with `MOVED`/`ASK` before it runs
//! anything. The data keys are accessed undeclared (`allow-cross-slot-keys`); a key whose slot moved away fails
//! with "non local key" from `pcall`, which is handled like any error: the batch stops there with the checkpoint
//! right before it, and the session ends to refresh the slot map. Standalone targets run the same script
//! without the flags line, which Redis 6.2 does not know.
//!
//! # What cannot run in a script
//!
//! Commands flagged `noscript` (`FUNCTION ...`, `SCRIPT ...`, `EVAL`/`FCALL` from old sources, and whatever the
//! target's `COMMAND` flags so, such as a module's `GRAPH.QUERY`) are applied
//! alone, after everything before them is acknowledged: `WATCH` the checkpoint, check it, then
//! `MULTI`, the command, the checkpoint `SET`, `EXEC` (`Alone`). `FLUSHALL`/`FLUSHDB` run inside the script
//! (the checkpoint is stored after them, so they cannot erase it, and the target policy's stored report is
//! kept around them with `DUMP` and `RESTORE`); `SWAPDB` too, followed by deleting the
//! checkpoint copy it moved into the other database. A command with more arguments than a script can unpack
//! ([`MAX_SCRIPT_ARGS`]) is split into commands of the same meaning when it is variadic (`RPUSH`, `SADD`, `HSET`,
//! `ZADD`, `DEL`, `MSET`...), inside the same script, so it stays atomic; any other goes alone like a
//! `noscript` command.
//!
//! The one `EVAL` that stays in the batch is ferry's own stand-in for Redis 8.2's `XACKDEL`, `XDELEX` and trims
//! under `DELREF` on a target without them ([`crate::pipeline::convert::stream_ref_as_script`],
//! [`crate::pipeline::convert::delref_trim_as_script`]): the batch script defines the same Lua function and runs
//! it for that operation, under Lua's `pcall`, so an error there stops the batch like a failed command.

use std::fmt::Write as _;

use bytes::Bytes;
use ferry_resp::Frame;
use tracing::{debug, warn};

use crate::checkpoint::{Checkpoint, Position};
use crate::error::Error;
use crate::pipeline::convert::{is_stream_ref_eval, ReportEntry, STREAM_REF_FUNCTION};
use crate::pipeline::{command_name, Command, Unit};
use crate::sink::{ErrorPolicy, SinkCounters, SinkOptions};

/// Error codes a batch may meet that a new session can get past (memory, disk, loading, a busy script, a
/// cluster redirection or failover, a script cache flushed, a broken chain): the batch stops there and the job
/// retries instead of skipping or stopping. The last entry is the message a cluster node's script gets for a
/// key whose slot moved.
pub const TRANSIENT_ERRORS: &[&str] = &[
    "OOM",
    "MISCONF",
    "BUSY",
    "LOADING",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "CLUSTERDOWN",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "NOSCRIPT",
    "ERR Script attempted to access a non local key",
];

/// Whether an error reply is one of [`TRANSIENT_ERRORS`].
pub fn is_transient(message: &str) -> bool {
    TRANSIENT_ERRORS.iter().any(|code| {
        message.starts_with(code)
            && (code.contains(' ')
                || message[code.len()..].starts_with([' ', '\r', '\n'])
                || message.len() == code.len())
    })
}

/// Most arguments one command may have inside a batch script (Lua's `unpack` limit is about 8000).
pub const MAX_SCRIPT_ARGS: usize = 7000;

/// The batch script without its flags line (see the module documentation for what it does).
///
/// `KEYS[1]` is the checkpoint key. `ARGV`: the checkpoint database, the expected stored value, the value to
/// store when the whole batch applies, `1` for the error policy `log`, the checkpoint template (offset `{o}`,
/// database `{d}`, part `{p}`), the start offset, stream database and part, the units (`count offset db` for
/// each source unit that ends in the batch: how many of the batch's commands it holds and the stream position
/// at its end), the operations (one byte each, see [`Op`]), then the arguments of the operations in order: a
/// command's arguments (its byte is their count, or 0 and the count comes first as an argument), the database
/// of a `SELECT`, the database of a checkpoint copy `SWAPDB` moved there (to delete) and the names of the
/// report's hashes (to move back to the checkpoint database), the names of the report's hashes around a flush
/// of the checkpoint database (kept before it, put back after it), the hash, field and value
/// of a key the target policy skipped or converted (stored in the checkpoint database, see
/// [`crate::checkpoint::report_key_names`]). Reply: `{-1, stored}`
/// when the chain does not hold, else `{applied, error or "", logged index, logged error, ...}`.
///
/// The loop over the commands does only what every command needs (one byte read, one `pcall` and its error
/// check): the position before a failed command is worked out from the units only when a command fails, and
/// the value stored at the end comes ready-made, so the script's own cost per command stays close to the cost
/// of the call (see docs/benchmarks.md, "What the batch chain costs the target").
pub(crate) const BATCH_SCRIPT: &str = r#"
redis.call('SELECT', ARGV[1])
local stored = redis.call('GET', KEYS[1])
if (stored or '') ~= ARGV[2] then return {-1, stored or ''} end
local log, cur, n, logged = ARGV[4] == '1', ARGV[1], 0, {}
local function store_before(applied)
  local off, db, part, done = ARGV[6], ARGV[7], tonumber(ARGV[8]), 0
  for c, o, d in string.gmatch(ARGV[9], '(%d+) (%d+) (%-?%d+)') do
    c = tonumber(c)
    if applied < done + c then break end
    done, off, db, part = done + c, o, d, 0
  end
  local v = string.gsub(ARGV[5], '{o}', off)
  v = string.gsub(v, '{d}', db)
  v = string.gsub(v, '{p}', tostring(part + applied - done))
  redis.call('SELECT', ARGV[1])
  redis.call('SET', KEYS[1], v)
end
local function transient(e)
  for _, code in ipairs(TRANSIENT) do
    local next = string.sub(e, #code + 1, #code + 1)
    if string.sub(e, 1, #code) == code and (next == '' or next == ' ' or string.find(code, ' ', 1, true)) then
      return true
    end
  end
  return false
end
local function clean(e)
  -- Redis 6.2 prefixes the error with the script's place: "@user_script: 3: -OOM ...".
  return (string.gsub(string.gsub(e, '^@user_script: %d+: %-', ''), '%s+$', ''))
end
local function fail(e)
  if n > 0 then store_before(n) end
  local out = {n, e}
  for _, v in ipairs(logged) do out[#out + 1] = v end
  return out
end
local argv, ops, i, kept = ARGV, ARGV[10], 11, {}
local pcall, unpack, tonumber, byte, type = redis.pcall, unpack, tonumber, string.byte, type
for j = 1, #ops do
  local c = byte(ops, j)
  if c <= 249 then
    if c == 0 then c, i = tonumber(argv[i]), i + 1 end
    local r = pcall(unpack(argv, i, i + c - 1))
    if type(r) == 'table' and r.err then
      local e = clean(r.err)
      if not log or transient(e) then return fail(e) end
      logged[#logged + 1] = n
      logged[#logged + 1] = e
    end
    n = n + 1
    i = i + c
  elseif c == 250 then
    local count = tonumber(argv[i])
    local ok, e = lua_pcall(stream_ref, unpack(argv, i + 1, i + count))
    if not ok then
      e = clean(tostring(type(e) == 'table' and e.err or e))
      if not log or transient(e) then return fail(e) end
      logged[#logged + 1] = n
      logged[#logged + 1] = e
    end
    n = n + 1
    i = i + 1 + count
  elseif c == 251 then
    local r = pcall('SELECT', argv[i])
    if type(r) == 'table' and r.err then return fail(clean(r.err)) end
    cur, i = argv[i], i + 1
  elseif c == 254 then
    redis.call('SELECT', ARGV[1])
    kept = {redis.call('DUMP', argv[i]), redis.call('DUMP', argv[i + 1]), redis.call('DUMP', argv[i + 2])}
    redis.call('SELECT', cur)
    i = i + 3
  elseif c == 255 then
    redis.call('SELECT', ARGV[1])
    for k = 1, 3 do
      if kept[k] then redis.call('RESTORE', argv[i + k - 1], 0, kept[k], 'REPLACE') end
    end
    redis.call('SELECT', cur)
    i = i + 3
  elseif c == 252 then
    redis.call('SELECT', argv[i])
    redis.call('DEL', KEYS[1])
    for k = i + 1, i + 3 do
      if redis.call('EXISTS', argv[k]) == 1 then redis.call('MOVE', argv[k], ARGV[1]) end
    end
    redis.call('SELECT', cur)
    i = i + 4
  else
    redis.call('SELECT', ARGV[1])
    redis.call('HSET', argv[i], argv[i + 1], argv[i + 2])
    redis.call('SELECT', cur)
    i = i + 3
  end
end
redis.call('SELECT', ARGV[1])
redis.call('SET', KEYS[1], ARGV[3])
local out = {n, ''}
for _, v in ipairs(logged) do out[#out + 1] = v end
return out
"#;

/// Where the value stored at the batch's end goes in a batch's arguments (`ARGV[3]`).
const END_ARG: usize = 6;
/// Where the units go in a batch's arguments (`ARGV[9]`).
const UNITS_ARG: usize = 12;
/// Where the operations go in a batch's arguments (`ARGV[10]`).
const OPS_ARG: usize = 13;

/// The operation bytes of a batch (`ARGV[10]`).
struct Op;

impl Op {
    /// Most arguments a command's byte can count; a longer command has byte 0 and its count as an argument.
    const MAX_INLINE: usize = 249;
    /// A command with more than [`Op::MAX_INLINE`] arguments.
    const LONG: u8 = 0;
    /// An `XACKDEL`, `XDELEX` or trim under `DELREF` for a target without them: the function `stream_ref` of
    /// the script, on the arguments after the next one (their count) (see
    /// [`crate::pipeline::convert::stream_ref_as_script`]).
    const STREAM_REF: u8 = 250;
    /// `SELECT` the database in the next argument.
    const SELECT: u8 = 251;
    /// Delete the checkpoint key's copy `SWAPDB` moved to the database in the next argument, and move the
    /// stored report's hashes and the ownership record (the three arguments after it) back to the checkpoint
    /// database.
    const DROP_SWAPPED: u8 = 252;
    /// Store a key the target policy skipped or converted: `HSET` in the checkpoint database of the hash, the
    /// field and the value in the next three arguments (not a command of the stream: not counted).
    const REPORT: u8 = 253;
    /// Before a flush that erases the checkpoint database: keep (`DUMP`) the report's hashes and the ownership
    /// record named in the next three arguments...
    const KEEP_REPORT: u8 = 254;
    /// ...and after it, put them back (`RESTORE`), as the checkpoint is stored again after it.
    const RESTORE_REPORT: u8 = 255;
}

/// The script text for a target: with `#!lua flags=allow-cross-slot-keys` on a cluster node (7.0+), without
/// flags on a standalone server (6.2 has no flags).
pub fn script_text(cluster: bool) -> String {
    let codes: Vec<String> = TRANSIENT_ERRORS.iter().map(|c| format!("'{c}'")).collect();
    let table = format!("local TRANSIENT = {{{}}}", codes.join(", "));
    // Lua's own `pcall` (the script's `pcall` is `redis.pcall`), for the function of [`Op::STREAM_REF`].
    let function = format!("local lua_pcall = pcall\n{STREAM_REF_FUNCTION}");
    if cluster {
        format!("#!lua flags=allow-cross-slot-keys\n{table}\n{function}{BATCH_SCRIPT}")
    } else {
        format!("{table}\n{function}{BATCH_SCRIPT}")
    }
}

/// The stream position after what was handed to the writer: what the next checkpoint stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    offset: u64,
    /// The source stream's database at `offset`.
    db: i64,
    /// Commands of the unit after `offset` already included.
    part: u32,
}

/// What a batch in flight must answer, and what it commits.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The name of each command of the batch, in order.
    names: Vec<String>,
    /// The position the batch stores when it commits everything.
    end: Mark,
}

/// A batch ready to write: `EVALSHA` and its arguments.
#[derive(Debug)]
pub(crate) struct Batch {
    pub argv: Vec<Bytes>,
    pub pending: Pending,
}

/// A command that cannot run in a script, to apply alone once everything before it is acknowledged.
#[derive(Debug)]
pub(crate) struct Alone {
    /// The target database and the command.
    pub command: Command,
    /// The expected stored checkpoint (checked under `WATCH`).
    pub expected: String,
    /// The checkpoint to store with it.
    pub after: String,
    end: Mark,
}

/// One thing for the sink to write, in order.
#[derive(Debug)]
pub(crate) enum Step {
    /// A batch script.
    Batch(Batch),
    /// A command applied alone (the sink drains everything first).
    Alone(Alone),
}

/// The batch being built.
#[derive(Debug)]
struct Open {
    argv: Vec<Bytes>,
    names: Vec<String>,
    bytes: usize,
    /// The target database the script is in at this point.
    script_db: i64,
    /// `count offset db ` of each unit that ended in the batch (`ARGV[9]`).
    units: String,
    /// Commands of the current unit in the batch so far.
    unit_commands: usize,
    /// The operations (`ARGV[10]`).
    ops: Vec<u8>,
}

/// Units of the live stream become chained batch scripts (sans I/O: the sink writes what this returns and
/// hands back the replies).
#[derive(Debug)]
pub(crate) struct ChainWriter {
    sha: Bytes,
    /// Commands the target refuses inside a script (its `COMMAND` flags `noscript`), lower case: applied alone.
    noscript: std::collections::HashSet<String>,
    key: Bytes,
    /// The hashes of the stored report: skipped keys, converted keys.
    /// The job's keys that live beside the checkpoint and must stay with it through a `SWAPDB` or a flush of
    /// its database: the stored report's hashes (skipped, converted) and the ownership record.
    report_keys: (Bytes, Bytes),
    owner_key: Bytes,
    checkpoint_db: i64,
    /// Whether the target has databases (a cluster node has only 0: no `SELECT` markers).
    select: bool,
    log: bool,
    batch_commands: usize,
    batch_bytes: usize,
    /// Replication id, epoch, node and slots of the checkpoints written.
    base: Position,
    template: Bytes,
    /// The value the last batch written stores when it commits (what the next one expects).
    tail: String,
    /// Position after everything handed over.
    mark: Mark,
    open: Option<Open>,
    /// Units ending at or before `until` are in the target already; of the first unit after it, the first
    /// `part` commands are.
    skip_until: u64,
    skip_part: u32,
    /// The highest offset the target acknowledged.
    committed: u64,
}

impl ChainWriter {
    /// A writer for checkpoint key `key` in `checkpoint_db`, batches by `opts`, script `sha`; `select` when the
    /// target has databases.
    /// The target's commands that a script may not run (applied alone, as `FUNCTION` is).
    pub(crate) fn set_noscript(&mut self, names: std::collections::HashSet<String>) {
        self.noscript = names;
    }

    pub(crate) fn new(key: &str, sha: Bytes, select: bool, opts: &SinkOptions) -> ChainWriter {
        let (skipped, converted) = crate::checkpoint::report_key_names(&opts.checkpoint_tag);
        ChainWriter {
            sha,
            noscript: Default::default(),
            key: Bytes::from(key.to_string()),
            report_keys: (Bytes::from(skipped), Bytes::from(converted)),
            owner_key: Bytes::from(crate::redo::owner_key(&opts.checkpoint_tag)),
            checkpoint_db: opts.checkpoint_db,
            select,
            log: opts.on_error == ErrorPolicy::Log,
            batch_commands: opts.batch_commands.max(1),
            batch_bytes: opts.batch_bytes.max(1),
            base: Position::new(String::new(), 0, 0),
            template: Bytes::new(),
            tail: String::new(),
            mark: Mark {
                offset: 0,
                db: 0,
                part: 0,
            },
            open: None,
            skip_until: 0,
            skip_part: 0,
            committed: 0,
        }
    }

    /// Starts the chain at `start` (read from the target, or just written by a full sync), whose encoding is
    /// `stored`; `base` gives the replication id, epoch and cluster node and slots of what is written next.
    /// Units up to `skip` (offset, part) are in the target already.
    pub(crate) fn start(
        &mut self,
        base: Position,
        stored: String,
        start: &Position,
        skip: (u64, u32),
    ) {
        self.template = Bytes::from(base.template());
        self.base = base;
        self.tail = stored;
        self.mark = Mark {
            offset: start.offset,
            db: start.db,
            part: start.part,
        };
        self.open = None;
        (self.skip_until, self.skip_part) = skip;
        self.committed = self.committed.max(start.offset);
    }

    /// The highest offset the target acknowledged.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// The stream moved to `offset` (database `db`) with nothing to apply.
    pub(crate) fn advance(&mut self, offset: u64, db: i64) {
        if offset > self.mark.offset && self.mark.part == 0 {
            self.mark.offset = offset;
            self.mark.db = db;
        }
    }

    /// Adds a unit; returns what to write now (a full batch, or a command that must go alone with the batch
    /// before it).
    pub(crate) fn push(&mut self, unit: Unit, counters: &mut SinkCounters) -> Vec<Step> {
        let stream_db = unit.end_db;
        let mut steps = Vec::new();
        let mut commands = unit.commands;
        if unit.end_offset <= self.skip_until {
            counters.commands_already_applied += commands.len() as u64;
            self.advance(unit.end_offset, stream_db);
            return steps;
        }
        if self.skip_part > 0 {
            let n = (self.skip_part as usize).min(commands.len());
            counters.commands_already_applied += n as u64;
            commands.drain(..n);
            self.skip_part = 0;
        }
        let count = commands.len();
        let unit_end = Mark {
            offset: unit.end_offset,
            db: stream_db,
            part: 0,
        };
        for (i, cmd) in commands.into_iter().enumerate() {
            let name = command_name(&cmd.argv);
            // The `EVAL` standing for a stream command of Redis 8.2 runs inside the batch (`Op::STREAM_REF`).
            let inline = cmd.argv.len() <= MAX_SCRIPT_ARGS && is_stream_ref_eval(&cmd.argv);
            if !inline && (needs_alone(&name, &cmd.argv) || self.noscript.contains(&name)) {
                steps.extend(self.close().map(Step::Batch));
                let end = if i + 1 == count {
                    unit_end
                } else {
                    Mark {
                        part: self.mark.part + 1,
                        ..self.mark
                    }
                };
                let after = self.encode(end);
                let expected = std::mem::replace(&mut self.tail, after.clone());
                self.mark = end;
                steps.push(Step::Alone(Alone {
                    command: cmd,
                    expected,
                    after,
                    end,
                }));
                continue;
            }
            for argv in split_big(cmd.argv) {
                self.add(cmd.db, argv);
                self.mark.part += 1;
            }
        }
        // The keys the policy skipped or converted in this unit commit with it.
        for entry in unit.report {
            self.add_report(&entry);
        }
        self.mark = unit_end;
        if let Some(open) = &mut self.open {
            let _ = write!(
                open.units,
                "{} {} {} ",
                open.unit_commands, unit.end_offset, stream_db
            );
            open.unit_commands = 0;
            if open.names.len() >= self.batch_commands || open.bytes >= self.batch_bytes {
                steps.extend(self.close().map(Step::Batch));
            }
        }
        steps
    }

    /// Closes the open batch, if any.
    pub(crate) fn flush(&mut self) -> Option<Batch> {
        self.close()
    }

    /// A batch of no command that only moves the checkpoint to the latest position, when the stream moved on
    /// without anything for this target and nothing is open.
    pub(crate) fn checkpoint_only(&mut self) -> Option<Batch> {
        if self.open.is_some() || self.encode(self.mark) == self.tail {
            return self.close();
        }
        self.open = Some(self.open_batch());
        self.close()
    }

    fn encode(&self, mark: Mark) -> String {
        let mut p = self.base.clone();
        p.offset = mark.offset;
        p.db = mark.db;
        p.part = mark.part;
        Checkpoint::Committed(p).encode()
    }

    fn open_batch(&self) -> Open {
        let mut argv = Vec::with_capacity(64);
        argv.extend([
            Bytes::from_static(b"EVALSHA"),
            self.sha.clone(),
            Bytes::from_static(b"1"),
            self.key.clone(),
            Bytes::from(self.checkpoint_db.to_string()),
            Bytes::from(self.tail.clone()),
            // The value stored at the end (END_ARG), known when the batch closes.
            Bytes::new(),
            Bytes::from_static(if self.log { b"1" } else { b"0" }),
            self.template.clone(),
            Bytes::from(self.mark.offset.to_string()),
            Bytes::from(self.mark.db.to_string()),
            Bytes::from(self.mark.part.to_string()),
            // The units (UNITS_ARG) and the operations (OPS_ARG), known when the batch closes.
            Bytes::new(),
            Bytes::new(),
        ]);
        Open {
            argv,
            names: Vec::new(),
            bytes: 0,
            script_db: self.checkpoint_db,
            units: String::new(),
            unit_commands: 0,
            ops: Vec::with_capacity(self.batch_commands.min(4096) + 8),
        }
    }

    /// Adds one command (already within the script's argument limit) in target database `db`.
    fn add(&mut self, db: i64, argv: Vec<Bytes>) {
        if self.open.is_none() {
            self.open = Some(self.open_batch());
        }
        let select = self.select;
        let checkpoint_db = self.checkpoint_db;
        // A `SWAPDB` of the checkpoint database: the database it moved the checkpoint to, and the report's hashes.
        let swap = swapped_checkpoint_copy(&argv, checkpoint_db).map(|db| (db, self.kept_keys()));
        // A flush that erases the checkpoint database: the report's hashes, kept around it.
        let flush = flushes_checkpoint_db(&argv, db, checkpoint_db).then(|| self.kept_keys());
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if select && db != open.script_db {
            open.ops.push(Op::SELECT);
            open.argv.push(Bytes::from(db.to_string()));
            open.script_db = db;
        }
        if let Some(kept) = &flush {
            open.ops.push(Op::KEEP_REPORT);
            open.argv.extend(kept.iter().cloned());
        }
        open.bytes += crate::pipeline::wire_size(&argv);
        open.names.push(command_name(&argv));
        open.unit_commands += 1;
        if is_stream_ref_eval(&argv) {
            // `EVAL script 1 key kind policy group id...`: the function takes what follows the key count.
            open.ops.push(Op::STREAM_REF);
            open.argv.push(Bytes::from((argv.len() - 3).to_string()));
            open.argv.extend(argv.into_iter().skip(3));
        } else {
            match u8::try_from(argv.len()) {
                Ok(n) if argv.len() <= Op::MAX_INLINE => open.ops.push(n),
                _ => {
                    open.ops.push(Op::LONG);
                    open.argv.push(Bytes::from(argv.len().to_string()));
                }
            }
            open.argv.extend(argv);
        }
        if let Some(kept) = flush {
            open.ops.push(Op::RESTORE_REPORT);
            open.argv.extend(kept);
        }
        if let Some((other, kept)) = swap {
            open.ops.push(Op::DROP_SWAPPED);
            open.argv.push(Bytes::from(other.to_string()));
            open.argv.extend(kept);
        }
    }

    /// The keys kept with the checkpoint through a `SWAPDB` or a flush of its database, in the order the
    /// script's operations take them.
    fn kept_keys(&self) -> [Bytes; 3] {
        [
            self.report_keys.0.clone(),
            self.report_keys.1.clone(),
            self.owner_key.clone(),
        ]
    }

    /// Adds the storing of a key the target policy skipped or converted.
    fn add_report(&mut self, entry: &ReportEntry) {
        if self.open.is_none() {
            self.open = Some(self.open_batch());
        }
        let hash = if entry.skipped {
            self.report_keys.0.clone()
        } else {
            self.report_keys.1.clone()
        };
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let argv = [hash, entry.key.member(), entry.key.reason()];
        open.bytes += crate::pipeline::wire_size(&argv);
        open.ops.push(Op::REPORT);
        open.argv.extend(argv);
    }

    fn close(&mut self) -> Option<Batch> {
        let mut open = self.open.take()?;
        // What the batch stores when it applies whole: the latest position (skipped frames included), or, when
        // it closes inside a unit (a command of it goes alone next), the unit's start and the commands of it so
        // far. Commands of a unit that does not end in the batch are counted after the last unit that does.
        self.tail = self.encode(self.mark);
        open.argv[END_ARG] = Bytes::from(self.tail.clone());
        open.argv[UNITS_ARG] = Bytes::from(open.units);
        open.argv[OPS_ARG] = Bytes::from(open.ops);
        Some(Batch {
            argv: open.argv,
            pending: Pending {
                names: open.names,
                end: self.mark,
            },
        })
    }

    /// Accounts for the reply to a batch. An error means the chain stopped at this batch: everything written
    /// after it refuses, and the session must end (the error says whether a new one can get past it).
    pub(crate) fn on_reply(
        &mut self,
        pending: Pending,
        reply: Frame,
        counters: &mut SinkCounters,
    ) -> Result<(), Error> {
        let items = match reply {
            Frame::Array(items) => items,
            Frame::Error(e) => {
                // Refused as a whole before it ran (OOM/MISCONF with flags, MOVED, NOSCRIPT, READONLY...).
                let message = String::from_utf8_lossy(&e).into_owned();
                return Err(refused(counters, "batch script", message));
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected reply to the batch script: {other:?}"
                )))
            }
        };
        let applied = items.first().and_then(Frame::as_integer).ok_or_else(|| {
            Error::Protocol("the batch script did not answer its applied count".into())
        })?;
        let text = |f: Option<&Frame>| {
            f.and_then(Frame::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        if applied < 0 {
            let stored = text(items.get(1));
            // A fence (or a checkpoint of a newer epoch) over the chain: a DR pair changed direction.
            if let Ok(cp) = Checkpoint::decode(stored.as_bytes()) {
                if let Err(e) = crate::checkpoint::admit(&cp, self.base.epoch) {
                    counters.errors += 1;
                    counters.last_error = Some(e.to_string());
                    return Err(e);
                }
            }
            return Err(chain_broken(counters, format!("stored {stored:?}")));
        }
        let applied = applied as usize;
        counters.commands_applied += applied as u64;
        let error = text(items.get(1));
        for pair in items.get(2..).unwrap_or_default().chunks(2) {
            let index = pair.first().and_then(Frame::as_integer).unwrap_or(-1);
            let name = usize::try_from(index)
                .ok()
                .and_then(|i| pending.names.get(i))
                .cloned()
                .unwrap_or_default();
            let message = text(pair.get(1));
            counters.errors += 1;
            counters.commands_applied -= 1;
            counters.last_error = Some(format!("{name}: {message}"));
            warn!(command = %name, error = %message, "the target refused a write (error policy: log)");
        }
        if error.is_empty() {
            self.committed = self.committed.max(pending.end.offset);
            debug!(offset = pending.end.offset, "batch committed");
            return Ok(());
        }
        let name = pending.names.get(applied).cloned().unwrap_or_default();
        Err(refused(counters, &name, error))
    }

    /// The reply to `EXEC` of a command applied alone: the checkpoint committed with it, or not at all
    /// (`WATCH` saw the chain change). A runtime error of the command leaves the checkpoint past it: the caller
    /// must put `before` back (see `Alone`).
    pub(crate) fn on_alone_reply(
        &mut self,
        alone: &Alone,
        reply: &Frame,
        counters: &mut SinkCounters,
    ) -> Result<AloneOutcome, Error> {
        match reply {
            Frame::Array(items) => match items.iter().find_map(|f| match f {
                Frame::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
                _ => None,
            }) {
                None => {
                    counters.commands_applied += 1;
                    self.committed = self.committed.max(alone.end.offset);
                    Ok(AloneOutcome::Applied)
                }
                Some(message) => Ok(AloneOutcome::Failed(message)),
            },
            f if f.is_null() => Err(chain_broken(
                counters,
                "the checkpoint changed under WATCH".into(),
            )),
            Frame::Error(e) => Err(refused(
                counters,
                &command_name(&alone.command.argv),
                String::from_utf8_lossy(e).into_owned(),
            )),
            other => Err(Error::Protocol(format!(
                "unexpected reply to EXEC: {other:?}"
            ))),
        }
    }

    /// The batch script was loaded again (after a `SCRIPT FLUSH` of the source).
    pub(crate) fn set_sha(&mut self, sha: Bytes) {
        self.sha = sha;
    }
}

/// What became of a command applied alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AloneOutcome {
    /// Applied with its checkpoint.
    Applied,
    /// The command failed at run time; its checkpoint was stored anyway.
    Failed(String),
}

/// Counts a batch refused because the stored checkpoint is not the one the previous batch stores: a batch
/// before it failed, or the target lost writes (a failover), or another writer changed it.
pub(crate) fn chain_broken(counters: &mut SinkCounters, detail: String) -> Error {
    counters.errors += 1;
    let message = format!("the checkpoint chain does not hold ({detail})");
    counters.last_error = Some(message.clone());
    Error::ChainBroken(message)
}

/// Counts a refusal and builds its error.
pub(crate) fn refused(counters: &mut SinkCounters, command: &str, message: String) -> Error {
    counters.errors += 1;
    counters.last_error = Some(format!("{command}: {message}"));
    Error::Target {
        command: command.to_string(),
        message,
    }
}

/// Commands a script may not run (`noscript`), and commands too long for one that cannot be split.
fn needs_alone(name: &str, argv: &[Bytes]) -> bool {
    matches!(
        name,
        "function"
            | "script"
            | "eval"
            | "evalsha"
            | "eval_ro"
            | "evalsha_ro"
            | "fcall"
            | "fcall_ro"
    ) || (argv.len() > MAX_SCRIPT_ARGS && split_shape(name).is_none())
}

/// For a variadic command: how many arguments come before the repeated groups and the group size.
fn split_shape(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "rpush" | "lpush" | "rpushx" | "lpushx" | "sadd" | "srem" | "hdel" | "zrem" | "pfadd" => {
            (2, 1)
        }
        "hset" | "hmset" => (2, 2),
        "del" | "unlink" => (1, 1),
        "mset" => (1, 2),
        "zadd" => (2, 2),
        _ => return None,
    })
}

/// A command with more arguments than a script can unpack, as commands of the same meaning that each fit; any
/// other command as it is.
pub(crate) fn split_big(argv: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    if argv.len() <= MAX_SCRIPT_ARGS {
        return vec![argv];
    }
    let name = command_name(&argv);
    let Some((mut head, group)) = split_shape(&name) else {
        return vec![argv];
    };
    if name == "zadd" {
        // ZADD key [NX|XX] [GT|LT] [CH] score member ...: the options repeat in every part. INCR takes one pair.
        while argv.get(head).is_some_and(|a| {
            matches!(
                a.to_ascii_lowercase().as_slice(),
                b"nx" | b"xx" | b"gt" | b"lt" | b"ch"
            )
        }) {
            head += 1;
        }
    }
    if !(argv.len() - head).is_multiple_of(group) {
        return vec![argv];
    }
    let per = ((MAX_SCRIPT_ARGS - head) / group) * group;
    argv[head..]
        .chunks(per)
        .map(|chunk| {
            let mut part = argv[..head].to_vec();
            part.extend_from_slice(chunk);
            part
        })
        .collect()
}

/// Whether `argv`, run in target database `db`, erases the checkpoint database: `FLUSHALL`, or `FLUSHDB` in it.
fn flushes_checkpoint_db(argv: &[Bytes], db: i64, checkpoint_db: i64) -> bool {
    let name = argv.first().map_or(&b""[..], |n| &n[..]);
    name.eq_ignore_ascii_case(b"flushall")
        || (name.eq_ignore_ascii_case(b"flushdb") && db == checkpoint_db)
}

/// For `SWAPDB a b` where one of them is the checkpoint database: the other one, where the swap moves the
/// checkpoint key.
fn swapped_checkpoint_copy(argv: &[Bytes], checkpoint_db: i64) -> Option<i64> {
    if argv.len() != 3 || !argv[0].eq_ignore_ascii_case(b"swapdb") {
        return None;
    }
    let db = |a: &Bytes| std::str::from_utf8(a).ok()?.parse::<i64>().ok();
    let (a, b) = (db(&argv[1])?, db(&argv[2])?);
    match (a == checkpoint_db, b == checkpoint_db) {
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb";

    fn writer(log: bool) -> ChainWriter {
        let opts = SinkOptions {
            batch_commands: 3,
            checkpoint_db: 15,
            on_error: if log {
                ErrorPolicy::Log
            } else {
                ErrorPolicy::Stop
            },
            ..SinkOptions::default()
        };
        let mut w = ChainWriter::new(
            "ferry:checkpoint:{t}",
            Bytes::from_static(b"sha"),
            true,
            &opts,
        );
        let start = Position::new(ID, 100, 0);
        let stored = Checkpoint::Committed(start.clone()).encode();
        w.start(Position::new(ID, 0, 0), stored, &start, (100, 0));
        w
    }

    fn unit(end: u64, db: i64, cmds: &[&[&str]]) -> Unit {
        Unit {
            commands: cmds
                .iter()
                .map(|argv| Command {
                    db,
                    argv: argv.iter().map(|a| Bytes::from(a.to_string())).collect(),
                    end_offset: end,
                })
                .collect(),
            transaction: cmds.len() > 1,
            end_offset: end,
            end_db: db,
            report: Vec::new(),
        }
    }

    /// The arguments as text, one char per byte (the operation bytes are not UTF-8).
    fn args(batch: &Batch) -> Vec<String> {
        batch.argv.iter().map(|a| latin1(a)).collect()
    }

    fn latin1(bytes: &[u8]) -> String {
        bytes.iter().map(|&b| char::from(b)).collect()
    }

    fn reply(items: Vec<Frame>) -> Frame {
        Frame::Array(items)
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::from(s.to_string()))
    }

    #[test]
    fn a_key_the_policy_took_is_stored_in_the_batch_of_its_unit_without_counting_as_a_command() {
        use crate::pipeline::convert::{Loss, PolicyKey};
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        let mut u = unit(110, 2, &[&["DEL", "h"]]);
        u.report.push(ReportEntry {
            skipped: true,
            key: PolicyKey {
                db: 3,
                key: Bytes::from_static(b"h"),
                loss: Loss::UnknownCommand {
                    name: "hpexpireat".into(),
                },
            },
        });
        assert!(w.push(u, &mut c).is_empty());
        // A unit of no command with a key to store still makes a batch.
        let mut u = unit(120, 2, &[]);
        u.report.push(ReportEntry {
            skipped: false,
            key: PolicyKey {
                db: 0,
                key: Bytes::from_static(b"g"),
                loss: Loss::FieldExpiries { fields: 0 },
            },
        });
        assert!(w.push(u, &mut c).is_empty());
        let batch = w.flush().unwrap();
        let a = args(&batch);
        assert_eq!(batch.pending.names, ["del"]);
        assert_eq!(a[OPS_ARG], latin1(&[Op::SELECT, 2, Op::REPORT, Op::REPORT]));
        assert_eq!(
            a[OPS_ARG + 1..],
            [
                "2",
                "DEL",
                "h",
                "ferry:skipped:{ferry}",
                "3:h",
                "command hpexpireat",
                "ferry:converted:{ferry}",
                "0:g",
                "fields 0"
            ]
        );
        assert_eq!(a[UNITS_ARG], "1 110 2 0 120 2 ");
    }

    #[test]
    fn a_flush_of_the_checkpoint_database_keeps_the_stored_report_around_it() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        w.push(unit(110, 0, &[&["FLUSHDB"]]), &mut c);
        w.push(unit(120, 15, &[&["FLUSHDB"]]), &mut c);
        let mut steps = w.push(unit(130, 15, &[&["FLUSHALL"]]), &mut c);
        let Some(Step::Batch(batch)) = steps.pop() else {
            panic!("a full batch");
        };
        let a = args(&batch);
        let (keep, restore) = (Op::KEEP_REPORT, Op::RESTORE_REPORT);
        let ops = [
            Op::SELECT,
            1,
            Op::SELECT,
            keep,
            1,
            restore,
            keep,
            1,
            restore,
        ];
        assert_eq!(a[OPS_ARG], latin1(&ops));
        let hashes = [
            "ferry:skipped:{ferry}",
            "ferry:converted:{ferry}",
            "ferry:checkpoint:{ferry}:owner",
        ];
        let mut expected = vec!["0", "FLUSHDB", "15"];
        for cmd in ["FLUSHDB", "FLUSHALL"] {
            expected.extend(hashes);
            expected.push(cmd);
            expected.extend(hashes);
        }
        assert_eq!(a[OPS_ARG + 1..], expected);
    }

    #[test]
    fn batch_carries_chain_positions_and_markers() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        assert!(w
            .push(unit(110, 2, &[&["SET", "a", "1"]]), &mut c)
            .is_empty());
        let batch = w.flush().unwrap();
        let a = args(&batch);
        assert_eq!(&a[..4], ["EVALSHA", "sha", "1", "ferry:checkpoint:{t}"]);
        assert_eq!(a[4], "15");
        assert_eq!(a[5], format!("v2 {ID} 100 db=0 part=0 epoch=0"));
        assert_eq!(
            a[6],
            format!("v2 {ID} 110 db=2 part=0 epoch=0"),
            "stored at the end"
        );
        assert_eq!(a[7], "0");
        assert_eq!(a[8], format!("v2 {ID} {{o}} db={{d}} part={{p}} epoch=0"));
        assert_eq!(&a[9..12], ["100", "0", "0"]);
        assert_eq!(
            a[12], "1 110 2 ",
            "one unit of one command, ending at 110 in db 2"
        );
        assert_eq!(a[13], latin1(&[Op::SELECT, 3]), "SELECT, a command of 3");
        assert_eq!(&a[14..], ["2", "SET", "a", "1"]);
        // The next batch expects what this one stores.
        w.push(unit(120, 2, &[&["INCR", "n"]]), &mut c);
        let next = w.flush().unwrap();
        assert_eq!(args(&next)[5], format!("v2 {ID} 110 db=2 part=0 epoch=0"));
    }

    #[test]
    fn units_up_to_the_checkpoint_are_skipped_and_part_of_the_next() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        let start = Position {
            part: 1,
            ..Position::new(ID, 100, 0)
        };
        w.start(
            Position::new(ID, 0, 0),
            Checkpoint::Committed(start.clone()).encode(),
            &start,
            (100, 1),
        );
        w.push(unit(90, 0, &[&["SET", "old", "1"]]), &mut c);
        w.push(unit(130, 0, &[&["INCR", "a"], &["INCR", "b"]]), &mut c);
        assert_eq!(c.commands_already_applied, 2);
        let a = args(&w.flush().unwrap());
        assert_eq!(&a[9..12], ["100", "0", "1"], "starts inside the unit");
        assert_eq!(a[12], "1 130 0 ");
        assert_eq!(a[13], latin1(&[Op::SELECT, 2]));
        assert_eq!(&a[14..], ["0", "INCR", "b"]);
    }

    #[test]
    fn a_full_batch_is_closed_by_count() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        assert!(w.push(unit(101, 0, &[&["INCR", "a"]]), &mut c).is_empty());
        assert!(w.push(unit(102, 0, &[&["INCR", "a"]]), &mut c).is_empty());
        let steps = w.push(unit(103, 0, &[&["INCR", "a"]]), &mut c);
        assert!(matches!(steps.as_slice(), [Step::Batch(_)]));
        assert!(w.flush().is_none());
    }

    #[test]
    fn reply_accounting_of_a_committed_batch() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        w.push(unit(110, 0, &[&["INCR", "a"], &["INCR", "b"]]), &mut c);
        let batch = w.flush().unwrap();
        w.on_reply(
            batch.pending,
            reply(vec![Frame::Integer(2), bulk("")]),
            &mut c,
        )
        .unwrap();
        assert_eq!((c.commands_applied, c.errors, w.committed()), (2, 0, 110));
    }

    #[test]
    fn partial_script_failure_reports_the_failed_command_and_stops_the_chain() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        let mut steps = w.push(
            unit(
                110,
                0,
                &[&["INCR", "a"], &["LPUSH", "s", "x"], &["INCR", "b"]],
            ),
            &mut c,
        );
        let Some(Step::Batch(batch)) = steps.pop() else {
            panic!("a full batch");
        };
        let err = w
            .on_reply(
                batch.pending,
                reply(vec![
                    Frame::Integer(1),
                    bulk("WRONGTYPE Operation against a key"),
                ]),
                &mut c,
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::Target { command, message } if command == "lpush" && message.starts_with("WRONGTYPE")),
            "{err}"
        );
        assert!(!err.is_transient(), "a data conflict needs a human");
        assert_eq!((c.commands_applied, c.errors, w.committed()), (1, 1, 100));
    }

    #[test]
    fn oom_and_chain_refusals_are_transient() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        w.push(unit(110, 0, &[&["SET", "a", "1"]]), &mut c);
        let b1 = w.flush().unwrap();
        w.push(unit(120, 0, &[&["SET", "b", "1"]]), &mut c);
        let b2 = w.flush().unwrap();
        let oom = w
            .on_reply(
                b1.pending,
                reply(vec![Frame::Integer(0), bulk("OOM command not allowed")]),
                &mut c,
            )
            .unwrap_err();
        assert!(oom.is_transient(), "{oom}");
        let chain = w
            .on_reply(
                b2.pending,
                reply(vec![Frame::Integer(-1), bulk("v2 ...")]),
                &mut c,
            )
            .unwrap_err();
        assert!(chain.is_transient(), "{chain}");
        let refused = w
            .on_reply(
                Pending {
                    names: vec![],
                    end: w.mark,
                },
                Frame::Error(Bytes::from_static(
                    b"MISCONF Redis is configured to save RDB snapshots",
                )),
                &mut c,
            )
            .unwrap_err();
        assert!(refused.is_transient());
        assert_eq!((c.commands_applied, c.errors, w.committed()), (0, 3, 100));
    }

    #[test]
    fn a_fence_over_the_chain_stops_the_job_instead_of_a_retry() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        w.push(unit(110, 0, &[&["SET", "a", "1"]]), &mut c);
        let b = w.flush().unwrap();
        let err = w
            .on_reply(
                b.pending,
                reply(vec![Frame::Integer(-1), bulk("fenced epoch=2")]),
                &mut c,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Fenced(_)), "{err}");
        assert!(!err.is_transient() && !err.is_connection());
    }

    #[test]
    fn log_policy_counts_logged_errors_and_commits() {
        let mut w = writer(true);
        let mut c = SinkCounters::default();
        w.push(
            unit(110, 0, &[&["INCR", "a"], &["LPUSH", "s", "x"]]),
            &mut c,
        );
        let batch = w.flush().unwrap();
        assert_eq!(args(&batch)[7], "1");
        w.on_reply(
            batch.pending,
            reply(vec![
                Frame::Integer(2),
                bulk(""),
                Frame::Integer(1),
                bulk("WRONGTYPE x"),
            ]),
            &mut c,
        )
        .unwrap();
        assert_eq!((c.commands_applied, c.errors, w.committed()), (1, 1, 110));
        assert_eq!(c.last_error.as_deref(), Some("lpush: WRONGTYPE x"));
    }

    #[test]
    fn the_stand_in_for_a_stream_reference_command_runs_inside_the_batch() {
        let mut w = writer(false);
        w.set_noscript(["eval".to_string()].into_iter().collect());
        let mut c = SinkCounters::default();
        let script = crate::pipeline::convert::STREAM_REF_EVAL;
        let stand_in = [
            "EVAL", script, "1", "st", "xackdel", "DELREF", "g", "1-1", "2-2",
        ];
        let mut steps = w.push(unit(150, 0, &[&["INCR", "a"], &stand_in]), &mut c);
        steps.extend(w.flush().map(Step::Batch));
        let [Step::Batch(batch)] = steps.as_slice() else {
            panic!("{steps:?}");
        };
        let a = args(batch);
        assert_eq!(a[13], latin1(&[Op::SELECT, 2, Op::STREAM_REF]));
        assert_eq!(
            &a[14..],
            ["0", "INCR", "a", "6", "st", "xackdel", "DELREF", "g", "1-1", "2-2"],
            "the function's arguments after their count"
        );
        assert_eq!(a[12], "2 150 0 ", "one unit of two commands");
        // Any other EVAL still goes alone.
        let steps = w.push(unit(160, 0, &[&["EVAL", "return 1", "0"]]), &mut c);
        assert!(matches!(steps.as_slice(), [Step::Alone(_)]), "{steps:?}");
        // The batch script defines the function it calls.
        assert!(script_text(false).contains("local function stream_ref("));
    }

    #[test]
    fn noscript_command_inside_a_transaction_goes_alone_between_batches() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        let steps = w.push(
            unit(
                150,
                0,
                &[
                    &["INCR", "a"],
                    &["FUNCTION", "LOAD", "code"],
                    &["INCR", "b"],
                ],
            ),
            &mut c,
        );
        let [Step::Batch(first), Step::Alone(alone)] = steps.as_slice() else {
            panic!("{steps:?}");
        };
        let a = args(first);
        assert_eq!(a[13], latin1(&[Op::SELECT, 2]));
        assert_eq!(&a[14..], ["0", "INCR", "a"]);
        assert_eq!(a[12], "", "the unit does not end in this batch");
        assert_eq!(
            a[6],
            format!("v2 {ID} 100 db=0 part=1 epoch=0"),
            "stores the unit's start and part 1"
        );
        assert_eq!(alone.expected, format!("v2 {ID} 100 db=0 part=1 epoch=0"));
        assert_eq!(alone.after, format!("v2 {ID} 100 db=0 part=2 epoch=0"));
        let last = w.flush().unwrap();
        let a = args(&last);
        assert_eq!(
            a[5], alone.after,
            "the chain goes through the alone command"
        );
        assert_eq!(&a[9..12], ["100", "0", "2"]);
        assert_eq!(a[12], "1 150 0 ");
        assert_eq!(a[13], latin1(&[Op::SELECT, 2]));
        assert_eq!(&a[14..], ["0", "INCR", "b"]);
    }

    #[test]
    fn noscript_command_alone_commits_its_unit_end() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        let steps = w.push(unit(150, 0, &[&["FUNCTION", "FLUSH"]]), &mut c);
        let [Step::Alone(alone)] = steps.as_slice() else {
            panic!("{steps:?}");
        };
        assert_eq!(alone.after, format!("v2 {ID} 150 db=0 part=0 epoch=0"));
        let ok = reply(vec![bulk("OK"), bulk("OK"), bulk("OK")]);
        assert_eq!(
            w.on_alone_reply(alone, &ok, &mut c).unwrap(),
            AloneOutcome::Applied
        );
        assert_eq!(w.committed(), 150);
        let failed = reply(vec![
            Frame::Error(Bytes::from_static(b"ERR Library already exists")),
            bulk("OK"),
        ]);
        assert!(matches!(
            w.on_alone_reply(alone, &failed, &mut c).unwrap(),
            AloneOutcome::Failed(_)
        ));
        assert!(w.checkpoint_only().is_none(), "nothing moved since");
    }

    #[test]
    fn idle_checkpoint_moves_to_the_latest_offset() {
        let mut w = writer(false);
        w.advance(180, 3);
        let b = w.checkpoint_only().unwrap();
        let a = args(&b);
        assert_eq!(&a[9..12], ["180", "3", "0"], "starts where the stream is");
        assert_eq!(a[6], format!("v2 {ID} 180 db=3 part=0 epoch=0"));
        assert_eq!(a.len(), 14, "no command");
        assert!(a[13].is_empty());
        assert!(w.checkpoint_only().is_none());
    }

    #[test]
    fn swapdb_of_the_checkpoint_db_deletes_the_moved_copy() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        w.push(unit(110, 0, &[&["SWAPDB", "15", "3"]]), &mut c);
        let a = args(&w.flush().unwrap());
        assert_eq!(a[13], latin1(&[Op::SELECT, 3, Op::DROP_SWAPPED]));
        assert_eq!(
            &a[14..],
            [
                "0",
                "SWAPDB",
                "15",
                "3",
                "3",
                "ferry:skipped:{ferry}",
                "ferry:converted:{ferry}",
                "ferry:checkpoint:{ferry}:owner",
            ]
        );
        assert_eq!(a[12], "1 110 0 ");
    }

    #[test]
    fn a_command_with_more_arguments_than_a_byte_counts_carries_its_count() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        let mut argv = vec!["RPUSH".to_string(), "l".to_string()];
        argv.extend((0..300).map(|i| i.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        w.push(unit(110, 0, &[&argv]), &mut c);
        let a = args(&w.flush().unwrap());
        assert_eq!(a[13], latin1(&[Op::SELECT, Op::LONG]));
        assert_eq!(&a[14..17], ["0", "302", "RPUSH"]);
        assert_eq!(a.len(), 14 + 2 + 302);
    }

    #[test]
    fn big_variadic_commands_split_into_parts_of_the_same_meaning() {
        let mut argv = vec![
            Bytes::from_static(b"ZADD"),
            Bytes::from_static(b"z"),
            Bytes::from_static(b"NX"),
        ];
        for i in 0..5000 {
            argv.push(Bytes::from(i.to_string()));
            argv.push(Bytes::from(format!("m{i}")));
        }
        let parts = split_big(argv.clone());
        assert_eq!(parts.len(), 2);
        assert!(parts
            .iter()
            .all(|p| p.len() <= MAX_SCRIPT_ARGS && p[2] == "NX"));
        let pairs: usize = parts.iter().map(|p| (p.len() - 3) / 2).sum();
        assert_eq!(pairs, 5000);
        assert!(!needs_alone(&command_name(&argv), &argv));
        let mut xadd = vec![
            Bytes::from_static(b"XADD"),
            Bytes::from_static(b"s"),
            Bytes::from_static(b"1-1"),
        ];
        xadd.extend((0..8000).map(|i| Bytes::from(i.to_string())));
        assert!(
            needs_alone(&command_name(&xadd), &xadd),
            "not splittable: alone"
        );
        assert_eq!(split_big(xadd).len(), 1);
    }

    /// Runs `batch` on a real server; the stored checkpoint and the raw reply.
    fn run_on(c: &mut redis::Connection, batch: &Batch) -> redis::Value {
        let mut cmd = redis::cmd("EVALSHA");
        for a in &batch.argv[1..] {
            cmd.arg(a.as_ref());
        }
        cmd.query(c).unwrap()
    }

    #[test]
    fn a_failed_command_on_a_real_server_stores_the_position_right_before_it() {
        use ferry_testkit::{Server, ServerOptions, Version};
        for version in [Version::V7_0, Version::V6_2] {
            let server = Server::start(ServerOptions::new(version)).unwrap();
            let mut c = server.client();
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script_text(false))
                .query(&mut c)
                .unwrap();
            let opts = SinkOptions {
                batch_commands: 100,
                checkpoint_db: 15,
                ..SinkOptions::default()
            };
            let key = "ferry:checkpoint:{t}";
            let mut w = ChainWriter::new(key, Bytes::from(sha), true, &opts);
            let start = Position::new(ID, 100, 0);
            let stored = Checkpoint::Committed(start.clone()).encode();
            w.start(Position::new(ID, 0, 0), stored.clone(), &start, (100, 0));
            let _: () = redis::pipe()
                .cmd("SELECT")
                .arg(15)
                .cmd("SET")
                .arg(key)
                .arg(&stored)
                .cmd("SELECT")
                .arg(2)
                .cmd("SET")
                .arg("s")
                .arg("planted")
                .query(&mut c)
                .unwrap();
            let mut counters = SinkCounters::default();
            let mut long = vec!["RPUSH".to_string(), "l".to_string()];
            long.extend((0..300).map(|i| i.to_string()));
            let long: Vec<&str> = long.iter().map(String::as_str).collect();
            w.push(unit(110, 0, &[&["INCR", "a"]]), &mut counters);
            w.push(unit(120, 2, &[&["INCR", "b"], &long]), &mut counters);
            w.advance(125, 2);
            w.push(
                unit(
                    130,
                    2,
                    &[&["INCR", "d"], &["LPUSH", "s", "x"], &["INCR", "e"]],
                ),
                &mut counters,
            );
            let first = w.flush().unwrap();
            w.push(unit(140, 2, &[&["INCR", "f"]]), &mut counters);
            let second = w.flush().unwrap();
            let redis::Value::Array(reply) = run_on(&mut c, &first) else {
                panic!("{version:?}: not an array");
            };
            assert_eq!(reply[0], redis::Value::Int(4), "{version:?}: {reply:?}");
            let redis::Value::BulkString(error) = &reply[1] else {
                panic!("{version:?}: {reply:?}");
            };
            assert!(error.starts_with(b"WRONGTYPE"), "{version:?}: {reply:?}");
            let get = |c: &mut redis::Connection, db: i64, k: &str| -> Option<String> {
                redis::pipe()
                    .cmd("SELECT")
                    .arg(db)
                    .ignore()
                    .cmd("GET")
                    .arg(k)
                    .query::<(Option<String>,)>(c)
                    .unwrap()
                    .0
            };
            assert_eq!(
                get(&mut c, 15, key).as_deref(),
                Some(format!("v2 {ID} 120 db=2 part=1 epoch=0").as_str()),
                "{version:?}: the unit ending at 120, then one command of the next"
            );
            let redis::Value::Array(refused) = run_on(&mut c, &second) else {
                panic!("{version:?}: not an array");
            };
            assert_eq!(
                refused[0],
                redis::Value::Int(-1),
                "{version:?}: {refused:?}"
            );
            assert_eq!(get(&mut c, 0, "a").as_deref(), Some("1"));
            for (k, v) in [("b", Some("1")), ("d", Some("1")), ("e", None), ("f", None)] {
                assert_eq!(get(&mut c, 2, k).as_deref(), v, "{version:?}: {k}");
            }
            let len: i64 = redis::pipe()
                .cmd("SELECT")
                .arg(2)
                .ignore()
                .cmd("LLEN")
                .arg("l")
                .query::<(i64,)>(&mut c)
                .unwrap()
                .0;
            assert_eq!(len, 300, "{version:?}: the long command applied whole");
        }
    }

    #[test]
    fn transient_errors_are_recognised_by_code() {
        assert!(is_transient("OOM command not allowed"));
        assert!(is_transient("MOVED 3999 127.0.0.1:6381"));
        assert!(is_transient(
            "ERR Script attempted to access a non local key in a cluster node"
        ));
        assert!(!is_transient("WRONGTYPE Operation against a key"));
        assert!(!is_transient("ERR unknown command"));
        assert!(!is_transient("BUSYKEY Target key name already exists."));
        assert!(is_transient("BUSY Redis is busy running a script"));
    }

    #[test]
    fn script_text_has_flags_only_for_cluster_nodes() {
        assert!(script_text(true).starts_with("#!lua flags=allow-cross-slot-keys\n"));
        assert!(!script_text(false).contains("#!lua"));
        assert!(script_text(false).contains("'MISCONF'"));
    }
}
