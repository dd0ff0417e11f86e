//! The gateway's core: the [`Gateway`] with its store and clients, the one transaction that
//! commits changes with their events (and remembers request ids), the clock and ids, the
//! records of sagas in flight, and lookups by name, id or id prefix.

use tonic::transport::Channel;
use weft_proto::{gateway::v1 as pb, ipam::v1::ipam_service_client::IpamServiceClient};
use weft_store::Db;

use crate::{
    domain::{
        network::NetworkRecord,
        sandbox::{EndpointRecord, SandboxRecord},
    },
    error::GatewayError,
    store::{self, operations::Operation, sandboxes::Owner},
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
    pub(crate) agents: crate::agents::AgentClients,
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
            store::insert_event(&mut tx, &event(revision, now_ms(), *kind, object)).await?;
        }
        if let Some((request_id, method, request, response)) = request {
            store::requests::record(&mut tx, request_id, method, &request, &response, now_ms())
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
            store::requests::record(
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
        match store::requests::applied(&mut conn, request_id).await? {
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
        let mut found = store::networks::find(&mut conn, key).await?;
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

    pub async fn find_sandbox(
        &self,
        field: &str,
        key: &str,
    ) -> Result<SandboxRecord, GatewayError> {
        if key.is_empty() {
            return Err(GatewayError::invalid(
                field,
                key,
                "must name a sandbox (name, id or id prefix)",
            ));
        }
        let mut conn = self.db.read().acquire().await?;
        let mut found = store::sandboxes::find(&mut conn, key).await?;
        match found.len() {
            0 => Err(GatewayError::SandboxNotFound(key.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(GatewayError::invalid(
                field,
                key,
                "id prefix matches several sandboxes",
            )),
        }
    }

    pub async fn endpoints(
        &self,
        owner: Owner,
        id: &str,
    ) -> Result<Vec<EndpointRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::endpoints_of(&mut conn, owner, id).await?)
    }

    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::list(&mut conn).await?)
    }

    /// Crashes the process (SIGKILL, as `kill -9` would) when `step` is the configured fault:
    /// the hook the crash tests use to stop the gateway at each step of a saga.
    pub(crate) fn fault(&self, step: &str) {
        if self.fault.as_deref() == Some(step) {
            tracing::error!(step, "fault injected: killing the gateway");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Records that a saga starts.
    pub(crate) async fn begin(&self, op: &Operation) -> Result<String, GatewayError> {
        let id = op.id();
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone());
        let mut conn = self.db.write().acquire().await?;
        if let Err(e) = store::operations::insert(&mut conn, op, now_ms()).await {
            self.forget(&id);
            return Err(e.into());
        }
        Ok(id)
    }

    /// Drops the record of a saga that was undone inline (its final commit removes it otherwise).
    pub(crate) async fn abandon(&self, id: &str) {
        let done = async {
            let mut conn = self.db.write().acquire().await?;
            store::operations::delete(&mut conn, id).await?;
            Ok::<_, GatewayError>(())
        };
        if let Err(e) = done.await {
            tracing::warn!(operation = id, error = %e, "cannot drop an operation record; the sweep will");
        }
        self.forget(id);
    }

    pub(crate) fn forget(&self, id: &str) {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// One change to the desired state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    InsertNetwork(&'a NetworkRecord),
    UpdateNetwork(&'a NetworkRecord),
    DeleteNetwork(&'a NetworkRecord),
    InsertSandbox(&'a crate::domain::sandbox::SandboxRecord),
    DeleteSandbox(&'a crate::domain::sandbox::SandboxRecord),
    InsertEndpoint(&'a crate::domain::sandbox::EndpointRecord),
    DeleteEndpoint(&'a crate::domain::sandbox::EndpointRecord),
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
                store::networks::insert(conn, n).await.map_err(|e| {
                    if unique(&e) {
                        GatewayError::NameTaken(n.name.clone())
                    } else {
                        e.into()
                    }
                })?;
                pb::event::Object::Network(network_to_pb(n))
            }
            Change::UpdateNetwork(n) => {
                store::networks::update(conn, n).await?;
                pb::event::Object::Network(network_to_pb(n))
            }
            Change::DeleteNetwork(n) => {
                store::networks::delete(conn, &n.id).await.map_err(|e| {
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
