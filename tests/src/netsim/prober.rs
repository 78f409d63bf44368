//! The server's side of the dataplane's probes: a second smoltcp host with the
//! server's addresses that takes the frames whose TCP source port is in the
//! probes' reserved range, accepts every connection on its port and answers with
//! the server's TLS configuration, as the real server at that address would (a
//! test server's sockets are each set up for one exchange, so the probes get their
//! own listener).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use tlsgate_certstore::rustls::{ServerConfig, ServerConnection};

use super::{tls_pump, Host, SERVER};

/// The probes' reserved source ports (`[tls.probe]` defaults).
pub const PROBE_PORTS: RangeInclusive<u16> = 61_440..=65_439;

/// Answers probes with a server configuration.
pub struct Prober {
    pub(super) host: Host,
    port: u16,
    config: Arc<ServerConfig>,
    listener: SocketHandle,
    conns: Vec<(SocketHandle, ServerConnection, bool)>,
    /// Connections accepted.
    pub accepted: usize,
    /// TLS handshakes completed.
    pub handshakes: usize,
    /// Accepts TCP but never answers TLS (a server that lets a probe time out).
    silent: bool,
    /// Takes at most this many connections; then frames from the reserved ports
    /// go to the server host like any other (a client that uses such a port).
    limit: Option<usize>,
}

impl Prober {
    pub(super) fn new(config: Arc<ServerConfig>, port: u16, now: Instant) -> Prober {
        let mut host = Host::new([2, 0, 0, 0, 0, 2], SERVER, 0x3333, now);
        let listener = listen(&mut host, port);
        Prober {
            host,
            port,
            config,
            listener,
            conns: Vec::new(),
            accepted: 0,
            handshakes: 0,
            silent: false,
            limit: None,
        }
    }

    /// Takes one probe on `port`, accepts its TCP and never answers its TLS; then
    /// takes no more frames.
    pub(super) fn silent_once(config: Arc<ServerConfig>, port: u16, now: Instant) -> Prober {
        Prober { silent: true, limit: Some(1), ..Prober::new(config, port, now) }
    }

    /// Answers with `config` on `port` from now on (connections running go on).
    pub(super) fn set(&mut self, config: Arc<ServerConfig>, port: u16) {
        if port != self.port {
            self.host.sockets.remove(self.listener);
            self.listener = listen(&mut self.host, port);
            self.port = port;
        }
        self.config = config;
    }

    /// Whether an Ethernet frame from the dataplane is a probe's (IPv4 TCP from a
    /// port of the reserved range) this prober takes.
    pub(super) fn takes(&self, frame: &[u8]) -> bool {
        let over = self.limit.is_some_and(|n| self.accepted >= n && self.conns.is_empty());
        !over && Self::from_probe_port(frame)
    }

    pub(super) fn from_probe_port(frame: &[u8]) -> bool {
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
            return false;
        }
        let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
        frame.get(l4..l4 + 2).is_some_and(|p| PROBE_PORTS.contains(&u16::from_be_bytes([p[0], p[1]])))
    }

    /// After the host's poll: a listener that took a connection is replaced, and
    /// every connection's TLS is pumped (finished ones are dropped).
    pub(super) fn serve(&mut self, now: Instant) {
        self.host.poll(now);
        if self.host.sock(self.listener).state() != State::Listen
            && self.limit.is_none_or(|n| self.accepted < n)
        {
            let taken = std::mem::replace(&mut self.listener, listen(&mut self.host, self.port));
            let conn = ServerConnection::new(self.config.clone()).expect("a server connection");
            self.conns.push((taken, conn, false));
            self.accepted += 1;
        }
        let mut done = Vec::new();
        for (i, (h, conn, failed)) in self.conns.iter_mut().enumerate() {
            let sock = self.host.sockets.get_mut::<tcp::Socket>(*h);
            if !*failed && !self.silent {
                let was = conn.is_handshaking();
                if tls_pump(sock, conn).is_err() {
                    // Its alert goes out, then its FIN, as a real server's would.
                    *failed = true;
                    let mut alert = Vec::new();
                    while conn.wants_write() && conn.write_tls(&mut alert).unwrap_or(0) > 0 {}
                    let _ = sock.send_slice(&alert);
                    sock.close();
                } else if was && !conn.is_handshaking() {
                    self.handshakes += 1;
                }
            }
            match sock.state() {
                State::Closed | State::TimeWait => done.push(i),
                State::CloseWait => sock.close(),
                _ => {}
            }
        }
        for i in done.into_iter().rev() {
            let (h, _, _) = self.conns.remove(i);
            self.host.sockets.remove(h);
        }
    }
}

fn listen(host: &mut Host, port: u16) -> SocketHandle {
    let h = host.tcp(64 * 1024);
    host.sock(h).listen(port).expect("listen");
    h
}
