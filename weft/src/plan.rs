//! What `weft up` runs: the validated configuration and, from it, the four services in start
//! order with their flags, wired to each other on the default ports of the API contract.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use weft_identity::Kind;

use crate::{cli::UpArgs, error::UpError};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The gateway's public gRPC address.
pub const GATEWAY: &str = "127.0.0.1:7700";
/// The gateway's port, also of its TLS listener on a joinable host's advertised address.
pub const GATEWAY_PORT: u16 = 7700;
/// ipam-svc's gRPC address.
pub const IPAM: &str = "127.0.0.1:7701";
/// The driver-agent's gRPC address.
pub const AGENT: &str = "127.0.0.1:7702";
/// dns-svc's admin gRPC address.
pub const DNS: &str = "127.0.0.1:7703";
/// dns-svc's operator DNS listener (its own default, repeated here for the printed table).
pub const DNS_OPERATOR: &str = "127.0.0.1:5353";

/// Where each service serves Prometheus metrics (`/metrics`): on loopback, each its own port,
/// 10 above its gRPC port (on a joined host too: metrics are never on the advertised address).
pub const METRICS_GATEWAY: &str = "127.0.0.1:7710";
pub const METRICS_IPAM: &str = "127.0.0.1:7711";
pub const METRICS_AGENT: &str = "127.0.0.1:7712";
pub const METRICS_DNS: &str = "127.0.0.1:7713";

/// `args` (which start with `--listen ADDR`) with `--metrics-listen` after the listen address.
fn with_metrics(service: &str, args: Vec<String>) -> Vec<OsString> {
    let at = args.len().min(2);
    let mut args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    args.splice(
        at..at,
        [
            "--metrics-listen".into(),
            metrics_of(service).to_string().into(),
        ],
    );
    args
}

/// The metrics address of `service`.
fn metrics_of(service: &str) -> SocketAddr {
    let addr = match service {
        "gateway" => METRICS_GATEWAY,
        "ipam-svc" => METRICS_IPAM,
        "driver-agent" => METRICS_AGENT,
        _ => METRICS_DNS,
    };
    #[allow(clippy::expect_used)]
    addr.parse().expect("the metrics addresses are valid")
}

/// What `--start-timeout` and `--stop-timeout` may be.
const TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// A named network namespace the whole stack runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

/// The validated configuration of `weft up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Absolute, so that the printed table and the services agree whatever their cwd.
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub host_name: String,
    pub netns: Option<Netns>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    /// dns-svc's upstreams (`--upstream`); empty: the host's resolv.conf.
    pub dns_upstreams: Vec<String>,
    /// The user the unprivileged services run as (`--user`).
    pub user: String,
    /// Its ids, once looked up (or created): see [`crate::user`].
    pub run_as: Option<crate::user::Ids>,
    /// The stack's tokens, once made (see [`crate::tokens`]).
    pub tokens: Option<crate::tokens::StackTokens>,
    /// The stack's certificates, once made (see [`crate::pki`]): every service serves and
    /// calls with them.
    pub tls: Option<crate::pki::StackTls>,
    /// `--advertise`: on the first host, where the gateway's TLS listener is for joining hosts.
    pub advertise: Option<std::net::IpAddr>,
    /// `--join`: this host joins another's gateway and runs only its agent and dns-svc.
    pub join: Option<crate::joined::JoinTo>,
    /// A joined host's certificates, once there (see [`crate::joined`]).
    pub joined: Option<crate::joined::JoinedTls>,
    /// `--database-url` and `--ipam-database-url`: the gateway and ipam-svc on Postgres
    /// instead of their SQLite files in the data directory.
    pub postgres: Option<Postgres>,
}

/// The two Postgres databases of a stack on Postgres: one per service, since each migrates
/// its own schema (their migration histories would collide in one database).
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    pub gateway: String,
    pub ipam: String,
}

impl std::fmt::Debug for Postgres {
    // The URLs may hold passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("gateway", &redact_url(&self.gateway))
            .field("ipam", &redact_url(&self.ipam))
            .finish()
    }
}

/// The longest database URL taken.
const MAX_DATABASE_URL: usize = 2048;

