//! One module per command group; each function runs one subcommand against the API.

pub mod check;
pub mod cni;
pub mod events;
pub mod hosts;
pub mod ipam;
pub mod network;
pub mod sandbox;
pub mod tokens;

use std::io::Write;

use serde_json::Value;

use crate::{
    cli::Format,
    client,
    error::{CliError, exit},
};

/// What every command needs: where the gateway is, how to print, where to print.
#[derive(Debug)]
pub struct Ctx<'a, W: Write> {
    pub gateway: String,
    /// The caller's credentials.
    pub bearer: weft_runtime::access::Bearer,
    pub format: Format,
    pub out: &'a mut W,
}

impl<W: Write> Ctx<'_, W> {
    /// A connected channel to the gateway.
    pub async fn gateway(&self) -> Result<weft_runtime::access::Authed, CliError> {
        client::connect_authed(&self.gateway, client::GATEWAY, &self.bearer).await
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes `text` as it is, flushing (events are followed live through pipes).
    pub fn print(&mut self, text: &str) -> Result<(), CliError> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// Writes one line.
    pub fn line(&mut self, text: &str) -> Result<(), CliError> {
        self.print(&format!("{text}\n"))
    }

    /// Writes a JSON value on one line (JSON Lines).
    pub fn json_line(&mut self, v: &Value) -> Result<(), CliError> {
        self.line(&v.to_string())
    }

    /// Writes a JSON value indented (`inspect`).
    pub fn json_pretty(&mut self, v: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::Api(format!("cannot encode JSON: {e}")))?;
        self.line(&text)
    }
}

/// Reports `e` on stderr now (one line) and remembers the most significant exit code, for
/// commands that go on with the next object after a failure (`rm a b c`).
#[derive(Debug, Default)]
pub struct Failures {
    code: Option<i32>,
}

impl Failures {
    pub fn report(&mut self, e: &CliError) {
        crate::report(e);
        let code = e.exit_code();
        // Unavailable outranks not found, which outranks other API errors.
        let rank = |c: i32| match c {
            exit::UNAVAILABLE => 3,
            exit::NOT_FOUND => 2,
            _ => 1,
        };
        if self.code.is_none_or(|c| rank(code) > rank(c)) {
            self.code = Some(code);
        }
    }

    /// `Ok` when nothing failed, otherwise the already reported failure.
    pub fn finish(self) -> Result<(), CliError> {
        self.code.map_or(Ok(()), |c| Err(CliError::Reported(c)))
    }
}
