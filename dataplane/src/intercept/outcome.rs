//! How an intercepted flow ended: the typed [`Outcome`] of the api crate (kind,
//! leg, phase, cause), with what its event carries beside it. Set once per flow
//! ([`super::tcp::Splice`] keeps the first); `crate::events` builds the record
//! from it.

use tlsgate_api::{Cause, EventKind, Leg, Outcome, Phase};
use tlsgate_certstore::VerifyFailure;

/// How a flow ended (or why it was passed or blocked), with what its event
/// carries beside the [`Outcome`].
#[derive(Debug, Clone)]
pub struct Ended {
    /// Kind, leg, phase and cause.
    pub outcome: Outcome,
    /// The TLS library's own message, when it adds to the outcome's text (shown
    /// after it, never parsed).
    pub detail: String,
    /// A certificate failure's subject, issuer and chain.
    pub verify: Option<Box<VerifyFailure>>,
}

impl Ended {
    /// An end without detail.
    pub fn new(kind: EventKind, leg: Leg, phase: Phase, cause: Cause) -> Self {
        Ended { outcome: Outcome::new(kind, leg, phase, cause), detail: String::new(), verify: None }
    }

    /// With the TLS library's message.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}
