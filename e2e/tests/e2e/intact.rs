//! "Nothing that was there is lost": what every attack test checks after its attack failed.
//!
//! [`Bystanders::new`] puts two sandboxes on a network of their own (one serving TCP), then
//! [`Bystanders::baseline`] notes the host namespace as the kernel sees it. After the attack,
//! [`Bystanders::check`] asserts that the host's links, addresses, routes and nftables are what
//! they were, that one bystander still reaches the other over TCP and resolves its name through
//! 127.0.0.11, and that every service of `weft up` answers its health check.

use std::{net::SocketAddr, path::Path, process::Command};

use serde_json::Value;

use crate::world::{World, dig, tcp_eventually, who_is_server};

/// The gRPC ports of `weft up`'s services (gateway, ipam-svc, driver-agent, dns-svc admin).
pub const SERVICE_PORTS: [u16; 4] = [7700, 7701, 7702, 7703];
/// The port the serving bystander listens on.
const PORT: u16 = 8000;

/// Two sandboxes, `by-client` and `by-server`, on the network `by-net`.
pub struct Bystanders {
    client_netns: String,
    server_ip: String,
    baseline: String,
}

impl Bystanders {
    pub async fn new(w: &World) -> Self {
        w.ok(&["network", "create", "by-net"]);
        w.ok(&["sandbox", "create", "by-server", "--network", "by-net"]);
        w.ok(&["sandbox", "create", "by-client", "--network", "by-net"]);
        let server = w.sandbox("by-server");
        let server_ip = first_v4(&server);
        who_is_server(
            Path::new(server["netnsPath"].as_str().unwrap()),
            at(&server_ip, PORT),
        )
        .await;
        let client_netns = w.sandbox("by-client")["netnsPath"]
            .as_str()
            .unwrap()
            .to_owned();
        let me = Self {
            client_netns,
            server_ip,
            baseline: String::new(),
        };
        me.reachable().await;
        me
    }

    /// Notes the host namespace as it is now: what [`Bystanders::check`] compares with. Take it
    /// after the attacker's own legitimate setup, right before the attack.
    pub fn baseline(&mut self, w: &World) {
        self.baseline = w.host_snapshot();
    }

    /// Asserts that the attack changed nothing: the host as at the baseline, the bystanders
    /// talking and resolving, every service healthy.
    pub async fn check(&self, w: &World) {
        assert!(
            !self.baseline.is_empty(),
            "Bystanders::baseline was not taken"
        );
        assert_eq!(
            w.host_snapshot(),
            self.baseline,
            "the host namespace changed"
        );
        self.reachable().await;
        let (status, answers) = dig(&self.client_netns, "127.0.0.11", "by-server");
        assert_eq!(
            (status.as_str(), answers),
            ("NOERROR", vec![self.server_ip.clone()]),
            "by-client no longer resolves by-server"
        );
        for port in SERVICE_PORTS {
            assert_healthy(w, port);
        }
    }

    async fn reachable(&self) {
        let got = tcp_eventually(Path::new(&self.client_netns), at(&self.server_ip, PORT)).await;
        assert!(got.starts_with("from "), "{got}");
    }
}

/// grpc.health.v1 on `127.0.0.1:port` inside the host namespace answers SERVING: the
/// gateway's public listener in plaintext, the other services over TLS (verified against the
/// stack's CA, no client certificate: their health is open).
pub fn assert_healthy(w: &World, port: u16) {
    let ca = w
        .token_file
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|t| t.parent().map(|d| d.join("pki").join("ca.crt")))
        .expect("weft up is running");
    let ca = ca.display().to_string();
    let transport: &[&str] = if port == SERVICE_PORTS[0] {
        &["-plaintext"]
    } else {
        &["-cacert", &ca]
    };
    let out = Command::new("ip")
        .args(["netns", "exec", &w.host.name])
        .arg(weft_testkit::grpcurl())
        .args(transport)
        .args([
            "-d",
            "{}",
            &format!("127.0.0.1:{port}"),
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("SERVING"),
        "the service on port {port} is not healthy: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn first_v4(sb: &Value) -> String {
    sb["endpoints"][0]["ipv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}
