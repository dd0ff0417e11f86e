//! Who may call the gateway: its access table, the bearer tokens it knows (only their SHA-256 is
//! stored), the caller of the request being served (for events), and the audit log.
//!
//! Tokens are looked up by hash in the store and kept in memory for [`CACHE_TTL`]: a token
//! revoked here stops working at once; on another replica within [`CACHE_TTL`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tonic::codegen::http::{Extensions, HeaderMap};
use weft_proto::gateway::v1 as pb;
use weft_runtime::access::{
    self, Access, Authenticate, BoxFuture, Credential, Principal, Refusal, Role, Rule,
};
use weft_store::Db;

use crate::{
    clock::Clock,
    error::GatewayError,
    store::{
        self,
        audit::AuditRow,
        tokens::{self, TokenRow},
    },
};

/// Every method the gateway serves, and who may call it. A method missing here is refused, and
/// the server does not start while one is missing (see `weft_runtime::access`).
pub const RULES: &[Rule] = &[
    Rule::write("/weft.gateway.v1.NetworkService/CreateNetwork")
        .max_message(weft_runtime::size::NETWORK),
    Rule::read("/weft.gateway.v1.NetworkService/GetNetwork"),
    Rule::read("/weft.gateway.v1.NetworkService/ListNetworks")
        .max_message(weft_runtime::size::LISTS_AND_LABELS),
    Rule::write("/weft.gateway.v1.NetworkService/UpdateNetwork")
        .max_message(weft_runtime::size::LISTS_AND_LABELS),
    Rule::write("/weft.gateway.v1.NetworkService/DeleteNetwork"),
    Rule::write("/weft.gateway.v1.NetworkService/PruneNetworks"),
    Rule::write("/weft.gateway.v1.SandboxService/CreateSandbox")
        .max_message(weft_runtime::size::SANDBOX),
    Rule::read("/weft.gateway.v1.SandboxService/GetSandbox"),
    Rule::read("/weft.gateway.v1.SandboxService/ListSandboxes")
        .max_message(weft_runtime::size::LISTS_AND_LABELS),
    Rule::write("/weft.gateway.v1.SandboxService/DeleteSandbox"),
    Rule::write("/weft.gateway.v1.SandboxService/Connect"),
    Rule::write("/weft.gateway.v1.SandboxService/Disconnect"),
    // dns-svc follows the event stream.
    Rule::only(
        "/weft.gateway.v1.EventService/Watch",
        &[Role::Viewer, Role::Operator, Role::Admin, Role::Dns],
        false,
    ),
    Rule::read("/weft.gateway.v1.HostService/ListHosts"),
    Rule::admin("/weft.gateway.v1.HostService/CreateJoinToken", true),
    Rule::admin("/weft.gateway.v1.HostService/RemoveHost", true),
    // The holder of a join token, and no one else.
    Rule::only("/weft.gateway.v1.JoinService/JoinHost", &[Role::Join], true),
    Rule::only(
        "/weft.gateway.v1.AgentRegistryService/RegisterHost",
        &[Role::Agent],
        true,
    ),
    Rule::only(
        "/weft.gateway.v1.AgentRegistryService/Heartbeat",
        &[Role::Agent],
        false,
    ),
    Rule::only(
        "/weft.gateway.v1.AgentRegistryService/GetDesiredState",
        &[Role::Agent],
        false,
    ),
    Rule::admin("/weft.gateway.v1.TokenService/CreateToken", true),
    Rule::admin("/weft.gateway.v1.TokenService/ListTokens", false),
    Rule::admin("/weft.gateway.v1.TokenService/RevokeToken", true),
    Rule::admin("/weft.gateway.v1.AuditService/ListAudit", false),
    // Reads every store and asks every agent for a dry run: not for every viewer.
    Rule::admin("/weft.gateway.v1.CheckService/CheckConsistency", false),
];

/// How long a looked-up token is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// The most live tokens the gateway holds.
pub const MAX_TOKENS: u64 = 10_000;
/// Audit records waiting to be written; past it, refusals are dropped (and counted in a
/// warning) while accepted mutations wait for room.
pub const AUDIT_QUEUE: usize = 10_000;

/// A token to create at start (from `weft up`'s flags): the secret stays with whoever has it,
/// the gateway gets its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub name: String,
    pub role: Role,
    pub host: String,
    pub hash: String,
}

