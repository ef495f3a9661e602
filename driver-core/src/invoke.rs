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
//! let reply = dtmdriver_core::invoke(
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
use tonic::metadata::{
    BinaryMetadataKey, BinaryMetadataValue, MetadataKey, MetadataMap, MetadataValue,
};

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

/// The request metadata of `pairs` (key, value), as [`call_raw`] sends it; the error
/// names the pair that cannot be sent and why. Keys are lower-cased. A key ending in
/// `-bin` carries bytes: its value is their base64 (padded or not), as gRPC writes
/// binary metadata.
///
/// ```
/// use dtmdriver_core::invoke::request_metadata;
/// let m = request_metadata(&[("dtm-gid", "g1"), ("trace-bin", "AAEC")]).unwrap();
/// assert_eq!(m.get("dtm-gid").unwrap(), "g1");
/// assert_eq!(m.get_bin("trace-bin").unwrap().to_bytes().unwrap().as_ref(), [0, 1, 2]);
/// let err = request_metadata(&[("k-bin", "!!!")]).unwrap_err();
/// assert!(err.contains("value `!!!`") && err.contains("base64"), "{err}");
/// ```
pub fn request_metadata(pairs: &[(&str, &str)]) -> Result<MetadataMap, String> {
    let mut map = MetadataMap::new();
    for (k, v) in pairs {
        let name = k.to_ascii_lowercase();
        if name.ends_with("-bin") {
            let key = BinaryMetadataKey::from_bytes(name.as_bytes())
                .map_err(|_| format!("metadata key `{k}` is not a valid header name"))?;
            let bytes = decode_base64(v).ok_or_else(|| {
                format!(
                    "metadata value `{}` of `{k}` is not base64: a key ending in -bin carries \
                     bytes, written in base64 (e.g. {k}=AAEC)",
                    crate::error::shorten(v)
                )
            })?;
            map.insert_bin(key, BinaryMetadataValue::from_bytes(&bytes));
        } else {
            let key = MetadataKey::from_bytes(name.as_bytes())
                .map_err(|_| format!("metadata key `{k}` is not a valid header name"))?;
            let value = MetadataValue::try_from(*v).map_err(|_| {
                format!("metadata value for `{k}` is not valid ASCII (binary values go under a key ending in -bin, in base64)")
            })?;
            map.insert(key, value);
        }
    }
    Ok(map)
}

/// Decodes base64 as gRPC reads binary metadata (tonic's own decoder, reached through a
/// header it parses).
fn decode_base64(text: &str) -> Option<Bytes> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-bin", http::HeaderValue::from_str(text).ok()?);
    MetadataMap::from_headers(headers)
        .get_bin("x-bin")?
        .to_bytes()
        .ok()
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
    *request.metadata_mut() = request_metadata(metadata).map_err(Status::invalid_argument)?;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #11 item 8: `k-bin=!!!` blamed the key; the value is what is wrong.
    #[test]
    fn metadata_errors_name_the_part_that_is_wrong() {
        for (pair, needle) in [
            (("k-bin", "!!!"), "value `!!!` of `k-bin` is not base64"),
            (("k-bin", "AA EC"), "value `AA EC`"),
            (("bad key", "v"), "key `bad key`"),
            (("k", "line\nbreak"), "value for `k` is not valid ASCII"),
        ] {
            let err = request_metadata(&[pair]).unwrap_err();
            assert!(err.contains(needle), "{pair:?}: {err}");
        }
        let m = request_metadata(&[("Trace-Bin", "AAEC"), ("K-bin", "AAE=")]).unwrap();
        assert_eq!(
            m.get_bin("trace-bin").unwrap().to_bytes().unwrap().as_ref(),
            [0, 1, 2]
        );
        assert_eq!(
            m.get_bin("k-bin").unwrap().to_bytes().unwrap().as_ref(),
            [0, 1]
        );
    }
}
