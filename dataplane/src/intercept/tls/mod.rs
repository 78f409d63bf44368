//! TLS interception on a TCP splice: the dataplane's rustls adapter.
//!
//! ```text
//!  client leg bytes ─► Hello (hello.rs): rustls Acceptor reads the ClientHello (bytes kept)
//!        ├─ not TLS / undecryptable / do-not-decrypt ─► Passed: the splice replays
//!        │   the kept bytes and relays raw
//!        └─ decrypt ─► Server (server.rs): rustls client to the server (client's SNI
//!                      and ALPN, the profile's suites, our verifier)
//!                         ├─ fails (alert, cipher mismatch, certificate) ─► fatal
//!                         │   alert to the client, close; the outcome is kept
//!                         └─ up ─► forge (client.rs, cached) ─► Both (relay.rs):
//!                                  rustls server to the client with the server's
//!                                  ALPN; plaintext relayed both ways
//! ```
//!
//! All rustls connection calls of the dataplane are in this folder (its API moves
//! between releases); configurations come from `tlsgate-certstore`
//! ([`config`]: the shared material and the `[tls]` section).

use std::sync::Arc;

use smoltcp::socket::tcp;
use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::pki_types::{IpAddr as PkiIp, ServerName};
use tlsgate_certstore::rustls::server::{Accepted, Acceptor};
use tlsgate_certstore::rustls::{ClientConnection, ServerConnection};
use tlsgate_certstore::VerifyFailure;
use tlsgate_policy::CompiledPolicy;

use crate::clock::Clock;
use crate::intercept::outcome::Ended;

mod client;
pub mod config;
mod hello;
mod relay;
mod server;
pub mod servers;
pub mod signer;

pub use client::TlsWorker;
pub use config::{Signing, TlsConfig, TlsShared, Verification};
pub use relay::{fatal_alert, pump_conn, ALERT_HANDSHAKE_FAILURE};
pub(crate) use server::server_cause;
pub use servers::{ServerKey, ServerMap};
pub use signer::SignerLink;

/// The flow's endpoints, for policy decisions and naming the server.
#[derive(Debug, Clone, Copy)]
pub struct FlowAddrs {
    /// Client address.
    pub client: std::net::IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Server address.
    pub server: std::net::IpAddr,
    /// Server port.
    pub port: u16,
}

/// Where the TLS layer of a splice stands.
pub enum TlsState {
    /// Reading the ClientHello.
    Hello {
        /// rustls' ClientHello reader.
        acceptor: Box<Acceptor>,
        /// The bytes read so far, to replay if the flow is passed through.
        raw: Vec<u8>,
    },
    /// Handshaking with the server; the client waits for our ServerHello.
    Server {
        /// The client's hello, answered once the server is verified.
        accepted: Box<Accepted>,
        /// Our client towards the server.
        conn: Box<ClientConnection>,
        /// What the client asked for (SNI or the server's IP).
        requested: ServerName<'static>,
        /// The TLS state `conn` was made with (its verifier holds this
        /// handshake's failure even if a new snapshot switched the worker's).
        shared: Arc<TlsShared>,
    },
    /// The server is verified; the forged certificate is being signed outside
    /// the packet path (the client still waits for our ServerHello).
    AwaitingLeaf {
        /// The client's hello.
        accepted: Box<Accepted>,
        /// Our client towards the server, handshake done.
        conn: Box<ClientConnection>,
        /// What the client asked for.
        requested: ServerName<'static>,
        /// The signer's ticket.
        ticket: u64,
    },
    /// Both sessions up (or handshaking with the client): plaintext relay.
    Both {
        /// Our server towards the client.
        to_client: Box<ServerConnection>,
        /// Our client towards the server.
        to_server: Box<ClientConnection>,
        /// close_notify forwarded (0: to the server, 1: to the client).
        closed: [bool; 2],
        /// Plaintext bytes relayed (0: client → server, 1: server → client).
        moved: [u64; 2],
    },
    /// The ClientHello read and held while a probe proves the server's name.
    AwaitingProbe {
        /// The client's hello.
        accepted: Box<Accepted>,
        /// The bytes read, to replay if the flow is passed through.
        raw: Vec<u8>,
    },
    /// Not decrypted: the splice relays raw bytes; the flow's outcome.
    Passed(Ended),
    /// Finished with a failure; the splice tears the legs down.
    Failed,
}

