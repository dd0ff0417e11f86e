//! A fake gateway for the tests: an in-process `weft.gateway.v1.EventService` that a test feeds
//! change by change, and gateway objects in the shape the real gateway sends them.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as gw, EventKind,
    event::Object,
    event_service_server::{EventService, EventServiceServer},
};

#[derive(Debug, Default)]
struct GwState {
    revision: u64,
    /// Revisions below this are no longer in the log: resuming from them is OUT_OF_RANGE.
    oldest: u64,
    log: Vec<gw::Event>,
    networks: BTreeMap<String, gw::Network>,
    sandboxes: BTreeMap<String, gw::Sandbox>,
    endpoints: BTreeMap<String, gw::Endpoint>,
    subscribers: Vec<mpsc::UnboundedSender<Result<gw::Event, Status>>>,
    watches: Vec<u64>,
    /// The scope_host of every Watch call so far.
    scopes: Vec<String>,
}

fn event(revision: u64, kind: EventKind, object: Option<Object>) -> gw::Event {
    gw::Event {
        revision,
        kind: kind as i32,
        object,
        ..Default::default()
    }
}

/// An in-process `weft.gateway.v1.EventService` that the test feeds.
#[derive(Debug, Clone, Default)]
pub struct FakeGateway {
    state: Arc<Mutex<GwState>>,
}

#[tonic::async_trait]
impl EventService for FakeGateway {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<gw::Event, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<gw::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = req.get_ref().from_revision;
        let mut st = self.state.lock().unwrap();
        st.watches.push(from);
        st.scopes.push(req.get_ref().scope_host.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let rev = st.revision;
        if from == 0 {
            let snapshot = st
                .networks
                .values()
                .map(|n| {
                    event(
                        rev,
                        EventKind::NetworkCreated,
                        Some(Object::Network(n.clone())),
                    )
                })
                .chain(st.sandboxes.values().map(|s| {
                    event(
                        rev,
                        EventKind::SandboxCreated,
                        Some(Object::Sandbox(s.clone())),
                    )
                }))
                .chain(st.endpoints.values().map(|e| {
                    event(
                        rev,
                        EventKind::EndpointConnected,
                        Some(Object::Endpoint(e.clone())),
                    )
                }))
                .chain([event(rev, EventKind::SnapshotEnd, None)]);
            for ev in snapshot {
                let _ = tx.send(Ok(ev));
            }
        } else if from < st.oldest || from > rev {
            return Err(Status::out_of_range(format!(
                "revision {from} is not in the log (oldest {}, current {rev})",
                st.oldest
            )));
        } else {
            for ev in st.log.iter().filter(|e| e.revision > from) {
                let _ = tx.send(Ok(ev.clone()));
            }
        }
        st.subscribers.push(tx);
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

impl FakeGateway {
    /// Serves on a free loopback port; returns the URL to give dns-svc.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = EventServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        format!("http://{addr}")
    }

    /// Commits one change: applies it, logs it, streams it to every watcher.
    pub fn publish(&self, kind: EventKind, object: Object) -> u64 {
        self.publish_scoped(&[], kind, object, false)
    }

    /// Commits one change that moves a scoped watch's scope: the `scope` events (SCOPE_ENTERED,
    /// SCOPE_LEFT) first, then the change itself, all of one revision, as the gateway sends
    /// them. `break_before`: every stream ends after the scope events, before the change (which
    /// is logged all the same).
    pub fn publish_scoped(
        &self,
        scope: &[(EventKind, Object)],
        kind: EventKind,
        object: Object,
        break_before: bool,
    ) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let rev = st.revision;
        for (k, o) in scope {
            apply(&mut st, *k, o);
            let ev = event(rev, *k, Some(o.clone()));
            st.log.push(ev.clone());
            st.subscribers.retain(|tx| tx.send(Ok(ev.clone())).is_ok());
        }
        if break_before {
            st.subscribers.clear();
        }
        apply(&mut st, kind, &object);
        let ev = event(rev, kind, Some(object));
        st.log.push(ev.clone());
        st.subscribers.retain(|tx| tx.send(Ok(ev.clone())).is_ok());
        rev
    }
}

