//! The crate's one error type. Verification failures are not errors of this type: they
//! are [`crate::VerifyFailure`] values, because a failed verification is an outcome
//! to record, not a fault of the caller.

use std::path::PathBuf;

use crate::LicenseError;

/// The command that turns any unencrypted or encrypted private key into the
/// unencrypted PKCS#8 form the certificate generator (rcgen over ring) needs.
pub const PKCS8_HINT: &str = "openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem";

/// Everything that can go wrong in this crate, split by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that should hold certificates holds none.
    #[error("no certificate found: expected PEM blocks \"-----BEGIN CERTIFICATE-----\" or DER-encoded certificates")]
    NoCertificate,

    /// Input is neither PEM nor DER (random bytes, a key where a certificate was expected, ...).
    #[error("not a certificate: {0}")]
    NotCertificate(String),

    /// One certificate of the input could not be parsed.
    #[error("certificate #{index} of the input cannot be parsed: {reason}")]
    BadCertificate {
        /// Position in the input, from 1.
        index: usize,
        /// What the parser said.
        reason: String,
    },

    /// Input that should hold a private key holds none.
    #[error("no private key found: expected a PEM block \"-----BEGIN PRIVATE KEY-----\" (PKCS#8)")]
    NoPrivateKey,

    /// The private key is encrypted.
    #[error("the private key is encrypted; decrypt it to PKCS#8 first: `{}`", PKCS8_HINT)]
    EncryptedKey,

    /// The private key is in a form that cannot be used (and could not be converted).
    #[error("unsupported private key ({detail}); convert it to unencrypted PKCS#8: `{}`", PKCS8_HINT)]
    UnsupportedKey {
        /// What was found.
        detail: String,
    },

    /// The certificate offered as a CA is not a CA.
    #[error("not a CA certificate (basicConstraints CA:TRUE is required): {subject}")]
    NotCa {
        /// Its subject, OpenSSL one-line form.
        subject: String,
    },

    /// The CA certificate's key usage forbids signing certificates.
    #[error("the CA certificate may not sign certificates (keyUsage lacks keyCertSign): {subject}")]
    CaCannotSign {
        /// Its subject, OpenSSL one-line form.
        subject: String,
    },

    /// The private key is not the key of the certificate.
    #[error("the private key does not match the certificate's public key ({subject})")]
    KeyMismatch {
        /// The certificate's subject, OpenSSL one-line form.
        subject: String,
    },

    /// The decryption CA cannot be used to issue certificates that chain to it.
    #[error("the decryption CA cannot issue certificates: {0}")]
    CaUnusable(String),

    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),

    /// A forged certificate cannot be made for this server certificate.
    #[error("cannot forge a certificate: {0}")]
    Forge(String),

    /// Nothing in the trust store matches a name or fingerprint.
    #[error("no trust store entry has the name or fingerprint {0:?}")]
    NotFound(String),

    /// An entry name is not acceptable.
    #[error("invalid trust store entry name {0:?}: use 1 to 128 printable characters")]
    BadName(String),

    /// A fingerprint is not 32 bytes of hex.
    #[error("invalid SHA-256 fingerprint {0:?}: expected 64 hex digits, colons allowed")]
    BadFingerprint(String),

    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// rustls refused a configuration.
    #[error("CRL refused: {0}")]
    /// A certificate revocation list that cannot be used.
    Crl(String),

    #[error("TLS configuration: {0}")]
    Tls(String),

    /// A license, or a key for licenses, is refused; the [`LicenseError`] says why.
    #[error("{0}")]
    License(LicenseError),
}

impl From<LicenseError> for Error {
    fn from(e: LicenseError) -> Error {
        Error::License(e)
    }
}

impl Error {
    /// Why a license was refused, when this is [`Error::License`].
    pub fn license(&self) -> Option<&LicenseError> {
        match self {
            Error::License(e) => Some(e),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
