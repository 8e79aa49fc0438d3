//! Talking to sentinels and confirming roles: the queries a resolve is made of.

use std::collections::HashMap;
use std::time::Duration;

use ferry_resp::{ConnectOptions, Connection, Frame};

use crate::addr::Addr;
use crate::error::Error;

/// What a server says it is (ROLE, or INFO replication where ROLE is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Master,
    Replica,
    Sentinel,
    Other(String),
}

impl Role {
    pub(crate) fn name(&self) -> &str {
        match self {
            Role::Master => "master",
            Role::Replica => "slave",
            Role::Sentinel => "sentinel",
            Role::Other(s) => s,
        }
    }
}

/// One replica as `SENTINEL replicas <name>` describes it.
#[derive(Clone, Debug)]
pub(crate) struct ReplicaInfo {
    pub(crate) addr: Addr,
    pub(crate) flags: String,
}

impl ReplicaInfo {
    /// Whether the sentinel considers it usable (not down, not disconnected).
    pub(crate) fn usable(&self) -> bool {
        !self
            .flags
            .split(',')
            .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
    }
}

/// Connects with an overall deadline on top of the connection's own connect timeout.
pub(crate) async fn connect(
    opts: &ConnectOptions,
    deadline: Duration,
) -> Result<Connection, ferry_resp::Error> {
    match tokio::time::timeout(deadline, Connection::connect(opts)).await {
        Ok(r) => r,
        Err(_) => Err(ferry_resp::Error::Timeout("connect")),
    }
}

/// Runs one command with an overall deadline.
pub(crate) async fn call_with_deadline(
    conn: &mut Connection,
    argv: &[&str],
    deadline: Duration,
) -> Result<Frame, ferry_resp::Error> {
    match tokio::time::timeout(deadline, conn.call(argv)).await {
        Ok(r) => r,
        Err(_) => Err(ferry_resp::Error::Timeout("read")),
    }
}

fn text(f: &Frame) -> Option<String> {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// One sentinel's answer about the master: where it is and the config epoch of that configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MasterView {
    /// The address `SENTINEL get-master-addr-by-name` gives (once a failover reaches the
    /// reconfiguration step, the leader already names the promoted replica here).
    pub(crate) addr: Addr,
    /// The config epoch of the master configuration (`config-epoch` of `SENTINEL MASTER`): every
    /// failover that succeeds gives the new configuration a higher one.
    pub(crate) epoch: u64,
}

/// `SENTINEL get-master-addr-by-name` and `SENTINEL MASTER` in one round trip (the sentinel runs
/// both back to back, so address and epoch belong together): `Ok(None)` when the sentinel does not
/// monitor the name.
pub(crate) async fn master_view(
    conn: &mut Connection,
    sentinel: &Addr,
    name: &str,
    deadline: Duration,
) -> Result<Option<MasterView>, Error> {
    let cmds = [
        vec!["SENTINEL", "get-master-addr-by-name", name],
        vec!["SENTINEL", "MASTER", name],
    ];
    let replies = match tokio::time::timeout(deadline, conn.pipeline(&cmds)).await {
        Ok(r) => r?,
        Err(_) => return Err(ferry_resp::Error::Timeout("read").into()),
    };
    let bad = |d: &str| Error::UnexpectedReply {
        sentinel: sentinel.clone(),
        detail: d.to_string(),
    };
    let mut it = replies.into_iter();
    let (Some(addr_reply), Some(master_reply)) = (it.next(), it.next()) else {
        return Err(bad("SENTINEL MASTER: missing reply"));
    };
    if addr_reply.is_null() {
        return Ok(None);
    }
    let addr = parse_master_addr(addr_reply).map_err(|d| bad(&d))?;
    if let Frame::Error(e) = &master_reply {
        return Err(bad(&format!(
            "SENTINEL MASTER: {}",
            String::from_utf8_lossy(e)
        )));
    }
    let f = fields(master_reply);
    let epoch = f
        .get("config-epoch")
        .and_then(|e| e.parse::<u64>().ok())
        .ok_or_else(|| bad("SENTINEL MASTER: no config-epoch"))?;
    Ok(Some(MasterView { addr, epoch }))
}

fn parse_master_addr(reply: Frame) -> Result<Addr, String> {
    let items = reply
        .into_array()
        .ok_or("get-master-addr-by-name: not an array")?;
    if items.len() != 2 {
        return Err("get-master-addr-by-name: expected [ip, port]".into());
    }
    let host = text(&items[0]).ok_or("get-master-addr-by-name: ip is not a string")?;
    let port = items[1]
        .as_integer()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or("get-master-addr-by-name: bad port")?;
    Ok(Addr::new(host, port))
}

