//! The overlay driver: a network spanning hosts. On each host with endpoints of the network,
//! the bridge driver's bridge (the gateway address on it) and veth pairs, plus one VXLAN device
//! enslaved to the bridge: `vxlan id VNI local VTEP dstport PORT nolearning proxy`, no group and
//! no remote. Frames for remote endpoints reach their hosts through static entries the gateway's
//! peer list dictates ([`peers`]): an FDB entry per remote MAC (its host's VTEP) and a permanent
//! neighbour entry per remote address (its MAC) on the VXLAN device.
//!
//! Why static entries and no flooding: the gateway knows every endpoint, so nothing has to be
//! learned (`nolearning`: a sandbox cannot poison the table with forged source MACs) and
//! nothing has to be flooded. ARP requests and IPv6 neighbour solicitations for remote
//! addresses are answered by the VXLAN device itself from its neighbour entries (`proxy`, as
//! Docker's overlay driver does), so there is no all-zeros FDB entry and no broadcast or
//! multicast crosses hosts: a sandbox's broadcast stays on its own host, a host is never sent
//! frames for endpoints it does not have, and the cost per host is two entries per remote
//! endpoint. The price: broadcast and multicast applications (mDNS, say) see only the
//! endpoints on their own host, as with Docker's overlay.
//!
//! Why a distributed gateway: every host's bridge carries the network's gateway address (ARP
//! for it is answered by the local bridge; the VXLAN device answers only for peers, so the
//! gateway's address never crosses hosts), and traffic to the outside leaves through the
//! sandbox's own host, masqueraded by the same nftables rules as a bridge network's. No host is
//! a choke point or a single point of failure, no traffic crosses the overlay twice, published
//! ports work on the sandbox's host like a bridge's, and `--internal` and isolation between
//! networks are the bridge rules, which match on the bridge (the VXLAN device is one of its
//! ports). A per-network gateway host would instead need its own high availability and carry
//! every network's outbound traffic.
//!
//! The tunnel endpoint: the first underlay address (as `GetCapabilities` reports them) of the
//! family of the peers' VTEPs (IPv4 when there are no peers yet and the host has one); the
//! gateway takes the same address as this host's VTEP. The MTU: the underlay link's minus the
//! encapsulation (50 bytes over IPv4, 70 over IPv6) unless the network sets one; the bridge, the
//! VXLAN device and both ends of every veth get it.
//!
//! The devices go with the network: when the last endpoint on this host leaves, the gateway's
//! desired state for the host stops naming the network and reconciliation removes it (as for a
//! bridge network); RemoveNetwork removes it at once.

mod peers;

use std::net::IpAddr;

use futures::TryStreamExt as _;
use nix::libc;
use rtnetlink::{
    Handle, LinkVxlan,
    packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
};

use super::{
    api::{Attached, NetworkDriver, NetworkSetup, NetworkState, SandboxNs, need},
    bridge,
};
use crate::{
    capabilities::Features,
    error::{AgentError, errno},
    kernel::{self, Link},
    names,
    report::{Action, Kind, Report},
    spec::{Driver, Endpoint, Network, OverlaySpec},
};

/// The encapsulation's cost: outer IPv4 (20) or IPv6 (40) header, UDP (8), VXLAN (8) and the
/// inner Ethernet header (14).
pub const OVERHEAD_IPV4: u32 = 50;
pub const OVERHEAD_IPV6: u32 = 70;

#[derive(Debug, Clone, Copy)]
pub struct Overlay;

#[async_trait::async_trait]
impl NetworkDriver for Overlay {
    fn kind(&self) -> Driver {
        Driver::Overlay
    }

