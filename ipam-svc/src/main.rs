use clap::Parser as _;
use ipam_svc::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match Config::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipam-svc: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let _telemetry = match weft_runtime::telemetry::init("ipam-svc", &config.common) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ipam-svc: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    match ipam_svc::run(config, weft_runtime::shutdown::signal_received()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ipam-svc failed");
            eprintln!("ipam-svc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
