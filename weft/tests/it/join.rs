//! Two hosts: each a namespace this test makes, joined by a bridge in a third ("the network
//! between hosts"). The first runs `weft up --advertise`; the second joins it with a join token
//! from `weftctl host join-token` (`weft up --join`), runs only its agent and dns-svc, and gets
//! sandboxes placed on it through the first host's public API. Its certificates are kept: a
//! restart needs no token. `weftctl host rm` removes it.

use std::{path::Path, process::Command, time::Duration};

use weft_testkit::netns::TestNs;

use crate::{
    bin_dir,
    up::{FRESH_PATH, Weft, json},
    wait_until,
};

const A: &str = "198.51.100.1";
const B: &str = "198.51.100.2";

/// weftctl, run in `ns` with the admin token of the data directory `data`: its stdout, or the
/// panic with its stderr.
pub(crate) fn weftctl(ns: &TestNs, data: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin_dir().join("weftctl"))
        .arg("--token-file")
        .arg(data.join("admin.token"))
        .args(args)
        .env("PATH", FRESH_PATH)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The table once `weft` printed it (all its services healthy).
pub(crate) fn table_of(weft: &mut Weft, marker: &str) -> String {
    wait_until(Duration::from_secs(120), "weft up's table", || {
        weft.assert_running();
        let out = std::fs::read_to_string(&weft.out).unwrap_or_default();
        out.contains(marker).then_some(out)
    })
}

/// The hosts the first host's gateway lists, as (name, state, agent address).
pub(crate) fn hosts(ns: &TestNs, data: &Path) -> Vec<(String, String, String)> {
    weftctl(ns, data, &["--format", "json", "hosts"])
        .unwrap()
        .lines()
        .map(|l| {
            let h = json(l);
            let s = |k: &str| h[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("state"), s("agentAddress"))
        })
        .collect()
}

