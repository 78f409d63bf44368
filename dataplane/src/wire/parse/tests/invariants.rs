//! Parsing with every invariant checked, and the corpus of valid frames the
//! generated tests start from.

use super::*;

// ---------------------------------------------------------------------------------------
// Checked parsing and invariants
// ---------------------------------------------------------------------------------------

/// Parses `frame`, turning a panic into a test failure that shows the input, and checks
/// every `Ok` against the bytes with [`check_invariants`].
pub(super) fn parse_checked(frame: &[u8]) -> Result<Parsed, Malformed> {
    let r = match panic::catch_unwind(AssertUnwindSafe(|| parse(frame))) {
        Ok(r) => r,
        Err(_) => panic!("parse panicked on {} ({} bytes)", hex(frame), frame.len()),
    };
    if let Ok(p) = &r {
        check_invariants(frame, p);
    }
    r
}

/// What must hold for any `Ok(p)` from `parse(f)`, whatever `f` is: offsets ordered and
/// inside the frame, and every field equal to what the bytes say.
pub(super) fn check_invariants(f: &[u8], p: &Parsed) {
    let ctx = || format!("{p:?}\nfrom {} ({} bytes)", hex(f), f.len());
    let count = usize::from(p.vlan_count);
    assert!(count <= MAX_VLAN_TAGS, "{}", ctx());
    for (i, v) in p.vlans.iter().enumerate() {
        if i < count {
            assert!(is_vlan_tpid(rd16(f, 12 + 4 * i)), "{}", ctx());
            assert_eq!(*v, rd16(f, 14 + 4 * i) & 0x0fff, "{}", ctx());
        } else {
            assert_eq!(*v, 0, "{}", ctx());
        }
    }
    assert_eq!(p.vlan(), if count == 0 { 0 } else { p.vlans[count - 1] }, "{}", ctx());
    let et = rd16(f, 12 + 4 * count);
    assert!(!is_vlan_tpid(et), "{}", ctx());
    match p.l3 {
        L3::Other(t) => {
            // Non-IP: only the EtherType and the tags are reported.
            assert_eq!(t, et, "{}", ctx());
            assert!(t != ethertype::IPV4 && t != ethertype::IPV6, "{}", ctx());
            let bare = Parsed { vlans: p.vlans, vlan_count: p.vlan_count, ..Parsed::empty(p.l3) };
            assert_eq!(*p, bare, "{}", ctx());
            assert!(!p.is_ip() && !p.has_ports(), "{}", ctx());
            return;
        }
        L3::V4 => assert_eq!(et, ethertype::IPV4, "{}", ctx()),
        L3::V6 => assert_eq!(et, ethertype::IPV6, "{}", ctx()),
    }
    assert!(p.is_ip(), "{}", ctx());
    let (l3, l4) = (usize::from(p.l3_offset), usize::from(p.l4_offset));
    let (pay, end) = (usize::from(p.payload_offset), usize::from(p.l3_end));
    assert_eq!(l3, 14 + 4 * count, "{}", ctx());
    assert!(l3 <= l4 && l4 <= pay && pay <= end && end <= f.len(), "offsets: {}", ctx());
    assert!(!p.later_fragment || p.fragment, "{}", ctx());
    if p.l3 == L3::V4 {
        let h = &f[l3..];
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(rd16(h, 2));
        let frag = rd16(h, 6);
        let frag_off = usize::from(frag & 0x1fff) * 8;
        assert_eq!(h[0] >> 4, 4, "{}", ctx());
        assert!(ihl >= 20 && l4 == l3 + ihl && end == l3 + total, "{}", ctx());
        assert!(frag_off + total - ihl <= 65535, "{}", ctx());
        assert_eq!(p.fragment, frag & 0x2000 != 0 || frag_off != 0, "{}", ctx());
        assert_eq!(p.later_fragment, frag_off != 0, "{}", ctx());
        assert_eq!(p.proto, h[9], "{}", ctx());
        let (src, dst) = (ipv4_at(h, 12), ipv4_at(h, 16));
        assert_eq!((p.src, p.dst), (addr_num(src), addr_num(dst)), "{}", ctx());
        assert_eq!((p.src_ip(), p.dst_ip()), (src, dst), "{}", ctx());
        assert_eq!((&p.src_bytes()[..4], &p.dst_bytes()[..4]), (&h[12..16], &h[16..20]), "{}", ctx());
        assert_eq!((&p.src_bytes()[4..], &p.dst_bytes()[4..]), (&[0; 12][..], &[0; 12][..]), "{}", ctx());
    } else {
        let h = &f[l3..];
        assert_eq!(h[0] >> 4, 6, "{}", ctx());
        assert_eq!(end, l3 + 40 + usize::from(rd16(h, 4)), "{}", ctx());
        assert!(l4 >= l3 + 40, "{}", ctx());
        if l4 == l3 + 40 {
            assert_eq!(p.proto, h[6], "{}", ctx());
        }
        if !p.later_fragment {
            // The walk stops only at a non-extension header.
            assert!(!matches!(p.proto, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140), "{}", ctx());
        }
        let (src, dst) = (ipv6_at(h, 8), ipv6_at(h, 24));
        assert_eq!((p.src, p.dst), (addr_num(src), addr_num(dst)), "{}", ctx());
        assert_eq!((p.src_ip(), p.dst_ip()), (src, dst), "{}", ctx());
        assert_eq!((&p.src_bytes()[..], &p.dst_bytes()[..]), (&h[8..24], &h[24..40]), "{}", ctx());
    }
    assert_eq!(
        p.has_ports(),
        !p.later_fragment && (p.proto == proto::TCP || p.proto == proto::UDP),
        "{}",
        ctx()
    );
    let l4b = &f[l4..end];
    match p.proto {
        proto::TCP if !p.later_fragment => {
            assert!(l4b.len() >= 20, "{}", ctx());
            let doff = usize::from(l4b[12] >> 4) * 4;
            assert!(doff >= 20 && pay == l4 + doff, "{}", ctx());
            assert_eq!((p.src_port, p.dst_port), (rd16(l4b, 0), rd16(l4b, 2)), "{}", ctx());
            assert!(p.src_port != 0 && p.dst_port != 0, "{}", ctx());
            assert_eq!(p.tcp_flags, l4b[13], "{}", ctx());
        }
        proto::UDP if !p.later_fragment => {
            assert!(l4b.len() >= 8 && pay == l4 + 8, "{}", ctx());
            assert_eq!((p.src_port, p.dst_port), (rd16(l4b, 0), rd16(l4b, 2)), "{}", ctx());
            let ulen = usize::from(rd16(l4b, 4));
            assert!(ulen >= 8 && (p.fragment || ulen == l4b.len()), "{}", ctx());
            assert_eq!(p.tcp_flags, 0, "{}", ctx());
        }
        other => {
            if !p.later_fragment && (other == proto::ICMP || other == proto::ICMPV6) {
                assert!(l4b.len() >= 4, "{}", ctx());
            }
            assert_eq!(pay, l4, "{}", ctx());
            assert_eq!((p.src_port, p.dst_port, p.tcp_flags), (0, 0, 0), "{}", ctx());
        }
    }
}

