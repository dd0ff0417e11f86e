//! The agent's side of the gateway's `AgentRegistryService`: register this host, send
//! heartbeats, and reconcile — at start, whenever the gateway's desired revision moves past
//! what was applied, and every reconcile interval in any case (someone may have deleted a veth
//! or flushed the agent's nftables table by hand).

use std::{sync::Arc, time::Duration};

use tonic::{Code, transport::Channel};
use weft_proto::gateway::v1::{
    self as gpb, agent_registry_service_client::AgentRegistryServiceClient,
};

use crate::Agent;

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
}

/// What the loop keeps between rounds.
#[derive(Debug, Default)]
struct Progress {
    applied: u64,
    drift: u64,
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

/// Fetches this host's desired state and applies it; returns the revision applied and the
/// number of failures left.
async fn reconcile(
    agent: &Agent,
    client: &mut AgentRegistryServiceClient<Channel>,
    host: &str,
) -> Result<(u64, u64), tonic::Status> {
    let t = std::time::Instant::now();
    let state = client
        .get_desired_state(gpb::GetDesiredStateRequest {
            host: host.to_owned(),
        })
        .await?
        .into_inner()
        .state
        .unwrap_or_default();
    let fetched = t.elapsed();
    let report = agent.apply_state(&state, false).await;
    if !report.changes.is_empty() {
        tracing::info!(
            revision = state.revision,
            repairs = report.changes.len(),
            "reconciled: the kernel had drifted"
        );
    }
    // Every pass, with its cost: what operators (and the scale benchmark) watch.
    tracing::info!(
        revision = state.revision,
        changes = report.changes.len(),
        failures = report.failures.len(),
        fetch_ms = crate::reconcile::ms(fetched),
        apply_ms = crate::reconcile::ms(t.elapsed() - fetched),
        "reconciliation done"
    );
    for f in &report.failures {
        tracing::warn!(object = %f.object, owner = %f.owner, error = %f.error, "cannot repair");
    }
    Ok((state.revision, report.failures.len() as u64))
}

/// Registers, then heartbeats and reconciles until the process ends. Errors are logged and
/// retried with backoff; the agent keeps serving its own API throughout.
pub async fn run(agent: Arc<Agent>, reg: Registration) {
    let endpoint = match tonic::transport::Endpoint::from_shared(reg.gateway.clone()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30)),
        Err(e) => {
            tracing::error!(gateway = %reg.gateway, error = %e, "invalid gateway URL: not registering");
            return;
        }
    };
    let mut client = AgentRegistryServiceClient::new(endpoint.connect_lazy());
    let mut progress = Progress::default();
    let mut backoff = Duration::from_millis(200);
    loop {
        // Register (again).
        let interval = match client
            .register_host(register_request(&agent, &reg).await)
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
        // Reconcile at once, then on every revision change and every reconcile interval;
        // heartbeat every interval.
        let mut due = true;
        let mut last = tokio::time::Instant::now();
        let mut last_beat = tokio::time::Instant::now();
        loop {
            if due || last.elapsed() >= reg.reconcile_interval {
                match reconcile(&agent, &mut client, &reg.host).await {
                    Ok((revision, left)) => {
                        progress.applied = revision;
                        progress.drift = left;
                    }
                    Err(st) => {
                        tracing::warn!(error = %st.message(), "cannot fetch the desired state");
                    }
                }
                last = tokio::time::Instant::now();
                due = false;
            }
            // Wake for the next heartbeat or the next periodic reconcile, whichever is first.
            let until_reconcile = reg.reconcile_interval.saturating_sub(last.elapsed());
            let until_beat = interval.saturating_sub(last_beat.elapsed());
            tokio::time::sleep(until_beat.min(until_reconcile)).await;
            if last_beat.elapsed() < interval {
                continue;
            }
            last_beat = tokio::time::Instant::now();
            match client
                .heartbeat(gpb::HeartbeatRequest {
                    host: reg.host.clone(),
                    applied_revision: progress.applied,
                    unrepaired_drift: progress.drift,
                })
                .await
            {
                Ok(r) => due = r.into_inner().desired_revision > progress.applied,
                Err(st) if st.code() == Code::NotFound => break,
                Err(st) => {
                    tracing::warn!(error = %st.message(), "heartbeat failed");
                }
            }
        }
    }
}
