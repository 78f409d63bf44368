//! Events to an existing pipeline: each event as an OCSF 1.3 Network Activity
//! record in an RFC 5424 syslog message, delivered at least once over RELP
//! (optionally in TLS) to each configured collector.
//!
//! ```text
//!  event drain ──record()──► spool (state_dir/syslog/<collector>.spool: one message per line,
//!                             appended before events.jsonl; bounded: an overflow is counted)
//!  sender thread per collector: connect ─► RELP open ─► send from the acknowledged offset,
//!      up to WINDOW unacknowledged ─► "rsp 200" in order moves the offset (<collector>.offset,
//!      written atomically) ─► fully acknowledged: the spool is emptied
//!      refused / closed / timeout: reconnect with back-off and send again from the offset
//! ```
//!
//! Plain TCP syslog has no acknowledgement, so it cannot deliver at least
//! once; RELP answers each message. A message can arrive twice (sent, then the
//! connection or the control plane died before its answer); none is lost while
//! the spool has room, across a collector outage and a control-plane restart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tlsgate_api::EventView;

/// `[[control.syslog]]`: one collector.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    /// A name for the spool and the metrics (`[A-Za-z0-9_-]`, 1-32).
    pub name: String,
    /// `host:port` of its RELP input.
    pub target: String,
    /// RELP over TLS.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: the CA certificate (PEM) the collector's certificate must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// With `tls`: the name its certificate must hold (default: the target's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The spool's size limit, bytes (default 64 MiB).
    #[serde(default = "default_spool")]
    pub spool_max_bytes: u64,
}

fn default_spool() -> u64 {
    64 << 20
}

impl Collector {
    /// Checks; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 32
            || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("name {:?}: 1-32 characters of [A-Za-z0-9_-]", self.name));
        }
        if self.target.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return Err(format!("target {:?} is not host:port", self.target));
        }
        if self.tls && self.ca.is_none() {
            return Err("tls needs ca (the collector's CA certificate)".into());
        }
        if self.spool_max_bytes < 65_536 {
            return Err("spool_max_bytes: at least 65536".into());
        }
        Ok(())
    }
}

/// The OCSF 1.3 Network Activity record (class 4001) of an event, with the
/// `tls` object and tlsgate's own leg, phase and cause under `unmapped`.
pub fn ocsf(e: &EventView, hostname: &str) -> Value {
    // activity: 2 Close (a flow that ended), 3 Reset, 4 Fail (an abort), 5 Refuse (blocked).
    let (activity_id, activity) = match e.kind.as_str() {
        "abort" => (4, "Fail"),
        "blocked" => (5, "Refuse"),
        "reset" => (3, "Reset"),
        _ => (2, "Close"),
    };
    let (severity_id, severity) = if e.kind == "abort" { (3, "Medium") } else { (1, "Informational") };
    let alert = e.alert_sent.as_ref().or(e.alert_received.as_ref());
    let mut tls = json!({ "version": e.tls_version, "cipher": e.cipher_suite });
    if !e.sni.is_empty() {
        tls["sni"] = json!(e.sni);
    }
    if let Some(a) = alert {
        tls["alert"] = json!(a.code);
    }
    if !e.server_cert_subject.is_empty() {
        tls["certificate"] = json!({
            "subject": e.server_cert_subject,
            "issuer": e.server_cert_issuer,
            "fingerprints": e.chain_sha256.as_ref().map(|h| vec![json!({ "algorithm_id": 3, "algorithm": "SHA-256", "value": h })]),
        });
    }
    let status_detail = if e.verify_code != 0 {
        format!("{} (code {}, depth {})", e.verify_text, e.verify_code, e.verify_depth)
    } else {
        e.error_detail.clone()
    };
    let mut v = json!({
        "class_uid": 4001,
        "class_name": "Network Activity",
        "category_uid": 4,
        "category_name": "Network Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 400100 + activity_id,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": if e.kind == "abort" || e.kind == "blocked" { 2 } else { 1 },
        "status": if e.kind == "abort" || e.kind == "blocked" { "Failure" } else { "Success" },
        "status_detail": status_detail,
        "time": e.time_ns / 1_000_000,
        "metadata": {
            "version": "1.3.0",
            "uid": e.event_id.to_string(),
            "product": { "name": "tlsgate", "vendor_name": "tlsgate", "version": env!("CARGO_PKG_VERSION") },
            "log_name": "events",
        },
        "device": { "hostname": hostname },
        "src_endpoint": { "ip": e.src_ip, "port": e.src_port },
        "dst_endpoint": { "ip": e.dst_ip, "port": e.dst_port },
        "connection_info": { "protocol_name": "tcp", "protocol_ver_id": e.ip_version, "direction_id": 2, "direction": "Outbound", "uid": e.connection_id.to_string() },
        "traffic": { "bytes_in": e.bytes_down, "bytes_out": e.bytes_up },
        "tls": tls,
        "unmapped": {
            "kind": e.kind, "leg": e.leg, "phase": e.phase, "cause": e.cause, "reason": e.reason,
            "rule": e.rule, "config_version": e.config_version, "session_id": e.session_id,
            "alpn_client": e.alpn_client, "alpn_server": e.alpn_server,
            "group_client": e.group_client, "group_server": e.group_server, "ech_offered": e.ech_offered,
        },
    });
    if !e.sni.is_empty() {
        v["dst_endpoint"]["hostname"] = json!(e.sni);
    }
    if let Some(j) = &e.ja4 {
        v["ja4_fingerprint_list"] = json!([{ "type_id": 1, "type": "JA4", "value": j }]);
    }
    v
}

