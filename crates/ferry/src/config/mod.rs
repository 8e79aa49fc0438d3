//! The configuration of a sync job: [`SyncConfig`] with its [`Source`], [`Target`] and options.
//!
//! Every option is a serde field, so a TOML file, a JSON document, CLI flags, a Python dict and a JS object say
//! the same thing. Files are read by [`SyncConfig::from_toml_str`] / [`SyncConfig::from_path`], which accept
//! ferry's own schema (docs/config.md) and RedisShake's v3 `sync.toml` and v4 `shake.toml` layouts, translated
//! into the same [`SyncConfig`].

mod command_groups;
mod envsubst;
pub(crate) mod file;
mod redisshake;
mod schema;
mod url_db;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_resp::{ConnectOptions, Password, TlsOptions};
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use file::{ConfigFormat, LoadedConfig};
pub(crate) use url_db::apply_url_dbs;

/// A secret (a password). `Debug` and `Display` show `***`; serializing writes the value (a config must round
/// trip), so use [`SyncConfig::to_redacted_json`] to show a configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, to send it to a server. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// TLS settings of an endpoint. Present (even empty) means TLS is on, as does a `rediss://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file with the CA certificates that sign the server's certificate (default: the system bundle).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require client certificates.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate: for tests, and what a RedisShake file's `tls = true` means (RedisShake
    /// dials TLS this way).
    pub insecure_skip_verify: bool,
    /// The name sent as SNI and checked against the certificate (default: the host).
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// TLS with the system's CA bundle.
    pub fn new() -> TlsConfig {
        TlsConfig::default()
    }

    /// Sets the CA file.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> TlsConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets the client certificate and key.
    pub fn with_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> TlsConfig {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Skips certificate checks (tests, and RedisShake files' `tls = true`).
    pub fn with_insecure_skip_verify(mut self, on: bool) -> TlsConfig {
        self.insecure_skip_verify = on;
        self
    }
}

/// One server: a URL (`redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS) and credentials.
///
/// `username`, `password` and `password_env` (the name of an environment variable holding the password, read
/// when the job starts) override what the URL says. In a file an endpoint may also be written as just its URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EndpointRepr")]
#[non_exhaustive]
pub struct Endpoint {
    /// `redis://[user[:password]@]host[:port][/db]` or `rediss://...`.
    pub url: String,
    /// ACL user (default: the URL's, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (default: `password_env`, else the URL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Environment variable to read the password from when the job starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// TLS settings (TLS is on when present or when the URL is `rediss://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EndpointRepr {
    Url(String),
    Full(EndpointFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFields {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    tls: Option<TlsConfig>,
}

impl From<EndpointRepr> for Endpoint {
    fn from(r: EndpointRepr) -> Endpoint {
        match r {
            EndpointRepr::Url(url) => Endpoint::new(url),
            EndpointRepr::Full(f) => Endpoint {
                url: f.url,
                username: f.username,
                password: f.password,
                password_env: f.password_env,
                tls: f.tls,
            },
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_env", &self.password_env)
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.url))
    }
}

impl Endpoint {
    /// An endpoint at `url`.
    pub fn new(url: impl Into<String>) -> Endpoint {
        Endpoint {
            url: url.into(),
            username: None,
            password: None,
            password_env: None,
            tls: None,
        }
    }

    /// Sets the ACL user.
    pub fn with_username(mut self, user: impl Into<String>) -> Endpoint {
        self.username = Some(user.into());
        self
    }

    /// Sets the password.
    pub fn with_password(mut self, password: impl Into<String>) -> Endpoint {
        self.password = Some(Secret::new(password));
        self
    }

    /// Reads the password from this environment variable when the job starts.
    pub fn with_password_env(mut self, var: impl Into<String>) -> Endpoint {
        self.password_env = Some(var.into());
        self
    }

    /// Sets the TLS options (TLS on).
    pub fn with_tls(mut self, tls: TlsConfig) -> Endpoint {
        self.tls = Some(tls);
        self
    }

    /// The connection options: the URL with the credentials and TLS applied; the password from `password`,
    /// else `password_env`, else the URL.
    pub fn connect_options(&self) -> Result<ConnectOptions, Error> {
        let mut opts = ConnectOptions::from_url(&self.url)
            .map_err(|e| Error::config(format!("endpoint {}: {e}", redact_url(&self.url))))?;
        if let Some(user) = &self.username {
            opts.username = (!user.is_empty()).then(|| user.clone());
        }
        if let Some(p) = &self.password {
            opts.password = (!p.expose().is_empty()).then(|| Password::new(p.expose()));
        } else if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|_| {
                Error::config(format!(
                    "endpoint {}: password_env names {var:?}, which is not set",
                    redact_url(&self.url)
                ))
            })?;
            opts.password = Some(Password::new(value));
        }
        if let Some(tls) = &self.tls {
            let mut t = opts.tls.take().unwrap_or_default();
            t.ca_file = tls.ca_file.clone().or(t.ca_file);
            t.cert_file = tls.cert_file.clone().or(t.cert_file);
            t.key_file = tls.key_file.clone().or(t.key_file);
            t.insecure_skip_verify |= tls.insecure_skip_verify;
            t.server_name = tls.server_name.clone().or(t.server_name);
            opts.tls = Some(TlsOptions { ..t });
        }
        Ok(opts)
    }

    /// `host:port` of the URL (for labels and logs).
    pub fn host_port(&self) -> String {
        match ConnectOptions::from_url(&self.url) {
            Ok(o) => format!("{}:{}", o.host, o.port),
            Err(_) => redact_url(&self.url),
        }
    }
}

