//! Disaster recovery of a pair of deployments: [`DrPair`] runs the walk-through of docs/dr.md as four fenced
//! calls, and [`node`] switches a plain master/replica pair with guards.
//!
//! # The pair
//!
//! A is the primary deployment, B the standby; each is a standalone server, a sentinel-managed group or a
//! cluster ([`Deployment`]). The pair moves through four phases ([`DrPhase`]):
//!
//! | phase | who serves | job that runs ([`DrPair::run`]) | next call |
//! |---|---|---|---|
//! | `normal` | A | A -> B | [`DrPair::failover`] when A is lost |
//! | `failed_over` | B | none | [`DrPair::recover`] when A is back |
//! | `recovering` | B | B -> A | [`DrPair::switchback`] |
//! | `normal` again | A | A -> B | ... |
//!
//! # The state record and the epoch
//!
//! The pair's state ([`DrState`]: phase, epoch, the offsets that matter) is a JSON value in the key
//! `ferry:state:{dr-<name>}` of both deployments (on the master that owns the key's slot for a cluster). ferry
//! never copies its `ferry:state:` and `ferry:checkpoint:` keys from a source, so each side keeps its own copy.
//! A record is only replaced by a script that compares epochs: it writes only when the new epoch is higher than
//! the stored one, so two processes calling the same transition cannot both win, and a slower one learns what
//! the faster did. The newest record of the two sides is the pair's state; a side that lags behind (it was
//! unreachable, or the process calling died between the two writes) is brought up to date by the next call.
//!
//! # Fencing without touching the batch path
//!
//! Each job the pair runs stores its checkpoint (`ferry:checkpoint:{dr-<name>-ab}` in B for A -> B,
//! `...-ba}` in A for B -> A) with the epoch it was started with ([`crate::CheckpointConfig::epoch`]). Every
//! live batch of a job is a script that first checks that the checkpoint is the one its previous batch stored
//! (the chain). When the direction changes, the pair overwrites the old direction's checkpoint with a fence
//! marker (`fenced epoch=<e>`) in the same script that moves the record: the old job's next batch finds the
//! chain broken by a fence and stops with [`crate::ErrorKind::Fenced`] (never retried), and a job started later
//! with the old direction refuses to start. So two directions never apply at once, across processes and hosts,
//! and the hot path has no extra read.
//!
//! # The four calls
//!
//! - [`DrPair::init`]: writes the first record (`normal`, epoch 1); the A -> B job's first session then does the
//!   full copy.
//! - [`DrPair::failover`]: on B, in one script: the record moves to `failed_over`, the A -> B checkpoint becomes a
//!   fence, and the script returns what that checkpoint held (the RPO: the last offset of A that B has) and B's
//!   own replication id and offset at that instant. When A still answers, the call first waits a moment for
//!   B to have everything A has, so a planned failover loses nothing.
//! - [`DrPair::recover`]: A is back. ferry reads A's replication stream from the RPO (a `PSYNC` to A) and counts the
//!   writes A has that B never received (ferry's own keys and pings do not count). None: A equals B as it was at
//!   the failover, so the B -> A checkpoint is seeded in A at B's offset recorded then, and the B -> A job continues
//!   B's stream from there with `PSYNC` (`+CONTINUE`): only B's changes since the failover travel. Before that,
//!   ferry asks B whether its backlog still holds that offset; when it does not, the call says so and needs
//!   [`RecoverChoice::BWins`] (a full copy). Extra writes on A: the call reports how many and refuses until the
//!   operator chooses [`RecoverChoice::BWins`] (A is emptied and gets a full copy of B) or
//!   [`RecoverChoice::Abort`].
//! - [`DrPair::switchback`]: waits until A's lag behind B is small, pauses writes on B (`CLIENT PAUSE <ms> WRITE`),
//!   waits until A has applied B's last offset, then on A in one script: the record moves to `normal` with a new
//!   epoch, the B -> A checkpoint becomes a fence, and the script returns A's replication id and offset. A and B
//!   hold the same data at that instant, so the A -> B checkpoint is seeded in B at A's offset: the A -> B job
//!   continues with `+CONTINUE`, no full copy. Then the clients blocked by the pause on B are disconnected (their
//!   writes never ran, and they reconnect to whichever side the record names), B is unpaused and its record
//!   updated. The write pause is measured and returned.
//!
//! Every call reads the record first and is idempotent: a call that already happened returns what it did; a
//! call that a crash (SIGKILL) interrupted is finished by calling it again (docs/dr.md has what a crash at each
//! step leaves). A `CLIENT PAUSE` always has a timeout, so a crashed switchback never leaves B paused. Right after
//! the switch on A, B is also fenced: its masters' `min-replicas-to-write` is raised far beyond any replica
//! count, so B refuses every write (`NOREPLICAS`) even once the pause has run out, until whoever finishes the
//! switch (the call again, or [`DrPair::run`], which does it by itself) disconnects B's clients and restores the
//! setting. Where that fence cannot be set (`CONFIG` refused, `min-replicas-max-lag 0`), a late finish counts
//! the writes B took after the switch instead ([`SwitchbackReport::writes_on_b_after_switch`]). The steps between two writes of a call log an
//! event with a `step` field (`failover_written_on_b`, ...): the crash points the tests stop the process at. [`DrPair::status`] says where the pair is and the next
//! call.
//!
//! # Following the primary
//!
//! [`DrStatus::primary`] (and the [`DrEvent::Primary`] events of [`DrPair::run`]) names the side that takes
//! writes. An application reads it when it (re)connects: switchback disconnects B's clients, so an application
//! that re-reads the primary whenever a connection breaks never writes to B after the switch.
//!
//! # Clusters
//!
//! A side that is a cluster has one stream per shard: its RPO, positions and seeds are per master (named by node
//! id, as the cluster source names shards), fenced and seeded key by key (keys of different slots cannot share a
//! script). Each fence keeps the position it replaced, so a failover interrupted half-way still knows the RPO
//! when called again; seeds are only written over fences, so a retried switchback never moves a live checkpoint
//! back.

pub mod node;
mod record;
mod run;
mod side;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Endpoint, Limits, MasterAuth, Source, Target};
use crate::error::{Error, ErrorKind};

pub use record::{DrPhase, DrState, ReplPosition, ShardPosition};
pub use run::{DrEvent, DrEvents, DrHandle, DrRunStatus};

use record::{Fill, Record};
use side::Deploy;

/// One side of a pair: a standalone server, a sentinel-managed group or a cluster. Serde: tagged by `type`,
/// like [`Source`] and [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Deployment {
    /// One server.
    Standalone(Endpoint),
    /// A Redis Cluster (7.0+), by any of its nodes (not supported by the pair yet).
    Cluster {
        /// Any nodes of the cluster.
        seeds: Vec<Endpoint>,
    },
    /// A sentinel-managed group.
    Sentinel {
        /// The sentinels.
        sentinels: Vec<Endpoint>,
        /// The master name the sentinels monitor.
        master: String,
        /// Credentials of the master.
        #[serde(default)]
        master_auth: MasterAuth,
    },
}

