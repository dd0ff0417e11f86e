//! Reconciliation (`ApplyState`): make the kernel match the desired state of this host.
//!
//! Everything desired is ensured with the same idempotent operations the RPCs use (a missing
//! bridge, veth, address or route is made again; what is right is left alone). Then the
//! agent's own objects that nothing wants any more are removed: links carrying a Weft alias,
//! namespaces named `weft-<sandbox id>`, sandbox file directories. Objects without the agent's
//! marks are never touched. (A `weft-<id>` namespace counts as the agent's only while its data
//! directory holds that sandbox's files.) Failures do not stop the pass; they are reported, and the next
//! pass retries them.
//!
//! Two depths. A **full** pass (the `ApplyState` RPC) ensures every desired object, entering
//! every sandbox. A pass of the **changes** (what the agent's own loop runs, `registry.rs`)
//! ensures only the objects whose desired spec differs from what the agent last brought them
//! to (`applied.rs`) or whose traces on the host are missing or wrong (a survey: one dump of
//! the host's links, the namespace and file directories); the firewall is compared only when
//! something else committed to nftables since the agent last did (`firewall/mod.rs`), and
//! orphans are found from the same survey. What a network holds beyond links (an overlay's FDB
//! and neighbour entries) its driver compares itself (`NetworkDriver::drifted`: two dumps
//! filtered to the VXLAN device, per overlay network). With nothing changed, such a pass enters no sandbox
//! and changes nothing. After it, an **audit** ensures a few sandboxes in full, in turn: drift
//! inside a sandbox, which the survey cannot see from the host, is found within
//! `sandboxes / AUDIT` audits ([`crate::agent::AUDIT`]); so is the device of an endpoint no
//! longer desired that lives in its sandbox alone (macvlan), which the audit removes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::atomic::Ordering,
    time::Instant,
};

use weft_proto::agent::v1 as pb;

use crate::{
    Agent,
    applied::{Of, digest},
    driver, kernel, names,
    report::{Action, Kind, Report},
    sandbox::{self, Sandbox},
    spec::{Endpoint, Network},
};

pub use crate::recent::{GRACE, Recent};

/// How deep a pass goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Report the drift the survey sees; change nothing.
    DryRun,
    /// Ensure every desired object.
    Full,
    /// Ensure what changed, what the survey finds missing or wrong, and the audit's turn.
    Changes,
}

/// What the kernel holds that carries the agent's marks.
#[derive(Debug, Default)]
struct Owned {
    /// Bridges by network id (by alias).
    networks: BTreeMap<String, kernel::Link>,
    /// Host-side veths by endpoint id (from their alias).
    endpoints: std::collections::BTreeMap<String, kernel::Link>,
    /// Overlay networks' VXLAN devices by network id (by alias).
    vxlans: BTreeMap<String, kernel::Link>,
    /// Links named like 802.1Q sub-interfaces (`eth0.50`), by name: the admin's and the
    /// agent's (by alias), parents of macvlan and ipvlan networks.
    vlans: BTreeMap<String, kernel::Link>,
    /// Sandbox ids of managed namespaces (`weft-<id>` in /run/netns).
    namespaces: BTreeSet<String>,
    /// Sandbox ids of file directories.
    files: BTreeSet<String>,
    /// Host ends of veths an attach made and was killed before marking
    /// ([`names::is_veth_host_name`], no alias).
    unmarked_veths: Vec<kernel::Link>,
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

/// A desired state converted to the agent's terms once: the agent's loop reuses it for every
/// pass while the gateway's revision stays (see `registry.rs`).
#[derive(Debug)]
pub struct Prepared {
    desired: Desired,
    /// What did not convert.
    invalid: Vec<crate::report::Failure>,
    /// What the firewall must express for `desired` (made once, compared by every pass).
    firewall: crate::firewall::FirewallState,
}

impl Prepared {
    pub fn new(state: &pb::DesiredState) -> Self {
        let mut report = Report::default();
        let desired = Desired::from_pb(state, &mut report);
        Self {
            firewall: crate::firewall::FirewallState::from_specs(
                &desired.networks,
                &desired.endpoints,
            ),
            desired,
            invalid: report.failures,
        }
    }
}

/// A desired state in domain terms: what converted (the rest is reported as failures).
#[derive(Debug, Clone)]
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
    /// Brings the kernel to `state`, every object checked (or, with `dry_run`, reports the
    /// drift it can see without repairing it: missing and orphaned networks, endpoints and
    /// sandboxes). The state is taken as read now.
    pub async fn apply_state(&self, state: &pb::DesiredState, dry_run: bool) -> Report {
        let depth = if dry_run { Depth::DryRun } else { Depth::Full };
        self.reconcile(state, depth, Instant::now()).await
    }

