//! [`DedicatedConnection`]: a connection to one node that a single caller has to itself, for what
//! would hold a shared connection (blocking commands, `WAIT`, `MULTI`/`WATCH` transactions), and the
//! client's list of idle ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_resp::{Connection, Frame};

use crate::cluster::{ClusterClient, Inner};
use crate::error::{Error, SlotLabel};
use crate::mux::SendError;
use crate::slotmap::NodeAddr;

/// Idle dedicated connections per node, at most `max` each.
pub(crate) struct IdleConnections {
    max: usize,
    idle: Mutex<HashMap<NodeAddr, Vec<Connection>>>,
}

impl IdleConnections {
    pub(crate) fn new(max: usize) -> IdleConnections {
        IdleConnections {
            max,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, addr: &NodeAddr) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(addr)?.pop()
    }

    /// An idle connection to `addr` that has not been closed by the node meanwhile (one whose socket
    /// already shows end of stream, or unexpected bytes, is dropped: a command written into it would
    /// end with an unknown outcome without ever having run).
    async fn take_live(&self, addr: &NodeAddr) -> Option<Connection> {
        while let Some(mut conn) = self.take(addr) {
            // `Timeout` polls the read once before looking at the deadline; `read_frame` is
            // cancel-safe, so a connection with nothing to read is left as it was.
            if tokio::time::timeout(Duration::ZERO, conn.read_frame())
                .await
                .is_err()
            {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: &NodeAddr, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr.clone()).or_default();
        if list.len() < self.max {
            list.push(conn);
        }
    }
}

/// A connection to one cluster node that no other caller uses, from [`ClusterClient::dedicated`]
/// (or taken internally for blocking commands, `WAIT` and transactions).
///
/// Commands go to that node as they are: redirects are not followed (a `MOVED` reply is an
/// [`Error::Server`] with code `MOVED`). When dropped it goes back to the client's idle list if it is
/// usable: no call on it failed or was cancelled half-way, no `MULTI`/`WATCH` is left open, and no
/// command changed its session (`SELECT`, `SUBSCRIBE`, `CLIENT REPLY`, ...); otherwise it is closed.
pub struct DedicatedConnection {
    conn: Option<Connection>,
    addr: NodeAddr,
    inner: Arc<Inner>,
    in_transaction: bool,
    tainted: bool,
}

impl std::fmt::Debug for DedicatedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedicatedConnection")
            .field("addr", &self.addr)
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

impl DedicatedConnection {
    /// An idle dedicated connection to `addr`, or a new one (a failed connect is `NotSent`).
    pub(crate) async fn open(
        client: &ClusterClient,
        addr: &NodeAddr,
    ) -> Result<DedicatedConnection, SendError> {
        let inner = client.inner.clone();
        let conn = match inner.dedicated.take_live(addr).await {
            Some(c) => c,
            None => match Connection::connect(&inner.options.connect_to(addr)).await {
                Ok(c) => c,
                Err(e) => {
                    client.note_failed(addr, &e);
                    return Err(SendError::NotSent(e));
                }
            },
        };
        Ok(DedicatedConnection {
            conn: Some(conn),
            addr: addr.clone(),
            inner,
            in_transaction: false,
            tainted: false,
        })
    }

    /// The node this connection talks to.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    fn conn(&mut self) -> Result<&mut Connection, ferry_resp::Error> {
        self.conn.as_mut().ok_or(ferry_resp::Error::Closed)
    }

    /// `[ASKING], argv, [WAIT n t]` for the client's retry loop. Without `wait` the command is a
    /// blocking one and the read waits as long as the server blocks it; with `wait`, the read timeout
    /// is extended by WAIT's timeout.
    pub(crate) async fn run(
        &mut self,
        argv: &[&[u8]],
        asking: bool,
        wait: Option<(u32, Duration)>,
    ) -> Result<(Frame, Option<Frame>), SendError> {
        let base = self.inner.options.connect.read_timeout;
        let wait_args = wait.map(|(n, t)| (n.to_string(), t.as_millis().max(1).to_string()));
        let mut cmds: Vec<Vec<&[u8]>> = Vec::with_capacity(3);
        if asking {
            cmds.push(vec![b"ASKING"]);
        }
        cmds.push(argv.to_vec());
        if let Some((n, t)) = &wait_args {
            cmds.push(vec![b"WAIT", n.as_bytes(), t.as_bytes()]);
        }
        let conn = self.conn().map_err(SendError::NotSent)?;
        conn.set_read_timeout(match wait {
            None => None,
            Some((_, t)) => base.map(|b| b + t),
        });
        let result = conn.pipeline(&cmds).await;
        conn.set_read_timeout(base);
        let mut replies = result.map_err(SendError::Unknown)?;
        let wait_reply = if wait.is_some() { replies.pop() } else { None };
        let reply = replies.pop().unwrap_or(Frame::NullBulk);
        Ok((reply, wait_reply))
    }