impl Postgres {
    /// Checks the two URLs: Postgres ones, of bounded length, without control characters, and
    /// not the same database.
    fn check(gateway: String, ipam: String) -> Result<Self, UpError> {
        for (flag, url) in [("--database-url", &gateway), ("--ipam-database-url", &ipam)] {
            let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !scheme_ok {
                return Err(UpError::Invalid(format!(
                    "{flag} {}: expected a postgres:// URL (SQLite is the default: leave both \
                     database flags out)",
                    redact_url(url)
                )));
            }
            if url.len() > MAX_DATABASE_URL || url.chars().any(char::is_control) {
                return Err(UpError::Invalid(format!(
                    "{flag}: at most {MAX_DATABASE_URL} characters, none of them control \
                     characters"
                )));
            }
        }
        if gateway.trim_end_matches('/') == ipam.trim_end_matches('/') {
            return Err(UpError::Invalid(
                "--database-url and --ipam-database-url name the same database: give each \
                 service its own (their migrations would collide)"
                    .into(),
            ));
        }
        Ok(Self { gateway, ipam })
    }
}

/// A database URL as it may be shown: without the password, if it has one.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{user}:***@{host}")
        }
        None => authority.to_owned(),
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    format!("{scheme}://{host}/{path}")
}

impl UpConfig {
    /// Checks the flags and resolves the directories, without creating anything.
    pub fn from_args(args: UpArgs) -> Result<Self, UpError> {
        if args.host_name.trim().is_empty() {
            return Err(UpError::Invalid("--host-name must not be empty".into()));
        }
        // It names the agent's and dns-svc's certificates: refused now, before anything is made.
        crate::pki::identities(&args.host_name)?;
        for (flag, d) in [
            ("--start-timeout", args.start_timeout),
            ("--stop-timeout", args.stop_timeout),
        ] {
            if !(TIMEOUTS.contains(&d)) {
                return Err(UpError::Invalid(format!(
                    "{flag} {}: expected 1s to 1h",
                    humantime::format_duration(d)
                )));
            }
        }
        let netns = match args.netns {
            Some(name) => {
                let bad = name.is_empty() || name == "." || name == ".." || name.contains('/');
                if bad {
                    return Err(UpError::Invalid(format!(
                        "--netns {name:?}: expected the name of a namespace in {NETNS_DIR}"
                    )));
                }
                let path = Path::new(NETNS_DIR).join(&name);
                if !path.exists() {
                    return Err(UpError::NoNetns { name, path });
                }
                Some(Netns { name, path })
            }
            None => None,
        };
        let bin_dir = match args.bin_dir {
            Some(d) => d,
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_owned))
                .ok_or_else(|| {
                    UpError::Invalid("cannot tell where weft is: give --bin-dir".into())
                })?,
        };
        let join = match (&args.join, &args.join_token) {
            (Some(gateway), token) => Some(crate::joined::check(
                gateway,
                token.as_deref(),
                args.advertise,
                &args.host_name,
            )?),
            (None, Some(_)) => {
                return Err(UpError::Invalid(
                    "--join-token goes with --join GATEWAY_ADDR:7700".into(),
                ));
            }
            (None, None) => None,
        };
        let postgres = match (args.database_url, args.ipam_database_url) {
            (Some(gateway), Some(ipam)) => Some(Postgres::check(gateway, ipam)?),
            (None, None) => None,
            _ => {
                return Err(UpError::Invalid(
                    "--database-url and --ipam-database-url go together (the gateway's and \
                     ipam-svc's Postgres databases)"
                        .into(),
                ));
            }
        };
        if postgres.is_some() && join.is_some() {
            return Err(UpError::Invalid(
                "a joined host keeps no database: --database-url goes to the first host".into(),
            ));
        }
        let data_dir = std::path::absolute(&args.data_dir).map_err(|source| UpError::Dir {
            path: args.data_dir.clone(),
            source,
        })?;
        Ok(Self {
            data_dir,
            bin_dir,
            host_name: args.host_name,
            netns,
            start_timeout: args.start_timeout,
            stop_timeout: args.stop_timeout,
            dns_upstreams: args.dns_upstreams,
            user: args.user,
            run_as: None,
            tokens: None,
            tls: None,
            advertise: args.advertise,
            join,
            joined: None,
            postgres,
        })
    }

    /// The driver-agent's socket broker, where dns-svc gets its sockets inside sandboxes: in
    /// the data directory's `run/` (0700, the service user's), so that two stacks on one
    /// machine do not share it.
    pub fn broker_socket(&self) -> PathBuf {
        self.data_dir.join("run").join("agent-broker.sock")
    }

    /// Where the services' logs go.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The services in start order, each only needing those before it: all four, or on a
    /// joined host its agent and dns-svc.
    pub fn services(&self) -> Vec<Service> {
        match &self.join {
            Some(join) => self.joined_services(join),
            None => self.all_services(),
        }
    }

    /// The four services of a single (or first) host.
    fn all_services(&self) -> Vec<Service> {
        // With certificates the gateway dials TLS; it verifies each server's kind.
        let url = |addr: &str| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{addr}")
        };
        let sqlite = |file: &str| format!("sqlite://{}", self.data_dir.join(file).display());
        let host = self.host_name.as_str();
        let broker = self.broker_socket().display().to_string();
        let wiring = Wiring {
            agent: AGENT.into(),
            dns: DNS.into(),
            gateway: format!("http://{GATEWAY}"),
        };
        let agent = self.agent_args(&broker, &wiring);
        let dns = self.dns_args(broker, &wiring);
        let tls = |pick: fn(&crate::pki::StackTls) -> &weft_identity::TlsFiles| {
            self.tls.iter().flat_map(move |t| tls_flags(pick(t)))
        };
        let services = [
            (
                "ipam-svc",
                IPAM,
                vec!["--listen".into(), IPAM.into()]
                    .into_iter()
                    .chain(self.sqlite_flag(&sqlite("ipam.db")))
                    .chain(tls(|t| &t.ipam))
                    .collect(),
            ),
            (
                "gateway",
                GATEWAY,
                vec!["--listen".into(), GATEWAY.into()]
                    .into_iter()
                    .chain(self.sqlite_flag(&sqlite("gateway.db")))
                    .chain([
                        "--ipam".into(),
                        url(IPAM),
                        "--agent".into(),
                        url(AGENT),
                        "--host-name".into(),
                        host.into(),
                        // The same name across restarts: a gateway restarted by the supervisor
                        // takes its own lease back at once (and runs the sweep) instead of
                        // waiting for its previous process's lease to expire.
                        "--replica-id".into(),
                        host.into(),
                    ])
                    .chain(self.tokens.iter().flat_map(|t| {
                        [
                            "--admin-token-sha256".to_owned(),
                            t.admin_hash.clone(),
                            "--agent-token-sha256".to_owned(),
                            t.agent_hash.clone(),
                            "--dns-token-sha256".to_owned(),
                            t.dns_hash.clone(),
                        ]
                    }))
                    .chain(tls(|t| &t.gateway))
                    .chain(self.joinable_flags())
                    .collect(),
            ),
            ("driver-agent", AGENT, agent),
            ("dns-svc", DNS, dns),
        ];
        services
            .into_iter()
            .map(|(name, listen, args): (_, _, Vec<String>)| Service {
                name,
                metrics: metrics_of(name),
                // The agent alone programs the kernel and stays root.
                run_as: if name == "driver-agent" {
                    None
                } else {
                    self.run_as
                },
                binary: self.bin_dir.join(name),
                #[allow(clippy::expect_used)]
                listen: listen.parse().expect("the default addresses are valid"),
                args: with_metrics(name, args),
                env: self.database_env(name),
                log: self.log_dir().join(format!("{name}.log")),
                // The gateway's listener stays plaintext on loopback (it takes tokens); the
                // others serve TLS only, and answer health to a client without a certificate.
                health_tls: match (&self.tls, name) {
                    (_, "gateway") | (None, _) => None,
                    (Some(t), _) => Some(HealthTls {
                        ca: t.ca.clone(),
                        kind: match name {
                            "ipam-svc" => Kind::Ipam,
                            "driver-agent" => Kind::Agent,
                            _ => Kind::Dns,
                        },
                    }),
                },
            })
            .collect()
    }

    /// A joined host's two services, in start order: the agent, then dns-svc (which needs the
    /// agent's socket broker).
    pub(crate) fn joined_services(&self, join: &crate::joined::JoinTo) -> Vec<Service> {
        let gateway = format!("https://{}", join.gateway);
        let agent_at = std::net::SocketAddr::new(join.advertise, crate::joined::AGENT_PORT);
        let dns_at = std::net::SocketAddr::new(join.advertise, crate::joined::DNS_PORT);
        let broker = self.broker_socket().display().to_string();
        let tls = self.joined.as_ref();
        let wiring = Wiring {
            agent: agent_at.to_string(),
            dns: dns_at.to_string(),
            gateway,
        };
        let agent = self.agent_args(&broker, &wiring);
        let dns = self.dns_args(broker, &wiring);
        let service = |name: &'static str, listen, args: Vec<String>, kind| Service {
            name,
            binary: self.bin_dir.join(name),
            listen,
            metrics: metrics_of(name),
            args: with_metrics(name, args),
            env: Vec::new(),
            log: self.log_dir().join(format!("{name}.log")),
            run_as: if name == "driver-agent" {
                None
            } else {
                self.run_as
            },
            health_tls: tls.map(|t| HealthTls {
                ca: t.ca.clone(),
                kind,
            }),
        };
        vec![
            service("driver-agent", agent_at, agent, Kind::Agent),
            service("dns-svc", dns_at, dns, Kind::Dns),
        ]
    }

    /// `--database-url FILE_URL` for a service on its SQLite file; nothing on Postgres (its
    /// URL goes in the environment: see [`Self::database_env`]).
    fn sqlite_flag(&self, url: &str) -> Vec<String> {
        match self.postgres {
            Some(_) => Vec::new(),
            None => vec!["--database-url".into(), url.into()],
        }
    }

    /// The environment that gives the gateway or ipam-svc its Postgres URL: not on the command
    /// line, which every local user can read in /proc.
    fn database_env(&self, service: &str) -> Vec<(&'static str, String)> {
        match (&self.postgres, service) {
            (Some(p), "gateway") => vec![("WEFT_GATEWAY_DATABASE_URL", p.gateway.clone())],
            (Some(p), "ipam-svc") => vec![("WEFT_IPAM_DATABASE_URL", p.ipam.clone())],
            _ => Vec::new(),
        }
    }

    /// A joinable first host's gateway flags: its TLS listener on the advertised address, and
    /// the CA key to sign joining hosts' certificates with.
    fn joinable_flags(&self) -> Vec<String> {
        match (
            self.advertise,
            self.tls.as_ref().and_then(|t| t.ca_key.as_ref()),
        ) {
            (Some(addr), Some(key)) => vec![
                "--tls-listen".into(),
                SocketAddr::new(addr, GATEWAY_PORT).to_string(),
                "--tls-ca-key".into(),
                key.display().to_string(),
            ],
            _ => Vec::new(),
        }
    }

    /// The driver-agent's arguments; `broker` is its socket broker's path.
    fn agent_args(&self, broker: &str, at: &Wiring) -> Vec<String> {
        let mut agent = vec![
            "--listen".into(),
            at.agent.clone(),
            "--gateway".into(),
            at.gateway.clone(),
            "--host-name".into(),
            self.host_name.clone(),
            "--dns-address".into(),
            at.dns.clone(),
            "--data-dir".into(),
            self.data_dir.join("agent").display().to_string(),
        ];
        if let Some(ns) = &self.netns {
            agent.extend(["--netns".into(), ns.path.display().to_string()]);
        }
        if let Some(t) = &self.tokens {
            agent.extend([
                "--gateway-token-file".into(),
                t.agent_file.display().to_string(),
            ]);
        }
        if let Some(t) = &self.tls {
            agent.extend(tls_flags(&t.agent));
        }
        if let Some(t) = &self.joined {
            agent.extend(tls_flags(&t.agent));
        }
        agent.extend(["--broker-socket".into(), broker.to_owned()]);
        if let Some(ids) = self.run_as {
            agent.extend([
                "--broker-uid".into(),
                ids.uid.to_string(),
                "--broker-gid".into(),
                ids.gid.to_string(),
            ]);
        }
        agent
    }

    /// dns-svc's arguments; `broker` is the agent's socket broker's path.
    fn dns_args(&self, broker: String, at: &Wiring) -> Vec<String> {
        let mut dns: Vec<String> = vec![
            "--listen".into(),
            at.dns.clone(),
            "--gateway".into(),
            at.gateway.clone(),
            "--host".into(),
            self.host_name.clone(),
            "--operator-listen".into(),
            DNS_OPERATOR.into(),
            // dns-svc runs without privilege: its sockets inside sandboxes come from the agent.
            "--broker".into(),
            broker,
        ];
        for u in &self.dns_upstreams {
            dns.extend(["--upstream".into(), u.clone()]);
        }
        if let Some(t) = &self.tokens {
            dns.extend([
                "--gateway-token-file".into(),
                t.dns_file.display().to_string(),
            ]);
        }
        if let Some(t) = &self.tls {
            dns.extend(tls_flags(&t.dns));
        }
        if let Some(t) = &self.joined {
            dns.extend(tls_flags(&t.dns));
        }
        dns
    }

    /// The program and arguments that start `service`: through `nsenter --net` when the stack
    /// runs in a namespace (it enters the namespace and then execs the service in place, so
    /// the PID weft holds is the service's own).
    pub fn command_line(&self, service: &Service) -> (OsString, Vec<OsString>) {
        match &self.netns {
            None => (service.binary.clone().into(), service.args.clone()),
            Some(ns) => {
                // nsenter, not `ip netns exec`: that one also gives the process a mount namespace
                // of its own, and the namespaces the agent creates for sandboxes (bind mounts
                // under /run/netns) would be invisible to everyone else.
                let mut net = OsString::from("--net=");
                net.push(&ns.path);
                let mut args: Vec<OsString> = vec![net];
                // nsenter enters as root, then drops to the user (and its group only: nsenter
                // clears the supplementary groups) before it execs the service.
                if let Some(ids) = service.run_as {
                    args.extend([
                        "--setgid".into(),
                        ids.gid.to_string().into(),
                        "--setuid".into(),
                        ids.uid.to_string().into(),
                    ]);
                }
                args.extend(["--".into(), service.binary.clone().into()]);
                args.extend(service.args.iter().cloned());
                ("nsenter".into(), args)
            }
        }
    }
}

