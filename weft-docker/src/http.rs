//! The plugin's HTTP/1.1 server on a unix socket: POST only, bodies of at most
//! [`BODY_MAX`](crate::protocol::BODY_MAX) bytes, every answer JSON of the protocol's media
//! type; an error is a 500 with `{"Err": "..."}` (Docker shows the text).

use std::{convert::Infallible, path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::{
    error::PluginError,
    plugin::{Driver, Plugin},
    protocol::{BODY_MAX, CONTENT_TYPE, ErrBody},
};

/// Binds `path`: a stale socket there (a plugin that died) is replaced; any other file is
/// refused. The socket is the owner's only (dockerd runs as root).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves connections to `driver`'s socket until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    plugin: Arc<Plugin>,
    driver: Driver,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => a?,
            () = &mut shutdown => return Ok(()),
        };
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(plugin.clone(), driver, req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

async fn handle(
    plugin: Arc<Plugin>,
    driver: Driver,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() != Method::POST {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "only POST is served"));
    }
    let body = match Limited::new(req.into_body(), BODY_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("cannot read the body (at most {BODY_MAX} bytes): {e}"),
            ));
        }
    };
    let started = std::time::Instant::now();
    let res = plugin.call_as(driver, &path, &body).await;
    let ms = started.elapsed().as_millis();
    Ok(match res {
        Ok(v) => {
            tracing::info!(call = %path, ?driver, ms, "answered");
            json(StatusCode::OK, v.to_string())
        }
        Err(e) => {
            tracing::warn!(call = %path, ?driver, ms, error = %e, "refused");
            let status = match e {
                PluginError::Unsupported(_) if !path.contains('.') => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &e.to_string())
        }
    })
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::to_string(&ErrBody { err: msg }).unwrap_or_else(|_| "{}".into());
    json(status, body)
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}
