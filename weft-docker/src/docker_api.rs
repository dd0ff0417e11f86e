//! Docker's own API, read-only, for the two names the plugin protocol does not carry: the
//! network's and the container's. Optional (`--docker-host`): without it, Weft shows
//! `docker-<id>` names and Docker's ids as labels.
//!
//! Only calls that take no container lock are used (a network inspect, the container list,
//! which reads Docker's in-memory view): `Join` runs while dockerd holds the starting
//! container's lock, so a container inspect there would wait for itself.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;

/// Answers larger than this are refused (a container list of a few thousand containers).
const ANSWER_MAX: usize = 16 << 20;
/// Docker answers these from memory; a slow answer must not hold a Join up.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct DockerApi {
    socket: PathBuf,
}

/// A container of the list, as far as the plugin reads it.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListedContainer {
    pub id: String,
    pub names: Vec<String>,
    pub state: String,
    pub network_settings: Option<ListedNetworks>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListedNetworks {
    pub networks: Option<std::collections::BTreeMap<String, ListedEndpoint>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListedEndpoint {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

impl DockerApi {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.get_opt(path)
            .await?
            .ok_or_else(|| format!("{path}: 404 Not Found"))
    }

    /// GET `path`: `None` for a 404 (no such object).
    async fn get_opt(&self, path: &str) -> Result<Option<Value>, String> {
        let call = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("connect {}: {e}", self.socket.display()))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path)
                .header(hyper::header::HOST, "docker")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let res = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let body = Limited::new(res.into_body(), ANSWER_MAX)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status == hyper::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(format!("{path}: {status}"));
            }
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("{path}: {e}"))
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| format!("{path}: no answer within {TIMEOUT:?}"))?
    }

    /// Docker's name of network `id`.
    pub async fn network_name(&self, id: &str) -> Result<String, String> {
        let v = self.get(&format!("/v1.41/networks/{id}")).await?;
        v.get("Name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("network {id} has no name"))
    }

    /// Whether dockerd has network `id` (a 404 says it has not).
    pub async fn network_exists(&self, id: &str) -> Result<bool, String> {
        Ok(self
            .get_opt(&format!("/v1.41/networks/{id}"))
            .await?
            .is_some())
    }

    /// The container being attached to network `network_name`: the only one that is on it in
    /// Docker's settings without an endpoint yet and not running (`docker run`, `docker
    /// start`). `None` when that is not exactly one container (two started at once).
    pub async fn joining_container(
        &self,
        network_name: &str,
    ) -> Result<Option<(String, String)>, String> {
        let v = self.get("/v1.41/containers/json?all=1").await?;
        let list: Vec<ListedContainer> = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Ok(joining(&list, network_name))
    }
}

/// See [`DockerApi::joining_container`]: (id, name without its leading "/").
pub fn joining(list: &[ListedContainer], network_name: &str) -> Option<(String, String)> {
    let waiting: Vec<&ListedContainer> = list
        .iter()
        .filter(|c| {
            c.state != "running"
                && c.network_settings
                    .as_ref()
                    .and_then(|s| s.networks.as_ref())
                    .and_then(|n| n.get(network_name))
                    .is_some_and(|e| e.endpoint_id.is_empty())
        })
        .collect();
    // A new container (`docker run`) before stopped ones that are merely on the network.
    let created: Vec<&ListedContainer> = waiting
        .iter()
        .copied()
        .filter(|c| c.state == "created")
        .collect();
    let one = match (created.as_slice(), waiting.as_slice()) {
        ([one], _) | ([], [one]) => *one,
        _ => return None,
    };
    let name = one.names.first()?.trim_start_matches('/').to_owned();
    Some((one.id.clone(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> Vec<ListedContainer> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_joining_container_is_the_one_without_an_endpoint_yet() {
        // As dockerd 20.10 listed them during a Join (captured).
        let l = list(
            r#"[{"Id":"533b","Names":["/c2"],"State":"created","NetworkSettings":{"Networks":{"pn":{"NetworkID":"","EndpointID":""}}}},
                {"Id":"dddb","Names":["/c1"],"State":"running","NetworkSettings":{"Networks":{"pn":{"NetworkID":"8692","EndpointID":"df21"}}}}]"#,
        );
        assert_eq!(joining(&l, "pn"), Some(("533b".into(), "c2".into())));
        assert_eq!(joining(&l, "other"), None);
    }

    #[test]
    fn two_containers_starting_at_once_give_no_name() {
        let l = list(
            r#"[{"Id":"a","Names":["/a"],"State":"created","NetworkSettings":{"Networks":{"pn":{"EndpointID":""}}}},
                {"Id":"b","Names":["/b"],"State":"created","NetworkSettings":{"Networks":{"pn":{"EndpointID":""}}}}]"#,
        );
        assert_eq!(joining(&l, "pn"), None);
        let with_stopped = list(
            r#"[{"Id":"a","Names":["/a"],"State":"exited","NetworkSettings":{"Networks":{"pn":{"EndpointID":""}}}},
                {"Id":"b","Names":["/b"],"State":"created","NetworkSettings":{"Networks":{"pn":{"EndpointID":""}}}}]"#,
        );
        assert_eq!(joining(&with_stopped, "pn"), Some(("b".into(), "b".into())));
    }
}
