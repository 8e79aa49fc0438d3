//! A runnable front for the sync job until the CLI exists.
//!
//! ```text
//! cargo run -p ferry-replicator --example sync -- \
//!     --source redis://127.0.0.1:6379 --target redis://127.0.0.1:6380 --checkpoint --conflict rewrite
//! cargo run -p ferry-replicator --example sync -- \
//!     --source redis://127.0.0.1:6379 --target redis://127.0.0.1:7000 --target-cluster
//! ```
//!
//! Runs until interrupted (Ctrl-C or SIGTERM) and prints the job's status once a second. Logs go to stderr
//! (`RUST_LOG=ferry_replicator=debug` for more).

use std::time::Duration;

use clap::Parser;
use ferry_replicator::{Config, ConflictPolicy, KeyDisplay, Replicator, TargetPolicy};
use ferry_resp::ConnectOptions;
use tokio_util::sync::CancellationToken;

/// Copies a Redis dataset into a target and keeps it in sync.
#[derive(Debug, Parser)]
struct Args {
    /// The source, `redis://[user[:password]@]host:port`.
    #[arg(long)]
    source: String,
    /// The target, `redis://[user[:password]@]host:port`.
    #[arg(long)]
    target: String,
    /// The target is a Redis Cluster (7.0+; `--target` is any of its nodes).
    #[arg(long)]
    target_cluster: bool,
    /// Store checkpoints in the target and resume from them after a restart (always on for a cluster).
    #[arg(long)]
    checkpoint: bool,
    /// The database of the checkpoint key.
    #[arg(long, default_value_t = 0)]
    checkpoint_db: i64,
    /// What to do with keys that already exist on the target: panic, rewrite or skip.
    #[arg(long, default_value = "panic")]
    conflict: ConflictPolicy,
    /// What to do with a key the target cannot hold (hash field expiries on a target before Redis 7.4 /
    /// Valkey 9, a module type, an unknown command): stop, skip or convert. The keys skipped and converted are
    /// counted in the status line and listed when the job ends.
    #[arg(long, default_value = "stop")]
    target_policy: TargetPolicy,
    /// A source database not to copy (repeatable).
    #[arg(long = "block-db")]
    block_dbs: Vec<i64>,
    /// Empty the target before a full sync that must be redone over this job's own earlier data.
    #[arg(long)]
    flush_on_resync: bool,
    /// Where the source's data waits on disk while the target is behind (default: the temporary directory).
    #[arg(long)]
    spool_dir: Option<std::path::PathBuf>,
    /// Most bytes the spool file may hold; beyond it ferry stops reading the source.
    #[arg(long)]
    spool_max_bytes: Option<u64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = Config::new(
        ConnectOptions::from_url(&args.source)?,
        ConnectOptions::from_url(&args.target)?,
    );
    config.target_cluster = args.target_cluster;
    config.sink.checkpoint = args.checkpoint;
    config.sink.checkpoint_db = args.checkpoint_db;
    config.conflict = args.conflict;
    config.target_policy = args.target_policy;
    config.flush_target_on_resync = args.flush_on_resync;
    config.filter.block_dbs = args.block_dbs;
    if let Some(dir) = args.spool_dir {
        config.source.spool.dir = Some(dir);
    }
    if let Some(max) = args.spool_max_bytes {
        config.source.spool.file_bytes = max;
    }
    let job = Replicator::new(config)?;
    let status = job.status();
    let report = job.status();
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                shutdown.cancel();
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                println!("{}", status.snapshot());
            }
        });
        job.run(shutdown).await
    });
    // The report of the target policy: every key left out or written with a loss (the first 1000 of each).
    let end = report.snapshot();
    for (what, keys) in [
        ("skipped", &end.policy_skipped),
        ("converted", &end.policy_converted),
    ] {
        for k in keys {
            println!(
                "policy {what}: db {} key {}: {}",
                k.db,
                KeyDisplay(k.key.to_vec()),
                k.loss
            );
        }
    }
    result?;
    Ok(())
}
