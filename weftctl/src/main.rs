//! weftctl's entry point: parse, run, print one line per error, exit with a documented code.

use std::{io::ErrorKind, process::ExitCode};

use clap::Parser as _;
use weftctl::{
    cli::{Cli, Command, SandboxCmd},
    error::{CliError, exit},
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            weftctl::report(&CliError::Usage(weftctl::usage_line(&e)));
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    if let Command::Sandbox(SandboxCmd::Exec { sandbox, command }) = &cli.command {
        // Must run before any multi-threaded runtime exists; returns only on failure.
        let e = weftctl::exec::run(&cli.gateway, cli.token_file.as_deref(), sandbox, command);
        weftctl::report(&e);
        return code(&e);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            weftctl::report(&CliError::Api(format!(
                "cannot start the async runtime: {e}"
            )));
            return ExitCode::from(exit::API as u8);
        }
    };
    let mut out = std::io::stdout().lock();
    match rt.block_on(weftctl::run(cli, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `weftctl network ls | head -1`: the reader left; not an error.
        Err(CliError::Io(e)) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            weftctl::report(&e);
            code(&e)
        }
    }
}

fn code(e: &CliError) -> ExitCode {
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}
