//! Per-worker flow table: symmetric 5-tuple keys, TCP state tracking, idle timeouts
//! per state, a capacity cap with a fail-open / fail-closed action.
//!
//! ```text
//!   frame ─► FlowKey::new (canonical: lower (addr, port) first) ─► hash (symmetric)
//!                 │                                                  │
//!                 ▼                                                  ▼
//!   hashbrown HashTable<Flow> (hash computed once, reused for steering)
//!                 │ expiry
//!                 ▼
//!   timer wheel of 1-second slots, lazy: a flow is checked when its slot comes due
//!   and rescheduled if it was touched meanwhile
//! ```
//!
//! Nothing allocates per packet: the table and the wheel's slots are reserved up
//! front and only grow to their high-water mark.

use hashbrown::HashTable;
use serde::Deserialize;

use crate::parse::{proto, tcp_flags, Parsed};

/// A symmetric flow key: both directions of a connection give the same key.
///
/// Three whole words (two addresses, then ports, protocol and VLAN packed into one
/// `u64`): built, compared and hashed without byte-wise writes being read back as
/// wider words, which stalls store forwarding on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Address of the lower (address, port) endpoint.
    pub lo: u128,
    /// Address of the higher endpoint.
    pub hi: u128,
    /// `lo_port | hi_port << 16 | proto << 32 | vlan << 40 | ipv6 << 56`.
    pub meta: u64,
}

/// Which endpoint sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The `lo` endpoint.
    Lo,
    /// The `hi` endpoint.
    Hi,
}

impl FlowKey {
    /// Key and sending side of a parsed packet. Fragments use the address pair alone
    /// (later fragments carry no ports), so all fragments of a datagram agree.
    #[inline]
    pub fn of(p: &Parsed) -> (FlowKey, Side) {
        Self::with_addrs(p, p.src, p.dst)
    }

    /// As [`FlowKey::of`], reading the addresses again from the frame `p` was parsed
    /// from: on the hot path that is faster than reading back the parser's freshly
    /// written fields (a store-forwarding stall on the wide load).
    #[inline]
    pub fn of_frame(p: &Parsed, frame: &[u8]) -> (FlowKey, Side) {
        let l3 = usize::from(p.l3_offset);
        let (src, dst) = match p.l3 {
            crate::parse::L3::V6 => match (frame.get(l3 + 8..l3 + 24), frame.get(l3 + 24..l3 + 40)) {
                (Some(s), Some(d)) => (
                    u128::from_be_bytes(s.try_into().unwrap_or_default()),
                    u128::from_be_bytes(d.try_into().unwrap_or_default()),
                ),
                _ => (p.src, p.dst),
            },
            _ => match frame.get(l3 + 12..l3 + 20) {
                Some(a) => (
                    u128::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])),
                    u128::from(u32::from_be_bytes([a[4], a[5], a[6], a[7]])),
                ),
                None => (p.src, p.dst),
            },
        };
        Self::with_addrs(p, src, dst)
    }

    #[inline(always)]
    fn with_addrs(p: &Parsed, src: u128, dst: u128) -> (FlowKey, Side) {
        let (sp, dp) = if p.fragment { (0, 0) } else { (p.src_port, p.dst_port) };
        let src_first = (src, sp) <= (dst, dp);
        let (lo, hi, lo_port, hi_port, side) =
            if src_first { (src, dst, sp, dp, Side::Lo) } else { (dst, src, dp, sp, Side::Hi) };
        let v6 = matches!(p.l3, crate::parse::L3::V6);
        let meta = u64::from(lo_port)
            | u64::from(hi_port) << 16
            | u64::from(p.proto) << 32
            | u64::from(p.vlan()) << 40
            | u64::from(v6) << 56;
        (FlowKey { lo, hi, meta }, side)
    }

    /// Port of the `lo` endpoint.
    pub fn lo_port(&self) -> u16 {
        self.meta as u16
    }

    /// Port of the `hi` endpoint.
    pub fn hi_port(&self) -> u16 {
        (self.meta >> 16) as u16
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        (self.meta >> 32) as u8
    }

    /// Innermost VLAN ID.
    pub fn vlan(&self) -> u16 {
        (self.meta >> 40) as u16 & 0x0fff
    }

    /// The sender's and the receiver's addresses and ports of a packet sent by `side`.
    pub fn endpoints(&self, side: Side) -> (std::net::IpAddr, u16, std::net::IpAddr, u16) {
        let ip = |a: u128| -> std::net::IpAddr {
            if self.meta >> 56 & 1 == 1 {
                std::net::Ipv6Addr::from(a).into()
            } else {
                std::net::Ipv4Addr::from(a as u32).into()
            }
        };
        match side {
            Side::Lo => (ip(self.lo), self.lo_port(), ip(self.hi), self.hi_port()),
            Side::Hi => (ip(self.hi), self.hi_port(), ip(self.lo), self.lo_port()),
        }
    }

    /// A fast hash of the canonical key; symmetric because the key is.
    #[inline]
    pub fn hash(&self) -> u64 {
        #[inline(always)]
        fn mix(h: u64, w: u64) -> u64 {
            let x = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^ (x >> 29)
        }
        let mut h = 0x243f_6a88_85a3_08d3;
        h = mix(h, self.lo as u64);
        h = mix(h, (self.lo >> 64) as u64);
        h = mix(h, self.hi as u64);
        h = mix(h, (self.hi >> 64) as u64);
        h = mix(h, self.meta);
        h ^ (h >> 32)
    }
}

