//! The table `weft up` prints once everything is up: where each service listens and how to
//! talk to it.

use std::{fmt::Write as _, path::Path};

use nix::unistd::Pid;

use crate::plan::{DNS, DNS_OPERATOR, GATEWAY, Service, UpConfig};

/// The text printed once the stack is up: `running`, each service with its PID.
pub fn render(config: &UpConfig, running: &[(&Service, Pid)]) -> String {
    // Commands reach the services only from inside their namespace.
    let prefix = config
        .netns
        .as_ref()
        .map(|n| format!("ip netns exec {} ", n.name))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Weft is up on host {:?} (Ctrl-C or SIGTERM stops it):",
        config.host_name
    );
    if let Some(ns) = &config.netns {
        let _ = writeln!(
            out,
            "  every service runs in network namespace {} ({}): its ports are on that namespace's \
             loopback (brought up by weft), and the agent manages that namespace",
            ns.name,
            ns.path.display()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<13} {:<72} {:>7}  LOG",
        "SERVICE", "LISTENS", "PID"
    );
    // The public API first.
    let order = ["gateway", "ipam-svc", "driver-agent", "dns-svc"];
    for name in order {
        let Some((service, pid)) = running.iter().find(|(s, _)| s.name == name) else {
            continue;
        };
        let listens = if name == "dns-svc" {
            format!(
                "{} (admin), DNS {DNS_OPERATOR} udp+tcp, metrics {}",
                service.listen, service.metrics
            )
        } else {
            format!("{}, metrics {}", service.listen, service.metrics)
        };
        let _ = writeln!(
            out,
            "  {name:<13} {listens:<72} {pid:>7}  {}",
            service.log.display()
        );
    }
    let _ = writeln!(out, "  data          {}", config.data_dir.display());
    if let Some(pg) = &config.postgres {
        let _ = writeln!(
            out,
            "  store         Postgres: gateway {}, ipam-svc {}",
            crate::plan::redact_url(&pg.gateway),
            crate::plan::redact_url(&pg.ipam)
        );
    }
    if let Some(join) = &config.join {
        let _ = writeln!(
            out,
            "  joined        the cluster of {} as host {:?} (its certificates in {}); manage it \
             from the first host (`weftctl hosts` there)",
            join.gateway,
            config.host_name,
            config.data_dir.join("pki").display()
        );
        return out;
    }
    if let Some(addr) = config.advertise {
        let _ = writeln!(
            out,
            "  joinable      at {}: make a join token here (`weftctl host join-token`), then on \
             the new host: weft up --join {} --join-token TOKEN --host-name NAME --advertise ITS_ADDR",
            std::net::SocketAddr::new(addr, crate::plan::GATEWAY_PORT),
            std::net::SocketAddr::new(addr, crate::plan::GATEWAY_PORT),
        );
    }
    let admin = crate::tokens::admin_file(&config.data_dir);
    let _ = writeln!(
        out,
        "  admin token   {} (every call but health and reflection needs a token)",
        admin.display()
    );
    if let Some(tls) = &config.tls {
        let _ = writeln!(
            out,
            "  admin cert    {} (key {}, CA {}): mutual TLS to dns-svc's admin API",
            tls.admin.cert.display(),
            tls.admin.key.display(),
            tls.ca.display()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Talk to it:");
    let (dns_ip, dns_port) = DNS_OPERATOR.split_once(':').unwrap_or((DNS_OPERATOR, "53"));
    // Where the tools are, so that the commands work as printed on a machine whose PATH has
    // neither (scripts/run.sh builds weftctl next to weft and installs grpcurl in its venv).
    let weftctl = format!(
        "{} --token-file {}",
        tool("weftctl", &[&config.bin_dir.join("weftctl")]),
        admin.display()
    );
    let grpcurl = tool(
        "grpcurl",
        &[
            Path::new("/var/cache/weft/venv/bin/grpcurl"),
            Path::new("/usr/local/bin/grpcurl"),
        ],
    );
    let bearer = format!("-H \"authorization: Bearer $(cat {})\"", admin.display());
    // ipam-svc, the agent and dns-svc serve mutual TLS; dns-svc's admin API takes the admin
    // certificate.
    let dns_admin = config.tls.as_ref().map(|t| {
        format!(
            "{grpcurl} -cacert {} -cert {} -key {} {DNS} weft.dns.v1.DnsService/GetStats",
            t.ca.display(),
            t.admin.cert.display(),
            t.admin.key.display()
        )
    });
    // weft itself, to ask the supervisor how the services are doing.
    let weft = std::env::current_exe().map_or_else(|_| "weft".into(), |p| p.display().to_string());
    for cmd in [
        format!("{weft} status --data-dir {}", config.data_dir.display()),
        format!("{weftctl} network ls"),
        format!("{weftctl} hosts"),
        format!("{weftctl} network create mynet"),
        format!("{grpcurl} -plaintext {GATEWAY} list"),
        format!(
            "{grpcurl} -plaintext {bearer} {GATEWAY} weft.gateway.v1.NetworkService/ListNetworks"
        ),
        format!("{grpcurl} -plaintext {GATEWAY} grpc.health.v1.Health/Check"),
        format!("dig @{dns_ip} -p {dns_port} NAME.NETWORK.weft."),
        format!("curl -s http://{}/metrics", crate::plan::METRICS_GATEWAY),
    ]
    .into_iter()
    .chain(dns_admin)
    .chain(
        config
            .advertise
            .map(|_| format!("{weftctl} host join-token")),
    ) {
        let _ = writeln!(out, "  {prefix}{cmd}");
    }
    out
}

/// `name` when it is on PATH; else the first of `places` that exists; else `name`.
fn tool(name: &str, places: &[&Path]) -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if on_path {
        return name.to_owned();
    }
    places
        .iter()
        .find(|p| p.is_file())
        .map_or_else(|| name.to_owned(), |p| p.display().to_string())
}
