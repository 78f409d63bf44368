//! The event consumer: the dataplane's rings → `events.jsonl` and `tls_proxy.log`
//! (rotated by size), an index of recent events for queries, counters for
//! Prometheus, and the abort chains kept for `trust add --from-event`.
//!
//! ```text
//!  <events_dir>/ring-<w>.ev ──peek──► write events.jsonl + tls_proxy.log ──► advance
//!                                      └► index (recent N, by id) and counters
//!  dataplane ──Chain{sha256, pem}──► <state_dir>/chains/<sha256>.pem (newest chains_kept)
//! ```
//!
//! A record leaves its ring only after both lines are written (`peek`, write,
//! `advance`): a control plane that is stopped — even killed — between the two
//! finds it again at start, and the index (reloaded from the tail of
//! `events.jsonl`) skips what was already written. Events the dataplane produced
//! while no consumer ran wait in the ring (up to its size); a ring that overflowed
//! reports the gap, which is logged and counted.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tlsgate_api::log::{format_lines, stamp};
use tlsgate_api::{Consumer, EventKind, EventRecord, EventView};

use crate::error::{Error, Result};

/// Where things go and how much is kept.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// The dataplane's rings.
    pub events_dir: PathBuf,
    /// `tls_proxy.log`, `events.jsonl`.
    pub log_dir: PathBuf,
    /// Rotation size.
    pub max_log_bytes: u64,
    /// Rotated files kept.
    pub log_files_kept: usize,
    /// Recent events indexed.
    pub indexed: usize,
    /// Chains directory.
    pub chains_dir: PathBuf,
    /// Chains kept.
    pub chains_kept: usize,
}

/// A log file rotated by size: `name`, `name.1` … `name.<kept>`.
pub(crate) struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
    kept: usize,
}

impl LogFile {
    pub(crate) fn new(path: PathBuf, max: u64, kept: usize) -> LogFile {
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        LogFile { path, file: None, size, max, kept }
    }

    pub(crate) fn write(&mut self, text: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + text.len() as u64 > self.max {
            self.file = None;
            for k in (1..self.kept).rev() {
                let from = rotated(&self.path, k);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, k + 1))?;
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
            self.size = 0;
        }
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().create(true).append(true).mode(0o640).open(&self.path)?);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(text.as_bytes())?;
        }
        self.size += text.len() as u64;
        Ok(())
    }
}

fn rotated(path: &Path, k: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

/// Recent events, by id.
#[derive(Default)]
struct Index {
    events: VecDeque<EventView>,
    ids: HashSet<u64>,
}

/// Handshake results and failure reasons, for Prometheus.
#[derive(Debug, Clone, Default)]
pub struct EventCounters {
    /// Events by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Aborts by (leg, reason).
    pub aborts: BTreeMap<(String, String), u64>,
}

/// What filters `events list`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// After this time.
    pub since_ns: Option<u64>,
    /// After this id (in arrival order).
    pub after_id: Option<u64>,
    /// This kind.
    pub kind: Option<String>,
    /// This address or SNI.
    pub host: Option<String>,
    /// The newest this many.
    pub limit: Option<usize>,
}

/// The consumer and its outputs.
pub struct EventLog {
    s: EventSettings,
    index: Mutex<Index>,
    counters: Mutex<EventCounters>,
    files: Mutex<(LogFile, LogFile)>,
    logged: AtomicU64,
    lost: AtomicU64,
    /// Syslog collectors: each event is spooled for them before it is written.
    forward: std::sync::OnceLock<Vec<std::sync::Arc<crate::syslog::Forwarder>>>,
}

impl EventLog {
    /// Forwards every event written from now on to `collectors` (once).
    pub fn forward_to(&self, collectors: Vec<std::sync::Arc<crate::syslog::Forwarder>>) {
        let _ = self.forward.set(collectors);
    }

