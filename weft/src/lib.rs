//! `weft`: runs Weft on one host. `weft up` starts ipam-svc, the gateway, the driver-agent and
//! dns-svc as supervised child processes on the default ports of the API contract, each once
//! the one before it is healthy, with their SQLite files and logs in one data directory. A
//! service that exits is started again after a growing delay ([`policy`]); `weft up` stops
//! them in reverse order on Ctrl-C or SIGTERM, or when one keeps crashing. `weft status`
//! prints the supervisor's state, which `weft up` keeps in the data directory ([`status`]).

pub mod cli;
pub mod cluster;
pub mod dial;
pub mod error;
pub mod health;
pub mod joined;
pub mod logs;
pub mod pki;
pub mod plan;
pub mod policy;
pub mod privileges;
pub mod process;
pub mod status;
pub mod supervisor;
pub mod table;
pub mod tokens;
pub mod user;

use std::process::ExitCode;

pub use cli::{Cli, Command, StatusArgs, UpArgs};
pub use error::UpError;
use plan::UpConfig;
use supervisor::{Stack, StopSignals};

/// Runs one `weft` command: what `main` does.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            #[allow(clippy::print_stdout)]
            {
                println!("weft {}", env!("CARGO_PKG_VERSION"));
            }
            ExitCode::SUCCESS
        }
        Command::Status(args) => print_status(&args),
        Command::Pki(args) => report("weft pki", cluster::pki(&args)),
        Command::Join(args) => report("weft join", cluster::join(&args).await),
        Command::Probe(args) => match cluster::probe(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("weft probe: {e}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Up(args) => match up(*args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("weft up: {e}");
                }
                ExitCode::from(e.exit_code())
            }
        },
    }
}

/// `weft up`: returns once the stack has been stopped.
pub async fn up(args: UpArgs) -> Result<(), UpError> {
    // Before anything else: a stack whose agent cannot work is worse than none.
    privileges::check().map_err(UpError::Privileges)?;
    // Everything made from here on (directories, logs, the services' databases) is for its
    // owner only: 0700 directories, 0600 files.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut config = UpConfig::from_args(args)?;
    config.run_as = Some(user::ensure(&config.user)?);
    let services = config.services();
    if let Some(missing) = services.iter().find(|s| !s.binary.is_file()) {
        return Err(UpError::MissingBinary {
            service: missing.name,
            path: missing.binary.clone(),
        });
    }
    if let Some(ids) = config.run_as {
        user::prepare_data_dir(&config.data_dir, ids)?;
    }
    match config.join.clone() {
        // A joined host: no control plane, no tokens; certificates from the gateway.
        Some(join) => {
            config.joined = Some(
                joined::ensure(
                    &config.data_dir,
                    &config.host_name,
                    &join,
                    config.netns.as_ref().map(|n| n.path.as_path()),
                    config.run_as,
                )
                .await?,
            );
        }
        None => {
            config.tokens = Some(tokens::ensure(&config.data_dir, config.run_as)?);
            config.tls = Some(pki::ensure(
                &config.data_dir,
                &config.host_name,
                config.advertise,
                config.run_as,
            )?);
        }
    }
    if let Some(ns) = &config.netns {
        loopback_up(&ns.name).await?;
    }
    let mut signals = StopSignals::install()?;
    let mut stack = Stack::new(config.clone());
    let ran = stack
        .run(&mut signals, |stack| {
            #[allow(clippy::print_stdout)]
            {
                print!("{}", table::render(&config, &stack.running()));
            }
        })
        .await;
    let stopped = stack.stop_all().await;
    // The reason the stack ended matters more than how the rest stopped.
    ran.and(stopped)
}

/// Prints what a one-shot command made, or its error; the exit code says which.
fn report(what: &str, done: Result<String, UpError>) -> ExitCode {
    #[allow(clippy::print_stdout, clippy::print_stderr)]
    match done {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `weft status`: the status file as a table, or as JSON.
fn print_status(args: &StatusArgs) -> ExitCode {
    #[allow(clippy::print_stdout, clippy::print_stderr)]
    match status::read(&args.data_dir) {
        Ok(s) if args.json => match serde_json::to_string_pretty(&s) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weft status: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(s) => {
            print!("{}", status::render(&s, status::writer_alive(&s)));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Brings up the loopback of the namespace `name`: `ip netns add` leaves it down, and the
/// services talk to each other over it.
async fn loopback_up(name: &str) -> Result<(), UpError> {
    let out = tokio::process::Command::new("ip")
        .args(["-n", name, "link", "set", "lo", "up"])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(UpError::Loopback {
            name: name.into(),
            detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        }),
        Err(e) => Err(UpError::Loopback {
            name: name.into(),
            detail: format!("cannot run ip: {e}"),
        }),
    }
}
