//! Topologies built from [`crate::Server`]s: replica sets, Sentinel groups, clusters.

pub(crate) mod cluster;
pub(crate) mod replicas;
pub(crate) mod sentinel;

use std::time::Duration;

use crate::error::RedisContext;
use crate::server::info_value;
use crate::{Error, Server};

/// How long topology conditions (links up, failovers, cluster state) are waited for.
pub(crate) const TOPOLOGY_DEADLINE: Duration = Duration::from_secs(60);

/// Config lines that make a data server authenticate to its master with the same credentials clients use.
pub(crate) fn master_auth_config(opts: &crate::ServerOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(name) = &opts.client_user {
        if let Some(u) = opts.acl_users.iter().find(|u| &u.name == name) {
            out.push(("masteruser".into(), crate::server::quote(&u.name)));
            out.push(("masterauth".into(), crate::server::quote(&u.password)));
        }
    } else if let Some(p) = &opts.password {
        out.push(("masterauth".into(), crate::server::quote(p)));
    }
    out
}

/// True when `replica` reports `master_link_status:up`.
pub(crate) fn link_up(replica: &Server) -> bool {
    replica
        .info_field("replication", "master_link_status")
        .ok()
        .flatten()
        .is_some_and(|s| s == "up")
}

/// Number of replicas the master reports as `state=online`.
pub(crate) fn online_replicas(master: &Server) -> usize {
    let Ok(text) = master.info("replication") else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

/// `master_repl_offset` of `server`.
pub(crate) fn repl_offset(server: &Server) -> Result<i64, Error> {
    let text = server.info("replication")?;
    info_value(&text, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::unexpected(
                format!("INFO replication on {}", server.addr()),
                "no master_repl_offset",
            )
        })
}

/// `ROLE`'s first element ("master", "slave", "sentinel").
pub(crate) fn role(server: &Server) -> Result<String, Error> {
    let mut con = server.try_client()?;
    let v: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut con)
        .ctx(|| format!("ROLE on {}", server.addr()))?;
    match v.first() {
        Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(redis::Value::SimpleString(s)) => Ok(s.clone()),
        other => Err(Error::unexpected(
            format!("ROLE on {}", server.addr()),
            format!("{other:?}"),
        )),
    }
}
