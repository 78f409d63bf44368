//! The client leg: the worker's forged certificates and client-leg configurations,
//! answering the client's ClientHello once the server is verified, and what a
//! client-leg failure means.

use std::collections::HashMap;
use std::sync::Arc;

use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName, UnixTime};
use tlsgate_certstore::rustls::server::Accepted;
use tlsgate_certstore::rustls::{self, ServerConnection};
use tlsgate_certstore::{server_config, CertifiedKey, ForgeCache, LeafKey, SingleCertResolver};

use super::config::{Signing, TlsShared};
use super::{fatal_alert, server, TlsInfo, ALERT_HANDSHAKE_FAILURE};
use crate::intercept::outcome::Ended;

/// A worker's TLS state: the shared settings and its own forged-certificate cache
/// (with the worker's reused leaf key).
pub struct TlsWorker {
    /// Shared settings.
    pub shared: Arc<TlsShared>,
    /// Forged certificates.
    pub forge: ForgeCache,
    /// Certificates forged by the untrust CA (servers whose certificate failed a
    /// check whose action is `untrust`).
    untrust_forge: ForgeCache,
    /// Client-leg configurations per (forged certificate, ALPN): built once each,
    /// and their session caches let returning clients resume.
    configs: std::collections::HashMap<(usize, Vec<u8>), Arc<rustls::ServerConfig>>,
    /// This worker (its signer inbox).
    worker: usize,
    /// The signer's answers, by ticket, until their flow takes them (bounded:
    /// past 4,096 the oldest tickets go first; tickets only grow).
    signed: std::collections::BTreeMap<u64, Result<CertificateDer<'static>, String>>,
}

/// A token bucket per client (an IPv4 address, an IPv6 /64, as admission counts
/// sources), shared by all workers: steering spreads a client's flows over every
/// worker, and an IPv6 client picks any address of its /64. Bounded: past
/// 65,536 sources all are forgotten.
pub struct SourceBuckets {
    map: std::sync::Mutex<HashMap<std::net::IpAddr, (f64, u64)>>,
    per_s: f64,
    burst: f64,
}

impl SourceBuckets {
    /// `per_s` new names a second per source, `burst` at once.
    pub fn new(per_s: u32, burst: u32) -> Self {
        SourceBuckets { map: Default::default(), per_s: f64::from(per_s), burst: f64::from(burst) }
    }

