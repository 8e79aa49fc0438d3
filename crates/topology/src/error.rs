//! The crate's one error type.

/// Everything that can go wrong while parsing cluster replies, extracting keys or running a command on
/// a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CLUSTER NODES / SLOTS / SHARDS or COMMAND reply did not have the expected shape.
    #[error("malformed {what}: {detail}")]
    Parse {
        /// Which reply was being parsed (`"CLUSTER NODES"`, `"COMMAND"`, ...).
        what: &'static str,
        /// What was wrong, and where.
        detail: String,
    },
    /// The command is not in the server's command table.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// The command was given a number of arguments its arity forbids.
    #[error("wrong number of arguments for '{0}'")]
    WrongArity(String),
    /// The command's keys hash to different slots, so no single node can run it.
    #[error("keys of '{command}' hash to different slots ({slot} and {other_slot})")]
    CrossSlot {
        /// The command name.
        command: String,
        /// Slot of the first key.
        slot: u16,
        /// Slot of the first key that differs.
        other_slot: u16,
    },
    /// No known node serves the slot (the map is incomplete or the owner has no address).
    #[error("'{command}': slot {slot} is not served by any known node")]
    SlotNotCovered {
        /// The command name.
        command: String,
        /// The slot.
        slot: u16,
    },
    /// None of the seed or known nodes could be reached to learn the topology.
    #[error("no node could be reached to load the cluster topology: {0}")]
    NoReachableNode(String),
    /// A connection-level failure talking to a node.
    #[error("'{command}' (slot {slot}) on {node}: {source}")]
    Connection {
        /// The command name.
        command: String,
        /// The slot, or `-` when the command has no key.
        slot: SlotLabel,
        /// `host:port` of the node.
        node: String,
        /// The underlying error from ferry-resp.
        #[source]
        source: ferry_resp::Error,
    },
    /// The node answered with an error reply that is final (not a redirect or a retryable state).
    #[error("'{command}' (slot {slot}) on {node}: {code} {message}")]
    Server {
        /// The command name.
        command: String,
        /// The slot, or `-` when the command has no key.
        slot: SlotLabel,
        /// `host:port` of the node.
        node: String,
        /// The error code (`WRONGTYPE`, `ERR`, `MOVED`, ...).
        code: String,
        /// The rest of the error line.
        message: String,
    },
    /// The command was sent, and its connection broke or timed out before the reply came back: it
    /// may or may not have run. It was not sent again (see
    /// [`crate::ClusterOptions::resend_after_connection_loss`]).
    #[error(
        "'{command}' (slot {slot}) on {node}: outcome unknown, the command may have run: {source}"
    )]
    UnknownOutcome {
        /// The command name.
        command: String,
        /// The slot, or `-` when the command has no key.
        slot: SlotLabel,
        /// `host:port` of the node.
        node: String,
        /// What happened to the connection.
        #[source]
        source: ferry_resp::Error,
    },
    /// The command cannot be sent this way (for example `MULTI` or `SELECT` on the shared
    /// connection); `reason` says what to use instead.
    #[error("'{command}' is not supported here: {reason}")]
    Unsupported {
        /// The command name.
        command: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// Redirects or retries went past their bound; `last` is the final failure.
    #[error("'{command}' (slot {slot}) gave up after {attempts} attempts, last on {node}: {last}")]
    RetriesExhausted {
        /// The command name.
        command: String,
        /// The slot, or `-` when the command has no key.
        slot: SlotLabel,
        /// `host:port` of the last node tried.
        node: String,
        /// How many times the command was sent.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<Error>,
    },
}

impl Error {
    /// Whether this is (or ended with) a MOVED or ASK redirect.
    pub fn is_redirect(&self) -> bool {
        match self {
            Error::Server { code, .. } => code == "MOVED" || code == "ASK",
            Error::RetriesExhausted { last, .. } => last.is_redirect(),
            _ => false,
        }
    }

    /// Whether this is (or ended with) a connect, read or write deadline passing.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Connection { source, .. } | Error::UnknownOutcome { source, .. } => {
                source.is_timeout()
            }
            Error::RetriesExhausted { last, .. } => last.is_timeout(),
            _ => false,
        }
    }

    /// Whether the command may have run although no reply came back (its connection broke or timed
    /// out after it was sent): the caller must not assume it did not run, nor that it did. Also true
    /// when retries were exhausted after such an attempt.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            Error::UnknownOutcome { .. } => true,
            Error::RetriesExhausted { last, .. } => last.is_unknown_outcome(),
            _ => false,
        }
    }

    /// Whether the error is about the command itself (unknown, arity, keys in different slots), so
    /// sending it again cannot help.
    pub fn is_command_error(&self) -> bool {
        matches!(
            self,
            Error::UnknownCommand(_) | Error::WrongArity(_) | Error::CrossSlot { .. }
        )
    }

    /// The server's error code when this is a final error reply (`"WRONGTYPE"`, `"ERR"`, ...).
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn parse(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Parse {
            what,
            detail: detail.into(),
        }
    }
}

/// A slot number in an error message, or `-` for a command without keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLabel(pub Option<u16>);

impl std::fmt::Display for SlotLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(slot) => write!(f, "{slot}"),
            None => f.write_str("-"),
        }
    }
}
