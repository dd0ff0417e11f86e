//! Who may call what: every RPC a service serves is looked up in that service's access table
//! before it runs. The caller is identified first (a bearer token or a client certificate, by
//! the service's [`Authenticate`]); then its role must be among the roles the table gives the
//! method, its calls within its limits ([`crate::limits`]), and its request no larger than the
//! method takes ([`crate::size`]). A method missing from the table is refused, and
//! [`Access::check_covers`] refuses to start a server whose table misses a method it serves, so
//! a new RPC cannot ship open.
//!
//! Only `grpc.health.v1` and server reflection are open to anyone.
//!
//! Longer than 600 lines: the code is under 600, its tests make up the rest.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Extensions, HeaderMap};
use tonic::{Status, body::Body};

pub use crate::principal::{ADMIN, Credential, Principal, READ, Refusal, Role, WRITE};
use crate::size;

/// The principal of a request, if the access layer put one there.
pub fn principal<T>(req: &tonic::Request<T>) -> Option<&Principal> {
    req.extensions().get::<Principal>()
}

/// One method of the table: its full gRPC path, the roles that may call it and the largest
/// request it takes.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `/package.Service/Method`.
    pub method: &'static str,
    pub roles: &'static [Role],
    /// Changes state (audited).
    pub mutation: bool,
    /// The most bytes of request body it takes (see [`crate::size`]): [`size::DEFAULT`] unless
    /// set with [`Rule::max_message`].
    pub max_message: usize,
}

impl Rule {
    pub const fn read(method: &'static str) -> Self {
        Self::only(method, READ, false)
    }

    pub const fn write(method: &'static str) -> Self {
        Self::only(method, WRITE, true)
    }

    pub const fn admin(method: &'static str, mutation: bool) -> Self {
        Self::only(method, ADMIN, mutation)
    }

    pub const fn only(method: &'static str, roles: &'static [Role], mutation: bool) -> Self {
        Self {
            method,
            roles,
            mutation,
            max_message: size::DEFAULT,
        }
    }

    /// The same rule taking requests of up to `bytes` (one of the limits of [`crate::size`]).
    #[must_use]
    pub const fn max_message(self, bytes: usize) -> Self {
        Self {
            max_message: bytes,
            ..self
        }
    }

    /// The largest request a method of `service` (`package.Service`) takes by `rules`;
    /// [`size::DEFAULT`] when none of them is of `service`.
    pub fn largest(rules: &[Rule], service: &str) -> usize {
        rules
            .iter()
            .filter(|r| {
                r.method
                    .strip_prefix('/')
                    .and_then(|m| m.strip_prefix(service))
                    .is_some_and(|m| m.starts_with('/'))
            })
            .map(|r| r.max_message)
            .max()
            .unwrap_or(size::DEFAULT)
    }

    /// The least role that may call it, for the refusal's message.
    pub fn needed(&self) -> String {
        let people: Vec<Role> = self
            .roles
            .iter()
            .copied()
            .filter(|r| READ.contains(r))
            .collect();
        let services = self.roles.iter().filter(|r| !READ.contains(r));
        people
            .iter()
            .min()
            .into_iter()
            .chain(services)
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A service's way of identifying callers, and of hearing about refusals (to audit them).
pub trait Authenticate: Send + Sync + 'static {
    /// The caller of a request, from its metadata (`authorization`) or its connection (a
    /// verified client certificate in `extensions`). Never puts a credential in the refusal.
    fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        extensions: &'a Extensions,
    ) -> BoxFuture<'a, Result<Principal, Refusal>>;

    /// A mutation was refused before it ran (`who` is `None` when the caller is unknown).
    fn refused(&self, _rule: &Rule, _who: Option<&Principal>, _refusal: &Refusal) {}
}

/// The bearer token of `authorization: Bearer <token>`, if well-formed: at most 512 bytes of
/// visible ASCII. Anything else is treated as no token (never echoed).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad =
        || Refusal::unauthenticated("malformed authorization metadata: expected 'Bearer <token>'");
    if value.len() > 512 {
        return Err(bad());
    }
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(bad());
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(token))
}

