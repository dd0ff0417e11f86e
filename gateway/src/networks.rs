//! Network operations: validation, the IPAM saga, state and events.
//!
//! CreateNetwork is a saga: IPAM pools first (one per subnet, owned by the network's id), then
//! the record and its event in one transaction. When a later step fails, the pools taken so far
//! are released again and the caller gets the error of the step that failed.

use std::collections::BTreeMap;

use prost::Message as _;
use tonic::transport::Channel;
use weft_proto::{
    gateway::v1 as pb,
    ipam::v1::{self as ipb, ipam_service_client::IpamServiceClient},
};
use weft_store::Db;

use crate::{
    error::GatewayError,
    network::{NetworkRecord, NetworkSpec, SubnetRecord},
    store,
    store::sandboxes::Owner,
    to_pb::{event, network_to_pb},
};

/// What a gateway is configured with besides its store and clients.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// This host's name (sandboxes are placed on it).
    pub host: String,
    /// Where this host's agent listens, as reported by ListHosts.
    pub agent_url: String,
    /// Events kept for watchers that resume.
    pub event_history: u64,
    /// Operations older than this are taken as abandoned by a gateway that died.
    pub operation_timeout: std::time::Duration,
    /// Test hook: the saga step at which to kill the process.
    pub fault: Option<String>,
    /// How often agents send heartbeats; three missed ones mark their host down.
    pub heartbeat_interval: std::time::Duration,
}

