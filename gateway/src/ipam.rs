//! The gateway's steps on ipam-svc: pools for networks, addresses for endpoints, and their
//! release; IPAM's field names translated into the caller's.

use weft_proto::ipam::v1 as ipb;
use weft_runtime::FieldViolation;

use crate::{
    domain::{
        endpoint::{EndpointRecord, EndpointSpec},
        network::{NetworkRecord, SubnetRecord, SubnetSpec},
    },
    engine::Gateway,
    error::GatewayError,
};

/// The label of the pools the gateway reserves, naming their network's id.
pub(crate) const NETWORK_LABEL: &str = "weft.network";

impl Gateway {
    /// Reserves the subnet of `ipam.configs[index]` for a network, as pool `NETWORK/INDEX`.
    pub(crate) async fn request_pool(
        &self,
        network_id: &str,
        index: usize,
        spec: &SubnetSpec,
    ) -> Result<SubnetRecord, GatewayError> {
        let pool_id = format!("{network_id}/{index}");
        let subnet = spec.subnet.clone();
        let pool = self
            .ipam
            .clone()
            .request_pool(ipb::RequestPoolRequest {
                pool_id: pool_id.clone(),
                // Empty: a subnet of the default pools' own size (IPv4).
                subnet,
                ip_range: spec.ip_range.clone(),
                gateway: spec.gateway.clone(),
                reserved_addresses: spec.aux_addresses.clone().into_iter().collect(),
                labels: [(NETWORK_LABEL.to_owned(), network_id.to_owned())].into(),
                ..Default::default()
            })
            .await
            .map_err(|st| GatewayError::Ipam(rename_ipam_fields(st, index)))?
            .into_inner();
        Ok(SubnetRecord {
            pool_id,
            subnet: pool.subnet,
            ip_range: pool.ip_range,
            gateway: pool.gateway,
            aux_addresses: spec.aux_addresses.clone(),
        })
    }

    /// The subnet IPAM would pick for `ipam.configs[index]` now, reserving nothing (the answer
    /// of `validate_only`).
    pub(crate) async fn probe_pool(
        &self,
        index: usize,
        spec: &SubnetSpec,
    ) -> Result<SubnetRecord, GatewayError> {
        let pool = self
            .ipam
            .clone()
            .request_pool(ipb::RequestPoolRequest {
                subnet: spec.subnet.clone(),
                ip_range: spec.ip_range.clone(),
                gateway: spec.gateway.clone(),
                reserved_addresses: spec.aux_addresses.clone().into_iter().collect(),
                validate_only: true,
                ..Default::default()
            })
            .await
            .map_err(|st| GatewayError::Ipam(rename_ipam_fields(st, index)))?
            .into_inner();
        Ok(SubnetRecord {
            pool_id: String::new(),
            subnet: pool.subnet,
            ip_range: pool.ip_range,
            gateway: pool.gateway,
            aux_addresses: spec.aux_addresses.clone(),
        })
    }

    /// Releases the pools of a network that is gone or was never recorded. Errors are logged:
    /// a pool left behind stays reserved in IPAM (labelled `weft.network` with the network's
    /// id) until the sweep releases it (`recovery.rs`).
    pub(crate) async fn release_pools(&self, subnets: &[SubnetRecord]) {
        let ids: Vec<String> = subnets.iter().map(|s| s.pool_id.clone()).collect();
        self.release_pool_ids(&ids).await;
    }

    /// Releases pools by id (each with whatever it still holds); a pool already gone is fine.
    pub(crate) async fn release_pool_ids(&self, ids: &[String]) {
        for pool_id in ids {
            if let Err(st) = self
                .ipam
                .clone()
                .release_pool(ipb::ReleasePoolRequest {
                    pool_id: pool_id.clone(),
                    force: true,
                })
                .await
                && st.code() != tonic::Code::NotFound
            {
                tracing::warn!(pool = %pool_id, error = %st.message(), "releasing a pool failed");
            }
        }
    }

    /// Addresses for `ep` from each of the network's pools, held by `owner`; on failure what
    /// was taken is given back.
    pub(crate) async fn allocate(
        &self,
        net: &NetworkRecord,
        settings: &EndpointSpec,
        owner: &str,
        ep: &mut EndpointRecord,
    ) -> Result<(), GatewayError> {
        for s in &net.subnets {
            let v6 = s.subnet.contains(':');
            let wanted = settings.address(v6);
            let alloc = self
                .ipam
                .clone()
                .request_address(ipb::RequestAddressRequest {
                    pool_id: s.pool_id.clone(),
                    owner: owner.to_owned(),
                    address: wanted.to_owned(),
                })
                .await;
            let alloc = match alloc {
                Ok(a) => a.into_inner(),
                Err(st) => {
                    self.release_owner(owner).await;
                    let field = if v6 {
                        "settings.ipv6_address"
                    } else {
                        "settings.ipv4_address"
                    };
                    return Err(GatewayError::Ipam(rename_address_field(st, field, wanted)));
                }
            };
            let gateway = if net.internal {
                String::new()
            } else {
                alloc.gateway
            };
            if v6 && ep.ipv6_address.is_empty() {
                ep.ipv6_address = alloc.cidr;
                ep.ipv6_gateway = gateway;
            } else if !v6 && ep.ipv4_address.is_empty() {
                ep.ipv4_address = alloc.cidr;
                ep.gateway = gateway;
            }
        }
        Ok(())
    }

