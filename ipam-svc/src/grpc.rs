//! The gRPC edge: converts `weft.ipam.v1` messages to domain types (bad input becomes
//! `INVALID_ARGUMENT` naming the field and value) and results back.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use tonic::{Request, Response, Status};
use weft_proto::ipam::v1::{self as pb, ipam_service_server::IpamService};
use weft_runtime::access::{Role, Rule};

use crate::{
    check::{self, ProblemKind},
    domain::{
        Family,
        addr::{from_bytes, to_bytes},
        pool::{PoolRequest, RawPoolRequest, check_id, parse_ip},
    },
    engine::{Allocation, Ipam, PoolInfo, ReleaseTarget},
    error::IpamError,
};

/// Who may call ipam-svc: the gateway (by its certificate), for every method; an admin also
/// for the read-only consistency check (`weftctl ipam check`). Checked when ipam-svc serves
/// TLS; a method missing here keeps the server from starting.
pub const RULES: &[Rule] = &[
    Rule::only(
        "/weft.ipam.v1.IpamService/ListAddressSpaces",
        GATEWAY,
        false,
    ),
    Rule::only("/weft.ipam.v1.IpamService/RequestPool", GATEWAY, true),
    Rule::only("/weft.ipam.v1.IpamService/GetPool", GATEWAY, false),
    Rule::only("/weft.ipam.v1.IpamService/ListPools", GATEWAY, false),
    Rule::only("/weft.ipam.v1.IpamService/ReleasePool", GATEWAY, true),
    Rule::only("/weft.ipam.v1.IpamService/RequestAddress", GATEWAY, true),
    Rule::only("/weft.ipam.v1.IpamService/ReleaseAddress", GATEWAY, true),
    Rule::only("/weft.ipam.v1.IpamService/ListAllocations", GATEWAY, false),
    Rule::only("/weft.ipam.v1.IpamService/Check", GATEWAY_OR_ADMIN, false),
];

const GATEWAY: &[Role] = &[Role::Gateway];
const GATEWAY_OR_ADMIN: &[Role] = &[Role::Gateway, Role::Admin];

/// The tonic service for `ipam`, taking requests as large as [`RULES`] allow.
pub fn server(ipam: Ipam) -> pb::ipam_service_server::IpamServiceServer<IpamGrpc> {
    use pb::ipam_service_server::IpamServiceServer;
    weft_runtime::grpc::limit_requests(
        IpamServiceServer::new(IpamGrpc { ipam }),
        RULES,
        IpamServiceServer::max_decoding_message_size,
    )
}

#[derive(Debug, Clone)]
pub struct IpamGrpc {
    ipam: Ipam,
}

/// Allocations per ListAllocations page: by default, and at most.
const DEFAULT_PAGE: u32 = 1000;
const MAX_PAGE: u32 = 10_000;
/// Pools per ListPools page (each pool costs a count of its allocations): by default, and at most.
const DEFAULT_POOL_PAGE: u32 = 100;
const MAX_POOL_PAGE: u32 = 1000;

