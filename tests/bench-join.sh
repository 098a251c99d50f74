#!/usr/bin/env bash
# Measures the first join of `tbot start --oneshot` with each join method against a release
# auth server: a single-use token, and IAM with moto standing in for STS (credentials of an
# assumed role). Also times moto's own GetCallerIdentity, which an IAM join waits for, so the
# auth server's and tbot's share can be told apart. Prints the figures docs/PERFORMANCE.md
# records.
#
#   tests/bench-join.sh [RUNS]      # default 30; needs .venv/bin/moto_server (.ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"
moto="${MOTO_SERVER:-$PWD/.venv/bin/moto_server}"
[ -x "$moto" ] || { echo "moto_server not found at $moto: run .ci/run, or python3 -m venv .venv && .venv/bin/pip install 'moto[server]'" >&2; exit 1; }

cargo build -q --release -p auth-server -p tctl-bots -p tbot
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
scratch="$(mktemp -d -t machine-id-bench-join.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$scratch"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
moto_port="$(free_port)"
env -u MOTO_ACCOUNT_ID "$moto" -H 127.0.0.1 -p "$moto_port" >"$scratch/moto.log" 2>&1 &
pids+=($!)
sts="http://127.0.0.1:$moto_port"
for _ in $(seq 1 200); do curl -fs "$sts/" >/dev/null 2>&1 && break; sleep 0.1; done

"$bin/auth-server" start --data-dir "$scratch/data" --cluster-name example.com \
  --auth-listen 127.0.0.1:0 --extra-sts-endpoint "$sts" >"$scratch/ready" 2>"$scratch/auth.log" &
pids+=($!)
for _ in $(seq 1 200); do grep -q '^auth server ready on ' "$scratch/ready" 2>/dev/null && break; sleep 0.05; done
addr="$(sed -n 's/^auth server ready on //p' "$scratch/ready")"
export TELEPORT_AUTH_SERVER="$addr" TCTL_IDENTITY="$scratch/data/admin"
tctl="$bin/tctl"

# Credentials of an assumed role from moto (moto routes by the credential scope and does not
# check signatures).
auth_hdr='AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0000'
creds="$(curl -fs -X POST "$sts/" -H "Authorization: $auth_hdr" \
  --data 'Action=AssumeRole&RoleArn=arn:aws:iam::123456789012:role/teleport-bot-role&RoleSessionName=i-0123456789abcdef0&Version=2011-06-15')"
field() { sed -n "s:.*<$1>\([^<]*\)</$1>.*:\1:p" <<<"$creds" | head -n1; }
export AWS_ACCESS_KEY_ID="$(field AccessKeyId)" AWS_SECRET_ACCESS_KEY="$(field SecretAccessKey)"
export AWS_SESSION_TOKEN="$(field SessionToken)" AWS_REGION=us-east-1 AWS_ENDPOINT_URL_STS="$sts"
export AWS_EC2_METADATA_DISABLED=true HOME="$scratch/home"
mkdir -p "$HOME"

cat >"$scratch/iam-token.yaml" <<YAML
kind: token
version: v2
metadata: {name: iam-token, expires: "3000-01-01T00:00:00Z"}
spec:
  roles: [Bot]
  join_method: iam
  bot_name: iambot
  allow:
  - aws_account: "123456789012"
    aws_arn: "arn:aws:sts::123456789012:assumed-role/teleport-bot-role/i-*"
YAML
"$tctl" create -f "$scratch/iam-token.yaml" >/dev/null
out="$("$tctl" bots add iambot --token=iam-token --roles=access)"
pin="$(grep -o -- '--ca-pin=[^ ]*' <<<"$out" | head -n1 | cut -d= -f2-)"
tokens=()
for i in $(seq 1 "$runs"); do
  t="$("$tctl" bots add "robot$i" --roles=access | sed -n 's/^The bot token: //p')"
  tokens+=("$t")
done

python3 - "$runs" "$bin/tbot" "$scratch" "$addr" "$pin" "$sts" "$auth_hdr" "${tokens[@]}" <<'PY'
import statistics, subprocess, sys, time, urllib.request
runs, tbot, scratch, addr, pin, sts, auth_hdr = sys.argv[1:8]
tokens = sys.argv[8:]
runs = int(runs)

def oneshot(i, kind, extra):
    d = f"{scratch}/{kind}{i}"
    cmd = [tbot, "start", "--data-dir", f"{d}/data", "--destination-dir", f"{d}/dest",
           f"--ca-pin={pin}", f"--auth-server={addr}", "--oneshot"] + extra
    t = time.monotonic()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return (time.monotonic() - t) * 1000

def rss(kind, extra):
    d = f"{scratch}/{kind}-rss"
    cmd = ["/usr/bin/time", "-f", "%M", tbot, "start", "--data-dir", f"{d}/data",
           "--destination-dir", f"{d}/dest", f"--ca-pin={pin}", f"--auth-server={addr}",
           "--oneshot"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024

def sts_call():
    req = urllib.request.Request(sts + "/", method="POST",
        data=b"Action=GetCallerIdentity&Version=2011-06-15",
        headers={"Authorization": auth_hdr, "Content-Type": "application/x-www-form-urlencoded"})
    t = time.monotonic()
    urllib.request.urlopen(req).read()
    return (time.monotonic() - t) * 1000

token_ms = [oneshot(i, "token", ["--token", tokens[i]]) for i in range(runs)]
iam_ms = [oneshot(i, "iam", ["--join-method=iam", "--token=iam-token"]) for i in range(runs)]
sts_ms = [sts_call() for _ in range(runs)]
iam_rss = rss("iam", ["--join-method=iam", "--token=iam-token"])

def line(name, v):
    v = sorted(v)
    print(f"{name:<52} median {statistics.median(v):7.1f} ms   p90 {v[int(len(v)*0.9)-1]:7.1f} ms   (n={len(v)})")
line("tbot start --oneshot, first join, token", token_ms)
line("tbot start --oneshot, first join, iam (moto as STS)", iam_ms)
line("moto GetCallerIdentity alone (python urllib)", sts_ms)
print(f"tbot --oneshot --join-method=iam peak RSS: {iam_rss:.1f} MiB")
PY
