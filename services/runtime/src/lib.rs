//! What every Weft service needs once: shared command-line flags, tracing, the gRPC server
//! bootstrap (health, reflection, graceful shutdown), who may call what and how much, and the
//! mapping from domain errors to gRPC statuses.

pub mod access;
pub mod broker;
pub mod cert_auth;
pub mod config;
pub mod desired;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod mac;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod principal;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod trace_context;
pub mod transport;
pub mod vlan;

pub use config::{CommonArgs, LogFormat};
pub use error::{FieldViolation, internal, invalid_argument};
pub use grpc::GrpcServer;
pub use transport::Transport;

/// The whole `main` of a service binary: validates the shared flags, installs tracing, starts
/// the metrics endpoint when asked (`--metrics-listen`), runs `body`, and turns the outcome
/// into an exit code (64 for bad configuration, 1 for a failure).
pub async fn run_main<E: std::fmt::Display>(
    service: &'static str,
    common: &CommonArgs,
    body: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    #[allow(clippy::print_stderr)]
    let fail = |code: u8, msg: String| {
        eprintln!("{service}: {msg}");
        std::process::ExitCode::from(code)
    };
    if let Err(e) = common.validate() {
        return fail(64, e.to_string());
    }
    let _telemetry = match telemetry::init(service, common) {
        Ok(t) => t,
        Err(e) => return fail(64, e.to_string()),
    };
    if let Some(addr) = common.metrics_listen
        && let Err(e) = metrics::start(addr).await
    {
        tracing::error!(error = %e, "{service} failed");
        return fail(1, e.to_string());
    }
    match body.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{service} failed");
            fail(1, e.to_string())
        }
    }
}
