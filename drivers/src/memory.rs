//! The `memory` backend: in-process ports for tests and benchmarks.
//!
//! Each port has one RX and one TX queue per worker, bounded lock-free queues of
//! frames. A test holds a [`Wire`] to put frames on a port's RX queues (choosing the
//! queue like a NIC would: see [`Spread`]) and to take what the dataplane
//! transmitted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::{port_role, Backend, Burst, Frame, PortMonitor, PortStats, Queues, NUM_PORTS};

/// A frame of the memory backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemFrame(pub Vec<u8>);

impl Frame for MemFrame {
    fn data(&self) -> &[u8] {
        &self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// How [`Wire::inject`] chooses the RX queue of a frame, like a NIC's RSS would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Every frame to queue 0.
    First,
    /// Frames in turn to each queue (like af_packet's rollover: both directions of a
    /// flow do not land on one queue, so the dataplane must steer).
    RoundRobin,
}

struct PortQ {
    rx: Vec<ArrayQueue<MemFrame>>,
    tx: Vec<ArrayQueue<MemFrame>>,
    next_rx: AtomicUsize,
    rx_dropped: AtomicU64,
    ipackets: AtomicU64,
    ibytes: AtomicU64,
    opackets: AtomicU64,
    obytes: AtomicU64,
    oerrors: AtomicU64,
}

struct Shared {
    ports: [PortQ; NUM_PORTS],
    spread: Spread,
}

/// Memory backend with `workers` queues per port.
pub struct MemoryBackend {
    shared: Arc<Shared>,
    workers: usize,
    taken: bool,
}

/// The test's end of the ports.
#[derive(Clone)]
pub struct Wire {
    shared: Arc<Shared>,
}

/// A worker's queues of the memory backend.
pub struct MemQueues {
    shared: Arc<Shared>,
    queue: usize,
}

impl MemoryBackend {
    /// Ports with `workers` queues each, each queue holding up to `depth` frames.
    pub fn new(workers: usize, depth: usize, spread: Spread) -> (Self, Wire) {
        assert!(workers > 0 && depth > 0);
        let port = || PortQ {
            rx: (0..workers).map(|_| ArrayQueue::new(depth)).collect(),
            tx: (0..workers).map(|_| ArrayQueue::new(depth)).collect(),
            next_rx: AtomicUsize::new(0),
            rx_dropped: AtomicU64::new(0),
            ipackets: AtomicU64::new(0),
            ibytes: AtomicU64::new(0),
            opackets: AtomicU64::new(0),
            obytes: AtomicU64::new(0),
            oerrors: AtomicU64::new(0),
        };
        let shared = Arc::new(Shared { ports: [port(), port()], spread });
        (MemoryBackend { shared: shared.clone(), workers, taken: false }, Wire { shared })
    }
}

impl Wire {
    /// Puts a frame on `port`'s receive side. Returns false (and counts it as
    /// `imissed`) when the chosen RX queue is full, like a NIC.
    pub fn inject(&self, port: usize, frame: Vec<u8>) -> bool {
        let p = &self.shared.ports[port];
        let q = match self.shared.spread {
            Spread::First => 0,
            Spread::RoundRobin => p.next_rx.fetch_add(1, Ordering::Relaxed) % p.rx.len(),
        };
        let len = frame.len() as u64;
        if p.rx[q].push(MemFrame(frame)).is_err() {
            p.rx_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        p.ipackets.fetch_add(1, Ordering::Relaxed);
        p.ibytes.fetch_add(len, Ordering::Relaxed);
        true
    }

    /// Takes every frame transmitted on `port` so far, queue by queue.
    pub fn take_tx(&self, port: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for q in &self.shared.ports[port].tx {
            while let Some(f) = q.pop() {
                out.push(f.0);
            }
        }
        out
    }

    /// Frames waiting in `port`'s RX queues (not yet polled by a worker).
    pub fn rx_pending(&self, port: usize) -> usize {
        self.shared.ports[port].rx.iter().map(|q| q.len()).sum()
    }
}

impl Queues for MemQueues {
    type Frame = MemFrame;

