//! Transparent TCP splice: an intercepted flow is terminated on both legs by a
//! small user-space TCP stack (smoltcp) and its bytes are relayed between them.
//!
//! ```text
//!  client ──SYN──► [listener: server's addr:port] ···relay··· [connect: from client's addr:port] ──SYN──► server
//!         ◄─SYN-ACK (held until the server leg is up; RST if it fails)
//!
//!  Connecting ─► Handshaking (TLS flows) ─► Relaying ─► Done(end)
//!       │              │                       │  ▲
//!       │              └─ abort ─► Closing(end) ┘  └ both legs closed, a reset, a timeout
//!       └─ refused / no answer ─────────────────────► Done(end)
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
//! * How the flow ended is set once ([`Ended`]): the first end stands, and a flow
//!   the TLS layer passed raw keeps that verdict however its legs close.

use std::sync::Arc;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::socket::AnySocket;
use smoltcp::time::{Duration as SDuration, Instant as SInstant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpEndpoint, IpListenEndpoint};
use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_policy::CompiledPolicy;

mod buffers;
mod legs;

pub use buffers::{Buffers, SMALL_BUFFERS};
use buffers::{SMALL_CLIENT_RX, SMALL_SERVER_RX, SMALL_TX};

use super::outcome::Ended;
use super::probe::Purpose;
use super::stack::{set_tsval, tsval, EmitBuf, SpliceDevice};
use super::tls::{FlowAddrs, ServerKey, TlsFlow, TlsInfo, TlsWorker};
use super::InterceptConfig;
use crate::clock::Clock;
use crate::fastpath::Seg;
use crate::flow::FlowKey;

/// Where a splice stands.
#[derive(Debug)]
pub enum SpliceState {
    /// The client's SYN held (its SYN-ACK paused), the server leg connecting.
    Connecting,
    /// Both TCP legs up, the TLS handshakes under way.
    Handshaking,
    /// Relaying: plaintext (decrypted), raw (passed by the TLS layer), or a plain
    /// TCP splice.
    Relaying,
    /// The outcome is known; the legs finish (an alert and FINs going out).
    Closing(Ended),
    /// Both legs finished: the buffers can go.
    Done(Ended),
}

/// What a new splice is made with.
pub struct Setup<'a> {
    /// `[intercept]`.
    pub cfg: &'a InterceptConfig,
    /// With TLS interception: its handshake timeout, ms.
    pub tls: Option<u64>,
    /// Seed of the flow's stack (initial sequence numbers).
    pub seed: u64,
    /// Its TCP timestamps' offset.
    pub ts_offset: u32,
    /// Milliseconds it may wait for its first payload byte.
    pub first_byte_timeout_ms: u64,
    /// The policy the flow was decided under (consulted again with the SNI).
    pub policy: Option<Arc<CompiledPolicy>>,
    /// The configuration version it was decided under (its events carry it).
    pub config_version: u64,
}

