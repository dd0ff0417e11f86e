//! gateway: Weft's one public network-management API (`weft.gateway.v1`), over durable state
//! in SQLite or Postgres, orchestrating ipam-svc, the driver-agent of each host, and (through
//! its event stream) dns-svc.
//!
//! Served: `NetworkService`, `SandboxService`, `EventService`, `HostService`, and the internal
//! `AgentRegistryService` (agents register, heartbeat and fetch their host's desired state).

pub mod access;
mod agents;
pub mod caller;
mod changes;
mod check_api;
pub mod clock;
mod desired;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
mod files;
mod from_pb;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod grpc;
mod host_api;
pub mod hostauth;
pub mod hosts;
mod identity_api;
mod ipam;
pub mod join;
pub mod leader;
mod lease;
pub mod lists;
pub mod metrics;
mod overlay;
pub mod peers;
mod recent;
pub mod recovery;
pub mod sagas;
mod scope;
mod steps;
pub mod store;
mod to_pb;

use std::{net::SocketAddr, time::Duration};

use weft_proto::gateway::v1::{
    agent_registry_service_server::AgentRegistryServiceServer,
    audit_service_server::AuditServiceServer, check_service_server::CheckServiceServer,
    event_service_server::EventServiceServer, host_service_server::HostServiceServer,
    join_service_server::JoinServiceServer, network_service_server::NetworkServiceServer,
    sandbox_service_server::SandboxServiceServer, token_service_server::TokenServiceServer,
};
use weft_runtime::{CommonArgs, GrpcServer, grpc::limit_requests};
use weft_store::{Db, StoreOptions};

