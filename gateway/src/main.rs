use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = gateway::Args::parse();
    // A bad transport is bad usage (64), found before anything starts.
    if let Err(e) = args.check_transport() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("gateway: {e}");
        }
        return std::process::ExitCode::from(64);
    }
    let common = args.common.clone();
    weft_runtime::run_main("gateway", &common, gateway::run(args)).await
}
