//! The gRPC server bootstrap every service uses: its own services plus `grpc.health.v1` and
//! server reflection (v1, and v1alpha for grpcurl 1.8), with graceful shutdown.
//!
//! A server serves plaintext, or TLS ([`GrpcServer::tls`]): then every connection is a TLS
//! handshake first (`weft_identity::incoming`), and the caller's certificate reaches the
//! access layer. [`GrpcServer::internal`] sets up what the internal services serve.
//!
//! Shutdown order matters: health flips to NOT_SERVING first (so probes and balancers stop
//! sending), the server keeps serving for `shutdown_delay`, then stops accepting and lets
//! in-flight calls finish for at most `shutdown_grace`.

use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use weft_identity::{ClientAuth, ServerTls};

use crate::{
    access::{Access, AccessLayer, Rule},
    cert_auth::CertAuth,
    metrics::rpc::{self, RpcMetricsLayer},
    transport::Transport,
};

/// A problem starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Access(#[from] crate::access::Uncovered),
    #[error(transparent)]
    Streamed(#[from] crate::size::StreamedRequests),
    #[error("tls: {0}")]
    Tls(#[from] weft_identity::Error),
}

/// How to stop.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownTiming {
    /// Serve with health NOT_SERVING this long after the signal.
    pub delay: Duration,
    /// Then wait at most this long for in-flight calls.
    pub grace: Duration,
}

impl From<&crate::CommonArgs> for ShutdownTiming {
    fn from(args: &crate::CommonArgs) -> Self {
        Self {
            delay: args.shutdown_delay,
            grace: args.shutdown_grace,
        }
    }
}

/// A check of what a service needs to answer (its store), run every `every`: health reports
/// NOT_SERVING while it fails, so that probes and balancers leave the replica alone.
#[derive(Clone)]
pub struct Readiness {
    pub probe: Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>,
    pub every: Duration,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// A service's gRPC server under construction.
#[derive(Debug, Default)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    access: Option<Access>,
    tls: Option<ServerTls>,
    readiness: Option<Readiness>,
}

