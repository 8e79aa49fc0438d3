//! The blocking API: the same pool driven by a small private tokio runtime, for code that is not
//! async.

use std::marker::PhantomData;
use std::time::Duration;

use ferry_resp::Frame;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::broadcast;

use crate::addr::Addr;
use crate::error::Error;
use crate::events::Event;
use crate::options::SentinelPoolOptions;
use crate::pool::{PoolStats, PooledConnection, ReplicaConnection, SentinelPool};

/// A [`SentinelPool`] for non-async code. It owns a one-thread tokio runtime that runs the
/// listeners, the poll and the connections' I/O.
///
/// Do not call its methods from inside an async task (they block the thread).
pub struct BlockingSentinelPool {
    pool: Option<SentinelPool>,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for BlockingSentinelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingSentinelPool")
            .field("pool", &self.pool)
            .finish()
    }
}

impl BlockingSentinelPool {
    /// Resolves the master and starts following it (see [`SentinelPool::new`]).
    pub fn new(opts: SentinelPoolOptions) -> Result<BlockingSentinelPool, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-sentinel")
            .enable_all()
            .build()
            .map_err(|e| Error::Resp(ferry_resp::Error::Io(e)))?;
        let pool = runtime.block_on(SentinelPool::new(opts))?;
        Ok(BlockingSentinelPool {
            pool: Some(pool),
            runtime: Some(runtime),
        })
    }

    fn pool(&self) -> &SentinelPool {
        // Invariant: both are only taken in `drop`.
        self.pool.as_ref().expect("pool present until drop")
    }

    fn handle(&self) -> Handle {
        self.runtime
            .as_ref()
            .expect("runtime present until drop")
            .handle()
            .clone()
    }

    /// Borrows a connection, waiting up to `max_wait` when exhausted.
    pub fn get(&self) -> Result<BlockingConnection<'_>, Error> {
        let handle = self.handle();
        let conn = handle.block_on(self.pool().get())?;
        Ok(BlockingConnection {
            conn: Some(conn),
            handle,
            _pool: PhantomData,
        })
    }

    /// Borrows a connection, waiting at most `max_wait` when exhausted.
    pub fn get_timeout(&self, max_wait: Duration) -> Result<BlockingConnection<'_>, Error> {
        let handle = self.handle();
        let conn = handle.block_on(self.pool().get_timeout(max_wait))?;
        Ok(BlockingConnection {
            conn: Some(conn),
            handle,
            _pool: PhantomData,
        })
    }

    /// Borrows, runs one command, returns the connection (see [`SentinelPool::call`]).
    pub fn call<A: AsRef<[u8]>>(&self, argv: &[A]) -> Result<Frame, Error> {
        self.handle().block_on(self.pool().call(argv))
    }

    /// A replica connection for reads (see [`SentinelPool::replica`]).
    pub fn replica(&self) -> Result<BlockingReplicaConnection<'_>, Error> {
        let handle = self.handle();
        let conn = handle.block_on(self.pool().replica())?;
        Ok(BlockingReplicaConnection {
            conn,
            handle,
            _pool: PhantomData,
        })
    }

    /// Receives pool events (use `blocking_recv` or `try_recv`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.pool().subscribe()
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.pool().stats()
    }

    /// The current master, if known.
    pub fn master_addr(&self) -> Option<Addr> {
        self.pool().master_addr()
    }

    /// The async pool behind this one (its futures must run on [`BlockingSentinelPool::handle_ref`]).
    pub fn as_async(&self) -> &SentinelPool {
        self.pool()
    }

    /// The runtime that drives the pool.
    pub fn handle_ref(&self) -> Handle {
        self.handle()
    }
}

impl Drop for BlockingSentinelPool {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.close();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A borrowed master connection for blocking code; returns to the pool when dropped. It cannot
/// outlive the pool (whose runtime drives its I/O).
#[derive(Debug)]
pub struct BlockingConnection<'a> {
    conn: Option<PooledConnection>,
    handle: Handle,
    _pool: PhantomData<&'a BlockingSentinelPool>,
}

impl BlockingConnection<'_> {
    fn inner(&mut self) -> &mut PooledConnection {
        // Invariant: only taken in `drop`.
        self.conn.as_mut().expect("connection present until drop")
    }

    /// See [`PooledConnection::call`].
    pub fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        let handle = self.handle.clone();
        handle.block_on(self.inner().call(argv))
    }

    /// See [`PooledConnection::pipeline`].
    pub fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Result<Vec<Frame>, Error> {
        let handle = self.handle.clone();
        handle.block_on(self.inner().pipeline(cmds))
    }

    /// The master this connection talks to.
    pub fn addr(&self) -> &Addr {
        self.conn
            .as_ref()
            .expect("connection present until drop")
            .addr()
    }

    /// The master generation the connection was opened in.
    pub fn generation(&self) -> u64 {
        self.conn
            .as_ref()
            .expect("connection present until drop")
            .generation()
    }

    /// Drops the connection instead of returning it.
    pub fn discard(mut self) {
        if let Some(c) = self.conn.take() {
            c.discard();
        }
    }
}

impl Drop for BlockingConnection<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // Returning is synchronous; the runtime context lets the socket deregister cleanly.
            let _guard = self.handle.enter();
            drop(c);
        }
    }
}

/// A replica connection for blocking code. It cannot outlive the pool.
#[derive(Debug)]
pub struct BlockingReplicaConnection<'a> {
    conn: ReplicaConnection,
    handle: Handle,
    _pool: PhantomData<&'a BlockingSentinelPool>,
}

impl BlockingReplicaConnection<'_> {
    /// Sends one command and reads its reply (error replies are `Err`).
    pub fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, Error> {
        let handle = self.handle.clone();
        Ok(handle.block_on(self.conn.call(argv))?)
    }

    /// The server this connection talks to.
    pub fn addr(&self) -> &Addr {
        self.conn.addr()
    }

    /// Whether this is the master (fallback).
    pub fn is_master(&self) -> bool {
        self.conn.is_master()
    }
}
