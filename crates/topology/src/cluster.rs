//! [`ClusterClient`]: an async Redis Cluster client that routes each command to the master of its
//! slot over one multiplexed connection per node, follows MOVED and ASK, retries TRYAGAIN /
//! CLUSTERDOWN / LOADING with a bounded backoff, never sends a command twice unless that is safe,
//! and refreshes its [`SlotMap`] in the background, one refresh at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferry_resp::{encode_command, ConnectOptions, Connection, Frame};

use crate::dedicated::{DedicatedConnection, IdleConnections};
use crate::error::{Error, SlotLabel};
use crate::keys::{CommandInfo, CommandTable};
use crate::mux::{Mux, SendError};
use crate::slotmap::{NodeAddr, SlotMap};
use crate::split::split_by_slot;

/// Settings of a [`ClusterClient`]. Build with [`ClusterOptions::new`] and change fields after.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Connection settings used for every node (auth, TLS, protocol, timeouts); `host` and `port` are
    /// replaced by each node's address. The seed is `connect.host:connect.port` plus [`Self::seeds`].
    ///
    /// `connect.read_timeout` bounds how long a node may owe replies without sending any (on the
    /// shared connection: then every request waiting on it ends with an unknown outcome);
    /// [`ClusterOptions::new`] sets [`ClusterOptions::DEFAULT_READ_TIMEOUT`] when it is `None`.
    /// Blocking commands (`BLPOP`, ...) wait as long as the server blocks them, and
    /// [`ClusterClient::call_and_wait`] adds its `WAIT` timeout. `connect.tcp_keepalive` defaults to
    /// [`ClusterOptions::DEFAULT_TCP_KEEPALIVE`] the same way.
    pub connect: ConnectOptions,
    /// Further seed nodes tried when the first one does not answer.
    pub seeds: Vec<NodeAddr>,
    /// Most MOVED / ASK redirects followed for one command.
    pub max_redirects: u32,
    /// Most retries for one command after TRYAGAIN, CLUSTERDOWN, LOADING, READONLY, a connection that
    /// could not be made, or (when resending is safe) a lost connection.
    pub max_retries: u32,
    /// First backoff delay; it doubles on each retry up to [`Self::max_retry_delay`].
    pub retry_delay: Duration,
    /// Longest backoff delay.
    pub max_retry_delay: Duration,
    /// Shortest time between two topology refreshes.
    pub min_refresh_interval: Duration,
    /// How long a node that could not be connected to is remembered as failed: requests routed to it
    /// fail at once (as not sent, so they are retried after the next map refresh) instead of each
    /// trying to connect again.
    pub failed_node_ttl: Duration,
    /// Whether a command that was sent and whose connection then broke or timed out before the reply
    /// is sent again. `false` (the default): it is not, and the caller gets an error for which
    /// [`Error::is_unknown_outcome`] is true, since the command may or may not have run (an `INCR`
    /// must not count twice). Commands the server flags `readonly` are always resent. `true` gives
    /// at-least-once delivery, right only for idempotent writes (`SET`, `RESTORE ... REPLACE`,
    /// `DEL`). The same rule applies to [`ClusterClient::pipeline`].
    pub resend_after_connection_loss: bool,
    /// Most idle dedicated connections kept per node (for blocking commands, `WAIT` and
    /// transactions).
    pub max_idle_dedicated: usize,
}

impl ClusterOptions {
    /// The default read timeout of node connections (2 s).
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);
    /// The default TCP keepalive of node connections (probes after 15 s idle).
    pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(15);

    /// Defaults for a cluster reached through `connect`: 16 redirects, 16 retries from 20 ms to 1 s,
    /// at most one refresh per 200 ms, failed nodes remembered for 1 s, no resend after a connection
    /// loss, 4 idle dedicated connections per node; read timeout and TCP keepalive as above when
    /// `connect` has none.
    pub fn new(mut connect: ConnectOptions) -> ClusterOptions {
        if connect.read_timeout.is_none() {
            connect.read_timeout = Some(Self::DEFAULT_READ_TIMEOUT);
        }
        if connect.tcp_keepalive.is_none() {
            connect.tcp_keepalive = Some(Self::DEFAULT_TCP_KEEPALIVE);
        }
        ClusterOptions {
            connect,
            seeds: Vec::new(),
            max_redirects: 16,
            max_retries: 16,
            retry_delay: Duration::from_millis(20),
            max_retry_delay: Duration::from_secs(1),
            min_refresh_interval: Duration::from_millis(200),
            failed_node_ttl: Duration::from_secs(1),
            resend_after_connection_loss: false,
            max_idle_dedicated: 4,
        }
    }

    /// The connection options for `addr`.
    pub(crate) fn connect_to(&self, addr: &NodeAddr) -> ConnectOptions {
        let mut opts = self.connect.clone();
        opts.host = addr.host.clone();
        opts.port = addr.port;
        opts
    }
}

/// Counters of what the client met; see [`ClusterClient::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// MOVED redirects followed.
    pub moved: u64,
    /// ASK redirects followed.
    pub ask: u64,
    /// TRYAGAIN replies retried.
    pub tryagain: u64,
    /// CLUSTERDOWN replies retried.
    pub clusterdown: u64,
    /// LOADING replies retried.
    pub loading: u64,
    /// READONLY replies retried (a write reached a node that had just become a replica).
    pub readonly: u64,
    /// Connections lost or refused.
    pub connection_errors: u64,
    /// Topology refreshes done.
    pub refreshes: u64,
    /// Commands whose connection was lost after they were sent, reported as an unknown outcome.
    pub unknown_outcomes: u64,
    /// Commands sent again after their connection was lost (read-only ones, or all of them with
    /// `resend_after_connection_loss`).
    pub resent: u64,
}

