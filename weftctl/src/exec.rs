//! `weftctl sandbox exec SANDBOX -- CMD…`: runs a command inside a sandbox's network namespace.
//!
//! The namespace path comes from the sandbox record (`Sandbox.netns_path`). The process then
//! joins it with `setns(CLONE_NEWNET)` on the main thread and replaces itself with the command
//! (`execvp`), so the command's exit code is weftctl's. The lookup runs on a current-thread
//! runtime that is dropped before `setns`: the thread that joins the namespace is the one that
//! execs, and no tokio worker ever changes namespace.

use std::{ffi::OsString, io::ErrorKind, os::unix::process::CommandExt, process::Command};

use weft_proto::gateway::v1::{self as pb, sandbox_service_client::SandboxServiceClient};

use crate::{client, error::CliError};

/// Looks up the sandbox's namespace path.
async fn netns_path(
    gateway: &str,
    bearer: &weft_runtime::access::Bearer,
    sandbox: &str,
) -> Result<String, CliError> {
    let mut c =
        SandboxServiceClient::new(client::connect_authed(gateway, client::GATEWAY, bearer).await?);
    let s = c
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: sandbox.to_owned(),
        })
        .await?
        .into_inner();
    if s.netns_path.is_empty() {
        let mode = if s.network_mode.is_empty() {
            String::new()
        } else {
            format!(" (network mode {})", s.network_mode)
        };
        return Err(CliError::Api(format!(
            "sandbox {:?} has no network namespace path{mode}",
            s.name
        )));
    }
    Ok(s.netns_path)
}

/// Runs `command` in `sandbox`'s network namespace. Returns only on failure: on success the
/// process has become the command.
pub fn run(
    gateway: &str,
    token_file: Option<&std::path::Path>,
    sandbox: &str,
    command: &[OsString],
) -> CliError {
    let Some((program, args)) = command.split_first() else {
        return CliError::Usage("sandbox exec needs a command".into());
    };
    let bearer = match client::credentials(token_file) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let path = {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return CliError::Api(format!("cannot start the async runtime: {e}")),
        };
        match rt.block_on(netns_path(gateway, &bearer, sandbox)) {
            Ok(p) => p,
            Err(e) => return e,
        }
    };
    let ns = match weft_runtime::netns::open(std::path::Path::new(&path)) {
        Ok(f) => f,
        Err(e) => {
            return CliError::Api(format!(
                "cannot open the network namespace of sandbox {sandbox:?} at {path}: {e}"
            ));
        }
    };
    if let Err(e) = weft_runtime::netns::enter(&ns) {
        return CliError::Api(format!(
            "cannot enter the network namespace at {path}: {e} (needs CAP_SYS_ADMIN, e.g. root)"
        ));
    }
    drop(ns);
    let e = Command::new(program).args(args).exec();
    let code = if e.kind() == ErrorKind::NotFound {
        127
    } else {
        126
    };
    CliError::Exit(
        format!("cannot run {}: {e}", program.to_string_lossy()),
        code,
    )
}
