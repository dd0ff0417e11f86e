//! The ipvlan driver (an ipvlan device per endpoint on the network's parent, born in the
//! sandbox with the network's mode and flag): not enabled by this agent yet. A kernel without
//! ipvlan (this project's CI kernel), or without 802.1Q for a parent named like a VLAN
//! sub-interface (`eth0.10`), is refused with FAILED_PRECONDITION naming what is missing,
//! before anything is sent; a kernel with ipvlan with UNIMPLEMENTED (nothing here has run
//! against one, and L3 modes want a route through the device rather than via a gateway). Its
//! attach is the path macvlan runs (`on_parent.rs`) with the message built and unit tested
//! here; called directly, it creates the device in the sandbox.

use std::os::fd::RawFd;

use rtnetlink::{
    Handle, LinkIpVlan,
    packet_route::link::{InfoKind, IpVlanFlags, IpVlanMode, LinkMessage},
};

use super::{
    api::{
        Attached, NetworkDriver, NetworkSetup, SandboxNs, need, need_vlan_parent, unimplemented,
    },
    on_parent::{self, Child},
};
use crate::{
    capabilities::Features,
    error::AgentError,
    report::Report,
    spec::{Driver, Endpoint, IpvlanFlag, IpvlanMode, Network},
};

#[derive(Debug, Clone, Copy)]
pub struct Ipvlan;

const CHILD: Child = Child {
    kind: InfoKind::IpVlan,
    create: "create ipvlan",
    message: message_for,
};

/// (An ipvlan device has its parent's address: the endpoint's MAC is not asked for.)
fn message_for(net: &Network, ep: &Endpoint, parent_index: u32, netns_fd: RawFd) -> LinkMessage {
    new_link_message(
        &ep.ifname,
        parent_index,
        net.ipvlan_mode,
        net.ipvlan_flag,
        net.mtu,
        netns_fd,
    )
}

#[async_trait::async_trait]
impl NetworkDriver for Ipvlan {
    fn kind(&self) -> Driver {
        Driver::Ipvlan
    }

    fn require(&self, net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.ipvlan, "ipvlan devices")?;
        need_vlan_parent(self.kind(), net, kernel)?;
        Err(unimplemented(self.kind()))
    }

    fn usable(&self, _kernel: &Features) -> bool {
        false
    }

    fn attaches(&self) -> bool {
        true
    }

    async fn attach(
        &self,
        host: &Handle,
        sandbox: SandboxNs<'_>,
        _setup: &NetworkSetup,
        net: &Network,
        ep: &Endpoint,
        report: &mut Report,
    ) -> Result<Attached, AgentError> {
        on_parent::attach(&CHILD, host, sandbox, net, ep, report).await
    }

    async fn detach(
        &self,
        _host: &Handle,
        sandbox: Option<&Handle>,
        endpoint_id: &str,
        report: &mut Report,
    ) {
        on_parent::detach(&CHILD, sandbox, endpoint_id, report).await;
    }
}

/// The RTM_NEWLINK message creating ipvlan device `name` on parent `parent_index`, born in the
/// sandbox namespace `netns_fd` with the endpoint's name.
pub fn new_link_message(
    name: &str,
    parent_index: u32,
    mode: IpvlanMode,
    flag: IpvlanFlag,
    mtu: u32,
    netns_fd: RawFd,
) -> LinkMessage {
    let mode = match mode {
        IpvlanMode::L2 => IpVlanMode::L2,
        IpvlanMode::L3 => IpVlanMode::L3,
        IpvlanMode::L3s => IpVlanMode::L3S,
    };
    let flags = match flag {
        IpvlanFlag::Private => IpVlanFlags::Private,
        IpvlanFlag::Vepa => IpVlanFlags::Vepa,
        // Bridge (Docker's default) is the absence of the other two.
        IpvlanFlag::Bridge => IpVlanFlags::empty(),
    };
    let mut b = LinkIpVlan::new(name, parent_index, mode).flag(flags);
    if mtu != 0 {
        b = b.mtu(mtu);
    }
    b.setns_by_fd(netns_fd).build()
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoData, InfoIpVlan, LinkAttribute, LinkInfo};

    use super::*;

    #[test]
    fn ipvlan_message_names_parent_mode_flags_mtu_and_target_namespace() {
        let m = new_link_message("eth1", 7, IpvlanMode::L3, IpvlanFlag::Private, 1400, 42);
        let a = &m.attributes;
        assert!(a.contains(&LinkAttribute::IfName("eth1".into())), "{a:?}");
        assert!(a.contains(&LinkAttribute::Link(7)), "{a:?}");
        assert!(a.contains(&LinkAttribute::Mtu(1400)), "{a:?}");
        assert!(a.contains(&LinkAttribute::NetNsFd(42)), "{a:?}");
        let info = a
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::IpVlan)), "{info:?}");
        assert!(
            info.contains(&LinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(IpVlanMode::L3),
                InfoIpVlan::Flags(IpVlanFlags::Private),
            ]))),
            "{info:?}"
        );
    }

    #[test]
    fn ipvlan_request_survives_the_wire_format() {
        use rtnetlink::{
            packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage},
            packet_route::RouteNetlinkMessage,
        };
        let m = new_link_message("eth1", 7, IpvlanMode::L3s, IpvlanFlag::Vepa, 9000, 42);
        // The RTM_NEWLINK request exactly as `handle.link().add(m)` would send it.
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(m.clone()));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(back.header.flags, req.header.flags);
        assert_eq!(
            back.payload,
            rtnetlink::packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
        );
        // linux/if_link.h, as the kernel reads them (native byte order): IFLA_IPVLAN_MODE (1)
        // and IFLA_IPVLAN_FLAGS (2) as u16 (IPVLAN_MODE_L3S = 2, IPVLAN_F_VEPA = 2), padded to
        // four bytes; the kind "ipvlan"; IFLA_LINK (5) = 7; IFLA_NET_NS_FD (28) = 42.
        let u16_attr = |kind: u16, value: u16| -> Vec<u8> {
            [
                &6u16.to_ne_bytes()[..],
                &kind.to_ne_bytes(),
                &value.to_ne_bytes(),
                &[0, 0],
            ]
            .concat()
        };
        let u32_attr = |kind: u16, value: u32| -> Vec<u8> {
            [
                &8u16.to_ne_bytes()[..],
                &kind.to_ne_bytes(),
                &value.to_ne_bytes(),
            ]
            .concat()
        };
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        let data = [u16_attr(1, 2), u16_attr(2, 2)].concat();
        assert!(has(&data), "IFLA_IPVLAN_MODE l3s, IFLA_IPVLAN_FLAGS vepa");
        assert!(has(b"ipvlan\0"), "IFLA_INFO_KIND");
        assert!(has(&u32_attr(5, 7)), "IFLA_LINK");
        assert!(has(&u32_attr(28, 42)), "IFLA_NET_NS_FD");
    }

    #[test]
    fn ipvlan_defaults_are_dockers_l2_bridge() {
        let m = new_link_message(
            "eth0",
            3,
            IpvlanMode::default(),
            IpvlanFlag::default(),
            0,
            9,
        );
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Mtu(_)))
        );
        let info = m
            .attributes
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Data(InfoData::IpVlan(vec![
            InfoIpVlan::Mode(IpVlanMode::L2),
            InfoIpVlan::Flags(IpVlanFlags::empty()),
        ]))));
    }
}
