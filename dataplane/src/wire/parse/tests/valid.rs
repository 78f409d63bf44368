//! 1. Valid frames of every shape parse to exactly the expected result.

use super::*;

// ---------------------------------------------------------------------------------------
// 1. Valid frames
// ---------------------------------------------------------------------------------------

/// Every combination of IPv4/IPv6 × TCP/UDP/ICMP × 0/1/2 VLAN tags × empty/short/long
/// payload parses to exactly the expected fields.
#[test]
fn craft_matrix_parses_exactly() {
    let families = [(V4_SRC, V4_DST), (V6_SRC, V6_DST)];
    let tags: [&[u16]; 3] = [&[], &[100], &[0x0ffe, 7]];
    let payloads: [&[u8]; 3] = [b"", b"x", &[0x42; 1400]];
    let mut n = 0;
    for (src, dst) in families {
        for vlans in tags {
            for payload in payloads {
                let specs = [
                    Spec::tcp(src, 40000, dst, 443, tcp_flags::SYN | tcp_flags::ACK),
                    Spec::udp(src, 5353, dst, 53, payload),
                    Spec::icmp_echo(src, dst),
                ];
                for spec in specs {
                    let spec = spec.with_payload(payload).with_vlans(vlans);
                    let frame = spec.build();
                    let p = parse_valid(&frame);
                    assert_eq!(p, expected_plain(&spec), "{spec:?}");
                    assert!(p.is_ip());
                    assert_eq!(p.has_ports(), spec.proto != proto::ICMP && spec.proto != proto::ICMPV6);
                    assert!(!p.fragment && !p.later_fragment);
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 2 * 3 * 3 * 3);
}

/// Literal offsets for the commonest frame (guards the formula in `expected_plain`).
#[test]
fn literal_offsets_ipv4_tcp_untagged() {
    let f = Spec::tcp(V4_SRC, 40000, V4_DST, 443, tcp_flags::SYN).with_payload(b"hello").build();
    let p = parse_valid(&f);
    assert_eq!((p.l3, p.vlan_count, p.vlan()), (L3::V4, 0, 0));
    assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.l3_end), (14, 34, 54, 59));
    assert_eq!((p.proto, p.src_port, p.dst_port, p.tcp_flags), (6, 40000, 443, 0x02));
    assert_eq!((p.src, p.dst), (0x0a00_0001, 0xc000_0250));
    assert_eq!((p.src_ip(), p.dst_ip()), (V4_SRC, V4_DST));
    assert_eq!(p.src_bytes(), [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(p.dst_bytes()[..4], [192, 0, 2, 80]);
    assert!(p.has_ports());
}

/// Literal offsets for IPv6/UDP behind QinQ and for IPv6/ICMPv6 behind one tag.
#[test]
fn literal_offsets_ipv6_tagged() {
    let f = Spec::udp(V6_SRC, 1234, V6_DST, 53, b"query").with_vlans(&[10, 20]).build();
    let p = parse_valid(&f);
    assert_eq!((p.l3, p.vlans, p.vlan_count, p.vlan()), (L3::V6, [10, 20], 2, 20));
    assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.l3_end), (22, 62, 70, 75));
    assert_eq!((p.proto, p.src_port, p.dst_port, p.tcp_flags), (17, 1234, 53, 0));
    assert_eq!(usize::from(p.l3_end), f.len());
    assert_eq!((p.src_ip(), p.dst_ip()), (V6_SRC, V6_DST));
    assert_eq!((p.src, p.dst & 0xffff), (0x2001_0db8_0000_0000_0000_0000_0000_0001, 0x80));
    assert_eq!(p.dst_bytes()[..4], [0x20, 0x01, 0x0d, 0xb8]);

    let f = Spec::icmp_echo(V6_SRC, V6_DST).with_vlans(&[30]).build();
    let p = parse_valid(&f);
    assert_eq!((p.vlans, p.vlan_count, p.vlan()), ([30, 0], 1, 30));
    assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.l3_end), (18, 58, 58, 98));
    assert_eq!((p.proto, p.src_port, p.dst_port), (proto::ICMPV6, 0, 0));
    assert!(!p.has_ports() && p.is_ip());
}

