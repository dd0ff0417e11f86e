//! The agent's side of the gateway's `AgentRegistryService`: register this host, send
//! heartbeats, and reconcile — at start, whenever the gateway's desired revision moves past
//! what was applied, and every reconcile interval in any case (someone may have deleted a veth
//! or flushed the agent's nftables table by hand).

use std::{sync::Arc, time::Duration};

use tonic::Code;
use weft_proto::gateway::v1::{
    self as gpb, agent_registry_service_client::AgentRegistryServiceClient,
};
use weft_runtime::access::{Authed, Bearer};

use crate::{Agent, reconcile::Depth};

/// How the agent finds and presents itself to the gateway.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The gateway's URL.
    pub gateway: String,
    /// This host's name.
    pub host: String,
    /// Where the gateway reaches this agent (HOST:PORT).
    pub agent_address: String,
    /// Where this host's dns-svc admin API is, if any.
    pub dns_address: String,
    /// Reconcile at least this often.
    pub reconcile_interval: Duration,
    /// The agent's credentials at the gateway: a token, or none when its certificate is
    /// (an `https://` gateway, dialled with `tls`).
    pub bearer: Bearer,
    /// The agent's own certificate, for an `https://` gateway.
    pub tls: Option<weft_runtime::transport::TlsFiles>,
}

/// What the reconciliation loop reports to the heartbeat: the revision it applied last and
/// the failures that pass left.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    applied: u64,
    drift: u64,
}

/// What the heartbeat tells the reconciliation loop.
#[derive(Debug, Clone, Copy)]
struct Beat {
    /// Bumped by every registration: the loop then fetches the state again.
    registration: u64,
    /// The host's desired revision as the gateway last said it...
    revision: u64,
    /// ...and when (the heartbeat's start): the state of that revision is as of then.
    at: std::time::Instant,
}

fn duration(d: Option<prost_types::Duration>, default: Duration) -> Duration {
    d.and_then(|d| {
        Some(Duration::new(
            u64::try_from(d.seconds).ok()?,
            u32::try_from(d.nanos).ok()?,
        ))
    })
    .filter(|d| !d.is_zero())
    .unwrap_or(default)
}

async fn register_request(agent: &Agent, reg: &Registration) -> gpb::RegisterHostRequest {
    let caps = crate::grpc::capabilities_pb(agent)
        .await
        .unwrap_or_default();
    gpb::RegisterHostRequest {
        name: reg.host.clone(),
        agent_address: reg.agent_address.clone(),
        dns_address: reg.dns_address.clone(),
        addresses: caps.addresses.clone(),
        agent_version: caps.agent_version.clone(),
        capabilities: Some(caps.into()),
    }
}

/// Fetches this host's desired state and applies what changed; returns the state (and when it
/// was read) and the number of failures left. With the state `held` from the last fetch, only
/// what changed since its revision is asked for, and merged into it; on failure `held` is
/// given back.
async fn fetch_and_apply(
    agent: &Agent,
    client: &mut AgentRegistryServiceClient<Authed>,
    host: &str,
    held: Option<Cached>,
) -> Result<(Cached, u64), (tonic::Status, Option<Cached>)> {
    let as_of = std::time::Instant::now();
    let since = held.as_ref().map_or(0, |c| c.state.revision);
    let answer = match client
        .get_desired_state(gpb::GetDesiredStateRequest {
            host: host.to_owned(),
            since_revision: since,
        })
        .await
    {
        Ok(a) => a.into_inner(),
        Err(st) => return Err((st, held)),
    };
    let got = answer.state.unwrap_or_default();
    let state = match held {
        Some(held) if answer.changes_only => {
            let mut state = held.state;
            weft_runtime::desired::apply_changes(&mut state, got, &answer.removed_sandboxes);
            state
        }
        _ => got,
    };
    let fetched = as_of.elapsed();
    let prepared = crate::reconcile::Prepared::new(&state);
    let cached = Cached {
        revision: state.revision,
        prepared,
        as_of,
        state,
    };
    let left = apply(agent, &cached, fetched).await;
    Ok((cached, left))
}

