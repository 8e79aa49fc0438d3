//! A Redis Cluster of masters and replicas on loopback ports.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::{link_up, master_auth_config, TOPOLOGY_DEADLINE};
use crate::error::RedisContext;
use crate::target::{node_hostport, slot_ranges};
use crate::{key_slot, wait_until, Error, Server, ServerOptions, Target, Version};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How to build a [`Cluster`]. Defaults: 7.0, 3 masters, 1 replica each, no password, node timeout 3000 ms.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Redis version of every node.
    pub version: Version,
    /// Number of masters (slots split evenly).
    pub masters: usize,
    /// Replicas per master.
    pub replicas_per_master: usize,
    /// `requirepass` (and `masterauth`) of every node.
    pub password: Option<String>,
    /// `cluster-node-timeout`.
    pub node_timeout: Duration,
    /// Every node also listens with TLS ([`ServerOptions::tls`], 7.0 only) and the cluster bus and
    /// replication run over TLS (`tls-cluster yes`, `tls-replication yes`). The plain ports stay open for the
    /// testkit; TLS clients get TLS ports in CLUSTER SLOTS / MOVED and `tls-port` in CLUSTER SHARDS.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            version: Version::V7_0,
            masters: 3,
            replicas_per_master: 1,
            password: None,
            node_timeout: Duration::from_millis(3000),
            tls: false,
        }
    }
}

