//! The multi-host world: three namespaces playing hosts, joined by an underlay bridge (in a
//! namespace of the test's own), each running a driver-agent and dns-svc that joined with a join
//! token (`weft up --join`); the gateway and ipam-svc in a fourth namespace ("control"), on
//! SQLite or on a Postgres server started in that namespace. A fifth namespace plays the
//! internet (the hosts' router, with a server behind it), a sixth a LAN on a link of the first
//! host (the parent of a macvlan network). Everything goes through the public API (weftctl, and
//! grpcurl where the gRPC code matters); the kernel is read with `ip -j` and `bridge -j`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;
use weft_testkit::netns::TestNs;

use crate::{
    join::{
        Sandboxes, as_it_was, dig_from, dig_once, exchange, hosts, operator_dig, sandbox, table_of,
        tcp_once, ten_megabytes, weftctl,
    },
    up::{Weft, json},
    wait_until,
};

/// The control namespace's address on the underlay.
const CONTROL: &str = "198.51.100.10";
/// The hosts' router ("the internet" behind it) on the underlay.
const ROUTER: &str = "198.51.100.254";
/// A server on the internet (TEST-NET-3, only ever inside the test's namespaces).
const INTERNET_SERVER: &str = "203.0.113.1";
/// The LAN router on the first host's `lan0` segment (TEST-NET-1, inside the test only).
const LAN_ROUTER: &str = "192.0.2.254";

/// How often agents send heartbeats and how long a down host keeps its endpoints up, here: short,
/// so that the host-down part of the test takes seconds.
const TEST_GATEWAY_ENV: [(&str, &str); 2] = [
    ("WEFT_GATEWAY_HEARTBEAT_INTERVAL", "1s"),
    ("WEFT_GATEWAY_HOST_DOWN_GRACE", "3s"),
];

/// A throwaway Postgres inside the control namespace (its loopback, port 5432), with a
/// database for the gateway and one for ipam-svc; stopped and removed when dropped.
pub(crate) struct Postgres {
    root: String,
    pub(crate) gateway_url: String,
    pub(crate) ipam_url: String,
}

impl Postgres {
    pub(crate) fn start(control: &TestNs) -> Self {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
        let root_file = tempfile::NamedTempFile::new().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &control.name, "env", "PGPORT=5432", "bash"])
            .arg(scripts.join("pg-up.sh"))
            .arg(root_file.path())
            .output()
            .unwrap();
        let root = std::fs::read_to_string(root_file.path()).unwrap_or_default();
        let pg = Self {
            root: root.trim().to_owned(),
            gateway_url: "postgres://postgres@127.0.0.1:5432/weft_test".into(),
            ipam_url: "postgres://postgres@127.0.0.1:5432/weft_ipam".into(),
        };
        assert!(
            out.status.success(),
            "pg-up.sh in the control namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let made = as_postgres(control)
            .args(["/usr/lib/postgresql/15/bin/createdb", "-h", "127.0.0.1"])
            .args(["-p", "5432", "-U", "postgres", "weft_ipam"])
            .output()
            .unwrap();
        assert!(made.status.success(), "createdb: {made:?}");
        pg
    }
}

