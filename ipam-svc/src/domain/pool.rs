//! Pool requests, their validation, and pool definitions with the rules of what may be handed
//! out: never the network address, the IPv4 broadcast, the gateway or a reserved address.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    str::FromStr,
};

use ipnet::IpNet;
use weft_runtime::FieldViolation;

use super::addr::{Family, from_u128, net_bounds, to_u128};

/// Longest IPv4 prefix of a pool: a /30 still has a gateway and one address to hand out.
pub const MAX_PREFIX_V4: u8 = 30;
/// Longest IPv6 prefix of a pool.
pub const MAX_PREFIX_V6: u8 = 126;

/// What subnet a pool request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetRequest {
    /// This subnet exactly.
    Explicit(IpNet),
    /// Any free subnet of this family from the default pools; of this prefix length, or of the
    /// default pool's own size.
    Any {
        family: Family,
        prefix_len: Option<u8>,
    },
}

/// An inclusive range of addresses, written as a CIDR (`10.0.0.128/25`) or `first-last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrRange {
    pub start: u128,
    pub end: u128,
    /// As written, normalised.
    pub text: String,
}

impl AddrRange {
    /// Parses `s` as a range of `family` inside `subnet`; the error is the reason.
    pub fn parse(s: &str, subnet: &IpNet) -> Result<Self, String> {
        let family = Family::of(subnet.addr());
        let (start, end, text) = if let Some((a, b)) = s.split_once('-') {
            let a = parse_ip(a)?;
            let b = parse_ip(b)?;
            if Family::of(a) != family || Family::of(b) != family {
                return Err(format!("not an {} range", family.name()));
            }
            let (sa, sb) = (to_u128(a), to_u128(b));
            if sa > sb {
                return Err("first address is after the last".into());
            }
            (sa, sb, format!("{a}-{b}"))
        } else {
            let net = parse_net(s)?;
            if Family::of(net.addr()) != family {
                return Err(format!("not an {} range", family.name()));
            }
            let (a, b) = net_bounds(&net);
            (a, b, net.to_string())
        };
        let (ns, ne) = net_bounds(subnet);
        if start < ns || end > ne {
            return Err(format!("not inside subnet {subnet}"));
        }
        Ok(Self { start, end, text })
    }
}

/// Parses an address, refusing surrounding white space and zone ids.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(s).map_err(|_| "not an IP address".to_owned())
}

/// Parses a CIDR whose host bits are zero.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if !s.contains('/') {
        return Err("not a CIDR (missing /prefix)".into());
    }
    let net = IpNet::from_str(s).map_err(|_| "not a CIDR".to_owned())?;
    if net.trunc() != net {
        return Err(format!("host bits set (the subnet is {})", net.trunc()));
    }
    Ok(net)
}

/// A validated request for a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRequest {
    pub id: Option<String>,
    pub space: String,
    pub subnet: SubnetRequest,
    pub ip_range: Option<String>,
    pub gateway: Option<IpAddr>,
    pub reserved: BTreeMap<String, IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// The raw fields of a pool request, as strings, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawPoolRequest {
    pub id: String,
    pub space: String,
    pub subnet: String,
    pub family: Option<Family>,
    pub ip_range: String,
    pub gateway: String,
    pub reserved: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// Checks a pool or owner id: 1 to 128 characters of `[A-Za-z0-9._:/@-]`.
pub fn check_id(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, value, "must not be empty"));
    }
    if value.len() > 128 {
        return Err(FieldViolation::new(
            field,
            value,
            "longer than 128 characters",
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c))
    {
        return Err(FieldViolation::new(
            field,
            value,
            "only letters, digits and . _ : / @ - are allowed",
        ));
    }
    Ok(())
}

fn check_prefix(net: &IpNet) -> Result<(), String> {
    let max = match Family::of(net.addr()) {
        Family::V4 => MAX_PREFIX_V4,
        Family::V6 => MAX_PREFIX_V6,
    };
    match net.prefix_len() {
        0 => Err("prefix length must be at least 1".into()),
        p if p > max => Err(format!("prefix length {p} is too long (at most /{max})")),
        _ => Ok(()),
    }
}

