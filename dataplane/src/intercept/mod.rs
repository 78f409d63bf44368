//! The intercept path: admission of new TCP flows, the splices of intercepted
//! flows and the segments dispatched to them, their timers, and their ends.
//!
//! ```text
//!  fast path: new TCP flow ─► admit ─┬─ Forward (bypass: a rule, no TLS, full)
//!                                    ├─ Block ─► block(): RST from the server's address, event
//!                                    └─ Intercept ─► reserve a slot ─► segment(): Splice::new
//!  fast path: segment of an intercepted flow (the flow holds its splice's slot)
//!             ─► segment() ─► Splice::step ─► emitted packets ─► Io::send (each side's L2 header)
//!  timers (min-heap of (due, slot)) ─► run_timers() ─► Splice::step without a packet
//!  a splice Done ─► reap(): counters, event (crate::events), slot freed, flow a tombstone
//! ```
//!
//! * [`tcp`]: the smoltcp splice ([`tcp::Splice`], its state enum);
//!   [`stack`]: its device and TCP timestamps.
//! * [`tls`]: TLS on the splice (hello, server leg, client leg, relay).
//! * [`outcome`]: how a flow ended ([`outcome::Ended`], the api crate's `Outcome`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tlsgate_api::Leg;
use tlsgate_drivers::{Frame, Queues};
use tlsgate_policy::{MidstreamAction, QuicAction, SynAction};

use admission::{source_key, Admission, AdmissionConfig, Costs, OverLimit};
use tlsgate_api::{AdmissionReason, Cause, EventKind, Outcome, Phase};

use crate::clock::{Clock, Secrets};
use crate::counters::idx;
use crate::events::EventWriter;
use crate::fastpath::Seg;
use crate::flow::{FlowTable, SpliceId};
use crate::io::Io;
use crate::live::Live;

pub mod admission;
mod ends;
pub mod outcome;
pub mod probe;
mod probes;
mod slots;
pub mod stack;
pub mod tcp;
pub mod tls;

use crate::Error;
use ends::{costs, send_emitted};
use probes::Probes;
use slots::{Occupant, Slots};
use stack::EmitBuf;
use tcp::{Buffers, Setup, Splice};
use tls::{TlsShared, TlsWorker};

/// Settings of intercepted flows (`[intercept]`).
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptConfig {
    /// TCP destination ports whose flows are terminated and spliced (until the
    /// decryption policy decides, this is the selection).
    pub ports: Vec<u16>,
    /// Receive and send buffer of each leg, KiB (4 buffers per flow), once the
    /// connection is used.
    pub buffer_kib: usize,
    /// What a bulk transfer's buffers may grow to, KiB: a used splice with half
    /// of a leg's send buffer in flight, to a peer whose window is larger than
    /// that buffer, doubles all four, up to this, if the worker's splices then
    /// hold at most half of `admission.memory_budget_mib` (512, the default; at
    /// or below `buffer_kib`: never; at most 16384).
    pub buffer_max_kib: usize,
    /// Seconds to establish the server leg before the client gets a RST.
    pub connect_timeout_s: u64,
    /// Seconds without data either way before both legs are reset.
    pub idle_timeout_s: u64,
    /// Most intercepted flows per worker; more are forwarded on the fast path.
    pub max_per_worker: usize,
    /// Delayed ACK on both legs, ms (2, the default; 0: every segment is
    /// acknowledged at once). With a delay, a leg acknowledges at once only
    /// past `ack_every_segments` full segments, and otherwise after the delay
    /// (`make bench-lab`: +10 % MB/s, -11 % CPU per MB against 0). A splice
    /// that ends sends any ACK still held back before it is freed.
    pub ack_delay_ms: u64,
    /// With a delayed ACK, how many full segments may wait for it: more are
    /// acknowledged at once (4, the default: a quarter of the ACK frames of a
    /// download; 1 is smoltcp's own rule, an ACK per two segments; 4 measured
    /// +8 % MB/s, -12 % CPU per MB in `make bench-lab`).
    pub ack_every_segments: usize,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig {
            ports: Vec::new(),
            buffer_kib: 64,
            buffer_max_kib: 512,
            connect_timeout_s: 10,
            idle_timeout_s: 3600,
            max_per_worker: 10_000,
            ack_delay_ms: 2,
            ack_every_segments: 4,
        }
    }
}

