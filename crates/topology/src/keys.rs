//! Key extraction for any command, from the server's own command table (COMMAND / COMMAND INFO).
//!
//! On Redis 7.0+ the table carries key specs (`begin_search` by index or keyword, `find_keys` by range
//! or key count); before that only `first/last/step`. Both are followed exactly as the server's
//! `COMMAND GETKEYS` follows them, including the fallbacks to the server's built-in key finders for
//! commands whose specs are incomplete (SORT with STORE, MIGRATE with KEYS) or whose keys move with
//! their arguments (EVAL, ZUNIONSTORE, XREAD, ...). Subcommands (OBJECT ENCODING, XINFO STREAM, ...)
//! are looked up as the server does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_resp::{Connection, Frame};

use crate::error::Error;
use crate::slot::key_slot;

const WHAT: &str = "COMMAND";

/// Where a key spec starts looking for keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginSearch {
    /// At a fixed argument index.
    Index(i64),
    /// After a keyword, searched from `start_from` (negative: from the end, backwards).
    Keyword {
        /// The keyword, e.g. `STREAMS`.
        keyword: String,
        /// Where the search starts.
        start_from: i64,
    },
    /// The server cannot say (the keys depend on the arguments in a way specs cannot express).
    Unknown,
}

/// How a key spec finds the keys once it knows where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindKeys {
    /// A range: up to `last_key` (relative; negative counts from the end), every `key_step`.
    Range {
        /// Last key, relative to the first one; negative means from the end of the arguments.
        last_key: i64,
        /// Distance between keys.
        key_step: i64,
        /// With `last_key == -1`, only `1/limit` of the remaining arguments are keys (0 = all).
        limit: i64,
    },
    /// The number of keys is an argument.
    KeyNum {
        /// Index of the count argument, relative to the start.
        key_num_index: i64,
        /// Index of the first key, relative to the start.
        first_key: i64,
        /// Distance between keys.
        key_step: i64,
    },
    /// The server cannot say.
    Unknown,
}

/// One key spec of a command (Redis 7.0+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Flags as the server lists them (`RW`, `access`, `incomplete`, `not_key`, `variable_flags`...).
    pub flags: Vec<String>,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// How keys are found from there.
    pub find_keys: FindKeys,
}

impl KeySpec {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// One command (or subcommand) of the server's command table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lower-case name; subcommands are `container|sub` (`object|encoding`).
    pub name: String,
    /// Arity: the exact argument count (name included) when positive, the minimum when negative.
    pub arity: i64,
    /// Command flags (`write`, `readonly`, `movablekeys`, ...).
    pub flags: Vec<String>,
    /// Legacy first key index (0: no key).
    pub first_key: i64,
    /// Legacy last key index (negative: from the end).
    pub last_key: i64,
    /// Legacy step between keys.
    pub key_step: i64,
    /// Key specs; `None` when the server predates them (before 7.0).
    pub key_specs: Option<Vec<KeySpec>>,
    /// Subcommands (7.0+), each with its own key specs.
    pub subcommands: Vec<CommandInfo>,
}

impl CommandInfo {
    /// Whether the command has the flag (case-insensitive).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// Whether the command can take keys at all, as `COMMAND GETKEYS` decides.
    pub fn has_keys(&self) -> bool {
        match &self.key_specs {
            Some(specs) => {
                native_finder(&self.name, true).is_some()
                    || specs.iter().any(|s| !s.has_flag("not_key"))
            }
            None => native_finder(&self.name, false).is_some() || self.first_key != 0,
        }
    }

