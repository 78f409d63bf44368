//! Candidate edits, commit and versions, rollback, the history bound, and diffs.

use std::net::IpAddr;

use tlsgate_policy::{
    Action, AddressObject, Change, Error, ItemKind, Policy, PolicyDiff, PolicyStore, Position, Rule,
    SynAction,
};

fn seed() -> Policy {
    Policy::from_json(r#"{"rules":[{"name":"Decrypt-All","action":"decrypt"}]}"#).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn names(p: &Policy) -> Vec<&str> {
    p.rules.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn the_seed_fix_add_above_commit_then_remove() {
    let mut store = PolicyStore::new(seed()).unwrap();
    assert_eq!(store.version(), 1);
    let server = ip("172.16.1.1");
    assert!(matches!(
        store.running().decide_at_syn(ip("10.1.1.10"), server, 443).action,
        SynAction::Decrypt { .. }
    ));

    // "add a do-not-decrypt rule above the others for the server's address"
    let mut bypass = Rule::new("Bypass-Server", Action::DoNotDecrypt);
    bypass.destination = Some(vec!["server".into()]);
    let candidate = store.candidate_mut();
    candidate.set_object(AddressObject { name: "server".into(), addresses: vec!["172.16.1.1".into()] });
    candidate.insert_rule(bypass, &Position::Above("Decrypt-All".into())).unwrap();
    assert_eq!(store.version(), 1, "edits do not touch the running policy");
    assert_eq!(
        store.diff_candidate().lines(),
        [
            r#"+ rule "Bypass-Server" at #1: {"name":"Bypass-Server","destination":["server"],"action":"do-not-decrypt"}"#,
            r#"+ object "server": ["172.16.1.1"]"#,
        ]
    );
    let running = store.commit().unwrap();
    assert_eq!((running.version(), store.version()), (2, 2));
    let decision = running.decide_at_syn(ip("10.1.1.10"), server, 443);
    assert_eq!(decision.version, 2);
    let SynAction::Bypass { rule: Some(id) } = decision.action else { panic!("{decision:?}") };
    assert_eq!(running.rule_name(id), Some("Bypass-Server"));

    // "remove the temporary rule"
    store.candidate_mut().remove_rule("Bypass-Server").unwrap();
    store.candidate_mut().remove_object("server").unwrap();
    assert_eq!(store.commit().unwrap().version(), 3);
    assert_eq!(store.running().policy(), &seed());
    assert_eq!(store.history().map(|c| c.version).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn discard_and_reorder() {
    let mut store = PolicyStore::new(seed()).unwrap();
    let c = store.candidate_mut();
    for name in ["a", "b", "c"] {
        c.insert_rule(Rule::new(name, Action::Block), &Position::Bottom).unwrap();
    }
    c.move_rule("Decrypt-All", &Position::Bottom).unwrap();
    c.move_rule("c", &Position::Above("a".into())).unwrap();
    assert_eq!(names(store.candidate()), ["c", "a", "b", "Decrypt-All"]);
    store.discard_candidate();
    assert_eq!(store.candidate(), store.running().policy());
    assert!(store.diff_candidate().is_empty());
}

#[test]
fn rollback_commits_old_content_as_a_new_version() {
    let mut store = PolicyStore::new(seed()).unwrap();
    store.candidate_mut().default_action = Action::Block;
    store.commit().unwrap(); // v2
    store.candidate_mut().remove_rule("Decrypt-All").unwrap();
    store.commit().unwrap(); // v3
    store.candidate_mut().insert_rule(Rule::new("pending", Action::Block), &Position::Top).unwrap();

    let running = store.rollback(1).unwrap();
    assert_eq!(running.version(), 4);
    assert_eq!(running.policy(), &seed());
    assert_eq!(store.candidate(), &seed(), "rollback drops pending edits");
    let last = store.history().last().unwrap();
    assert_eq!((last.version, last.rollback_of), (4, Some(1)));
    assert!(matches!(store.rollback(99), Err(Error::UnknownVersion(99))));
    assert_eq!(store.version(), 4);
    assert!(store.diff_versions(1, 4).unwrap().is_empty());
    assert_eq!(
        store.diff_versions(1, 3).unwrap().lines(),
        [r#"- rule "Decrypt-All""#, "~ default_action: do-not-decrypt -> block"]
    );
}

#[test]
fn history_is_bounded() {
    let mut store = PolicyStore::restore(vec![(7, seed())], 3).unwrap();
    assert_eq!(store.version(), 7);
    for port in 1..=5u16 {
        store.candidate_mut().settings.undecryptable_memory_s = u64::from(port);
        store.commit().unwrap();
    }
    assert_eq!(store.version(), 12);
    assert_eq!(store.history().map(|c| c.version).collect::<Vec<_>>(), [10, 11, 12]);
    assert!(matches!(store.rollback(9), Err(Error::UnknownVersion(9))));
    assert_eq!(store.rollback(10).unwrap().version(), 13);
    assert_eq!(store.running().settings().undecryptable_memory_s, 3);

    let default = PolicyStore::new(Policy::default()).unwrap();
    assert_eq!(default.history().count(), 1);
    let mut default = default;
    for _ in 0..60 {
        default.commit().unwrap();
    }
    assert_eq!(default.history().count(), tlsgate_policy::DEFAULT_HISTORY);
    assert_eq!(default.version(), 61);
    assert!(matches!(PolicyStore::restore(Vec::new(), 5), Err(Error::EmptyHistory)));
}

#[test]
fn diff_lines() {
    let old = Policy::from_json(
        r#"{"objects":[{"name":"lan","addresses":["10.0.0.0/8","10.0.0.6"]},{"name":"gone","addresses":["1.1.1.1"]}],
            "groups":[{"name":"g","members":["lan"]}],
            "rules":[{"name":"a","action":"decrypt"},{"name":"b","destination":["lan"],"action":"block"},
                     {"name":"c","action":"block"},{"name":"d","action":"block"}]}"#,
    )
    .unwrap();
    let new = Policy::from_json(
        r#"{"objects":[{"name":"lan","addresses":["10.0.0.5","10.0.0.0/8"]},{"name":"fresh","addresses":["::1"]}],
            "groups":[{"name":"g","members":["fresh","lan"]}],
            "rules":[{"name":"d","action":"block"},{"name":"a","action":"decrypt"},
                     {"name":"b","destination":["lan","fresh"],"ports":[443],"action":"decrypt"},
                     {"name":"e","sni":["x.test"],"action":"block"}],
            "default_action":"block","settings":{"tls_ports":[443,8443],"certificate_validation":false}}"#,
    )
    .unwrap();
    let diff = PolicyDiff::between(&old, &new);
    assert_eq!(
        diff.to_string(),
        r#"- rule "c"
+ rule "e" at #4: {"name":"e","sni":["x.test"],"action":"block"}
~ rule "b": field "destination": ["lan"] -> ["lan","fresh"]
~ rule "b": field "ports": any -> [443]
~ rule "b": field "action": "block" -> "decrypt"
~ rule "d": moved from #4 to #1
- object "gone"
+ object "fresh": ["::1"]
~ object "lan": field "addresses": added "10.0.0.5"; removed "10.0.0.6"
~ group "g": field "members": added "fresh"
~ default_action: do-not-decrypt -> block
~ settings: field "tls_ports": [443] -> [443,8443]
~ settings: field "certificate_validation": true -> false
"#
    );
    assert!(matches!(diff.changes[0], Change::Removed { kind: ItemKind::Rule, .. }));
    assert!(PolicyDiff::between(&new, &new).is_empty());
    let mut reordered = new.clone();
    reordered.objects[0].addresses.reverse();
    assert_eq!(
        PolicyDiff::between(&new, &reordered).lines(),
        [r#"~ object "lan": field "addresses": reordered"#]
    );
}

#[test]
fn commits_under_configuration_versions() {
    let mut store = PolicyStore::new(Policy::from_json(r#"{"rules":[]}"#).unwrap()).unwrap();
    store.load_candidate_json(r#"{"rules":[{"name":"A","action":"block"}]}"#).unwrap();
    // Other changes took versions 2..=6: the policy's next commit is version 7.
    assert_eq!(store.commit_as(7).unwrap().version(), 7);
    assert!(store.commit_as(7).is_err(), "not after the running version");
    assert_eq!(store.rollback_as(1, 9).unwrap().version(), 9);
    assert_eq!(store.running().policy().rules.len(), 0);
    assert_eq!(store.history().map(|c| c.version).collect::<Vec<_>>(), vec![1, 7, 9]);
    assert_eq!(store.history().last().unwrap().rollback_of, Some(1));
}
