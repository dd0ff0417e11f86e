#!/usr/bin/env bash
# The scale benchmark: N sandboxes (default 5,000) over NETWORKS bridge networks (default 10),
# each with one published TCP port, through Weft's public API on one host (release build), all
# inside namespaces of the benchmark's own. Prints the creates' p50/p99 per 500 (first against
# last), the agent's reconciliation with nothing to change, an agent restart with a TCP
# connection through a published port, each service's memory and the load average.
# Usage: bench/scale.sh [N] [NETWORKS]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --run
. bench/release.sh
WEFT_BENCH_N=${1:-5000} WEFT_BENCH_NETWORKS=${2:-10} \
  cargo bench --locked -p weft-e2e --bench scale