    /// Brings the kernel to `state`, read from the gateway at `as_of`: what the API touched
    /// within [`GRACE`] before that, or since, is left alone.
    pub async fn reconcile(
        &self,
        state: &pb::DesiredState,
        depth: Depth,
        as_of: Instant,
    ) -> Report {
        self.reconcile_prepared(&Prepared::new(state), depth, as_of)
            .await
    }

    /// [`Agent::reconcile`] of a state converted already (counted in the metrics).
    pub async fn reconcile_prepared(
        &self,
        prepared: &Prepared,
        depth: Depth,
        as_of: Instant,
    ) -> Report {
        let started = Instant::now();
        let report = self.reconcile_pass(prepared, depth, as_of).await;
        let name = match depth {
            Depth::DryRun => "dry_run",
            Depth::Full => "full",
            Depth::Changes => "changes",
        };
        crate::reconcile_metrics::pass(name, started, &report);
        report
    }

    async fn reconcile_pass(&self, prepared: &Prepared, depth: Depth, as_of: Instant) -> Report {
        let _pass = self.recent.pass(as_of);
        let started = Instant::now();
        let dry_run = depth == Depth::DryRun;
        let mut report = Report::default();
        if depth == Depth::Full {
            // Someone may have turned a switch back: check every sysctl again.
            self.sysctls_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
        report.failures.extend(prepared.invalid.iter().cloned());
        // Endpoints of a sandbox removed lately went with its namespace (RemoveSandbox takes
        // them without a Detach each): a desired state older than that must not bring back
        // their ports.
        let gone = |e: &Endpoint| self.recent.since(&e.sandbox_id, false, as_of);
        let desired = if prepared.desired.endpoints.iter().any(gone) {
            let mut d = prepared.desired.clone();
            d.endpoints.retain(|e| !gone(e));
            std::borrow::Cow::Owned(d)
        } else {
            std::borrow::Cow::Borrowed(&prepared.desired)
        };
        let converted = started.elapsed();
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
            } = &*desired;
            self.survey_drift(&owned, networks, endpoints, sandboxes, &mut report);
            for link in self.stray_veths(&owned, endpoints, as_of) {
                report.changes.push(crate::report::Change {
                    action: Action::Removed,
                    kind: Kind::Link,
                    object: link.name.clone(),
                    owner: String::new(),
                    detail: "orphan (left unmarked by an interrupted attach)".into(),
                });
            }
            return report;
        }
        // Where a pass spends its time (the scale benchmark reads this line).
        let t = Instant::now();
        let surveyed = started.elapsed() - converted;
        // The firewall first: endpoints ensured afterwards then find their ports in place
        // (after a restart, too) and change nothing there.
        let built;
        let firewall_state = match &desired {
            std::borrow::Cow::Borrowed(_) => &prepared.firewall,
            std::borrow::Cow::Owned(d) => {
                built = crate::firewall::FirewallState::from_specs(&d.networks, &d.endpoints);
                &built
            }
        };
        self.apply_firewall(firewall_state, as_of, &mut report)
            .await;
        let firewall = t.elapsed();
        let mut pass = Pass {
            depth,
            as_of,
            owned: &owned,
            checked: 0,
        };
        // (Before anything is ensured: a VLAN only a network made by the API lately uses is
        // no orphan.)
        self.sync_vlans(&desired.networks, |id| self.recent.since(id, true, as_of));
        let (sandboxes, networks) = self.ensure_desired(&desired, &mut pass, &mut report).await;
        let ensure = t.elapsed() - firewall;
        self.remove_orphans(&owned, &desired, as_of, &mut report)
            .await;
        self.forget_undesired(&desired, as_of);
        report.ensured = pass.checked;
        tracing::info!(
            depth = ?depth,
            checked = pass.checked,
            endpoints = desired.endpoints.len(),
            convert_ms = ms(converted),
            survey_ms = ms(surveyed),
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

    /// The audit: the next few sandboxes in turn (see [`Agent::with_audit`]) ensured in full,
    /// their namespaces, files and endpoints inside the sandbox too: drift a pass of the
    /// changes cannot see from the host (an address removed inside a sandbox, say). Nothing
    /// else is touched. `state` was read at `as_of`, as for [`Agent::reconcile`].
    pub async fn audit(&self, prepared: &Prepared, as_of: Instant) -> Report {
        let started = Instant::now();
        let report = self.audit_pass(prepared, as_of).await;
        if report.ensured > 0 || !report.changes.is_empty() || !report.failures.is_empty() {
            crate::reconcile_metrics::pass("audit", started, &report);
        }
        report
    }

    async fn audit_pass(&self, prepared: &Prepared, as_of: Instant) -> Report {
        let _pass = self.recent.pass(as_of);
        let mut report = Report::default();
        let all = &prepared.desired;
        let turn = self.audit_turn(all);
        if turn.is_empty() {
            return report;
        }
        let endpoints: Vec<Endpoint> = all
            .endpoints
            .iter()
            .filter(|e| {
                turn.contains(&e.sandbox_id) && !self.recent.since(&e.sandbox_id, false, as_of)
            })
            .cloned()
            .collect();
        let used: BTreeSet<&str> = endpoints.iter().map(|e| e.network_id.as_str()).collect();
        let desired = Desired {
            networks: all
                .networks
                .iter()
                .filter(|n| used.contains(n.id.as_str()))
                .cloned()
                .collect(),
            sandboxes: all
                .sandboxes
                .iter()
                .filter(|s| turn.contains(&s.id))
                .cloned()
                .collect(),
            endpoints,
        };
        let owned = Owned::default();
        let mut pass = Pass {
            depth: Depth::Full,
            as_of,
            owned: &owned,
            checked: 0,
        };
        self.ensure_desired(&desired, &mut pass, &mut report).await;
        // Inside the sandboxes entered anyway: devices of endpoints no longer desired, which the
        // survey cannot see from the host (unless some endpoint did not convert: it would look
        // undesired).
        if prepared.invalid.is_empty() {
            for s in &desired.sandboxes {
                self.remove_strays(s, &all.endpoints, as_of, &mut report)
                    .await;
            }
        }
        report.ensured = pass.checked;
        report
    }

    /// Sandboxes first (the namespaces endpoints go into), then networks, then endpoints;
    /// in a pass of the changes, only those that changed or that the survey finds wrong.
    /// Returns how long the sandboxes and the networks took.
    async fn ensure_desired(
        &self,
        desired: &Desired,
        pass: &mut Pass<'_>,
        report: &mut Report,
    ) -> (std::time::Duration, std::time::Duration) {
        let t = Instant::now();
        for s in desired
            .sandboxes
            .iter()
            .filter(|s| !self.recent.since(&s.id, false, pass.as_of))
        {
            if !self.sandbox_needs_ensuring(s, pass) {
                continue;
            }
            pass.checked += 1;
            if let Err(e) = self.create_sandbox(s, report).await {
                report.fail(Kind::Netns, &s.id, &s.id, &e);
            }
        }
        let sandboxes = t.elapsed();
        // (A network whose last endpoint's detach removed it lately stays removed: the
        // endpoints of a state read before the detach are left alone too.)
        for n in desired
            .networks
            .iter()
            .filter(|n| !self.recent.since(&n.id, false, pass.as_of))
        {
            if !self.network_needs_ensuring(n, pass)
                && !driver::of(n.driver).drifted(self.host_handle(), n).await
            {
                continue;
            }
            pass.checked += 1;
            if let Err(e) = self.ensure_network(n, report).await {
                report.fail(Kind::Link, &n.name, &n.id, &e);
            }
        }
        let networks = t.elapsed() - sandboxes;
        for ep in desired
            .endpoints
            .iter()
            .filter(|e| !self.recent.since(&e.id, false, pass.as_of))
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
            if !self.endpoint_needs_ensuring(ep, net, pass) {
                continue;
            }
            pass.checked += 1;
            if let Err(e) = self.attach(ep, net, report).await {
                report.fail(Kind::Link, &ep.ifname, &ep.id, &e);
            }
        }
        (sandboxes, networks)
    }

