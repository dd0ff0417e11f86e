//! The macvlan driver (a macvlan device on the network's parent per endpoint): not programmed
//! by this agent yet. A kernel without macvlan, or without 802.1Q for a parent named like a
//! VLAN sub-interface (`eth0.10`), is refused with FAILED_PRECONDITION naming what is missing;
//! otherwise UNIMPLEMENTED.

use super::api::{NetworkDriver, need, need_vlan_parent, unimplemented};
use crate::{capabilities::Features, error::AgentError, spec::Driver, spec::Network};

#[derive(Debug, Clone, Copy)]
pub struct Macvlan;

#[async_trait::async_trait]
impl NetworkDriver for Macvlan {
    fn kind(&self) -> Driver {
        Driver::Macvlan
    }

    fn require(&self, net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.macvlan, "macvlan devices")?;
        need_vlan_parent(self.kind(), net, kernel)?;
        Err(unimplemented(self.kind()))
    }

    fn usable(&self, _kernel: &Features) -> bool {
        false
    }
}
