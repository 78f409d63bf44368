//! Compiled matching: a [`Policy`] turned into sorted boundary arrays whose segments
//! point at interned rule bitsets, so a decision is three lookups, an AND of three
//! bitsets and a scan for the first set bit.
//!
//! ```text
//!  source addr ──radix + bsearch──► segment ──► bitset S ┐
//!  dest addr   ──radix + bsearch──► segment ──► bitset D ├─ S & D & P ─► first set bit = rule
//!  dest port   ──radix + bsearch──► segment ──► bitset P ┘   (SNI rules: check patterns, go on)
//! ```
//!
//! Bit `r` of a bitset is rule `r` (policy order), so the lowest set bit is the first
//! match. A rule without a condition on a dimension is set in every segment of it.
//! Segments with equal rule sets share one stored bitset (interned by a running XOR
//! hash), which keeps memory proportional to the distinct sets, not the segments. A
//! summary word per 64 words lets the AND skip words that are zero in any dimension.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::model::{
    Action, CertificateActions, DecryptionSettings, EchAction, MidstreamAction, Policy, QuicAction,
    UndecryptableAction, UnprovedSniAction,
};
use crate::parse::{address_key, Family, SniPattern};
use crate::resolve::{self, Resolved};

/// A rule by its position in the policy (0-based); its name is
/// [`CompiledPolicy::rule_name`]. Small and `Copy`, so a flow can keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u32);

impl RuleId {
    /// The rule at this 0-based position.
    pub fn new(index: u32) -> RuleId {
        RuleId(index)
    }

    /// The 0-based position of the rule in the policy.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What to do with a TCP SYN to a server, before any SNI is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SynAction {
    /// Forward the flow on the fast path, never terminated (`do-not-decrypt`, or not a
    /// TLS port). `rule: None` is the default action or a port outside `tls_ports`.
    Bypass { rule: Option<RuleId> },
    /// Refuse the flow: answer the SYN with RST.
    Block { rule: Option<RuleId> },
    /// Terminate and decrypt; the SNI cannot change this.
    Decrypt { rule: Option<RuleId> },
    /// An SNI rule may match: terminate TCP, read the ClientHello and ask
    /// [`CompiledPolicy::decide_with_sni`].
    Intercept,
}

/// A SYN decision with the configuration version it was made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynDecision {
    /// What to do.
    pub action: SynAction,
    /// The policy version, to stamp on the flow's events.
    pub version: u64,
}

/// A full decision (with the SNI when there is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// The matching rule; `None` for the default action or a port outside `tls_ports`.
    pub rule: Option<RuleId>,
    /// The policy version, to stamp on the flow's events.
    pub version: u64,
}

/// Maps SYN-time matches to [`SynAction`]; shared with the linear reference.
pub(crate) fn syn_action(action: Action, rule: Option<RuleId>) -> SynAction {
    match action {
        Action::Decrypt => SynAction::Decrypt { rule },
        Action::DoNotDecrypt => SynAction::Bypass { rule },
        Action::Block => SynAction::Block { rule },
    }
}

pub(crate) fn rule_id(index: usize) -> RuleId {
    RuleId(index as u32)
}

/// A policy ready to decide with; immutable, shared by workers through an `Arc`.
pub struct CompiledPolicy {
    version: u64,
    policy: Arc<Policy>,
    actions: Vec<Action>,
    sni: Vec<Option<Box<[SniPattern]>>>,
    ja4: Vec<Option<Box<[String]>>>,
    source: AddrIndex,
    destination: AddrIndex,
    ports: IntervalIndex,
    tls_ports: PortBitmap,
}

impl CompiledPolicy {
    /// Validates and compiles `policy` as configuration `version`.
    pub fn compile(policy: impl Into<Arc<Policy>>, version: u64) -> Result<CompiledPolicy, Error> {
        let policy: Arc<Policy> = policy.into();
        let Resolved { rules, tls_ports } = resolve::resolve(&policy)?;
        let words = rules.len().div_ceil(64);
        let source = AddrIndex::build(words, rules.iter().map(|r| r.source.as_deref()));
        let destination = AddrIndex::build(words, rules.iter().map(|r| r.destination.as_deref()));
        let port_intervals: Vec<Option<Vec<(u128, u128)>>> = rules
            .iter()
            .map(|r| {
                r.ports.as_ref().map(|p| p.iter().map(|&(a, b)| (u128::from(a), u128::from(b))).collect())
            })
            .collect();
        let ports =
            IntervalIndex::build(words, u128::from(u16::MAX), port_intervals.iter().map(|p| p.as_deref()));
        let actions: Vec<Action> = rules.iter().map(|r| r.action).collect();
        let ja4 = rules.iter().map(|r| r.ja4.clone().map(Vec::into_boxed_slice)).collect();
        let sni = rules.into_iter().map(|r| r.sni.map(Vec::into_boxed_slice)).collect();
        let tls_ports = PortBitmap::new(&tls_ports);
        Ok(CompiledPolicy { version, policy, actions, sni, ja4, source, destination, ports, tls_ports })
    }

