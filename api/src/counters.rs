//! The dataplane's counters, declared once.
//!
//! One table ([`COUNTERS`]) gives each counter its index in a worker's counter
//! array ([`idx`]), its name in [`crate::WorkerStats::counters`] (status socket,
//! `tlsgatectl stats`), its help text, and its Prometheus series: a
//! [`Family`] and the value of that family's label. The control plane exports
//! every counter from the table ([`Counter::family`]), the dataplane counts by
//! [`idx`]; a counter added here is in the status report and in `/metrics`
//! without a second list to keep in step. A dataplane test checks that each one
//! is counted somewhere.
//!
//! Drops caused by malformed frames have one counter per parser reason after the
//! table ([`MALFORMED_BASE`], [`MALFORMED_SLOTS`]); their names are the parser's.

/// Whether a family's value only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (Prometheus counter, name ends in `_total`).
    Counter,
    /// A level that goes up and down (Prometheus gauge).
    Gauge,
}

/// A Prometheus metric family: every series has a `worker` label, and `label`
/// when it is not empty.
#[derive(Debug)]
pub struct Family {
    /// Metric name.
    pub name: &'static str,
    /// `# HELP` text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The label that tells the family's counters apart (`""`: one per worker).
    pub label: &'static str,
    /// Divisor of the exported value (nanoseconds → seconds: 1e9).
    pub scale: f64,
}

/// One counter of the table.
#[derive(Debug)]
pub struct Counter {
    /// Name of its [`idx`] constant.
    pub ident: &'static str,
    /// Name in [`crate::WorkerStats::counters`].
    pub name: &'static str,
    /// What it counts (its doc comment; [`Counter::help`] trims it).
    pub doc: &'static str,
    /// The family it is exported in.
    pub family: &'static Family,
    /// Its value of the family's label (`""` when the family has none).
    pub label: &'static str,
}

/// The families of the exported counters.
pub mod families {
    use super::{Family, Kind};

    macro_rules! family {
        ($id:ident, $name:literal, $kind:ident, $label:literal, $help:literal) => {
            family!($id, $name, $kind, $label, $help, 1.0);
        };
        ($id:ident, $name:literal, $kind:ident, $label:literal, $help:literal, $scale:expr) => {
            #[doc = $help]
            pub static $id: Family =
                Family { name: $name, help: $help, kind: Kind::$kind, label: $label, scale: $scale };
        };
    }

