//! Events: one record per intercepted flow end (decrypted, abort, reset, timeout,
//! blocked, passed, not decrypted), built from the flow's typed outcome
//! ([`EventWriter::flow_ended`]) and per SYN the policy blocked.
//!
//! ```text
//!  worker ──EventRecord──► its ring file (tlsgate-api, shared memory, never blocks)
//!                              │
//!  drain thread (not a worker) ┴─► events.jsonl + tls_proxy.log (the seed's lines)
//!  abort chains ──(bounded, by SHA-256)──► chains/<sha256>.pem
//! ```
//!
//! With a control plane (`[control]`) it is the rings' consumer and the abort
//! chains go up the control link; without one the dataplane drains its own rings
//! with the thread here.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tlsgate_api::event::make_event_id;
use tlsgate_api::event::set_text;
use tlsgate_api::log::{format_lines, stamp};
use tlsgate_api::{Cause, Consumer, EventKind, EventRecord, Leg, Outcome, Phase, Producer};
use tlsgate_certstore::pki_types::CertificateDer;

use crate::clock::Clock;
use crate::fastpath::Seg;
use crate::intercept::tcp::Splice;
use crate::intercept::tls::ALERT_HANDSHAKE_FAILURE;
use crate::live::Live;
use crate::Error;

/// `[events]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Directory of the rings, `events.jsonl`, `tls_proxy.log` and `chains/`.
    pub dir: PathBuf,
    /// Records per worker ring (power of two).
    #[serde(default = "default_capacity")]
    pub ring_capacity: u32,
    /// A log file is rotated (to `.1`) past this size.
    #[serde(default = "default_max_log")]
    pub max_log_bytes: u64,
    /// Abort chains kept.
    #[serde(default = "default_chains")]
    pub chains_kept: usize,
}

fn default_capacity() -> u32 {
    4096
}
fn default_max_log() -> u64 {
    10 << 20
}
fn default_chains() -> usize {
    256
}

impl EventsConfig {
    /// The defaults, in `dir`.
    pub fn at(dir: PathBuf) -> EventsConfig {
        EventsConfig {
            dir,
            ring_capacity: default_capacity(),
            max_log_bytes: default_max_log(),
            chains_kept: default_chains(),
        }
    }

    /// Range checks; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.ring_capacity.is_power_of_two() || self.ring_capacity < 16 {
            return Err(Error::Invalid(format!(
                "events.ring_capacity: {} is not a power of two ≥ 16",
                self.ring_capacity
            )));
        }
        if self.max_log_bytes < 4096 {
            return Err(Error::Invalid("events.max_log_bytes: at least 4096".into()));
        }
        Ok(())
    }

    fn ring(&self, worker: usize) -> PathBuf {
        self.dir.join(format!("ring-{worker}.ev"))
    }
}

/// Certificate chains of aborts, waiting for the drain thread or the control
/// link (bounded).
#[derive(Default)]
pub struct ChainStore {
    pending: Mutex<VecDeque<([u8; 32], Vec<CertificateDer<'static>>)>>,
}

impl ChainStore {
    /// The oldest chain waiting: its SHA-256 (hex) and the certificates as PEM.
    pub fn take(&self) -> Option<(String, String)> {
        let (sha, chain) = self.pending.lock().ok()?.pop_front()?;
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        let pem = chain.iter().map(|c| tlsgate_certstore::pem_encode("CERTIFICATE", c.as_ref())).collect();
        Some((hex, pem))
    }
}

impl ChainStore {
    /// Keeps a chain (aborts only: never on the forwarding path).
    pub fn put(&self, sha: [u8; 32], chain: Vec<CertificateDer<'static>>) {
        if let Ok(mut q) = self.pending.lock() {
            if q.len() < 64 {
                q.push_back((sha, chain));
            }
        }
    }
}

/// A worker's event producer.
pub struct EventWriter {
    producer: Producer,
    clock: Arc<dyn Clock>,
    start_s: u64,
    seq: u64,
    worker: u8,
    /// Chains of aborts.
    pub chains: Arc<ChainStore>,
}

impl EventWriter {
    /// Opens (or reopens, keeping unread events) worker `worker`'s ring.
    pub fn open(
        cfg: &EventsConfig,
        worker: usize,
        chains: Arc<ChainStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| Error::Io { path: cfg.dir.clone(), source })?;
        let producer = Producer::create(cfg.ring(worker), cfg.ring_capacity)?;
        let start_s = clock.unix_ns() / 1_000_000_000;
        Ok(EventWriter { producer, clock, start_s, seq: 0, worker: worker as u8, chains })
    }

