//! [`SentinelPoolOptions`]: everything the pool can be told, with JedisSentinelPool's defaults.

use std::time::Duration;

use ferry_resp::{ConnectOptions, TlsOptions};

use crate::addr::{Addr, AddressMap};

/// Options for [`crate::SentinelPool`]. Start from [`SentinelPoolOptions::new`] and change what you
/// need, either through the public fields or the chained setters.
///
/// Connections to sentinels and to data nodes (master, replicas) are made from two separate
/// [`ConnectOptions`] templates, so auth (password or ACL user), TLS, protocol and timeouts can
/// differ between the two; the template's `host`/`port` are replaced by the address being dialled.
///
/// `Debug` never prints a password (the templates redact it).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SentinelPoolOptions {
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// The seed sentinels, asked in this order. Never dropped; sentinels learned from
    /// `SENTINEL sentinels <name>` are added after them.
    pub sentinels: Vec<Addr>,
    /// Template for connections to sentinels (auth, TLS, timeouts). Its `db` should stay 0. Reads
    /// are bounded by `sentinel_timeout` (queries) and `listener_ping_interval` (listeners); its
    /// `tcp_keepalive` defaults to [`SentinelPoolOptions::DEFAULT_TCP_KEEPALIVE`].
    pub sentinel_connect: ConnectOptions,
    /// Template for connections to the master and replicas. By default its `read_timeout` is
    /// [`SentinelPoolOptions::DEFAULT_READ_TIMEOUT`] (a call to a master that froze or was cut off
    /// fails after that long instead of hanging; raise it, or set `None`, for blocking commands
    /// such as `BLPOP` or a long `WAIT`) and its `tcp_keepalive` is
    /// [`SentinelPoolOptions::DEFAULT_TCP_KEEPALIVE`] (idle pooled connections to a vanished host are
    /// found dead by the kernel).
    pub data_connect: ConnectOptions,
    /// Most connections that may exist at once, borrowed plus idle (Jedis `maxTotal`, default 8).
    pub max_total: usize,
    /// Most idle connections kept (Jedis `maxIdle`, default 8).
    pub max_idle: usize,
    /// Idle connections kept ready by the background task (Jedis `minIdle`, default 0).
    pub min_idle: usize,
    /// How long a borrow waits for a free connection when the pool is exhausted; `None` waits
    /// forever (Jedis `maxWait` of -1, the default).
    pub max_wait: Option<Duration>,
    /// Whether an exhausted pool makes a borrow wait (true, the default) or fail at once.
    pub block_when_exhausted: bool,
    /// Whether an idle connection is checked with PING before it is handed out (default false).
    pub test_on_borrow: bool,
    /// Deadline for one exchange with one sentinel (connect plus reply); short, so a dead sentinel
    /// does not hold up the next one (default 1 s).
    pub sentinel_timeout: Duration,
    /// How long a resolve keeps waiting for the reported server to confirm it is a master (or for a
    /// failover in progress to finish) before giving up with [`crate::Error::NotMaster`] (default 10 s).
    pub resolve_timeout: Duration,
    /// Pause between two resolve attempts while waiting (default 100 ms).
    pub resolve_retry_delay: Duration,
    /// Interval of the safety-net poll of the sentinels (default 2 s).
    pub poll_interval: Duration,
    /// Base delay before a lost sentinel listener reconnects; doubled per failed attempt up to
    /// `listener_retry_max`, with ±20% jitter (default 5000 ms, as Jedis).
    pub listener_retry_base: Duration,
    /// Upper bound of the listener's reconnect delay (default 60 s).
    pub listener_retry_max: Duration,
    /// A listener that hears nothing for this long sends PING; no answer within the same time
    /// again counts as a lost sentinel (default 10 s).
    pub listener_ping_interval: Duration,
    /// How long a master whose failover has started (or that was just switched away from) is
    /// treated as demoted even if a lagging sentinel still names it and it still answers ROLE as
    /// master (default 30 s). The sentinel's `+switch-master` naming it as new ends this at once, and
    /// so does a sentinel naming it with a config epoch higher than the configuration the pool follows
    /// (a later failover chose it again).
    pub demoted_hold: Duration,
    /// Maps announced addresses to reachable ones (NAT, containers).
    pub address_map: AddressMap,
    /// Whether [`crate::SentinelPool::replica`] falls back to the master when no replica is usable.
    pub replica_fallback_to_master: bool,
    /// Whether sentinels are learned from `SENTINEL sentinels <name>` (default true).
    pub discover_sentinels: bool,
    /// Capacity of the event broadcast channel (default 256).
    pub event_capacity: usize,
}

impl SentinelPoolOptions {
    /// The default read timeout of data connections: 2 s, as Jedis's `soTimeout`.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);
    /// The default TCP keepalive of data and sentinel connections: probes after 15 s idle, every
    /// 15 s, three of them (a dead peer is noticed within about a minute).
    pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(15);