#[derive(Default)]
struct Counters {
    moved: AtomicU64,
    ask: AtomicU64,
    tryagain: AtomicU64,
    clusterdown: AtomicU64,
    loading: AtomicU64,
    readonly: AtomicU64,
    connection_errors: AtomicU64,
    refreshes: AtomicU64,
    unknown_outcomes: AtomicU64,
    resent: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct Inner {
    pub(crate) options: ClusterOptions,
    map: RwLock<Arc<SlotMap>>,
    commands: RwLock<Arc<CommandTable>>,
    /// The shared (multiplexed) connection of each node.
    nodes: RwLock<HashMap<NodeAddr, Mux>>,
    /// One connect at a time per node.
    connecting: Mutex<HashMap<NodeAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// Nodes a connect failed to, with when and why.
    failed: Mutex<HashMap<NodeAddr, (Instant, String)>>,
    /// Idle dedicated connections per node.
    pub(crate) dedicated: IdleConnections,
    /// One refresh at a time.
    refresh_lock: tokio::sync::Mutex<()>,
    /// A background refresh is running (or being started).
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An async Redis Cluster client. Cheap to clone: clones share connections, map and counters.
///
/// - **Shared connections.** Each node has one connection that every caller uses at once: requests
///   are written as they come and replies are matched to them in order (like redis-rs's multiplexed
///   connection), so callers never wait for each other's round trips. A caller that gives up (its
///   future dropped) leaves the connection in step.
/// - **Dedicated connections** for what would hold a shared one: blocking commands (flagged
///   `blocking` by the server, or `BLPOP`, `BRPOP`, `BLMOVE`, `BZPOPMIN`, `WAIT`, ...), the `WAIT`
///   of [`ClusterClient::call_and_wait`], and transactions ([`ClusterClient::transaction`],
///   [`ClusterClient::dedicated`] for `WATCH`). Commands that change a connection's session
///   (`MULTI`, `WATCH`, `SELECT`, `SUBSCRIBE`, ...) are refused by [`ClusterClient::call`] with
///   [`Error::Unsupported`].
/// - **At most once by default.** A command whose connection breaks after it was sent is not sent
///   again (unless the server flags it `readonly`, or
///   [`ClusterOptions::resend_after_connection_loss`] is set): the error says the outcome is unknown
///   ([`Error::is_unknown_outcome`]). Redirects, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `READONLY`
///   and connections that could not be made are retried: the command did not run.
/// - **Topology.** A MOVED reply updates the slot at once and asks for a refresh; refreshes run in
///   the background, one at a time and at most one per `min_refresh_interval`. Nodes that refused a
///   connection are remembered for `failed_node_ttl`.
///
/// Commands without keys go to the master of slot 0's shard.
#[derive(Clone)]
pub struct ClusterClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("map", &self.slot_map())
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a redirect or retryable reply asks the client to do.
enum Reply {
    Done(Frame),
    Moved(u16, NodeAddr),
    Ask(NodeAddr),
    Retry(&'static str),
    Fail(String, String),
}

fn classify(frame: Frame) -> Reply {
    let Frame::Error(line) = &frame else {
        return Reply::Done(frame);
    };
    let text = String::from_utf8_lossy(line).into_owned();
    let (code, message) = match text.split_once(' ') {
        Some((c, m)) => (c.to_owned(), m.trim().to_owned()),
        None => (text.clone(), String::new()),
    };
    let redirect = || -> Option<(u16, NodeAddr)> {
        let (slot, addr) = message.split_once(' ')?;
        Some((slot.parse().ok()?, NodeAddr::parse(addr.trim())?))
    };
    match code.as_str() {
        "MOVED" => match redirect() {
            Some((slot, addr)) => Reply::Moved(slot, addr),
            None => Reply::Fail(code, message),
        },
        "ASK" => match redirect() {
            Some((_, addr)) => Reply::Ask(addr),
            None => Reply::Fail(code, message),
        },
        "TRYAGAIN" => Reply::Retry("TRYAGAIN"),
        "CLUSTERDOWN" => Reply::Retry("CLUSTERDOWN"),
        "LOADING" => Reply::Retry("LOADING"),
        "READONLY" => Reply::Retry("READONLY"),
        // A blocked command released because its node changed role: it did not run.
        "UNBLOCKED" => Reply::Retry("UNBLOCKED"),
        _ => Reply::Fail(code, message),
    }
}

fn command_name<A: AsRef<[u8]>>(argv: &[A]) -> String {
    argv.first()
        .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase())
        .unwrap_or_default()
}

/// Commands that block their connection until something happens, for servers whose command table
/// has no `blocking` flag (before 7.0).
const BLOCKING: &[&str] = &[
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "wait",
    "waitaof",
];

/// Commands that change the state of the connection they run on, refused on a shared one.
const SESSION: &[&str] = &[
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "select",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "monitor",
    "reset",
    "hello",
    "auth",
    "quit",
    "readonly",
    "readwrite",
    "asking",
    "sync",
    "psync",
];

/// How a command must be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// On the shared connection.
    Shared,
    /// On a dedicated connection (it blocks the connection it runs on).
    Blocking,
    /// Not through the client's shared path at all.
    Session,
}

fn is_name(info: &CommandInfo, list: &[&str]) -> bool {
    let base = info.name.split('|').next().unwrap_or_default();
    list.contains(&base)
}

/// Whether `argv` (an `XREAD` / `XREADGROUP`) has a `BLOCK` argument.
fn has_block_arg<A: AsRef<[u8]>>(argv: &[A]) -> bool {
    argv.iter()
        .any(|a| a.as_ref().eq_ignore_ascii_case(b"block"))
}

pub(crate) fn kind_of<A: AsRef<[u8]>>(info: &CommandInfo, argv: &[A]) -> Kind {
    if is_name(info, SESSION) {
        return Kind::Session;
    }
    if info.name == "client" {
        let sub = argv.get(1).map(AsRef::as_ref).unwrap_or_default();
        if sub.eq_ignore_ascii_case(b"reply") || sub.eq_ignore_ascii_case(b"tracking") {
            return Kind::Session;
        }
    }
    let stream_read = info.name == "xread" || info.name == "xreadgroup";
    if (stream_read && has_block_arg(argv))
        || (!stream_read && (info.has_flag("blocking") || is_name(info, BLOCKING)))
    {
        return Kind::Blocking;
    }
    Kind::Shared
}

/// Whether sending `info`'s command twice is harmless: the server flags it `readonly`.
pub(crate) fn is_resend_safe(info: &CommandInfo) -> bool {
    info.has_flag("readonly") && !info.has_flag("write")
}

/// Encodes `[ASKING], argv` into one buffer.
fn encode(argv: &[&[u8]], asking: bool) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + argv.iter().map(|a| a.len() + 16).sum::<usize>());
    if asking {
        encode_command(&[b"ASKING"], &mut buf);
    }
    encode_command(argv, &mut buf);
    buf.freeze()
}

