//! The first error `openssl verify -purpose sslserver` would print for a chain.
//!
//! OpenSSL 3's `X509_verify_cert`, as far as a TLS client meets it:
//! 1. build the chain from the leaf: for each certificate look for its issuer in the
//!    trust store first, then among the certificates the server sent; stop at a
//!    trusted certificate, at a self-signed one, or when no issuer is found
//!    (→ 18 / 19 / 20);
//! 2. extensions, leaf to root: unhandled critical extension (34), issuer not a CA
//!    (24), purpose `sslserver` from extendedKeyUsage / keyUsage / nsCertType (26),
//!    pathLenConstraint (25);
//! 3. signature digests at security level 1, as libssl checks them (68);
//! 4. the host name or IP address (62 / 64);
//! 5. root to leaf: each signature with its issuer's key (7), then each
//!    certificate's dates (9, 10).
//!
//! An "issuer" is a certificate whose subject matches the issuer name, whose subject
//! key identifier matches the authority key identifier (when both are present),
//! whose key type suits the signature algorithm and whose keyUsage (if present)
//! allows keyCertSign. "Self-signed" is the same test against the certificate
//! itself without the keyUsage condition, as OpenSSL 3 sets `EXFLAG_SS` (the
//! signature is not checked).

use rustls_pki_types::{CertificateDer, ServerName};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::Oid;

use super::VerifyReason;
use crate::cert::{parse_der, Fingerprint};
use crate::name;
use crate::trust::TrustSnapshot;

/// Longest chain followed (OpenSSL's default depth is 100; webpki stops earlier).
const MAX_CHAIN: usize = 16;

/// One error: what, at which depth, about which certificate.
#[derive(Debug)]
pub(crate) struct Finding {
    pub reason: VerifyReason,
    pub depth: usize,
    pub subject: String,
    pub issuer: String,
}

impl Finding {
    pub(crate) fn at(reason: VerifyReason, depth: usize, cert: &X509Certificate<'_>) -> Self {
        Finding {
            reason,
            depth,
            subject: name::openssl_oneline(cert.subject()),
            issuer: name::openssl_oneline(cert.issuer()),
        }
    }
}

struct Node<'a> {
    der: &'a [u8],
    cert: X509Certificate<'a>,
    trusted: bool,
}

/// Dates of a pinned certificate (it is trusted as it is, but not past its notAfter).
pub(crate) fn pinned_dates(der: &[u8], now: i64) -> Option<Finding> {
    match parse_der(der) {
        Ok(cert) => check_time(&cert, now).map(|reason| Finding::at(reason, 0, &cert)),
        Err(e) => {
            Some(Finding { reason: VerifyReason::Unspecified, depth: 0, subject: e, issuer: String::new() })
        }
    }
}

