//! The rustls adapter: every call into rustls is in this module (rustls' API moves
//! between minor releases; the workspace pins 0.23).
//!
//! - [`ServerVerifier`]: rustls' `ServerCertVerifier` over [`crate::verify_server_chain_checking`].
//! - [`crypto_provider`]: a [`CipherProfile`] as a rustls `CryptoProvider` over the
//!   [`CryptoLib`] in use (aws-lc-rs by default, or ring).
//! - [`client_config`] (towards the server) and [`server_config`] (towards the client).
//!
//! # Reading a failure after the handshake
//!
//! rustls only passes an error code up, so the verifier keeps the full
//! [`VerifyFailure`] of the last refused chain **per calling thread**. A worker that
//! drives many connections on one thread shares one verifier (through its
//! `ClientConfig`) and, right after the `process_new_packets()` that returned
//! `Error::InvalidCertificate(_)`, calls [`ServerVerifier::take_failure`] on the
//! same thread, before driving another connection. Every verification clears the
//! thread's entry first, so a failure is never attributed to a later handshake;
//! workers on other threads keep their own entries. For the reasons rustls has no
//! code for (24, 25, 22, 47, 68, 1) the error itself also carries the failure:
//! `CertificateError::Other(e)` with `e.0` downcasting to [`VerifyFailure`].
//!
//! The alert sent to the server follows the reason: `unknown_ca` for 18/19/20/21/2
//! (as in the seed's log), `certificate_expired` for 9/10, `bad_certificate` for
//! 62/64/34, `unsupported_certificate` for 26, `decrypt_error` for 7,
//! `certificate_revoked` for 23, `certificate_unknown` otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as ring_provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme, SupportedCipherSuite};

pub use rustls::server::{ClientHello, ResolvesServerCert};
pub use rustls::sign::{CertifiedKey, SigningKey};
pub use rustls::{ClientConfig, ServerConfig};

use crate::error::{Error, Result};
use crate::profile::CipherProfile;
use crate::trust::TrustSnapshot;
use crate::verify::{verify_server_chain_checking, RevocationCheck, Verified, VerifyFailure, VerifyReason};

/// The cryptography library under rustls, process-wide: `aws-lc-rs` (the
/// default: X25519MLKEM768, the hybrid post-quantum key exchange, preferred on
/// both legs with X25519 as the fallback; faster ECDSA and ChaCha20) or `ring`
/// (no post-quantum group). The dataplane sets it from `[tls] crypto` at start;
/// the intercept benchmark switches it between runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CryptoLib {
    /// AWS-LC through `aws-lc-rs`.
    #[default]
    AwsLcRs,
    /// `ring`.
    Ring,
}

static CRYPTO_LIB: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl CryptoLib {
    /// `aws-lc-rs` or `ring`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CryptoLib::AwsLcRs => "aws-lc-rs",
            CryptoLib::Ring => "ring",
        }
    }

    /// Makes `self` the library of every configuration built from now on.
    pub fn install(self) {
        CRYPTO_LIB.store(self as u8, std::sync::atomic::Ordering::Relaxed);
    }

    /// The library in use.
    pub fn current() -> CryptoLib {
        match CRYPTO_LIB.load(std::sync::atomic::Ordering::Relaxed) {
            1 => CryptoLib::Ring,
            _ => CryptoLib::AwsLcRs,
        }
    }

    /// The library's own provider (all its suites and groups, its preference).
    fn provider(self) -> CryptoProvider {
        match self {
            CryptoLib::AwsLcRs => rustls::crypto::aws_lc_rs::default_provider(),
            CryptoLib::Ring => ring_provider::default_provider(),
        }
    }
}

impl std::str::FromStr for CryptoLib {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "aws-lc-rs" => Ok(CryptoLib::AwsLcRs),
            "ring" => Ok(CryptoLib::Ring),
            other => Err(Error::Tls(format!(
                "unknown crypto library {other:?}: expected \"aws-lc-rs\" or \"ring\""
            ))),
        }
    }
}

