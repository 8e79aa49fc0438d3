//! One redis-server (or Sentinel) process on a free port of 127.0.0.1.

use std::fmt;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::RedisContext;
use crate::port::pick_free_port;
use crate::version::{sentinel_binary, server_binary};
use crate::{wait_for, Error, Version};

/// The only host the testkit ever binds or connects to.
pub const HOST: &str = "127.0.0.1";

/// An ACL user created on the server at start (`user <name> on ><password> <rules>`).
#[derive(Clone, PartialEq, Eq)]
pub struct AclUser {
    /// User name.
    pub name: String,
    /// Password (never shown by `Debug`).
    pub password: String,
    /// ACL rules after the password; `~* &* +@all` (everything) by default.
    pub rules: String,
}

impl AclUser {
    /// A user allowed everything (`~* &* +@all`).
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        AclUser {
            name: name.into(),
            password: password.into(),
            rules: "~* &* +@all".into(),
        }
    }

    /// Replaces the rules (e.g. `"~app:* +@read"`).
    pub fn rules(mut self, rules: impl Into<String>) -> Self {
        self.rules = rules.into();
        self
    }
}

impl fmt::Debug for AclUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("rules", &self.rules)
            .finish()
    }
}

/// How to start a [`Server`]. `Default` is a plain Redis 7.0 server without password.
#[derive(Clone)]
pub struct ServerOptions {
    /// Which Redis version.
    pub version: Version,
    /// `requirepass` (the password of the `default` user); [`Server::client`] uses it.
    pub password: Option<String>,
    /// Extra ACL users.
    pub acl_users: Vec<AclUser>,
    /// Which of `acl_users` [`Server::client`] and [`Server::url`] authenticate as; `None` = the default user.
    pub client_user: Option<String>,
    /// Extra config lines `name value`, written verbatim after the testkit's own (later lines win). The value is
    /// not quoted, so `("save", "900 1")` works. Giving `save` or `appendonly` replaces the testkit's defaults.
    pub config: Vec<(String, String)>,
    /// `cluster-enabled yes` (the bus port, port + 10000, is checked free too).
    pub cluster: bool,
    /// Run as Sentinel instead of a data server (sentinel directives go in `config`).
    pub sentinel: bool,
    /// How long [`Server::start`] waits for the server to answer.
    pub start_timeout: Duration,
    /// Also listen with TLS (7.0 only): a second port, [`Server::tls_port`], serves TLS with a certificate for
    /// `localhost` / `127.0.0.1` signed by a test CA ([`Server::tls_ca_path`]); clients are not asked for
    /// certificates (`tls-auth-clients no`). The plain port stays open for [`Server::client`]. Cluster nodes
    /// also get `tls-cluster yes` and `tls-replication yes` (bus and replication over TLS).
    pub tls: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            version: Version::V7_0,
            password: None,
            acl_users: Vec::new(),
            client_user: None,
            config: Vec::new(),
            cluster: false,
            sentinel: false,
            start_timeout: Duration::from_secs(30),
            tls: false,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("version", &self.version)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("acl_users", &self.acl_users)
            .field("client_user", &self.client_user)
            .field(
                "config",
                &self
                    .config
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("sentinel", &self.sentinel)
            .field("start_timeout", &self.start_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ServerOptions {
    /// Default options for `version`.
    pub fn new(version: Version) -> Self {
        ServerOptions {
            version,
            ..Default::default()
        }
    }

    /// Sets `requirepass`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Adds an ACL user.
    pub fn acl_user(mut self, user: AclUser) -> Self {
        self.acl_users.push(user);
        self
    }

    /// Makes [`Server::client`] authenticate as the ACL user `name` (which must be in `acl_users`).
    pub fn client_user(mut self, name: impl Into<String>) -> Self {
        self.client_user = Some(name.into());
        self
    }

    /// Adds a config line `name value`.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((name.into(), value.into()));
        self
    }

    /// Enables cluster mode.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Runs a Sentinel instead of a data server.
    pub fn sentinel(mut self) -> Self {
        self.sentinel = true;
        self
    }

    /// Turns the extra TLS port on or off (see [`ServerOptions::tls`]; Redis 7.0 only).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// The (user, password) a client should authenticate with, if any.
    fn credentials(&self) -> Result<Option<(Option<String>, String)>, Error> {
        if let Some(name) = &self.client_user {
            let user = self
                .acl_users
                .iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("client_user {name:?} is not one of acl_users"))
                })?;
            return Ok(Some((Some(user.name.clone()), user.password.clone())));
        }
        Ok(self.password.clone().map(|p| (None, p)))
    }
}

