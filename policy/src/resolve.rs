//! Validation and name resolution: a [`Policy`] becomes, per rule, merged address
//! intervals per family, port intervals and SNI patterns. The first problem found (in
//! the order settings, objects, groups, rules) is returned with its place and field.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::error::{Place, Problem, ValidationError};
use crate::model::{Action, Policy, PortSpec};
use crate::parse::{self, Family, SniPattern, Span};

/// Groups may nest this deep; deeper is refused (and bounds the recursion).
const MAX_NESTING: usize = 32;

/// Sorted, merged, inclusive intervals per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddrSet {
    pub(crate) v4: Vec<(u128, u128)>,
    pub(crate) v6: Vec<(u128, u128)>,
}

impl AddrSet {
    fn from_spans(spans: impl Iterator<Item = Span>) -> AddrSet {
        let mut set = AddrSet::default();
        for span in spans {
            set.family_mut(span.family).push((span.lo, span.hi));
        }
        set.normalise();
        set
    }

    /// Whether the set holds every IPv4 or every IPv6 address (`0.0.0.0/0`,
    /// `::/0`): a condition that narrows nothing.
    pub(crate) fn covers_a_family(&self) -> bool {
        self.v4.iter().any(|&(lo, hi)| lo == 0 && hi == u128::from(u32::MAX))
            || self.v6.iter().any(|&(lo, hi)| lo == 0 && hi == u128::MAX)
    }

    fn union(sets: &[Rc<AddrSet>]) -> AddrSet {
        let mut set = AddrSet::default();
        for part in sets {
            set.v4.extend_from_slice(&part.v4);
            set.v6.extend_from_slice(&part.v6);
        }
        set.normalise();
        set
    }

    fn family_mut(&mut self, family: Family) -> &mut Vec<(u128, u128)> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    pub(crate) fn family(&self, family: Family) -> &[(u128, u128)] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn normalise(&mut self) {
        merge(&mut self.v4);
        merge(&mut self.v6);
    }
}

