//! The source: a PSYNC replica of the Redis being copied.
//!
//! [`psync`] holds the handshake. After it, a task of its own (`link`) reads the connection at network speed
//! into a bounded spool (memory, then a local file) and answers `REPLCONF ACK` with the offset the target
//! committed, so a slow target neither makes the source drop ferry (`repl-timeout`, the replica output-buffer
//! limit) nor makes `WAIT` on the source lie. [`Source`] takes the RDB and the stream from the spool;
//! [`StreamParser`] turns the stream into [`Unit`]s, counting the source's replication offset to the byte
//! (every frame counts, `PING` and `REPLCONF GETACK` included) and following `SELECT`.

pub mod aof;
pub(crate) mod file;
mod link;
pub mod psync;
pub mod scan;
mod spool;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_resp::{ConnectOptions, Connection, Decoder, Frame, Limits};
use tokio::sync::{watch, Notify};
use tracing::info;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::pipeline::ttl::make_expiry_absolute;
use crate::pipeline::{Command, Unit};
pub(crate) use link::now_ms;
use psync::{Handshake, HandshakeOptions, RdbFramer, RdbHeader};
pub use spool::SpoolOptions;
use spool::{Piece, SpoolGauge, SpoolReader};

/// What the stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Commands to apply: one command, or a source `MULTI`/`EXEC` group.
    Unit(Unit),
    /// The offset moved without anything to apply (`PING`, `SELECT`, `REPLCONF`).
    Skipped {
        /// The source offset after the skipped frame.
        end_offset: u64,
        /// The database the stream has selected at that offset.
        db: i64,
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
    received_ms: i64,
}

impl StreamParser {
    /// A parser for a stream that starts at `offset` with database `db` selected.
    ///
    /// After `+FULLRESYNC` the source sends `SELECT` before the first command, so any `db` does. After
    /// `+CONTINUE` it does not repeat the `SELECT` it sent before the offset (a Redis replica keeps that
    /// database in its cached master, and in `repl-stream-db` of its RDB): `db` must be the database the
    /// stream had selected at `offset`, as the checkpoint recorded it.
    pub fn new(offset: u64, db: i64) -> StreamParser {
        StreamParser {
            decoder: Decoder::with_limits(Limits::default()),
            buf: BytesMut::new(),
            offset,
            db,
            txn: None,
            boundary: (offset, db),
            received_ms: 0,
        }
    }

    /// Appends bytes read from the source now.
    pub fn feed(&mut self, data: &[u8]) {
        self.feed_at(data, link::now_ms());
    }

    /// Appends bytes the source sent at `received_ms` (Unix milliseconds): relative expiries of the commands
    /// they complete are made absolute from that time.
    pub fn feed_at(&mut self, data: &[u8], received_ms: i64) {
        self.buf.extend_from_slice(data);
        self.received_ms = received_ms;
    }

    /// Bytes received and not decoded yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The source offset of everything decoded so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The database the stream has selected after everything decoded so far.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The last offset outside a source transaction, and the database selected there: where a reconnect asks
    /// PSYNC to continue from (a transaction is never split).
    pub fn boundary(&self) -> (u64, i64) {
        self.boundary
    }

    /// An annotation line (`#...`, how an append-only file marks times) at the start of what is buffered, without
    /// its line end; `None` when the buffer starts with anything else or the line is not complete yet. Only
    /// between commands: a replication stream has none.
    pub(crate) fn next_annotation(&mut self) -> Option<Bytes> {
        if self.buf.first() != Some(&b'#') {
            return None;
        }
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line = self.buf.split_to(end + 1).freeze();
        self.offset += line.len() as u64;
        let text = line.slice(..end);
        Some(match text.last() {
            Some(b'\r') => text.slice(..text.len() - 1),
            _ => text,
        })
    }

    /// Whether what is buffered starts with an annotation line (complete or not).
    pub(crate) fn at_annotation(&self) -> bool {
        self.buf.first() == Some(&b'#')
    }

