//! One side of a pair as the calls see it: the master holding the record, and what the calls ask of it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_replicator::checkpoint::{self, Checkpoint};
use ferry_replicator::pipeline::filter::is_reserved_key;
use ferry_replicator::source::{Resume, Source as PsyncSource, SourceOptions, Start, StreamEvent};
use ferry_resp::{ConnectOptions, Connection, Frame};

use super::record::{self, Fill, Record, TRANSITION_SCRIPT};
use super::{Deployment, ReplPosition, Side, Transition};
use crate::error::{Error, ErrorKind};

/// A connection to the master of one side that holds the pair's record (and the checkpoints the pair fences).
pub(crate) struct Deploy {
    side: Side,
    name: String,
    master: ConnectOptions,
    conn: Connection,
}

impl std::fmt::Debug for Deploy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Deploy({} at {}:{})",
            self.side, self.master.host, self.master.port
        )
    }
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
        let master = match d {
            Deployment::Standalone(e) => e.connect_options()?,
            Deployment::Sentinel { .. } => sentinel_master(d, timeout).await?,
            Deployment::Cluster { .. } => {
                return Err(Error::not_supported("a cluster as a side of a DR pair"))
            }
        };
        let conn = connect(&master, timeout)
            .await
            .map_err(|e| e.context(format!("{side}")))?;
        Ok(Deploy {
            side,
            name: name.to_string(),
            master,
            conn,
        })
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
        for (tag, _) in keys {
            argv.push(Bytes::from(checkpoint::key_name(tag)));
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

    /// `master_replid` and `master_repl_offset` of this side's master.
    pub(crate) async fn repl_position(&mut self) -> Result<ReplPosition, Error> {
        let info = text(&self.conn.call(&["INFO", "replication"]).await?);
        let replid = info_field(&info, "master_replid").unwrap_or_default();
        let offset = info_field(&info, "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(ReplPosition { replid, offset })
    }

    /// The offset of the committed checkpoint `tag` on this side (`None`: absent, fenced, or a full copy in
    /// progress).
    pub(crate) async fn checkpoint_offset(&mut self, tag: &str) -> Result<Option<u64>, Error> {
        let reply = self
            .conn
            .call(&["GET", checkpoint::key_name(tag).as_str()])
            .await?;
        let Some(value) = reply.as_bytes() else {
            return Ok(None);
        };
        Ok(Checkpoint::decode(value)?.position().map(|p| p.offset))
    }

    /// Keys of every database except ferry's own.
    pub(crate) async fn user_keys(&mut self) -> Result<u64, Error> {
        let info = text(&self.conn.call(&["INFO", "keyspace"]).await?);
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
            self.conn.call(&["SELECT", db.to_string().as_str()]).await?;
            let mut cursor = "0".to_string();
            loop {
                let reply = self
                    .conn
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
        self.conn.call(&["SELECT", "0"]).await?;
        Ok(total)
    }

    fn source_options(&self, timeout: Duration) -> SourceOptions {
        let mut o = SourceOptions::new(self.master.clone());
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
        let now = self.repl_position().await?;
        if now.replid == from.replid && now.offset == from.offset {
            return Ok(Some(0));
        }
        let opts = self.source_options(timeout);
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

    /// Whether this side's backlog can continue its stream right after `at` (a `PSYNC` that is dropped at once).
    pub(crate) async fn backlog_holds(
        &mut self,
        at: &ReplPosition,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let opts = self.source_options(timeout);
        let resume = Resume {
            replid: &at.replid,
            offset: at.offset,
            db: 0,
        };
        let (_source, start) = PsyncSource::open(&opts, Some(resume)).await?;
        Ok(matches!(start, Start::Continue { .. }))
    }

    /// Makes sure this side's master keeps a replication backlog, so that its writes from now on can be
    /// streamed from a position recorded now. A master that never had a replica has none (and its offset does
    /// not move): a replication handshake creates it (the full resync it starts is dropped at once).
    pub(crate) async fn ensure_backlog(&mut self, timeout: Duration) -> Result<(), Error> {
        let active = |info: &str| info_field(info, "repl_backlog_active").as_deref() == Some("1");
        let info = text(&self.conn.call(&["INFO", "replication"]).await?);
        if active(&info) {
            return Ok(());
        }
        tracing::info!(side = %self.side, "creating a replication backlog on the master (it had none)");
        let opts = self.source_options(timeout);
        let (source, _) = PsyncSource::open(&opts, None).await?;
        drop(source);
        let info = text(&self.conn.call(&["INFO", "replication"]).await?);
        if active(&info) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::TargetRefused,
                format!("{}: the master keeps no replication backlog", self.side),
            ))
        }
    }

    /// `CLIENT PAUSE <ms> WRITE`.
    pub(crate) async fn pause_writes(&mut self, ms: u64) -> Result<(), Error> {
        self.conn
            .call(&["CLIENT", "PAUSE", ms.to_string().as_str(), "WRITE"])
            .await?;
        Ok(())
    }

    /// `CLIENT UNPAUSE`.
    pub(crate) async fn unpause(&mut self) -> Result<(), Error> {
        self.conn.call(&["CLIENT", "UNPAUSE"]).await?;
        Ok(())
    }

    /// Disconnects every normal client but this one (clients blocked by a pause never run their writes).
    pub(crate) async fn kill_clients(&mut self) -> Result<(), Error> {
        self.conn
            .call(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
            .await?;
        Ok(())
    }
}
