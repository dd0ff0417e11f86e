#!/usr/bin/env python3
"""What a reviewer checks by hand in the Helm chart's rendered manifests, checked for one
rendering: capabilities, probes, hostPath mounts, tolerations, priority class, Secret
references, resource requests, and that every container's command line and environment are
what the real binaries take (each command is parsed by the binary itself, with `--help` added
at the end so that nothing starts; each WEFT_* variable must be one the binary names in its
help).

Usage: helm_assert.py RENDERED.yaml VALUES.yaml BIN_DIR
(VALUES.yaml: the values file the rendering used, merged over the chart's values.yaml here.)
Exits 1 listing every failed check."""

import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helm", "weft")
# What $(VAR) stands for in a pod on a node (the kubelet expands these in command and args).
SAMPLE_ENV = {
    "NODE_NAME": "node-a",
    "NODE_IP": "192.0.2.10",
}
# Stand-ins for what Secrets hold, by key.
SAMPLE_SECRET = {
    "DATABASE_URL": "postgres://weft@127.0.0.1:5432/weft_gateway",
    "IPAM_DATABASE_URL": "postgres://weft@127.0.0.1:5432/weft_ipam",
    "ADMIN_TOKEN_SHA256": "0" * 64,
}
AGENT_CAPS = {"NET_ADMIN", "SYS_ADMIN", "NET_BIND_SERVICE", "CHOWN"}
BINARIES = {"weft", "gateway", "ipam-svc", "driver-agent", "dns-svc", "weft-cni"}

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)


def merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def expand(s, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)


