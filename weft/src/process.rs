//! One service process: started with its output appended to its log (after a marker line),
//! reaped by a task of its own, and health-checked by another for as long as it lives. Both
//! report to the supervisor as [`Event`]s tagged with the process's slot and generation, so
//! that news of a process already replaced is recognised as stale.

use std::{
    fs::File,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime},
};

use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::{
    error::UpError,
    health,
    plan::{Service, UpConfig},
};

/// How often a process is checked until it answers SERVING (and after a failed check): a
/// restarted service is seen healthy within this of being so.
const PROBE_UNTIL_HEALTHY: Duration = Duration::from_millis(50);
/// How often a healthy process is checked.
const PROBE_HEALTHY: Duration = Duration::from_secs(1);

/// Which process of which service an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The service's index in start order.
    pub slot: usize,
    /// Bumped at every start of that service.
    pub generation: u64,
}

/// News from a process's waiter or health checker.
#[derive(Debug)]
pub enum Event {
    Exited {
        tag: Tag,
        status: ExitStatus,
    },
    /// The result of a health check, sent when it differs from the one before.
    Health {
        tag: Tag,
        serving: bool,
    },
}

/// A started service process.
#[derive(Debug)]
pub struct Process {
    pub pid: Pid,
    pub started: Instant,
    pub started_at: SystemTime,
    status: watch::Receiver<Option<ExitStatus>>,
}

impl Process {
    /// Starts `service` (its `restart`th restart; 0: the first start) with its output
    /// appended to its log; its exit and its health come as events tagged `tag`.
    pub fn spawn(
        config: &UpConfig,
        service: &Service,
        restart: u32,
        tag: Tag,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Result<Self, UpError> {
        let log_err = |source| UpError::Dir {
            path: service.log.clone(),
            source,
        };
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&service.log)
            .map_err(log_err)?;
        crate::logs::mark_start(&mut log, service.name, restart).map_err(log_err)?;
        let (program, args) = config.command_line(service);
        let mut command = tokio::process::Command::new(program);
        // In a namespace, nsenter drops to the user after entering it (see `command_line`).
        if let (Some(ids), None) = (service.run_as, &config.netns) {
            // (As root, std also clears the supplementary groups when the uid is set.)
            command.uid(ids.uid).gid(ids.gid);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(log_err)?)
            .stderr(log)
            // The logs are files: no terminal colour codes in them.
            .env("NO_COLOR", "1")
            // Secrets (a database URL) go in its environment, never on its command line.
            .envs(service.env.iter().map(|(k, v)| (k, v)))
            // Its own process group: a Ctrl-C in the terminal reaches weft only, which then
            // stops the services in order instead of all at once.
            .process_group(0)
            .spawn()
            .map_err(|source| UpError::Spawn {
                service: service.name,
                source,
            })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| UpError::Spawn {
                service: service.name,
                source: std::io::Error::other("no PID"),
            })?;
        let (tx, status) = watch::channel(None);
        let exits = events.clone();
        tokio::spawn(async move {
            // A wait error leaves nothing to supervise: report it as a failed exit.
            let s = child.wait().await.unwrap_or_else(|_| failed_status());
            let _ = tx.send(Some(s));
            let _ = exits.send(Event::Exited { tag, status: s });
        });
        tokio::spawn(probe(
            Probe {
                service: service.clone(),
                netns: config.netns.as_ref().map(|n| n.path.clone()),
                tag,
            },
            status.clone(),
            events.clone(),
        ));
        Ok(Self {
            pid,
            started: Instant::now(),
            started_at: SystemTime::now(),
            status,
        })
    }

    /// Waits until the process has exited (reaped by its waiter task).
    pub async fn exited(&self) -> ExitStatus {
        let mut rx = self.status.clone();
        // An error means the waiter is gone, which it only is after sending the status.
        let _ = rx.wait_for(Option::is_some).await;
        let status = *rx.borrow();
        status.unwrap_or_else(failed_status)
    }

    pub fn has_exited(&self) -> bool {
        self.status.borrow().is_some()
    }
}

/// What a health checker needs.
struct Probe {
    service: Service,
    netns: Option<PathBuf>,
    tag: Tag,
}

/// Checks the process's health until it exits, reporting every change.
async fn probe(
    p: Probe,
    mut exited: watch::Receiver<Option<ExitStatus>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut last = None;
    loop {
        let check = health::serving(
            p.service.listen,
            p.netns.as_deref(),
            p.service.health_tls.as_ref(),
        );
        let serving = tokio::select! {
            s = check => s,
            _ = exited.wait_for(Option::is_some) => return,
        };
        // (An exit reported first makes this one stale: the supervisor sorts them out.)
        if last != Some(serving) {
            last = Some(serving);
            if events
                .send(Event::Health {
                    tag: p.tag,
                    serving,
                })
                .is_err()
            {
                return;
            }
        }
        let pause = if serving {
            PROBE_HEALTHY
        } else {
            PROBE_UNTIL_HEALTHY
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = exited.wait_for(Option::is_some) => return,
        }
    }
}

fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    ExitStatus::from_raw(1 << 8)
}