/// Credentials and TLS of the master of a sentinel-managed group (the sentinels' own are in their endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MasterAuth {
    /// ACL user of the master.
    pub username: Option<String>,
    /// Password of the master.
    pub password: Option<Secret>,
    /// Environment variable with the master's password.
    pub password_env: Option<String>,
    /// TLS to the master.
    pub tls: Option<TlsConfig>,
}

/// Where the data comes from. Serde: tagged by `type` (`standalone`, `cluster`, `sentinel`, `scan`, `rdb_file`,
/// `aof_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// One server (a master or a replica), followed with PSYNC.
    Standalone(Endpoint),
    /// A Redis Cluster: one PSYNC stream per shard, each with its own checkpoint, following the shards'
    /// failovers (see `ferry_replicator::cluster_source`).
    Cluster {
        /// Any nodes of the cluster.
        seeds: Vec<Endpoint>,
        /// Only these shards (master `host:port` or node ids); all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shards: Option<Vec<String>>,
        /// Replicate from a replica of each shard rather than its master.
        #[serde(default)]
        prefer_replica: bool,
    },
    /// A sentinel-managed group, followed across failovers (PSYNC2 on the promoted replica, no new full copy).
    Sentinel {
        /// The sentinels.
        sentinels: Vec<Endpoint>,
        /// The master name the sentinels monitor.
        master: String,
        /// Credentials of the master.
        #[serde(default)]
        master_auth: MasterAuth,
    },
    /// SCAN + DUMP, then keyspace notifications, for servers that refuse PSYNC. Each key changed after the
    /// scan started is read again and written whole; what notifications cannot promise (a dropped pub/sub
    /// connection, the pub/sub output buffer limit, nothing checkpointed) is in docs/sources.md. The job runs
    /// `verify` at the end of the copy and shows its report in the status.
    Scan {
        /// The server.
        endpoint: Endpoint,
        /// Only these databases (all when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dbs: Option<Vec<u32>>,
        /// Follow changes with keyspace notifications after the scan (turned on with `CONFIG SET` when the
        /// server allows it). Without them the job ends once the scan is copied.
        #[serde(default)]
        notifications: bool,
        /// The endpoint is any node of a Redis Cluster: every master is scanned and followed.
        #[serde(default)]
        cluster: bool,
    },
    /// An RDB file (any version ferry-rdb reads): restored into the target with the job's filters, database
    /// map, conflict and target policies, then the job ends.
    RdbFile {
        /// The file.
        path: PathBuf,
    },
    /// An append-only file: a single AOF (with or without an RDB preamble), or a multi-part AOF given by its
    /// manifest or the directory holding it. Replayed into the target (up to `timestamp`), then the job ends.
    AofFile {
        /// The file, manifest or directory.
        path: PathBuf,
        /// Stop at the first `#TS:` annotation later than this (Unix seconds), to rebuild the dataset as it was
        /// then (`aof-timestamp-enabled yes` writes them); everything when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
    },
}

impl Source {
    /// A standalone source at `url`.
    pub fn standalone(url: impl Into<String>) -> Source {
        Source::Standalone(Endpoint::new(url))
    }

    /// An RDB file source.
    pub fn rdb_file(path: impl Into<PathBuf>) -> Source {
        Source::RdbFile { path: path.into() }
    }

    /// The serde tag of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Standalone(_) => "standalone",
            Source::Cluster { .. } => "cluster",
            Source::Sentinel { .. } => "sentinel",
            Source::Scan { .. } => "scan",
            Source::RdbFile { .. } => "rdb_file",
            Source::AofFile { .. } => "aof_file",
        }
    }

    /// A short description without secrets.
    pub fn describe(&self) -> String {
        match self {
            Source::Standalone(e) => e.to_string(),
            Source::Cluster { seeds, .. } => format!("cluster via {}", list(seeds)),
            Source::Sentinel {
                sentinels, master, ..
            } => format!("sentinel master {master:?} via {}", list(sentinels)),
            Source::Scan { endpoint, .. } => format!("scan of {endpoint}"),
            Source::RdbFile { path } => format!("RDB file {}", path.display()),
            Source::AofFile { path, .. } => format!("append-only file {}", path.display()),
        }
    }
}