/// VLAN IDs drop PCP/DEI bits; `vlan()` is the innermost; a lone S-tag and the
/// pre-standard 0x9100 TPID are accepted as tags.
#[test]
fn vlan_tags_and_accessor() {
    let spec = Spec::tcp(V4_SRC, 1, V4_DST, 2, tcp_flags::ACK);
    // PCP 7, DEI 1, VID 0xabc -> 0xabc.
    let p = parse_valid(&spec.clone().with_vlans(&[0xfabc]).build());
    assert_eq!((p.vlans, p.vlan_count, p.vlan()), ([0xabc, 0], 1, 0xabc));
    let p = parse_valid(&spec.clone().with_vlans(&[0x2064, 0xe0c8]).build());
    assert_eq!((p.vlans, p.vlan_count, p.vlan()), ([100, 200], 2, 200));
    let p = parse_valid(&spec.build());
    assert_eq!((p.vlans, p.vlan_count, p.vlan()), ([0, 0], 0, 0));

    // One S-tag (0x88a8) alone, and 0x9100 as the outer tag of a pair.
    let cases: [(&[u16], [u16; 2]); 2] =
        [(&[ethertype::QINQ], [5, 0]), (&[ethertype::QINQ_OLD, ethertype::VLAN], [5, 6])];
    for (tpids, want) in cases {
        let vids: Vec<u16> = want[..tpids.len()].to_vec();
        let mut f = Spec::tcp(V4_SRC, 1, V4_DST, 2, 0).with_vlans(&vids).build();
        for (i, t) in tpids.iter().enumerate() {
            wr16(&mut f, 12 + 4 * i, *t);
        }
        let p = parse_valid(&f);
        assert_eq!((p.vlans, usize::from(p.vlan_count)), (want, tpids.len()));
        assert_eq!(usize::from(p.l3_offset), 14 + 4 * tpids.len());
        assert_eq!((p.src_port, p.dst_port), (1, 2));
    }
}

/// ARP is reported as `L3::Other(0x0806)` with its tags and nothing else.
#[test]
fn arp_is_other() {
    for vlans in [&[][..], &[42], &[1, 2]] {
        let p = parse_valid(&arp_frame(vlans));
        assert_eq!(p.l3, L3::Other(ethertype::ARP));
        assert_eq!(usize::from(p.vlan_count), vlans.len());
        assert_eq!(p.vlan(), vlans.last().copied().unwrap_or(0));
        assert!(!p.is_ip() && !p.has_ports());
        assert_eq!((p.proto, p.l3_offset, p.l4_offset, p.l3_end), (0, 0, 0, 0));
    }
    // Any other EtherType too (LLDP), even on a header-only frame.
    let mut f = arp_frame(&[]);
    wr16(&mut f, 12, 0x88cc);
    assert_eq!(parse_valid(&f[..14]).l3, L3::Other(0x88cc));
}

/// Ethernet padding after a short IP packet is excluded from `l3_end`, whatever it holds.
#[test]
fn ethernet_padding_excluded() {
    let cases = [
        (Spec::udp(V4_SRC, 1000, V4_DST, 2000, b""), 42),
        (Spec::tcp(V4_SRC, 1000, V4_DST, 2000, tcp_flags::RST), 54),
        (Spec::udp(V4_SRC, 1000, V4_DST, 2000, b"abc").with_vlans(&[9]), 49),
        (raw_ip(V6_SRC, V6_DST, NH_NONE, b""), 54),
    ];
    for (spec, end) in cases {
        let mut f = spec.build();
        assert_eq!(f.len(), 60);
        let p = parse_valid(&f);
        assert_eq!(p, expected_plain(&spec));
        assert_eq!(usize::from(p.l3_end), end);
        // Non-zero padding changes nothing.
        f[end..].fill(0xee);
        assert_eq!(parse_valid(&f), p);
    }
}

