//! 3. Generated malformed inputs never panic, and every `Ok` is checked.

use super::*;

// ---------------------------------------------------------------------------------------
// 3. Generated malformed inputs
// ---------------------------------------------------------------------------------------

use crate::wire::build::XorShift;

/// Tally of outcomes over a generated run.
#[derive(Default)]
struct Tally {
    cases: usize,
    ok: usize,
    reasons: HashMap<Malformed, usize>,
}

impl Tally {
    fn add(&mut self, r: Result<Parsed, Malformed>) {
        self.cases += 1;
        match r {
            Ok(_) => self.ok += 1,
            Err(e) => *self.reasons.entry(e).or_default() += 1,
        }
    }

    fn report(&self, what: &str) {
        let mut reasons: Vec<_> = self.reasons.iter().map(|(r, n)| (r.name(), *n)).collect();
        reasons.sort();
        println!("{what}: {} cases, {} ok, errors {reasons:?}", self.cases, self.ok);
    }
}

/// The reason `frame[..n]` must be rejected with, for a valid `frame` parsed as `full`;
/// `None` when the cut keeps the whole IP packet (only padding is lost), in which case
/// the parse must be identical.
fn truncation_reason(frame: &[u8], full: &Parsed, n: usize) -> Option<Malformed> {
    let l3 = l3_of(frame);
    let end = usize::from(full.l3_end);
    if n < 14 {
        return Some(Malformed::EthernetTruncated);
    }
    if n < l3 {
        return Some(Malformed::VlanTruncated);
    }
    match full.l3 {
        L3::Other(_) => None,
        L3::V4 if n < l3 + 20 => Some(Malformed::Ipv4Truncated),
        L3::V4 if n < l3 + ipv4_ihl(frame) => Some(Malformed::Ipv4BadHeaderLength),
        L3::V4 if n < end => Some(Malformed::Ipv4BadTotalLength),
        L3::V6 if n < l3 + 40 => Some(Malformed::Ipv6Truncated),
        L3::V6 if n < end => Some(Malformed::Ipv6BadPayloadLength),
        _ => None,
    }
}

/// Every truncation `frame[..n]` of every corpus frame: no panic, offsets within `n`,
/// and exactly the reason of the layer the cut falls in (so, e.g., a plain IPv4/TCP
/// frame errs for every n < 54); cuts into the padding only parse as the whole frame.
#[test]
fn every_truncation() {
    let mut t = Tally::default();
    for (name, frame) in corpus() {
        let full = parse_valid(&frame);
        for n in 0..frame.len() {
            let r = parse_checked(&frame[..n]);
            match truncation_reason(&frame, &full, n) {
                Some(e) => assert_eq!(r, Err(e), "{name} cut at {n}"),
                None => assert_eq!(r, Ok(full), "{name} cut at {n}"),
            }
            if let Ok(p) = &r {
                for off in [p.l3_offset, p.l4_offset, p.payload_offset, p.l3_end] {
                    assert!(usize::from(off) <= n, "{name} cut at {n}: {p:?}");
                }
            }
            t.add(r);
        }
    }
    t.report("truncations");
}

/// The same, literally, for the plain IPv4/TCP frame: errors below 54 bytes.
#[test]
fn ipv4_tcp_truncation_literal() {
    let f = Spec::tcp(V4_SRC, 1, V4_DST, 2, tcp_flags::SYN).build();
    assert_eq!(f.len(), 60);
    for n in 0..=60 {
        let want = match n {
            0..=13 => Err(Malformed::EthernetTruncated),
            14..=33 => Err(Malformed::Ipv4Truncated),
            34..=53 => Err(Malformed::Ipv4BadTotalLength),
            _ => Ok(54),
        };
        assert_eq!(parse_checked(&f[..n]).map(|p| p.l3_end), want, "n = {n}");
    }
}

