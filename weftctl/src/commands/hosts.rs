//! `weftctl hosts`: `HostService.ListHosts`.

use std::io::Write;

use weft_proto::gateway::v1::{self as pb, host_service_client::HostServiceClient};

use super::Ctx;
use crate::{cli::HostCmd, error::CliError, json, output::Table, pages::all_pages};

/// One row of the hosts table.
pub fn row(h: &pb::Host) -> Vec<String> {
    let state = match pb::HostState::try_from(h.state) {
        Ok(pb::HostState::Up) => "up",
        Ok(pb::HostState::Down) => "down",
        _ => "unknown",
    };
    let drivers = h
        .capabilities
        .as_ref()
        .map(|c| c.drivers.join(","))
        .unwrap_or_default();
    vec![
        h.name.clone(),
        state.to_owned(),
        h.agent_address.clone(),
        h.addresses.join(","),
        drivers,
        h.last_heartbeat.map(|t| t.to_string()).unwrap_or_default(),
    ]
}

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>) -> Result<(), CliError> {
    let c = HostServiceClient::new(ctx.gateway().await?);
    // Every page, in order: the output is the whole list.
    let hosts = all_pages(pb::ListHostsRequest::default(), |req| {
        let mut c = c.clone();
        async move { Ok(c.list_hosts(req).await?.into_inner()) }
    })
    .await?;
    if ctx.json() {
        for h in &hosts {
            ctx.json_line(&json::host(h))?;
        }
        return Ok(());
    }
    let mut t = Table::new(&[
        "NAME",
        "STATE",
        "AGENT",
        "ADDRESSES",
        "DRIVERS",
        "LAST HEARTBEAT",
    ]);
    for h in &hosts {
        t.row(row(h));
    }
    ctx.print(&t.render())
}

/// `weftctl host join-token` and `weftctl host rm`.
pub async fn manage<W: Write>(ctx: &mut Ctx<'_, W>, cmd: HostCmd) -> Result<(), CliError> {
    let mut c = HostServiceClient::new(ctx.gateway().await?);
    match cmd {
        HostCmd::Ls => run(ctx).await,
        HostCmd::JoinToken { host, ttl } => {
            let ttl_seconds = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
            let r = c
                .create_join_token(pb::CreateJoinTokenRequest {
                    ttl_seconds: ttl_seconds.max(1),
                    host_name: host,
                })
                .await?
                .into_inner();
            let expires = r.expires.map(|t| t.to_string()).unwrap_or_default();
            if ctx.json() {
                return ctx.json_line(&serde_json::json!({
                    "Token": r.token,
                    "Host": r.host_name,
                    "Expires": expires,
                }));
            }
            let who = if r.host_name.is_empty() {
                "one new host".to_owned()
            } else {
                format!("host {}", r.host_name)
            };
            // The token is the last word: scripts take it with `awk '{print $NF}'`.
            ctx.line(&format!(
                "join token for {who}, usable once until {expires}: {}",
                r.token
            ))
        }
        HostCmd::Rm { name, force } => {
            let r = c
                .remove_host(pb::RemoveHostRequest { name, force })
                .await?
                .into_inner();
            let host = r.host.unwrap_or_default();
            if ctx.json() {
                return ctx.json_line(&serde_json::json!({
                    "Name": host.name,
                    "Sandboxes": r.sandboxes,
                }));
            }
            ctx.line(&format!(
                "host {} removed with {} sandbox(es){}{}",
                host.name,
                r.sandboxes.len(),
                if r.sandboxes.is_empty() { "" } else { ": " },
                r.sandboxes.join(", ")
            ))
        }
    }
}
