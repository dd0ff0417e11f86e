//! Network operations: CreateNetwork's IPAM saga, UpdateNetwork, DeleteNetwork, prune, and
//! the predefined networks.
//!
//! CreateNetwork is a saga: IPAM pools first (one per subnet, owned by the network's id), then
//! the record and its event in one transaction. When a later step fails, the pools taken so far
//! are released again and the caller gets the error of the step that failed.

use std::collections::BTreeMap;

use crate::{
    domain::{
        host::encrypted_overlay_refusal,
        list::{NetworkFilter, label_matches},
        network::{NetworkRecord, NetworkSpec, NetworkUpdate, PruneSpec, SubnetRecord, VXLAN_IDS},
        parent::{ON_PARENT, parent_conflict},
    },
    engine::{Change, Gateway, Remember, new_id},
    error::GatewayError,
    store::{self, sandboxes::Owner},
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
            let now = self.clock.now_ms();
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
            if let Err(e) = self.commit(&[Change::InsertNetwork(&rec)], None).await {
                self.release_pools(&rec.subnets).await;
                return Err(e);
            }
            tracing::info!(network = %name, "predefined network created");
        }
        Ok(())
    }

    /// Creates a network: its name must be free, then its subnets are reserved in IPAM, then it
    /// is recorded (with `remember`'s answer). With `validate_only`, returns the network as it
    /// would be (subnets as IPAM would pick them now, no id) and keeps nothing.
    pub async fn create_network(
        &self,
        spec: NetworkSpec,
        validate_only: bool,
        remember: Option<Remember<'_, NetworkRecord>>,
    ) -> Result<NetworkRecord, GatewayError> {
        self.network_name_free(&spec.name).await?;
        if spec.driver == "overlay" && spec.options.get("encrypted").is_some_and(|v| v != "false") {
            return Err(GatewayError::Precondition(encrypted_overlay_refusal(
                &self.all_hosts().await?,
            )));
        }
        self.parent_free(&spec).await?;
        if validate_only {
            let mut subnets = Vec::new();
            for (i, s) in spec.subnet_requests().iter().enumerate() {
                subnets.push(self.probe_pool(i, s).await?);
            }
            return Ok(network_record(spec, String::new(), subnets, 0));
        }
        let id = new_id();
        let mut spec = spec;
        if spec.driver == "overlay" && !spec.options.contains_key(VXLAN_IDS) {
            let vni = self.free_vni().await?;
            spec.options.insert(VXLAN_IDS.to_owned(), vni.to_string());
        }
        let subnets = self.reserve_subnets(&id, &spec).await?;
        let rec = network_record(spec, id, subnets, self.clock.now_ms());
        let request = remember.map(|r| (r.key, (r.answer)(&rec)));
        if let Err(e) = self.commit(&[Change::InsertNetwork(&rec)], request).await {
            self.release_pools(&rec.subnets).await;
            return Err(e);
        }
        tracing::info!(network = %rec.name, id = %rec.id, driver = %rec.driver, "network created");
        Ok(rec)
    }

    /// The lowest VXLAN id of `--vni-range` no network has. Two replicas may pick the same one
    /// at once: the store's unique key lets one commit, the other is ALREADY_EXISTS (retry).
    async fn free_vni(&self) -> Result<u32, GatewayError> {
        let (start, end) = self.vni_range;
        let used = {
            let mut conn = self.db.read().acquire().await?;
            store::networks::vnis_in(&mut conn, start, end).await?
        };
        let mut next = start;
        for v in used {
            if v != next {
                break;
            }
            next = next.saturating_add(1);
        }
        if next > end {
            return Err(GatewayError::Exhausted(format!(
                "every VXLAN id of --vni-range {start}-{end} is in use"
            )));
        }
        Ok(next)
    }

    async fn network_name_free(&self, name: &str) -> Result<(), GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        let found = store::networks::find(&mut conn, name).await?;
        if found.iter().any(|n| n.name == name) {
            return Err(GatewayError::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    /// A macvlan or ipvlan network's subnets overlap none of another on its parent
    /// ([`parent_conflict`]): ALREADY_EXISTS naming that network.
    async fn parent_free(&self, spec: &NetworkSpec) -> Result<(), GatewayError> {
        if !ON_PARENT.contains(&spec.driver.as_str()) {
            return Ok(());
        }
        let mut existing = Vec::new();
        let mut conn = self.db.read().acquire().await?;
        for driver in ON_PARENT {
            existing.extend(store::networks::by_driver(&mut conn, driver).await?);
        }
        match parent_conflict(spec, &existing) {
            Some(why) => Err(GatewayError::AlreadyExists(why)),
            None => Ok(()),
        }
    }

    /// One IPAM pool per subnet; all or nothing.
    async fn reserve_subnets(
        &self,
        id: &str,
        spec: &NetworkSpec,
    ) -> Result<Vec<SubnetRecord>, GatewayError> {
        let mut subnets = Vec::new();
        for (i, s) in spec.subnet_requests().iter().enumerate() {
            match self.request_pool(id, i, s).await {
                Ok(r) => subnets.push(r),
                Err(e) => {
                    self.release_pools(&subnets).await;
                    return Err(e);
                }
            }
        }
        Ok(subnets)
    }

    /// Replaces the labels and DNS upstreams the update names; predefined networks do not
    /// change.
    pub async fn update_network(
        &self,
        update: NetworkUpdate,
    ) -> Result<NetworkRecord, GatewayError> {
        let mut rec = self.find("network", &update.network).await?;
        if rec.predefined {
            return Err(GatewayError::Precondition(format!(
                "network {:?} is predefined and cannot be changed",
                rec.name
            )));
        }
        if let Some(labels) = update.labels {
            rec.labels = labels;
        }
        if let Some(servers) = update.dns_servers {
            rec.dns_servers = servers;
        }
        rec.updated_at_ms = self.clock.now_ms();
        self.commit(&[Change::UpdateNetwork(&rec)], None).await?;
        Ok(rec)
    }

    /// Deletes a network without endpoints (with `remember`'s answer), then releases its pools
    /// and removes it from every host.
    pub async fn delete_network(
        &self,
        network: &str,
        remember: Option<Remember<'_, NetworkRecord>>,
    ) -> Result<NetworkRecord, GatewayError> {
        let rec = self.find("network", network).await?;
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
        let request = remember.map(|r| (r.key, (r.answer)(&rec)));
        self.commit(&[Change::DeleteNetwork(&rec)], request).await?;
        self.release_pools(&rec.subnets).await;
        self.remove_on_hosts(&rec.id).await;
        tracing::info!(network = %rec.name, id = %rec.id, "network removed");
        Ok(rec)
    }

    /// Deletes every unused user-defined network the spec selects; returns their names.
    pub async fn prune(&self, spec: PruneSpec) -> Result<Vec<String>, GatewayError> {
        let filter = NetworkFilter {
            label: spec.label.clone(),
            ..Default::default()
        }
        .validate()
        .map_err(GatewayError::Invalid)?;
        let (nets, _) = self.list_networks(&filter).await?;
        let mut deleted = Vec::new();
        for n in nets {
            let excluded = spec.label_not.iter().any(|l| label_matches(&n.labels, l));
            let too_new = spec.until_ms.is_some_and(|u| n.created_at_ms >= u);
            if n.predefined || excluded || too_new {
                continue;
            }
            if !self.endpoints(Owner::Network, &n.id).await?.is_empty() {
                continue;
            }
            if !spec.validate_only {
                self.delete_network(&n.id, None).await?;
            }
            deleted.push(n.name);
        }
        Ok(deleted)
    }
}

/// The record of a new network (an empty id and time for a `validate_only` answer).
fn network_record(
    spec: NetworkSpec,
    id: String,
    subnets: Vec<SubnetRecord>,
    now_ms: i64,
) -> NetworkRecord {
    // Overlay networks span hosts: Docker calls that scope "swarm"; here it is "global".
    let scope = if spec.driver == "overlay" {
        "global"
    } else {
        "local"
    };
    NetworkRecord {
        id,
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
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    }
}