/// Turns one instance description (a flat `[k, v, k, v...]` array in RESP2, a map in RESP3) into
/// a field map.
fn fields(f: Frame) -> HashMap<String, String> {
    let mut out = HashMap::new();
    match f {
        Frame::Map(pairs) => {
            for (k, v) in pairs {
                if let (Some(k), Some(v)) = (text(&k), text(&v)) {
                    out.insert(k, v);
                }
            }
        }
        other => {
            if let Some(items) = other.into_array() {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if let (Some(k), Some(v)) = (text(&k), text(&v)) {
                        out.insert(k, v);
                    }
                }
            }
        }
    }
    out
}

fn instances(reply: Frame) -> Vec<HashMap<String, String>> {
    reply
        .into_array()
        .unwrap_or_default()
        .into_iter()
        .map(fields)
        .collect()
}

fn instance_addr(f: &HashMap<String, String>) -> Option<Addr> {
    let host = f.get("ip")?;
    let port = f.get("port")?.parse::<u16>().ok()?;
    Some(Addr::new(host.clone(), port))
}

/// `SENTINEL replicas <name>` (falling back to `SENTINEL slaves` on servers before 5.0).
pub(crate) async fn replicas(
    conn: &mut Connection,
    name: &str,
    deadline: Duration,
) -> Result<Vec<ReplicaInfo>, Error> {
    let reply = match call_with_deadline(conn, &["SENTINEL", "replicas", name], deadline).await {
        Ok(r) => r,
        Err(e) if e.server_error().is_some() => {
            call_with_deadline(conn, &["SENTINEL", "slaves", name], deadline).await?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(instances(reply)
        .into_iter()
        .filter_map(|f| {
            let addr = instance_addr(&f)?;
            Some(ReplicaInfo {
                addr,
                flags: f.get("flags").cloned().unwrap_or_default(),
            })
        })
        .collect())
}

/// `SENTINEL sentinels <name>`: the other sentinels that monitor the name.
pub(crate) async fn sentinels(
    conn: &mut Connection,
    name: &str,
    deadline: Duration,
) -> Result<Vec<Addr>, Error> {
    let reply = call_with_deadline(conn, &["SENTINEL", "sentinels", name], deadline).await?;
    Ok(instances(reply).iter().filter_map(instance_addr).collect())
}

/// Asks a server what it is: ROLE, or `INFO replication` where ROLE is refused (renamed, ACL), or the `role`
/// field of `HELLO` where both are (both are in `@dangerous`, which an application user such as
/// `+@all -@dangerous` is denied; `HELLO` is in `@connection`).
pub(crate) async fn role(
    conn: &mut Connection,
    deadline: Duration,
) -> Result<Role, ferry_resp::Error> {
    match call_with_deadline(conn, &["ROLE"], deadline).await {
        Ok(reply) => {
            let first = reply.into_array().and_then(|a| a.into_iter().next());
            let name = first.as_ref().and_then(text).unwrap_or_default();
            Ok(parse_role(&name))
        }
        // NOAUTH: no credentials were given; INFO and HELLO would only hide that behind their own refusals.
        Err(e) if e.server_error().is_some() && !is_not_master_code(&e) && !is_noauth(&e) => {
            let info = match call_with_deadline(conn, &["INFO", "replication"], deadline).await {
                Ok(info) => info,
                Err(i) if i.server_error().is_some() && !is_not_master_code(&i) => {
                    return role_of_hello(conn, deadline, &e, &i).await;
                }
                Err(i) => return Err(i),
            };
            let body = info
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let role = body
                .lines()
                .find_map(|l| l.trim().strip_prefix("role:"))
                .unwrap_or("unknown")
                .to_string();
            Ok(parse_role(&role))
        }
        Err(e) => Err(e),
    }
}

/// The `role` field of `HELLO`; `role_error` and `info_error`
/// (why ROLE and INFO were refused) are reported when `HELLO` names no role.
async fn role_of_hello(
    conn: &mut Connection,
    deadline: Duration,
    role_error: &ferry_resp::Error,
    info_error: &ferry_resp::Error,
) -> Result<Role, ferry_resp::Error> {
    let hello = call_with_deadline(conn, &["HELLO"], deadline).await?;
    match ferry_resp::probe::hello_field(&hello, "role") {
        Some(role) => Ok(parse_role(&role)),
        None => Err(ferry_resp::Error::Server(ferry_resp::ServerError::new(format!(
            "{role_error}; INFO: {info_error}; HELLO names no role: the server's role cannot be known"
        )))),
    }
}

fn is_noauth(e: &ferry_resp::Error) -> bool {
    e.server_error().is_some_and(|s| s.code() == "NOAUTH")
}

fn is_not_master_code(e: &ferry_resp::Error) -> bool {
    e.server_error()
        .map(|s| s.code() == "LOADING")
        .unwrap_or(false)
}

fn parse_role(name: &str) -> Role {
    match name {
        "master" => Role::Master,
        "slave" | "replica" => Role::Replica,
        "sentinel" => Role::Sentinel,
        other => Role::Other(other.to_string()),
    }
}

/// A message a sentinel published, reduced to what the pool acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SentinelMessage {
    /// `+switch-master <name> <old ip> <old port> <new ip> <new port>`.
    Switch { name: String, old: Addr, new: Addr },
    /// A failover step before promotion, naming the master being failed over.
    FailoverStarted {
        name: String,
        master: Addr,
        channel: String,
    },
    /// `+promoted-slave`: the leader saw the chosen replica report itself master; the failover is
    /// committed (it ends with `+switch-master` to the same address).
    Promoted { name: String, old: Addr, new: Addr },
    /// `-failover-abort-*`: the failover of that master will not happen.
    FailoverAborted { name: String, master: Addr },
    /// `+sentinel`: a new sentinel joined.
    NewSentinel { name: String, sentinel: Addr },
}

/// The channels whose messages mean "this master is about to stop being the master": the leader
/// publishes them before it sends `REPLICAOF NO ONE` to the chosen replica.
pub(crate) const FENCE_CHANNELS: &[&str] = &[
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+failover-state-reconf-slaves",
];

/// The patterns a listener subscribes to with PSUBSCRIBE.
pub(crate) const PATTERNS: &[&str] = &[
    "+switch-master",
    "+elected-leader",
    "+failover-state-*",
    "+selected-slave",
    "+promoted-slave",
    "-failover-abort-*",
    "+sentinel",
];

fn port(s: &str) -> Option<u16> {
    s.parse().ok()
}

/// The master named by an instance description in an event payload: `master <name> <ip> <port>`
/// or `<type> <name> <ip> <port> @ <master name> <master ip> <master port>`.
fn event_master(payload: &str) -> Option<(String, Addr)> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    if let Some(at) = parts.iter().position(|p| *p == "@") {
        let name = parts.get(at + 1)?;
        let host = parts.get(at + 2)?;
        let p = port(parts.get(at + 3)?)?;
        return Some((name.to_string(), Addr::new(*host, p)));
    }
    if parts.first() == Some(&"master") && parts.len() >= 4 {
        return Some((parts[1].to_string(), Addr::new(parts[2], port(parts[3])?)));
    }
    None
}

