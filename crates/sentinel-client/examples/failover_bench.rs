//! Side-by-side Sentinel failover measurement: this pool, redis-py's `Sentinel` and ioredis, one
//! after the other on the same testkit group (1 master, 2 replicas, 3 sentinels).
//!
//! For each client in turn: start its writer (a separate process printing one JSON line per write
//! attempt, with the port of the server that acknowledged it), send `SENTINEL FAILOVER`, wait until
//! the group has converged on the new master (the old one resynced as a replica), and report the
//! time from the failover command to the client's first write acknowledged by the new master, the
//! failed writes, the writes the old master acknowledged after the command, and how many
//! acknowledged writes are missing from the new master at the end. Every round lasts until the old
//! master has been reconfigured as a replica of the new one (sentinels do that seconds after the
//! switch), so each client writes through the same window.
//!
//! ```text
//! (cd benches/failover/node && npm install)     # ioredis, once
//! cargo run -p ferry-sentinel --example failover_bench -- --rounds 2
//! ```
//! `--writer ferry --sentinels h:p,... --name mymaster --prefix p:` runs only this pool's writer.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_sentinel::{Addr, Frame, SentinelPool, SentinelPoolOptions};
use ferry_testkit::{SentinelGroup, SentinelOptions};

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if arg(&args, "--writer").as_deref() == Some("ferry") {
        return ferry_writer(&args);
    }
    harness(&args)
}

/// This pool's writer loop (same protocol as the Python and Node writers).
fn ferry_writer(args: &[String]) -> Result<(), BoxError> {
    let sentinels: Vec<Addr> = arg(args, "--sentinels")
        .ok_or("--sentinels")?
        .split(',')
        .map(|s| s.parse::<Addr>())
        .collect::<Result<_, _>>()?;
    let name = arg(args, "--name").ok_or("--name")?;
    let prefix = arg(args, "--prefix").ok_or("--prefix")?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            stop2.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        // Defaults, except the listener retry base (the sentinels stay up in this run anyway).
        let opts = SentinelPoolOptions::new(name, sentinels);
        let pool = SentinelPool::new(opts).await?;
        let mut out = std::io::stdout().lock();
        let mut n: u64 = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let key = format!("{prefix}{n}");
            let val = n.to_string();
            let result = async {
                let mut conn = pool.get().await?;
                tracing::debug!(n, addr = %conn.addr(), "borrowed");
                let cmds: Vec<Vec<&str>> = vec![
                    vec!["MULTI"],
                    vec!["SET", key.as_str(), val.as_str()],
                    vec!["CONFIG", "GET", "port"],
                    vec!["EXEC"],
                ];
                let frames = conn.pipeline(&cmds).await?;
                tracing::debug!(n, "replied");
                let exec = frames
                    .into_iter()
                    .last()
                    .and_then(Frame::into_array)
                    .ok_or("EXEC aborted")?;
                let port = exec
                    .into_iter()
                    .nth(1)
                    .and_then(Frame::into_array)
                    .and_then(|kv| kv.get(1).and_then(Frame::as_integer))
                    .ok_or("no port in reply")?;
                Ok::<i64, BoxError>(port)
            }
            .await;
            let line = match result {
                Ok(port) => format!(
                    "{{\"t\":{:.3},\"ok\":true,\"port\":{port},\"n\":{n}}}",
                    epoch_ms()
                ),
                Err(e) => {
                    let msg = e.to_string().replace(['"', '\\'], "'");
                    format!("{{\"t\":{:.3},\"ok\":false,\"err\":\"{msg}\"}}", epoch_ms())
                }
            };
            let failed = line.contains("\"ok\":false");
            writeln!(out, "{line}")?;
            out.flush()?;
            if failed {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok::<(), BoxError>(())
    })
}

#[derive(Clone, Debug)]
struct Rec {
    t: f64,
    ok: bool,
    port: u16,
    n: u64,
}

struct Writer {
    child: Child,
    recs: Arc<Mutex<Vec<Rec>>>,
}

impl Writer {
    fn spawn(mut cmd: Command) -> Result<Writer, BoxError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let recs = Arc::new(Mutex::new(Vec::new()));
        let recs2 = recs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let rec = Rec {
                    t: v["t"].as_f64().unwrap_or(0.0),
                    ok: v["ok"].as_bool().unwrap_or(false),
                    port: v["port"].as_u64().unwrap_or(0) as u16,
                    n: v["n"].as_u64().unwrap_or(0),
                };
                recs2.lock().unwrap().push(rec);
            }
        });
        Ok(Writer { child, recs })
    }

    fn count(&self, f: impl Fn(&Rec) -> bool) -> usize {
        self.recs.lock().unwrap().iter().filter(|r| f(r)).count()
    }

    fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        f: impl Fn(&Rec) -> bool,
        n: usize,
    ) -> Result<(), BoxError> {
        let start = Instant::now();
        while self.count(&f) < n {
            if start.elapsed() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(mut self) -> Vec<Rec> {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let recs = self.recs.lock().unwrap().clone();
        recs
    }
}

struct Row {
    client: &'static str,
    round: usize,
    first_write_ms: Option<f64>,
    failed: usize,
    old_acks_after: usize,
    lost: usize,
    acked: usize,
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/failover")
}

fn writer_command(
    client: &str,
    sentinels: &str,
    name: &str,
    prefix: &str,
) -> Result<Command, BoxError> {
    let common = ["--sentinels", sentinels, "--name", name, "--prefix", prefix];
    let cmd = match client {
        "ferry" => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["--writer", "ferry"]).args(common);
            c
        }
        "redis-py" => {
            let mut c = Command::new("python3");
            c.arg(bench_dir().join("redispy_writer.py")).args(common);
            c
        }
        "ioredis" | "ioredis+detector" => {
            let node_dir = bench_dir().join("node");
            if !node_dir.join("node_modules/ioredis").exists() {
                let st = Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund"])
                    .current_dir(&node_dir)
                    .status()?;
                if !st.success() {
                    return Err("npm install in benches/failover/node failed".into());
                }
            }
            let mut c = Command::new("node");
            c.arg(node_dir.join("writer.js")).args(common);
            if client == "ioredis+detector" {
                c.arg("--failover-detector");
            }
            c
        }
        other => return Err(format!("unknown client {other}").into()),
    };
    Ok(cmd)
}

