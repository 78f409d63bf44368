//! `tg-frames`: capture files of test frames for the lab tests.
//!
//! ```text
//! tg-frames malformed OUT.pcap COUNT SEED
//! ```
//!
//! Writes COUNT malformed Ethernet frames, chosen deterministically from SEED, each
//! made by breaking a valid frame built with `tlsgate_dataplane::wire::build::Spec`:
//! truncated inside the IPv4 / IPv6 / TCP / UDP / ICMP header, wrong IP version, bad
//! IHL, bad IPv4 total length, impossible fragment offset, bad IPv6 payload length,
//! truncated or too many IPv6 extension headers, bad TCP data offset, TCP port 0, bad
//! UDP length, too many VLAN tags; some frames carry one or two VLAN tags.
//!
//! Every frame is checked with the dataplane's own parser: it must be malformed for
//! exactly the reason it was built for. Prints the count per reason
//! (`Malformed::name()`) as one JSON object on stdout.
//!
//! Frames are made to survive being sent on a raw `AF_PACKET` socket through a veth
//! pair unchanged in their classification: all are 14 to 1514 bytes long (the
//! kernel refuses shorter ones), and a VLAN-tagged frame is at least 20 bytes (the
//! receiving kernel moves the outer tag into metadata and drops a frame too short
//! for that). So `ethernet_truncated` and `vlan_truncated` are never produced. IPv4
//! fragments (`ipv4_bad_fragment`) always carry two VLAN tags: the receiving kernel
//! would otherwise reassemble them for the af_packet PMD's fanout group
//! (`PACKET_FANOUT_FLAG_DEFRAG`) and, these being impossible fragments, drop them.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use tlsgate_dataplane::wire::build::{checksum, Spec};
use tlsgate_dataplane::wire::parse::{parse, proto, tcp_flags, Malformed};
use tlsgate_drivers::pcapfile::PcapWriter;

/// Longest frame sent (MTU 1500 + Ethernet header).
const MAX_FRAME: usize = 1514;
/// Shortest frame a raw socket sends.
const MIN_FRAME: usize = 14;
/// Shortest VLAN-tagged frame that reaches the receiver's packet socket.
const MIN_TAGGED_FRAME: usize = 20;

const V4_SRC: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
/// RFC 5180 benchmarking prefix, the IPv6 counterpart of 198.18.0.0/15.
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

type Rng = tlsgate_dataplane::wire::build::XorShift;

#[derive(Clone, Copy, PartialEq)]
enum Fam {
    V4,
    V6,
}

/// A valid frame and where its IP header starts.
struct Base {
    f: Vec<u8>,
    l3: usize,
}

impl Base {
    fn l4(&self, fam: Fam) -> usize {
        match fam {
            Fam::V4 => self.l3 + usize::from(self.f[self.l3] & 0x0f) * 4,
            Fam::V6 => self.l3 + 40,
        }
    }

    fn set16(&mut self, at: usize, v: u16) {
        self.f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn get16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.f[at], self.f[at + 1]])
    }

    /// Recomputes the IPv4 header checksum (when the whole header is present), so a
    /// frame is broken only where intended.
    fn fix_v4_checksum(&mut self) {
        let ihl = usize::from(self.f[self.l3] & 0x0f) * 4;
        if ihl >= 20 && self.l3 + ihl <= self.f.len() {
            self.set16(self.l3 + 10, 0);
            let ck = checksum(&self.f[self.l3..self.l3 + ihl]);
            self.set16(self.l3 + 10, ck);
        }
    }

    /// Sets the IP payload length (IPv4 total length or IPv6 payload length).
    fn set_ip_payload_len(&mut self, fam: Fam, len: usize) {
        match fam {
            Fam::V4 => {
                let ihl = usize::from(self.f[self.l3] & 0x0f) * 4;
                self.set16(self.l3 + 2, (ihl + len) as u16);
                self.fix_v4_checksum();
            }
            Fam::V6 => self.set16(self.l3 + 4, len as u16),
        }
    }

    /// Current IP payload length (from the header).
    fn ip_payload_len(&self, fam: Fam) -> usize {
        match fam {
            Fam::V4 => usize::from(self.get16(self.l3 + 2)) - usize::from(self.f[self.l3] & 0x0f) * 4,
            Fam::V6 => usize::from(self.get16(self.l3 + 4)),
        }
    }
}

