//! `WatchRequest.scope_host`: the part of the event log one host's dns-svc needs. A network is
//! in the scope of host H while it has at least one endpoint on H; the stream then carries the
//! network, every endpoint on it (on any host) and the sandboxes of those endpoints, besides
//! every sandbox of H and H's own host events. Nothing else, so a dns-svc holds what its
//! containers can ask for, however many hosts share none of its networks.
//!
//! A [`Scope`] follows the log event by event and knows, at the revision of the last event it
//! took, which networks are in scope and which of their endpoints (and so which sandboxes of
//! other hosts) the client holds. The scope changes with the scope host's own endpoints:
//! its first endpoint on a network brings the network in (SCOPE_ENTERED for the network, the
//! sandboxes of other hosts the client does not hold yet, and the other endpoints, then the
//! ENDPOINT_CONNECTED that caused it); its last one takes it out (SCOPE_LEFT for the sandboxes
//! of other hosts left with nothing in scope, then the network, then the ENDPOINT_DISCONNECTED).
//! The synthetic events come before the event that caused them and carry its revision, so a
//! client that resumes from the last real event it saw gets them again, never half of them.
//!
//! What enters is read from the store, which holds the newest state, while the stream may be
//! behind it (a resumed stream, a burst): the objects of a network at revision T are the
//! store's, rolled back over the log's events after T (endpoints connected since are taken out,
//! endpoints disconnected since put back as they were last). So what the client holds is exactly
//! what the scope says at T, which [`Scope`] tracks; a record's fields may be newer than T
//! (an ENDPOINT_UPDATED replayed next sets them again). A resume from revision N rebuilds the
//! scope at N the same way. Memory per stream: the ids of the endpoints in scope, and the name
//! of each sandbox of another host held.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use weft_proto::gateway::v1::{self as pb, EventKind as K, event::Object as O};
use weft_store::Db;

use crate::{
    domain::endpoint::{EndpointRecord, default_route},
    error::GatewayError,
    store,
    to_pb::{endpoint_to_pb, host_to_pb, network_to_pb, sandbox_to_pb},
};

/// Log events read per page when rolling back.
const PAGE: u32 = 500;

/// A sandbox of another host that the client holds.
#[derive(Debug, Clone)]
struct Held {
    name: String,
    host: String,
    /// Its endpoints on networks in scope.
    endpoints: usize,
}

/// What the client of a scoped watch holds, at the revision of the last event taken.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    host: String,
    /// The networks in scope: id → the ids of their endpoints on the scope host (never empty).
    local: HashMap<String, HashSet<String>>,
    /// Per network in scope, its endpoints on other hosts: endpoint id → sandbox id.
    remote: HashMap<String, HashMap<String, String>>,
    /// The sandboxes of other hosts held, by id.
    sandboxes: HashMap<String, Held>,
}

/// One network's objects as they were at a revision.
#[derive(Debug, Default)]
struct NetworkAt {
    network: Option<pb::Network>,
    /// By endpoint id.
    endpoints: BTreeMap<String, pb::Endpoint>,
    /// The sandboxes of those endpoints that could be read, by id.
    sandboxes: HashMap<String, pb::Sandbox>,
}

fn kind(e: &pb::Event) -> K {
    K::try_from(e.kind).unwrap_or(K::Unspecified)
}

/// Endpoints in attach order, the order a client should take them in (a sandbox's networks are
/// considered in attach order).
fn endpoints_in_order(mut eps: Vec<pb::Endpoint>) -> Vec<pb::Endpoint> {
    eps.sort_by(|a, b| {
        let at = |e: &pb::Endpoint| e.created_at.map(|t| (t.seconds, t.nanos));
        at(a).cmp(&at(b)).then_with(|| a.id.cmp(&b.id))
    });
    eps
}

