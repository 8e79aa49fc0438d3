//! The one error type of this crate.

use std::fmt;

/// Everything that can go wrong while reading or writing RDB data.
///
/// Every decoding error says what was being read and where: the absolute byte offset in the input
/// and, once known, the key whose value was being decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before the structure being read was complete.
    #[error("truncated input at byte {offset} while reading {what}{key}")]
    Truncated {
        /// Absolute offset of the first missing byte.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// ` of key "..."` when inside a key's value, else empty.
        key: KeyContext,
    },
    /// The bytes are not valid RDB data.
    #[error("corrupt RDB data at byte {offset}{key}: {message}")]
    Corrupt {
        /// Absolute offset near which the problem was found.
        offset: u64,
        /// The key being decoded, if any.
        key: KeyContext,
        /// What is wrong.
        message: String,
    },
    /// The file does not start with `REDIS` or `VALKEY` magic.
    #[error("not an RDB file: bad magic {0:?}")]
    BadMagic(String),
    /// The RDB version is newer than this crate knows (or older than 1).
    #[error("unsupported RDB version {version} (this reader supports 1 to {max})")]
    UnsupportedVersion {
        /// Version read from the header or payload footer.
        version: u32,
        /// Highest version supported.
        max: u32,
    },
    /// A checksum did not match.
    #[error("checksum mismatch{where_}: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// " in DUMP payload" or " at end of file".
        where_: &'static str,
        /// The checksum stored in the input.
        stored: u64,
        /// The checksum computed over the input.
        computed: u64,
    },
    /// A value type or opcode this crate cannot decode (e.g. the pre-GA module type 6).
    #[error("unsupported {what} at byte {offset}{key}")]
    Unsupported {
        /// Description of the unsupported thing.
        what: String,
        /// Absolute offset.
        offset: u64,
        /// The key being decoded, if any.
        key: KeyContext,
    },
    /// A configured limit was exceeded (e.g. a string longer than `Limits::max_string_len`).
    #[error("limit exceeded at byte {offset}{key}: {message}")]
    LimitExceeded {
        /// Absolute offset.
        offset: u64,
        /// The key, if any.
        key: KeyContext,
        /// Which limit.
        message: String,
    },
    /// A value cannot be encoded for the requested target version.
    #[error("cannot encode {what} for RDB version {version}")]
    CannotEncode {
        /// What could not be encoded.
        what: String,
        /// The target version.
        version: u32,
    },
    /// The parser was used after it returned an error or after EOF.
    #[error("parser already finished")]
    Finished,
    /// An I/O error from the underlying reader or writer.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True when the input simply ended too early (more bytes would have helped).
    pub fn is_truncated(&self) -> bool {
        matches!(self, Error::Truncated { .. })
    }
    /// True for checksum mismatches.
    pub fn is_checksum(&self) -> bool {
        matches!(self, Error::Checksum { .. })
    }
    /// True when the data is malformed (as opposed to truncated, unsupported or I/O).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
    /// True for version and feature support errors.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Error::Unsupported { .. } | Error::UnsupportedVersion { .. }
        )
    }
    /// The absolute input offset the error refers to, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Truncated { offset, .. }
            | Error::Corrupt { offset, .. }
            | Error::Unsupported { offset, .. }
            | Error::LimitExceeded { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// The key an error happened in, shown as ` in value of key "name"` (empty when none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyContext(pub Option<String>);

impl KeyContext {
    /// Builds the context from raw key bytes (lossy UTF-8, cut to 80 characters).
    pub fn from_key(key: &[u8]) -> Self {
        let s = String::from_utf8_lossy(key);
        let mut out: String = s.chars().take(80).collect();
        if s.chars().count() > 80 {
            out.push('…');
        }
        KeyContext(Some(out))
    }
}

impl fmt::Display for KeyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(k) => write!(f, " in value of key {k:?}"),
            None => Ok(()),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
