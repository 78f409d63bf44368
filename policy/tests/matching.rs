//! Matching semantics of compiled policies: first match, default, each condition,
//! both families, CIDR edges, ranges, groups, ports, SNI, and the decision at SYN.

use std::net::IpAddr;

use tlsgate_policy::{Action, CompiledPolicy, LinearMatcher, Policy, RuleId, SynAction};

fn compile(json: &str) -> CompiledPolicy {
    CompiledPolicy::compile(Policy::from_json(json).unwrap(), 1).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The name of the rule that decides with SNI, or "default"; also checks the linear
/// reference agrees.
fn winner(p: &CompiledPolicy, src: &str, dst: &str, port: u16, sni: Option<&str>) -> String {
    let verdict = p.decide_with_sni(ip(src), ip(dst), port, sni);
    let linear = LinearMatcher::new(p.policy(), p.version()).unwrap();
    assert_eq!(verdict, linear.decide_with_sni(ip(src), ip(dst), port, sni));
    verdict.rule.and_then(|r| p.rule_name(r)).unwrap_or("default").to_string()
}

fn syn(p: &CompiledPolicy, src: &str, dst: &str, port: u16) -> SynAction {
    let decision = p.decide_at_syn(ip(src), ip(dst), port);
    let linear = LinearMatcher::new(p.policy(), p.version()).unwrap();
    assert_eq!(decision, linear.decide_at_syn(ip(src), ip(dst), port));
    decision.action
}

#[test]
fn first_match_wins_and_default_applies() {
    let p = compile(
        r#"{"rules":[
            {"name":"one","destination":["10.0.0.1"],"action":"block"},
            {"name":"two","destination":["10.0.0.0/24"],"action":"do-not-decrypt"},
            {"name":"three","action":"decrypt"}]}"#,
    );
    assert_eq!(winner(&p, "1.1.1.1", "10.0.0.1", 443, None), "one");
    assert_eq!(winner(&p, "1.1.1.1", "10.0.0.2", 443, None), "two");
    assert_eq!(winner(&p, "1.1.1.1", "10.0.1.2", 443, None), "three");
    let q = compile(
        r#"{"rules":[{"name":"x","destination":["10.0.0.1"],"action":"block"}],"default_action":"decrypt"}"#,
    );
    assert_eq!(winner(&q, "1.1.1.1", "10.0.0.2", 443, None), "default");
    let verdict = q.decide_with_sni(ip("1.1.1.1"), ip("10.0.0.2"), 443, None);
    assert_eq!((verdict.action, verdict.rule, verdict.version), (Action::Decrypt, None, 1));
    let all = compile(r#"{"rules":[{"name":"all","action":"block"}]}"#);
    assert_eq!(all.decide_with_sni(ip("::1"), ip("::2"), 443, None).rule, Some(RuleId::new(0)));
}

#[test]
fn each_condition_alone_and_together() {
    let p = compile(
        r#"{"settings":{"tls_ports":["1-65535"]},"rules":[
            {"name":"src","source":["192.168.1.0/24"],"action":"block"},
            {"name":"dst","destination":["172.16.0.0/12"],"action":"block"},
            {"name":"port","ports":[8443],"action":"block"},
            {"name":"sni","sni":["bank.example"],"action":"do-not-decrypt"},
            {"name":"all","source":["10.0.0.0/8"],"destination":["198.51.100.7"],"ports":["9000-9100"],"sni":["x.test"],"action":"decrypt"}]}"#,
    );
    assert_eq!(winner(&p, "192.168.1.200", "8.8.8.8", 443, None), "src");
    assert_eq!(winner(&p, "192.168.2.1", "172.31.255.255", 443, None), "dst");
    assert_eq!(winner(&p, "192.168.2.1", "172.32.0.0", 8443, None), "port");
    assert_eq!(winner(&p, "192.168.2.1", "8.8.8.8", 443, Some("BANK.example.")), "sni");
    assert_eq!(winner(&p, "10.1.1.1", "198.51.100.7", 9050, Some("x.test")), "all");
    // every condition of "all" must hold
    assert_eq!(winner(&p, "11.1.1.1", "198.51.100.7", 9050, Some("x.test")), "default");
    assert_eq!(winner(&p, "10.1.1.1", "198.51.100.8", 9050, Some("x.test")), "default");
    assert_eq!(winner(&p, "10.1.1.1", "198.51.100.7", 9101, Some("x.test")), "default");
    assert_eq!(winner(&p, "10.1.1.1", "198.51.100.7", 9050, Some("y.test")), "default");
    assert_eq!(winner(&p, "10.1.1.1", "198.51.100.7", 9050, None), "default");
}

