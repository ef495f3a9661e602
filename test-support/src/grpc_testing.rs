//! grpc's interop test protocol (`grpc.testing`: `TestService`, `UnimplementedService`
//! and their messages), for the interop tests against grpc-go's interop server, and
//! that server's processes.
//!
//! The Rust code in `grpc_testing/grpc.testing.rs` is generated and committed, so that
//! building the tests needs no protoc. It was generated with tonic-prost-build from
//! grpc-go's own descriptors of `grpc/testing/test.proto`, `messages.proto` and
//! `empty.proto` (module `google.golang.org/grpc/interop/grpc_testing`, the version
//! pinned in `interop/grpc-interop/go.mod`), so the types match the server exactly.
//! Regenerate with:
//!
//! ```text
//! bash scripts/gen-grpc-testing.sh
//! ```

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use crate::{InteropProcess, TestPki};

/// The generated code.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    include!("grpc_testing/grpc.testing.rs");
}

pub use generated::*;

/// Which interop server program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InteropServerKind {
    /// grpc-go's own interop server (`google.golang.org/grpc/interop/server`), as
    /// `interop/bin/grpc-interop-server`. It listens on every interface (its flags
    /// allow nothing else).
    GrpcGo,
    /// The same test service with gzip registered and the requests' compression flags
    /// honoured (`interop/grpc-interop/gzip-server`), on 127.0.0.1.
    GrpcGoGzip,
}

/// A running grpc-go interop server on a free port, killed when dropped.
pub struct GrpcInteropServer {
    port: u16,
    _process: InteropProcess,
}

impl GrpcInteropServer {
    /// Starts `kind` in plaintext, or with TLS using `pki`'s server certificate (so a
    /// client trusts `pki.ca_pem`), and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// Panics (naming `bash interop/build.sh`) if the program is missing, or if it does
    /// not listen within 10 s.
    pub fn start(kind: InteropServerKind, tls: Option<&TestPki>) -> Self {
        let name = match kind {
            InteropServerKind::GrpcGo => "grpc-interop-server",
            InteropServerKind::GrpcGoGzip => "grpc-interop-gzip-server",
        };
        let port = crate::free_port();
        let mut args = vec![format!("--port={port}")];
        if let Some(pki) = tls {
            args.push("--use_tls=true".into());
            args.push(format!(
                "--tls_cert_file={}",
                pki.path("server.pem").display()
            ));
            args.push(format!(
                "--tls_key_file={}",
                pki.path("server-key.pem").display()
            ));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = InteropProcess::start(name, &args);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = process.child().try_wait().ok().flatten() {
                panic!("{name} {args:?} exited before listening: {status}");
            }
            assert!(
                Instant::now() < until,
                "{name} did not listen on 127.0.0.1:{port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            port,
            _process: process,
        }
    }

    /// Its address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
