//! One side of a pair as the calls see it: the master holding the record, and what the calls ask of it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_replicator::checkpoint::{self, Checkpoint};
use ferry_replicator::is_reserved_key;
use ferry_replicator::{Resume, Source as PsyncSource, SourceOptions, Start, StreamEvent};
use ferry_resp::{ConnectOptions, Connection, Frame};

use super::record::{self, Fill, Record, TRANSITION_SCRIPT};
use super::{Deployment, ReplPosition, ShardPosition, Side, Transition};
use crate::error::{Error, ErrorKind};

/// A master of one side: a standalone server, a sentinel group's master, or a cluster master (with its id
/// and slots).
#[derive(Debug, Clone)]
pub(crate) struct Master {
    pub opts: ConnectOptions,
    pub id: String,
    pub slots: Vec<(u16, u16)>,
}

/// One side as the calls see it: its masters (one unless a cluster), and a connection to the one holding the
/// pair's record.
pub(crate) struct Deploy {
    side: Side,
    name: String,
    masters: Vec<Master>,
    /// A cluster: the master index of every slot.
    owner: Option<Vec<u16>>,
    /// The master holding the record.
    record_ix: usize,
    conn: Connection,
    timeout: Duration,
}

impl std::fmt::Debug for Deploy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Deploy({}, {} masters)", self.side, self.masters.len())
    }
}

/// The masters of a cluster, from `CLUSTER NODES` of the first seed that answers.
async fn cluster_masters(d: &Deployment, timeout: Duration) -> Result<Vec<Master>, Error> {
    let Deployment::Cluster { seeds } = d else {
        return Err(Error::config("not a cluster"));
    };
    let mut errors = Vec::new();
    for seed in seeds {
        let opts = seed.connect_options()?;
        let reply = async {
            let mut c = connect(&opts, timeout).await?;
            Ok::<_, Error>(c.call(&["CLUSTER", "NODES"]).await?)
        }
        .await;
        let nodes = match reply {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("{}:{}: {e}", opts.host, opts.port));
                continue;
            }
        };
        let infos = ferry_topology::parse_cluster_nodes(nodes.as_bytes().unwrap_or_default())?;
        let mut masters = Vec::new();
        for n in infos {
            if !n.flags.master || n.flags.fail || n.slots.is_empty() {
                continue;
            }
            let Some(addr) = n.addr else { continue };
            let mut o = opts.clone();
            if !addr.host.is_empty() {
                o.host = addr.host;
            }
            o.port = addr.port;
            masters.push(Master {
                opts: o,
                id: n.id,
                slots: n.slots.iter().map(|r| (r.start, r.end)).collect(),
            });
        }
        if masters.is_empty() {
            errors.push(format!("{}:{}: no master with slots", opts.host, opts.port));
            continue;
        }
        masters.sort_by(|a, b| a.slots.cmp(&b.slots));
        return Ok(masters);
    }
    Err(Error::new(
        ErrorKind::Connection,
        format!("no seed of the cluster answers: {}", errors.join("; ")),
    ))
}

/// Connects with a deadline on the connect and on every reply.
async fn connect(opts: &ConnectOptions, timeout: Duration) -> Result<Connection, Error> {
    let mut o = opts.clone();
    o.connect_timeout = timeout;
    o.read_timeout = Some(timeout.max(Duration::from_secs(2)));
    o.db = 0;
    Ok(Connection::connect(&o).await?)
}