    /// Opens the log directory and reloads the index from the tail of
    /// `events.jsonl`.
    pub fn open(s: EventSettings) -> Result<EventLog> {
        for (d, mode) in [(&s.log_dir, 0o750), (&s.chains_dir, 0o700)] {
            fs::DirBuilder::new().recursive(true).mode(mode).create(d).map_err(Error::file(d))?;
        }
        let jsonl = s.log_dir.join("events.jsonl");
        let mut index = Index::default();
        // The current file first, then what rotation kept, newest last.
        let mut files: Vec<PathBuf> = (1..=s.log_files_kept).rev().map(|k| rotated(&jsonl, k)).collect();
        files.push(jsonl.clone());
        for path in files {
            let Ok(f) = File::open(&path) else { continue };
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<EventView>(&line) {
                    push_indexed(&mut index, v, s.indexed);
                }
            }
        }
        let files = (
            LogFile::new(jsonl, s.max_log_bytes, s.log_files_kept),
            LogFile::new(s.log_dir.join("tls_proxy.log"), s.max_log_bytes, s.log_files_kept),
        );
        Ok(EventLog {
            s,
            index: Mutex::new(index),
            counters: Mutex::new(EventCounters::default()),
            files: Mutex::new(files),
            logged: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            forward: std::sync::OnceLock::new(),
        })
    }

    /// Events written since start.
    pub fn logged(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }

    /// Events the rings reported lost since start.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Results and reasons since start.
    pub fn counters(&self) -> EventCounters {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Writes one record (unless it was written before a restart) and indexes it.
    pub fn record(&self, r: &EventRecord) -> std::io::Result<()> {
        let view = r.view();
        {
            let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            if index.ids.contains(&r.event_id) {
                return Ok(()); // written before a restart, not yet advanced over
            }
        }
        // Spooled for the collectors first: an event in events.jsonl is in every
        // spool (a crash in between spools it again: at least once).
        for f in self.forward.get().into_iter().flatten() {
            f.spool(&view);
        }
        {
            let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            let json = serde_json::to_string(&view).map_err(std::io::Error::other)?;
            // The log lines first: a reader that sees the event in
            // events.jsonl finds its lines in tls_proxy.log.
            files.1.write(&format_lines(r))?;
            files.0.write(&format!("{json}\n"))?;
        }
        self.count(r);
        self.logged.fetch_add(1, Ordering::Relaxed);
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        push_indexed(&mut index, view, self.s.indexed);
        Ok(())
    }

    fn count(&self, r: &EventRecord) {
        let kind = EventKind::label(r.kind).into_owned();
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *c.by_kind.entry(kind).or_insert(0) += 1;
        if matches!(r.kind(), Ok(EventKind::Abort)) {
            let leg = tlsgate_api::Leg::label(r.leg).into_owned();
            *c.aborts.entry((leg, abort_reason(r))).or_insert(0) += 1;
        }
    }

    /// A gap the ring of `worker` reported.
    pub fn gap(&self, worker: &str, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        let line = format!(
            "{} WARN TLS_Proxy - {n} events lost (the ring of worker {worker} was full)\n",
            stamp(now_ns())
        );
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = files.1.write(&line);
    }

    /// Recent events matching `f`, oldest first.
    pub fn list(&self, f: &Filter) -> Vec<EventView> {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let mut skip_until_after = f.after_id.is_some();
        let mut out: Vec<EventView> = Vec::new();
        for e in &index.events {
            if skip_until_after {
                if Some(e.event_id) == f.after_id {
                    skip_until_after = false;
                }
                continue;
            }
            if f.since_ns.is_some_and(|t| e.time_ns <= t) {
                continue;
            }
            if f.kind.as_deref().is_some_and(|k| e.kind != k) {
                continue;
            }
            if let Some(h) = &f.host {
                let hit = [&e.src_ip, &e.dst_ip, &e.sni].contains(&h);
                if !hit {
                    continue;
                }
            }
            out.push(e.clone());
        }
        // An unknown after_id (evicted): everything matching.
        if skip_until_after {
            drop(index);
            return self.list(&Filter { after_id: None, ..f.clone() });
        }
        if let Some(n) = f.limit {
            let extra = out.len().saturating_sub(n);
            out.drain(..extra);
        }
        out
    }

    /// One recent event.
    pub fn get(&self, id: u64) -> Option<EventView> {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        index.events.iter().rev().find(|e| e.event_id == id).cloned()
    }

    /// Keeps an abort chain (PEM) under its SHA-256; the oldest beyond
    /// `chains_kept` go.
    pub fn store_chain(&self, sha256: &str, pem: &str) -> Result<()> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::ChainName(sha256.to_string()));
        }
        let path = self.s.chains_dir.join(format!("{}.pem", sha256.to_ascii_lowercase()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .map_err(Error::file(&path))?;
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&self.s.chains_dir)?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "pem"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if kept.len() > self.s.chains_kept {
            kept.sort();
            for (_, p) in &kept[..kept.len() - self.s.chains_kept] {
                let _ = fs::remove_file(p);
            }
        }
        Ok(())
    }

    /// A kept chain (PEM).
    pub fn chain(&self, sha256: &str) -> Option<String> {
        fs::read_to_string(self.s.chains_dir.join(format!("{}.pem", sha256.to_ascii_lowercase()))).ok()
    }

    /// The drain thread: every ring in the events directory, until `stop` (then a
    /// last pass).
    pub fn spawn_drain(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new().name("tg-events".into()).spawn(move || {
            let mut consumers: HashMap<PathBuf, Consumer> = HashMap::new();
            let mut refused: HashSet<PathBuf> = HashSet::new();
            loop {
                let last = stop.load(Ordering::Relaxed);
                me.drain_once(&mut consumers, &mut refused);
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    fn drain_once(&self, consumers: &mut HashMap<PathBuf, Consumer>, refused: &mut HashSet<PathBuf>) {
        if let Ok(dir) = fs::read_dir(&self.s.events_dir) {
            for entry in dir.filter_map(Result::ok) {
                let path = entry.path();
                let ring = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ring-") && n.ends_with(".ev"));
                if !ring || consumers.contains_key(&path) {
                    continue;
                }
                match Consumer::open(&path) {
                    Ok(c) => {
                        refused.remove(&path);
                        tracing::info!(ring = %path.display(), pending = c.pending(), "reading events");
                        consumers.insert(path, c);
                    }
                    Err(e) => {
                        if refused.insert(path.clone()) {
                            tracing::warn!(ring = %path.display(), error = %e, "cannot read this ring yet");
                        }
                    }
                }
            }
        }
        consumers.retain(|path, c| {
            let worker = path
                .file_stem()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("ring-"))
                .unwrap_or("?")
                .to_string();
            let gap = c.take_gap();
            if gap > 0 {
                self.gap(&worker, gap);
            }
            while let Some(r) = c.peek() {
                if let Err(e) = self.record(&r) {
                    tracing::error!(error = %e, "writing an event; it stays in the ring");
                    break;
                }
                c.advance();
            }
            // A producer with another layout replaced the file: follow it.
            !c.is_replaced()
        });
    }
}

fn push_indexed(index: &mut Index, v: EventView, cap: usize) {
    let id = v.event_id;
    if id == 0 || !index.ids.insert(id) {
        return;
    }
    index.events.push_back(v);
    while index.events.len() > cap {
        if let Some(old) = index.events.pop_front() {
            index.ids.remove(&old.event_id);
        }
    }
}

/// The Prometheus `reason` label of an abort: derived from its [`tlsgate_api::Cause`]
/// (`unknown` for a record whose cause this build cannot read).
pub fn abort_reason(r: &EventRecord) -> String {
    r.outcome().map_or_else(|_| "unknown".to_string(), |o| o.cause.reason().into_owned())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlsgate_api::event::set_text;
    use tlsgate_api::Producer;

    fn settings(dir: &Path) -> EventSettings {
        EventSettings {
            events_dir: dir.join("rings"),
            log_dir: dir.join("log"),
            max_log_bytes: 8192,
            log_files_kept: 2,
            indexed: 100,
            chains_dir: dir.join("chains"),
            chains_kept: 2,
        }
    }

    fn abort(id: u64) -> EventRecord {
        let mut r = EventRecord::new(EventKind::Abort);
        r.event_id = id;
        r.set_outcome(&tlsgate_api::Outcome::new(
            EventKind::Abort,
            tlsgate_api::Leg::Server,
            tlsgate_api::Phase::ServerHandshake,
            tlsgate_api::Cause::AlertReceived(40),
        ));
        r.session_id = id as u32;
        set_text(&mut r.error_detail, "received fatal alert: HandshakeFailure");
        r
    }

    #[test]
    fn drains_rings_writes_logs_indexes_and_survives_a_restart_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        fs::create_dir_all(&s.events_dir).unwrap();
        let mut p = Producer::create(s.events_dir.join("ring-0.ev"), 64).unwrap();
        for id in 1..=5 {
            assert!(p.try_push(&abort(id)));
        }
        let log = Arc::new(EventLog::open(s.clone()).unwrap());
        let (mut c, mut r) = (HashMap::new(), HashSet::new());
        log.drain_once(&mut c, &mut r);
        assert_eq!(log.logged(), 5);
        assert_eq!(log.list(&Filter { kind: Some("abort".into()), ..Default::default() }).len(), 5);
        assert_eq!(log.get(3).unwrap().event_id, 3);
        let text = fs::read_to_string(s.log_dir.join("tls_proxy.log")).unwrap();
        assert!(text.contains("(0x228 = \"fatal : handshake failure\") in Session: x3"), "{text}");
        assert_eq!(log.counters().aborts[&("server".to_string(), "alert handshake_failure".to_string())], 5);
        drop(c);
        // Restart: the index comes back from the file; a record pushed again (as
        // if the previous consumer was killed between writing and advancing) is
        // not written twice.
        assert!(p.try_push(&abort(5)));
        assert!(p.try_push(&abort(6)));
        let log = Arc::new(EventLog::open(s.clone()).unwrap());
        let (mut c, mut r) = (HashMap::new(), HashSet::new());
        log.drain_once(&mut c, &mut r);
        assert_eq!(log.logged(), 1);
        let lines = fs::read_to_string(s.log_dir.join("events.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 6, "{lines}");
        assert_eq!(
            log.list(&Filter { after_id: Some(4), ..Default::default() })
                .iter()
                .map(|e| e.event_id)
                .collect::<Vec<_>>(),
            vec![5, 6]
        );
    }

    #[test]
    fn logs_rotate_and_chains_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let log = EventLog::open(s.clone()).unwrap();
        for id in 1..=120 {
            log.record(&abort(id)).unwrap();
        }
        assert!(s.log_dir.join("events.jsonl.1").exists());
        assert!(s.log_dir.join("events.jsonl.2").exists());
        assert!(!s.log_dir.join("events.jsonl.3").exists(), "kept 2");
        assert!(fs::metadata(s.log_dir.join("events.jsonl")).unwrap().len() <= 8192);
        for (i, sha) in ["a", "b", "c"].iter().enumerate() {
            log.store_chain(&sha.repeat(64), &format!("chain {i}")).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(log.chain(&"a".repeat(64)).is_none(), "the oldest went");
        assert_eq!(log.chain(&"c".repeat(64)).as_deref(), Some("chain 2"));
        assert!(log.store_chain("../../etc/passwd", "x").is_err());
    }
}
