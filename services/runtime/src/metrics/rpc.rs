//! Per-RPC metrics of a gRPC server, in the names of the grpc-ecosystem's Go middleware (so that
//! existing dashboards work): `grpc_server_started_total` and `grpc_server_handled_total`
//! (by `grpc_code`) count calls, `grpc_server_handling_seconds` is the latency histogram, each
//! labelled `grpc_service` and `grpc_method`.
//!
//! The label values come from a table built once per server from the served services'
//! descriptors, with their metric handles: a call costs one lookup of its path, no string is
//! built, and a path that names no served method (anyone can send one) is counted under
//! `unknown` instead of growing a new series.
//!
//! A call ends when its status is known: at once for an error answered in the headers
//! (trailers-only, as every refusal is), else when the response's trailers go out; a body
//! dropped before its trailers (the client went away) counts as `CANCELLED`.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::Frame;
use metrics::{Counter, Histogram};
use tonic::body::Body;

/// gRPC status code names by number (0–16).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// The metric handles of one method.
struct Method {
    service: String,
    method: String,
    started: Counter,
    latency: Histogram,
    /// By code, registered when a code first occurs (a method that never fails shows no
    /// error series).
    handled: [OnceLock<Counter>; 17],
}

impl Method {
    fn new(service: &str, method: &str) -> Self {
        let labels = [
            ("grpc_service", service.to_owned()),
            ("grpc_method", method.to_owned()),
        ];
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            started: metrics::counter!("grpc_server_started_total", &labels),
            latency: metrics::histogram!("grpc_server_handling_seconds", &labels),
            handled: Default::default(),
        }
    }

    fn finish(&self, code: usize, started: Instant) {
        let code = code.min(CODES.len() - 1);
        self.handled[code]
            .get_or_init(|| {
                metrics::counter!(
                    "grpc_server_handled_total",
                    "grpc_service" => self.service.clone(),
                    "grpc_method" => self.method.clone(),
                    "grpc_code" => CODES[code],
                )
            })
            .increment(1);
        self.latency.record(started.elapsed().as_secs_f64());
    }
}

/// The methods of one server by path (`/package.Service/Method`).
pub(crate) struct Table {
    by_path: HashMap<String, Arc<Method>>,
    unknown: Arc<Method>,
}

impl Table {
    /// The table of `paths`.
    pub(crate) fn new(paths: impl IntoIterator<Item = String>) -> Self {
        let by_path = paths
            .into_iter()
            .filter_map(|p| {
                let (service, method) = p.strip_prefix('/')?.split_once('/')?;
                let m = Arc::new(Method::new(service, method));
                Some((p, m))
            })
            .collect();
        Self {
            by_path,
            unknown: Arc::new(Method::new("unknown", "unknown")),
        }
    }

    fn get(&self, path: &str) -> Arc<Method> {
        self.by_path.get(path).unwrap_or(&self.unknown).clone()
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("methods", &self.by_path.len())
            .finish()
    }
}

/// The tower layer (outermost in the server: refusals by the access layer count too).
#[derive(Debug, Clone)]
pub(crate) struct RpcMetricsLayer {
    table: Arc<Table>,
}

impl RpcMetricsLayer {
    pub(crate) fn new(table: Table) -> Self {
        Self {
            table: Arc::new(table),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            table: self.table.clone(),
        }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    table: Arc<Table>,
}

impl<S> tower_service::Service<http::Request<Body>> for RpcMetrics<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = self.table.get(req.uri().path());
        method.started.increment(1);
        ResponseFuture {
            inner: self.inner.call(req),
            call: Some(Call {
                method,
                started: Instant::now(),
            }),
        }
    }
}

/// One call in flight.
struct Call {
    method: Arc<Method>,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// See [`RpcMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(res) = std::task::ready!(this.inner.poll(cx));
        let Some(call) = this.call.take() else {
            return Poll::Ready(Ok(res));
        };
        // A status in the headers: the call is over (trailers-only response).
        if let Some(code) = status_of(res.headers()) {
            call.method.finish(code, call.started);
            return Poll::Ready(Ok(res));
        }
        Poll::Ready(Ok(res.map(|body| {
            Body::new(MeteredBody {
                inner: body,
                call: Some(call),
            })
        })))
    }
}

/// The gRPC status code in `headers` (`grpc-status`), if there is one.
fn status_of(headers: &http::HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|c| *c < CODES.len())
            .unwrap_or(UNKNOWN),
    )
}

pin_project_lite::pin_project! {
    /// A response body that ends the call's count when its trailers pass (or it is dropped).
    struct MeteredBody {
        #[pin]
        inner: Body,
        call: Option<Call>,
    }

    impl PinnedDrop for MeteredBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.method.finish(CANCELLED, call.started);
            }
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(f)) => f.trailers_ref().map(|t| status_of(t).unwrap_or(UNKNOWN)),
            Some(Err(_)) | None => Some(UNKNOWN),
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.method.finish(code, call.started);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_read_and_bounded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_of(&h), Some(5));
        h.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(status_of(&h), Some(UNKNOWN));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status_of(&h), Some(UNKNOWN));
    }
}