/// What a self-consistent cut of the IP packet to `m` bytes must give (lengths fixed,
/// so the cut reaches the extension and transport layers).
fn l4_cut_expectation(frame: &[u8], full: &Parsed, m: usize) -> Result<Parsed, Malformed> {
    let l3 = usize::from(full.l3_offset);
    let l4 = usize::from(full.l4_offset);
    let cut = l3 + m;
    if cut < l4 {
        return Err(Malformed::Ipv6ExtTruncated);
    }
    let ok = Ok(Parsed { l3_end: cut as u16, ..*full });
    if full.later_fragment {
        return ok;
    }
    let have = cut - l4;
    match full.proto {
        proto::TCP if have < 20 => Err(Malformed::TcpTruncated),
        proto::TCP if have < usize::from(frame[l4 + 12] >> 4) * 4 => Err(Malformed::TcpBadDataOffset),
        proto::UDP if have < 8 => Err(Malformed::UdpTruncated),
        proto::UDP if !full.fragment && have != usize::from(rd16(frame, l4 + 4)) => {
            Err(Malformed::UdpBadLength)
        }
        proto::ICMP | proto::ICMPV6 if have < 4 => Err(Malformed::IcmpTruncated),
        _ => ok,
    }
}

/// Every self-consistent cut of each corpus IP packet between the end of the fixed IP
/// header and its end: the exact extension-header / transport reason, or the same parse
/// with a shorter `l3_end`.
#[test]
fn every_consistent_l4_truncation() {
    let mut t = Tally::default();
    for (name, frame) in corpus() {
        let full = parse_valid(&frame);
        let fixed = match full.l3 {
            L3::V4 => ipv4_ihl(&frame),
            L3::V6 => 40,
            L3::Other(_) => continue,
        };
        let ip_len = usize::from(full.l3_end - full.l3_offset);
        for m in fixed..=ip_len {
            let f = cut_ip(&frame, m);
            let r = parse_checked(&f);
            assert_eq!(r, l4_cut_expectation(&frame, &full, m), "{name} cut to {m}: {}", hex(&f));
            t.add(r);
        }
    }
    t.report("consistent l4 truncations");
    for r in [
        Malformed::TcpTruncated,
        Malformed::UdpTruncated,
        Malformed::IcmpTruncated,
        Malformed::Ipv6ExtTruncated,
    ] {
        assert!(t.reasons.contains_key(&r), "{r:?} never reached");
    }
}

/// Where the headers of a corpus frame end (mutations are biased towards them).
fn header_end(frame: &[u8], full: &Parsed) -> usize {
    match full.l3 {
        L3::Other(_) => (l3_of(frame) + 8).min(frame.len()),
        _ => usize::from(full.payload_offset).max(usize::from(full.l4_offset) + 8).min(frame.len()),
    }
}

/// 10,000 seeded mutations per corpus frame (1–4 bytes each: random value, bit flip or
/// 0x00/0xff, half of them inside the headers; 1 in 16 also truncated or extended): no
/// panic, and every `Ok` satisfies the invariants.
#[test]
fn random_byte_mutations() {
    const PER_FRAME: usize = 10_000;
    let mut t = Tally::default();
    let mut buf = Vec::with_capacity(256);
    for (i, (_, frame)) in corpus().into_iter().enumerate() {
        let full = parse_valid(&frame);
        let hdr = header_end(&frame, &full);
        let mut rng = XorShift::new(0x5eed_0000 + i as u64);
        for _ in 0..PER_FRAME {
            buf.clear();
            buf.extend_from_slice(&frame);
            for _ in 0..1 + rng.below(4) {
                let at = if rng.one_in(2) { rng.below(hdr) } else { rng.below(buf.len()) };
                buf[at] = match rng.below(10) {
                    0..=6 => rng.byte(),
                    7 | 8 => buf[at] ^ (1 << rng.below(8)),
                    _ => [0x00, 0xff][rng.below(2)],
                };
            }
            if rng.one_in(16) {
                let n = rng.below(buf.len() + 1);
                buf.truncate(n);
            } else if rng.one_in(16) {
                for _ in 0..1 + rng.below(32) {
                    buf.push(rng.byte());
                }
            }
            t.add(parse_checked(&buf));
        }
    }
    t.report("byte mutations");
    assert!(t.cases >= 200_000);
    // The generator reaches both outcomes and most reasons (deterministic seeds).
    assert!(t.ok > t.cases / 10 && t.cases - t.ok > t.cases / 10);
    assert!(t.reasons.len() >= 15, "only {} reasons reached", t.reasons.len());
}

/// Applies `f` to each corpus frame of family `l3` with its full parse.
fn for_each_ip_frame(want_v4: bool, mut f: impl FnMut(&str, &[u8], &Parsed)) {
    for (name, frame) in corpus() {
        let full = parse_valid(&frame);
        if full.l3 == if want_v4 { L3::V4 } else { L3::V6 } {
            f(name, &frame, &full);
        }
    }
}

