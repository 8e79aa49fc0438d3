//! RedisShake's configuration files, translated into a [`SyncConfig`] (not a second code path).

use std::path::PathBuf;

use toml::{Table, Value};

use super::schema::Checked;
use super::{Conflict, Endpoint, FilterConfig, MasterAuth, Source, SyncConfig, Target, TlsConfig};
use crate::error::Error;

/// Reads values of a RedisShake table with errors that name the key and its line.
struct Section<'a> {
    table: Option<&'a Table>,
    name: &'a str,
    checked: &'a Checked,
}

impl<'a> Section<'a> {
    fn new(root: &'a Table, name: &'a str, checked: &'a Checked) -> Section<'a> {
        Section {
            table: if name.is_empty() {
                Some(root)
            } else {
                root.get(name).and_then(Value::as_table)
            },
            name,
            checked,
        }
    }

    fn exists(&self) -> bool {
        self.table.is_some()
    }

    fn path(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    fn wrong(&self, key: &str, expected: &str) -> Error {
        let path = self.path(key);
        match self.checked.lines.get(&path) {
            Some(line) => Error::config(format!("line {line}: `{path}` must be {expected}")),
            None => Error::config(format!("`{path}` must be {expected}")),
        }
    }

    /// The line of `key` in the file (0 when it is not there).
    fn line(&self, key: &str) -> usize {
        self.checked
            .lines
            .get(&self.path(key))
            .copied()
            .unwrap_or(0)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.and_then(|t| t.get(key))
    }

    fn string(&self, key: &str) -> Result<String, Error> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(*i)),
            Some(_) => Err(self.wrong(key, "an integer")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, Error> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.wrong(key, "a list of strings"))
                })
                .collect(),
            Some(_) => Err(self.wrong(key, "a list of strings")),
        }
    }

    fn dbs(&self, key: &str) -> Result<Vec<u32>, Error> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_integer()
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| self.wrong(key, "a list of database numbers"))
                })
                .collect(),
            Some(_) => Err(self.wrong(key, "a list of database numbers")),
        }
    }

    /// `redis://` (or `rediss://`) URL of `address`, with `username` and `password`.
    fn endpoint(&self) -> Result<Endpoint, Error> {
        let address = self.string("address")?;
        if address.is_empty() {
            return Err(self.wrong("address", "a non-empty \"host:port\""));
        }
        self.endpoint_at(&address)
    }

    /// The endpoints of a v3 `[target]`: `address`, or the list `addresses` of RedisShake 3.0.0-beta (a cluster's
    /// masters, or the one standalone server).
    fn target_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        if self.get("addresses").is_none() {
            return Ok(vec![self.endpoint()?]);
        }
        if self.get("address").is_some() {
            return Err(self.wrong(
                "addresses",
                "absent when `address` is given (one or the other)",
            ));
        }
        let addresses = self.strings("addresses")?;
        if addresses.is_empty() || addresses.iter().any(|a| a.trim().is_empty()) {
            return Err(self.wrong("addresses", "a non-empty list of \"host:port\""));
        }
        addresses.iter().map(|a| self.endpoint_at(a)).collect()
    }

    /// [`Section::endpoint`] for `address`.
    fn endpoint_at(&self, address: &str) -> Result<Endpoint, Error> {
        let tls = self.boolean("tls", false)?;
        let scheme = if tls { "rediss" } else { "redis" };
        let mut e = Endpoint::new(format!("{scheme}://{address}"));
        let user = self.string("username")?;
        if !user.is_empty() {
            e = e.with_username(user);
        }
        let password = self.string("password")?;
        if !password.is_empty() {
            e = e.with_password(password);
        }
        if tls {
            // RedisShake dials TLS without checking the server's certificate (Go's `InsecureSkipVerify`), and its
            // files have no key for a CA: a file that works with RedisShake works here the same way.
            // [`Section::tls_note`] says so in `config check`.
            e = e.with_tls(TlsConfig::new().with_insecure_skip_verify(true));
        }
        Ok(e)
    }

    /// The note for `tls = true` in this section (see [`Section::endpoint_at`]).
    fn tls_note(&self, notes: &mut Vec<String>) -> Result<(), Error> {
        if self.exists() && self.boolean("tls", false)? {
            let (path, line) = (self.path("tls"), self.line("tls"));
            notes.push(format!(
                "`{path}` (line {line}): TLS without checking the server's certificate, as RedisShake connects; \
                 to check it, write the job in ferry's own config with `tls.ca_file` (docs/config.md)"
            ));
        }
        Ok(())
    }
}

