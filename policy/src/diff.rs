//! Differences between two policies, as human-readable lines:
//!
//! ```text
//! + rule "Bypass-Web" at #1: {"name":"Bypass-Web","destination":["172.16.1.1"],"action":"do-not-decrypt"}
//! - rule "Old"
//! ~ rule "Decrypt-All": field "action": "block" -> "decrypt"
//! ~ rule "Decrypt-All": moved from #1 to #2
//! ~ object "lan": field "addresses": added "10.0.0.5"; removed "10.0.0.6"
//! ~ settings: field "tls_ports": [443] -> [443,8443]
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::model::{Action, Policy, Rule};

/// Which kind of named item changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemKind {
    /// A rule.
    Rule,
    /// An address object.
    Object,
    /// An address group.
    Group,
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemKind::Rule => "rule",
            ItemKind::Object => "object",
            ItemKind::Group => "group",
        })
    }
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A new item; `position` (1-based) for rules; `content` as compact JSON.
    Added { kind: ItemKind, name: String, position: Option<usize>, content: String },
    /// An item that is gone.
    Removed { kind: ItemKind, name: String },
    /// A field of an item that differs; `detail` says how.
    Changed { kind: ItemKind, name: String, field: &'static str, detail: String },
    /// A rule whose place among the rules kept changed (1-based positions).
    Moved { name: String, from: usize, to: usize },
    /// The default action.
    DefaultAction { old: Action, new: Action },
    /// A decryption setting; values as JSON.
    Setting { field: &'static str, old: String, new: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { kind, name, position: Some(p), content } => {
                write!(f, "+ {kind} \"{name}\" at #{p}: {content}")
            }
            Change::Added { kind, name, position: None, content } => {
                write!(f, "+ {kind} \"{name}\": {content}")
            }
            Change::Removed { kind, name } => write!(f, "- {kind} \"{name}\""),
            Change::Changed { kind, name, field, detail } => {
                write!(f, "~ {kind} \"{name}\": field \"{field}\": {detail}")
            }
            Change::Moved { name, from, to } => write!(f, "~ rule \"{name}\": moved from #{from} to #{to}"),
            Change::DefaultAction { old, new } => write!(f, "~ default_action: {old} -> {new}"),
            Change::Setting { field, old, new } => write!(f, "~ settings: field \"{field}\": {old} -> {new}"),
        }
    }
}

/// All differences from one policy to another; `Display` prints one per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Rules (removed, added, changed, moved), then objects, groups, default, settings.
    pub changes: Vec<Change>,
}

impl fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl PolicyDiff {
    /// Whether the two policies are the same.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes as lines.
    pub fn lines(&self) -> Vec<String> {
        self.changes.iter().map(ToString::to_string).collect()
    }

    /// The differences from `old` to `new`.
    pub fn between(old: &Policy, new: &Policy) -> PolicyDiff {
        let mut changes: Vec<Change> = Vec::new();
        diff_rules(&old.rules, &new.rules, &mut changes);
        diff_named(ItemKind::Object, "addresses", objects(old), objects(new), &mut changes);
        diff_named(ItemKind::Group, "members", groups(old), groups(new), &mut changes);
        if old.default_action != new.default_action {
            changes.push(Change::DefaultAction { old: old.default_action, new: new.default_action });
        }
        let (a, b) = (&old.settings, &new.settings);
        let mut setting = |field: &'static str, old: String, new: String| {
            if old != new {
                changes.push(Change::Setting { field, old, new });
            }
        };
        setting("tls_ports", json(&a.tls_ports), json(&b.tls_ports));
        setting("undecryptable", json(&a.undecryptable), json(&b.undecryptable));
        setting("midstream", json(&a.midstream), json(&b.midstream));
        setting("quic", json(&a.quic), json(&b.quic));
        setting("ech", json(&a.ech), json(&b.ech));
        setting("certificate_validation", json(&a.certificate_validation), json(&b.certificate_validation));
        setting("certificate_actions", json(&a.certificate_actions), json(&b.certificate_actions));
        setting("undecryptable_memory_s", json(&a.undecryptable_memory_s), json(&b.undecryptable_memory_s));
        setting("exclusion_ttl_s", json(&a.exclusion_ttl_s), json(&b.exclusion_ttl_s));
        setting("unproved_sni", json(&a.unproved_sni), json(&b.unproved_sni));
        setting("probe_ttl_s", json(&a.probe_ttl_s), json(&b.probe_ttl_s));
        PolicyDiff { changes }
    }
}

fn objects(p: &Policy) -> Vec<(&str, &Vec<String>)> {
    p.objects.iter().map(|o| (o.name.as_str(), &o.addresses)).collect()
}

fn groups(p: &Policy) -> Vec<(&str, &Vec<String>)> {
    p.groups.iter().map(|g| (g.name.as_str(), &g.members)).collect()
}

