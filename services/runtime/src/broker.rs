//! The socket broker's wire format: how dns-svc (unprivileged) asks the driver-agent (root) for
//! sockets made inside a sandbox's network namespace, and how they come back (`SCM_RIGHTS`).
//!
//! A socket belongs to the namespace it was created in for its whole life, whoever holds it
//! later: so the agent, which already enters namespaces, makes the sockets there and hands
//! them over, and dns-svc needs neither `CAP_SYS_ADMIN` (setns) nor `CAP_NET_BIND_SERVICE`
//! (port 53). The agent answers only the uid it was told (`SO_PEERCRED`).
//!
//! One request per connection, one line of text each way (easy to read in a trace):
//!
//! ```text
//! v1 listeners <sandbox id> <loopback ip:port>   → ok 2   + [UDP socket, TCP listener], bound
//! v1 udp <sandbox id> 4|6                          → ok 1   + [UDP socket], unbound
//! v1 tcp <sandbox id> 4|6                          → ok 1   + [TCP socket], unbound
//!                                                  → err <code> <message>
//! ```
//!
//! Limits: a request is at most [`MAX_REQUEST`] bytes and a reply [`MAX_REPLY`]; a reply
//! carries at most [`MAX_FDS`] descriptors; sandbox ids are 1 to 64 characters of letters,
//! digits, `-`, `_`, `.` (not starting with `.`), as the agent takes them.

use std::{
    io::{IoSlice, IoSliceMut},
    mem::MaybeUninit,
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
    time::Duration,
};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, Interest},
    net::UnixStream,
};

/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 256;
/// The longest reply line, newline included.
pub const MAX_REPLY: usize = 512;
/// The most descriptors one reply carries.
pub const MAX_FDS: usize = 2;
/// The longest sandbox id.
pub const MAX_SANDBOX_ID: usize = 64;

/// What dns-svc asks for, for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A UDP socket and a listening TCP socket, both bound to `addr` (a loopback address)
    /// in the sandbox's namespace.
    Listeners { sandbox: String, addr: SocketAddr },
    /// An unbound UDP socket made in the sandbox's namespace (IPv6 when `v6`).
    Udp { sandbox: String, v6: bool },
    /// An unbound TCP socket made in the sandbox's namespace (IPv6 when `v6`).
    Tcp { sandbox: String, v6: bool },
}

impl Request {
    pub fn sandbox(&self) -> &str {
        match self {
            Self::Listeners { sandbox, .. }
            | Self::Udp { sandbox, .. }
            | Self::Tcp { sandbox, .. } => sandbox,
        }
    }

    /// How many descriptors the reply carries.
    pub fn fds(&self) -> usize {
        match self {
            Self::Listeners { .. } => 2,
            Self::Udp { .. } | Self::Tcp { .. } => 1,
        }
    }

    /// The request line, newline included.
    pub fn encode(&self) -> String {
        let fam = |v6: bool| if v6 { "6" } else { "4" };
        match self {
            Self::Listeners { sandbox, addr } => format!("v1 listeners {sandbox} {addr}\n"),
            Self::Udp { sandbox, v6 } => format!("v1 udp {sandbox} {}\n", fam(*v6)),
            Self::Tcp { sandbox, v6 } => format!("v1 tcp {sandbox} {}\n", fam(*v6)),
        }
    }

    /// Parses one request line (with or without its newline); the error says what is wrong.
    pub fn decode(line: &[u8]) -> Result<Self, String> {
        if line.len() > MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
        let line = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_owned())?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let words: Vec<&str> = line.split(' ').collect();
        let [version, kind, sandbox, arg] = words[..] else {
            return Err("expected `v1 <kind> <sandbox id> <argument>`".into());
        };
        if version != "v1" {
            return Err(format!("unknown version {version:?}: this agent speaks v1"));
        }
        check_sandbox_id(sandbox)?;
        let sandbox = sandbox.to_owned();
        let family = |a: &str| match a {
            "4" => Ok(false),
            "6" => Ok(true),
            _ => Err(format!("address family {a:?}: expected 4 or 6")),
        };
        match kind {
            "listeners" => {
                let addr: SocketAddr = arg
                    .parse()
                    .map_err(|_| format!("listen address {arg:?}: expected ip:port"))?;
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "listen address {addr}: only a loopback address is served inside a sandbox"
                    ));
                }
                Ok(Self::Listeners { sandbox, addr })
            }
            "udp" => Ok(Self::Udp {
                sandbox,
                v6: family(arg)?,
            }),
            "tcp" => Ok(Self::Tcp {
                sandbox,
                v6: family(arg)?,
            }),
            _ => Err(format!(
                "unknown kind {kind:?}: expected listeners, udp or tcp"
            )),
        }
    }
}

