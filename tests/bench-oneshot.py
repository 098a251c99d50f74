#!/usr/bin/env python3
"""`tbot start --oneshot` renewals of two builds, alternating: wall time and peak RSS.

    tests/bench-oneshot.py BASELINE_DIR [RUNS]

BASELINE_DIR holds release builds `auth-server`, `tctl` and `tbot` of another commit; the
other build is this tree's (built here). Each build gets its own server and bot; the bot
joins once (not timed), then each run is one renewal with `--oneshot` into a directory
destination, timed from outside (process start to exit) with peak RSS from /usr/bin/time.
Prints the median, min and max of each.
"""
import json, os, re, statistics, subprocess, sys, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
base = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
subprocess.run(["cargo", "build", "-q", "--release", "-p", "auth-server", "-p", "tctl-bots", "-p", "tbot"], cwd=root, check=True)
meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=root, capture_output=True, check=True).stdout)
this = os.path.join(meta["target_directory"], "release")
builds = {"baseline": base, "this": this}

def start(bindir):
    d = tempfile.mkdtemp(prefix="machine-id-bench-oneshot.")
    server = subprocess.Popen([f"{bindir}/auth-server", "start", "--data-dir", f"{d}/data", "--cluster-name", "example.com", "--auth-listen", "127.0.0.1:0"],
                              stdout=open(f"{d}/ready", "w"), stderr=open(f"{d}/auth.log", "w"))
    for _ in range(400):
        m = re.search(r"auth server ready on (\S+)", open(f"{d}/ready").read())
        if m:
            break
        time.sleep(0.05)
    addr = m.group(1)
    out = subprocess.run([f"{bindir}/tctl", "--auth-server", addr, "--identity", f"{d}/data/admin", "bots", "add", "robot", "--roles=access", "--logins=root"],
                         capture_output=True, text=True, check=True).stdout
    token = re.search(r"--token=(\S+)", out).group(1)
    pin = re.search(r"--ca-pin=(\S+)", out).group(1)
    cmd = ["/usr/bin/time", "-f", "%M", f"{bindir}/tbot", "start", "--oneshot", "--data-dir", f"{d}/bot", "--destination-dir", f"{d}/out",
           "--token", token, "--ca-pin", pin, "--auth-server", addr]
    subprocess.run(cmd, capture_output=True, check=True)  # the join
    return server, cmd

setups = {b: start(d) for b, d in builds.items()}
res = {b: ([], []) for b in builds}
try:
    for _ in range(runs):
        for b, (_, cmd) in setups.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = (time.perf_counter() - t0) * 1000
            if r.returncode != 0:
                sys.exit(f"{b}: tbot failed: {r.stderr[-800:]}")
            res[b][0].append(wall)
            res[b][1].append(int(r.stderr.strip().splitlines()[-1]))
finally:
    for server, _ in setups.values():
        server.kill()
for b, (wall, rss) in res.items():
    print(f"{b:8}: renewal --oneshot wall median {statistics.median(wall):.1f} ms (min {min(wall):.1f}, max {max(wall):.1f}); "
          f"peak RSS median {statistics.median(rss)} kB (max {max(rss)}); n={len(wall)}")
