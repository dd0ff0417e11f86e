//! STATUS: whether an ADD could succeed now. 50 when the gateway cannot be reached, 51 when
//! this host's agent is not (containers already attached may be affected: nothing repairs
//! their kernel state).

use weft_proto::gateway::v1 as pb;

use crate::{
    api,
    config::NetConf,
    error::{CniError, code},
};

pub async fn run(conf: &NetConf) -> Result<(), CniError> {
    let mut gw = api::connect(conf, code::NOT_AVAILABLE).await?;
    // The gateway answers at all (a refusal of the credentials is 50 too: ADD would fail).
    gw.hosts
        .list_hosts(pb::ListHostsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .map_err(|st| {
            let e = CniError::from_status("list the hosts", &st);
            CniError::new(code::NOT_AVAILABLE, e.msg)
        })?;
    // No host of this machine's: no agent serves it.
    let host = gw
        .host(conf)
        .await
        .map_err(|e| CniError::new(code::NOT_AVAILABLE_AFFECTED, e.msg))?;
    if host.state != pb::HostState::Up as i32 {
        return Err(CniError::new(
            code::NOT_AVAILABLE_AFFECTED,
            format!(
                "the driver-agent of host {} sends no heartbeats (host down)",
                host.name
            ),
        ));
    }
    if !conf.network.is_empty() && gw.network_id(&conf.network).await?.is_none() {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("network {:?} does not exist", conf.network),
        ));
    }
    Ok(())
}
