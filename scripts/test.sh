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

# A one-shot full run gains nothing from incremental compilation, which roughly doubles
# the build's disk use (set CARGO_INCREMENTAL=1 to keep it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
report_disk() {
  local target="${CARGO_TARGET_DIR:-$root/target}"
  mkdir -p "$target"
  echo "disk: $(df -h --output=avail "$target" | tail -n 1 | tr -d ' ') free where $target lives;" \
    "target uses $(du -sh "$target" 2>/dev/null | cut -f1)"
}
banner "disk"
report_disk

banner "cargo fmt --all -- --check"
cargo fmt --all -- --check

banner "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

banner "etcd API stubs current (bash scripts/gen-etcd-proto.sh --check)"
bash scripts/gen-etcd-proto.sh --check

banner "cargo test --workspace"
cargo test --workspace

banner "outside builds: the library crates as a user builds them, without protoc (scripts/outside-build.sh)"
bash scripts/outside-build.sh

banner "fault suite, short scenarios (cargo run -p faults -- --short; docs/faults.md)"
cargo run -q -p faults -- --short

banner "examples (the demo and the other examples, each run to completion)"
for ex in quickstart coordinator_config custom_driver gateway gozero_style kratos_style tower_discover; do
  echo "-- example $ex"
  cargo run -q -p examples --example "$ex"
done

banner "cargo doc --workspace --no-deps (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

report_disk
trap - ERR
banner "all checks passed"
