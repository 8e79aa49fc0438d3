//! How a key of the source's RDB becomes commands for the target.

use bytes::Bytes;
use tracing::warn;

/// What to do when a key of the RDB already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Stop the job with a clear error naming the key.
    #[default]
    Panic,
    /// Overwrite the target's key (`RESTORE ... REPLACE`).
    Rewrite,
    /// Keep the target's key and count it as skipped.
    Skip,
}

impl std::str::FromStr for ConflictPolicy {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "panic" => Ok(ConflictPolicy::Panic),
            "rewrite" => Ok(ConflictPolicy::Rewrite),
            "skip" => Ok(ConflictPolicy::Skip),
            other => Err(crate::error::Error::Config(format!(
                "conflict policy {other:?}: expected panic, rewrite or skip"
            ))),
        }
    }
}

/// The eviction hint kept with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionHint {
    /// Seconds since last access (LRU policies): `IDLETIME`.
    IdleSeconds(u64),
    /// The LFU counter: `FREQ`.
    Frequency(u8),
}

/// Builds `RESTORE key 0|<abs ms> payload ABSTTL [REPLACE] [IDLETIME s | FREQ f]`.
///
/// `expire_at_ms` is the absolute expiry time in Unix milliseconds (`None`: no expiry); with `ABSTTL` the
/// expiry is never recomputed as a relative TTL.
pub fn restore_command(
    key: Bytes,
    payload: Bytes,
    expire_at_ms: Option<i64>,
    replace: bool,
    hint: Option<EvictionHint>,
) -> Vec<Bytes> {
    let ttl = match expire_at_ms {
        Some(ms) if ms > 0 => Bytes::from(ms.to_string()),
        _ => Bytes::from_static(b"0"),
    };
    let mut argv = vec![
        Bytes::from_static(b"RESTORE"),
        key,
        ttl,
        payload,
        Bytes::from_static(b"ABSTTL"),
    ];
    if replace {
        argv.push(Bytes::from_static(b"REPLACE"));
    }
    match hint {
        Some(EvictionHint::IdleSeconds(s)) => {
            argv.push(Bytes::from_static(b"IDLETIME"));
            argv.push(Bytes::from(s.to_string()));
        }
        Some(EvictionHint::Frequency(f)) => {
            argv.push(Bytes::from_static(b"FREQ"));
            argv.push(Bytes::from(f.to_string()));
        }
        None => {}
    }
    argv
}

/// Most elements per element command (`RPUSH`, `SADD`, `HSET`, `ZADD`), so no command is huge.
pub const ELEMENTS_PER_COMMAND: usize = 512;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn num(n: impl ToString) -> Bytes {
    Bytes::from(n.to_string())
}

/// A score as Redis parses it back exactly (`inf` written `+inf`).
pub fn score(f: f64) -> Bytes {
    if f == f64::INFINITY {
        b("+inf")
    } else if f == f64::NEG_INFINITY {
        b("-inf")
    } else {
        num(f)
    }
}

/// The commands that build `value` (or, for a chunk of a big value, add its elements) at `key`, for a target
/// loading RDB version `target_rdb` (stream metadata commands differ before 7.0). Each command is handed to
/// `emit`. The key is not deleted first and no expiry is set (see [`expire_command`]).
pub fn value_commands(
    key: &Bytes,
    value: &ferry_rdb::Value,
    target_rdb: u16,
    emit: &mut dyn FnMut(Vec<Bytes>),
) -> Result<(), crate::error::Error> {
    use ferry_rdb::Value;
    match value {
        Value::String(s) => emit(vec![b("SET"), key.clone(), s.clone()]),
        Value::List(items) => {
            for chunk in items.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("RPUSH"), key.clone()];
                argv.extend(chunk.iter().cloned());
                emit(argv);
            }
        }
        Value::Set(members) => {
            for chunk in members.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("SADD"), key.clone()];
                argv.extend(chunk.iter().cloned());
                emit(argv);
            }
        }
        Value::SortedSet(pairs) => {
            for chunk in pairs.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("ZADD"), key.clone()];
                for (member, s) in chunk {
                    argv.push(score(*s));
                    argv.push(member.clone());
                }
                emit(argv);
            }
        }
        Value::Hash(fields) => {
            for chunk in fields.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("HSET"), key.clone()];
                for f in chunk {
                    argv.push(f.field.clone());
                    argv.push(f.value.clone());
                }
                emit(argv);
            }
            for f in fields {
                if let Some(at) = f.expire_at_ms {
                    emit(vec![
                        b("HPEXPIREAT"),
                        key.clone(),
                        num(at),
                        b("FIELDS"),
                        b("1"),
                        f.field.clone(),
                    ]);
                }
            }
        }
        Value::Stream(stream) => stream_commands(key, stream, target_rdb, emit),
        Value::Module(m) => {
            return Err(crate::error::Error::Rdb(format!(
                "module value of type {} cannot be converted for this target",
                m.name
            )))
        }
    }
    Ok(())
}

fn stream_commands(
    key: &Bytes,
    stream: &ferry_rdb::Stream,
    target_rdb: u16,
    emit: &mut dyn FnMut(Vec<Bytes>),
) {
    for entry in &stream.entries {
        let mut argv = vec![b("XADD"), key.clone(), num(entry.id)];
        for (f, v) in &entry.fields {
            argv.push(f.clone());
            argv.push(v.clone());
        }
        emit(argv);
    }
    let zero = ferry_rdb::StreamId::default();
    if stream.entries.is_empty() && stream.groups.is_empty() && stream.last_id == zero {
        return;
    }
    if stream.entries.is_empty() {
        // Create the key empty: a group made with MKSTREAM, removed again.
        emit(vec![
            b("XGROUP"),
            b("CREATE"),
            key.clone(),
            b("ferry-tmp"),
            b("0"),
            b("MKSTREAM"),
        ]);
        emit(vec![b("XGROUP"), b("DESTROY"), key.clone(), b("ferry-tmp")]);
    }
    if stream.last_id != zero {
        let mut argv = vec![b("XSETID"), key.clone(), num(stream.last_id)];
        if target_rdb >= 10 {
            argv.extend([
                b("ENTRIESADDED"),
                num(stream.entries_added),
                b("MAXDELETEDID"),
                num(stream.max_deleted_id),
            ]);
        }
        emit(argv);
    }
    for group in &stream.groups {
        let mut argv = vec![
            b("XGROUP"),
            b("CREATE"),
            key.clone(),
            group.name.clone(),
            num(group.last_id),
        ];
        // An unknown counter (Redis's -1) is left out: the target then does not know it either.
        if let (Some(read), true) = (group.entries_read_known(), target_rdb >= 10) {
            argv.extend([b("ENTRIESREAD"), num(read)]);
        }
        emit(argv);
        for consumer in &group.consumers {
            emit(vec![
                b("XGROUP"),
                b("CREATECONSUMER"),
                key.clone(),
                group.name.clone(),
                consumer.name.clone(),
            ]);
            for id in &consumer.pending {
                let pel = group.pending.iter().find(|p| p.id == *id);
                let mut argv = vec![
                    b("XCLAIM"),
                    key.clone(),
                    group.name.clone(),
                    consumer.name.clone(),
                    b("0"),
                    num(id),
                ];
                if let Some(p) = pel {
                    argv.extend([
                        b("TIME"),
                        num(p.delivery_time_ms),
                        b("RETRYCOUNT"),
                        num(p.delivery_count),
                    ]);
                }
                argv.extend([b("FORCE"), b("JUSTID")]);
                emit(argv);
            }
        }
    }
}

/// `PEXPIREAT key <ms>` for a key built with element commands.
pub fn expire_command(key: &Bytes, expire_at_ms: i64) -> Vec<Bytes> {
    vec![b("PEXPIREAT"), key.clone(), num(expire_at_ms)]
}

