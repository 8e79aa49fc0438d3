//! The crate's one error type.

use crate::frame::ServerError;

/// Everything that can go wrong while decoding RESP or talking to a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (connect refused, reset, broken pipe, ...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A deadline passed; the string says which one (`"connect"`, `"read"`, `"write"`).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer sent bytes that are not valid RESP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Valid RESP that is not a command where [`crate::Decoder::decode_command`] expected one
    /// (an array of one or more bulk strings): another top-level type, an empty or null array,
    /// or an element that is not a bulk string (integer, null bulk, nested aggregate, ...).
    #[error("not a command: {0}")]
    NotACommand(String),
    /// The peer declared a length, nesting or element count above the configured [`crate::Limits`].
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The server answered with an error reply.
    #[error("server error: {0}")]
    Server(ServerError),
    /// The server refused the credentials (AUTH or HELLO ... AUTH). Never contains the password.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// TLS could not be set up (bad CA file, handshake failure, invalid server name).
    #[error("TLS error: {0}")]
    Tls(String),
    /// A `redis://` / `rediss://` URL could not be parsed.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The peer closed the connection (end of stream).
    #[error("connection closed by peer")]
    Closed,
    /// An earlier request on this connection timed out or failed half-way, so replies can no
    /// longer be matched to requests; open a new connection.
    #[error("connection unusable: {0}")]
    Desynchronized(&'static str),
}

impl Error {
    /// Whether a connect, read or write deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// Whether the socket itself failed.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io(_))
    }

    /// Whether the peer sent valid RESP that is not a command ([`Error::NotACommand`]).
    pub fn is_not_a_command(&self) -> bool {
        matches!(self, Error::NotACommand(_))
    }

    /// Whether the peer closed the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// Whether the connection that produced this error should be dropped and a new one opened
    /// (I/O failure, close, timeout, protocol violation, desynchronisation).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::Closed
                | Error::Timeout(_)
                | Error::Protocol(_)
                | Error::LimitExceeded(_)
                | Error::NotACommand(_)
                | Error::Desynchronized(_)
        )
    }

    /// The server's error reply, when this is [`Error::Server`].
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Error {
        Error::Server(e)
    }
}
