//! dns-svc: container name resolution, per network, per host.
//!
//! Records come from the gateway's event stream ([`events`]) into an immutable snapshot
//! ([`records`]) that queries read without locks. Each sandbox of this host gets a DNS listener
//! inside its own namespace ([`server`]), so the answer depends on who asks ([`resolver`]);
//! other names are forwarded ([`forward`]). The admin API explains and counts ([`grpc`]).
//!
//! The DNS side, from the bottom up: [`wire`] (sizes and encoding, using nothing of the crate);
//! [`handler`] (one message in, its answer out: the fast path for plain queries of Weft names,
//! else the general path through the [`resolver`]); [`listen`] (the UDP and TCP loops of one
//! listener, feeding the handler) on the DNS threads ([`threads`]) with sockets from
//! [`sockets`]; [`server`] (which listeners run). Each depends only on those before it
//! (`scripts/import-cycles.py` checks that no module imports another that imports it back).
//!
//! Test and fuzzing builds (`cfg(any(test, feature = "fuzzing"))`) add `fixture` (gateway
//! objects for fixed worlds) and `offline` (a fixed world's handlers and the fuzz oracle).

pub mod config;
pub mod error;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fixture;
pub mod forward;
pub mod grpc;
pub mod handler;
pub mod listen;
pub mod metrics;
#[cfg(any(test, feature = "fuzzing"))]
pub mod offline;
pub mod records;
pub mod resolver;
pub mod server;
pub mod sockets;
pub mod stats;
pub mod threads;
pub mod wire;

use std::{future::Future, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use weft_runtime::{GrpcServer, Transport, grpc::ShutdownTiming};

pub use config::{Args, Config};

use crate::{
    error::ListenError, events::Ingester, forward::Forwarder, listen::Listener, records::Snapshot,
    resolver::Resolver, server::SandboxListeners, threads::IoThreads,
};

/// The DNS side of a running dns-svc: ingestion, the operator listener and the sandbox
/// listeners.
pub struct Running {
    pub resolver: Arc<Resolver>,
    pub listeners: Arc<SandboxListeners>,
    /// Where the operator listener is (its port resolved when 0 was asked).
    pub operator_addr: SocketAddr,
    host: String,
    operator: Listener,
    /// Stopped last: the listeners' loops run on them.
    threads: Arc<IoThreads>,
    ingest: JoinHandle<()>,
    manager: JoinHandle<()>,
    resolv_conf: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("operator_addr", &self.operator_addr)
            .finish_non_exhaustive()
    }
}

/// Starts following the gateway and serving DNS.
pub fn start(config: &Config) -> Result<Running, StartError> {
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let resolver = Arc::new(
        Resolver::new(
            snapshot.clone(),
            Forwarder {
                timeout: config.upstream_timeout,
                sockets: config.sockets(),
            },
            config.upstreams.clone(),
            &config.zone,
        )
        .with_udp_max(config.udp_max_payload),
    );
    let threads = Arc::new(IoThreads::start(config.dns_threads).map_err(StartError::Threads)?);
    let (operator, operator_addr) = server::operator_listener(
        resolver.clone(),
        config.operator_listen,
        config.tcp_limits(),
        &threads,
    )?;
    tracing::info!(addr = %operator_addr, zone = %config.zone, "operator DNS listener open");
    let tls = match &config.transport {
        weft_runtime::transport::Transport::Tls(files) => Some(files),
        weft_runtime::transport::Transport::Plaintext => None,
    };
    let channel = weft_runtime::transport::gateway_channel(
        &config.gateway,
        tls,
        std::time::Duration::from_secs(5),
        None,
    )
    .map_err(|e| StartError::Gateway(config.gateway.clone(), e))?;
    let (published, rx) = watch::channel(0);
    let ingest = tokio::spawn(
        Ingester::new(
            channel,
            config.gateway_bearer.clone(),
            config.host.clone(),
            snapshot,
            published,
        )
        .run(),
    );
    let listeners = Arc::new(SandboxListeners::new(
        resolver.clone(),
        config.host.clone(),
        config.sandbox_listen,
        config.tcp_limits(),
        threads.clone(),
        config.sockets(),
    ));
    let manager = tokio::spawn(listeners.clone().run(rx));
    let resolv_conf = config.resolv_conf.clone().map(|path| {
        tokio::spawn(follow_resolv_conf(
            resolver.clone(),
            path,
            [config.operator_listen, config.sandbox_listen],
        ))
    });
    Ok(Running {
        resolver,
        listeners,
        operator_addr,
        host: config.host.clone(),
        operator,
        threads,
        ingest,
        manager,
        resolv_conf,
    })
}