/// Where the agent and dns-svc listen and which gateway they call.
struct Wiring {
    agent: String,
    dns: String,
    /// `http://` (the loopback listener, with a token) or `https://` (the TLS listener, with
    /// the service's certificate).
    gateway: String,
}

/// The flags that give a service its certificate, key and CA.
pub(crate) fn tls_flags(files: &weft_identity::TlsFiles) -> [String; 6] {
    [
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--tls-ca".into(),
        files.ca.display().to_string(),
    ]
}

/// How a service's health is checked over TLS: trusting the stack's CA, expecting the
/// service's kind, presenting no certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTls {
    pub ca: PathBuf,
    pub kind: Kind,
}

/// One service `weft up` runs.
#[derive(Debug, Clone)]
pub struct Service {
    /// Also the binary's file name and the log's.
    pub name: &'static str,
    pub binary: PathBuf,
    /// Its gRPC address (health is checked there).
    pub listen: SocketAddr,
    /// Where it serves Prometheus metrics (`--metrics-listen`).
    pub metrics: SocketAddr,
    pub args: Vec<OsString>,
    /// Environment variables it gets besides weft's own (secrets: never on its command line).
    pub env: Vec<(&'static str, String)>,
    pub log: PathBuf,
    /// The user it runs as; `None`: root (the driver-agent).
    pub run_as: Option<crate::user::Ids>,
    /// Its health over TLS; `None`: plaintext.
    pub health_tls: Option<HealthTls>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(netns: Option<Netns>) -> UpConfig {
        UpConfig {
            data_dir: "/d".into(),
            bin_dir: "/b".into(),
            host_name: "h1".into(),
            netns,
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
            dns_upstreams: vec!["192.0.2.53".into()],
            user: "weft".into(),
            run_as: None,
            tokens: None,
            tls: None,
            advertise: None,
            join: None,
            joined: None,
            postgres: None,
        }
    }

    fn args(s: &Service) -> Vec<String> {
        s.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn services_start_in_dependency_order_on_the_contract_ports() {
        let s = config(None).services();
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, ["ipam-svc", "gateway", "driver-agent", "dns-svc"]);
        let ports: Vec<_> = s.iter().map(|s| s.listen.port()).collect();
        assert_eq!(ports, [7701, 7700, 7702, 7703]);
        assert_eq!(s[0].binary, Path::new("/b/ipam-svc"));
        assert_eq!(s[3].log, Path::new("/d/logs/dns-svc.log"));
    }

    #[test]
    fn each_service_serves_metrics_on_its_own_loopback_port() {
        let s = config(None).services();
        let metrics: Vec<_> = s.iter().map(|s| s.metrics.to_string()).collect();
        assert_eq!(
            metrics,
            [
                "127.0.0.1:7711",
                "127.0.0.1:7710",
                "127.0.0.1:7712",
                "127.0.0.1:7713"
            ]
        );
        for svc in &s {
            let a = args(svc);
            let at = a.iter().position(|x| x == "--metrics-listen").unwrap();
            assert_eq!(a[at + 1], svc.metrics.to_string(), "{}", svc.name);
            assert!(s.iter().all(|o| o.listen.port() != svc.metrics.port()));
        }
    }

    #[test]
    fn services_are_wired_to_each_other_and_the_data_dir() {
        let s = config(None).services();
        let joined = |i: usize| args(&s[i]).join(" ");
        assert!(joined(0).contains("--database-url sqlite:///d/ipam.db"));
        assert!(joined(1).contains(
            "--database-url sqlite:///d/gateway.db --ipam http://127.0.0.1:7701 \
             --agent http://127.0.0.1:7702 --host-name h1"
        ));
        assert!(
            joined(2).contains("--gateway http://127.0.0.1:7700 --host-name h1"),
            "{}",
            joined(2)
        );
        assert!(joined(2).contains("--data-dir /d/agent"));
        assert!(!joined(2).contains("--netns"));
        assert!(joined(3).contains("--gateway http://127.0.0.1:7700 --host h1"));
        assert!(
            joined(3).ends_with("--upstream 192.0.2.53"),
            "{}",
            joined(3)
        );
    }

    #[test]
    fn in_a_namespace_the_agent_manages_it_and_every_service_runs_in_it() {
        let c = config(Some(Netns {
            name: "n1".into(),
            path: "/run/netns/n1".into(),
        }));
        let s = c.services();
        assert!(args(&s[2]).join(" ").contains("--netns /run/netns/n1 "));
        for service in &s {
            let (program, a) = c.command_line(service);
            assert_eq!(program, "nsenter");
            let want: [&std::ffi::OsStr; 3] = [
                "--net=/run/netns/n1".as_ref(),
                "--".as_ref(),
                service.binary.as_os_str(),
            ];
            assert_eq!(a[..3], want);
        }
        let (program, _) = config(None).command_line(&s[0]);
        assert_eq!(program, "/b/ipam-svc");
    }

    #[test]
    fn only_the_agent_runs_as_root_and_dns_svc_takes_its_sockets_from_the_agent() {
        let mut c = config(Some(Netns {
            name: "n1".into(),
            path: "/run/netns/n1".into(),
        }));
        c.run_as = Some(crate::user::Ids { uid: 999, gid: 995 });
        let s = c.services();
        for service in &s {
            let (_, a) = c.command_line(service);
            let a: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
            if service.name == "driver-agent" {
                assert_eq!(service.run_as, None);
                assert!(!a.iter().any(|x| x.starts_with("--setuid")), "{a:?}");
            } else {
                assert_eq!(
                    a[..6],
                    [
                        "--net=/run/netns/n1",
                        "--setgid",
                        "995",
                        "--setuid",
                        "999",
                        "--"
                    ],
                    "{}",
                    service.name
                );
            }
        }
        assert!(args(&s[2]).join(" ").contains(
            "--broker-socket /d/run/agent-broker.sock --broker-uid 999 --broker-gid 995"
        ));
        assert!(
            args(&s[3])
                .join(" ")
                .contains("--broker /d/run/agent-broker.sock")
        );
    }

    #[test]
    fn with_certificates_every_service_gets_its_own_and_health_is_checked_over_tls() {
        let files = |dir: &str, name: &str| weft_identity::TlsFiles {
            cert: format!("{dir}/{name}.crt").into(),
            key: format!("{dir}/{name}.key").into(),
            ca: format!("{dir}/ca.crt").into(),
        };
        let mut c = config(None);
        c.tls = Some(crate::pki::StackTls {
            ca: "/d/pki/ca.crt".into(),
            gateway: files("/d/run/tls", "gateway-gateway"),
            ipam: files("/d/run/tls", "ipam-ipam"),
            agent: files("/d/pki", "agent-h1"),
            dns: files("/d/run/tls", "dns-h1"),
            admin: files("/d/pki", "admin-admin"),
            ca_key: None,
        });
        let s = c.services();
        let joined = |i: usize| args(&s[i]).join(" ");
        let flags = |f: &weft_identity::TlsFiles| {
            format!(
                "--tls-cert {} --tls-key {} --tls-ca {}",
                f.cert.display(),
                f.key.display(),
                f.ca.display()
            )
        };
        let t = c.tls.as_ref().unwrap();
        for (i, f) in [(0, &t.ipam), (1, &t.gateway), (2, &t.agent), (3, &t.dns)] {
            assert!(joined(i).contains(&flags(f)), "{}", joined(i));
        }
        assert!(
            joined(1).contains("--ipam https://127.0.0.1:7701 --agent https://127.0.0.1:7702"),
            "{}",
            joined(1)
        );
        // The gateway's own listener stays plaintext on loopback; the rest are checked over TLS.
        let kinds: Vec<_> = s
            .iter()
            .map(|s| s.health_tls.as_ref().map(|h| h.kind))
            .collect();
        assert_eq!(
            kinds,
            [Some(Kind::Ipam), None, Some(Kind::Agent), Some(Kind::Dns)]
        );
        assert!(!joined(0).contains("pki/ca.key") && !joined(1).contains("ca.key"));
    }

    /// `weft up`'s flags as a test starts from: host `h`, nothing optional given.
    fn up_args() -> UpArgs {
        UpArgs {
            data_dir: "d".into(),
            bin_dir: Some("/b".into()),
            host_name: "h".into(),
            netns: None,
            dns_upstreams: Vec::new(),
            user: "weft".into(),
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
            advertise: None,
            join: None,
            join_token: None,
            database_url: None,
            ipam_database_url: None,
        }
    }

    #[test]
    fn bad_flags_are_refused_before_anything_starts() {
        let up = |host: &str, netns: Option<&str>| UpArgs {
            host_name: host.into(),
            netns: netns.map(Into::into),
            ..up_args()
        };
        assert!(UpConfig::from_args(up("", None)).is_err());
        let e = UpConfig::from_args(up("My_Host", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--host-name") && e.contains("My_Host"), "{e}");
        assert!(UpConfig::from_args(up("h", Some("../x"))).is_err());
        for (flag, bad) in [
            (
                "--start-timeout",
                UpArgs {
                    start_timeout: Duration::ZERO,
                    ..up("h", None)
                },
            ),
            (
                "--stop-timeout",
                UpArgs {
                    stop_timeout: Duration::from_secs(3601),
                    ..up("h", None)
                },
            ),
        ] {
            let e = UpConfig::from_args(bad).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains("expected 1s to 1h"), "{e}");
        }
        let missing = UpConfig::from_args(up("h", Some("wft-surely-not-there-42"))).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("/run/netns/wft-surely-not-there-42")
        );
        let ok = UpConfig::from_args(up("h", None)).unwrap();
        assert!(ok.data_dir.is_absolute());

        // --join: with a token of the right shape, an address and a name of its own.
        let token = format!("weftjoin_{}.{}", "a".repeat(64), "b".repeat(64));
        let join = |host: &str, token: Option<&str>, advertise: Option<&str>| UpArgs {
            join: Some("192.0.2.1:7700".into()),
            join_token: token.map(Into::into),
            advertise: advertise.map(|a| a.parse().unwrap()),
            ..up(host, None)
        };
        let refused = |a: UpArgs, says: &str| {
            let e = UpConfig::from_args(a).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        refused(join("b", Some(&token), None), "--advertise");
        refused(
            join("local", Some(&token), Some("192.0.2.2")),
            "--host-name",
        );
        refused(
            join("b", Some("weft_abc"), Some("192.0.2.2")),
            "not a join token",
        );
        refused(
            UpArgs {
                join_token: Some(token.clone()),
                ..up("b", None)
            },
            "goes with --join",
        );
        let ok = UpConfig::from_args(join("b", Some(&token), Some("192.0.2.2"))).unwrap();
        assert!(
            !format!("{ok:?}").contains(&"a".repeat(64)),
            "the token is never shown"
        );
    }

    #[test]
    fn on_postgres_the_urls_go_in_the_environment_and_are_checked() {
        let up = |gateway: &str, ipam: &str| UpArgs {
            database_url: Some(gateway.into()),
            ipam_database_url: Some(ipam.into()),
            ..up_args()
        };
        let g = "postgres://weft:s3cret@db.example:5432/weft_gateway";
        let i = "postgres://weft:s3cret@db.example:5432/weft_ipam";
        let c = UpConfig::from_args(up(g, i)).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"), "never shown");
        let s = c.services();
        for (n, var, url) in [
            (0, "WEFT_IPAM_DATABASE_URL", i),
            (1, "WEFT_GATEWAY_DATABASE_URL", g),
        ] {
            assert_eq!(s[n].env, [(var, url.to_owned())]);
            let line = args(&s[n]).join(" ");
            assert!(
                !line.contains("--database-url") && !line.contains("s3cret"),
                "{line}"
            );
        }
        assert!(s[2].env.is_empty() && s[3].env.is_empty());
        assert_eq!(
            redact_url(g),
            "postgres://weft:***@db.example:5432/weft_gateway"
        );
        assert_eq!(
            redact_url("postgres://h/db?sslmode=require"),
            "postgres://h/db"
        );

        let refused = |a: UpArgs, says: &str| {
            let e = UpConfig::from_args(a).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        };
        refused(up(g, g), "the same database");
        refused(up("sqlite:///tmp/x.db", i), "postgres://");
        refused(up(&format!("{g}\n"), i), "control");
        refused(up(&format!("{g}{}", "x".repeat(3000)), i), "2048");
        refused(
            UpArgs {
                ipam_database_url: None,
                ..up(g, i)
            },
            "go together",
        );
        let token = format!("weftjoin_{}.{}", "a".repeat(64), "b".repeat(64));
        refused(
            UpArgs {
                join: Some("192.0.2.1:7700".into()),
                join_token: Some(token),
                advertise: Some("192.0.2.2".parse().unwrap()),
                ..up(g, i)
            },
            "joined host keeps no database",
        );
    }

    #[test]
    fn a_joined_host_runs_its_agent_and_dns_on_its_address_against_the_gateway() {
        let mut c = config(None);
        c.join = Some(crate::joined::JoinTo {
            gateway: "192.0.2.1:7700".parse().unwrap(),
            server_name: None,
            token: None,
            advertise: "192.0.2.2".parse().unwrap(),
        });
        let s = c.services();
        let names: Vec<&str> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, ["driver-agent", "dns-svc"]);
        assert_eq!(s[0].listen.to_string(), "192.0.2.2:7702");
        assert_eq!(s[1].listen.to_string(), "192.0.2.2:7703");
        let agent = args(&s[0]).join(" ");
        assert!(
            agent.contains("--gateway https://192.0.2.1:7700"),
            "{agent}"
        );
        assert!(agent.contains("--dns-address 192.0.2.2:7703"), "{agent}");
        assert!(!agent.contains("token"), "{agent}");
        assert!(
            args(&s[1])
                .join(" ")
                .contains("--gateway https://192.0.2.1:7700")
        );
    }

    #[test]
    fn a_joinable_first_host_gives_the_gateway_a_tls_listener_and_the_ca_key() {
        let mut c = config(None);
        c.advertise = Some("192.0.2.1".parse().unwrap());
        let files = |name: &str| weft_identity::TlsFiles {
            cert: format!("/t/{name}.crt").into(),
            key: format!("/t/{name}.key").into(),
            ca: "/t/ca.crt".into(),
        };
        c.tls = Some(crate::pki::StackTls {
            ca: "/d/pki/ca.crt".into(),
            gateway: files("g"),
            ipam: files("i"),
            agent: files("a"),
            dns: files("d"),
            admin: files("x"),
            ca_key: Some("/t/ca.key".into()),
        });
        let gateway = args(&c.services()[1]).join(" ");
        assert!(
            gateway.contains("--tls-listen 192.0.2.1:7700 --tls-ca-key /t/ca.key"),
            "{gateway}"
        );
    }
}