    /// The sandboxes whose turn in the audit it is: the next few of the desired ones, round
    /// robin.
    fn audit_turn(&self, desired: &Desired) -> BTreeSet<String> {
        let (per_pass, cursor) = &self.audit;
        let n = desired.sandboxes.len();
        if n == 0 || *per_pass == 0 {
            return BTreeSet::new();
        }
        let start = cursor.fetch_add(*per_pass, Ordering::Relaxed) % n;
        let mut ids: Vec<&str> = desired.sandboxes.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        (0..(*per_pass).min(n))
            .map(|k| ids[(start + k) % n].to_owned())
            .collect()
    }

    /// Whether the pass must ensure sandbox `s`; a sandbox left alone is still made known
    /// (where its namespace is) as ensuring it would.
    fn sandbox_needs_ensuring(&self, s: &Sandbox, pass: &Pass<'_>) -> bool {
        if pass.depth != Depth::Changes {
            return true;
        }
        let managed = sandbox::managed_netns_name(&s.id);
        let (there, path) = match &s.netns {
            sandbox::SandboxNetns::Managed => (
                pass.owned.namespaces.contains(&s.id),
                crate::netns::named_path(&managed),
            ),
            sandbox::SandboxNetns::Given(p) => (p.exists(), p.clone()),
            sandbox::SandboxNetns::Host => (true, self.host_netns().to_owned()),
        };
        let unchanged = there
            && pass.owned.files.contains(&s.id)
            && self.applied.is(Of::Sandbox, &s.id, digest(s));
        if unchanged {
            self.know_sandbox(s, &path, s.netns == sandbox::SandboxNetns::Managed);
        }
        !unchanged
    }

