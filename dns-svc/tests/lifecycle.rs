//! The binary starts, serves health and reflection, and stops cleanly on SIGTERM.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_reflection_and_stops_on_sigterm() {
    weft_testkit::assert_service_lifecycle(env!("CARGO_BIN_EXE_dns-svc"), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_json_when_asked() {
    weft_testkit::assert_logs_json(env!("CARGO_BIN_EXE_dns-svc"), &[]).await;
}
