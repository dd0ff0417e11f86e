//! The gateway's core: the [`Gateway`] with its store and clients; the one transaction that
//! commits changes with their events (and the answer of a request id); replaying and
//! remembering answers; the clock and ids; the records of sagas in flight; lookups by name,
//! id or id prefix.
//!
//! Everything above it (the sagas, the downstream steps, the gRPC edge) builds on these; this
//! module calls none of them.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use weft_proto::{
    agent::v1::agent_service_client::AgentServiceClient,
    dns::v1::dns_service_client::DnsServiceClient, gateway::v1 as pb,
    ipam::v1::ipam_service_client::IpamServiceClient,
};
use weft_runtime::trace_context::{Traced, TracedChannel};
use weft_store::Db;

use crate::{
    domain::{
        check::check_key, endpoint::EndpointRecord, host::HostRecord, network::NetworkRecord,
        sandbox::SandboxRecord,
    },
    error::GatewayError,
    store::{self, operations::Operation, requests::Retention, sandboxes::Owner},
    to_pb,
};

pub(crate) use crate::changes::Change;
pub use crate::clock::Clock;
pub(crate) use crate::recent::RecentEvents;

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
    pub operation_timeout: Duration,
    /// Test hook: the saga step at which to kill the process.
    pub fault: Option<String>,
    /// How often agents send heartbeats; three missed ones mark their host down.
    pub heartbeat_interval: Duration,
    /// How long a host may stay down before its endpoints are marked `host_down`.
    pub host_down_grace: Duration,
    /// The VXLAN ids overlay networks get, inclusive.
    pub vni_range: (u32, u32),
    /// How long a request id's answer is replayed.
    pub request_id_ttl: Duration,
    /// How many request ids are remembered at most (the oldest are forgotten first).
    pub request_id_max: u64,
    /// Watch streams one client (peer address) may hold at once.
    pub max_watches_per_client: usize,
    /// What one identity may ask of the API.
    pub limits: weft_runtime::limits::Limits,
    /// With the gateway's certificate: how registered agents and their dns-svc are dialled
    /// (mutual TLS). None: plaintext.
    pub peers: Option<crate::peers::PeerTls>,
    /// The cluster's CA with its key (`--tls-ca-key`): new hosts' certificates are signed
    /// with it. None: hosts cannot join through this gateway.
    pub signer: Option<Arc<weft_identity::pki::Ca>>,
}

/// The gateway's state and its clients.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) db: Db,
    pub(crate) ipam: IpamServiceClient<TracedChannel>,
    /// The driver-agent of the configured host (`--agent`): used before that host's agent
    /// registers, and for cleanup when no registered address is known.
    pub(crate) agent: AgentServiceClient<TracedChannel>,
    pub(crate) host: String,
    pub(crate) agent_url: String,
    /// Sagas in flight in this process (the sweep leaves them alone).
    pub(crate) inflight: Arc<Mutex<HashSet<String>>>,
    /// Operations older than this are taken as abandoned by a gateway that died.
    pub(crate) operation_timeout: Duration,
    /// Test hook: the saga step at which to kill the process.
    pub(crate) fault: Option<String>,
    pub(crate) event_history: u64,
    pub(crate) notify: tokio::sync::watch::Sender<u64>,
    /// The events this replica committed lately (see [`RecentEvents`]).
    pub(crate) recent_events: Arc<Mutex<RecentEvents>>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) host_down_grace: Duration,
    pub(crate) vni_range: (u32, u32),
    /// Clients of registered hosts' agents (see `agents`).
    pub(crate) agents: AgentClients,
    pub(crate) clock: Clock,
    pub(crate) request_id_ttl: Duration,
    pub(crate) request_id_max: u64,
    /// Watch streams open per peer address, and the most one may hold.
    pub(crate) watchers: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    pub(crate) max_watches_per_client: usize,
    /// What one identity may ask of the API.
    /// One budget per identity, shared by every listener of this gateway.
    pub(crate) limiter: weft_runtime::limits::Limiter,
    /// The API's bearer tokens.
    pub(crate) tokens: crate::access::Tokens,
    /// Where accepted and refused mutations are recorded.
    pub(crate) audit: crate::access::AuditLog,
    /// Mutual TLS to agents and dns-svc (None: plaintext).
    pub(crate) peers: Option<crate::peers::PeerTls>,
    /// See [`GatewayOptions::signer`].
    pub(crate) signer: Option<Arc<weft_identity::pki::Ca>>,
    /// Overlay networks whose endpoints changed (network id, the host of the change), for the
    /// task that tells their other hosts; its receiving end until that task takes it.
    pub(crate) overlay_changes: tokio::sync::mpsc::Sender<(String, String)>,
    pub(crate) overlay_queue: OverlayQueue,
    /// One-time join tokens of new hosts.
    pub(crate) join_tokens: crate::hostauth::JoinTokens,
    /// When hosts were removed (their older certificates are refused).
    pub(crate) removals: crate::hostauth::Removals,
    /// The lease whose fencing token this clone's writes check (the background work's clone,
    /// see `leader`); None for the API's.
    pub(crate) fence: Option<Arc<crate::lease::Lease>>,
}