/// Sorts and merges overlapping or adjacent inclusive intervals.
pub(crate) fn merge<T: Copy + Ord + MergeStep>(intervals: &mut Vec<(T, T)>) {
    intervals.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(intervals.len());
    for &(lo, hi) in intervals.iter() {
        match out.last_mut() {
            Some(last) if last.1.touches(lo) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *intervals = out;
}

/// `a.touches(b)`: an interval ending at `a` overlaps or is adjacent to one starting at `b`.
pub(crate) trait MergeStep {
    fn touches(self, next_lo: Self) -> bool;
}

impl MergeStep for u128 {
    fn touches(self, next_lo: u128) -> bool {
        next_lo <= self.saturating_add(1)
    }
}

impl MergeStep for u16 {
    fn touches(self, next_lo: u16) -> bool {
        next_lo <= self.saturating_add(1)
    }
}

/// One rule with its names resolved; `None` is an absent condition (matches anything).
#[derive(Clone, Debug)]
pub(crate) struct ResolvedRule {
    pub(crate) source: Option<Rc<AddrSet>>,
    pub(crate) destination: Option<Rc<AddrSet>>,
    pub(crate) ports: Option<Vec<(u16, u16)>>,
    pub(crate) sni: Option<Vec<SniPattern>>,
    pub(crate) ja4: Option<Vec<String>>,
    pub(crate) action: Action,
}

/// A whole policy, resolved.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) rules: Vec<ResolvedRule>,
    pub(crate) tls_ports: Vec<(u16, u16)>,
}

/// Validates and resolves; see the module description.
pub(crate) fn resolve(policy: &Policy) -> Result<Resolved, ValidationError> {
    let settings_err = |problem: Problem| ValidationError::new(Place::Settings, Some("tls_ports"), problem);
    let tls_ports = parse_ports(&policy.settings.tls_ports).map_err(settings_err)?;
    let st = &policy.settings;
    for (field, value, lo, hi) in [
        ("undecryptable_memory_s", st.undecryptable_memory_s, 1, 7 * 86_400),
        ("exclusion_ttl_s", st.exclusion_ttl_s, 60, 7 * 86_400),
        ("probe_ttl_s", st.probe_ttl_s, 10, 86_400),
    ] {
        if !(lo..=hi).contains(&value) {
            return Err(ValidationError::new(
                Place::Settings,
                Some(field),
                Problem::OutOfRange(value, lo, hi),
            ));
        }
    }

    let mut names = Names::default();
    for (i, object) in policy.objects.iter().enumerate() {
        names.claim(&object.name, Place::ObjectAt(i + 1), Place::Object)?;
        let err = |p: Problem| ValidationError::new(Place::Object(object.name.clone()), Some("addresses"), p);
        if object.addresses.is_empty() {
            return Err(err(Problem::EmptyList));
        }
        let spans: Vec<Span> = object
            .addresses
            .iter()
            .map(|a| parse::parse_address_literal(a))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        names.resolved.insert(object.name.clone(), Rc::new(AddrSet::from_spans(spans.into_iter())));
    }
    for (i, group) in policy.groups.iter().enumerate() {
        names.claim(&group.name, Place::GroupAt(i + 1), Place::Group)?;
        names.members.insert(group.name.clone(), &group.members);
    }
    for group in &policy.groups {
        let mut stack: Vec<&str> = Vec::new();
        names.group(&group.name, &mut stack).map_err(|(place, problem)| {
            ValidationError::new(Place::Group(place), Some("members"), problem)
        })?;
    }

    let mut rules: Vec<ResolvedRule> = Vec::with_capacity(policy.rules.len());
    let mut rule_names: HashSet<&str> = HashSet::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let at = Place::RuleAt(i + 1);
        if rule.name.is_empty() {
            return Err(ValidationError::new(at, None, Problem::EmptyName));
        }
        if !rule_names.insert(&rule.name) {
            return Err(ValidationError::new(at, None, Problem::DuplicateName(rule.name.clone())));
        }
        if rule.name.chars().count() > 128 || rule.name.chars().any(char::is_control) {
            return Err(ValidationError::new(at, None, Problem::InvalidRuleName(rule.name.clone())));
        }
        let err = |field: &'static str| {
            move |p: Problem| ValidationError::new(Place::Rule(rule.name.clone()), Some(field), p)
        };
        let source = rule.source.as_deref().map(|s| names.condition(s)).transpose().map_err(err("source"))?;
        let destination = rule
            .destination
            .as_deref()
            .map(|d| names.condition(d))
            .transpose()
            .map_err(err("destination"))?;
        let ports = rule.ports.as_deref().map(parse_ports).transpose().map_err(err("ports"))?;
        let sni = rule.sni.as_deref().map(parse_sni).transpose().map_err(err("sni"))?;
        let ja4 = rule.ja4.as_deref().map(parse_ja4).transpose().map_err(err("ja4"))?;
        // An address that narrows nothing (0.0.0.0/0, ::/0) does not count.
        let narrows = |a: &Option<Rc<AddrSet>>| a.as_ref().is_some_and(|s| !s.covers_a_family());
        if ja4.is_some()
            && rule.action == Action::DoNotDecrypt
            && !narrows(&source)
            && !narrows(&destination)
            && sni.is_none()
        {
            return Err(err("ja4")(Problem::Ja4AloneCannotExempt));
        }
        rules.push(ResolvedRule { source, destination, ports, sni, ja4, action: rule.action });
    }
    Ok(Resolved { rules, tls_ports })
}

fn non_empty<T>(list: &[T]) -> Result<&[T], Problem> {
    if list.is_empty() {
        Err(Problem::EmptyList)
    } else {
        Ok(list)
    }
}

fn parse_ports(list: &[PortSpec]) -> Result<Vec<(u16, u16)>, Problem> {
    let mut ports: Vec<(u16, u16)> =
        non_empty(list)?.iter().map(parse::parse_port).collect::<Result<_, _>>()?;
    merge(&mut ports);
    Ok(ports)
}

/// JA4 fingerprints, as `a_b_c`: part a 10 characters (`t13d1516h2`), b and c
/// 12 lowercase hex digits each.
fn parse_ja4(list: &[String]) -> Result<Vec<String>, Problem> {
    let valid = |s: &str| {
        let parts: Vec<&str> = s.split('_').collect();
        let hex =
            |p: &str| p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        parts.len() == 3
            && parts[0].len() == 10
            && parts[0].is_ascii()
            && matches!(parts[0].as_bytes()[0], b't' | b'q' | b'd')
            && hex(parts[1])
            && hex(parts[2])
    };
    non_empty(list)?
        .iter()
        .map(|s| if valid(s) { Ok(s.clone()) } else { Err(Problem::InvalidJa4(s.clone())) })
        .collect()
}

fn parse_sni(list: &[String]) -> Result<Vec<SniPattern>, Problem> {
    non_empty(list)?.iter().map(|s| SniPattern::parse(s)).collect()
}

/// Objects and groups by name, resolved lazily (groups) with cycle detection.
#[derive(Default)]
struct Names<'p> {
    /// Every claimed name, to refuse duplicates across objects and groups.
    claimed: HashSet<&'p str>,
    members: HashMap<String, &'p Vec<String>>,
    resolved: HashMap<String, Rc<AddrSet>>,
}

