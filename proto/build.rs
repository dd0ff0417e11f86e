//! Compiles every `.proto` under `weft/` with protox (pure Rust), so a fresh machine needs no
//! system `protoc`. The descriptor set is also written out for the reflection service.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let files = [
        "weft/gateway/v1/gateway.proto",
        "weft/ipam/v1/ipam.proto",
        "weft/agent/v1/agent.proto",
        "weft/dns/v1/dns.proto",
    ];
    println!("cargo:rerun-if-changed=weft");
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("weft_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // SandboxService has an rpc called Connect (a fixed public name); the generated
        // `Client::connect(dst)` constructor would clash with it. Clients use `::new(channel)`.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
