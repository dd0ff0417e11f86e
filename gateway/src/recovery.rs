//! Crash safety: sagas record their intent before their first step; a sweep (at start-up and
//! periodically) finishes what a killed gateway left half-done, releases addresses that no
//! endpoint and no saga in flight owns, and pools that no network owns (a CreateNetwork killed
//! between IPAM and its record; a DeleteNetwork whose release IPAM did not answer).
//!
//! What the sweep does with an operation left behind:
//! - `Connect`, `CreateSandbox`: undone (detach on the agent, remove the sandbox on the agent,
//!   release the addresses of every endpoint it planned) — the caller never got an answer, and
//!   a retry starts afresh;
//! - `Disconnect`, `DeleteSandbox`: completed — the caller asked for the thing to go.
//!
//! Every step is idempotent (detaching what is not attached, releasing by an owner that holds
//! nothing), so sweeping twice, or from two replicas, is harmless.

use std::collections::HashSet;

use weft_proto::ipam::v1 as ipb;

use crate::{
    domain::{endpoint::EndpointRecord, list::NetworkFilter, sandbox::SandboxRecord},
    engine::{Change, Gateway},
    error::GatewayError,
    store::{self, operations::Operation, sandboxes::Owner},
};

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub undone: usize,
    pub completed: usize,
    pub released_addresses: usize,
    pub released_pools: usize,
}

/// What the consistency check found; all zero is the expected answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consistency {
    /// Addresses in the gateway's pools whose owner is no endpoint and no saga in flight.
    pub leaked_addresses: Vec<String>,
    /// Endpoints recorded with an address IPAM does not hold for them.
    pub endpoints_without_address: Vec<String>,
    /// IPAM pools reserved for a network (`POOL SUBNET`) that no network has.
    pub leaked_pools: Vec<String>,
    pub operations_pending: usize,
}

impl Gateway {
    /// Finishes the sagas a crashed gateway left behind (those older than the operation timeout
    /// and not in flight in this process), then releases addresses nothing owns.
    pub async fn sweep(&self) -> Result<SweepReport, GatewayError> {
        let mut report = SweepReport::default();
        let cutoff = self.clock.now_ms()
            - i64::try_from(self.operation_timeout.as_millis()).unwrap_or(i64::MAX);
        let ops = {
            let mut conn = self.db.read().acquire().await?;
            store::operations::older_than(&mut conn, cutoff).await?
        };
        for op in ops {
            let id = op.id();
            if self.in_flight(&id) {
                continue;
            }
            tracing::info!(operation = %id, kind = op.kind(), "finishing an interrupted operation");
            match &op {
                Operation::Connect { sandbox, endpoint } => {
                    self.detach_agent(sandbox, endpoint).await;
                    self.release_owner(&endpoint.id).await;
                    self.commit(&[Change::EndOperation(&id)], None).await?;
                    report.undone += 1;
                }
                Operation::CreateSandbox { sandbox, endpoints } => {
                    if self.find_sandbox("sandbox", &sandbox.id).await.is_err() {
                        self.undo_create(sandbox, endpoints).await;
                    }
                    self.commit(&[Change::EndOperation(&id)], None).await?;
                    report.undone += 1;
                }
                Operation::Disconnect { sandbox, endpoint } => {
                    self.finish_detach(sandbox, endpoint, Some(&id)).await?;
                    report.completed += 1;
                }
                Operation::DeleteSandbox { sandbox } => {
                    self.finish_delete_sandbox(sandbox, &id).await?;
                    report.completed += 1;
                }
            }
        }
        report.released_addresses = self.release_orphans(cutoff).await?;
        report.released_pools = self.release_orphan_pools(cutoff).await?;
        if report != SweepReport::default() {
            tracing::info!(?report, "sweep repaired state");
        }
        Ok(report)
    }

    /// Detaches, releases and forgets one endpoint whose removal was decided; safe to repeat.
    pub(crate) async fn finish_detach(
        &self,
        sandbox: &SandboxRecord,
        endpoint: &EndpointRecord,
        op: Option<&str>,
    ) -> Result<(), GatewayError> {
        self.detach_agent(sandbox, endpoint).await;
        self.release_owner(&endpoint.id).await;
        let exists = self
            .endpoints(Owner::Sandbox, &sandbox.id)
            .await?
            .iter()
            .any(|e| e.id == endpoint.id);
        let mut changes = Vec::new();
        if exists {
            changes.push(Change::DeleteEndpoint(endpoint));
        }
        if let Some(op) = op {
            changes.push(Change::EndOperation(op));
        }
        self.commit(&changes, None).await?;
        Ok(())
    }

    async fn finish_delete_sandbox(
        &self,
        sandbox: &SandboxRecord,
        op: &str,
    ) -> Result<(), GatewayError> {
        let whole = sandbox.removal_takes_interfaces();
        if whole {
            // Its namespace goes whole, veths with it, before any address is given back.
            self.remove_agent_sandbox(sandbox).await;
        }
        for ep in self.endpoints(Owner::Sandbox, &sandbox.id).await? {
            if whole {
                self.release_owner(&ep.id).await;
                self.commit(&[Change::DeleteEndpoint(&ep)], None).await?;
            } else {
                self.finish_detach(sandbox, &ep, None).await?;
            }
        }
        if !whole {
            self.remove_agent_sandbox(sandbox).await;
        }
        let exists = self.find_sandbox("sandbox", &sandbox.id).await.is_ok();
        let mut changes = Vec::new();
        if exists {
            changes.push(Change::DeleteSandbox(sandbox));
        }
        changes.push(Change::EndOperation(op));
        self.commit(&changes, None).await?;
        Ok(())
    }

