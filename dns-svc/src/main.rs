//! The dns-svc binary: parses and validates the flags, then runs the service ([`dns_svc::run`]).

use clap::Parser as _;
use dns_svc::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    dns_svc::config::quiet_per_query_logs(&mut args.common);
    let common = args.common.clone();
    match Config::try_from(args) {
        Ok(config) => {
            weft_runtime::run_main("dns-svc", &common, async move {
                dns_svc::run(config).await.map_err(|e| format!("{e:#}"))
            })
            .await
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("dns-svc: {e}");
            }
            std::process::ExitCode::from(64)
        }
    }
}
