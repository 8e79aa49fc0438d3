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
//! 2. It runs the commands with `redis.pcall`, tracking the stream position after each: the end offset of
//!    each unit (a command, or a source `MULTI`/`EXEC` group) and the source stream's database.
//! 3. At the first error it stops, stores the checkpoint at the position right before the failed command (if
//!    anything of the batch applied) and returns the number of commands applied and the error. A resume then
//!    sends exactly the failed command and what follows. Inside a source transaction the position is the unit's
//!    start plus `part` commands (see [`crate::checkpoint`]).
//! 4. Otherwise it stores the checkpoint at the batch's end.
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
//! Commands flagged `noscript` (`FUNCTION ...`, `SCRIPT ...`, `EVAL`/`FCALL` from old sources) are applied
//! alone, after everything before them is acknowledged: `WATCH` the checkpoint, check it, then
//! `MULTI`, the command, the checkpoint `SET`, `EXEC` (`Alone`). `FLUSHALL`/`FLUSHDB` run inside the script
//! (the checkpoint is stored after them, so they cannot erase it); `SWAPDB` too, followed by deleting the
//! checkpoint copy it moved into the other database. A command with more arguments than a script can unpack
//! ([`MAX_SCRIPT_ARGS`]) is split into commands of the same meaning when it is variadic (`RPUSH`, `SADD`, `HSET`,
//! `ZADD`, `DEL`, `MSET`...), inside the same script, so it stays atomic; any other goes alone like a
//! `noscript` command.

use bytes::Bytes;
use ferry_resp::Frame;
use tracing::{debug, warn};

