//! Dynamic unary calls to `server/package.Service/Method` URIs with raw bytes, the way
//! the dtm coordinator calls branches.
//!
//! The current driver splits the URI ([`Driver::parse_server_method`]), the server is
//! dialled through its shared [`Channel`], and the payload goes out as is: the bytes
//! are the already-encoded request message, the result the encoded response message.
//!
//! ```no_run
//! # async fn f() -> Result<(), tonic::Status> {
//! use bytes::Bytes;
//! let reply = driver_core::invoke(
//!     "localhost:2379/etcdserverpb.Maintenance/Status",
//!     Bytes::new(),
//!     &[("dtm-gid", "gid-1")],
//! ).await?;
//! # Ok(()) }
//! ```
//!
//! [`Driver::parse_server_method`]: crate::Driver::parse_server_method

use bytes::{Buf, BufMut, Bytes};
use tonic::Request;
pub use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};

use crate::balance::Channel;
use crate::driver::Driver;

/// A codec that passes message bytes through untouched (dtm calls it `dtm_raw`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// The encoder and decoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Calls `uri` with the current driver (see [`get_driver`](crate::get_driver)).
pub async fn invoke(uri: &str, payload: Bytes, metadata: &[(&str, &str)]) -> Result<Bytes, Status> {
    invoke_with(crate::get_driver().as_ref(), uri, payload, metadata).await
}

/// Calls `uri` with `driver`, independent of the global driver.
pub async fn invoke_with(
    driver: &dyn Driver,
    uri: &str,
    payload: Bytes,
    metadata: &[(&str, &str)],
) -> Result<Bytes, Status> {
    let sm = driver
        .parse_server_method(uri)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let channel = Channel::builder(&sm.server)
        .driver(driver)
        .and_then(|b| b.connect())
        .map_err(|e| Status::unavailable(e.to_string()))?;
    call_raw(&channel, &sm.method, payload, metadata).await
}

/// One unary call of `method` (`/package.Service/Method`) on `channel` with raw bytes.
pub async fn call_raw(
    channel: &Channel,
    method: &str,
    payload: Bytes,
    metadata: &[(&str, &str)],
) -> Result<Bytes, Status> {
    let path: http::uri::PathAndQuery = method.parse().map_err(|e| {
        Status::invalid_argument(format!("method `{method}` is not a valid path: {e}"))
    })?;
    let mut request = Request::new(payload);
    for (k, v) in metadata {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| {
            Status::invalid_argument(format!("metadata key `{k}` is not a valid header name"))
        })?;
        let value = MetadataValue::try_from(*v).map_err(|_| {
            Status::invalid_argument(format!("metadata value for `{k}` is not valid ASCII"))
        })?;
        request.metadata_mut().insert(key, value);
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}
