//! `weftctl network create`: Docker's flags turned into one `CreateNetwork` request, with
//! the subnet-by-subnet IPAM configuration Docker builds from them.

use std::io::Write;

use ipnet::IpNet;
use weft_proto::gateway::v1::{self as pb, network_service_client::NetworkServiceClient};

use super::super::Ctx;
use crate::{cli::NetworkCreate, error::CliError, json};

/// Docker's way of combining `--subnet`, `--ip-range`, `--gateway` and `--aux-address`: one
/// IPAM config per subnet, and every range, gateway and reserved address goes to the subnet
/// that contains it.
pub fn ipam_configs(a: &NetworkCreate) -> Result<Vec<pb::IpamConfig>, CliError> {
    let subnets: Vec<IpNet> = a
        .subnet
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|_| CliError::Usage(format!("invalid --subnet {s:?}")))
        })
        .collect::<Result<_, _>>()?;
    if subnets.is_empty()
        && (!a.ip_range.is_empty() || !a.gateway.is_empty() || !a.aux_address.is_empty())
    {
        return Err(CliError::Usage(
            "--ip-range, --gateway and --aux-address need a --subnet that contains them".into(),
        ));
    }
    let mut configs: Vec<pb::IpamConfig> = subnets
        .iter()
        .map(|s| pb::IpamConfig {
            subnet: s.to_string(),
            ..Default::default()
        })
        .collect();
    let owner = |flag: &str, value: &str, contained: &dyn Fn(&IpNet) -> bool| {
        subnets
            .iter()
            .position(contained)
            .ok_or_else(|| CliError::Usage(format!("{flag} {value} is not inside any --subnet")))
    };
    for r in &a.ip_range {
        let range: IpNet = r
            .parse()
            .map_err(|_| CliError::Usage(format!("invalid --ip-range {r:?}")))?;
        let i = owner("--ip-range", r, &|s| s.contains(&range))?;
        if !configs[i].ip_range.is_empty() {
            return Err(CliError::Usage(format!(
                "two --ip-range values for subnet {}: {} and {r}",
                configs[i].subnet, configs[i].ip_range
            )));
        }
        configs[i].ip_range = range.to_string();
    }
    for g in &a.gateway {
        let ip: std::net::IpAddr = g
            .parse()
            .map_err(|_| CliError::Usage(format!("invalid --gateway {g:?}")))?;
        let i = owner("--gateway", g, &|s| s.contains(&ip))?;
        if !configs[i].gateway.is_empty() {
            return Err(CliError::Usage(format!(
                "two --gateway values for subnet {}: {} and {g}",
                configs[i].subnet, configs[i].gateway
            )));
        }
        configs[i].gateway = ip.to_string();
    }
    for (name, addr) in &a.aux_address {
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| CliError::Usage(format!("invalid --aux-address {name}={addr}")))?;
        let i = owner("--aux-address", &format!("{name}={addr}"), &|s| {
            s.contains(&ip)
        })?;
        configs[i]
            .aux_addresses
            .insert(name.clone(), ip.to_string());
    }
    Ok(configs)
}

/// The `CreateNetwork` request for `network create`'s flags.
pub fn create_request(a: &NetworkCreate) -> Result<pb::CreateNetworkRequest, CliError> {
    let configs = ipam_configs(a)?;
    let ipam =
        (!configs.is_empty() || a.ipam_driver.is_some() || !a.ipam_opt.is_empty()).then(|| {
            pb::Ipam {
                driver: a.ipam_driver.clone().unwrap_or_default(),
                configs,
                options: a.ipam_opt.iter().cloned().collect(),
            }
        });
    Ok(pb::CreateNetworkRequest {
        name: a.name.clone(),
        driver: a.driver.clone().unwrap_or_default(),
        ipam,
        enable_ipv4: a.ipv4,
        enable_ipv6: a.ipv6.unwrap_or(false),
        internal: a.internal,
        attachable: a.attachable,
        labels: a.label.iter().cloned().collect(),
        options: a.opt.iter().cloned().collect(),
        dns_servers: a.dns.clone(),
        request_id: String::new(),
        validate_only: a.dry_run,
    })
}

pub(super) async fn create<W: Write>(
    ctx: &mut Ctx<'_, W>,
    a: &NetworkCreate,
) -> Result<(), CliError> {
    let req = create_request(a)?;
    let mut c = NetworkServiceClient::new(ctx.gateway().await?);
    let n = c.create_network(req).await?.into_inner();
    if ctx.json() || a.dry_run {
        ctx.json_pretty(&json::network(&n))
    } else {
        ctx.line(&n.id)
    }
}
