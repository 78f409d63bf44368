//! Events: one record per intercepted flow end (decrypted, abort, reset, timeout,
//! blocked, passed, not decrypted).
//!
//! ```text
//!  worker ──EventRecord──► its ring file (tlsgate-api, shared memory, never blocks)
//!                              │
//!  drain thread (not a worker) ┴─► events.jsonl + tls_proxy.log (the seed's lines)
//!  abort chains ──(bounded, by SHA-256)──► chains/<sha256>.pem
//! ```
//!
//! Until the control plane exists, the dataplane drains its own rings; the rings
//! are files so the control plane can take over as their consumer.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tlsgate_api::event::{alert_name, make_event_id, text, ALERT_NONE};
use tlsgate_api::{Consumer, EventKind, EventRecord, Producer};
use tlsgate_certstore::pki_types::CertificateDer;

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
    /// Range checks; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.ring_capacity.is_power_of_two() || self.ring_capacity < 16 {
            return Err(format!("events.ring_capacity: {} is not a power of two ≥ 16", self.ring_capacity));
        }
        if self.max_log_bytes < 4096 {
            return Err("events.max_log_bytes: at least 4096".into());
        }
        Ok(())
    }

    fn ring(&self, worker: usize) -> PathBuf {
        self.dir.join(format!("ring-{worker}.ev"))
    }
}

