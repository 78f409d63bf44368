//! The flow table's storage: open addressing with linear probing, one flow per
//! 64-byte cache line.
//!
//! ```text
//!   line i = hash & mask ─► probe i, i+1, … until the key or an empty line
//!   ┌──────────┬──────────┬──────┬────────┬──────────────────────────┬─────────────────────┐
//!   │ lo (2 w) │ hi (2 w) │ meta │ splice │ last_seen_ms:48 st:8 b:8 │ wheel_due:32 pkts:32 │
//!   └──────────┴──────────┴──────┴────────┴──────────────────────────┴─────────────────────┘
//!     meta = 0: empty (a tracked key always holds its protocol, 6 or 17, in meta)
//! ```
//!
//! * At most half the lines are used (the table doubles first), so a lookup
//!   probes 1.5 lines on average at the fullest; the first two are prefetched for
//!   a whole burst before any is probed ([`Slots::prefetch`]: measured, the
//!   second line adds 10 % at a million flows and costs nothing at a thousand).
//! * Removal shifts the following entries of the run back (no tombstones), so
//!   probe lengths never grow with churn.
//! * The lines come from [`Lines`]: DPDK hugepages when the EAL has them,
//!   otherwise (from 2 MiB) anonymous memory with transparent huge pages asked
//!   for. A doubling that gets no memory leaves the table as it is, and the new
//!   flow is refused as at capacity ([`Slots::insert`]); it is tried again after
//!   [`GROW_RETRY_AFTER`] refusals.
//! * The index takes the hash's low bits; steering takes its high bits
//!   (`steer::owner`), so a worker's flows spread over all of its lines.

use tlsgate_drivers::lines::{Backing, Line, Lines};

use super::{Flow, FlowKey, FlowState, PackedSplice, Side, TcpState};

/// After a doubling found no memory, the new flows refused before it is tried
/// again.
pub(super) const GROW_RETRY_AFTER: u32 = 4096;

/// Lines of a table that holds `flows` flows at most half full (a power of two).
pub(super) fn lines_for(flows: usize) -> usize {
    flows.max(1).saturating_mul(2).next_power_of_two()
}

pub(super) struct Slots {
    lines: Lines,
    mask: usize,
    len: usize,
    /// A doubling found no memory: new flows refused before it is tried again
    /// (each new flow would try it otherwise).
    retry_in: u32,
    /// Lines it may grow to (tests stand in for an exhausted memory with it).
    max_lines: usize,
}

impl Slots {
    /// Room for `flows` flows before it first grows.
    pub fn with_room(flows: usize) -> Slots {
        let n = lines_for(flows);
        let lines = Lines::try_zeroed(n).expect("memory for the flow table");
        Slots { lines, mask: n - 1, len: 0, retry_in: 0, max_lines: usize::MAX }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// As if memory ran out past `lines` lines.
    #[cfg(test)]
    pub fn limit_lines(&mut self, lines: usize) {
        self.max_lines = lines;
    }

    /// Lines allocated.
    pub fn lines(&self) -> usize {
        self.lines.len()
    }

    /// Where the lines are.
    pub fn backing(&self) -> Backing {
        self.lines.backing()
    }

    /// Brings the first two lines `hash` probes into the cache.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        let i = hash as usize & self.mask;
        self.lines.prefetch(i);
        self.lines.prefetch((i + 1) & self.mask);
    }

    /// The line holding `key`.
    #[inline]
    pub fn find(&self, key: &FlowKey, hash: u64) -> Option<usize> {
        let mut i = hash as usize & self.mask;
        loop {
            let l = &self.lines[i];
            if l[4] == 0 {
                return None;
            }
            if holds(l, key) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The flow in line `i` (one that [`Slots::find`] returned).
    #[inline]
    pub fn get(&self, i: usize) -> Flow {
        load(&self.lines[i])
    }

    /// Writes `f` back to line `i`, which holds its key: the three words that
    /// change (the key's five never do once a flow is in).
    #[inline]
    pub fn set(&mut self, i: usize, f: &Flow) {
        let l = &mut self.lines[i];
        debug_assert!(holds(l, &f.key));
        let [splice, seen, due] = state_words(f);
        l[5] = splice;
        l[6] = seen;
        l[7] = due;
    }

    /// Adds a flow whose key is not in the table (`hash` is its `rehash`);
    /// `rehash` gives the hash of a key when the table doubles. False, adding
    /// nothing, when the table had to double and got no memory.
    pub fn insert(&mut self, hash: u64, f: &Flow, rehash: impl Fn(&FlowKey) -> u64) -> bool {
        debug_assert!(f.key.meta != 0 && hash == rehash(&f.key));
        if (self.len + 1) * 2 > self.lines.len() && !self.grow(&rehash) {
            return false;
        }
        let mut i = hash as usize & self.mask;
        while self.lines[i][4] != 0 {
            i = (i + 1) & self.mask;
        }
        store(&mut self.lines[i], f);
        self.len += 1;
        true
    }

    /// Removes the flow in line `i`, moving later entries of its run back into
    /// the gap where their probe would otherwise stop short.
    pub fn remove_at(&mut self, mut i: usize, rehash: impl Fn(&FlowKey) -> u64) {
        let mask = self.mask;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if self.lines[j][4] == 0 {
                break;
            }
            let home = rehash(&key_of(&self.lines[j])) as usize & mask;
            // The entry at j may fill the gap at i unless its home lies cyclically
            // in (i, j]: then a probe for it starts after the gap.
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.lines[i] = self.lines[j];
                i = j;
            }
        }
        self.lines[i] = [0; 8];
        self.len -= 1;
    }

