#!/usr/bin/env python3
"""The overlay benchmark: three hosts joined to a control plane (each `weft up` in a namespace
of the benchmark's own, on an underlay bridge in another), then

  1. Connect latency: N sandboxes connected to an overlay network and N to a bridge network on
     the same host, each with `weftctl network connect` (wall time of the command, so it
     includes starting weftctl: the row `weftctl network ls` shows that floor);
  2. how long after each overlay Connect returns the two other hosts have the new endpoint's
     FDB entry on their VXLAN device (`bridge -j fdb show`, polled every millisecond or so);
  3. TCP throughput with iperf3 between members on two hosts over the overlay, against the
     same between the two hosts' own namespaces over the underlay.

Prints p50/p99 per row and the load average. Usage (root): bench/overlay.sh [N]
Environment: WEFT_BENCH_BINS (the release binaries), WEFT_BENCH_N (default 50).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BINS = os.environ.get("WEFT_BENCH_BINS", "/var/cache/weft/target/release")
N = int(os.environ.get("WEFT_BENCH_N", "50"))
TAG = f"wft-bo{os.getpid() % 10000}"
CONTROL_ADDR = "198.51.100.10"
HOSTS = [("h1", "198.51.100.1"), ("h2", "198.51.100.2"), ("h3", "198.51.100.3")]


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def ns(name: str) -> str:
    return f"{TAG}-{name}"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class World:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="weft-bench-overlay-")
        # The services' own user must reach the data directories below it.
        os.chmod(self.dir, 0o755)
        self.namespaces: list[str] = []
        self.wefts: list[subprocess.Popen] = []

    def netns(self, name: str) -> str:
        n = ns(name)
        run("ip", "netns", "add", n)
        self.namespaces.append(n)
        run("ip", "-n", n, "link", "set", "lo", "up")
        return n

    def wire(self) -> None:
        w = self.netns("net")
        run("ip", "-n", w, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", w, "link", "set", "br0", "up")
        for i, (name, addr) in enumerate([("c", CONTROL_ADDR)] + HOSTS):
            n = self.netns(name)
            port = f"p{i}"
            run("ip", "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", w)
            run("ip", "-n", n, "addr", "add", f"{addr}/24", "dev", "eth0")
            run("ip", "-n", n, "link", "set", "eth0", "up")
            run("ip", "-n", w, "link", "set", port, "master", "br0", "up")

    def weft(self, name: str, *flags: str) -> subprocess.Popen:
        data = os.path.join(self.dir, name)
        out = open(os.path.join(self.dir, f"{name}.out"), "w")
        p = subprocess.Popen(
            [f"{BINS}/weft", "up", "--netns", ns(name), "--data-dir", data, "--bin-dir", BINS, *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.wefts.append(p)
        marker = "joined " if "--join" in flags else "Talk to it:"
        deadline = time.time() + 120
        while time.time() < deadline:
            if p.poll() is not None:
                sys.exit(f"weft up for {name} exited:\n{open(out.name).read()}")
            if marker in open(out.name).read():
                return p
            time.sleep(0.1)
        sys.exit(f"weft up for {name} did not come up:\n{open(out.name).read()}")

    def weftctl(self, *args: str) -> str:
        r = run(
            "ip", "netns", "exec", ns("c"), f"{BINS}/weftctl",
            "--token-file", os.path.join(self.dir, "c", "admin.token"), *args,
        )
        return r.stdout

    def close(self) -> None:
        for p in reversed(self.wefts):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.wefts):
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
        # Sandbox namespaces the agents made (weft-<id>), then the benchmark's own.
        for n in getattr(self, "sandbox_namespaces", []):
            run("ip", "netns", "del", n, check=False)
        for n in reversed(self.namespaces):
            run("ip", "netns", "del", n, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def fdb_macs(host: str, dev: str) -> set[str]:
    r = run("bridge", "-n", ns(host), "-j", "fdb", "show", "dev", dev, check=False)
    try:
        return {e.get("mac", "") for e in json.loads(r.stdout or "[]")}
    except json.JSONDecodeError:
        return set()


def vxlan_device(host: str) -> str | None:
    r = run("ip", "-n", ns(host), "-d", "-j", "link", "show", "type", "vxlan", check=False)
    links = json.loads(r.stdout or "[]")
    return links[0]["ifname"] if links else None


def iperf(client_ns: str, server_ns: str, server_ip: str) -> float:
    srv = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = run("nsenter", f"--net={client_ns}", "iperf3", "-c", server_ip, "-p", "5201", "-t", "5", "-J", check=False)
    srv.wait(timeout=15)
    out = json.loads(r.stdout)
    return out["end"]["sum_received"]["bits_per_second"] / 1e9


def main() -> None:
    w = World()
    w.sandbox_namespaces = []
    try:
        w.wire()
        w.weft("c", "--host-name", "control", "--advertise", CONTROL_ADDR)
        for name, addr in HOSTS:
            token = w.weftctl("host", "join-token", "--host", name).split()[-1]
            w.weft(name, "--host-name", name, "--join", f"{CONTROL_ADDR}:7700",
                   "--join-token", token, "--advertise", addr)
        w.weftctl("network", "create", "-d", "overlay", "--subnet", "10.240.0.0/16", "ov")
        w.weftctl("network", "create", "--subnet", "10.241.0.0/16", "br")

        def sandbox(name: str, host: str) -> dict:
            w.weftctl("sandbox", "create", "--host", host, name)
            s = json.loads(w.weftctl("--format", "json", "sandbox", "inspect", name))
            s = s[0] if isinstance(s, list) else s
            w.sandbox_namespaces.append(f"weft-{s['id']}")
            return s

        # A member on each of the other hosts first, so that h2 and h3 have the overlay's
        # devices when h1's endpoints come.
        for host in ("h2", "h3"):
            sandbox(f"seed-{host}", host)
            w.weftctl("network", "connect", "ov", f"seed-{host}")
        devs = {h: vxlan_device(h) for h in ("h2", "h3")}
        floor, overlay, bridge, fdb = [], [], [], []
        for i in range(N):
            t = time.perf_counter()
            w.weftctl("network", "ls")
            floor.append((time.perf_counter() - t) * 1000)
            s = sandbox(f"o{i}", "h1")
            t = time.perf_counter()
            w.weftctl("network", "connect", "ov", f"o{i}")
            done = time.perf_counter()
            overlay.append((done - t) * 1000)
            mac = json.loads(w.weftctl("--format", "json", "sandbox", "inspect", f"o{i}"))
            mac = (mac[0] if isinstance(mac, list) else mac)["endpoints"][0]["macAddress"].lower()
            pending = {"h2", "h3"}
            while pending and time.perf_counter() - done < 10:
                for h in list(pending):
                    if mac in fdb_macs(h, devs[h]):
                        fdb.append((time.perf_counter() - done) * 1000)
                        pending.discard(h)
            s = sandbox(f"b{i}", "h1")
            t = time.perf_counter()
            w.weftctl("network", "connect", "br", f"b{i}")
            bridge.append((time.perf_counter() - t) * 1000)
        member = lambda name: json.loads(w.weftctl("--format", "json", "sandbox", "inspect", name))
        o0 = member("o0")
        o0 = o0[0] if isinstance(o0, list) else o0
        seed = member("seed-h2")
        seed = seed[0] if isinstance(seed, list) else seed
        over = iperf(o0["netnsPath"], seed["netnsPath"], seed["endpoints"][0]["ipv4Address"].split("/")[0])
        under = iperf(f"/run/netns/{ns('h1')}", f"/run/netns/{ns('h2')}", HOSTS[1][1])
        print(f"weft overlay benchmark: {N} Connects each, three joined hosts, release build")
        print("load average: " + open("/proc/loadavg").read().strip())
        print(f"{'row':44} {'p50':>9} {'p99':>9}")
        for label, v in [
            ("weftctl network ls (the floor)", floor),
            ("weftctl network connect, bridge", bridge),
            ("weftctl network connect, overlay", overlay),
            ("FDB entry on the 2 other hosts after it", fdb),
        ]:
            print(f"{label:44} {statistics.median(v):8.2f}ms {pct(v, 99):8.2f}ms   (n={len(v)})")
        missing = 2 * N - len(fdb)
        print(f"FDB entries not seen within 10 s: {missing}")
        print(f"TCP throughput (iperf3, 5 s): overlay {over:.2f} Gbit/s, underlay {under:.2f} Gbit/s"
              f" ({over / under:.0%})")
    finally:
        w.close()


if __name__ == "__main__":
    main()
