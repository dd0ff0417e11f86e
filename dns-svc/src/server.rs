//! Which listeners this host runs: the operator listener, and one listener per sandbox of this
//! host inside the sandbox's network namespace, opened and closed as the records change
//! ([`SandboxListeners`]); each serves a [`DnsHandler`] ([`crate::handler`]) through
//! [`crate::listen`].
//!
//! Sandbox sockets are made inside the sandbox's namespace by the driver-agent's socket broker
//! (or, in development, on a short-lived thread that entered it: [`crate::sockets`]): a socket
//! stays in the namespace it was created in, so tokio can drive it from any thread.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use crate::{
    error::ListenError,
    handler::DnsHandler,
    listen::{Listener, TcpLimits},
    records::{JournalMark, SandboxRec, Snapshot},
    resolver::Resolver,
    sockets::{SocketSource, bind, bind_with, reuse_port_udp},
    threads::IoThreads,
};

/// The operator listener, in the service's own namespace. With several DNS threads, each gets
/// a UDP socket of its own on the address (`SO_REUSEPORT`: the kernel spreads the clients).
pub fn operator_listener(
    resolver: Arc<Resolver>,
    addr: SocketAddr,
    limits: TcpLimits,
    threads: &IoThreads,
) -> Result<(Listener, SocketAddr), ListenError> {
    let udp_err = |source| ListenError::Bind {
        proto: "udp",
        addr,
        source,
    };
    let (udp, tcp) = if threads.len() > 1 {
        bind_with(addr, || reuse_port_udp(addr))?
    } else {
        bind(addr)?
    };
    let local = udp.local_addr().map_err(udp_err)?;
    let mut udps = vec![udp];
    for _ in 1..threads.len() {
        udps.push(reuse_port_udp(local).map_err(udp_err)?);
    }
    let server = Listener::start(
        Arc::new(DnsHandler::new(resolver, None)),
        udps,
        tcp,
        limits,
        threads,
    )
    .map_err(udp_err)?;
    Ok((server, local))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    Listening,
    Failed,
}

/// What the admin API shows about one sandbox listener.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub netns_path: String,
    pub state: ListenerState,
    pub error: String,
    pub since: SystemTime,
}

struct Entry {
    info: ListenerInfo,
    server: Option<Listener>,
}

/// The listeners by sandbox id, and which of them failed to open (to be tried again).
#[derive(Debug, Default)]
struct Entries {
    all: HashMap<String, Entry>,
    failed: HashSet<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("info", &self.info).finish()
    }
}

/// The sandbox listeners of this host, kept in line with the records.
#[derive(Debug)]
pub struct SandboxListeners {
    resolver: Arc<Resolver>,
    host: String,
    addr: SocketAddr,
    limits: TcpLimits,
    threads: Arc<IoThreads>,
    /// Where the listeners' sockets come from (the agent's broker, or setns in development).
    sockets: SocketSource,
    entries: Mutex<Entries>,
    /// Where in the records' journal of sandbox changes the last reconciliation stood: the
    /// next one reads only the sandboxes changed since (none yet: all of them).
    mark: Mutex<Option<JournalMark>>,
    /// The gateway revision of the snapshot the listeners were last reconciled to.
    reconciled: watch::Sender<u64>,
}

/// How often listeners that failed to open are tried again.
const RETRY: Duration = Duration::from_secs(1);

impl SandboxListeners {
    pub fn new(
        resolver: Arc<Resolver>,
        host: String,
        addr: SocketAddr,
        limits: TcpLimits,
        threads: Arc<IoThreads>,
        sockets: SocketSource,
    ) -> Self {
        Self {
            resolver,
            host,
            addr,
            limits,
            threads,
            sockets,
            entries: Mutex::default(),
            mark: Mutex::default(),
            reconciled: watch::channel(0).0,
        }
    }