    fn grow(&mut self, rehash: &impl Fn(&FlowKey) -> u64) -> bool {
        if self.retry_in > 0 {
            self.retry_in -= 1;
            return false;
        }
        let n = self.lines.len() * 2;
        let Some(bigger) = (n <= self.max_lines).then(|| Lines::try_zeroed(n)).flatten() else {
            tracing::warn!(
                flows = self.len,
                lines = n,
                "flow table cannot grow: no memory; new flows are refused as at capacity"
            );
            self.retry_in = GROW_RETRY_AFTER;
            return false;
        };
        let old = std::mem::replace(&mut self.lines, bigger);
        self.mask = n - 1;
        for l in old.iter().filter(|l| l[4] != 0) {
            let mut i = rehash(&key_of(l)) as usize & self.mask;
            while self.lines[i][4] != 0 {
                i = (i + 1) & self.mask;
            }
            self.lines[i] = *l;
        }
        // Once per doubling, never per packet.
        tracing::info!(
            flows = self.len,
            lines = n,
            mib = (n * 64) >> 20,
            backing = ?self.lines.backing(),
            "flow table grew"
        );
        true
    }
}

#[inline(always)]
fn holds(l: &Line, k: &FlowKey) -> bool {
    l[4] == k.meta
        && l[0] == k.lo as u64
        && l[1] == (k.lo >> 64) as u64
        && l[2] == k.hi as u64
        && l[3] == (k.hi >> 64) as u64
}

#[inline(always)]
fn key_of(l: &Line) -> FlowKey {
    FlowKey {
        lo: u128::from(l[0]) | (u128::from(l[1]) << 64),
        hi: u128::from(l[2]) | (u128::from(l[3]) << 64),
        meta: l[4],
    }
}

const MS_BITS: u32 = 48;
const MS_MASK: u64 = (1 << MS_BITS) - 1;

// Bits of the flags byte.
const HI_INITIATED: u8 = 1;
const FIN_LO: u8 = 2;
const FIN_HI: u8 = 4;
const INTERCEPTED: u8 = 8;
const HELD: u8 = 16;

fn state_code(s: FlowState) -> u64 {
    match s {
        FlowState::Datagram => 0,
        FlowState::Tcp(TcpState::SynSent) => 1,
        FlowState::Tcp(TcpState::SynReceived) => 2,
        FlowState::Tcp(TcpState::Established) => 3,
        FlowState::Tcp(TcpState::Closing) => 4,
        FlowState::Tcp(TcpState::Closed) => 5,
    }
}

fn state_of(code: u64) -> FlowState {
    match code {
        1 => FlowState::Tcp(TcpState::SynSent),
        2 => FlowState::Tcp(TcpState::SynReceived),
        3 => FlowState::Tcp(TcpState::Established),
        4 => FlowState::Tcp(TcpState::Closing),
        5 => FlowState::Tcp(TcpState::Closed),
        _ => FlowState::Datagram,
    }
}

#[inline]
pub(super) fn load(l: &Line) -> Flow {
    let bits = (l[6] >> 56) as u8;
    Flow {
        key: key_of(l),
        state: state_of(l[6] >> MS_BITS & 0xff),
        initiator: if bits & HI_INITIATED != 0 { Side::Hi } else { Side::Lo },
        fin: [bits & FIN_LO != 0, bits & FIN_HI != 0],
        last_seen_ms: l[6] & MS_MASK,
        packets: (l[7] >> 32) as u32,
        wheel_due: l[7] as u32,
        intercepted: bits & INTERCEPTED != 0,
        held: bits & HELD != 0,
        splice: PackedSplice(l[5]),
    }
}

#[inline]
pub(super) fn store(l: &mut Line, f: &Flow) {
    let [splice, seen, due] = state_words(f);
    *l = [
        f.key.lo as u64,
        (f.key.lo >> 64) as u64,
        f.key.hi as u64,
        (f.key.hi >> 64) as u64,
        f.key.meta,
        splice,
        seen,
        due,
    ];
}

/// Words 5 to 7 of a flow's line.
#[inline(always)]
fn state_words(f: &Flow) -> [u64; 3] {
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    let bits = flag(f.initiator == Side::Hi, HI_INITIATED)
        | flag(f.fin[0], FIN_LO)
        | flag(f.fin[1], FIN_HI)
        | flag(f.intercepted, INTERCEPTED)
        | flag(f.held, HELD);
    [
        f.splice.0,
        (f.last_seen_ms & MS_MASK) | (state_code(f.state) << MS_BITS) | (u64::from(bits) << 56),
        u64::from(f.wheel_due) | (u64::from(f.packets) << 32),
    ]
}
