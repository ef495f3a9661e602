#!/usr/bin/env bash
# The demo command (README): `bash scripts/demo.sh`.
# Installs what is missing, then runs the quickstart example, which ends on its own.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source "$root/scripts/setup.sh"
banner "quickstart"
cargo run -q -p examples --example quickstart