    fn require(&self, _net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.vxlan, "VXLAN devices")?;
        need(self.kind(), kernel.bridge, "Linux bridges")?;
        need(self.kind(), kernel.veth, "veth pairs")
    }

    fn usable(&self, kernel: &Features) -> bool {
        kernel.vxlan && kernel.bridge && kernel.veth
    }

    fn host_device(&self) -> bool {
        true
    }

    fn attaches(&self) -> bool {
        true
    }

    async fn ensure_network(
        &self,
        host: &Handle,
        net: &Network,
        report: &mut Report,
    ) -> Result<NetworkSetup, AgentError> {
        let ov = overlay_of(net)?;
        let want = Wanted::find(host, net, ov).await?;
        let br = bridge::ensure_bridge(host, net, want.mtu, report).await?;
        let vx = ensure_vxlan(host, net, ov, &want, &br, report).await?;
        let found = peers::read(host, &vx).await?;
        let plan = peers::plan(&ov.peers, want.local, &found);
        if !plan.is_empty() {
            let before = report.changes.len();
            let res = peers::apply(host, &vx, &plan, &net.id, &mut report.changes).await;
            tracing::info!(
                network = %net.id,
                vxlan = %vx.name,
                changed = report.changes.len() - before,
                "overlay peers programmed"
            );
            res?;
        }
        Ok(NetworkSetup {
            state: NetworkState {
                devices: vec![br.name.clone(), vx.name.clone()],
                mtu: want.mtu,
            },
            device: Some(br),
        })
    }

    async fn drifted(&self, host: &Handle, net: &Network) -> bool {
        match in_order(host, net).await {
            Ok(ok) => !ok,
            Err(e) => {
                tracing::warn!(network = %net.id, error = %e, "cannot check the overlay's devices");
                true
            }
        }
    }

    /// Removes the VXLAN device and the bridge this request created, unless an endpoint
    /// joined the bridge meanwhile.
    async fn undo_network(&self, host: &Handle, setup: &NetworkSetup) {
        let Some(br) = &setup.device else { return };
        let Some(id) = names::network_of_alias(&br.alias) else {
            return;
        };
        match kernel::links(host).await {
            Ok(all) => {
                let joined = all.iter().any(|l| {
                    l.controller == Some(br.index) && names::endpoint_of_alias(&l.alias).is_some()
                });
                if joined {
                    return;
                }
                let alias = names::vxlan_alias(id);
                for vx in all.iter().filter(|l| l.alias == alias) {
                    if let Err(e) = kernel::delete_link(host, vx).await {
                        tracing::warn!(vxlan = %vx.name, error = %e, "cannot undo a failed attach");
                    }
                }
                bridge::undo_network(host, br).await;
            }
            Err(e) => tracing::warn!(bridge = %br.name, error = %e, "cannot undo a failed attach"),
        }
    }

    /// The VXLAN device (with its FDB and neighbour entries); the bridge driver removes the
    /// bridge and the veths, found by their own aliases.
    async fn remove_network(&self, host: &Handle, network_id: &str, report: &mut Report) {
        let all = match kernel::links(host).await {
            Ok(l) => l,
            Err(e) => {
                report.fail(Kind::Link, "links", network_id, &e);
                return;
            }
        };
        let alias = names::vxlan_alias(network_id);
        for vx in all.iter().filter(|l| l.alias == alias) {
            bridge::delete(host, vx, network_id, report).await;
        }
    }

    async fn attach(
        &self,
        host: &Handle,
        sandbox: SandboxNs<'_>,
        setup: &NetworkSetup,
        net: &Network,
        ep: &Endpoint,
        report: &mut Report,
    ) -> Result<Attached, AgentError> {
        let br = setup.device.as_ref().ok_or_else(|| AgentError::Vanished {
            name: net.bridge.clone(),
        })?;
        match &ep.handoff {
            Some(name) => bridge::attach_handoff(host, br, ep, name, setup.state.mtu, report).await,
            None => bridge::attach_veth(host, sandbox, br, ep, setup.state.mtu, report).await,
        }
    }
}

/// The overlay side of `net` (every overlay network converted from the contract has one).
fn overlay_of(net: &Network) -> Result<&OverlaySpec, AgentError> {
    net.overlay.as_ref().ok_or_else(|| {
        AgentError::Invalid(vec![weft_runtime::FieldViolation::new(
            "network.vni",
            "0",
            "an overlay network needs its VXLAN side",
        )])
    })
}

