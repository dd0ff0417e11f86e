//! The agent's firewall: NAT, isolation and published ports in one nftables table of its own
//! (`inet weft`), through the `nftables` crate (JSON fed to `nft -j -f -`, run from a thread
//! inside the managed namespace so that the child process inherits it).
//!
//! The firewall keeps what it must express in memory ([`FirewallState`]) and writes the whole
//! table from it in one transaction whenever it changes ([`rules::ruleset`]); a change that
//! leaves the state as it was (an attach without published ports, an ensure of an unchanged
//! network) runs no process at all. When the state becomes empty the table is deleted.

pub mod nfnl;
pub mod rules;
pub mod state;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

pub use state::{Clash, EndpointPorts, FirewallState, NetworkRules};

use crate::{
    error::AgentError,
    netns,
    report::{Action, Kind, Report},
    sysctl::Sysctl,
};

/// The table as reported in changes.
pub const TABLE_OBJECT: &str = "inet weft";

#[derive(Debug)]
pub struct Firewall {
    netns: PathBuf,
    /// What the kernel's table expresses, as last applied. The lock also serialises
    /// transactions.
    state: tokio::sync::Mutex<FirewallState>,
    /// Transactions run so far (each one `nft` process).
    transactions: AtomicU64,
}

impl Firewall {
    /// A firewall for the namespace at `netns`; it touches nothing until the first change.
    pub fn new(netns: PathBuf) -> Self {
        Self {
            netns,
            state: tokio::sync::Mutex::new(FirewallState::default()),
            transactions: AtomicU64::new(0),
        }
    }

    /// How many transactions (`nft` runs) this firewall has made.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// A copy of the state last applied.
    pub async fn state(&self) -> FirewallState {
        self.state.lock().await.clone()
    }

    /// Refuses ports another endpoint already publishes (ALREADY_EXISTS naming the holder).
    pub async fn check_ports(
        &self,
        endpoint_id: &str,
        ports: &[crate::spec::PortMapping],
    ) -> Result<(), AgentError> {
        clash_error(self.state.lock().await.clash(endpoint_id, ports))
    }

    /// Changes the state with `f` and, when that changed anything, applies the new state in one
    /// transaction and reports the difference. On failure the state stays as it was.
    pub async fn update(
        &self,
        report: &mut Report,
        f: impl FnOnce(&mut FirewallState) -> Result<(), AgentError>,
    ) -> Result<bool, AgentError> {
        let mut current = self.state.lock().await;
        let mut next = current.clone();
        f(&mut next)?;
        if next == *current {
            return Ok(false);
        }
        self.apply(&next).await?;
        describe(&current, &next, report);
        *current = next;
        Ok(true)
    }

    /// Replaces the whole state and (re)writes the table from it, whatever the kernel holds
    /// now: for reconciliation, e.g. after someone flushed or deleted the table. Idempotent.
    pub async fn apply_all(
        &self,
        state: FirewallState,
        report: &mut Report,
    ) -> Result<(), AgentError> {
        let mut current = self.state.lock().await;
        self.apply(&state).await?;
        describe(&current, &state, report);
        *current = state;
        Ok(())
    }

    /// Rewrites the table from the state in memory (repairs any drift in the kernel).
    pub async fn reapply(&self) -> Result<(), AgentError> {
        let current = self.state.lock().await;
        self.apply(&current).await
    }

    async fn apply(&self, state: &FirewallState) -> Result<(), AgentError> {
        let nft = rules::ruleset(state);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        run_nft(&self.netns, move || nftables::helper::apply_ruleset(&nft)).await
    }