use crate::checkpoint::{Checkpoint, Position};
use crate::error::Error;
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
/// `KEYS[1]` is the checkpoint key. `ARGV`: the checkpoint database, the expected stored value, the checkpoint
/// template (offset `{o}`, database `{d}`, part `{p}`), `1` for the error policy `log`, the start offset,
/// stream database and part, then a sequence of: `n arg1..argn` (a command), `0 offset` (a unit ends there),
/// `-1 db` (select a target database), `-2 db` (the source stream's database changed), `-3 db` (delete the
/// checkpoint key's copy `SWAPDB` moved to database `db`). Reply: `{-1, stored}` when the chain does not hold,
/// else `{applied, error or "", logged index, logged error, ...}`.
pub(crate) const BATCH_SCRIPT: &str = r#"
redis.call('SELECT', ARGV[1])
local stored = redis.call('GET', KEYS[1])
if (stored or '') ~= ARGV[2] then return {-1, stored or ''} end
local tpl, log = ARGV[3], ARGV[4] == '1'
local off, db, part = ARGV[5], ARGV[6], tonumber(ARGV[7])
local cur, n, logged = ARGV[1], 0, {}
local function store()
  redis.call('SELECT', ARGV[1])
  local v = string.gsub(tpl, '{o}', off)
  v = string.gsub(v, '{d}', db)
  v = string.gsub(v, '{p}', tostring(part))
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
local function fail(e)
  if n > 0 then store() end
  local out = {n, e}
  for _, v in ipairs(logged) do out[#out + 1] = v end
  return out
end
local i, last, pcall, unpack, tonumber = 8, #ARGV, redis.pcall, unpack, tonumber
while i <= last do
  local c = tonumber(ARGV[i])
  if c > 0 then
    local r = pcall(unpack(ARGV, i + 1, i + c))
    if type(r) == 'table' and r.err then
      -- Redis 6.2 prefixes the error with the script's place: "@user_script: 3: -OOM ...".
      local e = string.gsub(string.gsub(r.err, '^@user_script: %d+: %-', ''), '%s+$', '')
      if not log or transient(e) then return fail(e) end
      logged[#logged + 1] = n
      logged[#logged + 1] = e
    end
    n = n + 1
    part = part + 1
    i = i + c + 1
  elseif c == 0 then
    off, part, i = ARGV[i + 1], 0, i + 2
  elseif c == -1 then
    local r = redis.pcall('SELECT', ARGV[i + 1])
    if type(r) == 'table' and r.err then
      return fail(string.gsub(string.gsub(r.err, '^@user_script: %d+: %-', ''), '%s+$', ''))
    end
    cur, i = ARGV[i + 1], i + 2
  elseif c == -2 then
    db, i = ARGV[i + 1], i + 2
  else
    redis.call('SELECT', ARGV[i + 1])
    redis.call('DEL', KEYS[1])
    redis.call('SELECT', cur)
    i = i + 2
  end
end
store()
local out = {n, ''}
for _, v in ipairs(logged) do out[#out + 1] = v end
return out
"#;

/// The script text for a target: with `#!lua flags=allow-cross-slot-keys` on a cluster node (7.0+), without
/// flags on a standalone server (6.2 has no flags).
pub fn script_text(cluster: bool) -> String {
    let codes: Vec<String> = TRANSIENT_ERRORS.iter().map(|c| format!("'{c}'")).collect();
    let table = format!("local TRANSIENT = {{{}}}", codes.join(", "));
    if cluster {
        format!("#!lua flags=allow-cross-slot-keys\n{table}{BATCH_SCRIPT}")
    } else {
        format!("{table}{BATCH_SCRIPT}")
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
    /// The stream database of the last `-2` marker (or the start).
    marked_db: i64,
}

/// Units of the live stream become chained batch scripts (sans I/O: the sink writes what this returns and
/// hands back the replies).
#[derive(Debug)]
pub(crate) struct ChainWriter {
    sha: Bytes,
    key: Bytes,
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
    pub(crate) fn new(key: &str, sha: Bytes, select: bool, opts: &SinkOptions) -> ChainWriter {
        ChainWriter {
            sha,
            key: Bytes::from(key.to_string()),
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

    /// The stream position after everything handed over (offset).
    pub(crate) fn seen(&self) -> u64 {
        self.mark.offset
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
            if needs_alone(&cmd.argv) {
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
        self.mark = unit_end;
        if let Some(open) = &mut self.open {
            open.argv.push(Bytes::from_static(b"0"));
            open.argv.push(Bytes::from(unit.end_offset.to_string()));
            if stream_db != open.marked_db {
                open.argv.push(Bytes::from_static(b"-2"));
                open.argv.push(Bytes::from(stream_db.to_string()));
                open.marked_db = stream_db;
            }
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
            self.template.clone(),
            Bytes::from_static(if self.log { b"1" } else { b"0" }),
            Bytes::from(self.mark.offset.to_string()),
            Bytes::from(self.mark.db.to_string()),
            Bytes::from(self.mark.part.to_string()),
        ]);
        Open {
            argv,
            names: Vec::new(),
            bytes: 0,
            script_db: self.checkpoint_db,
            marked_db: self.mark.db,
        }
    }

    /// Adds one command (already within the script's argument limit) in target database `db`.
    fn add(&mut self, db: i64, argv: Vec<Bytes>) {
        if self.open.is_none() {
            self.open = Some(self.open_batch());
        }
        let select = self.select;
        let checkpoint_db = self.checkpoint_db;
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if select && db != open.script_db {
            open.argv.push(Bytes::from_static(b"-1"));
            open.argv.push(Bytes::from(db.to_string()));
            open.script_db = db;
        }
        let swap = swapped_checkpoint_copy(&argv, checkpoint_db);
        open.bytes += crate::pipeline::wire_size(&argv);
        open.names.push(command_name(&argv));
        open.argv.push(Bytes::from(argv.len().to_string()));
        open.argv.extend(argv);
        if let Some(other) = swap {
            open.argv.push(Bytes::from_static(b"-3"));
            open.argv.push(Bytes::from(other.to_string()));
        }
    }

    fn close(&mut self) -> Option<Batch> {
        let mut open = self.open.take()?;
        // Closed between units: the script moves to the latest position (skipped frames included). Closed inside
        // a unit (a command of it goes alone next): the script's own offset and count are the position already.
        if self.mark.part == 0 {
            open.argv.push(Bytes::from_static(b"0"));
            open.argv.push(Bytes::from(self.mark.offset.to_string()));
            if self.mark.db != open.marked_db {
                open.argv.push(Bytes::from_static(b"-2"));
                open.argv.push(Bytes::from(self.mark.db.to_string()));
            }
        }
        self.tail = self.encode(self.mark);
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
fn needs_alone(argv: &[Bytes]) -> bool {
    let name = command_name(argv);
    matches!(
        name.as_str(),
        "function"
            | "script"
            | "eval"
            | "evalsha"
            | "eval_ro"
            | "evalsha_ro"
            | "fcall"
            | "fcall_ro"
    ) || (argv.len() > MAX_SCRIPT_ARGS && split_shape(&name).is_none())
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
    if (argv.len() - head) % group != 0 {
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
        }
    }

    fn args(batch: &Batch) -> Vec<String> {
        batch
            .argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    fn reply(items: Vec<Frame>) -> Frame {
        Frame::Array(items)
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::from(s.to_string()))
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
        assert_eq!(a[6], format!("v2 {ID} {{o}} db={{d}} part={{p}} epoch=0"));
        assert_eq!(&a[7..11], ["0", "100", "0", "0"]);
        assert_eq!(
            &a[11..],
            ["-1", "2", "3", "SET", "a", "1", "0", "110", "-2", "2", "0", "110"]
        );
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
        assert_eq!(&a[8..11], ["100", "0", "1"], "starts inside the unit");
        assert_eq!(
            &a[11..],
            ["-1", "0", "2", "INCR", "b", "0", "130", "0", "130"]
        );
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
        assert_eq!(
            &a[11..],
            ["-1", "0", "2", "INCR", "a"],
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
        assert_eq!(&a[8..11], ["100", "0", "2"]);
        assert_eq!(
            &a[11..],
            ["-1", "0", "2", "INCR", "b", "0", "150", "0", "150"]
        );
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
        assert_eq!(&a[8..11], ["180", "3", "0"], "starts where the stream is");
        assert_eq!(&a[11..], ["0", "180"]);
        assert!(w.checkpoint_only().is_none());
    }

    #[test]
    fn swapdb_of_the_checkpoint_db_deletes_the_moved_copy() {
        let mut w = writer(false);
        let mut c = SinkCounters::default();
        w.push(unit(110, 0, &[&["SWAPDB", "15", "3"]]), &mut c);
        let a = args(&w.flush().unwrap());
        assert_eq!(
            &a[11..],
            ["-1", "0", "3", "SWAPDB", "15", "3", "-3", "3", "0", "110", "0", "110"]
        );
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
        assert!(!needs_alone(&argv));
        let mut xadd = vec![
            Bytes::from_static(b"XADD"),
            Bytes::from_static(b"s"),
            Bytes::from_static(b"1-1"),
        ];
        xadd.extend((0..8000).map(|i| Bytes::from(i.to_string())));
        assert!(needs_alone(&xadd), "not splittable: alone");
        assert_eq!(split_big(xadd).len(), 1);
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
