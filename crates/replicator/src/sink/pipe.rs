//! One pipelined connection to a target server: commands are written with what their reply must be, replies
//! are read back in order, and the windows (commands and bytes not yet answered) bound what is in flight. The
//! writers decide what to send and what a reply means; this type only moves bytes.

use std::collections::VecDeque;

use bytes::Bytes;
use ferry_resp::{Connection, Frame};

use crate::error::Error;
use crate::pipeline::wire_size;

/// Flush the connection's write buffer once this many bytes are buffered.
const FLUSH_BYTES: usize = 256 * 1024;

/// A pipelined connection whose in-flight commands carry a `P` each (what their reply must be).
pub(crate) struct Pipe<P> {
    conn: Connection,
    pending: VecDeque<(P, usize)>,
    inflight_bytes: usize,
    unflushed_bytes: usize,
    window_commands: usize,
    window_bytes: usize,
    /// The database selected on the connection once everything written is executed.
    db: i64,
    /// Bytes of commands written so far.
    pub(crate) bytes_written: u64,
}

impl<P> Pipe<P> {
    /// Wraps a connected connection currently in database `db`.
    pub(crate) fn new(
        conn: Connection,
        db: i64,
        window_commands: usize,
        window_bytes: usize,
    ) -> Self {
        Pipe {
            conn,
            pending: VecDeque::new(),
            inflight_bytes: 0,
            unflushed_bytes: 0,
            window_commands,
            window_bytes,
            db,
            bytes_written: 0,
        }
    }

    /// The peer's address, for logs.
    pub(crate) fn peer(&self) -> String {
        self.conn.peer_addr().to_string()
    }

    /// Commands written and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The database the connection is in once everything written has run.
    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// Writes a command (buffered; see [`Pipe::flush`]) whose reply is accounted by `pending`.
    pub(crate) fn write<A: AsRef<[u8]>>(&mut self, argv: &[A], pending: P) {
        let size = wire_size(argv);
        self.conn.write_command(argv);
        self.unflushed_bytes += size;
        self.inflight_bytes += size;
        self.bytes_written += size as u64;
        self.pending.push_back((pending, size));
    }

    /// Writes a command already in wire form (`head` then `body`), whose reply is accounted by `pending`.
    pub(crate) fn write_encoded(&mut self, head: &[u8], body: &[u8], pending: P) {
        let size = head.len() + body.len();
        self.conn.write_raw(head);
        self.conn.write_raw(body);
        self.unflushed_bytes += size;
        self.inflight_bytes += size;
        self.bytes_written += size as u64;
        self.pending.push_back((pending, size));
    }

    /// Writes `SELECT db` if the connection will be elsewhere, with `pending` for its reply.
    pub(crate) fn select(&mut self, db: i64, pending: impl FnOnce() -> P) {
        if db != self.db {
            let argv = [Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
            self.write(&argv, pending());
            self.db = db;
        }
    }

    /// Records that a command written (inside a transaction) selects `db`.
    pub(crate) fn set_db(&mut self, db: i64) {
        self.db = db;
    }

    /// True when the windows are full: read replies before writing more.
    pub(crate) fn is_full(&self) -> bool {
        self.pending.len() > self.window_commands || self.inflight_bytes > self.window_bytes
    }

    /// True until the windows have room again: the byte window below its limit, and the command window with room
    /// for an eighth of it (small commands fill the command window first; taking them one reply at a time would
    /// send each alone).
    pub(crate) fn needs_room(&self) -> bool {
        self.pending.len() + self.window_commands / 8 > self.window_commands
            || self.inflight_bytes > self.window_bytes
    }

    /// Sends what is buffered when it is big enough to be worth a write.
    pub(crate) async fn flush_if_big(&mut self) -> Result<(), Error> {
        if self.unflushed_bytes >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends everything buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        if self.unflushed_bytes > 0 {
            self.conn.flush().await?;
            self.unflushed_bytes = 0;
        }
        Ok(())
    }

    /// The reply of the oldest command in flight, with what it must be; `None` when nothing is in flight.
    /// The connection's read timeout bounds the wait.
    pub(crate) async fn read_reply(&mut self) -> Result<Option<(P, Frame)>, Error> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        self.flush().await?;
        let reply = self.conn.read_frame().await?;
        let (pending, size) = self
            .pending
            .pop_front()
            .ok_or_else(|| Error::Protocol("a reply without a command".into()))?;
        self.inflight_bytes -= size;
        Ok(Some((pending, reply)))
    }

    /// Commands sent together and their replies, out of the pipeline: only when nothing is in flight. Error
    /// replies stay in place as [`Frame::Error`] (a command refused inside `MULTI`, an `EXECABORT`).
    pub(crate) async fn call_all(&mut self, cmds: &[Vec<Bytes>]) -> Result<Vec<Frame>, Error> {
        if !self.pending.is_empty() {
            return Err(Error::Protocol(
                "a direct call while replies are pending".into(),
            ));
        }
        self.flush().await?;
        self.bytes_written += cmds.iter().map(|c| wire_size(c) as u64).sum::<u64>();
        Ok(self.conn.pipeline(cmds).await?)
    }

    /// The connection, for a few direct calls (`ferry_resp::probe`): only when nothing is in flight. The caller
    /// leaves it in the database [`Pipe::db`] says.
    pub(crate) async fn direct(&mut self) -> Result<&mut Connection, Error> {
        if !self.pending.is_empty() {
            return Err(Error::Protocol(
                "a direct call while replies are pending".into(),
            ));
        }
        self.flush().await?;
        Ok(&mut self.conn)
    }

    /// A command and its reply, out of the pipeline: only when nothing is in flight.
    pub(crate) async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        if !self.pending.is_empty() {
            return Err(Error::Protocol(
                "a direct call while replies are pending".into(),
            ));
        }
        self.flush().await?;
        self.bytes_written += wire_size(argv) as u64;
        Ok(self.conn.call(argv).await?)
    }
}
