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

use crate::parse::Parsed;
use crate::tls::{TlsAction, TlsEnd, TlsFlow, TlsWorker};

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

/// Which side a packet came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The client (inside port).
    Client,
    /// The server (outside port).
    Server,
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

/// How a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both legs closed with FINs.
    Closed,
    /// The server refused or never answered: the client got a RST.
    ServerRefused,
    /// A leg was reset; the other leg was reset too.
    Reset(Leg),
    /// Idle or connect timeout.
    Timeout,
    /// TLS interception failed on one leg (see [`Splice::tls_end`]); the client got
    /// a fatal alert and a close.
    TlsAbort,
    /// Reset after the ClientHello by the policy (see [`Splice::tls_end`]).
    Blocked,
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

/// One intercepted flow.
pub struct Splice {
    iface: Interface,
    sockets: SocketSet<'static>,
    client_sock: SocketHandle,
    server_sock: SocketHandle,
    client: IpAddress,
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
    /// How it ended, once it has.
    pub end: Option<End>,
    /// When the stack next wants a poll (ms of the worker clock).
    pub poll_at_ms: u64,
    /// TLS interception state (None: a plain TCP splice, or passed through).
    tls: Option<TlsFlow>,
    /// What the TLS layer learnt (kept when the flow is passed through raw).
    pub tls_info: crate::tls::TlsInfo,
    /// Whether the TLS sessions of both legs came up (the flow was decrypted).
    pub decrypted: bool,
    /// Why TLS interception did not run to its end, if it did not.
    pub tls_end: Option<TlsEnd>,
    /// Bytes read from the client before passing the flow through raw; they go to
    /// the server first.
    replay: Vec<u8>,
    addrs: crate::tls::FlowAddrs,
}

fn sock_ip(a: u128, v6: bool) -> IpAddress {
    if v6 {
        IpAddress::Ipv6(a.into())
    } else {
        IpAddress::Ipv4((a as u32).into())
    }
}

fn now_s(ms: u64) -> SInstant {
    SInstant::from_millis(ms as i64)
}

