//! Who may call what: every method of the gateway needs credentials (but health and
//! reflection), the role table decides the rest, tokens are kept as hashes and revoked at
//! once, every mutation is audited with its caller, and one identity's flood is turned away
//! with a time to retry while another goes on.

use std::time::Duration;

use prost::Message as _;
use tonic::{Code, Status, codegen::http::uri::PathAndQuery};
use tonic_types::StatusExt as _;
use weft_proto::gateway::v1::{
    self as pb, audit_service_client::AuditServiceClient, token_service_client::TokenServiceClient,
};
use weft_runtime::access::{Authed, Bearer, Role};
use weft_testkit::{Backend, channel, run_grpcurl};

use crate::harness::Stack;

weft_testkit::on_both_backends!(
    tokens_are_created_listed_revoked_and_only_their_hash_is_kept,
    every_mutation_is_audited_with_its_caller_and_events_carry_it,
);

/// Every service of `weft.gateway.v1`, from the compiled descriptors.
fn gateway_services() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(weft_proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "weft.gateway.v1")
        .flat_map(|f| {
            f.service
                .iter()
                .map(|s| format!("weft.gateway.v1.{}", s.name()))
        })
        .collect()
}

/// Every method of the gateway's services, `/package.Service/Method`.
fn gateway_methods() -> Vec<String> {
    let services = gateway_services();
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    weft_runtime::access::methods_of(&names, weft_proto::FILE_DESCRIPTOR_SET)
}

/// Calls `method` with an empty request through `channel`: its status (OK when it answered).
/// A stream that stays open (Watch) answers OK.
pub(crate) async fn call_empty(channel: Authed, method: &str) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(method).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let res = tokio::time::timeout(
        Duration::from_secs(3),
        grpc.server_streaming(tonic::Request::new(()), path, codec),
    )
    .await;
    match res {
        Ok(Ok(_)) | Err(_) => Status::ok(""),
        Ok(Err(st)) => st,
    }
}

async fn token(s: &Stack, name: &str, role: Role, host: &str) -> Bearer {
    let r = TokenServiceClient::new(s.deps().admin_channel(s.gateway))
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: role.as_str().into(),
            host: host.into(),
        })
        .await
        .unwrap()
        .into_inner();
    Bearer::new(&r.token).unwrap()
}

