//! The obvious matcher: walk the rules in order and test each condition against a
//! flat list of address spans. Slow (linear in rules and addresses) and simple enough
//! to trust; the tests check [`crate::CompiledPolicy`] against it, and the benchmark
//! prints it as the baseline.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::compiled::{rule_id, syn_action, SynAction, SynDecision, Verdict};
use crate::error::Error;
use crate::model::{Action, Policy, PortSpec};
use crate::parse::{self, address_key, SniPattern, Span};

struct LinearRule {
    source: Option<Vec<Span>>,
    destination: Option<Vec<Span>>,
    ports: Option<Vec<(u16, u16)>>,
    sni: Option<Vec<SniPattern>>,
    ja4: Option<Vec<String>>,
    action: Action,
}

/// A reference matcher with the same answers as [`crate::CompiledPolicy`].
pub struct LinearMatcher {
    rules: Vec<LinearRule>,
    tls_ports: Vec<(u16, u16)>,
    default_action: Action,
    version: u64,
}

impl LinearMatcher {
    /// Validates `policy` and flattens every condition to spans (no merging, no index).
    pub fn new(policy: &Policy, version: u64) -> Result<LinearMatcher, Error> {
        policy.validate()?;
        let objects: HashMap<&str, &[String]> =
            policy.objects.iter().map(|o| (o.name.as_str(), o.addresses.as_slice())).collect();
        let groups: HashMap<&str, &[String]> =
            policy.groups.iter().map(|g| (g.name.as_str(), g.members.as_slice())).collect();
        let flatten = |entries: &Vec<String>| {
            let mut spans: Vec<Span> = Vec::new();
            for entry in entries {
                flatten_into(entry, &objects, &groups, &mut spans);
            }
            spans
        };
        let ports = |list: &Vec<PortSpec>| list.iter().filter_map(|p| parse::parse_port(p).ok()).collect();
        let rules = policy
            .rules
            .iter()
            .map(|r| LinearRule {
                source: r.source.as_ref().map(flatten),
                destination: r.destination.as_ref().map(flatten),
                ports: r.ports.as_ref().map(ports),
                sni: r.sni.as_ref().map(|l| l.iter().filter_map(|s| SniPattern::parse(s).ok()).collect()),
                ja4: r.ja4.clone(),
                action: r.action,
            })
            .collect();
        let tls_ports = ports(&policy.settings.tls_ports);
        Ok(LinearMatcher { rules, tls_ports, default_action: policy.default_action, version })
    }

    /// `hello`: `None` at SYN (the hello's conditions are not looked at), else
    /// the SNI and the JA4 the hello gave.
    fn first_match(
        &self,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        hello: Option<(Option<&str>, Option<&str>)>,
    ) -> Option<usize> {
        let in_spans = |spans: &Option<Vec<Span>>, addr: IpAddr| {
            let (family, key) = address_key(addr);
            spans
                .as_ref()
                .map_or(true, |s| s.iter().any(|sp| sp.family == family && sp.lo <= key && key <= sp.hi))
        };
        self.rules.iter().position(|r| {
            in_spans(&r.source, src)
                && in_spans(&r.destination, dst)
                && r.ports.as_ref().map_or(true, |p| p.iter().any(|&(lo, hi)| lo <= port && port <= hi))
                && match (&r.sni, hello) {
                    (None, _) | (Some(_), None) => true, // at SYN the SNI is not looked at
                    (Some(pats), Some((name, _))) => name.is_some_and(|n| pats.iter().any(|p| p.matches(n))),
                }
                && match (&r.ja4, hello) {
                    (None, _) | (Some(_), None) => true,
                    (Some(prints), Some((_, ja4))) => ja4.is_some_and(|j| prints.iter().any(|p| p == j)),
                }
        })
    }

    fn is_tls_port(&self, port: u16) -> bool {
        self.tls_ports.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }

    /// Same contract as [`crate::CompiledPolicy::decide_at_syn`].
    pub fn decide_at_syn(&self, src: IpAddr, dst: IpAddr, dst_port: u16) -> SynDecision {
        let version = self.version;
        if !self.is_tls_port(dst_port) {
            return SynDecision { action: SynAction::Bypass { rule: None }, version };
        }
        let action = match self.first_match(src, dst, dst_port, None) {
            Some(i) if self.rules[i].sni.is_some() || self.rules[i].ja4.is_some() => SynAction::Intercept,
            Some(i) => syn_action(self.rules[i].action, Some(rule_id(i))),
            None => syn_action(self.default_action, None),
        };
        SynDecision { action, version }
    }

    /// Same contract as [`crate::CompiledPolicy::decide_with_sni`].
    pub fn decide_with_sni(&self, src: IpAddr, dst: IpAddr, dst_port: u16, sni: Option<&str>) -> Verdict {
        self.decide_with_hello(src, dst, dst_port, sni, None)
    }

    /// Same contract as [`crate::CompiledPolicy::decide_with_hello`].
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
        match self.first_match(src, dst, dst_port, Some((sni, ja4))) {
            Some(i) => Verdict { action: self.rules[i].action, rule: Some(rule_id(i)), version },
            None => Verdict { action: self.default_action, rule: None, version },
        }
    }
}

/// Appends the spans of a literal, an object, or (recursively) a group. The policy is
/// validated, so names exist and groups are acyclic.
fn flatten_into(
    entry: &str,
    objects: &HashMap<&str, &[String]>,
    groups: &HashMap<&str, &[String]>,
    out: &mut Vec<Span>,
) {
    if parse::is_literal(entry) {
        out.extend(parse::parse_address_literal(entry).ok());
    } else if let Some(addresses) = objects.get(entry) {
        out.extend(addresses.iter().filter_map(|a| parse::parse_address_literal(a).ok()));
    } else if let Some(members) = groups.get(entry) {
        for member in members.iter() {
            flatten_into(member, objects, groups, out);
        }
    }
}
