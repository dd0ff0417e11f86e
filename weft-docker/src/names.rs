//! The two names Docker's plugin protocol does not carry, read from dockerd's API when the
//! plugin was given it (`--docker-host`): the network's (a label on the Weft network) and the
//! container's (the Weft sandbox's name).

use std::time::Duration;

use weft_proto::gateway::v1 as pb;

use crate::{
    docker_api::DockerApi,
    weft::{self, Clients},
};

/// Docker's id (empty when unknown) and name of the container whose endpoint `endpoint_id`
/// is being joined, when dockerd's API is known and lists that endpoint (and no Weft sandbox
/// holds that name already). Never a guess: without an exact answer the caller names the
/// sandbox after Docker's sandbox id.
pub async fn container_of(
    docker: Option<&DockerApi>,
    gw: &mut Clients,
    net: &pb::Network,
    endpoint_id: &str,
) -> Option<(String, String)> {
    let docker = docker?;
    let docker_net = net.labels.get(weft::NETWORK_ID_LABEL)?;
    let (id, name) = match docker.endpoint_container(docker_net, endpoint_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::warn!(endpoint = %endpoint_id, "dockerd does not list the endpoint: the sandbox gets the id's name");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask dockerd for the container's name");
            return None;
        }
    };
    let taken = gw
        .sandboxes
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: name.clone(),
        })
        .await
        .is_ok_and(|s| s.into_inner().name == name);
    (!taken).then_some((id, name))
}

/// Adds Docker's network name to the labels of Weft network of Docker network `id`, once
/// dockerd shows it (a few tries: dockerd records the network after CreateNetwork returns).
pub async fn label_network_name(mut gw: Clients, docker: DockerApi, id: String) {
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(name) = docker.network_name(&id).await else {
            continue;
        };
        let Ok(Some(net)) = gw.network(&id).await else {
            return;
        };
        let mut labels = net.labels.clone();
        labels.insert(weft::NETWORK_NAME_LABEL.to_owned(), name.clone());
        let res = gw
            .networks
            .update_network(pb::UpdateNetworkRequest {
                network: net.id.clone(),
                labels,
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels".into()],
                }),
                ..Default::default()
            })
            .await;
        match res {
            Ok(_) => {
                tracing::info!(network = %net.name, docker_name = %name, "labelled with Docker's name")
            }
            Err(st) => {
                tracing::warn!(network = %net.name, error = %st.message(), "cannot label with Docker's name")
            }
        }
        return;
    }
}
