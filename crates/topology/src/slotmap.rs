//! [`SlotMap`]: which node serves which hash slot, built from CLUSTER SHARDS (7.0+), CLUSTER SLOTS
//! (3.0+) or CLUSTER NODES text, and the parsed form of CLUSTER NODES lines ([`ClusterNodeInfo`]).

use std::fmt;

use ferry_resp::Frame;

use crate::error::Error;
use crate::slot::SLOT_COUNT;

/// Marker for "no shard owns this slot" in the owner table.
const NO_OWNER: u16 = u16::MAX;

/// A node's client address as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// IP address or hostname; empty when the cluster did not say (then it is the node that answered).
    pub host: String,
    /// Client port.
    pub port: u16,
}

impl NodeAddr {
    /// An address from a host and a port.
    pub fn new(host: impl Into<String>, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    /// Parses `host:port` (the last `:` separates the port, so `::1:6379` works, as does `[::1]:6379`).
    pub fn parse(text: &str) -> Option<NodeAddr> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(NodeAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Whether a node is a master or a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves its slots for writes.
    Master,
    /// Replicates a master.
    Replica,
}

/// A node's health as the cluster reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Reachable and serving.
    Online,
    /// Loading its dataset (CLUSTER SHARDS `loading`).
    Loading,
    /// Suspected down by the node that answered (CLUSTER NODES `fail?`).
    Suspected,
    /// Agreed down by the cluster (CLUSTER NODES `fail`, CLUSTER SHARDS `failed`).
    Failed,
    /// The reply did not say (CLUSTER SLOTS lists no health).
    Unknown,
}

/// One node of a [`SlotMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The 40-character node id, when the reply carried it.
    pub id: Option<String>,
    /// Client address (for a TLS-only node, the TLS port).
    pub addr: NodeAddr,
    /// TLS port when CLUSTER SHARDS lists one.
    pub tls_port: Option<u16>,
    /// Master or replica.
    pub role: Role,
    /// Health as reported.
    pub health: Health,
}

/// An inclusive range of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
}

impl SlotRange {
    /// Builds a range, checking `start <= end < 16384`.
    pub fn new(start: u16, end: u16) -> Result<SlotRange, Error> {
        if start > end || end >= SLOT_COUNT {
            return Err(Error::parse(
                "slot range",
                format!("{start}-{end} is not within 0-16383"),
            ));
        }
        Ok(SlotRange { start, end })
    }
}

/// A master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The master.
    pub master: Node,
    /// Its replicas (possibly none).
    pub replicas: Vec<Node>,
}

/// Which shard serves each of the 16384 slots.
#[derive(Clone)]
pub struct SlotMap {
    shards: Vec<Shard>,
    owner: Box<[u16]>,
}

impl fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (range, node) in self.ranges() {
            list.entry(&format_args!("{}-{} {}", range.start, range.end, node.addr));
        }
        list.finish()
    }
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap::empty()
    }
}

impl SlotMap {
    /// A map with no shards and no slot served.
    pub fn empty() -> SlotMap {
        SlotMap {
            shards: Vec::new(),
            owner: vec![NO_OWNER; usize::from(SLOT_COUNT)].into_boxed_slice(),
        }
    }

    /// Builds the map from a CLUSTER SHARDS reply (Redis 7.0+), RESP2 or RESP3.
    pub fn from_cluster_shards(reply: &Frame) -> Result<SlotMap, Error> {
        const WHAT: &str = "CLUSTER SHARDS";
        let mut map = SlotMap::empty();
        for (i, shard) in array(reply, WHAT, "reply")?.iter().enumerate() {
            let mut slots: Option<&[Frame]> = None;
            let mut nodes: Option<&[Frame]> = None;
            for (key, value) in pairs(shard, WHAT)? {
                match key {
                    b"slots" => slots = Some(array(value, WHAT, "slots")?),
                    b"nodes" => nodes = Some(array(value, WHAT, "nodes")?),
                    _ => {}
                }
            }
            let slots =
                slots.ok_or_else(|| Error::parse(WHAT, format!("shard {i} has no 'slots'")))?;
            let nodes =
                nodes.ok_or_else(|| Error::parse(WHAT, format!("shard {i} has no 'nodes'")))?;
            if slots.len() % 2 != 0 {
                return Err(Error::parse(
                    WHAT,
                    format!("shard {i} has an odd number of slot bounds"),
                ));
            }
            let mut ranges = Vec::with_capacity(slots.len() / 2);
            for bounds in slots.chunks_exact(2) {
                ranges.push(SlotRange::new(
                    slot_number(&bounds[0], WHAT)?,
                    slot_number(&bounds[1], WHAT)?,
                )?);
            }
            let mut masters = Vec::new();
            let mut replicas = Vec::new();
            for node in nodes {
                let node = shards_node(node)?;
                match node.role {
                    Role::Master => masters.push(node),
                    Role::Replica => replicas.push(node),
                }
            }
            // A failed master stays listed until it is forgotten; prefer the healthy one.
            masters.sort_by_key(|n| n.health == Health::Failed);
            let Some(master) = masters.into_iter().next() else {
                continue; // no master: its slots stay uncovered
            };
            map.add_shard(Shard { master, replicas }, &ranges);
        }
        Ok(map)
    }