/// `parse` of a frame the test knows to be valid.
pub(super) fn parse_valid(frame: &[u8]) -> Parsed {
    parse_checked(frame).unwrap_or_else(|e| panic!("valid frame rejected: {e:?}: {}", hex(frame)))
}

// ---------------------------------------------------------------------------------------
// The corpus: ~25 valid frames of every kind above, the seed of the generated tests
// ---------------------------------------------------------------------------------------

pub(super) fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let tcp4 = Spec::tcp(V4_SRC, 40000, V4_DST, 443, tcp_flags::SYN);
    let tcp6 = Spec::tcp(V6_SRC, 40000, V6_DST, 443, tcp_flags::SYN | tcp_flags::ACK);
    let udp4 = Spec::udp(V4_SRC, 5353, V4_DST, 53, b"some dns query bytes");
    let udp6 = Spec::udp(V6_SRC, 5353, V6_DST, 53, b"some dns query bytes");
    vec![
        ("ipv4 tcp", tcp4.build()),
        (
            "ipv4 tcp payload vlan",
            tcp4.clone().with_payload(b"GET / HTTP/1.1\r\n").with_vlans(&[100]).build(),
        ),
        ("ipv4 tcp qinq", tcp4.clone().with_vlans(&[10, 20]).build()),
        ("ipv4 udp", udp4.build()),
        ("ipv4 udp empty padded", Spec::udp(V4_SRC, 1, V4_DST, 2, b"").build()),
        ("ipv4 icmp", Spec::icmp_echo(V4_SRC, V4_DST).build()),
        ("ipv4 icmp qinq", Spec::icmp_echo(V4_SRC, V4_DST).with_vlans(&[1, 2]).build()),
        (
            "ipv4 options ihl 15 tcp",
            with_ipv4_options(&tcp4.clone().with_payload(b"p").build(), &ipv4_options(40)),
        ),
        (
            "ipv4 options ihl 6 udp vlan",
            with_ipv4_options(&udp4.clone().with_vlans(&[7]).build(), &ipv4_options(4)),
        ),
        (
            "ipv4 tcp options",
            with_tcp_options(&tcp4.clone().with_payload(b"q").build(), &[2, 4, 5, 0xb4, 1, 1, 1, 0]),
        ),
        (
            "ipv4 first fragment tcp",
            with_ipv4_fragment(&tcp4.clone().with_payload(&[9; 24]).build(), true, 0),
        ),
        ("ipv4 first fragment udp", with_ipv4_fragment(&cut_ip(&udp4.build(), 20 + 8 + 8), true, 0)),
        ("ipv4 later fragment", with_ipv4_fragment(&udp4.build(), false, 185)),
        ("ipv4 gre", raw_ip(V4_SRC, V4_DST, PROTO_GRE, &[0, 0, 8, 0, 1, 2, 3, 4]).build()),
        ("ipv6 tcp", tcp6.build()),
        ("ipv6 tcp payload vlan", tcp6.clone().with_payload(b"\x16\x03\x01hello").with_vlans(&[300]).build()),
        ("ipv6 udp qinq", udp6.clone().with_vlans(&[4000, 4001]).build()),
        ("ipv6 icmp", Spec::icmp_echo(V6_SRC, V6_DST).build()),
        ("ipv6 no next header padded", raw_ip(V6_SRC, V6_DST, NH_NONE, b"").build()),
        (
            "ipv6 hbh dst rh tcp",
            with_ipv6_ext(
                &tcp6.build(),
                &[ext_opts(NH_HOP_BY_HOP, 0), ext_opts(NH_DEST_OPTS, 1), ext_routing()],
            ),
        ),
        ("ipv6 first fragment udp", with_ipv6_ext(&udp6.build(), &[ext_fragment(0, true)])),
        ("ipv6 later fragment", with_ipv6_ext(&tcp6.build(), &[ext_fragment(181, false)])),
        ("ipv6 ah tcp vlan", with_ipv6_ext(&tcp6.clone().with_vlans(&[9]).build(), &[ext_ah()])),
        ("arp", arp_frame(&[])),
        ("arp qinq", arp_frame(&[5, 6])),
    ]
}

/// The corpus is really valid: checksums verify (IPv4 header always, transport when not
/// fragmented), and every frame parses. This validates the helpers above.
#[test]
fn corpus_frames_are_well_formed() {
    for (name, f) in corpus() {
        let p = parse_checked(&f).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let l3 = l3_of(&f);
        match ethertype_of(&f) {
            ethertype::IPV4 => {
                assert_eq!(checksum(&f[l3..l3 + ipv4_ihl(&f)]), 0, "{name}: IPv4 header checksum");
            }
            ethertype::IPV6 => {
                let (_, next, at) = ipv6_chain(&f);
                assert_eq!((next, at), (p.proto, usize::from(p.l4_offset)), "{name}");
            }
            _ => continue,
        }
        if !p.fragment && matches!(p.proto, proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6) {
            assert_eq!(l4_sum(&f, usize::from(p.l4_offset), p.proto), 0, "{name}: transport checksum");
        }
    }
}
