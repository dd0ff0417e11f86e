//! Arbitrary bytes as `weft.gateway.v1` requests. A hand-written decoder rather than
//! `arbitrary`: it steers most strings toward the shapes each field takes (so that requests
//! get past validation often enough to test the renderers) and mixes in what an attacker
//! would send: newlines, control characters, `*`, quotes, resolver and nftables keywords,
//! multibyte characters, raw bytes, very long values, counts past every limit. Running out of
//! bytes reads zeros, so every input decodes.

use std::collections::HashMap;

use weft_proto::gateway::v1 as pb;

/// The bytes being decoded.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    /// Out of 8: how often a string is drawn from everything rather than from the field's
    /// own shapes (so some requests are nearly clean and get past validation).
    hostility: usize,
}

/// Fragments that break files, rules or parsers when they get through.
pub const HOSTILE: &[&str] = &[
    "\n",
    "\r\n",
    "\t",
    " ",
    "\0",
    "\x1b[31m",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{200b}",
    "\u{feff}",
    "*",
    "\"",
    "'",
    "`",
    "$(id)",
    ";",
    "#",
    "{",
    "}",
    "\\",
    "/",
    "..",
    ":",
    ",",
    "=",
    "%eth0",
    "é",
    "日本",
    "🦀",
    "İ",
    "nameserver 1.1.1.1",
    "\nsearch evil.example",
    "options ndots:99",
    "drop",
    "accept",
    "jump ports",
    "iifname",
    "meta",
    "@set",
    "-",
    ".",
    "_",
    "0",
];

