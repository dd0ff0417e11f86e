//! The sagas: one module per operation that changes more than the gateway's own store, each
//! reading top to bottom as its steps and the undo of each step.

pub mod connect;
pub mod network;
pub mod ports;
pub mod sandbox;
