//! Whether this kernel offers what encrypted overlay networks need (Docker's `--opt
//! encrypted`): IPsec ESP in transport mode for IPv4 through XFRM, keyed for AES-GCM
//! (`rfc4106(gcm(aes))`, what Docker's encrypted overlays use). Found by trying, on the probe's
//! scratch thread: the security associations it adds live in the scratch namespace and die with
//! it (no packet is sent; the addresses are documentation ones).
//!
//! Two associations, because the kernel checks the algorithms before the protocol
//! (`xfrm_state_construct`: the algorithms are attached, then `__xfrm_init_state` looks up
//! ESP): one keyed for AES-GCM (ENOSYS, "Requested AEAD algorithm not found": no AES-GCM;
//! EPROTONOSUPPORT, "Requested type not found": AES-GCM there, no ESP), and one with
//! `cbc(aes)` and `hmac(sha256)`, which tells whether ESP is there when AES-GCM is not.
//!
//! The encoding follows `linux/xfrm.h` (64-bit layout): a `nlmsghdr`, an `xfrm_usersa_info`
//! and the algorithm attributes.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};
use nix::libc;

/// What the kernel lacks for encrypted overlays, in the words `GetCapabilities` reports.
pub const NO_XFRM_USER: &str = "xfrm_user";
pub const NO_ESP4: &str = "esp4";
pub const NO_AES_GCM: &str = "rfc4106(gcm(aes))";

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipsec {
    /// The probe ran (an agent that could not make its scratch namespace knows nothing).
    pub probed: bool,
    /// What is missing: [`NO_XFRM_USER`], [`NO_ESP4`], [`NO_AES_GCM`], or what the kernel said
    /// to an association it should have taken.
    pub missing: Vec<String>,
}

impl Ipsec {
    /// Encrypted overlays could run on this kernel.
    pub fn usable(&self) -> bool {
        self.probed && self.missing.is_empty()
    }
}

/// The kernel's answers: to opening an XFRM netlink socket, then (when it opened) to the
/// AES-GCM association and to the CBC + HMAC one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    NoSocket,
    Sa {
        gcm: Result<(), i32>,
        cbc: Result<(), i32>,
    },
}

/// What `answers` say the kernel lacks.
pub fn interpret(answers: Answers) -> Ipsec {
    let mut missing = Vec::new();
    match answers {
        Answers::NoSocket => missing.push(NO_XFRM_USER.to_owned()),
        Answers::Sa { gcm, cbc } => {
            // ENOSYS to AES-GCM: the algorithm was looked for first and not found, so that
            // answer says nothing of ESP; the other association's does.
            let esp_there = match (gcm, cbc) {
                (Ok(()), _) | (_, Ok(())) => Some(true),
                (Err(libc::EPROTONOSUPPORT), _) | (_, Err(libc::EPROTONOSUPPORT)) => Some(false),
                _ => None,
            };
            match esp_there {
                Some(true) => {}
                Some(false) => missing.push(NO_ESP4.to_owned()),
                None => missing.push(format!("{NO_ESP4} (unknown: {})", errno_text(cbc))),
            }
            match gcm {
                Ok(()) | Err(libc::EPROTONOSUPPORT) => {}
                Err(libc::ENOSYS) => missing.push(NO_AES_GCM.to_owned()),
                Err(_) => missing.push(format!("{NO_AES_GCM} (unknown: {})", errno_text(gcm))),
            }
        }
    }
    Ipsec {
        probed: true,
        missing,
    }
}

fn errno_text(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "accepted".to_owned(),
        Err(e) => io::Error::from_raw_os_error(e).to_string(),
    }
}

/// Runs on the probe's scratch thread (in its namespace).
pub fn probe_here() -> Ipsec {
    let Ok(socket) = open() else {
        return interpret(Answers::NoSocket);
    };
    let ask = |seq: u32, algs: &[Alg<'_>]| -> Result<(), i32> {
        socket
            .send(&new_sa_request(seq, 0x100 + seq, algs), 0)
            .and_then(|_| crate::survey::acked(&socket, seq))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    };
    let gcm = ask(1, &[AES_GCM]);
    let cbc = ask(2, &CBC_HMAC);
    interpret(Answers::Sa { gcm, cbc })
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_XFRM)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// One algorithm attribute of an association.
#[derive(Debug, Clone, Copy)]
pub struct Alg<'a> {
    /// `XFRMA_ALG_AEAD`, `XFRMA_ALG_AUTH_TRUNC` or `XFRMA_ALG_CRYPT`.
    pub attr: u16,
    pub name: &'a str,
    pub key: &'a [u8],
    /// The ICV (AEAD) or truncation (authentication) length in bits; none for a cipher.
    pub bits: Option<u32>,
}

