//! A Sentinel-managed group: one master, replicas, and Sentinels watching it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::{link_up, master_auth_config, online_replicas, role, TOPOLOGY_DEADLINE};
use crate::error::RedisContext;
use crate::server::quote;
use crate::{wait_for, wait_until, AclUser, Error, Server, ServerOptions, Target, Version};

/// How to build a [`SentinelGroup`]. Defaults: 7.0, `mymaster`, 2 replicas, 3 Sentinels, quorum 2,
/// down-after 1500 ms, failover-timeout 5000 ms, no passwords.
#[derive(Clone)]
pub struct SentinelOptions {
    /// Redis version of every process.
    pub version: Version,
    /// The name the Sentinels monitor the master under.
    pub master_name: String,
    /// Number of replicas.
    pub replicas: usize,
    /// Number of Sentinels.
    pub sentinels: usize,
    /// Sentinels that must agree the master is down.
    pub quorum: u32,
    /// `sentinel down-after-milliseconds`.
    pub down_after: Duration,
    /// `sentinel failover-timeout`.
    pub failover_timeout: Duration,
    /// `requirepass` of the data servers (the `default` user).
    pub master_password: Option<String>,
    /// An ACL user on the data servers; when set, Sentinels (`auth-user`/`auth-pass`), replicas
    /// (`masteruser`/`masterauth`) and [`Server::client`] authenticate as it.
    pub master_user: Option<AclUser>,
    /// `requirepass` of the Sentinels (also `sentinel sentinel-pass`, so they reach each other).
    pub sentinel_password: Option<String>,
    /// An ACL user on the Sentinels; when set, Sentinels reach each other as it (`sentinel-user`/`sentinel-pass`)
    /// and [`Server::client`] / [`Server::url`] of a Sentinel use it.
    pub sentinel_user: Option<AclUser>,
    /// Every process also listens with TLS ([`ServerOptions::tls`], 7.0 only), and replication, Sentinel ->
    /// server and Sentinel -> Sentinel links run over TLS (`tls-replication yes`). The Sentinels then monitor
    /// and report the TLS ports (e.g. in `SENTINEL GET-MASTER-ADDR-BY-NAME`); the plain ports stay open for the
    /// testkit, and [`SentinelGroup::server_by_addr`] accepts either address.
    pub tls: bool,
}

impl Default for SentinelOptions {
    fn default() -> Self {
        SentinelOptions {
            version: Version::V7_0,
            master_name: "mymaster".into(),
            replicas: 2,
            sentinels: 3,
            quorum: 2,
            down_after: Duration::from_millis(1500),
            failover_timeout: Duration::from_millis(5000),
            master_password: None,
            master_user: None,
            sentinel_password: None,
            sentinel_user: None,
            tls: false,
        }
    }
}

impl fmt::Debug for SentinelOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelOptions")
            .field("version", &self.version)
            .field("master_name", &self.master_name)
            .field("replicas", &self.replicas)
            .field("sentinels", &self.sentinels)
            .field("quorum", &self.quorum)
            .field("down_after", &self.down_after)
            .field("failover_timeout", &self.failover_timeout)
            .field(
                "master_password",
                &self.master_password.as_ref().map(|_| "<redacted>"),
            )
            .field("master_user", &self.master_user)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "<redacted>"),
            )
            .field("sentinel_user", &self.sentinel_user)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SentinelOptions {
    /// Defaults for `version`.
    pub fn new(version: Version) -> Self {
        SentinelOptions {
            version,
            ..Default::default()
        }
    }

    /// Sets the data servers' `requirepass`.
    pub fn master_password(mut self, p: impl Into<String>) -> Self {
        self.master_password = Some(p.into());
        self
    }

    /// Sets the ACL user everyone uses on the data servers.
    pub fn master_user(mut self, u: AclUser) -> Self {
        self.master_user = Some(u);
        self
    }

    /// Sets the Sentinels' password.
    pub fn sentinel_password(mut self, p: impl Into<String>) -> Self {
        self.sentinel_password = Some(p.into());
        self
    }

    /// Sets an ACL user on the Sentinels.
    pub fn sentinel_user(mut self, u: AclUser) -> Self {
        self.sentinel_user = Some(u);
        self
    }

    /// Turns TLS on or off for every process (see [`SentinelOptions::tls`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    fn data_options(&self) -> ServerOptions {
        let mut o = ServerOptions::new(self.version).tls(self.tls);
        if self.tls {
            o.config.push(("tls-replication".into(), "yes".into()));
        }
        o.password = self.master_password.clone();
        if let Some(u) = &self.master_user {
            o.acl_users.push(u.clone());
            o.client_user = Some(u.name.clone());
        }
        o
    }
}

