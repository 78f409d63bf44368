//! Builds valid frames: Ethernet (optionally VLAN-tagged), IPv4/IPv6, TCP/UDP/ICMP,
//! with correct lengths and checksums. Used by the dataplane itself (the RST that
//! refuses a blocked SYN: [`reset_reply`]), by tests, the benchmark's capture
//! generator and the malformed-frame generator (which breaks frames built here).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::parse::{ethertype, proto, tcp_flags};

/// The RST that refuses a TCP segment (RFC 9293 §3.10.7.1), from its destination
/// to its sender, behind the segment's own L2 header (VLAN tags included) with the
/// MACs swapped: for a segment with an ACK, a RST with that acknowledgement as its
/// sequence number; otherwise (a SYN) a RST+ACK acknowledging the segment. `syn`
/// is the frame, its IP header at `l3`, its TCP header at `l4`, `payload` bytes of
/// data; `None` if it is cut short there.
pub fn reset_reply(syn: &[u8], l3: usize, l4: usize, payload: usize) -> Option<Vec<u8>> {
    let ip = syn.get(l3..)?;
    let (src, dst): (IpAddr, IpAddr) = match ip.first()? >> 4 {
        4 => (
            Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?).into(),
            Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?).into(),
        ),
        6 => (
            Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(8..24)?).ok()?).into(),
            Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(24..40)?).ok()?).into(),
        ),
        _ => return None,
    };
    let tcp = syn.get(l4..l4 + 14)?;
    let (sport, dport) = (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]]));
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let flags = tcp[13];
    let spec = if flags & tcp_flags::ACK != 0 {
        let mut s = Spec::tcp(dst, dport, src, sport, tcp_flags::RST);
        s.seq = ack;
        s
    } else {
        let mut s = Spec::tcp(dst, dport, src, sport, tcp_flags::RST | tcp_flags::ACK);
        let len =
            payload as u32 + u32::from(flags & tcp_flags::SYN != 0) + u32::from(flags & tcp_flags::FIN != 0);
        s.seq = 0;
        s.ack = seq.wrapping_add(len);
        s
    };
    let built = spec.build();
    let mut out = Vec::with_capacity(l3 + built.len() - 14);
    out.extend_from_slice(syn.get(..l3)?);
    out[..6].copy_from_slice(&syn[6..12]);
    out[6..12].copy_from_slice(&syn[..6]);
    out.extend_from_slice(&built[14..]);
    Some(out)
}

/// Description of a frame to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// VLAN IDs, outer first (an S-tag 0x88a8 then C-tag 0x8100 for two).
    pub vlans: Vec<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub proto: u8,
    /// Source port (TCP/UDP).
    pub src_port: u16,
    /// Destination port (TCP/UDP).
    pub dst_port: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// Transport payload.
    pub payload: Vec<u8>,
}

impl Spec {
    /// A TCP segment between two addresses.
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Self {
        Spec {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            vlans: Vec::new(),
            src,
            dst,
            proto: proto::TCP,
            src_port: sport,
            dst_port: dport,
            tcp_flags: flags,
            seq: 1000,
            ack: 0,
            payload: Vec::new(),
        }
    }

    /// A UDP datagram.
    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Self {
        Spec { proto: proto::UDP, payload: payload.to_vec(), ..Spec::tcp(src, sport, dst, dport, 0) }
    }

    /// An ICMP / ICMPv6 echo request.
    pub fn icmp_echo(src: IpAddr, dst: IpAddr) -> Self {
        let p = if src.is_ipv4() { proto::ICMP } else { proto::ICMPV6 };
        Spec { proto: p, payload: vec![0xab; 32], ..Spec::tcp(src, 0, dst, 0, 0) }
    }

    /// With a payload.
    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// With VLAN tags.
    pub fn with_vlans(mut self, vlans: &[u16]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        match self.proto {
            proto::TCP => {
                l4.extend_from_slice(&self.src_port.to_be_bytes());
                l4.extend_from_slice(&self.dst_port.to_be_bytes());
                l4.extend_from_slice(&self.seq.to_be_bytes());
                l4.extend_from_slice(&self.ack.to_be_bytes());
                l4.push(5 << 4);
                l4.push(self.tcp_flags);
                l4.extend_from_slice(&64240u16.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
            }
            proto::UDP => {
                l4.extend_from_slice(&self.src_port.to_be_bytes());
                l4.extend_from_slice(&self.dst_port.to_be_bytes());
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            proto::ICMP => l4.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]),
            proto::ICMPV6 => l4.extend_from_slice(&[128, 0, 0, 0, 0x12, 0x34, 0, 1]),
            _ => {}
        }
        l4.extend_from_slice(&self.payload);
        let ck_at = match self.proto {
            proto::TCP => Some(16),
            proto::UDP => Some(6),
            proto::ICMP | proto::ICMPV6 => Some(2),
            _ => None,
        };
        if let Some(at) = ck_at {
            let mut sum = if self.proto == proto::ICMP {
                0
            } else {
                pseudo_sum(self.src, self.dst, self.proto, l4.len())
            };
            sum = add_bytes(sum, &l4);
            let mut ck = fold(sum);
            if ck == 0 && self.proto == proto::UDP {
                ck = 0xffff;
            }
            l4[at..at + 2].copy_from_slice(&ck.to_be_bytes());
        }

        let mut f = Vec::with_capacity(64 + l4.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (i, v) in self.vlans.iter().enumerate() {
            let tpid = if i + 1 < self.vlans.len() { ethertype::QINQ } else { ethertype::VLAN };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                let start = f.len();
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, self.proto, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let ck = fold(add_bytes(0, &f[start..start + 20]));
                f[start + 10..start + 12].copy_from_slice(&ck.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.push(self.proto);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&l4);
        while f.len() < 60 {
            f.push(0);
        }
        f
    }
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut sum = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &d.octets());
        }
        _ => {}
    }
    sum + u32::from(proto) + len as u32
}

fn add_bytes(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Internet checksum of `b` (0 when `b` already includes a correct checksum).
pub fn checksum(b: &[u8]) -> u16 {
    fold(add_bytes(0, b))
}

/// xorshift64: a deterministic pseudo-random stream for generated test inputs,
/// benchmarks and transfers (fixed seeds, no dependency). Not for anything secret.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A stream from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A byte.
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// True once in `n` on average.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Fills `buf` from the stream, 8 bytes per step.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes()[..c.len()]);
        }
    }

    /// `len` bytes of the stream.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}
