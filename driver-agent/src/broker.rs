//! The socket broker: dns-svc, which runs without any privilege, gets the sockets it needs
//! inside each sandbox's namespace from the agent (root, and already entering namespaces):
//! the listeners on 127.0.0.11:53 and client sockets for forwarding to the sandbox's own DNS
//! servers from the sandbox's side (wire format: [`weft_runtime::broker`]).
//!
//! Why not capabilities for dns-svc (issue 11, class 6): entering namespaces takes
//! `CAP_SYS_ADMIN`, which is nearly root; handing over sockets leaves dns-svc with nothing a
//! compromise could turn against the host, and the agent decides which namespaces (only those
//! of its sandboxes) and which addresses (only loopback for listeners) are served.
//!
//! Access: a Unix socket, mode 0660, group of the dns-svc user, in a directory the agent makes
//! 0750 when it is missing; each connection's `SO_PEERCRED` uid must be the one configured.
//! Limits: [`MAX_CONNECTIONS`] at once (more get `busy`), a request must arrive within
//! [`REQUEST_TIMEOUT`], one request per connection, at most two descriptors per reply.

use std::{
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::PermissionsExt as _,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use socket2::{Protocol, Type};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::Semaphore,
    task::JoinHandle,
};
use weft_runtime::broker::{self, Code, Reply, Request};

use crate::{Agent, netns, sockets};

/// Connections served at once; more are answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Time allowed to a client to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and for whom the broker listens.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub path: PathBuf,
    /// The only uid served (dns-svc's).
    pub uid: u32,
    /// The socket's group (dns-svc's), so that it can connect; `None`: the agent's own.
    pub gid: Option<u32>,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerStartError {
    #[error("socket broker {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("socket broker {0}: something that is not a socket is in the way")]
    NotASocket(PathBuf),
}

/// Binds the broker's socket and serves it until the returned task is aborted.
pub fn start(agent: Arc<Agent>, config: BrokerConfig) -> Result<JoinHandle<()>, BrokerStartError> {
    let listener = bind(&config)?;
    tracing::info!(path = %config.path.display(), uid = config.uid, "socket broker listening");
    Ok(tokio::spawn(serve(agent, listener, config.uid)))
}

fn bind(config: &BrokerConfig) -> Result<UnixListener, BrokerStartError> {
    let path = &config.path;
    let io = |what| {
        move |source| BrokerStartError::Io {
            path: path.clone(),
            what,
            source,
        }
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io("cannot create its directory"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(io("cannot set its directory's mode"))?;
        std::os::unix::fs::chown(dir, None, config.gid)
            .map_err(io("cannot give its directory to the dns-svc group"))?;
    }
    // A socket left by an earlier run is replaced; anything else is not ours to remove.
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(io("cannot remove the old socket"))?;
        }
        Ok(_) => return Err(BrokerStartError::NotASocket(path.clone())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io("cannot bind"))?;
    std::os::unix::fs::chown(path, None, config.gid)
        .map_err(io("cannot give the socket to the dns-svc group"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("cannot set the socket's mode"))?;
    Ok(listener)
}

async fn serve(agent: Arc<Agent>, listener: UnixListener, uid: u32) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(error) => {
                tracing::warn!(%error, "socket broker: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let r = Reply::Err(Code::Busy, "too many requests at once".into());
                let _ = broker::send_reply(&mut stream, &r, &[]).await;
            });
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (reply, fds) = answer(&agent, &mut stream, uid).await;
            if let Reply::Err(code, msg) = &reply {
                tracing::info!(?code, error = %msg, "socket broker refused a request");
            }
            let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            if let Err(error) = broker::send_reply(&mut stream, &reply, &borrowed).await {
                tracing::debug!(%error, "socket broker: cannot reply");
            }
            drop(fds);
            drain(&mut stream).await;
        });
    }
}

