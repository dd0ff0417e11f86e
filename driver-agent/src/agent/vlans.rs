//! The 802.1Q parents the agent makes for macvlan and ipvlan networks (`driver/vlan.rs`), as
//! the agent's operations and reconciliation use them: made with the network (under the
//! network lock), removed with the last network on them, orphans found by the survey. A part
//! of [`super::Agent`] of its own.

use std::collections::BTreeMap;

use super::Agent;
use crate::{
    driver::vlan,
    kernel::Link,
    report::{Action, Change, Kind, Report},
    spec::Network,
};

/// The VLAN sub-interface `net`'s parent names, if it names one.
fn vlan_of(net: &Network) -> Option<weft_runtime::vlan::VlanParent<'_>> {
    weft_runtime::vlan::parse(&net.parent).ok().flatten()
}

impl Agent {
    /// Makes `net`'s VLAN parent unless it is there, and records the network as one of its
    /// users. Returns whether this call created it. Runs under the network lock.
    pub(super) async fn ensure_vlan(
        &self,
        net: &Network,
        report: &mut Report,
    ) -> Result<bool, crate::error::AgentError> {
        let Some(v) = vlan_of(net) else {
            return Ok(false);
        };
        self.vlans.add(&net.id, &net.parent);
        vlan::ensure(&self.host, v, &net.parent, &net.id, report).await
    }

    /// `net` is gone from the host (removed, or its request undone): its VLAN parent goes too
    /// when it was the last network on it and the agent made it. Runs under the network lock.
    pub(super) async fn release_vlan(&self, network_id: &str, report: &mut Report) {
        if let Some(name) = self.vlans.release(network_id) {
            vlan::remove(&self.host, &name, network_id, report).await;
        }
    }

    /// Undoes the VLAN parent a failed request of `net` made. Runs under the network lock.
    pub(super) async fn undo_vlan(&self, network_id: &str) {
        if let Some(name) = self.vlans.undo(network_id) {
            vlan::remove(&self.host, &name, network_id, &mut Report::default()).await;
        }
    }

    /// Reconciliation's view of which networks use which VLAN: the desired ones, and those the
    /// API made lately (`keep`).
    pub(crate) fn sync_vlans(&self, desired: &[Network], keep: impl Fn(&str) -> bool) {
        self.vlans.sync(
            desired
                .iter()
                .filter(|n| vlan_of(n).is_some())
                .map(|n| (n.id.as_str(), n.parent.as_str())),
            keep,
        );
    }

    /// Removes the agent's VLAN sub-interfaces among `vlans` (the survey's, by name) that no
    /// network uses, checked again under the network lock.
    pub(crate) async fn remove_orphan_vlans(
        &self,
        vlans: &BTreeMap<String, Link>,
        report: &mut Report,
    ) {
        for link in vlan::orphans(vlans.values(), &self.vlans) {
            let _guard = self.networks.lock().await;
            if self.vlans.in_use(&link.name) {
                continue;
            }
            tracing::info!(vlan = %link.name, "removing an orphaned VLAN sub-interface");
            vlan::remove_link(&self.host, link, "", report).await;
        }
    }
}

/// Whether the survey shows `net`'s parent as it should be: no VLAN named, or the VLAN there
/// (the agent's own up; the admin's as it is).
pub(crate) fn vlan_ok(net: &Network, vlans: &BTreeMap<String, Link>) -> bool {
    vlan_of(net).is_none()
        || vlans
            .get(&net.parent)
            .is_some_and(|l| l.up || crate::names::vlan_of_alias(&l.alias).is_none())
}

/// The VLAN drift a dry run reports: desired parents missing, the agent's VLANs no desired
/// network uses.
pub(crate) fn vlan_drift(networks: &[Network], vlans: &BTreeMap<String, Link>) -> Vec<Change> {
    let change = |action, object: &str, owner: &str, detail: &str| Change {
        action,
        kind: Kind::Link,
        object: object.to_owned(),
        owner: owner.to_owned(),
        detail: detail.to_owned(),
    };
    let mut out: Vec<Change> = networks
        .iter()
        .filter(|n| vlan_of(n).is_some() && !vlans.contains_key(&n.parent))
        .map(|n| change(Action::Created, &n.parent, &n.id, "missing"))
        .collect();
    out.extend(
        vlans
            .values()
            .filter(|l| crate::names::vlan_of_alias(&l.alias).is_some())
            .filter(|l| !networks.iter().any(|n| n.parent == l.name))
            .map(|l| change(Action::Removed, &l.name, "", "orphan")),
    );
    out
}