    /// The configuration version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The policy this was compiled from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.actions.len()
    }

    /// The name of a rule from a decision.
    pub fn rule_name(&self, rule: RuleId) -> Option<&str> {
        self.policy.rules.get(rule.index()).map(|r| r.name.as_str())
    }

    /// The decryption settings.
    pub fn settings(&self) -> &DecryptionSettings {
        &self.policy.settings
    }

    /// Whether server certificates are verified; when `false` the dataplane should say
    /// so loudly (at load and on each decrypted flow's event).
    pub fn certificate_validation(&self) -> bool {
        self.policy.settings.certificate_validation
    }

    /// What happens to undecryptable TLS.
    pub fn undecryptable(&self) -> UndecryptableAction {
        self.policy.settings.undecryptable
    }

    /// What each failed server-certificate check leads to.
    pub fn certificate_actions(&self) -> CertificateActions {
        self.policy.settings.certificate_actions
    }

    /// What happens to TCP to or from a TLS port without a SYN seen.
    pub fn midstream(&self) -> MidstreamAction {
        self.policy.settings.midstream
    }

    /// What happens to a ClientHello offering ECH.
    pub fn ech(&self) -> EchAction {
        self.policy.settings.ech
    }

    /// What happens to QUIC a `decrypt` rule matches by address and port.
    pub fn quic(&self) -> QuicAction {
        self.policy.settings.quic
    }

    /// How long a server-leg failure is remembered.
    pub fn undecryptable_memory(&self) -> Duration {
        Duration::from_secs(self.policy.settings.undecryptable_memory_s)
    }

    /// Whether `port` is one of the `tls_ports`.
    pub fn is_tls_port(&self, port: u16) -> bool {
        self.tls_ports.contains(port)
    }

    /// The decision at SYN: the first rule whose address and port conditions match
    /// decides; if that rule has an SNI condition the answer is
    /// [`SynAction::Intercept`]. No match: the default action. A port outside
    /// `tls_ports` is always `Bypass { rule: None }`.
    pub fn decide_at_syn(&self, src: IpAddr, dst: IpAddr, dst_port: u16) -> SynDecision {
        let version = self.version;
        if !self.is_tls_port(dst_port) {
            return SynDecision { action: SynAction::Bypass { rule: None }, version };
        }
        let action = match self.candidates(src, dst, dst_port).next() {
            Some(index) if self.needs_hello(index) => SynAction::Intercept,
            Some(index) => syn_action(self.action(index), Some(rule_id(index))),
            None => syn_action(self.policy.default_action, None),
        };
        SynDecision { action, version }
    }

    /// The full decision: first match with the SNI (a rule with an SNI condition does
    /// not match when `sni` is `None`). A port outside `tls_ports` is
    /// `do-not-decrypt` with no rule.
    pub fn decide_with_sni(&self, src: IpAddr, dst: IpAddr, dst_port: u16, sni: Option<&str>) -> Verdict {
        self.decide_with_hello(src, dst, dst_port, sni, None)
    }

    /// The full decision with what the ClientHello said: its SNI and the client's
    /// JA4 fingerprint (a rule with an `sni` or a `ja4` condition does not match
    /// when that is `None`).
    pub fn decide_with_hello(
        &self,
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
        sni: Option<&str>,
        ja4: Option<&str>,
    ) -> Verdict {
        let version = self.version;
        if !self.is_tls_port(dst_port) {
            return Verdict { action: Action::DoNotDecrypt, rule: None, version };
        }
        let sni_matches = |index: &usize| match (self.sni.get(*index), sni) {
            (Some(Some(patterns)), Some(name)) => patterns.iter().any(|pattern| pattern.matches(name)),
            (Some(Some(_)), None) => false,
            _ => true,
        };
        let ja4_matches = |index: &usize| match (self.ja4.get(*index), ja4) {
            (Some(Some(prints)), Some(j)) => prints.iter().any(|p| p == j),
            (Some(Some(_)), None) => false,
            _ => true,
        };
        match self.candidates(src, dst, dst_port).find(|i| sni_matches(i) && ja4_matches(i)) {
            Some(index) => Verdict { action: self.action(index), rule: Some(rule_id(index)), version },
            None => Verdict { action: self.policy.default_action, rule: None, version },
        }
    }

    /// Whether a verdict exempts a flow only on the strength of its SNI: a
    /// do-not-decrypt rule with an SNI condition. The client only claims that name;
    /// the dataplane honours the rule once the server has proved it owns the name
    /// (its certificate, on the appliance's own handshake), and otherwise decides
    /// with [`CompiledPolicy::decide_unproved`].
    pub fn needs_proof(&self, v: &Verdict) -> bool {
        v.action == Action::DoNotDecrypt
            && v.rule.is_some_and(|r| matches!(self.sni.get(r.index()), Some(Some(_))))
    }

    /// The decision for a flow whose SNI was not proved: as if no SNI rule had
    /// matched (rules by JA4 alone still do).
    pub fn decide_unproved(&self, src: IpAddr, dst: IpAddr, dst_port: u16, ja4: Option<&str>) -> Verdict {
        self.decide_with_hello(src, dst, dst_port, None, ja4)
    }

    /// Whether rule `index` can only be decided with the ClientHello (an `sni`
    /// or a `ja4` condition).
    fn needs_hello(&self, index: usize) -> bool {
        matches!(self.sni.get(index), Some(Some(_))) || matches!(self.ja4.get(index), Some(Some(_)))
    }

    /// What an unproved SNI of a do-not-decrypt rule gets.
    pub fn unproved_sni(&self) -> UnprovedSniAction {
        self.policy.settings.unproved_sni
    }

    /// How long a learned exclusion lasts.
    pub fn exclusion_ttl(&self) -> Duration {
        Duration::from_secs(self.policy.settings.exclusion_ttl_s)
    }

    /// How long a proof of a server's name (or a failed one) is kept.
    pub fn probe_ttl(&self) -> Duration {
        Duration::from_secs(self.policy.settings.probe_ttl_s)
    }

    /// The rules whose address and port conditions match, in policy order.
    fn candidates(&self, src: IpAddr, dst: IpAddr, dst_port: u16) -> Candidates<'_> {
        let dims =
            [self.source.lookup(src), self.destination.lookup(dst), self.ports.lookup(u128::from(dst_port))];
        Candidates { dims, next_group: 0, group: 0, groups: 0, word: 0, bits: 0 }
    }

    /// Whether rule `index`'s bit is set in the source, destination and port
    /// bitsets of this flow's segments (explain: the same lookups as a decision).
    pub(crate) fn dimension_bits(
        &self,
        index: usize,
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
    ) -> (bool, bool, bool) {
        (
            self.source.lookup(src).has(index),
            self.destination.lookup(dst).has(index),
            self.ports.lookup(u128::from(dst_port)).has(index),
        )
    }

    /// Whether rule `index`'s SNI patterns match `name` (true without an `sni` condition).
    pub(crate) fn sni_matches(&self, index: usize, name: &str) -> bool {
        match self.sni.get(index) {
            Some(Some(patterns)) => patterns.iter().any(|p| p.matches(name)),
            _ => true,
        }
    }

    fn action(&self, index: usize) -> Action {
        self.actions.get(index).copied().unwrap_or(self.policy.default_action)
    }

    /// Bytes held by the compiled structures (not the source policy).
    pub fn memory_bytes(&self) -> usize {
        let sni: usize = self
            .sni
            .iter()
            .flatten()
            .map(|pats| {
                pats.iter().map(|p| std::mem::size_of::<SniPattern>() + p.heap_bytes()).sum::<usize>()
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.actions.capacity() * std::mem::size_of::<Action>()
            + self.sni.capacity() * std::mem::size_of::<Option<Box<[SniPattern]>>>()
            + sni
            + self.source.memory_bytes()
            + self.destination.memory_bytes()
            + self.ports.memory_bytes()
            + std::mem::size_of_val(&*self.tls_ports.0)
    }

    /// Boundaries (segments) and distinct bitsets per index, for the benchmark.
    pub fn index_stats(&self) -> IndexStats {
        let count = |i: &IntervalIndex| (i.starts.len(), i.set_count());
        IndexStats {
            source_v4: count(&self.source.v4),
            source_v6: count(&self.source.v6),
            destination_v4: count(&self.destination.v4),
            destination_v6: count(&self.destination.v6),
            ports: count(&self.ports),
        }
    }
}

impl fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("version", &self.version)
            .field("rules", &self.rule_count())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// `(segments, distinct bitsets)` for each index of a [`CompiledPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Source, IPv4.
    pub source_v4: (usize, usize),
    /// Source, IPv6.
    pub source_v6: (usize, usize),
    /// Destination, IPv4.
    pub destination_v4: (usize, usize),
    /// Destination, IPv6.
    pub destination_v6: (usize, usize),
    /// Destination port.
    pub ports: (usize, usize),
}

