#!/usr/bin/env bash
# Two builds side by side in alternating rounds, each with its own tctl (so each build's tbot
# protocol is measured: a baseline from before GenerateBotCerts runs the cycle as its tctl
# bench did, in two connections and five calls). Each round starts a fresh server of one
# build (diag endpoint on, per-address handshake limit raised to 1024 so 64 workers from one
# address fit), runs `tctl bench --workload WORKLOAD`, and prints one JSON line per workload;
# then the medians per build and workload, and the servers' peak RSS.
#
#   tests/bench-ab.sh BASELINE_DIR [ROUNDS] [WORKLOAD] [BOTS] [CONCURRENCY] [SECONDS]
#
# BASELINE_DIR holds release builds `auth-server` and `tctl` of another commit (for example:
# git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p auth-server
# -p tctl-bots) and pass /tmp/base/target/release). The other build is this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:?usage: tests/bench-ab.sh BASELINE_DIR [ROUNDS] [WORKLOAD] [BOTS] [CONCURRENCY] [SECONDS]}"
rounds="${2:-2}" workload="${3:-all}" bots="${4:-100}" conc="${5:-64}" secs="${6:-10}"

cargo build -q --release -p auth-server -p tctl-bots
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
scratch="$(mktemp -d -t machine-id-bench-ab.XXXXXX)"
pid=""
cleanup() { set +e; [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$scratch"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

round() { # NAME ROUND BIN_DIR
  local dir="$scratch/$1-$2" port
  mkdir -p "$dir"
  port="$(free_port)"
  printf 'auth_service: {diag_addr: 127.0.0.1:%s}\nlimits: {max_unauthenticated_connections_per_ip: 1024}\n' "$port" >"$dir/cfg.yaml"
  "$3/auth-server" start -c "$dir/cfg.yaml" --data-dir "$dir/data" --cluster-name example.com \
    --auth-listen 127.0.0.1:0 >"$dir/ready" 2>"$dir/auth.log" &
  pid=$!
  for _ in $(seq 1 400); do grep -q '^auth server ready on ' "$dir/ready" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr="$(sed -n 's/^auth server ready on //p' "$dir/ready")"
  "$3/tctl" --auth-server "$addr" --identity "$dir/data/admin" bench --workload "$workload" \
    --format json --bots "$bots" --concurrency "$conc" --duration "${secs}s" --server-pid "$pid" \
    --diag-addr "127.0.0.1:$port" | while read -r line; do
      echo "{\"build\":\"$1\",\"round\":$2,${line#\{}"
    done | tee -a "$scratch/results"
  echo "{\"build\":\"$1\",\"round\":$2,\"peak_rss_kb\":$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")}" >>"$scratch/rss"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

echo "load: $workload, $bots bots, $conc workers, ${secs}s, $rounds rounds each; $(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  round baseline "$r" "$base"
  round this "$r" "$bin"
done
python3 - "$scratch/results" "$scratch/rss" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rss = [json.loads(l) for l in open(sys.argv[2])]
med = lambda rs, k: statistics.median((r.get(k) or 0) for r in rs)
print(f"{'workload':16} {'build':9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'srv CPU ms':>10} {'cli CPU ms':>10} {'commits':>7} errors locks")
for w in dict.fromkeys(r["workload"] for r in rows):
    got = {}
    for b in ("baseline", "this"):
        rs = [r for r in rows if r["workload"] == w and r["build"] == b]
        got[b] = med(rs, "requests_per_second")
        print(f"{w:16} {b:9} {got[b]:8.1f} {med(rs, 'p50_ms'):7.2f} {med(rs, 'p99_ms'):7.2f} "
              f"{med(rs, 'server_cpu_ms_per_request'):10.3f} {med(rs, 'client_cpu_ms_per_request'):10.3f} "
              f"{med(rs, 'store_commits_per_request'):7.3f} {sum(r['errors'] for r in rs)} {sum(r['locks'] for r in rs)}")
    print(f"{w:16} this/baseline req/s {got['this'] / got['baseline']:.3f}")
for b in ("baseline", "this"):
    print(f"peak server RSS {b}: median {statistics.median(r['peak_rss_kb'] for r in rss if r['build'] == b)} kB")
PY
echo "load average at the end: $(cut -d' ' -f1 /proc/loadavg)"