/// Adapts a live command of a newer source for an older target (RDB version below 10: before 7.0), which would
/// refuse the whole command:
/// - the stream arguments Redis 7.0 added and propagates (`ENTRIESREAD` of `XGROUP CREATE/SETID`,
///   `ENTRIESADDED`/`MAXDELETEDID` of `XSETID`) are removed;
/// - the condition of an expiry (`NX`, `XX`, `GT`, `LT`, Redis 7.0), which a source propagates in its
///   `PEXPIREAT` only when the expiry was set, is removed: the target holds what the source held then, so the
///   expiry without it is the same write.
pub fn adapt_for_target(argv: &mut Vec<Bytes>, target_rdb: u16) {
    if target_rdb >= 10 || argv.is_empty() {
        return;
    }
    let name = argv[0].to_ascii_lowercase();
    if matches!(
        name.as_slice(),
        b"pexpireat" | b"expireat" | b"pexpire" | b"expire"
    ) {
        if argv.len() == 4
            && [&b"nx"[..], b"xx", b"gt", b"lt"]
                .iter()
                .any(|c| argv[3].eq_ignore_ascii_case(c))
        {
            argv.truncate(3);
        }
        return;
    }
    let (from, options): (usize, &[&[u8]]) = match name.as_slice() {
        b"xgroup" => (5, &[b"entriesread"]),
        b"xsetid" => (3, &[b"entriesadded", b"maxdeletedid"]),
        _ => return,
    };
    let mut i = from.min(argv.len());
    while i + 1 < argv.len() {
        let opt = argv[i].to_ascii_lowercase();
        if options.contains(&opt.as_slice()) {
            argv.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
}

/// Removes `LIMIT count` from an `XADD` or `XTRIM` whose trim is exact (`=` or no operator), for every target.
///
/// A source turns an approximate trim (`MAXLEN ~ 1000 LIMIT 100`) into the exact one it did before propagating it
/// (`MAXLEN = 937 LIMIT 100`: the length or first ID it left), and keeps the `LIMIT`, which its replicas ignore
/// for an exact trim. Any other client, ferry's included, gets "LIMIT cannot be used without the special ~
/// option" for that command, so without this a job stopped at the first such write. The exact trim alone removes
/// what the source removed.
pub fn exact_trim_without_limit(argv: &mut Vec<Bytes>) {
    let Some(options) = stream_options(argv) else {
        return;
    };
    if let (Some(at), Some(trim)) = (options.limit, options.trim) {
        if !trim.approximate && at + 1 < argv.len() {
            argv.drain(at..at + 2);
        }
    }
}

/// Where the options of an `XADD` or `XTRIM` are, read once for every decision on them:
/// `XADD key [NOMKSTREAM] [KEEPREF|DELREF|ACKED] [MAXLEN|MINID [=|~] threshold [LIMIT count]] id ...` and
/// `XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT count] [KEEPREF|DELREF|ACKED]`.
struct StreamOptions {
    xadd: bool,
    nomkstream: bool,
    /// The reference policy (lower case) and where it is.
    policy: Option<(usize, &'static str)>,
    trim: Option<Trim>,
    /// Where `LIMIT` is.
    limit: Option<usize>,
    /// Where the options end: an `XADD`'s ID, or the end of an `XTRIM` (its length when well formed).
    end: usize,
}

/// The trim clause of an `XADD` or `XTRIM`.
#[derive(Clone, Copy)]
struct Trim {
    /// Where `MAXLEN` or `MINID` is.
    strategy: usize,
    /// `~` (approximate) rather than `=` or no operator (exact).
    approximate: bool,
    /// Where the threshold is.
    threshold: usize,
}

/// The options of an `XADD` or `XTRIM` (`None` for any other command and for a trim without its threshold).
fn stream_options(argv: &[Bytes]) -> Option<StreamOptions> {
    let name = argv.first()?;
    let xadd = name.eq_ignore_ascii_case(b"xadd");
    if !xadd && !name.eq_ignore_ascii_case(b"xtrim") {
        return None;
    }
    let is = |a: &Bytes, w: &[u8]| a.eq_ignore_ascii_case(w);
    let mut o = StreamOptions {
        xadd,
        nomkstream: false,
        policy: None,
        trim: None,
        limit: None,
        end: argv.len(),
    };
    let mut at = 2;
    while let Some(a) = argv.get(at) {
        if let Some(p) = ["keepref", "delref", "acked"]
            .into_iter()
            .find(|w| is(a, w.as_bytes()))
        {
            o.policy = Some((at, p));
            at += 1;
        } else if is(a, b"nomkstream") {
            o.nomkstream = true;
            at += 1;
        } else if (is(a, b"maxlen") || is(a, b"minid")) && o.trim.is_none() {
            let strategy = at;
            at += 1;
            let operator = argv.get(at).map(|a| &a[..]);
            let approximate = operator == Some(b"~");
            if approximate || operator == Some(b"=") {
                at += 1;
            }
            argv.get(at)?;
            o.trim = Some(Trim {
                strategy,
                approximate,
                threshold: at,
            });
            at += 1;
        } else if is(a, b"limit") && o.trim.is_some() {
            o.limit = Some(at);
            at += 2;
        } else {
            // XADD's ID (or a word an XTRIM does not take).
            o.end = at;
            break;
        }
    }
    Some(o)
}

// ---------------------------------------------------------------------------------------------------------
// Target policy: what to do with a key or command the target cannot hold.
// ---------------------------------------------------------------------------------------------------------

/// Which project a server comes from. Their RDB formats part ways after Redis 7.2 (Redis 7.4+ writes 12 and up,
/// Valkey 9 writes 80 with its own magic), so a target's format is its family and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerFamily {
    /// Redis (and Redis-compatible servers that report no Valkey version).
    #[default]
    Redis,
    /// Valkey (`server_name:valkey`, `valkey_version` in `INFO server`).
    Valkey,
}

/// What a target server loads and knows: the RDB version of `RESTORE` payloads it accepts, field expiry, module
/// types, commands. Built from its `INFO server` text ([`TargetFormat::from_info`]): not from `redis_version`
/// alone, which Valkey reports as `7.2.4`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetFormat {
    /// Redis or Valkey.
    pub family: ServerFamily,
    /// `(major, minor, patch)` (`valkey_version` on Valkey).
    pub version: (u32, u32, u32),
    /// The newest RDB version it loads: 9 (6.x), 10 (7.0), 11 (7.2, Valkey 7/8), 12 (Redis 7.4-8.2), 13 (8.4+),
    /// 80 (Valkey 9).
    pub rdb_version: u32,
    /// Hash field expiry (Redis 7.4+, Valkey 9+).
    pub field_expiry: bool,
    /// Module types it can hold, by their 9-character RDB name, from the modules it reports loaded
    /// (`MODULE LIST`, see [`TargetFormat::with_loaded_modules`]): Redis 8 lists its built-in `vectorset`.
    pub module_types: Vec<String>,
    /// The commands it knows (lower case), when the caller read them (`COMMAND LIST`); `None` judges by
    /// version only.
    pub commands: Option<std::collections::BTreeSet<String>>,
}

impl TargetFormat {
    /// Reads family and version from an `INFO server` reply. Unknown or unparsable versions are taken as the
    /// newest of their family.
    pub fn from_info(info_server: &str) -> TargetFormat {
        let field = |name: &str| {
            info_server.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then(|| v.trim().to_string())
            })
        };
        let valkey_version = field("valkey_version");
        let family =
            if valkey_version.is_some() || field("server_name").as_deref() == Some("valkey") {
                ServerFamily::Valkey
            } else {
                ServerFamily::Redis
            };
        let text = valkey_version
            .or_else(|| field("redis_version"))
            .unwrap_or_default();
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let version = match (
            parts.next().flatten(),
            parts.next().flatten(),
            parts.next().flatten(),
        ) {
            (Some(a), Some(b), c) => (a, b, c.unwrap_or(0)),
            _ if family == ServerFamily::Valkey => (9, 1, 0),
            _ => (8, 2, 0),
        };
        TargetFormat::new(family, version)
    }

    /// The format of a server of `family` and `version`.
    pub fn new(family: ServerFamily, version: (u32, u32, u32)) -> TargetFormat {
        let (major, minor, _) = version;
        let (rdb_version, field_expiry) = match family {
            ServerFamily::Valkey if major >= 9 => (80, true),
            ServerFamily::Valkey => (11, false),
            ServerFamily::Redis => {
                let rdb = match (major, minor) {
                    (0..=2, _) => 6,
                    (3, _) => 7,
                    (4, _) => 8,
                    (5, _) | (6, _) => 9,
                    (7, 0) | (7, 1) => 10,
                    (7, 2) | (7, 3) => 11,
                    (7, _) | (8, 0..=3) => 12,
                    _ => 13,
                };
                (rdb, rdb >= 12)
            }
        };
        TargetFormat {
            family,
            version,
            rdb_version,
            field_expiry,
            module_types: Vec::new(),
            commands: None,
        }
    }

    /// Adds the commands the target knows (names as `COMMAND LIST` gives them).
    pub fn with_commands<I, S>(mut self, names: I) -> TargetFormat
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.commands = Some(
            names
                .into_iter()
                .map(|n| n.as_ref().to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// Adds module types the target has loaded (`MODULE LIST` names them; the RDB names a type by its
    /// 9-character type name, which for most modules differs from the module name).
    pub fn with_module_types<I, S>(mut self, names: I) -> TargetFormat
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.module_types.extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds the module types of the modules the target reports loaded, by the names `MODULE LIST` gives. A
    /// module registers its types under 9-character RDB names that `MODULE LIST` does not show, so known
    /// modules are looked up in `module_type_names`; a module of another name is taken to hold the type of
    /// its own name when that name is 9 characters long (as `vectorset` does), and none otherwise (its keys
    /// then follow the target policy).
    pub fn with_loaded_modules<I, S>(mut self, modules: I) -> TargetFormat
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for module in modules {
            let module = module.as_ref();
            let types: Vec<String> = match module_type_names(self.family, module) {
                [] if module.len() == 9 => vec![module.to_string()],
                known => known.iter().map(|t| t.to_string()).collect(),
            };
            for t in types {
                if !self.module_types.contains(&t) {
                    self.module_types.push(t);
                }
            }
        }
        self
    }

    /// What both `self` and `other` hold (the masters of a cluster target should agree; if they do not, the
    /// job writes what the weaker one loads): the lower RDB version, and field expiries, module types and
    /// commands only where both have them.
    pub fn least(self, other: TargetFormat) -> TargetFormat {
        if self == other {
            return self;
        }
        let (mut weaker, stronger) = if self.rdb_version <= other.rdb_version {
            (self, other)
        } else {
            (other, self)
        };
        weaker.field_expiry &= stronger.field_expiry;
        weaker
            .module_types
            .retain(|m| stronger.module_types.contains(m));
        weaker.commands = match (weaker.commands, stronger.commands) {
            (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
            (a, b) => a.or(b),
        };
        weaker
    }

    /// True when the target takes a payload of RDB `version` as it is.
    pub fn loads(&self, version: u32) -> bool {
        ferry_rdb::loads_version(self.rdb_version, version)
    }

    /// True when the target knows the command `name` (the `commands` read from it, else by version: the hash
    /// field expiry commands need field expiry, the vector set commands the `vectorset` type).
    pub fn knows_command(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if let Some(set) = &self.commands {
            return set.contains(&name);
        }
        if is_field_expiry_command(&name) {
            return self.field_expiry;
        }
        if name.starts_with('v') && VECTOR_SET_COMMANDS.contains(&name.as_str()) {
            return self.module_types.iter().any(|m| m == "vectorset");
        }
        if name == "hgetdel" {
            return self.family == ServerFamily::Redis
                && self.rdb_version >= 12
                && self.version >= (8, 0, 0);
        }
        if name == "xackdel" || name == "xdelex" {
            return self.has_stream_ref_policies();
        }
        if name == "spublish" {
            return self.version >= (7, 0, 0);
        }
        if name == "delifeq" || name == "msetex" {
            return self.family == ServerFamily::Valkey && self.version >= (9, 0, 0);
        }
        true
    }

    /// Redis 8.2's reference policies of the stream commands (`KEEPREF`, `DELREF`, `ACKED`), its `XACKDEL` and
    /// `XDELEX`, and its `BITOP` operations `DIFF`, `DIFF1`, `ANDOR` and `ONE` (none of them in Valkey 9.1).
    fn has_stream_ref_policies(&self) -> bool {
        self.family == ServerFamily::Redis && self.version >= (8, 2, 0)
    }

    /// Whether `SET` takes the compare option `option` (lower case): `ifeq` since Valkey 8.1 and Redis 8.4,
    /// `ifne`, `ifdeq` and `ifdne` since Redis 8.4.
    fn takes_set_condition(&self, option: &str) -> bool {
        match self.family {
            ServerFamily::Valkey => option == "ifeq" && self.version >= (8, 1, 0),
            ServerFamily::Redis => self.version >= (8, 4, 0),
        }
    }
}

/// The RDB type names (9 characters) that a module loaded under `module` (its `MODULE LIST` name) registers,
/// for the modules whose type names are known; empty for others.
pub fn module_type_names(family: ServerFamily, module: &str) -> &'static [&'static str] {
    match (family, module) {
        (_, "vectorset") => &["vectorset"],
        // FalkorDB (and RedisGraph before it).
        (_, "graph") => &["graphdata"],
        // RedisJSON, and valkey-json which keeps its type name.
        (_, "ReJSON") | (ServerFamily::Valkey, "json") => &["ReJSON-RL"],
        (_, "timeseries") => &["TSDB-TYPE"],
        (ServerFamily::Redis, "bf") => &[
            "MBbloom--",
            "MBbloomCF",
            "CMSk-TYPE",
            "TopK-TYPE",
            "TDIS-TYPE",
        ],
        (ServerFamily::Valkey, "bf") => &["bloomfltr"],
        _ => &[],
    }
}

const VECTOR_SET_COMMANDS: &[&str] = &[
    "vadd",
    "vrem",
    "vsim",
    "vcard",
    "vdim",
    "vemb",
    "vgetattr",
    "vsetattr",
    "vinfo",
    "vlinks",
    "vrandmember",
    "vismember",
];

/// The commands that set, read with a new expiry, or clear hash field expiries.
fn is_field_expiry_command(name: &str) -> bool {
    matches!(
        name,
        "hexpire"
            | "hpexpire"
            | "hexpireat"
            | "hpexpireat"
            | "hpersist"
            | "httl"
            | "hpttl"
            | "hexpiretime"
            | "hpexpiretime"
            | "hgetex"
            | "hsetex"
    )
}

/// What to do with a key (or a live command) the target cannot hold: field expiries on a target before
/// Redis 7.4 / Valkey 9, a command it does not know, a module type it has no module for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetPolicy {
    /// Stop the job with an error naming the key (the default: nothing is lost silently).
    #[default]
    Stop,
    /// Leave the key out of the target (its later commands too) and list it.
    Skip,
    /// Keep what the target holds and list the key with what was lost: hash field expiries are dropped and the
    /// fields kept. What has no lesser form (a module value, an unknown command) is skipped and listed as such.
    Convert,
}

impl std::str::FromStr for TargetPolicy {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "stop" | "panic" => Ok(TargetPolicy::Stop),
            "skip" => Ok(TargetPolicy::Skip),
            "convert" => Ok(TargetPolicy::Convert),
            other => Err(crate::error::Error::Config(format!(
                "target policy {other:?}: expected stop, skip or convert"
            ))),
        }
    }
}

/// Why a key was skipped or converted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// Hash field expiries dropped (the fields kept), with how many fields had one.
    FieldExpiries {
        /// Fields whose expiry was dropped.
        fields: usize,
    },
    /// A module value whose type the target has no module for.
    ModuleType {
        /// The module type name (`vectorset`, `ReJSON-RL`).
        name: String,
    },
    /// A live command the target does not know, or an option of it that the target does not take.
    UnknownCommand {
        /// The command name, lower case; with the option after a space (`bitop diff`, `xtrim acked`).
        name: String,
    },
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // What the target cannot hold; whether it was dropped (converted) or the key left out (skipped)
            // is told by the list the key is in.
            Loss::FieldExpiries { fields: 0 } => write!(f, "hash field expiries"),
            Loss::FieldExpiries { fields } => {
                write!(f, "hash field expiries ({fields} field(s))")
            }
            Loss::ModuleType { name } => {
                write!(f, "module type {name} has no module on the target")
            }
            Loss::UnknownCommand { name } => {
                write!(f, "the target does not know `{name}`")
            }
        }
    }
}

/// One key the policy skipped or converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKey {
    /// Source database.
    pub db: i64,
    /// The key.
    pub key: Bytes,
    /// What was lost.
    pub loss: Loss,
}

/// The keys a [`TargetPolicy`] skipped or converted, for the status and the job's report: counters of all, and
/// the keys themselves up to `max_listed` of each kind (every skipped key is remembered, so its later live
/// commands are skipped too).
///
/// A job with checkpoints also stores every key it adds in the target, committed with the checkpoint that
/// covers the write that took it (see [`crate::checkpoint::report_key_names`]), and reads them back when it
/// continues from its checkpoint: the report then covers the job's current full copy and everything since,
/// across restarts and kills. The counters of commands are the running process's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyReport {
    /// Keys left out of the target.
    pub keys_skipped: u64,
    /// Keys written with a loss.
    pub keys_converted: u64,
    /// Live commands not forwarded (unknown to the target, or on a skipped key).
    pub commands_skipped: u64,
    /// Live commands rewritten with a loss (field expiries removed).
    pub commands_converted: u64,
    /// The skipped keys, first `max_listed`.
    pub skipped: Vec<PolicyKey>,
    /// The converted keys, first `max_listed`.
    pub converted: Vec<PolicyKey>,
    /// How many keys of each kind are listed (0 = the default, 1000).
    pub max_listed: usize,
    /// Skipped and converted keys by database (looked up by `&[u8]` for every live command).
    skipped_set: std::collections::HashMap<i64, std::collections::HashSet<Bytes>>,
    converted_set: std::collections::HashMap<i64, std::collections::HashSet<Bytes>>,
    /// Whether new keys are also kept in `pending`, for the sink to store in the target (a job with
    /// checkpoints; see [`crate::checkpoint::report_key_names`]).
    pub(crate) persist: bool,
    /// Keys skipped or converted since the sink last took them.
    pending: Vec<ReportEntry>,
}

/// A key newly skipped or converted, as the sink stores it in the target with the write that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReportEntry {
    /// Skipped (else converted).
    pub skipped: bool,
    /// The key and what was lost.
    pub key: PolicyKey,
}

impl PolicyKey {
    /// The field of this key in the stored report: `<db>:<key>` (the key's bytes as they are).
    pub(crate) fn member(&self) -> Bytes {
        let mut m = format!("{}:", self.db).into_bytes();
        m.extend_from_slice(&self.key);
        Bytes::from(m)
    }

    /// The value of this key in the stored report: what was lost, `fields <n>`, `module <name>` or
    /// `command <name>`.
    pub(crate) fn reason(&self) -> Bytes {
        Bytes::from(match &self.loss {
            Loss::FieldExpiries { fields } => format!("fields {fields}"),
            Loss::ModuleType { name } => format!("module {name}"),
            Loss::UnknownCommand { name } => format!("command {name}"),
        })
    }

    /// A key of the stored report from its field and value; `None` when they are not what
    /// [`PolicyKey::member`] and [`PolicyKey::reason`] write.
    pub(crate) fn decode(member: &[u8], reason: &[u8]) -> Option<PolicyKey> {
        let colon = member.iter().position(|&b| b == b':')?;
        let db = std::str::from_utf8(&member[..colon]).ok()?.parse().ok()?;
        let key = Bytes::copy_from_slice(&member[colon + 1..]);
        let (kind, what) = std::str::from_utf8(reason).ok()?.split_once(' ')?;
        let loss = match kind {
            "fields" => Loss::FieldExpiries {
                fields: what.parse().ok()?,
            },
            "module" => Loss::ModuleType { name: what.into() },
            "command" => Loss::UnknownCommand { name: what.into() },
            _ => return None,
        };
        Some(PolicyKey { db, key, loss })
    }
}

impl PolicyReport {
    /// An empty report listing up to `max_listed` keys of each kind.
    pub fn new(max_listed: usize) -> PolicyReport {
        PolicyReport {
            max_listed,
            ..Default::default()
        }
    }

    fn limit(&self) -> usize {
        if self.max_listed == 0 {
            1000
        } else {
            self.max_listed
        }
    }

    /// True when the key was skipped: its later commands are not forwarded either.
    pub fn is_skipped(&self, db: i64, key: &[u8]) -> bool {
        self.skipped_set
            .get(&db)
            .is_some_and(|keys| keys.contains(key))
    }

    fn skip(&mut self, db: i64, key: &Bytes, loss: Loss) {
        self.add(
            true,
            PolicyKey {
                db,
                key: key.clone(),
                loss,
            },
            true,
        );
    }

    fn convert(&mut self, db: i64, key: &Bytes, loss: Loss) {
        self.add(
            false,
            PolicyKey {
                db,
                key: key.clone(),
                loss,
            },
            true,
        );
    }