impl Postgres {
    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`: every process gone at
    /// once, no checkpoint; recovery at the next start), then starts it again as pg-up.sh did.
    pub(crate) fn crash_and_restart(&self, control: &TestNs) {
        let pg_ctl = |args: &[&str]| {
            let out = as_postgres(control)
                .arg("/usr/lib/postgresql/15/bin/pg_ctl")
                .args(["-D", &format!("{}/data", self.root)])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "pg_ctl {args:?}: {out:?}");
        };
        pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p 5432 -k {} -c fsync=off -c max_connections=300",
            self.root
        );
        let log = format!("{}/server.log", self.root);
        pg_ctl(&["-l", &log, "-w", "-t", "30", "-o", &options, "start"]);
    }
}

/// A command run in the control namespace as the `postgres` user (the server refuses root).
fn as_postgres(control: &TestNs) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &control.name,
        "runuser",
        "-u",
        "postgres",
        "--",
    ]);
    c
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
        let _ = Command::new("bash")
            .arg(scripts.join("pg-down.sh"))
            .arg(&self.root)
            .output();
    }
}

/// A joined host: its namespace, underlay address, data directory and `weft up --join`.
struct Machine {
    ns: TestNs,
    addr: String,
    name: String,
    data: PathBuf,
    weft: Option<Weft>,
}

impl Machine {
    /// `weft up --join` on this machine, with a fresh join token when `token` (a first join, or
    /// one after `host rm`), else on the certificates it kept.
    fn up(&mut self, control: &TestNs, control_data: &Path, token: bool) {
        let mut flags = vec![
            "--host-name".to_owned(),
            self.name.clone(),
            "--join".to_owned(),
            format!("{CONTROL}:7700"),
            "--advertise".to_owned(),
            self.addr.clone(),
        ];
        if token {
            let printed = weftctl(
                control,
                control_data,
                &["host", "join-token", "--host", &self.name],
            )
            .unwrap();
            flags.extend([
                "--join-token".to_owned(),
                printed.split_whitespace().last().unwrap().to_owned(),
            ]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut w = Weft::start_with(&self.ns, &self.data, &flags);
        table_of(&mut w, "joined ");
        self.weft = Some(w);
    }
}

/// The PID of the driver-agent that runs for host `name` (its command line says so), if one
/// does.
fn agent_pid(name: &str) -> Option<Pid> {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_agent = args.first().is_some_and(|a| a.ends_with("/driver-agent"));
        if is_agent
            && args
                .windows(2)
                .any(|w| w[0] == "--host-name" && w[1] == name)
        {
            return Some(Pid::from_raw(pid));
        }
    }
    None
}

/// Pairs of strings as the kernel's dumps give them: (MAC, VTEP) or (address, MAC).
type Entries = BTreeSet<(String, String)>;

/// The gateway's view of overlay network `net` for the host `here`: an FDB entry (MAC, the
/// other host's address) and a neighbour entry (address, MAC) for every endpoint elsewhere;
/// nothing where the host has no endpoint on it.
fn gateway_view(control: &TestNs, data: &Path, net: &str, here: &str) -> (Entries, Entries) {
    let addrs: Vec<(String, String)> = hosts(control, data)
        .into_iter()
        .map(|(name, _, agent)| (name, agent.rsplit_once(':').unwrap().0.to_owned()))
        .collect();
    let v = json(
        &weftctl(
            control,
            data,
            &["--format", "json", "network", "inspect", net],
        )
        .unwrap(),
    );
    let n = if v.is_array() { &v[0] } else { &v };
    let mut fdb = Entries::new();
    let mut neigh = Entries::new();
    let endpoints = n["endpoints"].as_array().unwrap();
    // A host without an endpoint on the network has no device for it.
    if !endpoints.iter().any(|e| e["host"] == here) {
        return (fdb, neigh);
    }
    for e in endpoints {
        let host = e["host"].as_str().unwrap();
        if host == here {
            continue;
        }
        let mac = e["macAddress"].as_str().unwrap().to_lowercase();
        let vtep = addrs.iter().find(|a| a.0 == host).unwrap().1.clone();
        let ip = e["ipv4Address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        fdb.insert((mac.clone(), vtep));
        neigh.insert((ip.to_owned(), mac));
    }
    (fdb, neigh)
}

/// The kernel's view on `ns` of overlay network `id`: its VXLAN device's static FDB entries
/// and neighbour entries (none when the host has no device for it).
fn kernel_view(ns: &TestNs, id: &str) -> (Entries, Entries) {
    let links = ns.ip_json(&["-d", "link", "show", "type", "vxlan"]);
    let Some(dev) = links.as_array().unwrap().iter().find_map(|l| {
        let alias = l["ifalias"].as_str().unwrap_or_default();
        alias
            .ends_with(id)
            .then(|| l["ifname"].as_str().unwrap().to_owned())
    }) else {
        return (Entries::new(), Entries::new());
    };
    let fdb: Value =
        serde_json::from_slice(&ns.exec_ok("bridge", &["-j", "fdb", "show", "dev", &dev])).unwrap();
    let fdb = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "self"))
        })
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_owned(),
                e["dst"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let neigh = ns
        .ip_json(&["neigh", "show", "dev", &dev])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["dst"].as_str().unwrap().to_owned(),
                e["lladdr"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (fdb, neigh)
}

/// Waits until every machine's kernel view of `net` equals the gateway's view for it; fails
/// showing both after 30 s.
fn converged(control: &TestNs, data: &Path, machines: &[Machine], net: &str, id: &str) {
    for m in machines {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let want = gateway_view(control, data, net, &m.name);
            let got = kernel_view(&m.ns, id);
            if want == got {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(m.data.join("logs/driver-agent.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "{}: FDB and neighbours of {net}: the kernel has {got:?}, the gateway wants \
                     {want:?}; its agent's log ends:\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One connection from the namespace at `client` to `ip:port` where a server in `server`
/// answers with the address the connection came from: that address, once it worked.
fn seen_as(client: &str, server: &str, ip: &str) -> Option<String> {
    exchange(
        client,
        server,
        &format!(
            "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);\
             s.bind(('{ip}',8002));s.listen();s.settimeout(5);c,a=s.accept();\
             c.sendall(a[0].encode());c.close()"
        ),
        &format!(
            "import socket;s=socket.create_connection(('{ip}',8002),timeout=3);\
             print(s.recv(100).decode())"
        ),
    )
}

/// CreateSandbox through the real grpcurl in the control namespace: its exit code and stderr
/// (where grpcurl prints the status code and message).
fn grpcurl_create(control: &TestNs, data: &Path, body: &str) -> (bool, String) {
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &control.name])
        .arg(weft_testkit::grpcurl())
        .args(["-plaintext", "-H"])
        .arg(format!("authorization: Bearer {}", token.trim()))
        .args(["-d", body, "127.0.0.1:7700"])
        .arg("weft.gateway.v1.SandboxService/CreateSandbox")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn three_host_world(on_postgres: bool) {
    let wire = TestNs::named("w-net");
    wire.ip(&["link", "add", "br0", "type", "bridge"]);
    wire.ip(&["link", "set", "br0", "up"]);
    let plug = |ns: &TestNs, addr: &str, port: &str| {
        ns.veth_to("eth0", Some(&format!("{addr}/24")), &wire, port, None);
        wire.ip(&["link", "set", port, "master", "br0"]);
    };
    let control = TestNs::named("w-c").with_lo_up();
    plug(&control, CONTROL, "pc");
    let internet = TestNs::named("w-inet").with_lo_up();
    plug(&internet, ROUTER, "pi");
    internet.ip(&["addr", "add", &format!("{INTERNET_SERVER}/32"), "dev", "lo"]);
    let dir = tempfile::tempdir().unwrap();
    let mut machines: Vec<Machine> = (1..=3)
        .map(|i| {
            // A host as a machine has it: its loopback up.
            let ns = TestNs::named(&format!("w-h{i}")).with_lo_up();
            let addr = format!("198.51.100.{i}");
            plug(&ns, &addr, &format!("p{i}"));
            ns.ip(&["route", "add", "default", "via", ROUTER]);
            Machine {
                ns,
                addr,
                name: format!("h{i}"),
                data: dir.path().join(format!("h{i}")),
                weft: None,
            }
        })
        .collect();
    let lan = TestNs::named("w-lan").with_lo_up();
    machines[0].ns.veth_to(
        "lan0",
        None,
        &lan,
        "eth0",
        Some(&format!("{LAN_ROUTER}/24")),
    );
    let before: Vec<Vec<Value>> = machines.iter().map(|m| m.ns.kernel_snapshot()).collect();

    let pg = on_postgres.then(|| Postgres::start(&control));
    let data = dir.path().join("control");
    let mut flags = vec!["--host-name", "control", "--advertise", CONTROL];
    if let Some(pg) = &pg {
        flags.extend([
            "--database-url",
            &pg.gateway_url,
            "--ipam-database-url",
            &pg.ipam_url,
        ]);
    }
    let mut first = Weft::start_with_env(&control, &data, &flags, &TEST_GATEWAY_ENV);
    let table = table_of(&mut first, "Talk to it:");
    if on_postgres {
        assert!(table.contains("store         Postgres"), "{table}");
        assert!(!data.join("gateway.db").exists() && !data.join("ipam.db").exists());
    }
    for m in &mut machines {
        m.up(&control, &data, true);
    }
    wait_until(Duration::from_secs(60), "three hosts up", || {
        let up = hosts(&control, &data)
            .iter()
            .filter(|h| h.0.starts_with('h') && h.1 == "HOST_STATE_UP")
            .count();
        (up == 3).then_some(())
    });
    let ctl = |args: &[&str]| {
        weftctl(&control, &data, args).unwrap_or_else(|e| panic!("weftctl {args:?}: {e}"))
    };

    let mut made = Sandboxes::new(&control, &data);
    let nets = [
        vec!["-d", "overlay", "--subnet", "10.233.0.0/24", "ov"],
        vec!["-d", "overlay", "--subnet", "10.234.0.0/24", "other"],
        vec!["--subnet", "10.235.0.0/24", "local-br"],
        vec![
            "-d",
            "overlay",
            "--internal",
            "--subnet",
            "10.236.0.0/24",
            "inner",
        ],
        vec![
            "-d",
            "macvlan",
            "-o",
            "parent=lan0",
            "--subnet",
            "192.0.2.0/24",
            "--gateway",
            LAN_ROUTER,
            "mv",
        ],
    ];
    for args in &nets {
        let mut all = vec!["network", "create"];
        all.extend_from_slice(args);
        ctl(&all);
    }
    made.create("m1", &["--host", "h1", "--network", "ov"]);
    made.create("m2", &["--host", "h2", "--network", "ov"]);
    made.create("m3", &["--host", "h3"]);
    ctl(&["network", "connect", "--alias", "db", "ov", "m3"]);
    made.create("x2", &["--host", "h2", "--network", "other"]);
    made.create("y2", &["--host", "h2", "--network", "local-br"]);
    made.create("i1", &["--host", "h1", "--network", "inner"]);
    made.create("i3", &["--host", "h3", "--network", "inner"]);
    made.create("mv1", &["--host", "h1", "--network", "mv"]);
    made.create("mv2", &["--host", "h1", "--network", "mv"]);
    let members: Vec<(String, String)> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| sandbox(&control, &data, m))
        .collect();

    // Overlay members on three hosts: TCP every pair, both ways; names and aliases through
    // each member's own host's dns-svc; 10 MB intact at the overlay's MTU.
    for (i, (from, _)) in members.iter().enumerate() {
        for (j, (to, ip)) in members.iter().enumerate() {
            if i != j {
                let got = wait_until(Duration::from_secs(30), "TCP across hosts", || {
                    tcp_once(from, to, ip)
                });
                assert_eq!(got, "hello across hosts", "m{} -> m{}", i + 1, j + 1);
            }
        }
    }
    assert_eq!(dig_from(&members[0].0, "m2"), members[1].1);
    assert_eq!(dig_from(&members[1].0, "db"), members[2].1);
    assert_eq!(dig_from(&members[2].0, "m1"), members[0].1);
    // Each host's dns-svc holds the networks with an endpoint on its host, with all their
    // endpoints, and nothing else: on its operator listener h1 (on ov, not on `other`) answers
    // ov's names, of members elsewhere too, and NXDOMAIN for those of `other`, which h2 (x2 is
    // there) answers.
    let (h1, h2) = (&machines[0].ns, &machines[1].ns);
    let x2_ip = sandbox(&control, &data, "x2").1;
    let found = |ip: &str| ("NOERROR".to_owned(), vec![ip.to_owned()]);
    assert_eq!(operator_dig(h1, "m2.ov.weft."), found(&members[1].1));
    assert_eq!(operator_dig(h1, "x2.other.weft.").0, "NXDOMAIN");
    assert_eq!(operator_dig(h2, "x2.other.weft."), found(&x2_ip));
    // A container on h1 that joins `other` resolves x2 (on h2) as soon as its create returns:
    // the network's records came with its first endpoint on h1.
    made.create("late", &["--host", "h1", "--network", "other"]);
    let (late, _) = sandbox(&control, &data, "late");
    assert_eq!(dig_once(&late, "x2", 3), Some(x2_ip.clone()));
    assert_eq!(operator_dig(h1, "x2.other.weft."), found(&x2_ip));
    // Its last endpoint there gone, h1 holds nothing of `other` again; h2 still does.
    ctl(&["network", "disconnect", "other", "late"]);
    wait_until(
        Duration::from_secs(30),
        "other's names gone from h1",
        || (operator_dig(h1, "x2.other.weft.").0 == "NXDOMAIN").then_some(()),
    );
    assert_eq!(operator_dig(h2, "x2.other.weft."), found(&x2_ip));
    let digest = Command::new("python3")
        .args([
            "-c",
            "import hashlib;print(hashlib.sha256(bytes(range(256))*40960).hexdigest())",
        ])
        .output()
        .unwrap();
    let want = format!(
        "{} {}",
        256 * 40960,
        String::from_utf8_lossy(&digest.stdout).trim()
    );
    let got = wait_until(Duration::from_secs(60), "10 MB across hosts", || {
        ten_megabytes(&members[0].0, &members[2].0, &members[2].1)
    });
    assert_eq!(got, want);

    // Members of another overlay and of a bridge network (on m2's host) do not reach them.
    let (x2, _) = sandbox(&control, &data, "x2");
    assert_eq!(tcp_once(&x2, &members[1].0, &members[1].1), None);
    let (y2, _) = sandbox(&control, &data, "y2");
    assert_eq!(tcp_once(&y2, &members[1].0, &members[1].1), None);

    // The internet through each member's own host, seen as that host's address.
    let inet = internet.path_str();
    for (i, (from, _)) in members.iter().enumerate() {
        let seen = wait_until(Duration::from_secs(20), "the internet", || {
            seen_as(from, &inet, INTERNET_SERVER)
        });
        assert_eq!(
            seen,
            machines[i].addr,
            "m{} leaves through its own host",
            i + 1
        );
    }
    // An internal overlay: its members talk across hosts, and reach nothing outside.
    let (i1, _) = sandbox(&control, &data, "i1");
    let (i3, i3_ip) = sandbox(&control, &data, "i3");
    let got = wait_until(
        Duration::from_secs(30),
        "TCP on the internal overlay",
        || tcp_once(&i1, &i3, &i3_ip),
    );
    assert_eq!(got, "hello across hosts");
    assert_eq!(seen_as(&i1, &inet, INTERNET_SERVER), None);

    // macvlan over the first host's lan0: the LAN sees each sandbox's own address, and the two
    // sandboxes talk.
    let (mv1, mv1_ip) = sandbox(&control, &data, "mv1");
    let (mv2, mv2_ip) = sandbox(&control, &data, "mv2");
    let lan_path = lan.path_str();
    let seen = wait_until(Duration::from_secs(20), "the LAN", || {
        seen_as(&mv1, &lan_path, LAN_ROUTER)
    });
    assert_eq!(seen, mv1_ip);
    let got = wait_until(Duration::from_secs(20), "macvlan to macvlan", || {
        tcp_once(&mv1, &mv2, &mv2_ip)
    });
    assert_eq!(got, "hello across hosts");
    // ipvlan and an 802.1Q parent: refused by the host's kernel, named in the error.
    ctl(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "-o",
        "parent=lan0",
        "--subnet",
        "192.0.3.0/24",
        "iv",
    ]);
    ctl(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=lan0.50",
        "--subnet",
        "192.0.4.0/24",
        "vl",
    ]);
    for (net, lacks) in [("iv", "ipvlan"), ("vl", "802.1Q")] {
        let (ok, err) = grpcurl_create(
            &control,
            &data,
            &format!(r#"{{"name":"s-{net}","host":"h1","networks":[{{"network":"{net}"}}]}}"#),
        );
        assert!(!ok, "{net}: {err}");
        assert!(
            err.contains("FailedPrecondition") && err.contains("h1") && err.contains(lacks),
            "{net}: {err}"
        );
        assert!(
            weftctl(
                &control,
                &data,
                &["sandbox", "inspect", &format!("s-{net}")]
            )
            .is_err()
        );
    }

    // A driver-agent killed with SIGKILL while the overlay changes; once it runs again its FDB
    // and neighbour entries are the gateway's view. A disconnected endpoint leaves every
    // other host's FDB.
    let ov_id = {
        let v = json(&ctl(&["--format", "json", "network", "inspect", "ov"]));
        let n = if v.is_array() { v[0].clone() } else { v };
        n["id"].as_str().unwrap().to_owned()
    };
    converged(&control, &data, &machines, "ov", &ov_id);
    let killed = agent_pid("h3").expect("h3's agent runs");
    kill(killed, Signal::SIGKILL).unwrap();
    ctl(&["network", "disconnect", "ov", "m2"]);
    made.create("m4", &["--host", "h1", "--network", "ov"]);
    restart_after_kill(&mut machines[2], killed);
    converged(&control, &data, &machines, "ov", &ov_id);
    let (m4, _) = sandbox(&control, &data, "m4");
    let got = wait_until(Duration::from_secs(30), "TCP to the restarted host", || {
        tcp_once(&m4, &members[2].0, &members[2].1)
    });
    assert_eq!(got, "hello across hosts");

    // A host taken down (its weft up stopped): the others keep working; after the grace period
    // its endpoints are marked down; `host rm` releases its addresses.
    machines[1].weft = None;
    wait_until(Duration::from_secs(30), "h2 down", || {
        hosts(&control, &data)
            .into_iter()
            .find(|h| h.0 == "h2" && h.1 == "HOST_STATE_DOWN")
    });
    let got = wait_until(Duration::from_secs(30), "TCP while h2 is down", || {
        tcp_once(&members[0].0, &members[2].0, &members[2].1)
    });
    assert_eq!(got, "hello across hosts");
    wait_until(
        Duration::from_secs(30),
        "h2's endpoints marked down",
        || {
            let v = json(&ctl(&["--format", "json", "sandbox", "inspect", "x2"]));
            let s = if v.is_array() { v[0].clone() } else { v };
            s["endpoints"][0]["hostDown"]
                .as_bool()
                .unwrap_or(false)
                .then_some(())
        },
    );
    let removed = ctl(&["host", "rm", "h2"]);
    assert!(
        removed.contains("x2") && removed.contains("y2"),
        "{removed}"
    );
    let tls_dir = data.join("pki").display().to_string();
    ctl(&["ipam", "check", "--tls-dir", &tls_dir]);
    // Joined again as a reinstalled machine (a fresh data directory and a new token: its old
    // certificates went with its removal), its agent finds nothing wanted there and removes what
    // the down host left behind.
    machines[1].data = dir.path().join("h2-again");
    machines[1].up(&control, &data, true);

    // Everything removed through the API; then every host is exactly as it was.
    drop(made);
    for net in ["ov", "other", "local-br", "inner", "mv", "iv", "vl"] {
        ctl(&["network", "rm", net]);
    }
    for (i, m) in machines.iter().enumerate() {
        as_it_was(&m.ns, &m.name, &before[i]);
    }
    for m in &mut machines {
        m.weft = None;
    }
    drop(first);
    for (i, m) in machines.iter().enumerate() {
        assert_eq!(
            m.ns.kernel_snapshot(),
            before[i],
            "h{} after weft stopped",
            i + 1
        );
    }
    drop(pg);
}

/// After its agent (`killed`) was killed: `weft up` on the machine starts a new one (it heals)
/// and keeps running.
fn restart_after_kill(m: &mut Machine, killed: Pid) {
    wait_until(Duration::from_secs(10), "a new agent", || {
        m.weft.as_mut().unwrap().assert_running();
        agent_pid(&m.name).filter(|p| *p != killed)
    });
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in namespaces")]
fn three_joined_hosts_on_sqlite_overlay_macvlan_host_down_and_a_killed_agent() {
    three_host_world(false);
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in namespaces")]
fn three_joined_hosts_on_postgres_overlay_macvlan_host_down_and_a_killed_agent() {
    three_host_world(true);
}