/// The certificate of the presented chain that is, or is issued by, a CA whose
/// chains are refused (the appliance's own decryption CA), if any.
pub(crate) fn issued_by_refused(
    trust: &TrustSnapshot,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<Finding> {
    if trust.refused.is_empty() {
        return None;
    }
    for (depth, der) in std::iter::once(end_entity).chain(intermediates).enumerate() {
        let fp = Fingerprint::of(der.as_ref());
        let Ok(cert) = parse_der(der.as_ref()) else { continue };
        let issuer = name::canonical(cert.issuer());
        if trust.refused.iter().any(|(f, subject)| *f == fp || *subject == issuer) {
            return Some(Finding::at(VerifyReason::OwnDecryptionCa, depth, &cert));
        }
    }
    None
}

/// The first error OpenSSL would report, or `None` when this analysis finds none.
pub(crate) fn first_error(
    trust: &TrustSnapshot,
    end_entity: &[u8],
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    name_ok: bool,
    now: i64,
) -> Option<Finding> {
    let leaf = parse_der(end_entity).ok()?;
    let pool: Vec<(&[u8], X509Certificate<'_>)> =
        intermediates.iter().filter_map(|c| parse_der(c.as_ref()).ok().map(|p| (c.as_ref(), p))).collect();
    let mut used = vec![false; pool.len()];

    // 1. Build the chain.
    let leaf_trusted = trust.is_trusted_ca(&Fingerprint::of(end_entity));
    let mut chain = vec![Node { der: end_entity, cert: leaf, trusted: leaf_trusted }];
    loop {
        let cur = chain.last()?;
        if cur.trusted {
            break;
        }
        let depth = chain.len() - 1;
        if self_signed(&cur.cert) {
            let reason = if depth == 0 {
                VerifyReason::DepthZeroSelfSignedCert
            } else {
                VerifyReason::SelfSignedCertInChain
            };
            return Some(Finding::at(reason, depth, &cur.cert));
        }
        if chain.len() >= MAX_CHAIN {
            return Some(Finding::at(VerifyReason::CertChainTooLong, depth, &cur.cert));
        }
        let wanted = name::canonical(cur.cert.issuer());
        let in_chain = |der: &[u8]| chain.iter().any(|n| n.der == der);

        // Trusted store first.
        let trusted: Vec<(&[u8], X509Certificate<'_>)> = trust
            .cas_named(&wanted)
            .filter(|der| !in_chain(der.as_ref()))
            .filter_map(|der| parse_der(der.as_ref()).ok().map(|p| (der.as_ref(), p)))
            .filter(|(_, cand)| is_issuer(cand, &cur.cert))
            .collect();
        if let Some(i) = prefer_current(trusted.iter().map(|(_, c)| c), now) {
            let (der, cert) = trusted.into_iter().nth(i)?;
            chain.push(Node { der, cert, trusted: true });
            continue;
        }
        // Then what the server sent.
        let candidates: Vec<usize> = (0..pool.len())
            .filter(|&i| !used[i] && !in_chain(pool[i].0) && is_issuer(&pool[i].1, &cur.cert))
            .collect();
        if let Some(pick) = prefer_current(candidates.iter().map(|&i| &pool[i].1), now) {
            let i = candidates[pick];
            used[i] = true;
            let der = pool[i].0;
            let cert = parse_der(der).ok()?;
            let trusted = trust.is_trusted_ca(&Fingerprint::of(der));
            chain.push(Node { der, cert, trusted });
            continue;
        }
        return Some(Finding::at(VerifyReason::UnableToGetIssuerCertLocally, depth, &cur.cert));
    }
    let n = chain.len();

    // 2. Extensions, leaf to root.
    let mut plen = 0u32;
    for (i, node) in chain.iter().enumerate() {
        let x = &node.cert;
        if x.extensions().iter().any(|e| e.critical && !is_handled_extension(&e.oid)) {
            return Some(Finding::at(VerifyReason::UnhandledCriticalExtension, i, x));
        }
        if i > 0 {
            let ca = check_ca(x);
            if ca == CaKind::No || (i + 1 < n && ca != CaKind::BasicConstraints) {
                return Some(Finding::at(VerifyReason::InvalidCa, i, x));
            }
        }
        if !ssl_server_purpose(x, i > 0) {
            return Some(Finding::at(VerifyReason::InvalidPurpose, i, x));
        }
        if i > 1 {
            if let Some(max) = path_len(x) {
                if plen > max {
                    return Some(Finding::at(VerifyReason::PathLengthExceeded, i, x));
                }
            }
        }
        if i > 0 && name::canonical(x.subject()) != name::canonical(x.issuer()) {
            plen += 1;
        }
    }

    // 3. Signature digests (security level 1): all but the trust anchor's own.
    for (i, node) in chain.iter().enumerate().take(n - 1) {
        if weak_digest(&node.cert.signature_algorithm.algorithm) {
            return Some(Finding::at(VerifyReason::CaMdTooWeak, i, &node.cert));
        }
    }

    // 4. The name.
    if !name_ok {
        let reason = match server_name {
            ServerName::IpAddress(_) => VerifyReason::IpAddressMismatch,
            _ => VerifyReason::HostnameMismatch,
        };
        return Some(Finding::at(reason, 0, &chain[0].cert));
    }

    // 5. Signatures and dates, root to leaf. The top certificate's own signature is
    //    not checked (it is trusted, as an anchor).
    for i in (0..n).rev() {
        let xs = &chain[i].cert;
        if i + 1 < n {
            let issuer = &chain[i + 1].cert;
            if let Err(x509_parser::error::X509Error::SignatureVerificationError) =
                xs.verify_signature(Some(issuer.public_key()))
            {
                return Some(Finding::at(VerifyReason::CertSignatureFailure, i, xs));
            }
        }
        if let Some(reason) = check_time(xs, now) {
            return Some(Finding::at(reason, i, xs));
        }
    }
    None
}

/// The reason for a webpki refusal this analysis could not explain. Subject and
/// issuer are those of the presented certificate at the reported depth.
pub(crate) fn fallback(
    err: Option<&webpki::Error>,
    end_entity: &[u8],
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
) -> Finding {
    use webpki::Error as W;
    let (reason, depth) = match err {
        Some(W::UnknownIssuer) => (VerifyReason::UnableToGetIssuerCertLocally, 0),
        Some(W::CertExpired { .. } | W::InvalidCertValidity) => (VerifyReason::CertHasExpired, 0),
        Some(W::CertNotValidYet { .. }) => (VerifyReason::CertNotYetValid, 0),
        Some(W::InvalidSignatureForPublicKey | W::SignatureAlgorithmMismatch) => {
            (VerifyReason::CertSignatureFailure, 0)
        }
        Some(W::CertNotValidForName(_)) => match server_name {
            ServerName::IpAddress(_) => (VerifyReason::IpAddressMismatch, 0),
            _ => (VerifyReason::HostnameMismatch, 0),
        },
        Some(W::CaUsedAsEndEntity | W::RequiredEkuNotFoundContext(_) | W::EmptyEkuExtension) => {
            (VerifyReason::InvalidPurpose, 0)
        }
        Some(W::EndEntityUsedAsCa) => (VerifyReason::InvalidCa, 1),
        Some(W::PathLenConstraintViolated) => (VerifyReason::PathLengthExceeded, 1),
        Some(W::UnsupportedCriticalExtension) => (VerifyReason::UnhandledCriticalExtension, 0),
        Some(W::NameConstraintViolation) => (VerifyReason::PermittedSubtreeViolation, 0),
        Some(W::MaximumPathDepthExceeded) => (VerifyReason::CertChainTooLong, 0),
        Some(W::CertRevoked) => (VerifyReason::CertRevoked, 0),
        #[allow(deprecated)]
        Some(W::RequiredEkuNotFound) => (VerifyReason::InvalidPurpose, 0),
        _ => (VerifyReason::Unspecified, 0),
    };
    let der = if depth == 0 { Some(end_entity) } else { intermediates.get(depth - 1).map(|c| c.as_ref()) };
    let depth = if der.is_some() { depth } else { 0 };
    match parse_der(der.unwrap_or(end_entity)) {
        Ok(cert) => Finding::at(reason, depth, &cert),
        Err(e) => Finding {
            reason,
            depth: 0,
            subject: format!("(unparsable certificate: {e})"),
            issuer: String::new(),
        },
    }
}

/// Index of the first certificate valid now, else of the last one (OpenSSL's
/// `find_issuer` preference).
fn prefer_current<'a, 'b: 'a>(
    certs: impl Iterator<Item = &'a X509Certificate<'b>>,
    now: i64,
) -> Option<usize> {
    let mut last = None;
    for (i, c) in certs.enumerate() {
        if check_time(c, now).is_none() {
            return Some(i);
        }
        last = Some(i);
    }
    last
}

/// 9 or 10 when `now` is outside the certificate's dates (OpenSSL compares
/// notAfter <= now as expired).
fn check_time(cert: &X509Certificate<'_>, now: i64) -> Option<VerifyReason> {
    let v = cert.validity();
    if v.not_before.timestamp() > now {
        Some(VerifyReason::CertNotYetValid)
    } else if v.not_after.timestamp() <= now {
        Some(VerifyReason::CertHasExpired)
    } else {
        None
    }
}

fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
        _ => None,
    })
}

