//! One multiplexed connection to a node: many callers share it, each request's bytes are written as
//! one unit and its replies are matched in order, by a task that owns the connection.
//!
//! A caller that stops waiting (its future dropped) does not disturb the connection: the task still
//! reads and discards its replies. When the connection fails, every request already written gets
//! [`SendError::Unknown`] (it may have run), and every request not yet written gets
//! [`SendError::NotSent`].

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_resp::{Connection, Frame};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Why a request got no replies.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The request never left this process: sending it elsewhere cannot run it twice.
    NotSent(ferry_resp::Error),
    /// The request was written (or may have been) and the connection failed before all its replies
    /// came back: it may or may not have run.
    Unknown(ferry_resp::Error),
}

/// What ended a connection, in a form every pending request can get a copy of.
#[derive(Debug, Clone)]
enum Lost {
    Timeout,
    Closed,
    Other(io::ErrorKind, String),
}

impl Lost {
    fn from_error(e: &ferry_resp::Error) -> Lost {
        match e {
            ferry_resp::Error::Timeout(_) => Lost::Timeout,
            ferry_resp::Error::Closed => Lost::Closed,
            ferry_resp::Error::Io(io) => Lost::Other(io.kind(), io.to_string()),
            other => Lost::Other(io::ErrorKind::InvalidData, other.to_string()),
        }
    }

    fn into_error(self) -> ferry_resp::Error {
        match self {
            Lost::Timeout => ferry_resp::Error::Timeout("read"),
            Lost::Closed => ferry_resp::Error::Closed,
            Lost::Other(kind, text) => ferry_resp::Error::Io(io::Error::new(kind, text)),
        }
    }
}

type Reply = Result<Vec<Frame>, Lost>;

struct Request {
    /// One or more encoded commands, written together.
    bytes: Bytes,
    /// How many replies they produce.
    count: usize,
    reply: oneshot::Sender<Reply>,
}

struct Pending {
    replies: Vec<Frame>,
    count: usize,
    reply: oneshot::Sender<Reply>,
    /// Its bytes were handed to the connection (staged ones were not).
    written: bool,
}

/// The callers' handle on a multiplexed connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Mux {
    tx: mpsc::UnboundedSender<Request>,
}

impl Mux {
    /// Starts the task that owns `conn`. `read_timeout` bounds how long replies may be owed without
    /// any arriving; when it passes, the connection is given up (its pending requests: unknown).
    pub(crate) fn spawn(mut conn: Connection, read_timeout: Option<Duration>) -> Mux {
        conn.set_read_timeout(None);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(conn, rx, read_timeout));
        Mux { tx }
    }

    /// Whether the connection has ended (new requests would not be sent).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends `bytes` (`count` encoded commands) and returns their `count` replies, error replies
    /// included as [`Frame::Error`].
    pub(crate) async fn send(&self, bytes: Bytes, count: usize) -> Result<Vec<Frame>, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                bytes,
                count,
                reply,
            })
            .map_err(|_| SendError::NotSent(ferry_resp::Error::Closed))?;
        match rx.await {
            Ok(Ok(frames)) => Ok(frames),
            Ok(Err(lost)) => Err(SendError::Unknown(lost.into_error())),
            // The task ended without writing the request.
            Err(_) => Err(SendError::NotSent(ferry_resp::Error::Closed)),
        }
    }
}

/// Stages a request's bytes for writing. A request whose caller already left and that was not
/// written yet is skipped: it never runs.
fn accept(staged: &mut BytesMut, pending: &mut VecDeque<Pending>, req: Request) {
    if req.reply.is_closed() {
        return;
    }
    staged.extend_from_slice(&req.bytes);
    if req.count == 0 {
        let _ = req.reply.send(Ok(Vec::new()));
        return;
    }
    pending.push_back(Pending {
        replies: Vec::with_capacity(req.count),
        count: req.count,
        reply: req.reply,
        written: false,
    });
}

/// Ends every pending request: those written get the loss (their outcome is unknown); those
/// still staged are dropped, which their callers see as not sent.
fn fail_all(pending: &mut VecDeque<Pending>, lost: &Lost) {
    for p in pending.drain(..) {
        if p.written {
            let _ = p.reply.send(Err(lost.clone()));
        }
    }
}

/// The task: writes requests, reads replies, hands each request its own.
///
/// Requests that arrive while written ones still wait for their first reply are staged and written
/// together once that reply arrives (the node is busy with the earlier ones anyway): under load the
/// node gets few large writes instead of one per request, and an idle connection writes at once.
async fn drive(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Request>,
    read_timeout: Option<Duration>,
) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut staged = BytesMut::new();
    // Requests were written and no reply has come back since.
    let mut awaiting_reply = false;
    let mut open = true;
    // Time of the last reply (or of the first request after an idle spell).
    let mut progress = Instant::now();
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut timer_armed = false;
    loop {
        while let Ok(req) = rx.try_recv() {
            if pending.is_empty() {
                progress = Instant::now();
            }
            accept(&mut staged, &mut pending, req);
        }
        if pending.is_empty() {
            if !open {
                return;
            }
            // Idle: wait for a request, but also watch the socket, so that a node that closed the
            // connection (or died) is noticed before a request is written into it.
            tokio::select! {
                biased;
                frame = conn.read_frame() => match frame {
                    Ok(Frame::Push(_)) => continue,
                    Ok(_) => {
                        tracing::debug!(peer = %conn.peer_addr(), "reply with no request; closing");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %conn.peer_addr(), error = %e, "idle connection ended");
                        return;
                    }
                },
                req = rx.recv() => match req {
                    Some(req) => {
                        progress = Instant::now();
                        accept(&mut staged, &mut pending, req);
                        continue;
                    }
                    None => return,
                },
            }
        }
        if !staged.is_empty() && !awaiting_reply {
            conn.write_raw(&staged);
            staged.clear();
            awaiting_reply = true;
            // The staged requests are the unwritten tail of `pending`.
            for p in pending.iter_mut().rev().take_while(|p| !p.written) {
                p.written = true;
            }
        }
        if let Some(t) = read_timeout {
            if !timer_armed {
                timer.as_mut().reset(progress + t);
                timer_armed = true;
            }
        }
        tokio::select! {
            biased;
            frame = conn.read_frame() => match frame {
                Ok(Frame::Push(_)) => {}
                Ok(frame) => {
                    progress = Instant::now();
                    awaiting_reply = false;
                    if let Some(head) = pending.front_mut() {
                        head.replies.push(frame);
                        if head.replies.len() == head.count {
                            if let Some(done) = pending.pop_front() {
                                let _ = done.reply.send(Ok(done.replies));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %conn.peer_addr(), error = %e, "multiplexed connection lost");
                    fail_all(&mut pending, &Lost::from_error(&e));
                    return;
                }
            },
            req = rx.recv(), if open => match req {
                Some(req) => accept(&mut staged, &mut pending, req),
                None => open = false,
            },
            () = &mut timer, if timer_armed => {
                timer_armed = false;
                if let Some(t) = read_timeout {
                    if progress.elapsed() >= t {
                        tracing::debug!(peer = %conn.peer_addr(), "multiplexed connection timed out");
                        fail_all(&mut pending, &Lost::Timeout);
                        return;
                    }
                }
            }
        }
    }
}