/// What an event does to the fake's objects (for its snapshots).
fn apply(st: &mut GwState, kind: EventKind, object: &Object) {
    match (object, kind) {
        (Object::Network(n), EventKind::ScopeLeft) => {
            st.networks.remove(&n.id);
            st.endpoints.retain(|_, e| e.network_id != n.id);
        }
        (Object::Sandbox(s), EventKind::ScopeLeft) => {
            st.sandboxes.remove(&s.id);
        }
        (Object::Network(n), EventKind::NetworkRemoved) => {
            st.networks.remove(&n.id);
        }
        (Object::Network(n), _) => {
            st.networks.insert(n.id.clone(), n.clone());
        }
        (Object::Sandbox(s), EventKind::SandboxRemoved) => {
            st.sandboxes.remove(&s.id);
        }
        (Object::Sandbox(s), _) => {
            st.sandboxes.insert(s.id.clone(), s.clone());
        }
        (Object::Endpoint(e), EventKind::EndpointDisconnected) => {
            st.endpoints.remove(&e.id);
        }
        (Object::Endpoint(e), _) => {
            st.endpoints.insert(e.id.clone(), e.clone());
        }
        (Object::Host(_), _) => {}
    }
}

impl FakeGateway {
    pub fn network(&self, n: gw::Network) {
        self.publish(EventKind::NetworkCreated, Object::Network(n));
    }

    pub fn sandbox(&self, s: gw::Sandbox) {
        self.publish(EventKind::SandboxCreated, Object::Sandbox(s));
    }

    pub fn connect(&self, e: gw::Endpoint) -> u64 {
        self.publish(EventKind::EndpointConnected, Object::Endpoint(e))
    }

    pub fn revision(&self) -> u64 {
        self.state.lock().unwrap().revision
    }

    /// Ends every open Watch stream (a gateway restart, as a client sees it).
    pub fn end_streams(&self) {
        self.state.lock().unwrap().subscribers.clear();
    }

    /// Forgets the log up to now: resuming from any revision seen so far is OUT_OF_RANGE.
    pub fn compact_log(&self) {
        let mut st = self.state.lock().unwrap();
        st.log.clear();
        st.oldest = st.revision + 1;
    }

    /// The from_revision of every Watch call so far.
    pub fn watches(&self) -> Vec<u64> {
        self.state.lock().unwrap().watches.clone()
    }

    /// The scope_host of every Watch call so far.
    pub fn scopes(&self) -> Vec<String> {
        self.state.lock().unwrap().scopes.clone()
    }
}

/// Gateway objects, in the shape the real gateway sends them.
pub fn network(id: &str, name: &str, subnet: &str, internal: bool) -> gw::Network {
    gw::Network {
        id: id.into(),
        name: name.into(),
        driver: "bridge".into(),
        internal,
        ipam: Some(gw::Ipam {
            configs: vec![gw::IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn sandbox(id: &str, name: &str, host: &str, netns_path: &str, hostname: &str) -> gw::Sandbox {
    gw::Sandbox {
        id: id.into(),
        name: name.into(),
        host: host.into(),
        netns_path: netns_path.into(),
        hostname: hostname.into(),
        ..Default::default()
    }
}

pub fn endpoint(
    id: &str,
    net: &gw::Network,
    sb: &gw::Sandbox,
    v4: &str,
    aliases: &[&str],
) -> gw::Endpoint {
    gw::Endpoint {
        id: id.into(),
        network_id: net.id.clone(),
        network_name: net.name.clone(),
        sandbox_id: sb.id.clone(),
        sandbox_name: sb.name.clone(),
        ipv4_address: v4.into(),
        aliases: aliases.iter().map(|s| (*s).to_owned()).collect(),
        host: sb.host.clone(),
        ..Default::default()
    }
}
