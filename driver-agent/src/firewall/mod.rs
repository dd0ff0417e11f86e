//! The agent's firewall: NAT, isolation and published ports in one nftables table of its own
//! (`inet weft`).
//!
//! The firewall keeps what it must express in memory ([`FirewallState`]). The table's skeleton
//! (chains, rules, maps: [`rules::skeleton`]) depends only on the networks and is written with
//! `nft` (JSON through the `nftables` crate, run from a thread inside the managed namespace so
//! that the child process inherits it) when the networks change; published ports are map
//! elements ([`rules::elements`]) changed in one netlink transaction sent from the agent itself
//! ([`nfnl`]), so an attach or detach spawns no process and rewrites nothing else. A change that
//! leaves the state as it was (an attach without published ports, an ensure of an unchanged
//! network) touches nothing at all. When the state becomes empty the table is deleted.
//!
//! Reconciliation ([`Firewall::apply_all`]) compares instead of rewriting: the skeleton as the
//! kernel lists it with what it was after the agent last wrote it, and each map's elements as
//! the kernel dumps them with the wanted ones; it changes only what differs. It does not even
//! compare while the kernel's ruleset generation (bumped by every nf_tables transaction in the
//! namespace, whoever commits it) is still the one the agent's own last transaction left: then
//! the kernel holds exactly what the agent applied, and only the difference to the wanted state
//! is sent.

pub mod nfnl;
pub mod rules;
pub mod state;

