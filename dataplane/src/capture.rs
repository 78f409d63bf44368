//! Packet captures of a host's flows: `tlsgatectl capture start --host IP [--port
//! P] [--count N] FILE`, the seed's "capture the handshake" as one command.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tlsgate_api::{CaptureInfo, CaptureSpec, ErrorCode, Response};

/// Packets waiting for the capture thread.
const QUEUE: usize = 16_384;
/// Captures at once.
const MAX_ACTIVE: usize = 8;

/// What a worker matches.
#[derive(Debug, Clone)]
pub struct CaptureFilter {
    /// The capture.
    pub id: u32,
    /// Either side's address.
    pub host: IpAddr,
    /// Either side's port.
    pub port: Option<u16>,
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
    out: Option<BufWriter<File>>,
}

/// The captures of a dataplane.
pub struct Capturer {
    generation: AtomicU64,
    filters: Mutex<Arc<Vec<CaptureFilter>>>,
    queue: ArrayQueue<Packet>,
    captures: Mutex<BTreeMap<u32, Capture>>,
    dropped: AtomicU64,
    next_id: AtomicU64,
}

impl Default for Capturer {
    fn default() -> Self {
        Capturer {
            generation: AtomicU64::new(0),
            filters: Mutex::new(Arc::new(Vec::new())),
            queue: ArrayQueue::new(QUEUE),
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
            .map(|(id, c)| CaptureFilter { id: *id, host: c.spec.host, port: c.spec.port })
            .collect();
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

    /// Starts a capture (the file is created now: an unwritable path is refused).
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
        let path = std::path::Path::new(&spec.file);
        if !path.is_absolute() {
            return Response::error(ErrorCode::Invalid, format!("{}: give an absolute path", spec.file));
        }
        let file = match std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path) {
            Ok(f) => f,
            Err(e) => return Response::error(ErrorCode::Invalid, format!("{}: {e}", spec.file)),
        };
        let mut out = BufWriter::new(file);
        if let Err(e) = write_header(&mut out).and_then(|()| out.flush()) {
            return Response::error(ErrorCode::Invalid, format!("{}: {e}", spec.file));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u32;
        tracing::info!(id, host = %spec.host, port = ?spec.port, count = ?spec.count, file = %spec.file, "capture started");
        caps.insert(id, Capture { spec, packets: 0, dropped: 0, active: true, out: Some(out) });
        self.refresh(&caps);
        let list = infos(&caps);
        Response::Captures { captures: list.into_iter().filter(|c| c.id == id).collect() }
    }

    /// Stops one capture, or all.
    pub fn stop(&self, id: Option<u32>) -> Response {
        // Let what the workers queued reach the files first.
        self.drain();
        let mut caps = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stopped = Vec::new();
        for (cid, c) in caps.iter_mut() {
            if c.active && id.is_none_or(|i| i == *cid) {
                c.active = false;
                if let Some(mut out) = c.out.take() {
                    let _ = out.flush();
                }
                stopped.push(*cid);
            }
        }
        if let Some(i) = id {
            if !caps.contains_key(&i) {
                return Response::error(ErrorCode::NotFound, format!("no capture {i}"));
            }
        }
        self.refresh(&caps);
        let list = infos(&caps);
        Response::Captures { captures: list.into_iter().filter(|c| stopped.contains(&c.id)).collect() }
    }

    /// Every capture.
    pub fn list(&self) -> Response {
        self.drain();
        Response::Captures { captures: infos(&self.captures.lock().unwrap_or_else(PoisonError::into_inner)) }
    }

    /// Writes what is queued; ends captures that reached their count.
    pub fn drain(&self) {
        let mut caps = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ended = false;
        let mut wrote = false;
        while let Some(p) = self.queue.pop() {
            let Some(c) = caps.get_mut(&p.id) else { continue };
            if !c.active {
                continue;
            }
            if let Some(out) = c.out.as_mut() {
                if write_packet(out, &p).is_err() {
                    c.dropped += 1;
                    continue;
                }
                wrote = true;
            }
            c.packets += 1;
            if c.spec.count.is_some_and(|n| c.packets >= n) {
                c.active = false;
                if let Some(mut out) = c.out.take() {
                    let _ = out.flush();
                }
                tracing::info!(id = p.id, packets = c.packets, file = %c.spec.file, "capture complete");
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

fn infos(caps: &BTreeMap<u32, Capture>) -> Vec<CaptureInfo> {
    caps.iter()
        .map(|(id, c)| CaptureInfo {
            id: *id,
            spec: c.spec.clone(),
            packets: c.packets,
            dropped: c.dropped,
            active: c.active,
        })
        .collect()
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> std::io::Result<()> {
    let len = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&len.to_le_bytes())
}

/// The section header and one interface description per port.
pub fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes()); // byte-order magic
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    option(&mut shb, 4, b"tlsgate-dataplane"); // shb_userappl
    option(&mut shb, 0, &[]);
    block(out, 0x0A0D_0D0A, &shb)?;
    for name in ["inside", "outside"] {
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes()); // no snap length
        option(&mut idb, 2, name.as_bytes()); // if_name
        option(&mut idb, 9, &[9]); // if_tsresol: nanoseconds
        option(&mut idb, 0, &[]);
        block(out, 1, &idb)?;
    }
    Ok(())
}

fn write_packet(out: &mut impl Write, p: &Packet) -> std::io::Result<()> {
    let mut epb = Vec::with_capacity(32 + p.data.len());
    epb.extend_from_slice(&u32::from(p.port).to_le_bytes());
    epb.extend_from_slice(&((p.time_ns >> 32) as u32).to_le_bytes());
    epb.extend_from_slice(&(p.time_ns as u32).to_le_bytes());
    epb.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
    epb.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
    epb.extend_from_slice(&p.data);
    epb.resize(epb.len().div_ceil(4) * 4, 0);
    // epb_flags: direction 1 inbound, 2 outbound.
    let flags: u32 = if p.outbound { 2 } else { 1 };
    option(&mut epb, 2, &flags.to_le_bytes());
    option(&mut epb, 0, &[]);
    block(out, 6, &epb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_matching_packets_to_pcapng_and_stops_at_the_count() {
        let dir = tempfile_dir();
        let file = dir.join("c.pcapng");
        let c = Arc::new(Capturer::default());
        let spec = CaptureSpec {
            host: "198.18.0.2".parse().unwrap(),
            port: Some(443),
            count: Some(3),
            file: file.display().to_string(),
        };
        assert!(matches!(c.start(spec), Response::Captures { .. }));
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
        let Response::Captures { captures } = c.list() else { panic!() };
        assert_eq!((captures[0].packets, captures[0].active), (3, false));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unwritable_files_and_relative_paths_are_refused() {
        let c = Capturer::default();
        let spec = |f: &str| CaptureSpec {
            host: "198.18.0.2".parse().unwrap(),
            port: None,
            count: None,
            file: f.into(),
        };
        assert!(matches!(c.start(spec("relative.pcapng")), Response::Error { code: ErrorCode::Invalid, .. }));
        assert!(matches!(
            c.start(spec("/nonexistent/dir/x.pcapng")),
            Response::Error { code: ErrorCode::Invalid, .. }
        ));
        assert!(c.filters().is_empty());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tg-capture-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
