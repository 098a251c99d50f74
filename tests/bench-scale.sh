#!/usr/bin/env bash
# Renewals at scale: one server of this tree's release build (diag endpoint on, per-address
# handshake limit 1024), LOCKS standing locks on users that are not bots (made with one
# `tctl create` of LOCKS documents), then `tctl bench --workload renew` with BOTS bots and 64
# workers for 10 s. Prints tctl bench's JSON line, the time the setup took, the server's RSS
# (now and peak) and the data directory's size. Compare runs with different BOTS and LOCKS:
# renewals/s and server CPU per renewal should not move beyond noise.
#
#   tests/bench-scale.sh BOTS [LOCKS] [CONCURRENCY] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bots="${1:?usage: tests/bench-scale.sh BOTS [LOCKS] [CONCURRENCY] [SECONDS]}"
locks="${2:-0}" conc="${3:-64}" secs="${4:-10}"

cargo build -q --release -p auth-server -p tctl-bots
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
dir="$(mktemp -d -t machine-id-bench-scale.XXXXXX)"
pid=""
cleanup() { set +e; [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
printf 'auth_service: {diag_addr: 127.0.0.1:%s}\nlimits: {max_unauthenticated_connections_per_ip: 1024}\n' "$port" >"$dir/cfg.yaml"
"$bin/auth-server" start -c "$dir/cfg.yaml" --data-dir "$dir/data" --cluster-name example.com \
  --auth-listen 127.0.0.1:0 >"$dir/ready" 2>"$dir/auth.log" &
pid=$!
for _ in $(seq 1 400); do grep -q '^auth server ready on ' "$dir/ready" 2>/dev/null && break; sleep 0.05; done
addr="$(sed -n 's/^auth server ready on //p' "$dir/ready")"
tctl=("$bin/tctl" --auth-server "$addr" --identity "$dir/data/admin")

if [ "$locks" -gt 0 ]; then
  python3 - "$locks" >"$dir/locks.yaml" <<'PY'
import sys
print("\n---\n".join(
    f"kind: lock\nversion: v2\nmetadata:\n  name: standing-{i}\nspec:\n  target:\n    user: nobody-{i}\n  message: standing lock {i}"
    for i in range(int(sys.argv[1]))))
PY
  start=$(date +%s.%N)
  "${tctl[@]}" create "$dir/locks.yaml" >/dev/null
  echo "$locks standing locks created in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
fi
start=$(date +%s.%N)
"${tctl[@]}" bench --workload renew --format json --bots "$bots" --concurrency "$conc" \
  --duration "${secs}s" --server-pid "$pid" --diag-addr "127.0.0.1:$port"
echo "setup and run: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s; server RSS $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") kB (peak $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") kB); data dir $(du -sh "$dir/data" | cut -f1)"
