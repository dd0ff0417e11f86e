//! Every gRPC server counts its calls: by method and status code, with their latency, and a
//! path that names no served method under `unknown` (so a caller cannot add series). Its own
//! test binary: the metrics recorder is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::{Code, transport::Endpoint};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};
use weft_runtime::GrpcServer;

use weft_testkit::prom::sum;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_method_and_code() {
    let handle = weft_runtime::metrics::install().unwrap();
    let (addr, stop) = weft_testkit::serve(GrpcServer::new()).await;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for _ in 0..2 {
        health.check(check("")).await.unwrap();
    }
    let e = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A path no service serves.
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let e = raw
        .unary(
            tonic::Request::new(check("")),
            http::uri::PathAndQuery::from_static("/made.Up/Path"),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    let text = weft_runtime::metrics::render(&handle).await;
    let check_of = |code: &'static str| {
        sum(
            &text,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "grpc.health.v1.Health"),
                ("grpc_method", "Check"),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(check_of("OK"), 2.0, "{text}");
    assert_eq!(check_of("NOT_FOUND"), 1.0, "{text}");
    let method = [
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
    ];
    assert_eq!(sum(&text, "grpc_server_started_total", &method), 3.0);
    assert_eq!(
        sum(&text, "grpc_server_handling_seconds_count", &method),
        3.0
    );
    let unknown = [
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
        ("grpc_code", "UNIMPLEMENTED"),
    ];
    assert_eq!(sum(&text, "grpc_server_handled_total", &unknown), 1.0);
    assert!(!text.contains("made.Up"), "{text}");
    // Every method served has its series, before it is ever called.
    assert_eq!(
        sum(
            &text,
            "grpc_server_started_total",
            &[
                ("grpc_service", "grpc.health.v1.Health"),
                ("grpc_method", "Watch")
            ]
        ),
        0.0
    );
    assert!(text.contains("grpc_method=\"Watch\""), "{text}");

    let _ = stop.send(());
}