/// A `family` given alongside a subnet must be the subnet's.
fn check_family(family: Option<Family>, net: &IpNet, subnet: &str, errs: &mut Vec<FieldViolation>) {
    if let Some(f) = family
        && f != Family::of(net.addr())
    {
        errs.push(FieldViolation::new(
            "family",
            f.name(),
            format!("does not match subnet {subnet}"),
        ));
    }
}

/// The address space, `local` when none is named; it must be one of `known_spaces`.
fn validate_space(raw: &str, known_spaces: &[&str], errs: &mut Vec<FieldViolation>) -> String {
    let space = if raw.is_empty() {
        "local".to_owned()
    } else {
        raw.to_owned()
    };
    if !known_spaces.contains(&space.as_str()) {
        errs.push(FieldViolation::new(
            "address_space",
            raw,
            format!("unknown address space (known: {})", known_spaces.join(", ")),
        ));
    }
    space
}

/// The requested subnet: any subnet of a family (empty, or an unspecified address with a
/// prefix length) or an explicit one. `None` when it is invalid (the reason is in `errs`).
fn validate_subnet(raw: &RawPoolRequest, errs: &mut Vec<FieldViolation>) -> Option<SubnetRequest> {
    if raw.subnet.is_empty() {
        return Some(SubnetRequest::Any {
            family: raw.family.unwrap_or(Family::V4),
            prefix_len: None,
        });
    }
    match IpNet::from_str(&raw.subnet) {
        Ok(net) if net.addr().is_unspecified() => {
            check_family(raw.family, &net, &raw.subnet, errs);
            match check_prefix(&net) {
                Ok(()) => Some(SubnetRequest::Any {
                    family: Family::of(net.addr()),
                    prefix_len: Some(net.prefix_len()),
                }),
                Err(reason) => {
                    errs.push(FieldViolation::new("subnet", &raw.subnet, reason));
                    None
                }
            }
        }
        _ => match parse_net(&raw.subnet).and_then(|n| check_prefix(&n).map(|()| n)) {
            Ok(net) => {
                check_family(raw.family, &net, &raw.subnet, errs);
                Some(SubnetRequest::Explicit(net))
            }
            Err(reason) => {
                errs.push(FieldViolation::new("subnet", &raw.subnet, reason));
                None
            }
        },
    }
}

/// A gateway or reserved address: it parses and, when the subnet is explicit, is a host
/// address inside it (of its family, neither the network nor the IPv4 broadcast address).
fn check_addr(
    field: String,
    value: &str,
    explicit: Option<IpNet>,
    errs: &mut Vec<FieldViolation>,
) -> Option<IpAddr> {
    let ip = match parse_ip(value) {
        Ok(ip) => ip,
        Err(reason) => {
            errs.push(FieldViolation::new(field, value, reason));
            return None;
        }
    };
    if let Some(net) = explicit {
        if Family::of(ip) != Family::of(net.addr()) {
            errs.push(FieldViolation::new(
                field,
                value,
                format!("not an {} address", Family::of(net.addr()).name()),
            ));
            return None;
        }
        if !net.contains(&ip) {
            errs.push(FieldViolation::new(
                field,
                value,
                format!("not inside subnet {net}"),
            ));
            return None;
        }
        let v = to_u128(ip);
        let (ns, ne) = net_bounds(&net);
        if v == ns {
            errs.push(FieldViolation::new(field, value, "is the network address"));
            return None;
        }
        if v == ne && Family::of(ip) == Family::V4 {
            errs.push(FieldViolation::new(
                field,
                value,
                "is the broadcast address",
            ));
            return None;
        }
    }
    Some(ip)
}

/// Reports an address given although the subnet is only requested by size.
fn needs_subnet(any_subnet: bool, field: &str, value: &str, errs: &mut Vec<FieldViolation>) {
    if any_subnet {
        errs.push(FieldViolation::new(
            field,
            value,
            "requires an explicit subnet",
        ));
    }
}

/// The named reserved addresses, each a valid host address of the subnet.
fn validate_reserved(
    raw: &BTreeMap<String, String>,
    explicit: Option<IpNet>,
    any_subnet: bool,
    errs: &mut Vec<FieldViolation>,
) -> BTreeMap<String, IpAddr> {
    let mut reserved = BTreeMap::new();
    for (name, value) in raw {
        let field = format!("reserved_addresses[{name}]");
        if name.is_empty() {
            errs.push(FieldViolation::new(
                field.clone(),
                value,
                "name must not be empty",
            ));
        }
        needs_subnet(any_subnet, &field, value, errs);
        if let Some(ip) = check_addr(field, value, explicit, errs) {
            reserved.insert(name.clone(), ip);
        }
    }
    reserved
}

