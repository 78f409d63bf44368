//! Counter reports carried by [`crate::Response::Stats`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters of one worker (one lcore).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Worker index (= RX/TX queue index on both ports).
    pub worker: u32,
    /// Every counter of [`crate::counters::COUNTERS`], by its name
    /// (`rx_packets_inside`, `flows_created`, `tls_decrypted`, …).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Frames dropped, by reason: the parser's malformed reasons
    /// (`ipv4_truncated`, …) and the drop counters' labels (`tx_full`,
    /// `flow_table_full`, …); reasons that counted nothing are left out.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Decisions per policy rule (by rule name; `(default)` for the default action).
    #[serde(default)]
    pub rule_hits: BTreeMap<String, u64>,
}

impl WorkerStats {
    /// The counter called `name` (0 when absent).
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// A per-port counter (`rx_packets`, `rx_bytes`, `tx_packets`, `tx_bytes`):
    /// `[inside, outside]`.
    pub fn per_port(&self, name: &str) -> [u64; 2] {
        [self.get(&format!("{name}_inside")), self.get(&format!("{name}_outside"))]
    }
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
