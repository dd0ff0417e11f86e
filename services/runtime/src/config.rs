//! Flags shared by every service. Each has an environment variable, so Helm sets env vars and
//! developers pass flags; nothing else in a service reads the environment.

use std::time::Duration;

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

    /// After a shutdown signal, keep serving this long with health NOT_SERVING so that load
    /// balancers stop sending new calls (for example `5s`).
    #[arg(long, env = "WEFT_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Then wait at most this long for in-flight calls to finish.
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// A problem with the shared flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid --log-filter {value:?}: {reason}")]
    LogFilter { value: String, reason: String },
    #[error("invalid --otlp-endpoint {value:?}: it must start with http:// or https://")]
    OtlpEndpoint { value: String },
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
        Ok(())
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
