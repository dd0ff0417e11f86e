#!/usr/bin/env python3
"""The Docker benchmark: `docker run -d` of N containers (default 50) by a real dockerd 20.10

  1. with `--network none` (no network at all: the floor of a container start here),
  2. on a Weft network through the plugin (`docker network create -d weft --ipam-driver weft`;
     dockerd with --iptables=false --bridge=none, `weft up` and the plugin in its namespace),
  3. on Docker's own bridge driver (a second dockerd with its iptables and docker0, in a
     namespace of its own),

one container after the other, each row timed as the wall time of the `docker run -d` command.
The network part of a row is its time less row 1's median; for Weft the plugin's own time for
CreateEndpoint + Join (from its log) is printed too. Prints p50/p99 per row and the load
average. Everything runs in namespaces and directories of the benchmark's own, removed at the
end (containers, both dockerd and their containerd, mounts, the plugin's socket).

Usage (root): bench/docker.sh [N]
Environment: WEFT_BENCH_BINS (the release binaries), WEFT_BENCH_N (default 50).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

BINS = os.environ.get("WEFT_BENCH_BINS", "/var/cache/weft/target/release")
N = int(os.environ.get("WEFT_BENCH_N", "50"))
TAG = f"wft-bd{os.getpid() % 10000}"
DRIVER = f"weft-bench{os.getpid() % 10000}"
PLUGIN_SOCKET = f"/run/docker/plugins/{DRIVER}.sock"
DOCKER = "/usr/bin/docker"
IMAGE = "weft-busybox:bench"


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Dockerd:
    """A dockerd in namespace `netns` with roots under `root`."""

    def __init__(self, root: str, netns: str, *flags: str) -> None:
        self.root = root
        self.sock = os.path.join(root, "docker.sock")
        os.makedirs(root, exist_ok=True)
        log = open(os.path.join(root, "dockerd.log"), "w")
        self.p = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}", "/usr/sbin/dockerd", *flags,
             "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
             "--pidfile", f"{root}/dockerd.pid", "-H", f"unix://{self.sock}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while run(DOCKER, "-H", f"unix://{self.sock}", "version", check=False).returncode != 0:
            if self.p.poll() is not None or time.time() > deadline:
                sys.exit(f"dockerd did not start:\n{open(log.name).read()[-3000:]}")
            time.sleep(0.2)

    def docker(self, *args: str) -> str:
        return run(DOCKER, "-H", f"unix://{self.sock}", *args).stdout.strip()

    def timed_runs(self, network: str) -> list[float]:
        times = []
        for i in range(N):
            t = time.perf_counter()
            self.docker("run", "-d", "--name", f"b{network}{i}", "--network", network, IMAGE, "sleep", "600")
            times.append((time.perf_counter() - t) * 1000)
        return times

    def close(self) -> None:
        ids = run(DOCKER, "-H", f"unix://{self.sock}", "ps", "-aq", check=False).stdout.split()
        if ids:
            run(DOCKER, "-H", f"unix://{self.sock}", "rm", "-f", *ids, check=False)
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
        # containerd and shims started from these roots, then their mounts, deepest first.
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if self.root.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        mounts = [l.split(" ")[4] for l in open("/proc/self/mountinfo")]
        for m in sorted((m for m in mounts if m.startswith(self.root + "/")), key=len, reverse=True):
            run("umount", "-l", m, check=False)


class World:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="wbd", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.namespaces: list[str] = []
        self.dockerds: list[Dockerd] = []
        self.procs: list[subprocess.Popen] = []

    def netns(self, name: str) -> str:
        n = f"{TAG}-{name}"
        run("ip", "netns", "add", n)
        self.namespaces.append(n)
        run("ip", "-n", n, "link", "set", "lo", "up")
        run("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return n

    def busybox_tar(self) -> str:
        root = os.path.join(self.dir, "rootfs")
        os.makedirs(f"{root}/bin")
        shutil.copy("/bin/busybox", f"{root}/bin/busybox")
        os.symlink("busybox", f"{root}/bin/sleep")
        path = os.path.join(self.dir, "rootfs.tar")
        with tarfile.open(path, "w") as t:
            t.add(root, arcname=".")
        return path

    def weft(self, netns: str) -> str:
        data = os.path.join(self.dir, "weft")
        out = open(os.path.join(self.dir, "weft.out"), "w")
        p = subprocess.Popen([f"{BINS}/weft", "up", "--netns", netns, "--data-dir", data, "--bin-dir", BINS],
                             stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        deadline = time.time() + 120
        while "Talk to it:" not in open(out.name).read():
            if p.poll() is not None or time.time() > deadline:
                sys.exit(f"weft up did not come up:\n{open(out.name).read()}")
            time.sleep(0.1)
        return os.path.join(data, "admin.token")

    def plugin(self, netns: str, token: str, docker_sock: str) -> str:
        log = os.path.join(self.dir, "plugin.log")
        p = subprocess.Popen(["ip", "netns", "exec", netns, f"{BINS}/weft-docker-plugin", "--socket", PLUGIN_SOCKET,
                              "--token-file", token, "--docker-host", docker_sock],
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        while not os.path.exists(PLUGIN_SOCKET):
            if p.poll() is not None:
                sys.exit(f"the plugin exited:\n{open(log).read()}")
            time.sleep(0.05)
        return log

    def close(self) -> None:
        for d in self.dockerds:
            d.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.path.exists(PLUGIN_SOCKET):
            os.unlink(PLUGIN_SOCKET)
        for n in reversed(self.namespaces):
            run("ip", "netns", "del", n, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def plugin_ms(log: str) -> list[float]:
    """CreateEndpoint + Join per container, from the plugin's log, in order."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read())
    create = [float(m) for m in re.findall(r"call=/NetworkDriver.CreateEndpoint\b[^\n]*? ms=(\d+)", text)]
    join = [float(m) for m in re.findall(r"call=/NetworkDriver.Join\b[^\n]*? ms=(\d+)", text)]
    return [c + j for c, j in zip(create, join)]


