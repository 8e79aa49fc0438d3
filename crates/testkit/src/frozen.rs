//! Server processes paused with SIGSTOP: a peer that holds its connections open and answers nothing, the way a
//! hung host or a long GC pause looks from the network.

use std::process::Command;

use crate::server::Server;

/// Server processes stopped with SIGSTOP; [`Frozen::resume`] (or dropping it) continues them with SIGCONT.
#[derive(Debug)]
#[must_use = "dropping it resumes the servers at once"]
pub struct Frozen(Vec<u32>);

impl Frozen {
    /// Stops every running server of `servers` (panics when one is not running or the signal fails).
    pub fn freeze(servers: &[&Server]) -> Frozen {
        let pids: Vec<u32> = servers
            .iter()
            .map(|s| s.pid().expect("a running server to freeze"))
            .collect();
        for pid in &pids {
            signal("-STOP", *pid);
        }
        Frozen(pids)
    }

    /// Continues the servers.
    pub fn resume(mut self) {
        self.continue_all();
    }

    fn continue_all(&mut self) {
        for pid in self.0.drain(..) {
            signal("-CONT", pid);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.continue_all();
    }
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}