/// Where one attempt was sent and how.
pub(crate) enum Via<'a> {
    /// The node's shared connection.
    Shared,
    /// A dedicated connection; `WAIT replicas timeout` follows the command when given.
    Dedicated(Option<(u32, Duration)>),
    /// The caller's transaction: `MULTI`, the commands, `EXEC`.
    Transaction(&'a [Vec<&'a [u8]>]),
}

/// One attempt's result: the command's reply (for a transaction, EXEC's) and WAIT's, if any.
type Attempt = Result<(Frame, Option<Frame>), SendError>;

impl ClusterClient {
    /// Connects to the seed node(s), loads the slot map (CLUSTER SHARDS, or CLUSTER SLOTS before 7.0)
    /// and the command table (COMMAND, fetched once and shared by all nodes).
    pub async fn connect(options: ClusterOptions) -> Result<ClusterClient, Error> {
        let inner = Inner {
            dedicated: IdleConnections::new(options.max_idle_dedicated),
            options,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            commands: RwLock::new(Arc::new(CommandTable::default())),
            nodes: RwLock::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            counters: Counters::default(),
        };
        let client = ClusterClient {
            inner: Arc::new(inner),
        };
        client.refresh().await?;
        // Fetch the command table from the first node that answers.
        let mut last_error = None;
        for addr in client.candidate_nodes() {
            match client.send_raw(&addr, &[b"COMMAND"]).await {
                Ok(reply) => match CommandTable::from_command_reply(&reply) {
                    Ok(table) => {
                        *client
                            .inner
                            .commands
                            .write()
                            .unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
                        return Ok(client);
                    }
                    Err(e) => last_error = Some(e.to_string()),
                },
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        Err(Error::NoReachableNode(
            last_error.unwrap_or_else(|| "no node known".into()),
        ))
    }

    /// The current slot map.
    pub fn slot_map(&self) -> Arc<SlotMap> {
        self.inner
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server's command table, as fetched at connect.
    pub fn command_table(&self) -> Arc<CommandTable> {
        self.inner
            .commands
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A snapshot of the counters (MOVED, ASK, retries, refreshes...).
    pub fn stats(&self) -> ClusterStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            moved: get(&c.moved),
            ask: get(&c.ask),
            tryagain: get(&c.tryagain),
            clusterdown: get(&c.clusterdown),
            loading: get(&c.loading),
            readonly: get(&c.readonly),
            connection_errors: get(&c.connection_errors),
            refreshes: get(&c.refreshes),
            unknown_outcomes: get(&c.unknown_outcomes),
            resent: get(&c.resent),
        }
    }

    /// Nodes to ask for the topology: known masters, then replicas, then the seeds; nodes that
    /// recently refused a connection last.
    fn candidate_nodes(&self) -> Vec<NodeAddr> {
        let map = self.slot_map();
        let mut out: Vec<NodeAddr> = Vec::new();
        let mut push = |addr: NodeAddr| {
            if !out.contains(&addr) {
                out.push(addr);
            }
        };
        for shard in map.shards() {
            push(shard.master.addr.clone());
        }
        for node in map.nodes() {
            push(node.addr.clone());
        }
        let o = &self.inner.options;
        push(NodeAddr::new(o.connect.host.clone(), o.connect.port));
        for seed in &o.seeds {
            push(seed.clone());
        }
        out.sort_by_key(|a| self.recently_failed(a).is_some());
        out
    }

    /// Reloads the slot map now, from the first node that answers (waiting for a refresh already
    /// running to end first).
    pub async fn refresh(&self) -> Result<(), Error> {
        let _one = self.inner.refresh_lock.lock().await;
        let result = self.load_map().await;
        *lock(&self.inner.last_refresh) = Some(Instant::now());
        result
    }

    /// Asks for a refresh in the background, unless one is running or the last one was less than
    /// `min_refresh_interval` ago. Never waits.
    fn request_refresh(&self) {
        let recent = lock(&self.inner.last_refresh)
            .is_some_and(|t| t.elapsed() < self.inner.options.min_refresh_interval);
        if recent
            || self
                .inner
                .refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.refresh().await {
                tracing::debug!("topology refresh failed: {e}");
            }
            this.inner.refreshing.store(false, Ordering::Release);
        });
    }

