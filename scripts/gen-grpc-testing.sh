#!/usr/bin/env bash
# Regenerates test-support/src/grpc_testing/ (grpc.testing's messages and TestService
# client and server, for the interop tests) from grpc-go's own descriptors of test.proto,
# messages.proto and empty.proto (interop/grpc-interop/fds writes them from the module
# google.golang.org/grpc/interop/grpc_testing pinned in interop/grpc-interop/go.mod), with
# tonic-prost-build. The output is committed, so building the tests needs neither this
# script nor protoc. Needs `go` and `cargo` (the generator is a throwaway crate in a
# temporary directory). Run from anywhere: bash scripts/gen-grpc-testing.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root/interop/grpc-interop" && go run ./fds) >"$tmp/grpc_testing.binpb"
mkdir -p "$tmp/gen/src"
cat >"$tmp/gen/Cargo.toml" <<'TOML'
[package]
name = "gen-grpc-testing"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
prost = "0.14"
prost-types = "0.14"
tonic-prost-build = "0.14"

[workspace]
TOML
cat >"$tmp/gen/src/main.rs" <<'RUST'
use prost::Message;
fn main() {
    let mut args = std::env::args().skip(1);
    let (fds, out) = (args.next().unwrap(), args.next().unwrap());
    let fds = prost_types::FileDescriptorSet::decode(&*std::fs::read(fds).unwrap()).unwrap();
    tonic_prost_build::configure()
        .out_dir(out)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)
        .unwrap();
}
RUST
out="$root/test-support/src/grpc_testing"
mkdir -p "$out"
rm -f "$out"/grpc.testing.rs
cp "$root/Cargo.lock" "$tmp/gen/Cargo.lock" 2>/dev/null || true
(cd "$tmp/gen" && CARGO_TARGET_DIR="$tmp/target" cargo run --quiet -- "$tmp/grpc_testing.binpb" "$out")
echo "generated $out/grpc.testing.rs" >&2
