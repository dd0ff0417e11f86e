//! Metrics and traces of a running `weft up`: every service's `/metrics` (scraped with the real
//! curl inside the host namespace) counts exactly what the test did, and one Connect is one
//! trace across the four services (an OTLP/gRPC receiver in the test process, listening inside
//! the host namespace).

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::span::SpanKind,
};
use weft_testkit::netns::tcp_listener_in;

use crate::world::{UPSTREAM_ANSWER, Weft, World, dig, ip_in};

/// Each service's metrics address inside the host namespace (`weft up`'s defaults).
const METRICS: [(&str, &str); 4] = [
    ("gateway", weft::plan::METRICS_GATEWAY),
    ("ipam-svc", weft::plan::METRICS_IPAM),
    ("driver-agent", weft::plan::METRICS_AGENT),
    ("dns-svc", weft::plan::METRICS_DNS),
];

/// `curl` inside the host namespace: the HTTP status and the body.
fn curl(w: &World, url: &str) -> (String, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", w.host.path.display()))
        .args([
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_owned(), body.to_owned())
}

/// One scrape of every service.
fn scrape_all(w: &World) -> HashMap<&'static str, Metrics> {
    METRICS
        .iter()
        .map(|(svc, addr)| {
            let (status, body) = curl(w, &format!("http://{addr}/metrics"));
            assert_eq!(status, "200", "{svc} at {addr}: {body}");
            (*svc, Metrics(body))
        })
        .collect()
}

/// A scrape's text.
#[derive(Debug, Clone)]
struct Metrics(String);

impl Metrics {
    /// The sum of the samples of `name` whose labels include all of `labels` (0 when none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        weft_testkit::prom::sum(&self.0, name, labels)
    }

    /// Calls of a gRPC method with `code` (any code when `None`).
    fn calls(&self, service: &str, method: &str, code: Option<&str>) -> f64 {
        let mut labels = vec![("grpc_service", service), ("grpc_method", method)];
        if let Some(c) = code {
            labels.push(("grpc_code", c));
        }
        self.sum("grpc_server_handled_total", &labels)
    }
}

const SANDBOXES: &str = "weft.gateway.v1.SandboxService";

/// Connects made, names asked inside a sandbox, names forwarded.
const N: usize = 3;
const M: usize = 5;
const K: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_metrics_count_what_the_scenario_did() {
    let w = World::new().await;
    // A short reconcile interval, so that the drift below is repaired within the test.
    let _weft = Weft::up_with_env(&w, &[("WEFT_AGENT_RECONCILE_INTERVAL", "2s")]).await;

    // Every service answers /metrics and nothing else.
    for (svc, addr) in METRICS {
        for (path, want) in [("/metrics", "200"), ("/", "404"), ("/health", "404")] {
            let (status, _) = curl(&w, &format!("http://{addr}{path}"));
            assert_eq!(status, want, "{svc} {path}");
        }
    }
    w.ok(&["network", "create", "obs-net"]);
    for i in 0..N {
        w.ok(&["sandbox", "create", &format!("s{i}")]);
    }
    connects(&w);
    state(&w);
    let s0 = w.sandbox("s0");
    dns_queries(&w, s0["netnsPath"].as_str().unwrap());
    watchers_keep_up(&w).await;
    drift_is_counted(&w, s0["endpoints"][0]["id"].as_str().unwrap()).await;
}

/// N Connects and a refused one: counted on the gateway, and each service behind it.
fn connects(w: &World) {
    let before = scrape_all(w);
    for i in 0..N {
        w.ok(&["network", "connect", "obs-net", &format!("s{i}")]);
    }
    assert!(
        !w.weftctl(&["network", "connect", "no-such-net", "s0"])
            .status
            .success()
    );
    let after = scrape_all(w);
    let delta = |svc: &str, f: &dyn Fn(&Metrics) -> f64| f(&after[svc]) - f(&before[svc]);
    let connect = [("grpc_service", SANDBOXES), ("grpc_method", "Connect")];

    // The gateway: exactly N Connects served, one NOT_FOUND, each timed.
    let ok = |m: &Metrics| m.calls(SANDBOXES, "Connect", Some("OK"));
    assert_eq!(delta("gateway", &ok), N as f64);
    let not_found = |m: &Metrics| m.calls(SANDBOXES, "Connect", Some("NOT_FOUND"));
    assert_eq!(delta("gateway", &not_found), 1.0);
    let started = |m: &Metrics| m.sum("grpc_server_started_total", &connect);
    assert_eq!(delta("gateway", &started), (N + 1) as f64);
    let timed = |m: &Metrics| m.sum("grpc_server_handling_seconds_count", &connect);
    assert_eq!(delta("gateway", &timed), (N + 1) as f64);

    // Behind them: one address each from ipam-svc, one Attach and one veth on the agent, one
    // wait for dns-svc to see each change.
    let ipam = |m: &Metrics| m.calls("weft.ipam.v1.IpamService", "RequestAddress", Some("OK"));
    assert_eq!(delta("ipam-svc", &ipam), N as f64);
    let attach = |m: &Metrics| m.calls("weft.agent.v1.AgentService", "Attach", Some("OK"));
    assert_eq!(delta("driver-agent", &attach), N as f64);
    let veth = |m: &Metrics| {
        m.sum(
            "weft_agent_kernel_call_duration_seconds_count",
            &[("call", "veth_create")],
        )
    };
    assert_eq!(delta("driver-agent", &veth), N as f64);
    let wait = |m: &Metrics| m.calls("weft.dns.v1.DnsService", "WaitForRevision", Some("OK"));
    assert_eq!(delta("dns-svc", &wait), N as f64);
}