/// One master, its replicas and the Sentinels monitoring it, all agreeing when [`SentinelGroup::start`] returns.
///
/// `master` and `replicas` are the roles at start; after a failover ask [`SentinelGroup::current_master_addr`]
/// and find the server with [`SentinelGroup::server_by_addr`].
#[derive(Debug)]
pub struct SentinelGroup {
    /// The name the master is monitored under.
    pub master_name: String,
    /// The master at start.
    pub master: Server,
    /// The replicas at start.
    pub replicas: Vec<Server>,
    /// The Sentinels.
    pub sentinels: Vec<Server>,
    /// The options the group was built with.
    pub options: SentinelOptions,
}

impl SentinelGroup {
    /// Starts master, replicas and Sentinels and waits until every Sentinel knows every replica (connected) and
    /// every other Sentinel.
    pub fn start(opts: SentinelOptions) -> Result<SentinelGroup, Error> {
        if opts.quorum == 0 || opts.sentinels == 0 {
            return Err(Error::InvalidArgument(
                "a sentinel group needs at least one sentinel and quorum >= 1".into(),
            ));
        }
        let mut data = opts.data_options();
        // Every data server gets the master credentials: after a failover the old master becomes a replica.
        let auth = master_auth_config(&data);
        data.config.extend(auth);
        let master = Server::start(data.clone())?;
        let mut replicas = Vec::with_capacity(opts.replicas);
        for _ in 0..opts.replicas {
            let mut r = data.clone();
            r.config.push((
                "replicaof".into(),
                format!("{} {}", master.host(), replication_port(&master)),
            ));
            replicas.push(Server::start(r)?);
        }
        let n = replicas.len();
        wait_until(
            TOPOLOGY_DEADLINE,
            "the sentinel group's replicas to be online",
            || online_replicas(&master) == n && replicas.iter().all(link_up),
        )?;

        let mut sentinels = Vec::with_capacity(opts.sentinels);
        for _ in 0..opts.sentinels {
            sentinels.push(Server::start(sentinel_options(&opts, &master))?);
        }
        let group = SentinelGroup {
            master_name: opts.master_name.clone(),
            master,
            replicas,
            sentinels,
            options: opts,
        };
        group.wait_converged(TOPOLOGY_DEADLINE)?;
        Ok(group)
    }

    /// Waits until every Sentinel sees the same master, every replica connected, and all other Sentinels.
    pub fn wait_converged(&self, deadline: Duration) -> Result<(), Error> {
        let replicas = self.replicas.len();
        let others = self.sentinels.len() - 1;
        wait_until(
            deadline,
            "every sentinel to know the master, its replicas and the other sentinels",
            || {
                let mut master_addr = None;
                for s in &self.sentinels {
                    let Ok(m) = self.sentinel_master_state(s) else {
                        return false;
                    };
                    let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("");
                    if get("flags") != "master"
                        || get("num-slaves") != replicas.to_string()
                        || get("num-other-sentinels") != others.to_string()
                    {
                        return false;
                    }
                    let addr = format!("{}:{}", get("ip"), get("port"));
                    if master_addr.get_or_insert(addr.clone()) != &addr {
                        return false;
                    }
                    let Ok(rs) = self.sentinel_replicas_state(s) else {
                        return false;
                    };
                    if rs.len() != replicas
                        || !rs
                            .iter()
                            .all(|r| r.get("flags").is_some_and(|f| f == "slave"))
                    {
                        return false;
                    }
                }
                true
            },
        )
    }

