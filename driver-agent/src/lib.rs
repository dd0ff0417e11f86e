//! driver-agent: one per host; programs the kernel (rtnetlink) to match what the gateway
//! decided, served as `weft.agent.v1.AgentService`.
//!
//! The agent manages one "host" namespace (`--netns`, default its own). Namespaces are only
//! ever entered from dedicated OS threads ([`netns`]); kernel objects it creates carry a Weft
//! name prefix and a link alias with the owner's id ([`names`]).
//!
//! Programmed so far: capabilities ([`capabilities`]), sandboxes ([`sandbox`]), the bridge
//! driver ([`driver::bridge`]) and its firewall in nftables ([`firewall`]: masquerade,
//! isolation, internal networks, published ports). Drivers the kernel lacks are refused with
//! FAILED_PRECONDITION; overlay, macvlan, ipvlan and ApplyState are not programmed yet and say
//! so (UNIMPLEMENTED).

pub mod agent;
pub mod capabilities;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod grpc;
pub mod kernel;
pub mod names;
pub mod netns;
pub mod report;
pub mod sandbox;
pub mod spec;
pub mod sysctl;

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

    /// Where the agent keeps sandbox files (resolv.conf, hosts) for runtimes to bind-mount.
    #[arg(
        long,
        env = "WEFT_AGENT_DATA_DIR",
        default_value = "/var/lib/weft/agent"
    )]
    pub data_dir: PathBuf,

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

/// Runs the agent until SIGTERM or SIGINT: what `main` does.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let agent = Arc::new(Agent::start(args.netns.clone(), args.data_dir.clone()).await?);
    weft_runtime::grpc::serve_until_signal(
        "driver-agent",
        args.listen,
        &args.common,
        GrpcServer::new().add_service(grpc::server(agent)),
    )
    .await?;
    Ok(())
}
