//! The worker's probes: started when a flow's TLS layer asks for one, limited,
//! and concluded into the shared maps of what servers proved.
//!
//! ```text
//!  splice stepped ─► take_probe_request() ─► request_probe()
//!       ├─ a probe for (server, purpose) runs: join it (a proof's flow waits)
//!       ├─ over a limit (source, destination, in flight) or no free port: refused
//!       │     (the flow counts its name unproved; no exclusion is made)
//!       └─ start: a free port of the reserved range (owned by this worker under
//!          software steering), its flow in the table, Probe::new ─► SYN out
//!  server's segments ─► segment() ─► Probe::poll ─► after_probe()
//!  probe concluded ─► conclude(): proofs / confirmations / exclusions, event,
//!                     counters; waiting flows polled at once
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_api::{EventKind, Leg, Outcome, Phase};
use tlsgate_drivers::Queues;

use super::admission::source_key;
use super::ends::send_emitted;
use super::probe::{unsupported_mode, Probe, ProbeResult, Purpose, Route};
use super::slots::Occupant;
use super::tls::{ServerKey, TlsShared};
use super::Intercept;
use crate::counters::idx;
use crate::flow::{FlowKey, FlowTable, SpliceId, Track};
use crate::io::Io;
use crate::steer::owner;
use crate::wire::parse::tcp_flags;

/// A probe a flow asks for.
pub(super) struct Request {
    /// The server, and what for.
    pub target: ServerKey,
    pub purpose: Purpose,
    /// The flow's client (the probe leaves from its address).
    pub client: IpAddr,
    /// The flow's VLAN.
    pub vlan: u16,
    /// Ethernet + VLAN header towards the server.
    pub l2: Vec<u8>,
    /// How long its result, and an exclusion it makes, are kept (the flow's policy).
    pub ttl: Duration,
    pub exclusion_ttl: Duration,
}

/// A probe running.
struct Run {
    id: SpliceId,
    /// Flows waiting for it (proofs).
    waiting: Vec<SpliceId>,
    source: u128,
    ttl: Duration,
    exclusion_ttl: Duration,
    /// The TLS material it was started with: its result goes to its maps.
    shared: Arc<TlsShared>,
    config_version: u64,
}

/// The probes of one worker.
#[derive(Default)]
pub(super) struct Probes {
    running: HashMap<(ServerKey, Purpose), Run>,
    per_source: HashMap<u128, u32>,
    per_destination: HashMap<IpAddr, u32>,
    /// The next port of the reserved range to try.
    cursor: u32,
    /// Workers, under software steering: a probe's port must make its flow this
    /// worker's, so that the server's answers come back here.
    pub steering: Option<usize>,
}

/// Defaults when a flow has no policy (it then asks for no probe).
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_EXCLUSION_TTL: Duration = Duration::from_secs(43_200);

