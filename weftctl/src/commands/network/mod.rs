//! `weftctl network …`: Docker's `docker network` commands over `NetworkService` and
//! `SandboxService.Connect/Disconnect`. `network create` and its flags are in [`create`].

use std::{
    io::{BufRead, IsTerminal, Write},
    time::SystemTime,
};

use serde_json::{Value, json};
use weft_proto::gateway::v1::{
    self as pb, network_service_client::NetworkServiceClient,
    sandbox_service_client::SandboxServiceClient,
};

mod create;

pub use create::{create_request, ipam_configs};

use super::{Ctx, Failures};
use crate::{
    cli::{NetworkCmd, NetworkConnect, NetworkLs, NetworkPrune},
    error::CliError,
    json,
    output::{Table, short_id},
    pages::all_pages,
    parse::{self, Filter},
};

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>, cmd: NetworkCmd) -> Result<(), CliError> {
    match cmd {
        NetworkCmd::Create(a) => create::create(ctx, &a).await,
        NetworkCmd::Ls(a) => ls(ctx, &a).await,
        NetworkCmd::Inspect { networks } => inspect(ctx, &networks).await,
        NetworkCmd::Rm { networks } => rm(ctx, &networks).await,
        NetworkCmd::Prune(a) => prune(ctx, &a).await,
        NetworkCmd::Connect(a) => connect(ctx, &a).await,
        NetworkCmd::Disconnect {
            force,
            network,
            sandbox,
        } => {
            let mut c = SandboxServiceClient::new(ctx.gateway().await?);
            c.disconnect(pb::DisconnectRequest {
                sandbox,
                network,
                force,
                request_id: String::new(),
            })
            .await?;
            Ok(())
        }
    }
}

/// The `ListNetworks` request for `--filter` values, and whether `type=` asks for custom
/// (`Some(false)`: not predefined) or builtin (`Some(true)`) networks only.
pub fn list_request(
    filters: &[Filter],
) -> Result<(pb::ListNetworksRequest, Option<bool>), CliError> {
    parse::check_filter_keys(filters, &["name", "id", "driver", "label", "scope", "type"])
        .map_err(CliError::Usage)?;
    let types = parse::values(filters, "type");
    if let Some(bad) = types.iter().find(|t| *t != "custom" && *t != "builtin") {
        return Err(CliError::Usage(format!(
            "invalid filter type={bad:?} (expected custom or builtin)"
        )));
    }
    let custom = types.iter().any(|t| t == "custom");
    let builtin = types.iter().any(|t| t == "builtin");
    // Values of one filter OR: both types together match everything.
    let predefined = match (custom, builtin) {
        (true, false) => Some(false),
        (false, true) => Some(true),
        _ => None,
    };
    Ok((
        pb::ListNetworksRequest {
            name: parse::values(filters, "name"),
            id: parse::values(filters, "id"),
            driver: parse::values(filters, "driver"),
            label: parse::values(filters, "label"),
            scope: parse::values(filters, "scope"),
            ..Default::default()
        },
        predefined,
    ))
}

async fn ls<W: Write>(ctx: &mut Ctx<'_, W>, a: &NetworkLs) -> Result<(), CliError> {
    let (req, predefined) = list_request(&a.filter)?;
    let c = NetworkServiceClient::new(ctx.gateway().await?);
    // Every page, in order: the output is the whole list.
    let all = all_pages(req, |req| {
        let mut c = c.clone();
        async move { Ok(c.list_networks(req).await?.into_inner()) }
    })
    .await?;
    let networks: Vec<pb::Network> = all
        .into_iter()
        .filter(|n| predefined.is_none_or(|p| n.predefined == p))
        .collect();
    if a.quiet {
        for n in &networks {
            ctx.line(short_id(&n.id, a.no_trunc))?;
        }
        return Ok(());
    }
    if ctx.json() {
        for n in &networks {
            ctx.json_line(&json::network(n))?;
        }
        return Ok(());
    }
    let mut t = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    for n in &networks {
        t.row(vec![
            short_id(&n.id, a.no_trunc).to_owned(),
            n.name.clone(),
            n.driver.clone(),
            n.scope.clone(),
        ]);
    }
    ctx.print(&t.render())
}

