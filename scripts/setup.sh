#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/demo.sh: installs what is missing on a fresh
# machine (apt packages etcd-server for `etcd` and protobuf-compiler for `protoc`, the
# rustfmt/clippy components) and builds the Go interop programs. Expects $root set.

step="startup"
banner() {
  step="$*"
  printf '\n==== %s ====\n' "$step"
}
die() {
  echo "error: $*" >&2
  exit 1
}
trap 'echo "$(basename "$0"): FAILED during step: $step" >&2' ERR

# Runs a command as root: directly when root, else through sudo (non-interactive sudo
# when there is no terminal, so CI never hangs on a password prompt).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
  else
    die "not root and sudo is not installed; run as root: $*"
  fi
}

banner "system packages"
# command -> Debian package that provides it
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${missing[*]} and apt-get is not available; install them with your package manager"
  echo "installing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
command -v etcd >/dev/null 2>&1 || die "etcd still not found after installing etcd-server"
command -v protoc >/dev/null 2>&1 || die "protoc still not found after installing protobuf-compiler"
echo "etcd:   $(command -v etcd) ($(etcd --version | head -n 1))"
echo "protoc: $(command -v protoc) ($(protoc --version))"

banner "Rust toolchain"
command -v cargo >/dev/null 2>&1 ||
  die "cargo not found: install Rust with: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null 2>&1 ||
    die "cargo fmt / cargo clippy not available and rustup not found: install the rustfmt and clippy components"
  rustup component add rustfmt clippy
fi
cargo --version

# The demo needs no Go program; it sets SETUP_INTEROP=0 to skip their (long, cold) build.
if [ "${SETUP_INTEROP:-1}" = 1 ]; then
  banner "Go interop programs (interop/build.sh)"
  # The official Go tarball installs to /usr/local/go, which is often not on PATH.
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null 2>&1 ||
    die "go not found: install Go from https://go.dev/dl/ (e.g. into /usr/local/go) or with: apt-get install -y golang-go"
  go version
  bash interop/build.sh
fi