    fn network_needs_ensuring(&self, n: &Network, pass: &Pass<'_>) -> bool {
        if pass.depth != Depth::Changes {
            return true;
        }
        let device_ok = !driver::of(n.driver).host_device()
            || pass.owned.networks.get(&n.id).is_some_and(|l| l.up);
        !(device_ok
            && crate::agent::vlan_ok(n, &pass.owned.vlans)
            && self
                .applied
                .is(Of::Network, &n.id, crate::agent::network_digest(n)))
    }

    fn endpoint_needs_ensuring(&self, ep: &Endpoint, net: &Network, pass: &Pass<'_>) -> bool {
        if pass.depth != Depth::Changes {
            return true;
        }
        // The host side, as the bridge driver leaves it: its veth up in the network's bridge.
        let host_side_ok = !driver::of(net.driver).host_device()
            || match (
                pass.owned.endpoints.get(&ep.id),
                pass.owned.networks.get(&net.id),
            ) {
                (Some(veth), Some(bridge)) => veth.up && veth.controller == Some(bridge.index),
                _ => false,
            };
        !(host_side_ok
            && self
                .applied
                .is(Of::Endpoint, &ep.id, crate::agent::endpoint_digest(ep, net)))
    }

    /// Forgets the digests of objects no longer desired (nor made by the API lately).
    fn forget_undesired(&self, desired: &Desired, as_of: Instant) {
        let sandboxes: BTreeSet<&str> = desired.sandboxes.iter().map(|s| s.id.as_str()).collect();
        let networks: BTreeSet<&str> = desired.networks.iter().map(|n| n.id.as_str()).collect();
        let endpoints: BTreeSet<&str> = desired.endpoints.iter().map(|e| e.id.as_str()).collect();
        for (of, ids) in [
            (Of::Sandbox, &sandboxes),
            (Of::Network, &networks),
            (Of::Endpoint, &endpoints),
        ] {
            self.applied.retain(of, |id| {
                ids.contains(id) || self.recent.since(id, true, as_of)
            });
        }
    }

    /// The firewall: the desired networks and ports, plus what the API made lately and the
    /// gateway has not recorded yet. One nft transaction; it also restores a table someone
    /// flushed or deleted.
    async fn apply_firewall(
        &self,
        wanted: &crate::firewall::FirewallState,
        as_of: Instant,
        report: &mut Report,
    ) {
        // What the API touched (made, changed or removed) lately stays as the API left it,
        // decided under the firewall's lock so that an attach racing with the pass is not
        // undone by it.
        let touched = |id: &str| self.recent.touched_since(id, as_of);
        if let Err(e) = self
            .firewall()
            .apply_all_keeping(wanted, touched, report)
            .await
        {
            report.fail(Kind::NftTable, "inet weft", "", &e);
        }
    }

