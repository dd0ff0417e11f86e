#!/usr/bin/env bash
# The Podman benchmark (bench/podman.py): `podman run -d` and `podman rm` of N containers on a
# Weft network (weft-cni) against a CNI bridge + host-local network and `--network none`, in one
# run, Podman and `weft up` in a namespace of the benchmark's own. Prints p50/p99 and the
# network part of each. Usage: bench/podman.sh [N]   (root; N defaults to 50)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
. scripts/safe-dir.sh
safe_exec_dir "$CARGO_TARGET_DIR"
cargo build --release --locked --bins
WEFT_BENCH_N=${1:-50} WEFT_BENCH_BINS="$CARGO_TARGET_DIR/release" python3 bench/podman.py
