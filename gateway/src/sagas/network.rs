//! Network operations: the IPAM saga, state and events.
//!
//! CreateNetwork is a saga: IPAM pools first (one per subnet, owned by the network's id), then
//! the record and its event in one transaction. When a later step fails, the pools taken so far
//! are released again and the caller gets the error of the step that failed.

use std::collections::BTreeMap;

use prost::Message as _;
use weft_proto::{gateway::v1 as pb, ipam::v1 as ipb};

use crate::{
    domain::network::{NetworkRecord, NetworkSpec, SubnetRecord},
    engine::{Change, Gateway, new_id, now_ms},
    error::GatewayError,
    ipam::rename_ipam_fields,
    store::{self, sandboxes::Owner},
    to_pb::network_to_pb,
};

/// The predefined networks: `bridge` (a /16 from the default pools, Docker's 172.17.0.0/16 on a
/// fresh host), `host` and `none`.
const PREDEFINED: &[(&str, &str)] = &[("bridge", "bridge"), ("host", "host"), ("none", "none")];

impl Gateway {
    /// Creates the predefined networks that do not exist yet.
    pub async fn ensure_predefined(&self) -> Result<(), GatewayError> {
        for (name, driver) in PREDEFINED {
            let exists = {
                let mut conn = self.db.read().acquire().await?;
                !store::networks::find(&mut conn, name).await?.is_empty()
            };
            if exists {
                continue;
            }
            let id = new_id();
            let subnets = if *driver == "bridge" {
                vec![self.request_pool(&id, 0, &Default::default()).await?]
            } else {
                Vec::new()
            };
            let now = now_ms();
            let rec = NetworkRecord {
                id,
                name: (*name).to_owned(),
                driver: (*driver).to_owned(),
                scope: "local".into(),
                subnets,
                enable_ipv4: *driver == "bridge",
                enable_ipv6: false,
                internal: false,
                attachable: false,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
                dns_servers: Vec::new(),
                predefined: true,
                created_at_ms: now,
                updated_at_ms: now,
            };
            if let Err(e) = self
                .commit_network(&rec, pb::EventKind::NetworkCreated, None)
                .await
            {
                self.release_pools(&rec.subnets).await;
                return Err(e);
            }
            tracing::info!(network = %name, "predefined network created");
        }
        Ok(())
    }

    /// Stores `rec` (new or changed, or removed for NETWORK_REMOVED) with its event in one
    /// transaction, and the request id's answer when there is one.
    async fn commit_network(
        &self,
        rec: &NetworkRecord,
        kind: pb::EventKind,
        request: Option<(&str, &str, Vec<u8>, Vec<u8>)>,
    ) -> Result<u64, GatewayError> {
        let change = match kind {
            pb::EventKind::NetworkCreated => Change::InsertNetwork(rec),
            pb::EventKind::NetworkRemoved => Change::DeleteNetwork(rec),
            _ => Change::UpdateNetwork(rec),
        };
        self.commit(&[(change, kind)], request).await
    }

