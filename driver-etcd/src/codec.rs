//! The codec of the etcd stubs ([`crate::proto`]): [`SmallBuffers`].
//!
//! Contract: encodes and decodes exactly as `tonic_prost::ProstCodec` does; only the
//! first size of each call's buffers differs ([`FIRST_BUFFER`] bytes, grown as a
//! message needs, so any message size works as before).
//!
//! Why: tonic's default allocates 8 KiB to encode each request and 8 KiB to decode each
//! response, whatever their size. A listing of a 3-instance prefix is a request of
//! about 30 bytes and an answer of a few hundred; resolving 1,000 targets at once
//! (`benches/scale.rs` part 2) held about 16 KiB of buffers per listing in flight,
//! counted with dhat, and the process kept that peak as resident memory afterwards.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// The first size of a call's encode and decode buffers.
pub const FIRST_BUFFER: usize = 256;

/// tonic's default: how much a stream encodes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with [`FIRST_BUFFER`]-byte first buffers; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER, YIELD_THRESHOLD)
}
