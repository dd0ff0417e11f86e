//! The admin API, `weft.dns.v1.DnsService`: converts requests at the edge and explains answers.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};
use tonic::{Request, Response, Status};
use weft_proto::dns::v1::{self as pb, dns_service_server::DnsService};
use weft_runtime::access::{Role, Rule};

use crate::{
    error::DnsError,
    records::FindError,
    resolver::{Origin, Outcome, Query, Resolver, Source},
    server::{ListenerState, SandboxListeners},
};

/// Who may call the admin API: the gateway (it waits for revisions) and administrators (by
/// their certificates; operators use it to explain answers). Checked when dns-svc serves TLS;
/// a method missing here keeps the server from starting.
pub const RULES: &[Rule] = &[
    Rule::only("/weft.dns.v1.DnsService/Resolve", GATEWAY_ADMIN, false),
    Rule::only("/weft.dns.v1.DnsService/GetStats", GATEWAY_ADMIN, false),
    Rule::only(
        "/weft.dns.v1.DnsService/ListListeners",
        GATEWAY_ADMIN,
        false,
    ),
    Rule::only(
        "/weft.dns.v1.DnsService/WaitForRevision",
        GATEWAY_ADMIN,
        false,
    ),
];

const GATEWAY_ADMIN: &[Role] = &[Role::Gateway, Role::Admin];

