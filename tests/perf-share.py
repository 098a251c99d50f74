#!/usr/bin/env python3
"""Share of profile samples whose call stack holds a frame matching each pattern.

    perf record -F 400 --call-graph dwarf,16384 -p PID -- sleep 5
    perf script -F comm,tid,ip,sym > stacks.txt
    tests/perf-share.py stacks.txt verify_signature x25519 write_batch ...

A pattern is a substring of a frame's symbol. A sample counts once per pattern however many
of its frames match, so shares of nested frames overlap (a handshake's share holds its
signature checks' share).
"""
import sys

if len(sys.argv) < 3:
    sys.exit(__doc__)
samples, cur = [], []
for line in open(sys.argv[1]):
    if not line.strip():
        if cur:
            samples.append(cur)
            cur = []
        continue
    if not line[0].isspace():
        if cur:
            samples.append(cur)
        cur = [line.strip()]
    else:
        cur.append(line.strip())
if cur:
    samples.append(cur)
n = len(samples)
print(f"{n} samples")
for p in sys.argv[2:]:
    k = sum(1 for s in samples if any(p in f for f in s[1:]))
    print(f"{100 * k / max(n, 1):6.2f}%  {p}")
