//! Helpers of the CLI tests: the `ferry` binary run as a process, as a user runs it, against testkit servers.

#![allow(dead_code)]

pub mod dr;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_testkit::{compare, wait_for, CompareOptions, Server, Target};

/// The job's phases among `events`, in order.
pub fn phases(events: &[ferry::Event]) -> Vec<ferry::Phase> {
    events
        .iter()
        .filter_map(|e| match e {
            ferry::Event::Phase { phase } => Some(*phase),
            _ => None,
        })
        .collect()
}

/// A runtime of two workers, as the jobs of the tests run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every wait of the tests: long, since the machine may be loaded.
pub const DEADLINE: Duration = Duration::from_secs(240);

/// The shared directory of the project (fixtures).
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// A running `ferry` process whose stdout and stderr go to files.
pub struct Ferry {
    child: Child,
    dir: tempfile::TempDir,
    /// The exit code, once it ended.
    code: Option<i32>,
}

impl Ferry {
    /// Starts `ferry ARGS...`.
    pub fn spawn<I, S>(args: I) -> Ferry
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Ferry::spawn_env(args, &[])
    }

    /// Starts `ferry ARGS...` with extra environment variables.
    pub fn spawn_env<I, S>(args: I, env: &[(&str, &str)]) -> Ferry
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("ferry starts");
        Ferry {
            child,
            dir,
            code: None,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for the exit (deadline [`DEADLINE`]) and returns the code.
    pub fn wait(&mut self) -> i32 {
        if let Some(c) = self.code {
            return c;
        }
        let child = &mut self.child;
        let status = wait_for(DEADLINE, "ferry to exit", || {
            child.try_wait().ok().flatten()
        });
        match status {
            Ok(s) => {
                let code = s.code().unwrap_or(-1);
                self.code = Some(code);
                code
            }
            Err(e) => {
                let _ = self.child.kill();
                panic!("{e}\nstderr:\n{}", self.stderr());
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM delivered");
    }

    /// Waits until stderr contains `text`, returns stderr.
    pub fn wait_stderr(&mut self, text: &str) -> String {
        let what = format!("ferry to log {text:?}");
        let found = wait_for(DEADLINE, &what, || {
            let e = self.stderr();
            if e.contains(text) {
                return Some(e);
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("ferry exited ({s}) before logging {text:?}:\n{e}");
            }
            None
        });
        found.unwrap_or_else(|e| panic!("{e}\nstderr:\n{}", self.stderr()))
    }

    /// The `http://host:port` ferry logged for `what` (`metrics` or `status`).
    pub fn served_addr(&mut self, what: &str) -> String {
        let needle = format!("{what} at http://");
        let text = self.wait_stderr(&needle);
        let start = text.find(&needle).unwrap() + needle.len();
        let rest = &text[start..];
        rest[..rest.find('/').unwrap()].to_string()
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if self.code.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP GET on 127.0.0.1: the body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Compare options for a ferry target: its checkpoint and shard lease keys (and a DR pair's state record) are
/// not data.
pub fn opts() -> CompareOptions {
    CompareOptions::default()
        .ignore_prefix("ferry:checkpoint:")
        .ignore_prefix("ferry:lease:")
        .ignore_prefix("ferry:state:")
}

/// Asserts that two deployments hold the same data.
pub fn assert_equal(a: &Target, b: &Target) {
    let report = compare(a, b, &opts()).expect("compare runs");
    assert!(report.is_equal(), "{report}");
    assert!(report.keys_compared > 0, "nothing compared");
}

/// Waits until `a` and `b` hold the same data.
pub fn wait_equal(a: &Target, b: &Target) {
    let mut last = String::new();
    let r = ferry_testkit::wait_until(
        DEADLINE,
        "the target to equal the source",
        || match compare(a, b, &opts()) {
            Ok(r) if r.is_equal() => true,
            Ok(r) => {
                last = r.to_string();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        },
    );
    if let Err(e) = r {
        panic!("{e}: {last}");
    }
}

/// Writes a config file in a temp dir and returns (dir, path).
pub fn write_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `DBSIZE` of database `db` of a server.
pub fn dbsize(server: &Server, db: u32) -> u64 {
    let mut c = server.client();
    redis::cmd("SELECT").arg(db).exec(&mut c).unwrap();
    redis::cmd("DBSIZE").query(&mut c).unwrap()
}