/// The sandbox id alphabet the agent uses for namespace and directory names.
pub fn check_sandbox_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SANDBOX_ID
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sandbox id {:?}: 1 to {MAX_SANDBOX_ID} letters, digits, '-', '_' or '.', not starting with '.'",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// Why the broker refused or failed a request (the reply's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request does not parse or breaks a limit.
    Invalid,
    /// No such sandbox on this host (or one without a namespace of its own).
    NotFound,
    /// The caller's uid is not the one the broker serves.
    Denied,
    /// Too many requests at once.
    Busy,
    /// Making the sockets failed (the namespace went away, the address is taken, …).
    Failed,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::NotFound => "not-found",
            Self::Denied => "denied",
            Self::Busy => "busy",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invalid" => Self::Invalid,
            "not-found" => Self::NotFound,
            "denied" => Self::Denied,
            "busy" => Self::Busy,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// The reply line: `ok <n>` (the descriptors ride along) or `err <code> <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(usize),
    Err(Code, String),
}

impl Reply {
    /// The reply line, newline included, within [`MAX_REPLY`]: a message is cut and kept to
    /// one line of printable characters.
    pub fn encode(&self) -> String {
        match self {
            Self::Ok(n) => format!("ok {n}\n"),
            Self::Err(code, msg) => {
                let room = MAX_REPLY - code.as_str().len() - 6;
                let msg: String = msg
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .scan(0, |len, c| {
                        *len += c.len_utf8();
                        (*len <= room).then_some(c)
                    })
                    .collect();
                format!("err {} {msg}\n", code.as_str())
            }
        }
    }

    pub fn decode(line: &[u8]) -> Result<Self, String> {
        let line = std::str::from_utf8(line).map_err(|_| "reply is not UTF-8".to_owned())?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        if let Some(n) = line.strip_prefix("ok ") {
            let n: usize = n.parse().map_err(|_| format!("bad reply {line:?}"))?;
            if n > MAX_FDS {
                return Err(format!("reply announces {n} descriptors"));
            }
            return Ok(Self::Ok(n));
        }
        let rest = line
            .strip_prefix("err ")
            .ok_or_else(|| format!("bad reply {line:?}"))?;
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = Code::parse(code).ok_or_else(|| format!("bad reply code {code:?}"))?;
        Ok(Self::Err(code, msg.to_owned()))
    }
}

/// Why a call to the broker gave no sockets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error("socket broker {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("socket broker {path}: no reply within {timeout:?}")]
    Timeout { path: String, timeout: Duration },
    #[error("socket broker {path}: {message}")]
    Protocol { path: String, message: String },
    #[error("socket broker refused ({code:?}): {message}")]
    Refused { code: Code, message: String },
}

/// Asks the broker at `path` for `request`'s sockets, within `timeout`.
pub async fn call(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Vec<OwnedFd>, BrokerError> {
    let shown = path.display().to_string();
    let io = |source| BrokerError::Io {
        path: shown.clone(),
        source,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(io)?;
        stream
            .write_all(request.encode().as_bytes())
            .await
            .map_err(io)?;
        let (line, fds) = recv_line(&stream).await.map_err(io)?;
        Ok::<_, BrokerError>((line, fds))
    };
    let (line, fds) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| BrokerError::Timeout {
            path: shown.clone(),
            timeout,
        })??;
    let protocol = |message: String| BrokerError::Protocol {
        path: shown.clone(),
        message,
    };
    match Reply::decode(&line).map_err(protocol)? {
        Reply::Ok(n) if n == request.fds() && fds.len() == n => Ok(fds),
        Reply::Ok(n) => Err(protocol(format!(
            "{} descriptors came with `ok {n}`, {} were asked for",
            fds.len(),
            request.fds()
        ))),
        Reply::Err(code, message) => Err(BrokerError::Refused { code, message }),
    }
}

/// Reads one reply line (at most [`MAX_REPLY`] bytes) and the descriptors that came with it.
async fn recv_line(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut buf = [0u8; MAX_REPLY];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let (n, got) = stream
            .async_io(Interest::READABLE, || {
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    stream.as_fd(),
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let mut got = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = m {
                        got.extend(rights);
                    }
                }
                Ok((msg.bytes, got))
            })
            .await?;
        fds.extend(got);
        if fds.len() > MAX_FDS {
            return Err(std::io::Error::other("too many descriptors in the reply"));
        }
        line.extend_from_slice(&buf[..n]);
        if line.ends_with(b"\n") {
            return Ok((line, fds));
        }
        if n == 0 || line.len() >= MAX_REPLY {
            return Err(std::io::Error::other("reply cut short or too long"));
        }
    }
}

/// Server side: reads one request line of at most [`MAX_REQUEST`] bytes.
pub async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut buf = [0u8; MAX_REQUEST];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?;
        if n == 0 {
            return Err("connection closed before a whole request".into());
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            if end + 1 != line.len() {
                return Err("one request per connection".into());
            }
            return Request::decode(&line);
        }
        if line.len() >= MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
    }
}

