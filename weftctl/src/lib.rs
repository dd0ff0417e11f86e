//! weftctl: Weft's command-line client for the gateway's public API (`weft.gateway.v1`), in the
//! manner of `docker network`. `main` parses the command line and calls [`run`] (or
//! [`exec::run`], which must start before any async runtime); everything here is testable.

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod exec;
pub mod json;
pub mod output;
pub mod pages;
pub mod parse;

use std::io::Write;

use clap::CommandFactory;

use crate::{
    cli::{Cli, CniCmd, Command, HostCmd},
    commands::Ctx,
    error::CliError,
};

/// Runs one parsed command, printing to `out`.
pub async fn run<W: Write>(cli: Cli, out: &mut W) -> Result<(), CliError> {
    let mut ctx = Ctx {
        bearer: client::credentials(cli.token_file.as_deref())?,
        gateway: cli.gateway,
        format: cli.format,
        out,
    };
    match cli.command {
        Command::Network(cmd) => commands::network::run(&mut ctx, cmd).await,
        Command::Sandbox(cmd) => commands::sandbox::run(&mut ctx, cmd).await,
        Command::Events(a) => commands::events::run(&mut ctx, &a).await,
        Command::Hosts | Command::Host(HostCmd::Ls) => commands::hosts::run(&mut ctx).await,
        Command::Host(cmd) => commands::hosts::manage(&mut ctx, cmd).await,
        Command::Ipam(cmd) => commands::ipam::run(&mut ctx, cmd).await,
        Command::Token(cmd) => commands::tokens::run(&mut ctx, cmd).await,
        Command::Audit(a) => commands::tokens::audit(&mut ctx, &a).await,
        Command::Cni(CniCmd::Conflist(a)) => commands::cni::run(&mut ctx, &a),
        Command::Check => commands::check::run(&mut ctx).await,
        Command::Completion { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "weftctl", &mut buf);
            ctx.out.write_all(&buf)?;
            Ok(())
        }
    }
}

/// Prints `e` as one `weftctl: <message>` line on stderr (nothing for already reported ones).
pub fn report(e: &CliError) {
    if matches!(e, CliError::Reported(_)) {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "weftctl: {e}");
}

/// A clap error as one line: its message without the `error: ` prefix, the usage and the
/// `--help` hint, the lines of a list (missing arguments) joined.
pub fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let body: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let line = body.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("{line} (see --help)")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn usage_errors_fit_on_one_line() {
        let e = Cli::try_parse_from(["weftctl", "network", "create"]).unwrap_err();
        let line = usage_line(&e);
        assert!(!line.contains('\n'));
        assert!(line.contains("<NAME>"), "{line}");
        let e =
            Cli::try_parse_from(["weftctl", "sandbox", "create", "x", "-p", "99999"]).unwrap_err();
        let line = usage_line(&e);
        assert!(
            line.starts_with("invalid value '99999' for '--publish <SPEC>'"),
            "{line}"
        );
        assert!(line.contains("ports are 1-65535"), "{line}");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_command_after_the_double_dash() {
        let cli = Cli::try_parse_from([
            "weftctl", "sandbox", "exec", "web", "--", "ip", "-j", "link",
        ])
        .unwrap();
        let Command::Sandbox(cli::SandboxCmd::Exec { sandbox, command }) = cli.command else {
            panic!("not exec");
        };
        assert_eq!(sandbox, "web");
        assert_eq!(command, ["ip", "-j", "link"]);
    }
}
