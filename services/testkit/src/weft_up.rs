//! `weft up --netns NS` as a test runs it: in a namespace the test made (playing the host),
//! with a throwaway data directory, its output in a log kept with the test's logs, stopped by
//! PID (SIGTERM, then SIGKILL) when dropped, and the namespaces its agent made for sandboxes
//! the test left behind deleted.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::netns::TestNs;

/// A running `weft up`.
#[derive(Debug)]
pub struct WeftUp {
    child: Option<Child>,
    data: tempfile::TempDir,
    pub log: PathBuf,
}

impl WeftUp {
    /// `bins/weft up --netns NS --data-dir … --bin-dir bins ARGS…`; returns at once (wait for
    /// what the test needs with a deadline).
    pub fn start(bins: &Path, ns: &TestNs, args: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let log = crate::logs::log_path(data.path(), "weft-up");
        let logfile = std::fs::File::create(&log).unwrap();
        let child = Command::new(bins.join("weft"))
            .args(["up", "--netns", &ns.name, "--data-dir"])
            .arg(data.path().join("weft-data"))
            .arg("--bin-dir")
            .arg(bins)
            .args(args)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            data,
            log,
        }
    }

    /// The data directory `weft up` was given.
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("weft-data")
    }

    /// The admin token `weft up` writes at its first start.
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir().join("admin.token")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The PID of `weft up` itself (its services are its children); `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The PID of its service `name` ("driver-agent", "gateway", …), a child process of it.
    pub fn service_pid(&self, name: &str) -> Option<u32> {
        let pid = self.pid()?;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .find(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Stops it (see [`stop_child`]); nothing is left running afterwards.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }
}

impl Drop for WeftUp {
    fn drop(&mut self) {
        self.stop();
        crate::logs::keep_logs_under(&self.data_dir(), "weft-up");
        // The namespaces the agent made for sandboxes the test left behind (named
        // `weft-<sandbox id>`, with that sandbox's files in the agent's data directory).
        let sandboxes = self.data_dir().join("agent/sandboxes");
        for entry in std::fs::read_dir(sandboxes).into_iter().flatten().flatten() {
            let name = format!("weft-{}", entry.file_name().to_string_lossy());
            if Path::new("/run/netns").join(&name).exists() {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
}

/// SIGTERM to `c` (by its PID), then SIGKILL if it has not stopped within 15 s; reaped.
pub fn stop_child(c: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}
