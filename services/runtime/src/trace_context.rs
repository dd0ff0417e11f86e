//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, so that one request is one
//! trace across services: a client wrapped in [`Traced`] opens a client span for each call and
//! sends its context; every server built by [`crate::GrpcServer`] continues the context it
//! receives in its own server span ([`server_span`]).
//!
//! Only while traces are exported (`--otlp-endpoint`): otherwise no client span is opened and
//! nothing is read or written, so a call pays one atomic load.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    task::{Context, Poll},
};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::instrument::{Instrument as _, Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says whether spans are exported (set by [`crate::telemetry::init`]).
pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The server span of one call (`otel.name` the method's path without its leading slash), a
/// child of the caller's span when the request carries a valid `traceparent`. (The
/// propagator checks the header's syntax; a malformed one starts a new trace.)
pub fn server_span<B>(req: &http::Request<B>) -> tracing::Span {
    let path = req.uri().path();
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.method = %path,
    );
    if exporting() && req.headers().contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        // Fails only when the span is disabled by the log filter: then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span
}

/// A gRPC client transport (a tonic `Channel`, or any service below a generated client) that
/// opens a client span per call, as a child of the current span, and sends its context.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// A traced tonic channel.
pub type TracedChannel = Traced<tonic::transport::Channel>;

impl<S, B> tower_service::Service<http::Request<B>> for Traced<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !exporting() {
            return self.inner.call(req).instrument(tracing::Span::none());
        }
        let path = req.uri().path();
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.method = %path,
        );
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut HeadersMut(req.headers_mut()));
        self.inner.call(req).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_through_headers() {
        let mut h = http::HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().unwrap());
        h.insert("tracestate", "weft=1".parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&Headers(&h));
        let mut out = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(&mut out));
        assert_eq!(out["traceparent"], tp);
        assert_eq!(out["tracestate"], "weft=1");
        // A malformed header gives no parent: nothing is sent on.
        h.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&Headers(&h));
        let mut out = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(&mut out));
        assert!(out.get("traceparent").is_none());
    }
}
