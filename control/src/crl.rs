//! CRLs fetched from the distribution points of the chains the dataplane
//! verified, cached with their nextUpdate and sent to the dataplane in the
//! snapshot. The dataplane never fetches.
//!
//! ```text
//!  dataplane ──CrlDistributionPoints{name, chain, urls}──► report(): the chain verified again here
//!      (a chain that does not validate with this trust store is ignored);   (Verified::Chain only)
//!      its certificates' http:// points queued (at most MAX_URLS in all)
//!  fetch thread: one URL at a time, when due
//!      resolve ─► refuse loopback, link-local, multicast, unspecified, this host's
//!                 addresses, management_networks
//!      GET over HTTP/1.0, no redirects, status_check_timeout_ms for all of it,
//!      crl_max_bytes for the body ─► check_crl (signed by an issuer of the chain)
//!      changed ─► a new snapshot to the dataplane (same configuration version)
//!  due again: at nextUpdate (5 min .. 24 h); after a failure 1, 2, 4 .. 60 min
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tlsgate_api::CrlInfo;
use tlsgate_certstore::pki_types::{CertificateDer, ServerName, UnixTime};
use tlsgate_certstore::{check_crl, verified_path, CrlFacts, ServerPath, TrustSnapshot};

/// Distribution points followed, in all.
pub const MAX_URLS: usize = 256;
/// All CRLs of one snapshot together (DER bytes; base64 in the snapshot, within
/// what the rest of the snapshot leaves of the link's 1 MiB frame).
pub const MAX_TOTAL_BYTES: usize = 512 << 10;
/// Distribution points followed per certificate.
const URLS_PER_CERT: usize = 2;
/// A changed list reaches the dataplane at most this often (each snapshot
/// rebuilds its TLS state), the first one at once.
const PUSH_INTERVAL: Duration = Duration::from_secs(30);
/// A response's header section, at most.
const MAX_HEADER_BYTES: usize = 16 << 10;
/// Refetch bounds after a success.
const MIN_REFRESH: Duration = Duration::from_secs(300);
const MAX_REFRESH: Duration = Duration::from_secs(86_400);
/// Retry bounds after a failure.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// An address block, `addr/len` (or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    len: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or one address.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (a, l) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr =
            a.trim().parse().map_err(|_| format!("{text:?} is not an address or a network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{text:?}: bad prefix length"))?
        };
        Ok(Network { addr, len })
    }

    /// Whether `ip` is in it (IPv4-mapped IPv6 addresses and networks as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        let (addr, len) = match self.addr {
            IpAddr::V6(v) if v.to_ipv4_mapped().is_some() && self.len >= 96 => {
                (unmapped(self.addr), self.len - 96)
            }
            _ => (self.addr, self.len),
        };
        let net = Network { addr, len };
        net.contains_exact(ip)
    }

    fn contains_exact(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32u32),
            IpAddr::V6(v) => (u128::from(v), 128u32),
        };
        let ((net, w), (a, w2)) = (bits(self.addr), bits(ip));
        if w != w2 {
            return false;
        }
        let shift = w - u32::from(self.len);
        shift >= w || (net >> shift) == (a >> shift)
    }
}

/// Where and how CRLs may be fetched.
#[derive(Debug, Clone)]
pub struct FetchRules {
    /// Everything of one fetch: resolution, connection, request, answer.
    pub timeout: Duration,
    /// The largest body kept.
    pub max_bytes: usize,
    /// Never fetched from (management networks).
    pub refused: Vec<Network>,
    /// Internal networks that may serve CRLs (an enterprise CA's), on any port.
    /// Elsewhere only globally routable addresses, on port 80.
    pub allowed: Vec<Network>,
    /// Tests only: loopback allowed, on any port (their servers listen there).
    pub allow_loopback: bool,
}

/// Address blocks that are not globally routable (RFC 6890 and successors):
/// never fetched from unless listed in `crl_networks`.
const INTERNAL: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
    "::/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fec0::/10",
];