/// OpenSSL's `X509_check_akid`: the subject's authority key identifier (if any)
/// must agree with the issuer's subject key identifier and serial number.
fn akid_matches(issuer: &X509Certificate<'_>, subject: &X509Certificate<'_>) -> bool {
    let akid = subject.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => Some(a),
        _ => None,
    });
    let Some(akid) = akid else { return true };
    if let (Some(kid), Some(skid)) = (&akid.key_identifier, subject_key_id(issuer)) {
        if kid.0 != skid {
            return false;
        }
    }
    if let Some(serial) = akid.authority_cert_serial {
        if strip_zeros(serial) != strip_zeros(issuer.raw_serial()) {
            return false;
        }
    }
    true
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|&&x| x == 0).count();
    &b[skip..]
}

/// keyUsage present and lacking every bit of `wanted`.
fn ku_rejects(
    cert: &X509Certificate<'_>,
    wanted: impl Fn(&x509_parser::extensions::KeyUsage) -> bool,
) -> bool {
    match cert.key_usage() {
        Ok(Some(ku)) => !wanted(ku.value),
        _ => false,
    }
}

/// The key family a signature algorithm needs, and the family of a public key.
#[derive(PartialEq, Eq, Clone, Copy)]
enum KeyFamily {
    Rsa,
    Ec,
    Ed25519,
    Ed448,
    Unknown,
}

