//! The runtime's parameters (`CNI_*` environment variables), read once and checked. Nothing
//! else in the plugin reads the environment.

use std::path::PathBuf;

use crate::error::{CniError, code};

/// At most this many bytes in one `CNI_*` value (a netns path is at most PATH_MAX).
pub const VALUE_MAX: usize = 4096;
/// A container id, as CNI and the gateway bound it.
pub const CONTAINER_ID_MAX: usize = 255;
/// Linux interface names: 1 to 15 bytes.
pub const IFNAME_MAX: usize = 15;
/// A sandbox name (Docker's container-name rule), which a pod name becomes.
pub const POD_NAME_MAX: usize = 128;
/// A Kubernetes namespace is a DNS label.
pub const POD_NAMESPACE_MAX: usize = 63;

/// What the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!(
                        "CNI_COMMAND {:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION",
                        clip(s)
                    ),
                ));
            }
        })
    }
}

/// The checked parameters of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// ADD, DEL, CHECK: the runtime's container id.
    pub container_id: String,
    /// ADD and CHECK: the container's namespace; DEL: may be absent.
    pub netns: Option<PathBuf>,
    /// ADD, DEL, CHECK: the interface to create inside the container.
    pub ifname: String,
    /// Kubernetes' pod name and namespace from `CNI_ARGS`.
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl CniEnv {
    /// Reads the `CNI_*` variables from `vars` (the process environment in `main`). VERSION
    /// checks nothing else: runtimes send placeholders with it.
    pub fn parse<I, K, V>(vars: I) -> Result<Self, CniError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut get = std::collections::BTreeMap::new();
        for (k, v) in vars {
            let k = k.as_ref();
            if k.starts_with("CNI_") {
                let v = v.as_ref();
                if v.len() > VALUE_MAX {
                    return Err(CniError::new(
                        code::INVALID_ENV,
                        format!("{k} is {} bytes long; at most {VALUE_MAX}", v.len()),
                    ));
                }
                get.insert(k.to_owned(), v.to_owned());
            }
        }
        let var = |k: &str| get.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let required = |k: &str| {
            var(k).ok_or_else(|| CniError::new(code::INVALID_ENV, format!("{k} is not set")))
        };
        let command = Command::parse(required("CNI_COMMAND")?)?;
        let mut env = Self {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            pod_name: None,
            pod_namespace: None,
        };
        if !matches!(command, Command::Add | Command::Del | Command::Check) {
            return Ok(env);
        }
        env.container_id = container_id(required("CNI_CONTAINERID")?)?;
        env.ifname = ifname(required("CNI_IFNAME")?)?;
        env.netns = match (command, var("CNI_NETNS")) {
            (Command::Del, None) => None,
            (_, None) => {
                return Err(CniError::new(code::INVALID_ENV, "CNI_NETNS is not set"));
            }
            (_, Some(p)) => Some(netns(p)?),
        };
        if let Some(args) = var("CNI_ARGS") {
            (env.pod_name, env.pod_namespace) = k8s_args(args)?;
        }
        Ok(env)
    }
}

/// At most 64 characters of a refused value, with control characters escaped by `{:?}`.
pub fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn bad(var: &str, value: &str, why: &str) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("{var} {:?} is invalid: {why}", clip(value)),
    )
}