    /// Adds a key once (a key already listed of its kind is not counted again); `new`: decided now, so
    /// the sink stores it (else read back from the target).
    fn add(&mut self, skipped: bool, key: PolicyKey, new: bool) {
        let limit = self.limit();
        let (set, count, list) = if skipped {
            (
                &mut self.skipped_set,
                &mut self.keys_skipped,
                &mut self.skipped,
            )
        } else {
            (
                &mut self.converted_set,
                &mut self.keys_converted,
                &mut self.converted,
            )
        };
        if !set.entry(key.db).or_default().insert(key.key.clone()) {
            return;
        }
        *count += 1;
        if new && self.persist {
            self.pending.push(ReportEntry {
                skipped,
                key: key.clone(),
            });
        }
        if list.len() < limit {
            list.push(key);
        }
    }

    /// Starts over from the report stored in the target (what a job restarted after a kill finds): every
    /// skipped and converted key it holds is counted and listed (up to `max_listed`), and a later command on a
    /// skipped key is skipped as before. The counters of commands are this process's own.
    pub(crate) fn load(&mut self, skipped: Vec<PolicyKey>, converted: Vec<PolicyKey>) {
        let (commands_skipped, commands_converted) =
            (self.commands_skipped, self.commands_converted);
        self.clear();
        self.commands_skipped = commands_skipped;
        self.commands_converted = commands_converted;
        for key in skipped {
            self.add(true, key, false);
        }
        for key in converted {
            self.add(false, key, false);
        }
    }

    /// Empties the report for a new copy (keeping `max_listed` and whether it is stored).
    pub(crate) fn clear(&mut self) {
        *self = PolicyReport {
            max_listed: self.max_listed,
            persist: self.persist,
            ..Default::default()
        };
    }

    /// The keys skipped or converted since the last call, for the sink to store with the write that covers
    /// them.
    pub(crate) fn take_pending(&mut self) -> Vec<ReportEntry> {
        std::mem::take(&mut self.pending)
    }

    /// Every key listed as skipped or converted, as `(db, key)`.
    pub fn listed_keys(&self) -> Vec<(i64, Bytes)> {
        self.skipped
            .iter()
            .chain(&self.converted)
            .map(|k| (k.db, k.key.clone()))
            .collect()
    }
}

fn cannot_hold(db: i64, key: &[u8], loss: &Loss) -> crate::error::Error {
    crate::error::Error::Target {
        command: "RESTORE".into(),
        message: format!(
            "key {} (db {db}) cannot be held by the target: {loss} (target policy stop; skip or convert \
             lets the job go on and lists the key)",
            crate::error::KeyDisplay(key.to_vec())
        ),
    }
}

/// Decides, under `policy`, how a key of the source's RDB (`raw`: type byte and payload as read from a source
/// of RDB `source_version`) goes to `target`: `Ok(Some(payload))` is a `RESTORE` payload the target loads (the
/// source's bytes as they are when it loads them, else re-encoded, with field expiries dropped under
/// [`TargetPolicy::Convert`]); `Ok(None)` leaves the key out (listed in `report`); `Err` stops the job naming
/// the key ([`TargetPolicy::Stop`]).
///
/// This is what the full sync calls for each key instead of choosing between `build_dump` and a re-encode
/// itself.
pub fn fit_entry(
    db: i64,
    key: &Bytes,
    raw: &[u8],
    source_version: u32,
    target: &TargetFormat,
    policy: TargetPolicy,
    report: &mut PolicyReport,
) -> Result<Option<Bytes>, crate::error::Error> {
    fit_entry_lossy(db, key, raw, source_version, target, policy, report)
        .map(|fitted| fitted.map(|(payload, _)| payload))
}

/// [`fit_entry`], also saying whether the payload lost something (field expiries dropped under `convert`).
fn fit_entry_lossy(
    db: i64,
    key: &Bytes,
    raw: &[u8],
    source_version: u32,
    target: &TargetFormat,
    policy: TargetPolicy,
    report: &mut PolicyReport,
) -> Result<Option<(Bytes, bool)>, crate::error::Error> {
    let rdb_err = |e: ferry_rdb::Error| {
        crate::error::Error::Rdb(format!(
            "key {}: {e}",
            crate::error::KeyDisplay(key.to_vec())
        ))
    };
    let module = raw.first().is_some_and(|&t| t == 6 || t == 7);
    if !module && target.loads(source_version) && !report.is_skipped(db, key) {
        return Ok(Some((
            Bytes::from(ferry_rdb::build_dump(raw, source_version as u16)),
            false,
        )));
    }
    let mut value = ferry_rdb::decode_value(raw, ferry_rdb::is_valkey_version(source_version))
        .map_err(rdb_err)?;
    let had_field_expiries = value.has_field_expiry();
    if !fit_value(db, key, &mut value, target, policy, report)? {
        return Ok(None);
    }
    if value.is_empty() && !matches!(value, ferry_rdb::Value::Stream(_)) {
        // A collection without an element is no key to Redis (`RESTORE` refuses it); a hash also when every
        // field had expired: the key is gone on the source too. (An empty stream is a key.)
        return Ok(None);
    }
    if let ferry_rdb::Value::Module(_) = &value {
        if target.loads(source_version) {
            return Ok(Some((
                Bytes::from(ferry_rdb::build_dump(raw, source_version as u16)),
                false,
            )));
        }
    }
    let lost = had_field_expiries && !value.has_field_expiry() && policy == TargetPolicy::Convert;
    let version = ferry_rdb::payload_version_for(&value, target.rdb_version);
    ferry_rdb::encode_dump(&value, version)
        .map(|p| Some((Bytes::from(p), lost)))
        .map_err(rdb_err)
}

/// The same decision for a decoded value (a big value's chunk, or a value about to be written as commands):
/// returns `Ok(false)` when the key is left out, `Ok(true)` when `value` (field expiries removed under
/// [`TargetPolicy::Convert`]) is written.
pub fn fit_value(
    db: i64,
    key: &Bytes,
    value: &mut ferry_rdb::Value,
    target: &TargetFormat,
    policy: TargetPolicy,
    report: &mut PolicyReport,
) -> Result<bool, crate::error::Error> {
    if report.is_skipped(db, key) {
        return Ok(false);
    }
    let loss = match value {
        ferry_rdb::Value::Module(m) if !target.module_types.contains(&m.name) => Loss::ModuleType {
            name: m.name.clone(),
        },
        ferry_rdb::Value::Hash(_) if value.has_field_expiry() && !target.field_expiry => {
            // A field whose expiry has passed is gone on the source (which reclaims it lazily): it is not
            // written, and a hash whose expiring fields have all expired fits the target as it is.
            value.drop_expired_fields(crate::source::now_ms());
            let fields = match &*value {
                ferry_rdb::Value::Hash(h) => h.iter().filter(|f| f.expire_at_ms.is_some()).count(),
                _ => 0,
            };
            if fields == 0 {
                return Ok(true);
            }
            Loss::FieldExpiries { fields }
        }
        _ => return Ok(true),
    };
    match (policy, loss) {
        (TargetPolicy::Stop, loss) => Err(cannot_hold(db, key, &loss)),
        (TargetPolicy::Convert, Loss::FieldExpiries { .. }) => {
            let fields = value.drop_field_expiries();
            report.convert(db, key, Loss::FieldExpiries { fields });
            Ok(true)
        }
        (_, loss) => {
            report.skip(db, key, loss);
            Ok(false)
        }
    }
}

/// Decides, under `policy`, how a live command goes to `target`: `Ok(Some(argv))` is forwarded (rewritten when
/// converted: `HSETEX` becomes `HSET`, field expiry commands are dropped), `Ok(None)` is not forwarded (listed
/// in `report`), `Err` stops the job naming the command and key. `db` is the source database.
///
/// A command on a key the policy skipped is not forwarded either, so a skipped key stays absent. The key of a
/// command is taken to be its first argument; [`fit_command_keyed`] takes it from the caller.
pub fn fit_command(
    db: i64,
    argv: &[Bytes],
    target: &TargetFormat,
    policy: TargetPolicy,
    report: &mut PolicyReport,
) -> Result<Option<Vec<Bytes>>, crate::error::Error> {
    match keys_not_first(argv) {
        Some(keys) => fit_command_keyed(db, argv, &keys, target, policy, report),
        // The first argument, without a copy.
        None => fit_command_keyed(
            db,
            argv,
            argv.get(1..2).unwrap_or(&[]),
            target,
            policy,
            report,
        ),
    }
}

/// The commands a target that does not know a source command gets in its place, with the same result, under
/// every policy:
/// - Redis 8.2's `BITOP DIFF`, `DIFF1`, `ANDOR` and `ONE`: the `BITOP OR`/`AND`/`XOR` commands of
///   [`bitop_in_older_operations`];
/// - its `XACKDEL` and `XDELEX`: a script ([`stream_ref_as_script`]), and its exact trims under `DELREF` the same
///   way ([`delref_trim_as_script`]);
/// - Valkey 9's `MSETEX`: one `SET` per key ([`msetex_as_sets`]), less the keys the policy skipped before;
/// - an `SPUBLISH` to a target without shard channels: no command.
///
/// `None` for every other command, which [`fit_command_keyed`] decides (as it does one whose key the policy
/// skipped before, but for `MSETEX`, whose keys are judged one by one). A job keeps the commands of one source command in its unit, so a batch applies
/// them together and a resume inside the unit continues where they stopped.
pub fn several_for_target(
    db: i64,
    argv: &[Bytes],
    keys: &[Bytes],
    target: &TargetFormat,
    report: &mut PolicyReport,
) -> Option<Vec<Vec<Bytes>>> {
    let name = argv.first()?;
    if name.eq_ignore_ascii_case(b"spublish") && !target.knows_command("spublish") {
        // A standalone source propagates its shard-channel messages; a target without shard channels (before
        // 7.0) has no subscriber to give one to, and the message writes nothing: left out under every policy
        // (under `stop` it stopped the job as an unknown command).
        return Some(Vec::new());
    }
    if name.eq_ignore_ascii_case(b"msetex") {
        let sets = msetex_as_sets(argv, target)?;
        let before = sets.len();
        let sets: Vec<Vec<Bytes>> = sets
            .into_iter()
            .filter(|set| !report.is_skipped(db, &set[1]))
            .collect();
        report.commands_skipped += (before - sets.len()) as u64;
        return Some(sets);
    }
    // A key the policy skipped before stays left out, which `fit_command_keyed` decides.
    let skipped = || keys.first().is_some_and(|k| report.is_skipped(db, k));
    if name.eq_ignore_ascii_case(b"bitop") {
        return bitop_in_older_operations(argv, target).filter(|_| !skipped());
    }
    if name.eq_ignore_ascii_case(b"xackdel") || name.eq_ignore_ascii_case(b"xdelex") {
        return stream_ref_as_script(argv, target)
            .filter(|_| !skipped())
            .map(|cmd| vec![cmd]);
    }
    if name.eq_ignore_ascii_case(b"xadd") || name.eq_ignore_ascii_case(b"xtrim") {
        return delref_trim_as_script(argv, target).filter(|_| !skipped());
    }
    None
}

/// `BITOP DIFF|DIFF1|ANDOR|ONE dest src ...` (Redis 8.2) as `BITOP OR`, `AND` and `XOR`, which every target
/// knows, for a target that does not take the operation; `None` for any other command, for a target that takes
/// it, and for a malformed one (the policy decides those).
///
/// Every `BITOP` result is as long as its longest input (shorter ones count as zero bytes) and an empty result
/// deletes the destination, so the identity `a AND NOT b` = `a XOR (a AND b)` gives each operation without the
/// `NOT` (whose length would be its one input's):
/// - `DIFF x y...` (in `x`, in no `y`): `t = OR(y...)`, `t = AND(x, t)`, `dest = XOR(x, t)`;
/// - `DIFF1 x y...` (in some `y`, not in `x`): `t = OR(y...)`, `u = AND(t, x)`, `dest = XOR(t, u)`;
/// - `ANDOR x y...` (in `x` and in some `y`): `t = OR(y...)`, `dest = AND(x, t)`;
/// - `ONE x...` (in exactly one input): `t` the bits seen once so far, `u` those seen more than once; for each
///   next input `w = AND(t, x)`, `u = OR(u, w)`, `t = XOR(t, x)`; then `dest = XOR(t, AND(t, u))`.
///
/// The scratch keys `t`, `u`, `w` are `ferry:bitop:{<tag>}:t`... with a hash tag of the destination's slot
/// (a cluster target's node holds them with the destination) and the last command deletes them; the
/// destination is written last, so it may also be an input. Checked against Redis 8.2's own `BITOP` on random
/// inputs (missing keys, empty strings, unequal lengths, the destination among the inputs) when this was
/// written; `tests/server_matrix.rs` does the same through a job.
pub fn bitop_in_older_operations(argv: &[Bytes], target: &TargetFormat) -> Option<Vec<Vec<Bytes>>> {
    if !argv.first()?.eq_ignore_ascii_case(b"bitop") || target.has_stream_ref_policies() {
        return None;
    }
    let op = argv.get(1)?;
    let dest = argv.get(2)?;
    let srcs = argv.get(3..)?;
    let is = |w: &str| op.eq_ignore_ascii_case(w.as_bytes());
    let needed = if is("one") { 1 } else { 2 };
    if srcs.len() < needed {
        return None;
    }
    let tag = ferry_topology::tag_for_slot(ferry_topology::key_slot(dest))?;
    let scratch = |n: &str| Bytes::from(format!("ferry:bitop:{{{tag}}}:{n}"));
    let (t, u, w) = (scratch("t"), scratch("u"), scratch("w"));
    let cmd = |parts: &[&Bytes]| -> Vec<Bytes> { parts.iter().map(|b| (*b).clone()).collect() };
    let word = |w: &'static str| Bytes::from_static(w.as_bytes());
    let (bitop, or, and, xor, del) = (
        word("BITOP"),
        word("OR"),
        word("AND"),
        word("XOR"),
        word("DEL"),
    );
    let or_of_rest = || {
        let mut c = vec![bitop.clone(), or.clone(), t.clone()];
        c.extend(srcs[1..].iter().cloned());
        c
    };
    let x = &srcs[0];
    let out = if is("diff") {
        vec![
            or_of_rest(),
            cmd(&[&bitop, &and, &t, x, &t]),
            cmd(&[&bitop, &xor, dest, x, &t]),
            cmd(&[&del, &t]),
        ]
    } else if is("diff1") {
        vec![
            or_of_rest(),
            cmd(&[&bitop, &and, &u, &t, x]),
            cmd(&[&bitop, &xor, dest, &t, &u]),
            cmd(&[&del, &t, &u]),
        ]
    } else if is("andor") {
        vec![
            or_of_rest(),
            cmd(&[&bitop, &and, dest, x, &t]),
            cmd(&[&del, &t]),
        ]
    } else if is("one") {
        let mut out = vec![cmd(&[&del, &u]), cmd(&[&bitop, &or, &t, x])];
        for next in &srcs[1..] {
            out.push(cmd(&[&bitop, &and, &w, &t, next]));
            out.push(cmd(&[&bitop, &or, &u, &u, &w]));
            out.push(cmd(&[&bitop, &xor, &t, &t, next]));
        }
        out.push(cmd(&[&bitop, &and, &w, &t, &u]));
        out.push(cmd(&[&bitop, &xor, dest, &t, &w]));
        out.push(cmd(&[&del, &t, &u, &w]));
        out
    } else {
        return None;
    };
    Some(out)
}

