//! The scale benchmark: N sandboxes (default 5,000) on one host over NETWORKS bridge networks
//! (default 10, round robin), each with one published TCP port (host ports 20000, 20001, …),
//! created through the public API with IPAM, the agent and DNS all real (release binaries).
//!
//! Run it with `bash bench/scale.sh [N] [NETWORKS]`. It prints:
//!
//! 1. `CreateSandbox` p50/p99 of every 500 creates (so of the first and the last 500, and at
//!    1,000), and the ratio of the last 500's p50 to the first 500's (progress goes to stderr);
//! 2. the agent's reconciliation passes once everything is in place (nothing to change), as the
//!    agent measures them itself (its `reconciliation done` and `reconciliation steps` log
//!    lines: fetching the desired state, ensuring every object, the firewall, orphans);
//! 3. an agent restart: a TCP connection from a namespace playing "the internet" through one
//!    sandbox's published port to an echo listener inside that sandbox carries data both ways
//!    while the agent is killed (SIGKILL, by PID) and started again with the same command line;
//!    "converged" is the restarted agent's first reconciliation pass finished with no failure
//!    (every desired object ensured), timed from the kill;
//! 4. the resident memory (VmRSS) of each service after the creates;
//! 5. the load average at the start and at the end.
//!
//! Not timed, and failing loudly: after the creates and again after the restart, the host's
//! `nft -j list ruleset` holds exactly one element per published port in each of the two
//! unbound IPv4 DNAT maps (the sandbox's address, its port) and nothing in the other six, and
//! the host holds exactly the endpoints' host-side veths.
//!
//! Why the benchmark supervises the services itself rather than running `weft up`: `weft up`
//! stops the whole stack when one service dies (issue 19), so an agent killed under it cannot
//! be restarted alone. The benchmark starts the four services exactly as `weft up` does (its
//! `plan`: the same binaries, flags, user, data directory layout and order), so killing and
//! restarting the agent is what a supervisor that restarts it would do. `weft up` itself runs
//! once, briefly, in a namespace of its own, for its memory figure (it keeps no per-sandbox
//! state).
//!
//! Everything runs in namespaces the benchmark creates ("the host", "the internet", and the
//! sandboxes the agent makes); they, and the services, are removed on exit, also on failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Sandboxes, ms, pct, sorted};
use serde_json::Value;
use weft::plan::{Netns, Service, UpConfig};
use weft_proto::gateway::v1 as pb;
use weft_testkit::netns::{HOST_UPLINK, INTERNET, TestNs, run, tcp_listener_in, wire_uplink};

const FIRST_HOST_PORT: u32 = 20_000;
/// Creates per progress line and per row of the create table.
const WINDOW: usize = 500;
/// Limits of the arguments: host ports must stay below 65,536; each network is a /16.
const MAX_N: usize = 40_000;
const MAX_NETWORKS: usize = 50;
/// How long the agent may take to finish a reconciliation pass before the benchmark fails.
const PASS_DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    let n = arg("WEFT_BENCH_N", 5_000, 1, MAX_N);
    let networks = arg("WEFT_BENCH_NETWORKS", 10, 1, MAX_NETWORKS);
    // (0 skips them: for a run whose agent is told not to reconcile on its own.)
    let passes = arg("WEFT_BENCH_RECONCILES", 3, 0, 20);
    let bins = PathBuf::from(std::env::var("WEFT_BENCH_BINS").expect("WEFT_BENCH_BINS"));
    let mut out = Output::default();
    out.line(format!(
        "scale benchmark: {n} sandboxes over {networks} bridge networks, one published TCP port each, one host"
    ));
    out.line(format!("load average at start: {}", common::load_average()));
    // The services inherit the environment: say which of their settings it changes.
    for (k, v) in
        std::env::vars().filter(|(k, _)| k.starts_with("WEFT_") && !k.starts_with("WEFT_BENCH"))
    {
        out.line(format!("service setting from the environment: {k}={v}"));
    }

    // weft up's own memory, in a namespace of its own, before anything else runs.
    let weft_rss = weft_up_rss(&bins);

    let internet = TestNs::named("sc-inet").with_lo_up();
    let host = TestNs::named("sc-host");
    wire_uplink(&host, &internet);
    let rt = common::enter(&host.path);
    rt.block_on(async {
        let data = tempfile::tempdir().unwrap();
        // The services' user must reach its data directory inside this one.
        std::fs::set_permissions(
            data.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let mut stack = Stack::start(&bins, &host, data.path()).await;
        if let Err(e) = measure(&mut stack, &internet, n, networks, passes, &mut out).await {
            panic!("{e}\n--- agent log (tail) ---\n{}", stack.agent_log_tail());
        }
        // Dropping `stack` stops the services and removes the sandboxes' namespaces.
    });
    match weft_rss {
        Ok(kb) => out.line(format!(
            "RSS weft          {:>8.1} MiB  (weft up supervising an idle stack: it keeps no per-sandbox state)",
            kib_to_mib(kb)
        )),
        Err(e) => out.line(format!("RSS weft          not measured: {e}")),
    }
    out.line(format!("load average at end: {}", common::load_average()));
    out.print();
}

