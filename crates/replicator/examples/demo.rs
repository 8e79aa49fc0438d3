//! The demo behind `make demo`: a Sentinel-managed source and a standalone target on local ports, an application
//! writing through ferry's Sentinel pool, a sync job copying the source and following its live stream, then a
//! failover of the source that the job survives with PSYNC2 (`+CONTINUE`, no second full copy). At the end it
//! proves the target equals the new master and holds every write the application saw acknowledged.
//!
//! ```text
//! cargo run --release -p ferry-replicator --example demo
//! ```

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ferry_replicator::{checkpoint, Config, Phase, Replicator, Status, StatusHandle};
use ferry_resp::ConnectOptions;
use ferry_sentinel::{Addr, Event, SentinelPool, SentinelPoolOptions};
use ferry_testkit::{
    compare, fill, wait_for, CompareOptions, FillOptions, SentinelGroup, SentinelOptions, Server,
    ServerOptions, Target, Version, HOST,
};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Errors of the demo: anything, with a message for the user.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every wait of the demo: generous, since the machine may be busy.
const DEADLINE: Duration = Duration::from_secs(60);
/// The counter each round of the application increments.
const COUNTER: &str = "demo:counter";
/// The application's pause between two rounds of writes.
const WRITE_PACE: Duration = Duration::from_millis(2);

fn main() -> ExitCode {
    init_tracing();
    let started = Instant::now();
    let result = run();
    println!("   wall time {:.1} s", started.elapsed().as_secs_f64());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("DEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines only for warnings of our crates (`RUST_LOG` overrides): the demo prints its own story.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("ferry_replicator=warn,ferry_sentinel=error")
    });
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// The story, step by step.
fn run() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    step("starting a Sentinel-managed source (master, 2 replicas, 3 sentinels) and a target, Redis 7.0");
    let group = SentinelGroup::start(SentinelOptions::new(Version::V7_0))?;
    let target = Server::start(ServerOptions::new(Version::V7_0))?;
    describe_servers(&group, &target);

    step("filling the source master with every type and encoding");
    let filled = fill(
        &Target::from(&group.master),
        &FillOptions::seed(2024).scale(4),
    )?;
    println!(
        "   {} keys in databases {:?}",
        filled.total_keys,
        filled.keys.keys().collect::<Vec<_>>()
    );

    step("the application starts writing through ferry's SentinelPool (INCR demo:counter, SET demo:n:<i>)");
    let pool = runtime.block_on(SentinelPool::new(pool_options(&group)))?;
    println!("   pool resolved master {}", show_addr(pool.master_addr()));
    let writer = Writer::start(&runtime, pool.clone());

    step(&format!(
        "sync job: full copy of {} into {}, then its live stream",
        group.master.addr(),
        target.addr()
    ));
    let first = SyncJob::start(&runtime, &group.master, &target)?;
    first.wait_incremental()?;
    first.show_progress(3);

    step("failover: SENTINEL FAILOVER on the source group");
    let (stopped, second, promoted) = failover(&runtime, &group, &pool, first, &target)?;
    let resumed = second.wait_incremental()?;
    check_continued(&stopped, &resumed, promoted)?;
    second.show_progress(2);

    step("stopping the application, waiting for the job to catch up with the new master");
    let written = writer.stop(&runtime)?;
    println!("   {written}");
    let last = second.wait_caught_up(promoted)?;
    println!("   job: {}", brief(&last));
    let last = runtime.block_on(second.stop())?;

    step(&format!(
        "proving the target holds what {} holds and every acknowledged write",
        promoted.addr()
    ));
    let compared = verify(promoted, &target, &written)?;
    pool.close();

    print_summary(&group.master, promoted, &stopped, &last, &written, compared);
    Ok(())
}

/// The final summary: what failed over, what the job did, what was proven.
fn print_summary(
    old: &Server,
    promoted: &Server,
    first: &Status,
    last: &Status,
    written: &Written,
    compared: u64,
) {
    step("summary");
    println!(
        "   source failed over {} -> {} while the application kept writing",
        old.addr(),
        promoted.addr()
    );
    println!(
        "   sync job: 1 full sync ({} keys), then the live stream; after the failover PSYNC2 continued at offset {} \
         on the promoted replica: full syncs still {}",
        first.keys_copied,
        first.applied_offset,
        first.full_syncs + last.full_syncs
    );
    println!(
        "   application: {} INCRs and {} SETs acknowledged, all of them on the target",
        written.incrs,
        written.keys.len()
    );
    println!("   target EQUAL to the new master: {compared} keys compared");
}

/// Prints a step of the story.
fn step(what: &str) {
    println!("== {what}");
}