async fn inspect<W: Write>(ctx: &mut Ctx<'_, W>, names: &[String]) -> Result<(), CliError> {
    let mut c = NetworkServiceClient::new(ctx.gateway().await?);
    let mut found = Vec::new();
    let mut failures = Failures::default();
    for name in names {
        match c
            .get_network(pb::GetNetworkRequest {
                network: name.clone(),
            })
            .await
        {
            Ok(n) => found.push(json::network(&n.into_inner())),
            Err(st) => failures.report(&st.into()),
        }
    }
    ctx.json_pretty(&Value::Array(found))?;
    failures.finish()
}

async fn rm<W: Write>(ctx: &mut Ctx<'_, W>, names: &[String]) -> Result<(), CliError> {
    let mut c = NetworkServiceClient::new(ctx.gateway().await?);
    let mut failures = Failures::default();
    for name in names {
        match c
            .delete_network(pb::DeleteNetworkRequest {
                network: name.clone(),
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

/// Docker's `until` filter: a duration ago (`24h`, `90m`), an RFC 3339 time or Unix seconds.
pub fn until(value: &str, now: SystemTime) -> Result<prost_types::Timestamp, CliError> {
    if let Ok(d) = humantime::parse_duration(value) {
        let t = now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(t.into());
    }
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        });
    }
    value.parse::<prost_types::Timestamp>().map_err(|_| {
        CliError::Usage(format!(
            "invalid filter until={value:?} (expected a duration such as 24h, an RFC 3339 time or Unix seconds)"
        ))
    })
}

/// The `PruneNetworks` request for `--filter` values.
pub fn prune_request(
    filters: &[Filter],
    now: SystemTime,
) -> Result<pb::PruneNetworksRequest, CliError> {
    parse::check_filter_keys(filters, &["label", "label!", "until"]).map_err(CliError::Usage)?;
    let until = match parse::values(filters, "until").as_slice() {
        [] => None,
        [one] => Some(until(one, now)?),
        _ => return Err(CliError::Usage("the until filter can be given once".into())),
    };
    Ok(pb::PruneNetworksRequest {
        label: parse::values(filters, "label"),
        label_not: parse::values(filters, "label!"),
        until,
        validate_only: false,
    })
}

/// Asks on the terminal; `false` unless the answer is y or yes.
fn confirm(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn prune<W: Write>(ctx: &mut Ctx<'_, W>, a: &NetworkPrune) -> Result<(), CliError> {
    let req = prune_request(&a.filter, SystemTime::now())?;
    if !a.force {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "network prune needs confirmation and stdin is not a terminal: pass -f/--force"
                    .into(),
            ));
        }
        if !confirm(
            "WARNING! This will remove all custom networks not used by at least one sandbox.\nAre you sure you want to continue?",
        )? {
            return Ok(());
        }
    }
    let mut c = NetworkServiceClient::new(ctx.gateway().await?);
    let deleted = c.prune_networks(req).await?.into_inner().networks_deleted;
    if ctx.json() {
        return ctx.json_line(&json!({ "networksDeleted": deleted }));
    }
    if !deleted.is_empty() {
        let mut text = String::from("Deleted Networks:\n");
        for n in &deleted {
            text.push_str(n);
            text.push('\n');
        }
        ctx.print(&text)?;
    }
    Ok(())
}

