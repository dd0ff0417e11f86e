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
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
. scripts/safe-dir.sh
safe_exec_dir "$CARGO_TARGET_DIR"
cargo build --release --locked --bins
WEFT_BENCH_N=${1:-5000} WEFT_BENCH_NETWORKS=${2:-10} WEFT_BENCH_BINS="$CARGO_TARGET_DIR/release" \
  cargo bench --locked -p weft-e2e --bench scale
