//! The replica side of the replication handshake, as redis-server's own replica does it (`replication.c`).
//!
//! The pure parts (reply lines, the RDB bulk header, finding the end of a diskless RDB) are separate functions
//! so they can be tested byte by byte; [`handshake`] drives them over a [`Connection`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_resp::{Connection, Frame};
use tracing::{debug, info, warn};

use crate::checkpoint::is_replid;
use crate::error::Error;

/// The replication id ferry gives a stream served as `SYNC` (which has none): no source has it, so a
/// checkpoint made under it never continues a stream.
pub const SYNC_REPLID: &str = "0000000000000000000000000000000000000000";

/// Length of the diskless end-of-file mark (`$EOF:<40 random bytes>`), `RDB_EOF_MARK_SIZE` in Redis.
pub const EOF_MARK_LEN: usize = 40;

/// What the source answered to `PSYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsyncReply {
    /// `+FULLRESYNC <replid> <offset>`: an RDB follows, then the stream from `offset`.
    FullResync {
        /// The source's replication id.
        replid: String,
        /// The offset the RDB corresponds to.
        offset: u64,
    },
    /// `+CONTINUE [<replid>]`: the stream continues right after the offset asked for. A new replid means the
    /// source was promoted (PSYNC2) and its history continues ours under a new id.
    Continue {
        /// The new replication id, if the source sent one.
        new_replid: Option<String>,
    },
    /// `-NOMASTERLINK` or `-LOADING`: the source cannot serve a replica yet; ask again later.
    TryAgain(String),
}

/// Parses one line answered to PSYNC. `Ok(None)` is a keepalive (empty line): keep reading.
pub fn parse_psync_reply(line: &[u8]) -> Result<Option<PsyncReply>, Error> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = text.strip_prefix("+FULLRESYNC") {
        let mut parts = rest.split_whitespace();
        return match (parts.next(), parts.next()) {
            (Some(replid), Some(offset)) if is_replid(replid) => {
                let offset = offset
                    .parse::<u64>()
                    .map_err(|_| Error::Protocol(format!("bad offset in {text:?}")))?;
                Ok(Some(PsyncReply::FullResync {
                    replid: replid.to_string(),
                    offset,
                }))
            }
            _ => Err(Error::Protocol(format!(
                "malformed reply to PSYNC: {text:?}"
            ))),
        };
    }
    if let Some(rest) = text.strip_prefix("+CONTINUE") {
        let new_replid = match rest.trim() {
            "" => None,
            id if is_replid(id) => Some(id.to_string()),
            _ => {
                return Err(Error::Protocol(format!(
                    "malformed reply to PSYNC: {text:?}"
                )))
            }
        };
        return Ok(Some(PsyncReply::Continue { new_replid }));
    }
    if text.starts_with("-NOMASTERLINK") || text.starts_with("-LOADING") {
        return Ok(Some(PsyncReply::TryAgain(text[1..].to_string())));
    }
    if let Some(err) = text.strip_prefix('-') {
        return Err(Error::Refused(format!("PSYNC: {err}")));
    }
    Err(Error::Protocol(format!(
        "unexpected reply to PSYNC: {text:?}"
    )))
}

/// How the source announces the RDB that follows `+FULLRESYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbHeader {
    /// `$<len>`: an RDB of exactly this many bytes (disk-based sync).
    Sized(u64),
    /// `$EOF:<mark>`: an RDB of unknown length that ends with the 40-byte mark (diskless sync).
    Eof([u8; EOF_MARK_LEN]),
}