/// The gateway's state and its clients.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) db: Db,
    pub(crate) ipam: IpamServiceClient<Channel>,
    /// The driver-agent of this host (one host until host registration lands).
    pub(crate) agent: weft_proto::agent::v1::agent_service_client::AgentServiceClient<Channel>,
    pub(crate) host: String,
    pub(crate) agent_url: String,
    /// Sagas in flight in this process (the sweep leaves them alone).
    pub(crate) inflight: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Operations older than this are taken as abandoned by a gateway that died.
    pub(crate) operation_timeout: std::time::Duration,
    /// Test hook: the saga step at which to kill the process.
    pub(crate) fault: Option<String>,
    pub(crate) event_history: u64,
    pub(crate) notify: tokio::sync::watch::Sender<u64>,
    pub(crate) heartbeat_interval: std::time::Duration,
    /// Clients of registered hosts' agents.
    pub(crate) agents: crate::hosts::AgentClients,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn new_id() -> String {
    // 64 hex characters, like Docker's ids.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The predefined networks: `bridge` (a /16 from the default pools, Docker's 172.17.0.0/16 on a
/// fresh host), `host` and `none`.
const PREDEFINED: &[(&str, &str)] = &[("bridge", "bridge"), ("host", "host"), ("none", "none")];

impl Gateway {
    pub fn new(db: Db, ipam: Channel, agent: Channel, options: GatewayOptions) -> Self {
        let (notify, _) = tokio::sync::watch::channel(0);
        Self {
            db,
            ipam: IpamServiceClient::new(ipam),
            agent: weft_proto::agent::v1::agent_service_client::AgentServiceClient::new(agent),
            host: options.host,
            agent_url: options.agent_url,
            inflight: Default::default(),
            operation_timeout: options.operation_timeout,
            fault: options.fault,
            event_history: options.event_history,
            notify,
            heartbeat_interval: options.heartbeat_interval,
            agents: Default::default(),
        }
    }

    /// The newest event revision.
    pub async fn revision(&self) -> Result<u64, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::current_revision(&mut conn).await?)
    }

    /// Closes the store (a restarted gateway can then open the same SQLite file).
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Creates the predefined networks that do not exist yet.
    pub async fn ensure_predefined(&self) -> Result<(), GatewayError> {
        for (name, driver) in PREDEFINED {
            let exists = {
                let mut conn = self.db.read().acquire().await?;
                !store::find_networks(&mut conn, name).await?.is_empty()
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

    async fn request_pool(
        &self,
        network_id: &str,
        index: usize,
        spec: &crate::network::SubnetSpec,
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
    async fn release_pools(&self, subnets: &[SubnetRecord]) {
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

    /// Applies `changes` in one transaction, each with the next revision and its event, records
    /// the request id's answer, and wakes the watchers. Returns the last revision.
    pub(crate) async fn commit(
        &self,
        changes: &[(Change<'_>, pb::EventKind)],
        request: Option<(&str, &str, Vec<u8>, Vec<u8>)>,
    ) -> Result<u64, GatewayError> {
        let mut conn = self.db.write().acquire().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, self.db.begin_write_sql()).await?;
        let mut revision = 0;
        let mut ended = Vec::new();
        for (change, kind) in changes {
            if let Change::EndOperation(id) = change {
                store::operations::delete(&mut tx, id).await?;
                ended.push(*id);
                continue;
            }
            revision = store::next_revision(&mut tx).await?;
            let object = change.apply(&mut tx).await?;
            store::insert_event(&mut tx, &event(revision, *kind, object)).await?;
        }
        if let Some((request_id, method, request, response)) = request {
            store::record_request(&mut tx, request_id, method, &request, &response, now_ms())
                .await?;
        }
        if revision > 0 {
            store::trim_events(&mut tx, revision, self.event_history).await?;
        }
        tx.commit().await?;
        for id in ended {
            self.forget(id);
        }
        if revision > 0 {
            self.notify.send_replace(revision);
        }
        Ok(revision)
    }

    /// Remembers the answer of a mutation that was done outside `commit` (sagas), so that a
    /// retry with its request id gets it. A failure only costs the retry its replay.
    pub(crate) async fn remember<T: prost::Message>(
        &self,
        request_id: &str,
        method: &str,
        request: Vec<u8>,
        answer: &T,
    ) {
        if request_id.is_empty() {
            return;
        }
        let done = async {
            let mut conn = self.db.write().acquire().await?;
            store::record_request(
                &mut conn,
                request_id,
                method,
                &request,
                &answer.encode_to_vec(),
                now_ms(),
            )
            .await?;
            Ok::<_, GatewayError>(())
        };
        if let Err(e) = done.await {
            tracing::warn!(request_id, error = %e, "cannot remember the answer of a request");
        }
    }

    /// A retried mutation: the answer given the first time, if `request_id` was applied.
    pub(crate) async fn replay<T: prost::Message + Default>(
        &self,
        request_id: &str,
        method: &str,
        request: &[u8],
    ) -> Result<Option<T>, GatewayError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        if request_id.len() > 128 {
            return Err(GatewayError::invalid(
                "request_id",
                request_id,
                "longer than 128 characters",
            ));
        }
        let mut conn = self.db.read().acquire().await?;
        match store::applied_request(&mut conn, request_id).await? {
            None => Ok(None),
            Some((m, req, resp)) if m == method && req == request => {
                Ok(T::decode(resp.as_slice()).ok())
            }
            Some(_) => Err(GatewayError::invalid(
                "request_id",
                request_id,
                "already used for a different request",
            )),
        }
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
            if !store::find_networks(&mut conn, &spec.name)
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

    /// The one network `key` names (a name, an id, or a unique id prefix).
    pub async fn find(&self, field: &str, key: &str) -> Result<NetworkRecord, GatewayError> {
        if key.is_empty() {
            return Err(GatewayError::invalid(
                field,
                key,
                "must name a network (name, id or id prefix)",
            ));
        }
        let mut conn = self.db.read().acquire().await?;
        let mut found = store::find_networks(&mut conn, key).await?;
        match found.len() {
            0 => Err(GatewayError::NetworkNotFound(key.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(GatewayError::invalid(
                field,
                key,
                "id prefix matches several networks",
            )),
        }
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
        let all = store::list_networks(&mut tx).await?;
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

/// One change to the desired state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    InsertNetwork(&'a NetworkRecord),
    UpdateNetwork(&'a NetworkRecord),
    DeleteNetwork(&'a NetworkRecord),
    InsertSandbox(&'a crate::sandbox::SandboxRecord),
    DeleteSandbox(&'a crate::sandbox::SandboxRecord),
    InsertEndpoint(&'a crate::sandbox::EndpointRecord),
    DeleteEndpoint(&'a crate::sandbox::EndpointRecord),
    /// The end of a saga: its operation record goes (no event).
    EndOperation(&'a str),
    /// A host registered, or came back up.
    PutHost(&'a crate::store::hosts::StoredHost),
}

impl Change<'_> {
    /// Writes the change; returns the object its event carries. Constraint violations become
    /// the domain errors they mean (a replica may have won a race).
    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<pb::event::Object, GatewayError> {
        use crate::{store::sandboxes, to_pb};
        let unique = |e: &store::StoreError| matches!(e, store::StoreError::Sql(s) if weft_store::is_unique_violation(s));
        let fk = |e: &store::StoreError| matches!(e, store::StoreError::Sql(sqlx::Error::Database(d)) if d.is_foreign_key_violation());
        Ok(match *self {
            Change::InsertNetwork(n) => {
                store::insert_network(conn, n).await.map_err(|e| {
                    if unique(&e) {
                        GatewayError::NameTaken(n.name.clone())
                    } else {
                        e.into()
                    }
                })?;
                pb::event::Object::Network(network_to_pb(n))
            }
            Change::UpdateNetwork(n) => {
                store::update_network(conn, n).await?;
                pb::event::Object::Network(network_to_pb(n))
            }
            Change::DeleteNetwork(n) => {
                store::delete_network(conn, &n.id).await.map_err(|e| {
                    if fk(&e) {
                        GatewayError::Precondition(format!("network {:?} has endpoints", n.name))
                    } else {
                        e.into()
                    }
                })?;
                pb::event::Object::Network(network_to_pb(n))
            }
            Change::InsertSandbox(s) => {
                sandboxes::insert(conn, s).await.map_err(|e| {
                    if unique(&e) {
                        GatewayError::SandboxNameTaken(s.name.clone())
                    } else {
                        e.into()
                    }
                })?;
                pb::event::Object::Sandbox(to_pb::sandbox_to_pb(s, &[]))
            }
            Change::DeleteSandbox(s) => {
                sandboxes::delete(conn, &s.id).await?;
                pb::event::Object::Sandbox(to_pb::sandbox_to_pb(s, &[]))
            }
            Change::InsertEndpoint(e) => {
                sandboxes::insert_endpoint(conn, e).await.map_err(|err| {
                    if unique(&err) {
                        GatewayError::AlreadyConnected {
                            sandbox: e.sandbox_name.clone(),
                            network: e.network_name.clone(),
                        }
                    } else if fk(&err) {
                        GatewayError::NetworkNotFound(e.network_name.clone())
                    } else {
                        err.into()
                    }
                })?;
                pb::event::Object::Endpoint(to_pb::endpoint_to_pb(e, None))
            }
            Change::EndOperation(id) => {
                store::operations::delete(conn, id).await?;
                return Err(GatewayError::Precondition(format!(
                    "operation {id} has no event"
                )));
            }
            Change::DeleteEndpoint(e) => {
                sandboxes::delete_endpoint(conn, &e.id).await?;
                pb::event::Object::Endpoint(to_pb::endpoint_to_pb(e, None))
            }
            Change::PutHost(h) => {
                store::hosts::put(conn, h).await?;
                pb::event::Object::Host(crate::hosts::host_to_pb(h))
            }
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

/// IPAM names its own fields (`subnet`, `gateway`, …); the caller knows them as
/// `ipam.configs[i].…`.
fn rename_ipam_fields(st: tonic::Status, index: usize) -> tonic::Status {
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
