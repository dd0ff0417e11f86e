//! Network namespaces made by one test and deleted with everything in them when dropped (also
//! when the test panics), and the kernel's view of them through `ip -j` and `nft -j`. Everything
//! here runs the real `ip`, `nft` and `sysctl` (as root); nothing touches the machine's own
//! namespace.

use std::{ffi::OsStr, path::PathBuf, process::Command};

use serde_json::Value;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs a command that must succeed; returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -j` output parsed; an empty answer is an empty array.
fn parse_ip_json(args: &[&str], out: &std::process::Output) -> Value {
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

/// `ip -j ARGS…` inside the namespace at `path` (any namespace file, named or not), parsed.
pub fn ip_json_at(path: &str, args: &[&str]) -> Value {
    let out = Command::new("nsenter")
        .arg(format!("--net={path}"))
        .args(["ip", "-j"])
        .args(args)
        .output()
        .expect("run nsenter");
    parse_ip_json(args, &out)
}

/// A named namespace made for one test (`wft-<tag>-<random>`); deleted, with everything in it,
/// when dropped.
#[derive(Debug)]
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl Default for TestNs {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNs {
    /// A fresh namespace tagged `t` that starts from the kernel's defaults: a new namespace
    /// inherits IPv4 settings from the machine's own (forwarding is on on any Docker host), so
    /// forwarding is set off here, inside it.
    pub fn new() -> Self {
        let ns = Self::named("t");
        ns.sysctl_w(&["net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]);
        ns
    }

    /// A fresh namespace `wft-<tag>-<10 random hex digits>`, as `ip netns add` makes it.
    pub fn named(tag: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("wft-{tag}-{}", &id[..10]);
        run("ip", &["netns", "add", &name]);
        Self {
            path: PathBuf::from(NETNS_DIR).join(&name),
            name,
        }
    }

    /// With its loopback up, as a host or a sandbox has.
    #[must_use]
    pub fn with_lo_up(self) -> Self {
        self.ip(&["link", "set", "lo", "up"]);
        self
    }

    /// The namespace file's path as a string.
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// `ip -n NAME ARGS…`, which must succeed; returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -n NAME -j ARGS…`, parsed (an empty answer is an empty array).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j"])
            .args(args)
            .output()
            .expect("run ip");
        parse_ip_json(args, &out)
    }

    /// `nft -j ARGS…` inside this namespace, parsed.
    pub fn nft_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_slice(&self.exec_ok("nft", &all)).expect("nft -j gives JSON")
    }

    /// `PROGRAM ARGS…` inside this namespace, which must succeed; returns its stdout.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Vec<u8> {
        let out = self
            .exec(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A command that runs `program` inside this namespace (`ip netns exec NAME program`); add
    /// its arguments and run it.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `sysctl -w` inside this namespace.
    pub fn sysctl_w(&self, settings: &[&str]) {
        let mut all = vec!["-q", "-w"];
        all.extend_from_slice(settings);
        self.exec_ok("sysctl", &all);
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

    /// Waits (at most 10 s) until no IPv6 address of the namespace is tentative: duplicate
    /// address detection of new links adds their local routes when it ends, so a view of the
    /// routes is stable only after it.
    pub fn settle_ipv6(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self
            .ip_json(&["-6", "addr", "show", "tentative"])
            .as_array()
            .is_some_and(|a| !a.is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What a namespace playing a host holds that Weft could touch: links, routes (both
    /// families, every table), the bridge FDB, the neighbour entries nobody learned (permanent
    /// ones: entries the kernel learns for underlay traffic come and go by themselves), the
    /// nftables ruleset. Equal before and after means Weft left the host as it found it.
    ///
    /// Taken once the kernel has settled the IPv6 link-local addresses of new links: duplicate
    /// address detection adds their local routes when it ends (at most 10 s).
    pub fn kernel_snapshot(&self) -> Vec<Value> {
        self.settle_ipv6();
        let bridge_fdb: Value =
            serde_json::from_slice(&self.exec_ok("bridge", &["-j", "fdb", "show"]))
                .expect("bridge -j gives JSON");
        vec![
            self.ip_json(&["link", "show"]),
            self.ip_json(&["-4", "route", "show", "table", "all"]),
            self.ip_json(&["-6", "route", "show", "table", "all"]),
            bridge_fdb,
            self.ip_json(&["neigh", "show", "nud", "permanent"]),
            self.nft_json(&["list", "ruleset"]),
        ]
    }

    /// A veth pair: `name` here, `peer_name` in `peer`, both up, each with its address
    /// (`"192.0.2.1/24"` form) if given.
    pub fn veth_to(
        &self,
        name: &str,
        addr: Option<&str>,
        peer: &TestNs,
        peer_name: &str,
        peer_addr: Option<&str>,
    ) {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ]);
        for (ns, dev, a) in [(self, name, addr), (peer, peer_name, peer_addr)] {
            if let Some(a) = a {
                ns.ip(&["addr", "add", a, "dev", dev]);
            }
            ns.ip(&["link", "set", dev, "up"]);
        }
    }
}

/// The host's end of the uplink between a namespace playing the host and one playing "the
/// internet" (TEST-NET-1: only ever inside the test's namespaces), and the internet's end.
pub const HOST_UPLINK: &str = "192.0.2.1";
pub const INTERNET: &str = "192.0.2.254";

/// Deletes, when dropped, the namespace of every sandbox a `weft up` agent with data
/// directory `data` still lists (`weft-<id>` for each entry of `<data>/agent/sandboxes`): a
/// run that fails half-way leaves none behind. Declare it before the `weft up` guard, so it
/// is dropped after `weft up` has stopped.
#[derive(Debug)]
pub struct SandboxNamespaces(pub PathBuf);

impl SandboxNamespaces {
    pub fn of_data_dir(data: &std::path::Path) -> Self {
        Self(data.join("agent").join("sandboxes"))
    }
}

impl Drop for SandboxNamespaces {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let name = format!("weft-{}", entry.file_name().to_string_lossy());
            if PathBuf::from(NETNS_DIR).join(&name).exists() {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
}

/// Wires `host` (`uplink`, [`HOST_UPLINK`]/24) to `internet` (`wan`, [`INTERNET`]/24) and
/// gives the host its default route through the internet.
pub fn wire_uplink(host: &TestNs, internet: &TestNs) {
    host.veth_to(
        "uplink",
        Some(&format!("{HOST_UPLINK}/24")),
        internet,
        "wan",
        Some(&format!("{INTERNET}/24")),
    );
    host.ip(&["route", "add", "default", "via", INTERNET]);
}

impl Drop for TestNs {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "cannot delete test namespace {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(e) => eprintln!("cannot delete test namespace {}: {e}", self.name),
        }
    }
}

/// A TCP listener bound to `addr` inside the namespace at `ns`: the socket is created there and
/// keeps that namespace; the runtime serves it from anywhere.
#[cfg(feature = "traffic")]
pub async fn tcp_listener_in(
    ns: &std::path::Path,
    addr: std::net::SocketAddr,
) -> tokio::net::TcpListener {
    let listener = driver_agent::netns::run_in(ns, move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })
    .await
    .expect("enter namespace")
    .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::net::TcpListener::from_std(listener).unwrap()
}

/// A (blocking) UDP socket bound to `addr` inside the namespace at `ns`.
#[cfg(feature = "traffic")]
pub async fn udp_socket_in(
    ns: &std::path::Path,
    addr: std::net::SocketAddr,
) -> std::net::UdpSocket {
    driver_agent::netns::run_in(ns, move || std::net::UdpSocket::bind(addr))
        .await
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("bind udp {addr}: {e}"))
}