/// Parses the line announcing the RDB. `Ok(None)` is a keepalive newline: keep reading.
pub fn parse_rdb_header(line: &[u8]) -> Result<Option<RdbHeader>, Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.first() {
        None => Ok(None),
        Some(b'-') => Err(Error::Refused(format!(
            "the source aborted the transfer: {}",
            String::from_utf8_lossy(&line[1..])
        ))),
        Some(b'$') => {
            let rest = &line[1..];
            if let Some(mark) = rest.strip_prefix(b"EOF:") {
                let mark: [u8; EOF_MARK_LEN] = mark
                    .try_into()
                    .map_err(|_| Error::Protocol("the $EOF: mark is not 40 bytes".into()))?;
                return Ok(Some(RdbHeader::Eof(mark)));
            }
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|len| Some(RdbHeader::Sized(len)))
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "bad RDB length line {:?}",
                        String::from_utf8_lossy(line)
                    ))
                })
        }
        Some(_) => Err(Error::Protocol(format!(
            "expected the RDB bulk header, found {:?}",
            String::from_utf8_lossy(line)
        ))),
    }
}

/// Splits the bytes that follow the RDB header into the RDB itself and what comes after it.
///
/// For a sized RDB it counts bytes; for a diskless one it looks for the end mark, which may be split across
/// reads: the last `EOF_MARK_LEN - 1` bytes seen are held back until it is known they are not the mark's start.
#[derive(Debug)]
pub struct RdbFramer {
    kind: FramerKind,
    done: bool,
}

#[derive(Debug)]
enum FramerKind {
    Sized {
        remaining: u64,
    },
    Eof {
        mark: [u8; EOF_MARK_LEN],
        held: BytesMut,
    },
}

/// One step of [`RdbFramer::feed`].
#[derive(Debug, Default)]
pub struct Framed {
    /// RDB bytes (possibly empty).
    pub rdb: Bytes,
    /// Bytes after the end of the RDB (the start of the command stream); only when `done`.
    pub rest: Bytes,
    /// The RDB is complete.
    pub done: bool,
}

impl RdbFramer {
    /// A framer for the RDB announced by `header`.
    pub fn new(header: &RdbHeader) -> RdbFramer {
        let kind = match header {
            RdbHeader::Sized(len) => FramerKind::Sized { remaining: *len },
            RdbHeader::Eof(mark) => FramerKind::Eof {
                mark: *mark,
                held: BytesMut::new(),
            },
        };
        let done = matches!(kind, FramerKind::Sized { remaining: 0 });
        RdbFramer { kind, done }
    }

    /// True once the whole RDB was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next chunk read from the socket.
    pub fn feed(&mut self, mut chunk: Bytes) -> Framed {
        if self.done {
            return Framed {
                rdb: Bytes::new(),
                rest: chunk,
                done: true,
            };
        }
        match &mut self.kind {
            FramerKind::Sized { remaining } => {
                let take = (*remaining).min(chunk.len() as u64) as usize;
                let rdb = chunk.split_to(take);
                *remaining -= take as u64;
                self.done = *remaining == 0;
                Framed {
                    rdb,
                    rest: if self.done { chunk } else { Bytes::new() },
                    done: self.done,
                }
            }
            FramerKind::Eof { mark, held } => {
                // Look for the mark in (held tail + chunk); only the seam needs a copy.
                let seam_len = chunk.len().min(EOF_MARK_LEN - 1);
                let mut seam = BytesMut::with_capacity(held.len() + seam_len);
                seam.extend_from_slice(held);
                seam.extend_from_slice(&chunk[..seam_len]);
                if let Some(pos) = memchr::memmem::find(&seam, mark) {
                    // The mark starts inside the held bytes or straddles the seam.
                    let mut rdb = BytesMut::from(&seam[..pos]);
                    let after_mark_in_chunk = pos + EOF_MARK_LEN - held.len();
                    let rest = if after_mark_in_chunk <= chunk.len() {
                        chunk.slice(after_mark_in_chunk..)
                    } else {
                        // Cannot happen: seam only holds chunk bytes before the end of the mark.
                        Bytes::new()
                    };
                    rdb.truncate(pos);
                    held.clear();
                    self.done = true;
                    return Framed {
                        rdb: rdb.freeze(),
                        rest,
                        done: true,
                    };
                }
                if let Some(pos) = memchr::memmem::find(&chunk, mark) {
                    let mut rdb = BytesMut::with_capacity(held.len() + pos);
                    rdb.extend_from_slice(held);
                    rdb.extend_from_slice(&chunk[..pos]);
                    held.clear();
                    self.done = true;
                    return Framed {
                        rdb: rdb.freeze(),
                        rest: chunk.slice(pos + EOF_MARK_LEN..),
                        done: true,
                    };
                }
                // Not found: everything but the last EOF_MARK_LEN - 1 bytes is surely RDB.
                let total = held.len() + chunk.len();
                let keep = total.min(EOF_MARK_LEN - 1);
                let emit = total - keep;
                let rdb = if emit == 0 {
                    held.extend_from_slice(&chunk);
                    Bytes::new()
                } else if emit <= held.len() {
                    let out = held.split_to(emit).freeze();
                    held.extend_from_slice(&chunk);
                    out
                } else {
                    let from_chunk = emit - held.len();
                    let out = if held.is_empty() {
                        chunk.slice(..from_chunk)
                    } else {
                        let mut out = BytesMut::with_capacity(emit);
                        out.extend_from_slice(held);
                        out.extend_from_slice(&chunk[..from_chunk]);
                        out.freeze()
                    };
                    held.clear();
                    held.extend_from_slice(&chunk[from_chunk..]);
                    out
                };
                Framed {
                    rdb,
                    rest: Bytes::new(),
                    done: false,
                }
            }
        }
    }
}

