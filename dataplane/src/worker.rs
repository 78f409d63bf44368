//! The worker: one per lcore, polling its RX queue on both ports.
//!
//! ```text
//!  loop (time read once):
//!    rx burst (inside, then outside) ─► fastpath: classify, track, forward / intercept
//!    hand-over in (steer: whole bursts, already classified) ─► fastpath
//!    intercept timers (retransmissions, timeouts) ─► splices
//!    flush TX (io) and hand-over batches; expire a bounded number of flows;
//!    publish counters every few ms; idle → back off (lab) or spin (production)
//! ```
//!
//! A worker's rooms: [`crate::fastpath`] (classify, track, forward),
//! [`crate::steer`] (hand-over between workers), [`crate::intercept`] (admission,
//! splices, TLS, timers, ends), [`crate::io`] (TX bursts, counters, captures),
//! [`crate::flow`] (the flow table). This file holds the loop that runs them and
//! the configuration switch between bursts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_drivers::{Burst, Queues, NUM_PORTS};

use crate::capture::Capturer;
use crate::clock::{Clock, Secrets, SystemClock};
use crate::config::{Config, MalformedAction};
use crate::counters::{idx, Published};
use crate::events::EventWriter;
use crate::flow::FlowTable;
use crate::intercept::admission::AdmissionConfig;
use crate::intercept::{Intercept, InterceptConfig};
use crate::io::Io;
use crate::live::{Live, LiveCell};
use crate::steer::{HandoverBurst, Steer};

pub use crate::steer::{owner, Steering};

/// Settings a worker needs, copied from the configuration.
#[derive(Clone)]
pub struct WorkerSettings {
    /// Back off when idle.
    pub lab: bool,
    /// Malformed frames.
    pub malformed: MalformedAction,
    /// Steer in software.
    pub software_steering: bool,
    /// Intercept settings.
    pub intercept: InterceptConfig,
    /// Admission's limits.
    pub admission: AdmissionConfig,
    /// The configuration in force (policy, TLS material, version), switched by
    /// the control plane's snapshots.
    pub live: Arc<LiveCell>,
    /// Where events go, and the store of abort chains.
    pub events: Option<(crate::events::EventsConfig, Arc<crate::events::ChainStore>)>,
    /// Packet captures.
    pub capturer: Arc<Capturer>,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// The keys drawn at start-up.
    pub secrets: Arc<Secrets>,
}

impl WorkerSettings {
    /// From the configuration and whether the NIC hashes symmetrically, with the
    /// system clock and `secrets`.
    pub fn new(cfg: &Config, workers: usize, symmetric_rss: bool, secrets: Secrets) -> Self {
        use crate::config::SteeringMode::*;
        let software = workers > 1
            && match cfg.dataplane.steering {
                Auto => !symmetric_rss,
                Software => true,
                Hardware => false,
            };
        WorkerSettings {
            lab: cfg.dataplane.lab,
            malformed: cfg.dataplane.malformed,
            software_steering: software,
            intercept: cfg.intercept.clone(),
            admission: cfg.admission.clone(),
            live: LiveCell::new(Live::default()),
            events: None,
            capturer: Arc::new(Capturer::new(cfg.capture.clone())),
            clock: Arc::new(SystemClock),
            secrets: Arc::new(secrets),
        }
    }
}

/// How often counters are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(5);
/// Flow-expiry entries examined per millisecond.
const EXPIRE_BUDGET: usize = 256;

/// One worker's state.
pub struct Worker<Q: Queues> {
    pub(crate) id: usize,
    pub(crate) io: Io<Q>,
    pub(crate) flows: FlowTable,
    pub(crate) steer: Steer<Q::Frame>,
    pub(crate) intercept: Intercept,
    pub(crate) settings: WorkerSettings,
    /// The configuration new flows are decided under.
    pub(crate) live: Arc<Live>,
    published: Arc<Published>,
    epoch: Instant,
    /// When counters were last published.
    published_at: Option<Instant>,
    /// Publications so far.
    publishes: u64,
    /// When the flow table's expiry next runs (ms of the worker clock).
    next_expire_ms: u64,
    /// The cell's generation `live` came from.
    live_gen: u64,
    /// The capturer's generation the running captures came from.
    capture_gen: u64,
}

impl<Q: Queues> Worker<Q> {
    /// A worker `id` of `workers`.
    pub fn new(
        id: usize,
        queues: Q,
        cfg: &Config,
        settings: WorkerSettings,
        steering: Arc<Steering<Q::Frame>>,
        published: Arc<Published>,
        epoch: Instant,
    ) -> Self {
        let live = settings.live.current();
        let live_gen = settings.live.generation();
        let events = settings.events.as_ref().and_then(|(cfg, chains)| {
            EventWriter::open(cfg, id, chains.clone(), settings.clock.clone())
                .map_err(|e| tracing::error!(worker = id, error = %e, "events disabled on this worker"))
                .ok()
        });
        let mut intercept = Intercept::new(
            id,
            settings.intercept.clone(),
            live.tls.clone(),
            events,
            settings.secrets.clone(),
            settings.clock.clone(),
            settings.admission.clone(),
        );
        if settings.software_steering {
            intercept.steer_probes(steering.workers());
        }
        Worker {
            id,
            io: Io::new(queues, settings.capturer.clone()),
            flows: FlowTable::with_room(
                cfg.flows.max_per_worker,
                if cfg.flows.preallocate { cfg.flows.max_per_worker } else { crate::flow::INITIAL_FLOWS },
                cfg.flows.at_capacity,
                cfg.flows.timeouts.clone(),
                settings.secrets.flow_hash.clone(),
                settings.clock.now().saturating_duration_since(epoch).as_millis() as u64,
            ),
            steer: Steer::new(id, steering),
            intercept,
            settings,
            live,
            published,
            epoch,
            published_at: None,
            publishes: 0,
            next_expire_ms: 0,
            live_gen,
            capture_gen: 0,
        }
    }

