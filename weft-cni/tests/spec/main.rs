//! The CNI spec suite: the built `weft-cni` run as a container runtime runs it (`CNI_*`
//! environment, the config on stdin, the result or error object on stdout) against `weft up`
//! running inside a namespace that plays the host, with container namespaces made by the test.
//! Everything is checked against the kernel (`ip -j`) and Weft's own record.
//!
//! Needs the workspace's binaries built next to the plugin (`cargo build --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod chain;
mod errors;
mod gc;
mod lifecycle;
mod podman;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
pub use weft_testkit::wait_until;
use weft_testkit::{netns::TestNs, weft_up::WeftUp};

/// The plugin under test.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");
/// The Weft network the tests attach to, and its subnet (only ever inside test namespaces).
pub const NETWORK: &str = "cni-net";
pub const SUBNET: &str = "10.89.0.0/24";

/// Where the workspace's binaries are: next to the plugin.
pub fn bins() -> PathBuf {
    weft_testkit::built_bins(Path::new(PLUGIN).parent().unwrap().to_owned())
}

/// What one plugin call gave.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    /// stdout as JSON (`Null` when empty).
    pub out: Value,
    pub stderr: String,
}

impl Run {
    /// The error object's code (asserting the call failed with a well-formed one).
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.out);
        for key in ["cniVersion", "code", "msg"] {
            assert!(self.out.get(key).is_some(), "no {key} in {}", self.out);
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self.out["code"].as_u64().unwrap()
    }

    pub fn msg(&self) -> &str {
        self.out["msg"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn success(&self) -> &Value {
        assert!(self.ok, "the plugin failed: {} {}", self.out, self.stderr);
        &self.out
    }
}

/// Runs the plugin with exactly `env` (plus PATH) and `stdin`, in `ns` when given (the
/// namespace playing the host), as a runtime does.
pub fn plugin_in(ns: Option<&TestNs>, env: &[(&str, &str)], stdin: &str) -> Run {
    let cmd = match ns {
        Some(ns) => ns.exec(PLUGIN),
        None => Command::new(PLUGIN),
    };
    run_plugin(cmd, env, stdin)
}

/// Another plugin `program` (Debian's standard ones), run in `ns` as [`plugin_in`] runs ours.
pub fn plugin_program_in(ns: &TestNs, program: &Path, env: &[(&str, &str)], stdin: &str) -> Run {
    run_plugin(ns.exec(program), env, stdin)
}

/// `program ARGS…` in `ns`, asserting success; its stdout.
pub fn run_in(ns: &TestNs, program: &str, args: &[&str]) -> String {
    String::from_utf8(ns.exec_ok(program, args)).unwrap()
}

fn run_plugin(mut cmd: Command, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = cmd
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A plugin that refuses an oversized config stops reading it: a broken pipe is its answer.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    Run {
        ok: out.status.success(),
        out: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `weft up` in a namespace playing the host, with [`NETWORK`] created.
#[derive(Debug)]
pub struct Host {
    pub ns: TestNs,
    pub weft: WeftUp,
    bins: PathBuf,
}

impl Host {
    pub fn up() -> Self {
        let bins = bins();
        let ns = TestNs::named("cni-host").with_lo_up();
        let weft = WeftUp::start(&bins, &ns, &[]);
        let mut host = Self { ns, weft, bins };
        // Ready when STATUS says so: the gateway answers and this host's agent is up.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if host.weft.admin_token_file().exists()
                && host.status(&json!({"cniVersion": "1.1.0"})).ok
            {
                break;
            }
            if let Some(status) = host.weft.exited() {
                panic!("weft up exited with {status}:\n{}", host.weft.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "weft up did not come up:\n{}",
                host.weft.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        host.weftctl(&["network", "create", "--subnet", SUBNET, NETWORK]);
        host
    }

    /// `weftctl ARGS…` in the host namespace with the admin token, asserting success.
    pub fn weftctl(&self, args: &[&str]) -> String {
        let out = self.weftctl_output(args);
        assert!(
            out.status.success(),
            "weftctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `weftctl ARGS…` in the host namespace with the admin token.
    pub fn weftctl_output(&self, args: &[&str]) -> std::process::Output {
        self.ns
            .exec(self.bins.join("weftctl"))
            .arg("--token-file")
            .arg(self.weft.admin_token_file())
            .args(args)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_GATEWAY")
            .output()
            .unwrap()
    }

    /// The sandboxes Weft has, as JSON.
    pub fn sandboxes(&self) -> Vec<Value> {
        self.weftctl(&["--format", "json", "sandbox", "ls"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A network config at `version` for [`NETWORK`], with the admin token, `extra` merged in.
    pub fn conf(&self, version: &str, extra: &Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "weft-cni",
            "network": NETWORK,
            "tokenFile": self.weft.admin_token_file(),
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    }

    /// The plugin run in the host namespace with `env` and `conf`.
    pub fn plugin(&self, env: &[(&str, &str)], conf: &Value) -> Run {
        plugin_in(Some(&self.ns), env, &conf.to_string())
    }

    /// ADD, CHECK or DEL of `container` (its namespace, `eth0`, container id = its name).
    pub fn call(&self, command: &str, container: &TestNs, conf: &Value) -> Run {
        self.call_if(
            command,
            &container.name,
            &container.path_str(),
            "eth0",
            conf,
        )
    }

    pub fn call_if(&self, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Run {
        self.plugin(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/usr/lib/cni"),
                ("CNI_ARGS", "IgnoreUnknown=1"),
            ],
            conf,
        )
    }

    pub fn status(&self, conf: &Value) -> Run {
        let mut conf = conf.clone();
        conf["tokenFile"] = json!(self.weft.admin_token_file());
        self.plugin(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
            &conf,
        )
    }
}

/// A container namespace with its loopback up.
pub fn container() -> TestNs {
    TestNs::named("cni-c").with_lo_up()
}

/// The IPv4 addresses (CIDR) on `ifname` in `ns`, from `ip -j`.
pub fn addresses(ns: &TestNs, ifname: &str) -> Vec<String> {
    ns.ip_json(&["-4", "addr", "show", "dev", ifname])
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Whether `ifname` exists in `ns`.
pub fn has_link(ns: &TestNs, ifname: &str) -> bool {
    ns.ip_json(&["link"])
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["ifname"] == ifname)
}
