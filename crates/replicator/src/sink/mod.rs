//! Sinks: where the commands go. A sink pipelines its writes within windows (by count and by bytes), so a slow
//! target slows the reading of the source instead of growing memory, and it handles every reply: error replies
//! are counted and handled by policy, none is ignored.

pub mod standalone;

use std::time::Duration;

/// What to do when the target answers a write with an error (other than a key conflict of the full sync,
/// which the conflict policy decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop the job with the error.
    #[default]
    Stop,
    /// Log it, count it and go on.
    Log,
}

/// Windows, batches and policies of a sink.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// At most this many commands written and not yet answered.
    pub window_commands: usize,
    /// At most this many bytes of commands written and not yet answered.
    pub window_bytes: usize,
    /// A live-phase batch (one `MULTI`/`EXEC` with its checkpoint) is closed after this many commands...
    pub batch_commands: usize,
    /// ...or this many bytes (a source transaction is never split, so a batch can be bigger).
    pub batch_bytes: usize,
    /// Error replies other than conflicts.
    pub on_error: ErrorPolicy,
    /// Write checkpoints (and wrap live batches in `MULTI`/`EXEC`).
    pub checkpoint: bool,
    /// The tag of the checkpoint key, `ferry:checkpoint:{<tag>}`.
    pub checkpoint_tag: String,
    /// The database the checkpoint key lives in (a standalone target; a cluster has only 0).
    pub checkpoint_db: i64,
    /// Deadline for each reply of the target.
    pub reply_timeout: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            window_commands: 4096,
            window_bytes: 32 * 1024 * 1024,
            batch_commands: 512,
            batch_bytes: 4 * 1024 * 1024,
            on_error: ErrorPolicy::Stop,
            checkpoint: true,
            checkpoint_tag: "ferry".to_string(),
            checkpoint_db: 0,
            reply_timeout: Duration::from_secs(120),
        }
    }
}

/// What a sink did, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Keys restored during full syncs.
    pub keys_restored: u64,
    /// Keys of the full sync left as they were on the target (conflict policy `skip`).
    pub keys_skipped: u64,
    /// Commands of the live stream applied.
    pub commands_applied: u64,
    /// Commands not sent because the target already had them (checkpoint ahead of the stream).
    pub commands_already_applied: u64,
    /// Error replies of the target (all kinds).
    pub errors: u64,
    /// Bytes of commands written to the target.
    pub bytes_written: u64,
    /// The last error reply, for the status.
    pub last_error: Option<String>,
}
