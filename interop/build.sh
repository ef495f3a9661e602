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
  # A module may name the packages to build (e.g. a main package of a dependency, as
  # interop/dtm does for the dtm coordinator) in build-packages, one a line; a line
  # NAME=PACKAGE builds PACKAGE as bin/NAME (for a package called e.g. `server`).
  if [ -f "$dir/build-packages" ]; then
    mapfile -t lines < <(grep -v '^[[:space:]]*\(#\|$\)' "$dir/build-packages")
  else
    lines=(./...)
  fi
  pkgs=()
  for line in "${lines[@]}"; do
    if [[ $line == *=* ]]; then
      (cd "$dir" && go build -trimpath -o "$here/bin/${line%%=*}" "${line#*=}")
    else
      pkgs+=("$line")
    fi
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    (cd "$dir" && go build -trimpath -o "$here/bin/" "${pkgs[@]}")
  fi
done
