//! In-process end-to-end tests of the fast path: real workers over the `memory`
//! backend (no root, no DPDK), driven through `run::run` exactly as the binary does.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_dataplane::config::{
    Config, DataplaneConfig, Driver, FlowsConfig, MalformedAction, SteeringMode,
};
use tlsgate_dataplane::flow::AtCapacity;
use tlsgate_dataplane::run::{run, RunOptions, Summary};
use tlsgate_dataplane::wire::build::Spec;
use tlsgate_dataplane::wire::parse::tcp_flags::*;
use tlsgate_drivers::memory::{MemoryBackend, Spread, Wire};
use tlsgate_drivers::pcapfile::{PcapReader, PcapWriter};
use tlsgate_drivers::{INSIDE, OUTSIDE};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(malformed: MalformedAction, max_flows: usize, at_capacity: AtCapacity) -> Config {
    Config {
        driver: Driver::Pcap,
        dataplane: DataplaneConfig {
            lab: true,
            malformed,
            stats_interval_s: 0,
            steering: SteeringMode::Auto,
            ..DataplaneConfig::default()
        },
        flows: FlowsConfig { max_per_worker: max_flows, at_capacity, ..FlowsConfig::default() },
        intercept: Default::default(),
        admission: Default::default(),
        tls: None,
        policy: None,
        events: None,
        control: None,
        dpdk: None,
        pcap: None,
        capture: Default::default(),
    }
}

/// A running dataplane on memory ports.
struct Running {
    wire: Wire,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Summary>,
}

fn start(workers: usize, spread: Spread, cfg: Config) -> Running {
    let (backend, wire) = MemoryBackend::new(workers, 4096, spread);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || run(backend, &cfg, s, &RunOptions::default()).unwrap());
    Running { wire, stop, handle }
}

