//! Podman end to end: Debian's Podman (CNI backend, runc) runs containers from a busybox root
//! filesystem on a Weft network through the installed `weft-cni`, chained with Debian's
//! `portmap` and `tuning` (the conflist `weft-cni install` writes). Podman runs in the
//! namespace that plays the host, with its storage, run directory, configuration and CNI
//! directories in the test's own temporary directory; no image is pulled.
//!
//! What a user does and sees: containers get Weft addresses, find each other by name through
//! 127.0.0.11, reach the "internet" namespace through the host, a `-p 8080:80` port answers from
//! the host and from the internet; `podman rm` leaves no sandbox, endpoint, address or kernel
//! object of Weft's behind (`weftctl check` clean, the host's kernel as before the first run).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use weft_testkit::netns::{HOST_UPLINK, INTERNET, TestNs, wire_uplink};

use crate::{Host, NETWORK, SUBNET, bins};

/// Podman confined to a directory of the test's own, run in the host's namespace.
pub struct Podman {
    dir: tempfile::TempDir,
    /// The host's namespace file: Podman shares the test's mount namespace (`nsenter --net`,
    /// not `ip netns exec`), so the namespaces it mounts under /run/netns are the ones the
    /// plugin and the agent open.
    netns: String,
}

impl Podman {
    /// Podman with `weft-cni` installed into its CNI directories for [`NETWORK`].
    pub fn new(host: &Host) -> Self {
        for tool in ["podman", "runc"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .unwrap()
                    .status
                    .success(),
                "{tool} is not installed: scripts/setup.sh installs it"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("weft-podman-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in [
            "bin",
            "net.d",
            "root",
            "run",
            "tmp",
            "rootfs/bin",
            "rootfs/etc",
            "rootfs/www",
            "www",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let token = host.weft.admin_token_file();
        let install = host
            .ns
            .exec(bins().join("weft-cni"))
            .arg("install")
            .arg("--bin-dir")
            .arg(d.join("bin"))
            .arg("--conf-dir")
            .arg(d.join("net.d"))
            .args(["--network", NETWORK, "--cni-token-file"])
            .arg(&token)
            .output()
            .unwrap();
        assert!(install.status.success(), "{install:?}");
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
                 [network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{bin}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{netd}\"\n\
                 [engine]\nruntime = \"runc\"\nevents_logger = \"file\"\n\
                 cgroup_manager = \"cgroupfs\"\ntmp_dir = \"{tmp}\"\n",
                bin = d.join("bin").display(),
                netd = d.join("net.d").display(),
                tmp = d.join("tmp").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("run").display()
            ),
        )
        .unwrap();
        // The containers' root filesystem: busybox-static and the applets the test uses.
        let rootfs = d.join("rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "ip", "ping", "nslookup", "wget", "httpd", "sleep", "cat",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(d.join("www/index.html"), "served by a podman container\n").unwrap();
        Self {
            dir,
            netns: host.ns.path_str(),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// `podman ARGS…` as configured, not asserting.
    pub fn output(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .args(["podman", "--runtime", "runc"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .output()
            .unwrap()
    }

    /// `podman ARGS…`, asserting success; its stdout.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `podman run -d --network NETWORK --name NAME EXTRA… --rootfs ROOTFS CMD…`.
    pub fn start(&self, name: &str, extra: &[&str], cmd: &[&str]) {
        let rootfs = self.rootfs();
        let mut args = vec!["run", "-d", "--network", NETWORK, "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", rootfs.to_str().unwrap()]);
        args.extend_from_slice(cmd);
        self.run(&args);
    }

    /// `podman exec NAME CMD…`: (success, stdout + stderr).
    pub fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        let out = self.output(&args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `podman inspect NAME`, the one object.
    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.run(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever a failed test left: containers (their conmon and runc processes, their
        // namespaces under /run/netns, through the plugin's DEL), then mounts under the
        // directory, which the TempDir removes.
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        let dir = self.dir.path().to_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| Path::new(m).starts_with(&dir))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

/// The container's IPv4 address on `eth0`, from inside it (`ip -o -4 addr`).
fn address_of(p: &Podman, name: &str) -> String {
    let (ok, text) = p.exec(name, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(ok, "{text}");
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no inet address in {text}"));
    cidr.split('/').next().unwrap().to_owned()
}

/// An HTTP GET of `/` from namespace `ns` to `to`: the body, or why not.
async fn fetch_in(ns: &TestNs, to: SocketAddr) -> Result<String, String> {
    driver_agent::netns::run_in(&ns.path, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET / HTTP/1.0\r\nHost: {to}\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok::<_, std::io::Error>(text)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
    .and_then(|text| match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_owned())
        }
        _ => Err(format!("not a 200: {text}")),
    })
}

/// The kernel of the host as the snapshot sees it, with the nat tables of `iptables-nft` left
/// out: Debian's portmap keeps its (then empty) top-level CNI-HOSTPORT chains once made, as it
/// does under any plugin. What portmap made for one container (its CNI-DN chain, its rules) is
/// checked gone separately.
fn weft_kernel(ns: &TestNs) -> Vec<Value> {
    let mut snap = ns.kernel_snapshot();
    let nft = snap.last_mut().unwrap();
    if let Some(items) = nft["nftables"].as_array_mut() {
        items.retain(|i| {
            let of = |kind: &str| {
                i.get(kind)
                    .map(|t| (t["family"].clone(), t["table"].clone()))
            };
            let table = i
                .get("table")
                .map(|t| (t["family"].clone(), t["name"].clone()))
                .or_else(|| of("chain"))
                .or_else(|| of("rule"));
            !matches!(table, Some((f, t)) if t == "nat" && (f == "ip" || f == "ip6"))
        });
    }
    snap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and podman in namespaces"
)]
async fn podman_containers_on_weft_resolve_reach_publish_and_leave_nothing() {
    let host = Host::up();
    let internet = TestNs::named("cni-inet").with_lo_up();
    wire_uplink(&host.ns, &internet);
    let podman = Podman::new(&host);
    let before = weft_kernel(&host.ns);

    podman.start("web", &[], &["sleep", "600"]);
    let www = format!("{}:/www", podman.www().display());
    podman.start(
        "published",
        &["-p", "8080:80", "-v", &www],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    podman.start("client", &[], &["sleep", "600"]);

    // Weft addresses, in the network's subnet, as Weft records them.
    let subnet: ipnet::Ipv4Net = SUBNET.parse().unwrap();
    let web = address_of(&podman, "web");
    let client = address_of(&podman, "client");
    for a in [&web, &client] {
        assert!(
            subnet.contains(&a.parse::<std::net::Ipv4Addr>().unwrap()),
            "{a}"
        );
    }
    let sandboxes = host.sandboxes();
    let names: Vec<&str> = sandboxes
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(sandboxes.len(), 3, "{sandboxes:?}");
    let listed = host.weftctl(&["--format", "json", "network", "inspect", NETWORK]);
    for a in [&web, &client] {
        assert!(
            listed.contains(a.as_str()),
            "{a} not in {listed} ({names:?})"
        );
    }

    // Names through Weft's resolver at 127.0.0.11, from inside the container.
    let (ok, resolv) = podman.exec("client", &["cat", "/etc/resolv.conf"]);
    assert!(ok && resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    let (ok, answer) = podman.exec("client", &["nslookup", "web", "127.0.0.11"]);
    assert!(ok && answer.contains(&web), "{answer}");
    let (ok, ping) = podman.exec("client", &["ping", "-c", "1", "-W", "5", "web"]);
    assert!(ok, "{ping}");

    // The internet through the host.
    let (ok, ping) = podman.exec("client", &["ping", "-c", "1", "-W", "5", INTERNET]);
    assert!(ok, "{ping}");

    // The published port, from the host (its uplink address) and from the internet.
    // (httpd listens a moment after `podman run -d` returns.)
    let published: SocketAddr = format!("{HOST_UPLINK}:8080").parse().unwrap();
    for ns in [&host.ns, &internet] {
        let mut tries = 0;
        let body = loop {
            match fetch_in(ns, published).await {
                Ok(body) => break body,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!(
                    "the published port {published} does not answer from {}: {e}\n{}",
                    ns.name,
                    podman.run(&["logs", "published"])
                ),
            }
        };
        assert_eq!(body, "served by a podman container\n");
    }
    let netns_files: Vec<String> = ["web", "published", "client"]
        .iter()
        .map(|c| {
            podman.inspect(c)["NetworkSettings"]["SandboxKey"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();

    podman.run(&["rm", "--force", "--time", "0", "web", "published", "client"]);

    assert!(host.sandboxes().is_empty(), "{:?}", host.sandboxes());
    // `weftctl check`: no leaked address or pool, no operation pending, no drift between the
    // kernel and the gateway's view. (Asked until clean for a few seconds: under load a
    // removal's last step may still be under way when `podman rm` returns; what was seen
    // first is printed.)
    let mut first = None;
    crate::wait_until(Duration::from_secs(15), "a clean `weftctl check`", || {
        let out = host.weftctl_output(&["check"]);
        if !out.status.success() && first.is_none() {
            first = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            eprintln!(
                "weftctl check, first answer: {}",
                first.as_deref().unwrap_or("")
            );
        }
        out.status.success().then_some(())
    });
    assert!(fetch_in(&internet, published).await.is_err());
    let nat = String::from_utf8(host.ns.exec_ok("iptables", &["-t", "nat", "-S"])).unwrap();
    assert!(
        !nat.contains("CNI-DN-"),
        "portmap left a container's chain:\n{nat}"
    );
    for f in &netns_files {
        assert!(!Path::new(f).exists(), "{f} is still there");
    }
    assert_eq!(weft_kernel(&host.ns), before);
}
