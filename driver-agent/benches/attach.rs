//! Attach and Detach latency (p50, p99) of the real `driver-agent` binary through its gRPC API
//! (`weft.agent.v1.AgentService`), for sandboxes on one bridge network, next to the cost of the
//! same kernel work done by `ip -batch` (what a CLI-based plugin pays, process included).
//!
//! Everything happens inside namespaces the benchmark creates: one plays the host (the agent
//! runs with `--netns` on it), the sandboxes get their own. All of them are deleted at the end,
//! also when the benchmark fails (a guard scans `/run/netns` for this run's names).
//!
//! Agent side, per sandbox: CreateSandbox (the agent creates the sandbox's namespace), Attach
//! (veth pair into the bridge, address, default route); then, per sandbox, Detach and
//! RemoveSandbox. One client, one call at a time; EnsureNetwork once before.
//!
//! `ip` side, per sandbox, the same kernel work (netns add, veth with its peer in the new
//! namespace, master bridge, up, address, default route), timed from spawning `ip` to its exit:
//! - one batch file: the sandbox-side lines go through `netns exec NS ip …` (one extra
//!   process each), since a batch cannot switch namespaces otherwise;
//! - two batch files (the cheapest CLI way): `ip -batch` for the host side, then
//!   `ip -n NS -batch` for the sandbox side.
//!
//! Run: `cargo bench -p driver-agent --bench attach` (or `bash bench/agent.sh`); needs root.
//! Knob: `WEFT_BENCH_SANDBOXES` (default 200).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use driver_agent::netns;
use weft_proto::agent::v1::{self as pb, agent_service_client::AgentServiceClient};
use weft_testkit::ServiceProcess;

type Client = AgentServiceClient<tonic::transport::Channel>;

/// This run's namespaces: the host one, and every namespace whose name starts with one of
/// `prefixes` (the sandboxes, the agent's own "weft-<sandbox id>" ones). Deleted on drop.
struct Namespaces {
    host: String,
    host_path: PathBuf,
    prefixes: Vec<String>,
}

impl Namespaces {
    fn new(run: &str) -> Self {
        let host = format!("wft-bench-{run}");
        let host_path = netns::create_named(&host).expect("create the host namespace");
        Self {
            prefixes: vec![format!("wft-bench-{run}-"), format!("weft-wb{run}-")],
            host,
            host_path,
        }
    }

