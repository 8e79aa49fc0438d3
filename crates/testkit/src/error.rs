//! The one error type of the testkit.

use std::time::Duration;

/// Everything that can go wrong while starting, filling or comparing servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A redis-server / redis-sentinel binary could not be found or run.
    #[error("Redis {version} binary not found: {detail}. {hint}")]
    BinaryNotFound {
        /// "7.0" or "6.2".
        version: String,
        /// What was tried.
        detail: String,
        /// How to install it.
        hint: String,
    },
    /// A local I/O operation failed (temp dir, config file, spawning a process).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A server process exited or never became ready.
    #[error("{what} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")]
    StartFailed {
        /// Which server ("redis-server 7.0 on 127.0.0.1:1234").
        what: String,
        /// Why the testkit gave up.
        reason: String,
        /// The end of the server's log.
        log_tail: String,
    },
    /// A condition did not become true before its deadline.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// The condition, in words.
        what: String,
        /// How long the testkit waited.
        waited: Duration,
    },
    /// A command sent to a server failed.
    #[error("redis error while {context}: {source}")]
    Redis {
        /// What the testkit was doing.
        context: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A server answered something the testkit did not expect.
    #[error("unexpected reply while {context}: {detail}")]
    UnexpectedReply {
        /// What the testkit was doing.
        context: String,
        /// What came back.
        detail: String,
    },
    /// The caller asked for something that cannot work (bad option combination, bad URL).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// True when a deadline passed ([`Error::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True when a server binary is missing ([`Error::BinaryNotFound`]).
    pub fn is_binary_missing(&self) -> bool {
        matches!(self, Error::BinaryNotFound { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Error::Redis {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn unexpected(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::UnexpectedReply {
            context: context.into(),
            detail: detail.into(),
        }
    }
}

/// Adds a "while doing X" context to results of redis calls.
pub(crate) trait RedisContext<T> {
    /// Maps a redis error to [`Error::Redis`] with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> RedisContext<T> for redis::RedisResult<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::redis(context(), e))
    }
}