fn sig_family(oid: &Oid<'_>) -> KeyFamily {
    let s = oid.to_id_string();
    if s.starts_with("1.2.840.113549.1.1.") {
        KeyFamily::Rsa
    } else if s.starts_with("1.2.840.10045.4.") {
        KeyFamily::Ec
    } else if s == "1.3.101.112" {
        KeyFamily::Ed25519
    } else if s == "1.3.101.113" {
        KeyFamily::Ed448
    } else {
        KeyFamily::Unknown
    }
}

fn key_family(oid: &Oid<'_>) -> KeyFamily {
    match oid.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => KeyFamily::Rsa,
        "1.2.840.10045.2.1" => KeyFamily::Ec,
        "1.3.101.112" => KeyFamily::Ed25519,
        "1.3.101.113" => KeyFamily::Ed448,
        _ => KeyFamily::Unknown,
    }
}

/// OpenSSL's `ossl_x509_likely_issued`: names, key identifiers, key type.
fn likely_issued(issuer: &X509Certificate<'_>, subject: &X509Certificate<'_>) -> bool {
    if name::canonical(issuer.subject()) != name::canonical(subject.issuer()) {
        return false;
    }
    if !akid_matches(issuer, subject) {
        return false;
    }
    let need = sig_family(&subject.signature_algorithm.algorithm);
    let have = key_family(&issuer.public_key().algorithm.algorithm);
    need == KeyFamily::Unknown || have == KeyFamily::Unknown || need == have
}

/// OpenSSL's `X509_check_issued` (3.0): likely issued, and keyUsage (if present)
/// allows keyCertSign.
fn is_issuer(issuer: &X509Certificate<'_>, subject: &X509Certificate<'_>) -> bool {
    likely_issued(issuer, subject) && !ku_rejects(issuer, |ku| ku.key_cert_sign())
}