impl Deployment {
    /// A standalone server at `url`.
    pub fn standalone(url: impl Into<String>) -> Deployment {
        Deployment::Standalone(Endpoint::new(url))
    }

    /// A sentinel-managed group: the sentinels' URLs and the master name.
    pub fn sentinel(sentinels: &[&str], master: impl Into<String>) -> Deployment {
        Deployment::Sentinel {
            sentinels: sentinels.iter().map(|s| Endpoint::new(*s)).collect(),
            master: master.into(),
            master_auth: MasterAuth::default(),
        }
    }

    /// A cluster reached through `url`.
    pub fn cluster(url: impl Into<String>) -> Deployment {
        Deployment::Cluster {
            seeds: vec![Endpoint::new(url)],
        }
    }

    /// The deployment as the source of a sync job.
    pub fn as_source(&self) -> Source {
        match self {
            Deployment::Standalone(e) => Source::Standalone(e.clone()),
            Deployment::Cluster { seeds } => Source::Cluster {
                seeds: seeds.clone(),
                shards: None,
                prefer_replica: false,
            },
            Deployment::Sentinel {
                sentinels,
                master,
                master_auth,
            } => Source::Sentinel {
                sentinels: sentinels.clone(),
                master: master.clone(),
                master_auth: master_auth.clone(),
            },
        }
    }

    /// The deployment as the target of a sync job.
    pub fn as_target(&self) -> Target {
        match self {
            Deployment::Standalone(e) => Target::Standalone(e.clone()),
            Deployment::Cluster { seeds } => Target::Cluster {
                seeds: seeds.clone(),
            },
            Deployment::Sentinel {
                sentinels,
                master,
                master_auth,
            } => Target::Sentinel {
                sentinels: sentinels.clone(),
                master: master.clone(),
                master_auth: master_auth.clone(),
            },
        }
    }

    /// The serde tag of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Deployment::Standalone(_) => "standalone",
            Deployment::Cluster { .. } => "cluster",
            Deployment::Sentinel { .. } => "sentinel",
        }
    }

    /// A short description without secrets.
    pub fn describe(&self) -> String {
        self.as_target().describe()
    }
}

/// The two sides of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The primary deployment.
    A,
    /// The standby deployment.
    B,
}

impl Side {
    /// `a` or `b`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

/// Which way a pair's job copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A -> B (normal).
    AToB,
    /// B -> A (recovering).
    BToA,
}

impl Direction {
    /// `a_to_b` or `b_to_a`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::AToB => "a_to_b",
            Direction::BToA => "b_to_a",
        }
    }

    /// The tag of this direction's checkpoint key for pair `name`.
    pub fn checkpoint_tag(&self, name: &str) -> String {
        match self {
            Direction::AToB => format!("dr-{name}-ab"),
            Direction::BToA => format!("dr-{name}-ba"),
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::AToB => "A -> B",
            Direction::BToA => "B -> A",
        })
    }
}

/// A pair's configuration (serde: ferry's TOML schema under `[dr]`-less top level, or JSON from the bindings).
///
/// ```toml
/// name = "orders"
/// [a]
/// type = "standalone"
/// url = "redis://10.0.0.1:6379"
/// [b]
/// type = "sentinel"
/// sentinels = ["redis://10.0.1.1:26379", "redis://10.0.1.2:26379"]
/// master = "orders"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DrConfig {
    /// The pair's name: names the state record `ferry:state:{dr-<name>}` and the checkpoint keys.
    pub name: String,
    /// The primary deployment.
    pub a: Deployment,
    /// The standby deployment.
    pub b: Deployment,
    /// Windows, batches, timeouts of the jobs the pair runs.
    #[serde(default)]
    pub limits: Limits,
    /// Timings of the calls.
    #[serde(default)]
    pub timing: DrTiming,
}

/// How long the calls of a pair wait, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DrTiming {
    /// `failover` with A still answering: how long to wait for B to receive everything A has.
    pub failover_drain_ms: u64,
    /// `switchback`: how long to wait for A to come within `switchback_lag_bytes` of B before pausing B.
    pub catch_up_timeout_ms: u64,
    /// `switchback`: the pause starts once A is at most this many bytes of B's stream behind.
    pub switchback_lag_bytes: u64,
    /// `switchback`: the longest write pause on B (the `CLIENT PAUSE` timeout); if A has not drained by then
    /// the call unpauses B and fails, and can be called again.
    pub max_pause_ms: u64,
    /// Every wait for a server to answer (connect and reply).
    pub connect_timeout_ms: u64,
}

impl Default for DrTiming {
    fn default() -> Self {
        DrTiming {
            failover_drain_ms: 5_000,
            catch_up_timeout_ms: 120_000,
            switchback_lag_bytes: 64 * 1024,
            max_pause_ms: 5_000,
            connect_timeout_ms: 3_000,
        }
    }
}

impl DrConfig {
    /// A pair named `name` with the default limits and timings.
    pub fn new(name: impl Into<String>, a: Deployment, b: Deployment) -> DrConfig {
        DrConfig {
            name: name.into(),
            a,
            b,
            limits: Limits::default(),
            timing: DrTiming::default(),
        }
    }

    /// Sets the timings.
    pub fn with_timing(mut self, timing: DrTiming) -> DrConfig {
        self.timing = timing;
        self
    }

    /// Sets the limits of the jobs.
    pub fn with_limits(mut self, limits: Limits) -> DrConfig {
        self.limits = limits;
        self
    }