impl InterceptConfig {
    /// Bytes of each buffer a splice's buffers may grow to (never less than
    /// `buffer_kib`'s).
    pub fn max_buffer_bytes(&self) -> usize {
        self.buffer_max_kib.max(self.buffer_kib) * 1024
    }

    /// Range checks; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !(4..=4096).contains(&self.buffer_kib) {
            return Err(Error::Invalid(format!(
                "intercept.buffer_kib: {} is outside 4..=4096",
                self.buffer_kib
            )));
        }
        // The SYN offers the window scale of this size; beyond 16 MiB the scale
        // would round a half-open splice's 1 KiB receive window down to zero.
        if self.buffer_max_kib > 16384 {
            return Err(Error::Invalid(format!(
                "intercept.buffer_max_kib: {} is outside 0..=16384",
                self.buffer_max_kib
            )));
        }
        if self.ack_delay_ms > 200 {
            return Err(Error::Invalid(format!(
                "intercept.ack_delay_ms: {} is outside 0..=200",
                self.ack_delay_ms
            )));
        }
        if !(1..=16).contains(&self.ack_every_segments) {
            return Err(Error::Invalid(format!(
                "intercept.ack_every_segments: {} is outside 1..=16",
                self.ack_every_segments
            )));
        }
        if !(1..=300).contains(&self.connect_timeout_s) {
            return Err(Error::Invalid(format!(
                "intercept.connect_timeout_s: {} is outside 1..=300",
                self.connect_timeout_s
            )));
        }
        if self.idle_timeout_s == 0 {
            return Err(Error::Invalid("intercept.idle_timeout_s: must be at least 1".into()));
        }
        if self.ports.contains(&0) {
            return Err(Error::Invalid("intercept.ports: port 0 is not a port".into()));
        }
        Ok(())
    }
}

/// What a new TCP flow becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtSyn {
    /// Forwarded on the fast path (a bypass rule, no TLS, a SYN from the outside
    /// port, or over a limit with `over_limit = "forward"`).
    Forward,
    /// Terminated and spliced.
    Intercept,
    /// Reset: the policy blocks it (the rule's index, `None`: the default action).
    Block(Option<u32>),
    /// Over a limit of admission: dropped, no state kept.
    Drop,
    /// Over a limit of admission: answered with a RST, no state kept.
    Reset,
}

/// Why a SYN is answered with a RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A policy rule blocks it (its index, `None`: the default action).
    Policy(Option<u32>),
    /// Over a limit of admission, with `over_limit = "reset"`.
    OverLimit,
    /// A segment of a connection to a TLS port whose SYN was not seen
    /// (`midstream = "reset"`).
    Midstream,
}

/// One worker's intercept path.
pub struct Intercept {
    cfg: InterceptConfig,
    /// Destination ports to intercept without a policy, as a bitmap.
    ports: Vec<u64>,
    /// Splices and probes.
    slots: Slots,
    /// Splice timers: (due ms, splice) in a min-heap. An entry is live while it
    /// equals its splice's `scheduled_ms`; entries of moved or finished timers are
    /// skipped when they surface, so rescheduling never searches the heap.
    timers: BinaryHeap<Reverse<(u64, SpliceId)>>,
    emit: EmitBuf,
    /// TLS interception state of this worker (None: no TLS material).
    pub tls: Option<TlsWorker>,
    /// This worker's event ring.
    pub events: Option<EventWriter>,
    /// Keys of the flows' stack seeds and timestamp offsets.
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    /// Flows this worker made, numbering their stack seeds.
    made: u64,
    worker: usize,
    /// Quotas and the memory budget.
    admission: Admission,
    /// Probes running, and their limits.
    probes: Probes,
    /// Flows waiting for a leaf from the signer, by ticket.
    leaf_waiters: std::collections::HashMap<u64, SpliceId>,
}

impl Intercept {
    /// Worker `worker`'s intercept path with `[intercept]`, TLS material (none:
    /// plain TCP splices only) and its event ring.
    pub fn new(
        worker: usize,
        cfg: InterceptConfig,
        tls: Option<Arc<TlsShared>>,
        events: Option<EventWriter>,
        secrets: Arc<Secrets>,
        clock: Arc<dyn Clock>,
        admission: AdmissionConfig,
    ) -> Self {
        let costs = costs(&cfg);
        let mut ports = vec![0u64; 1024];
        for &port in &cfg.ports {
            ports[usize::from(port) / 64] |= 1 << (port % 64);
        }
        Intercept {
            cfg,
            ports,
            slots: Slots::default(),
            timers: BinaryHeap::new(),
            emit: EmitBuf::default(),
            tls: tls.and_then(|shared| tls_worker(worker, shared)),
            events,
            secrets,
            clock,
            made: 0,
            worker,
            admission: Admission::new(admission, costs),
            probes: Probes::default(),
            leaf_waiters: std::collections::HashMap::new(),
        }
    }

