//! The Hello state: read the client's ClientHello without answering it, then
//! decide with its SNI: pass (undecryptable, remembered, do-not-decrypt), block,
//! or start the server leg.

use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::rustls::server::Acceptor;
use tlsgate_certstore::rustls::ClientConnection;
use tlsgate_policy::{Action, UndecryptableAction};

use super::{fatal_alert, requested_name, server, Ctx, Step, TlsAction, TlsState, ALERT_HANDSHAKE_FAILURE};
use crate::intercept::outcome::Ended;

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
    let ch = accepted.client_hello();
    let sni = ch.server_name().map(str::to_string);
    cx.info.sni = sni.clone();
    let a = cx.addrs;
    if let Some(before) = cx.w.shared.remembered.get(&(a.server, a.port, sni.clone()), cx.now_ms) {
        let end = Ended::new(EventKind::Passed, Leg::Server, Phase::ClientHello, Cause::Remembered)
            .detail(before.text());
        return pass(raw, end);
    }
    if let Some(policy) = cx.policy {
        let v = policy.decide_with_sni(a.client, a.server, a.port, sni.as_deref());
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
    let alpn: Vec<Vec<u8>> = ch.alpn().map(|it| it.map(<[u8]>::to_vec).collect()).unwrap_or_default();
    let requested = requested_name(sni.as_deref(), a.server);
    match ClientConnection::new_with_alpn(cx.w.shared.client.clone(), requested.clone(), alpn) {
        Ok(conn) => (
            TlsState::Server {
                shared: cx.w.shared.clone(),
                accepted: Box::new(accepted),
                conn: Box::new(conn),
                requested,
            },
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
