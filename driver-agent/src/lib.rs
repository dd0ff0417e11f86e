//! driver-agent: one per host; programs the kernel (rtnetlink) to match what the gateway
//! decided, served as `weft.agent.v1.AgentService`.
//!
//! The agent manages one "host" namespace (`--netns`, default its own). Namespaces are only
//! ever entered from dedicated OS threads ([`netns`]); kernel objects it creates carry a Weft
//! name prefix and a link alias with the owner's id ([`names`]).
//!
//! It also brokers sockets for dns-svc ([`broker`]): made inside a sandbox's namespace and
//! handed over, so that dns-svc runs with no privilege.
//!
//! Programmed so far: capabilities ([`capabilities`]), sandboxes ([`sandbox`]), the bridge
//! driver ([`driver::bridge`]) and its firewall in nftables ([`firewall`]: masquerade,
//! isolation, internal networks, published ports as map elements), the overlay driver
//! ([`driver::overlay`]: the bridge driver's bridge and veths plus VXLAN with static FDB and
//! neighbour entries, the same firewall), ApplyState and reconciliation to the gateway's
//! desired state ([`reconcile`]), and dns-svc's sockets ([`broker`]). Drivers the kernel lacks
//! are refused with FAILED_PRECONDITION; macvlan and ipvlan are not programmed yet and say so
//! (UNIMPLEMENTED).
//!
//! Modules:
//! - [`agent`]: the operations of `weft.agent.v1` in domain terms, over the managed namespace
//!   (its sandbox part in `agent/sandboxes.rs`); [`grpc`] is their gRPC edge, [`spec`] the
//!   domain types requests convert to, [`error`] the one error type and its gRPC mapping.
//! - [`driver`]: the `NetworkDriver` trait, one file per driver (bridge, host, none, overlay,
//!   macvlan, ipvlan) and the registry that names them all; the agent calls only the trait.
//! - [`capabilities`]: what this kernel can do, probed in a scratch namespace.
//! - [`firewall`]: the nftables side; [`sysctl`]: the switches networks need.
//! - [`kernel`]: rtnetlink requests; [`survey`]: the host's links in one lean dump, for
//!   reconciliation; [`names`]: Weft's link names and aliases.
//! - [`netns`], [`netns_policy`]: entering namespaces, and which caller-given ones may be used.
//! - [`sandbox`]: sandboxes' namespaces and files; [`report`]: what a request changed.
//! - [`reconcile`], [`recent`], [`applied`]: ApplyState, what the API touched lately that it
//!   leaves alone, and what each object was last brought to (so that a pass works in
//!   proportion to what changed); [`registry`]: registration with the gateway and heartbeats.
//! - [`broker`]: sockets made inside sandboxes for dns-svc.

pub mod agent;
pub mod applied;
pub mod broker;
pub mod capabilities;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod grpc;
pub mod kernel;
mod metrics;
pub mod names;
pub mod netns;
pub mod netns_policy;
pub mod recent;
pub mod reconcile;
mod reconcile_metrics;
pub mod registry;
pub mod report;
pub mod sandbox;
pub mod sockets;
pub mod spec;
pub mod survey;
pub mod sysctl;
pub mod unlink;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::net::TcpListener;
use weft_runtime::{CommonArgs, GrpcServer, grpc::ShutdownTiming};

pub use agent::Agent;

