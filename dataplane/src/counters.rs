//! Per-worker counters.
//!
//! A worker counts into a plain array it owns (no atomics, no sharing on the hot
//! path) and publishes a copy into its [`Published`] block every few milliseconds
//! with relaxed stores; readers (stats line, status socket) read that copy.

use std::sync::atomic::{AtomicU64, Ordering};

use tlsgate_api::counters::{families, COUNTERS};
use tlsgate_api::WorkerStats;

use crate::wire::parse::Malformed;

/// Counter indexes: the table's ([`tlsgate_api::counters::idx`]) and the
/// per-port bases this crate adds `port` (0 inside, 1 outside) to.
pub mod idx {
    pub use tlsgate_api::counters::idx::*;
    pub use tlsgate_api::counters::MALFORMED_BASE;

    /// Frames received: `RX_PKTS + port`.
    pub const RX_PKTS: usize = RX_PKTS_INSIDE;
    /// Bytes received: `RX_BYTES + port`.
    pub const RX_BYTES: usize = RX_BYTES_INSIDE;
    /// Frames sent: `TX_PKTS + port`.
    pub const TX_PKTS: usize = TX_PKTS_INSIDE;
    /// Bytes sent: `TX_BYTES + port`.
    pub const TX_BYTES: usize = TX_BYTES_INSIDE;
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
pub use tlsgate_api::counters::COUNT;

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

    /// The report for the status channel: every counter of the table by name,
    /// the drops by reason.
    pub fn report(&self, worker: u32) -> WorkerStats {
        let mut counters = std::collections::BTreeMap::new();
        let mut drops = std::collections::BTreeMap::new();
        for (i, c) in COUNTERS.iter().enumerate() {
            let v = self.get(i);
            counters.insert(c.name.to_string(), v);
            if std::ptr::eq(c.family, &families::DROPS) && v != 0 {
                drops.insert(c.label.to_string(), v);
            }
        }
        for r in Malformed::ALL {
            let v = self.get(idx::MALFORMED_BASE + *r as usize);
            if v != 0 {
                drops.insert(r.name().to_string(), v);
            }
        }
        WorkerStats {
            worker,
            counters,
            drops,
            rule_hits: self.rules.lock().map(|r| r.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_malformed_reason_has_a_counter() {
        assert!(Malformed::ALL.len() <= tlsgate_api::counters::MALFORMED_SLOTS);
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
        assert_eq!(r.per_port("rx_packets"), [0, 7]);
        assert_eq!(r.get("drop_tx_full"), 2);
        assert_eq!(r.counters.len(), COUNTERS.len());
        assert_eq!(r.drops.len(), 2);
    }

    /// The source of this crate, without this file and test files: (path, text).
    fn sources() -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for e in std::fs::read_dir(dir).expect("src").flatten() {
                let p = e.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
                if p.is_dir() {
                    if name != "tests" {
                        walk(&p, out);
                    }
                } else if name.ends_with(".rs") && name != "counters.rs" && name != "tests.rs" {
                    out.push((p.display().to_string(), std::fs::read_to_string(&p).expect("read")));
                }
            }
        }
        let mut out = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out
    }

    /// Whether `line` counts into `idx::{ident}`: adds to it, sets it (gauges),
    /// or names it as the index a count goes to (`(cond, idx::X)`, `=> idx::X`).
    fn counts(line: &str, ident: &str) -> bool {
        let needle = format!("idx::{ident}");
        let Some(at) = line.find(&needle) else { return false };
        let after = &line[at + needle.len()..];
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return false;
        }
        let before = &line[..at];
        after.trim_start().starts_with("] +=")
            || after.trim_start().starts_with("] -=")
            || after.trim_start().starts_with("] =")
            || after.trim_start().starts_with("+ port] +=")
            || (before.trim_end().ends_with(',') && before.contains('('))
            || before.trim_end().ends_with("=>")
            || (before.contains("(c[") && line.contains(") ="))
    }

    #[test]
    fn every_counter_is_counted_somewhere() {
        let src = sources();
        assert!(src.len() > 20, "found the crate's source");
        let mut missing = Vec::new();
        for c in COUNTERS {
            // Per-port counters are counted as `idx::RX_PKTS + port`.
            let base = c.ident.trim_end_matches("_INSIDE").trim_end_matches("_OUTSIDE");
            if !src.iter().any(|(_, text)| text.lines().any(|l| counts(l, c.ident) || counts(l, base))) {
                missing.push(c.ident);
            }
        }
        assert!(missing.is_empty(), "counters never counted in dataplane/src: {missing:?}");
        assert!(counts("        self.io.c[idx::DROP_TX_FULL] += 1;", "DROP_TX_FULL"));
        assert!(!counts("        let x = self.get(idx::DROP_TX_FULL);", "DROP_TX_FULL"));
        assert!(!counts("        self.io.c[idx::DROP_TX_FULL_X] += 1;", "DROP_TX_FULL"));
    }
}
