//! Transparent TCP splice: an intercepted flow is terminated on both legs by a
//! small user-space TCP stack (smoltcp) and its bytes are relayed between them.
//!
//! ```text
//!  client ──SYN──► [listener: server's addr:port] ···relay··· [connect: from client's addr:port] ──SYN──► server
//!         ◄─SYN-ACK (held until the server leg is up; RST if it fails)
//! ```
//!
//! * One smoltcp `Interface` per flow (`Medium::Ip`, any-IP), holding two sockets:
//!   the client leg (a listener bound to exactly the server's address and port,
//!   its SYN-ACK paused until the server leg is established) and the server leg (a
//!   connect whose local endpoint is the client's address and port). Both legs use
//!   the same 4-tuple; the appliance stays invisible.
//! * Frames leave with the Ethernet and VLAN headers of the side they go to, taken
//!   from the client's SYN: as is towards the server, MACs swapped towards the
//!   client.
//! * The two legs have their own sequence numbers, so once spliced a flow's
//!   segments must never take the fast path again: after both legs close the flow
//!   stays as a tombstone whose late segments are dropped, while the buffers are
//!   freed at once (no 10 s TIME_WAIT with full buffers).
//! * Only segments of the flow's own 4-tuple reach the stack (an any-IP interface
//!   answers anything else with a spoofed RST).

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::socket::AnySocket;
use smoltcp::time::{Duration as SDuration, Instant as SInstant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpEndpoint, IpListenEndpoint};

use std::cell::Cell;
use std::sync::Arc;

use tlsgate_policy::CompiledPolicy;

use crate::parse::Parsed;
use crate::tls::{Ended, TlsAction, TlsFlow, TlsWorker};
use tlsgate_api::{Cause, EventKind, Leg, Phase as EventPhase};

/// Largest IP packet the stacks send (the lab's and most links' MTU).
pub const IP_MTU: usize = 1500;

/// Settings of intercepted flows (`[intercept]`).
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptConfig {
    /// TCP destination ports whose flows are terminated and spliced (until the
    /// decryption policy decides, this is the selection).
    pub ports: Vec<u16>,
    /// Receive and send buffer of each leg, KiB (4 buffers per flow).
    pub buffer_kib: usize,
    /// Seconds to establish the server leg before the client gets a RST.
    pub connect_timeout_s: u64,
    /// Seconds without data either way before both legs are reset.
    pub idle_timeout_s: u64,
    /// Most intercepted flows per worker; more are forwarded on the fast path.
    pub max_per_worker: usize,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig {
            ports: Vec::new(),
            buffer_kib: 64,
            connect_timeout_s: 10,
            idle_timeout_s: 3600,
            max_per_worker: 10_000,
        }
    }
}

impl InterceptConfig {
    /// Range checks; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(4..=4096).contains(&self.buffer_kib) {
            return Err(format!("intercept.buffer_kib: {} is outside 4..=4096", self.buffer_kib));
        }
        if !(1..=300).contains(&self.connect_timeout_s) {
            return Err(format!(
                "intercept.connect_timeout_s: {} is outside 1..=300",
                self.connect_timeout_s
            ));
        }
        if self.idle_timeout_s == 0 {
            return Err("intercept.idle_timeout_s: must be at least 1".into());
        }
        if self.ports.contains(&0) {
            return Err("intercept.ports: port 0 is not a port".into());
        }
        Ok(())
    }
}

/// Where a splice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Client's SYN held, server leg connecting.
    Connecting,
    /// Both legs up, relaying.
    Relaying,
    /// Both legs finished: buffers can go.
    Done,
}

/// A frame the stack produced, as an IP packet with the leg it goes to.
pub struct Emitted {
    /// Destination leg.
    pub leg: Leg,
    /// Start of the packet in the worker's emit buffer.
    pub start: usize,
    /// Length.
    pub len: usize,
}

/// Output of a poll: IP packets in one reused buffer.
#[derive(Default)]
pub struct EmitBuf {
    /// Packet bytes, back to back.
    pub bytes: Vec<u8>,
    /// The packets.
    pub packets: Vec<Emitted>,
}

impl EmitBuf {
    /// Forgets previous packets (keeps the allocation).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.packets.clear();
    }
}

