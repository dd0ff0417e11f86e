//! The plugin packaged as a managed Docker plugin (`docker plugin create` from a directory of
//! local files, then `enable`): a rootfs holding `weft-docker-plugin` and the shared libraries
//! `ldd` lists, and a config.json (both interface types, host networking so it reaches the
//! gateway on the host namespace's loopback, bind mounts for the token file, dockerd's API
//! socket and dockerd's namespace directory). Swarm mode takes only plugins of this kind.
//! Disabled and removed on drop (dockerd's own drop kills what would be left).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;

use crate::dockerd::Dockerd;

/// Where the plugin finds what the config mounts in.
const TOKEN_IN: &str = "/etc/weft/docker.token";
const DOCKER_SOCK_IN: &str = "/run/weft/docker.sock";

/// A managed plugin, enabled, of `dockerd`.
#[derive(Debug)]
pub struct Managed<'a> {
    dockerd: &'a Dockerd,
    /// Its full name, which is also its driver name (`weft-t…/net:latest`).
    pub name: String,
}

impl<'a> Managed<'a> {
    /// Creates and enables plugin `name` serving `driver` (`bridge` or `overlay`) on its
    /// one socket, as an operator with `token`.
    pub fn create(dockerd: &'a Dockerd, name: &str, driver: &str, token: &Path) -> Self {
        let dir = dockerd
            .dir
            .path()
            .join(format!("plugin-{}", name.replace(['/', ':'], "-")));
        std::fs::create_dir_all(&dir).unwrap();
        rootfs(&dir.join("rootfs"));
        let netns_dir = dockerd.dir.path().join("exec/netns");
        std::fs::create_dir_all(&netns_dir).unwrap();
        let config = config(driver, token, &dockerd.socket(), &netns_dir);
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let m = Self {
            dockerd,
            name: name.to_owned(),
        };
        dockerd.docker(&["plugin", "create", name, dir.to_str().unwrap()]);
        dockerd.docker(&["plugin", "enable", name]);
        m
    }
}

impl Drop for Managed<'_> {
    fn drop(&mut self) {
        let _ = self
            .dockerd
            .try_docker(&["plugin", "disable", "-f", &self.name]);
        let _ = self.dockerd.try_docker(&["plugin", "rm", "-f", &self.name]);
    }
}

/// The plugin's config.json: the plugin protocol's one socket (`weft.sock` in the
/// `/run/docker/plugins` dockerd mounts in), host networking, and the mounts.
fn config(driver: &str, token: &Path, docker_sock: &Path, netns_dir: &Path) -> serde_json::Value {
    let bind = |source: &Path, destination: &str, name: &str| {
        json!({
            "name": name,
            "description": format!("the host's {name}"),
            "source": source,
            "destination": destination,
            "type": "bind",
            "options": ["rbind", "ro"],
        })
    };
    json!({
        "description": "Weft network and IPAM driver",
        "documentation": "Weft's README, Use Weft from Docker",
        "entrypoint": [
            "/usr/bin/weft-docker-plugin",
            "--driver", driver,
            "--socket", "/run/docker/plugins/weft.sock",
            "--gateway", "http://127.0.0.1:7700",
            "--token-file", TOKEN_IN,
            "--docker-host", DOCKER_SOCK_IN,
        ],
        "env": [{"name": "WEFT_LOG", "description": "log filter", "value": "info"}],
        "interface": {
            "types": ["docker.networkdriver/1.0", "docker.ipamdriver/1.0"],
            "socket": "weft.sock",
        },
        "network": {"type": "host"},
        "linux": {"capabilities": []},
        "mounts": [
            bind(token, TOKEN_IN, "token"),
            bind(docker_sock, DOCKER_SOCK_IN, "docker-socket"),
            // The sweep checks SandboxKeys, which name files here (see weft_docker::sweep).
            bind(netns_dir, netns_dir.to_str().unwrap(), "netns"),
        ],
    })
}

/// The plugin binary and every shared library `ldd` lists for it, at their own paths.
fn rootfs(root: &Path) {
    let bin = Path::new(crate::PLUGIN);
    copy_at(root, bin, Path::new("/usr/bin/weft-docker-plugin"));
    let out = Command::new("ldd").arg(bin).output().unwrap();
    assert!(out.status.success(), "ldd {}", bin.display());
    let libs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|t| t.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    assert!(!libs.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    for lib in &libs {
        copy_at(root, lib, lib);
    }
    for dir in ["proc", "sys", "dev", "etc", "tmp", "run/docker/plugins"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
}

/// Copies `from` (following links) to `root` + `at`.
fn copy_at(root: &Path, from: &Path, at: &Path) {
    let to = root.join(at.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}
