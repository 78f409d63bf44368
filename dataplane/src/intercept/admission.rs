//! Admission: what a new intercepted flow may cost, so that a flood cannot spend a
//! worker's memory or switch inspection off.
//!
//! ```text
//!  SYN (inside port, to be intercepted)
//!    ├─ worker at intercept.max_per_worker splices ─────┐
//!    ├─ source (IPv4 address, IPv6 /64) at its quota ───┼─► over_limit: drop (default) | reset | forward
//!    ├─ memory budget cannot hold a half-open splice ───┘      (counted; forward also gets an event)
//!    └─ admitted: a half-open splice with small buffers, holding one slot of its
//!       source's quota ─► first payload byte (either side): full buffers (budget
//!       permitting), slot released ─► no byte within first_byte_timeout_s: reset
//! ```
//!
//! Small until used: a half-open splice costs a few KiB (its four buffers are
//! small; the window scale it offers is the largest buffer's it may grow to,
//! patched smoltcp), and gets its full buffers when data flows. A bulk transfer's
//! buffers may double beyond (`intercept.buffer_max_kib`), charged only within
//! the first half of the budget.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::Error;
use serde::Deserialize;
use tlsgate_api::AdmissionReason;

/// What a SYN over a limit gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    /// Dropped: fails closed, lets real clients retry, and answers nothing to a
    /// spoofed source.
    #[default]
    Drop,
    /// Answered with a RST (clients learn at once).
    Reset,
    /// Forwarded uninspected: must be chosen, and each such flow is counted and
    /// gets an event.
    Forward,
}

/// `[admission]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Half-open splices (SYN seen, no payload byte yet) per client address on a
    /// worker; IPv6 clients are counted per /64.
    pub half_open_per_source: u32,
    /// Client addresses or prefixes (`198.18.0.10`, `2001:db8::/48`) of NAT
    /// gateways or proxies, behind which many clients share one address.
    pub nat_sources: Vec<String>,
    /// The quota of each `nat_sources` address.
    pub half_open_per_nat_source: u32,
    /// Memory a worker may spend on its splices (buffers and state), MiB.
    pub memory_budget_mib: u64,
    /// Seconds a connection may stay without a payload byte either way; then both
    /// legs are reset (and it frees its slot of the quota).
    pub first_byte_timeout_s: u64,
    /// What a SYN over a limit gets.
    pub over_limit: OverLimit,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            half_open_per_source: 256,
            nat_sources: Vec::new(),
            half_open_per_nat_source: 8192,
            memory_budget_mib: 1024,
            first_byte_timeout_s: 10,
            over_limit: OverLimit::Drop,
        }
    }
}

impl AdmissionConfig {
    /// Range checks and the NAT prefixes; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.half_open_per_source == 0 {
            return Err(Error::Invalid("admission.half_open_per_source: must be at least 1".into()));
        }
        if self.half_open_per_nat_source < self.half_open_per_source {
            return Err(Error::Invalid(
                "admission.half_open_per_nat_source: below half_open_per_source".into(),
            ));
        }
        if !(16..=1 << 20).contains(&self.memory_budget_mib) {
            return Err(Error::Invalid(format!(
                "admission.memory_budget_mib: {} is outside 16..=1048576",
                self.memory_budget_mib
            )));
        }
        if !(1..=300).contains(&self.first_byte_timeout_s) {
            return Err(Error::Invalid(format!(
                "admission.first_byte_timeout_s: {} is outside 1..=300",
                self.first_byte_timeout_s
            )));
        }
        self.nat_prefixes().map(|_| ())
    }

    fn nat_prefixes(&self) -> Result<Vec<(u128, u8, bool)>, Error> {
        self.nat_sources
            .iter()
            .map(|s| {
                let (addr, len) = match s.split_once('/') {
                    Some((a, l)) => (a, Some(l)),
                    None => (s.as_str(), None),
                };
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| Error::Invalid(format!("admission.nat_sources: {s:?} is not an address")))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len = match len {
                    None => max,
                    Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
                        Error::Invalid(format!(
                            "admission.nat_sources: {s:?}: prefix length outside 0..={max}"
                        ))
                    })?,
                };
                Ok((addr_bits(ip), len + if ip.is_ipv4() { 96 } else { 0 }, ip.is_ipv4()))
            })
            .collect()
    }
}