    /// A record of `kind` with its id and time set.
    pub fn record(&mut self, kind: EventKind) -> EventRecord {
        self.seq += 1;
        let mut r = EventRecord::new(kind);
        r.event_id = make_event_id(self.start_s, self.worker, self.seq);
        r.connection_id = r.event_id;
        r.time_ns = self.clock.unix_ns();
        r.worker = self.worker;
        r
    }

    /// Publishes a record; a full ring drops it (counted in the ring).
    pub fn emit(&mut self, r: &EventRecord) {
        let _ = self.producer.try_push(r);
    }

    /// The event of an intercepted flow that ended: its outcome, endpoints, bytes,
    /// what the TLS layer learnt, and a certificate failure's chain (kept).
    pub fn flow_ended(&mut self, s: &Splice) {
        let Some(end) = s.ended() else { return };
        let mut o = end.outcome;
        let info = s.tls_info();
        if info.sni_unproved && (o.kind, o.cause) == (EventKind::Decrypted, Cause::Closed) {
            // Decrypted because the server did not prove the SNI of a
            // do-not-decrypt rule: a reason of its own.
            o.cause = Cause::SniUnproved;
        }
        let mut r = self.record(o.kind);
        let a = s.addrs();
        r.set_addrs((a.client, a.client_port).into(), (a.server, a.port).into());
        r.session_id = (r.event_id as u32) ^ ((r.event_id >> 32) as u32);
        r.bytes_up = s.relayed[0];
        r.bytes_down = s.relayed[1];
        r.inside_port = tlsgate_drivers::INSIDE as u8;
        r.outside_port = tlsgate_drivers::OUTSIDE as u8;
        r.config_version = s.config_version;
        r.tls_version = info.version;
        r.cipher_suite = info.suite;
        if let Some(j) = &info.ja4 {
            set_text(&mut r.ja4, j);
        }
        for (field, alpn) in
            [(&mut r.alpn_client, &info.alpn_client), (&mut r.alpn_server, &info.alpn_server)]
        {
            if let Some(a) = alpn {
                set_text(field, &String::from_utf8_lossy(a));
            }
        }
        (r.group_client, r.group_server) = (info.group_client, info.group_server);
        r.ech_offered = u8::from(info.ech_offered);
        if let Some(sni) = &info.sni {
            set_text(&mut r.sni, sni);
        }
        if let Some(rule) = &info.rule {
            set_text(&mut r.rule, rule);
        }
        if let (true, Some(v)) = (info.decrypted, info.unverified.as_ref().or(info.untrusted.as_ref())) {
            // Decrypted although the chain failed (validation off, or a check whose
            // action is `untrust`), and said so: the verifier's findings beside a
            // normal outcome.
            r.verify_code = v.reason.code() as u16;
            r.verify_depth = v.depth as u8;
            set_text(&mut r.verify_text, v.reason.text());
            set_text(&mut r.server_cert_subject, &v.subject);
            set_text(&mut r.server_cert_issuer, &v.issuer);
        }
        r.set_outcome(&o);
        if o.kind == EventKind::Abort && o.leg == Leg::Server {
            // The client got a handshake_failure alert for the server leg's failure.
            r.alert_sent = ALERT_HANDSHAKE_FAILURE;
        }
        if end.detail.is_empty() && info.decrypted && info.unverified.is_some() {
            set_text(
                &mut r.error_detail,
                "certificate validation is off: decrypted although the chain failed",
            );
        } else if end.detail.is_empty()
            && info.decrypted
            && (info.untrusted.is_some() || info.untrusted_resumed)
        {
            set_text(
                &mut r.error_detail,
                "the server's certificate failed a check whose action is untrust: the client got a certificate \
                 from the untrust CA",
            );
        } else {
            set_text(&mut r.error_detail, &end.detail);
        }
        if let Some(v) = &end.verify {
            set_text(&mut r.server_cert_subject, &v.subject);
            set_text(&mut r.server_cert_issuer, &v.issuer);
            r.chain_sha256 = v.chain_sha256.0;
            self.chains.put(v.chain_sha256.0, v.chain.clone());
        }
        self.emit(&r);
    }