/// One stored bitset: its summary and its words (see [`IntervalIndex`]).
#[derive(Clone, Copy)]
struct Bits<'a> {
    summary: &'a [u64],
    words: &'a [u64],
}

impl Bits<'_> {
    /// Whether rule `index`'s bit is set.
    fn has(&self, index: usize) -> bool {
        self.words.get(index / 64).is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }
}

/// Iterates the rules set in all three bitsets, lowest first, visiting only words
/// whose summary bit is set in all three.
struct Candidates<'a> {
    dims: [Bits<'a>; 3],
    next_group: usize,
    group: usize,
    groups: u64,
    word: usize,
    bits: u64,
}

impl Candidates<'_> {
    /// Word `at` of the three summaries (or of the three bitsets), ANDed.
    fn and(&self, summary: bool, at: usize) -> u64 {
        let word = |bits: &Bits<'_>| {
            let list = if summary { bits.summary } else { bits.words };
            list.get(at).copied().unwrap_or(0)
        };
        self.dims.iter().fold(u64::MAX, |acc, dim| acc & word(dim))
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            if self.bits != 0 {
                let rule = self.word * 64 + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return Some(rule);
            }
            while self.groups == 0 {
                if self.next_group >= self.dims[0].summary.len() {
                    return None;
                }
                self.group = self.next_group;
                self.groups = self.and(true, self.group);
                self.next_group += 1;
            }
            self.word = self.group * 64 + self.groups.trailing_zeros() as usize;
            self.groups &= self.groups - 1;
            self.bits = self.and(false, self.word);
        }
    }
}

