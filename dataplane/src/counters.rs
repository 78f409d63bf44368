//! Per-worker counters.
//!
//! A worker counts into a plain array it owns (no atomics, no sharing on the hot
//! path) and publishes a copy into its [`Published`] block every few milliseconds
//! with relaxed stores; readers (stats line, status socket) read that copy.

use std::sync::atomic::{AtomicU64, Ordering};

use tlsgate_api::WorkerStats;

use crate::wire::parse::Malformed;

/// Counter indexes.
pub mod idx {
    /// Frames received, inside port.
    pub const RX_PKTS: usize = 0; // +port
    /// Bytes received.
    pub const RX_BYTES: usize = 2; // +port
    /// Frames transmitted.
    pub const TX_PKTS: usize = 4; // +port
    /// Bytes transmitted.
    pub const TX_BYTES: usize = 6; // +port
    /// Flows in the table (gauge).
    pub const FLOWS_ACTIVE: usize = 8;
    /// Flows created.
    pub const FLOWS_CREATED: usize = 9;
    /// Flows expired.
    pub const FLOWS_EXPIRED: usize = 10;
    /// TCP without state forwarded untracked.
    pub const UNTRACKED_MIDSTREAM: usize = 11;
    /// Forwarded untracked, table full (fail-open alarm).
    pub const UNTRACKED_TABLE_FULL: usize = 12;
    /// Fragments forwarded untracked.
    pub const UNTRACKED_FRAGMENTS: usize = 13;
    /// Frames handed to other workers.
    pub const HANDOVER_OUT: usize = 14;
    /// Frames received from other workers.
    pub const HANDOVER_IN: usize = 15;
    /// Bursts handed over.
    pub const HANDOVER_BURSTS: usize = 16;
    /// Idle polls.
    pub const IDLE_POLLS: usize = 17;
    /// Drop: TX queue full.
    pub const DROP_TX_FULL: usize = 18;
    /// Drop: flow table full, fail-closed.
    pub const DROP_TABLE_FULL: usize = 19;
    /// Drop: hand-over queue full.
    pub const DROP_HANDOVER_FULL: usize = 20;
    /// Malformed frames forwarded (malformed = "forward").
    pub const MALFORMED_FORWARDED: usize = 21;
    /// Intercepted flows created (splices).
    pub const INTERCEPT_CREATED: usize = 22;
    /// Splices alive (gauge).
    pub const INTERCEPT_ACTIVE: usize = 23;
    /// Splices ended by FIN on both legs.
    pub const INTERCEPT_CLOSED: usize = 24;
    /// Splices whose server refused or never answered (client got RST).
    pub const INTERCEPT_REFUSED: usize = 25;
    /// Splices ended by a reset on one leg.
    pub const INTERCEPT_RESET: usize = 26;
    /// Splices ended by a timeout.
    pub const INTERCEPT_TIMEOUT: usize = 27;
    /// Bytes relayed client → server.
    pub const INTERCEPT_BYTES_UP: usize = 28;
    /// Bytes relayed server → client.
    pub const INTERCEPT_BYTES_DOWN: usize = 29;
    /// SYNs over admission's limit: the worker had `max_per_worker` splices.
    pub const ADMISSION_WORKER_FULL: usize = 30;
    /// Drop: late segment of a finished intercepted flow.
    pub const DROP_TOMBSTONE: usize = 31;
    /// Drop: no buffer for a frame the stack emitted.
    pub const DROP_NO_BUFFER: usize = 32;
    /// Intercepted TLS flows whose sessions came up on both legs (decrypted).
    pub const TLS_DECRYPTED: usize = 33;
    /// TLS interceptions aborted (server leg or client leg failed).
    pub const TLS_ABORTED: usize = 34;
    /// TLS flows passed through undecrypted (not a ClientHello we can read).
    pub const TLS_PASSED: usize = 35;
    /// SYNs the policy blocked (answered with RST).
    pub const POLICY_BLOCKED: usize = 36;
    /// Flows the policy would decrypt, forwarded because no `[tls]` is configured.
    pub const POLICY_NO_TLS: usize = 37;
    /// TLS flows not decrypted by an SNI rule (relayed untouched).
    pub const TLS_NOT_DECRYPTED: usize = 38;
    /// TLS flows blocked after the ClientHello (SNI rule, or undecryptable = block).
    pub const TLS_BLOCKED: usize = 39;
    /// TLS flows passed undecrypted because their server's leg failed before.
    pub const TLS_PASSED_REMEMBERED: usize = 40;
    /// Nanoseconds of loop iterations that found work (busy time, as testpmd's
    /// `--record-core-cycles` counts busy cycles): CPU per unit of work apart from
    /// idle polling.
    pub const BUSY_NS: usize = 41;
    /// TLS flows decrypted although their server's chain failed verification
    /// (certificate validation off).
    pub const TLS_UNVERIFIED: usize = 42;
    /// Decrypted flows whose server leg resumed a session (no certificate sent).
    pub const TLS_SERVER_RESUMED: usize = 43;
    /// Decrypted flows whose client resumed its session with the appliance.
    pub const TLS_CLIENT_RESUMED: usize = 44;
    /// Server chains accepted from the verifier's cache of verified chains.
    pub const TLS_CHAIN_CACHED: usize = 45;
    /// Forged certificates answered from the worker's cache.
    pub const FORGE_HITS: usize = 46;
    /// Forged certificates made (cache misses).
    pub const FORGE_MISSES: usize = 47;
    /// Flows started by a SYN on the 4-tuple of an intercepted flow that had ended
    /// (port reuse: the tombstone gave way).
    pub const FLOWS_REUSED: usize = 48;
    /// SYNs over admission's limit: their source had its quota of half-open splices.
    pub const ADMISSION_SOURCE_QUOTA: usize = 49;
    /// SYNs over admission's limit: the worker's memory budget was spent.
    pub const ADMISSION_BUDGET: usize = 50;
    /// SYNs over a limit forwarded uninspected (`over_limit = "forward"`).
    pub const OVER_LIMIT_FORWARDED: usize = 51;
    /// SYNs over a limit answered with a RST (`over_limit = "reset"`).
    pub const OVER_LIMIT_RESET: usize = 52;
    /// Half-open splices (no payload byte yet), gauge.
    pub const HALF_OPEN: usize = 53;
    /// Bytes charged to the worker's memory budget, gauge.
    pub const MEMORY_CHARGED: usize = 54;
    /// Splices that got full buffers when used.
    pub const GROWN: usize = 55;
    /// Used splices kept on small buffers for a while (the budget was spent).
    pub const GROW_DEFERRED: usize = 56;
    /// SYNs from the outside port (never intercepted; policy blocks apply).
    pub const INBOUND_NOT_INTERCEPTED: usize = 57;
    /// Splices closed for want of a first payload byte.
    pub const FIRST_BYTE_TIMEOUT: usize = 58;
    /// Drop: a TCP fragment (not atomic): fragments carry no ports to decide on.
    pub const DROP_TCP_FRAGMENT: usize = 59;
    /// Drop: TCP to or from a TLS port without a SYN seen (`midstream = "drop"`).
    pub const DROP_MIDSTREAM: usize = 60;
    /// TCP to or from a TLS port without a SYN seen, answered with a RST.
    pub const MIDSTREAM_RESET: usize = 61;
    /// TLS flows whose client bytes were not a ClientHello the appliance reads.
    pub const UNDECRYPTABLE_NOT_TLS: usize = 62;
    /// TLS flows with more than 64 KiB and no complete ClientHello.
    pub const UNDECRYPTABLE_TOO_LARGE: usize = 63;
    /// TLS flows whose client closed before its ClientHello was complete.
    pub const UNDECRYPTABLE_INCOMPLETE: usize = 64;
    /// Flows whose server certificate failed a check whose action is `untrust`
    /// (the client got a certificate from the untrust CA).
    pub const TLS_UNTRUSTED: usize = 65;
    /// Probes started (the appliance's own handshakes with servers).
    pub const PROBES_STARTED: usize = 66;
    /// Probes not started: a limit (per source, per destination, in flight, free
    /// ports) or no port owned by this worker; the flow counts its name unproved.
    pub const PROBES_REFUSED: usize = 67;
    /// Probes whose server proved the name (its certificate valid for the SNI).
    pub const PROBES_PROVED: usize = 68;
    /// Probes whose server did not prove the name (or failed).
    pub const PROBES_NOT_PROVED: usize = 69;
    /// Probes that confirmed an unsupported mode: a learned exclusion was made.
    pub const EXCLUSIONS_LEARNED: usize = 70;
    /// Probes that did not confirm a server-leg failure: no exclusion.
    pub const PROBES_NOT_CONFIRMED: usize = 71;
    /// Flows whose SNI matched a do-not-decrypt rule the server did not prove.
    pub const SNI_UNPROVED: usize = 72;
    /// Flows passed undecrypted by a learned exclusion.
    pub const TLS_PASSED_EXCLUDED: usize = 73;
    /// Drop: a segment from the client side of a probe's 4-tuple (a client using
    /// a port of the probes' reserved range to that server while a probe runs).
    pub const DROP_PROBE_COLLISION: usize = 74;
    /// First malformed-reason counter; one per [`super::Malformed`] reason.
    pub const MALFORMED_BASE: usize = 75;
}