    /// Whether a source transaction is open (its `MULTI` read, its `EXEC` not yet).
    pub(crate) fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, Error> {
        loop {
            let before = self.buf.len();
            let Some(frame) = self.decoder.decode(&mut self.buf)? else {
                return Ok(None);
            };
            self.offset += (before - self.buf.len()) as u64;
            let mut argv = command_args(frame)?;
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
                    StreamEvent::Skipped {
                        end_offset,
                        db: self.db,
                    }
                }
                b"ping" => StreamEvent::Skipped {
                    end_offset,
                    db: self.db,
                },
                b"replconf" => {
                    if argv
                        .get(1)
                        .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"))
                    {
                        StreamEvent::GetAck { end_offset }
                    } else {
                        StreamEvent::Skipped {
                            end_offset,
                            db: self.db,
                        }
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
                        end_db: self.db,
                        report: Vec::new(),
                    })
                }
                _ => {
                    make_expiry_absolute(&mut argv, self.received_ms);
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
                            end_db: self.db,
                            report: Vec::new(),
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
    /// How often `REPLCONF ACK` is sent (redis-server: every second); it is also sent whenever the target's
    /// committed offset moves.
    pub ack_interval: Duration,
    /// The link is considered dead when nothing arrives for this long while ferry is reading (the source
    /// pings every `repl-ping-replica-period`, 10 s by default).
    pub idle_timeout: Duration,
    /// First delay between attempts while the source answers `-LOADING` / `-NOMASTERLINK` (it doubles, up to
    /// 5 s).
    pub retry_backoff: Duration,
    /// Where what the source sends waits while the target is behind.
    pub spool: SpoolOptions,
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
            spool: SpoolOptions::default(),
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

/// Where a session asks the source to continue from: the checkpoint's history, offset and the database the
/// stream had selected there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume<'a> {
    /// The replication id.
    pub replid: &'a str,
    /// The last offset the target holds.
    pub offset: u64,
    /// The database the stream had selected at `offset`.
    pub db: i64,
}

/// A live replication link to the source.
pub struct Source {
    spool: SpoolReader,
    link: tokio::task::JoinHandle<()>,
    committed: watch::Sender<u64>,
    ack_now: Arc<Notify>,
    parser: StreamParser,
    rdb_done: bool,
    rdb_bytes: u64,
    peer: std::net::SocketAddr,
    stats: Arc<link::LinkStats>,
}

/// Reads what the source link is doing while the job waits on the target.
#[derive(Clone)]
pub(crate) struct SourceMonitor {
    stats: Arc<link::LinkStats>,
    spool: SpoolGauge,
}

impl SourceMonitor {
    /// The source offset of everything received (decoded or still spooled).
    pub(crate) fn received_offset(&self) -> u64 {
        self.stats
            .received_offset
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The offset the last `REPLCONF ACK` reported.
    pub(crate) fn acked_offset(&self) -> u64 {
        self.stats
            .acked_offset
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `REPLCONF ACK`s sent on this link.
    pub(crate) fn acks_sent(&self) -> u64 {
        self.stats.acks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes received and not yet taken by the job.
    pub(crate) fn spooled_bytes(&self) -> u64 {
        self.spool.held_bytes()
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("peer", &self.peer)
            .field("offset", &self.parser.offset())
            .finish_non_exhaustive()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.link.abort();
    }
}

impl Source {
    /// Connects and runs the handshake, retrying `-LOADING` / `-NOMASTERLINK` with backoff for up to
    /// `opts.handshake.retry_for`. `resume` is where to continue from (`None`: a full resync).
    ///
    /// Must run inside a tokio runtime: the link runs as a task of its own.
    pub async fn open(
        opts: &SourceOptions,
        resume: Option<Resume<'_>>,
    ) -> Result<(Source, Start), Error> {
        let deadline = std::time::Instant::now() + opts.handshake.retry_for;
        let mut backoff = Backoff::new(opts.retry_backoff, Duration::from_secs(5));
        loop {
            let mut conn = Connection::connect(&opts.connect).await?;
            // Every reply of the handshake is bounded, so a peer that never answers is noticed.
            conn.set_read_timeout(Some(opts.handshake.line_timeout));
            let hs = psync::handshake(
                &mut conn,
                resume.map(|r| (r.replid, r.offset)),
                &opts.handshake,
                opts.handshake
                    .psync_command_for(&opts.connect.host, opts.connect.port),
            )
            .await?;
            match hs {
                Some(hs) => {
                    conn.set_read_timeout(None);
                    let db = resume.map_or(0, |r| r.db);
                    return Ok(Source::started(conn, opts, hs, db));
                }
                None => {
                    let delay = backoff.next_delay();
                    if std::time::Instant::now() + delay >= deadline {
                        return Err(Error::Refused(format!(
                            "the source was still loading or without a master link after {}s",
                            opts.handshake.retry_for.as_secs()
                        )));
                    }
                    drop(conn);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn started(conn: Connection, opts: &SourceOptions, hs: Handshake, db: i64) -> (Source, Start) {
        let (start, offset, framer, committed) = match hs {
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
                // Nothing of this history is in the target yet.
                (
                    Start::Full { replid, offset },
                    offset,
                    Some(RdbFramer::new(&header)),
                    0,
                )
            }
            Handshake::Continue { replid, offset } => {
                info!(%replid, offset, db, "partial resync (+CONTINUE)");
                (Start::Continue { replid, offset }, offset, None, offset)
            }
        };
        let rdb_done = framer.is_none();
        let (writer, reader) = spool::spool(opts.spool.clone());
        let (committed_tx, committed_rx) = watch::channel(committed);
        let ack_now = Arc::new(Notify::new());
        let peer = conn.peer_addr();
        let stats = Arc::new(link::LinkStats::default());
        stats
            .received_offset
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        let parts = link::LinkParts {
            stats: stats.clone(),
            framer,
            spool: writer,
            committed: committed_rx,
            ack_now: ack_now.clone(),
            ack_interval: opts.ack_interval,
            idle_timeout: opts.idle_timeout,
            connect: opts.connect.clone(),
        };
        let link = tokio::spawn(link::run(conn, parts));
        let source = Source {
            spool: reader,
            link,
            committed: committed_tx,
            ack_now,
            parser: StreamParser::new(offset, db),
            rdb_done,
            rdb_bytes: 0,
            peer,
            stats,
        };
        (source, start)
    }

    /// The next chunk of the RDB, or `None` once it is complete (the stream follows).
    pub async fn read_rdb(&mut self) -> Result<Option<Bytes>, Error> {
        if self.rdb_done {
            return Ok(None);
        }
        match self.spool.pop().await? {
            Piece::Rdb(chunk) => {
                self.rdb_bytes += chunk.len() as u64;
                Ok(Some(chunk))
            }
            Piece::RdbEnd => {
                self.rdb_done = true;
                Ok(None)
            }
            Piece::Stream { .. } => Err(Error::Protocol(
                "stream bytes before the end of the RDB".into(),
            )),
        }
    }

    /// RDB bytes read so far.
    pub fn rdb_bytes(&self) -> u64 {
        self.rdb_bytes
    }

    /// The next event of the stream.
    pub async fn next_event(&mut self) -> Result<StreamEvent, Error> {
        if !self.rdb_done {
            return Err(Error::Protocol("the RDB was not read to its end".into()));
        }
        loop {
            if let Some(event) = self.parser.next_event()? {
                if let StreamEvent::GetAck { .. } = event {
                    self.ack_now.notify_one();
                }
                return Ok(event);
            }
            match self.spool.pop().await? {
                Piece::Stream { data, at_ms } => self.parser.feed_at(&data, at_ms),
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {other:?} in the command stream"
                    )))
                }
            }
        }
    }

    /// True when stream bytes are waiting (in the parser or the spool): the caller can keep batching.
    pub fn has_buffered(&self) -> bool {
        self.parser.buffered() > 0 || !self.spool.is_empty()
    }

    /// Bytes received from the source and not yet taken by the job (memory and spool file).
    pub fn spooled_bytes(&self) -> u64 {
        self.spool.held_bytes()
    }

    /// The source offset of everything decoded so far.
    pub fn offset(&self) -> u64 {
        self.parser.offset()
    }

    /// The database the stream has selected at [`Source::resume_offset`] (what a checkpoint there records).
    pub fn stream_db(&self) -> i64 {
        self.parser.boundary().1
    }

    /// A handle on the link's counters, readable while the job waits on the target.
    pub(crate) fn monitor(&self) -> SourceMonitor {
        SourceMonitor {
            stats: self.stats.clone(),
            spool: self.spool.gauge(),
        }
    }

    /// Where a reconnect continues from: the last offset outside a source transaction.
    pub fn resume_offset(&self) -> u64 {
        self.parser.boundary().0
    }

    /// Moves every offset of a stream served as `SYNC` (which starts at 0, see [`psync::SYNC_REPLID`]) to
    /// `offset`, the one its RDB says it was made at: the stream's offsets then count as the source's. Before
    /// anything of the stream is decoded.
    pub(crate) fn rebase(&mut self, offset: u64) {
        let delta = offset.saturating_sub(self.parser.offset);
        self.parser.offset += delta;
        self.parser.boundary.0 += delta;
        self.stats
            .received_offset
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reports that the target has committed everything up to `offset`: what `REPLCONF ACK` tells the source
    /// from now on (an offset lower than one reported before is ignored).
    pub fn acknowledge(&self, offset: u64) {
        self.committed.send_if_modified(|current| {
            if offset > *current {
                *current = offset;
                true
            } else {
                false
            }
        });
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
        let mut parser = StreamParser::new(1000, 0);
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
                end_offset: ends[0],
                db: 0
            }
        );
        assert!(
            matches!(&events[1], StreamEvent::Unit(u) if u.end_offset == ends[1] && !u.transaction)
        );
        assert_eq!(
            events[2],
            StreamEvent::Skipped {
                end_offset: ends[2],
                db: 0
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
        let mut whole = StreamParser::new(0, 0);
        whole.feed(&stream);
        let expected = all_events(&mut whole);
        assert_eq!(expected.len(), 3);
        let mut bytewise = StreamParser::new(0, 0);
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
        let mut parser = StreamParser::new(0, 0);
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
        let mut parser = StreamParser::new(0, 0);
        parser.feed(&stream);
        let events = all_events(&mut parser);
        assert_eq!(events.len(), 1);
        assert_eq!(parser.boundary().0, before_multi);
        assert_eq!(parser.offset(), stream.len() as u64);
    }

    #[test]
    fn a_resumed_stream_without_select_stays_in_the_seeded_database() {
        // After +CONTINUE the source does not repeat its SELECT: the checkpoint's database applies.
        let mut stream = cmd(&["INCR", "n"]);
        stream.extend(cmd(&["MULTI"]));
        stream.extend(cmd(&["SET", "a", "1"]));
        stream.extend(cmd(&["SELECT", "4"]));
        stream.extend(cmd(&["SET", "b", "2"]));
        stream.extend(cmd(&["EXEC"]));
        stream.extend(cmd(&["DEL", "c"]));
        let mut parser = StreamParser::new(500, 2);
        parser.feed(&stream);
        let events = all_events(&mut parser);
        let units: Vec<&Unit> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Unit(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(units.len(), 3);
        assert_eq!((units[0].commands[0].db, units[0].end_db), (2, 2));
        let dbs: Vec<i64> = units[1].commands.iter().map(|c| c.db).collect();
        assert_eq!(dbs, [2, 4]);
        assert_eq!(units[1].end_db, 4);
        assert_eq!((units[2].commands[0].db, units[2].end_db), (4, 4));
        assert_eq!(parser.boundary(), (500 + stream.len() as u64, 4));
    }

    #[test]
    fn relative_expiries_of_the_stream_are_made_absolute_at_receipt() {
        let mut parser = StreamParser::new(0, 0);
        parser.feed_at(&cmd(&["SETEX", "k", "10", "v"]), 1_000_000);
        let events = all_events(&mut parser);
        let StreamEvent::Unit(unit) = &events[0] else {
            panic!("expected a unit, got {events:?}")
        };
        let argv: Vec<&[u8]> = unit.commands[0].argv.iter().map(|a| &a[..]).collect();
        assert_eq!(argv, [&b"SET"[..], b"k", b"v", b"PXAT", b"1010000"]);
        // The offset counts the bytes the source sent, not the rewritten command.
        assert_eq!(
            parser.offset(),
            cmd(&["SETEX", "k", "10", "v"]).len() as u64
        );
    }

    #[test]
    fn exec_without_multi_and_non_command_frames_are_protocol_errors() {
        let mut parser = StreamParser::new(0, 0);
        parser.feed(&cmd(&["EXEC"]));
        assert!(matches!(parser.next_event(), Err(Error::Protocol(_))));
        let mut parser = StreamParser::new(0, 0);
        parser.feed(b"+OK\r\n");
        assert!(matches!(parser.next_event(), Err(Error::Protocol(_))));
    }
}
