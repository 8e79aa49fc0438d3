//! The source link: a task of its own that reads the replication connection at network speed into the
//! [`spool`](super::spool) and answers the source with `REPLCONF ACK`, whatever the target is doing.
//!
//! What it acknowledges is what the target has committed (the job reports it through a watch channel), not
//! what was read or decoded, as a Redis replica acknowledges the offset it has applied (`reploff`), not the one
//! it has read. So `WAIT` on the source returns only once ferry's target holds the write. The ACK goes every
//! `ack_interval` (redis-server: every second), at once when the committed offset moves, and when the stream
//! asks for it (`REPLCONF GETACK`): the source never drops ferry for `repl-timeout` while the target is slow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_resp::{ConnectOptions, Connection, Frame};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::psync::RdbFramer;
use super::spool::{Piece, SpoolWriter};
use crate::error::Error;

/// Most bytes taken from the socket at once.
const READ_CHUNK: usize = 256 * 1024;

/// What the link did, readable while it runs (for the status, whatever the job is waiting for).
#[derive(Debug, Default)]
pub(crate) struct LinkStats {
    /// The source offset of the stream bytes received (the RDB does not count).
    pub received_offset: AtomicU64,
    /// The offset of the last `REPLCONF ACK` sent.
    pub acked_offset: AtomicU64,
    /// `REPLCONF ACK`s sent.
    pub acks: AtomicU64,
}

/// What the link task needs besides the connection.
pub(crate) struct LinkParts {
    /// The RDB framer of a full resync (`None`: the stream starts at once).
    pub framer: Option<RdbFramer>,
    /// Where what is read goes.
    pub spool: SpoolWriter,
    /// The offset the target committed.
    pub committed: watch::Receiver<u64>,
    /// Asks for an ACK now (the stream sent `REPLCONF GETACK`).
    pub ack_now: Arc<Notify>,
    /// How often to acknowledge.
    pub ack_interval: Duration,
    /// The link is dead when nothing arrives for this long while ferry is reading.
    pub idle_timeout: Duration,
    /// To ask the source, after it closed the link, for the limits that may explain why.
    pub connect: ConnectOptions,
    /// Counters shared with the job.
    pub stats: Arc<LinkStats>,
}

/// Runs the link until the connection fails or the reader is gone; a failure ends the spool with its error.
pub(crate) async fn run(mut conn: Connection, mut parts: LinkParts) {
    let mut stalled = Stalled::default();
    let result = pump(&mut conn, &mut parts, &mut stalled).await;
    if let Err(e) = result {
        // The source closing the link shows as the end of the stream or, when it had not read all ferry
        // sent (ACKs), as a reset on a read or a write.
        let e = match e {
            Error::Resp(ferry_resp::Error::Io(_) | ferry_resp::Error::Closed) => {
                Error::SourceClosed(why_closed(&parts.connect, stalled.total()).await)
            }
            e => e,
        };
        debug!(error = %e, "source link ended");
        parts.spool.close(e);
    }
}

/// How long the link stopped reading because the spool was full.
#[derive(Debug, Default)]
struct Stalled {
    since: Option<Instant>,
    total: Duration,
}

impl Stalled {
    fn update(&mut self, reading: bool) {
        match (reading, self.since) {
            (false, None) => self.since = Some(Instant::now()),
            (true, Some(since)) => {
                self.total += since.elapsed();
                self.since = None;
            }
            _ => {}
        }
    }

