#!/usr/bin/env bash
# The Docker benchmark (bench/docker.py): `docker run -d` of N containers on a Weft network
# through weft-docker-plugin against the same on Docker's own bridge driver (a second dockerd
# with its iptables, in a namespace of its own) and against `--network none`; p50/p99 per row.
# Usage: bench/docker.sh [N]   (root; Debian's docker.io and busybox-static, via setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. bench/release.sh
WEFT_BENCH_N=${1:-50} python3 bench/docker.py
