//! `weftctl cni conflist`: a ready CNI network configuration list for a Weft network —
//! `weft-cni` first, then the standard `portmap` (published ports) and `tuning` plugins — at
//! `cniVersion` 1.0.0, the newest Debian's standard plugins (1.1.1) accept.

use std::io::Write;

use serde_json::{Value, json};

pub use crate::cli::ConflistArgs;
use crate::{commands::Ctx, error::CliError};

/// The version of the conflist (see the module comment).
pub const CNI_VERSION: &str = "1.0.0";

/// The conflist.
pub fn conflist(a: &ConflistArgs) -> Value {
    let mut weft = json!({
        "type": "weft-cni",
        "network": a.network,
        "gateway": a.cni_gateway,
        // Ports go to portmap below: a capability given to both would publish each port twice.
        "capabilities": {"ips": true, "mac": true, "aliases": true},
    });
    if let Some(t) = &a.cni_token_file {
        weft["tokenFile"] = json!(t);
    }
    if let Some(h) = &a.cni_host {
        weft["host"] = json!(h);
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": a.name.as_deref().unwrap_or(&a.network),
        "plugins": [
            weft,
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            {"type": "tuning"},
        ],
    })
}

pub fn run<W: Write>(ctx: &mut Ctx<'_, W>, a: &ConflistArgs) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(&conflist(a))
        .map_err(|e| CliError::Api(format!("cannot encode the conflist: {e}")))?;
    writeln!(ctx.out, "{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, CniCmd, Command};

    use super::*;

    fn parse(args: &[&str]) -> Result<ConflistArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["weftctl", "cni", "conflist"], args].concat())?;
        let Command::Cni(CniCmd::Conflist(a)) = cli.command else {
            panic!("not cni conflist");
        };
        Ok(a)
    }

    #[test]
    fn the_conflist_chains_portmap_and_tuning_after_weft() {
        let a = parse(&[
            "--network",
            "web",
            "--cni-token-file",
            "/etc/weft/cni.token",
        ])
        .unwrap();
        let c = conflist(&a);
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["name"], "web");
        let types: Vec<&str> = c["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["weft-cni", "portmap", "tuning"]);
        assert_eq!(c["plugins"][0]["tokenFile"], "/etc/weft/cni.token");
        assert_eq!(c["plugins"][0]["gateway"], "127.0.0.1:7700");
        assert_eq!(c["plugins"][0]["capabilities"].get("portMappings"), None);
        assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn bad_names_and_relative_token_files_are_refused() {
        assert!(parse(&["--network", "a b"]).is_err());
        assert!(parse(&["--network", "n", "--cni-token-file", "token"]).is_err());
    }
}
