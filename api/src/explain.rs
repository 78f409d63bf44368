//! Why a flow is (not) decrypted: what `tlsgatectl policy explain` shows. The
//! policy crate fills it from its compiled matcher; the dataplane adds what it
//! learned (exclusions) and its admission limits.

use serde::{Deserialize, Serialize};

/// A decision, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `decrypt`, `do-not-decrypt`, `block`, or (at SYN) `read the ClientHello`.
    pub action: String,
    /// The rule that decided (none: the default action, or not a TLS port).
    pub rule: Option<String>,
}

/// A rule before the deciding one, and why it did not match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Its name.
    pub rule: String,
    /// One line per condition that failed (`source 198.18.0.1 is not in [...]`).
    pub why: Vec<String>,
}

/// The explanation of one flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The configuration version of the policy.
    pub version: u64,
    /// Whether the port is one of `tls_ports` (if not, nothing is decrypted).
    pub tls_port: bool,
    /// The decision at SYN.
    pub at_syn: Step,
    /// The decision after the ClientHello (with the SNI and JA4 given).
    pub after_hello: Step,
    /// The rules before the one that decided after the ClientHello, each with why
    /// it did not match.
    pub skipped: Vec<Skipped>,
    /// What else decides: the proof an SNI exemption needs, settings that apply,
    /// a learned exclusion, admission limits.
    pub notes: Vec<String>,
}

impl Explanation {
    /// As `tlsgatectl policy explain` prints it (and the console shows it).
    pub fn text(&self) -> String {
        let step = |s: &Step| {
            format!(
                "{}{}",
                s.action,
                s.rule.as_ref().map_or(" (default action)".into(), |r| format!(" (rule {r})"))
            )
        };
        let mut out =
            format!("policy version {}\nat SYN:              {}\n", self.version, step(&self.at_syn));
        if self.tls_port {
            out.push_str(&format!("after the ClientHello: {}\n", step(&self.after_hello)));
        }
        for s in &self.skipped {
            out.push_str(&format!("  rule {} did not match: {}\n", s.rule, s.why.join("; ")));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}
