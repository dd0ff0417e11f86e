//! Published ports: protocol, host address and port range, validated from the request.

use std::net::IpAddr;

use weft_proto::agent::v1 as pb;

use super::Violations;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The protocol's name as nftables spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// Which host addresses a published port binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostIp {
    /// Every host address of both families (host_ip empty).
    Any,
    /// Every IPv4 address ("0.0.0.0").
    AnyV4,
    /// Every IPv6 address ("::").
    AnyV6,
    /// One address.
    Addr(IpAddr),
}

impl HostIp {
    fn parse(raw: &str) -> Option<Self> {
        if raw.is_empty() {
            return Some(Self::Any);
        }
        match raw.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if a.is_unspecified() => Some(Self::AnyV4),
            IpAddr::V6(a) if a.is_unspecified() => Some(Self::AnyV6),
            a => Some(Self::Addr(a)),
        }
    }

    /// Whether a port bound here and one bound at `other` can receive the same packet.
    pub fn overlaps(self, other: Self) -> bool {
        use HostIp::*;
        match (self, other) {
            (Any, _) | (_, Any) => true,
            (AnyV4, AnyV4) | (AnyV6, AnyV6) => true,
            (AnyV4, AnyV6) | (AnyV6, AnyV4) => false,
            (AnyV4, Addr(a)) | (Addr(a), AnyV4) => a.is_ipv4(),
            (AnyV6, Addr(a)) | (Addr(a), AnyV6) => a.is_ipv6(),
            (Addr(a), Addr(b)) => a == b,
        }
    }
}

impl std::fmt::Display for HostIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::AnyV4 => f.write_str("0.0.0.0"),
            Self::AnyV6 => f.write_str("[::]"),
            Self::Addr(IpAddr::V4(a)) => write!(f, "{a}"),
            Self::Addr(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// A published port range: `host_ip:host_port+i` forwards to the endpoint's address at
/// `container_port+i`, for i in [0, range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub host_ip: HostIp,
    pub host_port: u16,
    pub container_port: u16,
    /// At least 1.
    pub range: u16,
}

impl PortMapping {
    /// The last host port of the range.
    pub fn host_end(&self) -> u16 {
        self.host_port + (self.range - 1)
    }

    /// Whether this mapping and `other` claim a common host address, port and protocol.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_ip.overlaps(other.host_ip)
            && self.host_port <= other.host_end()
            && other.host_port <= self.host_end()
    }

    /// Validates one `PortMapping`; `field` is its path in the request.
    pub(super) fn from_pb(v: &mut Violations, field: &str, pm: &pb::PortMapping) -> Option<Self> {
        let protocol = match pb::Protocol::try_from(pm.protocol) {
            Ok(pb::Protocol::Tcp) => Some(Protocol::Tcp),
            Ok(pb::Protocol::Udp) => Some(Protocol::Udp),
            Ok(pb::Protocol::Sctp) => Some(Protocol::Sctp),
            _ => {
                v.add(
                    format!("{field}.protocol"),
                    pm.protocol.to_string(),
                    "must be TCP, UDP or SCTP",
                );
                None
            }
        };
        let host_ip = HostIp::parse(&pm.host_ip);
        if host_ip.is_none() {
            v.add(format!("{field}.host_ip"), &pm.host_ip, "not an IP address");
        }
        // Proto3 leaves an unset range at 0: one port.
        let range = pm.range.max(1);
        let mut ports_ok = true;
        for (name, port) in [
            ("host_port", pm.host_port),
            ("container_port", pm.container_port),
        ] {
            if port == 0 || u64::from(port) + u64::from(range) - 1 > 65535 {
                v.add(
                    format!("{field}.{name}"),
                    port.to_string(),
                    "the port range must lie within 1..65535",
                );
                ports_ok = false;
            }
        }
        if !ports_ok {
            return None;
        }
        Some(Self {
            protocol: protocol?,
            host_ip: host_ip?,
            host_port: u16::try_from(pm.host_port).ok()?,
            container_port: u16::try_from(pm.container_port).ok()?,
            range: u16::try_from(range).ok()?,
        })
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{}",
            self.protocol.name(),
            self.host_ip,
            self.host_port
        )?;
        if self.range > 1 {
            write!(f, "-{}", self.host_end())?;
        }
        write!(f, " -> {}", self.container_port)?;
        if self.range > 1 {
            write!(f, "-{}", self.container_port + (self.range - 1))?;
        }
        Ok(())
    }
}