/// The Lua function `stream_ref(key, kind, policy, group, id...)` that does what Redis 8.2's `XACKDEL key group
/// [policy] IDS n id...` (`kind` `xackdel`) and `XDELEX key [policy] IDS n id...` (`kind` `xdelex`, `group`
/// empty) do, with the commands every server with streams has:
/// - `XACKDEL` acknowledges each ID in the group and goes on with only those it acknowledged (an entry the group
///   did not have pending stays); `XDELEX` goes on with every ID;
/// - `KEEPREF` then deletes the entry (`XDEL`, which leaves the other groups' pending lists as they are);
///   `DELREF` also acknowledges it in every group (even when the entry itself was deleted before, as Redis
///   does); `ACKED` deletes it only when no group still references it (pending, or not yet delivered: after
///   the group's last delivered ID).
///
/// With `kind` `xclaim` (`pol` the consumer, then `XCLAIM`'s arguments from its min-idle-time on) it is the
/// `XCLAIM` of a source of 7.0 or later for a target before 7.0: the same `XCLAIM`, then an `XACK` of its entry when
/// the stream no longer has it (see [`xclaim_for_older_target`]).
///
/// With `kind` `trim` (`group` the strategy, `MAXLEN` or `MINID`, then the threshold) it is an exact trim under
/// `DELREF` (`XTRIM ... DELREF`, the trim of an `XADD ... DELREF`): the entries the trim removes are acknowledged
/// in every group first, then trimmed. (`ACKED` trims are not done this way: they remove entries out of order
/// without moving the stream's deleted-entry mark, which no command can do.)
///
/// IDs are taken as `ms-seq`, with a missing sequence read as 0, as those commands read them. The batch script of
/// the chain defines it too ([`crate::sink::chain`]); [`STREAM_REF_EVAL`] is it as one `EVAL`. Checked against
/// Redis 8.2's own commands on random streams (1 to 3 groups at random positions, IDs pending, acknowledged,
/// undelivered or absent) when this was written, each outcome compared by `DUMP`, and over sequences of 300
/// commands (reads by the groups, acknowledgements, additions, these deletions) compared after each;
/// `tests/matrix.rs` does the same through a job.
macro_rules! stream_ref_function {
    () => {
        r#"
local function stream_ref(key, kind, pol, group, ...)
  local function norm(id)
    local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
    if not ms then ms, seq = string.match(id, '^(%d+)$'), '0' end
    if not ms then return nil end
    return (string.gsub(ms, '^0+(%d)', '%1')), (string.gsub(seq, '^0+(%d)', '%1'))
  end
  local function after(am, as, b)
    local bm, bs = norm(b)
    if #am ~= #bm then return #am > #bm end
    if am ~= bm then return am > bm end
    if #as ~= #bs then return #as > #bs end
    return as > bs
  end
  if redis.call('EXISTS', key) == 0 then return 0 end
  if kind == 'xclaim' then
    local id = select(2, ...)
    redis.call('XCLAIM', key, group, pol, ...)
    if #redis.call('XRANGE', key, id, id) == 0 then redis.call('XACK', key, group, id) end
    return 1
  end
  if kind == 'trim' then
    local strategy, threshold = group, ...
    local doomed = {}
    if strategy == 'MAXLEN' then
      local extra = redis.call('XLEN', key) - tonumber(threshold)
      if extra > 0 then doomed = redis.call('XRANGE', key, '-', '+', 'COUNT', extra) end
    else
      local ms, seq = norm(threshold)
      if ms and (ms ~= '0' or seq ~= '0') then doomed = redis.call('XRANGE', key, '-', '(' .. ms .. '-' .. seq) end
    end
    if #doomed > 0 then
      for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
        for k = 1, #g, 2 do
          if g[k] == 'name' then
            for _, e in ipairs(doomed) do redis.call('XACK', key, g[k + 1], e[1]) end
          end
        end
      end
    end
    redis.call('XTRIM', key, strategy, '=', threshold)
    return 1
  end
  local groups
  for _, given in ipairs({...}) do
    local ms, seq = norm(given)
    if ms then
      local id = ms .. '-' .. seq
      local go = kind ~= 'xackdel' or redis.call('XACK', key, group, id) == 1
      if go and pol ~= 'KEEPREF' and not groups then
        groups = {}
        for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
          local name, last
          for k = 1, #g, 2 do
            if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then last = g[k + 1] end
          end
          groups[#groups + 1] = {name, last}
        end
      end
      if go and pol == 'DELREF' then
        for _, g in ipairs(groups) do redis.call('XACK', key, g[1], id) end
      elseif go and pol == 'ACKED' then
        for _, g in ipairs(groups) do
          if after(ms, seq, g[2]) or #redis.call('XPENDING', key, g[1], id, id, 1) > 0 then
            go = false
            break
          end
        end
      end
      if go then redis.call('XDEL', key, id) end
    end
  end
  return 1
end
"#
    };
}

/// [`stream_ref_function!`] as Lua source, for the batch script.
pub(crate) const STREAM_REF_FUNCTION: &str = stream_ref_function!();

/// The script of the `EVAL` that stands for an `XACKDEL`, an `XDELEX` or a trim under `DELREF` (see
/// [`stream_ref_as_script`], [`delref_trim_as_script`]).
pub const STREAM_REF_EVAL: &str = concat!(
    stream_ref_function!(),
    "return stream_ref(KEYS[1], unpack(ARGV))\n"
);

/// Whether `argv` is an `EVAL` of [`STREAM_REF_EVAL`] (which the batch chain runs inline).
pub(crate) fn is_stream_ref_eval(argv: &[Bytes]) -> bool {
    argv.len() >= 4
        && argv[1].len() == STREAM_REF_EVAL.len()
        && argv[0].eq_ignore_ascii_case(b"eval")
        && argv[1] == STREAM_REF_EVAL.as_bytes()
}

/// `XACKDEL key group [KEEPREF|DELREF|ACKED] IDS n id...` and `XDELEX key [KEEPREF|DELREF|ACKED] IDS n id...`
/// (Redis 8.2) for a target that does not know them: `XDEL key id...` for an `XDELEX` under `KEEPREF` (the
/// default), else `EVAL <`[`STREAM_REF_EVAL`]`> 1 key kind policy group id...`, which writes the same (see
/// [`stream_ref_function!`]). `None` for any other command, a target that knows it, and a malformed one.
pub fn stream_ref_as_script(argv: &[Bytes], target: &TargetFormat) -> Option<Vec<Bytes>> {
    let name = command_name_lower(argv);
    if (name != "xackdel" && name != "xdelex") || target.knows_command(&name) {
        return None;
    }
    if let Some(xdel) = xdelex_as_xdel(&name, argv) {
        return Some(xdel);
    }
    let key = argv.get(1)?;
    let (group, mut at) = if name == "xackdel" {
        (argv.get(2)?.clone(), 3)
    } else {
        (Bytes::new(), 2)
    };
    let mut policy = Bytes::from_static(b"KEEPREF");
    if let Some(p) = ["keepref", "delref", "acked"].into_iter().find(|w| {
        argv.get(at)
            .is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()))
    }) {
        policy = Bytes::from(p.to_ascii_uppercase());
        at += 1;
    }
    let ids = ids_clause(argv, at)?;
    let mut out = vec![
        Bytes::from_static(b"EVAL"),
        Bytes::from_static(STREAM_REF_EVAL.as_bytes()),
        Bytes::from_static(b"1"),
        key.clone(),
        Bytes::from(name),
        policy,
        group,
    ];
    out.extend(ids.iter().cloned());
    Some(out)
}

/// An `XCLAIM key group consumer min-idle-time id [options]` of a source of 7.0 or later, for a target before 7.0:
/// `EVAL <`[`STREAM_REF_EVAL`]`> 1 key xclaim consumer group min-idle-time id [options]`.
///
/// Since 7.0 an `XCLAIM` or `XAUTOCLAIM` that meets a pending entry the stream no longer has (trimmed or
/// deleted) removes it from the group's pending list, and propagates that as `XCLAIM ... FORCE JUSTID` of the
/// entry, which a 7.0 replica reads the same way. A 6.2 server keeps such an entry pending (it claims it), so its
/// `XPENDING` grew with every trimmed entry a consumer group had read. The script runs the `XCLAIM` as it was (its
/// `LASTID` moves the group's last delivered ID as on the source), then acknowledges the entry when the stream
/// does not have it. `None` for other commands and a malformed `XCLAIM`.
pub fn xclaim_for_older_target(argv: &[Bytes]) -> Option<Vec<Bytes>> {
    if argv.len() < 6 || !argv[0].eq_ignore_ascii_case(b"xclaim") {
        return None;
    }
    let mut out = vec![
        Bytes::from_static(b"EVAL"),
        Bytes::from_static(STREAM_REF_EVAL.as_bytes()),
        Bytes::from_static(b"1"),
        argv[1].clone(),
        Bytes::from_static(b"xclaim"),
        argv[3].clone(),
        argv[2].clone(),
    ];
    out.extend(argv[4..].iter().cloned());
    Some(out)
}

/// `XADD key [NOMKSTREAM] DELREF MAXLEN|MINID [=] threshold [LIMIT n] id field value...` and `XTRIM key
/// MAXLEN|MINID [=] threshold [LIMIT n] DELREF` (Redis 8.2, an exact trim: a source propagates its approximate
/// trims as the exact ones they were) for a target without the reference policies: the `XADD` without the trim
/// (when it is one), then the trim under `DELREF` as a script ([`stream_ref_function!`], kind `trim`). `None` for
/// anything else, which [`fit_command_keyed`] decides (other policies, approximate or malformed trims).
pub fn delref_trim_as_script(argv: &[Bytes], target: &TargetFormat) -> Option<Vec<Vec<Bytes>>> {
    if target.has_stream_ref_policies() {
        return None;
    }
    let o = stream_options(argv)?;
    let trim = o.trim.filter(|t| !t.approximate)?;
    let well_formed = if o.xadd {
        argv.len() >= o.end + 3
    } else {
        o.end == argv.len()
    };
    if !matches!(o.policy, Some((_, "delref"))) || !well_formed {
        return None;
    }
    let key = &argv[1];
    let script = vec![
        Bytes::from_static(b"EVAL"),
        Bytes::from_static(STREAM_REF_EVAL.as_bytes()),
        Bytes::from_static(b"1"),
        key.clone(),
        Bytes::from_static(b"trim"),
        Bytes::from_static(b"DELREF"),
        Bytes::from(argv[trim.strategy].to_ascii_uppercase()),
        argv[trim.threshold].clone(),
    ];
    if !o.xadd {
        return Some(vec![script]);
    }
    let mut add = vec![argv[0].clone(), key.clone()];
    if o.nomkstream {
        add.push(Bytes::from_static(b"NOMKSTREAM"));
    }
    add.extend(argv[o.end..].iter().cloned());
    Some(vec![add, script])
}

/// `MSETEX n key value ... [NX|XX] [PXAT t|KEEPTTL|...]` (Valkey 9) as `SET key value [PXAT t|KEEPTTL|...]` for
/// each key, for a target that does not know it; `None` otherwise, and for a malformed one (the policy decides).
/// Valkey propagates an `MSETEX` only when it wrote every key (its condition holds for all or none), with its
/// expiry made absolute (`PXAT`), so the same `SET`s without the condition write the same on a target that holds
/// what the source held (as a conditional `SET ... IFEQ` is sent without its condition).
pub fn msetex_as_sets(argv: &[Bytes], target: &TargetFormat) -> Option<Vec<Vec<Bytes>>> {
    if !argv.first()?.eq_ignore_ascii_case(b"msetex") || target.knows_command("msetex") {
        return None;
    }
    let n: usize = std::str::from_utf8(argv.get(1)?).ok()?.parse().ok()?;
    let pairs = argv.get(2..2 + n.checked_mul(2)?)?;
    if n == 0 {
        return None;
    }
    let mut expiry: Vec<Bytes> = Vec::new();
    let mut at = 2 + 2 * n;
    while let Some(a) = argv.get(at) {
        let is = |w: &str| a.eq_ignore_ascii_case(w.as_bytes());
        if is("nx") || is("xx") {
            at += 1;
        } else if is("keepttl") && expiry.is_empty() {
            expiry.push(a.clone());
            at += 1;
        } else if ["ex", "px", "exat", "pxat"].iter().any(|w| is(w)) && expiry.is_empty() {
            expiry.extend([a.clone(), argv.get(at + 1)?.clone()]);
            at += 2;
        } else {
            return None;
        }
    }
    Some(
        pairs
            .chunks_exact(2)
            .map(|kv| {
                let mut set = vec![Bytes::from_static(b"SET"), kv[0].clone(), kv[1].clone()];
                set.extend(expiry.iter().cloned());
                set
            })
            .collect(),
    )
}

/// A command's keys where no command table is at hand: the first argument, but the destination of `BITOP`
/// (after its operation) and the keys of `MSETEX` (after their count, one every two arguments), which a policy
/// must not take for their first argument.
pub fn keys_without_table(argv: &[Bytes]) -> Vec<Bytes> {
    keys_not_first(argv).unwrap_or_else(|| argv.get(1).cloned().into_iter().collect())
}

/// The keys of the commands whose keys are not their first argument (see [`keys_without_table`]); `None` for
/// the others.
fn keys_not_first(argv: &[Bytes]) -> Option<Vec<Bytes>> {
    let name = argv.first()?;
    if name.eq_ignore_ascii_case(b"bitop") {
        Some(argv.get(2).cloned().into_iter().collect())
    } else if name.eq_ignore_ascii_case(b"msetex") {
        let n: usize = argv
            .get(1)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Some(argv.iter().skip(2).step_by(2).take(n).cloned().collect())
    } else {
        None
    }
}

