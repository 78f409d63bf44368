//! Randomized cross-check: the compiled matcher against the linear reference on random
//! policies and random queries (fixed seeds, our own PRNG, so every run is the same).
//!
//! Addresses come from small windows of each family so that CIDRs, ranges and single
//! addresses overlap often and queries land on their edges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tlsgate_policy::{CompiledPolicy, LinearMatcher, Policy};

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// An address in the window: 10.0.0.0 + 0..1024 or 2001:db8:: + 0..1024.
fn address(rng: &mut Rng, v6: bool) -> IpAddr {
    let offset = rng.below(1024) as u32;
    if v6 {
        IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(offset)))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + offset))
    }
}

fn literal(rng: &mut Rng) -> String {
    let v6 = rng.chance(40);
    let a = address(rng, v6);
    match rng.below(3) {
        0 => a.to_string(),
        1 => {
            let host_bits = rng.below(11) as u32; // /22../32 or /118../128
            let prefix = if v6 { 128 - host_bits } else { 32 - host_bits };
            let net = match a {
                IpAddr::V4(x) => IpAddr::V4(Ipv4Addr::from(u32::from(x) >> host_bits << host_bits)),
                IpAddr::V6(x) => IpAddr::V6(Ipv6Addr::from(u128::from(x) >> host_bits << host_bits)),
            };
            format!("{net}/{prefix}")
        }
        _ => {
            let b = address(rng, v6);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            format!("{lo}-{hi}")
        }
    }
}

const SNI_PATTERNS: [&str; 6] = ["a.test", "*.a.test", "b.a.test", "*.b.a.test", "C.test.", "*.test"];
const SNI_QUERIES: [&str; 9] =
    ["a.test", "x.a.test", "b.a.test", "y.b.a.test", "c.test", "C.TEST.", "z.test", "test", ""];
const PORTS: [&str; 6] = ["443", "444", "440-445", "446-450", "8443", "0-65535"];
const ACTIONS: [&str; 3] = ["decrypt", "do-not-decrypt", "block"];

fn list(items: Vec<String>) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// A random policy; `rules` overrides the number of rules.
fn random_policy(rng: &mut Rng, rules: Option<usize>) -> String {
    let mut names: Vec<String> = Vec::new();
    let mut objects: Vec<String> = Vec::new();
    for i in 0..1 + rng.below(8) {
        let entries: Vec<String> = (0..1 + rng.below(4)).map(|_| literal(rng)).collect();
        objects.push(format!(r#"{{"name":"o{i}","addresses":{}}}"#, list(entries)));
        names.push(format!("o{i}"));
    }
    let mut groups: Vec<String> = Vec::new();
    for i in 0..rng.below(5) {
        // members: earlier objects and groups (so no cycles), sometimes a literal
        let members: Vec<String> = (0..1 + rng.below(3))
            .map(|_| if rng.chance(20) { literal(rng) } else { rng.pick(&names).clone() })
            .collect();
        groups.push(format!(r#"{{"name":"g{i}","members":{}}}"#, list(members)));
        names.push(format!("g{i}"));
    }
    let rule_count = rules.unwrap_or_else(|| match rng.below(4) {
        0 => rng.below(5),
        1 | 2 => 1 + rng.below(40),
        _ => 60 + rng.below(150), // across several 64-bit words
    });
    let mut rule_list: Vec<String> = Vec::new();
    for i in 0..rule_count {
        if rules.is_some() && i < 4_100 {
            // filler that never matches the queries, so matches land past 4096 rules
            rules_json_filler(&mut rule_list, i);
            continue;
        }
        let mut fields: Vec<String> = vec![format!(r#""name":"r{i}""#)];
        for field in ["source", "destination"] {
            if rng.chance(60) {
                let entries: Vec<String> = (0..1 + rng.below(3))
                    .map(|_| if rng.chance(30) { literal(rng) } else { rng.pick(&names).clone() })
                    .collect();
                fields.push(format!(r#""{field}":{}"#, list(entries)));
            }
        }
        if rng.chance(40) {
            let ports: Vec<String> = (0..1 + rng.below(2)).map(|_| rng.pick(&PORTS).to_string()).collect();
            fields.push(format!(r#""ports":{}"#, list(ports)));
        }
        if rng.chance(30) {
            let sni: Vec<String> =
                (0..1 + rng.below(2)).map(|_| rng.pick(&SNI_PATTERNS).to_string()).collect();
            fields.push(format!(r#""sni":{}"#, list(sni)));
        }
        fields.push(format!(r#""action":"{}""#, rng.pick(&ACTIONS)));
        rule_list.push(format!("{{{}}}", fields.join(",")));
    }
    let tls_ports = if rng.chance(50) { r#"[443]"# } else { r#"["440-447",8443]"# };
    format!(
        r#"{{"objects":[{}],"groups":[{}],"rules":[{}],"default_action":"{}","settings":{{"tls_ports":{tls_ports}}}}}"#,
        objects.join(","),
        groups.join(","),
        rule_list.join(","),
        rng.pick(&ACTIONS)
    )
}

fn rules_json_filler(rules: &mut Vec<String>, i: usize) {
    rules.push(format!(r#"{{"name":"r{i}","destination":["192.0.2.{}"],"action":"block"}}"#, i % 256));
}

#[test]
fn compiled_matches_linear_reference() {
    let mut queries = 0usize;
    let mut intercepts = 0usize;
    let mut rule_hits = 0usize;
    let mut deep_hits = 0usize;
    for seed in 0..505u64 {
        let mut rng = Rng(seed);
        // the last few have more than 4096 rules: more than one summary word per bitset
        let rules = (seed >= 500).then(|| 4_200 + rng.below(2_000));
        let json = random_policy(&mut rng, rules);
        let policy = Policy::from_json(&json).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{json}"));
        let compiled = CompiledPolicy::compile(policy.clone(), seed).unwrap();
        let linear = LinearMatcher::new(&policy, seed).unwrap();
        for _ in 0..400 {
            let (src_v6, dst_v6) = (rng.chance(40), rng.chance(40));
            let src = address(&mut rng, src_v6);
            let dst = address(&mut rng, dst_v6);
            let port = match rng.below(10) {
                0..=4 => 443,
                5 => 8443,
                _ => 438 + rng.below(14) as u16, // edges of port ranges and tls_ports
            };
            let sni = if rng.chance(20) { None } else { Some(*rng.pick(&SNI_QUERIES)) };
            let syn = compiled.decide_at_syn(src, dst, port);
            assert_eq!(syn, linear.decide_at_syn(src, dst, port), "seed {seed}: {src} {dst} {port}\n{json}");
            let verdict = compiled.decide_with_sni(src, dst, port, sni);
            let expected = linear.decide_with_sni(src, dst, port, sni);
            assert_eq!(verdict, expected, "seed {seed}: {src} {dst} {port} {sni:?}\n{json}");
            queries += 1;
            intercepts += usize::from(matches!(syn.action, tlsgate_policy::SynAction::Intercept));
            rule_hits += usize::from(verdict.rule.is_some());
            deep_hits += usize::from(verdict.rule.is_some_and(|r| r.index() >= 4_096));
        }
    }
    // the generator must exercise rules, SNI and defaults, not only the default
    println!("{queries} queries, {intercepts} intercepts at SYN, {rule_hits} decided by a rule, {deep_hits} past 4096");
    assert!(deep_hits > 1_000, "{deep_hits}");
    assert_eq!(queries, 202_000);
    assert!(intercepts > queries / 50, "{intercepts}");
    assert!(rule_hits > queries / 4 && rule_hits < queries * 19 / 20, "{rule_hits}");
}
