//! DNS serving with hickory-server: the request handler, the operator listener, and one
//! listener per sandbox of this host inside the sandbox's network namespace.
//!
//! Sandbox sockets are made inside the sandbox's namespace by the driver-agent's socket broker
//! (or, in development, on a short-lived thread that entered it: [`crate::sockets`]): a socket
//! stays in the namespace it was created in, so tokio can drive it from any thread.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use hickory_proto::{
    op::{Edns, Metadata, OpCode, ResponseCode},
    rr::Name,
};
use hickory_server::{net::xfer::Protocol, server::Request, zone_handler::MessageResponseBuilder};
use tokio::sync::watch;

use crate::{
    error::ListenError,
    listen::{Listener, TcpLimits},
    resolver::{Query, Resolver},
    sockets::SocketSource,
    threads::IoThreads,
    wire::{self, Answer},
};

/// Answers the queries of one listener: a sandbox's, or the operator's (`sandbox_id` `None`).
#[derive(Debug, Clone)]
pub struct DnsHandler {
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) sandbox_id: Option<Arc<str>>,
}

impl DnsHandler {
    pub fn new(resolver: Arc<Resolver>, sandbox_id: Option<&str>) -> Self {
        Self {
            resolver,
            sandbox_id: sandbox_id.map(Arc::from),
        }
    }

    /// The encoded answer to a decoded request (see [`wire::answer`] for what comes before).
    pub async fn respond(&self, request: &Request) -> Answer {
        let req_edns = request.edns.as_ref();
        let cap = self.resolver.udp_max();
        let edns = req_edns.map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(wire::advertised_payload(req.max_payload(), cap));
            e.set_version(0);
            e
        });
        let max = wire::max_size(request.protocol(), req_edns.map(Edns::max_payload), cap);
        let Some(echo) = wire::echo_question(&request.queries) else {
            return wire::servfail(&request.metadata);
        };
        let builder = MessageResponseBuilder::new(&echo, edns.as_ref());
        let error = match (request.metadata.op_code, request.queries.len()) {
            // RFC 6891 6.1.3: we speak EDNS version 0 only.
            _ if req_edns.is_some_and(|e| e.version() > 0) => Some(ResponseCode::BADVERS),
            (OpCode::Query, 1) => None,
            (OpCode::Query, _) => Some(ResponseCode::FormErr),
            _ => Some(ResponseCode::NotImp),
        };
        let answer = if let Some(code) = error {
            wire::encode(builder.error_msg(&request.metadata, code), max)
        } else {
            let query = &request.queries.queries()[0];
            let name: Name = query.original().name().clone();
            let outcome = self
                .resolver
                .resolve(Query {
                    sandbox_id: self.sandbox_id.as_deref(),
                    name: &name,
                    qtype: query.query_type(),
                    local_only: false,
                    tcp: request.protocol() == Protocol::Tcp,
                })
                .await;
            let mut md = Metadata::response_from_request(&request.metadata);
            md.authoritative = outcome.authoritative;
            md.recursion_available = self.sandbox_id.is_some();
            md.response_code = outcome.rcode;
            let full = wire::encode(
                builder.build(
                    md,
                    outcome.answers.iter(),
                    outcome.authorities.iter(),
                    std::iter::empty(),
                    outcome.additionals.iter(),
                ),
                max,
            );
            if full.truncated {
                // What does not fit is sent as the header, the question and our OPT record
                // with TC set, and no records: hickory cuts the sections where the size runs
                // out and can leave part of the OPT record behind (a message that does not
                // parse cleanly), and a truncated answer is only a signal to ask over TCP
                // (RFC 2181 9, RFC 7766 5).
                md.truncation = true;
                wire::encode(
                    MessageResponseBuilder::new(&echo, edns.as_ref()).build(
                        md,
                        std::iter::empty(),
                        std::iter::empty(),
                        std::iter::empty(),
                        std::iter::empty(),
                    ),
                    max,
                )
            } else {
                full
            }
        };
        if answer.truncated {
            self.resolver
                .stats
                .total
                .truncated
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        answer
    }
}