/// Token names: 1–63 characters of `a-z 0-9 . _ -`, starting and ending with a letter or digit.
pub fn valid_token_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// What is wrong with a token to create: its name, its host for its role, a role that tokens
/// may not have.
fn check_token(name: &str, role: Role, host: &str) -> Vec<weft_runtime::FieldViolation> {
    let mut bad = Vec::new();
    if !valid_token_name(name) {
        bad.push(weft_runtime::FieldViolation::new(
            "name",
            name,
            "1-63 characters of a-z, 0-9, '.', '_', '-', starting and ending with a letter or digit",
        ));
    }
    let service = matches!(role, Role::Agent | Role::Dns);
    if service {
        if host.is_empty() {
            bad.push(weft_runtime::FieldViolation::new(
                "host",
                host,
                "the agent and dns roles speak for one host: give its name",
            ));
        } else if let Err(v) = crate::domain::check::check_name("host", host) {
            bad.push(v);
        }
    }
    if !service && !host.is_empty() {
        bad.push(weft_runtime::FieldViolation::new(
            "host",
            host,
            "only the agent and dns roles have a host",
        ));
    }
    if role == Role::Gateway {
        bad.push(weft_runtime::FieldViolation::new(
            "role",
            role.as_str(),
            "the gateway role is the gateway's own (a certificate)",
        ));
    }
    if role == Role::Join {
        bad.push(weft_runtime::FieldViolation::new(
            "role",
            role.as_str(),
            "join tokens are one-time tokens from HostService.CreateJoinToken (weftctl host join-token)",
        ));
    }
    bad
}

/// The gateway's tokens, cached by hash.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: Db,
    clock: Clock,
    cache: Arc<Mutex<HashMap<String, (Principal, Instant)>>>,
}

impl Tokens {
    pub fn new(db: Db, clock: Clock) -> Self {
        Self {
            db,
            clock,
            cache: Arc::default(),
        }
    }

    fn principal(row: &TokenRow) -> Option<Principal> {
        let role: Role = row.role.parse().ok()?;
        Some(Principal {
            name: if row.host.is_empty() {
                row.name.clone()
            } else {
                row.host.clone()
            },
            role,
            credential: Credential::Token,
        })
    }

