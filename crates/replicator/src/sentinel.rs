//! Sentinel-managed sources and targets: each session of a job resolves the master through the sentinels
//! ([`ferry_sentinel::SentinelPool`]) and ends as soon as that master's generation ends.
//!
//! The pool ends a generation when the sentinel leader starts a failover (`+failover-state-select-slave`,
//! before any replica is promoted), on `+switch-master`, when its poll finds another master, or on `READONLY`.
//! Ending the session there is what makes a failover exact on both sides:
//!
//! - a target: nothing more is written to the old master; the next session writes to the promoted replica and
//!   starts from the checkpoint that replica holds (the checkpoint rides in the same batch script as the data,
//!   so it is consistent with what the replica has), re-sending whatever the old master had not passed on;
//! - a source: ferry stops reading the old master before the replica is promoted, so its checkpoint never
//!   covers what the replica will not have (the leader's hello `PUBLISH`es and the clients' last writes on the
//!   old master), and the next session continues on the promoted replica with PSYNC2 (`+CONTINUE`), without a
//!   new full copy.

use std::time::Duration;

use ferry_resp::ConnectOptions;
use ferry_sentinel::{SentinelPool, SentinelPoolOptions};
use tokio::sync::Mutex;
use tracing::info;

use crate::error::Error;

/// The master of one sentinel-managed group, followed across the sessions of a job.
#[derive(Debug)]
pub(crate) struct Follower {
    opts: SentinelPoolOptions,
    /// Which side of the job this is, for the logs and errors ("source" or "target").
    side: &'static str,
    /// Made by the first session that needs it (creating it needs a runtime and the sentinels up).
    pool: Mutex<Option<SentinelPool>>,
    /// The master the last session resolved, `host:port`.
    last: Mutex<Option<String>>,
}

/// The master a session talks to.
pub(crate) struct Master {
    /// The data-node connection template with the master's address.
    pub connect: ConnectOptions,
    /// The pool's master generation when it was resolved.
    pub generation: u64,
    /// Another master than the one the session before resolved: the group failed over.
    pub followed: bool,
    pool: SentinelPool,
}

impl Follower {
    pub(crate) fn new(opts: SentinelPoolOptions, side: &'static str) -> Follower {
        Follower {
            opts,
            side,
            pool: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// The current master (waits for the new one while a failover is in progress, up to the pool's
    /// `resolve_timeout`).
    pub(crate) async fn master(&self) -> Result<Master, Error> {
        let pool = {
            let mut slot = self.pool.lock().await;
            match slot.as_ref() {
                Some(p) => p.clone(),
                None => {
                    let p = SentinelPool::new(self.opts.clone()).await?;
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        let conn = pool.get().await?;
        let (addr, generation) = (conn.addr().clone(), conn.generation());
        drop(conn);
        let mut connect = self.opts.data_connect.clone();
        connect.host = addr.host;
        connect.port = addr.port;
        let addr = format!("{}:{}", connect.host, connect.port);
        info!(side = self.side, master = %addr, generation, "sentinel-managed master resolved");
        let followed = {
            let mut last = self.last.lock().await;
            let followed = last.as_ref().is_some_and(|l| *l != addr);
            *last = Some(addr);
            followed
        };
        Ok(Master {
            connect,
            generation,
            followed,
            pool,
        })
    }

    /// Closes the pool (its listeners and poll).
    pub(crate) async fn close(&self) {
        if let Some(p) = self.pool.lock().await.take() {
            p.close();
        }
    }
}

impl Master {
    /// The master's `host:port`.
    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.connect.host, self.connect.port)
    }

    /// Returns once the master this session uses is no longer current (a failover started, or the sentinels
    /// name another master), with the error that ends the session.
    pub(crate) async fn replaced(&self, side: &'static str) -> Error {
        let mut events = self.pool.subscribe();
        loop {
            if self.pool.generation() != self.generation {
                return Error::Failover(format!(
                    "the {side} master {}:{} was replaced or is being failed over",
                    self.connect.host, self.connect.port
                ));
            }
            // Events wake this at once; the tick covers a lagged or closed channel.
            if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
                tokio::time::timeout(Duration::from_millis(100), events.recv()).await
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits for the end of an optional master's generation (never, without one).
pub(crate) async fn replaced(master: Option<&Master>, side: &'static str) -> Error {
    match master {
        Some(m) => m.replaced(side).await,
        None => std::future::pending().await,
    }
}