/// The RFC 5424 message of an event: facility local0, severity warning for an
/// abort, informational otherwise; APP-NAME tlsgate, MSGID the event's kind; the
/// OCSF record as MSG.
pub fn rfc5424(e: &EventView, hostname: &str) -> String {
    let severity = if e.kind == "abort" { 4 } else { 6 };
    // RFC 5424: at most 6 fractional digits.
    let micros = e.time_ns / 1000 * 1000;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".into());
    let kind: String = e.kind.chars().filter(char::is_ascii_graphic).take(32).collect();
    format!(
        "<{}>1 {time} {hostname} tlsgate - {} - {}",
        16 * 8 + severity,
        if kind.is_empty() { "-".into() } else { kind },
        ocsf(e, hostname)
    )
}

/// The host name for messages (printable ASCII, 255 at most; `-` when unknown).
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name.trim().chars().filter(char::is_ascii_graphic).take(255).collect();
    if name.is_empty() {
        "-".into()
    } else {
        name
    }
}

/// Counters of one collector.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages spooled.
    pub spooled: AtomicU64,
    /// Messages the collector acknowledged.
    pub delivered: AtomicU64,
    /// Messages not spooled: the spool was full.
    pub dropped: AtomicU64,
    /// Whether a RELP session is open.
    pub connected: AtomicBool,
}

/// The spool of one collector: messages appended, acknowledged up to `acked`.
struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
    acked: u64,
    offset_path: PathBuf,
}

impl Spool {
    fn open(dir: &Path, name: &str) -> std::io::Result<Spool> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let path = dir.join(format!("{name}.spool"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        let mut len = file.metadata()?.len();
        // A line torn by a crash is cut off (its event is spooled again: it
        // was still in its ring).
        if len > 0 {
            let mut bytes = Vec::new();
            (&file).seek(SeekFrom::Start(0))?;
            (&file).read_to_end(&mut bytes)?;
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i as u64 + 1);
            if whole < len {
                file.set_len(whole)?;
                len = whole;
            }
        }
        let offset_path = dir.join(format!("{name}.offset"));
        let stored = std::fs::read_to_string(&offset_path).ok().and_then(|t| t.trim().parse::<u64>().ok());
        let spool = Spool { path, file, len, acked: stored.unwrap_or(0).min(len), offset_path };
        if stored.is_some_and(|o| o > len) {
            spool.save_offset()?; // never again past the end (after a crash while compacting)
        }
        Ok(spool)
    }