    /// Options for `master_name` monitored by the given seed sentinels, with the defaults above and
    /// plain (no auth, no TLS) connections.
    pub fn new<I, A>(master_name: impl Into<String>, sentinels: I) -> SentinelPoolOptions
    where
        I: IntoIterator<Item = A>,
        A: Into<Addr>,
    {
        let mut sentinel_connect = ConnectOptions::new("127.0.0.1", 26379);
        sentinel_connect.db = 0;
        sentinel_connect.tcp_keepalive = Some(Self::DEFAULT_TCP_KEEPALIVE);
        let mut data_connect = ConnectOptions::new("127.0.0.1", 6379);
        data_connect.read_timeout = Some(Self::DEFAULT_READ_TIMEOUT);
        data_connect.tcp_keepalive = Some(Self::DEFAULT_TCP_KEEPALIVE);
        SentinelPoolOptions {
            master_name: master_name.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            sentinel_connect,
            data_connect,
            max_total: 8,
            max_idle: 8,
            min_idle: 0,
            max_wait: None,
            block_when_exhausted: true,
            test_on_borrow: false,
            sentinel_timeout: Duration::from_millis(1000),
            resolve_timeout: Duration::from_secs(10),
            resolve_retry_delay: Duration::from_millis(100),
            poll_interval: Duration::from_secs(2),
            listener_retry_base: Duration::from_millis(5000),
            listener_retry_max: Duration::from_secs(60),
            listener_ping_interval: Duration::from_secs(10),
            demoted_hold: Duration::from_secs(30),
            address_map: AddressMap::new(),
            replica_fallback_to_master: false,
            discover_sentinels: true,
            event_capacity: 256,
        }
    }

    /// Sets the read timeout of data connections (`None` waits for ever); see
    /// [`SentinelPoolOptions::data_connect`].
    pub fn data_read_timeout(mut self, d: Option<Duration>) -> Self {
        self.data_connect.read_timeout = d;
        self
    }

    /// Sets the TCP keepalive of data and sentinel connections (`None` turns it off).
    pub fn tcp_keepalive(mut self, d: Option<Duration>) -> Self {
        self.data_connect.tcp_keepalive = d;
        self.sentinel_connect.tcp_keepalive = d;
        self
    }

    /// Sets `demoted_hold`.
    pub fn demoted_hold(mut self, d: Duration) -> Self {
        self.demoted_hold = d;
        self
    }

    /// Sets `max_total`.
    pub fn max_total(mut self, n: usize) -> Self {
        self.max_total = n;
        self
    }

    /// Sets `max_idle`.
    pub fn max_idle(mut self, n: usize) -> Self {
        self.max_idle = n;
        self
    }

    /// Sets `min_idle`.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.min_idle = n;
        self
    }

    /// Sets `max_wait` (`None` = wait forever).
    pub fn max_wait(mut self, d: Option<Duration>) -> Self {
        self.max_wait = d;
        self
    }

    /// Sets `block_when_exhausted`.
    pub fn block_when_exhausted(mut self, b: bool) -> Self {
        self.block_when_exhausted = b;
        self
    }

    /// Sets `test_on_borrow`.
    pub fn test_on_borrow(mut self, b: bool) -> Self {
        self.test_on_borrow = b;
        self
    }

    /// Sets `poll_interval`.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Sets `listener_retry_base`.
    pub fn listener_retry_base(mut self, d: Duration) -> Self {
        self.listener_retry_base = d;
        self
    }

    /// Sets `resolve_timeout`.
    pub fn resolve_timeout(mut self, d: Duration) -> Self {
        self.resolve_timeout = d;
        self
    }

    /// Sets `sentinel_timeout`.
    pub fn sentinel_timeout(mut self, d: Duration) -> Self {
        self.sentinel_timeout = d;
        self
    }

    /// Authenticates to sentinels with `AUTH [username] password` (`requirepass` or an ACL user).
    pub fn sentinel_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.sentinel_connect.username = username.map(str::to_string);
        self.sentinel_connect.password = Some(crate::password(password));
        self
    }

    /// Authenticates to the master and replicas with `AUTH [username] password`.
    pub fn data_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.data_connect.username = username.map(str::to_string);
        self.data_connect.password = Some(crate::password(password));
        self
    }

    /// Uses TLS for sentinel connections.
    pub fn sentinel_tls(mut self, tls: TlsOptions) -> Self {
        self.sentinel_connect.tls = Some(tls);
        self
    }

    /// Uses TLS for master and replica connections.
    pub fn data_tls(mut self, tls: TlsOptions) -> Self {
        self.data_connect.tls = Some(tls);
        self
    }

    /// Adds a NAT entry: the sentinels' `announced` address is reached at `reachable`.
    pub fn map_address(mut self, announced: Addr, reachable: Addr) -> Self {
        self.address_map.insert(announced, reachable);
        self
    }

    /// Sets `replica_fallback_to_master`.
    pub fn replica_fallback_to_master(mut self, b: bool) -> Self {
        self.replica_fallback_to_master = b;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::InvalidOptions(m.to_string()));
        if self.sentinels.is_empty() {
            return bad("at least one sentinel address is needed");
        }
        if self.master_name.is_empty() {
            return bad("master_name is empty");
        }
        if self.max_total == 0 {
            return bad("max_total must be at least 1");
        }
        if self.min_idle > self.max_total {
            return bad("min_idle cannot exceed max_total");
        }
        Ok(())
    }

    /// The template for `addr` (a sentinel): host/port replaced, reads bounded by `sentinel_timeout`.
    pub(crate) fn sentinel_opts(
        &self,
        addr: &Addr,
        read_timeout: Option<Duration>,
    ) -> ConnectOptions {
        let mut o = self.sentinel_connect.clone();
        o.host = addr.host.clone();
        o.port = addr.port;
        o.connect_timeout = self.sentinel_timeout;
        o.read_timeout = read_timeout;
        o
    }

    /// The template for `addr` (master or replica).
    pub(crate) fn data_opts(&self, addr: &Addr) -> ConnectOptions {
        let mut o = self.data_connect.clone();
        o.host = addr.host.clone();
        o.port = addr.port;
        o
    }
}