impl FetchRules {
    /// The rules of the configuration.
    pub fn of(cfg: &crate::config::ControlConfig) -> FetchRules {
        FetchRules {
            timeout: Duration::from_millis(cfg.status_check_timeout_ms),
            max_bytes: cfg.crl_max_bytes,
            refused: cfg.management_networks.iter().filter_map(|n| Network::parse(n).ok()).collect(),
            allowed: cfg.crl_networks.iter().filter_map(|n| Network::parse(n).ok()).collect(),
            allow_loopback: false,
        }
    }

    /// Why `addr` may not be fetched from, if it may not.
    pub fn refusal(&self, addr: SocketAddr) -> Option<&'static str> {
        let ip = unmapped(addr.ip());
        let allowed = self.allowed.iter().any(|n| n.contains(ip));
        let loopback = ip.is_loopback();
        let link_local = match ip {
            IpAddr::V4(v) => v.is_link_local(),
            IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
        };
        let broadcast = matches!(ip, IpAddr::V4(v) if v.is_broadcast());
        if loopback && !self.allow_loopback {
            Some("a loopback address")
        } else if ip.is_unspecified() || ip.is_multicast() || broadcast {
            Some("not a unicast address")
        } else if link_local {
            Some("a link-local address")
        } else if self.refused.iter().any(|n| n.contains(ip)) {
            Some("in control.management_networks")
        } else if !loopback && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok() {
            // Bindable: an address of this host (its management interface, ...).
            Some("an address of this appliance")
        } else if !loopback
            && !allowed
            && INTERNAL.iter().any(|n| Network::parse(n).is_ok_and(|n| n.contains(ip)))
        {
            Some("not globally routable (list it in control.crl_networks)")
        } else if !loopback && !allowed && addr.port() != 80 {
            Some("a port other than 80 outside control.crl_networks")
        } else {
            None
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An `http://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The host as written (a name, an IPv4 address or `[v6]`).
    pub host: String,
    /// The port (80 by default).
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: String,
}

impl HttpUrl {
    /// Parses an `http://` URL; no user info, printable ASCII only.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        if !url.bytes().all(|b| b.is_ascii_graphic()) || url.len() > 2048 {
            return Err("not a printable URL of at most 2048 characters".into());
        }
        let rest = url
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or("only http:// is fetched")?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        if authority.contains('@') {
            return Err("user information in the URL".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or("unclosed [")?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = if port.is_empty() { 80 } else { port.parse().map_err(|_| format!("port {port:?}"))? };
        Ok(HttpUrl { host, port, path: path.split('#').next().unwrap_or("/").to_string() })
    }
}

/// Fetches `url` under `rules`: the body of a 200 answer.
pub fn fetch(url: &str, rules: &FetchRules) -> Result<Vec<u8>, String> {
    let u = HttpUrl::parse(url)?;
    let deadline = Instant::now() + rules.timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let addrs = resolve(&u, left())?;
    let mut why = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        if let Some(r) = rules.refusal(addr) {
            why = format!("{addr} is {r}");
            continue;
        }
        match TcpStream::connect_timeout(&addr, left()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => why = format!("connecting to {addr}: {e}"),
        }
    }
    let mut s = stream.ok_or(why)?;
    s.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let mut host = if u.host.contains(':') { format!("[{}]", u.host) } else { u.host.clone() };
    if u.port != 80 {
        host = format!("{host}:{}", u.port);
    }
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tlsgate-control\r\nAccept: application/pkix-crl\r\nConnection: close\r\n\r\n",
        u.path
    );
    s.write_all(request.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
    let cap = MAX_HEADER_BYTES + rules.max_bytes;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if Instant::now() >= deadline {
            return Err(format!("no complete answer within {:?}", rules.timeout));
        }
        s.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() > cap {
                    return Err(format!("the answer exceeds {} bytes", rules.max_bytes));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("no complete answer within {:?}", rules.timeout))
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    body(&got, rules.max_bytes)
}

