//! The JSON of libnetwork's remote driver protocol (moby/libnetwork `docs/remote.md`) and of
//! its IPAM protocol (`docs/ipam.md`), as dockerd 20.10 sends it. Field names are Docker's
//! (PascalCase). Unknown fields are ignored (Docker adds some between versions); a missing
//! required one is refused by the handler that needs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest request body read (Docker's requests are a few KiB; options are user input).
pub const BODY_MAX: usize = 1 << 20;

/// The media type of every answer (Docker's plugin protocol).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Every error, as the protocol has it: `{"Err": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrBody<'a> {
    #[serde(rename = "Err")]
    pub err: &'a str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolRef {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Option<BTreeMap<String, String>>,
}

/// The option of RequestAddress that asks for the network's gateway.
pub const GATEWAY_REQUEST: (&str, &str) = ("RequestAddressType", "com.docker.network.gateway");

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// Docker's keys in CreateNetwork's options.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const INTERNAL: &str = "com.docker.network.internal";
/// Docker's keys in CreateEndpoint's and Join's options.
pub const PORT_MAP: &str = "com.docker.network.portmap";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Interface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<Interface>,
    pub options: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub options: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    pub options: Option<BTreeMap<String, Value>>,
}

/// One published port as Docker puts it in `com.docker.network.portmap`.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub static_routes: Vec<Value>,
    pub disable_gateway_service: bool,
}