/// TCP connection state as seen from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// SYN seen.
    SynSent,
    /// SYN-ACK seen.
    SynReceived,
    /// Handshake complete or data flowing.
    Established,
    /// A FIN seen from one or both sides.
    Closing,
    /// RST seen.
    Closed,
}

/// State of a tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// TCP with its state.
    Tcp(TcpState),
    /// UDP (or another datagram protocol).
    Datagram,
}

/// A tracked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Its key.
    pub key: FlowKey,
    /// Current state.
    pub state: FlowState,
    /// Side that opened it (sent the SYN / first datagram).
    pub initiator: Side,
    /// FIN seen from lo / hi.
    fin: [bool; 2],
    /// Last packet, in ms of the worker clock.
    pub last_seen_ms: u64,
    /// Packets seen.
    pub packets: u64,
    /// Wheel tick (second) the flow is scheduled at.
    wheel_due: u64,
    /// Terminated by the intercept path: its segments never take the fast path.
    pub intercepted: bool,
    /// Intercepted and its splice alive: not expired.
    pub held: bool,
}

/// Idle timeouts, in seconds, per state (`[flows.timeouts]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Handshake not complete (SYN or SYN-ACK seen).
    pub tcp_syn: u32,
    /// Established connection without packets.
    pub tcp_established: u32,
    /// After a FIN.
    pub tcp_closing: u32,
    /// After a RST.
    pub tcp_closed: u32,
    /// UDP and other datagram flows.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { tcp_syn: 30, tcp_established: 3600, tcp_closing: 120, tcp_closed: 10, udp: 60 }
    }
}

impl Timeouts {
    fn of(&self, s: FlowState) -> u64 {
        u64::from(match s {
            FlowState::Tcp(TcpState::SynSent | TcpState::SynReceived) => self.tcp_syn,
            FlowState::Tcp(TcpState::Established) => self.tcp_established,
            FlowState::Tcp(TcpState::Closing) => self.tcp_closing,
            FlowState::Tcp(TcpState::Closed) => self.tcp_closed,
            FlowState::Datagram => self.udp,
        })
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("tcp_syn", self.tcp_syn),
            ("tcp_established", self.tcp_established),
            ("tcp_closing", self.tcp_closing),
            ("tcp_closed", self.tcp_closed),
            ("udp", self.udp),
        ] {
            if v == 0 || v > 86_400 {
                return Err(format!("flows.timeouts.{name}: {v} s is outside 1..=86400"));
            }
        }
        Ok(())
    }
}

/// What to do with a new flow when the table is full.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AtCapacity {
    /// Forward it untracked and raise the alarm counter (the default: a firewall
    /// appliance in bypass mode must not cut traffic).
    #[default]
    FailOpen,
    /// Drop it.
    FailClosed,
}

/// What the table decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Part of a tracked flow (new or existing).
    Tracked,
    /// A new flow was created.
    Created,
    /// Part of an intercepted flow (live splice or tombstone).
    Intercepted,
    /// TCP without a SYN and no state: forward untracked.
    Midstream,
    /// Table full, fail-open: forward untracked.
    FullOpen,
    /// Table full, fail-closed: drop.
    FullClosed,
}

const WHEEL_SLOTS: usize = 4096;

/// Flows a table has room for before it first grows.
pub const INITIAL_FLOWS: usize = 4096;