    /// Reads the TOML form. A side without `type` is the kind its keys imply (`url`: standalone, `sentinels`:
    /// sentinel, `seeds`: cluster).
    pub fn from_toml_str(text: &str) -> Result<DrConfig, Error> {
        let c: DrConfig = crate::config::file::toml_with_implied_types(text, &["a", "b"])
            .map_err(|e| Error::config(format!("invalid DR configuration: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a TOML file; errors name the file.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<DrConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        DrConfig::from_toml_str(&text).map_err(|e| e.context(path.display()))
    }

    /// Reads the JSON form (what the bindings pass).
    pub fn from_json_str(text: &str) -> Result<DrConfig, Error> {
        let invalid =
            |e: serde_json::Error| Error::config(format!("invalid DR configuration: {e}"));
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
        crate::config::file::add_implied_json_types(&mut value, &["a", "b"]);
        let c: DrConfig = serde_json::from_value(value).map_err(invalid)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Error::config(format!(
                "dr: the name {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        for (side, d) in [(Side::A, &self.a), (Side::B, &self.b)] {
            match d {
                Deployment::Cluster { seeds } if seeds.is_empty() => {
                    return Err(Error::config(format!(
                        "dr: {side} is a cluster without seeds"
                    )))
                }
                Deployment::Sentinel {
                    sentinels, master, ..
                } if sentinels.is_empty() || master.is_empty() => {
                    return Err(Error::config(format!(
                        "dr: {side} is a sentinel group without sentinels or master name"
                    )))
                }
                _ => {}
            }
        }
        if self.a == self.b {
            return Err(Error::config("dr: A and B are the same deployment"));
        }
        Ok(())
    }

    fn deployment(&self, side: Side) -> &Deployment {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

/// What [`DrPair::status`] finds: the pair's state and what to do next (serde, for `ferry dr status --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DrStatus {
    /// The pair's name.
    pub name: String,
    /// The newest record of the two sides (`None` before `init`).
    pub state: Option<DrState>,
    /// The phase (`uninitialized` before `init`).
    pub phase: DrPhase,
    /// The current epoch (0 before `init`).
    pub epoch: u64,
    /// The side that takes writes.
    pub primary: Side,
    /// The job that runs in this phase (`None` after a failover, until recover).
    pub direction: Option<Direction>,
    /// The epoch of the record on A; `None` when A did not answer or holds none.
    pub a_epoch: Option<u64>,
    /// The epoch of the record on B; `None` when B did not answer or holds none.
    pub b_epoch: Option<u64>,
    /// Why A could not be read, if it could not.
    pub a_error: Option<String>,
    /// Why B could not be read, if it could not.
    pub b_error: Option<String>,
    /// The next call, for humans (`ferry dr ...`).
    pub next: String,
}

/// What `recover` may do when it cannot continue incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoverChoice {
    /// Only an incremental recover (refused when A has writes B never received, or B's backlog lost the
    /// failover point).
    #[default]
    None,
    /// B's data wins: A is emptied and gets a full copy of B (A's extra writes are lost).
    BWins,
    /// Do nothing: B keeps serving, A stays as it is.
    Abort,
}

impl std::str::FromStr for RecoverChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<RecoverChoice, Error> {
        match s {
            "none" => Ok(RecoverChoice::None),
            "b_wins" | "b-wins" => Ok(RecoverChoice::BWins),
            "abort" => Ok(RecoverChoice::Abort),
            other => Err(Error::config(format!(
                "recover choice {other:?}: expected none, b_wins or abort"
            ))),
        }
    }
}

/// How `recover` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoverOutcome {
    /// B -> A continues B's stream from the failover point (no full copy).
    Incremental,
    /// A was emptied; B -> A starts with a full copy.
    FullCopy,
    /// Nothing was changed: A has writes B never received, or B cannot continue from the failover point.
    /// [`RecoverReport::reason`] says which; call again with [`RecoverChoice::BWins`] or `Abort`.
    Refused,
    /// Nothing was changed, as asked.
    Aborted,
}

/// What `recover` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecoverReport {
    /// How it ended.
    pub outcome: RecoverOutcome,
    /// Writes A holds beyond what B received (counted in A's stream after the RPO); `None` when A's stream
    /// could not be read from there (A restarted with another history, or its backlog no longer holds it).
    pub extra_writes_on_a: Option<u64>,
    /// Whether B's backlog still holds the failover point (`None` when not asked).
    pub b_backlog_holds: Option<bool>,
    /// Why it was refused, or a note about what was done.
    pub reason: String,
    /// The epoch after the call.
    pub epoch: u64,
}

/// What `failover` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailoverReport {
    /// The RPO: the last position of A's stream B had applied (`None` when B held no A -> B checkpoint).
    pub rpo: Option<ReplPosition>,
    /// B's own replication position at the failover (where B -> A continues from).
    pub b_position: ReplPosition,
    /// Bytes of A's stream B had not applied when the failover happened (`None` when A did not answer).
    pub lag_bytes: Option<u64>,
    /// The epoch after the call.
    pub epoch: u64,
    /// False when this call found the failover already done (a retry).
    pub changed: bool,
}

/// What `switchback` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SwitchbackReport {
    /// How long writes on B were paused, in milliseconds (`None` when this call found the switch done).
    pub write_pause_ms: Option<u64>,
    /// Where the A -> B job continues A's stream.
    pub a_position: ReplPosition,
    /// The epoch after the call.
    pub epoch: u64,
    /// False when this call found the switchback already done (a retry, or another process did it).
    pub changed: bool,
    /// Acknowledged writes B took after A took over, which A does not have: only after a switchback that died
    /// between moving A's record and disconnecting B's clients, finished after B's pause ran out, on a B that
    /// could not be fenced (see the module documentation and
    /// [`DrState::writes_on_b_after_switch`]).
    pub writes_on_b_after_switch: Option<u64>,
}

/// A disaster-recovery pair: the state record, the four calls, and the job of the current direction.
#[derive(Debug, Clone)]
pub struct DrPair {
    config: DrConfig,
}

/// Right after the switch on A: B refuses writes until the switch is finished (see `Deploy::fence_writes`), so a
/// call that dies now, found only after B's pause ran out, leaves no write on B that A lacks. A failure is
/// logged: the pause still holds B, as it did before the fence existed.
async fn fence_b_after_switch(b: &mut Deploy) {
    if let Err(e) = b.fence_writes().await {
        tracing::warn!(error = %e, "switchback: B could not be fenced after the switch; only its pause holds its writes");
    }
}

impl DrPair {
    /// Checks the configuration (without connecting).
    pub fn new(config: DrConfig) -> Result<DrPair, Error> {
        config.validate()?;
        Ok(DrPair { config })
    }