    /// The principal of a live token.
    pub async fn lookup(&self, token: &str) -> Result<Option<Principal>, GatewayError> {
        if !access::looks_like_token(token) {
            return Ok(None);
        }
        let hash = access::token_hash(token);
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((p, at)) = cache.get(&hash)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(Some(p.clone()));
            }
        }
        let mut conn = self.db.read().acquire().await?;
        let row = tokens::live_by_hash(&mut conn, &hash).await?;
        let p = row.as_ref().and_then(Self::principal);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match &p {
            Some(p) => {
                // Bounded: at most the live tokens, plus what expired and was not asked again.
                if cache.len() >= 2 * MAX_TOKENS as usize {
                    cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                }
                cache.insert(hash, (p.clone(), Instant::now()));
            }
            None => {
                cache.remove(&hash);
            }
        }
        Ok(p)
    }

    /// Creates a token and returns it with its secret (shown once).
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        host: &str,
        by: &str,
    ) -> Result<(TokenRow, String), GatewayError> {
        let secret = access::new_token().map_err(|e| GatewayError::Internal(e.to_string()))?;
        let row = self
            .put(name, role, host, by, &access::token_hash(&secret), false)
            .await?;
        Ok((row, secret))
    }

    /// Stores a token by hash; `replace`: a live token of that name is replaced (bootstrap),
    /// else it is ALREADY_EXISTS.
    async fn put(
        &self,
        name: &str,
        role: Role,
        host: &str,
        by: &str,
        hash: &str,
        replace: bool,
    ) -> Result<TokenRow, GatewayError> {
        let bad = check_token(name, role, host);
        if !bad.is_empty() {
            return Err(GatewayError::Invalid(bad));
        }
        let mut tx = store::write_transaction(&self.db).await?;
        if let Some(old) = tokens::by_name(&mut tx, name).await?
            && old.revoked_at_ms.is_none()
        {
            if !replace {
                return Err(GatewayError::AlreadyExists(format!(
                    "token {name:?} already exists (revoke it first)"
                )));
            }
            tokens::revoke(&mut tx, name, self.clock.now_ms()).await?;
        }
        if tokens::count_live(&mut tx).await? >= MAX_TOKENS {
            return Err(GatewayError::Exhausted(format!(
                "the gateway holds {MAX_TOKENS} live tokens, the most it keeps: revoke some first"
            )));
        }
        let row = TokenRow {
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            host: host.to_owned(),
            created_at_ms: self.clock.now_ms(),
            created_by: by.to_owned(),
            revoked_at_ms: None,
        };
        tokens::put(&mut tx, &row, hash).await?;
        tx.commit().await?;
        self.forget_all();
        Ok(row)
    }

    /// Makes sure the bootstrap tokens exist with these hashes.
    pub async fn bootstrap(&self, wanted: &[Bootstrap]) -> Result<(), GatewayError> {
        for b in wanted {
            let mut conn = self.db.read().acquire().await?;
            let same = tokens::live_by_hash(&mut conn, &b.hash)
                .await?
                .is_some_and(|t| t.name == b.name && t.role == b.role.as_str() && t.host == b.host);
            drop(conn);
            if !same {
                self.put(&b.name, b.role, &b.host, "bootstrap", &b.hash, true)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<TokenRow>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(tokens::all(&mut conn).await?)
    }

    pub async fn revoke(&self, name: &str) -> Result<TokenRow, GatewayError> {
        let mut tx = store::write_transaction(&self.db).await?;
        let revoked = tokens::revoke(&mut tx, name, self.clock.now_ms()).await?;
        let row = tokens::by_name(&mut tx, name).await?;
        tx.commit().await?;
        self.forget_all();
        match (revoked, row) {
            (Some(_), Some(row)) => Ok(row),
            _ => Err(GatewayError::NotFound(format!(
                "no live token named {name:?}"
            ))),
        }
    }

    pub(crate) fn forget_all(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The audit log: records go through a queue to one writer task, which stores them in batches.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: tokio::sync::mpsc::Sender<AuditMsg>,
    clock: Clock,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// What the audit writer is sent: a record, or a request to say when everything sent before it
/// is stored.
#[derive(Debug)]
enum AuditMsg {
    Row(AuditRow),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How many audit records are kept (the oldest go first).
pub const AUDIT_KEEP: u64 = 1_000_000;

impl AuditLog {
    /// Starts the writer (on the current runtime).
    pub fn start(db: Db, clock: Clock) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AuditMsg>(AUDIT_QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut written: u64 = 0;
            while rx.recv_many(&mut batch, 512).await > 0 {
                let mut rows = Vec::with_capacity(batch.len());
                let mut flushed = Vec::new();
                for msg in batch.drain(..) {
                    match msg {
                        AuditMsg::Row(r) => rows.push(r),
                        AuditMsg::Flush(done) => flushed.push(done),
                    }
                }
                let n = rows.len() as u64;
                if n > 0 {
                    if let Err(e) = write(&db, &rows, written % 10_000 + n >= 10_000).await {
                        tracing::error!(error = %e, records = rows.len(), "cannot write audit records");
                    }
                    written += n;
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Self {
            tx,
            clock,
            dropped: Arc::default(),
        }
    }

    /// Records an accepted or refused mutation; waits for room in the queue.
    pub async fn record(&self, mut row: AuditRow) {
        row.time_ms = self.clock.now_ms();
        let _ = self.tx.send(AuditMsg::Row(row)).await;
    }

    /// Records without waiting (refusals in the access layer); a full queue drops it.
    pub fn record_now(&self, mut row: AuditRow) {
        row.time_ms = self.clock.now_ms();
        if self.tx.try_send(AuditMsg::Row(row)).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "audit queue full: refused calls not recorded");
            }
        }
    }

    /// Waits until everything recorded so far is written (tests, shutdown).
    pub async fn flush(&self) {
        // The queue is FIFO: the writer answers once the records before the request are
        // committed.
        let (done, stored) = tokio::sync::oneshot::channel();
        if self.tx.send(AuditMsg::Flush(done)).await.is_ok() {
            let _ = stored.await;
        }
    }
}

async fn write(db: &Db, rows: &[AuditRow], trim: bool) -> store::Result<()> {
    let mut tx = store::write_transaction(db).await?;
    store::audit::insert(&mut tx, rows).await?;
    if trim {
        store::audit::trim(&mut tx, AUDIT_KEEP).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The gateway's [`Authenticate`]: a bearer token, or else (on the `--tls-listen` listener) a
/// verified client certificate from the cluster's CA, mapped to a role by its kind as the
/// internal services map it (`weft_runtime::cert_auth`). A token, when sent, decides alone.
#[derive(Debug, Clone)]
pub struct GatewayAuth {
    pub tokens: Tokens,
    pub join_tokens: crate::hostauth::JoinTokens,
    pub removals: crate::hostauth::Removals,
    pub audit: AuditLog,
}

/// What a caller is told when its credentials cannot be checked now.
fn store_down(e: &GatewayError) -> Refusal {
    tracing::warn!(error = %e, "cannot check credentials");
    Refusal {
        code: tonic::Code::Unavailable,
        message: "cannot check credentials now: the store is unavailable".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

impl GatewayAuth {
    /// The principal of a verified client certificate; an agent's or dns-svc's certificate
    /// issued before its host was removed is refused.
    async fn by_certificate(&self, extensions: &Extensions) -> Result<Principal, Refusal> {
        let Some(p) = weft_runtime::cert_auth::certificate_principal(extensions) else {
            return Err(Refusal::unauthenticated(
                "this call needs credentials: metadata 'authorization: Bearer <token>' (weft up writes an admin token to <data-dir>/admin.token), or a client certificate from the cluster's CA on the gateway's TLS listener",
            ));
        };
        if matches!(p.role, Role::Agent | Role::Dns)
            && let Some(issued) = weft_identity::peer_issued_at(extensions)
        {
            match self.removals.predates_removal(&p.name, issued).await {
                Ok(false) => {}
                Ok(true) => {
                    return Err(Refusal::unauthenticated(format!(
                        "the certificate of {} was issued before host {:?} was removed: the host must join again",
                        p.label(),
                        p.name
                    )));
                }
                Err(e) => return Err(store_down(&e)),
            }
        }
        Ok(p)
    }
}

impl Authenticate for GatewayAuth {
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        extensions: &'a Extensions,
    ) -> BoxFuture<'a, Result<Principal, Refusal>> {
        Box::pin(async move {
            let Some(token) = access::bearer(headers)? else {
                return self.by_certificate(extensions).await;
            };
            if access::looks_like_join_token(token) {
                return match self.join_tokens.lookup(token).await {
                    Ok(Some(p)) => Ok(p),
                    Ok(None) => Err(Refusal::unauthenticated(
                        "unknown, spent or expired join token",
                    )),
                    Err(e) => Err(store_down(&e)),
                };
            }
            match self.tokens.lookup(token).await {
                Ok(Some(p)) => Ok(p),
                Ok(None) => Err(Refusal::unauthenticated("unknown or revoked token")),
                Err(e) => Err(store_down(&e)),
            }
        })
    }

    fn refused(&self, rule: &Rule, who: Option<&Principal>, refusal: &Refusal) {
        let (identity, role) = audit_caller(who);
        self.audit.record_now(AuditRow {
            identity,
            role,
            rpc: rule.method.trim_start_matches('/').to_owned(),
            object: "-".into(),
            outcome: format!("{:?}", refusal.code),
            message: refusal.message.clone(),
            ..AuditRow::default()
        });
    }
}

/// An audit record's `identity` (`role:name`) and `role` columns: `-` for a caller not
/// identified.
pub fn audit_caller(who: Option<&Principal>) -> (String, String) {
    who.map_or_else(
        || ("-".to_owned(), "-".to_owned()),
        |p| (p.label(), p.role.to_string()),
    )
}

/// The access of the gateway's server.
pub fn access(auth: GatewayAuth, limiter: weft_runtime::limits::Limiter) -> Access {
    Access::new(RULES, Arc::new(auth)).with_limiter(limiter)
}

/// An audit record's outcome: `OK` or the code's name.
pub fn outcome<T>(r: &Result<T, tonic::Status>) -> (String, String) {
    match r {
        Ok(_) => ("OK".into(), String::new()),
        Err(s) => (format!("{:?}", s.code()), s.message().to_owned()),
    }
}

/// A token as the API shows it.
pub fn token_to_pb(t: &TokenRow) -> pb::TokenInfo {
    pb::TokenInfo {
        name: t.name.clone(),
        role: t.role.clone(),
        host: t.host.clone(),
        created: crate::to_pb::timestamp(t.created_at_ms),
        created_by: t.created_by.clone(),
        revoked: t.revoked_at_ms.and_then(crate::to_pb::timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names() {
        for ok in ["ci", "a", "ci-bot.2", "x_y"] {
            assert!(valid_token_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a b", "a/b", &"a".repeat(64)] {
            assert!(!valid_token_name(bad), "{bad}");
        }
    }
}
