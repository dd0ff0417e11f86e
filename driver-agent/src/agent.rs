//! The agent: the managed ("host") namespace, what its kernel can do, and the operations of
//! `weft.agent.v1` in domain terms.
//!
//! Networks and endpoints go through the driver registry ([`crate::driver::of`]): this file
//! runs what every driver shares (refusals, the sandbox's namespace, the firewall and sysctls,
//! undoing a failed request, the default routes) and calls the [`NetworkDriver`] trait for the
//! rest, never a driver by name.

use std::path::{Path, PathBuf};

use rtnetlink::{Handle, packet_route::AddressFamily};

use crate::{
    applied::{Of, digest},
    capabilities::{self, Capabilities},
    driver::{self, Attached, NetworkDriver, NetworkSetup, SandboxNs},
    error::AgentError,
    firewall::{self, EndpointPorts, Firewall, NetworkRules},
    kernel, names, netns,
    netns_policy::{NetnsFile, NetnsPolicy},
    report::{Action, Kind, Report},
    spec::{Driver, Endpoint, Network},
    sysctl,
};

mod connected;
mod pool;
mod sandboxes;
mod strays;
mod vlans;

pub(crate) use vlans::{vlan_drift, vlan_ok};

pub use crate::driver::NetworkState;
pub use sandboxes::SandboxState;

/// Sandboxes (with their endpoints) the audit checks in full each time, in turn
/// (`reconcile.rs`, [`Agent::audit`]): every sandbox once every `sandboxes / AUDIT` audits (at
/// most one per reconcile interval: at the default 30 s, 5,000 sandboxes in about 5 hours).
pub const AUDIT: usize = 8;

/// Which endpoints of a sandbox carry its default routes, as found in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultRoutes {
    pub v4: Option<String>,
    pub v6: Option<String>,
}

#[derive(Debug)]
pub struct Agent {
    host_netns: PathBuf,
    data_dir: PathBuf,
    host: Handle,
    caps: Capabilities,
    firewall: Firewall,
    /// Which caller-given namespace files may be used (see [`Agent::open_netns`]).
    netns_policy: NetnsPolicy,
    /// Serialises network creation so that two attaches racing on one new network do not both
    /// try to create (and then disown) its bridge.
    networks: tokio::sync::Mutex<()>,
    /// Attaches under way, per network: an idle network is not removed under one (see
    /// [`Agent::remove_network_if_idle`]).
    attaching: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// What the API touched lately, which reconciliation leaves alone.
    pub(crate) recent: crate::recent::Recent,
    /// This host's name, once known: ApplyState refuses another host's state.
    pub(crate) host_name: std::sync::OnceLock<String>,
    /// Sysctl sets already made as wanted (see `program_network`).
    pub(crate) sysctls_checked: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The namespace of every sandbox of this host that has one of its own (not host
    /// network), by sandbox id: what the socket broker (`broker.rs`) serves. Filled by
    /// CreateSandbox and by reconciliation (which re-creates every desired sandbox, also
    /// after a restart), emptied by RemoveSandbox.
    sandbox_netns: std::sync::Mutex<std::collections::HashMap<String, SandboxNetnsPath>>,
    /// The agent's own sandbox namespaces made lately, open with a socket inside.
    connected: std::sync::Mutex<connected::ConnectedNamespaces>,
    /// Removes detached endpoints' links off the request path.
    unlinker: crate::unlink::Unlinker,
    /// Sandbox namespaces made ahead (see `agent/pool.rs`).
    pool: std::sync::Arc<pool::NetnsPool>,
    /// Where dns-svc last asked for a sandbox's listeners: the pool binds them ahead there.
    pub(crate) dns_listen: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    /// What each object was last brought to (reconciliation skips what did not change).
    pub(crate) applied: crate::applied::Applied,
    /// Sandboxes a pass of the changes audits in full, and whose turn it is.
    pub(crate) audit: (usize, std::sync::atomic::AtomicUsize),
    /// Reconciliation's socket for dumping the host's links (opened on first use).
    /// (Held while in use: callers at once wait for it rather than each dump anew.)
    survey: tokio::sync::Mutex<Option<crate::survey::LinkSocket>>,
    /// Which networks sit on which 802.1Q parent the agent may have made (`agent/vlans.rs`).
    vlans: driver::vlan::Users,
}

/// Where a sandbox's namespace is, as the socket broker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNetnsPath {
    pub path: PathBuf,
    /// The agent's own `weft-<id>` namespace; otherwise the caller's, which is checked
    /// against the netns policy again each time it is opened.
    pub managed: bool,
}

