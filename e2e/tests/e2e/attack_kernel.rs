//! Attacks on the host's kernel through the driver-agent's side of Weft (security issue 11,
//! classes 1 and 2), against `weft up` in a namespace playing the host: each one fails, and
//! [`Bystanders::check`] shows that nothing that was there is lost.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use driver_agent::netns;
use serde_json::Value;

use crate::{
    intact::{Bystanders, SERVICE_PORTS},
    world::{Weft, World, run, tcp_eventually, violated_fields, who_is_server},
};

/// A port of the test's own on the host's loopback (IPv4 and IPv6).
const OWN_PORT: u16 = 17001;
/// The host port `web` publishes on 127.0.0.1 only.
const PUBLISHED: u16 = 18080;
/// dns-svc's operator DNS listener (UDP and TCP).
const OPERATOR_DNS: u16 = 5353;

/// Whether a TCP handshake from inside `ns` to `to` completes (nothing else is asked of the
/// server: a gRPC port says nothing until spoken to).
async fn handshake(ns: &Path, to: SocketAddr, timeout: Duration) -> bool {
    netns::run_in(ns, move || TcpStream::connect_timeout(&to, timeout).is_ok())
        .await
        .expect("enter namespace")
}

/// A command inside the namespace at `path` (the attacker's own setup), which must succeed.
fn inside(path: &str, cmd: &[&str]) {
    let mut args = vec![format!("--net={path}")];
    args.extend(cmd.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("nsenter", &refs);
}

/// The packets the loopback guard has dropped so far (its `ip daddr 127.0.0.0/8` rule).
fn guard_drops(w: &World) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &w.host.name])
        .args(["nft", "-j", "list", "chain", "inet", "weft", "loopback"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the loopback guard's chain is missing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .filter(|e| {
            e.iter().any(|s| {
                s["match"]["left"]["payload"]
                    == serde_json::json!({"protocol": "ip", "field": "daddr"})
            })
        })
        .flat_map(|e| e.iter().filter_map(|s| s["counter"]["packets"].as_u64()))
        .sum()
}

fn gateways(w: &World, network: &str) -> (String, String) {
    let net = w.network(network);
    let configs = net["ipam"]["configs"].as_array().unwrap();
    let gw = |v6: bool| {
        configs
            .iter()
            .filter_map(|c| c["gateway"].as_str())
            .find(|g| g.contains(':') == v6)
            .unwrap_or_else(|| panic!("no gateway in {net}"))
            .to_owned()
    };
    (gw(false), gw(true))
}

fn ipv4_of(sb: &Value) -> String {
    sb["endpoints"][0]["ipv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// CVE-2020-8558: a sandbox that routes the host's loopback through its gateway reaches none
/// of it; published ports on 127.0.0.1 still answer from the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_a_sandbox_routing_loopback_via_its_gateway_reaches_nothing_of_the_hosts() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    let mut by = Bystanders::new(&w).await;

    // What the host serves on its loopback: the services of `weft up`, and the test's own
    // listeners on 127.0.0.1 and ::1.
    who_is_server(&w.host.path, SocketAddr::from(([127, 0, 0, 1], OWN_PORT))).await;
    who_is_server(
        &w.host.path,
        SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), OWN_PORT),
    )
    .await;
    w.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.78.0.0/24",
        "--subnet",
        "fd42:78::/64",
        "atk-net",
    ]);
    // A port published on 127.0.0.1 only: for the host, not for anyone on a bridge.
    w.ok(&[
        "sandbox",
        "create",
        "web",
        "--network",
        "atk-net",
        "-p",
        &format!("127.0.0.1:{PUBLISHED}:80"),
    ]);
    let web = w.sandbox("web");
    who_is_server(
        Path::new(web["netnsPath"].as_str().unwrap()),
        SocketAddr::new(ipv4_of(&web).parse().unwrap(), 80),
    )
    .await;
    w.ok(&["sandbox", "create", "attacker", "--network", "atk-net"]);
    let attacker = w.sandbox("attacker")["netnsPath"]
        .as_str()
        .unwrap()
        .to_owned();
    let atk = Path::new(&attacker);

    let v4 = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = |port| SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), port);
    let mut targets: Vec<SocketAddr> = SERVICE_PORTS
        .iter()
        .chain(&[OPERATOR_DNS, OWN_PORT, PUBLISHED])
        .map(|p| v4(*p))
        .collect();
    targets.push(v6(OWN_PORT));
    // Every target is served: from the host itself, each one answers.
    for to in &targets {
        assert!(
            handshake(&w.host.path, *to, Duration::from_secs(2)).await,
            "the host does not serve {to} to itself"
        );
    }
    let got = tcp_eventually(&w.host.path, v4(PUBLISHED)).await;
    assert!(got.starts_with("from "), "{got}");

    // The attacker's own setup, inside its own namespace: no loopback of its own, loopback
    // addresses allowed on eth0, and 127.0.0.1 and ::1 routed via the gateway.
    let (gw4, gw6) = gateways(&w, "atk-net");
    inside(
        &attacker,
        &["ip", "addr", "del", "127.0.0.1/8", "dev", "lo"],
    );
    inside(
        &attacker,
        &["ip", "-6", "addr", "del", "::1/128", "dev", "lo"],
    );
    inside(
        &attacker,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.route_localnet=1",
            "net.ipv4.conf.eth0.route_localnet=1",
        ],
    );
    inside(
        &attacker,
        &[
            "ip",
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            &gw4,
            "dev",
            "eth0",
        ],
    );
    inside(
        &attacker,
        &[
            "ip", "-6", "route", "add", "::1/128", "via", &gw6, "dev", "eth0",
        ],
    );
    for (family, addr) in [("-4", "127.0.0.1"), ("-6", "::1")] {
        let out = Command::new("nsenter")
            .arg(format!("--net={attacker}"))
            .args(["ip", family, "route", "get", addr])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("via") && text.contains("dev eth0"),
            "the attacker's route to {addr} does not go via its gateway: {text}"
        );
    }
    by.baseline(&w);

    // The attack: a TCP connection to every port the host serves on its loopback.
    let attempts = targets
        .iter()
        .map(|to| async move { (*to, handshake(atk, *to, Duration::from_secs(2)).await) });
    let reached: Vec<SocketAddr> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|(to, ok)| ok.then_some(to))
        .collect();
    assert!(
        reached.is_empty(),
        "the sandbox reached the host's loopback at {reached:?}"
    );
    // The attack did reach the host and was dropped there by the guard (not lost on the
    // way): its counter moved. (The agent rewrites the table, counters included, at each
    // reconciliation: attack again until one is seen.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while guard_drops(&w) == 0 {
        assert!(
            Instant::now() < deadline,
            "the loopback guard never saw the attacker's packets"
        );
        assert!(!handshake(atk, v4(SERVICE_PORTS[0]), Duration::from_millis(300)).await);
    }

    // Published ports on 127.0.0.1 still answer from the host.
    let got = tcp_eventually(&w.host.path, v4(PUBLISHED)).await;
    assert!(got.starts_with("from "), "{got}");
    by.check(&w).await;
}

