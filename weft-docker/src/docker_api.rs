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

    /// The container that endpoint `endpoint_id` of network `network_id` belongs to: (id,
    /// name), the id empty when the container list does not show that name once. Exact even
    /// while several containers start at once: dockerd names an endpoint after its container
    /// and records it (network inspect lists it) before it calls Join.
    pub async fn endpoint_container(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<(String, String)>, String> {
        let net = self.get(&format!("/v1.41/networks/{network_id}")).await?;
        let Some((key, name)) = endpoint_owner(&net, endpoint_id) else {
            return Ok(None);
        };
        if !key.starts_with(UNJOINED_PREFIX) {
            return Ok(Some((key, name)));
        }
        let v = self.get("/v1.41/containers/json?all=1").await?;
        let list: Vec<ListedContainer> = serde_json::from_value(v).map_err(|e| e.to_string())?;
        let id = container_named(&list, &name).unwrap_or_default();
        Ok(Some((id, name)))
    }
}

/// How dockerd keys an endpoint in network inspect's `Containers` before its container's
/// sandbox is recorded on it (during Join): `ep-<endpoint id>`, else the container id.
const UNJOINED_PREFIX: &str = "ep-";

/// In network inspect's answer `net`, the entry of endpoint `endpoint_id`: its key (a
/// container id, or `ep-<endpoint id>`) and the container's name (the endpoint's name).
pub fn endpoint_owner(net: &Value, endpoint_id: &str) -> Option<(String, String)> {
    let containers = net.get("Containers")?.as_object()?;
    let (key, entry) = containers
        .iter()
        .find(|(_, c)| c.get("EndpointID").and_then(Value::as_str) == Some(endpoint_id))?;
    let name = entry.get("Name")?.as_str()?.trim_start_matches('/');
    (!name.is_empty()).then(|| (key.clone(), name.to_owned()))
}

/// The id of the one container named `name` (Docker's names are unique).
pub fn container_named(list: &[ListedContainer], name: &str) -> Option<String> {
    let mut found = list
        .iter()
        .filter(|c| c.names.iter().any(|n| n.trim_start_matches('/') == name));
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one.id.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_names_its_container_even_among_several_starting() {
        // As dockerd 20.10 answers network inspect while two containers join at once: neither
        // has its sandbox recorded yet, one is running.
        let net: Value = serde_json::from_str(
            r#"{"Name":"pn","Containers":{
                "ep-aaa1":{"Name":"c3","EndpointID":"aaa1","IPv4Address":"10.0.0.4/24"},
                "ep-bbb2":{"Name":"c4","EndpointID":"bbb2","IPv4Address":"10.0.0.5/24"},
                "dddb":{"Name":"c1","EndpointID":"df21","IPv4Address":"10.0.0.2/24"}}}"#,
        )
        .unwrap();
        assert_eq!(
            endpoint_owner(&net, "bbb2"),
            Some(("ep-bbb2".into(), "c4".into()))
        );
        assert_eq!(
            endpoint_owner(&net, "aaa1"),
            Some(("ep-aaa1".into(), "c3".into()))
        );
        assert_eq!(
            endpoint_owner(&net, "df21"),
            Some(("dddb".into(), "c1".into()))
        );
        assert_eq!(endpoint_owner(&net, "ccc3"), None);
        assert_eq!(endpoint_owner(&json_null(), "aaa1"), None);
    }

    fn json_null() -> Value {
        Value::Null
    }

    #[test]
    fn a_container_is_found_by_its_exact_name() {
        let list: Vec<ListedContainer> = serde_json::from_str(
            r#"[{"Id":"533b","Names":["/c2"]},{"Id":"dddb","Names":["/c1"]},{"Id":"eeee","Names":["/c10"]}]"#,
        )
        .unwrap();
        assert_eq!(container_named(&list, "c1"), Some("dddb".into()));
        assert_eq!(container_named(&list, "c"), None);
        let twice: Vec<ListedContainer> =
            serde_json::from_str(r#"[{"Id":"a","Names":["/x"]},{"Id":"b","Names":["/x"]}]"#)
                .unwrap();
        assert_eq!(container_named(&twice, "x"), None);
    }
}
