//! The world an end-to-end test runs in: a namespace playing the host (where `weft up` runs),
//! a namespace playing "the internet" on the host's uplink with a TCP server that tells each
//! client its address and a fake upstream DNS server, and the tools to look and talk: weftctl,
//! grpcurl, dig, `ip -j`, `nft -j`, and TCP/UDP from inside any namespace.
//!
//! Addresses are TEST-NET ones, only ever inside these namespaces: the uplink is
//! 192.0.2.1/24 (host) — 192.0.2.254/24 (internet).

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use driver_agent::netns;
use serde_json::Value;
use weft_testkit::netns::{TestNs, tcp_listener_in, udp_socket_in};

use crate::recorder::Recorder;

pub use weft_testkit::netns::{HOST_UPLINK, INTERNET};
/// What the fake upstream answers for every A question.
pub const UPSTREAM_ANSWER: &str = "198.51.100.7";

pub use weft_testkit::netns::run;

/// Where the workspace's binaries are (`cargo build`/`nextest` put them next to `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    weft_testkit::built_bins(exe.parent().unwrap().parent().unwrap().to_owned())
}

/// The host and internet namespaces, wired, with the internet's servers running.
pub struct World {
    pub host: TestNs,
    pub internet: TestNs,
    /// Queries the fake upstream DNS server has answered.
    pub upstream_queries: Arc<AtomicUsize>,
    pub bins: PathBuf,
    /// The admin token file of the running `weft up` (set by [`Weft::up`]): weftctl and
    /// grpcurl present it.
    pub token_file: std::sync::Mutex<Option<PathBuf>>,
    /// The proxy weftctl and grpcurl reach the gateway through: it notes every call, for the
    /// audit check when the test ends (`crate::audit`).
    pub recorder: Arc<Recorder>,
}

impl World {
    pub async fn new() -> Self {
        let host = TestNs::named("e2e-host").with_lo_up();
        let internet = TestNs::named("e2e-inet").with_lo_up();
        weft_testkit::netns::wire_uplink(&host, &internet);
        let recorder = Arc::new(Recorder::start(&host.path).await);
        let world = Self {
            host,
            internet,
            upstream_queries: Arc::new(AtomicUsize::new(0)),
            bins: bin_dir(),
            token_file: std::sync::Mutex::new(None),
            recorder,
        };
        // The internet: a TCP server that answers "from <peer address>", and a DNS server.
        who_is_server(
            &world.internet.path,
            format!("{INTERNET}:80").parse().unwrap(),
        )
        .await;
        fake_upstream(
            &world.internet.path,
            format!("{INTERNET}:53").parse().unwrap(),
            world.upstream_queries.clone(),
        )
        .await;
        world
    }

    /// Where weftctl and grpcurl reach the gateway: through the recorder.
    pub fn gateway(&self) -> String {
        self.recorder.addr.to_string()
    }

