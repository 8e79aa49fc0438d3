//! [`ClusterClient`]: an async Redis Cluster client that routes each command to the master of its
//! slot, follows MOVED and ASK, retries TRYAGAIN / CLUSTERDOWN / LOADING and lost connections with a
//! bounded backoff, and refreshes its [`SlotMap`] when the topology changes (rate-limited).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferry_resp::{ConnectOptions, Connection, Frame};

use crate::error::{Error, SlotLabel};
use crate::keys::CommandTable;
use crate::slotmap::{NodeAddr, SlotMap};
use crate::split::split_by_slot;

/// Settings of a [`ClusterClient`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Connection settings used for every node (auth, TLS, protocol, timeouts); `host` and `port` are
    /// replaced by each node's address. The seed is `connect.host:connect.port` plus [`Self::seeds`].
    pub connect: ConnectOptions,
    /// Further seed nodes tried when the first one does not answer.
    pub seeds: Vec<NodeAddr>,
    /// Most MOVED / ASK redirects followed for one command.
    pub max_redirects: u32,
    /// Most retries for one command after TRYAGAIN, CLUSTERDOWN, LOADING, READONLY or a lost connection.
    pub max_retries: u32,
    /// First backoff delay; it doubles on each retry up to [`Self::max_retry_delay`].
    pub retry_delay: Duration,
    /// Longest backoff delay.
    pub max_retry_delay: Duration,
    /// Shortest time between two topology refreshes.
    pub min_refresh_interval: Duration,
    /// Whether a command whose connection broke after it was sent is sent again. `true` (the default)
    /// gives at-least-once delivery: right for SET, RESTORE ... REPLACE, DEL; an INCR may then count
    /// twice. `false` returns the connection error instead.
    pub resend_after_connection_loss: bool,
}

impl ClusterOptions {
    /// Defaults for a cluster reached through `connect`: 16 redirects, 16 retries from 20 ms to 1 s,
    /// at most one refresh per 200 ms, resend after connection loss.
    pub fn new(connect: ConnectOptions) -> ClusterOptions {
        ClusterOptions {
            connect,
            seeds: Vec::new(),
            max_redirects: 16,
            max_retries: 16,
            retry_delay: Duration::from_millis(20),
            max_retry_delay: Duration::from_secs(1),
            min_refresh_interval: Duration::from_millis(200),
            resend_after_connection_loss: true,
        }
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
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type NodeConn = Arc<tokio::sync::Mutex<Option<Connection>>>;

struct Inner {
    options: ClusterOptions,
    map: RwLock<Arc<SlotMap>>,
    commands: RwLock<Arc<CommandTable>>,
    conns: Mutex<HashMap<NodeAddr, NodeConn>>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    counters: Counters,
}

/// An async Redis Cluster client. Cheap to clone: clones share connections, map and counters.
///
/// One connection per node, shared by all callers (a pipeline to a node holds it until its replies are
/// read). Each command goes to the master of its slot; commands without keys go to the master of slot
/// 0's shard.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
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
        _ => Reply::Fail(code, message),
    }
}

fn command_name<A: AsRef<[u8]>>(argv: &[A]) -> String {
    argv.first()
        .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase())
        .unwrap_or_default()
}

