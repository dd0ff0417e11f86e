//! weft-docker: a Docker network plugin (libnetwork's remote network driver and IPAM driver,
//! JSON over HTTP on a unix socket) that turns `docker network create -d weft`, `docker run
//! --network`, `docker network connect` and their undoing into calls to the gateway's public
//! API (`weft.gateway.v1`), authenticated as weft-cni is (a bearer token read from a file).
//!
//! A binary of its own (`weft-docker-plugin`), not a `weft` subcommand, for the reasons
//! weft-cni is one: it is a client of the public API that runs on every Docker host, including
//! hosts that only joined a cluster, with Docker's lifecycle (it must be up before dockerd
//! looks for its socket, and restarts on its own); it needs none of the servers the `weft`
//! launcher links, and it can be installed alone.
//!
//! How a container's interface gets in: dockerd 20.10 calls `Join` before the container's
//! namespace exists (its SandboxKey is made later by runc's prestart hook), then moves the
//! interface named in the answer into the namespace itself and sets the address it got from
//! IPAM. So the Weft endpoint is made with the `weft.endpoint.handoff` driver option: the
//! agent leaves its container end in the host's namespace under that name, and Docker takes
//! it from there. The Weft sandbox's own namespace is then a placeholder; the container's
//! namespace is Docker's.

pub mod addr;
pub mod convert;
pub mod docker_api;
pub mod error;
pub mod http;
pub mod names;
pub mod plugin;
pub mod protocol;
pub mod sweep;
pub mod weft;