    /// The agent's table as the kernel holds it now (`nft -j list table inet weft`), `None`
    /// when it does not exist.
    pub async fn kernel_table(&self) -> Result<Option<serde_json::Value>, AgentError> {
        let args = ["-j", "list", "table", "inet", rules::TABLE];
        let out = netns::run_in(&self.netns, move || {
            std::process::Command::new("nft").args(args).output()
        })
        .await
        .map_err(AgentError::netns(&self.netns))?
        .map_err(|e| AgentError::Nft {
            message: format!("cannot run nft: {e}"),
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(AgentError::Nft {
                message: stderr.trim().to_owned(),
            });
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| AgentError::Nft {
                message: format!("nft printed no JSON: {e}"),
            })
    }
}

fn clash_error(c: Option<Clash>) -> Result<(), AgentError> {
    match c {
        None => Ok(()),
        Some(c) => Err(AgentError::PortTaken {
            mapping: c.mapping.to_string(),
            holder: c.holder,
        }),
    }
}

/// The same check as [`Firewall::check_ports`], inside an [`Firewall::update`].
pub fn check_clash(
    state: &FirewallState,
    endpoint_id: &str,
    ports: &[crate::spec::PortMapping],
) -> Result<(), AgentError> {
    clash_error(state.clash(endpoint_id, ports))
}

async fn run_nft<F>(netns_path: &Path, f: F) -> Result<(), AgentError>
where
    F: FnOnce() -> Result<(), nftables::helper::NftablesError> + Send + 'static,
{
    netns::run_in(netns_path, f)
        .await
        .map_err(AgentError::netns(netns_path))?
        .map_err(|e| {
            let message = match &e {
                nftables::helper::NftablesError::NftFailed { stderr, .. } => {
                    format!("{e}: {}", stderr.trim())
                }
                _ => e.to_string(),
            };
            AgentError::Nft { message }
        })
}

/// Reports what differs between two states: the table, each network's rules, each published
/// port.
fn describe(old: &FirewallState, new: &FirewallState, report: &mut Report) {
    if old.is_empty() && !new.is_empty() {
        report.change(Action::Created, Kind::NftTable, TABLE_OBJECT, "");
    }
    for (id, n) in &new.networks {
        let action = match old.networks.get(id) {
            None => Action::Created,
            Some(o) if o != n => Action::Updated,
            Some(_) => continue,
        };
        report.change(
            action,
            Kind::NftRule,
            format!("{TABLE_OBJECT} network {}", n.bridge),
            id,
        );
    }
    for (id, n) in &old.networks {
        if !new.networks.contains_key(id) {
            report.change(
                Action::Removed,
                Kind::NftRule,
                format!("{TABLE_OBJECT} network {}", n.bridge),
                id,
            );
        }
    }
    let ports = |s: &FirewallState, id: &str| {
        s.endpoints
            .get(id)
            .map(|e| e.ports.clone())
            .unwrap_or_default()
    };
    let ids: std::collections::BTreeSet<&String> =
        old.endpoints.keys().chain(new.endpoints.keys()).collect();
    for id in ids {
        let (before, after) = (ports(old, id), ports(new, id));
        for p in before.iter().filter(|p| !after.contains(p)) {
            report.change(
                Action::Removed,
                Kind::NftRule,
                format!("{TABLE_OBJECT}/ports {p}"),
                id,
            );
        }
        for p in after.iter().filter(|p| !before.contains(p)) {
            report.change(
                Action::Created,
                Kind::NftRule,
                format!("{TABLE_OBJECT}/ports {p}"),
                id,
            );
        }
    }
    if !old.is_empty() && new.is_empty() {
        report.change(Action::Removed, Kind::NftTable, TABLE_OBJECT, "");
    }
}

/// The switches a bridge network needs in the managed namespace: forwarding (both families
/// when it has IPv6) and route_localnet on its bridge (published ports through 127.0.0.1) for a
/// network that reaches beyond itself; br_netfilter's hooks when ICC is off, so that bridged
/// traffic meets the forward chain.
pub fn sysctls_for(net: &NetworkRules) -> Vec<Sysctl> {
    let mut out = Vec::new();
    if !net.internal {
        out.push(Sysctl::new("net/ipv4/ip_forward", "1"));
        if net.has_ipv6() {
            out.push(Sysctl::new("net/ipv6/conf/all/forwarding", "1"));
        }
        out.push(Sysctl::new(
            format!("net/ipv4/conf/{}/route_localnet", net.bridge),
            "1",
        ));
    }
    if !net.icc {
        const BR_NETFILTER: &str = "br_netfilter (bridged traffic through nftables, for ICC off)";
        out.push(Sysctl::of_feature(
            "net/bridge/bridge-nf-call-iptables",
            "1",
            BR_NETFILTER,
        ));
        out.push(Sysctl::of_feature(
            "net/bridge/bridge-nf-call-ip6tables",
            "1",
            BR_NETFILTER,
        ));
    }
    out
}
