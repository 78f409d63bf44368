//! The TLS flows of a capture (pcap or pcapng, Ethernet or raw IP): for each TCP
//! connection to a server, its addresses and, when its client's ClientHello
//! is in the capture, the SNI and JA4 it sent — what `tlsgatectl policy
//! explain --pcap` explains.
//!
//! A flow is keyed by its 4-tuple; the first SYN (without ACK) names the
//! client. The client's payload is gathered in sequence order from that SYN
//! (first 64 KiB) until it holds a whole ClientHello. A capture of the
//! appliance's own (`capture start`) has both legs with the same 4-tuple: the
//! client's hello on the inside comes first and is the one kept.

use std::collections::BTreeMap;
use std::net::IpAddr;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use tlsgate_certstore::Ja4;

/// One TLS flow of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloFlow {
    /// Client address and port.
    pub client: (IpAddr, u16),
    /// Server address and port.
    pub server: (IpAddr, u16),
    /// The SNI of the ClientHello, if it was seen and had one.
    pub sni: Option<String>,
    /// The client's JA4, if its ClientHello was seen.
    pub ja4: Option<String>,
}

/// Bytes of a client's payload looked at, at most.
const MAX_HELLO_BYTES: usize = 64 << 10;
/// Flows tracked, at most (a capture of a busy link).
const MAX_FLOWS: usize = 100_000;

/// (sender, receiver) of a flow's first segment: (client, server) when it was the SYN.
type FlowKey = ((IpAddr, u16), (IpAddr, u16));

#[derive(Default)]
struct Gather {
    isn: Option<u32>,
    client_first: bool,
    /// The client's payload, contiguous from the SYN.
    stream: Vec<u8>,
    /// Pieces that came ahead of the contiguous part, by offset.
    pieces: BTreeMap<u32, Vec<u8>>,
    hello: Option<Ja4>,
    /// Given up (no hello in the first 64 KiB).
    done: bool,
}

/// Whether `stream` holds the whole handshake message its first records start
/// (so a parse is worth trying).
fn hello_complete(stream: &[u8]) -> bool {
    let mut at = 0;
    let mut handshake = 0usize;
    let mut need = None;
    while stream.len() >= at + 5 {
        if stream[at] != 22 {
            return true; // not a handshake record: the parse says no at once
        }
        let len = usize::from(u16::from_be_bytes([stream[at + 3], stream[at + 4]]));
        if stream.len() < at + 5 + len {
            return false;
        }
        if need.is_none() && handshake == 0 && len >= 4 {
            let h = &stream[at + 5..];
            need = Some(4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])));
        }
        handshake += len;
        at += 5 + len;
        if need.is_some_and(|n| handshake >= n) {
            return true;
        }
    }
    false
}

/// The TLS flows of the capture `bytes`, in order of first appearance; an
/// error names what could not be read.
pub fn hello_flows(bytes: &[u8]) -> Result<Vec<HelloFlow>, String> {
    let mut flows: Vec<FlowKey> = Vec::new();
    let mut state: std::collections::HashMap<FlowKey, Gather> = std::collections::HashMap::new();
    let mut on_frame = |frame: &[u8], raw_ip: bool| {
        let Some(seg) = parse(frame, raw_ip) else { return };
        let fwd = (seg.src, seg.dst);
        let rev = (seg.dst, seg.src);
        let key = if state.contains_key(&rev) && !state.contains_key(&fwd) { rev } else { fwd };
        if !state.contains_key(&key) {
            let opens = seg.syn && !seg.ack;
            if state.len() >= MAX_FLOWS || (!opens && seg.payload.is_empty()) {
                return;
            }
            flows.push(key);
        }
        let g = state.entry(key).or_default();
        if key == fwd {
            if seg.syn && !seg.ack {
                // The first SYN only: the appliance's own SYN to the server (same
                // 4-tuple, its own sequence numbers) must not move the base.
                if g.isn.is_none() {
                    g.isn = Some(seg.seq);
                    g.client_first = true;
                }
                return;
            }
            if g.hello.is_some() || g.done || seg.payload.is_empty() {
                return;
            }
            // Without the SYN, the first payload seen starts the stream.
            let base = *g.isn.get_or_insert(seg.seq.wrapping_sub(1));
            let offset = seg.seq.wrapping_sub(base).wrapping_sub(1) as usize;
            if offset + seg.payload.len() > MAX_HELLO_BYTES || g.pieces.len() > 1024 {
                return;
            }
            if offset > g.stream.len() {
                g.pieces.entry(offset as u32).or_insert_with(|| seg.payload.to_vec());
                return;
            }
            let before = g.stream.len();
            if offset + seg.payload.len() > before {
                g.stream.extend_from_slice(&seg.payload[before - offset..]);
            }
            // Pieces that now join the contiguous part.
            while let Some((&at, _)) = g.pieces.first_key_value() {
                if at as usize > g.stream.len() {
                    break;
                }
                let Some((at, piece)) = g.pieces.pop_first() else { break };
                let skip = g.stream.len() - at as usize;
                if skip < piece.len() {
                    g.stream.extend_from_slice(&piece[skip..]);
                }
            }
            if g.stream.len() > before && hello_complete(&g.stream) {
                g.hello = Ja4::from_records(&g.stream);
                // A complete first message that is no ClientHello: stop looking.
                g.done = g.hello.is_none();
                g.stream = Vec::new();
                g.pieces.clear();
            }
        }
    };
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(bytes).map_err(|e| format!("pcapng: {e}"))?;
        let mut raw: Vec<bool> = Vec::new();
        while let Some(block) = r.next_block() {
            match block.map_err(|e| format!("pcapng: {e}"))? {
                // Interface ids start again in each section.
                Block::SectionHeader(_) => raw.clear(),
                Block::InterfaceDescription(i) => raw.push(is_raw(u32::from(i.linktype))),
                Block::EnhancedPacket(p) => {
                    on_frame(&p.data, raw.get(p.interface_id as usize).copied().unwrap_or(false))
                }
                Block::SimplePacket(p) => on_frame(&p.data, raw.first().copied().unwrap_or(false)),
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(bytes).map_err(|e| format!("pcap: {e}"))?;
        let raw = is_raw(u32::from(r.header().datalink));
        while let Some(p) = r.next_packet() {
            on_frame(&p.map_err(|e| format!("pcap: {e}"))?.data, raw);
        }
    }
    Ok(flows
        .into_iter()
        .filter_map(|key| {
            let g = state.remove(&key)?;
            // A flow whose first segment was the server's is kept the other way round.
            let (client, server) = if g.client_first || g.hello.is_some() { key } else { (key.1, key.0) };
            (g.client_first || g.hello.is_some()).then(|| HelloFlow {
                client,
                server,
                sni: g.hello.as_ref().and_then(|h| h.server_name().map(str::to_string)),
                ja4: g.hello.as_ref().map(ToString::to_string),
            })
        })
        .collect())
}

/// LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229).
fn is_raw(linktype: u32) -> bool {
    matches!(linktype, 101 | 228 | 229)
}

struct Segment<'a> {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    syn: bool,
    ack: bool,
    payload: &'a [u8],
}

