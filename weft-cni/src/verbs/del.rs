//! DEL: the container's endpoint on the network goes, and its sandbox with its last endpoint.
//! Whatever is already gone (sandbox, endpoint, namespace, network) is success, so DEL may
//! run twice, without a namespace, and after a failed ADD.

use weft_proto::gateway::v1 as pb;

use crate::{
    api::{self, Gateway},
    config::NetConf,
    env::CniEnv,
    error::{CniError, code},
};

pub async fn run(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let mut gw = api::connect(conf, code::TRY_AGAIN_LATER).await?;
    let host = gw.host(conf).await?.name;
    let Some(sb) = gw.sandbox_of(&env.container_id, &host).await? else {
        return Ok(());
    };
    let Some(network_id) = gw.network_id(&conf.network).await? else {
        return Ok(());
    };
    detach(&mut gw, &sb, &network_id, |e| {
        e.interface_name == env.ifname
    })
    .await
}

/// Disconnects the endpoints of `sb` on `network_id` that `pick` selects; deletes the sandbox
/// when the plugin made it and nothing is left attached.
pub async fn detach(
    gw: &mut Gateway,
    sb: &pb::Sandbox,
    network_id: &str,
    pick: impl Fn(&pb::Endpoint) -> bool,
) -> Result<(), CniError> {
    let (going, staying): (Vec<_>, Vec<_>) = sb
        .endpoints
        .iter()
        .partition(|e| e.network_id == network_id && pick(e));
    if going.is_empty() {
        return Ok(());
    }
    if staying.is_empty() && api::is_ours(sb) {
        return gw.delete(&sb.id).await;
    }
    for ep in going {
        gw.disconnect(&sb.id, &ep.network_id).await?;
    }
    Ok(())
}