/// What a TLS pump step asks of the splice.
pub enum TlsAction {
    /// Keep going.
    Continue,
    /// Switch to raw relay: these bytes (read from the client) go to the server
    /// first.
    PassRaw(Vec<u8>),
    /// Send these bytes to the client, then close both legs.
    Abort {
        /// A TLS alert record for the client (may be empty).
        to_client: Vec<u8>,
        /// Why.
        end: Ended,
    },
    /// Both sides sent close_notify or closed: close the legs.
    Closed,
    /// Reset both legs.
    Reset(Ended),
}

/// One state transition: the next state, and `None` as action to run again in it.
type Step = (TlsState, Option<TlsAction>);

/// The TLS layer of one splice: its state and what it learnt on the way.
pub struct TlsFlow {
    state: TlsState,
    /// What the flow learnt: SNI, server-leg version and suite, alert received.
    pub info: TlsInfo,
}

/// What a TLS flow learnt, for its event.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The client's SNI.
    pub sni: Option<String>,
    /// The policy rule that decided after the ClientHello (name).
    pub rule: Option<String>,
    /// TLS version of the server leg (wire value), once negotiated.
    pub version: u16,
    /// Cipher suite of the server leg (wire value), once negotiated.
    pub suite: u16,
    /// Both TLS sessions came up: the flow was decrypted.
    pub decrypted: bool,
    /// With certificate validation off: what the verifier would have refused.
    pub unverified: Option<Box<VerifyFailure>>,
    /// The server's certificate failed a check whose action is `untrust`: the
    /// client got a certificate from the untrust CA (`None` on a resumed session
    /// with such a server: `untrusted_resumed`).
    pub untrusted: Option<Box<VerifyFailure>>,
    /// A session resumed with a server whose chain failed under `untrust` before.
    pub untrusted_resumed: bool,
    /// The server asked for a client certificate (none was sent).
    pub cert_requested: bool,
    /// The server leg resumed a session (no certificate was sent or verified).
    pub server_resumed: bool,
    /// The server's chain was accepted from the verifier's cache.
    pub chain_cached: bool,
    /// The client resumed a session with the appliance.
    pub client_resumed: bool,
    /// The forged certificate came from the worker's cache.
    pub forge_cached: bool,
    /// A probe the intercept path is asked to run: the server, and what for.
    pub probe_request: Option<(ServerKey, crate::intercept::probe::Purpose)>,
    /// The probe this flow waited for concluded, or could not run (limits): it
    /// decides with the proofs known (none: unproved).
    pub probe_over: bool,
    /// The SNI of a do-not-decrypt rule was not proved: decided without it.
    pub sni_unproved: bool,
    /// A leaf asked of the signer: the intercept path wakes the flow when its
    /// answer comes.
    pub sign_ticket: Option<u64>,
    /// The client's JA4 fingerprint, once its ClientHello was read.
    pub ja4: Option<String>,
    /// The ClientHello offered `encrypted_client_hello` (real or GREASE).
    pub ech_offered: bool,
    /// ALPN agreed on each leg.
    pub alpn_client: Option<Vec<u8>>,
    /// ALPN agreed with the server.
    pub alpn_server: Option<Vec<u8>>,
    /// Key-exchange group of each leg (IANA named group; 0 none).
    pub group_client: u16,
    /// Key-exchange group with the server.
    pub group_server: u16,
}

/// What a step works with besides its state.
struct Ctx<'a, 'b, 'c> {
    client: &'a mut tcp::Socket<'b>,
    server: &'a mut tcp::Socket<'b>,
    addrs: FlowAddrs,
    w: &'a mut TlsWorker,
    policy: Option<&'c CompiledPolicy>,
    info: &'a mut TlsInfo,
    /// The worker clock (ms since the dataplane's epoch).
    now_ms: u64,
    /// For the wall time of forged certificates.
    clock: &'c dyn Clock,
}

impl TlsFlow {
    /// A flow starts by reading the ClientHello.
    pub fn new() -> Self {
        TlsFlow {
            state: TlsState::Hello { acceptor: Box::default(), raw: Vec::new() },
            info: TlsInfo::default(),
        }
    }

    /// The outcome of a flow that is relayed raw (not decrypted), if it is.
    pub fn passed(&self) -> Option<&Ended> {
        match &self.state {
            TlsState::Passed(end) => Some(end),
            _ => None,
        }
    }

