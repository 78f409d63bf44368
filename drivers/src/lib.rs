//! `tlsgate-drivers`: packet I/O for the tlsgate dataplane.
//!
//! ```text
//!             ┌────────────── Backend (one per process) ───────────────┐
//!             │  ports: [inside, outside]   queues: one per worker      │
//!             │  launch(n, |worker| …)      stats(): PortStats per port │
//!             └──────┬───────────────────────────────┬──────────────────┘
//!        take_queues()│ one Queues per worker          │ PortMonitor (any thread)
//!                     ▼                                ▼
//!   worker w: rx_burst(port, &mut Burst) → frames → tx_burst(other port, &mut Burst)
//! ```
//!
//! * [`Queues`] is what a worker holds: queue `w` of every port. Bursts are fixed
//!   arrays ([`Burst`]); frames are owned by the backend ([`Frame`]): a DPDK `Mbuf`
//!   frees itself on drop and goes to the NIC by pointer (zero copy).
//! * Backends: [`dpdk`] (the real one: EAL, ports, queues, mbuf pool, link status,
//!   extended stats), [`memory`] (in-process ports for tests and benchmarks) and
//!   [`pcap`] (frames from a capture file in, frames to a capture file out).
//! * [`pcapfile`] reads and writes classic pcap files; tests and the benchmark
//!   generator use it too.
//!
//! * [`lines`]: zeroed cache-line arrays for lookup tables (the flow table), in
//!   DPDK hugepage memory when the EAL has hugepages.
//!
//! Only the [`dpdk`] and [`lines`] modules contain `unsafe` code; each block says
//! why it is sound.

#![deny(unsafe_code)]

use arrayvec::ArrayVec;

pub mod dpdk;
mod error;
pub mod lines;
pub mod memory;
pub mod pcap;
pub mod pcapfile;

pub use error::{Error, Result};

/// Counters of one port, read from the backend (DPDK: `rte_eth_stats` and
/// xstats). The drivers own this type; the dataplane turns it into the api's
/// `PortStats` for its status answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Port index (0 = inside, 1 = outside).
    pub port: u32,
    /// Role name (`inside`, `outside`).
    pub role: String,
    /// Device name (`net_af_packet0`, `0000:03:00.0`, a pcap file…).
    pub device: String,
    /// Link up.
    pub link_up: bool,
    /// Link speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Frames received by the device.
    pub ipackets: u64,
    /// Frames sent by the device.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames the device dropped because RX queues were full (DPDK `imissed`).
    pub imissed: u64,
    /// RX mbuf allocation failures (DPDK `rx_nombuf`).
    pub rx_nombuf: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Driver-specific extended statistics (DPDK xstats), non-zero ones only.
    pub xstats: std::collections::BTreeMap<String, u64>,
}

/// Frames per burst.
pub const BURST: usize = 32;

/// A burst of frames: a fixed array, never reallocated.
pub type Burst<F> = ArrayVec<F, BURST>;

/// Index of the inside port (clients).
pub const INSIDE: usize = 0;
/// Index of the outside port (servers).
pub const OUTSIDE: usize = 1;
/// Number of ports a bump-in-the-wire drives.
pub const NUM_PORTS: usize = 2;

/// Role name of a port index.
pub fn port_role(port: usize) -> &'static str {
    match port {
        INSIDE => "inside",
        OUTSIDE => "outside",
        _ => "unknown",
    }
}

/// A received frame (or one being built for transmission), owned by its backend.
pub trait Frame: Send + Sized {
    /// The frame's bytes (from the Ethernet header on).
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable (the intercept path rewrites frames in place).
    fn data_mut(&mut self) -> &mut [u8];
}

/// A worker's handle on its queue of every port.
pub trait Queues: Send {
    /// Frame type of the backend.
    type Frame: Frame;
    /// Appends up to `BURST - out.len()` received frames of `port` to `out`.
    fn rx_burst(&mut self, port: usize, out: &mut Burst<Self::Frame>);
    /// Transmits frames from the front of `frames` on `port`; sent frames are removed,
    /// frames the queue had no room for stay in `frames` (still owned by the caller,
    /// to retry or drop). Returns how many were sent.
    fn tx_burst(&mut self, port: usize, frames: &mut Burst<Self::Frame>) -> usize;
    /// A new frame of `len` bytes (contents unspecified) to fill and transmit, or
    /// `None` when the buffer pool is exhausted or `len` exceeds a buffer.
    fn alloc(&mut self, len: usize) -> Option<Self::Frame>;
    /// True when every input of a finite backend (a capture file) has been read;
    /// a NIC never runs out.
    fn input_exhausted(&self) -> bool {
        false
    }
}

/// Reads port counters from any thread while workers run.
pub trait PortMonitor: Send + Sync {
    /// Counters of every port, inside first.
    fn port_stats(&self) -> Vec<PortStats>;
}

/// A packet I/O backend.
pub trait Backend {
    /// Per-worker queue handle.
    type Queues: Queues + 'static;
    /// Name of the backend (`dpdk`, `memory`, `pcap`).
    fn name(&self) -> &'static str;
    /// Number of workers the backend was set up for (queues per port).
    fn workers(&self) -> usize;
    /// Hands out one [`Queues`] per worker, once.
    fn take_queues(&mut self) -> Vec<Self::Queues>;
    /// A monitor for port counters.
    fn monitor(&self) -> std::sync::Arc<dyn PortMonitor>;
    /// Whether the device already spreads flows symmetrically over the queues (both
    /// directions of a flow on one queue), so no software steering is needed.
    fn symmetric_rss(&self) -> bool;
    /// Runs `f(worker)` for every worker on its own thread (DPDK: on its lcore) and
    /// returns when all have returned.
    fn launch<F>(&self, f: F)
    where
        F: Fn(usize) + Sync;
}