/// Why dns-svc could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("operator listener: {0}")]
    Listen(#[from] ListenError),
    #[error("invalid gateway address {0:?}: {1}")]
    Gateway(String, String),
    #[error("cannot start the DNS threads: {0}")]
    Threads(std::io::Error),
}

impl Running {
    /// The admin API over this instance.
    pub fn admin(&self) -> grpc::Admin {
        grpc::Admin {
            resolver: self.resolver.clone(),
            listeners: self.listeners.clone(),
            operator_addr: self.operator_addr,
            host: self.host.clone(),
        }
    }

    /// Stops ingestion, closes every sandbox listener and the operator listener.
    pub async fn stop(mut self) {
        // Dropping the ingester drops the snapshot publisher, which ends the listener manager,
        // which closes the sandbox listeners.
        if let Some(t) = &self.resolv_conf {
            t.abort();
        }
        self.ingest.abort();
        let _ = (&mut self.ingest).await;
        let _ = (&mut self.manager).await;
        self.operator.shutdown().await;
        drop(self.threads);
    }
}

/// Serves the admin API of `running` on `listener` (plaintext, no access table: in-process
/// tests) until `shutdown`, then stops everything.
pub async fn serve(
    running: Running,
    listener: TcpListener,
    timing: ShutdownTiming,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_on(running, &Transport::Plaintext, listener, timing, shutdown).await
}

/// [`serve`] with the transport (and so the access table) of the configuration.
pub async fn serve_on(
    running: Running,
    transport: &Transport,
    listener: TcpListener,
    timing: ShutdownTiming,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = GrpcServer::new().add_service(grpc::server(running.admin()));
    let server = match transport {
        Transport::Plaintext => Ok(server),
        tls => server.internal(tls, grpc::RULES),
    };
    let res = match server {
        Ok(server) => server.serve(listener, timing, shutdown).await,
        Err(e) => Err(e),
    };
    running.stop().await;
    Ok(res?)
}

/// Runs the whole service until SIGTERM or SIGINT: what `main` does.
pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.transport == Transport::Plaintext {
        // Said once, here: `serve` is plaintext for in-process tests without a word.
        tracing::warn!(
            "serving plaintext with no access table (--insecure-plaintext): anyone who reaches the port may call every method; for tests and development only"
        );
    }
    let running = start(&config)?;
    let _metrics = metrics::register(&running.resolver);
    let (listener, addr) = GrpcServer::bind(config.listen).await?;
    tracing::info!(%addr, service = "dns-svc", "listening");
    serve_on(
        running,
        &config.transport,
        listener,
        ShutdownTiming::from(&config.common),
        weft_runtime::shutdown::signal_received(),
    )
    .await
}

/// How often the host's resolv.conf is checked for changes.
const RESOLV_CONF_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the host upstreams in line with the host's resolv.conf. Polling a small file once a
/// second is cheap and, unlike inotify, survives the file being replaced by a rename (which is
/// how most tools rewrite it).
async fn follow_resolv_conf(
    resolver: Arc<Resolver>,
    path: std::path::PathBuf,
    own: [SocketAddr; 2],
) {
    let mut last = std::fs::read_to_string(&path).ok();
    let mut tick = tokio::time::interval(RESOLV_CONF_POLL);
    loop {
        tick.tick().await;
        let text = tokio::fs::read_to_string(&path).await.ok();
        if text == last {
            continue;
        }
        let ups = config::host_upstreams(text.as_deref().unwrap_or_default(), &own);
        tracing::info!(path = %path.display(), upstreams = ?ups, "host upstreams changed");
        resolver.set_host_upstreams(ups);
        last = text;
    }
}
