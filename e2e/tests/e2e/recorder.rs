//! What a test sent to the gateway, seen on the wire: weftctl and grpcurl reach the gateway of
//! `weft up` through this gRPC proxy in the host namespace, which forwards every request as it
//! is and notes its method, the token it carried (by hash: no secret is kept) and the status it
//! ended with. [`crate::audit`] compares these calls with the audit log.
//!
//! Counting on the wire, not by weftctl subcommand, counts exactly what the gateway was sent:
//! a subcommand that makes several calls (`sandbox rm a b`), none (a usage error) or a refused
//! one needs no table of weftctl's internals, and grpcurl's calls are counted the same way.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tonic::codegen::Bytes;
use tonic::{
    Status,
    body::Body,
    transport::{Channel, Endpoint, Uri},
};
use tower::ServiceExt as _;

/// The gateway's public listener inside the host namespace (`weft up`'s default).
pub const GATEWAY: &str = "127.0.0.1:7700";

/// How a call ended: the gRPC status code's name as the audit log writes it (`OK`,
/// `PermissionDenied`, …), or why the proxy could not forward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Status(String),
    NotForwarded(String),
}

/// One call that crossed the proxy.
#[derive(Debug)]
pub struct Call {
    /// `/package.Service/Method`.
    pub method: String,
    /// The SHA-256 of its bearer token; `None` without a well-formed one.
    pub token_hash: Option<String>,
    /// `None` while it runs (or when it ended without a status).
    pub ended: Mutex<Option<Ended>>,
}

impl Call {
    pub fn ended(&self) -> Option<Ended> {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn end(&self, how: Ended) {
        let mut e = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if e.is_none() {
            *e = Some(how);
        }
    }
}

/// The proxy, and everything it forwarded.
#[derive(Debug)]
pub struct Recorder {
    /// Where clients in the host namespace reach it (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Arc<Call>>>>,
    /// Token hash → the identity the gateway knows it by (`role:name`).
    names: Mutex<Vec<(String, String)>>,
}

impl Recorder {
    /// Starts the proxy on a free port of the loopback of the namespace at `ns`, forwarding
    /// to [`GATEWAY`] there. Its tasks run on the test's runtime (multi-threaded: the test's
    /// own thread blocks on weftctl and grpcurl while the proxy serves them).
    pub async fn start(ns: &Path) -> Self {
        let listener =
            weft_testkit::netns::tcp_listener_in(ns, "127.0.0.1:0".parse().unwrap()).await;
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let forward = Forward {
            upstream: upstream(ns.to_owned()),
            calls: calls.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = TowerToHyperService::new(forward.clone());
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            calls,
            names: Mutex::new(Vec::new()),
        }
    }

    /// Every call forwarded so far, oldest first.
    pub fn calls(&self) -> Vec<Arc<Call>> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tells the recorder who `token` is (`role:name`, as the audit log names callers).
    pub fn name_token(&self, token: &str, identity: &str) {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((weft_runtime::access::token_hash(token), identity.to_owned()));
    }

    /// The identity of a token hash, if the test named it.
    pub fn identity_of(&self, hash: &str) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|(h, _)| h == hash)
            .map(|(_, who)| who.clone())
    }
}

/// A lazily connecting channel to [`GATEWAY`] inside the namespace at `ns`: each connection is
/// dialled from a thread that entered it.
fn upstream(ns: PathBuf) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let ns = ns.clone();
        async move {
            let stream = driver_agent::netns::run_in(&ns, || {
                let s = std::net::TcpStream::connect(GATEWAY)?;
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Ok::<_, std::io::Error>(s)
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
        }
    });
    Endpoint::from_shared(format!("http://{GATEWAY}"))
        .unwrap()
        .connect_with_connector_lazy(connector)
}

/// The proxy's service: notes the call, forwards it unchanged, watches how it ends.
#[derive(Debug, Clone)]
struct Forward {
    upstream: Channel,
    calls: Arc<Mutex<Vec<Arc<Call>>>>,
}

impl<B> tower::Service<Request<B>> for Forward
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let call = Arc::new(Call {
            method: req.uri().path().to_owned(),
            token_hash: weft_runtime::access::bearer(req.headers())
                .ok()
                .flatten()
                .map(weft_runtime::access::token_hash),
            ended: Mutex::new(None),
        });
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call.clone());
        let upstream = self.upstream.clone();
        Box::pin(async move {
            match upstream.oneshot(req.map(Body::new)).await {
                Ok(res) => {
                    // A trailers-only answer (most refusals) has its status in the headers.
                    if let Some(code) = status_in(res.headers()) {
                        call.end(Ended::Status(code));
                    }
                    Ok(res.map(|body| Body::new(Watched { body, call })))
                }
                Err(e) => {
                    call.end(Ended::NotForwarded(e.to_string()));
                    Ok(Status::unavailable(format!(
                        "the test's proxy cannot reach the gateway: {e}"
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// `grpc-status` of a header map, as the audit log names it.
fn status_in(headers: &HeaderMap) -> Option<String> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK".to_owned(),
        c => format!("{c:?}"),
    })
}

/// A response body that notes the status in its trailers.
struct Watched {
    body: Body,
    call: Arc<Call>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(code) = f.trailers_ref().and_then(status_in)
        {
            self.call.end(Ended::Status(code));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
