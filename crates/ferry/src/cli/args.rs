//! The command line: every option is a field of [`ferry::SyncConfig`], [`ferry::VerifyOptions`] or
//! [`ferry::rdb::RestoreOptions`]; flags given with a file override the file's values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry::{
    CheckpointConfig, Compare, Conflict, Endpoint, Error, FilterConfig, OnError, Source,
    SyncConfig, Target, TargetPolicy, TlsConfig, VerifyOptions,
};

/// Copies a Redis dataset between deployments and keeps it in sync.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as text or as JSON objects (one a line, on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy the source into the target, then follow its changes (until stopped, or until caught up).
    Sync(Box<SyncArgs>),
    /// Compare two deployments key by key (exit 0 when equal, 1 when they differ).
    Verify(Box<VerifyArgs>),
    /// RDB files: print as JSON Lines, summarize, restore into a target.
    #[command(subcommand)]
    Rdb(RdbCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Disaster recovery: a pair of deployments (init, status, failover, recover, switchback, run) and the
    /// guarded switch of a master/replica pair (promote, demote, watch). See docs/dr.md.
    #[command(subcommand)]
    Dr(super::dr::DrCommand),
}

/// Kinds of source on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceType {
    /// One server.
    Standalone,
    /// A Redis Cluster (any node as --source).
    Cluster,
    /// A sentinel-managed group (--source is a sentinel, --source-master the name).
    Sentinel,
    /// SCAN + DUMP (servers that refuse PSYNC); with --scan-notifications, then keyspace notifications.
    Scan,
    /// An RDB file (--source-path FILE): restored into the target, then ferry exits.
    Rdb,
    /// An append-only file (--source-path: a single AOF, a manifest or its directory; --aof-timestamp to stop at
    /// a time): replayed into the target, then ferry exits.
    Aof,
}

/// Kinds of target on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetType {
    /// One server.
    Standalone,
    /// A Redis Cluster (any node as --target).
    Cluster,
    /// A sentinel-managed group (--target is a sentinel, --target-master the name).
    Sentinel,
}

/// Source and target endpoints, with credentials and TLS.
#[derive(Debug, Args, Default)]
pub struct Endpoints {
    /// The source URL, `redis://[user[:password]@]host[:port][/db]` (`rediss://` for TLS); a `/db` copies (and
    /// compares) that database only.
    #[arg(long)]
    pub source: Option<String>,
    /// What the source is.
    #[arg(long, value_enum)]
    pub source_type: Option<SourceType>,
    /// The master name, for a sentinel source.
    #[arg(long)]
    pub source_master: Option<String>,
    /// A cluster source: only these shards (shard names, node ids or `host:port` of any of their nodes;
    /// comma-separated or repeated).
    #[arg(long = "shards", value_delimiter = ',')]
    pub shards: Vec<String>,
    /// A cluster source: stream each shard from one of its replicas.
    #[arg(long)]
    pub prefer_replica: bool,
    /// The file of a source of type rdb or aof (an AOF: a single file, a manifest or its directory).
    #[arg(long)]
    pub source_path: Option<PathBuf>,
    /// A source of type aof: stop at the first `#TS:` annotation later than this (Unix seconds).
    #[arg(long)]
    pub aof_timestamp: Option<i64>,
    /// A scan source follows changes by keyspace notifications after the scan (until stopped).
    #[arg(long)]
    pub scan_notifications: bool,
    /// A scan source is a Redis Cluster (--source any node of it): every master is scanned and followed.
    #[arg(long)]
    pub scan_cluster: bool,
    /// A scan source reads only these databases (repeat the flag; default: every database holding keys).
    #[arg(long = "scan-db")]
    pub scan_dbs: Vec<u32>,
    /// ACL user of the source.
    #[arg(long)]
    pub source_user: Option<String>,
    /// Environment variable holding the source's password.
    #[arg(long)]
    pub source_password_env: Option<String>,
    /// CA file for a TLS source.
    #[arg(long)]
    pub source_tls_ca_file: Option<PathBuf>,
    /// A sentinel source: ACL user of its master (and of the replica promoted in its place); `--source-user`
    /// and the URL's credentials are the sentinels'.
    #[arg(long)]
    pub source_master_user: Option<String>,
    /// A sentinel source: environment variable holding its master's password.
    #[arg(long)]
    pub source_master_password_env: Option<String>,
    /// The target URL; a `/db` receives the database the source URL names (or the one `--db-map` sends there).
    #[arg(long)]
    pub target: Option<String>,
    /// What the target is.
    #[arg(long, value_enum)]
    pub target_type: Option<TargetType>,
    /// The master name, for a sentinel target.
    #[arg(long)]
    pub target_master: Option<String>,
    /// ACL user of the target.
    #[arg(long)]
    pub target_user: Option<String>,
    /// Environment variable holding the target's password.
    #[arg(long)]
    pub target_password_env: Option<String>,
    /// CA file for a TLS target.
    #[arg(long)]
    pub target_tls_ca_file: Option<PathBuf>,
    /// A sentinel target: ACL user of its master (and of the replica promoted in its place); `--target-user`
    /// and the URL's credentials are the sentinels'.
    #[arg(long)]
    pub target_master_user: Option<String>,
    /// A sentinel target: environment variable holding its master's password.
    #[arg(long)]
    pub target_master_password_env: Option<String>,
}

