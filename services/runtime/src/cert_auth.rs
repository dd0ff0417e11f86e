//! Callers identified by their client certificate: the verified weft identity of the TLS
//! connection (see `weft_identity::peer_identity`) becomes a [`Principal`] with the role of its
//! kind. The internal services (ipam-svc, driver-agent, dns-svc) take nothing else; the gateway
//! takes a certificate besides bearer tokens.

use http::{Extensions, HeaderMap};
use weft_identity::{Identity, Kind};

use crate::access::{Authenticate, BoxFuture, Credential, Principal, Refusal, Role};

/// What a caller without a usable certificate is told.
pub const NEEDS_CERTIFICATE: &str =
    "this service takes only callers with a certificate from the cluster's CA";

/// The principal a certificate's identity speaks for; `None` for identities that never call
/// another service (ipam-svc only answers).
pub fn principal_of(identity: &Identity) -> Option<Principal> {
    let role = match identity.kind {
        Kind::Gateway => Role::Gateway,
        Kind::Agent => Role::Agent,
        Kind::Dns => Role::Dns,
        Kind::Admin => Role::Admin,
        Kind::Operator => Role::Operator,
        Kind::Viewer => Role::Viewer,
        Kind::Ipam => return None,
    };
    Some(Principal {
        // For the agent and dns kinds the name is the host's, which the gateway binds their
        // calls to.
        name: identity.name.clone(),
        role,
        credential: Credential::Certificate,
    })
}

/// The principal of the connection a request came on, if it presented a usable certificate.
pub fn certificate_principal(extensions: &Extensions) -> Option<Principal> {
    weft_identity::peer_identity(extensions)
        .as_ref()
        .and_then(principal_of)
}

/// [`Authenticate`] by client certificate alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertAuth;

impl Authenticate for CertAuth {
    fn authenticate<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        extensions: &'a Extensions,
    ) -> BoxFuture<'a, Result<Principal, Refusal>> {
        let found = certificate_principal(extensions)
            .ok_or_else(|| Refusal::unauthenticated(NEEDS_CERTIFICATE));
        Box::pin(async move { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_but_ipam_maps_to_its_role_with_its_name() {
        let cases = [
            (Kind::Gateway, Some(Role::Gateway)),
            (Kind::Agent, Some(Role::Agent)),
            (Kind::Dns, Some(Role::Dns)),
            (Kind::Admin, Some(Role::Admin)),
            (Kind::Operator, Some(Role::Operator)),
            (Kind::Viewer, Some(Role::Viewer)),
            (Kind::Ipam, None),
        ];
        for (kind, role) in cases {
            let id = Identity::new(kind, "h1").unwrap();
            let p = principal_of(&id);
            assert_eq!(p.as_ref().map(|p| p.role), role, "{kind}");
            if let Some(p) = p {
                assert_eq!(p.name, "h1");
                assert_eq!(p.credential, Credential::Certificate);
            }
        }
    }

    #[tokio::test]
    async fn no_certificate_is_unauthenticated_with_the_reason() {
        let r = CertAuth
            .authenticate(&HeaderMap::new(), &Extensions::new())
            .await
            .unwrap_err();
        assert_eq!(r.code, tonic::Code::Unauthenticated);
        assert_eq!(r.message, NEEDS_CERTIFICATE);
    }
}
