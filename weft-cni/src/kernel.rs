//! What the plugin reads from the kernel (never changes): links and addresses in the
//! container's namespace and the host's, through the agent's own namespace entry and link
//! lookups.

use std::{net::IpAddr, path::Path};

use driver_agent::{
    kernel::{self, Link},
    netns::{self, NetnsError},
};
use rtnetlink::Handle;

use crate::error::{CniError, code};

/// A netlink connection inside the namespace at `path`.
pub async fn open(path: &Path) -> Result<Handle, CniError> {
    netns::connect(path).await.map_err(|e| match e {
        NetnsError::NotFound { .. } => CniError::new(code::INVALID_ENV, format!("CNI_NETNS: {e}")),
        other => CniError::new(code::IO, other.to_string()),
    })
}

/// A netlink connection in the plugin's own (the host's) namespace.
pub async fn open_host() -> Result<Handle, CniError> {
    open(Path::new(driver_agent::SELF_NETNS)).await
}

/// The link named `name`, if any.
pub async fn link(handle: &Handle, name: &str) -> Result<Option<Link>, CniError> {
    kernel::link_by_name(handle, name)
        .await
        .map_err(|e| CniError::new(code::IO, e.to_string()))
}

/// The global addresses on link `index`.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<IpAddr>, CniError> {
    Ok(kernel::global_addresses(handle)
        .await
        .map_err(|e| CniError::new(code::IO, e.to_string()))?
        .into_iter()
        .filter(|(i, _)| *i == index)
        .map(|(_, ip)| ip)
        .collect())
}

/// The interface index of the namespace's default route of one family (`v6`), if any.
pub async fn default_route_oif(handle: &Handle, v6: bool) -> Result<Option<u32>, CniError> {
    let family = if v6 {
        rtnetlink::packet_route::AddressFamily::Inet6
    } else {
        rtnetlink::packet_route::AddressFamily::Inet
    };
    kernel::default_route_oif(handle, family)
        .await
        .map_err(|e| CniError::new(code::IO, e.to_string()))
}

/// A MAC address as CNI results write it.
pub fn mac(link: &Link) -> String {
    weft_runtime::mac::format(&link.mac)
}
