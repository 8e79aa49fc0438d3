//! The demo behind `make demo`: local servers, a filled source, a sync into a target while the source keeps
//! being written, and the two datasets proven equal at the end.
//!
//! ```text
//! cargo run -p ferry-replicator --example demo
//! ```

use std::time::{Duration, Instant};

use ferry_replicator::{checkpoint, Config, Phase, Replicator};
use ferry_resp::ConnectOptions;
use ferry_testkit::{
    compare, fill, wait_until, CompareOptions, FillOptions, Server, ServerOptions, Target, Version,
};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ferry_replicator=info")),
        )
        .init();

    println!("== starting a source and a target (Redis 7.0) on local ports");
    let source = Server::start(ServerOptions::new(Version::V7_0))?;
    let target = Server::start(ServerOptions::new(Version::V7_0))?;
    println!("   source {}  target {}", source.addr(), target.addr());

    println!("== filling the source with every type and encoding");
    let report = fill(&Target::from(&source), &FillOptions::seed(2024).scale(4))?;
    println!(
        "   {} keys in databases {:?}",
        report.total_keys,
        report.keys.keys().collect::<Vec<_>>()
    );

    println!("== syncing source -> target");
    let config = Config::new(
        ConnectOptions::from_url(&source.url())?,
        ConnectOptions::from_url(&target.url())?,
    );
    let job = Replicator::new(config)?;
    let status = job.status();
    let shutdown = CancellationToken::new();
    let runtime = tokio::runtime::Runtime::new()?;
    let handle = runtime.spawn(job_run(job, shutdown.clone()));

    println!("== writing to the source for 5 seconds while the job follows");
    let mut c = source.client();
    let started = Instant::now();
    let mut n = 0u64;
    let mut last_print = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        redis::cmd("INCR").arg("demo:counter").exec(&mut c)?;
        redis::cmd("HSET")
            .arg("demo:hash")
            .arg(format!("f{}", n % 100))
            .arg(n)
            .exec(&mut c)?;
        redis::cmd("XADD")
            .arg("demo:events")
            .arg("*")
            .arg("n")
            .arg(n)
            .exec(&mut c)?;
        redis::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg("demo:list")
            .arg(n)
            .cmd("LTRIM")
            .arg("demo:list")
            .arg(0)
            .arg(99)
            .exec(&mut c)?;
        n += 1;
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            println!("   {}", status.snapshot());
        }
    }

    println!("== waiting for the job to catch up");
    let offset = master_offset(&source)?;
    wait_until(Duration::from_secs(120), "the job to catch up", || {
        let s = status.snapshot();
        s.phase == Phase::Incremental && s.applied_offset >= offset
    })?;
    println!("   {}", status.snapshot());

    println!("== comparing the datasets");
    let opts = CompareOptions::default().ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(&source), &Target::from(&target), &opts)?;
    shutdown.cancel();
    runtime.block_on(handle)??;
    let mut t = target.client();
    let counter: u64 = redis::cmd("GET").arg("demo:counter").query(&mut t)?;
    if report.is_equal() && counter == n {
        println!(
            "   EQUAL: {} keys compared, {} INCRs applied exactly once",
            report.keys_compared, n
        );
        Ok(())
    } else {
        println!("   DIFFERENT (target counter {counter}, source {n}): {report:?}");
        Err("the datasets differ".into())
    }
}

async fn job_run(
    job: Replicator,
    shutdown: CancellationToken,
) -> Result<(), ferry_replicator::Error> {
    job.run(shutdown).await
}

fn master_offset(server: &Server) -> Result<u64, Box<dyn std::error::Error>> {
    let info = server.info("replication")?;
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no master_repl_offset".into())
}