    fn total(&self) -> Duration {
        self.total + self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

async fn pump(
    conn: &mut Connection,
    parts: &mut LinkParts,
    stalled: &mut Stalled,
) -> Result<(), Error> {
    let mut framer = parts.framer.take();
    let LinkParts {
        spool,
        committed,
        ack_now,
        ack_interval,
        idle_timeout,
        stats,
        ..
    } = &*parts;
    let mut committed = committed.clone();
    let mut pending: std::collections::VecDeque<Piece> = std::collections::VecDeque::new();
    let mut rdb_done = framer.is_none();
    if framer.as_ref().is_some_and(RdbFramer::is_done) {
        pending.push_back(Piece::RdbEnd);
        rdb_done = true;
        framer = None;
    }
    let mut next_ack = Instant::now();
    let mut last_read = Instant::now();
    loop {
        if spool.reader_gone() {
            return Ok(());
        }
        while let Some(piece) = pending.pop_front() {
            if let Err(piece) = spool.try_push(piece)? {
                pending.push_front(piece);
                break;
            }
        }
        let can_read = pending.is_empty();
        if can_read && stalled.since.is_some() {
            // Reading again: the source's silence while ferry was not reading does not count.
            last_read = Instant::now();
        }
        stalled.update(can_read);
        tokio::select! {
            biased;
            changed = committed.changed(), if rdb_done => {
                if changed.is_err() {
                    return Ok(());
                }
                send_ack(conn, &mut committed, stats).await?;
                next_ack = Instant::now() + *ack_interval;
            }
            () = ack_now.notified(), if rdb_done => {
                send_ack(conn, &mut committed, stats).await?;
                next_ack = Instant::now() + *ack_interval;
            }
            () = tokio::time::sleep_until(next_ack) => {
                if rdb_done {
                    send_ack(conn, &mut committed, stats).await?;
                }
                next_ack = Instant::now() + *ack_interval;
                if can_read && last_read.elapsed() > *idle_timeout {
                    warn!(idle_s = idle_timeout.as_secs(), "the source sent nothing, dropping the link");
                    return Err(ferry_resp::Error::Timeout("read").into());
                }
            }
            () = spool.room(), if !can_read => {}
            chunk = conn.read_raw(READ_CHUNK), if can_read => {
                let chunk = chunk?;
                if chunk.is_empty() {
                    return Err(ferry_resp::Error::Closed.into());
                }
                last_read = Instant::now();
                match &mut framer {
                    None => {
                        stats.received_offset.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        pending.push_back(Piece::Stream { data: chunk, at_ms: now_ms() });
                    }
                    Some(f) => {
                        let out = f.feed(chunk);
                        if !out.rdb.is_empty() {
                            pending.push_back(Piece::Rdb(out.rdb));
                        }
                        if out.done {
                            pending.push_back(Piece::RdbEnd);
                            if !out.rest.is_empty() {
                                stats.received_offset.fetch_add(out.rest.len() as u64, Ordering::Relaxed);
                                pending.push_back(Piece::Stream { data: out.rest, at_ms: now_ms() });
                            }
                            framer = None;
                            rdb_done = true;
                            // After a diskless transfer the source waits for a first ACK before it streams.
                            send_ack(conn, &mut committed, stats).await?;
                            next_ack = Instant::now() + *ack_interval;
                        }
                    }
                }
            }
        }
    }
}

/// Sends `REPLCONF ACK <committed offset>`.
async fn send_ack(
    conn: &mut Connection,
    committed: &mut watch::Receiver<u64>,
    stats: &LinkStats,
) -> Result<(), Error> {
    let offset = *committed.borrow_and_update();
    let text = offset.to_string();
    conn.write_command(&["REPLCONF", "ACK", text.as_str()]);
    conn.flush().await?;
    stats.acked_offset.store(offset, Ordering::Relaxed);
    stats.acks.fetch_add(1, Ordering::Relaxed);
    debug!(offset, "REPLCONF ACK");
    Ok(())
}

/// The current time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What ferry can tell of why the source closed the link: the source's replica output-buffer limit (read with
/// `CONFIG GET` on a new connection, when allowed) and how long ferry had stopped reading because its spool
/// was full. Redis closes a replica whose output buffer passes that limit, one that did not acknowledge within
/// `repl-timeout`, or one named by `CLIENT KILL`.
async fn why_closed(connect: &ConnectOptions, stalled: Duration) -> String {
    let limits = async {
        let mut c = Connection::connect(connect).await.ok()?;
        let reply = c
            .call(&["CONFIG", "GET", "client-output-buffer-limit"])
            .await
            .ok()?;
        replica_limit(&reply)
    };
    let limits = tokio::time::timeout(Duration::from_secs(2), limits)
        .await
        .ok()
        .flatten();
    let mut out = String::from(
        "Redis closes a replica link when the replica's output buffer passes `client-output-buffer-limit replica` \
         (then its log says \"scheduled to be closed ASAP for overcoming of output buffer limits\"), when \
         `repl-timeout` passes without an ACK, or on `CLIENT KILL`",
    );
    match limits {
        Some(l) => out.push_str(&format!(
            "; the source's replica limit is \"{l}\" (hard soft seconds)"
        )),
        None => out.push_str("; the source's limit could not be read (CONFIG GET refused)"),
    }
    if stalled >= Duration::from_secs(1) {
        out.push_str(&format!(
            "; ferry's spool was full and reading paused for {}s: raise the spool's bounds or the source's limit",
            stalled.as_secs()
        ));
    } else {
        out.push_str("; ferry was reading at network speed");
    }
    out
}

/// The `replica`/`slave` class of a `CONFIG GET client-output-buffer-limit` reply.
fn replica_limit(reply: &Frame) -> Option<String> {
    let Frame::Array(items) = reply else {
        // RESP3 answers a map.
        let Frame::Map(pairs) = reply else {
            return None;
        };
        return pairs
            .iter()
            .find_map(|(_, v)| v.as_bytes().and_then(class_of));
    };
    items.get(1)?.as_bytes().and_then(class_of)
}

fn class_of(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks(4)
        .find(|c| c.len() == 4 && (c[0] == "replica" || c[0] == "slave"))
        .map(|c| c[1..].join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_class_is_found_in_the_config_reply() {
        use bytes::Bytes;
        let reply = Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"client-output-buffer-limit")),
            Frame::Bulk(Bytes::from_static(
                b"normal 0 0 0 slave 8388608 4194304 10 pubsub 33554432 8388608 60",
            )),
        ]);
        assert_eq!(replica_limit(&reply).as_deref(), Some("8388608 4194304 10"));
        assert_eq!(replica_limit(&Frame::Array(vec![])), None);
    }
}