    /// Builds the map from a CLUSTER SLOTS reply (Redis 3.0+), RESP2 or RESP3.
    pub fn from_cluster_slots(reply: &Frame) -> Result<SlotMap, Error> {
        const WHAT: &str = "CLUSTER SLOTS";
        let mut map = SlotMap::empty();
        for (i, entry) in array(reply, WHAT, "reply")?.iter().enumerate() {
            let entry = array(entry, WHAT, "slot entry")?;
            if entry.len() < 3 {
                return Err(Error::parse(
                    WHAT,
                    format!(
                        "entry {i} has {} elements, expected at least 3",
                        entry.len()
                    ),
                ));
            }
            let range =
                SlotRange::new(slot_number(&entry[0], WHAT)?, slot_number(&entry[1], WHAT)?)?;
            let master = slots_node(&entry[2], Role::Master)?;
            let replicas = entry[3..]
                .iter()
                .map(|n| slots_node(n, Role::Replica))
                .collect::<Result<Vec<_>, _>>()?;
            map.add_shard(Shard { master, replicas }, &[range]);
        }
        Ok(map)
    }

    /// Builds the map from CLUSTER NODES text (any version).
    pub fn from_cluster_nodes(text: &[u8]) -> Result<SlotMap, Error> {
        SlotMap::from_node_infos(&parse_cluster_nodes(text)?)
    }

    /// Builds the map from already parsed CLUSTER NODES lines. Masters without an address (`noaddr`)
    /// and nodes still in handshake are left out, so their slots stay uncovered.
    pub fn from_node_infos(infos: &[ClusterNodeInfo]) -> Result<SlotMap, Error> {
        let mut map = SlotMap::empty();
        let usable = |info: &ClusterNodeInfo| {
            !info.flags.handshake && !info.flags.noaddr && info.addr.is_some()
        };
        let mut masters: Vec<&ClusterNodeInfo> = infos
            .iter()
            .filter(|i| i.flags.master && usable(i))
            .collect();
        // Healthy masters last, so they win a slot claimed twice (a failed master not yet updated).
        masters.sort_by_key(|i| !(i.flags.fail || i.flags.pfail));
        for info in masters {
            let replicas = infos
                .iter()
                .filter(|r| {
                    r.flags.replica && usable(r) && r.master_id.as_deref() == Some(info.id.as_str())
                })
                .map(|r| r.to_node(Role::Replica))
                .collect();
            map.add_shard(
                Shard {
                    master: info.to_node(Role::Master),
                    replicas,
                },
                &info.slots,
            );
        }
        Ok(map)
    }

    /// Adds a shard and makes it the owner of `ranges`. A shard whose master address is already known
    /// absorbs the ranges instead (CLUSTER SLOTS lists a master once per range).
    fn add_shard(&mut self, shard: Shard, ranges: &[SlotRange]) {
        let index = match self
            .shards
            .iter()
            .position(|s| s.master.addr == shard.master.addr)
        {
            Some(index) => {
                let existing = &mut self.shards[index];
                for replica in shard.replicas {
                    if !existing.replicas.iter().any(|r| r.addr == replica.addr) {
                        existing.replicas.push(replica);
                    }
                }
                index
            }
            None => {
                self.shards.push(shard);
                self.shards.len() - 1
            }
        };
        let index = u16::try_from(index).unwrap_or(NO_OWNER - 1);
        for range in ranges {
            for slot in range.start..=range.end.min(SLOT_COUNT - 1) {
                self.owner[usize::from(slot)] = index;
            }
        }
    }

