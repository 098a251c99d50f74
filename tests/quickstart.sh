#!/usr/bin/env bash
# Runs the Machine ID guide locally, as far as it is built, on the embedded SQLite store:
# builds the binaries, starts an auth server in a scratch directory on a free loopback port,
# walks the guide's steps with tctl and tbot, and cleans up what it started.
#
#   tests/quickstart.sh            # run it
#   KEEP=1 tests/quickstart.sh     # leave the scratch dir (and print where it is)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }

sshd_bin="${SSHD:-/usr/sbin/sshd}"
# The guide's last steps log in to an OpenSSH node on this machine: install OpenSSH (and the
# tools the steps show the files with) when missing, or say the one command to run.
. tests/sh/setup.sh
ensure_apt "$sshd_bin=openssh-server" ssh=openssh-client ssh-keygen=openssh-client \
  openssl=openssl python3=python3
ensure_sshd_dirs

say "building auth-server, tctl, tbot and tsh (cargo build -p auth-server -p tctl-bots -p tbot -p tsh)"
cargo build -q -p auth-server -p tctl-bots -p tbot -p tsh
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"

scratch="$(mktemp -d -t machine-id-quickstart.XXXXXX)"
server_pid=""
tbot_pid=""
sshd_pid=""
cleanup() {
  if [ -n "$sshd_pid" ] && kill -0 "$sshd_pid" 2>/dev/null; then
    kill -TERM "$sshd_pid" && wait "$sshd_pid" 2>/dev/null || true
    echo "stopped sshd (pid $sshd_pid)"
  fi
  if [ -n "$tbot_pid" ] && kill -0 "$tbot_pid" 2>/dev/null; then
    kill -TERM "$tbot_pid" && wait "$tbot_pid" 2>/dev/null || true
    echo "stopped tbot (pid $tbot_pid)"
  fi
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" && wait "$server_pid" 2>/dev/null || true
    echo "stopped auth-server (pid $server_pid)"
  fi
  if [ "${KEEP:-}" = 1 ]; then echo "kept $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

say "step 1: start the auth server for cluster example.com in $scratch"
"$bin/auth-server" start --data-dir "$scratch/data" --cluster-name example.com \
  --auth-listen 127.0.0.1:0 >"$scratch/ready" 2>"$scratch/auth-server.log" &
server_pid=$!
for _ in $(seq 1 200); do
  grep -q '^auth server ready on ' "$scratch/ready" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$scratch/auth-server.log"; exit 1; }
  sleep 0.05
done
addr="$(sed -n 's/^auth server ready on //p' "$scratch/ready")"
[ -n "$addr" ] || { echo "auth-server did not become ready"; cat "$scratch/auth-server.log"; exit 1; }
echo "auth-server (pid $server_pid) listens on $addr; log: $scratch/auth-server.log"
export TELEPORT_AUTH_SERVER="$addr" TCTL_IDENTITY="$scratch/data/admin"
tctl="$bin/tctl"

run "$tctl" status

say "step 1: the roles a new cluster has"
run "$tctl" get roles --format=text

say "step 2: add a bot that may use role access"
run "$tctl" bots add robot --roles=access | tee "$scratch/bots-add.txt"
run "$tctl" bots ls
token="$(sed -n 's/^The bot token: //p' "$scratch/bots-add.txt")"
pin="$(grep -o -- '--ca-pin=[^ ]*' "$scratch/bots-add.txt" | head -n1 | cut -d= -f2-)"
[ -n "$token" ] && [ -n "$pin" ] || { echo "no token or CA pin in the output of tctl bots add"; exit 1; }

say "step 3: IAM tokens are resources (tctl create -f)"
cat >"$scratch/iam-token.yaml" <<YAML
kind: token
version: v2
metadata: {name: iam-token, expires: "3000-01-01T00:00:00Z"}
spec:
  roles: [Bot]
  join_method: iam
  bot_name: robot
  allow:
  - aws_account: "111111111111"
    aws_arn: "arn:aws:sts::111111111111:assumed-role/teleport-bot-role/i-*"
YAML
run "$tctl" create -f "$scratch/iam-token.yaml"
run "$tctl" tokens ls

say "step 4: run the bot once (--oneshot): join with the token after checking the CA pin"
dest="$scratch/machine-id"
run "$bin/tbot" start --data-dir="$scratch/bot-data" --destination-dir="$dest" \
  --token="$token" --ca-pin="$pin" --auth-server="$addr" --oneshot

say "step 5: the destination directory"
run ls -l "$dest"
ssh-keygen -L -f "$dest/sshcert" | sed -n '1,7p'
run openssl verify -CAfile "$dest/tlscacerts" "$dest/tlscert"
openssl x509 -in "$dest/tlscert" -noout -subject -enddate
run cat "$dest/ssh_config"

say "step 5: the long-running bot renews every interval (here 5s; the default is 20m)"
"$bin/tbot" start --data-dir="$scratch/bot-data" --destination-dir="$dest" \
  --auth-server="$addr" --renewal-interval=5s --certificate-ttl=10m 2>"$scratch/tbot.log" &
tbot_pid=$!
first="$(sha256sum "$dest/tlscert")"
sets() { grep -c 'wrote the output certificates' "$scratch/tbot.log" || true; }
for _ in $(seq 1 300); do
  [ "$(sets)" -ge 2 ] && break
  kill -0 "$tbot_pid" 2>/dev/null || { cat "$scratch/tbot.log"; exit 1; }
  sleep 0.1
done
[ "$(sets)" -ge 2 ] && [ "$(sha256sum "$dest/tlscert")" != "$first" ] \
  || { echo "tbot did not renew"; cat "$scratch/tbot.log"; exit 1; }
echo "tbot (pid $tbot_pid) wrote $(sets) fresh sets of certificates; its log: $scratch/tbot.log"
grep 'renewed the bot identity' "$scratch/tbot.log" | tail -n1

say "step 6: an OpenSSH node: sshd on loopback trusting the cluster's user CA, with a host certificate"
node="$scratch/node"
mkdir -p "$node"
run "$tctl" auth export --type=user | tee "$node/user_ca.pub"
run "$tctl" auth sign --host=node-name --format=openssh --out="$node/host"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$node/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $node/host
HostCertificate $node/host-cert.pub
TrustedUserCAKeys $node/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $node/sshd.pid
CFG
echo "sshd_config (the three lines a node needs: HostKey, HostCertificate, TrustedUserCAKeys):"
sed 's/^/    /' "$node/sshd_config"
"$sshd_bin" -D -e -f "$node/sshd_config" 2>"$node/sshd.log" &
sshd_pid=$!
for _ in $(seq 1 200); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  kill -0 "$sshd_pid" 2>/dev/null || { cat "$node/sshd.log"; exit 1; }
  sleep 0.05
done
echo "sshd (pid $sshd_pid) listens on 127.0.0.1:$port; log: $node/sshd.log"
run "$tctl" nodes add --name=node-name --addr="127.0.0.1:$port" --labels=env=dev
run "$tctl" nodes ls

say "step 6: the nodes the bot's certificate may reach"
run "$bin/tsh" ls -i "$dest" --proxy="$addr"

say "step 7: ssh through the proxy; role access has no root login yet, so sshd refuses"
set +e
run ssh -F "$dest/ssh_config" root@node-name.example.com echo hello </dev/null
code=$?
set -e
[ "$code" -ne 0 ] || { echo "ssh should have been refused"; exit 1; }

say "step 7: add root to the logins of role access, renew (SIGHUP), and log in"
run "$tctl" get roles/access > "$scratch/access.yaml"
python3 - "$scratch/access.yaml" <<'PY'
import sys
p = sys.argv[1]
out = []
for line in open(p):
    out.append(line)
    if "{{internal.logins}}" in line and line.lstrip().startswith("- "):
        out.append(line[: len(line) - len(line.lstrip())] + "- root\n")
open(p, "w").write("".join(out))
PY
run "$tctl" create -f "$scratch/access.yaml"
run "$tctl" get roles --format=text
before="$(sets)"
kill -HUP "$tbot_pid"
for _ in $(seq 1 300); do
  [ "$(sets)" -gt "$before" ] && break
  sleep 0.1
done
[ "$(sets)" -gt "$before" ] || { echo "tbot did not renew on SIGHUP"; cat "$scratch/tbot.log"; exit 1; }
ssh-keygen -L -f "$dest/sshcert" | sed -n '/Principals:/,/Critical/p'
run ssh -F "$dest/ssh_config" root@node-name.example.com 'echo "hello from $(hostname) as $(whoami)"' </dev/null

say "the audit log"
run "$tctl" events ls

say "done: the guide's steps 1-7 ran against a real auth server, tbot, sshd and ssh."
echo "Everything was started in $scratch and is stopped now; run with KEEP=1 to keep the directory."
