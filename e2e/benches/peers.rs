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

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::TryStreamExt as _;
use netlink_packet_route::link::LinkAttribute;
use serde_json::{Value, json};
use weft_proto::gateway::v1 as pb;
use weft_testkit::netns::{TestNs, run};

type Sandboxes = pb::sandbox_service_client::SandboxServiceClient<tonic::transport::Channel>;

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
    // The whole process (and every thread and child it makes from now on) lives in the
    // namespace playing the host: the peers' processes start there directly.
    enter(&host.path);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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

/// Moves this (still single-threaded) process into the namespace at `path`.
fn enter(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    weft_runtime::netns::enter(&f).unwrap();
    run("ip", &["link", "set", "lo", "up"]);
}

// ----------------------------------------------------------------------------------------------
// Weft

async fn weft_rows(host: &TestNs, bins: &Path, n: usize, report: &mut Report) {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("weft-up.log");
    let mut up = Command::new(bins.join("weft"))
        .args(["up", "--netns", &host.name, "--data-dir"])
        .arg(data.path().join("weft-data"))
        .arg("--bin-dir")
        .arg(bins)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let result = weft_measure(n, report).await;
    // SIGTERM by PID; weft up stops its services and the agent removes what it made.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(up.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = up.wait();
    if let Err(e) = result {
        panic!(
            "weft: {e}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

async fn weft_measure(n: usize, report: &mut Report) -> Result<(), String> {
    let addr = "127.0.0.1:7700".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        if weft::health::serving(addr, None).await
            && let Ok(c) = weft::health::channel(addr, None).await
        {
            break c;
        }
        if Instant::now() > deadline {
            return Err("the gateway did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_host_up(channel.clone()).await?;
    let mut nets = pb::network_service_client::NetworkServiceClient::new(channel.clone());
    nets.create_network(pb::CreateNetworkRequest {
        name: "bench".into(),
        ipam: Some(pb::Ipam {
            configs: vec![pb::IpamConfig {
                subnet: "10.88.0.0/16".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create network: {e}"))?;
    let mut sb = Sandboxes::new(channel);
    let links = Links::new().await;

    // Warm-up (not counted): first connections, first table writes.
    for i in 0..5 {
        let name = format!("warm-{i}");
        create(&mut sb, &name, None).await?;
        delete(&mut sb, &name).await?;
    }

    for with_port in [false, true] {
        let mut created = Vec::new();
        let mut veths = Vec::new();
        for i in 0..n {
            let name = format!("s{}-{i}", u8::from(with_port));
            let port = with_port.then(|| FIRST_HOST_PORT + u32::try_from(i).unwrap());
            let before = links.names().await;
            let t = create(&mut sb, &name, port).await?;
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
        create(&mut sb, &format!("c-{i}"), None).await?;
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

async fn wait_host_up(channel: tonic::transport::Channel) -> Result<(), String> {
    let mut hosts = pb::host_service_client::HostServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = hosts.list_hosts(pb::ListHostsRequest::default()).await
            && r.into_inner()
                .hosts
                .iter()
                .any(|h| h.state == pb::HostState::Up as i32)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("no host came up".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(sb: &mut Sandboxes, name: &str, port: Option<u32>) -> Result<Duration, String> {
    let req = pb::CreateSandboxRequest {
        name: name.into(),
        networks: vec![pb::NetworkAttachment {
            network: "bench".into(),
            settings: None,
        }],
        port_mappings: port
            .map(|p| pb::PortMapping {
                host_port: p,
                container_port: 80,
                protocol: pb::Protocol::Tcp as i32,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let t = Instant::now();
    sb.create_sandbox(req)
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    Ok(t.elapsed())
}

async fn delete(sb: &mut Sandboxes, name: &str) -> Result<Duration, String> {
    let t = Instant::now();
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: name.into(),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("delete {name}: {e}"))?;
    Ok(t.elapsed())
}

/// The link names of this (the host) namespace, over one netlink socket.
struct Links {
    handle: rtnetlink::Handle,
}

impl Links {
    async fn new() -> Self {
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        Self { handle }
    }

    async fn names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.unwrap() {
            for a in msg.attributes {
                if let LinkAttribute::IfName(n) = a {
                    out.insert(n);
                }
            }
        }
        out
    }
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
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        self.load.push((when.into(), l.trim().to_owned()));
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

/// Nearest-rank percentile of sorted times.
fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