    family!(
        RX_PACKETS,
        "tlsgate_rx_packets_total",
        Counter,
        "port",
        "Frames received by a worker, per port."
    );
    family!(RX_BYTES, "tlsgate_rx_bytes_total", Counter, "port", "Bytes received by a worker, per port.");
    family!(TX_PACKETS, "tlsgate_tx_packets_total", Counter, "port", "Frames sent by a worker, per port.");
    family!(TX_BYTES, "tlsgate_tx_bytes_total", Counter, "port", "Bytes sent by a worker, per port.");
    family!(DROPS, "tlsgate_drops_total", Counter, "reason", "Frames dropped by a worker, by reason.");
    family!(FLOWS_ACTIVE, "tlsgate_flows_active", Gauge, "", "Flows in a worker's flow table.");
    family!(FLOWS_CREATED, "tlsgate_flows_created_total", Counter, "", "Flows a worker created.");
    family!(
        FLOWS_EXPIRED,
        "tlsgate_flows_expired_total",
        Counter,
        "",
        "Flows a worker removed after their idle timeout."
    );
    family!(
        FLOWS_REUSED,
        "tlsgate_flows_reused_total",
        Counter,
        "",
        "Flows started by a SYN on the 4-tuple of an ended intercepted flow (port reuse)."
    );
    family!(
        UNTRACKED,
        "tlsgate_flows_untracked_total",
        Counter,
        "why",
        "Frames forwarded without a flow: midstream TCP, table full (fail-open), fragments."
    );
    family!(
        HANDOVER,
        "tlsgate_handover_frames_total",
        Counter,
        "direction",
        "Frames handed between workers by software steering (out: to another worker)."
    );
    family!(HANDOVER_BURSTS, "tlsgate_handover_bursts_total", Counter, "", "Bursts handed to other workers.");
    family!(IDLE_POLLS, "tlsgate_idle_polls_total", Counter, "", "Main-loop iterations that found no work.");
    family!(
        BUSY,
        "tlsgate_worker_busy_seconds_total",
        Counter,
        "",
        "Time of a worker's loop iterations that found work.",
        1e9
    );
    family!(
        MALFORMED_FORWARDED,
        "tlsgate_malformed_forwarded_total",
        Counter,
        "",
        "Malformed frames forwarded anyway (malformed = forward)."
    );
    family!(
        INTERCEPTED_ACTIVE,
        "tlsgate_intercepted_flows_active",
        Gauge,
        "",
        "Intercepted (terminated) flows alive."
    );
    family!(
        VERDICTS,
        "tlsgate_flow_verdicts_total",
        Counter,
        "verdict",
        "Decisions on new TCP flows and TLS flows: intercepted, decrypted, not_decrypted, passed, blocked, aborted."
    );
    family!(
        SPLICE_ENDS,
        "tlsgate_splice_ends_total",
        Counter,
        "end",
        "Intercepted flows by how their TCP splice ended."
    );
    family!(
        DECRYPTED_BYTES,
        "tlsgate_decrypted_bytes_total",
        Counter,
        "direction",
        "Bytes relayed by ended intercepted flows (up: client to server)."
    );
    family!(
        ADMISSION_REFUSED,
        "tlsgate_admission_refused_total",
        Counter,
        "limit",
        "SYNs to intercept over an admission limit, by limit."
    );
    family!(
        OVER_LIMIT,
        "tlsgate_over_limit_total",
        Counter,
        "action",
        "SYNs over an admission limit not dropped: forwarded uninspected or reset (over_limit)."
    );
    family!(HALF_OPEN, "tlsgate_half_open_splices", Gauge, "", "Splices without a payload byte yet.");
    family!(
        MEMORY_CHARGED,
        "tlsgate_splice_memory_bytes",
        Gauge,
        "",
        "Bytes of splice buffers charged to a worker's memory budget."
    );
    family!(
        BUFFERS,
        "tlsgate_splice_buffers_total",
        Counter,
        "event",
        "Splices that got full buffers, or had to wait for them."
    );
    family!(
        INBOUND,
        "tlsgate_inbound_not_intercepted_total",
        Counter,
        "",
        "SYNs from the outside port (never intercepted)."
    );
    family!(
        MIDSTREAM_RESET,
        "tlsgate_midstream_reset_total",
        Counter,
        "",
        "TCP to or from a TLS port without a SYN seen, answered with a RST (midstream = reset)."
    );
    family!(
        UNDECRYPTABLE,
        "tlsgate_undecryptable_total",
        Counter,
        "why",
        "TLS flows without a ClientHello the appliance reads, by why."
    );
    family!(
        TLS_SESSIONS,
        "tlsgate_tls_sessions_total",
        Counter,
        "kind",
        "Decrypted flows by what their handshakes did: resumed on a leg, chain from the cache, unverified, untrusted."
    );
    family!(
        PROBES,
        "tlsgate_probes_total",
        Counter,
        "result",
        "The appliance's own handshakes with servers (SNI proofs, confirmations of exclusions), by result."
    );
    family!(
        SNI_UNPROVED,
        "tlsgate_sni_unproved_total",
        Counter,
        "",
        "Flows whose SNI matched a do-not-decrypt rule that the server did not prove."
    );
    family!(
        FORGE,
        "tlsgate_forge_cache_lookups_total",
        Counter,
        "result",
        "Forged-certificate cache lookups."
    );
    family!(
        QUIC_PASSED,
        "tlsgate_quic_passed_total",
        Counter,
        "",
        "QUIC flows a decrypt rule matched, forwarded uninspected (quic = pass)."
    );
    family!(
        POLICY_NO_TLS,
        "tlsgate_policy_decrypt_without_tls_total",
        Counter,
        "",
        "Flows the policy would decrypt, forwarded because the dataplane has no [tls]."
    );
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $id:ident = $name:literal, $family:ident ( $label:literal ); )+) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(usize)]
        enum Position { $($id,)+ Malformed }

        /// Indexes into a worker's counter array, one per counter of [`COUNTERS`].
        pub mod idx {
            $(
                $(#[doc = $doc])+
                pub const $id: usize = super::Position::$id as usize;
            )+
        }

        /// The table: index `i` is the counter whose [`idx`] constant is `i`.
        pub static COUNTERS: &[Counter] = &[
            $(Counter { ident: stringify!($id), name: $name, doc: concat!($($doc),+), family: &families::$family, label: $label },)+
        ];

        /// First malformed-reason counter: one per parser reason follows.
        pub const MALFORMED_BASE: usize = Position::Malformed as usize;
    };
}

