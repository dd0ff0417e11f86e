//! Overlay networks span hosts: each host that has endpoints on one is told every endpoint of
//! the network on the other hosts (`NetworkSpec.peers`: MAC, addresses and the remote host's
//! VTEP, the first underlay address it registered, IPv4 first), which its agent programs as
//! static FDB and neighbour entries. The peer list always goes whole.
//!
//! The agents learn of a change two ways: the per-host change feed (every host of the network
//! gets a new desired revision, and asks for its state again at its next heartbeat) and, at
//! once, a push: right after an endpoint of an overlay network is committed or removed, the
//! agents of the network's other hosts get `EnsureNetwork` with their new peer list (best
//! effort, in the background; the feed repairs what a push missed). Endpoints of hosts down
//! past their grace are left out.

use std::collections::HashMap;

use weft_proto::agent::v1 as apb;

use crate::{
    error::GatewayError,
    store::{self, sandboxes::Owner},
};

/// Each host's VTEP: the first IPv4 underlay address it registered, else the first address.
async fn vteps(conn: &mut sqlx::AnyConnection) -> Result<HashMap<String, String>, GatewayError> {
    Ok(store::hosts::list(conn)
        .await?
        .into_iter()
        .filter_map(|h| {
            let v4 = h
                .addresses
                .iter()
                .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok());
            let vtep = v4.or(h.addresses.first())?.clone();
            Some((h.name, vtep))
        })
        .collect())
}

/// An address without its prefix length.
fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or_default().to_owned()
}

/// The endpoints of overlay network `network_id` on hosts other than `host`, as peers.
pub(crate) async fn peers_for(
    conn: &mut sqlx::AnyConnection,
    network_id: &str,
    host: &str,
) -> Result<Vec<apb::OverlayPeer>, GatewayError> {
    let vteps = vteps(conn).await?;
    peers_with(conn, network_id, host, &vteps).await
}

/// [`peers_for`] with the hosts' VTEPs read already.
async fn peers_with(
    conn: &mut sqlx::AnyConnection,
    network_id: &str,
    host: &str,
    vteps: &HashMap<String, String>,
) -> Result<Vec<apb::OverlayPeer>, GatewayError> {
    let endpoints = store::sandboxes::endpoints_of(conn, Owner::Network, network_id).await?;
    Ok(endpoints
        .iter()
        .filter(|e| e.host != host && !e.host_down)
        .filter_map(|e| {
            let vtep = vteps.get(&e.host)?;
            Some(apb::OverlayPeer {
                endpoint_id: e.id.clone(),
                mac_address: e.mac_address.clone(),
                ipv4_address: bare(&e.ipv4_address),
                ipv6_address: bare(&e.ipv6_address),
                vtep_address: vtep.clone(),
            })
        })
        .collect())
}

/// Fills the peer lists of the overlay networks of a host's desired state (the hosts' VTEPs
/// read once, only when there is an overlay network).
pub(crate) async fn fill_peers(
    conn: &mut sqlx::AnyConnection,
    host: &str,
    state: &mut apb::DesiredState,
) -> Result<(), GatewayError> {
    let overlay = |n: &apb::NetworkSpec| n.driver == apb::Driver::Overlay as i32;
    if !state.networks.iter().any(overlay) {
        return Ok(());
    }
    let vteps = vteps(conn).await?;
    for n in state.networks.iter_mut().filter(|n| overlay(n)) {
        n.peers = peers_with(conn, &n.network_id, host, &vteps).await?;
    }
    Ok(())
}