/// The `master_auth` of a sentinel group from the flags: the master's user and password, and TLS when the
/// sentinels are reached with TLS (a group serves TLS on its sentinels and its data nodes alike).
fn master_auth(
    sentinel: &Endpoint,
    user: &Option<String>,
    env: &Option<String>,
) -> serde_json::Value {
    let mut auth = serde_json::json!({});
    if let Some(u) = user {
        auth["username"] = u.clone().into();
    }
    if let Some(v) = env {
        auth["password_env"] = v.clone().into();
    }
    if sentinel.tls.is_some() || sentinel.url.starts_with("rediss://") {
        auth["tls"] = serde_json::to_value(sentinel.tls.clone().unwrap_or_default())
            .unwrap_or_else(|_| serde_json::json!({}));
    }
    auth
}

fn endpoint(
    url: &str,
    user: &Option<String>,
    env: &Option<String>,
    ca: &Option<PathBuf>,
) -> Endpoint {
    let mut e = Endpoint::new(url);
    if let Some(u) = user {
        e = e.with_username(u.clone());
    }
    if let Some(v) = env {
        e = e.with_password_env(v.clone());
    }
    if let Some(ca) = ca {
        e = e.with_tls(TlsConfig::new().with_ca_file(ca.clone()));
    }
    e
}

