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
    /// An append-only file (or its manifest) could not be read.
    #[error("append-only file: {0}")]
    Aof(String),
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
    /// The target's checkpoint is a fence, or was written by a job of a newer epoch: a DR pair changed
    /// direction and this job must not write (not retried).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The checkpoint stored in the target is not one this version wrote.
    #[error("invalid checkpoint in the target: {0}")]
    Checkpoint(String),
    /// The job's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The local spool of the source's data failed (disk full, I/O error).
    #[error("spool error: {0}")]
    Spool(String),
    /// The source closed the replication link; the message says what ferry could learn of why.
    #[error("the source closed the replication link: {0}")]
    SourceClosed(String),
    /// The job gave up after several attempts that all failed with an error a reconnect does not fix. The
    /// questions about the kind of error ([`Error::is_auth`], [`Error::is_not_redis`],
    /// [`Error::is_unknown_command`]) answer for the last one.
    #[error("giving up after {attempts} attempts: {last}")]
    GaveUp {
        /// How many sessions were tried.
        attempts: u32,
        /// The error of the last one.
        last: Box<Error>,
    },
    /// Asking the sentinels for a sentinel-managed source's or target's master failed.
    #[error("sentinel: {0}")]
    Sentinel(#[from] ferry_sentinel::Error),
    /// A failover of a sentinel-managed source or target started: the session ends, the next one follows the
    /// new master from the checkpoint.
    #[error("failover: {0}")]
    Failover(String),
    /// The job was asked to stop.
    #[error("the job was stopped")]
    Stopped,
    /// A shard of a cluster source stopped with this error (the other shards ran on until they ended too).
    #[error("source shard {shard}: {error}")]
    Shard {
        /// The shard's name.
        shard: String,
        /// Its error (shared with the [`crate::JobEventKind::Error`] event that announced it).
        error: std::sync::Arc<Error>,
    },
}

