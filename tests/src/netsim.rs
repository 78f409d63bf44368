//! In-process network simulation: a client host and a server host, each a smoltcp
//! Ethernet interface, talking through a real dataplane (`run::run` with its workers)
//! over the `memory` backend. No root, no DPDK, deterministic enough for CI.
//!
//! ```text
//!   client host 198.18.0.1 ──frames──► Wire INSIDE ─► dataplane workers ─► Wire OUTSIDE ──► server host 198.18.0.2
//!                          ◄─────────                                    ◄──────────────
//! ```
//!
//! [`Net::step`] polls both hosts and carries frames both ways; tests drive sockets
//! between steps with [`Net::run_until`].
//!
//! Time is virtual ([`VirtualClock`]): the hosts and the dataplane's workers read
//! one clock that moves [`TICK`] per step, so a timeout of seconds costs a thousand
//! steps, not seconds of waiting. The benchmark's [`Net::inline`] runs on real time
//! (it measures the worker's CPU).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use tlsgate_dataplane::clock::{Clock, SystemClock, VirtualClock};
use tlsgate_dataplane::config::Config;
use tlsgate_dataplane::counters::Published;
use tlsgate_dataplane::run::{run, worker_settings, RunOptions, Summary};
use tlsgate_dataplane::worker::{Steering, Worker};
use tlsgate_drivers::memory::{MemQueues, MemoryBackend, Spread, Wire};
use tlsgate_drivers::Backend;
use tlsgate_drivers::{INSIDE, OUTSIDE};

use smoltcp::socket::tcp::State;
use std::io::{Read, Write};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName};
use tlsgate_certstore::rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

mod prober;
pub use prober::{Prober, PROBE_PORTS};

/// Client address.
pub const CLIENT: [u8; 4] = [198, 18, 0, 1];
/// Server address.
pub const SERVER: [u8; 4] = [198, 18, 0, 2];

/// Frames a host sent (to inject) and received (to consume).
#[derive(Default)]
struct Link {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct HostRx(Vec<u8>);
struct HostTx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for HostRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for HostTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

impl Device for Link {
    type RxToken<'a> = HostRx;
    type TxToken<'a> = HostTx<'a>;

    fn receive(&mut self, _t: SInstant) -> Option<(HostRx, HostTx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((HostRx(f), HostTx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: SInstant) -> Option<HostTx<'_>> {
        Some(HostTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// One simulated host.
pub struct Host {
    iface: Interface,
    link: Link,
    /// Its sockets.
    pub sockets: SocketSet<'static>,
    /// Every frame it received, when recording (for sequence-number checks).
    pub seen: Vec<Vec<u8>>,
    /// Every frame it sent, when recording.
    pub sent: Vec<Vec<u8>>,
    record: bool,
}

impl Host {
    fn new(mac: [u8; 6], ip: [u8; 4], seed: u64, start: Instant) -> Self {
        let mut link = Link::default();
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut link, at(start));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24));
        });
        Host {
            iface,
            link,
            sockets: SocketSet::new(vec![]),
            seen: Vec::new(),
            sent: Vec::new(),
            record: false,
        }
    }

    /// Adds a TCP socket with `buf`-byte buffers.
    pub fn tcp(&mut self, buf: usize) -> SocketHandle {
        let s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buf]), tcp::SocketBuffer::new(vec![0; buf]));
        self.sockets.add(s)
    }

    /// A TCP socket.
    pub fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Connects socket `h` from `local_port` to the server's `port`.
    pub fn connect(&mut self, h: SocketHandle, local_port: u16, port: u16) {
        self.connect_to(h, local_port, SERVER, port);
    }

    /// Connects socket `h` from `local_port` to `addr`:`port`.
    pub fn connect_to(&mut self, h: SocketHandle, local_port: u16, addr: [u8; 4], port: u16) {
        let cx = self.iface.context();
        let remote = IpEndpoint::new(IpAddress::v4(addr[0], addr[1], addr[2], addr[3]), port);
        self.sockets.get_mut::<tcp::Socket>(h).connect(cx, remote, local_port).expect("connect");
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(at(now), &mut self.link, &mut self.sockets);
    }
}

fn at(t: Instant) -> SInstant {
    // smoltcp wants an absolute clock; any fixed origin works.
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let o = *ORIGIN.get_or_init(Instant::now);
    SInstant::from_micros(t.saturating_duration_since(o).as_micros() as i64)
}

/// Virtual time per [`Net::step`].
pub const TICK: Duration = Duration::from_millis(1);