/// IPv4 total length set to each of the 65536 values: `Ipv4BadTotalLength` exactly when
/// it is below the header or beyond the frame; otherwise `l3_end` follows it.
#[test]
fn sweep_ipv4_total_length() {
    let mut t = Tally::default();
    for_each_ip_frame(true, |name, frame, full| {
        let mut f = frame.to_vec();
        let l3 = usize::from(full.l3_offset);
        let ihl = ipv4_ihl(frame);
        for v in 0..=u16::MAX {
            wr16(&mut f, l3 + 2, v);
            let r = parse_checked(&f);
            let bad = usize::from(v) < ihl || l3 + usize::from(v) > f.len();
            assert_eq!(r == Err(Malformed::Ipv4BadTotalLength), bad, "{name} total {v}: {r:?}");
            if let Ok(p) = r {
                assert_eq!(usize::from(p.l3_end), l3 + usize::from(v));
            }
            t.add(r);
        }
    });
    t.report("ipv4 total length sweep");
}

/// IPv4 version/IHL byte set to each of the 256 values: bad version, then IHL < 5 or
/// beyond the frame, then IHL beyond the total length, are rejected in that order.
#[test]
fn sweep_ipv4_version_ihl() {
    let mut t = Tally::default();
    for_each_ip_frame(true, |name, frame, full| {
        let mut f = frame.to_vec();
        let l3 = usize::from(full.l3_offset);
        let total = usize::from(full.l3_end) - l3;
        for b in 0..=u8::MAX {
            f[l3] = b;
            let ihl = usize::from(b & 0x0f) * 4;
            let r = parse_checked(&f);
            let want = if b >> 4 != 4 {
                Some(Malformed::Ipv4BadVersion)
            } else if ihl < 20 || l3 + ihl > f.len() {
                Some(Malformed::Ipv4BadHeaderLength)
            } else if ihl > total {
                Some(Malformed::Ipv4BadTotalLength)
            } else {
                None
            };
            match (want, r) {
                (Some(e), r) => assert_eq!(r, Err(e), "{name} byte {b:#04x}"),
                (None, Ok(p)) => assert_eq!(usize::from(p.l4_offset), l3 + ihl, "{name}"),
                (None, Err(e)) => assert!(!e.name().starts_with("ipv4"), "{name} byte {b:#04x}: {e:?}"),
            }
            t.add(r);
        }
    });
    t.report("ipv4 version/ihl sweep");
}

/// IPv4 fragment field set to each of the 65536 values: `Ipv4BadFragment` exactly when
/// the fragment would end beyond 65535; `fragment`/`later_fragment` follow the bits.
#[test]
fn sweep_ipv4_fragment_field() {
    let mut t = Tally::default();
    for_each_ip_frame(true, |name, frame, full| {
        let mut f = frame.to_vec();
        let l3 = usize::from(full.l3_offset);
        let data = usize::from(full.l3_end - full.l4_offset);
        for v in 0..=u16::MAX {
            wr16(&mut f, l3 + 6, v);
            let r = parse_checked(&f);
            let bad = usize::from(v & 0x1fff) * 8 + data > 65535;
            assert_eq!(r == Err(Malformed::Ipv4BadFragment), bad, "{name} frag {v:#06x}: {r:?}");
            t.add(r);
        }
    });
    t.report("ipv4 fragment field sweep");
}

/// IPv6 payload length set to each of the 65536 values: `Ipv6BadPayloadLength` exactly
/// when beyond the frame; otherwise `l3_end` follows it.
#[test]
fn sweep_ipv6_payload_length() {
    let mut t = Tally::default();
    for_each_ip_frame(false, |name, frame, full| {
        let mut f = frame.to_vec();
        let l3 = usize::from(full.l3_offset);
        for v in 0..=u16::MAX {
            wr16(&mut f, l3 + 4, v);
            let r = parse_checked(&f);
            let bad = l3 + 40 + usize::from(v) > f.len();
            assert_eq!(r == Err(Malformed::Ipv6BadPayloadLength), bad, "{name} plen {v}: {r:?}");
            if let Ok(p) = r {
                assert_eq!(usize::from(p.l3_end), l3 + 40 + usize::from(v));
            }
            t.add(r);
        }
    });
    t.report("ipv6 payload length sweep");
}

