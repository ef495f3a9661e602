#!/usr/bin/env bash
# The long fuzz run (docs/fuzzing.md): `bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]`.
#
# Runs each cargo-fuzz target under fuzz/ (default: all, one after another) for
# SECONDS_PER_TARGET seconds (default 60) with libFuzzer on the nightly toolchain.
# libFuzzer starts from the kept corpus fuzz/corpus/<target>/ and the regressions
# fuzz/regressions/<target>/ (both read only) and writes what it finds to fuzz/work/<target>/
# (kept between runs, not committed); a crash is written to fuzz/artifacts/<target>/ and
# stops the script with a non-zero exit (as does an input taking over 10 s or 2 GB).
# Prints executions per target at the end.
#
# Needs: rustup's nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# FUZZ_SANITIZER (default none: the workspace forbids unsafe code, and what is searched
# for is panics; `address` adds ASan for the dependencies' unsafe code).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/fuzz"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...] (seconds: a whole number > 0)" >&2
  exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# Release with debug assertions: integer overflow panics as in the tests.
build=(--sanitizer "$sanitizer" --debug-assertions)
cargo +nightly fuzz build "${build[@]}"
# Built once, then the binaries run directly (editing the sources mid-run changes nothing).
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="${CARGO_TARGET_DIR:-$root/fuzz/target}/$triple/release"

summary=()
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t" "regressions/$t"
  log="work/$t.log"
  echo "== $t: ${seconds}s"
  status=0
  "$bin_dir/$t" -max_total_time="$seconds" -artifact_prefix="artifacts/$t/" -print_final_stats=1 -timeout=10 \
    "work/$t" "corpus/$t" "regressions/$t" >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
  units=$(find "work/$t" -type f | wc -l)
  summary+=("$(printf '%-24s %12s execs %8s/s %6s in work corpus  exit %s' "$t" "${execs:-?}" "${rate:-?}" "$units" "$status")")
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/." >&2
    echo "Keep it as fuzz/regressions/$t/<name> (the stable test replays it), fix, re-run." >&2
    printf '%s\n' "${summary[@]}"
    exit 1
  fi
done
printf '%s\n' "${summary[@]}"
