#!/usr/bin/env bash
# Generates dtmdriver-etcd's etcd API stubs (driver-etcd/src/proto/*.rs) from etcd's .proto
# files (driver-etcd/proto/) with protoc and tonic-prost-build; commit the result.
#
#   bash scripts/gen-etcd-proto.sh          write the stubs
#   bash scripts/gen-etcd-proto.sh --check  fail if the committed stubs differ (scripts/test.sh)
#
# Needs protoc (sudo apt-get install -y protobuf-compiler). Building dtmdriver-etcd does not:
# that is why the stubs are committed. The generation is the test
# driver-etcd/tests/proto_stubs.rs, so that it runs with the workspace's locked
# tonic-prost-build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
case "${1:-}" in
  --check) export DTMDRIVER_WRITE_ETCD_PROTO=0 ;;
  "") export DTMDRIVER_WRITE_ETCD_PROTO=1 ;;
  *) echo "usage: bash scripts/gen-etcd-proto.sh [--check]" >&2; exit 2 ;;
esac
cargo test -q -p dtmdriver-etcd --test proto_stubs