impl Splice {
    /// Sets a flow up from the client's SYN frame (`frame`, parsed as `p`): the
    /// client leg receives the SYN (its SYN-ACK held), the server leg starts
    /// connecting. Packets to send are appended to `out`.
    /// With `tls`, the flow's TLS is intercepted once both TCP legs are up.
    pub fn new(
        frame: &[u8],
        p: &Parsed,
        cfg: &InterceptConfig,
        tls: bool,
        seed: u64,
        now_ms: u64,
        out: &mut EmitBuf,
    ) -> Self {
        let v6 = matches!(p.l3, crate::parse::L3::V6);
        let client = sock_ip(p.src, v6);
        let server = sock_ip(p.dst, v6);
        let l3 = usize::from(p.l3_offset);
        let l2_server = frame[..l3].to_vec();
        let mut l2_client = l2_server.clone();
        l2_client[..6].copy_from_slice(&frame[6..12]);
        l2_client[6..12].copy_from_slice(&frame[..6]);

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
            iface,
            sockets,
            client_sock,
            server_sock,
            client,
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
            end: None,
            poll_at_ms: now_ms,
            tls: tls.then(TlsFlow::new),
            tls_info: Default::default(),
            decrypted: false,
            tls_end: None,
            replay: Vec::new(),
            addrs: crate::tls::FlowAddrs {
                client: p.src_ip(),
                client_port: p.src_port,
                server: p.dst_ip(),
                port: p.dst_port,
            },
        };
        if connected.is_err() {
            s.finish(End::ServerRefused);
        }
        let ip = &frame[l3..usize::from(p.l3_end)];
        s.step(Some(ip), now_ms, dev.out, None);
        s
    }

    /// The flow's endpoints.
    pub fn addrs(&self) -> crate::tls::FlowAddrs {
        self.addrs
    }

    /// Where the splice stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Feeds one IP packet of this flow (or none: a timer poll) and advances both
    /// legs; packets to send are appended to `out`.
    pub fn step(
        &mut self,
        ip: Option<&[u8]>,
        now_ms: u64,
        out: &mut EmitBuf,
        mut tls: Option<&mut TlsWorker>,
    ) {
        let mut dev = SpliceDevice { rx: ip, out, client: self.client };
        let t = now_s(now_ms);
        self.iface.poll(t, &mut dev, &mut self.sockets);
        self.advance(now_ms, tls.as_deref_mut());
        // Relaying freed buffer space or queued data: send it now.
        self.iface.poll(t, &mut dev, &mut self.sockets);
        self.advance(now_ms, tls);
        self.poll_at_ms = match self.iface.poll_at(t, &self.sockets) {
            Some(at) => (at.total_millis().max(0) as u64).max(now_ms),
            None => now_ms + 1000,
        };
    }

    fn finish(&mut self, end: End) {
        if self.end.is_none() {
            self.end = Some(end);
        }
        self.phase = Phase::Done;
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
                }
                State::Closed | State::TimeWait => {
                    self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
                    self.finish(End::ServerRefused);
                    return;
                }
                _ if now_ms.saturating_sub(self.started_ms) > self.connect_timeout_ms => {
                    self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
                    self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
                    self.finish(End::Timeout);
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
        } else {
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
            let i = leg as usize;
            if state == State::Closed && !self.closed[i] && !self.fin_seen(leg) {
                self.sockets.get_mut::<tcp::Socket>(other).abort();
                self.finish(End::Reset(leg));
                return;
            }
        }
        if done(cs) && done(ss) {
            self.finish(End::Closed);
            return;
        }
        if now_ms.saturating_sub(self.last_data_ms) > self.idle_timeout_ms {
            self.sockets.get_mut::<tcp::Socket>(self.client_sock).abort();
            self.sockets.get_mut::<tcp::Socket>(self.server_sock).abort();
            self.finish(End::Timeout);
        }
    }

    /// Runs the TLS layer; true when the splice finished.
    fn pump_tls(&mut self, w: &mut TlsWorker, now_ms: u64) -> bool {
        let (cs, ss) = (self.client_sock, self.server_sock);
        let mut client = None;
        let mut server = None;
        for (h, sock) in self.sockets.iter_mut() {
            if let Some(t) = tcp::Socket::downcast_mut(sock) {
                if h == cs {
                    client = Some(t);
                } else if h == ss {
                    server = Some(t);
                }
            }
        }
        let (Some(client), Some(server)) = (client, server) else { return false };
        let before = (client.recv_queue(), server.recv_queue());
        let flow = self.tls.as_mut().expect("checked by the caller");
        let action = flow.pump(client, server, self.addrs, w);
        self.tls_info.clone_from(&flow.info);
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
                if fin(client) && !self.fin_from[Leg::Client as usize] {
                    self.fin_from[Leg::Client as usize] = true;
                    self.closed[Leg::Server as usize] = true;
                    server.close();
                }
                if fin(server) && !self.fin_from[Leg::Server as usize] {
                    self.fin_from[Leg::Server as usize] = true;
                    self.closed[Leg::Client as usize] = true;
                    client.close();
                }
                false
            }
            TlsAction::PassRaw(bytes, why) => {
                self.tls = None;
                self.replay = bytes;
                self.tls_end = Some(why);
                false
            }
            TlsAction::Abort { to_client, end } => {
                let _ = client.send_slice(&to_client);
                client.close();
                server.abort();
                self.closed = [true, true];
                self.fin_from = [true, true];
                self.tls_end = Some(end);
                self.end = Some(End::TlsAbort);
                // Let the alert and FIN go out; the legs finish as they close.
                false
            }
            TlsAction::Reset(end) => {
                client.abort();
                server.abort();
                self.tls_end = Some(end);
                self.finish(End::Blocked);
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

    fn fin_seen(&self, leg: Leg) -> bool {
        self.fin_from[leg as usize]
    }

    /// Moves what `to` can take from `from`; carries a FIN across once `from`'s
    /// peer has finished and everything is relayed. `dir`: 0 up, 1 down.
    fn relay(&mut self, from: SocketHandle, to: SocketHandle, dir: usize) -> usize {
        let mut moved = 0;
        let mut chunk = [0u8; 4096];
        loop {
            let room = {
                let t = self.sockets.get::<tcp::Socket>(to);
                if !t.may_send() {
                    break;
                }
                t.send_capacity() - t.send_queue()
            };
            if room == 0 {
                break;
            }
            let want = room.min(chunk.len());
            let n =
                self.sockets.get_mut::<tcp::Socket>(from).recv_slice(&mut chunk[..want]).unwrap_or_default();
            if n == 0 {
                break;
            }
            let sent = self.sockets.get_mut::<tcp::Socket>(to).send_slice(&chunk[..n]).unwrap_or(0);
            debug_assert_eq!(sent, n, "room was checked");
            moved += n;
        }
        self.relayed[dir] += moved as u64;
        let f = self.sockets.get::<tcp::Socket>(from);
        let fin_received =
            matches!(f.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait);
        let peer_finished = fin_received && f.recv_queue() == 0;
        let from_leg = if dir == 0 { Leg::Client } else { Leg::Server };
        if peer_finished && !self.fin_from[from_leg as usize] {
            self.fin_from[from_leg as usize] = true;
            let to_leg = if dir == 0 { Leg::Server } else { Leg::Client };
            self.closed[to_leg as usize] = true;
            self.sockets.get_mut::<tcp::Socket>(to).close();
        }
        moved
    }
}