    /// The shards (masters with their replicas), including masters that serve no slot.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Every node: each master followed by its replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.master).chain(s.replicas.iter()))
    }

    /// The shard serving `slot`, if any.
    pub fn shard_for_slot(&self, slot: u16) -> Option<&Shard> {
        let owner = *self.owner.get(usize::from(slot))?;
        self.shards.get(usize::from(owner))
    }

    /// The master serving `slot`, if any.
    pub fn master_for_slot(&self, slot: u16) -> Option<&Node> {
        self.shard_for_slot(slot).map(|s| &s.master)
    }

    /// How many slots no shard serves (0 for a healthy cluster).
    pub fn uncovered_slots(&self) -> usize {
        self.owner.iter().filter(|&&o| o == NO_OWNER).count()
    }

    /// Whether every slot is served.
    pub fn is_complete(&self) -> bool {
        self.uncovered_slots() == 0
    }

    /// Contiguous slot ranges in slot order, each with the master serving it.
    pub fn ranges(&self) -> Vec<(SlotRange, &Node)> {
        let mut out: Vec<(SlotRange, &Node)> = Vec::new();
        let mut slot = 0usize;
        while slot < self.owner.len() {
            let owner = self.owner[slot];
            let start = slot;
            while slot < self.owner.len() && self.owner[slot] == owner {
                slot += 1;
            }
            if let Some(shard) = self.shards.get(usize::from(owner)) {
                // Both bounds are below 16384, so they fit in u16.
                let range = SlotRange {
                    start: start as u16,
                    end: (slot - 1) as u16,
                };
                out.push((range, &shard.master));
            }
        }
        out
    }

    /// Records that `addr` now serves `slot` (what a MOVED reply says). A master not yet known is added
    /// as a new shard without id or replicas until the next full refresh.
    pub fn set_master_for_slot(&mut self, slot: u16, addr: NodeAddr) {
        if slot >= SLOT_COUNT {
            return;
        }
        let index = match self.shards.iter().position(|s| s.master.addr == addr) {
            Some(index) => index,
            None => {
                let role = Role::Master;
                let master = Node {
                    id: None,
                    addr,
                    tls_port: None,
                    role,
                    health: Health::Unknown,
                };
                self.shards.push(Shard {
                    master,
                    replicas: Vec::new(),
                });
                self.shards.len() - 1
            }
        };
        self.owner[usize::from(slot)] = u16::try_from(index).unwrap_or(NO_OWNER - 1);
    }

    /// Points every node that lists a TLS port (CLUSTER SHARDS `tls-port`) at that port, for a client that
    /// connects with TLS. With `tls-cluster yes` CLUSTER SHARDS gives both `port` (plain) and `tls-port`,
    /// and [`Node::addr`] holds the plain one; CLUSTER SLOTS and MOVED already name the TLS port to a TLS
    /// client, so nodes without `tls_port` are left as they are.
    pub fn use_tls_ports(&mut self) {
        for shard in &mut self.shards {
            for node in std::iter::once(&mut shard.master).chain(shard.replicas.iter_mut()) {
                if let Some(port) = node.tls_port {
                    node.addr.port = port;
                }
            }
        }
    }

    /// Replaces empty or unknown (`?`) hosts with `host`: the cluster leaves the host empty when it
    /// means "the node you are talking to".
    pub fn fill_unknown_hosts(&mut self, host: &str) {
        for shard in &mut self.shards {
            for node in std::iter::once(&mut shard.master).chain(shard.replicas.iter_mut()) {
                if node.addr.host.is_empty() || node.addr.host == "?" {
                    node.addr.host = host.to_owned();
                }
            }
        }
    }
}

/// The elements of an array-like frame.
fn array<'a>(frame: &'a Frame, what: &'static str, part: &str) -> Result<&'a [Frame], Error> {
    match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => Ok(items),
        Frame::Attribute { frame, .. } => array(frame, what, part),
        other => Err(Error::parse(
            what,
            format!("{part}: expected an array, got {}", kind(other)),
        )),
    }
}

