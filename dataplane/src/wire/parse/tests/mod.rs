//! Unit tests for the frame parser.
//!
//! Three layers:
//! 1. valid frames of every shape the parser knows (IPv4/IPv6 × TCP/UDP/ICMP, 0–2 VLAN
//!    tags, IPv4 options and fragments, IPv6 extension headers and fragments, AH, ARP,
//!    Ethernet padding) parse to exactly the expected [`Parsed`];
//! 2. every [`Malformed`] reason has a hand-made witness, and the witnesses cover
//!    [`Malformed::ALL`], so a new reason without a test fails;
//! 3. generated malformed inputs (every truncation, seeded random byte mutations,
//!    exhaustive length-field sweeps, random byte strings) never panic, and every `Ok`
//!    is checked field by field against the bytes it was read from ([`check_invariants`]).
//!
//! The byte-level helpers below read and build frames without calling the parser, so
//! they can serve as its oracle.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{self, AssertUnwindSafe};

use super::*;
use crate::wire::build::{checksum, Spec};

const V4_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const V4_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80));
const V6_SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const V6_DST: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x80));

/// IPv6 next-header values the tests use.
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_NONE: u8 = 59;
const NH_DEST_OPTS: u8 = 60;
/// GRE: an IP protocol the parser does not look into.
const PROTO_GRE: u8 = 47;

// ---------------------------------------------------------------------------------------
// Byte-level helpers (independent of the parser)
// ---------------------------------------------------------------------------------------

fn rd16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn wr16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The IPv4 address at `at`.
fn ipv4_at(b: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
}

/// The IPv6 address at `at`.
fn ipv6_at(b: &[u8], at: usize) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_vlan_tpid(et: u16) -> bool {
    matches!(et, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD)
}

/// Offset of the layer-3 header of a well-formed frame: after Ethernet and VLAN tags.
fn l3_of(f: &[u8]) -> usize {
    let mut at = 12;
    while is_vlan_tpid(rd16(f, at)) {
        at += 4;
    }
    at + 2
}

/// EtherType after the VLAN tags.
fn ethertype_of(f: &[u8]) -> u16 {
    rd16(f, l3_of(f) - 2)
}

/// IPv4 header length in bytes.
fn ipv4_ihl(f: &[u8]) -> usize {
    usize::from(f[l3_of(f)] & 0x0f) * 4
}

/// End of the IP packet (Ethernet padding excluded) according to its length field.
fn ip_end(f: &[u8]) -> usize {
    let l3 = l3_of(f);
    match ethertype_of(f) {
        ethertype::IPV4 => l3 + usize::from(rd16(f, l3 + 2)),
        ethertype::IPV6 => l3 + 40 + usize::from(rd16(f, l3 + 4)),
        _ => f.len(),
    }
}

/// Recomputes the IPv4 header checksum.
fn fix_ipv4_checksum(f: &mut [u8]) {
    let l3 = l3_of(f);
    let ihl = ipv4_ihl(f);
    wr16(f, l3 + 10, 0);
    let ck = checksum(&f[l3..l3 + ihl]);
    wr16(f, l3 + 10, ck);
}

/// Sets the IP packet length (IPv4 total length + checksum, or IPv6 payload length).
fn set_ip_len(f: &mut [u8], ip_len: usize) {
    let l3 = l3_of(f);
    let len = u16::try_from(ip_len).expect("IP length fits 16 bits");
    if ethertype_of(f) == ethertype::IPV4 {
        wr16(f, l3 + 2, len);
        fix_ipv4_checksum(f);
    } else {
        wr16(f, l3 + 4, len - 40);
    }
}

/// Pads to the Ethernet minimum of 60 bytes (FCS excluded), as a NIC would.
fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// Inserts `bytes` at `at` inside the IP packet and fixes the IP length (padding is
/// dropped first and redone after).
fn insert_in_ip(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let end = ip_end(frame);
    let mut f = frame[..end].to_vec();
    f.splice(at..at, bytes.iter().copied());
    let ip_len = end + bytes.len() - l3_of(&f);
    set_ip_len(&mut f, ip_len);
    pad(f)
}

/// Cuts the IP packet to `ip_len` bytes and fixes the IP length field: a shorter but
/// self-consistent packet.
fn cut_ip(frame: &[u8], ip_len: usize) -> Vec<u8> {
    let mut f = frame[..l3_of(frame) + ip_len].to_vec();
    set_ip_len(&mut f, ip_len);
    pad(f)
}

/// IPv4 options of `len` bytes (a multiple of 4): Router Alert, NOPs, End of List.
fn ipv4_options(len: usize) -> Vec<u8> {
    assert!((1..=10).any(|words| words * 4 == len), "IPv4 options are 1..=10 words");
    let mut o = vec![148, 4, 0, 0];
    o.resize(len, 1);
    if len > 4 {
        o[len - 1] = 0;
    }
    o
}