counters! {
    /// Frames received on the inside port.
    RX_PKTS_INSIDE = "rx_packets_inside", RX_PACKETS("inside");
    /// Frames received on the outside port.
    RX_PKTS_OUTSIDE = "rx_packets_outside", RX_PACKETS("outside");
    /// Bytes received on the inside port.
    RX_BYTES_INSIDE = "rx_bytes_inside", RX_BYTES("inside");
    /// Bytes received on the outside port.
    RX_BYTES_OUTSIDE = "rx_bytes_outside", RX_BYTES("outside");
    /// Frames sent on the inside port.
    TX_PKTS_INSIDE = "tx_packets_inside", TX_PACKETS("inside");
    /// Frames sent on the outside port.
    TX_PKTS_OUTSIDE = "tx_packets_outside", TX_PACKETS("outside");
    /// Bytes sent on the inside port.
    TX_BYTES_INSIDE = "tx_bytes_inside", TX_BYTES("inside");
    /// Bytes sent on the outside port.
    TX_BYTES_OUTSIDE = "tx_bytes_outside", TX_BYTES("outside");
    /// Flows in the table (gauge).
    FLOWS_ACTIVE = "flows_active", FLOWS_ACTIVE("");
    /// Flows created.
    FLOWS_CREATED = "flows_created", FLOWS_CREATED("");
    /// Flows removed after their idle timeout.
    FLOWS_EXPIRED = "flows_expired", FLOWS_EXPIRED("");
    /// Flows started by a SYN on the 4-tuple of an intercepted flow that had
    /// ended (port reuse: the tombstone gave way).
    FLOWS_REUSED = "reused_4tuple", FLOWS_REUSED("");
    /// TCP without state (no SYN seen) forwarded untracked.
    UNTRACKED_MIDSTREAM = "untracked_midstream", UNTRACKED("midstream");
    /// Frames forwarded untracked because the flow table was full (fail-open alarm).
    UNTRACKED_TABLE_FULL = "untracked_table_full", UNTRACKED("table_full");
    /// IP fragments forwarded untracked (steered by the address pair).
    UNTRACKED_FRAGMENTS = "untracked_fragments", UNTRACKED("fragment");
    /// Frames handed to other workers.
    HANDOVER_OUT = "handover_out", HANDOVER("out");
    /// Frames received from other workers.
    HANDOVER_IN = "handover_in", HANDOVER("in");
    /// Bursts handed over (a hand-over moves a whole burst).
    HANDOVER_BURSTS = "handover_bursts", HANDOVER_BURSTS("");
    /// Main-loop iterations that found no work.
    IDLE_POLLS = "idle_polls", IDLE_POLLS("");
    /// Nanoseconds of loop iterations that found work (busy time, as testpmd's
    /// `--record-core-cycles` counts busy cycles).
    BUSY_NS = "busy_ns", BUSY("");
    /// Drop: TX queue full.
    DROP_TX_FULL = "drop_tx_full", DROPS("tx_full");
    /// Drop: flow table full, fail-closed.
    DROP_TABLE_FULL = "drop_flow_table_full", DROPS("flow_table_full");
    /// Drop: hand-over queue full.
    DROP_HANDOVER_FULL = "drop_handover_full", DROPS("handover_full");
    /// Drop: late segment of a finished intercepted flow.
    DROP_TOMBSTONE = "drop_intercept_tombstone", DROPS("intercept_tombstone");
    /// Drop: a TCP fragment that is not atomic (fragments carry no ports to
    /// decide on).
    DROP_TCP_FRAGMENT = "drop_tcp_fragment", DROPS("tcp_fragment");
    /// Drop: TCP to or from a TLS port without a SYN seen (`midstream = "drop"`).
    DROP_MIDSTREAM = "drop_midstream_tls", DROPS("midstream_tls");
    /// Drop: a segment from the client side of a probe's 4-tuple.
    DROP_PROBE_COLLISION = "drop_probe_port_collision", DROPS("probe_port_collision");
    /// Drop: no buffer for a frame the stack emitted.
    DROP_NO_BUFFER = "drop_no_buffer", DROPS("no_buffer");
    /// Drop: QUIC (UDP to a TLS port) a decrypt rule matched, `quic = "block"`
    /// (the client falls back to TCP).
    DROP_QUIC = "drop_quic", DROPS("quic");
    /// QUIC flows a decrypt rule matched, forwarded uninspected (`quic = "pass"`).
    QUIC_PASSED = "quic_passed", QUIC_PASSED("");
    /// Malformed frames forwarded anyway (`malformed = "forward"`).
    MALFORMED_FORWARDED = "malformed_forwarded", MALFORMED_FORWARDED("");
    /// Intercepted flows created (splices).
    INTERCEPT_CREATED = "intercept_created", VERDICTS("intercepted");
    /// Splices alive (gauge).
    INTERCEPT_ACTIVE = "intercept_active", INTERCEPTED_ACTIVE("");
    /// Splices ended by FIN on both legs.
    INTERCEPT_CLOSED = "intercept_closed", SPLICE_ENDS("closed");
    /// Splices whose server refused or never answered (the client got a RST).
    INTERCEPT_REFUSED = "intercept_server_refused", SPLICE_ENDS("server_refused");
    /// Splices ended by a reset on one leg.
    INTERCEPT_RESET = "intercept_reset", SPLICE_ENDS("reset");
    /// Splices ended by a timeout.
    INTERCEPT_TIMEOUT = "intercept_timeout", SPLICE_ENDS("timeout");
    /// Splices closed for want of a first payload byte.
    FIRST_BYTE_TIMEOUT = "first_byte_timeout", SPLICE_ENDS("first_byte_timeout");
    /// Bytes relayed client → server.
    INTERCEPT_BYTES_UP = "intercept_bytes_up", DECRYPTED_BYTES("up");
    /// Bytes relayed server → client.
    INTERCEPT_BYTES_DOWN = "intercept_bytes_down", DECRYPTED_BYTES("down");
    /// SYNs over admission's limit: the worker had `max_per_worker` splices.
    ADMISSION_WORKER_FULL = "admission_worker_full", ADMISSION_REFUSED("worker_full");
    /// SYNs over admission's limit: their source had its quota of half-open splices.
    ADMISSION_SOURCE_QUOTA = "admission_source_quota", ADMISSION_REFUSED("source_quota");
    /// SYNs over admission's limit: the worker's memory budget was spent.
    ADMISSION_BUDGET = "admission_memory_budget", ADMISSION_REFUSED("memory_budget");
    /// SYNs over a limit forwarded uninspected (`over_limit = "forward"`).
    OVER_LIMIT_FORWARDED = "over_limit_forwarded", OVER_LIMIT("forwarded");
    /// SYNs over a limit answered with a RST (`over_limit = "reset"`).
    OVER_LIMIT_RESET = "over_limit_reset", OVER_LIMIT("reset");
    /// Half-open splices (no payload byte yet), gauge.
    HALF_OPEN = "half_open", HALF_OPEN("");
    /// Bytes charged to the worker's memory budget, gauge.
    MEMORY_CHARGED = "memory_charged_bytes", MEMORY_CHARGED("");
    /// Splices that got full buffers when used.
    GROWN = "buffers_grown", BUFFERS("grown");
    /// Used splices kept on small buffers for a while (the budget was spent).
    GROW_DEFERRED = "buffers_grow_deferred", BUFFERS("grow_deferred");
    /// Doublings of a bulk transfer's buffers (half a send buffer in flight to a
    /// peer with a larger window; up to `intercept.buffer_max_kib`, within half
    /// of the memory budget).
    BUFFERS_DOUBLED = "buffers_doubled", BUFFERS("doubled");
    /// Times a splice whose buffers grew gave send buffers back after 2 s
    /// without data (again after each quiet spell that follows a burst).
    BUFFERS_SHRUNK = "buffers_shrunk", BUFFERS("shrunk");
    /// SYNs from the outside port (never intercepted; policy blocks apply).
    INBOUND_NOT_INTERCEPTED = "inbound_not_intercepted", INBOUND("");
    /// TCP to or from a TLS port without a SYN seen, answered with a RST.
    MIDSTREAM_RESET = "midstream_reset", MIDSTREAM_RESET("");
    /// TLS flows whose client bytes were not a ClientHello the appliance reads.
    UNDECRYPTABLE_NOT_TLS = "undecryptable_not_tls", UNDECRYPTABLE("not_tls");
    /// TLS flows with more than 64 KiB and no complete ClientHello.
    UNDECRYPTABLE_TOO_LARGE = "undecryptable_hello_too_large", UNDECRYPTABLE("hello_too_large");
    /// TLS flows whose client closed before its ClientHello was complete.
    UNDECRYPTABLE_INCOMPLETE = "undecryptable_hello_incomplete", UNDECRYPTABLE("hello_incomplete");
    /// Intercepted TLS flows whose sessions came up on both legs (decrypted).
    TLS_DECRYPTED = "tls_decrypted", VERDICTS("decrypted");
    /// TLS interceptions aborted (server leg or client leg failed).
    TLS_ABORTED = "tls_aborted", VERDICTS("aborted");
    /// TLS flows passed through undecrypted (not a ClientHello we can read).
    TLS_PASSED = "tls_passed", VERDICTS("passed");
    /// TLS flows not decrypted by an SNI rule (relayed untouched).
    TLS_NOT_DECRYPTED = "tls_not_decrypted", VERDICTS("not_decrypted");
    /// TLS flows passed undecrypted because their server's leg failed before.
    TLS_PASSED_REMEMBERED = "tls_passed_remembered", VERDICTS("passed_remembered");
    /// Flows passed undecrypted by a learned exclusion.
    TLS_PASSED_EXCLUDED = "tls_passed_excluded", VERDICTS("passed_excluded");
    /// SYNs the policy blocked (answered with RST).
    POLICY_BLOCKED = "policy_blocked", VERDICTS("blocked_at_syn");
    /// SYNs from the inside to a TLS port that a do-not-decrypt decision at SYN
    /// (a rule without `sni`, or the default action) forwarded uninspected.
    SYN_NOT_DECRYPTED = "syn_not_decrypted", VERDICTS("not_decrypted_at_syn");
    /// TLS flows blocked after the ClientHello (SNI rule, undecryptable = block,
    /// unproved SNI, no signer).
    TLS_BLOCKED = "tls_blocked", VERDICTS("blocked_after_hello");
    /// Flows the policy would decrypt, forwarded because no `[tls]` is configured.
    POLICY_NO_TLS = "policy_decrypt_without_tls", POLICY_NO_TLS("");
    /// TLS flows decrypted although their server's chain failed verification
    /// (certificate validation off).
    TLS_UNVERIFIED = "tls_unverified", TLS_SESSIONS("unverified");
    /// Flows whose server certificate failed a check whose action is `untrust`
    /// (the client got a certificate from the untrust CA).
    TLS_UNTRUSTED = "tls_untrusted", TLS_SESSIONS("untrusted");
    /// TLS interceptions aborted because the server's certificate failed a
    /// check whose action is `block` (counted in `tls_aborted` too).
    TLS_ABORTED_CERTIFICATE = "tls_aborted_certificate", TLS_SESSIONS("aborted_certificate");
    /// Decrypted flows that then ended with an abort (a TLS error while relaying;
    /// counted in `tls_aborted` too).
    TLS_ABORTED_AFTER_DECRYPT = "tls_aborted_after_decrypt", TLS_SESSIONS("aborted_after_decrypt");
    /// TLS flows relayed undecrypted because the signer was unreachable or
    /// overloaded (`signer_unavailable = "pass"`; counted in `tls_passed` too).
    TLS_PASSED_SIGNER = "tls_passed_signer_unavailable", TLS_SESSIONS("passed_signer_unavailable");
    /// Decrypted flows whose server leg resumed a session (no certificate sent).
    TLS_SERVER_RESUMED = "tls_server_resumed", TLS_SESSIONS("server_resumed");
    /// Decrypted flows whose client resumed its session with the appliance.
    TLS_CLIENT_RESUMED = "tls_client_resumed", TLS_SESSIONS("client_resumed");
    /// Server chains accepted from the verifier's cache of verified chains.
    TLS_CHAIN_CACHED = "tls_chain_cached", TLS_SESSIONS("chain_cached");
    /// Forged certificates answered from the worker's cache.
    FORGE_HITS = "forge_cache_hits", FORGE("hit");
    /// Forged certificates made (cache misses).
    FORGE_MISSES = "forge_cache_misses", FORGE("miss");
    /// Probes started (the appliance's own handshakes with servers).
    PROBES_STARTED = "probes_started", PROBES("started");
    /// Probes not started: a limit (per source, per destination, in flight, free
    /// ports) or no port owned by this worker; the flow counts its name unproved.
    PROBES_REFUSED = "probes_refused", PROBES("refused");
    /// Probes whose server proved the name (its certificate valid for the SNI).
    PROBES_PROVED = "probes_proved", PROBES("proved");
    /// Probes whose server did not prove the name (or failed).
    PROBES_NOT_PROVED = "probes_not_proved", PROBES("not_proved");
    /// Probes that confirmed an unsupported mode: a learned exclusion was made.
    EXCLUSIONS_LEARNED = "exclusions_learned", PROBES("exclusion_learned");
    /// Probes that did not confirm a server-leg failure: no exclusion.
    PROBES_NOT_CONFIRMED = "probes_not_confirmed", PROBES("not_confirmed");
    /// Flows whose SNI matched a do-not-decrypt rule the server did not prove.
    SNI_UNPROVED = "sni_unproved", SNI_UNPROVED("");
}

