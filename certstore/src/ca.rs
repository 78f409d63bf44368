//! The decryption CA: the certificate clients install, and the key that signs the
//! forged server certificates.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::fmt;

use crate::cert::{self, CertSummary, Fingerprint};
use crate::error::{Error, Result};
use crate::key;

/// How to generate a decryption CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaOptions {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization, if any.
    pub organization: Option<String>,
    /// Validity from one hour before now (clock skew), in days.
    pub validity_days: u32,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions { common_name: "tlsgate decryption CA".into(), organization: None, validity_days: 3650 }
    }
}

impl CaOptions {
    /// The defaults with another common name.
    pub fn with_common_name(common_name: impl Into<String>) -> Self {
        CaOptions { common_name: common_name.into(), ..Self::default() }
    }
}

/// The decryption CA. Its `Debug` output never shows the key.
pub struct DecryptionCa {
    cert_der: CertificateDer<'static>,
    /// What follows a forged leaf in the chain sent to clients: nothing for a
    /// self-signed CA, else the CA certificate and the rest of its imported chain.
    sent_chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
    /// rcgen's view of the CA, used as the issuer when signing.
    issuer: rcgen::Certificate,
    summary: CertSummary,
}

impl fmt::Debug for DecryptionCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionCa")
            .field("subject", &self.summary.subject)
            .field("fingerprint", &self.summary.fingerprint)
            .field("key", &"(hidden)")
            .finish()
    }
}

