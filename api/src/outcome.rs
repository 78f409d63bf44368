//! How a flow ended: one typed [`Outcome`], set once by the dataplane when the
//! flow's fate is decided, carried in the event record, and the only source of
//! every text derived from it: the event's `cause` and `error_detail`, the
//! `tls_proxy.log` lines ([`crate::log`]) and the Prometheus `reason` label
//! ([`Cause::reason`]).
//!
//! ```text
//!   dataplane: Outcome { kind, leg, phase, cause } ──EventRecord::set_outcome──► record
//!   control:   record ──EventRecord::outcome──► Outcome ──► label / reason / text
//! ```
//!
//! [`Cause`] is split by who caused what, as rustls splits its errors: the TCP
//! legs, the ClientHello, the policy, the server's TLS (no common parameters, an
//! alert, its certificate, a client certificate it wants), timeouts per leg. The
//! leg ([`Leg`]) says which side a cause belongs to where it could be either
//! (a reset, an alert, a peer closing mid-handshake).
//!
//! On the wire a cause is one byte (`EventRecord::cause`) plus the record fields
//! it names: an alert in `alert_received`, a certificate failure as its
//! OpenSSL-style code and depth in `verify_code` / `verify_depth`, a policy rule
//! in `rule_index`.

use std::borrow::Cow;

use crate::event::{alert_name, EventKind, Leg, Phase};
use crate::verify::VerifyReason;

/// Why a flow ended, or why it was not decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// Both legs closed normally (FIN or close_notify).
    Closed,
    /// No data either way for the idle timeout: both legs reset.
    IdleTimeout,
    /// The peer on the outcome's leg reset its connection.
    Reset,
    /// The server refused the TCP connection: the client was reset.
    ServerRefused,
    /// The server did not answer the TCP connection in time: the client was reset.
    ConnectTimeout,
    /// The client was too slow: no complete ClientHello, or its handshake with the
    /// appliance, within the handshake timeout (the phase says which).
    ClientTimeout,
    /// The server did not complete its TLS handshake within the handshake timeout.
    ServerTimeout,
    /// The client's bytes are not a ClientHello the appliance can read.
    NotTls,
    /// The client sent more than the appliance reads (64 KiB) without completing
    /// its ClientHello.
    HelloTooLarge,
    /// The client closed its side before its ClientHello was complete.
    HelloIncomplete,
    /// A learned exclusion: the server supports no mode the appliance offers, as
    /// its own probe confirmed; passed undecrypted.
    Excluded,
    /// The SNI of a do-not-decrypt rule, not proved by the server (its
    /// certificate, on the appliance's own handshake, is not valid for the name).
    SniUnproved,
    /// The certificate signer (outside the packet path) did not issue the forged
    /// certificate: unreachable, overloaded, or it refused (the detail says).
    SignerUnavailable,
    /// The ClientHello offered Encrypted ClientHello and the policy says `ech:
    /// block`.
    EchBlocked,
    /// A policy rule decided (block, or do-not-decrypt): the rule's index in the
    /// policy of the flow's configuration version, `None` for the default action.
    Policy {
        /// Index of the rule (its name is in the record's `rule` field).
        rule: Option<u32>,
    },
    /// The server's leg failed before: the flow was passed undecrypted.
    Remembered,
    /// The server and the appliance share no TLS version or cipher suite.
    NoSharedVersionOrSuite,
    /// The peer on the outcome's leg sent this fatal alert (RFC 8446 §6).
    AlertReceived(u8),
    /// The server's certificate chain failed verification: the reason as OpenSSL
    /// names it, at this depth of the chain.
    Certificate {
        /// OpenSSL-style verify code and text.
        reason: VerifyReason,
        /// Depth in the chain (0: the server's own certificate).
        depth: u8,
    },
    /// The server requires a client certificate, which the appliance cannot give.
    ClientCertRequired,
    /// The peer on the outcome's leg closed its connection during the handshake.
    HandshakeClosed,
    /// The peer on the outcome's leg broke the TLS protocol (a message it must not
    /// send, a record that does not decode or decrypt).
    PeerMisbehaved,
    /// The appliance failed on its own (forging a certificate, building a
    /// configuration).
    Internal,
    /// A limit of admission refused the SYN (and the configured action for it was
    /// taken: drop, reset or forward).
    Admission(AdmissionReason),
}

/// Which admission limit a SYN met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum AdmissionReason {
    /// The client address (an IPv6 /64) has its quota of half-open splices.
    SourceQuota = 1,
    /// The worker has its most splices (`intercept.max_per_worker`).
    WorkerFull = 2,
    /// The worker's memory budget for splices is spent.
    MemoryBudget = 3,
}