    fn rx_burst(&mut self, port: usize, out: &mut Burst<MemFrame>) {
        let q = &self.shared.ports[port].rx[self.queue];
        while !out.is_full() {
            match q.pop() {
                Some(f) => out.push(f),
                None => break,
            }
        }
    }

    fn alloc(&mut self, len: usize) -> Option<MemFrame> {
        Some(MemFrame(vec![0; len]))
    }

    fn tx_burst(&mut self, port: usize, frames: &mut Burst<MemFrame>) -> usize {
        let p = &self.shared.ports[port];
        let q = &p.tx[self.queue];
        let mut sent = 0;
        let mut unsent = Burst::new();
        for f in frames.drain(..) {
            let len = f.0.len() as u64;
            match q.push(f) {
                Ok(()) => {
                    sent += 1;
                    p.opackets.fetch_add(1, Ordering::Relaxed);
                    p.obytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(f) => {
                    p.oerrors.fetch_add(1, Ordering::Relaxed);
                    unsent.push(f);
                }
            }
        }
        *frames = unsent;
        sent
    }
}

struct MemMonitor(Arc<Shared>);

impl PortMonitor for MemMonitor {
    fn port_stats(&self) -> Vec<PortStats> {
        self.0
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortStats {
                port: i as u32,
                role: port_role(i).into(),
                device: format!("memory{i}"),
                link_up: true,
                ipackets: p.ipackets.load(Ordering::Relaxed),
                ibytes: p.ibytes.load(Ordering::Relaxed),
                opackets: p.opackets.load(Ordering::Relaxed),
                obytes: p.obytes.load(Ordering::Relaxed),
                imissed: p.rx_dropped.load(Ordering::Relaxed),
                oerrors: p.oerrors.load(Ordering::Relaxed),
                ..Default::default()
            })
            .collect()
    }
}

impl Backend for MemoryBackend {
    type Queues = MemQueues;

    fn name(&self) -> &'static str {
        "memory"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn take_queues(&mut self) -> Vec<MemQueues> {
        assert!(!self.taken, "queues are handed out once");
        self.taken = true;
        (0..self.workers).map(|queue| MemQueues { shared: self.shared.clone(), queue }).collect()
    }

    fn monitor(&self) -> Arc<dyn PortMonitor> {
        Arc::new(MemMonitor(self.shared.clone()))
    }

    fn symmetric_rss(&self) -> bool {
        self.workers == 1 || self.shared.spread == Spread::First
    }

    fn launch<F>(&self, f: F)
    where
        F: Fn(usize) + Sync,
    {
        std::thread::scope(|s| {
            for w in 1..self.workers {
                let f = &f;
                s.spawn(move || f(w));
            }
            f(0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_flow_through_queues() {
        let (mut be, wire) = MemoryBackend::new(2, 4, Spread::RoundRobin);
        let mut qs = be.take_queues();
        for i in 0..5u8 {
            let ok = wire.inject(0, vec![i; 60]);
            assert_eq!(ok, i < 8);
        }
        let mut b = Burst::new();
        qs[0].rx_burst(0, &mut b);
        assert_eq!(b.len(), 3, "round robin puts frames 0, 2, 4 on queue 0");
        assert_eq!(b[1].0[0], 2);
        let sent = qs[0].tx_burst(1, &mut b);
        assert_eq!((sent, b.len()), (3, 0));
        assert_eq!(wire.take_tx(1).len(), 3);
        let st = be.monitor().port_stats();
        assert_eq!(st[0].ipackets, 5);
        assert_eq!(st[1].opackets, 3);
    }

    #[test]
    fn full_tx_queue_leaves_frames_with_the_caller() {
        let (mut be, _wire) = MemoryBackend::new(1, 2, Spread::First);
        let mut qs = be.take_queues();
        let mut b: Burst<MemFrame> = (0..3u8).map(|i| MemFrame(vec![i])).collect();
        assert_eq!(qs[0].tx_burst(0, &mut b), 2);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, vec![2]);
    }
}