/// The page size a request asks for: 0 means the default; above `max` is refused.
fn page_size(asked: u32, default: u32, max: u32) -> Result<u32, IpamError> {
    match asked {
        0 => Ok(default),
        n if n > max => Err(IpamError::invalid(
            "page_size",
            n.to_string(),
            format!("at most {max}"),
        )),
        n => Ok(n),
    }
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn pool_to_pb(p: PoolInfo) -> pb::Pool {
    let def = p.def;
    pb::Pool {
        family: match def.family() {
            Family::V4 => pb::Family::Ipv4,
            Family::V6 => pb::Family::Ipv6,
        } as i32,
        address_space: def.space,
        subnet: def.subnet.to_string(),
        ip_range: def.range.map(|r| r.text).unwrap_or_default(),
        gateway: def.gateway.to_string(),
        reserved_addresses: def
            .reserved
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        labels: def.labels.into_iter().collect(),
        created_at: Some(timestamp(def.created_at_ms)),
        usage: Some(pb::PoolUsage {
            size: saturate(p.size),
            allocated: p.allocated,
            free: saturate(p.free),
        }),
        id: def.id,
    }
}

/// Appends the decimal digits of `n`.
fn push_decimal(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + n / 10 % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

fn push_v4(out: &mut String, v4: Ipv4Addr) {
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_decimal(out, octet);
    }
}

/// Appends `segments` in lowercase hex, colon-separated, without leading zeros.
fn push_segments(out: &mut String, segments: &[u16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, &seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let mut started = false;
        for shift in [12u16, 8, 4, 0] {
            let digit = usize::from((seg >> shift) & 0xf);
            if digit != 0 || started || shift == 0 {
                started = true;
                out.push(char::from(HEX[digit]));
            }
        }
    }
}

/// The text of `ip`, exactly as `Display` writes it (RFC 5952: the longest run of two or more
/// zero groups, the first of equals, becomes `::`; IPv4-mapped addresses end in dotted decimal).
/// Every allocation answer carries its address twice and the gateway once: written here
/// directly they cost a fraction of what the formatting machinery does.
fn ip_text(ip: IpAddr) -> String {
    let mut out = String::with_capacity(39);
    match ip {
        IpAddr::V4(v4) => push_v4(&mut out, v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                out.push_str("::ffff:");
                push_v4(&mut out, v4);
                return out;
            }
            let segments = v6.segments();
            let (mut best, mut run) = ((0, 0), (0, 0));
            for (i, &seg) in segments.iter().enumerate() {
                if seg == 0 {
                    if run.1 == 0 {
                        run.0 = i;
                    }
                    run.1 += 1;
                    if run.1 > best.1 {
                        best = run;
                    }
                } else {
                    run = (0, 0);
                }
            }
            if best.1 > 1 {
                push_segments(&mut out, &segments[..best.0]);
                out.push_str("::");
                push_segments(&mut out, &segments[best.0 + best.1..]);
            } else {
                push_segments(&mut out, &segments);
            }
        }
    }
    out
}

fn alloc_to_pb(a: Allocation) -> pb::Allocation {
    let address = ip_text(a.address);
    let mut cidr = String::with_capacity(address.len() + 4);
    cidr.push_str(&address);
    cidr.push('/');
    push_decimal(&mut cidr, a.prefix_len);
    pb::Allocation {
        pool_id: a.pool_id,
        cidr,
        address,
        owner: a.owner,
        created_at: (a.created_at_ms > 0).then(|| timestamp(a.created_at_ms)),
        gateway: ip_text(a.gateway),
    }
}

fn required_id(field: &str, value: &str) -> Result<(), IpamError> {
    check_id(field, value).map_err(|v| IpamError::Invalid(vec![v]))
}

fn parse_address(field: &str, value: &str) -> Result<IpAddr, IpamError> {
    parse_ip(value).map_err(|reason| IpamError::invalid(field, value, reason))
}

/// Page tokens are `<pool id>/<address as hex>`: opaque to clients, stable across replicas.
fn encode_token(pool: &str, addr: u128) -> String {
    let hex: String = to_bytes(addr).iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}{pool}")
}

fn decode_token(token: &str) -> Option<(String, u128)> {
    let hex = token.get(..32)?;
    let pool = token.get(32..)?;
    let bytes: Option<Vec<u8>> = (0..16)
        .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect();
    Some((pool.to_owned(), from_bytes(&bytes?)?))
}

/// ListPools page tokens are `p` and the last pool id as hex: opaque to clients, stable across
/// replicas.
fn encode_pool_token(id: &str) -> String {
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("p{hex}")
}

fn decode_pool_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix('p')?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect();
    let id = String::from_utf8(bytes?).ok()?;
    check_id("page_token", &id).ok()?;
    Some(id)
}

