//! `ferry-testkit start standalone|replicas|sentinel|cluster [--version 7.0|6.2|8.2|9.1] [--password P]`
//!
//! Also `ferry-testkit fill URL [--seed N] [--scale N] [--dbs 0,1,2] [--prefix P]` (writes the testkit dataset
//! of every type and encoding, prints the fill report as JSON) and `ferry-testkit compare URL_A URL_B
//! [--ignore-prefix P]...` (prints the comparison report as JSON, with `"equal"`), so tests in other languages
//! fill and compare exactly as the Rust tests do. URLs name one standalone server (`redis://[:pass@]host:port`).
//!
//! Also `ferry-testkit fill URL [--seed N] [--scale N] [--dbs 0,1,2] [--prefix P]` (writes the testkit dataset
//! of every type and encoding, prints the fill report as JSON) and `ferry-testkit compare URL_A URL_B
//! [--ignore-prefix P]...` (prints the comparison report as JSON, with `"equal"`), so tests in other languages
//! fill and compare exactly as the Rust tests do. URLs name one standalone server (`redis://[:pass@]host:port`).
//!
//! Starts a topology of real Redis servers on free ports of 127.0.0.1, prints its addresses as one line of JSON
//! on stdout, keeps it up until stdin reaches end-of-file (or, with `--no-stdin`, until a signal) or SIGTERM /
//! SIGINT arrives, then stops every process it started. For tests written in Python, Node or shell.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_testkit::{
    Cluster, ClusterOptions, CompareOptions, FillOptions, ReplicaSet, SentinelGroup,
    SentinelOptions, Server, ServerOptions, Target, Version,
};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Parser)]
#[command(
    name = "ferry-testkit",
    about = "Start real Redis topologies on 127.0.0.1 for tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a topology, print its addresses as JSON, run until stdin closes or SIGTERM/SIGINT.
    Start {
        /// What to start.
        kind: Kind,
        /// Server version: 7.0, 6.2, 8.2 (Redis) or 9.1 (Valkey).
        #[arg(long, default_value = "7.0")]
        version: Version,
        /// Password of the data servers (requirepass; for a cluster, every node).
        #[arg(long)]
        password: Option<String>,
        /// Password of the Sentinels (sentinel only).
        #[arg(long)]
        sentinel_password: Option<String>,
        /// Number of replicas (replicas: default 2; sentinel: default 2).
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Ignore stdin; run until SIGTERM/SIGINT.
        #[arg(long)]
        no_stdin: bool,
    },
    /// Fill a running server with the testkit dataset, print the fill report as JSON.
    Fill {
        /// `redis://[:password@]host:port` of a standalone server.
        url: String,
        /// Seed of every value.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Size multiplier.
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Databases to fill, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
        dbs: Vec<u32>,
        /// Prefix of every key name.
        #[arg(long, default_value = "ferry")]
        prefix: String,
    },
    /// Compare two running servers key by key, print the report as JSON (`"equal": true|false`).
    Compare {
        /// `redis://[:password@]host:port` of side a.
        a: String,
        /// `redis://[:password@]host:port` of side b.
        b: String,
        /// Skip keys starting with this prefix on both sides (repeatable).
        #[arg(long)]
        ignore_prefix: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Standalone,
    Replicas,
    Sentinel,
    Cluster,
}

/// Keeps the servers alive until dropped.
type Running = Box<dyn std::any::Any>;

