//! Prometheus metrics: every service serves them in the text format at `/metrics` on its own
//! port (`--metrics-listen`), and nothing else there.
//!
//! Two sources make up a scrape. Counters and histograms that code bumps as things happen go
//! through the `metrics` facade into one process-wide recorder (installed by [`start`]; before
//! that, and in processes that never start it, the macros cost next to nothing). Gauges of
//! state that lives elsewhere (pool usage in ipam-svc's store, endpoints in the gateway's, the
//! watchers of the event stream) are read at scrape time by [`Collector`]s: a deleted pool
//! then simply stops appearing, instead of lingering as a stale series.
//!
//! The gRPC server of every service counts its calls by method and status code
//! ([`rpc`]), so that each service gets rate, errors and latency per RPC without code of its own.

pub mod rpc;

use std::{
    convert::Infallible,
    fmt::Write as _,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use http::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// The upper bounds (seconds) of every `*_seconds` histogram: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How many scrapes may be served at once; more connections wait to be accepted.
const MAX_CONNECTIONS: usize = 8;
/// How long one connection may take, request and answer (a slow client is cut off).
const CONNECTION_TIME: Duration = Duration::from_secs(30);
/// How long one collector may take before a scrape goes on without its families.
const COLLECT_TIME: Duration = Duration::from_secs(5);
/// How often the histograms' sample buffers are folded into their buckets between scrapes
/// (bounds their memory under load).
const UPKEEP: Duration = Duration::from_secs(5);
/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A future that renders some families in the text format (see [`Family`]).
pub type Rendered = Pin<Box<dyn Future<Output = String> + Send>>;

/// Reads state at scrape time and renders it as metric families.
pub type Collector = Arc<dyn Fn() -> Rendered + Send + Sync>;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static COLLECTORS: Mutex<Vec<(u64, Collector)>> = Mutex::new(Vec::new());
static NEXT_COLLECTOR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A problem starting the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error("cannot bind --metrics-listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Whether this process records metrics (its endpoint was started).
pub fn enabled() -> bool {
    HANDLE.get().is_some()
}

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Recorder(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Recorder(e.to_string()))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Adds families read at every scrape (see [`Collector`]) until the guard is dropped. A
/// collector holds what it reads (a store, an engine's handle): drop the guard before waiting
/// for those to close.
#[must_use = "the collector is removed when the guard is dropped"]
pub fn add_collector(collector: Collector) -> CollectorGuard {
    let id = NEXT_COLLECTOR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    COLLECTORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((id, collector));
    CollectorGuard { id }
}

/// Keeps a collector in the scrapes; see [`add_collector`].
#[derive(Debug)]
pub struct CollectorGuard {
    id: u64,
}

impl Drop for CollectorGuard {
    fn drop(&mut self) {
        COLLECTORS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(id, _)| *id != self.id);
    }
}

/// Installs the recorder, binds `addr` and serves `/metrics` there in a task of its own.
/// Returns the bound address.
pub async fn start(addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let handle = install()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    tokio::spawn(serve(listener, handle));
    tracing::info!(addr = %local, "metrics at http://{local}/metrics");
    Ok(local)
}

/// Answers scrapes on `listener`, [`MAX_CONNECTIONS`] at a time, HTTP/1.1.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(respond(&handle, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
            drop(permit);
        });
    }
}

/// The answer to one request: the metrics for `GET /metrics`, 404 for any other path, 405 for
/// any other method.
async fn respond<B>(handle: &PrometheusHandle, req: &Request<B>) -> Response<String> {
    let plain = |status: StatusCode, text: &str| {
        let mut r = Response::new(text.to_owned());
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: only /metrics is served here\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut body = render(handle).await;
    if req.method() == Method::HEAD {
        body.clear();
    }
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// Everything a scrape shows: the recorder's metrics, then each collector's families.
pub async fn render(handle: &PrometheusHandle) -> String {
    let collectors: Vec<Collector> = COLLECTORS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    let mut out = handle.render();
    for c in collectors {
        match tokio::time::timeout(COLLECT_TIME, c()).await {
            Ok(text) => out.push_str(&text),
            Err(_) => tracing::warn!("metrics: a collector took longer than {COLLECT_TIME:?}"),
        }
    }
    out
}

/// One metric family in the text format, built at scrape time.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    text: String,
}

/// The kind of a [`Family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Family {
    /// A family called `name` (a valid metric name, a constant in the code) with its help line.
    pub fn new(name: &'static str, kind: Kind, help: &str) -> Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let mut text = String::new();
        let _ = writeln!(text, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(text, "# TYPE {name} {kind}");
        Self { name, text }
    }

    /// Adds a sample; label names are constants in the code, their values are escaped.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// The family's text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_escape_label_values() {
        let mut f = Family::new("weft_x", Kind::Gauge, "an x");
        f.sample(&[("a", "q\"b\\c\nd"), ("n", "2")], 7);
        f.sample(&[], 1.5);
        assert_eq!(
            f.finish(),
            "# HELP weft_x an x\n# TYPE weft_x gauge\nweft_x{a=\"q\\\"b\\\\c\\nd\",n=\"2\"} 7\nweft_x 1.5\n"
        );
    }

    #[tokio::test]
    async fn only_get_metrics_is_served() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let get = |path: &str, method: Method| {
            Request::builder()
                .uri(path)
                .method(method)
                .body(())
                .unwrap()
        };
        let r = respond(&handle, &get("/metrics", Method::GET)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        for other in ["/", "/metrics/", "/health", "/metricsx", "/../metrics"] {
            let r = respond(&handle, &get(other, Method::GET)).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{other}");
        }
        let r = respond(&handle, &get("/metrics", Method::POST)).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