/// Prints where the servers listen.
fn describe_servers(group: &SentinelGroup, target: &Server) {
    let addrs = |servers: &[Server]| {
        servers
            .iter()
            .map(Server::addr)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("   master    {}", group.master.addr());
    println!("   replicas  {}", addrs(&group.replicas));
    println!(
        "   sentinels {} (master name {:?})",
        addrs(&group.sentinels),
        group.master_name
    );
    println!("   target    {}", target.addr());
}

/// The pool's options: the group's sentinels as seeds, no auth.
fn pool_options(group: &SentinelGroup) -> SentinelPoolOptions {
    let seeds = group.sentinels.iter().map(|s| Addr::new(HOST, s.port()));
    SentinelPoolOptions::new(group.master_name.clone(), seeds)
        .max_total(4)
        .max_wait(Some(Duration::from_secs(5)))
}

/// An address for display.
fn show_addr(addr: Option<Addr>) -> String {
    addr.map_or_else(|| "(none)".to_string(), |a| a.to_string())
}

/// The status fields a user follows: phase, keys, applied commands, offset and lag.
fn brief(s: &Status) -> String {
    let mut line = format!("phase={}", s.phase);
    if s.phase == Phase::FullSync {
        let _ = write!(
            line,
            " keys={}/{}",
            s.keys_done,
            s.keys_expected.unwrap_or(0)
        );
    }
    let _ = write!(
        line,
        " keys_copied={} commands_applied={} offset={} lag={}B/{:.1}s full_syncs={} errors={}",
        s.keys_copied,
        s.commands_applied,
        s.applied_offset,
        s.lag_bytes,
        s.lag_seconds,
        s.full_syncs,
        s.errors
    );
    line
}

/// A sync job running on the demo's runtime.
struct SyncJob {
    status: StatusHandle,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), ferry_replicator::Error>>,
}

impl SyncJob {
    /// Starts a job from `source` into `target`, with the defaults (checkpoints in the target on).
    fn start(runtime: &Runtime, source: &Server, target: &Server) -> Result<SyncJob, BoxError> {
        let config = Config::new(
            ConnectOptions::from_url(&source.url())?,
            ConnectOptions::from_url(&target.url())?,
        );
        let job = Replicator::new(config)?;
        let status = job.status();
        let shutdown = CancellationToken::new();
        let handle = runtime.spawn(run_job(job, shutdown.clone()));
        Ok(SyncJob {
            status,
            shutdown,
            handle,
        })
    }

    /// Waits until the job follows the live stream; fails if it stopped.
    fn wait_incremental(&self) -> Result<Status, BoxError> {
        self.wait("the sync job to follow the live stream", |s| {
            s.phase == Phase::Incremental
        })
    }

    /// Waits until the job applied everything `source` had written when called (lag 0 at that offset).
    fn wait_caught_up(&self, source: &Server) -> Result<Status, BoxError> {
        let offset = master_offset(source)?;
        self.wait(&format!("the sync job to apply offset {offset}"), |s| {
            s.phase == Phase::Incremental && s.applied_offset >= offset
        })
    }

    /// Waits until the status satisfies `done`, with the demo's deadline; fails at once if the job stopped.
    fn wait(&self, what: &str, done: impl Fn(&Status) -> bool) -> Result<Status, BoxError> {
        let outcome = wait_for(DEADLINE, what, || {
            let s = self.status.snapshot();
            (s.phase == Phase::Stopped || done(&s)).then_some(s)
        });
        match outcome {
            Ok(s) if s.phase != Phase::Stopped || done(&s) => Ok(s),
            Ok(s) => Err(format!("the sync job stopped: {s}").into()),
            Err(e) => Err(format!("{e}; job status: {}", self.status.snapshot()).into()),
        }
    }

    /// Prints the status once a second, `times` times, for the user to watch.
    fn show_progress(&self, times: usize) {
        for _ in 0..times {
            std::thread::sleep(Duration::from_secs(1));
            println!("   job: {}", brief(&self.status.snapshot()));
        }
    }

    /// Stops the job (its last batch and checkpoint are committed first) and returns its final status.
    async fn stop(self) -> Result<Status, BoxError> {
        self.shutdown.cancel();
        self.handle.await??;
        Ok(self.status.snapshot())
    }
}

/// Runs a job until `shutdown`; owns it so the task is `'static`.
async fn run_job(
    job: Replicator,
    shutdown: CancellationToken,
) -> Result<(), ferry_replicator::Error> {
    job.run(shutdown).await
}

/// The source's `master_repl_offset`.
fn master_offset(server: &Server) -> Result<u64, BoxError> {
    server
        .info_field("replication", "master_repl_offset")?
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no master_repl_offset in INFO of {}", server.addr()).into())
}

