//! The worker: one per lcore, polling its RX queue on both ports.
//!
//! ```text
//!  loop (time read once):
//!    rx burst (inside, then outside)
//!      phase 1  classify each frame: parse ─► key/hash ─► owner ≠ me ─► batch for owner
//!                                                   └─► malformed ─► count, drop (or forward)
//!      phase 2  flow-table lookups for the whole burst, back to back
//!      phase 3  forward (other port) or drop, in arrival order
//!    hand-over in (whole bursts, already classified) ─► phases 2 and 3
//!    flush TX and hand-over batches; expire a bounded number of flows;
//!    publish counters every few ms; idle → back off (lab) or spin (production)
//! ```
//!
//! Phase 2 runs the lookups of a burst in a tight loop so the CPU overlaps their
//! cache misses (with a million flows each lookup misses twice); interleaved with
//! parsing and forwarding, they were paid one after the other.
//!
//! Bump-in-the-wire: a forwarded frame leaves by the other port byte for byte
//! unchanged (MACs, VLAN tags, TTL). Nothing here locks, allocates or logs per
//! packet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use crossbeam_queue::ArrayQueue;
use tlsgate_drivers::{Burst, Frame, Queues, BURST, NUM_PORTS};

use crate::capture::{CaptureFilter, Capturer};
use crate::config::{Config, MalformedAction};
use crate::counters::{idx, Local, Published, COUNT};
use crate::craft::Spec;
use crate::events::EventWriter;
use crate::flow::{FlowKey, FlowTable, Side, Track};
use crate::live::{Live, LiveCell};
use crate::parse::tcp_flags;
use crate::parse::{parse, proto};
use crate::splice::{EmitBuf, InterceptConfig, Phase, Splice};
use crate::tls::{TlsShared, TlsWorker};
use tlsgate_api::event::set_text;
use tlsgate_api::{Cause, EventKind, Leg, Outcome};
use tlsgate_policy::SynAction;

/// What phase 1 decided for a frame.
#[derive(Clone, Copy)]
enum Class {
    /// Forward without tracking (not IP, ICMP, other protocols, forwarded malformed).
    Forward,
    /// An IP fragment: forward untracked.
    Fragment,
    /// Drop (already counted).
    Drop,
    /// A SYN the policy blocks (the rule's index, `None`: the default action):
    /// answered with a RST.
    Block(Option<u32>),
    /// A segment of an intercepted flow: to its splice.
    Intercept {
        /// Symmetric key.
        key: FlowKey,
        /// The flow was created by this segment (the client's SYN).
        new: bool,
    },
    /// TCP/UDP: look the flow up.
    Track {
        /// Symmetric key.
        key: FlowKey,
        /// Hash of the key.
        hash: u64,
        /// Sender.
        side: Side,
        /// TCP flags.
        flags: u8,
    },
}

/// A classified frame: within a burst, and as handed to the owner worker.
pub struct Item<F> {
    frame: F,
    port: u8,
    class: Class,
}

/// What a new TCP flow becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtSyn {
    Forward,
    Intercept,
    Block(Option<u32>),
}

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
}

/// Owner worker of a flow hash (multiply-shift: uniform, no division).
#[inline]
pub fn owner(hash: u64, workers: usize) -> usize {
    (((hash >> 32) * workers as u64) >> 32) as usize
}

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
    /// The configuration in force (policy, TLS material, version), switched by
    /// the control plane's snapshots.
    pub live: Arc<LiveCell>,
    /// Where events go, and the store of abort chains.
    pub events: Option<(crate::events::EventsConfig, Arc<crate::events::ChainStore>)>,
    /// Packet captures.
    pub capturer: Arc<Capturer>,
}

impl WorkerSettings {
    /// From the configuration and whether the NIC hashes symmetrically.
    pub fn new(cfg: &Config, workers: usize, symmetric_rss: bool) -> Self {
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
            live: LiveCell::new(Live::default()),
            events: None,
            capturer: Arc::new(Capturer::default()),
        }
    }
}

/// How often counters are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(5);
/// Flow-expiry entries examined per millisecond.
const EXPIRE_BUDGET: usize = 256;

