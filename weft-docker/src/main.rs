//! `weft-docker-plugin`: serves Docker's plugin protocol on a unix socket until SIGINT or
//! SIGTERM, then removes the socket.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use weft_docker::plugin::{Driver, Plugin, Settings};
use weft_runtime::access::Bearer;

/// Docker network and IPAM driver for Weft.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The socket dockerd finds the plugin by; its file name (less `.sock`) is the driver name
    /// (`docker network create -d weft --ipam-driver weft`).
    #[arg(
        long,
        env = "WEFT_DOCKER_SOCKET",
        default_value = "/run/docker/plugins/weft.sock"
    )]
    socket: PathBuf,
    /// The driver `--socket` serves: `bridge` (Weft bridge networks, scope `local`) or
    /// `overlay` (Weft overlay networks, scope `global`). A managed plugin (`docker plugin
    /// create`) has one socket, so the overlay driver packaged that way is a second plugin
    /// started with `--driver overlay`. Both serve the IPAM driver.
    #[arg(long, env = "WEFT_DOCKER_DRIVER", default_value = "bridge", value_parser = ["bridge", "overlay"])]
    driver: String,
    /// A second socket, for the driver of Weft overlay networks (scope `global`): its file
    /// name is that driver's name (`weft-overlay.sock`: `-d weft-overlay`). Not served unless
    /// given. dockerd 20.10 creates global-scope networks only in swarm mode, which refuses
    /// plugins found by socket: there, use a managed plugin with `--driver overlay` (see the
    /// README).
    #[arg(long, env = "WEFT_DOCKER_OVERLAY_SOCKET")]
    overlay_socket: Option<PathBuf>,
    /// The Weft gateway (public API).
    #[arg(long, env = "WEFT_GATEWAY", default_value = "http://127.0.0.1:7700")]
    gateway: String,
    /// A file holding an operator's bearer token (`weftctl token create --role operator`), as
    /// weft-cni's tokenFile.
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// dockerd's API socket, read only (network inspect, container list) for the names of networks
    /// and containers, which Docker's plugin protocol does not carry. Without it Weft names
    /// them `docker-<id>`.
    #[arg(long, env = "WEFT_DOCKER_HOST")]
    docker_host: Option<PathBuf>,
    /// How often to delete the sandboxes of containers dockerd removed while the plugin was
    /// down (see `weft_docker::sweep`).
    #[arg(long, env = "WEFT_DOCKER_SWEEP_EVERY", default_value = "60s", value_parser = humantime::parse_duration)]
    sweep_every: Duration,
    /// A sandbox younger than this is never swept (dockerd makes its namespace after Join).
    #[arg(long, env = "WEFT_DOCKER_STALE_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    stale_after: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let bearer = match &args.token_file {
        None => Bearer::none(),
        Some(p) => Bearer::from_file(p).with_context(|| format!("--token-file {}", p.display()))?,
    };
    let plugin = Arc::new(Plugin::new(Settings {
        gateway: args.gateway.clone(),
        bearer,
        docker: args
            .docker_host
            .clone()
            .map(weft_docker::docker_api::DockerApi::new),
    }));
    tokio::spawn(weft_docker::sweep::run(
        plugin.clone(),
        args.sweep_every.max(Duration::from_secs(1)),
        args.stale_after,
    ));
    let listener = weft_docker::http::bind(&args.socket)
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    let overlay = match &args.overlay_socket {
        None => None,
        Some(p) if *p == args.socket => anyhow::bail!("--overlay-socket is --socket"),
        Some(_) if args.driver == "overlay" => {
            anyhow::bail!("--overlay-socket with --driver overlay: --socket serves it already")
        }
        Some(p) => Some(
            weft_docker::http::bind(p)
                .with_context(|| format!("cannot listen on {}", p.display()))?,
        ),
    };
    tracing::info!(socket = %args.socket.display(), overlay_socket = ?args.overlay_socket, gateway = %args.gateway, "serving Docker's plugin protocol");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let never = std::future::pending::<()>;
    let main_driver = if args.driver == "overlay" {
        Driver::Overlay
    } else {
        Driver::Bridge
    };
    let bridge = weft_docker::http::serve(listener, plugin.clone(), main_driver, never());
    let overlay = async {
        match overlay {
            Some(l) => weft_docker::http::serve(l, plugin, Driver::Overlay, never()).await,
            None => {
                never().await;
                Ok(())
            }
        }
    };
    let res = tokio::select! {
        r = bridge => r,
        r = overlay => r,
        () = shutdown => Ok(()),
    };
    let _ = std::fs::remove_file(&args.socket);
    if let Some(p) = &args.overlay_socket {
        let _ = std::fs::remove_file(p);
    }
    res.context("serving")
}
