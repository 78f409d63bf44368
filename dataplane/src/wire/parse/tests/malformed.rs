//! 2. Every `Malformed` reason, from a hand-made input.

use super::*;

// ---------------------------------------------------------------------------------------
// 2. Every Malformed reason, from a hand-made input
// ---------------------------------------------------------------------------------------

/// A hand-made input and the one reason it must be rejected with.
struct Witness {
    reason: Malformed,
    what: &'static str,
    frame: Vec<u8>,
}

/// `frame` with `edit` applied (for one-line witnesses).
fn edited(mut frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut frame);
    frame
}

fn witnesses() -> Vec<Witness> {
    use Malformed::*;
    let tcp4 = || Spec::tcp(V4_SRC, 1000, V4_DST, 80, tcp_flags::SYN).with_payload(&[0; 20]).build();
    let tcp6 = || Spec::tcp(V6_SRC, 1000, V6_DST, 80, tcp_flags::SYN).build();
    let udp4 = || Spec::udp(V4_SRC, 1000, V4_DST, 53, b"abcdefgh").build();
    let udp6 = || Spec::udp(V6_SRC, 1000, V6_DST, 53, b"abcdefgh").build();
    let w = |reason, what, frame| Witness { reason, what, frame };
    vec![
        w(EthernetTruncated, "empty", vec![]),
        w(EthernetTruncated, "13 bytes", tcp4()[..13].to_vec()),
        w(VlanTruncated, "tag TPID then nothing", tcp4().into_iter().take(12).chain([0x81, 0]).collect()),
        w(
            VlanTruncated,
            "second tag cut after its TCI",
            Spec::tcp(V4_SRC, 1, V4_DST, 2, 0).with_vlans(&[1, 2]).build()[..20].to_vec(),
        ),
        w(
            VlanTooManyTags,
            "third 802.1Q tag",
            edited(Spec::tcp(V4_SRC, 1, V4_DST, 2, 0).with_vlans(&[1, 2]).build(), |f| {
                wr16(f, 20, ethertype::VLAN)
            }),
        ),
        w(Ipv4Truncated, "19-byte IPv4 header", tcp4()[..14 + 19].to_vec()),
        w(Ipv4BadVersion, "version 6 under EtherType IPv4", edited(tcp4(), |f| f[14] = 0x65)),
        w(Ipv4BadHeaderLength, "IHL 4", edited(tcp4(), |f| f[14] = 0x44)),
        w(
            Ipv4BadHeaderLength,
            "IHL 15 beyond a short frame",
            edited(tcp4(), |f| f[14] = 0x4f)[..14 + 59].to_vec(),
        ),
        w(Ipv4BadTotalLength, "total length 19", edited(tcp4(), |f| wr16(f, 16, 19))),
        w(Ipv4BadTotalLength, "total length beyond the frame", edited(tcp4(), |f| wr16(f, 16, 61))),
        w(Ipv4BadFragment, "offset 8191 x 8 + 40 bytes", with_ipv4_fragment(&tcp4(), false, 8191)),
        w(Ipv6Truncated, "39-byte IPv6 header", tcp6()[..14 + 39].to_vec()),
        w(Ipv6BadVersion, "version 4 under EtherType IPv6", edited(tcp6(), |f| f[14] = 0x40)),
        w(Ipv6BadPayloadLength, "payload length + 1", edited(tcp6(), |f| wr16(f, 18, 21))),
        w(
            Ipv6ExtTruncated,
            "hop-by-hop claiming 2 KiB",
            edited(with_ipv6_ext(&tcp6(), &[ext_opts(NH_HOP_BY_HOP, 0)]), |f| f[55] = 0xff),
        ),
        w(
            Ipv6ExtTruncated,
            "next header routing, no bytes left",
            raw_ip(V6_SRC, V6_DST, NH_ROUTING, b"").build()[..54].to_vec(),
        ),
        w(
            Ipv6ExtTruncated,
            "fragment header cut to 7 bytes",
            cut_ip(&with_ipv6_ext(&udp6(), &[ext_fragment(0, true)]), 47),
        ),
        w(
            Ipv6ExtTruncated,
            "AH longer than the payload",
            edited(with_ipv6_ext(&tcp6(), &[ext_ah()]), |f| f[55] = 20),
        ),
        w(
            Ipv6TooManyExt,
            "nine destination-options headers",
            with_ipv6_ext(&udp6(), &vec![ext_opts(NH_DEST_OPTS, 0); MAX_IPV6_EXT + 1]),
        ),
        w(TcpTruncated, "19-byte TCP segment", cut_ip(&tcp4(), 20 + 19)),
        w(TcpTruncated, "TCP first fragment of 8 bytes", with_ipv4_fragment(&cut_ip(&tcp4(), 28), true, 0)),
        w(TcpBadDataOffset, "data offset 4", edited(tcp4(), |f| f[46] = 4 << 4)),
        w(TcpBadDataOffset, "data offset beyond the segment", edited(tcp6(), |f| f[66] = 6 << 4)),
        w(TcpZeroPort, "source port 0", Spec::tcp(V4_SRC, 0, V4_DST, 80, tcp_flags::SYN).build()),
        w(TcpZeroPort, "destination port 0", Spec::tcp(V6_SRC, 80, V6_DST, 0, tcp_flags::SYN).build()),
        w(UdpTruncated, "7-byte UDP datagram", cut_ip(&udp4(), 20 + 7)),
        w(UdpBadLength, "UDP length + 1", edited(udp4(), |f| wr16(f, 38, 17))),
        w(UdpBadLength, "UDP length 0 (IPv6)", edited(udp6(), |f| wr16(f, 58, 0))),
        w(
            UdpBadLength,
            "UDP length 7 in a first fragment",
            edited(with_ipv4_fragment(&udp4(), true, 0), |f| wr16(f, 38, 7)),
        ),
        w(IcmpTruncated, "3-byte ICMP message", cut_ip(&Spec::icmp_echo(V4_SRC, V4_DST).build(), 23)),
        w(IcmpTruncated, "3-byte ICMPv6 message", cut_ip(&Spec::icmp_echo(V6_SRC, V6_DST).build(), 43)),
    ]
}

/// Each hand-made input is rejected with exactly its reason.
#[test]
fn each_witness_yields_its_reason() {
    for w in witnesses() {
        assert_eq!(parse_checked(&w.frame), Err(w.reason), "{}: {}", w.what, hex(&w.frame));
    }
}

/// The witnesses cover every element of `Malformed::ALL`: adding a reason without a
/// witness fails here.
#[test]
fn witnesses_cover_every_reason() {
    let seen: HashSet<Malformed> = witnesses().iter().map(|w| w.reason).collect();
    let missing: Vec<&str> = Malformed::ALL.iter().filter(|r| !seen.contains(r)).map(|r| r.name()).collect();
    assert!(missing.is_empty(), "reasons without a witness: {missing:?}");
}

/// `ALL` lists each reason once, and counter names are distinct snake_case.
#[test]
fn reason_names_are_distinct() {
    let all: HashSet<Malformed> = Malformed::ALL.iter().copied().collect();
    assert_eq!(all.len(), Malformed::ALL.len());
    let names: HashSet<&str> = Malformed::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), Malformed::ALL.len());
    for n in names {
        assert!(
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{n}"
        );
    }
}
