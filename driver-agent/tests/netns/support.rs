//! Namespaces that clean up after themselves (the test kit's), the kernel's view through
//! `ip -j`, and TCP traffic from inside a namespace.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use driver_agent::netns;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use weft_testkit::netns::tcp_listener_in;

pub use weft_testkit::netns::TestNs;

/// `nft -j ARGS…` in a namespace, parsed.
pub fn nft_json(ns: &TestNs, args: &[&str]) -> Value {
    ns.nft_json(args)
}

/// `ip -n NS -j ARGS…` parsed.
pub fn ip_json(ns: &TestNs, args: &[&str]) -> Value {
    ns.ip_json(args)
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

/// Waits (at most 5 s) until `ns` has no link named `name`: a detached endpoint's veth is made
/// inert at once and removed off the request path (`driver-agent/src/unlink.rs`).
pub async fn gone(ns: &TestNs, name: &str) {
    weft_testkit::wait_for(
        std::time::Duration::from_secs(5),
        &format!("link {name} to be removed"),
        || async { link(&links(ns), name).is_none().then_some(()) },
    )
    .await;
}

/// `"10.0.0.2/24"` strings of the addresses in `ip -j addr show dev X` output.
fn prefixes(shown: &Value) -> Vec<String> {
    shown[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        // `ip -j` may emit lifetime-only entries without an address; skip them.
        .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
        .collect()
}

/// `"10.0.0.2/24"` strings of the IPv4 addresses on `dev` in `ns`.
pub fn addresses(ns: &TestNs, dev: &str) -> Vec<String> {
    prefixes(&ip_json(ns, &["-4", "addr", "show", "dev", dev]))
}

/// The first route of `ip -j route show` output as (gateway, dev).
fn gateway_dev(routes: &Value) -> Option<(String, String)> {
    let r = routes.as_array()?.first()?;
    Some((
        r["gateway"].as_str()?.to_owned(),
        r["dev"].as_str()?.to_owned(),
    ))
}

/// The IPv4 default route of `ns` as (gateway, dev).
pub fn default_route(ns: &TestNs) -> Option<(String, String)> {
    gateway_dev(&ip_json(ns, &["-4", "route", "show", "default"]))
}

/// A TCP echo server listening on `addr` inside `ns` (the socket is created there and keeps
/// that namespace; the runtime serves it from anywhere). Stops when the test's runtime ends.
pub async fn echo_server(ns: &Path, addr: SocketAddr) {
    let listener = tcp_listener_in(ns, addr).await;
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
    prefixes(&ip_json(
        ns,
        &["-6", "addr", "show", "dev", dev, "scope", "global"],
    ))
}

/// The IPv6 default route of `ns` as (gateway, dev).
pub fn default_route6(ns: &TestNs) -> Option<(String, String)> {
    gateway_dev(&ip_json(ns, &["-6", "route", "show", "default"]))
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
