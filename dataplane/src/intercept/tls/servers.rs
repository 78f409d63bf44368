//! What the workers learn about servers, shared by them and kept for a while:
//! servers passed after a certificate failure whose action is `pass`, learned
//! exclusions (servers that support no mode the appliance offers, confirmed by
//! its own probe), and proofs of names (whether a server's certificate is valid
//! for an SNI). Each is a bounded map of (address, port, SNI) with an expiry in
//! ms of the workers' clock; consulted once per ClientHello, never on the fast
//! path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// A server: address, port, SNI.
pub type ServerKey = (IpAddr, u16, Option<String>);

/// A bounded map of servers to a value, each entry with its expiry.
pub struct ServerMap<V> {
    map: Mutex<HashMap<ServerKey, (u64, V)>>,
    cap: usize,
}

impl<V> Default for ServerMap<V> {
    fn default() -> Self {
        ServerMap::with_capacity(4096)
    }
}

impl<V> ServerMap<V> {
    /// At most `cap` entries.
    pub fn with_capacity(cap: usize) -> Self {
        ServerMap { map: Mutex::new(HashMap::new()), cap: cap.max(1) }
    }
}

impl<V: Clone> ServerMap<V> {
    /// Keeps `v` for `key` from `now_ms` for `ttl`. When full, expired entries go
    /// first, then the one that expires soonest (the oldest: one TTL for all).
    pub fn insert(&self, key: ServerKey, now_ms: u64, ttl: Duration, v: V) {
        let Ok(mut m) = self.map.lock() else { return };
        if m.len() >= self.cap && !m.contains_key(&key) {
            m.retain(|_, (until, _)| *until > now_ms);
            if m.len() >= self.cap {
                if let Some(oldest) = m.iter().min_by_key(|(_, (until, _))| *until).map(|(k, _)| k.clone()) {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(key, (now_ms.saturating_add(ttl.as_millis() as u64), v));
    }

    /// The value for `key`, unless it expired by `now_ms`.
    pub fn get(&self, key: &ServerKey, now_ms: u64) -> Option<V> {
        let m = self.map.lock().ok()?;
        m.get(key).filter(|(until, _)| *until > now_ms).map(|(_, v)| v.clone())
    }

    /// The entries alive at `now_ms`: key, ms left, value.
    pub fn entries(&self, now_ms: u64) -> Vec<(ServerKey, u64, V)> {
        let Ok(m) = self.map.lock() else { return Vec::new() };
        let mut out: Vec<_> = m
            .iter()
            .filter(|(_, (u, _))| *u > now_ms)
            .map(|(k, (u, v))| (k.clone(), u - now_ms, v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Removes the entries of `server` (all without one); returns how many went.
    pub fn clear(&self, server: Option<IpAddr>) -> usize {
        let Ok(mut m) = self.map.lock() else { return 0 };
        let before = m.len();
        m.retain(|(addr, _, _), _| server.is_some_and(|s| s != *addr));
        before - m.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, sni: &str) -> ServerKey {
        (IpAddr::from([198, 18, 0, last]), 443, Some(sni.to_string()))
    }

    #[test]
    fn entries_expire_are_bounded_and_cleared_by_server() {
        let m: ServerMap<u32> = ServerMap::with_capacity(3);
        let ttl = Duration::from_secs(10);
        m.insert(key(1, "a"), 0, ttl, 1);
        m.insert(key(2, "b"), 1_000, ttl, 2);
        m.insert(key(3, "c"), 2_000, ttl, 3);
        assert_eq!(m.get(&key(1, "a"), 9_999), Some(1));
        assert_eq!(m.get(&key(1, "a"), 10_000), None, "expired");
        // Full: the soonest to expire goes.
        m.insert(key(4, "d"), 3_000, ttl, 4);
        assert_eq!(m.get(&key(1, "a"), 3_000), None);
        assert_eq!(m.entries(3_000).len(), 3);
        assert_eq!(m.clear(Some(IpAddr::from([198, 18, 0, 2]))), 1);
        assert_eq!(m.get(&key(2, "b"), 3_000), None);
        assert_eq!(m.clear(None), 2);
        assert!(m.entries(3_000).is_empty());
    }
}