pub const NAMES: &[&str] = &["web", "db", "a", "net_1.x", "N9", "bridge", "my-net", "x-1"];
pub const DNS_NAMES: &[&str] = &[
    "example.com",
    "corp",
    "a.b.c",
    "svc.cluster.local",
    "x_y",
    "web-1",
    "db.example.",
    "localhost",
];
pub const IPS: &[&str] = &[
    "192.0.2.53",
    "10.0.0.7",
    "127.0.0.1",
    "::1",
    "fd00::53",
    "2001:db8::1",
    "0.0.0.0",
    "::",
    "::0",
    "0::1",
    "0:0:0:0:0:0:0:1",
    "::ffff:10.0.0.1",
    "255.255.255.255",
    "169.254.1.1",
    "fe80::1",
];
/// DNS upstreams: addresses, or address and port.
pub const SERVERS: &[&str] = &[
    "192.0.2.53",
    "fd00::53",
    "1.1.1.1:53",
    "[fd00::1]:5353",
    "10.0.0.1:0",
    "host-gateway",
    "010.0.0.1",
];
pub const IPV4S: &[&str] = &["10.0.0.7", "10.1.2.3", "192.0.2.9", "0.0.0.0", "10.0.0.1"];
pub const IPV6S: &[&str] = &[
    "fd00::7",
    "2001:db8::9",
    "::1",
    "fd00:1::",
    "::ffff:10.0.0.1",
];
pub const RESOLV_OPTIONS: &[&str] = &[
    "ndots:0",
    "ndots:15",
    "ndots:16",
    "ndots:01",
    "timeout:1",
    "timeout:30",
    "attempts:5",
    "attempts:0",
    "rotate",
    "edns0",
    "single-request",
    "no-aaaa",
    "trust-ad",
    "use-vc",
    "debug",
    "inet6",
];
pub const IFNAMES: &[&str] = &[
    "eth0",
    "eth1",
    "br-front",
    "eth0.10",
    "a_b",
    "x",
    "weft0",
    "0123456789abcde",
    "lo",
];
pub const MACS: &[&str] = &[
    "02:42:ac:11:00:02",
    "01:00:5e:00:00:01",
    "aa:bb:cc:dd:ee:fe",
    "02:00:00:00:00:00",
    "00:00:00:00:00:00",
    "02-42-ac-11-00-02",
    "2:42:ac:11:0:2",
];
pub const LINK_LOCAL: &[&str] = &[
    "169.254.1.1",
    "fe80::1",
    "169.254.255.254",
    "febf::1",
    "fe80::1%eth0",
    "169.254.1.1/16",
];
pub const SUBNETS: &[&str] = &[
    "10.1.0.0/24",
    "172.20.0.0/16",
    "0.0.0.0/24",
    "::/64",
    "fd00:1::/64",
    "10.0.0.0/7",
    "10.0.0.5/24",
    "fd00::/31",
    "2001:db8::/48",
    "192.168.7.0/30",
    "10.9.9.9/32",
];
pub const CONTAINER_IDS: &[&str] = &[
    "c0ffee",
    "0123456789abcdef0123",
    "abc.def-ghi_0",
    "0123456789a-bcdef",
];
pub const PATHS: &[&str] = &[
    "/run/netns/x",
    "/var/run/netns/ctr",
    "/proc/123/ns/net",
    "/run/netns/weft-abc",
    "run/netns/x",
    "/run/../proc/1/ns/net",
];
pub const MODES: &[&str] = &["none", "host", "container:web", "container:", "bridge"];
pub const DRIVERS: &[&str] = &[
    "bridge", "overlay", "macvlan", "ipvlan", "host", "none", "weird",
];
pub const NETWORK_OPTIONS: &[&str] = &[
    "com.docker.network.bridge.name",
    "com.docker.network.driver.mtu",
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.host_binding_ipv4",
    "com.docker.network.bridge.gateway_mode_ipv4",
    "com.docker.network.container_iface_prefix",
    "com.docker.network.driver.overlay.vxlanid_list",
    "weft.network.allow_wide_subnets",
    "parent",
    "macvlan_mode",
    "ipvlan_mode",
    "unknown.option",
];
pub const OPTION_VALUES: &[&str] = &[
    "1500",
    "67",
    "65535",
    "true",
    "false",
    "br-x",
    "eth0",
    "192.0.2.1",
    "0.0.0.0",
    "nat",
    "routed",
    "l2",
    "bridge",
    "1,2,3",
    "16777216",
    "br*",
];
pub const LABEL_KEYS: &[&str] = &["app", "tier", "com.example/x", "a=b"];
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.conf.IFNAME.log_martians=1",
    "net.ipv6.conf.IFNAME.accept_ra=0",
    "net.ipv4.conf.eth0.x=1",
    "net.ipv4.conf.IFNAME.../../x=1",
];
const PORTS: &[u32] = &[
    0,
    1,
    22,
    53,
    80,
    443,
    8080,
    49153,
    60999,
    61000,
    65534,
    65535,
    65536,
    70000,
    u32::MAX,
];
const RANGES: &[u32] = &[0, 1, 2, 10, 100, 11847, 11848, 65535, 65536, u32::MAX];
const PRIORITIES: &[i64] = &[0, 1, -1, 10, i64::MAX, i64::MIN];

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let mut input = Self {
            data,
            pos: 0,
            hostility: 8,
        };
        input.hostility = [0, 1, 2, 8][input.below(4)];
        input
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number below `n` (at most 256).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::from(self.byte()) % n
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn pick<T: Copy>(&mut self, pool: &[T]) -> T {
        pool[self.below(pool.len())]
    }

    /// How many entries a repeated field gets: mostly 0 to 3, sometimes up to two past `max`.
    fn count(&mut self, max: usize) -> usize {
        let b = self.byte();
        if b < 224 {
            usize::from(b) % 4
        } else {
            self.below(max + 3)
        }
    }

    /// A string for a field whose good values look like `pool`.
    pub fn text(&mut self, pool: &[&str]) -> String {
        if self.below(8) >= self.hostility {
            return self.pick(pool).to_owned();
        }
        match self.below(10) {
            0 => String::new(),
            1..=4 => self.pick(pool).to_owned(),
            5 => {
                // A good value with something hostile inside.
                let mut s = self.pick(pool).to_owned();
                let at = self.below(s.len() + 1);
                let at = (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.insert_str(at, self.pick(HOSTILE));
                s
            }
            6 => (0..=self.below(4))
                .map(|_| {
                    if self.flag() {
                        self.pick(HOSTILE)
                    } else {
                        self.pick(pool)
                    }
                })
                .collect(),
            7 => {
                let n = self.below(48);
                let bytes: Vec<u8> = (0..n).map(|_| self.byte()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            8 => {
                // Long: up to about 300 characters, around every length limit.
                let unit = self.pick(pool);
                let sep = self.pick(&["", ".", "a", "é"]);
                let n = self.below(64) + 1;
                vec![unit; n].join(sep)
            }
            _ => {
                let n = self.below(256) + 1;
                let c = self.pick(&["a", "a.", "é", "0"]);
                c.repeat(n)
            }
        }
    }

    /// A string shaped like `a`'s or like `b`'s.
    fn text_of(&mut self, a: &[&str], b: &[&str]) -> String {
        if self.flag() {
            self.text(a)
        } else {
            self.text(b)
        }
    }

    fn strings(&mut self, pool: &[&str], max: usize) -> Vec<String> {
        (0..self.count(max)).map(|_| self.text(pool)).collect()
    }

    fn map(&mut self, keys: &[&str], values: &[&str], max: usize) -> HashMap<String, String> {
        (0..self.count(max))
            .map(|_| (self.text(keys), self.text(values)))
            .collect()
    }

    fn port(&mut self) -> u32 {
        if self.flag() {
            self.pick(PORTS)
        } else {
            self.u32() % 65537
        }
    }

    fn port_mapping(&mut self) -> pb::PortMapping {
        pb::PortMapping {
            host_ip: self.text(IPS),
            host_port: self.port(),
            container_port: self.port(),
            protocol: match self.below(16) {
                15 => self.u32() as i32,
                14 => -1,
                13 => 4,
                n => n as i32 % 4,
            },
            range: if self.below(4) == 0 {
                self.pick(RANGES)
            } else {
                self.below(4) as u32
            },
        }
    }

    pub fn settings(&mut self) -> Option<pb::EndpointSettings> {
        if self.below(4) == 0 {
            return None;
        }
        Some(pb::EndpointSettings {
            ipv4_address: self.text_of(IPV4S, IPS),
            ipv6_address: self.text_of(IPV6S, IPS),
            mac_address: self.text(MACS),
            aliases: self.strings(DNS_NAMES, 32),
            gw_priority: if self.flag() {
                self.pick(PRIORITIES)
            } else {
                i64::from(self.u32() as i32)
            },
            driver_options: self.map(&["com.docker.network.endpoint.sysctls"], SYSCTLS, 2),
            link_local_ips: self.strings(LINK_LOCAL, 8),
            interface_name: self.text(IFNAMES),
        })
    }

    pub fn create_sandbox(&mut self) -> pb::CreateSandboxRequest {
        let dns = (self.below(4) != 0).then(|| pb::DnsConfig {
            servers: if self.flag() {
                self.strings(IPS, 8)
            } else {
                self.strings(SERVERS, 8)
            },
            search: self.strings(DNS_NAMES, 6),
            options: self.strings(RESOLV_OPTIONS, 16),
        });
        pb::CreateSandboxRequest {
            name: self.text(NAMES),
            container_id: self.text(CONTAINER_IDS),
            host: if self.flag() {
                String::new()
            } else {
                self.text(NAMES)
            },
            netns_path: if self.flag() {
                String::new()
            } else {
                self.text(PATHS)
            },
            hostname: self.text(DNS_NAMES),
            dns,
            extra_hosts: (0..self.count(64))
                .map(|_| pb::ExtraHost {
                    hostname: self.text(DNS_NAMES),
                    address: self.text_of(IPS, SERVERS),
                })
                .collect(),
            port_mappings: (0..self.count(64)).map(|_| self.port_mapping()).collect(),
            networks: (0..self.count(16))
                .map(|_| pb::NetworkAttachment {
                    network: self.text(NAMES),
                    settings: self.settings(),
                })
                .collect(),
            network_mode: if self.below(6) == 0 {
                self.text(MODES)
            } else {
                String::new()
            },
            request_id: String::new(),
            validate_only: false,
            labels: self.map(LABEL_KEYS, NAMES, 64),
        }
    }

    pub fn create_network(&mut self) -> pb::CreateNetworkRequest {
        let ipam = (self.below(3) != 0).then(|| pb::Ipam {
            driver: if self.below(4) == 0 {
                self.text(&["default", "other"])
            } else {
                String::new()
            },
            configs: (0..self.count(8))
                .map(|_| pb::IpamConfig {
                    subnet: self.text(SUBNETS),
                    ip_range: if self.below(4) == 0 {
                        self.text(SUBNETS)
                    } else {
                        String::new()
                    },
                    gateway: if self.flag() {
                        self.text(IPS)
                    } else {
                        String::new()
                    },
                    aux_addresses: self.map(NAMES, IPS, 64),
                })
                .collect(),
            options: if self.below(8) == 0 {
                self.map(NAMES, NAMES, 2)
            } else {
                HashMap::new()
            },
        });
        pb::CreateNetworkRequest {
            name: self.text(NAMES),
            driver: if self.flag() {
                String::new()
            } else {
                self.text(DRIVERS)
            },
            ipam,
            enable_ipv4: match self.below(3) {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            },
            enable_ipv6: self.flag(),
            internal: self.below(4) == 0,
            attachable: self.flag(),
            labels: self.map(LABEL_KEYS, NAMES, 64),
            options: self.map(NETWORK_OPTIONS, OPTION_VALUES, 4),
            dns_servers: self.strings(IPS, 8),
            request_id: String::new(),
            validate_only: false,
        }
    }

    pub fn connect(&mut self) -> pb::ConnectRequest {
        pb::ConnectRequest {
            sandbox: self.text(NAMES),
            network: self.text(NAMES),
            settings: self.settings(),
            request_id: String::new(),
            validate_only: false,
        }
    }
}