/// The agent's own namespace: the default managed namespace.
pub const SELF_NETNS: &str = "/proc/self/ns/net";

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "driver-agent", version)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, env = "WEFT_AGENT_LISTEN", default_value = "127.0.0.1:7702")]
    pub listen: SocketAddr,

    /// The network namespace the agent manages as "the host" (a namespace file such as
    /// /run/netns/NAME); default: the agent's own.
    #[arg(long, env = "WEFT_AGENT_NETNS", default_value = SELF_NETNS)]
    pub netns: PathBuf,

    /// Where caller-given namespace files (`netns_path`) may come from, comma-separated:
    /// directories whose entries are namespace files, and `/proc/<pid>/ns/net` (any process
    /// outside the host's namespace). Weft's own managed namespaces (`/run/netns/weft-<id>`)
    /// are always allowed; the host's, the managed one and pid 1's never are.
    #[arg(
        long,
        env = "WEFT_AGENT_NETNS_ALLOW",
        value_delimiter = ',',
        default_value = netns_policy::DEFAULT_ALLOW
    )]
    pub netns_allow: Vec<netns_policy::Place>,

    /// Where the agent keeps sandbox files (resolv.conf, hosts) for runtimes to bind-mount.
    #[arg(
        long,
        env = "WEFT_AGENT_DATA_DIR",
        default_value = "/var/lib/weft/agent"
    )]
    pub data_dir: PathBuf,

    /// The gateway to register this host with (its AgentRegistryService); the agent then
    /// heartbeats and reconciles against the host's desired state. Unset: standalone.
    #[arg(long, env = "WEFT_AGENT_GATEWAY")]
    pub gateway: Option<String>,

    /// The file holding the token this agent presents to the gateway (role agent, for this
    /// host): a 0600 regular file, as `weft up` writes it.
    #[arg(long, env = "WEFT_AGENT_GATEWAY_TOKEN_FILE")]
    pub gateway_token_file: Option<PathBuf>,

    /// This host's name at the gateway; default: the machine's hostname.
    #[arg(long, env = "WEFT_AGENT_HOST_NAME")]
    pub host_name: Option<String>,

    /// Where the gateway reaches this agent (HOST:PORT); default: the listen address.
    #[arg(long, env = "WEFT_AGENT_ADVERTISE")]
    pub advertise: Option<String>,

    /// This host's dns-svc admin address, reported to the gateway.
    #[arg(long, env = "WEFT_AGENT_DNS_ADDRESS", default_value = "")]
    pub dns_address: String,

    /// Reconcile against the desired state at least this often (also at start and whenever
    /// the gateway's revision moves).
    #[arg(long, env = "WEFT_AGENT_RECONCILE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: std::time::Duration,

    /// The socket broker's Unix socket: where dns-svc gets its sockets inside sandbox
    /// namespaces (see the `broker` module). Mode 0660, group `--broker-gid`.
    #[arg(long, env = "WEFT_AGENT_BROKER_SOCKET", default_value = broker::DEFAULT_PATH)]
    pub broker_socket: PathBuf,

    /// The only uid the broker serves (dns-svc's; SO_PEERCRED).
    #[arg(long, env = "WEFT_AGENT_BROKER_UID", default_value_t = 0)]
    pub broker_uid: u32,

    /// The group the broker's socket belongs to (dns-svc's); default: the agent's own.
    #[arg(long, env = "WEFT_AGENT_BROKER_GID")]
    pub broker_gid: Option<u32>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Serves `agent` on `listener` until `shutdown`.
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    timing: ShutdownTiming,
    shutdown: impl Future<Output = ()>,
) -> Result<(), weft_runtime::grpc::ServeError> {
    GrpcServer::new()
        .add_service(grpc::server(agent))
        .serve(listener, timing, shutdown)
        .await
}

/// Runs the agent until SIGTERM or SIGINT: what `main` does. Without TLS files or
/// `--insecure-plaintext` it refuses to start before touching anything.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let transport = args.common.internal_transport()?;
    let agent = Arc::new(
        Agent::start(args.netns.clone(), args.data_dir.clone())
            .await?
            .with_netns_policy(netns_policy::NetnsPolicy::new(args.netns_allow.clone())),
    );
    broker::check_path(&args.broker_socket).map_err(anyhow::Error::msg)?;
    let _broker = broker::start(
        agent.clone(),
        broker::BrokerConfig {
            path: args.broker_socket.clone(),
            uid: args.broker_uid,
            gid: args.broker_gid,
        },
    )?;
    if let Some(gateway) = &args.gateway {
        let bearer = match &args.gateway_token_file {
            Some(path) => weft_runtime::access::Bearer::from_file(path)?,
            None => weft_runtime::access::Bearer::none(),
        };
        let host = args
            .host_name
            .clone()
            .unwrap_or_else(|| agent.capabilities().hostname.clone());
        agent.set_host_name(&host);
        let reg = registry::Registration {
            gateway: gateway.clone(),
            host,
            agent_address: args
                .advertise
                .clone()
                .unwrap_or_else(|| args.listen.to_string()),
            dns_address: args.dns_address.clone(),
            reconcile_interval: args.reconcile_interval,
            bearer,
            tls: match &transport {
                weft_runtime::transport::Transport::Tls(files) => Some(files.clone()),
                weft_runtime::transport::Transport::Plaintext => None,
            },
        };
        tokio::spawn(registry::run(agent.clone(), reg));
    }
    weft_runtime::grpc::serve_until_signal(
        "driver-agent",
        args.listen,
        &args.common,
        GrpcServer::new()
            .add_service(grpc::server(agent))
            .internal(&transport, grpc::RULES)?,
    )
    .await?;
    Ok(())
}
