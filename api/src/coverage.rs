//! Decryption coverage: of the TLS flows the appliance saw, how many it
//! decrypted, and why the others were not — from the dataplane's counters, one
//! definition for `tlsgatectl coverage`, the console and `/metrics`.
//!
//! A TLS flow here is a TCP connection from the inside to one of the policy's
//! `tls_ports` (and QUIC to them). Blocked flows are left out: they were
//! neither inspected nor let through.

use serde::{Deserialize, Serialize};

use crate::DataplaneStats;

/// Why a TLS flow was not decrypted: its name in reports and metrics, what it
/// means, and the counters it sums (`-name` subtracts).
pub struct Reason {
    /// Name (`reason` label of `tlsgate_coverage_flows_total`).
    pub name: &'static str,
    /// What it means, for people.
    pub text: &'static str,
    /// Counters summed (a leading `-` subtracts).
    pub counters: &'static [&'static str],
}

/// Decrypted (the first row), then every reason a TLS flow was not.
pub const REASONS: &[Reason] = &[
    Reason { name: "decrypted", text: "decrypted and inspected", counters: &["tls_decrypted"] },
    Reason {
        name: "policy_at_syn",
        text: "bypassed at SYN by policy (a do-not-decrypt rule without sni, or the default action)",
        counters: &["syn_not_decrypted"],
    },
    Reason { name: "policy_sni", text: "not decrypted by an sni rule", counters: &["tls_not_decrypted"] },
    Reason {
        name: "learned_exclusion",
        text: "passed by a learned exclusion (the server supports no mode the appliance offers)",
        counters: &["tls_passed_excluded"],
    },
    Reason {
        name: "undecryptable",
        text: "undecryptable: not a ClientHello the appliance reads (passed or blocked)",
        counters: &[
            "undecryptable_not_tls",
            "undecryptable_hello_too_large",
            "undecryptable_hello_incomplete",
        ],
    },
    Reason {
        name: "admission_limit",
        text: "over an admission limit at SYN (per-source quota, memory budget, splices per worker)",
        counters: &["admission_worker_full", "admission_source_quota", "admission_memory_budget"],
    },
    Reason {
        name: "certificate_action",
        text: "the server's certificate failed a check (blocked, or passed by a pass action)",
        counters: &["tls_aborted_certificate", "tls_passed_remembered"],
    },
    Reason {
        name: "failure",
        text: "a handshake failure on either leg (alerts, no common suite, timeouts)",
        counters: &["tls_aborted", "-tls_aborted_certificate", "-tls_aborted_after_decrypt"],
    },
    Reason {
        name: "signer_unavailable",
        text: "a new name while the signer was unreachable (signer_unavailable = pass: relayed raw)",
        counters: &["tls_passed_signer_unavailable"],
    },
    Reason {
        name: "no_decryption_ca",
        text: "a decrypt decision without a decryption CA (forwarded)",
        counters: &["policy_decrypt_without_tls"],
    },
    Reason {
        name: "inbound",
        text: "opened from the outside port (not intercepted)",
        counters: &["inbound_not_intercepted"],
    },
];

/// Segments of TCP to or from a TLS port without a SYN seen (forwarded, dropped
/// or reset): counted in segments, not flows, so outside the share.
pub const MIDSTREAM_COUNTERS: &[&str] = &["untracked_midstream", "drop_midstream_tls", "midstream_reset"];
/// QUIC datagrams to a TLS port a decrypt rule matched (dropped so clients
/// fall back to TCP, where they are counted; or passed): datagrams, not flows,
/// so outside the share.
pub const QUIC_COUNTERS: &[&str] = &["drop_quic", "quic_passed"];

/// The raw sums, in [`REASONS`] order, then midstream segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// One per [`REASONS`] entry.
    pub flows: Vec<u64>,
    /// Midstream segments.
    pub midstream_segments: u64,
    /// QUIC datagrams.
    #[serde(default)]
    pub quic_datagrams: u64,
}

impl Counts {
    /// Sums of the dataplane's counters over its workers.
    pub fn of(stats: &DataplaneStats) -> Counts {
        let sum = |name: &str| stats.workers.iter().map(|w| w.get(name)).sum::<u64>();
        let flows = REASONS
            .iter()
            .map(|r| {
                let (plus, minus) =
                    r.counters.iter().fold((0u64, 0u64), |(p, m), c| match c.strip_prefix('-') {
                        Some(c) => (p, m + sum(c)),
                        None => (p + sum(c), m),
                    });
                plus.saturating_sub(minus)
            })
            .collect();
        Counts {
            flows,
            midstream_segments: MIDSTREAM_COUNTERS.iter().map(|c| sum(c)).sum(),
            quic_datagrams: QUIC_COUNTERS.iter().map(|c| sum(c)).sum(),
        }
    }