/// Label keys must not be empty.
fn check_labels(labels: &BTreeMap<String, String>, errs: &mut Vec<FieldViolation>) {
    for key in labels.keys() {
        if key.is_empty() {
            errs.push(FieldViolation::new(
                "labels",
                key,
                "label keys must not be empty",
            ));
        }
    }
}

impl PoolRequest {
    /// Validates every field; all problems are reported at once.
    pub fn validate(
        raw: RawPoolRequest,
        known_spaces: &[&str],
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Vec::new();
        let id = if raw.id.is_empty() {
            None
        } else {
            if let Err(v) = check_id("pool_id", &raw.id) {
                errs.push(v);
            }
            Some(raw.id.clone())
        };
        let space = validate_space(&raw.space, known_spaces, &mut errs);
        let subnet = validate_subnet(&raw, &mut errs);

        let explicit = match &subnet {
            Some(SubnetRequest::Explicit(net)) => Some(*net),
            _ => None,
        };
        // Addresses need an explicit subnet; a bad subnet is reported once, by itself.
        let any_subnet = subnet.is_some() && explicit.is_none();

        let ip_range = if raw.ip_range.is_empty() {
            None
        } else {
            needs_subnet(any_subnet, "ip_range", &raw.ip_range, &mut errs);
            if let Some(net) = explicit
                && let Err(reason) = AddrRange::parse(&raw.ip_range, &net)
            {
                errs.push(FieldViolation::new("ip_range", &raw.ip_range, reason));
            }
            Some(raw.ip_range.clone())
        };

        let gateway = if raw.gateway.is_empty() {
            None
        } else {
            needs_subnet(any_subnet, "gateway", &raw.gateway, &mut errs);
            check_addr("gateway".into(), &raw.gateway, explicit, &mut errs)
        };
        let reserved = validate_reserved(&raw.reserved, explicit, any_subnet, &mut errs);
        check_labels(&raw.labels, &mut errs);

        match subnet {
            Some(subnet) if errs.is_empty() => Ok(Self {
                id,
                space,
                subnet,
                ip_range,
                gateway,
                reserved,
                labels: raw.labels,
                validate_only: raw.validate_only,
            }),
            _ => Err(errs),
        }
    }
}

/// A pool as stored: its subnet, allocation range, gateway and reserved addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDef {
    pub id: String,
    pub space: String,
    pub subnet: IpNet,
    pub range: Option<AddrRange>,
    pub gateway: IpAddr,
    pub reserved: BTreeMap<String, IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: i64,
}

impl PoolDef {
    /// Builds the definition of `req` on the chosen `subnet` (already validated).
    pub fn new(
        id: String,
        subnet: IpNet,
        req: &PoolRequest,
        created_at_ms: i64,
    ) -> Result<Self, String> {
        let range = req
            .ip_range
            .as_deref()
            .map(|r| AddrRange::parse(r, &subnet))
            .transpose()?;
        let (ns, _) = net_bounds(&subnet);
        let gateway = req
            .gateway
            .unwrap_or_else(|| from_u128(Family::of(subnet.addr()), ns + 1));
        Ok(Self {
            id,
            space: req.space.clone(),
            subnet,
            range,
            gateway,
            reserved: req.reserved.clone(),
            labels: req.labels.clone(),
            created_at_ms,
        })
    }

    pub fn family(&self) -> Family {
        Family::of(self.subnet.addr())
    }

    pub fn bounds(&self) -> (u128, u128) {
        net_bounds(&self.subnet)
    }

    /// The network address, or the IPv4 broadcast: never handed out, not even on request.
    pub fn is_unusable(&self, a: u128) -> bool {
        let (ns, ne) = self.bounds();
        a == ns || (a == ne && self.family() == Family::V4)
    }

    /// The gateway and reserved addresses: never handed out.
    pub fn blocked(&self) -> BTreeSet<u128> {
        std::iter::once(self.gateway)
            .chain(self.reserved.values().copied())
            .map(to_u128)
            .collect()
    }