    fn arity_accepts(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// Positions of the keys in `argv` (which starts with the command name), without an arity check.
    fn positions<A: AsRef<[u8]>>(&self, argv: &[A]) -> Vec<usize> {
        match &self.key_specs {
            Some(specs) => {
                let has_keyspec = specs.iter().any(|s| !s.has_flag("not_key"));
                let has_variable_flags = specs.iter().any(|s| s.has_flag("variable_flags"));
                if has_keyspec && !has_variable_flags {
                    if let Some(found) = positions_from_specs(specs, self.arity, argv) {
                        return found;
                    }
                }
                match native_finder(&self.name, true) {
                    Some(finder) => finder(&byte_args(argv)),
                    None => Vec::new(),
                }
            }
            None => match native_finder(&self.name, false) {
                Some(finder) => finder(&byte_args(argv)),
                None => positions_from_table(self.first_key, self.last_key, self.key_step, argv),
            },
        }
    }
}

fn byte_args<A: AsRef<[u8]>>(argv: &[A]) -> Vec<&[u8]> {
    argv.iter().map(AsRef::as_ref).collect()
}

/// The server's command table, indexed by lower-case name.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    commands: HashMap<String, CommandInfo>,
}

impl CommandTable {
    /// Builds the table from a `COMMAND` or `COMMAND INFO ...` reply (6.2 or 7.0+ layout, RESP2 or
    /// RESP3). Null entries (COMMAND INFO of an unknown name) are skipped.
    pub fn from_command_reply(reply: &Frame) -> Result<CommandTable, Error> {
        let entries = as_list(reply, "reply")?;
        let mut commands = HashMap::with_capacity(entries.len());
        for entry in entries {
            if entry.is_null() {
                continue;
            }
            let info = parse_command(entry, 0)?;
            commands.insert(info.name.clone(), info);
        }
        Ok(CommandTable { commands })
    }

    /// Asks the server for its command table (`COMMAND`).
    pub async fn fetch(conn: &mut Connection) -> Result<CommandTable, Error> {
        let node = conn.peer_addr().to_string();
        let reply = conn
            .call(&["COMMAND"])
            .await
            .map_err(|source| Error::Connection {
                command: "COMMAND".into(),
                slot: crate::error::SlotLabel(None),
                node,
                source,
            })?;
        CommandTable::from_command_reply(&reply)
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The top-level commands, in no particular order.
    pub fn commands(&self) -> impl Iterator<Item = &CommandInfo> {
        self.commands.values()
    }

    /// A top-level command by name (any case).
    pub fn get(&self, name: &[u8]) -> Option<&CommandInfo> {
        // Command names are short ASCII: lower-case them on the stack, not in a new String.
        let mut buf = [0u8; 32];
        if name.len() <= buf.len() {
            let lower = &mut buf[..name.len()];
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            if let Ok(key) = std::str::from_utf8(lower) {
                return self.commands.get(key);
            }
        }
        self.commands
            .get(&String::from_utf8_lossy(name).to_ascii_lowercase())
    }

    /// The command or subcommand `argv` invokes, as the server resolves it: a command with
    /// subcommands and at least two arguments is looked up as `name|argv[1]`.
    pub fn lookup<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<&CommandInfo, Error> {
        let raw = argv.first().map(AsRef::as_ref).unwrap_or_default();
        let lower = || String::from_utf8_lossy(raw).to_ascii_lowercase();
        let base = self
            .get(raw)
            .ok_or_else(|| Error::UnknownCommand(lower()))?;
        if argv.len() < 2 || base.subcommands.is_empty() {
            return Ok(base);
        }
        let name = lower();
        let sub = format!(
            "{}|{}",
            name,
            String::from_utf8_lossy(argv[1].as_ref()).to_ascii_lowercase()
        );
        base.subcommands
            .iter()
            .find(|s| s.name == sub)
            .ok_or_else(|| Error::UnknownCommand(sub.replace('|', " ")))
    }

    /// Positions in `argv` (which starts with the command name) of the command's keys, in the order
    /// `COMMAND GETKEYS` lists them. Errors for an unknown command or a wrong number of arguments.
    pub fn key_positions<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Vec<usize>, Error> {
        let info = self.lookup(argv)?;
        if !info.arity_accepts(argv.len()) {
            return Err(Error::WrongArity(info.name.replace('|', " ")));
        }
        Ok(info.positions(argv))
    }

    /// The keys of `argv`, in the order `COMMAND GETKEYS` lists them.
    pub fn keys<'a, A: AsRef<[u8]>>(&self, argv: &'a [A]) -> Result<Vec<&'a [u8]>, Error> {
        Ok(self
            .key_positions(argv)?
            .into_iter()
            .filter_map(|i| argv.get(i))
            .map(AsRef::as_ref)
            .collect())
    }

    /// The one slot all keys of `argv` hash to; `None` when the command has no key. A command whose
    /// keys hash to different slots gives [`Error::CrossSlot`].
    pub fn slot<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Option<u16>, Error> {
        self.route(argv).map(|(_, slot)| slot)
    }

    /// The command `argv` invokes and the one slot of its keys, with a single table lookup (what a
    /// client needs for every command it routes).
    pub(crate) fn route<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
    ) -> Result<(&CommandInfo, Option<u16>), Error> {
        let info = self.lookup(argv)?;
        if !info.arity_accepts(argv.len()) {
            return Err(Error::WrongArity(info.name.replace('|', " ")));
        }
        let mut slot = None;
        for i in info.positions(argv) {
            let Some(key) = argv.get(i) else { continue };
            let this = key_slot(key.as_ref());
            match slot {
                None => slot = Some(this),
                Some(first) if first != this => {
                    return Err(Error::CrossSlot {
                        command: info.name.replace('|', " "),
                        slot: first,
                        other_slot: this,
                    });
                }
                Some(_) => {}
            }
        }
        Ok((info, slot))
    }
}

