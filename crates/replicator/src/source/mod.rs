//! The source: a PSYNC replica of the Redis being copied.
//!
//! [`psync`] holds the handshake. [`StreamParser`] turns the bytes of the replication stream into [`Unit`]s,
//! counting the source's replication offset to the byte (every frame counts, `PING` and `REPLCONF GETACK`
//! included). [`Source`] drives both over a connection and answers `REPLCONF ACK`.

pub mod psync;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferry_resp::{ConnectOptions, Connection, Decoder, Frame, Limits};
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::pipeline::{Command, Unit};
use psync::{Handshake, HandshakeOptions, RdbFramer, RdbHeader};

/// What the stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Commands to apply: one command, or a source `MULTI`/`EXEC` group.
    Unit(Unit),
    /// The offset moved without anything to apply (`PING`, `SELECT`, `REPLCONF`).
    Skipped {
        /// The source offset after the skipped frame.
        end_offset: u64,
    },
    /// The source asked for `REPLCONF ACK` (`REPLCONF GETACK`); the offset includes that request. It may come
    /// inside a source transaction, so its offset is not a place to checkpoint.
    GetAck {
        /// The source offset after the request.
        end_offset: u64,
    },
}

/// Decodes the replication stream and counts offsets; no I/O.
#[derive(Debug)]
pub struct StreamParser {
    decoder: Decoder,
    buf: BytesMut,
    offset: u64,
    db: i64,
    txn: Option<Vec<Command>>,
    boundary: (u64, i64),
}

impl StreamParser {
    /// A parser for a stream that starts at `offset`, in database 0 (the source sends `SELECT` first).
    pub fn new(offset: u64) -> StreamParser {
        StreamParser {
            decoder: Decoder::with_limits(Limits::default()),
            buf: BytesMut::new(),
            offset,
            db: 0,
            txn: None,
            boundary: (offset, 0),
        }
    }

    /// Appends bytes read from the source.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not decoded yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The source offset of everything decoded so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The last offset outside a source transaction, and the database selected there: where a reconnect asks
    /// PSYNC to continue from (a transaction is never split).
    pub fn boundary(&self) -> (u64, i64) {
        self.boundary
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, Error> {
        loop {
            let before = self.buf.len();
            let Some(frame) = self.decoder.decode(&mut self.buf)? else {
                return Ok(None);
            };
            self.offset += (before - self.buf.len()) as u64;
            let argv = command_args(frame)?;
            let name = argv[0].to_ascii_lowercase();
            let end_offset = self.offset;
            let event = match name.as_slice() {
                b"select" => {
                    self.db = argv
                        .get(1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| {
                            Error::Protocol("SELECT without a database number".into())
                        })?;
                    StreamEvent::Skipped { end_offset }
                }
                b"ping" => StreamEvent::Skipped { end_offset },
                b"replconf" => {
                    if argv
                        .get(1)
                        .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"))
                    {
                        StreamEvent::GetAck { end_offset }
                    } else {
                        StreamEvent::Skipped { end_offset }
                    }
                }
                b"multi" => {
                    if self.txn.is_some() {
                        return Err(Error::Protocol(
                            "nested MULTI in the replication stream".into(),
                        ));
                    }
                    self.txn = Some(Vec::new());
                    continue;
                }
                b"exec" => {
                    let commands = self.txn.take().ok_or_else(|| {
                        Error::Protocol("EXEC without MULTI in the replication stream".into())
                    })?;
                    StreamEvent::Unit(Unit {
                        commands,
                        transaction: true,
                        end_offset,
                    })
                }
                _ => {
                    let command = Command {
                        db: self.db,
                        argv,
                        end_offset,
                    };
                    match &mut self.txn {
                        Some(txn) => {
                            txn.push(command);
                            continue;
                        }
                        None => StreamEvent::Unit(Unit {
                            commands: vec![command],
                            transaction: false,
                            end_offset,
                        }),
                    }
                }
            };
            match (&self.txn, &event) {
                (None, _) => self.boundary = (self.offset, self.db),
                // Inside a transaction only a GETACK is reported (it needs an answer); the offset is not a
                // boundary there.
                (Some(_), StreamEvent::GetAck { .. }) => {}
                (Some(_), _) => continue,
            }
            return Ok(Some(event));
        }
    }
}

/// The arguments of a command frame: an array of bulk strings, not empty.
fn command_args(frame: Frame) -> Result<Vec<Bytes>, Error> {
    let items = match frame {
        Frame::Array(items) if !items.is_empty() => items,
        other => {
            return Err(Error::Protocol(format!(
                "expected a command in the replication stream, found {}",
                kind(&other)
            )))
        }
    };
    items
        .into_iter()
        .map(|f| match f {
            Frame::Bulk(b) | Frame::Simple(b) => Ok(b),
            Frame::Integer(i) => Ok(Bytes::from(i.to_string())),
            other => Err(Error::Protocol(format!(
                "unexpected {} inside a command of the replication stream",
                kind(&other)
            ))),
        })
        .collect()
}

fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Simple(_) => "a simple string",
        Frame::Error(_) => "an error",
        Frame::Integer(_) => "an integer",
        Frame::Bulk(_) => "a bulk string",
        Frame::Array(_) => "an array",
        _ => "a non-RESP2 frame",
    }
}