/// What the network needs from this host: its tunnel endpoint and the MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    local: IpAddr,
    mtu: u32,
}

impl Wanted {
    async fn find(host: &Handle, net: &Network, ov: &OverlaySpec) -> Result<Self, AgentError> {
        let (local, underlay) = match ov.underlay_is_ipv6() {
            Some(v6) => kernel::first_underlay_address(host, v6).await?,
            None => match kernel::first_underlay_address(host, false).await? {
                Some(found) => Some(found),
                None => kernel::first_underlay_address(host, true).await?,
            },
        }
        .ok_or(AgentError::NoUnderlay {
            family: match ov.underlay_is_ipv6() {
                Some(true) => "IPv6",
                Some(false) => "IPv4",
                None => "IPv4 or IPv6",
            },
        })?;
        let mtu = if net.mtu != 0 {
            net.mtu
        } else {
            derived_mtu(underlay.mtu, local)
        };
        Ok(Self { local, mtu })
    }
}

/// The underlay's MTU minus the encapsulation of `local`'s family (at least IPv4's minimum).
pub fn derived_mtu(underlay: u32, local: IpAddr) -> u32 {
    let overhead = if local.is_ipv6() {
        OVERHEAD_IPV6
    } else {
        OVERHEAD_IPV4
    };
    underlay.saturating_sub(overhead).max(68)
}

/// What the agent sets on a VXLAN device, as read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    pub port: u16,
    pub learning: bool,
    pub proxy: bool,
}

impl VxlanConfig {
    fn wanted(ov: &OverlaySpec, local: IpAddr) -> Self {
        Self {
            vni: ov.vni,
            local: Some(local),
            remote: None,
            port: ov.port,
            learning: false,
            proxy: true,
        }
    }

    /// A VXLAN link's settings (`None` for another kind of link).
    pub fn of(m: &LinkMessage) -> Option<Self> {
        let data = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
                _ => None,
            }),
            _ => None,
        })?;
        let mut c = Self {
            vni: 0,
            local: None,
            remote: None,
            // (The kernel's defaults when the attributes are missing.)
            port: 8472,
            learning: true,
            proxy: false,
        };
        for d in data {
            match d {
                InfoVxlan::Id(v) => c.vni = *v,
                InfoVxlan::Local(a) if !a.is_unspecified() => c.local = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) if !a.is_unspecified() => c.local = Some(IpAddr::V6(*a)),
                InfoVxlan::Group(a) if !a.is_unspecified() => c.remote = Some(IpAddr::V4(*a)),
                InfoVxlan::Group6(a) if !a.is_unspecified() => c.remote = Some(IpAddr::V6(*a)),
                InfoVxlan::Port(p) => c.port = *p,
                InfoVxlan::Learning(b) => c.learning = *b,
                InfoVxlan::Proxy(b) => c.proxy = *b,
                _ => {}
            }
        }
        Some(c)
    }
}

/// `ip link add NAME mtu MTU master BRIDGE type vxlan id VNI local VTEP dstport PORT
/// nolearning proxy`: no group, no remote (unicast to the FDB's destinations only).
pub fn vxlan_message(
    name: &str,
    c: &VxlanConfig,
    local: IpAddr,
    mtu: u32,
    bridge: u32,
) -> LinkMessage {
    let b = LinkVxlan::new(name, c.vni);
    let b = match local {
        IpAddr::V4(a) => b.local(a),
        IpAddr::V6(a) => b.local6(a),
    };
    b.port(c.port)
        .learning(c.learning)
        .proxy(c.proxy)
        .mtu(mtu)
        .controller(bridge)
        .build()
}

