//! `weft`'s flags.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use weft_identity::Kind;

/// weft: runs Weft on this host.
#[derive(Debug, clap::Parser)]
#[command(name = "weft", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the gateway, ipam-svc, driver-agent and dns-svc on this host, each on its default
    /// port, until Ctrl-C or SIGTERM (needs root: the driver-agent manages namespaces, links and
    /// nftables).
    Up(Box<UpArgs>),
    /// Print what `weft up` is doing: each service's PID, state, restarts and last exit, with
    /// the last lines it logged (from <data-dir>/status.json, which `weft up` keeps current).
    Status(StatusArgs),
    /// Make the cluster's CA (when missing) and the certificates of the gateway, ipam-svc and
    /// the operator in a directory: for a Kubernetes install (the Helm chart's pre-install Job)
    /// or by hand.
    Pki(PkiArgs),
    /// Get this host's driver-agent and dns-svc certificates from the gateway with a join token
    /// (unless the data directory holds them already), then exit: the Helm chart's per-node
    /// init step. `weft up --join` does the same before it starts the two services.
    Join(Box<JoinArgs>),
    /// Check a service's gRPC health (grpc.health.v1; over TLS with --tls-ca): exit 0 when it
    /// answers SERVING, 1 otherwise. The Helm chart's liveness and readiness probe.
    Probe(ProbeArgs),
    /// Print weft's version.
    Version,
}

/// The host name of a single host, and of a cluster's first host, unless told otherwise.
pub const DEFAULT_HOST_NAME: &str = "local";

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where the SQLite files, the agent's files and the services' logs go.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    pub data_dir: PathBuf,

    /// Where the service binaries are; default: next to weft itself.
    #[arg(long, env = "WEFT_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// This host's name at the gateway.
    #[arg(long, env = "WEFT_HOST_NAME", default_value = DEFAULT_HOST_NAME)]
    pub host_name: String,

    /// Run the whole stack inside the existing network namespace /run/netns/NAME (the agent
    /// manages it, and every service's ports are on its loopback) instead of this host's own.
    #[arg(long, env = "WEFT_NETNS", value_name = "NAME")]
    pub netns: Option<String>,

    /// Upstream DNS servers (IP or IP:PORT) dns-svc forwards to for names that are not Weft's,
    /// repeatable; default: those of the host's /etc/resolv.conf.
    #[arg(
        long = "dns-upstream",
        env = "WEFT_DNS_UPSTREAMS",
        value_delimiter = ','
    )]
    pub dns_upstreams: Vec<String>,

    /// This host's address on the network between hosts (an IP): makes the first host
    /// joinable (the gateway also listens with TLS on ADDR:7700 and signs joining hosts'
    /// certificates); on a joining host, where its driver-agent and dns-svc listen (ADDR:7702,
    /// ADDR:7703) for the gateway.
    #[arg(long, env = "WEFT_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<std::net::IpAddr>,

    /// Join the cluster whose gateway is at GATEWAY_ADDR:7700 (its --advertise address): run
    /// only this host's driver-agent and dns-svc, with certificates the gateway signs for the
    /// join token. Needs --join-token, --host-name and --advertise.
    #[arg(long, env = "WEFT_JOIN", value_name = "GATEWAY_ADDR:7700")]
    pub join: Option<String>,

    /// A one-time join token (`weftctl host join-token` on the first host). Spent at the first
    /// start; later starts reuse the certificates in <data-dir>/pki.
    #[arg(
        long,
        env = "WEFT_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,

    /// The gateway's Postgres database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) instead of
    /// the SQLite file in the data directory; needs --ipam-database-url too (another database:
    /// each service migrates its own). Handed to the service in its environment, never on a
    /// command line.
    #[arg(
        long,
        env = "WEFT_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        requires = "ipam_database_url"
    )]
    pub database_url: Option<String>,

    /// ipam-svc's Postgres database, with --database-url.
    #[arg(
        long,
        env = "WEFT_UP_IPAM_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        requires = "database_url"
    )]
    pub ipam_database_url: Option<String>,

    /// The user the gateway, ipam-svc and dns-svc run as (never root; the driver-agent alone
    /// stays root). The default, `weft`, is created as a system user when missing.
    #[arg(long, env = "WEFT_USER", default_value = crate::user::DEFAULT_USER)]
    pub user: String,

    /// How long each service may take to become healthy; also how long one that was healthy
    /// may fail every health check before it is killed and restarted (1s to 1h).
    #[arg(long, env = "WEFT_START_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,

    /// How long each service may take to stop after SIGTERM before it is killed (1s to 1h).
    #[arg(long, env = "WEFT_STOP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The data directory of the `weft up` to ask about.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    pub data_dir: PathBuf,

    /// Print the status file's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `weft pki`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PkiArgs {
    /// Where the files go (made 0700 when missing; an existing one must be this user's, closed
    /// to others). A CA already there is kept and signs the certificates.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// A DNS name the gateway's and ipam-svc's certificates are valid for, besides
    /// `localhost` (their Services' names: `weft-gateway.NAMESPACE.svc`, …); repeatable or
    /// comma-separated.
    #[arg(long = "dns-name", value_name = "NAME", value_delimiter = ',')]
    pub dns_names: Vec<String>,

    /// An IP address the certificates are valid for, besides 127.0.0.1 and ::1; repeatable.
    #[arg(long = "ip", value_name = "ADDR", value_delimiter = ',')]
    pub ips: Vec<IpAddr>,
}

/// The most names or addresses `weft pki` puts in a certificate.
pub const MAX_SANS: usize = 32;

/// `weft join`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// The node's data directory: the certificates go to `pki/` (root's, 0700) and dns-svc's
    /// copies to `run/tls/`.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "/var/lib/weft")]
    pub data_dir: PathBuf,

    /// The gateway's TLS listener, HOST:PORT; HOST may be a DNS name (a Kubernetes Service),
    /// which its certificate must then carry.
    #[arg(long, env = "WEFT_JOIN", value_name = "HOST:PORT")]
    pub join: String,

    /// A one-time join token (`weftctl host join-token --host NAME`); needed only while the
    /// data directory holds no certificates of this host.
    #[arg(
        long,
        env = "WEFT_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,

    /// A file holding the join token, read when it exists (a Secret's key named after the
    /// node: a node without one may still start on the certificates it kept).
    #[arg(long, env = "WEFT_JOIN_TOKEN_FILE", value_name = "PATH")]
    pub join_token_file: Option<PathBuf>,

    /// This host's name in the cluster (the node's name).
    #[arg(long, env = "WEFT_HOST_NAME")]
    pub host_name: String,

    /// The address the gateway reaches this host's agent and dns-svc at (the node's IP):
    /// the certificates are valid for it.
    #[arg(long, env = "WEFT_ADVERTISE", value_name = "ADDR")]
    pub advertise: IpAddr,

    /// The uid that owns dns-svc's copies (dns-svc runs unprivileged); with --service-gid.
    #[arg(long, requires = "service_gid")]
    pub service_uid: Option<u32>,

    /// The gid of dns-svc's copies.
    #[arg(long, requires = "service_uid")]
    pub service_gid: Option<u32>,
}

/// `weft probe`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The service's gRPC address, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    pub addr: SocketAddr,

    /// The cluster's CA certificate: the check goes over TLS, the server must chain to it,
    /// be valid for the address and carry a --kind identity. Without it: plaintext.
    #[arg(long, value_name = "PATH", requires = "kind")]
    pub tls_ca: Option<PathBuf>,

    /// The identity kind the server must carry: gateway, ipam, agent or dns.
    #[arg(long)]
    pub kind: Option<Kind>,
}
