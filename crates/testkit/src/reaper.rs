//! Last-resort cleanup: servers die with the test process even when it is killed without unwinding.
//!
//! `Drop` stops servers on a normal exit and on panic, but a SIGKILLed test binary (a CI timeout, an abort)
//! runs no destructor. So the first server a process starts also starts a small watchdog, `sh`, whose stdin
//! is a pipe only this process holds. When this process ends in any way the pipe closes, the watchdog wakes up
//! and SIGKILLs every server pid still listed in its pid file. Pids are removed from the file as soon as the
//! testkit reaps them itself, so a reused pid is never hit.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

struct Watchdog {
    /// Held open for the life of the process; closing it (at exit) is the watchdog's signal.
    _stdin: ChildStdin,
    pid_file: PathBuf,
    pids: BTreeSet<u32>,
}

const SCRIPT: &str =
    r#"cat >/dev/null; if [ -f "$0" ]; then xargs -r kill -9 <"$0" 2>/dev/null; rm -f "$0"; fi"#;

fn watchdog() -> &'static Mutex<Option<Watchdog>> {
    static W: OnceLock<Mutex<Option<Watchdog>>> = OnceLock::new();
    W.get_or_init(|| {
        let pid_file =
            std::env::temp_dir().join(format!("ferry-testkit-{}.pids", std::process::id()));
        let started = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&pid_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        Mutex::new(started.ok().and_then(|mut child| {
            let stdin = child.stdin.take()?;
            Some(Watchdog {
                _stdin: stdin,
                pid_file,
                pids: BTreeSet::new(),
            })
        }))
    })
}

fn update(f: impl FnOnce(&mut BTreeSet<u32>)) {
    let mut guard = watchdog().lock().unwrap_or_else(|p| p.into_inner());
    let Some(w) = guard.as_mut() else { return };
    f(&mut w.pids);
    let tmp = w.pid_file.with_extension("tmp");
    let body: String = w.pids.iter().map(|p| format!("{p}\n")).collect();
    let written = std::fs::File::create(&tmp).and_then(|mut file| file.write_all(body.as_bytes()));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, &w.pid_file);
    }
}

/// Lists `pid` for the watchdog.
pub(crate) fn register(pid: u32) {
    update(|s| {
        s.insert(pid);
    });
}

/// Removes `pid` (call right after reaping it).
pub(crate) fn unregister(pid: u32) {
    update(|s| {
        s.remove(&pid);
    });
}
