//! Shared helpers for the benches in this folder (each bench is its own target): a deterministic generator,
//! testkit servers as the benches start them, the `ferry` program run as a user runs it, peak RSS of a
//! process, and redis-benchmark.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_testkit::{Server, ServerOptions, Version};

/// A small deterministic generator (xorshift64), so every run of a bench builds the same input bytes.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> usize {
        (self.next_u64() % n) as usize
    }
}

/// A Redis 7.0 server without persistence (testkit's defaults), with `config` on top.
pub fn server(config: &[(&str, &str)]) -> Server {
    let mut opts = ServerOptions::new(Version::V7_0)
        .config("save", "")
        .config("appendonly", "no");
    for (k, v) in config {
        opts = opts.config(*k, *v);
    }
    Server::start(opts).expect("start redis-server")
}

/// Polls `done` every 2 ms (no back-off, unlike testkit's `wait_until`, whose pauses grow to 100 ms and would
/// round a timed phase up by as much) until it holds; panics after an hour. For the waits whose end is timed.
pub fn wait_timed(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `DBSIZE` of `server`.
pub fn dbsize(server: &Server) -> u64 {
    redis::cmd("DBSIZE").query(&mut server.client()).unwrap()
}

/// Whether `server` is a replica whose link to its master is up.
pub fn link_up(server: &Server) -> bool {
    server
        .info_field("replication", "master_link_status")
        .ok()
        .flatten()
        .as_deref()
        == Some("up")
}

/// The peak RSS (`VmHWM`) of process `pid` (`"self"` for this one) in MiB, if it still runs.
pub fn peak_rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb / 1024.0)
}

/// Builds the `ferry` program with the cargo that runs the bench, in the profile the bench was built with
/// (`cargo bench`: release), and returns its path.
pub fn ferry_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "ferry", "--bin", "ferry", "--target-dir"]);
    build.arg(profile_dir.parent().unwrap());
    if profile_dir.file_name().is_some_and(|d| d != "debug") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo");
    assert!(status.success(), "building ferry failed");
    let bin = profile_dir.join("ferry");
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

/// Runs `ferry ARGS` to its exit; returns (wall time to exit, peak RSS in MiB, exit code).
pub fn run_ferry(ferry: &Path, args: &[&str]) -> (Duration, f64, i32) {
    let started = Instant::now();
    let mut child = Command::new(ferry)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ferry");
    let pid = child.id().to_string();
    let mut peak = 0f64;
    let code = loop {
        if let Some(mib) = peak_rss_mib(&pid) {
            peak = peak.max(mib);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (started.elapsed(), peak, code)
}

/// `redis-benchmark` of SET, INCR, LPUSH and HSET (`requests` each, 50 clients, pipeline 16, 100,000 random
/// keys) against `server`; with `cluster`, `--cluster` (every master of the cluster `server` belongs to).
/// Returns the wall time and what it printed.
pub fn redis_benchmark(server: &Server, requests: u64, cluster: bool) -> (Duration, String) {
    let started = Instant::now();
    let mut cmd = Command::new("/usr/bin/redis-benchmark");
    if cluster {
        cmd.arg("--cluster");
    }
    let out = cmd
        .args(["-h", server.host(), "-p", &server.port().to_string()])
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            "50",
            "-P",
            "16",
            "-r",
            "100000",
            "-t",
            "set,incr,lpush,hset",
            "-q",
        ])
        .output()
        .expect("run redis-benchmark");
    assert!(out.status.success(), "redis-benchmark failed: {out:?}");
    (
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout).replace('\r', "\n"),
    )
}

/// `DEBUG POPULATE n prefix size` on `server` (keys `prefix:0` .. `prefix:n-1`, whatever their slot).
pub fn populate(server: &Server, n: u64, prefix: &str, size: u64) {
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(n)
        .arg(prefix)
        .arg(size)
        .exec(&mut server.client())
        .unwrap();
}

/// Every key of `server` matching `pattern` (`SCAN`).
pub fn scan(server: &Server, pattern: &str) -> Vec<String> {
    redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter::<String>(&mut server.client())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The keys of the data on `masters`: all but ferry's own (`ferry:` checkpoints, owner records).
pub fn data_keys(masters: &[&Server]) -> u64 {
    masters
        .iter()
        .map(|m| dbsize(m) - scan(m, "ferry:*").len() as u64)
        .sum()
}