/// One `redis-server` (or Sentinel) on `127.0.0.1:<free port>` with its own temp dir, config file and log.
///
/// The server is stopped when dropped (a graceful `SHUTDOWN`, then `SIGKILL`), and reaped, so no process or
/// zombie is left behind. When dropped during a panic, the end of its log is printed to stderr.
pub struct Server {
    opts: ServerOptions,
    port: u16,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    credentials: Option<(Option<String>, String)>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("kind", &self.kind())
            .field("version", &self.opts.version)
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

const CONFIG_FILE: &str = "redis.conf";
const LOG_FILE: &str = "redis.log";
const STDOUT_FILE: &str = "stdout.log";
const LOG_TAIL_LINES: usize = 60;

/// Quotes a config value for redis.conf (double quotes, backslash escapes).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

enum Ready {
    Yes,
    PortTaken,
}

impl Server {
    /// Starts a server and blocks until it answers (`INFO` from this very process) or `start_timeout` passes.
    ///
    /// If another process grabbed the chosen port first, a new port is picked (up to 5 times).
    pub fn start(opts: ServerOptions) -> Result<Server, Error> {
        let credentials = opts.credentials()?;
        if opts.tls && opts.version != Version::V7_0 {
            return Err(Error::InvalidArgument(format!(
                "TLS is only supported by the testkit on Redis 7.0 (the 6.2, 8.2 and Valkey 9.1 binaries are \
                 built without it), not {}",
                opts.version
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix(if opts.sentinel {
                "ferry-sentinel-"
            } else {
                "ferry-redis-"
            })
            .tempdir()
            .map_err(|e| Error::io("creating a temp dir for redis-server", e))?;
        let mut server = Server {
            opts,
            port: 0,
            tls_port: None,
            dir,
            child: None,
            credentials,
        };
        if server.opts.tls {
            crate::tls::write_certs(server.dir.path())?;
        }
        let mut last_err = None;
        for _ in 0..5 {
            server.port = pick_free_port(server.opts.cluster)?;
            if server.opts.tls {
                server.tls_port = Some(pick_free_port(server.opts.cluster)?);
            }
            server.write_config()?;
            match server.spawn_and_wait()? {
                Ready::Yes => return Ok(server),
                Ready::PortTaken => {
                    last_err = Some(server.start_failed(format!(
                        "port {} was taken by another process",
                        server.port
                    )));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::InvalidArgument("no start attempt made".into())))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port on 127.0.0.1 when started with [`ServerOptions::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `"127.0.0.1:<tls port>"` when started with [`ServerOptions::tls`].
    pub fn tls_addr(&self) -> Option<String> {
        self.tls_port.map(|p| format!("{HOST}:{p}"))
    }

    /// The PEM file of the CA that signed the server's TLS certificate (for a client's CA file), when started
    /// with [`ServerOptions::tls`]. Every TLS server of one process shares this CA.
    pub fn tls_ca_path(&self) -> Option<PathBuf> {
        self.tls_port
            .map(|_| self.dir.path().join(crate::tls::CA_FILE))
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `"127.0.0.1:<port>"`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// `redis://[user:password@]127.0.0.1:<port>`, with the credentials [`Server::client`] uses.
    pub fn url(&self) -> String {
        match &self.credentials {
            None => format!("redis://{HOST}:{}", self.port),
            Some((user, pass)) => format!(
                "redis://{}:{}@{HOST}:{}",
                user.as_deref().map(percent_encode).unwrap_or_default(),
                percent_encode(pass),
                self.port
            ),
        }
    }

    /// The Redis version this server runs.
    pub fn version(&self) -> Version {
        self.opts.version
    }

    /// The options it was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.opts
    }

    /// True for a Sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.opts.sentinel
    }

    /// Connection parameters (address and credentials) for the `redis` crate.
    pub fn connection_info(&self) -> ConnectionInfo {
        let mut redis_info = RedisConnectionInfo::default();
        if let Some((user, pass)) = &self.credentials {
            if let Some(user) = user {
                redis_info = redis_info.set_username(user);
            }
            redis_info = redis_info.set_password(pass);
        }
        tcp_info(self.port).set_redis_settings(redis_info)
    }

    /// A new authenticated connection (5 s connect timeout, 60 s read/write timeouts).
    pub fn try_client(&self) -> Result<redis::Connection, Error> {
        connect(
            &self.connection_info(),
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .ctx(|| format!("connecting to {}", self.describe()))
    }

    /// A new authenticated connection. Panics (with the reason) if the server cannot be reached; use
    /// [`Server::try_client`] to handle that.
    pub fn client(&self) -> redis::Connection {
        match self.try_client() {
            Ok(c) => c,
            Err(e) => panic!("ferry-testkit: {e}"),
        }
    }

    /// The process id while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// The server's own directory (config, log, data files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the config file (Sentinel rewrites it with its state).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// The server's log so far (its logfile, then anything it printed to stdout/stderr).
    pub fn log(&self) -> String {
        let read = |name: &str| {
            String::from_utf8_lossy(&fs::read(self.dir.path().join(name)).unwrap_or_default())
                .into_owned()
        };
        let mut s = read(LOG_FILE);
        let out = read(STDOUT_FILE);
        if !out.trim().is_empty() {
            s.push_str("--- stdout/stderr ---\n");
            s.push_str(&out);
        }
        s
    }

    /// The last `n` lines of [`Server::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kills the process with SIGKILL at once and reaps it; the dir (data, log) stays for [`Server::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            crate::reaper::unregister(child.id());
        }
    }

    /// Stops the process gracefully (`SHUTDOWN NOSAVE`; `NOW` on 7.0), then SIGKILL if it has not exited
    /// within 2 s. The dir stays.
    pub fn stop(&mut self) {
        let info = self.connection_info();
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            if let Ok(mut con) = connect(
                &info,
                Duration::from_millis(500),
                Duration::from_millis(500),
            ) {
                let mut cmd = redis::cmd("SHUTDOWN");
                if !self.opts.sentinel {
                    cmd.arg("NOSAVE");
                    if self.opts.version.is_7() {
                        cmd.arg("NOW");
                    }
                }
                // The server closes the connection instead of answering: the result tells nothing.
                let _ = cmd.query::<redis::Value>(&mut con);
            }
            let _ = wait_for(Duration::from_secs(2), "redis-server to exit", || {
                matches!(child.try_wait(), Ok(Some(_)) | Err(_)).then_some(())
            });
        }
        self.kill();
    }

    /// Starts the process again on the same port with the same dir and config (after [`Server::kill`] or
    /// [`Server::stop`]; stops it first if it still runs).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        match self.spawn_and_wait()? {
            Ready::Yes => Ok(()),
            Ready::PortTaken => {
                Err(self.start_failed(format!("port {} is taken by another process", self.port)))
            }
        }
    }

    /// The `INFO <section>` text.
    pub fn info(&self, section: &str) -> Result<String, Error> {
        let mut con = self.try_client()?;
        redis::cmd("INFO")
            .arg(section)
            .query(&mut con)
            .ctx(|| format!("INFO {section} on {}", self.describe()))
    }

    /// One field of `INFO <section>` (e.g. `info_field("replication", "role")`).
    pub fn info_field(&self, section: &str, field: &str) -> Result<Option<String>, Error> {
        Ok(info_value(&self.info(section)?, field))
    }

    fn kind(&self) -> &'static str {
        match (self.opts.sentinel, self.opts.version.family()) {
            (true, crate::Family::Valkey) => "valkey-sentinel",
            (true, _) => "redis-sentinel",
            (false, crate::Family::Valkey) => "valkey-server",
            (false, _) => "redis-server",
        }
    }