/// The log's events after `after` up to `upto` (both revisions), read in `conn`'s snapshot;
/// OUT_OF_RANGE when the log no longer holds them all.
async fn tail(
    conn: &mut sqlx::AnyConnection,
    after: u64,
    upto: u64,
) -> Result<Vec<pb::Event>, GatewayError> {
    let mut out = Vec::new();
    if after >= upto {
        return Ok(out);
    }
    let oldest = store::oldest_event(conn).await?;
    if oldest.is_none_or(|o| o > after + 1) {
        return Err(GatewayError::RevisionGone {
            from: after,
            oldest: oldest.unwrap_or(upto + 1),
        });
    }
    let mut last = after;
    while last < upto {
        let page = store::events_after(conn, last, PAGE).await?;
        let Some(end) = page.last().map(|e| e.revision) else {
            break;
        };
        out.extend(page.into_iter().filter(|e| e.revision <= upto));
        last = end;
    }
    Ok(out)
}

impl NetworkAt {
    /// Network `id` as the store holds it now, with its endpoints (their default-route flags
    /// told from all their sandbox's endpoints) and their sandboxes.
    async fn read(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Self, GatewayError> {
        let network = store::networks::by_id(conn, id).await?;
        let sharing: Vec<EndpointRecord> = store::sandboxes::endpoints_sharing(conn, id).await?;
        let mut endpoints = BTreeMap::new();
        for group in sharing.chunk_by(|a, b| a.sandbox_id == b.sandbox_id) {
            let route = |v6| default_route(group, v6).map(|e| e.id.clone());
            let (v4, v6) = (
                route(false).unwrap_or_default(),
                route(true).unwrap_or_default(),
            );
            for e in group.iter().filter(|e| e.network_id == id) {
                endpoints.insert(e.id.clone(), endpoint_to_pb(e, Some((&v4, &v6))));
            }
        }
        let sandboxes = store::sandboxes::on_network(conn, id)
            .await?
            .iter()
            .map(|s| (s.id.clone(), sandbox_to_pb(s, &[])))
            .collect();
        Ok(Self {
            network: network.as_ref().map(network_to_pb),
            endpoints,
            sandboxes,
        })
    }

    /// Undoes what `tail` (the events after the wanted revision, oldest first) did to network
    /// `id`; the sandboxes of endpoints put back are read if they still exist, else taken from
    /// their SANDBOX_REMOVED.
    async fn roll_back(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        tail: &[pb::Event],
    ) -> Result<(), GatewayError> {
        let mut removed_sandboxes = HashMap::new();
        for ev in tail.iter().rev() {
            match (kind(ev), ev.object.as_ref()) {
                (K::EndpointConnected, Some(O::Endpoint(e))) if e.network_id == id => {
                    self.endpoints.remove(&e.id);
                }
                (K::EndpointDisconnected, Some(O::Endpoint(e))) if e.network_id == id => {
                    self.endpoints.insert(e.id.clone(), e.clone());
                }
                (K::NetworkRemoved, Some(O::Network(n))) if n.id == id => {
                    self.network = Some(n.clone());
                }
                (K::SandboxRemoved, Some(O::Sandbox(s))) => {
                    removed_sandboxes.insert(s.id.clone(), s.clone());
                }
                _ => {}
            }
        }
        let wanted: BTreeSet<String> = self
            .endpoints
            .values()
            .map(|e| e.sandbox_id.clone())
            .collect();
        self.sandboxes.retain(|sb, _| wanted.contains(sb));
        for sb in wanted {
            if self.sandboxes.contains_key(&sb) {
                continue;
            }
            let found = match store::sandboxes::by_id(conn, &sb).await? {
                Some(s) => Some(sandbox_to_pb(&s, &[])),
                None => removed_sandboxes.remove(&sb),
            };
            if let Some(s) = found {
                self.sandboxes.insert(sb, s);
            }
        }
        Ok(())
    }
}

/// A synthetic event of `kind` about `object`, caused by `cause` (its revision, time and
/// caller).
fn synthetic(cause: &pb::Event, kind: K, object: O) -> pb::Event {
    pb::Event {
        revision: cause.revision,
        time: cause.time,
        kind: kind as i32,
        object: Some(object),
        request_id: cause.request_id.clone(),
        actor: cause.actor.clone(),
    }
}

impl Scope {
    fn empty(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            local: HashMap::new(),
            remote: HashMap::new(),
            sandboxes: HashMap::new(),
        }
    }

