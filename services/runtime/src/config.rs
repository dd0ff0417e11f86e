//! Flags shared by every service. Each has an environment variable, so Helm sets env vars and
//! developers pass flags; nothing else in a service reads the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::transport::Transport;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The flags every Weft service takes (`#[command(flatten)]` them into the service's own).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Log format.
    #[arg(long, env = "WEFT_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` directive syntax (for example `info,ipam_svc=debug`).
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log_filter: String,

    /// Export traces over OTLP/gRPC to this endpoint (for example `http://127.0.0.1:4317`).
    #[arg(long, env = "WEFT_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Serve Prometheus metrics (text format) at http://ADDR/metrics, for example
    /// `127.0.0.1:9464` or, in a pod, `0.0.0.0:9464`. Off unless given. The port is the
    /// scraper's to know: 0 is refused, and so is a multicast or broadcast address.
    #[arg(long, env = "WEFT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// After a shutdown signal, keep serving this long with health NOT_SERVING so that load
    /// balancers stop sending new calls (for example `5s`).
    #[arg(long, env = "WEFT_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Then wait at most this long for in-flight calls to finish.
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// This service's certificate (PEM, with the URI SAN `spiffe://weft/<kind>/<name>`): with
    /// --tls-key and --tls-ca, the service serves mutual TLS and calls other services with it.
    /// Replaced files are picked up by new connections.
    #[arg(long, env = "WEFT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "WEFT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// The cluster's CA certificate (PEM): peers must chain to it.
    #[arg(long, env = "WEFT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Serve plaintext, without TLS and without an access table, where TLS would be required
    /// (tests and development only: anyone who reaches the port may call every method).
    #[arg(long, env = "WEFT_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

/// A problem with the shared flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid --log-filter {value:?}: {reason}")]
    LogFilter { value: String, reason: String },
    #[error("invalid --otlp-endpoint {value:?}: it must start with http:// or https://")]
    OtlpEndpoint { value: String },
    #[error(
        "invalid --metrics-listen {addr}: expected a unicast address and a fixed port (not 0) that scrapers are told"
    )]
    MetricsListen { addr: SocketAddr },
    #[error("--tls-cert, --tls-key and --tls-ca go together: {missing} missing")]
    TlsIncomplete { missing: String },
    #[error(
        "this service serves only mutual TLS: give --tls-cert, --tls-key and --tls-ca (or --insecure-plaintext, for tests and development only)"
    )]
    TlsRequired,
    #[error(
        "--insecure-plaintext and --tls-cert/--tls-key/--tls-ca exclude each other: this service serves one or the other"
    )]
    TlsAndPlaintext,
    #[error(
        "--listen {addr} is not a loopback address: serving plaintext there needs --insecure-plaintext (tests and development only; tokens would cross the network in the clear)"
    )]
    PlaintextOffLoopback { addr: SocketAddr },
}

