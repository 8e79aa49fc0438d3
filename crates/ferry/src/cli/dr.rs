//! `ferry dr ...`: the calls of a [`ferry::DrPair`], and the guarded switch of a plain master/replica pair.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use ferry::dr::node::{self, PromoteOptions, WatchOptions, WatchOutcome};
use ferry::{Deployment, DrConfig, DrPair, Endpoint, Error, RecoverChoice, RecoverOutcome};
use tokio_util::sync::CancellationToken;

use super::exit;

/// `ferry dr ...`.
#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Write the pair's first state record (A serves, A -> B); `ferry dr run` then does the full copy.
    Init(PairArgs),
    /// Where the pair is and the next call.
    Status(PairArgs),
    /// Fence A -> B and make B the primary; records the RPO.
    Failover(PairArgs),
    /// A is back: write B's changes back to A (incremental when A has nothing B lacks).
    Recover {
        /// The pair.
        #[command(flatten)]
        pair: PairArgs,
        /// What to do when an incremental recover is not possible: none (refuse), b_wins (empty A, full copy
        /// of B) or abort.
        #[arg(long, default_value = "none")]
        choice: RecoverChoice,
    },
    /// Pause writes on B, drain to A, fence B -> A, continue A -> B without a full copy; prints the pause.
    Switchback(PairArgs),
    /// Run the job of the current direction and follow the state record until SIGTERM / Ctrl-C.
    Run(PairArgs),
    /// Make NODE a master (REPLICAOF NO ONE); refused when its master link was down too long.
    Promote {
        /// The node's URL.
        node: String,
        /// Refuse (without --force) when the node's master link was down longer than this.
        #[arg(long, default_value_t = 60)]
        max_link_down_secs: u64,
        /// Promote even when the guard refuses.
        #[arg(long)]
        force: bool,
    },
    /// Make NODE a replica of PEER; refused when NODE has data and PEER is empty or behind.
    Demote {
        /// The node's URL.
        node: String,
        /// The peer's URL (the new master).
        #[arg(long = "to")]
        to: String,
        /// Demote even when the guard refuses (NODE's data is replaced by PEER's).
        #[arg(long)]
        force: bool,
    },
    /// Check MASTER every interval; after --fall failures in a row promote REPLICA (with promote's guard).
    Watch {
        /// The master's URL.
        #[arg(long)]
        master: String,
        /// The replica's URL.
        #[arg(long)]
        replica: String,
        /// Milliseconds between checks.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Failed checks in a row before promoting.
        #[arg(long, default_value_t = 3)]
        fall: u32,
        /// The promote guard's bound on the replica's master link being down.
        #[arg(long, default_value_t = 60)]
        max_link_down_secs: u64,
        /// Promote even when the guard refuses.
        #[arg(long)]
        force: bool,
    },
}

/// What a side is, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SideType {
    /// One server.
    Standalone,
    /// A sentinel-managed group (the URLs are sentinels; --a-master / --b-master name the group).
    Sentinel,
    /// A Redis Cluster (any node).
    Cluster,
}

/// The pair: a file (`-c dr.toml`, docs/dr.md) or flags.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// A pair configuration file (TOML: name, [a], [b], [limits], [timing]).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// The pair's name (without a file).
    #[arg(long)]
    pub name: Option<String>,
    /// A's URL (repeat for several sentinels or cluster seeds).
    #[arg(long = "a")]
    pub a: Vec<String>,
    /// What A is.
    #[arg(long, value_enum, default_value_t = SideType::Standalone)]
    pub a_type: SideType,
    /// A's master name, when A is a sentinel group.
    #[arg(long)]
    pub a_master: Option<String>,
    /// B's URL (repeat for several sentinels or cluster seeds).
    #[arg(long = "b")]
    pub b: Vec<String>,
    /// What B is.
    #[arg(long, value_enum, default_value_t = SideType::Standalone)]
    pub b_type: SideType,
    /// B's master name, when B is a sentinel group.
    #[arg(long)]
    pub b_master: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn deployment(
    urls: &[String],
    kind: SideType,
    master: &Option<String>,
    side: &str,
) -> Result<Deployment, Error> {
    let first = urls
        .first()
        .ok_or_else(|| Error::config(format!("--{side} is needed (or -c FILE)")))?;
    Ok(match kind {
        SideType::Standalone => Deployment::standalone(first.clone()),
        SideType::Cluster => serde_json::from_value(serde_json::json!({
            "type": "cluster", "seeds": urls,
        }))
        .map_err(|e| Error::config(e.to_string()))?,
        SideType::Sentinel => {
            let master = master.clone().ok_or_else(|| {
                Error::config(format!("--{side}-master names the sentinel group"))
            })?;
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            Deployment::sentinel(&urls, master)
        }
    })
}

