//! The pipeline between the source and the sink: what a command of the stream is, which ones pass the
//! filters ([`filter`]), which database they go to ([`dbmap`]) and how a key of the RDB becomes commands
//! for the target ([`convert`]).

pub mod convert;
pub mod dbmap;
pub mod filter;
pub(crate) mod ttl;

use bytes::Bytes;

/// One write command of the source's replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The database it applies to (the last `SELECT` of the stream before it).
    pub db: i64,
    /// The command name and its arguments, as the source sent them.
    pub argv: Vec<Bytes>,
    /// The source's replication offset right after this command's bytes.
    pub end_offset: u64,
}

impl Command {
    /// The command name in lower case (`"set"`, `"xadd"`), or empty for an empty command.
    pub fn name(&self) -> String {
        command_name(&self.argv)
    }

    /// The bytes this command takes on the wire to the target (its RESP encoding).
    pub fn wire_size(&self) -> usize {
        wire_size(&self.argv)
    }
}

/// The lower-case name of a command (empty for an empty one).
pub(crate) fn command_name(argv: &[Bytes]) -> String {
    argv.first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
        .unwrap_or_default()
}

/// The size of the RESP encoding of a command.
pub fn wire_size<A: AsRef<[u8]>>(argv: &[A]) -> usize {
    fn digits(mut n: usize) -> usize {
        let mut d = 1;
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    }
    let mut size = 1 + digits(argv.len()) + 2;
    for a in argv {
        let len = a.as_ref().len();
        size += 1 + digits(len) + 2 + len + 2;
    }
    size
}

/// What the sink applies as one: a single command, or a source `MULTI`/`EXEC` group (its commands without the
/// `MULTI` and `EXEC` themselves; the sink wraps them so the group stays a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The commands, in stream order.
    pub commands: Vec<Command>,
    /// True for a source transaction.
    pub transaction: bool,
    /// The source offset right after the unit (after the `EXEC` for a transaction).
    pub end_offset: u64,
    /// The database the stream has selected at `end_offset` (a transaction may `SELECT` inside): what a
    /// checkpoint at `end_offset` records, so a resume continues in it.
    pub end_db: i64,
    /// Keys the target policy skipped or converted in this unit, stored in the target by the batch that
    /// applies it (see [`crate::checkpoint::report_key_names`]).
    pub(crate) report: Vec<convert::ReportEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_size_matches_resp_encoding() {
        let argv = [&b"SET"[..], b"key", &[b'v'; 12]];
        let expected = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$12\r\nvvvvvvvvvvvv\r\n".len();
        assert_eq!(wire_size(&argv), expected);
    }
}