#[test]
fn cidr_and_range_edges_v4_and_v6() {
    let p = compile(
        r#"{"objects":[
              {"name":"net4","addresses":["10.0.0.0/30"]},
              {"name":"range4","addresses":["10.0.1.10-10.0.1.20"]},
              {"name":"net6","addresses":["2001:db8::/126"]},
              {"name":"range6","addresses":["2001:db8:1::a-2001:db8:1::14"]},
              {"name":"top","addresses":["255.255.255.255","ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]},
              {"name":"bottom","addresses":["0.0.0.0","::"]}],
            "rules":[
              {"name":"n4","destination":["net4"],"action":"block"},
              {"name":"r4","destination":["range4"],"action":"block"},
              {"name":"n6","destination":["net6"],"action":"block"},
              {"name":"r6","destination":["range6"],"action":"block"},
              {"name":"top","destination":["top"],"action":"block"},
              {"name":"bottom","destination":["bottom"],"action":"block"}]}"#,
    );
    let cases: &[(&str, &str)] = &[
        ("9.255.255.255", "default"),
        ("10.0.0.0", "n4"),
        ("10.0.0.3", "n4"),
        ("10.0.0.4", "default"),
        ("10.0.1.9", "default"),
        ("10.0.1.10", "r4"),
        ("10.0.1.20", "r4"),
        ("10.0.1.21", "default"),
        ("2001:db8::", "n6"),
        ("2001:db8::3", "n6"),
        ("2001:db8::4", "default"),
        ("2001:db8:1::9", "default"),
        ("2001:db8:1::a", "r6"),
        ("2001:db8:1::14", "r6"),
        ("2001:db8:1::15", "default"),
        ("255.255.255.255", "top"),
        ("255.255.255.254", "default"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "top"),
        ("0.0.0.0", "bottom"),
        ("::", "bottom"),
        ("::1", "default"),
        // families do not mix: ::a00:0 is not 10.0.0.0, nor is the mapped form
        ("::a00:0", "default"),
        ("::ffff:10.0.0.0", "default"),
    ];
    for (dst, expected) in cases {
        assert_eq!(winner(&p, "1.2.3.4", dst, 443, None), *expected, "{dst}");
    }
}

#[test]
fn groups_nested_and_literals() {
    let p = compile(
        r#"{"objects":[{"name":"web","addresses":["10.0.0.1"]},{"name":"db","addresses":["2001:db8::5"]}],
            "groups":[{"name":"servers","members":["web","db"]},
                      {"name":"all-servers","members":["servers","10.9.0.0/16"]},
                      {"name":"outer","members":["all-servers"]}],
            "rules":[{"name":"nested","source":["outer"],"action":"block"},
                     {"name":"mixed","destination":["web","192.0.2.0/24","2001:db8::/64"],"action":"decrypt"}]}"#,
    );
    for src in ["10.0.0.1", "2001:db8::5", "10.9.255.255"] {
        assert_eq!(winner(&p, src, "8.8.8.8", 443, None), "nested", "{src}");
    }
    assert_eq!(winner(&p, "10.0.0.2", "8.8.8.8", 443, None), "default");
    for dst in ["10.0.0.1", "192.0.2.255", "2001:db8::ffff"] {
        assert_eq!(winner(&p, "1.1.1.1", dst, 443, None), "mixed", "{dst}");
    }
    assert_eq!(winner(&p, "1.1.1.1", "2001:db8:0:1::", 443, None), "default");
}