/// The per-worker flow table.
pub struct FlowTable {
    table: HashTable<Flow>,
    cap: usize,
    at_capacity: AtCapacity,
    timeouts: Timeouts,
    wheel: Vec<Vec<FlowKey>>,
    /// Next wheel tick (second) to process.
    wheel_tick: u64,
    /// Flows removed by timeout since start.
    pub expired: u64,
    /// Flows created since start.
    pub created: u64,
    /// Of those, flows created by a SYN on the 4-tuple of an ended intercepted flow
    /// (its tombstone gave way).
    pub reused: u64,
}

impl FlowTable {
    /// A table for at most `cap` flows.
    ///
    /// It starts with room for [`INITIAL_FLOWS`] and doubles as flows arrive, rather
    /// than reserving `cap` up front: a table sized for a million flows holding a
    /// thousand spreads them over hundreds of megabytes, and every lookup then
    /// misses the cache and the TLB (measured: 3x slower forwarding). Growth
    /// rehashes once per doubling, so after warm-up nothing allocates.
    pub fn new(cap: usize, at_capacity: AtCapacity, timeouts: Timeouts, now_ms: u64) -> Self {
        FlowTable {
            table: HashTable::with_capacity(cap.min(INITIAL_FLOWS)),
            cap,
            at_capacity,
            timeouts,
            wheel: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            wheel_tick: now_ms / 1000,
            expired: 0,
            created: 0,
            reused: 0,
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Looks a flow up.
    pub fn get(&self, key: &FlowKey, hash: u64) -> Option<&Flow> {
        self.table.find(hash, |f| f.key == *key)
    }

    /// Puts `key` in the slot of second `due_s` and returns the tick actually used:
    /// a due time beyond the wheel's horizon waits in the last reachable slot and is
    /// rescheduled from there.
    fn schedule(&mut self, key: FlowKey, due_s: u64) -> u64 {
        let due = due_s.clamp(self.wheel_tick, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
        self.wheel[(due % WHEEL_SLOTS as u64) as usize].push(key);
        due
    }

    fn due_of(&self, f: &Flow) -> u64 {
        (f.last_seen_ms / 1000) + self.timeouts.of(f.state) + 1
    }

    /// Tracks a packet of a TCP or UDP flow (`flags`: TCP flags, 0 for UDP).
    #[inline]
    pub fn track(&mut self, key: &FlowKey, side: Side, hash: u64, flags: u8, now_ms: u64) -> Track {
        let is_tcp = key.proto() == proto::TCP;
        if let Some(f) = self.table.find_mut(hash, |f| f.key == *key) {
            if f.intercepted && !f.held {
                // A tombstone: its splice has ended. It is there to catch the old
                // connection's late segments, which are dropped and never extend it.
                // A fresh SYN is a new connection on a reused 4-tuple: it starts a
                // new flow at once, decided again (never dropped, never stalled).
                if !is_tcp || flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) != tcp_flags::SYN {
                    return Track::Intercepted;
                }
                *f = Flow {
                    key: *key,
                    state: FlowState::Tcp(TcpState::SynSent),
                    initiator: side,
                    fin: [false; 2],
                    last_seen_ms: now_ms,
                    packets: 1,
                    wheel_due: f.wheel_due,
                    intercepted: false,
                    held: false,
                };
                let due = (now_ms / 1000) + self.timeouts.tcp_syn as u64 + 1;
                if due < f.wheel_due {
                    let tick = due.clamp(self.wheel_tick, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
                    f.wheel_due = tick;
                    self.wheel[(tick % WHEEL_SLOTS as u64) as usize].push(*key);
                }
                self.created += 1;
                self.reused += 1;
                return Track::Created;
            }
            f.last_seen_ms = now_ms;
            f.packets += 1;
            let verdict = if f.intercepted { Track::Intercepted } else { Track::Tracked };
            if is_tcp {
                let before = f.state;
                tcp_advance(f, side, flags);
                if f.state != before {
                    // A shorter timeout must not wait for a slot scheduled far away.
                    let due = (now_ms / 1000) + self.timeouts.of(f.state) + 1;
                    if due < f.wheel_due {
                        let tick = due.clamp(self.wheel_tick, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
                        f.wheel_due = tick;
                        self.wheel[(tick % WHEEL_SLOTS as u64) as usize].push(*key);
                    }
                }
            }
            return verdict;
        }
        let state = if is_tcp {
            if flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) != tcp_flags::SYN {
                return Track::Midstream;
            }
            FlowState::Tcp(TcpState::SynSent)
        } else {
            FlowState::Datagram
        };
        if self.table.len() >= self.cap {
            return match self.at_capacity {
                AtCapacity::FailOpen => Track::FullOpen,
                AtCapacity::FailClosed => Track::FullClosed,
            };
        }
        let mut flow = Flow {
            key: *key,
            state,
            initiator: side,
            fin: [false; 2],
            last_seen_ms: now_ms,
            packets: 1,
            wheel_due: 0,
            intercepted: false,
            held: false,
        };
        flow.wheel_due = self.schedule(*key, self.due_of(&flow));
        self.table.insert_unique(hash, flow, |f| f.key.hash());
        self.created += 1;
        Track::Created
    }

    /// Marks a flow as intercepted (its packets go to the splice from now on). It
    /// does not expire while its splice lives (the splice has its own timeouts);
    /// [`FlowTable::splice_ended`] starts its tombstone's timeout.
    pub fn set_intercepted(&mut self, key: &FlowKey, hash: u64) {
        if let Some(f) = self.table.find_mut(hash, |f| f.key == *key) {
            f.intercepted = true;
            f.held = true;
        }
    }

    /// Makes a flow a tombstone at once, without a splice (a SYN the policy
    /// blocked): its later segments are dropped, and it expires with its state's
    /// timeout.
    pub fn set_tombstone(&mut self, key: &FlowKey, hash: u64) {
        if let Some(f) = self.table.find_mut(hash, |f| f.key == *key) {
            f.intercepted = true;
            f.held = false;
        }
    }

    /// The splice of an intercepted flow ended: the flow stays as a tombstone for
    /// its state's timeout from now.
    pub fn splice_ended(&mut self, key: &FlowKey, now_ms: u64) {
        if let Some(f) = self.table.find_mut(key.hash(), |f| f.key == *key) {
            f.held = false;
            f.last_seen_ms = now_ms;
        }
    }

    /// Removes flows idle past their timeout, processing at most `budget` wheel
    /// entries; returns how many flows were removed.
    pub fn expire(&mut self, now_ms: u64, mut budget: usize) -> usize {
        let now_s = now_ms / 1000;
        let mut removed = 0;
        while self.wheel_tick <= now_s && budget > 0 {
            let slot = (self.wheel_tick % WHEEL_SLOTS as u64) as usize;
            let Some(key) = self.wheel[slot].pop() else {
                self.wheel_tick += 1;
                continue;
            };
            budget -= 1;
            let hash = key.hash();
            let Ok(entry) = self.table.find_entry(hash, |f| f.key == key) else { continue };
            let f = entry.get();
            if f.wheel_due != self.wheel_tick {
                // Stale: the flow was rescheduled to another slot since.
                continue;
            }
            let due = if f.held {
                now_s + self.timeouts.of(f.state) + 1
            } else {
                (f.last_seen_ms / 1000) + self.timeouts.of(f.state) + 1
            };
            if due <= now_s {
                entry.remove();
                removed += 1;
            } else {
                // Touched since it was scheduled: wait again. The entry's slot is the
                // current one, so borrow ends before scheduling.
                let tick = due.clamp(self.wheel_tick + 1, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
                entry.into_mut().wheel_due = tick;
                self.wheel[(tick % WHEEL_SLOTS as u64) as usize].push(key);
            }
        }
        self.expired += removed as u64;
        removed
    }
}

fn tcp_advance(f: &mut Flow, side: Side, flags: u8) {
    use TcpState::*;
    let FlowState::Tcp(s) = f.state else { return };
    let syn = flags & tcp_flags::SYN != 0;
    let ack = flags & tcp_flags::ACK != 0;
    let next = if flags & tcp_flags::RST != 0 {
        Closed
    } else if syn && !ack {
        // A new SYN on a finished connection reuses the 4-tuple.
        if matches!(s, Closing | Closed) {
            f.fin = [false; 2];
            f.initiator = side;
            SynSent
        } else {
            s
        }
    } else if flags & tcp_flags::FIN != 0 {
        f.fin[side as usize] = true;
        Closing
    } else {
        match s {
            SynSent if syn && ack && side != f.initiator => SynReceived,
            SynReceived if ack && !syn && side == f.initiator => Established,
            // Data without a clean handshake seen (e.g. a lost SYN-ACK): established.
            SynSent | SynReceived if ack && !syn => Established,
            other => other,
        }
    };
    f.state = FlowState::Tcp(next);
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::craft::Spec;
    use crate::parse::parse;
    use crate::parse::tcp_flags::*;

    const A: &str = "198.18.0.1";
    const B: &str = "198.18.0.2";

    fn pkt(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> Parsed {
        let f = Spec::tcp(src.parse::<IpAddr>().unwrap(), sp, dst.parse().unwrap(), dp, flags).build();
        parse(&f).unwrap()
    }

    fn track(t: &mut FlowTable, p: &Parsed, now: u64) -> Track {
        let (k, s) = FlowKey::of(p);
        t.track(&k, s, k.hash(), p.tcp_flags, now)
    }

    fn table(cap: usize, at: AtCapacity) -> FlowTable {
        FlowTable::new(cap, at, Timeouts::default(), 0)
    }

    #[test]
    fn key_and_hash_are_symmetric() {
        let a = pkt(A, 40000, B, 443, SYN);
        let b = pkt(B, 443, A, 40000, SYN | ACK);
        let (ka, sa) = FlowKey::of(&a);
        let (kb, sb) = FlowKey::of(&b);
        assert_eq!(ka, kb);
        assert_eq!(ka.hash(), kb.hash());
        assert_ne!(sa, sb);
        let c = pkt(A, 40001, B, 443, SYN);
        assert_ne!(FlowKey::of(&c).0.hash(), ka.hash());
    }

    #[test]
    fn handshake_data_fin_rst() {
        let mut t = table(10, AtCapacity::FailOpen);
        assert_eq!(track(&mut t, &pkt(A, 1000, B, 80, SYN), 0), Track::Created);
        let (k, _) = FlowKey::of(&pkt(A, 1000, B, 80, SYN));
        let st = |t: &FlowTable| t.get(&k, k.hash()).unwrap().state;
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
        t.set_intercepted(&k, k.hash());
        // Far beyond the SYN timeout (30 s) and the established one (3600 s): held.
        for s in [60, 4000, 90_000] {
            assert_eq!(t.expire(s * 1000, usize::MAX), 0, "at {s} s");
        }
        assert_eq!(t.len(), 1);
        // The splice ends: the tombstone times out with its state from then on.
        t.splice_ended(&k, 90_000_000);
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
        t.set_intercepted(&k, k.hash());
        track(&mut t, &pkt(A, 1000, B, 443, FIN | ACK), 1_000);
        t.splice_ended(&k, 2_000);
        // Late segments of the old connection: dropped by the caller, and they do not
        // keep the tombstone alive.
        for (at, flags) in [(5_000, ACK), (60_000, FIN | ACK), (100_000, RST)] {
            assert_eq!(track(&mut t, &pkt(B, 443, A, 1000, flags), at), Track::Intercepted);
        }
        assert_eq!(t.get(&k, k.hash()).unwrap().last_seen_ms, 2_000);
        // The client reuses its port: a new flow, decided again.
        assert_eq!(track(&mut t, &syn, 101_000), Track::Created);
        let f = t.get(&k, k.hash()).unwrap();
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
        t.set_tombstone(&k, k.hash());
        assert_eq!(track(&mut t, &syn, 1_001_000), Track::Created);
        t.set_tombstone(&k, k.hash());
        assert_eq!(t.expire(1_001_000 + 32_000, usize::MAX), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_syn_on_a_live_intercepted_flow_stays_with_its_splice() {
        let mut t = table(10, AtCapacity::FailOpen);
        let syn = pkt(A, 1000, B, 443, SYN);
        track(&mut t, &syn, 0);
        let (k, _) = FlowKey::of(&syn);
        t.set_intercepted(&k, k.hash());
        // A retransmitted SYN while the splice lives goes to the splice.
        assert_eq!(track(&mut t, &syn, 1_000), Track::Intercepted);
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
        for (at, want) in
            [(AtCapacity::FailOpen, Track::FullOpen), (AtCapacity::FailClosed, Track::FullClosed)]
        {
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
        let mut t = FlowTable::new(100, AtCapacity::FailOpen, to, 0);
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
        let mut t = FlowTable::new(10_000, AtCapacity::FailOpen, to, 0);
        for port in 1..=5000u16 {
            let u =
                parse(&Spec::udp(A.parse().unwrap(), port, B.parse().unwrap(), 53, b"q").build()).unwrap();
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
        let mut t = FlowTable::new(10, AtCapacity::FailOpen, to, 0);
        track(&mut t, &pkt(A, 1, B, 80, SYN), 0);
        track(&mut t, &pkt(A, 1, B, 80, ACK), 0);
        for h in 1..24 {
            assert_eq!(t.expire(h * 3_600_000, usize::MAX), 0, "hour {h}");
        }
        assert_eq!(t.expire(86_402_000, usize::MAX), 1);
    }
}