    /// Deletes the sandbox namespaces of this run (not the host one).
    fn delete_sandboxes(&self) {
        let Ok(dir) = std::fs::read_dir(netns::NETNS_DIR) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
                && let Err(e) = netns::delete_named(&name)
            {
                println!("cannot delete namespace {name}: {e}");
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.delete_sandboxes();
        if let Err(e) = netns::delete_named(&self.host) {
            println!("cannot delete namespace {}: {e}", self.host);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints one row: p50 and p99 of `v` (sorted here).
fn row(what: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = percentile(&v, 0.5);
    println!(
        "{what:<44} {:>8.2}ms {:>8.2}ms",
        ms(p50),
        ms(percentile(&v, 0.99))
    );
    p50
}

/// The `i`-th address of a /16 whose first two octets are `prefix`, skipping .0 and the gateway.
fn address(prefix: &str, i: usize) -> String {
    let n = i + 2;
    format!("{prefix}.{}.{}/16", n / 250, n % 250)
}

fn network(run: &str) -> pb::NetworkSpec {
    pb::NetworkSpec {
        network_id: format!("wbnet-{run}"),
        name: "bench".into(),
        driver: pb::Driver::Bridge as i32,
        subnets: vec![pb::Subnet {
            cidr: "10.200.0.0/16".into(),
            gateway: "10.200.0.1".into(),
        }],
        enable_ipv4: true,
        // What the gateway sends for a network created without options (Docker's defaults).
        enable_icc: true,
        enable_ip_masquerade: true,
        ..Default::default()
    }
}

/// Per sandbox: (CreateSandbox, Attach, Detach, RemoveSandbox) latencies.
struct AgentTimes {
    create: Vec<Duration>,
    attach: Vec<Duration>,
    detach: Vec<Duration>,
    remove: Vec<Duration>,
}

/// `ports`: each endpoint publishes one TCP port (host port 20000 + i to 80).
async fn agent_run(client: &mut Client, run: &str, n: usize, ports: bool) -> AgentTimes {
    let net = network(run);
    client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap();
    let mut t = AgentTimes {
        create: Vec::with_capacity(n),
        attach: Vec::with_capacity(n),
        detach: Vec::with_capacity(n),
        remove: Vec::with_capacity(n),
    };
    let mut attached = Vec::with_capacity(n);
    for i in 0..n {
        let sandbox_id = format!("wb{run}-{i}");
        let start = Instant::now();
        let sb = client
            .create_sandbox(pb::CreateSandboxRequest {
                sandbox: Some(pb::SandboxSpec {
                    sandbox_id: sandbox_id.clone(),
                    name: sandbox_id.clone(),
                    hostname: sandbox_id.clone(),
                    resolv_conf: "nameserver 10.200.0.1\n".into(),
                    hosts: format!(
                        "127.0.0.1 localhost\n{} {sandbox_id}\n",
                        address("10.200", i)
                    ),
                    ..Default::default()
                }),
                revision: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        t.create.push(start.elapsed());
        let endpoint_id = format!("e{i:04}{run}");
        let spec = pb::EndpointSpec {
            endpoint_id: endpoint_id.clone(),
            network_id: net.network_id.clone(),
            sandbox_id: sandbox_id.clone(),
            netns_path: sb.netns_path.clone(),
            ipv4_address: address("10.200", i),
            ipv4_gateway: "10.200.0.1".into(),
            default_route_v4: true,
            port_mappings: if ports {
                vec![pb::PortMapping {
                    protocol: pb::Protocol::Tcp as i32,
                    host_ip: String::new(),
                    host_port: u32::try_from(20_000 + i).unwrap(),
                    container_port: 80,
                    range: 1,
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let start = Instant::now();
        let done = client
            .attach(pb::AttachRequest {
                endpoint: Some(spec),
                network: Some(net.clone()),
                revision: 0,
            })
            .await
            .unwrap()
            .into_inner();
        t.attach.push(start.elapsed());
        assert_eq!(done.default_route_v4_endpoint_id, endpoint_id);
        attached.push((sandbox_id, endpoint_id, sb.netns_path));
    }
    for (sandbox_id, endpoint_id, netns_path) in attached {
        let start = Instant::now();
        let done = client
            .detach(pb::DetachRequest {
                endpoint_id,
                network_id: net.network_id.clone(),
                sandbox_id: sandbox_id.clone(),
                netns_path: netns_path.clone(),
                revision: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        t.detach.push(start.elapsed());
        assert!(done.failures.is_empty(), "{done:?}");
        let start = Instant::now();
        let done = client
            .remove_sandbox(pb::RemoveSandboxRequest {
                sandbox_id,
                netns_path,
                revision: 0,
            })
            .await
            .unwrap()
            .into_inner();
        t.remove.push(start.elapsed());
        assert!(done.failures.is_empty(), "{done:?}");
    }
    client
        .remove_network(pb::RemoveNetworkRequest {
            network_id: net.network_id.clone(),
            revision: 0,
        })
        .await
        .unwrap();
    t
}

/// Runs `ip ARGS` from a thread inside the host namespace (the process inherits it) and returns
/// the wall time from spawn to exit.
fn run_ip(args: &[String]) -> Duration {
    let start = Instant::now();
    let out = Command::new("ip").args(args).output().expect("run ip");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "ip {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The same kernel work as the agent's, by `ip -batch`, per sandbox; `two_files` picks the
/// variant (see the module documentation). Returns per-sandbox wall times.
async fn ip_run(
    ns: &Namespaces,
    run: &str,
    n: usize,
    two_files: bool,
    dir: &Path,
) -> Vec<Duration> {
    let bridge = "wbip0";
    let setup = [
        format!("link add {bridge} type bridge"),
        format!("addr add 10.201.0.1/16 dev {bridge}"),
        format!("link set {bridge} up"),
    ];
    std::fs::write(dir.join("bridge.batch"), setup.join("\n") + "\n").unwrap();
    let args = vec![
        "-batch".to_owned(),
        dir.join("bridge.batch").display().to_string(),
    ];
    netns::run_in(&ns.host_path, move || run_ip(&args))
        .await
        .unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let sb = format!("wft-bench-{run}-{}{i}", if two_files { "b" } else { "a" });
        let veth = format!("wbv{}{i}", if two_files { "b" } else { "a" });
        let addr = address("10.201", i);
        let host_lines = [
            format!("netns add {sb}"),
            format!("link add {veth} type veth peer name eth0 netns {sb}"),
            format!("link set {veth} master {bridge} up"),
        ];
        let sandbox_lines = [
            "link set lo up".to_owned(),
            "link set eth0 up".to_owned(),
            format!("addr add {addr} dev eth0"),
            "route add default via 10.201.0.1".to_owned(),
        ];
        let host_file = dir.join(format!("{sb}.host.batch"));
        let mut runs = Vec::new();
        if two_files {
            let sb_file = dir.join(format!("{sb}.sandbox.batch"));
            std::fs::write(&host_file, host_lines.join("\n") + "\n").unwrap();
            std::fs::write(&sb_file, sandbox_lines.join("\n") + "\n").unwrap();
            runs.push(vec!["-batch".to_owned(), host_file.display().to_string()]);
            runs.push(vec![
                "-n".to_owned(),
                sb.clone(),
                "-batch".to_owned(),
                sb_file.display().to_string(),
            ]);
        } else {
            let lines: Vec<String> = host_lines
                .into_iter()
                .chain(
                    sandbox_lines
                        .iter()
                        .map(|l| format!("netns exec {sb} ip {l}")),
                )
                .collect();
            std::fs::write(&host_file, lines.join("\n") + "\n").unwrap();
            runs.push(vec!["-batch".to_owned(), host_file.display().to_string()]);
        }
        let took = netns::run_in(&ns.host_path, move || {
            runs.iter().map(|a| run_ip(a)).sum::<Duration>()
        })
        .await
        .unwrap();
        times.push(took);
    }
    // Untimed teardown: the sandboxes' namespaces take their veth pairs with them.
    ns.delete_sandboxes();
    let args = vec!["link".to_owned(), "del".to_owned(), bridge.to_owned()];
    netns::run_in(&ns.host_path, move || run_ip(&args))
        .await
        .unwrap();
    times
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("WEFT_BENCH_SANDBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    // Declared first, dropped last: after the agent process is killed.
    let ns = Namespaces::new(&run);
    let data = tempfile::tempdir().unwrap();
    let agent = ServiceProcess::start(
        env!("CARGO_BIN_EXE_driver-agent"),
        &[
            "--insecure-plaintext".to_owned(),
            "--netns".to_owned(),
            ns.host_path.display().to_string(),
            "--data-dir".to_owned(),
            data.path().display().to_string(),
        ],
    )
    .await;
    let mut client = AgentServiceClient::new(weft_testkit::channel(agent.addr));
    println!(
        "driver-agent over gRPC vs ip -batch: {n} sandboxes on one bridge network, one at a time \
         (agent: release binary, --netns {})",
        ns.host_path.display()
    );
    println!("{:<44} {:>10} {:>10}", "", "p50", "p99");
    let t = agent_run(&mut client, &run, n, false).await;
    // With one published port each, the cost as the host fills up: the first 100 attaches and
    // the last 100 of `WEFT_BENCH_PORT_SANDBOXES` (default 1,000).
    let np: usize = std::env::var("WEFT_BENCH_PORT_SANDBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
        .max(200);
    let tp = agent_run(&mut client, &format!("{run}p"), np, true).await;
    drop(client);
    drop(agent);
    let create_attach: Vec<Duration> = t
        .create
        .iter()
        .zip(&t.attach)
        .map(|(c, a)| *c + *a)
        .collect();
    let attach_p50 = row("agent Attach", t.attach);
    row("agent Detach", t.detach);
    row("agent CreateSandbox (creates the netns)", t.create);
    row("agent RemoveSandbox (deletes the netns)", t.remove);
    let agent_full = row("agent CreateSandbox + Attach", create_attach);
    println!("with one published TCP port each, {np} sandboxes:");
    row("agent Attach, sandboxes 1-100", tp.attach[..100].to_vec());
    row(
        &format!("agent Attach, sandboxes {}-{np}", np - 99),
        tp.attach[np - 100..].to_vec(),
    );
    row(
        "agent Detach (first 100 detached)",
        tp.detach[..100].to_vec(),
    );
    row("agent Detach (all)", tp.detach);
    row("agent RemoveSandbox (all)", tp.remove);

    let dir = tempfile::tempdir().unwrap();
    let one = ip_run(&ns, &run, n, false, dir.path()).await;
    let two = ip_run(&ns, &run, n, true, dir.path()).await;
    let one_p50 = row("ip -batch, one file (netns exec per line)", one);
    let two_p50 = row("ip -batch, two files (host, then -n NS)", two);
    println!(
        "agent CreateSandbox + Attach p50 vs ip -batch p50: {:.2}x the one-file figure, \
         {:.2}x the two-file figure; agent Attach p50 {:.2}ms (goal: at most 3ms)",
        agent_full.as_secs_f64() / one_p50.as_secs_f64(),
        agent_full.as_secs_f64() / two_p50.as_secs_f64(),
        ms(attach_p50),
    );
}
