#!/usr/bin/env bash
# Renewal throughput of two auth-server builds, side by side in alternating rounds on this
# machine: each round starts a fresh server of one build, creates and joins BOTS bots, and
# renews them from CONCURRENCY workers for SECONDS (`tctl bench --workload renew`: a new mTLS
# connection and key per renewal, as tbot renews). Prints one JSON line per round (tctl
# bench's, with the build and round) and the median renewals/s and p99 of each build with
# their ratio.
#
#   tests/bench-renew.sh BASELINE_AUTH_SERVER [ROUNDS] [BOTS] [CONCURRENCY] [SECONDS]
#
# BASELINE_AUTH_SERVER is another release build of auth-server (for example built from an
# earlier commit: git worktree add /tmp/base <commit> && cargo build --release -p auth-server
# there). The other build is this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:?usage: tests/bench-renew.sh BASELINE_AUTH_SERVER [ROUNDS] [BOTS] [CONCURRENCY] [SECONDS]}"
rounds="${2:-3}" bots="${3:-64}" conc="${4:-16}" secs="${5:-10}"

cargo build -q --release -p auth-server -p tctl-bots
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
scratch="$(mktemp -d -t machine-id-bench-renew.XXXXXX)"
pid=""
cleanup() { set +e; [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$scratch"; }
trap cleanup EXIT

round() { # NAME BINARY
  local dir="$scratch/$1-$2"
  mkdir -p "$dir"
  "$3" start --data-dir "$dir/data" --cluster-name example.com --auth-listen 127.0.0.1:0 \
    >"$dir/ready" 2>"$dir/auth.log" &
  pid=$!
  for _ in $(seq 1 400); do grep -q '^auth server ready on ' "$dir/ready" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr="$(sed -n 's/^auth server ready on //p' "$dir/ready")"
  local line
  line="$("$bin/tctl" --auth-server "$addr" --identity "$dir/data/admin" bench --workload renew \
    --format json --bots "$bots" --concurrency "$conc" --duration "${secs}s" --server-pid "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  echo "{\"build\":\"$1\",\"round\":$2,${line#\{}" | tee -a "$scratch/results"
}

echo "load: $bots bots, $conc workers, ${secs}s per round, $rounds rounds each; $(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  round baseline "$r" "$base"
  round this "$r" "$bin/auth-server"
done
python3 - "$scratch/results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for b in ("baseline", "this"):
    rs = [r for r in rows if r["build"] == b]
    med[b] = (statistics.median(r["requests_per_second"] for r in rs),
              statistics.median(r["p99_ms"] for r in rs),
              sum(r["errors"] for r in rs), sum(r["locks"] for r in rs))
    print(f"{b:9} median {med[b][0]:7.1f} renewals/s, median p99 {med[b][1]:6.1f} ms, errors {med[b][2]}, locks {med[b][3]}")
print(f"this/baseline renewals/s: {med['this'][0] / med['baseline'][0]:.3f}")
PY
