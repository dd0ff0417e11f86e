//! ipam-svc's flags, parsed once into a validated [`Config`].

use std::net::SocketAddr;

use weft_runtime::{CommonArgs, Transport};
use weft_store::StoreOptions;

use crate::domain::AddressSpaces;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ipam-svc",
    version,
    about = "Weft's IPAM service: pools and address allocation"
)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, env = "WEFT_IPAM_LISTEN", default_value = "127.0.0.1:7701")]
    pub listen: SocketAddr,

    /// Database: `sqlite://PATH` (one replica) or `postgres://…` (any number of replicas).
    #[arg(
        long,
        env = "WEFT_IPAM_DATABASE_URL",
        default_value = "sqlite://weft-data/ipam.db"
    )]
    pub database_url: String,

    /// Database connections.
    #[arg(long, env = "WEFT_IPAM_DB_CONNECTIONS", default_value_t = 8)]
    pub db_connections: u32,

    /// SQLite: fsync every commit (survives power loss, not just a crash of the process).
    #[arg(long, env = "WEFT_IPAM_SQLITE_SYNC_FULL")]
    pub sqlite_sync_full: bool,

    /// Default address pool, `SPACE=BASE/LEN:SIZE` (for example `local=10.10.0.0/16:24`);
    /// repeat for more. The spaces named replace their built-in defaults.
    #[arg(
        long = "default-address-pool",
        env = "WEFT_IPAM_DEFAULT_ADDRESS_POOLS",
        value_delimiter = ';'
    )]
    pub default_address_pools: Vec<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub store: StoreOptions,
    pub spaces: AddressSpaces,
    /// Mutual TLS (`--tls-*`), or plaintext with `--insecure-plaintext`.
    pub transport: Transport,
    pub common: CommonArgs,
}

impl TryFrom<Args> for Config {
    type Error = String;

    fn try_from(a: Args) -> Result<Self, String> {
        a.common.validate().map_err(|e| e.to_string())?;
        let transport = a.common.internal_transport().map_err(|e| e.to_string())?;
        if a.db_connections == 0 {
            return Err("--db-connections must be at least 1".into());
        }
        let spaces = AddressSpaces::with_overrides(&a.default_address_pools)
            .map_err(|e| format!("--default-address-pool {e}"))?;
        Ok(Self {
            listen: a.listen,
            store: StoreOptions {
                max_connections: a.db_connections,
                sqlite_synchronous_full: a.sqlite_sync_full,
                ..StoreOptions::default()
            },
            database_url: a.database_url,
            spaces,
            transport,
            common: a.common,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_follow_the_api_contract() {
        let c =
            Config::try_from(Args::try_parse_from(["ipam-svc", "--insecure-plaintext"]).unwrap())
                .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7701");
        assert!(c.spaces.spaces.contains_key("local") && c.spaces.spaces.contains_key("global"));
    }

    #[test]
    fn without_tls_or_the_plaintext_flag_it_refuses_to_start() {
        let e = Config::try_from(Args::try_parse_from(["ipam-svc"]).unwrap()).unwrap_err();
        assert!(
            e.contains("--insecure-plaintext") && e.contains("--tls-cert"),
            "{e}"
        );
    }

    #[test]
    fn bad_pools_are_refused_at_start() {
        let a = Args::try_parse_from([
            "ipam-svc",
            "--insecure-plaintext",
            "--default-address-pool",
            "local=10.0.0.0/8:4",
        ])
        .unwrap();
        assert!(Config::try_from(a).unwrap_err().contains("10.0.0.0/8:4"));
    }
}
