//! OpenSSL's X.509 verify codes, the ones the verifier reports. They travel in
//! event records ([`crate::Cause::Certificate`]), so both processes name them from
//! this one table.
//!
//! Codes are the classic numbering the seed's logs and most operator searches use
//! (OpenSSL 1.x); [`VerifyReason::openssl3_code`] gives OpenSSL 3's, which differs
//! only for "invalid CA certificate" (24 → 79).

use std::fmt;

/// Why a server certificate chain was refused, as the OpenSSL verify code operators
/// search for. [`code`](Self::code) is OpenSSL's `X509_V_ERR_*` number and
/// [`text`](Self::text) its message in the form the seed's logs show (OpenSSL 1.x:
/// `self signed certificate`); [`openssl3_text`](Self::openssl3_text) is the wording
/// OpenSSL 3 prints (`self-signed certificate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyReason {
    /// 1: nothing more specific applies (see the failure's `detail`).
    Unspecified,
    /// 2: the issuer of a trusted, not self-signed certificate is missing. Not
    /// reported: an imported CA anchors chains by itself (OpenSSL's partial-chain
    /// mode); kept so the code table is complete.
    UnableToGetIssuerCert,
    /// 3: the server certificate's revocation status is unknown — no valid OCSP
    /// staple and no fresh CRL of its issuer — where the policy's
    /// `certificate_actions.unknown_status` asks for one.
    UnableToGetCrl,
    /// 7: a signature in the chain does not verify.
    CertSignatureFailure,
    /// 9: a certificate's notBefore is in the future.
    CertNotYetValid,
    /// 10: a certificate's notAfter is in the past.
    CertHasExpired,
    /// 18: the server sent a self-signed certificate that is not trusted.
    DepthZeroSelfSignedCert,
    /// 19: the chain ends in a self-signed root that is not trusted.
    SelfSignedCertInChain,
    /// 20: the issuer of the last certificate of the chain is in neither the chain nor the trust store.
    UnableToGetIssuerCertLocally,
    /// 21: the only certificate is not self-signed and its issuer is unknown (OpenSSL
    /// reports it after 20 when told to go on; kept for completeness).
    UnableToVerifyLeafSignature,
    /// 22: the chain is longer than the verifier follows.
    CertChainTooLong,
    /// 23: the certificate has been revoked.
    CertRevoked,
    /// 24: an issuing certificate is not a CA.
    InvalidCa,
    /// 25: a CA's pathLenConstraint is exceeded.
    PathLengthExceeded,
    /// 26: a certificate may not be used for a TLS server (extendedKeyUsage / keyUsage).
    InvalidPurpose,
    /// 34: a certificate has a critical extension the verifier does not know.
    UnhandledCriticalExtension,
    /// 47: a name violates a CA's name constraints.
    PermittedSubtreeViolation,
    /// 62: the certificate is not valid for the requested host name (SNI).
    HostnameMismatch,
    /// 64: the certificate is not valid for the destination IP address (no SNI).
    IpAddressMismatch,
    /// 68: a certificate is signed with MD5 or SHA-1 (OpenSSL's security level 1).
    CaMdTooWeak,
    /// 1001 (tlsgate's own; OpenSSL has none): the chain is issued by this
    /// appliance's own decryption CA — a loop through the appliance, or a forged
    /// leaf replayed as a server certificate. Always refused.
    OwnDecryptionCa,
}