/// A sandbox's namespace path and first IPv4 address (without its prefix), from weftctl.
pub(crate) fn sandbox(ns: &TestNs, data: &Path, name: &str) -> (String, String) {
    let out = weftctl(ns, data, &["--format", "json", "sandbox", "inspect", name]).unwrap();
    let v = json(&out);
    let s = if v.is_array() { &v[0] } else { &v };
    let path = s["netnsPath"].as_str().unwrap().to_owned();
    let ip = s["endpoints"][0]["ipv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    (path, ip)
}

/// Runs the Python `server_code` in the namespace at `server` and, once it listens, the Python
/// `client_code` in the namespace at `client`: the client's output, when it succeeded.
pub(crate) fn exchange(
    client: &str,
    server: &str,
    server_code: &str,
    client_code: &str,
) -> Option<String> {
    let mut srv = Command::new("nsenter")
        .arg(format!("--net={server}"))
        .args(["python3", "-c", server_code])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("nsenter")
        .arg(format!("--net={client}"))
        .args(["python3", "-c", client_code])
        .output()
        .unwrap();
    let _ = srv.kill();
    let _ = srv.wait();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One TCP exchange: a server in the namespace at `server` (port 8000) sends a line, a client
/// in the namespace at `client` reads it from `ip`; what it read, once it worked.
pub(crate) fn tcp_once(client: &str, server: &str, ip: &str) -> Option<String> {
    exchange(
        client,
        server,
        "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);\
         s.bind(('0.0.0.0',8000));s.listen();s.settimeout(5);c,_=s.accept();\
         c.sendall(b'hello across hosts');c.close()",
        &format!(
            "import socket;s=socket.create_connection(('{ip}',8000),timeout=3);\
             print(s.recv(100).decode())"
        ),
    )
}

/// What `name` resolves to from the namespace at `from`, through its host's dns-svc (waiting
/// until it answers).
pub(crate) fn dig_from(from: &str, name: &str) -> String {
    wait_until(Duration::from_secs(30), "a name across hosts", || {
        dig_once(from, name, 2)
    })
}

/// One `dig` of `name` from the namespace at `from` through 127.0.0.11, waiting at most
/// `seconds` for the answer: the addresses it gave, if any.
pub(crate) fn dig_once(from: &str, name: &str, seconds: u32) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={from}"))
        .args(["dig", "+short", &format!("+time={seconds}"), "+tries=1"])
        .args(["@127.0.0.11", name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `name` asked of the operator listener (127.0.0.1:5353) of the host namespace `ns`: the
/// response's status and its A answers.
pub(crate) fn operator_dig(ns: &TestNs, name: &str) -> (String, Vec<String>) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "dig", "+time=2", "+tries=3"])
        .args(["-p", "5353", "@127.0.0.1", name, "A"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_owned();
    let answers = text
        .lines()
        .skip_while(|l| !l.contains("ANSWER SECTION"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    (status, answers)
}

/// The sandboxes a test made, removed when it ends (also when it fails): through weftctl while
/// the control plane is up, and their namespaces (`/run/netns/weft-<id>`, made by the agents)
/// whatever happened. Dropped before the `Weft`s that run the hosts.
pub(crate) struct Sandboxes<'a> {
    control: &'a TestNs,
    data: &'a Path,
    ids: Vec<(String, String)>,
}

impl<'a> Sandboxes<'a> {
    pub(crate) fn new(control: &'a TestNs, data: &'a Path) -> Self {
        Self {
            control,
            data,
            ids: Vec::new(),
        }
    }

    /// Creates a sandbox with weftctl (`args` between `sandbox create` and the name) and
    /// remembers it.
    pub(crate) fn create(&mut self, name: &str, args: &[&str]) {
        let mut all = vec!["sandbox", "create"];
        all.extend_from_slice(args);
        all.push(name);
        weftctl(self.control, self.data, &all).unwrap_or_else(|e| panic!("sandbox {name}: {e}"));
        let out = weftctl(
            self.control,
            self.data,
            &["--format", "json", "sandbox", "inspect", name],
        )
        .unwrap();
        let v = json(&out);
        let s = if v.is_array() { &v[0] } else { &v };
        self.ids
            .push((name.to_owned(), s["id"].as_str().unwrap().to_owned()));
    }
}

impl Drop for Sandboxes<'_> {
    fn drop(&mut self) {
        for (name, id) in &self.ids {
            let _ = weftctl(self.control, self.data, &["sandbox", "rm", name]);
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("weft-{id}")])
                .output();
        }
    }
}

/// The bridges in `ns`, by name.
pub(crate) fn bridges(ns: &TestNs) -> Vec<String> {
    ns.ip_json(&["-d", "link", "show", "type", "bridge"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in namespaces")]
fn a_second_host_joins_with_a_join_token_gets_sandboxes_and_is_removed() {
    let wire = TestNs::named("j-net");
    wire.ip(&["link", "add", "br0", "type", "bridge"]);
    wire.ip(&["link", "set", "br0", "up"]);
    // Hosts as machines have them: their loopback up.
    let host_a = TestNs::named("j-a").with_lo_up();
    let host_b = TestNs::named("j-b").with_lo_up();
    for (ns, addr, port) in [(&host_a, A, "pa"), (&host_b, B, "pb")] {
        ns.veth_to("eth0", Some(&format!("{addr}/24")), &wire, port, None);
        wire.ip(&["link", "set", port, "master", "br0"]);
    }
    let kernel_a = host_a.kernel_snapshot();
    let kernel_b = host_b.kernel_snapshot();
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));

    let mut first = Weft::start_with(&host_a, &data_a, &["--host-name", "ha", "--advertise", A]);
    let table = table_of(&mut first, "Talk to it:");
    assert!(
        table.contains(&format!("joinable      at {A}:7700")),
        "{table}"
    );
    let printed = weftctl(&host_a, &data_a, &["host", "join-token"]).unwrap();
    let token = printed.split_whitespace().last().unwrap().to_owned();
    assert!(token.starts_with("weftjoin_"), "{printed}");

    let join = |token: Option<&str>| {
        let mut flags = vec![
            "--host-name",
            "hb",
            "--join",
            "198.51.100.1:7700",
            "--advertise",
            B,
        ];
        if let Some(t) = token {
            flags.extend(["--join-token", t]);
        }
        Weft::start_with(&host_b, &data_b, &flags)
    };
    let mut second = join(Some(&token));
    let joined = table_of(&mut second, "joined ");
    assert!(joined.contains("as host \"hb\""), "{joined}");
    // Only the agent and dns-svc run there, on its address; it holds no CA key and no token.
    assert!(
        !joined.contains("gateway ") && !joined.contains("ipam-svc"),
        "{joined}"
    );
    assert!(joined.contains(&format!("{B}:7702")), "{joined}");
    assert!(!data_b.join("pki").join("ca.key").exists());
    assert!(!data_b.join("admin.token").exists());
    let hb = wait_until(Duration::from_secs(60), "hb registered and up", || {
        hosts(&host_a, &data_a)
            .into_iter()
            .find(|h| h.0 == "hb" && h.1 == "HOST_STATE_UP")
    });
    assert_eq!(hb.2, format!("{B}:7702"));
    // The token was spent, and never written to a log.
    for log in ["driver-agent.log", "dns-svc.log"] {
        let text = std::fs::read_to_string(data_b.join("logs").join(log)).unwrap();
        assert!(!text.contains(&token[..40]), "{log} holds the join token");
    }
    let again = weftctl(&host_a, &data_a, &["host", "join-token"]).unwrap();
    assert_ne!(again.split_whitespace().last().unwrap(), token);

    // A sandbox placed on the second host through the first host's API: its agent made it
    // there, over mutual TLS.
    let before_b = bridges(&host_b);
    let bridges_before = before_b.len();
    weftctl(
        &host_a,
        &data_a,
        &["network", "create", "--subnet", "10.231.0.0/24", "n1"],
    )
    .unwrap();
    let mut made = Sandboxes::new(&host_a, &data_a);
    made.create("s1", &["--host", "hb", "--network", "n1"]);
    let bridges_b = bridges(&host_b);
    assert_eq!(
        bridges_b.len(),
        bridges_before + 1,
        "n1's bridge on hb: {bridges_b:?}"
    );
    assert!(
        bridges(&host_a)
            .iter()
            .all(|b| !bridges_b.contains(b) || before_b.contains(b)),
        "n1's bridge is on hb only"
    );

    // An overlay network across both hosts: a member on each, TCP from one to the other
    // through the VXLAN tunnel between the hosts' namespaces.
    weftctl(
        &host_a,
        &data_a,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.232.0.0/24",
            "ov",
        ],
    )
    .unwrap();
    for (host, name) in [("ha", "oa"), ("hb", "ob")] {
        made.create(name, &["--host", host, "--network", "ov"]);
    }
    let (path_a, ip_a) = sandbox(&host_a, &data_a, "oa");
    let (path_b, ip_b) = sandbox(&host_a, &data_a, "ob");
    let got = wait_until(Duration::from_secs(30), "TCP across the overlay", || {
        tcp_once(&path_a, &path_b, &ip_b)
    });
    assert_eq!(got, "hello across hosts");
    // And each resolves the other by name, through its own host's dns-svc.
    for (from, name, want) in [(&path_a, "ob", &ip_b), (&path_b, "oa", &ip_a)] {
        assert_eq!(&dig_from(from, name), want, "{name} from the other host");
    }

    // A restart of the second host needs no token: its certificates are kept.
    drop(second);
    let mut second = join(None);
    table_of(&mut second, "joined ");
    wait_until(Duration::from_secs(60), "hb up again", || {
        hosts(&host_a, &data_a)
            .into_iter()
            .find(|h| h.0 == "hb" && h.1 == "HOST_STATE_UP")
    });

    // Removed from the first host (forced: it is up), with its sandbox.
    let removed = weftctl(&host_a, &data_a, &["host", "rm", "--force", "hb"]).unwrap();
    assert!(
        removed.contains("s1") && removed.contains("ob"),
        "{removed}"
    );
    assert!(hosts(&host_a, &data_a).iter().all(|h| h.0 != "hb"));
    // Removed while up, hb's agent was told to remove every network's devices there.
    as_it_was(&host_b, "hb", &kernel_b);
    drop(made);
    for net in ["n1", "ov"] {
        weftctl(&host_a, &data_a, &["network", "rm", net]).unwrap();
    }
    as_it_was(&host_a, "ha", &kernel_a);
    drop(second);
    drop(first);
    as_it_was(&host_a, "ha", &kernel_a);
    as_it_was(&host_b, "hb", &kernel_b);
}

/// A 10 MB transfer: the server in `server` sends 10 MB of a fixed pattern, the client in
/// `client` reads it all from `ip`; the SHA-256 of what it read, once it worked.
pub(crate) fn ten_megabytes(client: &str, server: &str, ip: &str) -> Option<String> {
    exchange(
        client,
        server,
        "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);\
         s.bind(('0.0.0.0',8001));s.listen();s.settimeout(10);c,_=s.accept();\
         c.sendall(bytes(range(256))*40960);c.close()",
        &format!(
            "import socket,hashlib;s=socket.create_connection(('{ip}',8001),timeout=10);\
             h=hashlib.sha256();n=0\n\
             while True:\n d=s.recv(65536)\n if not d: break\n h.update(d);n+=len(d)\n\
             print(n,h.hexdigest())"
        ),
    )
}

/// Waits until the kernel snapshot of `ns` (host `name`) equals `before`; fails naming what
/// differs.
pub(crate) fn as_it_was(ns: &TestNs, name: &str, before: &[serde_json::Value]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = ns.kernel_snapshot();
        if now == before {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let parts = [
                "links",
                "routes v4",
                "routes v6",
                "bridge fdb",
                "neighbours",
                "nftables",
            ];
            let diff: Vec<String> = parts
                .iter()
                .zip(before.iter().zip(&now))
                .filter(|(_, (a, b))| a != b)
                .map(|(p, (a, b))| format!("{p}: before {a}\nnow {b}"))
                .collect();
            panic!("{name} is not as it was:\n{}", diff.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
