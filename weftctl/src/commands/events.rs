//! `weftctl events`: follows `EventService.Watch`, one line (or JSON object) per event,
//! resuming from the last revision seen when the stream ends.

use std::{io::Write, time::Duration};

use tonic::Code;
use weft_proto::gateway::v1::{self as pb, event_service_client::EventServiceClient};

use super::Ctx;
use crate::{
    cli::EventsArgs,
    client,
    error::{CliError, with_cause},
    json, output,
    parse::{self, Filter},
};

use pb::EventKind as K;

/// Every kind with its Docker-style `type` and `event` names.
const KINDS: &[(K, &str, &str)] = &[
    (K::NetworkCreated, "network", "created"),
    (K::NetworkUpdated, "network", "updated"),
    (K::NetworkRemoved, "network", "removed"),
    (K::EndpointConnected, "endpoint", "connected"),
    (K::EndpointDisconnected, "endpoint", "disconnected"),
    (K::EndpointUpdated, "endpoint", "updated"),
    (K::SandboxCreated, "sandbox", "created"),
    (K::SandboxRemoved, "sandbox", "removed"),
    (K::HostUp, "host", "up"),
    (K::HostDown, "host", "down"),
    (K::HostRemoved, "host", "removed"),
];

fn single(filters: &[Filter], key: &str) -> Result<String, CliError> {
    match parse::values(filters, key).as_slice() {
        [] => Ok(String::new()),
        [one] => Ok(one.clone()),
        _ => Err(CliError::Usage(format!(
            "the {key} filter can be given once"
        ))),
    }
}

/// The `Watch` request for `--since` and `--filter`.
pub fn watch_request(a: &EventsArgs) -> Result<pb::WatchRequest, CliError> {
    parse::check_filter_keys(&a.filter, &["network", "sandbox", "host", "type", "event"])
        .map_err(CliError::Usage)?;
    let types = parse::values(&a.filter, "type");
    let events = parse::values(&a.filter, "event");
    for t in &types {
        if !KINDS.iter().any(|(_, ty, _)| ty == t) {
            return Err(CliError::Usage(format!(
                "invalid filter type={t:?} (expected network, sandbox, endpoint or host)"
            )));
        }
    }
    for e in &events {
        if !KINDS.iter().any(|(_, _, ev)| ev == e) {
            return Err(CliError::Usage(format!(
                "invalid filter event={e:?} (expected created, updated, removed, connected, disconnected, up or down)"
            )));
        }
    }
    let kinds: Vec<i32> = if types.is_empty() && events.is_empty() {
        Vec::new()
    } else {
        let kinds: Vec<i32> = KINDS
            .iter()
            .filter(|(_, ty, ev)| {
                (types.is_empty() || types.iter().any(|t| t == ty))
                    && (events.is_empty() || events.iter().any(|e| e == ev))
            })
            .map(|(k, _, _)| i32::from(*k))
            .collect();
        if kinds.is_empty() {
            return Err(CliError::Usage(
                "the type and event filters match no event kind".into(),
            ));
        }
        kinds
    };
    Ok(pb::WatchRequest {
        from_revision: a.since.unwrap_or(0),
        kinds,
        network: single(&a.filter, "network")?,
        sandbox: single(&a.filter, "sandbox")?,
        host: single(&a.filter, "host")?,
        // Without --since, only what happens from now on (like `docker events`).
        skip_snapshot: a.since.is_none(),
        bookmarks: false,
        // The whole cluster's events, not one host's dns-svc view.
        scope_host: String::new(),
    })
}

/// Consecutive failed attempts to resume before giving up.
const RESUME_ATTEMPTS: u32 = 5;

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>, a: &EventsArgs) -> Result<(), CliError> {
    let mut req = watch_request(a)?;
    let mut client = EventServiceClient::new(ctx.gateway().await?);
    // Snapshot events carry the snapshot's revision; resuming is possible from SNAPSHOT_END on.
    let mut in_snapshot = req.from_revision == 0 && !req.skip_snapshot;
    let mut resume_from: Option<u64> = None;
    let mut failures = 0;
    loop {
        let ended = match client.watch(req.clone()).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(e)) => {
                            failures = 0;
                            if e.kind == i32::from(K::SnapshotEnd) {
                                in_snapshot = false;
                            }
                            if !in_snapshot {
                                resume_from = Some(e.revision);
                            }
                            if ctx.json() {
                                ctx.json_line(&json::event(&e))?;
                            } else {
                                ctx.line(&output::event_line(&e))?;
                            }
                        }
                        Ok(None) => break None,
                        Err(st) => break Some(st),
                    }
                }
            }
            Err(st) => Some(st),
        };
        // The stream may end at any time (restart, slow consumer): resume where it stopped.
        let retryable = ended.as_ref().is_none_or(|st| {
            matches!(
                st.code(),
                Code::Unavailable | Code::Aborted | Code::Cancelled | Code::Unknown
            )
        });
        let Some(from) = resume_from.filter(|_| retryable && failures < RESUME_ATTEMPTS) else {
            return match ended {
                Some(st) if st.code() == Code::Unavailable => Err(CliError::Unavailable(format!(
                    "lost the event stream of the gateway at {}: {}: {}",
                    client::normalize(&ctx.gateway),
                    with_cause(&st),
                    client::GATEWAY.hint
                ))),
                Some(st) => Err(st.into()),
                None => Ok(()),
            };
        };
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200) * failures).await;
        req.from_revision = from;
        req.skip_snapshot = true;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> EventsArgs {
        let mut argv = vec!["weftctl", "events"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Events(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_since_only_live_events() {
        let req = watch_request(&args(&[])).unwrap();
        assert_eq!(req.from_revision, 0);
        assert!(req.skip_snapshot);
        assert!(req.kinds.is_empty());
    }

    #[test]
    fn since_zero_asks_for_the_snapshot() {
        let req = watch_request(&args(&["--since", "0"])).unwrap();
        assert_eq!(req.from_revision, 0);
        assert!(!req.skip_snapshot);
        let req = watch_request(&args(&["--since", "42"])).unwrap();
        assert_eq!(req.from_revision, 42);
    }

    #[test]
    fn type_and_event_filters_select_kinds() {
        let req = watch_request(&args(&["-f", "type=network"])).unwrap();
        assert_eq!(
            req.kinds,
            [K::NetworkCreated, K::NetworkUpdated, K::NetworkRemoved].map(i32::from)
        );
        let req = watch_request(&args(&["-f", "event=created"])).unwrap();
        assert_eq!(
            req.kinds,
            [K::NetworkCreated, K::SandboxCreated].map(i32::from)
        );
        let req = watch_request(&args(&[
            "-f",
            "type=endpoint",
            "-f",
            "event=connected",
            "-f",
            "network=front",
        ]))
        .unwrap();
        assert_eq!(req.kinds, [i32::from(K::EndpointConnected)]);
        assert_eq!(req.network, "front");
        for bad in [
            ["-f", "type=volume"],
            ["-f", "event=died"],
            ["-f", "colour=red"],
        ] {
            assert!(
                matches!(watch_request(&args(&bad)), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            watch_request(&args(&["-f", "type=host", "-f", "event=created"])),
            Err(CliError::Usage(m)) if m.contains("match no event kind")
        ));
        assert!(matches!(
            watch_request(&args(&["-f", "network=a", "-f", "network=b"])),
            Err(CliError::Usage(m)) if m.contains("given once")
        ));
    }
}
