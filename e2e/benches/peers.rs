//! The peer benchmark: attaching N containers to one bridge network with Weft (through its public
//! API, with IPAM, the agent and DNS all real), with netavark, and with the CNI `bridge` plugin
//! (+ `host-local`, + `portmap` for the port rows), in one run on one machine.
//!
//! Run it with `bash bench/peers.sh [N]` (installs the peers, builds the release binaries). Every
//! tool works inside one fresh namespace that plays the host (this process enters it first, so the
//! peers' processes are started exactly as a runtime would start them, with no `nsenter` in
//! between); each container is a fresh namespace. What is timed, per container:
//!
//! | row | Weft | netavark | CNI |
//! |---|---|---|---|
//! | create+attach | `CreateSandbox` with one network (Weft makes the namespace) | `netavark setup` (namespace made beforehand, addresses given, as Podman does) | ADD through the chain (namespace made beforehand) |
//! | … with one published TCP port | the same with `port_mappings` | `port_mappings` | `portmap` chained |
//! | detach/delete | `DeleteSandbox` | `netavark teardown` | DEL through the chain |
//! | Connect / Disconnect | on an existing sandbox | — | — |
//!
//! Peers are timed without namespace creation (an advantage to them), Weft with it. After each
//! `DeleteSandbox` the benchmark also measures how long until the sandbox's host-side veth is gone
//! from the kernel ("gone after"). No test asserts a time: this prints figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Links, Sandboxes, create, delete, ms, pct};
use serde_json::{Value, json};
use weft_proto::gateway::v1 as pb;
use weft_testkit::netns::{TestNs, run};

const NETAVARK: &str = "/usr/lib/podman/netavark";
const CNI_PATH: &str = "/usr/lib/cni";
const FIRST_HOST_PORT: u32 = 20_000;

