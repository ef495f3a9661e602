#!/usr/bin/env bash
# The test command (README): `bash scripts/test.sh`.
#
# Installs whatever is missing (apt packages: etcd-server for `etcd`, protobuf-compiler for
# `protoc`), builds the Go interop programs, then runs every check: rustfmt, clippy, all
# tests (including doctests, against real servers) and rustdoc. Exits non-zero on the first
# failure. Works as root (CI) or as a user with sudo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

source "$root/scripts/setup.sh"

banner "cargo fmt --all -- --check"
cargo fmt --all -- --check

banner "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

banner "cargo test --workspace"
cargo test --workspace

banner "examples (the demo and the other examples, each run to completion)"
for ex in quickstart coordinator_config custom_driver gateway gozero_style kratos_style; do
  echo "-- example $ex"
  cargo run -q -p examples --example "$ex"
done

banner "cargo doc --workspace --no-deps (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

trap - ERR
banner "all checks passed"