impl fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("version", &self.version)
            .field("masters", &self.masters)
            .field("replicas_per_master", &self.replicas_per_master)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("node_timeout", &self.node_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClusterOptions {
    /// Defaults for `version`.
    pub fn new(version: Version) -> Self {
        ClusterOptions {
            version,
            ..Default::default()
        }
    }

    /// Sets every node's password.
    pub fn password(mut self, p: impl Into<String>) -> Self {
        self.password = Some(p.into());
        self
    }

    /// Turns TLS on or off for every node (see [`ClusterOptions::tls`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
}

/// A Redis Cluster: the first `masters` nodes own the slots (split evenly), the rest replicate them in turn.
///
/// [`Cluster::start`] returns once every node reports `cluster_state:ok`, knows every other node, and every
/// replica's link to its master is up.
#[derive(Debug)]
pub struct Cluster {
    /// All nodes: masters first, then replicas (roles at start).
    pub nodes: Vec<Server>,
    /// The options the cluster was built with.
    pub options: ClusterOptions,
}

impl Cluster {
    /// The default cluster (3 masters + 3 replicas) of `version`.
    pub fn start(version: Version) -> Result<Cluster, Error> {
        Self::start_with(ClusterOptions::new(version))
    }

    /// A cluster as `opts` says.
    pub fn start_with(opts: ClusterOptions) -> Result<Cluster, Error> {
        if opts.masters == 0 || opts.masters > usize::from(SLOTS) {
            return Err(Error::InvalidArgument(format!(
                "a cluster needs 1..=16384 masters, not {}",
                opts.masters
            )));
        }
        let mut node_opts = ServerOptions::new(opts.version).cluster().tls(opts.tls);
        node_opts.password = opts.password.clone();
        let auth = master_auth_config(&node_opts);
        node_opts.config.extend(auth);
        node_opts.config.push((
            "cluster-node-timeout".into(),
            opts.node_timeout.as_millis().to_string(),
        ));
        let total = opts.masters * (1 + opts.replicas_per_master);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(Server::start(node_opts.clone())?);
        }
        let cluster = Cluster {
            nodes,
            options: opts,
        };
        cluster.assemble()?;
        cluster.wait_ok(TOPOLOGY_DEADLINE)?;
        Ok(cluster)
    }

    fn assemble(&self) -> Result<(), Error> {
        let masters = self.options.masters;
        let mut ids = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let mut con = node.try_client()?;
            // Distinct epochs up front, as redis-cli does, so no epoch collision has to be resolved.
            redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .exec(&mut con)
                .ctx(|| format!("CLUSTER SET-CONFIG-EPOCH on {}", node.addr()))?;
            let id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut con)
                .ctx(|| format!("CLUSTER MYID on {}", node.addr()))?;
            ids.push(id);
        }
        for (i, node) in self.nodes.iter().take(masters).enumerate() {
            let first = i * usize::from(SLOTS) / masters;
            let last = (i + 1) * usize::from(SLOTS) / masters - 1;
            let mut con = node.try_client()?;
            let cmd = if self.options.version.is_7() {
                let mut c = redis::cmd("CLUSTER");
                c.arg("ADDSLOTSRANGE").arg(first).arg(last);
                c
            } else {
                let mut c = redis::cmd("CLUSTER");
                c.arg("ADDSLOTS");
                for s in first..=last {
                    c.arg(s);
                }
                c
            };
            cmd.exec(&mut con)
                .ctx(|| format!("assigning slots {first}-{last} to {}", node.addr()))?;
        }
        let first = &self.nodes[0];
        let mut con = first.try_client()?;
        for node in &self.nodes[1..] {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg(node.host());
            match node.tls_port() {
                // With tls-cluster the bus listens on the TLS port + 10000.
                Some(tls_port) => meet
                    .arg(tls_port)
                    .arg(u32::from(tls_port) + u32::from(crate::port::CLUSTER_BUS_OFFSET)),
                None => meet.arg(node.port()),
            };
            meet.exec(&mut con)
                .ctx(|| format!("CLUSTER MEET {}", node.addr()))?;
        }
        wait_until(
            TOPOLOGY_DEADLINE,
            "every cluster node to know every other node",
            || {
                self.nodes.iter().all(|n| {
                    self.cluster_nodes(n).is_ok_and(|lines| {
                        ids.iter().all(|id| {
                            lines.iter().any(|l| {
                                l.id == *id
                                    && !l.flags.iter().any(|f| f == "handshake" || f == "noaddr")
                            })
                        })
                    })
                })
            },
        )?;
        for (j, node) in self.nodes.iter().enumerate().skip(masters) {
            let master_id = &ids[(j - masters) % masters];
            let mut con = node.try_client()?;
            redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(master_id)
                .exec(&mut con)
                .ctx(|| format!("CLUSTER REPLICATE on {}", node.addr()))?;
        }
        Ok(())
    }

    /// Waits until every node says `cluster_state:ok` with all slots assigned, every node sees the same number
    /// of replicas, and every replica's link is up.
    pub fn wait_ok(&self, deadline: Duration) -> Result<(), Error> {
        let n = self.nodes.len();
        let replicas = self.options.masters * self.options.replicas_per_master;
        wait_until(
            deadline,
            "cluster_state:ok on every node with all replicas attached",
            || {
                self.nodes.iter().all(|node| {
                    let Ok(mut con) = node.try_client() else {
                        return false;
                    };
                    let Ok(info) = redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut con)
                    else {
                        return false;
                    };
                    let ok = info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_slots_ok:{SLOTS}"))
                        && info.contains(&format!("cluster_known_nodes:{n}"));
                    ok && self.cluster_nodes(node).is_ok_and(|lines| {
                        lines
                            .iter()
                            .filter(|l| l.flags.iter().any(|f| f == "slave"))
                            .count()
                            == replicas
                            && lines.iter().all(|l| {
                                !l.flags
                                    .iter()
                                    .any(|f| f.contains("fail") || f == "handshake")
                            })
                    })
                }) && self.replicas().iter().all(|r| link_up(r))
            },
        )
    }

    fn cluster_nodes(&self, node: &Server) -> Result<Vec<NodeLine>, Error> {
        let mut con = node.try_client()?;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut con)
            .ctx(|| format!("CLUSTER NODES on {}", node.addr()))?;
        Ok(text.lines().filter_map(NodeLine::parse).collect())
    }

    /// The nodes that are masters now (by `ROLE`), in `nodes` order.
    pub fn masters(&self) -> Vec<&Server> {
        self.nodes
            .iter()
            .filter(|n| super::role(n).is_ok_and(|r| r == "master"))
            .collect()
    }

    /// The nodes that are replicas now (by `ROLE`), in `nodes` order.
    pub fn replicas(&self) -> Vec<&Server> {
        self.nodes
            .iter()
            .filter(|n| super::role(n).is_ok_and(|r| r == "slave"))
            .collect()
    }

    /// The master that owns `slot` now (by `CLUSTER NODES` of the first node that answers).
    pub fn node_for_slot(&self, slot: u16) -> Result<&Server, Error> {
        let mut last = Error::InvalidArgument("empty cluster".into());
        for node in &self.nodes {
            match self.cluster_nodes(node) {
                Ok(lines) => {
                    let owner = lines
                        .iter()
                        .find(|l| {
                            l.flags.iter().any(|f| f == "master")
                                && l.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
                        })
                        .ok_or_else(|| {
                            Error::unexpected(
                                "CLUSTER NODES",
                                format!("no master owns slot {slot}"),
                            )
                        })?;
                    return self
                        .nodes
                        .iter()
                        .find(|n| n.port() == owner.port || n.tls_port() == Some(owner.port))
                        .ok_or_else(|| {
                            Error::unexpected(
                                "CLUSTER NODES",
                                format!("slot {slot} owner port {} unknown", owner.port),
                            )
                        });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The master that owns `key` now.
    pub fn node_for_key(&self, key: &[u8]) -> Result<&Server, Error> {
        self.node_for_slot(key_slot(key))
    }

    /// A `redis` crate cluster connection (follows redirections) through every node.
    pub fn cluster_client(&self) -> Result<redis::cluster::ClusterConnection, Error> {
        let infos: Vec<redis::ConnectionInfo> =
            self.nodes.iter().map(Server::connection_info).collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos);
        if let Some(p) = &self.options.password {
            builder = builder.password(p.clone());
        }
        let client = builder.build().ctx(|| "building a cluster client".into())?;
        client
            .get_connection()
            .ctx(|| "connecting a cluster client".into())
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Server::addr).collect()
    }

    /// The cluster as a [`Target`] (every node as a seed).
    pub fn target(&self) -> Target {
        Target::Cluster(self.nodes.iter().map(Server::url).collect())
    }

    /// Replica count per master id, from the first node's view (for diagnostics).
    pub fn replica_counts(&self) -> Result<HashMap<String, usize>, Error> {
        let first = self
            .nodes
            .first()
            .ok_or_else(|| Error::InvalidArgument("empty cluster".into()))?;
        let mut out = HashMap::new();
        for l in self.cluster_nodes(first)? {
            if let Some(m) = l.master_id {
                *out.entry(m).or_insert(0) += 1;
            }
        }
        Ok(out)
    }
}

struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    master_id: Option<String>,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 8 {
            return None;
        }
        let port = node_hostport(f[1]).rsplit_once(':')?.1.parse().ok()?;
        Some(NodeLine {
            id: f[0].to_string(),
            port,
            flags: f[2].split(',').map(str::to_string).collect(),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            slots: slot_ranges(&f[8..]),
        })
    }
}
