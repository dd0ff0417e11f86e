use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    weft::run(weft::Cli::parse()).await
}
