//! ipam-svc integration tests: the real gRPC server over loopback, on SQLite and on a real
//! Postgres (`WEFT_TEST_DATABASE_URL`, started by scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod bad_input;
mod conformance;
mod crash;
mod exhaustion;
mod grpcurl;
mod harness;
mod mtls;
mod replicas;
mod shutdown;
mod telemetry;