const XFRMA_ALG_CRYPT: u16 = 2;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_ALG_AUTH_TRUNC: u16 = 20;

/// AES-128-GCM: a 16-byte key and a 4-byte salt, a 128-bit ICV.
const AES_GCM: Alg<'static> = Alg {
    attr: XFRMA_ALG_AEAD,
    name: "rfc4106(gcm(aes))",
    key: &[7; 20],
    bits: Some(128),
};
const CBC_HMAC: [Alg<'static>; 2] = [
    Alg {
        attr: XFRMA_ALG_AUTH_TRUNC,
        name: "hmac(sha256)",
        key: &[7; 32],
        bits: Some(128),
    },
    Alg {
        attr: XFRMA_ALG_CRYPT,
        name: "cbc(aes)",
        key: &[7; 16],
        bits: None,
    },
];

const NLMSG_HDRLEN: usize = 16;
const XFRM_MSG_NEWSA: u16 = 0x10;
const NLM_F_REQUEST_ACK_CREATE_EXCL: u16 = 0x1 | 0x4 | 0x400 | 0x200;
/// `sizeof(struct xfrm_usersa_info)` on 64-bit kernels.
pub const USERSA_INFO_LEN: usize = 224;
/// `XFRM_ALGO_NAME_LEN`: algorithm names are NUL-padded to this.
const ALG_NAME_LEN: usize = 64;
const AF_INET: u16 = 2;
const IPPROTO_ESP: u8 = 50;
const XFRM_MODE_TRANSPORT: u8 = 0;
const XFRM_INF: u64 = u64::MAX;
/// TEST-NET-1 addresses: the association is never used.
const SRC: [u8; 4] = [192, 0, 2, 1];
const DST: [u8; 4] = [192, 0, 2, 2];