    fn save_offset(&self) -> std::io::Result<()> {
        let tmp = self.offset_path.with_extension("offset.tmp");
        std::fs::write(&tmp, format!("{}\n", self.acked))?;
        std::fs::rename(&tmp, &self.offset_path)
    }

    /// Drops the acknowledged head of the spool: what is left (not yet
    /// acknowledged) is copied to a new file that replaces it. Returns how many
    /// bytes offsets move back. The offset is set to 0 before the rename: a
    /// crash in between sends the old head again (at least once), never skips.
    fn compact(&mut self, path: &Path) -> std::io::Result<u64> {
        let shift = self.acked;
        if shift == 0 {
            return Ok(0);
        }
        let mut tail = Vec::with_capacity((self.len - shift) as usize);
        (&self.file).seek(SeekFrom::Start(shift))?;
        (&self.file).take(self.len - shift).read_to_end(&mut tail)?;
        let tmp = path.with_extension("spool.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&tail)?;
        self.acked = 0;
        self.save_offset()?;
        std::fs::rename(&tmp, path)?;
        self.file = f;
        self.len = tail.len() as u64;
        Ok(shift)
    }
}

/// One collector: its spool and its sender.
pub struct Forwarder {
    /// Its configuration.
    pub collector: Collector,
    /// Its counters.
    pub counters: Counters,
    spool: Mutex<Spool>,
    wake: std::sync::Condvar,
    hostname: String,
    /// (offset, refusals) of the message the collector last refused.
    refused: Mutex<(u64, u32)>,
}

/// Messages sent and not yet acknowledged, at most.
const WINDOW: usize = 64;
/// How long an answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

impl Forwarder {
    /// Opens `collector`'s spool in `dir` (what an earlier run left is sent first).
    pub fn open(collector: Collector, dir: &Path) -> std::io::Result<Arc<Forwarder>> {
        let spool = Spool::open(dir, &collector.name)?;
        let pending = spool.len - spool.acked;
        if pending > 0 {
            tracing::info!(collector = %collector.name, bytes = pending, "syslog: spooled events from before are sent first");
        }
        Ok(Arc::new(Forwarder {
            collector,
            counters: Counters::default(),
            spool: Mutex::new(spool),
            wake: std::sync::Condvar::new(),
            hostname: hostname(),
            refused: Mutex::new((u64::MAX, 0)),
        }))
    }

    /// Spools an event (called by the event drain before the event is written
    /// to `events.jsonl`). A full spool or a failed write drops it for this
    /// collector, counted and logged.
    pub fn spool(&self, e: &EventView) {
        let mut line = rfc5424(e, &self.hostname);
        line.retain(|c| c != '\n' && c != '\r');
        line.push('\n');
        let mut s = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
        if s.len - s.acked + line.len() as u64 > self.collector.spool_max_bytes {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::error!(collector = %self.collector.name, dropped = n + 1, "syslog spool full: events not forwarded (counted)");
            }
            return;
        }
        match s.file.write_all(line.as_bytes()) {
            Ok(()) => {
                s.len += line.len() as u64;
                self.counters.spooled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // No half line stays behind to merge with the next one.
                let len = s.len;
                let _ = s.file.set_len(len);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(collector = %self.collector.name, error = %e, "syslog spool write failed (counted)");
            }
        }
        drop(s);
        self.wake.notify_all();
    }

    /// Bytes waiting in the spool.
    pub fn pending_bytes(&self) -> u64 {
        let s = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
        s.len - s.acked
    }