use std::{
    collections::{BTreeMap, BTreeSet},
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
use nfnl::{Batch, FAMILY_INET, NfError, NfSocket};
use rules::Elements;

/// The table as reported in changes.
pub const TABLE_OBJECT: &str = "inet weft";

#[derive(Debug)]
pub struct Firewall {
    netns: PathBuf,
    /// What the kernel's table expresses, as last applied. The lock also serialises
    /// transactions.
    inner: tokio::sync::Mutex<Inner>,
    /// Transactions made so far: `nft` writes and netlink batches.
    transactions: AtomicU64,
    /// `nft` processes run so far (writes and listings).
    nft_processes: AtomicU64,
    /// Netlink transactions (element batches) sent so far.
    netlink_transactions: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    state: FirewallState,
    /// The networks the kernel's skeleton was last written for by this agent; `None`: not
    /// written (or deleted).
    skeleton_for: Option<BTreeMap<String, NetworkRules>>,
    /// The skeleton as the kernel listed it right after that write (normalised, see
    /// [`normalise`]), for reconciliation to compare with.
    listing: Option<serde_json::Value>,
    /// The map elements as last applied.
    elements: Elements,
    /// The nf_tables socket, opened inside the managed namespace on first use.
    socket: Option<NfSocket>,
    /// The ruleset's generation right after the agent's own last transaction, when nothing
    /// else committed since the kernel was last compared: while the kernel still reports it,
    /// the table holds exactly what `skeleton_for` and `elements` say.
    generation: Option<u32>,
}

impl Firewall {
    /// A firewall for the namespace at `netns`; it touches nothing until the first change.
    pub fn new(netns: PathBuf) -> Self {
        Self {
            netns,
            inner: tokio::sync::Mutex::new(Inner::default()),
            transactions: AtomicU64::new(0),
            nft_processes: AtomicU64::new(0),
            netlink_transactions: AtomicU64::new(0),
        }
    }

    /// How many transactions (`nft` writes and netlink element batches) this firewall has made.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// How many `nft` processes this firewall has run (writes and listings).
    pub fn nft_processes(&self) -> u64 {
        self.nft_processes.load(Ordering::Relaxed)
    }

    /// How many netlink transactions (element batches) this firewall has sent.
    pub fn netlink_transactions(&self) -> u64 {
        self.netlink_transactions.load(Ordering::Relaxed)
    }

    /// A copy of the state last applied.
    pub async fn state(&self) -> FirewallState {
        self.inner.lock().await.state.clone()
    }

    /// Refuses ports another endpoint already publishes (ALREADY_EXISTS naming the holder).
    pub async fn check_ports(
        &self,
        endpoint_id: &str,
        ports: &[crate::spec::PortMapping],
    ) -> Result<(), AgentError> {
        clash_error(self.inner.lock().await.state.clash(endpoint_id, ports))
    }

    /// Changes the state with `f` and, when that changed anything, brings the kernel to the new
    /// state (the skeleton only when the networks changed; the elements that differ in one
    /// netlink transaction) and reports the difference. On failure the state stays as it was.
    pub async fn update(
        &self,
        report: &mut Report,
        f: impl FnOnce(&mut FirewallState) -> Result<(), AgentError>,
    ) -> Result<bool, AgentError> {
        let mut inner = self.inner.lock().await;
        let mut next = inner.state.clone();
        f(&mut next)?;
        if next == inner.state {
            return Ok(false);
        }
        let mark = self.mark(&mut inner).await;
        let known = inner.generation.is_some() && inner.generation == mark.0;
        let res = self.change_to(&mut inner, &next).await;
        self.settle(&mut inner, mark, known).await;
        res?;
        describe(&inner.state, &next, report);
        inner.state = next;
        Ok(true)
    }

    /// Sets network `net`'s rules and, with `endpoint`, that endpoint's published ports (`None`:
    /// none): the attach and detach path. When the network is as it was and the kernel holds
    /// what the agent applied, only the endpoint's own elements are computed, compared and
    /// sent, whatever the number of endpoints on the host; otherwise as [`Firewall::update`].
    /// Ports another endpoint publishes are refused (ALREADY_EXISTS).
    pub async fn set(
        &self,
        report: &mut Report,
        net: Option<NetworkRules>,
        endpoint: Option<(&str, Option<EndpointPorts>)>,
    ) -> Result<bool, AgentError> {
        let mut inner = self.inner.lock().await;
        let same_net = net
            .as_ref()
            .is_none_or(|n| inner.state.networks.get(&n.id) == Some(n));
        let written =
            !inner.state.is_empty() && inner.skeleton_for.as_ref() == Some(&inner.state.networks);
        let (Some((id, ports)), true) = (endpoint.clone(), same_net && written) else {
            drop(inner);
            return self
                .update(report, |s| {
                    if let Some(n) = net {
                        s.set_network(n);
                    }
                    if let Some((id, ports)) = endpoint {
                        if let Some(p) = &ports {
                            check_clash(s, id, &p.ports)?;
                        }
                        s.set_endpoint(id, ports);
                    }
                    Ok(())
                })
                .await;
        };
        let old = inner.state.endpoints().get(id);
        if old == ports.as_ref() {
            return Ok(false);
        }
        if let Some(p) = &ports {
            check_clash(&inner.state, id, &p.ports)?;
        }
        let elements = |p: Option<&EndpointPorts>| {
            p.map(|p| rules::endpoint_elements(&inner.state.networks, p))
                .unwrap_or_default()
        };
        let (before, after) = (elements(old), elements(ports.as_ref()));
        let mut batch = Batch::new(FAMILY_INET, rules::TABLE);
        let group = |set: &BTreeSet<(&'static str, nfnl::Element)>,
                     other: &BTreeSet<(&'static str, nfnl::Element)>| {
            let mut by_map: BTreeMap<&'static str, Vec<nfnl::Element>> = BTreeMap::new();
            for (m, e) in set.difference(other) {
                by_map.entry(m).or_default().push(e.clone());
            }
            by_map
        };
        for (m, els) in group(&before, &after) {
            batch.delete(m, els);
        }
        for (m, els) in group(&after, &before) {
            batch.add(m, els);
        }
        let mark = self.mark(&mut inner).await;
        let known = inner.generation.is_some() && inner.generation == mark.0;
        let sent = self.send(&mut inner, &batch).await;
        self.settle(&mut inner, mark, known).await;
        if let Err(e) = sent {
            // The kernel holds something else than the agent thinks: the general path compares.
            tracing::warn!(error = %e, "element change refused: comparing with the kernel");
            drop(inner);
            return self
                .update(report, |s| {
                    s.set_endpoint(id, ports);
                    Ok(())
                })
                .await;
        }
        for (m, e) in before.difference(&after) {
            if let Some(set) = inner.elements.get_mut(m) {
                set.remove(e);
            }
        }
        for (m, e) in after.difference(&before) {
            inner.elements.entry(m).or_default().insert(e.clone());
        }
        let mut old_state = FirewallState::default();
        let mut new_state = FirewallState::default();
        old_state.set_endpoint(id, inner.state.endpoints().get(id).cloned());
        new_state.set_endpoint(id, ports.clone());
        describe_ports(&old_state, &new_state, report);
        inner.state.set_endpoint(id, ports);
        Ok(true)
    }

    /// Replaces the whole state and brings the kernel to it, whatever it holds now: for
    /// reconciliation, e.g. after someone flushed or deleted the table. Compares first and
    /// changes only what differs: an `nft` listing of the skeleton (rewritten only when it
    /// differs from what the agent wrote), a dump of each map, one netlink batch with the
    /// elements that differ. Idempotent.
    pub async fn apply_all(
        &self,
        state: FirewallState,
        report: &mut Report,
    ) -> Result<(), AgentError> {
        self.apply_all_keeping(&state, |_| false, report).await
    }

    /// [`Firewall::apply_all`], except that the networks and endpoints `keep` names stay as
    /// the state in memory has them (present, changed or absent), decided under the lock:
    /// reconciliation keeps what the API touched after its desired state was read.
    pub async fn apply_all_keeping(
        &self,
        wanted: &FirewallState,
        keep: impl Fn(&str) -> bool,
        report: &mut Report,
    ) -> Result<(), AgentError> {
        let mut inner = self.inner.lock().await;
        let mark = self.mark(&mut inner).await;
        let ours = inner.generation.is_some() && inner.generation == mark.0;
        if ours && wanted.same_but(&inner.state, &keep) {
            // The kernel holds what the agent applied, and that is what is wanted (no copy of
            // the state made: a pass with nothing to change costs a comparison).
            return Ok(());
        }
        let mut state = wanted.clone();
        keep_as_is(&mut state.networks, &inner.state.networks, &keep);
        state.keep_endpoints_of(&inner.state, &keep);
        let res = if ours {
            // Nothing committed since the agent's own last transaction.
            self.change_to(&mut inner, &state).await
        } else {
            self.converge(&mut inner, &state, false).await
        };
        // (Compared, or known: the generation is the agent's again if only it committed.)
        self.settle(&mut inner, mark, true).await;
        res?;
        describe(&inner.state, &state, report);
        inner.state = state;
        Ok(())
    }

    /// The generation, and the transaction count, before a change.
    async fn mark(&self, inner: &mut Inner) -> (Option<u32>, u64) {
        let generation = self.with_socket(inner, NfSocket::generation).await.ok();
        (generation, self.transactions.load(Ordering::Relaxed))
    }

    /// After a change that started at `mark`: the generation is the agent's own when the
    /// kernel's moved by exactly the agent's transactions since, and `known` (the kernel was
    /// compared, or was the agent's own before); otherwise unknown, and the next
    /// reconciliation compares.
    async fn settle(&self, inner: &mut Inner, mark: (Option<u32>, u64), known: bool) {
        let ours = self.transactions.load(Ordering::Relaxed) - mark.1;
        let now = self.with_socket(inner, NfSocket::generation).await.ok();
        inner.generation = match (mark.0, now) {
            (Some(before), Some(after))
                if known && u64::from(after.wrapping_sub(before)) == ours =>
            {
                Some(after)
            }
            _ => None,
        };
    }

    /// Rewrites the skeleton from the state in memory and puts back any element missing (repairs
    /// any drift in the kernel).
    pub async fn reapply(&self) -> Result<(), AgentError> {
        let mut inner = self.inner.lock().await;
        let state = inner.state.clone();
        let mark = self.mark(&mut inner).await;
        let res = self.converge(&mut inner, &state, true).await;
        self.settle(&mut inner, mark, true).await;
        res
    }

    /// The kernel from `inner.state` to `next`, trusting that it holds what was applied last.
    async fn change_to(&self, inner: &mut Inner, next: &FirewallState) -> Result<(), AgentError> {
        if next.is_empty() {
            self.write(rules::skeleton(next, false)).await?;
            forget_kernel(inner);
            return Ok(());
        }
        if inner.skeleton_for.as_ref() != Some(&next.networks) {
            self.write_skeleton(inner, next, false).await?;
        }
        let want = rules::elements(next);
        let batch = diff(&inner.elements, &want);
        if let Err(e) = self.send(inner, &batch).await {
            // The kernel holds something else than the agent thinks (someone changed the table,
            // a kill left a batch half-known): compare with it and change what differs.
            tracing::warn!(error = %e, "element change refused: comparing with the kernel");
            self.converge(inner, next, true).await?;
        }
        inner.elements = want;
        Ok(())
    }

    /// The kernel compared with `state` and brought to it; with `force` the skeleton is written
    /// whatever the listing says.
    async fn converge(
        &self,
        inner: &mut Inner,
        state: &FirewallState,
        force: bool,
    ) -> Result<(), AgentError> {
        if state.is_empty() {
            if force || inner.skeleton_for.is_some() || self.listing().await?.is_some() {
                self.write(rules::skeleton(state, false)).await?;
            }
            forget_kernel(inner);
            return Ok(());
        }
        let listing = self.listing().await?;
        let same = inner.skeleton_for.as_ref() == Some(&state.networks)
            && listing.is_some()
            && listing == inner.listing;
        if force || !same {
            self.write_skeleton(inner, state, listing.is_none()).await?;
        }
        let want = rules::elements(state);
        let res = self.sync_elements(inner, &want).await;
        if let Err(e) = res {
            // A map of the wrong type, say: make the table again.
            tracing::warn!(error = %e, "elements cannot be brought in line: rewriting the table");
            self.write_skeleton(inner, state, true).await?;
            self.sync_elements(inner, &want).await?;
        }
        Ok(())
    }

    /// Writes the skeleton (replacing the table when `replace`, or when adding to what is
    /// there fails) and records how the kernel lists it.
    async fn write_skeleton(
        &self,
        inner: &mut Inner,
        state: &FirewallState,
        replace: bool,
    ) -> Result<(), AgentError> {
        if let Err(e) = self.write(rules::skeleton(state, replace)).await {
            if replace {
                return Err(e);
            }
            tracing::warn!(error = %e, "the table cannot be amended: replacing it");
            self.write(rules::skeleton(state, true)).await?;
            inner.elements = Elements::default();
        }
        if replace {
            inner.elements = Elements::default();
        }
        inner.skeleton_for = Some(state.networks.clone());
        inner.listing = self.listing().await?;
        Ok(())
    }

    /// Dumps each map and changes, in one batch, the elements that differ from `want`.
    async fn sync_elements(&self, inner: &mut Inner, want: &Elements) -> Result<(), AgentError> {
        let mut have = Elements::default();
        for name in want.keys() {
            let got = self
                .with_socket(inner, |s| s.elements(FAMILY_INET, rules::TABLE, name))
                .await?;
            have.insert(name, got.into_iter().collect());
        }
        let batch = diff(&have, want);
        self.send(inner, &batch).await?;
        inner.elements = want.clone();
        Ok(())
    }

    /// Sends one batch (nothing when it is empty).
    async fn send(&self, inner: &mut Inner, batch: &Batch) -> Result<(), AgentError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.netlink_transactions.fetch_add(1, Ordering::Relaxed);
        self.with_socket(inner, |s| s.apply(batch)).await
    }

    /// Runs `f` with the nf_tables socket, opening it inside the managed namespace first if
    /// needed; a socket that failed is dropped (the next call opens a new one).
    async fn with_socket<T>(
        &self,
        inner: &mut Inner,
        f: impl FnOnce(&mut NfSocket) -> Result<T, NfError>,
    ) -> Result<T, AgentError> {
        if inner.socket.is_none() {
            let s = netns::run_in(&self.netns, NfSocket::open)
                .await
                .map_err(AgentError::netns(&self.netns))?
                .map_err(nf_error)?;
            inner.socket = Some(s);
        }
        let Some(socket) = inner.socket.as_mut() else {
            return Err(AgentError::Nft {
                message: "no nf_tables socket".into(),
            });
        };
        let res = f(socket);
        if res.is_err() {
            inner.socket = None;
        }
        res.map_err(nf_error)
    }

    async fn write(&self, nft: nftables::schema::Nftables<'static>) -> Result<(), AgentError> {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.nft_processes.fetch_add(1, Ordering::Relaxed);
        run_nft(&self.netns, move || nftables::helper::apply_ruleset(&nft)).await
    }

    /// The skeleton as the kernel holds it (`nft -j -t list table inet weft`: no elements),
    /// normalised; `None` when the table does not exist.
    async fn listing(&self) -> Result<Option<serde_json::Value>, AgentError> {
        Ok(self.list(true).await?.map(normalise))
    }

    /// The agent's table as the kernel holds it now (`nft -j list table inet weft`), `None`
    /// when it does not exist.
    pub async fn kernel_table(&self) -> Result<Option<serde_json::Value>, AgentError> {
        self.list(false).await
    }

    async fn list(&self, terse: bool) -> Result<Option<serde_json::Value>, AgentError> {
        self.nft_processes.fetch_add(1, Ordering::Relaxed);
        let mut args = vec!["-j"];
        if terse {
            args.push("-t");
        }
        args.extend(["list", "table", "inet", rules::TABLE]);
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

/// Entries of `now` that `keep` names replace (or remove) those of `wanted`.
fn keep_as_is<T: Clone>(
    wanted: &mut BTreeMap<String, T>,
    now: &BTreeMap<String, T>,
    keep: &impl Fn(&str) -> bool,
) {
    wanted.retain(|id, _| !keep(id) || now.contains_key(id));
    for (id, v) in now.iter().filter(|(id, _)| keep(id)) {
        wanted.insert(id.clone(), v.clone());
    }
}

/// After the table was deleted: nothing of it is known to be in the kernel.
fn forget_kernel(inner: &mut Inner) {
    inner.skeleton_for = None;
    inner.listing = None;
    inner.elements = Elements::default();
}

/// The batch bringing maps holding `have` to `want`: removals first, then additions (an element
/// whose value changed is removed and added again).
fn diff(have: &Elements, want: &Elements) -> Batch {
    let mut b = Batch::new(FAMILY_INET, rules::TABLE);
    let empty = std::collections::BTreeSet::new();
    for (name, h) in have {
        let w = want.get(name).unwrap_or(&empty);
        b.delete(name, h.difference(w).cloned().collect());
    }
    for (name, w) in want {
        let h = have.get(name).unwrap_or(&empty);
        b.add(name, w.difference(h).cloned().collect());
    }
    b
}

/// A listing without what changes by itself: handles, counters' figures, the version header.
fn normalise(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                if let Some(c) = m.get_mut("counter") {
                    *c = serde_json::Value::Null;
                }
                m.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(objs) = v.get_mut("nftables").and_then(|o| o.as_array_mut()) {
        objs.retain(|o| o.get("metainfo").is_none());
    }
    walk(&mut v);
    v
}

fn nf_error(e: NfError) -> AgentError {
    AgentError::Nft {
        message: e.to_string(),
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
    crate::metrics::timed("nft_transaction", netns::run_in(netns_path, f))
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
    describe_ports(old, new, report);
    if !old.is_empty() && new.is_empty() {
        report.change(Action::Removed, Kind::NftTable, TABLE_OBJECT, "");
    }
}

/// The published ports that differ between `old` and `new`.
fn describe_ports(old: &FirewallState, new: &FirewallState, report: &mut Report) {
    let ports = |s: &FirewallState, id: &str| {
        s.endpoints()
            .get(id)
            .map(|e| e.ports.clone())
            .unwrap_or_default()
    };
    let ids: std::collections::BTreeSet<&String> = old
        .endpoints()
        .keys()
        .chain(new.endpoints().keys())
        .collect();
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
