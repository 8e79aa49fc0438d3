//! The one error type of ferry-replicator.

use std::fmt;

/// Everything that can stop a sync job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection to the source or the target failed (I/O, timeout, protocol, auth...).
    #[error("connection error: {0}")]
    Resp(#[from] ferry_resp::Error),
    /// The source sent something the replication protocol does not allow at this point.
    #[error("replication protocol error: {0}")]
    Protocol(String),
    /// The source refused the PSYNC handshake with an error that retrying will not fix.
    #[error("the source refused replication: {0}")]
    Refused(String),
    /// The RDB stream of the source could not be read.
    #[error("RDB stream error: {0}")]
    Rdb(String),
    /// A key of the source already exists on the target and the conflict policy is `panic`.
    #[error("key {key} already exists on the target (conflict policy is panic)")]
    Conflict {
        /// The key, printed with non-UTF-8 bytes escaped.
        key: KeyDisplay,
    },
    /// The target answered a write with an error and the error policy is to stop.
    #[error("the target refused `{command}`: {message}")]
    Target {
        /// The command name (never its arguments: they may be large or secret).
        command: String,
        /// The error reply of the target.
        message: String,
    },
    /// A batch was refused because the target's checkpoint is not the one the batch before it stores: that
    /// batch failed, or the target lost writes (a failover before they replicated), or another writer
    /// changed it. A new session resumes from what the target holds.
    #[error("{0}")]
    ChainBroken(String),
    /// The checkpoint stored in the target is not one this version wrote.
    #[error("invalid checkpoint in the target: {0}")]
    Checkpoint(String),
    /// The job's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The job was asked to stop.
    #[error("the job was stopped")]
    Stopped,
}

impl Error {
    /// True when the failure is a timeout of a connection.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Resp(e) if e.is_timeout())
    }

    /// True when the failure is worth a reconnect (the link broke or timed out),
    /// as opposed to a refusal, a conflict or a bad configuration.
    pub fn is_connection(&self) -> bool {
        match self {
            Error::Resp(e) => e.is_connection_lost(),
            Error::Protocol(_) => true,
            _ => false,
        }
    }

    /// True when a new session can get past the failure: the link broke or timed out
    /// ([`Error::is_connection`]), the checkpoint chain broke, or the target refused a write for a state that
    /// passes (`OOM`, `MISCONF`, `LOADING`, `BUSY`, a cluster redirection or failover: see
    /// [`crate::sink::chain::TRANSIENT_ERRORS`]). Refusals that need a human (`WRONGTYPE`, an unknown command)
    /// are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ChainBroken(_) => true,
            Error::Target { message, .. } => crate::sink::chain::is_transient(message),
            e => e.is_connection(),
        }
    }

    /// True when the job stopped because it was asked to.
    pub fn is_stopped(&self) -> bool {
        matches!(self, Error::Stopped)
    }
}

/// A key printed for humans: UTF-8 as is, other bytes as `\xNN`, long keys shortened.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDisplay(pub Vec<u8>);

impl fmt::Display for KeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 200;
        let shown = &self.0[..self.0.len().min(MAX)];
        write!(f, "\"{}\"", shown.escape_ascii())?;
        if self.0.len() > MAX {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
