#!/usr/bin/env bash
# Renewal throughput and latency of one auth server on SQLite against one on PostgreSQL, and
# the change feed's lag between two servers' stores on one PostgreSQL database: side by side
# in alternating rounds on this machine, with the same load command (`tctl bench --workload
# renew`: a new mTLS connection and key per renewal, as tbot renews) and tests/bench/feed_lag.rs.
# Starts a throwaway PostgreSQL server (initdb in a temp dir, as the postgres user when root).
#
#   tests/bench-ha.sh [ROUNDS] [BOTS] [CONCURRENCY] [SECONDS] [FEED_SAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}" bots="${2:-64}" conc="${3:-16}" secs="${4:-10}" samples="${5:-2000}"

cargo build -q --release -p auth-server -p tctl-bots -p machine-id-e2e --bin auth-server --bin tctl --bin feed-lag
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
pgbin="${MACHINE_ID_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL is not installed: run tests/test.sh --setup-only (or apt-get install postgresql)" >&2; exit 1; }
scratch="$(mktemp -d -t machine-id-bench-ha.XXXXXX)"
chmod 755 "$scratch"
pid=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  set +e # every step runs even when one fails (a server already gone, say)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  as_pg "$pgbin/pg_ctl" -D "$scratch/pg" -m immediate stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$scratch/pg" "$scratch/sock"
[ "$(id -u)" = 0 ] && chown postgres "$scratch/pg" "$scratch/sock"
as_pg "$pgbin/initdb" -D "$scratch/pg" -A trust -U postgres >/dev/null
as_pg "$pgbin/pg_ctl" -D "$scratch/pg" -l "$scratch/pg/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $scratch/sock" start >/dev/null
fresh_db() { # a new database each call (called in $(...), so no counter survives it)
  local db="bench_$(date +%s%N)"
  as_pg "$pgbin/psql" -h "$scratch/sock" -p "$port" -U postgres -qc "CREATE DATABASE $db" >/dev/null
  echo "postgresql://postgres@127.0.0.1:$port/$db?sslmode=disable"
}

round() { # STORE ROUND
  local dir="$scratch/$1-$2"
  mkdir -p "$dir"
  local storage=()
  [ "$1" = postgresql ] && storage=(--storage-conn-string "$(fresh_db)")
  "$bin/auth-server" start --data-dir "$dir/data" --cluster-name example.com \
    --auth-listen 127.0.0.1:0 "${storage[@]}" >"$dir/ready" 2>"$dir/auth.log" &
  pid=$!
  for _ in $(seq 1 400); do grep -q '^auth server ready on ' "$dir/ready" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr="$(sed -n 's/^auth server ready on //p' "$dir/ready")"
  [ -n "$addr" ] || { cat "$dir/auth.log" >&2; exit 1; }
  local line
  line="$("$bin/tctl" --auth-server "$addr" --identity "$dir/data/admin" bench --workload renew \
    --format json --bots "$bots" --concurrency "$conc" --duration "${secs}s" --server-pid "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  echo "{\"store\":\"$1\",\"round\":$2,${line#\{}" | tee -a "$scratch/results"
}

echo "load: $bots bots, $conc workers, ${secs}s per round, $rounds rounds each; $(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg); PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on loopback"
for r in $(seq 1 "$rounds"); do
  round sqlite "$r"
  round postgresql "$r"
done
python3 - "$scratch/results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for s in ("sqlite", "postgresql"):
    rs = [r for r in rows if r["store"] == s]
    med[s] = (statistics.median(r["requests_per_second"] for r in rs),
              statistics.median(r["p99_ms"] for r in rs),
              sum(r["errors"] for r in rs), sum(r["locks"] for r in rs))
    print(f"{s:10} median {med[s][0]:7.1f} renewals/s, median p99 {med[s][1]:6.1f} ms, errors {med[s][2]}, locks {med[s][3]}")
print(f"postgresql/sqlite renewals/s: {med['postgresql'][0] / med['sqlite'][0]:.3f}")
PY
echo "feed lag (write through one server's store to the event on another's watch), $samples samples:"
"$bin/feed-lag" --conn-string "$(fresh_db)" --samples "$samples"