/// Where the data goes. Serde: tagged by `type` (`standalone`, `cluster`, `sentinel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Target {
    /// One server.
    Standalone(Endpoint),
    /// A Redis Cluster (7.0+), by any of its nodes.
    Cluster {
        /// Any nodes of the cluster.
        seeds: Vec<Endpoint>,
    },
    /// The master of a sentinel-managed group: writes go to the master the sentinels name.
    Sentinel {
        /// The sentinels.
        sentinels: Vec<Endpoint>,
        /// The master name the sentinels monitor.
        master: String,
        /// Credentials of the master.
        #[serde(default)]
        master_auth: MasterAuth,
    },
}

impl Target {
    /// A standalone target at `url`.
    pub fn standalone(url: impl Into<String>) -> Target {
        Target::Standalone(Endpoint::new(url))
    }

    /// A cluster target reached through `url`.
    pub fn cluster(url: impl Into<String>) -> Target {
        Target::Cluster {
            seeds: vec![Endpoint::new(url)],
        }
    }

    /// The serde tag of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Standalone(_) => "standalone",
            Target::Cluster { .. } => "cluster",
            Target::Sentinel { .. } => "sentinel",
        }
    }

    /// A short description without secrets.
    pub fn describe(&self) -> String {
        match self {
            Target::Standalone(e) => e.to_string(),
            Target::Cluster { seeds } => format!("cluster via {}", list(seeds)),
            Target::Sentinel {
                sentinels, master, ..
            } => format!("sentinel master {master:?} via {}", list(sentinels)),
        }
    }

    /// The connection options of a standalone target or the first seed of a cluster, and whether it is a
    /// cluster (a sentinel target is resolved by the job through its sentinels).
    pub(crate) fn resolve(&self) -> Result<(ConnectOptions, bool), Error> {
        match self {
            Target::Standalone(e) => Ok((e.connect_options()?, false)),
            Target::Cluster { seeds } => {
                let first = seeds
                    .first()
                    .ok_or_else(|| Error::config("a cluster target needs at least one seed"))?;
                Ok((first.connect_options()?, true))
            }
            Target::Sentinel { .. } => Err(Error::not_supported("a sentinel-managed target")),
        }
    }
}

fn list(endpoints: &[Endpoint]) -> String {
    endpoints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to do with a key of the full copy that already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Conflict {
    /// Stop with an error naming the key.
    #[default]
    Panic,
    /// Replace the target's key.
    Rewrite,
    /// Keep the target's key.
    Skip,
}

impl std::str::FromStr for Conflict {
    type Err = Error;

    fn from_str(s: &str) -> Result<Conflict, Error> {
        match s.to_ascii_lowercase().as_str() {
            "panic" => Ok(Conflict::Panic),
            "rewrite" | "replace" => Ok(Conflict::Rewrite),
            "skip" | "ignore" => Ok(Conflict::Skip),
            other => Err(Error::config(format!(
                "conflict policy {other:?}: expected panic, rewrite or skip"
            ))),
        }
    }
}

/// What to do with a key or command the target cannot hold (hash field expiries on a target older than Redis 7.4 /
/// Valkey 9, a vector set or other module value without its module, a command the target does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetPolicy {
    /// Stop the job with an error naming the key: nothing is lost silently.
    #[default]
    Stop,
    /// Leave the key (and its later commands) out of the target, and list it in the status.
    Skip,
    /// Keep what the target holds (drop field expiries, keep the fields) and list the key; what has no lesser
    /// form is skipped and listed.
    Convert,
}

impl std::str::FromStr for TargetPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<TargetPolicy, Error> {
        match s.to_ascii_lowercase().as_str() {
            "stop" => Ok(TargetPolicy::Stop),
            "skip" => Ok(TargetPolicy::Skip),
            "convert" => Ok(TargetPolicy::Convert),
            other => Err(Error::config(format!(
                "target policy {other:?}: expected stop, skip or convert"
            ))),
        }
    }
}

/// What to do when the target answers a live-stream write with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnError {
    /// Stop the job.
    #[default]
    Stop,
    /// Count and log it, and go on.
    Log,
}

/// Which databases, keys and commands are copied. Empty lists allow everything; a block rule wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FilterConfig {
    /// Only these source databases.
    pub allow_dbs: Vec<u32>,
    /// Never these source databases.
    pub block_dbs: Vec<u32>,
    /// Only keys equal to one of these.
    pub allow_keys: Vec<String>,
    /// Never keys equal to one of these.
    pub block_keys: Vec<String>,
    /// Only keys starting with one of these.
    pub allow_key_prefixes: Vec<String>,
    /// Never keys starting with one of these.
    pub block_key_prefixes: Vec<String>,
    /// Only keys ending with one of these.
    pub allow_key_suffixes: Vec<String>,
    /// Never keys ending with one of these.
    pub block_key_suffixes: Vec<String>,
    /// Only keys matching one of these regular expressions.
    pub allow_key_regexes: Vec<String>,
    /// Never keys matching one of these regular expressions.
    pub block_key_regexes: Vec<String>,
    /// Only these commands of the live stream (case-insensitive).
    pub allow_commands: Vec<String>,
    /// Never these commands of the live stream.
    pub block_commands: Vec<String>,
}