    /// The scope of `host` now, and its snapshot as events of one revision (the host, the
    /// networks, the sandboxes, then the endpoints, like an unscoped snapshot), read in one
    /// store snapshot.
    pub(crate) async fn snapshot(
        db: &Db,
        host: &str,
        time: Option<prost_types::Timestamp>,
    ) -> Result<(Self, Vec<pb::Event>, u64), GatewayError> {
        let mut tx = store::read_snapshot(db).await?;
        let revision = store::current_revision(&mut tx).await?;
        let me = store::hosts::get(&mut tx, host).await?;
        let own = store::sandboxes::list_on_host(&mut tx, host).await?;
        let local = store::sandboxes::endpoints_on_host(&mut tx, host).await?;
        let nets: BTreeSet<String> = local.iter().map(|e| e.network_id.clone()).collect();
        let mut at = Vec::new();
        for id in &nets {
            at.push((id.clone(), NetworkAt::read(&mut tx, id).await?));
        }
        tx.commit().await?;
        let mut scope = Self::empty(host);
        let ev = |kind: K, object| pb::Event {
            revision,
            time,
            kind: kind as i32,
            object: Some(object),
            ..Default::default()
        };
        let mut events: Vec<pb::Event> = me
            .iter()
            .map(|h| {
                ev(
                    if h.up { K::HostUp } else { K::HostDown },
                    O::Host(host_to_pb(h)),
                )
            })
            .collect();
        let mut sandboxes: Vec<pb::Sandbox> = own.iter().map(|s| sandbox_to_pb(s, &[])).collect();
        let mut endpoints = Vec::new();
        for (id, n) in at {
            events.extend(
                n.network
                    .clone()
                    .map(|n| ev(K::NetworkCreated, O::Network(n))),
            );
            let (new, eps) = scope.take_network(&id, n);
            sandboxes.extend(new);
            endpoints.extend(eps);
        }
        events.extend(
            sandboxes
                .into_iter()
                .map(|s| ev(K::SandboxCreated, O::Sandbox(s))),
        );
        events.extend(
            endpoints_in_order(endpoints)
                .into_iter()
                .map(|e| ev(K::EndpointConnected, O::Endpoint(e))),
        );
        Ok((scope, events, revision))
    }

    /// The scope of `host` as it was at revision `at` (a resume point the log still holds).
    pub(crate) async fn at(db: &Db, host: &str, at: u64) -> Result<Self, GatewayError> {
        let mut tx = store::read_snapshot(db).await?;
        let now = store::current_revision(&mut tx).await?;
        let tail = tail(&mut tx, at, now).await?;
        let mut local: HashMap<String, String> = store::sandboxes::endpoints_on_host(&mut tx, host)
            .await?
            .into_iter()
            .map(|e| (e.id, e.network_id))
            .collect();
        for ev in tail.iter().rev() {
            match (kind(ev), ev.object.as_ref()) {
                (K::EndpointConnected, Some(O::Endpoint(e))) if e.host == host => {
                    local.remove(&e.id);
                }
                (K::EndpointDisconnected, Some(O::Endpoint(e))) if e.host == host => {
                    local.insert(e.id.clone(), e.network_id.clone());
                }
                _ => {}
            }
        }
        let nets: BTreeSet<String> = local.into_values().collect();
        let mut scope = Self::empty(host);
        for id in nets {
            let mut n = NetworkAt::read(&mut tx, &id).await?;
            n.roll_back(&mut tx, &id, &tail).await?;
            scope.take_network(&id, n);
        }
        tx.commit().await?;
        Ok(scope)
    }