    /// The sender: until `stop`, sessions with the collector, reconnecting
    /// with back-off.
    pub fn run(&self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(500);
        while !stop.load(Ordering::Relaxed) {
            match self.session(stop) {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) => {
                    self.counters.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(collector = %self.collector.name, target = %self.collector.target, error = %e, retry_ms = backoff.as_millis() as u64, "syslog: collector unreachable; events stay spooled");
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.counters.connected.store(false, Ordering::Relaxed);
    }

    fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let addr: SocketAddr = self
            .collector
            .target
            .to_socket_addrs()
            .map_err(|e| format!("resolving {}: {e}", self.collector.target))?
            .next()
            .ok_or("no address")?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connecting: {e}"))?;
        tcp.set_nodelay(true).ok();
        // Reads wake every second (an answer's own deadline is ANSWER_TIMEOUT).
        tcp.set_read_timeout(Some(Duration::from_secs(1))).ok();
        tcp.set_write_timeout(Some(Duration::from_secs(10))).ok();
        if !self.collector.tls {
            return Ok(Box::new(tcp));
        }
        let ca = self.collector.ca.as_deref().ok_or("tls without ca")?;
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let host = self.collector.server_name.clone().unwrap_or_else(|| {
            self.collector
                .target
                .rsplit_once(':')
                .map_or(String::new(), |(h, _)| h.trim_matches(['[', ']']).to_string())
        });
        let tls = tlsgate_certstore::tls_client_stream(tcp, &pem, &host).map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(tls))
    }

    /// One RELP session: open, then send from the acknowledged offset until an
    /// error or `stop`.
    fn session(&self, stop: &AtomicBool) -> Result<(), String> {
        let mut s = self.connect()?;
        let mut relp = Relp::default();
        let offer = "relp_version=0\nrelp_software=tlsgate\ncommands=syslog";
        relp.send(&mut *s, "open", offer.as_bytes())?;
        let (_, code) = relp.answer(&mut *s)?;
        if code != 200 {
            return Err(format!("open refused ({code})"));
        }
        self.counters.connected.store(true, Ordering::Relaxed);
        tracing::info!(collector = %self.collector.name, target = %self.collector.target, "syslog: RELP session open");
        // (txnr, end offset) of messages sent and not yet answered, in order.
        let mut in_flight: std::collections::VecDeque<(u64, u64)> = std::collections::VecDeque::new();
        let mut sent_to = self.spool.lock().unwrap_or_else(PoisonError::into_inner).acked;
        let mut last_save = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // Send what the window allows.
            while in_flight.len() < WINDOW {
                let Some((msg, end)) = self.read_at(sent_to)? else { break };
                let txnr = relp.send(&mut *s, "syslog", &msg)?;
                in_flight.push_back((txnr, end));
                sent_to = end;
            }
            if in_flight.is_empty() {
                let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
                if spool.len == sent_to {
                    let _ = self.wake.wait_timeout(spool, Duration::from_millis(200));
                }
                continue;
            }
            let (txnr, code) = relp.answer(&mut *s)?;
            let Some(&(first, end)) = in_flight.front() else { continue };
            if txnr != first {
                return Err(format!("answer {txnr} where {first} was due"));
            }
            if code != 200 {
                // The collector refuses this message: sent again on the next
                // session, and skipped (counted) after the third refusal.
                let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
                let spool_acked = self.spool.lock().unwrap_or_else(PoisonError::into_inner).acked;
                let n = if refused.0 == spool_acked { refused.1 + 1 } else { 1 };
                *refused = (spool_acked, n);
                if n < 3 {
                    return Err(format!("message refused ({code})"));
                }
                tracing::error!(collector = %self.collector.name, code, "syslog: a message refused three times is skipped (counted)");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.pop_front();
            let mut spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
            spool.acked = end;
            let half = self.collector.spool_max_bytes / 2;
            if (in_flight.is_empty() && spool.acked == spool.len) || spool.acked >= half {
                let path = spool.path.clone();
                let shift = spool.compact(&path).map_err(|e| format!("spool: {e}"))?;
                sent_to -= shift;
                for f in in_flight.iter_mut() {
                    f.1 -= shift;
                }
                last_save = Instant::now();
            } else if last_save.elapsed() > Duration::from_millis(200) {
                spool.save_offset().map_err(|e| format!("spool offset: {e}"))?;
                last_save = Instant::now();
            }
        }
        let _ = relp.send(&mut *s, "close", b"");
        Ok(())
    }

