//! `ferry-testkit start standalone|replicas|sentinel|cluster [--version 7.0|6.2|8.2|9.1] [--password P]`
//!
//! Starts a topology of real Redis servers on free ports of 127.0.0.1, prints its addresses as one line of JSON
//! on stdout, keeps it up until stdin reaches end-of-file (or, with `--no-stdin`, until a signal) or SIGTERM /
//! SIGINT arrives, then stops every process it started. For tests written in Python, Node or shell.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_testkit::{
    Cluster, ClusterOptions, ReplicaSet, SentinelGroup, SentinelOptions, Server, ServerOptions,
    Version,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Start {
        kind,
        version,
        password,
        sentinel_password,
        replicas,
        no_stdin,
    } = cli.command;

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
