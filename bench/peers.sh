#!/usr/bin/env bash
# The peer benchmark: N containers (default 200) attached to one bridge network by Weft (through
# its public API), by netavark and by the CNI bridge plugin (+ host-local, + portmap), in one run,
# all inside namespaces of the benchmark's own. Prints p50/p99 per row and the load average.
# Usage: bench/peers.sh [N]   (root; installs netavark and the CNI plugins from Debian)
# WEFT_BENCH_TMPFS=1: every tool's files (Weft's data directory with its stores and sandbox files,
# netavark's and host-local's state) on a tmpfs of the run's own, in a mount namespace of its own
# (the machine's mounts are not touched), instead of under /tmp: what the disk adds, apart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --run
need=()
[ -x /usr/lib/podman/netavark ] || need+=(netavark)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
. bench/release.sh
export WEFT_BENCH_N=${1:-200}
if [ "${WEFT_BENCH_TMPFS:-0}" = 1 ]; then
  # (The tmpfs and the mount namespace end with the run; TMPDIR is where every tool's
  # temporary directory goes.)
  exec unshare -m --propagation private bash -c '
    set -euo pipefail
    dir=$(mktemp -d)
    trap '"'"'umount "$dir"; rmdir "$dir"'"'"' EXIT
    mount -t tmpfs -o size=4g,mode=1777 weft-bench "$dir"
    echo "files on tmpfs ($dir, a mount namespace of its own)"
    TMPDIR=$dir cargo bench --locked -p weft-e2e --bench peers'
fi
cargo bench --locked -p weft-e2e --bench peers
