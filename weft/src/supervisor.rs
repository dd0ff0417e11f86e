//! The supervisor: starts the services one after another (each once the one before is
//! healthy), restarts one that exits by itself with the backoff of [`crate::policy`] (also
//! during the start), gives up on one that keeps crashing, and stops them in reverse order
//! with SIGTERM (by PID), killing only one that does not stop in time. Every exit is reported
//! on stderr with the tail of the service's log, and `<data-dir>/status.json` follows every
//! change (`weft status` prints it).

use std::{
    os::unix::process::ExitStatusExt as _,
    process::ExitStatus,
    time::{Duration, Instant, SystemTime},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    signal::unix::{Signal as SignalStream, SignalKind, signal},
    sync::mpsc,
};

use crate::{
    error::UpError,
    logs,
    plan::{Service, UpConfig},
    policy::{self, Decision, Restarts},
    process::{Event, Process, Tag},
    status::{self, LastExit, ServiceState, StackState},
};

/// How many lines of a service's log an exit report (and the status file) shows.
const REPORT_TAIL_LINES: usize = 10;
/// How many the message of `weft up` giving up shows.
const FINAL_TAIL_LINES: usize = 20;

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

/// One service and its current process, if any.
#[derive(Debug)]
struct Slot {
    service: Service,
    /// Bumped at every start: events of an earlier process are stale.
    generation: u64,
    process: Option<Process>,
    /// Since when every check of the current process said SERVING.
    healthy_since: Option<Instant>,
    /// Whether the current process has said SERVING at all.
    was_healthy: bool,
    /// Since when the current process, healthy before, has failed every check.
    unhealthy_since: Option<Instant>,
    /// Whether the current process has stayed healthy for [`policy::STABLE_AFTER`].
    stable: bool,
    /// Whether any process of this service has been healthy (the start moves on).
    ever_healthy: bool,
    /// Why weft killed the current process, when it did.
    killed_for: Option<String>,
    restarts: Restarts,
    /// When it is to be started again.
    start_at: Option<(Instant, SystemTime)>,
    last_exit: Option<LastExit>,
    state: ServiceState,
}

/// The stack: every service of the plan, in start order.
#[derive(Debug)]
pub struct Stack {
    config: UpConfig,
    slots: Vec<Slot>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    state: StackState,
    gave_up: Option<String>,
    /// Whether the status file could not be written (said once).
    status_failed: bool,
}

