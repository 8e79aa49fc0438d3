//! [`DrPair::run`]: the job of whatever direction the record names, followed across epochs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{Direction, DrPair, DrPhase, Side};
use crate::config::{CheckpointConfig, Conflict, SyncConfig};
use crate::error::{Error, ErrorKind};
use crate::job::{Event, EventChannel, JobHandle, Status, SyncJob};

/// What a running pair is doing (serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DrRunStatus {
    /// The epoch of the record followed.
    pub epoch: u64,
    /// Its phase.
    pub phase: DrPhase,
    /// The side that takes writes.
    pub primary: Side,
    /// The direction of the job running now (`None` between jobs and after a failover).
    pub direction: Option<Direction>,
    /// The status of that job.
    pub job: Option<Status>,
    /// The last error of a job or of reading the record.
    pub last_error: Option<String>,
}

/// Something that happened to a running pair (serde: tagged by `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DrEvent {
    /// The record moved: a new epoch, phase and primary. Applications follow `primary`.
    Primary {
        /// The side that takes writes.
        side: Side,
        /// The phase.
        phase: DrPhase,
        /// The epoch.
        epoch: u64,
    },
    /// A job of `direction` started with `epoch`.
    JobStarted {
        /// Its direction.
        direction: Direction,
        /// Its epoch.
        epoch: u64,
    },
    /// The job of `direction` ended (stopped for a new epoch, fenced, or failed: `error` says).
    JobEnded {
        /// Its direction.
        direction: Direction,
        /// Its epoch.
        epoch: u64,
        /// The error kind, when it ended with one.
        kind: Option<ErrorKind>,
        /// The error, when it ended with one.
        error: Option<String>,
    },
    /// An event of the running job.
    Job {
        /// The job's direction.
        direction: Direction,
        /// The event.
        event: Event,
    },
}

/// The events of a running pair. A receiver that falls behind skips the oldest.
#[derive(Debug)]
pub struct DrEvents {
    rx: broadcast::Receiver<DrEvent>,
}

impl DrEvents {
    /// The next event; `None` once the run has ended.
    pub async fn recv(&mut self) -> Option<DrEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<DrEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    status: Mutex<DrRunStatus>,
    job: Mutex<Option<JobHandle>>,
    /// The first [`DrHandle::events`] gets every event since the start.
    events: EventChannel<DrEvent>,
    cancel: CancellationToken,
    done: watch::Receiver<Option<Result<DrRunStatus, (ErrorKind, String)>>>,
}

impl Shared {
    fn emit(&self, e: DrEvent) {
        self.events.send(e);
    }

    fn update(&self, f: impl FnOnce(&mut DrRunStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// A running pair. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DrHandle {
    shared: Arc<Shared>,
}

impl DrHandle {
    /// A snapshot: the record followed and the job's status.
    pub fn status(&self) -> DrRunStatus {
        let mut s = self
            .shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if let Ok(job) = self.shared.job.lock() {
            s.job = job.as_ref().map(JobHandle::status);
        }
        s
    }

    /// A receiver of the events: the first call's receiver has every event since the run started (the last 256
    /// at most, so the first `Primary` event is there however late it is called); a later call's, the events
    /// from then on.
    pub fn events(&self) -> DrEvents {
        DrEvents {
            rx: self.shared.events.receiver(),
        }
    }

    /// Stops the running job (drain and commit) and the run; returns the last status.
    pub async fn stop(&self) -> Result<DrRunStatus, Error> {
        self.shared.cancel.cancel();
        self.wait().await
    }

    /// Asks the run to stop without waiting.
    pub fn request_stop(&self) {
        self.shared.cancel.cancel();
    }

    /// Waits until the run ends (only [`DrHandle::stop`] ends it).
    pub async fn wait(&self) -> Result<DrRunStatus, Error> {
        let mut done = self.shared.done.clone();
        let r = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        match r {
            Some(Ok(s)) => Ok(s),
            Some(Err((kind, m))) => Err(Error::new(kind, m)),
            None => Err(Error::new(
                ErrorKind::Stopped,
                "the run ended without a result",
            )),
        }
    }
}

/// The sync configuration of the pair's job in `direction` at `epoch`.
pub(crate) fn job_config(pair: &DrPair, direction: Direction, epoch: u64) -> SyncConfig {
    let c = pair.config();
    let (from, to) = match direction {
        Direction::AToB => (&c.a, &c.b),
        Direction::BToA => (&c.b, &c.a),
    };
    let mut config = SyncConfig::new(from.as_source(), to.as_target())
        .with_conflict(Conflict::Rewrite)
        .with_limits(c.limits.clone())
        .with_checkpoint(CheckpointConfig {
            enabled: true,
            tag: direction.checkpoint_tag(&c.name),
            db: 0,
            epoch,
        });
    // The target is a copy: a full copy redone (a lost backlog) starts from an empty target, as a replica does.
    config.flush_target_on_resync = true;
    config
}

pub(crate) fn start(pair: DrPair) -> Result<DrHandle, Error> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::config("DrPair::run needs a tokio runtime"))?;
    let (done_tx, done_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        status: Mutex::new(DrRunStatus {
            epoch: 0,
            phase: DrPhase::Uninitialized,
            primary: Side::A,
            direction: None,
            job: None,
            last_error: None,
        }),
        job: Mutex::new(None),
        events: EventChannel::new(256),
        cancel: CancellationToken::new(),
        done: done_rx,
    });
    let s = shared.clone();
    runtime.spawn(async move {
        follow(pair, &s).await;
        let status = s.status.lock().map(|x| x.clone()).ok();
        s.events.close();
        let _ = done_tx.send(Some(
            status.ok_or((ErrorKind::Stopped, "the run's status was lost".to_string())),
        ));
    });
    Ok(DrHandle { shared })
}