pub use engine::{Gateway, GatewayOptions};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "Weft's public network-management API"
)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, env = "WEFT_GATEWAY_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// Database: `sqlite://PATH` (one replica) or `postgres://…` (any number of replicas).
    #[arg(
        long,
        env = "WEFT_GATEWAY_DATABASE_URL",
        default_value = "sqlite://weft-data/gateway.db"
    )]
    pub database_url: String,

    /// ipam-svc's address.
    #[arg(
        long,
        env = "WEFT_GATEWAY_IPAM",
        default_value = "http://127.0.0.1:7701"
    )]
    pub ipam: String,

    /// This host's driver-agent.
    #[arg(
        long,
        env = "WEFT_GATEWAY_AGENT",
        default_value = "http://127.0.0.1:7702"
    )]
    pub agent: String,

    /// A second listener serving the same API with TLS (the gateway's --tls-cert), where
    /// callers may present a client certificate from the cluster's CA instead of a token:
    /// agents and dns-svc of other hosts. Needs --tls-cert, --tls-key and --tls-ca.
    #[arg(long, env = "WEFT_GATEWAY_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,

    /// The cluster CA's private key (PEM; the CA certificate is --tls-ca): with it the gateway
    /// signs the certificates of hosts that join with a join token (`weftctl host join-token`).
    /// Keep it readable by the gateway alone.
    #[arg(long, env = "WEFT_GATEWAY_TLS_CA_KEY", requires = "tls_listen")]
    pub tls_ca_key: Option<std::path::PathBuf>,

    /// The name of this host (sandboxes are placed on it).
    #[arg(long, env = "WEFT_GATEWAY_HOST_NAME", default_value = "local")]
    pub host_name: String,

    /// A saga older than this whose gateway is gone is finished by the sweep.
    #[arg(long, env = "WEFT_GATEWAY_OPERATION_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub operation_timeout: Duration,

    /// How often the sweep runs (it also runs at start).
    #[arg(long, env = "WEFT_GATEWAY_SWEEP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// How long the lease of the background work (sweep, host-down detection, expiry) lasts
    /// without a renewal: when its holder dies, another replica takes over after at most this
    /// long. The holder renews every third of it. 1s to 10m.
    #[arg(long, env = "WEFT_GATEWAY_LEASE_TTL", default_value = "15s", value_parser = lease_ttl)]
    pub lease_ttl: Duration,

    /// This replica's name in the lease table (default: the host's name and the process id).
    /// 1 to 128 characters of [A-Za-z0-9._-].
    #[arg(long, env = "WEFT_GATEWAY_REPLICA_ID", value_parser = replica_id)]
    pub replica_id: Option<String>,

    /// Test hook: kill the process (SIGKILL) at this saga step, e.g. `connect:allocated`.
    #[arg(long, env = "WEFT_GATEWAY_FAULT", hide = true)]
    pub fault: Option<String>,

    /// How often driver-agents send heartbeats; a host that misses three is marked down.
    #[arg(long, env = "WEFT_GATEWAY_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// How long a host may stay down (no heartbeat) before its endpoints are marked down: until
    /// then its containers' names keep resolving (stale) and its addresses stay reserved; after
    /// it the names stop resolving, the addresses stay reserved (until `weftctl host rm`), and
    /// everything comes back when the host does.
    #[arg(long, env = "WEFT_GATEWAY_HOST_DOWN_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub host_down_grace: Duration,

    /// The VXLAN ids (VNIs) overlay networks get, FIRST-LAST within 1-16777215 (Docker's
    /// default pool starts at 4096); a network may also ask for its own
    /// (com.docker.network.driver.overlay.vxlanid_list). Ids must be unique across the cluster.
    #[arg(long, env = "WEFT_GATEWAY_VNI_RANGE", default_value = "4096-16777215", value_parser = vni_range)]
    pub vni_range: (u32, u32),

    /// How many events the log keeps for watchers that resume.
    #[arg(long, env = "WEFT_GATEWAY_EVENT_HISTORY", default_value_t = 10_000)]
    pub event_history: u64,

    /// How long a mutation's request_id is remembered: a retry within this time gets the first
    /// answer; after it, the id is free again.
    #[arg(long, env = "WEFT_GATEWAY_REQUEST_ID_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub request_id_ttl: Duration,

    /// How many request ids are remembered at most; past it, the oldest are forgotten first.
    #[arg(long, env = "WEFT_GATEWAY_REQUEST_ID_MAX", default_value_t = 100_000)]
    pub request_id_max: u64,

    /// How many Watch streams one client (peer address) may hold at once; one more is
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "WEFT_GATEWAY_MAX_WATCHES_PER_CLIENT",
        default_value_t = 32
    )]
    pub max_watches_per_client: usize,

    /// The SHA-256 (hex) of the admin token to keep (`weft up` passes the one it wrote to
    /// `<data-dir>/admin.token`): the gateway creates, or replaces, the token `admin` with it.
    #[arg(long, env = "WEFT_GATEWAY_ADMIN_TOKEN_SHA256", value_parser = token_hash)]
    pub admin_token_sha256: Option<String>,

    /// The SHA-256 of the token this host's driver-agent presents (role agent, --host-name).
    #[arg(long, env = "WEFT_GATEWAY_AGENT_TOKEN_SHA256", value_parser = token_hash)]
    pub agent_token_sha256: Option<String>,

    /// The SHA-256 of the token this host's dns-svc presents (role dns, --host-name).
    #[arg(long, env = "WEFT_GATEWAY_DNS_TOKEN_SHA256", value_parser = token_hash)]
    pub dns_token_sha256: Option<String>,

    /// Calls per second one identity (token or certificate) may make, on average; past it,
    /// RESOURCE_EXHAUSTED with a time to retry. The agent and dns roles are not limited.
    #[arg(long, env = "WEFT_GATEWAY_RATE_LIMIT", default_value_t = 500.0)]
    pub rate_limit: f64,

    /// Calls one identity may make at once after a quiet time.
    #[arg(long, env = "WEFT_GATEWAY_RATE_BURST", default_value_t = 1000)]
    pub rate_burst: u32,

    /// Calls one identity may have in flight at once.
    #[arg(
        long,
        env = "WEFT_GATEWAY_MAX_IN_FLIGHT_PER_IDENTITY",
        default_value_t = 64
    )]
    pub max_in_flight_per_identity: u32,

    #[command(flatten)]
    pub common: CommonArgs,
}

fn vni_range(s: &str) -> Result<(u32, u32), String> {
    let parsed = s
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((a, b)) if (1..=b).contains(&a) && b <= 16_777_215 => Ok((a, b)),
        _ => Err("expected FIRST-LAST, 1 <= FIRST <= LAST <= 16777215".into()),
    }
}

fn lease_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&d) {
        Ok(d)
    } else {
        Err("expected a duration from 1s to 10m".into())
    }
}

fn replica_id(s: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected 1 to 128 characters of [A-Za-z0-9._-]".into())
    }
}

/// This replica's default name in the lease table: the host's name (as far as it is made of
/// [A-Za-z0-9._-]) and the process id.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    format!("{host}-{}", std::process::id())
}

fn token_hash(s: &str) -> Result<String, String> {
    if weft_runtime::access::is_token_hash(s) {
        Ok(s.to_owned())
    } else {
        Err("expected a SHA-256 as 64 lower-case hex digits".into())
    }
}

impl Args {
    /// The transport flags: the public listener plaintext only on loopback (or with
    /// --insecure-plaintext), the TLS files all or none, --tls-listen only with them.
    pub fn check_transport(&self) -> Result<Option<weft_identity::TlsFiles>, StartError> {
        self.common.check_plaintext_listen(self.listen)?;
        let tls = self.common.tls_files()?;
        if self.tls_listen.is_some() && tls.is_none() {
            return Err(StartError::TlsListenWithoutCert);
        }
        Ok(tls)
    }

