//! [`ConnectionLike`]: what every ferry client that runs commands has in common, so code that only
//! calls and pipelines is written once for a single [`Connection`], a pooled connection
//! (`ferry_sentinel::PooledConnection`) and a cluster client (`ferry_topology::ClusterClient`).

use std::future::Future;

use crate::connection::Connection;
use crate::error::Error;
use crate::frame::Frame;

/// Something commands can be sent through: one call, or a pipeline.
///
/// The contract every implementation keeps:
/// - [`ConnectionLike::call`] returns the command's reply; an error reply is an `Err` (the
///   implementation's error type carries the server's code).
/// - [`ConnectionLike::pipeline`] returns one reply per command, in order; error replies stay in
///   place as [`Frame::Error`]. An `Err` means the batch failed as a whole (a connection lost or a
///   read that timed out): which commands ran is then unknown unless the error says otherwise.
///
/// ```
/// use ferry_resp::{ConnectionLike, Frame};
///
/// // Written once, usable with a Connection, a pooled connection or a cluster client.
/// async fn bump<C: ConnectionLike>(conn: &mut C, key: &str) -> Result<i64, C::Error> {
///     let reply = conn.call(&["INCR", key]).await?;
///     Ok(reply.as_integer().unwrap_or(0))
/// }
/// ```
pub trait ConnectionLike {
    /// The error type of the implementation.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends one command and returns its reply.
    fn call<'a, A>(
        &'a mut self,
        argv: &'a [A],
    ) -> impl Future<Output = Result<Frame, Self::Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync;

    /// Sends the commands together and returns their replies in order.
    fn pipeline<'a, A>(
        &'a mut self,
        cmds: &'a [Vec<A>],
    ) -> impl Future<Output = Result<Vec<Frame>, Self::Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync;
}

impl ConnectionLike for Connection {
    type Error = Error;

    fn call<'a, A>(
        &'a mut self,
        argv: &'a [A],
    ) -> impl Future<Output = Result<Frame, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        Connection::call(self, argv)
    }

    fn pipeline<'a, A>(
        &'a mut self,
        cmds: &'a [Vec<A>],
    ) -> impl Future<Output = Result<Vec<Frame>, Error>> + Send + 'a
    where
        A: AsRef<[u8]> + Sync,
    {
        Connection::pipeline(self, cmds)
    }
}