/// See [`crate::broker::listeners_given_ahead`].
pub(crate) fn connected_prebound_given() -> u64 {
    connected::PREBOUND_GIVEN.load(std::sync::atomic::Ordering::Relaxed)
}

impl Agent {
    /// Connects to the managed namespace and probes the kernel.
    pub async fn start(host_netns: PathBuf, data_dir: PathBuf) -> Result<Self, AgentError> {
        let host = netns::connect(&host_netns)
            .await
            .map_err(AgentError::netns(&host_netns))?;
        let caps = capabilities::detect(&host_netns).await;
        let unlinker = crate::unlink::Unlinker::start(&host_netns)
            .await
            .map_err(AgentError::netns(&host_netns))?;
        tracing::info!(
            netns = %host_netns.display(),
            drivers = ?driver::usable(&caps.features),
            kernel = %caps.kernel_release,
            "agent ready"
        );
        let applied = crate::applied::Applied::load(&data_dir);
        let dns_listen: pool::DnsListen = std::sync::Arc::default();
        Ok(Self {
            applied,
            audit: (AUDIT, Default::default()),
            survey: Default::default(),
            vlans: Default::default(),
            firewall: Firewall::new(host_netns.clone()),
            netns_policy: NetnsPolicy::default(),
            host_netns,
            data_dir,
            host,
            caps,
            networks: tokio::sync::Mutex::new(()),
            attaching: Default::default(),
            recent: Default::default(),
            host_name: std::sync::OnceLock::new(),
            sysctls_checked: Default::default(),
            sandbox_netns: Default::default(),
            connected: Default::default(),
            unlinker,
            pool: pool::NetnsPool::start(dns_listen.clone()),
            dns_listen,
        })
    }

    /// How many sandboxes (with their endpoints) each pass of the changes checks in full
    /// whatever the survey says, in turn (default [`AUDIT`]).
    #[must_use]
    pub fn with_audit(mut self, sandboxes_per_pass: usize) -> Self {
        self.audit.0 = sandboxes_per_pass;
        self
    }

    /// Replaces the default places caller-given namespace files may come from.
    #[must_use]
    pub fn with_netns_policy(mut self, policy: NetnsPolicy) -> Self {
        self.netns_policy = policy;
        self
    }

    /// Opens a namespace file a caller named (request field `field`): every `netns_path` the
    /// agent is given goes through here before anything is done with it, and what is done
    /// uses the file returned, never the path again. Refused: INVALID_ARGUMENT naming the
    /// field and the path; missing (in an allowed place): NOT_FOUND.
    pub async fn open_netns(&self, field: &str, path: &Path) -> Result<NetnsFile, AgentError> {
        self.netns_policy.open(field, path, &self.host_netns).await
    }

