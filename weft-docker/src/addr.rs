//! Pure rules of the plugin, free of I/O: Docker's ids, pool ids, the free address an IPAM
//! request gets, the MAC and host-side interface name of an endpoint, published ports.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;
use serde_json::Value;
use weft_proto::gateway::v1 as pb;

use crate::{error::PluginError, protocol::PortBinding};

/// The prefix of every pool id this plugin hands out.
const POOL_PREFIX: &str = "weft:";
/// Published ports taken from one request, at most (Weft's own limit per sandbox).
pub const PORTS_MAX: usize = 64;

/// A Docker network id: Docker's own (64 hex digits) or swarm's (25 base-36 characters), so
/// 1 to 64 lowercase letters or digits.
pub fn network_id(id: &str) -> Result<&str, PluginError> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        Ok(id)
    } else {
        Err(PluginError::invalid(
            "NetworkID",
            id,
            "expected 1 to 64 lowercase letters or digits",
        ))
    }
}

/// A Docker object id (endpoint, sandbox): 1 to 64 lowercase hex digits (Docker's are 64).
pub fn docker_id<'a>(field: &str, id: &'a str) -> Result<&'a str, PluginError> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(id)
    } else {
        Err(PluginError::invalid(
            field,
            id,
            "expected 1 to 64 lowercase hex digits",
        ))
    }
}

/// The interface Docker moves into the container: `wd` and the first 13 digits of its
/// endpoint id (15 characters, the kernel's limit), unique among the endpoints on this host.
pub fn handoff_name(endpoint_id: &str) -> String {
    let n = endpoint_id.len().min(13);
    format!("wd{}", &endpoint_id[..n])
}

/// Docker's own MAC scheme (02:42 and the IPv4 address): stable for an address, so Docker,
/// Weft and the kernel agree on it without the plugin remembering it.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A pool the plugin handed out (IPv4 or IPv6): the subnet, and the sub-range automatic
/// addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub subnet: IpNet,
    pub range: Option<IpNet>,
}

/// The longest prefixes of a pool, Weft's own (ipam-svc's): a /30 still has a gateway and one
/// address to hand out; an IPv6 /126 likewise.
const PREFIX_MAX_V4: u8 = 30;
const PREFIX_MAX_V6: u8 = 126;

/// The family's name, as errors say it.
fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

impl Pool {
    /// From RequestPool's `Pool` and `SubPool` (both CIDR of one family; the sub-pool inside
    /// the pool).
    pub fn new(pool: &str, sub_pool: &str) -> Result<Self, PluginError> {
        Self::parse(("Pool", pool), ("SubPool", sub_pool))
    }

    /// `pool` (named `field` in errors), which must be of the family Docker asked for.
    pub fn of_family(field: &str, pool: &str, v6: bool) -> Result<Self, PluginError> {
        let p = Self::parse((field, pool), ("", ""))?;
        if p.is_v6() != v6 {
            return Err(PluginError::invalid(
                field,
                pool,
                format!("not an {} CIDR", family(v6)),
            ));
        }
        Ok(p)
    }

    fn parse(
        (field, pool): (&str, &str),
        (sub_field, sub_pool): (&str, &str),
    ) -> Result<Self, PluginError> {
        let subnet: IpNet = pool
            .parse()
            .map_err(|_| PluginError::invalid(field, pool, "not an IPv4 or IPv6 CIDR"))?;
        if subnet.trunc() != subnet {
            return Err(PluginError::invalid(field, pool, "has host bits set"));
        }
        let max = if subnet.addr().is_ipv6() {
            PREFIX_MAX_V6
        } else {
            PREFIX_MAX_V4
        };
        if subnet.prefix_len() > max {
            return Err(PluginError::invalid(
                field,
                pool,
                format!("smaller than a /{max}"),
            ));
        }
        let range = if sub_pool.is_empty() {
            None
        } else {
            let r: IpNet = sub_pool.parse().map_err(|_| {
                PluginError::invalid(
                    sub_field,
                    sub_pool,
                    format!("not an {} CIDR", family(subnet.addr().is_ipv6())),
                )
            })?;
            if !subnet.contains(&r) {
                return Err(PluginError::invalid(
                    sub_field,
                    sub_pool,
                    format!("not inside the pool {subnet}"),
                ));
            }
            Some(r.trunc())
        };
        Ok(Self { subnet, range })
    }

