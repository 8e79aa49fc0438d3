//! A job's figures through the `metrics` facade: whoever installs a recorder (the `ferry` binary installs the
//! Prometheus one for `--metrics-addr`) gets them; without one they cost nothing.
//!
//! Names (all labelled `job` = the checkpoint tag; per-shard ones also `shard` = the source `host:port`):
//! `ferry_keys_copied_total`, `ferry_keys_expected`, `ferry_commands_applied_total`,
//! `ferry_commands_filtered_total`, `ferry_bytes_read_total`, `ferry_bytes_written_total`, `ferry_lag_bytes`,
//! `ferry_lag_seconds`, `ferry_ops_per_second`, `ferry_phase` (1 for the current phase, label `phase`),
//! `ferry_full_syncs_total`, `ferry_reconnects_total`, `ferry_errors_total`, and per shard
//! `ferry_shard_applied_offset`, `ferry_shard_lag_bytes`.

use metrics::{counter, gauge, Counter, Gauge};

use crate::job::{Phase, Status};

/// The handles of one job's metrics.
pub(crate) struct JobMetrics {
    keys_copied: Counter,
    keys_expected: Gauge,
    commands_applied: Counter,
    commands_filtered: Counter,
    bytes_read: Counter,
    bytes_written: Counter,
    lag_bytes: Gauge,
    lag_seconds: Gauge,
    ops: Gauge,
    phase: Vec<(Phase, Gauge)>,
    full_syncs: Counter,
    reconnects: Counter,
    errors: Counter,
    job_errors: Counter,
    shard_applied: Gauge,
    shard_lag: Gauge,
}

impl JobMetrics {
    pub(crate) fn new(job: &str, shard: &str) -> JobMetrics {
        let job = job.to_string();
        let shard = shard.to_string();
        JobMetrics {
            keys_copied: counter!("ferry_keys_copied_total", "job" => job.clone()),
            keys_expected: gauge!("ferry_keys_expected", "job" => job.clone()),
            commands_applied: counter!("ferry_commands_applied_total", "job" => job.clone()),
            commands_filtered: counter!("ferry_commands_filtered_total", "job" => job.clone()),
            bytes_read: counter!("ferry_bytes_read_total", "job" => job.clone()),
            bytes_written: counter!("ferry_bytes_written_total", "job" => job.clone()),
            lag_bytes: gauge!("ferry_lag_bytes", "job" => job.clone()),
            lag_seconds: gauge!("ferry_lag_seconds", "job" => job.clone()),
            ops: gauge!("ferry_ops_per_second", "job" => job.clone()),
            phase: Phase::ALL
                .iter()
                .map(|p| {
                    (
                        *p,
                        gauge!("ferry_phase", "job" => job.clone(), "phase" => p.as_str()),
                    )
                })
                .collect(),
            full_syncs: counter!("ferry_full_syncs_total", "job" => job.clone()),
            reconnects: counter!("ferry_reconnects_total", "job" => job.clone()),
            errors: counter!("ferry_errors_total", "job" => job.clone(), "source" => "target_reply"),
            job_errors: counter!("ferry_errors_total", "job" => job.clone(), "source" => "job"),
            shard_applied: gauge!("ferry_shard_applied_offset", "job" => job.clone(), "shard" => shard.clone()),
            shard_lag: gauge!("ferry_shard_lag_bytes", "job" => job, "shard" => shard),
        }
    }

    /// Sets every figure from a status snapshot.
    pub(crate) fn record(&self, s: &Status) {
        self.keys_copied.absolute(s.keys_copied);
        self.keys_expected.set(s.keys_expected.unwrap_or(0) as f64);
        self.commands_applied.absolute(s.commands_applied);
        self.commands_filtered.absolute(s.commands_filtered);
        self.bytes_read.absolute(s.bytes_read);
        self.bytes_written.absolute(s.bytes_written);
        self.lag_bytes.set(s.lag_bytes as f64);
        self.lag_seconds.set(s.lag_ms as f64 / 1000.0);
        self.ops.set(s.ops_per_sec);
        for (p, g) in &self.phase {
            g.set(if *p == s.phase { 1.0 } else { 0.0 });
        }
        self.full_syncs.absolute(s.full_syncs);
        self.reconnects.absolute(s.reconnects);
        self.errors.absolute(s.errors);
        if let Some(shard) = s.shards.first() {
            self.shard_applied.set(shard.applied_offset as f64);
            self.shard_lag.set(shard.lag_bytes as f64);
        }
    }

    /// Counts the error that ended the job.
    pub(crate) fn error(&self) {
        self.job_errors.increment(1);
    }
}
