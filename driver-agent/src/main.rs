use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = driver_agent::Args::parse();
    let common = args.common.clone();
    weft_runtime::run_main("driver-agent", &common, async move {
        driver_agent::run(args).await.map_err(|e| format!("{e:#}"))
    })
    .await
}
