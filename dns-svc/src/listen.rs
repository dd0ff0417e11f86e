//! The socket side of one DNS listener: a UDP loop and a TCP accept loop, both feeding the fast
//! path ([`DnsHandler::answer_fast`]) and, for what it does not take, the general one
//! ([`handler::answer_general`]). It knows sockets, tasks and limits; what to answer is the
//! handler's ([`crate::handler`]), and which sockets and threads is its caller's
//! ([`crate::server`], [`crate::sockets`], [`crate::threads`]).
//!
//! Hygiene, so that junk and slow clients cost little:
//! - UDP answers that need no upstream are answered inline, without a task (most of them by the
//!   fast path, into a buffer the loop keeps); those that wait for an upstream get a task, at
//!   most [`MAX_PENDING_UDP`] at a time (more are dropped: the client retries).
//! - TCP: at most `per_client` connections per client address and [`MAX_TCP_CONNECTIONS`] in
//!   all (more are closed at once); a connection is closed when a whole query does not arrive
//!   within the idle timeout, or an answer cannot be written within it. Every wait is a socket
//!   readiness or a timer: a stalled or half-sent query costs no CPU.
//! - Accept and receive errors (EMFILE, …) back off instead of spinning.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt as _;
use hickory_server::net::xfer::Protocol;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinSet,
    time::timeout,
};

use crate::{
    handler::{self, DnsHandler},
    threads::IoThreads,
    wire,
};

/// UDP queries waiting for an upstream at once, per listener.
pub const MAX_PENDING_UDP: usize = 1024;
/// TCP connections open at once, per listener, whoever the clients are.
pub const MAX_TCP_CONNECTIONS: usize = 512;
/// Pause after a failed accept or receive (out of descriptors, …), instead of a busy retry.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Limits of the TCP side.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// A connection that does not complete a query (or take an answer) within this is closed.
    pub idle: Duration,
    /// Connections open at once from one client address.
    pub per_client: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(5),
            per_client: 16,
        }
    }
}

/// A running listener; dropping it (or [`Listener::shutdown`]) stops its loops, its pending
/// queries and its connections, and closes its sockets.
#[derive(Debug)]
pub struct Listener {
    tasks: JoinSet<()>,
}

impl Listener {
    /// Serves `handler` on bound, non-blocking sockets, on the DNS threads: the TCP listener
    /// and the first UDP socket on the next thread, further UDP sockets (bound with
    /// `SO_REUSEPORT` to the same address) each on the thread after.
    pub fn start(
        handler: Arc<DnsHandler>,
        udp: Vec<std::net::UdpSocket>,
        tcp: std::net::TcpListener,
        limits: TcpLimits,
        threads: &IoThreads,
    ) -> io::Result<Self> {
        let first = threads.pick_index();
        let on = |i: usize| &threads.all()[(first + i) % threads.len()];
        let mut tasks = JoinSet::new();
        for (i, udp) in udp.into_iter().enumerate() {
            let rt = on(i);
            // Registers the socket with that thread's reactor.
            let udp = {
                let _in = rt.enter();
                UdpSocket::from_std(udp)?
            };
            tasks.spawn_on(udp_loop(handler.clone(), Arc::new(udp)), rt);
        }
        let rt = on(0);
        let tcp = {
            let _in = rt.enter();
            TcpListener::from_std(tcp)?
        };
        tasks.spawn_on(tcp_loop(handler, tcp, limits), rt);
        Ok(Self { tasks })
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn udp_loop(handler: Arc<DnsHandler>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let mut out = Vec::with_capacity(512);
    let mut pending = JoinSet::new();
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "UDP receive failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        while pending.try_join_next().is_some() {}
        if src.port() == 0 {
            continue;
        }
        let started = crate::metrics::query_started();
        if handler.answer_fast(&buf[..n], Protocol::Udp, &mut out) {
            crate::metrics::query_done(handler.sandbox_id.is_some(), started);
            send_udp(&sock, &out, src).await;
            continue;
        }
        let mut fut = Box::pin(owned_answer(
            handler.clone(),
            buf[..n].to_vec(),
            src,
            started,
        ));
        // Weft's own names are answered without waiting: one poll finishes them.
        match fut.as_mut().now_or_never() {
            Some(Some(a)) => send_udp(&sock, &a.bytes, src).await,
            Some(None) => {}
            None if pending.len() < MAX_PENDING_UDP => {
                let sock = sock.clone();
                pending.spawn(async move {
                    if let Some(a) = fut.await {
                        send_udp(&sock, &a.bytes, src).await;
                    }
                });
            }
            None => tracing::debug!(%src, "too many queries waiting for upstreams: dropped"),
        }
    }
}

/// The general path of a UDP query that arrived at `started` (timed for the metrics).
async fn owned_answer(
    handler: Arc<DnsHandler>,
    raw: Vec<u8>,
    src: SocketAddr,
    started: Option<std::time::Instant>,
) -> Option<wire::Answer> {
    let answer = handler::answer_general(&handler, raw, src, Protocol::Udp).await;
    crate::metrics::query_done(handler.sandbox_id.is_some(), started);
    answer
}

async fn send_udp(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(error) = sock.send_to(bytes, to).await {
        tracing::debug!(%to, %error, "cannot send a UDP answer");
    }
}

/// Open connections per client address.
type Clients = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One client's connection slot, given back on drop.
#[derive(Debug)]
struct Slot {
    clients: Clients,
    ip: IpAddr,
}

impl Slot {
    fn take(clients: &Clients, ip: IpAddr, per_client: usize) -> Option<Self> {
        let mut map = clients.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= per_client {
            return None;
        }
        *n += 1;
        Some(Self {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn tcp_loop(handler: Arc<DnsHandler>, listener: TcpListener, limits: TcpLimits) {
    let clients = Clients::default();
    let mut conns = JoinSet::new();
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "TCP accept failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_TCP_CONNECTIONS {
            tracing::debug!(%src, "too many TCP connections: closed");
            continue;
        }
        let Some(slot) = Slot::take(&clients, src.ip(), limits.per_client) else {
            tracing::debug!(%src, limit = limits.per_client, "too many TCP connections from this client: closed");
            continue;
        };
        conns.spawn(connection(handler.clone(), stream, src, limits.idle, slot));
    }
}

/// Serves one TCP connection, one query at a time, until the client closes it, goes idle, or
/// sends something that is not a length-prefixed message.
async fn connection(
    handler: Arc<DnsHandler>,
    mut stream: TcpStream,
    src: SocketAddr,
    idle: Duration,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    loop {
        let raw = match timeout(idle, read_message(&mut stream)).await {
            Ok(Ok(Some(raw))) => raw,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%src, %error, "TCP read failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%src, ?idle, "idle TCP connection closed");
                return;
            }
        };
        let Some(a) = handler::answer(&handler, raw, src, Protocol::Tcp).await else {
            continue;
        };
        let Ok(len) = u16::try_from(a.bytes.len()) else {
            continue;
        };
        let mut out = Vec::with_capacity(2 + a.bytes.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&a.bytes);
        match timeout(idle, stream.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// One length-prefixed message; `None` when the client closed the connection between messages
/// (or sent a zero length).
async fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}
