#!/usr/bin/env python3
"""Runs what the Helm chart renders, as a kubelet would, without Kubernetes: the rendering of
helm/weft/ci/three-replicas-postgres.yaml (on a real Postgres), every container's command,
arguments and environment taken from it unchanged except for what a kubelet itself decides.

What plays the cluster (all made here, all removed at the end, also on failure):
- a pod or a node is a network namespace on one bridge (a namespace of its own plays the
  wire); a hostNetwork pod runs in its node's namespace;
- a pod's volumes are directories: a Secret volume laid out as the kubelet does (`..data`
  symlink, items, defaultMode, group fsGroup), an emptyDir, a node's hostPath under the node's
  own directory (except /run/netns: the machine's, where the agent names namespaces);
  a path in a command line or a variable is taken through the container's mounts to its
  directory (a path on no mount stays as it is: so a wrong mount path breaks the run);
- Service names resolve (an /etc/hosts of the process's own mount namespace) to the pods'
  addresses, the first ready one first (no kube-proxy); the Service variables
  (*_SERVICE_HOST) hold the first pod's address;
- $(VAR) in command and args is expanded from the container's environment (fieldRefs:
  spec.nodeName, status.hostIP); Secrets the chart renders are used as rendered; the PKI
  Secret is what the pre-install Job stores, run twice (the second keeps it) against a fake
  API server (GET and POST of Secrets over TLS with the service account's token, which the
  kubelet mounts); the join and CNI token Secrets are made through Weft's API, as NOTES.txt
  says; the image's PATH is the directory of the built binaries, then the machine's;
- runAsUser is honoured (nsenter --setuid/--setgid), and so are the capabilities: a
  container that is not privileged runs with exactly those it adds (setpriv bounding set, no
  new privileges); readOnlyRootFilesystem and resource limits are not;
- probes run as exec probes run: in the container's namespaces, until the first success within
  the probe's periodSeconds x failureThreshold (startupProbe, else readiness).
Postgres listens on the machine's loopback: a relay thread listens on the same address inside
each control-plane pod (traffic stays on loopbacks).

Then NOTES.txt's grpcurl commands; through the public API (weftctl in a gateway pod's
namespace) an overlay network, one sandbox on node-a and one on node-b, a ping between them
and a name resolved; and the CNI plugin as node-c's runtime would run it (the installed binary,
the installed conflist) for a pod that then reaches the sandbox on node-a; last, node-c's pod
is replaced and its new pod starts with the spent join token, on the certificates it kept.

Longer than 600 lines: one scenario, and the pieces that play a cluster for it (namespaces,
volumes, the relay, the fake API server), which nothing else uses.

Usage (root): helm_run.py BIN_DIR [HELM_ARGS…]   (WEFT_TEST_DATABASE_URL: the throwaway
Postgres; HELM_ARGS: more for `helm template`, such as --set node.privileged=false)
"""

import ctypes
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helm", "weft")
HELM = "/var/cache/weft/helm/v4/helm"
RELEASE, NAMESPACE = "weft", "weft"
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
PREFIX = f"whr{os.getpid()}"
NET = "10.213.0"


def sh(*argv, check=True, **kw):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