/// What every Weft token starts with (so that a leaked one can be recognised by scanners).
pub const TOKEN_PREFIX: &str = "weft_";

/// A new bearer token: the prefix and 32 random bytes from the kernel, in hex.
pub fn new_token() -> std::io::Result<String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&secret)))
}

/// What is stored of a token: its SHA-256, in hex. The secret has 256 random bits, so a fast
/// hash is enough (nothing to guess from the hash).
pub fn token_hash(token: &str) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Has the shape of a token [`new_token`] makes.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == TOKEN_PREFIX.len() + 64
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What every one-time join token (a new host's way in) starts with.
pub const JOIN_TOKEN_PREFIX: &str = "weftjoin_";

/// A new join token: [`JOIN_TOKEN_PREFIX`], 32 random bytes from the kernel in hex, `.`, and
/// the cluster CA's fingerprint (64 hex digits, `weft_identity::pki::ca_fingerprint`), with
/// which the joining host verifies the gateway before it trusts anything. Its hash (of the
/// whole) is [`token_hash`].
pub fn new_join_token(ca_fingerprint: &str) -> std::io::Result<String> {
    if !is_hex64(ca_fingerprint) {
        return Err(std::io::Error::other("a CA fingerprint is 64 hex digits"));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    Ok(format!(
        "{JOIN_TOKEN_PREFIX}{}.{}",
        hex(&secret),
        ca_fingerprint.to_ascii_lowercase()
    ))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Has the shape of a token [`new_join_token`] makes.
pub fn looks_like_join_token(token: &str) -> bool {
    join_token_fingerprint(token).is_some()
}

/// The CA fingerprint a join token carries.
pub fn join_token_fingerprint(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(JOIN_TOKEN_PREFIX)?;
    let (secret, fingerprint) = rest.split_once('.')?;
    (is_hex64(secret) && is_hex64(fingerprint)).then_some(fingerprint)
}

/// A token hash as given on a command line: 64 lower-case hex digits.
pub fn is_token_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A client's credentials: adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.write_str(if self.0.is_some() {
            "Bearer(..)"
        } else {
            "Bearer(none)"
        })
    }
}

/// A channel whose calls carry a [`Bearer`] token.
pub type Authed =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

impl Bearer {
    /// No credentials (the call is refused by any service with an access table).
    pub fn none() -> Self {
        Self(None)
    }

    /// `token`, which must have the shape [`new_token`] or [`new_join_token`] gives.
    pub fn new(token: &str) -> Result<Self, TokenFileError> {
        if !looks_like_token(token) && !looks_like_join_token(token) {
            return Err(TokenFileError::Malformed);
        }
        format!("Bearer {token}")
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| TokenFileError::Malformed)
    }

    /// The token in the file at `path` (see [`read_token_file`]).
    pub fn from_file(path: &std::path::Path) -> Result<Self, TokenFileError> {
        Self::new(&read_token_file(path)?)
    }

    /// `channel` with these credentials.
    pub fn on(&self, channel: tonic::transport::Channel) -> Authed {
        tonic::service::interceptor::InterceptedService::new(channel, self.clone())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Why a token file cannot be used (never shows its content).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is not a regular file")]
    NotAFile(std::path::PathBuf),
    #[error("the token file {0} is larger than 4 KiB: not a token file")]
    TooLarge(std::path::PathBuf),
    #[error("the token file {0} can be read by other users: make it 0600 (chmod 600 {0})")]
    Exposed(std::path::PathBuf),
    #[error("not a Weft token (expected weft_ and 64 hex digits)")]
    Malformed,
    #[error("the token file {0} does not hold a Weft token (expected weft_ and 64 hex digits)")]
    MalformedIn(std::path::PathBuf),
}

