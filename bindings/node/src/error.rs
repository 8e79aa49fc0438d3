//! Errors crossing into JavaScript: every rejection carries one of the façade's error kinds.
//!
//! A napi-rs `async fn` can only reject with napi's own `Error`, whose JS `code` is napi's status. So the kind
//! travels in the message, as `FERRY_<KIND>` + U+001F + the human message, and the package's thin JS layer
//! (`index.js`, `toFerryError`) turns that into an `Error` whose `code` is the kind and whose message is the rest.

use std::fmt::Display;

/// The façade's error kinds, as the JS `code` strings the package documents (`FERRY_` + kind in upper case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// Bad configuration or bad arguments.
    Config,
    /// Authentication refused.
    Auth,
    /// A server could not be reached, or the connection broke.
    Connection,
    /// The target refused a write.
    TargetRefused,
    /// A server answered a command of the sentinel pool with an error reply (`WRONGTYPE ...`, `ERR ...`).
    Reply,
    /// The source refused replication (or a read).
    SourceRefused,
    /// Data that cannot be read or converted (a corrupt RDB file, a value the target cannot hold).
    Data,
    /// A fenced (outdated) epoch tried to write.
    Fenced,
    /// The job or pool was stopped or closed.
    Stopped,
}

impl Code {
    /// The JS `code` string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::Config => "FERRY_CONFIG",
            Code::Auth => "FERRY_AUTH",
            Code::Connection => "FERRY_CONNECTION",
            Code::TargetRefused => "FERRY_TARGET_REFUSED",
            Code::Reply => "FERRY_REPLY",
            Code::SourceRefused => "FERRY_SOURCE_REFUSED",
            Code::Data => "FERRY_DATA",
            Code::Fenced => "FERRY_FENCED",
            Code::Stopped => "FERRY_STOPPED",
        }
    }
}

/// Separates the code from the message inside a napi error's reason.
const SEPARATOR: char = '\u{1f}';

/// A napi error carrying `code`, for the JS layer to unpack.
pub(crate) fn coded(code: Code, message: impl Display) -> napi::Error {
    napi::Error::from_reason(format!("{}{SEPARATOR}{message}", code.as_str()))
}

/// The kind of a sentinel pool error.
pub(crate) fn sentinel_code(e: &ferry_sentinel::Error) -> Code {
    use ferry_sentinel::Error as E;
    match e {
        E::InvalidOptions(_) => Code::Config,
        E::Closed => Code::Stopped,
        E::Connect { source, .. } => resp_code(source),
        // The server's error reply to the command itself (not a refusal of the credentials).
        E::Resp(r) => match resp_code(r) {
            Code::TargetRefused => Code::Reply,
            code => code,
        },
        _ => Code::Connection,
    }
}

/// The kind of a RESP connection error: an error reply is the server refusing the command.
fn resp_code(e: &ferry_resp::Error) -> Code {
    use ferry_resp::Error as E;
    match e {
        E::Auth(_) => Code::Auth,
        E::Server(s) if matches!(s.code(), "NOAUTH" | "WRONGPASS" | "NOPERM") => Code::Auth,
        E::Server(_) => Code::TargetRefused,
        E::InvalidUrl(_) => Code::Config,
        _ => Code::Connection,
    }
}

/// The pool's error as a coded napi error; an error reply's message is the reply as the server wrote it.
pub(crate) fn sentinel(e: ferry_sentinel::Error) -> napi::Error {
    let code = sentinel_code(&e);
    if let (Code::Reply, ferry_sentinel::Error::Resp(r)) = (code, &e) {
        if let Some(reply) = r.server_error() {
            return coded(code, reply);
        }
    }
    coded(code, e)
}

/// The façade's error, with its kind as the code.
pub(crate) fn ferry(e: ferry::Error) -> napi::Error {
    use ferry::ErrorKind as K;
    let code = match e.kind() {
        K::Config => Code::Config,
        K::Auth => Code::Auth,
        K::Connection => Code::Connection,
        K::TargetRefused => Code::TargetRefused,
        K::SourceRefused => Code::SourceRefused,
        K::Data => Code::Data,
        K::Fenced => Code::Fenced,
        K::Stopped => Code::Stopped,
        // A kind added to the façade later: its message still says what happened.
        _ => Code::Data,
    };
    coded(code, e)
}
