//! The worker's splice slots: what a flow entry's [`SpliceId`] reaches. A slot holds
//! an intercepted flow's splice, or a probe (the appliance's own handshake with a
//! server, whose flow is in the flow table like any intercepted one).

use crate::flow::SpliceId;

use super::probe::Probe;
use super::tcp::Splice;

/// What a slot holds.
pub(super) enum Occupant {
    /// An intercepted flow.
    Splice(Box<Splice>),
    /// A probe.
    Probe(Box<Probe>),
}

/// A slot, and a generation that changes each time the slot is taken.
struct Slot {
    generation: u32,
    occupant: Option<Occupant>,
}

/// The slots, reused through a free list.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots taken (reserved, or holding a splice or a probe).
    pub taken: usize,
}

impl Slots {
    /// Takes a slot for an occupant about to be made.
    pub fn reserve(&mut self) -> SpliceId {
        self.taken += 1;
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, occupant: None });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        // Never 0: a flow entry packs "no splice" as 0 (flow::PackedSplice).
        s.generation = s.generation.wrapping_add(1).max(1);
        SpliceId { slot, generation: s.generation }
    }

    /// Puts the occupant in the slot reserved as `id`; false when `id` is stale.
    pub fn put(&mut self, id: SpliceId, occupant: Occupant) -> bool {
        match self.slots.get_mut(id.slot as usize) {
            Some(slot) if slot.generation == id.generation => {
                slot.occupant = Some(occupant);
                true
            }
            _ => false,
        }
    }

    fn at(&mut self, id: SpliceId) -> Option<&mut Occupant> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.occupant.as_mut()
    }

    /// The splice in `id`'s slot, if that slot still holds the splice `id` names.
    pub fn splice(&mut self, id: SpliceId) -> Option<&mut Splice> {
        match self.at(id)? {
            Occupant::Splice(s) => Some(s),
            Occupant::Probe(_) => None,
        }
    }

    /// The probe in `id`'s slot, if that slot still holds the probe `id` names.
    pub fn probe(&mut self, id: SpliceId) -> Option<&mut Probe> {
        match self.at(id)? {
            Occupant::Probe(p) => Some(p),
            Occupant::Splice(_) => None,
        }
    }

    /// The occupant's timer: when it next wants a poll, and its entry on the
    /// worker's timer heap.
    pub fn timer(&mut self, id: SpliceId) -> Option<(&mut u64, &mut u64)> {
        Some(match self.at(id)? {
            Occupant::Splice(s) => (&mut s.poll_at_ms, &mut s.scheduled_ms),
            Occupant::Probe(p) => (&mut p.poll_at_ms, &mut p.scheduled_ms),
        })
    }

    /// Takes the occupant out and frees its slot.
    pub fn take(&mut self, id: SpliceId) -> Option<Occupant> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let occupant = slot.occupant.take()?;
        self.free.push(id.slot);
        self.taken -= 1;
        Some(occupant)
    }
}