/// Interprets one published message; `None` for anything the pool does not act on.
pub(crate) fn parse_message(channel: &str, payload: &str) -> Option<SentinelMessage> {
    if channel == "+switch-master" {
        let p: Vec<&str> = payload.split_whitespace().collect();
        if p.len() != 5 {
            return None;
        }
        return Some(SentinelMessage::Switch {
            name: p[0].to_string(),
            old: Addr::new(p[1], port(p[2])?),
            new: Addr::new(p[3], port(p[4])?),
        });
    }
    if channel == "+promoted-slave" {
        // slave <ip>:<port> <ip> <port> @ <name> <master ip> <master port>
        let (name, old) = event_master(payload)?;
        let p: Vec<&str> = payload.split_whitespace().collect();
        if p.len() >= 4 && p[0] == "slave" {
            return Some(SentinelMessage::Promoted {
                name,
                old,
                new: Addr::new(p[2], port(p[3])?),
            });
        }
        return None;
    }
    if FENCE_CHANNELS.contains(&channel) {
        let (name, master) = event_master(payload)?;
        return Some(SentinelMessage::FailoverStarted {
            name,
            master,
            channel: channel.to_string(),
        });
    }
    if channel.starts_with("-failover-abort") {
        let (name, master) = event_master(payload)?;
        return Some(SentinelMessage::FailoverAborted { name, master });
    }
    if channel == "+sentinel" {
        // sentinel <runid> <ip> <port> @ <name> <mip> <mport>
        let p: Vec<&str> = payload.split_whitespace().collect();
        let (name, _) = event_master(payload)?;
        if p.len() >= 4 && p[0] == "sentinel" {
            return Some(SentinelMessage::NewSentinel {
                name,
                sentinel: Addr::new(p[2], port(p[3])?),
            });
        }
    }
    None
}

