//! The replica gate of a cluster source shard streamed from its master (see [`crate::cluster_source`]): a part
//! of the stream is applied only once some replica of that master holds it, so a master that dies never leaves
//! the target ahead of the replica promoted in its place.
//!
//! What a replica holds is read two ways, and the higher counts:
//! - the master's `INFO replication` (`slaveN:...,offset=`): the replica's last `REPLCONF ACK`, which Redis
//!   replicas send once a second (and on `REPLCONF GETACK`, which a master does not send while its clients are
//!   paused);
//! - the replica's own `INFO replication` (`slave_repl_offset`, what it has applied of its master's stream), when
//!   ferry can reach the address the master lists for it with the master's credentials, the replica's link is up
//!   and it follows the master's replication id. This one is current, so a write is let through a few
//!   milliseconds after the replica applied it instead of up to a second later (a DR switchback from a cluster
//!   waits for exactly that while writes are paused).
//!
//! The gate polls every [`IDLE_POLL`], and every [`WAITING_POLL`] while a session waits for an offset that is not
//! open yet: under steady writes that is about 200 `INFO replication` a second on the master and on one
//! replica of each gated shard (each a few microseconds of their CPU), the price of applying a write within
//! milliseconds of its replica having it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_resp::{ConnectOptions, Connection};
use tokio::sync::watch;
use tracing::debug;

use crate::cluster_source::info_text;
use crate::error::Error;

/// How often the offsets are read while nothing waits.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often they are read while a session waits for the gate.
const WAITING_POLL: Duration = Duration::from_millis(5);
/// Longest wait for one replica's connect or answer; a replica slower than that is read through the master only.
const REPLICA_DEADLINE: Duration = Duration::from_millis(300);
/// After a replica could not be reached (the address its master lists may not be routable from here, in a
/// container network for one), how long before it is tried again: each try can hold the poll for
/// [`REPLICA_DEADLINE`].
const REPLICA_RETRY: Duration = Duration::from_secs(30);

/// Lets a shard's stream through only as far as a replica of its master holds it.
pub(crate) struct ReplicaGate {
    open: watch::Receiver<u64>,
    /// The highest offset a session waits for; the poller reads fast while it is above what is open.
    wanted: watch::Sender<u64>,
    _poller: crate::job::AbortOnDrop,
}

impl ReplicaGate {
    /// Starts polling the master on `master` (and its replicas).
    pub(crate) fn start(master: ConnectOptions) -> ReplicaGate {
        let (open_tx, open) = watch::channel(0u64);
        let (wanted, wanted_rx) = watch::channel(0u64);
        let poller = tokio::spawn(poll(master, open_tx, wanted_rx));
        ReplicaGate {
            open,
            wanted,
            _poller: crate::job::AbortOnDrop(poller),
        }
    }

    /// Whether the stream up to `offset` may be applied now.
    pub(crate) fn passes(&self, offset: u64) -> bool {
        *self.open.borrow() >= offset
    }

    /// Waits until the stream up to `offset` may be applied.
    pub(crate) async fn wait_for(&self, offset: u64) -> Result<(), Error> {
        self.wanted.send_if_modified(|w| {
            let higher = offset > *w;
            if higher {
                *w = offset;
            }
            higher
        });
        let mut rx = self.open.clone();
        rx.wait_for(|&o| o >= offset)
            .await
            .map(|_| ())
            .map_err(|_| {
                Error::Failover("the source master's replica offsets are no longer read".into())
            })
    }
}

/// One replica as the master lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    host: String,
    port: u16,
    /// Its last acknowledgement.
    acked: u64,
}

/// The master's side of `INFO replication`.
#[derive(Debug, Default, PartialEq, Eq)]
struct MasterView {
    replid: Option<String>,
    /// Online replicas that can be promoted (ferry's own links announce port 0 and are left out).
    replicas: Vec<Listed>,
}

/// A connection to one replica, or when it failed last.
enum ReplicaLink {
    Up(Box<Connection>),
    Failed(Instant),
}