/// The suites of a profile, in preference order, from the library in use.
pub(crate) fn suites(profile: CipherProfile) -> Vec<SupportedCipherSuite> {
    use rustls::CipherSuite::*;
    let wanted: &[rustls::CipherSuite] = match profile {
        // TLS 1.3 with AES-128-GCM (a TLS 1.3 client is never downgraded), and
        // TLS 1.2 ECDHE with AES-128-GCM.
        CipherProfile::Base => &[
            TLS13_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        // Base, then AES-256-GCM and ChaCha20-Poly1305, AES-128-GCM first (the
        // fastest with AES-NI and SHA-256 hashing, which these CPUs accelerate;
        // SHA-384 is done in software).
        CipherProfile::Strong => &[
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
    };
    let all = CryptoLib::current().provider().cipher_suites;
    wanted.iter().filter_map(|w| all.iter().find(|s| s.suite() == *w).copied()).collect()
}

/// Both profiles speak TLS 1.3 and 1.2; they differ in suites.
fn versions(_profile: CipherProfile) -> &'static [&'static rustls::SupportedProtocolVersion] {
    rustls::ALL_VERSIONS
}

/// The rustls crypto provider of a profile: the library in use
/// ([`CryptoLib`]), the profile's suites, the library's key-exchange groups in
/// its order (aws-lc-rs: X25519MLKEM768, X25519, P-256, P-384).
pub fn crypto_provider(profile: CipherProfile) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider { cipher_suites: suites(profile), ..CryptoLib::current().provider() })
}

/// rustls' `ServerCertVerifier` over the trust store snapshot. See the module
/// documentation for how a worker reads the failure of a refused chain.
///
/// Chains it accepted are remembered ([`VerifiedCache`]): the same chain presented
/// again for the same name, before any of its certificates expires, is accepted
/// without building and checking the path again (two signature verifications and
/// the parsing saved per handshake). The cache belongs to the verifier, hence to
/// one trust snapshot: a new snapshot starts empty. Refusals are never cached.
pub struct ServerVerifier {
    trust: Arc<TrustSnapshot>,
    failures: Mutex<HashMap<ThreadId, Box<VerifyFailure>>>,
    algorithms: WebPkiSupportedAlgorithms,
    verified: Mutex<VerifiedCache>,
    enforce: bool,
    /// Reasons accepted anyway (recorded like a refusal): the checks whose action
    /// is to decrypt with an untrusted certificate.
    tolerated: Vec<VerifyReason>,
    /// Refuse server certificates without a proved revocation status (code 3).
    require_status: bool,
}

thread_local! {
    /// The last verification on this thread was a cache hit.
    static LAST_CACHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long an accepted chain is taken on trust without checking it again, at most.
pub const VERIFIED_CACHE_TTL_SECS: u64 = 3600;
/// Accepted chains remembered per verifier.
pub const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// Accepted (chain, name) pairs: SHA-256 of both → until when (unix seconds).
#[derive(Default)]
struct VerifiedCache {
    until: HashMap<[u8; 32], u64>,
    order: std::collections::VecDeque<[u8; 32]>,
    hits: u64,
    misses: u64,
}

impl VerifiedCache {
    fn get(&mut self, key: &[u8; 32], now: u64) -> bool {
        let hit = self.until.get(key).is_some_and(|&until| now < until);
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        hit
    }

    fn put(&mut self, key: [u8; 32], until: u64) {
        if self.until.insert(key, until).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > VERIFIED_CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.until.remove(&old);
            }
        }
    }
}