fn main() {
    let n: usize = std::env::var("WEFT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let bins = PathBuf::from(std::env::var("WEFT_BENCH_BINS").expect("WEFT_BENCH_BINS"));
    let host = TestNs::named("pb-host");
    // (The peers' processes start in the host's namespace directly.)
    let rt = common::enter(&host.path);
    let report = rt.block_on(async {
        let mut report = Report::default();
        report.load("start");
        weft_rows(&host, &bins, n, &mut report).await;
        // WEFT_BENCH_PEERS=0: Weft's rows only (while working on Weft; the comparison needs them).
        if std::env::var("WEFT_BENCH_PEERS").as_deref() != Ok("0") {
            netavark_rows(n, &mut report);
            cni_rows(n, &mut report);
        }
        report.load("end");
        report
    });
    report.print(n);
}

// ----------------------------------------------------------------------------------------------
// Weft

async fn weft_rows(host: &TestNs, bins: &Path, n: usize, report: &mut Report) {
    let data = tempfile::tempdir().unwrap();
    let up = common::WeftUp::start(bins, &host.name, data.path());
    let measured = weft_measure(n, &data.path().join("weft-data"), report).await;
    // WEFT_BENCH_KEEP_LOGS=DIR keeps the services' logs (their per-step timings:
    // bench/steps.py), as bench/scale.sh does.
    if let Ok(keep) = std::env::var("WEFT_BENCH_KEEP_LOGS") {
        keep_logs(&data.path().join("weft-data/logs"), Path::new(&keep));
    }
    if let Err(e) = measured {
        panic!("weft: {e}\n{}", up.log_text());
    }
    // Dropping `up` stops it (SIGTERM by PID): weft up stops its services.
}

async fn weft_measure(n: usize, data_dir: &Path, report: &mut Report) -> Result<(), String> {
    let channel = common::gateway_channel(data_dir).await?;
    let mut nets = pb::network_service_client::NetworkServiceClient::new(channel.clone());
    common::create_network(&mut nets, "bench", "10.88.0.0/16").await?;
    let mut sb = Sandboxes::new(channel);
    let links = Links::new().await;

    // Warm-up (not counted): first connections, first table writes.
    for i in 0..5 {
        let name = format!("warm-{i}");
        create(&mut sb, &name, "bench", None).await?;
        delete(&mut sb, &name).await?;
    }

    for with_port in [false, true] {
        let mut created = Vec::new();
        let mut veths = Vec::new();
        for i in 0..n {
            let name = format!("s{}-{i}", u8::from(with_port));
            let port = with_port.then(|| FIRST_HOST_PORT + u32::try_from(i).unwrap());
            let before = links.names().await;
            let (t, _) = create(&mut sb, &name, "bench", port).await?;
            created.push(t);
            let after = links.names().await;
            veths.push(after.difference(&before).cloned().collect::<Vec<_>>());
        }
        let mut deleted = Vec::new();
        let mut gone = Vec::new();
        for (i, veth) in veths.iter().enumerate() {
            let name = format!("s{}-{i}", u8::from(with_port));
            deleted.push(delete(&mut sb, &name).await?);
            gone.push(gone_after(&links, veth).await?);
        }
        let what = if with_port { " (1 port)" } else { "" };
        report.row("weft", &format!("create+attach{what}"), created);
        report.row("weft", &format!("DeleteSandbox{what}"), deleted);
        report.row("weft", &format!("veth gone after delete{what}"), gone);
    }

    // Connect / Disconnect on sandboxes that exist.
    for i in 0..n {
        create(&mut sb, &format!("c-{i}"), "bench", None).await?;
        sb.disconnect(pb::DisconnectRequest {
            sandbox: format!("c-{i}"),
            network: "bench".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("disconnect: {e}"))?;
    }
    let (mut connects, mut disconnects) = (Vec::new(), Vec::new());
    let mut veths = Vec::new();
    for i in 0..n {
        let before = links.names().await;
        let t = Instant::now();
        sb.connect(pb::ConnectRequest {
            sandbox: format!("c-{i}"),
            network: "bench".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("connect: {e}"))?;
        connects.push(t.elapsed());
        let after = links.names().await;
        veths.push(after.difference(&before).cloned().collect::<Vec<_>>());
    }
    let mut gone = Vec::new();
    for (i, veth) in veths.iter().enumerate() {
        let t = Instant::now();
        sb.disconnect(pb::DisconnectRequest {
            sandbox: format!("c-{i}"),
            network: "bench".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("disconnect: {e}"))?;
        disconnects.push(t.elapsed());
        gone.push(gone_after(&links, veth).await?);
    }
    for i in 0..n {
        delete(&mut sb, &format!("c-{i}")).await?;
    }
    report.row("weft", "Connect", connects);
    report.row("weft", "Disconnect", disconnects);
    report.row("weft", "veth gone after Disconnect", gone);
    Ok(())
}

/// Copies the services' logs into `to` (made if missing).
fn keep_logs(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// How long after the call that removed them the links `veth` are gone from the host.
async fn gone_after(links: &Links, veth: &[String]) -> Result<Duration, String> {
    let t0 = Instant::now();
    while links.names().await.iter().any(|l| veth.contains(l)) {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("{veth:?} still there 10 s after its removal"));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(t0.elapsed())
}

// ----------------------------------------------------------------------------------------------
// netavark

fn netavark_rows(n: usize, report: &mut Report) {
    let config = tempfile::tempdir().unwrap();
    for with_port in [false, true] {
        let mut containers = Vec::new();
        let mut setup = Vec::new();
        for i in 0..n {
            let ns = TestNs::named("pb-nv");
            let opts = netavark_options(i, with_port);
            let t = Instant::now();
            netavark(config.path(), "setup", &ns.path, &opts);
            setup.push(t.elapsed());
            containers.push((ns, opts));
        }
        check_attached(&containers[0].0.path, "eth0");
        let mut teardown = Vec::new();
        for (ns, opts) in &containers {
            let t = Instant::now();
            netavark(config.path(), "teardown", &ns.path, opts);
            teardown.push(t.elapsed());
        }
        let what = if with_port { " (1 port)" } else { "" };
        report.row("netavark", &format!("create+attach{what}"), setup);
        report.row("netavark", &format!("teardown{what}"), teardown);
    }
}

/// Podman's network options for container `i` (addresses assigned by the caller, as Podman's
/// own IPAM does before it calls netavark).
fn netavark_options(i: usize, with_port: bool) -> Value {
    let ip = host_in("10.89.0.0", i + 2);
    let ports: Vec<Value> = if with_port {
        vec![json!({
            "container_port": 80, "host_ip": "", "host_port": 30_000 + i,
            "protocol": "tcp", "range": 1,
        })]
    } else {
        Vec::new()
    };
    json!({
        "container_id": format!("{:064x}", i + 1),
        "container_name": format!("nv-{i}"),
        "port_mappings": ports,
        "networks": {"bench": {"interface_name": "eth0", "static_ips": [ip]}},
        "network_info": {"bench": {
            "dns_enabled": false, "driver": "bridge", "id": format!("{:064x}", 7),
            "internal": false, "ipv6_enabled": false, "name": "bench",
            "network_interface": "nvbench0",
            "subnets": [{"gateway": "10.89.0.1", "subnet": "10.89.0.0/16"}],
        }},
    })
}

fn netavark(config: &Path, verb: &str, ns: &Path, opts: &Value) {
    let mut child = Command::new(NETAVARK)
        .arg("--config")
        .arg(config)
        .arg(verb)
        .arg(ns)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(opts.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "netavark {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----------------------------------------------------------------------------------------------
// CNI: bridge + host-local (+ portmap)

fn cni_rows(n: usize, report: &mut Report) {
    let dir = tempfile::tempdir().unwrap();
    for with_port in [false, true] {
        let list = cni_conflist(&dir.path().join("ipam"), with_port);
        let mut containers = Vec::new();
        let mut add = Vec::new();
        for i in 0..n {
            let ns = TestNs::named("pb-cni");
            let id = format!("cni{}-{i}", u8::from(with_port));
            let rc = json!({"portMappings": [
                {"hostPort": 40_000 + i, "containerPort": 80, "protocol": "tcp"}
            ]});
            let t = Instant::now();
            let result = cni_chain(&list, "ADD", &id, &ns.path, &rc, None);
            add.push(t.elapsed());
            containers.push((ns, id, rc, result));
        }
        check_attached(&containers[0].0.path, "eth0");
        let mut del = Vec::new();
        for (ns, id, rc, result) in &containers {
            let t = Instant::now();
            cni_chain(&list, "DEL", id, &ns.path, rc, Some(result));
            del.push(t.elapsed());
        }
        let what = if with_port { " (1 port)" } else { "" };
        report.row("cni bridge", &format!("create+attach{what}"), add);
        report.row("cni bridge", &format!("DEL{what}"), del);
    }
}

fn cni_conflist(ipam_dir: &Path, with_port: bool) -> Value {
    let mut plugins = vec![json!({
        "type": "bridge", "bridge": "cnibench0", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": ipam_dir,
                 "ranges": [[{"subnet": "10.90.0.0/16"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]},
    })];
    if with_port {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    json!({"cniVersion": "1.0.0", "name": "bench", "plugins": plugins})
}

/// Runs the conflist's plugins as a runtime does (ADD in order, each given the previous result;
/// DEL in reverse order with the cached result); returns the final result.
fn cni_chain(
    list: &Value,
    verb: &str,
    id: &str,
    ns: &Path,
    runtime_config: &Value,
    cached: Option<&Value>,
) -> Value {
    let plugins = list["plugins"].as_array().unwrap();
    let order: Vec<&Value> = if verb == "DEL" {
        plugins.iter().rev().collect()
    } else {
        plugins.iter().collect()
    };
    let mut prev = cached.cloned();
    for p in order {
        let mut conf = p.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if p.get("capabilities").is_some() {
            conf["runtimeConfig"] = runtime_config.clone();
        }
        if let Some(prev) = &prev {
            conf["prevResult"] = prev.clone();
        }
        let plugin = p["type"].as_str().unwrap();
        let mut child = Command::new(Path::new(CNI_PATH).join(plugin))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", ns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{plugin} {verb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if verb == "ADD" {
            prev = Some(serde_json::from_slice(&out.stdout).unwrap());
        }
    }
    prev.unwrap_or(Value::Null)
}

/// Not timed: the container really got an interface with an address.
fn check_attached(ns: &Path, ifname: &str) {
    let out = run(
        "nsenter",
        &[
            &format!("--net={}", ns.display()),
            "ip",
            "-j",
            "-4",
            "addr",
            "show",
            ifname,
        ],
    );
    assert!(out.contains("\"local\""), "{ifname} has no address: {out}");
}

fn host_in(base: &str, i: usize) -> String {
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(base) + u32::try_from(i).unwrap()).to_string()
}

// ----------------------------------------------------------------------------------------------
// Figures

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, Vec<Duration>)>,
    load: Vec<(String, String)>,
}

impl Report {
    fn row(&mut self, tool: &str, what: &str, mut times: Vec<Duration>) {
        times.sort_unstable();
        self.rows.push((tool.into(), what.into(), times));
    }

    fn load(&mut self, when: &str) {
        self.load.push((when.into(), common::load_average()));
    }

    fn print(&self, n: usize) {
        println!("peer benchmark: {n} containers per row, one bridge network, one host");
        for (when, l) in &self.load {
            println!("load average at {when}: {l}");
        }
        println!();
        println!(
            "{:<12} {:<34} {:>10} {:>10} {:>10}",
            "tool", "what", "p50 ms", "p99 ms", "max ms"
        );
        for (tool, what, t) in &self.rows {
            println!(
                "{tool:<12} {what:<34} {:>10.2} {:>10.2} {:>10.2}",
                ms(pct(t, 50)),
                ms(pct(t, 99)),
                ms(t.last().copied().unwrap_or_default())
            );
        }
        let fastest_peer = |what: &str| {
            self.rows
                .iter()
                .filter(|(tool, w, _)| tool != "weft" && w == what)
                .map(|(_, _, t)| pct(t, 50))
                .min()
        };
        let weft = |what: &str| {
            self.rows
                .iter()
                .find(|(tool, w, _)| tool == "weft" && w == what)
                .map(|(_, _, t)| pct(t, 50))
        };
        println!();
        for what in ["create+attach", "create+attach (1 port)"] {
            if let (Some(w), Some(p)) = (weft(what), fastest_peer(what)) {
                println!(
                    "{what}: Weft p50 {:.2} ms, fastest peer p50 {:.2} ms: Weft {:.1}x faster",
                    ms(w),
                    ms(p),
                    p.as_secs_f64() / w.as_secs_f64()
                );
            }
        }
    }
}
