#!/usr/bin/env python3
"""The Podman benchmark: `podman run -d` (until the container is up) and `podman rm` of N
containers on a Weft network against the same on a CNI `bridge` + `host-local` network, in one
run, on one host (a namespace of the benchmark's own playing it, `weft up` inside).

Both networks chain the same tail (portmap, tuning: what `weft-cni install` writes, and what a
Podman CNI conflist has), so the difference is the first plugin: weft-cni (a call to the
gateway, which allocates through ipam-svc and has the agent build the veth) against bridge +
host-local (in-process in the plugin, a file lock for IPAM). A third row runs the same
containers with `--network none`: what Podman itself costs. "Network part" is a row's time less
that row's. Rows alternate container by container so that load and caches fall on all alike.

Prints p50/p99 per row, the network part at p50 and p99, and the load average.
Usage (root): bench/podman.sh [N]. Environment: WEFT_BENCH_BINS (the release binaries),
WEFT_BENCH_N (default 50), WEFT_BENCH_ALL=1 (also every time, sorted).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BINS = os.environ.get("WEFT_BENCH_BINS", "/var/cache/weft/target/release")
N = int(os.environ.get("WEFT_BENCH_N", "50"))
HOST = f"wft-bp{os.getpid() % 10000}-host"
WEFT_NET, WEFT_SUBNET = "bench-weft", "10.93.0.0/24"
BRIDGE_NET, BRIDGE_SUBNET = "bench-bridge", "10.94.0.0/24"
STANDARD = "/usr/lib/cni"


def run(*args: str, check: bool = True, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, env=env)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class World:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="weft-bench-podman-")
        os.chmod(self.dir, 0o755)
        self.weft: subprocess.Popen | None = None
        self.netns = False
        for sub in ("bin", "net.d", "root", "run", "tmp", "rootfs/bin", "rootfs/etc"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)

    def path(self, *p: str) -> str:
        return os.path.join(self.dir, *p)

    def up(self) -> None:
        run("ip", "netns", "add", HOST)
        self.netns = True
        run("ip", "-n", HOST, "link", "set", "lo", "up")
        log = open(self.path("weft.log"), "w")
        self.weft = subprocess.Popen(
            [f"{BINS}/weft", "up", "--netns", HOST, "--data-dir", self.path("data"),
             "--bin-dir", BINS],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        token = self.path("data", "admin.token")
        deadline = time.monotonic() + 120
        while True:
            if os.path.exists(token) and self.weftctl("network", "ls", check=False).returncode == 0:
                break
            if self.weft.poll() is not None or time.monotonic() > deadline:
                sys.exit("weft up did not come up:\n" + open(self.path("weft.log")).read())
            time.sleep(0.2)
        self.weftctl("network", "create", "--subnet", WEFT_SUBNET, WEFT_NET)
        run("ip", "netns", "exec", HOST, f"{BINS}/weft-cni", "install",
            "--bin-dir", self.path("bin"), "--conf-dir", self.path("net.d"),
            "--network", WEFT_NET, "--cni-token-file", token)
        # The bridge network with the same chain tail as weft-cni's conflist.
        with open(os.path.join(self.path("net.d"), f"60-{BRIDGE_NET}.conflist"), "w") as f:
            json.dump({
                "cniVersion": "1.0.0",
                "name": BRIDGE_NET,
                "plugins": [
                    {"type": "bridge", "bridge": "cni-bench0", "isGateway": True,
                     "ipMasq": True, "hairpinMode": True,
                     "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                              "ranges": [[{"subnet": BRIDGE_SUBNET}]],
                              "dataDir": self.path("host-local")}},
                    {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                    {"type": "tuning"},
                ],
            }, f)
        with open(self.path("containers.conf"), "w") as f:
            f.write(
                "[containers]\n"
                'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
                "[network]\n"
                'network_backend = "cni"\n'
                f'cni_plugin_dirs = ["{self.path("bin")}", "{STANDARD}"]\n'
                f'network_config_dir = "{self.path("net.d")}"\n'
                "[engine]\n"
                'runtime = "runc"\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
                f'tmp_dir = "{self.path("tmp")}"\n')
        with open(self.path("storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{self.path("root")}"\n'
                    f'runroot = "{self.path("run")}"\n')
        shutil.copy("/bin/busybox", self.path("rootfs", "bin", "busybox"))
        for applet in ("sh", "sleep"):
            os.symlink("busybox", self.path("rootfs", "bin", applet))

    def weftctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", HOST, f"{BINS}/weftctl", "--token-file",
                   self.path("data", "admin.token"), *args, check=check)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, CONTAINERS_CONF=self.path("containers.conf"),
                   CONTAINERS_STORAGE_CONF=self.path("storage.conf"))
        return run("nsenter", f"--net=/run/netns/{HOST}", "podman", "--runtime", "runc",
                   *args, check=check, env=env)

    def timed(self, *args: str) -> float:
        t = time.perf_counter()
        r = self.podman(*args, check=False)
        ms = (time.perf_counter() - t) * 1000
        if r.returncode != 0:
            sys.exit(f"podman {' '.join(args)}: {r.stderr}")
        return ms

    def down(self) -> None:
        if self.netns:
            self.podman("rm", "--all", "--force", "--time", "0", check=False)
        if self.weft is not None and self.weft.poll() is None:
            os.killpg(self.weft.pid, signal.SIGTERM)
            try:
                self.weft.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.weft.pid, signal.SIGKILL)
                self.weft.wait()
        if self.netns:
            run("ip", "netns", "del", HOST, check=False)
        for line in reversed(open("/proc/self/mountinfo").read().splitlines()):
            mount = line.split(" ")[4]
            if mount.startswith(self.dir):
                run("umount", "-l", mount, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


ROWS = [("weft-cni", WEFT_NET), ("bridge + host-local", BRIDGE_NET), ("none", "none")]


def main() -> None:
    w = World()
    try:
        w.up()
        times = {row: {"run": [], "rm": []} for row, _ in ROWS}
        # One warm-up container per row (first-use costs: the bridge, portmap's chains).
        for row, net in ROWS:
            w.timed("run", "-d", "--network", net, "--name", f"warm-{net}",
                    "--rootfs", w.path("rootfs"), "sleep", "600")
        for i in range(N):
            for row, net in ROWS:
                times[row]["run"].append(w.timed(
                    "run", "-d", "--network", net, "--name", f"c{i}-{net}",
                    "--rootfs", w.path("rootfs"), "sleep", "600"))
        listed = w.weftctl("--format", "json", "sandbox", "ls").stdout.splitlines()
        assert len(listed) == N + 1, f"Weft has {len(listed)} sandboxes, not {N + 1}"
        for i in range(N):
            for row, net in ROWS:
                times[row]["rm"].append(w.timed("rm", "--force", "--time", "0", f"c{i}-{net}"))
        for row, net in ROWS:
            w.podman("rm", "--force", "--time", "0", f"warm-{net}")
        assert w.weftctl("--format", "json", "sandbox", "ls").stdout.strip() == ""
        print(f"podman, {N} containers per row, rows alternating (ms)")
        print(f"{'row':<22}{'run p50':>10}{'run p99':>10}{'rm p50':>10}{'rm p99':>10}")
        for row, _ in ROWS:
            t = times[row]
            print(f"{row:<22}{pct(t['run'], 50):>10.1f}{pct(t['run'], 99):>10.1f}"
                  f"{pct(t['rm'], 50):>10.1f}{pct(t['rm'], 99):>10.1f}")
        print("network part (the row less `none`, ms)")
        none = times["none"]
        for row, _ in ROWS[:2]:
            t = times[row]
            print(f"{row:<22}"
                  f"{pct(t['run'], 50) - pct(none['run'], 50):>10.1f}"
                  f"{pct(t['run'], 99) - pct(none['run'], 99):>10.1f}"
                  f"{pct(t['rm'], 50) - pct(none['rm'], 50):>10.1f}"
                  f"{pct(t['rm'], 99) - pct(none['rm'], 99):>10.1f}")
        if os.environ.get("WEFT_BENCH_ALL"):
            for row, _ in ROWS:
                for what in ("run", "rm"):
                    print(f"{row} {what}:", " ".join(f"{x:.0f}" for x in sorted(times[row][what])))
        print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        w.down()


if __name__ == "__main__":
    main()
