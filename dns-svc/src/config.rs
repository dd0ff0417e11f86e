//! dns-svc's flags, parsed once into a validated [`Config`].

use std::{net::SocketAddr, time::Duration};

use weft_runtime::{CommonArgs, Transport};

use crate::{
    forward::{MAX_UPSTREAMS, parse_upstream},
    listen::TcpLimits,
};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dns-svc",
    version,
    about = "Weft's DNS: container names per network, answered inside every sandbox of this host"
)]
pub struct Args {
    /// gRPC (admin API) listen address.
    #[arg(long, env = "WEFT_DNS_LISTEN", default_value = "127.0.0.1:7703")]
    pub listen: SocketAddr,

    /// The gateway whose event stream the records come from.
    #[arg(
        long,
        env = "WEFT_DNS_GATEWAY",
        default_value = "http://127.0.0.1:7700"
    )]
    pub gateway: String,

    /// The file holding the token dns-svc presents to the gateway (role dns): a 0600 regular
    /// file, as `weft up` writes it.
    #[arg(long, env = "WEFT_DNS_GATEWAY_TOKEN_FILE")]
    pub gateway_token_file: Option<std::path::PathBuf>,

    /// This host's name, as the gateway knows it: sandboxes of this host get a listener.
    /// Default: the machine's hostname.
    #[arg(long, env = "WEFT_DNS_HOST")]
    pub host: Option<String>,

    /// The operator listener (UDP and TCP), answering `<name>.<network>.<zone>` for the
    /// networks this host has an endpoint on (what dns-svc holds; NXDOMAIN for the others).
    #[arg(
        long,
        env = "WEFT_DNS_OPERATOR_LISTEN",
        default_value = "127.0.0.1:5353"
    )]
    pub operator_listen: SocketAddr,

    /// The operator listener's zone.
    #[arg(long, env = "WEFT_DNS_ZONE", default_value = "weft.")]
    pub zone: String,

    /// Where sandbox listeners bind inside each sandbox's namespace (Docker's convention).
    #[arg(long, env = "WEFT_DNS_SANDBOX_LISTEN", default_value = "127.0.0.11:53")]
    pub sandbox_listen: SocketAddr,

    /// The host's upstream resolvers ("ip" or "ip:port", at most 3), used for sandboxes whose
    /// sandbox and networks name none. Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "upstream", env = "WEFT_DNS_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,

    /// The host's resolv.conf, read for upstreams (and watched for changes) when no --upstream
    /// is given. Besides plain addresses, its nameserver lines may say "ip:port".
    #[arg(long, env = "WEFT_DNS_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,

    /// Time allowed to each upstream try.
    #[arg(long, env = "WEFT_DNS_UPSTREAM_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Idle TCP connections from clients are closed after this long.
    #[arg(long, env = "WEFT_DNS_TCP_IDLE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tcp_idle_timeout: Duration,

    /// TCP connections one client address may hold open at once, per listener; more are closed
    /// at once.
    #[arg(long, env = "WEFT_DNS_TCP_MAX_PER_CLIENT", default_value_t = 16)]
    pub tcp_max_per_client: usize,

    /// The most a UDP answer may take, in bytes, whatever EDNS size the client asks for
    /// (512 to 65535): bigger answers are truncated (TC set) and the client asks again over
    /// TCP. 1232 (DNS Flag Day 2020) fits any path without IP fragmentation.
    #[arg(long, env = "WEFT_DNS_UDP_MAX_PAYLOAD", default_value_t = crate::wire::DEFAULT_UDP_MAX)]
    pub udp_max_payload: u16,

    /// The driver-agent's socket broker: sandbox listeners and the sockets that forward to a
    /// sandbox's own DNS servers are made by the agent inside the sandbox's namespace and
    /// handed over, so dns-svc needs no privilege (what `weft up` runs). Without it, dns-svc
    /// enters namespaces itself, which needs root: for development only.
    #[arg(long, env = "WEFT_DNS_BROKER")]
    pub broker: Option<std::path::PathBuf>,

    /// Threads that serve DNS (each a single-threaded event loop; sandbox listeners are spread
    /// over them, the operator listener has a UDP socket on each). One serves about 100,000
    /// queries a second (bench/dns.sh).
    #[arg(long, env = "WEFT_DNS_THREADS", default_value_t = 1)]
    pub dns_threads: usize,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub gateway: String,
    /// Credentials at the gateway.
    pub gateway_bearer: weft_runtime::access::Bearer,
    pub host: String,
    pub operator_listen: SocketAddr,
    pub zone: String,
    pub sandbox_listen: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    /// Where the host upstreams come from when not given as flags: re-read when it changes.
    pub resolv_conf: Option<std::path::PathBuf>,
    pub upstream_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_per_client: usize,
    pub dns_threads: usize,
    pub udp_max_payload: u16,
    pub broker: Option<std::path::PathBuf>,
    /// The admin API's transport: mutual TLS (`--tls-*`), or plaintext with
    /// `--insecure-plaintext`.
    pub transport: Transport,
    pub common: CommonArgs,
}