/// The link called `name` and, if it is a VXLAN device, its settings.
async fn find_vxlan(
    host: &Handle,
    name: &str,
) -> Result<Option<(Link, Option<VxlanConfig>)>, AgentError> {
    let mut s = host.link().get().match_name(name).execute();
    match s.try_next().await {
        Ok(Some(m)) => {
            let c = VxlanConfig::of(&m);
            Ok(Some((Link::from(m), c)))
        }
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(AgentError::netlink("look up link", name)(e)),
    }
}

/// Creates or repairs the network's VXLAN device: ours (by alias, or unmarked with a derived
/// name), with the wanted settings (a device made for other ones, after a VNI, port or address
/// change, is made again: those cannot be changed in place), in the bridge, up, with the MTU.
async fn ensure_vxlan(
    host: &Handle,
    net: &Network,
    ov: &OverlaySpec,
    want: &Wanted,
    br: &Link,
    report: &mut Report,
) -> Result<Link, AgentError> {
    let alias = names::vxlan_alias(&net.id);
    let config = VxlanConfig::wanted(ov, want.local);
    let mut created = false;
    let mut found = find_vxlan(host, &ov.vxlan).await?;
    if let Some((l, c)) = &found {
        let unmarked_ours = l.alias.is_empty() && ov.vxlan.starts_with(names::VXLAN_PREFIX);
        if l.alias != alias && !unmarked_ours {
            return Err(AgentError::NotOurs {
                name: l.name.clone(),
                alias: l.alias.clone(),
            });
        }
        if *c != Some(config) {
            tracing::info!(vxlan = %l.name, network = %net.id, found = ?c, wanted = ?config, "VXLAN device made again");
            if kernel::delete_link(host, l).await? {
                report.change(Action::Removed, Kind::Link, &l.name, &net.id);
            }
            found = None;
        }
    }
    let mut vx = match found {
        Some((l, _)) => l,
        None => {
            let msg = vxlan_message(&ov.vxlan, &config, want.local, want.mtu, br.index);
            match host.link().add(msg).execute().await {
                Ok(()) => {
                    tracing::info!(vxlan = %ov.vxlan, vni = ov.vni, network = %net.id, "VXLAN device created");
                    report.change(Action::Created, Kind::Link, &ov.vxlan, &net.id);
                    created = true;
                }
                // Another device has the name (a race: the checks below decide) or the VNI
                // (refused by the kernel: reported as it says it).
                Err(e) if errno(&e) == Some(libc::EEXIST) => {
                    if kernel::link_by_name(host, &ov.vxlan).await?.is_none() {
                        return Err(AgentError::netlink(
                            "create VXLAN device (its VNI is another device's)",
                            format!("{} (VNI {})", ov.vxlan, ov.vni),
                        )(e));
                    }
                }
                Err(e) => return Err(AgentError::netlink("create VXLAN device", &ov.vxlan)(e)),
            }
            match find_vxlan(host, &ov.vxlan).await? {
                Some((l, c)) if (l.alias == alias || created) && c == Some(config) => l,
                Some((l, _)) => {
                    return Err(AgentError::NotOurs {
                        name: l.name,
                        alias: l.alias,
                    });
                }
                None => {
                    return Err(AgentError::Vanished {
                        name: ov.vxlan.clone(),
                    });
                }
            }
        }
    };
    if vx.alias != alias {
        // Alias, no IPv6 address of its own (it would only send solicitations and reports
        // into the bridge), then up.
        kernel::set_port_alias_up(host, &vx.name, &alias).await?;
        vx.alias = alias;
        vx.up = true;
    }
    if vx.controller != Some(br.index) || !vx.up {
        bridge::enslave_up(host, &vx, br).await?;
        vx.controller = Some(br.index);
        vx.up = true;
    }
    if vx.mtu != want.mtu {
        kernel::set_mtu(host, &vx, want.mtu).await?;
        if !created {
            report.changes.push(crate::report::Change {
                action: Action::Updated,
                kind: Kind::Link,
                object: vx.name.clone(),
                owner: net.id.clone(),
                detail: format!("mtu {} -> {}", vx.mtu, want.mtu),
            });
        }
        vx.mtu = want.mtu;
    }
    Ok(vx)
}

