//! Software steering: both directions of a flow must reach the same worker. Where
//! the NIC cannot hash symmetrically (af_packet's fanout, NICs without symmetric
//! RSS), each worker hashes the flow key itself and hands frames it does not own
//! to their owner, a whole burst at a time, over a lock-free queue per worker.
//!
//! ```text
//!   worker a: classify ─► owner(hash) = b ─► outbound[b] (a burst) ─ full / end of poll ─► inbound[b]
//!   worker b: inbound[b] ─► up to 4 bursts per poll ─► track and forward (already classified)
//! ```

use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;
use tlsgate_drivers::BURST;

use crate::counters::{idx, Local};
use crate::fastpath::Item;

/// A whole burst handed to another worker.
pub type HandoverBurst<F> = ArrayVec<Item<F>, BURST>;

/// Shared among workers: one inbound hand-over queue per worker.
pub struct Steering<F> {
    inbound: Vec<ArrayQueue<HandoverBurst<F>>>,
}

impl<F> Steering<F> {
    /// Queues for `workers` workers, each holding `depth` bursts.
    pub fn new(workers: usize, depth: usize) -> Self {
        Steering { inbound: (0..workers).map(|_| ArrayQueue::new(depth)).collect() }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inbound.len()
    }
}

/// Owner worker of a flow hash (multiply-shift: uniform, no division).
#[inline]
pub fn owner(hash: u64, workers: usize) -> usize {
    (((hash >> 32) * workers as u64) >> 32) as usize
}

/// One worker's end of the steering: its outbound bursts, one per other worker.
pub struct Steer<F> {
    id: usize,
    shared: Arc<Steering<F>>,
    outbound: Vec<HandoverBurst<F>>,
}

impl<F> Steer<F> {
    /// Worker `id`'s end.
    pub fn new(id: usize, shared: Arc<Steering<F>>) -> Self {
        let outbound = (0..shared.workers()).map(|_| ArrayVec::new()).collect();
        Steer { id, shared, outbound }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.outbound.len()
    }

    /// Hands a classified frame to worker `to`.
    #[inline]
    pub fn hand_over(&mut self, to: usize, item: Item<F>, c: &mut Local) {
        c[idx::HANDOVER_OUT] += 1;
        self.outbound[to].push(item);
        if self.outbound[to].is_full() {
            self.send(to, c);
        }
    }

    fn send(&mut self, to: usize, c: &mut Local) {
        let batch = std::mem::take(&mut self.outbound[to]);
        let n = batch.len() as u64;
        if let Err(batch) = self.shared.inbound[to].push(batch) {
            c[idx::DROP_HANDOVER_FULL] += n;
            drop(batch);
        } else {
            c[idx::HANDOVER_BURSTS] += 1;
        }
    }

    /// Sends every partly filled outbound burst (end of a poll).
    pub fn flush(&mut self, c: &mut Local) {
        for to in 0..self.outbound.len() {
            if !self.outbound[to].is_empty() {
                self.send(to, c);
            }
        }
    }

    /// A burst other workers handed to this one, if any.
    pub fn take_inbound(&self, c: &mut Local) -> Option<HandoverBurst<F>> {
        let batch = self.shared.inbound[self.id].pop()?;
        c[idx::HANDOVER_IN] += batch.len() as u64;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_uniform_and_in_range() {
        let mut counts = [0u32; 3];
        let mut h = 0x1234_5678_9abc_def0u64;
        for _ in 0..30_000 {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            counts[owner(h, 3)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(owner(u64::MAX, 1), 0);
    }
}