/// A numeric setting from the environment, within `[min, max]`.
fn arg(name: &str, default: usize, min: usize, max: usize) -> usize {
    let Ok(raw) = std::env::var(name) else {
        return default;
    };
    match raw.parse::<usize>() {
        Ok(v) if (min..=max).contains(&v) => v,
        _ => panic!("{name}={raw:?}: expected a whole number from {min} to {max}"),
    }
}

async fn measure(
    stack: &mut Stack,
    internet: &TestNs,
    n: usize,
    networks: usize,
    passes: usize,
    out: &mut Output,
) -> Result<(), String> {
    let channel = common::gateway_channel(&stack.config.data_dir).await?;
    let mut nets = pb::network_service_client::NetworkServiceClient::new(channel.clone());
    for k in 0..networks {
        common::create_network(&mut nets, &net_name(k), &format!("10.{}.0.0/16", 100 + k)).await?;
    }
    let mut sb = Sandboxes::new(channel);

    // 1. The creates.
    let started = Instant::now();
    let mut times = Vec::with_capacity(n);
    let mut made = Vec::with_capacity(n);
    for i in 0..n {
        let port = FIRST_HOST_PORT + u32::try_from(i).unwrap();
        let (t, s) = common::create(
            &mut sb,
            &format!("s-{i}"),
            &net_name(i % networks),
            Some(port),
        )
        .await?;
        times.push(t);
        made.push(Made::from_pb(&s, port)?);
        if (i + 1) % WINDOW == 0 || i + 1 == n {
            let w = sorted(&times[(i + 1).saturating_sub(WINDOW)..]);
            eprintln!(
                "{:>6} created in {:>6.1} s; last {}: p50 {:.2} ms, p99 {:.2} ms",
                i + 1,
                started.elapsed().as_secs_f64(),
                w.len(),
                ms(pct(&w, 50)),
                ms(pct(&w, 99))
            );
        }
    }
    let creates_done = Instant::now();
    out.create_table(&times, started.elapsed());

    // 4. Memory, right after the creates.
    for (name, pid) in stack.pids() {
        out.line(match vm_rss_kib(pid) {
            Some(kb) => format!("RSS {name:<13} {:>8.1} MiB", kib_to_mib(kb)),
            None => format!("RSS {name:<13} not readable"),
        });
    }

    // The kernel holds exactly what was created (not timed).
    let links = common::Links::new().await;
    match check_kernel(&made, &links).await {
        Ok(()) => out.line(format!(
            "kernel check after the creates: {} elements in dnat4_addr and in dnat4_port, the other DNAT maps empty, {} host veths: exactly as expected",
            made.len(),
            made.len()
        )),
        Err(e) => out.fail(format!("after the creates, {e}")),
    }

    // 2. Reconciliation with nothing to change: passes that start after the last create.
    let mut seen = Vec::new();
    let mut log = stack.agent_log_from_end();
    while seen.len() < passes {
        let pass = log
            .next_pass(PASS_DEADLINE + Duration::from_secs(60))
            .await?;
        if pass
            .seen
            .checked_sub(pass.total())
            .is_some_and(|s| s < creates_done)
        {
            // (Started while creates were still going on.)
            continue;
        }
        seen.push(pass);
    }
    if passes > 0 {
        out.line(String::new());
        out.line("agent reconciliation with everything in place (the agent's own figures):".into());
        for p in &seen {
            out.line(format!("  {}", p.describe()));
        }
    }

    // 3. The agent killed and restarted while a TCP connection goes through a published port.
    restart(stack, internet, &made, &links, out).await
}