/// The PID of `weft up`'s driver-agent (a child of weft: nsenter execs it in place).
fn agent_pid(weft: &Weft) -> u32 {
    let parent = weft.pid();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid …"
            let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
            else {
                return false;
            };
            comm == "driver-agent"
                && rest.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .expect("the driver-agent of this weft up")
}

/// Caller-chosen namespace paths: the host's own namespace, the agent's, pid 1's, files that
/// are no namespace (a FIFO that would block the opener, a device, a regular file), links and
/// `..` out of an allowed place, places that are not allowed: each CreateSandbox is
/// INVALID_ARGUMENT naming netns_path and the path, and leaves no sandbox behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_create_sandbox_refuses_hostile_netns_paths_and_keeps_nothing() {
    let w = World::new().await;
    // A directory of the test's own among the allowed places, for hostile files in one.
    let allowed = tempfile::tempdir().unwrap();
    let dir = allowed.path().to_str().unwrap().to_owned();
    let places = format!("/run/netns,/var/run/netns,/proc/<pid>/ns/net,{dir}");
    let weft = Weft::up_with_env(&w, &[("WEFT_AGENT_NETNS_ALLOW", &places)]).await;
    let mut by = Bystanders::new(&w).await;

    nix::unistd::mkfifo(
        allowed.path().join("fifo").as_path(),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    std::fs::write(allowed.path().join("plain"), "x").unwrap();
    std::os::unix::fs::symlink("/proc/1/ns/net", allowed.path().join("to-init")).unwrap();
    std::os::unix::fs::symlink(&w.host.path, allowed.path().join("to-host")).unwrap();
    let hostile = [
        // The namespace the stack manages (here also the agent's own), by every name.
        w.host.path.display().to_string(),
        format!("/proc/{}/ns/net", agent_pid(&weft)),
        "/proc/self/ns/net".into(),
        // The machine's.
        "/proc/1/ns/net".into(),
        "/run/netns/../../proc/1/ns/net".into(),
        format!("{dir}/to-init"),
        format!("{dir}/to-host"),
        // No namespace at all.
        format!("{dir}/fifo"),
        format!("{dir}/plain"),
        "/dev/zero".into(),
        "/etc/passwd".into(),
        "/proc/1/ns/uts".into(),
        "run/netns/relative".into(),
    ];
    by.baseline(&w);

    for (i, path) in hostile.iter().enumerate() {
        let name = format!("evil-{i}");
        let body = serde_json::json!({
            "name": name,
            "netnsPath": path,
            "networks": [{"network": "by-net"}],
        })
        .to_string();
        let st = w.grpcurl_err("weft.gateway.v1.SandboxService/CreateSandbox", &body);
        assert_eq!(st["code"], 3, "{path}: not INVALID_ARGUMENT: {st}");
        let message = st["message"].as_str().unwrap();
        assert!(
            message.contains("netns_path") && message.contains(path.as_str()),
            "{path}: {message}"
        );
        let fields = violated_fields(&st);
        assert!(
            fields.iter().any(|f| f.ends_with("netns_path")),
            "{path}: no BadRequest detail names netns_path: {st}"
        );
        // Nothing kept: no such sandbox.
        let st = w.grpcurl_err(
            "weft.gateway.v1.SandboxService/GetSandbox",
            &serde_json::json!({ "sandbox": name }).to_string(),
        );
        assert_eq!(st["code"], 5, "{path}: {st}");
    }
    let listed = w.grpcurl("weft.gateway.v1.SandboxService/ListSandboxes", "{}");
    let mut names: Vec<&str> = listed["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["by-client", "by-server"]);
    by.check(&w).await;
}