/// A client host and a server host joined through a running dataplane.
pub struct Net {
    /// The client (behind the inside port).
    pub client: Host,
    /// The server (behind the outside port).
    pub server: Host,
    wire: Wire,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Summary>>,
    inline: Option<Inline>,
    clock: Arc<dyn Clock>,
    /// The virtual clock (all but [`Net::inline`]).
    virtual_clock: Option<Arc<VirtualClock>>,
    /// Answers the dataplane's probes (see [`Net::serve_probes`]); without one
    /// they go unanswered.
    pub prober: Option<Prober>,
    /// Each exchange's server answers probes too (see [`Net::silence_probes`]).
    answer_probes: bool,
}

/// A worker polled by the simulation itself, on its thread, between host steps.
struct Inline {
    worker: Worker<MemQueues>,
    /// Time spent in the worker's polls.
    spent: Duration,
    started: Instant,
}

impl Net {
    /// Starts a dataplane with `cfg` and `workers` workers over memory ports.
    pub fn new(cfg: Config, workers: usize) -> Net {
        let (backend, wire) = MemoryBackend::new(workers, 8192, Spread::First);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let clock = VirtualClock::new();
        let opts = RunOptions { clock: Some(clock.clone()), ..RunOptions::default() };
        // Worker 0 runs on this thread; benchmarks find it by name for its CPU time.
        let handle = std::thread::Builder::new()
            .name("tg-dataplane".into())
            .spawn(move || run(backend, &cfg, s, &opts).expect("dataplane"))
            .expect("spawning the dataplane thread");
        let now = clock.now();
        Net {
            client: Host::new([2, 0, 0, 0, 0, 1], CLIENT, 0x1111, now),
            server: Host::new([2, 0, 0, 0, 0, 2], SERVER, 0x2222, now),
            wire,
            stop,
            handle: Some(handle),
            inline: None,
            clock: clock.clone(),
            virtual_clock: Some(clock),
            prober: None,
            answer_probes: true,
        }
    }

    /// A dataplane of one worker that the simulation polls itself, on its own
    /// thread, after carrying the hosts' frames (no worker thread, no idle
    /// polling): [`Net::worker_time`] is then exactly the worker's cost. Events are
    /// not drained in this mode.
    pub fn inline(cfg: Config) -> Net {
        let (mut backend, wire) = MemoryBackend::new(1, 8192, Spread::First);
        let settings = worker_settings(&cfg, 1, false, None).expect("worker settings");
        let steering = Arc::new(Steering::new(1, cfg.dataplane.handover_depth));
        let queues = backend.take_queues().pop().expect("one queue");
        let started = Instant::now();
        let worker =
            Worker::new(0, queues, &cfg, settings, steering, Arc::new(Published::default()), started);
        Net {
            client: Host::new([2, 0, 0, 0, 0, 1], CLIENT, 0x1111, started),
            server: Host::new([2, 0, 0, 0, 0, 2], SERVER, 0x2222, started),
            wire,
            stop: Arc::new(AtomicBool::new(false)),
            handle: None,
            inline: Some(Inline { worker, spent: Duration::ZERO, started }),
            clock: Arc::new(SystemClock),
            virtual_clock: None,
            prober: None,
            answer_probes: true,
        }
    }

    /// The dataplane's probes (TCP from the reserved ports, [`PROBE_PORTS`]) are
    /// answered on `port` with `config` from now on, as the server at that address
    /// would answer them.
    pub fn serve_probes(&mut self, config: Arc<ServerConfig>, port: u16) {
        match self.prober.as_mut() {
            Some(p) => p.set(config, port),
            None => self.prober = Some(Prober::new(config, port, self.clock.now())),
        }
    }

    /// The dataplane's probes go unanswered from now on (a server that drops
    /// them), exchanges included.
    pub fn silence_probes(&mut self) {
        self.prober = None;
        self.answer_probes = false;
    }

    /// The next probe on `port` is accepted and never answered (it runs until its
    /// timeout); frames from the reserved ports after it go to the server host
    /// like any client's. Exchanges no longer set a prober.
    pub fn stall_next_probe(&mut self, port: u16, config: Arc<ServerConfig>) {
        self.prober = Some(Prober::silent_once(config, port, self.clock.now()));
        self.answer_probes = false;
    }

    /// With [`Net::inline`]: the time spent in the worker's polls that found work.
    pub fn worker_time(&self) -> Duration {
        self.inline.as_ref().map_or(Duration::ZERO, |i| i.spent)
    }