struct SpliceDevice<'a> {
    rx: Option<&'a [u8]>,
    out: &'a mut EmitBuf,
    client: IpAddress,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a> {
    out: &'a mut EmitBuf,
    client: IpAddress,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let start = self.out.bytes.len();
        self.out.bytes.resize(start + len, 0);
        let r = f(&mut self.out.bytes[start..]);
        // Route by destination: the client's address goes inside, all else outside.
        let dst = destination(&self.out.bytes[start..]);
        let leg = if dst == Some(self.client) { Leg::Client } else { Leg::Server };
        self.out.packets.push(Emitted { leg, start, len });
        r
    }
}

fn destination(ip: &[u8]) -> Option<IpAddress> {
    match ip.first()? >> 4 {
        4 if ip.len() >= 20 => Some(IpAddress::v4(ip[16], ip[17], ip[18], ip[19])),
        6 if ip.len() >= 40 => {
            let b: [u8; 16] = ip[24..40].try_into().ok()?;
            Some(IpAddress::Ipv6(b.into()))
        }
        _ => None,
    }
}

impl Device for SpliceDevice<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _t: SInstant) -> Option<(Rx<'_>, Tx<'_>)> {
        let pkt = self.rx.take()?;
        Some((Rx(pkt), Tx { out: self.out, client: self.client }))
    }

    fn transmit(&mut self, _t: SInstant) -> Option<Tx<'_>> {
        Some(Tx { out: self.out, client: self.client })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MTU;
        caps
    }
}

/// What a new splice is made with.
pub struct Setup<'a> {
    /// `[intercept]`.
    pub cfg: &'a InterceptConfig,
    /// With TLS interception: its handshake timeout, ms.
    pub tls: Option<u64>,
    /// Seed of the flow's stack (initial sequence numbers).
    pub seed: u64,
    /// The policy the flow was decided under (consulted again with the SNI).
    pub policy: Option<Arc<CompiledPolicy>>,
    /// The configuration version it was decided under (its events carry it).
    pub config_version: u64,
}

/// One intercepted flow.
pub struct Splice {
    /// The policy the flow was decided under.
    pub policy: Option<Arc<CompiledPolicy>>,
    /// The configuration version it was decided under.
    pub config_version: u64,
    iface: Interface,
    sockets: SocketSet<'static>,
    client_sock: SocketHandle,
    server_sock: SocketHandle,
    client: IpAddress,
    /// Added to the worker clock's milliseconds for the flow's TCP timestamps.
    ts_offset: u32,
    /// Ethernet + VLAN header towards the client.
    pub l2_client: Vec<u8>,
    /// Ethernet + VLAN header towards the server.
    pub l2_server: Vec<u8>,
    phase: Phase,
    /// We closed (sent FIN on) the client / server leg.
    closed: [bool; 2],
    /// The client / server finished sending (its FIN was relayed).
    fin_from: [bool; 2],
    started_ms: u64,
    last_data_ms: u64,
    connect_timeout_ms: u64,
    idle_timeout_ms: u64,
    /// Bytes relayed client → server and server → client.
    pub relayed: [u64; 2],
    /// How it ended (or why it was passed or blocked), set once.
    ended: Option<Ended>,
    /// When the splice next wants a poll (ms of the worker clock): the stack's
    /// timers or the deadline of its phase, whichever comes first.
    pub poll_at_ms: u64,
    /// The due time of its entry on the worker's timer heap (`u64::MAX`: none).
    pub scheduled_ms: u64,
    /// TLS interception state (None: a plain TCP splice, or passed through).
    tls: Option<TlsFlow>,
    /// Time allowed for the TLS handshakes once both TCP legs are up.
    handshake_timeout_ms: u64,
    /// When both TCP legs came up.
    relay_since_ms: u64,
    /// Both TCP legs came up.
    tcp_up: bool,
    /// What the TLS layer learnt, kept when the flow is passed through raw (see
    /// [`Splice::tls_info`]).
    passed_info: crate::tls::TlsInfo,
    /// Whether the TLS sessions of both legs came up (the flow was decrypted).
    pub decrypted: bool,
    /// Bytes read from the client before passing the flow through raw; they go to
    /// the server first.
    replay: Vec<u8>,
    addrs: crate::tls::FlowAddrs,
}

