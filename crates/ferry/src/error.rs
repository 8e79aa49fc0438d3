//! The one error type of the façade, with the kind a caller (or a binding) classifies it by.

use std::fmt;

/// What kind of failure an [`Error`] is. Bindings map each kind to an exception class (Python) or an error
/// code (`"FERRY_" + as_str().to_uppercase()`, Node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid or asks for something not supported (yet).
    Config,
    /// A server refused the credentials.
    Auth,
    /// A connection could not be opened or broke (I/O, timeout, TLS, protocol).
    Connection,
    /// The target answered a write with an error (or a key conflict under policy `panic`).
    TargetRefused,
    /// The source refused to be replicated (PSYNC refused, no permission).
    SourceRefused,
    /// Data could not be read or written as it is (a corrupt RDB, an invalid checkpoint, a file).
    Data,
    /// Another job took over the target (fencing), or the checkpoint chain does not continue.
    Fenced,
    /// The job was stopped.
    Stopped,
}

impl ErrorKind {
    /// The stable name of the kind: `config`, `auth`, `connection`, `target_refused`, `source_refused`, `data`,
    /// `fenced`, `stopped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Auth => "auth",
            ErrorKind::Connection => "connection",
            ErrorKind::TargetRefused => "target_refused",
            ErrorKind::SourceRefused => "source_refused",
            ErrorKind::Data => "data",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Stopped => "stopped",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every façade call: a [`kind`](Error::kind) and a full human message (never a secret), with the
/// underlying error of the lower crate as its `source()` when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    /// A data error.
    pub(crate) fn data(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Data, message)
    }

    /// A configuration error for a kind of source or target that arrives in a later version.
    pub(crate) fn not_supported(what: &str) -> Error {
        Error::config(format!("not supported yet: {what}"))
    }

    /// Wraps `source` with a message prefix and a kind.
    pub(crate) fn wrap(
        kind: ErrorKind,
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            message: format!("{context}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with where it happened.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// The kind of a connection-level error of ferry-resp.
pub(crate) fn resp_kind(e: &ferry_resp::Error) -> ErrorKind {
    match e {
        ferry_resp::Error::Auth(_) => ErrorKind::Auth,
        ferry_resp::Error::InvalidUrl(_) => ErrorKind::Config,
        ferry_resp::Error::Server(s) if is_auth_code(s.to_string().as_str()) => ErrorKind::Auth,
        ferry_resp::Error::Server(_) => ErrorKind::TargetRefused,
        _ => ErrorKind::Connection,
    }
}

fn is_auth_code(text: &str) -> bool {
    ["NOAUTH", "WRONGPASS", "NOPERM"]
        .iter()
        .any(|c| text.starts_with(c))
}

impl From<ferry_resp::Error> for Error {
    fn from(e: ferry_resp::Error) -> Error {
        let kind = resp_kind(&e);
        Error {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

impl From<ferry_replicator::Error> for Error {
    fn from(e: ferry_replicator::Error) -> Error {
        let kind = replicator_kind(&e);
        Error {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// The kind of a replicator error; a job that gave up answers with the kind of its last error.
pub(crate) fn replicator_kind(e: &ferry_replicator::Error) -> ErrorKind {
    use ferry_replicator::Error as R;
    match e {
        R::GaveUp { last, .. } => replicator_kind(last),
        R::Resp(r) => resp_kind(r),
        R::Protocol(_) | R::Failover(_) => ErrorKind::Connection,
        R::Sentinel(_) if e.is_auth() => ErrorKind::Auth,
        R::Sentinel(_) => ErrorKind::Connection,
        R::Refused(_) => ErrorKind::SourceRefused,
        R::Rdb(_) | R::Aof(_) => ErrorKind::Data,
        R::Conflict { .. } | R::Target { .. } => ErrorKind::TargetRefused,
        R::Checkpoint(_) | R::Fenced(_) => ErrorKind::Fenced,
        R::Config(_) => ErrorKind::Config,
        R::Stopped => ErrorKind::Stopped,
        R::Shard { error, .. } => replicator_kind(error),
        _ => ErrorKind::Data,
    }
}

impl From<ferry_topology::Error> for Error {
    fn from(e: ferry_topology::Error) -> Error {
        let text = e.to_string();
        let kind = if is_auth_code(&text) || text.contains("authentication") {
            ErrorKind::Auth
        } else {
            ErrorKind::Connection
        };
        Error {
            kind,
            message: text,
            source: Some(Box::new(e)),
        }
    }
}

impl From<ferry_rdb::Error> for Error {
    fn from(e: ferry_rdb::Error) -> Error {
        Error::wrap(ErrorKind::Data, "RDB", e)
    }
}