    /// Takes network `id` into the scope with the endpoints of `n`; returns the sandboxes of
    /// other hosts the client did not hold (now held) and the endpoints.
    fn take_network(&mut self, id: &str, n: NetworkAt) -> (Vec<pb::Sandbox>, Vec<pb::Endpoint>) {
        let mut new = Vec::new();
        let local = self.local.entry(id.to_owned()).or_default();
        let remote = self.remote.entry(id.to_owned()).or_default();
        for e in n.endpoints.values() {
            if e.host == self.host {
                local.insert(e.id.clone());
                continue;
            }
            remote.insert(e.id.clone(), e.sandbox_id.clone());
            let held = self
                .sandboxes
                .entry(e.sandbox_id.clone())
                .or_insert_with(|| Held {
                    name: e.sandbox_name.clone(),
                    host: e.host.clone(),
                    endpoints: 0,
                });
            held.endpoints += 1;
            if held.endpoints == 1
                && let Some(s) = n.sandboxes.get(&e.sandbox_id)
            {
                new.push(s.clone());
            }
        }
        (new, n.endpoints.into_values().collect())
    }

    /// What the stream sends for `ev`, in order (maybe nothing), the scope moved past it.
    pub(crate) async fn step(
        &mut self,
        db: &Db,
        ev: pb::Event,
    ) -> Result<Vec<pb::Event>, GatewayError> {
        let pass = match (kind(&ev), ev.object.as_ref()) {
            (_, Some(O::Host(h))) => h.name == self.host,
            (_, Some(O::Network(n))) => self.local.contains_key(&n.id),
            (k, Some(O::Sandbox(s))) => {
                if s.host != self.host && k == K::SandboxRemoved {
                    self.sandboxes.remove(&s.id).is_some()
                } else {
                    s.host == self.host || self.sandboxes.contains_key(&s.id)
                }
            }
            (K::EndpointConnected, Some(O::Endpoint(e))) => {
                let e = e.clone();
                return self.connected(db, ev, &e).await;
            }
            (K::EndpointDisconnected, Some(O::Endpoint(e))) => {
                let e = e.clone();
                return Ok(self.disconnected(ev, &e));
            }
            (_, Some(O::Endpoint(e))) => e.host == self.host || self.in_scope(&e.network_id),
            (_, None) => true,
        };
        Ok(if pass { vec![ev] } else { Vec::new() })
    }

    fn in_scope(&self, network_id: &str) -> bool {
        self.local.contains_key(network_id)
    }

    /// ENDPOINT_CONNECTED: the scope host's first endpoint on a network brings the network in;
    /// another host's endpoint on a network in scope may bring its sandbox in.
    async fn connected(
        &mut self,
        db: &Db,
        ev: pb::Event,
        e: &pb::Endpoint,
    ) -> Result<Vec<pb::Event>, GatewayError> {
        if e.host == self.host {
            if self.in_scope(&e.network_id) {
                self.local
                    .entry(e.network_id.clone())
                    .or_default()
                    .insert(e.id.clone());
                return Ok(vec![ev]);
            }
            return self.enter(db, ev, e).await;
        }
        let Some(remote) = self.remote.get_mut(&e.network_id) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if remote.insert(e.id.clone(), e.sandbox_id.clone()).is_none() {
            let held = self
                .sandboxes
                .entry(e.sandbox_id.clone())
                .or_insert_with(|| Held {
                    name: e.sandbox_name.clone(),
                    host: e.host.clone(),
                    endpoints: 0,
                });
            held.endpoints += 1;
            if held.endpoints == 1 {
                let mut conn = db.read().acquire().await?;
                // Gone since: its removal follows in the log (nothing of it to send).
                if let Some(s) = store::sandboxes::by_id(&mut conn, &e.sandbox_id).await? {
                    let s = O::Sandbox(sandbox_to_pb(&s, &[]));
                    out.push(synthetic(&ev, K::ScopeEntered, s));
                }
            }
        }
        out.push(ev);
        Ok(out)
    }