/// [`fit_command`] for a command whose keys are `keys` (empty: a command without keys, such as
/// `FUNCTION LOAD` or `SWAPDB`, which is left out under `skip` and `convert` and lists no key). Whether a key
/// was skipped before is judged by the first; a command the policy leaves out skips (and deletes) the keys it
/// writes: the first, or all of an `MSETEX`.
pub fn fit_command_keyed(
    db: i64,
    argv: &[Bytes],
    keys: &[Bytes],
    target: &TargetFormat,
    policy: TargetPolicy,
    report: &mut PolicyReport,
) -> Result<Option<Vec<Bytes>>, crate::error::Error> {
    let mut name = command_name_lower(argv);
    if let Some(k) = keys.first() {
        if report.is_skipped(db, k) && !matches!(name.as_str(), "del" | "unlink") {
            report.commands_skipped += 1;
            return Ok(None);
        }
    }
    if matches!(name.as_str(), "restore" | "restore-asking") {
        return restore_for_target(db, argv, target, policy, report);
    }
    if target.knows_command(&name) {
        match fit_options(&name, argv, target) {
            OptionFit::AsIs if name == "function" => {
                let mut out = function_in_ga_form(argv).unwrap_or_else(|| argv.to_vec());
                function_payload_for_target(&mut out, target);
                return Ok(Some(out));
            }
            OptionFit::AsIs => return Ok(Some(argv.to_vec())),
            OptionFit::Same(same) => return Ok(Some(same)),
            // From here on the command is as unknown to the target as a command it does not have.
            OptionFit::Lost(option) => name = format!("{name} {option}"),
        }
    }
    if let Some(hset) = hsetex_without_expiry(&name, argv) {
        // Nothing to lose (Redis 8 propagates `HINCRBYFLOAT` this way): the same write, under any policy.
        return Ok(Some(hset));
    }
    if let Some(xdel) = xdelex_as_xdel(&name, argv) {
        return Ok(Some(xdel));
    }
    let key = keys.first().cloned();
    let loss = Loss::UnknownCommand { name: name.clone() };
    let stop = || {
        crate::error::Error::Target {
        command: name.clone(),
        message: match &key {
            Some(k) => format!(
                "the target does not know `{name}`, sent for key {} (db {db}) (target policy stop; skip or \
                 convert lets the job go on and lists the key)",
                crate::error::KeyDisplay(k.to_vec())
            ),
            None => format!(
                "the target does not know `{name}` (target policy stop; skip or convert lets the job go on \
                 without it)"
            ),
        },
    }
    };
    match policy {
        TargetPolicy::Stop => Err(stop()),
        TargetPolicy::Convert if is_field_expiry_command(&name) => {
            let Some(k) = key else {
                return Err(stop());
            };
            let rewritten = without_field_expiry(&name, argv);
            report.convert(db, &k, Loss::FieldExpiries { fields: 0 });
            match rewritten {
                Some(c) => {
                    report.commands_converted += 1;
                    Ok(Some(c))
                }
                None => {
                    report.commands_skipped += 1;
                    Ok(None)
                }
            }
        }
        TargetPolicy::Skip | TargetPolicy::Convert => {
            report.commands_skipped += 1;
            match key {
                Some(_) => {
                    // The keys the command writes: its first (a `BITOP` or `ZRANGESTORE` destination; the keys
                    // after it are read, and stay), or every key of `MSETEX`, which sets them all.
                    let written = if name == "msetex" { keys } else { &keys[..1] };
                    for k in written {
                        report.skip(db, k, loss.clone());
                    }
                    // The keys may exist from before (fields written by HSET): they must not stay half-copied.
                    let mut del = vec![Bytes::from_static(b"DEL")];
                    del.extend(written.iter().cloned());
                    Ok(Some(del))
                }
                None => {
                    warn!(command = %name, db, "the target does not know this command, which has no key: left out (target policy)");
                    Ok(None)
                }
            }
        }
    }
}

/// How a command's options fit the target. A source propagates the options new in its version as they were
/// written, and a target without them refuses the whole command (a syntax error, whatever the policy).
#[derive(Debug, PartialEq)]
enum OptionFit {
    /// Goes as it is.
    AsIs,
    /// The same write without an option the target does not take (the option changes nothing on a replica).
    Same(Vec<Bytes>),
    /// An option the target does not take and the write needs: the command follows the target policy, as an
    /// unknown command does, under the name `<command> <option>`.
    Lost(&'static str),
}

/// The options of Redis 8.2 and Valkey 8.1/9 that older servers and the other family do not take:
///
/// - `XADD`/`XTRIM` `KEEPREF` (Redis 8.2) is what every server does without it: dropped. `DELREF` and `ACKED`
///   change which entries a trim removes and what the consumer groups keep: an `XADD` without a trim clause
///   trims nothing, so they are dropped there; with a trim (and in `XTRIM`) they are lost.
/// - `BITOP DIFF`, `DIFF1`, `ANDOR`, `ONE` (Redis 8.2): lost as one command; a job sends them as the several
///   commands of [`bitop_in_older_operations`] ([`several_for_target`]).
/// - `SET ... IFEQ v` (Valkey 8.1, Redis 8.4; `IFNE`, `IFDEQ`, `IFDNE` Redis 8.4): a source propagates a
///   conditional `SET` only when it wrote, and the target holds what the source held then, so without the
///   condition it writes the same: dropped.
fn fit_options(name: &str, argv: &[Bytes], target: &TargetFormat) -> OptionFit {
    let is = |a: &Bytes, word: &str| a.eq_ignore_ascii_case(word.as_bytes());
    let without = |at: usize, n: usize| {
        let mut out = argv[..at].to_vec();
        out.extend_from_slice(&argv[at + n..]);
        OptionFit::Same(out)
    };
    match name {
        "xadd" | "xtrim" if !target.has_stream_ref_policies() => {
            let Some(o) = stream_options(argv) else {
                return OptionFit::AsIs;
            };
            match o.policy {
                None => OptionFit::AsIs,
                Some((at, "keepref")) => without(at, 1),
                // An XADD that trims nothing: the policy has nothing to act on.
                Some((at, _)) if o.trim.is_none() => without(at, 1),
                Some((_, policy)) => OptionFit::Lost(policy),
            }
        }
        "bitop" if !target.has_stream_ref_policies() => {
            match argv.get(1).and_then(|op| {
                ["diff", "diff1", "andor", "one"]
                    .into_iter()
                    .find(|w| is(op, w))
            }) {
                Some(op) => OptionFit::Lost(op),
                None => OptionFit::AsIs,
            }
        }
        "set" => {
            // SET key value [NX|XX|IFEQ v|...] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]
            let mut at = 3;
            while let Some(a) = argv.get(at) {
                let condition = ["ifeq", "ifne", "ifdeq", "ifdne"]
                    .into_iter()
                    .find(|w| is(a, w));
                match condition {
                    Some(c) if !target.takes_set_condition(c) && argv.len() > at + 1 => {
                        return without(at, 2);
                    }
                    Some(_) => at += 2,
                    None if ["ex", "px", "exat", "pxat"].iter().any(|w| is(a, w)) => at += 2,
                    None => at += 1,
                }
            }
            OptionFit::AsIs
        }
        _ => OptionFit::AsIs,
    }
}

/// `XDELEX key [KEEPREF] IDS n id ...` (Redis 8.2) for a target that does not know it: the `XDEL key id ...` it
/// is (`KEEPREF`, the default, leaves the consumer groups as `XDEL` does). `None` with `DELREF` or `ACKED`, or
/// malformed, which the policy then decides.
fn xdelex_as_xdel(name: &str, argv: &[Bytes]) -> Option<Vec<Bytes>> {
    if name != "xdelex" {
        return None;
    }
    let mut at = 2;
    if argv.get(at)?.eq_ignore_ascii_case(b"keepref") {
        at += 1;
    }
    let ids = ids_clause(argv, at)?;
    let mut out = vec![Bytes::from_static(b"XDEL"), argv[1].clone()];
    out.extend(ids.iter().cloned());
    Some(out)
}

/// The IDs of an `IDS n id...` clause that starts at `argv[at]` and ends the command; `None` when it does not
/// (no `IDS`, a count that is not a number, zero, or not the number of IDs that follow).
fn ids_clause(argv: &[Bytes], at: usize) -> Option<&[Bytes]> {
    if !argv.get(at)?.eq_ignore_ascii_case(b"ids") {
        return None;
    }
    let n: usize = std::str::from_utf8(argv.get(at + 1)?).ok()?.parse().ok()?;
    let ids = argv.get(at + 2..)?;
    (n > 0 && ids.len() == n).then_some(ids)
}

fn command_name_lower(argv: &[Bytes]) -> String {
    argv.first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
        .unwrap_or_default()
}

/// Where the `FIELDS` keyword of an `HSETEX` is: the first argument after the key that reads `FIELDS` (the
/// options before it take numbers, never that word; the key itself may be named `fields`).
fn fields_keyword(argv: &[Bytes]) -> Option<usize> {
    argv.iter()
        .skip(2)
        .position(|a| a.eq_ignore_ascii_case(b"fields"))
        .map(|i| i + 2)
}

/// `FUNCTION LOAD` and `FUNCTION RESTORE` as Redis 7.0 RC1/RC2 wrote them (an AOF or a stream of such a
/// server), in the form every GA server takes; `None` for anything else, which goes as it is.
///
/// - `FUNCTION LOAD <engine> <name> [REPLACE] [DESC|DESCRIPTION <text>] <body>` (five arguments or more; the GA
///   form has at most four) becomes `FUNCTION LOAD [REPLACE] "#!<engine> name=<name>\n<body>"`; the description
///   has no place in GA libraries.
/// - `FUNCTION RESTORE <payload> ...` with a pre-GA payload (opcode 246) gets the same libraries in a GA payload.
///   A payload that cannot be read goes as it is, for the target to refuse.
fn function_in_ga_form(argv: &[Bytes]) -> Option<Vec<Bytes>> {
    let sub = argv.get(1)?.to_ascii_lowercase();
    match sub.as_slice() {
        b"load" if argv.len() >= 5 => {
            let last = argv.len() - 1;
            let mut replace = false;
            let mut i = 4;
            while i < last {
                match argv[i].to_ascii_lowercase().as_slice() {
                    b"replace" => {
                        replace = true;
                        i += 1;
                    }
                    b"desc" | b"description" if i + 1 < last => i += 2,
                    _ => return None,
                }
            }
            let mut out = vec![argv[0].clone(), argv[1].clone()];
            if replace {
                out.push(Bytes::from_static(b"REPLACE"));
            }
            out.push(ferry_rdb::pre_ga_library_code(
                &argv[2],
                &argv[3],
                &argv[last],
            ));
            Some(out)
        }
        b"restore" if argv.len() >= 3 => {
            let payload = ferry_rdb::function_payload_from_pre_ga(&argv[2]).ok()??;
            let mut out = argv.to_vec();
            out[2] = Bytes::from(payload);
            Some(out)
        }
        _ => None,
    }
}

/// The RDB version in the footer of a DUMP payload and its type byte, read without checking the payload (`None`
/// when it is too short to be one).
fn payload_footer(payload: &[u8]) -> Option<(u32, u8)> {
    let at = payload.len().checked_sub(10)?;
    let version = u16::from_le_bytes([payload[at], payload[at + 1]]);
    Some((u32::from(version), *payload.first()?))
}

/// A live `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]` (or `RESTORE-ASKING`) for `target`.
///
/// A source propagates the payload its client gave, in the RDB version of the server that made it (Redis 7.0
/// writes 10, 8.2 writes 12, Valkey 9 writes 80), and a target that does not load that version refuses the whole
/// command ("DUMP payload version or checksum are wrong"): a Redis 8.2 source's `RESTORE` stopped a job into
/// Valkey 9 or Redis 7.0. Such a payload is fitted as a full sync's key is ([`fit_entry`]): re-encoded in a
/// version the target loads, its field expiries dropped under `convert`; a key the policy leaves out is listed
/// and deleted on the target (it may hold an older value), and `stop` stops the job naming it. A payload the
/// target loads as it is goes unchanged, without being read.
fn restore_for_target(
    db: i64,
    argv: &[Bytes],
    target: &TargetFormat,
    policy: TargetPolicy,
    report: &mut PolicyReport,
) -> Result<Option<Vec<Bytes>>, crate::error::Error> {
    let (Some(key), Some(payload)) = (argv.get(1), argv.get(3)) else {
        return Ok(Some(argv.to_vec()));
    };
    let Some((version, kind)) = payload_footer(payload) else {
        return Ok(Some(argv.to_vec()));
    };
    let module = kind == 6 || kind == 7;
    if !module && target.loads(version) {
        return Ok(Some(argv.to_vec()));
    }
    let parts = ferry_rdb::split_dump(payload).map_err(|e| {
        crate::error::Error::Rdb(format!(
            "the payload of a RESTORE of key {} (db {db}): {e}",
            crate::error::KeyDisplay(key.to_vec())
        ))
    })?;
    let fitted = fit_entry_lossy(
        db,
        key,
        parts.serialized,
        u32::from(parts.rdb_version),
        target,
        policy,
        report,
    )?;
    match fitted {
        Some((p, lost)) => {
            if lost {
                report.commands_converted += 1;
            }
            let mut out = argv.to_vec();
            out[3] = p;
            Ok(Some(out))
        }
        None => {
            // Left out by the policy (listed), or a hash whose every field had expired (gone on the source).
            if report.is_skipped(db, key) {
                report.commands_skipped += 1;
            }
            Ok(Some(vec![Bytes::from_static(b"DEL"), key.clone()]))
        }
    }
}

/// `FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]` with a payload whose footer the target does not load (Redis
/// 8.2 writes RDB 12, Valkey 9 writes 80): the libraries are the same `FUNCTION LOAD` code in every version since
/// 7.0, so only the footer is rewritten, to a version the target loads.
fn function_payload_for_target(argv: &mut [Bytes], target: &TargetFormat) {
    if argv.len() < 3 || !argv[1].eq_ignore_ascii_case(b"restore") {
        return;
    }
    let Some((version, kind)) = payload_footer(&argv[2]) else {
        return;
    };
    if kind != ferry_rdb::parser::types::OP_FUNCTION2 || target.loads(version) {
        return;
    }
    let Ok(parts) = ferry_rdb::split_dump(&argv[2]) else {
        return;
    };
    // Valkey 9 loads 11 and its own 80; every Redis loads its own version.
    let to = if ferry_rdb::is_valkey_version(target.rdb_version) {
        11
    } else {
        target.rdb_version
    };
    argv[2] = Bytes::from(ferry_rdb::build_dump(parts.serialized, to as u16));
}

/// `HSETEX key [KEEPTTL] FIELDS n f v ...` as `HSET key f v ...`: for a target that has no field expiries (it
/// does not know `HSETEX`) the two write the same. `None` for any other `HSETEX` (an expiry to set, `FNX`/`FXX`
/// conditions) and for malformed ones, which the policy then decides.
fn hsetex_without_expiry(name: &str, argv: &[Bytes]) -> Option<Vec<Bytes>> {
    if name != "hsetex" {
        return None;
    }
    let at = fields_keyword(argv)?;
    let only_keepttl = argv[2..at]
        .iter()
        .all(|a| a.eq_ignore_ascii_case(b"keepttl"));
    // The `HSET` takes every argument after `FIELDS n`, and at least one pair.
    without_field_expiry(name, argv)
        .filter(|hset| only_keepttl && hset.len() > 2 && hset.len() == argv.len() - at)
}

/// A field expiry command without its expiry: `HSETEX key [opts] FIELDS n f v ...` becomes `HSET key f v ...`,
/// `HGETEX` (a read whose expiry part reaches a replica only as such) and the `H*EXPIRE*`/`HPERSIST` commands
/// become nothing.
fn without_field_expiry(name: &str, argv: &[Bytes]) -> Option<Vec<Bytes>> {
    if name != "hsetex" || argv.len() < 2 {
        return None;
    }
    let at = fields_keyword(argv)?;
    let n: usize = std::str::from_utf8(argv.get(at + 1)?).ok()?.parse().ok()?;
    let pairs = argv.get(at + 2..at + 2 + 2 * n)?;
    let mut out = vec![Bytes::from_static(b"HSET"), argv[1].clone()];
    out.extend(pairs.iter().cloned());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(argv: &[Bytes]) -> Vec<String> {
        argv.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn restore_without_expiry_uses_zero_ttl_and_abs_flag() {
        let argv = restore_command(
            Bytes::from_static(b"k"),
            Bytes::from_static(b"P"),
            None,
            false,
            None,
        );
        assert_eq!(strs(&argv), ["RESTORE", "k", "0", "P", "ABSTTL"]);
    }

    #[test]
    fn restore_keeps_absolute_expiry_replace_and_hints() {
        let argv = restore_command(
            Bytes::from_static(b"k"),
            Bytes::from_static(b"P"),
            Some(1_900_000_000_000),
            true,
            Some(EvictionHint::IdleSeconds(12)),
        );
        assert_eq!(
            strs(&argv),
            [
                "RESTORE",
                "k",
                "1900000000000",
                "P",
                "ABSTTL",
                "REPLACE",
                "IDLETIME",
                "12"
            ]
        );
        let argv = restore_command(
            Bytes::from_static(b"k"),
            Bytes::from_static(b"P"),
            None,
            false,
            Some(EvictionHint::Frequency(5)),
        );
        assert_eq!(strs(&argv)[5..], ["FREQ", "5"]);
    }

    #[test]
    fn element_commands_are_chunked_and_scores_round_trip() {
        let key = Bytes::from_static(b"z");
        let pairs: Vec<(Bytes, f64)> = (0..1000)
            .map(|i| (Bytes::from(format!("m{i}")), i as f64 / 3.0))
            .collect();
        let mut out = Vec::new();
        value_commands(&key, &ferry_rdb::Value::SortedSet(pairs), 10, &mut |c| {
            out.push(c)
        })
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 2 + 2 * ELEMENTS_PER_COMMAND);
        let s: f64 = std::str::from_utf8(&out[0][2 + 2])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s, 1.0 / 3.0);
        assert_eq!(score(f64::INFINITY), Bytes::from_static(b"+inf"));
    }

