//! Counter reports carried by [`crate::Response::Stats`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters of one worker (one lcore).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Worker index (= RX/TX queue index on both ports).
    pub worker: u32,
    /// Frames received per port (index 0 = inside, 1 = outside).
    pub rx_packets: [u64; 2],
    /// Bytes received per port.
    pub rx_bytes: [u64; 2],
    /// Frames transmitted per port.
    pub tx_packets: [u64; 2],
    /// Bytes transmitted per port.
    pub tx_bytes: [u64; 2],
    /// Frames dropped, by reason (`ipv4_truncated`, `tx_full`, `flow_table_full`, …).
    pub drops: BTreeMap<String, u64>,
    /// Flows in the table now.
    pub flows_active: u64,
    /// Flows created since start.
    pub flows_created: u64,
    /// Flows removed by idle timeout since start.
    pub flows_expired: u64,
    /// TCP segments of a connection without state (no SYN seen), forwarded untracked.
    pub untracked_midstream: u64,
    /// Frames forwarded untracked because the flow table was full (fail-open alarm).
    pub untracked_table_full: u64,
    /// IP fragments forwarded untracked (steered by the address pair).
    pub untracked_fragments: u64,
    /// Frames handed to another worker (software steering).
    pub handover_out: u64,
    /// Frames received from other workers.
    pub handover_in: u64,
    /// Bursts handed over (each hand-over moves a whole burst).
    pub handover_bursts: u64,
    /// Main-loop iterations that found no work.
    pub idle_polls: u64,
    /// Nanoseconds spent in loop iterations that found work (busy time).
    #[serde(default)]
    pub busy_ns: u64,
    /// Malformed frames forwarded anyway (`malformed = "forward"`).
    pub malformed_forwarded: u64,
    /// Intercepted (terminated) flows: `created`, `active`, `closed`,
    /// `server_refused`, `reset`, `timeout`, `bytes_up`, `bytes_down`, admission
    /// (`half_open`, `admission_*`, `over_limit_*`, `first_byte_timeout`, …).
    #[serde(default)]
    pub intercept: BTreeMap<String, u64>,
    /// Decisions per policy rule (by rule name; `(default)` for the default action).
    #[serde(default)]
    pub rule_hits: BTreeMap<String, u64>,
}

/// Counters of one port, read from the backend (DPDK: `rte_eth_stats` and xstats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    /// Port index (0 = inside, 1 = outside).
    pub port: u32,
    /// Role name (`inside`, `outside`).
    pub role: String,
    /// Device name (`net_af_packet0`, `0000:03:00.0`, a pcap file…).
    pub device: String,
    /// Link up.
    pub link_up: bool,
    /// Link speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Frames received by the device.
    pub ipackets: u64,
    /// Frames sent by the device.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames the device dropped because RX queues were full (DPDK `imissed`).
    pub imissed: u64,
    /// RX mbuf allocation failures (DPDK `rx_nombuf`).
    pub rx_nombuf: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Driver-specific extended statistics (DPDK xstats), non-zero ones only.
    pub xstats: BTreeMap<String, u64>,
}