/// IPv4 options of every length (IHL 6..=15) move the transport header by 4 bytes per
/// word, for TCP, UDP and ICMP, tagged or not.
#[test]
fn ipv4_options_every_ihl() {
    let specs = [
        Spec::tcp(V4_SRC, 5555, V4_DST, 80, tcp_flags::FIN | tcp_flags::ACK).with_payload(b"bye"),
        Spec::udp(V4_SRC, 68, V4_DST, 67, b"dhcp").with_vlans(&[3]),
        Spec::icmp_echo(V4_SRC, V4_DST).with_vlans(&[3, 4]),
    ];
    for spec in &specs {
        let base = spec.build();
        for ihl in 6..=15usize {
            let opts = ipv4_options((ihl - 5) * 4);
            let f = with_ipv4_options(&base, &opts);
            let l3 = l3_of(&f);
            assert_eq!(checksum(&f[l3..l3 + ihl * 4]), 0, "header checksum");
            let p = parse_valid(&f);
            assert_eq!(p, shifted(expected_plain(spec), opts.len()), "IHL {ihl}");
            assert_eq!(usize::from(p.l4_offset), l3 + ihl * 4);
        }
    }
}

/// TCP options move `payload_offset` (data offset 6..=15).
#[test]
fn tcp_options_move_payload_offset() {
    for (src, dst) in [(V4_SRC, V4_DST), (V6_SRC, V6_DST)] {
        let spec = Spec::tcp(src, 443, dst, 50000, tcp_flags::ACK).with_payload(b"data");
        let base = spec.build();
        for words in 1..=10usize {
            let mut opts = vec![1u8; words * 4]; // NOPs
            opts[..4].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
            let f = with_tcp_options(&base, &opts);
            let p = parse_valid(&f);
            let want = expected_plain(&spec);
            let want = Parsed {
                payload_offset: want.payload_offset + opts.len() as u16,
                l3_end: want.l3_end + opts.len() as u16,
                ..want
            };
            assert_eq!(p, want);
            assert_eq!(&f[usize::from(p.payload_offset)..usize::from(p.l3_end)], b"data");
        }
    }
}

/// An IPv4 first fragment (MF set, offset 0) is parsed down to the ports; UDP there may
/// announce more bytes than the fragment carries.
#[test]
fn ipv4_first_fragment_has_ports() {
    let spec = Spec::tcp(V4_SRC, 1111, V4_DST, 2222, tcp_flags::ACK).with_payload(&[7; 64]);
    let f = with_ipv4_fragment(&spec.build(), true, 0);
    let p = parse_valid(&f);
    assert_eq!(p, Parsed { fragment: true, ..expected_plain(&spec) });
    assert!(p.fragment && !p.later_fragment && p.has_ports());

    // UDP datagram of 8 + 200 bytes, first fragment carries 8 + 40 of them.
    let spec = Spec::udp(V4_SRC, 3333, V4_DST, 4444, &[1; 200]).with_vlans(&[12]);
    let f = with_ipv4_fragment(&cut_ip(&spec.build(), 20 + 48), true, 0);
    let p = parse_valid(&f);
    assert_eq!(p, Parsed { fragment: true, l3_end: 18 + 68, ..expected_plain(&spec) });
    assert_eq!((p.src_port, p.dst_port), (3333, 4444));
}

/// An IPv4 later fragment (offset != 0, with or without MF) carries no transport header:
/// no ports, `has_ports()` false, transport bytes not looked at.
#[test]
fn ipv4_later_fragment_has_no_ports() {
    for proto_spec in [
        Spec::tcp(V4_SRC, 1111, V4_DST, 2222, tcp_flags::SYN),
        Spec::udp(V4_SRC, 1111, V4_DST, 2222, b"0123456789"),
        Spec::icmp_echo(V4_SRC, V4_DST),
    ] {
        for more in [true, false] {
            let f = with_ipv4_fragment(&proto_spec.build(), more, 185);
            let p = parse_valid(&f);
            assert_eq!(p, as_later_fragment(expected_plain(&proto_spec)));
            assert!(!p.has_ports());
            // The bytes at the transport offset are fragment data: garbage is fine.
            let mut g = f.clone();
            let l4 = usize::from(p.l4_offset);
            g[l4..usize::from(p.l3_end)].fill(0);
            assert_eq!(parse_valid(&g), p);
        }
    }
}