/// The cache key of a chain presented for a name with an OCSP staple (a chain
/// accepted without one is checked again when it comes with one).
fn verified_key(
    end_entity: &[u8],
    intermediates: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    staple: &[u8],
) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let parts = std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref()));
    for part in parts.chain(std::iter::once(staple)) {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    ctx.update(crate::verify::server_name_text(name).as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The earliest notAfter of the presented certificates (unix seconds).
fn earliest_not_after(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> Option<u64> {
    std::iter::once(end_entity)
        .chain(intermediates.iter().map(|c| c.as_ref()))
        .map(|der| crate::cert::parse_der(der).ok().map(|c| c.validity().not_after.timestamp().max(0) as u64))
        .collect::<Option<Vec<u64>>>()?
        .into_iter()
        .min()
}

/// Hits and misses of a verifier's cache of accepted chains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifiedCacheStats {
    /// Chains accepted from the cache.
    pub hits: u64,
    /// Chains verified in full.
    pub misses: u64,
    /// Entries held.
    pub entries: usize,
}

impl std::fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerVerifier")
            .field("cas", &self.trust.ca_count())
            .field("pinned", &self.trust.pinned_count())
            .finish()
    }
}

impl ServerVerifier {
    /// A verifier reading `trust`.
    pub fn new(trust: Arc<TrustSnapshot>) -> Arc<Self> {
        Self::with_enforcement(trust, true)
    }

    /// A verifier that, with `enforce` false (the policy's `certificate_validation:
    /// false`), accepts every chain but still records the failure it would have
    /// reported, for [`ServerVerifier::take_failure`] and the event.
    pub fn with_enforcement(trust: Arc<TrustSnapshot>, enforce: bool) -> Arc<Self> {
        Self::with_tolerance(trust, enforce, Vec::new(), false)
    }

    /// As [`ServerVerifier::with_enforcement`], also accepting chains refused for
    /// one of the `tolerated` reasons (the failure is recorded all the same: the
    /// caller decides what a tolerated failure means). Accepted chains with a
    /// failure never enter the cache of verified chains. With `require_status`, a
    /// server certificate whose revocation status is neither proved good by its
    /// OCSP staple nor by a fresh CRL is refused with code 3 ([`RevocationCheck`]).
    pub fn with_tolerance(
        trust: Arc<TrustSnapshot>,
        enforce: bool,
        tolerated: Vec<VerifyReason>,
        require_status: bool,
    ) -> Arc<Self> {
        Arc::new(ServerVerifier {
            trust,
            failures: Mutex::new(HashMap::new()),
            algorithms: CryptoLib::current().provider().signature_verification_algorithms,
            verified: Mutex::new(VerifiedCache::default()),
            enforce,
            tolerated,
            require_status,
        })
    }

    /// Whether refused chains fail the handshake (validation on).
    pub fn enforces(&self) -> bool {
        self.enforce
    }

    /// Whether the last verification on this thread, since the last call, was
    /// answered from the cache of verified chains; clears the note.
    pub fn take_cache_hit(&self) -> bool {
        LAST_CACHED.with(|c| c.replace(false))
    }

    /// Hits and misses of the accepted-chain cache.
    pub fn cache_stats(&self) -> VerifiedCacheStats {
        let c = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        VerifiedCacheStats { hits: c.hits, misses: c.misses, entries: c.until.len() }
    }

    /// The trust store snapshot it reads.
    pub fn trust(&self) -> &Arc<TrustSnapshot> {
        &self.trust
    }

    /// The failure of the last chain this verifier refused on the calling thread,
    /// if that verification was the last one on this thread; taking it clears it.
    pub fn take_failure(&self) -> Option<Box<VerifyFailure>> {
        let me = std::thread::current().id();
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(&me)
    }

    fn record(&self, failure: Option<Box<VerifyFailure>>) {
        let me = std::thread::current().id();
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(f) => map.insert(me, f),
            None => map.remove(&me),
        };
    }
}