/// Resolves `u`'s host within `timeout` (the resolver runs on a thread of its own).
fn resolve(u: &HttpUrl, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = u.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, u.port)]);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let target = (u.host.clone(), u.port);
    std::thread::Builder::new()
        .name("tg-crl-resolve".into())
        .spawn(move || {
            let _ = tx.send(target.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
        })
        .map_err(|e| e.to_string())?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("resolving {}: {e}", u.host)),
        Err(_) => Err(format!("resolving {} took longer than {timeout:?}", u.host)),
    }
}

/// The body of a whole HTTP/1.x answer: 200 only (redirects are not followed),
/// identity encoding, the length it announced.
fn body(answer: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .filter(|&i| i <= MAX_HEADER_BYTES)
        .ok_or("no complete header section")?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| "header section is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        return Err("not an HTTP/1 answer".into());
    }
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("a bad header line")?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?),
            "transfer-encoding" => return Err("Transfer-Encoding refused".into()),
            "content-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err("Content-Encoding refused".into())
            }
            _ => {}
        }
    }
    // The code only (three digits): nothing else of the answer is repeated.
    let code: String = code.chars().take(3).filter(char::is_ascii_digit).collect();
    match code.as_str() {
        "200" => {}
        c if c.starts_with('3') => return Err(format!("HTTP {c}: redirects are not followed")),
        c => return Err(format!("HTTP {c}")),
    }
    let body = &answer[end + 4..];
    if body.len() > max {
        return Err(format!("the CRL exceeds {max} bytes"));
    }
    if length.is_some_and(|n| n != body.len()) {
        return Err(format!("{} bytes of the {} announced", body.len(), length.unwrap_or(0)));
    }
    Ok(body.to_vec())
}

/// One distribution point.
struct Entry {
    /// The verified path whose certificate names it.
    path: ServerPath,
    /// When a dataplane last reported a chain naming it (the least recent is
    /// evicted when [`MAX_URLS`] are followed; the most recent go first into a
    /// snapshot).
    reported: Instant,
    /// A server that completed its handshake named it (held the key). Points
    /// only named by refused chains (replayable by anyone) never evict such a
    /// point and come last in a snapshot.
    proven: bool,
    der: Option<Vec<u8>>,
    facts: Option<CrlFacts>,
    due: Instant,
    failures: u32,
    error: Option<String>,
}

/// The control plane's CRLs.
pub struct CrlCache {
    rules: FetchRules,
    enabled: bool,
    entries: Mutex<HashMap<String, Entry>>,
    wake: Condvar,
    trust: Mutex<Option<Arc<TrustSnapshot>>>,
    /// A cached list was evicted: the dataplane's snapshot should lose it.
    evicted: AtomicBool,
}

fn now_unix() -> i64 {
    UnixTime::now().as_secs() as i64
}

impl CrlCache {
    /// A cache fetching under `rules` (nothing when `enabled` is false).
    pub fn new(rules: FetchRules, enabled: bool) -> CrlCache {
        CrlCache {
            rules,
            enabled,
            entries: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            trust: Mutex::new(None),
            evicted: AtomicBool::new(false),
        }
    }

