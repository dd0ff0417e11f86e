//! weft-cni: a CNI plugin (spec 1.1.0, and configs of 0.4.0 and 1.0.0) that turns a container
//! runtime's ADD, DEL, CHECK, STATUS, GC and VERSION into calls to the gateway's public API
//! (`weft.gateway.v1`). `main` collects the environment and stdin and calls [`run`]; everything
//! here is testable without a runtime.

pub mod api;
pub mod config;
pub mod env;
pub mod error;
pub mod install;
pub mod kernel;
pub mod result;
pub mod verbs;

use serde_json::{Value, json};

use crate::{
    config::{NetConf, SUPPORTED_VERSIONS, version_of},
    env::{CniEnv, Command},
    error::CniError,
};

/// Runs one call: `vars` are the process environment, `stdin` the config. `Some` is the JSON
/// to print on success.
pub async fn run<I, K, V>(vars: I, stdin: &[u8]) -> Result<Option<Value>, CniError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let env = CniEnv::parse(vars)?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": version_of(stdin),
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let needs_network = env.command != Command::Status;
    let conf = NetConf::parse(stdin, needs_network)?;
    match env.command {
        Command::Add => verbs::add::run(&env, &conf).await.map(Some),
        Command::Del => verbs::del::run(&env, &conf).await.map(|()| None),
        Command::Check => verbs::check::run(&env, &conf).await.map(|()| None),
        Command::Status => verbs::status::run(&conf).await.map(|()| None),
        Command::Gc => verbs::gc::run(&conf).await.map(|()| None),
        Command::Version => Ok(None),
    }
}
