//! A dtm transaction end to end: the real dtm coordinator drives Rust services.
//!
//! - [`busi`]: a tonic service with dtm's classic branches (`TransOut`, `TransIn` and
//!   their reverts) that accepts dtm's raw-codec calls, reads the `dtm-*` metadata,
//!   records every call in a shared [`BusiLog`] and fails a branch with `Aborted`
//!   when told to;
//! - [`client`]: a small dtm client ([`DtmClient`]): a gid, submitting a [`Msg`] or a
//!   [`Saga`], and the transaction's status. It dials dtm through a driver
//!   (`etcd://…/dtmservice`, `consul://…/dtmservice`, `discovery:///dtmservice`),
//!   never a fixed address.
//!
//! The protos are in `examples/proto/`: `busi.proto` is ours; `dtmgimp.proto` is dtm's
//! gRPC API, written from dtm's published definition.

pub mod busi;
pub mod client;

pub use busi::{BranchCall, BusiLog, BusiMethod, BusiServer};
pub use client::{BranchInfo, DtmClient, DtmError, Msg, Saga, TransInfo};

/// Code generated from `examples/proto/busi.proto`.
pub mod busi_pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("busi");
}

/// Code generated from `examples/proto/dtmgimp.proto` (dtm's gRPC API).
pub mod dtm_pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("dtmgimp");
}