    /// `weftctl ARGS…` run inside the host namespace, with the admin token.
    pub fn weftctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.host.exec(self.bins.join("weftctl"));
        if let Some(f) = self.token_file.lock().unwrap().as_ref() {
            cmd.arg("--token-file").arg(f);
        }
        let out = cmd
            .args(args)
            .env("WEFT_GATEWAY", self.gateway())
            .env_remove("WEFT_TOKEN")
            .output()
            .unwrap();
        weft_testkit::logs::keep_stderr("weftctl", &out);
        out
    }

    /// `-H 'authorization: Bearer <admin token>'` for grpcurl (nothing before `weft up`
    /// wrote the token).
    pub fn bearer_header(&self) -> Vec<String> {
        let file = self.token_file.lock().unwrap().clone();
        file.and_then(|f| weft_runtime::access::read_token_file(&f).ok())
            .map(|t| vec!["-H".to_owned(), format!("authorization: Bearer {t}")])
            .unwrap_or_default()
    }

    /// Like [`World::weftctl`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.weftctl(args);
        assert!(
            out.status.success(),
            "weftctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `weftctl --format json sandbox inspect NAME` → the sandbox object.
    pub fn sandbox(&self, name: &str) -> Value {
        let v: Value =
            serde_json::from_str(&self.ok(&["--format", "json", "sandbox", "inspect", name]))
                .unwrap();
        v[0].clone()
    }

    /// `weftctl --format json network inspect NAME` → the network object.
    pub fn network(&self, name: &str) -> Value {
        let v: Value =
            serde_json::from_str(&self.ok(&["--format", "json", "network", "inspect", name]))
                .unwrap();
        v[0].clone()
    }

    /// The real grpcurl against the gateway inside the host namespace.
    pub fn grpcurl(&self, method: &str, body: &str) -> Value {
        let out = self
            .host
            .exec(weft_testkit::grpcurl())
            .args(self.bearer_header())
            .args(["-plaintext", "-d", body, &self.gateway(), method])
            .output()
            .unwrap();
        weft_testkit::logs::keep_stderr("grpcurl", &out);
        assert!(
            out.status.success(),
            "grpcurl {method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The real grpcurl against the gateway, for a call that must fail: the status it printed
    /// (`-format-error`: `code`, `message`, `details` as JSON).
    pub fn grpcurl_err(&self, method: &str, body: &str) -> Value {
        let out = self
            .host
            .exec(weft_testkit::grpcurl())
            .args(self.bearer_header())
            .args([
                "-plaintext",
                "-format-error",
                "-d",
                body,
                &self.gateway(),
                method,
            ])
            .output()
            .unwrap();
        weft_testkit::logs::keep_stderr("grpcurl", &out);
        assert!(
            !out.status.success(),
            "grpcurl {method} {body} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // (grpcurl prints the formatted status on stderr.)
        serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
            panic!(
                "grpcurl {method} printed no status ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The host namespace as the kernel sees it: links, addresses, routes, nftables, in a
    /// normalised form (no counters, indexes or timers).
    pub fn host_snapshot(&self) -> String {
        let h = &self.host.name;
        let ip = |args: &[&str]| {
            let mut all = vec!["-n", h, "-j"];
            all.extend_from_slice(args);
            let v: Value = serde_json::from_str(&run("ip", &all)).unwrap_or(Value::Null);
            normalise(v)
        };
        let nft = self.host.nft_json(&["list", "ruleset"]);
        format!(
            "links {}\naddrs {}\nroutes {}\nroutes6 {}\nnft {}",
            ip(&["link", "show"]),
            ip(&["addr", "show"]),
            ip(&["route", "show"]),
            ip(&["-6", "route", "show"]),
            normalise(nft)
        )
    }
}

/// Drops what changes without anything being configured: counters, indexes, timers, stats.
fn normalise(v: Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "ifindex"
                            | "handle"
                            | "valid_life_time"
                            | "preferred_life_time"
                            | "stats64"
                            | "metainfo"
                            | "operstate"
                            // Rule counters count traffic, not configuration.
                            | "packets"
                            | "bytes"
                            // Duplicate address detection still running (a timer).
                            | "tentative"
                    )
                })
                .map(|(k, v)| (k, normalise(v)))
                .collect(),
        ),
        v => v,
    }
}

/// `weft up` running inside the host namespace; stopped with SIGTERM (by PID) when dropped.
/// When the test ends without a panic, the drop first checks the audit log against what the
/// test sent (`crate::audit`), and fails the test if they differ.
pub struct Weft {
    child: Option<Child>,
    _data: tempfile::TempDir,
    pub log: PathBuf,
    recorder: Arc<Recorder>,
    /// The recorder's calls before this `weft up` (none of them reached it).
    calls_before: usize,
    host_ns: String,
}

impl Weft {
    pub async fn up(world: &World) -> Self {
        Self::up_with_env(world, &[]).await
    }

    /// `weft up` with extra environment (the services inherit it: `WEFT_AGENT_*` reaches the
    /// agent).
    pub async fn up_with_env(world: &World, env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let log = weft_testkit::logs::log_path(data.path(), "weft-up");
        let logfile = std::fs::File::create(&log).unwrap();
        let child = Command::new(world.bins.join("weft"))
            .args(["up", "--netns", &world.host.name, "--data-dir"])
            .arg(data.path().join("weft-data"))
            .arg("--bin-dir")
            .arg(&world.bins)
            .args(["--dns-upstream", &format!("{INTERNET}:53")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        *world.token_file.lock().unwrap() = Some(data.path().join("weft-data").join("admin.token"));
        let mut me = Self {
            child: Some(child),
            _data: data,
            log,
            recorder: world.recorder.clone(),
            calls_before: world.recorder.calls().len(),
            host_ns: world.host.name.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let hosts = world.weftctl(&["--format", "json", "hosts"]);
            if hosts.status.success()
                && String::from_utf8_lossy(&hosts.stdout).contains("HOST_STATE_UP")
            {
                break;
            }
            if let Some(status) = me.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("weft up exited with {status}:\n{}", me.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "weft up did not come up:\n{}",
                me.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        world
            .recorder
            .name_token(&me.admin_token().unwrap(), crate::audit::ADMIN);
        me
    }

    /// The admin token `weft up` wrote.
    fn admin_token(&self) -> Result<String, String> {
        weft_runtime::access::read_token_file(&self.data_dir().join("admin.token"))
            .map_err(|e| e.to_string())
    }

    /// The PID of `weft up` itself (its services are its children).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The data directory `weft up` was given.
    pub fn data_dir(&self) -> PathBuf {
        self._data.path().join("weft-data")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        // Only after a test that passed so far: a failing one has said why already.
        let audit = (!std::thread::panicking()).then(|| {
            let admin = self.admin_token()?;
            crate::audit::check(&self.recorder, self.calls_before, &self.host_ns, &admin)
        });
        self.stop();
        weft_testkit::logs::keep_logs_under(&self.data_dir(), "weft-up");
        // The namespaces the agent made for sandboxes the test left behind (named
        // `weft-<sandbox id>`, with that sandbox's files in the agent's data directory).
        drop(weft_testkit::netns::SandboxNamespaces::of_data_dir(
            &self._data.path().join("weft-data"),
        ));
        if let Some(Err(e)) = audit {
            panic!("audit check: {e}");
        }
    }
}

impl Weft {
    /// SIGTERM (by PID), then SIGKILL if it has not stopped within 15 s.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            weft_testkit::weft_up::stop_child(&mut c);
        }
    }
}

/// A TCP server in `ns` at `addr` that answers every connection with "from <peer ip>\n".
pub async fn who_is_server(ns: &Path, addr: SocketAddr) {
    let listener = tcp_listener_in(ns, addr).await;
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let _ = s
                    .write_all(format!("from {}\n", peer.ip()).as_bytes())
                    .await;
            });
        }
    });
}