    /// Splices and probes alive (and slots reserved for new ones).
    pub fn active(&self) -> usize {
        self.slots.taken
    }

    /// Whether the segment's connection is to a TLS port (either port of the
    /// segment: it may come from the server): the policy's `tls_ports`, else
    /// `intercept.ports`. Such connections are never forwarded uninspected unless a
    /// setting says so.
    pub fn tls_port(&self, seg: &Seg, live: &Live) -> bool {
        let (a, b) = (seg.key.lo_port(), seg.key.hi_port());
        match &live.policy {
            Some(p) => p.is_tls_port(a) || p.is_tls_port(b),
            None => [a, b].iter().any(|&p| self.ports[usize::from(p) / 64] & (1 << (p % 64)) != 0),
        }
    }

    /// Whether a new UDP flow from the inside is QUIC the policy wants decrypted
    /// and `quic = "block"` drops (decided by address and port: the SNI would
    /// take decrypting QUIC's Initial packets). An SNI rule that might exempt it
    /// cannot be read, so such a flow counts as one to decrypt: its client falls
    /// back to TCP, where the SNI is read. `quic = "pass"` forwards it, counted.
    pub fn quic_blocked<Q: Queues>(&self, seg: &Seg, live: &Live, io: &mut Io<Q>) -> bool {
        let (src, _, dst, dport) = seg.key.endpoints(seg.side);
        self.quic_decision(src, dst, dport, live, io)
    }

    /// As [`Intercept::quic_blocked`] for a UDP flow whose first packet came from
    /// the outside: the server (its source, from a TLS port) spoke first; the
    /// flow is decided as if the inside client had opened it, so that a reply
    /// sent ahead cannot open the way for the client's QUIC.
    pub fn quic_blocked_from_outside<Q: Queues>(&self, seg: &Seg, live: &Live, io: &mut Io<Q>) -> bool {
        let (server, sport, client, _) = seg.key.endpoints(seg.side);
        self.quic_decision(client, server, sport, live, io)
    }

    /// The QUIC decision for `client` → `server`:`port` (UDP).
    pub fn quic_decision<Q: Queues>(
        &self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        dport: u16,
        live: &Live,
        io: &mut Io<Q>,
    ) -> bool {
        let (decrypt, action) = match &live.policy {
            Some(p) if !p.is_tls_port(dport) => return false,
            Some(p) => match p.decide_at_syn(src, dst, dport).action {
                SynAction::Bypass { .. } => return false,
                SynAction::Block { .. } => return true,
                _ => (true, p.quic()),
            },
            None => (self.ports[usize::from(dport) / 64] & (1 << (dport % 64)) != 0, QuicAction::Block),
        };
        match (decrypt, action) {
            (true, QuicAction::Pass) => {
                io.c[idx::QUIC_PASSED] += 1;
                false
            }
            (true, _) => true,
            (false, _) => false,
        }
    }

    /// What TCP to a TLS port without a SYN seen gets (without a policy: dropped).
    pub fn midstream(&self, live: &Live) -> MidstreamAction {
        live.policy.as_ref().map_or(MidstreamAction::Drop, |p| p.midstream())
    }

    /// Half-open splices, and the bytes charged to the memory budget.
    pub fn admission_gauges(&self) -> (u64, u64) {
        (self.admission.half_open(), self.admission.memory)
    }

    /// New flows are intercepted with this TLS material from now on (running
    /// flows keep the state they began with).
    pub fn set_tls(&mut self, shared: Option<Arc<TlsShared>>) {
        self.tls = shared.and_then(|shared| tls_worker(self.worker, shared));
    }

    /// Takes a slot for the splice a new flow's SYN is about to make.
    pub fn reserve(&mut self) -> SpliceId {
        self.slots.reserve()
    }