/// One index per address family.
struct AddrIndex {
    v4: IntervalIndex,
    v6: IntervalIndex,
}

impl AddrIndex {
    fn build<'a>(
        words: usize,
        conditions: impl Iterator<Item = Option<&'a resolve::AddrSet>> + Clone,
    ) -> AddrIndex {
        let family = |f: Family| {
            let per_rule = conditions.clone().map(move |c| c.map(|set| set.family(f)));
            IntervalIndex::build(words, f.max(), per_rule)
        };
        AddrIndex { v4: family(Family::V4), v6: family(Family::V6) }
    }

    fn lookup(&self, addr: IpAddr) -> Bits<'_> {
        match address_key(addr) {
            (Family::V4, key) => self.v4.lookup(key),
            (Family::V6, key) => self.v6.lookup(key),
        }
    }

    fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes() + self.v6.memory_bytes()
    }
}

/// The key domain `0..=max` cut into segments at `starts` (the first is 0); segment
/// `i` covers `starts[i] ..= starts[i + 1] - 1` and its rules are bitset `ids[i]` of
/// `sets`. Adjacent segments never share a bitset id. `radix` narrows a lookup to a
/// few segments before the binary search. Each stored bitset is a summary (bit `w`
/// set when word `w` is not zero; `words.div_ceil(64)` u64) followed by `words` u64,
/// so a scan skips the words where any of the three dimensions has no rule.
struct IntervalIndex {
    starts: Vec<u128>,
    radix: Radix,
    ids: Vec<u32>,
    sets: Vec<u64>,
    words: usize,
}

