//! The identity side of the API: `TokenService` (tokens, shown once, kept as hashes) and
//! `AuditService` (the audit log), both for admins only (see `access::RULES`).

use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as pb, audit_service_server::AuditService, token_service_server::TokenService,
};
use weft_runtime::{
    FieldViolation,
    access::{Principal, Role, principal},
};

use crate::{
    access,
    engine::Gateway,
    error::GatewayError,
    grpc::{GatewayGrpc, invalid},
};

impl Gateway {
    /// One page of the audit log, newest first (see `store::audit::page`).
    pub async fn audit_page(
        &self,
        before: i64,
        limit: u32,
        identity: &str,
    ) -> Result<Vec<crate::store::audit::AuditRow>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(crate::store::audit::page(&mut conn, before, limit, identity).await?)
    }

    /// Waits until every audit record so far is stored (tests).
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }
}

#[tonic::async_trait]
impl TokenService for GatewayGrpc {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let by = principal(&req).map_or_else(|| "-".to_owned(), Principal::label);
        let audit = self.audit(&req, "TokenService/CreateToken", |r| {
            (r.name.clone(), String::new())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let role: Role = req.role.parse().map_err(|e: String| {
                    invalid(vec![FieldViolation::new("role", &req.role, e)])
                })?;
                let (info, token) = self
                    .gw
                    .tokens
                    .create(&req.name, role, &req.host, &by)
                    .await?;
                Ok(Response::new(pb::CreateTokenResponse {
                    info: Some(access::token_to_pb(&info)),
                    token,
                }))
            })
            .await
    }

    async fn list_tokens(
        &self,
        _req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let tokens = self.gw.tokens.list().await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(access::token_to_pb).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let audit = self.audit(&req, "TokenService/RevokeToken", |r| {
            (r.name.clone(), String::new())
        });
        audit
            .run(async move {
                let row = self.gw.tokens.revoke(&req.get_ref().name).await?;
                Ok(Response::new(pb::RevokeTokenResponse {
                    token: Some(access::token_to_pb(&row)),
                }))
            })
            .await
    }
}

#[tonic::async_trait]
impl AuditService for GatewayGrpc {
    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = req.into_inner();
        let size = match req.page_size {
            0 => 100,
            n @ 1..=1000 => n,
            n => {
                return Err(invalid(vec![FieldViolation::new(
                    "page_size",
                    n.to_string(),
                    "must be 0 (100) to 1000",
                )]));
            }
        };
        let before: i64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .ok()
                .filter(|n: &i64| *n > 0)
                .ok_or_else(|| {
                    invalid(vec![FieldViolation::new(
                        "page_token",
                        &req.page_token,
                        "not a page token of ListAudit",
                    )])
                })?
        };
        if req.identity.len() > 256 {
            let shown: String = req.identity.chars().take(32).collect();
            return Err(invalid(vec![FieldViolation::new(
                "identity",
                shown,
                "longer than 256 bytes",
            )]));
        }
        let rows = self
            .gw
            .audit_page(before, u32::try_from(size).unwrap_or(100), &req.identity)
            .await?;
        let next_page_token = if rows.len() == usize::try_from(size).unwrap_or(0) {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditResponse {
            entries: rows
                .into_iter()
                .map(|r| pb::AuditEntry {
                    id: u64::try_from(r.id).unwrap_or(0),
                    time: crate::to_pb::timestamp(r.time_ms),
                    identity: r.identity,
                    role: r.role,
                    rpc: r.rpc,
                    object: r.object,
                    request_id: r.request_id,
                    outcome: r.outcome,
                    message: r.message,
                })
                .collect(),
            next_page_token,
        }))
    }
}
