//! Traces reach an OTLP/gRPC collector: a real receiver (the OTLP trace service, served here)
//! gets the span of a call made to ipam-svc, tagged with the service's name.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use weft_proto::ipam::v1::ipam_service_client::IpamServiceClient;
use weft_testkit::TestDb;

use crate::harness::{pool, process};

#[derive(Default, Clone)]
struct Collector {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.got.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_asked() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);

    let db = TestDb::sqlite();
    let endpoint = format!("http://{addr}");
    let mut svc = process(&db.url, &["--otlp-endpoint", &endpoint]).await;
    pool(
        &mut IpamServiceClient::new(weft_testkit::channel(svc.addr)),
        "p",
        "10.7.0.0/24",
    )
    .await;
    // Stopping flushes the batch of spans still buffered.
    svc.signal(Signal::SIGTERM);
    assert!(
        svc.wait_exit(Duration::from_secs(15)).await.success(),
        "{}",
        svc.log_text()
    );

    let got = collector.got.lock().unwrap().clone();
    let spans: Vec<_> = got
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.clone());
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map({
                    let service = service.clone();
                    move |s| (format!("{service:?}"), s.name.clone())
                })
            })
        })
        .collect();
    assert!(
        spans
            .iter()
            .any(|(svc, name)| svc.contains("ipam-svc") && name.contains("RequestPool")),
        "no RequestPool span from ipam-svc among {spans:?}\n{}",
        svc.log_text()
    );
    server.abort();
}