/// Decisions per rule of the running policy: counted by index on the hot path,
/// folded by rule name on the cold path (a policy switch, a publication).
#[derive(Default)]
pub struct RuleHits {
    /// Since the last fold; index 0: the default action, `i + 1`: rule `i`.
    hits: Vec<u64>,
    /// Decisions per rule name, folded.
    pub names: std::collections::BTreeMap<String, u64>,
}

impl RuleHits {
    /// One decision of `rule` (None: the default action) of `policy`.
    #[inline]
    pub fn count(
        &mut self,
        rule: Option<tlsgate_policy::RuleId>,
        policy: Option<&tlsgate_policy::CompiledPolicy>,
    ) {
        let i = rule.map_or(0, |r| r.index() + 1);
        if i >= self.hits.len() {
            let n = policy.map_or(1, |p| p.rule_count() + 1);
            self.hits.resize(n.max(i + 1), 0);
        }
        self.hits[i] += 1;
    }

    /// One decision counted by name (an intercepted flow's SNI decision).
    pub fn count_name(&mut self, name: &str) {
        *self.names.entry(name.to_string()).or_insert(0) += 1;
    }

    /// Folds the counts by index into counts by name, with `policy`'s names (the
    /// policy they were counted under).
    pub fn fold(&mut self, policy: Option<&tlsgate_policy::CompiledPolicy>) {
        for (i, n) in self.hits.iter_mut().enumerate() {
            if *n == 0 {
                continue;
            }
            let name = match (i, policy) {
                (0, _) | (_, None) => "(default)",
                (i, Some(p)) => p.rule_name(tlsgate_policy::RuleId::new(i as u32 - 1)).unwrap_or("(default)"),
            };
            *self.names.entry(name.to_string()).or_insert(0) += *n;
            *n = 0;
        }
    }
}