impl FilterConfig {
    /// The replicator's filter configuration (exact keys become anchored regular expressions).
    // `..Default::default()` keeps this compiling when the replicator adds options.
    #[allow(clippy::needless_update)]
    pub(crate) fn to_replicator(&self) -> ferry_replicator::FilterConfig {
        let exact = |keys: &[String]| {
            keys.iter()
                .map(|k| format!("^{}$", regex::escape(k)))
                .collect::<Vec<_>>()
        };
        let bytes = |list: &[String]| list.iter().map(|p| p.as_bytes().to_vec()).collect();
        let dbs = |list: &[u32]| list.iter().map(|&d| i64::from(d)).collect();
        let mut allow_key_regexes = self.allow_key_regexes.clone();
        allow_key_regexes.extend(exact(&self.allow_keys));
        let mut block_key_regexes = self.block_key_regexes.clone();
        block_key_regexes.extend(exact(&self.block_keys));
        ferry_replicator::FilterConfig {
            allow_dbs: dbs(&self.allow_dbs),
            block_dbs: dbs(&self.block_dbs),
            allow_key_prefixes: bytes(&self.allow_key_prefixes),
            block_key_prefixes: bytes(&self.block_key_prefixes),
            allow_key_suffixes: bytes(&self.allow_key_suffixes),
            block_key_suffixes: bytes(&self.block_key_suffixes),
            allow_key_regexes,
            block_key_regexes,
            allow_commands: self.allow_commands.clone(),
            block_commands: self.block_commands.clone(),
            ..Default::default()
        }
    }
}

/// Checkpoints stored in the target, so that a restarted job resumes exactly where the target is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// Store checkpoints (always on for a cluster target).
    pub enabled: bool,
    /// The tag of the checkpoint key `ferry:checkpoint:{<tag>}`; jobs sharing a target need distinct tags.
    pub tag: String,
    /// The database of the checkpoint key on a standalone target.
    pub db: u32,
    /// The fencing epoch written into every checkpoint: the job refuses a fence or a checkpoint of a newer
    /// epoch ([`crate::ErrorKind::Fenced`]). A [`crate::DrPair`] sets it for the jobs it runs; 0 otherwise.
    pub epoch: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            tag: "ferry".into(),
            db: 0,
            epoch: 0,
        }
    }
}

/// Windows, batches and timeouts. Memory is bounded by these, not by the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Commands written to the target and not yet answered, at most.
    pub window_commands: usize,
    /// Bytes written to the target and not yet answered, at most.
    pub window_bytes: usize,
    /// Commands per live-stream batch (one MULTI/EXEC with its checkpoint).
    pub batch_commands: usize,
    /// Bytes per live-stream batch.
    pub batch_bytes: usize,
    /// Values bigger than this (serialized) go as element commands instead of one RESTORE.
    pub max_restore_bytes: usize,
    /// Deadline for each reply of the target, in milliseconds.
    pub reply_timeout_ms: u64,
    /// Pause before reconnecting after a broken link, in milliseconds.
    pub reconnect_backoff_ms: u64,
    /// Bytes of the source's stream held in memory while the target is behind, before the spool file is used.
    pub spool_memory_bytes: usize,
    /// Most bytes the spool file may hold (0: no file; the memory bound is then the only one).
    pub spool_max_bytes: u64,
    /// The directory of the spool file (the system's temporary directory when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window_commands: 4096,
            window_bytes: 8 * 1024 * 1024,
            batch_commands: 512,
            batch_bytes: 4 * 1024 * 1024,
            max_restore_bytes: 16 * 1024 * 1024,
            reply_timeout_ms: 120_000,
            reconnect_backoff_ms: 500,
            spool_memory_bytes: 32 * 1024 * 1024,
            spool_max_bytes: 4 * 1024 * 1024 * 1024,
            spool_dir: None,
        }
    }
}

/// Settings of the `ferry` program around a job (the library does not use them; a binding may).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RunConfig {
    /// Serve Prometheus metrics at `http://<addr>/metrics` (e.g. `127.0.0.1:9121`).
    pub metrics_addr: Option<String>,
    /// Serve the status snapshot as JSON at `http://<addr>/status` (and `/`).
    pub status_addr: Option<String>,
    /// With `until_caught_up`: compare source and target after catching up and fail when they differ.
    pub verify: bool,
}

