//! The gateway's own terms: validated requests (specs), the records it keeps, and the rules it
//! decides; no protobuf type and no I/O.

pub mod network;
pub mod sandbox;