/// `rdb_restore_command_behavior`; absent: `default` (RedisShake 3 rewrites, RedisShake 4 panics).
fn conflict(advanced: &Section<'_>, default: Conflict) -> Result<Conflict, Error> {
    match advanced.string("rdb_restore_command_behavior")?.as_str() {
        "" => Ok(default),
        "panic" => Ok(Conflict::Panic),
        "rewrite" => Ok(Conflict::Rewrite),
        "skip" | "ignore" => Ok(Conflict::Skip),
        _ => Err(advanced.wrong("rdb_restore_command_behavior", "panic, rewrite or skip")),
    }
}

/// The shared `[advanced]` keys.
fn advanced(
    config: &mut SyncConfig,
    adv: &Section<'_>,
    default_conflict: Conflict,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    config.conflict = conflict(adv, default_conflict)?;
    let file_in_dir = match &config.source {
        Source::RdbFile { path } | Source::AofFile { path, .. } => path.is_relative(),
        _ => false,
    };
    if adv.get("dir").is_some() && !file_in_dir {
        let line = adv.line("dir");
        notes.push(format!(
            "`advanced.dir` (line {line}) is accepted and not used: ferry keeps no local state (checkpoints \
             live in the target)"
        ));
    }
    if let Some(n) = adv.int("pipeline_count_limit")? {
        config.limits.window_commands = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| adv.wrong("pipeline_count_limit", "a positive integer"))?;
    }
    if let Some(n) = adv.int("target_redis_proto_max_bulk_len")? {
        // A value bigger than the target's bulk limit cannot go as one RESTORE: copy it by elements.
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| adv.wrong("target_redis_proto_max_bulk_len", "a positive integer"))?;
        config.limits.max_restore_bytes = config.limits.max_restore_bytes.min(n);
    }
    for (key, field) in [("metrics_port", 0), ("status_port", 1)] {
        if let Some(port) = adv.int(key)? {
            if port != 0 {
                let port = u16::try_from(port).map_err(|_| adv.wrong(key, "a port number"))?;
                let addr = Some(format!("0.0.0.0:{port}"));
                if field == 0 {
                    config.run.metrics_addr = addr;
                } else {
                    config.run.status_addr = addr;
                }
                notes.push(format!(
                    "`advanced.{key}` = {port}: served at http://0.0.0.0:{port}/"
                ));
            }
        }
    }
    Ok(())
}

/// The file a RedisShake reader names (`rdb_file_path`, `filepath`). RedisShake changes into `advanced.dir`
/// (default `data`, itself relative to where it was started) before it opens the file, so a relative path means
/// a file in that directory: taken from there when it is there, else relative to where ferry runs (the directory
/// RedisShake would not have read, but the one a user most likely meant), with a note either way.
fn shake_file(
    adv: &Section<'_>,
    key: &str,
    path: &str,
    notes: &mut Vec<String>,
) -> Result<PathBuf, Error> {
    let given = PathBuf::from(path);
    if path.is_empty() || given.is_absolute() {
        return Ok(given);
    }
    let dir = adv.string("dir")?;
    let dir = if dir.is_empty() {
        "data".to_string()
    } else {
        dir
    };
    let in_dir = PathBuf::from(&dir).join(&given);
    if in_dir.is_file() {
        notes.push(format!(
            "`{key}` = {path:?} is read from the RedisShake directory `advanced.dir` ({}), as RedisShake reads it",
            in_dir.display()
        ));
        Ok(in_dir)
    } else {
        notes.push(format!(
            "`{key}` = {path:?}: RedisShake would read {} (relative to `advanced.dir` = {dir:?}), which is not \
             there; ferry reads it relative to its working directory",
            in_dir.display()
        ));
        Ok(given)
    }
}

