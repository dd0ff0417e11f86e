//! `weft up --netns` runs the whole stack inside a namespace this test creates: all four
//! services healthy on that namespace's loopback, the default networks there, the host
//! registered by its agent; SIGTERM stops everything and weft exits 0.

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{TestNs, WEFT, bin_dir, wait_until};

const SERVICES: [(&str, u16); 4] = [
    ("gateway", 7700),
    ("ipam-svc", 7701),
    ("driver-agent", 7702),
    ("dns-svc", 7703),
];

/// `weft up` running; on drop (a failed test) it is stopped, and whatever is left of it and its
/// children is killed by PID, so that nothing outlives the test's namespace.
#[derive(Debug)]
pub(crate) struct Weft {
    pub(crate) child: Option<Child>,
    pub(crate) out: std::path::PathBuf,
    pub(crate) err: std::path::PathBuf,
    /// Its data directory, whose service logs are kept when it stops (`weft_testkit::logs`).
    data: std::path::PathBuf,
}

impl Weft {
    pub(crate) fn start(ns: &TestNs, data: &Path, host: &str) -> Self {
        Self::start_with(ns, data, &["--host-name", host])
    }

    /// `weft up --netns NS --data-dir DATA` with `flags`.
    pub(crate) fn start_with(ns: &TestNs, data: &Path, flags: &[&str]) -> Self {
        Self::start_under(&[], ns, data, flags, &[])
    }

    /// [`Self::start_with`], with `env` added to weft's environment (which its services
    /// inherit).
    pub(crate) fn start_with_env(
        ns: &TestNs,
        data: &Path,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_under(&[], ns, data, flags, env)
    }

    /// [`Weft::start_with_env`] through `wrapper` (a program and its arguments that exec weft
    /// in place, such as `setpriv …`); none when empty.
    pub(crate) fn start_under(
        wrapper: &[&str],
        ns: &TestNs,
        data: &Path,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        assert!(
            !Path::new("/usr/bin/grpcurl").exists() && !Path::new("/usr/bin/weftctl").exists(),
            "the test needs a PATH without weftctl and grpcurl"
        );
        let beside = data.parent().unwrap();
        let out = weft_testkit::logs::log_path(beside, "weft-up.stdout");
        let err = weft_testkit::logs::log_path(beside, "weft-up.stderr");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(WEFT);
                c
            }
            None => Command::new(WEFT),
        };
        let child = command
            .args(["up", "--netns", &ns.name])
            .args(flags)
            .arg("--data-dir")
            .arg(data)
            .arg("--bin-dir")
            .arg(bin_dir())
            // The PATH of a fresh machine: neither weftctl nor grpcurl on it.
            .env("PATH", FRESH_PATH)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            out,
            err,
            data: data.to_owned(),
        }
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().unwrap().id()).unwrap())
    }

    pub(crate) fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Panics (with weft's output) if weft has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("weft exited with {status}:\n{}", self.output());
        }
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        self.stop();
        weft_testkit::logs::keep_logs_under(&self.data, "weft-up");
    }
}

impl Weft {
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid_of(&child);
        let children = children_of(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        for (p, _) in children {
            let _ = kill(p, Signal::SIGKILL);
        }
    }

    fn pid_of(&self, child: &Child) -> Pid {
        Pid::from_raw(i32::try_from(child.id()).unwrap())
    }
}

/// The processes whose parent is `parent`, with their names.
pub(crate) fn children_of(parent: Pid) -> BTreeMap<Pid, String> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if field("PPid:").and_then(|p| p.parse::<i32>().ok()) == Some(parent.as_raw()) {
            found.insert(Pid::from_raw(pid), field("Name:").unwrap_or_default());
        }
    }
    found
}

/// A fresh machine's PATH (what `weft up` prints must work with it).
pub(crate) const FRESH_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs grpcurl inside the namespace; its stdout when it succeeded.
fn grpcurl_in(ns: &TestNs, args: &[&str]) -> Option<String> {
    grpcurl_with(ns, &["-plaintext"], args).ok()
}