    /// The tokens to create at start.
    pub fn bootstrap_tokens(&self) -> Vec<access::Bootstrap> {
        use weft_runtime::access::Role;
        let host = &self.host_name;
        [
            (
                &self.admin_token_sha256,
                "admin".to_owned(),
                Role::Admin,
                String::new(),
            ),
            (
                &self.agent_token_sha256,
                format!("agent-{host}"),
                Role::Agent,
                host.clone(),
            ),
            (
                &self.dns_token_sha256,
                format!("dns-{host}"),
                Role::Dns,
                host.clone(),
            ),
        ]
        .into_iter()
        .filter_map(|(hash, name, role, host)| {
            hash.clone().map(|hash| access::Bootstrap {
                name,
                role,
                host,
                hash,
            })
        })
        .collect()
    }
}

/// A problem starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "invalid {flag} {value:?}: expected http://HOST:PORT (with TLS: HOST:PORT or https://HOST:PORT): {reason}"
    )]
    Url {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Config(#[from] weft_runtime::config::ConfigError),
    #[error(
        "--tls-listen needs the gateway's certificate: give --tls-cert, --tls-key and --tls-ca"
    )]
    TlsListenWithoutCert,
    #[error("tls: {0}")]
    Tls(#[from] weft_identity::Error),
    #[error("--event-history must be at least 1")]
    History,
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error(transparent)]
    Store(#[from] weft_store::OpenError),
    #[error(transparent)]
    Serve(#[from] weft_runtime::grpc::ServeError),
    #[error("cannot store the bootstrap tokens: {0}")]
    Tokens(String),
}

/// Refuses numeric flags out of range.
fn check_numbers(args: &Args) -> Result<(), StartError> {
    if args.event_history == 0 {
        return Err(StartError::History);
    }
    if args.request_id_max == 0 {
        return Err(StartError::AtLeastOne("--request-id-max"));
    }
    if args.max_watches_per_client == 0 {
        return Err(StartError::AtLeastOne("--max-watches-per-client"));
    }
    if args.rate_burst == 0 {
        return Err(StartError::AtLeastOne("--rate-burst"));
    }
    if args.max_in_flight_per_identity == 0 {
        return Err(StartError::AtLeastOne("--max-in-flight-per-identity"));
    }
    if !(args.rate_limit.is_finite() && args.rate_limit > 0.0) {
        return Err(StartError::AtLeastOne(
            "--rate-limit (calls per second, above 0)",
        ));
    }
    Ok(())
}

/// Opens the store, connects (lazily) to ipam-svc and returns the gateway.
pub async fn open(args: &Args) -> Result<Gateway, StartError> {
    check_numbers(args)?;
    // The public listener may be plaintext on loopback (tokens are required all the same).
    let tls = args.check_transport()?;
    let peers = tls.as_ref().map(peers::PeerTls::new).transpose()?;
    let signer = match (&args.tls_ca_key, &tls) {
        (Some(key), Some(files)) => Some(std::sync::Arc::new(weft_identity::pki::Ca::load(
            &files.ca, key,
        )?)),
        _ => None,
    };
    let channel = |flag: &'static str, value: &str, tls: Option<&weft_identity::ClientTls>| {
        if tls.is_none() && !value.contains("://") {
            return Err(StartError::Url {
                flag,
                value: value.to_owned(),
                reason: "no scheme".into(),
            });
        }
        peers::channel(tls, value, Duration::from_secs(2), Duration::from_secs(10)).map_err(|e| {
            StartError::Url {
                flag,
                value: value.to_owned(),
                reason: e.0,
            }
        })
    };
    let ipam = channel("--ipam", &args.ipam, peers.as_ref().map(|p| &p.ipam))?;
    let agent = channel("--agent", &args.agent, peers.as_ref().map(|p| &p.agent))?;
    // A replica paused inside a transaction (its lease's row locked by the fence) loses its
    // session after the lease's time to live, so that the takeover is not held up for ever.
    let store = StoreOptions {
        postgres_idle_in_transaction: args.lease_ttl,
        ..StoreOptions::default()
    };
    let db = Db::open(&args.database_url, &store).await?;
    db.migrate(&store::SQLITE_MIGRATIONS, &store::POSTGRES_MIGRATIONS)
        .await?;
    let gw = Gateway::new(
        db,
        ipam,
        agent,
        GatewayOptions {
            host: args.host_name.clone(),
            agent_url: args.agent.clone(),
            event_history: args.event_history,
            operation_timeout: args.operation_timeout,
            fault: args.fault.clone(),
            heartbeat_interval: args.heartbeat_interval,
            host_down_grace: args.host_down_grace,
            vni_range: args.vni_range,
            request_id_ttl: args.request_id_ttl,
            request_id_max: args.request_id_max,
            max_watches_per_client: args.max_watches_per_client,
            limits: weft_runtime::limits::Limits {
                rate: args.rate_limit,
                burst: args.rate_burst,
                concurrent: args.max_in_flight_per_identity,
            },
            peers,
            signer,
        },
    );
    gw.tokens
        .bootstrap(&args.bootstrap_tokens())
        .await
        .map_err(|e| StartError::Tokens(e.to_string()))?;
    Ok(gw)
}

