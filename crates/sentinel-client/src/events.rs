//! Events the pool publishes for callers that must react to a failover.

use std::time::{Duration, SystemTime};

use crate::addr::Addr;

/// Why the pool changed (or dropped) its master.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwitchReason {
    /// A sentinel published `+switch-master`.
    SwitchMessage,
    /// The sentinel leader published `+promoted-slave`: the chosen replica already answers as
    /// master and the failover is committed (`+switch-master` follows once the other replicas are
    /// reconfigured).
    Promoted,
    /// The periodic poll found the sentinels naming another master.
    Poll,
    /// A resolve (first borrow, or after the master was dropped) found it.
    Resolve,
}

/// Something that happened to the pool; see [`crate::SentinelPool::subscribe`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The pool now sends to `new`. Connections of older generations are closed (idle) or
    /// discarded when returned (borrowed).
    MasterSwitched {
        /// The master before the switch, if one was known.
        old: Option<Addr>,
        /// The new master.
        new: Addr,
        /// The new master generation.
        generation: u64,
        /// What told the pool.
        reason: SwitchReason,
        /// When the pool made the switch.
        at: SystemTime,
    },
    /// A failover of `master` has started (the sentinel leader is selecting or promoting a
    /// replica) or the master refused a write (`READONLY`): from now on nothing is sent to it, and
    /// borrows wait for the new master.
    MasterDemoted {
        /// The master that is no longer written to.
        master: Addr,
        /// The generation that began with the demotion.
        generation: u64,
        /// What the pool saw (`+failover-state-select-slave`, `READONLY`, ...).
        cause: String,
        /// When.
        at: SystemTime,
    },
    /// A sentinel listener lost its connection (or could not connect) and will retry.
    SentinelLost {
        /// The sentinel.
        sentinel: Addr,
        /// Delay before the next attempt.
        retry_in: Duration,
        /// What failed.
        error: String,
    },
    /// A listener that had lost its sentinel is subscribed again.
    SentinelBack {
        /// The sentinel.
        sentinel: Addr,
    },
    /// A sentinel was learned from `SENTINEL sentinels` or a `+sentinel` message and is now followed.
    SentinelAdded {
        /// The sentinel.
        sentinel: Addr,
    },
    /// Resolving the master failed (the poll, or a borrow that had to resolve). The pool keeps
    /// serving the master it knows, if any. Published at most once a second.
    ResolveFailed {
        /// The error, as text.
        error: String,
    },
}