/// Both legs' sockets of a splice's set, client first.
fn legs<'a>(
    sockets: &'a mut SocketSet<'static>,
    cs: SocketHandle,
    ss: SocketHandle,
) -> (&'a mut tcp::Socket<'static>, &'a mut tcp::Socket<'static>) {
    let (mut client, mut server) = (None, None);
    for (h, sock) in sockets.iter_mut() {
        if let Some(t) = tcp::Socket::downcast_mut(sock) {
            if h == cs {
                client = Some(t);
            } else if h == ss {
                server = Some(t);
            }
        }
    }
    // A splice's set holds exactly these two TCP sockets from its creation on.
    (client.expect("client leg"), server.expect("server leg"))
}

fn sock_ip(a: u128, v6: bool) -> IpAddress {
    if v6 {
        IpAddress::Ipv6(a.into())
    } else {
        IpAddress::Ipv4((a as u32).into())
    }
}

thread_local! {
    /// The TCP timestamp value (RFC 7323) of the splice being stepped on this
    /// thread: smoltcp asks a plain `fn` for it.
    static TSVAL: Cell<u32> = const { Cell::new(0) };
}

/// smoltcp's timestamp generator: the value [`Splice::step`] set for its flow.
fn tsval() -> u32 {
    TSVAL.with(Cell::get)
}

/// A flow's timestamp offset: a keyed hash of its address pair (RFC 7323 §7.1:
/// not predictable from outside, and the same for every connection between two
/// hosts, so that the values a server sees on a reused 4-tuple keep increasing:
/// Linux accepts a SYN on a 4-tuple it holds in TIME_WAIT when its timestamp is
/// newer than the old connection's).
fn ts_offset(client: IpAddress, server: IpAddress) -> u32 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(Default::default).hash_one((client, server)) as u32
}

/// Index of a leg in the per-leg arrays: the client's 0, the server's 1.
fn ix(leg: Leg) -> usize {
    usize::from(leg == Leg::Server)
}

fn now_s(ms: u64) -> SInstant {
    SInstant::from_millis(ms as i64)
}

