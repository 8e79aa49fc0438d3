//! tokio-util codecs: [`RespCodec`] (frames) and [`CommandCodec`] (commands).

use bytes::{BufMut, BytesMut};

use crate::command::Command;
use crate::decode::{Decoder, Limits};
use crate::encode::encode_frame;
use crate::error::Error;
use crate::frame::Frame;

/// A `tokio_util::codec` codec: decodes [`Frame`]s with the streaming [`Decoder`] and encodes
/// `Frame`s (or `&Frame`s).
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::{Frame, RespCodec};
/// use tokio_util::codec::{Decoder as _, Encoder as _};
///
/// let mut codec = RespCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Frame::Integer(5), &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Integer(5)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RespCodec {
    decoder: Decoder,
}

impl RespCodec {
    /// A codec with the default [`Limits`].
    pub fn new() -> RespCodec {
        RespCodec::default()
    }

    /// A codec with the given limits.
    pub fn with_limits(limits: Limits) -> RespCodec {
        RespCodec {
            decoder: Decoder::with_limits(limits),
        }
    }
}

impl tokio_util::codec::Decoder for RespCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decoder.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let item = self.decoder.decode(src)?;
        at_eof(item, src, "frame")
    }
}

impl tokio_util::codec::Encoder<Frame> for RespCodec {
    type Error = Error;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(&item, dst);
        Ok(())
    }
}

impl tokio_util::codec::Encoder<&Frame> for RespCodec {
    type Error = Error;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(item, dst);
        Ok(())
    }
}

/// A `tokio_util::codec` codec for command streams (what a server reads from clients, what a
/// master sends its replicas): decodes [`Command`]s with [`Decoder::decode_command`] and
/// encodes a `Command` (or `&Command`) by writing its raw bytes verbatim.
///
/// ```
/// use bytes::BytesMut;
/// use ferry_resp::{encode_command, CommandCodec};
/// use tokio_util::codec::{Decoder as _, Encoder as _};
///
/// let mut codec = CommandCodec::new();
/// let mut input = BytesMut::new();
/// encode_command(&["DEL", "k"], &mut input);
/// let wire = input.clone();
/// let cmd = codec.decode(&mut input).unwrap().unwrap();
/// assert_eq!(cmd.name(), b"DEL");
/// let mut out = BytesMut::new();
/// codec.encode(&cmd, &mut out).unwrap();
/// assert_eq!(out, wire);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CommandCodec {
    decoder: Decoder,
}

impl CommandCodec {
    /// A codec with the default [`Limits`].
    pub fn new() -> CommandCodec {
        CommandCodec::default()
    }

    /// A codec with the given limits.
    pub fn with_limits(limits: Limits) -> CommandCodec {
        CommandCodec {
            decoder: Decoder::with_limits(limits),
        }
    }
}

impl tokio_util::codec::Decoder for CommandCodec {
    type Item = Command;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, Error> {
        self.decoder.decode_command(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Command>, Error> {
        let item = self.decoder.decode_command(src)?;
        at_eof(item, src, "command")
    }
}

impl tokio_util::codec::Encoder<Command> for CommandCodec {
    type Error = Error;

    fn encode(&mut self, item: Command, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_slice(item.raw());
        Ok(())
    }
}

impl tokio_util::codec::Encoder<&Command> for CommandCodec {
    type Error = Error;

    fn encode(&mut self, item: &Command, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_slice(item.raw());
        Ok(())
    }
}

/// What a codec's `decode_eof` returns: the last `item`, or `None` at a clean end, or an error
/// naming `what` when bytes of an unfinished one are left in `src`.
fn at_eof<T>(item: Option<T>, src: &BytesMut, what: &str) -> Result<Option<T>, Error> {
    match item {
        Some(item) => Ok(Some(item)),
        None if src.is_empty() => Ok(None),
        None => Err(Error::Protocol(format!(
            "stream ended inside a {what} ({} bytes left)",
            src.len()
        ))),
    }
}