/// grpcurl inside the namespace with `transport` flags: stdout, or the exit code and stderr.
pub(crate) fn grpcurl_with(
    ns: &TestNs,
    transport: &[&str],
    args: &[&str],
) -> Result<String, (i32, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(weft_testkit::grpcurl())
        .args(transport)
        .args(["-max-time", "3"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn weft_up_in_a_namespace_runs_the_stack_there_and_sigterm_stops_it_with_exit_0() {
    let ns = TestNs::named("up-a");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = "wft-test-host";
    let mut weft = Weft::start(&ns, &data, host);

    // Every service healthy on the namespace's loopback: the gateway's public listener in
    // plaintext, the others over TLS only (their health open to a client without a
    // certificate that trusts the stack's CA).
    let ca = data.join("pki").join("ca.crt");
    let ca_flag = ca.display().to_string();
    for (service, port) in SERVICES {
        let addr = format!("127.0.0.1:{port}");
        let transport: &[&str] = if service == "gateway" {
            &["-plaintext"]
        } else {
            &["-cacert", &ca_flag]
        };
        wait_until(
            Duration::from_secs(120),
            &format!("{service} healthy"),
            || {
                weft.assert_running();
                grpcurl_with(&ns, transport, &[&addr, "grpc.health.v1.Health/Check"])
                    .ok()
                    .filter(|out| json(out)["status"] == "SERVING")
            },
        );
    }
    // In plaintext they do not answer at all; over TLS without a certificate, nothing but
    // health: every other call is UNAUTHENTICATED.
    for (_, port) in &SERVICES[1..] {
        let addr = format!("127.0.0.1:{port}");
        assert!(grpcurl_in(&ns, &[&addr, "grpc.health.v1.Health/Check"]).is_none());
    }
    for (addr, method) in [
        (
            "127.0.0.1:7701",
            "weft.ipam.v1.IpamService/ListAddressSpaces",
        ),
        (
            "127.0.0.1:7702",
            "weft.agent.v1.AgentService/GetCapabilities",
        ),
        ("127.0.0.1:7703", "weft.dns.v1.DnsService/GetStats"),
    ] {
        let refused = grpcurl_with(&ns, &["-cacert", &ca_flag], &[addr, method]);
        assert!(
            matches!(&refused, Err((code, _)) if *code == 64 + 16),
            "{method}: {refused:?}"
        );
    }
    // The CA key is root's alone; the unprivileged services have copies of their own files.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&data.join("pki")), 0o700);
    assert_eq!(mode(&data.join("pki").join("ca.key")), 0o600);
    assert_eq!(
        std::fs::metadata(data.join("pki").join("ca.key"))
            .unwrap()
            .uid(),
        0
    );
    let run_tls = data.join("run").join("tls");
    assert_eq!(mode(&run_tls), 0o700);
    assert_ne!(
        std::fs::metadata(&run_tls).unwrap().uid(),
        0,
        "the service user's"
    );
    assert!(!run_tls.join("ca.key").exists());
    assert!(
        run_tls.join("ipam-ipam.key").is_file() && run_tls.join("dns-wft-test-host.crt").is_file()
    );
    // The table comes once all are healthy; it says where everything is and how to reach it.
    let table = wait_until(Duration::from_secs(30), "the table", || {
        weft.assert_running();
        let out = std::fs::read_to_string(&weft.out).unwrap_or_default();
        out.contains("Talk to it:").then_some(out)
    });
    let admin_token = data.join("admin.token");
    for want in [
        "127.0.0.1:7700",
        "127.0.0.1:7701",
        "127.0.0.1:7702",
        "127.0.0.1:7703",
        "metrics 127.0.0.1:7710",
        "metrics 127.0.0.1:7713",
        "curl -s http://127.0.0.1:7710/metrics",
        &format!("network namespace {}", ns.name),
        &format!("admin token   {}", admin_token.display()),
        &format!("--token-file {} network ls", admin_token.display()),
        "-plaintext 127.0.0.1:7700 list",
        &format!(
            "admin cert    {}",
            data.join("pki").join("admin-admin.crt").display()
        ),
        "127.0.0.1:7703 weft.dns.v1.DnsService/GetStats",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
    // Every command it prints works as printed, with a PATH that has neither weftctl nor
    // grpcurl (a fresh machine after scripts/run.sh); `dig NAME.NETWORK.weft.` is a template.
    let commands: Vec<&str> = table
        .split("Talk to it:")
        .nth(1)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("NAME.NETWORK"))
        .collect();
    assert!(commands.len() >= 6, "{table}");
    for cmd in commands {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .env("PATH", FRESH_PATH)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Without the token the API refuses; with it, it answers.
    let refused = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(weft_testkit::grpcurl())
        .args([
            "-plaintext",
            "127.0.0.1:7700",
            "weft.gateway.v1.NetworkService/ListNetworks",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(64 + 16), "UNAUTHENTICATED");
    let token = weft_runtime::access::read_token_file(&admin_token).unwrap();
    let bearer = format!("authorization: Bearer {token}");
    let networks = json(
        &grpcurl_in(
            &ns,
            &[
                "-H",
                &bearer,
                "127.0.0.1:7700",
                "weft.gateway.v1.NetworkService/ListNetworks",
            ],
        )
        .expect("ListNetworks"),
    );
    let mut names: Vec<&str> = networks["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["bridge", "host", "mynet", "none"], "{networks}");

    // The agent registers its host with the gateway, under the name given to weft.
    let hosts = wait_until(Duration::from_secs(30), "the host registered", || {
        let out = grpcurl_in(
            &ns,
            &[
                "-H",
                &bearer,
                "127.0.0.1:7700",
                "weft.gateway.v1.HostService/ListHosts",
            ],
        )?;
        let v = json(&out);
        let hosts = v["hosts"].as_array()?.clone();
        (hosts.iter().any(|h| h["name"] == host)).then_some(hosts)
    });
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0]["agentAddress"], "127.0.0.1:7702", "{hosts:?}");

    // The four services are weft's children (iproute2 execs them in place), in the namespace.
    let children = children_of(weft.pid());
    let mut names: Vec<&str> = children.values().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["dns-svc", "driver-agent", "gateway", "ipam-svc"]);
    let ns_inode = std::fs::metadata(&ns.path).unwrap().ino();
    for pid in children.keys() {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        assert_eq!(
            link.to_string_lossy(),
            format!("net:[{ns_inode}]"),
            "{pid} is not in the namespace"
        );
    }
    for (service, _) in SERVICES {
        let log = data.join("logs").join(format!("{service}.log"));
        assert!(
            std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
            "{} is empty",
            log.display()
        );
    }
    assert!(data.join("ipam.db").is_file() && data.join("gateway.db").is_file());

    kill(weft.pid(), Signal::SIGTERM).unwrap();
    let mut child = weft.child.take().unwrap();
    let status = wait_until(Duration::from_secs(10), "weft to exit", || {
        child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "weft exited with {status}:\n{}",
        weft.output()
    );
    for (pid, name) in &children {
        let gone = !Path::new(&format!("/proc/{pid}")).exists();
        assert!(gone, "{name} ({pid}) outlived weft");
    }
}