fn diff_rules(old: &[Rule], new: &[Rule], changes: &mut Vec<Change>) {
    let old_at: HashMap<&str, usize> = old.iter().enumerate().map(|(i, r)| (r.name.as_str(), i)).collect();
    let new_names: HashSet<&str> = new.iter().map(|r| r.name.as_str()).collect();
    for rule in old.iter().filter(|r| !new_names.contains(r.name.as_str())) {
        changes.push(Change::Removed { kind: ItemKind::Rule, name: rule.name.clone() });
    }
    for (i, rule) in new.iter().enumerate().filter(|(_, r)| !old_at.contains_key(r.name.as_str())) {
        let (kind, name, content) = (ItemKind::Rule, rule.name.clone(), json(rule));
        changes.push(Change::Added { kind, name, position: Some(i + 1), content });
    }
    // Kept rules, in new order, with their old positions.
    let kept: Vec<(usize, usize, &Rule)> =
        new.iter().enumerate().filter_map(|(i, r)| old_at.get(r.name.as_str()).map(|&j| (j, i, r))).collect();
    for &(j, _, rule) in &kept {
        let before = &old[j];
        let mut field = |field: &'static str, a: String, b: String| {
            if a != b {
                let (kind, name, detail) = (ItemKind::Rule, rule.name.clone(), format!("{a} -> {b}"));
                changes.push(Change::Changed { kind, name, field, detail });
            }
        };
        let cond = |c: &Option<Vec<String>>| c.as_ref().map_or_else(|| "any".to_string(), json);
        field("source", cond(&before.source), cond(&rule.source));
        field("destination", cond(&before.destination), cond(&rule.destination));
        let ports = |p: &Rule| p.ports.as_ref().map_or_else(|| "any".to_string(), json);
        field("ports", ports(before), ports(rule));
        field("sni", cond(&before.sni), cond(&rule.sni));
        field("ja4", cond(&before.ja4), cond(&rule.ja4));
        field("action", json(&before.action), json(&rule.action));
    }
    // A rule moved if it is outside the longest run of kept rules already in order.
    let old_positions: Vec<usize> = kept.iter().map(|&(j, _, _)| j).collect();
    let in_order = longest_increasing(&old_positions);
    for (k, &(j, i, rule)) in kept.iter().enumerate() {
        if !in_order.contains(&k) {
            changes.push(Change::Moved { name: rule.name.clone(), from: j + 1, to: i + 1 });
        }
    }
}

/// Indices of one longest strictly increasing subsequence of `values` (O(n log n)).
fn longest_increasing(values: &[usize]) -> HashSet<usize> {
    let mut tails: Vec<usize> = Vec::new(); // index into values of the smallest tail per length
    let mut parent: Vec<Option<usize>> = vec![None; values.len()];
    for (i, &v) in values.iter().enumerate() {
        let len = tails.partition_point(|&t| values[t] < v);
        parent[i] = len.checked_sub(1).map(|l| tails[l]);
        if len == tails.len() {
            tails.push(i);
        } else {
            tails[len] = i;
        }
    }
    let mut chain: HashSet<usize> = HashSet::new();
    let mut at = tails.last().copied();
    while let Some(i) = at {
        chain.insert(i);
        at = parent[i];
    }
    chain
}

fn diff_named(
    kind: ItemKind,
    field: &'static str,
    old: Vec<(&str, &Vec<String>)>,
    new: Vec<(&str, &Vec<String>)>,
    changes: &mut Vec<Change>,
) {
    let old_map: HashMap<&str, &Vec<String>> = old.iter().copied().collect();
    let new_map: HashMap<&str, &Vec<String>> = new.iter().copied().collect();
    for &(name, _) in old.iter().filter(|(n, _)| !new_map.contains_key(n)) {
        changes.push(Change::Removed { kind, name: name.into() });
    }
    for &(name, entries) in new.iter().filter(|(n, _)| !old_map.contains_key(n)) {
        changes.push(Change::Added { kind, name: name.into(), position: None, content: json(entries) });
    }
    for &(name, entries) in &new {
        let Some(before) = old_map.get(name).filter(|&&before| before != entries) else {
            continue;
        };
        let (was, now): (HashSet<&String>, HashSet<&String>) =
            (before.iter().collect(), entries.iter().collect());
        let list = |items: Vec<&String>| items.iter().map(json).collect::<Vec<String>>().join(", ");
        let added: Vec<&String> = entries.iter().filter(|e| !was.contains(e)).collect();
        let removed: Vec<&String> = before.iter().filter(|e| !now.contains(e)).collect();
        let mut parts: Vec<String> = Vec::new();
        if !added.is_empty() {
            parts.push(format!("added {}", list(added)));
        }
        if !removed.is_empty() {
            parts.push(format!("removed {}", list(removed)));
        }
        if parts.is_empty() {
            parts.push("reordered".into());
        }
        changes.push(Change::Changed { kind, name: name.into(), field, detail: parts.join("; ") });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lis() {
        assert_eq!(longest_increasing(&[]).len(), 0);
        assert_eq!(longest_increasing(&[0, 1, 2]).len(), 3);
        // one rule moved from the end to the front: only it is outside the run
        let chain = longest_increasing(&[3, 0, 1, 2]);
        assert!(!chain.contains(&0) && chain.len() == 3);
    }
}