/// What this replica last read about a host, with its clients.
#[derive(Debug, Clone)]
pub(crate) struct CachedAgent {
    /// The registered agent URL; None when the host is not registered.
    pub(crate) url: Option<String>,
    /// None: an unknown host.
    pub(crate) client: Option<AgentServiceClient<TracedChannel>>,
    /// The host's dns-svc, when it registered one.
    pub(crate) dns: Option<DnsServiceClient<TracedChannel>>,
    pub(crate) up: bool,
    pub(crate) fetched: Instant,
}

/// Agent clients by host name.
pub(crate) type AgentClients = Arc<Mutex<HashMap<String, CachedAgent>>>;

/// One Watch stream of a client; dropping it frees the client's slot.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    watchers: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    peer: Option<IpAddr>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = w.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.peer);
            }
        }
    }
}

/// A new object id: 64 hex characters, like Docker's ids.
pub(crate) fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A mutation's request id, and what identifies the request it came with (its encoding without
/// the id), so that a retry gets the first answer and a different request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// Empty: the request has none (nothing is replayed or remembered).
    pub id: String,
    pub method: &'static str,
    pub fingerprint: Vec<u8>,
}

/// The request id to remember in the same transaction as a saga's final change, and how the
/// answer is encoded from the saga's result.
pub struct Remember<'a, T> {
    pub key: &'a RequestKey,
    pub answer: &'a (dyn Fn(&T) -> Vec<u8> + Send + Sync),
}

impl<T> std::fmt::Debug for Remember<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remember").field("key", &self.key).finish()
    }
}

/// The receiving end of [`Gateway::overlay_changes`], taken once.
pub(crate) type OverlayQueue = Arc<Mutex<Option<tokio::sync::mpsc::Receiver<(String, String)>>>>;

impl Gateway {
    pub fn new(db: Db, ipam: Channel, agent: Channel, options: GatewayOptions) -> Self {
        let (notify, _) = tokio::sync::watch::channel(0);
        let clock = Clock::default();
        let (overlay_changes, overlay_rx) = tokio::sync::mpsc::channel(1024);
        Self {
            fence: None,
            overlay_changes,
            overlay_queue: Arc::new(Mutex::new(Some(overlay_rx))),
            tokens: crate::access::Tokens::new(db.clone(), clock.clone()),
            audit: crate::access::AuditLog::start(db.clone(), clock.clone()),
            join_tokens: crate::hostauth::JoinTokens::new(db.clone(), clock.clone()),
            removals: crate::hostauth::Removals::new(db.clone()),
            db,
            // Calls to the other services carry the trace context of the request they serve.
            ipam: IpamServiceClient::new(Traced::new(ipam)),
            agent: AgentServiceClient::new(Traced::new(agent)),
            host: options.host,
            agent_url: options.agent_url,
            inflight: Default::default(),
            operation_timeout: options.operation_timeout,
            fault: options.fault,
            event_history: options.event_history,
            notify,
            recent_events: Default::default(),
            heartbeat_interval: options.heartbeat_interval,
            host_down_grace: options.host_down_grace,
            vni_range: options.vni_range,
            agents: Default::default(),
            clock,
            request_id_ttl: options.request_id_ttl,
            request_id_max: options.request_id_max,
            watchers: Default::default(),
            max_watches_per_client: options.max_watches_per_client,
            limiter: weft_runtime::limits::Limiter::new(options.limits),
            peers: options.peers,
            signer: options.signer,
        }
    }

    /// The API's tokens.
    pub fn tokens(&self) -> &crate::access::Tokens {
        &self.tokens
    }

    /// A Watch slot of `peer` (its address; None when the transport has none), or
    /// RESOURCE_EXHAUSTED when it holds `--max-watches-per-client` streams already.
    pub(crate) fn watch_slot(&self, peer: Option<IpAddr>) -> Result<WatchSlot, GatewayError> {
        let mut w = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        let open = w.entry(peer).or_insert(0);
        if *open >= self.max_watches_per_client {
            let who = peer.map_or_else(|| "this client".to_owned(), |p| p.to_string());
            return Err(GatewayError::Exhausted(format!(
                "{who} has {open} Watch streams open, the most one client may hold (--max-watches-per-client {})",
                self.max_watches_per_client
            )));
        }
        *open += 1;
        Ok(WatchSlot {
            watchers: self.watchers.clone(),
            peer,
        })
    }

