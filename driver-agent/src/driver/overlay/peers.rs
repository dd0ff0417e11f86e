//! An overlay network's peers in the kernel: one FDB entry per remote endpoint on the VXLAN
//! device (its MAC to its host's VTEP, `self permanent`) and one permanent neighbour entry per
//! remote address (its IP to its MAC, on the same device, which answers ARP and neighbour
//! solicitations from them: `proxy`). What the kernel holds is read back (two dumps filtered
//! to the device), compared with the peer list, which is the full set ([`plan`], a pure
//! function), and only the difference is sent.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use futures::StreamExt as _;
use nix::libc;
use rtnetlink::{
    Handle,
    packet_core::DefaultNla,
    packet_route::{
        AddressFamily,
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
    },
};

use crate::{
    error::{AgentError, errno},
    kernel::{self, Link},
    names,
    report::{Action, Change, Kind},
    spec::Peer,
};

/// Requests in flight at once while programming (a network may list tens of thousands of
/// peers; one at a time, the first ensure would take seconds).
const IN_FLIGHT: usize = 64;

/// The VXLAN device's own FDB entries and its neighbour entries, as the kernel shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// MAC -> (VTEP, permanent).
    pub fdb: BTreeMap<[u8; 6], (Option<IpAddr>, bool)>,
    /// Address -> (MAC, permanent).
    pub neighbours: BTreeMap<IpAddr, (Option<[u8; 6]>, bool)>,
}

/// What to send to bring [`Programmed`] to the peer list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (MAC, VTEP, whether an entry for the MAC is there already and is replaced).
    pub fdb_put: Vec<([u8; 6], IpAddr, bool)>,
    pub fdb_del: Vec<[u8; 6]>,
    /// (address, MAC, whether replacing).
    pub neighbour_put: Vec<(IpAddr, [u8; 6], bool)>,
    pub neighbour_del: Vec<IpAddr>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.fdb_put.is_empty()
            && self.fdb_del.is_empty()
            && self.neighbour_put.is_empty()
            && self.neighbour_del.is_empty()
    }
}

/// The difference between what the kernel holds and `peers`. A peer whose VTEP is this host's
/// own (`local`) is left out: its frames would come back to this device.
pub fn plan(peers: &[Peer], local: IpAddr, found: &Programmed) -> Plan {
    let peers: Vec<&Peer> = peers.iter().filter(|p| p.vtep != local).collect();
    let mut out = Plan::default();
    let mut macs = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for p in &peers {
        macs.insert(p.mac);
        match found.fdb.get(&p.mac) {
            Some((Some(dst), true)) if *dst == p.vtep => {}
            there => out.fdb_put.push((p.mac, p.vtep, there.is_some())),
        }
        for ip in p.addresses() {
            addresses.insert(ip);
            match found.neighbours.get(&ip) {
                Some((Some(mac), true)) if *mac == p.mac => {}
                there => out.neighbour_put.push((ip, p.mac, there.is_some())),
            }
        }
    }
    out.fdb_del = found
        .fdb
        .keys()
        .filter(|m| !macs.contains(*m))
        .copied()
        .collect();
    out.neighbour_del = found
        .neighbours
        .keys()
        .filter(|ip| !addresses.contains(*ip))
        .copied()
        .collect();
    out
}

/// What the kernel holds for the VXLAN device `vx`.
pub async fn read(host: &Handle, vx: &Link) -> Result<Programmed, AgentError> {
    let mut out = Programmed::default();
    let fdb: Vec<NeighbourMessage> = kernel::dump(|| {
        let mut req = host.neighbours().get();
        *req.message_mut() = fdb_dump_request(vx.index);
        req.execute()
    })
    .await
    .map_err(AgentError::netlink("list the FDB of", &vx.name))?;
    for m in fdb {
        // (The bridge's entries for the device as its port are the bridge's, not ours.)
        if m.header.ifindex != vx.index || !m.header.flags.contains(NeighbourFlags::Own) {
            continue;
        }
        if let Some(mac) = lladdr(&m) {
            let permanent = m.header.state == NeighbourState::Permanent;
            out.fdb.insert(mac, (destination(&m), permanent));
        }
    }
    let neighbours: Vec<NeighbourMessage> = kernel::dump(|| {
        let mut req = host.neighbours().get();
        *req.message_mut() = neighbour_dump_request(vx.index);
        req.execute()
    })
    .await
    .map_err(AgentError::netlink("list the neighbours of", &vx.name))?;
    for m in neighbours {
        if m.header.ifindex != vx.index {
            continue;
        }
        if let Some(ip) = destination(&m) {
            let permanent = m.header.state == NeighbourState::Permanent;
            out.neighbours.insert(ip, (lladdr(&m), permanent));
        }
    }
    Ok(out)
}