impl Config {
    /// Where sockets inside sandbox namespaces come from.
    pub fn sockets(&self) -> crate::sockets::SocketSource {
        match &self.broker {
            Some(p) => crate::sockets::SocketSource::Broker(p.clone()),
            None => crate::sockets::SocketSource::Setns,
        }
    }

    /// The limits every listener's TCP side gets.
    pub fn tcp_limits(&self) -> TcpLimits {
        TcpLimits {
            idle: self.tcp_idle_timeout,
            per_client: self.tcp_max_per_client,
        }
    }
}

/// The host upstreams in a resolv.conf text: at most three, never dns-svc's own addresses
/// (those are skipped with a warning: the file is not ours to refuse).
pub fn host_upstreams(text: &str, own: &[SocketAddr]) -> Vec<SocketAddr> {
    resolv_conf_nameservers(text)
        .iter()
        .filter_map(|s| {
            let a = parse_upstream(s);
            if a.is_none_or(|a| own.contains(&a)) {
                tracing::warn!(nameserver = %s, "ignoring resolv.conf nameserver");
                return None;
            }
            a
        })
        .take(MAX_UPSTREAMS)
        .collect()
}

/// hickory-server logs every query and response at INFO; at DNS rates that floods the log and
/// costs more than answering. Unless the operator's filter already says something about hickory,
/// its logs are kept to warnings.
pub fn quiet_per_query_logs(common: &mut CommonArgs) {
    if !common.log_filter.contains("hickory") {
        common
            .log_filter
            .push_str(",hickory_server=warn,hickory_net=warn");
    }
}

/// The `nameserver` lines of a resolv.conf.
pub fn resolv_conf_nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next().map(str::to_owned))?
        })
        .collect()
}

impl TryFrom<Args> for Config {
    type Error = String;

