//! Certificates as they come in and go out: PEM or DER, single or bundled; SHA-256
//! fingerprints; a summary with the names an operator reads.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::{Error, Result};
use crate::name;

/// A SHA-256 digest: of one certificate's DER (its fingerprint, as `openssl x509
/// -fingerprint -sha256` prints it) or of a whole chain ([`chain_sha256`]).
///
/// Displays as upper-case hex pairs joined by colons (OpenSSL's form); parses from
/// that form or from 64 plain hex digits in either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// Lower-case hex without separators (64 characters), e.g. for file names.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let hex: Vec<u8> = s.trim().bytes().filter(|&b| b != b':').collect();
        if hex.len() != 64 {
            return Err(Error::BadFingerprint(s.to_owned()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| Error::BadFingerprint(s.to_owned()))?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| Error::BadFingerprint(s.to_owned()))?;
        }
        Ok(Fingerprint(out))
    }
}

/// SHA-256 of a certificate chain: of the DER certificates concatenated in the order
/// presented (leaf first). DER is self-delimiting, so this is unambiguous, and it
/// equals `cat leaf.der intermediate.der ... | sha256sum`. It keys the forged
/// certificate cache and names an aborted handshake's chain in events.
pub fn chain_sha256(chain: &[CertificateDer<'_>]) -> Fingerprint {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for cert in chain {
        ctx.update(cert.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Fingerprint(out)
}

/// What an operator reads about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertSummary {
    /// Subject, OpenSSL one-line form (`/CN=server.tg.test`).
    pub subject: String,
    /// Issuer, OpenSSL one-line form.
    pub issuer: String,
    /// SHA-256 of the DER.
    pub fingerprint: Fingerprint,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Subject and issuer names are the same.
    pub self_issued: bool,
    /// The first common name, if any.
    pub common_name: Option<String>,
    /// DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// IP addresses of the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
}

/// Parses one DER certificate completely (no trailing bytes).
/// The `http://` URLs of a certificate's CRL distribution points (what the
/// control plane may fetch its issuer's CRL from); other schemes (ldap, https)
/// and names relative to the issuer are left out. Empty when the certificate
/// has none or cannot be parsed.
pub fn crl_distribution_points(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let Ok(cert) = parse_der(der) else { return Vec::new() };
    let mut out = Vec::new();
    for ext in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else { continue };
        for point in points.iter() {
            let Some(DistributionPointName::FullName(names)) = &point.distribution_point else { continue };
            for name in names {
                if let GeneralName::URI(uri) = name {
                    if uri.len() <= 2048 && uri.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://")) {
                        out.push((*uri).to_string());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn parse_der(der: &[u8]) -> std::result::Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} bytes after the certificate", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// Summarizes one DER certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary> {
    let cert = parse_der(der).map_err(|reason| Error::BadCertificate { index: 1, reason })?;
    Ok(summary_of(&cert, der))
}

pub(crate) fn summary_of(cert: &X509Certificate<'_>, der: &[u8]) -> CertSummary {
    let (dns_names, ip_addresses) = san_names(cert);
    CertSummary {
        subject: name::openssl_oneline(cert.subject()),
        issuer: name::openssl_oneline(cert.issuer()),
        fingerprint: Fingerprint::of(der),
        serial: cert.raw_serial().iter().map(|b| format!("{b:02X}")).collect(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca),
        self_issued: name::canonical(cert.subject()) == name::canonical(cert.issuer()),
        common_name: name::common_name(cert.subject()),
        dns_names,
        ip_addresses,
    }
}

/// DNS names and IP addresses of the subjectAltName extension.
pub(crate) fn san_names(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::IPAddress(raw) => match raw.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*raw).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*raw).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// The labels of all PEM blocks in `input` (`CERTIFICATE`, `PRIVATE KEY`, ...).
pub(crate) fn pem_labels(input: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(input);
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("-----BEGIN ").and_then(|r| r.strip_suffix("-----")).map(str::to_owned)
        })
        .collect()
}

/// Whether `input` looks like PEM text.
pub(crate) fn looks_like_pem(input: &[u8]) -> bool {
    input.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Certificates from PEM (any number of `CERTIFICATE` blocks, other blocks ignored)
/// or DER (one or several concatenated certificates). Every certificate is parsed;
/// anything unparsable is refused with its position.
pub fn parse_certificates(input: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = if looks_like_pem(input) {
        let mut out = Vec::new();
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(input) {
            let (kind, der) = item.map_err(|e| Error::NotCertificate(format!("bad PEM: {e}")))?;
            if kind == SectionKind::Certificate {
                out.push(CertificateDer::from(der));
            }
        }
        if out.is_empty() {
            let labels = pem_labels(input);
            return Err(if labels.is_empty() {
                Error::NoCertificate
            } else {
                Error::NotCertificate(format!(
                    "the PEM input holds {} but no CERTIFICATE block",
                    labels.iter().map(|l| format!("\"{l}\"")).collect::<Vec<_>>().join(", ")
                ))
            });
        }
        out
    } else if input.first() == Some(&0x30) {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            match x509_parser::parse_x509_certificate(rest) {
                Ok((after, _)) => {
                    let len = rest.len() - after.len();
                    out.push(CertificateDer::from(rest[..len].to_vec()));
                    rest = after;
                }
                Err(e) => {
                    return Err(Error::BadCertificate { index: out.len() + 1, reason: format!("DER: {e}") })
                }
            }
        }
        out
    } else if input.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::NoCertificate);
    } else {
        return Err(Error::NotCertificate(
            "neither PEM (no \"-----BEGIN\" line) nor DER (does not start with an ASN.1 SEQUENCE)".into(),
        ));
    };
    for (i, c) in certs.iter().enumerate() {
        parse_der(c.as_ref()).map_err(|reason| Error::BadCertificate { index: i + 1, reason })?;
    }
    Ok(certs)
}

/// PEM text of one DER object under `label`, 64 columns, as OpenSSL writes it.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        b64.push(ALPHABET[(v >> 18) as usize & 63]);
        b64.push(ALPHABET[(v >> 12) as usize & 63]);
        b64.push(if n > 1 { ALPHABET[(v >> 6) as usize & 63] } else { b'=' });
        b64.push(if n > 2 { ALPHABET[v as usize & 63] } else { b'=' });
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_both_forms() {
        let fp = Fingerprint::of(b"abc");
        assert_eq!(fp.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(fp.to_hex().to_uppercase().parse::<Fingerprint>().unwrap(), fp);
        assert!("abcd".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn pem_encode_decodes_back() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &data);
            let (kind, der) = <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(kind, SectionKind::Certificate);
            assert_eq!(der, data);
        }
    }

    #[test]
    fn garbage_is_refused_clearly() {
        assert!(matches!(parse_certificates(b"hello world"), Err(Error::NotCertificate(_))));
        assert!(matches!(parse_certificates(b"  \n"), Err(Error::NoCertificate)));
        assert!(matches!(
            parse_certificates(&[0x30, 0x03, 1, 2, 3]),
            Err(Error::BadCertificate { index: 1, .. })
        ));
        let key_only = pem_encode("PRIVATE KEY", &[0x30, 0]);
        let err = parse_certificates(key_only.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("PRIVATE KEY"), "{err}");
    }
}
