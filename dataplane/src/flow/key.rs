//! The flow key: symmetric (both directions of a connection give the same key) and
//! its keyed hash ([`FlowHasher`]), which the flow table and software steering share.

use crate::wire::parse::Parsed;

/// A symmetric flow key: both directions of a connection give the same key.
///
/// Three whole words (two addresses, then ports, protocol and VLAN packed into one
/// `u64`): built, compared and hashed without byte-wise writes being read back as
/// wider words, which stalls store forwarding on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Address of the lower (address, port) endpoint.
    pub lo: u128,
    /// Address of the higher endpoint.
    pub hi: u128,
    /// `lo_port | hi_port << 16 | proto << 32 | vlan << 40 | ipv6 << 56`.
    pub meta: u64,
}

/// Which endpoint sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The `lo` endpoint.
    Lo,
    /// The `hi` endpoint.
    Hi,
}

impl FlowKey {
    /// Key and sending side of a parsed packet. Fragments use the address pair alone
    /// (later fragments carry no ports), so all fragments of a datagram agree.
    #[inline]
    pub fn of(p: &Parsed) -> (FlowKey, Side) {
        Self::with_addrs(p, p.src, p.dst)
    }

    /// As [`FlowKey::of`], reading the addresses again from the frame `p` was parsed
    /// from: on the hot path that is faster than reading back the parser's freshly
    /// written fields (a store-forwarding stall on the wide load).
    #[inline]
    pub fn of_frame(p: &Parsed, frame: &[u8]) -> (FlowKey, Side) {
        let l3 = usize::from(p.l3_offset);
        let (src, dst) = match p.l3 {
            crate::wire::parse::L3::V6 => match (frame.get(l3 + 8..l3 + 24), frame.get(l3 + 24..l3 + 40)) {
                (Some(s), Some(d)) => (
                    u128::from_be_bytes(s.try_into().unwrap_or_default()),
                    u128::from_be_bytes(d.try_into().unwrap_or_default()),
                ),
                _ => (p.src, p.dst),
            },
            _ => match frame.get(l3 + 12..l3 + 20) {
                Some(a) => (
                    u128::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])),
                    u128::from(u32::from_be_bytes([a[4], a[5], a[6], a[7]])),
                ),
                None => (p.src, p.dst),
            },
        };
        Self::with_addrs(p, src, dst)
    }

    /// The key of a TCP connection from `from` to `to` (one address family) on
    /// `vlan`, and the sending side of `from`: a flow the appliance opens itself
    /// (a probe).
    pub fn tcp(from: (std::net::IpAddr, u16), to: (std::net::IpAddr, u16), vlan: u16) -> (FlowKey, Side) {
        let word = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
            std::net::IpAddr::V6(v6) => u128::from(v6),
        };
        let (src, dst) = ((word(from.0), from.1), (word(to.0), to.1));
        let (lo, hi, side) = if src <= dst { (src, dst, Side::Lo) } else { (dst, src, Side::Hi) };
        let meta = u64::from(lo.1)
            | u64::from(hi.1) << 16
            | u64::from(crate::wire::parse::proto::TCP) << 32
            | u64::from(vlan & 0x0fff) << 40
            | u64::from(from.0.is_ipv6()) << 56;
        (FlowKey { lo: lo.0, hi: hi.0, meta }, side)
    }

    #[inline(always)]
    fn with_addrs(p: &Parsed, src: u128, dst: u128) -> (FlowKey, Side) {
        let (sp, dp) = if p.fragment { (0, 0) } else { (p.src_port, p.dst_port) };
        let src_first = (src, sp) <= (dst, dp);
        let (lo, hi, lo_port, hi_port, side) =
            if src_first { (src, dst, sp, dp, Side::Lo) } else { (dst, src, dp, sp, Side::Hi) };
        let v6 = matches!(p.l3, crate::wire::parse::L3::V6);
        let meta = u64::from(lo_port)
            | u64::from(hi_port) << 16
            | u64::from(p.proto) << 32
            | u64::from(p.vlan()) << 40
            | u64::from(v6) << 56;
        (FlowKey { lo, hi, meta }, side)
    }

    /// Port of the `lo` endpoint.
    pub fn lo_port(&self) -> u16 {
        self.meta as u16
    }

    /// Port of the `hi` endpoint.
    pub fn hi_port(&self) -> u16 {
        (self.meta >> 16) as u16
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        (self.meta >> 32) as u8
    }

    /// Innermost VLAN ID.
    pub fn vlan(&self) -> u16 {
        (self.meta >> 40) as u16 & 0x0fff
    }

    /// The sender's and the receiver's addresses and ports of a packet sent by `side`.
    pub fn endpoints(&self, side: Side) -> (std::net::IpAddr, u16, std::net::IpAddr, u16) {
        let ip = |a: u128| -> std::net::IpAddr {
            if self.meta >> 56 & 1 == 1 {
                std::net::Ipv6Addr::from(a).into()
            } else {
                std::net::Ipv4Addr::from(a as u32).into()
            }
        };
        match side {
            Side::Lo => (ip(self.lo), self.lo_port(), ip(self.hi), self.hi_port()),
            Side::Hi => (ip(self.hi), self.hi_port(), ip(self.lo), self.lo_port()),
        }
    }
}

/// The flow hash: keyed with a key drawn at start-up ([`crate::clock::Secrets`]),
/// so nobody outside can build keys that pile into one bucket of the flow table or
/// onto one worker; symmetric because the key is canonical (the two endpoints are
/// sorted before hashing). aHash: AES-NI rounds where the build has them, a
/// folded multiply otherwise, both keyed.
#[derive(Clone)]
pub struct FlowHasher(ahash::RandomState);

impl FlowHasher {
    /// The hash keyed with `seeds`.
    pub fn new(seeds: [u64; 4]) -> Self {
        FlowHasher(ahash::RandomState::with_seeds(seeds[0], seeds[1], seeds[2], seeds[3]))
    }

    /// The hash of a key.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.0.hash_one(key)
    }
}