/// A TCP segment of an Ethernet (VLAN tags skipped) or raw IP frame.
fn parse(frame: &[u8], raw_ip: bool) -> Option<Segment<'_>> {
    let mut ip = frame;
    if !raw_ip {
        let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let mut at = 14;
        while matches!(ethertype, 0x8100 | 0x88a8) {
            ethertype = u16::from_be_bytes([*frame.get(at + 2)?, *frame.get(at + 3)?]);
            at += 4;
        }
        if !matches!(ethertype, 0x0800 | 0x86dd) {
            return None;
        }
        ip = frame.get(at..)?;
    }
    let (src, dst, tcp) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            if *ip.get(9)? != 6 || ihl < 20 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return None; // not TCP, or a fragment
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), ip.get(ihl..total.min(ip.len()))?)
        }
        6 => {
            if *ip.get(6)? != 6 {
                return None; // not TCP right after the fixed header
            }
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), ip.get(40..(40 + len).min(ip.len()))?)
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]);
    let dport = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let offset = usize::from(*tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    Some(Segment {
        src: (src, sport),
        dst: (dst, dport),
        seq,
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        payload: tcp.get(offset..)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/TCP frame.
    fn frame(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let mut out = Vec::new();
        {
            let mut w = PcapWriter::with_header(&mut out, PcapHeader::default()).unwrap();
            for f in frames {
                w.write_packet(&PcapPacket::new(std::time::Duration::ZERO, f.len() as u32, f)).unwrap();
            }
        }
        out
    }

    /// A ClientHello record with SNI `name`, split in two segments (the second
    /// sent first: out of order).
    #[test]
    fn reads_sni_and_ja4_from_a_hello_over_two_segments() {
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[7; 32]);
        hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let name = b"bank.tg.test";
        let mut sni = vec![0, (name.len() + 3) as u8, 0, 0, name.len() as u8];
        sni.extend_from_slice(name);
        let mut ext = vec![0, 0, 0, sni.len() as u8];
        ext.extend_from_slice(&sni);
        hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        hello.extend_from_slice(&ext);
        let mut hs = vec![1, 0, (hello.len() >> 8) as u8, hello.len() as u8];
        hs.extend_from_slice(&hello);
        let mut record = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        record.extend_from_slice(&hs);
        let (c, s) = (([198, 18, 0, 1], 40000), ([198, 18, 0, 2], 443));
        let (a, b) = record.split_at(20);
        let frames = [
            frame(c, s, 1000, 0x02, &[]),
            frame(s, c, 5000, 0x12, &[]),
            frame(c, s, 1021, 0x18, b),
            frame(c, s, 1001, 0x18, a),
            // A flow of which only the server's answer is seen: not a TLS flow here.
            frame(([198, 18, 0, 2], 443), ([198, 18, 0, 9], 40001), 1, 0x18, b"x"),
        ];
        let flows = hello_flows(&pcap(&frames)).unwrap();
        assert_eq!(flows.len(), 1, "{flows:?}");
        let f = &flows[0];
        assert_eq!(
            (f.client, f.server),
            ((IpAddr::from([198, 18, 0, 1]), 40000), (IpAddr::from([198, 18, 0, 2]), 443))
        );
        assert_eq!(f.sni.as_deref(), Some("bank.tg.test"));
        assert!(f.ja4.as_deref().is_some_and(|j| j.starts_with("t12d0101")), "{:?}", f.ja4);
        assert!(hello_flows(b"not a capture").is_err());
    }
}
