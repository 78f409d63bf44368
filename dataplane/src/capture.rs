//! Packet captures of a host's flows: `tlsgatectl capture start --host IP [--port
//! P] [--count N] NAME`, the seed's "capture the handshake" as one command.
//!
//! The dataplane runs as root and the request comes from an operator, so the
//! request names a file, never a path: `NAME` is created in `capture.dir` (0700,
//! owned by the dataplane's user, not a symlink) with `O_CREAT|O_EXCL|O_NOFOLLOW`
//! and mode 0600. Each capture stops at `capture.max_bytes`; all files in the
//! directory together stop at `capture.max_total_bytes` (a new capture is refused
//! when the directory is full).
//!
//! ```text
//!  worker: frame in (RX, either port) or out (what a splice emits, either leg)
//!     capture filters non-empty? ── match host/port ──► copy ─► ArrayQueue (bounded; full: counted)
//!  capture thread: queue ─► pcapng file per capture (one interface per port: inside, outside;
//!                  each packet's direction in epb_flags), stops after --count packets
//! ```
//!
//! With no capture running, a worker pays one relaxed atomic load per poll. An
//! intercepted flow's two legs share one 4-tuple; the interface (port) and the
//! direction tell them apart: client → appliance is inbound on `inside`, the
//! appliance → server outbound on `outside`, and so on. Wire bytes only: the
//! capture holds the TLS records as they crossed the ports, never plaintext.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::Error;
use crossbeam_queue::ArrayQueue;
use serde::Deserialize;
use tlsgate_api::{CaptureInfo, CaptureSpec, ErrorCode, Response};

/// `[capture]`.
///
/// ```toml
/// [capture]
/// dir = "/var/log/tlsgate/captures"   # created 0700; captures are 0600 files in it
/// max_bytes = 67108864                # one capture stops here (64 MiB)
/// max_total_bytes = 536870912         # all files in dir together (512 MiB)
/// allow_keylog = false                # `capture start --keylog` may write session keys
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// The capture directory.
    pub dir: PathBuf,
    /// One capture's cap.
    pub max_bytes: u64,
    /// The directory's cap.
    pub max_total_bytes: u64,
    /// Whether `capture start --keylog` may write the TLS session keys of the
    /// captured flows (both legs) next to the pcapng. Off by default; only this
    /// root-owned file turns it on: neither the socket nor the console can.
    pub allow_keylog: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            dir: "/var/log/tlsgate/captures".into(),
            max_bytes: 64 << 20,
            max_total_bytes: 512 << 20,
            allow_keylog: false,
        }
    }
}

impl CaptureConfig {
    /// Range checks; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.dir.is_absolute() {
            return Err(Error::Invalid(format!(
                "capture.dir: {} is not an absolute path",
                self.dir.display()
            )));
        }
        if self.max_bytes < 4096 {
            return Err(Error::Invalid("capture.max_bytes: at least 4096".into()));
        }
        if self.max_total_bytes < self.max_bytes {
            return Err(Error::Invalid(format!(
                "capture.max_total_bytes: {} is below capture.max_bytes ({})",
                self.max_total_bytes, self.max_bytes
            )));
        }
        Ok(())
    }
}

/// The longest capture file name.
const MAX_NAME: usize = 128;

/// Whether `name` may name a capture file: one path component of letters,
/// digits, `.`, `_` and `-`, not starting with `.`.
fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::Capture(format!("capture file name {name:?}: 1 to {MAX_NAME} characters")));
    }
    if name.starts_with('.') || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(Error::Capture(format!(
            "capture file name {name:?}: a name in the capture directory, not a path (letters, digits, \
             '.', '_', '-'; not starting with '.')"
        )));
    }
    Ok(())
}

