//! The binary starts, serves health and reflection, logs JSON when asked, and stops cleanly on
//! SIGTERM. ipam-svc is not running: the gateway serves anyway and keeps retrying in the
//! background to create the predefined networks.

fn args(dir: &tempfile::TempDir) -> Vec<String> {
    vec![
        "--database-url".into(),
        format!("sqlite://{}/gw.db", dir.path().display()),
        "--ipam".into(),
        "http://127.0.0.1:1".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_reflection_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    weft_testkit::assert_service_lifecycle(env!("CARGO_BIN_EXE_gateway"), &args(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    weft_testkit::assert_logs_json(env!("CARGO_BIN_EXE_gateway"), &args(&dir)).await;
}
