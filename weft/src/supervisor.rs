//! The services as supervised child processes: started one after another once the previous one
//! is healthy, watched for an unexpected exit, and stopped in reverse order with SIGTERM (by
//! PID), killed only when one does not stop in time.

use std::{
    fs::File,
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    signal::unix::{Signal as SignalStream, SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    error::UpError,
    health,
    plan::{Service, UpConfig},
};

/// How many lines of a dead service's log are shown.
const LOG_TAIL_LINES: usize = 20;

/// A started service.
#[derive(Debug)]
pub struct Running {
    pub service: Service,
    pub pid: Pid,
    status: watch::Receiver<Option<ExitStatus>>,
}

impl Running {
    /// Waits until the process has exited (reaped by its waiter task).
    async fn exited(&self) -> ExitStatus {
        let mut rx = self.status.clone();
        // An error means the waiter is gone, which it only is after sending the status.
        let _ = rx.wait_for(Option::is_some).await;
        let status = *rx.borrow();
        status.unwrap_or_else(failed_status)
    }

    fn has_exited(&self) -> bool {
        self.status.borrow().is_some()
    }
}

/// Ctrl-C and SIGTERM, as one stream.
#[derive(Debug)]
pub struct StopSignals {
    int: SignalStream,
    term: SignalStream,
}

impl StopSignals {
    /// Installs the handlers (before anything starts, so that no signal is missed).
    pub fn install() -> Result<Self, UpError> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).map_err(UpError::Signals)?,
            term: signal(SignalKind::terminate()).map_err(UpError::Signals)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// The stack: the services started so far, in start order.
#[derive(Debug)]
pub struct Stack {
    config: UpConfig,
    running: Vec<Running>,
    /// Index (into `running`) of every process that exits, as it exits.
    exits_tx: mpsc::UnboundedSender<usize>,
    exits: mpsc::UnboundedReceiver<usize>,
}

/// How a phase of `weft up` ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every service is up and healthy.
    Up,
    /// Ctrl-C or SIGTERM.
    Signalled,
}

impl Stack {
    pub fn new(config: UpConfig) -> Self {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Self {
            config,
            running: Vec::new(),
            exits_tx,
            exits,
        }
    }

    pub fn running(&self) -> &[Running] {
        &self.running
    }

    /// Starts every service in order, each once the previous is healthy. Stops early on a
    /// signal; fails when a service exits or stays unhealthy (the caller then stops the rest).
    pub async fn start_all(&mut self, signals: &mut StopSignals) -> Result<Outcome, UpError> {
        for service in self.config.services() {
            let index = self.spawn(service)?;
            let netns = self.config.netns.as_ref().map(|n| n.path.clone());
            let timeout = self.config.start_timeout;
            let r = &self.running[index];
            tokio::select! {
                healthy = wait_healthy(r, netns.as_deref(), timeout) => healthy?,
                // This one or one started before it.
                Some(i) = self.exits.recv() => {
                    let dead = &self.running[i];
                    return Err(died(&dead.service, dead.exited().await));
                }
                () = signals.recv() => return Ok(Outcome::Signalled),
            }
        }
        Ok(Outcome::Up)
    }

    /// Runs until a signal (Ok) or until a service exits by itself (its error).
    pub async fn watch(&mut self, signals: &mut StopSignals) -> Result<(), UpError> {
        tokio::select! {
            () = signals.recv() => Ok(()),
            Some(i) = self.exits.recv() => {
                let r = &self.running[i];
                Err(died(&r.service, r.exited().await))
            }
        }
    }

    /// Stops every running service in reverse start order: SIGTERM, then SIGKILL after the
    /// stop timeout. Returns what did not stop cleanly, if anything.
    pub async fn stop_all(&mut self) -> Result<(), UpError> {
        let mut problems = Vec::new();
        for r in self.running.iter().rev() {
            let name = r.service.name;
            if r.has_exited() {
                continue;
            }
            if let Err(e) = kill(r.pid, Signal::SIGTERM) {
                problems.push(format!("{name}: SIGTERM failed: {e}"));
            }
            let status = match tokio::time::timeout(self.config.stop_timeout, r.exited()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = kill(r.pid, Signal::SIGKILL);
                    problems.push(format!(
                        "{name} did not stop within {} and was killed",
                        humantime::format_duration(self.config.stop_timeout)
                    ));
                    r.exited().await
                }
            };
            if !status.success() && problems.last().is_none_or(|p| !p.starts_with(name)) {
                problems.push(format!("{name} exited with {status}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(UpError::UncleanStop(problems.join("; ")))
        }
    }

    /// Starts `service` with its output appended to its log; returns its index.
    fn spawn(&mut self, service: Service) -> Result<usize, UpError> {
        let log_err = |source| UpError::Dir {
            path: service.log.clone(),
            source,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&service.log)
            .map_err(log_err)?;
        let (program, args) = self.config.command_line(&service);
        let mut command = tokio::process::Command::new(program);
        // In a namespace, nsenter drops to the user after entering it (see `command_line`).
        if let (Some(ids), None) = (service.run_as, &self.config.netns) {
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
        let index = self.running.len();
        let (tx, status) = watch::channel(None);
        let exits = self.exits_tx.clone();
        tokio::spawn(async move {
            // A wait error leaves nothing to supervise: report it as a failed exit.
            let s = child.wait().await.unwrap_or_else(|_| failed_status());
            let _ = tx.send(Some(s));
            let _ = exits.send(index);
        });
        self.running.push(Running {
            service,
            pid,
            status,
        });
        Ok(index)
    }
}

/// Polls `r`'s health until SERVING or `timeout`.
async fn wait_healthy(r: &Running, netns: Option<&Path>, timeout: Duration) -> Result<(), UpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if health::serving(r.service.listen, netns, r.service.health_tls.as_ref()).await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UpError::Unhealthy {
                service: r.service.name,
                timeout,
                log: r.service.log.clone(),
                tail: log_tail(&r.service.log),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn died(service: &Service, status: ExitStatus) -> UpError {
    UpError::Died {
        service: service.name,
        status,
        log: service.log.clone(),
        tail: log_tail(&service.log),
    }
}

/// The last lines of a log, indented.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        return "  (empty)".into();
    }
    tail.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    ExitStatus::from_raw(1 << 8)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let tail = log_tail(&p);
        assert!(tail.starts_with("  line 11\n"));
        assert!(tail.ends_with("  line 30"));
        assert_eq!(log_tail(&dir.path().join("missing")), "  (empty)");
    }
}