    /// Advances the TLS layer with the two legs' sockets. `policy` is the one the
    /// flow was decided under at SYN (consulted again with the SNI).
    #[allow(clippy::too_many_arguments)]
    pub fn pump<'s>(
        &mut self,
        client: &mut tcp::Socket<'s>,
        server: &mut tcp::Socket<'s>,
        addrs: FlowAddrs,
        w: &mut TlsWorker,
        policy: Option<&CompiledPolicy>,
        now_ms: u64,
        clock: &dyn Clock,
    ) -> TlsAction {
        let mut cx = Ctx { client, server, addrs, w, policy, info: &mut self.info, now_ms, clock };
        loop {
            let state = std::mem::replace(&mut self.state, TlsState::Failed);
            let (next, action) = match state {
                TlsState::Hello { acceptor, raw } => hello::step(acceptor, raw, &mut cx),
                TlsState::AwaitingProbe { accepted, raw } => hello::await_probe(accepted, raw, &mut cx),
                TlsState::Server { accepted, conn, requested, shared } => {
                    server::step(accepted, conn, requested, shared, &mut cx)
                }
                TlsState::AwaitingLeaf { accepted, conn, requested, ticket } => {
                    server::await_leaf(accepted, conn, requested, ticket, &mut cx)
                }
                TlsState::Both { to_client, to_server, closed, moved } => {
                    relay::step(to_client, to_server, closed, moved, &mut cx)
                }
                other => (other, Some(TlsAction::Continue)),
            };
            self.state = next;
            if let TlsState::Both { to_client, .. } = &self.state {
                if !to_client.is_handshaking() && !cx.info.decrypted {
                    cx.info.decrypted = true;
                    cx.info.alpn_client = to_client.alpn_protocol().map(<[u8]>::to_vec);
                    cx.info.group_client =
                        to_client.negotiated_key_exchange_group().map_or(0, |g| u16::from(g.name()));
                }
            }
            if let Some(a) = action {
                return a;
            }
        }
    }

    /// The handshake still under way, if any: reading the ClientHello, the
    /// server's handshake, or the client's (with the forged certificate).
    pub fn handshaking(&self) -> Option<Phase> {
        match &self.state {
            TlsState::Hello { .. } | TlsState::AwaitingProbe { .. } => Some(Phase::ClientHello),
            TlsState::Server { .. } => Some(Phase::ServerHandshake),
            TlsState::AwaitingLeaf { .. } => Some(Phase::ClientHandshake),
            TlsState::Both { to_client, .. } if to_client.is_handshaking() => Some(Phase::ClientHandshake),
            _ => None,
        }
    }

    /// Gives up a handshake that did not finish within `timeout_s`: the client is
    /// reset (no ClientHello), the server leg fails as any server-leg failure does
    /// (fatal alert to the client, remembered), or the client leg fails.
    pub fn give_up(
        &mut self,
        addrs: FlowAddrs,
        policy: Option<&CompiledPolicy>,
        timeout_s: u64,
        now_ms: u64,
    ) -> TlsAction {
        let state = std::mem::replace(&mut self.state, TlsState::Failed);
        let detail = format!("timeout {timeout_s} s");
        match state {
            TlsState::Hello { .. } | TlsState::AwaitingProbe { .. } => TlsAction::Reset(
                Ended::new(EventKind::Timeout, Leg::Client, Phase::ClientHello, Cause::ClientTimeout)
                    .detail(detail),
            ),
            TlsState::Server { shared, .. } => server::failed(
                &shared,
                policy,
                addrs,
                &mut self.info,
                server::abort(Phase::ServerHandshake, Cause::ServerTimeout).detail(detail),
                now_ms,
            ),
            TlsState::AwaitingLeaf { .. } => TlsAction::Abort {
                to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                end: Ended::new(
                    EventKind::Abort,
                    Leg::None,
                    Phase::ClientHandshake,
                    Cause::SignerUnavailable,
                )
                .detail(format!("no certificate from the signer within {timeout_s} s")),
            },
            TlsState::Both { .. } => TlsAction::Abort {
                to_client: Vec::new(),
                end: Ended::new(EventKind::Abort, Leg::Client, Phase::ClientHandshake, Cause::ClientTimeout)
                    .detail(detail),
            },
            other => {
                self.state = other;
                TlsAction::Continue
            }
        }
    }

    /// Plaintext bytes relayed so far (client → server, server → client), while
    /// both sessions are up.
    pub fn plaintext_moved(&self) -> Option<[u64; 2]> {
        match &self.state {
            TlsState::Both { moved, .. } => Some(*moved),
            _ => None,
        }
    }
}

impl Default for TlsFlow {
    fn default() -> Self {
        Self::new()
    }
}

/// The name the client asked for: its SNI, or the server's address without one.
pub(crate) fn requested_name(sni: Option<&str>, ip: std::net::IpAddr) -> ServerName<'static> {
    sni.and_then(|s| ServerName::try_from(s.to_string()).ok())
        .unwrap_or(ServerName::IpAddress(PkiIp::from(ip)))
}