    #[test]
    fn stream_arguments_new_in_7_are_removed_for_older_targets() {
        let mut argv: Vec<Bytes> = ["XGROUP", "SETID", "s", "g", "5-0", "ENTRIESREAD", "3"]
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let original = argv.clone();
        adapt_for_target(&mut argv, 10);
        assert_eq!(argv, original);
        adapt_for_target(&mut argv, 9);
        assert_eq!(argv, original[..5].to_vec());
        let mut xsetid: Vec<Bytes> = [
            "XSETID",
            "s",
            "5-0",
            "ENTRIESADDED",
            "9",
            "MAXDELETEDID",
            "2-0",
        ]
        .iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect();
        adapt_for_target(&mut xsetid, 9);
        assert_eq!(xsetid.len(), 3);
    }

    #[test]
    fn expiry_conditions_of_7_0_are_removed_for_older_targets() {
        let cmd = |parts: &[&str]| -> Vec<Bytes> {
            parts
                .iter()
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect()
        };
        for flag in ["NX", "xx", "GT", "lt"] {
            let mut argv = cmd(&["PEXPIREAT", "k", "1795899412797", flag]);
            adapt_for_target(&mut argv, 10);
            assert_eq!(argv.len(), 4);
            adapt_for_target(&mut argv, 9);
            assert_eq!(argv, cmd(&["PEXPIREAT", "k", "1795899412797"]));
        }
        // A key named like a condition stays.
        let mut argv = cmd(&["PEXPIREAT", "nx", "1"]);
        adapt_for_target(&mut argv, 9);
        assert_eq!(argv, cmd(&["PEXPIREAT", "nx", "1"]));
    }

    #[test]
    fn conflict_policy_parses_from_config_words() {
        assert_eq!(
            "Rewrite".parse::<ConflictPolicy>().unwrap(),
            ConflictPolicy::Rewrite
        );
        assert_eq!(
            "skip".parse::<ConflictPolicy>().unwrap(),
            ConflictPolicy::Skip
        );
        assert_eq!(
            "panic".parse::<ConflictPolicy>().unwrap(),
            ConflictPolicy::Panic
        );
        assert!("merge".parse::<ConflictPolicy>().is_err());
    }