/// Sends SENTINEL FAILOVER, retrying while the sentinel says a failover is still in progress or no
/// replica is ready yet. Returns the time the accepted command was sent.
fn send_failover(group: &SentinelGroup) -> Result<f64, BoxError> {
    let start = Instant::now();
    loop {
        let mut con = group.sentinels[0].client();
        let t0 = epoch_ms();
        match redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&group.master_name)
            .exec(&mut con)
        {
            Ok(()) => return Ok(t0),
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                eprintln!("SENTINEL FAILOVER refused ({e}); retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn run_round(group: &SentinelGroup, client: &'static str, round: usize) -> Result<Row, BoxError> {
    group.wait_converged(Duration::from_secs(120))?;
    let old = group.current_master_addr()?;
    let old_port: u16 = old.parse::<Addr>()?.port;
    let sentinels: Vec<String> = group.sentinels.iter().map(|s| s.addr()).collect();
    let prefix = format!("bench:{client}:{round}:");
    let writer = Writer::spawn(writer_command(
        client,
        &sentinels.join(","),
        &group.master_name,
        &prefix,
    )?)?;
    writer.wait_for("warm-up writes", Duration::from_secs(60), |r| r.ok, 200)?;

    let t0 = send_failover(group)?;
    let new = group.wait_master_changed(&old, Duration::from_secs(120))?;
    let new_port = new.parse::<Addr>()?.port;
    // Same treatment for every client: the round lasts until the old master has been turned into a
    // replica of the new one (its own writes since the promotion are then gone for good).
    let old_server = group
        .server_by_addr(&old)
        .ok_or("old master not in group")?;
    let start = Instant::now();
    while !old_server.info("replication").is_ok_and(|t| {
        t.contains("role:slave")
            && t.contains(&format!("master_port:{new_port}"))
            && t.contains("master_link_status:up")
    }) {
        if start.elapsed() > Duration::from_secs(120) {
            return Err("the old master never became a replica of the new one".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = writer.wait_for(
        "writes on the new master",
        Duration::from_secs(60),
        |r| r.ok && r.port == new_port,
        50,
    );
    let recs = writer.stop();
    if let Ok(dir) = std::env::var("FAILOVER_BENCH_DUMP") {
        let mut f = std::fs::File::create(format!("{dir}/{client}-{round}.csv"))?;
        writeln!(f, "t_ms_after_command,ok,port,n")?;
        for r in &recs {
            writeln!(f, "{:.3},{},{},{}", r.t - t0, r.ok, r.port, r.n)?;
        }
    }

    let first_write_ms = recs
        .iter()
        .filter(|r| r.ok && r.port == new_port && r.t >= t0)
        .map(|r| r.t - t0)
        .reduce(f64::min);
    let failed = recs.iter().filter(|r| !r.ok && r.t >= t0).count();
    let old_acks_after = recs
        .iter()
        .filter(|r| r.ok && r.port == old_port && r.t >= t0)
        .count();
    let acked: Vec<u64> = recs.iter().filter(|r| r.ok).map(|r| r.n).collect();
    let master = group
        .server_by_addr(&new)
        .ok_or("new master not in group")?;
    let mut con = master.client();
    let mut lost = 0;
    for chunk in acked.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("{prefix}{n}")).collect();
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con)?;
        lost += vals.iter().filter(|v| v.is_none()).count();
    }
    Ok(Row {
        client,
        round,
        first_write_ms,
        failed,
        old_acks_after,
        lost,
        acked: acked.len(),
    })
}

fn harness(args: &[String]) -> Result<(), BoxError> {
    let rounds: usize = arg(args, "--rounds")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(2);
    let clients: Vec<&'static str> = match arg(args, "--clients") {
        Some(list) => list
            .split(',')
            .map(|c| match c {
                "ferry" => Ok("ferry"),
                "redis-py" => Ok("redis-py"),
                "ioredis" => Ok("ioredis"),
                "ioredis+detector" => Ok("ioredis+detector"),
                other => Err(format!("unknown client {other}")),
            })
            .collect::<Result<_, _>>()?,
        None => vec!["ferry", "redis-py", "ioredis", "ioredis+detector"],
    };
    eprintln!("starting the sentinel group (1 master, 2 replicas, 3 sentinels, Redis 7.0)");
    let group = SentinelGroup::start(SentinelOptions::default())?;
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for &client in &clients {
            eprintln!("round {round}: {client}");
            let row = run_round(&group, client, round)?;
            eprintln!(
                "  first write on new master after {:?} ms, {} failed, {} acked by old master after the command, {} of {} acked writes lost",
                row.first_write_ms.map(|m| m.round()),
                row.failed,
                row.old_acks_after,
                row.lost,
                row.acked
            );
            rows.push(row);
        }
    }
    println!();
    println!("| client | round | failover command -> first write on new master (ms) | failed writes | acked by old master after the command | acked writes lost / acked |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let ms = r
            .first_write_ms
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "never".into());
        println!(
            "| {} | {} | {} | {} | {} | {} / {} |",
            r.client, r.round, ms, r.failed, r.old_acks_after, r.lost, r.acked
        );
    }
    Ok(())
}