/// The token in a file: a regular file (symbolic links are not followed), at most 4 KiB,
/// readable by its owner only, holding one token (surrounding white space ignored).
pub fn read_token_file(path: &std::path::Path) -> Result<String, TokenFileError> {
    use std::{
        io::Read as _,
        os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    };
    let read = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32,
        )
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(TokenFileError::NotAFile(path.to_owned()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(TokenFileError::Exposed(path.to_owned()));
    }
    if meta.len() > 4096 {
        return Err(TokenFileError::TooLarge(path.to_owned()));
    }
    let mut text = String::new();
    (&mut file)
        .take(4097)
        .read_to_string(&mut text)
        .map_err(|_| TokenFileError::MalformedIn(path.to_owned()))?;
    let token = text.trim();
    if !looks_like_token(token) {
        return Err(TokenFileError::MalformedIn(path.to_owned()));
    }
    Ok(token.to_owned())
}

/// Writes a new token to `path` (created with mode 0600, never replacing a file) and returns
/// it.
pub fn write_new_token_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let token = new_token()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Paths open to anyone.
const OPEN: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// A service's access table and how it identifies callers.
#[derive(Clone)]
pub struct Access {
    rules: Arc<HashMap<&'static str, Rule>>,
    auth: Arc<dyn Authenticate>,
    limiter: Option<crate::limits::Limiter>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("methods", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// What [`Access::check_covers`] found missing.
#[derive(Debug, thiserror::Error)]
#[error("the access table has no rule for {}: a method without one cannot be served", .0.join(", "))]
pub struct Uncovered(pub Vec<String>);

impl Access {
    pub fn new(rules: &[Rule], auth: Arc<dyn Authenticate>) -> Self {
        Self {
            rules: Arc::new(rules.iter().map(|r| (r.method, *r)).collect()),
            auth,
            limiter: None,
        }
    }

    /// Limits each identity's calls (see [`crate::limits`]) with `limiter`, which other servers
    /// may share (one identity's budget whichever listener it calls).
    #[must_use]
    pub fn with_limiter(mut self, limiter: crate::limits::Limiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The rule of a method, if any.
    pub fn rule(&self, method: &str) -> Option<&Rule> {
        self.rules.get(method)
    }

    /// Every method of `services` (full service names, looked up in `descriptors`, an encoded
    /// `FileDescriptorSet`) has a rule.
    pub fn check_covers(&self, services: &[&str], descriptors: &[u8]) -> Result<(), Uncovered> {
        let methods = methods_of(services, descriptors);
        // A served service the descriptors do not describe cannot be checked: it counts as
        // uncovered rather than passing with no methods.
        let mut missing: Vec<String> = services
            .iter()
            .filter(|s| !methods.iter().any(|m| m.starts_with(&format!("/{s}/"))))
            .map(|s| format!("{s} (not in the descriptors)"))
            .collect();
        missing.extend(
            methods
                .into_iter()
                .filter(|m| !self.rules.contains_key(m.as_str())),
        );
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Uncovered(missing))
        }
    }

    /// Admits a call of `who` within its limits: hold the result while the call runs.
    pub fn admit(&self, who: &Principal) -> Result<Option<crate::limits::Admitted>, Refusal> {
        self.limiter.as_ref().map(|l| l.admit(who)).transpose()
    }

    /// Tells the service's [`Authenticate`] about a refused mutation (to audit it).
    fn note_refused(&self, rule: Option<&Rule>, who: Option<&Principal>, refusal: &Refusal) {
        if let Some(rule) = rule.filter(|r| r.mutation) {
            self.auth.refused(rule, who, refusal);
        }
    }

    /// Decides a request: `Ok` with the caller, or the refusal to send.
    pub async fn decide(
        &self,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<Principal>, Refusal> {
        if OPEN.iter().any(|p| path.starts_with(p)) {
            return Ok(None);
        }
        let Some(rule) = self.rules.get(path) else {
            return Err(Refusal::denied(format!(
                "{path} is not in this service's access table"
            )));
        };
        let who = match self.auth.authenticate(headers, extensions).await {
            Ok(who) => who,
            Err(refusal) => {
                self.note_refused(Some(rule), None, &refusal);
                return Err(refusal);
            }
        };
        if !rule.roles.contains(&who.role) {
            let refusal = Refusal::denied(format!(
                "{} needs the role {}; {} has the role {}",
                rule.method.trim_start_matches('/'),
                rule.needed(),
                who.name,
                who.role
            ));
            self.note_refused(Some(rule), Some(&who), &refusal);
            return Err(refusal);
        }
        Ok(Some(who))
    }
}

/// Every `/package.Service/Method` of `services` in an encoded `FileDescriptorSet`.
pub fn methods_of(services: &[&str], descriptors: &[u8]) -> Vec<String> {
    method_descriptors(services, descriptors)
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// [`methods_of`], each with its descriptor.
pub(crate) fn method_descriptors(
    services: &[&str],
    descriptors: &[u8],
) -> Vec<(String, prost_types::MethodDescriptorProto)> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(descriptors) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for file in set.file {
        let package = file.package().to_owned();
        for svc in file.service {
            let full = if package.is_empty() {
                svc.name().to_owned()
            } else {
                format!("{package}.{}", svc.name())
            };
            if services.contains(&full.as_str()) {
                out.extend(
                    svc.method
                        .into_iter()
                        .map(|m| (format!("/{full}/{}", m.name()), m)),
                );
            }
        }
    }
    out
}

/// The tower layer that applies an [`Access`] to every request of a server.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    access: Access,
}

impl AccessLayer {
    pub fn new(access: Access) -> Self {
        Self { access }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            access: self.access.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    access: Access,
}

impl<S> tower_service::Service<http::Request<Body>> for AccessService<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The ready service answers this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let access = self.access.clone();
        Box::pin(async move {
            let rule = access.rule(req.uri().path()).copied();
            let decided = access
                .decide(req.uri().path(), req.headers(), req.extensions())
                .await;
            let admitted = decided.and_then(|who| {
                // Over its limits: refused, and (a mutation) audited like any refusal.
                let held = who
                    .as_ref()
                    .map(|w| access.admit(w))
                    .transpose()
                    .inspect_err(|r| access.note_refused(rule.as_ref(), who.as_ref(), r))?;
                Ok((who, held))
            });
            match admitted {
                Ok((who, held)) => {
                    if let Some(who) = &who {
                        req.extensions_mut().insert(who.clone());
                    }
                    // The size last: a caller unknown or over its limits is refused before a
                    // byte of its request is read, and reading it counts as a call in flight.
                    if let Some(rule) = rule {
                        req = match size::read_within(req, rule.method, rule.max_message).await {
                            Ok(req) => req,
                            Err(status) => {
                                let refusal = Refusal {
                                    code: status.code(),
                                    message: status.message().to_owned(),
                                    retry_after: None,
                                };
                                access.note_refused(Some(&rule), who.as_ref(), &refusal);
                                return Ok(status.into_http());
                            }
                        };
                    }
                    let res = inner.call(req).await;
                    drop(held);
                    res
                }
                Err(refusal) => Ok(refusal.status().into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    struct Fixed(Option<Principal>);

    impl Authenticate for Fixed {
        fn authenticate<'a>(
            &'a self,
            _: &'a HeaderMap,
            _: &'a Extensions,
        ) -> BoxFuture<'a, Result<Principal, Refusal>> {
            let r = self
                .0
                .clone()
                .ok_or_else(|| Refusal::unauthenticated("no credentials"));
            Box::pin(async move { r })
        }
    }

    fn who(role: Role) -> Option<Principal> {
        Some(Principal {
            name: "ci".into(),
            role,
            credential: Credential::Token,
        })
    }

    const TABLE: &[Rule] = &[
        Rule::read("/p.S/Get"),
        Rule::write("/p.S/Create"),
        Rule::admin("/p.S/Token", true),
    ];

    async fn decide(role: Option<Role>, path: &str) -> Result<Option<Principal>, Refusal> {
        let access = Access::new(TABLE, Arc::new(Fixed(role.and_then(who))));
        access
            .decide(path, &HeaderMap::new(), &Extensions::new())
            .await
    }

    #[tokio::test]
    async fn health_and_reflection_need_nobody() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(decide(None, path).await, Ok(None), "{path}");
        }
    }