    fn argv(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn target_format_reads_valkey_and_redis_info() {
        let v = TargetFormat::from_info(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n",
        );
        assert_eq!(
            (v.family, v.rdb_version, v.field_expiry),
            (ServerFamily::Valkey, 80, true)
        );
        assert!(v.loads(11) && v.loads(80) && !v.loads(12));
        let r = TargetFormat::from_info("redis_version:8.2.3\r\n");
        assert_eq!((r.rdb_version, r.field_expiry), (12, true));
        assert!(!r.knows_command("VADD"));
        let r = r.with_loaded_modules(["vectorset"]);
        assert!(r.knows_command("VADD") && !v.knows_command("vadd"));
        let old = TargetFormat::from_info("redis_version:7.0.15\r\n");
        assert!(!old.field_expiry && !old.knows_command("HPEXPIRE"));
        assert_eq!(
            TargetFormat::from_info("redis_version:6.2.14").rdb_version,
            9
        );
    }

    #[test]
    fn loaded_modules_give_the_module_types_the_target_holds() {
        let t = TargetFormat::from_info("redis_version:8.2.3").with_loaded_modules([
            "graph",
            "vectorset",
            "mymodtype",
            "other",
        ]);
        assert_eq!(
            t.module_types,
            ["graphdata", "vectorset", "mymodtype"].map(String::from)
        );
        let v = TargetFormat::from_info("valkey_version:9.1.2").with_loaded_modules(["bf"]);
        assert_eq!(v.module_types, ["bloomfltr".to_string()]);
    }

    #[test]
    fn a_cluster_of_mixed_masters_is_written_for_the_weaker_one() {
        let new = TargetFormat::from_info("redis_version:8.2.3");
        let old = TargetFormat::from_info("redis_version:7.0.15");
        assert_eq!(new.clone().least(new.clone()), new);
        let least = new.least(old.clone());
        assert_eq!(least, old);
        assert!(!least.field_expiry && least.module_types.is_empty());
    }

    #[test]
    fn a_stored_report_entry_reads_back_as_written_for_any_key_bytes() {
        for loss in [
            Loss::FieldExpiries { fields: 3 },
            Loss::ModuleType {
                name: "vectorset".into(),
            },
            Loss::UnknownCommand {
                name: "hsetex".into(),
            },
        ] {
            let key = PolicyKey {
                db: 12,
                key: Bytes::from_static(b"a:b\xff\0 {c}"),
                loss,
            };
            let back = PolicyKey::decode(&key.member(), &key.reason()).unwrap();
            assert_eq!(back, key);
        }
        assert_eq!(PolicyKey::decode(b"x:k", b"fields 1"), None);
        assert_eq!(PolicyKey::decode(b"0:k", b"other 1"), None);
    }

    #[test]
    fn a_loaded_report_counts_each_key_once_and_skips_later_commands() {
        let target = TargetFormat::from_info("redis_version:7.0.15");
        let mut report = PolicyReport::new(1);
        report.persist = true;
        let k = |key: &'static [u8]| PolicyKey {
            db: 0,
            key: Bytes::from_static(key),
            loss: Loss::FieldExpiries { fields: 1 },
        };
        report.load(vec![k(b"a"), k(b"b"), k(b"a")], vec![k(b"c")]);
        assert_eq!((report.keys_skipped, report.keys_converted), (2, 1));
        assert_eq!(report.skipped.len(), 1, "listed up to max_listed");
        assert!(
            report.take_pending().is_empty(),
            "read back, not stored again"
        );
        let hset = [
            Bytes::from_static(b"HSET"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"f"),
        ];
        assert_eq!(
            fit_command(0, &hset, &target, TargetPolicy::Skip, &mut report).unwrap(),
            None
        );
        let hsetex = [
            Bytes::from_static(b"HSETEX"),
            Bytes::from_static(b"d"),
            Bytes::from_static(b"PX"),
            Bytes::from_static(b"100"),
            Bytes::from_static(b"FIELDS"),
            Bytes::from_static(b"1"),
            Bytes::from_static(b"f"),
            Bytes::from_static(b"v"),
        ];
        fit_command(0, &hsetex, &target, TargetPolicy::Skip, &mut report).unwrap();
        let pending = report.take_pending();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].skipped && pending[0].key.key == "d");
        assert_eq!(report.keys_skipped, 3);
    }

    #[test]
    fn an_hsetex_that_sets_no_expiry_is_an_hset_for_a_target_without_field_expiries_under_any_policy(
    ) {
        let old = TargetFormat::from_info("redis_version:7.0.15");
        let new = TargetFormat::from_info("redis_version:8.2.3");
        let argv = |a: &[&'static str]| {
            a.iter()
                .map(|s| Bytes::from_static(s.as_bytes()))
                .collect::<Vec<_>>()
        };
        // What Redis 8 propagates for `HINCRBYFLOAT h c 1.5`, and a plain HSETEX without options.
        for (sent, want) in [
            (
                argv(&["HSETEX", "h", "KEEPTTL", "FIELDS", "1", "c", "1.5"]),
                argv(&["HSET", "h", "c", "1.5"]),
            ),
            (
                argv(&["hsetex", "h", "fields", "2", "a", "1", "b", "2"]),
                argv(&["HSET", "h", "a", "1", "b", "2"]),
            ),
            // A key named like the keyword.
            (
                argv(&["HSETEX", "fields", "KEEPTTL", "FIELDS", "1", "fields", "x"]),
                argv(&["HSET", "fields", "fields", "x"]),
            ),
        ] {
            for policy in [
                TargetPolicy::Stop,
                TargetPolicy::Skip,
                TargetPolicy::Convert,
            ] {
                let mut report = PolicyReport::new(10);
                let got = fit_command(0, &sent, &old, policy, &mut report).unwrap();
                assert_eq!(got, Some(want.clone()), "{policy:?}");
                assert_eq!((report.keys_skipped, report.keys_converted), (0, 0));
                assert_eq!((report.commands_skipped, report.commands_converted), (0, 0));
            }
            // A target that knows HSETEX gets it as it is.
            let mut report = PolicyReport::new(10);
            let got = fit_command(0, &sent, &new, TargetPolicy::Stop, &mut report).unwrap();
            assert_eq!(got, Some(sent.clone()));
        }
        // An expiry to set, a condition, or a malformed command: the policy decides (stop stops).
        for sent in [
            argv(&["HSETEX", "h", "PX", "100", "FIELDS", "1", "c", "1"]),
            argv(&["HSETEX", "h", "KEEPTTL", "FNX", "FIELDS", "1", "c", "1"]),
            argv(&["HSETEX", "h", "FIELDS", "2", "c", "1"]),
            argv(&["HSETEX", "h", "FIELDS", "0"]),
            argv(&["HSETEX", "h", "FIELDS", "x", "c", "1"]),
            argv(&["HSETEX", "FIELDS", "1", "c", "1"]),
        ] {
            let mut report = PolicyReport::new(10);
            let e = fit_command(0, &sent, &old, TargetPolicy::Stop, &mut report).unwrap_err();
            assert!(e.to_string().contains("does not know `hsetex`"), "{e}");
        }
    }

    fn ttl_hash() -> ferry_rdb::Value {
        ferry_rdb::Value::Hash(vec![
            ferry_rdb::HashField {
                field: "a".into(),
                value: "1".into(),
                expire_at_ms: Some(4_102_444_800_000),
            },
            ferry_rdb::HashField::new("b", "2"),
        ])
    }

    #[test]
    fn release_candidate_function_loads_take_the_ga_form_and_ga_ones_stay() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let rc = argv(&[
            "FUNCTION", "LOAD", "Lua", "lib", "DESC", "replace", "return 1",
        ]);
        assert_eq!(
            function_in_ga_form(&rc),
            Some(vec![
                b("FUNCTION"),
                b("LOAD"),
                b("#!lua name=lib\nreturn 1")
            ])
        );
        let rc = argv(&[
            "function",
            "load",
            "LUA",
            "lib",
            "replace",
            "description",
            "d",
            "x",
        ]);
        assert_eq!(
            function_in_ga_form(&rc),
            Some(vec![
                b("function"),
                b("load"),
                b("REPLACE"),
                b("#!lua name=lib\nx")
            ])
        );
        for ga in [
            argv(&["FUNCTION", "LOAD", "#!lua name=lib\nx"]),
            argv(&["FUNCTION", "LOAD", "REPLACE", "#!lua name=lib\nx"]),
            argv(&["FUNCTION", "LOAD", "Lua", "lib", "BOGUS", "x"]),
            argv(&["FUNCTION", "DELETE", "lib"]),
            argv(&["FUNCTION", "RESTORE", "not a payload"]),
        ] {
            assert_eq!(function_in_ga_form(&ga), None, "{ga:?}");
        }
    }

    /// The value and payload version `fit_entry` writes for `raw` (an RDB 12 value) under policy convert.
    fn converted(
        key: &Bytes,
        raw: &[u8],
        target: &TargetFormat,
        report: &mut PolicyReport,
    ) -> (ferry_rdb::Value, u16) {
        let payload = fit_entry(0, key, raw, 12, target, TargetPolicy::Convert, report)
            .unwrap()
            .unwrap();
        ferry_rdb::decode_dump(&payload).unwrap()
    }

    #[test]
    fn field_expiry_hash_for_7_0_stops_skips_or_converts_by_policy() {
        let raw = ferry_rdb::encode_value(&ttl_hash(), 12).unwrap();
        let target = TargetFormat::from_info("redis_version:7.0.15");
        let key = Bytes::from_static(b"h");
        let mut report = PolicyReport::default();
        let err =
            fit_entry(0, &key, &raw, 12, &target, TargetPolicy::Stop, &mut report).unwrap_err();
        assert!(err.to_string().contains("\"h\""), "{err}");
        assert_eq!(
            fit_entry(0, &key, &raw, 12, &target, TargetPolicy::Skip, &mut report).unwrap(),
            None
        );
        assert_eq!(report.keys_skipped, 1);
        assert_eq!(report.skipped[0].key, key);
        let mut report = PolicyReport::default();
        let (v, ver) = converted(&key, &raw, &target, &mut report);
        assert_eq!(ver, 10);
        assert!(!v.has_field_expiry() && v.len() == 2);
        assert_eq!(report.converted[0].loss, Loss::FieldExpiries { fields: 1 });
    }

    #[test]
    fn fields_whose_expiry_passed_are_not_written_and_need_no_policy() {
        let target = TargetFormat::from_info("redis_version:7.0.15");
        let key = Bytes::from_static(b"h");
        let field = |name: &str, at: Option<u64>| ferry_rdb::HashField {
            field: Bytes::copy_from_slice(name.as_bytes()),
            value: "v".into(),
            expire_at_ms: at,
        };
        // Expired in 2025: gone on the source; the rest has no expiry, so a 7.0 target holds it as it is.
        let past = Some(1_749_313_821_176);
        let raw = ferry_rdb::encode_value(
            &ferry_rdb::Value::Hash(vec![field("gone", past), field("kept", None)]),
            12,
        )
        .unwrap();
        for policy in [
            TargetPolicy::Stop,
            TargetPolicy::Skip,
            TargetPolicy::Convert,
        ] {
            let mut report = PolicyReport::default();
            let payload = fit_entry(0, &key, &raw, 12, &target, policy, &mut report)
                .unwrap()
                .unwrap();
            let (v, _) = ferry_rdb::decode_dump(&payload).unwrap();
            assert_eq!(v, ferry_rdb::Value::Hash(vec![field("kept", None)]));
            assert_eq!(report, PolicyReport::default(), "{policy:?}");
        }
        // Converted: the expired field does not come back as a field that never expires.
        let raw = ferry_rdb::encode_value(
            &ferry_rdb::Value::Hash(vec![
                field("gone", past),
                field("later", Some(4_102_444_800_000)),
            ]),
            12,
        )
        .unwrap();
        let mut report = PolicyReport::default();
        let (v, _) = converted(&key, &raw, &target, &mut report);
        assert_eq!(v, ferry_rdb::Value::Hash(vec![field("later", None)]));
        assert_eq!(report.converted[0].loss, Loss::FieldExpiries { fields: 1 });
        // Every field expired: the key is gone, whatever the policy.
        let raw = ferry_rdb::encode_value(&ferry_rdb::Value::Hash(vec![field("gone", past)]), 12)
            .unwrap();
        let mut report = PolicyReport::default();
        assert_eq!(
            fit_entry(0, &key, &raw, 12, &target, TargetPolicy::Stop, &mut report).unwrap(),
            None
        );
        assert_eq!(report, PolicyReport::default());
    }

    #[test]
    fn valkey_target_gets_hash_2_and_payloads_of_11() {
        let target = TargetFormat::from_info("redis_version:7.2.4\r\nvalkey_version:9.1.2");
        let key = Bytes::from_static(b"h");
        let mut report = PolicyReport::default();
        let raw = ferry_rdb::encode_value(&ttl_hash(), 12).unwrap();
        let p = fit_entry(0, &key, &raw, 12, &target, TargetPolicy::Stop, &mut report)
            .unwrap()
            .unwrap();
        assert_eq!((p[0], ferry_rdb::decode_dump(&p).unwrap().1), (22, 80));
        let list = ferry_rdb::encode_value(&ferry_rdb::Value::List(vec!["x".into()]), 12).unwrap();
        let p = fit_entry(0, &key, &list, 12, &target, TargetPolicy::Stop, &mut report)
            .unwrap()
            .unwrap();
        assert_eq!(ferry_rdb::decode_dump(&p).unwrap().1, 11);
        assert_eq!(report, PolicyReport::default());
    }

    #[test]
    fn a_live_restore_gets_a_payload_the_target_loads_and_follows_the_policy_where_it_loses() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let restore = |payload: Vec<u8>| {
            vec![
                b("RESTORE"),
                b("h"),
                b("0"),
                Bytes::from(payload),
                b("REPLACE"),
                b("ABSTTL"),
            ]
        };
        let list = ferry_rdb::Value::List(vec!["x".into(), "y".into()]);
        let from_8_2 = ferry_rdb::encode_dump(&list, 12).unwrap();
        let redis_7_0 = TargetFormat::from_info("redis_version:7.0.15");
        let valkey_9 = TargetFormat::from_info("redis_version:7.2.4\r\nvalkey_version:9.1.2");
        let redis_6_2 = TargetFormat::from_info("redis_version:6.2.14");
        for (target, version) in [(&redis_7_0, 10), (&valkey_9, 11), (&redis_6_2, 9)] {
            let mut report = PolicyReport::default();
            let out = fit_command(
                0,
                &restore(from_8_2.clone()),
                target,
                TargetPolicy::Stop,
                &mut report,
            )
            .unwrap()
            .unwrap();
            // The key, TTL and options as they were; the payload in a version the target loads, same value.
            assert_eq!(strs(&out[..3]), ["RESTORE", "h", "0"]);
            assert_eq!(strs(&out[4..]), ["REPLACE", "ABSTTL"]);
            assert_eq!(
                ferry_rdb::decode_dump(&out[3]).unwrap(),
                (list.clone(), version)
            );
            assert_eq!(report, PolicyReport::default());
        }
        // A payload the target loads goes as it is (a Valkey 9 target loads 11, its own 80, not Redis's 12).
        let same = restore(ferry_rdb::encode_dump(&list, 10).unwrap());
        let mut report = PolicyReport::default();
        for target in [&redis_7_0, &valkey_9] {
            assert_eq!(
                fit_command(0, &same, target, TargetPolicy::Stop, &mut report).unwrap(),
                Some(same.clone())
            );
        }
        let valkey_payload = restore(ferry_rdb::encode_dump(&ttl_hash(), 80).unwrap());
        let redis_8_2 = TargetFormat::from_info("redis_version:8.2.1");
        let out = fit_command(
            0,
            &valkey_payload,
            &redis_8_2,
            TargetPolicy::Stop,
            &mut report,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ferry_rdb::decode_dump(&out[3]).unwrap(), (ttl_hash(), 12));
        assert_eq!(report, PolicyReport::default());
        // Field expiries for a target without them: stop names the key, convert drops them, skip deletes the key.
        let ttl = restore(ferry_rdb::encode_dump(&ttl_hash(), 12).unwrap());
        let e = fit_command(0, &ttl, &redis_7_0, TargetPolicy::Stop, &mut report).unwrap_err();
        assert!(e.to_string().contains("\"h\""), "{e}");
        let out = fit_command(0, &ttl, &redis_7_0, TargetPolicy::Convert, &mut report)
            .unwrap()
            .unwrap();
        let (v, version) = ferry_rdb::decode_dump(&out[3]).unwrap();
        assert_eq!((v.len(), v.has_field_expiry(), version), (2, false, 10));
        assert_eq!((report.keys_converted, report.commands_converted), (1, 1));
        let mut report = PolicyReport::default();
        let out = fit_command(0, &ttl, &redis_7_0, TargetPolicy::Skip, &mut report).unwrap();
        assert_eq!(out.map(|c| strs(&c)), words(&["DEL", "h"]));
        assert_eq!((report.keys_skipped, report.commands_skipped), (1, 1));
        // A payload that is not one goes as it is: the target answers for it as the source did.
        let odd = restore(b"short".to_vec());
        assert_eq!(
            fit_command(
                0,
                &odd,
                &redis_6_2,
                TargetPolicy::Stop,
                &mut PolicyReport::default()
            )
            .unwrap(),
            Some(odd.clone())
        );
    }

    #[test]
    fn a_function_restore_payload_gets_a_footer_the_target_loads() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        // What `FUNCTION DUMP` of one library gives: opcode 245, the library's code, the footer.
        let mut body = vec![ferry_rdb::parser::types::OP_FUNCTION2];
        let code = b"#!lua name=lib\nredis.register_function('f', function() return 1 end)";
        body.push(code.len() as u8);
        body.extend_from_slice(code);
        for (made_by, target, written) in [
            (
                12u16,
                TargetFormat::from_info("redis_version:7.0.15"),
                10u16,
            ),
            (
                12,
                TargetFormat::from_info("redis_version:7.2.4\r\nvalkey_version:9.1.2"),
                11,
            ),
            (80, TargetFormat::from_info("redis_version:8.2.1"), 12),
        ] {
            let sent = vec![
                b("FUNCTION"),
                b("RESTORE"),
                Bytes::from(ferry_rdb::build_dump(&body, made_by)),
                b("REPLACE"),
            ];
            let out = fit_command(
                0,
                &sent,
                &target,
                TargetPolicy::Stop,
                &mut PolicyReport::default(),
            )
            .unwrap()
            .unwrap();
            let parts = ferry_rdb::split_dump(&out[2]).unwrap();
            assert_eq!((parts.serialized, parts.rdb_version), (&body[..], written));
            assert_eq!(strs(&out[3..]), ["REPLACE"]);
            // Where the target loads the footer, the command is unchanged.
            let loaded = vec![
                b("FUNCTION"),
                b("RESTORE"),
                Bytes::from(ferry_rdb::build_dump(&body, written)),
            ];
            assert_eq!(
                fit_command(
                    0,
                    &loaded,
                    &target,
                    TargetPolicy::Stop,
                    &mut PolicyReport::default()
                )
                .unwrap(),
                Some(loaded.clone())
            );
        }
    }

    /// What `fit_command` makes of `cmd` for `target` under `policy`: the command sent, or the error's text.
    fn fitted(
        cmd: &[&str],
        target: &TargetFormat,
        policy: TargetPolicy,
    ) -> Result<Option<Vec<String>>, String> {
        fit_command(0, &argv(cmd), target, policy, &mut PolicyReport::default())
            .map(|out| out.map(|c| strs(&c)))
            .map_err(|e| e.to_string())
    }

    fn words(cmd: &[&str]) -> Option<Vec<String>> {
        Some(cmd.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn options_of_one_version_are_dropped_where_they_change_nothing_and_follow_the_policy_where_they_do(
    ) {
        let valkey = TargetFormat::from_info(
            "server_name:valkey\nvalkey_version:9.1.0\nredis_version:7.2.4",
        );
        let redis70 = TargetFormat::from_info("redis_version:7.0.15");
        let redis82 = TargetFormat::from_info("redis_version:8.2.3");
        let stop = TargetPolicy::Stop;
        // Redis 8.2's stream reference policies: KEEPREF is what every server does.
        let keepref = ["XADD", "st", "KEEPREF", "MAXLEN", "5", "1-1", "f", "1"];
        assert_eq!(fitted(&keepref, &redis82, stop), Ok(words(&keepref)));
        for older in [&valkey, &redis70] {
            assert_eq!(
                fitted(&keepref, older, stop),
                Ok(words(&["XADD", "st", "MAXLEN", "5", "1-1", "f", "1"]))
            );
            assert_eq!(
                fitted(
                    &["xadd", "st", "nomkstream", "delref", "1-1", "f", "1"],
                    older,
                    stop
                ),
                Ok(words(&["xadd", "st", "nomkstream", "1-1", "f", "1"])),
                "no trim clause: nothing for DELREF to do"
            );
            assert_eq!(
                fitted(
                    &["XTRIM", "st", "MINID", "=", "5-0", "LIMIT", "10", "KEEPREF"],
                    older,
                    stop
                ),
                Ok(words(&["XTRIM", "st", "MINID", "=", "5-0", "LIMIT", "10"]))
            );
            // A field or value that reads like an option is data.
            let data = ["XADD", "st", "1-1", "ACKED", "DELREF"];
            assert_eq!(fitted(&data, older, stop), Ok(words(&data)));
            for (cmd, shown) in [
                (
                    &["XADD", "st", "ACKED", "MAXLEN", "~", "1", "*", "f", "1"][..],
                    "xadd acked",
                ),
                (
                    &["XTRIM", "st", "MAXLEN", "0", "DELREF"][..],
                    "xtrim delref",
                ),
                (&["BITOP", "DIFF", "d", "a", "b"][..], "bitop diff"),
                (&["bitop", "one", "d", "a"][..], "bitop one"),
                (&["XDELEX", "st", "ACKED", "IDS", "1", "1-1"][..], "xdelex"),
            ] {
                let err = fitted(cmd, older, stop).unwrap_err();
                assert!(err.contains(&format!("does not know `{shown}`")), "{err}");
                // BITOP's first key is its destination, by the command table or without it.
                let key = cmd[if cmd[0].eq_ignore_ascii_case("bitop") {
                    2
                } else {
                    1
                }];
                let mut report = PolicyReport::default();
                let out =
                    fit_command(0, &argv(cmd), older, TargetPolicy::Convert, &mut report).unwrap();
                assert_eq!(out.map(|c| strs(&c)), words(&["DEL", key]));
                assert_eq!(
                    report.skipped[0].loss.to_string(),
                    format!("the target does not know `{shown}`")
                );
            }
            assert_eq!(
                fitted(&["XDELEX", "st", "IDS", "2", "1-1", "2-2"], older, stop),
                Ok(words(&["XDEL", "st", "1-1", "2-2"]))
            );
            assert_eq!(
                fitted(&["BITOP", "AND", "d", "a", "b"], older, stop),
                Ok(words(&["BITOP", "AND", "d", "a", "b"]))
            );
        }
        // Valkey's conditional SET: the source propagates it only when it wrote.
        let ifeq = ["SET", "k", "IFEQ", "IFEQ", "old", "KEEPTTL"];
        assert_eq!(fitted(&ifeq, &valkey, stop), Ok(words(&ifeq)));
        for older in [&redis82, &redis70] {
            assert_eq!(
                fitted(&ifeq, older, stop),
                Ok(words(&["SET", "k", "IFEQ", "KEEPTTL"]))
            );
            assert_eq!(
                fitted(&["SET", "k", "v", "PX", "IFEQ", "IFEQ", "x"], older, stop),
                Ok(words(&["SET", "k", "v", "PX", "IFEQ"]))
            );
        }
        // The keys a command only reads stay.
        let mut report = PolicyReport::default();
        let diff = argv(&["BITOP", "DIFF", "d", "a", "b"]);
        let out = fit_command_keyed(
            0,
            &diff,
            &argv(&["d", "a", "b"]),
            &valkey,
            TargetPolicy::Skip,
            &mut report,
        );
        assert_eq!(out.unwrap(), Some(argv(&["DEL", "d"])));
        assert_eq!(report.keys_skipped, 1);
        // An MSETEX, which the target does not know, leaves out every key it sets.
        let mut report = PolicyReport::default();
        let msetex = argv(&["MSETEX", "2", "a", "1", "b", "2", "PXAT", "9"]);
        let keys = argv(&["a", "b"]);
        assert_eq!(keys_without_table(&msetex), keys);
        let out = fit_command_keyed(0, &msetex, &keys, &redis82, TargetPolicy::Skip, &mut report)
            .unwrap();
        assert_eq!(out, Some(argv(&["DEL", "a", "b"])));
        assert_eq!(report.keys_skipped, 2);
        let mut report = PolicyReport::default();
        assert!(
            fit_command_keyed(0, &msetex, &keys, &valkey, stop, &mut report)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn live_field_expiry_commands_follow_the_policy_and_skipped_keys_stay_absent() {
        let target = TargetFormat::from_info("redis_version:7.0.15");
        let mut report = PolicyReport::default();
        let hpexpire = argv(&["HPEXPIRE", "h", "1000", "FIELDS", "1", "a"]);
        assert!(fit_command(0, &hpexpire, &target, TargetPolicy::Stop, &mut report).is_err());
        let out = fit_command(0, &hpexpire, &target, TargetPolicy::Skip, &mut report).unwrap();
        assert_eq!(out, Some(argv(&["DEL", "h"])));
        assert!(fit_command(
            0,
            &argv(&["HSET", "h", "c", "3"]),
            &target,
            TargetPolicy::Skip,
            &mut report
        )
        .unwrap()
        .is_none());
        assert!(fit_command(
            1,
            &argv(&["HSET", "h", "c", "3"]),
            &target,
            TargetPolicy::Skip,
            &mut report
        )
        .unwrap()
        .is_some());
        let mut report = PolicyReport::default();
        let hsetex = argv(&[
            "HSETEX", "h2", "FNX", "PX", "100", "FIELDS", "2", "a", "1", "b", "2",
        ]);
        assert_eq!(
            fit_command(0, &hsetex, &target, TargetPolicy::Convert, &mut report).unwrap(),
            Some(argv(&["HSET", "h2", "a", "1", "b", "2"]))
        );
        assert_eq!(
            fit_command(0, &hpexpire, &target, TargetPolicy::Convert, &mut report).unwrap(),
            None
        );
        assert_eq!(report.keys_converted, 2);
        assert_eq!((report.commands_converted, report.commands_skipped), (1, 1));
        let known = argv(&["SET", "k", "v"]);
        assert_eq!(
            fit_command(0, &known, &target, TargetPolicy::Stop, &mut report).unwrap(),
            Some(known)
        );
    }

    #[test]
    fn target_policy_parses_from_config_words() {
        assert_eq!("stop".parse::<TargetPolicy>().unwrap(), TargetPolicy::Stop);
        assert_eq!("Skip".parse::<TargetPolicy>().unwrap(), TargetPolicy::Skip);
        assert_eq!(
            "convert".parse::<TargetPolicy>().unwrap(),
            TargetPolicy::Convert
        );
        assert!("drop".parse::<TargetPolicy>().is_err());
    }

    #[test]
    fn bitop_operations_and_msetex_go_as_several_commands_a_target_knows() {
        let valkey = TargetFormat::from_info(
            "redis_version:7.2.4\nvalkey_version:9.1.0\nserver_name:valkey",
        );
        let redis82 = TargetFormat::from_info("redis_version:8.2.3");
        let several = |cmd: &[&str], target: &TargetFormat| {
            let mut report = PolicyReport::default();
            let keys = keys_without_table(&argv(cmd));
            let out = match several_for_target(0, &argv(cmd), &keys, target, &mut report) {
                Some(several) => Ok(several),
                None => fit_command_keyed(
                    0,
                    &argv(cmd),
                    &keys,
                    target,
                    TargetPolicy::Stop,
                    &mut report,
                )
                .map(|one| one.into_iter().collect()),
            };
            out.map(|out| out.iter().map(|c| strs(c).join(" ")).collect::<Vec<_>>())
        };
        // The scratch keys carry a hash tag of the destination's slot.
        let tag = ferry_topology::tag_for_slot(ferry_topology::key_slot(b"d")).unwrap();
        let t = format!("ferry:bitop:{{{tag}}}:t");
        let u = format!("ferry:bitop:{{{tag}}}:u");
        let w = format!("ferry:bitop:{{{tag}}}:w");
        assert_eq!(
            several(&["BITOP", "diff", "d", "x", "y", "z"], &valkey).unwrap(),
            [
                format!("BITOP OR {t} y z"),
                format!("BITOP AND {t} x {t}"),
                format!("BITOP XOR d x {t}"),
                format!("DEL {t}"),
            ]
        );
        assert_eq!(
            several(&["BITOP", "DIFF1", "d", "x", "y"], &valkey).unwrap(),
            [
                format!("BITOP OR {t} y"),
                format!("BITOP AND {u} {t} x"),
                format!("BITOP XOR d {t} {u}"),
                format!("DEL {t} {u}"),
            ]
        );
        assert_eq!(
            several(&["BITOP", "ANDOR", "d", "x", "y"], &valkey).unwrap(),
            [
                format!("BITOP OR {t} y"),
                format!("BITOP AND d x {t}"),
                format!("DEL {t}"),
            ]
        );
        assert_eq!(
            several(&["BITOP", "ONE", "d", "x", "y"], &valkey).unwrap(),
            [
                format!("DEL {u}"),
                format!("BITOP OR {t} x"),
                format!("BITOP AND {w} {t} y"),
                format!("BITOP OR {u} {u} {w}"),
                format!("BITOP XOR {t} {t} y"),
                format!("BITOP AND {w} {t} {u}"),
                format!("BITOP XOR d {t} {w}"),
                format!("DEL {t} {u} {w}"),
            ]
        );
        // A target that has the operations, the old operations, and malformed ones: as before.
        assert_eq!(
            several(&["BITOP", "DIFF", "d", "x", "y"], &redis82).unwrap(),
            ["BITOP DIFF d x y"]
        );
        assert_eq!(
            several(&["BITOP", "AND", "d", "x", "y"], &valkey).unwrap(),
            ["BITOP AND d x y"]
        );
        assert!(several(&["BITOP", "DIFF", "d", "x"], &valkey).is_err());
        // MSETEX: one SET per key, the condition dropped, the expiry kept.
        assert_eq!(
            several(
                &["MSETEX", "2", "a", "1", "b", "2", "NX", "PXAT", "99"],
                &redis82
            )
            .unwrap(),
            ["SET a 1 PXAT 99", "SET b 2 PXAT 99"]
        );
        assert_eq!(
            several(&["msetex", "1", "a", "1", "KEEPTTL", "XX"], &redis82).unwrap(),
            ["SET a 1 KEEPTTL"]
        );
        assert_eq!(
            several(&["MSETEX", "1", "a", "1"], &redis82).unwrap(),
            ["SET a 1"]
        );
        assert_eq!(
            several(&["MSETEX", "1", "a", "1", "PX", "5"], &valkey).unwrap(),
            ["MSETEX 1 a 1 PX 5"],
            "a target that knows it"
        );
        for bad in [
            &["MSETEX", "2", "a", "1"][..],
            &["MSETEX", "1", "a", "1", "PX"],
            &["MSETEX", "1", "a", "1", "EX", "1", "PX", "2"],
            &["MSETEX", "0"],
            &["MSETEX", "x", "a", "1"],
        ] {
            assert!(
                several(bad, &redis82).is_err(),
                "{bad:?} follows the policy"
            );
        }
        // XACKDEL and XDELEX: the script with its kind, policy and group, or XDEL for XDELEX under KEEPREF.
        let script = |rest: &str| format!("EVAL {STREAM_REF_EVAL} 1 {rest}");
        assert_eq!(
            several(&["XACKDEL", "st", "g", "IDS", "2", "1-1", "2"], &valkey).unwrap(),
            [script("st xackdel KEEPREF g 1-1 2")]
        );
        assert_eq!(
            several(&["xackdel", "st", "g", "acked", "IDS", "1", "1-1"], &valkey).unwrap(),
            [script("st xackdel ACKED g 1-1")]
        );
        assert_eq!(
            several(&["XDELEX", "st", "DELREF", "IDS", "1", "1-1"], &valkey).unwrap(),
            [script("st xdelex DELREF  1-1")]
        );
        assert_eq!(
            several(&["XDELEX", "st", "IDS", "1", "1-1"], &valkey).unwrap(),
            ["XDEL st 1-1"]
        );
        assert_eq!(
            several(
                &["XACKDEL", "st", "g", "DELREF", "IDS", "1", "1-1"],
                &redis82
            )
            .unwrap(),
            ["XACKDEL st g DELREF IDS 1 1-1"],
            "a target that knows it"
        );
        for bad in [
            &["XACKDEL", "st", "g", "IDS", "2", "1-1"][..],
            &["XACKDEL", "st", "g", "NOREF", "IDS", "1", "1-1"],
            &["XDELEX", "st", "DELREF", "IDS", "0"],
            &["XDELEX", "st", "DELREF", "1-1"],
        ] {
            assert!(several(bad, &valkey).is_err(), "{bad:?} follows the policy");
        }
        // Exact trims under DELREF: the XADD without its trim, then the trim as the script.
        assert_eq!(
            several(
                &[
                    "XADD",
                    "st",
                    "NOMKSTREAM",
                    "DELREF",
                    "MAXLEN",
                    "=",
                    "5",
                    "LIMIT",
                    "9",
                    "1-1",
                    "f",
                    "v"
                ],
                &valkey
            )
            .unwrap(),
            [
                "XADD st NOMKSTREAM 1-1 f v".to_string(),
                script("st trim DELREF MAXLEN 5")
            ]
        );
        assert_eq!(
            several(&["XTRIM", "st", "minid", "7-0", "DELREF"], &valkey).unwrap(),
            [script("st trim DELREF MINID 7-0")]
        );
        for lost in [
            &["XTRIM", "st", "MAXLEN", "~", "5", "DELREF"][..],
            &["XTRIM", "st", "MAXLEN", "5", "ACKED"],
            &["XADD", "st", "ACKED", "MAXLEN", "5", "*", "f", "v"],
        ] {
            assert!(
                several(lost, &valkey).is_err(),
                "{lost:?} follows the policy"
            );
        }
        assert_eq!(
            several(&["XADD", "st", "DELREF", "*", "f", "v"], &valkey).unwrap(),
            ["XADD st * f v"],
            "no trim: the policy changes nothing"
        );
        assert_eq!(
            several(&["XADD", "st", "MAXLEN", "5", "*", "f", "v"], &valkey).unwrap(),
            ["XADD st MAXLEN 5 * f v"]
        );
        // SPUBLISH: nothing for a target without shard channels (6.2), as it is for one with them.
        let redis62 = TargetFormat::from_info("redis_version:6.2.14");
        assert_eq!(
            several(&["SPUBLISH", "ch", "m"], &redis62).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            several(&["SPUBLISH", "ch", "m"], &valkey).unwrap(),
            ["SPUBLISH ch m"]
        );
        // A key the policy skipped before stays absent.
        let mut report = PolicyReport::default();
        report.skip(
            0,
            &Bytes::from_static(b"a"),
            Loss::UnknownCommand { name: "x".into() },
        );
        let cmd = argv(&["MSETEX", "2", "a", "1", "b", "2"]);
        let out =
            several_for_target(0, &cmd, &keys_without_table(&cmd), &redis82, &mut report).unwrap();
        assert_eq!(
            out.iter().map(|c| strs(c).join(" ")).collect::<Vec<_>>(),
            ["SET b 2"]
        );
        // Any other conversion of a command on a skipped key is left to the policy, which leaves it out.
        let trim = argv(&["XTRIM", "a", "MAXLEN", "1", "DELREF"]);
        let keys = keys_without_table(&trim);
        assert_eq!(
            several_for_target(0, &trim, &keys, &valkey, &mut report),
            None
        );
        let mut fresh = PolicyReport::default();
        assert!(several_for_target(0, &trim, &keys, &valkey, &mut fresh).is_some());
    }

    #[test]
    fn an_exact_trim_goes_without_the_limit_a_source_propagates_with_it() {
        let fixed = |cmd: &[&str]| {
            let mut a = argv(cmd);
            exact_trim_without_limit(&mut a);
            strs(&a).join(" ")
        };
        assert_eq!(
            fixed(&["XADD", "s", "MAXLEN", "=", "937", "LIMIT", "100", "1-1", "f", "v"]),
            "XADD s MAXLEN = 937 1-1 f v"
        );
        assert_eq!(
            fixed(&[
                "xadd",
                "s",
                "NOMKSTREAM",
                "KEEPREF",
                "MINID",
                "5-0",
                "limit",
                "10",
                "*",
                "f",
                "v"
            ]),
            "xadd s NOMKSTREAM KEEPREF MINID 5-0 * f v"
        );
        assert_eq!(
            fixed(&["XTRIM", "s", "MINID", "=", "5-0", "LIMIT", "10", "DELREF"]),
            "XTRIM s MINID = 5-0 DELREF"
        );
        // An approximate trim keeps its LIMIT; fields named like options are left alone.
        for same in [
            &[
                "XADD", "s", "MAXLEN", "~", "10", "LIMIT", "5", "*", "f", "v",
            ][..],
            &["XTRIM", "s", "MAXLEN", "~", "10", "LIMIT", "5"],
            &["XADD", "s", "*", "LIMIT", "1"],
            &["XADD", "s", "1-1", "maxlen", "limit"],
            &["SET", "k", "LIMIT"],
        ] {
            assert_eq!(fixed(same), same.join(" "));
        }
    }
}