    /// The name that blocks `a` (`gateway` or the reserved name), if any.
    pub fn blocked_by(&self, a: u128) -> Option<String> {
        if to_u128(self.gateway) == a {
            return Some("the gateway".into());
        }
        self.reserved
            .iter()
            .find(|(_, ip)| to_u128(**ip) == a)
            .map(|(name, _)| format!("reserved ({name})"))
    }

    /// First and last address that dynamic allocation may hand out (before excluding the gateway
    /// and reserved addresses), or `None` when the range has no usable address.
    pub fn dynamic_bounds(&self) -> Option<(u128, u128)> {
        let (ns, ne) = self.bounds();
        let (rs, re) = self.range.as_ref().map_or((ns, ne), |r| (r.start, r.end));
        let lo = rs.max(ns + 1);
        let hi = if self.family() == Family::V4 {
            re.min(ne - 1)
        } else {
            re
        };
        (lo <= hi).then_some((lo, hi))
    }

    /// How many addresses dynamic allocation can hand out in all.
    pub fn capacity(&self) -> u128 {
        let Some((lo, hi)) = self.dynamic_bounds() else {
            return 0;
        };
        let blocked = self.blocked().range(lo..=hi).count() as u128;
        (hi - lo).saturating_add(1).saturating_sub(blocked)
    }

    /// Whether `other` would be the same pool as this one (a retried request).
    pub fn matches_request(&self, req: &PoolRequest) -> bool {
        let subnet_ok = match &req.subnet {
            SubnetRequest::Explicit(net) => *net == self.subnet,
            SubnetRequest::Any { family, prefix_len } => {
                *family == self.family() && prefix_len.is_none_or(|p| p == self.subnet.prefix_len())
            }
        };
        subnet_ok
            && req.space == self.space
            && req
                .ip_range
                .as_deref()
                .map(|r| AddrRange::parse(r, &self.subnet).map(|r| r.text))
                == self.range.as_ref().map(|r| Ok(r.text.clone()))
            && req.gateway.is_none_or(|g| g == self.gateway)
            && req.reserved == self.reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(subnet: &str) -> RawPoolRequest {
        RawPoolRequest {
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    fn def(subnet: &str, f: impl FnOnce(&mut RawPoolRequest)) -> PoolDef {
        let mut r = raw(subnet);
        f(&mut r);
        let req = PoolRequest::validate(r, &["local"]).unwrap();
        let SubnetRequest::Explicit(net) = req.subnet else {
            panic!()
        };
        PoolDef::new("p".into(), net, &req, 0).unwrap()
    }

    #[test]
    fn zero_address_means_any_subnet_of_that_size() {
        let r = PoolRequest::validate(raw("0.0.0.0/24"), &["local"]).unwrap();
        assert_eq!(
            r.subnet,
            SubnetRequest::Any {
                family: Family::V4,
                prefix_len: Some(24)
            }
        );
        let r = PoolRequest::validate(raw("::/64"), &["local"]).unwrap();
        assert_eq!(
            r.subnet,
            SubnetRequest::Any {
                family: Family::V6,
                prefix_len: Some(64)
            }
        );
    }

    #[test]
    fn capacity_excludes_network_broadcast_gateway_and_reserved() {
        assert_eq!(def("10.0.0.0/24", |_| {}).capacity(), 253);
        assert_eq!(def("10.0.0.0/30", |_| {}).capacity(), 1);
        let d = def("10.0.0.0/24", |r| {
            r.reserved.insert("a".into(), "10.0.0.7".into());
            r.reserved.insert("b".into(), "10.0.0.200".into());
            r.ip_range = "10.0.0.0/25".into();
        });
        // 1..=127 minus gateway .1 and reserved .7
        assert_eq!(d.capacity(), 125);
        assert_eq!(def("fd00::/64", |_| {}).capacity(), (1u128 << 64) - 2);
    }

    #[test]
    fn ranges_parse_as_cidr_or_first_last() {
        let net: IpNet = "10.0.0.0/24".parse().unwrap();
        let r = AddrRange::parse("10.0.0.10-10.0.0.20", &net).unwrap();
        assert_eq!(r.end - r.start, 10);
        assert!(AddrRange::parse("10.0.0.20-10.0.0.10", &net).is_err());
        assert!(AddrRange::parse("10.0.1.0/25", &net).is_err());
        assert!(AddrRange::parse("10.0.0.1/25", &net).is_err());
    }
}