    /// The source `addr` counts under: itself (IPv4), its /64 (IPv6).
    fn source(addr: std::net::IpAddr) -> std::net::IpAddr {
        match addr {
            std::net::IpAddr::V4(_) => addr,
            std::net::IpAddr::V6(a) => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1)))
            }
        }
    }

    /// A token of `client`'s source's bucket at `now_ms`, if it has one.
    pub fn take(&self, client: std::net::IpAddr, now_ms: u64) -> bool {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= 65_536 {
            map.clear();
        }
        let (tokens, at) = map.entry(Self::source(client)).or_insert((self.burst, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*at) as f64 / 1000.0 * self.per_s).min(self.burst);
        *at = (*at).max(now_ms);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A forged certificate for the client leg, or where it stands.
pub(super) enum Leaf {
    /// Ready to answer the client.
    Ready(Arc<CertifiedKey>),
    /// Asked of the signer: the flow waits for this ticket.
    Pending(u64),
    /// None will come: the flow ends so.
    Failed(Ended),
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn signer_failed(why: impl Into<String>) -> Ended {
    Ended::new(EventKind::Abort, Leg::None, Phase::ClientHandshake, Cause::SignerUnavailable)
        .detail(why.into())
}

impl TlsWorker {
    /// Worker `worker`'s state; generates its leaf keys.
    pub fn new(shared: Arc<TlsShared>, worker: usize) -> Result<Self, crate::Error> {
        let key = LeafKey::generate().map_err(crate::Error::LeafKey)?;
        let forge = match &shared.signing {
            Signing::Local(ca) => ForgeCache::new(ca.clone(), key, shared.cache),
            Signing::Remote { sent_chain, .. } => ForgeCache::remote(sent_chain.clone(), key, shared.cache),
        };
        let key = LeafKey::generate().map_err(crate::Error::LeafKey)?;
        let untrust_forge = ForgeCache::new(shared.untrust.clone(), key, shared.cache);
        Ok(TlsWorker {
            shared,
            forge,
            untrust_forge,
            configs: Default::default(),
            worker,
            signed: Default::default(),
        })
    }

    /// Moves the signer's answers for this worker in; the tickets that got one
    /// (their flows are woken).
    pub fn collect_signed(&mut self) -> Vec<u64> {
        let Signing::Remote { link, .. } = &self.shared.signing else { return Vec::new() };
        let mut tickets = Vec::new();
        while let Some(leaf) = link.take(self.worker) {
            let result = match (leaf.cert, leaf.error) {
                (Some(c), _) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(c)
                        .map(CertificateDer::from)
                        .map_err(|e| format!("the signer's certificate: {e}"))
                }
                (None, e) => Err(e.unwrap_or_else(|| "refused".into())),
            };
            // Bounded: answers nobody waits for any more (their flow ended) go,
            // the oldest first; the flows waiting now hold the newest tickets.
            while self.signed.len() >= 4096 {
                self.signed.pop_first();
            }
            self.signed.insert(leaf.id, result);
            tickets.push(leaf.id);
        }
        tickets
    }

    /// The certificate for the client: from the cache, forged here (untrust CA,
    /// or a local decryption CA), or asked of the signer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn leaf(
        &mut self,
        requested: &ServerName<'static>,
        chain: &[CertificateDer<'static>],
        client: std::net::IpAddr,
        info: &mut TlsInfo,
        now: UnixTime,
        now_ms: u64,
    ) -> Leaf {
        let untrusted = info.untrusted.is_some() || info.untrusted_resumed;
        if untrusted || matches!(self.shared.signing, Signing::Local(_)) {
            let forge = if untrusted { &mut self.untrust_forge } else { &mut self.forge };
            let hits = forge.stats().hits;
            let forged = forge.get_or_forge(requested, chain, now);
            info.forge_cached = forge.stats().hits > hits;
            return match forged {
                Ok(f) => Leaf::Ready(f),
                Err(e) => Leaf::Failed(
                    server::abort(Phase::ServerHandshake, Cause::Internal).detail(format!("forging: {e}")),
                ),
            };
        }
        if let Some(hit) = self.forge.lookup(requested, chain, now) {
            info.forge_cached = true;
            return Leaf::Ready(hit);
        }
        if !self.shared.new_names.take(client, now_ms) {
            return Leaf::Failed(signer_failed(format!(
                "too many new names from {client} (tls.signer_new_names_per_s {})",
                self.shared.signer_per_source.0
            )));
        }
        let Signing::Remote { link, .. } = &self.shared.signing else { unreachable!("local handled above") };
        let name = tlsgate_certstore::server_name_text(requested);
        let chain_b64 = chain.iter().map(|c| b64(c.as_ref())).collect();
        match link.submit(self.worker, name, chain_b64, b64(&self.forge.leaf_public_key())) {
            Ok(ticket) => Leaf::Pending(ticket),
            Err(why) => Leaf::Failed(signer_failed(why)),
        }
    }

    /// Why a flow for `requested` cannot get its certificate now, if so: leaves
    /// are signed by the control plane, the name is not cached, and the signer is
    /// unreachable or overloaded.
    pub(super) fn signer_unavailable(&self, requested: &ServerName<'static>) -> Option<&'static str> {
        let Signing::Remote { link, .. } = &self.shared.signing else { return None };
        let why = link.unavailable()?;
        (!self.forge.has_name(requested)).then_some(why)
    }

    /// The signer's answer for `ticket`, once it came: the certificate (now
    /// cached) or the flow's end.
    pub(super) fn signed(
        &mut self,
        ticket: u64,
        requested: &ServerName<'static>,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Option<Result<Arc<CertifiedKey>, Ended>> {
        let answer = self.signed.remove(&ticket)?;
        Some(match answer {
            Ok(der) => self
                .forge
                .insert_signed(requested, chain, der, now)
                .map_err(|e| signer_failed(format!("the signer's certificate: {e}"))),
            Err(why) => Err(signer_failed(why)),
        })
    }

    /// The client-leg configuration for `forged` with the server's ALPN choice.
    fn server_config(
        &mut self,
        forged: Arc<CertifiedKey>,
        alpn: Option<&[u8]>,
    ) -> Result<Arc<rustls::ServerConfig>, tlsgate_certstore::Error> {
        // The map holds the certificate (through the config), so its address is not
        // reused while the entry exists.
        let key = (Arc::as_ptr(&forged) as usize, alpn.unwrap_or_default().to_vec());
        if let Some(c) = self.configs.get(&key) {
            return Ok(c.clone());
        }
        let protocols: Vec<Vec<u8>> = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
        let cfg = server_config(self.shared.profile, Arc::new(SingleCertResolver(forged)), &protocols)?;
        if self.configs.len() >= self.shared.cache {
            self.configs.clear();
        }
        self.configs.insert(key, cfg.clone());
        Ok(cfg)
    }

    /// Answers the client's hello with `forged` and the server's ALPN choice. On
    /// failure: the bytes for the client (an alert) and the flow's end.
    pub(super) fn answer(
        &mut self,
        accepted: Box<Accepted>,
        forged: Arc<CertifiedKey>,
        alpn: Option<&[u8]>,
    ) -> Result<ServerConnection, (Vec<u8>, Ended)> {
        let cfg = self.server_config(forged, alpn).map_err(|e| {
            let end = Ended::new(EventKind::Abort, Leg::Client, Phase::ClientHandshake, Cause::Internal)
                .detail(e.to_string());
            (fatal_alert(ALERT_HANDSHAKE_FAILURE), end)
        })?;
        accepted.into_connection(cfg).map_err(|(e, mut alert)| {
            let mut out = Vec::new();
            let _ = alert.write_all(&mut out);
            (out, error(&e, Phase::ClientHandshake))
        })
    }
}

/// The end of a client leg that failed with rustls' error `e`.
pub(super) fn error(e: &rustls::Error, phase: Phase) -> Ended {
    use rustls::Error as E;
    let cause = match e {
        E::AlertReceived(a) => Cause::AlertReceived(u8::from(*a)),
        E::PeerIncompatible(_) => Cause::NoSharedVersionOrSuite,
        E::PeerMisbehaved(_)
        | E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::DecryptError => Cause::PeerMisbehaved,
        _ => Cause::Internal,
    };
    Ended::new(EventKind::Abort, Leg::Client, phase, cause).detail(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One client asking for new names as fast as it can gets its burst, then its
    /// rate; another client is not held back by it; an IPv6 client is one
    /// source across its /64.
    #[test]
    fn new_names_are_limited_per_client() {
        let b = SourceBuckets::new(50, 200);
        let (greedy, other): (std::net::IpAddr, std::net::IpAddr) =
            ("198.18.0.66".parse().unwrap(), "198.18.0.67".parse().unwrap());
        let granted = (0..1000).filter(|_| b.take(greedy, 1000)).count();
        assert_eq!(granted, 200, "the burst");
        assert!(b.take(other, 1000), "another client");
        // One second later: its rate.
        let granted = (0..1000).filter(|_| b.take(greedy, 2000)).count();
        assert_eq!(granted, 50);
        // Addresses of one /64 share a bucket; another /64 has its own.
        let granted = (0..1000u32)
            .filter(|i| b.take(format!("2001:db8:0:1::{:x}", i + 1).parse().unwrap(), 1000))
            .count();
        assert_eq!(granted, 200, "one /64, one burst");
        assert!(b.take("2001:db8:0:2::1".parse().unwrap(), 1000));
    }
}
