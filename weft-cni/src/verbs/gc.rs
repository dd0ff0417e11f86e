//! GC: every attachment to the config's network of the plugin's sandboxes on this host that is
//! not in `cni.dev/valid-attachments` goes (its addresses are released with it). Best effort:
//! every failure is collected, and the first is reported with a count of the others.

use std::collections::BTreeSet;

use weft_proto::gateway::v1 as pb;

use crate::{
    api::{self, CREATED_BY},
    config::NetConf,
    error::{CniError, code},
};

pub async fn run(conf: &NetConf) -> Result<(), CniError> {
    let mut gw = api::connect(conf, code::TRY_AGAIN_LATER).await?;
    let host = gw.host(conf).await?.name;
    let Some(network_id) = gw.network_id(&conf.network).await? else {
        return Ok(());
    };
    let valid: BTreeSet<(&str, &str)> = conf
        .valid_attachments
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let ours = gw
        .list(pb::ListSandboxesRequest {
            host: vec![host],
            network: vec![network_id.clone()],
            label: vec![format!("{}={}", CREATED_BY.0, CREATED_BY.1)],
            ..Default::default()
        })
        .await?;
    let mut errors = Vec::new();
    for sb in &ours {
        let stale = |e: &pb::Endpoint| {
            !valid.contains(&(sb.container_id.as_str(), e.interface_name.as_str()))
        };
        if let Err(e) = super::del::detach(&mut gw, sb, &network_id, stale).await {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        n => Err(CniError::new(
            errors[0].code,
            format!(
                "{} ({} of {} sandboxes failed)",
                errors[0].msg,
                n,
                ours.len()
            ),
        )),
    }
}
