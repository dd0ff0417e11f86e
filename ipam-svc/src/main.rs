use clap::Parser as _;
use ipam_svc::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let common = args.common.clone();
    match Config::try_from(args) {
        Ok(config) => {
            weft_runtime::run_main("ipam-svc", &common, async move {
                ipam_svc::run(config).await.map_err(|e| format!("{e:#}"))
            })
            .await
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("ipam-svc: {e}");
            }
            std::process::ExitCode::from(64)
        }
    }
}
