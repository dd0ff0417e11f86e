//! `weftctl sandbox …` over `SandboxService` (`exec` lives in [`crate::exec`]: it must run
//! before any async runtime starts).

use std::io::Write;

use serde_json::Value;
use weft_proto::gateway::v1::{self as pb, sandbox_service_client::SandboxServiceClient};

use super::{Ctx, Failures};
use crate::{
    cli::{SandboxCmd, SandboxCreate, SandboxLs},
    error::CliError,
    json,
    output::{self, Table, short_id},
    pages::all_pages,
    parse::{self, Filter},
};

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>, cmd: SandboxCmd) -> Result<(), CliError> {
    match cmd {
        SandboxCmd::Create(a) => create(ctx, &a).await,
        SandboxCmd::Ls(a) => ls(ctx, &a).await,
        SandboxCmd::Inspect { sandboxes } => inspect(ctx, &sandboxes).await,
        SandboxCmd::Rm { sandboxes } => rm(ctx, &sandboxes).await,
        SandboxCmd::Exec { .. } => Err(CliError::Usage(
            "sandbox exec runs before the async runtime starts".into(),
        )),
    }
}

/// Whether a `--network` value is a network mode rather than a network to attach.
fn is_mode(v: &str) -> bool {
    v == "host" || v == "none" || v.starts_with("container:")
}

