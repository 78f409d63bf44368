//! The rustls adapter: every call into rustls is in this module (rustls' API moves
//! between minor releases; the workspace pins 0.23).
//!
//! - [`ServerVerifier`]: rustls' `ServerCertVerifier` over [`verify_server_chain`].
//! - [`crypto_provider`]: a [`CipherProfile`] as a rustls `CryptoProvider` (ring).
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
use crate::verify::{verify_server_chain, Verified, VerifyFailure, VerifyReason};

/// The suites of a profile, in preference order.
pub(crate) fn suites(profile: CipherProfile) -> Vec<SupportedCipherSuite> {
    match profile {
        CipherProfile::Base => vec![
            ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ring_provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        CipherProfile::Strong => ring_provider::ALL_CIPHER_SUITES.to_vec(),
    }
}

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn versions(profile: CipherProfile) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match profile {
        CipherProfile::Base => TLS12_ONLY,
        CipherProfile::Strong => rustls::ALL_VERSIONS,
    }
}

/// The rustls crypto provider (ring) of a profile.
pub fn crypto_provider(profile: CipherProfile) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider { cipher_suites: suites(profile), ..ring_provider::default_provider() })
}

/// rustls' `ServerCertVerifier` over the trust store snapshot. See the module
/// documentation for how a worker reads the failure of a refused chain.
pub struct ServerVerifier {
    trust: Arc<TrustSnapshot>,
    failures: Mutex<HashMap<ThreadId, Box<VerifyFailure>>>,
    algorithms: WebPkiSupportedAlgorithms,
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
        Arc::new(ServerVerifier {
            trust,
            failures: Mutex::new(HashMap::new()),
            algorithms: ring_provider::default_provider().signature_verification_algorithms,
        })
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
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match verify_server_chain(&self.trust, end_entity, intermediates, server_name, now) {
            Ok(Verified::Chain | Verified::Pinned { .. }) => {
                self.record(None);
                Ok(ServerCertVerified::assertion())
            }
            Err(failure) => {
                let err = rustls_error(&failure);
                self.record(Some(failure));
                Err(err)
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

/// The client config of the server leg: `profile`'s suites and versions, `verifier`,
/// the client's ALPN list, no client certificate.
pub fn client_config(
    profile: CipherProfile,
    verifier: Arc<ServerVerifier>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider(profile))
        .with_protocol_versions(versions(profile))
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
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
    ring_provider::sign::any_supported_type(&der).map_err(|e| Error::Tls(e.to_string()))
}

/// A rustls certified key (chain + signing key).
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(chain, key))
}
