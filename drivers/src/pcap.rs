//! The `pcap` backend: each port reads its received frames from a capture file and
//! writes what the dataplane transmits on it to another. One worker.
//!
//! It replays a capture through the real worker code (parser, flow table, steering)
//! offline; DPDK's own `net_pcap` device does the same inside the DPDK backend when
//! line-rate replay is wanted (the benchmark uses it).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::memory::MemFrame;
use crate::pcapfile::{PcapReader, PcapWriter};
use crate::{port_role, Backend, Burst, Error, PortMonitor, PortStats, Queues, NUM_PORTS};

/// The `[pcap]` section of the dataplane configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcapConfig {
    /// Frames arriving on the inside port.
    pub inside_rx: Option<PathBuf>,
    /// Frames arriving on the outside port.
    pub outside_rx: Option<PathBuf>,
    /// Where frames sent on the inside port are written.
    pub inside_tx: Option<PathBuf>,
    /// Where frames sent on the outside port are written.
    pub outside_tx: Option<PathBuf>,
}

#[derive(Default)]
struct Counters {
    ipackets: AtomicU64,
    ibytes: AtomicU64,
    opackets: AtomicU64,
    obytes: AtomicU64,
    ierrors: AtomicU64,
}

struct Shared {
    counters: [Counters; NUM_PORTS],
    devices: [String; NUM_PORTS],
    done: AtomicBool,
}

/// Replays capture files.
pub struct PcapBackend {
    shared: Arc<Shared>,
    queues: Option<PcapQueues>,
}

/// The single worker's queues.
pub struct PcapQueues {
    shared: Arc<Shared>,
    rx: [Option<PcapReader<std::io::BufReader<File>>>; NUM_PORTS],
    tx: [Option<Mutex<PcapWriter<BufWriter<File>>>>; NUM_PORTS],
    buf: Vec<u8>,
}

impl PcapBackend {
    /// Opens the configured files.
    pub fn new(cfg: &PcapConfig) -> Result<Self, Error> {
        let open = |p: &Option<PathBuf>| -> Result<_, Error> {
            p.as_ref()
                .map(|p| {
                    PcapReader::open(p)
                        .map_err(|e| Error::Pcap { path: p.display().to_string(), reason: e.to_string() })
                })
                .transpose()
        };
        let create = |p: &Option<PathBuf>| -> Result<_, Error> {
            p.as_ref().map(|p| PcapWriter::create(p).map(Mutex::new)).transpose()
        };
        let name = |rx: &Option<PathBuf>, tx: &Option<PathBuf>| {
            format!(
                "pcap:{}>{}",
                rx.as_ref().map_or("-".into(), |p| p.display().to_string()),
                tx.as_ref().map_or("-".into(), |p| p.display().to_string())
            )
        };
        let shared = Arc::new(Shared {
            counters: Default::default(),
            devices: [name(&cfg.inside_rx, &cfg.inside_tx), name(&cfg.outside_rx, &cfg.outside_tx)],
            done: AtomicBool::new(false),
        });
        let queues = PcapQueues {
            shared: shared.clone(),
            rx: [open(&cfg.inside_rx)?, open(&cfg.outside_rx)?],
            tx: [create(&cfg.inside_tx)?, create(&cfg.outside_tx)?],
            buf: Vec::with_capacity(2048),
        };
        Ok(PcapBackend { shared, queues: Some(queues) })
    }
}

impl Queues for PcapQueues {
    type Frame = MemFrame;

    fn rx_burst(&mut self, port: usize, out: &mut Burst<MemFrame>) {
        let Some(r) = self.rx[port].as_mut() else { return };
        let c = &self.shared.counters[port];
        while !out.is_full() {
            match r.next_frame(&mut self.buf) {
                Ok(Some(_ts)) => {
                    c.ipackets.fetch_add(1, Ordering::Relaxed);
                    c.ibytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                    out.push(MemFrame(self.buf.clone()));
                }
                Ok(None) => {
                    self.rx[port] = None;
                    break;
                }
                Err(e) => {
                    // A damaged tail ends this input; counted, not fatal.
                    tracing::warn!(port = port_role(port), error = %e, "capture input ends early");
                    c.ierrors.fetch_add(1, Ordering::Relaxed);
                    self.rx[port] = None;
                    break;
                }
            }
        }
        if self.rx.iter().all(Option::is_none) {
            self.shared.done.store(true, Ordering::Release);
        }
    }

    fn tx_burst(&mut self, port: usize, frames: &mut Burst<MemFrame>) -> usize {
        let n = frames.len();
        let c = &self.shared.counters[port];
        if let Some(w) = &self.tx[port] {
            let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            let mut w = w.lock().expect("pcap writer lock");
            for f in frames.iter() {
                if w.write_frame(ts, &f.0).is_err() {
                    c.ierrors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for f in frames.drain(..) {
            c.opackets.fetch_add(1, Ordering::Relaxed);
            c.obytes.fetch_add(f.0.len() as u64, Ordering::Relaxed);
        }
        n
    }

    fn alloc(&mut self, len: usize) -> Option<MemFrame> {
        Some(MemFrame(vec![0; len]))
    }

    fn input_exhausted(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }
}

impl Drop for PcapQueues {
    fn drop(&mut self) {
        for w in self.tx.iter().flatten() {
            if let Ok(mut w) = w.lock() {
                let _ = w.flush();
            }
        }
    }
}

struct Monitor(Arc<Shared>);

impl PortMonitor for Monitor {
    fn port_stats(&self) -> Vec<PortStats> {
        (0..NUM_PORTS)
            .map(|i| {
                let c = &self.0.counters[i];
                PortStats {
                    port: i as u32,
                    role: port_role(i).into(),
                    device: self.0.devices[i].clone(),
                    link_up: true,
                    ipackets: c.ipackets.load(Ordering::Relaxed),
                    ibytes: c.ibytes.load(Ordering::Relaxed),
                    opackets: c.opackets.load(Ordering::Relaxed),
                    obytes: c.obytes.load(Ordering::Relaxed),
                    ierrors: c.ierrors.load(Ordering::Relaxed),
                    ..Default::default()
                }
            })
            .collect()
    }
}

impl Backend for PcapBackend {
    type Queues = PcapQueues;

    fn name(&self) -> &'static str {
        "pcap"
    }

    fn workers(&self) -> usize {
        1
    }

    fn take_queues(&mut self) -> Vec<PcapQueues> {
        vec![self.queues.take().expect("queues are handed out once")]
    }

    fn monitor(&self) -> Arc<dyn PortMonitor> {
        Arc::new(Monitor(self.shared.clone()))
    }

    fn symmetric_rss(&self) -> bool {
        true
    }

    fn launch<F>(&self, f: F)
    where
        F: Fn(usize) + Sync,
    {
        f(0)
    }
}
