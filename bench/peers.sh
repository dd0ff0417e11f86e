#!/usr/bin/env bash
# The peer benchmark: N containers (default 200) attached to one bridge network by Weft (through
# its public API), by netavark and by the CNI bridge plugin (+ host-local, + portmap), in one run,
# all inside namespaces of the benchmark's own. Prints p50/p99 per row and the load average.
# Usage: bench/peers.sh [N]   (root; installs netavark and the CNI plugins from Debian)
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
WEFT_BENCH_N=${1:-200} \
  cargo bench --locked -p weft-e2e --bench peers