impl ClusterClient {
    /// Connects to the seed node(s), loads the slot map (CLUSTER SHARDS, or CLUSTER SLOTS before 7.0)
    /// and the command table (COMMAND, fetched once and shared by all nodes).
    pub async fn connect(options: ClusterOptions) -> Result<ClusterClient, Error> {
        let inner = Inner {
            options,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            commands: RwLock::new(Arc::new(CommandTable::default())),
            conns: Mutex::new(HashMap::new()),
            last_refresh: tokio::sync::Mutex::new(None),
            counters: Counters::default(),
        };
        let client = ClusterClient {
            inner: Arc::new(inner),
        };
        client.refresh().await?;
        // Fetch the command table from the first node that answers.
        let mut last_error = None;
        for addr in client.candidate_nodes() {
            let conn = client.node_conn(&addr);
            let mut guard = conn.lock().await;
            match client.ensure_connected(&addr, &mut guard).await {
                Ok(c) => match CommandTable::fetch(c).await {
                    Ok(table) => {
                        *client
                            .inner
                            .commands
                            .write()
                            .unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
                        drop(guard);
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
        }
    }

    /// Nodes to ask for the topology: known masters, then replicas, then the seeds.
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
        out
    }

    /// Reloads the slot map now, from the first node that answers.
    pub async fn refresh(&self) -> Result<(), Error> {
        let mut last = self.inner.last_refresh.lock().await;
        self.refresh_locked(&mut last).await
    }

    /// Reloads the slot map unless that was done less than `min_refresh_interval` ago.
    async fn maybe_refresh(&self) {
        let mut last = self.inner.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.inner.options.min_refresh_interval) {
            return;
        }
        if let Err(e) = self.refresh_locked(&mut last).await {
            tracing::debug!("topology refresh failed: {e}");
        }
    }

    async fn refresh_locked(&self, last: &mut Option<Instant>) -> Result<(), Error> {
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
                    *last = Some(Instant::now());
                    bump(&self.inner.counters.refreshes);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        *last = Some(Instant::now());
        Err(Error::NoReachableNode(errors.join("; ")))
    }

    async fn load_map_from(&self, addr: &NodeAddr) -> Result<SlotMap, Error> {
        let conn = self.node_conn(addr);
        let mut guard = conn.lock().await;
        let c = self.ensure_connected(addr, &mut guard).await?;
        let label = |source| Error::Connection {
            command: "CLUSTER SHARDS".into(),
            slot: SlotLabel(None),
            node: addr.to_string(),
            source,
        };
        let replies = c.pipeline(&[vec!["CLUSTER", "SHARDS"]]).await;
        let replies = match replies {
            Ok(r) => r,
            Err(e) => {
                *guard = None;
                return Err(label(e));
            }
        };
        match replies.into_iter().next() {
            Some(Frame::Error(_)) | None => {
                // Before 7.0: CLUSTER SLOTS.
                let reply = c.call(&["CLUSTER", "SLOTS"]).await;
                match reply {
                    Ok(frame) => SlotMap::from_cluster_slots(&frame),
                    Err(e) => {
                        if e.is_connection_lost() {
                            *guard = None;
                        }
                        Err(label(e))
                    }
                }
            }
            Some(frame) => SlotMap::from_cluster_shards(&frame),
        }
    }

    fn node_conn(&self, addr: &NodeAddr) -> NodeConn {
        let mut conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.entry(addr.clone()).or_default().clone()
    }

    async fn ensure_connected<'a>(
        &self,
        addr: &NodeAddr,
        slot: &'a mut Option<Connection>,
    ) -> Result<&'a mut Connection, Error> {
        if slot.as_ref().is_some_and(|c| !c.is_usable()) {
            *slot = None;
        }
        if slot.is_none() {
            let mut opts = self.inner.options.connect.clone();
            opts.host = addr.host.clone();
            opts.port = addr.port;
            match Connection::connect(&opts).await {
                Ok(c) => *slot = Some(c),
                Err(source) => {
                    bump(&self.inner.counters.connection_errors);
                    return Err(Error::Connection {
                        command: "connect".into(),
                        slot: SlotLabel(None),
                        node: addr.to_string(),
                        source,
                    });
                }
            }
        }
        slot.as_mut()
            .ok_or_else(|| Error::NoReachableNode(addr.to_string()))
    }

    /// The master serving `slot` (or, for `None`, any master).
    fn route(&self, slot: Option<u16>) -> Option<NodeAddr> {
        let map = self.slot_map();
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

    /// Sends `[ASKING], argv, [WAIT n t]` on the node's connection and returns argv's reply and WAIT's.
    async fn send_once<A: AsRef<[u8]>>(
        &self,
        addr: &NodeAddr,
        argv: &[A],
        asking: bool,
        wait: Option<(u32, Duration)>,
    ) -> Result<(Frame, Option<Frame>), (ferry_resp::Error, bool)> {
        let conn = self.node_conn(addr);
        let mut guard = conn.lock().await;
        let c = match self.ensure_connected(addr, &mut guard).await {
            Ok(c) => c,
            Err(Error::Connection { source, .. }) => return Err((source, false)),
            Err(_) => return Err((ferry_resp::Error::Closed, false)),
        };
        let mut cmds: Vec<Vec<&[u8]>> = Vec::with_capacity(3);
        if asking {
            cmds.push(vec![b"ASKING"]);
        }
        cmds.push(argv.iter().map(AsRef::as_ref).collect());
        let wait_args;
        if let Some((replicas, timeout)) = wait {
            wait_args = (replicas.to_string(), timeout.as_millis().max(1).to_string());
            cmds.push(vec![
                b"WAIT",
                wait_args.0.as_bytes(),
                wait_args.1.as_bytes(),
            ]);
        }
        match c.pipeline(&cmds).await {
            Ok(mut replies) => {
                let wait_reply = if wait.is_some() { replies.pop() } else { None };
                let reply = replies.pop().unwrap_or(Frame::NullBulk);
                Ok((reply, wait_reply))
            }
            Err(e) => {
                *guard = None;
                bump(&self.inner.counters.connection_errors);
                Err((e, true))
            }
        }
    }

    /// Runs one command on the master of its slot and returns its reply; an error reply that is not a
    /// redirect or retryable state gives [`Error::Server`]. Keys in different slots give
    /// [`Error::CrossSlot`] (see [`ClusterClient::call_split`] for commands that can be split); a
    /// command missing from the server's command table gives [`Error::UnknownCommand`] without being
    /// sent. Commands without keys go to the master of slot 0.
    pub async fn call<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Frame, Error> {
        let slot = self.command_table().slot(argv)?;
        self.run(argv, slot, None).await.map(|(f, _)| f)
    }

    /// Runs a command on the master of `slot`, whatever its keys.
    pub async fn call_on_slot<A: AsRef<[u8]>>(
        &self,
        slot: u16,
        argv: &[A],
    ) -> Result<Frame, Error> {
        self.run(argv, Some(slot), None).await.map(|(f, _)| f)
    }

    /// Runs a write followed by `WAIT replicas timeout` on the same node, and returns the write's reply
    /// with the number of replicas that acknowledged it. A write counted by at least one replica
    /// survives the loss of its master.
    pub async fn call_and_wait<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        replicas: u32,
        timeout: Duration,
    ) -> Result<(Frame, i64), Error> {
        let slot = self.command_table().slot(argv)?;
        let (frame, wait) = self.run(argv, slot, Some((replicas, timeout))).await?;
        Ok((frame, wait.and_then(|w| w.as_integer()).unwrap_or(0)))
    }

    async fn run<A: AsRef<[u8]>>(
        &self,
        argv: &[A],
        slot: Option<u16>,
        wait: Option<(u32, Duration)>,
    ) -> Result<(Frame, Option<Frame>), Error> {
        let o = &self.inner.options;
        let command = command_name(argv);
        let mut ask_target: Option<NodeAddr> = None;
        let (mut redirects, mut retries, mut attempts) = (0u32, 0u32, 0u32);
        loop {
            let addr = match ask_target.take() {
                Some(addr) => (addr, true),
                None => match self.route(slot) {
                    Some(addr) => (addr, false),
                    None => {
                        // The map has a hole: refresh, and give up after the retry budget.
                        retries += 1;
                        if retries > o.max_retries {
                            return Err(Error::SlotNotCovered {
                                command,
                                slot: slot.unwrap_or(0),
                            });
                        }
                        tokio::time::sleep(self.backoff(retries)).await;
                        self.maybe_refresh().await;
                        continue;
                    }
                },
            };
            let (addr, asking) = addr;
            attempts += 1;
            let failure = match self.send_once(&addr, argv, asking, wait).await {
                Ok((frame, wait_reply)) => match classify(frame) {
                    Reply::Done(frame) => return Ok((frame, wait_reply)),
                    Reply::Moved(moved_slot, to) => {
                        bump(&self.inner.counters.moved);
                        self.inner
                            .map
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .make_mut_set(moved_slot, to);
                        redirects += 1;
                        if redirects > o.max_redirects {
                            Some(self.server_error(
                                &command,
                                slot,
                                &addr,
                                "MOVED",
                                "too many redirects",
                            ))
                        } else {
                            let this = self.clone();
                            tokio::spawn(async move { this.maybe_refresh().await });
                            continue;
                        }
                    }
                    Reply::Ask(to) => {
                        bump(&self.inner.counters.ask);
                        redirects += 1;
                        if redirects > o.max_redirects {
                            Some(self.server_error(
                                &command,
                                slot,
                                &addr,
                                "ASK",
                                "too many redirects",
                            ))
                        } else {
                            ask_target = Some(to);
                            continue;
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
                        let err = self.server_error(&command, slot, &addr, code, "retryable state");
                        if code != "TRYAGAIN" {
                            self.maybe_refresh().await;
                        }
                        Some(err)
                    }
                    Reply::Fail(code, message) => {
                        return Err(self.server_error(&command, slot, &addr, &code, &message));
                    }
                },
                Err((source, sent)) => {
                    let err = Error::Connection {
                        command: command.clone(),
                        slot: SlotLabel(slot),
                        node: addr.to_string(),
                        source,
                    };
                    if sent && !o.resend_after_connection_loss {
                        return Err(err);
                    }
                    self.maybe_refresh().await;
                    Some(err)
                }
            };
            let last = failure.unwrap_or_else(|| Error::NoReachableNode(addr.to_string()));
            retries += 1;
            if retries > o.max_retries || redirects > o.max_redirects {
                return Err(Error::RetriesExhausted {
                    command,
                    slot: SlotLabel(slot),
                    node: addr.to_string(),
                    attempts,
                    last: Box::new(last),
                });
            }
            tokio::time::sleep(self.backoff(retries)).await;
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

    /// Runs many commands, pipelined per node (each node's group in one round trip, nodes in
    /// parallel). Replies come back in the order of `cmds`. A command that meets a redirect, a
    /// retryable state or a lost connection is then run again on its own, through [`ClusterClient::call`]'s
    /// path, so commands of one slot that were redirected keep their relative order.
    pub async fn pipeline<A: AsRef<[u8]> + Sync>(
        &self,
        cmds: &[Vec<A>],
    ) -> Vec<Result<Frame, Error>> {
        let mut results: Vec<Option<Result<Frame, Error>>> =
            (0..cmds.len()).map(|_| None).collect();
        let mut groups: HashMap<NodeAddr, Vec<(usize, Option<u16>)>> = HashMap::new();
        let table = self.command_table();
        for (i, argv) in cmds.iter().enumerate() {
            match table.slot(argv) {
                Ok(slot) => match self.route(slot) {
                    Some(addr) => groups.entry(addr).or_default().push((i, slot)),
                    None => results[i] = Some(self.run(argv, slot, None).await.map(|(f, _)| f)),
                },
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let sends = groups.into_iter().map(|(addr, members)| async move {
            let conn = self.node_conn(&addr);
            let mut guard = conn.lock().await;
            let replies = match self.ensure_connected(&addr, &mut guard).await {
                Ok(c) => {
                    let batch: Vec<Vec<&[u8]>> = members
                        .iter()
                        .map(|(i, _)| cmds[*i].iter().map(AsRef::as_ref).collect())
                        .collect();
                    match c.pipeline(&batch).await {
                        Ok(r) => Some(r),
                        Err(_) => {
                            *guard = None;
                            bump(&self.inner.counters.connection_errors);
                            None
                        }
                    }
                }
                Err(_) => None,
            };
            (members, replies)
        });
        let mut redo = Vec::new();
        for (members, replies) in futures_util::future::join_all(sends).await {
            match replies {
                Some(replies) => {
                    for ((i, slot), frame) in members.into_iter().zip(replies) {
                        match classify(frame) {
                            Reply::Done(frame) => results[i] = Some(Ok(frame)),
                            Reply::Fail(code, message) => {
                                let node =
                                    self.route(slot).map(|a| a.to_string()).unwrap_or_default();
                                results[i] = Some(Err(Error::Server {
                                    command: command_name(&cmds[i]),
                                    slot: SlotLabel(slot),
                                    node,
                                    code,
                                    message,
                                }));
                            }
                            _ => redo.push((i, slot)),
                        }
                    }
                }
                None => redo.extend(members),
            }
        }
        redo.sort_unstable();
        for (i, slot) in redo {
            results[i] = Some(self.run(&cmds[i], slot, None).await.map(|(f, _)| f));
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

/// Copy-on-write update of the shared map for a MOVED reply.
trait MakeMutSet {
    fn make_mut_set(&mut self, slot: u16, addr: NodeAddr);
}

impl MakeMutSet for Arc<SlotMap> {
    fn make_mut_set(&mut self, slot: u16, addr: NodeAddr) {
        Arc::make_mut(self).set_master_for_slot(slot, addr);
    }
}
