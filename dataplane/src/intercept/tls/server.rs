//! The Server state: the appliance's own handshake with the server (the client's
//! SNI and ALPN, the profile's suites, the verifier over the trust store), and
//! what a server-leg failure means.

use std::sync::Arc;

use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::pki_types::ServerName;
use tlsgate_certstore::rustls::server::Accepted;
use tlsgate_certstore::rustls::{self, ClientConnection};
use tlsgate_certstore::VerifyFailure;
use tlsgate_policy::{CertAction, CompiledPolicy, UndecryptableAction};

use super::relay::SockWriter;
use super::{
    fatal_alert, pump_conn, Ctx, FlowAddrs, Step, TlsAction, TlsInfo, TlsShared, TlsState,
    ALERT_HANDSHAKE_FAILURE,
};
use crate::intercept::outcome::Ended;

pub(super) fn step(
    accepted: Box<Accepted>,
    mut conn: Box<ClientConnection>,
    requested: ServerName<'static>,
    shared: Arc<TlsShared>,
    cx: &mut Ctx<'_, '_, '_>,
) -> Step {
    let pumped = pump_conn(cx.server, &mut *conn);
    // Per-thread notes of this pump's handshake messages (nothing else ran on this
    // thread in between).
    cx.info.cert_requested |= shared.requests.take();
    cx.info.chain_cached |= shared.verifier.take_cache_hit();
    if pumped.is_ok() {
        // A failure the verifier accepted: validation off, or a check whose action
        // is `untrust`.
        if let Some(f) = shared.verifier.take_failure() {
            if !shared.verifier.enforces() {
                cx.info.unverified = Some(f);
            } else {
                if let Ok(mut set) = shared.untrusted_chains.lock() {
                    if set.len() >= 65_536 {
                        set.clear();
                    }
                    set.insert(f.chain_sha256.0);
                }
                cx.info.untrusted = Some(f);
            }
        }
    }
    if let Err(e) = pumped {
        // Flush our alert to the server, then report.
        let _ = conn.write_tls(&mut SockWriter(cx.server));
        let end = error(&e, cx.info, shared.verifier.take_failure(), Phase::ServerHandshake);
        return (TlsState::Failed, Some(failed(&shared, cx.policy, cx.addrs, &requested, end, cx.now_ms)));
    }
    if !cx.server.may_recv() && conn.is_handshaking() {
        let end = abort(Phase::ServerHandshake, Cause::HandshakeClosed);
        return (
            TlsState::Failed,
            Some(TlsAction::Abort { to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE), end }),
        );
    }
    if conn.is_handshaking() {
        return (TlsState::Server { accepted, conn, requested, shared }, Some(TlsAction::Continue));
    }
    // Server verified (the verifier ran inside the handshake): forge and answer the
    // client with the server's ALPN.
    cx.info.server_resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    cx.info.version = conn.protocol_version().map_or(0, u16::from);
    cx.info.suite = conn.negotiated_cipher_suite().map_or(0, |s| u16::from(s.suite()));
    let chain: Vec<_> = conn.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
    if cx.info.server_resumed && cx.info.untrusted.is_none() {
        // No chain was verified this time: one accepted under `untrust` before
        // stays untrusted.
        let sha = tlsgate_certstore::chain_sha256(&chain).0;
        if shared.untrusted_chains.lock().is_ok_and(|set| set.contains(&sha)) {
            cx.info.untrusted_resumed = true;
        }
    }
    match cx.w.answer(accepted, &requested, &chain, conn.alpn_protocol(), cx.info, cx.clock.unix_time()) {
        Ok(to_client) => (
            TlsState::Both {
                to_client: Box::new(to_client),
                to_server: conn,
                closed: [false; 2],
                moved: [0; 2],
            },
            None,
        ),
        Err((to_client, end)) => (TlsState::Failed, Some(TlsAction::Abort { to_client, end })),
    }
}

/// An abort of the server leg in `phase` for `cause`.
pub(super) fn abort(phase: Phase, cause: Cause) -> Ended {
    Ended::new(EventKind::Abort, Leg::Server, phase, cause)
}

/// The end of a server leg that failed with rustls' error `e`: its certificate
/// (`verify`: the verifier's record), a client certificate it asked for, its
/// alert, parameters in common, or its protocol; rustls' message as the detail.
pub(super) fn error(
    e: &rustls::Error,
    info: &TlsInfo,
    verify: Option<Box<VerifyFailure>>,
    phase: Phase,
) -> Ended {
    use rustls::Error as E;
    let cause = match (e, &verify) {
        (_, Some(v)) => Cause::Certificate { reason: v.reason, depth: v.depth.min(255) as u8 },
        _ if info.cert_requested => Cause::ClientCertRequired,
        (E::AlertReceived(a), _) => Cause::AlertReceived(u8::from(*a)),
        (E::PeerIncompatible(_), _) => Cause::NoSharedVersionOrSuite,
        (E::InvalidCertificate(_), _) => {
            Cause::Certificate { reason: tlsgate_certstore::VerifyReason::Unspecified, depth: 0 }
        }
        (E::PeerMisbehaved(_) | E::InvalidMessage(_) | E::InappropriateMessage { .. }, _)
        | (E::InappropriateHandshakeMessage { .. } | E::DecryptError | E::NoCertificatesPresented, _) => {
            Cause::PeerMisbehaved
        }
        _ => Cause::Internal,
    };
    let mut end = abort(phase, cause).detail(e.to_string());
    end.verify = verify;
    end
}

/// A server-leg failure: a fatal alert for the client. The server is remembered,
/// so that later connections to it are passed through undecrypted for a while,
/// only when that was chosen: for a certificate failure, its check's action
/// `pass`; for any other failure, the undecryptable action `pass`.
pub(super) fn failed(
    shared: &TlsShared,
    policy: Option<&CompiledPolicy>,
    addrs: FlowAddrs,
    requested: &ServerName<'static>,
    end: Ended,
    now_ms: u64,
) -> TlsAction {
    let (pass, ttl) = match (policy, end.outcome.cause) {
        (None, _) => (false, std::time::Duration::ZERO),
        (Some(p), Cause::Certificate { reason, .. }) => {
            (shared.verification.action(reason) == CertAction::Pass, p.undecryptable_memory())
        }
        (Some(p), _) => (p.undecryptable() == UndecryptableAction::Pass, p.undecryptable_memory()),
    };
    if pass {
        let name = match requested {
            ServerName::DnsName(d) => Some(d.as_ref().to_string()),
            _ => None,
        };
        shared.remembered.insert((addrs.server, addrs.port, name), now_ms, ttl, end.outcome);
    }
    TlsAction::Abort { to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE), end }
}