/// How to reach and follow the source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Address, credentials, TLS of the source.
    pub connect: ConnectOptions,
    /// Handshake details.
    pub handshake: HandshakeOptions,
    /// How often `REPLCONF ACK` is sent (redis-server: every second).
    pub ack_interval: Duration,
    /// The link is considered dead when nothing arrives for this long (the source pings every
    /// `repl-ping-replica-period`, 10 s by default).
    pub idle_timeout: Duration,
    /// Backoff between attempts while the source answers `-LOADING` / `-NOMASTERLINK`.
    pub retry_backoff: Duration,
}

impl SourceOptions {
    /// Options with the defaults for a source at `connect`.
    pub fn new(connect: ConnectOptions) -> SourceOptions {
        SourceOptions {
            connect,
            handshake: HandshakeOptions::default(),
            ack_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(500),
        }
    }
}

/// How a replication session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A full resync: read the RDB with [`Source::read_rdb`] first.
    Full {
        /// The source's replication id.
        replid: String,
        /// The offset the RDB corresponds to.
        offset: u64,
    },
    /// A partial resync from `offset`.
    Continue {
        /// The replication id (new if the source was promoted).
        replid: String,
        /// The offset the stream continues from.
        offset: u64,
    },
}

/// A live replication link to the source.
pub struct Source {
    conn: Connection,
    opts: SourceOptions,
    framer: Option<RdbFramer>,
    parser: StreamParser,
    next_ack: Instant,
    last_read: Instant,
    rdb_bytes: u64,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("peer", &self.conn.peer_addr())
            .field("offset", &self.parser.offset())
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Connects and runs the handshake, retrying `-LOADING` / `-NOMASTERLINK` with backoff for up to
    /// `opts.handshake.retry_for`. `resume` is the replid and offset to continue from.
    pub async fn open(
        opts: &SourceOptions,
        resume: Option<(&str, u64)>,
    ) -> Result<(Source, Start), Error> {
        let deadline = Instant::now() + opts.handshake.retry_for;
        let mut backoff = opts.retry_backoff;
        loop {
            let mut conn = Connection::connect(&opts.connect).await?;
            match psync::handshake(&mut conn, resume, &opts.handshake).await? {
                Some(hs) => return Ok(Source::started(conn, opts.clone(), hs)),
                None if Instant::now() + backoff < deadline => {
                    drop(conn);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                None => {
                    return Err(Error::Refused(format!(
                        "the source was still loading or without a master link after {}s",
                        opts.handshake.retry_for.as_secs()
                    )))
                }
            }
        }
    }

    fn started(conn: Connection, opts: SourceOptions, hs: Handshake) -> (Source, Start) {
        let now = Instant::now();
        let (start, offset, framer) = match hs {
            Handshake::Full {
                replid,
                offset,
                header,
            } => {
                if let RdbHeader::Sized(len) = header {
                    info!(%replid, offset, rdb_bytes = len, "full resync (disk-based RDB)");
                } else {
                    info!(%replid, offset, "full resync (diskless RDB)");
                }
                (
                    Start::Full { replid, offset },
                    offset,
                    Some(RdbFramer::new(&header)),
                )
            }
            Handshake::Continue { replid, offset } => {
                info!(%replid, offset, "partial resync (+CONTINUE)");
                (Start::Continue { replid, offset }, offset, None)
            }
        };
        let source = Source {
            conn,
            opts,
            framer,
            parser: StreamParser::new(offset),
            next_ack: now,
            last_read: now,
            rdb_bytes: 0,
        };
        (source, start)
    }

    /// The next chunk of the RDB, or `None` once it is complete (the stream follows).
    pub async fn read_rdb(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let Some(framer) = &self.framer else {
                return Ok(None);
            };
            if framer.is_done() {
                self.framer = None;
                // After a diskless transfer the source waits for a first ACK before it streams.
                self.send_ack().await?;
                return Ok(None);
            }
            let chunk = self.read_some().await?;
            let Some(framer) = &mut self.framer else {
                return Ok(None);
            };
            let out = framer.feed(chunk);
            if out.done {
                self.parser.feed(&out.rest);
            }
            self.rdb_bytes += out.rdb.len() as u64;
            if !out.rdb.is_empty() {
                return Ok(Some(out.rdb));
            }
        }
    }

