//! The gateway's steps on ipam-svc: pools for networks, addresses for endpoints, and their
//! release; IPAM's field names translated into the caller's.

use weft_proto::ipam::v1 as ipb;
use weft_runtime::FieldViolation;

use crate::{
    domain::{
        network::{NetworkRecord, SubnetRecord},
        sandbox::EndpointRecord,
    },
    engine::Gateway,
    error::GatewayError,
};
use weft_proto::gateway::v1 as pb;

impl Gateway {
    pub(crate) async fn request_pool(
        &self,
        network_id: &str,
        index: usize,
        spec: &crate::domain::network::SubnetSpec,
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
                labels: [("weft.network".to_owned(), network_id.to_owned())].into(),
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

    /// Releases pools taken by a saga that did not complete; errors are logged (the sweep of a
    /// later issue finds what is left).
    pub(crate) async fn release_pools(&self, subnets: &[SubnetRecord]) {
        for s in subnets {
            if let Err(st) = self
                .ipam
                .clone()
                .release_pool(ipb::ReleasePoolRequest {
                    pool_id: s.pool_id.clone(),
                    force: true,
                })
                .await
                && st.code() != tonic::Code::NotFound
            {
                tracing::warn!(pool = %s.pool_id, error = %st.message(), "releasing a pool failed");
            }
        }
    }

    /// Addresses for `ep` from each of the network's pools, held by `owner`; on failure what
    /// was taken is given back.
    pub(crate) async fn allocate(
        &self,
        net: &NetworkRecord,
        settings: &pb::EndpointSettings,
        owner: &str,
        ep: &mut EndpointRecord,
    ) -> Result<(), GatewayError> {
        for s in &net.subnets {
            let v6 = s.subnet.contains(':');
            let wanted = if v6 {
                &settings.ipv6_address
            } else {
                &settings.ipv4_address
            };
            let alloc = self
                .ipam
                .clone()
                .request_address(ipb::RequestAddressRequest {
                    pool_id: s.pool_id.clone(),
                    owner: owner.to_owned(),
                    address: wanted.clone(),
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
    let violations: Vec<weft_runtime::FieldViolation> = bad
        .field_violations
        .iter()
        .map(|v| {
            let (value, reason) = v
                .description
                .split_once(": ")
                .map_or((String::new(), v.description.clone()), |(a, b)| {
                    (a.trim_matches('"').to_owned(), b.to_owned())
                });
            weft_runtime::FieldViolation::new(rename(&v.field), value, reason)
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