impl<'p> Names<'p> {
    fn claim(&mut self, name: &'p str, at: Place, named: fn(String) -> Place) -> Result<(), ValidationError> {
        if name.is_empty() {
            return Err(ValidationError::new(at, None, Problem::EmptyName));
        }
        if !self.claimed.insert(name) {
            return Err(ValidationError::new(at, None, Problem::DuplicateName(name.into())));
        }
        if !parse::is_valid_object_name(name) {
            return Err(ValidationError::new(named(name.into()), None, Problem::InvalidName(name.into())));
        }
        Ok(())
    }

    /// The addresses of the group `name`; errors carry the group where they were found.
    fn group(&mut self, name: &str, stack: &mut Vec<&'p str>) -> Result<Rc<AddrSet>, (String, Problem)> {
        if let Some(set) = self.resolved.get(name) {
            return Ok(Rc::clone(set));
        }
        let Some(key) = self.claimed.get(name).copied() else {
            return Err((name.into(), Problem::UnknownObject(name.into())));
        };
        let Some(members) = self.members.get(name).copied() else {
            return Err((name.into(), Problem::UnknownObject(name.into())));
        };
        if let Some(start) = stack.iter().position(|&n| n == name) {
            let mut path: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
            path.push(name.into());
            return Err((name.into(), Problem::GroupCycle(path)));
        }
        if stack.len() >= MAX_NESTING {
            return Err((name.into(), Problem::NestingTooDeep(MAX_NESTING)));
        }
        let members = non_empty(members).map_err(|p| (name.to_string(), p))?;
        stack.push(key);
        let mut parts: Vec<Rc<AddrSet>> = Vec::with_capacity(members.len());
        for member in members {
            let part = if parse::is_literal(member) {
                let span = parse::parse_address_literal(member).map_err(|p| (name.to_string(), p))?;
                Rc::new(AddrSet::from_spans(std::iter::once(span)))
            } else if self.claimed.contains(member.as_str()) {
                self.group(member, stack)?
            } else {
                return Err((name.into(), Problem::UnknownObject(member.clone())));
            };
            parts.push(part);
        }
        stack.pop();
        let set = Rc::new(AddrSet::union(&parts));
        self.resolved.insert(name.into(), Rc::clone(&set));
        Ok(set)
    }

    /// A rule's source or destination list: names (already resolved) and literals.
    fn condition(&self, entries: &[String]) -> Result<Rc<AddrSet>, Problem> {
        let entries = non_empty(entries)?;
        if let [single] = entries {
            if let Some(set) = self.resolved.get(single.as_str()) {
                return Ok(Rc::clone(set)); // the common case shares the object's intervals
            }
        }
        let mut parts: Vec<Rc<AddrSet>> = Vec::with_capacity(entries.len());
        for entry in entries {
            if parse::is_literal(entry) {
                let span = parse::parse_address_literal(entry)?;
                parts.push(Rc::new(AddrSet::from_spans(std::iter::once(span))));
            } else {
                let set =
                    self.resolved.get(entry.as_str()).ok_or_else(|| Problem::UnknownObject(entry.clone()))?;
                parts.push(Rc::clone(set));
            }
        }
        Ok(Rc::new(AddrSet::union(&parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_intervals() {
        let mut v: Vec<(u128, u128)> =
            vec![(5, 9), (1, 2), (3, 4), (20, 30), (25, 26), (u128::MAX, u128::MAX)];
        merge(&mut v);
        assert_eq!(v, vec![(1, 9), (20, 30), (u128::MAX, u128::MAX)]);
        let mut p: Vec<(u16, u16)> = vec![(443, 443), (0, 65535)];
        merge(&mut p);
        assert_eq!(p, vec![(0, 65535)]);
    }

    #[test]
    fn nested_groups_resolve() {
        let p = Policy::from_json_unchecked(
            r#"{"objects":[{"name":"a","addresses":["10.0.0.1","10.0.0.2"]},{"name":"b","addresses":["::1"]}],
                "groups":[{"name":"outer","members":["inner","10.0.0.3"]},{"name":"inner","members":["a","b"]}],
                "rules":[{"name":"r","source":["outer"],"action":"decrypt"}]}"#,
        );
        let resolved = resolve(&p).unwrap();
        let source = resolved.rules[0].source.as_ref().unwrap();
        assert_eq!(source.v4, vec![(0x0a00_0001, 0x0a00_0003)]);
        assert_eq!(source.v6, vec![(1, 1)]);
    }

    impl Policy {
        fn from_json_unchecked(text: &str) -> Policy {
            serde_json::from_str(text).unwrap()
        }
    }
}
