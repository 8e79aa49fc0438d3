//! [`Connection`]: one TCP or TLS connection to a Redis server, with the handshake
//! (HELLO / AUTH / SETNAME / SELECT), request/response, pipelining, and raw reads for the
//! replication stream.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::command::Command;
use crate::decode::{Decoder, Limits};
use crate::encode::encode_command;
use crate::error::Error;
use crate::frame::{Frame, ServerError};
use crate::options::{ConnectOptions, Protocol};
use crate::tls;

/// Spare read-buffer space below which the buffer grows before a read.
const MIN_READ_SPACE: usize = 8 * 1024;
/// How much the read buffer grows by.
const READ_CHUNK: usize = 64 * 1024;
/// Pushes kept for [`Connection::take_pushes`] before the oldest are dropped.
const MAX_QUEUED_PUSHES: usize = 65_536;

/// The byte stream under a connection: plain TCP or TLS over TCP.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection to a Redis server.
///
/// Commands are encoded into a write buffer; replies are decoded from a read buffer with the
/// zero-copy [`Decoder`]. Writing and reading overlap, so a pipeline of any size never waits on
/// itself. RESP3 push frames that arrive while [`Connection::call`] or
/// [`Connection::pipeline`] wait for replies are set aside (see [`Connection::take_pushes`])
/// and returned first by [`Connection::read_frame`].
///
/// A `call` or `pipeline` that fails half-way (timeout, I/O or protocol error) leaves replies
/// unaccounted for, so the connection refuses further `call`/`pipeline` with
/// [`Error::Desynchronized`]; open a new one.
pub struct Connection {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The write buffer was (partly) written and the stream not flushed since.
    need_flush: bool,
    decoder: Decoder,
    limits: Limits,
    read_timeout: Option<Duration>,
    protocol: Protocol,
    peer: SocketAddr,
    pushes: VecDeque<Frame>,
    broken: Option<&'static str>,
    /// A frame was decoded: the peer speaks RESP (a protocol error before that names the peer).
    answered: bool,
    /// A `call`/`pipeline` is waiting for replies; still true at the next one if it was dropped.
    in_flight: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("tls", &matches!(self.stream, Stream::Tls(_)))
            .field("protocol", &self.protocol)
            .field("buffered", &self.rbuf.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and runs the handshake, all within `opts.connect_timeout`:
    /// TCP (+ TLS), then `HELLO 3 [AUTH user pass] [SETNAME name]` for RESP3, or
    /// `AUTH [user] pass` and `CLIENT SETNAME name` for RESP2, then `SELECT db` when db != 0.
    ///
    /// Refused credentials give [`Error::Auth`] (the message never contains the password).
    pub async fn connect(opts: &ConnectOptions) -> Result<Connection, Error> {
        match tokio::time::timeout(opts.connect_timeout, Connection::connect_inner(opts)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout("connect")),
        }
    }

    async fn connect_inner(opts: &ConnectOptions) -> Result<Connection, Error> {
        let tcp = TcpStream::connect((opts.host.as_str(), opts.port)).await?;
        tcp.set_nodelay(true)?;
        if let Some(idle) = opts.tcp_keepalive {
            set_keepalive(&tcp, idle)?;
        }
        let peer = tcp.peer_addr()?;
        let stream = match &opts.tls {
            None => Stream::Tcp(tcp),
            Some(t) => Stream::Tls(Box::new(tls::connect(t, &opts.host, tcp).await?)),
        };
        let mut conn = Connection {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            need_flush: false,
            decoder: Decoder::with_limits(opts.limits),
            limits: opts.limits,
            read_timeout: opts.read_timeout,
            protocol: opts.protocol,
            peer,
            pushes: VecDeque::new(),
            broken: None,
            in_flight: false,
            answered: false,
        };
        conn.handshake(opts).await?;
        Ok(conn)
    }

    /// ` (it sent "...")`: the start of what is buffered, escaped, for an error message (empty when nothing is).
    fn first_bytes(&self) -> String {
        const SHOWN: usize = 24;
        if self.rbuf.is_empty() {
            return String::new();
        }
        let head = &self.rbuf[..self.rbuf.len().min(SHOWN)];
        let more = if self.rbuf.len() > SHOWN { "..." } else { "" };
        format!(" (it sent \"{}{more}\")", head.escape_ascii())
    }

