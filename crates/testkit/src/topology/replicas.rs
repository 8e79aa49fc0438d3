//! A master with replicas.

use std::time::Duration;

use super::{link_up, master_auth_config, online_replicas, repl_offset, TOPOLOGY_DEADLINE};
use crate::{wait_until, Error, Server, ServerOptions, Target, Version};

/// A master and `n` replicas (`replicaof`), all linked and in sync when [`ReplicaSet::start`] returns.
#[derive(Debug)]
pub struct ReplicaSet {
    /// The master.
    pub master: Server,
    /// The replicas, each `replicaof` the master.
    pub replicas: Vec<Server>,
}

impl ReplicaSet {
    /// A master of `version` with `replicas` replicas, no password.
    pub fn start(version: Version, replicas: usize) -> Result<ReplicaSet, Error> {
        Self::start_with(ServerOptions::new(version), replicas)
    }

    /// Every server gets `opts`; replicas also get `replicaof` and `masteruser`/`masterauth` matching the
    /// credentials in `opts` (the `client_user`, else the `password`).
    pub fn start_with(opts: ServerOptions, replicas: usize) -> Result<ReplicaSet, Error> {
        let master = Server::start(opts.clone())?;
        let mut set = ReplicaSet {
            master,
            replicas: Vec::with_capacity(replicas),
        };
        for _ in 0..replicas {
            let mut ropts = opts.clone();
            ropts.config.extend(master_auth_config(&opts));
            ropts.config.push((
                "replicaof".into(),
                format!("{} {}", set.master.host(), set.master.port()),
            ));
            set.replicas.push(Server::start(ropts)?);
        }
        set.wait_linked(TOPOLOGY_DEADLINE)?;
        Ok(set)
    }

    /// Waits until every replica's link is up and the master sees them all online.
    pub fn wait_linked(&self, deadline: Duration) -> Result<(), Error> {
        let n = self.replicas.len();
        wait_until(
            deadline,
            &format!("{n} replicas of {} to be online", self.master.addr()),
            || online_replicas(&self.master) == n && self.replicas.iter().all(link_up),
        )
    }

    /// Waits until every replica has processed the master's whole replication stream (equal offsets).
    pub fn wait_synced(&self, deadline: Duration) -> Result<(), Error> {
        wait_until(
            deadline,
            &format!("replicas of {} to reach its offset", self.master.addr()),
            || {
                let Ok(target) = repl_offset(&self.master) else {
                    return false;
                };
                self.replicas
                    .iter()
                    .all(|r| repl_offset(r).is_ok_and(|o| o >= target))
            },
        )
    }

    /// The master as a [`Target`].
    pub fn target(&self) -> Target {
        Target::from(&self.master)
    }
}
