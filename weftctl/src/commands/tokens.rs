//! `weftctl token create|ls|revoke` (`TokenService`) and `weftctl audit` (`AuditService`).

use std::io::Write;

use serde_json::json;
use weft_proto::gateway::v1::{
    self as pb, audit_service_client::AuditServiceClient, token_service_client::TokenServiceClient,
};

use super::Ctx;
use crate::{cli::AuditArgs, cli::TokenCmd, error::CliError, output::Table};

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(ToString::to_string).unwrap_or_default()
}

fn token_json(t: &pb::TokenInfo) -> serde_json::Value {
    json!({
        "Name": t.name,
        "Role": t.role,
        "Host": t.host,
        "Created": time(t.created.as_ref()),
        "CreatedBy": t.created_by,
        "Revoked": time(t.revoked.as_ref()),
    })
}

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>, cmd: TokenCmd) -> Result<(), CliError> {
    let mut c = TokenServiceClient::new(ctx.gateway().await?);
    match cmd {
        TokenCmd::Create { role, name, host } => {
            let r = c
                .create_token(pb::CreateTokenRequest { name, role, host })
                .await?
                .into_inner();
            let info = r.info.unwrap_or_default();
            if ctx.json() {
                let mut v = token_json(&info);
                v["Token"] = json!(r.token);
                return ctx.json_line(&v);
            }
            // The token is the last word: scripts take it with `awk '{print $NF}'`.
            ctx.line(&format!(
                "token {} (role {}) created; it is shown this once: {}",
                info.name, info.role, r.token
            ))
        }
        TokenCmd::Ls => {
            let tokens = c
                .list_tokens(pb::ListTokensRequest {})
                .await?
                .into_inner()
                .tokens;
            if ctx.json() {
                for t in &tokens {
                    ctx.json_line(&token_json(t))?;
                }
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "ROLE", "HOST", "CREATED", "CREATED BY", "REVOKED"]);
            for k in &tokens {
                t.row(vec![
                    k.name.clone(),
                    k.role.clone(),
                    k.host.clone(),
                    time(k.created.as_ref()),
                    k.created_by.clone(),
                    time(k.revoked.as_ref()),
                ]);
            }
            ctx.print(&t.render())
        }
        TokenCmd::Revoke { name } => {
            let r = c
                .revoke_token(pb::RevokeTokenRequest { name })
                .await?
                .into_inner();
            ctx.line(&r.token.unwrap_or_default().name)
        }
    }
}

pub async fn audit<W: Write>(ctx: &mut Ctx<'_, W>, a: &AuditArgs) -> Result<(), CliError> {
    let mut c = AuditServiceClient::new(ctx.gateway().await?);
    let mut entries = Vec::new();
    let mut req = pb::ListAuditRequest {
        page_size: i32::try_from(a.limit.clamp(1, 1000)).unwrap_or(1000),
        page_token: String::new(),
        identity: a.identity.clone(),
    };
    while entries.len() < a.limit {
        let page = c.list_audit(req.clone()).await?.into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    entries.truncate(a.limit);
    if ctx.json() {
        for e in &entries {
            ctx.json_line(&json!({
                "Id": e.id,
                "Time": time(e.time.as_ref()),
                "Identity": e.identity,
                "Role": e.role,
                "Rpc": e.rpc,
                "Object": e.object,
                "RequestId": e.request_id,
                "Outcome": e.outcome,
                "Message": e.message,
            }))?;
        }
        return Ok(());
    }
    let mut t = Table::new(&["TIME", "IDENTITY", "RPC", "OBJECT", "OUTCOME"]);
    for e in &entries {
        t.row(vec![
            time(e.time.as_ref()),
            e.identity.clone(),
            e.rpc.rsplit('.').next().unwrap_or(&e.rpc).to_owned(),
            e.object.clone(),
            e.outcome.clone(),
        ]);
    }
    ctx.print(&t.render())
}
