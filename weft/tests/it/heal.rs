//! `weft up` heals: each service killed with SIGKILL (by the PID in the status file) is
//! started again and healthy within 2 s, while a TCP connection between two sandboxes keeps
//! carrying data and the services that depend on the killed one carry on (a sandbox created
//! after each kill gets its address, its kernel links and its name; the host stays up and its
//! heartbeats go on). A service that stops answering its health checks is killed and started
//! again. A service that keeps crashing is reported at each exit, and after the documented
//! limit `weft up` stops the rest and exits 1 naming it.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use weft::status::{ServiceState, StackState, Status};

use crate::{
    TestNs,
    join::{Sandboxes, dig_from, dig_once, hosts, sandbox, table_of, weftctl},
    up::{Weft, grpcurl_with, json},
    wait_until,
};

/// Runs `f` on a thread inside the namespace at `path` (the agent's own way in).
pub(crate) fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(driver_agent::netns::run_in(Path::new(path), f))
        .expect("enter the namespace")
}

/// The status `weft up` keeps in `data`.
fn status(data: &Path) -> Status {
    weft::status::read(data).unwrap()
}

/// The PID of `service` in the status file, while it has one.
fn pid_of(data: &Path, service: &str) -> Option<i32> {
    status(data)
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.pid)
}

/// A TCP connection from one sandbox to an echo server in another.
pub(crate) struct Echo {
    stream: TcpStream,
    sent: u64,
}

