#!/usr/bin/env bash
# The Podman benchmark (bench/podman.py): `podman run -d` and `podman rm` of N containers on a
# Weft network (weft-cni) against a CNI bridge + host-local network and `--network none`, in one
# run, Podman and `weft up` in a namespace of the benchmark's own. Prints p50/p99 and the
# network part of each. Usage: bench/podman.sh [N]   (root; N defaults to 50)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. bench/release.sh
WEFT_BENCH_N=${1:-50} python3 bench/podman.py
