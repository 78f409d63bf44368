//! The Hello state: read the client's ClientHello without answering it, then
//! decide with its SNI: pass (undecryptable, remembered, do-not-decrypt), block,
//! or start the server leg.

use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::rustls::server::{Accepted, Acceptor};
use tlsgate_certstore::rustls::ClientConnection;
use tlsgate_policy::{Action, UndecryptableAction, UnprovedSniAction};

use super::config::SignerUnavailable;
use super::ServerKey;
use super::{fatal_alert, requested_name, server, Ctx, Step, TlsAction, TlsState, ALERT_HANDSHAKE_FAILURE};
use crate::intercept::outcome::Ended;
use crate::intercept::probe::Purpose;

/// Most bytes read while waiting for a complete ClientHello.
const MAX_HELLO: usize = 64 * 1024;

/// Passes the flow raw with `end` as its outcome; `raw` goes to the server first.
fn pass(raw: Vec<u8>, end: Ended) -> Step {
    (TlsState::Passed(end), Some(TlsAction::PassRaw(raw)))
}

/// Bytes that are not a complete ClientHello the appliance can read, for `cause`:
/// the policy's undecryptable action (`block` by default, and without a policy):
/// reset, or passed raw when `pass` was chosen.
fn undecryptable(raw: Vec<u8>, cause: Cause, detail: String, cx: &Ctx<'_, '_, '_>) -> Step {
    let pass_chosen = cx.policy.is_some_and(|p| p.undecryptable() == UndecryptableAction::Pass);
    let kind = if pass_chosen { EventKind::Passed } else { EventKind::Blocked };
    let end = Ended::new(kind, Leg::Client, Phase::ClientHello, cause).detail(detail);
    if pass_chosen {
        pass(raw, end)
    } else {
        (TlsState::Failed, Some(TlsAction::Reset(end)))
    }
}

pub(super) fn step(mut acceptor: Box<Acceptor>, mut raw: Vec<u8>, cx: &mut Ctx<'_, '_, '_>) -> Step {
    // rustls takes what its buffer holds; the rest stays in the socket until the
    // records read so far are processed (every byte rustls reads is also kept, to
    // replay if the flow is passed).
    let accepted = loop {
        let taken = cx
            .client
            .recv(|buf| {
                let n = acceptor.read_tls(&mut &buf[..]).unwrap_or(0);
                raw.extend_from_slice(&buf[..n]);
                (n, n)
            })
            .unwrap_or(0);
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            // Not a ClientHello we can read (not TLS, SSLv2, garbage).
            Err((e, _alert)) => return undecryptable(raw, Cause::NotTls, e.to_string(), cx),
            // More than the appliance reads, or more than rustls buffers for one
            // incomplete message (it takes nothing more while bytes wait).
            Ok(None) if raw.len() > MAX_HELLO || taken == 0 && cx.client.recv_queue() > 0 => {
                let detail = format!("{} bytes read, {} more waiting", raw.len(), cx.client.recv_queue());
                return undecryptable(raw, Cause::HelloTooLarge, detail, cx);
            }
            Ok(None) if taken > 0 => continue,
            Ok(None) => {
                if !cx.client.may_recv() && !raw.is_empty() {
                    let detail = format!("{} bytes, then FIN", raw.len());
                    return undecryptable(raw, Cause::HelloIncomplete, detail, cx);
                }
                return (TlsState::Hello { acceptor, raw }, Some(TlsAction::Continue));
            }
        }
    };
    decide(Box::new(accepted), raw, cx)
}