    /// "redis-server 7.0 on 127.0.0.1:1234" ("valkey-server valkey-9.1 on ..." for Valkey).
    pub fn describe(&self) -> String {
        format!("{} {} on {}", self.kind(), self.opts.version, self.addr())
    }

    fn start_failed(&self, reason: String) -> Error {
        Error::StartFailed {
            what: self.describe(),
            reason,
            log_tail: self.log_tail(LOG_TAIL_LINES),
        }
    }

    fn write_config(&self) -> Result<(), Error> {
        let o = &self.opts;
        let dir = self.dir.path();
        let mut c = String::new();
        let mut line = |k: &str, v: &str| {
            c.push_str(k);
            c.push(' ');
            c.push_str(v);
            c.push('\n');
        };
        let dir_s = dir.to_string_lossy();
        line("port", &self.port.to_string());
        line("bind", HOST);
        line("protected-mode", "no");
        line("daemonize", "no");
        line("dir", &quote(&dir_s));
        line("logfile", &quote(&dir.join(LOG_FILE).to_string_lossy()));
        let user_sets = |name: &str| o.config.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !o.sentinel {
            if !user_sets("save") {
                line("save", "\"\"");
            }
            if !user_sets("appendonly") {
                line("appendonly", "no");
            }
            line("repl-diskless-sync-delay", "0");
            if o.version.is_7() {
                line("enable-debug-command", "yes");
            }
            if o.cluster {
                line("cluster-enabled", "yes");
                line("cluster-config-file", "nodes.conf");
                line("cluster-node-timeout", "3000");
                line("cluster-announce-ip", HOST);
            }
        }
        if let Some(tls_port) = self.tls_port {
            line("tls-port", &tls_port.to_string());
            for (k, f) in [
                ("tls-cert-file", crate::tls::CERT_FILE),
                ("tls-key-file", crate::tls::KEY_FILE),
                ("tls-ca-cert-file", crate::tls::CA_FILE),
            ] {
                line(k, &quote(&dir.join(f).to_string_lossy()));
            }
            line("tls-auth-clients", "no");
            if o.cluster && !o.sentinel {
                // The bus listens on the TLS port + 10000 (checked free when the port was picked).
                line("tls-cluster", "yes");
                line("tls-replication", "yes");
                line(
                    "cluster-port",
                    &(u32::from(tls_port) + u32::from(crate::port::CLUSTER_BUS_OFFSET)).to_string(),
                );
            }
        }
        if let Some(p) = &o.password {
            line("requirepass", &quote(p));
        }
        for u in &o.acl_users {
            line(
                "user",
                &format!("{} on >{} {}", u.name, u.password, u.rules),
            );
        }
        for (k, v) in &o.config {
            line(k, v);
        }
        let path = dir.join(CONFIG_FILE);
        let mut f = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        f.write_all(c.as_bytes())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(())
    }