    /// The configuration.
    pub fn config(&self) -> &DrConfig {
        &self.config
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timing.connect_timeout_ms.max(100))
    }

    async fn open(&self, side: Side) -> Result<Deploy, Error> {
        Deploy::open(
            self.config.deployment(side),
            side,
            &self.config.name,
            self.timeout(),
        )
        .await
    }

    /// Reads the records of both sides: (newest, A's, B's, A's error, B's error).
    async fn read_both(&self) -> Both {
        let (a, b) = tokio::join!(self.read_side(Side::A), self.read_side(Side::B));
        let (a_rec, a_err) = split(a);
        let (b_rec, b_err) = split(b);
        let newest = match (&a_rec, &b_rec) {
            // On a tie B's copy may know more (the switchback's pause is written with B's record).
            (Some(x), Some(y)) => Some(if y.epoch >= x.epoch {
                y.clone()
            } else {
                x.clone()
            }),
            (Some(x), None) => Some(x.clone()),
            (None, Some(y)) => Some(y.clone()),
            (None, None) => None,
        };
        Both {
            newest,
            a: a_rec,
            b: b_rec,
            a_err,
            b_err,
        }
    }

    async fn read_side(&self, side: Side) -> Result<Option<Record>, Error> {
        let mut d = self.open(side).await?;
        d.read_record().await
    }

    /// Where the pair is and what the next call is. Reads both sides; a side that does not answer is reported,
    /// not an error (unless neither answers).
    pub async fn status(&self) -> Result<DrStatus, Error> {
        let both = self.read_both().await;
        if both.a_err.is_some() && both.b_err.is_some() {
            return Err(Error::new(
                ErrorKind::Connection,
                format!(
                    "neither side answers: A: {}; B: {}",
                    both.a_err.unwrap_or_default(),
                    both.b_err.unwrap_or_default()
                ),
            ));
        }
        Ok(self.status_of(&both))
    }

    fn status_of(&self, both: &Both) -> DrStatus {
        let state = both.newest.as_ref().map(Record::public);
        let phase = state.as_ref().map_or(DrPhase::Uninitialized, |s| s.phase);
        let epoch = state.as_ref().map_or(0, |s| s.epoch);
        let a_epoch = both.a.as_ref().map(|r| r.epoch);
        let b_epoch = both.b.as_ref().map(|r| r.epoch);
        let behind = |e: Option<u64>| e.is_some_and(|e| e < epoch) || e.is_none();
        let mut next = match phase {
            DrPhase::Uninitialized => "init".to_string(),
            DrPhase::Normal => "run (A -> B); failover when A is lost".to_string(),
            DrPhase::FailedOver => "recover once A is back".to_string(),
            DrPhase::Recovering => {
                "switchback once A has caught up (run keeps B -> A going)".to_string()
            }
        };
        if phase != DrPhase::Uninitialized {
            let lagging: Vec<&str> = [("A", a_epoch, &both.a_err), ("B", b_epoch, &both.b_err)]
                .into_iter()
                .filter(|(_, e, err)| err.is_none() && behind(*e))
                .map(|(n, _, _)| n)
                .collect();
            if !lagging.is_empty() {
                let call = match phase {
                    DrPhase::Normal if epoch > 1 => "switchback",
                    DrPhase::Normal => "init",
                    DrPhase::FailedOver => "failover",
                    DrPhase::Recovering => "recover",
                    DrPhase::Uninitialized => "init",
                };
                next = format!(
                    "{call} again: the record on {} is behind (an interrupted call); then {next}",
                    lagging.join(" and ")
                );
            }
        }
        DrStatus {
            name: self.config.name.clone(),
            primary: phase.primary(),
            direction: phase.direction(),
            state,
            phase,
            epoch,
            a_epoch,
            b_epoch,
            a_error: both.a_err.clone(),
            b_error: both.b_err.clone(),
            next,
        }
    }

    /// Writes the first record (`normal`, epoch 1) on both sides; the A -> B job of [`DrPair::run`] then does
    /// the full copy. Idempotent: a pair already initialized is left as it is (a side missing its record gets
    /// it). Refused when B holds data of its own (keys other than ferry's), which the full copy would mix with A's.
    pub async fn init(&self) -> Result<DrStatus, Error> {
        let both = self.read_both().await;
        if let Some(e) = both.a_err.as_ref().or(both.b_err.as_ref()) {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("init needs both sides: {e}"),
            ));
        }
        let record = match &both.newest {
            Some(r) => r.clone(),
            None => {
                let mut b = self.open(Side::B).await?;
                let keys = b.user_keys().await?;
                if keys > 0 {
                    return Err(Error::new(
                        ErrorKind::TargetRefused,
                        format!("init: B holds {keys} keys of its own; empty it first (the A -> B full copy would mix them with A's)"),
                    ));
                }
                Record::new(1, DrPhase::Normal)
            }
        };
        for side in [Side::A, Side::B] {
            let mut d = self.open(side).await?;
            d.transition(&record, &[], Fill::default()).await?;
        }
        self.status().await
    }

    /// Fences A -> B and makes B the primary (A is lost, or an operator decides). Records the RPO and B's
    /// position. When A still answers, first waits up to `timing.failover_drain_ms` for B to have applied
    /// everything A has. Idempotent.
    pub async fn failover(&self) -> Result<FailoverReport, Error> {
        let mut attempt = 0;
        loop {
            match self.failover_once().await {
                Err(e) if retry_after_connection_loss(&e, &mut attempt).await => continue,
                other => return other,
            }
        }
    }

    async fn failover_once(&self) -> Result<FailoverReport, Error> {
        let both = self.read_both().await;
        if let Some(e) = &both.b_err {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("failover needs B: {e}"),
            ));
        }
        let Some(current) = both.newest.clone() else {
            return Err(Error::config(
                "failover: the pair is not initialized (call init)",
            ));
        };
        if current.phase != DrPhase::Normal {
            if current.phase == DrPhase::FailedOver {
                // Done already: bring the side that lags up to date.
                self.copy_record_to(&current, &both).await;
                return Ok(FailoverReport {
                    rpo: current.rpo.clone(),
                    b_position: current.b_position.clone().unwrap_or_default(),
                    lag_bytes: None,
                    epoch: current.epoch,
                    changed: false,
                });
            }
            return Err(Error::config(format!(
                "failover: the pair is {} (B already serves)",
                current.phase
            )));
        }
        let tag = Direction::AToB.checkpoint_tag(&self.config.name);
        // A planned failover: let B receive what A has.
        let mut lag_bytes = None;
        if both.a_err.is_none() {
            if let Ok(a) = self.open(Side::A).await {
                if let Ok(targets) = a.positions().await {
                    let deadline = Instant::now()
                        + Duration::from_millis(self.config.timing.failover_drain_ms);
                    loop {
                        let b = self.open(Side::B).await?;
                        let held = b.checkpoint_entries(&tag).await?;
                        let lag = lag_behind(&targets, &held);
                        lag_bytes = Some(lag);
                        if lag == 0 || Instant::now() >= deadline {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        let mut next = Record::new(current.epoch + 1, DrPhase::FailedOver);
        next.history = current.history.clone();
        let mut b = self.open(Side::B).await?;
        // B's writes from the failover on must stay readable from B's stream (recover continues from it).
        b.ensure_backlog(self.timeout()).await?;
        let outcome = if b.is_cluster() {
            // Key by key (keys of other slots cannot share a script); each fence keeps the position it
            // replaced, so a retry after a crash here still knows the RPO. Then B's masters' positions (nothing
            // writes to B yet: the record still names A), then the record.
            let rpos = b.fence_keeping_positions(&tag, next.epoch).await?;
            tracing::info!(
                step = "failover_fenced_cluster_b",
                epoch = next.epoch,
                "failover: A -> B fenced on every master of B; B's positions and record next"
            );
            next.rpo = rpos.first().map(ShardPosition::position);
            next.rpo_shards = rpos;
            for (id, at, _) in b.positions().await? {
                next.b_positions.push(ShardPosition {
                    shard: id,
                    replid: at.replid,
                    offset: at.offset,
                });
            }
            next.b_position = next.b_positions.first().map(ShardPosition::position);
            b.transition(&next, &[], Fill::default()).await?
        } else {
            let fence =
                ferry_replicator::checkpoint::Checkpoint::Fenced { epoch: next.epoch }.encode();
            // Every checkpoint of A -> B (one per A shard for a cluster A), and the job's plain key even when absent
            // (a job started later finds the fence).
            let mut keys = vec![(
                ferry_replicator::checkpoint::key_name(&tag),
                Some(fence.clone()),
            )];
            for (_, key, _) in b.checkpoint_entries(&tag).await? {
                if key != keys[0].0 {
                    keys.push((key, Some(fence.clone())));
                }
            }
            // The shards' keys first: the RPO of a one-server A is its plain key.
            keys.rotate_left(1);
            b.transition(
                &next,
                &keys,
                Fill {
                    rpo: true,
                    position: Some("b_position"),
                    flush: false,
                },
            )
            .await?
        };
        let stored = match outcome {
            Transition::Applied { record, .. } => {
                tracing::info!(
                    step = "failover_written_on_b",
                    epoch = record.epoch,
                    "failover: B's record moved (B serves); A's record next"
                );
                record
            }
            Transition::Lost { stored } => {
                // Another process moved the record first.
                if stored.phase != DrPhase::FailedOver {
                    return Err(Error::new(
                        ErrorKind::Fenced,
                        format!(
                            "failover: another call moved the pair to {} at epoch {}",
                            stored.phase, stored.epoch
                        ),
                    ));
                }
                stored
            }
        };
        let both = self.read_both().await;
        self.copy_record_to(&stored, &both).await;
        Ok(FailoverReport {
            rpo: stored.rpo.clone(),
            b_position: stored.b_position.clone().unwrap_or_default(),
            lag_bytes,
            epoch: stored.epoch,
            changed: true,
        })
    }

    /// Writes B's changes since the failover back to A (see the module documentation). Idempotent: once the
    /// pair is recovering, a retry returns at once.
    pub async fn recover(&self, choice: RecoverChoice) -> Result<RecoverReport, Error> {
        let mut attempt = 0;
        loop {
            match self.recover_once(choice).await {
                Err(e) if retry_after_connection_loss(&e, &mut attempt).await => continue,
                other => return other,
            }
        }
    }

    async fn recover_once(&self, choice: RecoverChoice) -> Result<RecoverReport, Error> {
        let both = self.read_both().await;
        for (side, err) in [(Side::A, &both.a_err), (Side::B, &both.b_err)] {
            if let Some(e) = err {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("recover needs both sides; {side}: {e}"),
                ));
            }
        }
        let Some(current) = both.newest.clone() else {
            return Err(Error::config(
                "recover: the pair is not initialized (call init)",
            ));
        };
        match current.phase {
            DrPhase::FailedOver => {}
            DrPhase::Recovering => {
                self.copy_record_to(&current, &both).await;
                return Ok(RecoverReport {
                    outcome: current.recover_mode.unwrap_or(RecoverOutcome::Incremental),
                    extra_writes_on_a: current.extra_writes_on_a,
                    b_backlog_holds: None,
                    reason: "the pair is recovering already".into(),
                    epoch: current.epoch,
                });
            }
            other => {
                return Err(Error::config(format!(
                    "recover: the pair is {other}; recover follows a failover"
                )))
            }
        }
        if choice == RecoverChoice::Abort {
            return Ok(RecoverReport {
                outcome: RecoverOutcome::Aborted,
                extra_writes_on_a: None,
                b_backlog_holds: None,
                reason: "aborted: nothing changed, B keeps serving".into(),
                epoch: current.epoch,
            });
        }
        let mut a = self.open(Side::A).await?;
        // What does A hold beyond the RPO?
        let extra = if current.rpo_shards.is_empty() {
            None
        } else {
            let mut total = Some(0u64);
            for shard in &current.rpo_shards {
                let at = ReplPosition {
                    replid: shard.replid.clone(),
                    offset: shard.offset,
                };
                match a.count_writes_since(&at, self.timeout()).await? {
                    Some(n) => total = total.map(|t| t + n),
                    None => total = None,
                }
            }
            total
        };
        let a_keys = a.user_keys().await?;
        let b_pos = current.b_position.clone().unwrap_or_default();
        // Where B -> A continues: B's position, or each B master's for a cluster B (one stream per B shard,
        // its checkpoint in A tagged with the shard's node id, as the cluster source names shards).
        let ba_tag = Direction::BToA.checkpoint_tag(&self.config.name);
        let from_b: Vec<(String, String, ReplPosition)> = if current.b_positions.is_empty() {
            vec![(String::new(), ba_tag.clone(), b_pos.clone())]
        } else {
            current
                .b_positions
                .iter()
                .map(|p| {
                    (
                        p.shard.clone(),
                        format!("{ba_tag}:{}", p.shard),
                        p.position(),
                    )
                })
                .collect()
        };
        let holds = {
            let mut b = self.open(Side::B).await?;
            let mut all = true;
            for (id, _, at) in &from_b {
                all &= b.backlog_holds_on(id, at, self.timeout()).await?;
            }
            all
        };
        let incremental_ok = extra == Some(0) && holds;
        let reason = if incremental_ok {
            "A holds nothing beyond what B received: B -> A continues from the failover point"
                .to_string()
        } else {
            let mut why = Vec::new();
            match extra {
                Some(0) => {}
                Some(n) => why.push(format!("A has {n} writes that B never received")),
                None => why.push(format!(
                    "A's stream since the failover point cannot be read (A restarted with another history, or its backlog lost it); A holds {a_keys} keys"
                )),
            }
            if !holds {
                why.push(format!(
                    "B's backlog no longer holds the failover point (B offset {}): only a full copy can recover A",
                    b_pos.offset
                ));
            }
            why.join("; ")
        };
        let next_epoch = current.epoch + 1;
        let mut next = Record::new(next_epoch, DrPhase::Recovering);
        next.history = current.history.clone();
        next.rpo = current.rpo.clone();
        next.rpo_shards = current.rpo_shards.clone();
        next.b_position = current.b_position.clone();
        next.b_positions = current.b_positions.clone();
        next.extra_writes_on_a = extra;
        let seed = |at: &ReplPosition| {
            let mut p =
                ferry_replicator::checkpoint::Position::new(at.replid.clone(), at.offset, 0);
            p.epoch = next_epoch;
            ferry_replicator::checkpoint::Checkpoint::Committed(p).encode()
        };
        let flush = if incremental_ok {
            next.recover_mode = Some(RecoverOutcome::Incremental);
            false
        } else if choice == RecoverChoice::BWins {
            next.recover_mode = Some(RecoverOutcome::FullCopy);
            true
        } else {
            return Ok(RecoverReport {
                outcome: RecoverOutcome::Refused,
                extra_writes_on_a: extra,
                b_backlog_holds: Some(holds),
                reason: format!("{reason}; call recover with b_wins (A is emptied and gets a full copy of B) or abort"),
                epoch: current.epoch,
            });
        };
        let outcome = if a.is_cluster() {
            // Per master, then the record: the B -> A job starts when the record says so, with every seed there.
            if flush {
                a.flush_all().await?;
            } else {
                for (_, tag, at) in &from_b {
                    a.seed_cluster_checkpoints(tag, at, next_epoch, false)
                        .await?;
                }
            }
            tracing::info!(
                step = "recover_prepared_cluster_a",
                epoch = next_epoch,
                flushed = flush,
                "recover: A's masters are seeded (or emptied); A's record next"
            );
            a.transition(&next, &[], Fill::default()).await?
        } else {
            let keys: Vec<(String, Option<String>)> = from_b
                .iter()
                .map(|(_, tag, at)| {
                    (
                        ferry_replicator::checkpoint::key_name(tag),
                        (!flush).then(|| seed(at)),
                    )
                })
                .collect();
            a.transition(
                &next,
                &keys,
                Fill {
                    flush,
                    ..Fill::default()
                },
            )
            .await?
        };
        let stored = match outcome {
            Transition::Applied { record, .. } => {
                tracing::info!(
                    step = "recover_written_on_a",
                    epoch = record.epoch,
                    "recover: A's record moved (B -> A may start); B's record next"
                );
                record
            }
            Transition::Lost { stored } if stored.phase == DrPhase::Recovering => stored,
            Transition::Lost { stored } => {
                return Err(Error::new(
                    ErrorKind::Fenced,
                    format!(
                        "recover: another call moved the pair to {} at epoch {}",
                        stored.phase, stored.epoch
                    ),
                ))
            }
        };
        let both = self.read_both().await;
        self.copy_record_to(&stored, &both).await;
        Ok(RecoverReport {
            outcome: stored.recover_mode.unwrap_or(RecoverOutcome::Incremental),
            extra_writes_on_a: extra,
            b_backlog_holds: Some(holds),
            reason,
            epoch: stored.epoch,
        })
    }

    /// Switches back to A (see the module documentation): waits for A to catch up, pauses writes on B, drains,
    /// fences B -> A, seeds A -> B at A's position, disconnects B's clients, unpauses. Needs the B -> A job running
    /// ([`DrPair::run`], here or in another process). Idempotent; two processes calling it at once both return
    /// the one switch that happened.
    pub async fn switchback(&self) -> Result<SwitchbackReport, Error> {
        let mut attempt = 0;
        // Set once this call has switched: a retry (B's connection cut while finishing) still reports the pause.
        let mut switched = None;
        loop {
            match self.switchback_once(&mut switched).await {
                Err(e) if retry_after_connection_loss(&e, &mut attempt).await => continue,
                other => return other,
            }
        }
    }

    async fn switchback_once(
        &self,
        switched: &mut Option<Duration>,
    ) -> Result<SwitchbackReport, Error> {
        let both = self.read_both().await;
        for (side, err) in [(Side::A, &both.a_err), (Side::B, &both.b_err)] {
            if let Some(e) = err {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("switchback needs both sides; {side}: {e}"),
                ));
            }
        }
        let Some(current) = both.newest.clone() else {
            return Err(Error::config(
                "switchback: the pair is not initialized (call init)",
            ));
        };
        match current.phase {
            DrPhase::Recovering => {}
            DrPhase::Normal if current.a_seed.is_some() || !current.a_seeds.is_empty() => {
                // Done (here or by another process, maybe interrupted before B got its record and seed).
                return self.finish_switchback(current, *switched).await;
            }
            other => {
                return Err(Error::config(format!(
                    "switchback: the pair is {other}; switchback follows recover"
                )))
            }
        }
        let tag = Direction::BToA.checkpoint_tag(&self.config.name);
        let t = &self.config.timing;
        // 1. A catches up (the B -> A job runs elsewhere).
        let deadline = Instant::now() + Duration::from_millis(t.catch_up_timeout_ms);
        loop {
            let b = self.open(Side::B).await?;
            let b_at = b.positions().await?;
            let mut a = self.open(Side::A).await?;
            if let Some(moved) = self.moved_on(&mut a, current.epoch).await? {
                return self.finish_switchback(moved, *switched).await;
            }
            let lag = a_lag(&mut a, &tag, b.is_cluster(), &b_at).await?;
            if lag <= t.switchback_lag_bytes {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Stopped,
                    format!(
                        "switchback: A is still {} bytes behind B after {} ms; is the B -> A job running (ferry dr run)?",
                        lag,
                        t.catch_up_timeout_ms
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The A -> B job will continue A's stream from the position recorded at the switch.
        self.open(Side::A)
            .await?
            .ensure_backlog(self.timeout())
            .await?;
        // 2. Pause writes on B, drain the last offset to A.
        let mut b = self.open(Side::B).await?;
        let paused_at = Instant::now();
        b.pause_writes(t.max_pause_ms).await?;
        tracing::info!(
            max_ms = t.max_pause_ms,
            "writes on B paused; draining B's last offset to A"
        );
        let result = self
            .switch_while_paused(&mut b, &current, &tag, paused_at)
            .await;
        match result {
            Ok((record, won)) => {
                // 4. Clients blocked on B never ran their writes: disconnect them, then lift the fence, unpause.
                b.kill_clients().await.ok();
                b.unfence_writes().await.ok();
                b.unpause().await.ok();
                let pause = paused_at.elapsed();
                tracing::info!(
                    pause_ms = pause.as_millis() as u64,
                    "writes on B unpaused; A serves"
                );
                if won {
                    *switched = Some(pause);
                }
                self.finish_switchback(record, *switched).await
            }
            // (A fence set after the switch on A stays: whoever finishes the switch lifts it.)
            Err(e) => {
                b.unpause().await.ok();
                Err(e)
            }
        }
    }

    /// Steps of the switchback while B is paused: drain, then the one script on A.
    async fn switch_while_paused(
        &self,
        b: &mut Deploy,
        current: &Record,
        tag: &str,
        paused_at: Instant,
    ) -> Result<(Record, bool), Error> {
        let last = b.positions().await?;
        let limit =
            Duration::from_millis(self.config.timing.max_pause_ms.saturating_sub(200).max(100));
        loop {
            let mut a = self.open(Side::A).await?;
            if let Some(moved) = self.moved_on(&mut a, current.epoch).await? {
                return Ok((moved, false));
            }
            let lag = a_lag(&mut a, tag, b.is_cluster(), &last).await?;
            if lag == 0 {
                break;
            }
            if paused_at.elapsed() >= limit {
                return Err(Error::new(
                    ErrorKind::Stopped,
                    format!(
                        "switchback: A did not apply B's last writes within the pause ({lag} bytes behind); B was unpaused, call switchback again"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // 3. On A: the record moves to normal, B -> A is fenced, A's position is where A -> B continues.
        let mut next = Record::new(current.epoch + 1, DrPhase::Normal);
        next.history = current.history.clone();
        next.b_drained = last
            .iter()
            .map(|(id, at, _)| ShardPosition {
                shard: id.clone(),
                replid: at.replid.clone(),
                offset: at.offset,
            })
            .collect();
        next.history.push(format!(
            "epoch {}: recovered from B up to {}",
            current.epoch,
            last.iter()
                .map(|(_, p, _)| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let fence = ferry_replicator::checkpoint::Checkpoint::Fenced { epoch: next.epoch }.encode();
        let mut a = self.open(Side::A).await?;
        // One-server A: every B -> A checkpoint (one per B shard for a cluster B) and the plain key.
        let mut fence_keys = vec![(
            ferry_replicator::checkpoint::key_name(tag),
            Some(fence.clone()),
        )];
        if !a.is_cluster() {
            for (_, key, _) in a.checkpoint_entries(tag).await? {
                if key != fence_keys[0].0 {
                    fence_keys.push((key, Some(fence.clone())));
                }
            }
        }
        let outcome = if a.is_cluster() {
            // Every master's position while nothing writes to A (B is paused and drained), then the record, then
            // the fences (finish_switchback fences again: a retry after a crash here completes it).
            for (id, at, _) in a.positions().await? {
                next.a_seeds.push(ShardPosition {
                    shard: id,
                    replid: at.replid,
                    offset: at.offset,
                });
            }
            let outcome = a.transition(&next, &[], Fill::default()).await?;
            if matches!(outcome, Transition::Applied { .. }) {
                fence_b_after_switch(b).await;
                tracing::info!(
                    step = "switchback_record_on_cluster_a",
                    epoch = next.epoch,
                    "switchback: A's record moved; B -> A fences on A's masters next"
                );
                a.overwrite_checkpoints(tag, &fence).await?;
            }
            outcome
        } else {
            a.transition(
                &next,
                &fence_keys,
                Fill {
                    position: Some("a_seed"),
                    ..Fill::default()
                },
            )
            .await?
        };
        match outcome {
            Transition::Applied { record, .. } => {
                if !a.is_cluster() {
                    fence_b_after_switch(b).await;
                }
                tracing::info!(
                    step = "switchback_switched_on_a",
                    epoch = record.epoch,
                    "switchback: A's record moved (A serves); B's clients are disconnected next"
                );
                Ok((record, true))
            }
            Transition::Lost { stored } if stored.phase == DrPhase::Normal => Ok((stored, false)),
            Transition::Lost { stored } => Err(Error::new(
                ErrorKind::Fenced,
                format!(
                    "switchback: another call moved the pair to {} at epoch {}",
                    stored.phase, stored.epoch
                ),
            )),
        }
    }

    /// The last step of a switchback, also what a retry does: B gets the record and the A -> B checkpoint seeded at
    /// A's position (unless a newer epoch is there already).
    async fn finish_switchback(
        &self,
        record: Record,
        pause: Option<Duration>,
    ) -> Result<SwitchbackReport, Error> {
        use ferry_replicator::checkpoint::{key_name, Checkpoint, Position};
        let tag = Direction::AToB.checkpoint_tag(&self.config.name);
        let mut b = self.open(Side::B).await?;
        let mut record = record;
        if pause.is_none() {
            if let Some(n) = self
                .disconnect_b_after_interrupted_switch(&mut b, &record)
                .await?
            {
                record.writes_on_b_after_switch = Some(n);
            }
        }
        // B's clients are gone (or this call cut them): B takes writes again, from the A -> B job.
        b.unfence_writes().await?;
        let epoch = record.epoch;
        let seed = |at: &ReplPosition| {
            let mut p = Position::new(at.replid.clone(), at.offset, 0);
            p.epoch = epoch;
            Checkpoint::Committed(p).encode()
        };
        if b.is_cluster() {
            return self
                .finish_switchback_cluster_b(&mut b, record, pause)
                .await;
        }
        // The A -> B checkpoints: the plain key for a one-server A, one per shard (named by its master's node id,
        // as the cluster source names a new shard) for a cluster A; whatever else B holds for A -> B is removed.
        let mut keys: Vec<(String, Option<String>)> = b
            .checkpoint_entries(&tag)
            .await?
            .into_iter()
            .map(|(_, key, _)| (key, None))
            .collect();
        let seed_at = if record.a_seeds.is_empty() {
            let at = record
                .a_seed
                .clone()
                .ok_or_else(|| Error::data("switchback: the record has no A position"))?;
            keys.push((key_name(&tag), Some(seed(&at))));
            at
        } else {
            // The B -> A fences on A's masters (again, for a retry after a crash between the record and them).
            let fence = Checkpoint::Fenced {
                epoch: record.epoch,
            }
            .encode();
            self.open(Side::A)
                .await?
                .overwrite_checkpoints(&Direction::BToA.checkpoint_tag(&self.config.name), &fence)
                .await?;
            for s in &record.a_seeds {
                let at = ReplPosition {
                    replid: s.replid.clone(),
                    offset: s.offset,
                };
                keys.push((key_name(&format!("{tag}:{}", s.shard)), Some(seed(&at))));
            }
            record
                .a_seeds
                .first()
                .map(|s| ReplPosition {
                    replid: s.replid.clone(),
                    offset: s.offset,
                })
                .unwrap_or_default()
        };
        let mut written = record.clone();
        if let Some(p) = pause {
            written.switchback_pause_ms = Some(p.as_millis() as u64);
        }
        // The seed goes with the record: a retry after it finds the record's epoch and leaves B's checkpoint
        // (maybe moved on by the A -> B job since) alone.
        let after_switch = match b.transition(&written, &keys, Fill::default()).await? {
            Transition::Applied { record } | Transition::Lost { stored: record } => {
                record.writes_on_b_after_switch
            }
        };
        Ok(SwitchbackReport {
            write_pause_ms: pause.map(|p| p.as_millis() as u64),
            a_position: seed_at,
            epoch: record.epoch,
            changed: pause.is_some(),
            writes_on_b_after_switch: after_switch,
        })
    }

    /// A switchback that another call started and did not finish (it crashed after moving A's record, before
    /// disconnecting B's clients): B's record is still behind. B's clients, connected before the switch, would run
    /// their writes on B once the pause ends; they are disconnected (and B unpaused) before B's record and the
    /// A -> B seed are written, so they reconnect to A.
    /// Returns the writes B took after the switch (counted in B's stream from where it was drained; `None` when
    /// B's record was not behind or the stream cannot be read from there).
    async fn disconnect_b_after_interrupted_switch(
        &self,
        b: &mut Deploy,
        record: &Record,
    ) -> Result<Option<u64>, Error> {
        let behind = b
            .read_record()
            .await?
            .is_none_or(|r| r.epoch < record.epoch);
        if !behind {
            return Ok(None);
        }
        tracing::info!(
            epoch = record.epoch,
            "switchback: finishing a switch another call started; disconnecting B's clients"
        );
        b.kill_clients().await?;
        b.unfence_writes().await?;
        b.unpause().await?;
        // Nothing else writes B's data now (the A -> B job waits for B's record): what B's stream holds after the
        // drained position are writes of clients connected before the switch, run once the pause ran out; none
        // when B was fenced right after the switch (they were refused).
        let mut total = Some(0u64);
        for at in &record.b_drained {
            match b.count_writes_since(&at.position(), self.timeout()).await? {
                Some(n) => total = total.map(|t| t + n),
                None => total = None,
            }
        }
        // Another call wrote B's record meanwhile: the A -> B job may have written to B since, so the count may
        // hold its writes; it is left out (only a call that found B's record behind before and after counts).
        if b.read_record()
            .await?
            .is_some_and(|r| r.epoch >= record.epoch)
        {
            return Ok(None);
        }
        if let Some(n) = total.filter(|n| *n > 0) {
            tracing::warn!(
                writes = n,
                "B took writes after A took over (the switchback was interrupted and B's pause ran out): A does not have them"
            );
        }
        Ok(total.filter(|_| !record.b_drained.is_empty()))
    }

    /// [`DrPair::finish_switchback`] for a cluster B: seeds go master by master, only over fences (a retry never
    /// moves back a checkpoint the A -> B job has written since), then B's record.
    async fn finish_switchback_cluster_b(
        &self,
        b: &mut Deploy,
        record: Record,
        pause: Option<Duration>,
    ) -> Result<SwitchbackReport, Error> {
        let tag = Direction::AToB.checkpoint_tag(&self.config.name);
        let seeds: Vec<(String, ReplPosition)> = if record.a_seeds.is_empty() {
            let at = record
                .a_seed
                .clone()
                .ok_or_else(|| Error::data("switchback: the record has no A position"))?;
            vec![(tag.clone(), at)]
        } else {
            let fence = ferry_replicator::checkpoint::Checkpoint::Fenced {
                epoch: record.epoch,
            }
            .encode();
            self.open(Side::A)
                .await?
                .overwrite_checkpoints(&Direction::BToA.checkpoint_tag(&self.config.name), &fence)
                .await?;
            record
                .a_seeds
                .iter()
                .map(|s| (format!("{tag}:{}", s.shard), s.position()))
                .collect()
        };
        let stored = b.read_record().await?;
        let done = stored.as_ref().is_some_and(|r| r.epoch >= record.epoch);
        let after_switch = match &stored {
            Some(r) if done => r.writes_on_b_after_switch,
            _ => record.writes_on_b_after_switch,
        };
        if !done {
            b.delete_fences(&tag).await?;
            for (t, at) in &seeds {
                b.seed_cluster_checkpoints(t, at, record.epoch, true)
                    .await?;
            }
            let mut written = record.clone();
            if let Some(p) = pause {
                written.switchback_pause_ms = Some(p.as_millis() as u64);
            }
            b.transition(&written, &[], Fill::default()).await?;
        }
        Ok(SwitchbackReport {
            write_pause_ms: pause.map(|p| p.as_millis() as u64),
            a_position: seeds.first().map(|(_, at)| at.clone()).unwrap_or_default(),
            epoch: record.epoch,
            changed: pause.is_some(),
            writes_on_b_after_switch: after_switch,
        })
    }

    /// The record on `d` when it moved past `epoch` (another process switched).
    async fn moved_on(&self, d: &mut Deploy, epoch: u64) -> Result<Option<Record>, Error> {
        Ok(d.read_record().await?.filter(|r| r.epoch > epoch))
    }

    /// Writes `record` to each side whose record is older (best effort: a side that does not answer is left).
    async fn copy_record_to(&self, record: &Record, both: &Both) {
        for (side, have) in [(Side::A, &both.a), (Side::B, &both.b)] {
            if have.as_ref().is_some_and(|r| r.epoch >= record.epoch) {
                continue;
            }
            if let Ok(mut d) = self.open(side).await {
                if let Err(e) = d.transition(record, &[], Fill::default()).await {
                    tracing::warn!(side = %side, error = %e, "could not bring the side's DR record up to date");
                }
            }
        }
    }

    /// Runs the job of the current direction and follows the record: when its epoch changes, the job of the
    /// old direction is stopped (it is fenced anyway) and the new one started. It also finishes a switchback
    /// whose call died after the switch on A (see the module documentation). Needs a tokio runtime.
    pub fn run(&self) -> Result<DrHandle, Error> {
        run::start(self.clone())
    }
}

/// The records of both sides.
#[derive(Debug, Clone, Default)]
pub(crate) struct Both {
    newest: Option<Record>,
    a: Option<Record>,
    b: Option<Record>,
    a_err: Option<String>,
    b_err: Option<String>,
}

/// Bytes of A's streams (one position per A master) that the A -> B checkpoints in B (`held`, or the fences a
/// failover interrupted after fencing left, which keep the position they replaced) do not cover: a master without
/// a checkpoint of its history counts whole.
fn lag_behind(
    targets: &[(String, ReplPosition, String)],
    held: &[(usize, String, Vec<u8>)],
) -> u64 {
    let positions: Vec<(String, u64)> = held
        .iter()
        .filter_map(|(_, _, v)| side::held_position(v).ok().flatten())
        .collect();
    targets
        .iter()
        .map(|(_, at, replid2)| {
            let covered = positions
                .iter()
                .filter(|(replid, _)| *replid == at.replid || replid == replid2)
                .map(|(_, offset)| *offset)
                .max()
                .unwrap_or(0);
            at.offset.saturating_sub(covered)
        })
        .sum()
}

/// How many bytes A's B -> A checkpoints are behind B's masters (`b_at`: one position per B master; a cluster
/// B's streams are tagged `<tag>:<node id>`): the largest lag of any stream.
async fn a_lag(
    a: &mut Deploy,
    tag: &str,
    b_cluster: bool,
    b_at: &[(String, ReplPosition, String)],
) -> Result<u64, Error> {
    let mut lag = 0;
    for (id, at, _) in b_at {
        let t = if b_cluster {
            format!("{tag}:{id}")
        } else {
            tag.to_string()
        };
        let done = a.checkpoint_offset(&t).await?.unwrap_or(0);
        lag = lag.max(at.offset.saturating_sub(done));
    }
    Ok(lag)
}

fn split(r: Result<Option<Record>, Error>) -> (Option<Record>, Option<String>) {
    match r {
        Ok(rec) => (rec, None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// Whether a transition that failed with `e` runs again from the start (after a pause): on a lost connection, at
/// most twice. Every transition is idempotent and re-reads both records, and a connection can be cut under it by
/// design: a switchback in another process disconnects every client of B (`CLIENT KILL TYPE normal`).
async fn retry_after_connection_loss(e: &Error, attempt: &mut u32) -> bool {
    if e.kind() != ErrorKind::Connection || *attempt >= 2 {
        return false;
    }
    *attempt += 1;
    tracing::info!(attempt = *attempt, error = %e, "connection lost during a DR transition; starting it again");
    tokio::time::sleep(Duration::from_millis(100 * u64::from(*attempt))).await;
    true
}

/// What a record transition script did.
#[derive(Debug)]
pub(crate) enum Transition {
    /// Written; `old` holds the previous values of the checkpoint keys.
    Applied {
        /// The record as stored (with the positions the script filled in).
        record: Record,
    },
    /// The stored record's epoch was not lower: nothing written.
    Lost {
        /// The stored record.
        stored: Record,
    },
}