    /// The message at `offset` of the spool and where the next one starts.
    fn read_at(&self, offset: u64) -> Result<Option<(Vec<u8>, u64)>, String> {
        let spool = self.spool.lock().unwrap_or_else(PoisonError::into_inner);
        if offset >= spool.len {
            return Ok(None);
        }
        let mut f = spool.file.try_clone().map_err(|e| e.to_string())?;
        drop(spool);
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        BufReader::new(f.take(1 << 20)).read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if line.last() != Some(&b'\n') {
            return Ok(None); // being written
        }
        let end = offset + line.len() as u64;
        line.pop();
        Ok(Some((line, end)))
    }
}

/// A byte stream to a collector (TCP, or TLS over it).
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// RELP framing (librelp): `TXNR SP COMMAND SP DATALEN [SP DATA] LF`.
#[derive(Default)]
struct Relp {
    txnr: u64,
    buf: Vec<u8>,
}

impl Relp {
    fn send(&mut self, s: &mut dyn Stream, command: &str, data: &[u8]) -> Result<u64, String> {
        self.txnr = if self.txnr >= 999_999_999 { 1 } else { self.txnr + 1 };
        let mut frame = format!("{} {command} {}", self.txnr, data.len()).into_bytes();
        if !data.is_empty() {
            frame.push(b' ');
            frame.extend_from_slice(data);
        }
        frame.push(b'\n');
        s.write_all(&frame).map_err(|e| format!("sending: {e}"))?;
        Ok(self.txnr)
    }