    /// Waits until the records reflect gateway revision `revision` and the listeners have
    /// been reconciled to them; the revision reached, or `None` after `timeout`.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> Option<u64> {
        let mut rx = self.reconciled.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .ok()?
            .ok()
            .map(|r| *r)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn list(&self) -> Vec<ListenerInfo> {
        let mut v: Vec<ListenerInfo> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.sandbox_name.cmp(&b.sandbox_name));
        v
    }

    /// Reconciles on every published snapshot, and retries failed listeners, until `published`
    /// closes. The retry tick reconciles only when a listener failed.
    pub async fn run(self: Arc<Self>, mut published: watch::Receiver<u64>) {
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                r = published.changed() => if r.is_err() { break },
                _ = retry.tick() => if !self.any_failed() { continue },
            }
            let revision = self.reconcile().await;
            self.reconciled.send_if_modified(|r| {
                let newer = revision > *r;
                *r = (*r).max(revision);
                newer
            });
        }
        let all: Vec<Entry> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in all {
            close(e);
        }
    }

    /// Whether a listener failed to open (and is to be tried again).
    fn any_failed(&self) -> bool {
        !self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .is_empty()
    }

    /// Opens listeners for this host's sandboxes that have none (or whose last try failed) and
    /// closes those of sandboxes that are gone; returns the revision of the snapshot used.
    /// Only the sandboxes changed since the last reconciliation are looked at (and those whose
    /// listener failed), unless the records cannot tell which (at start, after a relist, or
    /// after more changes than they keep): then every sandbox is.
    pub async fn reconcile(&self) -> u64 {
        let snap = self.resolver.snapshot();
        let mark = self
            .mark
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(snap.journal_mark());
        let (to_open, to_close) = match mark.and_then(|m| snap.sandboxes_changed_since(m)) {
            Some(changed) => self.plan_changed(&snap, changed.into_iter()),
            None => self.plan(&self.wanted(&snap)),
        };
        for e in to_close {
            tracing::info!(sandbox = %e.info.sandbox_name, netns = %e.info.netns_path, "closing sandbox DNS listener");
            close(e);
        }
        for (id, name, path) in to_open {
            self.open(id, name, path).await;
        }
        snap.revision
    }

    /// The sandboxes of this host that get a listener: id to name and namespace path.
    fn wanted<'s>(&self, snap: &'s Snapshot) -> HashMap<&'s str, (&'s str, &'s str)> {
        snap.sandboxes
            .values()
            .filter_map(|v| v.rec.as_ref())
            .filter(|r| self.gets_listener(r))
            .map(|r| (r.id.as_str(), (r.name.as_str(), r.netns_path.as_str())))
            .collect()
    }

    fn gets_listener(&self, r: &SandboxRec) -> bool {
        // Sandboxes in the host's namespace ("host" mode) get no listener: dns-svc must never
        // bind in the host's own namespace for them. "container:<id>" sandboxes share the
        // namespace (and the listener) of the sandbox they join.
        r.host == self.host
            && !r.netns_path.is_empty()
            && r.network_mode != "host"
            && !r.network_mode.starts_with("container:")
    }

    /// [`Self::plan`] for the sandboxes `changed` (maybe repeated) and those whose listener
    /// failed, only.
    fn plan_changed(
        &self,
        snap: &Snapshot,
        changed: impl Iterator<Item = String>,
    ) -> (Vec<(String, String, String)>, Vec<Entry>) {
        let failed: Vec<String> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .iter()
            .cloned()
            .collect();
        let ids: HashSet<String> = changed.chain(failed).collect();
        let mut wanted = HashMap::new();
        for id in ids {
            let rec = snap
                .sandboxes
                .get(&id)
                .and_then(|v| v.rec.as_ref())
                .filter(|r| self.gets_listener(r));
            wanted.insert(id, rec.map(|r| (r.name.as_str(), r.netns_path.as_str())));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut to_close = Vec::new();
        let mut to_open = Vec::new();
        for (id, want) in wanted {
            if entries
                .all
                .get(&id)
                .is_some_and(|e| want.is_none_or(|(_, path)| path != e.info.netns_path))
                && let Some(e) = entries.remove(&id)
            {
                to_close.push(e);
            }
            if let Some((name, path)) = want
                && entries
                    .all
                    .get(&id)
                    .is_none_or(|e| e.info.state == ListenerState::Failed)
            {
                to_open.push((id, name.to_owned(), path.to_owned()));
            }
        }
        (to_open, to_close)
    }

    /// Takes out the entries of sandboxes no longer `wanted` (or now in another namespace), to
    /// close, and lists the listeners to open: (id, name, namespace path).
    fn plan(
        &self,
        wanted: &HashMap<&str, (&str, &str)>,
    ) -> (Vec<(String, String, String)>, Vec<Entry>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = entries
            .all
            .iter()
            .filter(|(id, e)| {
                wanted
                    .get(id.as_str())
                    .is_none_or(|(_, path)| *path != e.info.netns_path)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let to_close: Vec<Entry> = gone.iter().filter_map(|id| entries.remove(id)).collect();
        let to_open: Vec<(String, String, String)> = wanted
            .iter()
            .filter(|(id, _)| {
                entries
                    .all
                    .get(**id)
                    .is_none_or(|e| e.info.state == ListenerState::Failed)
            })
            .map(|(id, (name, path))| ((*id).to_owned(), (*name).to_owned(), (*path).to_owned()))
            .collect();
        (to_open, to_close)
    }

    /// Opens the listener of sandbox `id` in the namespace at `path`, and records how it went.
    async fn open(&self, id: String, name: String, path: String) {
        let res = self
            .sockets
            .listeners(&id, &path, self.addr)
            .await
            .and_then(|(udp, tcp)| {
                Listener::start(
                    Arc::new(DnsHandler::new(self.resolver.clone(), Some(&id))),
                    vec![udp],
                    tcp,
                    self.limits,
                    &self.threads,
                )
                .map_err(|source| ListenError::Bind {
                    proto: "udp",
                    addr: self.addr,
                    source,
                })
            });
        let (state, error, server) = match res {
            Ok(server) => {
                tracing::info!(sandbox = %name, netns = %path, addr = %self.addr, "sandbox DNS listener open");
                (ListenerState::Listening, String::new(), Some(server))
            }
            Err(e) => {
                tracing::warn!(sandbox = %name, netns = %path, error = %e, "cannot open sandbox DNS listener");
                (ListenerState::Failed, e.to_string(), None)
            }
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let since = match entries.all.get(&id) {
            Some(old) if old.info.state == state => old.info.since,
            _ => SystemTime::now(),
        };
        entries.insert(
            id.clone(),
            Entry {
                info: ListenerInfo {
                    sandbox_id: id,
                    sandbox_name: name,
                    netns_path: path,
                    state,
                    error,
                    since,
                },
                server,
            },
        );
    }
}

impl Entries {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        self.failed.remove(id);
        self.all.remove(id)
    }

    fn insert(&mut self, id: String, e: Entry) {
        if e.info.state == ListenerState::Failed {
            self.failed.insert(id.clone());
        } else {
            self.failed.remove(&id);
        }
        if let Some(old) = self.all.insert(id, e) {
            close(old);
        }
    }
}

/// Stops a listener in the background: its sockets close once its tasks have ended.
fn close(e: Entry) {
    if let Some(listener) = e.server {
        tokio::spawn(listener.shutdown());
    }
}
