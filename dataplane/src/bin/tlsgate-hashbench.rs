//! `tlsgate-hashbench`: what the keyed flow hash costs per frame, beside the
//! unkeyed hash it replaced (`make bench-fastpath` prints both).
//!
//! ```text
//! tlsgate-hashbench [--keys 1000] [--rounds 20000]
//! ```
//!
//! Hashes `--keys` distinct IPv4 TCP flow keys (as the benchmark's pcap has them)
//! `--rounds` times each with both functions, in alternation, and prints ns per
//! key for each (medians over 5 passes).

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use tlsgate_dataplane::clock::Secrets;
use tlsgate_dataplane::flow::FlowKey;

#[derive(Parser)]
#[command(about = "Cost per frame of the keyed flow hash beside the unkeyed one")]
struct Args {
    /// Distinct flow keys.
    #[arg(long, default_value_t = 1000)]
    keys: u32,
    /// Passes over the keys per measurement.
    #[arg(long, default_value_t = 20_000)]
    rounds: u32,
}

/// The unkeyed hash of the flow table and steering before the keyed one: anyone
/// could compute it.
fn unkeyed(k: &FlowKey) -> u64 {
    #[inline(always)]
    fn mix(h: u64, w: u64) -> u64 {
        let x = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^ (x >> 29)
    }
    let mut h = 0x243f_6a88_85a3_08d3;
    h = mix(h, k.lo as u64);
    h = mix(h, (k.lo >> 64) as u64);
    h = mix(h, k.hi as u64);
    h = mix(h, (k.hi >> 64) as u64);
    h = mix(h, k.meta);
    h ^ (h >> 32)
}

fn time(keys: &[FlowKey], rounds: u32, f: impl Fn(&FlowKey) -> u64) -> f64 {
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..rounds {
        for k in keys {
            acc = acc.wrapping_add(f(black_box(k)));
        }
    }
    black_box(acc);
    t.elapsed().as_nanos() as f64 / (f64::from(rounds) * keys.len() as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = Args::parse();
    let keys: Vec<FlowKey> = (0..a.keys)
        .map(|i| {
            let c = u128::from(0xc612_0000u32 | (i & 0xffff));
            let s = u128::from(0xc613_0000u32 | (i & 0xffff));
            let port = 1024 + (i % 60_000) as u16;
            FlowKey { lo: c, hi: s, meta: u64::from(port) | 443 << 16 | 6 << 32 }
        })
        .collect();
    let keyed = Secrets::random().expect("random keys").flow_hash;
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        old.push(time(&keys, a.rounds, unkeyed));
        new.push(time(&keys, a.rounds, |k| keyed.hash(k)));
    }
    let (old, new) = (median(old), median(new));
    println!("{:<44} {old:8.2} ns/frame", "unkeyed hash (before)");
    println!("{:<44} {new:8.2} ns/frame", "keyed hash (aHash, random key)");
    println!("{:<44} {:8.2} ns/frame", "added per frame", new - old);
}
