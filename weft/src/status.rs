//! What the supervisor is doing, for whoever asks while it runs: `weft up` rewrites
//! `<data-dir>/status.json` (root's, 0600, replaced whole by a rename) at every change of a
//! service's state, and `weft status` prints it as a table or as JSON.

use std::{
    fmt::Write as _,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{error::UpError, logs::printable, policy};

/// The file's name in the data directory.
pub const FILE: &str = "status.json";
/// A bigger file is refused: `weft up` writes a few kilobytes, and a file in a directory the
/// service user owns is read as untrusted.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// The whole stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    /// The `weft up` process.
    pub weft_pid: u32,
    pub host_name: String,
    pub state: StackState,
    /// When this was written (RFC 3339).
    pub updated_at: String,
    pub policy: Policy,
    /// In start order.
    pub services: Vec<ServiceStatus>,
    /// Why `weft up` gave up, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackState {
    /// Starting the services one after another.
    Starting,
    /// Every service has been healthy.
    Up,
    /// Stopping on a signal.
    Stopping,
    Stopped,
    /// A service kept crashing: the others were stopped.
    GaveUp,
}

/// The restart policy's numbers (see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub first_delay_ms: u64,
    pub max_delay_ms: u64,
    pub stable_after_ms: u64,
    pub crash_limit: u32,
}

impl Policy {
    pub fn current() -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            first_delay_ms: ms(policy::FIRST_DELAY),
            max_delay_ms: ms(policy::MAX_DELAY),
            stable_after_ms: ms(policy::STABLE_AFTER),
            crash_limit: policy::CRASH_LIMIT,
        }
    }
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    pub name: String,
    /// Its process, while there is one.
    pub pid: Option<i32>,
    pub state: ServiceState,
    /// Its gRPC address (where its health is checked).
    pub listen: String,
    /// Where it serves Prometheus metrics (`http://ADDR/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    pub log: PathBuf,
    /// When its current process started (RFC 3339).
    pub started_at: Option<String>,
    /// Restarts since `weft up` started.
    pub restarts: u32,
    /// Exits in a row without staying healthy (the crash loop's count).
    pub exits_in_a_row: u32,
    /// When it is started again, while it waits to be.
    pub next_start_at: Option<String>,
    pub last_exit: Option<LastExit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Not started yet: it waits for the services before it.
    Waiting,
    /// Running, not healthy yet.
    Starting,
    Healthy,
    /// Running, and its last health check failed.
    Unhealthy,
    /// It exited and waits for its restart.
    Restarting,
    Stopped,
    /// It exited too often in a row: `weft up` gave up.
    CrashLoop,
}

impl ServiceState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
            Self::CrashLoop => "crash-loop",
        }
    }
}

/// How its last process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastExit {
    /// `exit code N` or `signal N (NAME)`, and why weft killed it if it did.
    pub status: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// RFC 3339.
    pub at: String,
    /// The last lines that process logged.
    pub log_tail: Vec<String>,
}

/// `<data_dir>/status.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes `status` to `<data_dir>/status.json`: a new file (root's, 0600) renamed over the old.
pub fn write(data_dir: &Path, status: &Status) -> Result<(), UpError> {
    let mut text = serde_json::to_vec_pretty(status).map_err(|e| UpError::Dir {
        path: path(data_dir),
        source: std::io::Error::other(e),
    })?;
    text.push(b'\n');
    crate::pki::write_file(&path(data_dir), &text, 0o600, None)
}

/// Reads and checks `<data_dir>/status.json`.
pub fn read(data_dir: &Path) -> Result<Status, String> {
    let p = path(data_dir);
    let f = std::fs::File::open(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no {} yet: `weft up --data-dir {}` writes it once it runs",
            p.display(),
            data_dir.display()
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot read {}: it is root's (run as root)", p.display())
        }
        _ => format!("cannot read {}: {e}", p.display()),
    })?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!(
            "{} is larger than {MAX_BYTES} bytes: not one weft up wrote",
            p.display()
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a status weft up wrote: {e}", p.display()))
}

/// Whether the `weft up` that wrote `status` still runs.
pub fn writer_alive(status: &Status) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", status.weft_pid));
    comm.is_ok_and(|c| c.trim() == "weft")
}