/// A v3 `sync.toml` (`type = "sync"`), `restore.toml` (`"restore"`) or `scan.toml` (`"scan"`).
pub(crate) fn from_v3(
    root: &Table,
    checked: &Checked,
    notes: &mut Vec<String>,
) -> Result<SyncConfig, Error> {
    let top = Section::new(root, "", checked);
    let src = Section::new(root, "source", checked);
    let tgt = Section::new(root, "target", checked);
    let adv = Section::new(root, "advanced", checked);
    // RedisShake 3.1 and later name the mode at the top (`type = "restore"`); 3.0.x named it in [source].
    let (top_mode, src_mode) = (top.string("type")?, src.string("type")?);
    let (section, mode) = match (top_mode.as_str(), src_mode.as_str()) {
        (t, "") => (&top, t.to_string()),
        ("", s) => (&src, s.to_string()),
        (t, s) if t == s => (&top, t.to_string()),
        _ => {
            return Err(src.wrong(
                "type",
                &format!("the same mode as the top-level `type` ({top_mode:?}), or absent"),
            ))
        }
    };
    let mode = match mode.as_str() {
        "" | "sync" => "sync",
        "restore" => "restore",
        "scan" => "scan",
        _ => return Err(section.wrong("type", "\"sync\", \"restore\" or \"scan\"")),
    };
    if !src.exists() || !tgt.exists() {
        return Err(Error::config(
            "a RedisShake v3 file needs [source] and [target]",
        ));
    }
    let elasticache = src.string("elasticache_psync")?;
    if !elasticache.is_empty() {
        return Err(Error::not_supported(
            "`source.elasticache_psync` (ElastiCache's renamed PSYNC)",
        ));
    }
    let source = match mode {
        "restore" => Source::RdbFile {
            path: shake_file(
                &adv,
                "source.rdb_file_path",
                &src.string("rdb_file_path")?,
                notes,
            )?,
        },
        "scan" => Source::Scan {
            endpoint: src.endpoint()?,
            dbs: Some(src.dbs("dbs")?).filter(|d| !d.is_empty()),
            notifications: false,
            cluster: false,
        },
        _ => Source::Standalone(src.endpoint()?),
    };
    let mut endpoints = tgt.target_endpoints()?;
    let target = match tgt.string("type")?.as_str() {
        "" | "standalone" if endpoints.len() == 1 => Target::Standalone(endpoints.remove(0)),
        "" | "standalone" => {
            return Err(tgt.wrong(
                "addresses",
                "one address for a standalone target (`type = \"cluster\"` takes several)",
            ))
        }
        "cluster" => Target::Cluster { seeds: endpoints },
        _ => return Err(tgt.wrong("type", "\"standalone\" or \"cluster\"")),
    };
    let mut config = SyncConfig::new(source, target);
    if mode != "restore" {
        per_source_tag(&mut config, &src, notes)?;
    }
    advanced(&mut config, &adv, Conflict::Rewrite, notes)?;
    if mode != "restore" {
        src.tls_note(notes)?;
    }
    tgt.tls_note(notes)?;
    Ok(config)
}