/// How the handshake is done.
#[derive(Debug, Clone)]
pub struct HandshakeOptions {
    /// Sent as `REPLCONF listening-port` (shown by the source in `INFO replication`).
    pub listening_port: u16,
    /// How long `-NOMASTERLINK` / `-LOADING` are retried before giving up.
    pub retry_for: Duration,
    /// How long to wait for each line of the handshake, keepalives included.
    pub line_timeout: Duration,
    /// The name `PSYNC` goes by on a source node, by its `host:port` as configured (AWS ElastiCache gives
    /// renamed PSYNC commands on request; RedisShake's `aws_psync`). Nodes not named use `PSYNC`.
    pub psync_commands: std::collections::BTreeMap<String, String>,
}

impl HandshakeOptions {
    /// The name of PSYNC on the node at `host:port`.
    pub fn psync_command_for(&self, host: &str, port: u16) -> &str {
        self.psync_commands
            .get(&format!("{host}:{port}"))
            .map_or("PSYNC", String::as_str)
    }
}

impl Default for HandshakeOptions {
    fn default() -> Self {
        HandshakeOptions {
            listening_port: 0,
            retry_for: Duration::from_secs(300),
            line_timeout: Duration::from_secs(120),
            psync_commands: Default::default(),
        }
    }
}

/// The outcome of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// A full resync: the RDB announced by `header` follows on the connection.
    Full {
        /// The source's replication id.
        replid: String,
        /// The offset the RDB corresponds to.
        offset: u64,
        /// How the RDB is delimited.
        header: RdbHeader,
    },
    /// A partial resync: the stream continues right after `offset`.
    Continue {
        /// The replication id to use from now on (the new one if the source was promoted).
        replid: String,
        /// The offset the stream continues from.
        offset: u64,
    },
}