impl Error {
    /// True when the failure is a timeout of a connection.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Resp(e) if e.is_timeout())
    }

    /// True when the link to the source or the target broke or timed out: a reconnect fixes it, so the job
    /// retries for as long as it takes (with backoff).
    pub fn is_connection(&self) -> bool {
        match self {
            Error::Resp(e) => {
                e.is_io()
                    || e.is_closed()
                    || e.is_timeout()
                    || matches!(e, ferry_resp::Error::Desynchronized(_))
            }
            // A malformed replication stream from a server that spoke RESP until then: reconnect.
            Error::Protocol(_) | Error::SourceClosed(_) | Error::Failover(_) => true,
            // Sentinels down, a master not confirmed yet, a failover in progress: ask again later. A name the
            // sentinels do not monitor, refused credentials or bad options need a human.
            Error::Sentinel(e) => {
                !matches!(
                    e,
                    ferry_sentinel::Error::NotMonitored { .. }
                        | ferry_sentinel::Error::InvalidOptions(_)
                ) && !self.is_auth()
            }
            _ => false,
        }
    }

    /// True when a new session can get past the failure: the checkpoint chain broke, or the target refused a
    /// write for a state that passes (`OOM`, `MISCONF`, `LOADING`, `READONLY`, `BUSY`, a cluster redirection or
    /// failover: see `crate::sink::chain::TRANSIENT_ERRORS`): the job retries from its checkpoint with
    /// backoff, like after a broken link. Refusals that need a human (`WRONGTYPE`, an unknown command) are not.
    pub fn is_transient(&self) -> bool {
        use crate::sink::chain::is_transient;
        match self {
            Error::ChainBroken(_) => true,
            Error::Target { message, .. } => is_transient(message),
            Error::Resp(e) => e
                .server_error()
                .is_some_and(|se| is_transient(se.code()) || is_transient(se.message())),
            _ => false,
        }
    }

    /// True when a server refused the credentials (`AUTH`, `HELLO ... AUTH`, `NOAUTH`, `NOPERM`).
    pub fn is_auth(&self) -> bool {
        match self {
            Error::GaveUp { last, .. } => last.is_auth(),
            Error::Resp(ferry_resp::Error::Auth(_)) => true,
            Error::Resp(e) => e
                .server_error()
                .is_some_and(|se| matches!(se.code(), "NOAUTH" | "NOPERM" | "WRONGPASS")),
            Error::Refused(m) => m.contains("NOAUTH") || m.contains("NOPERM"),
            Error::Sentinel(e) => {
                let text = e.to_string();
                ["NOAUTH", "NOPERM", "WRONGPASS", "authentication"]
                    .iter()
                    .any(|w| text.contains(w))
            }
            _ => false,
        }
    }

    /// True when the peer does not speak RESP at all (for example an HTTP server on the port).
    pub fn is_not_redis(&self) -> bool {
        if let Error::GaveUp { last, .. } = self {
            return last.is_not_redis();
        }
        matches!(
            self,
            Error::Resp(
                ferry_resp::Error::Protocol(_)
                    | ferry_resp::Error::NotACommand(_)
                    | ferry_resp::Error::LimitExceeded(_)
            )
        )
    }

    /// True when a server does not know a command ferry sent (an old or restricted server).
    pub fn is_unknown_command(&self) -> bool {
        let message = match self {
            Error::GaveUp { last, .. } => return last.is_unknown_command(),
            Error::Target { message, .. } | Error::Refused(message) => message.as_str(),
            Error::Resp(e) => match e.server_error() {
                Some(se) => se.message(),
                None => return false,
            },
            _ => return false,
        };
        let message = message.to_ascii_lowercase();
        message.contains("unknown command")
            || message.contains("unknown redis command")
            || message.contains("unknown subcommand")
    }

    /// True when a reconnect cannot fix the error, but a few more attempts are still worth it (a password
    /// rotated a moment late, a port briefly taken by another program, a server being upgraded): after a few
    /// the job stops with this error.
    pub fn is_retried_a_few_times(&self) -> bool {
        !matches!(self, Error::GaveUp { .. })
            && (self.is_auth()
                || self.is_not_redis()
                || self.is_unknown_command()
                || matches!(self, Error::Refused(_)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(message: &str) -> Error {
        Error::Target {
            command: "set".into(),
            message: message.into(),
        }
    }

    #[test]
    fn broken_links_are_retried_without_end_and_refusals_a_few_times() {
        let io = Error::Resp(ferry_resp::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(io.is_connection() && !io.is_retried_a_few_times());
        assert!(Error::SourceClosed("x".into()).is_connection());
        let auth = Error::Resp(ferry_resp::Error::Auth("WRONGPASS".into()));
        assert!(auth.is_auth() && auth.is_retried_a_few_times() && !auth.is_connection());
        let http = Error::Resp(ferry_resp::Error::Protocol("invalid type byte 'H'".into()));
        assert!(http.is_not_redis() && http.is_retried_a_few_times() && !http.is_connection());
        let unknown = target("ERR unknown command 'FOO', with args beginning with:");
        assert!(unknown.is_unknown_command() && unknown.is_retried_a_few_times());
        assert!(target("ERR Unknown Redis command called from script").is_unknown_command());
        assert!(target("OOM command not allowed").is_transient());
        let wrongtype = target("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert!(!wrongtype.is_transient() && !wrongtype.is_retried_a_few_times());
    }

    #[test]
    fn a_failover_or_unreachable_sentinels_reconnect_and_an_unmonitored_name_does_not() {
        assert!(Error::Failover("the target master was replaced".into()).is_connection());
        let down = Error::Sentinel(ferry_sentinel::Error::AllSentinelsDown {
            master_name: "m".into(),
            last_error: None,
        });
        assert!(down.is_connection() && !down.is_auth());
        let unmonitored = Error::Sentinel(ferry_sentinel::Error::NotMonitored {
            master_name: "m".into(),
        });
        assert!(!unmonitored.is_connection() && !unmonitored.is_retried_a_few_times());
    }

    #[test]
    fn a_job_that_gave_up_answers_for_its_last_error() {
        let e = Error::GaveUp {
            attempts: 3,
            last: Box::new(Error::Resp(ferry_resp::Error::Auth("WRONGPASS".into()))),
        };
        assert!(e.is_auth() && !e.is_connection() && !e.is_retried_a_few_times());
        assert!(e.to_string().starts_with("giving up after 3 attempts: "));
    }
}