/// The decision with the ClientHello read (again when a probe it waited for has
/// concluded): the policy first (a block rule always wins); a do-not-decrypt rule
/// matched by SNI only once the server has proved the name (else a probe, and the
/// hello is held); then learned exclusions and servers passed after a certificate
/// failure; else the server leg starts.
pub(super) fn decide(accepted: Box<Accepted>, raw: Vec<u8>, cx: &mut Ctx<'_, '_, '_>) -> Step {
    let ch = accepted.client_hello();
    let sni = ch.server_name().map(str::to_string);
    cx.info.sni = sni.clone();
    if cx.info.ja4.is_none() {
        if let Some(j) = tlsgate_certstore::Ja4::from_records(&raw) {
            cx.info.ja4 = Some(j.to_string());
            cx.info.ech_offered = j.offers_ech();
        }
    }
    let a = cx.addrs;
    let key: ServerKey = (a.server, a.port, sni.clone());
    if let Some(policy) = cx.policy {
        if cx.info.ech_offered && policy.ech() == tlsgate_policy::EchAction::Block {
            let end = Ended::new(EventKind::Blocked, Leg::None, Phase::ClientHello, Cause::EchBlocked);
            return (TlsState::Failed, Some(TlsAction::Reset(end)));
        }
        let ja4 = cx.info.ja4.clone();
        let mut v = policy.decide_with_hello(a.client, a.server, a.port, sni.as_deref(), ja4.as_deref());
        if policy.needs_proof(&v) {
            match cx.w.shared.proofs.get(&key, cx.now_ms) {
                Some(true) => {}
                None if !cx.info.probe_over => {
                    // Hold the ClientHello until the appliance's own handshake says
                    // whether the server owns the name.
                    cx.info.probe_request = Some((key, Purpose::Proof));
                    return (TlsState::AwaitingProbe { accepted, raw }, Some(TlsAction::Continue));
                }
                _ => {
                    cx.info.sni_unproved = true;
                    if policy.unproved_sni() == UnprovedSniAction::Block {
                        let end =
                            Ended::new(EventKind::Blocked, Leg::None, Phase::ClientHello, Cause::SniUnproved);
                        return (TlsState::Failed, Some(TlsAction::Reset(end)));
                    }
                    v = policy.decide_unproved(a.client, a.server, a.port, ja4.as_deref());
                }
            }
        }
        cx.info.rule = v.rule.and_then(|r| policy.rule_name(r)).map(str::to_string);
        let cause = Cause::Policy { rule: v.rule.map(|r| r.index() as u32) };
        match v.action {
            Action::DoNotDecrypt => {
                return pass(raw, Ended::new(EventKind::NotDecrypted, Leg::None, Phase::ClientHello, cause));
            }
            Action::Block => {
                let end = Ended::new(EventKind::Blocked, Leg::None, Phase::ClientHello, cause);
                return (TlsState::Failed, Some(TlsAction::Reset(end)));
            }
            _ => {}
        }
    }
    // Learned exclusions pass only while the policy still says `undecryptable:
    // pass` (they were made under it); a trust or profile change clears them.
    let exclusions_apply = cx.policy.is_some_and(|p| p.undecryptable() == UndecryptableAction::Pass);
    if let Some(learned) = cx.w.shared.exclusions.get(&key, cx.now_ms).filter(|_| exclusions_apply) {
        let end = Ended::new(EventKind::Passed, Leg::Server, Phase::ClientHello, Cause::Excluded)
            .detail(learned.text());
        return pass(raw, end);
    }
    if let Some(before) = cx.w.shared.remembered.get(&key, cx.now_ms) {
        let end = Ended::new(EventKind::Passed, Leg::Server, Phase::ClientHello, Cause::Remembered)
            .detail(before.text());
        return pass(raw, end);
    }
    let alpn: Vec<Vec<u8>> = ch.alpn().map(|it| it.map(<[u8]>::to_vec).collect()).unwrap_or_default();
    let requested = requested_name(sni.as_deref(), a.server);
    if let Some(why) = cx.w.signer_unavailable(&requested) {
        // Known before the server leg starts: `tls.signer_unavailable` decides.
        return match cx.w.shared.signer_unavailable {
            SignerUnavailable::Pass => pass(
                raw,
                Ended::new(EventKind::Passed, Leg::None, Phase::ClientHello, Cause::SignerUnavailable)
                    .detail(why),
            ),
            SignerUnavailable::Block => {
                let end =
                    Ended::new(EventKind::Blocked, Leg::None, Phase::ClientHello, Cause::SignerUnavailable)
                        .detail(why);
                (TlsState::Failed, Some(TlsAction::Reset(end)))
            }
        };
    }
    match ClientConnection::new_with_alpn(cx.w.shared.client.clone(), requested.clone(), alpn) {
        Ok(conn) => (
            TlsState::Server { shared: cx.w.shared.clone(), accepted, conn: Box::new(conn), requested },
            None,
        ),
        Err(e) => (
            TlsState::Failed,
            Some(TlsAction::Abort {
                to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                end: server::abort(Phase::ServerHandshake, Cause::Internal).detail(e.to_string()),
            }),
        ),
    }
}

/// A held ClientHello: decided again once its probe concluded (or could not run).
pub(super) fn await_probe(accepted: Box<Accepted>, raw: Vec<u8>, cx: &mut Ctx<'_, '_, '_>) -> Step {
    let a = cx.addrs;
    let key: ServerKey = (a.server, a.port, cx.info.sni.clone());
    if cx.info.probe_over || cx.w.shared.proofs.get(&key, cx.now_ms).is_some() {
        return decide(accepted, raw, cx);
    }
    (TlsState::AwaitingProbe { accepted, raw }, Some(TlsAction::Continue))
}
