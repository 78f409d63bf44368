//! A worker's side of the NIC: its queues, the TX bursts being filled, its
//! counters and the captures running. Every room of the worker (the fast path,
//! the intercept path) sends through here, so what leaves is counted once.
//!
//! ```text
//!   fast path: forward(frame, in_port) ──┐
//!   intercept: alloc + send(port, frame) ─┼─► tx[port] (a burst) ─ full / end of poll ─► tx_burst
//!                                         │        frames the NIC refuses: dropped, counted tx_full
//! ```

use std::sync::Arc;

use tlsgate_drivers::{Burst, Frame, Queues, NUM_PORTS};

use crate::capture::{CaptureFilter, Capturer};
use crate::counters::{idx, Local, RuleHits, COUNT};
use crate::wire::parse::parse;

/// A worker's queues, TX bursts, counters and captures.
pub struct Io<Q: Queues> {
    /// The worker's RX/TX queues on both ports.
    pub queues: Q,
    tx: [Burst<Q::Frame>; NUM_PORTS],
    /// The worker's counters.
    pub c: Local,
    /// Decisions per policy rule.
    pub rules: RuleHits,
    /// Captures running (empty: nothing is copied).
    pub captures: Arc<Vec<CaptureFilter>>,
    /// Where captured frames go.
    pub capturer: Arc<Capturer>,
}

impl<Q: Queues> Io<Q> {
    /// Around `queues`.
    pub fn new(queues: Q, capturer: Arc<Capturer>) -> Self {
        Io {
            queues,
            tx: [Burst::new(), Burst::new()],
            c: [0; COUNT],
            rules: RuleHits::default(),
            captures: Arc::new(Vec::new()),
            capturer,
        }
    }

    /// Queues `frame` on `port`, counted as sent ([`Io::flush_port`] takes back
    /// what the NIC refuses).
    #[inline]
    pub fn send(&mut self, port: usize, frame: Q::Frame) {
        if self.tx[port].is_full() {
            self.flush_port(port);
        }
        self.c[idx::TX_PKTS + port] += 1;
        self.c[idx::TX_BYTES + port] += frame.data().len() as u64;
        self.tx[port].push(frame);
    }

    /// Forwards a frame unchanged out of the other port (bump-in-the-wire).
    #[inline]
    pub fn forward(&mut self, frame: Q::Frame, in_port: usize) {
        self.send(in_port ^ 1, frame);
    }

    /// A frame of `len` bytes to build (counted `no_buffer` when none is left).
    pub fn alloc(&mut self, len: usize) -> Option<Q::Frame> {
        let f = self.queues.alloc(len);
        if f.is_none() {
            self.c[idx::DROP_NO_BUFFER] += 1;
        }
        f
    }

    /// Sends a TX burst; frames the queue had no room for are dropped, as l2fwd
    /// does: holding them would stall RX behind a full TX ring.
    pub fn flush_port(&mut self, port: usize) {
        let tx = &mut self.tx[port];
        if tx.is_empty() {
            return;
        }
        self.queues.tx_burst(port, tx);
        if tx.is_empty() {
            return;
        }
        let unsent = tx.len() as u64;
        let mut unsent_bytes = 0u64;
        for f in tx.drain(..) {
            unsent_bytes += f.data().len() as u64;
        }
        self.c[idx::DROP_TX_FULL] += unsent;
        self.c[idx::TX_PKTS + port] -= unsent;
        self.c[idx::TX_BYTES + port] -= unsent_bytes;
    }

    /// Sends what both TX bursts hold.
    pub fn flush(&mut self) {
        for port in 0..NUM_PORTS {
            self.flush_port(port);
        }
    }

    /// Hands a flow's key-log lines to every capture with a key log that matches
    /// the flow (dropped when none does).
    pub fn capture_keys(
        &self,
        a: std::net::IpAddr,
        ap: u16,
        b: std::net::IpAddr,
        bp: u16,
        lines: Vec<String>,
    ) {
        let lines: String = lines.concat();
        for c in self.captures.iter().filter(|c| c.keylog && c.matches(a, ap, b, bp)) {
            self.capturer.offer_keys(c.id, lines.clone());
        }
    }

    /// Copies `data` for every capture it matches (captures running only).
    #[inline]
    pub fn capture(&self, data: &[u8], port: usize, outbound: bool) {
        if self.captures.is_empty() {
            return;
        }
        let Ok(p) = parse(data) else { return };
        if !p.is_ip() {
            return;
        }
        let (a, b) = (p.src_ip(), p.dst_ip());
        for c in self.captures.iter() {
            if c.matches(a, p.src_port, b, p.dst_port) {
                self.capturer.offer(c.id, port, outbound, data);
            }
        }
    }
}