/// OpenSSL's `X509_self_signed(x, 0)` (the `EXFLAG_SS` flag): self-issued, its own
/// key identifier and key type; keyUsage does not matter here.
fn self_signed(cert: &X509Certificate<'_>) -> bool {
    likely_issued(cert, cert)
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum CaKind {
    /// Not a CA.
    No,
    /// basicConstraints CA:TRUE.
    BasicConstraints,
    /// A CA only by older conventions (v1 self-signed root, keyUsage keyCertSign).
    Legacy,
}

/// OpenSSL's `X509_check_ca`.
fn check_ca(cert: &X509Certificate<'_>) -> CaKind {
    if ku_rejects(cert, |ku| ku.key_cert_sign()) {
        return CaKind::No;
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) => {
            if bc.value.ca {
                CaKind::BasicConstraints
            } else {
                CaKind::No
            }
        }
        _ => {
            let v1_root = cert.version().0 == 0 && self_signed(cert);
            let ku_sign = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
            if v1_root || ku_sign {
                CaKind::Legacy
            } else {
                CaKind::No
            }
        }
    }
}

fn path_len(cert: &X509Certificate<'_>) -> Option<u32> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => bc.value.path_len_constraint,
        _ => None,
    }
}

/// OpenSSL's `check_purpose_ssl_server`.
fn ssl_server_purpose(cert: &X509Certificate<'_>, as_ca: bool) -> bool {
    // extendedKeyUsage: serverAuth, or Netscape/Microsoft server gated crypto.
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let sgc = eku.value.other.iter().any(|o| {
            let s = o.to_id_string();
            s == "2.16.840.1.113730.4.1" || s == "1.3.6.1.4.1.311.10.3.3"
        });
        if !eku.value.server_auth && !sgc {
            return false;
        }
    }
    let ns = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::NSCertType(t) => Some(t),
        _ => None,
    });
    if as_ca {
        if ku_rejects(cert, |ku| ku.key_cert_sign()) {
            return false;
        }
        if let Some(ns) = ns {
            if !ns.ssl_ca() {
                return false;
            }
        }
        return check_ca(cert) != CaKind::No;
    }
    if let Some(ns) = ns {
        if !ns.ssl_server() {
            return false;
        }
    }
    !ku_rejects(cert, |ku| ku.digital_signature() || ku.key_encipherment() || ku.key_agreement())
}

/// Extensions OpenSSL handles (`X509_supported_extension`); any other critical one
/// is error 34.
fn is_handled_extension(oid: &Oid<'_>) -> bool {
    const HANDLED: &[&str] = &[
        "2.16.840.1.113730.1.1", // nsCertType
        "2.5.29.15",             // keyUsage
        "2.5.29.17",             // subjectAltName
        "2.5.29.19",             // basicConstraints
        "2.5.29.32",             // certificatePolicies
        "2.5.29.31",             // cRLDistributionPoints
        "2.5.29.37",             // extendedKeyUsage
        "1.3.6.1.5.5.7.1.7",     // sbgp-ipAddrBlock
        "1.3.6.1.5.5.7.1.8",     // sbgp-autonomousSysNum
        "1.3.6.1.5.5.7.48.1.5",  // OCSP noCheck
        "2.5.29.36",             // policyConstraints
        "1.3.6.1.5.5.7.1.14",    // proxyCertInfo
        "2.5.29.30",             // nameConstraints
        "2.5.29.33",             // policyMappings
        "2.5.29.54",             // inhibitAnyPolicy
    ];
    let s = oid.to_id_string();
    HANDLED.contains(&s.as_str())
}

/// MD5 and SHA-1 signatures (63 bits or less of security: refused at level 1).
fn weak_digest(oid: &Oid<'_>) -> bool {
    matches!(
        oid.to_id_string().as_str(),
        "1.2.840.113549.1.1.4"   // md5WithRSAEncryption
            | "1.2.840.113549.1.1.5" // sha1WithRSAEncryption
            | "1.3.14.3.2.29"        // sha1WithRSA (OIW)
            | "1.2.840.10045.4.1"    // ecdsa-with-SHA1
            | "1.2.840.10040.4.3" // dsa-with-sha1
    )
}