/// One request of a plan.
#[derive(Debug, Clone, Copy)]
enum Op {
    FdbPut([u8; 6], IpAddr, bool),
    FdbDel([u8; 6]),
    NeighbourPut(IpAddr, [u8; 6], bool),
    NeighbourDel(IpAddr),
}

/// Sends `plan` (removals first, so that an address or MAC that moved to another peer is free
/// again), a few requests in flight at once. Every request is tried; each one made is a change
/// in `changes`; the first failure is returned.
pub async fn apply(
    host: &Handle,
    vx: &Link,
    plan: &Plan,
    owner: &str,
    changes: &mut Vec<Change>,
) -> Result<(), AgentError> {
    let removals = plan
        .fdb_del
        .iter()
        .map(|m| Op::FdbDel(*m))
        .chain(plan.neighbour_del.iter().map(|ip| Op::NeighbourDel(*ip)));
    let puts = plan
        .fdb_put
        .iter()
        .map(|(m, d, r)| Op::FdbPut(*m, *d, *r))
        .chain(
            plan.neighbour_put
                .iter()
                .map(|(ip, m, r)| Op::NeighbourPut(*ip, *m, *r)),
        );
    let mut first_error = None;
    for ops in [removals.collect::<Vec<_>>(), puts.collect()] {
        let results: Vec<Result<Option<Change>, AgentError>> = futures::stream::iter(ops)
            .map(|op| send(host, vx, op, owner))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(Some(c)) => changes.push(c),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One request; a removal of what is gone already changes nothing.
async fn send(host: &Handle, vx: &Link, op: Op, owner: &str) -> Result<Option<Change>, AgentError> {
    let change = |action, kind, object: String| Change {
        action,
        kind,
        object,
        owner: owner.to_owned(),
        detail: String::new(),
    };
    let put = |replacing| {
        if replacing {
            Action::Updated
        } else {
            Action::Created
        }
    };
    match op {
        Op::FdbPut(mac, dst, replacing) => {
            let object = fdb_object(mac, dst, &vx.name);
            let mut req = host.neighbours().add_bridge(vx.index, &mac).replace();
            *req.message_mut() = fdb_entry(vx.index, mac, dst);
            req.execute()
                .await
                .map_err(AgentError::netlink("add FDB entry", &object))?;
            Ok(Some(change(put(replacing), Kind::FdbEntry, object)))
        }
        Op::FdbDel(mac) => {
            let object = format!("{} dev {}", names::format_mac(&mac), vx.name);
            match host
                .neighbours()
                .del(fdb_key(vx.index, mac))
                .execute()
                .await
            {
                Ok(()) => Ok(Some(change(Action::Removed, Kind::FdbEntry, object))),
                Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(None),
                Err(e) => Err(AgentError::netlink("remove FDB entry", object)(e)),
            }
        }
        Op::NeighbourPut(ip, mac, replacing) => {
            let object = neighbour_object(ip, mac, &vx.name);
            let mut req = host.neighbours().add(vx.index, ip).replace();
            *req.message_mut() = neighbour_entry(vx.index, ip, mac);
            req.execute()
                .await
                .map_err(AgentError::netlink("add neighbour", &object))?;
            Ok(Some(change(put(replacing), Kind::Neighbour, object)))
        }
        Op::NeighbourDel(ip) => {
            let object = format!("{ip} dev {}", vx.name);
            match host
                .neighbours()
                .del(neighbour_key(vx.index, ip))
                .execute()
                .await
            {
                Ok(()) => Ok(Some(change(Action::Removed, Kind::Neighbour, object))),
                Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(None),
                Err(e) => Err(AgentError::netlink("remove neighbour", object)(e)),
            }
        }
    }
}

fn fdb_object(mac: [u8; 6], dst: IpAddr, dev: &str) -> String {
    format!("{} dst {dst} dev {dev}", names::format_mac(&mac))
}

fn neighbour_object(ip: IpAddr, mac: [u8; 6], dev: &str) -> String {
    format!("{ip} lladdr {} dev {dev}", names::format_mac(&mac))
}

fn address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

/// `bridge fdb replace MAC dev VX dst VTEP self permanent`: the device's own entry (NTF_SELF;
/// without it the kernel would give the entry to the bridge the device is a port of).
pub fn fdb_entry(vx: u32, mac: [u8; 6], dst: IpAddr) -> NeighbourMessage {
    let mut m = fdb_key(vx, mac);
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(address(dst)));
    m
}

/// What names one of the device's own FDB entries, for its removal (every destination of the
/// MAC goes).
pub fn fdb_key(vx: u32, mac: [u8; 6]) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vx;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// `ip neigh replace IP lladdr MAC dev VX nud permanent`.
pub fn neighbour_entry(vx: u32, ip: IpAddr, mac: [u8; 6]) -> NeighbourMessage {
    let mut m = neighbour_key(vx, ip);
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

pub fn neighbour_key(vx: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(ip);
    m.header.ifindex = vx;
    m.attributes
        .push(NeighbourAttribute::Destination(address(ip)));
    m
}

/// A dump of the FDB entries of device `vx` only. The kernel reads a bridge-family dump
/// request that is longer than an `ndmsg` as an `ifinfomsg` (what iproute2's `bridge fdb show
/// dev X` sends), whose `ifi_index`, the port to dump, sits where `ndm_ifindex` does: an empty
/// attribute pads the 12-byte `ndmsg` to the 16 bytes of an `ifinfomsg`. (Without the filter
/// the kernel walks the bridge's whole table once per port; entries are filtered here too.)
pub fn fdb_dump_request(vx: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vx;
    m.attributes
        .push(NeighbourAttribute::Other(DefaultNla::new(0, Vec::new())));
    m
}

/// A dump of the neighbour entries (both families) of device `vx` only (`NDA_IFINDEX`).
pub fn neighbour_dump_request(vx: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.attributes.push(NeighbourAttribute::IfIndex(vx));
    m
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })
}

