//! The overlay driver (VXLAN between hosts, a bridge per network on each): not programmed by
//! this agent yet. A kernel without VXLAN, bridges or veth pairs is refused with
//! FAILED_PRECONDITION naming what is missing; otherwise UNIMPLEMENTED.

use super::api::{NetworkDriver, need, unimplemented};
use crate::{capabilities::Features, error::AgentError, spec::Driver, spec::Network};

#[derive(Debug, Clone, Copy)]
pub struct Overlay;

#[async_trait::async_trait]
impl NetworkDriver for Overlay {
    fn kind(&self) -> Driver {
        Driver::Overlay
    }

    fn require(&self, _net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.vxlan, "VXLAN devices")?;
        need(self.kind(), kernel.bridge, "Linux bridges")?;
        need(self.kind(), kernel.veth, "veth pairs")?;
        Err(unimplemented(self.kind()))
    }

    fn usable(&self, _kernel: &Features) -> bool {
        false
    }
}
