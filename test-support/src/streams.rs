//! The `streams.Streams` service (proto/streams.proto) every [`EchoServer`]
//! serves next to `echo.Echo`: streaming calls for the channel's transport tests.
//!
//! [`EchoServer`]: crate::EchoServer

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Generated code of `proto/streams.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("streams");
}

pub use pb::streams_client::StreamsClient;
use pb::streams_server::{Streams, StreamsServer};
pub use pb::{Note, ProduceRequest, Summary};

type NoteStream = Pin<Box<dyn Stream<Item = Result<Note, Status>> + Send>>;

pub(crate) struct Handler {
    pub(crate) name: String,
}

pub(crate) fn service(name: &str) -> StreamsServer<Handler> {
    StreamsServer::new(Handler {
        name: name.to_string(),
    })
    .max_decoding_message_size(16 << 20)
    .max_encoding_message_size(16 << 20)
}

#[tonic::async_trait]
impl Streams for Handler {
    type ChatStream = NoteStream;
    type ProduceStream = NoteStream;

    async fn chat(&self, req: Request<Streaming<Note>>) -> Result<Response<NoteStream>, Status> {
        let name = self.name.clone();
        let notes = req.into_inner().map(move |note| {
            note.map(|n| Note {
                body: n.body,
                server: name.clone(),
            })
        });
        Ok(Response::new(Box::pin(notes)))
    }

    async fn collect(&self, req: Request<Streaming<Note>>) -> Result<Response<Summary>, Status> {
        let mut notes = req.into_inner();
        let (mut count, mut bytes) = (0u64, 0u64);
        while let Some(note) = notes.next().await {
            let note = note?;
            count += 1;
            bytes += note.body.len() as u64;
        }
        Ok(Response::new(Summary {
            count,
            bytes,
            server: self.name.clone(),
        }))
    }

    async fn produce(&self, req: Request<ProduceRequest>) -> Result<Response<NoteStream>, Status> {
        let ProduceRequest { count, size } = req.into_inner();
        let name = self.name.clone();
        let notes = tokio_stream::iter(0..count).map(move |i| {
            Ok(Note {
                body: vec![(i % 251) as u8; size as usize],
                server: name.clone(),
            })
        });
        Ok(Response::new(Box::pin(notes)))
    }
}
