//! The none driver: the sandbox keeps only its loopback (brought up when the sandbox is
//! created), so there is nothing to program and nothing the kernel must have.

use super::api::NetworkDriver;
use crate::{capabilities::Features, error::AgentError, spec::Driver, spec::Network};

/// (Not `None`, which would shadow `Option::None` wherever it is imported.)
#[derive(Debug, Clone, Copy)]
pub struct NoNetwork;

#[async_trait::async_trait]
impl NetworkDriver for NoNetwork {
    fn kind(&self) -> Driver {
        Driver::None
    }

    fn require(&self, _net: &Network, _kernel: &Features) -> Result<(), AgentError> {
        Ok(())
    }

    fn usable(&self, _kernel: &Features) -> bool {
        true
    }
}