/// The desired state last fetched (as fetched, and converted), and when it was read.
struct Cached {
    revision: u64,
    prepared: crate::reconcile::Prepared,
    as_of: std::time::Instant,
    state: weft_proto::agent::v1::DesiredState,
}

/// Applies what changed since the last pass; returns the number of failures left. Logs every
/// pass with its cost: what operators (and the scale benchmark) watch.
async fn apply(agent: &Agent, cached: &Cached, fetched: Duration) -> u64 {
    let t = std::time::Instant::now();
    let report = agent
        .reconcile_prepared(&cached.prepared, Depth::Changes, cached.as_of)
        .await;
    let revision = cached.revision;
    if !report.changes.is_empty() {
        tracing::info!(
            revision,
            repairs = report.changes.len(),
            "reconciled: the kernel had drifted"
        );
    }
    tracing::info!(
        revision,
        changes = report.changes.len(),
        failures = report.failures.len(),
        fetch_ms = crate::reconcile::ms(fetched),
        apply_ms = crate::reconcile::ms(t.elapsed()),
        "reconciliation done"
    );
    for f in &report.failures {
        tracing::warn!(object = %f.object, owner = %f.owner, error = %f.error, "cannot repair");
    }
    report.failures.len() as u64
}

/// The audit's turn (see [`Agent::audit`]); returns the number of failures left.
async fn audit(agent: &Agent, cached: &Cached) -> u64 {
    let revision = cached.revision;
    let t = std::time::Instant::now();
    let audit = agent.audit(&cached.prepared, cached.as_of).await;
    tracing::info!(
        revision,
        sandboxes = audit.ensured,
        changes = audit.changes.len(),
        failures = audit.failures.len(),
        ms = crate::reconcile::ms(t.elapsed()),
        "audit done"
    );
    for f in &audit.failures {
        tracing::warn!(object = %f.object, owner = %f.owner, error = %f.error, "audit: cannot repair");
    }
    audit.failures.len() as u64
}

/// Reconciles: after each registration, whenever the gateway's desired revision moves past
/// what was applied, and every reconcile interval in any case. A periodic pass whose revision
/// has not moved reuses the state fetched last (the heartbeat vouches that it is current).
/// The audit follows a pass at most once per interval (not after every pass a busy host's
/// changes bring). Runs apart from the heartbeat, so a long pass never delays one.
async fn reconcile_loop(
    agent: Arc<Agent>,
    mut client: AgentRegistryServiceClient<Authed>,
    host: String,
    interval: Duration,
    mut beats: tokio::sync::watch::Receiver<Beat>,
    progress: Arc<std::sync::Mutex<Progress>>,
) {
    let mut cached: Option<Cached> = None;
    let mut registration = 0;
    let mut last = tokio::time::Instant::now();
    let mut last_audit: Option<tokio::time::Instant> = None;
    loop {
        let beat = *beats.borrow_and_update();
        let stale = cached.as_ref().is_none_or(|c| beat.revision > c.revision);
        let registered = registration != beat.registration;
        let due = registered || stale || last.elapsed() >= interval;
        if due && beat.registration > 0 {
            registration = beat.registration;
            let left = match cached.as_mut() {
                // Nothing new at the gateway: the state in hand is the current one, as of the
                // heartbeat that said so.
                Some(c) if !stale && !registered => {
                    if beat.revision == c.revision {
                        c.as_of = c.as_of.max(beat.at);
                    }
                    Some(apply(&agent, c, Duration::ZERO).await)
                }
                _ => {
                    // After a registration (maybe with another gateway), the whole state.
                    let held = if registered { None } else { cached.take() };
                    match fetch_and_apply(&agent, &mut client, &host, held).await {
                        Ok((c, left)) => {
                            cached = Some(c);
                            Some(left)
                        }
                        Err((st, held)) => {
                            cached = held;
                            tracing::warn!(error = %st.message(), "cannot fetch the desired state");
                            None
                        }
                    }
                }
            };
            let mut left = left;
            if let (Some(n), Some(c)) = (left.as_mut(), cached.as_ref())
                && last_audit.is_none_or(|t| t.elapsed() >= interval)
            {
                *n += audit(&agent, c).await;
                last_audit = Some(tokio::time::Instant::now());
            }
            if let (Some(left), Some(c)) = (left, cached.as_ref()) {
                *progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Progress {
                    applied: c.revision,
                    drift: left,
                };
            }
            last = tokio::time::Instant::now();
        }
        let until = interval.saturating_sub(last.elapsed());
        tokio::select! {
            changed = beats.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(until) => {}
        }
    }
}