/// The rustls error (hence the alert) for a refused chain.
fn rustls_error(failure: &VerifyFailure) -> rustls::Error {
    use VerifyReason as R;
    let e = match failure.reason {
        R::DepthZeroSelfSignedCert
        | R::SelfSignedCertInChain
        | R::UnableToGetIssuerCertLocally
        | R::UnableToGetIssuerCert
        | R::UnableToVerifyLeafSignature => CertificateError::UnknownIssuer,
        R::CertHasExpired => CertificateError::Expired,
        R::CertNotYetValid => CertificateError::NotValidYet,
        R::HostnameMismatch | R::IpAddressMismatch => CertificateError::NotValidForName,
        R::InvalidPurpose => CertificateError::InvalidPurpose,
        R::CertSignatureFailure => CertificateError::BadSignature,
        R::UnhandledCriticalExtension => CertificateError::UnhandledCriticalExtension,
        R::CertRevoked => CertificateError::Revoked,
        _ => CertificateError::Other(OtherError(Arc::new(failure.clone()))),
    };
    rustls::Error::InvalidCertificate(e)
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let key = verified_key(end_entity.as_ref(), intermediates, server_name, ocsp_response);
        let now_s = now.as_secs();
        let cached = self.verified.lock().unwrap_or_else(PoisonError::into_inner).get(&key, now_s);
        LAST_CACHED.with(|c| c.set(cached));
        if cached {
            self.record(None);
            return Ok(ServerCertVerified::assertion());
        }
        let revocation = RevocationCheck { staple: ocsp_response, require_status: self.require_status };
        match verify_server_chain_checking(
            &self.trust,
            end_entity,
            intermediates,
            server_name,
            now,
            revocation,
        ) {
            Ok(Verified::Chain | Verified::Pinned { .. }) => {
                self.record(None);
                if let Some(not_after) = earliest_not_after(end_entity.as_ref(), intermediates) {
                    let until = not_after.min(now_s.saturating_add(VERIFIED_CACHE_TTL_SECS));
                    self.verified.lock().unwrap_or_else(PoisonError::into_inner).put(key, until);
                }
                Ok(ServerCertVerified::assertion())
            }
            Err(failure) => {
                let err = rustls_error(&failure);
                // A chain to our own decryption CA is refused even with validation
                // off: it is a loop through the appliance, or a forged leaf replayed.
                let accept = failure.reason != tlsgate_api::VerifyReason::OwnDecryptionCa
                    && (!self.enforce || self.tolerated.contains(&failure.reason));
                self.record(Some(failure));
                if accept {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(err)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Notes, per calling thread, that a server asked for a client certificate (the
/// appliance has none to give: it answers with an empty certificate, and a server
/// that insists then fails the handshake). Read it with [`CertRequests::take`] right
/// after the failed `process_new_packets()`, as for [`ServerVerifier::take_failure`].
#[derive(Debug, Default)]
pub struct CertRequests {
    asked: Mutex<std::collections::HashSet<ThreadId>>,
}

impl CertRequests {
    /// Whether a server asked this thread's last handshake for a client
    /// certificate since the last call; clears it.
    pub fn take(&self) -> bool {
        self.asked.lock().unwrap_or_else(PoisonError::into_inner).remove(&std::thread::current().id())
    }
}

impl rustls::client::ResolvesClientCert for CertRequests {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.lock().unwrap_or_else(PoisonError::into_inner).insert(std::thread::current().id());
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Key logging for captures (`capture start --keylog`): every rustls config of
/// both legs carries [`KeyLogTap`]. Off (the default), rustls asks
/// `will_log` and gets `false` for one relaxed load; on, each secret goes as an
/// NSS key-log line (`LABEL <client_random hex> <secret hex>`) into the calling
/// thread's buffer, which the worker takes right after stepping a flow
/// ([`take_thread_secrets`]) and hands to a capture only when that flow matches
/// it. Lines of flows no capture asked for are dropped there.
#[derive(Debug, Default)]
pub struct KeyLogTap;

static KEY_LOGGING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Lines a thread keeps at most between two takes.
const THREAD_SECRETS: usize = 64;

thread_local! {
    static SECRETS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Switches key logging on (a capture with a key log runs) or off.
pub fn set_key_logging(on: bool) {
    KEY_LOGGING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The key-log lines the calling thread's handshakes produced since the last
/// take (empty while key logging is off).
pub fn take_thread_secrets() -> Vec<String> {
    SECRETS.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

impl rustls::KeyLog for KeyLogTap {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if !KEY_LOGGING.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        SECRETS.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < THREAD_SECRETS {
                s.push(format!("{label} {} {}\n", hex(client_random), hex(secret)));
            }
        });
    }

    fn will_log(&self, _label: &str) -> bool {
        KEY_LOGGING.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The server config of one of the appliance's own services (the web console):
/// the certificate chain and PKCS#8 key given (PEM), TLS 1.2 and 1.3 with the
/// crypto library in use, HTTP/1.1.
pub fn service_server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let certs = crate::parse_certificates(cert_pem)?;
    let key = PrivateKeyDer::Pkcs8(crate::key::parse_private_key(key_pem)?);
    let mut config = ServerConfig::builder_with_provider(Arc::new(CryptoLib::current().provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client stream over `tcp` to a service of the appliance's own (a syslog
/// collector): its certificate must chain to a CA of `ca_pem` and hold `name`.
pub fn tls_client_stream(
    tcp: std::net::TcpStream,
    ca_pem: &[u8],
    name: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::parse_certificates(ca_pem)? {
        roots.add(der).map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("no CA certificate".into()));
    }
    let config = ClientConfig::builder_with_provider(Arc::new(CryptoLib::current().provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server =
        ServerName::try_from(name.to_owned()).map_err(|e| Error::Tls(format!("name {name:?}: {e}")))?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), server).map_err(|e| Error::Tls(e.to_string()))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Sessions with origin servers kept for resumption (shared by the workers).
pub const RESUMPTION_SESSIONS: usize = 4096;

/// The client config of the server leg: `profile`'s suites and versions, `verifier`,
/// the client's ALPN list, no client certificate (requests noted in `requests`),
/// sessions kept for resumption ([`RESUMPTION_SESSIONS`] server names).
pub fn client_config_noting_requests(
    profile: CipherProfile,
    verifier: Arc<ServerVerifier>,
    requests: Arc<CertRequests>,
) -> Result<Arc<ClientConfig>> {
    let mut config = client_builder(profile, verifier)?.with_client_cert_resolver(requests);
    config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMPTION_SESSIONS);
    config.key_log = Arc::new(KeyLogTap);
    Ok(Arc::new(config))
}

fn client_builder(
    profile: CipherProfile,
    verifier: Arc<ServerVerifier>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>> {
    Ok(ClientConfig::builder_with_provider(crypto_provider(profile))
        .with_protocol_versions(versions(profile))
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier))
}

/// The client config of the server leg: `profile`'s suites and versions, `verifier`,
/// the client's ALPN list, no client certificate.
pub fn client_config(
    profile: CipherProfile,
    verifier: Arc<ServerVerifier>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ClientConfig>> {
    let mut config = client_builder(profile, verifier)?.with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
    config.key_log = Arc::new(KeyLogTap);
    Ok(Arc::new(config))
}

/// The server config of the client leg: `profile`'s suites and versions, a resolver
/// giving the forged certificate, the ALPN protocols to accept (the one the server
/// chose).
pub fn server_config(
    profile: CipherProfile,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider(profile))
        .with_protocol_versions(versions(profile))
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.to_vec();
    // Our preference order picks the suite (as nginx's ssl_prefer_server_ciphers).
    config.ignore_client_order = true;
    // One TLS 1.3 ticket per full handshake is enough for a client to resume.
    config.send_tls13_tickets = 1;
    config.key_log = Arc::new(KeyLogTap);
    Ok(Arc::new(config))
}

/// A resolver that always answers with one certificate (a forged one, per flow).
#[derive(Debug, Clone)]
pub struct SingleCertResolver(pub Arc<CertifiedKey>);

impl ResolvesServerCert for SingleCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// A rustls signing key from PKCS#8 DER.
pub(crate) fn signing_key(pkcs8: &[u8]) -> Result<Arc<dyn SigningKey>> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    match CryptoLib::current() {
        CryptoLib::AwsLcRs => rustls::crypto::aws_lc_rs::sign::any_supported_type(&der),
        CryptoLib::Ring => ring_provider::sign::any_supported_type(&der),
    }
    .map_err(|e| Error::Tls(e.to_string()))
}

/// A rustls certified key (chain + signing key).
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(chain, key))
}