    /// `MULTI`, `cmds`, `EXEC` for [`ClusterClient::transaction`]: EXEC's reply, or, when EXEC was
    /// refused because a command met a redirect or a retryable state, that command's reply (so the
    /// retry loop follows it: nothing ran).
    pub(crate) async fn run_transaction(
        &mut self,
        cmds: &[Vec<&[u8]>],
    ) -> Result<(Frame, Option<Frame>), SendError> {
        let mut batch: Vec<Vec<&[u8]>> = Vec::with_capacity(cmds.len() + 2);
        batch.push(vec![b"MULTI"]);
        batch.extend(cmds.iter().cloned());
        batch.push(vec![b"EXEC"]);
        let conn = self.conn().map_err(SendError::NotSent)?;
        let mut replies = conn.pipeline(&batch).await.map_err(SendError::Unknown)?;
        let exec = replies.pop().unwrap_or(Frame::NullBulk);
        if let Frame::Error(_) = &exec {
            let redirect = replies.into_iter().skip(1).find(|f| match f {
                Frame::Error(e) => {
                    let code = e.split(|b| *b == b' ').next().unwrap_or_default();
                    [
                        &b"MOVED"[..],
                        b"ASK",
                        b"TRYAGAIN",
                        b"CLUSTERDOWN",
                        b"LOADING",
                    ]
                    .contains(&code)
                }
                _ => false,
            });
            if let Some(r) = redirect {
                return Ok((r, None));
            }
        }
        Ok((exec, None))
    }

    fn note_session<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        let name = argv.first().map(AsRef::as_ref).unwrap_or_default();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"MULTI") || is(b"WATCH") {
            self.in_transaction = true;
        } else if is(b"EXEC") || is(b"DISCARD") || is(b"UNWATCH") {
            self.in_transaction = false;
        } else if [
            &b"SELECT"[..],
            b"SUBSCRIBE",
            b"PSUBSCRIBE",
            b"SSUBSCRIBE",
            b"MONITOR",
            b"HELLO",
            b"AUTH",
            b"RESET",
            b"READONLY",
            b"READWRITE",
            b"QUIT",
            b"CLIENT",
        ]
        .iter()
        .any(|n| is(n))
        {
            self.tainted = true;
        }
    }

    fn error(&self, argv_name: String, e: ferry_resp::Error) -> Error {
        match e {
            ferry_resp::Error::Server(s) => Error::Server {
                command: argv_name,
                slot: SlotLabel(None),
                node: self.addr.to_string(),
                code: s.code().to_owned(),
                message: s.message().to_owned(),
            },
            e @ ferry_resp::Error::Desynchronized(_) => Error::Connection {
                command: argv_name,
                slot: SlotLabel(None),
                node: self.addr.to_string(),
                source: e,
            },
            e => Error::UnknownOutcome {
                command: argv_name,
                slot: SlotLabel(None),
                node: self.addr.to_string(),
                source: e,
            },
        }
    }

    /// Sends one command and returns its reply; an error reply is [`Error::Server`], a connection
    /// lost after sending is an unknown outcome ([`Error::is_unknown_outcome`]).
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        self.note_session(argv);
        let name = argv
            .first()
            .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase())
            .unwrap_or_default();
        let r = match self.conn() {
            Ok(c) => c.call(argv).await,
            Err(e) => Err(e),
        };
        r.map_err(|e| self.error(name, e))
    }

    /// Sends the commands in one write and returns their replies in order (error replies in place
    /// as [`Frame::Error`]).
    pub async fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Result<Vec<Frame>, Error> {
        for argv in cmds {
            self.note_session(argv);
        }
        let r = match self.conn() {
            Ok(c) => c.pipeline(cmds).await,
            Err(e) => Err(e),
        };
        r.map_err(|e| self.error("pipeline".into(), e))
    }
}

impl Drop for DedicatedConnection {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.is_usable() && conn.buffered() == 0 && !self.in_transaction && !self.tainted {
                self.inner.dedicated.put(&self.addr, conn);
            }
        }
    }
}

/// The dedicated connection as a [`ferry_resp::ConnectionLike`].
impl ferry_resp::ConnectionLike for DedicatedConnection {
    type Error = Error;

    fn call<'a, A>(
        &'a mut self,
        argv: &'a [A],
    ) -> impl std::future::Future<Output = Result<Frame, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        DedicatedConnection::call(self, argv)
    }

    fn pipeline<'a, A>(
        &'a mut self,
        cmds: &'a [Vec<A>],
    ) -> impl std::future::Future<Output = Result<Vec<Frame>, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        DedicatedConnection::pipeline(self, cmds)
    }
}