/// Adds IPv4 options to a frame built by [`Spec`] (IHL, total length and header
/// checksum fixed; the transport checksum does not cover IP options).
fn with_ipv4_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert_eq!(ipv4_ihl(frame), 20);
    let l3 = l3_of(frame);
    let mut f = insert_in_ip(frame, l3 + 20, opts);
    f[l3] = 0x40 | (5 + opts.len() / 4) as u8;
    fix_ipv4_checksum(&mut f);
    f
}

/// Sets the IPv4 fragment field (MF flag and offset in 8-byte units).
fn with_ipv4_fragment(frame: &[u8], more: bool, offset_units: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let l3 = l3_of(&f);
    wr16(&mut f, l3 + 6, (u16::from(more) << 13) | offset_units);
    fix_ipv4_checksum(&mut f);
    f
}

/// Adds TCP options after the 20-byte TCP header of a frame without IPv4 options or
/// IPv6 extension headers (data offset, IP length and both checksums fixed).
fn with_tcp_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert!((0..=10).any(|words| words * 4 == opts.len()), "TCP options are 0..=10 words");
    let l4 = l3_of(frame) + if ethertype_of(frame) == ethertype::IPV4 { ipv4_ihl(frame) } else { 40 };
    let mut f = insert_in_ip(frame, l4 + 20, opts);
    f[l4 + 12] = ((5 + opts.len() / 4) as u8) << 4;
    fix_l4_checksum(&mut f, l4);
    f
}

/// Internet checksum over the pseudo-header and the transport segment at `l4..ip_end`,
/// with the checksum field taken as stored.
fn l4_sum(f: &[u8], l4: usize, proto: u8) -> u16 {
    let l3 = l3_of(f);
    let end = ip_end(f);
    let len = end - l4;
    let mut buf = Vec::new();
    if proto != proto::ICMP {
        if ethertype_of(f) == ethertype::IPV4 {
            buf.extend_from_slice(&f[l3 + 12..l3 + 20]);
            buf.extend_from_slice(&[0, proto]);
            buf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            buf.extend_from_slice(&f[l3 + 8..l3 + 40]);
            buf.extend_from_slice(&(len as u32).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, proto]);
        }
    }
    buf.extend_from_slice(&f[l4..end]);
    checksum(&buf)
}

/// Offset of the checksum field inside the transport header.
fn l4_checksum_at(proto: u8) -> usize {
    match proto {
        proto::TCP => 16,
        proto::UDP => 6,
        _ => 2,
    }
}

/// Recomputes the transport checksum of the segment at `l4`.
fn fix_l4_checksum(f: &mut [u8], l4: usize) {
    let proto = match ethertype_of(f) {
        ethertype::IPV4 => f[l3_of(f) + 9],
        _ => f[l3_of(f) + 6],
    };
    let at = l4 + l4_checksum_at(proto);
    wr16(f, at, 0);
    let ck = l4_sum(f, l4, proto);
    wr16(f, at, ck);
}

/// An IPv6 extension header: its type and its bytes (byte 0, the next header, is filled
/// in by [`with_ipv6_ext`]).
type Ext = (u8, Vec<u8>);

/// Hop-by-hop (0) or destination options (60) of `(units + 1) * 8` bytes: one PadN.
fn ext_opts(kind: u8, units: u8) -> Ext {
    let len = (usize::from(units) + 1) * 8;
    let mut b = vec![0u8; len];
    b[1] = units;
    b[2] = 1; // PadN
    b[3] = (len - 4) as u8;
    (kind, b)
}

/// Segment Routing Header (routing type 4), one segment, segments left 0: 24 bytes.
fn ext_routing() -> Ext {
    let mut b = vec![0u8; 24];
    b[1] = 2;
    b[2] = 4;
    if let IpAddr::V6(d) = V6_DST {
        b[8..24].copy_from_slice(&d.octets());
    }
    (NH_ROUTING, b)
}

/// Fragment header: offset in 8-byte units, M flag.
fn ext_fragment(offset_units: u16, more: bool) -> Ext {
    let mut b = vec![0u8; 8];
    wr16(&mut b, 2, (offset_units << 3) | u16::from(more));
    b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    (NH_FRAGMENT, b)
}

