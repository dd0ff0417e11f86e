use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = driver_agent::Args::parse();
    let common = args.common.clone();
    weft_runtime::run_main("driver-agent", &common, driver_agent::run(args)).await
}
