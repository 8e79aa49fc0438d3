//! What [`crate::fill`] writes to and [`crate::compare`] reads from: a standalone server or a cluster.

use std::fmt;

use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::error::RedisContext;
use crate::server::connect;
use crate::{Error, Server};
use std::time::Duration;

/// A deployment to fill or compare, by URL (`redis://[user:password@]host:port[/db]`).
///
/// `Debug` hides passwords.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// One server (a standalone master, or the current master of a replica set / sentinel group).
    Standalone(String),
    /// A Redis Cluster, by one or more of its nodes; the masters are discovered with `CLUSTER NODES`, and the
    /// seed's credentials are used for every node.
    Cluster(Vec<String>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Standalone(u) => f.debug_tuple("Standalone").field(&redact_url(u)).finish(),
            Target::Cluster(us) => f
                .debug_tuple("Cluster")
                .field(&us.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Standalone(u) => write!(f, "{}", redact_url(u)),
            Target::Cluster(us) => write!(
                f,
                "cluster via {}",
                us.iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl From<&Server> for Target {
    fn from(s: &Server) -> Self {
        Target::Standalone(s.url())
    }
}

impl From<&crate::Cluster> for Target {
    fn from(c: &crate::Cluster) -> Self {
        c.target()
    }
}

impl From<&crate::ReplicaSet> for Target {
    fn from(r: &crate::ReplicaSet) -> Self {
        r.target()
    }
}

/// `redis://user:***@host:port` (the password, if any, replaced).
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, hostpart)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            format!("{scheme}://{user}:***@{hostpart}")
        }
        None => url.to_string(),
    }
}

/// One node of a target with an open connection.
pub(crate) struct Node {
    /// `host:port`.
    pub(crate) addr: String,
    pub(crate) con: redis::Connection,
    /// `(major, minor)` of `valkey_version` on Valkey, else of `redis_version`.
    pub(crate) version: (u32, u32),
    /// True for a Valkey server (`server_name:valkey` or a `valkey_version` field in `INFO server`).
    pub(crate) valkey: bool,
    /// Slot ranges this node owns (empty for a standalone server).
    pub(crate) slots: Vec<(u16, u16)>,
}

impl Node {
    pub(crate) fn open(info: ConnectionInfo) -> Result<Node, Error> {
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(h, p) => format!("{h}:{p}"),
            other => format!("{other}"),
        };
        let mut con = connect(&info, Duration::from_secs(5), Duration::from_secs(120))
            .ctx(|| format!("connecting to {addr}"))?;
        let text: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut con)
            .ctx(|| format!("INFO server on {addr}"))?;
        // Valkey reports `redis_version:7.2.4` for old clients and its own version apart.
        let valkey_version = crate::server::info_value(&text, "valkey_version");
        let valkey = valkey_version.is_some()
            || crate::server::info_value(&text, "server_name").as_deref() == Some("valkey");
        let v = valkey_version
            .or_else(|| crate::server::info_value(&text, "redis_version"))
            .unwrap_or_default();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Ok(Node {
            addr,
            con,
            version,
            valkey,
            slots: Vec::new(),
        })
    }

    pub(crate) fn is_7(&self) -> bool {
        self.version.0 >= 7
    }

    /// Field expiry on hashes: Redis 7.4+, Valkey 9.0+.
    pub(crate) fn field_expiry(&self) -> bool {
        if self.valkey {
            self.version.0 >= 9
        } else {
            self.version >= (7, 4)
        }
    }

    /// Small sets of strings and small lists are listpacks: Redis 7.2+ and every Valkey.
    pub(crate) fn is_7_2(&self) -> bool {
        self.valkey || self.version >= (7, 2)
    }
}

impl Target {
    /// True for [`Target::Cluster`].
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// Connections to every master (one for a standalone target).
    pub(crate) fn masters(&self) -> Result<Vec<Node>, Error> {
        match self {
            Target::Standalone(url) => Ok(vec![Node::open(parse_url(url)?)?]),
            Target::Cluster(urls) => {
                let mut last =
                    Error::InvalidArgument("Target::Cluster needs at least one URL".into());
                for url in urls {
                    let seed = parse_url(url)?;
                    match Node::open(seed.clone()) {
                        Ok(mut node) => return cluster_masters(&mut node, &seed),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

pub(crate) fn parse_url(url: &str) -> Result<ConnectionInfo, Error> {
    url.into_connection_info()
        .map_err(|e| Error::InvalidArgument(format!("bad URL {}: {e}", redact_url(url))))
}

fn cluster_masters(seed: &mut Node, seed_info: &ConnectionInfo) -> Result<Vec<Node>, Error> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut seed.con)
        .ctx(|| format!("CLUSTER NODES on {}", seed.addr))?;
    let mut masters = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 8 {
            continue;
        }
        let flags = f[2];
        if !flags.split(',').any(|x| x == "master")
            || flags.contains("fail")
            || flags.contains("noaddr")
        {
            continue;
        }
        if f.len() == 8 {
            continue; // a master without slots holds no keys
        }
        let (host, port) = node_hostport(f[1])
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                Error::unexpected("reading CLUSTER NODES", format!("bad address in {line:?}"))
            })?;
        let info = seed_info
            .clone()
            .set_addr(redis::ConnectionAddr::Tcp(host, port));
        let mut node = Node::open(info)?;
        node.slots = slot_ranges(&f[8..]);
        masters.push(node);
    }
    if masters.is_empty() {
        return Err(Error::unexpected(
            "reading CLUSTER NODES",
            "no master with slots",
        ));
    }
    masters.sort_by(|a, b| a.addr.cmp(&b.addr));
    Ok(masters)
}

/// The `host:port` of a CLUSTER NODES address field (`host:port@cport[,hostname]`).
pub(crate) fn node_hostport(field: &str) -> &str {
    let hostport = field.split('@').next().unwrap_or(field);
    hostport.split(',').next().unwrap_or(hostport)
}

/// The slot ranges of a CLUSTER NODES line's slot fields (`a-b` or `a`), leaving out the
/// `[slot->-node]` migration markers and anything unparsable.
pub(crate) fn slot_ranges(fields: &[&str]) -> Vec<(u16, u16)> {
    fields
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|x| (x, x)),
        })
        .collect()
}

/// The cluster hash slot of `key` (CRC16/XMODEM of the key or its `{hash tag}`, modulo 16384).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_matches_redis_examples() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"{}x"), crc16_xmodem(b"{}x") % 16384);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://u:secret@127.0.0.1:1"),
            "redis://u:***@127.0.0.1:1"
        );
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:1"),
            "redis://:***@127.0.0.1:1"
        );
        assert_eq!(redact_url("redis://127.0.0.1:1"), "redis://127.0.0.1:1");
        let t = Target::Cluster(vec!["redis://:pw@127.0.0.1:1".into()]);
        assert!(!format!("{t:?}{t}").contains("pw"));
    }
}