/// The `CreateSandbox` request for `sandbox create`'s flags.
pub fn create_request(a: &SandboxCreate) -> Result<pb::CreateSandboxRequest, CliError> {
    let modes: Vec<&String> = a.network.iter().filter(|n| is_mode(n)).collect();
    let network_mode = match modes.as_slice() {
        [] => String::new(),
        [one] if a.network.len() == 1 => (*one).clone(),
        [one] => {
            return Err(CliError::Usage(format!(
                "--network {one} cannot be combined with other --network values"
            )));
        }
        [a, b, ..] => {
            return Err(CliError::Usage(format!(
                "two network modes given: --network {a} and --network {b}"
            )));
        }
    };
    if network_mode == "container:" {
        return Err(CliError::Usage(
            "--network container: needs a sandbox name (container:<sandbox>)".into(),
        ));
    }
    let networks = a
        .network
        .iter()
        .filter(|n| !is_mode(n))
        .map(|n| parse::attachment(n).map_err(|e| CliError::Usage(format!("--network {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let dns =
        (!a.dns.is_empty() || !a.dns_search.is_empty() || !a.dns_option.is_empty()).then(|| {
            pb::DnsConfig {
                servers: a.dns.clone(),
                search: a.dns_search.clone(),
                options: a.dns_option.clone(),
            }
        });
    Ok(pb::CreateSandboxRequest {
        name: a.name.clone(),
        container_id: a.container_id.clone().unwrap_or_default(),
        host: a.host.clone().unwrap_or_default(),
        netns_path: a.netns.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        dns,
        extra_hosts: a.add_host.clone(),
        port_mappings: a.publish.clone(),
        networks,
        network_mode,
        request_id: String::new(),
        validate_only: a.dry_run,
        labels: a.label.iter().cloned().collect(),
    })
}

async fn create<W: Write>(ctx: &mut Ctx<'_, W>, a: &SandboxCreate) -> Result<(), CliError> {
    let req = create_request(a)?;
    let mut c = SandboxServiceClient::new(ctx.gateway().await?);
    let s = c.create_sandbox(req).await?.into_inner();
    if ctx.json() || a.dry_run {
        ctx.json_pretty(&json::sandbox(&s))
    } else {
        ctx.line(&s.id)
    }
}

/// The `ListSandboxes` request for `--filter` values.
pub fn list_request(filters: &[Filter]) -> Result<pb::ListSandboxesRequest, CliError> {
    parse::check_filter_keys(
        filters,
        &["name", "host", "network", "container-id", "label"],
    )
    .map_err(CliError::Usage)?;
    Ok(pb::ListSandboxesRequest {
        name: parse::values(filters, "name"),
        host: parse::values(filters, "host"),
        network: parse::values(filters, "network"),
        container_id: parse::values(filters, "container-id"),
        label: parse::values(filters, "label"),
        ..Default::default()
    })
}

/// One row of `sandbox ls`.
pub fn row(s: &pb::Sandbox, no_trunc: bool) -> Vec<String> {
    let networks: Vec<&str> = s
        .endpoints
        .iter()
        .map(|e| e.network_name.as_str())
        .collect();
    let networks = if networks.is_empty() && !s.network_mode.is_empty() {
        s.network_mode.clone()
    } else {
        networks.join(",")
    };
    let ports: Vec<String> = s.port_mappings.iter().map(output::port).collect();
    vec![
        short_id(&s.id, no_trunc).to_owned(),
        s.name.clone(),
        s.host.clone(),
        networks,
        ports.join(", "),
    ]
}

async fn ls<W: Write>(ctx: &mut Ctx<'_, W>, a: &SandboxLs) -> Result<(), CliError> {
    let req = list_request(&a.filter)?;
    let c = SandboxServiceClient::new(ctx.gateway().await?);
    // Every page, in order: the output is the whole list.
    let sandboxes = all_pages(req, |req| {
        let mut c = c.clone();
        async move { Ok(c.list_sandboxes(req).await?.into_inner()) }
    })
    .await?;
    if a.quiet {
        for s in &sandboxes {
            ctx.line(short_id(&s.id, a.no_trunc))?;
        }
        return Ok(());
    }
    if ctx.json() {
        for s in &sandboxes {
            ctx.json_line(&json::sandbox(s))?;
        }
        return Ok(());
    }
    let mut t = Table::new(&["SANDBOX ID", "NAME", "HOST", "NETWORKS", "PORTS"]);
    for s in &sandboxes {
        t.row(row(s, a.no_trunc));
    }
    ctx.print(&t.render())
}

async fn inspect<W: Write>(ctx: &mut Ctx<'_, W>, names: &[String]) -> Result<(), CliError> {
    let mut c = SandboxServiceClient::new(ctx.gateway().await?);
    let mut found = Vec::new();
    let mut failures = Failures::default();
    for name in names {
        match c
            .get_sandbox(pb::GetSandboxRequest {
                sandbox: name.clone(),
            })
            .await
        {
            Ok(s) => found.push(json::sandbox(&s.into_inner())),
            Err(st) => failures.report(&st.into()),
        }
    }
    ctx.json_pretty(&Value::Array(found))?;
    failures.finish()
}

async fn rm<W: Write>(ctx: &mut Ctx<'_, W>, names: &[String]) -> Result<(), CliError> {
    let mut c = SandboxServiceClient::new(ctx.gateway().await?);
    let mut failures = Failures::default();
    for name in names {
        match c
            .delete_sandbox(pb::DeleteSandboxRequest {
                sandbox: name.clone(),
                request_id: String::new(),
            })
            .await
        {
            Ok(_) => ctx.line(name)?,
            Err(st) => failures.report(&st.into()),
        }
    }
    failures.finish()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> Result<SandboxCreate, clap::Error> {
        let mut argv = vec!["weftctl", "sandbox", "create", "web"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Sandbox(SandboxCmd::Create(a)) => Ok(*a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_flags_become_the_request() {
        let req = create_request(
            &args(&[
                "--network",
                "front",
                "--network",
                "name=back,alias=api,ip=10.2.0.5",
                "--hostname",
                "web1",
                "--dns",
                "1.1.1.1",
                "--dns-search",
                "example.org",
                "--dns-option",
                "ndots:2",
                "--add-host",
                "db:10.0.0.9",
                "-p",
                "8080:80",
                "--publish",
                "[::1]:5353:53/udp",
                "--netns",
                "/run/netns/x",
                "--label",
                "app=web",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(req.name, "web");
        assert_eq!(req.networks.len(), 2);
        assert_eq!(req.networks[0].network, "front");
        assert_eq!(req.networks[1].network, "back");
        let s = req.networks[1].settings.as_ref().unwrap();
        assert_eq!(
            (s.aliases.as_slice(), s.ipv4_address.as_str()),
            (&["api".to_owned()][..], "10.2.0.5")
        );
        assert_eq!(req.network_mode, "");
        assert_eq!(req.hostname, "web1");
        let dns = req.dns.unwrap();
        assert_eq!(dns.servers, ["1.1.1.1"]);
        assert_eq!(dns.search, ["example.org"]);
        assert_eq!(dns.options, ["ndots:2"]);
        assert_eq!(req.extra_hosts[0].hostname, "db");
        assert_eq!(req.port_mappings.len(), 2);
        assert_eq!(req.port_mappings[1].host_ip, "::1");
        assert_eq!(req.port_mappings[1].protocol, i32::from(pb::Protocol::Udp));
        assert_eq!(req.netns_path, "/run/netns/x");
        assert_eq!(req.labels["app"], "web");
    }

    #[test]
    fn network_modes_stand_alone() {
        assert_eq!(
            create_request(&args(&["--network", "host"]).unwrap())
                .unwrap()
                .network_mode,
            "host"
        );
        assert_eq!(
            create_request(&args(&["--network", "none"]).unwrap())
                .unwrap()
                .network_mode,
            "none"
        );
        let req = create_request(&args(&["--network", "container:db"]).unwrap()).unwrap();
        assert_eq!(req.network_mode, "container:db");
        assert!(req.networks.is_empty());
        let usage = |extra: &[&str]| match create_request(&args(extra).unwrap()) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(usage(&["--network", "host", "--network", "front"]).contains("cannot be combined"));
        assert!(usage(&["--network", "host", "--network", "none"]).contains("two network modes"));
        assert!(usage(&["--network", "container:"]).contains("needs a sandbox name"));
        assert!(usage(&["--network", "name=x,colour=red"]).contains("unknown key"));
    }

    #[test]
    fn bad_publish_and_add_host_are_usage_errors_naming_the_value() {
        let e = args(&["-p", "8000-8010:80"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("must be the same length"), "{e}");
        let e = args(&["--add-host", "db"]).unwrap_err();
        assert!(e.to_string().contains("HOST:IP"), "{e}");
    }

    #[test]
    fn ls_filters_and_rows() {
        let f = |s: &str| parse::filter(s).unwrap();
        let req = list_request(&[
            f("name=web"),
            f("network=front"),
            f("container-id=abc"),
            f("host=h1"),
            f("label=a=b"),
        ])
        .unwrap();
        assert_eq!(req.name, ["web"]);
        assert_eq!(req.network, ["front"]);
        assert_eq!(req.container_id, ["abc"]);
        assert_eq!(req.host, ["h1"]);
        assert_eq!(req.label, ["a=b"]);
        assert!(matches!(
            list_request(&[f("id=x")]),
            Err(CliError::Usage(_))
        ));
        let s = pb::Sandbox {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            host: "h1".into(),
            endpoints: vec![
                pb::Endpoint {
                    network_name: "front".into(),
                    ..Default::default()
                },
                pb::Endpoint {
                    network_name: "back".into(),
                    ..Default::default()
                },
            ],
            port_mappings: vec![pb::PortMapping {
                host_ip: "0.0.0.0".into(),
                host_port: 8080,
                container_port: 80,
                protocol: pb::Protocol::Tcp.into(),
                range: 1,
            }],
            ..Default::default()
        };
        assert_eq!(
            row(&s, false),
            [
                "0123456789ab",
                "web",
                "h1",
                "front,back",
                "0.0.0.0:8080->80/tcp"
            ]
        );
    }
}
