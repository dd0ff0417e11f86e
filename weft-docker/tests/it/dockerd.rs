//! A dockerd of the test's own: started in the host namespace with a data root, exec root,
//! pidfile and API socket under a temporary directory, stopped by PID. On drop, every
//! container it ran is removed first (with `--live-restore` they would outlive it), then
//! dockerd is stopped (it stops its own containerd), and anything still running from its
//! directories (containerd, shims) is killed by PID and its mounts there are unmounted.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use weft_testkit::netns::TestNs;

/// Debian's dockerd and the CLI of the same version (another `docker` may be first on PATH).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";

#[derive(Debug)]
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    netns: PathBuf,
    child: Option<Child>,
    /// `--live-restore`, which swarm mode refuses.
    live_restore: bool,
}

impl Dockerd {
    /// With `--live-restore` (containers outlive a restart of dockerd) or without (swarm mode
    /// refuses it).
    pub fn start_with(ns: &TestNs, live_restore: bool) -> Self {
        // Short: containerd's socket path under the exec root must fit a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("wd")
            .tempdir_in("/tmp")
            .unwrap();
        let mut d = Self {
            dir,
            netns: ns.path.clone(),
            child: None,
            live_restore,
        };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn spawn(&mut self) {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("dockerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg(DOCKERD)
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .args(self.live_restore.then_some("--live-restore"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        crate::wait_until(Duration::from_secs(60), "dockerd to answer", || {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {st}:\n{}", self.log());
            }
            self.try_docker(&["version", "--format", "{{.Server.Version}}"])
                .ok()
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Stops dockerd (SIGTERM, by PID) and starts it again on the same roots; containers live
    /// on meanwhile (`--live-restore`).
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            weft_testkit::weft_up::stop_child(&mut c);
        }
    }

    /// `docker ARGS…` against this dockerd.
    pub fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env_remove("DOCKER_HOST")
            .env("DOCKER_CLI_HINTS", "false")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "docker {args:?}: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Imports a busybox-static rootfs as image `tag` (no registry needed).
    pub fn import_busybox(&self, tag: &str) {
        let rootfs = self.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "ping", "sleep", "ip", "wget", "httpd", "nslookup", "cat", "hostname",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        self.docker(&["import", tar.to_str().unwrap(), tag]);
    }
}

/// PIDs of processes whose command line mentions `dir` (dockerd's containerd and shims).
fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut m: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    m.sort_by_key(|p| std::cmp::Reverse(p.len()));
    m
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Ok(ids) = self.try_docker(&["ps", "-aq"])
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            let _ = self.try_docker(&args);
        }
        self.stop_daemon();
        for pid in processes_under(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in mounts_under(self.dir.path()) {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        weft_testkit::logs::keep_logs_under(self.dir.path(), "dockerd");
    }
}
