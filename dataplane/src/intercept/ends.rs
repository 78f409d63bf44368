//! How intercepted flows end: a finished splice is freed, its end counted and
//! its event written; and what a splice's stack emitted goes on the wire.

use tlsgate_api::{Cause, Leg};
use tlsgate_drivers::{Frame, Queues};

use super::stack::EmitBuf;
use super::tcp::{self, Buffers};
use super::{Costs, Intercept, InterceptConfig, Occupant};
use crate::counters::idx;
use crate::flow::{FlowTable, SpliceId};
use crate::io::Io;

impl Intercept {
    /// Frees a finished splice (its flow stays as a tombstone), counts its end and
    /// writes its event.
    pub(super) fn reap<Q: Queues>(
        &mut self,
        io: &mut Io<Q>,
        flows: &mut FlowTable,
        id: SpliceId,
        now_ms: u64,
    ) {
        let Some(Occupant::Splice(s)) = self.slots.take(id) else { return };
        if let Some(source) = s.quota_slot {
            self.admission.release_slot(source);
        }
        self.admission.release_memory(s.charged_full);
        self.admission.release_bulk(s.charged_bulk);
        if s.buffers() == Buffers::Small && s.ended().is_some_and(|e| e.outcome.cause == Cause::ClientTimeout)
        {
            io.c[idx::FIRST_BYTE_TIMEOUT] += 1;
        }
        flows.splice_ended(&s.key, s.hash, now_ms);
        io.c[idx::INTERCEPT_BYTES_UP] += s.relayed[0];
        io.c[idx::INTERCEPT_BYTES_DOWN] += s.relayed[1];
        if let Some(i) = s.ended().and_then(|e| end_counter(e.outcome)) {
            io.c[i] += 1;
        }
        if let Some(o) = s.ended().map(|e| e.outcome) {
            use tlsgate_api::EventKind as K;
            match (o.kind, o.cause) {
                (K::Abort, Cause::Certificate { .. }) => io.c[idx::TLS_ABORTED_CERTIFICATE] += 1,
                (K::Abort, _) if s.tls_info().decrypted => io.c[idx::TLS_ABORTED_AFTER_DECRYPT] += 1,
                (K::Passed, Cause::SignerUnavailable) => io.c[idx::TLS_PASSED_SIGNER] += 1,
                _ => {}
            }
        }
        match s.ended().map(|e| e.outcome.cause) {
            Some(Cause::NotTls) => io.c[idx::UNDECRYPTABLE_NOT_TLS] += 1,
            Some(Cause::HelloTooLarge) => io.c[idx::UNDECRYPTABLE_TOO_LARGE] += 1,
            Some(Cause::HelloIncomplete) => io.c[idx::UNDECRYPTABLE_INCOMPLETE] += 1,
            _ => {}
        }
        let info = s.tls_info();
        if let (Some(name), Some(_)) = (&info.rule, &s.policy) {
            // The SNI decision of an intercepted flow.
            io.rules.count_name(name);
        }
        if info.sni_unproved {
            io.c[idx::SNI_UNPROVED] += 1;
        }
        if info.untrusted.is_some() || info.untrusted_resumed {
            io.c[idx::TLS_UNTRUSTED] += 1;
        }
        if info.decrypted {
            io.c[idx::TLS_DECRYPTED] += 1;
            for (yes, counter) in [
                (info.unverified.is_some(), idx::TLS_UNVERIFIED),
                (info.server_resumed, idx::TLS_SERVER_RESUMED),
                (info.client_resumed, idx::TLS_CLIENT_RESUMED),
                (info.chain_cached, idx::TLS_CHAIN_CACHED),
            ] {
                io.c[counter] += u64::from(yes);
            }
        }
        if let Some(ev) = self.events.as_mut() {
            ev.flow_ended(&s);
        }
    }
}

/// Puts what a stack emitted on the wire, with each side's L2 header: towards the
/// client out of the inside port, towards the server out of the outside port.
pub(super) fn send_emitted<Q: Queues>(io: &mut Io<Q>, l2_client: &[u8], l2_server: &[u8], emit: &EmitBuf) {
    for e in &emit.packets {
        let (l2, port) = match e.leg {
            Leg::Client => (l2_client, tlsgate_drivers::INSIDE),
            _ => (l2_server, tlsgate_drivers::OUTSIDE),
        };
        let Some(mut f) = io.alloc(l2.len() + e.len) else { continue };
        let d = f.data_mut();
        d[..l2.len()].copy_from_slice(l2);
        d[l2.len()..].copy_from_slice(&emit.bytes[e.start..e.start + e.len]);
        io.capture(f.data(), port, true);
        io.send(port, f);
    }
}

/// What a splice is charged against the memory budget: its buffers, and an
/// allowance for its stack (the interface, two sockets: ~3 KiB) and, once used,
/// its TLS sessions (two rustls connections with their buffers).
pub(super) fn costs(cfg: &InterceptConfig) -> Costs {
    const STACK: u64 = 4 << 10;
    const TLS: u64 = 48 << 10;
    Costs {
        half_open: tcp::SMALL_BUFFERS as u64 + STACK,
        full: 4 * (cfg.buffer_kib as u64) * 1024 + STACK + TLS,
    }
}

/// The counter of an intercepted flow's end.
pub(super) fn end_counter(o: tlsgate_api::Outcome) -> Option<usize> {
    use tlsgate_api::{Cause, EventKind};
    Some(match (o.kind, o.cause) {
        (EventKind::Abort, _) => idx::TLS_ABORTED,
        (EventKind::Passed, Cause::Remembered) => idx::TLS_PASSED_REMEMBERED,
        (EventKind::Passed, Cause::Excluded) => idx::TLS_PASSED_EXCLUDED,
        (EventKind::Passed, _) => idx::TLS_PASSED,
        (EventKind::NotDecrypted, _) => idx::TLS_NOT_DECRYPTED,
        (EventKind::Blocked, _) => idx::TLS_BLOCKED,
        (_, Cause::Closed) => idx::INTERCEPT_CLOSED,
        (_, Cause::ServerRefused) => idx::INTERCEPT_REFUSED,
        (_, Cause::Reset) => idx::INTERCEPT_RESET,
        (EventKind::Timeout, _) => idx::INTERCEPT_TIMEOUT,
        _ => return None,
    })
}
