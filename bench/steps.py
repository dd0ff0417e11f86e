#!/usr/bin/env python3
"""Per-step timings from the services' logs of a benchmark run (bench/peers.sh with
WEFT_BENCH_KEEP_LOGS=DIR keeps them): p50 and p99 of each step of CreateSandbox, DeleteSandbox and
Disconnect as the gateway logged them (`steps=name:us,...`), grouped by the sandbox name's
prefix, and of the agent's CreateSandbox call. Usage: bench/steps.py DIR"""
import re
import sys
from pathlib import Path

KINDS = {
    "sandbox created": "CreateSandbox",
    "sandbox removed": "DeleteSandbox",
    "disconnected": "Disconnect",
}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, (len(xs) * p) // 100)] if xs else 0


def main(d):
    rows = {}
    for log in sorted(Path(d).glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            m = re.search(r"steps=(\S+)", line)
            kind = next((k for k in KINDS if f": {k} " in line), None)
            if m and kind:
                # Grouped by the sandbox name's prefix (peers.rs: s0-N plain, s1-N with a port,
                # c-N for Connect/Disconnect).
                g = re.search(r" sandbox=(\w+)-", line)
                call = KINDS[kind] + (f" {g.group(1)}" if g else "")
                r = rows.setdefault(call, {})
                for part in m.group(1).split(","):
                    name, us = part.split(":")
                    r.setdefault(name, []).append(int(us))
                t = re.search(r"total_us=(\d+)", line)
                if t:
                    r.setdefault("(total)", []).append(int(t.group(1)))
            if "sandbox created with its endpoints" in line:
                r = rows.setdefault("agent CreateSandbox", {})
                for name in ("sandbox_us", "attach_us"):
                    a = re.search(name + r"=(\d+)", line)
                    if a:
                        r.setdefault(name[:-3], []).append(int(a.group(1)))
    print(f"{'call':<24} {'step':<16} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for call, steps in sorted(rows.items()):
        for name, xs in steps.items():
            print(f"{call:<24} {name:<16} {len(xs):>5} {pct(xs, 50) / 1000:>8.2f} {pct(xs, 99) / 1000:>8.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
