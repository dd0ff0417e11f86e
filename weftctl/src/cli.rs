//! The command line, in the manner of `docker network` (clap derive).

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weft_proto::gateway::v1 as pb;

use crate::parse::{self, Filter};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the API refused the request or failed (message on stderr)
  2  usage error: unknown flag, malformed value, missing argument
  3  not found: a named network, sandbox or endpoint does not exist
  4  unavailable: the gateway (or a service behind it) cannot be reached
  For `sandbox exec`, the command's own exit code; 126/127 when it cannot be run.";

/// weftctl: Weft's command-line client, for people who know `docker network`.
#[derive(Debug, Parser)]
#[command(name = "weftctl", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// The gateway's gRPC address (give it before the command: `weftctl --gateway URL network ls`).
    #[arg(
        long,
        env = "WEFT_GATEWAY",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    pub gateway: String,

    /// The file holding the API token. Without it: the token in WEFT_TOKEN, else
    /// ./weft-data/admin.token (what `weft up` writes) when that file exists.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,

    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns (lists), or short confirmations (mutations).
    Table,
    /// JSON: one object per line for lists and events, an array for `inspect`.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage networks (`docker network`).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes: the network namespaces of containers.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Follow the event log (networks, sandboxes, endpoints, hosts).
    Events(EventsArgs),
    /// List the hosts and their agents (`weftctl host ls`).
    Hosts,
    /// Manage hosts: list, let a new one join, remove one (role admin for the last two).
    #[command(subcommand)]
    Host(HostCmd),
    /// ipam-svc administration.
    #[command(subcommand)]
    Ipam(IpamCmd),
    /// Manage the API's tokens (role admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Show the audit log, newest first (role admin).
    Audit(AuditArgs),
    /// Use Weft from container runtimes through CNI (Podman, containerd, CRI-O).
    #[command(subcommand)]
    Cni(CniCmd),
    /// Check the system's consistency (role admin): addresses leaked or missing, operations
    /// pending, and each host's kernel against its desired state. Exits 1 on any problem.
    Check,
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// Print a conflist for a Weft network: weft-cni, then portmap and tuning (cniVersion
    /// 1.0.0). Put it in the runtime's CNI config directory (`weft-cni install` does both).
    Conflist(ConflistArgs),
}

/// What the conflist says (shared with `weft-cni install`).
#[derive(Debug, Clone, Args)]
pub struct ConflistArgs {
    /// The Weft network the runtime's containers join (name or id).
    #[arg(long, value_parser = cni_name)]
    pub network: String,
    /// The conflist's name, what the runtime calls the network. Default: the Weft network's.
    #[arg(long, value_parser = cni_name)]
    pub name: Option<String>,
    /// Where the plugin reaches the gateway, HOST:PORT (the config key `gateway`).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7700")]
    pub cni_gateway: String,
    /// The token file the plugin reads (the config key `tokenFile`; an absolute path).
    #[arg(long, value_name = "PATH", value_parser = absolute)]
    pub cni_token_file: Option<std::path::PathBuf>,
    /// The Weft host of this machine, when it is not registered under its hostname.
    #[arg(long, value_name = "NAME", value_parser = cni_name)]
    pub cni_host: Option<String>,
}

fn cni_name(v: &str) -> Result<String, String> {
    let mut chars = v.chars();
    let ok = v.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err("expected [a-zA-Z0-9][a-zA-Z0-9_.-]* of at most 128 characters".to_owned())
    }
}

