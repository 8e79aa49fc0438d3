//! ferry-topology: where a key lives in a Redis Cluster, and a client that keeps up when that changes.
//!
//! - [`key_slot`]: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384 — what `CLUSTER KEYSLOT` says;
//!   [`tag_for_slot`] finds a hash tag for a given slot.
//! - [`SlotMap`]: which master (and replicas) serve each slot, built from `CLUSTER SHARDS` (7.0+),
//!   `CLUSTER SLOTS` or `CLUSTER NODES`; [`parse_cluster_nodes`] gives every field of the latter,
//!   including importing/migrating markers.
//! - [`CommandTable`]: the server's own command table (`COMMAND`), used to find the keys of any
//!   command exactly as `COMMAND GETKEYS` does, and to refuse a command whose keys span slots.
//! - [`ClusterClient`]: an async (tokio) cluster client with one multiplexed connection per node
//!   (many callers, replies matched in order), dedicated connections for blocking commands and
//!   transactions ([`DedicatedConnection`]), at-most-once sending by default (a command whose
//!   connection broke is reported as an unknown outcome, not resent), MOVED / ASK, bounded retries
//!   of TRYAGAIN / CLUSTERDOWN / LOADING, one background map refresh at a time, and MSET / DEL /
//!   UNLINK / EXISTS / TOUCH / MGET split by slot. It implements [`ferry_resp::ConnectionLike`].
//!
//! ```
//! use ferry_topology::{key_slot, SlotMap};
//!
//! // Keys with the same hash tag share a slot.
//! assert_eq!(key_slot(b"{user:42}:cart"), key_slot(b"{user:42}:profile"));
//! assert_eq!(key_slot(b"123456789"), 0x31C3 & 0x3FFF);
//!
//! let nodes = b"e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-16383\n";
//! let map = SlotMap::from_cluster_nodes(nodes)?;
//! assert_eq!(map.master_for_slot(key_slot(b"foo")).unwrap().addr.port, 30001);
//! # Ok::<(), ferry_topology::Error>(())
//! ```
//!
//! Connecting to a cluster (needs a running cluster, so not run here):
//!
//! ```no_run
//! use ferry_resp::ConnectOptions;
//! use ferry_topology::{ClusterClient, ClusterOptions};
//!
//! # async fn demo() -> Result<(), ferry_topology::Error> {
//! let client = ClusterClient::connect(ClusterOptions::new(ConnectOptions::new("127.0.0.1", 30001))).await?;
//! client.call(&["SET", "greeting", "hello"]).await?;
//! let removed = client.del(&["a", "b", "c"]).await?; // split by slot, counts summed
//! println!("{removed} removed; {:?}", client.stats());
//! # Ok(()) }
//! ```

mod cluster;
mod dedicated;
mod error;
pub mod keys;
mod mux;
mod slot;
pub mod slotmap;
pub mod split;

pub use cluster::{ClusterClient, ClusterOptions, ClusterStats};
pub use dedicated::DedicatedConnection;
pub use error::{Error, SlotLabel};
pub use keys::{CommandInfo, CommandTable, CommandTableCache};
pub use slot::{crc16_xmodem, hash_tag, key_slot, tag_for_slot, SLOT_COUNT};
pub use slotmap::{
    parse_cluster_nodes, ClusterNodeInfo, Health, Node, NodeAddr, NodeFlags, Role, Shard, SlotMap,
    SlotRange,
};
