//! A plain master/replica pair, switched by hand or by a watchdog (what keepalived scripts do with
//! `SLAVEOF NO ONE`), with the guards those scripts lack:
//!
//! - [`demote`] never makes a node with data a replica of an empty peer, or of a peer behind it (a smaller
//!   replication offset), unless forced: replicating from it would wipe the node's newer data.
//! - [`promote`] says when the node's link to its master was down longer than a bound (the node may miss what
//!   the master accepted since), and refuses unless forced.
//! - [`watch`] promotes the replica after `fall` failed health checks of the master (keepalived's `fall 3`),
//!   with [`promote`]'s guard.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::side::info_field;
use crate::config::Endpoint;
use crate::error::{Error, ErrorKind};

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// `host:port`.
    pub addr: String,
    /// `master` or `slave`.
    pub role: String,
    /// Its replication id.
    pub replid: String,
    /// Its previous replication id (after a promotion), all zeros if none.
    pub replid2: String,
    /// Its replication offset.
    pub offset: u64,
    /// Keys in all databases.
    pub keys: u64,
    /// A replica: its master, `host:port`.
    pub master: Option<String>,
    /// A replica: whether its link to the master is up.
    pub link_up: Option<bool>,
    /// A replica whose link is down: for how many seconds.
    pub link_down_secs: Option<u64>,
}

async fn conn(node: &Endpoint, timeout: Duration) -> Result<ferry_resp::Connection, Error> {
    let mut o = node.connect_options()?;
    o.connect_timeout = timeout;
    o.read_timeout = Some(timeout);
    ferry_resp::Connection::connect(&o)
        .await
        .map_err(|e| Error::from(e).context(node.host_port()))
}

fn text(f: &ferry_resp::Frame) -> String {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Reads a node's role, replication id and offset, and dataset size.
pub async fn inspect(node: &Endpoint) -> Result<NodeInfo, Error> {
    let mut c = conn(node, Duration::from_secs(3)).await?;
    let repl = text(&c.call(&["INFO", "replication"]).await?);
    let keyspace = text(&c.call(&["INFO", "keyspace"]).await?);
    let keys = keyspace
        .lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|f| f.strip_prefix("keys="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    let field = |f: &str| info_field(&repl, f);
    let role = field("role").unwrap_or_default();
    let replica = role == "slave";
    Ok(NodeInfo {
        addr: node.host_port(),
        replid: field("master_replid").unwrap_or_default(),
        replid2: field("master_replid2").unwrap_or_default(),
        offset: field("master_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        keys,
        master: replica.then(|| {
            format!(
                "{}:{}",
                field("master_host").unwrap_or_default(),
                field("master_port").unwrap_or_default()
            )
        }),
        link_up: replica.then(|| field("master_link_status").as_deref() == Some("up")),
        link_down_secs: field("master_link_down_since_seconds")
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|s| *s >= 0)
            .map(|s| s as u64),
        role,
    })
}

/// Options of [`promote`] and [`watch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PromoteOptions {
    /// A replica whose link to its master was down longer than this (seconds) is promoted only with `force`.
    pub max_link_down_secs: u64,
    /// Promote whatever the guards say.
    pub force: bool,
}

impl Default for PromoteOptions {
    fn default() -> Self {
        PromoteOptions {
            max_link_down_secs: 60,
            force: false,
        }
    }
}

/// What [`promote`] or [`demote`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SwitchReport {
    /// The node before the call.
    pub before: NodeInfo,
    /// Whether the node was changed (false: it already was what was asked).
    pub changed: bool,
    /// Warnings (a guard that `force` overrode).
    pub warnings: Vec<String>,
}

/// Makes `node` a master (`REPLICAOF NO ONE`). Refused, unless forced, when its link to its master was down
/// longer than `max_link_down_secs`.
pub async fn promote(node: &Endpoint, opts: &PromoteOptions) -> Result<SwitchReport, Error> {
    let before = inspect(node).await?;
    if before.role == "master" {
        return Ok(SwitchReport {
            before,
            changed: false,
            warnings: Vec::new(),
        });
    }
    let mut warnings = Vec::new();
    if let Some(down) = before.link_down_secs {
        if down > opts.max_link_down_secs {
            let w = format!(
                "{}'s link to its master was down for {down} s (bound {} s): it may miss writes the master accepted since",
                before.addr, opts.max_link_down_secs
            );
            if !opts.force {
                return Err(Error::new(
                    ErrorKind::TargetRefused,
                    format!("promote refused: {w}; use --force"),
                ));
            }
            warnings.push(w);
        }
    }
    let mut c = conn(node, Duration::from_secs(3)).await?;
    c.call(&["REPLICAOF", "NO", "ONE"]).await?;
    Ok(SwitchReport {
        before,
        changed: true,
        warnings,
    })
}

