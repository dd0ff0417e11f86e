#!/usr/bin/env bash
# The SQLite cases of the IPAM benchmark (16 clients; /24, /8, /64) run with two ipam-svc
# binaries in alternation, PAIRS times, under the same benchmark client: each run's ratios
# (allocations/s over no-op RPCs/s) and load average, then the median ratio per binary and pool.
# On a machine shared with other work, single runs of one version move by about ±0.1; only
# alternated runs compare two versions.
#
# Usage: bash bench/ipam-alternate.sh OLD_IPAM_SVC NEW_IPAM_SVC [PAIRS=4]
# (release builds of ipam-svc, copied aside: e.g. build a commit, copy
# $CARGO_TARGET_DIR/release/ipam-svc to /tmp/ipam-svc.old, build the other, copy it too).
# WEFT_BENCH_CLIENTS and WEFT_BENCH_ALLOCS pass through to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 OLD_IPAM_SVC NEW_IPAM_SVC [PAIRS (1-50, default 4)]" >&2
  exit 64
fi
pairs=${3:-4}
case $pairs in
  '' | *[!0-9]*) echo "PAIRS must be a number from 1 to 50, not '$pairs'" >&2; exit 64 ;;
esac
if [ "$pairs" -lt 1 ] || [ "$pairs" -gt 50 ]; then
  echo "PAIRS must be a number from 1 to 50, not $pairs" >&2
  exit 64
fi
declare -A bin
for v in old new; do
  arg=$1
  shift
  if [ ! -f "$arg" ] || [ ! -x "$arg" ]; then
    echo "$arg: not an executable file" >&2
    exit 64
  fi
  bin[$v]=$(realpath "$arg")
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
bench=$(cargo bench -p ipam-svc --bench alloc --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "alloc" and m.get("executable"):
        print(m["executable"])' | tail -1)
if [ -z "$bench" ]; then
  echo "cannot build the benchmark: run cargo bench -p ipam-svc --bench alloc --no-run" >&2
  exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for p in $(seq 1 "$pairs"); do
  for v in old new; do
    WEFT_BENCH_SERVER=${bin[$v]} WEFT_BENCH_CLIENTS=${WEFT_BENCH_CLIENTS:-16} \
      WEFT_BENCH_BACKEND=sqlite "$bench" >"$out/$p-$v.txt"
    printf 'pair %2d %s: ratios %s  (load average at start %s)\n' "$p" "$v" \
      "$(awk '/^sqlite/ { printf "%s ", $6 }' "$out/$p-$v.txt")" \
      "$(awk -F': ' '/^load average at start/ { split($2, a, " "); print a[1] }' "$out/$p-$v.txt")"
  done
done
python3 - "$out" <<'EOF'
import glob, statistics, sys
for v in ("old", "new"):
    by_case = {}
    for f in glob.glob(f"{sys.argv[1]}/*-{v}.txt"):
        for line in open(f):
            w = line.split()
            if w and w[0] == "sqlite":
                by_case.setdefault((w[1], w[2]), []).append(float(w[5]))
    print(f"median {v}: " + ", ".join(
        f"{pool} ({clients} clients) {statistics.median(r):.3f}"
        for (pool, clients), r in sorted(by_case.items())))
EOF
