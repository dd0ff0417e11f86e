use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = driver_agent::Args::parse();
    // A bad transport is bad usage (64), found before anything starts.
    if let Err(e) = args.common.internal_transport() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("driver-agent: {e}");
        }
        return std::process::ExitCode::from(64);
    }
    let common = args.common.clone();
    weft_runtime::run_main("driver-agent", &common, async move {
        driver_agent::run(args).await.map_err(|e| format!("{e:#}"))
    })
    .await
}