    /// With [`Net::inline`]: the worker's counters now.
    pub fn inline_stats(&mut self) -> tlsgate_api::DataplaneStats {
        let i = self.inline.as_mut().expect("an inline worker");
        tlsgate_api::DataplaneStats {
            uptime_s: i.started.elapsed().as_secs_f64(),
            driver: "memory".into(),
            workers: vec![i.worker.report()],
            ports: Vec::new(),
        }
    }

    fn poll_inline(&mut self) {
        if let Some(i) = self.inline.as_mut() {
            // Until it has nothing left to do (a poll takes up to a burst per port).
            // Only polls that found work count: the idle poll that ends each round
            // is the simulation's pacing, not the traffic's cost (as `busy_ns`).
            for _ in 0..64 {
                let t = Instant::now();
                let work = i.worker.poll(t);
                if work == 0 {
                    break;
                }
                i.spent += t.elapsed();
            }
        }
    }

    /// Records the frames each host receives from now on.
    pub fn record(&mut self) {
        self.client.record = true;
        self.server.record = true;
    }

    /// Virtual time since the start ([`Net::new`]; zero with [`Net::inline`]).
    pub fn elapsed(&self) -> Duration {
        self.virtual_clock.as_ref().map_or(Duration::ZERO, |c| c.elapsed())
    }