    /// Network `e.network_id` enters the scope with endpoint `e` (caused by `ev`): its objects
    /// as they were at `ev`'s revision, then `ev`.
    async fn enter(
        &mut self,
        db: &Db,
        ev: pb::Event,
        e: &pb::Endpoint,
    ) -> Result<Vec<pb::Event>, GatewayError> {
        let id = e.network_id.clone();
        let mut tx = store::read_snapshot(db).await?;
        let now = store::current_revision(&mut tx).await?;
        let tail = tail(&mut tx, ev.revision, now).await?;
        let mut n = NetworkAt::read(&mut tx, &id).await?;
        n.roll_back(&mut tx, &id, &tail).await?;
        tx.commit().await?;
        let network = n.network.clone();
        let (sandboxes, endpoints) = self.take_network(&id, n);
        self.local.entry(id).or_default().insert(e.id.clone());
        let mut out: Vec<pb::Event> = network
            .map(|n| synthetic(&ev, K::ScopeEntered, O::Network(n)))
            .into_iter()
            .collect();
        out.extend(
            sandboxes
                .into_iter()
                .map(|s| synthetic(&ev, K::ScopeEntered, O::Sandbox(s))),
        );
        out.extend(
            endpoints_in_order(endpoints)
                .into_iter()
                .filter(|x| x.id != e.id)
                .map(|x| synthetic(&ev, K::ScopeEntered, O::Endpoint(x))),
        );
        out.push(ev);
        Ok(out)
    }

    /// ENDPOINT_DISCONNECTED: the scope host's last endpoint on a network takes the network
    /// out; another host's last endpoint in scope takes its sandbox out.
    fn disconnected(&mut self, ev: pb::Event, e: &pb::Endpoint) -> Vec<pb::Event> {
        let mut out = Vec::new();
        if e.host == self.host {
            let last = self.local.get_mut(&e.network_id).is_some_and(|l| {
                l.remove(&e.id);
                l.is_empty()
            });
            if last {
                out = self.leave(&ev, &e.network_id, &e.network_name);
            }
            out.push(ev);
            return out;
        }
        let Some(remote) = self.remote.get_mut(&e.network_id) else {
            return out;
        };
        if let Some(sb) = remote.remove(&e.id) {
            out.extend(self.release(&ev, &sb));
        }
        out.push(ev);
        out
    }

    /// Takes network `id` out of the scope, caused by `cause`: SCOPE_LEFT for the sandboxes of
    /// other hosts left with nothing in scope, then for the network.
    fn leave(&mut self, cause: &pb::Event, id: &str, name: &str) -> Vec<pb::Event> {
        self.local.remove(id);
        let mut out = Vec::new();
        let mut members: Vec<String> = self
            .remote
            .remove(id)
            .unwrap_or_default()
            .into_values()
            .collect();
        members.sort();
        for sb in members {
            out.extend(self.release(cause, &sb));
        }
        let network = pb::Network {
            id: id.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        };
        out.push(synthetic(cause, K::ScopeLeft, O::Network(network)));
        out
    }

    /// One endpoint of sandbox `sb` (of another host) fewer in scope: SCOPE_LEFT for the
    /// sandbox when it was the last.
    fn release(&mut self, cause: &pb::Event, sb: &str) -> Option<pb::Event> {
        let held = self.sandboxes.get_mut(sb)?;
        held.endpoints = held.endpoints.saturating_sub(1);
        if held.endpoints > 0 {
            return None;
        }
        let held = self.sandboxes.remove(sb)?;
        let sandbox = pb::Sandbox {
            id: sb.to_owned(),
            name: held.name,
            host: held.host,
            ..Default::default()
        };
        Some(synthetic(cause, K::ScopeLeft, O::Sandbox(sandbox)))
    }
}
