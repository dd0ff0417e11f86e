//! The endpoint spec: the interface to create in a sandbox, its addresses, routes and ports.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_proto::agent::v1 as pb;
use weft_runtime::FieldViolation;

use super::{PortMapping, Violations, check_id};
use crate::names;

/// One endpoint (attachment of a sandbox to a network).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    pub sandbox_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Net>,
    pub ipv6: Option<Ipv6Net>,
    pub ipv4_gateway: Option<Ipv4Addr>,
    pub ipv6_gateway: Option<Ipv6Addr>,
    pub link_local: Vec<IpNet>,
    pub default_route_v4: bool,
    pub default_route_v6: bool,
    /// Ports published through this endpoint (the full set).
    pub ports: Vec<PortMapping>,
    /// The container end stays in the host's namespace under this name, unconfigured, for the
    /// container runtime to move ([`weft_proto::HANDOFF_OPTION`]).
    pub handoff: Option<String>,
}

impl Endpoint {
    /// Every address to put on the interface.
    pub fn addresses(&self) -> Vec<IpNet> {
        self.ipv4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.ipv6.map(IpNet::V6))
            .chain(self.link_local.iter().copied())
            .collect()
    }
}

fn parse_opt<T: std::str::FromStr>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    what: &str,
) -> Option<T> {
    if raw.is_empty() {
        return None;
    }
    match raw.parse() {
        Ok(x) => Some(x),
        Err(_) => {
            v.add(field, raw, what);
            None
        }
    }
}

impl Endpoint {
    /// [`Endpoint::from_pb`] for an endpoint attached with its sandbox's creation
    /// (`CreateSandboxRequest.attachments`): its namespace is the sandbox's, not known to the
    /// caller yet when the agent makes it, so an empty `netns_path` is taken (and left empty
    /// for the agent to fill in).
    pub fn from_pb_in_sandbox(
        mut spec: pb::EndpointSpec,
        prefix: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let unknown = spec.netns_path.is_empty();
        if unknown {
            spec.netns_path = "/".to_owned();
        }
        let mut ep = Self::from_pb(spec, prefix)?;
        if unknown {
            ep.netns = PathBuf::new();
        }
        Ok(ep)
    }

    /// Validates an `EndpointSpec`; `prefix` is the field path of the spec in its request.
    pub fn from_pb(spec: pb::EndpointSpec, prefix: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let f = |name: &str| format!("{prefix}.{name}");
        check_id(&mut v, &f("endpoint_id"), &spec.endpoint_id);
        check_id(&mut v, &f("network_id"), &spec.network_id);
        check_netns_path(&mut v, &f("netns_path"), &spec.netns_path);
        let ifname = parse_ifname(&mut v, &f("interface_name"), &spec.interface_name);
        let mac = parse_mac(
            &mut v,
            &f("mac_address"),
            &spec.mac_address,
            &spec.endpoint_id,
        );
        let ipv4 = parse_opt(
            &mut v,
            &f("ipv4_address"),
            &spec.ipv4_address,
            "not an IPv4 CIDR",
        );
        let ipv6 = parse_opt(
            &mut v,
            &f("ipv6_address"),
            &spec.ipv6_address,
            "not an IPv6 CIDR",
        );
        let ipv4_gateway = parse_opt(
            &mut v,
            &f("ipv4_gateway"),
            &spec.ipv4_gateway,
            "not an IPv4 address",
        );
        let ipv6_gateway = parse_opt(
            &mut v,
            &f("ipv6_gateway"),
            &spec.ipv6_gateway,
            "not an IPv6 address",
        );
        let link_local = parse_link_local(&mut v, prefix, &spec.link_local_ips);
        if spec.default_route_v4 && ipv4_gateway.is_none() {
            v.add(
                f("ipv4_gateway"),
                &spec.ipv4_gateway,
                "required when default_route_v4 is set",
            );
        }
        let ports = parse_ports(&mut v, prefix, &spec.port_mappings);
        let handoff = spec
            .driver_options
            .get(weft_proto::HANDOFF_OPTION)
            .map(|raw| {
                let field = f(&format!("driver_options[{}]", weft_proto::HANDOFF_OPTION));
                if let Err(reason) = names::valid_ifname(raw) {
                    v.add(&field, raw, reason);
                }
                raw.clone()
            });
        if spec.default_route_v6 && ipv6_gateway.is_none() {
            v.add(
                f("ipv6_gateway"),
                &spec.ipv6_gateway,
                "required when default_route_v6 is set",
            );
        }
        v.finish(Self {
            id: spec.endpoint_id,
            network_id: spec.network_id,
            sandbox_id: spec.sandbox_id,
            netns: PathBuf::from(spec.netns_path),
            ifname,
            mac,
            ipv4,
            ipv6,
            ipv4_gateway,
            ipv6_gateway,
            link_local,
            default_route_v4: spec.default_route_v4,
            default_route_v6: spec.default_route_v6,
            ports,
            handoff,
        })
    }
}

/// The MAC address: derived from the endpoint id when empty, else a unicast address.
fn parse_mac(v: &mut Violations, field: &str, raw: &str, endpoint_id: &str) -> [u8; 6] {
    if raw.is_empty() {
        names::derived_mac(endpoint_id)
    } else {
        match names::parse_mac(raw) {
            Some(m) if m[0] & 1 == 0 && m != [0; 6] => m,
            Some(_) => {
                v.add(field, raw, "must be a unicast address");
                [0; 6]
            }
            None => {
                v.add(field, raw, "not a MAC address");
                [0; 6]
            }
        }
    }
}

/// Extra link-local addresses, each a CIDR.
fn parse_link_local(v: &mut Violations, prefix: &str, raw: &[String]) -> Vec<IpNet> {
    let mut link_local = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match s.parse::<IpNet>() {
            Ok(n) => link_local.push(n),
            Err(_) => v.add(format!("{prefix}.link_local_ips[{i}]"), s, "not a CIDR"),
        }
    }
    link_local
}

/// The published ports, each valid and none overlapping an earlier one.
fn parse_ports(v: &mut Violations, prefix: &str, raw: &[pb::PortMapping]) -> Vec<PortMapping> {
    // (index in the request, mapping), so that overlaps name the fields as sent.
    let mut ports: Vec<(usize, PortMapping)> = Vec::new();
    for (i, pm) in raw.iter().enumerate() {
        let field = format!("{prefix}.port_mappings[{i}]");
        if let Some(p) = PortMapping::from_pb(v, &field, pm) {
            if let Some((j, _)) = ports.iter().find(|(_, q)| q.clashes_with(&p)) {
                v.add(
                    field,
                    p.to_string(),
                    &format!("overlaps port_mappings[{j}]"),
                );
            }
            ports.push((i, p));
        }
    }
    ports.into_iter().map(|(_, p)| p).collect()
}

/// The sandbox's namespace is named by an absolute path.
fn check_netns_path(v: &mut Violations, field: &str, raw: &str) {
    if raw.is_empty() || !raw.starts_with('/') {
        v.add(field, raw, "must be an absolute path");
    }
}

/// The interface name in the sandbox: `eth0` when empty.
fn parse_ifname(v: &mut Violations, field: &str, raw: &str) -> String {
    let ifname = if raw.is_empty() {
        "eth0".to_owned()
    } else {
        raw.to_owned()
    };
    if let Err(reason) = names::valid_ifname(&ifname) {
        v.add(field, raw, reason);
    }
    ifname
}
