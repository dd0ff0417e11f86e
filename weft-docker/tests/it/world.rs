//! The world of one test: a namespace playing the host (forwarding on, as on any Docker host)
//! wired to one playing "the internet", `weft up` and the plugin in the host namespace, and a
//! dockerd there that finds the plugin by a socket name of this test's own. Dropped in that
//! order backwards: dockerd (and its containers), the plugin and its socket, Weft, the
//! namespaces.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::Value;
use weft_testkit::{
    netns::{TestNs, wire_uplink},
    weft_up::{WeftUp, stop_child},
};

use crate::{bins, dockerd::Dockerd, wait_until};

/// Where dockerd looks for plugin sockets (fixed in dockerd 20.10: no flag moves it).
const PLUGIN_DIR: &str = "/run/docker/plugins";

/// The plugin process and the socket it serves.
#[derive(Debug)]
pub struct Plugin {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Plugin {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = self.log.parent() {
            weft_testkit::logs::keep_logs_under(dir, "plugin");
        }
    }
}

#[derive(Debug)]
pub struct World {
    pub dockerd: Dockerd,
    pub plugin: Plugin,
    pub weft: WeftUp,
    pub internet: TestNs,
    pub host: TestNs,
    /// The driver (and IPAM driver) name dockerd knows the plugin by: unique to this test, so
    /// that tests running at once (and a real Docker on the machine) never share it.
    pub driver: String,
    token: PathBuf,
    plugin_logs: tempfile::TempDir,
    plugin_args: Vec<String>,
}

impl World {
    pub fn new() -> Self {
        Self::with_plugin_args(&[])
    }

    /// With these extra flags for the plugin.
    pub fn with_plugin_args(plugin_args: &[&str]) -> Self {
        Self::build(plugin_args, true)
    }

    /// With a dockerd that can enter swarm mode (no `--live-restore`).
    pub fn for_swarm() -> Self {
        Self::build(&[], false)
    }

    fn build(plugin_args: &[&str], live_restore: bool) -> Self {
        let host = TestNs::named("dk-host").with_lo_up();
        host.sysctl_w(&["net.ipv4.ip_forward=1"]);
        let internet = TestNs::named("dk-inet").with_lo_up();
        wire_uplink(&host, &internet);
        let weft = WeftUp::start(&bins(), &host, &[]);
        let admin = weft.admin_token_file();
        let ready = || {
            admin.exists()
                && weftctl_with(&host, &admin, &["--format", "json", "hosts"])
                    .is_ok_and(|o| !o.trim().is_empty())
        };
        wait_until(Duration::from_secs(90), "weft up with its host", || {
            ready().then_some(())
        });
        // The plugin runs as an operator, not as admin.
        let printed = weftctl_with(
            &host,
            &admin,
            &[
                "token",
                "create",
                "--role",
                "operator",
                "--name",
                "docker-plugin",
            ],
        )
        .unwrap();
        let plugin_logs = tempfile::tempdir().unwrap();
        let token = plugin_logs.path().join("operator.token");
        std::fs::write(&token, printed.split_whitespace().last().unwrap()).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let driver = format!("weft-t{}", &id[..10]);
        let dockerd = Dockerd::start_with(&host, live_restore);
        let mut w = Self {
            plugin: Plugin {
                child: None,
                socket: PathBuf::from(PLUGIN_DIR).join(format!("{driver}.sock")),
                log: plugin_logs.path().join("plugin.log"),
            },
            dockerd,
            weft,
            internet,
            host,
            driver,
            token,
            plugin_logs,
            plugin_args: plugin_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        w.start_plugin();
        w
    }

    /// Starts (or starts again) the plugin in the host namespace; waits for its socket.
    pub fn start_plugin(&mut self) {
        self.plugin.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.plugin.log)
            .unwrap();
        let _ = std::fs::remove_file(&self.plugin.socket);
        let child = self
            .host
            .exec(crate::PLUGIN)
            .arg("--socket")
            .arg(&self.plugin.socket)
            .arg("--token-file")
            .arg(&self.token)
            .arg("--docker-host")
            .arg(self.dockerd.socket())
            .args(&self.plugin_args)
            .env("WEFT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.plugin.child = Some(child);
        let log = self.plugin.log.clone();
        let child = self.plugin.child.as_mut().unwrap();
        wait_until(Duration::from_secs(20), "the plugin's socket", || {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the plugin exited with {st}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            self.plugin.socket.exists().then_some(())
        });
    }

    /// The operator token file the plugin reads.
    pub fn token(&self) -> &std::path::Path {
        &self.token
    }

    pub fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.plugin_logs.path().join("plugin.log")).unwrap_or_default()
    }

    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> String {
        self.dockerd.docker(args)
    }

    /// `weftctl ARGS…` in the host namespace as admin, asserting success.
    #[track_caller]
    pub fn weftctl(&self, args: &[&str]) -> String {
        weftctl_with(&self.host, &self.weft.admin_token_file(), args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `weftctl --format json ARGS…`, one JSON object per line (or one array).
    pub fn weftctl_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = self.weftctl(&all);
        match serde_json::from_str::<Value>(&out) {
            Ok(Value::Array(a)) => a,
            Ok(v) => vec![v],
            Err(_) => out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        }
    }
}

fn weftctl_with(ns: &TestNs, token: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = ns
        .exec(bins().join("weftctl"))
        .arg("--token-file")
        .arg(token)
        .args(args)
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_GATEWAY")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "weftctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
