//! The Server state: the appliance's own handshake with the server (the client's
//! SNI and ALPN, the profile's suites, the verifier over the trust store), and
//! what a server-leg failure means.

use std::sync::Arc;

use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::pki_types::ServerName;
use tlsgate_certstore::rustls::server::Accepted;
use tlsgate_certstore::rustls::{self, ClientConnection};
use tlsgate_certstore::{VerifyFailure, VerifyReason};
use tlsgate_policy::{CertAction, CompiledPolicy, UndecryptableAction};

use super::client::Leaf;
use super::relay::SockWriter;
use super::{
    fatal_alert, pump_conn, Ctx, FlowAddrs, ServerKey, Step, TlsAction, TlsInfo, TlsShared, TlsState,
    ALERT_HANDSHAKE_FAILURE,
};
use crate::intercept::outcome::Ended;
use crate::intercept::probe::Purpose;

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
        let failure = shared.verifier.take_failure();
        if let Some(f) = &failure {
            note_status_unknown(&shared, f);
        }
        let end = error(&e, cx.info, failure, Phase::ServerHandshake);
        return (TlsState::Failed, Some(failed(&shared, cx.policy, cx.addrs, cx.info, end, cx.now_ms)));
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
    cx.info.alpn_server = conn.alpn_protocol().map(<[u8]>::to_vec);
    cx.info.group_server = conn.negotiated_key_exchange_group().map_or(0, |g| u16::from(g.name()));
    let chain: Vec<_> = conn.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
    if cx.info.server_resumed && cx.info.untrusted.is_none() {
        // No chain was verified this time: one accepted under `untrust` before
        // stays untrusted.
        let sha = tlsgate_certstore::chain_sha256(&chain).0;
        if shared.untrusted_chains.lock().is_ok_and(|set| set.contains(&sha)) {
            cx.info.untrusted_resumed = true;
        }
    }
    // A chain that verified (or, under `unknown_status = untrust`, lacks only a
    // proved status), from a server that proved it holds the key: its CRL
    // points go to the control plane.
    let status_only = cx.info.untrusted.as_ref().is_some_and(|f| f.reason == VerifyReason::UnableToGetCrl);
    if !cx.info.server_resumed && (cx.info.untrusted.is_none() || status_only) && cx.info.unverified.is_none()
    {
        if let super::Signing::Remote { link, .. } = &shared.signing {
            link.note_verified_chain(&tlsgate_certstore::server_name_text(&requested), &chain, true);
        }
    }
    match cx.w.leaf(&requested, &chain, cx.addrs.client, cx.info, cx.clock.unix_time(), cx.now_ms) {
        Leaf::Ready(forged) => answer(accepted, conn, forged, cx),
        Leaf::Pending(ticket) => {
            cx.info.sign_ticket = Some(ticket);
            (TlsState::AwaitingLeaf { accepted, conn, requested, ticket }, Some(TlsAction::Continue))
        }
        Leaf::Failed(end) => (
            TlsState::Failed,
            Some(TlsAction::Abort { to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE), end }),
        ),
    }
}

/// A chain refused only because its revocation status is unknown verified
/// otherwise: its distribution points go to the control plane all the same, or
/// the list that would prove the status never comes — unproven (refused before
/// the server showed it holds the key: anyone can replay a chain).
fn note_status_unknown(shared: &TlsShared, f: &VerifyFailure) {
    if f.reason == VerifyReason::UnableToGetCrl {
        if let super::Signing::Remote { link, .. } = &shared.signing {
            link.note_verified_chain(&f.server_name, &f.chain, false);
        }
    }
}

/// Waiting for the signer: its answer, once it came, answers the client (or ends
/// the flow); until then nothing moves (the phase's deadline still runs).
pub(super) fn await_leaf(
    accepted: Box<Accepted>,
    conn: Box<ClientConnection>,
    requested: ServerName<'static>,
    ticket: u64,
    cx: &mut Ctx<'_, '_, '_>,
) -> Step {
    let chain: Vec<_> = conn.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
    match cx.w.signed(ticket, &requested, &chain, cx.clock.unix_time()) {
        None => (TlsState::AwaitingLeaf { accepted, conn, requested, ticket }, Some(TlsAction::Continue)),
        Some(Ok(forged)) => answer(accepted, conn, forged, cx),
        Some(Err(end)) => (
            TlsState::Failed,
            Some(TlsAction::Abort { to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE), end }),
        ),
    }
}

/// Answers the client with `forged` and the server's ALPN: both sessions up.
fn answer(
    accepted: Box<Accepted>,
    conn: Box<ClientConnection>,
    forged: Arc<tlsgate_certstore::CertifiedKey>,
    cx: &mut Ctx<'_, '_, '_>,
) -> Step {
    match cx.w.answer(accepted, forged, conn.alpn_protocol()) {
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
    let cause = server_cause(e, info.cert_requested, verify.as_deref());
    let mut end = abort(phase, cause).detail(e.to_string());
    end.verify = verify;
    end
}

/// The cause of a server handshake's failure with rustls' error `e`: its
/// certificate (`verify`: the verifier's record), a client certificate it asked for
/// (`cert_requested`), its alert, parameters in common, or its protocol.
pub(crate) fn server_cause(e: &rustls::Error, cert_requested: bool, verify: Option<&VerifyFailure>) -> Cause {
    use rustls::Error as E;
    match (e, verify) {
        (_, Some(v)) => Cause::Certificate { reason: v.reason, depth: v.depth.min(255) as u8 },
        _ if cert_requested => Cause::ClientCertRequired,
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
    }
}

/// A server-leg failure: a fatal alert for the client (the flow is never replayed).
/// What later flows to that server (address, port, SNI) get is chosen, never
/// provoked:
/// * a certificate failure whose check's action is `pass`: they are relayed raw
///   for `undecryptable_memory_s` (remembered);
/// * any other failure but a timeout, with `undecryptable: pass`: the appliance's
///   own handshake (a probe, its own ClientHello) confirms it first; only an
///   unsupported mode it meets itself makes a learned exclusion
///   ([`crate::intercept::probe`]). A server confirmed (or not) lately is not
///   probed again;
/// * otherwise nothing: they are intercepted again.
pub(super) fn failed(
    shared: &TlsShared,
    policy: Option<&CompiledPolicy>,
    addrs: FlowAddrs,
    info: &mut TlsInfo,
    end: Ended,
    now_ms: u64,
) -> TlsAction {
    learn(shared, policy, addrs, info, &end, now_ms);
    TlsAction::Abort { to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE), end }
}

/// What a server-leg failure `end` means for later flows to that server (see
/// [`failed`]).
pub(super) fn learn(
    shared: &TlsShared,
    policy: Option<&CompiledPolicy>,
    addrs: FlowAddrs,
    info: &mut TlsInfo,
    end: &Ended,
    now_ms: u64,
) {
    let key: ServerKey = (addrs.server, addrs.port, info.sni.clone());
    match (policy, end.outcome.cause) {
        (None, _) | (_, Cause::ServerTimeout | Cause::ClientTimeout | Cause::Internal) => {}
        (Some(p), Cause::Certificate { reason, .. }) => {
            if shared.verification.action(reason) == CertAction::Pass {
                shared.remembered.insert(key, now_ms, p.undecryptable_memory(), end.outcome);
            }
        }
        (Some(p), _) => {
            if p.undecryptable() == UndecryptableAction::Pass
                && shared.confirmations.get(&key, now_ms).is_none()
            {
                info.probe_request = Some((key, Purpose::Confirm));
            }
        }
    }
}