    /// What happened between `base` and `self`; `None` when a counter went down
    /// (the dataplane restarted in between).
    pub fn since(&self, base: &Counts) -> Option<Counts> {
        if self.flows.len() != base.flows.len() {
            return None;
        }
        let flows =
            self.flows.iter().zip(&base.flows).map(|(a, b)| a.checked_sub(*b)).collect::<Option<Vec<_>>>()?;
        let midstream_segments = self.midstream_segments.checked_sub(base.midstream_segments)?;
        let quic_datagrams = self.quic_datagrams.checked_sub(base.quic_datagrams)?;
        Some(Counts { flows, midstream_segments, quic_datagrams })
    }

    /// The report of these counts.
    pub fn report(&self, since: u64, until: u64, note: Option<String>) -> CoverageReport {
        let total: u64 = self.flows.iter().sum();
        let decrypted = self.flows.first().copied().unwrap_or(0);
        CoverageReport {
            since,
            until,
            tls_flows: total,
            decrypted,
            share: if total == 0 { None } else { Some(decrypted as f64 / total as f64) },
            reasons: REASONS
                .iter()
                .zip(&self.flows)
                .skip(1)
                .map(|(r, n)| CoverageRow { reason: r.name.into(), text: r.text.into(), flows: *n })
                .collect(),
            midstream_segments: self.midstream_segments,
            quic_datagrams: self.quic_datagrams,
            note,
        }
    }
}

/// `tlsgatectl coverage`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageReport {
    /// From (unix seconds).
    pub since: u64,
    /// Until (unix seconds).
    pub until: u64,
    /// TLS flows seen.
    pub tls_flows: u64,
    /// Of them decrypted.
    pub decrypted: u64,
    /// `decrypted / tls_flows` (none without flows).
    pub share: Option<f64>,
    /// The others, by reason ([`REASONS`] after the first).
    pub reasons: Vec<CoverageRow>,
    /// Midstream segments (not flows; outside the share).
    pub midstream_segments: u64,
    /// QUIC datagrams (not flows; outside the share).
    #[serde(default)]
    pub quic_datagrams: u64,
    /// What the figures cover when not exactly what was asked (a dataplane
    /// restart, history shorter than asked).
    pub note: Option<String>,
}

/// One reason's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageRow {
    /// [`Reason::name`].
    pub reason: String,
    /// [`Reason::text`].
    pub text: String,
    /// Flows.
    pub flows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerStats;

    #[test]
    fn every_counter_named_is_in_the_table() {
        let known: Vec<&str> = crate::counters::COUNTERS.iter().map(|c| c.name).collect();
        for c in REASONS.iter().flat_map(|r| r.counters.iter()).chain(MIDSTREAM_COUNTERS).chain(QUIC_COUNTERS)
        {
            let c = c.trim_start_matches('-');
            assert!(known.contains(&c), "{c} is not a counter");
        }
    }

    #[test]
    fn sums_subtracts_and_spots_a_restart() {
        let worker = |pairs: &[(&str, u64)]| WorkerStats {
            counters: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        };
        let stats = DataplaneStats {
            workers: vec![
                worker(&[("tls_decrypted", 6), ("tls_aborted", 3), ("tls_aborted_certificate", 1)]),
                worker(&[("tls_decrypted", 2), ("drop_quic", 4), ("untracked_midstream", 9)]),
            ],
            ..Default::default()
        };
        let c = Counts::of(&stats);
        let r = c.report(0, 10, None);
        assert_eq!((r.tls_flows, r.decrypted), (11, 8));
        let get = |name: &str| r.reasons.iter().find(|x| x.reason == name).unwrap().flows;
        assert_eq!((get("failure"), get("certificate_action")), (2, 1));
        assert_eq!((r.midstream_segments, r.quic_datagrams), (9, 4));
        assert!((r.share.unwrap() - 8.0 / 11.0).abs() < 1e-9);
        let zero = Counts { flows: vec![0; REASONS.len()], midstream_segments: 0, quic_datagrams: 0 };
        assert_eq!(c.since(&zero), Some(c.clone()));
        assert_eq!(zero.since(&c), None, "counters went down: a restart");
        assert_eq!(zero.report(0, 0, None).share, None);
    }
}