/// Extracts `(channel, payload)` from a pub/sub push (`message` or `pmessage`, RESP2 or RESP3).
pub(crate) fn pubsub_message(frame: Frame) -> Option<(String, String)> {
    let items = frame.into_array()?;
    let kind = text(items.first()?)?;
    match kind.as_str() {
        "message" if items.len() == 3 => Some((text(&items[1])?, text(&items[2])?)),
        "pmessage" if items.len() == 4 => Some((text(&items[2])?, text(&items[3])?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master_message_names_old_and_new() {
        let m = parse_message("+switch-master", "mymaster 127.0.0.1 7000 127.0.0.1 7001").unwrap();
        assert_eq!(
            m,
            SentinelMessage::Switch {
                name: "mymaster".into(),
                old: Addr::new("127.0.0.1", 7000),
                new: Addr::new("127.0.0.1", 7001)
            }
        );
        assert_eq!(parse_message("+switch-master", "mymaster 127.0.0.1"), None);
        assert_eq!(
            parse_message("+switch-master", "m 1.2.3.4 x 1.2.3.4 7"),
            None
        );
    }

    #[test]
    fn failover_steps_name_the_master_being_replaced() {
        let m = parse_message(
            "+failover-state-select-slave",
            "master mymaster 10.0.0.1 6390",
        )
        .unwrap();
        assert_eq!(
            m,
            SentinelMessage::FailoverStarted {
                name: "mymaster".into(),
                master: Addr::new("10.0.0.1", 6390),
                channel: "+failover-state-select-slave".into()
            }
        );
        let m = parse_message(
            "+selected-slave",
            "slave 10.0.0.1:6391 10.0.0.1 6391 @ mymaster 10.0.0.1 6390",
        )
        .unwrap();
        assert!(
            matches!(m, SentinelMessage::FailoverStarted { ref master, .. } if *master == Addr::new("10.0.0.1", 6390))
        );
        let m = parse_message(
            "-failover-abort-not-elected",
            "master mymaster 10.0.0.1 6390",
        )
        .unwrap();
        assert!(matches!(m, SentinelMessage::FailoverAborted { .. }));
        assert_eq!(
            parse_message("+sdown", "master mymaster 10.0.0.1 6390"),
            None
        );
    }

    #[test]
    fn promoted_slave_message_names_the_new_master() {
        let m = parse_message(
            "+promoted-slave",
            "slave 127.0.0.1:7001 127.0.0.1 7001 @ mymaster 127.0.0.1 7000",
        )
        .unwrap();
        assert_eq!(
            m,
            SentinelMessage::Promoted {
                name: "mymaster".into(),
                old: Addr::new("127.0.0.1", 7000),
                new: Addr::new("127.0.0.1", 7001)
            }
        );
    }

    #[test]
    fn new_sentinel_message_gives_its_address() {
        let m = parse_message(
            "+sentinel",
            "sentinel abc123 127.0.0.1 26380 @ mymaster 127.0.0.1 6379",
        )
        .unwrap();
        assert_eq!(
            m,
            SentinelMessage::NewSentinel {
                name: "mymaster".into(),
                sentinel: Addr::new("127.0.0.1", 26380)
            }
        );
    }

    #[test]
    fn pubsub_frames_give_channel_and_payload() {
        let f = Frame::Array(vec![
            Frame::bulk("pmessage"),
            Frame::bulk("+*"),
            Frame::bulk("+switch-master"),
            Frame::bulk("x"),
        ]);
        assert_eq!(
            pubsub_message(f),
            Some(("+switch-master".into(), "x".into()))
        );
        let f = Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk("c"),
            Frame::bulk("p"),
        ]);
        assert_eq!(pubsub_message(f), Some(("c".into(), "p".into())));
        let f = Frame::Array(vec![
            Frame::bulk("psubscribe"),
            Frame::bulk("+*"),
            Frame::Integer(1),
        ]);
        assert_eq!(pubsub_message(f), None);
        assert_eq!(pubsub_message(Frame::Integer(3)), None);
    }

    #[test]
    fn instance_fields_from_flat_array_and_map() {
        let flat = Frame::Array(vec![
            Frame::bulk("ip"),
            Frame::bulk("1.2.3.4"),
            Frame::bulk("port"),
            Frame::bulk("7"),
            Frame::bulk("flags"),
            Frame::bulk("slave,s_down"),
        ]);
        let f = fields(flat);
        assert_eq!(instance_addr(&f), Some(Addr::new("1.2.3.4", 7)));
        let r = ReplicaInfo {
            addr: Addr::new("1.2.3.4", 7),
            flags: f["flags"].clone(),
        };
        assert!(!r.usable());
        let map = Frame::Map(vec![
            (Frame::bulk("ip"), Frame::bulk("h")),
            (Frame::bulk("port"), Frame::bulk("9")),
        ]);
        assert_eq!(instance_addr(&fields(map)), Some(Addr::new("h", 9)));
    }
}
