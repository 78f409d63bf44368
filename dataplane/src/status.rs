//! The status channel: a Unix socket speaking [`tlsgate_api`] frames, and the
//! periodic stats line.
//!
//! Each connection is served by its own thread (never a worker): it reads one
//! [`Frame`] per line and answers it. Undecodable lines get an error response with a
//! code, and the connection stays open.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_api::framing::Read;
use tlsgate_api::{write_frame, Body, DataplaneStats, ErrorCode, Frame, FrameReader, Request, Response};
use tlsgate_drivers::PortMonitor;

use crate::counters::Published;

/// Everything a stats reader needs.
#[derive(Clone)]
pub struct StatsSource {
    /// Backend name.
    pub driver: &'static str,
    /// Per-worker published counters.
    pub workers: Vec<Arc<Published>>,
    /// Port counters.
    pub monitor: Arc<dyn PortMonitor>,
    /// When forwarding started.
    pub started: Instant,
}

impl StatsSource {
    /// A snapshot of every counter.
    pub fn snapshot(&self) -> DataplaneStats {
        DataplaneStats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            driver: self.driver.to_string(),
            workers: self.workers.iter().enumerate().map(|(i, p)| p.report(i as u32)).collect(),
            ports: self.monitor.port_stats().into_iter().map(port_stats).collect(),
        }
    }
}

/// Answers one request.
pub fn answer(src: &StatsSource, line: &str) -> Frame {
    match Frame::decode(line) {
        Ok(Frame { id, body: Body::Request(req), .. }) => Frame::response(
            id,
            match req {
                Request::Ping => Response::Pong {
                    process: "tlsgate-dataplane".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                Request::Stats => Response::Stats(src.snapshot()),
                #[allow(unreachable_patterns)]
                _ => Response::Error {
                    code: ErrorCode::Unsupported,
                    message: "not served by the dataplane".into(),
                },
            },
        ),
        Ok(Frame { id, .. }) => Frame::response(
            id,
            Response::Error {
                code: ErrorCode::BadRequest,
                message: "expected a request, got a response".into(),
            },
        ),
        Err(e) => {
            Frame::response(Frame::id_of(line), Response::Error { code: e.code(), message: e.to_string() })
        }
    }
}

fn serve_conn(src: StatsSource, stream: UnixStream) {
    // A peer that sends nothing for a minute, or stops reading, is dropped.
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let Ok(mut w) = stream.try_clone() else { return };
    let mut r = FrameReader::new(stream);
    loop {
        let reply = match r.read_frame() {
            Ok(Read::Frame(f)) => answer(&src, &f.encode()),
            Ok(Read::Invalid { id, error }) => {
                Frame::response(id, Response::Error { code: error.code(), message: error.to_string() })
            }
            Ok(Read::Eof) | Err(_) => return,
        };
        if write_frame(&mut w, &reply).is_err() {
            return;
        }
    }
}

/// A port's counters as the status answer carries them.
fn port_stats(p: tlsgate_drivers::PortStats) -> tlsgate_api::PortStats {
    tlsgate_api::PortStats {
        port: p.port,
        role: p.role,
        device: p.device,
        link_up: p.link_up,
        speed_mbps: p.speed_mbps,
        ipackets: p.ipackets,
        opackets: p.opackets,
        ibytes: p.ibytes,
        obytes: p.obytes,
        imissed: p.imissed,
        rx_nombuf: p.rx_nombuf,
        ierrors: p.ierrors,
        oerrors: p.oerrors,
        xstats: p.xstats,
    }
}

/// Listens on `path` (replacing a stale socket file) until `stop` is set.
pub fn spawn_server(path: &Path, src: StatsSource, stop: Arc<AtomicBool>) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        // A live dataplane would answer; a stale file from a crash is removed.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is served by another running dataplane", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let p = path.to_path_buf();
    std::thread::Builder::new().name("tg-status".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let src = src.clone();
                    let _ = std::thread::Builder::new()
                        .name("tg-status-conn".into())
                        .spawn(move || serve_conn(src, s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = std::fs::remove_file(&p);
    })?;
    Ok(path.to_path_buf())
}

/// Totals used for the stats line and the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Frames received, both ports.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames dropped (all reasons).
    pub drops: u64,
    /// Flows in the tables.
    pub flows: u64,
    /// Frames handed over.
    pub handover: u64,
}

impl Totals {
    /// Sums a snapshot.
    pub fn of(s: &DataplaneStats) -> Self {
        let mut t = Totals::default();
        for w in &s.workers {
            t.rx += w.per_port("rx_packets").iter().sum::<u64>();
            t.tx += w.per_port("tx_packets").iter().sum::<u64>();
            t.drops += w.drops.values().sum::<u64>();
            t.flows += w.get("flows_active");
            t.handover += w.get("handover_out");
        }
        t
    }
}

/// One human line: rates since the previous line and totals.
pub fn stats_line(prev: &Totals, cur: &Totals, secs: f64, s: &DataplaneStats) -> String {
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs.max(1e-9);
    let missed: u64 = s.ports.iter().map(|p| p.imissed + p.rx_nombuf).sum();
    format!(
        "stats: rx {:.0} pps tx {:.0} pps | rx {} tx {} drops {} flows {} handover {} nic-missed {}",
        rate(prev.rx, cur.rx),
        rate(prev.tx, cur.tx),
        cur.rx,
        cur.tx,
        cur.drops,
        cur.flows,
        cur.handover,
        missed
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use tlsgate_drivers::memory::{MemoryBackend, Spread};
    use tlsgate_drivers::Backend;

    fn src() -> StatsSource {
        let (be, _w) = MemoryBackend::new(1, 4, Spread::First);
        StatsSource {
            driver: "memory",
            workers: vec![Arc::new(Published::default())],
            monitor: be.monitor(),
            started: Instant::now(),
        }
    }

    #[test]
    fn answers_requests_and_refuses_garbage() {
        let s = src();
        let r = answer(&s, &Frame::request(5, Request::Stats).encode());
        assert_eq!(r.id, 5);
        let Body::Response(Response::Stats(st)) = r.body else { panic!("{r:?}") };
        assert_eq!(st.workers.len(), 1);
        assert_eq!(st.ports.len(), 2);
        let r = answer(&s, "{\"v\":1,\"id\":8,\"request\":{\"op\":\"frobnicate\"}}");
        assert_eq!(r.id, 8);
        assert!(matches!(r.body, Body::Response(Response::Error { code: ErrorCode::BadRequest, .. })));
        let r = answer(&s, "{\"v\":9,\"id\":3,\"request\":{\"op\":\"stats\"}}");
        assert!(matches!(
            r.body,
            Body::Response(Response::Error { code: ErrorCode::UnsupportedVersion, .. })
        ));
    }

    #[test]
    fn socket_round_trip() {
        let dir = std::env::temp_dir().join(format!("tg-status-{}", std::process::id()));
        let path = dir.join("s.sock");
        let stop = Arc::new(AtomicBool::new(false));
        spawn_server(&path, src(), stop.clone()).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"garbage\n").unwrap();
        c.write_all(Frame::request(1, Request::Ping).encode().as_bytes()).unwrap();
        let mut r = BufReader::new(c);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("bad_request"), "{l}");
        l.clear();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("pong"), "{l}");
        // A second dataplane on the same socket is refused, the first keeps it.
        assert!(spawn_server(&path, src(), stop.clone()).is_err());
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