fn vlan_ids(rng: &mut Rng, n: usize) -> Vec<u16> {
    (0..n).map(|_| 1 + rng.below(4094) as u16).collect()
}

/// A valid frame of family `fam` and protocol `p` with `vlans` tags.
fn base(rng: &mut Rng, fam: Fam, p: u8, vlans: &[u16]) -> Base {
    let (src, dst): (IpAddr, IpAddr) = match fam {
        Fam::V4 => (V4_SRC.into(), V4_DST.into()),
        Fam::V6 => (V6_SRC.into(), V6_DST.into()),
    };
    let sport = 1024 + rng.below(64000) as u16;
    let dport = [80u16, 443, 8080, 53][rng.below(4)];
    let payload: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
    let spec = match p {
        proto::TCP => {
            let flags = [tcp_flags::SYN, tcp_flags::ACK, tcp_flags::ACK | tcp_flags::FIN][rng.below(3)];
            Spec::tcp(src, sport, dst, dport, flags).with_payload(&payload)
        }
        proto::UDP => Spec::udp(src, sport, dst, dport, &payload),
        proto::ICMP | proto::ICMPV6 => Spec::icmp_echo(src, dst),
        other => Spec { proto: other, ..Spec::tcp(src, sport, dst, dport, 0) }.with_payload(&payload),
    };
    let f = spec.with_vlans(vlans).build();
    Base { f, l3: 14 + 4 * vlans.len() }
}

fn any_fam(rng: &mut Rng) -> Fam {
    if rng.coin() {
        Fam::V4
    } else {
        Fam::V6
    }
}

fn any_proto(rng: &mut Rng, fam: Fam) -> u8 {
    match (rng.below(3), fam) {
        (0, _) => proto::TCP,
        (1, _) => proto::UDP,
        (_, Fam::V4) => proto::ICMP,
        (_, Fam::V6) => proto::ICMPV6,
    }
}

/// The kinds of damage, with the reason each must produce.
const KINDS: &[Malformed] = &[
    Malformed::VlanTooManyTags,
    Malformed::Ipv4Truncated,
    Malformed::Ipv4BadVersion,
    Malformed::Ipv4BadHeaderLength,
    Malformed::Ipv4BadTotalLength,
    Malformed::Ipv4BadFragment,
    Malformed::Ipv6Truncated,
    Malformed::Ipv6BadVersion,
    Malformed::Ipv6BadPayloadLength,
    Malformed::Ipv6ExtTruncated,
    Malformed::Ipv6TooManyExt,
    Malformed::TcpTruncated,
    Malformed::TcpBadDataOffset,
    Malformed::TcpZeroPort,
    Malformed::UdpTruncated,
    Malformed::UdpBadLength,
    Malformed::IcmpTruncated,
];