/// The fragment end limit is exactly 65535: offset 8191 × 8 + 7 bytes passes, + 8 fails.
#[test]
fn ipv4_fragment_end_boundary() {
    let ok = with_ipv4_fragment(&raw_ip(V4_SRC, V4_DST, PROTO_GRE, &[0; 7]).build(), false, 8191);
    let p = parse_valid(&ok);
    assert!(p.later_fragment && p.fragment);
    let bad = with_ipv4_fragment(&raw_ip(V4_SRC, V4_DST, PROTO_GRE, &[0; 8]).build(), false, 8191);
    assert_eq!(parse_checked(&bad), Err(Malformed::Ipv4BadFragment));
    let bad = with_ipv4_fragment(&raw_ip(V4_SRC, V4_DST, PROTO_GRE, &[0; 8]).build(), true, 8191);
    assert_eq!(parse_checked(&bad), Err(Malformed::Ipv4BadFragment));
}

/// IP protocols without a transport parser (GRE, AH over IPv4, IPv6 no-next-header) stop
/// at layer 3: `l4_offset` = `payload_offset` = end of the IP header, no ports.
#[test]
fn unparsed_ip_protocols_stop_at_l3() {
    for spec in [
        raw_ip(V4_SRC, V4_DST, PROTO_GRE, &[0, 0, 0x08, 0, 1, 2, 3, 4]),
        raw_ip(V4_SRC, V4_DST, NH_AH, &[6, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 9, 9, 9, 9]),
        raw_ip(V6_SRC, V6_DST, PROTO_GRE, &[0; 12]).with_vlans(&[2]),
        raw_ip(V6_SRC, V6_DST, NH_NONE, &[]),
    ] {
        let p = parse_valid(&spec.build());
        assert_eq!(p, expected_plain(&spec));
        assert_eq!(p.payload_offset, p.l4_offset);
        assert!(!p.has_ports() && p.is_ip());
    }
}

/// IPv6 hop-by-hop, destination options and routing headers, alone and chained, are
/// walked to the transport header.
#[test]
fn ipv6_extension_headers_walked() {
    let chains: Vec<Vec<Ext>> = vec![
        vec![ext_opts(NH_HOP_BY_HOP, 0)],
        vec![ext_opts(NH_DEST_OPTS, 3)],
        vec![ext_routing()],
        vec![ext_opts(NH_HOP_BY_HOP, 1), ext_opts(NH_DEST_OPTS, 0), ext_routing(), ext_opts(NH_DEST_OPTS, 2)],
    ];
    let specs = [
        Spec::tcp(V6_SRC, 1024, V6_DST, 443, tcp_flags::SYN),
        Spec::udp(V6_SRC, 1024, V6_DST, 4789, b"vxlan").with_vlans(&[5, 6]),
        Spec::icmp_echo(V6_SRC, V6_DST).with_vlans(&[5]),
    ];
    for spec in &specs {
        let base = spec.build();
        for chain in &chains {
            let len: usize = chain.iter().map(|(_, b)| b.len()).sum();
            let f = with_ipv6_ext(&base, chain);
            assert_eq!(parse_valid(&f), shifted(expected_plain(spec), len));
        }
    }
}

/// An IPv6 fragment header: the first fragment (offset 0, M set) is parsed to the ports,
/// a later one (offset != 0) is not; both are `fragment`.
#[test]
fn ipv6_fragment_header() {
    let spec = Spec::udp(V6_SRC, 500, V6_DST, 4500, &[3; 100]);
    let first = with_ipv6_ext(&spec.build(), &[ext_fragment(0, true)]);
    let p = parse_valid(&first);
    assert_eq!(p, Parsed { fragment: true, ..shifted(expected_plain(&spec), 8) });
    assert!(p.has_ports() && !p.later_fragment);

    // First fragment behind a hop-by-hop header, carrying only part of the UDP datagram.
    let f = with_ipv6_ext(&spec.build(), &[ext_opts(NH_HOP_BY_HOP, 0), ext_fragment(0, true)]);
    let f = cut_ip(&f, 40 + 16 + 8 + 24);
    let p = parse_valid(&f);
    assert_eq!((p.l4_offset, p.payload_offset, p.l3_end), (14 + 56, 14 + 64, 14 + 88));
    assert_eq!((p.src_port, p.dst_port, p.fragment, p.later_fragment), (500, 4500, true, false));

    for more in [true, false] {
        let spec = Spec::tcp(V6_SRC, 1, V6_DST, 2, tcp_flags::SYN).with_vlans(&[77]);
        let later = with_ipv6_ext(&spec.build(), &[ext_fragment(181, more)]);
        let p = parse_valid(&later);
        assert_eq!(p, as_later_fragment(shifted(expected_plain(&spec), 8)));
        assert!(!p.has_ports());
    }
}