    /// The decision for a new TCP flow whose SYN came in on `port` (its sender is
    /// the client): the policy's decision at SYN when there is a policy, else
    /// `intercept.ports`; only SYNs from the inside port are intercepted; a flow to
    /// intercept must pass admission's limits (over one: `over_limit`).
    pub fn admit<Q: Queues>(&mut self, seg: &Seg, port: usize, live: &Live, io: &mut Io<Q>) -> AtSyn {
        let (src, _, dst, dport) = seg.key.endpoints(seg.side);
        let verdict = match &live.policy {
            Some(policy) => match policy.decide_at_syn(src, dst, dport).action {
                SynAction::Block { rule } => {
                    io.rules.count(rule, Some(policy));
                    io.c[idx::POLICY_BLOCKED] += 1;
                    return AtSyn::Block(rule.map(|r| r.index() as u32));
                }
                SynAction::Bypass { rule } => {
                    io.rules.count(rule, Some(policy));
                    if port == tlsgate_drivers::INSIDE && policy.is_tls_port(dport) {
                        io.c[idx::SYN_NOT_DECRYPTED] += 1;
                    }
                    AtSyn::Forward
                }
                // Decrypt, or read the ClientHello first (an SNI rule comes first).
                _ if self.tls.is_some() => AtSyn::Intercept,
                _ => {
                    io.c[idx::POLICY_NO_TLS] += 1;
                    AtSyn::Forward
                }
            },
            None if self.ports[usize::from(dport) / 64] & (1 << (dport % 64)) != 0 => AtSyn::Intercept,
            None => AtSyn::Forward,
        };
        if verdict != AtSyn::Intercept {
            return verdict;
        }
        if port != tlsgate_drivers::INSIDE {
            // The legs are made for a client inside: a flow opened from outside is
            // not intercepted (a block rule above still applies).
            io.c[idx::INBOUND_NOT_INTERCEPTED] += 1;
            return AtSyn::Forward;
        }
        let refused = if self.slots.taken >= self.cfg.max_per_worker {
            Err(AdmissionReason::WorkerFull)
        } else {
            self.admission.admit(source_key(src))
        };
        let Err(reason) = refused else { return AtSyn::Intercept };
        io.c[match reason {
            AdmissionReason::SourceQuota => idx::ADMISSION_SOURCE_QUOTA,
            AdmissionReason::MemoryBudget => idx::ADMISSION_BUDGET,
            _ => idx::ADMISSION_WORKER_FULL,
        }] += 1;
        match self.admission.over_limit() {
            OverLimit::Drop => AtSyn::Drop,
            OverLimit::Reset => {
                io.c[idx::OVER_LIMIT_RESET] += 1;
                AtSyn::Reset
            }
            OverLimit::Forward => {
                io.c[idx::OVER_LIMIT_FORWARDED] += 1;
                if let Some(ev) = self.events.as_mut() {
                    let o = Outcome::new(
                        EventKind::Passed,
                        Leg::Client,
                        Phase::TcpConnect,
                        Cause::Admission(reason),
                    );
                    ev.at_syn(seg, o, None, live);
                }
                AtSyn::Forward
            }
        }
    }