class Relay:
    """Listens on ADDR inside a namespace; each connection is carried to ADDR on the machine's
    loopback (the throwaway Postgres)."""

    def __init__(self, netns_path, host, port):
        self.stop = False
        ready = threading.Event()
        self.listener = None

        def listen():
            setns(netns_path)  # this thread only: its sockets belong to the pod's namespace
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            s.settimeout(0.5)
            self.listener = s
            ready.set()
            while not self.stop:
                try:
                    c, _ = s.accept()
                except OSError:
                    continue
                out = ROOT_DIALER.dial(host, port)
                threading.Thread(target=pump, args=(c, out), daemon=True).start()

        threading.Thread(target=listen, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError(f"relay in {netns_path} did not start")


class Dialer:
    """Connects from the machine's own namespace: one thread, started by the main thread
    before any other entered a pod's namespace (a new thread inherits its creator's)."""

    def __init__(self):
        import queue
        self.asks = queue.Queue()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            host, port, answer = self.asks.get()
            try:
                answer.put(socket.create_connection((host, port), timeout=10))
            except OSError as e:
                answer.put(e)

    def dial(self, host, port):
        import queue
        answer = queue.Queue()
        self.asks.put((host, port, answer))
        got = answer.get(timeout=30)
        if isinstance(got, Exception):
            raise got
        return got


ROOT_DIALER = Dialer()


def pump(a, b):
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select(timeout=60):
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


class FakeApi:
    """The one corner of the Kubernetes API the chart's pre-install Job uses: GET and POST of
    Secrets in one namespace, over TLS, with the service account's bearer token. Serves from a
    thread inside the namespace `netns_path`, on port 443."""

    def __init__(self, netns_path, cert, key, token, namespace):
        import http.server
        import ssl
        self.secrets, self.posts, self.errors = {}, 0, []
        api = self
        prefix = f"/api/v1/namespaces/{namespace}/secrets"

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorized(self):
                if self.headers.get("Authorization") != f"Bearer {token}":
                    api.errors.append(f"{self.command} {self.path}: no or a wrong token")
                    self.answer(401, {"kind": "Status", "code": 401})
                    return False
                return True

            def do_GET(self):
                if not self.authorized():
                    return
                name = self.path[len(prefix) + 1:] if self.path.startswith(prefix + "/") else None
                if name in api.secrets:
                    self.answer(200, api.secrets[name])
                else:
                    self.answer(404, {"kind": "Status", "code": 404})

            def do_POST(self):
                if not self.authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != prefix or self.headers.get("Content-Type") != "application/json":
                    api.errors.append(f"POST {self.path} ({self.headers.get('Content-Type')})")
                    return self.answer(400, {"kind": "Status", "code": 400})
                if body.get("kind") != "Secret" or body.get("apiVersion") != "v1":
                    api.errors.append(f"POST of {body.get('apiVersion')}/{body.get('kind')}")
                    return self.answer(400, {"kind": "Status", "code": 400})
                name = body["metadata"]["name"]
                if name in api.secrets:
                    return self.answer(409, {"kind": "Status", "code": 409})
                api.posts += 1
                api.secrets[name] = body
                self.answer(201, body)

        ready = threading.Event()

        def serve():
            setns(netns_path)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server = http.server.HTTPServer(("0.0.0.0", 443), Handler)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            ready.set()
            self.server.serve_forever(poll_interval=0.2)

        threading.Thread(target=serve, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the fake API server did not start")


class World:
    def __init__(self, bin_dir, root):
        self.bin_dir = bin_dir
        self.root = root
        self.netns = []
        self.procs = []  # (name, Popen)
        self.relays = []
        self.ip = {}
        self.netns_of = {}
        self.hosts_file = os.path.join(root, "hosts")

    # -- namespaces ---------------------------------------------------------------------
    def ns(self, name):
        full = f"{PREFIX}-{name}"
        sh("ip", "netns", "add", full)
        self.netns.append(full)
        sh("ip", "-n", full, "link", "set", "lo", "up")
        return full

    def wire(self):
        self.wire_ns = self.ns("wire")
        sh("ip", "-n", self.wire_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.wire_ns, "link", "set", "br0", "up")

    def attach(self, name, index):
        """A pod or node namespace with eth0 on the wire."""
        full = self.ns(name)
        peer = f"p{index}"
        sh("ip", "-n", full, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
           "netns", self.wire_ns)
        sh("ip", "-n", self.wire_ns, "link", "set", peer, "master", "br0", "up")
        addr = f"{NET}.{index}"
        sh("ip", "-n", full, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", full, "link", "set", "eth0", "up")
        self.ip[name] = addr
        self.netns_of[name] = full
        return full

    # -- processes ----------------------------------------------------------------------
    def hosts(self, entries):
        with open(self.hosts_file, "w") as f:
            f.write("127.0.0.1 localhost\n")
            for name, addrs in entries.items():
                for a in addrs:
                    f.write(f"{a} {name}\n")
        os.chmod(self.hosts_file, 0o644)

    def command(self, netns, argv, uid=None, caps=None):
        """`argv` in the namespace `netns`, as `uid`, with only the capabilities `caps` (a
        list; None: all, a privileged container's) and no privilege escalation."""
        wrap = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', self.hosts_file,
                "nsenter", f"--net=/run/netns/{netns}"]
        if uid is not None:
            wrap += ["--setgid", str(uid), "--setuid", str(uid)]
        wrap += ["--"]
        if caps is not None:
            bounding = ",".join(["-all"] + [f"+{c.lower()}" for c in caps])
            wrap += ["setpriv", "--no-new-privs", f"--bounding-set={bounding}", "--"]
        return wrap + [self.binary(argv[0])] + argv[1:]

    def binary(self, name):
        p = os.path.join(self.bin_dir, name)
        return p if os.path.exists(p) else name

    def start(self, name, netns, argv, env, uid=None, caps=None):
        log = open(os.path.join(self.root, f"{name}.log"), "w")
        p = subprocess.Popen(self.command(netns, argv, uid, caps), env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((name, p))
        return p

    def run(self, name, netns, argv, env, uid=None, timeout=120, caps=None):
        out = subprocess.run(self.command(netns, argv, uid, caps), env=env, capture_output=True,
                             text=True, timeout=timeout)
        # Only what it says on stderr: the stdout of some commands is a secret (a new token).
        with open(os.path.join(self.root, f"{name}.log"), "a") as f:
            f.write(out.stderr)
        return out

    def log_tail(self, name, n=30):
        try:
            with open(os.path.join(self.root, f"{name}.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def keep_logs(self):
        """The services' logs, where the test run keeps every service's (scripts/test.sh scans
        them for secrets)."""
        keep = os.environ.get("WEFT_TEST_LOG_DIR")
        if not keep:
            return
        dest = os.path.join(keep, f"helm-run-{os.getpid()}")
        os.makedirs(dest, exist_ok=True)
        for f in os.listdir(self.root):
            if f.endswith(".log"):
                shutil.copy(os.path.join(self.root, f), dest)

    def cleanup(self):
        for r in self.relays:
            r.stop = True
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for name, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # Namespaces the agents named for sandboxes of this run.
        for f in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
            if f.startswith("weft-") and self.sandbox_ns_ours(f):
                sh("ip", "netns", "delete", f, check=False)
        for n in reversed(self.netns):
            sh("ip", "netns", "delete", n, check=False)

    sandbox_ids = set()

    def sandbox_ns_ours(self, f):
        return any(i in f for i in self.sandbox_ids)


class Pod:
    """One pod of a rendered workload: its volumes as directories, its containers' command
    lines resolved."""

    def __init__(self, world, workload, name, netns, node=None, ip=None, secrets=None):
        self.world, self.obj, self.name, self.netns = world, workload, name, netns
        self.node, self.ip = node, ip
        self.spec = workload["spec"]["template"]["spec"]
        self.dir = os.path.join(world.root, "pods", name)
        self.vols = {}
        fs_group = self.spec.get("securityContext", {}).get("fsGroup")
        for v in self.spec.get("volumes", []):
            self.vols[v["name"]] = self.volume(v, secrets, fs_group)

    def volume(self, v, secrets, fs_group):
        d = os.path.join(self.dir, "volumes", v["name"])
        if "secret" in v:
            data = secrets.get(v["secret"]["secretName"])
            if data is None:
                if v["secret"].get("optional"):
                    data = {}
                else:
                    raise RuntimeError(f"pod {self.name}: Secret {v['secret']['secretName']} does not exist")
            items = v["secret"].get("items") or [{"key": k, "path": k} for k in data]
            mode = v["secret"].get("defaultMode", 0o644)
            ts = os.path.join(d, "..2026_01_01_00_00_00.000000000")
            os.makedirs(ts)
            for it in items:
                if it["key"] not in data:
                    raise RuntimeError(f"pod {self.name}: Secret {v['secret']['secretName']} has no key {it['key']}")
                p = os.path.join(ts, it["path"])
                with open(p, "wb") as f:
                    f.write(data[it["key"]])
                if fs_group is not None:
                    os.chown(p, 0, fs_group)
                    mode |= 0o040
                os.chmod(p, mode)
            os.symlink(os.path.basename(ts), os.path.join(d, "..data"))
            for it in items:
                top = it["path"].split("/")[0]
                os.symlink(os.path.join("..data", top), os.path.join(d, top))
            os.chmod(d, 0o1777 if fs_group is None else 0o3777)
            return d
        if "emptyDir" in v:
            os.makedirs(d)
            os.chmod(d, 0o777)
            return d
        if "hostPath" in v:
            path = v["hostPath"]["path"]
            if path == "/run/netns":
                # The machine's: the agent names sandbox namespaces there, as on a node.
                return path
            if path == "/etc/resolv.conf":
                f = os.path.join(self.world.root, "nodes", self.node, "etc", "resolv.conf")
                os.makedirs(os.path.dirname(f), exist_ok=True)
                with open(f, "w") as fh:
                    fh.write(f"nameserver {NET}.250\n")  # an address of the wire: nothing leaves
                return f
            h = os.path.join(self.world.root, "nodes", self.node, path.lstrip("/"))
            os.makedirs(h, exist_ok=True)
            return h
        raise RuntimeError(f"pod {self.name}: volume kind of {v['name']} not played here")

    def env(self, c):
        e = {"PATH": self.world.bin_dir + ":" + os.environ.get("PATH", "/usr/bin:/bin")}
        for var in c.get("env", []):
            if "value" in var:
                e[var["name"]] = expand(str(var["value"]), e)
            else:
                src = var["valueFrom"]
                if "fieldRef" in src:
                    e[var["name"]] = {"spec.nodeName": self.node, "status.hostIP": self.ip,
                                      "status.podIP": self.ip}[src["fieldRef"]["fieldPath"]]
                elif "secretKeyRef" in src:
                    ref = src["secretKeyRef"]
                    e[var["name"]] = SECRETS[ref["name"]][ref["key"]].decode()
        e.update(SERVICE_ENV)
        return e

    def map(self, c, s):
        """A container path to the directory that plays its volume."""
        best = None
        for m in c.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if s == mp or s.startswith(mp + "/"):
                if best is None or len(mp) > len(best[0]):
                    best = (mp, m)
        if best is None:
            return s
        mp, m = best
        return self.vols[m["name"]] + s[len(mp):]

    def argv(self, c, cmd, env):
        out = []
        for a in cmd:
            a = expand(a, env)
            out.append(self.map(c, a) if a.startswith("/") else a)
        return out

    def container(self, name):
        for c in self.spec.get("initContainers", []) + self.spec["containers"]:
            if c["name"] == name:
                return c
        raise KeyError(name)

    def uid(self, c):
        return c.get("securityContext", {}).get("runAsUser")

    def caps(self, c):
        """The capability set the runtime gives: all for a privileged container, else what
        `add` names when `drop` is ALL (the chart always drops ALL)."""
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            return None
        cap = sc.get("capabilities", {})
        if cap.get("drop") != ["ALL"]:
            raise RuntimeError(f"pod {self.name} container {c['name']}: capabilities {cap} not played here")
        return cap.get("add", [])

    def run_init(self, name):
        c = self.container(name)
        env = self.mapped_env(c)
        out = self.world.run(f"{self.name}-{name}", self.netns,
                             self.argv(c, c["command"] + c.get("args", []), env), env,
                             uid=nonroot(self.uid(c)), caps=self.caps(c))
        if out.returncode != 0:
            raise RuntimeError(f"pod {self.name} init container {name} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out

    def mapped_env(self, c):
        env = self.env(c)
        return {k: (self.map(c, v) if v.startswith("/") and k != "PATH" else v) for k, v in env.items()}

    def start(self, name):
        c = self.container(name)
        env = self.mapped_env(c)
        return self.world.start(f"{self.name}-{name}", self.netns,
                                self.argv(c, c["command"] + c.get("args", []), env), env,
                                uid=nonroot(self.uid(c)), caps=self.caps(c))

    def probe_until_ready(self, name, proc):
        c = self.container(name)
        p = c.get("startupProbe") or c["readinessProbe"]
        deadline = time.time() + p.get("periodSeconds", 10) * p.get("failureThreshold", 3) + 30
        env = self.mapped_env(c)
        argv = self.argv(c, p["exec"]["command"], env)
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"pod {self.name} container {name} exited ({proc.returncode}):\n"
                                   + self.world.log_tail(f"{self.name}-{name}"))
            out = self.world.run(f"{self.name}-{name}-probe", self.netns, argv, env,
                                 uid=nonroot(self.uid(c)), caps=self.caps(c),
                                 timeout=p.get("timeoutSeconds", 1) + 10)
            if out.returncode == 0:
                # The liveness probe passes too, now.
                live = self.argv(c, c["livenessProbe"]["exec"]["command"], env)
                lo = self.world.run(f"{self.name}-{name}-probe", self.netns, live, env,
                                    uid=nonroot(self.uid(c)), caps=self.caps(c))
                if lo.returncode != 0:
                    raise RuntimeError(f"pod {self.name} {name}: ready, but its liveness probe fails: {lo.stderr}")
                return
            time.sleep(min(p.get("periodSeconds", 10), 2))
        raise RuntimeError(f"pod {self.name} container {name} never ready:\n"
                           + self.world.log_tail(f"{self.name}-{name}"))


SECRETS = {}
SERVICE_ENV = {}


def nonroot(uid):
    return uid if uid not in (None, 0) else None


def expand(s, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)


def render(pg, extra):
    base = pg.rsplit("/", 1)[0]
    dbs = []
    for svc in ("gateway", "ipam"):
        name = f"weft_helm_{svc}_{os.getpid()}"
        sh("psql", pg, "-q", "-c", f"CREATE DATABASE {name}")
        dbs.append(f"{base}/{name}")
    out = sh(HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE,
             "-f", os.path.join(CHART, "ci", "three-replicas-postgres.yaml"),
             "--set", f"postgres.gatewayUrl={dbs[0]}", "--set", f"postgres.ipamUrl={dbs[1]}", *extra)
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}, dbs


def secret_data(o):
    import base64
    d = {k: base64.b64decode(v) for k, v in (o.get("data") or {}).items()}
    d.update({k: v.encode() for k, v in (o.get("stringData") or {}).items()})
    return d


def run_pki_job(world, job):
    """The pre-install Job, run as a kubelet would, against a fake API server: it must store
    the PKI Secret once (a second run keeps it); what it stored is the Secret the pods use."""
    import base64
    sa = os.path.join(world.root, "serviceaccount")
    os.makedirs(sa)
    # The API server's certificate (valid for kubernetes.default.svc), from weft pki too.
    api_pki = os.path.join(world.root, "api-pki")
    sh(os.path.join(world.bin_dir, "weft"), "pki", "--dir", api_pki, "--dns-name", "kubernetes.default.svc")
    token = "sa-token-" + os.urandom(8).hex()
    for f, text in (("token", token), ("namespace", NAMESPACE)):
        with open(os.path.join(sa, f), "w") as fh:
            fh.write(text)
    shutil.copy(os.path.join(api_pki, "ca.crt"), os.path.join(sa, "ca.crt"))
    for f in os.listdir(sa):
        os.chmod(os.path.join(sa, f), 0o644)
    apins = world.attach("apiserver", 5)
    api = FakeApi(f"/run/netns/{apins}", os.path.join(api_pki, "gateway-gateway.crt"),
                  os.path.join(api_pki, "gateway-gateway.key"), token, NAMESPACE)
    jobns = world.attach("pki-job", 6)
    spec = job["spec"]["template"]["spec"]
    check = spec.get("automountServiceAccountToken") is True and spec.get("serviceAccountName")
    assert check, "the Job mounts no service account token"
    c = spec["containers"][0]
    # What the kubelet adds for the service account.
    c.setdefault("volumeMounts", []).append(
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    pod = Pod(world, job, "pki-job", jobns, ip=world.ip["pki-job"], secrets=SECRETS)
    pod.vols["kube-api-access"] = sa
    # The script is one argument: the kubelet expands $(VAR) in it, and its paths go through
    # the mounts as the others do.
    env = pod.mapped_env(c)
    script = expand(c["args"][0], env)
    for m in sorted(c["volumeMounts"], key=lambda m: -len(m["mountPath"])):
        script = script.replace(m["mountPath"], pod.vols[m["name"]])
    for attempt in (1, 2):
        out = world.run(f"pki-job-{attempt}", jobns, c["command"] + [script], env,
                        uid=nonroot(pod.uid(c)), caps=pod.caps(c))
        assert out.returncode == 0, f"the pki Job failed ({out.returncode}): {out.stdout}{out.stderr}"
        want = "created" if attempt == 1 else "exists: kept"
        assert want in out.stdout, f"the pki Job's run {attempt} did not say {want!r}: {out.stdout}"
        # Its emptyDir is new for every pod.
        for f in os.listdir(pod.vols["work"]):
            p = os.path.join(pod.vols["work"], f)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    assert api.posts == 1 and not api.errors, f"the API saw {api.posts} POSTs, errors {api.errors}"
    api.server.shutdown()
    name = env["SECRET"]
    stored = api.secrets[name]
    return name, {k: base64.b64decode(v) for k, v in stored["data"].items()}


def weftctl(world, *args, token):
    env = {"PATH": os.environ.get("PATH", ""), "WEFT_TOKEN": token}
    out = world.run("weftctl", world.gw_ns, ["weftctl", "--gateway",
                                             f"127.0.0.1:{world.gw_local_port}", *args], env)
    if out.returncode != 0:
        raise RuntimeError(f"weftctl {' '.join(args)}: {out.stderr}")
    return out.stdout


def values_of(extra):
    """The chart's values with the three-replica file over them (and `--set`s of the run)."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    with open(os.path.join(CHART, "ci", "three-replicas-postgres.yaml")) as f:
        over = yaml.safe_load(f)

    def merge(a, b):
        return {k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                for k, v in {**a, **b}.items()}
    values = merge(values, over)
    for i, a in enumerate(extra):
        if a == "--set" and extra[i + 1] == "node.privileged=false":
            values["node"]["privileged"] = False
    return values


def start_control_plane(world, objs, pg):
    """Two ipam-svc and two gateway pods (the values say three: two show the point and keep
    the run short), each ready by its probes."""
    pg_host, pg_port = re.match(r"postgres://[^@]*@([^:/]+):(\d+)/", pg).groups()
    gw = objs[("Deployment", f"{RELEASE}-gateway")]
    ipam = objs[("Deployment", f"{RELEASE}-ipam")]
    pods = []
    for i, (dep, comp) in enumerate([(ipam, "ipam"), (ipam, "ipam"), (gw, "gateway"), (gw, "gateway")]):
        pname = f"{comp}-{i % 2}"
        netns = world.attach(pname, 10 + i)
        world.relays.append(Relay(f"/run/netns/{netns}", pg_host, int(pg_port)))
        pods.append((dep, pname, netns))
    world.hosts({
        f"{RELEASE}-ipam.{NAMESPACE}.svc": [world.ip["ipam-0"], world.ip["ipam-1"]],
        f"{RELEASE}-gateway.{NAMESPACE}.svc": [world.ip["gateway-0"], world.ip["gateway-1"]],
        "kubernetes.default.svc": [f"{NET}.5"],
    })
    SERVICE_ENV[f"{RELEASE.upper()}_GATEWAY_PLAIN_SERVICE_HOST"] = world.ip["gateway-0"]
    for dep, pname, netns in pods:
        pod = Pod(world, dep, pname, netns, ip=world.ip[pname], secrets=SECRETS)
        cname = pod.spec["containers"][0]["name"]
        proc = pod.start(cname)
        pod.probe_until_ready(cname, proc)
        print(f"ready: pod {pname} ({cname})", flush=True)
    world.gw_ns = pods[2][2]
    world.gw_local_port = next(p["containerPort"] for p in gw["spec"]["template"]["spec"]["containers"][0]["ports"]
                               if p["name"] == "grpc-plain")


def start_node(world, ds, values, n, index, pod_name=None):
    """One node: its pod's init containers in order, then driver-agent and dns-svc, ready by
    their probes; the CNI install is where the node's runtime looks. `pod_name`: a new pod on
    a node already there (the DaemonSet's pod restarted)."""
    netns = world.netns_of[n] if pod_name else world.attach(n, 20 + index)
    pod = Pod(world, ds, pod_name or f"{n}-pod", netns, node=n, ip=world.ip[n], secrets=SECRETS)
    for init in pod.spec["initContainers"]:
        pod.run_init(init["name"])
    for c in ("driver-agent", "dns-svc"):
        proc = pod.start(c)
        pod.probe_until_ready(c, proc)
    cni = values["node"]["cni"]
    host = os.path.join(world.root, "nodes", n)
    assert os.access(os.path.join(host, cni["binDir"].lstrip("/"), "weft-cni"), os.X_OK), "no weft-cni on the node"
    with open(os.path.join(host, cni["confDir"].lstrip("/"), f"50-{cni['network']}.conflist")) as f:
        conflist = json.load(f)
    first = conflist["plugins"][0]
    assert first["type"] == "weft-cni" and first["host"] == n and first["tokenFile"] == cni["tokenFile"], conflist
    st = os.stat(os.path.join(host, cni["tokenFile"].lstrip("/")))
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == 0, oct(st.st_mode)
    print(f"ready: node {n}{' again' if pod_name else ''} (joined; driver-agent, dns-svc; weft-cni installed)",
          flush=True)
    return conflist


def restart_node(world, ds, values, n, admin):
    """The node's pod is replaced (an upgrade, a crash): its containers stop, a new pod runs
    the init containers again with the same, spent, join token (the node starts on the
    certificates it kept), and the host is up again."""
    for c in ("dns-svc", "driver-agent"):
        p = dict(world.procs)[f"{n}-pod-{c}"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(40) == 0, f"{n} {c} did not stop cleanly on SIGTERM: exit {p.returncode}"
    start_node(world, ds, values, n, 0, pod_name=f"{n}-pod2")
    listed = [json.loads(ln) for ln in weftctl(world, "--format", "json", "host", "ls", token=admin).splitlines()
              if ln.strip()]
    h = next((h for h in listed if h.get("name") == n), {})
    assert h.get("state") == "HOST_STATE_UP", f"{n} is not up after its pod's restart: {h}"


def check_notes_grpcurl(world, admin, nodes):
    """NOTES.txt's grpcurl commands (there through a port-forward; here from the pod)."""
    gw_addr = f"127.0.0.1:{world.gw_local_port}"
    genv = {"PATH": os.environ.get("PATH", ""), "WEFT_TOKEN": admin}
    health = world.run("grpcurl", world.gw_ns, ["grpcurl", "-plaintext", gw_addr,
                                                "grpc.health.v1.Health/Check"], genv)
    assert '"SERVING"' in health.stdout, f"grpcurl health: {health.stdout}{health.stderr}"
    lh = world.run("grpcurl", world.gw_ns, ["grpcurl", "-plaintext", "-expand-headers", "-H",
                                            "authorization: Bearer ${WEFT_TOKEN}", gw_addr,
                                            "weft.gateway.v1.HostService/ListHosts"], genv)
    assert lh.returncode == 0 and all(f'"{n}"' in lh.stdout for n in nodes), \
        f"grpcurl ListHosts: {lh.stdout}{lh.stderr}"
    # The plaintext listener on the pod network still takes no call without a token.
    anon = world.run("grpcurl", world.gw_ns, ["grpcurl", "-plaintext", gw_addr,
                                              "weft.gateway.v1.HostService/ListHosts"], genv)
    assert anon.returncode != 0 and "Unauthenticated" in anon.stderr, \
        f"ListHosts without a token: {anon.returncode} {anon.stdout}{anon.stderr}"
    print("NOTES.txt's grpcurl commands answer (health SERVING, the three nodes listed; "
          "without a token: Unauthenticated)", flush=True)
    listed = [json.loads(ln) for ln in weftctl(world, "--format", "json", "host", "ls", token=admin).splitlines()
              if ln.strip()]
    for n in nodes:
        h = next((h for h in listed if h.get("name") == n), None)
        assert h is not None and h.get("state") == "HOST_STATE_UP", f"{n} is not up: {listed}"


def check_metrics(world, values, nodes):
    """Each service's metrics answer at the address and port the chart gave it, from another
    pod (a scrape, as Prometheus would), with the gRPC server's own counters in them."""
    m = values["metrics"]
    if not m["enabled"]:
        return
    targets = [(f"{c}-{i}", world.ip[f"{c}-{i}"], m["ports"][c]) for c in ("gateway", "ipam") for i in (0, 1)]
    targets += [(f"{n} {k}", world.ip[n], m["ports"][k]) for n in nodes for k in ("agent", "dns")]
    for what, ip, port in targets:
        out = world.run("curl", world.gw_ns, ["curl", "-sf", "--max-time", "5", f"http://{ip}:{port}/metrics"],
                        {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        assert out.returncode == 0 and "grpc_server_handled_total" in out.stdout, \
            f"metrics of {what} at {ip}:{port}: exit {out.returncode} {out.stderr[:300]}"
    print(f"metrics answer on all {len(targets)} service containers, at the chart's ports", flush=True)


def in_sandbox(world, node, netns_path, *argv):
    """argv in a sandbox's namespace, which the node's agent named in its own mount namespace
    (a private one here; on a node the Bidirectional mount of /run/netns shows it to all)."""
    agent = dict(world.procs)[f"{node}-pod-driver-agent"].pid
    return sh("nsenter", f"--mount=/proc/{agent}/ns/mnt", "--", "nsenter", f"--net={netns_path}",
              "--", *argv, check=False)


def check_sandboxes(world, admin, network):
    """Two sandboxes through the public API, on node-a and node-b, on an overlay: they ping
    each other and resolve each other's names (dns-svc's socket in the sandbox comes from the
    agent's broker, over the socket the two containers share)."""
    weftctl(world, "network", "create", "--driver", "overlay", "--subnet", "10.214.0.0/24", network, token=admin)
    addrs = {}
    for s, n in (("s1", "node-a"), ("s2", "node-b")):
        weftctl(world, "sandbox", "create", "--host", n, "--network", network, s, token=admin)
        info = json.loads(weftctl(world, "--format", "json", "sandbox", "inspect", s, token=admin))[0]
        world.sandbox_ids.add(info["id"][:12])
        ep = info["endpoints"][0]
        addrs[s] = (info.get("netnsPath") or info.get("netns_path"),
                    (ep.get("ipv4Address") or ep.get("ipv4_address")).split("/")[0])
    ping = in_sandbox(world, "node-a", addrs["s1"][0], "busybox", "ping", "-c", "3", "-W", "2", addrs["s2"][1])
    assert ping.returncode == 0, f"s1 cannot reach s2 over the overlay:\n{ping.stdout}{ping.stderr}"
    print(f"s1 on node-a reached s2 on node-b ({addrs['s2'][1]}) over the overlay", flush=True)
    dig = in_sandbox(world, "node-a", addrs["s1"][0], "dig", "+short", "+time=2", "+tries=5", "@127.0.0.11", "s2")
    assert dig.stdout.split() == [addrs["s2"][1]], f"s2 resolves in s1 to {dig.stdout!r} {dig.stderr}"
    print(f"s2 resolves to {addrs['s2'][1]} in s1 (dns-svc on node-a)", flush=True)
    return addrs


def check_cni(world, values, conflist, node, pod_netns, peer):
    """The node's runtime runs the installed plugin with the installed conflist (its first
    plugin, with name and cniVersion, as runtimes pass it) for a pod: ADD gives the pod an
    address on the network, from which it reaches `peer`; DEL takes it away."""
    host = os.path.join(world.root, "nodes", node)
    conf = dict(conflist["plugins"][0], name=conflist["name"], cniVersion=conflist["cniVersion"])
    # The plugin runs on the node: the token file is the node's (host paths live in its dir).
    conf["tokenFile"] = os.path.join(host, conf["tokenFile"].lstrip("/"))
    plugin = os.path.join(host, values["node"]["cni"]["binDir"].lstrip("/"), "weft-cni")
    env = {"PATH": os.environ.get("PATH", ""), "CNI_CONTAINERID": "c0ffee" * 8,
           "CNI_NETNS": f"/run/netns/{pod_netns}", "CNI_IFNAME": "eth0", "CNI_PATH": os.path.dirname(plugin),
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"}
    add = subprocess.run(["nsenter", f"--net=/run/netns/{world.netns_of[node]}", "--", plugin],
                         input=json.dumps(conf), capture_output=True, text=True, timeout=150,
                         env=dict(env, CNI_COMMAND="ADD"))
    assert add.returncode == 0, f"CNI ADD: {add.stdout}{add.stderr}"
    result = json.loads(add.stdout)
    ip = result["ips"][0]["address"].split("/")[0]
    ping = sh("nsenter", f"--net=/run/netns/{pod_netns}", "--", "busybox", "ping", "-c", "3", "-W", "2",
              peer, check=False)
    assert ping.returncode == 0, f"the CNI pod ({ip}) cannot reach {peer}:\n{ping.stdout}{ping.stderr}"
    print(f"CNI ADD on {node} with the installed plugin and conflist: pod web-0 got {ip}, reaches {peer}",
          flush=True)
    delete = subprocess.run(["nsenter", f"--net=/run/netns/{world.netns_of[node]}", "--", plugin],
                            input=json.dumps(dict(conf, prevResult=result)), capture_output=True, text=True,
                            timeout=150, env=dict(env, CNI_COMMAND="DEL"))
    assert delete.returncode == 0, f"CNI DEL: {delete.stdout}{delete.stderr}"


def main():
    # Stopped from outside (a test runner's timeout): clean up all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("helm-run: stopped (SIGTERM)"))
    bin_dir = os.path.realpath(sys.argv[1])
    pg = os.environ["WEFT_TEST_DATABASE_URL"]
    root = tempfile.mkdtemp(prefix="weft-helm-run-")
    os.chmod(root, 0o755)
    world = World(bin_dir, root)
    values = values_of(sys.argv[2:])
    ok = False
    try:
        objs, _ = render(pg, sys.argv[2:])
        for (kind, name), o in objs.items():
            if kind == "Secret":
                SECRETS[name] = secret_data(o)
        world.wire()
        world.hosts({"kubernetes.default.svc": [f"{NET}.5"]})
        name, data = run_pki_job(world, objs[("Job", f"{RELEASE}-pki")])
        SECRETS[name] = data
        print(f"the pki Job stored Secret {name} ({', '.join(sorted(data))}); run again, it kept it", flush=True)
        start_control_plane(world, objs, pg)
        admin = SECRETS[f"{RELEASE}-admin"]["ADMIN_TOKEN"].decode()
        # NOTES.txt: a join token per node, in the Secret node.joinSecret; the CNI token.
        nodes = ["node-a", "node-b", "node-c"]
        SECRETS[values["node"]["joinSecret"]] = {
            n: weftctl(world, "host", "join-token", "--host", n, token=admin).split()[-1].encode()
            for n in nodes}
        cni = weftctl(world, "token", "create", "--role", "operator", "--name", "cni", token=admin).split()[-1]
        SECRETS[values["node"]["cni"]["tokenSecret"]] = {"token": cni.encode()}
        # A pod's namespace on node-c, made before its agent starts (which then sees it).
        pod_ns = world.ns("web-0")
        conflists = {n: start_node(world, objs[("DaemonSet", f"{RELEASE}-node")], values, n, i)
                     for i, n in enumerate(nodes)}
        check_notes_grpcurl(world, admin, nodes)
        check_metrics(world, values, nodes)
        network = values["node"]["cni"]["network"]
        addrs = check_sandboxes(world, admin, network)
        check_cni(world, values, conflists["node-c"], "node-c", pod_ns, addrs["s1"][1])
        restart_node(world, objs[("DaemonSet", f"{RELEASE}-node")], values, "node-c", admin)
        weftctl(world, "sandbox", "rm", "s1", "s2", token=admin)
        weftctl(world, "network", "rm", network, token=admin)
        ok = True
    finally:
        if not ok:
            for name, p in world.procs:
                print(f"--- {name} (exit {p.poll()})\n{world.log_tail(name)}")
        world.cleanup()
        world.keep_logs()
        shutil.rmtree(root, ignore_errors=True)
    print("helm-run: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