/// Regression: in a later IPv6 fragment, the bytes after the fragment header are
/// fragment data, not headers. When the fragment header's next header is an extension
/// header (destination options may follow the fragment header, RFC 8200 §4.1), the data
/// must not be walked as one: it used to yield `Ipv6ExtTruncated` for a valid frame, or
/// a `proto`/`l4_offset` read from payload bytes.
#[test]
fn ipv6_later_fragment_does_not_walk_fragment_data() {
    // Fragment data that, read as a destination-options header, claims 2 KiB.
    let data = [proto::TCP, 0xff, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut f = with_ipv6_ext(&raw_ip(V6_SRC, V6_DST, NH_NONE, &data).build(), &[ext_fragment(100, true)]);
    f[14 + 40] = NH_DEST_OPTS; // the fragment header's next header
    let p = parse_valid(&f);
    assert!(p.fragment && p.later_fragment && !p.has_ports());
    assert_eq!((p.l4_offset, p.payload_offset, p.l3_end), (14 + 48, 14 + 48, 14 + 64));
    assert_eq!(p.proto, NH_DEST_OPTS);

    // Data that would parse as a short destination-options header followed by TCP.
    let data = [proto::TCP, 0, 1, 4, 0, 0, 0, 0, 0, 80, 0, 80, 0, 0, 0, 0];
    let mut f = with_ipv6_ext(&raw_ip(V6_SRC, V6_DST, NH_NONE, &data).build(), &[ext_fragment(100, false)]);
    f[14 + 40] = NH_DEST_OPTS;
    let p = parse_valid(&f);
    assert_eq!((p.proto, p.l4_offset, p.later_fragment), (NH_DEST_OPTS, 14 + 48, true));
}

/// The authentication header (length in 4-byte units + 2) is walked, alone or after a
/// hop-by-hop header.
#[test]
fn ipv6_authentication_header() {
    let spec = Spec::tcp(V6_SRC, 7000, V6_DST, 8000, tcp_flags::ACK).with_payload(b"esp-less");
    for chain in [vec![ext_ah()], vec![ext_opts(NH_HOP_BY_HOP, 0), ext_ah()]] {
        let len: usize = chain.iter().map(|(_, b)| b.len()).sum();
        let f = with_ipv6_ext(&spec.build(), &chain);
        assert_eq!(parse_valid(&f), shifted(expected_plain(&spec), len));
    }
}

/// Exactly `MAX_IPV6_EXT` extension headers are walked; one more is rejected.
#[test]
fn ipv6_extension_header_limit() {
    let spec = Spec::udp(V6_SRC, 1, V6_DST, 2, b"x");
    let chain: Vec<Ext> = (0..MAX_IPV6_EXT).map(|_| ext_opts(NH_DEST_OPTS, 0)).collect();
    let f = with_ipv6_ext(&spec.build(), &chain);
    assert_eq!(parse_valid(&f), shifted(expected_plain(&spec), 8 * MAX_IPV6_EXT));
    let chain: Vec<Ext> = (0..=MAX_IPV6_EXT).map(|_| ext_opts(NH_DEST_OPTS, 0)).collect();
    let f = with_ipv6_ext(&spec.build(), &chain);
    assert_eq!(parse_checked(&f), Err(Malformed::Ipv6TooManyExt));

    // A later fragment's fragment header counts too: 7 + 1 pass, 8 + 1 do not.
    for (opts, want_ok) in [(MAX_IPV6_EXT - 1, true), (MAX_IPV6_EXT, false)] {
        let mut chain: Vec<Ext> = (0..opts).map(|_| ext_opts(NH_DEST_OPTS, 0)).collect();
        chain.push(ext_fragment(10, true));
        let f = with_ipv6_ext(&spec.build(), &chain);
        let r = parse_checked(&f);
        if want_ok {
            assert!(
                matches!(r, Ok(p) if p.later_fragment && usize::from(p.l4_offset) == 14 + 40 + 8 * (opts + 1))
            );
        } else {
            assert_eq!(r, Err(Malformed::Ipv6TooManyExt));
        }
    }
}
