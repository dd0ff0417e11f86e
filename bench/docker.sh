#!/usr/bin/env bash
# The Docker benchmark (bench/docker.py): `docker run -d` of N containers on a Weft network
# through weft-docker-plugin against the same on Docker's own bridge driver (a second dockerd
# with its iptables, in a namespace of its own) and against `--network none`; p50/p99 per row.
# Usage: bench/docker.sh [N]   (root; Debian's docker.io and busybox-static, via setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
. scripts/safe-dir.sh
safe_exec_dir "$CARGO_TARGET_DIR"
cargo build --release --locked --bins
WEFT_BENCH_N=${1:-50} WEFT_BENCH_BINS="$CARGO_TARGET_DIR/release" python3 bench/docker.py
