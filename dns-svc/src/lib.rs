//! dns-svc: container name resolution, per network, per host (hickory-server), with records built from the gateway's event stream.
//!
//! For now this crate is the service's shell: its flags, `grpc.health.v1`, server reflection and
//! graceful shutdown on the shared runtime. Its own issue fills it with the service itself.

use std::net::SocketAddr;

use weft_runtime::{CommonArgs, GrpcServer};

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dns-svc", version)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, env = "WEFT_DNS_LISTEN", default_value = "127.0.0.1:7703")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<(), weft_runtime::grpc::ServeError> {
    weft_runtime::grpc::serve_until_signal("dns-svc", args.listen, &args.common, GrpcServer::new())
        .await
}