#[tonic::async_trait]
impl IpamService for IpamGrpc {
    async fn list_address_spaces(
        &self,
        _req: Request<pb::ListAddressSpacesRequest>,
    ) -> Result<Response<pb::ListAddressSpacesResponse>, Status> {
        let address_spaces = self
            .ipam
            .spaces()
            .spaces
            .iter()
            .map(|(name, pools)| pb::AddressSpace {
                name: name.clone(),
                default_pools: pools
                    .iter()
                    .map(|p| pb::DefaultPool {
                        base: p.base.to_string(),
                        size: u32::from(p.size),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListAddressSpacesResponse {
            address_spaces,
        }))
    }

    async fn request_pool(
        &self,
        req: Request<pb::RequestPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let r = req.into_inner();
        let family = match pb::Family::try_from(r.family) {
            Ok(pb::Family::Unspecified) => None,
            Ok(pb::Family::Ipv4) => Some(Family::V4),
            Ok(pb::Family::Ipv6) => Some(Family::V6),
            Err(_) => {
                return Err(
                    IpamError::invalid("family", r.family.to_string(), "unknown family").into(),
                );
            }
        };
        let raw = RawPoolRequest {
            id: r.pool_id,
            space: r.address_space,
            subnet: r.subnet,
            family,
            ip_range: r.ip_range,
            gateway: r.gateway,
            reserved: r.reserved_addresses.into_iter().collect::<BTreeMap<_, _>>(),
            labels: r.labels.into_iter().collect(),
            validate_only: r.validate_only,
        };
        let spaces = self.ipam.spaces().names();
        let req = PoolRequest::validate(raw, &spaces).map_err(IpamError::Invalid)?;
        let pool = self.ipam.request_pool(req).await?;
        Ok(Response::new(pool_to_pb(pool)))
    }

    async fn get_pool(
        &self,
        req: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let r = req.into_inner();
        required_id("pool_id", &r.pool_id)?;
        Ok(Response::new(pool_to_pb(
            self.ipam.get_pool(&r.pool_id).await?,
        )))
    }

    async fn list_pools(
        &self,
        req: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let r = req.into_inner();
        let limit = page_size(r.page_size, DEFAULT_POOL_PAGE, MAX_POOL_PAGE)?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(decode_pool_token(&r.page_token).ok_or_else(|| {
                IpamError::invalid(
                    "page_token",
                    r.page_token.clone(),
                    "not a token from this service",
                )
            })?)
        };
        let space = (!r.address_space.is_empty()).then_some(r.address_space.as_str());
        let (pools, next) = self.ipam.list_pools(space, after.as_deref(), limit).await?;
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools.into_iter().map(pool_to_pb).collect(),
            next_page_token: next.map(|id| encode_pool_token(&id)).unwrap_or_default(),
        }))
    }

    async fn release_pool(
        &self,
        req: Request<pb::ReleasePoolRequest>,
    ) -> Result<Response<pb::ReleasePoolResponse>, Status> {
        let r = req.into_inner();
        required_id("pool_id", &r.pool_id)?;
        let n = self.ipam.release_pool(r.pool_id, r.force).await?;
        Ok(Response::new(pb::ReleasePoolResponse {
            released_allocations: n,
        }))
    }

    async fn request_address(
        &self,
        req: Request<pb::RequestAddressRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        let r = req.into_inner();
        let mut violations = Vec::new();
        if let Err(v) = check_id("pool_id", &r.pool_id) {
            violations.push(v);
        }
        if let Err(v) = check_id("owner", &r.owner) {
            violations.push(v);
        }
        let specific = if r.address.is_empty() {
            None
        } else {
            match parse_ip(&r.address) {
                Ok(ip) => Some(ip),
                Err(reason) => {
                    violations.push(weft_runtime::FieldViolation::new(
                        "address", &r.address, reason,
                    ));
                    None
                }
            }
        };
        if !violations.is_empty() {
            return Err(IpamError::Invalid(violations).into());
        }
        let a = self
            .ipam
            .request_address(r.pool_id, r.owner, specific)
            .await?;
        Ok(Response::new(alloc_to_pb(a)))
    }

    async fn release_address(
        &self,
        req: Request<pb::ReleaseAddressRequest>,
    ) -> Result<Response<pb::ReleaseAddressResponse>, Status> {
        let r = req.into_inner();
        let pool = if r.pool_id.is_empty() {
            None
        } else {
            required_id("pool_id", &r.pool_id)?;
            Some(r.pool_id)
        };
        let target = match r.target {
            Some(pb::release_address_request::Target::Address(a)) => {
                ReleaseTarget::Address(parse_address("address", &a)?)
            }
            Some(pb::release_address_request::Target::Owner(o)) => {
                required_id("owner", &o)?;
                ReleaseTarget::Owner(o)
            }
            None => {
                return Err(IpamError::invalid("target", "", "give an address or an owner").into());
            }
        };
        let released = self.ipam.release(pool, target).await?;
        Ok(Response::new(pb::ReleaseAddressResponse {
            released: released.into_iter().map(alloc_to_pb).collect(),
        }))
    }

    async fn list_allocations(
        &self,
        req: Request<pb::ListAllocationsRequest>,
    ) -> Result<Response<pb::ListAllocationsResponse>, Status> {
        let r = req.into_inner();
        let limit = page_size(r.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(decode_token(&r.page_token).ok_or_else(|| {
                IpamError::invalid(
                    "page_token",
                    r.page_token.clone(),
                    "not a token from this service",
                )
            })?)
        };
        let (allocs, next) = self
            .ipam
            .list_allocations(
                (!r.pool_id.is_empty()).then_some(r.pool_id.as_str()),
                (!r.owner.is_empty()).then_some(r.owner.as_str()),
                after.as_ref().map(|(p, a)| (p.as_str(), *a)),
                limit,
            )
            .await?;
        Ok(Response::new(pb::ListAllocationsResponse {
            allocations: allocs.into_iter().map(alloc_to_pb).collect(),
            next_page_token: next.map(|(p, a)| encode_token(&p, a)).unwrap_or_default(),
        }))
    }

    async fn check(
        &self,
        _req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let report = check::check(self.ipam.db()).await?;
        let problems: Vec<pb::Problem> = report
            .problems
            .into_iter()
            .map(|p| pb::Problem {
                kind: match p.kind {
                    ProblemKind::AllocationOutsidePool => pb::problem::Kind::AllocationOutsidePool,
                    ProblemKind::DuplicateAddress => pb::problem::Kind::DuplicateAddress,
                    ProblemKind::OwnerHoldsSeveral => pb::problem::Kind::OwnerHoldsSeveral,
                    ProblemKind::ReservedAddressAllocated => {
                        pb::problem::Kind::ReservedAddressAllocated
                    }
                    ProblemKind::UsageMismatch => pb::problem::Kind::UsageMismatch,
                    ProblemKind::OverlappingPools => pb::problem::Kind::OverlappingPools,
                } as i32,
                pool_id: p.pool_id,
                address: p.address,
                owners: p.owners,
                detail: p.detail,
            })
            .collect();
        Ok(Response::new(pb::CheckResponse {
            pools_checked: report.pools,
            allocations_checked: report.allocations,
            problems_count: problems.len() as u64,
            problems,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_address_is_written_as_display_writes_it(
            v6 in proptest::prelude::any::<u128>(),
            // Addresses with runs of zero groups, where the `::` rules matter.
            mask in proptest::prelude::any::<u8>(),
            v4 in proptest::prelude::any::<u32>(),
        ) {
            let mut zeroed = v6;
            for g in 0..8 {
                if mask & (1 << g) != 0 {
                    zeroed &= !(0xffffu128 << (16 * g));
                }
            }
            for ip in [
                IpAddr::from(std::net::Ipv6Addr::from(v6)),
                IpAddr::from(std::net::Ipv6Addr::from(zeroed)),
                IpAddr::from(Ipv4Addr::from(v4)),
                IpAddr::from(Ipv4Addr::from(v4).to_ipv6_mapped()),
                IpAddr::from(Ipv4Addr::from(v4).to_ipv6_compatible()),
            ] {
                proptest::prop_assert_eq!(ip_text(ip), ip.to_string());
            }
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "10.20.100.255",
            "255.255.255.255",
            "192.168.9.99",
            "fd00:b::1",
            "::",
            "::ffff:10.0.0.1",
            "::1",
            "1::",
            "1:0:0:1::",
            "1:0:1:0:1:0:1:0",
            "fe80::1:0:0:1",
            "2001:db8:0:0:1:0:0:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for len in [0u8, 8, 24, 32, 64, 128] {
            let mut s = String::new();
            push_decimal(&mut s, len);
            assert_eq!(s, len.to_string());
        }
        let a = alloc_to_pb(Allocation {
            pool_id: "p".into(),
            address: "10.1.2.3".parse().unwrap(),
            prefix_len: 16,
            owner: "o".into(),
            created_at_ms: 0,
            gateway: "10.1.0.1".parse().unwrap(),
        });
        assert_eq!(
            (a.address.as_str(), a.cidr.as_str(), a.gateway.as_str()),
            ("10.1.2.3", "10.1.2.3/16", "10.1.0.1")
        );
    }

    #[test]
    fn page_tokens_round_trip() {
        let t = encode_token("net1/0", 0x0a00_0005);
        assert_eq!(decode_token(&t), Some(("net1/0".to_owned(), 0x0a00_0005)));
        assert_eq!(decode_token("zz"), None);
    }

    #[test]
    fn pool_page_tokens_round_trip_and_refuse_what_is_not_one() {
        let t = encode_pool_token("net1/0");
        assert_eq!(decode_pool_token(&t), Some("net1/0".to_owned()));
        for bad in ["", "p", "pz", "p6", "x6e", "pff", "6e6574"] {
            assert_eq!(decode_pool_token(bad), None, "{bad:?}");
        }
    }
}
