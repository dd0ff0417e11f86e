//! weft-identity's integration tests: one binary, a module per topic.

mod mtls;
mod optional;
mod pki;
mod reload;
mod support;