/// Makes `node` a replica of `peer`. Refused, unless `force`, when `node` holds data and `peer` is empty, or
/// `peer` is behind `node` (a smaller replication offset): a full resync from it would wipe `node`'s data.
pub async fn demote(node: &Endpoint, peer: &Endpoint, force: bool) -> Result<SwitchReport, Error> {
    let before = inspect(node).await?;
    let other = inspect(peer).await?;
    let peer_addr = other.addr.clone();
    if before.master.as_deref() == Some(peer_addr.as_str()) {
        return Ok(SwitchReport {
            before,
            changed: false,
            warnings: Vec::new(),
        });
    }
    let mut problems = Vec::new();
    if before.keys > 0 && other.keys == 0 {
        problems.push(format!(
            "{} holds {} keys and {peer_addr} is empty (a freshly restarted server?)",
            before.addr, before.keys
        ));
    }
    let same_history = before.replid == other.replid || before.replid == other.replid2;
    if other.offset < before.offset {
        problems.push(format!(
            "{peer_addr} is behind {}: offset {} < {}{}",
            before.addr,
            other.offset,
            before.offset,
            if same_history {
                " in the same history"
            } else {
                " (another history)"
            }
        ));
    }
    if !problems.is_empty() && !force {
        return Err(Error::new(
            ErrorKind::TargetRefused,
            format!(
                "demote refused: {}; replicating from {peer_addr} would replace {}'s data. Use --force to do it anyway",
                problems.join("; "),
                before.addr
            ),
        ));
    }
    let o = peer.connect_options()?;
    let mut c = conn(node, Duration::from_secs(3)).await?;
    if let Some(p) = &o.password {
        c.call(&["CONFIG", "SET", "masterauth", p.expose()]).await?;
    }
    if let Some(u) = &o.username {
        c.call(&["CONFIG", "SET", "masteruser", u.as_str()]).await?;
    }
    c.call(&["REPLICAOF", o.host.as_str(), o.port.to_string().as_str()])
        .await?;
    Ok(SwitchReport {
        before,
        changed: true,
        warnings: problems,
    })
}

/// Options of [`watch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Milliseconds between health checks (`PING` with this deadline).
    pub interval_ms: u64,
    /// Failed checks in a row before the replica is promoted (keepalived's `fall`).
    pub fall: u32,
    /// The guard of the promotion.
    pub promote: PromoteOptions,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval_ms: 1000,
            fall: 3,
            promote: PromoteOptions::default(),
        }
    }
}

/// How [`watch`] ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WatchOutcome {
    /// The master failed `fall` checks and the replica was promoted.
    Promoted {
        /// What promote did.
        report: SwitchReport,
    },
    /// Stopped by the caller.
    Stopped,
}

/// Checks `master` every `interval_ms`; after `fall` failures in a row promotes `replica` (with [`promote`]'s
/// guard: a refused promotion is the error).
pub async fn watch(
    master: &Endpoint,
    replica: &Endpoint,
    opts: &WatchOptions,
    cancel: CancellationToken,
) -> Result<WatchOutcome, Error> {
    let interval = Duration::from_millis(opts.interval_ms.max(10));
    let mut failed = 0u32;
    loop {
        let ok = async {
            let mut c = conn(master, interval).await?;
            c.call(&["PING"]).await?;
            Ok::<_, Error>(())
        }
        .await;
        match ok {
            Ok(()) => failed = 0,
            Err(e) => {
                failed += 1;
                tracing::warn!(master = %master.host_port(), failed, of = opts.fall, error = %e, "health check failed");
                if failed >= opts.fall.max(1) {
                    let report = promote(replica, &opts.promote).await?;
                    tracing::info!(replica = %replica.host_port(), "replica promoted");
                    return Ok(WatchOutcome::Promoted { report });
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(WatchOutcome::Stopped),
            () = tokio::time::sleep(interval) => {}
        }
    }
}
