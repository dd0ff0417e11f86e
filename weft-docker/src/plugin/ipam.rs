//! The IPAM driver's calls: pools and addresses of both families, from Weft's default pools
//! and the Weft network's endpoints, so that nothing but the addresses being handed out right
//! now lives in the plugin.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Instant,
};

use serde_json::{Value, json};
use weft_proto::gateway::v1 as pb;

use super::{Driver, GLOBAL_SPACE, Plugin, RESERVATION_TTL};
use crate::{addr::Pool, error::PluginError, protocol as p};

impl Plugin {
    pub(super) async fn request_pool(&self, r: p::RequestPool) -> Result<Value, PluginError> {
        let pool = if r.pool.is_empty() {
            if !r.sub_pool.is_empty() {
                return Err(PluginError::invalid(
                    "SubPool",
                    &r.sub_pool,
                    "given without a Pool",
                ));
            }
            let global = r.address_space == GLOBAL_SPACE;
            Pool::new(&self.free_subnet(r.v6, global).await?, "")?
        } else {
            let pool = Pool::new(&r.pool, &r.sub_pool)?;
            Pool::of_family("Pool", &r.pool, r.v6)?;
            pool
        };
        Ok(json!({"PoolID": pool.id(), "Pool": pool.subnet.to_string(), "Data": {}}))
    }

    /// A free subnet of the family as Weft would pick it for a new network (an overlay one in
    /// Docker's global address space): a /24 from Weft's default IPv4 pools, or a subnet of
    /// the default IPv6 pools' own size (as Weft's CreateNetwork with enable_ipv6 and no IPv6
    /// subnet does).
    async fn free_subnet(&self, v6: bool, global: bool) -> Result<String, PluginError> {
        let mut gw = self.gw().await?;
        let driver = if global {
            Driver::Overlay
        } else {
            Driver::Bridge
        };
        let probe = pb::CreateNetworkRequest {
            name: format!("docker-pool-{}", std::process::id()),
            driver: driver.weft_driver().into(),
            ipam: (!v6).then(|| pb::Ipam {
                configs: vec![pb::IpamConfig {
                    subnet: "0.0.0.0/24".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            enable_ipv4: v6.then_some(false),
            enable_ipv6: v6,
            validate_only: true,
            ..Default::default()
        };
        let net = gw
            .networks
            .create_network(probe)
            .await
            .map_err(|st| PluginError::gateway("pick a free subnet", &st))?
            .into_inner();
        net.ipam
            .and_then(|i| {
                i.configs
                    .into_iter()
                    .map(|c| c.subnet)
                    .find(|s| s.contains(':') == v6)
            })
            .ok_or_else(|| PluginError::Exhausted("Weft's default pools".into()))
    }

    pub(super) async fn request_address(&self, r: p::RequestAddress) -> Result<Value, PluginError> {
        let pool = Pool::parse_id(&r.pool_id)?;
        let options = r.options.unwrap_or_default();
        let gateway =
            options.get(p::GATEWAY_REQUEST.0).map(String::as_str) == Some(p::GATEWAY_REQUEST.1);
        let mut reserved = self.reserved.lock().await;
        let now = Instant::now();
        if gateway {
            // Reserved too: swarm's manager hands out addresses before the network exists.
            let ip = pool.gateway(&r.address)?;
            reserved.insert(ip, now);
            return Ok(json!({"Address": pool.cidr(ip), "Data": {}}));
        }
        reserved.retain(|_, at| now.duration_since(*at) < RESERVATION_TTL);
        let ip = if r.address.is_empty() {
            let taken = self.taken(&pool, &reserved).await?;
            pool.first_free(&taken)
                .ok_or_else(|| PluginError::Exhausted(pool.subnet.to_string()))?
        } else {
            pool.member("Address", &r.address)?
        };
        reserved.insert(ip, now);
        Ok(json!({"Address": pool.cidr(ip), "Data": {}}))
    }

    /// The addresses of `pool` in use: its Weft network's gateways, reserved addresses and
    /// endpoints (both families: only those of the pool's matter), and those handed out but
    /// not joined yet. Before the Weft network exists, the pool's default gateway: swarm's
    /// manager takes the gateway and the containers' addresses before any node creates the
    /// network (a gateway of the user's own is reserved by its request, for a while).
    async fn taken(
        &self,
        pool: &Pool,
        reserved: &BTreeMap<IpAddr, Instant>,
    ) -> Result<BTreeSet<IpAddr>, PluginError> {
        let mut gw = self.gw().await?;
        let mut taken: BTreeSet<IpAddr> = reserved.keys().copied().collect();
        let bare = |a: &str| a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok());
        let subnet = pool.subnet.to_string();
        let mut found = false;
        for summary in gw.networks(None).await? {
            let configs = summary
                .ipam
                .as_ref()
                .map(|i| i.configs.as_slice())
                .unwrap_or_default();
            if !configs.iter().any(|c| c.subnet == subnet) {
                continue;
            }
            let Some(net) = gw.network_by_id(&summary.id).await? else {
                continue;
            };
            found = true;
            for c in net.ipam.iter().flat_map(|i| &i.configs) {
                taken.extend(bare(&c.gateway));
                taken.extend(c.aux_addresses.values().filter_map(|a| bare(a)));
            }
            for e in &net.endpoints {
                taken.extend(bare(&e.ipv4_address));
                taken.extend(bare(&e.ipv6_address));
            }
        }
        if !found {
            taken.insert(pool.gateway("")?);
        }
        Ok(taken)
    }

    pub(super) async fn release_address(&self, r: p::ReleaseAddress) -> Result<Value, PluginError> {
        let pool = Pool::parse_id(&r.pool_id)?;
        if !r.address.is_empty() {
            let ip = pool.member("Address", &r.address)?;
            self.reserved.lock().await.remove(&ip);
        }
        // An endpoint's address is released in Weft by Leave (Disconnect); the gateway's
        // with the network.
        Ok(json!({}))
    }
}