    /// RDB bytes read so far.
    pub fn rdb_bytes(&self) -> u64 {
        self.rdb_bytes
    }

    /// The next event of the stream; sends `REPLCONF ACK` every `ack_interval` and on `GETACK`.
    pub async fn next_event(&mut self) -> Result<StreamEvent, Error> {
        if self.framer.is_some() {
            return Err(Error::Protocol("the RDB was not read to its end".into()));
        }
        loop {
            if Instant::now() >= self.next_ack {
                self.send_ack().await?;
            }
            if let Some(event) = self.parser.next_event()? {
                if let StreamEvent::GetAck { .. } = event {
                    self.send_ack().await?;
                }
                return Ok(event);
            }
            let wait = self.next_ack.saturating_duration_since(Instant::now());
            if let Some(chunk) = self.read_within(wait, 64 * 1024).await? {
                self.parser.feed(&chunk);
            }
        }
    }

    /// True when stream bytes are buffered and not decoded yet (the caller can keep batching).
    pub fn has_buffered(&self) -> bool {
        self.parser.buffered() > 0
    }

    /// The source offset of everything decoded so far.
    pub fn offset(&self) -> u64 {
        self.parser.offset()
    }

    /// Where a reconnect continues from: the last offset outside a source transaction.
    pub fn resume_offset(&self) -> u64 {
        self.parser.boundary().0
    }

    /// The source stream's selected database at [`Source::resume_offset`] (what a checkpoint there records).
    pub fn stream_db(&self) -> i64 {
        self.parser.boundary().1
    }

    /// Sends `REPLCONF ACK <offset>` now.
    pub async fn send_ack(&mut self) -> Result<(), Error> {
        let offset = self.parser.offset().to_string();
        self.conn
            .write_command(&["REPLCONF", "ACK", offset.as_str()]);
        self.conn.flush().await?;
        self.next_ack = Instant::now() + self.opts.ack_interval;
        debug!(offset = %offset, "REPLCONF ACK");
        Ok(())
    }

    async fn read_some(&mut self) -> Result<Bytes, Error> {
        loop {
            if let Some(chunk) = self.read_within(self.opts.ack_interval, 256 * 1024).await? {
                return Ok(chunk);
            }
        }
    }

    /// Up to `max` bytes of the source, or `None` when nothing came within `wait` (an error once the link
    /// has been idle for longer than the idle timeout); the source closing the link is an error.
    async fn read_within(&mut self, wait: Duration, max: usize) -> Result<Option<Bytes>, Error> {
        match tokio::time::timeout(wait, self.conn.read_raw(max)).await {
            Ok(chunk) => {
                let chunk = chunk?;
                if chunk.is_empty() {
                    return Err(ferry_resp::Error::Closed.into());
                }
                self.last_read = Instant::now();
                Ok(Some(chunk))
            }
            Err(_) => {
                self.check_idle()?;
                Ok(None)
            }
        }
    }