/// One worker's state.
pub struct Worker<Q: Queues> {
    id: usize,
    workers: usize,
    queues: Q,
    flows: FlowTable,
    settings: WorkerSettings,
    steering: Arc<Steering<Q::Frame>>,
    outbound: Vec<HandoverBurst<Q::Frame>>,
    tx: [Burst<Q::Frame>; NUM_PORTS],
    c: Local,
    published: Arc<Published>,
    epoch: Instant,
    /// Live splices of intercepted flows.
    splices: hashbrown::HashMap<FlowKey, Box<Splice>>,
    /// Destination ports to intercept, as a bitmap.
    intercept_ports: Vec<u64>,
    emit: EmitBuf,
    /// TLS interception state of this worker (None: no `[tls]` configured).
    tls: Option<TlsWorker>,
    /// This worker's event ring.
    events: Option<EventWriter>,
    seed: u64,
    /// Splice timers: (due ms, flow) in a min-heap. An entry is live while it equals
    /// its splice's `scheduled_ms`; entries of moved or finished timers are skipped
    /// when they surface, so rescheduling never searches the heap.
    timers: std::collections::BinaryHeap<std::cmp::Reverse<(u64, FlowKey)>>,
    /// When counters were last published.
    published_at: Option<Instant>,
    /// Publications so far.
    publishes: u64,
    /// When the flow table's expiry next runs (ms of the worker clock).
    next_expire_ms: u64,
    /// The current poll's time (ms of the worker clock).
    now_ms: u64,
    /// The configuration new flows are decided under.
    live: Arc<Live>,
    /// The cell's generation `live` came from.
    live_gen: u64,
    /// Decisions per rule of the running policy since the last fold (index 0: the
    /// default action, i + 1: rule i).
    rule_hits: Vec<u64>,
    /// Decisions per rule name, folded.
    rule_names: std::collections::BTreeMap<String, u64>,
    /// The capturer's generation `captures` came from.
    capture_gen: u64,
    /// Captures running (empty: nothing is copied).
    captures: Arc<Vec<CaptureFilter>>,
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
        let workers = steering.inbound.len();
        let live = settings.live.current();
        let live_gen = settings.live.generation();
        let events = settings.events.as_ref().and_then(|(cfg, chains)| {
            EventWriter::open(cfg, id, chains.clone())
                .map_err(|e| tracing::error!(worker = id, error = %e, "events disabled on this worker"))
                .ok()
        });
        let mut intercept_ports = vec![0u64; 1024];
        for &port in &settings.intercept.ports {
            intercept_ports[usize::from(port) / 64] |= 1 << (port % 64);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64)
            ^ ((id as u64) << 56);
        Worker {
            id,
            workers,
            queues,
            flows: FlowTable::new(
                cfg.flows.max_per_worker,
                cfg.flows.at_capacity,
                cfg.flows.timeouts.clone(),
                epoch.elapsed().as_millis() as u64,
            ),
            settings,
            steering,
            outbound: (0..workers).map(|_| ArrayVec::new()).collect(),
            tx: [Burst::new(), Burst::new()],
            c: [0; COUNT],
            published,
            epoch,
            splices: hashbrown::HashMap::new(),
            intercept_ports,
            emit: EmitBuf::default(),
            tls: live.tls.clone().and_then(|shared| tls_worker(id, shared)),
            live,
            live_gen,
            rule_hits: Vec::new(),
            rule_names: std::collections::BTreeMap::new(),
            capture_gen: 0,
            captures: Arc::new(Vec::new()),
            events,
            seed,
            timers: std::collections::BinaryHeap::new(),
            published_at: None,
            publishes: 0,
            next_expire_ms: 0,
            now_ms: 0,
        }
    }

    /// Polls until `stop` is set (or a finite input is exhausted and drained).
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle_streak = 0u32;
        loop {
            let now = Instant::now();
            let work = self.poll(now);
            if self.published_at == Some(now) && stop.load(Ordering::Relaxed) {
                break;
            }
            if work == 0 {
                idle_streak = idle_streak.saturating_add(1);
                if self.queues.input_exhausted() && idle_streak > 1000 {
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
        self.flush_tx();
        self.publish();
    }

    /// One iteration of the poll loop at `now`: RX on both ports, hand-over, splice
    /// timers, TX, flow expiry, counters every few ms. Returns the frames and timer
    /// polls it handled (0: an idle poll).
    pub fn poll(&mut self, now: Instant) -> usize {
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        self.now_ms = now_ms;
        let generation = self.settings.live.generation();
        if generation != self.live_gen {
            self.switch(generation);
        }
        let captures = self.settings.capturer.generation();
        if captures != self.capture_gen {
            self.captures = self.settings.capturer.filters();
            self.capture_gen = captures;
        }
        let mut work = 0;
        let mut rx: Burst<Q::Frame> = Burst::new();
        for port in 0..NUM_PORTS {
            self.queues.rx_burst(port, &mut rx);
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
            work += self.drain_inbound(now_ms);
            self.flush_outbound();
        }
        work += self.run_timers(now_ms);
        self.flush_tx();
        if now_ms >= self.next_expire_ms {
            // Once per millisecond (the wheel has one-second slots): rescheduling many
            // flows that come due together costs a few lookups per millisecond, not
            // per poll.
            self.next_expire_ms = now_ms + 1;
            let expired = self.flows.expire(now_ms, EXPIRE_BUDGET);
            if expired > 0 {
                self.c[idx::FLOWS_EXPIRED] = self.flows.expired;
            }
        }
        if work > 0 {
            self.c[idx::BUSY_NS] += now.elapsed().as_nanos() as u64;
        } else {
            self.c[idx::IDLE_POLLS] += 1;
        }
        if self.published_at.is_none_or(|at| now.duration_since(at) >= PUBLISH_EVERY) {
            self.publish();
            self.published_at = Some(now);
        }
        work
    }

    fn capture(&self, data: &[u8], port: usize, outbound: bool) {
        capture_frame(&self.captures, &self.settings.capturer, data, port, outbound);
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
            self.tls = next.tls.clone().and_then(|shared| tls_worker(self.id, shared));
        }
        self.fold_rule_hits();
        self.live = next;
        self.live_gen = generation;
    }

    /// One decision of `rule` (None: the default action) of the running policy.
    #[inline]
    fn count_rule(&mut self, rule: Option<tlsgate_policy::RuleId>) {
        let i = rule.map_or(0, |r| r.index() + 1);
        if i >= self.rule_hits.len() {
            let n = self.live.policy.as_ref().map_or(1, |p| p.rule_count() + 1);
            self.rule_hits.resize(n.max(i + 1), 0);
        }
        self.rule_hits[i] += 1;
    }

    /// Counts decisions by rule name (the cold path: at a policy switch, a
    /// publication, the end of an intercepted flow).
    fn fold_rule_hits(&mut self) {
        let policy = self.live.policy.clone();
        for (i, n) in self.rule_hits.iter_mut().enumerate() {
            if *n == 0 {
                continue;
            }
            let name = match (i, &policy) {
                (0, _) | (_, None) => "(default)".to_string(),
                (i, Some(p)) => {
                    p.rule_name(tlsgate_policy::RuleId::new(i as u32 - 1)).unwrap_or("(default)").to_string()
                }
            };
            *self.rule_names.entry(name).or_insert(0) += *n;
            *n = 0;
        }
    }

    /// This worker's counters as published (publishes first).
    pub fn report(&mut self) -> tlsgate_api::WorkerStats {
        self.publish();
        self.published.report(self.id as u32)
    }

    fn publish(&mut self) {
        self.c[idx::INTERCEPT_ACTIVE] = self.splices.len() as u64;
        self.c[idx::FLOWS_ACTIVE] = self.flows.len() as u64;
        self.c[idx::FLOWS_CREATED] = self.flows.created;
        self.c[idx::FLOWS_EXPIRED] = self.flows.expired;
        self.c[idx::FLOWS_REUSED] = self.flows.reused;
        if let Some(t) = &self.tls {
            let f = t.forge.stats();
            self.c[idx::FORGE_HITS] = f.hits;
            self.c[idx::FORGE_MISSES] = f.misses;
        }
        self.published.publish(&self.c);
        self.publishes += 1;
        if self.publishes.is_multiple_of(40) || self.c[idx::FLOWS_CREATED] < 64 {
            // Rule hits by name, every ~200 ms (and at once while there are few flows).
            self.fold_rule_hits();
            self.published.publish_rules(&self.rule_names);
        }
    }

    /// Phase 1: counts and classifies a frame from the wire on `port`; hands it to
    /// its owner (returns `None`) when another worker owns its flow.
    #[inline]
    fn classify(&mut self, frame: Q::Frame, port: usize) -> Option<Item<Q::Frame>> {
        let len = frame.data().len() as u64;
        self.c[idx::RX_PKTS + port] += 1;
        self.c[idx::RX_BYTES + port] += len;
        let p = match parse(frame.data()) {
            Ok(p) => p,
            Err(reason) => {
                self.c[idx::MALFORMED_BASE + reason as usize] += 1;
                let class = if self.settings.malformed == MalformedAction::Forward {
                    self.c[idx::MALFORMED_FORWARDED] += 1;
                    Class::Forward
                } else {
                    Class::Drop
                };
                return Some(Item { frame, port: port as u8, class });
            }
        };
        if !p.is_ip() {
            // ARP, LLDP, …: a bump-in-the-wire passes them on.
            return Some(Item { frame, port: port as u8, class: Class::Forward });
        }
        if !self.captures.is_empty() {
            self.capture(frame.data(), port, false);
        }
        let (key, side) = FlowKey::of_frame(&p, frame.data());
        let hash = key.hash();
        let class = if p.fragment {
            Class::Fragment
        } else if p.proto == proto::TCP || p.proto == proto::UDP {
            Class::Track { key, hash, side, flags: p.tcp_flags }
        } else {
            Class::Forward
        };
        let item = Item { frame, port: port as u8, class };
        if self.settings.software_steering {
            // Fragments and untracked protocols are steered too, by the same hash
            // (fragments: the address pair), so a flow's packets keep their order.
            let to = owner(hash, self.workers);
            if to != self.id {
                self.hand_over(to, item);
                return None;
            }
        }
        Some(item)
    }

    /// Phases 2 and 3 for classified frames of flows this worker owns.
    #[inline]
    fn track_and_forward(&mut self, items: &mut HandoverBurst<Q::Frame>, now_ms: u64) {
        for item in items.iter_mut() {
            if let Class::Track { key, hash, side, flags } = item.class {
                let mut track = self.flows.track(&key, side, hash, flags, now_ms);
                if track == Track::Intercepted
                    && flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
                    && self.retire_for_reuse(&key, side)
                {
                    // The old splice ended and left a tombstone: the SYN starts a
                    // new flow.
                    track = self.flows.track(&key, side, hash, flags, now_ms);
                }
                item.class = match track {
                    Track::Tracked => Class::Forward,
                    Track::Intercepted => Class::Intercept { key, new: false },
                    Track::Created if key.proto() == proto::TCP => match self.at_syn(&key, side) {
                        AtSyn::Forward => Class::Forward,
                        AtSyn::Intercept => {
                            self.flows.set_intercepted(&key, hash);
                            Class::Intercept { key, new: true }
                        }
                        AtSyn::Block(rule) => {
                            // Later segments of the flow meet a tombstone (a retried
                            // SYN is decided again).
                            self.flows.set_tombstone(&key, hash);
                            Class::Block(rule)
                        }
                    },
                    Track::Created => Class::Forward,
                    Track::Midstream => {
                        self.c[idx::UNTRACKED_MIDSTREAM] += 1;
                        Class::Forward
                    }
                    Track::FullOpen => {
                        self.c[idx::UNTRACKED_TABLE_FULL] += 1;
                        Class::Forward
                    }
                    Track::FullClosed => {
                        self.c[idx::DROP_TABLE_FULL] += 1;
                        Class::Drop
                    }
                };
            }
        }
        for item in items.drain(..) {
            match item.class {
                Class::Forward => self.forward(item.frame, usize::from(item.port)),
                Class::Fragment => {
                    self.c[idx::UNTRACKED_FRAGMENTS] += 1;
                    self.forward(item.frame, usize::from(item.port));
                }
                Class::Intercept { key, new } => self.intercept(item.frame, key, new, now_ms),
                Class::Block(rule) => self.reset_sender(item.frame, usize::from(item.port), rule),
                Class::Drop | Class::Track { .. } => drop(item.frame),
            }
        }
    }

    /// A fresh SYN from the client of a live splice whose client leg has closed
    /// (the server leg still finishing): the client reuses its port. The old splice
    /// ends now, its flow a tombstone; returns whether it did.
    fn retire_for_reuse(&mut self, key: &FlowKey, side: Side) -> bool {
        let Some(s) = self.splices.get_mut(key) else { return false };
        let (src, sport, _, _) = key.endpoints(side);
        let a = s.addrs();
        if (src, sport) != (a.client, a.client_port) || !s.client_leg_closed() {
            return false;
        }
        self.emit.clear();
        s.retire(self.now_ms, &mut self.emit);
        self.send_emitted(key);
        self.reap(key);
        true
    }

    /// The decision for a new TCP flow whose SYN `side` sent: the policy's decision
    /// at SYN when there is a policy, else `intercept.ports`.
    fn at_syn(&mut self, key: &FlowKey, side: Side) -> AtSyn {
        let (src, _, dst, dport) = key.endpoints(side);
        let verdict = match &self.live.policy {
            Some(policy) => match policy.decide_at_syn(src, dst, dport).action {
                SynAction::Block { rule } => {
                    self.count_rule(rule);
                    self.c[idx::POLICY_BLOCKED] += 1;
                    return AtSyn::Block(rule.map(|r| r.index() as u32));
                }
                SynAction::Bypass { rule } => {
                    self.count_rule(rule);
                    AtSyn::Forward
                }
                // Decrypt, or read the ClientHello first (an SNI rule comes first).
                _ if self.tls.is_some() => AtSyn::Intercept,
                _ => {
                    self.c[idx::POLICY_NO_TLS] += 1;
                    AtSyn::Forward
                }
            },
            None if self.intercept_ports[usize::from(dport) / 64] & (1 << (dport % 64)) != 0 => {
                AtSyn::Intercept
            }
            None => AtSyn::Forward,
        };
        if verdict == AtSyn::Intercept && self.splices.len() >= self.settings.intercept.max_per_worker {
            self.c[idx::INTERCEPT_FULL] += 1;
            return AtSyn::Forward;
        }
        verdict
    }

    /// Answers a blocked SYN with a RST from its destination, out of the port it
    /// came in on, with its L2 header mirrored.
    fn reset_sender(&mut self, frame: Q::Frame, port: usize, rule: Option<u32>) {
        let Ok(p) = parse(frame.data()) else { return };
        let l3 = usize::from(p.l3_offset);
        let t = usize::from(p.l4_offset);
        let seq = frame.data().get(t + 4..t + 8).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut spec =
            Spec::tcp(p.dst_ip(), p.dst_port, p.src_ip(), p.src_port, tcp_flags::RST | tcp_flags::ACK);
        spec.seq = 0;
        spec.ack = seq.wrapping_add(1);
        let built = spec.build();
        // Our L2 header (VLAN tags included), MACs swapped; then the built IP packet.
        let ip_len = built.len() - 14;
        let Some(mut out) = self.queues.alloc(l3 + ip_len) else {
            self.c[idx::DROP_NO_BUFFER] += 1;
            return;
        };
        let d = out.data_mut();
        d[..l3].copy_from_slice(&frame.data()[..l3]);
        d[..6].copy_from_slice(&frame.data()[6..12]);
        d[6..12].copy_from_slice(&frame.data()[..6]);
        d[l3..].copy_from_slice(&built[14..]);
        drop(frame);
        if !self.captures.is_empty() {
            self.capture(out.data(), port, true);
        }
        if let Some(ev) = self.events.as_mut() {
            let mut r = ev.record(EventKind::Blocked);
            r.set_addrs((p.src_ip(), p.src_port).into(), (p.dst_ip(), p.dst_port).into());
            r.set_outcome(&Outcome::new(
                EventKind::Blocked,
                Leg::None,
                tlsgate_api::Phase::TcpConnect,
                Cause::Policy { rule },
            ));
            let name =
                rule.and_then(|i| self.live.policy.as_ref()?.rule_name(tlsgate_policy::RuleId::new(i)));
            set_text(&mut r.rule, name.unwrap_or("(default)"));
            r.config_version = self.live.version;
            ev.emit(&r);
        }
        if self.tx[port].is_full() {
            Self::flush(&mut self.queues, &mut self.tx[port], &mut self.c, port);
        }
        self.c[idx::TX_PKTS + port] += 1;
        self.c[idx::TX_BYTES + port] += (l3 + ip_len) as u64;
        self.tx[port].push(out);
    }

    /// A segment of an intercepted flow: into its splice (the SYN creates it).
    fn intercept(&mut self, frame: Q::Frame, key: FlowKey, new: bool, now_ms: u64) {
        let Ok(p) = parse(frame.data()) else { return };
        self.emit.clear();
        if new {
            self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // With a policy, it only intercepts TLS ports; without, `[tls].ports` say.
            let tls = self
                .tls
                .as_ref()
                .filter(|t| self.live.policy.is_some() || t.shared.is_tls_port(p.dst_port))
                .map(|t| t.shared.handshake_timeout_ms);
            let setup = crate::splice::Setup {
                cfg: &self.settings.intercept,
                tls,
                seed: self.seed,
                policy: self.live.policy.clone(),
                config_version: self.live.version,
            };
            let splice = Splice::new(frame.data(), &p, setup, now_ms, &mut self.emit);
            self.c[idx::INTERCEPT_CREATED] += 1;
            self.splices.insert(key, Box::new(splice));
        } else if let Some(splice) = self.splices.get_mut(&key) {
            let ip = &frame.data()[usize::from(p.l3_offset)..usize::from(p.l3_end)];
            splice.step(Some(ip), now_ms, &mut self.emit, self.tls.as_mut());
        } else {
            // Tombstone: both legs are closed; a late segment must not take the fast
            // path (the legs had their own sequence numbers).
            self.c[idx::DROP_TOMBSTONE] += 1;
            return;
        }
        drop(frame);
        self.send_emitted(&key);
        self.reap(&key);
        self.schedule(&key, 0);
    }

    /// Puts a splice's next poll on the timer heap, not before `not_before`, when it
    /// is earlier than the one already there.
    fn schedule(&mut self, key: &FlowKey, not_before: u64) {
        if let Some(s) = self.splices.get_mut(key) {
            let at = s.poll_at_ms.max(not_before);
            if at < s.scheduled_ms {
                s.scheduled_ms = at;
                self.timers.push(std::cmp::Reverse((at, *key)));
            }
        }
    }

    /// Puts what a splice's stack emitted on the wire, with each side's L2 header.
    fn send_emitted(&mut self, key: &FlowKey) {
        let Some(splice) = self.splices.get(key) else { return };
        for e in &self.emit.packets {
            let (l2, port) = match e.leg {
                Leg::Client => (&splice.l2_client, tlsgate_drivers::INSIDE),
                _ => (&splice.l2_server, tlsgate_drivers::OUTSIDE),
            };
            let Some(mut f) = self.queues.alloc(l2.len() + e.len) else {
                self.c[idx::DROP_NO_BUFFER] += 1;
                continue;
            };
            let d = f.data_mut();
            d[..l2.len()].copy_from_slice(l2);
            d[l2.len()..].copy_from_slice(&self.emit.bytes[e.start..e.start + e.len]);
            if !self.captures.is_empty() {
                capture_frame(&self.captures, &self.settings.capturer, f.data(), port, true);
            }
            if self.tx[port].is_full() {
                Self::flush(&mut self.queues, &mut self.tx[port], &mut self.c, port);
            }
            self.c[idx::TX_PKTS + port] += 1;
            self.c[idx::TX_BYTES + port] += (l2.len() + e.len) as u64;
            self.tx[port].push(f);
        }
    }

    /// Frees a finished splice (its flow stays as a tombstone) and counts its end.
    fn reap(&mut self, key: &FlowKey) {
        let done = self.splices.get(key).is_some_and(|s| s.phase() == Phase::Done);
        if !done {
            return;
        }
        if let Some(s) = self.splices.remove(key) {
            self.flows.splice_ended(key, self.now_ms);
            self.c[idx::INTERCEPT_BYTES_UP] += s.relayed[0];
            self.c[idx::INTERCEPT_BYTES_DOWN] += s.relayed[1];
            let end = s.ended().map(|e| e.outcome);
            if let Some(i) = end.and_then(end_counter) {
                self.c[i] += 1;
            }
            if let (Some(name), Some(_)) = (&s.tls_info().rule, &s.policy) {
                // The SNI decision of an intercepted flow.
                *self.rule_names.entry(name.clone()).or_insert(0) += 1;
            }
            if s.decrypted {
                self.c[idx::TLS_DECRYPTED] += 1;
                let i = s.tls_info();
                for (yes, counter) in [
                    (i.unverified.is_some(), idx::TLS_UNVERIFIED),
                    (i.server_resumed, idx::TLS_SERVER_RESUMED),
                    (i.client_resumed, idx::TLS_CLIENT_RESUMED),
                    (i.chain_cached, idx::TLS_CHAIN_CACHED),
                ] {
                    self.c[counter] += u64::from(yes);
                }
            }
            self.emit_event(&s);
        }
    }

    /// The event of a finished splice.
    fn emit_event(&mut self, s: &Splice) {
        let Some(ev) = self.events.as_mut() else { return };
        let Some(end) = s.ended() else { return };
        let o = end.outcome;
        let mut r = ev.record(o.kind);
        let a = s.addrs();
        r.set_addrs((a.client, a.client_port).into(), (a.server, a.port).into());
        r.session_id = (r.event_id as u32) ^ ((r.event_id >> 32) as u32);
        r.bytes_up = s.relayed[0];
        r.bytes_down = s.relayed[1];
        r.inside_port = tlsgate_drivers::INSIDE as u8;
        r.outside_port = tlsgate_drivers::OUTSIDE as u8;
        r.config_version = s.config_version;
        r.tls_version = s.tls_info().version;
        r.cipher_suite = s.tls_info().suite;
        if let Some(sni) = &s.tls_info().sni {
            set_text(&mut r.sni, sni);
        }
        if let Some(rule) = &s.tls_info().rule {
            set_text(&mut r.rule, rule);
        }
        if let (true, Some(v)) = (s.decrypted, &s.tls_info().unverified) {
            // Certificate validation is off: decrypted although refused, and said so
            // (the verifier's findings, beside a normal outcome).
            r.verify_code = v.reason.code() as u16;
            r.verify_depth = v.depth as u8;
            set_text(&mut r.verify_text, v.reason.text());
            set_text(&mut r.server_cert_subject, &v.subject);
            set_text(&mut r.server_cert_issuer, &v.issuer);
        }
        r.set_outcome(&o);
        if o.kind == EventKind::Abort && o.leg == Leg::Server {
            // The client got a handshake_failure alert for the server leg's failure.
            r.alert_sent = crate::tls::ALERT_HANDSHAKE_FAILURE;
        }
        if end.detail.is_empty() && s.decrypted && s.tls_info().unverified.is_some() {
            set_text(
                &mut r.error_detail,
                "certificate validation is off: decrypted although the chain failed",
            );
        } else {
            set_text(&mut r.error_detail, &end.detail);
        }
        if let Some(v) = &end.verify {
            set_text(&mut r.server_cert_subject, &v.subject);
            set_text(&mut r.server_cert_issuer, &v.issuer);
            r.chain_sha256 = v.chain_sha256.0;
            ev.chains.put(v.chain_sha256.0, v.chain.clone());
        }
        ev.emit(&r);
    }

    /// Timer polls (retransmissions, timeouts) of the splices that are due; returns
    /// how many were polled.
    fn run_timers(&mut self, now_ms: u64) -> usize {
        let mut polled = 0;
        while let Some(&std::cmp::Reverse((at, key))) = self.timers.peek() {
            if at > now_ms {
                break;
            }
            self.timers.pop();
            let Some(s) = self.splices.get_mut(&key) else { continue };
            if s.scheduled_ms != at {
                continue; // moved earlier: a newer entry is live
            }
            s.scheduled_ms = u64::MAX;
            if s.poll_at_ms > now_ms {
                // Moved later by traffic since: wait for the new time.
                self.schedule(&key, 0);
                continue;
            }
            self.emit.clear();
            s.step(None, now_ms, &mut self.emit, self.tls.as_mut());
            polled += 1;
            self.send_emitted(&key);
            self.reap(&key);
            // At most one timer poll per splice and millisecond.
            self.schedule(&key, now_ms + 1);
        }
        polled
    }

    #[inline]
    fn forward(&mut self, frame: Q::Frame, in_port: usize) {
        let out = in_port ^ 1;
        if self.tx[out].is_full() {
            self.flush_port(out);
        }
        // Counted as sent here; flush_port takes back what the NIC refused.
        self.c[idx::TX_PKTS + out] += 1;
        self.c[idx::TX_BYTES + out] += frame.data().len() as u64;
        self.tx[out].push(frame);
    }

    fn flush_port(&mut self, port: usize) {
        Self::flush(&mut self.queues, &mut self.tx[port], &mut self.c, port);
    }

    /// Sends a TX burst; frames the queue had no room for are dropped, as l2fwd
    /// does: holding them would stall RX behind a full TX ring.
    fn flush(queues: &mut Q, tx: &mut Burst<Q::Frame>, c: &mut Local, port: usize) {
        if tx.is_empty() {
            return;
        }
        queues.tx_burst(port, tx);
        if tx.is_empty() {
            return;
        }
        let unsent = tx.len() as u64;
        let mut unsent_bytes = 0u64;
        for f in tx.drain(..) {
            unsent_bytes += f.data().len() as u64;
        }
        c[idx::DROP_TX_FULL] += unsent;
        c[idx::TX_PKTS + port] -= unsent;
        c[idx::TX_BYTES + port] -= unsent_bytes;
    }

    fn flush_tx(&mut self) {
        for port in 0..NUM_PORTS {
            self.flush_port(port);
        }
    }

    #[inline]
    fn hand_over(&mut self, to: usize, h: Item<Q::Frame>) {
        self.c[idx::HANDOVER_OUT] += 1;
        self.outbound[to].push(h);
        if self.outbound[to].is_full() {
            self.send_outbound(to);
        }
    }

    fn send_outbound(&mut self, to: usize) {
        let batch = std::mem::take(&mut self.outbound[to]);
        let n = batch.len() as u64;
        if let Err(batch) = self.steering.inbound[to].push(batch) {
            self.c[idx::DROP_HANDOVER_FULL] += n;
            drop(batch);
        } else {
            self.c[idx::HANDOVER_BURSTS] += 1;
        }
    }

    fn flush_outbound(&mut self) {
        for to in 0..self.workers {
            if !self.outbound[to].is_empty() {
                self.send_outbound(to);
            }
        }
    }

    fn drain_inbound(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        // Bounded: at most a few bursts per loop so RX keeps being polled.
        for _ in 0..4 {
            let Some(mut batch) = self.steering.inbound[self.id].pop() else { break };
            n += batch.len();
            self.c[idx::HANDOVER_IN] += batch.len() as u64;
            self.track_and_forward(&mut batch, now_ms);
        }
        n
    }
}