/// Number of counters.
pub const COUNT: usize = idx::MALFORMED_BASE + 32;

/// A worker's own counters.
pub type Local = [u64; COUNT];

/// The published copy of a worker's counters.
pub struct Published {
    vals: [AtomicU64; COUNT],
    rules: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Default for Published {
    fn default() -> Self {
        Published { vals: std::array::from_fn(|_| AtomicU64::new(0)), rules: Default::default() }
    }
}

impl Published {
    /// Copies the worker's counters in (worker thread only).
    pub fn publish(&self, local: &Local) {
        for (a, v) in self.vals.iter().zip(local.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
    }

    /// Copies the decisions per rule name in (worker thread only, every few
    /// hundred ms).
    pub fn publish_rules(&self, rules: &std::collections::BTreeMap<String, u64>) {
        if let Ok(mut r) = self.rules.lock() {
            r.clone_from(rules);
        }
    }

    /// Reads one counter.
    pub fn get(&self, i: usize) -> u64 {
        self.vals[i].load(Ordering::Relaxed)
    }

    /// The report for the status channel.
    pub fn report(&self, worker: u32) -> WorkerStats {
        let g = |i| self.get(i);
        let mut drops = std::collections::BTreeMap::new();
        for r in Malformed::ALL {
            let v = g(idx::MALFORMED_BASE + *r as usize);
            if v != 0 {
                drops.insert(r.name().to_string(), v);
            }
        }
        for (name, i) in [
            ("tx_full", idx::DROP_TX_FULL),
            ("flow_table_full", idx::DROP_TABLE_FULL),
            ("handover_full", idx::DROP_HANDOVER_FULL),
            ("intercept_tombstone", idx::DROP_TOMBSTONE),
            ("tcp_fragment", idx::DROP_TCP_FRAGMENT),
            ("midstream_tls", idx::DROP_MIDSTREAM),
            ("probe_port_collision", idx::DROP_PROBE_COLLISION),
            ("no_buffer", idx::DROP_NO_BUFFER),
        ] {
            if g(i) != 0 {
                drops.insert(name.to_string(), g(i));
            }
        }
        WorkerStats {
            worker,
            rx_packets: [g(idx::RX_PKTS), g(idx::RX_PKTS + 1)],
            rx_bytes: [g(idx::RX_BYTES), g(idx::RX_BYTES + 1)],
            tx_packets: [g(idx::TX_PKTS), g(idx::TX_PKTS + 1)],
            tx_bytes: [g(idx::TX_BYTES), g(idx::TX_BYTES + 1)],
            drops,
            flows_active: g(idx::FLOWS_ACTIVE),
            flows_created: g(idx::FLOWS_CREATED),
            flows_expired: g(idx::FLOWS_EXPIRED),
            untracked_midstream: g(idx::UNTRACKED_MIDSTREAM),
            untracked_table_full: g(idx::UNTRACKED_TABLE_FULL),
            untracked_fragments: g(idx::UNTRACKED_FRAGMENTS),
            handover_out: g(idx::HANDOVER_OUT),
            handover_in: g(idx::HANDOVER_IN),
            handover_bursts: g(idx::HANDOVER_BURSTS),
            idle_polls: g(idx::IDLE_POLLS),
            busy_ns: g(idx::BUSY_NS),
            malformed_forwarded: g(idx::MALFORMED_FORWARDED),
            intercept: [
                ("created", idx::INTERCEPT_CREATED),
                ("reused_4tuple", idx::FLOWS_REUSED),
                ("active", idx::INTERCEPT_ACTIVE),
                ("closed", idx::INTERCEPT_CLOSED),
                ("server_refused", idx::INTERCEPT_REFUSED),
                ("reset", idx::INTERCEPT_RESET),
                ("timeout", idx::INTERCEPT_TIMEOUT),
                ("bytes_up", idx::INTERCEPT_BYTES_UP),
                ("bytes_down", idx::INTERCEPT_BYTES_DOWN),
                ("half_open", idx::HALF_OPEN),
                ("memory_charged_bytes", idx::MEMORY_CHARGED),
                ("admission_worker_full", idx::ADMISSION_WORKER_FULL),
                ("admission_source_quota", idx::ADMISSION_SOURCE_QUOTA),
                ("admission_memory_budget", idx::ADMISSION_BUDGET),
                ("over_limit_forwarded", idx::OVER_LIMIT_FORWARDED),
                ("over_limit_reset", idx::OVER_LIMIT_RESET),
                ("buffers_grown", idx::GROWN),
                ("buffers_grow_deferred", idx::GROW_DEFERRED),
                ("first_byte_timeout", idx::FIRST_BYTE_TIMEOUT),
                ("inbound_not_intercepted", idx::INBOUND_NOT_INTERCEPTED),
                ("midstream_reset", idx::MIDSTREAM_RESET),
                ("undecryptable_not_tls", idx::UNDECRYPTABLE_NOT_TLS),
                ("undecryptable_hello_too_large", idx::UNDECRYPTABLE_TOO_LARGE),
                ("undecryptable_hello_incomplete", idx::UNDECRYPTABLE_INCOMPLETE),
                ("tls_decrypted", idx::TLS_DECRYPTED),
                ("tls_aborted", idx::TLS_ABORTED),
                ("tls_passed", idx::TLS_PASSED),
                ("tls_not_decrypted", idx::TLS_NOT_DECRYPTED),
                ("tls_passed_remembered", idx::TLS_PASSED_REMEMBERED),
                ("tls_blocked", idx::TLS_BLOCKED),
                ("tls_unverified", idx::TLS_UNVERIFIED),
                ("tls_untrusted", idx::TLS_UNTRUSTED),
                ("tls_passed_excluded", idx::TLS_PASSED_EXCLUDED),
                ("sni_unproved", idx::SNI_UNPROVED),
                ("probes_started", idx::PROBES_STARTED),
                ("probes_refused", idx::PROBES_REFUSED),
                ("probes_proved", idx::PROBES_PROVED),
                ("probes_not_proved", idx::PROBES_NOT_PROVED),
                ("probes_not_confirmed", idx::PROBES_NOT_CONFIRMED),
                ("exclusions_learned", idx::EXCLUSIONS_LEARNED),
                ("tls_server_resumed", idx::TLS_SERVER_RESUMED),
                ("tls_client_resumed", idx::TLS_CLIENT_RESUMED),
                ("tls_chain_cached", idx::TLS_CHAIN_CACHED),
                ("forge_cache_hits", idx::FORGE_HITS),
                ("forge_cache_misses", idx::FORGE_MISSES),
                ("policy_blocked", idx::POLICY_BLOCKED),
                ("policy_decrypt_without_tls", idx::POLICY_NO_TLS),
            ]
            .into_iter()
            .map(|(k, i)| (k.to_string(), g(i)))
            .collect(),
            rule_hits: self.rules.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_malformed_reason_has_a_counter() {
        assert!(idx::MALFORMED_BASE + Malformed::ALL.len() <= COUNT);
        for (i, r) in Malformed::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "reasons index the counter array in order");
        }
    }

    #[test]
    fn report_names_drop_reasons() {
        let p = Published::default();
        let mut l = [0u64; COUNT];
        l[idx::MALFORMED_BASE + Malformed::TcpTruncated as usize] = 3;
        l[idx::DROP_TX_FULL] = 2;
        l[idx::RX_PKTS + 1] = 7;
        p.publish(&l);
        let r = p.report(1);
        assert_eq!(r.drops["tcp_truncated"], 3);
        assert_eq!(r.drops["tx_full"], 2);
        assert_eq!(r.rx_packets, [0, 7]);
        assert_eq!(r.drops.len(), 2);
    }
}