    async fn load_map(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        for addr in self.candidate_nodes() {
            match self.load_map_from(&addr).await {
                Ok(mut map) => {
                    map.fill_unknown_hosts(&addr.host);
                    if self.inner.options.connect.tls.is_some() {
                        // A TLS client must be sent to the nodes' TLS ports.
                        map.use_tls_ports();
                    }
                    if map.shards().is_empty() {
                        errors.push(format!("{addr}: no shard served"));
                        continue;
                    }
                    *self.inner.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
                    bump(&self.inner.counters.refreshes);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(Error::NoReachableNode(errors.join("; ")))
    }

    async fn load_map_from(&self, addr: &NodeAddr) -> Result<SlotMap, Error> {
        match self.send_raw(addr, &[b"CLUSTER", b"SHARDS"]).await? {
            // Before 7.0: CLUSTER SLOTS.
            Frame::Error(_) => {
                let reply = self.send_raw(addr, &[b"CLUSTER", b"SLOTS"]).await?;
                if let Frame::Error(e) = &reply {
                    // A refusal (`NOAUTH`, `NOPERM`, cluster support disabled), not a malformed reply.
                    let text = String::from_utf8_lossy(e);
                    let (code, message) = text.split_once(' ').unwrap_or((&text, ""));
                    return Err(self.server_error("CLUSTER SLOTS", None, addr, code, message));
                }
                SlotMap::from_cluster_slots(&reply)
            }
            frame => SlotMap::from_cluster_shards(&frame),
        }
    }

    /// Sends one command on `addr`'s shared connection and returns the raw reply (error replies as
    /// [`Frame::Error`]); for the client's own queries.
    async fn send_raw(&self, addr: &NodeAddr, argv: &[&[u8]]) -> Result<Frame, Error> {
        let label = |source| Error::Connection {
            command: command_name(argv),
            slot: SlotLabel(None),
            node: addr.to_string(),
            source,
        };
        let mux = self.mux(addr).await.map_err(|e| match e {
            SendError::NotSent(s) | SendError::Unknown(s) => label(s),
        })?;
        match mux.send(encode(argv, false), 1).await {
            Ok(mut frames) => Ok(frames.pop().unwrap_or(Frame::NullBulk)),
            Err(SendError::NotSent(s) | SendError::Unknown(s)) => {
                bump(&self.inner.counters.connection_errors);
                Err(label(s))
            }
        }
    }

    fn recently_failed(&self, addr: &NodeAddr) -> Option<String> {
        let failed = lock(&self.inner.failed);
        let (at, why) = failed.get(addr)?;
        (at.elapsed() < self.inner.options.failed_node_ttl).then(|| why.clone())
    }

    pub(crate) fn note_failed(&self, addr: &NodeAddr, why: &ferry_resp::Error) {
        bump(&self.inner.counters.connection_errors);
        lock(&self.inner.failed).insert(addr.clone(), (Instant::now(), why.to_string()));
        self.request_refresh();
    }

    /// The shared connection of `addr`, connecting (once, whoever asks) when there is none. A node
    /// that refused a connection within `failed_node_ttl` is not tried again: `NotSent` at once.
    async fn mux(&self, addr: &NodeAddr) -> Result<Mux, SendError> {
        if let Some(m) = self.live_mux(addr) {
            return Ok(m);
        }
        let gate = lock(&self.inner.connecting)
            .entry(addr.clone())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        if let Some(m) = self.live_mux(addr) {
            return Ok(m);
        }
        if let Some(why) = self.recently_failed(addr) {
            return Err(SendError::NotSent(ferry_resp::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("node failed recently: {why}"),
                ),
            )));
        }
        match Connection::connect(&self.inner.options.connect_to(addr)).await {
            Ok(conn) => {
                lock(&self.inner.failed).remove(addr);
                let mux = Mux::spawn(conn, self.inner.options.connect.read_timeout);
                self.inner
                    .nodes
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(addr.clone(), mux.clone());
                Ok(mux)
            }
            Err(e) => {
                self.note_failed(addr, &e);
                Err(SendError::NotSent(e))
            }
        }
    }

    fn live_mux(&self, addr: &NodeAddr) -> Option<Mux> {
        let nodes = self.inner.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(addr).filter(|m| !m.is_closed()).cloned()
    }

    /// The master serving `slot` (or, for `None`, any master).
    fn route(&self, slot: Option<u16>) -> Option<NodeAddr> {
        let map = self.inner.map.read().unwrap_or_else(|e| e.into_inner());
        match slot {
            Some(slot) => map.master_for_slot(slot).map(|n| n.addr.clone()),
            None => map
                .master_for_slot(0)
                .or_else(|| map.shards().first().map(|s| &s.master))
                .map(|n| n.addr.clone()),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let o = &self.inner.options;
        let factor = 1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        o.retry_delay.saturating_mul(factor).min(o.max_retry_delay)
    }

    /// One attempt on `addr`.
    async fn attempt(
        &self,
        addr: &NodeAddr,
        argv: &[&[u8]],
        asking: bool,
        via: &Via<'_>,
    ) -> Attempt {
        match via {
            Via::Shared => {
                let mux = self.mux(addr).await?;
                let count = if asking { 2 } else { 1 };
                let mut frames = mux
                    .send(encode(argv, asking), count)
                    .await
                    .inspect_err(|_| {
                        bump(&self.inner.counters.connection_errors);
                    })?;
                Ok((frames.pop().unwrap_or(Frame::NullBulk), None))
            }
            Via::Dedicated(wait) => {
                let mut conn = self.dedicated_to(addr).await?;
                conn.run(argv, asking, *wait).await
            }
            Via::Transaction(cmds) => {
                let mut conn = self.dedicated_to(addr).await?;
                conn.run_transaction(cmds).await
            }
        }
    }

    /// A dedicated connection to `addr` (idle one, or a new one).
    async fn dedicated_to(&self, addr: &NodeAddr) -> Result<DedicatedConnection, SendError> {
        if let Some(why) = self.recently_failed(addr) {
            return Err(SendError::NotSent(ferry_resp::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("node failed recently: {why}"),
                ),
            )));
        }
        DedicatedConnection::open(self, addr).await
    }

