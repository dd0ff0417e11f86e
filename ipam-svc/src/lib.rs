//! ipam-svc: address spaces, pools and allocations, served as `weft.ipam.v1.IpamService`.

pub mod check;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod store;

use std::future::Future;

use tokio::net::TcpListener;
use weft_runtime::{GrpcServer, grpc::ShutdownTiming};
use weft_store::Db;

pub use config::{Args, Config};
pub use engine::Ipam;

/// Opens and migrates the store, then starts the engine.
pub async fn open(config: &Config) -> anyhow::Result<Ipam> {
    let db = Db::open(&config.database_url, &config.store).await?;
    db.migrate(&store::SQLITE_MIGRATIONS, &store::POSTGRES_MIGRATIONS)
        .await?;
    tracing::info!(backend = ?db.backend(), url = %weft_store::redact_url(&config.database_url), "store ready");
    Ok(Ipam::start(db, config.spaces.clone()))
}

/// Serves `ipam` on `listener` until `shutdown`.
pub async fn serve(
    ipam: Ipam,
    listener: TcpListener,
    timing: ShutdownTiming,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    GrpcServer::new()
        .add_service(grpc::server(ipam))
        .serve(listener, timing, shutdown)
        .await?;
    Ok(())
}

/// Runs the whole service from a configuration until SIGTERM or SIGINT: what `main` does.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let ipam = open(&config).await?;
    // (Dropped before the store closes: the collector holds a handle on the engine.)
    let metrics = metrics::register(&ipam);
    let db = ipam.db().clone();
    weft_runtime::grpc::serve_until_signal(
        "ipam-svc",
        config.listen,
        &config.common,
        GrpcServer::new()
            .add_service(grpc::server(ipam))
            .internal(&config.transport, grpc::RULES)?,
    )
    .await?;
    drop(metrics);
    db.close().await;
    Ok(())
}
