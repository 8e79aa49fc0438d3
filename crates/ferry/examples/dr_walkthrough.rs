//! The demo behind `make demo`: the disaster-recovery walk-through of docs/dr.md on local servers.
//!
//! A is a 3+3 Redis Cluster, B a sentinel-managed group (a master, 2 replicas, 3 sentinels). An application
//! writes all the time through whichever side the pair's state record names as primary: through ferry's
//! `ClusterClient` on A, through ferry's `SentinelPool` on B. The pair then goes through `init` (A -> B full
//! copy), `failover` (A is lost), `recover` (A is back: B's changes flow back incrementally; a stale A -> B job
//! started by hand is refused by the fence), `switchback` (the write pause on B is measured). At the end A and
//! B are compared key by key and every counter equals the increments the application saw acknowledged. Any
//! failure exits non-zero.
//!
//! ```text
//! cargo run --release -p ferry --example dr_walkthrough
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::{
    ClusterClient, ClusterOptions, Deployment, Direction, DrConfig, DrHandle, DrPair, DrPhase,
    ErrorKind, RecoverChoice, RecoverOutcome, SentinelPool, SentinelPoolOptions, Side, SyncConfig,
    SyncJob,
};
use ferry_resp::{ConnectOptions, Frame};
use ferry_testkit::{
    compare, fill, Cluster, CompareOptions, FillOptions, SentinelGroup, SentinelOptions, Server,
    Target, Version, HOST,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every wait of the demo.
const DEADLINE: Duration = Duration::from_secs(120);
const NAME: &str = "demo";

fn main() -> ExitCode {
    let started = Instant::now();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BoxError::from)
        .and_then(|rt| rt.block_on(run()));
    println!("   wall time {:.1} s", started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            println!("DEMO OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("DEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn check(ok: bool, what: impl Into<String>) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// Polls `f` every 20 ms until it is true, for at most [`DEADLINE`].
async fn wait(what: &str, mut f: impl FnMut() -> bool) -> Result<(), BoxError> {
    let end = Instant::now() + DEADLINE;
    while !f() {
        if Instant::now() >= end {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    step("starting A: a 3+3 Redis Cluster, and B: a sentinel group (master + 2 replicas, 3 sentinels), Redis 7.0");
    let a = Cluster::start(Version::V7_0)?;
    a.wait_ok(DEADLINE)?;
    let b = SentinelGroup::start(SentinelOptions::new(Version::V7_0))?;
    b.wait_converged(DEADLINE)?;
    let a_nodes: Vec<String> = a.masters().iter().map(|s| s.url()).collect();
    println!(
        "   A masters: {}",
        a.masters()
            .iter()
            .map(|s| s.addr())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "   B master {} (name {:?}), sentinels {}",
        b.current_master()?.addr(),
        b.master_name,
        b.sentinels
            .iter()
            .map(Server::addr)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let filled = fill(&a.target(), &FillOptions::seed(2026))?;
    println!("   A filled with {} keys of every type", filled.total_keys);

    let sentinel_urls: Vec<String> = b.sentinels.iter().map(Server::url).collect();
    let sentinel_refs: Vec<&str> = sentinel_urls.iter().map(String::as_str).collect();
    let config = DrConfig::new(
        NAME,
        Deployment::cluster(a_nodes[0].clone()),
        Deployment::sentinel(&sentinel_refs, b.master_name.clone()),
    );
    let pair = DrPair::new(config)?;

    step("ferry dr init, then ferry dr run (in this process): A -> B, one stream per A shard");
    let s = pair.init().await?;
    println!("   phase {} epoch {}: {}", s.phase, s.epoch, s.next);
    let run = pair.run()?;
    wait_job(&run, Direction::AToB, 1).await?;
    let job = run.status().job.unwrap_or_default();
    println!(
        "   A -> B live after a full copy of {} keys ({} shards)",
        job.keys_copied,
        job.shards.len()
    );

    // The application.
    let cluster =
        ClusterClient::connect(ClusterOptions::new(ConnectOptions::from_url(&a_nodes[0])?)).await?;
    let pool = SentinelPool::new(
        SentinelPoolOptions::new(
            b.master_name.clone(),
            b.sentinels
                .iter()
                .map(|s| ferry_sentinel::Addr::new(HOST, s.port())),
        )
        .max_total(4)
        .max_wait(Some(Duration::from_secs(5))),
    )
    .await?;
    let app = App::start(cluster.clone(), pool.clone());
    step(
        "the application writes through A (ClusterClient): INCR demo:counter:{i}, SET demo:key:{n}",
    );
    app.wait_writes(Side::A, 500).await?;
    println!("   {}", app.line());

    step("A fails (the application loses A): ferry dr failover");
    app.a_down.store(true, Ordering::SeqCst);
    let f = pair.failover().await?;
    println!(
        "   B serves at epoch {}; RPO recorded for {} A shards; B was {} bytes behind A; B's position {}",
        f.epoch,
        pair.status().await?.state.map_or(0, |s| s.rpo_shards.len()),
        f.lag_bytes.unwrap_or(0),
        f.b_position
    );
    app.wait_writes(Side::B, 500).await?;
    println!(
        "   the application follows the record: it writes through B (SentinelPool) now; {}",
        app.line()
    );

    step("A is back: ferry dr recover");
    app.a_down.store(false, Ordering::SeqCst);
    let r = pair.recover(RecoverChoice::None).await?;
    println!(
        "   {:?}: {} (extra writes on A: {})",
        r.outcome,
        r.reason,
        r.extra_writes_on_a
            .map_or_else(|| "not counted".to_string(), |n| n.to_string())
    );
    check(
        r.outcome == RecoverOutcome::Incremental,
        "recover was not incremental",
    )?;
    wait_job(&run, Direction::BToA, r.epoch).await?;
    let job = run.status().job.unwrap_or_default();
    println!("   B -> A live, full copies: {}", job.full_syncs);
    check(job.full_syncs == 0, "B -> A made a full copy")?;
    app.wait_writes(Side::B, 500).await?;

    step("a stale A -> B job started by hand with the old epoch (a forgotten process)");
    let mut stale = SyncConfig::new(pair.config().a.as_source(), pair.config().b.as_target());
    stale.checkpoint.tag = Direction::AToB.checkpoint_tag(NAME);
    stale.checkpoint.epoch = 1;
    match SyncJob::new(stale)?.start()?.wait().await {
        Err(e) if e.kind() == ErrorKind::Fenced => println!("   refused: {e}"),
        other => return Err(format!("the stale job was not fenced: {other:?}").into()),
    }

    step("ferry dr switchback (the application keeps writing)");
    let sb = pair.switchback().await?;
    let pause = sb.write_pause_ms.unwrap_or(0);
    println!(
        "   A serves at epoch {}; writes on B were paused {pause} ms",
        sb.epoch
    );
    wait_job(&run, Direction::AToB, sb.epoch).await?;
    app.wait_writes(Side::A, 500).await?;
    let job = run.status().job.unwrap_or_default();
    println!(
        "   A -> B live again from A's positions, full copies: {}; {}",
        job.full_syncs,
        app.line()
    );
    check(
        job.full_syncs == 0,
        "A -> B made a full copy after the switchback",
    )?;
    let status = pair.status().await?;
    check(
        status.phase == DrPhase::Normal && status.primary == Side::A,
        "the pair is not back to normal",
    )?;

    step("checking: A and B key by key, and every counter against the acknowledged increments");
    let (acked, on_a, on_b) = app.stop().await;
    let b_target = Target::Standalone(b.current_master()?.url());
    let opts = CompareOptions::default()
        .ignore_prefix("ferry:checkpoint:")
        .ignore_prefix("ferry:state:")
        .ignore_prefix("ferry:lease:");
    let end = Instant::now() + DEADLINE;
    let report = loop {
        let report = compare(&a.target(), &b_target, &opts)?;
        if report.is_equal() || Instant::now() >= end {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    check(report.is_equal(), format!("A and B differ: {report}"))?;
    println!("   A == B: {} keys compared", report.keys_compared);
    for (key, n) in &acked {
        let va = cluster.call(&["GET", key.as_str()]).await?.as_integer();
        let vb = pool.call(&["GET", key.as_str()]).await?.as_integer();
        check(
            va == Some(*n) && vb == Some(*n),
            format!("{key}: A {va:?}, B {vb:?}, acknowledged increments {n}"),
        )?;
    }
    println!(
        "   {} counters exact; acknowledged writes: {on_a} through A, {on_b} through B",
        acked.len()
    );
    run.stop().await?;
    pool.close();

    step("summary");
    println!(
        "   init -> failover -> recover (incremental) -> switchback, with writes in every phase"
    );
    println!(
        "   no acknowledged write lost; one full copy (the first A -> B); the stale job was fenced"
    );
    println!("   switchback write pause on B: {pause} ms (goal < 1000 ms)");
    check(pause < 1000, "the switchback pause was not under 1 s")?;
    Ok(())
}

async fn wait_job(run: &DrHandle, direction: Direction, epoch: u64) -> Result<(), BoxError> {
    wait("the pair's job to go live", || {
        let s = run.status();
        s.direction == Some(direction)
            && s.epoch == epoch
            && s.job
                .as_ref()
                .is_some_and(|j| j.phase == ferry::Phase::Incremental)
    })
    .await
}

/// The application: writes through the primary the state record names; reads the record after borrowing a
/// connection and before writing with it (docs/dr.md, "Following the primary").
struct App {
    stop: Arc<AtomicBool>,
    a_down: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<String, i64>>>,
    writes: Arc<[AtomicU64; 2]>,
    task: tokio::task::JoinHandle<()>,
}

/// The side the newest record names (A's record through the cluster client, B's through the pool).
async fn primary(cluster: &ClusterClient, pool: &SentinelPool) -> Option<Side> {
    let key = format!("ferry:state:{{dr-{NAME}}}");
    let parse = |f: Result<Frame, String>| -> Option<(u64, String)> {
        let f = f.ok()?;
        let v: serde_json::Value = serde_json::from_slice(f.as_bytes()?).ok()?;
        Some((v["epoch"].as_u64()?, v["phase"].as_str()?.to_string()))
    };
    let a = parse(
        cluster
            .call(&["GET", key.as_str()])
            .await
            .map_err(|e| e.to_string()),
    );
    let b = parse(
        pool.call(&["GET", key.as_str()])
            .await
            .map_err(|e| e.to_string()),
    );
    let newest = match (a, b) {
        (Some(a), Some(b)) => {
            if b.0 >= a.0 {
                b
            } else {
                a
            }
        }
        (a, b) => a.or(b)?,
    };
    Some(if newest.1 == "normal" {
        Side::A
    } else {
        Side::B
    })
}

impl App {
    fn start(cluster: ClusterClient, pool: SentinelPool) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let a_down = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let writes = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let task = {
            let (stop, a_down, acked, writes) =
                (stop.clone(), a_down.clone(), acked.clone(), writes.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let counter = format!("demo:counter:{}", n % 8);
                    let key = format!("demo:key:{n}");
                    let value = n.to_string();
                    let side = match primary(&cluster, &pool).await {
                        Some(Side::A) if a_down.load(Ordering::SeqCst) => None,
                        other => other,
                    };
                    // (INCR acknowledged, SET acknowledged)
                    let (incr, set) = match side {
                        Some(Side::A) => {
                            let incr = cluster.call(&["INCR", counter.as_str()]).await.is_ok();
                            let set = incr
                                && cluster
                                    .call(&["SET", key.as_str(), value.as_str()])
                                    .await
                                    .is_ok();
                            (incr, set)
                        }
                        Some(Side::B) => match pool.get().await {
                            // Borrowed first, then the record checked: a switchback after the check
                            // disconnects this very connection, so the write never lands on B.
                            Ok(mut conn) if primary(&cluster, &pool).await == Some(Side::B) => {
                                let incr = conn.call(&["INCR", counter.as_str()]).await.is_ok();
                                let set = incr
                                    && conn
                                        .call(&["SET", key.as_str(), value.as_str()])
                                        .await
                                        .is_ok();
                                (incr, set)
                            }
                            _ => (false, false),
                        },
                        None => (false, false),
                    };
                    if incr {
                        *acked.lock().unwrap().entry(counter).or_insert(0) += 1;
                    }
                    if set {
                        writes[usize::from(side == Some(Side::B))].fetch_add(1, Ordering::SeqCst);
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        };
        App {
            stop,
            a_down,
            acked,
            writes,
            task,
        }
    }

    fn writes_on(&self, side: Side) -> u64 {
        self.writes[usize::from(side == Side::B)].load(Ordering::SeqCst)
    }

    async fn wait_writes(&self, side: Side, n: u64) -> Result<(), BoxError> {
        let from = self.writes_on(side);
        wait("the application's writes", || {
            self.writes_on(side) >= from + n
        })
        .await
    }

    fn line(&self) -> String {
        format!(
            "acknowledged writes so far: {} through A, {} through B",
            self.writes_on(Side::A),
            self.writes_on(Side::B)
        )
    }

    async fn stop(self) -> (HashMap<String, i64>, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap().clone();
        (
            acked,
            self.writes[0].load(Ordering::SeqCst),
            self.writes[1].load(Ordering::SeqCst),
        )
    }
}
