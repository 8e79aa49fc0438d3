//! The `ferry` program: parses the command line and calls the library.

pub mod args;
pub mod dr;
mod serve;
mod stop_at;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use ferry::{Error, ErrorKind, JobHandle, Phase, Status, SyncConfig, SyncJob};
use indicatif::{ProgressBar, ProgressStyle};

use args::{Cli, Command, ConfigCommand, LogFormat, RdbCommand, SyncArgs, VerifyArgs};

/// Exit codes (docs in the README).
pub mod exit {
    /// Success: stopped by a signal after draining, caught up, equal.
    pub const OK: i32 = 0;
    /// `verify` (or `sync --until-caught-up --verify`) found differences.
    pub const DIFFERENT: i32 = 1;
    /// Bad command line or configuration.
    pub const CONFIG: i32 = 2;
    /// A server could not be reached or refused the credentials.
    pub const CONNECTION: i32 = 3;
    /// The job failed: the source or the target refused, bad data, fenced.
    pub const FAILED: i32 = 4;
    /// A second Ctrl-C / SIGTERM: exit at once (the checkpoint in the target keeps a restart exact).
    pub const INTERRUPTED: i32 = 130;
}

/// The exit code for an error.
pub fn code_of(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Config => exit::CONFIG,
        ErrorKind::Auth | ErrorKind::Connection => exit::CONNECTION,
        _ => exit::FAILED,
    }
}

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    init_logs(cli.log_format);
    let json_logs = cli.log_format == LogFormat::Json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Sync(a) => sync(*a, json_logs).await,
            Command::Verify(a) => verify(*a).await,
            Command::Rdb(c) => rdb(c).await,
            Command::Config(ConfigCommand::Check { config, file, json }) => {
                // clap requires one of the two.
                let path = config.or(file).unwrap_or_default();
                config_check(&path, json)
            }
            Command::Dr(c) => dr::run(c).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            if json_logs {
                tracing::error!(kind = e.kind().as_str(), "{e}");
            } else {
                eprintln!("ferry: {e}");
            }
            code_of(&e)
        }
    }
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(stop_at::StopAt::from_env())
        .init();
}

fn config_check(path: &std::path::Path, json: bool) -> Result<i32, Error> {
    let mut loaded = SyncConfig::load_path(path)?;
    loaded.notes.extend(loaded.config.url_db_note()?);
    let mut out = std::io::stdout().lock();
    let format = serde_json::to_value(loaded.format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "format": format,
            "notes": loaded.notes,
            "config": loaded.config.to_redacted_json(),
        });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
    } else {
        let _ = writeln!(out, "# read as: {format}");
        for n in &loaded.notes {
            let _ = writeln!(out, "# note: {n}");
        }
        let _ = write!(out, "{}", loaded.config.to_redacted_toml());
    }
    Ok(exit::OK)
}

/// First Ctrl-C or SIGTERM: drain and commit. Second: exit at once.
fn watch_signals(job: JobHandle) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    return;
                }
            };
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                tracing::info!("stopping: writing what was received and committing the checkpoint (again to exit at once)");
                job.request_stop();
            } else {
                eprintln!("ferry: interrupted; the checkpoint in the target keeps a restart exact");
                std::process::exit(exit::INTERRUPTED);
            }
        }
    });
}

async fn sync(args: SyncArgs, json_logs: bool) -> Result<i32, Error> {
    let (config, notes) = args.resolve()?;
    for n in &notes {
        tracing::info!("config: {n}");
    }
    let metrics = match &config.run.metrics_addr {
        Some(addr) => {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| Error::config(format!("metrics: {e}")))?;
            let bound = serve::serve(addr, serve::Content::Metrics(handle.clone())).await?;
            tracing::info!("metrics at http://{bound}/metrics");
            Some(handle)
        }
        None => None,
    };
    tracing::info!(source = %config.source.describe(), target = %config.target.describe(), "starting");
    let job = SyncJob::new(config.clone())?.start()?;
    if let Some(addr) = &config.run.status_addr {
        let bound = serve::serve(addr, serve::Content::Status(job.clone())).await?;
        tracing::info!("status at http://{bound}/status");
    }
    watch_signals(job.clone());
    let progress = !args.no_progress && !json_logs && std::io::stderr().is_terminal();
    let display = tokio::spawn(show(
        job.clone(),
        progress,
        Duration::from_secs(args.status_interval.max(1)),
    ));
    let result = job.wait().await;
    display.abort();
    let _ = display.await;
    if let Some(h) = &metrics {
        h.run_upkeep();
    }
    let status = result?;
    tracing::info!("stopped: {}", status.line());
    report_policy(&status.policy);
    if config.until_caught_up && config.run.verify && status.phase == Phase::CaughtUp {
        // What the job copied, where it copied it: its filters and database map.
        let options = ferry::VerifyOptions::default()
            .with_recheck_after_ms(1000)
            .with_job(&config);
        let report = ferry::verify(&config.source, &config.target, options).await?;
        print!("{report}");
        return Ok(if report.equal {
            exit::OK
        } else {
            exit::DIFFERENT
        });
    }
    Ok(exit::OK)
}

