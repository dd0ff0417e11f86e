//! Sockets made in the calling thread's network namespace for dns-svc: its sandbox listeners
//! (UDP and a listening TCP socket on one loopback address) and unbound client sockets. Used
//! by the socket broker ([`crate::broker`]) on a thread that entered a sandbox's namespace, and
//! by the namespace pool, which binds the listeners ahead in the namespaces it makes.

use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

/// The listen backlog of a sandbox's TCP listener.
pub(crate) const BACKLOG: i32 = 1024;

/// A socket of the calling thread's namespace, non-blocking and close-on-exec.
pub(crate) fn socket(v6: bool, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, ty.nonblocking().cloexec(), Some(proto))?;
    if v6 {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// A UDP socket and a listening TCP socket bound to `addr` in the calling thread's namespace
/// (dns-svc's listeners). The address must be the namespace's own already (loopback up): a
/// socket bound "free" before would send its answers from another address.
pub(crate) fn listeners(addr: std::net::SocketAddr) -> std::io::Result<Vec<OwnedFd>> {
    let bind_err = |proto: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot bind {proto} {addr}: {e}"))
    };
    let udp = socket(addr.is_ipv6(), Type::DGRAM, Protocol::UDP)?;
    udp.bind(&addr.into()).map_err(|e| bind_err("udp", e))?;
    let tcp = socket(addr.is_ipv6(), Type::STREAM, Protocol::TCP)?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&addr.into()).map_err(|e| bind_err("tcp", e))?;
    tcp.listen(BACKLOG)?;
    Ok(vec![udp.into(), tcp.into()])
}