impl Endpoints {
    /// The source from the flags, if `--source` was given.
    pub fn source(&self) -> Result<Option<Source>, Error> {
        let file_type = matches!(self.source_type, Some(SourceType::Rdb | SourceType::Aof));
        if self.aof_timestamp.is_some() && self.source_type != Some(SourceType::Aof) {
            return Err(Error::config("--aof-timestamp needs --source-type aof"));
        }
        if file_type || self.source_path.is_some() {
            if (self.source_type.is_some() && !file_type) || self.source.is_some() {
                return Err(Error::config(
                    "--source-path is the file of --source-type rdb or aof (without --source)",
                ));
            }
            let path = self.source_path.clone().ok_or_else(|| {
                Error::config("--source-type rdb and aof need --source-path FILE")
            })?;
            if self.source_type == Some(SourceType::Aof) {
                return Ok(Some(Source::AofFile {
                    path,
                    timestamp: self.aof_timestamp,
                }));
            }
            return Ok(Some(Source::rdb_file(path)));
        }
        let Some(url) = &self.source else {
            if self.source_type.is_some()
                || self.source_master.is_some()
                || !self.shards.is_empty()
                || self.prefer_replica
            {
                return Err(Error::config(
                    "--source-type, --source-master, --shards and --prefer-replica need --source",
                ));
            }
            return Ok(None);
        };
        if self.source_type != Some(SourceType::Sentinel)
            && (self.source_master_user.is_some() || self.source_master_password_env.is_some())
        {
            return Err(Error::config(
                "--source-master-user and --source-master-password-env apply to a sentinel source \
                 (--source-type sentinel); another source takes --source-user and --source-password-env",
            ));
        }
        let e = endpoint(
            url,
            &self.source_user,
            &self.source_password_env,
            &self.source_tls_ca_file,
        );
        Ok(Some(
            match self.source_type.unwrap_or(SourceType::Standalone) {
                SourceType::Standalone => Source::Standalone(e),
                SourceType::Cluster => {
                    let shards = (!self.shards.is_empty()).then(|| self.shards.clone());
                    Source::from_json(serde_json::json!({
                        "type": "cluster",
                        "seeds": [e],
                        "shards": shards,
                        "prefer_replica": self.prefer_replica,
                    }))?
                }
                _ if !self.shards.is_empty() || self.prefer_replica => {
                    return Err(Error::config(
                        "--shards and --prefer-replica apply to a cluster source (--source-type cluster)",
                    ))
                }
                SourceType::Scan => {
                    let mut scan = serde_json::json!({
                        "type": "scan",
                        "endpoint": e,
                        "notifications": self.scan_notifications,
                        "cluster": self.scan_cluster,
                    });
                    if !self.scan_dbs.is_empty() {
                        scan["dbs"] = serde_json::json!(self.scan_dbs);
                    }
                    Source::from_json(scan)?
                }
                SourceType::Rdb | SourceType::Aof => {
                    return Err(Error::config(
                        "--source-type rdb takes --source-path FILE, not --source",
                    ))
                }
                SourceType::Sentinel => {
                    let master = self
                        .source_master
                        .clone()
                        .ok_or_else(|| Error::config("a sentinel source needs --source-master"))?;
                    let auth = master_auth(
                        &e,
                        &self.source_master_user,
                        &self.source_master_password_env,
                    );
                    Source::from_json(serde_json::json!({
                        "type": "sentinel", "sentinels": [e], "master": master, "master_auth": auth,
                    }))?
                }
            },
        ))
    }

    /// The target from the flags, if `--target` was given.
    pub fn target(&self) -> Result<Option<Target>, Error> {
        let Some(url) = &self.target else {
            if self.target_type.is_some() || self.target_master.is_some() {
                return Err(Error::config(
                    "--target-type and --target-master need --target",
                ));
            }
            return Ok(None);
        };
        if self.target_type != Some(TargetType::Sentinel)
            && (self.target_master_user.is_some() || self.target_master_password_env.is_some())
        {
            return Err(Error::config(
                "--target-master-user and --target-master-password-env apply to a sentinel target \
                 (--target-type sentinel); another target takes --target-user and --target-password-env",
            ));
        }
        let e = endpoint(
            url,
            &self.target_user,
            &self.target_password_env,
            &self.target_tls_ca_file,
        );
        Ok(Some(
            match self.target_type.unwrap_or(TargetType::Standalone) {
                TargetType::Standalone => Target::Standalone(e),
                TargetType::Cluster => Target::Cluster { seeds: vec![e] },
                TargetType::Sentinel => {
                    let master = self
                        .target_master
                        .clone()
                        .ok_or_else(|| Error::config("a sentinel target needs --target-master"))?;
                    let auth = master_auth(
                        &e,
                        &self.target_master_user,
                        &self.target_master_password_env,
                    );
                    Target::from_json(serde_json::json!({
                        "type": "sentinel", "sentinels": [e], "master": master, "master_auth": auth,
                    }))?
                }
            },
        ))
    }
}

/// Builds source/target variants with serde (their fields are `#[non_exhaustive]`-friendly that way).
trait FromJson: Sized {
    fn from_json(v: serde_json::Value) -> Result<Self, Error>;
}

impl<T: serde::de::DeserializeOwned> FromJson for T {
    fn from_json(v: serde_json::Value) -> Result<T, Error> {
        serde_json::from_value(v).map_err(|e| Error::config(e.to_string()))
    }
}

