//! Reconciliation (`ApplyState`): make the kernel match the desired state of this host.
//!
//! Everything desired is ensured with the same idempotent operations the RPCs use (a missing
//! bridge, veth, address or route is made again; what is right is left alone). Then the
//! agent's own objects that nothing wants any more are removed: links carrying a Weft alias,
//! namespaces named `weft-<sandbox id>`, sandbox file directories. Objects without the agent's
//! marks are never touched. (A `weft-<id>` namespace counts as the agent's only while its data
//! directory holds that sandbox's files.) Failures do not stop the pass; they are reported, and the next
//! pass retries them.

use std::{collections::BTreeSet, path::Path};

use weft_proto::agent::v1 as pb;

use crate::{
    Agent, driver, kernel, names,
    report::{Action, Kind, Report},
    sandbox::{self, Sandbox},
    spec::{Endpoint, Network},
};

pub use crate::recent::{GRACE, Recent};

/// What the kernel holds that carries the agent's marks.
#[derive(Debug, Default)]
struct Owned {
    /// Network ids of bridges (by alias).
    networks: BTreeSet<String>,
    /// Host-side veths by endpoint id (from their alias).
    endpoints: std::collections::BTreeMap<String, kernel::Link>,
    /// Sandbox ids of managed namespaces (`weft-<id>` in /run/netns).
    namespaces: BTreeSet<String>,
    /// Sandbox ids of file directories.
    files: BTreeSet<String>,
}

/// The directory where named namespaces live.
const NETNS_DIR: &str = "/run/netns";

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A desired state in domain terms: what converted (the rest is reported as failures).
struct Desired {
    networks: Vec<Network>,
    sandboxes: Vec<Sandbox>,
    endpoints: Vec<Endpoint>,
}

impl Desired {
    fn from_pb(state: &pb::DesiredState, report: &mut Report) -> Self {
        let mut networks = Vec::new();
        for (i, n) in state.networks.iter().enumerate() {
            match Network::from_pb(n.clone(), &format!("state.networks[{i}]")) {
                Ok(n) => networks.push(n),
                Err(v) => report.fail_msg(Kind::Link, &n.name, &n.network_id, invalid(&v)),
            }
        }
        let mut sandboxes = Vec::new();
        for s in &state.sandboxes {
            match Sandbox::from_pb(s.clone()) {
                Ok(s) => sandboxes.push(s),
                Err(v) => report.fail_msg(Kind::Netns, &s.name, &s.sandbox_id, invalid(&v)),
            }
        }
        let mut endpoints = Vec::new();
        for (i, e) in state.endpoints.iter().enumerate() {
            match Endpoint::from_pb(e.clone(), &format!("state.endpoints[{i}]")) {
                Ok(e) => endpoints.push(e),
                Err(v) => {
                    report.fail_msg(Kind::Link, &e.interface_name, &e.endpoint_id, invalid(&v));
                }
            }
        }
        Self {
            networks,
            sandboxes,
            endpoints,
        }
    }
}