/// A UDP server in `ns` at `addr` that echoes every datagram.
pub async fn udp_echo_server(ns: &Path, addr: SocketAddr) {
    let sock = udp_socket_in(ns, addr).await;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], peer);
        }
    });
}

/// Connects from inside `ns` to `to`; returns the first line the server sends.
pub async fn tcp_from(ns: &Path, to: SocketAddr) -> std::io::Result<String> {
    netns::run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(1500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
    })
    .await
    .expect("enter namespace")
}

/// Sends one datagram from inside `ns` to `to`; returns the echo if one comes within 1.5 s.
pub async fn udp_from(ns: &Path, to: SocketAddr, msg: &str) -> Option<String> {
    let msg = msg.to_owned();
    netns::run_in(ns, move || {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
        s.send_to(msg.as_bytes(), to).ok()?;
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .expect("enter namespace")
}

/// Retries `tcp_from` for up to 5 s (rules and routes land asynchronously).
pub async fn tcp_eventually(ns: &Path, to: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tcp_from(ns, to).await {
            Ok(line) => return line,
            Err(e) => assert!(Instant::now() < deadline, "no TCP answer from {to}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real `dig` inside the namespace at `path`, asking `server` (`@127.0.0.11` in a
/// sandbox): the answer section's addresses, and the status (NOERROR, NXDOMAIN, …; "TIMEOUT"
/// when nothing answered).
pub fn dig(path: &str, server: &str, name: &str) -> (String, Vec<String>) {
    let out = Command::new("nsenter")
        .arg(format!("--net={path}"))
        .args(["dig", "+time=2", "+tries=1", &format!("@{server}"), name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("no servers could be reached") {
        return ("TIMEOUT".into(), Vec::new());
    }
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
        .to_owned();
    let answers = text
        .split(";; ANSWER SECTION:")
        .nth(1)
        .map(|s| {
            s.lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (status, answers)
}

/// `ip -j ARGS…` inside the namespace at `path`.
pub use weft_testkit::netns::ip_json_at as ip_in;

/// The IPv4 default gateway of the namespace at `path`.
pub fn default_gateway(path: &str) -> Option<String> {
    ip_in(path, &["-4", "route", "show", "default"])[0]["gateway"]
        .as_str()
        .map(str::to_owned)
}

/// A fake upstream DNS server in `ns` at `addr`: answers every question with one A record
/// ([`UPSTREAM_ANSWER`]) and counts what it answered.
pub async fn fake_upstream(ns: &Path, addr: SocketAddr, count: Arc<AtomicUsize>) {
    let sock = udp_socket_in(ns, addr).await;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..n]) {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = sock.send_to(&reply, peer);
            }
        }
    });
}

/// A reply to a one-question query: the question, then one A record pointing back at it.
fn answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let mut end = 12;
    while *q.get(end)? != 0 {
        end += usize::from(q[end]) + 1;
    }
    end += 5; // the root label, QTYPE, QCLASS
    let question = q.get(12..end)?;
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&q[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    let ip: std::net::Ipv4Addr = UPSTREAM_ANSWER.parse().ok()?;
    r.extend_from_slice(&ip.octets());
    Some(r)
}

/// The fields named by the BadRequest details of a status as grpcurl prints it.
pub fn violated_fields(st: &Value) -> Vec<&str> {
    st["details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["fieldViolations"].as_array().into_iter().flatten())
        .filter_map(|v| v["field"].as_str())
        .collect()
}