/// Registers, then heartbeats until the process ends, while [`reconcile_loop`] reconciles.
/// Errors are logged and retried with backoff; the agent keeps serving its own API
/// throughout.
pub async fn run(agent: Arc<Agent>, reg: Registration) {
    let channel = match weft_runtime::transport::gateway_channel(
        &reg.gateway,
        reg.tls.as_ref(),
        Duration::from_secs(2),
        Some(Duration::from_secs(30)),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(gateway = %reg.gateway, error = %e, "cannot dial the gateway: not registering");
            return;
        }
    };
    // A whole desired state, as large as ApplyState takes (tonic's default, 4 MiB, is about
    // 5,000 sandboxes).
    let client = AgentRegistryServiceClient::new(reg.bearer.on(channel))
        .max_decoding_message_size(weft_runtime::size::DESIRED_STATE);
    let (beats, rx) = tokio::sync::watch::channel(Beat {
        registration: 0,
        revision: 0,
        at: std::time::Instant::now(),
    });
    let progress = Arc::new(std::sync::Mutex::new(Progress::default()));
    tokio::spawn(reconcile_loop(
        agent.clone(),
        client.clone(),
        reg.host.clone(),
        reg.reconcile_interval,
        rx,
        progress.clone(),
    ));
    heartbeats(&agent, client, &reg, &beats, &progress).await;
}

async fn heartbeats(
    agent: &Agent,
    mut client: AgentRegistryServiceClient<Authed>,
    reg: &Registration,
    beats: &tokio::sync::watch::Sender<Beat>,
    progress: &std::sync::Mutex<Progress>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut registrations = 0;
    loop {
        // Register (again).
        let interval = match client
            .register_host(register_request(agent, reg).await)
            .await
        {
            Ok(r) => {
                backoff = Duration::from_millis(200);
                let r = r.into_inner();
                tracing::info!(host = %reg.host, gateway = %reg.gateway, "registered with the gateway");
                duration(r.heartbeat_interval, Duration::from_secs(5))
            }
            Err(st) => {
                tracing::warn!(gateway = %reg.gateway, error = %st.message(), retry_in = ?backoff, "cannot register");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        registrations += 1;
        beats.send_modify(|b| b.registration = registrations);
        loop {
            tokio::time::sleep(interval).await;
            let at = std::time::Instant::now();
            let now = *progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match client
                .heartbeat(gpb::HeartbeatRequest {
                    host: reg.host.clone(),
                    applied_revision: now.applied,
                    unrepaired_drift: now.drift,
                })
                .await
            {
                Ok(r) => {
                    let revision = r.into_inner().desired_revision;
                    beats.send_if_modified(|b| {
                        let moved = revision != b.revision;
                        b.revision = revision;
                        b.at = at;
                        moved
                    });
                }
                Err(st) if st.code() == Code::NotFound => break,
                Err(st) => {
                    tracing::warn!(error = %st.message(), "heartbeat failed");
                }
            }
        }
    }
}
