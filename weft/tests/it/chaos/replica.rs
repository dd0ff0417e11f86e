//! A second gateway replica for the Postgres run: the gateway `weft up` runs, started again by
//! the test on another port with the same flags and environment (so the same Postgres
//! database, tokens and certificates), inside the same namespace. Half the clients talk to it;
//! the run kills it once (SIGKILL) and starts it again, as a supervisor of replicas would.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{TestNs, wait_until};

/// Where the replica listens (inside the namespace).
pub(super) const ADDR: &str = "127.0.0.1:7720";
/// Its metrics listener (weft up's gateway has 127.0.0.1:7710).
const METRICS: &str = "127.0.0.1:7721";

pub(super) struct Replica {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    netns: PathBuf,
    /// Its user and group ids.
    ids: (String, String),
    log: PathBuf,
    child: Option<Child>,
}

/// The NUL-separated fields of a /proc file.
fn fields(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .unwrap()
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

impl Replica {
    /// Copies the command line and environment of `weft up`'s gateway (PID from its status
    /// file), with `--listen` moved to [`ADDR`], and starts it.
    pub(super) fn start(ns: &TestNs, data: &Path, log: PathBuf) -> Self {
        let pid = weft::status::read(data)
            .unwrap()
            .services
            .iter()
            .find(|s| s.name == "gateway")
            .and_then(|s| s.pid)
            .expect("the gateway runs");
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let mut argv = fields(&proc_dir.join("cmdline"));
        let program = argv.remove(0);
        let mut args = Vec::new();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--listen" => {
                    it.next();
                    args.extend(["--listen".to_owned(), ADDR.to_owned()]);
                }
                // The joinable listener is the first replica's alone.
                "--tls-listen" => {
                    it.next();
                }
                "--metrics-listen" => {
                    it.next();
                    args.extend(["--metrics-listen".to_owned(), METRICS.to_owned()]);
                }
                // A name of its own in the lease table (the same name would make both lead).
                "--replica-id" => {
                    it.next();
                    args.extend(["--replica-id".to_owned(), "chaos-replica-2".to_owned()]);
                }
                _ => args.push(a),
            }
        }
        // As weft up runs it: as its user (nsenter drops to it after entering the namespace).
        let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
        let id_of = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .unwrap()
                .to_owned()
        };
        let ids = (id_of("Uid:"), id_of("Gid:"));
        let env = fields(&proc_dir.join("environ"))
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let mut r = Self {
            program,
            args,
            env,
            netns: ns.path.clone(),
            ids,
            log,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .args(["--setgid", &self.ids.1, "--setuid", &self.ids.0, "--"])
            .arg(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_serving();
    }

    /// Waits until the replica accepts connections.
    fn wait_serving(&mut self) {
        let netns = self.netns.clone();
        wait_until(
            Duration::from_secs(60),
            "the second gateway replica",
            || {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!(
                        "the second gateway replica exited with {status}: {}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                let probe = Command::new("nsenter")
                    .arg(format!("--net={}", netns.display()))
                    .args(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7720"])
                    .output()
                    .unwrap();
                probe.status.success().then_some(())
            },
        );
    }

    /// SIGKILL, then a start again once it has gone.
    pub(super) fn kill_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        kill(pid, Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        println!("gateway replica 2: killed ({status}), starting it again");
        std::thread::sleep(Duration::from_millis(500));
        self.spawn();
        println!("gateway replica 2: serving again");
    }

    /// SIGTERM, and the wait for its exit.
    pub(super) fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = kill(pid, Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