    pub async fn create_network(
        &self,
        req: pb::CreateNetworkRequest,
    ) -> Result<pb::Network, GatewayError> {
        let request_id = req.request_id.clone();
        let fingerprint = pb::CreateNetworkRequest {
            request_id: String::new(),
            ..req.clone()
        }
        .encode_to_vec();
        if let Some(done) = self
            .replay(&request_id, "CreateNetwork", &fingerprint)
            .await?
        {
            return Ok(done);
        }
        let validate_only = req.validate_only;
        let spec =
            NetworkSpec::validate(crate::to_pb::raw_network(req)).map_err(GatewayError::Invalid)?;
        {
            let mut conn = self.db.read().acquire().await?;
            if !store::networks::find(&mut conn, &spec.name)
                .await?
                .iter()
                .all(|n| n.name != spec.name)
            {
                return Err(GatewayError::NameTaken(spec.name));
            }
        }
        let id = new_id();
        let mut subnets = Vec::new();
        for (i, s) in spec.subnet_requests().iter().enumerate() {
            if validate_only {
                let pool = self
                    .ipam
                    .clone()
                    .request_pool(ipb::RequestPoolRequest {
                        subnet: s.subnet.clone(),
                        ip_range: s.ip_range.clone(),
                        gateway: s.gateway.clone(),
                        reserved_addresses: s.aux_addresses.clone().into_iter().collect(),
                        validate_only: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|st| GatewayError::Ipam(rename_ipam_fields(st, i)))?
                    .into_inner();
                subnets.push(SubnetRecord {
                    pool_id: String::new(),
                    subnet: pool.subnet,
                    ip_range: pool.ip_range,
                    gateway: pool.gateway,
                    aux_addresses: s.aux_addresses.clone(),
                });
                continue;
            }
            match self.request_pool(&id, i, s).await {
                Ok(r) => subnets.push(r),
                Err(e) => {
                    self.release_pools(&subnets).await;
                    return Err(e);
                }
            }
        }
        let now = now_ms();
        // Overlay networks span hosts: Docker calls that scope "swarm"; here it is "global".
        let scope = if spec.driver == "overlay" {
            "global"
        } else {
            "local"
        };
        let rec = NetworkRecord {
            id: if validate_only { String::new() } else { id },
            name: spec.name,
            driver: spec.driver,
            scope: scope.into(),
            subnets,
            enable_ipv4: spec.enable_ipv4,
            enable_ipv6: spec.enable_ipv6,
            internal: spec.internal,
            attachable: spec.attachable,
            labels: spec.labels,
            options: spec.options,
            dns_servers: spec.dns_servers,
            predefined: false,
            created_at_ms: if validate_only { 0 } else { now },
            updated_at_ms: if validate_only { 0 } else { now },
        };
        let answer = network_to_pb(&rec);
        if validate_only {
            return Ok(answer);
        }
        let request = (!request_id.is_empty()).then(|| {
            (
                request_id.as_str(),
                "CreateNetwork",
                fingerprint,
                answer.encode_to_vec(),
            )
        });
        if let Err(e) = self
            .commit_network(&rec, pb::EventKind::NetworkCreated, request)
            .await
        {
            self.release_pools(&rec.subnets).await;
            return Err(e);
        }
        tracing::info!(network = %rec.name, id = %rec.id, driver = %rec.driver, "network created");
        Ok(answer)
    }

    pub async fn list_networks(
        &self,
        f: &pb::ListNetworksRequest,
    ) -> Result<(Vec<NetworkRecord>, u64), GatewayError> {
        for (i, l) in f.label.iter().enumerate() {
            if l.is_empty() || l.starts_with('=') {
                return Err(GatewayError::invalid(
                    format!("label[{i}]"),
                    l,
                    "expected key or key=value",
                ));
            }
        }
        // One read snapshot for the revision and the list, so that a watcher starting from this
        // revision neither misses nor repeats a change.
        let mut conn = self.db.read().acquire().await?;
        let begin = match self.db.backend() {
            weft_store::Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            weft_store::Backend::Sqlite => "BEGIN",
        };
        let mut tx = sqlx::Connection::begin_with(&mut *conn, begin).await?;
        let revision = store::current_revision(&mut tx).await?;
        let all = store::networks::list(&mut tx).await?;
        tx.commit().await?;
        let any = |values: &[String], pred: &dyn Fn(&str) -> bool| {
            values.is_empty() || values.iter().any(|v| pred(v))
        };
        let nets = all
            .into_iter()
            .filter(|n| any(&f.name, &|v| n.name.contains(v)))
            .filter(|n| any(&f.id, &|v| n.id.starts_with(v)))
            .filter(|n| any(&f.driver, &|v| n.driver == v))
            .filter(|n| any(&f.scope, &|v| n.scope == v))
            .filter(|n| f.label.iter().all(|l| label_matches(&n.labels, l)))
            .collect();
        Ok((nets, revision))
    }

    pub async fn update_network(
        &self,
        req: pb::UpdateNetworkRequest,
    ) -> Result<pb::Network, GatewayError> {
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(GatewayError::invalid(
                "update_mask",
                "",
                "name the fields to change (labels, dns_servers)",
            ));
        }
        for p in &paths {
            if p != "labels" && p != "dns_servers" {
                return Err(GatewayError::invalid(
                    "update_mask",
                    p,
                    "only labels and dns_servers can change",
                ));
            }
        }
        for (i, d) in req.dns_servers.iter().enumerate() {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(GatewayError::invalid(
                    format!("dns_servers[{i}]"),
                    d,
                    "not an IP address",
                ));
            }
        }
        let mut rec = self.find("network", &req.network).await?;
        if rec.predefined {
            return Err(GatewayError::Precondition(format!(
                "network {:?} is predefined and cannot be changed",
                rec.name
            )));
        }
        if paths.iter().any(|p| p == "labels") {
            rec.labels = req.labels.into_iter().collect();
        }
        if paths.iter().any(|p| p == "dns_servers") {
            rec.dns_servers = req.dns_servers;
        }
        rec.updated_at_ms = now_ms();
        self.commit_network(&rec, pb::EventKind::NetworkUpdated, None)
            .await?;
        Ok(network_to_pb(&rec))
    }

    pub async fn delete_network(
        &self,
        req: pb::DeleteNetworkRequest,
    ) -> Result<pb::DeleteNetworkResponse, GatewayError> {
        let fingerprint = pb::DeleteNetworkRequest {
            request_id: String::new(),
            ..req.clone()
        }
        .encode_to_vec();
        if let Some(done) = self
            .replay(&req.request_id, "DeleteNetwork", &fingerprint)
            .await?
        {
            return Ok(done);
        }
        let rec = self.find("network", &req.network).await?;
        if rec.predefined {
            return Err(GatewayError::Precondition(format!(
                "network {:?} is predefined and cannot be removed",
                rec.name
            )));
        }
        let endpoints = self.endpoints(Owner::Network, &rec.id).await?;
        if !endpoints.is_empty() {
            let names: Vec<_> = endpoints.iter().map(|e| e.sandbox_name.as_str()).collect();
            return Err(GatewayError::Precondition(format!(
                "network {:?} has active endpoints: {}",
                rec.name,
                names.join(", ")
            )));
        }
        let answer = pb::DeleteNetworkResponse {
            id: rec.id.clone(),
            name: rec.name.clone(),
        };
        let request = (!req.request_id.is_empty()).then(|| {
            (
                req.request_id.as_str(),
                "DeleteNetwork",
                fingerprint,
                answer.encode_to_vec(),
            )
        });
        self.commit_network(&rec, pb::EventKind::NetworkRemoved, request)
            .await?;
        self.release_pools(&rec.subnets).await;
        self.remove_on_hosts(&rec.id).await;
        tracing::info!(network = %rec.name, id = %rec.id, "network removed");
        Ok(answer)
    }

    pub async fn prune(
        &self,
        req: pb::PruneNetworksRequest,
    ) -> Result<pb::PruneNetworksResponse, GatewayError> {
        let until_ms = req.until.map(|t| t.seconds.saturating_mul(1000));
        let (nets, _) = self
            .list_networks(&pb::ListNetworksRequest {
                label: req.label.clone(),
                ..Default::default()
            })
            .await?;
        let mut deleted = Vec::new();
        for n in nets {
            let excluded = req.label_not.iter().any(|l| label_matches(&n.labels, l));
            let too_new = until_ms.is_some_and(|u| n.created_at_ms >= u);
            if n.predefined || excluded || too_new {
                continue;
            }
            if !self.endpoints(Owner::Network, &n.id).await?.is_empty() {
                continue;
            }
            if !req.validate_only {
                self.delete_network(pb::DeleteNetworkRequest {
                    network: n.id.clone(),
                    request_id: String::new(),
                })
                .await?;
            }
            deleted.push(n.name);
        }
        Ok(pb::PruneNetworksResponse {
            networks_deleted: deleted,
        })
    }
}

/// `key` or `key=value` against a network's labels.
fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|lv| lv == v),
        None => labels.contains_key(filter),
    }
}