/// One in flight fewer for `key`.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Intercept {
    /// Splices under software steering among `workers` workers: probes choose ports
    /// whose flows this worker owns.
    pub fn steer_probes(&mut self, workers: usize) {
        self.probes.steering = (workers > 1).then_some(workers);
    }

    /// Probes running on this worker.
    pub fn probes_running(&self) -> usize {
        self.probes.running.len()
    }

    /// A probe the splice `id` asked for: joined, started, or refused (then a
    /// waiting flow decides without it).
    pub(super) fn request_probe<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        id: SpliceId,
        (target, purpose): (ServerKey, Purpose),
        now_ms: u64,
    ) {
        let Some(s) = self.slots.splice(id) else { return };
        let (ttl, exclusion_ttl) = s
            .policy
            .as_ref()
            .map_or((DEFAULT_TTL, DEFAULT_EXCLUSION_TTL), |p| (p.probe_ttl(), p.exclusion_ttl()));
        let request = Request {
            target,
            purpose,
            client: s.addrs().client,
            vlan: s.key.vlan(),
            l2: s.l2_server.clone(),
            ttl,
            exclusion_ttl,
        };
        let config_version = s.config_version;
        let waiter = (purpose == Purpose::Proof).then_some(id);
        if let Some(run) = self.probes.running.get_mut(&(request.target.clone(), purpose)) {
            run.waiting.extend(waiter);
            return;
        }
        if !self.start_probe(io, flows, request, waiter, config_version, now_ms) {
            io.c[idx::PROBES_REFUSED] += 1;
            if let Some(s) = waiter.and_then(|w| self.slots.splice(w)) {
                s.probe_over(now_ms);
            }
        }
    }

    /// Starts a probe; false when a limit or the ports refuse it.
    fn start_probe<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        r: Request,
        waiter: Option<SpliceId>,
        config_version: u64,
        now_ms: u64,
    ) -> bool {
        let Some(shared) = self.tls.as_ref().map(|t| t.shared.clone()) else { return false };
        let cfg = shared.probe;
        let source = source_key(r.client);
        let p = &self.probes;
        if p.per_source.get(&source).copied().unwrap_or(0) >= cfg.per_source
            || p.per_destination.get(&r.target.0).copied().unwrap_or(0) >= cfg.per_destination
            || p.running.len() >= usize::from(cfg.ports)
        {
            return false;
        }
        let Some((key, hash, port)) = self.free_port(flows, &r, cfg.port_base, cfg.ports, now_ms) else {
            return false;
        };
        let id = self.slots.reserve();
        flows.set_intercepted(&key, hash, id);
        self.made += 1;
        let seed = self.secrets.stack_seed(&key, self.made ^ (self.worker as u64) << 56);
        let ts_offset = self.secrets.ts_offset(r.client, r.target.0);
        self.emit.clear();
        let route = Route { from: (r.client, port), target: r.target.clone(), key, hash, l2: &r.l2 };
        let probe =
            Probe::new(route, r.purpose, seed, ts_offset, cfg.timeout_s * 1000, now_ms, &mut self.emit);
        self.slots.put(id, Occupant::Probe(Box::new(probe)));
        io.c[idx::PROBES_STARTED] += 1;
        *self.probes.per_source.entry(source).or_insert(0) += 1;
        *self.probes.per_destination.entry(r.target.0).or_insert(0) += 1;
        let run = Run {
            id,
            waiting: waiter.into_iter().collect(),
            source,
            ttl: r.ttl,
            exclusion_ttl: r.exclusion_ttl,
            shared,
            config_version,
        };
        self.probes.running.insert((r.target, r.purpose), run);
        self.after_probe(io, flows, id, now_ms, 0);
        true
    }

    /// A port of the reserved range whose 4-tuple (from the client's address to
    /// the server) is free in the flow table (and this worker's under software
    /// steering); its flow is made.
    fn free_port(
        &mut self,
        flows: &mut FlowTable,
        r: &Request,
        base: u16,
        ports: u16,
        now_ms: u64,
    ) -> Option<(FlowKey, u64, u16)> {
        for _ in 0..ports.min(1024) {
            let port = base + (self.probes.cursor % u32::from(ports)) as u16;
            self.probes.cursor = self.probes.cursor.wrapping_add(1);
            let (key, side) = FlowKey::tcp((r.client, port), (r.target.0, r.target.1), r.vlan);
            let hash = flows.hash(&key);
            if self.probes.steering.is_some_and(|n| owner(hash, n) != self.worker)
                || flows.get(&key, hash).is_some()
            {
                continue;
            }
            return match flows.track(&key, side, hash, tcp_flags::SYN, now_ms) {
                Track::Created => Some((key, hash, port)),
                _ => None, // the table is full
            };
        }
        None
    }

    /// After a probe was polled: sends what it emitted, concludes it once it has a
    /// result, else puts its next poll on the timer heap.
    pub(super) fn after_probe<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        id: SpliceId,
        now_ms: u64,
        not_before: u64,
    ) {
        // A probe's own handshake secrets never go to a key log.
        let _ = tlsgate_certstore::take_thread_secrets();
        let Some(p) = self.slots.probe(id) else { return };
        // A probe only ever talks to its server (nothing goes towards the client's
        // side, which has no header here).
        self.emit.packets.retain(|e| e.leg != tlsgate_api::Leg::Client);
        send_emitted(io, &[], &p.l2, &self.emit);
        match p.result() {
            Some(result) => self.conclude(io, flows, id, result, now_ms),
            None => self.schedule(id, not_before),
        }
    }

    /// A probe's result into the maps of its TLS material; its flow becomes a
    /// tombstone; the flows that waited are polled at once.
    fn conclude<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        id: SpliceId,
        result: ProbeResult,
        now_ms: u64,
    ) {
        let Some(Occupant::Probe(p)) = self.slots.take(id) else { return };
        flows.splice_ended(&p.key, p.hash, now_ms);
        let Some(run) = self.probes.running.remove(&(p.target.clone(), p.purpose)) else { return };
        debug_assert_eq!(run.id, id);
        release(&mut self.probes.per_source, &run.source);
        release(&mut self.probes.per_destination, &p.target.0);
        let shared = &run.shared;
        let key = p.target.clone();
        tracing::debug!(worker = self.worker, server = %key.0, port = key.1, sni = ?key.2, purpose = ?p.purpose,
            result = ?result, "probe concluded");
        match (p.purpose, result) {
            (Purpose::Proof, ProbeResult::Proved) => {
                shared.proofs.insert(key, now_ms, run.ttl, true);
                io.c[idx::PROBES_PROVED] += 1;
            }
            (Purpose::Proof, _) => {
                shared.proofs.insert(key, now_ms, run.ttl, false);
                io.c[idx::PROBES_NOT_PROVED] += 1;
            }
            (Purpose::Confirm, ProbeResult::Failed(cause)) if unsupported_mode(cause) => {
                let failure = Outcome::new(EventKind::Abort, Leg::Server, Phase::ServerHandshake, cause);
                shared.exclusions.insert(key.clone(), now_ms, run.exclusion_ttl, failure);
                shared.confirmations.insert(key, now_ms, run.exclusion_ttl, true);
                io.c[idx::EXCLUSIONS_LEARNED] += 1;
                if let Some(ev) = self.events.as_mut() {
                    ev.exclusion_learned(&p, failure, run.exclusion_ttl, run.config_version);
                }
            }
            (Purpose::Confirm, _) => {
                shared.confirmations.insert(key, now_ms, run.ttl, false);
                io.c[idx::PROBES_NOT_CONFIRMED] += 1;
            }
        }
        for w in run.waiting {
            if let Some(s) = self.slots.splice(w) {
                s.probe_over(now_ms);
            }
            self.schedule(w, 0);
        }
    }
}