/// Server side: sends `reply` with `fds` attached (at most [`MAX_FDS`]).
pub async fn send_reply(
    stream: &mut UnixStream,
    reply: &Reply,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other("too many descriptors for one reply"));
    }
    let line = reply.encode();
    let bytes = line.as_bytes();
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(std::io::Error::other("no room for the descriptors"));
            }
            Ok(rustix::net::sendmsg(
                stream.as_fd(),
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )?)
        })
        .await?;
    // The descriptors went with the first byte; the rest of a (rarely) partial line follows.
    stream.write_all(&bytes[sent..]).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Listeners {
                sandbox: "3f2a-b_c.d".into(),
                addr: "127.0.0.11:53".parse().unwrap(),
            },
            Request::Listeners {
                sandbox: "x".into(),
                addr: "[::1]:53".parse().unwrap(),
            },
            Request::Udp {
                sandbox: "s1".into(),
                v6: false,
            },
            Request::Tcp {
                sandbox: "s1".into(),
                v6: true,
            },
        ] {
            let line = r.encode();
            assert!(line.len() <= MAX_REQUEST && line.ends_with('\n'));
            assert_eq!(Request::decode(line.as_bytes()).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn hostile_requests_are_refused_with_the_reason() {
        let long = format!("v1 udp {} 4\n", "a".repeat(MAX_REQUEST));
        let id65 = format!("v1 udp {} 4", "a".repeat(65));
        for (line, why) in [
            (long.as_str(), "longer than 256"),
            (id65.as_str(), "sandbox id"),
            ("v2 udp s 4", "unknown version"),
            ("v1 udp s 4 extra", "expected `v1"),
            ("v1 udp s", "expected `v1"),
            ("", "expected `v1"),
            ("v1 raw s 4", "unknown kind"),
            ("v1 udp s 5", "address family"),
            ("v1 udp ../../etc 4", "sandbox id"),
            ("v1 udp .hidden 4", "sandbox id"),
            ("v1 udp s\u{e9} 4", "sandbox id"),
            ("v1 udp s\t 4", "sandbox id"),
            ("v1 listeners s 10.0.0.1:53", "only a loopback"),
            ("v1 listeners s 0.0.0.0:53", "only a loopback"),
            ("v1 listeners s [::]:53", "only a loopback"),
            ("v1 listeners s 127.0.0.11", "expected ip:port"),
            ("v1  udp s 4", "expected `v1"),
        ] {
            let e = Request::decode(line.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{line:?}: {e}");
        }
        assert!(Request::decode(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn replies_round_trip_and_stay_one_bounded_line() {
        for r in [
            Reply::Ok(0),
            Reply::Ok(2),
            Reply::Err(Code::NotFound, "sandbox s is not on this host".into()),
            Reply::Err(Code::Denied, String::new()),
        ] {
            assert_eq!(Reply::decode(r.encode().as_bytes()).unwrap(), r);
        }
        let long = Reply::Err(Code::Failed, "é\nx".repeat(1000)).encode();
        assert!(long.len() <= MAX_REPLY, "{}", long.len());
        assert_eq!(long.matches('\n').count(), 1);
        assert!(Reply::decode(b"ok 3\n").is_err(), "more than MAX_FDS");
        assert!(Reply::decode(b"err nope x\n").is_err());
        assert!(Reply::decode(b"hello\n").is_err());
    }

    #[tokio::test]
    async fn descriptors_cross_with_the_reply() {
        let dir = std::env::temp_dir().join(format!("weft-broker-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let req = read_request(&mut s).await.unwrap();
            let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let ports = (a.local_addr().unwrap(), b.local_addr().unwrap());
            send_reply(&mut s, &Reply::Ok(2), &[a.as_fd(), b.as_fd()])
                .await
                .unwrap();
            (req, ports)
        });
        let req = Request::Listeners {
            sandbox: "s1".into(),
            addr: "127.0.0.11:53".parse().unwrap(),
        };
        let fds = call(&path, &req, Duration::from_secs(5)).await.unwrap();
        let (got, ports) = server.await.unwrap();
        assert_eq!(got, req);
        let socks: Vec<std::net::UdpSocket> = fds.into_iter().map(Into::into).collect();
        assert_eq!(socks[0].local_addr().unwrap(), ports.0);
        assert_eq!(socks[1].local_addr().unwrap(), ports.1);

        // A refusal comes back as such, with its message.
        let listener = tokio::net::UnixListener::bind({
            let _ = std::fs::remove_file(&path);
            &path
        })
        .unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = read_request(&mut s).await;
            let r = Reply::Err(Code::NotFound, "sandbox s1 is not on this host".into());
            send_reply(&mut s, &r, &[]).await.unwrap();
        });
        let e = call(&path, &req, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(e, BrokerError::Refused { code: Code::NotFound, ref message } if message.contains("s1")),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