#[test]
fn ports_and_tls_ports() {
    let p = compile(
        r#"{"settings":{"tls_ports":[443,"8000-8999"]},
            "rules":[{"name":"range","ports":["8080-8090", 8443],"action":"block"},
                     {"name":"rest","action":"decrypt"}]}"#,
    );
    assert_eq!(winner(&p, "1.1.1.1", "2.2.2.2", 8079, None), "rest");
    assert_eq!(winner(&p, "1.1.1.1", "2.2.2.2", 8080, None), "range");
    assert_eq!(winner(&p, "1.1.1.1", "2.2.2.2", 8090, None), "range");
    assert_eq!(winner(&p, "1.1.1.1", "2.2.2.2", 8091, None), "rest");
    assert_eq!(winner(&p, "1.1.1.1", "2.2.2.2", 8443, None), "range");
    assert_eq!(winner(&p, "1.1.1.1", "2.2.2.2", 443, None), "rest");
    // not a TLS port: bypassed whatever the rules say
    assert_eq!(syn(&p, "1.1.1.1", "2.2.2.2", 80), SynAction::Bypass { rule: None });
    assert_eq!(syn(&p, "1.1.1.1", "2.2.2.2", 9000), SynAction::Bypass { rule: None });
    let verdict = p.decide_with_sni(ip("1.1.1.1"), ip("2.2.2.2"), 80, Some("x"));
    assert_eq!((verdict.action, verdict.rule), (Action::DoNotDecrypt, None));
    assert!(p.is_tls_port(8999) && !p.is_tls_port(9000));
}

#[test]
fn sni_patterns() {
    let p = compile(
        r#"{"rules":[{"name":"wild","sni":["*.example.com"],"action":"block"},
                     {"name":"exact","sni":["Example.COM."],"action":"do-not-decrypt"},
                     {"name":"rest","action":"decrypt"}]}"#,
    );
    let w = |sni: Option<&str>| winner(&p, "1.1.1.1", "2.2.2.2", 443, sni);
    assert_eq!(w(Some("www.example.com")), "wild");
    assert_eq!(w(Some("a.b.c.EXAMPLE.COM.")), "wild");
    assert_eq!(w(Some("example.com")), "exact");
    assert_eq!(w(Some("EXAMPLE.com.")), "exact");
    assert_eq!(w(Some("notexample.com")), "rest");
    assert_eq!(w(Some("example.com.evil")), "rest");
    assert_eq!(w(Some("")), "rest");
    assert_eq!(w(None), "rest");
}