def flag(args, name):
    """The value after `name` in args, or None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


HELP = {}


def help_text(bin_dir, binary, sub=()):
    key = (binary,) + tuple(sub)
    if key not in HELP:
        out = subprocess.run([os.path.join(bin_dir, binary), *sub, "--help"],
                             capture_output=True, text=True, timeout=30)
        HELP[key] = out.stdout
    return HELP[key]


def secret_env(container, env):
    """The container's environment as the kubelet gives it: plain values, Secret keys as
    stand-ins, fieldRefs as the samples."""
    out = dict(env)
    for e in container.get("env", []):
        if "value" in e:
            out[e["name"]] = expand(str(e["value"]), out)
        elif "secretKeyRef" in e.get("valueFrom", {}):
            out[e["name"]] = SAMPLE_SECRET.get(e["valueFrom"]["secretKeyRef"]["key"], "x")
        elif "fieldRef" in e.get("valueFrom", {}):
            out[e["name"]] = SAMPLE_ENV.get(e["name"], "x")
    return out


def parses(bin_dir, argv, env, what):
    """The real binary takes argv (with --help last: parsed, nothing started)."""
    binary = argv[0]
    if binary not in BINARIES:
        return
    full = [os.path.join(bin_dir, binary)] + argv[1:] + ["--help"]
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = subprocess.run(full, capture_output=True, text=True, timeout=30, env=run_env)
    check(out.returncode == 0, f"{what}: `{' '.join(argv)}` is refused by {binary}: {out.stderr.strip()[:300]}")
    sub = [a for a in argv[1:2] if not a.startswith("-")] if binary in ("weft", "weft-cni") else []
    text = help_text(bin_dir, binary, sub)
    for name in env:
        if name.startswith("WEFT_"):
            check(f"[env: {name}=" in text or f"[env: {name}]" in text,
                  f"{what}: {binary} {' '.join(sub)} takes no environment variable {name}")


def check_pki_job(c, env, bin_dir, what):
    """The Job's `weft pki` line, run for real (into a temporary directory) with the Job's
    environment: the Service names it passes are names weft pki takes."""
    script = c["args"][0]
    lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("weft pki ")]
    check(len(lines) == 1, f"{what}: no `weft pki` line in its script")
    if not lines:
        return
    argv = shlex.split(re.sub(r"\$([A-Z_]+)|\$\{([A-Z_]+)\}",
                              lambda m: env.get(m.group(1) or m.group(2), ""), lines[0]))
    with tempfile.TemporaryDirectory() as tmp:
        argv = [os.path.join(tmp, "pki") if a == "/work/pki" else a for a in argv]
        out = subprocess.run([os.path.join(bin_dir, "weft")] + argv[1:], capture_output=True,
                             text=True, timeout=60)
        check(out.returncode == 0, f"{what}: `{' '.join(argv)}` fails: {out.stderr.strip()[:300]}")
        for name in env.get("DNS_NAMES", "").split(","):
            check(bool(name), f"{what}: an empty DNS name")


def mounts_cover(container, path):
    return any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in container.get("volumeMounts", []))


def secret_file_ok(container, vols, path):
    """A path on a Secret volume with items names one of them (the kubelet makes no other)."""
    for m in container.get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        if path.startswith(base):
            sec = vols.get(m["name"], {}).get("secret")
            if sec and "items" in sec:
                return path[len(base):] in {i["path"] for i in sec["items"]}
    return True


def check_probe(c, what, listen_port, ca_flag_path):
    for kind in ("readinessProbe", "livenessProbe"):
        p = c.get(kind)
        check(p is not None, f"{what}: no {kind}")
        if not p:
            continue
        cmd = p.get("exec", {}).get("command", [])
        check(cmd[:2] == ["weft", "probe"], f"{what}: {kind} is not `weft probe`: {cmd}")
        addr = flag(cmd, "--addr") or ""
        check(addr == f"127.0.0.1:{listen_port}",
              f"{what}: {kind} checks {addr}, the service listens on port {listen_port}")
        ca = flag(cmd, "--tls-ca")
        check(ca == ca_flag_path, f"{what}: {kind} trusts {ca}, the service's CA is {ca_flag_path}")
        check(ca is not None and mounts_cover(c, ca), f"{what}: {kind}'s CA {ca} is on no mount")
        check(p.get("timeoutSeconds", 1) >= 3, f"{what}: {kind} times out before the check can")


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def main():
    rendered, values_file, bin_dir = sys.argv[1:4]
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    with open(values_file) as f:
        values = merge(values, yaml.safe_load(f) or {})
    objs = docs(rendered)
    by = {}
    for o in objs:
        by.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    secrets = by.get("Secret", {})
    declared = {v for v in (values["postgres"]["existingSecret"], values["tls"]["existingSecret"],
                            values["auth"]["existingSecret"], values["node"]["joinSecret"],
                            values["node"]["cni"]["tokenSecret"]) if v}
    # The files `weft pki` really makes: what the chart's TLS Secret items may name.
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([os.path.join(bin_dir, "weft"), "pki", "--dir", os.path.join(tmp, "p"),
                        "--dns-name", "a.b.svc"], check=True, capture_output=True, timeout=60)
        pki_files = set(os.listdir(os.path.join(tmp, "p")))
    postgres = values["postgres"]["enabled"]

    workloads = [o for o in objs if o["kind"] in ("Deployment", "DaemonSet", "Job")]
    check(len(workloads) >= 3, "fewer than three workloads rendered")
    for o in workloads:
        spec = pod_spec(o)
        name = o["metadata"]["name"]
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            what = f"{o['kind']} {name} container {c['name']}"
            # Resource requests on every container.
            req = c.get("resources", {}).get("requests", {})
            check("cpu" in req and "memory" in req, f"{what}: no cpu and memory requests")
            check("memory" in c.get("resources", {}).get("limits", {}), f"{what}: no memory limit")
            # Secret references: rendered here, or a Secret the values name as existing.
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    s = secrets.get(ref["name"])
                    if s is not None:
                        keys = set(s.get("data", {})) | set(s.get("stringData", {}))
                        check(ref["key"] in keys, f"{what}: Secret {ref['name']} has no key {ref['key']}")
                    else:
                        check(ref["name"] in declared, f"{what}: Secret {ref['name']} is neither rendered nor named in the values")
            for m in c.get("volumeMounts", []):
                check(m["name"] in vols, f"{what}: mount of a missing volume {m['name']}")
            env = secret_env(c, SAMPLE_ENV)
            argv = [expand(a, env) for a in c.get("command", []) + c.get("args", [])]
            left = [a for a in argv if "$(" in a]
            if c["name"] == "cni-install" and not values["node"]["cni"]["gateway"]:
                # The ClusterIP of the plaintext Service, from the kubelet's Service variables.
                svc = f"{o['metadata']['labels']['app.kubernetes.io/instance']}-gateway-plain"
                var = svc.upper().replace("-", "_") + "_SERVICE_HOST"
                check(svc in by.get("Service", {}), f"{what}: uses {var} but Service {svc} is not rendered")
                argv = [a.replace(f"$({var})", "10.96.0.10") for a in argv]
                left = [a for a in argv if "$(" in a]
            if c["name"] != "pki":
                check(not left, f"{what}: unexpanded references {left}")
            parses(bin_dir, argv, env, what)
            if c["name"] == "pki":
                check_pki_job(c, env, bin_dir, what)
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                cmd = c.get(kind, {}).get("exec", {}).get("command")
                if cmd:
                    parses(bin_dir, cmd, {}, f"{what} {kind}")
            sc = c.get("securityContext", {})
            caps = sc.get("capabilities", {})
            if c["name"] in ("gateway", "ipam-svc", "dns-svc", "pki"):
                check(caps.get("drop") == ["ALL"] and not caps.get("add"), f"{what}: capabilities {caps}")
                check(sc.get("runAsNonRoot") is True and sc.get("allowPrivilegeEscalation") is False,
                      f"{what}: not an unprivileged container: {sc}")
            elif c["name"] == "driver-agent":
                if values["node"]["privileged"]:
                    check(sc.get("privileged") is True, f"{what}: privileged expected")
                else:
                    check(not sc.get("privileged") and caps.get("drop") == ["ALL"]
                          and set(caps.get("add", [])) == AGENT_CAPS,
                          f"{what}: capabilities {caps}, expected exactly {sorted(AGENT_CAPS)}")
            elif c["name"] == "join":
                check(caps.get("drop") == ["ALL"] and set(caps.get("add", [])) == {"CHOWN", "DAC_OVERRIDE", "FOWNER"},
                      f"{what}: capabilities {caps}")
            else:
                check(caps.get("drop") == ["ALL"] and not caps.get("add"), f"{what}: capabilities {caps}")
            # TLS files: from the Secret items `weft pki` makes, or the node's joined ones.
            for v in vols.values():
                sec = v.get("secret")
                if sec and sec["secretName"] == (values["tls"]["existingSecret"] or f"{o['metadata']['labels']['app.kubernetes.io/instance']}-pki"):
                    for item in sec.get("items", []):
                        check(item["key"] in pki_files, f"{what}: TLS Secret item {item['key']} is no file of `weft pki` ({sorted(pki_files)})")
                if sec:
                    ok = sec["secretName"] in secrets or sec["secretName"] in declared or (
                        values["tls"]["generate"] and sec["secretName"].endswith("-pki"))
                    check(ok, f"{what}: Secret volume {sec['secretName']} is neither rendered, made by the pki Job, nor named in the values")
        kind_of = {"gateway": "gateway", "ipam-svc": "ipam", "driver-agent": "agent", "dns-svc": "dns"}
        for c in spec["containers"]:
            if c["name"] not in kind_of:
                continue
            what = f"{o['kind']} {name} container {c['name']}"
            env = secret_env(c, SAMPLE_ENV)
            args = [expand(a, env) for a in c.get("args", [])]
            listen = flag(args, "--tls-listen") or flag(args, "--listen")
            ca = flag(args, "--tls-ca") or env.get("WEFT_TLS_CA")
            check(listen is not None and ca is not None, f"{what}: no listen address or CA")
            if listen and ca:
                check_probe(c, what, port_of(listen), ca)
                ports = [p["containerPort"] for p in c.get("ports", [])]
                if o["kind"] == "Deployment":
                    check(port_of(listen) in ports, f"{what}: listens on {listen}, declares ports {ports}")
            for f in ("WEFT_TLS_CERT", "WEFT_TLS_KEY", "WEFT_TLS_CA"):
                if f in env:
                    check(mounts_cover(c, env[f]), f"{what}: {f}={env[f]} is on no mount")
                    check(secret_file_ok(c, vols, env[f]), f"{what}: {f}={env[f]} is no item of its Secret volume")

    for comp, key in (("gateway", "gateway"), ("ipam", "ipam")):
        d = by["Deployment"].get(next(n for n in by["Deployment"] if n.endswith(f"-{comp}")))
        n = values[key]["replicas"]
        check(d["spec"]["replicas"] == n, f"{comp}: replicas {d['spec']['replicas']} != {n}")
        strat = d["spec"]["strategy"]
        if postgres:
            check(strat.get("type") == "RollingUpdate" and strat["rollingUpdate"]["maxUnavailable"] == 0,
                  f"{comp}: a rolling update that keeps every replica until its successor is ready: {strat}")
        else:
            check(strat.get("type") == "Recreate", f"{comp}: SQLite needs Recreate: {strat}")
        pdbs = [p for p in by.get("PodDisruptionBudget", {}).values()
                if p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == comp]
        check(len(pdbs) == (1 if n > 1 else 0), f"{comp}: {len(pdbs)} PodDisruptionBudgets for {n} replicas")
        aff = pod_spec(d).get("affinity", {}).get("podAntiAffinity", {})
        hard = values[key]["antiAffinity"] == "hard"
        terms = aff.get("requiredDuringSchedulingIgnoredDuringExecution" if hard else
                        "preferredDuringSchedulingIgnoredDuringExecution", [])
        check(len(terms) == 1, f"{comp}: anti-affinity {aff}")
        spec = pod_spec(d)
        check(spec.get("terminationGracePeriodSeconds", 30) > 25, f"{comp}: too short a grace period to drain")
        check(spec.get("automountServiceAccountToken") is False, f"{comp}: mounts an API token it does not use")

    ds = list(by.get("DaemonSet", {}).values())
    check(len(ds) == (1 if values["node"]["enabled"] else 0), "one DaemonSet for the nodes")
    for d in ds:
        spec = pod_spec(d)
        what = f"DaemonSet {d['metadata']['name']}"
        check(spec.get("hostNetwork") is True, f"{what}: not on the node's network")
        check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet", f"{what}: cannot resolve the gateway's Service")
        check(spec.get("priorityClassName") == "system-node-critical", f"{what}: priority class")
        check({"operator": "Exists"} in spec.get("tolerations", []), f"{what}: does not tolerate every taint")
        check(spec.get("automountServiceAccountToken") is False, f"{what}: mounts an API token it does not use")
        vols = {v["name"]: v for v in spec["volumes"]}
        host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
        want = {values["node"]["netnsDir"], values["node"]["dataDir"]}
        if values["node"]["cni"]["enabled"]:
            want |= {values["node"]["cni"]["binDir"], values["node"]["cni"]["confDir"]}
        check(want <= set(host.values()), f"{what}: hostPaths {sorted(host.values())} miss {sorted(want - set(host.values()))}")
        cs = {c["name"]: c for c in spec["initContainers"] + spec["containers"]}
        agent = cs["driver-agent"]
        m = {x["name"]: x for x in agent["volumeMounts"]}
        netns = next(k for k, p in host.items() if p == values["node"]["netnsDir"])
        check(netns in m and m[netns]["mountPath"] == values["node"]["netnsDir"],
              f"{what}: the agent sees {values['node']['netnsDir']} elsewhere")
        prop = m.get(netns, {}).get("mountPropagation")
        check(prop == ("Bidirectional" if values["node"]["privileged"] else "HostToContainer"),
              f"{what}: {values['node']['netnsDir']} propagation {prop}")
        data = next(k for k, p in host.items() if p == values["node"]["dataDir"])
        for c in ("join", "driver-agent", "dns-svc"):
            mm = {x["name"]: x for x in cs[c]["volumeMounts"]}
            check(data in mm and mm[data]["mountPath"] == values["node"]["dataDir"],
                  f"{what}: {c} does not see the node's data directory at its own path")
        broker_a = flag(agent["args"], "--broker-socket")
        broker_d = flag(cs["dns-svc"]["args"], "--broker")
        check(broker_a == broker_d and mounts_cover(agent, broker_a) and mounts_cover(cs["dns-svc"], broker_d),
              f"{what}: agent broker {broker_a} and dns-svc broker {broker_d} do not meet")
        check(flag(agent["args"], "--broker-uid") == str(cs["dns-svc"]["securityContext"]["runAsUser"]),
              f"{what}: the broker serves another uid than dns-svc's")
        check(flag(cs["join"]["args"], "--service-uid") == str(cs["dns-svc"]["securityContext"]["runAsUser"]),
              f"{what}: dns-svc's certificate copies belong to another uid than dns-svc's")
        if values["node"]["cni"]["enabled"]:
            inst = cs["cni-install"]
            mm = {x["mountPath"]: host.get(x["name"]) for x in inst["volumeMounts"]}
            check(mm.get(flag(inst["args"], "--bin-dir")) == values["node"]["cni"]["binDir"],
                  f"{what}: weft-cni lands in {flag(inst['args'], '--bin-dir')}, not the node's {values['node']['cni']['binDir']}")
            check(mm.get(flag(inst["args"], "--conf-dir")) == values["node"]["cni"]["confDir"],
                  f"{what}: the conflist lands elsewhere than the node's {values['node']['cni']['confDir']}")
            tok = cs["cni-token"]
            tm = {x["mountPath"]: host.get(x["name"]) for x in tok["volumeMounts"]}
            dest = tok["command"][-1]
            check(os.path.join(tm.get(os.path.dirname(dest), "?"), os.path.basename(dest)) == values["node"]["cni"]["tokenFile"]
                  == flag(inst["args"], "--cni-token-file"),
                  f"{what}: the CNI token is written to {dest}, the conflist names {flag(inst['args'], '--cni-token-file')}")
    # Only the pki Job has an API token, and its Role only reads one Secret and creates Secrets.
    for r in by.get("Role", {}).values():
        for rule in r["rules"]:
            check(rule["resources"] == ["secrets"] and set(rule["verbs"]) <= {"get", "create"},
                  f"Role {r['metadata']['name']}: more than it uses: {rule}")
    check(not by.get("ClusterRole") and not by.get("ClusterRoleBinding"), "cluster-wide RBAC rendered")

    # Metrics: every service container listens on its own port of its pod's (a node pod's:
    # the node's) address, the port declared on the container.
    if values["metrics"]["enabled"]:
        want = {"gateway": ("POD_IP", "gateway"), "ipam-svc": ("POD_IP", "ipam"),
                "driver-agent": ("NODE_IP", "agent"), "dns-svc": ("NODE_IP", "dns")}
        seen = set()
        for o in workloads:
            for c in pod_spec(o)["containers"]:
                binary = c["command"][0]
                if binary not in want:
                    continue
                ip, key = want[binary]
                port = values["metrics"]["ports"][key]
                env = {e["name"]: e for e in c.get("env", [])}
                listen = env.get("WEFT_METRICS_LISTEN", {}).get("value")
                check(listen == f"$({ip}):{port}", f"{binary}: metrics listen {listen!r}, not $({ip}):{port}")
                check(ip in env, f"{binary}: no {ip} for its metrics listener")
                ports = [p["containerPort"] for p in c.get("ports", [])]
                check(port in ports, f"{binary}: metrics port {port} not declared ({ports})")
                seen.add(binary)
        expect = {"gateway", "ipam-svc"} | ({"driver-agent", "dns-svc"} if values["node"]["enabled"] else set())
        check(seen == expect, f"metrics listeners on {sorted(seen)}, not {sorted(expect)}")
        ports = list(values["metrics"]["ports"].values())
        check(len(set(ports)) == len(ports), f"metrics ports collide: {ports}")

    for f in failures:
        print(f"FAIL {f}")
    print(f"{passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