impl Stack {
    pub fn new(config: UpConfig) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let slots = config
            .services()
            .into_iter()
            .map(|service| Slot {
                service,
                generation: 0,
                process: None,
                healthy_since: None,
                was_healthy: false,
                unhealthy_since: None,
                stable: false,
                ever_healthy: false,
                killed_for: None,
                restarts: Restarts::default(),
                start_at: None,
                last_exit: None,
                state: ServiceState::Waiting,
            })
            .collect();
        Self {
            config,
            slots,
            events_tx,
            events,
            state: StackState::Starting,
            gave_up: None,
            status_failed: false,
        }
    }

    /// The services running now, with their PIDs.
    pub fn running(&self) -> Vec<(&Service, Pid)> {
        self.slots
            .iter()
            .filter_map(|s| s.process.as_ref().map(|p| (&s.service, p.pid)))
            .collect()
    }

    /// Starts the services and keeps them running until Ctrl-C or SIGTERM (`Ok`), or until
    /// one does not become healthy at its first start or keeps crashing (its error); calls
    /// `on_up` once, when every service has been healthy. The caller then stops the rest.
    pub async fn run(
        &mut self,
        signals: &mut StopSignals,
        on_up: impl FnOnce(&Self),
    ) -> Result<(), UpError> {
        let mut on_up = Some(on_up);
        if !self.slots.is_empty() {
            self.start(0)?;
        }
        loop {
            self.publish();
            let wake = self.next_wake();
            tokio::select! {
                () = signals.recv() => return Ok(()),
                Some(event) = self.events.recv() => self.on_event(event)?,
                () = tokio::time::sleep_until(wake.into()) => self.on_time()?,
            }
            if self.state == StackState::Starting && self.slots.iter().all(|s| s.ever_healthy) {
                self.state = StackState::Up;
                if let Some(f) = on_up.take() {
                    f(self);
                }
            }
        }
    }

    /// Starts (or restarts) the service of slot `i`.
    fn start(&mut self, i: usize) -> Result<(), UpError> {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let tag = Tag {
            slot: i,
            generation: slot.generation,
        };
        let process = Process::spawn(
            &self.config,
            &slot.service,
            slot.restarts.total,
            tag,
            &self.events_tx,
        )?;
        slot.process = Some(process);
        slot.start_at = None;
        slot.healthy_since = None;
        slot.was_healthy = false;
        slot.unhealthy_since = None;
        slot.stable = false;
        slot.killed_for = None;
        slot.state = ServiceState::Starting;
        Ok(())
    }

    fn on_event(&mut self, event: Event) -> Result<(), UpError> {
        let tag = match &event {
            Event::Exited { tag, .. } | Event::Health { tag, .. } => *tag,
        };
        let slot = &self.slots[tag.slot];
        if slot.generation != tag.generation || slot.process.is_none() {
            return Ok(());
        }
        match event {
            Event::Exited { status, .. } => self.exited(tag.slot, status),
            Event::Health { serving, .. } => self.health(tag.slot, serving),
        }
    }

    fn health(&mut self, i: usize, serving: bool) -> Result<(), UpError> {
        let slot = &mut self.slots[i];
        if !serving {
            slot.healthy_since = None;
            if slot.was_healthy {
                slot.state = ServiceState::Unhealthy;
                slot.unhealthy_since.get_or_insert_with(Instant::now);
            }
            return Ok(());
        }
        slot.unhealthy_since = None;
        slot.healthy_since.get_or_insert_with(Instant::now);
        slot.state = ServiceState::Healthy;
        let first = !std::mem::replace(&mut slot.was_healthy, true);
        if first && slot.generation > 1 {
            let pid = slot.process.as_ref().map(|p| p.pid);
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "weft up: {} is healthy again (pid {}, restart {})",
                    slot.service.name,
                    pid.map_or_else(|| "-".into(), |p| p.to_string()),
                    slot.restarts.total
                );
            }
        }
        if !std::mem::replace(&mut slot.ever_healthy, true)
            && let Some(next) = self.slots.get(i + 1)
            && next.generation == 0
        {
            // The start moves on to the next service.
            self.start(i + 1)?;
        }
        Ok(())
    }

    fn exited(&mut self, i: usize, status: ExitStatus) -> Result<(), UpError> {
        let slot = &mut self.slots[i];
        let Some(process) = slot.process.take() else {
            return Ok(());
        };
        let name = slot.service.name;
        let tail = logs::tail(&slot.service.log, FINAL_TAIL_LINES);
        let mut text = logs::describe(status);
        if let Some(why) = slot.killed_for.take() {
            text = format!("{text}: weft up killed it, {why}");
        }
        let report_tail = tail[tail.len().saturating_sub(REPORT_TAIL_LINES)..].to_vec();
        slot.last_exit = Some(LastExit {
            status: text.clone(),
            code: status.code(),
            signal: status.signal(),
            at: rfc3339(SystemTime::now()),
            log_tail: report_tail.clone(),
        });
        slot.healthy_since = None;
        let ran = humantime::format_duration(round_ms(process.started.elapsed()));
        match slot.restarts.exited() {
            Decision::Restart { delay, restart } => {
                let now = (Instant::now(), SystemTime::now());
                slot.start_at = Some((now.0 + delay, now.1 + delay));
                slot.state = ServiceState::Restarting;
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "weft up: {name} (pid {}) exited with {text} after {ran}; restart {restart} \
                         in {} ({} of {} exits in a row without staying healthy); last lines of \
                         {}:\n{}",
                        process.pid,
                        humantime::format_duration(delay),
                        slot.restarts.streak,
                        policy::CRASH_LIMIT,
                        slot.service.log.display(),
                        logs::indented(&report_tail)
                    );
                }
                Ok(())
            }
            Decision::GiveUp => {
                slot.state = ServiceState::CrashLoop;
                let e = UpError::CrashLoop {
                    service: name,
                    exits: slot.restarts.streak,
                    stable: policy::STABLE_AFTER,
                    status: text,
                    log: slot.service.log.clone(),
                    tail: logs::indented(&tail),
                };
                self.state = StackState::GaveUp;
                self.gave_up = e.to_string().lines().next().map(str::to_owned);
                Err(e)
            }
        }
    }

    /// Starts what is due, notes who has stayed healthy long enough, and deals with a process
    /// that has not become healthy in time or has stopped answering its health checks.
    fn on_time(&mut self) -> Result<(), UpError> {
        let now = Instant::now();
        let timeout = self.config.start_timeout;
        for i in 0..self.slots.len() {
            if self.slots[i].start_at.is_some_and(|(at, _)| at <= now) {
                self.start(i)?;
            }
            let starting = self.state == StackState::Starting;
            let slot = &mut self.slots[i];
            let Some(p) = &slot.process else {
                continue;
            };
            if !slot.stable
                && slot
                    .healthy_since
                    .is_some_and(|t| t + policy::STABLE_AFTER <= now)
            {
                slot.stable = true;
                slot.restarts.stable();
            }
            let late = !slot.was_healthy && slot.killed_for.is_none() && p.started + timeout <= now;
            if late && starting {
                return Err(UpError::Unhealthy {
                    service: slot.service.name,
                    timeout,
                    log: slot.service.log.clone(),
                    tail: logs::indented(&logs::tail(&slot.service.log, FINAL_TAIL_LINES)),
                });
            }
            let hung = slot.killed_for.is_none()
                && slot.unhealthy_since.is_some_and(|t| t + timeout <= now);
            if late || hung {
                // A process that hangs is no better than one that exits: it is killed, and
                // its exit counts as one.
                let _ = kill(p.pid, Signal::SIGKILL);
                let why = if late {
                    "it was not healthy within"
                } else {
                    "it failed every health check for"
                };
                slot.killed_for = Some(format!("as {why} {}", humantime::format_duration(timeout)));
            }
        }
        Ok(())
    }

    /// When [`Stack::on_time`] next has something to do.
    fn next_wake(&self) -> Instant {
        let timeout = self.config.start_timeout;
        self.slots
            .iter()
            .flat_map(|s| {
                let process = s.process.as_ref();
                [
                    s.start_at.map(|(at, _)| at),
                    s.healthy_since
                        .filter(|_| !s.stable)
                        .map(|t| t + policy::STABLE_AFTER),
                    process
                        .filter(|_| !s.was_healthy && s.killed_for.is_none())
                        .map(|p| p.started + timeout),
                    s.unhealthy_since
                        .filter(|_| s.killed_for.is_none())
                        .map(|t| t + timeout),
                ]
            })
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Stops every running service in reverse start order: SIGTERM, then SIGKILL after the
    /// stop timeout. Returns what did not stop cleanly, if anything.
    pub async fn stop_all(&mut self) -> Result<(), UpError> {
        if self.state != StackState::GaveUp {
            self.state = StackState::Stopping;
        }
        let mut problems = Vec::new();
        for i in (0..self.slots.len()).rev() {
            let slot = &mut self.slots[i];
            slot.start_at = None;
            if slot.state != ServiceState::CrashLoop {
                slot.state = ServiceState::Stopped;
            }
            let Some(p) = slot.process.take() else {
                continue;
            };
            self.publish();
            if let Some(problem) = stop(self.slots[i].service.name, &p, &self.config).await {
                problems.push(problem);
            }
        }
        if self.state != StackState::GaveUp {
            self.state = StackState::Stopped;
        }
        self.publish();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(UpError::UncleanStop(problems.join("; ")))
        }
    }

    /// Writes the status file (saying once on stderr when it cannot).
    fn publish(&mut self) {
        let snapshot = self.snapshot();
        if let Err(e) = status::write(&self.config.data_dir, &snapshot)
            && !std::mem::replace(&mut self.status_failed, true)
        {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("weft up: cannot write the status file: {e}");
            }
        }
    }

    fn snapshot(&self) -> status::Status {
        status::Status {
            weft_pid: std::process::id(),
            host_name: self.config.host_name.clone(),
            state: self.state,
            updated_at: rfc3339(SystemTime::now()),
            policy: status::Policy::current(),
            services: self
                .slots
                .iter()
                .map(|s| status::ServiceStatus {
                    name: s.service.name.to_owned(),
                    pid: s.process.as_ref().map(|p| p.pid.as_raw()),
                    state: s.state,
                    listen: s.service.listen.to_string(),
                    metrics: Some(s.service.metrics.to_string()),
                    log: s.service.log.clone(),
                    started_at: s.process.as_ref().map(|p| rfc3339(p.started_at)),
                    restarts: s.restarts.total,
                    exits_in_a_row: s.restarts.streak,
                    next_start_at: s.start_at.map(|(_, at)| rfc3339(at)),
                    last_exit: s.last_exit.clone(),
                })
                .collect(),
            gave_up: self.gave_up.clone(),
        }
    }
}

/// Stops one process: SIGTERM, SIGKILL after the stop timeout; what went wrong, if anything.
async fn stop(name: &str, p: &Process, config: &UpConfig) -> Option<String> {
    if p.has_exited() {
        return None;
    }
    let mut problem = None;
    if let Err(e) = kill(p.pid, Signal::SIGTERM) {
        problem = Some(format!("{name}: SIGTERM failed: {e}"));
    }
    let Ok(status) = tokio::time::timeout(config.stop_timeout, p.exited()).await else {
        let _ = kill(p.pid, Signal::SIGKILL);
        p.exited().await;
        return Some(format!(
            "{name} did not stop within {} and was killed",
            humantime::format_duration(config.stop_timeout)
        ));
    };
    if !status.success() && problem.is_none() {
        problem = Some(format!("{name} exited with {}", logs::describe(status)));
    }
    problem
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