async fn connect<W: Write>(ctx: &mut Ctx<'_, W>, a: &NetworkConnect) -> Result<(), CliError> {
    let mut c = SandboxServiceClient::new(ctx.gateway().await?);
    let e = c
        .connect(pb::ConnectRequest {
            sandbox: a.sandbox.clone(),
            network: a.network.clone(),
            settings: Some(a.settings()),
            request_id: String::new(),
            validate_only: false,
        })
        .await?
        .into_inner();
    if ctx.json() {
        ctx.json_line(&json::endpoint(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, NetworkCreate};

    /// How long before `now` the timestamp `t` is.
    fn ago(t: &prost_types::Timestamp, now: SystemTime) -> Duration {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).unwrap());
        now.duration_since(t).unwrap()
    }

    fn create_args(args: &[&str]) -> NetworkCreate {
        let mut argv = vec!["weftctl", "network", "create"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Network(NetworkCmd::Create(a)) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_flags_become_the_request() {
        let req = create_request(&create_args(&[
            "front",
            "-d",
            "bridge",
            "--subnet",
            "10.1.0.0/24",
            "--gateway",
            "10.1.0.254",
            "--ip-range",
            "10.1.0.128/25",
            "--aux-address",
            "router=10.1.0.5",
            "--internal",
            "--attachable",
            "--label",
            "env=prod",
            "--label",
            "flag",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "--opt",
            "com.docker.network.bridge.name=br-front",
        ]))
        .unwrap();
        assert_eq!(req.name, "front");
        assert_eq!(req.driver, "bridge");
        assert!(req.internal && req.attachable && !req.enable_ipv6);
        assert_eq!(req.enable_ipv4, None);
        let c = &req.ipam.as_ref().unwrap().configs;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].subnet, "10.1.0.0/24");
        assert_eq!(c[0].gateway, "10.1.0.254");
        assert_eq!(c[0].ip_range, "10.1.0.128/25");
        assert_eq!(c[0].aux_addresses["router"], "10.1.0.5");
        assert_eq!(req.labels["env"], "prod");
        assert_eq!(req.labels["flag"], "");
        assert_eq!(req.options["com.docker.network.driver.mtu"], "1400");
        assert_eq!(req.options["com.docker.network.bridge.name"], "br-front");
    }

    #[test]
    fn several_subnets_take_the_ranges_and_gateways_they_contain() {
        let req = create_request(&create_args(&[
            "dual",
            "--ipv6",
            "--subnet",
            "10.2.0.0/24",
            "--subnet",
            "fd00:2::/64",
            "--gateway",
            "fd00:2::1",
            "--gateway",
            "10.2.0.1",
            "--ip-range",
            "fd00:2::/80",
            "--aux-address",
            "a6=fd00:2::9",
        ]))
        .unwrap();
        assert!(req.enable_ipv6);
        let c = &req.ipam.unwrap().configs;
        assert_eq!(c[0].subnet, "10.2.0.0/24");
        assert_eq!(c[0].gateway, "10.2.0.1");
        assert_eq!(c[0].ip_range, "");
        assert_eq!(c[1].subnet, "fd00:2::/64");
        assert_eq!(c[1].gateway, "fd00:2::1");
        assert_eq!(c[1].ip_range, "fd00:2::/80");
        assert_eq!(c[1].aux_addresses["a6"], "fd00:2::9");
    }

    #[test]
    fn create_refuses_what_fits_no_subnet() {
        let err = |args: &[&str]| match create_request(&create_args(args)) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(&["n", "--gateway", "10.0.0.1"]).contains("need a --subnet"));
        assert!(
            err(&["n", "--subnet", "10.0.0.0/24", "--gateway", "10.9.0.1"])
                .contains("--gateway 10.9.0.1 is not inside any --subnet")
        );
        assert!(
            err(&[
                "n",
                "--subnet",
                "10.0.0.0/24",
                "--gateway",
                "10.0.0.1",
                "--gateway",
                "10.0.0.2"
            ])
            .contains("two --gateway values for subnet 10.0.0.0/24")
        );
        assert!(
            err(&["n", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.1.0/25"])
                .contains("--ip-range 10.0.1.0/25 is not inside any --subnet")
        );
    }

    #[test]
    fn create_ipv4_and_ipv6_switches() {
        assert_eq!(
            create_request(&create_args(&["n", "--ipv4=false", "--ipv6"]))
                .unwrap()
                .enable_ipv4,
            Some(false)
        );
        assert_eq!(
            create_request(&create_args(&["n", "--ipv4"]))
                .unwrap()
                .enable_ipv4,
            Some(true)
        );
        assert!(
            !create_request(&create_args(&["n", "--ipv6=false"]))
                .unwrap()
                .enable_ipv6
        );
        assert!(create_request(&create_args(&["n"])).unwrap().ipam.is_none());
    }

    #[test]
    fn bad_create_values_are_usage_errors() {
        for args in [
            &["weftctl", "network", "create", "n", "--subnet", "10.0.0.0"][..],
            &[
                "weftctl",
                "network",
                "create",
                "n",
                "--aux-address",
                "10.0.0.5",
            ],
            &["weftctl", "network", "create", "n", "-o", "mtu"],
            &["weftctl", "network", "create", "n", "--gateway", "gw"],
            &["weftctl", "network", "create", "n", "--ipv6=maybe"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn ls_filters_become_the_request() {
        let f = |s: &str| parse::filter(s).unwrap();
        let (req, predefined) = list_request(&[
            f("name=web"),
            f("name=db"),
            f("driver=bridge"),
            f("label=env=prod"),
            f("scope=local"),
            f("id=abc"),
        ])
        .unwrap();
        assert_eq!(req.name, ["web", "db"]);
        assert_eq!(req.driver, ["bridge"]);
        assert_eq!(req.label, ["env=prod"]);
        assert_eq!(req.scope, ["local"]);
        assert_eq!(req.id, ["abc"]);
        assert_eq!(predefined, None);
        assert_eq!(list_request(&[f("type=custom")]).unwrap().1, Some(false));
        assert_eq!(list_request(&[f("type=builtin")]).unwrap().1, Some(true));
        assert_eq!(
            list_request(&[f("type=builtin"), f("type=custom")])
                .unwrap()
                .1,
            None
        );
        assert!(matches!(
            list_request(&[f("type=odd")]),
            Err(CliError::Usage(_))
        ));
        assert!(
            matches!(list_request(&[f("colour=red")]), Err(CliError::Usage(m)) if m.contains("unknown filter \"colour\""))
        );
    }

    #[test]
    fn prune_filters_become_the_request() {
        let f = |s: &str| parse::filter(s).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let req =
            prune_request(&[f("label=tmp"), f("label!=keep=yes"), f("until=24h")], now).unwrap();
        assert_eq!(req.label, ["tmp"]);
        assert_eq!(req.label_not, ["keep=yes"]);
        assert_eq!(
            ago(req.until.as_ref().unwrap(), now),
            Duration::from_secs(86_400)
        );
        let req = prune_request(&[f("until=2023-11-14T22:13:20Z")], now).unwrap();
        assert_eq!(req.until.unwrap().seconds, 1_700_000_000);
        let req = prune_request(&[f("until=1700000000")], now).unwrap();
        assert_eq!(req.until.unwrap().seconds, 1_700_000_000);
        assert!(matches!(
            prune_request(&[f("until=soon")], now),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            prune_request(&[f("name=x")], now),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn connect_flags_become_endpoint_settings() {
        let cli = Cli::try_parse_from([
            "weftctl",
            "network",
            "connect",
            "front",
            "web",
            "--ip",
            "10.1.0.9",
            "--ip6",
            "fd00::9",
            "--alias",
            "db",
            "--alias",
            "pg",
            "--gw-priority",
            "-10",
            "--driver-opt",
            "k=v",
            "--mac-address",
            "02:42:ac:11:00:02",
            "--link-local-ip",
            "169.254.1.1",
        ])
        .unwrap();
        let Command::Network(NetworkCmd::Connect(a)) = cli.command else {
            panic!("not connect");
        };
        assert_eq!((a.network.as_str(), a.sandbox.as_str()), ("front", "web"));
        let s = a.settings();
        assert_eq!(s.ipv4_address, "10.1.0.9");
        assert_eq!(s.ipv6_address, "fd00::9");
        assert_eq!(s.aliases, ["db", "pg"]);
        assert_eq!(s.gw_priority, -10);
        assert_eq!(s.driver_options["k"], "v");
        assert_eq!(s.mac_address, "02:42:ac:11:00:02");
        assert_eq!(s.link_local_ips, ["169.254.1.1"]);
    }
}