    fn spawn_and_wait(&mut self) -> Result<Ready, Error> {
        let (program, sentinel_flag) = if self.opts.sentinel {
            sentinel_binary(self.opts.version)?
        } else {
            (server_binary(self.opts.version)?, false)
        };
        // Only what this attempt logs counts when deciding why it failed.
        let log_start = fs::metadata(self.dir.path().join(LOG_FILE))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let stdout_path = self.dir.path().join(STDOUT_FILE);
        let out =
            File::create(&stdout_path).map_err(|e| Error::io("creating the stdout log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("creating the stdout log", e))?;
        let mut cmd = Command::new(&program);
        cmd.arg(self.config_path());
        if sentinel_flag {
            cmd.arg("--sentinel");
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
        let pid = child.id();
        crate::reaper::register(pid);
        self.child = Some(child);
        let info = self.connection_info();
        let timeout = self.opts.start_timeout;
        let mut exited = false;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("no child".into()))?;
        let ready = wait_for(timeout, "redis-server to answer", || {
            if !matches!(child.try_wait(), Ok(None)) {
                exited = true;
                return Some(false);
            }
            let mut con = connect(
                &info,
                Duration::from_millis(300),
                Duration::from_millis(1000),
            )
            .ok()?;
            let text: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
            // Another process may hold this port: only our own pid counts as ready.
            (info_value(&text, "process_id")?.parse::<u32>().ok()? == pid).then_some(true)
        });
        match ready {
            Ok(true) => Ok(Ready::Yes),
            Ok(false) | Err(_) => {
                let timed_out = !exited;
                self.kill();
                let log = self.log();
                let log = log.get(log_start..).unwrap_or(&log);
                if log.contains("Address already in use")
                    || log.contains("Could not create server TCP listening socket")
                    || log.contains("Could not create server TLS listening socket")
                {
                    Ok(Ready::PortTaken)
                } else if timed_out {
                    Err(self.start_failed(format!("did not answer within {timeout:?}")))
                } else {
                    Err(self.start_failed("the process exited".into()))
                }
            }
        }
    }
}

fn tcp_info(port: u16) -> ConnectionInfo {
    redis::ConnectionAddr::Tcp(HOST.to_string(), port)
        .into_connection_info()
        .expect("converting a ConnectionAddr into ConnectionInfo never fails")
}

/// Connects with timeouts.
pub(crate) fn connect(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(info.clone())?;
    let con = client.get_connection_with_timeout(connect_timeout)?;
    con.set_read_timeout(Some(io_timeout))?;
    con.set_write_timeout(Some(io_timeout))?;
    Ok(con)
}

/// The value of `field:` in an INFO text.
pub(crate) fn info_value(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ferry-testkit: last lines of the log of {} (dir {}) ---\n{}\n--- end of log ---",
                self.describe(),
                self.dir.path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.stop();
    }
}