fn net_name(k: usize) -> String {
    format!("scale-{k}")
}

/// What one create made, as the gateway answered.
struct Made {
    port: u32,
    ipv4: String,
    endpoint_id: String,
    netns: PathBuf,
}

impl Made {
    fn from_pb(s: &pb::Sandbox, port: u32) -> Result<Self, String> {
        let ep = s
            .endpoints
            .first()
            .ok_or_else(|| format!("sandbox {} has no endpoint", s.name))?;
        let ipv4 = ep
            .ipv4_address
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            port,
            ipv4,
            endpoint_id: ep.id.clone(),
            netns: PathBuf::from(&s.netns_path),
        })
    }
}

// ----------------------------------------------------------------------------------------------
// The kernel's view

/// The DNAT maps' elements as `nft -j list ruleset` shows them: map name → (key, value) as JSON
/// text, so that any unexpected element shows as it is.
fn dnat_elements() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let v: Value = serde_json::from_str(&run("nft", &["-j", "list", "ruleset"])).unwrap();
    let mut out = BTreeMap::new();
    for o in v["nftables"].as_array().into_iter().flatten() {
        let Some(m) = o["map"].as_object() else {
            continue;
        };
        if m["table"] != "weft" || !m["name"].as_str().unwrap_or("").starts_with("dnat") {
            continue;
        }
        let elems = m
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|pair| {
                // With a comment, the key is wrapped: {"elem": {"val": …, "comment": …}}.
                let key = pair[0].get("elem").map_or(&pair[0], |e| &e["val"]);
                (key.to_string(), pair[1].to_string())
            })
            .collect();
        out.insert(m["name"].as_str().unwrap().to_owned(), elems);
    }
    out
}

/// Fails unless the host's DNAT maps hold exactly one element per published port (in the two
/// unbound IPv4 maps) and nothing else, and its Weft veths are exactly the endpoints'.
async fn check_kernel(made: &[Made], links: &common::Links) -> Result<(), String> {
    let key = |m: &Made| serde_json::json!({"concat": ["tcp", m.port]}).to_string();
    let mut want: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (name, _, _, _) in driver_agent::firewall::rules::DNAT_MAPS {
        want.insert(name.to_owned(), BTreeSet::new());
    }
    for m in made {
        let addr = (key(m), Value::from(m.ipv4.as_str()).to_string());
        let port = (key(m), Value::from(80).to_string());
        want.get_mut("dnat4_addr").unwrap().insert(addr);
        want.get_mut("dnat4_port").unwrap().insert(port);
    }
    let held = dnat_elements();
    let mut problems = Vec::new();
    for (name, w) in &want {
        let empty = BTreeSet::new();
        let h = held.get(name).unwrap_or(&empty);
        if !held.contains_key(name) {
            problems.push(format!("map {name} is missing"));
        }
        let missing: Vec<_> = w.difference(h).take(5).collect();
        let extra: Vec<_> = h.difference(w).take(5).collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "map {name}: {} missing (first: {missing:?}), {} unexpected (first: {extra:?})",
                w.difference(h).count(),
                h.difference(w).count()
            ));
        }
    }
    let veths: BTreeSet<String> = made
        .iter()
        .map(|m| driver_agent::names::veth_host_name(&m.endpoint_id))
        .collect();
    let prefix = driver_agent::names::veth_host_name("");
    let held_veths: BTreeSet<String> = links
        .names()
        .await
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    if held_veths != veths {
        problems.push(format!(
            "host veths: {} missing (first: {:?}), {} unexpected (first: {:?})",
            veths.difference(&held_veths).count(),
            veths.difference(&held_veths).take(5).collect::<Vec<_>>(),
            held_veths.difference(&veths).count(),
            held_veths.difference(&veths).take(5).collect::<Vec<_>>()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the kernel does not hold what was created:\n  {}",
            problems.join("\n  ")
        ))
    }
}

fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[allow(clippy::cast_precision_loss)]
fn kib_to_mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// `weft up` in a fresh namespace with an empty data directory: its own VmRSS once its
/// services answer, in KiB.
fn weft_up_rss(bins: &Path) -> Result<u64, String> {
    let ns = TestNs::named("sc-weft");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let up = common::WeftUp::start(bins, &ns.name, dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    // weft up prints its table of services once every one is healthy.
    while !up.log_text().contains("7703") {
        if Instant::now() > deadline {
            return Err(format!("weft up did not come up: {}", up.log_text()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    vm_rss_kib(up.pid()).ok_or_else(|| "cannot read its /proc status".into())
}

// ----------------------------------------------------------------------------------------------
// The services, started as `weft up` starts them

/// The four services, started one after another (each once the one before it is healthy)
/// with `weft up`'s plan; stopped (SIGTERM by PID, SIGKILL after 30 s) in reverse order when
/// dropped, and then the sandboxes' namespaces the agent made are deleted, also on failure.
struct Stack {
    config: UpConfig,
    running: Vec<(Service, Child)>,
}

impl Stack {
    async fn start(bins: &Path, host: &TestNs, dir: &Path) -> Self {
        let data_dir = dir.join("weft-data");
        let ids = weft::user::ensure(weft::user::DEFAULT_USER).unwrap();
        weft::user::prepare_data_dir(&data_dir, ids).unwrap();
        let tokens = weft::tokens::ensure(&data_dir, Some(ids)).unwrap();
        let tls = weft::pki::ensure(&data_dir, "local", None, Some(ids)).unwrap();
        let config = UpConfig {
            data_dir,
            bin_dir: bins.to_owned(),
            host_name: "local".into(),
            netns: Some(Netns {
                name: host.name.clone(),
                path: host.path.clone(),
            }),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
            // Nothing asks, but an upstream must be one of ours.
            dns_upstreams: vec![INTERNET.into()],
            user: weft::user::DEFAULT_USER.into(),
            run_as: Some(ids),
            tokens: Some(tokens),
            tls: Some(tls),
            advertise: None,
            join: None,
            joined: None,
            postgres: None,
        };
        let mut stack = Self {
            config,
            running: Vec::new(),
        };
        for s in stack.config.services() {
            let child = stack.spawn(&s);
            stack.running.push((s.clone(), child));
            if let Err(e) = wait_healthy(&s, stack.config.start_timeout).await {
                panic!(
                    "{e}\n{}",
                    weft::logs::indented(&weft::logs::tail(&s.log, 20))
                );
            }
        }
        stack
    }

    /// Starts `s` as `weft up` does: its command line from the plan, its output appended to
    /// its log, a process group of its own. (JSON logs: the benchmark reads the agent's.)
    fn spawn(&self, s: &Service) -> Child {
        let (program, args) = self.config.command_line(s);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&s.log)
            .unwrap();
        std::os::unix::process::CommandExt::process_group(
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .env("NO_COLOR", "1")
                .env("WEFT_LOG_FORMAT", "json"),
            0,
        )
        .spawn()
        .unwrap()
    }

    fn pids(&self) -> Vec<(&'static str, i32)> {
        self.running
            .iter()
            .map(|(s, c)| (s.name, i32::try_from(c.id()).unwrap()))
            .collect()
    }

    fn agent(&mut self) -> &mut (Service, Child) {
        self.running
            .iter_mut()
            .find(|(s, _)| s.name == "driver-agent")
            .unwrap()
    }

    fn agent_log_from_end(&mut self) -> AgentLog {
        let path = self.agent().0.log.clone();
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        AgentLog { path, offset }
    }

    fn agent_log_tail(&mut self) -> String {
        weft::logs::indented(&weft::logs::tail(&self.agent().0.log, 20))
    }

    /// SIGKILL to the agent (by PID), reaped; returns when it is gone.
    fn kill_agent(&mut self) {
        let (_, child) = self.agent();
        kill(child, nix::sys::signal::Signal::SIGKILL);
        child.wait().unwrap();
    }

    /// Starts the agent again with the same command line.
    fn restart_agent(&mut self) {
        let s = self.agent().0.clone();
        let child = self.spawn(&s);
        self.agent().1 = child;
    }
}

fn kill(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, sig);
}

async fn wait_healthy(s: &Service, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !weft::health::serving(s.listen, None, s.health_tls.as_ref()).await {
        if Instant::now() > deadline {
            return Err(format!("{} is not healthy after {timeout:?}", s.name));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (s, child) in self.running.iter_mut().rev() {
            if child.try_wait().ok().flatten().is_some() {
                continue;
            }
            kill(child, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + self.config.stop_timeout;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    eprintln!("{} did not stop in time: killed", s.name);
                    kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The services' logs, kept where asked (for reading where the time went).
        if let Ok(keep) = std::env::var("WEFT_BENCH_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.config.log_dir())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::copy(e.path(), Path::new(&keep).join(e.file_name()));
            }
        }
        // The agent keeps its sandboxes' namespaces when it stops; they are this run's, marked
        // as the agent marks them (a `weft-<id>` namespace and that sandbox's files).
        let files = self.config.data_dir.join("agent").join("sandboxes");
        let mut left = 0;
        for e in std::fs::read_dir(&files).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let name = driver_agent::sandbox::managed_netns_name(&id);
            if let Err(err) = driver_agent::netns::delete_named(&name) {
                eprintln!("cannot delete namespace {name}: {err}");
                left += 1;
            }
        }
        if left > 0 {
            eprintln!("{left} sandbox namespaces left behind");
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The agent's reconciliation passes, from its JSON log

/// The agent's log, read from `offset` on.
struct AgentLog {
    path: PathBuf,
    offset: u64,
}

/// One reconciliation pass as the agent logged it.
struct Pass {
    /// When the benchmark saw its last line (polled every 10 ms).
    seen: Instant,
    fields: BTreeMap<String, f64>,
}

impl Pass {
    fn f(&self, k: &str) -> f64 {
        self.fields.get(k).copied().unwrap_or(f64::NAN)
    }

    fn total(&self) -> Duration {
        Duration::from_secs_f64((self.f("fetch_ms") + self.f("apply_ms")).max(0.0) / 1000.0)
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn count(&self, k: &str) -> u64 {
        self.f(k) as u64
    }

    fn describe(&self) -> String {
        format!(
            "pass {:.1} ms = fetch {:.1} ms + apply {:.1} ms (convert {:.1}, survey {:.1}, ensure {:.1}: sandboxes {:.1}, networks {:.1}, endpoints {:.1}; firewall {:.1}, orphans {:.1}); {} endpoints, {} ensured, {} changes, {} failures",
            self.f("fetch_ms") + self.f("apply_ms"),
            self.f("fetch_ms"),
            self.f("apply_ms"),
            self.f("convert_ms"),
            self.f("survey_ms"),
            self.f("ensure_ms"),
            self.f("sandboxes_ms"),
            self.f("networks_ms"),
            self.f("endpoints_ms"),
            self.f("firewall_ms"),
            self.f("orphans_ms"),
            self.count("endpoints"),
            self.count("checked"),
            self.count("changes"),
            self.count("failures"),
        )
    }
}

impl AgentLog {
    /// Waits for the next pass: a `reconciliation steps` line and then its `reconciliation
    /// done` line.
    async fn next_pass(&mut self, timeout: Duration) -> Result<Pass, String> {
        let deadline = Instant::now() + timeout;
        let mut fields = BTreeMap::new();
        loop {
            for line in self.new_lines() {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                // (The JSON format puts the fields beside the message, or under "fields".)
                let f = if v["fields"].is_object() {
                    &v["fields"]
                } else {
                    &v
                };
                let msg = f["message"].as_str().unwrap_or("");
                if msg != "reconciliation steps" && msg != "reconciliation done" {
                    continue;
                }
                for (k, x) in f.as_object().into_iter().flatten() {
                    if let Some(x) = x.as_f64() {
                        fields.insert(k.clone(), x);
                    }
                }
                if msg == "reconciliation done" {
                    return Ok(Pass {
                        seen: Instant::now(),
                        fields,
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no reconciliation pass logged within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whole lines appended since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(self.offset)).is_err()
            || f.read_to_end(&mut buf).is_err()
        {
            return Vec::new();
        }
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        self.offset += u64::try_from(end + 1).unwrap();
        String::from_utf8_lossy(&buf[..end])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

// ----------------------------------------------------------------------------------------------
// The restart, with a TCP connection through a published port

async fn restart(
    stack: &mut Stack,
    internet: &TestNs,
    made: &[Made],
    links: &common::Links,
    out: &mut Output,
) -> Result<(), String> {
    // An echo listener inside the sandbox in the middle of the run, reached from the internet
    // through its published port on the host's uplink.
    let target = &made[made.len() / 2];
    let listener = tcp_listener_in(&target.netns, "0.0.0.0:80".parse().unwrap()).await;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let addr: SocketAddr = format!("{HOST_UPLINK}:{}", target.port).parse().unwrap();
    let stream = driver_agent::netns::run_in(&internet.path, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .await
    .map_err(|e| format!("enter the internet namespace: {e}"))?
    .map_err(|e| format!("connect to {addr} from the internet: {e}"))?;
    let pinger = Pinger::start(stream);
    pinger.wait_for_round_trips(20).await?;

    let mut log = stack.agent_log_from_end();
    let killed = Instant::now();
    stack.kill_agent();
    let dead = killed.elapsed();
    stack.restart_agent();
    let agent = stack.agent().0.clone();
    wait_healthy(&agent, Duration::from_secs(60)).await?;
    let serving = killed.elapsed();
    // Converged: the first pass of the restarted agent has ended (every desired object
    // ensured; what it could not repair is counted in its failures, and a failure is reported).
    let pass = log.next_pass(PASS_DEADLINE).await?;
    let converged = pass.seen - killed;
    if pass.count("failures") > 0 {
        out.fail(format!(
            "the restarted agent's first pass left {} failures (see its \"cannot repair\" lines)",
            pass.count("failures")
        ));
    }
    let passes = [pass];
    let converged_at = Instant::now();
    // A while longer, so that the connection is seen working after convergence too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let trips = pinger.stop()?;
    let during = trips
        .iter()
        .filter(|t| **t >= killed && **t <= converged_at)
        .count();
    let after = trips.iter().filter(|t| **t > converged_at).count();
    let longest_gap = trips
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let kernel = check_kernel(made, links).await;
    if during == 0 || after == 0 {
        return Err(format!(
            "the TCP connection through port {} stalled: {during} round trips between the kill and convergence, {after} after",
            target.port
        ));
    }

    out.line(String::new());
    out.line(format!(
        "agent restart with {} endpoints (SIGKILL by PID, started again with the same command line):",
        made.len()
    ));
    out.line(format!(
        "  dead after {:.1} ms; serving gRPC {:.0} ms after the kill; converged {:.0} ms after the kill",
        ms(dead),
        ms(serving),
        ms(converged)
    ));
    for p in &passes {
        out.line(format!("  first pass after the restart: {}", p.describe()));
    }
    out.line(format!(
        "  TCP through published port {} (internet -> host uplink -> sandbox echo): {during} round trips between the kill and convergence, {after} in the second after, none lost, longest gap {:.1} ms",
        target.port,
        ms(longest_gap)
    ));
    match kernel {
        Ok(()) => out.line("  kernel check after the restart: exactly as expected".into()),
        Err(e) => out.fail(format!("after the restart, {e}")),
    }
    Ok(())
}

/// A thread that sends a counter over a TCP connection and reads it back, every few
/// milliseconds, recording when each round trip completed; it stops at the first error.
struct Pinger {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<Instant>, Option<String>)>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Pinger {
    fn start(mut stream: TcpStream) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, c) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let mut trips = Vec::new();
            stream
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let mut i: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let mut back = [0u8; 8];
                let res = stream
                    .write_all(&i.to_be_bytes())
                    .and_then(|()| stream.read_exact(&mut back));
                match res {
                    Ok(()) if back == i.to_be_bytes() => {
                        trips.push(Instant::now());
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => return (trips, Some(format!("round trip {i}: wrong echo {back:?}"))),
                    Err(e) => return (trips, Some(format!("round trip {i}: {e}"))),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (trips, None)
        });
        Self {
            stop,
            thread,
            count,
        }
    }

    async fn wait_for_round_trips(&self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline || self.thread.is_finished() {
                return Err("the TCP connection through the published port carries nothing".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn stop(self) -> Result<Vec<Instant>, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join().unwrap() {
            (trips, None) => Ok(trips),
            (trips, Some(e)) => Err(format!(
                "the TCP connection through the published port broke after {} round trips: {e}",
                trips.len()
            )),
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Figures

/// What is printed at the end (progress goes to stderr as it happens).
#[derive(Default)]
struct Output {
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Output {
    /// A line of the report, also printed at once (a failure later keeps what came before).
    fn line(&mut self, l: String) {
        eprintln!("{l}");
        self.lines.push(l);
    }

    /// A check that failed (the kernel, the restarted agent): reported like a figure, and the
    /// benchmark fails at the end.
    fn fail(&mut self, l: String) {
        self.line(format!("FAILED: {l}"));
        self.failures.push(l);
    }

    fn create_table(&mut self, times: &[Duration], took: Duration) {
        self.line(format!(
            "{} creates in {:.1} s",
            times.len(),
            took.as_secs_f64()
        ));
        self.line(String::new());
        self.line(format!(
            "{:<14} {:>10} {:>10} {:>10}",
            "creates", "p50 ms", "p99 ms", "max ms"
        ));
        for (k, chunk) in times.chunks(WINDOW).enumerate() {
            let w = sorted(chunk);
            self.line(format!(
                "{:<14} {:>10.2} {:>10.2} {:>10.2}",
                format!("{}-{}", k * WINDOW + 1, k * WINDOW + chunk.len()),
                ms(pct(&w, 50)),
                ms(pct(&w, 99)),
                ms(w.last().copied().unwrap_or_default())
            ));
        }
        let first = sorted(&times[..times.len().min(WINDOW)]);
        let last = sorted(&times[times.len().saturating_sub(WINDOW)..]);
        self.line(format!(
            "last {} p50 / first {} p50 = {:.2} / {:.2} ms = {:.2} (target <= 1.5)",
            last.len(),
            first.len(),
            ms(pct(&last, 50)),
            ms(pct(&first, 50)),
            pct(&last, 50).as_secs_f64() / pct(&first, 50).as_secs_f64()
        ));
        self.line(String::new());
    }

    fn print(&self) {
        println!();
        for l in &self.lines {
            println!("{l}");
        }
        assert!(
            self.failures.is_empty(),
            "checks failed:\n{}",
            self.failures.join("\n")
        );
    }
}