    /// Which request ids count, and how many are kept.
    pub(crate) fn retention(&self, now_ms: i64) -> Retention {
        let ttl = i64::try_from(self.request_id_ttl.as_millis()).unwrap_or(i64::MAX);
        Retention {
            not_before_ms: now_ms.saturating_sub(ttl),
            max: self.request_id_max,
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// How often agents are told to send heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
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
    /// the answer of `request` when there is one, and wakes the watchers. Returns the last
    /// revision.
    /// The revision of the last change to `host`'s desired state.
    pub(crate) async fn host_revision(&self, host: &str) -> Result<u64, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::hosts::revision_of(&mut conn, host).await?)
    }

    /// Commits a saga's `changes` (and the answer to remember for its request) in one
    /// transaction. When that fails, the sagas it ends stop running in this process: their
    /// records stay, and a client's retry takes a removal over at once (see
    /// [`Gateway::begin`]) instead of being told for ever that it is still in progress; the
    /// sweep finishes the rest.
    pub(crate) async fn commit(
        &self,
        changes: &[Change<'_>],
        request: Option<(&RequestKey, Vec<u8>)>,
    ) -> Result<u64, GatewayError> {
        let res = self.commit_changes(changes, request).await;
        if res.is_err() {
            for change in changes {
                if let Change::EndOperation(id) = change {
                    self.forget(id);
                }
            }
        }
        res
    }

    async fn commit_changes(
        &self,
        changes: &[Change<'_>],
        request: Option<(&RequestKey, Vec<u8>)>,
    ) -> Result<u64, GatewayError> {
        let mut tx = store::write_transaction(&self.db).await?;
        crate::lease::check(self.fence.as_deref(), &mut tx).await?;
        let now = self.clock.now_ms();
        let mut revision = 0;
        let mut ended = Vec::new();
        let mut events = Vec::new();
        // Each change its own revision, taken at once before anything else: the revision's row
        // lock orders concurrent writers before they touch the tables (taking it after could
        // deadlock on a unique key). The events, and each host's newest revision, are written
        // after the changes, in as few statements as they fit.
        let numbered = changes
            .iter()
            .filter(|c| !matches!(c, Change::EndOperation(_)))
            .count();
        if numbered > 0 {
            revision = store::next_revisions(&mut tx, u64::try_from(numbered).unwrap_or(u64::MAX))
                .await?
                - 1;
        }
        let mut touched: std::collections::BTreeMap<String, u64> = Default::default();
        for change in changes {
            if let Change::EndOperation(id) = change {
                store::operations::delete(&mut tx, id).await?;
                ended.push(*id);
                continue;
            }
            revision += 1;
            let hosts = change.hosts(&mut tx).await?;
            let (kind, object) = change.apply(&mut tx).await?;
            events.push(to_pb::event(revision, now, kind, object));
            for host in hosts {
                touched.insert(host, revision);
            }
        }
        store::insert_events(&mut tx, &events).await?;
        for (host, at) in &touched {
            store::hosts::touch(&mut tx, host, *at).await?;
        }
        if let Some((key, answer)) = request.filter(|(k, _)| !k.id.is_empty()) {
            let entry = (
                key.id.as_str(),
                key.method,
                &key.fingerprint[..],
                &answer[..],
            );
            store::requests::record(&mut tx, entry, now, self.retention(now)).await?;
        }
        if revision > 0 {
            store::trim_events(&mut tx, revision, self.event_history).await?;
        }
        tx.commit().await?;
        for id in ended {
            self.forget(id);
        }
        if revision > 0 {
            self.published(events, revision);
        }
        // Overlay networks: their other hosts are told at once (see `overlay`), by a task of
        // `lib::open`; best effort (a full queue drops it: the per-host feed repairs it).
        for c in changes {
            if let Change::InsertEndpoint(e) | Change::DeleteEndpoint(e) | Change::UpdateEndpoint(e) =
                c
                && e.global
                && self
                    .overlay_changes
                    .try_send((e.network_id.clone(), e.host.clone()))
                    .is_err()
            {
                tracing::warn!(network = %e.network_id, "overlay push queue full: the hosts learn at their next heartbeat");
            }
        }
        Ok(revision)
    }

    /// Marks `h` down if its last heartbeat is still older than `cutoff`, with its HOST_DOWN
    /// event, in one transaction; false when another replica (or a heartbeat) got there first.
    pub(crate) async fn commit_host_down(
        &self,
        h: &HostRecord,
        cutoff: i64,
    ) -> Result<bool, GatewayError> {
        let mut tx = store::write_transaction(&self.db).await?;
        crate::lease::check(self.fence.as_deref(), &mut tx).await?;
        if !store::hosts::mark_down(&mut tx, &h.name, cutoff).await? {
            return Ok(false);
        }
        let revision = store::next_revision(&mut tx).await?;
        let event = to_pb::event(
            revision,
            self.clock.now_ms(),
            pb::EventKind::HostDown,
            pb::event::Object::Host(to_pb::host_to_pb(h)),
        );
        store::insert_event(&mut tx, &event).await?;
        store::trim_events(&mut tx, revision, self.event_history).await?;
        tx.commit().await?;
        self.published(vec![event], revision);
        Ok(true)
    }

    /// After a commit: its events kept for the watchers, who are then woken.
    fn published(&self, events: Vec<pb::Event>, revision: u64) {
        self.recent_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keep(events);
        self.notify.send_replace(revision);
    }

    /// A retried mutation: the (encoded) answer given the first time, if `key` was applied.
    pub async fn replay(&self, key: &RequestKey) -> Result<Option<Vec<u8>>, GatewayError> {
        if key.id.is_empty() {
            return Ok(None);
        }
        if key.id.len() > 128 {
            return Err(GatewayError::invalid(
                "request_id",
                &key.id,
                "longer than 128 characters",
            ));
        }
        let not_before = self.retention(self.clock.now_ms()).not_before_ms;
        let mut conn = self.db.read().acquire().await?;
        match store::requests::applied(&mut conn, &key.id, not_before).await? {
            None => Ok(None),
            Some((m, req, resp)) if m == key.method && req == key.fingerprint => Ok(Some(resp)),
            Some(_) => Err(GatewayError::invalid(
                "request_id",
                &key.id,
                "already used for a different request",
            )),
        }
    }

    /// Crashes the process (SIGKILL, as `kill -9` would) when `step` is the configured fault:
    /// the hook the crash tests use to stop the gateway at each step of a saga.
    pub(crate) fn fault(&self, step: &str) {
        if self.fault.as_deref() == Some(step) {
            tracing::error!(step, "fault injected: killing the gateway");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Records that a saga starts. A removal (Disconnect, DeleteSandbox) whose record a
    /// killed gateway left behind is taken over: it is the same removal, which the sweep
    /// would otherwise complete much later, and the retry that asks for it again completes it
    /// now (its steps are idempotent). The same operation already running in this process
    /// (a client's retry racing its own first attempt) is UNAVAILABLE: retried with the same
    /// request id once that attempt is done, it gets its answer.
    pub(crate) async fn begin(&self, op: &Operation) -> Result<String, GatewayError> {
        let id = op.id();
        let fresh = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        if !fresh {
            return Err(GatewayError::Busy(format!(
                "the same {} is already in progress: retry",
                op.kind()
            )));
        }
        let now = self.clock.now_ms();
        let begun = async {
            let mut conn = self.db.write().acquire().await?;
            match store::operations::insert(&mut conn, op, now).await {
                Err(store::GatewayStoreError::Sql(e))
                    if weft_store::is_unique_violation(&e) && op.completed_when_interrupted() =>
                {
                    tracing::info!(operation = %id, kind = op.kind(), "taking over an interrupted operation");
                    store::operations::restart(&mut conn, op, now).await
                }
                other => other,
            }
        };
        if let Err(e) = begun.await {
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
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Whether a saga with this operation id runs in this process.
    pub(crate) fn in_flight(&self, id: &str) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// The one network `key` names (a name, an id, or a unique id prefix).
    pub async fn find(&self, field: &str, key: &str) -> Result<NetworkRecord, GatewayError> {
        check_key(field, key, "network").map_err(|v| GatewayError::Invalid(vec![v]))?;
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

    /// The one sandbox `key` names (a name, an id, or a unique id prefix).
    pub async fn find_sandbox(
        &self,
        field: &str,
        key: &str,
    ) -> Result<SandboxRecord, GatewayError> {
        check_key(field, key, "sandbox").map_err(|v| GatewayError::Invalid(vec![v]))?;
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

    /// The endpoints of a sandbox or of a network, in attach order.
    pub async fn endpoints(
        &self,
        owner: Owner,
        id: &str,
    ) -> Result<Vec<EndpointRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::endpoints_of(&mut conn, owner, id).await?)
    }

    /// The endpoints a sandbox shows: its own, or for `container:` mode those of the sandbox
    /// whose namespace it shares.
    pub async fn sandbox_endpoints(
        &self,
        s: &SandboxRecord,
    ) -> Result<Vec<EndpointRecord>, GatewayError> {
        self.endpoints(Owner::Sandbox, s.endpoints_owner()).await
    }

    /// Every sandbox, by name.
    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::list(&mut conn).await?)
    }
}