    /// Allocations in the gateway's pools whose owner is neither an endpoint nor a saga in
    /// flight (with `taken_before_ms`: only those taken before it). Read in this order
    /// (allocations, operations, endpoints) so that a Connect running meanwhile is always seen
    /// in one of the last two. CreateSandbox takes its addresses while its record is written:
    /// one taken a moment ago may have no record yet, which is why the sweep only releases
    /// allocations older than the operation timeout.
    async fn orphans(
        &self,
        taken_before_ms: Option<i64>,
    ) -> Result<Vec<ipb::Allocation>, GatewayError> {
        let (networks, _) = self.list_networks(&NetworkFilter::default()).await?;
        let mut allocations = Vec::new();
        for n in &networks {
            for s in &n.subnets {
                allocations.extend(self.allocations_in(&s.pool_id).await?);
            }
        }
        let mut conn = self.db.read().acquire().await?;
        let ops = store::operations::all(&mut conn).await?;
        let in_flight: HashSet<&str> = ops.iter().flat_map(Operation::endpoint_ids).collect();
        let endpoints: HashSet<String> = store::operations::endpoint_ids(&mut conn)
            .await?
            .into_iter()
            .collect();
        let old_enough = |a: &ipb::Allocation| match (taken_before_ms, &a.created_at) {
            (Some(cutoff), Some(t)) => {
                t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000) <= cutoff
            }
            _ => true,
        };
        Ok(allocations
            .into_iter()
            .filter(|a| {
                !endpoints.contains(&a.owner)
                    && !in_flight.contains(a.owner.as_str())
                    && old_enough(a)
            })
            .collect())
    }

    async fn release_orphans(&self, taken_before_ms: i64) -> Result<usize, GatewayError> {
        let orphans = self.orphans(Some(taken_before_ms)).await?;
        let owners: HashSet<&str> = orphans.iter().map(|a| a.owner.as_str()).collect();
        for owner in &owners {
            tracing::warn!(owner, "releasing addresses that no endpoint owns");
            self.release_owner(owner).await;
        }
        Ok(orphans.len())
    }

    /// Pools reserved for a network that no network has (with `taken_before_ms`: only those
    /// made before it: a CreateNetwork running now has its pools before its record). Pools
    /// are read before networks, so that a network recorded meanwhile is seen.
    async fn orphan_pools(
        &self,
        taken_before_ms: Option<i64>,
    ) -> Result<Vec<ipb::Pool>, GatewayError> {
        let pools = self.network_pools().await?;
        let (networks, _) = self.list_networks(&NetworkFilter::default()).await?;
        let owned: HashSet<&str> = networks
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| s.pool_id.as_str()))
            .collect();
        Ok(pools
            .into_iter()
            .filter(|p| {
                let made_ms = p.created_at.as_ref().map_or(0, |t| {
                    t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
                });
                !owned.contains(p.id.as_str()) && taken_before_ms.is_none_or(|c| made_ms <= c)
            })
            .collect())
    }

    async fn release_orphan_pools(&self, taken_before_ms: i64) -> Result<usize, GatewayError> {
        let orphans = self.orphan_pools(Some(taken_before_ms)).await?;
        for p in &orphans {
            tracing::warn!(pool = %p.id, subnet = %p.subnet, "releasing a pool that no network owns");
        }
        let ids: Vec<String> = orphans.iter().map(|p| p.id.clone()).collect();
        self.release_pool_ids(&ids).await;
        Ok(orphans.len())
    }

    /// The gateway's consistency check (with IPAM's own `Check`, the crash tests' oracle).
    pub async fn consistency(&self) -> Result<Consistency, GatewayError> {
        let leaked = self.orphans(None).await?;
        let mut out = Consistency {
            leaked_addresses: leaked
                .iter()
                .map(|a| format!("{} {} ({})", a.pool_id, a.address, a.owner))
                .collect(),
            ..Consistency::default()
        };
        out.leaked_pools = self
            .orphan_pools(None)
            .await?
            .iter()
            .map(|p| format!("{} {}", p.id, p.subnet))
            .collect();
        let mut conn = self.db.read().acquire().await?;
        out.operations_pending = store::operations::all_ids(&mut conn).await?.len();
        drop(conn);
        for sandbox in self.list_sandboxes().await? {
            for ep in self.endpoints(Owner::Sandbox, &sandbox.id).await? {
                let held = self.allocations_of(&ep.id).await?;
                let want = [&ep.ipv4_address, &ep.ipv6_address]
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .count();
                if held.len() != want {
                    out.endpoints_without_address.push(ep.id.clone());
                }
            }
        }
        Ok(out)
    }
}
