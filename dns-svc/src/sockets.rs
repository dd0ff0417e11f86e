//! Where the sockets that live in a sandbox's namespace come from: the listeners on
//! 127.0.0.11:53 and the client sockets that forward a sandbox's queries to the sandbox's own
//! DNS servers.
//!
//! - [`SocketSource::Broker`] (what `weft up` runs): the driver-agent makes them inside the
//!   namespace and hands them over (`SCM_RIGHTS`, see `weft_runtime::broker`); dns-svc needs
//!   no privilege at all.
//! - [`SocketSource::Setns`] (development only, when no `--broker` is given): dns-svc enters
//!   the namespace itself on a short-lived thread, which needs root (`CAP_SYS_ADMIN`).
//!
//! Either way a socket stays in the namespace it was made in, whichever thread drives it. The
//! binding itself (`bind`: UDP and TCP on one port) is here too, for the operator listener in
//! the service's own namespace as for the sandbox listeners.

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use weft_runtime::broker::{self, Request};

use crate::error::ListenError;

/// Time allowed to one broker call.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds UDP and TCP on `addr` in the current namespace. With port 0, one port free for both
/// protocols is searched (the TCP side of the UDP port may be taken).
pub(crate) fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), ListenError> {
    bind_with(addr, || {
        let udp = UdpSocket::bind(addr)?;
        udp.set_nonblocking(true)?;
        Ok(udp)
    })
}

/// [`bind`], with the UDP socket made by `udp`.
pub(crate) fn bind_with(
    addr: SocketAddr,
    udp: impl Fn() -> std::io::Result<UdpSocket>,
) -> Result<(UdpSocket, TcpListener), ListenError> {
    let mut tries = 0;
    loop {
        match bind_once(addr, &udp) {
            Err(ListenError::Bind { proto: "tcp", .. }) if addr.port() == 0 && tries < 20 => {
                tries += 1;
            }
            res => return res,
        }
    }
}

fn bind_once(
    addr: SocketAddr,
    udp: impl Fn() -> std::io::Result<UdpSocket>,
) -> Result<(UdpSocket, TcpListener), ListenError> {
    let bind_err = |proto| {
        move |source| ListenError::Bind {
            proto,
            addr,
            source,
        }
    };
    let udp = udp().map_err(bind_err("udp"))?;
    // The TCP listener takes the UDP socket's port, so port 0 gives one port for both.
    let addr = udp.local_addr().map_err(bind_err("udp"))?;
    let tcp = TcpListener::bind(addr).map_err(bind_err("tcp"))?;
    tcp.set_nonblocking(true).map_err(bind_err("tcp"))?;
    Ok((udp, tcp))
}

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEPORT`.
pub(crate) fn reuse_port_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

#[derive(Debug, Clone)]
pub enum SocketSource {
    /// The driver-agent's socket broker at this path.
    Broker(PathBuf),
    /// Enter the namespace from a thread of our own (needs root).
    Setns,
}

impl SocketSource {
    /// UDP and TCP listeners bound to `addr` in the namespace of sandbox `id` (at `netns`).
    pub async fn listeners(
        &self,
        id: &str,
        netns: &str,
        addr: SocketAddr,
    ) -> Result<(UdpSocket, TcpListener), ListenError> {
        match self {
            Self::Broker(path) => {
                let req = Request::Listeners {
                    sandbox: id.to_owned(),
                    addr,
                };
                let fds = broker::call(path, &req, BROKER_TIMEOUT).await?;
                let mut fds = fds.into_iter();
                let (Some(udp), Some(tcp)) = (fds.next(), fds.next()) else {
                    return Err(ListenError::Thread(std::io::Error::other(
                        "the broker sent fewer sockets than asked",
                    )));
                };
                let (udp, tcp) = (UdpSocket::from(udp), TcpListener::from(tcp));
                let bind_err = |proto| {
                    move |source| ListenError::Bind {
                        proto,
                        addr,
                        source,
                    }
                };
                udp.set_nonblocking(true).map_err(bind_err("udp"))?;
                tcp.set_nonblocking(true).map_err(bind_err("tcp"))?;
                Ok((udp, tcp))
            }
            Self::Setns => in_netns(netns, move || bind(addr)).await?,
        }
    }

    /// An unbound UDP socket (IPv6 when `v6`) in the namespace of sandbox `id`, non-blocking.
    pub async fn udp_client(&self, id: &str, netns: &str, v6: bool) -> std::io::Result<UdpSocket> {
        let fd = self
            .client(
                id,
                netns,
                v6,
                |sandbox, v6| Request::Udp { sandbox, v6 },
                Type::DGRAM,
            )
            .await?;
        let s = UdpSocket::from(fd);
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// An unconnected TCP socket (IPv6 when `v6`) in the namespace of sandbox `id`,
    /// non-blocking.
    pub async fn tcp_client(&self, id: &str, netns: &str, v6: bool) -> std::io::Result<TcpStream> {
        let fd = self
            .client(
                id,
                netns,
                v6,
                |sandbox, v6| Request::Tcp { sandbox, v6 },
                Type::STREAM,
            )
            .await?;
        let s = TcpStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(s)
    }

    async fn client(
        &self,
        id: &str,
        netns: &str,
        v6: bool,
        request: impl FnOnce(String, bool) -> Request,
        ty: Type,
    ) -> std::io::Result<std::os::fd::OwnedFd> {
        match self {
            Self::Broker(path) => {
                let fds = broker::call(path, &request(id.to_owned(), v6), BROKER_TIMEOUT)
                    .await
                    .map_err(std::io::Error::other)?;
                fds.into_iter()
                    .next()
                    .ok_or_else(|| std::io::Error::other("the broker sent no socket"))
            }
            Self::Setns => {
                let made = in_netns(netns, move || {
                    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
                    let proto = if ty == Type::DGRAM {
                        Protocol::UDP
                    } else {
                        Protocol::TCP
                    };
                    Socket::new(domain, ty.cloexec(), Some(proto))
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok(made.into())
            }
        }
    }
}

/// Runs `f` on a thread of its own that entered the network namespace at `path`; the thread
/// exits afterwards, so no tokio thread ever changes namespace.
async fn in_netns<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ListenError> {
    use weft_runtime::netns::{NetnsError as E, Target, run_in};
    run_in(Target::Path(path.into()), "dns-netns", f)
        .await
        .map_err(|e| match e {
            E::Open { source, .. } => ListenError::OpenNetns {
                path: path.to_owned(),
                source,
            },
            E::Enter { source, .. } => ListenError::Setns {
                path: path.to_owned(),
                source,
            },
            E::Thread(e) => ListenError::Thread(e),
            other => ListenError::Thread(std::io::Error::other(other.to_string())),
        })
}
