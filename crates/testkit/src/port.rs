//! Picking free loopback ports.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// Offset of the cluster bus port from the client port (fixed by Redis).
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Picks a port on 127.0.0.1 that is free now (and, for a cluster node, whose bus port +10000 is free too).
///
/// The kernel chooses (bind to port 0); ports already handed out by this process are never handed out again,
/// so parallel tests in one process do not collide. Another process may still take the port before the server
/// binds it: [`crate::Server::start`] detects that and retries with a new port.
pub(crate) fn pick_free_port(cluster: bool) -> Result<u16, Error> {
    for _ in 0..200 {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| Error::io("binding 127.0.0.1:0 to pick a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading the picked port", e))?
            .port();
        drop(listener);
        if cluster {
            match port.checked_add(CLUSTER_BUS_OFFSET) {
                Some(bus) if bindable(bus) => {}
                _ => continue,
            }
        }
        let mut set = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if set.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::InvalidArgument(
        "could not find a free port on 127.0.0.1 after 200 tries".into(),
    ))
}