/// Command tables fetched once per server and shared: keyed by whatever names the server for the
/// caller (usually `host:port`).
#[derive(Debug, Default)]
pub struct CommandTableCache {
    tables: Mutex<HashMap<String, Arc<CommandTable>>>,
}

impl CommandTableCache {
    /// An empty cache.
    pub fn new() -> CommandTableCache {
        CommandTableCache::default()
    }

    /// The cached table for `server`, if fetched before.
    pub fn get(&self, server: &str) -> Option<Arc<CommandTable>> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .cloned()
    }

    /// The table for `server`, fetched through `conn` the first time only.
    pub async fn get_or_fetch(
        &self,
        server: &str,
        conn: &mut Connection,
    ) -> Result<Arc<CommandTable>, Error> {
        if let Some(table) = self.get(server) {
            return Ok(table);
        }
        let table = Arc::new(CommandTable::fetch(conn).await?);
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_owned(), table.clone());
        Ok(table)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing COMMAND replies.

fn as_list<'a>(frame: &'a Frame, part: &str) -> Result<&'a [Frame], Error> {
    match frame {
        Frame::Array(items) | Frame::Set(items) => Ok(items),
        Frame::Attribute { frame, .. } => as_list(frame, part),
        other => Err(Error::parse(
            WHAT,
            format!("{part}: expected an array, got {other:?}"),
        )),
    }
}

fn as_text(frame: &Frame, part: &str) -> Result<String, Error> {
    frame
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| Error::parse(WHAT, format!("{part}: expected a string, got {frame:?}")))
}

fn as_int(frame: &Frame, part: &str) -> Result<i64, Error> {
    frame
        .as_integer()
        .ok_or_else(|| Error::parse(WHAT, format!("{part}: expected an integer, got {frame:?}")))
}

fn texts(frame: &Frame, part: &str) -> Result<Vec<String>, Error> {
    as_list(frame, part)?
        .iter()
        .map(|f| as_text(f, part))
        .collect()
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array.
fn fields<'a>(frame: &'a Frame, part: &str) -> Result<Vec<(String, &'a Frame)>, Error> {
    match frame {
        Frame::Map(entries) => entries
            .iter()
            .map(|(k, v)| Ok((as_text(k, part)?, v)))
            .collect(),
        Frame::Array(items) if items.len() % 2 == 0 => items
            .chunks_exact(2)
            .map(|kv| Ok((as_text(&kv[0], part)?, &kv[1])))
            .collect(),
        other => Err(Error::parse(
            WHAT,
            format!("{part}: expected a map, got {other:?}"),
        )),
    }
}