/// `XFRM_MSG_NEWSA` for an ESP transport-mode association from [`SRC`] to [`DST`] with SPI
/// `spi`, keyed with `algs`.
pub fn new_sa_request(seq: u32, spi: u32, algs: &[Alg<'_>]) -> Vec<u8> {
    let mut info = vec![0u8; USERSA_INFO_LEN];
    // xfrm_selector (0..56): daddr, saddr (xfrm_address_t, 16 bytes each), ports (8),
    // family (u16 at 40), prefixlen_d, prefixlen_s, proto, then ifindex and user.
    info[0..4].copy_from_slice(&DST);
    info[16..20].copy_from_slice(&SRC);
    info[40..42].copy_from_slice(&AF_INET.to_ne_bytes());
    info[42] = 32;
    info[43] = 32;
    // xfrm_id (56..80): daddr, spi (big-endian), proto.
    info[56..60].copy_from_slice(&DST);
    info[72..76].copy_from_slice(&spi.to_be_bytes());
    info[76] = IPPROTO_ESP;
    // saddr (80..96).
    info[80..84].copy_from_slice(&SRC);
    // xfrm_lifetime_cfg (96..160): soft and hard byte and packet limits unlimited, then the
    // four expiry times (0: none).
    for limit in info[96..128].chunks_exact_mut(8) {
        limit.copy_from_slice(&XFRM_INF.to_ne_bytes());
    }
    // curlft (160..192), stats (192..204), seq, reqid: 0. family (212), mode (214).
    info[212..214].copy_from_slice(&AF_INET.to_ne_bytes());
    info[214] = XFRM_MODE_TRANSPORT;
    let mut attrs = Vec::new();
    for a in algs {
        let mut value = vec![0u8; ALG_NAME_LEN];
        value[..a.name.len()].copy_from_slice(a.name.as_bytes());
        let key_bits = u32::try_from(a.key.len() * 8).unwrap_or(u32::MAX);
        value.extend_from_slice(&key_bits.to_ne_bytes());
        if let Some(bits) = a.bits {
            value.extend_from_slice(&bits.to_ne_bytes());
        }
        value.extend_from_slice(a.key);
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        attrs.extend_from_slice(&len.to_ne_bytes());
        attrs.extend_from_slice(&a.attr.to_ne_bytes());
        attrs.extend_from_slice(&value);
        attrs.resize(attrs.len().next_multiple_of(4), 0);
    }
    let len = NLMSG_HDRLEN + info.len() + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    b.extend_from_slice(&XFRM_MSG_NEWSA.to_ne_bytes());
    b.extend_from_slice(&NLM_F_REQUEST_ACK_CREATE_EXCL.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&info);
    b.extend_from_slice(&attrs);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(a: Answers) -> Vec<String> {
        interpret(a).missing
    }

    #[test]
    fn the_kernels_answers_name_what_it_lacks() {
        use libc::{EINVAL, ENOSYS, EPROTONOSUPPORT};
        // Everything there.
        let all = interpret(Answers::Sa {
            gcm: Ok(()),
            cbc: Ok(()),
        });
        assert!(all.usable(), "{all:?}");
        // This project's CI kernel: no AES-GCM ("Requested AEAD algorithm not found"), no ESP
        // ("Requested type not found" to CBC + HMAC).
        assert_eq!(
            missing(Answers::Sa {
                gcm: Err(ENOSYS),
                cbc: Err(EPROTONOSUPPORT)
            }),
            [NO_ESP4, NO_AES_GCM]
        );
        // AES-GCM found, ESP not: the protocol is what the AEAD association failed on.
        assert_eq!(
            missing(Answers::Sa {
                gcm: Err(EPROTONOSUPPORT),
                cbc: Err(ENOSYS)
            }),
            [NO_ESP4]
        );
        // ESP there (CBC + HMAC taken), AES-GCM not.
        assert_eq!(
            missing(Answers::Sa {
                gcm: Err(ENOSYS),
                cbc: Ok(())
            }),
            [NO_AES_GCM]
        );
        // No algorithm at all: whether ESP is there cannot be told, and says so.
        let m = missing(Answers::Sa {
            gcm: Err(ENOSYS),
            cbc: Err(ENOSYS),
        });
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("esp4 (unknown: "), "{m:?}");
        assert_eq!(m[1], NO_AES_GCM);
        // Something unexpected is reported as it was said, never taken as there.
        let m = missing(Answers::Sa {
            gcm: Err(EINVAL),
            cbc: Err(EINVAL),
        });
        assert!(
            m.iter().all(|s| s.contains("unknown: Invalid argument")),
            "{m:?}"
        );
        assert!(
            !interpret(Answers::Sa {
                gcm: Err(EINVAL),
                cbc: Ok(())
            })
            .usable()
        );
        // No XFRM netlink at all.
        assert_eq!(missing(Answers::NoSocket), [NO_XFRM_USER]);
        // Not probed: not usable, nothing named.
        assert!(!Ipsec::default().usable());
    }

    #[test]
    fn the_association_request_is_laid_out_as_linux_xfrm_h() {
        let b = new_sa_request(9, 0x101, &[AES_GCM]);
        // nlmsghdr: length, XFRM_MSG_NEWSA, NLM_F_REQUEST | ACK | CREATE | EXCL, seq.
        assert_eq!(&b[0..4], &u32::try_from(b.len()).unwrap().to_ne_bytes());
        assert_eq!(&b[4..6], &0x10u16.to_ne_bytes());
        assert_eq!(&b[6..8], &0x605u16.to_ne_bytes());
        assert_eq!(&b[8..12], &9u32.to_ne_bytes());
        let info = &b[16..16 + USERSA_INFO_LEN];
        assert_eq!(&info[56..60], &[192, 0, 2, 2], "id.daddr");
        assert_eq!(&info[72..76], &[0, 0, 1, 1], "id.spi, network order");
        assert_eq!(info[76], 50, "id.proto ESP");
        assert_eq!(&info[80..84], &[192, 0, 2, 1], "saddr");
        assert_eq!(&info[212..214], &2u16.to_ne_bytes(), "family AF_INET");
        assert_eq!(info[214], 0, "transport mode");
        // XFRMA_ALG_AEAD: struct xfrm_algo_aead { name[64], key bits, ICV bits, key }.
        let attr = &b[16 + USERSA_INFO_LEN..];
        assert_eq!(&attr[0..2], &(4u16 + 64 + 4 + 4 + 20).to_ne_bytes());
        assert_eq!(&attr[2..4], &18u16.to_ne_bytes());
        assert_eq!(&attr[4..21], b"rfc4106(gcm(aes))");
        assert!(attr[21..68].iter().all(|&c| c == 0));
        assert_eq!(&attr[68..72], &160u32.to_ne_bytes());
        assert_eq!(&attr[72..76], &128u32.to_ne_bytes());
        assert_eq!(attr.len(), 96, "padded to four bytes");
        // CBC + HMAC: xfrm_algo_auth (with the truncation) then xfrm_algo (without).
        let b = new_sa_request(1, 1, &CBC_HMAC);
        let attrs = &b[16 + USERSA_INFO_LEN..];
        assert_eq!(&attrs[2..4], &20u16.to_ne_bytes());
        assert_eq!(&attrs[72..76], &128u32.to_ne_bytes(), "truncation bits");
        let second = 4 + 64 + 4 + 4 + 32;
        assert_eq!(&attrs[second + 2..second + 4], &2u16.to_ne_bytes());
        assert_eq!(
            &attrs[second..second + 2],
            &(4u16 + 64 + 4 + 16).to_ne_bytes()
        );
    }
}
