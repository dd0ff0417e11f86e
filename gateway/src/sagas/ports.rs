//! Published ports of a new sandbox: the mappings already published on its host that meet the
//! ports asked for are read (by index: the cost does not grow with the host's sandboxes), then
//! the domain's rules refuse a clash (naming the holder) or pick free ports for `host_port: 0`.
//! The ports are stored with the sandbox when it is committed: nothing is reserved before, so
//! two creations racing on one host can pick the same free port.

use crate::{
    domain::ports::{self, EPHEMERAL_FIRST, EPHEMERAL_LAST, PortConflict, PortRecord},
    engine::Gateway,
    error::GatewayError,
    store,
};

impl Gateway {
    /// Checks `ports` against those published on `host` and fills in chosen host ports.
    pub(crate) async fn assign_ports(
        &self,
        host: &str,
        ports: &mut [PortRecord],
    ) -> Result<(), GatewayError> {
        if ports.is_empty() {
            return Ok(());
        }
        // Only the mappings that meet the ports asked for (a host port 0 is chosen in the
        // ephemeral range), read by index.
        let (first, last) = ports
            .iter()
            .map(|p| match p.host_port {
                0 => (EPHEMERAL_FIRST, EPHEMERAL_LAST),
                h => (h, h.saturating_add(p.range.max(1) - 1)),
            })
            .fold((u32::MAX, 0), |(a, b), (f, l)| (a.min(f), b.max(l)));
        let taken: Vec<(String, PortRecord)> = {
            let mut conn = self.db.read().acquire().await?;
            store::ports::overlapping(&mut conn, host, first, last).await?
        };
        ports::assign(host, &taken, ports).map_err(|c| match c {
            PortConflict::Exhausted(m) => GatewayError::Exhausted(m),
            PortConflict::Taken(m) => GatewayError::PortTaken(m),
        })
    }
}