impl DecryptionCa {
    /// Generates a CA: ECDSA P-256, basicConstraints CA:TRUE pathlen 0 (critical),
    /// keyUsage keyCertSign + cRLSign (critical), valid from `now` - 1 h for
    /// `opts.validity_days` days, random serial.
    pub fn generate(opts: &CaOptions, now: UnixTime) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        Self::generate_with(opts, key, now)
    }

    /// [`DecryptionCa::generate`] over a key held elsewhere (a PKCS#11 token):
    /// the certificate is self-signed by that key; the key never leaves it.
    pub fn generate_with_remote_key(
        opts: &CaOptions,
        remote: Box<dyn rcgen::RemoteKeyPair + Send + Sync>,
        now: UnixTime,
    ) -> Result<Self> {
        let key = KeyPair::from_remote(remote).map_err(gen_err)?;
        Self::generate_with(opts, key, now)
    }

    fn generate_with(opts: &CaOptions, key: KeyPair, now: UnixTime) -> Result<Self> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(o) = &opts.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        dn.push(DnType::CommonName, opts.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now_s = secs(now);
        params.not_before = offset_time(now_s - 3600)?;
        params.not_after = offset_time(now_s + i64::from(opts.validity_days) * 86_400)?;
        params.serial_number = Some(random_serial()?.into());
        let issuer = params.self_signed(&key).map_err(gen_err)?;
        let cert_der = issuer.der().clone();
        let summary = cert::summarize(cert_der.as_ref())?;
        let ca = DecryptionCa { cert_der, sent_chain: Vec::new(), key, issuer, summary };
        ca.trial_forge(now)?;
        Ok(ca)
    }

    /// Imports a CA from its certificate (PEM or DER; a bundle is the CA first, then
    /// the certificates above it, sent to clients after forged leaves) and its private
    /// key (PEM or DER: PKCS#8, PKCS#1 RSA or SEC1 EC; RSA 2048-4096 bits, ECDSA
    /// P-256/P-384 or Ed25519).
    ///
    /// Refused: a certificate that is not a CA or may not sign certificates, a key
    /// that is encrypted or unusable, a key that is not the certificate's.
    pub fn import(cert_input: &[u8], key_input: &[u8], now: UnixTime) -> Result<Self> {
        let certs = cert::parse_certificates(cert_input)?;
        Self::check_ca_cert(&certs[0])?;
        let pkcs8 = key::parse_private_key(key_input)?;
        let key = KeyPair::try_from(&pkcs8).map_err(|e| Error::UnsupportedKey {
            detail: format!(
                "the signer accepts RSA (2048 to 4096 bits), ECDSA P-256/P-384 and Ed25519 keys: {e}"
            ),
        })?;
        Self::import_with(certs, key, now)
    }

    /// [`DecryptionCa::import`] with the key held elsewhere (a PKCS#11 token).
    pub fn import_with_remote_key(
        cert_input: &[u8],
        remote: Box<dyn rcgen::RemoteKeyPair + Send + Sync>,
        now: UnixTime,
    ) -> Result<Self> {
        let certs = cert::parse_certificates(cert_input)?;
        let key = KeyPair::from_remote(remote).map_err(gen_err)?;
        Self::import_with(certs, key, now)
    }

    /// A certificate that may be a decryption CA: CA:TRUE and keyCertSign.
    fn check_ca_cert(cert_der: &CertificateDer<'_>) -> Result<()> {
        let parsed = cert::parse_der(cert_der.as_ref())
            .map_err(|reason| Error::BadCertificate { index: 1, reason })?;
        let summary = cert::summary_of(&parsed, cert_der.as_ref());
        if !summary.is_ca {
            return Err(Error::NotCa { subject: summary.subject });
        }
        if let Ok(Some(ku)) = parsed.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(Error::CaCannotSign { subject: summary.subject });
            }
        }
        Ok(())
    }

    fn import_with(certs: Vec<CertificateDer<'static>>, key: KeyPair, now: UnixTime) -> Result<Self> {
        Self::check_ca_cert(&certs[0])?;
        let cert_der = certs[0].clone();
        let parsed = cert::parse_der(cert_der.as_ref())
            .map_err(|reason| Error::BadCertificate { index: 1, reason })?;
        let summary = cert::summary_of(&parsed, cert_der.as_ref());
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch { subject: summary.subject });
        }
        let issuer = CertificateParams::from_ca_cert_der(&cert_der)
            .and_then(|params| params.self_signed(&key))
            .map_err(|e| Error::CaUnusable(format!("cannot read the CA certificate for signing: {e}")))?;
        let sent_chain = if summary.self_issued { Vec::new() } else { certs };
        let ca = DecryptionCa { cert_der, sent_chain, key, issuer, summary };
        ca.trial_forge(now)?;
        Ok(ca)
    }

    /// The CA certificate, DER (what clients install).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM (what clients install).
    pub fn cert_pem(&self) -> String {
        cert::pem_encode("CERTIFICATE", self.cert_der.as_ref())
    }

    /// The private key as unencrypted PKCS#8 PEM, for the control plane's state
    /// directory (write it with mode 0600; never log it).
    pub fn key_pkcs8_pem(&self) -> String {
        cert::pem_encode("PRIVATE KEY", self.key.serialized_der())
    }

    /// Subject, issuer, fingerprint, validity of the CA certificate.
    pub fn summary(&self) -> &CertSummary {
        &self.summary
    }

    /// SHA-256 fingerprint of the CA certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.summary.fingerprint
    }

    /// The certificates sent after a forged leaf.
    pub(crate) fn sent_chain(&self) -> &[CertificateDer<'static>] {
        &self.sent_chain
    }

    pub(crate) fn signer(&self) -> (&rcgen::Certificate, &KeyPair) {
        (&self.issuer, &self.key)
    }

    /// Forges one certificate and checks it chains to this CA with webpki, so that a
    /// CA whose name or key the generator cannot reproduce is refused when it is
    /// configured, not on traffic.
    fn trial_forge(&self, now: UnixTime) -> Result<()> {
        let leaf_key = crate::forge::LeafKey::generate()?;
        let name =
            ServerName::try_from("trial.tlsgate.invalid").map_err(|e| Error::Generate(e.to_string()))?;
        let now_s = secs(now);
        if now_s < self.summary.not_before || now_s >= self.summary.not_after {
            return Err(Error::CaUnusable(format!(
                "the CA certificate is not valid now (notBefore {}, notAfter {}, Unix time)",
                self.summary.not_before, self.summary.not_after
            )));
        }
        let forged = crate::forge::forge_for_trial(self, &leaf_key, &name, now)?;
        let parsed = cert::parse_der(forged.as_ref()).map_err(Error::CaUnusable)?;
        let ca = cert::parse_der(self.cert_der.as_ref()).map_err(Error::CaUnusable)?;
        if parsed.issuer().as_raw() != ca.subject().as_raw() {
            return Err(Error::CaUnusable(
                "the certificate generator cannot reproduce the CA's subject name byte for byte".into(),
            ));
        }
        let anchor = webpki::anchor_from_trusted_cert(&self.cert_der)
            .map_err(|e| Error::CaUnusable(format!("not usable as a trust anchor: {e}")))?;
        let ee = webpki::EndEntityCert::try_from(&forged).map_err(|e| Error::CaUnusable(e.to_string()))?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| Error::CaUnusable(format!("a test certificate does not verify against the CA: {e}")))?;
        Ok(())
    }
}

fn gen_err(e: rcgen::Error) -> Error {
    Error::Generate(e.to_string())
}

pub(crate) fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

pub(crate) fn offset_time(unix: i64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| Error::Generate(format!("time {unix}: {e}")))
}

/// 16 random bytes, positive and without a leading zero byte.
pub(crate) fn random_serial() -> Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut serial = vec![0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut serial).map_err(|_| Error::Generate("no randomness".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}