/// Everything a sync job needs. See docs/config.md for every key and its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SyncConfig {
    /// Where the data comes from.
    pub source: Source,
    /// Where it goes.
    pub target: Target,
    /// Which databases, keys and commands are copied.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Source database to target database (`{"1": 0}`); unlisted databases keep their number.
    #[serde(default)]
    pub db_map: BTreeMap<String, u32>,
    /// Keys of the full copy that already exist on the target.
    #[serde(default)]
    pub conflict: Conflict,
    /// Keys and commands the target cannot hold.
    #[serde(default)]
    pub target_policy: TargetPolicy,
    /// Error replies of the target during the live stream.
    #[serde(default)]
    pub on_error: OnError,
    /// Checkpoints in the target.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Windows, batches, timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// Stop (successfully) once the target has caught up with the source after the full copy.
    #[serde(default)]
    pub until_caught_up: bool,
    /// When a full copy must be redone over data an earlier run of this job wrote, empty the target first
    /// (without it, a redo deletes the keys the source no longer has only on a target the job owns).
    #[serde(default)]
    pub flush_target_on_resync: bool,
    /// Empty the target (`FLUSHALL`) before every full copy, the first one included (RedisShake's
    /// `empty_db_before_sync`); a job that resumes from its checkpoint does not. Never while the target holds
    /// another job's checkpoint. Not for a cluster source (its shards copy at different times).
    #[serde(default)]
    pub flush_target_before_copy: bool,
    /// The name PSYNC goes by on source nodes that renamed it, by the node's `host:port` as ferry connects to
    /// it (AWS ElastiCache gives such names on request; RedisShake's `aws_psync`). A server that serves the
    /// renamed command as `SYNC` copies everything again at every reconnect.
    #[serde(default)]
    pub psync_commands: BTreeMap<String, String>,
    /// Settings of the `ferry` program (metrics and status endpoints, verify after catching up).
    #[serde(default)]
    pub run: RunConfig,
}

impl SyncConfig {
    /// A configuration with the defaults: conflict `panic`, checkpoints on, no filters.
    pub fn new(source: Source, target: Target) -> SyncConfig {
        SyncConfig {
            source,
            target,
            filter: FilterConfig::default(),
            db_map: BTreeMap::new(),
            conflict: Conflict::default(),
            target_policy: TargetPolicy::default(),
            on_error: OnError::default(),
            checkpoint: CheckpointConfig::default(),
            limits: Limits::default(),
            until_caught_up: false,
            flush_target_on_resync: false,
            flush_target_before_copy: false,
            psync_commands: BTreeMap::new(),
            run: RunConfig::default(),
        }
    }

    /// Sets the filters.
    pub fn with_filter(mut self, filter: FilterConfig) -> SyncConfig {
        self.filter = filter;
        self
    }

    /// Maps source database `from` to target database `to`.
    pub fn with_db_map(mut self, from: u32, to: u32) -> SyncConfig {
        self.db_map.insert(from.to_string(), to);
        self
    }

    /// Sets the conflict policy.
    pub fn with_conflict(mut self, conflict: Conflict) -> SyncConfig {
        self.conflict = conflict;
        self
    }

    /// Sets the target policy (what to do with a key or command the target cannot hold).
    pub fn with_target_policy(mut self, policy: TargetPolicy) -> SyncConfig {
        self.target_policy = policy;
        self
    }

    /// Sets the checkpoint options.
    pub fn with_checkpoint(mut self, checkpoint: CheckpointConfig) -> SyncConfig {
        self.checkpoint = checkpoint;
        self
    }

    /// Sets the limits.
    pub fn with_limits(mut self, limits: Limits) -> SyncConfig {
        self.limits = limits;
        self
    }

    /// Stops the job once the target has caught up after the full copy.
    pub fn with_until_caught_up(mut self, on: bool) -> SyncConfig {
        self.until_caught_up = on;
        self
    }

    /// Reads a TOML configuration: ferry's schema, RedisShake v3 `sync.toml` or v4 `shake.toml` (detected).
    /// Keys ferry does not need are logged as notes; see [`SyncConfig::load_toml`] to get them.
    pub fn from_toml_str(text: &str) -> Result<SyncConfig, Error> {
        let loaded = SyncConfig::load_toml(text)?;
        for note in &loaded.notes {
            tracing::info!("config: {note}");
        }
        Ok(loaded.config)
    }

    /// Like [`SyncConfig::from_toml_str`], returning the detected format and the notes too.
    pub fn load_toml(text: &str) -> Result<LoadedConfig, Error> {
        file::load(text)
    }

