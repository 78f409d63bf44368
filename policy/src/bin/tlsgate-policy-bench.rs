//! Policy benchmark: 10,000 rules over objects holding 100,000 addresses (single
//! addresses, CIDRs and ranges, IPv4 and IPv6), compiled, then ~100k random decisions
//! at SYN and with SNI, timed one by one. The linear reference matcher is the baseline.
//!
//! `cargo run --release -p tlsgate-policy --bin tlsgate-policy-bench [-- --seed N]`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use tlsgate_policy::{CompiledPolicy, LinearMatcher, Policy};

const RULES: usize = 10_000;
const OBJECTS: usize = 2_000;
const PER_OBJECT: usize = 50;
const GROUPS: usize = 200;
const DOMAINS: usize = 1_000;
const QUERIES: usize = 100_000;
const BASELINE_QUERIES: usize = 1_000;

/// splitmix64: deterministic, so every run builds the same policy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn v4(rng: &mut Rng) -> u32 {
    0x0100_0000 + (rng.next() as u32) % 0xde00_0000 // 1.0.0.0 ..= 223.255.255.255
}

fn v6(rng: &mut Rng) -> u128 {
    0x2001_0db8_u128 << 96 | u128::from(rng.next()) << 32 | u128::from(rng.next() as u32)
}

/// One address-object entry and a concrete address inside it (for queries that hit).
fn entry(rng: &mut Rng) -> (String, IpAddr) {
    let kind = rng.below(100);
    if kind < 65 {
        let a = v4(rng);
        match kind {
            0..=34 => (Ipv4Addr::from(a).to_string(), IpAddr::V4(a.into())),
            35..=49 => {
                let prefix = 24 + rng.below(7) as u32;
                let net = a >> (32 - prefix) << (32 - prefix);
                (format!("{}/{prefix}", Ipv4Addr::from(net)), IpAddr::V4(net.into()))
            }
            _ => {
                let b = a.saturating_add(rng.below(256) as u32);
                (format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b)), IpAddr::V4(b.into()))
            }
        }
    } else {
        let a = v6(rng);
        match kind {
            65..=84 => (Ipv6Addr::from(a).to_string(), IpAddr::V6(a.into())),
            85..=92 => {
                let prefix = 112 + rng.below(15) as u32;
                let net = a >> (128 - prefix) << (128 - prefix);
                (format!("{}/{prefix}", Ipv6Addr::from(net)), IpAddr::V6(net.into()))
            }
            _ => {
                let b = a.saturating_add(u128::from(rng.below(65_536)));
                (format!("{}-{}", Ipv6Addr::from(a), Ipv6Addr::from(b)), IpAddr::V6(b.into()))
            }
        }
    }
}

struct Workload {
    policy: Policy,
    /// Addresses known to be inside objects, for queries that match rules.
    inside: Vec<IpAddr>,
    domains: Vec<String>,
}