impl Agent {
    /// Brings the kernel to `state` (or, with `dry_run`, reports the drift it can see without
    /// repairing it: missing and orphaned networks, endpoints and sandboxes).
    pub async fn apply_state(&self, state: &pb::DesiredState, dry_run: bool) -> Report {
        let mut report = Report::default();
        if !dry_run {
            // Someone may have turned a switch back: check every sysctl again.
            self.sysctls_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
        let mut desired = Desired::from_pb(state, &mut report);
        // Endpoints of a sandbox removed lately went with its namespace (RemoveSandbox takes
        // them without a Detach each): a desired state older than that must not bring back
        // their ports.
        desired
            .endpoints
            .retain(|e| !self.recent.lately(&e.sandbox_id, false));
        let owned = match self.owned().await {
            Ok(o) => o,
            Err(e) => {
                report.fail(Kind::Link, "links", "", &e);
                return report;
            }
        };
        if dry_run {
            let Desired {
                networks,
                sandboxes,
                endpoints,
            } = &desired;
            self.survey_drift(&owned, networks, endpoints, sandboxes, &mut report);
            return report;
        }
        // Where a pass spends its time (the scale benchmark reads this line).
        let t = std::time::Instant::now();
        let (sandboxes, networks) = self.ensure_desired(&desired, &mut report).await;
        let ensure = t.elapsed();
        self.apply_firewall(&desired, &mut report).await;
        let firewall = t.elapsed() - ensure;
        self.remove_orphans(&owned, &desired, &mut report).await;
        tracing::info!(
            endpoints = desired.endpoints.len(),
            ensure_ms = ms(ensure),
            sandboxes_ms = ms(sandboxes),
            networks_ms = ms(networks),
            endpoints_ms = ms(ensure.saturating_sub(sandboxes + networks)),
            firewall_ms = ms(firewall),
            orphans_ms = ms(t.elapsed() - ensure - firewall),
            "reconciliation steps"
        );
        report
    }

    /// Sandboxes first (the namespaces endpoints go into), then networks, then endpoints.
    /// Returns how long the sandboxes and the networks took.
    async fn ensure_desired(
        &self,
        desired: &Desired,
        report: &mut Report,
    ) -> (std::time::Duration, std::time::Duration) {
        let t = std::time::Instant::now();
        for s in desired
            .sandboxes
            .iter()
            .filter(|s| !self.recent.lately(&s.id, false))
        {
            if let Err(e) = self.create_sandbox(s, report).await {
                report.fail(Kind::Netns, &s.id, &s.id, &e);
            }
        }
        let sandboxes = t.elapsed();
        for n in &desired.networks {
            if let Err(e) = self.ensure_network(n, report).await {
                report.fail(Kind::Link, &n.name, &n.id, &e);
            }
        }
        let networks = t.elapsed() - sandboxes;
        for ep in desired
            .endpoints
            .iter()
            .filter(|e| !self.recent.lately(&e.id, false))
        {
            let Some(net) = desired.networks.iter().find(|n| n.id == ep.network_id) else {
                report.fail_msg(
                    Kind::Link,
                    &ep.ifname,
                    &ep.id,
                    format!("its network {} is not in the desired state", ep.network_id),
                );
                continue;
            };
            if let Err(e) = self.attach(ep, net, report).await {
                report.fail(Kind::Link, &ep.ifname, &ep.id, &e);
            }
        }
        (sandboxes, networks)
    }

    /// The firewall: the desired networks and ports, plus what the API made lately and the
    /// gateway has not recorded yet. One nft transaction; it also restores a table someone
    /// flushed or deleted.
    async fn apply_firewall(&self, desired: &Desired, report: &mut Report) {
        let mut wanted =
            crate::firewall::FirewallState::from_specs(&desired.networks, &desired.endpoints);
        let current = self.firewall().state().await;
        for (id, n) in current.networks {
            if !wanted.networks.contains_key(&id) && self.recent.lately(&id, true) {
                wanted.networks.insert(id, n);
            }
        }
        for (id, e) in current.endpoints {
            if !wanted.endpoints.contains_key(&id) && self.recent.lately(&id, true) {
                wanted.endpoints.insert(id, e);
            }
        }
        if let Err(e) = self.firewall().apply_all(wanted, report).await {
            report.fail(Kind::NftTable, "inet weft", "", &e);
        }
    }

    /// Orphans: endpoints, then networks, then sandboxes.
    async fn remove_orphans(&self, owned: &Owned, desired: &Desired, report: &mut Report) {
        let want_networks: BTreeSet<&str> =
            desired.networks.iter().map(|n| n.id.as_str()).collect();
        let want_endpoints: BTreeSet<&str> =
            desired.endpoints.iter().map(|e| e.id.as_str()).collect();
        let want_sandboxes: BTreeSet<&str> =
            desired.sandboxes.iter().map(|s| s.id.as_str()).collect();
        for (id, link) in owned.endpoints.iter().filter(|(id, _)| {
            !want_endpoints.contains(id.as_str()) && !self.recent.lately(id, true)
        }) {
            tracing::info!(endpoint = %id, link = %link.name, "removing an orphaned endpoint");
            match kernel::delete_link(self.host_handle(), link).await {
                Ok(true) => report.change(Action::Removed, Kind::Link, &link.name, id),
                Ok(false) => {}
                Err(e) => report.fail(Kind::Link, &link.name, id, &e),
            }
        }
        for id in owned
            .networks
            .iter()
            .filter(|id| !want_networks.contains(id.as_str()) && !self.recent.lately(id, true))
        {
            tracing::info!(network = %id, "removing an orphaned network");
            let r = self.remove_network(id).await;
            report.changes.extend(r.changes);
            report.failures.extend(r.failures);
        }
        let orphan_sandboxes: BTreeSet<&String> = owned
            .namespaces
            .iter()
            .chain(owned.files.iter())
            .filter(|id| !want_sandboxes.contains(id.as_str()) && !self.recent.lately(id, true))
            .collect();
        for id in orphan_sandboxes {
            tracing::info!(sandbox = %id, "removing an orphaned sandbox");
            match self.remove_sandbox(id, Path::new("")).await {
                Ok(r) => {
                    report.changes.extend(r.changes);
                    report.failures.extend(r.failures);
                }
                Err(e) => report.fail(Kind::Netns, sandbox::managed_netns_name(id), id, &e),
            }
        }
    }

    /// What the kernel holds with the agent's marks.
    async fn owned(&self) -> Result<Owned, crate::error::AgentError> {
        let mut owned = Owned::default();
        for l in kernel::links(self.host_handle()).await? {
            if let Some(id) = names::endpoint_of_alias(&l.alias) {
                owned.endpoints.insert(id.to_owned(), l.clone());
            } else if let Some(id) = names::network_of_alias(&l.alias) {
                owned.networks.insert(id.to_owned());
            }
        }
        owned.files = dir_names(&self.data_dir().join("sandboxes"))
            .into_iter()
            .collect();
        // A `weft-<id>` namespace is this agent's when it also keeps that sandbox's files
        // (another agent on the machine, e.g. in tests, has its own data directory).
        owned.namespaces = dir_names(Path::new(NETNS_DIR))
            .into_iter()
            .filter_map(|n| sandbox::sandbox_of_managed_netns(&n).map(str::to_owned))
            .filter(|id| owned.files.contains(id))
            .collect();
        Ok(owned)
    }

    /// The drift a dry run reports: what is missing and what is orphaned, by the marks.
    fn survey_drift(
        &self,
        owned: &Owned,
        networks: &[Network],
        endpoints: &[Endpoint],
        sandboxes: &[Sandbox],
        report: &mut Report,
    ) {
        let mut missing = |kind, object: &str, owner: &str| {
            report.changes.push(crate::report::Change {
                action: Action::Created,
                kind,
                object: object.to_owned(),
                owner: owner.to_owned(),
                detail: "missing".into(),
            });
        };
        for n in networks
            .iter()
            .filter(|n| driver::of(n.driver).host_device() && !owned.networks.contains(&n.id))
        {
            missing(Kind::Link, &n.name, &n.id);
        }
        for e in endpoints
            .iter()
            .filter(|e| !owned.endpoints.contains_key(&e.id))
        {
            missing(Kind::Link, &names::veth_host_name(&e.id), &e.id);
        }
        for s in sandboxes.iter().filter(|s| {
            s.netns == sandbox::SandboxNetns::Managed && !owned.namespaces.contains(&s.id)
        }) {
            missing(Kind::Netns, &sandbox::managed_netns_name(&s.id), &s.id);
        }
        let mut orphan = |kind, object: String, owner: &str| {
            report.changes.push(crate::report::Change {
                action: Action::Removed,
                kind,
                object,
                owner: owner.to_owned(),
                detail: "orphan".into(),
            });
        };
        for (id, link) in &owned.endpoints {
            if !endpoints.iter().any(|e| &e.id == id) {
                orphan(Kind::Link, link.name.clone(), id);
            }
        }
        for id in &owned.networks {
            if !networks.iter().any(|n| &n.id == id) {
                orphan(Kind::Link, names::bridge_name(id), id);
            }
        }
        for id in &owned.namespaces {
            if !sandboxes.iter().any(|s| &s.id == id) {
                orphan(Kind::Netns, sandbox::managed_netns_name(id), id);
            }
        }
    }
}

/// Milliseconds, for log fields.
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn invalid(v: &[weft_runtime::FieldViolation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