/// Authentication header with a 12-byte ICV: 24 bytes, length field (24 / 4) - 2 = 4.
fn ext_ah() -> Ext {
    let mut b = vec![0u8; 24];
    b[1] = 4;
    b[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
    b[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence number
    b[12..24].fill(0x5a); // ICV
    (NH_AH, b)
}

/// Inserts a chain of extension headers after the IPv6 header of a frame built by
/// [`Spec`], linking the next-header fields (the last one points at the original
/// upper-layer protocol) and fixing the payload length.
fn with_ipv6_ext(frame: &[u8], exts: &[Ext]) -> Vec<u8> {
    let l3 = l3_of(frame);
    let mut next = frame[l3 + 6];
    let mut chain = Vec::new();
    for (kind, bytes) in exts.iter().rev() {
        let mut b = bytes.clone();
        b[0] = next;
        b.extend_from_slice(&chain);
        chain = b;
        next = *kind;
    }
    let mut f = insert_in_ip(frame, l3 + 40, &chain);
    f[l3 + 6] = next;
    f
}

/// Walks the extension headers of a well-formed IPv6 frame: `(type, offset, length)` of
/// each, then the upper-layer protocol and its offset. Stops after the fragment header
/// of a later fragment, whose following bytes are fragment data.
fn ipv6_chain(f: &[u8]) -> (Vec<(u8, usize, usize)>, u8, usize) {
    let l3 = l3_of(f);
    let mut next = f[l3 + 6];
    let mut at = l3 + 40;
    let mut exts = Vec::new();
    loop {
        let len = match next {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => (usize::from(f[at + 1]) + 1) * 8,
            NH_FRAGMENT => 8,
            NH_AH => (usize::from(f[at + 1]) + 2) * 4,
            _ => break,
        };
        exts.push((next, at, len));
        let later = next == NH_FRAGMENT && rd16(f, at + 2) & 0xfff8 != 0;
        next = f[at];
        at += len;
        if later {
            break;
        }
    }
    (exts, next, at)
}

/// An ARP request (EtherType 0x0806), optionally tagged, padded to 60 bytes.
fn arp_frame(vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    for (i, v) in vlans.iter().enumerate() {
        let tpid = if i + 1 < vlans.len() { ethertype::QINQ } else { ethertype::VLAN };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype::ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    pad(f)
}

/// A frame with an IP protocol the parser does not look into (no transport header).
fn raw_ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Spec {
    Spec { proto, payload: payload.to_vec(), ..Spec::tcp(src, 1, dst, 1, 0) }
}

// ---------------------------------------------------------------------------------------
// Expected results
// ---------------------------------------------------------------------------------------

/// An address as `Parsed` holds it: a number, IPv4 zero-extended.
fn addr_num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from_be_bytes(a.octets())),
        IpAddr::V6(a) => u128::from_be_bytes(a.octets()),
    }
}

/// What `parse` must return for `spec.build()`: plain IP header, no options or
/// extension headers, not fragmented.
fn expected_plain(spec: &Spec) -> Parsed {
    let v4 = spec.src.is_ipv4();
    let mut p = Parsed::empty(if v4 { L3::V4 } else { L3::V6 });
    for (slot, v) in p.vlans.iter_mut().zip(&spec.vlans) {
        *slot = v & 0x0fff;
    }
    p.vlan_count = spec.vlans.len() as u8;
    let l3 = 14 + 4 * spec.vlans.len();
    let l4 = l3 + if v4 { 20 } else { 40 };
    let (l4_hdr, ports) = match spec.proto {
        proto::TCP => (20, true),
        proto::UDP => (8, true),
        proto::ICMP | proto::ICMPV6 => (8, false),
        _ => (0, false),
    };
    p.l3_offset = l3 as u16;
    p.l4_offset = l4 as u16;
    p.payload_offset = (l4 + if ports { l4_hdr } else { 0 }) as u16;
    p.l3_end = (l4 + l4_hdr + spec.payload.len()) as u16;
    p.proto = spec.proto;
    p.src = addr_num(spec.src);
    p.dst = addr_num(spec.dst);
    if ports {
        p.src_port = spec.src_port;
        p.dst_port = spec.dst_port;
    }
    if spec.proto == proto::TCP {
        p.tcp_flags = spec.tcp_flags;
    }
    p
}

/// `p` with `by` bytes inserted between the IP header's start and the transport header.
fn shifted(p: Parsed, by: usize) -> Parsed {
    let by = by as u16;
    Parsed { l4_offset: p.l4_offset + by, payload_offset: p.payload_offset + by, l3_end: p.l3_end + by, ..p }
}

/// `p` seen as a later fragment: no transport header read.
fn as_later_fragment(p: Parsed) -> Parsed {
    Parsed {
        payload_offset: p.l4_offset,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        fragment: true,
        later_fragment: true,
        ..p
    }
}

mod generated;
mod invariants;
mod malformed;
mod valid;

use invariants::*;