/// What the target policy left out or changed, as a report on stderr: a summary, then one line per listed key.
fn report_policy(p: &ferry::PolicyStatus) {
    if p.keys_skipped + p.keys_converted + p.commands_skipped + p.commands_converted == 0 {
        return;
    }
    tracing::warn!(
        keys_skipped = p.keys_skipped,
        keys_converted = p.keys_converted,
        commands_skipped = p.commands_skipped,
        commands_converted = p.commands_converted,
        "the target policy left keys out of the target or wrote them with a loss (listed below; the status has them too)"
    );
    for (what, keys) in [("skipped", &p.skipped), ("converted", &p.converted)] {
        for k in keys {
            tracing::warn!(db = k.db, key = %k.key, loss = %k.loss, "{what}");
        }
    }
}

/// The progress bar during a full copy and a one-line live status after it (on a terminal), or a status line
/// every `interval` (elsewhere).
async fn show(job: JobHandle, terminal: bool, interval: Duration) {
    if !terminal {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!("{}", job.status().line());
        }
    }
    let style = ProgressStyle::with_template(
        "{spinner} full copy [{bar:30}] {pos}/{len} keys  {msg}  {per_sec}  ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let live_style = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    let mut mode: Option<Phase> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let s: Status = job.status();
        if s.phase == Phase::FullSync {
            if mode != Some(Phase::FullSync) {
                bar.set_style(style.clone());
                bar.reset();
                mode = Some(Phase::FullSync);
            }
            bar.set_length(s.keys_expected.unwrap_or(0).max(s.keys_done));
            bar.set_position(s.keys_done);
            bar.set_message(format!(
                "{} read, {} written",
                bytes(s.bytes_read),
                bytes(s.bytes_written)
            ));
        } else {
            if mode != Some(Phase::Incremental) {
                bar.set_style(live_style.clone());
                mode = Some(Phase::Incremental);
            }
            bar.set_message(format!(
                "{}: {:.0} ops/s, lag {} / {} ms, {} keys copied, {} commands applied",
                s.phase,
                s.ops_per_sec,
                bytes(s.lag_bytes),
                s.lag_ms,
                s.keys_copied,
                s.commands_applied
            ));
            bar.tick();
        }
    }
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

async fn verify(args: VerifyArgs) -> Result<i32, Error> {
    let (source, target, options) = args.resolve()?;
    let report = ferry::verify(&source, &target, options).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
    Ok(if report.equal {
        exit::OK
    } else {
        exit::DIFFERENT
    })
}

async fn rdb(cmd: RdbCommand) -> Result<i32, Error> {
    match cmd {
        RdbCommand::Json { file } => {
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            for entry in ferry::rdb::entries(&file)? {
                let entry = entry?;
                if writeln!(out, "{}", ferry::rdb::json::entry_line(&entry)).is_err() {
                    return Ok(exit::OK); // stdout closed (a pipe into head)
                }
            }
            let _ = out.flush();
            Ok(exit::OK)
        }
        RdbCommand::Stats { file, json } => {
            let s = ferry::rdb::stats(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print_stats(&s);
            }
            Ok(exit::OK)
        }
        RdbCommand::Restore {
            file,
            target,
            target_type,
            target_user,
            target_password_env,
            conflict,
            dbs,
            db_map,
            target_policy,
        } => {
            let endpoints = args::Endpoints {
                target: Some(target),
                target_type: Some(target_type),
                target_user,
                target_password_env,
                ..Default::default()
            };
            let target = endpoints
                .target()?
                .ok_or_else(|| Error::config("--target is required"))?;
            let mut options = ferry::rdb::RestoreOptions::default()
                .with_conflict(conflict)
                .with_target_policy(target_policy);
            if !dbs.is_empty() {
                options.dbs = Some(dbs);
            }
            for (from, to) in db_map {
                options = options.with_db_map(from, to);
            }
            let report = ferry::rdb::restore(&file, &target, options).await?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(exit::OK)
        }
    }
}

fn print_stats(s: &ferry::rdb::RdbStats) {
    println!(
        "RDB version {}, {} keys ({} with expiry), {} function libraries, checksum {}",
        s.version, s.keys, s.keys_with_expiry, s.functions, s.checksum
    );
    for (k, v) in &s.aux {
        println!("  aux {k} = {v}");
    }
    for (db, types) in &s.per_db {
        for (t, ts) in types {
            println!(
                "  db {db:<3} {t:<7} {:>10} keys {:>12} bytes",
                ts.keys, ts.bytes
            );
        }
    }
    println!("encodings:");
    for (e, n) in &s.encodings {
        println!("  {e:<24} {n}");
    }
    if !s.expiry_histogram.is_empty() {
        println!("expiry from now:");
        for (b, n) in &s.expiry_histogram {
            println!("  {b:<8} {n}");
        }
    }
    println!("biggest keys:");
    for b in &s.biggest {
        println!(
            "  {:>12} bytes  db {} {} {}",
            b.bytes, b.db, b.r#type, b.key
        );
    }
}