impl PairArgs {
    /// The pair's configuration.
    pub fn resolve(&self) -> Result<DrConfig, Error> {
        if let Some(path) = &self.config {
            return DrConfig::from_path(path);
        }
        let name = self
            .name
            .clone()
            .ok_or_else(|| Error::config("--name is needed (or -c FILE)"))?;
        let c = DrConfig::new(
            name,
            deployment(&self.a, self.a_type, &self.a_master, "a")?,
            deployment(&self.b, self.b_type, &self.b_master, "b")?,
        );
        c.validate()?;
        Ok(c)
    }
}

fn print<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    } else {
        println!("{}", human());
    }
}

/// Runs a `ferry dr` command; returns the exit code.
pub async fn run(command: DrCommand) -> Result<i32, Error> {
    match command {
        DrCommand::Init(p) => {
            let pair = DrPair::new(p.resolve()?)?;
            let s = pair.init().await?;
            print(p.json, &s, || {
                format!(
                    "initialized: phase {} epoch {}; next: {}",
                    s.phase, s.epoch, s.next
                )
            });
            Ok(exit::OK)
        }
        DrCommand::Status(p) => {
            let pair = DrPair::new(p.resolve()?)?;
            let s = pair.status().await?;
            print(p.json, &s, || {
                let mut out = format!(
                    "pair {}: phase {} epoch {} primary {}",
                    s.name, s.phase, s.epoch, s.primary
                );
                if let Some(d) = s.direction {
                    out.push_str(&format!(" job {d}"));
                }
                for (side, e, err) in [("A", s.a_epoch, &s.a_error), ("B", s.b_epoch, &s.b_error)] {
                    match err {
                        Some(err) => out.push_str(&format!("\n  {side}: not reachable: {err}")),
                        None => out.push_str(&format!(
                            "\n  {side}: record epoch {}",
                            e.map_or("none".into(), |e| e.to_string())
                        )),
                    }
                }
                if let Some(st) = &s.state {
                    if let Some(r) = &st.rpo {
                        out.push_str(&format!("\n  RPO (A's last offset on B): {r}"));
                    }
                    if let Some(ms) = st.switchback_pause_ms {
                        out.push_str(&format!("\n  last switchback write pause: {ms} ms"));
                    }
                }
                out.push_str(&format!("\n  next: {}", s.next));
                out
            });
            Ok(exit::OK)
        }
        DrCommand::Failover(p) => {
            let pair = DrPair::new(p.resolve()?)?;
            let r = pair.failover().await?;
            print(p.json, &r, || {
                format!(
                    "failed over{}: B serves (epoch {}); RPO {}; B at {}{}",
                    if r.changed { "" } else { " (already)" },
                    r.epoch,
                    r.rpo.as_ref().map_or("none".into(), ToString::to_string),
                    r.b_position,
                    r.lag_bytes
                        .map_or(String::new(), |l| format!("; B was {l} bytes behind A"))
                )
            });
            Ok(exit::OK)
        }
        DrCommand::Recover { pair: p, choice } => {
            let pair = DrPair::new(p.resolve()?)?;
            let r = pair.recover(choice).await?;
            print(p.json, &r, || {
                format!(
                    "recover: {:?} (epoch {}); extra writes on A: {}; {}",
                    r.outcome,
                    r.epoch,
                    r.extra_writes_on_a
                        .map_or("unknown".into(), |n| n.to_string()),
                    r.reason
                )
            });
            Ok(match r.outcome {
                RecoverOutcome::Refused => exit::DIFFERENT,
                _ => exit::OK,
            })
        }
        DrCommand::Switchback(p) => {
            let pair = DrPair::new(p.resolve()?)?;
            let r = pair.switchback().await?;
            if let Some(n) = r.writes_on_b_after_switch.filter(|n| *n > 0) {
                eprintln!(
                    "ferry: warning: B accepted {n} writes after A took over (a switchback was interrupted and B's write pause ran out before it was finished); A does not have them"
                );
            }
            print(p.json, &r, || {
                match r.write_pause_ms {
                Some(ms) => format!(
                    "switched back: A serves (epoch {}); A -> B continues at {}; writes on B were paused {ms} ms",
                    r.epoch, r.a_position
                ),
                None => format!("switched back already (epoch {}); A -> B continues at {}", r.epoch, r.a_position),
            }
            });
            Ok(exit::OK)
        }
        DrCommand::Run(p) => {
            let pair = DrPair::new(p.resolve()?)?;
            let handle = pair.run()?;
            let mut events = handle.events();
            let printer = tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    match &e {
                        ferry::DrEvent::Job { .. } => tracing::debug!(event = ?e, "job event"),
                        other => {
                            tracing::info!("{}", serde_json::to_string(other).unwrap_or_default())
                        }
                    }
                }
            });
            wait_signal().await;
            tracing::info!("stopping: the job drains and commits");
            let s = handle.stop().await?;
            printer.abort();
            print(p.json, &s, || {
                format!("stopped at epoch {} ({})", s.epoch, s.phase)
            });
            Ok(exit::OK)
        }
        DrCommand::Promote {
            node: n,
            max_link_down_secs,
            force,
        } => {
            let mut o = PromoteOptions::default();
            o.max_link_down_secs = max_link_down_secs;
            o.force = force;
            let r = node::promote(&Endpoint::new(n), &o).await?;
            for w in &r.warnings {
                eprintln!("ferry: warning: {w}");
            }
            println!(
                "{}",
                if r.changed {
                    format!(
                        "{} is a master now (was a replica of {})",
                        r.before.addr,
                        r.before.master.clone().unwrap_or_default()
                    )
                } else {
                    format!("{} is a master already", r.before.addr)
                }
            );
            Ok(exit::OK)
        }
        DrCommand::Demote { node: n, to, force } => {
            let r = node::demote(&Endpoint::new(n), &Endpoint::new(to.clone()), force).await?;
            for w in &r.warnings {
                eprintln!("ferry: warning (forced): {w}");
            }
            println!(
                "{}",
                if r.changed {
                    format!(
                        "{} replicates from {} now",
                        r.before.addr,
                        Endpoint::new(to).host_port()
                    )
                } else {
                    format!(
                        "{} replicates from {} already",
                        r.before.addr,
                        Endpoint::new(to).host_port()
                    )
                }
            );
            Ok(exit::OK)
        }
        DrCommand::Watch {
            master,
            replica,
            interval_ms,
            fall,
            max_link_down_secs,
            force,
        } => {
            let mut o = WatchOptions::default();
            o.interval_ms = interval_ms;
            o.fall = fall;
            o.promote.max_link_down_secs = max_link_down_secs;
            o.promote.force = force;
            let cancel = CancellationToken::new();
            let stopper = cancel.clone();
            tokio::spawn(async move {
                wait_signal().await;
                stopper.cancel();
            });
            match node::watch(&Endpoint::new(master), &Endpoint::new(replica), &o, cancel).await? {
                WatchOutcome::Promoted { report } => {
                    for w in &report.warnings {
                        eprintln!("ferry: warning: {w}");
                    }
                    println!(
                        "{} promoted after {fall} failed checks of the master",
                        report.before.addr
                    );
                }
                _ => println!("stopped"),
            }
            Ok(exit::OK)
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn wait_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