/// Endpoints per host and network, and pool usage, as the API shows them.
fn state(w: &World) {
    let now = scrape_all(w);
    let net = w.network("obs-net");
    let net_id = net["id"].as_str().unwrap();
    assert_eq!(net["endpoints"].as_array().unwrap().len(), N);
    let endpoints = [("host", "local"), ("network", "obs-net")];
    assert_eq!(
        now["gateway"].sum("weft_gateway_endpoints", &endpoints),
        N as f64
    );
    let ipam = &now["ipam-svc"];
    let pool = [("network_id", net_id)];
    assert_eq!(
        ipam.sum("weft_ipam_pool_allocated_addresses", &pool),
        N as f64,
        "{}",
        ipam.0
    );
    let size = ipam.sum("weft_ipam_pool_size_addresses", &pool);
    let free = ipam.sum("weft_ipam_pool_free_addresses", &pool);
    assert_eq!(size - free, N as f64);
}

/// M names answered inside a sandbox (real dig at 127.0.0.11), K forwarded, one on the
/// operator's listener.
fn dns_queries(w: &World, netns: &str) {
    let before = scrape_all(w);
    for _ in 0..M {
        let (status, answers) = dig(netns, "127.0.0.11", "s1");
        assert_eq!(status, "NOERROR");
        assert_eq!(answers.len(), 1, "{answers:?}");
    }
    for _ in 0..K {
        let (_, answers) = dig(netns, "127.0.0.11", "example.test");
        assert_eq!(answers, [UPSTREAM_ANSWER]);
    }
    let out = Command::new("nsenter")
        .arg(format!("--net={}", w.host.path.display()))
        .args([
            "dig",
            "+time=2",
            "+tries=1",
            "+short",
            "@127.0.0.1",
            "-p",
            "5353",
        ])
        .arg("s1.obs-net.weft.")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(shown.lines().count(), 1, "{shown}");
    let after = scrape_all(w);
    let dns = |f: &dyn Fn(&Metrics) -> f64| f(&after["dns-svc"]) - f(&before["dns-svc"]);
    let answers = |listener: &'static str, kind: &'static str| {
        move |m: &Metrics| {
            m.sum(
                "weft_dns_answers_total",
                &[("listener", listener), ("kind", kind)],
            )
        }
    };
    assert_eq!(dns(&answers("sandbox", "local")), M as f64);
    assert_eq!(dns(&answers("sandbox", "forwarded")), K as f64);
    assert_eq!(dns(&answers("operator", "local")), 1.0);
    let sandbox = [("listener", "sandbox")];
    let queries = |m: &Metrics| m.sum("weft_dns_queries_total", &sandbox);
    assert_eq!(dns(&queries), (M + K) as f64);
    let timed = |m: &Metrics| m.sum("weft_dns_query_duration_seconds_count", &sandbox);
    assert_eq!(dns(&timed), (M + K) as f64);
}

