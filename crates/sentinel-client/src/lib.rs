//! A Sentinel-aware Redis connection pool: JedisSentinelPool's behaviour, done so that no write is
//! ever sent to a master known to be demoted.
//!
//! [`SentinelPool`] asks the sentinels where the master of a name is (in order, each with a short
//! timeout, the one that answered moving to the front), confirms it with `ROLE` (or `INFO
//! replication`), and hands out pooled connections to it. It then follows the master:
//!
//! - one listener per sentinel, subscribed to `+switch-master` and to the failover steps that come
//!   before it (`+elected-leader`, `+failover-state-*`, `+selected-slave`, `+promoted-slave`,
//!   `-failover-abort-*`), plus a periodic poll as the safety net. A listener that loses its sentinel logs
//!   `Lost connection to Sentinel at <host>:<port>. Sleeping <n>ms and retrying.` and retries with
//!   backoff and jitter; listeners never stop while the pool lives. Sentinels learned from
//!   `SENTINEL sentinels <name>` are added; the seeds are never dropped.
//! - a **master generation**: when a failover of the master starts (the sentinel leader publishes
//!   `+failover-state-select-slave` before it promotes a replica), or the master answers `READONLY`,
//!   the generation ends: idle connections close at once, borrowed ones refuse to send
//!   ([`Error::MasterSwitched`]) and are discarded when returned, and borrows wait for the new
//!   master, which is installed as soon as the leader publishes `+promoted-slave` (or
//!   `+switch-master`, or the poll finds it). The old master stays "demoted" even while it still
//!   claims to be a master (sentinels only reconfigure it seconds later), so a write acknowledged by
//!   it is never lost by the resync that follows. A borrow made during a failover waits up to
//!   [`SentinelPoolOptions::resolve_timeout`] for the new master.
//!
//! **Which master, by config epoch.** Every successful failover gives the new configuration a
//! higher config epoch. A resolve and the poll ask all sentinels at once (`SENTINEL
//! get-master-addr-by-name` and `SENTINEL MASTER` in one round trip each) until a majority has
//! answered, and take the answer with the highest `config-epoch`, not the first one. A
//! `+switch-master` / `+promoted-slave` message is followed only after the sentinel that sent it
//! confirms the new address with its epoch. The pool remembers the epoch of the configuration it
//! follows and never installs an address whose configuration is older, nor another address with the
//! same epoch: a stale minority sentinel, a late message, or a partitioned old master that still
//! answers `ROLE` as master cannot bring the pool back to an address it has switched away from,
//! unless a later failover names it with a higher epoch. (If the sentinels themselves are replaced
//! and start again from epoch 0, create a new pool.)
//!
//! **What this guarantees, and what it cannot.** No command is sent on a connection of an ended
//! generation, and no connection is opened to a master whose configuration is older than the one
//! followed. A command already sent when the failover starts is beyond any client's reach: if the
//! old master is cut off or frozen with it, the call ends with a read timeout (data connections
//! have one by default, [`SentinelPoolOptions::DEFAULT_READ_TIMEOUT`], and TCP keepalive,
//! [`SentinelPoolOptions::DEFAULT_TCP_KEEPALIVE`]) and its outcome is unknown; if the old master
//! answers it before the read timeout, the write is acknowledged and may be lost when that master
//! is turned into a replica. Other clients that do not follow the sentinels can also still write to
//! it. Against both, configure the servers with `min-replicas-to-write 1` and a small
//! `min-replicas-max-lag`: a master cut off from its replicas then refuses writes by itself. Keep
//! the read timeout below the time a failover takes (`down-after-milliseconds` plus the election),
//! so that a write the old master answers after being replaced is never reported as acknowledged.
//!
//! **Borrowing is cancellation-safe.** A borrow dropped at any point (while waiting, opening a
//! connection, running `test_on_borrow`) gives its slot back; a call dropped half-way makes its
//! connection unusable and it is closed, not returned (see [`PooledConnection`]).
//!
//! The pool knobs are JedisSentinelPool's (`max_total` 8, `max_idle` 8, `min_idle` 0, `max_wait`
//! forever, `block_when_exhausted`, `test_on_borrow`). Sentinels and data nodes have separate auth
//! and TLS ([`SentinelPoolOptions::sentinel_connect`], [`SentinelPoolOptions::data_connect`]), an
//! [`AddressMap`] handles NAT, [`SentinelPool::replica`] gives ROLE-checked replica connections
//! round robin, and [`SentinelPool::subscribe`] delivers [`Event`]s. [`BlockingSentinelPool`] is the
//! same pool for code that is not async.
//!
//! ```no_run
//! use ferry_sentinel::{Addr, SentinelPool, SentinelPoolOptions};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), ferry_sentinel::Error> {
//! let opts = SentinelPoolOptions::new(
//!     "mymaster",
//!     [Addr::new("127.0.0.1", 26379), Addr::new("127.0.0.1", 26380)],
//! )
//! .sentinel_auth(None, "sentinel-secret")
//! .data_auth(Some("app"), "app-secret")
//! .max_wait(Some(Duration::from_secs(2)));
//! let pool = SentinelPool::new(opts).await?;
//! let mut events = pool.subscribe();
//!
//! let mut conn = pool.get().await?; // back to the pool when dropped
//! conn.call(&["SET", "greeting", "hello"]).await?;
//! println!("written to {} (generation {})", conn.addr(), conn.generation());
//! drop(conn);
//!
//! // One-shot form: retried once on the new master when the command provably did not run.
//! pool.call(&["INCR", "counter"]).await?;
//!
//! while let Ok(event) = events.try_recv() {
//!     println!("{event:?}");
//! }
//! # Ok(())
//! # }
//! ```

mod addr;
mod blocking;
mod error;
mod events;
mod listener;
mod options;
mod pool;
mod sentinel;

pub use addr::{Addr, AddressMap, ParseAddrError};
pub use blocking::{BlockingConnection, BlockingReplicaConnection, BlockingSentinelPool};
pub use error::Error;
pub use events::{Event, SwitchReason};
pub use options::SentinelPoolOptions;
pub use pool::{PoolStats, PooledConnection, ReplicaConnection, SentinelPool};

/// Re-exported so callers can build the connection templates without naming the crate.
pub use ferry_resp::{ConnectOptions, Frame, Password, TlsOptions};

pub(crate) fn password(p: &str) -> ferry_resp::Password {
    ferry_resp::Password::new(p)
}