async fn answer(agent: &Agent, stream: &mut UnixStream, uid: u32) -> (Reply, Vec<OwnedFd>) {
    let refuse = |code, msg: String| (Reply::Err(code, msg), Vec::new());
    // The request is read before anything is decided, so that a refusal is not lost to a
    // reset of a connection with unread data.
    let request = tokio::time::timeout(REQUEST_TIMEOUT, broker::read_request(stream)).await;
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == uid => {}
        Ok(cred) => {
            return refuse(
                Code::Denied,
                format!("uid {} may not use this broker", cred.uid()),
            );
        }
        Err(e) => return refuse(Code::Denied, format!("cannot tell who is asking: {e}")),
    }
    let request = match request {
        Ok(Ok(r)) => r,
        Ok(Err(why)) => return refuse(Code::Invalid, why),
        Err(_) => {
            return refuse(
                Code::Invalid,
                format!("no whole request within {REQUEST_TIMEOUT:?}"),
            );
        }
    };
    match sockets_for(agent, &request).await {
        Ok(fds) => (Reply::Ok(fds.len()), fds),
        Err((code, msg)) => refuse(code, msg),
    }
}

/// After the reply: what the client still sends (a request that was too long) is read and
/// dropped, a little and briefly, so that closing does not reset the connection before the
/// client has read the reply.
async fn drain(stream: &mut UnixStream) {
    use tokio::io::AsyncReadExt as _;
    let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
    let mut buf = [0u8; 1024];
    let mut left: usize = 64 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// How many sets of listener sockets this process handed over that were made ahead with the
/// namespace (see `agent/pool.rs`), not on a thread entering it.
pub fn listeners_given_ahead() -> u64 {
    crate::agent::connected_prebound_given()
}

/// Makes `request`'s sockets in the sandbox's namespace, on a thread that entered it.
pub async fn sockets_for(agent: &Agent, request: &Request) -> Result<Vec<OwnedFd>, (Code, String)> {
    let id = request.sandbox();
    let Some(ns) = agent.sandbox_netns(id) else {
        return Err((
            Code::NotFound,
            format!("sandbox {id} is not on this host, or has no namespace of its own"),
        ));
    };
    if let Request::Listeners { addr, .. } = request {
        *agent
            .dns_listen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(*addr);
        // Made ahead with the namespace (see `agent/pool.rs`): no thread to enter it.
        if ns.managed
            && let Some(fds) = agent.prebound_dns(&ns.path, *addr)
        {
            return Ok(fds);
        }
    }
    let req = request.clone();
    let make = move || make_sockets(&req);
    let made = if ns.managed {
        netns::run_in(&ns.path, make).await
    } else {
        // The caller's namespace: checked against the policy again (it may have been
        // replaced by something else since the sandbox was made).
        let file = agent
            .open_netns("netns_path", &ns.path)
            .await
            .map_err(|e| (Code::Failed, e.to_string()))?;
        netns::run_in_file(&file.file, &ns.path, make).await
    };
    made.map_err(|e| (Code::Failed, e.to_string()))?
        .map_err(|e| (Code::Failed, format!("sandbox {id}: {e}")))
}

/// On the namespace thread: the sockets, non-blocking and close-on-exec.
fn make_sockets(request: &Request) -> std::io::Result<Vec<OwnedFd>> {
    match request {
        Request::Listeners { addr, .. } => sockets::listeners(*addr),
        Request::Udp { v6, .. } => Ok(vec![
            sockets::socket(*v6, Type::DGRAM, Protocol::UDP)?.into(),
        ]),
        Request::Tcp { v6, .. } => Ok(vec![
            sockets::socket(*v6, Type::STREAM, Protocol::TCP)?.into(),
        ]),
    }
}

/// The default place of the broker's socket.
pub const DEFAULT_PATH: &str = "/run/weft/agent-broker.sock";

/// Whether `path` is where a broker may put its socket: absolute.
pub fn check_path(path: &Path) -> Result<(), String> {
    if path.is_absolute() && path.file_name().is_some() {
        Ok(())
    } else {
        Err(format!(
            "--broker-socket {}: an absolute file path",
            path.display()
        ))
    }
}