/// `ferry sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// A configuration file: ferry's TOML (docs/config.md), RedisShake v3 sync.toml or v4 shake.toml.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// The configuration file given without `-c`, as `redis-shake shake.toml` takes it.
    #[arg(value_name = "CONFIG", conflicts_with = "config")]
    pub config_file: Option<PathBuf>,
    /// Source and target.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Keys of the full copy that already exist on the target: panic, rewrite or skip.
    #[arg(long)]
    pub conflict: Option<Conflict>,
    /// Keys and commands the target cannot hold: stop (default), skip or convert.
    #[arg(long)]
    pub target_policy: Option<TargetPolicy>,
    /// Error replies of the target in the live stream: stop or log.
    #[arg(long, value_parser = parse_on_error)]
    pub on_error: Option<OnError>,
    /// Databases and keys copied, and where.
    #[command(flatten)]
    pub selection: Selection,
    /// Do not forward this command of the live stream (repeatable, e.g. FLUSHALL).
    #[arg(long = "block-command")]
    pub block_commands: Vec<String>,
    /// Do not store checkpoints in the target (a standalone target; a restart then copies everything again).
    #[arg(long)]
    pub no_checkpoint: bool,
    /// The checkpoint tag (jobs sharing a target need distinct tags).
    #[arg(long)]
    pub checkpoint_tag: Option<String>,
    /// The database of the checkpoint key on a standalone target.
    #[arg(long)]
    pub checkpoint_db: Option<u32>,
    /// When a full copy must be redone over this job's own earlier data, empty the target first (without it, a
    /// redo deletes the keys the source no longer has only on a target the job owns).
    #[arg(long)]
    pub flush_target_on_resync: bool,
    /// Empty the target (FLUSHALL) before every full copy, the first included (not when resuming from a
    /// checkpoint; never over another job's checkpoint; not with a cluster source).
    #[arg(long)]
    pub flush_target_before_copy: bool,
    /// The name PSYNC goes by on a source node that renamed it (`HOST:PORT=COMMAND`, repeatable; AWS
    /// ElastiCache's renamed PSYNC, RedisShake's `aws_psync`)
    #[arg(long = "psync-command", value_parser = parse_psync_command)]
    pub psync_commands: Vec<(String, String)>,
    /// Exit 0 once the target has caught up with the source after the full copy.
    #[arg(long)]
    pub until_caught_up: bool,
    /// With --until-caught-up: compare source and target then, and exit 1 when they differ.
    #[arg(long)]
    pub verify: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Serve the status as JSON at http://ADDR/status.
    #[arg(long)]
    pub status_addr: Option<String>,
    /// No progress bar even on a terminal (plain status lines instead).
    #[arg(long)]
    pub no_progress: bool,
    /// Seconds between status lines when not on a terminal.
    #[arg(long, default_value_t = 5)]
    pub status_interval: u64,
}

/// The databases and keys a job copies (and a verify compares), and the database map: the flags shared by
/// `sync` and `verify`.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// Only this source database (repeatable).
    #[arg(long = "allow-db")]
    pub allow_dbs: Vec<u32>,
    /// Not this source database (repeatable).
    #[arg(long = "block-db")]
    pub block_dbs: Vec<u32>,
    /// Only keys with this prefix (repeatable).
    #[arg(long = "allow-key-prefix")]
    pub allow_key_prefixes: Vec<String>,
    /// Not keys with this prefix (repeatable).
    #[arg(long = "block-key-prefix")]
    pub block_key_prefixes: Vec<String>,
    /// Only keys matching this regular expression (repeatable).
    #[arg(long = "allow-key-regex")]
    pub allow_key_regexes: Vec<String>,
    /// Not keys matching this regular expression (repeatable).
    #[arg(long = "block-key-regex")]
    pub block_key_regexes: Vec<String>,
    /// Source database FROM goes to target database TO (`FROM:TO`, repeatable).
    #[arg(long = "db-map", value_parser = parse_db_map)]
    pub db_map: Vec<(u32, u32)>,
}