/// The capture directory, created 0700 if missing, refused unless it is a real
/// directory (not a symlink) owned by this process's user and closed to others.
fn capture_dir(dir: &Path) -> Result<(), Error> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Capture(format!("capture.dir {}: {e}", dir.display())))?;
    }
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::Capture(format!("capture.dir {}: {e}", dir.display())))?;
    if !m.file_type().is_dir() {
        return Err(Error::Capture(format!(
            "capture.dir {}: not a directory (a symlink is refused)",
            dir.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me {
        return Err(Error::Capture(format!(
            "capture.dir {}: owned by uid {}, not by this process (uid {me})",
            dir.display(),
            m.uid()
        )));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Capture(format!("capture.dir {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Bytes and entries in `dir`.
fn dir_usage(dir: &Path) -> (u64, usize) {
    std::fs::read_dir(dir).map_or((0, 0), |rd| {
        rd.filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .fold((0, 0), |(b, n), m| (b + if m.is_file() { m.len() } else { 0 }, n + 1))
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    dir_usage(dir).0
}

/// Packets waiting for the capture thread.
const QUEUE: usize = 16_384;
/// Captures at once.
const MAX_ACTIVE: usize = 8;
/// Finished captures remembered for `capture list` (older ones are forgotten;
/// their files stay).
const MAX_KEPT: usize = 64;
/// Files in the capture directory at most (whatever their size).
const MAX_FILES: usize = 256;

/// What a worker matches.
#[derive(Debug, Clone)]
pub struct CaptureFilter {
    /// The capture.
    pub id: u32,
    /// Either side's address.
    pub host: IpAddr,
    /// Either side's port.
    pub port: Option<u16>,
    /// The capture writes session keys.
    pub keylog: bool,
}

impl CaptureFilter {
    /// Whether a packet between (a, ap) and (b, bp) matches.
    #[inline]
    pub fn matches(&self, a: IpAddr, ap: u16, b: IpAddr, bp: u16) -> bool {
        (a == self.host || b == self.host) && self.port.is_none_or(|p| p == ap || p == bp)
    }
}

/// A packet copied by a worker.
struct Packet {
    id: u32,
    port: u8,
    outbound: bool,
    time_ns: u64,
    data: Vec<u8>,
}

struct Capture {
    spec: CaptureSpec,
    packets: u64,
    dropped: u64,
    active: bool,
    bytes: u64,
    ended: Option<&'static str>,
    out: Option<BufWriter<File>>,
    /// `FILE.keys` (NSS key log), with `--keylog`.
    keys: Option<BufWriter<File>>,
}

impl Capture {
    fn end(&mut self, why: &'static str) {
        self.active = false;
        self.ended.get_or_insert(why);
        if let Some(mut out) = self.out.take() {
            let _ = out.flush();
        }
        if let Some(mut keys) = self.keys.take() {
            let _ = keys.flush();
        }
    }
}

/// The captures of a dataplane.
pub struct Capturer {
    cfg: CaptureConfig,
    /// Bytes in the directory: what was there when the last capture started, plus
    /// what was written since.
    used: AtomicU64,
    generation: AtomicU64,
    filters: Mutex<Arc<Vec<CaptureFilter>>>,
    queue: ArrayQueue<Packet>,
    /// Key-log lines of captured flows: (capture, lines).
    keys: ArrayQueue<(u32, String)>,
    captures: Mutex<BTreeMap<u32, Capture>>,
    dropped: AtomicU64,
    next_id: AtomicU64,
}

impl Default for Capturer {
    fn default() -> Self {
        Capturer::new(CaptureConfig::default())
    }
}

impl Capturer {
    /// Captures written into `cfg.dir`.
    pub fn new(cfg: CaptureConfig) -> Self {
        Capturer {
            cfg,
            used: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            filters: Mutex::new(Arc::new(Vec::new())),
            queue: ArrayQueue::new(QUEUE),
            keys: ArrayQueue::new(QUEUE),
            captures: Mutex::new(BTreeMap::new()),
            dropped: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Capturer {
    /// Moves whenever the filters change.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The filters now (workers cache them per generation).
    pub fn filters(&self) -> Arc<Vec<CaptureFilter>> {
        self.filters.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn refresh(&self, captures: &BTreeMap<u32, Capture>) {
        let f: Vec<CaptureFilter> = captures
            .iter()
            .filter(|(_, c)| c.active)
            .map(|(id, c)| CaptureFilter {
                id: *id,
                host: c.spec.host,
                port: c.spec.port,
                keylog: c.keys.is_some(),
            })
            .collect();
        // rustls logs secrets only while a capture with a key log runs.
        tlsgate_certstore::set_key_logging(f.iter().any(|c| c.keylog));
        *self.filters.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(f);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A worker's copy of a matching packet (`port`: 0 inside, 1 outside).
    pub fn offer(&self, id: u32, port: usize, outbound: bool, data: &[u8]) {
        let p = Packet { id, port: port as u8, outbound, time_ns: now_ns(), data: data.to_vec() };
        if self.queue.push(p).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = self.captures.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
                c.dropped += 1;
            }
        }
    }

    /// A worker's key-log lines of a flow capture `id` matches.
    pub fn offer_keys(&self, id: u32, lines: String) {
        if self.keys.push((id, lines)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = self.captures.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
                c.dropped += 1;
            }
        }
    }

    /// Starts a capture: its file is created now, so a bad name, an existing
    /// file, a full directory or an unusable `capture.dir` is refused at once.
    pub fn start(&self, spec: CaptureSpec) -> Response {
        let mut caps = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        if caps.values().filter(|c| c.active).count() >= MAX_ACTIVE {
            return Response::error(
                ErrorCode::Invalid,
                format!("{MAX_ACTIVE} captures are running: stop one first"),
            );
        }
        if spec.count == Some(0) {
            return Response::error(ErrorCode::Invalid, "--count 0 captures nothing");
        }
        if spec.keylog && !self.cfg.allow_keylog {
            return Response::error(
                ErrorCode::PermissionDenied,
                "key logs are not allowed: the dataplane's configuration file (root's) must say \
                 [capture] allow_keylog = true",
            );
        }
        if let Err(e) = check_name(&spec.file).and_then(|()| capture_dir(&self.cfg.dir)) {
            return Response::error(ErrorCode::Invalid, e.to_string());
        }
        let keys_name = format!("{}.keys", spec.file);
        if spec.keylog {
            if let Err(e) = check_name(&keys_name) {
                return Response::error(ErrorCode::Invalid, e.to_string());
            }
        }
        let (used, files) = dir_usage(&self.cfg.dir);
        self.used.store(used, Ordering::Relaxed);
        if files >= MAX_FILES {
            return Response::error(
                ErrorCode::Invalid,
                format!(
                    "the capture directory {} holds {files} files (at most {MAX_FILES}): remove old captures first",
                    self.cfg.dir.display()
                ),
            );
        }
        if used + 4096 > self.cfg.max_total_bytes {
            return Response::error(
                ErrorCode::Invalid,
                format!(
                    "the capture directory {} holds {used} bytes of its {} (capture.max_total_bytes): remove old captures first",
                    self.cfg.dir.display(),
                    self.cfg.max_total_bytes
                ),
            );
        }
        let path = self.cfg.dir.join(&spec.file);
        let keys_path = self.cfg.dir.join(&keys_name);
        if spec.keylog && keys_path.symlink_metadata().is_ok() {
            return Response::error(
                ErrorCode::Invalid,
                format!("{} exists: captures never overwrite; choose another name", keys_path.display()),
            );
        }
        let file = match create_exclusive(&path) {
            Ok(f) => f,
            Err(r) => return *r,
        };
        let keys = if spec.keylog {
            match create_exclusive(&keys_path) {
                Ok(f) => Some(BufWriter::new(f)),
                Err(r) => {
                    let _ = std::fs::remove_file(&path);
                    return *r;
                }
            }
        } else {
            None
        };
        let mut out = BufWriter::new(file);
        let mut header = Vec::new();
        let _ = write_header(&mut header);
        if let Err(e) = out.write_all(&header).and_then(|()| out.flush()) {
            return Response::error(ErrorCode::Invalid, format!("{}: {e}", path.display()));
        }
        self.used.fetch_add(header.len() as u64, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u32;
        tracing::info!(id, host = %spec.host, port = ?spec.port, count = ?spec.count, file = %path.display(), "capture started");
        if keys.is_some() {
            tracing::warn!(id, host = %spec.host, file = %keys_path.display(), "capture with a key log: the TLS session keys of the captured flows (both legs) are written");
        }
        let bytes = header.len() as u64;
        caps.insert(
            id,
            Capture { spec, packets: 0, dropped: 0, active: true, bytes, ended: None, out: Some(out), keys },
        );
        // Forget the oldest finished captures beyond MAX_KEPT (ids grow with age).
        let finished: Vec<u32> = caps.iter().filter(|(_, c)| !c.active).map(|(id, _)| *id).collect();
        for old in finished.iter().take(finished.len().saturating_sub(MAX_KEPT)) {
            caps.remove(old);
        }
        self.refresh(&caps);
        self.answer(&caps, |c| c.id == id)
    }

    fn answer(&self, caps: &BTreeMap<u32, Capture>, which: impl Fn(&CaptureInfo) -> bool) -> Response {
        Response::Captures {
            captures: infos(caps).into_iter().filter(which).collect(),
            used_bytes: self.used.load(Ordering::Relaxed),
            max_total_bytes: self.cfg.max_total_bytes,
        }
    }

    /// Stops one capture, or all.
    pub fn stop(&self, id: Option<u32>) -> Response {
        // Let what the workers queued reach the files first.
        self.drain();
        let mut caps = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = id {
            if !caps.contains_key(&i) {
                return Response::error(ErrorCode::NotFound, format!("no capture {i}"));
            }
        }
        let mut stopped = Vec::new();
        for (cid, c) in caps.iter_mut() {
            if c.active && id.is_none_or(|i| i == *cid) {
                c.end("stopped");
                stopped.push(*cid);
            }
        }
        self.refresh(&caps);
        self.answer(&caps, |c| stopped.contains(&c.id))
    }

    /// Every capture.
    pub fn list(&self) -> Response {
        self.drain();
        self.used.store(dir_bytes(&self.cfg.dir), Ordering::Relaxed);
        self.answer(&self.captures.lock().unwrap_or_else(PoisonError::into_inner), |_| true)
    }

    /// Writes what is queued; ends captures that reached their count or a cap.
    pub fn drain(&self) {
        let mut caps = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ended = false;
        let mut wrote = false;
        while let Some((id, lines)) = self.keys.pop() {
            let Some(c) = caps.get_mut(&id).filter(|c| c.active) else { continue };
            let len = lines.len() as u64;
            if self.used.load(Ordering::Relaxed) + len > self.cfg.max_total_bytes {
                c.end("total cap");
                ended = true;
                continue;
            }
            if let Some(keys) = c.keys.as_mut() {
                if keys.write_all(lines.as_bytes()).is_err() {
                    c.end("write error");
                    ended = true;
                    continue;
                }
                let _ = keys.flush();
                self.used.fetch_add(len, Ordering::Relaxed);
            }
        }
        while let Some(p) = self.queue.pop() {
            let Some(c) = caps.get_mut(&p.id) else { continue };
            if !c.active {
                continue;
            }
            let mut block = Vec::with_capacity(48 + p.data.len());
            let _ = write_packet(&mut block, &p);
            let len = block.len() as u64;
            let why = if c.bytes + len > self.cfg.max_bytes {
                Some("size cap")
            } else if self.used.load(Ordering::Relaxed) + len > self.cfg.max_total_bytes {
                Some("total cap")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::warn!(id = p.id, packets = c.packets, bytes = c.bytes, file = %c.spec.file, "capture ended: {why} reached");
                c.end(why);
                ended = true;
                continue;
            }
            if let Some(out) = c.out.as_mut() {
                if out.write_all(&block).is_err() {
                    c.dropped += 1;
                    c.end("write error");
                    ended = true;
                    continue;
                }
                wrote = true;
            }
            c.bytes += len;
            self.used.fetch_add(len, Ordering::Relaxed);
            c.packets += 1;
            if c.spec.count.is_some_and(|n| c.packets >= n) {
                tracing::info!(id = p.id, packets = c.packets, file = %c.spec.file, "capture complete");
                c.end("count");
                ended = true;
            }
        }
        if wrote {
            for c in caps.values_mut() {
                if let Some(out) = c.out.as_mut() {
                    let _ = out.flush();
                }
            }
        }
        if ended {
            self.refresh(&caps);
        }
    }

    /// The capture thread.
    pub fn spawn(
        self: &Arc<Self>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new().name("tg-capture".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                me.drain();
                std::thread::sleep(Duration::from_millis(10));
            }
            me.drain();
            let _ = me.stop(None);
        })
    }
}

/// Creates `path` for a capture: `O_EXCL` (never an existing file, nor a
/// symlink or hard link planted under that name), `O_NOFOLLOW`, 0600.
fn create_exclusive(path: &Path) -> Result<File, Box<Response>> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            Box::new(if e.kind() == std::io::ErrorKind::AlreadyExists {
                Response::error(
                    ErrorCode::Invalid,
                    format!("{} exists: captures never overwrite; choose another name", path.display()),
                )
            } else {
                Response::error(ErrorCode::Invalid, format!("{}: {e}", path.display()))
            })
        })
}

fn infos(caps: &BTreeMap<u32, Capture>) -> Vec<CaptureInfo> {
    caps.iter()
        .map(|(id, c)| CaptureInfo {
            id: *id,
            spec: c.spec.clone(),
            packets: c.packets,
            dropped: c.dropped,
            active: c.active,
            bytes: c.bytes,
            ended: c.ended.map(str::to_string),
        })
        .collect()
}

/// Writes one pcapng block (encoded by the `pcap-file` crate), little-endian.
fn block(out: &mut impl Write, b: pcap_file::pcapng::Block<'_>) -> std::io::Result<()> {
    b.write_to::<byteorder_slice::LittleEndian, _>(out).map(|_| ())
}

/// The section header and one interface description per port.
pub fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
    use pcap_file::pcapng::Block;
    block(
        out,
        Block::SectionHeader(SectionHeaderBlock {
            endianness: pcap_file::Endianness::Little,
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options: vec![SectionHeaderOption::UserApplication("tlsgate-dataplane".into())],
        }),
    )?;
    for name in ["inside", "outside"] {
        block(
            out,
            Block::InterfaceDescription(InterfaceDescriptionBlock {
                linktype: pcap_file::DataLink::ETHERNET,
                snaplen: 0,
                options: vec![
                    InterfaceDescriptionOption::IfName(name.into()),
                    // Nanoseconds (pcap-file writes packet times in them).
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            }),
        )?;
    }
    Ok(())
}

fn write_packet(out: &mut impl Write, p: &Packet) -> std::io::Result<()> {
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    // epb_flags: direction 1 inbound, 2 outbound.
    let flags: u32 = if p.outbound { 2 } else { 1 };
    block(
        out,
        pcap_file::pcapng::Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: u32::from(p.port),
            timestamp: Duration::from_nanos(p.time_ns),
            original_len: p.data.len() as u32,
            data: std::borrow::Cow::Borrowed(&p.data),
            options: vec![EnhancedPacketOption::Flags(flags)],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capturer(dir: &Path, max_bytes: u64, max_total_bytes: u64) -> Capturer {
        Capturer::new(CaptureConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            max_total_bytes,
            allow_keylog: false,
        })
    }

    fn spec(file: &str, count: Option<u64>) -> CaptureSpec {
        CaptureSpec {
            host: "198.18.0.2".parse().unwrap(),
            port: Some(443),
            count,
            file: file.into(),
            keylog: false,
        }
    }

    fn refused(r: Response, needle: &str) {
        match r {
            Response::Error { code: ErrorCode::Invalid, message } => {
                assert!(message.contains(needle), "{needle:?} not in {message:?}")
            }
            other => panic!("not refused ({needle}): {other:?}"),
        }
    }

    #[test]
    fn captures_matching_packets_to_pcapng_and_stops_at_the_count() {
        let dir = tempfile_dir();
        let caps = dir.join("caps");
        let c = Arc::new(capturer(&caps, 1 << 20, 4 << 20));
        assert!(matches!(c.start(spec("c.pcapng", Some(3))), Response::Captures { .. }));
        let m = std::fs::metadata(&caps).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700, "the directory is made 0700");
        let file = caps.join("c.pcapng");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        let f = c.filters();
        assert_eq!(f.len(), 1);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        assert!(f[0].matches(a, 40000, b, 443) && f[0].matches(b, 443, a, 40000));
        assert!(!f[0].matches(a, 40000, b, 80));
        for i in 0..5u8 {
            c.offer(f[0].id, usize::from(i % 2), i % 2 == 1, &[i; 61]);
        }
        c.drain();
        assert!(c.filters().is_empty(), "the count ends the capture");
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(&bytes[..4], &0x0A0D_0D0Au32.to_le_bytes());
        // SHB, 2 IDBs, 3 EPBs: walk the blocks by their lengths.
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(&bytes[at + len - 4..at + len], &(len as u32).to_le_bytes());
            kinds.push(kind);
            at += len;
        }
        assert_eq!(kinds, vec![0x0A0D_0D0A, 1, 1, 6, 6, 6]);
        let Response::Captures { captures, used_bytes, .. } = c.list() else { panic!() };
        assert_eq!((captures[0].packets, captures[0].active), (3, false));
        assert_eq!(captures[0].bytes, bytes.len() as u64);
        assert_eq!(captures[0].ended.as_deref(), Some("count"));
        assert_eq!(used_bytes, bytes.len() as u64);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// What an operator could aim a root-owned writer at: paths, `..`, an
    /// existing file, a symlink planted under the name, a directory that is a
    /// symlink. Each is refused and nothing outside the directory is touched.
    #[test]
    fn paths_existing_files_and_symlinks_are_refused() {
        let dir = tempfile_dir();
        let caps = dir.join("caps");
        let victim = dir.join("authorized_keys");
        std::fs::write(&victim, "ssh-ed25519 AAAA… admin\n").unwrap();
        let c = capturer(&caps, 1 << 20, 4 << 20);
        for name in ["/etc/passwd", "../authorized_keys", "a/b", "..", ".", ".hidden", "x\0y", "név.pcapng"]
        {
            refused(c.start(spec(name, None)), "not a path");
        }
        refused(c.start(spec(&"a".repeat(200), None)), "1 to 128");
        refused(c.start(spec("", None)), "1 to 128");
        assert!(matches!(c.start(spec("first.pcapng", None)), Response::Captures { .. }));
        refused(c.start(spec("first.pcapng", None)), "exists");
        std::os::unix::fs::symlink(&victim, caps.join("planted.pcapng")).unwrap();
        refused(c.start(spec("planted.pcapng", None)), "exists");
        std::fs::hard_link(&victim, caps.join("linked.pcapng")).unwrap();
        refused(c.start(spec("linked.pcapng", None)), "exists");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ssh-ed25519 AAAA… admin\n");
        // The directory itself a symlink (to where the victim lives).
        let c = capturer(&dir.join("link"), 1 << 20, 4 << 20);
        std::os::unix::fs::symlink(&dir, dir.join("link")).unwrap();
        refused(c.start(spec("authorized_keys2", None)), "symlink");
        assert!(!dir.join("authorized_keys2").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_capture_stops_at_its_size_cap_and_a_full_directory_refuses_more() {
        let dir = tempfile_dir();
        let caps = dir.join("caps");
        let c = capturer(&caps, 8192, 16384);
        assert!(matches!(c.start(spec("big.pcapng", None)), Response::Captures { .. }));
        let id = c.filters()[0].id;
        for _ in 0..20 {
            c.offer(id, 0, false, &[7; 1000]);
        }
        c.drain();
        assert!(c.filters().is_empty(), "the size cap ends it");
        let Response::Captures { captures, .. } = c.list() else { panic!() };
        assert_eq!(captures[0].ended.as_deref(), Some("size cap"));
        let len = std::fs::metadata(caps.join("big.pcapng")).unwrap().len();
        assert!(len <= 8192 && captures[0].bytes == len, "{len} {:?}", captures[0]);
        // Fill the directory: the next capture is refused, naming the cap.
        std::fs::write(caps.join("old.pcapng"), vec![0u8; 12000]).unwrap();
        refused(c.start(spec("more.pcapng", None)), "capture.max_total_bytes");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An operator starting captures without end: `capture list` stays small
    /// (finished ones beyond 64 are forgotten) and the directory stops at 256
    /// files.
    #[test]
    fn records_and_files_are_bounded() {
        let dir = tempfile_dir();
        let caps = dir.join("caps");
        let c = capturer(&caps, 1 << 20, 1 << 30);
        let mut refused = None;
        for i in 0..300 {
            match c.start(spec(&format!("c{i:03}-{}.pcapng", "x".repeat(100)), Some(1))) {
                Response::Captures { .. } => {
                    let _ = c.stop(None);
                }
                Response::Error { message, .. } => {
                    refused = Some((i, message));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let (i, message) = refused.expect("the file cap");
        assert_eq!(i, MAX_FILES, "{message}");
        assert!(message.contains("files"), "{message}");
        let Response::Captures { captures, .. } = c.list() else { panic!() };
        assert!(captures.len() <= MAX_KEPT + MAX_ACTIVE, "{}", captures.len());
        let line = tlsgate_api::Frame::response(1, c.list()).encode();
        assert!(line.len() < 100_000, "capture list stays small: {} bytes", line.len());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tg-capture-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
