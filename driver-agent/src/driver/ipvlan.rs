//! The ipvlan driver (an ipvlan device on the network's parent per endpoint): not programmed
//! by this agent yet. A kernel without ipvlan (this project's CI kernel), or without 802.1Q
//! for a parent named like a VLAN sub-interface (`eth0.10`), is refused with
//! FAILED_PRECONDITION naming what is missing, before anything is sent; otherwise
//! UNIMPLEMENTED. The request it will send is built (and unit tested) here.

use rtnetlink::{
    LinkIpVlan,
    packet_route::link::{IpVlanFlags, IpVlanMode, LinkMessage},
};
use weft_proto::agent::v1 as pb;

use super::api::{NetworkDriver, need, need_vlan_parent, unimplemented};
use crate::{capabilities::Features, error::AgentError, spec::Driver, spec::Network};

#[derive(Debug, Clone, Copy)]
pub struct Ipvlan;

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
}

/// The RTM_NEWLINK message creating ipvlan device `name` on parent `parent_index`, born in the
/// sandbox namespace `netns_fd` with the endpoint's name.
pub fn new_link_message(
    name: &str,
    parent_index: u32,
    mode: pb::IpvlanMode,
    flag: pb::IpvlanFlag,
    mtu: u32,
    netns_fd: std::os::fd::RawFd,
) -> LinkMessage {
    let mode = match mode {
        pb::IpvlanMode::L3 => IpVlanMode::L3,
        pb::IpvlanMode::L3s => IpVlanMode::L3S,
        // L2 is Docker's default.
        pb::IpvlanMode::L2 | pb::IpvlanMode::Unspecified => IpVlanMode::L2,
    };
    let flags = match flag {
        pb::IpvlanFlag::Private => IpVlanFlags::Private,
        pb::IpvlanFlag::Vepa => IpVlanFlags::Vepa,
        // Bridge (Docker's default) is the absence of the other two.
        pb::IpvlanFlag::Bridge | pb::IpvlanFlag::Unspecified => IpVlanFlags::empty(),
    };
    let mut b = LinkIpVlan::new(name, parent_index, mode).flag(flags);
    if mtu != 0 {
        b = b.mtu(mtu);
    }
    b.setns_by_fd(netns_fd).build()
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoData, InfoIpVlan, InfoKind, LinkAttribute, LinkInfo};

    use super::*;

    #[test]
    fn ipvlan_message_names_parent_mode_flags_mtu_and_target_namespace() {
        let m = new_link_message(
            "eth1",
            7,
            pb::IpvlanMode::L3,
            pb::IpvlanFlag::Private,
            1400,
            42,
        );
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
        let m = new_link_message(
            "eth1",
            7,
            pb::IpvlanMode::L3s,
            pb::IpvlanFlag::Vepa,
            9000,
            42,
        );
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
    }

    #[test]
    fn ipvlan_defaults_are_dockers_l2_bridge() {
        let m = new_link_message(
            "eth0",
            3,
            pb::IpvlanMode::Unspecified,
            pb::IpvlanFlag::Unspecified,
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