#[test]
fn decision_at_syn() {
    let p = compile(
        r#"{"objects":[{"name":"bank","addresses":["203.0.113.10"]},{"name":"blocked","addresses":["203.0.113.66"]}],
            "rules":[
              {"name":"Bypass-Bank","destination":["bank"],"action":"do-not-decrypt"},
              {"name":"Block-Bad","destination":["blocked"],"action":"block"},
              {"name":"Social","destination":["198.51.100.0/24"],"sni":["*.social.example"],"action":"block"},
              {"name":"Decrypt-Net","destination":["198.51.0.0/16"],"action":"decrypt"}],
            "default_action":"do-not-decrypt"}"#,
    );
    let r = |name: &str| p.policy().rules.iter().position(|x| x.name == name).map(|i| RuleId::new(i as u32));
    assert_eq!(syn(&p, "10.0.0.1", "203.0.113.10", 443), SynAction::Bypass { rule: r("Bypass-Bank") });
    assert_eq!(syn(&p, "10.0.0.1", "203.0.113.66", 443), SynAction::Block { rule: r("Block-Bad") });
    // the SNI rule comes first among those whose other conditions match: read the ClientHello
    assert_eq!(syn(&p, "10.0.0.1", "198.51.100.9", 443), SynAction::Intercept);
    assert_eq!(winner(&p, "10.0.0.1", "198.51.100.9", 443, Some("www.social.example")), "Social");
    assert_eq!(winner(&p, "10.0.0.1", "198.51.100.9", 443, Some("news.example")), "Decrypt-Net");
    assert_eq!(winner(&p, "10.0.0.1", "198.51.100.9", 443, None), "Decrypt-Net");
    // outside the SNI rule's destination the decrypt rule decides at SYN
    assert_eq!(syn(&p, "10.0.0.1", "198.51.200.9", 443), SynAction::Decrypt { rule: r("Decrypt-Net") });
    // nothing matches: the default, with no rule
    assert_eq!(syn(&p, "10.0.0.1", "8.8.8.8", 443), SynAction::Bypass { rule: None });
    for (default, expected) in
        [("block", SynAction::Block { rule: None }), ("decrypt", SynAction::Decrypt { rule: None })]
    {
        let q = compile(&format!(r#"{{"default_action":"{default}"}}"#));
        assert_eq!(syn(&q, "10.0.0.1", "8.8.8.8", 443), expected);
    }
    assert_eq!(p.decide_at_syn(ip("10.0.0.1"), ip("8.8.8.8"), 443).version, 1);
}

#[test]
fn seed_policy_and_settings() {
    let p = compile(
        r#"{"rules":[{"name":"Decrypt-All","action":"decrypt"}],
            "settings":{"certificate_validation":false,"undecryptable":"block","undecryptable_memory_s":60}}"#,
    );
    let decision = p.decide_at_syn(ip("10.1.1.10"), ip("172.16.1.1"), 443);
    let id = match decision.action {
        SynAction::Decrypt { rule: Some(id) } => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.rule_name(id), Some("Decrypt-All"));
    assert!(!p.certificate_validation());
    assert_eq!(p.undecryptable(), tlsgate_policy::UndecryptableAction::Block);
    assert_eq!(p.undecryptable_memory(), std::time::Duration::from_secs(60));
    assert_eq!(p.policy().warnings().len(), 1);
}

#[test]
fn the_example_in_docs_policy_md_is_valid_and_behaves_as_described() {
    let doc = include_str!("../../docs/policy.md");
    let start = doc.find("```json\n").map(|i| i + 8).unwrap();
    let end = start + doc[start..].find("```").unwrap();
    let p = compile(&doc[start..end]);
    assert_eq!(p.rule_name(RuleId::new(4)), Some("Decrypt-All"));
    let bypass = SynAction::Bypass { rule: Some(RuleId::new(0)) };
    assert_eq!(syn(&p, "10.1.1.10", "172.16.1.1", 443), bypass);
    assert_eq!(syn(&p, "10.1.1.10", "172.16.1.2", 443), SynAction::Intercept);
    assert_eq!(winner(&p, "10.1.1.10", "172.16.1.2", 443, Some("www.bank.example")), "Bypass-Banking");
    assert_eq!(winner(&p, "10.1.9.7", "172.16.1.2", 443, Some("x.test")), "No-Printers");
    assert_eq!(winner(&p, "10.1.1.10", "203.0.113.5", 8444, Some("x.test")), "Block-Bad");
    assert_eq!(winner(&p, "10.2.0.50", "172.16.1.2", 443, Some("x.test")), "Decrypt-All");
    assert_eq!(winner(&p, "192.168.50.1", "172.16.1.2", 443, Some("x.test")), "Decrypt-All");
    assert_eq!(winner(&p, "10.3.0.1", "172.16.1.2", 443, Some("x.test")), "default");
    assert_eq!(syn(&p, "10.1.1.10", "172.16.1.1", 80), SynAction::Bypass { rule: None });
}

#[test]
fn the_unknown_field_message_in_docs_policy_md_is_real() {
    let err = Policy::from_json(
        "{\"rules\":[\n  {\"name\":\"x\",\n   \"destinaton\":[\"a\"],\"action\":\"block\"}]}",
    )
    .unwrap_err()
    .to_string();
    assert!(include_str!("../../docs/policy.md").contains(&err), "{err}");
}

