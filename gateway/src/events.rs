//! `Watch`: a snapshot (or a resume point), then every change in revision order.
//!
//! Events are read from the store's log, so a watcher on any replica sees every change exactly
//! once and in order. A local commit wakes watchers at once; changes made by other replicas
//! are picked up by polling. The log holds events in their published form (`weft.gateway.v1`
//! `Event`), so this module speaks it.

use std::{net::IpAddr, time::Duration};

use tokio::sync::mpsc;
use tonic::Status;
use weft_proto::gateway::v1 as pb;

use crate::{
    domain::{
        check::check_name,
        endpoint::{EndpointRecord, default_route},
    },
    engine::Gateway,
    error::GatewayError,
    scope::Scope,
    store,
    to_pb::{endpoint_to_pb, event, host_to_pb, network_to_pb, sandbox_to_pb},
};

/// How often a watcher looks for changes made by other replicas.
const POLL: Duration = Duration::from_millis(200);
const PAGE: u32 = 500;
/// With `bookmarks`: a BOOKMARK (the revision the stream has reached) after this long without
/// a matching event.
const BOOKMARK_AFTER: Duration = Duration::from_secs(5);

impl Gateway {
    /// Starts streaming for `req` to `peer` (at most `--max-watches-per-client` streams per
    /// peer address); the receiver ends when the client goes away, which frees the slot.
    pub async fn watch(
        &self,
        req: pb::WatchRequest,
        peer: Option<IpAddr>,
    ) -> Result<mpsc::Receiver<Result<pb::Event, Status>>, GatewayError> {
        self.watch_as(req, peer, "").await
    }

    /// [`Gateway::watch`] for `client` (the caller's `role:name`, shown in the metrics of the
    /// stream's lag).
    pub async fn watch_as(
        &self,
        req: pb::WatchRequest,
        peer: Option<IpAddr>,
        client: &str,
    ) -> Result<mpsc::Receiver<Result<pb::Event, Status>>, GatewayError> {
        let slot = self.watch_slot(peer)?;
        let notified = self.notify.subscribe();
        if !req.scope_host.is_empty() {
            check_name("scope_host", &req.scope_host)
                .map_err(|v| GatewayError::Invalid(vec![v]))?;
        }
        let mut scope = None;
        let (start, snapshot) = if req.from_revision == 0 {
            let (events, revision) = if req.scope_host.is_empty() {
                self.snapshot().await?
            } else {
                let now = crate::to_pb::timestamp(self.clock.now_ms());
                let (s, events, revision) = Scope::snapshot(&self.db, &req.scope_host, now).await?;
                scope = Some(s);
                (events, revision)
            };
            let mut shown: Vec<pb::Event> = if req.skip_snapshot {
                Vec::new()
            } else {
                events.into_iter().filter(|e| wanted(&req, e)).collect()
            };
            shown.push(pb::Event {
                revision,
                kind: pb::EventKind::SnapshotEnd as i32,
                ..Default::default()
            });
            (revision, shown)
        } else {
            self.check_resume(req.from_revision).await?;
            if !req.scope_host.is_empty() {
                scope = Some(Scope::at(&self.db, &req.scope_host, req.from_revision).await?);
            }
            (req.from_revision, Vec::new())
        };
        let (tx, rx) = mpsc::channel(256);
        let gw = self.clone();
        let lag = crate::metrics::WatchLag::new(peer, client, start);
        tokio::spawn(async move {
            let _slot = slot;
            for e in snapshot {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            gw.follow(req, scope, start, notified, tx, &lag).await;
        });
        Ok(rx)
    }

    /// A resume point must be in the log: not newer than the newest revision, not older than
    /// the oldest event kept.
    async fn check_resume(&self, from: u64) -> Result<(), GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        let current = store::current_revision(&mut conn).await?;
        let oldest = store::oldest_event(&mut conn).await?;
        if from > current {
            return Err(GatewayError::invalid(
                "from_revision",
                from.to_string(),
                format!("newer than the newest revision {current}"),
            ));
        }
        let missing = match oldest {
            Some(o) => from + 1 < o,
            None => from < current,
        };
        if missing {
            return Err(GatewayError::RevisionGone {
                from,
                oldest: oldest.unwrap_or(current + 1),
            });
        }
        Ok(())
    }

