use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = dns_svc::Args::parse();
    let common = args.common.clone();
    weft_runtime::run_main("dns-svc", &common, dns_svc::run(args)).await
}