/// An address as 128 bits (IPv4 mapped into the low 32 bits of ::ffff:0:0/96).
fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The bits of `len` leading bits.
fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// The key a client address is counted under: the address (IPv4), its /64 (IPv6).
pub fn source_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(_) => addr_bits(ip),
        IpAddr::V6(_) => addr_bits(ip) & mask(64),
    }
}

/// What a splice is charged against the budget: its buffers and an allowance
/// for its stack and TLS state.
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    /// A half-open splice (small buffers).
    pub half_open: u64,
    /// A splice in use (full buffers, TLS sessions).
    pub full: u64,
}

/// A worker's admission state: half-open splices per source, memory spent.
pub struct Admission {
    cfg: AdmissionConfig,
    nat: Vec<(u128, u8)>,
    half_open: HashMap<u128, u32>,
    /// Bytes charged for the worker's splices.
    pub memory: u64,
    budget: u64,
    /// The charges.
    pub costs: Costs,
}

impl Admission {
    /// With `[admission]` (validated) and the charges of a splice.
    pub fn new(cfg: AdmissionConfig, costs: Costs) -> Self {
        let nat = cfg.nat_prefixes().unwrap_or_default().into_iter().map(|(a, l, _)| (a, l)).collect();
        let budget = cfg.memory_budget_mib << 20;
        Admission { cfg, nat, half_open: HashMap::new(), memory: 0, budget, costs }
    }

    /// What a SYN over a limit gets.
    pub fn over_limit(&self) -> OverLimit {
        self.cfg.over_limit
    }

    /// Milliseconds a connection may wait for its first payload byte.
    pub fn first_byte_timeout_ms(&self) -> u64 {
        self.cfg.first_byte_timeout_s * 1000
    }

    /// Half-open splices of all sources.
    pub fn half_open(&self) -> u64 {
        self.half_open.values().map(|n| u64::from(*n)).sum()
    }

    fn quota(&self, key: u128) -> u32 {
        if self.nat.iter().any(|(p, l)| key & mask(*l) == *p & mask(*l)) {
            self.cfg.half_open_per_nat_source
        } else {
            self.cfg.half_open_per_source
        }
    }

    /// Admits a half-open splice from `source` (its key), charging the budget and
    /// taking a slot of the source's quota; or the limit it meets.
    pub fn admit(&mut self, source: u128) -> Result<(), AdmissionReason> {
        let held = self.half_open.get(&source).copied().unwrap_or(0);
        if held >= self.quota(source) {
            return Err(AdmissionReason::SourceQuota);
        }
        if self.memory + self.costs.half_open > self.budget {
            return Err(AdmissionReason::MemoryBudget);
        }
        *self.half_open.entry(source).or_insert(0) += 1;
        self.memory += self.costs.half_open;
        Ok(())
    }