/// Counters after [`MALFORMED_BASE`] kept for the parser's reasons.
pub const MALFORMED_SLOTS: usize = 32;

/// Length of a worker's counter array.
pub const COUNT: usize = MALFORMED_BASE + MALFORMED_SLOTS;

impl Counter {
    /// What it counts, one line.
    pub fn help(&self) -> &'static str {
        self.doc.trim()
    }
}

/// The counter called `name`.
pub fn by_name(name: &str) -> Option<&'static Counter> {
    COUNTERS.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_table_is_consistent() {
        assert_eq!(COUNTERS.len(), MALFORMED_BASE);
        let names: BTreeSet<_> = COUNTERS.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), COUNTERS.len(), "names are unique");
        let series: BTreeSet<_> = COUNTERS.iter().map(|c| (c.family.name, c.label)).collect();
        assert_eq!(series.len(), COUNTERS.len(), "each counter is its own series");
        for c in COUNTERS {
            assert!(!c.help().is_empty(), "{} has help", c.name);
            assert_eq!(
                c.label.is_empty(),
                c.family.label.is_empty(),
                "{}: label of {}",
                c.name,
                c.family.name
            );
            assert_eq!(
                c.family.kind == Kind::Counter,
                c.family.name.ends_with("_total"),
                "{}",
                c.family.name
            );
            assert!(c.family.name.starts_with("tlsgate_"), "{}", c.family.name);
        }
    }

    #[test]
    fn port_counters_are_inside_then_outside() {
        for (i, o) in [
            (idx::RX_PKTS_INSIDE, idx::RX_PKTS_OUTSIDE),
            (idx::RX_BYTES_INSIDE, idx::RX_BYTES_OUTSIDE),
            (idx::TX_PKTS_INSIDE, idx::TX_PKTS_OUTSIDE),
            (idx::TX_BYTES_INSIDE, idx::TX_BYTES_OUTSIDE),
        ] {
            assert_eq!(o, i + 1);
            assert_eq!((COUNTERS[i].label, COUNTERS[o].label), ("inside", "outside"));
        }
        assert_eq!(by_name("tls_decrypted").map(|c| c.family.name), Some("tlsgate_flow_verdicts_total"));
    }
}
