#!/usr/bin/env bash
# The overlay benchmark (bench/overlay.py): three hosts joined to a control plane, each `weft up`
# in a namespace of the benchmark's own on an underlay bridge; overlay Connect latency beside
# bridge Connect, how long until the other hosts have the new endpoint's FDB entry, and TCP
# throughput over the overlay against the underlay (iperf3). Prints p50/p99 and Gbit/s.
# Usage: bench/overlay.sh [N]   (root; installs iperf3 from Debian)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --run
if ! command -v iperf3 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iperf3 >/dev/null
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
. scripts/safe-dir.sh
safe_exec_dir "$CARGO_TARGET_DIR"
cargo build --release --locked --bins
WEFT_BENCH_N=${1:-50} WEFT_BENCH_BINS="$CARGO_TARGET_DIR/release" python3 bench/overlay.py
