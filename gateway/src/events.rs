//! `Watch`: a snapshot (or a resume point), then every change in revision order.
//!
//! Events are read from the store's log, so a watcher on any replica sees every change exactly
//! once and in order. A local commit wakes watchers at once; changes made by other replicas
//! are picked up by polling.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;
use weft_proto::gateway::v1 as pb;

use crate::{engine::Gateway, error::GatewayError, store, to_pb::network_to_pb};

/// How often a watcher looks for changes made by other replicas.
const POLL: Duration = Duration::from_millis(200);
const PAGE: u32 = 500;

impl Gateway {
    /// Starts streaming for `req`; the receiver ends when the client goes away.
    pub async fn watch(
        &self,
        req: pb::WatchRequest,
    ) -> Result<mpsc::Receiver<Result<pb::Event, Status>>, GatewayError> {
        let mut notified = self.notify.subscribe();
        let mut snapshot = Vec::new();
        let start = if req.from_revision == 0 {
            let (events, revision) = self.snapshot().await?;
            if !req.skip_snapshot {
                snapshot = events.into_iter().filter(|e| wanted(&req, e)).collect();
            }
            snapshot.push(pb::Event {
                revision,
                kind: pb::EventKind::SnapshotEnd as i32,
                ..Default::default()
            });
            revision
        } else {
            let mut conn = self.db.read().acquire().await?;
            let current = store::current_revision(&mut conn).await?;
            let oldest = store::oldest_event(&mut conn).await?;
            if req.from_revision > current {
                return Err(GatewayError::invalid(
                    "from_revision",
                    req.from_revision.to_string(),
                    format!("newer than the newest revision {current}"),
                ));
            }
            let missing = match oldest {
                Some(o) => req.from_revision + 1 < o,
                None => req.from_revision < current,
            };
            if missing {
                return Err(GatewayError::RevisionGone {
                    from: req.from_revision,
                    oldest: oldest.unwrap_or(current + 1),
                });
            }
            req.from_revision
        };
        let (tx, rx) = mpsc::channel(256);
        let gw = self.clone();
        tokio::spawn(async move {
            for e in snapshot {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let mut last = start;
            loop {
                notified.borrow_and_update();
                let page = {
                    let conn = gw.db.read().acquire().await;
                    match conn {
                        Ok(mut c) => store::events_after(&mut c, last, PAGE)
                            .await
                            .map_err(GatewayError::from),
                        Err(e) => Err(e.into()),
                    }
                };
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full = page.len() == PAGE as usize;
                for e in page {
                    last = e.revision;
                    if wanted(&req, &e) && tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    _ = notified.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}

impl Gateway {
    /// Everything there is, as events of one revision, read in one snapshot: hosts, networks,
    /// sandboxes, then endpoints (with their default-route flags).
    async fn snapshot(&self) -> Result<(Vec<pb::Event>, u64), GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        let begin = match self.db.backend() {
            weft_store::Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            weft_store::Backend::Sqlite => "BEGIN",
        };
        let mut tx = sqlx::Connection::begin_with(&mut *conn, begin).await?;
        let revision = store::current_revision(&mut tx).await?;
        let hosts = Gateway::snapshot_hosts(&mut tx).await?;
        let networks = store::networks::list(&mut tx).await?;
        let sandboxes = store::sandboxes::list(&mut tx).await?;
        let endpoints = store::sandboxes::all_endpoints(&mut tx).await?;
        tx.commit().await?;
        let now = crate::engine::now_ms();
        let ev = |kind, object| crate::to_pb::event(revision, now, kind, object);
        let mut events: Vec<pb::Event> = hosts
            .into_iter()
            .map(|(kind, h)| ev(kind, pb::event::Object::Host(h)))
            .collect();
        events.extend(networks.iter().map(|n| {
            ev(
                pb::EventKind::NetworkCreated,
                pb::event::Object::Network(network_to_pb(n)),
            )
        }));
        events.extend(sandboxes.iter().map(|s| {
            ev(
                pb::EventKind::SandboxCreated,
                pb::event::Object::Sandbox(crate::to_pb::sandbox_to_pb(s, &[])),
            )
        }));
        for group in endpoints.chunk_by(|a, b| a.sandbox_id == b.sandbox_id) {
            let id = |e: Option<&crate::domain::sandbox::EndpointRecord>| {
                e.map(|e| e.id.clone()).unwrap_or_default()
            };
            let v4 = id(crate::domain::sandbox::default_route(group, false));
            let v6 = id(crate::domain::sandbox::default_route(group, true));
            for e in group {
                events.push(ev(
                    pb::EventKind::EndpointConnected,
                    pb::event::Object::Endpoint(crate::to_pb::endpoint_to_pb(e, Some((&v4, &v6)))),
                ));
            }
        }
        Ok((events, revision))
    }
}

/// The watcher's filters: event kinds, and a network by name or id.
fn wanted(req: &pb::WatchRequest, e: &pb::Event) -> bool {
    let kind_ok = req.kinds.is_empty() || req.kinds.contains(&e.kind);
    let net_ok = req.network.is_empty()
        || match &e.object {
            Some(pb::event::Object::Network(n)) => {
                n.name == req.network || n.id.starts_with(&req.network)
            }
            Some(pb::event::Object::Endpoint(ep)) => {
                ep.network_name == req.network || ep.network_id.starts_with(&req.network)
            }
            _ => false,
        };
    kind_ok && net_ok
}
