#!/usr/bin/env bash
# Measures tbot's oneshot time and memory, and what the SSH proxy costs: session setup time and bulk throughput of `ssh` through
# the proxy (ssh -F DIR/ssh_config, ProxyCommand tbot proxy ssh) against the same ssh straight
# to the same sshd with the same certificate. Release builds; prints the figures that
# docs/PERFORMANCE.md records.
#
#   tests/bench-proxy.sh [SESSIONS] [MIB] [ROUNDS]   # defaults: 50 sessions, 1024 MiB, 5 rounds
#
# Throughput is noisy on a shared 2-core machine, so it is measured ROUNDS times, direct and
# through the proxy alternately, and the medians are compared.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions="${1:-50}"
mib="${2:-1024}"
rounds="${3:-5}"

cargo build -q --release -p auth-server -p tctl-bots -p tbot
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
scratch="$(mktemp -d -t machine-id-bench.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$scratch"; }
trap cleanup EXIT

"$bin/auth-server" start --data-dir "$scratch/data" --cluster-name example.com \
  --auth-listen 127.0.0.1:0 >"$scratch/ready" 2>"$scratch/auth.log" &
pids+=($!)
for _ in $(seq 1 200); do grep -q '^auth server ready on ' "$scratch/ready" 2>/dev/null && break; sleep 0.05; done
addr="$(sed -n 's/^auth server ready on //p' "$scratch/ready")"
export TELEPORT_AUTH_SERVER="$addr" TCTL_IDENTITY="$scratch/data/admin"
tctl="$bin/tctl"

node="$scratch/node"; mkdir -p "$node" /run/sshd
"$tctl" auth export --type=user >"$node/user_ca.pub"
"$tctl" auth sign --host=node-name --format=openssh --out="$node/host" >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$node/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $node/host
HostCertificate $node/host-cert.pub
TrustedUserCAKeys $node/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
UsePAM no
StrictModes no
MaxStartups 200
PidFile $node/sshd.pid
CFG
/usr/sbin/sshd -D -e -f "$node/sshd_config" 2>"$node/sshd.log" &
pids+=($!)
"$tctl" nodes add --name=node-name --addr="127.0.0.1:$port" >/dev/null
cat >"$scratch/ops.yaml" <<YAML
kind: role
version: v5
metadata: {name: ops}
spec:
  allow:
    logins: [root]
    node_labels: {'*': '*'}
YAML
"$tctl" create -f "$scratch/ops.yaml" >/dev/null
out="$("$tctl" bots add robot --roles=ops)"
token="$(sed -n 's/^The bot token: //p' <<<"$out")"
pin="$(grep -o -- '--ca-pin=[^ ]*' <<<"$out" | head -n1 | cut -d= -f2-)"
dest="$scratch/dest"
# tbot's first join (pin check, join, impersonated outputs, files fsynced), then a renewal
# with the stored identity: wall time and peak RSS of the whole process.
/usr/bin/time -f "%e s, peak RSS %M KiB" -o "$scratch/join.time" "$bin/tbot" start \
  --data-dir "$scratch/bot" --destination-dir "$dest" --token "$token" \
  --ca-pin "$pin" --auth-server "$addr" --oneshot 2>/dev/null
/usr/bin/time -f "%e s, peak RSS %M KiB" -o "$scratch/renew.time" "$bin/tbot" start \
  --data-dir "$scratch/bot" --destination-dir "$dest" --auth-server "$addr" --oneshot 2>/dev/null

via_proxy=(ssh -F "$dest/ssh_config" root@node-name.example.com)
direct=(ssh -F "$dest/ssh_config" -o ProxyCommand=none -o HostName=127.0.0.1 -o Port="$port"
  -o HostKeyAlias=node-name.example.com root@node-name.example.com)
"${via_proxy[@]}" true </dev/null
"${direct[@]}" true </dev/null

now_ms() { python3 -c 'import time; print(time.monotonic()*1000)'; }
setup() {  # prints the median and mean of $sessions runs of `ssh ... true`, in ms
  python3 - "$sessions" "$@" <<'PY'
import statistics, subprocess, sys, time
n = int(sys.argv[1]); cmd = sys.argv[2:] + ["true"]
ts = []
for _ in range(n):
    t = time.monotonic()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, check=True)
    ts.append((time.monotonic() - t) * 1000)
print(f"median {statistics.median(ts):.1f} ms, mean {statistics.mean(ts):.1f} ms, min {min(ts):.1f} ms")
PY
}
throughput() {  # MiB/s of $mib MiB through `ssh ... 'cat > /dev/null'`
  local t0 t1
  t0="$(now_ms)"
  head -c "$((mib * 1024 * 1024))" /dev/zero | "$@" 'cat > /dev/null'
  t1="$(now_ms)"
  python3 -c "print(f'{$mib / (($t1 - $t0) / 1000):.0f} MiB/s ({$mib} MiB in {($t1 - $t0) / 1000:.2f} s)')"
}

echo "machine: $(nproc) cores, $(uname -r); $(ssh -V 2>&1)"
echo "tbot start --oneshot, first join:       $(cat "$scratch/join.time")"
echo "tbot start --oneshot, stored identity:  $(cat "$scratch/renew.time")"
echo "time to sshd's banner, $sessions runs each (the proxy's own setup cost, without ssh's):"
python3 - "$sessions" "$port" "$bin/tbot" "$dest" "$addr" <<'PY'
import socket, statistics, subprocess, sys, time
n, port, tbot, dest, proxy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def direct():
    t = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(64)
    d = time.monotonic() - t
    s.close()
    return d
def via_proxy():
    t = time.monotonic()
    p = subprocess.Popen([tbot, "proxy", f"--destination-dir={dest}", f"--proxy={proxy}", "ssh",
                          "--cluster=example.com", "root@node-name.example.com:3022"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p.stdout.read(4)
    d = time.monotonic() - t
    p.kill(); p.wait()
    return d
for name, f in (("direct TCP to sshd", direct), ("tbot proxy ssh (process start, mTLS, checks, dial)", via_proxy)):
    ts = [f() * 1000 for _ in range(n)]
    print(f"  {name}: median {statistics.median(ts):.2f} ms, mean {statistics.mean(ts):.2f} ms")
PY
echo "session setup (ssh ... true), $sessions runs each:"
echo "  direct to sshd:    $(setup "${direct[@]}")"
echo "  through the proxy: $(setup "${via_proxy[@]}")"
echo "throughput (head -c ${mib}MiB /dev/zero | ssh ... 'cat > /dev/null'), $rounds rounds, alternating:"
d_all=(); p_all=()
for r in $(seq 1 "$rounds"); do
  d="$(throughput "${direct[@]}")"; p="$(throughput "${via_proxy[@]}")"
  echo "  round $r: direct $d; through the proxy $p"
  d_all+=("${d%% *}"); p_all+=("${p%% *}")
done
python3 - "${d_all[*]}" "${p_all[*]}" <<'PY'
import statistics, sys
d = [float(x) for x in sys.argv[1].split()]; p = [float(x) for x in sys.argv[2].split()]
md, mp = statistics.median(d), statistics.median(p)
print(f"  median: direct {md:.0f} MiB/s, through the proxy {mp:.0f} MiB/s ({100 * mp / md:.0f}% of direct)")
PY
