//! Per-worker flow table: symmetric 5-tuple keys, TCP state tracking, idle timeouts
//! per state, a capacity cap with a fail-open / fail-closed action.
//!
//! ```text
//!   frame ─► FlowKey::new (canonical: lower (addr, port) first) ─► hash (symmetric)
//!                 │                                                  │
//!                 ▼                                                  ▼
//!   open addressing, one flow per cache line ([`table`]; hash computed once,
//!   reused for steering; the burst's lines prefetched in the classify phase)
//!                 │ expiry
//!                 ▼
//!   timer wheel of 1-second slots, lazy: a flow is checked when its slot comes due
//!   and rescheduled if it was touched meanwhile
//! ```
//!
//! Nothing allocates per packet: the table and the wheel's slots are reserved up
//! front and only grow to their high-water mark.

use serde::Deserialize;

use crate::wire::parse::{proto, tcp_flags};

mod key;
mod table;
use crate::Error;
pub use key::{FlowHasher, FlowKey, Side};
use table::Slots;
pub use tlsgate_drivers::lines::Backing;

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

/// A tracked flow, as read from its line of the table ([`table`] packs it into
/// 64 bytes).
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
    pub packets: u32,
    /// Wheel tick (second) the flow is scheduled at.
    wheel_due: u32,
    /// Terminated by the intercept path: its segments never take the fast path.
    pub intercepted: bool,
    /// Intercepted and its splice alive: not expired.
    pub held: bool,
    /// The live splice of an intercepted flow ([`Flow::splice`]).
    splice: PackedSplice,
}

/// A handle on a splice in a worker's splice slots: the slot and its generation
/// (a slot reused by a later splice has another one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpliceId {
    /// Slot index.
    pub slot: u32,
    /// Generation of the slot when the splice was put there.
    pub generation: u32,
}

/// A flow entry's [`SpliceId`] in one word (0: none): the entry fits one cache
/// line, which a table of a million flows feels in its cache misses. Generations
/// start at 1 and skip 0 when they wrap ([`SpliceId`]'s slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedSplice(u64);

impl PackedSplice {
    const NONE: PackedSplice = PackedSplice(0);

    fn of(id: SpliceId) -> PackedSplice {
        PackedSplice(u64::from(id.generation) << 32 | u64::from(id.slot))
    }

    fn get(self) -> Option<SpliceId> {
        (self.0 != 0).then_some(SpliceId { slot: self.0 as u32, generation: (self.0 >> 32) as u32 })
    }
}