    fn try_from(a: Args) -> Result<Self, String> {
        a.common.validate().map_err(|e| e.to_string())?;
        let transport = a.common.internal_transport().map_err(|e| e.to_string())?;
        if !(a.gateway.starts_with("http://") || a.gateway.starts_with("https://")) {
            return Err(format!(
                "--gateway {:?}: it must start with http:// or https://",
                a.gateway
            ));
        }
        let host = match a.host {
            Some(h) if !h.is_empty() => h,
            _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .map_err(|e| format!("--host not given and the hostname is unreadable: {e}"))?,
        };
        let own = [a.operator_listen, a.sandbox_listen];
        let (mut upstreams, resolv_conf) = if a.upstreams.is_empty() {
            let text = std::fs::read_to_string(&a.resolv_conf).unwrap_or_default();
            (host_upstreams(&text, &own), Some(a.resolv_conf))
        } else {
            (Vec::new(), None)
        };
        for u in &a.upstreams {
            let addr = parse_upstream(u)
                .ok_or_else(|| format!("--upstream {u:?}: not an ip or ip:port"))?;
            // Forwarding to ourselves would loop until every try times out.
            if own.contains(&addr) {
                return Err(format!("--upstream {u:?}: that is dns-svc itself"));
            }
            upstreams.push(addr);
        }
        if upstreams.len() > MAX_UPSTREAMS {
            return Err(format!("--upstream: at most {MAX_UPSTREAMS} upstreams"));
        }
        if let Some(b) = &a.broker
            && !b.is_absolute()
        {
            return Err(format!("--broker {}: an absolute path", b.display()));
        }
        if a.udp_max_payload < crate::wire::MIN_UDP_MAX {
            return Err(format!(
                "--udp-max-payload {}: at least {} (every client takes 512-byte answers)",
                a.udp_max_payload,
                crate::wire::MIN_UDP_MAX
            ));
        }
        if a.tcp_idle_timeout.is_zero() {
            return Err("--tcp-idle-timeout must be more than 0".into());
        }
        if a.tcp_max_per_client == 0 {
            return Err("--tcp-max-per-client must be at least 1".into());
        }
        if !(1..=64).contains(&a.dns_threads) {
            return Err("--dns-threads must be from 1 to 64".into());
        }
        let zone = a.zone.trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty() {
            return Err("--zone must not be the root".into());
        }
        let gateway_bearer = match &a.gateway_token_file {
            Some(path) => {
                weft_runtime::access::Bearer::from_file(path).map_err(|e| e.to_string())?
            }
            None => weft_runtime::access::Bearer::none(),
        };
        Ok(Self {
            listen: a.listen,
            gateway: a.gateway,
            gateway_bearer,
            host,
            operator_listen: a.operator_listen,
            zone,
            sandbox_listen: a.sandbox_listen,
            upstreams,
            resolv_conf,
            upstream_timeout: a.upstream_timeout,
            tcp_idle_timeout: a.tcp_idle_timeout,
            tcp_max_per_client: a.tcp_max_per_client,
            dns_threads: a.dns_threads,
            udp_max_payload: a.udp_max_payload,
            broker: a.broker,
            transport,
            common: a.common,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut args = args.to_vec();
        args.push("--insecure-plaintext");
        Config::try_from(Args::try_parse_from(args).unwrap())
    }

    #[test]
    fn without_tls_or_the_plaintext_flag_it_refuses_to_start() {
        let a = Args::try_parse_from(["dns-svc", "--host", "h1", "--upstream", "127.0.0.53"]);
        let e = Config::try_from(a.unwrap()).unwrap_err();
        assert!(
            e.contains("--insecure-plaintext") && e.contains("--tls-cert"),
            "{e}"
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = parse(&["dns-svc", "--host", "h1", "--upstream", "127.0.0.53"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7703");
        assert_eq!(c.operator_listen.to_string(), "127.0.0.1:5353");
        assert_eq!(c.sandbox_listen.to_string(), "127.0.0.11:53");
        assert_eq!(c.zone, "weft");
        assert_eq!(c.upstreams, ["127.0.0.53:53".parse().unwrap()]);
        assert_eq!(c.udp_max_payload, 1232);
    }

    #[test]
    fn a_udp_cap_below_512_is_refused() {
        let e = parse(&["dns-svc", "--host", "h", "--udp-max-payload", "511"]).unwrap_err();
        assert!(e.contains("--udp-max-payload 511"), "{e}");
        let c = parse(&["dns-svc", "--host", "h", "--udp-max-payload", "4096"]).unwrap();
        assert_eq!(c.udp_max_payload, 4096);
    }

    #[test]
    fn an_upstream_that_is_dns_svc_itself_is_refused() {
        let e = parse(&["dns-svc", "--host", "h", "--upstream", "127.0.0.1:5353"]).unwrap_err();
        assert!(e.contains("dns-svc itself"), "{e}");
    }

    #[test]
    fn more_than_three_upstreams_are_refused() {
        assert!(
            parse(&[
                "dns-svc",
                "--host",
                "h",
                "--upstream",
                "1.1.1.1,1.0.0.1,9.9.9.9,8.8.8.8"
            ])
            .is_err()
        );
    }

    #[test]
    fn hickory_per_query_logs_are_quiet_unless_asked_for() {
        let mut a = Args::try_parse_from(["dns-svc"]).unwrap();
        quiet_per_query_logs(&mut a.common);
        assert_eq!(
            a.common.log_filter,
            "info,hickory_server=warn,hickory_net=warn"
        );
        a.common.validate().unwrap();
        let mut a =
            Args::try_parse_from(["dns-svc", "--log-filter", "hickory_server=debug"]).unwrap();
        quiet_per_query_logs(&mut a.common);
        assert_eq!(a.common.log_filter, "hickory_server=debug");
    }

    #[test]
    fn resolv_conf_upstreams_skip_dns_svc_itself_and_keep_three() {
        let own = ["127.0.0.11:53".parse().unwrap()];
        let t = "nameserver 127.0.0.11\nnameserver 10.0.0.1\nnameserver x\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        let got: Vec<String> = host_upstreams(t, &own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"]);
    }

    #[test]
    fn resolv_conf_nameservers_are_read() {
        let t = "# c\nsearch x\nnameserver 10.0.0.2\nnameserver  fd00::1 \noptions ndots:2\n";
        assert_eq!(resolv_conf_nameservers(t), ["10.0.0.2", "fd00::1"]);
    }
}