impl AdmissionReason {
    /// Every reason.
    pub const ALL: &'static [AdmissionReason] =
        &[AdmissionReason::SourceQuota, AdmissionReason::WorkerFull, AdmissionReason::MemoryBudget];

    /// Stable snake_case name.
    pub const fn label(self) -> &'static str {
        match self {
            AdmissionReason::SourceQuota => "source_quota",
            AdmissionReason::WorkerFull => "worker_full",
            AdmissionReason::MemoryBudget => "memory_budget",
        }
    }

    /// The reason of a wire byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| *r as u8 == v)
    }
}

impl Cause {
    /// One of each variant (with sample values), for tests that check every cause
    /// maps to its names and texts.
    pub const EXAMPLES: &'static [Cause] = &[
        Cause::Closed,
        Cause::IdleTimeout,
        Cause::Reset,
        Cause::ServerRefused,
        Cause::ConnectTimeout,
        Cause::ClientTimeout,
        Cause::ServerTimeout,
        Cause::NotTls,
        Cause::HelloTooLarge,
        Cause::HelloIncomplete,
        Cause::Excluded,
        Cause::SniUnproved,
        Cause::SignerUnavailable,
        Cause::EchBlocked,
        Cause::Policy { rule: Some(3) },
        Cause::Policy { rule: None },
        Cause::Remembered,
        Cause::NoSharedVersionOrSuite,
        Cause::AlertReceived(40),
        Cause::Certificate { reason: VerifyReason::DepthZeroSelfSignedCert, depth: 0 },
        Cause::ClientCertRequired,
        Cause::HandshakeClosed,
        Cause::PeerMisbehaved,
        Cause::Internal,
        Cause::Admission(AdmissionReason::SourceQuota),
        Cause::Admission(AdmissionReason::WorkerFull),
        Cause::Admission(AdmissionReason::MemoryBudget),
    ];

    /// The wire code (`EventRecord::cause`); 0 is "no cause recorded".
    pub const fn code(self) -> u8 {
        match self {
            Cause::Closed => 1,
            Cause::IdleTimeout => 2,
            Cause::Reset => 3,
            Cause::ServerRefused => 4,
            Cause::ConnectTimeout => 5,
            Cause::ClientTimeout => 6,
            Cause::ServerTimeout => 7,
            Cause::NotTls => 8,
            Cause::Policy { .. } => 9,
            Cause::Remembered => 10,
            Cause::NoSharedVersionOrSuite => 11,
            Cause::AlertReceived(_) => 12,
            Cause::Certificate { .. } => 13,
            Cause::ClientCertRequired => 14,
            Cause::HandshakeClosed => 15,
            Cause::PeerMisbehaved => 16,
            Cause::Internal => 17,
            Cause::Admission(_) => 18,
            Cause::HelloTooLarge => 19,
            Cause::HelloIncomplete => 20,
            Cause::Excluded => 21,
            Cause::SniUnproved => 22,
            Cause::SignerUnavailable => 23,
            Cause::EchBlocked => 24,
        }
    }

    /// The cause of wire `code` with the values of the fields it names: `alert`
    /// (`alert_received`), `verify` (`verify_code`, `verify_depth`),
    /// `rule_index` (0: the default action, `i + 1`: rule `i`) and `detail`
    /// (`cause_detail`: an admission reason). `None` for an unknown code, or a
    /// value its table does not have.
    pub fn from_wire(code: u8, alert: u8, verify: (u16, u8), rule_index: u32, detail: u8) -> Option<Cause> {
        Some(match code {
            1 => Cause::Closed,
            2 => Cause::IdleTimeout,
            3 => Cause::Reset,
            4 => Cause::ServerRefused,
            5 => Cause::ConnectTimeout,
            6 => Cause::ClientTimeout,
            7 => Cause::ServerTimeout,
            8 => Cause::NotTls,
            9 => Cause::Policy { rule: rule_index.checked_sub(1) },
            10 => Cause::Remembered,
            11 => Cause::NoSharedVersionOrSuite,
            12 => Cause::AlertReceived(alert),
            13 => {
                Cause::Certificate { reason: VerifyReason::from_code(u32::from(verify.0))?, depth: verify.1 }
            }
            14 => Cause::ClientCertRequired,
            15 => Cause::HandshakeClosed,
            16 => Cause::PeerMisbehaved,
            17 => Cause::Internal,
            18 => Cause::Admission(AdmissionReason::from_u8(detail)?),
            19 => Cause::HelloTooLarge,
            20 => Cause::HelloIncomplete,
            21 => Cause::Excluded,
            22 => Cause::SniUnproved,
            23 => Cause::SignerUnavailable,
            24 => Cause::EchBlocked,
            _ => return None,
        })
    }

    /// Stable snake_case name (the event's `cause` field).
    pub const fn label(self) -> &'static str {
        match self {
            Cause::Closed => "closed",
            Cause::IdleTimeout => "idle_timeout",
            Cause::Reset => "reset",
            Cause::ServerRefused => "server_refused",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ClientTimeout => "client_timeout",
            Cause::ServerTimeout => "server_timeout",
            Cause::NotTls => "not_tls",
            Cause::Policy { .. } => "policy",
            Cause::Remembered => "remembered",
            Cause::NoSharedVersionOrSuite => "no_shared_version_or_suite",
            Cause::AlertReceived(_) => "alert_received",
            Cause::Certificate { .. } => "certificate",
            Cause::ClientCertRequired => "client_cert_required",
            Cause::HandshakeClosed => "handshake_closed",
            Cause::PeerMisbehaved => "peer_misbehaved",
            Cause::Internal => "internal",
            Cause::Admission(_) => "admission",
            Cause::HelloTooLarge => "hello_too_large",
            Cause::HelloIncomplete => "hello_incomplete",
            Cause::Excluded => "excluded",
            Cause::SniUnproved => "sni_unproved",
            Cause::SignerUnavailable => "signer_unavailable",
            Cause::EchBlocked => "ech_blocked",
        }
    }

    /// The Prometheus `reason` label: the label, refined where operators search
    /// for the detail (the verify text of a certificate failure, the alert's name).
    pub fn reason(self) -> Cow<'static, str> {
        match self {
            Cause::Certificate { reason, .. } => reason.text().into(),
            Cause::AlertReceived(a) => format!("alert {}", alert_name(a).unwrap_or("unknown")).into(),
            Cause::Admission(r) => format!("admission {}", r.label()).into(),
            other => other.label().into(),
        }
    }
}