    /// HELLO / AUTH / SETNAME / SELECT.
    async fn handshake(&mut self, opts: &ConnectOptions) -> Result<(), Error> {
        let user = opts.username.as_deref();
        match opts.protocol {
            Protocol::Resp3 => {
                let mut argv: Vec<&[u8]> = vec![b"HELLO", b"3"];
                if let Some(pass) = &opts.password {
                    argv.extend([
                        &b"AUTH"[..],
                        user.unwrap_or("default").as_bytes(),
                        pass.expose().as_bytes(),
                    ]);
                }
                if let Some(name) = &opts.client_name {
                    argv.extend([&b"SETNAME"[..], name.as_bytes()]);
                }
                match self.call(&argv).await {
                    Err(Error::Server(e)) if is_auth_error(&e) => return Err(auth_error(user, &e)),
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
            }
            Protocol::Resp2 => {
                if let Some(pass) = &opts.password {
                    let mut argv: Vec<&[u8]> = vec![b"AUTH"];
                    argv.extend(user.map(str::as_bytes));
                    argv.push(pass.expose().as_bytes());
                    match self.call(&argv).await {
                        Err(Error::Server(e)) => return Err(auth_error(user, &e)),
                        Err(e) => return Err(e),
                        Ok(_) => {}
                    }
                }
                if let Some(name) = &opts.client_name {
                    self.call(&[&b"CLIENT"[..], b"SETNAME", name.as_bytes()])
                        .await?;
                }
            }
        }
        if opts.db != 0 {
            match self.call(&["SELECT", &opts.db.to_string()]).await {
                Err(Error::Server(e)) if is_auth_error(&e) => return Err(auth_error(user, &e)),
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Sends one command and returns its reply. An error reply gives `Err(Error::Server(..))`.
    ///
    /// For `SUBSCRIBE`-family commands the first reply (a push frame in RESP3) is returned; any
    /// further confirmations (one per channel) are read with [`Connection::read_frame`].
    ///
    /// Not cancel-safe: if the future is dropped before the reply is read, the connection is
    /// marked unusable (the next `call` or `pipeline` gives [`Error::Desynchronized`]).
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        self.usable()?;
        encode_command(argv, &mut self.wbuf);
        let accept_push = argv
            .first()
            .is_some_and(|c| is_subscribe_command(c.as_ref()));
        self.in_flight = true;
        let frame = self.reply(accept_push).await;
        let frame = self.guard(frame)?;
        self.in_flight = false;
        frame.into_result().map_err(Error::Server)
    }

    /// Sends all commands in one write and returns their replies in order. Error replies stay
    /// in place as [`Frame::Error`]; only transport and protocol failures give `Err`.
    /// Writing and reading overlap, so the batch may be larger than the socket buffers.
    ///
    /// Not cancel-safe, like [`Connection::call`].
    pub async fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Result<Vec<Frame>, Error> {
        self.usable()?;
        for argv in cmds {
            encode_command(argv, &mut self.wbuf);
        }
        self.in_flight = true;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in 0..cmds.len() {
            let frame = self.reply(false).await;
            replies.push(self.guard(frame)?);
        }
        self.in_flight = false;
        Ok(replies)
    }

    /// Appends a command to the write buffer without sending it; see [`Connection::flush`].
    pub fn write_command<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        encode_command(argv, &mut self.wbuf);
    }

    /// Appends raw, already encoded bytes to the write buffer without sending them.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends everything in the write buffer. The read timeout also bounds each write stall.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let Connection {
            stream,
            wbuf,
            need_flush,
            ..
        } = self;
        let io = poll_fn(|cx| {
            while !wbuf.is_empty() {
                let n = std::task::ready!(Pin::new(&mut *stream).poll_write(cx, wbuf))?;
                if n == 0 {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                wbuf.advance(n);
            }
            std::task::ready!(Pin::new(&mut *stream).poll_flush(cx))?;
            *need_flush = false;
            Poll::Ready(Ok(()))
        });
        match self.read_timeout {
            None => io.await,
            Some(d) => tokio::time::timeout(d, io)
                .await
                .unwrap_or(Err(Error::Timeout("write"))),
        }
    }

    /// Returns the next frame from the server, including RESP3 pushes (set-aside pushes first).
    /// Anything still in the write buffer is sent meanwhile. End of stream gives
    /// [`Error::Closed`]; a read timeout gives [`Error::Timeout`] and may be retried.
    ///
    /// Cancel-safe: if the future is dropped (inside `tokio::time::timeout` or `select!`), bytes
    /// already read stay buffered, with the decoder's progress, for the next call.
    pub async fn read_frame(&mut self) -> Result<Frame, Error> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(push);
        }
        self.next_frame().await
    }

    /// Returns the next command from the peer: for a replication stream (after the RDB), where
    /// the master sends nothing but commands (arrays of bulk strings). Each [`Command`] keeps
    /// its exact wire bytes ([`Command::len_on_wire`] advances the replication offset, and
    /// [`Command::raw`] can be forwarded verbatim). Anything still in the write buffer (e.g. a
    /// `REPLCONF ACK`) is sent meanwhile. A reply or push that is not a command gives
    /// [`Error::NotACommand`]; set-aside RESP3 pushes are not returned here. End of stream gives
    /// [`Error::Closed`]; a read timeout gives [`Error::Timeout`] and may be retried.
    ///
    /// Cancel-safe: if the future is dropped (inside `tokio::time::timeout` or `select!`), bytes
    /// already read stay buffered, with the decoder's progress, for the next call.
    pub async fn read_command(&mut self) -> Result<Command, Error> {
        loop {
            if let Some(cmd) = self.decoder.decode_command(&mut self.rbuf)? {
                return Ok(cmd);
            }
            self.fill().await?;
        }
    }

    /// Reads one raw line (up to LF, returned without the CR LF or a lone LF), from the buffered
    /// bytes first. For the replication handshake (`+FULLRESYNC <replid> <offset>`, the `$<len>`
    /// that precedes an RDB, and the bare `\n` keep-alives in between, which give an empty line).
    ///
    /// Cancel-safe: a dropped future loses no bytes. Discards any partly decoded frame state.
    pub async fn read_line(&mut self) -> Result<Bytes, Error> {
        self.decoder.reset();
        let mut scanned = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.rbuf[scanned..]) {
                let lf = scanned + i;
                let mut line = self.rbuf.split_to(lf + 1).freeze();
                let end = if lf > 0 && line[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                line.truncate(end);
                return Ok(line);
            }
            scanned = self.rbuf.len();
            if scanned > self.limits.max_bulk_len {
                return Err(Error::LimitExceeded(format!(
                    "line longer than the limit of {} bytes",
                    self.limits.max_bulk_len
                )));
            }
            self.fill().await?;
        }
    }

    /// Returns up to `max` raw bytes: what is already buffered first (without waiting), else
    /// what the next socket read brings. An empty result means end of stream (or `max == 0`).
    /// The bytes are split off the read buffer, not copied.
    ///
    /// Cancel-safe: if the future is dropped (for example by `tokio::time::timeout` while
    /// streaming the replication feed), no bytes are lost; they are returned by the next call.
    pub async fn read_raw(&mut self, max: usize) -> Result<Bytes, Error> {
        if max == 0 {
            return Ok(Bytes::new());
        }
        self.decoder.reset();
        if self.rbuf.is_empty() {
            match self.fill().await {
                Ok(()) => {}
                Err(Error::Closed) => return Ok(Bytes::new()),
                Err(e) => return Err(e),
            }
        }
        let n = max.min(self.rbuf.len());
        Ok(self.rbuf.split_to(n).freeze())
    }

    /// The number of received bytes not yet consumed.
    pub fn buffered(&self) -> usize {
        self.rbuf.len()
    }

    /// Takes the RESP3 push frames set aside while waiting for replies, oldest first.
    pub fn take_pushes(&mut self) -> Vec<Frame> {
        self.pushes.drain(..).collect()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The RESP version negotiated at connect.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The read timeout in force.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Changes the read timeout (for example `None` before streaming a large RDB).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Whether `call` and `pipeline` can still be used (no earlier one failed half-way).
    pub fn is_usable(&self) -> bool {
        self.broken.is_none() && !self.in_flight
    }

    /// Shuts the write side down (TLS close_notify, TCP FIN).
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx)).await?;
        Ok(())
    }

    fn usable(&mut self) -> Result<(), Error> {
        if self.in_flight {
            self.broken = Some("an earlier request was cancelled before its reply was read");
        }
        match self.broken {
            Some(why) => Err(Error::Desynchronized(why)),
            None => Ok(()),
        }
    }

    /// Marks the connection unusable when a failure leaves replies unaccounted for.
    fn guard(&mut self, result: Result<Frame, Error>) -> Result<Frame, Error> {
        if let Err(e) = &result {
            self.broken = Some(match e {
                Error::Timeout(_) => "an earlier request timed out",
                Error::Protocol(_) | Error::LimitExceeded(_) => "the server sent an invalid reply",
                _ => "an earlier request failed",
            });
        }
        result
    }

    /// The next reply, setting RESP3 pushes aside unless `accept_push`.
    async fn reply(&mut self, accept_push: bool) -> Result<Frame, Error> {
        loop {
            let frame = self.next_frame().await?;
            match frame {
                Frame::Push(_) if !accept_push => {
                    if self.pushes.len() >= MAX_QUEUED_PUSHES {
                        self.pushes.pop_front();
                        tracing::warn!(peer = %self.peer, "dropping the oldest set-aside push frame");
                    }
                    self.pushes.push_back(frame);
                }
                frame => return Ok(frame),
            }
        }
    }

    /// Decodes the next frame, reading (and writing pending commands) as needed.
    async fn next_frame(&mut self) -> Result<Frame, Error> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => {
                    self.answered = true;
                    return Ok(frame);
                }
                Ok(None) => {}
                // Not RESP from the first byte: most likely another service on that port; say so, with what it
                // sent.
                Err(Error::Protocol(why)) if !self.answered => {
                    return Err(Error::Protocol(format!(
                        "{} does not answer as a Redis server{}: {why}",
                        self.peer,
                        self.first_bytes()
                    )))
                }
                Err(e) => return Err(e),
            }
            self.fill().await?;
        }
    }

    /// Reads at least one chunk into the read buffer, writing the write buffer meanwhile.
    /// The read timeout bounds the wait; end of stream gives [`Error::Closed`].
    async fn fill(&mut self) -> Result<(), Error> {
        let Connection {
            stream,
            rbuf,
            wbuf,
            need_flush,
            ..
        } = self;
        let io = poll_fn(|cx| poll_fill(stream, rbuf, wbuf, need_flush, cx));
        match self.read_timeout {
            None => io.await,
            Some(d) => tokio::time::timeout(d, io)
                .await
                .unwrap_or(Err(Error::Timeout("read"))),
        }
    }
}