    #[tokio::test]
    async fn a_method_missing_from_the_table_is_refused_even_to_admin() {
        let r = decide(Some(Role::Admin), "/p.S/New").await.unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert!(r.message.contains("not in this service's access table"));
    }

    #[tokio::test]
    async fn no_credentials_is_unauthenticated_and_a_weak_role_is_told_what_it_needs() {
        assert_eq!(
            decide(None, "/p.S/Get").await.unwrap_err().code,
            Code::Unauthenticated
        );
        let r = decide(Some(Role::Viewer), "/p.S/Create").await.unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert!(
            r.message.contains("needs the role operator"),
            "{}",
            r.message
        );
        assert!(decide(Some(Role::Operator), "/p.S/Create").await.is_ok());
        let r = decide(Some(Role::Operator), "/p.S/Token")
            .await
            .unwrap_err();
        assert!(r.message.contains("needs the role admin"), "{}", r.message);
        assert!(decide(Some(Role::Admin), "/p.S/Token").await.is_ok());
        let r = decide(Some(Role::Agent), "/p.S/Get").await.unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
    }

    #[test]
    fn bearer_takes_only_a_well_formed_token() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&h("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(&h("bearer  abc ")), Ok(Some("abc")));
        for bad in ["Basic abc", "Bearer", "Bearer a b", "abc"] {
            let r = bearer(&h(bad)).unwrap_err();
            assert_eq!(r.code, Code::Unauthenticated, "{bad}");
            assert!(!r.message.contains("abc"), "the token is never echoed");
        }
        let long = format!("Bearer {}", "a".repeat(600));
        assert!(bearer(&h(&long)).is_err());
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert!(!looks_like_token(&a[1..]));
        assert!(!looks_like_token(&a.to_uppercase()));
        let h = token_hash(&a);
        assert!(is_token_hash(&h));
        assert_ne!(h, token_hash(&b));
        assert!(!h.contains(&a[TOKEN_PREFIX.len()..]));
        // Join tokens are told apart from API tokens by their prefix.
        let pin = "ab".repeat(32);
        let j = new_join_token(&pin).unwrap();
        assert!(looks_like_join_token(&j) && !looks_like_token(&j), "{j}");
        assert_eq!(join_token_fingerprint(&j), Some(pin.as_str()));
        assert!(new_join_token("abc").is_err());
        assert!(!looks_like_join_token(&j[..j.len() - 1]));
        assert!(!looks_like_join_token(&a));
        assert!(Bearer::new(&j).is_ok());
    }