    /// Runs one command on the master of its slot and returns its reply; an error reply that is not a
    /// redirect or retryable state gives [`Error::Server`]. Keys in different slots give
    /// [`Error::CrossSlot`] (see [`ClusterClient::call_split`] for commands that can be split); a
    /// command missing from the server's command table gives [`Error::UnknownCommand`] without being
    /// sent; a command that changes the connection's session gives [`Error::Unsupported`] (use
    /// [`ClusterClient::transaction`] or [`ClusterClient::dedicated`]). Blocking commands run on a
    /// dedicated connection. Commands without keys go to the master of slot 0.
    pub async fn call<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Frame, Error> {
        let table = self.command_table();
        let (info, slot) = table.route(argv)?;
        let via = match kind_of(info, argv) {
            Kind::Shared => Via::Shared,
            Kind::Blocking => Via::Dedicated(None),
            Kind::Session => return Err(unsupported(argv)),
        };
        let resend = is_resend_safe(info);
        let args: Vec<&[u8]> = argv.iter().map(AsRef::as_ref).collect();
        self.run(&args, slot, via, resend).await.map(|(f, _)| f)
    }

    /// Runs a command on the master of `slot`, whatever its keys.
    pub async fn call_on_slot<A: AsRef<[u8]>>(
        &self,
        slot: u16,
        argv: &[A],
    ) -> Result<Frame, Error> {
        let table = self.command_table();
        let info = table.lookup(argv)?;
        let via = match kind_of(info, argv) {
            Kind::Shared => Via::Shared,
            Kind::Blocking => Via::Dedicated(None),
            Kind::Session => return Err(unsupported(argv)),
        };
        let resend = is_resend_safe(info);
        let args: Vec<&[u8]> = argv.iter().map(AsRef::as_ref).collect();
        self.run(&args, Some(slot), via, resend)
            .await
            .map(|(f, _)| f)
    }