/// Fails the source group over and moves the sync job to the promoted replica.
///
/// The job is stopped as soon as the pool reports that the failover has started (the master is demoted),
/// before the replica is promoted: a job left on the old master would copy what that server still receives
/// after the promotion (Sentinel's hello messages go through its replication stream), which the promoted
/// replica never sees, and PSYNC could not continue from there. The new job starts from the checkpoint in the
/// target. Returns the first job's final status, the new job and the new master.
fn failover<'g>(
    runtime: &Runtime,
    group: &'g SentinelGroup,
    pool: &SentinelPool,
    job: SyncJob,
    target: &Server,
) -> Result<(Status, SyncJob, &'g Server), BoxError> {
    let mut events = pool.subscribe();
    let old = group.master.addr();
    let (stopped, switched, promoted) = std::thread::scope(|scope| {
        let sentinel = scope.spawn(|| group.failover());
        let followed = runtime.block_on(follow_failover(&mut events, &old, job));
        let promoted = sentinel
            .join()
            .map_err(|_| "the failover thread panicked")?;
        let (stopped, switched) = followed?;
        Ok::<_, BoxError>((stopped, switched, promoted?))
    })?;
    if switched.to_string() != promoted {
        return Err(
            format!("the pool switched to {switched}, the sentinels name {promoted}").into(),
        );
    }
    let server = group
        .server_by_addr(&promoted)
        .ok_or_else(|| format!("{promoted} is not a server of the group"))?;
    println!("   sentinels agree: new master {promoted}; sync job restarts against it from the target's checkpoint");
    let job = SyncJob::start(runtime, server, target)?;
    Ok((stopped, job, server))
}

/// Follows the pool's events through a failover of `old`: stops `job` when the master is demoted (or, at
/// the latest, when the pool switches) and returns the job's final status and the new master.
async fn follow_failover(
    events: &mut broadcast::Receiver<Event>,
    old: &str,
    job: SyncJob,
) -> Result<(Status, Addr), BoxError> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut job = Some(job);
    let mut stopped = None;
    loop {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => event,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => return Err(format!("pool events: {e}").into()),
            Err(_) => return Err("the pool did not report the failover in time".into()),
        };
        let switched = match event {
            Event::MasterDemoted { master, cause, .. } => {
                println!("   pool: master {master} demoted ({cause}): no more writes go to it");
                None
            }
            Event::MasterSwitched {
                old: from,
                new,
                generation,
                reason,
                ..
            } if new.to_string() != old => {
                println!(
                    "   pool: MasterSwitched {} -> {new} (generation {generation}, {reason:?})",
                    show_addr(from)
                );
                Some(new)
            }
            _ => continue,
        };
        if let Some(job) = job.take() {
            let status = job.stop().await?;
            println!(
                "   sync job stopped; checkpoint in the target at offset {}",
                status.applied_offset
            );
            stopped = Some(status);
        }
        if let Some(new) = switched {
            let status = stopped.take().ok_or("the sync job was not stopped")?;
            return Ok((status, new));
        }
    }
}

/// Checks and shows that the job continued on the promoted replica with PSYNC2 instead of a new full sync:
/// the first job did the one full sync, the second copied no RDB, and the promoted replica carries the
/// history the checkpoint names.
fn check_continued(before: &Status, after: &Status, promoted: &Server) -> Result<(), BoxError> {
    if before.full_syncs != 1 || after.full_syncs != 0 || after.keys_copied != 0 {
        return Err(format!(
            "expected one full sync before the failover and none after: before {before}; after {after}"
        )
        .into());
    }
    let replid2 = promoted.info_field("replication", "master_replid2")?;
    if replid2.as_deref() != Some(before.replid.as_str()) {
        return Err(format!(
            "{} does not carry the old replication id {} (master_replid2 {replid2:?})",
            promoted.addr(),
            before.replid
        )
        .into());
    }
    println!(
        "   job resumed: PSYNC {} {} -> +CONTINUE from {}, no RDB (keys_copied=0)",
        before.replid,
        before.applied_offset + 1,
        promoted.addr()
    );
    println!(
        "   the promoted replica keeps that id as master_replid2; the stream goes on under {}",
        after.replid
    );
    println!("   full syncs: 1 before the failover + 0 after = 1");
    Ok(())
}

/// What the application saw acknowledged.
#[derive(Debug, Default)]
struct Written {
    /// INCRs of [`COUNTER`] acknowledged.
    incrs: u64,
    /// `i` of every acknowledged `SET demo:n:<i> <i>`.
    keys: Vec<u64>,
    /// Writes whose outcome is unknown (the link broke after sending); none expected.
    unknown: u64,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "application: {} INCRs and {} SETs acknowledged, {} with unknown outcome",
            self.incrs,
            self.keys.len(),
            self.unknown
        )
    }
}

