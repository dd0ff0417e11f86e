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
. bench/release.sh
WEFT_BENCH_N=${1:-50} python3 bench/overlay.py