/// Certificate chains of aborts, waiting for the drain thread (bounded).
#[derive(Default)]
pub struct ChainStore {
    pending: Mutex<VecDeque<([u8; 32], Vec<CertificateDer<'static>>)>>,
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
    start_s: u64,
    seq: u64,
    worker: u8,
    /// Chains of aborts.
    pub chains: Arc<ChainStore>,
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl EventWriter {
    /// Opens (or reopens, keeping unread events) worker `worker`'s ring.
    pub fn open(cfg: &EventsConfig, worker: usize, chains: Arc<ChainStore>) -> Result<Self, String> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
        let producer = Producer::create(cfg.ring(worker), cfg.ring_capacity).map_err(|e| e.to_string())?;
        Ok(EventWriter { producer, start_s: unix_ns() / 1_000_000_000, seq: 0, worker: worker as u8, chains })
    }

    /// A record of `kind` with its id and time set.
    pub fn record(&mut self, kind: EventKind) -> EventRecord {
        self.seq += 1;
        let mut r = EventRecord::new(kind);
        r.event_id = make_event_id(self.start_s, self.worker, self.seq);
        r.connection_id = r.event_id;
        r.time_ns = unix_ns();
        r.worker = self.worker;
        r
    }

    /// Publishes a record; a full ring drops it (counted in the ring).
    pub fn emit(&mut self, r: &EventRecord) {
        let _ = self.producer.try_push(r);
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
                            stamp(unix_ns())
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
    std::fs::write(&path, pem).ok()?;
    Some(path)
}

fn append(cfg: &EventsConfig, name: &str, text: &str) {
    let path = cfg.dir.join(name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > cfg.max_log_bytes) {
        let _ = std::fs::rename(&path, cfg.dir.join(format!("{name}.1")));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(text.as_bytes());
    }
}

fn write_event(cfg: &EventsConfig, r: &EventRecord) {
    append(cfg, "events.jsonl", &format!("{}\n", r.to_json()));
    let mut log = String::new();
    for (level, line) in log_lines(r) {
        log.push_str(&format!("{} {level} TLS_Proxy - {line}\n", stamp(r.time_ns)));
    }
    append(cfg, "tls_proxy.log", &log);
}

/// The `tls_proxy.log` lines of an event, in the seed's shapes with our own error
/// text inside.
pub fn log_lines(r: &EventRecord) -> Vec<(&'static str, String)> {
    let session = r.session_label();
    let mut out = Vec::new();
    match r.kind() {
        Ok(EventKind::Abort) => {
            if r.verify_code != 0 {
                out.push((
                    "INFO",
                    format!(
                        "Certificate verification failure: {} (code {}, depth {})",
                        text(&r.verify_text),
                        r.verify_code,
                        r.verify_depth
                    ),
                ));
                out.push(("INFO", format!("Subject: {}", text(&r.server_cert_subject))));
                out.push(("INFO", format!("Issuer: {}", text(&r.server_cert_issuer))));
            }
            if r.alert_received != ALERT_NONE {
                let name = alert_name(r.alert_received).unwrap_or("unknown").replace('_', " ");
                out.push((
                    "INFO",
                    format!(
                        "SSL alert message received from server (0x{:x} = \"fatal : {name}\") in Session: {session}",
                        0x200 | u16::from(r.alert_received)
                    ),
                ));
            }
            let leg = if r.leg == 1 { "client" } else { "server" };
            out.push((
                "ERROR",
                format!(
                    "TLS problem ({}) while connecting to {leg} for Session: {session}",
                    text(&r.error_detail)
                ),
            ));
        }
        Ok(kind) if r.verify_code != 0 => {
            out.push((
                "WARN",
                format!(
                    "Certificate verification failure ignored (validation is off): {} (code {}, depth {}) in Session: {session}",
                    text(&r.verify_text),
                    r.verify_code,
                    r.verify_depth
                ),
            ));
            out.push(("WARN", format!("Subject: {}", text(&r.server_cert_subject))));
            out.push(("WARN", format!("Issuer: {}", text(&r.server_cert_issuer))));
            out.push(("INFO", summary_line(r, kind)));
        }
        Ok(kind) => out.push(("INFO", summary_line(r, kind))),
        Err(_) => {}
    }
    out
}

fn summary_line(r: &EventRecord, kind: EventKind) -> String {
    format!(
        "Session: {} {} {} -> {} sni {} rule {} bytes {}/{}",
        r.session_label(),
        kind.name(),
        r.src(),
        r.dst(),
        text(&r.sni),
        text(&r.rule),
        r.bytes_up,
        r.bytes_down
    )
}

/// `2014-02-05 05:21:42,189` (UTC).
pub fn stamp(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{ms:03}", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// Where events of a configuration go (for tests and tools).
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("tls_proxy.log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlsgate_api::event::set_text;

    #[test]
    fn stamps_like_the_seed() {
        // 2014-02-05 05:21:42.189 UTC, the seed's first log line.
        assert_eq!(stamp(1_391_577_702_189_000_000), "2014-02-05 05:21:42,189");
        assert_eq!(stamp(0), "1970-01-01 00:00:00,000");
    }

    #[test]
    fn seed_problem_lines() {
        let mut r = EventRecord::new(EventKind::Abort);
        r.leg = 2;
        r.alert_received = 40;
        r.session_id = 0x2fd1f6;
        set_text(&mut r.error_detail, "server sent fatal alert handshake_failure");
        let lines = log_lines(&r);
        assert_eq!(
            lines[0].1,
            "SSL alert message received from server (0x228 = \"fatal : handshake failure\") in Session: x2fd1f6"
        );
        assert_eq!(lines[1].0, "ERROR");
        assert!(lines[1].1.starts_with(
            "TLS problem (server sent fatal alert handshake_failure) while connecting to server"
        ));
        let mut r = EventRecord::new(EventKind::Abort);
        r.leg = 2;
        r.verify_code = 18;
        set_text(&mut r.verify_text, "self signed certificate");
        set_text(&mut r.server_cert_subject, "/unstructuredName=ciscoasa");
        set_text(&mut r.server_cert_issuer, "/unstructuredName=ciscoasa");
        let lines = log_lines(&r);
        assert_eq!(
            lines[0].1,
            "Certificate verification failure: self signed certificate (code 18, depth 0)"
        );
        assert_eq!(lines[1].1, "Subject: /unstructuredName=ciscoasa");
        assert_eq!(lines[2].1, "Issuer: /unstructuredName=ciscoasa");
    }
}
