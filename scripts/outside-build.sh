#!/usr/bin/env bash
# Builds and runs a user's crate outside the workspace (scripts/outside-crate/) against
# this workspace's library crates by path, as a new user's `cargo add` would, with no
# protoc: PROTOC points nowhere and no protoc is on PATH. Three builds: every library
# crate with default features, then the driver crates with only `etcd`, then only
# `consul` (where `cargo tree` must show no etcd engine); and `cargo install --path
# driver-cli`. All share one target directory ($CARGO_TARGET_DIR/outside, or
# target/outside). Exits non-zero on the first failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir="${CARGO_TARGET_DIR:-$root/target}/outside"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# PATH without protoc: directories holding one are replaced by a directory of links to
# everything else in them.
no_protoc="$work/bin"
mkdir -p "$no_protoc"
path=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  if [ -e "$d/protoc" ]; then
    for f in "$d"/*; do
      [ "$(basename "$f")" = protoc ] || ln -s "$f" "$no_protoc/" 2>/dev/null || true
    done
    d="$no_protoc"
  fi
  case ":$path:" in *":$d:"*) ;; *) path="${path:+$path:}$d" ;; esac
done
if PATH="$path" command -v protoc >/dev/null; then
  echo "outside-build: protoc is still on the PATH built without it: $path" >&2
  exit 1
fi

crate="$work/outside-user"
cp -r "$root/scripts/outside-crate" "$crate"
# The workspace's versions of the shared dependencies.
cp "$root/Cargo.lock" "$crate/Cargo.lock"
manifest="$crate/Cargo.toml"
cp "$manifest" "$work/Cargo.toml.template"

common="tokio = { version = \"1\", features = [\"rt-multi-thread\", \"macros\", \"net\"] }
tokio-stream = { version = \"0.1\", features = [\"net\"] }
tonic = { version = \"0.14\", default-features = false, features = [\"codegen\", \"transport\", \"router\"] }
tonic-health = \"0.14\"
dtmdriver-core = { path = \"$root/driver-core\" }"

# deps_for FEATURES: the driver crates with FEATURES ("" = their defaults).
deps_for() {
  if [ -z "$1" ]; then
    echo "dtmdriver-etcd = { path = \"$root/driver-etcd\" }"
    echo "dtmdriver-consul = { path = \"$root/driver-consul\" }"
    echo "dtmdriver-k8s = { path = \"$root/driver-k8s\" }"
    echo "dtmdriver-gozero = { path = \"$root/driver-gozero-compat\" }"
    echo "dtmdriver-kratos = { path = \"$root/driver-kratos-compat\" }"
  else
    echo "dtmdriver-gozero = { path = \"$root/driver-gozero-compat\", default-features = false, features = [\"$1\"] }"
    echo "dtmdriver-kratos = { path = \"$root/driver-kratos-compat\", default-features = false, features = [\"$1\"] }"
  fi
}

run() { # NAME OUR_FEATURES DRIVER_FEATURES
  echo "-- outside build: $1"
  { cat "$work/Cargo.toml.template"; echo "$common"; deps_for "$3"; } >"$manifest"
  local start=$SECONDS
  (cd "$crate" && PATH="$path" PROTOC=/nonexistent CARGO_TARGET_DIR="$target_dir" \
    cargo build -q --features "$2")
  echo "   built in $((SECONDS - start)) s"
  "$target_dir/debug/outside-user"
}

run "every library crate, default features" "etcd,consul,engines" ""
run "driver crates with only the etcd feature" "etcd" "etcd"
run "driver crates with only the consul feature" "consul" "consul"
# The consul-only driver crates (the manifest of the last run) link no etcd engine, etcd
# client or protobuf stubs.
if (cd "$crate" && cargo tree -q -e normal -p dtmdriver-gozero -p dtmdriver-kratos) |
  grep -E 'dtmdriver-etcd|etcd-client|prost'; then
  echo "outside-build: the consul-only build links the etcd engine (above)" >&2
  exit 1
fi

echo "-- cargo install --path driver-cli (debug)"
start=$SECONDS
PATH="$path" PROTOC=/nonexistent CARGO_TARGET_DIR="$target_dir" \
  cargo install -q --locked --debug --path "$root/driver-cli" --root "$work/install"
echo "   built in $((SECONDS - start)) s"
drivers=$("$work/install/bin/dtmdriver" drivers | tr '\n' ' ')
echo "   dtmdriver drivers: $drivers"
for d in dtm-driver-gozero dtm-driver-kratos dtm-driver-etcd dtm-driver-consul; do
  case " $drivers " in *" $d "*) ;; *) echo "outside-build: dtmdriver lacks $d" >&2; exit 1 ;; esac
done
echo "outside builds passed"