/// CNI's rule for container ids (the gateway's too).
pub fn container_id(v: &str) -> Result<String, CniError> {
    if v.len() > CONTAINER_ID_MAX {
        return Err(bad(
            "CNI_CONTAINERID",
            v,
            &format!("{} bytes, at most {CONTAINER_ID_MAX}", v.len()),
        ));
    }
    if !docker_name(v) {
        return Err(bad(
            "CNI_CONTAINERID",
            v,
            "expected [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        ));
    }
    Ok(v.to_owned())
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn docker_name(v: &str) -> bool {
    let mut chars = v.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An interface name the kernel and the gateway accept.
pub fn ifname(v: &str) -> Result<String, CniError> {
    let ok = v.len() <= IFNAME_MAX
        && v != "."
        && v != ".."
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(bad(
            "CNI_IFNAME",
            v,
            "expected 1 to 15 characters of a-z A-Z 0-9 _ . -, not starting with -, not . or ..",
        ));
    }
    Ok(v.to_owned())
}

fn netns(v: &str) -> Result<PathBuf, CniError> {
    let path = PathBuf::from(v);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        || v.chars().any(char::is_control)
    {
        return Err(bad(
            "CNI_NETNS",
            v,
            "expected an absolute path without \"..\" or control characters",
        ));
    }
    Ok(path)
}

/// `K8S_POD_NAME` and `K8S_POD_NAMESPACE` from `CNI_ARGS` (`K=V;K=V`); other keys are
/// ignored, as runtimes pass `IgnoreUnknown=1` and keys of other plugins.
fn k8s_args(args: &str) -> Result<(Option<String>, Option<String>), CniError> {
    let (mut name, mut namespace) = (None, None);
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad(
                "CNI_ARGS",
                args,
                &format!("{:?} is not KEY=VALUE", clip(pair)),
            ));
        };
        match k {
            "K8S_POD_NAME" if !v.is_empty() => {
                if v.len() > POD_NAME_MAX || !docker_name(v) {
                    return Err(bad(
                        "CNI_ARGS",
                        v,
                        &format!(
                            "K8S_POD_NAME must match [a-zA-Z0-9][a-zA-Z0-9_.-]* with at most {POD_NAME_MAX} characters"
                        ),
                    ));
                }
                name = Some(v.to_owned());
            }
            "K8S_POD_NAMESPACE" if !v.is_empty() => {
                let label = v.len() <= POD_NAMESPACE_MAX
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !v.starts_with('-')
                    && !v.ends_with('-');
                if !label {
                    return Err(bad(
                        "CNI_ARGS",
                        v,
                        &format!(
                            "K8S_POD_NAMESPACE must be a DNS label of at most {POD_NAMESPACE_MAX} characters"
                        ),
                    ));
                }
                namespace = Some(v.to_owned());
            }
            _ => {}
        }
    }
    Ok((name, namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        CniEnv::parse(vars.iter().copied())
    }

    const ADD: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn version_ignores_the_placeholders_runtimes_send() {
        let env = parse(&[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ])
        .unwrap();
        assert_eq!(env.command, Command::Version);
    }

    #[test]
    fn add_needs_every_variable_and_checks_each() {
        let env = parse(&ADD).unwrap();
        assert_eq!(
            env.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/x"))
        );
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let vars: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = parse(&vars).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str()),
                (4, format!("{missing} is not set").as_str())
            );
        }
        for (k, v) in [
            ("CNI_IFNAME", "a-very-long-interface"),
            ("CNI_IFNAME", "../x"),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_NETNS", "relative/ns"),
            ("CNI_NETNS", "/run/../etc/ns"),
            ("CNI_COMMAND", "ATTACH"),
            ("CNI_ARGS", "K8S_POD_NAME=a b"),
            ("CNI_ARGS", "nokey"),
        ] {
            let mut vars = ADD.to_vec();
            vars.retain(|(key, _)| *key != k);
            vars.push((k, v));
            let e = parse(&vars).unwrap_err();
            assert_eq!(e.code, 4, "{k}={v}: {e}");
            assert!(e.msg.contains(k), "{e}");
        }
        let long = "x".repeat(VALUE_MAX + 1);
        let mut vars = ADD.to_vec();
        vars.push(("CNI_ARGS", &long));
        assert!(parse(&vars).unwrap_err().msg.contains("at most 4096"));
    }

    #[test]
    fn del_takes_an_empty_netns_and_k8s_args_name_the_pod() {
        let env = parse(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c1",
            ),
        ])
        .unwrap();
        assert_eq!(env.netns, None);
        assert_eq!(env.pod_name.as_deref(), Some("web-0"));
        assert_eq!(env.pod_namespace.as_deref(), Some("default"));
    }
}