/// One intercepted flow.
pub struct Splice {
    /// The flow's key in the flow table, and its hash.
    pub key: FlowKey,
    /// Hash of `key`.
    pub hash: u64,
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
    state: SpliceState,
    /// We closed (sent FIN on) the client / server leg.
    closed: [bool; 2],
    /// The client / server finished sending (its FIN was relayed).
    fin_from: [bool; 2],
    /// The client / server sent its FIN (seen in its leg's state once: a leg that
    /// closes fully later still has data to relay before the FIN is carried over).
    fin_in: [bool; 2],
    started_ms: u64,
    last_data_ms: u64,
    connect_timeout_ms: u64,
    idle_timeout_ms: u64,
    /// Bytes relayed client → server and server → client.
    pub relayed: [u64; 2],
    /// When the splice next wants a poll (ms of the worker clock): the stack's
    /// timers or the deadline of its phase, whichever comes first.
    pub poll_at_ms: u64,
    /// The due time of its entry on the worker's timer heap (`u64::MAX`: none).
    pub scheduled_ms: u64,
    /// TLS interception state, from when both TCP legs are up (None: a plain TCP
    /// splice, or not yet).
    tls: Option<TlsFlow>,
    /// Its TLS is intercepted (the TLS state is made when both legs are up).
    intercept_tls: bool,
    /// Small until used.
    buffers: Buffers,
    /// The admission quota slot it holds while half-open (its source's key),
    /// managed by the intercept path.
    pub quota_slot: Option<u128>,
    /// Full buffers are charged to the memory budget for it.
    pub charged_full: bool,
    /// Bytes charged beyond its full buffers (a bulk transfer's doublings).
    pub charged_bulk: u64,
    /// Its send buffers grew beyond full (given back after a quiet spell).
    send_grown: bool,
    /// When it last tried to give them back.
    shrink_tried_ms: u64,
    first_byte_timeout_ms: u64,
    /// Time allowed for the TLS handshakes once both TCP legs are up.
    handshake_timeout_ms: u64,
    /// The TLS handshake phase under way, and since when: each phase has its own
    /// deadline, and the ClientHello's starts at its first byte (`u64::MAX`: not
    /// yet), so nothing a client does late is charged to the server.
    hs_phase: Option<Phase>,
    hs_since_ms: u64,
    /// When both TCP legs came up.
    tcp_up_ms: u64,
    /// Bytes read from the client before passing the flow through raw; they go to
    /// the server first.
    replay: Vec<u8>,
    addrs: FlowAddrs,
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

/// Index of a leg in the per-leg arrays: the client's 0, the server's 1.
fn ix(leg: Leg) -> usize {
    usize::from(leg == Leg::Server)
}

fn now_s(ms: u64) -> SInstant {
    SInstant::from_millis(ms as i64)
}

/// No TLS information (a plain TCP splice).
static NO_TLS: std::sync::LazyLock<TlsInfo> = std::sync::LazyLock::new(TlsInfo::default);

impl Splice {
    /// Sets a flow up from the client's SYN frame (`frame`, read by the fast path
    /// as `seg`): the client leg receives the SYN (its SYN-ACK held), the server
    /// leg starts connecting. Packets to send are appended to `out`. With `tls`
    /// (its handshake timeout, ms), the flow's TLS is intercepted once both TCP
    /// legs are up.
    pub fn new(frame: &[u8], seg: &Seg, setup: Setup<'_>, now_ms: u64, out: &mut EmitBuf) -> Self {
        let Setup { cfg, tls, seed, ts_offset, first_byte_timeout_ms, policy, config_version } = setup;
        let (src, src_port, dst, dst_port) = seg.key.endpoints(seg.side);
        let (client, server) = (IpAddress::from(src), IpAddress::from(dst));
        let l3 = usize::from(seg.l3);
        let l2_server = frame[..l3].to_vec();
        let mut l2_client = l2_server.clone();
        l2_client[..6].copy_from_slice(&frame[6..12]);
        l2_client[6..12].copy_from_slice(&frame[..6]);

        set_tsval(ts_offset, now_ms);
        let mut dev = SpliceDevice { rx: None, out, client };
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        icfg.random_seed = seed;
        let mut iface = Interface::new(icfg, &mut dev, now_s(now_ms));
        iface.set_any_ip(true);
        let mk = |rx: usize| {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; rx]),
                tcp::SocketBuffer::new(vec![0; SMALL_TX]),
            );
            s.set_nagle_enabled(false);
            s.set_congestion_control(CongestionControl::Cubic);
            s.set_ack_delay((cfg.ack_delay_ms > 0).then(|| SDuration::from_millis(cfg.ack_delay_ms)));
            s.set_ack_every(cfg.ack_every_segments);
            // Timestamps on both legs (each is kept only when its peer offers them
            // too): a SYN on a reused 4-tuple then gets past the origin's TIME_WAIT.
            s.set_tsval_generator(Some(tsval));
            s
        };
        let mut sockets = SocketSet::new(Vec::with_capacity(2));
        let mut cs = mk(SMALL_CLIENT_RX);
        cs.pause_synack(true);
        // Cannot fail: a fresh socket and a non-zero port.
        let _ = cs.listen(IpListenEndpoint { addr: Some(server), port: dst_port });
        // Both legs offer the window scale of the largest buffers they may grow to
        // (patched smoltcp).
        let full = cfg.max_buffer_bytes();
        cs.set_window_scale_for(full);
        let mut ss = mk(SMALL_SERVER_RX);
        ss.set_timeout(Some(SDuration::from_secs(cfg.connect_timeout_s)));
        let connected =
            ss.connect(iface.context(), IpEndpoint::new(server, dst_port), IpEndpoint::new(client, src_port));
        ss.set_window_scale_for(full);
        let client_sock = sockets.add(cs);
        let server_sock = sockets.add(ss);
        let mut s = Splice {
            key: seg.key,
            hash: seg.hash,
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
            state: SpliceState::Connecting,
            closed: [false; 2],
            fin_from: [false; 2],
            fin_in: [false; 2],
            started_ms: now_ms,
            last_data_ms: now_ms,
            connect_timeout_ms: cfg.connect_timeout_s * 1000,
            idle_timeout_ms: cfg.idle_timeout_s * 1000,
            relayed: [0; 2],
            poll_at_ms: now_ms,
            scheduled_ms: u64::MAX,
            tls: None,
            intercept_tls: tls.is_some(),
            handshake_timeout_ms: tls.unwrap_or(u64::MAX / 4),
            buffers: Buffers::Small,
            quota_slot: None,
            charged_full: false,
            charged_bulk: 0,
            send_grown: false,
            shrink_tried_ms: 0,
            first_byte_timeout_ms,
            tcp_up_ms: now_ms,
            hs_phase: None,
            hs_since_ms: u64::MAX,
            replay: Vec::new(),
            addrs: FlowAddrs { client: src, client_port: src_port, server: dst, port: dst_port },
        };
        if connected.is_err() {
            s.finish(s.tcp_end(EventKind::Reset, Leg::Server, Cause::ServerRefused));
        }
        let ip = &frame[l3..usize::from(seg.l3_end)];
        s.step(Some(ip), now_ms, dev.out, None, &crate::clock::SystemClock);
        s
    }

    /// The flow's endpoints.
    pub fn addrs(&self) -> FlowAddrs {
        self.addrs
    }

    /// What the TLS layer learnt (SNI, rule, version, suite, …).
    pub fn tls_info(&self) -> &TlsInfo {
        self.tls.as_ref().map_or(&NO_TLS, |t| &t.info)
    }

    /// Where the splice stands.
    pub fn state(&self) -> &SpliceState {
        &self.state
    }

    /// Both legs finished: its buffers can go.
    pub fn is_done(&self) -> bool {
        matches!(self.state, SpliceState::Done(_))
    }

    /// How the flow ended; `None` until its outcome is known.
    pub fn ended(&self) -> Option<&Ended> {
        match &self.state {
            SpliceState::Closing(end) | SpliceState::Done(end) => Some(end),
            _ => None,
        }
    }

    /// How far the flow got, for its event: the server's TCP connect, a TLS
    /// handshake, or the relay.
    pub fn progress(&self) -> Phase {
        match self.state {
            SpliceState::Connecting => Phase::TcpConnect,
            _ => self.tls.as_ref().and_then(TlsFlow::handshaking).unwrap_or(Phase::Relay),
        }
    }

    /// Feeds one IP packet of this flow (or none: a timer poll) and advances both
    /// legs; packets to send are appended to `out`.
    pub fn step(
        &mut self,
        ip: Option<&[u8]>,
        now_ms: u64,
        out: &mut EmitBuf,
        tls: Option<&mut TlsWorker>,
        clock: &dyn Clock,
    ) {
        let has_packet = ip.is_some();
        set_tsval(self.ts_offset, now_ms);
        let mut dev = SpliceDevice { rx: ip, out, client: self.client };
        let t = now_s(now_ms);
        // The packet in (it may free send-buffer space or bring data), then the
        // relay and TLS move what they can, then everything queued goes out: one
        // pass of each, where `Interface::poll` would be needed twice.
        if has_packet {
            self.iface.poll_ingress_single(t, &mut dev, &mut self.sockets);
        }
        self.advance(now_ms, tls, clock);
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

    /// When the current state times out: the server leg's connect, the TLS
    /// handshakes, or no data either way for the idle timeout.
    fn deadline_ms(&self) -> u64 {
        let mut idle = self.last_data_ms + self.idle_timeout_ms + 1;
        if self.buffers == Buffers::Small && !matches!(self.state, SpliceState::Connecting) {
            idle = idle.min(self.tcp_up_ms + self.first_byte_timeout_ms + 1);
        }
        match self.state {
            SpliceState::Connecting => self.started_ms + self.connect_timeout_ms + 1,
            SpliceState::Handshaking => {
                idle.min(self.hs_since_ms.saturating_add(self.handshake_timeout_ms + 1))
            }
            SpliceState::Relaying | SpliceState::Closing(_) => idle.min(self.shrink_due_ms()),
            SpliceState::Done(_) => u64::MAX,
        }
    }

    /// The flow ended; both legs are finished. An outcome known before (an abort,
    /// or the verdict of a flow passed raw) stands; otherwise `end`.
    fn finish(&mut self, end: Ended) {
        let end = match std::mem::replace(&mut self.state, SpliceState::Connecting) {
            SpliceState::Closing(known) | SpliceState::Done(known) => known,
            _ => self.tls.as_ref().and_then(TlsFlow::passed).cloned().unwrap_or(end),
        };
        self.state = SpliceState::Done(end);
        // The splice is reaped after this step: an ACK that a delayed-ACK timer
        // holds (a peer's FIN, its last bytes) goes out with this step's egress,
        // or the peer would retransmit into a tombstone.
        for h in [self.client_sock, self.server_sock] {
            self.sockets.get_mut::<tcp::Socket>(h).ack_now();
        }
    }

    /// An end at the TCP level, in the flow's current phase: a decrypted or spliced
    /// flow that closed, timed out or was reset.
    fn tcp_end(&self, kind: EventKind, leg: Leg, cause: Cause) -> Ended {
        Ended::new(kind, leg, self.progress(), cause)
    }

    fn advance(&mut self, now_ms: u64, tls: Option<&mut TlsWorker>, clock: &dyn Clock) {
        for (i, h) in [self.client_sock, self.server_sock].into_iter().enumerate() {
            let st = self.sockets.get::<tcp::Socket>(h).state();
            self.fin_in[i] |=
                matches!(st, State::CloseWait | State::LastAck | State::Closing | State::TimeWait);
        }
        if matches!(self.state, SpliceState::Done(_))
            || matches!(self.state, SpliceState::Connecting) && !self.connect(now_ms)
        {
            return;
        }
        if self.buffers == Buffers::Small
            && now_ms.saturating_sub(self.tcp_up_ms) > self.first_byte_timeout_ms
        {
            // Both legs up (the client had its SYN-ACK) and not a byte either way:
            // the connection is closed, and its slot of the quota freed.
            self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
            self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
            let end = self.tcp_end(EventKind::Timeout, Leg::Client, Cause::ClientTimeout);
            self.finish(
                end.detail(format!("no payload byte within {} s", self.first_byte_timeout_ms / 1000)),
            );
            return;
        }
        let tls_running = self.tls.as_ref().is_some_and(|t| t.passed().is_none());
        if tls_running && matches!(self.state, SpliceState::Handshaking | SpliceState::Relaying) {
            // A timer poll without the worker's TLS state: next time.
            let Some(w) = tls else { return };
            if self.pump_tls(w, now_ms, clock) {
                return;
            }
        }
        if matches!(self.state, SpliceState::Relaying)
            && self.tls.as_ref().is_none_or(|t| t.passed().is_some())
        {
            // A plain splice, or a flow the TLS layer passed through raw.
            self.relay_raw(now_ms);
        }
        let cs = self.sockets.get::<tcp::Socket>(self.client_sock).state();
        let ss = self.sockets.get::<tcp::Socket>(self.server_sock).state();
        let done = |s: State| matches!(s, State::Closed | State::TimeWait);
        // A leg that ends without our having closed it toward its peer... was reset.
        for (leg, state, other) in [(Leg::Client, cs, self.server_sock), (Leg::Server, ss, self.client_sock)]
        {
            let i = ix(leg);
            if state == State::Closed && !self.closed[i] && !self.fin_from[i] {
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

    /// The server leg's connect: true once both TCP legs are up (the client's
    /// SYN-ACK released), false while it is pending or when it failed.
    fn connect(&mut self, now_ms: u64) -> bool {
        match self.sockets.get::<tcp::Socket>(self.server_sock).state() {
            State::Established => {
                self.sockets.get_mut::<tcp::Socket>(self.client_sock).pause_synack(false);
                self.sockets.get_mut::<tcp::Socket>(self.server_sock).set_timeout(None);
                if self.intercept_tls {
                    self.tls = Some(TlsFlow::new());
                }
                self.state =
                    if self.tls.is_some() { SpliceState::Handshaking } else { SpliceState::Relaying };
                self.tcp_up_ms = now_ms;
                true
            }
            State::Closed | State::TimeWait => {
                self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
                self.finish(self.tcp_end(EventKind::Reset, Leg::Server, Cause::ServerRefused));
                false
            }
            _ if now_ms.saturating_sub(self.started_ms) > self.connect_timeout_ms => {
                self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
                self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
                self.finish(self.tcp_end(EventKind::Timeout, Leg::Server, Cause::ConnectTimeout));
                false
            }
            _ => false,
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
        self.step(None, now_ms, out, None, &crate::clock::SystemClock);
    }

    /// The signer ticket its TLS layer waits for, taken once.
    pub fn take_sign_ticket(&mut self) -> Option<u64> {
        self.tls.as_mut().and_then(|t| t.info.sign_ticket.take())
    }

    /// Polled at `now_ms` (something it waits for came).
    pub fn wake(&mut self, now_ms: u64) {
        self.poll_at_ms = self.poll_at_ms.min(now_ms);
    }

    /// A probe its TLS layer asks for (the server, what for), taken once.
    pub fn take_probe_request(&mut self) -> Option<(ServerKey, Purpose)> {
        self.tls.as_mut().and_then(|t| t.info.probe_request.take())
    }

    /// The probe it waits for concluded (its result is in the shared maps) or
    /// could not run (then its name counts as unproved): it decides at once, with
    /// what is known.
    pub fn probe_over(&mut self, now_ms: u64) {
        if let Some(t) = self.tls.as_mut() {
            t.info.probe_over = true;
        }
        self.poll_at_ms = now_ms;
    }
}