    /// The event of a learned exclusion: the probe that confirmed it (its 4-tuple,
    /// the server's SNI), the failure it met, and how long the exclusion lasts.
    pub fn exclusion_learned(
        &mut self,
        p: &crate::intercept::probe::Probe,
        failure: Outcome,
        ttl: std::time::Duration,
        config_version: u64,
    ) {
        let o =
            Outcome::new(EventKind::ExclusionLearned, Leg::Server, Phase::ServerHandshake, Cause::Excluded);
        let mut r = self.record(o.kind);
        r.set_addrs(p.from.into(), (p.target.0, p.target.1).into());
        if let Some(sni) = &p.target.2 {
            set_text(&mut r.sni, sni);
        }
        r.set_outcome(&o);
        r.config_version = config_version;
        set_text(
            &mut r.error_detail,
            &format!(
                "the appliance's own ClientHello failed: {}; flows to this server pass undecrypted for {} s",
                failure.text(),
                ttl.as_secs()
            ),
        );
        self.emit(&r);
    }

    /// The event of a SYN the policy blocked (`rule`: its index, `None`: the
    /// default action) under `live`.
    pub fn blocked_at_syn(&mut self, seg: &Seg, rule: Option<u32>, live: &Live) {
        let o = Outcome::new(EventKind::Blocked, Leg::None, Phase::TcpConnect, Cause::Policy { rule });
        let name = rule.and_then(|i| live.policy.as_ref()?.rule_name(tlsgate_policy::RuleId::new(i)));
        self.at_syn(seg, o, name.or(Some("(default)")), live);
    }

    /// The event of a flow decided at its SYN (`seg`): its outcome, the rule's
    /// name if a rule decided.
    pub fn at_syn(&mut self, seg: &Seg, o: Outcome, rule: Option<&str>, live: &Live) {
        let (src, sport, dst, dport) = seg.key.endpoints(seg.side);
        let mut r = self.record(o.kind);
        r.set_addrs((src, sport).into(), (dst, dport).into());
        r.set_outcome(&o);
        if let Some(rule) = rule {
            set_text(&mut r.rule, rule);
        }
        r.config_version = live.version;
        self.emit(&r);
    }
}

/// The drain thread: rings → events.jsonl and tls_proxy.log, until `stop`, then a
/// last drain.
pub fn spawn_drain(
    cfg: EventsConfig,
    workers: usize,
    chains: Arc<ChainStore>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("tg-events".into()).spawn(move || {
        let mut consumers: Vec<Option<Consumer>> = (0..workers).map(|_| None).collect();
        let mut kept: VecDeque<PathBuf> = VecDeque::new();
        loop {
            let last = stop.load(Ordering::Relaxed);
            for (w, c) in consumers.iter_mut().enumerate() {
                if c.is_none() {
                    *c = Consumer::open(cfg.ring(w)).ok();
                }
                let Some(c) = c else { continue };
                let gap = c.take_gap();
                if gap > 0 {
                    append(
                        &cfg,
                        "tls_proxy.log",
                        &format!(
                            "{} WARN TLS_Proxy - {gap} events lost (ring of worker {w} was full)\n",
                            stamp(crate::clock::SystemClock.unix_ns())
                        ),
                    );
                }
                while let Some(r) = c.pop() {
                    write_event(&cfg, &r);
                }
            }
            if let Ok(mut q) = chains.pending.lock() {
                while let Some((sha, chain)) = q.pop_front() {
                    if let Some(p) = write_chain(&cfg, &sha, &chain) {
                        kept.push_back(p);
                        while kept.len() > cfg.chains_kept {
                            if let Some(old) = kept.pop_front() {
                                let _ = std::fs::remove_file(old);
                            }
                        }
                    }
                }
            }
            if last {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn write_chain(cfg: &EventsConfig, sha: &[u8; 32], chain: &[CertificateDer<'static>]) -> Option<PathBuf> {
    let dir = cfg.dir.join("chains");
    std::fs::create_dir_all(&dir).ok()?;
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{hex}.pem"));
    let pem: String =
        chain.iter().map(|c| tlsgate_certstore::pem_encode("CERTIFICATE", c.as_ref())).collect();
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&path).ok()?;
    f.write_all(pem.as_bytes()).ok()?;
    Some(path)
}

fn append(cfg: &EventsConfig, name: &str, text: &str) {
    let path = cfg.dir.join(name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > cfg.max_log_bytes) {
        let _ = std::fs::rename(&path, cfg.dir.join(format!("{name}.1")));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(&path) {
        let _ = f.write_all(text.as_bytes());
    }
}

fn write_event(cfg: &EventsConfig, r: &EventRecord) {
    append(cfg, "events.jsonl", &format!("{}\n", r.to_json()));
    append(cfg, "tls_proxy.log", &format_lines(r));
}

/// Where events of a configuration go (for tests and tools).
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("tls_proxy.log")
}
