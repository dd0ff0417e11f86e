//! Every limit the gateway puts on a request, in one place. Each is checked where the value is
//! validated (the error names the field and the limit) and documented in the `.proto`; the
//! limits that are flags (request ids, Watch streams) are in `lib.rs`'s `Args`.
//!
//! Where a consumer decides the limit, it is the consumer's: the kernel for interface names
//! (IFNAMSIZ) and hostnames (HOST_NAME_MAX), DNS for names and labels, the resolver for
//! `resolv.conf` (musl ignores a `search` line of 256 bytes or more; glibc caps the numeric
//! options). The counts bound what one request can make the gateway store, render or send.

/// Names of networks, sandboxes and hosts (Docker's rule allows any length; 128 is Docker's
/// practical limit for container names).
pub const MAX_NAME: usize = 128;
/// A lookup key: a name, an id (64 hex characters) or an id prefix.
pub const MAX_KEY: usize = 128;
/// A DNS name (RFC 1035: 255 octets on the wire, 253 characters in text).
pub const MAX_DNS_NAME: usize = 253;
/// A DNS label (RFC 1035).
pub const MAX_DNS_LABEL: usize = 63;
/// A hostname (Linux HOST_NAME_MAX; sethostname refuses longer).
pub const MAX_HOSTNAME: usize = 64;
/// An interface name (IFNAMSIZ is 16 with the terminating NUL).
pub const MAX_IFNAME: usize = 15;
/// A prefix of generated interface names (`com.docker.network.container_iface_prefix`),
/// leaving room for a three-digit index.
pub const MAX_IFNAME_PREFIX: usize = MAX_IFNAME - 3;
/// A container id (CNI's CONTAINERID has no bound; Docker's are 64 characters).
pub const MAX_CONTAINER_ID: usize = 255;
/// A namespace path (PATH_MAX).
pub const MAX_NETNS_PATH: usize = 4096;

/// Labels per network or sandbox.
pub const MAX_LABELS: usize = 64;
/// A label key, in bytes.
pub const MAX_LABEL_KEY: usize = 128;
/// A label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;

/// Subnets (`ipam.configs`) per network.
pub const MAX_SUBNETS: usize = 8;
/// Reserved addresses (`aux_addresses`) per subnet.
pub const MAX_AUX_ADDRESSES: usize = 64;
/// The widest IPv4 subnet a network may have without `ALLOW_WIDE_SUBNETS`: anything wider
/// shadows the host's own routes.
pub const MIN_IPV4_PREFIX: u8 = 8;
/// The widest IPv6 subnet without `ALLOW_WIDE_SUBNETS`.
pub const MIN_IPV6_PREFIX: u8 = 32;
/// The network option that allows subnets wider than the two limits above ("true").
pub const ALLOW_WIDE_SUBNETS: &str = "weft.network.allow_wide_subnets";
/// VXLAN ids in `com.docker.network.driver.overlay.vxlanid_list`.
pub const MAX_VXLAN_IDS: usize = 16;

/// DNS upstreams of a sandbox or a network.
pub const MAX_DNS_SERVERS: usize = 8;
/// Search domains of a sandbox (resolv.conf's traditional MAXDNSRCH).
pub const MAX_DNS_SEARCH: usize = 6;
/// The search domains joined by spaces, in bytes. musl reads resolv.conf with `fgets` into 256
/// bytes and ignores a line that does not fit with its newline: `search ` (7 bytes), the
/// domains and the newline must fit in 255, so the domains take at most 247.
pub const MAX_DNS_SEARCH_LINE: usize = 247;
/// resolv.conf options of a sandbox.
pub const MAX_DNS_OPTIONS: usize = 16;
/// Extra hosts entries of a sandbox.
pub const MAX_EXTRA_HOSTS: usize = 64;
/// Published port mappings of a sandbox.
pub const MAX_PORT_MAPPINGS: usize = 64;
/// Initial attachments of one CreateSandbox.
pub const MAX_ATTACHMENTS: usize = 16;
/// Aliases of one endpoint.
pub const MAX_ALIASES: usize = 32;
/// Extra link-local addresses of one endpoint.
pub const MAX_LINK_LOCAL_IPS: usize = 8;
/// Sysctls in `com.docker.network.endpoint.sysctls`.
pub const MAX_ENDPOINT_SYSCTLS: usize = 16;

/// Addresses a host registers.
pub const MAX_HOST_ADDRESSES: usize = 32;
/// Drivers a host registers.
pub const MAX_HOST_DRIVERS: usize = 16;
/// Free-text fields a host registers (addresses of its agent and dns-svc, versions).
pub const MAX_HOST_TEXT: usize = 256;
/// Entries of a host's `capabilities.ipsec_missing` (what its kernel lacks for IPsec: three
/// today).
pub const MAX_HOST_IPSEC_MISSING: usize = 8;
/// Bytes of one such entry.
pub const MAX_HOST_IPSEC_TEXT: usize = 128;

/// Values of one list filter.
pub const MAX_FILTER_VALUES: usize = 64;
/// One list filter value, in bytes.
pub const MAX_FILTER_VALUE: usize = 256;
/// Items per list page when `page_size` is 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest `page_size`.
pub const MAX_PAGE_SIZE: u32 = 1000;