impl Echo {
    /// Listens on `ip`:9000 in the namespace at `server`, echoing one connection, and connects
    /// to it from the namespace at `client`.
    pub(crate) fn open(client: &str, server: &str, ip: &str) -> Self {
        let listener = in_netns(server, || TcpListener::bind(("0.0.0.0", 9000))).unwrap();
        std::thread::spawn(move || {
            if let Ok((s, _)) = listener.accept() {
                let mut back = s.try_clone().unwrap();
                let mut from = s;
                let _ = std::io::copy(&mut from, &mut back);
            }
        });
        let to: SocketAddr = format!("{ip}:9000").parse().unwrap();
        let path = client.to_owned();
        let stream = wait_until(Duration::from_secs(30), "a TCP connection", || {
            in_netns(&path, move || {
                TcpStream::connect_timeout(&to, Duration::from_secs(1))
            })
            .ok()
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream, sent: 0 }
    }

    /// Sends a numbered message and reads it back.
    pub(crate) fn round_trip(&mut self, when: &str) {
        self.sent += 1;
        let msg = format!("message {:>8} {when:<40}\n", self.sent);
        self.stream
            .write_all(msg.as_bytes())
            .unwrap_or_else(|e| panic!("send {when}: {e}"));
        let mut back = vec![0u8; msg.len()];
        self.stream
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo {when}: {e}"));
        assert_eq!(String::from_utf8_lossy(&back), msg);
    }
}

/// Whether `service` on `port` answers its health check SERVING, asked from inside `ns`.
fn serving(ns: &TestNs, data: &Path, service: &str, port: u16) -> bool {
    let ca = data.join("pki").join("ca.crt").display().to_string();
    let transport: &[&str] = if service == "gateway" {
        &["-plaintext"]
    } else {
        &["-cacert", &ca]
    };
    let addr = format!("127.0.0.1:{port}");
    grpcurl_with(ns, transport, &[&addr, "grpc.health.v1.Health/Check"])
        .is_ok_and(|out| json(&out)["status"] == "SERVING")
}

/// The links of the namespace `ns`: (name, index).
fn links(ns: &TestNs) -> Vec<(String, u64)> {
    ns.ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_owned(),
                l["ifindex"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Resolves `name` from `from` over and over, from before the kill (`killed`, set at it)
/// until a query asked after it is answered: how long after the kill that was, and how many
/// queries asked after it failed; `None` if none was answered within 30 s of the kill.
fn dns_gap(
    from: &str,
    name: &str,
    killed: &std::sync::Mutex<Option<Instant>>,
) -> Option<(Duration, u32)> {
    let mut failed = 0;
    loop {
        let asked = Instant::now();
        let answered = dig_once(from, name, 1).is_some();
        let Some(kill) = *killed.lock().unwrap() else {
            continue;
        };
        if asked < kill {
            continue;
        }
        if answered {
            return Some((kill.elapsed(), failed));
        }
        failed += 1;
        if kill.elapsed() > Duration::from_secs(30) {
            return None;
        }
    }
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn heavy_each_service_killed_is_back_within_2s_while_a_tcp_connection_between_sandboxes_carries_on()
{
    let ns = TestNs::named("heal");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut weft = Weft::start(&ns, &data, "local");
    table_of(&mut weft, "Talk to it:");
    // The status file: root's alone, every service healthy.
    let meta = std::fs::metadata(data.join("status.json")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0));
    // (The table is printed as the stack comes up; the file says so right after.)
    let first = wait_until(Duration::from_secs(10), "the status file saying Up", || {
        let s = status(&data);
        (s.state == StackState::Up).then_some(s)
    });
    assert!(
        first
            .services
            .iter()
            .all(|s| s.state == ServiceState::Healthy && s.restarts == 0)
    );

    weftctl(
        &ns,
        &data,
        &["network", "create", "--subnet", "10.241.0.0/24", "hn"],
    )
    .unwrap();
    let mut made = Sandboxes::new(&ns, &data);
    made.create("a", &["--network", "hn"]);
    made.create("b", &["--network", "hn"]);
    let (path_a, _) = sandbox(&ns, &data, "a");
    let (path_b, ip_b) = sandbox(&ns, &data, "b");
    let mut echo = Echo::open(&path_a, &path_b, &ip_b);
    echo.round_trip("before the kills");
    assert_eq!(dig_from(&path_a, "b"), ip_b);

    for (i, (service, port)) in [
        ("ipam-svc", 7701),
        ("gateway", 7700),
        ("driver-agent", 7702),
        ("dns-svc", 7703),
    ]
    .into_iter()
    .enumerate()
    {
        let old = pid_of(&data, service).unwrap();
        let links_before = links(&ns);
        let killed = Arc::new(std::sync::Mutex::new(None));
        let dns = (service == "dns-svc").then(|| {
            let (path, killed) = (path_a.clone(), killed.clone());
            std::thread::spawn(move || dns_gap(&path, "b", &killed))
        });
        // (Names resolve before the kill.)
        wait_until(Duration::from_secs(10), "b resolving", || {
            dig_once(&path_a, "b", 1)
        });

        kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
        let t0 = Instant::now();
        let killed_at = std::time::SystemTime::now();
        *killed.lock().unwrap() = Some(t0);
        echo.round_trip(&format!("while {service} is down"));
        let back = wait_until(Duration::from_secs(30), &format!("{service} back"), || {
            let pid = pid_of(&data, service).filter(|p| *p != old)?;
            serving(&ns, &data, service, port).then_some(pid)
        });
        let took = t0.elapsed();
        println!("{service}: killed (pid {old}), healthy again (pid {back}) after {took:?}");
        assert!(
            took <= Duration::from_secs(2),
            "{service} took {took:?} to be healthy again"
        );
        echo.round_trip(&format!("after {service} is back"));
        if let Some(dns) = dns {
            let gap = dns.join().unwrap();
            let (gap, failed) = gap.expect("`b` resolves again within 30 s of dns-svc's kill");
            println!(
                "dns-svc restart: `b` did not resolve from `a` for {gap:?} after the kill \
                 ({failed} queries failed)"
            );
        }

        // What depends on it carries on: a new sandbox gets an address (ipam-svc), its links
        // (the agent) and its name (dns-svc, from the gateway's events); the host is up.
        let name = format!("n{i}");
        made.create(&name, &["--network", "hn"]);
        let (_, ip) = sandbox(&ns, &data, &name);
        assert_eq!(dig_from(&path_a, &name), ip, "{name} after {service}");
        assert_eq!(dig_from(&path_a, "b"), ip_b);
        wait_until(Duration::from_secs(30), "the host up", || {
            hosts(&ns, &data)
                .into_iter()
                .find(|h| h.0 == "local" && h.1 == "HOST_STATE_UP")
        });
        // ...and its agent's heartbeats reach the gateway after the kill (a new gateway, or
        // from a new agent).
        wait_until(
            Duration::from_secs(30),
            "a heartbeat after the kill",
            || {
                let out = weftctl(&ns, &data, &["--format", "json", "hosts"]).ok()?;
                let at = json(out.lines().next()?)["lastHeartbeat"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())?;
                (at > killed_at).then_some(())
            },
        );
        // Nothing of the kernel's state was made again: every link is still there, with the
        // same index (a restarted agent reconciles, it does not rebuild).
        let after = links(&ns);
        for l in &links_before {
            assert!(
                after.contains(l),
                "{l:?} changed with {service}'s restart: {after:?}"
            );
        }
        let s = status(&data);
        let row = s.services.iter().find(|s| s.name == service).unwrap();
        assert_eq!(row.restarts, 1, "{row:?}");
        let exit = row.last_exit.as_ref().unwrap();
        assert_eq!(exit.status, "signal 9 (SIGKILL)");
        assert!(!exit.log_tail.is_empty(), "{exit:?}");
        weft.assert_running();
    }
    echo.round_trip("after every kill");

    // Each exit was one line on weft up's output: the service, its PID, the signal, the
    // restart, its delay, and its log's tail.
    let stderr = std::fs::read_to_string(&weft.err).unwrap();
    for service in ["ipam-svc", "gateway", "driver-agent", "dns-svc"] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("weft up: {service} (pid ")))
            .unwrap_or_else(|| panic!("no report of {service}: {stderr}"));
        assert!(
            line.contains("exited with signal 9 (SIGKILL) after ")
                && line.contains("; restart 1 in 100ms (1 of 8 exits in a row")
                && line.ends_with(&format!("{service}.log:")),
            "{line}"
        );
        assert!(
            stderr.contains(&format!("weft up: {service} is healthy again (pid ")),
            "{stderr}"
        );
    }
    // `weft status` shows it all.
    let out = std::process::Command::new(crate::WEFT)
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for service in ["ipam-svc", "gateway", "driver-agent", "dns-svc"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(service))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            row.contains("healthy") && row.contains(" 1  signal 9 (SIGKILL) at "),
            "{row}"
        );
    }
    drop(made);
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn a_service_that_keeps_crashing_is_reported_each_time_then_weft_up_stops_the_rest_and_exits_1() {
    let ns = TestNs::named("loop").with_lo_up();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // dns-svc's admin port, taken before weft up starts: dns-svc exits at every start.
    let held = in_netns(&ns.path_str(), || TcpListener::bind("127.0.0.1:7703")).unwrap();
    let mut weft = Weft::start(&ns, &data, "local");
    // The others started before it and were healthy: note their PIDs.
    let others = wait_until(Duration::from_secs(120), "the others started", || {
        weft.assert_running();
        let s = weft::status::read(&data).ok()?;
        let pids: Vec<i32> = s
            .services
            .iter()
            .filter(|s| s.name != "dns-svc" && s.state == ServiceState::Healthy)
            .filter_map(|s| s.pid)
            .collect();
        (pids.len() == 3).then_some(pids)
    });
    let mut child = weft.child.take().unwrap();
    let exit = wait_until(Duration::from_secs(120), "weft up to give up", || {
        child.try_wait().unwrap()
    });
    drop(held);
    let stderr = std::fs::read_to_string(&weft.err).unwrap();
    assert_eq!(exit.code(), Some(1), "{stderr}");

    // Seven restarts, each reported with its delay and the reason in the log's tail.
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("weft up: dns-svc (pid "))
        .collect();
    let delays = [
        "100ms", "200ms", "400ms", "800ms", "1s 600ms", "3s 200ms", "5s",
    ];
    assert_eq!(reports.len(), delays.len(), "{stderr}");
    for (n, (line, delay)) in reports.iter().zip(delays).enumerate() {
        let want = format!(
            "; restart {} in {delay} ({} of 8 exits in a row",
            n + 1,
            n + 1
        );
        assert!(line.contains("exited with exit code "), "{line}");
        assert!(line.contains(&want), "{want:?} not in {line}");
    }
    assert!(stderr.contains("127.0.0.1:7703"), "{stderr}");
    let last = stderr
        .lines()
        .position(|l| l.starts_with("weft up: dns-svc keeps exiting: 8 exits in a row"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let message = stderr.lines().skip(last).collect::<Vec<_>>().join("\n");
    assert!(
        message.contains("without staying healthy for 10s (the last: exit code ")
            && message.contains("gave up and stopped the other services; last lines of ")
            && message.contains("dns-svc.log:\n  "),
        "{message}"
    );
    // The status says so, and nothing it ran is left.
    let s = status(&data);
    assert_eq!(s.state, StackState::GaveUp);
    let dns = s.services.iter().find(|s| s.name == "dns-svc").unwrap();
    assert_eq!(
        (dns.state, dns.exits_in_a_row),
        (ServiceState::CrashLoop, 8)
    );
    assert!(
        s.services
            .iter()
            .filter(|s| s.name != "dns-svc")
            .all(|s| s.state == ServiceState::Stopped && s.pid.is_none()),
        "{s:?}"
    );
    for pid in others {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} outlived weft"
        );
    }
    let ns_link = format!("net:[{}]", std::fs::metadata(&ns.path).unwrap().ino());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        assert_ne!(
            link.to_string_lossy(),
            ns_link,
            "process {:?} is still in the namespace",
            entry.file_name()
        );
    }
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn a_service_that_stops_answering_its_health_checks_is_killed_and_started_again() {
    let ns = TestNs::named("hang");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut weft = Weft::start_with(
        &ns,
        &data,
        &["--host-name", "local", "--start-timeout", "3s"],
    );
    table_of(&mut weft, "Talk to it:");
    // Stopped, the gateway's process is there but answers nothing.
    let old = pid_of(&data, "gateway").unwrap();
    kill(Pid::from_raw(old), Signal::SIGSTOP).unwrap();
    let back = wait_until(Duration::from_secs(60), "the gateway back", || {
        let pid = pid_of(&data, "gateway").filter(|p| *p != old)?;
        serving(&ns, &data, "gateway", 7700).then_some(pid)
    });
    assert!(!Path::new(&format!("/proc/{old}")).exists());
    let s = status(&data);
    let row = s.services.iter().find(|s| s.name == "gateway").unwrap();
    let why = "signal 9 (SIGKILL): weft up killed it, as it failed every health check for 3s";
    assert_eq!(row.last_exit.as_ref().unwrap().status, why);
    assert_eq!(row.restarts, 1);
    let stderr = std::fs::read_to_string(&weft.err).unwrap();
    assert!(
        stderr.contains(&format!(
            "weft up: gateway (pid {old}) exited with {why} after "
        )) && stderr.contains(&format!(
            "weft up: gateway is healthy again (pid {back}, restart 1)"
        )),
        "{stderr}"
    );
    weft.assert_running();
}