/// A v4 `shake.toml`.
pub(crate) fn from_v4(
    root: &Table,
    checked: &Checked,
    notes: &mut Vec<String>,
) -> Result<SyncConfig, Error> {
    let top = Section::new(root, "", checked);
    let sync = Section::new(root, "sync_reader", checked);
    let scan = Section::new(root, "scan_reader", checked);
    let rdb = Section::new(root, "rdb_reader", checked);
    let aof = Section::new(root, "aof_reader", checked);
    let writer = Section::new(root, "redis_writer", checked);
    let filter = Section::new(root, "filter", checked);
    let adv = Section::new(root, "advanced", checked);
    let readers = [sync.exists(), scan.exists(), rdb.exists(), aof.exists()]
        .iter()
        .filter(|&&b| b)
        .count();
    if readers != 1 {
        return Err(Error::config(
            "a RedisShake v4 file needs exactly one of [sync_reader], [scan_reader], [rdb_reader], [aof_reader]",
        ));
    }
    let source = if sync.exists() {
        if !sync.boolean("sync_rdb", true)? {
            return Err(Error::not_supported("`sync_reader.sync_rdb = false` (ferry always starts with the full copy or a checkpoint)"));
        }
        let endpoint = sync.endpoint()?;
        let prefer_replica = sync.boolean("prefer_replica", false)?;
        if sync.boolean("cluster", false)? {
            Source::Cluster {
                seeds: vec![endpoint],
                shards: None,
                prefer_replica,
            }
        } else {
            if prefer_replica {
                notes.push("`sync_reader.prefer_replica` applies to a cluster source only".into());
            }
            Source::Standalone(endpoint)
        }
    } else if scan.exists() {
        if !scan.boolean("scan", true)? {
            return Err(Error::not_supported(
                "`scan_reader.scan = false` (ferry's scan source always copies the keys before it follows changes)",
            ));
        }
        if scan.boolean("prefer_replica", false)? {
            notes.push(
                "`scan_reader.prefer_replica` is accepted and not used: ferry scans and follows the master \
                 (of each shard)"
                    .into(),
            );
        }
        Source::Scan {
            endpoint: scan.endpoint()?,
            dbs: Some(scan.dbs("dbs")?).filter(|d| !d.is_empty()),
            notifications: scan.boolean("ksn", false)?,
            cluster: scan.boolean("cluster", false)?,
        }
    } else if aof.exists() {
        let path = aof.string("filepath")?;
        if path.is_empty() {
            return Err(aof.wrong("filepath", "the path of an AOF file or manifest"));
        }
        Source::AofFile {
            path: shake_file(&adv, "aof_reader.filepath", &path, notes)?,
            // RedisShake: 0 (the default) replays everything.
            timestamp: aof.int("timestamp")?.filter(|&t| t != 0),
        }
    } else {
        Source::RdbFile {
            path: shake_file(&adv, "rdb_reader.filepath", &rdb.string("filepath")?, notes)?,
        }
    };
    if !writer.exists() {
        return Err(Error::config("a RedisShake v4 file needs [redis_writer]"));
    }
    let target = if writer.boolean("sentinel", false)? {
        // RedisShake asks the sentinel at `address` for the master and then connects to the master with the same
        // `username`, `password` and `tls`: both get them here too.
        let sentinel = writer.endpoint()?;
        let master = writer.string("master")?;
        if master.is_empty() {
            return Err(writer.wrong(
                "master",
                "the name the sentinels monitor (`sentinel = true`)",
            ));
        }
        let master_auth = MasterAuth {
            username: sentinel.username.clone(),
            password: sentinel.password.clone(),
            password_env: None,
            tls: sentinel.tls.clone(),
        };
        Target::Sentinel {
            sentinels: vec![sentinel],
            master,
            master_auth,
        }
    } else if writer.boolean("cluster", false)? {
        Target::Cluster {
            seeds: vec![writer.endpoint()?],
        }
    } else {
        Target::Standalone(writer.endpoint()?)
    };
    let mut config = SyncConfig::new(source, target);
    if sync.exists() && !sync.boolean("sync_aof", true)? {
        // RedisShake copies the RDB and ends without following the stream: a one-time copy.
        config.until_caught_up = true;
        notes.push(format!(
            "`sync_reader.sync_aof = false` (line {}): a one-time copy (`until_caught_up`): the job copies, applies \
             what the source wrote during the copy, and ends",
            sync.line("sync_aof")
        ));
    }
    for reader in [&sync, &scan] {
        if reader.exists() && !reader.boolean("cluster", false)? {
            per_source_tag(&mut config, reader, notes)?;
        }
    }
    config.filter = FilterConfig {
        allow_dbs: filter.dbs("allow_db")?,
        block_dbs: filter.dbs("block_db")?,
        allow_keys: filter.strings("allow_keys")?,
        block_keys: filter.strings("block_keys")?,
        allow_key_prefixes: filter.strings("allow_key_prefix")?,
        block_key_prefixes: filter.strings("block_key_prefix")?,
        allow_key_suffixes: filter.strings("allow_key_suffix")?,
        block_key_suffixes: filter.strings("block_key_suffix")?,
        allow_key_regexes: filter.strings("allow_key_regex")?,
        block_key_regexes: filter.strings("block_key_regex")?,
        allow_commands: filter.strings("allow_command")?,
        block_commands: filter.strings("block_command")?,
    };
    union_of_allow_rules(&mut config.filter, &filter, notes);
    // Command groups become the command lists they stand for: a command passes when it is in an allowed group
    // (and in `allow_command` if that is given too), and not in a blocked group.
    let allowed_groups = command_group_commands(&filter, "allow_command_group")?;
    if !allowed_groups.is_empty() {
        let f = &mut config.filter;
        f.allow_commands = if f.allow_commands.is_empty() {
            allowed_groups
        } else {
            f.allow_commands
                .iter()
                .filter(|c| allowed_groups.iter().any(|g| g.eq_ignore_ascii_case(c)))
                .cloned()
                .collect()
        };
        if f.allow_commands.is_empty() {
            // Nothing would pass both lists: no live write at all would reach the target.
            return Err(filter.wrong(
                "allow_command_group",
                "a list of groups holding at least one command of `allow_command` (no live command passes both)",
            ));
        }
    }
    for c in command_group_commands(&filter, "block_command_group")? {
        if !config
            .filter
            .block_commands
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&c))
        {
            config.filter.block_commands.push(c);
        }
    }
    if !filter.string("function")?.is_empty() || !top.string("function")?.is_empty() {
        return Err(Error::not_supported("Lua `function` filters"));
    }
    // `ip:port@command,ip:port@command`: the name of PSYNC on each source node (RedisShake takes the first
    // item whose address matches).
    for item in adv
        .string("aws_psync")?
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        match item.split_once('@') {
            Some((node, command)) if !node.is_empty() && !command.is_empty() => {
                config
                    .psync_commands
                    .entry(node.to_string())
                    .or_insert_with(|| command.to_string());
            }
            _ => {
                return Err(adv.wrong(
                    "aws_psync",
                    "a list of `ip:port@command` separated by commas",
                ))
            }
        }
    }
    if adv.boolean("empty_db_before_sync", false)? {
        // RedisShake sends `FLUSHALL` to the target when it starts, and copies everything again at every start.
        // ferry resumes from its checkpoint without a copy, so it empties the target before each full copy.
        if matches!(config.source, Source::Cluster { .. }) {
            return Err(adv.wrong(
                "empty_db_before_sync",
                "false with a cluster reader (ferry copies its shards at different times in one job; empty \
                 the target before starting ferry)",
            ));
        }
        config.flush_target_before_copy = true;
        notes.push(format!(
            "`advanced.empty_db_before_sync` (line {}): the target is emptied (`FLUSHALL`) before each full copy, \
             not when the job resumes from its checkpoint, and never while it holds another job's checkpoint",
            adv.line("empty_db_before_sync")
        ));
    }
    advanced(&mut config, &adv, Conflict::Panic, notes)?;
    for section in [&sync, &scan, &writer] {
        section.tls_note(notes)?;
    }
    Ok(config)
}