/// The loop: read the record, run the job it names, replace it when the epoch changes.
async fn follow(pair: DrPair, shared: &Arc<Shared>) {
    let mut current: Option<(Direction, u64, JobHandle)> = None;
    // A job that ended at this epoch (fenced or failed) is not restarted before `retry_at`.
    let mut ended: Option<(u64, tokio::time::Instant)> = None;
    let mut seen_epoch = None;
    // Since when (this process's clock) A's record is a switch B's record has not followed.
    let mut switch_unfinished: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let both = pair.read_both().await;
        finish_interrupted_switchback(&pair, &both, &mut switch_unfinished).await;
        match &both.newest {
            Some(rec) => {
                if seen_epoch != Some(rec.epoch) {
                    seen_epoch = Some(rec.epoch);
                    tracing::info!(epoch = rec.epoch, phase = %rec.phase, primary = %rec.phase.primary(), "DR record");
                    shared.emit(DrEvent::Primary {
                        side: rec.phase.primary(),
                        phase: rec.phase,
                        epoch: rec.epoch,
                    });
                }
                let rec = rec.clone();
                shared.update(|s| {
                    s.epoch = rec.epoch;
                    s.phase = rec.phase;
                    s.primary = rec.phase.primary();
                });
                let want = rec.phase.direction().map(|d| (d, rec.epoch));
                // The job ended by itself?
                if let Some((d, e, h)) = &current {
                    if h.is_finished() {
                        let r = h.wait().await;
                        let (kind, error) = match &r {
                            Ok(_) => (None, None),
                            Err(err) => (Some(err.kind()), Some(err.to_string())),
                        };
                        if let Some(err) = &error {
                            tracing::warn!(direction = %d, epoch = e, error = %err, "the DR job ended");
                            shared.update(|s| s.last_error = Some(err.clone()));
                        }
                        shared.emit(DrEvent::JobEnded {
                            direction: *d,
                            epoch: *e,
                            kind,
                            error,
                        });
                        let wait = if kind == Some(ErrorKind::Fenced) {
                            300
                        } else {
                            2000
                        };
                        ended = Some((
                            *e,
                            tokio::time::Instant::now() + Duration::from_millis(wait),
                        ));
                        tracing::info!(
                            step = "run_old_job_stopped",
                            direction = %d,
                            epoch = e,
                            "the job ended; the record's job next"
                        );
                        current = None;
                        set_job(shared, None);
                    }
                }
                if current.as_ref().map(|(d, e, _)| (*d, *e)) != want {
                    if let Some((d, e, h)) = current.take() {
                        let r = h.stop().await;
                        let (kind, error) = match &r {
                            Ok(_) => (None, None),
                            Err(err) => (Some(err.kind()), Some(err.to_string())),
                        };
                        shared.emit(DrEvent::JobEnded {
                            direction: d,
                            epoch: e,
                            kind,
                            error,
                        });
                        set_job(shared, None);
                        tracing::info!(
                            step = "run_old_job_stopped",
                            direction = %d,
                            epoch = e,
                            "the job of the old epoch stopped; the record's job next"
                        );
                    }
                    let may_start = ended.is_none_or(|(e, at)| {
                        want.is_some_and(|(_, w)| w != e) || tokio::time::Instant::now() >= at
                    });
                    // Every call writes the record of the side a job writes to last, after that job's checkpoints
                    // (seeds, fences): a job started on the other side's newer record alone could find its
                    // checkpoints half written (a switchback seeding a cluster B master by master) and copy in full.
                    let target_ready = want.is_some_and(|(d, e)| {
                        let target = match d {
                            Direction::AToB => &both.b,
                            Direction::BToA => &both.a,
                        };
                        target.as_ref().is_some_and(|r| r.epoch >= e)
                    });
                    if let (Some((d, e)), true, true) = (want, may_start, target_ready) {
                        match SyncJob::new(job_config(&pair, d, e)).and_then(SyncJob::start) {
                            Ok(h) => {
                                tracing::info!(direction = %d, epoch = e, "DR job started");
                                shared.emit(DrEvent::JobStarted {
                                    direction: d,
                                    epoch: e,
                                });
                                forward_events(shared, d, &h);
                                set_job(shared, Some(h.clone()));
                                current = Some((d, e, h));
                                ended = None;
                            }
                            Err(err) => {
                                shared.update(|s| s.last_error = Some(err.to_string()));
                                ended =
                                    Some((e, tokio::time::Instant::now() + Duration::from_secs(2)));
                            }
                        }
                    }
                    shared.update(|s| s.direction = current.as_ref().map(|(d, _, _)| *d));
                }
            }
            None => {
                let why = both
                    .a_err
                    .or(both.b_err)
                    .unwrap_or_else(|| "the pair is not initialized (ferry dr init)".to_string());
                shared.update(|s| s.last_error = Some(why));
            }
        }
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    if let Some((d, e, h)) = current.take() {
        let r = h.stop().await;
        shared.emit(DrEvent::JobEnded {
            direction: d,
            epoch: e,
            kind: r.as_ref().err().map(Error::kind),
            error: r.err().map(|e| e.to_string()),
        });
    }
    set_job(shared, None);
    shared.update(|s| s.direction = None);
}

