//! Time and randomness, passed in.
//!
//! * [`Clock`]: the monotonic clock a worker reads once per loop (and hands down to
//!   the splices, the TLS layer and the remembered failures as milliseconds since
//!   the dataplane's epoch) and the wall clock of event times and forged
//!   certificates. Production runs on [`SystemClock`]; the in-process simulation
//!   runs on a [`VirtualClock`] it advances itself, so timeouts cost no waiting.
//! * [`Secrets`]: keys drawn from the operating system at start-up: the keyed,
//!   symmetric flow hash (flow table and software steering), the per-flow stack
//!   seeds that give TCP initial sequence numbers (RFC 6528: a keyed hash of the
//!   4-tuple and a counter, not a clock), and the TCP timestamp offsets.
//!
//! ```text
//!   run ─ RunOptions { clock, secrets } ─► WorkerSettings ─► Worker ─► Intercept ─► Splice (seed, ts offset)
//!                                                             │            └─► TlsFlow (now_ms, wall time)
//!                                                             └─► EventWriter (time_ns)
//! ```

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher13;
use tlsgate_certstore::pki_types::UnixTime;

use crate::flow::{FlowHasher, FlowKey};

/// Where time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The monotonic clock.
    fn now(&self) -> Instant;
    /// The wall clock: nanoseconds since the Unix epoch.
    fn unix_ns(&self) -> u64;
    /// The wall clock as certificates and rustls take it.
    fn unix_time(&self) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_nanos(self.unix_ns()))
    }
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn unix_ns(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    }
}

/// A clock that moves only when told to ([`VirtualClock::advance`]); it starts at
/// the real time of its creation.
#[derive(Debug)]
pub struct VirtualClock {
    origin: Instant,
    unix_origin_ns: u64,
    elapsed_ns: AtomicU64,
}

impl VirtualClock {
    /// A clock standing at the real time now.
    pub fn new() -> Arc<Self> {
        Arc::new(VirtualClock {
            origin: Instant::now(),
            unix_origin_ns: SystemClock.unix_ns(),
            elapsed_ns: AtomicU64::new(0),
        })
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.elapsed_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Virtual time since creation.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_ns.load(Ordering::Relaxed))
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }
    fn unix_ns(&self) -> u64 {
        self.unix_origin_ns + self.elapsed_ns.load(Ordering::Relaxed)
    }
}

/// The keys a dataplane draws at start-up.
#[derive(Clone)]
pub struct Secrets {
    /// The flow hash (flow table and software steering).
    pub flow_hash: FlowHasher,
    /// Key of the per-flow stack seeds (initial sequence numbers) and timestamp
    /// offsets.
    isn: [u64; 2],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Keys from the operating system's random source.
    pub fn random() -> std::io::Result<Self> {
        let mut b = [0u8; 48];
        getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Ok(Secrets { flow_hash: FlowHasher::new([w(0), w(1), w(2), w(3)]), isn: [w(4), w(5)] })
    }

    /// Keys derived from `seed` (tests and benchmarks that need to repeat a run).
    pub fn from_seed(seed: u64) -> Self {
        let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        Secrets { flow_hash: FlowHasher::new([next(), next(), next(), next()]), isn: [next(), next()] }
    }

    /// The seed of a flow's TCP stack, from which its initial sequence numbers are
    /// drawn: SipHash of the 4-tuple and the worker's flow counter under the ISN
    /// key (RFC 6528's F(); smoltcp's own generator then plays the part of the
    /// per-connection randomness).
    pub fn stack_seed(&self, key: &FlowKey, counter: u64) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.isn[0], self.isn[1]);
        h.write_u128(key.lo);
        h.write_u128(key.hi);
        h.write_u64(key.meta);
        h.write_u64(counter);
        h.finish()
    }

    /// A flow's TCP timestamp offset: a keyed hash of its address pair (RFC 7323
    /// §7.1: not predictable from outside, and the same for every connection
    /// between two hosts, so that the values a server sees on a reused 4-tuple keep
    /// increasing).
    pub fn ts_offset(&self, client: std::net::IpAddr, server: std::net::IpAddr) -> u32 {
        let mut h = SipHasher13::new_with_keys(self.isn[1], self.isn[0]);
        std::hash::Hash::hash(&(client, server), &mut h);
        h.finish() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::Spec;
    use crate::wire::parse::{parse, tcp_flags};

    fn key(port: u16) -> FlowKey {
        let f = Spec::tcp(
            "198.18.0.1".parse().unwrap(),
            port,
            "198.18.0.2".parse().unwrap(),
            443,
            tcp_flags::SYN,
        )
        .build();
        FlowKey::of(&parse(&f).unwrap()).0
    }

    #[test]
    fn stack_seeds_are_keyed_and_differ_per_connection() {
        let (a, b) = (Secrets::from_seed(1), Secrets::from_seed(2));
        let k = key(40000);
        assert_eq!(a.stack_seed(&k, 7), a.stack_seed(&k, 7), "a function of its inputs");
        assert_ne!(a.stack_seed(&k, 7), a.stack_seed(&k, 8), "a reused 4-tuple gets another seed");
        assert_ne!(a.stack_seed(&k, 7), a.stack_seed(&key(40001), 7));
        assert_ne!(a.stack_seed(&k, 7), b.stack_seed(&k, 7), "another secret, another seed");
        let r1 = Secrets::random().unwrap();
        let r2 = Secrets::random().unwrap();
        assert_ne!(r1.stack_seed(&k, 0), r2.stack_seed(&k, 0), "drawn at random");
        let (c, s) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        assert_eq!(a.ts_offset(c, s), a.ts_offset(c, s));
        assert_ne!(a.ts_offset(c, s), b.ts_offset(c, s));
    }

    #[test]
    fn virtual_time_moves_only_when_told() {
        let c = VirtualClock::new();
        let (t0, w0) = (c.now(), c.unix_ns());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((c.now(), c.unix_ns()), (t0, w0));
        c.advance(Duration::from_secs(3));
        assert_eq!(c.now().duration_since(t0), Duration::from_secs(3));
        assert_eq!(c.unix_ns() - w0, 3_000_000_000);
    }
}