/// How a flow ended: what kind of event it is, the leg and phase it ended in, and
/// why. Set once per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What happened to the connection.
    pub kind: EventKind,
    /// The side the cause belongs to ([`Leg::None`]: neither).
    pub leg: Leg,
    /// How far the connection got.
    pub phase: Phase,
    /// Why.
    pub cause: Cause,
}

impl Outcome {
    /// An outcome.
    pub const fn new(kind: EventKind, leg: Leg, phase: Phase, cause: Cause) -> Self {
        Outcome { kind, leg, phase, cause }
    }

    /// The "Error details" text, derived from the outcome alone.
    pub fn text(&self) -> String {
        let side = match self.leg {
            Leg::Client => "client",
            Leg::Server => "server",
            _ => "peer",
        };
        match self.cause {
            Cause::Closed => "both legs closed".into(),
            Cause::IdleTimeout => "idle timeout: both legs reset".into(),
            Cause::Reset => format!("reset by the {side}"),
            Cause::ServerRefused => "the server refused the TCP connection: client reset".into(),
            Cause::ConnectTimeout => "the server did not answer the TCP connection: client reset".into(),
            Cause::ClientTimeout if self.phase == Phase::ClientHello => {
                "no complete ClientHello within the handshake timeout: reset".into()
            }
            Cause::ClientTimeout => "the client did not complete the TLS handshake in time".into(),
            Cause::ServerTimeout => "the server did not complete the TLS handshake in time".into(),
            Cause::NotTls => "not a TLS ClientHello the appliance can read".into(),
            Cause::HelloTooLarge => "more than 64 KiB without a complete ClientHello".into(),
            Cause::HelloIncomplete => "the client closed before its ClientHello was complete".into(),
            Cause::Excluded if self.kind == EventKind::ExclusionLearned => {
                "learned exclusion: the appliance's own handshake confirmed the server supports no mode it offers"
                    .into()
            }
            Cause::Excluded => "learned exclusion: the server supports no mode the appliance offers: passed".into(),
            Cause::SniUnproved if self.kind == EventKind::Blocked => {
                "blocked: the server did not prove the SNI of a do-not-decrypt rule (its certificate is not valid \
                 for it)"
                    .into()
            }
            Cause::SniUnproved => "decrypted: the server did not prove the SNI of a do-not-decrypt rule (its \
                                   certificate is not valid for it)"
                .into(),
            Cause::SignerUnavailable if self.kind == EventKind::Passed => {
                "passed undecrypted: the certificate signer is unavailable and the name is not cached \
                 (tls.signer_unavailable = pass)"
                    .into()
            }
            Cause::SignerUnavailable if self.kind == EventKind::Blocked => {
                "blocked: the certificate signer is unavailable and the name is not cached".into()
            }
            Cause::SignerUnavailable => {
                "the certificate signer did not issue the forged certificate (unreachable, overloaded or refused)"
                    .into()
            }
            Cause::EchBlocked => {
                "blocked: the ClientHello offered Encrypted ClientHello (real or GREASE) and the policy says ech: block"
                    .into()
            }
            Cause::Policy { .. } => match (self.kind, self.phase) {
                (EventKind::Blocked, Phase::TcpConnect) => {
                    "blocked by the decryption policy at SYN: reset".into()
                }
                (EventKind::Blocked, _) => {
                    "blocked by the decryption policy after the ClientHello: reset".into()
                }
                _ => "not decrypted: a do-not-decrypt rule matched".into(),
            },
            Cause::Remembered => "the server's leg failed before: passed undecrypted".into(),
            Cause::NoSharedVersionOrSuite => {
                "no TLS version or cipher suite in common with the server".into()
            }
            Cause::AlertReceived(a) => {
                format!("the {side} sent a fatal alert: {}", alert_name(a).unwrap_or("unknown"))
            }
            Cause::Certificate { reason, depth } => format!(
                "the server's certificate failed verification: {} (code {}, depth {depth})",
                reason.text(),
                reason.code()
            ),
            Cause::ClientCertRequired => {
                "the server requires a client certificate (the appliance has none to send)".into()
            }
            Cause::HandshakeClosed => format!("the {side} closed the connection during the handshake"),
            Cause::PeerMisbehaved => format!("the {side} broke the TLS protocol"),
            Cause::Internal => "internal error of the appliance".into(),
            Cause::Admission(r) => {
                let limit = match r {
                    AdmissionReason::SourceQuota => "the client's quota of half-open connections",
                    AdmissionReason::WorkerFull => "the worker's most intercepted connections",
                    AdmissionReason::MemoryBudget => "the worker's memory budget for connections",
                };
                let action = match self.kind {
                    EventKind::Passed => "forwarded uninspected (admission.over_limit = forward)",
                    EventKind::Reset => "reset",
                    _ => "dropped",
                };
                format!("over {limit}: {action}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ALERT_NONE;
    use crate::EventRecord;

    #[test]
    fn every_cause_has_a_code_label_reason_and_text_and_round_trips() {
        let mut labels = std::collections::HashSet::new();
        for &cause in Cause::EXAMPLES {
            assert_ne!(cause.code(), 0);
            let label = cause.label();
            assert!(
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            labels.insert((cause.code(), label));
            assert!(!cause.reason().is_empty());
            for leg in [Leg::None, Leg::Client, Leg::Server] {
                let o = Outcome::new(EventKind::Abort, leg, Phase::ServerHandshake, cause);
                assert!(!o.text().is_empty(), "{cause:?}");
                let mut r = EventRecord::new(EventKind::Decrypted);
                r.set_outcome(&o);
                assert_eq!(r.outcome().ok(), Some(o), "{cause:?} through the record");
            }
        }
        // One label per code, and every code from 1 up is used.
        let codes: std::collections::BTreeSet<u8> = labels.iter().map(|(c, _)| *c).collect();
        assert_eq!(labels.len(), codes.len());
        assert_eq!(codes.iter().copied().collect::<Vec<_>>(), (1..=codes.len() as u8).collect::<Vec<_>>());
    }

    #[test]
    fn certificate_failures_travel_as_their_openssl_code_and_depth() {
        let mut r = EventRecord::new(EventKind::Abort);
        let cause = Cause::Certificate { reason: VerifyReason::HostnameMismatch, depth: 0 };
        r.set_outcome(&Outcome::new(EventKind::Abort, Leg::Server, Phase::ServerHandshake, cause));
        assert_eq!((r.verify_code, r.verify_depth), (62, 0));
        assert_eq!(crate::event::text(&r.verify_text), "Hostname mismatch");
        assert_eq!(cause.reason(), "Hostname mismatch");
        // An unknown code reads as no cause, never as another one.
        r.verify_code = 999;
        assert!(r.outcome().is_err());
    }

    #[test]
    fn alerts_and_rules_read_back() {
        let mut r = EventRecord::new(EventKind::Abort);
        r.set_outcome(&Outcome::new(
            EventKind::Abort,
            Leg::Server,
            Phase::ServerHandshake,
            Cause::AlertReceived(40),
        ));
        assert_eq!(r.alert_received, 40);
        assert_eq!(Cause::AlertReceived(40).reason(), "alert handshake_failure");
        let mut r = EventRecord::new(EventKind::Blocked);
        r.set_outcome(&Outcome::new(
            EventKind::Blocked,
            Leg::None,
            Phase::TcpConnect,
            Cause::Policy { rule: None },
        ));
        assert_eq!((r.rule_index, r.alert_received), (0, ALERT_NONE));
        assert_eq!(r.outcome().map(|o| o.cause).ok(), Some(Cause::Policy { rule: None }));
    }

    #[test]
    fn a_record_without_a_cause_says_so() {
        let r = EventRecord::new(EventKind::Decrypted);
        let e = r.outcome().unwrap_err();
        assert_eq!(e.to_string(), "unknown Cause value 0");
    }
}