    /// `SENTINEL MASTER <name>` as a field map, asked of `sentinel`.
    pub fn sentinel_master_state(
        &self,
        sentinel: &Server,
    ) -> Result<HashMap<String, String>, Error> {
        let mut con = sentinel.try_client()?;
        let v: HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&self.master_name)
            .query(&mut con)
            .ctx(|| format!("SENTINEL MASTER on {}", sentinel.addr()))?;
        Ok(v)
    }

    /// `SENTINEL REPLICAS <name>` as field maps, asked of `sentinel`.
    pub fn sentinel_replicas_state(
        &self,
        sentinel: &Server,
    ) -> Result<Vec<HashMap<String, String>>, Error> {
        let mut con = sentinel.try_client()?;
        redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(&self.master_name)
            .query(&mut con)
            .ctx(|| format!("SENTINEL REPLICAS on {}", sentinel.addr()))
    }

    /// The master address (`127.0.0.1:port`) according to the first Sentinel that answers.
    pub fn current_master_addr(&self) -> Result<String, Error> {
        let mut last = Error::InvalidArgument("no sentinels".into());
        for s in &self.sentinels {
            match self.master_addr_from(s) {
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn master_addr_from(&self, sentinel: &Server) -> Result<String, Error> {
        let mut con = sentinel.try_client()?;
        let (host, port): (String, String) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query(&mut con)
            .ctx(|| format!("SENTINEL GET-MASTER-ADDR-BY-NAME on {}", sentinel.addr()))?;
        Ok(format!("{host}:{port}"))
    }

    /// The data server (master or replica) listening on `addr`.
    pub fn server_by_addr(&self, addr: &str) -> Option<&Server> {
        std::iter::once(&self.master)
            .chain(self.replicas.iter())
            .find(|s| s.addr() == addr || s.tls_addr().is_some_and(|a| a == addr))
    }

    /// The data server that is master now according to the Sentinels.
    pub fn current_master(&self) -> Result<&Server, Error> {
        let addr = self.current_master_addr()?;
        self.server_by_addr(&addr).ok_or_else(|| {
            Error::unexpected(
                "finding the current master",
                format!("{addr} is not one of the group's servers"),
            )
        })
    }

    /// Sends `SENTINEL FAILOVER` to the first Sentinel and waits as [`SentinelGroup::wait_master_changed`] does.
    /// Returns the new master's address.
    pub fn failover(&self) -> Result<String, Error> {
        let old = self.current_master_addr()?;
        let first = self
            .sentinels
            .first()
            .ok_or_else(|| Error::InvalidArgument("no sentinels".into()))?;
        let mut con = first.try_client()?;
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&self.master_name)
            .exec(&mut con)
            .ctx(|| "SENTINEL FAILOVER".into())?;
        self.wait_master_changed(&old, TOPOLOGY_DEADLINE)
    }

    /// Waits until every Sentinel names a master other than `old`, that server answers `ROLE` as master, and
    /// every running data server that is a replica replicates from it with its link up. Returns the new
    /// master's address.
    ///
    /// A demoted master that is still running is not waited for: Sentinel turns it into a replica only some
    /// seconds later (about 10 s). [`SentinelGroup::wait_all_replicating`] waits for that too; call it before
    /// failing over again, or Sentinel may promote the demoted master, which lacks the writes made since.
    pub fn wait_master_changed(&self, old: &str, deadline: Duration) -> Result<String, Error> {
        let new = wait_for(
            deadline,
            &format!("every sentinel to name a master other than {old}"),
            || {
                let addrs: Vec<String> = self
                    .sentinels
                    .iter()
                    .map(|s| self.master_addr_from(s).ok())
                    .collect::<Option<_>>()?;
                let first = addrs.first()?.clone();
                (first != old && addrs.iter().all(|a| *a == first)).then_some(first)
            },
        )?;
        let master = self.server_by_addr(&new).ok_or_else(|| {
            Error::unexpected(
                "failover",
                format!("new master {new} is not one of the group's servers"),
            )
        })?;
        wait_until(deadline, &format!("{new} to act as master"), || {
            role(master).is_ok_and(|r| r == "master")
        })?;
        self.wait_replicas_follow(master, false, deadline)?;
        Ok(new)
    }

    /// Waits until every running data server other than the current master, including a demoted old master,
    /// replicates from the current master with its link up.
    pub fn wait_all_replicating(&self, deadline: Duration) -> Result<(), Error> {
        let master = self.current_master()?;
        self.wait_replicas_follow(master, true, deadline)
    }

    fn wait_replicas_follow(
        &self,
        master: &Server,
        include_masters: bool,
        deadline: Duration,
    ) -> Result<(), Error> {
        let addr = master.addr();
        let port = format!("master_port:{}", replication_port(master));
        wait_until(
            deadline,
            &format!("the data servers to replicate from {addr}"),
            || {
                std::iter::once(&self.master)
                    .chain(self.replicas.iter())
                    .filter(|s| s.addr() != addr)
                    .all(|s| {
                        if s.try_client().is_err() {
                            return true; // a killed server is not expected to follow
                        }
                        s.info("replication").is_ok_and(|t| {
                            if t.contains("role:master") {
                                return !include_masters;
                            }
                            t.contains(&port) && t.contains("master_link_status:up")
                        })
                    })
            },
        )
    }

    /// The current master as a [`Target`].
    pub fn target(&self) -> Result<Target, Error> {
        Ok(Target::from(self.current_master()?))
    }
}

impl Drop for SentinelGroup {
    /// Stops the Sentinels before the data servers, so tearing down never starts a failover.
    fn drop(&mut self) {
        for s in &mut self.sentinels {
            s.stop();
        }
    }
}

/// The port replicas and Sentinels use to reach `server`: its TLS port when it has one.
fn replication_port(server: &Server) -> u16 {
    server.tls_port().unwrap_or(server.port())
}

fn sentinel_options(opts: &SentinelOptions, master: &Server) -> ServerOptions {
    let mut s = ServerOptions::new(opts.version).sentinel().tls(opts.tls);
    if opts.tls {
        s.config.push(("tls-replication".into(), "yes".into()));
    }
    s.password = opts.sentinel_password.clone();
    let name = &opts.master_name;
    let mut cfg = |k: &str, v: String| s.config.push((k.to_string(), v));
    cfg(
        "sentinel",
        format!(
            "monitor {name} {} {} {}",
            master.host(),
            replication_port(master),
            opts.quorum
        ),
    );
    cfg(
        "sentinel",
        format!(
            "down-after-milliseconds {name} {}",
            opts.down_after.as_millis()
        ),
    );
    cfg(
        "sentinel",
        format!(
            "failover-timeout {name} {}",
            opts.failover_timeout.as_millis()
        ),
    );
    cfg("sentinel", format!("parallel-syncs {name} 1"));
    cfg("sentinel", "announce-ip 127.0.0.1".to_string());
    if let Some(u) = &opts.master_user {
        cfg("sentinel", format!("auth-user {name} {}", quote(&u.name)));
        cfg(
            "sentinel",
            format!("auth-pass {name} {}", quote(&u.password)),
        );
    } else if let Some(p) = &opts.master_password {
        cfg("sentinel", format!("auth-pass {name} {}", quote(p)));
    }
    if let Some(u) = &opts.sentinel_user {
        cfg("sentinel", format!("sentinel-user {}", quote(&u.name)));
        cfg("sentinel", format!("sentinel-pass {}", quote(&u.password)));
    } else if let Some(p) = &opts.sentinel_password {
        cfg("sentinel", format!("sentinel-pass {}", quote(p)));
    }
    if let Some(u) = &opts.sentinel_user {
        s.acl_users.push(u.clone());
        s.client_user = Some(u.name.clone());
    }
    s
}
