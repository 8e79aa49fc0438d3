//! The crate's one error type.

use std::time::Duration;

use crate::addr::Addr;

/// Everything that can go wrong while resolving, following or borrowing from a Sentinel-managed master.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No sentinel could be reached (connect, auth or query failed on every one of them).
    #[error("All sentinels down, cannot determine where is {master_name} master is running...{}", last_error_suffix(.last_error))]
    AllSentinelsDown {
        /// The master name that was asked for.
        master_name: String,
        /// The last sentinel error seen (`host:port: error`), if any.
        last_error: Option<String>,
    },
    /// At least one sentinel answered, but none of them monitors the name.
    #[error("Can connect to sentinel, but {master_name} seems to be not monitored...")]
    NotMonitored {
        /// The master name that was asked for.
        master_name: String,
    },
    /// The sentinels name a server that did not confirm (with ROLE) that it is a master, or whose
    /// failover is still in progress, within the resolve timeout.
    #[error("{addr} is not a master yet (reported {role}) after waiting {} ms", .waited.as_millis())]
    NotMaster {
        /// The address the sentinels reported.
        addr: Addr,
        /// What the server said it is (`slave`, `sentinel`, `demoted`, ...).
        role: String,
        /// How long the pool waited for it to become master.
        waited: Duration,
    },
    /// Every connection is borrowed and none came back within `max_wait` (or at once when
    /// `block_when_exhausted` is false).
    #[error("pool exhausted after {} ms: all {max_total} connections are borrowed", .waited.as_millis())]
    PoolExhausted {
        /// How long the borrow waited.
        waited: Duration,
        /// The pool's `max_total`.
        max_total: usize,
    },
    /// The connection belongs to a master generation that has ended (the master switched or was
    /// found demoted). The command was NOT sent; borrow a new connection and retry.
    #[error("master {addr} was replaced (connection generation {generation}, current {current}); the command was not sent")]
    MasterSwitched {
        /// The master this connection points at.
        addr: Addr,
        /// The generation the connection was created in.
        generation: u64,
        /// The pool's current generation.
        current: u64,
    },
    /// A data node (master or replica) could not be reached or refused the handshake.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node that was tried.
        addr: Addr,
        /// What went wrong.
        #[source]
        source: ferry_resp::Error,
    },
    /// A command on a borrowed connection failed (I/O, timeout, or an error reply).
    #[error(transparent)]
    Resp(#[from] ferry_resp::Error),
    /// A sentinel answered something this crate cannot interpret.
    #[error("unexpected reply from sentinel {sentinel}: {detail}")]
    UnexpectedReply {
        /// The sentinel that answered.
        sentinel: Addr,
        /// What was wrong with it.
        detail: String,
    },
    /// No replica passed the ROLE check and falling back to the master is disabled.
    #[error("no usable replica of {master_name} (tried {tried})")]
    NoReplica {
        /// The master name.
        master_name: String,
        /// How many replicas were tried.
        tried: usize,
    },
    /// The options are inconsistent (no sentinels, `max_total` of 0, ...).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The pool was shut down.
    #[error("the pool is closed")]
    Closed,
}

fn last_error_suffix(e: &Option<String>) -> String {
    match e {
        Some(e) => format!(" (last error: {e})"),
        None => String::new(),
    }
}

impl Error {
    /// Whether a deadline passed (a socket timeout, or the pool's `max_wait`).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::PoolExhausted { waited, .. } => !waited.is_zero(),
            Error::Resp(e) | Error::Connect { source: e, .. } => e.is_timeout(),
            _ => false,
        }
    }

    /// Whether the pool ran out of connections.
    pub fn is_pool_exhausted(&self) -> bool {
        matches!(self, Error::PoolExhausted { .. })
    }

    /// Whether the master could not be located (sentinels down, name not monitored, not a master yet).
    pub fn is_resolve_error(&self) -> bool {
        matches!(
            self,
            Error::AllSentinelsDown { .. } | Error::NotMonitored { .. } | Error::NotMaster { .. }
        )
    }

    /// Whether the command provably did not run on the server, so retrying it elsewhere cannot apply
    /// it twice: it was never sent (stale generation), or the server refused it because it is not a
    /// writable master (`READONLY`, `MASTERDOWN`, `LOADING`).
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            Error::MasterSwitched { .. } => true,
            Error::Resp(e) => e
                .server_error()
                .map(|s| matches!(s.code(), "READONLY" | "MASTERDOWN" | "LOADING"))
                .unwrap_or(false),
            _ => false,
        }
    }

    /// The server's error reply, when the failure is one.
    pub fn server_error(&self) -> Option<&ferry_resp::ServerError> {
        match self {
            Error::Resp(e) => e.server_error(),
            _ => None,
        }
    }
}