/// The counter of an intercepted flow's end.
fn end_counter(o: Outcome) -> Option<usize> {
    Some(match (o.kind, o.cause) {
        (EventKind::Abort, _) => idx::TLS_ABORTED,
        (EventKind::Passed, Cause::Remembered) => idx::TLS_PASSED_REMEMBERED,
        (EventKind::Passed, _) => idx::TLS_PASSED,
        (EventKind::NotDecrypted, _) => idx::TLS_NOT_DECRYPTED,
        (EventKind::Blocked, _) => idx::TLS_BLOCKED,
        (_, Cause::Closed) => idx::INTERCEPT_CLOSED,
        (_, Cause::ServerRefused) => idx::INTERCEPT_REFUSED,
        (_, Cause::Reset) => idx::INTERCEPT_RESET,
        (EventKind::Timeout, _) => idx::INTERCEPT_TIMEOUT,
        _ => return None,
    })
}

/// Copies `data` for every capture it matches (captures running only).
fn capture_frame(captures: &[CaptureFilter], capturer: &Capturer, data: &[u8], port: usize, outbound: bool) {
    let Ok(p) = parse(data) else { return };
    if !p.is_ip() {
        return;
    }
    let (a, b) = (p.src_ip(), p.dst_ip());
    for c in captures {
        if c.matches(a, p.src_port, b, p.dst_port) {
            capturer.offer(c.id, port, outbound, data);
        }
    }
}

/// A worker's TLS state for `shared` (none when its leaf key cannot be made).
fn tls_worker(id: usize, shared: Arc<TlsShared>) -> Option<TlsWorker> {
    match TlsWorker::new(shared) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(worker = id, error = %e, "TLS interception disabled on this worker");
            None
        }
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