impl Selection {
    /// Adds the flags to a filter and a database map (a file's, or empty ones).
    pub fn apply(&self, f: &mut FilterConfig, db_map: &mut BTreeMap<String, u32>) {
        f.allow_dbs.extend(&self.allow_dbs);
        f.block_dbs.extend(&self.block_dbs);
        f.allow_key_prefixes
            .extend(self.allow_key_prefixes.iter().cloned());
        f.block_key_prefixes
            .extend(self.block_key_prefixes.iter().cloned());
        f.allow_key_regexes
            .extend(self.allow_key_regexes.iter().cloned());
        f.block_key_regexes
            .extend(self.block_key_regexes.iter().cloned());
        for (from, to) in &self.db_map {
            db_map.insert(from.to_string(), *to);
        }
    }
}

fn parse_on_error(s: &str) -> Result<OnError, String> {
    match s {
        "stop" => Ok(OnError::Stop),
        "log" => Ok(OnError::Log),
        _ => Err("expected stop or log".into()),
    }
}

fn parse_psync_command(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once('=') {
        Some((node, command)) if !node.is_empty() && !command.is_empty() => {
            Ok((node.to_string(), command.to_string()))
        }
        _ => Err(format!("{s:?}: expected HOST:PORT=COMMAND")),
    }
}

fn parse_db_map(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once(':').ok_or("expected FROM:TO, e.g. 1:0")?;
    Ok((
        a.trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a database number"))?,
        b.trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a database number"))?,
    ))
}

impl SyncArgs {
    /// The configuration: the file's (if any) with the flags applied over it.
    pub fn resolve(&self) -> Result<(SyncConfig, Vec<String>), Error> {
        let (mut config, notes) = match self.config.as_ref().or(self.config_file.as_ref()) {
            Some(path) => {
                let loaded = SyncConfig::load_path(path)?;
                let mut config = loaded.config;
                if let Some(s) = self.endpoints.source()? {
                    config.source = s;
                }
                if let Some(t) = self.endpoints.target()? {
                    config.target = t;
                }
                (config, loaded.notes)
            }
            None => {
                let source = self
                    .endpoints
                    .source()?
                    .ok_or_else(|| Error::config("give --source and --target, or -c FILE"))?;
                let target = self
                    .endpoints
                    .target()?
                    .ok_or_else(|| Error::config("give --target (and --source), or -c FILE"))?;
                (SyncConfig::new(source, target), Vec::new())
            }
        };
        if let Some(c) = self.conflict {
            config.conflict = c;
        }
        if let Some(p) = self.target_policy {
            config.target_policy = p;
        }
        if let Some(o) = self.on_error {
            config.on_error = o;
        }
        self.selection.apply(&mut config.filter, &mut config.db_map);
        config
            .filter
            .block_commands
            .extend(self.block_commands.iter().cloned());
        let mut cp: CheckpointConfig = config.checkpoint.clone();
        if self.no_checkpoint {
            cp.enabled = false;
        }
        if let Some(t) = &self.checkpoint_tag {
            cp.tag = t.clone();
        }
        if let Some(d) = self.checkpoint_db {
            cp.db = d;
        }
        config.checkpoint = cp;
        config.flush_target_on_resync |= self.flush_target_on_resync;
        config.flush_target_before_copy |= self.flush_target_before_copy;
        for (node, command) in &self.psync_commands {
            config.psync_commands.insert(node.clone(), command.clone());
        }
        config.until_caught_up |= self.until_caught_up;
        config.run.verify |= self.verify;
        if self.metrics_addr.is_some() {
            config.run.metrics_addr = self.metrics_addr.clone();
        }
        if self.status_addr.is_some() {
            config.run.status_addr = self.status_addr.clone();
        }
        config.validate()?;
        Ok((config, notes))
    }
}

/// `ferry verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Take source and target from this configuration file (flags override).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Source and target.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Only this source database (repeatable; default: every database with keys), compared with the target
    /// database `--db-map` sends it to.
    #[arg(long = "db")]
    pub dbs: Vec<u32>,
    /// Databases and keys compared, and which target database each source database is compared with (the
    /// same flags as `sync`'s; with -c, added to the file's filter and db_map).
    #[command(flatten)]
    pub selection: Selection,
    /// Check at most N keys of each side per database.
    #[arg(long)]
    pub sample: Option<u64>,
    /// How values are compared: auto, dump, value or digest.
    #[arg(long, value_enum, default_value_t = CompareArg::Auto)]
    pub compare: CompareArg,
    /// Largest accepted gap between expiry times, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub ttl_tolerance_ms: u64,
    /// How many differences to list.
    #[arg(long, default_value_t = 20)]
    pub max_differences: usize,
    /// Check differing keys again after this many milliseconds (for a source that is still moving).
    #[arg(long)]
    pub recheck_after_ms: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompareArg {
    /// Equal payloads, else equal decoded values.
    Auto,
    /// Equal DUMP payloads only.
    Dump,
    /// Equal decoded values.
    Value,
    /// Equal DEBUG DIGEST-VALUE (servers of one version, DEBUG enabled).
    Digest,
}