/// Binds UDP and TCP on `addr` in the current namespace. With port 0, one port free for both
/// protocols is searched (the TCP side of the UDP port may be taken).
pub(crate) fn bind(
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), ListenError> {
    bind_with(addr, || {
        let udp = std::net::UdpSocket::bind(addr)?;
        udp.set_nonblocking(true)?;
        Ok(udp)
    })
}

/// [`bind`], with the UDP socket made by `udp`.
fn bind_with(
    addr: SocketAddr,
    udp: impl Fn() -> std::io::Result<std::net::UdpSocket>,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), ListenError> {
    let mut tries = 0;
    loop {
        match bind_once(addr, &udp) {
            Err(ListenError::Bind { proto: "tcp", .. }) if addr.port() == 0 && tries < 20 => {
                tries += 1;
            }
            res => return res,
        }
    }
}

fn bind_once(
    addr: SocketAddr,
    udp: impl Fn() -> std::io::Result<std::net::UdpSocket>,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), ListenError> {
    let bind_err = |proto| {
        move |source| ListenError::Bind {
            proto,
            addr,
            source,
        }
    };
    let udp = udp().map_err(bind_err("udp"))?;
    // The TCP listener takes the UDP socket's port, so port 0 gives one port for both.
    let addr = udp.local_addr().map_err(bind_err("udp"))?;
    let tcp = std::net::TcpListener::bind(addr).map_err(bind_err("tcp"))?;
    tcp.set_nonblocking(true).map_err(bind_err("tcp"))?;
    Ok((udp, tcp))
}

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

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEPORT`.
fn reuse_port_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
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
    entries: Mutex<HashMap<String, Entry>>,
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
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.sandbox_name.cmp(&b.sandbox_name));
        v
    }

    /// Reconciles on every published snapshot, and retries failed listeners, until `published`
    /// closes.
    pub async fn run(self: Arc<Self>, mut published: watch::Receiver<u64>) {
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                r = published.changed() => if r.is_err() { break },
                _ = retry.tick() => {}
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
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in all {
            close(e);
        }
    }

    /// Opens listeners for this host's sandboxes that have none (or whose last try failed) and
    /// closes those of sandboxes that are gone; returns the revision of the snapshot used.
    pub async fn reconcile(&self) -> u64 {
        let snap = self.resolver.snapshot();
        // Sandboxes in the host's namespace ("host" mode) get no listener: dns-svc must never
        // bind in the host's own namespace for them. "container:<id>" sandboxes share the
        // namespace (and the listener) of the sandbox they join.
        let wanted: HashMap<&str, (&str, &str)> = snap
            .sandboxes
            .values()
            .filter_map(|v| v.rec.as_ref())
            .filter(|r| {
                r.host == self.host
                    && !r.netns_path.is_empty()
                    && r.network_mode != "host"
                    && !r.network_mode.starts_with("container:")
            })
            .map(|r| (r.id.as_str(), (r.name.as_str(), r.netns_path.as_str())))
            .collect();
        let (to_open, to_close) = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = entries
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
                        .get(**id)
                        .is_none_or(|e| e.info.state == ListenerState::Failed)
                })
                .map(|(id, (name, path))| {
                    ((*id).to_owned(), (*name).to_owned(), (*path).to_owned())
                })
                .collect();
            (to_open, to_close)
        };
        for e in to_close {
            tracing::info!(sandbox = %e.info.sandbox_name, netns = %e.info.netns_path, "closing sandbox DNS listener");
            close(e);
        }
        for (id, name, path) in to_open {
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
            let since = match entries.get(&id) {
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
        snap.revision
    }
}

/// Stops a listener in the background: its sockets close once its tasks have ended.
fn close(e: Entry) {
    if let Some(listener) = e.server {
        tokio::spawn(listener.shutdown());
    }
}