/// The poller: publishes the highest offset a replica holds (`u64::MAX` while the master lists no replica:
/// nothing can then be promoted with less than the master has).
async fn poll(master: ConnectOptions, open: watch::Sender<u64>, mut wanted: watch::Receiver<u64>) {
    let mut conn: Option<Connection> = None;
    let mut links: HashMap<(String, u16), ReplicaLink> = HashMap::new();
    loop {
        if conn.is_none() {
            conn = Connection::connect(&master).await.ok();
        }
        let view = match conn.as_mut() {
            Some(c) => info_text(c, "replication")
                .await
                .map(|text| master_view(&text)),
            None => Err(Error::Failover("the source master is unreachable".into())),
        };
        match view {
            Ok(view) if view.replicas.is_empty() => {
                open.send_replace(u64::MAX);
                links.clear();
            }
            Ok(view) => {
                let held = held_offset(&master, &view, &mut links).await;
                open.send_if_modified(|v| {
                    // Up with each acknowledgement; down from "open" once a replica is back.
                    let change = held > *v || *v == u64::MAX;
                    if change {
                        *v = held;
                    }
                    change
                });
            }
            Err(e) => {
                conn = None;
                debug!(error = %e, "cannot read the source master's replica offsets");
            }
        }
        let waiting = *wanted.borrow_and_update() > *open.borrow();
        if waiting {
            tokio::time::sleep(WAITING_POLL).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(IDLE_POLL) => {}
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The highest offset some listed replica holds: its acknowledgement, or what it reports itself when it is
/// reachable and follows this master's history.
async fn held_offset(
    master: &ConnectOptions,
    view: &MasterView,
    links: &mut HashMap<(String, u16), ReplicaLink>,
) -> u64 {
    links.retain(|(host, port), _| {
        view.replicas
            .iter()
            .any(|r| r.host == *host && r.port == *port)
    });
    let mut held = 0;
    for r in &view.replicas {
        held = held.max(r.acked);
        let Some(replid) = &view.replid else { continue };
        let key = (r.host.clone(), r.port);
        let link = match links.remove(&key) {
            Some(ReplicaLink::Failed(at)) if at.elapsed() < REPLICA_RETRY => {
                links.insert(key, ReplicaLink::Failed(at));
                continue;
            }
            Some(ReplicaLink::Up(c)) => Some(*c),
            _ => None,
        };
        let mut c = match link {
            Some(c) => c,
            None => {
                let mut opts = master.clone();
                opts.host.clone_from(&r.host);
                opts.port = r.port;
                opts.db = 0;
                opts.connect_timeout = REPLICA_DEADLINE;
                match Connection::connect(&opts).await {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(replica = %format!("{}:{}", r.host, r.port), error = %e, "a source replica is read through its master only");
                        links.insert(key, ReplicaLink::Failed(Instant::now()));
                        continue;
                    }
                }
            }
        };
        match tokio::time::timeout(REPLICA_DEADLINE, info_text(&mut c, "replication")).await {
            Ok(Ok(text)) => {
                if let Some(o) = replica_applied(&text, replid) {
                    held = held.max(o);
                }
                links.insert(key, ReplicaLink::Up(Box::new(c)));
            }
            _ => {
                links.insert(key, ReplicaLink::Failed(Instant::now()));
            }
        }
    }
    held
}

/// The master's replication id and its online, promotable replicas, from its `INFO replication`.
fn master_view(info: &str) -> MasterView {
    let mut view = MasterView::default();
    for line in info.lines() {
        if let Some(id) = line.strip_prefix("master_replid:") {
            view.replid = Some(id.trim().to_string());
            continue;
        }
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if !name.starts_with("slave") || !fields.starts_with("ip=") {
            continue;
        }
        let field = |k: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(k))
                .map(str::trim)
        };
        let port = field("port=").and_then(|p| p.parse::<u16>().ok());
        let acked = field("offset=").and_then(|o| o.parse::<u64>().ok());
        if let (Some(host), Some(port), Some(acked), Some("online")) =
            (field("ip="), port, acked, field("state="))
        {
            if port != 0 {
                view.replicas.push(Listed {
                    host: host.to_string(),
                    port,
                    acked,
                });
            }
        }
    }
    view
}

/// What a replica has applied of the stream with id `replid`, from its own `INFO replication`: only while its
/// link is up and it follows that history (a replica in a full resync, or of another master, holds nothing of it).
fn replica_applied(info: &str, replid: &str) -> Option<u64> {
    let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    if field("role:") != Some("slave")
        || field("master_link_status:") != Some("up")
        || field("master_replid:") != Some(replid)
    {
        return None;
    }
    field("slave_repl_offset:").and_then(|o| o.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_lists_its_online_promotable_replicas_and_their_acknowledgements() {
        let info = "role:master\r\nconnected_slaves:3\r\n\
                    slave0:ip=127.0.0.1,port=7001,state=online,offset=500,lag=0\r\n\
                    slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n\
                    slave2:ip=127.0.0.1,port=0,state=online,offset=900,lag=0\r\n\
                    master_failover_state:no-failover\r\n\
                    master_replid:abc\r\nmaster_replid2:0000\r\nmaster_repl_offset:950\r\n";
        assert_eq!(
            master_view(info),
            MasterView {
                replid: Some("abc".into()),
                replicas: vec![Listed {
                    host: "127.0.0.1".into(),
                    port: 7001,
                    acked: 500
                }],
            }
        );
        assert!(master_view("role:master\r\nconnected_slaves:0\r\n")
            .replicas
            .is_empty());
    }

    #[test]
    fn a_replica_counts_only_with_its_link_up_on_the_same_history() {
        let info = |link: &str, id: &str| {
            format!(
                "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:{link}\r\n\
                 slave_read_repl_offset:1300\r\nslave_repl_offset:1200\r\nmaster_replid:{id}\r\n\
                 master_repl_offset:1200\r\n"
            )
        };
        assert_eq!(replica_applied(&info("up", "abc"), "abc"), Some(1200));
        assert_eq!(replica_applied(&info("down", "abc"), "abc"), None);
        assert_eq!(replica_applied(&info("up", "other"), "abc"), None);
        assert_eq!(
            replica_applied("role:master\r\nmaster_replid:abc\r\n", "abc"),
            None
        );
    }
}