/// The gateway's gRPC services.
pub fn services(gw: Gateway) -> GrpcServer {
    let auth = access::GatewayAuth {
        tokens: gw.tokens.clone(),
        join_tokens: gw.join_tokens.clone(),
        removals: gw.removals.clone(),
        audit: gw.audit.clone(),
    };
    let limiter = gw.limiter.clone();
    let db = gw.db.clone();
    // Ready while the store answers (a replica cut off from Postgres leaves the balancer).
    let readiness = weft_runtime::grpc::Readiness {
        probe: std::sync::Arc::new(move || {
            let db = db.clone();
            Box::pin(async move {
                let probe = sqlx::query("SELECT 1").execute(db.read());
                matches!(
                    tokio::time::timeout(Duration::from_secs(3), probe).await,
                    Ok(Ok(_))
                )
            })
        }),
        every: Duration::from_secs(2),
    };
    // A served gateway tells overlay networks' hosts of their changes (once per process).
    gw.start_overlay_pushes();
    let svc = grpc::GatewayGrpc::new(gw);
    // tonic's own limit on requests, per service: the largest the access table lets through.
    let rules = access::RULES;
    GrpcServer::new()
        .readiness(readiness)
        .access(access::access(auth, limiter))
        .add_service(limit_requests(
            TokenServiceServer::new(svc.clone()),
            rules,
            TokenServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            AuditServiceServer::new(svc.clone()),
            rules,
            AuditServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            CheckServiceServer::new(svc.clone()),
            rules,
            CheckServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            NetworkServiceServer::new(svc.clone()),
            rules,
            NetworkServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            SandboxServiceServer::new(svc.clone()),
            rules,
            SandboxServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            HostServiceServer::new(svc.clone()),
            rules,
            HostServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            EventServiceServer::new(svc.clone()),
            rules,
            EventServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            JoinServiceServer::new(svc.clone()),
            rules,
            JoinServiceServer::max_decoding_message_size,
        ))
        .add_service(limit_requests(
            AgentRegistryServiceServer::new(svc),
            rules,
            AgentRegistryServiceServer::max_decoding_message_size,
        ))
}

/// Creates the predefined networks, retrying while ipam-svc is not up yet.
pub async fn ensure_predefined_with_retry(gw: &Gateway) {
    let mut delay = Duration::from_millis(100);
    loop {
        match gw.ensure_predefined().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot create the predefined networks yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<(), StartError> {
    let gw = open(&args).await?;
    let _metrics = metrics::register(&gw);
    let lease = std::sync::Arc::new(leader::Lease::new(
        leader::BACKGROUND,
        args.replica_id.clone().unwrap_or_else(default_replica_id),
        args.lease_ttl,
    ));
    let background = gw.clone();
    let (held, interval) = (lease.clone(), args.sweep_interval);
    let lead = tokio::spawn(async move {
        ensure_predefined_with_retry(&background).await;
        // On taking the lease the holder first finishes what a previous run left half-done.
        leader::lead_forever(background, held, interval).await;
    });
    let served = serve(&args, gw.clone()).await;
    lead.abort();
    leader::release(&gw, &lease).await;
    served
}

/// Serves the API until SIGTERM or SIGINT: plaintext, and TLS too with --tls-listen.
async fn serve(args: &Args, gw: Gateway) -> Result<(), StartError> {
    let (Some(tls_listen), Some(files)) = (args.tls_listen, args.common.tls_files()?) else {
        weft_runtime::grpc::serve_until_signal("gateway", args.listen, &args.common, services(gw))
            .await?;
        return Ok(());
    };
    // Both listeners serve the same API with the same table; the TLS one also takes client
    // certificates. One signal stops both.
    let tls = weft_identity::ServerTls::with_optional_client_auth(files)?;
    let (listener, addr) = GrpcServer::bind(args.listen).await?;
    let (tls_listener, tls_addr) = GrpcServer::bind(tls_listen).await?;
    tracing::info!(%addr, service = "gateway", "listening");
    tracing::info!(addr = %tls_addr, service = "gateway", "listening with tls");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        weft_runtime::shutdown::signal_received().await;
        let _ = stop.send(true);
    });
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let timing = weft_runtime::grpc::ShutdownTiming::from(&args.common);
    tokio::try_join!(
        services(gw.clone()).serve(listener, timing, signal(stopped.clone())),
        services(gw)
            .tls(tls)
            .serve(tls_listener, timing, signal(stopped)),
    )?;
    Ok(())
}
