//! The driver-agent manages namespaces, links and nftables: without root (or CAP_NET_ADMIN)
//! it cannot, so `weft up` refuses before starting anything rather than fail halfway.

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Whether a `/proc/<pid>/status` text shows CAP_NET_ADMIN in the effective set.
pub fn has_net_admin(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Ok when this process is root or holds CAP_NET_ADMIN; otherwise the one line that says what
/// is missing and how to fix it.
pub fn check() -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if root || has_net_admin(&status) {
        return Ok(());
    }
    Err(format!(
        "weft up needs root: the driver-agent manages network namespaces, links and nftables \
         (CAP_NET_ADMIN), and this process (uid {}) has no such privilege; run `sudo weft up`, \
         or grant it with `sudo setcap cap_net_admin,cap_sys_admin+ep` on weft and driver-agent",
        nix::unistd::geteuid()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_is_read_from_the_effective_set() {
        let status =
            |eff: &str| format!("Name:\tweft\nCapPrm:\t000001ffffffffff\nCapEff:\t{eff}\n");
        assert!(has_net_admin(&status("000001ffffffffff")));
        assert!(has_net_admin(&status("0000000000001000")));
        assert!(!has_net_admin(&status("0000000000000000")));
        assert!(!has_net_admin(&status("0000000000002fff")));
        assert!(!has_net_admin("Name:\tweft\n"));
    }
}
