//! A tokio-util codec over [`Decoder`] and [`encode_frame`].

use bytes::BytesMut;

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
        match self.decoder.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(Error::Protocol(format!(
                "stream ended inside a frame ({} bytes left)",
                src.len()
            ))),
        }
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