/// Key/value pairs of a RESP3 map or of a RESP2 flat array `[k1, v1, k2, v2, ...]`; keys as bytes.
fn pairs<'a>(frame: &'a Frame, what: &'static str) -> Result<Vec<(&'a [u8], &'a Frame)>, Error> {
    match frame {
        Frame::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.as_bytes()
                        .ok_or_else(|| Error::parse(what, "map key is not a string"))?,
                    v,
                ))
            })
            .collect(),
        Frame::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(Error::parse(what, "key/value array has an odd length"));
            }
            items
                .chunks_exact(2)
                .map(|kv| {
                    Ok((
                        kv[0]
                            .as_bytes()
                            .ok_or_else(|| Error::parse(what, "field name is not a string"))?,
                        &kv[1],
                    ))
                })
                .collect()
        }
        Frame::Attribute { frame, .. } => pairs(frame, what),
        other => Err(Error::parse(
            what,
            format!("expected a map, got {}", kind(other)),
        )),
    }
}

fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Simple(_) => "a simple string",
        Frame::Error(_) => "an error reply",
        Frame::Integer(_) => "an integer",
        Frame::Bulk(_) => "a bulk string",
        Frame::Array(_) => "an array",
        Frame::Null | Frame::NullBulk | Frame::NullArray => "null",
        Frame::Map(_) => "a map",
        Frame::Set(_) => "a set",
        Frame::Double(_) => "a double",
        Frame::Boolean(_) => "a boolean",
        Frame::BigNumber(_) => "a big number",
        Frame::Verbatim { .. } => "a verbatim string",
        Frame::Push(_) => "a push",
        Frame::Attribute { .. } => "an attribute",
    }
}

fn text(frame: &Frame, what: &'static str, field: &str) -> Result<String, Error> {
    frame
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| {
            Error::parse(
                what,
                format!("'{field}' is {}, expected a string", kind(frame)),
            )
        })
}

fn slot_number(frame: &Frame, what: &'static str) -> Result<u16, Error> {
    frame
        .as_integer()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n < SLOT_COUNT)
        .ok_or_else(|| Error::parse(what, format!("slot bound {frame:?} is not within 0-16383")))
}

fn port_number(frame: &Frame, what: &'static str) -> Result<u16, Error> {
    frame
        .as_integer()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| Error::parse(what, format!("port {frame:?} is not within 0-65535")))
}

/// A node of a CLUSTER SLOTS entry: `[host, port, id?, metadata?]`.
fn slots_node(frame: &Frame, role: Role) -> Result<Node, Error> {
    const WHAT: &str = "CLUSTER SLOTS";
    let parts = array(frame, WHAT, "node")?;
    if parts.len() < 2 {
        return Err(Error::parse(
            WHAT,
            format!("node has {} elements, expected at least 2", parts.len()),
        ));
    }
    let host = if parts[0].is_null() {
        String::new()
    } else {
        text(&parts[0], WHAT, "host")?
    };
    let port = port_number(&parts[1], WHAT)?;
    let id = match parts.get(2) {
        Some(id) => Some(text(id, WHAT, "id")?),
        None => None,
    };
    Ok(Node {
        id,
        addr: NodeAddr { host, port },
        tls_port: None,
        role,
        health: Health::Unknown,
    })
}