/// A switchback whose call died after moving A's record (A serves) and before B's record followed leaves B paused
/// only until the pause's timeout, with B's clients still connected: the run finishes it (the call's own
/// finishing step: B's clients disconnected, B unpaused, B's record and the A -> B seed written) once the state
/// has lasted a moment (a live call finishes within milliseconds), well within the pause.
async fn finish_interrupted_switchback(
    pair: &DrPair,
    both: &super::Both,
    since: &mut Option<(u64, tokio::time::Instant)>,
) {
    let unfinished = both.newest.as_ref().filter(|r| {
        r.phase == DrPhase::Normal
            && (r.a_seed.is_some() || !r.a_seeds.is_empty())
            && both.b_err.is_none()
            && both.b.as_ref().is_none_or(|b| b.epoch < r.epoch)
    });
    let Some(rec) = unfinished else {
        *since = None;
        return;
    };
    let now = tokio::time::Instant::now();
    let first = match since {
        Some((e, at)) if *e == rec.epoch => *at,
        _ => {
            *since = Some((rec.epoch, now));
            now
        }
    };
    let grace = Duration::from_millis((pair.config().timing.max_pause_ms / 5).clamp(100, 1000));
    if now.duration_since(first) < grace {
        return;
    }
    tracing::warn!(
        epoch = rec.epoch,
        "a switchback was interrupted after A's record moved; finishing it"
    );
    if let Err(e) = pair.switchback().await {
        tracing::warn!(error = %e, "could not finish the interrupted switchback; call switchback again");
    }
}

fn set_job(shared: &Arc<Shared>, job: Option<JobHandle>) {
    if let Ok(mut g) = shared.job.lock() {
        *g = job;
    }
}

fn forward_events(shared: &Arc<Shared>, direction: Direction, job: &JobHandle) {
    let mut events = job.events();
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            shared.emit(DrEvent::Job { direction, event });
        }
    });
}