/// `status` as `weft status` prints it; `alive`: whether its `weft up` still runs.
pub fn render(status: &Status, alive: bool) -> String {
    let mut out = String::new();
    let state = match status.state {
        StackState::Starting => "starting",
        StackState::Up => "up",
        StackState::Stopping => "stopping",
        StackState::Stopped => "stopped",
        StackState::GaveUp => "gave up",
    };
    let _ = writeln!(
        out,
        "weft up (pid {}) on host {:?}: {state}, as of {}{}",
        status.weft_pid,
        printable(&status.host_name),
        printable(&status.updated_at),
        if alive || matches!(status.state, StackState::Stopped | StackState::GaveUp) {
            ""
        } else {
            " (that process is gone: this is the last state it wrote)"
        }
    );
    if let Some(why) = &status.gave_up {
        let _ = writeln!(out, "  {}", printable(why));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<13} {:>7}  {:<11} {:>8}  LAST EXIT",
        "SERVICE", "PID", "STATE", "RESTARTS"
    );
    for s in &status.services {
        let pid = s.pid.map_or_else(|| "-".into(), |p| p.to_string());
        let last = s.last_exit.as_ref().map_or_else(
            || "-".into(),
            |e| format!("{} at {}", printable(&e.status), printable(&e.at)),
        );
        let next = s
            .next_start_at
            .as_ref()
            .map(|t| format!(" (starts again at {})", printable(t)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<13} {pid:>7}  {:<11} {:>8}  {last}{next}",
            printable(&s.name),
            s.state.as_str(),
            s.restarts
        );
    }
    let p = status.policy;
    let _ = writeln!(
        out,
        "\nrestart policy: after {} ms, doubling up to {} ms; well again after {} ms healthy; \
         {} exits in a row stop weft up",
        p.first_delay_ms, p.max_delay_ms, p.stable_after_ms, p.crash_limit
    );
    for s in &status.services {
        if let Some(e) = &s.last_exit {
            let _ = writeln!(
                out,
                "\n{} exited last with {}; the last lines it logged ({}):\n{}",
                printable(&s.name),
                printable(&e.status),
                printable(&s.log.display().to_string()),
                crate::logs::indented(&e.log_tail.iter().map(|l| printable(l)).collect::<Vec<_>>())
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> Status {
        let service = |name: &str, pid, state| ServiceStatus {
            name: name.into(),
            pid,
            state,
            listen: "127.0.0.1:7700".into(),
            metrics: Some("127.0.0.1:7710".into()),
            log: format!("/d/logs/{name}.log").into(),
            started_at: Some("2025-01-01T00:00:00.000Z".into()),
            restarts: 0,
            exits_in_a_row: 0,
            next_start_at: None,
            last_exit: None,
        };
        let mut gateway = service("gateway", None, ServiceState::Restarting);
        gateway.restarts = 2;
        gateway.next_start_at = Some("2025-01-01T00:00:01.000Z".into());
        gateway.last_exit = Some(LastExit {
            status: "signal 9 (SIGKILL)".into(),
            code: None,
            signal: Some(9),
            at: "2025-01-01T00:00:00.900Z".into(),
            log_tail: vec!["listening \x1b[2J".into()],
        });
        Status {
            weft_pid: 1,
            host_name: "local".into(),
            state: StackState::Up,
            updated_at: "2025-01-01T00:00:00.950Z".into(),
            policy: Policy::current(),
            services: vec![
                service("ipam-svc", Some(42), ServiceState::Healthy),
                gateway,
            ],
            gave_up: None,
        }
    }

    #[test]
    fn the_file_is_roots_0600_and_reads_back() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let meta = std::fs::metadata(path(dir.path())).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(read(dir.path()).unwrap(), sample());
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains("\"exitsInARow\": 0"), "{text}");
        assert!(text.contains("\"state\": \"restarting\""), "{text}");
    }

    #[test]
    #[cfg_attr(weft_no_root, ignore = "needs root: chown")]
    fn preparing_the_data_dir_leaves_the_status_roots() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        std::fs::write(dir.path().join("gateway.db"), b"").unwrap();
        let nobody = crate::user::Ids {
            uid: 65534,
            gid: 65534,
        };
        crate::user::prepare_data_dir(dir.path(), nobody).unwrap();
        let owner = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().uid();
        assert_eq!((owner(FILE), owner("gateway.db")), (0, 65534));
    }

    #[test]
    fn what_weft_up_did_not_write_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.contains("no ") && e.contains("weft up --data-dir"), "{e}");
        std::fs::write(path(dir.path()), b"{\"weftPid\": 1}").unwrap();
        assert!(read(dir.path()).unwrap_err().contains("not a status"));
        let big = vec![b' '; usize::try_from(MAX_BYTES).unwrap() + 1];
        std::fs::write(path(dir.path()), big).unwrap();
        assert!(read(dir.path()).unwrap_err().contains("larger than"));
    }

    #[test]
    fn the_table_shows_each_service_and_the_log_of_the_last_exit() {
        let text = render(&sample(), false);
        assert!(text.contains("(that process is gone"), "{text}");
        let row = text.lines().find(|l| l.starts_with("gateway")).unwrap();
        for want in [
            "-",
            "restarting",
            " 2 ",
            "signal 9 (SIGKILL) at 2025-01-01T00:00:00.900Z",
            "starts again at",
        ] {
            assert!(row.contains(want), "{want:?} not in {row:?}");
        }
        assert!(text.contains("ipam-svc           42  healthy"), "{text}");
        assert!(text.contains("\n  listening ?[2J"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(text.contains("8 exits in a row"), "{text}");
    }
}