    /// Runs a write followed by `WAIT replicas timeout` on the same (dedicated) connection, and returns
    /// the write's reply with the number of replicas that acknowledged it. A write counted by at least
    /// one replica survives the loss of its master. The read timeout is extended by `timeout`.
    pub async fn call_and_wait<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        replicas: u32,
        timeout: Duration,
    ) -> Result<(Frame, i64), Error> {
        let table = self.command_table();
        let (info, slot) = table.route(argv)?;
        if kind_of(info, argv) == Kind::Session {
            return Err(unsupported(argv));
        }
        let resend = is_resend_safe(info);
        let args: Vec<&[u8]> = argv.iter().map(AsRef::as_ref).collect();
        let (frame, wait) = self
            .run(
                &args,
                slot,
                Via::Dedicated(Some((replicas, timeout))),
                resend,
            )
            .await?;
        Ok((frame, wait.and_then(|w| w.as_integer()).unwrap_or(0)))
    }

    /// Runs `MULTI`, the commands, `EXEC` on one dedicated connection to the master of their slot and
    /// returns EXEC's replies. Every key must hash to one slot ([`Error::CrossSlot`] otherwise).
    /// A transaction refused because its slot moved (`EXECABORT` after `MOVED`/`ASK`/`TRYAGAIN`)
    /// ran nothing, and is retried where the slot went; one whose connection broke after it was
    /// sent ends with an unknown outcome (unless every command is read-only or resending is on).
    /// No `WATCH` is sent here: use [`ClusterClient::dedicated`] for optimistic transactions.
    pub async fn transaction<A: AsRef<[u8]>>(&self, cmds: &[Vec<A>]) -> Result<Vec<Frame>, Error> {
        let table = self.command_table();
        let mut slot = None;
        let mut resend = true;
        for argv in cmds {
            let info = table.lookup(argv)?;
            if kind_of(info, argv) == Kind::Session {
                return Err(unsupported(argv));
            }
            resend &= is_resend_safe(info);
            if let Some(s) = table.slot(argv)? {
                match slot {
                    None => slot = Some(s),
                    Some(first) if first != s => {
                        return Err(Error::CrossSlot {
                            command: "multi".into(),
                            slot: first,
                            other_slot: s,
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        let args: Vec<Vec<&[u8]>> = cmds
            .iter()
            .map(|argv| argv.iter().map(AsRef::as_ref).collect())
            .collect();
        let (exec, _) = self
            .run(&[b"EXEC"], slot, Via::Transaction(&args), resend)
            .await?;
        match exec {
            Frame::Array(items) => Ok(items),
            other if other.is_null() => Ok(Vec::new()),
            other => Err(Error::parse("EXEC reply", format!("{other:?}"))),
        }
    }

    /// A dedicated connection to the master of `slot`, for what needs one connection to itself:
    /// `WATCH` / `MULTI` / `EXEC` (optimistic transactions), or a long blocking command. It does not
    /// follow redirects (a `MOVED` comes back as an error reply); it goes back to the client's idle
    /// list when dropped if it is usable and no transaction is open on it.
    pub async fn dedicated(&self, slot: u16) -> Result<DedicatedConnection, Error> {
        let addr = self
            .route(Some(slot))
            .ok_or_else(|| Error::SlotNotCovered {
                command: "dedicated".into(),
                slot,
            })?;
        self.dedicated_to(&addr).await.map_err(|e| match e {
            SendError::NotSent(source) | SendError::Unknown(source) => Error::Connection {
                command: "connect".into(),
                slot: SlotLabel(Some(slot)),
                node: addr.to_string(),
                source,
            },
        })
    }

    /// The retry loop: routes, sends, follows redirects, backs off; never resends a command whose
    /// outcome is unknown unless `resend_safe` or the option says so.
    async fn run(
        &self,
        argv: &[&[u8]],
        slot: Option<u16>,
        via: Via<'_>,
        resend_safe: bool,
    ) -> Result<(Frame, Option<Frame>), Error> {
        let o = &self.inner.options;
        let resend = resend_safe || o.resend_after_connection_loss;
        // Only needed for errors: built when one is.
        let name = || match &via {
            Via::Transaction(_) => "MULTI".to_string(),
            _ => command_name(argv),
        };
        let mut ask_target: Option<NodeAddr> = None;
        let (mut redirects, mut retries, mut attempts) = (0u32, 0u32, 0u32);
        let mut unknown_seen: Option<Error> = None;
        loop {
            let (addr, asking) = match ask_target.take() {
                Some(addr) => (addr, true),
                None => match self.route(slot) {
                    Some(addr) => (addr, false),
                    None => {
                        // The map has a hole: refresh, and give up after the retry budget.
                        retries += 1;
                        if retries > o.max_retries {
                            return Err(Error::SlotNotCovered {
                                command: name(),
                                slot: slot.unwrap_or(0),
                            });
                        }
                        self.request_refresh();
                        tokio::time::sleep(self.backoff(retries)).await;
                        continue;
                    }
                },
            };
            attempts += 1;
            let failure = match self.attempt(&addr, argv, asking, &via).await {
                Ok((frame, wait_reply)) => match classify(frame) {
                    Reply::Done(frame) => return Ok((frame, wait_reply)),
                    Reply::Moved(moved_slot, to) => {
                        bump(&self.inner.counters.moved);
                        Arc::make_mut(
                            &mut self.inner.map.write().unwrap_or_else(|e| e.into_inner()),
                        )
                        .set_master_for_slot(moved_slot, to);
                        self.request_refresh();
                        redirects += 1;
                        if redirects <= o.max_redirects {
                            continue;
                        }
                        self.server_error(&name(), slot, &addr, "MOVED", "too many redirects")
                    }
                    Reply::Ask(to) => {
                        bump(&self.inner.counters.ask);
                        redirects += 1;
                        if matches!(via, Via::Transaction(_)) {
                            // ASKING cannot cover a whole transaction: wait for the migration.
                            self.server_error(&name(), slot, &addr, "ASK", "slot migrating")
                        } else if redirects <= o.max_redirects {
                            ask_target = Some(to);
                            continue;
                        } else {
                            self.server_error(&name(), slot, &addr, "ASK", "too many redirects")
                        }
                    }
                    Reply::Retry(code) => {
                        let c = &self.inner.counters;
                        bump(match code {
                            "TRYAGAIN" => &c.tryagain,
                            "CLUSTERDOWN" => &c.clusterdown,
                            "LOADING" => &c.loading,
                            _ => &c.readonly,
                        });
                        if code != "TRYAGAIN" {
                            self.request_refresh();
                        }
                        self.server_error(&name(), slot, &addr, code, "retryable state")
                    }
                    Reply::Fail(code, message) => {
                        return Err(self.server_error(&name(), slot, &addr, &code, &message));
                    }
                },
                Err(SendError::NotSent(source)) => {
                    self.request_refresh();
                    Error::Connection {
                        command: name(),
                        slot: SlotLabel(slot),
                        node: addr.to_string(),
                        source,
                    }
                }
                Err(SendError::Unknown(source)) => {
                    self.request_refresh();
                    let err = Error::UnknownOutcome {
                        command: name(),
                        slot: SlotLabel(slot),
                        node: addr.to_string(),
                        source,
                    };
                    if !resend {
                        bump(&self.inner.counters.unknown_outcomes);
                        return Err(err);
                    }
                    bump(&self.inner.counters.resent);
                    if unknown_seen.is_none() {
                        unknown_seen = Some(err);
                        Error::NoReachableNode(format!("{addr}: connection lost; resending"))
                    } else {
                        err
                    }
                }
            };
            retries += 1;
            if retries > o.max_retries || redirects > o.max_redirects {
                let last = match unknown_seen {
                    // An earlier attempt may have run: say so rather than the last failure.
                    Some(u) => u,
                    None => failure,
                };
                return Err(self.exhausted(name(), slot, &addr, attempts, Some(last)));
            }
            tokio::time::sleep(self.backoff(retries)).await;
        }
    }

    fn exhausted(
        &self,
        command: String,
        slot: Option<u16>,
        addr: &NodeAddr,
        attempts: u32,
        last: Option<Error>,
    ) -> Error {
        Error::RetriesExhausted {
            command,
            slot: SlotLabel(slot),
            node: addr.to_string(),
            attempts,
            last: Box::new(last.unwrap_or_else(|| Error::NoReachableNode(addr.to_string()))),
        }
    }

    fn server_error(
        &self,
        command: &str,
        slot: Option<u16>,
        addr: &NodeAddr,
        code: &str,
        message: &str,
    ) -> Error {
        Error::Server {
            command: command.to_owned(),
            slot: SlotLabel(slot),
            node: addr.to_string(),
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// Runs many commands, pipelined per node (each node's group in one write on its shared
    /// connection, nodes in parallel). Replies come back in the order of `cmds`. A command that meets
    /// a redirect, a retryable state or a connection that could not be made is then run again on its
    /// own, through [`ClusterClient::call`]'s path, so commands of one slot that were redirected keep
    /// their relative order. When a node's connection breaks after its group was sent, each command
    /// of the group is resent only if that is safe (read-only, or `resend_after_connection_loss`);
    /// the others get an error for which [`Error::is_unknown_outcome`] is true. Blocking commands run
    /// on dedicated connections; session commands give [`Error::Unsupported`].
    pub async fn pipeline<A: AsRef<[u8]> + Sync>(
        &self,
        cmds: &[Vec<A>],
    ) -> Vec<Result<Frame, Error>> {
        let mut results: Vec<Option<Result<Frame, Error>>> =
            (0..cmds.len()).map(|_| None).collect();
        let table = self.command_table();
        let mut plan: Vec<Option<(Option<u16>, Kind, bool)>> = Vec::with_capacity(cmds.len());
        let mut groups: HashMap<NodeAddr, Vec<usize>> = HashMap::new();
        for (i, argv) in cmds.iter().enumerate() {
            let planned = table
                .route(argv)
                .map(|(info, slot)| (slot, kind_of(info, argv), is_resend_safe(info)));
            match planned {
                Ok((slot, kind, safe)) => {
                    if kind == Kind::Session {
                        results[i] = Some(Err(unsupported(argv)));
                        plan.push(None);
                        continue;
                    }
                    plan.push(Some((slot, kind, safe)));
                    if kind == Kind::Shared {
                        if let Some(addr) = self.route(slot) {
                            groups.entry(addr).or_default().push(i);
                        }
                    }
                }
                Err(e) => {
                    results[i] = Some(Err(e));
                    plan.push(None);
                }
            }
        }
        let sends = groups.into_iter().map(|(addr, members)| async move {
            let mut buf = BytesMut::new();
            for &i in &members {
                encode_command(&cmds[i], &mut buf);
            }
            let n = members.len();
            let replies = match self.mux(&addr).await {
                Ok(mux) => mux.send(buf.freeze(), n).await,
                Err(e) => Err(e),
            };
            if replies.is_err() {
                bump(&self.inner.counters.connection_errors);
            }
            (addr, members, replies)
        });
        let o = &self.inner.options;
        for (addr, members, replies) in futures_util::future::join_all(sends).await {
            match replies {
                Ok(replies) => {
                    for (i, frame) in members.into_iter().zip(replies) {
                        let slot = plan[i].and_then(|p| p.0);
                        match classify(frame) {
                            Reply::Done(frame) => results[i] = Some(Ok(frame)),
                            Reply::Fail(code, message) => {
                                results[i] = Some(Err(self.server_error(
                                    &command_name(&cmds[i]),
                                    slot,
                                    &addr,
                                    &code,
                                    &message,
                                )));
                            }
                            // Not run: redone below.
                            Reply::Moved(moved_slot, to) => {
                                bump(&self.inner.counters.moved);
                                Arc::make_mut(
                                    &mut self.inner.map.write().unwrap_or_else(|e| e.into_inner()),
                                )
                                .set_master_for_slot(moved_slot, to);
                                self.request_refresh();
                            }
                            _ => {}
                        }
                    }
                }
                Err(SendError::NotSent(_)) => self.request_refresh(),
                Err(SendError::Unknown(source)) => {
                    self.request_refresh();
                    let lost = source.to_string();
                    for i in members {
                        let safe = plan[i].is_some_and(|p| p.2);
                        if !(safe || o.resend_after_connection_loss) {
                            bump(&self.inner.counters.unknown_outcomes);
                            results[i] = Some(Err(Error::UnknownOutcome {
                                command: command_name(&cmds[i]),
                                slot: SlotLabel(plan[i].and_then(|p| p.0)),
                                node: addr.to_string(),
                                source: ferry_resp::Error::Io(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionAborted,
                                    lost.clone(),
                                )),
                            }));
                        } else {
                            bump(&self.inner.counters.resent);
                        }
                    }
                }
            }
        }
        // Whatever has no result yet did not run (or may be resent): run it on its own, in order.
        for i in 0..cmds.len() {
            if results[i].is_some() {
                continue;
            }
            let Some((slot, kind, safe)) = plan[i] else {
                continue;
            };
            let via = if kind == Kind::Blocking {
                Via::Dedicated(None)
            } else {
                Via::Shared
            };
            let args: Vec<&[u8]> = cmds[i].iter().map(AsRef::as_ref).collect();
            results[i] = Some(self.run(&args, slot, via, safe).await.map(|(f, _)| f));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::NoReachableNode("not sent".into()))))
            .collect()
    }

    /// Runs a multi-key command that may span slots (MSET, DEL, UNLINK, EXISTS, TOUCH, MGET) as one
    /// command per slot, pipelined, and merges the replies: summed for DEL/UNLINK/EXISTS/TOUCH, in key
    /// order for MGET, OK for MSET (which is then no longer atomic across slots). Any other command is
    /// run as [`ClusterClient::call`] runs it.
    pub async fn call_split<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Frame, Error> {
        let split = match split_by_slot(argv) {
            Some(split) => split?,
            None => return self.call(argv).await,
        };
        let cmds: Vec<Vec<Vec<u8>>> = split.parts.iter().map(|p| p.argv.clone()).collect();
        let mut replies = Vec::with_capacity(cmds.len());
        for reply in self.pipeline(&cmds).await {
            replies.push(reply?);
        }
        split.merge_replies(replies)
    }

    /// `MGET` across slots: values in the order of `keys` (`Frame::NullBulk` for a missing key).
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Frame>, Error> {
        let reply = self.call_split(&with_name(b"MGET", keys)).await?;
        reply
            .into_array()
            .ok_or_else(|| Error::parse("MGET reply", "not an array"))
    }

    /// `MSET` across slots (atomic per slot only).
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: &[(K, V)],
    ) -> Result<(), Error> {
        let mut argv: Vec<&[u8]> = vec![b"MSET"];
        for (k, v) in pairs {
            argv.push(k.as_ref());
            argv.push(v.as_ref());
        }
        self.call_split(&argv).await.map(|_| ())
    }

    /// `DEL` across slots: the number of keys removed.
    pub async fn del<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, Error> {
        self.sum(b"DEL", keys).await
    }

    /// `UNLINK` across slots: the number of keys removed.
    pub async fn unlink<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, Error> {
        self.sum(b"UNLINK", keys).await
    }

    /// `EXISTS` across slots: how many of the keys exist (a key given twice counts twice).
    pub async fn exists<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, Error> {
        self.sum(b"EXISTS", keys).await
    }

    /// `TOUCH` across slots: how many keys were touched.
    pub async fn touch<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, Error> {
        self.sum(b"TOUCH", keys).await
    }

    async fn sum<K: AsRef<[u8]>>(&self, name: &'static [u8], keys: &[K]) -> Result<i64, Error> {
        let reply = self.call_split(&with_name(name, keys)).await?;
        reply
            .as_integer()
            .ok_or_else(|| Error::parse("reply", format!("expected an integer, got {reply:?}")))
    }
}

fn with_name<'a, K: AsRef<[u8]>>(name: &'static [u8], keys: &'a [K]) -> Vec<&'a [u8]> {
    std::iter::once(name)
        .chain(keys.iter().map(AsRef::as_ref))
        .collect()
}

/// The error for a command that changes its connection's session.
fn unsupported<A: AsRef<[u8]>>(argv: &[A]) -> Error {
    Error::Unsupported {
        command: command_name(argv),
        reason:
            "it changes the state of the connection it runs on; use ClusterClient::transaction \
                 or ClusterClient::dedicated",
    }
}

/// The cluster client as a [`ferry_resp::ConnectionLike`]: `call` is [`ClusterClient::call`];
/// `pipeline` is [`ClusterClient::pipeline`] with final error replies put back in place as
/// [`Frame::Error`] and any other failure (unknown outcome, unreachable node) returned as the
/// batch's error.
impl ferry_resp::ConnectionLike for ClusterClient {
    type Error = Error;

    fn call<'a, A>(
        &'a mut self,
        argv: &'a [A],
    ) -> impl std::future::Future<Output = Result<Frame, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        ClusterClient::call(self, argv)
    }

    async fn pipeline<'a, A>(&'a mut self, cmds: &'a [Vec<A>]) -> Result<Vec<Frame>, Error>
    where
        A: AsRef<[u8]> + Sync,
    {
        let mut out = Vec::with_capacity(cmds.len());
        for r in ClusterClient::pipeline(self, cmds).await {
            match r {
                Ok(f) => out.push(f),
                Err(Error::Server { code, message, .. }) => {
                    out.push(Frame::Error(Bytes::from(format!("{code} {message}"))))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