/// Whether the network's devices and entries are as `net` wants them (what a pass of the
/// changes cannot see from its link survey).
async fn in_order(host: &Handle, net: &Network) -> Result<bool, AgentError> {
    let ov = overlay_of(net)?;
    let want = Wanted::find(host, net, ov).await?;
    let Some(br) = kernel::link_by_name(host, &net.bridge).await? else {
        return Ok(false);
    };
    let Some((vx, config)) = find_vxlan(host, &ov.vxlan).await? else {
        return Ok(false);
    };
    let devices_ok = br.mtu == want.mtu
        && vx.alias == names::vxlan_alias(&net.id)
        && vx.up
        && vx.controller == Some(br.index)
        && vx.mtu == want.mtu
        && config == Some(VxlanConfig::wanted(ov, want.local));
    if !devices_ok {
        return Ok(false);
    }
    let found = peers::read(host, &vx).await?;
    Ok(peers::plan(&ov.peers, want.local, &found).is_empty())
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};

    use super::*;

    fn config() -> VxlanConfig {
        VxlanConfig {
            vni: 4242,
            local: Some("198.51.100.1".parse().unwrap()),
            remote: None,
            port: 4789,
            learning: false,
            proxy: true,
        }
    }

    #[test]
    fn vxlan_message_has_id_local_port_nolearning_proxy_mtu_and_bridge() {
        let m = vxlan_message(
            "wfx-n1",
            &config(),
            "198.51.100.1".parse().unwrap(),
            1450,
            5,
        );
        let a = &m.attributes;
        assert!(a.contains(&LinkAttribute::IfName("wfx-n1".into())), "{a:?}");
        assert!(a.contains(&LinkAttribute::Mtu(1450)), "{a:?}");
        assert!(a.contains(&LinkAttribute::Controller(5)), "{a:?}");
        let info = a
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Vxlan)), "{info:?}");
        let data = info
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
                _ => None,
            })
            .expect("IFLA_INFO_DATA");
        assert_eq!(
            data,
            &[
                InfoVxlan::Id(4242),
                InfoVxlan::Local("198.51.100.1".parse().unwrap()),
                InfoVxlan::Port(4789),
                InfoVxlan::Learning(false),
                InfoVxlan::Proxy(true),
            ]
        );
        // No group or remote: frames go only where the FDB sends them.
        assert!(!data.iter().any(|d| matches!(
            d,
            InfoVxlan::Group(_) | InfoVxlan::Group6(_) | InfoVxlan::Link(_)
        )));
        // Read back, the message gives the settings it was made from.
        assert_eq!(VxlanConfig::of(&m), Some(config()));
    }

    #[test]
    fn vxlan_request_survives_the_wire_format_with_an_ipv6_endpoint() {
        use rtnetlink::{
            packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage},
            packet_route::RouteNetlinkMessage,
        };
        let local: IpAddr = "2001:db8::1".parse().unwrap();
        let c = VxlanConfig {
            local: Some(local),
            port: 8472,
            ..config()
        };
        let m = vxlan_message("vx0", &c, local, 1430, 9);
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(m.clone()));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let rtnetlink::packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(
            back,
        )) = back.payload
        else {
            panic!("not a NewLink: {back:?}");
        };
        assert_eq!(VxlanConfig::of(&back), Some(c));
    }

    #[test]
    fn the_mtu_leaves_room_for_the_encapsulation_of_the_underlays_family() {
        assert_eq!(derived_mtu(1500, "198.51.100.1".parse().unwrap()), 1450);
        assert_eq!(derived_mtu(1500, "2001:db8::1".parse().unwrap()), 1430);
        assert_eq!(derived_mtu(9000, "198.51.100.1".parse().unwrap()), 8950);
        assert_eq!(derived_mtu(60, "198.51.100.1".parse().unwrap()), 68);
    }
}
