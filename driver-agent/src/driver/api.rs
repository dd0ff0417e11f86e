//! What every driver implements ([`NetworkDriver`]) and what drivers share: the shapes of a
//! network's host side and of an endpoint in its sandbox, and the refusals of a kernel that
//! lacks something. Imports no driver: drivers and the registry (`mod.rs`) import it.

use rtnetlink::Handle;

use crate::{
    capabilities::Features,
    error::AgentError,
    kernel::Link,
    report::Report,
    spec::{Driver, Endpoint, Network},
};

/// What a network looks like on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkState {
    pub devices: Vec<String>,
    pub mtu: u32,
}

/// What [`NetworkDriver::ensure_network`] left on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSetup {
    pub state: NetworkState,
    /// The host device the network's endpoints join (the bridge). A network with one gets its
    /// firewall rules, which match on it; without one there is nothing to firewall.
    pub device: Option<Link>,
}

impl NetworkSetup {
    /// Nothing on the host: the network's MTU as given.
    pub fn nothing(net: &Network) -> Self {
        Self {
            state: NetworkState {
                devices: Vec::new(),
                mtu: net.mtu,
            },
            device: None,
        }
    }
}

/// The sandbox an endpoint goes into: its namespace file (checked by the netns policy and
/// open) and a netlink handle inside it.
#[derive(Debug, Clone, Copy)]
pub struct SandboxNs<'a> {
    pub handle: &'a Handle,
    pub file: &'a std::fs::File,
    /// Where the namespace is (for errors).
    pub path: &'a std::path::Path,
    /// Interfaces are born here with IPv6 off (the agent made the namespace so).
    pub ipv6_off_by_default: bool,
    /// Made by the call that attaches: nothing in it but loopback (up) and the endpoints this
    /// call attached before, so nothing needs looking up first (a clash still fails safely).
    pub fresh: bool,
}

/// What an attach left in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ifname: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addresses: Vec<ipnet::IpNet>,
    /// This attach created the interface: if what follows fails, [`NetworkDriver::detach`]
    /// removes it again.
    pub created: bool,
}

/// One network driver. The agent calls, in order: [`require`](Self::require) before anything
/// else; [`ensure_network`](Self::ensure_network) (under the agent's network lock); then, for an
/// endpoint of a driver that [`attaches`](Self::attaches), [`attach`](Self::attach). Removal
/// does not know the driver (only an id), so [`remove_network`](Self::remove_network) and
/// [`detach`](Self::detach) are asked of every driver and find their objects by alias.
/// The defaults are those of a driver with nothing on the host.
#[async_trait::async_trait]
pub trait NetworkDriver: Send + Sync + std::fmt::Debug {
    /// Which driver of the contract this is.
    fn kind(&self) -> Driver;

    /// Refuses `net` when this kernel lacks a feature it needs ([`AgentError::Unsupported`]:
    /// FAILED_PRECONDITION naming the feature), or when this agent does not program the driver
    /// yet ([`AgentError::Unimplemented`]).
    fn require(&self, net: &Network, kernel: &Features) -> Result<(), AgentError>;

    /// Whether this agent programs the driver on a kernel with `kernel` (GetCapabilities'
    /// list of drivers).
    fn usable(&self, kernel: &Features) -> bool;

    /// Whether its networks have a device on the host (the bridge): reconciliation expects one,
    /// and the network's firewall rules match on it. Without one (macvlan, ipvlan) the agent
    /// programs no rules, sysctls or published ports for the network, and reconciliation
    /// expects no host side of its endpoints.
    fn host_device(&self) -> bool {
        false
    }

    /// Whether its endpoints get an interface in the sandbox; if not, Attach programs nothing
    /// (and does not open the sandbox's namespace).
    fn attaches(&self) -> bool {
        false
    }

    /// Creates or updates the network's objects on the host. Runs under the agent's network
    /// lock, so two attaches racing on a new network do not both create its device.
    async fn ensure_network(
        &self,
        _host: &Handle,
        net: &Network,
        _report: &mut Report,
    ) -> Result<NetworkSetup, AgentError> {
        Ok(NetworkSetup::nothing(net))
    }

    /// Whether the network's objects on the host that the survey's link dump cannot see (an
    /// overlay's FDB and neighbour entries) differ from `net`: a pass of the changes asks it of
    /// a network it would otherwise leave alone, and ensures the network when it says so (or
    /// cannot tell). Nothing beyond links by default.
    async fn drifted(&self, _host: &Handle, _net: &Network) -> bool {
        false
    }

    /// Removes the device `setup` names, which this call's `ensure_network` created, unless an
    /// endpoint joined it meanwhile (a failed request leaves nothing behind). Runs under the
    /// network lock.
    async fn undo_network(&self, _host: &Handle, _setup: &NetworkSetup) {}

    /// Removes every host object of network `network_id`; keeps going past failures (each one
    /// reported).
    async fn remove_network(&self, _host: &Handle, _network_id: &str, _report: &mut Report) {}

    /// Creates (or completes) the endpoint's interface in the sandbox with its name, MAC,
    /// addresses and routes. On failure, an interface this call created is removed again.
    async fn attach(
        &self,
        _host: &Handle,
        _sandbox: SandboxNs<'_>,
        _setup: &NetworkSetup,
        _net: &Network,
        _ep: &Endpoint,
        _report: &mut Report,
    ) -> Result<Attached, AgentError> {
        Err(unimplemented(self.kind()))
    }

    /// Removes the endpoint's interface. The sandbox's namespace may be gone already (then
    /// `sandbox` is `None`, and an interface that lived only there went with it). Absent:
    /// nothing to do.
    async fn detach(
        &self,
        _host: &Handle,
        _sandbox: Option<&Handle>,
        _endpoint_id: &str,
        _report: &mut Report,
    ) {
    }
}

/// FAILED_PRECONDITION naming `feature` unless the kernel has it (`ok`).
pub(super) fn need(driver: Driver, ok: bool, feature: &'static str) -> Result<(), AgentError> {
    if ok {
        Ok(())
    } else {
        Err(AgentError::Unsupported {
            driver: driver.name(),
            feature,
        })
    }
}

/// A parent named like a VLAN sub-interface (`eth0.10`, which the agent makes when missing)
/// needs 802.1Q (macvlan, ipvlan).
pub(super) fn need_vlan_parent(
    driver: Driver,
    net: &Network,
    kernel: &Features,
) -> Result<(), AgentError> {
    let vlan = matches!(weft_runtime::vlan::parse(&net.parent), Ok(Some(_)));
    need(driver, kernel.vlan || !vlan, "802.1Q VLAN sub-interfaces")
}

/// UNIMPLEMENTED: a driver this agent does not program yet.
pub(super) fn unimplemented(driver: Driver) -> AgentError {
    AgentError::Unimplemented {
        what: format!("the {} driver", driver.name()),
    }
}