impl GrpcServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one of the service's own gRPC services; health reports it SERVING while running.
    #[must_use]
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower_service::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Checks every call against `access` (see [`crate::access`]): serving then fails at once
    /// if a method of a served service has no rule.
    #[must_use]
    pub fn access(mut self, access: Access) -> Self {
        self.access = Some(access);
        self
    }

    /// Reports health by `readiness` while serving (see [`Readiness`]).
    #[must_use]
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Serves TLS with `tls` instead of plaintext.
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// What an internal service (ipam-svc, driver-agent, dns-svc) serves: with TLS, mutual TLS
    /// in which a client certificate is optional at the handshake (health and reflection stay
    /// open to probes) and every other call needs a certificate whose role `rules` allow
    /// ([`CertAuth`]); plaintext has no access table, and says so in a warning.
    pub fn internal(self, transport: &Transport, rules: &[Rule]) -> Result<Self, ServeError> {
        match transport {
            Transport::Tls(files) => {
                let tls = ServerTls::with_client_auth(files.clone(), ClientAuth::Optional)?;
                Ok(self.tls(tls).access(Access::new(rules, Arc::new(CertAuth))))
            }
            Transport::Plaintext => {
                tracing::warn!(
                    "serving plaintext with no access table (--insecure-plaintext): anyone who reaches the port may call every method; for tests and development only"
                );
                Ok(self)
            }
        }
    }

    /// Binds `addr` (port 0 picks a free port) and returns the listener with its address.
    pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok((listener, local))
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down gracefully.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        timing: ShutdownTiming,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        if let Some(access) = &self.access {
            access.check_covers(&self.names, weft_proto::FILE_DESCRIPTOR_SET)?;
            crate::size::check_unary(crate::access::method_descriptors(
                &self.names,
                weft_proto::FILE_DESCRIPTOR_SET,
            ))?;
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        set_all(&reporter, &self.names, ServingStatus::Serving).await;
        let ready = self
            .readiness
            .take()
            .map(|r| tokio::spawn(report_readiness(r, reporter.clone(), self.names.clone())));

        // The descriptor set holds every Weft contract; advertise only what this server serves.
        let advertised: Vec<&str> = self
            .names
            .iter()
            .copied()
            .chain([
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ])
            .collect();
        let reflection = |b: tonic_reflection::server::Builder<'static>| {
            advertised.iter().fold(
                b.register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
                |b, name| b.with_service_name(*name),
            )
        };
        let v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
        let v1alpha = reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;

        let mut routes = self.routes;
        routes
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha);
        let routes: Routes = routes.routes();

        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let drained = async {
            let _ = drain_rx.await;
        };
        // One span per call, named after the method, so that logs and OTLP traces of a call
        // hang together; it continues the caller's trace (W3C trace context). The metrics
        // layer is outermost, so that calls the access layer refuses count too. The access
        // layer runs after TLS: the caller's certificate is in the request's extensions by then.
        let metered = crate::metrics::enabled()
            .then(|| RpcMetricsLayer::new(rpc::Table::new(served_methods(&advertised))));
        let router = Server::builder()
            .trace_fn(crate::trace_context::server_span)
            .layer(tower::util::option_layer(metered))
            .layer(tower::util::option_layer(self.access.map(AccessLayer::new)))
            .add_routes(routes);
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match self.tls {
                // Accepted sockets get TCP_NODELAY in both: `serve_with_incoming` ignores the
                // builder's setting, and Nagle's algorithm would hold back the frames of each
                // response.
                None => Box::pin(router.serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    drained,
                )),
                Some(tls) => {
                    Box::pin(router.serve_with_incoming_shutdown(
                        weft_identity::incoming(listener, tls),
                        drained,
                    ))
                }
            };
        let mut server = server;

        tokio::select! {
            res = &mut server => return Ok(res?),
            () = shutdown => {}
        }
        if let Some(r) = ready {
            r.abort();
        }
        set_all(&reporter, &self.names, ServingStatus::NotServing).await;
        tracing::info!(delay = ?timing.delay, "health is NOT_SERVING, draining");
        tokio::select! {
            res = &mut server => return Ok(res?),
            () = tokio::time::sleep(timing.delay) => {}
        }
        let _ = drain_tx.send(());
        match tokio::time::timeout(timing.grace, &mut server).await {
            Ok(res) => res?,
            Err(_) => {
                tracing::warn!(grace = ?timing.grace, "in-flight calls still running after the grace period")
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs `r`'s probe forever, setting every service's health by its answer when it changes.
async fn report_readiness(r: Readiness, reporter: HealthReporter, names: Vec<&'static str>) {
    let mut ready = true;
    loop {
        tokio::time::sleep(r.every).await;
        let now = (r.probe)().await;
        if now != ready {
            ready = now;
            if now {
                tracing::info!("readiness probe passes again: health is SERVING");
                set_all(&reporter, &names, ServingStatus::Serving).await;
            } else {
                tracing::warn!("readiness probe fails: health is NOT_SERVING");
                set_all(&reporter, &names, ServingStatus::NotServing).await;
            }
        }
    }
}

/// The paths of every method of the `services` served, from the descriptor sets of Weft's
/// contracts, health and reflection.
fn served_methods(services: &[&str]) -> Vec<String> {
    [
        weft_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .flat_map(|set| crate::access::method_descriptors(services, set))
    .map(|(path, _)| path)
    .collect()
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// `server` (a generated tonic service) with tonic's own limit on requests set to the largest
/// request its methods take by `rules` ([`Rule::largest`]): tonic then never refuses first a
/// request the access table allows, and bounds requests where there is no access table
/// (plaintext). `set` is the server's `max_decoding_message_size`.
pub fn limit_requests<S: NamedService>(
    server: S,
    rules: &[Rule],
    set: impl FnOnce(S, usize) -> S,
) -> S {
    set(server, Rule::largest(rules, S::NAME))
}

/// Serves `server` on `listen` until SIGTERM or SIGINT, then shuts down gracefully: the whole
/// life of a service binary once its state is set up.
pub async fn serve_until_signal(
    service: &'static str,
    listen: SocketAddr,
    common: &crate::CommonArgs,
    server: GrpcServer,
) -> Result<(), ServeError> {
    let (listener, addr) = GrpcServer::bind(listen).await?;
    tracing::info!(%addr, service, "listening");
    server
        .serve(
            listener,
            ShutdownTiming::from(common),
            crate::shutdown::signal_received(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use super::*;

    /// Health follows the readiness probe both ways while serving.
    #[tokio::test]
    async fn health_follows_the_readiness_probe() {
        let up = Arc::new(AtomicBool::new(true));
        let probe_up = up.clone();
        let server = GrpcServer::new().readiness(Readiness {
            probe: Arc::new(move || {
                let ok = probe_up.load(Ordering::SeqCst);
                Box::pin(async move { ok })
            }),
            every: Duration::from_millis(20),
        });
        let (listener, addr) = GrpcServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timing = ShutdownTiming {
            delay: Duration::ZERO,
            grace: Duration::from_secs(1),
        };
        let served = tokio::spawn(server.serve(listener, timing, async {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let status = || {
            let mut c = HealthClient::new(channel.clone());
            async move {
                c.check(HealthCheckRequest::default())
                    .await
                    .map(|r| r.into_inner().status)
                    .ok()
            }
        };
        let until = |want: ServingStatus| {
            let status = &status;
            async move {
                for _ in 0..250 {
                    if status().await == Some(want as i32) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("health never became {want:?}");
            }
        };
        until(ServingStatus::Serving).await;
        up.store(false, Ordering::SeqCst);
        until(ServingStatus::NotServing).await;
        up.store(true, Ordering::SeqCst);
        until(ServingStatus::Serving).await;
        let _ = stop.send(());
        served.await.unwrap().unwrap();
    }
}