impl CommonArgs {
    /// Checks the flags that clap cannot check by itself.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log_filter).map_err(|e| {
            ConfigError::LogFilter {
                value: self.log_filter.clone(),
                reason: e.to_string(),
            }
        })?;
        if let Some(ep) = &self.otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(ConfigError::OtlpEndpoint { value: ep.clone() });
        }
        if let Some(addr) = self.metrics_listen {
            let multi = match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.is_multicast() || ip.is_broadcast(),
                std::net::IpAddr::V6(ip) => ip.is_multicast(),
            };
            if multi || addr.port() == 0 {
                return Err(ConfigError::MetricsListen { addr });
            }
        }
        self.tls_files()?;
        Ok(())
    }

    /// This service's TLS files, if the flags give them: all three or none.
    pub fn tls_files(&self) -> Result<Option<weft_identity::TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(weft_identity::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                    (ca.is_none(), "--tls-ca"),
                ]
                .into_iter()
                .filter_map(|(gone, flag)| gone.then_some(flag))
                .collect();
                Err(ConfigError::TlsIncomplete {
                    missing: missing.join(" and "),
                })
            }
        }
    }

    /// How an internal service (ipam-svc, driver-agent, dns-svc) serves: mutual TLS with the
    /// files given, or plaintext only when --insecure-plaintext says so. Anything else refuses
    /// to start.
    pub fn internal_transport(&self) -> Result<Transport, ConfigError> {
        match (self.tls_files()?, self.insecure_plaintext) {
            (Some(_), true) => Err(ConfigError::TlsAndPlaintext),
            (Some(files), false) => Ok(Transport::Tls(files)),
            (None, true) => Ok(Transport::Plaintext),
            (None, false) => Err(ConfigError::TlsRequired),
        }
    }

    /// A plaintext listener (the gateway's public one, which takes tokens) may be on a loopback
    /// address; anywhere else it needs --insecure-plaintext.
    pub fn check_plaintext_listen(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        if addr.ip().is_loopback() || self.insecure_plaintext {
            Ok(())
        } else {
            Err(ConfigError::PlaintextOffLoopback { addr })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults_are_valid() {
        let args = Args::try_parse_from(["x"]).unwrap();
        args.common.validate().unwrap();
        assert_eq!(args.common.log_format, LogFormat::Plain);
        assert_eq!(args.common.shutdown_grace, Duration::from_secs(20));
    }

    #[test]
    fn durations_and_formats_parse() {
        let args =
            Args::try_parse_from(["x", "--log-format", "json", "--shutdown-delay", "1500ms"])
                .unwrap();
        assert_eq!(args.common.log_format, LogFormat::Json);
        assert_eq!(args.common.shutdown_delay, Duration::from_millis(1500));
        assert!(Args::try_parse_from(["x", "--shutdown-delay", "soon"]).is_err());
    }

    #[test]
    fn internal_services_need_tls_or_the_named_plaintext_flag() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["x"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().common
        };
        let e = parse(&[]).internal_transport().unwrap_err().to_string();
        assert!(
            e.contains("--insecure-plaintext") && e.contains("--tls-cert"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        assert_eq!(
            parse(&["--insecure-plaintext"])
                .internal_transport()
                .unwrap(),
            Transport::Plaintext
        );
        let tls = ["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
        assert!(matches!(
            parse(&tls).internal_transport().unwrap(),
            Transport::Tls(f) if f.cert == std::path::Path::new("c")
        ));
        let mut both = tls.to_vec();
        both.push("--insecure-plaintext");
        assert!(matches!(
            parse(&both).internal_transport(),
            Err(ConfigError::TlsAndPlaintext)
        ));
        let e = parse(&["--tls-cert", "c"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-key and --tls-ca missing"), "{e}");
    }

    #[test]
    fn a_plaintext_listener_off_loopback_needs_the_named_flag() {
        let plain = Args::try_parse_from(["x"]).unwrap().common;
        for ok in ["127.0.0.1:7700", "[::1]:7700", "127.0.0.2:1"] {
            plain.check_plaintext_listen(ok.parse().unwrap()).unwrap();
        }
        let e = plain
            .check_plaintext_listen("192.0.2.1:7700".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--insecure-plaintext") && e.contains("192.0.2.1:7700"),
            "{e}"
        );
        let e = plain
            .check_plaintext_listen("0.0.0.0:7700".parse().unwrap())
            .unwrap_err();
        assert!(matches!(e, ConfigError::PlaintextOffLoopback { .. }));
        let insecure = Args::try_parse_from(["x", "--insecure-plaintext"])
            .unwrap()
            .common;
        insecure
            .check_plaintext_listen("0.0.0.0:7700".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn the_metrics_address_is_off_by_default_and_checked() {
        let parse = |v: &str| Args::try_parse_from(["x", "--metrics-listen", v]);
        assert_eq!(
            Args::try_parse_from(["x"]).unwrap().common.metrics_listen,
            None
        );
        for ok in ["127.0.0.1:9464", "0.0.0.0:9464", "[::1]:9464"] {
            parse(ok).unwrap().common.validate().unwrap();
        }
        for bad in [
            "127.0.0.1:0",
            "224.0.0.1:9464",
            "255.255.255.255:9464",
            "[ff02::1]:9464",
        ] {
            let e = parse(bad).unwrap().common.validate().unwrap_err();
            assert!(matches!(e, ConfigError::MetricsListen { .. }), "{bad}: {e}");
        }
        for junk in [
            "9464",
            "localhost:9464",
            "127.0.0.1:99999",
            "127.0.0.1:9464\n",
        ] {
            assert!(parse(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn bad_filter_and_endpoint_are_refused() {
        let args = Args::try_parse_from(["x", "--log-filter", "info,[[["]).unwrap();
        assert!(matches!(
            args.common.validate(),
            Err(ConfigError::LogFilter { .. })
        ));
        let args = Args::try_parse_from(["x", "--otlp-endpoint", "127.0.0.1:4317"]).unwrap();
        assert!(matches!(
            args.common.validate(),
            Err(ConfigError::OtlpEndpoint { .. })
        ));
    }
}