fn text(f: &Frame) -> String {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// The value of `field:` in an `INFO` reply.
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

/// The master of a sentinel-managed group: asked of each sentinel in turn, confirmed with `ROLE`.
pub(crate) async fn sentinel_master(
    d: &Deployment,
    timeout: Duration,
) -> Result<ConnectOptions, Error> {
    let Deployment::Sentinel {
        sentinels,
        master,
        master_auth,
    } = d
    else {
        return Err(Error::config("not a sentinel group"));
    };
    let pool = crate::config::sentinel_pool_options(sentinels, master, master_auth)?;
    let mut errors = Vec::new();
    for s in &pool.sentinels {
        let mut so = pool.sentinel_connect.clone();
        so.host = s.host.clone();
        so.port = s.port;
        let reply = async {
            let mut c = connect(&so, timeout).await?;
            Ok::<_, Error>(
                c.call(&["SENTINEL", "get-master-addr-by-name", master.as_str()])
                    .await?,
            )
        }
        .await;
        let addr = match reply {
            Ok(Frame::Array(items)) if items.len() == 2 => (text(&items[0]), text(&items[1])),
            Ok(f) if f.is_null() => {
                return Err(Error::config(format!(
                    "the sentinels do not monitor a master named {master:?}"
                )))
            }
            Ok(other) => {
                errors.push(format!("{}:{}: unexpected reply {other:?}", s.host, s.port));
                continue;
            }
            Err(e) => {
                errors.push(format!("{}:{}: {e}", s.host, s.port));
                continue;
            }
        };
        let mut mo = pool.data_connect.clone();
        mo.host = addr.0;
        mo.port = addr
            .1
            .parse()
            .map_err(|_| Error::data(format!("sentinel named port {:?}", addr.1)))?;
        let mut c = match connect(&mo, timeout).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("master {}:{}: {e}", mo.host, mo.port));
                continue;
            }
        };
        let role = c.call(&["ROLE"]).await?;
        let is_master = role
            .into_array()
            .and_then(|v| v.first().map(text))
            .is_some_and(|r| r == "master");
        if is_master {
            return Ok(mo);
        }
        errors.push(format!("{}:{} is not a master yet", mo.host, mo.port));
    }
    Err(Error::new(
        ErrorKind::Connection,
        format!(
            "no master of {master:?} could be confirmed: {}",
            errors.join("; ")
        ),
    ))
}

impl Deploy {
    /// Connects to the master of `d` that holds the record of pair `name`.
    pub(crate) async fn open(
        d: &Deployment,
        side: Side,
        name: &str,
        timeout: Duration,
    ) -> Result<Deploy, Error> {
        let one = |opts: ConnectOptions| Master {
            opts,
            id: String::new(),
            slots: Vec::new(),
        };
        let (masters, owner) = match d {
            Deployment::Standalone(e) => (vec![one(e.connect_options()?)], None),
            Deployment::Sentinel { .. } => (vec![one(sentinel_master(d, timeout).await?)], None),
            Deployment::Cluster { .. } => {
                let masters = cluster_masters(d, timeout).await?;
                let mut owner = vec![u16::MAX; usize::from(ferry_topology::SLOT_COUNT)];
                for (i, m) in masters.iter().enumerate() {
                    for &(a, b) in &m.slots {
                        for slot in a..=b {
                            owner[usize::from(slot)] = i as u16;
                        }
                    }
                }
                (masters, Some(owner))
            }
        };
        let record_ix = match &owner {
            Some(owner) => {
                let slot = ferry_topology::key_slot(record::key(name).as_bytes());
                let ix = owner[usize::from(slot)];
                if ix == u16::MAX {
                    return Err(Error::new(
                        ErrorKind::Connection,
                        format!("{side}: no master serves the slot of the DR record"),
                    ));
                }
                usize::from(ix)
            }
            None => 0,
        };
        let conn = connect(&masters[record_ix].opts, timeout)
            .await
            .map_err(|e| e.context(format!("{side}")))?;
        Ok(Deploy {
            side,
            name: name.to_string(),
            masters,
            owner,
            record_ix,
            conn,
            timeout,
        })
    }