/// A node of a CLUSTER SHARDS shard: a map with id, port, tls-port, ip, endpoint, role, health...
fn shards_node(frame: &Frame) -> Result<Node, Error> {
    const WHAT: &str = "CLUSTER SHARDS";
    let mut id = None;
    let mut port = None;
    let mut tls_port = None;
    let mut ip = None;
    let mut endpoint = None;
    let mut role = None;
    let mut health = Health::Unknown;
    for (key, value) in pairs(frame, WHAT)? {
        match key {
            b"id" => id = Some(text(value, WHAT, "id")?),
            b"port" => port = Some(port_number(value, WHAT)?),
            b"tls-port" => tls_port = Some(port_number(value, WHAT)?),
            b"ip" => ip = Some(text(value, WHAT, "ip")?),
            b"endpoint" => endpoint = Some(text(value, WHAT, "endpoint")?),
            b"role" => {
                role = Some(match text(value, WHAT, "role")?.as_str() {
                    "master" => Role::Master,
                    "replica" | "slave" => Role::Replica,
                    other => return Err(Error::parse(WHAT, format!("unknown role '{other}'"))),
                })
            }
            b"health" => {
                health = match text(value, WHAT, "health")?.as_str() {
                    "online" => Health::Online,
                    "loading" => Health::Loading,
                    "failed" | "fail" => Health::Failed,
                    _ => Health::Unknown,
                }
            }
            _ => {}
        }
    }
    let role = role.ok_or_else(|| Error::parse(WHAT, "node has no 'role'"))?;
    let port = port
        .or(tls_port)
        .ok_or_else(|| Error::parse(WHAT, "node has neither 'port' nor 'tls-port'"))?;
    // The endpoint is what clients should use (ip, hostname or '?'); fall back to the ip.
    let host = match endpoint {
        Some(e) if !e.is_empty() && e != "?" => e,
        _ => ip.unwrap_or_default(),
    };
    Ok(Node {
        id,
        addr: NodeAddr { host, port },
        tls_port,
        role,
        health,
    })
}

/// The flags of a CLUSTER NODES line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFlags {
    /// `myself`: the node that answered.
    pub myself: bool,
    /// `master`.
    pub master: bool,
    /// `slave` / `replica`.
    pub replica: bool,
    /// `fail?`: suspected down by the node that answered (PFAIL).
    pub pfail: bool,
    /// `fail`: agreed down.
    pub fail: bool,
    /// `handshake`: not yet trusted.
    pub handshake: bool,
    /// `noaddr`: address unknown.
    pub noaddr: bool,
    /// `nofailover`: the replica will not fail over.
    pub nofailover: bool,
    /// Flags this parser does not know, kept as written.
    pub other: Vec<String>,
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    /// Node id.
    pub id: String,
    /// Client address; `None` when the line has no usable address (`:0@0`).
    pub addr: Option<NodeAddr>,
    /// Cluster bus port, when given (`@cport`).
    pub cluster_port: Option<u16>,
    /// Announced hostname (`,hostname` on 7.0), when given.
    pub hostname: Option<String>,
    /// Flags.
    pub flags: NodeFlags,
    /// The master's id for a replica.
    pub master_id: Option<String>,
    /// Milliseconds timestamp of the last unanswered PING (0 if none).
    pub ping_sent: u64,
    /// Milliseconds timestamp of the last PONG.
    pub pong_received: u64,
    /// Configuration epoch.
    pub config_epoch: u64,
    /// Whether the cluster bus link is `connected`.
    pub connected: bool,
    /// Slots this master serves.
    pub slots: Vec<SlotRange>,
    /// `[slot->-nodeid]`: slots being migrated from this node to another.
    pub migrating: Vec<(u16, String)>,
    /// `[slot-<-nodeid]`: slots being imported into this node from another.
    pub importing: Vec<(u16, String)>,
}

impl ClusterNodeInfo {
    fn to_node(&self, role: Role) -> Node {
        let health = if self.flags.fail {
            Health::Failed
        } else if self.flags.pfail {
            Health::Suspected
        } else {
            Health::Online
        };
        let addr = self.addr.clone().unwrap_or_else(|| NodeAddr::new("", 0));
        Node {
            id: Some(self.id.clone()),
            addr,
            tls_port: None,
            role,
            health,
        }
    }
}