/// The tonic service of the admin API, taking requests as large as [`RULES`] allow.
pub fn server(admin: Admin) -> pb::dns_service_server::DnsServiceServer<Admin> {
    use pb::dns_service_server::DnsServiceServer;
    weft_runtime::grpc::limit_requests(
        DnsServiceServer::new(admin),
        RULES,
        DnsServiceServer::max_decoding_message_size,
    )
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub resolver: Arc<Resolver>,
    pub listeners: Arc<SandboxListeners>,
    pub operator_addr: std::net::SocketAddr,
    /// This host's name: the admin API knows only its sandboxes.
    pub host: String,
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn qtype_from_pb(t: i32, qtype: u32) -> Result<RecordType, DnsError> {
    use pb::RecordType as T;
    Ok(match T::try_from(t) {
        Ok(T::Unspecified | T::A) => RecordType::A,
        Ok(T::Aaaa) => RecordType::AAAA,
        Ok(T::Ptr) => RecordType::PTR,
        Ok(T::Cname) => RecordType::CNAME,
        Ok(T::Srv) => RecordType::SRV,
        Ok(T::Txt) => RecordType::TXT,
        Ok(T::Mx) => RecordType::MX,
        Ok(T::Ns) => RecordType::NS,
        Ok(T::Soa) => RecordType::SOA,
        Ok(T::Other) => match u16::try_from(qtype) {
            Ok(n) if n > 0 => RecordType::from(n),
            _ => {
                return Err(DnsError::invalid(
                    "qtype",
                    qtype.to_string(),
                    "must be a DNS type number from 1 to 65535 with type OTHER",
                ));
            }
        },
        Err(_) => {
            return Err(DnsError::invalid(
                "type",
                t.to_string(),
                "unknown record type",
            ));
        }
    })
}

fn qtype_to_pb(t: RecordType) -> pb::RecordType {
    use pb::RecordType as T;
    match t {
        RecordType::A => T::A,
        RecordType::AAAA => T::Aaaa,
        RecordType::PTR => T::Ptr,
        RecordType::CNAME => T::Cname,
        RecordType::SRV => T::Srv,
        RecordType::TXT => T::Txt,
        RecordType::MX => T::Mx,
        RecordType::NS => T::Ns,
        RecordType::SOA => T::Soa,
        _ => T::Other,
    }
}

fn rcode_to_pb(r: ResponseCode) -> pb::Rcode {
    match r {
        ResponseCode::NoError => pb::Rcode::Noerror,
        ResponseCode::FormErr => pb::Rcode::Formerr,
        ResponseCode::ServFail => pb::Rcode::Servfail,
        ResponseCode::NXDomain => pb::Rcode::Nxdomain,
        ResponseCode::NotImp => pb::Rcode::Notimp,
        ResponseCode::Refused => pb::Rcode::Refused,
        _ => pb::Rcode::Unspecified,
    }
}

fn explain(o: &Outcome) -> pb::Explanation {
    pb::Explanation {
        source: match o.source {
            Source::Local => pb::AnswerSource::Local,
            Source::Forwarded => pb::AnswerSource::Forwarded,
            Source::NotForwarded => pb::AnswerSource::NotForwarded,
        } as i32,
        matches: o
            .matches
            .iter()
            .map(|t| pb::Match {
                network_id: t.network_id.clone(),
                network_name: t.network_name.clone(),
                endpoint_id: t.endpoint_id.clone(),
                sandbox_id: t.sandbox_id.clone(),
                sandbox_name: t.sandbox_name.clone(),
                matched_as: t.matched_as.as_str().to_owned(),
                address: t
                    .v4
                    .map(|a| a.to_string())
                    .or_else(|| t.v6.map(|a| a.to_string()))
                    .unwrap_or_default(),
            })
            .collect(),
        upstream: o.upstream.map(|u| u.to_string()).unwrap_or_default(),
        upstream_origin: match &o.origin {
            None => pb::UpstreamOrigin::Unspecified,
            Some(Origin::Sandbox) => pb::UpstreamOrigin::Sandbox,
            Some(Origin::Network(_)) => pb::UpstreamOrigin::Network,
            Some(Origin::Host) => pb::UpstreamOrigin::Host,
        } as i32,
        upstream_network_id: match &o.origin {
            Some(Origin::Network(n)) => n.clone(),
            _ => String::new(),
        },
        failed_upstreams: o
            .failed_upstreams
            .iter()
            .map(|(u, _)| u.to_string())
            .collect(),
        steps: o.steps.clone(),
    }
}

impl Admin {
    /// A sandbox of this host by id, unique id prefix or name.
    fn find_sandbox<'s>(
        &self,
        snap: &'s crate::records::Snapshot,
        key: &str,
    ) -> Result<&'s crate::records::SandboxView, DnsError> {
        let v = snap.find_sandbox(key).map_err(|e| match e {
            FindError::NotFound => DnsError::SandboxNotFound(key.to_owned()),
            FindError::Ambiguous => DnsError::AmbiguousSandbox(key.to_owned()),
        })?;
        match &v.rec {
            Some(r) if r.host == self.host => Ok(v),
            _ => Err(DnsError::SandboxNotFound(key.to_owned())),
        }
    }

    async fn do_resolve(&self, r: pb::ResolveRequest) -> Result<pb::ResolveResponse, DnsError> {
        let started = Instant::now();
        let qtype = qtype_from_pb(r.r#type, r.qtype)?;
        let name = r.name.trim();
        if name.is_empty() {
            return Err(DnsError::invalid("name", &r.name, "must not be empty"));
        }
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let name = Name::from_ascii(&fqdn)
            .map_err(|e| DnsError::invalid("name", &r.name, e.to_string()))?;
        let snap = self.resolver.snapshot();
        if !snap.synced {
            return Err(DnsError::NotSynced);
        }
        let sandbox_id = if r.sandbox.is_empty() {
            None
        } else {
            let v = self.find_sandbox(&snap, &r.sandbox)?;
            let rec = v
                .rec
                .as_ref()
                .ok_or_else(|| DnsError::SandboxNotFound(r.sandbox.clone()))?;
            Some(rec.id.clone())
        };
        let out = self
            .resolver
            .resolve(Query {
                sandbox_id: sandbox_id.as_deref(),
                name: &name,
                qtype,
                local_only: r.local_only,
                tcp: false,
            })
            .await;
        Ok(pb::ResolveResponse {
            rcode: rcode_to_pb(out.rcode) as i32,
            answers: out
                .answers
                .iter()
                .map(|rec| pb::ResourceRecord {
                    name: rec.name.to_string(),
                    r#type: qtype_to_pb(rec.record_type()) as i32,
                    qtype: u32::from(u16::from(rec.record_type())),
                    ttl: rec.ttl,
                    data: rec.data.to_string(),
                })
                .collect(),
            explanation: Some(explain(&out)),
            elapsed: Some(duration(started.elapsed())),
            revision: out.revision,
        })
    }

    fn stats(&self, r: &pb::GetStatsRequest) -> pb::GetStatsResponse {
        let snap = self.resolver.snapshot();
        let stats = &self.resolver.stats;
        let net_name = |id: &str| {
            snap.networks
                .get(id)
                .map(|n| n.name.clone())
                .unwrap_or_default()
        };
        let sb_name = |id: &str| {
            snap.sandboxes
                .get(id)
                .and_then(|v| v.rec.as_ref())
                .map(|r| r.name.clone())
                .unwrap_or_default()
        };
        let wanted = |filter: &[String], id: &str, name: &str| {
            filter.is_empty() || filter.iter().any(|f| f == id || f == name)
        };
        pb::GetStatsResponse {
            since: Some(timestamp(stats.since)),
            total: Some(stats.total.to_pb()),
            networks: stats
                .networks()
                .into_iter()
                .filter(|(id, _)| wanted(&r.networks, id, &net_name(id)))
                .map(|(id, c)| pb::NetworkStats {
                    network_name: net_name(&id),
                    network_id: id,
                    counters: Some(c),
                })
                .collect(),
            sandboxes: stats
                .sandboxes()
                .into_iter()
                .filter(|(id, _)| wanted(&r.sandboxes, id, &sb_name(id)))
                .map(|(id, c)| pb::SandboxStats {
                    sandbox_name: sb_name(&id),
                    sandbox_id: id,
                    counters: Some(c),
                })
                .collect(),
            operator_listener: Some(stats.operator.to_pb()),
            revision: snap.revision,
        }
    }

    fn listeners(
        &self,
        r: &pb::ListListenersRequest,
    ) -> Result<pb::ListListenersResponse, DnsError> {
        let snap = self.resolver.snapshot();
        let only = if r.sandbox.is_empty() {
            None
        } else {
            let v = self.find_sandbox(&snap, &r.sandbox)?;
            v.rec.as_ref().map(|r| r.id.clone())
        };
        let mut listeners = Vec::new();
        if only.is_none() {
            listeners.push(pb::Listener {
                kind: pb::ListenerKind::Operator as i32,
                address: self.operator_addr.to_string(),
                udp: true,
                tcp: true,
                state: pb::ListenerState::Listening as i32,
                since: Some(timestamp(self.resolver.stats.since)),
                network_ids: snap.networks.keys().cloned().collect(),
                ..Default::default()
            });
        }
        for l in self.listeners.list() {
            if only.as_ref().is_some_and(|id| *id != l.sandbox_id) {
                continue;
            }
            let networks = snap
                .sandboxes
                .get(&l.sandbox_id)
                .map(|v| v.networks.clone())
                .unwrap_or_default();
            let up = l.state == ListenerState::Listening;
            listeners.push(pb::Listener {
                kind: pb::ListenerKind::Sandbox as i32,
                forwards: snap.may_forward(&l.sandbox_id),
                sandbox_id: l.sandbox_id,
                sandbox_name: l.sandbox_name,
                netns_path: l.netns_path,
                address: self.listeners.addr().to_string(),
                udp: up,
                tcp: up,
                state: if up {
                    pb::ListenerState::Listening
                } else {
                    pb::ListenerState::Failed
                } as i32,
                error: l.error,
                since: Some(timestamp(l.since)),
                network_ids: networks,
            });
        }
        Ok(pb::ListListenersResponse {
            listeners,
            revision: snap.revision,
        })
    }
}