    /// Whether this side is a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.owner.is_some()
    }

    /// A new connection to master `i`.
    async fn conn_to(&self, i: usize) -> Result<Connection, Error> {
        connect(&self.masters[i].opts, self.timeout)
            .await
            .map_err(|e| e.context(format!("{}", self.side)))
    }

    /// Every checkpoint key of the job tagged `tag` on every master (the key `ferry:checkpoint:{<tag>}`, a
    /// cluster target's `{<tag>-n}` and a cluster source's per-shard `{<tag>:<shard>}`), with its value.
    pub(crate) async fn checkpoint_entries(
        &self,
        tag: &str,
    ) -> Result<Vec<(usize, String, Vec<u8>)>, Error> {
        let base = checkpoint::key_name(tag);
        let open = &base[..base.len() - 1];
        let mut out = Vec::new();
        for i in 0..self.masters.len() {
            let mut c = self.conn_to(i).await?;
            let mut cursor = "0".to_string();
            loop {
                let pattern = format!("{open}*");
                let reply = c
                    .call(&[
                        "SCAN",
                        cursor.as_str(),
                        "MATCH",
                        pattern.as_str(),
                        "COUNT",
                        "1000",
                    ])
                    .await?;
                let mut items = reply.into_array().unwrap_or_default().into_iter();
                cursor = items.next().map(|f| text(&f)).unwrap_or_else(|| "0".into());
                for k in items.next().and_then(Frame::into_array).unwrap_or_default() {
                    let key = text(&k);
                    let rest = &key[open.len()..];
                    if !(rest == "}" || rest.starts_with('-') || rest.starts_with(':')) {
                        continue;
                    }
                    let v = c.call(&["GET", key.as_str()]).await?;
                    if let Some(v) = v.as_bytes() {
                        out.push((i, key, v.to_vec()));
                    }
                }
                if cursor == "0" {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Writes `value` over every checkpoint key of `tag` (a fence), master by master.
    pub(crate) async fn overwrite_checkpoints(&self, tag: &str, value: &str) -> Result<(), Error> {
        for (i, key, _) in self.checkpoint_entries(tag).await? {
            let mut c = self.conn_to(i).await?;
            c.call(&["SET", key.as_str(), value]).await?;
        }
        Ok(())
    }

    /// A cluster: on each master, replaces the checkpoints of `tag` by one seeded at `at` (the master's own
    /// key, covering its slots), so the job writing this cluster continues from there.
    pub(crate) async fn seed_cluster_checkpoints(
        &self,
        tag: &str,
        at: &ReplPosition,
        epoch: u64,
        only_over_fences: bool,
    ) -> Result<(), Error> {
        const SEED: &str = "local v = redis.call('GET', KEYS[1]) if (not v) or string.sub(v, 1, 6) == 'fenced' then redis.call('SET', KEYS[1], ARGV[1]) end return 0";
        let owner = self
            .owner
            .as_ref()
            .ok_or_else(|| Error::config("seeding per master needs a cluster"))?;
        let old = self.checkpoint_entries(tag).await?;
        for (i, m) in self.masters.iter().enumerate() {
            let mut c = self.conn_to(i).await?;
            if !only_over_fences {
                for (_, key, _) in old.iter().filter(|(j, _, _)| *j == i) {
                    c.call(&["DEL", key.as_str()]).await?;
                }
            }
            let key = checkpoint::key_name(&ferry_replicator::tag_for_node(tag, owner, i, 0));
            let mut p = checkpoint::Position::new(at.replid.clone(), at.offset, 0);
            p.epoch = epoch;
            p.node = Some(m.id.clone());
            p.slots = m.slots.clone();
            let value = Checkpoint::Committed(p).encode();
            if only_over_fences {
                c.call(&["EVAL", SEED, "1", key.as_str(), value.as_str()])
                    .await?;
            } else {
                c.call(&["SET", key.as_str(), value.as_str()]).await?;
            }
        }
        Ok(())
    }

    /// A cluster: fences every checkpoint of `tag`, key by key, each fence carrying the position the key held
    /// (`fenced epoch=<e> at=<replid>:<offset>`) so that a retry after a crash still knows the RPO. Returns the
    /// positions (the RPO of each key).
    pub(crate) async fn fence_keeping_positions(
        &self,
        tag: &str,
        epoch: u64,
    ) -> Result<Vec<ShardPosition>, Error> {
        const CAS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0";
        let mut out = Vec::new();
        for (i, key, value) in self.checkpoint_entries(tag).await? {
            let text = String::from_utf8_lossy(&value).into_owned();
            let at = held_position(&value)?;
            let mut fence = Checkpoint::Fenced { epoch }.encode();
            if let Some((r, o)) = &at {
                fence.push_str(&format!(" at={r}:{o}"));
                out.push(ShardPosition {
                    shard: key.clone(),
                    replid: r.clone(),
                    offset: *o,
                });
            }
            if fence != text {
                let mut c = self.conn_to(i).await?;
                let done = c
                    .call(&[
                        "EVAL",
                        CAS,
                        "1",
                        key.as_str(),
                        text.as_str(),
                        fence.as_str(),
                    ])
                    .await?;
                if done.as_integer() != Some(1) {
                    return Err(Error::new(
                        ErrorKind::Fenced,
                        format!(
                            "{}: the checkpoint {key} changed while it was fenced; call again",
                            self.side
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// A cluster: removes the checkpoints of `tag` that are fences (live ones are left alone).
    pub(crate) async fn delete_fences(&self, tag: &str) -> Result<(), Error> {
        const DEL: &str = "local v = redis.call('GET', KEYS[1]) if v and string.sub(v, 1, 6) == 'fenced' then redis.call('DEL', KEYS[1]) end return 0";
        for (i, key, _) in self.checkpoint_entries(tag).await? {
            self.conn_to(i)
                .await?
                .call(&["EVAL", DEL, "1", key.as_str()])
                .await?;
        }
        Ok(())
    }

    /// Whether the backlog of the master with node id `id` (the only master when `id` is empty) can continue
    /// its stream right after `at`.
    pub(crate) async fn backlog_holds_on(
        &mut self,
        id: &str,
        at: &ReplPosition,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let Some(i) = self
            .masters
            .iter()
            .position(|m| m.id == id)
            .or(id.is_empty().then_some(0))
        else {
            return Ok(false);
        };
        let opts = self.source_options(i, timeout);
        let resume = Resume {
            replid: &at.replid,
            offset: at.offset,
            db: 0,
        };
        let (_source, start) = PsyncSource::open(&opts, Some(resume)).await?;
        Ok(matches!(start, Start::Continue { .. }))
    }

    /// `FLUSHALL` on every master.
    pub(crate) async fn flush_all(&self) -> Result<(), Error> {
        for i in 0..self.masters.len() {
            self.conn_to(i).await?.call(&["FLUSHALL"]).await?;
        }
        Ok(())
    }

    /// The replication position of every master (with its cluster node id; empty for one server).
    pub(crate) async fn positions(&self) -> Result<Vec<(String, ReplPosition, String)>, Error> {
        let mut out = Vec::new();
        for (i, m) in self.masters.iter().enumerate() {
            let mut c = self.conn_to(i).await?;
            let info = text(&c.call(&["INFO", "replication"]).await?);
            out.push((
                m.id.clone(),
                ReplPosition {
                    replid: info_field(&info, "master_replid").unwrap_or_default(),
                    offset: info_field(&info, "master_repl_offset")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                },
                info_field(&info, "master_replid2").unwrap_or_default(),
            ));
        }
        Ok(out)
    }

    /// The record on this side, if any.
    pub(crate) async fn read_record(&mut self) -> Result<Option<Record>, Error> {
        let reply = self
            .conn
            .call(&["GET", record::key(&self.name).as_str()])
            .await?;
        if reply.is_null() {
            return Ok(None);
        }
        let raw = text(&reply);
        serde_json::from_str(&raw).map(Some).map_err(|e| {
            Error::data(format!(
                "{}: the DR record of {:?} is not readable: {e}",
                self.side, self.name
            ))
        })
    }

    /// Runs the transition script: `record` replaces the stored one if its epoch is higher, with the checkpoint
    /// keys of `keys` (tag, value; `None` deletes) written in the same script.
    pub(crate) async fn transition(
        &mut self,
        record: &Record,
        keys: &[(String, Option<String>)],
        fill: Fill,
    ) -> Result<Transition, Error> {
        let mut argv: Vec<Bytes> = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from(TRANSITION_SCRIPT),
            Bytes::from((1 + keys.len()).to_string()),
            Bytes::from(record::key(&self.name)),
        ];
        for (key, _) in keys {
            argv.push(Bytes::from(key.clone()));
        }
        let flag = |on: bool| Bytes::from_static(if on { b"1" } else { b"0" });
        argv.push(Bytes::from(record.epoch.to_string()));
        argv.push(Bytes::from(record.template(&fill)));
        argv.push(flag(fill.rpo));
        argv.push(flag(fill.position.is_some()));
        argv.push(flag(fill.flush));
        for (_, value) in keys {
            argv.push(Bytes::from(value.clone().unwrap_or_default()));
        }
        let reply = self.conn.call(&argv).await.map_err(|e| {
            Error::from(e).context(format!("{}: the DR record transition", self.side))
        })?;
        let items = reply
            .into_array()
            .ok_or_else(|| Error::data("the transition script answered no array"))?;
        let applied = items.first().and_then(Frame::as_integer).unwrap_or(0) == 1;
        let json = items.get(1).map(text).unwrap_or_default();
        let stored: Record = serde_json::from_str(&json).map_err(|e| {
            Error::data(format!("{}: the DR record is not readable: {e}", self.side))
        })?;
        Ok(if applied {
            Transition::Applied { record: stored }
        } else {
            Transition::Lost { stored }
        })
    }

    /// The lowest offset of the committed checkpoints of `tag` on this side (`None`: none, or one of them is
    /// fenced or a full copy in progress).
    pub(crate) async fn checkpoint_offset(&mut self, tag: &str) -> Result<Option<u64>, Error> {
        let entries = if self.is_cluster() {
            self.checkpoint_entries(tag).await?
        } else {
            let reply = self
                .conn
                .call(&["GET", checkpoint::key_name(tag).as_str()])
                .await?;
            match reply.as_bytes() {
                Some(v) => vec![(0, String::new(), v.to_vec())],
                None => Vec::new(),
            }
        };
        let mut min: Option<u64> = None;
        for (_, _, value) in &entries {
            match Checkpoint::decode(value)?.position() {
                Some(p) => min = Some(min.map_or(p.offset, |m| m.min(p.offset))),
                None => return Ok(None),
            }
        }
        Ok(min)
    }

    /// Keys of every database except ferry's own, on every master.
    pub(crate) async fn user_keys(&mut self) -> Result<u64, Error> {
        let mut total = 0;
        for i in 0..self.masters.len() {
            let mut c = self.conn_to(i).await?;
            total += user_keys_of(&mut c).await?;
        }
        Ok(total)
    }

    fn source_options(&self, i: usize, timeout: Duration) -> SourceOptions {
        let mut o = SourceOptions::new(self.masters[i].opts.clone());
        o.connect.connect_timeout = timeout;
        o.connect.read_timeout = None;
        o.connect.db = 0;
        o.handshake.retry_for = Duration::from_secs(5);
        o.handshake.line_timeout = timeout.max(Duration::from_secs(5));
        o
    }

    /// Counts the writes in this side's replication stream after `from` (ferry's own keys left out), up to the
    /// master's offset now: `None` when the stream cannot be read from there (another history, or the backlog
    /// no longer holds it).
    pub(crate) async fn count_writes_since(
        &mut self,
        from: &ReplPosition,
        timeout: Duration,
    ) -> Result<Option<u64>, Error> {
        // The master whose history holds `from` (its id now, or before a promotion).
        let positions = self.positions().await?;
        let found = positions
            .iter()
            .position(|(_, p, replid2)| p.replid == from.replid || *replid2 == from.replid)
            .or((positions.len() == 1).then_some(0));
        let Some(i) = found else {
            return Ok(None);
        };
        let now = positions[i].1.clone();
        if now.replid == from.replid && now.offset == from.offset {
            return Ok(Some(0));
        }
        let opts = self.source_options(i, timeout);
        let resume = Resume {
            replid: &from.replid,
            offset: from.offset,
            db: 0,
        };
        let (mut source, start) = PsyncSource::open(&opts, Some(resume)).await?;
        if let Start::Full { .. } = start {
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut count = 0u64;
        while source.offset() < now.offset {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left.min(timeout * 4), source.next_event())
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Connection,
                        format!(
                            "{}: reading the stream from offset {} stalled at {} (of {})",
                            self.side,
                            from.offset,
                            source.offset(),
                            now.offset
                        ),
                    )
                })??;
            if let StreamEvent::Unit(unit) = event {
                count += unit
                    .commands
                    .iter()
                    .filter(|c| !c.argv.get(1).is_some_and(|k| is_reserved_key(k)))
                    .count() as u64;
            }
        }
        Ok(Some(count))
    }

    /// Makes sure this side's master keeps a replication backlog, so that its writes from now on can be
    /// streamed from a position recorded now. A master that never had a replica has none (and its offset does
    /// not move): a replication handshake creates it (the full resync it starts is dropped at once).
    pub(crate) async fn ensure_backlog(&mut self, timeout: Duration) -> Result<(), Error> {
        let active = |info: &str| info_field(info, "repl_backlog_active").as_deref() == Some("1");
        for i in 0..self.masters.len() {
            let mut c = self.conn_to(i).await?;
            let info = text(&c.call(&["INFO", "replication"]).await?);
            if active(&info) {
                continue;
            }
            tracing::info!(side = %self.side, master = %format!("{}:{}", self.masters[i].opts.host, self.masters[i].opts.port),
                "creating a replication backlog on the master (it had none)");
            let opts = self.source_options(i, timeout);
            let (source, _) = PsyncSource::open(&opts, None).await?;
            drop(source);
            let info = text(&c.call(&["INFO", "replication"]).await?);
            if !active(&info) {
                return Err(Error::new(
                    ErrorKind::TargetRefused,
                    format!("{}: a master keeps no replication backlog", self.side),
                ));
            }
        }
        Ok(())
    }

    /// A connection to master `i`: this one for the record's master, else a new one kept in `other`.
    async fn master_conn<'a>(
        &'a mut self,
        i: usize,
        other: &'a mut Option<Connection>,
    ) -> Result<&'a mut Connection, Error> {
        if i == self.record_ix {
            return Ok(&mut self.conn);
        }
        Ok(other.insert(self.conn_to(i).await?))
    }

    /// Runs `argv` on every master (on this connection for the record's master).
    async fn on_every_master(&mut self, argv: &[&str]) -> Result<(), Error> {
        for i in 0..self.masters.len() {
            let mut other = None;
            self.master_conn(i, &mut other).await?.call(argv).await?;
        }
        Ok(())
    }

    /// Makes every master refuse writes (`NOREPLICAS`) until [`Deploy::unfence_writes`], whatever happens to the
    /// process that asked: `min-replicas-to-write` raised by [`WRITE_FENCE`] (no master has that many replicas),
    /// so the original value stays readable and a later call, in any process, can restore it. Returns false
    /// when a master cannot be fenced so (`CONFIG` refused, as some managed services do, or
    /// `min-replicas-max-lag 0`, which turns the check off): then only the `CLIENT PAUSE` holds B, until its
    /// timeout.
    pub(crate) async fn fence_writes(&mut self) -> Result<bool, Error> {
        let mut all = true;
        for i in 0..self.masters.len() {
            let mut other = None;
            let c = self.master_conn(i, &mut other).await?;
            let (Some(n), Some(lag)) = (
                config_int(c, "min-replicas-to-write").await,
                config_int(c, "min-replicas-max-lag").await,
            ) else {
                all = false;
                continue;
            };
            if lag == 0 {
                all = false;
                continue;
            }
            if n < WRITE_FENCE {
                let raised = (n + WRITE_FENCE).to_string();
                if c.call(&["CONFIG", "SET", "min-replicas-to-write", &raised])
                    .await
                    .is_err()
                {
                    all = false;
                }
            }
        }
        if !all {
            tracing::warn!(side = %self.side, "writes cannot be refused through min-replicas-to-write on every master (CONFIG refused, or min-replicas-max-lag 0): only the pause holds them");
        }
        Ok(all)
    }

    /// Lifts [`Deploy::fence_writes`] on every master where it is set (`min-replicas-to-write` back to its value
    /// from before).
    pub(crate) async fn unfence_writes(&mut self) -> Result<(), Error> {
        for i in 0..self.masters.len() {
            let mut other = None;
            let c = self.master_conn(i, &mut other).await?;
            if let Some(n) = config_int(c, "min-replicas-to-write").await {
                if n >= WRITE_FENCE {
                    let before = (n - WRITE_FENCE).to_string();
                    c.call(&["CONFIG", "SET", "min-replicas-to-write", &before])
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// `CLIENT PAUSE <ms> WRITE`.
    pub(crate) async fn pause_writes(&mut self, ms: u64) -> Result<(), Error> {
        self.on_every_master(&["CLIENT", "PAUSE", ms.to_string().as_str(), "WRITE"])
            .await
    }

    /// `CLIENT UNPAUSE`.
    pub(crate) async fn unpause(&mut self) -> Result<(), Error> {
        self.on_every_master(&["CLIENT", "UNPAUSE"]).await
    }

    /// Disconnects every normal client but this one (clients blocked by a pause never run their writes).
    pub(crate) async fn kill_clients(&mut self) -> Result<(), Error> {
        self.on_every_master(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
            .await
    }
}

/// The position of A's stream a checkpoint value stands for: a committed checkpoint's, or the one a fence written
/// by [`Deploy::fence_keeping_positions`] replaced (`fenced epoch=<e> at=<replid>:<offset>`).
pub(crate) fn held_position(value: &[u8]) -> Result<Option<(String, u64)>, Error> {
    Ok(match Checkpoint::decode(value)? {
        Checkpoint::Committed(p) => Some((p.replid.clone(), p.offset)),
        Checkpoint::Fenced { .. } => String::from_utf8_lossy(value)
            .split(' ')
            .find_map(|f| f.strip_prefix("at="))
            .and_then(|v| v.split_once(':'))
            .and_then(|(r, o)| Some((r.to_string(), o.parse().ok()?))),
        _ => None,
    })
}

/// What [`Deploy::fence_writes`] adds to `min-replicas-to-write`: more replicas than any master has, and with any
/// sane setting still below the largest value Redis takes (`INT_MAX`).
pub(crate) const WRITE_FENCE: i64 = 1_000_000_000;

/// An integer setting of the server behind `c` (`CONFIG GET`), or `None` when it cannot be read.
async fn config_int(c: &mut Connection, name: &str) -> Option<i64> {
    let value = match c.call(&["CONFIG", "GET", name]).await.ok()? {
        Frame::Map(pairs) => pairs.into_iter().next()?.1,
        other => other.into_array()?.into_iter().nth(1)?,
    };
    text(&value).trim().parse().ok()
}

/// Keys of every database of the server behind `c`, except ferry's own.
async fn user_keys_of(c: &mut Connection) -> Result<u64, Error> {
    let info = text(&c.call(&["INFO", "keyspace"]).await?);
    let mut total = 0u64;
    for line in info.lines() {
        let Some((db, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(db) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let keys: u64 = rest
            .split(',')
            .find_map(|f| f.strip_prefix("keys="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        total += keys;
        // ferry's own keys of this database.
        c.call(&["SELECT", db.to_string().as_str()]).await?;
        let mut cursor = "0".to_string();
        loop {
            let reply = c
                .call(&["SCAN", cursor.as_str(), "MATCH", "ferry:*", "COUNT", "1000"])
                .await?;
            let mut items = reply.into_array().unwrap_or_default().into_iter();
            cursor = items.next().map(|f| text(&f)).unwrap_or_else(|| "0".into());
            let found = items.next().and_then(Frame::into_array).unwrap_or_default();
            total = total.saturating_sub(
                found
                    .iter()
                    .filter(|k| k.as_bytes().is_some_and(is_reserved_key))
                    .count() as u64,
            );
            if cursor == "0" {
                break;
            }
        }
    }
    c.call(&["SELECT", "0"]).await?;
    Ok(total)
}
