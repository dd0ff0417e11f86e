//! What the peer benchmark (`peers.rs`) and the scale benchmark (`scale.rs`) share: entering the
//! namespace that plays the host, `weft up` as a child process, the public API calls they time,
//! the host's links, and percentiles.

// Each benchmark is a crate of its own and uses only a part of this module.
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::TryStreamExt as _;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use weft_proto::gateway::v1 as pb;
use weft_testkit::netns::run;

pub type Sandboxes = pb::sandbox_service_client::SandboxServiceClient<weft_runtime::access::Authed>;
pub type Networks = pb::network_service_client::NetworkServiceClient<weft_runtime::access::Authed>;

/// The gateway's public address (inside the namespace playing the host).
pub const GATEWAY: &str = "127.0.0.1:7700";
/// How long a public API call may take before the benchmark gives up on it.
pub const API_TIMEOUT: Duration = Duration::from_secs(120);

/// Moves this (still single-threaded) process into the namespace at `path`, brings its
/// loopback up, and builds the runtime: the whole process (and every thread and child it makes
/// from then on) lives in that namespace.
pub fn enter(path: &Path) -> tokio::runtime::Runtime {
    let f = std::fs::File::open(path).unwrap();
    weft_runtime::netns::enter(&f).unwrap();
    run("ip", &["link", "set", "lo", "up"]);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `weft up --netns NAME` as a child process, its log in a file; stopped with SIGTERM (by
/// PID) when dropped, also when the benchmark fails.
pub struct WeftUp {
    child: Child,
    pub log: PathBuf,
    /// Dropped after the child has stopped: a run that fails leaves no sandbox namespace.
    _namespaces: weft_testkit::netns::SandboxNamespaces,
}

impl WeftUp {
    /// Starts the stack in the namespace `netns` with its data in `dir`/weft-data.
    pub fn start(bins: &Path, netns: &str, dir: &Path) -> Self {
        let log = dir.join("weft-up.log");
        let child = Command::new(bins.join("weft"))
            .args(["up", "--netns", netns, "--data-dir"])
            .arg(dir.join("weft-data"))
            .arg("--bin-dir")
            .arg(bins)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let namespaces =
            weft_testkit::netns::SandboxNamespaces::of_data_dir(&dir.join("weft-data"));
        Self {
            child,
            log,
            _namespaces: namespaces,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The log so far (for an error message).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WeftUp {
    fn drop(&mut self) {
        // weft up stops its services in reverse order.
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A channel to the gateway once it answers health checks, and once a host is up, with the
/// admin token `weft up` wrote in `data_dir`.
pub async fn gateway_channel(data_dir: &Path) -> Result<weft_runtime::access::Authed, String> {
    let addr = GATEWAY.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !weft::health::serving(addr, None, None).await {
        if Instant::now() > deadline {
            return Err("the gateway did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (Not the health check's channel: its 2 s call timeout is shorter than a slow create.)
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{GATEWAY}"))
        .unwrap()
        .timeout(API_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("connect to the gateway: {e}"))?;
    let bearer = weft_runtime::access::Bearer::from_file(&data_dir.join("admin.token"))
        .map_err(|e| e.to_string())?;
    let channel = bearer.on(channel);
    wait_host_up(channel.clone()).await?;
    Ok(channel)
}

async fn wait_host_up(channel: weft_runtime::access::Authed) -> Result<(), String> {
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

/// A bridge network `name` on `subnet`.
pub async fn create_network(nets: &mut Networks, name: &str, subnet: &str) -> Result<(), String> {
    nets.create_network(pb::CreateNetworkRequest {
        name: name.into(),
        ipam: Some(pb::Ipam {
            configs: vec![pb::IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create network {name}: {e}"))?;
    Ok(())
}

/// `CreateSandbox` of `name` on `network`, with TCP `port` published to its port 80 if given:
/// the call's duration and the sandbox.
pub async fn create(
    sb: &mut Sandboxes,
    name: &str,
    network: &str,
    port: Option<u32>,
) -> Result<(Duration, pb::Sandbox), String> {
    let req = pb::CreateSandboxRequest {
        name: name.into(),
        networks: vec![pb::NetworkAttachment {
            network: network.into(),
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
    let created = sb
        .create_sandbox(req)
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    Ok((t.elapsed(), created.into_inner()))
}

/// `DeleteSandbox` of `name`: the call's duration.
pub async fn delete(sb: &mut Sandboxes, name: &str) -> Result<Duration, String> {
    let t = Instant::now();
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: name.into(),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("delete {name}: {e}"))?;
    Ok(t.elapsed())
}

/// The veths of this process's namespace (the host's), by name, over one netlink socket (the
/// bridges are left out: the agent makes a network's bridge with its first endpoint on the
/// host and removes it with its last).
pub struct Links {
    handle: rtnetlink::Handle,
}

impl Links {
    pub async fn new() -> Self {
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        Self { handle }
    }

    pub async fn names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.unwrap() {
            let veth = msg.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(info)
                    if info.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
            });
            out.extend(msg.attributes.into_iter().filter_map(|a| match a {
                LinkAttribute::IfName(n) if veth => Some(n),
                _ => None,
            }));
        }
        out
    }
}

/// The machine's load average (`/proc/loadavg`).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Nearest-rank percentile of sorted times.
pub fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The times sorted (for [`pct`]).
pub fn sorted(times: &[Duration]) -> Vec<Duration> {
    let mut t = times.to_vec();
    t.sort_unstable();
    t
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