    /// [`Agent::open_netns`] for teardown: a namespace already gone is `None`.
    async fn open_netns_if_there(
        &self,
        field: &str,
        path: &Path,
    ) -> Result<Option<NetnsFile>, AgentError> {
        match self.open_netns(field, path).await {
            Ok(f) => Ok(Some(f)),
            Err(AgentError::NetnsNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the namespace of sandbox `id` is, if it is one of this host's with a namespace of
    /// its own.
    /// dns-svc's listener sockets on `addr` made ahead with the namespace at `path`, if there
    /// are (given once).
    pub(crate) fn prebound_dns(
        &self,
        path: &Path,
        addr: std::net::SocketAddr,
    ) -> Option<Vec<std::os::fd::OwnedFd>> {
        self.connected(path)?.take_dns(addr)
    }

    pub fn sandbox_netns(&self, id: &str) -> Option<SandboxNetnsPath> {
        self.sandbox_netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Sets this host's name (once); ApplyState then refuses the state of another host.
    pub fn set_host_name(&self, name: &str) {
        let _ = self.host_name.set(name.to_owned());
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn host_netns(&self) -> &Path {
        &self.host_netns
    }

    /// The netlink handle of the managed namespace.
    pub(crate) fn host_handle(&self) -> &Handle {
        &self.host
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Every link of the host, as reconciliation's survey reads them ([`crate::survey`]).
    pub(crate) async fn host_links(&self) -> Result<std::sync::Arc<Vec<kernel::Link>>, AgentError> {
        let mut held = self.survey.lock().await;
        let mut socket = match held.take() {
            Some(s) => s,
            None => netns::run_in(&self.host_netns, crate::survey::LinkSocket::open)
                .await
                .map_err(AgentError::netns(&self.host_netns))?
                .map_err(|source| AgentError::LinkDump { source })?,
        };
        let (socket, links) = tokio::task::spawn_blocking(move || {
            let links = socket.links();
            (socket, links)
        })
        .await
        .map_err(|e| AgentError::LinkDump {
            source: std::io::Error::other(e),
        })?;
        let links = links.map_err(|source| AgentError::LinkDump { source })?;
        // (A socket that failed is dropped: the next survey opens another.)
        *held = Some(socket);
        Ok(links)
    }

    /// The nftables side of the host (for reconciliation: [`Firewall::apply_all`]).
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// The network's sysctls and firewall rules, and (with `ep`) the endpoint's published
    /// ports, in one nftables transaction, run only when something changed.
    async fn program_network(
        &self,
        net: &Network,
        ep: Option<&Endpoint>,
        report: &mut Report,
    ) -> Result<(), AgentError> {
        let rules = NetworkRules::from_network(net);
        if let Some(ep) = ep
            && net.internal
            && !ep.ports.is_empty()
        {
            tracing::warn!(endpoint = %ep.id, network = %net.id, "internal network: ports not published");
        }
        let wanted = firewall::sysctls_for(&rules);
        // The rules first: the table's loopback guard must be in place before route_localnet
        // goes on (see `firewall::rules::loopback_rules`), and a failed transaction leaves the
        // switch as it was.
        self.firewall
            .set(
                report,
                Some(rules),
                ep.map(|ep| (ep.id.as_str(), EndpointPorts::from_endpoint(ep))),
            )
            .await?;
        let key: String = wanted
            .iter()
            .map(|s| format!("{}={};", s.path, s.value))
            .collect();
        // Checked once per set (re-checked by every reconciliation, which forgets the sets):
        // reading them costs a thread entering the namespace on every attach otherwise.
        let checked = self
            .sysctls_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&key);
        let set = if checked {
            Vec::new()
        } else {
            let set = sysctl::ensure(&self.host_netns, wanted).await?;
            self.sysctls_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key);
            set
        };
        for s in set {
            report.changes.push(crate::report::Change {
                action: Action::Updated,
                kind: Kind::Sysctl,
                object: s.name(),
                owner: net.id.clone(),
                detail: format!("-> {}", s.value),
            });
        }
        Ok(())
    }

    /// The managed namespace's own (underlay) addresses: global ones not on Weft's links.
    pub async fn underlay_addresses(&self) -> Result<Vec<std::net::IpAddr>, AgentError> {
        let ours: Vec<u32> = kernel::links(&self.host)
            .await?
            .into_iter()
            .filter(|l| names::is_weft_alias(&l.alias))
            .map(|l| l.index)
            .collect();
        Ok(kernel::global_addresses(&self.host)
            .await?
            .into_iter()
            .filter(|(index, _)| !ours.contains(index))
            .map(|(_, ip)| ip)
            .collect())
    }

    /// The driver of `net`, once it has checked this kernel: a driver the kernel cannot run is
    /// refused (FAILED_PRECONDITION), and one this agent does not program yet (UNIMPLEMENTED).
    fn driver(&self, net: &Network) -> Result<&'static dyn NetworkDriver, AgentError> {
        let d = driver::of(net.driver);
        d.require(net, &self.caps.features)?;
        Ok(d)
    }

    /// The driver's host side of `net`, under the network lock, after its VLAN parent (one
    /// this call made goes again if the driver fails).
    async fn setup_network(
        &self,
        d: &dyn NetworkDriver,
        net: &Network,
        report: &mut Report,
    ) -> Result<NetworkSetup, AgentError> {
        let _guard = self.networks.lock().await;
        let vlan_created = self.ensure_vlan(net, report).await?;
        let res = d.ensure_network(&self.host, net, report).await;
        if res.is_err() && vlan_created {
            self.undo_vlan(&net.id).await;
        }
        res
    }

    /// Removes the host device this request created, unless an endpoint joined it meanwhile,
    /// and forgets what the request reported.
    async fn undo_network(&self, d: &dyn NetworkDriver, setup: &NetworkSetup, report: &mut Report) {
        {
            let _guard = self.networks.lock().await;
            d.undo_network(&self.host, setup).await;
        }
        report.changes.clear();
    }

    /// Creates or updates the host-side objects of `net`, and its firewall rules when it has a
    /// host device.
    pub async fn ensure_network(
        &self,
        net: &Network,
        report: &mut Report,
    ) -> Result<NetworkState, AgentError> {
        let d = self.driver(net)?;
        self.applied.forget(Of::Network, &net.id);
        let setup = self.setup_network(d, net, report).await?;
        if let Some(device) = &setup.device
            && let Err(e) = self.program_network(net, None, report).await
        {
            if created_link(report, &device.name) {
                self.undo_network(d, &setup, report).await;
            }
            return Err(e);
        }
        self.applied
            .record(Of::Network, &net.id, network_digest(net));
        Ok(setup.state)
    }

    /// Removes every object of the network `network_id` from the host.
    pub async fn remove_network(&self, network_id: &str) -> Report {
        let guard = self.networks.lock().await;
        self.remove_network_locked(network_id, guard).await
    }

    /// After a detach from `network_id`: a network with a host bridge (bridge or overlay) and
    /// no endpoint left on this host goes from it at once (its bridge, an overlay's VXLAN
    /// device, their rules; for an overlay the other hosts' agents drop this host from their
    /// FDB as the gateway's view changes). The gateway's desired state for a host holds only
    /// the networks its endpoints use, so an idle bridge kept would be drift until the next
    /// reconciliation removed it; Docker's overlay driver likewise removes a host's sandbox of
    /// a network when its last container leaves. One with an endpoint left, or with an attach
    /// under way, stays; reconciliation removes anything this misses (a sandbox deleted
    /// whole, whose veths the kernel removes in the background).
    pub async fn remove_network_if_idle(&self, network_id: &str, report: &mut Report) {
        let guard = self.networks.lock().await;
        let busy = lock_map(&self.attaching)
            .get(network_id)
            .is_some_and(|n| *n > 0);
        if busy {
            return;
        }
        // (The survey's table, kept by the link notifications: a dump of every link on
        // each detach costs what the host holds.)
        let links = match self.host_links().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(network = %network_id, error = %e, "cannot tell whether the network is idle");
                return;
            }
        };
        let (bridge_alias, vxlan_alias) = (
            names::network_alias(network_id),
            names::vxlan_alias(network_id),
        );
        let Some(br) = links
            .iter()
            .find(|l| l.alias == bridge_alias)
            .map(|l| l.index)
        else {
            return;
        };
        if links
            .iter()
            .any(|l| l.controller == Some(br) && l.alias != vxlan_alias)
        {
            return;
        }
        tracing::info!(network = %network_id, "last endpoint on this host left the network: removing its devices");
        // Removed by the API: a pass whose desired state was read before the detach (the
        // network still used there) must not bring the bridge back.
        self.recent.touch(network_id, false);
        let r = self.remove_network_locked(network_id, guard).await;
        report.changes.extend(r.changes);
        report.failures.extend(r.failures);
    }

    /// [`Agent::remove_network`] under the network lock (`guard`, released on the way).
    async fn remove_network_locked(
        &self,
        network_id: &str,
        guard: tokio::sync::MutexGuard<'_, ()>,
    ) -> Report {
        self.applied.forget(Of::Network, network_id);
        let mut report = Report::default();
        // (Removal knows only the id: every driver removes what it finds of it.)
        for d in driver::all() {
            d.remove_network(&self.host, network_id, &mut report).await;
        }
        self.release_vlan(network_id, &mut report).await;
        drop(guard);
        if !report.failures.is_empty() {
            // A bridge that may still be there keeps route_localnet on: its rules (and the
            // table's loopback guard) stay until a later pass removes it.
            tracing::warn!(network = %network_id, "network not fully removed: its firewall rules stay");
            return report;
        }
        self.forget_in_firewall(&mut report, network_id, |s| s.remove_network(network_id))
            .await;
        report
    }

    /// Attaches `ep` to `net` (ensuring the network first). Drivers without an interface in the
    /// sandbox (host, none) program nothing. All or nothing: what this call created is removed
    /// again on failure.
    pub async fn attach(
        &self,
        ep: &Endpoint,
        net: &Network,
        report: &mut Report,
    ) -> Result<Option<(Attached, DefaultRoutes)>, AgentError> {
        self.attach_in(ep, net, None, report).await
    }

    /// [`Agent::attach`]; `fresh`: the sandbox's namespace was made by this call (see
    /// [`SandboxNs::fresh`]), with the default routes as the endpoints attached so far left
    /// them, kept up to date here instead of read back from the kernel.
    pub(crate) async fn attach_in(
        &self,
        ep: &Endpoint,
        net: &Network,
        fresh: Option<&mut DefaultRoutes>,
        report: &mut Report,
    ) -> Result<Option<(Attached, DefaultRoutes)>, AgentError> {
        if ep.network_id != net.id {
            return Err(AgentError::Invalid(vec![
                weft_runtime::FieldViolation::new(
                    "endpoint.network_id",
                    &ep.network_id,
                    format!("differs from network.network_id {:?}", net.id),
                ),
            ]));
        }
        let d = self.driver(net)?;
        let _attaching = Attaching::new(&self.attaching, &net.id);
        self.applied.forget(Of::Endpoint, &ep.id);
        self.applied.forget(Of::Network, &net.id);
        if !d.attaches() {
            self.applied
                .record(Of::Endpoint, &ep.id, endpoint_digest(ep, net));
            return Ok(None);
        }
        if d.host_device() {
            // Refused before anything is created; checked again when the ports are written.
            self.firewall.check_ports(&ep.id, &ep.ports).await?;
        } else if !ep.ports.is_empty() {
            // As Docker's macvlan: nothing on the host to forward from.
            tracing::warn!(endpoint = %ep.id, network = %net.id, driver = net.driver.name(), "ports not published: the driver has nothing on the host");
        }
        let sandbox = self
            .sandbox_socket("endpoint.netns_path", &ep.netns)
            .await?;
        // A link detached from this sandbox may still hold the interface name.
        self.unlinker.settled(&ep.netns).await;
        let setup = self.setup_network(d, net, report).await?;
        let device_created = setup
            .device
            .as_ref()
            .is_some_and(|l| created_link(report, &l.name));
        let vlan_created = !net.parent.is_empty() && created_link(report, &net.parent);
        let res = self
            .attach_endpoint(d, &sandbox, &setup, (net, ep), fresh, report)
            .await;
        if res.is_err() && device_created {
            self.undo_network(d, &setup, report).await;
        }
        if res.is_err() && vlan_created {
            // (The VLAN made for this attach: no endpoint was on it before.)
            let _guard = self.networks.lock().await;
            self.undo_vlan(&net.id).await;
            report.changes.clear();
        }
        if res.is_ok() {
            // The network was ensured on the way.
            self.applied
                .record(Of::Network, &net.id, network_digest(net));
            self.applied
                .record(Of::Endpoint, &ep.id, endpoint_digest(ep, net));
        }
        res.map(Some)
    }

    /// The namespace at a caller's `path` (request field `field`), open and with a netlink
    /// socket inside: one of the agent's own made lately as it is, any other checked against
    /// the policy first.
    async fn sandbox_socket(
        &self,
        field: &str,
        path: &Path,
    ) -> Result<connected::Connected, AgentError> {
        if let Some(c) = self.connected(path) {
            return Ok(c);
        }
        let ns = self.open_netns(field, path).await?;
        let handle = netns::connect_file(&ns.file, path)
            .await
            .map_err(AgentError::netns(path))?;
        let c = connected::Connected {
            file: std::sync::Arc::new(ns.file),
            handle,
            ipv6_off_by_default: false,
            dns: std::sync::Arc::default(),
        };
        self.keep_connected(path, &c);
        Ok(c)
    }

    /// Keeps a namespace just opened for the next calls (Connect, then Disconnect) when it is
    /// one of the agent's own `weft-<id>` ones; a caller's is checked against the policy every
    /// time.
    fn keep_connected(&self, path: &Path, c: &connected::Connected) {
        let own = path.parent() == Some(Path::new(netns::NETNS_DIR))
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(crate::sandbox::sandbox_of_managed_netns)
                .is_some();
        if own {
            self.connected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(path.to_owned(), c.clone());
        }
    }

    /// The agent's own namespace at `path`, if it is open (see `agent/connected.rs`).
    fn connected(&self, path: &Path) -> Option<connected::Connected> {
        self.connected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
    }

    /// The endpoint's part of [`Agent::attach`], once its network is set up: the interface,
    /// the firewall (undoing the interface if that fails), the sandbox's default routes.
    async fn attach_endpoint(
        &self,
        d: &dyn NetworkDriver,
        sandbox: &connected::Connected,
        setup: &NetworkSetup,
        (net, ep): (&Network, &Endpoint),
        fresh: Option<&mut DefaultRoutes>,
        report: &mut Report,
    ) -> Result<(Attached, DefaultRoutes), AgentError> {
        let ns = SandboxNs {
            handle: &sandbox.handle,
            file: &sandbox.file,
            path: &ep.netns,
            ipv6_off_by_default: sandbox.ipv6_off_by_default,
            fresh: fresh.is_some(),
        };
        let attached = d.attach(&self.host, ns, setup, net, ep, report).await?;
        // A network without a host device has no rules, sysctls or ports to program.
        let programmed = if d.host_device() {
            self.program_network(net, Some(ep), report).await
        } else {
            Ok(())
        };
        if let Err(e) = programmed {
            if attached.created {
                d.detach(
                    &self.host,
                    Some(&sandbox.handle),
                    &ep.id,
                    &mut Report::default(),
                )
                .await;
            }
            report.changes.clear();
            return Err(e);
        }
        let routes = match fresh {
            // What `in_sandbox::configure` did: the endpoint that carries a family's gateway
            // takes that family's default route; one that does not leaves it where it is.
            Some(routes) => {
                if ep.default_route_v4 && ep.ipv4_gateway.is_some() {
                    routes.v4 = Some(ep.id.clone());
                }
                if ep.default_route_v6 && ep.ipv6_gateway.is_some() {
                    routes.v6 = Some(ep.id.clone());
                }
                routes.clone()
            }
            None => default_routes(&sandbox.handle).await?,
        };
        Ok((attached, routes))
    }

    /// Detaches an endpoint; its sandbox namespace may already be gone. A `netns_path` the
    /// policy refuses is refused before anything is done.
    pub async fn detach(
        &self,
        endpoint_id: &str,
        netns_path: &Path,
    ) -> Result<(DefaultRoutes, Report), AgentError> {
        self.applied.forget(Of::Endpoint, endpoint_id);
        let open = self.connected(netns_path);
        let sandbox_ns = if netns_path.as_os_str().is_empty() || open.is_some() {
            None
        } else {
            self.open_netns_if_there("netns_path", netns_path).await?
        };
        // (No namespace: the sandbox is gone with its interfaces and routes.)
        let sandbox = match (open, sandbox_ns) {
            (Some(c), _) => Some(c.handle),
            (None, Some(ns)) => match netns::connect_file(&ns.file, netns_path).await {
                Ok(h) => {
                    let c = connected::Connected {
                        file: std::sync::Arc::new(ns.file),
                        handle: h,
                        ipv6_off_by_default: false,
                        dns: std::sync::Arc::default(),
                    };
                    self.keep_connected(netns_path, &c);
                    Some(c.handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot enter the sandbox");
                    None
                }
            },
            (None, None) => None,
        };
        // The bridge's veth is made inert here and removed off the request path; one being
        // removed already is as good as gone.
        let mut report = Report {
            defer_unlink: true,
            ..Report::default()
        };
        let removing = self.unlinker.removing(endpoint_id);
        // (Detach knows only the id: every driver removes what it finds of it.)
        for d in driver::all() {
            if removing && d.kind() == Driver::Bridge {
                continue;
            }
            d.detach(&self.host, sandbox.as_ref(), endpoint_id, &mut report)
                .await;
        }
        for link in std::mem::take(&mut report.doomed) {
            self.unlinker.remove(link, netns_path);
        }
        let mut changes = Report::default();
        let res = self
            .firewall
            .set(&mut changes, None, Some((endpoint_id, None)))
            .await;
        report.changes.append(&mut changes.changes);
        if let Err(e) = res {
            report.fail(Kind::NftTable, firewall::TABLE_OBJECT, endpoint_id, &e);
        }
        let mut routes = DefaultRoutes::default();
        if let Some(sandbox) = &sandbox {
            match default_routes(sandbox).await {
                Ok(r) => routes = r,
                Err(e) => tracing::warn!(error = %e, "cannot read the sandbox's routes"),
            }
        }
        Ok((routes, report))
    }
}

impl Agent {
    /// Removes published ports or a network's rules from the firewall; a failure is reported,
    /// not returned (removals keep going).
    async fn forget_in_firewall(
        &self,
        report: &mut Report,
        owner: &str,
        f: impl FnOnce(&mut firewall::FirewallState),
    ) {
        let mut changes = Report::default();
        let res = self
            .firewall
            .update(&mut changes, |s| {
                f(s);
                Ok(())
            })
            .await;
        report.changes.append(&mut changes.changes);
        if let Err(e) = res {
            report.fail(Kind::NftTable, firewall::TABLE_OBJECT, owner, &e);
        }
    }
}

/// What an endpoint's digest covers: its spec and the network it is attached to, but not an
/// overlay network's peers (which change with every endpoint on other hosts, and which no
/// endpoint here depends on: `OverlaySpec`'s hash leaves them out).
pub(crate) fn endpoint_digest(ep: &Endpoint, net: &Network) -> u64 {
    digest(&(ep, net))
}

/// What a network's digest covers: its spec, an overlay's peers included.
pub(crate) fn network_digest(net: &Network) -> u64 {
    digest(&(net, net.overlay.as_ref().map(|o| &o.peers)))
}

/// Whether `report` says a link called `name` was created.
fn created_link(report: &Report, name: &str) -> bool {
    report
        .changes
        .iter()
        .any(|c| c.action == Action::Created && c.kind == Kind::Link && c.object == name)
}

/// The endpoint ids (from the interfaces' aliases) the sandbox's default routes go through.
pub async fn default_routes(sandbox: &Handle) -> Result<DefaultRoutes, AgentError> {
    let mut out = DefaultRoutes::default();
    for (family, slot) in [
        (AddressFamily::Inet, &mut out.v4),
        (AddressFamily::Inet6, &mut out.v6),
    ] {
        if let Some(index) = kernel::default_route_oif(sandbox, family).await?
            && let Some(link) = kernel::link_by_index(sandbox, index).await?
        {
            *slot = names::endpoint_of_alias(&link.alias).map(str::to_owned);
        }
    }
    Ok(out)
}

fn lock_map<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One attach under way on a network, counted while it lives.
struct Attaching<'a> {
    map: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>,
    network: String,
}

impl<'a> Attaching<'a> {
    fn new(
        map: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>,
        network: &str,
    ) -> Self {
        *lock_map(map).entry(network.to_owned()).or_default() += 1;
        Self {
            map,
            network: network.to_owned(),
        }
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        let mut m = lock_map(self.map);
        if let Some(n) = m.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::agent::v1 as pb;

    use super::*;

    fn overlay(peers: &[&str]) -> Network {
        let spec = pb::NetworkSpec {
            network_id: "n".into(),
            driver: pb::Driver::Overlay as i32,
            vni: 4242,
            subnets: vec![pb::Subnet {
                cidr: "10.0.0.0/24".into(),
                gateway: "10.0.0.1".into(),
            }],
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, id)| pb::OverlayPeer {
                    endpoint_id: (*id).into(),
                    ipv4_address: format!("10.0.0.{}", i + 10),
                    vtep_address: "198.51.100.2".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Network::from_pb(spec, "network").unwrap()
    }

    #[test]
    fn peers_elsewhere_change_the_networks_digest_but_not_its_endpoints() {
        let ep = Endpoint::from_pb(
            pb::EndpointSpec {
                endpoint_id: "e".into(),
                network_id: "n".into(),
                netns_path: "/run/netns/x".into(),
                ..Default::default()
            },
            "endpoint",
        )
        .unwrap();
        let (a, b) = (overlay(&["p1"]), overlay(&["p1", "p2"]));
        assert_ne!(network_digest(&a), network_digest(&b));
        assert_eq!(endpoint_digest(&ep, &a), endpoint_digest(&ep, &b));
        let mut c = overlay(&["p1"]);
        c.overlay.as_mut().unwrap().vni = 4343;
        assert_ne!(endpoint_digest(&ep, &a), endpoint_digest(&ep, &c));
    }
}
