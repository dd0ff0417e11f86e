use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = gateway::Args::parse();
    let common = args.common.clone();
    weft_runtime::run_main("gateway", &common, gateway::run(args)).await
}
