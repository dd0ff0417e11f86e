//! The changes a commit applies ([`Change`]): each one's SQL, its event, and the hosts whose
//! desired state it moves (the per-host change feed). [`crate::engine`]'s commit runs them in
//! its one transaction; store errors that mean a domain error (a name taken, a network in use)
//! become that error here.

use weft_proto::gateway::v1 as pb;

use crate::{
    domain::{
        endpoint::EndpointRecord, host::HostRecord, network::NetworkRecord, sandbox::SandboxRecord,
    },
    error::GatewayError,
    store::{self, GatewayStoreError},
    to_pb,
};

/// One change to the desired state; each but `EndOperation` publishes an event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    InsertNetwork(&'a NetworkRecord),
    UpdateNetwork(&'a NetworkRecord),
    DeleteNetwork(&'a NetworkRecord),
    InsertSandbox(&'a SandboxRecord),
    DeleteSandbox(&'a SandboxRecord),
    InsertEndpoint(&'a EndpointRecord),
    DeleteEndpoint(&'a EndpointRecord),
    /// An endpoint's record changed in place (its host went down past the grace, or came back).
    UpdateEndpoint(&'a EndpointRecord),
    /// The end of a saga: its operation record goes (no event).
    EndOperation(&'a str),
    /// A host registered, or came back up.
    PutHost(&'a HostRecord),
    /// A host is forgotten (its sandboxes went before): its record and desired-state
    /// revision go, its removal time is kept (certificates issued before it are refused) and
    /// the tokens bound to it are revoked.
    RemoveHost(&'a HostRecord, i64),
}

impl Change<'_> {
    /// Writes the change; returns its event. Constraint violations become the domain errors
    /// they mean (a replica may have won a race).
    /// The hosts whose desired state this change moves (the per-host change feed): a
    /// sandbox's or endpoint's own host, every host using an updated network, a host that
    /// registers. A new network, or one deleted (it has no endpoints), moves none.
    pub(crate) async fn hosts(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Vec<String>, GatewayError> {
        Ok(match *self {
            Change::InsertSandbox(s) | Change::DeleteSandbox(s) => vec![s.host.clone()],
            Change::InsertEndpoint(e) | Change::DeleteEndpoint(e) | Change::UpdateEndpoint(e) => {
                // An overlay's endpoint is every host of the network's peer (see `overlay`).
                let mut hosts = if e.global {
                    store::sandboxes::hosts_on_network(conn, &e.network_id).await?
                } else {
                    Vec::new()
                };
                if !hosts.contains(&e.host) {
                    hosts.push(e.host.clone());
                }
                hosts
            }
            Change::UpdateNetwork(n) => store::sandboxes::hosts_on_network(conn, &n.id).await?,
            Change::PutHost(h) => vec![h.name.clone()],
            // Its feed goes with it.
            Change::RemoveHost(..) => Vec::new(),
            Change::InsertNetwork(_) | Change::DeleteNetwork(_) | Change::EndOperation(_) => {
                Vec::new()
            }
        })
    }

    pub(crate) async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<(pb::EventKind, pb::event::Object), GatewayError> {
        use pb::{EventKind as K, event::Object as O};
        use store::{networks, sandboxes};
        Ok(match *self {
            Change::InsertNetwork(n) => {
                networks::insert(conn, n)
                    .await
                    .map_err(|e| on_unique(e, || GatewayError::NameTaken(n.name.clone())))?;
                if let Some(vni) = n.vni() {
                    networks::put_vni(conn, vni, &n.id).await.map_err(|e| {
                        on_unique(e, || {
                            GatewayError::AlreadyExists(format!(
                                "VXLAN id {vni} is taken by another overlay network"
                            ))
                        })
                    })?;
                }
                (K::NetworkCreated, O::Network(to_pb::network_to_pb(n)))
            }
            Change::UpdateNetwork(n) => {
                networks::update(conn, n).await?;
                (K::NetworkUpdated, O::Network(to_pb::network_to_pb(n)))
            }
            Change::DeleteNetwork(n) => {
                networks::delete_vni(conn, &n.id).await?;
                networks::delete(conn, &n.id).await.map_err(|e| {
                    on_foreign_key(e, || {
                        GatewayError::Precondition(format!("network {:?} has endpoints", n.name))
                    })
                })?;
                (K::NetworkRemoved, O::Network(to_pb::network_to_pb(n)))
            }
            Change::InsertSandbox(s) => {
                sandboxes::insert(conn, s)
                    .await
                    .map_err(|e| on_unique(e, || GatewayError::SandboxNameTaken(s.name.clone())))?;
                store::ports::insert_of(conn, s).await?;
                (K::SandboxCreated, O::Sandbox(to_pb::sandbox_to_pb(s, &[])))
            }
            Change::DeleteSandbox(s) => {
                store::ports::delete_of(conn, &s.id).await?;
                sandboxes::delete(conn, &s.id).await?;
                (K::SandboxRemoved, O::Sandbox(to_pb::sandbox_to_pb(s, &[])))
            }
            Change::InsertEndpoint(_) | Change::DeleteEndpoint(_) | Change::UpdateEndpoint(_) => {
                return self.apply_endpoint(conn).await;
            }
            Change::PutHost(h) => {
                store::hosts::put(conn, h).await?;
                (K::HostUp, O::Host(to_pb::host_to_pb(h)))
            }
            Change::RemoveHost(h, at_ms) => {
                store::hosts::delete(conn, &h.name).await?;
                store::hosts::put_removal(conn, &h.name, at_ms).await?;
                store::tokens::revoke_for_host(conn, &h.name, at_ms).await?;
                (K::HostRemoved, O::Host(to_pb::host_to_pb(h)))
            }
            Change::EndOperation(id) => {
                return Err(GatewayError::Precondition(format!(
                    "operation {id} has no event"
                )));
            }
        })
    }
}

impl Change<'_> {
    /// [`Change::apply`] of the endpoint changes.
    async fn apply_endpoint(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<(pb::EventKind, pb::event::Object), GatewayError> {
        use pb::{EventKind as K, event::Object as O};
        use store::sandboxes;
        let (kind, e) = match *self {
            Change::InsertEndpoint(e) => {
                sandboxes::insert_endpoint(conn, e).await.map_err(|err| {
                    let not_found = || GatewayError::NetworkNotFound(e.network_name.clone());
                    on_unique(err, || GatewayError::AlreadyConnected {
                        sandbox: e.sandbox_name.clone(),
                        network: e.network_name.clone(),
                    })
                    .or_foreign_key(not_found)
                })?;
                (K::EndpointConnected, e)
            }
            Change::DeleteEndpoint(e) => {
                sandboxes::delete_endpoint(conn, &e.id).await?;
                (K::EndpointDisconnected, e)
            }
            Change::UpdateEndpoint(e) => {
                sandboxes::update_endpoint(conn, e).await?;
                (K::EndpointUpdated, e)
            }
            _ => {
                return Err(GatewayError::Internal(
                    "apply_endpoint: not an endpoint change".into(),
                ));
            }
        };
        Ok((kind, O::Endpoint(to_pb::endpoint_to_pb(e, None))))
    }
}

/// A unique-key violation as the domain error it means.
fn on_unique(e: GatewayStoreError, meant: impl FnOnce() -> GatewayError) -> GatewayError {
    match e {
        GatewayStoreError::Sql(ref s) if weft_store::is_unique_violation(s) => meant(),
        e => e.into(),
    }
}

/// A foreign-key violation as the domain error it means.
fn on_foreign_key(e: GatewayStoreError, meant: impl FnOnce() -> GatewayError) -> GatewayError {
    match e {
        GatewayStoreError::Sql(sqlx::Error::Database(ref d)) if d.is_foreign_key_violation() => {
            meant()
        }
        e => e.into(),
    }
}

trait OrForeignKey {
    fn or_foreign_key(self, meant: impl FnOnce() -> GatewayError) -> GatewayError;
}

impl OrForeignKey for GatewayError {
    /// A store error left as it is by `on_unique` may still be a foreign-key violation.
    fn or_foreign_key(self, meant: impl FnOnce() -> GatewayError) -> GatewayError {
        match self {
            GatewayError::Store(e) => on_foreign_key(e, meant),
            e => e,
        }
    }
}