    /// Every allocation in a pool.
    pub(crate) async fn allocations_in(
        &self,
        pool_id: &str,
    ) -> Result<Vec<ipb::Allocation>, GatewayError> {
        self.every_page(ipb::ListAllocationsRequest {
            pool_id: pool_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await
    }

    /// The allocations `owner` holds (one per pool at most, but every page is followed).
    pub(crate) async fn allocations_of(
        &self,
        owner: &str,
    ) -> Result<Vec<ipb::Allocation>, GatewayError> {
        self.every_page(ipb::ListAllocationsRequest {
            owner: owner.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Every pool the gateway reserved for a network (labelled `weft.network`), every page.
    pub(crate) async fn network_pools(&self) -> Result<Vec<ipb::Pool>, GatewayError> {
        let mut req = ipb::ListPoolsRequest {
            page_size: 1000,
            ..Default::default()
        };
        let mut pools = Vec::new();
        loop {
            let page = self
                .ipam
                .clone()
                .list_pools(req.clone())
                .await
                .map_err(GatewayError::Ipam)?
                .into_inner();
            pools.extend(
                page.pools
                    .into_iter()
                    .filter(|p| p.labels.contains_key(NETWORK_LABEL)),
            );
            if page.next_page_token.is_empty() {
                return Ok(pools);
            }
            req.page_token = page.next_page_token;
        }
    }

    /// Every allocation `req` lists, following `next_page_token` to the last page.
    async fn every_page(
        &self,
        mut req: ipb::ListAllocationsRequest,
    ) -> Result<Vec<ipb::Allocation>, GatewayError> {
        let mut allocations = Vec::new();
        loop {
            let page = self
                .ipam
                .clone()
                .list_allocations(req.clone())
                .await
                .map_err(GatewayError::Ipam)?
                .into_inner();
            allocations.extend(page.allocations);
            if page.next_page_token.is_empty() {
                return Ok(allocations);
            }
            req.page_token = page.next_page_token;
        }
    }

    /// [`Gateway::release_owner`] of each of `owners` (an empty one names no one), side by
    /// side.
    pub(crate) async fn release_owners(&self, owners: &[String]) {
        futures::future::join_all(
            owners
                .iter()
                .filter(|o| !o.is_empty())
                .map(|o| self.release_owner(o)),
        )
        .await;
    }

    /// Releases every address `owner` holds (idempotent).
    pub(crate) async fn release_owner(&self, owner: &str) {
        if let Err(st) = self
            .ipam
            .clone()
            .release_address(ipb::ReleaseAddressRequest {
                pool_id: String::new(),
                target: Some(ipb::release_address_request::Target::Owner(
                    owner.to_owned(),
                )),
            })
            .await
        {
            tracing::warn!(owner, error = %st.message(), "releasing addresses failed");
        }
    }
}

/// IPAM names its own fields (`subnet`, `gateway`, …); the caller knows them as
/// `ipam.configs[i].…`.
pub(crate) fn rename_ipam_fields(st: tonic::Status, index: usize) -> tonic::Status {
    if st.code() != tonic::Code::InvalidArgument {
        return st;
    }
    use tonic_types::StatusExt as _;
    let details = st.get_error_details();
    let Some(bad) = details.bad_request() else {
        return st;
    };
    let rename = |f: &str| match f {
        "subnet" | "ip_range" | "gateway" => format!("ipam.configs[{index}].{f}"),
        f if f.starts_with("reserved_addresses[") => {
            format!(
                "ipam.configs[{index}].aux_addresses{}",
                f.trim_start_matches("reserved_addresses")
            )
        }
        f => format!("ipam.configs[{index}].{f}"),
    };
    let violations: Vec<FieldViolation> = bad
        .field_violations
        .iter()
        .map(|v| {
            let (value, reason) = v
                .description
                .split_once(": ")
                .map_or((String::new(), v.description.clone()), |(a, b)| {
                    (a.trim_matches('"').to_owned(), b.to_owned())
                });
            FieldViolation::new(rename(&v.field), value, reason)
        })
        .collect();
    weft_runtime::invalid_argument(&violations)
}

/// IPAM calls the requested address `address`; the caller knows it by its settings field.
fn rename_address_field(st: tonic::Status, field: &str, value: &str) -> tonic::Status {
    use tonic_types::StatusExt as _;
    if st.code() != tonic::Code::InvalidArgument {
        return st;
    }
    let reason = st
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first())
        .and_then(|v| v.description.split_once(": ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| st.message().to_owned());
    weft_runtime::invalid_argument(&[FieldViolation::new(field, value, reason)])
}
