//! The gateway's own terms: requests as asked (`Raw*`), validated specs, the records it keeps,
//! and the rules it decides. Pure: no protobuf type and no I/O; the gRPC edge converts into
//! these types once (`from_pb`) and out of them once (`to_pb`).

pub mod check;
pub mod endpoint;
pub mod host;
pub mod limits;
pub mod list;
pub mod network;
pub mod parent;
pub mod ports;
pub mod sandbox;
