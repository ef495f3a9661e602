//! The committed etcd API stubs (`src/proto/`) are exactly what `proto/` generates.
//!
//! The stubs are generated once and committed so that building this crate needs no
//! `protoc` (see `src/proto/mod.rs`). This test generates them again with `protoc` and
//! `tonic-prost-build` into a temporary directory and compares; with
//! `DTMDRIVER_WRITE_ETCD_PROTO=1` it writes them into `src/proto/` instead, which is what
//! `bash scripts/gen-etcd-proto.sh` does.

use std::path::{Path, PathBuf};

/// The generated files kept: etcd's three packages. The annotation packages that
/// `rpc.proto` imports (`google.api`, grpc-gateway's options, `versionpb`) only carry
/// options, which no generated code refers to.
const KEPT: [&str; 3] = ["etcdserverpb.rs", "mvccpb.rs", "authpb.rs"];

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = root.join("proto");
    let files = [
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/api/mvccpb/kv.proto",
        "etcd/api/authpb/auth.proto",
    ]
    .map(|f| proto.join(f));
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        // Small first buffers per call (see `src/codec.rs`).
        .codec_path("crate::codec::SmallBuffers")
        .out_dir(out)
        .compile_protos(&files, &[proto])
        .unwrap_or_else(|e| {
            panic!(
                "generating the etcd stubs failed: {e}\n(needs `protoc`: \
                 sudo apt-get install -y protobuf-compiler)"
            )
        });
}

#[test]
fn committed_stubs_are_what_the_protos_generate() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/proto");
    if std::env::var_os("DTMDRIVER_WRITE_ETCD_PROTO").is_some_and(|v| v == "1") {
        let tmp = tempfile::tempdir().expect("temp dir");
        generate(tmp.path());
        for file in KEPT {
            std::fs::copy(tmp.path().join(file), committed.join(file))
                .unwrap_or_else(|e| panic!("writing src/proto/{file}: {e}"));
        }
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    generate(tmp.path());
    for file in KEPT {
        let fresh = std::fs::read_to_string(tmp.path().join(file))
            .unwrap_or_else(|e| panic!("generated {file}: {e}"));
        let kept = std::fs::read_to_string(committed.join(file))
            .unwrap_or_else(|e| panic!("src/proto/{file}: {e}"));
        assert!(
            fresh == kept,
            "driver-etcd/src/proto/{file} is not what driver-etcd/proto/ generates: run \
             `bash scripts/gen-etcd-proto.sh` and commit the result"
        );
    }
}