/// The application: writes through the pool in a loop until stopped.
struct Writer {
    stop: CancellationToken,
    handle: JoinHandle<Result<Written, ferry_sentinel::Error>>,
}

impl Writer {
    /// Starts writing on `runtime`.
    fn start(runtime: &Runtime, pool: SentinelPool) -> Writer {
        let stop = CancellationToken::new();
        let handle = runtime.spawn(write_until(pool, stop.clone()));
        Writer { stop, handle }
    }

    /// Stops writing and returns what was acknowledged.
    fn stop(self, runtime: &Runtime) -> Result<Written, BoxError> {
        self.stop.cancel();
        Ok(runtime.block_on(self.handle)??)
    }
}

/// One round per pace: `INCR demo:counter`, then `SET demo:n:<i> <i>`, each recorded once acknowledged.
async fn write_until(
    pool: SentinelPool,
    stop: CancellationToken,
) -> Result<Written, ferry_sentinel::Error> {
    let mut written = Written::default();
    let mut i = 0u64;
    while !stop.is_cancelled() {
        match write(&pool, &[COUNTER.to_string()], "INCR").await? {
            true => written.incrs += 1,
            false => written.unknown += 1,
        }
        let (key, value) = (format!("demo:n:{i}"), i.to_string());
        match write(&pool, &[key, value], "SET").await? {
            true => written.keys.push(i),
            false => written.unknown += 1,
        }
        i += 1;
        tokio::time::sleep(WRITE_PACE).await;
    }
    Ok(written)
}

/// Sends one write through the pool. Retried while it provably did not run (sent to no master: the pool was
/// between masters, or the server refused it as a replica); `Ok(false)` when its outcome is unknown.
async fn write(
    pool: &SentinelPool,
    args: &[String],
    command: &str,
) -> Result<bool, ferry_sentinel::Error> {
    let argv: Vec<&str> = std::iter::once(command)
        .chain(args.iter().map(String::as_str))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match pool.call(&argv).await {
            Ok(_) => return Ok(true),
            Err(e)
                if (e.is_safe_to_retry() || e.is_resolve_error()) && Instant::now() < deadline => {}
            Err(e) if e.server_error().is_some() || e.is_resolve_error() => return Err(e),
            Err(e) => {
                println!("   application: {command} outcome unknown: {e}");
                return Ok(false);
            }
        }
    }
}

/// Proves the outcome: the datasets are equal, the counter matches the acknowledged INCRs, and every
/// acknowledged key is on the target. Returns how many keys were compared.
fn verify(source: &Server, target: &Server, written: &Written) -> Result<u64, BoxError> {
    let opts = CompareOptions::default().ignore_prefix(checkpoint::KEY_PREFIX);
    let report = compare(&Target::from(source), &Target::from(target), &opts)?;
    if !report.is_equal() {
        return Err(format!("the target differs from the source:\n{report}").into());
    }
    println!(
        "   compare: EQUAL, {} keys compared (checkpoint keys ignored)",
        report.keys_compared
    );
    let mut t = target.try_client()?;
    let counter: u64 = redis::cmd("GET").arg(COUNTER).query(&mut t)?;
    let counter_ok = if written.unknown == 0 {
        counter == written.incrs
    } else {
        (written.incrs..=written.incrs + written.unknown).contains(&counter)
    };
    if !counter_ok {
        return Err(format!(
            "{COUNTER} on the target is {counter}, {} INCRs were acknowledged",
            written.incrs
        )
        .into());
    }
    println!("   {COUNTER} on the target = {counter} = acknowledged INCRs");
    let missing = missing_keys(&mut t, &written.keys)?;
    if !missing.is_empty() {
        let first: Vec<_> = missing.iter().take(5).collect();
        return Err(format!(
            "{} acknowledged keys missing or wrong on the target, e.g. {first:?}",
            missing.len()
        )
        .into());
    }
    println!(
        "   all {} acknowledged demo:n:<i> keys are on the target with their values",
        written.keys.len()
    );
    Ok(report.keys_compared)
}

/// The acknowledged keys `demo:n:<i>` that the target lacks or holds with another value than `i`.
fn missing_keys(t: &mut redis::Connection, keys: &[u64]) -> Result<Vec<String>, BoxError> {
    let mut missing = Vec::new();
    for chunk in keys.chunks(1000) {
        let names: Vec<String> = chunk.iter().map(|i| format!("demo:n:{i}")).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&names).query(t)?;
        for ((name, i), value) in names.into_iter().zip(chunk).zip(values) {
            if value != Some(i.to_string()) {
                missing.push(name);
            }
        }
    }
    Ok(missing)
}
