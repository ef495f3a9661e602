#!/usr/bin/env bash
# A noisy neighbour for measuring how steady a fault scenario's verdict is: for $1
# seconds (default 120), bursts of one or two busy cores lasting 0.1–0.9 s, each
# followed by 0.3–2.7 s of quiet, as other tenants of a shared CI machine.
#   bash scripts/noisy-neighbour.sh 200 & cargo run -q -p faults -- instance-frozen-rr
set -euo pipefail
end=$((SECONDS + ${1:-120}))
while [ "$SECONDS" -lt "$end" ]; do
  for _ in $(seq $((RANDOM % 2 + 1))); do
    timeout "0.$((RANDOM % 9 + 1))" sh -c 'while :; do :; done' &
  done
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.1f", 0.3 + (r % 25) / 10 }')"
done
wait