impl IntervalIndex {
    /// `conditions` yields, per rule in order, its merged intervals, or `None` (any).
    fn build<'a>(
        words: usize,
        max: u128,
        conditions: impl Iterator<Item = Option<&'a [(u128, u128)]>>,
    ) -> Self {
        // Each interval toggles its rule's bit on at `lo` and off after `hi`; a rule's
        // intervals are disjoint and non-adjacent (merged), so toggles never collide.
        let everything = [(0u128, max)];
        let mut events: Vec<(u128, u32)> = Vec::new();
        for (rule, intervals) in conditions.enumerate() {
            for &(lo, hi) in intervals.unwrap_or(&everything) {
                events.push((lo, rule as u32));
                if hi < max {
                    events.push((hi + 1, rule as u32));
                }
            }
        }
        events.sort_unstable();

        let mut index = IntervalIndex {
            starts: Vec::new(),
            radix: Radix::default(),
            ids: Vec::new(),
            sets: Vec::new(),
            words,
        };
        let mut interner: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut current: Vec<u64> = vec![0; words];
        let mut hash: u64 = 0;
        let empty = index.intern(&mut interner, &current, hash);
        index.starts.push(0);
        index.ids.push(empty);
        let mut i = 0;
        while i < events.len() {
            let at = events[i].0;
            while let Some(&(_, rule)) = events.get(i).filter(|e| e.0 == at) {
                current[rule as usize / 64] ^= 1u64 << (rule % 64);
                hash ^= zobrist(rule);
                i += 1;
            }
            let id = index.intern(&mut interner, &current, hash);
            if at == 0 {
                index.ids[0] = id; // replaces the empty start segment
            } else if index.ids.last() != Some(&id) {
                index.starts.push(at);
                index.ids.push(id);
            }
        }
        index.starts.shrink_to_fit();
        index.radix = Radix::build(&index.starts);
        index.ids.shrink_to_fit();
        index.sets.shrink_to_fit();
        index
    }

    fn intern(&mut self, interner: &mut HashMap<u64, Vec<u32>>, bits: &[u64], hash: u64) -> u32 {
        let bucket = interner.entry(hash).or_default();
        for &id in bucket.iter() {
            if self.set(id).words == bits {
                return id;
            }
        }
        let id = self.set_count() as u32;
        let mut summary: Vec<u64> = vec![0; self.words.div_ceil(64)];
        for (w, _) in bits.iter().enumerate().filter(|(_, &word)| word != 0) {
            summary[w / 64] |= 1u64 << (w % 64);
        }
        self.sets.extend_from_slice(&summary);
        self.sets.extend_from_slice(bits);
        bucket.push(id);
        id
    }

    fn stride(&self) -> usize {
        self.words.div_ceil(64) + self.words
    }

    fn set_count(&self) -> usize {
        self.sets.len().checked_div(self.stride()).unwrap_or(1)
    }

    fn set(&self, id: u32) -> Bits<'_> {
        let stride = self.stride();
        let record = self.sets.get(id as usize * stride..).unwrap_or_default();
        let (summary, words) = record.split_at(self.words.div_ceil(64).min(record.len()));
        Bits { summary, words: words.get(..self.words).unwrap_or(words) }
    }

    fn lookup(&self, key: u128) -> Bits<'_> {
        let (lo, hi) = self.radix.candidates(key, self.starts.len());
        // The segment is in lo..=hi: lo plus the number of starts after lo that are <= key.
        let after = self.starts.get(lo + 1..=hi).unwrap_or_default();
        let segment = lo + after.partition_point(|&s| s <= key);
        self.set(self.ids.get(segment).copied().unwrap_or(0))
    }

    fn memory_bytes(&self) -> usize {
        self.starts.capacity() * 16
            + self.radix.first.capacity() * 4
            + self.ids.capacity() * 4
            + self.sets.capacity() * 8
    }
}

/// The first level of a lookup: keys from `base` (the second start) on, cut into
/// equal buckets of `1 << shift` keys; `first[b]` is the segment holding bucket `b`'s
/// first key, so a key of bucket `b` lies in segments `first[b] ..= first[b + 1]`.
/// Up to 65,536 buckets, about two per segment: one table read replaces most of a
/// binary search's cache misses.
#[derive(Default)]
struct Radix {
    base: u128,
    shift: u32,
    first: Vec<u32>,
}

