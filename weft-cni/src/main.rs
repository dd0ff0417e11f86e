//! weft-cni's entry point. Called by a container runtime (no arguments): the `CNI_*`
//! environment and the config on stdin in, the result or the spec's error object on stdout.
//! Called with arguments: `weft-cni install …` (see `weft_cni::install`).

#![allow(clippy::print_stdout)]

use std::{
    io::{Read as _, Write as _},
    process::ExitCode,
    time::Duration,
};

use weft_cni::{
    config::{STDIN_MAX, version_of},
    error::{CniError, code},
};

/// A runtime waits on the plugin; a stuck gateway must not hold a container start forever.
const DEADLINE: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        return weft_cni::install::main();
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .take(STDIN_MAX as u64 + 1)
        .read_to_end(&mut stdin);
    let version = version_of(&stdin);
    let outcome = match read {
        Err(e) => Err(CniError::new(code::IO, format!("cannot read stdin: {e}"))),
        Ok(_) => call(&stdin),
    };
    let (json, exit) = match outcome {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(v)) => (v, ExitCode::SUCCESS),
        Err(e) => (e.to_json(&version), ExitCode::FAILURE),
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{json}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    exit
}

fn call(stdin: &[u8]) -> Result<Option<serde_json::Value>, CniError> {
    let mut vars = Vec::new();
    for (k, v) in std::env::vars_os() {
        let (Some(k), v) = (k.to_str(), v.to_str()) else {
            continue;
        };
        if k.starts_with("CNI_") {
            let v = v.ok_or_else(|| {
                CniError::new(code::INVALID_ENV, format!("{k} is not valid UTF-8"))
            })?;
            vars.push((k.to_owned(), v.to_owned()));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        tokio::time::timeout(DEADLINE, weft_cni::run(vars, stdin))
            .await
            .unwrap_or_else(|_| {
                Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("no answer within {}s", DEADLINE.as_secs()),
                ))
            })
    })
}