/// RedisShake follows one server per process, and a cluster source is synced by one process per master into
/// the same target (its walk-throughs run three). ferry's checkpoints live in the target under the job's tag, so
/// such jobs need distinct tags: a file that reads one server gets the tag `shake:<address>` (a cluster reader
/// of v4 is one job for all shards and keeps the default). `--checkpoint-tag` still chooses another.
fn per_source_tag(
    config: &mut SyncConfig,
    reader: &Section<'_>,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let address = reader.string("address")?;
    if address.is_empty() {
        return Ok(());
    }
    config.checkpoint.tag = format!("shake:{address}");
    notes.push(format!(
        "checkpoint tag {:?} (from `{}`): one job per source server can share a target, as RedisShake \
         processes do; `--checkpoint-tag` chooses another",
        config.checkpoint.tag,
        reader.path("address")
    ));
    Ok(())
}

/// RedisShake lets a key through when it matches any one allow rule (a prefix or a suffix); ferry's own filter
/// asks for one match of each kind that is given. When a file gives more than one kind, they all become
/// regular expressions (one kind, so any match lets the key through), as RedisShake reads the file.
fn union_of_allow_rules(f: &mut FilterConfig, filter: &Section<'_>, notes: &mut Vec<String>) {
    let kinds = [
        (!f.allow_keys.is_empty(), "allow_keys"),
        (!f.allow_key_prefixes.is_empty(), "allow_key_prefix"),
        (!f.allow_key_suffixes.is_empty(), "allow_key_suffix"),
        (!f.allow_key_regexes.is_empty(), "allow_key_regex"),
    ];
    let given: Vec<&str> = kinds
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, k)| *k)
        .collect();
    if given.len() < 2 {
        return;
    }
    let mut regexes: Vec<String> = std::mem::take(&mut f.allow_keys)
        .iter()
        .map(|k| format!("^{}$", regex::escape(k)))
        .collect();
    regexes.extend(
        std::mem::take(&mut f.allow_key_prefixes)
            .iter()
            .map(|p| format!("^{}", regex::escape(p))),
    );
    regexes.extend(
        std::mem::take(&mut f.allow_key_suffixes)
            .iter()
            .map(|s| format!("{}$", regex::escape(s))),
    );
    regexes.append(&mut f.allow_key_regexes);
    f.allow_key_regexes = regexes;
    let names: Vec<String> = given
        .iter()
        .map(|k| format!("`{}`", filter.path(k)))
        .collect();
    notes.push(format!(
        "{}: a key passes when it matches any one of them, as in RedisShake (written as `allow_key_regexes`)",
        names.join(", ")
    ));
}

/// The commands of the groups listed under `key` (`allow_command_group` or `block_command_group`); an unknown
/// group is an error naming it, its line and the nearest group.
fn command_group_commands(filter: &Section<'_>, key: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for group in filter.strings(key)? {
        let Some(commands) = super::command_groups::commands(&group) else {
            let nearest = super::command_groups::names()
                .min_by_key(|n| strsim::damerau_levenshtein(&group.to_ascii_uppercase(), n))
                .unwrap_or_default();
            return Err(filter.wrong(
                key,
                &format!("a list of RedisShake command groups: {group:?} is none (did you mean {nearest:?}?)"),
            ));
        };
        out.extend(commands.iter().map(|c| c.to_string()));
    }
    Ok(out)
}
