//! Lists longer than one page of the gateway's (100 items by default): weftctl follows the
//! pages, so its output is the whole list, in order.

use weft_proto::gateway::v1::{
    self as pb, network_service_client::NetworkServiceClient,
    sandbox_service_client::SandboxServiceClient,
};

use crate::harness::{Stack, json_lines};

/// More than the gateway's default page of 100.
const N: usize = 130;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_hosts_show_every_page() {
    let s = Stack::start().await;
    let channel = s.deps().admin_channel(s.gateway);
    let mut nets = NetworkServiceClient::new(channel.clone());
    let mut sbs = SandboxServiceClient::new(channel);
    for i in 0..N {
        nets.create_network(pb::CreateNetworkRequest {
            name: format!("net{i:03}"),
            ipam: Some(pb::Ipam {
                configs: vec![pb::IpamConfig {
                    subnet: format!("10.{}.{}.0/24", 100 + i / 200, i % 200),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        sbs.create_sandbox(pb::CreateSandboxRequest {
            name: format!("sb{i:03}"),
            host: "local".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        // (Each host's agent speaks for that host only.)
        s.registry_for(&format!("host{i:03}"))
            .await
            .register_host(pb::RegisterHostRequest {
                name: format!("host{i:03}"),
                agent_address: "127.0.0.1:1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let names = |out: &str| -> Vec<String> {
        json_lines(out)
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let networks = names(&s.ok(&["--format", "json", "network", "ls"]).await);
    let mut want: Vec<String> = (0..N).map(|i| format!("net{i:03}")).collect();
    want.extend(["bridge", "host", "none"].map(str::to_owned));
    want.sort();
    assert_eq!(networks, want);
    let sandboxes = names(&s.ok(&["--format", "json", "sandbox", "ls"]).await);
    assert_eq!(
        sandboxes,
        (0..N).map(|i| format!("sb{i:03}")).collect::<Vec<_>>()
    );
    let hosts = names(&s.ok(&["--format", "json", "hosts"]).await);
    let mut want: Vec<String> = (0..N).map(|i| format!("host{i:03}")).collect();
    want.push("local".into());
    assert_eq!(hosts, want);
    // The table too: a header and one row per network.
    let table = s.ok(&["network", "ls"]).await;
    assert_eq!(table.lines().count(), N + 4, "{table}");
}
