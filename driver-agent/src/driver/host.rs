//! The host driver: the sandbox uses the host's own namespace, so there is nothing to program
//! and nothing the kernel must have.

use super::api::NetworkDriver;
use crate::{capabilities::Features, error::AgentError, spec::Driver, spec::Network};

#[derive(Debug, Clone, Copy)]
pub struct Host;

#[async_trait::async_trait]
impl NetworkDriver for Host {
    fn kind(&self) -> Driver {
        Driver::Host
    }

    fn require(&self, _net: &Network, _kernel: &Features) -> Result<(), AgentError> {
        Ok(())
    }

    fn usable(&self, _kernel: &Features) -> bool {
        true
    }
}