/// One step of [`Connection::fill`]: push out pending writes, then read what is available.
fn poll_fill(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    need_flush: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    while !wbuf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, wbuf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())))
            }
            Poll::Ready(Ok(n)) => {
                wbuf.advance(n);
                *need_flush = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => break,
        }
    }
    if wbuf.is_empty() && *need_flush {
        match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => *need_flush = false,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => {}
        }
    }
    if rbuf.capacity() - rbuf.len() < MIN_READ_SPACE {
        rbuf.reserve(READ_CHUNK);
    }
    match poll_read_buf(Pin::new(&mut *stream), cx, rbuf) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(Error::Closed)),
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Pending,
    }
}

/// Turns TCP keepalive on: first probe after `idle` without traffic, then every `idle`, three
/// probes (where the platform lets us set them).
fn set_keepalive(tcp: &TcpStream, idle: Duration) -> io::Result<()> {
    let ka = socket2::TcpKeepalive::new().with_time(idle);
    #[cfg(any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    ))]
    let ka = ka.with_interval(idle);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let ka = ka.with_retries(3);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&ka)
}

/// Whether the server's error is about credentials.
fn is_auth_error(e: &ServerError) -> bool {
    matches!(e.code(), "WRONGPASS" | "NOAUTH")
        || e.as_str().to_ascii_lowercase().contains("password")
}

/// The [`Error::Auth`] for a refused AUTH/HELLO: names the user, never the password.
fn auth_error(user: Option<&str>, e: &ServerError) -> Error {
    Error::Auth(format!(
        "user {:?} (password ***): {}",
        user.unwrap_or("default"),
        e
    ))
}

/// `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` and their `UN` forms, any case.
fn is_subscribe_command(cmd: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"subscribe",
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(cmd))
}