    /// Polls both hosts once and carries frames both ways; virtual time moves on
    /// by [`TICK`].
    pub fn step(&mut self) {
        if let Some(c) = &self.virtual_clock {
            c.advance(TICK);
        }
        let now = self.clock.now();
        self.client.poll(now);
        self.server.poll(now);
        for f in self.client.link.tx.drain(..) {
            if self.client.record {
                self.client.sent.push(f.clone());
            }
            while !self.wire.inject(INSIDE, f.clone()) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let probes = self.prober.as_mut().map(|p| {
            p.serve(now);
            std::mem::take(&mut p.host.link.tx)
        });
        for f in self.server.link.tx.drain(..).chain(probes.into_iter().flatten()) {
            if self.server.record {
                self.server.sent.push(f.clone());
            }
            while !self.wire.inject(OUTSIDE, f.clone()) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        self.poll_inline();
        for f in self.wire.take_tx(INSIDE) {
            if self.client.record {
                self.client.seen.push(f.clone());
            }
            self.client.link.rx.push_back(f);
        }
        for f in self.wire.take_tx(OUTSIDE) {
            if self.server.record {
                self.server.seen.push(f.clone());
            }
            match self.prober.as_mut() {
                Some(p) if p.takes(&f) => {
                    // A probe's: the prober answers.
                    p.host.link.rx.push_back(f);
                    continue;
                }
                None if !self.answer_probes && Prober::from_probe_port(&f) => continue, // silenced
                _ => {}
            }
            if let (Some(p), true) = (self.prober.as_mut(), f.get(12..14) == Some(&[0x08, 0x06])) {
                // ARP: the prober has the server's addresses and learns its
                // neighbours too.
                p.host.link.rx.push_back(f.clone());
            }
            self.server.link.rx.push_back(f);
        }
    }

    /// Steps until `done(self)` holds; panics after `limit`.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Net) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "simulation did not reach its goal within {limit:?}");
            self.step();
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Stops the dataplane and returns its final counters.
    pub fn stop(mut self) -> Summary {
        // Let in-flight frames and the last counter publication settle.
        for _ in 0..20 {
            self.step();
            std::thread::sleep(Duration::from_millis(2));
        }
        self.stop.store(true, Ordering::Relaxed);
        if self.inline.is_some() {
            let stats = self.inline_stats();
            let totals = tlsgate_dataplane::status::Totals::of(&stats);
            return Summary { seconds: stats.uptime_s, rx: totals.rx, tx: totals.tx, totals, stats };
        }
        self.handle.take().expect("running").join().expect("dataplane thread")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The counters of a running dataplane, asked over its status socket (the
/// configuration's `dataplane.status_socket`).
pub fn live_stats(socket: &std::path::Path) -> tlsgate_api::DataplaneStats {
    use std::io::BufRead;
    use tlsgate_api::{Body, Frame, Request, Response};
    let mut conn = std::os::unix::net::UnixStream::connect(socket).expect("status socket");
    conn.write_all(Frame::request(1, Request::Stats).encode().as_bytes()).expect("stats request");
    let mut line = String::new();
    std::io::BufReader::new(conn).read_line(&mut line).expect("stats answer");
    match Frame::decode(&line).expect("a frame").body {
        Body::Response(Response::Stats(s)) => s,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A deterministic byte stream for transfers.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    tlsgate_dataplane::wire::build::XorShift::new(seed).bytes(len)
}

/// TCP sequence number and flags of a frame, when it is an IPv4 TCP segment.
pub fn tcp_seq(frame: &[u8]) -> Option<(u32, u8)> {
    let p = tlsgate_dataplane::wire::parse::parse(frame).ok()?;
    if p.proto != tlsgate_dataplane::wire::parse::proto::TCP {
        return None;
    }
    let t = usize::from(p.l4_offset);
    Some((u32::from_be_bytes(frame.get(t + 4..t + 8)?.try_into().ok()?), p.tcp_flags))
}

/// Moves TLS records between a host's socket and a rustls connection (both ways)
/// and processes them: the dataplane's own pump.
pub use tlsgate_dataplane::intercept::tls::pump_conn as tls_pump;

/// CPU time (user + system, seconds) used so far by this process's thread named
/// `name` (Linux `/proc`), e.g. `tg-dataplane`: the worker's own cost, apart from the
/// simulated hosts.
pub fn thread_cpu_seconds(name: &str) -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        return Some((utime + stime) / tick);
    }
    None
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What a client saw: the response (when complete), its error, the certificate
/// it was shown, the ALPN agreed.
pub type Seen = (Option<Vec<u8>>, Option<String>, Option<CertificateDer<'static>>, Option<Vec<u8>>);

/// One TLS client connection from `client_port` to the server's `port` through a
/// running `net`: the client sends `request`, the server answers `response_len`
/// bytes, both close.
#[allow(clippy::too_many_arguments)]
pub fn tls_exchange(
    net: &mut Net,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
    port: u16,
    client_port: u16,
    request: &[u8],
    response_len: usize,
) -> Seen {
    exchange(net, server, client, sni, port, client_port, request, response_len, After::Close)
}

/// As [`tls_exchange`], leaving the connection open and idle afterwards.
#[allow(clippy::too_many_arguments)]
pub fn tls_exchange_open(
    net: &mut Net,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
    port: u16,
    client_port: u16,
    request: &[u8],
    response_len: usize,
) -> Seen {
    exchange(net, server, client, sni, port, client_port, request, response_len, After::KeepOpen)
}

/// As [`tls_exchange`], then both hosts forget the connection without a packet: it
/// stays open and idle in the dataplane only (the hosts keep no state for it, so
/// thousands of such flows cost the simulation nothing).
#[allow(clippy::too_many_arguments)]
pub fn tls_exchange_forgotten(
    net: &mut Net,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
    port: u16,
    client_port: u16,
    request: &[u8],
    response_len: usize,
) -> Seen {
    exchange(net, server, client, sni, port, client_port, request, response_len, After::Forget)
}

#[derive(PartialEq, Eq)]
enum After {
    Close,
    KeepOpen,
    Forget,
}

#[allow(clippy::too_many_arguments)]
fn exchange(
    net: &mut Net,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
    port: u16,
    client_port: u16,
    request: &[u8],
    response_len: usize,
    after: After,
) -> Seen {
    let buf = if after == After::Forget { 16 * 1024 } else { 256 * 1024 };
    // The server at that address answers the dataplane's probes as it answers
    // its clients.
    if net.answer_probes {
        net.serve_probes(server.clone(), port);
    }
    let ss = net.server.tcp(buf);
    net.server.sock(ss).listen(port).unwrap();
    let cs = net.client.tcp(buf);
    if after == After::Forget {
        // Everything received is acknowledged at once, so nothing is left to
        // retransmit when the hosts forget the connection.
        net.server.sock(ss).set_ack_delay(None);
        net.client.sock(cs).set_ack_delay(None);
    }
    net.client.connect(cs, client_port, port);
    let mut sconn = ServerConnection::new(server).unwrap();
    let mut cconn = ClientConnection::new(client, ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let response = pattern(response_len, 77);
    let (mut got_req, mut got_resp) = (Vec::new(), Vec::new());
    let (mut req_sent, mut resp_sent) = (0usize, 0usize);
    let mut error = None;
    net.run_until(Duration::from_secs(60), |n| {
        if let Err(e) = tls_pump(n.client.sock(cs), &mut cconn) {
            error = Some(e.to_string());
            return true;
        }
        if !cconn.is_handshaking() && req_sent < request.len() {
            req_sent += cconn.writer().write(&request[req_sent..]).unwrap_or(0);
        }
        let mut buf = [0u8; 16384];
        while let Ok(k) = cconn.reader().read(&mut buf) {
            if k == 0 {
                break;
            }
            got_resp.extend_from_slice(&buf[..k]);
        }
        if tls_pump(n.server.sock(ss), &mut sconn).is_err() {
            // The server side's view of a failure (e.g. no shared suite) is checked
            // through the client and the counters.
        }
        while let Ok(k) = sconn.reader().read(&mut buf) {
            if k == 0 {
                break;
            }
            got_req.extend_from_slice(&buf[..k]);
        }
        if got_req.len() >= request.len() && resp_sent < response.len() {
            resp_sent += sconn.writer().write(&response[resp_sent..]).unwrap_or(0);
        }
        let closed = matches!(
            n.client.sock(cs).state(),
            State::Closed | State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        );
        if closed && error.is_none() && got_resp.len() < response.len() {
            error = Some("connection closed".into());
            return true;
        }
        got_resp.len() >= response.len()
    });
    let ok = error.is_none() && got_req == request && got_resp == response;
    let peer = cconn.peer_certificates().and_then(|c| c.first().cloned());
    let alpn = cconn.alpn_protocol().map(<[u8]>::to_vec);
    if ok && after == After::Forget {
        // Let everything in flight be acknowledged (session tickets included), then
        // drop the sockets without a word.
        net.run_until(Duration::from_secs(10), |n| {
            let _ = tls_pump(n.client.sock(cs), &mut cconn);
            let _ = tls_pump(n.server.sock(ss), &mut sconn);
            n.client.sock(cs).send_queue() == 0
                && n.server.sock(ss).send_queue() == 0
                && !cconn.wants_write()
                && !sconn.wants_write()
        });
        for _ in 0..10 {
            net.step();
            std::thread::sleep(Duration::from_micros(200));
        }
        net.client.sockets.remove(cs);
        net.server.sockets.remove(ss);
        return (Some(got_resp), error, peer, alpn);
    }
    if ok && after == After::Close {
        cconn.send_close_notify();
        sconn.send_close_notify();
        let _ = tls_pump(net.client.sock(cs), &mut cconn);
        net.client.sock(cs).close();
        net.server.sock(ss).close();
        net.run_until(Duration::from_secs(10), |n| {
            let _ = tls_pump(n.server.sock(ss), &mut sconn);
            matches!(n.client.sock(cs).state(), State::Closed | State::TimeWait)
                && matches!(n.server.sock(ss).state(), State::Closed | State::TimeWait)
        });
    }
    if !ok {
        // The client gives up and closes, as a real one does; the splice then ends.
        // Its alert goes out first (rustls queued it when it failed).
        let mut alert = Vec::new();
        while cconn.wants_write() && cconn.write_tls(&mut alert).unwrap_or(0) > 0 {}
        let _ = net.client.sock(cs).send_slice(&alert);
        net.client.sock(cs).close();
        net.run_until(Duration::from_secs(10), |n| {
            // A real server closes once its peer has.
            if n.server.sock(ss).state() == State::CloseWait {
                n.server.sock(ss).close();
            }
            matches!(n.client.sock(cs).state(), State::Closed | State::TimeWait)
        });
    }
    (ok.then_some(got_resp), error, peer, alpn)
}

/// An origin server's TLS configuration: `chain` and `key`, ALPN http/1.1; with
/// `tls12_aes256_only` TLS 1.2 and the AES-256-GCM suites only (the seed's first
/// problem: none of the base profile's suites).
pub fn origin_server(
    chain: Vec<CertificateDer<'static>>,
    key: tlsgate_certstore::pki_types::PrivateKeyDer<'static>,
    tls12_aes256_only: bool,
) -> Arc<ServerConfig> {
    use tlsgate_certstore::rustls;
    let mut provider = rustls::crypto::ring::default_provider();
    let builder = if tls12_aes256_only {
        provider.cipher_suites = vec![
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ];
        ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        ServerConfig::builder_with_provider(Arc::new(provider)).with_safe_default_protocol_versions()
    };
    let mut cfg =
        builder.expect("versions").with_no_client_auth().with_single_cert(chain, key).expect("certificate");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A client trusting exactly `roots` (e.g. the decryption CA), offering h2 and
/// http/1.1.
pub fn client_trusting(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = tlsgate_certstore::rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("a root certificate");
    }
    // As a browser of 2026: aws-lc-rs, X25519MLKEM768 offered first.
    let provider = Arc::new(tlsgate_certstore::rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// An origin that speaks the hybrid post-quantum key exchange (X25519MLKEM768
/// preferred, aws-lc-rs), as Debian 12's nginx and OpenSSL do not: TLS 1.3 and
/// 1.2, ALPN h2 and http/1.1.
pub fn origin_server_pq(
    chain: Vec<CertificateDer<'static>>,
    key: tlsgate_certstore::pki_types::PrivateKeyDer<'static>,
) -> Arc<ServerConfig> {
    let provider = Arc::new(tlsgate_certstore::rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}