#[tonic::async_trait]
impl DnsService for Admin {
    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        Ok(Response::new(self.do_resolve(req.into_inner()).await?))
    }

    async fn get_stats(
        &self,
        req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        Ok(Response::new(self.stats(req.get_ref())))
    }

    async fn list_listeners(
        &self,
        req: Request<pb::ListListenersRequest>,
    ) -> Result<Response<pb::ListListenersResponse>, Status> {
        Ok(Response::new(self.listeners(req.get_ref())?))
    }

    async fn wait_for_revision(
        &self,
        req: Request<pb::WaitForRevisionRequest>,
    ) -> Result<Response<pb::WaitForRevisionResponse>, Status> {
        const MAX: Duration = Duration::from_secs(5);
        let r = req.into_inner();
        let timeout = r
            .timeout
            .and_then(|d| {
                Some(Duration::new(
                    u64::try_from(d.seconds).ok()?,
                    u32::try_from(d.nanos).ok()?,
                ))
            })
            .filter(|d| !d.is_zero())
            .map_or(MAX, |d| d.min(MAX));
        match self.listeners.wait_for(r.revision, timeout).await {
            Some(revision) => Ok(Response::new(pb::WaitForRevisionResponse { revision })),
            None => Err(Status::deadline_exceeded(format!(
                "the records have not reached gateway revision {} within {timeout:?}",
                r.revision
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_needs_a_numeric_type() {
        assert_eq!(
            qtype_from_pb(pb::RecordType::Other as i32, 65).ok(),
            Some(RecordType::HTTPS)
        );
        assert!(qtype_from_pb(pb::RecordType::Other as i32, 0).is_err());
        assert_eq!(
            qtype_from_pb(pb::RecordType::Unspecified as i32, 0).ok(),
            Some(RecordType::A)
        );
    }
}