    /// Reads a TOML file (see [`SyncConfig::from_toml_str`]); errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<SyncConfig, Error> {
        let loaded = SyncConfig::load_path(path)?;
        for note in &loaded.notes {
            tracing::info!("config: {note}");
        }
        Ok(loaded.config)
    }

    /// Like [`SyncConfig::from_path`], returning the detected format and the notes too.
    pub fn load_path(path: impl AsRef<Path>) -> Result<LoadedConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        file::load(&text).map_err(|e| e.context(path.display()))
    }

    /// Reads ferry's schema as JSON (what the bindings pass: a Python dict or a JS object as JSON).
    pub fn from_json_str(text: &str) -> Result<SyncConfig, Error> {
        let invalid = |e: serde_json::Error| Error::config(format!("invalid configuration: {e}"));
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
        // A source or target without `type` has the one its keys imply, as in a file.
        file::add_implied_json_types(&mut value, &["source", "target"]);
        let config: SyncConfig = serde_json::from_value(value).map_err(invalid)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as JSON with every secret masked (`"***"`), also passwords inside URLs.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact_json(&mut v);
        v
    }

    /// The configuration as TOML (ferry's schema) with every secret masked.
    pub fn to_redacted_toml(&self) -> String {
        let mut json = self.to_redacted_json();
        strip_nulls(&mut json);
        toml::to_string_pretty(&json).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// Checks what can be checked without connecting: values in range, known source/target kinds, db map keys,
    /// regular expressions.
    pub fn validate(&self) -> Result<(), Error> {
        db_pairs(&self.db_map)?;
        let l = &self.limits;
        if l.window_commands == 0
            || l.window_bytes == 0
            || l.batch_commands == 0
            || l.batch_bytes == 0
            || l.spool_memory_bytes == 0
        {
            return Err(Error::config(
                "limits: windows, batches and spool_memory_bytes must not be zero",
            ));
        }
        match &self.target {
            Target::Cluster { seeds } if seeds.is_empty() => {
                return Err(Error::config("target: a cluster needs at least one seed"))
            }
            Target::Sentinel { sentinels, .. } if sentinels.is_empty() => {
                return Err(Error::config(
                    "target: a sentinel group needs at least one sentinel",
                ))
            }
            _ => {}
        }
        for (node, command) in &self.psync_commands {
            let port_ok = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(Error::config(format!(
                    "psync_commands: {node:?} is not a source node's \"host:port\""
                )));
            }
            if command.is_empty() || !command.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::config(format!(
                    "psync_commands: the command for {node:?} must be one word, not {command:?}"
                )));
            }
        }
        if let Source::Cluster { seeds, .. } = &self.source {
            if seeds.is_empty() {
                return Err(Error::config("source: a cluster needs at least one seed"));
            }
            if self.flush_target_before_copy {
                return Err(Error::config(
                    "flush_target_before_copy: not with a cluster source (its shards copy at different \
                     times, and a flush for one would delete what the others copied)",
                ));
            }
        }
        for r in self
            .filter
            .allow_key_regexes
            .iter()
            .chain(&self.filter.block_key_regexes)
        {
            regex::Regex::new(r)
                .map_err(|e| Error::config(format!("filter: regular expression {r:?}: {e}")))?;
        }
        self.selection()?;
        Ok(())
    }

    /// What the databases named in the source's and target's URLs add to the filter and the database map (a
    /// line for humans), if they name any; an error when what they name cannot be applied (see docs/config.md).
    pub fn url_db_note(&self) -> Result<Option<String>, Error> {
        Ok(self.selection()?.note)
    }

    /// The filter and the database map the job applies: the configured ones with the databases the source's
    /// and target's URLs name (`redis://host:port/N`, see `url_db.rs`).
    pub(crate) fn selection(&self) -> Result<Selection, Error> {
        let (mut filter, mut db_map) = (self.filter.clone(), self.db_map.clone());
        let mut note = url_db::apply_url_dbs(&self.source, &self.target, &mut filter, &mut db_map)?;
        let checkpoint_db = self.checkpoint_db();
        if checkpoint_db != self.checkpoint.db {
            note = Some(format!(
                "{}, ferry's checkpoint in target database {checkpoint_db}",
                note.unwrap_or_else(|| "the URLs name databases".into())
            ));
        }
        Ok(Selection {
            filter,
            db_map,
            note,
        })
    }

    /// The replicator's configuration for a standalone or scan source at `source`, or an RDB file (`source`
    /// then only names it). A sentinel-managed source or target: the sentinels' pool options; `source` is then
    /// only a name.
    pub(crate) fn to_replicator(
        &self,
        source: &Endpoint,
    ) -> Result<ferry_replicator::Config, Error> {
        let target_sentinel = match &self.target {
            Target::Sentinel {
                sentinels,
                master,
                master_auth,
            } => Some(sentinel_pool_options(sentinels, master, master_auth)?),
            _ => None,
        };
        let source_sentinel = match &self.source {
            Source::Sentinel {
                sentinels,
                master,
                master_auth,
            } => Some(sentinel_pool_options(sentinels, master, master_auth)?),
            _ => None,
        };
        let (target, cluster) = match &target_sentinel {
            Some(o) => (o.data_connect.clone(), false),
            None => self.target.resolve()?,
        };
        let source = match (&source_sentinel, &self.source) {
            (Some(o), _) => o.data_connect.clone(),
            // The job reads the file; `source` only names it in the status.
            (None, Source::RdbFile { .. } | Source::AofFile { .. }) => {
                ConnectOptions::from_url("redis://127.0.0.1")
                    .map_err(|e| Error::config(e.to_string()))?
            }
            (None, _) => source.connect_options()?,
        };
        let mut c = ferry_replicator::Config::new(source, target);
        if let Source::Cluster {
            seeds,
            shards,
            prefer_replica,
        } = &self.source
        {
            let seeds = seeds
                .iter()
                .map(Endpoint::connect_options)
                .collect::<Result<Vec<_>, _>>()?;
            let mut cs = ferry_replicator::ClusterSource::new(seeds);
            cs.shards.clone_from(shards);
            cs.prefer_replica = *prefer_replica;
            c.source_cluster = Some(cs);
        }
        c.source_kind = match &self.source {
            Source::RdbFile { path } => ferry_replicator::SourceKind::RdbFile(path.clone()),
            Source::AofFile { path, timestamp } => {
                let mut aof = ferry_replicator::AofOptions::new(path.clone());
                aof.timestamp = *timestamp;
                ferry_replicator::SourceKind::AofFile(aof)
            }
            Source::Scan {
                dbs,
                notifications,
                cluster,
                ..
            } => {
                let scan = ferry_replicator::ScanOptions::default()
                    .with_dbs(
                        dbs.as_ref()
                            .map(|d| d.iter().map(|&db| i64::from(db)).collect()),
                    )
                    .with_notifications(*notifications)
                    .with_cluster(*cluster);
                ferry_replicator::SourceKind::Scan(scan)
            }
            _ => ferry_replicator::SourceKind::Replica,
        };
        c.target_cluster = cluster;
        c.source_sentinel = source_sentinel;
        c.target_sentinel = target_sentinel;
        c.conflict = match self.conflict {
            Conflict::Panic => ferry_replicator::ConflictPolicy::Panic,
            Conflict::Rewrite => ferry_replicator::ConflictPolicy::Rewrite,
            Conflict::Skip => ferry_replicator::ConflictPolicy::Skip,
        };
        c.target_policy = match self.target_policy {
            TargetPolicy::Stop => ferry_replicator::TargetPolicy::Stop,
            TargetPolicy::Skip => ferry_replicator::TargetPolicy::Skip,
            TargetPolicy::Convert => ferry_replicator::TargetPolicy::Convert,
        };
        let selection = self.selection()?;
        c.filter = selection.filter.to_replicator();
        c.db_map = ferry_replicator::DbMap::new(db_pairs(&selection.db_map)?);
        c.flush_target_on_resync = self.flush_target_on_resync;
        c.flush_target_before_copy = self.flush_target_before_copy;
        c.source.handshake.psync_commands = self.psync_commands.clone();
        c.max_restore_bytes = self.limits.max_restore_bytes;
        c.reconnect_backoff = Duration::from_millis(self.limits.reconnect_backoff_ms);
        c.sink = self.sink_options();
        c.source.spool.memory_bytes = self.limits.spool_memory_bytes;
        c.source.spool.file_bytes = self.limits.spool_max_bytes;
        c.source.spool.dir = self.limits.spool_dir.clone();
        Ok(c)
    }

    /// The database of the checkpoint on a standalone target: `checkpoint.db`, or when that is left at 0, the
    /// database the target's URL names (a job told to write into database 5 keeps its own keys there too).
    pub(crate) fn checkpoint_db(&self) -> u32 {
        match &self.target {
            Target::Standalone(e) if self.checkpoint.db == 0 => {
                e.url_db().ok().flatten().unwrap_or(0)
            }
            _ => self.checkpoint.db,
        }
    }

    /// The replicator's sink options.
    // `..Default::default()` keeps this compiling when the replicator adds options.
    #[allow(clippy::needless_update)]
    pub(crate) fn sink_options(&self) -> ferry_replicator::SinkOptions {
        let l = &self.limits;
        ferry_replicator::SinkOptions {
            window_commands: l.window_commands,
            window_bytes: l.window_bytes,
            batch_commands: l.batch_commands,
            batch_bytes: l.batch_bytes,
            reply_timeout: Duration::from_millis(l.reply_timeout_ms),
            on_error: match self.on_error {
                OnError::Stop => ferry_replicator::ErrorPolicy::Stop,
                OnError::Log => ferry_replicator::ErrorPolicy::Log,
            },
            checkpoint: self.checkpoint.enabled,
            checkpoint_tag: self.checkpoint.tag.clone(),
            checkpoint_db: i64::from(self.checkpoint_db()),
            epoch: self.checkpoint.epoch,
            ..Default::default()
        }
    }
}