def plugin_total_ms(log: str) -> float:
    """Every call Docker made to the plugin while the Weft row ran (network creation aside),
    per container."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read())
    text = text[text.index("CreateNetwork"):] if "CreateNetwork" in text else text
    total = sum(float(m) for m in re.findall(r"call=/(?:NetworkDriver|IpamDriver)\.(?!CreateNetwork)\w+\b[^\n]*? ms=(\d+)", text))
    return total / N


def row(name: str, values: list[float]) -> None:
    print(f"{name:<52} p50 {pct(values, 50):8.1f} ms   p99 {pct(values, 99):8.1f} ms")


def main() -> None:
    w = World()
    try:
        tar = w.busybox_tar()
        host = w.netns("weft")
        token = w.weft(host)
        weft_dockerd = Dockerd(os.path.join(w.dir, "dw"), host, "--iptables=false", "--bridge=none")
        w.dockerds.append(weft_dockerd)
        log = w.plugin(host, token, weft_dockerd.sock)
        weft_dockerd.docker("import", tar, IMAGE)
        weft_dockerd.docker("network", "create", "-d", DRIVER, "--ipam-driver", DRIVER, "--subnet", "10.131.0.0/24", "wnet")
        own = w.netns("docker")
        docker_dockerd = Dockerd(os.path.join(w.dir, "dd"), own)
        w.dockerds.append(docker_dockerd)
        docker_dockerd.docker("import", tar, IMAGE)
        docker_dockerd.docker("network", "create", "--subnet", "10.132.0.0/24", "dnet")

        none = weft_dockerd.timed_runs("none")
        on_weft = weft_dockerd.timed_runs("wnet")
        on_bridge = docker_dockerd.timed_runs("dnet")
        floor = pct(none, 50)
        print(f"docker run -d of {N} containers, one after the other (dockerd {weft_dockerd.docker('version', '--format', '{{.Server.Version}}')})")
        row("--network none (the floor)", none)
        row("Weft network (plugin)", on_weft)
        row("Docker's bridge driver (with its iptables)", on_bridge)
        row("  network part on Weft (less the floor's p50)", [t - floor for t in on_weft])
        row("  network part on Docker's bridge (less the floor's p50)", [t - floor for t in on_bridge])
        row("  the plugin's CreateEndpoint + Join", plugin_ms(log))
        print(f"  every plugin call of a container, mean: {plugin_total_ms(log):.1f} ms")
        print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    finally:
        w.close()


if __name__ == "__main__":
    main()