    #[test]
    fn token_files_are_private_regular_files_holding_one_token() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("weft-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.token");
        let _ = std::fs::remove_file(&path);
        let token = write_new_token_file(&path).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), token);
        assert!(write_new_token_file(&path).is_err(), "never replaced");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token_file(&path).unwrap_err();
        assert!(matches!(e, TokenFileError::Exposed(_)), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link.token");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_token_file(&link).is_err(), "links are not followed");
        let other = dir.join("other.token");
        std::fs::write(&other, "not a token").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_token_file(&other).unwrap_err().to_string();
        assert!(
            !e.contains("not a token"),
            "the content is never shown: {e}"
        );
        assert!(format!("{:?}", Bearer::new(&token).unwrap()) == "Bearer(..)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_served_method_or_service_without_a_rule_is_uncovered() {
        let access = Access::new(TABLE, Arc::new(Fixed(None)));
        let served = ["weft.gateway.v1.NetworkService"];
        let Err(Uncovered(missing)) = access.check_covers(&served, weft_proto::FILE_DESCRIPTOR_SET)
        else {
            panic!("the table has no NetworkService rule");
        };
        assert!(missing.contains(&"/weft.gateway.v1.NetworkService/CreateNetwork".to_owned()));
        let Err(Uncovered(missing)) =
            access.check_covers(&["p.S"], weft_proto::FILE_DESCRIPTOR_SET)
        else {
            panic!("p.S is in no descriptor");
        };
        assert_eq!(missing, ["p.S (not in the descriptors)"]);
    }

    /// Lets in whoever the `authorization` header names, as an operator.
    struct ByHeader;

    impl Authenticate for ByHeader {
        fn authenticate<'a>(
            &'a self,
            headers: &'a http::HeaderMap,
            _: &'a http::Extensions,
        ) -> BoxFuture<'a, Result<Principal, Refusal>> {
            let who = headers
                .get("authorization")
                .map(|v| Principal {
                    name: v.to_str().unwrap_or("").to_owned(),
                    role: Role::Operator,
                    credential: Credential::Token,
                })
                .ok_or_else(|| Refusal::unauthenticated("no credentials"));
            Box::pin(async move { who })
        }
    }

    #[tokio::test]
    async fn the_access_layer_checks_the_caller_first_then_the_size() {
        use tower::{Layer as _, ServiceExt as _};
        let rules = [Rule::write("/p.S/Put").max_message(100)];
        let access = Access::new(&rules, Arc::new(ByHeader));
        // Answers with the length of the body it got.
        let inner = tower::service_fn(|req: http::Request<Body>| async move {
            use http_body::Body as _;
            let (mut body, mut len) = (req.into_body(), 0);
            while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                len += f.unwrap().data_ref().map_or(0, |d| d.len());
            }
            let res = http::Response::builder().header("x-len", len);
            Ok::<_, Infallible>(res.body(Body::empty()).unwrap())
        });
        let svc = AccessLayer::new(access).layer(inner);
        let call = |n: usize, who: Option<&str>| {
            let mut req = http::Request::builder().uri("http://x/p.S/Put");
            if let Some(who) = who {
                req = req.header("authorization", who);
            }
            svc.clone()
                .oneshot(req.body(Body::new("x".repeat(n))).unwrap())
        };
        let status = |res: http::Response<Body>| Status::from_header_map(res.headers());

        let res = call(100, Some("ci")).await.unwrap();
        assert_eq!(res.headers().get("x-len").unwrap(), "100", "{res:?}");
        let st = status(call(101, Some("ci")).await.unwrap()).unwrap();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
        assert!(st.message().contains("at most 100 bytes"), "{st:?}");
        let st = status(call(101, None).await.unwrap()).unwrap();
        assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    }

    #[test]
    fn a_service_takes_the_largest_request_of_its_methods() {
        let rules = [
            Rule::read("/p.S/Get"),
            Rule::write("/p.S/Put").max_message(size::SANDBOX),
            Rule::write("/p.Sx/Put").max_message(size::DESIRED_STATE),
        ];
        assert_eq!(Rule::read("/p.S/Get").max_message, size::DEFAULT);
        assert_eq!(Rule::largest(&rules, "p.S"), size::SANDBOX);
        assert_eq!(Rule::largest(&rules, "p.Sx"), size::DESIRED_STATE);
        assert_eq!(Rule::largest(&rules, "p.T"), size::DEFAULT);
    }

    #[test]
    fn no_weft_method_streams_its_requests() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(weft_proto::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        let names: Vec<&str> = services.iter().map(String::as_str).collect();
        assert!(names.len() >= 4, "{names:?}");
        size::check_unary(method_descriptors(&names, weft_proto::FILE_DESCRIPTOR_SET)).unwrap();
    }

    #[test]
    fn methods_are_read_from_the_descriptors() {
        let m = methods_of(
            &["weft.gateway.v1.NetworkService"],
            weft_proto::FILE_DESCRIPTOR_SET,
        );
        assert!(m.contains(&"/weft.gateway.v1.NetworkService/CreateNetwork".to_owned()));
        assert!(
            m.iter()
                .all(|m| m.starts_with("/weft.gateway.v1.NetworkService/"))
        );
    }
}