/// One command entry: `[name, arity, flags, first, last, step, acl-categories?, tips?, key-specs?,
/// subcommands?]`. `depth` stops malformed input from nesting subcommands without end.
fn parse_command(frame: &Frame, depth: usize) -> Result<CommandInfo, Error> {
    let parts = as_list(frame, "command entry")?;
    if parts.len() < 6 {
        return Err(Error::parse(
            WHAT,
            format!(
                "command entry has {} elements, expected at least 6",
                parts.len()
            ),
        ));
    }
    let name = as_text(&parts[0], "name")?.to_ascii_lowercase();
    let context = |e: Error| match e {
        Error::Parse { what, detail } => Error::Parse {
            what,
            detail: format!("'{name}': {detail}"),
        },
        other => other,
    };
    let arity = as_int(&parts[1], "arity").map_err(context)?;
    let flags = texts(&parts[2], "flags").map_err(context)?;
    let first_key = as_int(&parts[3], "first key").map_err(context)?;
    let last_key = as_int(&parts[4], "last key").map_err(context)?;
    let key_step = as_int(&parts[5], "step").map_err(context)?;
    let key_specs = match parts.get(8) {
        Some(specs) => Some(
            as_list(specs, "key specs")
                .and_then(|s| s.iter().map(parse_key_spec).collect())
                .map_err(context)?,
        ),
        None => None,
    };
    let mut subcommands = Vec::new();
    if let Some(subs) = parts.get(9) {
        let subs = as_list(subs, "subcommands").map_err(context)?;
        if depth > 0 && !subs.is_empty() {
            return Err(Error::parse(
                WHAT,
                format!("'{name}': subcommands nested more than one level"),
            ));
        }
        for sub in subs {
            subcommands.push(parse_command(sub, depth + 1)?);
        }
    }
    Ok(CommandInfo {
        name,
        arity,
        flags,
        first_key,
        last_key,
        key_step,
        key_specs,
        subcommands,
    })
}

fn parse_key_spec(frame: &Frame) -> Result<KeySpec, Error> {
    let mut flags = Vec::new();
    let mut begin_search = BeginSearch::Unknown;
    let mut find_keys = FindKeys::Unknown;
    for (key, value) in fields(frame, "key spec")? {
        match key.as_str() {
            "flags" => flags = texts(value, "key spec flags")?,
            "begin_search" => begin_search = parse_begin_search(value)?,
            "find_keys" => find_keys = parse_find_keys(value)?,
            _ => {}
        }
    }
    Ok(KeySpec {
        flags,
        begin_search,
        find_keys,
    })
}

/// The fields of a map reply, by name.
type Fields<'a> = Vec<(String, &'a Frame)>;

/// `{type, spec}` of a begin_search or find_keys entry, with the spec's fields.
fn typed_spec<'a>(frame: &'a Frame, part: &str) -> Result<(String, Fields<'a>), Error> {
    let mut kind = String::new();
    let mut spec = Vec::new();
    for (key, value) in fields(frame, part)? {
        match key.as_str() {
            "type" => kind = as_text(value, part)?,
            "spec" => spec = fields(value, part)?,
            _ => {}
        }
    }
    Ok((kind, spec))
}

fn spec_int(spec: &[(String, &Frame)], name: &str, part: &str) -> Result<i64, Error> {
    let value = spec
        .iter()
        .find(|(k, _)| k == name)
        .ok_or_else(|| Error::parse(WHAT, format!("{part}: missing '{name}'")))?;
    as_int(value.1, part)
}

fn parse_begin_search(frame: &Frame) -> Result<BeginSearch, Error> {
    const PART: &str = "begin_search";
    let (kind, spec) = typed_spec(frame, PART)?;
    Ok(match kind.as_str() {
        "index" => BeginSearch::Index(spec_int(&spec, "index", PART)?),
        "keyword" => {
            let keyword = spec
                .iter()
                .find(|(k, _)| k == "keyword")
                .ok_or_else(|| Error::parse(WHAT, "begin_search: missing 'keyword'"))
                .and_then(|(_, v)| as_text(v, PART))?;
            BeginSearch::Keyword {
                keyword,
                start_from: spec_int(&spec, "startfrom", PART)?,
            }
        }
        _ => BeginSearch::Unknown,
    })
}