    /// A segment of an intercepted flow into its splice (`new`: the client's SYN,
    /// which makes it in the slot reserved for it).
    #[allow(clippy::too_many_arguments)]
    pub fn segment<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        frame: Q::Frame,
        seg: &Seg,
        id: SpliceId,
        new: bool,
        live: &Live,
        now_ms: u64,
    ) {
        self.emit.clear();
        if new {
            self.made += 1;
            let (src, _, dst, dport) = seg.key.endpoints(seg.side);
            // With a policy, it only intercepts TLS ports; without, `[tls].ports` say.
            let tls = self
                .tls
                .as_ref()
                .filter(|t| live.policy.is_some() || t.shared.is_tls_port(dport))
                .map(|t| t.shared.handshake_timeout_ms);
            let setup = Setup {
                cfg: &self.cfg,
                tls,
                // RFC 6528: the flow's initial sequence numbers come from a keyed
                // hash of its 4-tuple and a counter.
                seed: self.secrets.stack_seed(&seg.key, self.made ^ (self.worker as u64) << 56),
                ts_offset: self.secrets.ts_offset(src, dst),
                first_byte_timeout_ms: self.admission.first_byte_timeout_ms(),
                policy: live.policy.clone(),
                config_version: live.version,
            };
            // Key-log lines left on this thread (a probe's) are not this flow's.
            let _ = tlsgate_certstore::take_thread_secrets();
            let mut splice = Splice::new(frame.data(), seg, setup, now_ms, &mut self.emit);
            splice.quota_slot = Some(source_key(src));
            io.c[idx::INTERCEPT_CREATED] += 1;
            if !self.slots.put(id, Occupant::Splice(Box::new(splice))) {
                // Not expected (the slot was reserved in this burst's track phase):
                // give back what admission charged for it.
                debug_assert!(false, "the slot reserved for a new splice was taken");
                self.admission.release_slot(source_key(src));
                self.admission.release_memory(false);
                return;
            }
        } else if let Some(p) = self.slots.probe(id) {
            let (src, sport, _, _) = seg.key.endpoints(seg.side);
            if (src, sport) == p.from {
                // Not the server: a client of the inside using this port of the
                // reserved range to the same server while the probe runs. Dropped
                // (its SYN is retried; the probe's flow ends within its timeout).
                io.c[idx::DROP_PROBE_COLLISION] += 1;
                return;
            }
            // The server's answer to a probe.
            self.emit.clear();
            let ip = &frame.data()[usize::from(seg.l3)..usize::from(seg.l3_end)];
            p.poll(
                Some(ip),
                now_ms,
                self.clock.unix_time(),
                &mut self.emit,
                self.tls.as_ref().map(|t| &*t.shared),
            );
            drop(frame);
            self.after_probe(io, flows, id, now_ms, 0);
            return;
        } else if let Some(s) = self.slots.splice(id) {
            if seg.payload > 0 && s.buffers() != Buffers::Full {
                // Data flows: the splice has earned its full buffers.
                if let Some(source) = s.quota_slot.take() {
                    self.admission.release_slot(source);
                }
                if !s.charged_full && !self.admission.grow() {
                    s.stay_small();
                    io.c[idx::GROW_DEFERRED] += 1;
                } else {
                    s.charged_full = true;
                    if s.grow(self.cfg.buffer_kib * 1024) {
                        io.c[idx::GROWN] += 1;
                    }
                }
            }
            let ip = &frame.data()[usize::from(seg.l3)..usize::from(seg.l3_end)];
            // Key-log lines left by other work on this thread (a probe) are not this flow's.
            let _ = tlsgate_certstore::take_thread_secrets();
            s.step(Some(ip), now_ms, &mut self.emit, self.tls.as_mut(), &*self.clock);
            if let Some((to, more)) = s.doubling(self.cfg.max_buffer_bytes()) {
                // A bulk transfer its buffers hold back: double them (up to
                // intercept.buffer_max_kib, within half of the memory budget).
                if self.admission.grow_bulk(more as u64) {
                    let grew = s.double(to);
                    debug_assert_eq!(grew, more, "both sockets could swap");
                    self.admission.release_bulk((more - grew.min(more)) as u64);
                    s.charged_bulk += grew.min(more) as u64;
                    if grew > 0 {
                        io.c[idx::BUFFERS_DOUBLED] += 1;
                        // The larger window goes out with the next poll: now.
                        s.wake(now_ms);
                    }
                }
            }
        } else {
            io.c[idx::DROP_TOMBSTONE] += 1;
            return;
        }
        drop(frame);
        self.after_step(io, flows, id, now_ms, 0);
    }

    /// Answers a refused SYN with a RST from its destination, out of the port it
    /// came in on, with its L2 header mirrored; a policy block has its event.
    pub fn block<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        frame: Q::Frame,
        seg: &Seg,
        port: usize,
        why: Refusal,
        live: &Live,
    ) {
        let reply =
            crate::wire::build::reset_reply(frame.data(), seg.l3.into(), seg.l4.into(), seg.payload.into());
        drop(frame);
        let Some(reply) = reply else { return };
        let Some(mut out) = io.alloc(reply.len()) else { return };
        out.data_mut().copy_from_slice(&reply);
        io.capture(out.data(), port, true);
        if let (Some(ev), Refusal::Policy(rule)) = (self.events.as_mut(), why) {
            ev.blocked_at_syn(seg, rule, live);
        }
        io.send(port, out);
    }

    /// A fresh SYN from the client of a live splice whose client leg has closed
    /// (the server leg still finishing): the client reuses its port. The old splice
    /// ends now, its flow a tombstone; returns whether it did.
    pub fn retire_for_reuse<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        id: SpliceId,
        seg: &Seg,
        now_ms: u64,
    ) -> bool {
        let Some(s) = self.slots.splice(id) else { return false };
        let (src, sport, _, _) = seg.key.endpoints(seg.side);
        let a = s.addrs();
        if (src, sport) != (a.client, a.client_port) || !s.client_leg_closed() {
            return false;
        }
        self.emit.clear();
        let _ = tlsgate_certstore::take_thread_secrets();
        s.retire(now_ms, &mut self.emit);
        self.after_step(io, flows, id, now_ms, 0);
        true
    }

    /// Timer polls (retransmissions, timeouts) of the splices that are due; returns
    /// how many were polled.
    pub fn run_timers<Q: Queues>(&mut self, io: &mut Io<Q>, flows: &mut FlowTable, now_ms: u64) -> usize {
        self.wake_signed(now_ms);
        let mut polled = 0;
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now_ms {
                break;
            }
            self.timers.pop();
            let Some((poll_at, scheduled)) = self.slots.timer(id) else { continue };
            if *scheduled != at {
                continue; // moved earlier: a newer entry is live
            }
            *scheduled = u64::MAX;
            if *poll_at > now_ms {
                // Moved later by traffic since: wait for the new time.
                self.schedule(id, 0);
                continue;
            }
            self.emit.clear();
            polled += 1;
            if let Some(p) = self.slots.probe(id) {
                p.poll(
                    None,
                    now_ms,
                    self.clock.unix_time(),
                    &mut self.emit,
                    self.tls.as_ref().map(|t| &*t.shared),
                );
                self.after_probe(io, flows, id, now_ms, now_ms + 1);
                continue;
            }
            if let Some(s) = self.slots.splice(id) {
                let _ = tlsgate_certstore::take_thread_secrets();
                // A quiet bulk transfer gives its send buffers back (before the
                // step, which then computes its next deadline without it).
                let freed = s.shrink_idle(now_ms, self.cfg.buffer_kib * 1024) as u64;
                if freed > 0 {
                    debug_assert!(freed <= s.charged_bulk, "gave back more than was charged");
                    let freed = freed.min(s.charged_bulk);
                    s.charged_bulk -= freed;
                    self.admission.release_bulk(freed);
                    io.c[idx::BUFFERS_SHRUNK] += 1;
                }
                s.step(None, now_ms, &mut self.emit, self.tls.as_mut(), &*self.clock);
                // At most one timer poll per splice and millisecond.
                self.after_step(io, flows, id, now_ms, now_ms + 1);
            }
        }
        polled
    }

    /// After a splice was stepped: sends what it emitted, frees it if it is done,
    /// else puts its next poll on the timer heap (not before `not_before`).
    fn after_step<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        id: SpliceId,
        now_ms: u64,
        not_before: u64,
    ) {
        let Some(s) = self.slots.splice(id) else { return };
        let secrets = tlsgate_certstore::take_thread_secrets();
        if !secrets.is_empty() {
            let a = s.addrs();
            io.capture_keys(a.client, a.client_port, a.server, a.port, secrets);
        }
        send_emitted(io, &s.l2_client, &s.l2_server, &self.emit);
        if let Some(ticket) = s.take_sign_ticket() {
            self.leaf_waiters.insert(ticket, id);
        }
        if let Some(request) = s.take_probe_request() {
            self.request_probe(io, flows, id, request, now_ms);
        }
        let Some(s) = self.slots.splice(id) else { return };
        if s.is_done() {
            self.reap(io, flows, id, now_ms);
        } else {
            self.schedule(id, not_before);
        }
    }

    /// The signer's answers that came: their flows are polled now.
    fn wake_signed(&mut self, now_ms: u64) {
        let Some(t) = self.tls.as_mut() else { return };
        for ticket in t.collect_signed() {
            let Some(id) = self.leaf_waiters.remove(&ticket) else { continue };
            if let Some(s) = self.slots.splice(id) {
                s.wake(now_ms);
                self.schedule(id, now_ms);
            }
        }
        if self.leaf_waiters.len() > 65_536 {
            // Tickets of flows that ended meanwhile (their answers never came).
            self.leaf_waiters.clear();
        }
    }

    /// Puts a splice's (or a probe's) next poll on the timer heap, not before
    /// `not_before`, when it is earlier than the one already there.
    fn schedule(&mut self, id: SpliceId, not_before: u64) {
        if let Some((poll_at, scheduled)) = self.slots.timer(id) {
            let at = (*poll_at).max(not_before);
            if at < *scheduled {
                *scheduled = at;
                self.timers.push(Reverse((at, id)));
            }
        }
    }
}

/// A worker's TLS state for `shared` (none when its leaf key cannot be made).
fn tls_worker(id: usize, shared: Arc<TlsShared>) -> Option<TlsWorker> {
    match TlsWorker::new(shared, id) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(worker = id, error = %e, "TLS interception disabled on this worker");
            None
        }
    }
}