    /// Orphans: endpoints, then networks, then sandboxes.
    async fn remove_orphans(
        &self,
        owned: &Owned,
        desired: &Desired,
        as_of: Instant,
        report: &mut Report,
    ) {
        let want_networks: BTreeSet<&str> =
            desired.networks.iter().map(|n| n.id.as_str()).collect();
        let want_endpoints: BTreeSet<&str> =
            desired.endpoints.iter().map(|e| e.id.as_str()).collect();
        let want_sandboxes: BTreeSet<&str> =
            desired.sandboxes.iter().map(|s| s.id.as_str()).collect();
        for (id, link) in owned.endpoints.iter().filter(|(id, _)| {
            !want_endpoints.contains(id.as_str()) && !self.recent.since(id, true, as_of)
        }) {
            tracing::info!(endpoint = %id, link = %link.name, "removing an orphaned endpoint");
            match kernel::delete_link(self.host_handle(), link).await {
                Ok(true) => report.change(Action::Removed, Kind::Link, &link.name, id),
                Ok(false) => {}
                Err(e) => report.fail(Kind::Link, &link.name, id, &e),
            }
        }
        for link in self.stray_veths(owned, &desired.endpoints, as_of) {
            tracing::info!(link = %link.name, "removing a veth an interrupted attach left unmarked");
            match kernel::delete_link(self.host_handle(), link).await {
                Ok(true) => report.change(Action::Removed, Kind::Link, &link.name, ""),
                Ok(false) => {}
                Err(e) => report.fail(Kind::Link, &link.name, "", &e),
            }
        }
        // (A VXLAN device whose bridge is gone is the network's too.)
        let owned_networks: BTreeSet<&String> =
            owned.networks.keys().chain(owned.vxlans.keys()).collect();
        for id in owned_networks.into_iter().filter(|id| {
            !want_networks.contains(id.as_str()) && !self.recent.since(id, true, as_of)
        }) {
            tracing::info!(network = %id, "removing an orphaned network");
            let r = self.remove_network(id).await;
            report.changes.extend(r.changes);
            report.failures.extend(r.failures);
        }
        self.remove_orphan_vlans(&owned.vlans, report).await;
        let orphan_sandboxes: BTreeSet<&String> = owned
            .namespaces
            .iter()
            .chain(owned.files.iter())
            .filter(|id| {
                !want_sandboxes.contains(id.as_str()) && !self.recent.since(id, true, as_of)
            })
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

    /// The unmarked veths that no desired endpoint, and no attach of the last [`GRACE`] (one
    /// running now has not marked its veth yet), has by name.
    fn stray_veths<'a>(
        &self,
        owned: &'a Owned,
        endpoints: &[Endpoint],
        as_of: Instant,
    ) -> Vec<&'a kernel::Link> {
        let mut keep: BTreeSet<String> = endpoints
            .iter()
            .map(|e| names::veth_host_name(&e.id))
            .collect();
        keep.extend(
            self.recent
                .made_since(as_of)
                .iter()
                .map(|id| names::veth_host_name(id)),
        );
        owned
            .unmarked_veths
            .iter()
            .filter(|l| !keep.contains(&l.name))
            .collect()
    }

    /// What the kernel holds with the agent's marks.
    async fn owned(&self) -> Result<Owned, crate::error::AgentError> {
        let mut owned = Owned::default();
        for l in self.host_links().await?.iter() {
            if let Some(id) = names::endpoint_of_alias(&l.alias) {
                owned.endpoints.insert(id.to_owned(), l.clone());
            } else if let Some(id) = names::network_of_alias(&l.alias) {
                owned.networks.insert(id.to_owned(), l.clone());
            } else if let Some(id) = names::network_of_vxlan_alias(&l.alias) {
                owned.vxlans.insert(id.to_owned(), l.clone());
            } else if matches!(weft_runtime::vlan::parse(&l.name), Ok(Some(_))) {
                owned.vlans.insert(l.name.clone(), l.clone());
            } else if l.alias.is_empty() && names::is_veth_host_name(&l.name) {
                owned.unmarked_veths.push(l.clone());
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
            .filter(|n| driver::of(n.driver).host_device() && !owned.networks.contains_key(&n.id))
        {
            missing(Kind::Link, &n.name, &n.id);
        }
        // Only an endpoint of a network with a host device has a host side (the bridge's veth)
        // the survey can miss; a macvlan device lives in its sandbox alone.
        let host_side = |e: &Endpoint| {
            networks
                .iter()
                .find(|n| n.id == e.network_id)
                .is_none_or(|n| driver::of(n.driver).host_device())
        };
        for e in endpoints
            .iter()
            .filter(|e| host_side(e) && !owned.endpoints.contains_key(&e.id))
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
        for id in owned.networks.keys() {
            if !networks.iter().any(|n| &n.id == id) {
                orphan(Kind::Link, names::bridge_name(id), id);
            }
        }
        for (id, link) in &owned.vxlans {
            if !networks.iter().any(|n| &n.id == id) {
                orphan(Kind::Link, link.name.clone(), id);
            }
        }
        for id in &owned.namespaces {
            if !sandboxes.iter().any(|s| &s.id == id) {
                orphan(Kind::Netns, sandbox::managed_netns_name(id), id);
            }
        }
        report
            .changes
            .extend(crate::agent::vlan_drift(networks, &owned.vlans));
    }
}

/// One pass's settings and what it has done so far.
struct Pass<'a> {
    depth: Depth,
    as_of: Instant,
    owned: &'a Owned,
    /// Objects ensured (entered and checked).
    checked: usize,
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