fn parse_find_keys(frame: &Frame) -> Result<FindKeys, Error> {
    const PART: &str = "find_keys";
    let (kind, spec) = typed_spec(frame, PART)?;
    Ok(match kind.as_str() {
        "range" => FindKeys::Range {
            last_key: spec_int(&spec, "lastkey", PART)?,
            key_step: spec_int(&spec, "keystep", PART)?,
            limit: spec_int(&spec, "limit", PART)?,
        },
        "keynum" => FindKeys::KeyNum {
            key_num_index: spec_int(&spec, "keynumidx", PART)?,
            first_key: spec_int(&spec, "firstkey", PART)?,
            key_step: spec_int(&spec, "keystep", PART)?,
        },
        _ => FindKeys::Unknown,
    })
}

// ---------------------------------------------------------------------------------------------
// Finding keys. The arithmetic is done in i32 with wrapping, as the server does it in C `int`.

fn to_i32(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Keys from key specs, or `None` when a spec is unknown, incomplete or does not fit the arguments
/// (then the server falls back to its built-in key finder).
fn positions_from_specs<A: AsRef<[u8]>>(
    specs: &[KeySpec],
    arity: i64,
    argv: &[A],
) -> Option<Vec<usize>> {
    let argc = i32::try_from(argv.len()).ok()?;
    let arg = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| argv.get(i))
            .map(AsRef::as_ref)
    };
    let mut out = Vec::new();
    for spec in specs {
        if spec.has_flag("not_key") {
            continue;
        }
        let first = match &spec.begin_search {
            BeginSearch::Index(pos) => to_i32(*pos),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                let start_from = to_i32(*start_from);
                let start = if start_from > 0 {
                    start_from
                } else {
                    argc.wrapping_add(start_from)
                };
                let end = if start_from > 0 { argc - 1 } else { 1 };
                let mut found = 0;
                let mut i = start;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if arg(i).is_some_and(|a| a.eq_ignore_ascii_case(keyword.as_bytes())) {
                        found = i + 1;
                        break;
                    }
                    i = if start <= end { i + 1 } else { i - 1 };
                }
                if found == 0 {
                    continue; // keyword not present: this spec has no keys
                }
                found
            }
            BeginSearch::Unknown => return None,
        };
        let (first, last, step) = match &spec.find_keys {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let (last_key, limit) = (to_i32(*last_key), to_i32(*limit));
                let last = if last_key >= 0 {
                    first.wrapping_add(last_key)
                } else if limit == 0 {
                    argc.wrapping_add(last_key)
                } else {
                    first.wrapping_add(
                        argc.wrapping_sub(first)
                            .wrapping_div(limit)
                            .wrapping_add(last_key),
                    )
                };
                (first, last, to_i32(*key_step))
            }
            FindKeys::KeyNum {
                key_num_index,
                first_key,
                key_step,
            } => {
                let key_num_index = to_i32(*key_num_index);
                if key_num_index >= argc {
                    return None;
                }
                let count = parse_strict_i64(arg(first.wrapping_add(key_num_index))?)?;
                if count < 0 {
                    return None;
                }
                let first = first.wrapping_add(to_i32(*first_key));
                let step = to_i32(*key_step);
                // The server truncates the count to a C int. The count is of keys, not of arguments: with a
                // step over 1 (Valkey 9's `MSETEX numkeys key value ...`, step 2) the last key is `count - 1`
                // steps after the first, as Valkey's `COMMAND GETKEYS` finds it.
                (
                    first,
                    first.wrapping_add((count as i32).wrapping_sub(1).wrapping_mul(step)),
                    step,
                )
            }
            FindKeys::Unknown => return None,
        };
        if last >= argc || last < first || first >= argc || first < 0 || step <= 0 {
            return None;
        }
        let mut i = first;
        while i <= last {
            if arity >= 0 && i >= argc {
                return None;
            }
            out.push(usize::try_from(i).ok()?);
            match i.checked_add(step) {
                Some(next) => i = next,
                None => break,
            }
        }
        if spec.has_flag("incomplete") {
            return None;
        }
    }
    Some(out)
}