fn build(rng: &mut Rng) -> Workload {
    let mut objects: Vec<serde_json::Value> = Vec::with_capacity(OBJECTS);
    let mut inside: Vec<IpAddr> = Vec::new();
    for i in 0..OBJECTS {
        let mut addresses: Vec<String> = Vec::with_capacity(PER_OBJECT);
        for _ in 0..PER_OBJECT {
            let (text, addr) = entry(rng);
            addresses.push(text);
            inside.push(addr);
        }
        objects.push(serde_json::json!({ "name": format!("obj-{i}"), "addresses": addresses }));
    }
    let mut names: Vec<String> = (0..OBJECTS).map(|i| format!("obj-{i}")).collect();
    let mut groups: Vec<serde_json::Value> = Vec::with_capacity(GROUPS);
    for i in 0..GROUPS {
        // the last tenth nest earlier groups
        let pool = if i >= GROUPS * 9 / 10 { names.len() } else { OBJECTS };
        let members: Vec<&String> =
            (0..2 + rng.below(7)).map(|_| &names[rng.below(pool as u64) as usize]).collect();
        groups.push(serde_json::json!({ "name": format!("grp-{i}"), "members": members }));
        names.push(format!("grp-{i}"));
    }
    let domains: Vec<String> = (0..DOMAINS).map(|i| format!("site{i}.example")).collect();
    let mut rules: Vec<serde_json::Value> = Vec::with_capacity(RULES);
    for i in 0..RULES - 1 {
        let mut rule = serde_json::Map::new();
        rule.insert("name".into(), format!("rule-{i}").into());
        let pick = |rng: &mut Rng, n: u64| -> Vec<String> {
            (0..1 + rng.below(n)).map(|_| names[rng.below(names.len() as u64) as usize].clone()).collect()
        };
        if rng.chance(40) {
            rule.insert("source".into(), pick(rng, 2).into());
        }
        {
            // every rule but the last names servers, so matches spread over the whole list
            let mut destination = pick(rng, 3);
            if rng.chance(10) {
                destination.push(entry(rng).0);
            }
            rule.insert("destination".into(), destination.into());
        }
        if rng.chance(25) {
            let ports = ["443", "8443", "443-8443"][rng.below(3) as usize];
            rule.insert("ports".into(), vec![ports].into());
        }
        if rng.chance(20) {
            let d = &domains[rng.below(DOMAINS as u64) as usize];
            let sni = if rng.chance(50) { format!("*.{d}") } else { format!("www.{d}") };
            rule.insert("sni".into(), vec![sni].into());
        }
        let action = ["decrypt", "do-not-decrypt", "block"][rng.below(3) as usize];
        rule.insert("action".into(), action.into());
        rules.push(rule.into());
    }
    rules.push(serde_json::json!({ "name": "Decrypt-All", "action": "decrypt" }));
    let json = serde_json::json!({
        "objects": objects, "groups": groups, "rules": rules,
        "settings": { "tls_ports": [443, 8443] },
    });
    let policy: Policy = serde_json::from_value(json).unwrap_or_default();
    Workload { policy, inside, domains }
}

struct Query {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    sni: Option<String>,
}

fn queries(rng: &mut Rng, w: &Workload, n: usize) -> Vec<Query> {
    let pick = |rng: &mut Rng, v6: bool| -> IpAddr {
        let known = w.inside[rng.below(w.inside.len() as u64) as usize];
        if rng.chance(60) && known.is_ipv6() == v6 {
            known
        } else if v6 {
            IpAddr::V6(v6_addr(rng))
        } else {
            IpAddr::V4(v4(rng).into())
        }
    };
    (0..n)
        .map(|_| {
            let family_v6 = rng.chance(35);
            let src = pick(rng, family_v6);
            let dst = pick(rng, family_v6);
            let port = if rng.chance(90) { 443 } else { 8443 };
            let d = &w.domains[rng.below(DOMAINS as u64) as usize];
            let sni = if rng.chance(10) { None } else { Some(format!("www.{d}")) };
            Query { src, dst, port, sni }
        })
        .collect()
}

fn v6_addr(rng: &mut Rng) -> Ipv6Addr {
    v6(rng).into()
}

/// Median, p99 and max of per-call times, and the mean of a tight loop.
fn timed(label: &str, qs: &[Query], mut call: impl FnMut(&Query)) {
    let mut ns: Vec<u64> = qs
        .iter()
        .map(|q| {
            let start = Instant::now();
            call(q);
            start.elapsed().as_nanos() as u64
        })
        .collect();
    let loop_start = Instant::now();
    qs.iter().for_each(&mut call);
    let mean = loop_start.elapsed().as_nanos() as f64 / qs.len() as f64;
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "  {label:<34} median {:>7} ns   p99 {:>8} ns   max {:>9} ns   loop mean {:>8.0} ns",
        at(0.5),
        at(0.99),
        at(1.0),
        mean
    );
}

fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let seed: u64 =
        std::env::args().skip_while(|a| a != "--seed").nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rng = Rng(seed);
    let started = Instant::now();
    let workload = build(&mut rng);
    let p = &workload.policy;
    let addresses: usize = p.objects.iter().map(|o| o.addresses.len()).sum();
    println!(
        "policy: {} rules, {} objects holding {addresses} addresses, {} groups (seed {seed}; generated in {})",
        p.rules.len(),
        p.objects.len(),
        p.groups.len(),
        ms(started.elapsed())
    );
    let json = p.to_json();
    let t = Instant::now();
    let parsed = match Policy::from_json(&json) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("generated policy is invalid: {e}");
            std::process::exit(1);
        }
    };
    println!("  JSON {} KiB, parse + validate {}", json.len() / 1024, ms(t.elapsed()));
    drop(json);
    let rss_before = rss_kib("VmRSS:").unwrap_or(0);
    let t = Instant::now();
    let compiled = match CompiledPolicy::compile(parsed, 1) {
        Ok(compiled) => compiled,
        Err(e) => {
            eprintln!("compile failed: {e}");
            std::process::exit(1);
        }
    };
    let compile_time = t.elapsed();
    let rss_after = rss_kib("VmRSS:").unwrap_or(0);
    let s = compiled.index_stats();
    println!("compile: {}", ms(compile_time));
    println!(
        "  memory: compiled structures {:.1} MiB; process RSS {:.1} -> {:.1} MiB, peak {:.1} MiB",
        compiled.memory_bytes() as f64 / (1024.0 * 1024.0),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
    println!(
        "  (segments, distinct bitsets): source v4 {:?} v6 {:?}, destination v4 {:?} v6 {:?}, ports {:?}",
        s.source_v4, s.source_v6, s.destination_v4, s.destination_v6, s.ports
    );

    let qs = queries(&mut rng, &workload, QUERIES);
    let mut intercepts = 0usize;
    let mut by_rule = 0usize;
    for q in &qs {
        let syn = compiled.decide_at_syn(q.src, q.dst, q.port);
        intercepts += usize::from(matches!(syn.action, tlsgate_policy::SynAction::Intercept));
        let verdict = compiled.decide_with_sni(q.src, q.dst, q.port, q.sni.as_deref());
        by_rule += usize::from(verdict.rule.is_some_and(|r| r.index() + 1 < compiled.rule_count()));
    }
    println!(
        "decisions over {QUERIES} random queries ({intercepts} intercepts at SYN, {by_rule} decided by a rule above the last):"
    );
    timed("compiled decide_at_syn", &qs, |q| {
        black_box(compiled.decide_at_syn(black_box(q.src), black_box(q.dst), q.port));
    });
    timed("compiled decide_with_sni", &qs, |q| {
        black_box(compiled.decide_with_sni(black_box(q.src), black_box(q.dst), q.port, q.sni.as_deref()));
    });

    let t = Instant::now();
    let linear = match LinearMatcher::new(compiled.policy(), 1) {
        Ok(linear) => linear,
        Err(e) => {
            eprintln!("linear reference failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "baseline: linear reference matcher (built in {}), {BASELINE_QUERIES} queries:",
        ms(t.elapsed())
    );
    let few = &qs[..BASELINE_QUERIES];
    for q in few {
        let expected = linear.decide_with_sni(q.src, q.dst, q.port, q.sni.as_deref());
        if compiled.decide_with_sni(q.src, q.dst, q.port, q.sni.as_deref()) != expected {
            eprintln!("MISMATCH with the reference at {} -> {}:{}", q.src, q.dst, q.port);
            std::process::exit(1);
        }
    }
    timed("linear decide_at_syn", few, |q| {
        black_box(linear.decide_at_syn(black_box(q.src), black_box(q.dst), q.port));
    });
    timed("linear decide_with_sni", few, |q| {
        black_box(linear.decide_with_sni(black_box(q.src), black_box(q.dst), q.port, q.sni.as_deref()));
    });
}