    fn check_idle(&self) -> Result<(), Error> {
        if self.last_read.elapsed() > self.opts.idle_timeout {
            warn!(
                idle_s = self.opts.idle_timeout.as_secs(),
                "the source sent nothing, dropping the link"
            );
            return Err(ferry_resp::Error::Timeout("read").into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(parts: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", parts.len()).into_bytes();
        for p in parts {
            out.extend_from_slice(format!("${}\r\n{}\r\n", p.len(), p).as_bytes());
        }
        out
    }

    fn all_events(parser: &mut StreamParser) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        while let Some(e) = parser.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn offsets_count_every_byte_including_ping_and_getack() {
        let mut stream = Vec::new();
        let parts: Vec<Vec<u8>> = vec![
            cmd(&["SELECT", "0"]),
            cmd(&["SET", "a", "1"]),
            cmd(&["PING"]),
            cmd(&["REPLCONF", "GETACK", "*"]),
            cmd(&["INCR", "n"]),
        ];
        for p in &parts {
            stream.extend_from_slice(p);
        }
        let mut parser = StreamParser::new(1000);
        parser.feed(&stream);
        let events = all_events(&mut parser);
        let mut end = 1000u64;
        let ends: Vec<u64> = parts
            .iter()
            .map(|p| {
                end += p.len() as u64;
                end
            })
            .collect();
        assert_eq!(
            events[0],
            StreamEvent::Skipped {
                end_offset: ends[0]
            }
        );
        assert!(
            matches!(&events[1], StreamEvent::Unit(u) if u.end_offset == ends[1] && !u.transaction)
        );
        assert_eq!(
            events[2],
            StreamEvent::Skipped {
                end_offset: ends[2]
            }
        );
        assert_eq!(
            events[3],
            StreamEvent::GetAck {
                end_offset: ends[3]
            }
        );
        assert!(matches!(&events[4], StreamEvent::Unit(u) if u.end_offset == ends[4]));
        assert_eq!(parser.offset(), 1000 + stream.len() as u64);
    }

    #[test]
    fn stream_split_at_every_byte_gives_the_same_events() {
        let mut stream = cmd(&["SELECT", "3"]);
        stream.extend(cmd(&["MULTI"]));
        stream.extend(cmd(&["INCR", "a"]));
        stream.extend(cmd(&["SET", "b", "x"]));
        stream.extend(cmd(&["EXEC"]));
        stream.extend(cmd(&["DEL", "c"]));
        let mut whole = StreamParser::new(0);
        whole.feed(&stream);
        let expected = all_events(&mut whole);
        assert_eq!(expected.len(), 3);
        let mut bytewise = StreamParser::new(0);
        let mut got = Vec::new();
        for b in &stream {
            bytewise.feed(std::slice::from_ref(b));
            got.extend(all_events(&mut bytewise));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn multi_exec_group_is_one_unit_with_select_tracked() {
        let mut stream = cmd(&["SELECT", "2"]);
        stream.extend(cmd(&["MULTI"]));
        stream.extend(cmd(&["INCR", "a"]));
        stream.extend(cmd(&["SELECT", "5"]));
        stream.extend(cmd(&["SET", "b", "x"]));
        stream.extend(cmd(&["EXEC"]));
        let mut parser = StreamParser::new(0);
        parser.feed(&stream);
        let events = all_events(&mut parser);
        let StreamEvent::Unit(unit) = &events[1] else {
            panic!("expected a unit, got {events:?}")
        };
        assert!(unit.transaction);
        assert_eq!(unit.commands.len(), 2);
        assert_eq!((unit.commands[0].db, unit.commands[1].db), (2, 5));
        assert_eq!(unit.end_offset, stream.len() as u64);
        assert_eq!(parser.boundary(), (stream.len() as u64, 5));
    }

    #[test]
    fn boundary_stays_before_an_unfinished_transaction() {
        let mut stream = cmd(&["SET", "a", "1"]);
        let before_multi = stream.len() as u64;
        stream.extend(cmd(&["MULTI"]));
        stream.extend(cmd(&["INCR", "a"]));
        let mut parser = StreamParser::new(0);
        parser.feed(&stream);
        let events = all_events(&mut parser);
        assert_eq!(events.len(), 1);
        assert_eq!(parser.boundary().0, before_multi);
        assert_eq!(parser.offset(), stream.len() as u64);
    }

    #[test]
    fn exec_without_multi_and_non_command_frames_are_protocol_errors() {
        let mut parser = StreamParser::new(0);
        parser.feed(&cmd(&["EXEC"]));
        assert!(matches!(parser.next_event(), Err(Error::Protocol(_))));
        let mut parser = StreamParser::new(0);
        parser.feed(b"+OK\r\n");
        assert!(matches!(parser.next_event(), Err(Error::Protocol(_))));
    }
}
