//! Forwarding of names that are not Weft's to upstream resolvers.
//!
//! At most [`MAX_UPSTREAMS`] upstreams, tried in order with a per-try timeout; a timeout, a
//! network error, SERVFAIL or REFUSED moves on to the next, any other answer (NXDOMAIN
//! included) is final. A truncated UDP answer is asked again over TCP.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
    serialize::binary::BinDecodable,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::sockets::SocketSource;

pub const MAX_UPSTREAMS: usize = 3;

/// `"ip"` (port 53) or `"ip:port"` / `"[v6]:port"`.
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// Why one upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad answer: {0}")]
    Decode(String),
    #[error("answered {0}")]
    Rcode(ResponseCode),
}

/// The result of forwarding one query.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// The answer, when an upstream gave one.
    pub answer: Option<Message>,
    /// The upstream that answered (or the last one tried).
    pub upstream: Option<SocketAddr>,
    /// Upstreams that failed before, in order, with why.
    pub failures: Vec<(SocketAddr, String)>,
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    pub timeout: Duration,
    /// Where sockets inside a sandbox's namespace come from.
    pub sockets: SocketSource,
}

/// Which namespace a forwarded query leaves from.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// dns-svc's own: for the host's resolvers and the networks' upstreams.
    Here,
    /// The asking sandbox's (id, namespace path): for the sandbox's own `dns.servers`, so
    /// that they reach only what the sandbox itself can reach. Docker does the same: its
    /// embedded DNS server forwards to a container's own `--dns` servers from inside the
    /// container's namespace (libnetwork `resolver.go`, whose dialer runs in the
    /// sandbox's namespace through `ns.NsInvoke` / `SetupResolver`), so a container that names
    /// 127.0.0.1 asks its own loopback, never the host's.
    Sandbox { id: &'a str, netns: &'a str },
}

impl Forwarder {
    pub async fn forward(
        &self,
        upstreams: &[SocketAddr],
        name: &Name,
        qtype: RecordType,
        via: Via<'_>,
    ) -> Forwarded {
        let mut out = Forwarded::default();
        for &up in upstreams.iter().take(MAX_UPSTREAMS) {
            out.upstream = Some(up);
            match self.ask(up, name, qtype, via).await {
                Ok(msg) => {
                    out.answer = Some(msg);
                    return out;
                }
                Err(e) => {
                    tracing::debug!(upstream = %up, error = %e, "upstream failed");
                    out.failures.push((up, e.to_string()));
                }
            }
        }
        out
    }

    async fn ask(
        &self,
        up: SocketAddr,
        name: &Name,
        qtype: RecordType,
        via: Via<'_>,
    ) -> Result<Message, TryError> {
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(name.clone(), qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        q.set_edns(edns);
        let id = q.metadata.id;
        let bytes = q.to_vec().map_err(|e| TryError::Decode(e.to_string()))?;
        let msg = tokio::time::timeout(self.timeout, async {
            let sock = self.udp_socket(up, via).await?;
            let msg = udp_exchange(sock, up, &bytes, |m| check(m, id, name, qtype)).await?;
            if msg.metadata.truncation {
                let s = self.tcp_connect(up, via).await?;
                return tcp_exchange(s, &bytes, |m| check(m, id, name, qtype)).await;
            }
            Ok(msg)
        })
        .await
        .map_err(|_| TryError::Timeout(self.timeout))??;
        match msg.metadata.response_code {
            rc @ (ResponseCode::ServFail | ResponseCode::Refused) => Err(TryError::Rcode(rc)),
            _ => Ok(msg),
        }
    }
}

impl Forwarder {
    /// A fresh UDP socket for one query to `up` (a new random source port each time).
    async fn udp_socket(&self, up: SocketAddr, via: Via<'_>) -> std::io::Result<UdpSocket> {
        match via {
            Via::Here => {
                let local: SocketAddr = if up.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                UdpSocket::bind(local).await
            }
            Via::Sandbox { id, netns } => {
                UdpSocket::from_std(self.sockets.udp_client(id, netns, up.is_ipv6()).await?)
            }
        }
    }

    async fn tcp_connect(&self, up: SocketAddr, via: Via<'_>) -> std::io::Result<TcpStream> {
        match via {
            Via::Here => TcpStream::connect(up).await,
            Via::Sandbox { id, netns } => {
                let s = self.sockets.tcp_client(id, netns, up.is_ipv6()).await?;
                tokio::net::TcpSocket::from_std_stream(s).connect(up).await
            }
        }
    }
}

/// The answer to our query, or `None`: same id, a response, and the question we asked (an
/// off-path spoofer must guess the id, the port and the name).
fn check(msg: Message, id: u16, name: &Name, qtype: RecordType) -> Option<Message> {
    let same_question = msg
        .queries
        .first()
        .is_some_and(|q| q.query_type() == qtype && q.name() == name);
    (msg.metadata.id == id
        && msg.metadata.message_type == MessageType::Response
        && msg.metadata.op_code == OpCode::Query
        && same_question)
        .then_some(msg)
}

async fn udp_exchange(
    sock: UdpSocket,
    up: SocketAddr,
    bytes: &[u8],
    check: impl Fn(Message) -> Option<Message>,
) -> Result<Message, TryError> {
    sock.connect(up).await?;
    sock.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything that is not the answer to our query (stray or spoofed) is ignored.
        if let Ok(msg) = Message::from_bytes(&buf[..n])
            && let Some(msg) = check(msg)
        {
            return Ok(msg);
        }
    }
}

async fn tcp_exchange(
    mut s: TcpStream,
    bytes: &[u8],
    check: impl Fn(Message) -> Option<Message>,
) -> Result<Message, TryError> {
    let len = u16::try_from(bytes.len()).map_err(|_| TryError::Decode("query too long".into()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    s.write_all(&out).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await?;
    let msg = Message::from_bytes(&buf).map_err(|e| TryError::Decode(e.to_string()))?;
    check(msg).ok_or_else(|| TryError::Decode("answer to another query".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_and_without_port() {
        assert_eq!(parse_upstream("10.0.0.1"), "10.0.0.1:53".parse().ok());
        assert_eq!(
            parse_upstream("127.0.0.53:5300"),
            "127.0.0.53:5300".parse().ok()
        );
        assert_eq!(parse_upstream("fd00::1"), "[fd00::1]:53".parse().ok());
        assert_eq!(parse_upstream("[fd00::1]:54"), "[fd00::1]:54".parse().ok());
        assert_eq!(parse_upstream("dns.example"), None);
    }
}
