//! Every kind of mistake is refused with a message that names the place and field.

use tlsgate_policy::{Error, Place, Policy, PolicyStore, Problem, ValidationError};

fn error(json: &str) -> String {
    match Policy::from_json(json) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

const WEB: &str = r#"{"name":"web","addresses":["10.0.0.1"]}"#;

#[test]
fn messages_name_rule_object_group_and_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"rules":[{"name":"Decrypt-All","destination":["web-srv"],"action":"decrypt"}]}"#.into(),
            r#"rule "Decrypt-All": field "destination": unknown object "web-srv""#,
        ),
        (
            r#"{"rules":[{"name":"a","action":"decrypt"},{"name":"b","action":"decrypt"},{"name":"a","action":"block"}]}"#
                .into(),
            r#"rule #3: duplicate name "a""#,
        ),
        (r#"{"rules":[{"name":"","action":"decrypt"}]}"#.into(), "rule #1: empty name"),
        (
            r#"{"objects":[{"name":"lan","addresses":["10.0.0.0/33"]}]}"#.into(),
            r#"object "lan": field "addresses": invalid CIDR "10.0.0.0/33""#,
        ),
        (
            r#"{"objects":[{"name":"lan","addresses":["10.0.0.1/8"]}]}"#.into(),
            r#"object "lan": field "addresses": invalid CIDR "10.0.0.1/8": host bits set (did you mean "10.0.0.0/8"?)"#,
        ),
        (
            r#"{"objects":[{"name":"lan","addresses":["10.0.0.9-10.0.0.1"]}]}"#.into(),
            r#"object "lan": field "addresses": invalid range "10.0.0.9-10.0.0.1""#,
        ),
        (
            r#"{"objects":[{"name":"lan","addresses":["10.0.0.300"]}]}"#.into(),
            r#"object "lan": field "addresses": invalid address "10.0.0.300""#,
        ),
        (
            r#"{"objects":[{"name":"lan","addresses":[]}]}"#.into(),
            r#"object "lan": field "addresses": empty list (omit the field to match anything)"#,
        ),
        (
            format!(r#"{{"objects":[{WEB},{WEB}]}}"#),
            r#"object #2: duplicate name "web""#,
        ),
        (
            format!(r#"{{"objects":[{WEB}],"groups":[{{"name":"web","members":["web"]}}]}}"#),
            r#"group #1: duplicate name "web""#,
        ),
        (
            r#"{"objects":[{"name":"10net","addresses":["10.0.0.0/8"]}]}"#.into(),
            r#"object "10net": invalid name "10net" (start with a letter or '_'; then letters, digits, '-', '_', '.'; at most 128)"#,
        ),
        (
            r#"{"groups":[{"name":"a","members":["b"]},{"name":"b","members":["a"]}]}"#.into(),
            r#"group "a": field "members": group cycle: a -> b -> a"#,
        ),
        (
            r#"{"groups":[{"name":"self","members":["self"]}]}"#.into(),
            r#"group "self": field "members": group cycle: self -> self"#,
        ),
        (
            r#"{"groups":[{"name":"g","members":["nowhere"]}]}"#.into(),
            r#"group "g": field "members": unknown object "nowhere""#,
        ),
        (
            r#"{"rules":[{"name":"p","ports":[70000],"action":"decrypt"}]}"#.into(),
            r#"rule "p": field "ports": invalid port "70000""#,
        ),
        (
            r#"{"rules":[{"name":"p","ports":["9000-8000"],"action":"decrypt"}]}"#.into(),
            r#"rule "p": field "ports": invalid port "9000-8000""#,
        ),
        (
            r#"{"rules":[{"name":"s","sni":["foo.*.com"],"action":"decrypt"}]}"#.into(),
            r#"rule "s": field "sni": invalid SNI pattern "foo.*.com""#,
        ),
        (
            r#"{"rules":[{"name":"s","source":[],"action":"decrypt"}]}"#.into(),
            r#"rule "s": field "source": empty list (omit the field to match anything)"#,
        ),
        (
            r#"{"rules":[{"name":"s","source":["10.0.0.0/40"],"action":"decrypt"}]}"#.into(),
            r#"rule "s": field "source": invalid CIDR "10.0.0.0/40""#,
        ),
        (
            r#"{"settings":{"tls_ports":[]}}"#.into(),
            r#"settings: field "tls_ports": empty list (omit the field to match anything)"#,
        ),
        (
            r#"{"settings":{"tls_ports":[-1]}}"#.into(),
            r#"settings: field "tls_ports": invalid port "-1""#,
        ),
        (
            r#"{"rules":[{"name":"bad\u0007bell","action":"decrypt"}]}"#.into(),
            "rule #1: invalid rule name \"bad\u{7}bell\" (at most 128 characters, no control characters)",
        ),
    ];
    assert!(cases.len() >= 10);
    for (json, expected) in &cases {
        assert_eq!(error(json), *expected, "{json}");
    }
}

#[test]
fn structured_error_fields() {
    let err =
        Policy::from_json(r#"{"rules":[{"name":"r","destination":["x"],"action":"decrypt"}]}"#).unwrap_err();
    let Error::Invalid(ValidationError { place, field, problem }) = err else { panic!("{err}") };
    assert_eq!(place, Place::Rule("r".into()));
    assert_eq!(field, Some("destination"));
    assert_eq!(problem, Problem::UnknownObject("x".into()));
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let groups: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"name":"g{i}","members":["{}"]}}"#,
                if i == 39 { "10.0.0.1".into() } else { format!("g{}", i + 1) }
            )
        })
        .collect();
    let json = format!(r#"{{"groups":[{}]}}"#, groups.join(","));
    assert_eq!(error(&json), r#"group "g32": field "members": groups nested deeper than 32 levels"#);
}

#[test]
fn json_errors_say_where() {
    let text = error(r#"{"rules":[{"name":"a","action":"decrypt","src":["x"]}]}"#);
    assert!(text.starts_with("policy JSON: unknown field `src`"), "{text}");
    assert!(text.contains("line 1 column"), "{text}");
    let text = error(r#"{"rules":[{"name":"a","action":"inspect"}]}"#);
    assert!(text.contains("unknown variant `inspect`"), "{text}");
}

#[test]
fn failed_load_leaves_candidate_and_running_unchanged() {
    let mut store = PolicyStore::new(
        Policy::from_json(r#"{"rules":[{"name":"Decrypt-All","action":"decrypt"}]}"#).unwrap(),
    )
    .unwrap();
    let before = store.candidate().clone();
    assert!(store
        .load_candidate_json(r#"{"rules":[{"name":"x","destination":["nope"],"action":"block"}]}"#)
        .is_err());
    assert!(store.load_candidate_json("{not json").is_err());
    assert_eq!(store.candidate(), &before);
    // an invalid candidate edited in place cannot be committed, and nothing changes
    store.candidate_mut().rules[0].source = Some(vec!["nope".into()]);
    let err = store.commit().unwrap_err();
    assert_eq!(err.to_string(), r#"rule "Decrypt-All": field "source": unknown object "nope""#);
    assert_eq!(store.version(), 1);
    assert_eq!(store.running().policy(), &before);
    assert_eq!(store.history().count(), 1);
}