/// dns-svc's Watch stream is listed with its lag, which comes down to 0.
async fn watchers_keep_up(w: &World) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = &scrape_all(w)["gateway"];
        let dns = [("client", "dns:local")];
        let watchers =
            g.0.lines()
                .filter(|l| l.starts_with("weft_gateway_watch_lag_revisions{"))
                .filter(|l| l.contains("client=\"dns:local\""))
                .count();
        let lag = g.sum("weft_gateway_watch_lag_revisions", &dns);
        if watchers > 0 && lag == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dns-svc watchers {watchers}, lag {lag}:\n{}",
            g.0
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The host-side veth of `endpoint`, deleted behind the agent's back, is found and made again,
/// and the agent's counters say so.
async fn drift_is_counted(w: &World, endpoint: &str) {
    let host_ns = w.host.path.display().to_string();
    let links = ip_in(&host_ns, &["link", "show"]);
    let victim = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["ifalias"]
                .as_str()
                .and_then(driver_agent::names::endpoint_of_alias)
                == Some(endpoint)
        })
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no host-side veth of {endpoint}: {links}"))
        .to_owned();
    let before = scrape_all(w);
    crate::world::run("ip", &["-n", &w.host.name, "link", "del", &victim]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = scrape_all(w);
        let agent = |m: &HashMap<&str, Metrics>, name: &str| {
            m["driver-agent"].sum(name, &[("kind", "link")])
        };
        let found = agent(&now, "weft_agent_drift_found_total")
            - agent(&before, "weft_agent_drift_found_total");
        let repaired = agent(&now, "weft_agent_drift_repaired_total")
            - agent(&before, "weft_agent_drift_repaired_total");
        if found >= 1.0 && repaired >= 1.0 {
            let back = ip_in(&host_ns, &["link", "show", &victim]);
            assert!(
                back.as_array().is_some_and(|a| !a.is_empty()),
                "{victim} is not back"
            );
            assert!(now["driver-agent"].sum("weft_agent_reconcile_runs_total", &[]) >= 1.0);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "drift not counted as repaired ({found} found, {repaired} repaired):\n{}",
            now["driver-agent"].0
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One exported span, as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    kind: i32,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

/// An OTLP/gRPC trace receiver (the collector's protocol) keeping every span.
#[derive(Debug, Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                got.push(Span {
                    service: service.clone(),
                    name: s.name,
                    kind: s.kind,
                    trace: s.trace_id,
                    id: s.span_id,
                    parent: s.parent_span_id,
                });
            }
        }
        self.spans.lock().unwrap().extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Whether `span` descends from `root` through spans of `within` (its trace).
fn descends(span: &Span, root: &Span, within: &[&Span]) -> bool {
    let mut at = span;
    for _ in 0..32 {
        if at.parent == root.id {
            return true;
        }
        match within.iter().find(|s| s.id == at.parent) {
            Some(p) => at = p,
            None => return false,
        }
    }
    false
}

/// What one Connect's trace must hold beyond the gateway: each service's server span, with the
/// method it serves.
const DOWNSTREAM: [(&str, &str); 3] = [
    ("ipam-svc", "weft.ipam.v1.IpamService/RequestAddress"),
    ("driver-agent", "weft.agent.v1.AgentService/Attach"),
    ("dns-svc", "weft.dns.v1.DnsService/WaitForRevision"),
];

/// Checks the trace of the gateway's Connect span among `spans`: each downstream server span is
/// in it, its parent is the gateway's client span of the same call, and that one descends from
/// the Connect span. `Err` says what is missing yet.
fn check_connect_trace(spans: &[Span]) -> Result<(), String> {
    let server = SpanKind::Server as i32;
    let client = SpanKind::Client as i32;
    let connect = spans
        .iter()
        .find(|s| {
            s.service == "gateway"
                && s.name == "weft.gateway.v1.SandboxService/Connect"
                && s.kind == server
        })
        .ok_or("no Connect span from the gateway yet")?;
    assert!(
        connect.parent.is_empty(),
        "weftctl sends no trace context: Connect starts the trace"
    );
    let trace: Vec<&Span> = spans.iter().filter(|s| s.trace == connect.trace).collect();
    for (service, name) in DOWNSTREAM {
        let theirs = trace
            .iter()
            .find(|s| s.service == service && s.name == name && s.kind == server)
            .ok_or_else(|| format!("no {name} server span from {service} in the trace yet"))?;
        let caller = trace
            .iter()
            .find(|s| s.id == theirs.parent)
            .ok_or_else(|| format!("the parent of {service}'s {name} span is not in the trace"))?;
        assert_eq!(
            (caller.service.as_str(), caller.name.as_str(), caller.kind),
            ("gateway", name, client),
            "{service}'s server span must hang under the gateway's client span of the call"
        );
        assert!(
            descends(caller, connect, &trace),
            "the gateway's {name} client span does not descend from its Connect span"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_one_connect_is_one_trace_across_the_services() {
    let w = World::new().await;
    let receiver = Receiver::default();
    let listener = tcp_listener_in(&w.host.path, "127.0.0.1:4317".parse().unwrap()).await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    // Every service exports to the receiver, in batches sent every 200 ms.
    let _weft = Weft::up_with_env(
        &w,
        &[
            ("WEFT_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    w.ok(&["network", "create", "tr-net"]);
    w.ok(&["sandbox", "create", "t0"]);
    w.ok(&["network", "connect", "tr-net", "t0"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = receiver.spans.lock().unwrap().clone();
        match check_connect_trace(&spans) {
            Ok(()) => break,
            Err(missing) => assert!(
                Instant::now() < deadline,
                "{missing}; spans: {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.service, &s.name, s.kind))
                    .collect::<Vec<_>>()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.abort();
}
