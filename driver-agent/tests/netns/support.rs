//! Namespaces that clean up after themselves, the kernel's view through `ip -j`, and TCP
//! traffic from inside a namespace.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use driver_agent::netns;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// A named namespace made for one test; deleted (with everything in it) when dropped.
#[derive(Debug)]
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl TestNs {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("wft-t-{}", &id[..10]);
        let path = netns::create_named(&name).expect("create test namespace");
        let ns = Self { name, path };
        // A new namespace inherits IPv4 settings from the machine's own (forwarding is on on any
        // Docker host): the tests start from the kernel's defaults, set here, not from the host's.
        ns.sysctl_w(&["net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]);
        ns
    }

    /// `sysctl -w` inside this namespace.
    pub fn sysctl_w(&self, settings: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-q", "-w"])
            .args(settings)
            .output()
            .expect("run sysctl");
        assert!(
            out.status.success(),
            "sysctl {settings:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether this kernel makes the link `ip link add probe0 ARGS…` (deleted again), asked of
    /// the kernel directly, so tests expect what this kernel has rather than what one machine had.
    pub fn kernel_makes_link(&self, args: &[&str]) -> bool {
        let made = Command::new("ip")
            .args(["-n", &self.name, "link", "add", "probe0"])
            .args(args)
            .output()
            .expect("run ip")
            .status
            .success();
        if made {
            let _ = Command::new("ip")
                .args(["-n", &self.name, "link", "del", "probe0"])
                .status();
        }
        made
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_named(&self.name) {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("cannot delete test namespace {}: {e}", self.name);
            }
        }
    }
}

/// `nft -j ARGS…` in a namespace, parsed.
pub fn nft_json(ns: &TestNs, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-j"])
        .args(args)
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nft -j gives JSON")
}

/// `ip -n NS -j ARGS…` parsed.
pub fn ip_json(ns: &TestNs, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j"])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {args:?} gave no JSON ({e}): {text}"))
}

/// The links of a namespace, by `ip -j -d link show`.
pub fn links(ns: &TestNs) -> Vec<Value> {
    ip_json(ns, &["-d", "link", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn link<'a>(links: &'a [Value], name: &str) -> Option<&'a Value> {
    links.iter().find(|l| l["ifname"] == name)
}

/// `"10.0.0.2/24"` strings of the IPv4 addresses on `dev` in `ns`.
pub fn addresses(ns: &TestNs, dev: &str) -> Vec<String> {
    ip_json(ns, &["-4", "addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        // `ip -j` may emit lifetime-only entries without an address; skip them.
        .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
        .collect()
}

/// The IPv4 default route of `ns` as (gateway, dev).
pub fn default_route(ns: &TestNs) -> Option<(String, String)> {
    let r = ip_json(ns, &["-4", "route", "show", "default"]);
    let r = r.as_array()?.first()?;
    Some((
        r["gateway"].as_str()?.to_owned(),
        r["dev"].as_str()?.to_owned(),
    ))
}

/// A TCP echo server listening on `addr` inside `ns` (the socket is created there and keeps
/// that namespace; the runtime serves it from anywhere). Stops when the test's runtime ends.
pub async fn echo_server(ns: &Path, addr: SocketAddr) {
    let std_listener = netns::run_in(ns, move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.split();
                let mut line = String::new();
                if tokio::io::BufReader::new(r)
                    .read_line(&mut line)
                    .await
                    .is_ok()
                {
                    let _ = w.write_all(format!("echo {line}").as_bytes()).await;
                }
            });
        }
    });
}

/// Connects from inside `ns` to `to`, sends `msg` and returns the answer line.
pub async fn exchange(ns: &Path, to: SocketAddr, msg: &str) -> std::io::Result<String> {
    let msg = msg.to_owned();
    netns::run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    })
    .await
    .expect("enter namespace")
}

/// Waits (with a deadline) until `msg` sent from `ns` to `to` comes back echoed.
pub async fn assert_talks(ns: &Path, to: SocketAddr) {
    let got = weft_testkit::wait_for(
        Duration::from_secs(5),
        &format!("a TCP answer from {to}"),
        || async { exchange(ns, to, "hello").await.ok() },
    )
    .await;
    assert_eq!(got, "echo hello");
}

/// Global IPv6 addresses on `dev` in `ns`, `"fd00::2/64"` form.
pub fn addresses6(ns: &TestNs, dev: &str) -> Vec<String> {
    ip_json(ns, &["-6", "addr", "show", "dev", dev, "scope", "global"])[0]["addr_info"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        // `ip -j` may emit lifetime-only entries without an address; skip them.
        .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
        .collect()
}

/// The IPv6 default route of `ns` as (gateway, dev).
pub fn default_route6(ns: &TestNs) -> Option<(String, String)> {
    let r = ip_json(ns, &["-6", "route", "show", "default"]);
    let r = r.as_array()?.first()?;
    Some((
        r["gateway"].as_str()?.to_owned(),
        r["dev"].as_str()?.to_owned(),
    ))
}

/// An agent managing `host`, with its files in a temporary directory (kept alive by the
/// returned guard).
pub async fn agent(host: &TestNs) -> (driver_agent::Agent, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let agent = driver_agent::Agent::start(host.path.clone(), data.path().to_owned())
        .await
        .unwrap();
    (agent, data)
}
