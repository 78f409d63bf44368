//! `tlsgate-certstore`: everything about certificates on the appliance.
//!
//! ```text
//!   TrustStore ── CA roots (system bundle + imported) ──┐  snapshot()
//!              └─ pinned server certificates (SHA-256) ─┴──────────► TrustSnapshot (Arc, per config version)
//!                                                                         │
//!   server chain ──► ServerVerifier (rustls) ──► verify_server_chain ◄────┘
//!                      │ refused: VerifyFailure (OpenSSL code, text, depth, subject,
//!                      │          issuer, presented chain + SHA-256), per thread
//!                      ▼ accepted
//!   DecryptionCa + LeafKey ──► ForgeCache (per worker, CLOCK) ──► Arc<CertifiedKey>
//!                                                                   │
//!   CipherProfile (base / strong) ──► client_config / server_config ◄┘
//! ```
//!
//! It knows nothing of packets or drivers. Time is always passed in
//! (`rustls_pki_types::UnixTime`), so tests are deterministic.
//!
//! How a worker uses it, per intercepted flow:
//! 1. build one [`ServerVerifier`] from the configuration's [`TrustSnapshot`] and one
//!    [`client_config`] per profile; a [`ForgeCache`] with the worker's [`LeafKey`];
//! 2. handshake with the server under the SNI (or the destination IP);
//! 3. on `rustls::Error::InvalidCertificate(_)`, [`ServerVerifier::take_failure`]
//!    gives the [`VerifyFailure`] for the TLS Abort event
//!    (`self signed certificate (code 18, depth 0)`, subject, issuer, chain);
//! 4. otherwise [`ForgeCache::get_or_forge`] gives the certificate for
//!    [`server_config`] (through [`SingleCertResolver`]) towards the client.
//!
//! The seed's fix for a self-signed server is [`TrustStore::pin`] with the leaf of
//! the chain the failure recorded. Operator documentation: `docs/certificates.md`.
//!
//! # Public interface
//! - Certificates: [`parse_certificates`], [`summarize`], [`CertSummary`],
//!   [`Fingerprint`], [`chain_sha256`], [`pem_encode`] (subject and issuer in
//!   OpenSSL's one-line form are in [`CertSummary`]).
//! - Trust: [`TrustStore`], [`TrustEntry`], [`TrustKind`], [`ImportAs`],
//!   [`ImportReport`], [`TrustSnapshot`], [`SYSTEM_BUNDLE_PATH`].
//! - Verification: [`verify_server_chain`], [`Verified`], [`VerifyFailure`],
//!   [`VerifyReason`], [`ServerVerifier`], [`unix_time`].
//! - Decryption CA and forging: [`DecryptionCa`], [`CaOptions`], [`LeafKey`],
//!   [`forge_leaf`], [`ForgeCache`], [`ForgeCacheStats`].
//! - TLS configuration: [`CipherProfile`], [`crypto_provider`], [`client_config`],
//!   [`client_config_noting_requests`] (with [`CertRequests`] and origin session
//!   resumption), [`server_config`], [`SingleCertResolver`], [`CertifiedKey`];
//!   the verifier's accepted-chain cache ([`VerifiedCacheStats`]).
//! - Licenses: [`parse_license`], [`SignedLicense`], [`License`], [`LicenseState`],
//!   [`LicensePayload`], [`LicenseError`], [`VendorKey`], [`VendorSigner`],
//!   [`pkcs8_pem`], [`FEATURE_STRONG_CRYPTO`].
//! - Errors: [`Error`], [`Result`], [`PKCS8_HINT`].

#![forbid(unsafe_code)]

mod ca;
mod cert;
mod error;
mod forge;
mod ja4;
mod key;
mod license;
mod name;
mod profile;
mod tls;
mod trust;
mod verify;

pub use ca::{CaOptions, DecryptionCa};
pub use cert::{
    chain_sha256, crl_distribution_points, parse_certificates, pem_encode, summarize, CertSummary,
    Fingerprint,
};
pub use error::{Error, Result, PKCS8_HINT};
pub use forge::{
    forge_leaf, issue_leaf, ForgeCache, ForgeCacheStats, LeafKey, LeafNames, CACHE_REFRESH_MARGIN_SECS,
    FORGED_BACKDATE_SECS, FORGED_MAX_LIFETIME_SECS,
};
pub use ja4::Ja4;
pub use license::{
    parse_license, pkcs8_pem, License, LicenseError, LicensePayload, LicenseState, SignedLicense, VendorKey,
    VendorSigner, FEATURE_STRONG_CRYPTO,
};
pub use profile::CipherProfile;
/// A CA key held elsewhere (a PKCS#11 token), as rcgen signs with it.
pub use rcgen::{Error as RemoteKeyError, RemoteKeyPair, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256};
pub use tls::{
    client_config, client_config_noting_requests, crypto_provider, server_config, service_server_config,
    set_key_logging, take_thread_secrets, tls_client_stream, CertRequests, CertifiedKey, ClientConfig,
    CryptoLib, KeyLogTap, ResolvesServerCert, ServerConfig, ServerVerifier, SingleCertResolver,
    VerifiedCacheStats, RESUMPTION_SESSIONS, VERIFIED_CACHE_ENTRIES, VERIFIED_CACHE_TTL_SECS,
};
pub use trust::{
    check_crl, CrlFacts, ImportAs, ImportReport, TrustEntry, TrustKind, TrustSnapshot, TrustStore,
    SYSTEM_BUNDLE_PATH,
};
pub use verify::{
    server_name_text, unix_time, verified_path, verify_server_chain, verify_server_chain_checking,
    RevocationCheck, ServerPath, Verified, VerifyFailure, VerifyReason,
};

/// The rustls and pki-types crates this crate is built on, for callers that need
/// their types (connections, `ServerName`, `CertificateDer`, `UnixTime`).
pub use rustls;
pub use rustls::pki_types;

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn shared_types_cross_threads() {
        send_sync::<super::TrustSnapshot>();
        send_sync::<super::ServerVerifier>();
        send_sync::<super::DecryptionCa>();
        send_sync::<super::VerifyFailure>();
        send::<super::ForgeCache>();
        send::<super::LeafKey>();
        send::<super::TrustStore>();
    }
}