/// Keys from the legacy `first/last/step` triple (servers before 7.0).
fn positions_from_table<A: AsRef<[u8]>>(
    first: i64,
    last: i64,
    step: i64,
    argv: &[A],
) -> Vec<usize> {
    let argc = i64::try_from(argv.len()).unwrap_or(i64::MAX);
    if first <= 0 || step <= 0 {
        return Vec::new();
    }
    let last = if last < 0 { argc + last } else { last };
    let mut out = Vec::new();
    let mut i = first;
    while i <= last {
        if i >= argc {
            return Vec::new();
        }
        out.push(i as usize);
        i += step;
    }
    out
}

/// `string2ll`: an optional `-`, then `0` alone or a digit string without leading zero; fits i64.
fn parse_strict_i64(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        value = if negative {
            value.checked_mul(10)?.checked_sub(d)?
        } else {
            value.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(value)
}

/// C `atoi` as glibc does it: `(int) strtol(s, NULL, 10)` (leading spaces, sign, digits; saturating).
fn c_atoi(s: &[u8]) -> i32 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'-' || s[i] == b'+') {
        negative = s[i] == b'-';
        i += 1;
    }
    let mut value: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = i64::from(s[i] - b'0');
        value = if negative {
            value.saturating_mul(10).saturating_sub(d)
        } else {
            value.saturating_mul(10).saturating_add(d)
        };
        i += 1;
    }
    value as i32
}

type Finder = fn(&[&[u8]]) -> Vec<usize>;

/// The server's built-in key finder for `name`, if it has one (`v7`: the 7.0+ set, else the 6.2 set).
fn native_finder(name: &str, v7: bool) -> Option<Finder> {
    let finder: Finder = match name {
        "zunionstore" | "zinterstore" | "zdiffstore" => |a| numkeys_keys(a, 1, 2, 3),
        "zunion" | "zinter" | "zdiff" => |a| numkeys_keys(a, 0, 1, 2),
        "eval" | "evalsha" => |a| numkeys_keys(a, 0, 2, 3),
        "sort" => sort_keys,
        "georadius" | "georadiusbymember" => georadius_keys,
        "xread" | "xreadgroup" => xread_keys,
        "migrate" if v7 => migrate_keys_v7,
        "migrate" => migrate_keys_v6,
        "memory" if !v7 => memory_keys,
        "stralgo" if !v7 => lcs_keys,
        "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "blmpop" | "bzmpop" if v7 => {
            |a| numkeys_keys(a, 0, 2, 3)
        }
        "lmpop" | "zmpop" | "sintercard" | "zintercard" if v7 => |a| numkeys_keys(a, 0, 1, 2),
        "sort_ro" | "set" | "bitfield" if v7 => |_| vec![1],
        _ => return None,
    };
    Some(finder)
}

/// `genericGetKeys`: `num` keys from `first`, the count at `count_at`, a store key at `store_at` (0: none)
/// listed last.
fn numkeys_keys(argv: &[&[u8]], store_at: usize, count_at: usize, first: usize) -> Vec<usize> {
    let Some(count) = argv.get(count_at).map(|c| c_atoi(c)) else {
        return Vec::new();
    };
    let available = argv.len().saturating_sub(first);
    if count < 1 || count as usize > available {
        return Vec::new();
    }
    let mut out: Vec<usize> = (first..first + count as usize).collect();
    if store_at != 0 {
        out.push(store_at);
    }
    out
}

/// SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dst]: the key and the last STORE.
fn sort_keys(argv: &[&[u8]]) -> Vec<usize> {
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argv.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    std::iter::once(1).chain(store).collect()
}

/// MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k ...] (7.0).
fn migrate_keys_v7(argv: &[&[u8]]) -> Vec<usize> {
    let mut first = 3;
    let mut num = 1;
    if argv.len() > 6 {
        let mut i = 6;
        while i < argv.len() {
            let a = argv[i];
            if a.eq_ignore_ascii_case(b"keys") {
                if argv.get(3).is_some_and(|k| !k.is_empty()) {
                    num = 0; // a key and KEYS together: a syntax error, no keys
                } else {
                    first = i + 1;
                    num = argv.len() - first;
                }
                break;
            }
            if a.eq_ignore_ascii_case(b"auth") {
                i += 1;
            } else if a.eq_ignore_ascii_case(b"auth2") {
                i += 2;
            }
            i += 1;
        }
    }
    (first..first + num).collect()
}

/// MIGRATE as 6.2 reads it: KEYS counts only when the key argument is empty; AUTH is not skipped.
fn migrate_keys_v6(argv: &[&[u8]]) -> Vec<usize> {
    let mut first = 3;
    let mut num = 1;
    if argv.len() > 6 {
        for i in 6..argv.len() {
            if argv[i].eq_ignore_ascii_case(b"keys") && argv.get(3).is_some_and(|k| k.is_empty()) {
                first = i + 1;
                num = argv.len() - first;
                break;
            }
        }
    }
    (first..first + num).collect()
}

/// GEORADIUS / GEORADIUSBYMEMBER: the key and the last STORE or STOREDIST target.
fn georadius_keys(argv: &[&[u8]]) -> Vec<usize> {
    let mut store = None;
    let mut i = 5;
    while i < argv.len() {
        let a = argv[i];
        if (a.eq_ignore_ascii_case(b"store") || a.eq_ignore_ascii_case(b"storedist"))
            && i + 1 < argv.len()
        {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    std::iter::once(1).chain(store).collect()
}

/// XREAD / XREADGROUP: the first half of what follows STREAMS (after the known options).
fn xread_keys(argv: &[&[u8]]) -> Vec<usize> {
    let mut streams_at = None;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"block") || a.eq_ignore_ascii_case(b"count") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"group") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"noack") {
        } else if a.eq_ignore_ascii_case(b"streams") {
            streams_at = Some(i);
            break;
        } else {
            break;
        }
        i += 1;
    }
    let Some(at) = streams_at else {
        return Vec::new();
    };
    let rest = argv.len() - at - 1;
    if rest == 0 || !rest.is_multiple_of(2) {
        return Vec::new();
    }
    (at + 1..at + 1 + rest / 2).collect()
}

/// MEMORY USAGE key (6.2).
fn memory_keys(argv: &[&[u8]]) -> Vec<usize> {
    if argv.len() >= 3 && argv[1].eq_ignore_ascii_case(b"usage") {
        vec![2]
    } else {
        Vec::new()
    }
}