fn absolute(v: &str) -> Result<std::path::PathBuf, String> {
    let p = std::path::PathBuf::from(v);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err("expected an absolute path (the runtime runs the plugin from anywhere)".to_owned())
    }
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List the hosts and their agents.
    #[command(alias = "list")]
    Ls,
    /// Make a one-time join token for a new host; prints it (shown this once) as the last word.
    JoinToken {
        /// Only a host of this name may join with it.
        #[arg(long, default_value = "")]
        host: String,
        /// How long it may be used (e.g. 30m, 2h; at most 24h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Remove a host: its sandboxes are deleted and their addresses released; the host must
    /// join again to come back.
    Rm {
        name: String,
        /// Remove it even while it is up.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; prints it (shown this once) as the last word.
    Create {
        /// viewer, operator or admin; agent or dns (with --host).
        #[arg(long)]
        role: String,
        /// 1-63 characters of a-z, 0-9, '.', '_', '-'.
        #[arg(long)]
        name: String,
        /// For the agent and dns roles: the host the token speaks for.
        #[arg(long, default_value = "")]
        host: String,
    },
    /// List the tokens (never their secrets).
    #[command(alias = "list")]
    Ls,
    /// Revoke a token.
    Revoke { name: String },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only the entries of this identity (`role:name`).
    #[arg(long, default_value = "")]
    pub identity: String,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network; prints its id.
    Create(Box<NetworkCreate>),
    /// List networks.
    #[command(alias = "list")]
    Ls(NetworkLs),
    /// Show networks in detail, as a JSON array.
    Inspect {
        /// Names, ids or unique id prefixes.
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
    /// Remove networks (they must have no endpoints).
    #[command(alias = "remove")]
    Rm {
        /// Names, ids or unique id prefixes.
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
    /// Remove every unused user-defined network.
    Prune(NetworkPrune),
    /// Connect a sandbox to a network.
    Connect(NetworkConnect),
    /// Disconnect a sandbox from a network.
    Disconnect {
        /// Disconnect even when the sandbox's host cannot be reached.
        #[arg(short, long)]
        force: bool,
        /// Network name, id or unique id prefix.
        network: String,
        /// Sandbox name, id or unique id prefix.
        sandbox: String,
    },
}

#[derive(Debug, Args)]
pub struct NetworkCreate {
    /// Network name: [a-zA-Z0-9][a-zA-Z0-9_.-]*, unique.
    pub name: String,
    /// Driver: bridge (default), overlay, macvlan, ipvlan.
    #[arg(short, long)]
    pub driver: Option<String>,
    /// Subnet in CIDR form; `0.0.0.0/24` or `::/64` picks any free subnet of that size.
    #[arg(long, value_parser = parse::cidr)]
    pub subnet: Vec<String>,
    /// Allocate automatic addresses from this sub-range of the subnet containing it.
    #[arg(long, value_parser = parse::cidr)]
    pub ip_range: Vec<String>,
    /// Gateway of the subnet containing it.
    #[arg(long, value_parser = parse::ip)]
    pub gateway: Vec<String>,
    /// Reserve an address (NAME=IP), in the subnet containing it.
    #[arg(long, value_parser = parse::aux_address, value_name = "NAME=IP")]
    pub aux_address: Vec<(String, String)>,
    /// Enable IPv6 (`--ipv6=false` to state the default).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub ipv6: Option<bool>,
    /// IPv4 addressing; `--ipv4=false` for an IPv6-only network.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub ipv4: Option<bool>,
    /// No external connectivity.
    #[arg(long)]
    pub internal: bool,
    /// Recorded for Docker compatibility: every network accepts sandboxes.
    #[arg(long)]
    pub attachable: bool,
    /// Label (KEY=VALUE or KEY), repeatable.
    #[arg(long, value_parser = parse::label, value_name = "KEY=VALUE")]
    pub label: Vec<(String, String)>,
    /// Driver option with Docker's keys (KEY=VALUE), repeatable.
    #[arg(short = 'o', long, value_parser = parse::key_value, value_name = "KEY=VALUE")]
    pub opt: Vec<(String, String)>,
    /// IPAM driver ("default").
    #[arg(long)]
    pub ipam_driver: Option<String>,
    /// IPAM driver option (KEY=VALUE), repeatable.
    #[arg(long, value_parser = parse::key_value, value_name = "KEY=VALUE")]
    pub ipam_opt: Vec<(String, String)>,
    /// DNS upstream ("ip" or "ip:port") for sandboxes on this network, repeatable.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Check everything, create nothing; prints the network as it would be (JSON).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NetworkLs {
    /// Filter (name=, id=, driver=, label=, scope=, type=custom|builtin), repeatable.
    #[arg(short, long, value_parser = parse::filter, value_name = "KEY=VALUE")]
    pub filter: Vec<Filter>,
    /// Only print network ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate ids.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct NetworkPrune {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Filter (label=, label!=, until=), repeatable.
    #[arg(long, value_parser = parse::filter, value_name = "KEY=VALUE")]
    pub filter: Vec<Filter>,
}

#[derive(Debug, Args)]
pub struct NetworkConnect {
    /// Network name, id or unique id prefix.
    pub network: String,
    /// Sandbox name, id or unique id prefix.
    pub sandbox: String,
    /// Static IPv4 address.
    #[arg(long, value_parser = parse::ipv4)]
    pub ip: Option<String>,
    /// Static IPv6 address.
    #[arg(long, value_parser = parse::ipv6)]
    pub ip6: Option<String>,
    /// Extra DNS name on this network, repeatable.
    #[arg(long)]
    pub alias: Vec<String>,
    /// Default-gateway priority: the highest among a sandbox's endpoints wins.
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub gw_priority: Option<i64>,
    /// Endpoint driver option (KEY=VALUE), repeatable.
    #[arg(long, value_parser = parse::key_value, value_name = "KEY=VALUE")]
    pub driver_opt: Vec<(String, String)>,
    /// Link-local address, repeatable.
    #[arg(long, value_parser = parse::ip)]
    pub link_local_ip: Vec<String>,
    /// MAC address of the interface.
    #[arg(long)]
    pub mac_address: Option<String>,
}

impl NetworkConnect {
    /// The API's endpoint settings for these flags.
    pub fn settings(&self) -> pb::EndpointSettings {
        pb::EndpointSettings {
            ipv4_address: self.ip.clone().unwrap_or_default(),
            ipv6_address: self.ip6.clone().unwrap_or_default(),
            mac_address: self.mac_address.clone().unwrap_or_default(),
            aliases: self.alias.clone(),
            gw_priority: self.gw_priority.unwrap_or_default(),
            driver_options: self.driver_opt.iter().cloned().collect(),
            link_local_ips: self.link_local_ip.clone(),
            interface_name: String::new(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox; prints its id.
    Create(Box<SandboxCreate>),
    /// List sandboxes.
    #[command(alias = "list")]
    Ls(SandboxLs),
    /// Show sandboxes in detail, as a JSON array.
    Inspect {
        /// Names, ids or unique id prefixes.
        #[arg(required = true, value_name = "SANDBOX")]
        sandboxes: Vec<String>,
    },
    /// Remove sandboxes with all their endpoints.
    #[command(alias = "remove")]
    Rm {
        /// Names, ids or unique id prefixes.
        #[arg(required = true, value_name = "SANDBOX")]
        sandboxes: Vec<String>,
    },
    /// Run a command inside a sandbox's network namespace (needs CAP_SYS_ADMIN).
    Exec {
        /// Sandbox name, id or unique id prefix.
        sandbox: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
pub struct SandboxCreate {
    /// Sandbox name, unique.
    pub name: String,
    /// A network to attach (NAME, or name=NET,ip=…,alias=…,gw-priority=…), repeatable; or
    /// `host`, `none`, `container:<sandbox>` as the network mode.
    #[arg(long, value_name = "NETWORK")]
    pub network: Vec<String>,
    /// Hostname written to /etc/hosts.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Upstream DNS server, repeatable.
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain, repeatable.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// resolv.conf option (e.g. ndots:2), repeatable.
    #[arg(long)]
    pub dns_option: Vec<String>,
    /// Extra /etc/hosts entry (HOST:IP), repeatable.
    #[arg(long, value_parser = parse::extra_host, value_name = "HOST:IP")]
    pub add_host: Vec<pb::ExtraHost>,
    /// Publish ports: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], ranges as 8000-8010:80-90.
    #[arg(short, long, value_parser = parse::publish, value_name = "SPEC")]
    pub publish: Vec<pb::PortMapping>,
    /// Adopt an existing network namespace (e.g. /run/netns/NAME) instead of creating one.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<String>,
    /// The container runtime's id of the container.
    #[arg(long)]
    pub container_id: Option<String>,
    /// The host to create it on (default: the only host).
    #[arg(long)]
    pub host: Option<String>,
    /// Label (KEY=VALUE or KEY), repeatable.
    #[arg(long, value_parser = parse::label, value_name = "KEY=VALUE")]
    pub label: Vec<(String, String)>,
    /// Check everything, create nothing; prints the sandbox as it would be (JSON).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SandboxLs {
    /// Filter (name=, host=, network=, container-id=, label=), repeatable.
    #[arg(short, long, value_parser = parse::filter, value_name = "KEY=VALUE")]
    pub filter: Vec<Filter>,
    /// Only print sandbox ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate ids.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Replay from this revision: 0 sends a snapshot of every object first, N every event
    /// after N. Default: only new events.
    #[arg(long, value_name = "REVISION")]
    pub since: Option<u64>,
    /// Filter (network=, sandbox=, host=, type=network|sandbox|endpoint|host,
    /// event=created|updated|removed|connected|disconnected|up|down), repeatable.
    #[arg(short, long, value_parser = parse::filter, value_name = "KEY=VALUE")]
    pub filter: Vec<Filter>,
}

#[derive(Debug, Subcommand)]
pub enum IpamCmd {
    /// Check ipam-svc's pools and allocations for inconsistencies (exit 1 when any is found).
    Check {
        /// ipam-svc's gRPC address.
        #[arg(
            long,
            env = "WEFT_IPAM",
            default_value = "http://127.0.0.1:7701",
            value_name = "URL"
        )]
        ipam: String,
        /// Where the admin certificate is (`admin-admin.crt`, `admin-admin.key`, `ca.crt`, as
        /// `weft up` makes them): ipam-svc takes only callers with a certificate. Without these
        /// files, plaintext (an ipam-svc run with --insecure-plaintext).
        #[arg(
            long,
            env = "WEFT_TLS_DIR",
            default_value = "weft-data/pki",
            value_name = "DIR"
        )]
        tls_dir: std::path::PathBuf,
    },
}
