//! The client leg: the worker's forged certificates and client-leg configurations,
//! answering the client's ClientHello once the server is verified, and what a
//! client-leg failure means.

use std::sync::Arc;

use tlsgate_api::{Cause, EventKind, Leg, Phase};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName, UnixTime};
use tlsgate_certstore::rustls::server::Accepted;
use tlsgate_certstore::rustls::{self, ServerConnection};
use tlsgate_certstore::{server_config, ForgeCache, LeafKey, SingleCertResolver};

use super::config::TlsShared;
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
}

impl TlsWorker {
    /// A worker's state; generates its leaf key.
    pub fn new(shared: Arc<TlsShared>) -> Result<Self, String> {
        let key = LeafKey::generate().map_err(|e| format!("leaf key: {e}"))?;
        let forge = ForgeCache::new(shared.ca.clone(), key, shared.cache);
        let key = LeafKey::generate().map_err(|e| format!("leaf key: {e}"))?;
        let untrust_forge = ForgeCache::new(shared.untrust.clone(), key, shared.cache);
        Ok(TlsWorker { shared, forge, untrust_forge, configs: Default::default() })
    }

    /// The client-leg configuration for `forged` with the server's ALPN choice.
    fn server_config(
        &mut self,
        forged: Arc<tlsgate_certstore::CertifiedKey>,
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

    /// Answers the client's hello with a certificate forged for `requested` from the
    /// server's verified `chain` (by the untrust CA when `untrusted`), and the
    /// server's ALPN choice. On failure: the bytes for the client (an alert) and the
    /// flow's end.
    pub(super) fn answer(
        &mut self,
        accepted: Box<Accepted>,
        requested: &ServerName<'static>,
        chain: &[CertificateDer<'static>],
        alpn: Option<&[u8]>,
        info: &mut TlsInfo,
        now: UnixTime,
    ) -> Result<ServerConnection, (Vec<u8>, Ended)> {
        let untrusted = info.untrusted.is_some() || info.untrusted_resumed;
        let forge = if untrusted { &mut self.untrust_forge } else { &mut self.forge };
        let hits = forge.stats().hits;
        let forged = forge.get_or_forge(requested, chain, now);
        info.forge_cached = forge.stats().hits > hits;
        let forged = forged.map_err(|e| {
            let end = server::abort(Phase::ServerHandshake, Cause::Internal).detail(format!("forging: {e}"));
            (fatal_alert(ALERT_HANDSHAKE_FAILURE), end)
        })?;
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