/// STRALGO LCS ... KEYS k1 k2 (6.2).
fn lcs_keys(argv: &[&[u8]]) -> Vec<usize> {
    for i in 1..argv.len() {
        let more = argv.len() - 1 - i;
        if argv[i].eq_ignore_ascii_case(b"strings") {
            break;
        }
        if argv[i].eq_ignore_ascii_case(b"keys") && more >= 2 {
            return vec![i + 1, i + 2];
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::bulk(s)
    }

    fn ints(v: &[i64]) -> Vec<Frame> {
        v.iter().map(|&i| Frame::Integer(i)).collect()
    }

    /// A 6.2-style entry: name, arity, flags, first, last, step.
    fn legacy(name: &str, arity: i64, first: i64, last: i64, step: i64) -> Frame {
        let mut parts = vec![bulk(name), Frame::Integer(arity), Frame::Array(vec![])];
        parts.extend(ints(&[first, last, step]));
        Frame::Array(parts)
    }

    /// A 7.0-style entry with one `index` + `range` key spec and optional subcommands.
    fn with_spec(name: &str, arity: i64, index: i64, last_key: i64, subs: Vec<Frame>) -> Frame {
        let spec = Frame::Array(vec![
            bulk("flags"),
            Frame::Array(vec![bulk("RW")]),
            bulk("begin_search"),
            Frame::Array(vec![
                bulk("type"),
                bulk("index"),
                bulk("spec"),
                Frame::Array(vec![bulk("index"), Frame::Integer(index)]),
            ]),
            bulk("find_keys"),
            Frame::Array(vec![
                bulk("type"),
                bulk("range"),
                bulk("spec"),
                Frame::Array(vec![
                    bulk("lastkey"),
                    Frame::Integer(last_key),
                    bulk("keystep"),
                    Frame::Integer(1),
                    bulk("limit"),
                    Frame::Integer(0),
                ]),
            ]),
        ]);
        let specs = if index == 0 { vec![] } else { vec![spec] };
        let mut parts = vec![bulk(name), Frame::Integer(arity), Frame::Array(vec![])];
        parts.extend(ints(&[index, index, 1]));
        parts.extend([
            Frame::Array(vec![]),
            Frame::Array(vec![]),
            Frame::Array(specs),
            Frame::Array(subs),
        ]);
        Frame::Array(parts)
    }

    #[test]
    fn subcommands_are_looked_up_as_the_server_does() {
        let object = with_spec(
            "object",
            -2,
            0,
            0,
            vec![with_spec("object|encoding", 3, 2, 0, vec![])],
        );
        let table = CommandTable::from_command_reply(&Frame::Array(vec![object])).unwrap();
        assert_eq!(
            table.keys(&["OBJECT", "ENCODING", "k"]).unwrap(),
            vec![b"k".as_slice()]
        );
        assert!(
            matches!(table.keys(&["object", "nope", "k"]), Err(Error::UnknownCommand(n)) if n == "object nope")
        );
        assert!(
            matches!(table.keys(&["object", "encoding"]), Err(Error::WrongArity(n)) if n == "object encoding")
        );
        assert!(matches!(
            table.keys(&["nosuch"]),
            Err(Error::UnknownCommand(_))
        ));
    }

    #[test]
    fn keys_in_different_slots_give_a_crossslot_error() {
        let mset = with_spec("mset", -3, 1, -1, vec![]);
        let table = CommandTable::from_command_reply(&Frame::Array(vec![mset])).unwrap();
        let err = table.slot(&["MSET", "a", "b", "c"]).unwrap_err();
        assert!(matches!(err, Error::CrossSlot { .. }));
        assert!(err.is_command_error());
        assert_eq!(
            table.slot(&["MSET", "{t}a", "{t}b"]).unwrap(),
            Some(crate::key_slot(b"t"))
        );
    }

    #[test]
    fn legacy_tables_use_first_last_step_and_native_finders() {
        let table = CommandTable::from_command_reply(&Frame::Array(vec![
            legacy("mset", -3, 1, -1, 2),
            legacy("eval", -3, 0, 0, 0),
            legacy("ping", -1, 0, 0, 0),
        ]))
        .unwrap();
        assert_eq!(
            table.key_positions(&["mset", "a", "1", "b", "2"]).unwrap(),
            vec![1, 3]
        );
        assert_eq!(
            table
                .key_positions(&["eval", "s", "2", "a", "b", "arg"])
                .unwrap(),
            vec![3, 4]
        );
        assert_eq!(
            table.key_positions(&["eval", "s", "9", "a"]).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(table.slot(&["ping"]).unwrap(), None);
    }

    #[test]
    fn numbers_are_read_as_the_server_reads_them() {
        assert_eq!(c_atoi(b" 2"), 2);
        assert_eq!(c_atoi(b"2x"), 2);
        assert_eq!(c_atoi(b"-3"), -3);
        assert_eq!(c_atoi(b"x"), 0);
        assert_eq!(c_atoi(b"99999999999999999999"), -1); // (int) LONG_MAX
        assert_eq!(parse_strict_i64(b"2"), Some(2));
        assert_eq!(parse_strict_i64(b"0"), Some(0));
        assert_eq!(parse_strict_i64(b"-0"), None);
        assert_eq!(parse_strict_i64(b"02"), None);
        assert_eq!(parse_strict_i64(b" 2"), None);
        assert_eq!(parse_strict_i64(b"99999999999999999999"), None);
    }
}