fn as_who(s: &Stack, b: &Bearer) -> Authed {
    b.on(channel(s.gateway))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_needs_credentials_but_health_and_reflection() {
    let s = Stack::start(Backend::Sqlite).await;
    let methods = gateway_methods();
    assert!(methods.len() >= 20, "{methods:?}");
    for m in &methods {
        let st = call_empty(Bearer::none().on(channel(s.gateway)), m).await;
        assert_eq!(st.code(), Code::Unauthenticated, "{m}: {st:?}");
        assert!(
            st.message().contains("needs credentials"),
            "{m}: {}",
            st.message()
        );
        // A token that is not one, or is unknown, is no better.
        let forged = Bearer::new(&weft_runtime::access::new_token().unwrap()).unwrap();
        let st = call_empty(forged.on(channel(s.gateway)), m).await;
        assert_eq!(
            st.code(),
            Code::Unauthenticated,
            "{m} with an unknown token"
        );
    }
    // Health and reflection answer anyone.
    assert_eq!(
        weft_testkit::health(s.gateway, "").await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
    let (code, out, err) = run_grpcurl(&["-plaintext", &s.gateway.to_string(), "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("weft.gateway.v1.TokenService"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_table_covers_every_method_and_decides_for_every_role() {
    // The table has exactly the served methods: a new RPC without a rule fails here (and the
    // server would not start).
    let mut table: Vec<String> = gateway::access::RULES
        .iter()
        .map(|r| r.method.to_owned())
        .collect();
    let mut methods = gateway_methods();
    table.sort();
    methods.sort();
    assert_eq!(
        table, methods,
        "the access table and the served methods differ"
    );

    let s = Stack::start(Backend::Sqlite).await;
    let roles = [
        (Role::Viewer, ""),
        (Role::Operator, ""),
        (Role::Admin, ""),
        (Role::Agent, "h1"),
        (Role::Dns, "h1"),
    ];
    let mut who = Vec::new();
    for (role, host) in roles {
        who.push((role, token(&s, &format!("m-{role}"), role, host).await));
    }
    for rule in gateway::access::RULES {
        for (role, bearer) in &who {
            let st = call_empty(as_who(&s, bearer), rule.method).await;
            let allowed = rule.roles.contains(role);
            if allowed {
                // Past the table: what follows is the method's own answer to an empty request
                // (an agent speaks only for its own host, which an empty request does not name).
                assert_ne!(
                    st.code(),
                    Code::Unauthenticated,
                    "{} as {role}",
                    rule.method
                );
                assert!(
                    st.code() != Code::PermissionDenied
                        || st.message().contains("may act for host"),
                    "{} as {role}: {st:?}",
                    rule.method
                );
            } else {
                assert_eq!(
                    st.code(),
                    Code::PermissionDenied,
                    "{} as {role}: {st:?}",
                    rule.method
                );
                assert!(
                    st.message()
                        .contains(&format!("needs the role {}", rule.needed())),
                    "{}",
                    st.message()
                );
            }
        }
    }
}

async fn tokens_are_created_listed_revoked_and_only_their_hash_is_kept(b: Backend) {
    let s = Stack::start(b).await;
    let mut admin = TokenServiceClient::new(s.deps().admin_channel(s.gateway));
    let created = admin
        .create_token(pb::CreateTokenRequest {
            name: "ci".into(),
            role: "operator".into(),
            host: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.token.clone();
    assert!(weft_runtime::access::looks_like_token(&secret));
    let ci = Bearer::new(&secret).unwrap();
    let mut nets = pb::network_service_client::NetworkServiceClient::new(as_who(&s, &ci));
    nets.create_network(pb::CreateNetworkRequest {
        name: "by-ci".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Listed without secrets; the store holds the hash only.
    let listed = admin
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let ci_info = listed.iter().find(|t| t.name == "ci").unwrap();
    assert_eq!(ci_info.role, "operator");
    assert_eq!(ci_info.created_by, "admin:admin");
    assert!(ci_info.revoked.is_none());
    assert!(!format!("{listed:?}").contains(&secret));
    // (A SQLite store is the gateway's alone while it runs: read on Postgres.)
    if b == Backend::Postgres {
        let db = weft_store::Db::open(
            &s.deps().gateway_db.url,
            &weft_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM gateway_tokens")
            .fetch_all(db.read())
            .await
            .unwrap();
        assert!(hashes.contains(&weft_runtime::access::token_hash(&secret)));
        assert!(hashes.iter().all(|h| !h.contains(&secret[5..20])));
    }

    // Names are unique among live tokens; bad input names its field.
    let dup = admin
        .create_token(pb::CreateTokenRequest {
            name: "ci".into(),
            role: "viewer".into(),
            host: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    for (name, role, host, field) in [
        ("Bad Name", "viewer", "", "name"),
        ("x", "root", "", "role"),
        ("x", "gateway", "", "role"),
        ("x", "agent", "", "host"),
        ("x", "viewer", "h1", "host"),
    ] {
        let st = admin
            .create_token(pb::CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                host: host.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{name} {role} {host}");
        let bad = st.get_details_bad_request().unwrap();
        assert!(
            bad.field_violations.iter().any(|v| v.field == field),
            "{name} {role} {host}: {bad:?}"
        );
    }

    // Revoked: refused at once, listed as revoked; the name can be given again.
    admin
        .revoke_token(pb::RevokeTokenRequest { name: "ci".into() })
        .await
        .unwrap();
    let st = nets
        .list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
    assert!(!st.message().contains(&secret));
    let again = admin
        .revoke_token(pb::RevokeTokenRequest { name: "ci".into() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    admin
        .create_token(pb::CreateTokenRequest {
            name: "ci".into(),
            role: "viewer".into(),
            host: String::new(),
        })
        .await
        .unwrap();
}

async fn every_mutation_is_audited_with_its_caller_and_events_carry_it(b: Backend) {
    let s = Stack::start(b).await;
    let ci = token(&s, "ci", Role::Operator, "").await;
    let viewer = token(&s, "look", Role::Viewer, "").await;
    let mut events = pb::event_service_client::EventServiceClient::new(as_who(&s, &ci))
        .watch(pb::WatchRequest {
            skip_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut nets = pb::network_service_client::NetworkServiceClient::new(as_who(&s, &ci));
    nets.create_network(pb::CreateNetworkRequest {
        name: "audited".into(),
        request_id: "req-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let st = nets
        .create_network(pb::CreateNetworkRequest {
            name: "audited".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::AlreadyExists);
    // Refused before running: a viewer's mutation, and one without credentials.
    let st = pb::network_service_client::NetworkServiceClient::new(as_who(&s, &viewer))
        .delete_network(pb::DeleteNetworkRequest {
            network: "audited".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    let st = pb::network_service_client::NetworkServiceClient::new(channel(s.gateway))
        .delete_network(pb::DeleteNetworkRequest {
            network: "audited".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
    // Reads are not audited.
    nets.list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap();

    // The event names who caused it and the request id.
    let ev = loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if ev.kind == pb::EventKind::NetworkCreated as i32 {
            break ev;
        }
    };
    assert_eq!(ev.kind, pb::EventKind::NetworkCreated as i32);
    assert_eq!(ev.actor, "operator:ci");
    assert_eq!(ev.request_id, "req-1");

    s.gateway_handle().flush_audit().await;
    let entries = AuditServiceClient::new(s.deps().admin_channel(s.gateway))
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    // Newest first; the token made for "look" and "ci" (by admin) come first in time.
    let got: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e.identity.as_str(),
                e.rpc.as_str(),
                e.object.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "admin:admin",
                "weft.gateway.v1.TokenService/CreateToken",
                "ci",
                "OK"
            ),
            (
                "admin:admin",
                "weft.gateway.v1.TokenService/CreateToken",
                "look",
                "OK"
            ),
            (
                "operator:ci",
                "weft.gateway.v1.NetworkService/CreateNetwork",
                "audited",
                "OK"
            ),
            (
                "operator:ci",
                "weft.gateway.v1.NetworkService/CreateNetwork",
                "audited",
                "AlreadyExists"
            ),
            (
                "viewer:look",
                "weft.gateway.v1.NetworkService/DeleteNetwork",
                "-",
                "PermissionDenied"
            ),
            (
                "-",
                "weft.gateway.v1.NetworkService/DeleteNetwork",
                "-",
                "Unauthenticated"
            ),
        ]
    );
    assert_eq!(entries.iter().rev().nth(2).unwrap().request_id, "req-1");
    // Only an admin reads it.
    let st = AuditServiceClient::new(as_who(&s, &ci))
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_past_its_rate_is_told_when_to_retry_and_another_goes_on() {
    let s = Stack::start_with(Backend::Sqlite, &["--rate-limit", "5", "--rate-burst", "5"]).await;
    let flood = token(&s, "flood", Role::Viewer, "").await;
    let calm = token(&s, "calm", Role::Viewer, "").await;
    let mut c = pb::network_service_client::NetworkServiceClient::new(as_who(&s, &flood));
    let mut refused = None;
    for _ in 0..20 {
        if let Err(st) = c.list_networks(pb::ListNetworksRequest::default()).await {
            refused = Some(st);
            break;
        }
    }
    let st = refused.expect("the sixth quick call is refused");
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert!(st.message().contains("viewer:flood"), "{}", st.message());
    let retry = st.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.unwrap() > Duration::ZERO);
    pb::network_service_client::NetworkServiceClient::new(as_who(&s, &calm))
        .list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap();

    // A mutation refused for its rate is audited like any refusal.
    let busy = token(&s, "busy", Role::Operator, "").await;
    let mut w = pb::network_service_client::NetworkServiceClient::new(as_who(&s, &busy));
    let mut limited = 0;
    for i in 0..20 {
        let r = w
            .create_network(pb::CreateNetworkRequest {
                name: format!("flood-{i}"),
                validate_only: true,
                ..Default::default()
            })
            .await;
        if matches!(&r, Err(st) if st.code() == Code::ResourceExhausted) {
            limited += 1;
        }
    }
    assert!(limited > 0, "some of 20 quick creates are refused at 5/s");
    s.gateway_handle().flush_audit().await;
    let entries = AuditServiceClient::new(s.deps().admin_channel(s.gateway))
        .list_audit(pb::ListAuditRequest {
            identity: "operator:busy".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 20, "{entries:?}");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.outcome == "ResourceExhausted")
            .count(),
        limited
    );
}
