#!/usr/bin/env bash
# The demo command (README): `bash scripts/demo.sh`.
# Installs what is missing (etcd among it), then runs the quickstart example: a private
# etcd, three echo instances registered with dtm-driver-gozero, one killed mid-run, no
# failed call. It ends on its own and exits non-zero if a call failed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export SETUP_INTEROP=0
source "$root/scripts/setup.sh"
banner "quickstart"
cargo run -q -p examples --example quickstart