    /// Gives back a slot of `source`'s quota (the splice was used, or ended).
    pub fn release_slot(&mut self, source: u128) {
        if let Some(n) = self.half_open.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.half_open.remove(&source);
            }
        }
    }

    /// Charges a splice's growth to full buffers, if the budget holds it.
    pub fn grow(&mut self) -> bool {
        let more = self.costs.full - self.costs.half_open;
        if self.memory + more > self.budget {
            return false;
        }
        self.memory += more;
        true
    }

    /// Charges `more` bytes of a bulk transfer's larger buffers, if the worker's
    /// splices then hold at most half of the budget: the other half stays for
    /// admitting and using new splices, so flows that fill their buffers (a slow
    /// reader, on purpose or not) cannot crowd new ones out.
    pub fn grow_bulk(&mut self, more: u64) -> bool {
        if self.memory + more > self.budget / 2 {
            return false;
        }
        self.memory += more;
        true
    }

    /// Gives back `bytes` of a bulk charge that was not used, or of a splice that
    /// ended.
    pub fn release_bulk(&mut self, bytes: u64) {
        debug_assert!(self.memory >= bytes, "released more than was charged");
        self.memory = self.memory.saturating_sub(bytes);
    }

    /// A splice ended: its charge (`grown`: it had full buffers) comes back.
    pub fn release_memory(&mut self, grown: bool) {
        let charge = if grown { self.costs.full } else { self.costs.half_open };
        debug_assert!(self.memory >= charge, "released more than was charged");
        self.memory = self.memory.saturating_sub(charge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adm(cfg: AdmissionConfig) -> Admission {
        cfg.validate().unwrap();
        Admission::new(cfg, Costs { half_open: 8 << 10, full: 300 << 10 })
    }

    #[test]
    fn a_source_has_its_quota_and_ipv6_counts_per_64() {
        let mut a = adm(AdmissionConfig { half_open_per_source: 2, ..Default::default() });
        let v4 = source_key("198.18.0.1".parse().unwrap());
        assert_eq!((a.admit(v4), a.admit(v4)), (Ok(()), Ok(())));
        assert_eq!(a.admit(v4), Err(AdmissionReason::SourceQuota));
        assert_eq!(a.admit(source_key("198.18.0.3".parse().unwrap())), Ok(()), "another client");
        // Two addresses of one /64 share a quota; another /64 has its own.
        let x = source_key("2001:db8:0:1::1".parse().unwrap());
        let y = source_key("2001:db8:0:1:ffff::9".parse().unwrap());
        assert_eq!(x, y);
        assert_eq!((a.admit(x), a.admit(y), a.admit(x)), (Ok(()), Ok(()), Err(AdmissionReason::SourceQuota)));
        assert_eq!(a.admit(source_key("2001:db8:0:2::1".parse().unwrap())), Ok(()));
        // A slot given back is taken again.
        a.release_slot(v4);
        assert_eq!(a.admit(v4), Ok(()));
        assert_eq!(a.half_open(), 6);
    }

    #[test]
    fn nat_sources_have_a_larger_quota() {
        let cfg = AdmissionConfig {
            half_open_per_source: 1,
            half_open_per_nat_source: 3,
            nat_sources: vec!["198.18.0.10".into(), "2001:db8:ff00::/40".into()],
            ..Default::default()
        };
        let mut a = adm(cfg);
        let nat = source_key("198.18.0.10".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(a.admit(nat), Ok(()));
        }
        assert_eq!(a.admit(nat), Err(AdmissionReason::SourceQuota));
        let v6 = source_key("2001:db8:ff12:3::1".parse().unwrap());
        assert!((0..3).all(|_| a.admit(v6).is_ok()));
        let other = source_key("198.18.0.11".parse().unwrap());
        assert_eq!((a.admit(other), a.admit(other)), (Ok(()), Err(AdmissionReason::SourceQuota)));
    }

    #[test]
    fn the_budget_bounds_half_open_and_growing_splices() {
        let mut a = adm(AdmissionConfig {
            half_open_per_source: 100_000,
            half_open_per_nat_source: 100_000,
            memory_budget_mib: 16,
            ..Default::default()
        });
        // 16 MiB / 8 KiB: 2048 half-open splices, then the budget says no.
        let mut admitted = 0;
        while a.admit(source_key("198.18.0.1".parse().unwrap())).is_ok() {
            admitted += 1;
        }
        assert_eq!(admitted, 2048);
        assert_eq!(a.admit(source_key("198.18.0.2".parse().unwrap())), Err(AdmissionReason::MemoryBudget));
        assert!(!a.grow(), "no room to grow");
        for _ in 0..100 {
            a.release_memory(false);
        }
        assert!(a.grow(), "room for one full splice");
        a.release_memory(true);
        // The grown splice was one of the half-open ones: its charge left with it.
        assert_eq!(a.memory, (2048 - 101) * (8 << 10));
    }

    #[test]
    fn larger_buffers_of_bulk_transfers_take_at_most_half_of_the_budget() {
        let mut a = adm(AdmissionConfig { memory_budget_mib: 16, ..Default::default() });
        let mut doubled = 0u64;
        while a.grow_bulk(1 << 20) {
            doubled += 1;
        }
        assert_eq!((doubled, a.memory), (8, 8 << 20), "half of 16 MiB");
        // The other half still admits and grows splices.
        assert_eq!(a.admit(source_key("198.18.0.1".parse().unwrap())), Ok(()));
        assert!(a.grow());
        a.release_bulk(8 << 20);
        a.release_memory(true);
        assert_eq!(a.memory, 0);
    }

    #[test]
    fn bad_settings_are_named() {
        for (cfg, field) in [
            (AdmissionConfig { half_open_per_source: 0, ..Default::default() }, "half_open_per_source"),
            (AdmissionConfig { memory_budget_mib: 1, ..Default::default() }, "memory_budget_mib"),
            (AdmissionConfig { first_byte_timeout_s: 0, ..Default::default() }, "first_byte_timeout_s"),
            (AdmissionConfig { nat_sources: vec!["nat-gw".into()], ..Default::default() }, "nat_sources"),
            (
                AdmissionConfig { nat_sources: vec!["10.0.0.0/33".into()], ..Default::default() },
                "nat_sources",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
    }
}