    /// Polls until `stop` is set (or a finite input is exhausted and drained).
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle_streak = 0u32;
        loop {
            let now = self.settings.clock.now();
            let work = self.poll(now);
            // The stop flag is read when counters were just published (every few ms
            // under load) and on idle polls (a virtual clock may stand still).
            if (work == 0 || self.published_at == Some(now)) && stop.load(Ordering::Relaxed) {
                break;
            }
            if work == 0 {
                idle_streak = idle_streak.saturating_add(1);
                if self.io.queues.input_exhausted() && idle_streak > 1000 {
                    break;
                }
                if self.settings.lab && idle_streak > 64 {
                    // Leave the CPU to the lab's clients and servers; ~10-200 µs of
                    // added latency on the first frame after a quiet spell.
                    std::thread::sleep(Duration::from_micros(if idle_streak > 4096 { 200 } else { 10 }));
                } else {
                    std::hint::spin_loop();
                }
            } else {
                idle_streak = 0;
            }
        }
        self.io.flush();
        self.publish();
    }

    /// One iteration of the poll loop at `now`: RX on both ports, hand-over, splice
    /// timers, TX, flow expiry, counters every few ms. Returns the frames and timer
    /// polls it handled (0: an idle poll).
    pub fn poll(&mut self, now: Instant) -> usize {
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let generation = self.settings.live.generation();
        if generation != self.live_gen {
            self.switch(generation);
        }
        let captures = self.settings.capturer.generation();
        if captures != self.capture_gen {
            self.io.captures = self.settings.capturer.filters();
            self.capture_gen = captures;
        }
        let mut work = 0;
        let mut rx: Burst<Q::Frame> = Burst::new();
        for port in 0..NUM_PORTS {
            self.io.queues.rx_burst(port, &mut rx);
            if rx.is_empty() {
                continue;
            }
            work += rx.len();
            let mut items = HandoverBurst::new();
            for frame in rx.drain(..) {
                if let Some(item) = self.classify(frame, port) {
                    items.push(item);
                }
            }
            self.track_and_forward(&mut items, now_ms);
        }
        if self.settings.software_steering {
            // Bounded: at most a few bursts per loop so RX keeps being polled.
            for _ in 0..4 {
                let Some(mut batch) = self.steer.take_inbound(&mut self.io.c) else { break };
                work += batch.len();
                for item in batch.iter() {
                    if let crate::fastpath::Class::Track(seg) = &item.class {
                        self.flows.prefetch(seg.hash);
                    }
                }
                self.track_and_forward(&mut batch, now_ms);
            }
            self.steer.flush(&mut self.io.c);
        }
        work += self.intercept.run_timers(&mut self.io, &mut self.flows, now_ms);
        self.io.flush();
        if now_ms >= self.next_expire_ms {
            // Once per millisecond (the wheel has one-second slots): rescheduling many
            // flows that come due together costs a few lookups per millisecond, not
            // per poll.
            self.next_expire_ms = now_ms + 1;
            self.flows.expire(now_ms, EXPIRE_BUDGET);
        }
        if work > 0 {
            self.io.c[idx::BUSY_NS] +=
                self.settings.clock.now().saturating_duration_since(now).as_nanos() as u64;
        } else {
            self.io.c[idx::IDLE_POLLS] += 1;
        }
        if self.published_at.is_none_or(|at| now.duration_since(at) >= PUBLISH_EVERY) {
            self.publish();
            self.published_at = Some(now);
        }
        work
    }

    /// Takes the configuration the cell holds now (between bursts): new flows are
    /// decided under it; running flows keep theirs.
    fn switch(&mut self, generation: u64) {
        let next = self.settings.live.current();
        let same_tls = match (&self.live.tls, &next.tls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same_tls {
            self.intercept.set_tls(next.tls.clone());
        }
        self.io.rules.fold(self.live.policy.as_deref());
        self.live = next;
        self.live_gen = generation;
    }

    /// This worker's counters as published (publishes first).
    pub fn report(&mut self) -> tlsgate_api::WorkerStats {
        self.publish();
        self.published.report(self.id as u32)
    }

    fn publish(&mut self) {
        let c = &mut self.io.c;
        c[idx::INTERCEPT_ACTIVE] = self.intercept.active() as u64;
        (c[idx::HALF_OPEN], c[idx::MEMORY_CHARGED]) = self.intercept.admission_gauges();
        c[idx::FLOWS_ACTIVE] = self.flows.len() as u64;
        c[idx::FLOWS_CREATED] = self.flows.created;
        c[idx::FLOWS_EXPIRED] = self.flows.expired;
        c[idx::FLOWS_REUSED] = self.flows.reused;
        if let Some(t) = &self.intercept.tls {
            let f = t.forge.stats();
            c[idx::FORGE_HITS] = f.hits;
            c[idx::FORGE_MISSES] = f.misses;
        }
        self.published.publish(c);
        self.publishes += 1;
        if self.publishes.is_multiple_of(40) || c[idx::FLOWS_CREATED] < 64 {
            // Rule hits by name, every ~200 ms (and at once while there are few flows).
            self.io.rules.fold(self.live.policy.as_deref());
            self.published.publish_rules(&self.io.rules.names);
        }
    }
}