/// Parses CLUSTER NODES text: one node per line, blank lines ignored.
///
/// Errors name the line number and what was wrong; no input panics.
pub fn parse_cluster_nodes(text: &[u8]) -> Result<Vec<ClusterNodeInfo>, Error> {
    const WHAT: &str = "CLUSTER NODES";
    let text =
        std::str::from_utf8(text).map_err(|e| Error::parse(WHAT, format!("not UTF-8: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        out.push(
            parse_node_line(line)
                .map_err(|detail| Error::parse(WHAT, format!("line {}: {detail}", n + 1)))?,
        );
    }
    Ok(out)
}

fn parse_node_line(line: &str) -> Result<ClusterNodeInfo, String> {
    let fields: Vec<&str> = line.split(' ').filter(|f| !f.is_empty()).collect();
    if fields.len() < 8 {
        return Err(format!("{} fields, expected at least 8", fields.len()));
    }
    let id = fields[0].to_owned();
    let (addr, cluster_port, hostname) = parse_node_address(fields[1])?;
    let flags = parse_flags(fields[2]);
    let addr = if flags.noaddr || addr.as_ref().is_some_and(|a| a.port == 0) {
        None
    } else {
        addr
    };
    let master_id = match fields[3] {
        "-" => None,
        id => Some(id.to_owned()),
    };
    let number = |i: usize, name: &str| -> Result<u64, String> {
        fields[i]
            .parse()
            .map_err(|_| format!("{name} '{}' is not a number", fields[i]))
    };
    let ping_sent = number(4, "ping-sent")?;
    let pong_received = number(5, "pong-recv")?;
    let config_epoch = number(6, "config-epoch")?;
    let connected = match fields[7] {
        "connected" => true,
        "disconnected" => false,
        other => {
            return Err(format!(
                "link-state '{other}' is neither connected nor disconnected"
            ))
        }
    };
    let mut info = ClusterNodeInfo {
        id,
        addr,
        cluster_port,
        hostname,
        flags,
        master_id,
        ping_sent,
        pong_received,
        config_epoch,
        connected,
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for slot in &fields[8..] {
        parse_slot_field(slot, &mut info)?;
    }
    Ok(info)
}

/// `ip:port@cport[,hostname]`, `ip:port` (before 4.0), `:0@0` (noaddr), `::1:port@cport` (IPv6).
/// Client address, cluster bus port and hostname of a CLUSTER NODES address field.
type AddressField = (Option<NodeAddr>, Option<u16>, Option<String>);

fn parse_node_address(field: &str) -> Result<AddressField, String> {
    let (addr, hostname) = match field.split_once(',') {
        Some((addr, host)) if !host.is_empty() => (addr, Some(host.to_owned())),
        Some((addr, _)) => (addr, None),
        None => (field, None),
    };
    let (addr, cport) = match addr.split_once('@') {
        Some((addr, cport)) => {
            let cport = cport
                .parse::<u16>()
                .map_err(|_| format!("cluster port in '{field}' is not a port"))?;
            (addr, Some(cport))
        }
        None => (addr, None),
    };
    let parsed =
        NodeAddr::parse(addr).ok_or_else(|| format!("address '{field}' is not host:port"))?;
    Ok((Some(parsed), cport, hostname))
}

fn parse_flags(field: &str) -> NodeFlags {
    let mut flags = NodeFlags::default();
    for flag in field.split(',') {
        match flag {
            "myself" => flags.myself = true,
            "master" => flags.master = true,
            "slave" | "replica" => flags.replica = true,
            "fail?" => flags.pfail = true,
            "fail" => flags.fail = true,
            "handshake" => flags.handshake = true,
            "noaddr" => flags.noaddr = true,
            "nofailover" => flags.nofailover = true,
            "noflags" | "" => {}
            other => flags.other.push(other.to_owned()),
        }
    }
    flags
}

fn parse_slot(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|&s| s < SLOT_COUNT)
        .ok_or_else(|| format!("slot '{text}' is not within 0-16383"))
}

/// `N`, `N-M`, `[N->-id]` (migrating) or `[N-<-id]` (importing).
fn parse_slot_field(field: &str, info: &mut ClusterNodeInfo) -> Result<(), String> {
    if let Some(inner) = field.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("'{field}' lacks the closing ']'"))?;
        if let Some((slot, id)) = inner.split_once("->-") {
            info.migrating.push((parse_slot(slot)?, id.to_owned()));
        } else if let Some((slot, id)) = inner.split_once("-<-") {
            info.importing.push((parse_slot(slot)?, id.to_owned()));
        } else {
            return Err(format!("'{field}' is neither [slot->-id] nor [slot-<-id]"));
        }
        return Ok(());
    }
    let range = match field.split_once('-') {
        Some((start, end)) => {
            SlotRange::new(parse_slot(start)?, parse_slot(end)?).map_err(|e| e.to_string())?
        }
        None => {
            let slot = parse_slot(field)?;
            SlotRange {
                start: slot,
                end: slot,
            }
        }
    };
    info.slots.push(range);
    Ok(())
}