/// The pool options of a sentinel-managed group: the sentinels' own auth and TLS from their endpoints (the first
/// one's, for all), the data nodes' from `auth`.
pub(crate) fn sentinel_pool_options(
    sentinels: &[Endpoint],
    master: &str,
    auth: &MasterAuth,
) -> Result<ferry_sentinel::SentinelPoolOptions, Error> {
    let first = sentinels
        .first()
        .ok_or_else(|| Error::config("a sentinel group needs at least one sentinel"))?;
    if master.is_empty() {
        return Err(Error::config("a sentinel group needs the master's name"));
    }
    let mut addrs = Vec::with_capacity(sentinels.len());
    for s in sentinels {
        let o = s.connect_options()?;
        addrs.push(ferry_sentinel::Addr::new(o.host, o.port));
    }
    let mut o = ferry_sentinel::SentinelPoolOptions::new(master, addrs);
    let mut sentinel_connect = first.connect_options()?;
    sentinel_connect.db = 0;
    o.sentinel_connect = sentinel_connect;
    // The address is the resolved master's; the URL only carries the scheme.
    let mut data = Endpoint::new(if auth.tls.is_some() {
        "rediss://127.0.0.1:6379"
    } else {
        "redis://127.0.0.1:6379"
    });
    data.username = auth.username.clone();
    data.password = auth.password.clone();
    data.password_env = auth.password_env.clone();
    data.tls = auth.tls.clone();
    o.data_connect = data.connect_options()?;
    Ok(o)
}