/// Each IPv6 extension header's length byte (and each next-header byte, the IPv6
/// header's included) set to each of the 256 values: an extension running past the
/// payload is exactly `Ipv6ExtTruncated`; anything else satisfies the invariants.
#[test]
fn sweep_ipv6_extension_fields() {
    let mut t = Tally::default();
    for_each_ip_frame(false, |name, frame, full| {
        let end = usize::from(full.l3_end);
        let (exts, _, _) = ipv6_chain(frame);
        let mut f = frame.to_vec();
        for b in 0..=u8::MAX {
            f[usize::from(full.l3_offset) + 6] = b;
            t.add(parse_checked(&f));
        }
        f.copy_from_slice(frame);
        for (kind, at, _) in exts {
            for b in 0..=u8::MAX {
                f[at + 1] = b;
                let len = match kind {
                    NH_FRAGMENT => 8,
                    NH_AH => (usize::from(b) + 2) * 4,
                    _ => (usize::from(b) + 1) * 8,
                };
                let r = parse_checked(&f);
                if at + len > end {
                    assert_eq!(r, Err(Malformed::Ipv6ExtTruncated), "{name}: ext {kind} len byte {b}");
                }
                t.add(r);
            }
            f.copy_from_slice(frame);
            for b in 0..=u8::MAX {
                f[at] = b;
                t.add(parse_checked(&f));
            }
            f.copy_from_slice(frame);
        }
    });
    t.report("ipv6 extension field sweep");
}

/// TCP data-offset byte set to each of the 256 values: `TcpBadDataOffset` exactly when
/// below 5 words or beyond the segment; otherwise `payload_offset` follows it.
#[test]
fn sweep_tcp_data_offset() {
    let mut t = Tally::default();
    for (name, frame) in corpus() {
        let full = parse_valid(&frame);
        if full.proto != proto::TCP || full.later_fragment {
            continue;
        }
        let (l4, end) = (usize::from(full.l4_offset), usize::from(full.l3_end));
        let mut f = frame.clone();
        for b in 0..=u8::MAX {
            f[l4 + 12] = b;
            let d = usize::from(b >> 4) * 4;
            let r = parse_checked(&f);
            if d < 20 || l4 + d > end {
                assert_eq!(r, Err(Malformed::TcpBadDataOffset), "{name} byte {b:#04x}");
            } else {
                assert_eq!(r.map(|p| usize::from(p.payload_offset)), Ok(l4 + d), "{name} byte {b:#04x}");
            }
            t.add(r);
        }
    }
    t.report("tcp data offset sweep");
}

/// UDP length set to each of the 65536 values: accepted exactly when ≥ 8 and equal to
/// the IP payload (in a first fragment: at least the fragment's payload), else
/// `UdpBadLength`.
#[test]
fn sweep_udp_length() {
    let mut t = Tally::default();
    for (name, frame) in corpus() {
        let full = parse_valid(&frame);
        if full.proto != proto::UDP || full.later_fragment {
            continue;
        }
        let (l4, end) = (usize::from(full.l4_offset), usize::from(full.l3_end));
        let mut f = frame.clone();
        for v in 0..=u16::MAX {
            wr16(&mut f, l4 + 4, v);
            let r = parse_checked(&f);
            let good =
                v >= 8 && if full.fragment { usize::from(v) >= end - l4 } else { usize::from(v) == end - l4 };
            let want = if good { Ok(full) } else { Err(Malformed::UdpBadLength) };
            assert_eq!(r, want, "{name} udp length {v}");
            t.add(r);
        }
    }
    t.report("udp length sweep");
}

/// Every length-like field of a corpus frame: `(offset, width in bytes)`.
fn length_fields(frame: &[u8], full: &Parsed) -> Vec<(usize, usize)> {
    let l3 = usize::from(full.l3_offset);
    let l4 = usize::from(full.l4_offset);
    let mut v = Vec::new();
    match full.l3 {
        L3::V4 => v.extend([(l3, 1), (l3 + 2, 2), (l3 + 6, 2)]),
        L3::V6 => {
            v.push((l3 + 4, 2));
            let (exts, _, _) = ipv6_chain(frame);
            v.extend(exts.iter().map(|&(_, at, _)| (at + 1, 1)));
        }
        L3::Other(_) => {}
    }
    match full.proto {
        _ if full.later_fragment => {}
        proto::TCP => v.push((l4 + 12, 1)),
        proto::UDP => v.push((l4 + 4, 2)),
        _ => {}
    }
    v
}