impl Flow {
    /// The live splice of an intercepted flow (reached from here, so a segment
    /// costs one lookup).
    pub fn splice(&self) -> Option<SpliceId> {
        self.splice.get()
    }
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
    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in [
            ("tcp_syn", self.tcp_syn),
            ("tcp_established", self.tcp_established),
            ("tcp_closing", self.tcp_closing),
            ("tcp_closed", self.tcp_closed),
            ("udp", self.udp),
        ] {
            if v == 0 || v > 86_400 {
                return Err(Error::Invalid(format!("flows.timeouts.{name}: {v} s is outside 1..=86400")));
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
    /// Part of an intercepted flow: its live splice, or `None` for a tombstone.
    Intercepted(Option<SpliceId>),
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

/// Bytes a table of `flows` flows at most takes, at the moment it doubles the
/// last time (the old table and the new one): 64 bytes a line, twice as many
/// lines as flows, rounded up to a power of two.
pub fn peak_table_bytes(flows: usize) -> u64 {
    let lines = table::lines_for(flows) as u64;
    lines * 64 + lines / 2 * 64
}

/// The per-worker flow table.
pub struct FlowTable {
    table: Slots,
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
    hasher: FlowHasher,
}

impl FlowTable {
    /// A table for at most `cap` flows.
    ///
    /// It starts with room for [`INITIAL_FLOWS`] and doubles as flows arrive, rather
    /// than reserving `cap` up front: a table sized for a million flows holding a
    /// thousand spreads them over hundreds of megabytes, and every lookup then
    /// misses the cache and the TLB (measured: 3x slower forwarding). Growth
    /// rehashes once per doubling, so after warm-up nothing allocates. The table
    /// is kept at most half full (`table`).
    pub fn new(
        cap: usize,
        at_capacity: AtCapacity,
        timeouts: Timeouts,
        hasher: FlowHasher,
        now_ms: u64,
    ) -> Self {
        Self::with_room(cap, cap.min(INITIAL_FLOWS), at_capacity, timeouts, hasher, now_ms)
    }

    /// A table for at most `cap` flows with room for `room` before it first
    /// grows: `cap` itself never grows (`flows.preallocate`). With huge pages a
    /// table sized for a million flows holding a thousand forwards as fast as a
    /// small one (measured: 10.4 against 10.0 Mpps).
    pub fn with_room(
        cap: usize,
        room: usize,
        at_capacity: AtCapacity,
        timeouts: Timeouts,
        hasher: FlowHasher,
        now_ms: u64,
    ) -> Self {
        FlowTable {
            hasher,
            table: Slots::with_room(room.min(cap)),
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

    /// The keyed hash of a flow key (the table's and the steering's).
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key)
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Cache lines the table holds now (64 bytes each), and where they are.
    pub fn memory(&self) -> (usize, Backing) {
        (self.table.lines(), self.table.backing())
    }

    /// Looks a flow up.
    pub fn get(&self, key: &FlowKey, hash: u64) -> Option<Flow> {
        self.table.find(key, hash).map(|i| self.table.get(i))
    }

    /// As if memory ran out once the table holds `lines` lines.
    #[cfg(test)]
    pub(crate) fn limit_lines(&mut self, lines: usize) {
        self.table.limit_lines(lines);
    }

    /// Brings the lines a lookup of `hash` starts at into the cache: called for
    /// each frame of a burst before the burst's lookups run ([`FlowTable::track`]).
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        self.table.prefetch(hash);
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
        if let Some(i) = self.table.find(key, hash) {
            let mut f = self.table.get(i);
            let verdict = self.track_existing(&mut f, key, side, flags, now_ms);
            self.table.set(i, &f);
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
            splice: PackedSplice::NONE,
        };
        flow.wheel_due = self.schedule(*key, self.due_of(&flow)) as u32;
        let hasher = &self.hasher;
        if !self.table.insert(hash, &flow, |k| hasher.hash(k)) {
            // The table could not double (no memory): as full.
            return match self.at_capacity {
                AtCapacity::FailOpen => Track::FullOpen,
                AtCapacity::FailClosed => Track::FullClosed,
            };
        }
        self.created += 1;
        Track::Created
    }

    /// [`FlowTable::track`] for a flow in the table (`f`, written back after).
    #[inline(always)]
    fn track_existing(&mut self, f: &mut Flow, key: &FlowKey, side: Side, flags: u8, now_ms: u64) -> Track {
        let is_tcp = key.proto() == proto::TCP;
        if f.intercepted && !f.held {
            // A tombstone: its splice has ended. It is there to catch the old
            // connection's late segments, which are dropped and never extend it.
            // A fresh SYN is a new connection on a reused 4-tuple: it starts a
            // new flow at once, decided again (never dropped, never stalled).
            if !is_tcp || flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) != tcp_flags::SYN {
                return Track::Intercepted(None);
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
                splice: PackedSplice::NONE,
            };
            let due = (now_ms / 1000) + self.timeouts.tcp_syn as u64 + 1;
            if due < u64::from(f.wheel_due) {
                let tick = due.clamp(self.wheel_tick, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
                f.wheel_due = tick as u32;
                self.wheel[(tick % WHEEL_SLOTS as u64) as usize].push(*key);
            }
            self.created += 1;
            self.reused += 1;
            return Track::Created;
        }
        f.last_seen_ms = now_ms;
        f.packets = f.packets.saturating_add(1);
        let verdict = if f.intercepted { Track::Intercepted(f.splice.get()) } else { Track::Tracked };
        if is_tcp {
            let before = f.state;
            tcp_advance(f, side, flags);
            if f.state != before {
                // A shorter timeout must not wait for a slot scheduled far away.
                let due = (now_ms / 1000) + self.timeouts.of(f.state) + 1;
                if due < u64::from(f.wheel_due) {
                    let tick = due.clamp(self.wheel_tick, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
                    f.wheel_due = tick as u32;
                    self.wheel[(tick % WHEEL_SLOTS as u64) as usize].push(*key);
                }
            }
        }
        verdict
    }

    /// Marks a flow as intercepted (its packets go to the splice from now on). It
    /// does not expire while its splice lives (the splice has its own timeouts);
    /// [`FlowTable::splice_ended`] starts its tombstone's timeout.
    pub fn set_intercepted(&mut self, key: &FlowKey, hash: u64, splice: SpliceId) {
        self.update(key, hash, |f| {
            f.intercepted = true;
            f.held = true;
            f.splice = PackedSplice::of(splice);
        });
    }

    /// Forgets a flow (a SYN refused by admission: nothing is kept for it).
    pub fn remove(&mut self, key: &FlowKey, hash: u64) {
        if let Some(i) = self.table.find(key, hash) {
            let hasher = &self.hasher;
            self.table.remove_at(i, |k| hasher.hash(k));
        }
    }

    /// Makes a flow a tombstone at once, without a splice (a SYN the policy
    /// blocked): its later segments are dropped, and it expires with its state's
    /// timeout.
    pub fn set_tombstone(&mut self, key: &FlowKey, hash: u64) {
        self.update(key, hash, |f| {
            f.intercepted = true;
            f.held = false;
            f.splice = PackedSplice::NONE;
        });
    }

    /// The splice of an intercepted flow ended: the flow stays as a tombstone for
    /// its state's timeout from now.
    pub fn splice_ended(&mut self, key: &FlowKey, hash: u64, now_ms: u64) {
        self.update(key, hash, |f| {
            f.held = false;
            f.splice = PackedSplice::NONE;
            f.last_seen_ms = now_ms;
        });
    }

    /// Changes the flow of `key`, if it is in the table.
    fn update(&mut self, key: &FlowKey, hash: u64, change: impl FnOnce(&mut Flow)) {
        if let Some(i) = self.table.find(key, hash) {
            let mut f = self.table.get(i);
            change(&mut f);
            self.table.set(i, &f);
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
            let hash = self.hasher.hash(&key);
            let Some(i) = self.table.find(&key, hash) else { continue };
            let mut f = self.table.get(i);
            if u64::from(f.wheel_due) != self.wheel_tick {
                // Stale: the flow was rescheduled to another slot since.
                continue;
            }
            let due = if f.held {
                now_s + self.timeouts.of(f.state) + 1
            } else {
                (f.last_seen_ms / 1000) + self.timeouts.of(f.state) + 1
            };
            if due <= now_s {
                let hasher = &self.hasher;
                self.table.remove_at(i, |k| hasher.hash(k));
                removed += 1;
            } else {
                // Touched since it was scheduled: wait again.
                let tick = due.clamp(self.wheel_tick + 1, self.wheel_tick + WHEEL_SLOTS as u64 - 1);
                f.wheel_due = tick as u32;
                self.table.set(i, &f);
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
mod tests;
