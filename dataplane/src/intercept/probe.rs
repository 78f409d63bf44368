//! Probes: the appliance's own TLS handshake with a server, to learn what the
//! server proves rather than believe what a client claims.
//!
//! ```text
//!  client's flow (held) ── needs: proof of an SNI / confirmation of a failure ──┐
//!  probe: from the client's address, a free port of the reserved range ─SYN──► server
//!         the appliance's own ClientHello (its ALPN, the SNI, the profile's suites)
//!         ◄── certificate: valid for the name under the trust store? ── result ──┘
//!             (the handshake is then dropped with a RST: no application data)
//! ```
//!
//! * **Proof** (a do-not-decrypt rule matched by SNI): proved when the server's
//!   certificate verifies for the name, with validation on and no check tolerated.
//! * **Confirmation** (a server-leg failure that could mean the server supports
//!   no mode the appliance offers): the probe's own failure, which nothing a client
//!   chose went into, decides whether a learned exclusion is made.
//!
//! A probe is a tiny splice of one socket in the worker's splice slots: its flow is
//! in the flow table, so the server's answers reach it like any intercepted
//! segment.

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpEndpoint};
use tlsgate_api::Cause;
use tlsgate_certstore::pki_types::{ServerName, UnixTime};
use tlsgate_certstore::rustls::{self, ClientConnection};

use super::stack::{set_tsval, tsval, EmitBuf, SpliceDevice};
use super::tls::{pump_conn, ServerKey, TlsShared};
use crate::flow::FlowKey;

/// What a probe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Does the server own the SNI of a do-not-decrypt rule?
    Proof,
    /// Does the server support no mode the appliance offers (a learned exclusion)?
    Confirm,
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// The handshake completed and the certificate verified for the name.
    Proved,
    /// The handshake completed, but the certificate did not verify (tolerated by
    /// an `untrust` action, validation off, or a chain untrusted before).
    NotProved,
    /// The handshake failed: why.
    Failed(Cause),
}

/// The ALPN list of the appliance's own ClientHello.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One probe.
pub struct Probe {
    /// Its flow (the probe's own 4-tuple) and the key's hash.
    pub key: FlowKey,
    /// Hash of `key`.
    pub hash: u64,
    /// The server it probes.
    pub target: ServerKey,
    /// What for.
    pub purpose: Purpose,
    /// Ethernet + VLAN header towards the server.
    pub l2: Vec<u8>,
    /// Where it leaves from: the client's address, a port of the reserved range.
    pub from: (std::net::IpAddr, u16),
    iface: Interface,
    sockets: SocketSet<'static>,
    sock: SocketHandle,
    source: IpAddress,
    ts_offset: u32,
    conn: Option<Box<ClientConnection>>,
    name: ServerName<'static>,
    deadline_ms: u64,
    result: Option<ProbeResult>,
    /// The server asked for a client certificate.
    cert_requested: bool,
    /// The handshake completed (at this time) with this verdict, held while the
    /// server may still refuse the missing client certificate it asked for.
    completed: Option<(u64, ProbeResult)>,
    /// When it next wants a poll.
    pub poll_at_ms: u64,
    /// Its entry on the worker's timer heap (`u64::MAX`: none).
    pub scheduled_ms: u64,
}

/// Where it goes from and to.
pub struct Route<'a> {
    /// The source (a client's address) and a free port of the reserved range.
    pub from: (std::net::IpAddr, u16),
    /// The server it probes (address, port, SNI).
    pub target: ServerKey,
    /// The flow key of that 4-tuple and its hash.
    pub key: FlowKey,
    /// Hash of `key`.
    pub hash: u64,
    /// Ethernet + VLAN header towards the server.
    pub l2: &'a [u8],
}

fn now_s(ms: u64) -> SInstant {
    SInstant::from_millis(ms as i64)
}