/// 2,000 rounds per corpus frame setting 1–3 length fields at once to random, small,
/// near-original or extreme values (and 1 in 8 also truncating the frame): no panic,
/// invariants hold.
#[test]
fn random_length_field_combinations() {
    let mut t = Tally::default();
    for (i, (_, frame)) in corpus().into_iter().enumerate() {
        let full = parse_valid(&frame);
        let fields = length_fields(&frame, &full);
        if fields.is_empty() {
            continue;
        }
        let mut rng = XorShift::new(0x1e46_0000 + i as u64);
        let mut f = frame.clone();
        for _ in 0..2_000 {
            f.clear();
            f.extend_from_slice(&frame);
            for _ in 0..1 + rng.below(3) {
                let (at, width) = fields[rng.below(fields.len())];
                let orig = if width == 2 { usize::from(rd16(&f, at)) } else { usize::from(f[at]) };
                let v = match rng.below(4) {
                    0 => rng.next() as usize,
                    1 => rng.below(64),
                    2 => orig.wrapping_add(rng.below(33)).wrapping_sub(16),
                    _ => [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff][rng.below(8)],
                };
                if width == 2 {
                    wr16(&mut f, at, v as u16);
                } else {
                    f[at] = v as u8;
                }
            }
            if rng.one_in(8) {
                let n = rng.below(f.len() + 1);
                f.truncate(n);
            }
            t.add(parse_checked(&f));
        }
    }
    t.report("length field combinations");
}

/// 100,000 random byte strings of random length 0..200: no panic, invariants hold.
#[test]
fn random_byte_strings() {
    let mut rng = XorShift::new(0xb17e_5000);
    let mut t = Tally::default();
    let mut f = Vec::with_capacity(200);
    for _ in 0..100_000 {
        f.clear();
        for _ in 0..rng.below(200) {
            f.push(rng.byte());
        }
        t.add(parse_checked(&f));
    }
    t.report("random byte strings");
}

/// 100,000 random byte strings with plausible headers (random EtherType from the known
/// ones, 0–3 tags, right IP version, often self-consistent lengths and a known protocol)
/// so that random bytes reach the deeper layers: no panic, invariants hold, and some
/// get all the way to ports.
#[test]
fn random_structured_headers() {
    const ETS: [u16; 6] = [
        ethertype::IPV4,
        ethertype::IPV6,
        ethertype::ARP,
        ethertype::VLAN,
        ethertype::QINQ,
        ethertype::QINQ_OLD,
    ];
    const PROTOS: [u8; 12] = [6, 17, 1, 58, 0, 43, 44, 51, 60, 59, 47, 135];
    let mut rng = XorShift::new(0x57c7_0000);
    let mut t = Tally::default();
    let mut with_ports = 0;
    let mut f = Vec::with_capacity(200);
    for _ in 0..100_000 {
        f.clear();
        let len = 14 + rng.below(186);
        for _ in 0..len {
            f.push(rng.byte());
        }
        let tags = rng.below(4).min((len - 14) / 4);
        for i in 0..tags {
            wr16(&mut f, 12 + 4 * i, ETS[3 + rng.below(3)]);
        }
        let at = 12 + 4 * tags;
        let et = if rng.one_in(10) { ETS[rng.below(ETS.len())] } else { ETS[rng.below(2)] };
        wr16(&mut f, at, et);
        let l3 = at + 2;
        let room = len - l3;
        if et == ethertype::IPV4 && room >= 20 {
            f[l3] = 0x40 | if rng.one_in(2) { 5 } else { rng.below(16) as u8 };
            if rng.below(4) != 0 {
                wr16(&mut f, l3 + 2, (room - rng.below(room.min(8) + 1)) as u16);
            }
            if rng.below(4) != 0 {
                wr16(&mut f, l3 + 6, 0);
            }
            f[l3 + 9] = PROTOS[rng.below(4)];
        } else if et == ethertype::IPV6 && room >= 40 {
            f[l3] = 0x60 | (f[l3] & 0x0f);
            if rng.below(4) != 0 {
                wr16(&mut f, l3 + 4, (room - 40 - rng.below((room - 40).min(8) + 1)) as u16);
            }
            f[l3 + 6] = PROTOS[rng.below(PROTOS.len())];
        }
        let r = parse_checked(&f);
        with_ports += usize::from(matches!(r, Ok(p) if p.has_ports()));
        t.add(r);
    }
    t.report("random structured headers");
    println!("random structured headers: {with_ports} reached ports");
    assert!(with_ports > 100, "generator too shallow: {with_ports}");
}