    pub fn is_v6(&self) -> bool {
        self.subnet.addr().is_ipv6()
    }

    /// The pool id Docker keeps: `weft:SUBNET` or `weft:SUBNET:RANGE`, so that later calls
    /// need no state of the plugin's.
    pub fn id(&self) -> String {
        match self.range {
            None => format!("{POOL_PREFIX}{}", self.subnet),
            Some(r) => format!("{POOL_PREFIX}{}:{r}", self.subnet),
        }
    }

    /// The inverse of [`Pool::id`]. The subnet ends at the digits of its prefix length (an
    /// IPv6 subnet holds colons itself), then comes `:RANGE` or nothing.
    pub fn parse_id(id: &str) -> Result<Self, PluginError> {
        let bad = || PluginError::invalid("PoolID", id, "not a pool id of this plugin");
        let rest = id.strip_prefix(POOL_PREFIX).ok_or_else(bad)?;
        let slash = rest.find('/').ok_or_else(bad)?;
        let digits = rest[slash + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let (pool, tail) = rest.split_at(slash + 1 + digits);
        let sub = match tail {
            "" => "",
            t => t
                .strip_prefix(':')
                .filter(|s| !s.is_empty())
                .ok_or_else(bad)?,
        };
        let p = Self::new(pool, sub).map_err(|_| bad())?;
        if p.range.is_some_and(|r| r.addr().is_ipv6() != p.is_v6()) {
            return Err(bad());
        }
        Ok(p)
    }

    /// The gateway: `requested` (an address in the subnet) or the first host.
    pub fn gateway(&self, requested: &str) -> Result<IpAddr, PluginError> {
        if requested.is_empty() {
            return self
                .first_free(&BTreeSet::new())
                .ok_or_else(|| PluginError::Exhausted(self.subnet.to_string()));
        }
        self.member("Address", requested)
    }

    /// Whether `ip` may be handed out at all: inside the subnet, not its network address (the
    /// IPv6 subnet-router anycast address too) nor the IPv4 broadcast.
    fn is_host(&self, ip: &IpAddr) -> bool {
        self.subnet.contains(ip)
            && *ip != self.subnet.network()
            && (self.is_v6() || self.subnet.prefix_len() >= 31 || *ip != self.subnet.broadcast())
    }

    /// `raw` (an address, or an address/len as Docker sometimes sends) of the pool's family,
    /// inside the subnet, not its network or broadcast address.
    pub fn member(&self, field: &str, raw: &str) -> Result<IpAddr, PluginError> {
        let ip: IpAddr = raw
            .split_once('/')
            .map_or(raw, |(a, _)| a)
            .parse()
            .ok()
            .filter(|ip: &IpAddr| ip.is_ipv6() == self.is_v6())
            .ok_or_else(|| {
                PluginError::invalid(
                    field,
                    raw,
                    format!("not an {} address", family(self.is_v6())),
                )
            })?;
        if !self.is_host(&ip) {
            return Err(PluginError::invalid(
                field,
                raw,
                format!("not a host address of {}", self.subnet),
            ));
        }
        Ok(ip)
    }

    /// `ip` with the subnet's prefix length, as Docker wants addresses.
    pub fn cidr(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", self.subnet.prefix_len())
    }

    /// The lowest host address of the range (else the subnet) not in `taken`. Lazy: an IPv6
    /// /64 is walked only as far as the first free address.
    pub fn first_free(&self, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        let from = self.range.unwrap_or(self.subnet);
        from.hosts()
            .find(|ip| self.is_host(ip) && !taken.contains(ip))
    }
}

/// The published ports in Docker's `com.docker.network.portmap` option, as Weft's; absent or
/// null is none.
pub fn port_mappings(
    options: Option<&BTreeMap<String, Value>>,
) -> Result<Vec<pb::PortMapping>, PluginError> {
    let Some(raw) = options.and_then(|o| o.get(crate::protocol::PORT_MAP)) else {
        return Ok(Vec::new());
    };
    if raw.is_null() {
        return Ok(Vec::new());
    }
    let bindings: Vec<PortBinding> = serde_json::from_value(raw.clone()).map_err(|e| {
        PluginError::invalid(crate::protocol::PORT_MAP, &raw.to_string(), e.to_string())
    })?;
    if bindings.len() > PORTS_MAX {
        return Err(PluginError::invalid(
            crate::protocol::PORT_MAP,
            &format!("{} bindings", bindings.len()),
            format!("at most {PORTS_MAX}"),
        ));
    }
    bindings.iter().map(port_mapping).collect()
}

fn port_mapping(b: &PortBinding) -> Result<pb::PortMapping, PluginError> {
    let protocol = match b.proto {
        6 => pb::Protocol::Tcp,
        17 => pb::Protocol::Udp,
        132 => pb::Protocol::Sctp,
        other => {
            return Err(PluginError::invalid(
                "portmap.Proto",
                &other.to_string(),
                "expected 6 (tcp), 17 (udp) or 132 (sctp)",
            ));
        }
    };
    if b.port == 0 {
        return Err(PluginError::invalid(
            "portmap.Port",
            "0",
            "expected 1 to 65535",
        ));
    }
    // Docker's "8000-8009:80" (one host port of a range) is given as its first port: Weft
    // publishes exactly the one asked for.
    Ok(pb::PortMapping {
        host_ip: b.host_ip.clone(),
        host_port: u32::from(b.host_port),
        container_port: u32::from(b.port),
        protocol: protocol as i32,
        range: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ids_are_hex_of_at_most_64_digits() {
        assert!(docker_id("EndpointID", &"a1".repeat(32)).is_ok());
        for bad in ["", "ABC", "../x", "a b", "default", &"a".repeat(65)] {
            assert!(docker_id("EndpointID", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn network_ids_are_dockers_or_swarms() {
        assert!(network_id(&"a1".repeat(32)).is_ok());
        assert!(network_id("qsz7l4d0jh8q0h3hftqbzvl3o").is_ok());
        for bad in ["", "ABC", "../x", "a b", "a-b", &"a".repeat(65)] {
            assert!(network_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handoff_names_fit_the_kernel_limit() {
        let n = handoff_name(&"0123456789abcdef".repeat(4));
        assert_eq!(n, "wd0123456789abc");
        assert_eq!(n.len(), 15);
        assert_eq!(handoff_name("ab"), "wdab");
    }

    #[test]
    fn macs_follow_dockers_scheme() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 18, 0, 2)), "02:42:ac:12:00:02");
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pool_ids_round_trip_and_refuse_strangers() {
        let p = Pool::new("10.9.0.0/24", "10.9.0.128/25").unwrap();
        assert_eq!(p.id(), "weft:10.9.0.0/24:10.9.0.128/25");
        assert_eq!(Pool::parse_id(&p.id()).unwrap(), p);
        let q = Pool::new("10.9.0.0/16", "").unwrap();
        assert_eq!(Pool::parse_id(&q.id()).unwrap(), q);
        for bad in [
            "",
            "10.9.0.0/24",
            "weft:",
            "weft:10.9.0.1/24",
            "weft:10.9.0.0/24:10.8.0.0/25",
            "weft:10.9.0.0/24:",
            "weft:10.9.0.0/24x",
            "weft:::",
            "weft:fd00::/64:10.9.0.0/25",
            "weft:fd00::/64:fd01::/80",
        ] {
            assert!(Pool::parse_id(bad).is_err(), "{bad:?}");
        }
        assert!(Pool::new("10.0.0.0/31", "").is_err());
    }

    #[test]
    fn ipv6_pools_have_ids_with_colons_and_weft_limits() {
        let p = Pool::new("fd00:1::/64", "fd00:1::100/120").unwrap();
        assert!(p.is_v6());
        assert_eq!(p.id(), "weft:fd00:1::/64:fd00:1::100/120");
        assert_eq!(Pool::parse_id(&p.id()).unwrap(), p);
        let q = Pool::new("fd00:1::/64", "").unwrap();
        assert_eq!(q.id(), "weft:fd00:1::/64");
        assert_eq!(Pool::parse_id(&q.id()).unwrap(), q);
        assert!(Pool::new("fd00::/126", "").is_ok());
        let small = Pool::new("fd00::/127", "").unwrap_err().to_string();
        assert!(small.contains("Pool") && small.contains("/126"), "{small}");
        assert!(Pool::new("fd00::1/64", "").is_err());
        assert!(Pool::new("fd00::/64", "10.0.0.0/24").is_err());
    }

    #[test]
    fn a_pool_of_the_other_family_is_refused_by_field() {
        assert!(Pool::of_family("IPv6Data.Pool", "fd00::/64", true).is_ok());
        let e = Pool::of_family("IPv6Data.Pool", "10.0.0.0/24", true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("IPv6Data.Pool") && e.contains("IPv6"), "{e}");
        let e = Pool::of_family("IPv4Data.Pool", "fd00::/64", false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("IPv4Data.Pool") && e.contains("IPv4"), "{e}");
    }

    #[test]
    fn gateways_are_the_first_host_or_the_one_asked_for() {
        let p = Pool::new("10.9.0.0/24", "").unwrap();
        assert_eq!(p.gateway("").unwrap(), v4(10, 9, 0, 1));
        assert_eq!(p.gateway("10.9.0.254").unwrap(), v4(10, 9, 0, 254));
        assert_eq!(p.gateway("10.9.0.7/24").unwrap(), v4(10, 9, 0, 7));
        for bad in ["10.9.1.1", "10.9.0.0", "10.9.0.255", "x", "fd00::1"] {
            assert!(p.gateway(bad).is_err(), "{bad}");
        }
        let six = Pool::new("fd00:9::/64", "").unwrap();
        assert_eq!(six.gateway("").unwrap(), ip("fd00:9::1"));
        assert_eq!(six.gateway("fd00:9::fe/64").unwrap(), ip("fd00:9::fe"));
        for bad in ["fd00:9::", "fd00:8::1", "10.9.0.1"] {
            assert!(six.gateway(bad).is_err(), "{bad}");
        }
        let e = six.member("Address", "10.9.0.1").unwrap_err().to_string();
        assert!(e.contains("not an IPv6 address"), "{e}");
    }

    #[test]
    fn free_addresses_skip_what_is_taken_and_stay_in_the_range() {
        let p = Pool::new("10.9.0.0/29", "").unwrap();
        let taken: BTreeSet<_> = [v4(10, 9, 0, 1), v4(10, 9, 0, 3)].into();
        assert_eq!(p.first_free(&taken), Some(v4(10, 9, 0, 2)));
        let all: BTreeSet<IpAddr> = (0..8).map(|d| v4(10, 9, 0, d)).collect();
        assert_eq!(p.first_free(&all), None);
        let r = Pool::new("10.9.0.0/24", "10.9.0.128/25").unwrap();
        assert_eq!(r.first_free(&BTreeSet::new()), Some(v4(10, 9, 0, 129)));
        let six = Pool::new("fd00:9::/64", "").unwrap();
        let taken: BTreeSet<_> = [ip("fd00:9::1"), ip("fd00:9::2")].into();
        assert_eq!(six.first_free(&taken), Some(ip("fd00:9::3")));
        // The last addresses of an IPv6 subnet are hosts (no broadcast there).
        let tiny = Pool::new("fd00:9::/126", "").unwrap();
        let taken: BTreeSet<_> = [ip("fd00:9::1"), ip("fd00:9::2")].into();
        assert_eq!(tiny.first_free(&taken), Some(ip("fd00:9::3")));
    }

    #[test]
    fn port_maps_become_weft_mappings() {
        let opts: BTreeMap<String, Value> = serde_json::from_str(
            r#"{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}"#,
        )
        .unwrap();
        let m = port_mappings(Some(&opts)).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].host_port, m[0].container_port), (8080, 80));
        assert_eq!(m[0].protocol, pb::Protocol::Tcp as i32);
        let null: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.portmap":null}"#).unwrap();
        assert!(port_mappings(Some(&null)).unwrap().is_empty());
        let bad: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.portmap":[{"Proto":1,"Port":80}]}"#)
                .unwrap();
        assert!(port_mappings(Some(&bad)).is_err());
    }
}
