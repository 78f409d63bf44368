//! Unit tests of the flow table.

use std::net::IpAddr;

use super::*;
use crate::wire::build::Spec;
use crate::wire::parse::tcp_flags::*;
use crate::wire::parse::{parse, Parsed};

const A: &str = "198.18.0.1";
const ID: SpliceId = SpliceId { slot: 7, generation: 1 };
const B: &str = "198.18.0.2";

fn pkt(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> Parsed {
    let f = Spec::tcp(src.parse::<IpAddr>().unwrap(), sp, dst.parse().unwrap(), dp, flags).build();
    parse(&f).unwrap()
}

fn track(t: &mut FlowTable, p: &Parsed, now: u64) -> Track {
    let (k, s) = FlowKey::of(p);
    let h = t.hash(&k);
    t.track(&k, s, h, p.tcp_flags, now)
}

fn hasher() -> FlowHasher {
    FlowHasher::new([1, 2, 3, 4])
}

fn table(cap: usize, at: AtCapacity) -> FlowTable {
    FlowTable::new(cap, at, Timeouts::default(), hasher(), 0)
}

#[test]
fn key_and_hash_are_symmetric() {
    let a = pkt(A, 40000, B, 443, SYN);
    let b = pkt(B, 443, A, 40000, SYN | ACK);
    let (ka, sa) = FlowKey::of(&a);
    let (kb, sb) = FlowKey::of(&b);
    assert_eq!(ka, kb);
    let h = hasher();
    assert_eq!(h.hash(&ka), h.hash(&kb));
    assert_ne!(sa, sb);
    let c = pkt(A, 40001, B, 443, SYN);
    assert_ne!(h.hash(&FlowKey::of(&c).0), h.hash(&ka));
    // Another key, another hash of the same flow.
    assert_ne!(FlowHasher::new([5, 6, 7, 8]).hash(&ka), h.hash(&ka));
}

/// The unkeyed hash the flow table and the steering used before: anyone could
/// compute it, so one host could build flows that land in one bucket and on one
/// worker.
fn old_hash(k: &FlowKey) -> u64 {
    fn mix(h: u64, w: u64) -> u64 {
        let x = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^ (x >> 29)
    }
    let mut h = 0x243f_6a88_85a3_08d3;
    for w in [k.lo as u64, (k.lo >> 64) as u64, k.hi as u64, (k.hi >> 64) as u64, k.meta] {
        h = mix(h, w);
    }
    h ^ (h >> 32)
}

/// An attacker on one IPv6 /64 searches its addresses and ports for flows that the
/// old hash puts in one bucket of a 4096-bucket table and on worker 0 of 4. Under
/// the keyed hash (a key drawn at random, as at start-up) they spread over the
/// buckets and the workers.
#[test]
fn flows_built_to_collide_under_the_old_hash_spread_out() {
    use crate::steer::owner;
    let server = u128::from("2001:db8:ffff::443".parse::<std::net::Ipv6Addr>().unwrap());
    let net = u128::from("2001:db8:0:1::".parse::<std::net::Ipv6Addr>().unwrap());
    // The key of a SYN from client:port to server:443, as FlowKey::of builds it
    // (checked below on the first one).
    let key = |client: u128, port: u16| {
        let (lo, hi, lp, hp) = if (client, port) <= (server, 443) {
            (client, server, port, 443u16)
        } else {
            (server, client, 443, port)
        };
        FlowKey { lo, hi, meta: u64::from(lp) | u64::from(hp) << 16 | 6 << 32 | 1 << 56 }
    };
    let p = pkt("2001:db8:0:1::1", 2000, "2001:db8:ffff::443", 443, SYN);
    assert_eq!(FlowKey::of(&p).0, key(net | 1, 2000));
    let mut colliding = Vec::new();
    let mut i = 0u64;
    while colliding.len() < 64 {
        i += 1;
        let k = key(net | u128::from(i >> 16), 1024 + (i & 0xffff) as u16 % 60000);
        let h = old_hash(&k);
        if h & 4095 == 0 && owner(h, 4) == 0 {
            colliding.push(k);
        }
        assert!(i < 20_000_000, "the search must find them");
    }
    let keyed = crate::clock::Secrets::random().unwrap().flow_hash;
    let buckets: std::collections::HashSet<u64> = colliding.iter().map(|k| keyed.hash(k) & 4095).collect();
    let mut workers = [0usize; 4];
    for k in &colliding {
        workers[owner(keyed.hash(k), 4)] += 1;
    }
    // 64 keys in 4096 buckets: a few may share one by chance, not dozens.
    assert!(buckets.len() >= 56, "{} buckets for 64 keys", buckets.len());
    assert!(workers.iter().all(|&n| (4..=32).contains(&n)), "per worker: {workers:?}");
}

#[test]
fn handshake_data_fin_rst() {
    let mut t = table(10, AtCapacity::FailOpen);
    assert_eq!(track(&mut t, &pkt(A, 1000, B, 80, SYN), 0), Track::Created);
    let (k, _) = FlowKey::of(&pkt(A, 1000, B, 80, SYN));
    let st = |t: &FlowTable| t.get(&k, t.hash(&k)).unwrap().state;
    assert_eq!(st(&t), FlowState::Tcp(TcpState::SynSent));
    track(&mut t, &pkt(B, 80, A, 1000, SYN | ACK), 1);
    assert_eq!(st(&t), FlowState::Tcp(TcpState::SynReceived));
    track(&mut t, &pkt(A, 1000, B, 80, ACK), 2);
    assert_eq!(st(&t), FlowState::Tcp(TcpState::Established));
    track(&mut t, &pkt(A, 1000, B, 80, FIN | ACK), 3);
    assert_eq!(st(&t), FlowState::Tcp(TcpState::Closing));
    track(&mut t, &pkt(B, 80, A, 1000, RST), 4);
    assert_eq!(st(&t), FlowState::Tcp(TcpState::Closed));
    // Port reuse: a new SYN restarts the flow.
    track(&mut t, &pkt(A, 1000, B, 80, SYN), 5);
    assert_eq!(st(&t), FlowState::Tcp(TcpState::SynSent));
    assert_eq!(t.len(), 1);
}

#[test]
fn an_intercepted_flow_is_held_while_its_splice_lives() {
    let mut t = table(10, AtCapacity::FailOpen);
    let syn = pkt(A, 1000, B, 443, SYN);
    track(&mut t, &syn, 0);
    let (k, _) = FlowKey::of(&syn);
    t.set_intercepted(&k, t.hash(&k), ID);
    // Far beyond the SYN timeout (30 s) and the established one (3600 s): held.
    for s in [60, 4000, 90_000] {
        assert_eq!(t.expire(s * 1000, usize::MAX), 0, "at {s} s");
    }
    assert_eq!(t.len(), 1);
    // The splice ends: the tombstone times out with its state from then on.
    t.splice_ended(&k, t.hash(&k), 90_000_000);
    assert_eq!(t.expire(90_020_000, usize::MAX), 0, "tombstone still within 30 s");
    assert_eq!(t.expire(90_000_000 + 32_000 + 3_700_000, usize::MAX), 1);
    assert_eq!(t.len(), 0);
}

#[test]
fn a_syn_on_a_tombstone_starts_a_new_flow_and_late_segments_do_not_extend_it() {
    let mut t = table(10, AtCapacity::FailOpen);
    let syn = pkt(A, 1000, B, 443, SYN);
    track(&mut t, &syn, 0);
    let (k, _) = FlowKey::of(&syn);
    t.set_intercepted(&k, t.hash(&k), ID);
    track(&mut t, &pkt(A, 1000, B, 443, FIN | ACK), 1_000);
    t.splice_ended(&k, t.hash(&k), 2_000);
    // Late segments of the old connection: dropped by the caller, and they do not
    // keep the tombstone alive.
    for (at, flags) in [(5_000, ACK), (60_000, FIN | ACK), (100_000, RST)] {
        assert_eq!(track(&mut t, &pkt(B, 443, A, 1000, flags), at), Track::Intercepted(None));
    }
    assert_eq!(t.get(&k, t.hash(&k)).unwrap().last_seen_ms, 2_000);
    // The client reuses its port: a new flow, decided again.
    assert_eq!(track(&mut t, &syn, 101_000), Track::Created);
    let f = t.get(&k, t.hash(&k)).unwrap();
    assert!(!f.intercepted && !f.held);
    assert_eq!(
        (f.state, f.initiator, f.last_seen_ms),
        (FlowState::Tcp(TcpState::SynSent), Side::Lo, 101_000)
    );
    assert_eq!((t.created, t.reused, t.len()), (2, 1, 1));
    // It expires with the SYN timeout from now, not with the tombstone's.
    assert_eq!(t.expire(101_000 + 32_000, usize::MAX), 1);
    // A blocked SYN's tombstone is not held: it expires, and a retried SYN is
    // decided again.
    t.expire(1_000_000, usize::MAX);
    track(&mut t, &syn, 1_000_000);
    t.set_tombstone(&k, t.hash(&k));
    assert_eq!(track(&mut t, &syn, 1_001_000), Track::Created);
    t.set_tombstone(&k, t.hash(&k));
    assert_eq!(t.expire(1_001_000 + 32_000, usize::MAX), 1);
    assert!(t.is_empty());
}

#[test]
fn a_syn_on_a_live_intercepted_flow_stays_with_its_splice() {
    let mut t = table(10, AtCapacity::FailOpen);
    let syn = pkt(A, 1000, B, 443, SYN);
    track(&mut t, &syn, 0);
    let (k, _) = FlowKey::of(&syn);
    t.set_intercepted(&k, t.hash(&k), ID);
    // A retransmitted SYN while the splice lives goes to the splice.
    assert_eq!(track(&mut t, &syn, 1_000), Track::Intercepted(Some(ID)));
    assert_eq!(t.created, 1);
}

#[test]
fn midstream_is_untracked() {
    let mut t = table(10, AtCapacity::FailOpen);
    assert_eq!(track(&mut t, &pkt(A, 1000, B, 80, ACK), 0), Track::Midstream);
    assert_eq!(track(&mut t, &pkt(B, 80, A, 1000, SYN | ACK), 0), Track::Midstream);
    assert!(t.is_empty());
}

#[test]
fn capacity_actions() {
    for (at, want) in [(AtCapacity::FailOpen, Track::FullOpen), (AtCapacity::FailClosed, Track::FullClosed)] {
        let mut t = table(3, at);
        for port in 0..3 {
            assert_eq!(track(&mut t, &pkt(A, 1000 + port, B, 80, SYN), 0), Track::Created);
        }
        assert_eq!(track(&mut t, &pkt(A, 2000, B, 80, SYN), 0), want);
        // Existing flows still track at capacity.
        assert_eq!(track(&mut t, &pkt(B, 80, A, 1000, SYN | ACK), 0), Track::Tracked);
        assert_eq!(t.len(), 3);
    }
}

#[test]
fn idle_timeouts_per_state() {
    let to = Timeouts { tcp_syn: 5, tcp_established: 100, tcp_closing: 20, tcp_closed: 2, udp: 30 };
    let mut t = FlowTable::new(100, AtCapacity::FailOpen, to, hasher(), 0);
    // Flow 1: SYN only -> expires after 5 s.
    track(&mut t, &pkt(A, 1, B, 80, SYN), 0);
    // Flow 2: established -> lives 100 s past its last packet.
    track(&mut t, &pkt(A, 2, B, 80, SYN), 0);
    track(&mut t, &pkt(B, 80, A, 2, SYN | ACK), 0);
    track(&mut t, &pkt(A, 2, B, 80, ACK), 0);
    // Flow 3: established then RST at t=10 s -> gone 2 s later.
    track(&mut t, &pkt(A, 3, B, 80, SYN), 0);
    track(&mut t, &pkt(A, 3, B, 80, ACK), 0);
    // UDP flow.
    let u = parse(&Spec::udp(A.parse().unwrap(), 5, B.parse().unwrap(), 53, b"q").build()).unwrap();
    track(&mut t, &u, 0);
    assert_eq!(t.len(), 4);

    assert_eq!(t.expire(4_000, usize::MAX), 0);
    assert_eq!(t.expire(7_000, usize::MAX), 1, "SYN-only flow after tcp_syn");
    track(&mut t, &pkt(B, 80, A, 3, RST), 10_000);
    assert_eq!(t.expire(11_000, usize::MAX), 0);
    assert_eq!(t.expire(13_500, usize::MAX), 1, "RST flow after tcp_closed, not tcp_established");
    assert_eq!(t.expire(31_500, usize::MAX), 1, "udp after 30 s");
    // Keep flow 2 alive with traffic at 90 s: it survives 100 s after that.
    track(&mut t, &pkt(A, 2, B, 80, ACK), 90_000);
    assert_eq!(t.expire(150_000, usize::MAX), 0);
    assert_eq!(t.expire(192_000, usize::MAX), 1);
    assert!(t.is_empty());
    assert_eq!((t.created, t.expired), (4, 4));
}

#[test]
fn expiry_is_bounded_per_call() {
    let to = Timeouts { udp: 1, ..Timeouts::default() };
    let mut t = FlowTable::new(10_000, AtCapacity::FailOpen, to, hasher(), 0);
    for port in 1..=5000u16 {
        let u = parse(&Spec::udp(A.parse().unwrap(), port, B.parse().unwrap(), 53, b"q").build()).unwrap();
        track(&mut t, &u, 0);
    }
    let mut removed = 0;
    let mut calls = 0;
    while removed < 5000 {
        let n = t.expire(10_000, 512);
        assert!(n <= 512);
        removed += n;
        calls += 1;
        assert!(calls < 100);
    }
    assert!(t.is_empty());
}

#[test]
fn long_timeouts_beyond_the_wheel() {
    let to = Timeouts { tcp_established: 86_400, ..Timeouts::default() };
    let mut t = FlowTable::new(10, AtCapacity::FailOpen, to, hasher(), 0);
    track(&mut t, &pkt(A, 1, B, 80, SYN), 0);
    track(&mut t, &pkt(A, 1, B, 80, ACK), 0);
    for h in 1..24 {
        assert_eq!(t.expire(h * 3_600_000, usize::MAX), 0, "hour {h}");
    }
    assert_eq!(t.expire(86_402_000, usize::MAX), 1);
}

#[test]
fn a_probe_key_is_the_key_of_its_connection_both_ways() {
    use std::net::IpAddr;
    for (a, b) in [
        ((IpAddr::from([198, 18, 0, 1]), 61_440), (IpAddr::from([198, 18, 0, 2]), 443)),
        ((IpAddr::from([198, 18, 0, 9]), 61_441), (IpAddr::from([198, 18, 0, 2]), 443)),
        (("2001:db8::1".parse().unwrap(), 61_442), ("2001:db8::2".parse().unwrap(), 8443)),
    ] {
        let (k, side) = FlowKey::tcp(a, b, 7);
        let (back, other) = FlowKey::tcp(b, a, 7);
        assert_eq!(k, back);
        assert_ne!(side, other);
        assert_eq!(k.endpoints(side), (a.0, a.1, b.0, b.1));
        assert_eq!((k.proto(), k.vlan()), (6, 7));
    }
    // The key the fast path makes of the server's answer.
    let (parsed, _) = FlowKey::of(&pkt(B, 443, A, 61_440, SYN | ACK));
    let a = (A.parse().unwrap(), 61_440);
    assert_eq!(parsed, FlowKey::tcp(a, (B.parse().unwrap(), 443), 0).0);
}

/// A million flows feel every byte of an entry in their cache misses: a flow is
/// one 64-byte line of the table, and every field survives the packing.
#[test]
fn a_flow_is_one_cache_line_and_round_trips() {
    assert_eq!(std::mem::size_of::<tlsgate_drivers::lines::Line>(), 64);
    let (key, _) = FlowKey::tcp(
        ("2001:db8::1".parse().unwrap(), 40000),
        ("2001:db8:ffff::2".parse().unwrap(), 443),
        4095,
    );
    for state in [
        FlowState::Datagram,
        FlowState::Tcp(TcpState::SynSent),
        FlowState::Tcp(TcpState::SynReceived),
        FlowState::Tcp(TcpState::Established),
        FlowState::Tcp(TcpState::Closing),
        FlowState::Tcp(TcpState::Closed),
    ] {
        for (initiator, fin, intercepted, held) in
            [(Side::Lo, [false, true], true, false), (Side::Hi, [true, false], false, true)]
        {
            let f = Flow {
                key,
                state,
                initiator,
                fin,
                last_seen_ms: (1 << 48) - 1,
                packets: u32::MAX,
                wheel_due: u32::MAX - 1,
                intercepted,
                held,
                splice: PackedSplice::of(SpliceId { slot: u32::MAX, generation: 3 }),
            };
            let mut line = [0u64; 8];
            table::store(&mut line, &f);
            assert_ne!(line[4], 0, "an entry is never read as empty");
            let g = table::load(&line);
            assert_eq!(
                (g.key, g.state, g.initiator, g.fin, g.last_seen_ms, g.packets, g.wheel_due),
                (f.key, f.state, f.initiator, f.fin, f.last_seen_ms, f.packets, f.wheel_due)
            );
            assert_eq!((g.intercepted, g.held, g.splice()), (f.intercepted, f.held, f.splice()));
        }
    }
}

/// The open-addressing table against a `HashMap` model: random inserts, lookups
/// and removals (removals shift later entries back), through several doublings,
/// with a hash of few bits so that runs are long and wrap around the end.
#[test]
fn open_addressing_agrees_with_a_map_under_churn() {
    use std::collections::HashMap;
    let narrow = |k: &FlowKey| -> u64 {
        // 6 bits of a mix: 64 home lines at the table's start and 64 at its end
        // (the low bits index it), so runs are long and wrap around the end.
        let x = (k.lo as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if x & 1 == 0 {
            x >> 58
        } else {
            !(x >> 58)
        }
    };
    let mut t = table::Slots::with_room(4);
    let mut model: HashMap<FlowKey, u32> = HashMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let key = |n: u64| FlowKey { lo: u128::from(n), hi: u128::from(n) + 1, meta: 6 << 32 | n & 0xffff };
    for step in 0..20_000u32 {
        let n = next() % 600;
        let k = key(n);
        let h = narrow(&k);
        match (next() % 3, t.find(&k, h)) {
            (0 | 1, None) => {
                let f = Flow {
                    key: k,
                    state: FlowState::Datagram,
                    initiator: Side::Lo,
                    fin: [false; 2],
                    last_seen_ms: 0,
                    packets: step,
                    wheel_due: 0,
                    intercepted: false,
                    held: false,
                    splice: PackedSplice::NONE,
                };
                assert!(t.insert(h, &f, narrow));
                assert!(model.insert(k, step).is_none());
            }
            (0 | 1, Some(i)) => assert_eq!(Some(&t.get(i).packets), model.get(&k), "step {step}"),
            (_, Some(i)) => {
                t.remove_at(i, narrow);
                assert!(model.remove(&k).is_some());
            }
            (_, None) => assert!(!model.contains_key(&k), "step {step}: {k:?} lost"),
        }
        assert_eq!(t.len(), model.len());
        assert!(t.len() * 2 <= t.lines());
    }
    for (k, packets) in &model {
        let i = t.find(k, narrow(k)).expect("every flow of the model is found");
        assert_eq!(t.get(i).packets, *packets);
    }
    assert!(t.lines() >= 512, "it doubled: {} lines", t.lines());
}

/// A table grows from its initial room to hold a hundred thousand flows and
/// finds every one of them, and removing them all empties it.
#[test]
fn a_table_grows_and_finds_every_flow() {
    let mut t = table(1_000_000, AtCapacity::FailClosed);
    let (start, _) = t.memory();
    let keys: Vec<(FlowKey, Side)> = (0..100_000u32)
        .map(|n| {
            let a = std::net::Ipv4Addr::from(0xc612_0000 | (n >> 8)); // 198.18.x.y
            FlowKey::tcp((a.into(), 1024 + (n & 0xff) as u16), (B.parse().unwrap(), 443), 0)
        })
        .collect();
    for (k, s) in &keys {
        let h = t.hash(k);
        assert_eq!(t.track(k, *s, h, SYN, 0), Track::Created);
    }
    assert_eq!(t.len(), keys.len());
    let (lines, _) = t.memory();
    assert!(lines > start && lines >= 2 * keys.len(), "{start} -> {lines} lines");
    for (k, s) in &keys {
        let h = t.hash(k);
        assert_eq!(t.track(k, *s, h, ACK, 1), Track::Tracked);
    }
    for (k, _) in &keys {
        let h = t.hash(k);
        t.remove(k, h);
        assert!(t.get(k, h).is_none());
    }
    assert!(t.is_empty());
}

/// A doubling that gets no memory refuses the new flow as the table's capacity
/// action says (no abort), keeps every flow it has, does not try again for each
/// new flow, and grows once memory is back.
#[test]
fn a_table_that_cannot_grow_refuses_new_flows_as_at_capacity() {
    for (at, refused) in
        [(AtCapacity::FailOpen, Track::FullOpen), (AtCapacity::FailClosed, Track::FullClosed)]
    {
        let mut t = table(1_000_000, at);
        let (lines, _) = t.memory();
        t.limit_lines(lines);
        let key = |n: u32| {
            let a = std::net::Ipv4Addr::from(0xc612_0000 | n);
            FlowKey::tcp((a.into(), 40000), (B.parse().unwrap(), 443), 0)
        };
        let room = (lines / 2) as u32;
        for n in 0..room {
            let (k, s) = key(n);
            let h = t.hash(&k);
            assert_eq!(t.track(&k, s, h, SYN, 0), Track::Created, "flow {n}");
        }
        for n in room..room + 3 {
            let (k, s) = key(n);
            let h = t.hash(&k);
            assert_eq!(t.track(&k, s, h, SYN, 0), refused);
            assert!(t.get(&k, h).is_none());
        }
        // Every flow it had is still there and tracked.
        for n in 0..room {
            let (k, s) = key(n);
            let h = t.hash(&k);
            assert_eq!(t.track(&k, s, h, ACK, 1), Track::Tracked, "flow {n}");
        }
        assert_eq!(t.len(), room as usize);
        // Memory comes back: after GROW_RETRY_AFTER refusals it is tried again.
        t.limit_lines(usize::MAX);
        let mut refusals = 3;
        let mut n = room + 3;
        loop {
            let (k, s) = key(n);
            let h = t.hash(&k);
            let track = t.track(&k, s, h, SYN, 2);
            n += 1;
            if track == Track::Created {
                break;
            }
            assert_eq!(track, refused);
            refusals += 1;
            assert!(refusals <= table::GROW_RETRY_AFTER + 1, "never tried again");
        }
        assert_eq!(refusals, table::GROW_RETRY_AFTER + 1);
        assert!(t.memory().0 > lines, "it grew");
    }
}

/// What a table of a million flows takes at most: 2 Mi lines of 64 bytes, and
/// the 1 Mi lines it doubled from, for the moment of the copy.
#[test]
fn peak_table_bytes_of_a_million_flows() {
    assert_eq!(peak_table_bytes(1_000_000), (128 + 64) << 20);
    assert_eq!(peak_table_bytes(1), 3 * 64);
}

/// A preallocated table has its whole size at start and never doubles (no
/// rehash pause under load).
#[test]
fn a_preallocated_table_never_doubles() {
    let cap = 20_000;
    let mut t = FlowTable::with_room(cap, cap, AtCapacity::FailClosed, Timeouts::default(), hasher(), 0);
    let (lines, _) = t.memory();
    assert_eq!(lines, table::lines_for(cap));
    for n in 0..cap as u32 {
        let a = std::net::Ipv4Addr::from(0xc612_0000 | n);
        let (k, s) = FlowKey::tcp((a.into(), 40000), (B.parse().unwrap(), 443), 0);
        let h = t.hash(&k);
        assert_eq!(t.track(&k, s, h, SYN, 0), Track::Created);
    }
    assert_eq!(t.memory().0, lines);
    let (k, s) = FlowKey::tcp(("198.19.0.1".parse().unwrap(), 1), (B.parse().unwrap(), 443), 0);
    let h = t.hash(&k);
    assert_eq!(t.track(&k, s, h, SYN, 0), Track::FullClosed, "at capacity");
}
