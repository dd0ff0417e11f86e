//! `CheckService`: the gateway's consistency check over the public API (role admin, see
//! `access::RULES`): the store against IPAM's pools and addresses ([`Gateway::consistency`]) and every host's kernel
//! against its desired state (each agent's `ApplyState` dry run). It reads; it repairs nothing.

use std::time::Duration;

use tonic::{Request, Response, Status};
use weft_proto::{
    agent::v1 as apb,
    gateway::v1::{self as pb, check_service_server::CheckService},
};

use crate::{engine::Gateway, error::GatewayError, grpc::GatewayGrpc};

/// The most entries of each list in an answer (the totals count them all).
pub const MAX_LISTED: usize = 1000;
/// How long one host's agent has for its dry run.
const DRY_RUN_TIMEOUT: Duration = Duration::from_secs(30);

impl Gateway {
    /// What `host`'s agent would repair to bring its kernel to the host's desired state (its
    /// `ApplyState` dry run), as one line per change and the failures it reported.
    pub async fn drift(&self, host: &str) -> Result<(Vec<String>, Vec<String>), GatewayError> {
        let state = self.desired_state(host).await?;
        let mut agent = self.agent_for(host).await?;
        let mut req = Request::new(apb::ApplyStateRequest {
            state: Some(state),
            dry_run: true,
        });
        req.set_timeout(DRY_RUN_TIMEOUT);
        let answer = agent
            .apply_state(req)
            .await
            .map_err(GatewayError::agent(host))?
            .into_inner();
        let changes = answer.changes.iter().map(change_line).collect();
        let failures = answer
            .failures
            .iter()
            .map(|f| format!("{} {}: {}", kind_name(f.kind), f.object, f.error))
            .collect();
        Ok((changes, failures))
    }
}

fn kind_name(kind: i32) -> String {
    apb::ObjectKind::try_from(kind).map_or_else(
        |_| format!("kind {kind}"),
        |k| {
            k.as_str_name()
                .trim_start_matches("OBJECT_KIND_")
                .to_lowercase()
        },
    )
}

fn change_line(c: &apb::Change) -> String {
    let action = apb::ChangeAction::try_from(c.action).map_or_else(
        |_| format!("action {}", c.action),
        |a| {
            a.as_str_name()
                .trim_start_matches("CHANGE_ACTION_")
                .to_lowercase()
        },
    );
    format!(
        "{action} {} {} (owner {}): {}",
        kind_name(c.kind),
        c.object,
        c.owner_id,
        c.detail
    )
}

/// The first [`MAX_LISTED`] of `all`, and how many there were.
fn capped(mut all: Vec<String>) -> (Vec<String>, u64) {
    let total = u64::try_from(all.len()).unwrap_or(u64::MAX);
    all.truncate(MAX_LISTED);
    (all, total)
}

#[tonic::async_trait]
impl CheckService for GatewayGrpc {
    async fn check_consistency(
        &self,
        _req: Request<pb::CheckConsistencyRequest>,
    ) -> Result<Response<pb::CheckConsistencyResponse>, Status> {
        let found = self.gw.consistency().await?;
        let hosts = self.gw.known_hosts().await?;
        let mut drift = Vec::new();
        for host in &hosts {
            let (changes, error) = match self.gw.drift(host).await {
                Ok((changes, failures)) => (changes, failures.join("; ")),
                Err(e @ GatewayError::Store(_)) => return Err(e.into()),
                Err(e) => (Vec::new(), e.to_string()),
            };
            if changes.is_empty() && error.is_empty() {
                continue;
            }
            let (changes, changes_total) = capped(changes);
            drift.push(pb::HostDrift {
                host: host.clone(),
                changes,
                changes_total,
                error,
            });
        }
        let (leaked_addresses, leaked_addresses_total) = capped(found.leaked_addresses);
        let (leaked_pools, leaked_pools_total) = capped(found.leaked_pools);
        let (endpoints_without_address, endpoints_without_address_total) =
            capped(found.endpoints_without_address);
        Ok(Response::new(pb::CheckConsistencyResponse {
            leaked_addresses,
            leaked_addresses_total,
            endpoints_without_address,
            endpoints_without_address_total,
            operations_pending: u64::try_from(found.operations_pending).unwrap_or(u64::MAX),
            drift,
            hosts_checked: u32::try_from(hosts.len()).unwrap_or(u32::MAX),
            leaked_pools,
            leaked_pools_total,
        }))
    }
}