impl Radix {
    fn build(starts: &[u128]) -> Radix {
        let base = starts.get(1).copied().unwrap_or(u128::MAX);
        let span = starts.last().copied().unwrap_or(0).saturating_sub(base);
        let bucket_bits = (starts.len().next_power_of_two().trailing_zeros() + 1).min(16);
        let shift = (128 - span.leading_zeros()).saturating_sub(bucket_bits);
        let mut first: Vec<u32> = Vec::with_capacity((1 << bucket_bits) + 1);
        let mut segment = 0usize;
        for bucket in 0..=(1u128 << bucket_bits) {
            let offset = (shift < 128 && bucket <= u128::MAX >> shift).then(|| bucket << shift);
            let key = offset.and_then(|offset| base.checked_add(offset)).unwrap_or(u128::MAX);
            while starts.get(segment + 1).is_some_and(|&s| s <= key) {
                segment += 1;
            }
            first.push(segment as u32);
        }
        Radix { base, shift, first }
    }

    /// The inclusive range of segments that can hold `key`.
    fn candidates(&self, key: u128, segments: usize) -> (usize, usize) {
        if key < self.base {
            return (0, 0);
        }
        let offset = (key - self.base).checked_shr(self.shift).unwrap_or(0);
        let bucket = usize::try_from(offset).unwrap_or(usize::MAX);
        let last = segments.saturating_sub(1);
        match (self.first.get(bucket), self.first.get(bucket.saturating_add(1))) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            (Some(&lo), None) => (lo as usize, last),
            (None, _) => (self.first.last().map_or(0, |&lo| lo as usize), last),
        }
    }
}

/// A fixed random 64-bit key per rule (splitmix64); a set's hash is the XOR of its keys.
fn zobrist(rule: u32) -> u64 {
    let mut z = u64::from(rule).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 65,536 bits, one per port.
struct PortBitmap(Box<[u64]>);

impl PortBitmap {
    fn new(ranges: &[(u16, u16)]) -> PortBitmap {
        let mut bits = vec![0u64; 1024].into_boxed_slice();
        for &(lo, hi) in ranges {
            for port in lo..=hi {
                bits[usize::from(port) / 64] |= 1u64 << (port % 64);
            }
        }
        PortBitmap(bits)
    }

    fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port) / 64] & (1u64 << (port % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_index_segments_and_sharing() {
        // rule 0: 10..=19 and 30..=39, rule 1: any, rule 2: 15..=34
        let r0: Vec<(u128, u128)> = vec![(10, 19), (30, 39)];
        let r2: Vec<(u128, u128)> = vec![(15, 34)];
        let conds = [Some(r0.as_slice()), None, Some(r2.as_slice())];
        let index = IntervalIndex::build(1, 100, conds.into_iter());
        let bits = |k: u128| index.lookup(k).words[0];
        assert_eq!([bits(0), bits(9), bits(10), bits(14), bits(15)], [0b010, 0b010, 0b011, 0b011, 0b111]);
        assert_eq!([bits(19), bits(20), bits(29), bits(30), bits(34)], [0b111, 0b110, 0b110, 0b111, 0b111]);
        assert_eq!(
            [bits(35), bits(39), bits(40), bits(100), bits(u128::MAX)],
            [0b011, 0b011, 0b010, 0b010, 0b010]
        );
        // {1}, {0,1}, {0,1,2}, {1,2} and the empty set: 5 distinct, 7 segments.
        assert_eq!((index.starts.len(), index.set_count()), (7, 5));
    }

    #[test]
    fn interval_index_edges_of_the_domain() {
        let all: Vec<(u128, u128)> = vec![(0, 0), (u128::MAX, u128::MAX)];
        let index = IntervalIndex::build(1, u128::MAX, [Some(all.as_slice())].into_iter());
        let bits = |k: u128| index.lookup(k).words[0];
        assert_eq!([bits(0), bits(1), bits(u128::MAX - 1), bits(u128::MAX)], [1, 0, 0, 1]);
        assert_eq!(index.lookup(0).summary, [1]);
        assert_eq!(index.lookup(1).summary, [0]);
    }

    #[test]
    fn no_rules() {
        let p = CompiledPolicy::compile(Policy::default(), 7).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let d = p.decide_at_syn(a, a, 443);
        assert_eq!(d, SynDecision { action: SynAction::Bypass { rule: None }, version: 7 });
        assert_eq!(p.decide_with_sni(a, a, 443, Some("x")).action, Action::DoNotDecrypt);
    }

    #[test]
    fn port_bitmap() {
        let b = PortBitmap::new(&[(443, 443), (8000, 8001), (65535, 65535)]);
        assert!(b.contains(443) && b.contains(8001) && b.contains(65535));
        assert!(!b.contains(444) && !b.contains(0) && !b.contains(7999));
    }
}