/// Runs `PING`, `REPLCONF listening-port`, `REPLCONF capa eof capa psync2` and `PSYNC` on a connection that is
/// already authenticated (ferry-resp's `Connection::connect` sends AUTH). `resume` is the replid and offset to
/// continue from, or `None` for `PSYNC ? -1`.
///
/// What ferry reads is announced per family, so each source sends its native format:
/// - Valkey picks the RDB version of a full sync from the version its replica reports with `REPLCONF version`
///   (none reported: RDB 11, and a Valkey 9 source holding a hash with field expiries then fails with
///   `Can't store key (db 0) in RDB version 11` and drops the link). Ferry reports `9.1.0`: Valkey 9.0 and 9.1
///   send `VALKEY080`, which ferry reads; a later Valkey keeps to that format for this replica.
/// - Redis always sends its own newest version (12 for 7.4 to 8.2, 13 for 8.4) and knows no such option, so it
///   is not sent to Redis (`INFO server` tells the family; when `INFO` is not allowed it is sent anyway and a
///   refusal is ignored).
///
/// A source that closes the link after `+FULLRESYNC` without sending any RDB could not produce one for this
/// replica (a failed fork, or a key its RDB version cannot hold): that is an `Error::Protocol` saying so, to
/// tell apart from a link lost mid-transfer.
///
/// Returns `Ok(None)` when the source answered `-NOMASTERLINK`/`-LOADING`: the caller reconnects after a
/// backoff (the source may close the link after such a reply).
pub async fn handshake(
    conn: &mut Connection,
    resume: Option<(&str, u64)>,
    opts: &HandshakeOptions,
    psync: &str,
) -> Result<Option<Handshake>, Error> {
    // PING: an error that only says we may not run PING yet (auth) is fine, like redis-server's replica.
    match conn.call(&["PING"]).await {
        Ok(_) => {}
        Err(e) => match e.server_error() {
            Some(se) if matches!(se.code(), "NOAUTH" | "NOPERM") => {
                return Err(Error::Refused(format!(
                    "PING: {} {}",
                    se.code(),
                    se.message()
                )))
            }
            Some(se) if se.code() == "LOADING" || se.code() == "MASTERDOWN" => return Ok(None),
            Some(_) => {}
            None => return Err(e.into()),
        },
    }
    // The replica version ferry reports to Valkey: the newest whose full-sync format (VALKEY080) ferry reads.
    const VALKEY_REPLICA_VERSION: &str = "9.1.0";
    let source = match ferry_resp::probe::info_server(conn).await {
        Ok(text) => {
            let field = |name: &str| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k == name).then(|| v.trim().to_string())
                })
            };
            match field("valkey_version") {
                Some(v) => Some(format!("valkey {v}")),
                None if field("server_name").as_deref() == Some("valkey") => {
                    Some("valkey".to_string())
                }
                None => field("redis_version").map(|v| format!("redis {v}")),
            }
        }
        Err(e) => match e.server_error() {
            // INFO and HELLO may be refused to a replication-only ACL user (Redis documents a replica's user as
            // `+psync +replconf +ping`): then the family stays unknown.
            Some(_) => None,
            None => return Err(e.into()),
        },
    };
    let port = opts.listening_port.to_string();
    replconf(conn, &["REPLCONF", "listening-port", &port]).await?;
    let valkey_or_unknown = match source.as_deref() {
        Some(s) => s.starts_with("valkey"),
        None => true,
    };
    if valkey_or_unknown {
        replconf(conn, &["REPLCONF", "version", VALKEY_REPLICA_VERSION]).await?;
    }
    replconf(conn, &["REPLCONF", "capa", "eof", "capa", "psync2"]).await?;
    let source_name = source.unwrap_or_else(|| "the source".to_string());

    let (replid, offset_arg) = match resume {
        Some((replid, offset)) => (replid.to_string(), (offset + 1).to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    debug!(%replid, offset = %offset_arg, command = psync, "sending PSYNC");
    conn.write_command(&[psync, replid.as_str(), offset_arg.as_str()]);
    conn.flush().await?;
    let reply = loop {
        let line = read_line(conn, opts.line_timeout).await?;
        if psync != "PSYNC" && line.first() == Some(&b'$') {
            // A server that decides between PSYNC and SYNC by the command's name (replication.c compares it
            // with "psync") serves a renamed PSYNC as SYNC: the RDB comes at once, without `+FULLRESYNC`, and
            // the stream follows it. Such a source can never continue a stream: every session copies all.
            let header = parse_rdb_header(&line)?.ok_or_else(|| {
                Error::Protocol(format!("malformed RDB header after {psync}: {line:?}"))
            })?;
            warn!(
                command = psync,
                "the source answered {psync} as SYNC (a server that renamed PSYNC itself): every reconnect \
                 copies everything again"
            );
            return Ok(Some(Handshake::Full {
                replid: SYNC_REPLID.to_string(),
                offset: 0,
                header,
            }));
        }
        let parsed = parse_psync_reply(&line).map_err(|e| match e {
            Error::Refused(m) if m.contains("unknown command") => Error::Refused(format!(
                "{m} (a service that renamed or disabled {psync}: give its name for this node with \
                 `psync_commands` / `--psync-command HOST:PORT=NAME` (RedisShake's `aws_psync`), or copy with \
                 a scan source)"
            )),
            e => e,
        })?;
        if let Some(reply) = parsed {
            break reply;
        }
    };
    match reply {
        PsyncReply::TryAgain(why) => {
            warn!(reason = %why, "the source cannot serve a replica yet, retrying");
            Ok(None)
        }
        PsyncReply::Continue { new_replid } => {
            let (old, offset) =
                resume.ok_or_else(|| Error::Protocol("+CONTINUE answered to PSYNC ? -1".into()))?;
            let replid = match new_replid {
                Some(new) if new != old => {
                    info!(old = %old, new = %new, offset, "source continues under a new replication id (PSYNC2)");
                    new
                }
                _ => old.to_string(),
            };
            Ok(Some(Handshake::Continue { replid, offset }))
        }
        PsyncReply::FullResync { replid, offset } => {
            let header = loop {
                let line = match read_line(conn, opts.line_timeout).await {
                    Ok(line) => line,
                    Err(Error::Resp(e)) if e.is_connection_lost() => {
                        return Err(Error::Protocol(format!(
                            "{source_name} closed the link after +FULLRESYNC without sending an RDB: it could not \
                             produce one for this replica ({e}). Its log says why: a failed fork, or a key its RDB \
                             version cannot hold (Valkey: `Can't store key ... in RDB version N`)"
                        )))
                    }
                    Err(e) => return Err(e),
                };
                if let Some(h) = parse_rdb_header(&line)? {
                    break h;
                }
            };
            debug!(%replid, offset, ?header, "full resync");
            Ok(Some(Handshake::Full {
                replid,
                offset,
                header,
            }))
        }
    }
}

async fn replconf(conn: &mut Connection, argv: &[&str]) -> Result<(), Error> {
    match conn.call(argv).await {
        Ok(Frame::Simple(_)) | Ok(_) => Ok(()),
        Err(e) => match e.server_error() {
            // Old servers do not know some REPLCONF options; redis-server's replica ignores these errors too.
            Some(se) => {
                warn!(command = argv[1], error = %se.message(), "the source refused REPLCONF, continuing");
                Ok(())
            }
            None => Err(e.into()),
        },
    }
}

async fn read_line(conn: &mut Connection, timeout: Duration) -> Result<Bytes, Error> {
    match tokio::time::timeout(timeout, conn.read_line()).await {
        Ok(line) => Ok(line?),
        Err(_) => Err(Error::Protocol(format!(
            "the source sent nothing for {}s during the handshake",
            timeout.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb";

    #[test]
    fn fullresync_reply_gives_replid_and_offset() {
        let line = format!("+FULLRESYNC {ID} 1234");
        assert_eq!(
            parse_psync_reply(line.as_bytes()).unwrap(),
            Some(PsyncReply::FullResync {
                replid: ID.into(),
                offset: 1234
            })
        );
    }

    #[test]
    fn continue_reply_with_and_without_new_replid() {
        assert_eq!(
            parse_psync_reply(b"+CONTINUE").unwrap(),
            Some(PsyncReply::Continue { new_replid: None })
        );
        let line = format!("+CONTINUE {ID}");
        assert_eq!(
            parse_psync_reply(line.as_bytes()).unwrap(),
            Some(PsyncReply::Continue {
                new_replid: Some(ID.into())
            })
        );
    }

    #[test]
    fn keepalive_newlines_before_reply_are_skipped() {
        assert_eq!(parse_psync_reply(b"").unwrap(), None);
        assert_eq!(parse_psync_reply(b"\r").unwrap(), None);
        assert_eq!(parse_rdb_header(b"").unwrap(), None);
    }

    #[test]
    fn nomasterlink_and_loading_are_retried_other_errors_refused() {
        assert!(matches!(
            parse_psync_reply(b"-NOMASTERLINK Can't SYNC while not connected with my master"),
            Ok(Some(PsyncReply::TryAgain(_)))
        ));
        assert!(matches!(
            parse_psync_reply(b"-LOADING Redis is loading the dataset in memory"),
            Ok(Some(PsyncReply::TryAgain(_)))
        ));
        assert!(matches!(
            parse_psync_reply(b"-ERR unknown command"),
            Err(Error::Refused(_))
        ));
        assert!(matches!(
            parse_psync_reply(b"+FULLRESYNC xyz 1"),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn rdb_header_disk_and_diskless() {
        assert_eq!(
            parse_rdb_header(b"$175").unwrap(),
            Some(RdbHeader::Sized(175))
        );
        let mark = [b'a'; 40];
        let mut line = b"$EOF:".to_vec();
        line.extend_from_slice(&mark);
        assert_eq!(parse_rdb_header(&line).unwrap(), Some(RdbHeader::Eof(mark)));
        assert!(parse_rdb_header(b"$EOF:short").is_err());
        assert!(parse_rdb_header(b"$-3").is_err());
        assert!(parse_rdb_header(b"+OK").is_err());
    }

    fn frame_all(header: RdbHeader, input: &[u8], chunk_sizes: &[usize]) -> (Vec<u8>, Vec<u8>) {
        let mut framer = RdbFramer::new(&header);
        let (mut rdb, mut rest) = (Vec::new(), Vec::new());
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let n = chunk_sizes[i % chunk_sizes.len()].min(input.len() - pos);
            i += 1;
            let out = framer.feed(Bytes::copy_from_slice(&input[pos..pos + n]));
            pos += n;
            rdb.extend_from_slice(&out.rdb);
            rest.extend_from_slice(&out.rest);
        }
        assert!(framer.is_done());
        (rdb, rest)
    }

    #[test]
    fn sized_rdb_is_split_from_following_stream_at_any_chunking() {
        let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut input = body.clone();
        input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for sizes in [&[1usize][..], &[7], &[299, 2], &[1000], &[3, 40, 1]] {
            let (rdb, rest) = frame_all(RdbHeader::Sized(300), &input, sizes);
            assert_eq!(rdb, body);
            assert_eq!(rest, b"*1\r\n$4\r\nPING\r\n");
        }
    }

    #[test]
    fn diskless_mark_split_across_reads_is_found() {
        let mark: [u8; 40] = *b"0123456789abcdef0123456789abcdef01234567";
        let body: Vec<u8> = (0..500u32).map(|i| (i * 7) as u8).collect();
        let mut input = body.clone();
        input.extend_from_slice(&mark);
        input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for sizes in [
            &[1usize][..],
            &[2],
            &[39],
            &[40],
            &[41],
            &[13, 29],
            &[499, 3, 38],
            &[5000],
        ] {
            let (rdb, rest) = frame_all(RdbHeader::Eof(mark), &input, sizes);
            assert_eq!(rdb, body, "chunks {sizes:?}");
            assert_eq!(rest, b"*1\r\n$4\r\nPING\r\n", "chunks {sizes:?}");
        }
    }

    #[test]
    fn diskless_mark_at_the_end_of_a_read_completes_the_rdb() {
        let mark = [b'z'; 40];
        let mut framer = RdbFramer::new(&RdbHeader::Eof(mark));
        let first = framer.feed(Bytes::from_static(b"REDIS0010"));
        assert!(!first.done);
        let out = framer.feed(Bytes::copy_from_slice(&mark));
        assert!(out.done);
        let mut rdb = first.rdb.to_vec();
        rdb.extend_from_slice(&out.rdb);
        assert_eq!(rdb, b"REDIS0010");
        assert!(out.rest.is_empty());
    }
}
