#!/usr/bin/env bash
# Builds every Go program under interop/ (each directory with a go.mod) into interop/bin/.
# Go's build cache makes a second run fast. Used by scripts/test.sh; needs only `go`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/bin"
shopt -s nullglob
for mod in "$here"/*/go.mod; do
  dir=$(dirname "$mod")
  name=$(basename "$dir")
  echo "interop: building $name" >&2
  (cd "$dir" && go build -trimpath -o "$here/bin/" ./...)
done