impl Splice {
    /// Sets a flow up from the client's SYN frame (`frame`, parsed as `p`): the
    /// client leg receives the SYN (its SYN-ACK held), the server leg starts
    /// connecting. Packets to send are appended to `out`.
    /// With `tls` (its handshake timeout, ms), the flow's TLS is intercepted once
    /// both TCP legs are up.
    pub fn new(frame: &[u8], p: &Parsed, setup: Setup<'_>, now_ms: u64, out: &mut EmitBuf) -> Self {
        let Setup { cfg, tls, seed, policy, config_version } = setup;
        let v6 = matches!(p.l3, crate::parse::L3::V6);
        let client = sock_ip(p.src, v6);
        let server = sock_ip(p.dst, v6);
        let l3 = usize::from(p.l3_offset);
        let l2_server = frame[..l3].to_vec();
        let mut l2_client = l2_server.clone();
        l2_client[..6].copy_from_slice(&frame[6..12]);
        l2_client[6..12].copy_from_slice(&frame[..6]);

        let ts_offset = ts_offset(client, server);
        TSVAL.with(|t| t.set(ts_offset.wrapping_add(now_ms as u32)));
        let mut dev = SpliceDevice { rx: None, out, client };
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        icfg.random_seed = seed;
        let mut iface = Interface::new(icfg, &mut dev, now_s(now_ms));
        iface.set_any_ip(true);
        let buf = cfg.buffer_kib * 1024;
        let mk = || {
            let mut s =
                tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buf]), tcp::SocketBuffer::new(vec![0; buf]));
            s.set_nagle_enabled(false);
            s.set_congestion_control(CongestionControl::Cubic);
            s.set_ack_delay(None);
            // Timestamps on both legs (each is kept only when its peer offers them
            // too): a SYN on a reused 4-tuple then gets past the origin's TIME_WAIT.
            s.set_tsval_generator(Some(tsval));
            s
        };
        let mut sockets = SocketSet::new(Vec::with_capacity(2));
        let mut cs = mk();
        cs.pause_synack(true);
        // Cannot fail: a fresh socket and a non-zero port.
        let _ = cs.listen(IpListenEndpoint { addr: Some(server), port: p.dst_port });
        let mut ss = mk();
        ss.set_timeout(Some(SDuration::from_secs(cfg.connect_timeout_s)));
        let connected = ss.connect(
            iface.context(),
            IpEndpoint::new(server, p.dst_port),
            IpEndpoint::new(client, p.src_port),
        );
        let client_sock = sockets.add(cs);
        let server_sock = sockets.add(ss);
        let mut s = Splice {
            policy,
            config_version,
            iface,
            sockets,
            client_sock,
            server_sock,
            client,
            ts_offset,
            l2_client,
            l2_server,
            phase: Phase::Connecting,
            closed: [false; 2],
            fin_from: [false; 2],
            started_ms: now_ms,
            last_data_ms: now_ms,
            connect_timeout_ms: cfg.connect_timeout_s * 1000,
            idle_timeout_ms: cfg.idle_timeout_s * 1000,
            relayed: [0; 2],
            ended: None,
            poll_at_ms: now_ms,
            scheduled_ms: u64::MAX,
            tls: tls.map(|_| TlsFlow::new()),
            handshake_timeout_ms: tls.unwrap_or(u64::MAX / 4),
            relay_since_ms: now_ms,
            tcp_up: false,
            passed_info: Default::default(),
            decrypted: false,
            replay: Vec::new(),
            addrs: crate::tls::FlowAddrs {
                client: p.src_ip(),
                client_port: p.src_port,
                server: p.dst_ip(),
                port: p.dst_port,
            },
        };
        if connected.is_err() {
            s.finish(Ended::new(EventKind::Reset, Leg::Server, EventPhase::TcpConnect, Cause::ServerRefused));
        }
        let ip = &frame[l3..usize::from(p.l3_end)];
        s.step(Some(ip), now_ms, dev.out, None);
        s
    }

    /// The flow's endpoints.
    pub fn addrs(&self) -> crate::tls::FlowAddrs {
        self.addrs
    }

    /// What the TLS layer learnt (SNI, rule, version, suite, …).
    pub fn tls_info(&self) -> &crate::tls::TlsInfo {
        self.tls.as_ref().map_or(&self.passed_info, |t| &t.info)
    }

    /// Where the splice stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How far the flow got, for its event: the server's TCP connect, a TLS
    /// handshake, or the relay.
    pub fn progress(&self) -> tlsgate_api::Phase {
        use tlsgate_api::Phase as P;
        if !self.tcp_up {
            return P::TcpConnect;
        }
        self.tls.as_ref().and_then(TlsFlow::handshaking).unwrap_or(P::Relay)
    }

    /// Feeds one IP packet of this flow (or none: a timer poll) and advances both
    /// legs; packets to send are appended to `out`.
    pub fn step(&mut self, ip: Option<&[u8]>, now_ms: u64, out: &mut EmitBuf, tls: Option<&mut TlsWorker>) {
        let has_packet = ip.is_some();
        TSVAL.with(|t| t.set(self.ts_offset.wrapping_add(now_ms as u32)));
        let mut dev = SpliceDevice { rx: ip, out, client: self.client };
        let t = now_s(now_ms);
        // The packet in (it may free send-buffer space or bring data), then the
        // relay and TLS move what they can, then everything queued goes out: one
        // pass of each, where `Interface::poll` would be needed twice.
        if has_packet {
            self.iface.poll_ingress_single(t, &mut dev, &mut self.sockets);
        }
        self.advance(now_ms, tls);
        while matches!(
            self.iface.poll_egress(t, &mut dev, &mut self.sockets),
            smoltcp::iface::PollResult::SocketStateChanged
        ) {}
        let deadline = self.deadline_ms();
        self.poll_at_ms = match self.iface.poll_at(t, &self.sockets) {
            Some(at) => (at.total_millis().max(0) as u64).min(deadline),
            None => deadline,
        }
        .max(now_ms);
    }

    /// When the current phase times out: the server leg's connect, or no data
    /// either way for the idle timeout.
    fn deadline_ms(&self) -> u64 {
        match self.phase {
            Phase::Connecting => self.started_ms + self.connect_timeout_ms + 1,
            Phase::Relaying => {
                let idle = self.last_data_ms + self.idle_timeout_ms + 1;
                match &self.tls {
                    Some(t) if t.handshaking().is_some() => {
                        idle.min(self.relay_since_ms + self.handshake_timeout_ms + 1)
                    }
                    _ => idle,
                }
            }
            Phase::Done => u64::MAX,
        }
    }

    /// How the flow ended; `None` until it has.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Records how the flow ended, unless that is known already (the first end
    /// stands: a passed flow's outcome is its verdict, however its legs close).
    fn set_end(&mut self, end: Ended) {
        if self.ended.is_none() {
            self.ended = Some(end);
        }
    }

    /// The flow ended; both legs are finished.
    fn finish(&mut self, end: Ended) {
        self.set_end(end);
        self.phase = Phase::Done;
    }

    /// An end at the TCP level, in the flow's current phase: a decrypted or spliced
    /// flow that closed, timed out or was reset.
    fn tcp_end(&self, kind: EventKind, leg: Leg, cause: Cause) -> Ended {
        Ended::new(kind, leg, self.progress(), cause)
    }

    fn advance(&mut self, now_ms: u64, tls: Option<&mut TlsWorker>) {
        if self.phase == Phase::Done {
            return;
        }
        let server_state = self.sockets.get::<tcp::Socket>(self.server_sock).state();
        if self.phase == Phase::Connecting {
            match server_state {
                State::Established => {
                    self.sockets.get_mut::<tcp::Socket>(self.client_sock).pause_synack(false);
                    self.phase = Phase::Relaying;
                    self.relay_since_ms = now_ms;
                    self.tcp_up = true;
                }
                State::Closed | State::TimeWait => {
                    self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
                    self.finish(self.tcp_end(EventKind::Reset, Leg::Server, Cause::ServerRefused));
                    return;
                }
                _ if now_ms.saturating_sub(self.started_ms) > self.connect_timeout_ms => {
                    self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
                    self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
                    self.finish(self.tcp_end(EventKind::Timeout, Leg::Server, Cause::ConnectTimeout));
                    return;
                }
                _ => return,
            }
            self.sockets.get_mut::<tcp::Socket>(self.server_sock).set_timeout(None);
        }
        if self.tls.is_some() {
            match tls {
                Some(w) => {
                    if self.pump_tls(w, now_ms) {
                        return;
                    }
                }
                // A timer poll without the worker's TLS state: next time.
                None => return,
            }
        }
        // A plain splice, or one the TLS layer just passed through raw.
        if self.tls.is_none() {
            if !self.replay.is_empty() {
                let s = self.sockets.get_mut::<tcp::Socket>(self.server_sock);
                let n = s.send_slice(&self.replay).unwrap_or(0);
                self.replay.drain(..n);
                self.relayed[0] += n as u64;
            }
            let moved_up =
                if self.replay.is_empty() { self.relay(self.client_sock, self.server_sock, 0) } else { 0 };
            let moved_down = self.relay(self.server_sock, self.client_sock, 1);
            if moved_up + moved_down > 0 {
                self.last_data_ms = now_ms;
            }
        }
        let cs = self.sockets.get::<tcp::Socket>(self.client_sock).state();
        let ss = self.sockets.get::<tcp::Socket>(self.server_sock).state();
        let done = |s: State| matches!(s, State::Closed | State::TimeWait);
        // A leg that ends without our having closed it toward its peer... was reset.
        for (leg, state, other) in [(Leg::Client, cs, self.server_sock), (Leg::Server, ss, self.client_sock)]
        {
            let i = ix(leg);
            if state == State::Closed && !self.closed[i] && !self.fin_seen(leg) {
                self.sockets.get_mut::<tcp::Socket>(other).abort();
                self.finish(self.tcp_end(EventKind::Reset, leg, Cause::Reset));
                return;
            }
        }
        if done(cs) && done(ss) {
            self.finish(self.tcp_end(EventKind::Decrypted, Leg::None, Cause::Closed));
            return;
        }
        if now_ms.saturating_sub(self.last_data_ms) > self.idle_timeout_ms {
            self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
            self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
            self.finish(self.tcp_end(EventKind::Timeout, Leg::None, Cause::IdleTimeout));
        }
    }

    /// Runs the TLS layer; true when the splice finished.
    fn pump_tls(&mut self, w: &mut TlsWorker, now_ms: u64) -> bool {
        let timed_out = self.tls.as_ref().is_some_and(|t| t.handshaking().is_some())
            && now_ms.saturating_sub(self.relay_since_ms) > self.handshake_timeout_ms;
        let (client, server) = legs(&mut self.sockets, self.client_sock, self.server_sock);
        let before = (client.recv_queue(), server.recv_queue());
        let flow = self.tls.as_mut().expect("checked by the caller");
        let action = if timed_out {
            flow.give_up(self.addrs, self.policy.as_deref(), self.handshake_timeout_ms / 1000)
        } else {
            flow.pump(client, server, self.addrs, w, self.policy.as_deref())
        };
        if flow.is_decrypting() {
            self.decrypted = true;
            self.relayed = flow.plaintext_moved();
        }
        if (client.recv_queue(), server.recv_queue()) != before {
            self.last_data_ms = now_ms;
        }
        match action {
            TlsAction::Continue => {
                // A TCP FIN without close_notify: carry the close across.
                let fin = |s: &tcp::Socket<'_>| {
                    matches!(s.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait)
                        && s.recv_queue() == 0
                };
                if fin(client) && !self.fin_from[ix(Leg::Client)] {
                    self.fin_from[ix(Leg::Client)] = true;
                    self.closed[ix(Leg::Server)] = true;
                    server.close();
                }
                if fin(server) && !self.fin_from[ix(Leg::Server)] {
                    self.fin_from[ix(Leg::Server)] = true;
                    self.closed[ix(Leg::Client)] = true;
                    client.close();
                }
                false
            }
            TlsAction::PassRaw(bytes, why) => {
                if let Some(flow) = self.tls.take() {
                    self.passed_info = flow.info;
                }
                self.replay = bytes;
                self.set_end(why);
                false
            }
            TlsAction::Abort { to_client, end } => {
                let _ = client.send_slice(&to_client);
                client.close();
                server.abort();
                self.closed = [true, true];
                self.fin_from = [true, true];
                self.set_end(end);
                // Let the alert and FIN go out; the legs finish as they close.
                false
            }
            TlsAction::Reset(end) => {
                client.abort();
                server.abort();
                self.finish(end);
                true
            }
            TlsAction::Closed => {
                for (i, sock) in [client, server].into_iter().enumerate() {
                    if !self.closed[i] {
                        self.closed[i] = true;
                        sock.close();
                    }
                }
                self.fin_from = [true, true];
                false
            }
        }
    }

    /// The client leg has closed (the server leg may still be finishing): a new
    /// SYN from the client on this 4-tuple is a new connection.
    pub fn client_leg_closed(&self) -> bool {
        matches!(self.sockets.get::<tcp::Socket>(self.client_sock).state(), State::Closed | State::TimeWait)
    }

    /// Ends the splice now (its client reuses the 4-tuple): the server leg, if it
    /// is still finishing, is reset; packets to send are appended to `out`.
    pub fn retire(&mut self, now_ms: u64, out: &mut EmitBuf) {
        self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
        self.finish(self.tcp_end(EventKind::Decrypted, Leg::None, Cause::Closed));
        self.step(None, now_ms, out, None);
    }

    fn fin_seen(&self, leg: Leg) -> bool {
        self.fin_from[ix(leg)]
    }

    /// Moves what `to` can take from `from` (straight from one socket buffer into
    /// the other); carries a FIN across once `from`'s peer has finished and
    /// everything is relayed. `dir`: 0 up, 1 down.
    fn relay(&mut self, from: SocketHandle, to: SocketHandle, dir: usize) -> usize {
        let mut moved = 0;
        {
            let (client, server) = legs(&mut self.sockets, self.client_sock, self.server_sock);
            let (f, t) = if dir == 0 { (client, server) } else { (server, client) };
            while t.may_send() && t.send_capacity() > t.send_queue() && f.can_recv() {
                let n = f
                    .recv(|buf| {
                        let n = t.send_slice(buf).unwrap_or(0);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                moved += n;
            }
        }
        self.relayed[dir] += moved as u64;
        let f = self.sockets.get::<tcp::Socket>(from);
        let fin_received =
            matches!(f.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait);
        let peer_finished = fin_received && f.recv_queue() == 0;
        let from_leg = if dir == 0 { Leg::Client } else { Leg::Server };
        if peer_finished && !self.fin_from[ix(from_leg)] {
            self.fin_from[ix(from_leg)] = true;
            let to_leg = if dir == 0 { Leg::Server } else { Leg::Client };
            self.closed[ix(to_leg)] = true;
            self.sockets.get_mut::<tcp::Socket>(to).close();
        }
        moved
    }
}
