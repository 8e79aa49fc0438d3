//! RESP for ferry: the wire protocol Redis speaks, and a connection to speak it with.
//!
//! - [`Frame`]: every RESP2 and RESP3 type (simple string, error, integer, bulk, array, the
//!   null variants, map, set, double, boolean, big number, verbatim string, push, attributes).
//! - [`Decoder`]: a streaming decoder. It takes a growing [`bytes::BytesMut`], returns frames whose
//!   payloads are slices of that buffer (no copies), works for input split at any byte without
//!   rescanning what it already checked, and turns oversized declarations (bulk length, nesting,
//!   element count; see [`Limits`]) into typed errors instead of allocations.
//! - [`Decoder::decode_command`]: the fast path for command streams (a master's replication
//!   stream, a client's pipeline), where every item is an array of bulk strings. A [`Command`]
//!   is one [`bytes::Bytes`] (its exact wire bytes, to forward verbatim or to count toward a
//!   replication offset) plus its argument ranges, stored inline for up to six arguments. Anything
//!   else is refused with [`Error::NotACommand`].
//! - [`encode_frame`] and [`encode_command`] write straight into a `BytesMut`.
//! - [`RespCodec`] and [`CommandCodec`]: the same as `tokio_util::codec` codecs.
//! - [`ConnectionLike`]: call and pipeline, shared by [`Connection`], the sentinel pool's
//!   connections and the cluster client, so code that only runs commands is written once.
//! - [`Connection`]: TCP or TLS, AUTH / `HELLO 3` / SELECT / CLIENT SETNAME, calls, pipelines,
//!   read timeouts, the raw reads ([`Connection::read_line`], [`Connection::read_raw`]) a
//!   replica needs after `+FULLRESYNC`, and [`Connection::read_command`] for the replication
//!   stream that follows the RDB. [`ConnectOptions::from_url`] reads `redis://` and
//!   `rediss://` URLs; passwords are held in [`Password`], which prints as `***`.
//!
//! ```
//! use bytes::BytesMut;
//! use ferry_resp::{encode_command, Decoder, Frame};
//!
//! // Encode a command, then decode it back as the server would see it.
//! let mut buf = BytesMut::new();
//! encode_command(&["SET", "key", "value"], &mut buf);
//! let frame = Decoder::new().decode(&mut buf).unwrap().unwrap();
//! assert_eq!(
//!     frame,
//!     Frame::Array(vec![Frame::bulk("SET"), Frame::bulk("key"), Frame::bulk("value")])
//! );
//!
//! // The command path: one buffer per command, arguments borrowed from it.
//! encode_command(&["SET", "key", "value"], &mut buf);
//! let cmd = Decoder::new().decode_command(&mut buf).unwrap().unwrap();
//! assert_eq!(cmd.name(), b"SET");
//! assert_eq!(cmd.arg(2), Some(&b"value"[..]));
//! assert_eq!(cmd.len_on_wire(), 33);
//! ```
//!
//! Talking to a server (not run here: it needs one):
//!
//! ```no_run
//! use ferry_resp::{ConnectOptions, Connection};
//!
//! # async fn demo() -> Result<(), ferry_resp::Error> {
//! let opts = ConnectOptions::from_url("redis://:secret@127.0.0.1:6379/0?protocol=resp3")?;
//! let mut conn = Connection::connect(&opts).await?;
//! conn.call(&["SET", "greeting", "hello"]).await?;
//! let value = conn.call(&["GET", "greeting"]).await?;
//! assert_eq!(value.as_bytes(), Some(&b"hello"[..]));
//! let replies = conn.pipeline(&[vec!["INCR", "n"], vec!["INCR", "n"]]).await?;
//! assert_eq!(replies.len(), 2);
//! # Ok(())
//! # }
//! ```

mod codec;
mod command;
mod connection;
mod decode;
mod encode;
mod error;
mod frame;
mod like;
mod options;
pub mod probe;
mod tls;

pub use codec::{CommandCodec, RespCodec};
pub use command::{Args, Command};
pub use connection::Connection;
pub use decode::{Decoder, Limits};
pub use encode::{encode_array_header, encode_bulk, encode_command, encode_frame};
pub use error::Error;
pub use frame::{Frame, ServerError};
pub use like::ConnectionLike;
pub use options::{ConnectOptions, Password, Protocol, TlsOptions};