    /// Sends every wanted event after `last` (through `scope`, when the watch has one), page
    /// by page, then waits for a commit (or polls) until the client goes away.
    async fn follow(
        &self,
        req: pb::WatchRequest,
        mut scope: Option<Scope>,
        mut last: u64,
        mut notified: tokio::sync::watch::Receiver<u64>,
        tx: mpsc::Sender<Result<pb::Event, Status>>,
        lag: &crate::metrics::WatchLag,
    ) {
        // When an event (or a bookmark) was last sent, for `bookmarks`.
        let mut sent = std::time::Instant::now();
        loop {
            let upto = *notified.borrow_and_update();
            let recent = self
                .recent_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .after(last, upto, PAGE as usize);
            let page = match recent {
                Some(p) => Ok(p),
                None => self.events_after(last).await,
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let full = page.len() == PAGE as usize;
            if page.is_empty() {
                // Nothing after `last` up to `upto`: the stream has read as far as the log goes.
                lag.reached(last.max(upto));
            }
            for e in page {
                last = e.revision;
                let shown = match scope.as_mut() {
                    None => vec![e],
                    Some(s) => match s.step(&self.db, e).await {
                        Ok(shown) => shown,
                        Err(err) => {
                            let _ = tx.send(Err(err.into())).await;
                            return;
                        }
                    },
                };
                for e in shown {
                    if wanted(&req, &e) {
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                        sent = std::time::Instant::now();
                    }
                }
                lag.reached(last);
            }
            if full {
                continue;
            }
            if req.bookmarks && sent.elapsed() >= BOOKMARK_AFTER {
                let mark = pb::Event {
                    revision: last,
                    time: crate::to_pb::timestamp(self.clock.now_ms()),
                    kind: pb::EventKind::Bookmark as i32,
                    ..Default::default()
                };
                if tx.send(Ok(mark)).await.is_err() {
                    return;
                }
                sent = std::time::Instant::now();
            }
            tokio::select! {
                _ = notified.changed() => {}
                () = tokio::time::sleep(POLL) => {}
                () = tx.closed() => return,
            }
        }
    }

    async fn events_after(&self, last: u64) -> Result<Vec<pb::Event>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::events_after(&mut conn, last, PAGE).await?)
    }

    /// Everything there is, as events of one revision, read in one snapshot: hosts, networks,
    /// sandboxes, then endpoints (with their default-route flags).
    async fn snapshot(&self) -> Result<(Vec<pb::Event>, u64), GatewayError> {
        let mut tx = store::read_snapshot(&self.db).await?;
        let revision = store::current_revision(&mut tx).await?;
        let hosts = store::hosts::list(&mut tx).await?;
        let networks = store::networks::list(&mut tx).await?;
        let sandboxes = store::sandboxes::list(&mut tx).await?;
        let endpoints = store::sandboxes::all_endpoints(&mut tx).await?;
        tx.commit().await?;
        let now = self.clock.now_ms();
        let ev = |kind, object| event(revision, now, kind, object);
        use pb::{EventKind as K, event::Object as O};
        let mut events: Vec<pb::Event> = hosts
            .iter()
            .map(|h| {
                let kind = if h.up { K::HostUp } else { K::HostDown };
                ev(kind, O::Host(host_to_pb(h)))
            })
            .collect();
        events.extend(
            networks
                .iter()
                .map(|n| ev(K::NetworkCreated, O::Network(network_to_pb(n)))),
        );
        events.extend(
            sandboxes
                .iter()
                .map(|s| ev(K::SandboxCreated, O::Sandbox(sandbox_to_pb(s, &[])))),
        );
        for group in endpoints.chunk_by(|a, b| a.sandbox_id == b.sandbox_id) {
            let id = |e: Option<&EndpointRecord>| e.map(|e| e.id.clone()).unwrap_or_default();
            let v4 = id(default_route(group, false));
            let v6 = id(default_route(group, true));
            for e in group {
                let shown = endpoint_to_pb(e, Some((&v4, &v6)));
                events.push(ev(K::EndpointConnected, O::Endpoint(shown)));
            }
        }
        Ok((events, revision))
    }
}

/// The watcher's filters, combined with AND: event kinds; a network, a sandbox or a host, each
/// by its exact name or full id (`scope_host` is applied before, by [`Scope`]).
fn wanted(req: &pb::WatchRequest, e: &pb::Event) -> bool {
    use pb::event::Object as O;
    let is = |name: &str, id: &str, f: &str| name == f || id == f;
    let kind_ok = req.kinds.is_empty() || req.kinds.contains(&e.kind);
    let net_ok = req.network.is_empty()
        || match &e.object {
            Some(O::Network(n)) => is(&n.name, &n.id, &req.network),
            Some(O::Endpoint(ep)) => is(&ep.network_name, &ep.network_id, &req.network),
            _ => false,
        };
    let sandbox_ok = req.sandbox.is_empty()
        || match &e.object {
            Some(O::Sandbox(sb)) => is(&sb.name, &sb.id, &req.sandbox),
            Some(O::Endpoint(ep)) => is(&ep.sandbox_name, &ep.sandbox_id, &req.sandbox),
            _ => false,
        };
    // (Networks are not per host: their events all pass.)
    let host_ok = req.host.is_empty()
        || match &e.object {
            Some(O::Host(h)) => h.name == req.host,
            Some(O::Sandbox(sb)) => sb.host == req.host,
            Some(O::Endpoint(ep)) => ep.host == req.host,
            Some(O::Network(_)) => true,
            None => false,
        };
    kind_ok && net_ok && sandbox_ok && host_ok
}