impl VerifyArgs {
    /// Source, target and options.
    pub fn resolve(&self) -> Result<(Source, Target, VerifyOptions), Error> {
        let (mut source, mut target) = (None, None);
        let (mut filter, mut db_map) = (FilterConfig::default(), BTreeMap::new());
        if let Some(path) = &self.config {
            // The job's file: its filter and database map say what the job copies, and where.
            let c = SyncConfig::load_path(path)?.config;
            source = Some(c.source);
            target = Some(c.target);
            filter = c.filter;
            db_map = c.db_map;
        }
        self.selection.apply(&mut filter, &mut db_map);
        if let Some(s) = self.endpoints.source()? {
            source = Some(s);
        }
        if let Some(t) = self.endpoints.target()? {
            target = Some(t);
        }
        let source =
            source.ok_or_else(|| Error::config("give --source and --target, or -c FILE"))?;
        let target = target.ok_or_else(|| Error::config("give --target, or -c FILE"))?;
        let mut o = VerifyOptions::default().with_compare(match self.compare {
            CompareArg::Auto => Compare::Auto,
            CompareArg::Dump => Compare::Dump,
            CompareArg::Value => Compare::Value,
            CompareArg::Digest => Compare::Digest,
        });
        if !self.dbs.is_empty() {
            o = o.with_dbs(self.dbs.clone());
        }
        if let Some(n) = self.sample {
            o = o.with_sample(n);
        }
        if let Some(ms) = self.recheck_after_ms {
            o = o.with_recheck_after_ms(ms);
        }
        o.ttl_tolerance_ms = self.ttl_tolerance_ms;
        o.max_differences = self.max_differences;
        o.filter = filter;
        o.db_map = db_map;
        Ok((source, target, o))
    }
}

/// `ferry rdb ...`.
#[derive(Debug, Subcommand)]
pub enum RdbCommand {
    /// Print every key as one JSON object a line.
    Json {
        /// The RDB file.
        file: PathBuf,
    },
    /// Keys per type and db, biggest keys, encodings, expiry histogram.
    Stats {
        /// The RDB file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the file's keys into a target.
    Restore {
        /// The RDB file.
        file: PathBuf,
        /// The target URL.
        #[arg(long)]
        target: String,
        /// What the target is.
        #[arg(long, value_enum, default_value_t = TargetType::Standalone)]
        target_type: TargetType,
        /// ACL user of the target.
        #[arg(long)]
        target_user: Option<String>,
        /// Environment variable holding the target's password.
        #[arg(long)]
        target_password_env: Option<String>,
        /// Keys that already exist on the target: panic, rewrite or skip.
        #[arg(long, default_value = "panic")]
        conflict: Conflict,
        /// Only this database of the file (repeatable).
        #[arg(long = "db")]
        dbs: Vec<u32>,
        /// The file's database FROM goes to the target's database TO (`FROM:TO`, repeatable).
        #[arg(long = "db-map", value_parser = parse_db_map)]
        db_map: Vec<(u32, u32)>,
        /// Keys the target cannot hold (field expiries, module types): stop, skip or convert.
        #[arg(long, default_value = "stop")]
        target_policy: TargetPolicy,
    },
}

/// `ferry config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Read a configuration file and print it resolved, secrets masked.
    Check {
        /// The file.
        #[arg(short = 'c', long = "config", required_unless_present = "file")]
        config: Option<PathBuf>,
        /// The file given without `-c`.
        #[arg(value_name = "CONFIG", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}