impl Running {
    /// Injects frames on a port, pacing so RX queues never overflow.
    fn send(&self, port: usize, frames: &[Vec<u8>]) {
        for f in frames {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.wire.inject(port, f.clone()) {
                assert!(Instant::now() < deadline, "RX queue stayed full");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Collects what left `port` until `n` frames arrived (or times out).
    fn collect(&self, port: usize, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n && Instant::now() < deadline {
            got.extend(self.wire.take_tx(port));
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    /// Waits for every injected frame to be polled, then for counters to publish.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.wire.rx_pending(INSIDE) + self.wire.rx_pending(OUTSIDE) > 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    fn stop(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn handshake(c: &str, cport: u16, s: &str, sport: u16) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let syn = Spec::tcp(ip(c), cport, ip(s), sport, SYN).build();
    let synack = Spec::tcp(ip(s), sport, ip(c), cport, SYN | ACK).build();
    let ack = Spec::tcp(ip(c), cport, ip(s), sport, ACK).with_payload(b"GET / HTTP/1.0\r\n\r\n").build();
    (vec![syn, ack], vec![synack])
}

#[test]
fn frames_cross_unchanged_both_ways() {
    let dp = start(1, Spread::First, config(MalformedAction::Drop, 1000, AtCapacity::FailOpen));
    let arp = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06]);
        f.resize(60, 0x11);
        f
    };
    let inside = vec![
        Spec::tcp(ip("198.18.0.1"), 40000, ip("198.18.0.2"), 80, SYN).build(),
        Spec::udp(ip("198.18.0.1"), 5353, ip("198.18.0.2"), 53, b"query").with_vlans(&[100, 200]).build(),
        Spec::icmp_echo(ip("2001:db8::1"), ip("2001:db8::2")).with_vlans(&[7]).build(),
        arp,
    ];
    let outside = vec![Spec::tcp(ip("198.18.0.2"), 80, ip("198.18.0.1"), 40000, SYN | ACK).build()];
    dp.send(INSIDE, &inside);
    dp.send(OUTSIDE, &outside);
    assert_eq!(dp.collect(OUTSIDE, inside.len()), inside, "inside -> outside byte for byte");
    assert_eq!(dp.collect(INSIDE, outside.len()), outside, "outside -> inside byte for byte");
    dp.settle();
    let s = dp.stop();
    let w = &s.stats.workers[0];
    assert_eq!(w.per_port("rx_packets"), [4, 1]);
    assert_eq!(w.per_port("tx_packets"), [1, 4]);
    assert_eq!(w.get("flows_created"), 2, "the TCP flow and the UDP flow");
    assert!(w.drops.is_empty(), "{:?}", w.drops);
}

fn malformed_frames() -> Vec<(Vec<u8>, &'static str)> {
    let good = Spec::tcp(ip("198.18.0.1"), 40000, ip("198.18.0.2"), 80, ACK).with_payload(&[1; 40]).build();
    let mut bad_total = good.clone();
    bad_total[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let mut bad_doff = good.clone();
    bad_doff[14 + 20 + 12] = 0x20;
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    vec![
        (good[..30].to_vec(), "ipv4_truncated"),
        (bad_total, "ipv4_bad_total_length"),
        (bad_ihl, "ipv4_bad_header_length"),
        (bad_doff, "tcp_bad_data_offset"),
        (bad_version, "ipv4_bad_version"),
        (good[..40].to_vec(), "ipv4_bad_total_length"),
        (vec![0u8; 10], "ethernet_truncated"),
    ]
}

#[test]
fn malformed_frames_are_counted_by_reason_and_dropped_while_traffic_flows() {
    let dp = start(1, Spread::First, config(MalformedAction::Drop, 1000, AtCapacity::FailOpen));
    let bad = malformed_frames();
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    let mut good_sent = 0;
    // 200 rounds: a malformed burst interleaved with a valid connection's segments.
    for round in 0..200u16 {
        let (c2s, s2c) = handshake("198.18.0.1", 10000 + round, "198.18.0.2", 443);
        let frames: Vec<Vec<u8>> = bad.iter().map(|(f, _)| f.clone()).chain(c2s.iter().cloned()).collect();
        dp.send(INSIDE, &frames);
        dp.send(OUTSIDE, &s2c);
        good_sent += c2s.len();
        for (_, r) in &bad {
            *expected.entry((*r).to_string()).or_default() += 1;
        }
    }
    let out = dp.collect(OUTSIDE, good_sent);
    assert_eq!(out.len(), good_sent, "every valid frame forwarded despite the malformed ones");
    dp.settle();
    let s = dp.stop();
    assert_eq!(s.stats.total_drops(), expected);
    assert_eq!(s.stats.workers[0].get("flows_created"), 200);
}

#[test]
fn malformed_frames_can_be_forwarded_by_configuration() {
    let dp = start(1, Spread::First, config(MalformedAction::Forward, 1000, AtCapacity::FailOpen));
    let bad: Vec<Vec<u8>> = malformed_frames().into_iter().map(|(f, _)| f).collect();
    dp.send(INSIDE, &bad);
    assert_eq!(dp.collect(OUTSIDE, bad.len()), bad);
    dp.settle();
    let s = dp.stop();
    assert_eq!(s.stats.workers[0].get("malformed_forwarded"), bad.len() as u64);
    assert_eq!(s.stats.total_drops().values().sum::<u64>(), bad.len() as u64, "still counted by reason");
}

#[test]
fn software_steering_brings_both_directions_to_one_owner() {
    // Round-robin spread puts consecutive frames on different queues, like
    // af_packet's fanout: without steering each worker would see half a flow.
    let workers = 3;
    let dp = start(workers, Spread::RoundRobin, config(MalformedAction::Drop, 10_000, AtCapacity::FailOpen));
    // Causality as on a real wire: the server answers a SYN it has received, so
    // each step waits for the previous one to come out of the dataplane.
    let flows = 300u16;
    let mut out_total = 0;
    let mut in_total = 0;
    for batch in 0..10u16 {
        let conns: Vec<_> =
            (0..30).map(|i| handshake("198.18.0.1", 20000 + batch * 30 + i, "198.18.0.2", 443)).collect();
        let syns: Vec<Vec<u8>> = conns.iter().map(|(c2s, _)| c2s[0].clone()).collect();
        let synacks: Vec<Vec<u8>> = conns.iter().map(|(_, s2c)| s2c[0].clone()).collect();
        let acks: Vec<Vec<u8>> = conns.iter().map(|(c2s, _)| c2s[1].clone()).collect();
        dp.send(INSIDE, &syns);
        out_total += dp.collect(OUTSIDE, syns.len()).len();
        dp.send(OUTSIDE, &synacks);
        in_total += dp.collect(INSIDE, synacks.len()).len();
        dp.send(INSIDE, &acks);
        out_total += dp.collect(OUTSIDE, acks.len()).len();
    }
    assert_eq!((out_total, in_total), (600, 300), "every frame forwarded");
    dp.settle();
    let s = dp.stop();
    let created: u64 = s.stats.workers.iter().map(|w| w.get("flows_created")).sum();
    assert_eq!(created, u64::from(flows), "one flow per connection, none split across workers");
    let midstream: u64 = s.stats.workers.iter().map(|w| w.get("untracked_midstream")).sum();
    assert_eq!(midstream, 0, "no SYN-ACK or ACK reached a worker without the flow");
    let out: u64 = s.stats.workers.iter().map(|w| w.get("handover_out")).sum();
    let inn: u64 = s.stats.workers.iter().map(|w| w.get("handover_in")).sum();
    assert!(out > 0 && out == inn, "hand-overs counted on both ends: {out} / {inn}");
    assert!(s.stats.workers.iter().all(|w| w.get("flows_created") > 0), "flows spread over all workers");
}

#[test]
fn flow_table_cap_fail_open_and_fail_closed() {
    for (at, forwarded) in [(AtCapacity::FailOpen, 10), (AtCapacity::FailClosed, 4)] {
        let dp = start(1, Spread::First, config(MalformedAction::Drop, 4, at));
        let syns: Vec<Vec<u8>> = (0..10)
            .map(|i| Spec::tcp(ip("198.18.0.1"), 30000 + i, ip("198.18.0.2"), 80, SYN).build())
            .collect();
        dp.send(INSIDE, &syns);
        dp.settle();
        let got = dp.collect(OUTSIDE, forwarded);
        let s = dp.stop();
        let w = &s.stats.workers[0];
        assert_eq!(got.len(), forwarded, "{at:?}");
        assert_eq!(w.get("flows_active"), 4);
        match at {
            AtCapacity::FailOpen => assert_eq!(w.get("untracked_table_full"), 6),
            AtCapacity::FailClosed => assert_eq!(w.drops["flow_table_full"], 6),
        }
    }
}

#[test]
fn pcap_backend_replays_a_capture_through_the_worker() {
    use tlsgate_drivers::pcap::{PcapBackend, PcapConfig};
    let dir = std::env::temp_dir().join(format!("tg-pcap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    let mut frames = Vec::new();
    for i in 0..50u16 {
        let (c2s, _) = handshake("198.18.0.1", 1000 + i, "198.18.0.2", 443);
        frames.extend(c2s);
    }
    let mut bad = frames[0].clone();
    bad.truncate(20);
    let mut w = PcapWriter::create(&input).unwrap();
    for (i, f) in frames.iter().chain(std::iter::once(&bad)).enumerate() {
        w.write_frame(i as u64 * 1000, f).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let pcfg = PcapConfig { inside_rx: Some(input), outside_tx: Some(output.clone()), ..Default::default() };
    let backend = PcapBackend::new(&pcfg).unwrap();
    let cfg = config(MalformedAction::Drop, 1000, AtCapacity::FailOpen);
    // Ends by itself once the capture is exhausted.
    let s = run(backend, &cfg, Arc::new(AtomicBool::new(false)), &RunOptions::default()).unwrap();
    assert_eq!(s.stats.workers[0].get("flows_created"), 50);
    assert_eq!(s.stats.total_drops()["ipv4_truncated"], 1);
    let mut r = PcapReader::open(&output).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while r.next_frame(&mut buf).unwrap().is_some() {
        out.push(buf.clone());
    }
    assert_eq!(out, frames);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fragments_are_forwarded_untracked_and_steered_by_address_pair() {
    let dp = start(2, Spread::RoundRobin, config(MalformedAction::Drop, 1000, AtCapacity::FailOpen));
    // A UDP datagram in three IPv4 fragments: first (MF, ports present), middle and
    // last (offset != 0, no ports).
    let mut frames = Vec::new();
    for (i, (mf, off)) in [(true, 0u16), (true, 185), (false, 370)].into_iter().enumerate() {
        let mut f = Spec::udp(ip("198.18.0.1"), 5000, ip("198.18.0.2"), 6000, &[i as u8; 1000]).build();
        let field = (u16::from(mf) << 13) | off;
        f[20..22].copy_from_slice(&field.to_be_bytes());
        frames.push(f);
    }
    dp.send(INSIDE, &frames);
    let mut out = dp.collect(OUTSIDE, 3);
    dp.settle();
    let s = dp.stop();
    // Round-robin RX spreading may reorder frames across queues (a NIC's RSS would
    // not: it hashes fragments by address pair); compare contents, not order.
    out.sort();
    frames.sort();
    assert!(out == frames, "fragments forwarded unchanged ({} of 3 seen)", out.len());
    let frag: u64 = s.stats.workers.iter().map(|w| w.get("untracked_fragments")).sum();
    assert_eq!(frag, 3);
    let owners = s.stats.workers.iter().filter(|w| w.get("untracked_fragments") > 0).count();
    assert_eq!(owners, 1, "all fragments of a datagram reach one worker");
    assert_eq!(s.stats.workers.iter().map(|w| w.get("flows_created")).sum::<u64>(), 0);
}

/// An IPv4 TCP SYN cut into a fragment (MF set) and an IPv6 TCP SYN in an atomic
/// fragment (a fragment header with offset 0 and no MF): the first is dropped and
/// counted whatever its port (later fragments carry none, so nothing could decide
/// on them); the second is a whole packet, tracked like any SYN.
#[test]
fn tcp_fragments_are_dropped_and_atomic_fragments_are_whole_packets() {
    let dp = start(1, Spread::First, config(MalformedAction::Drop, 1000, AtCapacity::FailOpen));
    let mut v4 = Spec::tcp(ip("198.18.0.1"), 40000, ip("198.18.0.2"), 8080, SYN).build();
    v4[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    v4[24..26].copy_from_slice(&[0, 0]);
    let ck = tlsgate_dataplane::wire::build::checksum(&v4[14..34]);
    v4[24..26].copy_from_slice(&ck.to_be_bytes());
    let v6 = {
        let f = Spec::tcp(ip("2001:db8::1"), 40001, ip("2001:db8::2"), 8080, SYN).build();
        let (head, tcp) = f.split_at(14 + 40);
        let mut out = head.to_vec();
        let plen = u16::from_be_bytes([out[18], out[19]]) + 8;
        out[18..20].copy_from_slice(&plen.to_be_bytes());
        out[20] = 44;
        out.extend_from_slice(&[6, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
        out.extend_from_slice(tcp);
        out
    };
    dp.send(INSIDE, &[v4, v6.clone()]);
    assert_eq!(dp.collect(OUTSIDE, 1), vec![v6], "only the atomic fragment crosses");
    dp.settle();
    let s = dp.stop();
    let w = &s.stats.workers[0];
    assert_eq!(w.drops.get("tcp_fragment"), Some(&1), "{:?}", w.drops);
    assert_eq!((w.get("flows_created"), w.get("untracked_fragments")), (1, 0));
}

/// TCP to a TLS port (here `intercept.ports`) whose SYN was never seen is dropped
/// (`midstream = "drop"`, the default): it would escape inspection. Elsewhere it is
/// forwarded untracked, as before.
#[test]
fn midstream_tcp_to_a_tls_port_is_dropped() {
    let mut cfg = config(MalformedAction::Drop, 1000, AtCapacity::FailOpen);
    cfg.intercept.ports = vec![443];
    let dp = start(1, Spread::First, cfg);
    let to_tls =
        Spec::tcp(ip("198.18.0.1"), 40000, ip("198.18.0.2"), 443, ACK).with_payload(b"\x16\x03\x01").build();
    let from_tls =
        Spec::tcp(ip("198.18.0.2"), 443, ip("198.18.0.1"), 40000, ACK).with_payload(b"data").build();
    let other = Spec::tcp(ip("198.18.0.1"), 40002, ip("198.18.0.2"), 8080, ACK).with_payload(b"x").build();
    dp.send(INSIDE, &[to_tls, other.clone()]);
    dp.send(OUTSIDE, &[from_tls]);
    assert_eq!(dp.collect(OUTSIDE, 1), vec![other]);
    dp.settle();
    assert!(dp.wire.take_tx(INSIDE).is_empty(), "nothing from the TLS server got through");
    let s = dp.stop();
    let w = &s.stats.workers[0];
    assert_eq!((w.drops.get("midstream_tls"), w.get("untracked_midstream")), (Some(&2), 1), "{:?}", w.drops);
}

/// QUIC, decided by address and port: UDP 443 from the inside that a decrypt
/// rule matches is dropped under `quic = "block"` (the default; clients fall
/// back to TCP), forwarded and counted under `quic = "pass"`; a do-not-decrypt
/// rule's UDP 443, UDP to other ports and UDP from the outside pass as before.
#[test]
fn quic_a_decrypt_rule_matches_is_blocked_unless_passed() {
    let dir = std::env::temp_dir().join(format!("tg-quic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for quic in ["block", "pass"] {
        let policy = dir.join(format!("{quic}.json"));
        std::fs::write(
            &policy,
            format!(
                r#"{{"rules": [
                    {{"name": "Bypass-Bank", "destination": ["198.18.0.9"], "action": "do-not-decrypt"}},
                    {{"name": "Decrypt-All", "action": "decrypt"}}],
                   "settings": {{"quic": "{quic}"}}}}"#
            ),
        )
        .unwrap();
        let mut cfg = config(MalformedAction::Drop, 1000, AtCapacity::FailOpen);
        cfg.policy = Some(tlsgate_dataplane::config::PolicyConfig { file: policy });
        let dp = start(1, Spread::First, cfg);
        let initial =
            |dst: &str, port: u16| Spec::udp(ip("198.18.0.1"), 50000, ip(dst), port, &[0xc3; 1200]).build();
        let quic_decrypt = initial("198.18.0.2", 443);
        let quic_bank = initial("198.18.0.9", 443);
        let dns = initial("198.18.0.2", 53);
        dp.send(INSIDE, &[quic_decrypt.clone(), quic_decrypt.clone(), quic_bank.clone(), dns.clone()]);
        // UDP from the outside: from another port it passes; from 443 it is
        // decided as QUIC (the server "speaking first").
        let from_outside = Spec::udp(ip("198.18.0.2"), 53, ip("198.18.0.1"), 50001, b"x").build();
        let from_443 = Spec::udp(ip("198.18.0.2"), 443, ip("198.18.0.1"), 50003, b"x").build();
        dp.send(OUTSIDE, &[from_outside.clone(), from_443.clone()]);
        let expected = if quic == "block" {
            vec![quic_bank, dns]
        } else {
            vec![quic_decrypt.clone(), quic_decrypt, quic_bank, dns]
        };
        assert_eq!(dp.collect(OUTSIDE, expected.len()), expected, "quic = {quic}");
        let inside = if quic == "block" { vec![from_outside] } else { vec![from_outside, from_443] };
        assert_eq!(dp.collect(INSIDE, inside.len()), inside, "quic = {quic}");
        dp.settle();
        let s = dp.stop();
        let w = &s.stats.workers[0];
        if quic == "block" {
            assert_eq!((w.drops.get("quic"), w.get("quic_passed")), (Some(&3), 0), "{:?}", w.drops);
        } else {
            assert_eq!((w.drops.get("quic"), w.get("quic_passed")), (None, 2), "{:?}", w.drops);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The ways around `quic = block` an attack review found, closed: a first UDP
/// fragment to 443 from the inside is dropped (later fragments are useless
/// without it); a UDP flow the outside opens from port 443 is decided as if the
/// client had (so a reply sent ahead opens nothing); a full flow table does not
/// fail open for QUIC.
#[test]
fn quic_cannot_be_smuggled_by_fragments_replies_or_a_full_table() {
    let dir = std::env::temp_dir().join(format!("tg-quic2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("p.json");
    std::fs::write(&policy, r#"{"rules": [{"name": "Decrypt-All", "action": "decrypt"}]}"#).unwrap();
    let mut cfg = config(MalformedAction::Drop, 4, AtCapacity::FailOpen);
    cfg.policy = Some(tlsgate_dataplane::config::PolicyConfig { file: policy });
    let dp = start(1, Spread::First, cfg);
    // A first fragment (MF set) of a UDP datagram to 443.
    let mut first = Spec::udp(ip("198.18.0.1"), 50000, ip("198.18.0.2"), 443, &[0xc3; 1200]).build();
    first[14 + 6] |= 0x20;
    first[14 + 10] = 0;
    first[14 + 11] = 0;
    let sum = (0..20)
        .step_by(2)
        .fold(0u32, |s, i| s + u32::from(u16::from_be_bytes([first[14 + i], first[15 + i]])));
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    first[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    // The server "answers" first, from 443; then the client's QUIC.
    let reply = Spec::udp(ip("198.18.0.2"), 443, ip("198.18.0.1"), 50001, b"x").build();
    let quic = Spec::udp(ip("198.18.0.1"), 50001, ip("198.18.0.2"), 443, &[0xc3; 1200]).build();
    dp.send(INSIDE, std::slice::from_ref(&first));
    dp.send(OUTSIDE, std::slice::from_ref(&reply));
    dp.send(INSIDE, std::slice::from_ref(&quic));
    // Fill the table (4 flows) with other UDP, then QUIC to 443 again.
    let others: Vec<_> =
        (0..4).map(|i| Spec::udp(ip("198.18.0.1"), 40000 + i, ip("198.18.0.2"), 53, b"q").build()).collect();
    dp.send(INSIDE, &others);
    let late = Spec::udp(ip("198.18.0.1"), 50002, ip("198.18.0.2"), 443, &[0xc3; 1200]).build();
    dp.send(INSIDE, std::slice::from_ref(&late));
    assert_eq!(dp.collect(OUTSIDE, others.len()), others, "only the other UDP crosses");
    dp.settle();
    assert!(dp.wire.take_tx(INSIDE).is_empty(), "the server's early reply does not cross either");
    let s = dp.stop();
    let w = &s.stats.workers[0];
    assert_eq!(w.drops.get("quic"), Some(&4), "{:?}", w.drops);
    let _ = std::fs::remove_dir_all(dir);
}
