//! What every Weft service needs once: shared command-line flags, tracing, the gRPC server
//! bootstrap (health, reflection, graceful shutdown) and the mapping from domain errors to
//! gRPC statuses.

pub mod config;
pub mod error;
pub mod grpc;
pub mod shutdown;
pub mod telemetry;

pub use config::{CommonArgs, LogFormat};
pub use error::{FieldViolation, internal, invalid_argument};
pub use grpc::GrpcServer;