#[test]
fn compiled_policies_are_shared_across_worker_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CompiledPolicy>();
    shareable::<tlsgate_policy::PolicyStore>();
    let p = std::sync::Arc::new(compile(r#"{"rules":[{"name":"all","action":"block"}]}"#));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let p = std::sync::Arc::clone(&p);
            std::thread::spawn(move || p.decide_at_syn(ip("10.0.0.1"), ip("10.0.0.2"), 443).action)
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().unwrap(), SynAction::Block { rule: Some(RuleId::new(0)) });
    }
}

const CHROMIUM: &str = "t13d1517h2_8daaf6152771_cb7bf5808d99";
const BOT: &str = "t12i100700_61a7ad8aa9b6_3fcd1a44f3e3";

/// A `ja4` condition: decided only with the ClientHello (Intercept at SYN),
/// matches the fingerprints listed, never a flow whose hello was not read; it may
/// block on its own, and exempt only with an address or an SNI.
#[test]
fn ja4_conditions() {
    let p = compile(&format!(
        r#"{{"rules": [
            {{"name": "Block-Bot", "ja4": ["{BOT}"], "action": "block"}},
            {{"name": "Bypass-App", "destination": ["198.18.0.9"], "ja4": ["{CHROMIUM}"], "action": "do-not-decrypt"}},
            {{"name": "Decrypt-All", "action": "decrypt"}}]}}"#
    ));
    assert_eq!(syn(&p, "198.18.0.1", "198.18.0.2", 443), SynAction::Intercept);
    let name = |src: &str, dst: &str, ja4: Option<&str>| {
        let v = p.decide_with_hello(ip(src), ip(dst), 443, Some("a.tg.test"), ja4);
        (v.action, v.rule.and_then(|r| p.rule_name(r)).unwrap_or("default").to_string())
    };
    assert_eq!(name("198.18.0.1", "198.18.0.2", Some(BOT)), (Action::Block, "Block-Bot".into()));
    assert_eq!(name("198.18.0.1", "198.18.0.2", Some(CHROMIUM)), (Action::Decrypt, "Decrypt-All".into()));
    assert_eq!(name("198.18.0.1", "198.18.0.9", Some(CHROMIUM)), (Action::DoNotDecrypt, "Bypass-App".into()));
    assert_eq!(
        name("198.18.0.1", "198.18.0.9", None),
        (Action::Decrypt, "Decrypt-All".into()),
        "no hello, no JA4 rule"
    );
    assert!(!p.needs_proof(&p.decide_with_hello(
        ip("198.18.0.1"),
        ip("198.18.0.9"),
        443,
        None,
        Some(CHROMIUM)
    )));
    // Unproved SNI: SNI rules are set aside, JA4 rules still count.
    assert_eq!(p.decide_unproved(ip("198.18.0.1"), ip("198.18.0.2"), 443, Some(BOT)).action, Action::Block);

    for (bad, needle) in [
        (
            format!(
                r#"{{"rules": [{{"name": "Bypass-Chrome", "ja4": ["{CHROMIUM}"], "action": "do-not-decrypt"}}]}}"#
            ),
            "only together with source, destination or sni",
        ),
        (
            r#"{"rules": [{"name": "X", "ja4": ["t13d1517h2_xyz"], "action": "block"}]}"#.to_string(),
            "invalid JA4",
        ),
        (r#"{"rules": [{"name": "X", "ja4": [], "action": "block"}]}"#.to_string(), "empty list"),
        (
            format!(
                r#"{{"rules": [{{"name": "Bypass-Any", "destination": ["0.0.0.0/0", "::/0"], "ja4": ["{CHROMIUM}"], "action": "do-not-decrypt"}}]}}"#
            ),
            "only together with source, destination or sni",
        ),
    ] {
        let e = Policy::from_json(&bad)
            .map_err(|e| e.to_string())
            .and_then(|p| CompiledPolicy::compile(p, 1).map(|_| ()).map_err(|e| e.to_string()))
            .expect_err("refused");
        assert!(e.contains(needle) && e.contains("ja4"), "{bad}: {e}");
    }
}