/// The entry's IP address: a neighbour's, or an FDB entry's remote VTEP (the bridge family
/// leaves its bytes undecoded).
fn destination(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::{
        packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage},
        packet_route::RouteNetlinkMessage,
    };

    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(id: &str, mac: [u8; 6], v4: &str, vtep: &str) -> Peer {
        Peer {
            endpoint_id: id.into(),
            mac,
            ipv4: Some(v4.parse().unwrap()),
            ipv6: None,
            vtep: ip(vtep),
        }
    }

    /// The request's bytes as the kernel receives them, after the netlink header.
    fn wire(m: NeighbourMessage, dump: bool) -> Vec<u8> {
        let mut req = NetlinkMessage::from(if dump {
            RouteNetlinkMessage::GetNeighbour(m)
        } else {
            RouteNetlinkMessage::NewNeighbour(m)
        });
        req.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);
        bytes[16..].to_vec()
    }

    #[test]
    fn fdb_entry_is_the_devices_own_permanent_entry_to_the_vtep() {
        let m = fdb_entry(7, A, ip("198.51.100.2"));
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.ifindex, 7);
        assert_eq!(m.header.flags, NeighbourFlags::Own);
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert_eq!(
            m.attributes,
            [
                NeighbourAttribute::LinkLayerAddress(A.to_vec()),
                NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    "198.51.100.2".parse().unwrap()
                )),
            ]
        );
        // On the wire: ndmsg {AF_BRIDGE, ifindex 7, NUD_PERMANENT, NTF_SELF}, then NDA_LLADDR
        // (6 bytes, padded) and NDA_DST (4 bytes).
        let b = wire(m, false);
        assert_eq!(b[0], libc::AF_BRIDGE as u8);
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(u16::from_ne_bytes([b[8], b[9]]), 0x80, "NUD_PERMANENT");
        assert_eq!(b[10], 0x02, "NTF_SELF");
        assert_eq!(&b[12..16], &[10, 0, 2, 0], "NDA_LLADDR, 6 bytes");
        assert_eq!(&b[16..22], &A);
        assert_eq!(&b[24..28], &[8, 0, 1, 0], "NDA_DST, 4 bytes");
        assert_eq!(&b[28..32], &[198, 51, 100, 2]);
        // The key for removal names the device's own entry by its MAC only.
        let k = fdb_key(7, A);
        assert_eq!(k.header.flags, NeighbourFlags::Own);
        assert_eq!(
            k.attributes,
            [NeighbourAttribute::LinkLayerAddress(A.to_vec())]
        );
    }

    #[test]
    fn neighbour_entry_is_permanent_in_the_addresss_family() {
        let m = neighbour_entry(7, ip("fd00::3"), B);
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert_eq!(m.header.flags, NeighbourFlags::empty());
        assert_eq!(
            m.attributes,
            [
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                    "fd00::3".parse().unwrap()
                )),
                NeighbourAttribute::LinkLayerAddress(B.to_vec()),
            ]
        );
        let b = wire(neighbour_entry(9, ip("10.0.0.3"), B), false);
        assert_eq!(b[0], libc::AF_INET as u8);
        assert_eq!(&b[4..8], &9u32.to_ne_bytes());
        assert_eq!(&b[12..20], &[8, 0, 1, 0, 10, 0, 0, 3], "NDA_DST");
    }

    #[test]
    fn dumps_are_filtered_to_the_device() {
        // The FDB dump: 16 bytes, read by the kernel as an ifinfomsg with ifi_index = 7.
        let b = wire(fdb_dump_request(7), true);
        assert_eq!(b.len(), 16, "{b:?}");
        assert_eq!(b[0], libc::AF_BRIDGE as u8);
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        // The neighbour dump: every family, NDA_IFINDEX = 7.
        let b = wire(neighbour_dump_request(7), true);
        assert_eq!(b[0], libc::AF_UNSPEC as u8);
        assert_eq!(&b[12..20], &[8, 0, 8, 0, 7, 0, 0, 0]);
    }

    #[test]
    fn plan_adds_what_is_missing_fixes_what_is_wrong_and_removes_the_rest() {
        let peers = [
            peer("a", A, "10.0.0.10", "198.51.100.2"),
            peer("b", B, "10.0.0.11", "198.51.100.3"),
        ];
        let local = ip("198.51.100.1");
        // Nothing there: everything is added.
        let p = plan(&peers, local, &Programmed::default());
        assert_eq!(
            p.fdb_put,
            [
                (A, ip("198.51.100.2"), false),
                (B, ip("198.51.100.3"), false)
            ]
        );
        assert_eq!(
            p.neighbour_put,
            [(ip("10.0.0.10"), A, false), (ip("10.0.0.11"), B, false)]
        );
        assert!(p.fdb_del.is_empty() && p.neighbour_del.is_empty());

        // All there: nothing to do.
        let mut found = Programmed::default();
        for q in &peers {
            found.fdb.insert(q.mac, (Some(q.vtep), true));
            found
                .neighbours
                .insert(IpAddr::V4(q.ipv4.unwrap()), (Some(q.mac), true));
        }
        assert!(plan(&peers, local, &found).is_empty());

        // B moved to another host, A's address points elsewhere, a stranger's entries linger,
        // and one entry is no longer permanent.
        found.fdb.insert(B, (Some(ip("198.51.100.9")), true));
        found
            .neighbours
            .insert(ip("10.0.0.10"), (Some([2, 0, 0, 0, 0, 0x99]), true));
        found.fdb.insert([2, 0, 0, 0, 0, 0x77], (Some(local), true));
        found.fdb.insert([0; 6], (Some(ip("198.51.100.2")), true));
        found.neighbours.insert(ip("10.0.0.99"), (None, false));
        found.neighbours.insert(ip("10.0.0.11"), (Some(B), false));
        let p = plan(&peers, local, &found);
        assert_eq!(p.fdb_put, [(B, ip("198.51.100.3"), true)]);
        assert_eq!(
            p.neighbour_put,
            [(ip("10.0.0.10"), A, true), (ip("10.0.0.11"), B, true)]
        );
        assert_eq!(p.fdb_del, [[0; 6], [2, 0, 0, 0, 0, 0x77]]);
        assert_eq!(p.neighbour_del, [ip("10.0.0.99")]);
    }

    #[test]
    fn a_peer_on_this_host_gets_no_entries() {
        let peers = [peer("a", A, "10.0.0.10", "198.51.100.1")];
        assert!(plan(&peers, ip("198.51.100.1"), &Programmed::default()).is_empty());
    }
}
