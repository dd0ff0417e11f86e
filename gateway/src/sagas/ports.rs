//! Published ports of a new sandbox: the host ports already published on its host are read,
//! then the domain's rules refuse a clash (naming the holder) or pick free ports for
//! `host_port: 0`. The sandbox's record is what holds its ports: nothing is reserved before it
//! is committed, so two creations racing on one host can pick the same free port.

use crate::{
    domain::ports::{self, PortConflict, PortRecord},
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
        let taken: Vec<(String, PortRecord)> = {
            let mut conn = self.db.read().acquire().await?;
            store::sandboxes::list(&mut conn)
                .await?
                .into_iter()
                .filter(|s| s.host == host)
                .flat_map(|s| {
                    s.port_mappings
                        .into_iter()
                        .map(move |p| (s.name.clone(), p))
                })
                .collect()
        };
        ports::assign(host, &taken, ports).map_err(|c| match c {
            PortConflict::Exhausted(m) => GatewayError::Exhausted(m),
            PortConflict::Taken(m) => GatewayError::PortTaken(m),
        })
    }
}