    /// The next `rsp` frame: its txnr and status code (a `serverclose` is an error).
    fn answer(&mut self, s: &mut dyn Stream) -> Result<(u64, u32), String> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some((txnr, command, data, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                match command.as_str() {
                    "rsp" => {
                        let code = data
                            .get(..3)
                            .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                            .unwrap_or(0);
                        return Ok((txnr, code));
                    }
                    "serverclose" => return Err("the collector closed the session".into()),
                    other => return Err(format!("unexpected RELP command {other:?}")),
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no answer within {ANSWER_TIMEOUT:?}"));
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return Err("closed by the collector".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
            if self.buf.len() > 1 << 20 {
                return Err("an answer over 1 MiB".into());
            }
        }
    }
}

/// A RELP frame read: (txnr, command, data, bytes it used).
type Frame = (u64, String, Vec<u8>, usize);

/// One whole frame at the start of `buf`.
fn parse_frame(buf: &[u8]) -> Result<Option<Frame>, String> {
    let field = |from: usize| -> Option<(usize, usize)> {
        let end = buf[from..].iter().position(|b| *b == b' ' || *b == b'\n')? + from;
        Some((from, end))
    };
    let Some((a, b)) = field(0) else { return Ok(None) };
    let txnr: u64 =
        std::str::from_utf8(&buf[a..b]).ok().and_then(|t| t.parse().ok()).ok_or("bad RELP txnr")?;
    let Some((c, d)) = field(b + 1) else { return Ok(None) };
    let command = String::from_utf8_lossy(&buf[c..d]).into_owned();
    let Some((e, f)) = field(d + 1) else { return Ok(None) };
    let len: usize =
        std::str::from_utf8(&buf[e..f]).ok().and_then(|t| t.parse().ok()).ok_or("bad RELP length")?;
    if len > 1 << 20 {
        return Err("a RELP frame over 1 MiB".into());
    }
    let start = if len == 0 { f } else { f + 1 };
    if buf.len() < start + len + 1 {
        return Ok(None);
    }
    if buf[start + len] != b'\n' {
        return Err("RELP frame without its trailer".into());
    }
    Ok(Some((txnr, command, buf[start..start + len].to_vec(), start + len + 1)))
}

/// Starts one sender thread per forwarder.
pub fn spawn(forwarders: &[Arc<Forwarder>], stop: &Arc<AtomicBool>) {
    for f in forwarders {
        let (f, stop) = (f.clone(), stop.clone());
        let name = format!("tg-syslog-{}", f.collector.name);
        if let Err(e) = std::thread::Builder::new().name(name).spawn(move || f.run(&stop)) {
            tracing::error!(error = %e, "cannot start a syslog sender");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventView {
        EventView {
            event_id: 42,
            kind: "abort".into(),
            leg: "server".into(),
            phase: "server_handshake".into(),
            cause: Some("certificate".into()),
            src_ip: "198.18.0.1".into(),
            src_port: 40000,
            dst_ip: "198.18.0.2".into(),
            dst_port: 443,
            sni: "asa.tg.test".into(),
            ja4: Some("t13d1517h2_8daaf6152771_cb7bf5808d99".into()),
            verify_code: 18,
            verify_text: "self signed certificate".into(),
            tls_version: Some("TLSv1.3".into()),
            time_ns: 1_796_558_400_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn ocsf_network_activity_with_the_tls_object() {
        let v = ocsf(&event(), "fw1");
        assert_eq!(
            (v["class_uid"].as_u64(), v["activity_id"].as_u64(), v["type_uid"].as_u64()),
            (Some(4001), Some(4), Some(400104))
        );
        assert_eq!(v["metadata"]["uid"], "42");
        assert_eq!(v["tls"]["sni"], "asa.tg.test");
        assert_eq!(v["tls"]["version"], "TLSv1.3");
        assert_eq!(v["ja4_fingerprint_list"][0]["value"], "t13d1517h2_8daaf6152771_cb7bf5808d99");
        assert_eq!(v["status_detail"], "self signed certificate (code 18, depth 0)");
        assert_eq!(
            (v["unmapped"]["leg"].as_str(), v["unmapped"]["cause"].as_str()),
            (Some("server"), Some("certificate"))
        );
        let m = rfc5424(&event(), "fw1");
        assert!(m.starts_with("<132>1 2026-12-06T12:00:00.000000Z fw1 tlsgate - abort - {"), "{m}");
        let odd = EventView { time_ns: 1_796_558_400_123_456_789, ..event() };
        assert!(rfc5424(&odd, "fw1").contains(" 2026-12-06T12:00:00.123456Z "));
    }

    #[test]
    fn relp_frames() {
        assert_eq!(
            parse_frame(b"1 rsp 6 200 OK\n").unwrap(),
            Some((1, "rsp".into(), b"200 OK".to_vec(), 15))
        );
        assert_eq!(
            parse_frame(b"0 serverclose 0\n").unwrap(),
            Some((0, "serverclose".into(), Vec::new(), 16))
        );
        assert_eq!(parse_frame(b"1 rsp 6 200 O").unwrap(), None, "incomplete");
        assert!(parse_frame(b"x rsp 6 200 OK\n").is_err());
        assert!(parse_frame(b"1 rsp 2 200 OK\n").is_err(), "no trailer where the length says");
        assert!(parse_frame(b"1 rsp 99999999 ").is_err(), "too long");
    }

    /// RELP in TLS: a collector whose certificate chains to the configured CA
    /// and holds the name gets every message and acknowledges it; one whose
    /// name differs is refused (nothing is sent in clear).
    #[test]
    fn relp_over_tls_to_a_collector_with_its_ca() {
        use tlsgate_certstore::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["collector.tg.test".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        );
        let dir = std::env::temp_dir().join(format!("tg-relp-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(server.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Ok(Some((txnr, command, data, used))) = parse_frame(&buf) {
                        buf.drain(..used);
                        let answer = if command == "open" {
                            "200 OK\nrelp_version=0\ncommands=syslog"
                        } else {
                            "200 OK"
                        };
                        let _ = s.write_all(format!("{txnr} rsp {} {answer}\n", answer.len()).as_bytes());
                        if command == "syslog" {
                            let _ = tx.send(data);
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        });
        let collector = |name: &str| Collector {
            name: "tls".into(),
            target: target.clone(),
            tls: true,
            ca: Some(ca_file.clone()),
            server_name: Some(name.into()),
            spool_max_bytes: 1 << 20,
        };
        let wrong = Forwarder::open(collector("other.tg.test"), &dir.join("wrong")).unwrap();
        let e = wrong.session(&AtomicBool::new(false)).err().unwrap_or_default();
        assert!(
            e.contains("TLS") || e.contains("certificate") || e.contains("sending") || e.contains("reading"),
            "{e}"
        );
        let f = Forwarder::open(collector("collector.tg.test"), &dir.join("right")).unwrap();
        f.spool(&event());
        f.spool(&event());
        let stop = Arc::new(AtomicBool::new(false));
        let (f2, stop2) = (f.clone(), stop.clone());
        let sender = std::thread::spawn(move || f2.run(&stop2));
        for _ in 0..2 {
            let msg = rx.recv_timeout(Duration::from_secs(10)).expect("a message over TLS");
            assert!(msg.starts_with(b"<132>1 "), "{}", String::from_utf8_lossy(&msg));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.counters.delivered.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        assert_eq!(f.counters.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(f.pending_bytes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_spool_counts_what_it_drops_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("tg-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Collector {
            name: "c1".into(),
            target: "127.0.0.1:1".into(),
            tls: false,
            ca: None,
            server_name: None,
            spool_max_bytes: 65_536,
        };
        let f = Forwarder::open(c.clone(), &dir).unwrap();
        for _ in 0..200 {
            f.spool(&event());
        }
        let (spooled, dropped) =
            (f.counters.spooled.load(Ordering::Relaxed), f.counters.dropped.load(Ordering::Relaxed));
        assert!(spooled > 0 && dropped > 0 && spooled + dropped == 200, "{spooled} + {dropped}");
        let pending = f.pending_bytes();
        let (msg, end) = f.read_at(0).unwrap().unwrap();
        assert!(msg.starts_with(b"<132>1 ") && !msg.ends_with(b"\n"));
        f.spool.lock().unwrap().acked = end;
        f.spool.lock().unwrap().save_offset().unwrap();
        drop(f);
        let again = Forwarder::open(c.clone(), &dir).unwrap();
        assert_eq!(again.pending_bytes(), pending - end, "the offset survives");
        // Compaction keeps what was not acknowledged, from offset 0.
        let (second, _) = again.read_at(end).unwrap().unwrap();
        {
            let mut sp = again.spool.lock().unwrap();
            let path = sp.path.clone();
            assert_eq!(sp.compact(&path).unwrap(), end);
            assert_eq!((sp.acked, sp.len), (0, pending - end));
        }
        assert_eq!(again.read_at(0).unwrap().unwrap().0, second);
        drop(again);
        // A torn last line (a crash mid-write) is cut off at the next open; an
        // offset past the end is corrected.
        let spool_path = dir.join("c1.spool");
        let mut f = OpenOptions::new().append(true).open(&spool_path).unwrap();
        f.write_all(b"<132>1 torn").unwrap();
        std::fs::write(dir.join("c1.offset"), "99999999\n").unwrap();
        let reopened = Forwarder::open(c, &dir).unwrap();
        assert_eq!(reopened.pending_bytes(), 0, "offset clamped to the end");
        assert_eq!(std::fs::metadata(&spool_path).unwrap().len(), pending - end, "torn line cut");
        assert_eq!(
            std::fs::read_to_string(dir.join("c1.offset")).unwrap().trim(),
            (pending - end).to_string()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