/// One malformed frame of kind `kind`.
fn damaged(rng: &mut Rng, kind: Malformed) -> Vec<u8> {
    // Most frames untagged, some with one tag, a few QinQ.
    let tags = match rng.below(8) {
        0..=4 => 0,
        5 | 6 => 1,
        _ => 2,
    };
    let vl = vlan_ids(rng, tags);
    let mut b;
    match kind {
        Malformed::VlanTooManyTags => {
            let n = 3 + rng.below(3);
            let fam = any_fam(rng);
            let p = any_proto(rng, fam);
            let tags = vlan_ids(rng, n);
            b = base(rng, fam, p, &tags);
        }
        Malformed::Ipv4Truncated => {
            let p = any_proto(rng, Fam::V4);
            b = base(rng, Fam::V4, p, &vl);
            b.f.truncate(b.l3 + rng.below(20));
        }
        Malformed::Ipv4BadVersion => {
            let p = any_proto(rng, Fam::V4);
            b = base(rng, Fam::V4, p, &vl);
            let v = [0u8, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15][rng.below(15)];
            b.f[b.l3] = (v << 4) | 5;
        }
        Malformed::Ipv4BadHeaderLength => {
            let p = any_proto(rng, Fam::V4);
            b = base(rng, Fam::V4, p, &vl);
            if rng.coin() {
                b.f[b.l3] = 0x40 | rng.below(5) as u8;
            } else {
                // 60-byte header claimed, frame ends before that.
                b.f[b.l3] = 0x4f;
                b.f.truncate(b.l3 + 20 + rng.below(40));
            }
        }
        Malformed::Ipv4BadTotalLength => {
            let p = any_proto(rng, Fam::V4);
            b = base(rng, Fam::V4, p, &vl);
            let total = if rng.coin() { rng.below(20) } else { b.f.len() - b.l3 + 1 + rng.below(1000) };
            b.set16(b.l3 + 2, total as u16);
            b.fix_v4_checksum();
        }
        Malformed::Ipv4BadFragment => {
            // Always QinQ: the af_packet PMD joins a PACKET_FANOUT group with
            // PACKET_FANOUT_FLAG_DEFRAG, so the receiving kernel reassembles (here:
            // discards) IPv4 fragments whose EtherType it sees as IPv4 (untagged or
            // single-tagged, after moving the outer tag to metadata) before the
            // dataplane could see them.
            let p = any_proto(rng, Fam::V4);
            let tags = vlan_ids(rng, 2);
            b = base(rng, Fam::V4, p, &tags);
            let plen = b.ip_payload_len(Fam::V4);
            let min_off = (65536 - plen).div_ceil(8);
            let off = min_off + rng.below(0x1fff - min_off + 1);
            let mf = if rng.coin() { 0x2000 } else { 0 };
            b.set16(b.l3 + 6, off as u16 | mf);
            b.fix_v4_checksum();
        }
        Malformed::Ipv6Truncated => {
            let p = any_proto(rng, Fam::V6);
            b = base(rng, Fam::V6, p, &vl);
            b.f.truncate(b.l3 + rng.below(40));
        }
        Malformed::Ipv6BadVersion => {
            let p = any_proto(rng, Fam::V6);
            b = base(rng, Fam::V6, p, &vl);
            let v = [0u8, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15][rng.below(15)];
            b.f[b.l3] = (v << 4) | (b.f[b.l3] & 0x0f);
        }
        Malformed::Ipv6BadPayloadLength => {
            let p = any_proto(rng, Fam::V6);
            b = base(rng, Fam::V6, p, &vl);
            let len = b.f.len() - b.l3 - 40 + 1 + rng.below(1000);
            b.set16(b.l3 + 4, len as u16);
        }
        Malformed::Ipv6ExtTruncated => {
            // Hop-by-hop or destination options claiming more than the payload holds.
            let ext = [0u8, 60][rng.below(2)];
            b = base(rng, Fam::V6, ext, &vl);
            let words = 1 + rng.below(4);
            let mut hdr = vec![0u8; words * 8];
            hdr[0] = proto::TCP;
            hdr[1] = (words - 1 + 1 + rng.below(10)) as u8;
            let at = b.l3 + 40;
            b.f.truncate(at);
            b.f.extend_from_slice(&hdr);
            b.set_ip_payload_len(Fam::V6, hdr.len());
        }
        Malformed::Ipv6TooManyExt => {
            b = base(rng, Fam::V6, 60, &vl);
            let n = 9 + rng.below(4);
            let at = b.l3 + 40;
            b.f.truncate(at);
            for i in 0..n {
                let next = if i + 1 == n { 59 } else { 60 };
                b.f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            b.set_ip_payload_len(Fam::V6, n * 8);
        }
        Malformed::TcpTruncated | Malformed::UdpTruncated | Malformed::IcmpTruncated => {
            let fam = any_fam(rng);
            let (p, min) = match kind {
                Malformed::TcpTruncated => (proto::TCP, 20),
                Malformed::UdpTruncated => (proto::UDP, 8),
                _ => (if fam == Fam::V4 { proto::ICMP } else { proto::ICMPV6 }, 4),
            };
            b = base(rng, fam, p, &vl);
            let len = rng.below(min);
            b.set_ip_payload_len(fam, len);
            // Sometimes also cut the frame where the IP packet now ends.
            if rng.coin() {
                let end = b.l4(fam) + len;
                b.f.truncate(end);
            }
        }
        Malformed::TcpBadDataOffset => {
            let fam = any_fam(rng);
            b = base(rng, fam, proto::TCP, &vl);
            let l4 = b.l4(fam);
            let seg = b.ip_payload_len(fam);
            let words = if rng.coin() || seg >= 60 {
                rng.below(5)
            } else {
                let first = seg / 4 + 1;
                first + rng.below(16 - first)
            };
            b.f[l4 + 12] = (words as u8) << 4;
        }
        Malformed::TcpZeroPort => {
            let fam = any_fam(rng);
            b = base(rng, fam, proto::TCP, &vl);
            let l4 = b.l4(fam);
            match rng.below(3) {
                0 => b.set16(l4, 0),
                1 => b.set16(l4 + 2, 0),
                _ => {
                    b.set16(l4, 0);
                    b.set16(l4 + 2, 0);
                }
            }
        }
        Malformed::UdpBadLength => {
            let fam = any_fam(rng);
            b = base(rng, fam, proto::UDP, &vl);
            let l4 = b.l4(fam);
            let real = b.ip_payload_len(fam);
            let bad = match rng.below(3) {
                0 => rng.below(8),
                1 => real + 1 + rng.below(500),
                _ if real > 8 => real - 1 - rng.below(real - 8),
                _ => real + 1,
            };
            b.set16(l4 + 4, bad as u16);
        }
        other => unreachable!("no generator for {other:?}"),
    }
    b.f
}

fn acceptable(f: &[u8]) -> bool {
    let tagged = matches!(u16::from_be_bytes([f[12], f[13]]), 0x8100 | 0x88a8 | 0x9100);
    (MIN_FRAME..=MAX_FRAME).contains(&f.len()) && (!tagged || f.len() >= MIN_TAGGED_FRAME)
}

/// `count` malformed frames from `seed`, with the count per reason.
fn malformed(count: usize, seed: u64) -> (Vec<Vec<u8>>, BTreeMap<&'static str, u64>) {
    let mut rng = Rng::new(seed);
    let mut frames = Vec::with_capacity(count);
    let mut counts = BTreeMap::new();
    while frames.len() < count {
        let kind = KINDS[rng.below(KINDS.len())];
        let f = damaged(&mut rng, kind);
        if !acceptable(&f) {
            continue;
        }
        match parse(&f) {
            Err(reason) if reason == kind => {}
            got => panic!("generator bug: built for {kind:?}, parser says {got:?}: {f:02x?}"),
        }
        *counts.entry(kind.name()).or_insert(0u64) += 1;
        frames.push(f);
    }
    (frames, counts)
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> tlsgate_drivers::Result<()> {
    // The caller names the file: open it here rather than with `PcapWriter::create`,
    // whose error names it too.
    let file = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(std::io::BufWriter::with_capacity(1 << 16, file))?;
    let t0 = 1_700_000_000_000_000_000u64;
    for (i, f) in frames.iter().enumerate() {
        w.write_frame(t0 + i as u64 * 1_000_000, f)?;
    }
    w.flush()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, count, seed) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["malformed", out, count, seed] => match (count.parse::<usize>(), seed.parse::<u64>()) {
            (Ok(c), Ok(s)) => (out.to_string(), c, s),
            _ => {
                eprintln!("tg-frames: COUNT and SEED must be unsigned integers");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: tg-frames malformed OUT.pcap COUNT SEED");
            return ExitCode::from(2);
        }
    };
    let (frames, counts) = malformed(count, seed);
    if let Err(e) = write_pcap(Path::new(&out), &frames) {
        eprintln!("tg-frames: {out}: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}", serde_json::to_string(&counts).expect("a map of counts serializes"));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_appears_and_frames_are_deterministic() {
        let (a, counts) = malformed(3000, 42);
        let (b, _) = malformed(3000, 42);
        assert_eq!(a, b);
        for k in KINDS {
            assert!(counts.get(k.name()).copied().unwrap_or(0) > 50, "{} rare: {counts:?}", k.name());
        }
        assert_eq!(counts.values().sum::<u64>(), 3000);
        assert!(a.iter().all(|f| acceptable(f)));
        let tagged = a.iter().filter(|f| f[12] == 0x81 || f[12] == 0x88).count();
        assert!(tagged > 300, "{tagged} tagged frames");
    }

    #[test]
    fn pcap_round_trips() {
        let (frames, _) = malformed(50, 7);
        let path = std::env::temp_dir().join(format!("tg-frames-{}.pcap", std::process::id()));
        write_pcap(&path, &frames).unwrap();
        let mut r = tlsgate_drivers::pcapfile::PcapReader::open(&path).unwrap();
        let mut buf = Vec::new();
        let mut back = Vec::new();
        while r.next_frame(&mut buf).unwrap().is_some() {
            back.push(buf.clone());
        }
        let _ = std::fs::remove_file(&path);
        assert_eq!(back, frames);
    }
}