/// The connection options of the master the sentinels of `o` name now (resolved by the sentinel client, as
/// its pool resolves it), with the master's credentials.
pub(crate) async fn sentinel_master(
    o: &ferry_sentinel::SentinelPoolOptions,
) -> Result<ConnectOptions, Error> {
    let unresolved = |why: String| {
        Error::new(
            crate::ErrorKind::Connection,
            format!("the sentinels of {:?}: {why}", o.master_name),
        )
    };
    let pool = ferry_sentinel::SentinelPool::new(o.clone())
        .await
        .map_err(|e| unresolved(e.to_string()))?;
    let master = pool.master_addr();
    pool.close();
    let master =
        master.ok_or_else(|| unresolved("no master known (a failover in progress)".into()))?;
    let mut at = o.data_connect.clone();
    at.host = master.host;
    at.port = master.port;
    Ok(at)
}

/// What a job copies and where: its filter and database map with what the URLs name.
pub(crate) struct Selection {
    pub(crate) filter: FilterConfig,
    pub(crate) db_map: BTreeMap<String, u32>,
    /// What the URLs added, for the log.
    pub(crate) note: Option<String>,
}

/// A database map (`{"1": 0}`) as pairs; a key that is not a database number is an error.
pub(crate) fn db_pairs(db_map: &BTreeMap<String, u32>) -> Result<Vec<(i64, i64)>, Error> {
    db_map
        .iter()
        .map(|(k, &v)| match k.parse::<u32>() {
            Ok(k) => Ok((i64::from(k), i64::from(v))),
            Err(_) => Err(Error::config(format!(
                "db_map: {k:?} is not a database number"
            ))),
        })
        .collect()
}

/// `scheme://user:***@host...`: the password of a URL replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Removes `null` values (TOML has none: an absent key is the default).
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Masks `password` values and passwords inside `url` values, recursively.
fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                match (k.as_str(), &*val) {
                    ("password", serde_json::Value::String(s)) if !s.is_empty() => {
                        *val = serde_json::Value::String("***".into())
                    }
                    ("url", serde_json::Value::String(s)) => {
                        *val = serde_json::Value::String(redact_url(s))
                    }
                    _ => redact_json(val),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_masks_only_the_password() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact_url("rediss://:p@h"), "rediss://:***@h");
        assert_eq!(redact_url("redis://user@h:1"), "redis://user@h:1");
        assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:***@h:1");
    }

    #[test]
    fn password_wins_over_password_env_and_the_url() {
        let e = Endpoint::new("redis://u:from-url@127.0.0.1:1")
            .with_password("explicit")
            .with_password_env("FERRY_UNIT_TEST_UNSET_VARIABLE");
        let o = e.connect_options().unwrap();
        assert_eq!(o.password.as_ref().map(|p| p.expose()), Some("explicit"));
        assert_eq!(o.username.as_deref(), Some("u"));
        let o = Endpoint::new("redis://u:from-url@127.0.0.1:1")
            .connect_options()
            .unwrap();
        assert_eq!(o.password.as_ref().map(|p| p.expose()), Some("from-url"));
    }

    #[test]
    fn a_tls_table_turns_tls_on_for_a_redis_url() {
        let o = Endpoint::new("redis://127.0.0.1:1")
            .with_tls(TlsConfig::new().with_ca_file("/ca.pem"))
            .connect_options()
            .unwrap();
        assert_eq!(
            o.tls.and_then(|t| t.ca_file),
            Some(PathBuf::from("/ca.pem"))
        );
    }
}
