//! gateway: Weft's one public network-management API (`weft.gateway.v1`), over durable state
//! in SQLite or Postgres, orchestrating ipam-svc, the driver-agent of each host, and (through
//! its event stream) dns-svc.
//!
//! Served: `NetworkService`, `SandboxService`, `EventService`, `HostService`, and the internal
//! `AgentRegistryService` (agents register, heartbeat and fetch their host's desired state).

mod agents;
mod changes;
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
pub mod hosts;
mod ipam;
pub mod lists;
pub mod recovery;
pub mod sagas;
mod steps;
pub mod store;
mod to_pb;

use std::{net::SocketAddr, time::Duration};

use weft_runtime::{CommonArgs, GrpcServer};
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

    /// The name of this host (sandboxes are placed on it).
    #[arg(long, env = "WEFT_GATEWAY_HOST_NAME", default_value = "local")]
    pub host_name: String,

    /// A saga older than this whose gateway is gone is finished by the sweep.
    #[arg(long, env = "WEFT_GATEWAY_OPERATION_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub operation_timeout: Duration,

    /// How often the sweep runs (it also runs at start).
    #[arg(long, env = "WEFT_GATEWAY_SWEEP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Test hook: kill the process (SIGKILL) at this saga step, e.g. `connect:allocated`.
    #[arg(long, env = "WEFT_GATEWAY_FAULT", hide = true)]
    pub fault: Option<String>,

    /// How often driver-agents send heartbeats; a host that misses three is marked down.
    #[arg(long, env = "WEFT_GATEWAY_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

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

    #[command(flatten)]
    pub common: CommonArgs,
}

/// A problem starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid {flag} {value:?}: expected http://HOST:PORT")]
    Url { flag: &'static str, value: String },
    #[error("--event-history must be at least 1")]
    History,
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error(transparent)]
    Store(#[from] weft_store::OpenError),
    #[error(transparent)]
    Serve(#[from] weft_runtime::grpc::ServeError),
}

/// Opens the store, connects (lazily) to ipam-svc and returns the gateway.
pub async fn open(args: &Args) -> Result<Gateway, StartError> {
    if args.event_history == 0 {
        return Err(StartError::History);
    }
    if args.request_id_max == 0 {
        return Err(StartError::AtLeastOne("--request-id-max"));
    }
    if args.max_watches_per_client == 0 {
        return Err(StartError::AtLeastOne("--max-watches-per-client"));
    }
    let channel = |flag: &'static str, value: &str| {
        tonic::transport::Endpoint::from_shared(value.to_owned())
            .map_err(|_| StartError::Url {
                flag,
                value: value.to_owned(),
            })
            .map(|e| {
                e.connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10))
                    .connect_lazy()
            })
    };
    let ipam = channel("--ipam", &args.ipam)?;
    let agent = channel("--agent", &args.agent)?;
    let db = Db::open(&args.database_url, &StoreOptions::default()).await?;
    db.migrate(&store::SQLITE_MIGRATIONS, &store::POSTGRES_MIGRATIONS)
        .await?;
    Ok(Gateway::new(
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
            request_id_ttl: args.request_id_ttl,
            request_id_max: args.request_id_max,
            max_watches_per_client: args.max_watches_per_client,
        },
    ))
}

/// The gateway's gRPC services.
pub fn services(gw: Gateway) -> GrpcServer {
    let svc = grpc::GatewayGrpc::new(gw);
    GrpcServer::new()
        .add_service(
            weft_proto::gateway::v1::network_service_server::NetworkServiceServer::new(svc.clone()),
        )
        .add_service(
            weft_proto::gateway::v1::sandbox_service_server::SandboxServiceServer::new(svc.clone()),
        )
        .add_service(
            weft_proto::gateway::v1::host_service_server::HostServiceServer::new(svc.clone()),
        )
        .add_service(
            weft_proto::gateway::v1::event_service_server::EventServiceServer::new(svc.clone()),
        )
        .add_service(
            weft_proto::gateway::v1::agent_registry_service_server::AgentRegistryServiceServer::new(
                svc,
            ),
        )
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
    let background = gw.clone();
    let interval = args.sweep_interval;
    tokio::spawn(async move {
        ensure_predefined_with_retry(&background).await;
        // Finish what a previous run left half-done, then keep sweeping.
        if let Err(e) = background.sweep().await {
            tracing::warn!(error = %e, "start-up sweep failed");
        }
        background.sweep_forever(interval).await;
    });
    let heartbeats = gw.clone();
    tokio::spawn(async move { heartbeats.watch_heartbeats_forever().await });
    weft_runtime::grpc::serve_until_signal("gateway", args.listen, &args.common, services(gw))
        .await?;
    Ok(())
}