    /// The trust store chains are checked with (set at every configuration version).
    /// Points whose path's anchor is no longer trusted are dropped.
    pub fn set_trust(&self, trust: Arc<TrustSnapshot>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|_, e| trust.has_ca(&e.path.anchor));
        if entries.len() != before {
            tracing::info!(
                dropped = before - entries.len(),
                "CRL distribution points of CAs no longer trusted dropped"
            );
        }
        drop(entries);
        *self.trust.lock().unwrap_or_else(PoisonError::into_inner) = Some(trust);
    }

    /// A chain the dataplane verified for `name` (base64 DER, leaf first): when
    /// it verifies here too, the http:// distribution points of the
    /// certificates of its path (not of what else the server sent; two per
    /// certificate) are followed. Answers what was done.
    pub fn report(&self, name: &str, chain: &[String], proven: bool) -> Result<String, String> {
        if !self.enabled {
            return Ok("CRL fetching is off (control.crl_fetch)".into());
        }
        use base64::Engine as _;
        let chain: Vec<CertificateDer<'static>> = chain
            .iter()
            .take(8)
            .map(|c| base64::engine::general_purpose::STANDARD.decode(c).map(CertificateDer::from))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("chain: {e}"))?;
        let (server, intermediates) = chain.split_first().ok_or("no server certificate")?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| format!("name {name:?}: {e}"))?;
        let trust =
            self.trust.lock().unwrap_or_else(PoisonError::into_inner).clone().ok_or("no trust store yet")?;
        let path = match verified_path(&trust, server, intermediates, &server_name, UnixTime::now()) {
            Ok(Some(path)) => path,
            Ok(None) => return Ok("a pinned certificate: no revocation check".into()),
            Err(f) => return Err(format!("the chain does not validate here: {}", f.reason)),
        };
        let urls: Vec<String> = path
            .certs
            .iter()
            .flat_map(|c| {
                tlsgate_certstore::crl_distribution_points(c.as_ref()).into_iter().take(URLS_PER_CERT)
            })
            .collect();
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut added = 0;
        for url in &urls {
            if let Some(e) = entries.get_mut(url) {
                e.reported = now;
                e.proven |= proven;
                continue;
            }
            if entries.len() >= MAX_URLS {
                // Room: an unproven point first, then one without a list, then
                // the least recently reported; an unproven report never evicts
                // a proven point.
                let Some(old) = victim(&entries, proven) else {
                    tracing::info!(url = %url, "CRL distribution point not followed: {MAX_URLS} proven ones already");
                    continue;
                };
                tracing::info!(url = %old, "CRL distribution point no longer followed ({MAX_URLS} at most)");
                if entries.remove(&old).is_some_and(|e| e.der.is_some()) {
                    self.evicted.store(true, Ordering::Relaxed);
                }
            }
            tracing::info!(url = %url, name, "CRL distribution point to fetch");
            entries.insert(
                url.clone(),
                Entry {
                    path: path.clone(),
                    reported: now,
                    proven,
                    der: None,
                    facts: None,
                    due: now,
                    failures: 0,
                    error: None,
                },
            );
            added += 1;
        }
        drop(entries);
        self.wake.notify_all();
        Ok(format!("{added} of {} distribution points new", urls.len()))
    }

    /// The cached CRLs for a snapshot, base64 DER: the newest list per scope
    /// (issuer, issuingDistributionPoint, signer: webpki uses the first list
    /// authoritative for a certificate), proven points first, then the most
    /// recently reported, as many as fit in `budget` bytes of base64 and
    /// [`MAX_TOTAL_BYTES`].
    pub fn snapshot_crls(&self, budget: usize) -> Vec<String> {
        use base64::Engine as _;
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut newest: HashMap<[u8; 32], (&Entry, &[u8], &CrlFacts)> = HashMap::new();
        for e in entries.values() {
            let (Some(der), Some(f)) = (&e.der, &e.facts) else { continue };
            let slot = newest.entry(f.scope).or_insert((e, der, f));
            if (f.this_update, &der[..]) > (slot.2.this_update, slot.1) {
                *slot = (e, der, f);
            }
        }
        let mut lists: Vec<_> = newest.into_values().collect();
        lists.sort_by_key(|(e, _, f)| (std::cmp::Reverse((e.proven, e.reported)), f.scope));
        let (mut der_total, mut b64_total) = (0, 0);
        let mut out = Vec::new();
        for (_, der, f) in lists {
            let b64 = der.len().div_ceil(3) * 4 + 3;
            if der_total + der.len() > MAX_TOTAL_BYTES || b64_total + b64 > budget {
                tracing::warn!(issuer = %f.issuer, "CRL left out of the snapshot: no room (its certificates' status is unknown)");
                continue;
            }
            der_total += der.len();
            b64_total += b64;
            out.push(base64::engine::general_purpose::STANDARD.encode(der));
        }
        out
    }

    /// Every distribution point, as shown.
    pub fn infos(&self) -> Vec<CrlInfo> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<CrlInfo> = entries
            .iter()
            .map(|(url, e)| CrlInfo {
                url: url.clone(),
                state: match (&e.der, &e.error) {
                    (Some(_), _) => "cached",
                    (None, Some(_)) => "failed",
                    (None, None) => "pending",
                }
                .into(),
                issuer: e.facts.as_ref().map(|f| f.issuer.clone()),
                revoked: e.facts.as_ref().map_or(0, |f| f.revoked),
                bytes: e.der.as_ref().map_or(0, Vec::len),
                next_update: e.facts.as_ref().map(|f| f.next_update),
                error: e.error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// Fetches what is due until `stop`; `changed` is called when the cached
    /// CRLs changed (the caller sends a new snapshot).
    pub fn run(&self, stop: &AtomicBool, changed: &dyn Fn()) {
        let mut pushed: Option<Instant> = None;
        let mut dirty = false;
        while !stop.load(Ordering::Relaxed) {
            dirty |= self.evicted.swap(false, Ordering::Relaxed);
            if dirty && pushed.is_none_or(|t| t.elapsed() >= PUSH_INTERVAL) {
                changed();
                pushed = Some(Instant::now());
                dirty = false;
            }
            let due = {
                let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let next = entries.iter().filter(|(_, e)| e.due <= now).min_by_key(|(_, e)| e.due);
                match next {
                    Some((url, e)) => Some((url.clone(), e.path.clone())),
                    None => {
                        let _ = self.wake.wait_timeout(entries, Duration::from_secs(1));
                        None
                    }
                }
            };
            let Some((url, path)) = due else { continue };
            let result = fetch(&url, &self.rules).and_then(|der| {
                check_crl(&path, &der, now_unix()).map(|f| (der, f)).map_err(|e| e.to_string())
            });
            dirty |= self.settle(&url, result);
        }
    }

    /// Records a fetch's result; whether the cached CRLs changed.
    fn settle(&self, url: &str, result: Result<(Vec<u8>, CrlFacts), String>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(e) = entries.get_mut(url) else { return false };
        // An older list than the one cached (replayed on the path, or a stale
        // mirror) would hide what the newer one revokes.
        let result = result.and_then(|(der, facts)| match &e.facts {
            Some(cached) if facts.this_update < cached.this_update => Err(format!(
                "a list older than the one cached (thisUpdate {} < {}): kept the cached one",
                facts.this_update, cached.this_update
            )),
            _ => Ok((der, facts)),
        });
        match result {
            Ok((der, facts)) => {
                let now = now_unix();
                let wait = Duration::from_secs(facts.next_update.saturating_sub(now).max(0) as u64)
                    .clamp(MIN_REFRESH, MAX_REFRESH);
                tracing::info!(url, issuer = %facts.issuer, revoked = facts.revoked, bytes = der.len(), next_update = ?facts.next_update, "CRL fetched");
                let changed = e.der.as_deref() != Some(&der[..]);
                e.der = Some(der);
                e.facts = Some(facts);
                e.due = Instant::now() + wait;
                e.failures = 0;
                e.error = None;
                changed
            }
            Err(why) => {
                let wait = FIRST_RETRY.saturating_mul(1 << e.failures.min(6)).min(MAX_RETRY);
                tracing::warn!(url, error = %why, retry_s = wait.as_secs(), "CRL fetch failed (a cached list is kept)");
                e.failures += 1;
                e.error = Some(why);
                e.due = Instant::now() + wait;
                false
            }
        }
    }
}

/// The point that makes room for a new one reported `proven` (or not): an
/// unproven point first, then one without a list, then the least recently
/// reported; an unproven report never evicts a proven point.
fn victim(entries: &HashMap<String, Entry>, proven: bool) -> Option<String> {
    entries
        .iter()
        .filter(|(_, e)| proven || !e.proven)
        .min_by_key(|(_, e)| (e.proven, e.der.is_some(), e.reported))
        .map(|(u, _)| u.clone())
}

/// Starts the fetch thread: CRL changes reach the dataplane through `changed`.
pub fn spawn(
    cache: Arc<CrlCache>,
    stop: Arc<AtomicBool>,
    changed: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("tg-crl-fetch".into()).spawn(move || cache.run(&stop, &changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn rules() -> FetchRules {
        FetchRules {
            timeout: Duration::from_millis(800),
            max_bytes: 4096,
            refused: vec![Network::parse("198.51.100.0/24").unwrap()],
            allowed: vec![Network::parse("10.9.0.0/16").unwrap()],
            allow_loopback: true,
        }
    }

    /// A server on loopback answering each connection with `answer` after
    /// reading the request; the requests it read.
    fn serve(answer: Vec<u8>, delay: Duration) -> (String, std::sync::mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ca.crl", l.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for s in l.incoming().take(1) {
                let mut s = s.unwrap();
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&req[..n]).to_string());
                std::thread::sleep(delay);
                let _ = s.write_all(&answer);
            }
        });
        (url, rx)
    }

    #[test]
    fn fetches_a_body_and_refuses_what_it_must() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: 4\r\n\r\n\x30\x02\x05\x00".to_vec();
        let (url, req) = serve(ok, Duration::ZERO);
        assert_eq!(fetch(&url, &rules()).unwrap(), b"\x30\x02\x05\x00");
        let req = req.recv().unwrap();
        assert!(req.starts_with("GET /ca.crl HTTP/1.0\r\n") && req.contains("Host: 127.0.0.1:"), "{req}");

        let cases: [(&[u8], &str); 5] = [
            (
                b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9469/metrics\r\n\r\n",
                "redirects are not followed",
            ),
            (b"HTTP/1.1 404 Not Found\r\n\r\n", "HTTP 404"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
                "Transfer-Encoding",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "3 bytes of the 10 announced"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1 answer"),
        ];
        for (answer, why) in cases {
            let (url, _) = serve(answer.to_vec(), Duration::ZERO);
            let e = fetch(&url, &rules()).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(0u8, 5000));
        let (url, _) = serve(big, Duration::ZERO);
        assert!(fetch(&url, &rules()).unwrap_err().contains("exceeds 4096 bytes"));
        // A server that answers too late: the time limit holds.
        let (url, _) = serve(b"HTTP/1.1 200 OK\r\n\r\nx".to_vec(), Duration::from_secs(3));
        let t = Instant::now();
        assert!(fetch(&url, &rules()).unwrap_err().contains("no complete answer within"));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn addresses_never_fetched_from() {
        let strict = FetchRules { allow_loopback: false, ..rules() };
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        for (addr, why) in [
            ("127.0.0.1:80", "a loopback address"),
            ("[::1]:80", "a loopback address"),
            ("[::ffff:127.0.0.1]:80", "a loopback address"),
            ("169.254.169.254:80", "a link-local address"),
            ("[fe80::1]:80", "a link-local address"),
            ("0.0.0.0:80", "not a unicast address"),
            ("224.0.0.1:80", "not a unicast address"),
            ("198.51.100.7:80", "in control.management_networks"),
            ("10.1.2.3:80", "not globally routable (list it in control.crl_networks)"),
            ("192.168.1.1:80", "not globally routable (list it in control.crl_networks)"),
            ("100.100.100.200:80", "not globally routable (list it in control.crl_networks)"),
            ("[fd00:ec2::254]:80", "not globally routable (list it in control.crl_networks)"),
            ("[::ffff:10.1.2.3]:80", "not globally routable (list it in control.crl_networks)"),
            ("93.184.215.14:8080", "a port other than 80 outside control.crl_networks"),
        ] {
            assert_eq!(strict.refusal(at(addr)), Some(why), "{addr}");
        }
        assert_eq!(strict.refusal(at("93.184.215.14:80")), None, "public, port 80");
        assert_eq!(strict.refusal(at("10.9.1.1:8080")), None, "in crl_networks, any port");
        let e = fetch("http://127.0.0.1:9469/metrics", &strict).unwrap_err();
        assert_eq!(e, "127.0.0.1:9469 is a loopback address");
        for bad in ["https://x/crl", "http://u@x/crl", "http://x/a b", "http:///crl", "http://x:99999/"] {
            assert!(fetch(bad, &strict).is_err(), "{bad}");
        }
    }

    /// A point reported `age` seconds ago, with a list when `cached`.
    fn entry(proven: bool, cached: bool, age: u64) -> Entry {
        let t = Instant::now();
        Entry {
            path: ServerPath { certs: Vec::new(), anchor: CertificateDer::from(Vec::new()) },
            reported: t - Duration::from_secs(age),
            proven,
            der: cached.then(|| vec![1]),
            facts: None,
            due: t,
            failures: 0,
            error: None,
        }
    }

    #[test]
    fn an_older_list_never_replaces_a_newer_one() {
        let cache = CrlCache::new(rules(), true);
        let url = "http://192.0.2.7/ca.crl";
        cache.entries.lock().unwrap().insert(url.into(), entry(true, false, 0));
        let facts = |this_update| CrlFacts {
            issuer: "CN=ca".into(),
            scope: [1; 32],
            this_update,
            next_update: this_update + 10,
            revoked: 0,
        };
        assert!(cache.settle(url, Ok((vec![2], facts(2000)))));
        assert!(!cache.settle(url, Ok((vec![1], facts(1000)))));
        let info = &cache.infos()[0];
        assert_eq!((info.state.as_str(), info.bytes), ("cached", 1));
        assert!(info.error.as_deref().unwrap().contains("older than the one cached"), "{info:?}");
        assert_eq!(cache.snapshot_crls(1 << 20), vec!["Ag==".to_string()], "the newer list stays");
        assert!(cache.snapshot_crls(4).is_empty(), "no room: left out");
        assert!(cache.settle(url, Ok((vec![3], facts(3000)))), "a newer one replaces it");
    }

    /// Shards of a partitioned CRL (one issuer, an issuingDistributionPoint
    /// each) all reach the dataplane; of two lists of one scope, the newest.
    #[test]
    fn one_list_per_scope_the_newest() {
        let cache = CrlCache::new(rules(), true);
        for url in ["http://a/1.crl", "http://a/2.crl", "http://b/1.crl"] {
            cache.entries.lock().unwrap().insert(url.into(), entry(true, false, 0));
        }
        let facts = |scope: u8, this_update| CrlFacts {
            issuer: "CN=ca".into(),
            scope: [scope; 32],
            this_update,
            next_update: this_update + 10,
            revoked: 0,
        };
        cache.settle("http://a/1.crl", Ok((vec![1], facts(1, 100))));
        cache.settle("http://a/2.crl", Ok((vec![2], facts(2, 100))));
        cache.settle("http://b/1.crl", Ok((vec![3], facts(1, 200))));
        let mut got = cache.snapshot_crls(1 << 20);
        got.sort();
        assert_eq!(got, vec!["Ag==".to_string(), "Aw==".to_string()], "shard 2, and the newest of scope 1");
    }

    #[test]
    fn unproven_points_never_evict_proven_ones() {
        let mut entries: HashMap<String, Entry> = HashMap::new();
        entries.insert("proven-old".into(), entry(true, true, 100));
        entries.insert("proven-new".into(), entry(true, true, 1));
        assert_eq!(victim(&entries, false), None, "an unproven report evicts nothing proven");
        assert_eq!(victim(&entries, true).as_deref(), Some("proven-old"));
        entries.insert("proven-pending".into(), entry(true, false, 1));
        assert_eq!(victim(&entries, true).as_deref(), Some("proven-pending"), "no list yet goes first");
        entries.insert("unproven".into(), entry(false, true, 0));
        assert_eq!(victim(&entries, true).as_deref(), Some("unproven"));
        assert_eq!(victim(&entries, false).as_deref(), Some("unproven"));
    }

    #[test]
    fn networks() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()) && !n.contains("10.2.0.1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(!Network::parse("::/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