impl VerifyReason {
    /// Every reason, in code order.
    pub const ALL: &'static [VerifyReason] = &[
        Self::Unspecified,
        Self::UnableToGetIssuerCert,
        Self::UnableToGetCrl,
        Self::CertSignatureFailure,
        Self::CertNotYetValid,
        Self::CertHasExpired,
        Self::DepthZeroSelfSignedCert,
        Self::SelfSignedCertInChain,
        Self::UnableToGetIssuerCertLocally,
        Self::UnableToVerifyLeafSignature,
        Self::CertChainTooLong,
        Self::CertRevoked,
        Self::InvalidCa,
        Self::PathLengthExceeded,
        Self::InvalidPurpose,
        Self::UnhandledCriticalExtension,
        Self::PermittedSubtreeViolation,
        Self::HostnameMismatch,
        Self::IpAddressMismatch,
        Self::CaMdTooWeak,
        Self::OwnDecryptionCa,
    ];

    /// OpenSSL's `X509_V_ERR_*` number (OpenSSL 1.x numbering, as in the seed's logs).
    pub const fn code(self) -> u32 {
        match self {
            Self::Unspecified => 1,
            Self::UnableToGetIssuerCert => 2,
            Self::UnableToGetCrl => 3,
            Self::CertSignatureFailure => 7,
            Self::CertNotYetValid => 9,
            Self::CertHasExpired => 10,
            Self::DepthZeroSelfSignedCert => 18,
            Self::SelfSignedCertInChain => 19,
            Self::UnableToGetIssuerCertLocally => 20,
            Self::UnableToVerifyLeafSignature => 21,
            Self::CertChainTooLong => 22,
            Self::CertRevoked => 23,
            Self::InvalidCa => 24,
            Self::PathLengthExceeded => 25,
            Self::InvalidPurpose => 26,
            Self::UnhandledCriticalExtension => 34,
            Self::PermittedSubtreeViolation => 47,
            Self::HostnameMismatch => 62,
            Self::IpAddressMismatch => 64,
            Self::CaMdTooWeak => 68,
            Self::OwnDecryptionCa => 1001,
        }
    }

    /// The number OpenSSL 3 uses. Only `InvalidCa` differs: OpenSSL 3 moved it from
    /// 24 to 79 (and gave 24 to "issuer certificate doesn't have a public key").
    pub const fn openssl3_code(self) -> u32 {
        match self {
            Self::InvalidCa => 79,
            other => other.code(),
        }
    }

    /// The reason with OpenSSL code `code`, if the verifier knows it.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// OpenSSL's message, in the wording of the seed's logs (OpenSSL 1.x).
    pub const fn text(self) -> &'static str {
        match self {
            Self::DepthZeroSelfSignedCert => "self signed certificate",
            Self::SelfSignedCertInChain => "self signed certificate in certificate chain",
            Self::InvalidPurpose => "unsupported certificate purpose",
            Self::HostnameMismatch => "Hostname mismatch",
            other => other.openssl3_text(),
        }
    }

    /// OpenSSL 3's message (`X509_verify_cert_error_string`).
    pub const fn openssl3_text(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified certificate verification error",
            Self::UnableToGetIssuerCert => "unable to get issuer certificate",
            Self::UnableToGetCrl => "unable to get certificate CRL",
            Self::CertSignatureFailure => "certificate signature failure",
            Self::CertNotYetValid => "certificate is not yet valid",
            Self::CertHasExpired => "certificate has expired",
            Self::DepthZeroSelfSignedCert => "self-signed certificate",
            Self::SelfSignedCertInChain => "self-signed certificate in certificate chain",
            Self::UnableToGetIssuerCertLocally => "unable to get local issuer certificate",
            Self::UnableToVerifyLeafSignature => "unable to verify the first certificate",
            Self::CertChainTooLong => "certificate chain too long",
            Self::CertRevoked => "certificate revoked",
            Self::InvalidCa => "invalid CA certificate",
            Self::PathLengthExceeded => "path length constraint exceeded",
            Self::InvalidPurpose => "unsuitable certificate purpose",
            Self::UnhandledCriticalExtension => "unhandled critical extension",
            Self::PermittedSubtreeViolation => "permitted subtree violation",
            Self::HostnameMismatch => "hostname mismatch",
            Self::IpAddressMismatch => "IP address mismatch",
            Self::CaMdTooWeak => "CA signature digest algorithm too weak",
            Self::OwnDecryptionCa => "certificate chain issued by this appliance's own decryption CA",
        }
    }

    /// Whether the chain could not be tied to anything in the trust store (the
    /// reasons that pinning the server certificate fixes).
    pub const fn is_untrusted(self) -> bool {
        matches!(
            self,
            Self::DepthZeroSelfSignedCert
                | Self::SelfSignedCertInChain
                | Self::UnableToGetIssuerCertLocally
                | Self::UnableToGetIssuerCert
                | Self::UnableToVerifyLeafSignature
        )
    }
}

impl fmt::Display for VerifyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.text(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for (i, r) in VerifyReason::ALL.iter().enumerate() {
            assert_eq!(VerifyReason::from_code(r.code()), Some(*r));
            for other in &VerifyReason::ALL[i + 1..] {
                assert!(r.code() < other.code(), "ALL is in code order and unique");
            }
        }
        assert_eq!(VerifyReason::from_code(18).unwrap().text(), "self signed certificate");
        assert_eq!(VerifyReason::from_code(999), None);
    }
}