fn start(
    kind: Kind,
    version: Version,
    password: Option<String>,
    sentinel_password: Option<String>,
    replicas: usize,
) -> Result<(Running, serde_json::Value), ferry_testkit::Error> {
    let mut opts = ServerOptions::new(version);
    opts.password = password.clone();
    Ok(match kind {
        Kind::Standalone => {
            let s = Server::start(opts)?;
            let j = json!({"kind": "standalone", "version": version.to_string(), "addr": s.addr(), "port": s.port()});
            (Box::new(s) as Running, j)
        }
        Kind::Replicas => {
            let r = ReplicaSet::start_with(opts, replicas)?;
            let j = json!({
                "kind": "replicas", "version": version.to_string(),
                "master": r.master.addr(),
                "replicas": r.replicas.iter().map(Server::addr).collect::<Vec<_>>(),
            });
            (Box::new(r) as Running, j)
        }
        Kind::Sentinel => {
            let mut o = SentinelOptions::new(version);
            o.master_password = password;
            o.sentinel_password = sentinel_password;
            o.replicas = replicas;
            let g = SentinelGroup::start(o)?;
            let j = json!({
                "kind": "sentinel", "version": version.to_string(),
                "master_name": g.master_name,
                "master": g.master.addr(),
                "replicas": g.replicas.iter().map(Server::addr).collect::<Vec<_>>(),
                "sentinels": g.sentinels.iter().map(Server::addr).collect::<Vec<_>>(),
            });
            (Box::new(g) as Running, j)
        }
        Kind::Cluster => {
            let mut o = ClusterOptions::new(version);
            o.password = password;
            let c = Cluster::start_with(o)?;
            let j = json!({
                "kind": "cluster", "version": version.to_string(),
                "nodes": c.addrs(),
                "masters": c.masters().into_iter().map(Server::addr).collect::<Vec<_>>(),
                "replicas": c.replicas().into_iter().map(Server::addr).collect::<Vec<_>>(),
            });
            (Box::new(c) as Running, j)
        }
    })
}

/// Runs `fill` or `compare` and prints its report as one line of JSON.
fn report(command: Command) -> Result<serde_json::Value, ferry_testkit::Error> {
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.unwrap_or_else(|e| json!({"error": format!("cannot serialize the report: {e}")}))
    };
    match command {
        Command::Fill {
            url,
            seed,
            scale,
            dbs,
            prefix,
        } => {
            let opts = FillOptions::seed(seed).scale(scale).dbs(dbs).prefix(prefix);
            let r = ferry_testkit::fill(&Target::Standalone(url), &opts)?;
            Ok(to_json(serde_json::to_value(&r)))
        }
        Command::Compare {
            a,
            b,
            ignore_prefix,
        } => {
            let opts = CompareOptions {
                ignore_prefixes: ignore_prefix.into_iter().map(String::into_bytes).collect(),
                ..CompareOptions::default()
            };
            let r = ferry_testkit::compare(&Target::Standalone(a), &Target::Standalone(b), &opts)?;
            let mut v = to_json(serde_json::to_value(&r));
            v["equal"] = json!(r.is_equal());
            Ok(v)
        }
        Command::Start { .. } => unreachable!("start is handled by main"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (kind, version, password, sentinel_password, replicas, no_stdin) = match cli.command {
        Command::Start {
            kind,
            version,
            password,
            sentinel_password,
            replicas,
            no_stdin,
        } => (
            kind,
            version,
            password,
            sentinel_password,
            replicas,
            no_stdin,
        ),
        other => {
            return match report(other) {
                Ok(v) => {
                    let mut out = std::io::stdout().lock();
                    match writeln!(out, "{v}").and_then(|_| out.flush()) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(_) => ExitCode::FAILURE,
                    }
                }
                Err(e) => {
                    eprintln!("ferry-testkit: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };

    // Signals first, so a SIGTERM during start-up still stops what was started.
    let (tx, rx) = mpsc::channel::<&'static str>();
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry-testkit: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sig_tx = tx.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = sig_tx.send("signal");
        }
    });

    let (running, info) = match start(kind, version, password, sentinel_password, replicas) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ferry-testkit: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{info}").and_then(|_| out.flush()).is_err() {
            drop(running);
            return ExitCode::FAILURE;
        }
    }
    if !no_stdin {
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = tx.send("stdin closed");
        });
    }
    let why = rx.recv().unwrap_or("channel closed");
    eprintln!("ferry-testkit: {why}, stopping");
    drop(running);
    ExitCode::SUCCESS
}
