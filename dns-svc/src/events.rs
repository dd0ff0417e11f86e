//! Records from the gateway: a client of `weft.gateway.v1.EventService.Watch`.
//!
//! List, then watch: from revision 0 the gateway sends a snapshot and SNAPSHOT_END, then live
//! events. The watch is scoped to this host (`scope_host`): the gateway sends the networks with
//! an endpoint on this host, with all their endpoints and those endpoints' sandboxes, and
//! this host's sandboxes; networks come and go as SCOPE_ENTERED and SCOPE_LEFT. On a broken stream it resumes from the last revision seen; when that revision is no
//! longer in the gateway's log (OUT_OF_RANGE) it lists again. While it relists, the previous
//! snapshot keeps answering: the new one replaces it whole at SNAPSHOT_END.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use futures::FutureExt as _;
use tokio::sync::watch;
use tonic::{Code, transport::Channel};
use weft_proto::gateway::v1::{
    self as gw, EventKind, WatchRequest, event_service_client::EventServiceClient,
};
use weft_runtime::access::Bearer;

use crate::records::{Live, Snapshot, State};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most this many events are applied between two snapshot publications, so a long burst
/// still shows progress.
const MAX_BATCH: usize = 1000;

#[derive(Debug)]
pub struct Ingester {
    /// To the gateway (lazy: it connects, and reconnects, when called).
    channel: Channel,
    /// dns-svc's credentials at the gateway (none when its certificate is).
    bearer: Bearer,
    /// This host: the watch asks for its scope only (`WatchRequest.scope_host`).
    host: String,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// The revision of the published snapshot, for whoever must react to changes (listeners).
    published: watch::Sender<u64>,
}

/// Where the ingester is in the gateway's log.
#[derive(Debug, Default)]
struct Cursor {
    /// The records and their index, changed in place event by event.
    live: Live,
    /// The state being rebuilt from a snapshot, until SNAPSHOT_END.
    relisting: Option<State>,
    /// Where to resume; 0 means relist.
    from: u64,
}

impl Ingester {
    pub fn new(
        channel: Channel,
        bearer: Bearer,
        host: String,
        snapshot: Arc<ArcSwap<Snapshot>>,
        published: watch::Sender<u64>,
    ) -> Self {
        Self {
            channel,
            bearer,
            host,
            snapshot,
            published,
        }
    }

    /// Follows the gateway forever (until the task is dropped).
    pub async fn run(self) {
        let mut client = EventServiceClient::new(self.bearer.on(self.channel.clone()));
        let mut cur = Cursor::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            let req = WatchRequest {
                from_revision: cur.from,
                scope_host: self.host.clone(),
                ..Default::default()
            };
            if cur.from == 0 {
                cur.relisting = Some(State::default());
            }
            tracing::debug!(from_revision = cur.from, "watching gateway events");
            match client.watch(req).await {
                Err(st) => self.failed(&mut cur, &st),
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    let mut next = stream.message().await;
                    loop {
                        // Apply everything that has already arrived, then publish once: a burst
                        // of changes costs one publication, not one per event. (`message`
                        // keeps its state in the stream, so dropping a pending call loses
                        // nothing.)
                        let mut dirty = false;
                        let mut batch = 0;
                        let end = loop {
                            match next {
                                Ok(Some(ev)) => {
                                    backoff = BACKOFF_MIN;
                                    dirty |= self.on_event(&mut cur, &ev);
                                    batch += 1;
                                }
                                Ok(None) => break Some(None),
                                Err(st) => break Some(Some(st)),
                            }
                            if batch >= MAX_BATCH {
                                break None;
                            }
                            match stream.message().now_or_never() {
                                Some(n) => next = n,
                                None => break None,
                            }
                        };
                        if dirty {
                            self.publish(&mut cur.live);
                        }
                        match end {
                            None => next = stream.message().await,
                            Some(None) => {
                                tracing::info!(revision = cur.from, "event stream ended, resuming");
                                break;
                            }
                            Some(Some(st)) => {
                                self.failed(&mut cur, &st);
                                break;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn failed(&self, cur: &mut Cursor, st: &tonic::Status) {
        if st.code() == Code::OutOfRange {
            tracing::warn!(
                from_revision = cur.from,
                "revision no longer in the gateway's log, relisting"
            );
            cur.from = 0;
        } else {
            tracing::warn!(code = ?st.code(), error = %st.message(), "gateway event stream failed");
        }
    }

    /// Applies one event; returns whether a snapshot must be published (something changed, or
    /// the revision moved: a waiter for that revision is released only by a publication).
    fn on_event(&self, cur: &mut Cursor, ev: &gw::Event) -> bool {
        let kind = EventKind::try_from(ev.kind).unwrap_or(EventKind::Unspecified);
        if let Some(fresh) = cur.relisting.as_mut() {
            if kind == EventKind::SnapshotEnd {
                let mut fresh = cur.relisting.take().unwrap_or_default();
                fresh.revision = ev.revision;
                tracing::info!(
                    revision = ev.revision,
                    networks = fresh.networks.len(),
                    sandboxes = fresh.sandboxes.len(),
                    endpoints = fresh.endpoints.len(),
                    "synchronised with the gateway"
                );
                cur.live.replace(fresh);
                cur.from = ev.revision;
                return true;
            }
            fresh.apply(ev);
            return false;
        }
        if ev.revision <= cur.from && kind != EventKind::SnapshotEnd {
            // Already applied (a resumed stream may repeat the boundary event).
            return false;
        }
        if matches!(kind, EventKind::ScopeEntered | EventKind::ScopeLeft) {
            // They carry the revision of the event that follows them: resuming from it is safe
            // only once that event is here.
            return cur.live.apply(ev);
        }
        let changed = cur.live.apply(ev);
        let moved = ev.revision > cur.from;
        cur.from = cur.from.max(ev.revision);
        cur.live.set_revision(cur.from);
        changed || moved || kind == EventKind::SnapshotEnd
    }

    /// Publishes the snapshot of what `live` holds: only what changed since the last one is
    /// indexed again ([`Live::publish`]).
    fn publish(&self, live: &mut Live) {
        let snap = live.publish(true);
        let revision = snap.revision;
        self.snapshot.store(Arc::new(snap));
        self.published.send_replace(revision);
    }
}