impl Probe {
    /// Starts a probe: its SYN is appended to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        route: Route<'_>,
        purpose: Purpose,
        seed: u64,
        ts_offset: u32,
        timeout_ms: u64,
        now_ms: u64,
        out: &mut EmitBuf,
    ) -> Probe {
        let Route { from, target, key, hash, l2 } = route;
        let source = IpAddress::from(from.0);
        set_tsval(ts_offset, now_ms);
        let mut dev = SpliceDevice { rx: None, out, client: source };
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        icfg.random_seed = seed;
        let mut iface = Interface::new(icfg, &mut dev, now_s(now_ms));
        iface.set_any_ip(true);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s.set_tsval_generator(Some(tsval));
        let connected = s.connect(
            iface.context(),
            IpEndpoint::new(IpAddress::from(target.0), target.1),
            IpEndpoint::new(source, from.1),
        );
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let sock = sockets.add(s);
        let name = super::tls::requested_name(target.2.as_deref(), target.0);
        let mut p = Probe {
            key,
            hash,
            target,
            purpose,
            l2: l2.to_vec(),
            from,
            iface,
            sockets,
            sock,
            source,
            ts_offset,
            conn: None,
            name,
            deadline_ms: now_ms + timeout_ms,
            result: None,
            cert_requested: false,
            completed: None,
            poll_at_ms: now_ms,
            scheduled_ms: u64::MAX,
        };
        if connected.is_err() {
            p.result = Some(ProbeResult::Failed(Cause::Internal));
        }
        p.poll(None, now_ms, UnixTime::since_unix_epoch(std::time::Duration::ZERO), dev.out, None);
        p
    }

    /// How it ended, once it has.
    pub fn result(&self) -> Option<ProbeResult> {
        self.result
    }

    /// Feeds one IP packet (or none: a timer) and advances the probe with the TLS
    /// material of the worker (`None`: none loaded: only its deadline ends it);
    /// `unix`: the wall time certificates are checked at.
    pub fn poll(
        &mut self,
        ip: Option<&[u8]>,
        now_ms: u64,
        unix: UnixTime,
        out: &mut EmitBuf,
        shared: Option<&TlsShared>,
    ) {
        set_tsval(self.ts_offset, now_ms);
        let mut dev = SpliceDevice { rx: ip, out, client: self.source };
        let t = now_s(now_ms);
        if ip.is_some() {
            self.iface.poll_ingress_single(t, &mut dev, &mut self.sockets);
        }
        match shared {
            _ if self.result.is_some() => {}
            Some(shared) => self.advance(now_ms, unix, shared),
            // No TLS material now (its first poll, or removed since): only its
            // deadline can end it.
            None if now_ms >= self.deadline_ms => {
                self.result = Some(ProbeResult::Failed(Cause::ServerTimeout))
            }
            None => {}
        }
        if self.result.is_some() {
            // Done either way: nothing more is owed to the server.
            self.sockets.get_mut::<tcp::Socket>(self.sock).abort();
        }
        while matches!(
            self.iface.poll_egress(t, &mut dev, &mut self.sockets),
            smoltcp::iface::PollResult::SocketStateChanged
        ) {}
        let due = self.completed.map_or(self.deadline_ms, |(at, _)| at + CERT_GRACE_MS);
        self.poll_at_ms = match self.iface.poll_at(t, &self.sockets) {
            _ if self.result.is_some() => u64::MAX,
            Some(at) => (at.total_millis().max(0) as u64).min(due),
            None => due,
        }
        .max(now_ms);
    }

    fn advance(&mut self, now_ms: u64, unix: UnixTime, shared: &TlsShared) {
        if now_ms >= self.deadline_ms {
            self.result = Some(ProbeResult::Failed(Cause::ServerTimeout));
            return;
        }
        let sock = self.sockets.get_mut::<tcp::Socket>(self.sock);
        match sock.state() {
            State::Established | State::CloseWait => {}
            State::Closed | State::TimeWait => {
                let cause = if self.conn.is_some() { Cause::HandshakeClosed } else { Cause::ServerRefused };
                self.result = Some(ProbeResult::Failed(cause));
                return;
            }
            _ => return,
        }
        if self.conn.is_none() {
            let alpn = ALPN.iter().map(|a| a.to_vec()).collect();
            match ClientConnection::new_with_alpn(shared.probe_client.clone(), self.name.clone(), alpn) {
                Ok(c) => self.conn = Some(Box::new(c)),
                Err(_) => {
                    self.result = Some(ProbeResult::Failed(Cause::Internal));
                    return;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else { return };
        let pumped = pump_conn(sock, &mut **conn);
        self.cert_requested |= shared.requests.take();
        // Taken every pump, so that no note of this handshake is left for another.
        let failure = shared.verifier.take_failure();
        if let Err(e) = pumped {
            let cause = super::tls::server_cause(&e, self.cert_requested, failure.as_deref());
            self.result = Some(ProbeResult::Failed(cause));
            return;
        }
        if conn.is_handshaking() {
            if !sock.may_recv() {
                self.result = Some(ProbeResult::Failed(Cause::HandshakeClosed));
            }
            return;
        }
        let (done_ms, verdict) = match self.completed {
            Some(c) => c,
            None => {
                // The proof is checked again here, whole: the verifier tolerates
                // what `untrust` tolerates, its notes may have been taken by an
                // earlier pump, and a pinned certificate is trusted for any name.
                // Proved: a chain to a trusted CA, valid for the name, now.
                let chain: Vec<_> = conn.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
                let proved = shared.verifier.enforces()
                    && conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed)
                    && chain.split_first().is_some_and(|(leaf, rest)| {
                        tlsgate_certstore::verify_server_chain(
                            shared.verifier.trust(),
                            leaf,
                            rest,
                            &self.name,
                            unix,
                        ) == Ok(tlsgate_certstore::Verified::Chain)
                    });
                let verdict = if proved { ProbeResult::Proved } else { ProbeResult::NotProved };
                *self.completed.insert((now_ms, verdict))
            }
        };
        if self.cert_requested {
            // TLS 1.3: the handshake completes on this side before the server has
            // seen that no client certificate came; one that requires it refuses
            // now (an alert, or a close), one that only asked goes on.
            if !sock.may_recv() {
                self.result = Some(ProbeResult::Failed(Cause::ClientCertRequired));
                return;
            }
            if now_ms < done_ms + CERT_GRACE_MS {
                return;
            }
        }
        self.result = Some(verdict);
    }
}

/// How long a probe whose server asked for a client certificate waits, after the
/// handshake, for the server to refuse the certificate it did not get.
const CERT_GRACE_MS: u64 = 300;

/// Whether a probe's failure means the server supports no mode the appliance
/// offers: the failures a learned exclusion may be made for (never a certificate,
/// a timeout, or an alert a client's choice could provoke: with the appliance's
/// own ClientHello, only these remain).
pub fn unsupported_mode(cause: Cause) -> bool {
    matches!(
        cause,
        Cause::NoSharedVersionOrSuite | Cause::ClientCertRequired | Cause::AlertReceived(40 | 70 | 71)
    )
}
