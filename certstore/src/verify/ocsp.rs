//! Stapled OCSP responses (RFC 6960): what a server's stapled response says about
//! its own certificate.
//!
//! ```text
//!   OCSPResponse ─► status successful? ─► id-pkix-ocsp-basic ─► BasicOCSPResponse
//!     signature by the issuer, or by a responder certificate the issuer signed
//!     for id-kp-OCSPSigning (SHA-1 signatures refused)
//!     SingleResponse whose CertID (SHA-1 or SHA-256) names this certificate
//!     thisUpdate ≤ now < nextUpdate (24 h after thisUpdate when absent)
//!   ─► good | revoked | unknown (why)
//! ```
//!
//! Anything that does not prove a status — a damaged, stale, foreign or unsigned
//! response — is `Unknown`, never `Good`: a staple is the server's own claim,
//! replayable by anyone who recorded it, and only the issuer's signature and the
//! dates make it evidence.

use ring::digest;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// What a stapled response proves about the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StapleStatus {
    /// Signed by the issuer's authority, fresh, and says good.
    Good,
    /// Signed by the issuer's authority, and says revoked (any date: a revocation
    /// is not undone by the response growing old).
    Revoked,
    /// Proves nothing; why.
    Unknown(String),
}

/// Clock skew tolerated on thisUpdate / nextUpdate.
const SKEW_SECS: i64 = 300;
/// How long a response without nextUpdate counts as fresh.
const NO_NEXT_UPDATE_SECS: i64 = 24 * 3600;

const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// The signature algorithms accepted on a response and on a responder's
/// certificate: sha{256,384,512}WithRSAEncryption, ecdsa-with-SHA{256,384},
/// Ed25519. Anything else (SHA-1 above all) proves nothing.
pub(crate) const STRONG_SIGNATURES: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    &[0x2b, 0x65, 0x70],
];
/// Responder certificates looked at in one response, at most (each costs a
/// signature check).
const MAX_RESPONDER_CERTS: usize = 4;

/// The status `staple` gives `leaf` (DER), issued by the certificate whose
/// subject public key info (DER, with its SEQUENCE) is `issuer_spki`.
pub(crate) fn staple_status(staple: &[u8], leaf: &[u8], issuer_spki: &[u8], now: i64) -> StapleStatus {
    match check(staple, leaf, issuer_spki, now) {
        Ok(status) => status,
        Err(why) => StapleStatus::Unknown(why),
    }
}

fn check(staple: &[u8], leaf: &[u8], issuer_spki: &[u8], now: i64) -> Result<StapleStatus, String> {
    let (_, leaf) = X509Certificate::from_der(leaf).map_err(|e| format!("certificate: {e}"))?;
    let (_, issuer_key) =
        SubjectPublicKeyInfo::from_der(issuer_spki).map_err(|e| format!("issuer key: {e}"))?;

    // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ... }
    let mut outer = Der::sequence_of(staple)?;
    let status = outer.expect(0x0a, "responseStatus")?;
    if status != [0] {
        return Ok(StapleStatus::Unknown(format!("responder answered status {status:?}, not successful")));
    }
    let mut bytes = Der::new(outer.expect(0xa0, "responseBytes")?);
    let mut bytes = Der::new(bytes.expect(0x30, "ResponseBytes")?);
    if bytes.expect(0x06, "responseType")? != OID_OCSP_BASIC {
        return Err("not a basic OCSP response".into());
    }
    let basic = bytes.expect(0x04, "response")?;

    // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs [0] OPTIONAL }
    let mut basic = Der::sequence_of(basic)?;
    let (tbs_value, tbs_whole) = basic.expect_whole(0x30, "tbsResponseData")?;
    let (_, alg_whole) = basic.expect_whole(0x30, "signatureAlgorithm")?;
    let (_, sig_whole) = basic.expect_whole(0x03, "signature")?;
    let certs = if basic.peek() == Some(0xa0) { Some(basic.expect(0xa0, "certs")?) } else { None };

    let (_, alg) =
        AlgorithmIdentifier::from_der(alg_whole).map_err(|e| format!("signatureAlgorithm: {e}"))?;
    if !STRONG_SIGNATURES.contains(&alg.algorithm.as_bytes()) {
        return Err(format!("signed with {} (SHA-256 or better required)", alg.algorithm));
    }
    let (_, signature) = x509_parser::der_parser::asn1_rs::BitString::from_der(sig_whole)
        .map_err(|e| format!("signature: {e}"))?;
    let signed_by = |key: &SubjectPublicKeyInfo<'_>| {
        x509_parser::verify::verify_signature(key, &alg, &signature, tbs_whole).is_ok()
    };
    if !signed_by(&issuer_key) {
        // A delegated responder: a certificate in `certs`, issued by the same
        // issuer (name and signature), for id-kp-OCSPSigning, valid now.
        let delegated = certs
            .map(|c| responder_certificates(c, &leaf, &issuer_key, now))
            .transpose()?
            .unwrap_or_default();
        if !delegated.iter().any(signed_by) {
            return Err("not signed by the issuer or a responder it authorised".into());
        }
    }

    // ResponseData ::= SEQUENCE { version [0] OPTIONAL, responderID, producedAt, responses, [1] ext }
    let mut tbs = Der::new(tbs_value);
    if tbs.peek() == Some(0xa0) {
        tbs.expect(0xa0, "version")?;
    }
    match tbs.peek() {
        Some(0xa1 | 0xa2) => tbs.skip()?,
        _ => return Err("responderID missing".into()),
    }
    tbs.expect(0x18, "producedAt")?;
    let mut responses = Der::new(tbs.expect(0x30, "responses")?);
    while !responses.is_empty() {
        let single = responses.expect(0x30, "SingleResponse")?;
        if let Some(status) = single_response(single, &leaf, &issuer_key, now)? {
            return Ok(status);
        }
    }
    Ok(StapleStatus::Unknown("no response for this certificate".into()))
}

/// The keys of the responder certificates in `certs` that the issuer authorised.
fn responder_certificates<'a>(
    certs: &'a [u8],
    leaf: &X509Certificate<'_>,
    issuer_key: &SubjectPublicKeyInfo<'_>,
    now: i64,
) -> Result<Vec<SubjectPublicKeyInfo<'a>>, String> {
    let mut list = Der::new(Der::new(certs).expect(0x30, "certs")?);
    let mut keys = Vec::new();
    for _ in 0..MAX_RESPONDER_CERTS {
        if list.is_empty() {
            break;
        }
        let (_, whole) = list.expect_whole(0x30, "certificate")?;
        let Ok((_, cert)) = X509Certificate::from_der(whole) else { continue };
        let for_ocsp = cert.extended_key_usage().ok().flatten().is_some_and(|e| e.value.ocsp_signing);
        let valid =
            cert.validity().not_before.timestamp() <= now && now <= cert.validity().not_after.timestamp();
        let strong = STRONG_SIGNATURES.contains(&cert.signature_algorithm.algorithm.as_bytes());
        if cert.issuer().as_raw() == leaf.issuer().as_raw()
            && strong
            && for_ocsp
            && valid
            && cert.verify_signature(Some(issuer_key)).is_ok()
        {
            keys.push(cert.tbs_certificate.subject_pki);
        }
    }
    Ok(keys)
}

/// The status in `single` if its CertID names `leaf`.
fn single_response(
    single: &[u8],
    leaf: &X509Certificate<'_>,
    issuer_key: &SubjectPublicKeyInfo<'_>,
    now: i64,
) -> Result<Option<StapleStatus>, String> {
    let mut single = Der::new(single);
    let mut id = Der::new(single.expect(0x30, "CertID")?);
    let mut hash_alg = Der::new(id.expect(0x30, "hashAlgorithm")?);
    let algorithm = match hash_alg.expect(0x06, "hashAlgorithm")? {
        OID_SHA1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        OID_SHA256 => &digest::SHA256,
        _ => return Ok(None),
    };
    let name_hash = id.expect(0x04, "issuerNameHash")?;
    let key_hash = id.expect(0x04, "issuerKeyHash")?;
    let serial = id.expect(0x02, "serialNumber")?;
    let ours = serial == leaf.raw_serial()
        && name_hash == digest::digest(algorithm, leaf.issuer().as_raw()).as_ref()
        && key_hash == digest::digest(algorithm, &issuer_key.subject_public_key.data).as_ref();
    if !ours {
        return Ok(None);
    }
    let status_tag = single.peek().ok_or("certStatus missing")?;
    single.skip()?;
    let this_update = generalized_time(single.expect(0x18, "thisUpdate")?)?;
    let next_update = if single.peek() == Some(0xa0) {
        Some(generalized_time(Der::new(single.expect(0xa0, "nextUpdate")?).expect(0x18, "nextUpdate")?)?)
    } else {
        None
    };
    if this_update > now + SKEW_SECS {
        return Ok(Some(StapleStatus::Unknown("thisUpdate is in the future".into())));
    }
    match status_tag {
        0xa1 => return Ok(Some(StapleStatus::Revoked)),
        0x82 => return Ok(Some(StapleStatus::Unknown("the responder does not know the certificate".into()))),
        0x80 => {}
        other => return Err(format!("certStatus tag {other:#04x}")),
    }
    let until = next_update.unwrap_or(this_update + NO_NEXT_UPDATE_SECS);
    if now > until + SKEW_SECS {
        return Ok(Some(StapleStatus::Unknown(format!("stale: valid until {until}, now {now}"))));
    }
    Ok(Some(StapleStatus::Good))
}

/// Seconds since the epoch of a DER GeneralizedTime (`YYYYMMDDHHMMSS[.f]Z`).
fn generalized_time(value: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(value).map_err(|_| "time is not text")?;
    let bad = || format!("time {text:?}");
    let body = text.strip_suffix('Z').ok_or_else(bad)?;
    let body = body.split('.').next().ok_or_else(bad)?;
    if body.len() != 14 || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| body[r].parse::<u32>().map_err(|_| bad());
    let month = time::Month::try_from(n(4..6)? as u8).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(6..8)? as u8).map_err(|_| bad())?;
    let at = date.with_hms(n(8..10)? as u8, n(10..12)? as u8, n(12..14)? as u8).map_err(|_| bad())?;
    Ok(at.assume_utc().unix_timestamp())
}

/// A reader of DER TLVs (definite lengths only, as DER requires).
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der(bytes)
    }

    /// A reader of the contents of the SEQUENCE `bytes` holds, with nothing after it.
    fn sequence_of(bytes: &'a [u8]) -> Result<Self, String> {
        let mut d = Der(bytes);
        let inner = d.expect(0x30, "SEQUENCE")?;
        if !d.is_empty() {
            return Err("bytes after the response".into());
        }
        Ok(Der(inner))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element: (tag, contents, whole encoding).
    fn next(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), String> {
        let input = self.0;
        let (&tag, rest) = input.split_first().ok_or("truncated")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte tag".into());
        }
        let (&first, rest) = rest.split_first().ok_or("truncated")?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                if rest.len() < n {
                    return Err("truncated".into());
                }
                let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
                (len, &rest[n..])
            }
            _ => return Err("indefinite or oversized length".into()),
        };
        if rest.len() < len {
            return Err("truncated".into());
        }
        let header = input.len() - rest.len();
        self.0 = &rest[len..];
        Ok((tag, &rest[..len], &input[..header + len]))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        self.expect_whole(tag, what).map(|(v, _)| v)
    }

    fn expect_whole(&mut self, tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
        match self.next() {
            Ok((t, value, whole)) if t == tag => Ok((value, whole)),
            Ok((t, ..)) => Err(format!("{what}: tag {t:#04x}, expected {tag:#04x}")),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }

    fn skip(&mut self) -> Result<(), String> {
        self.next().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_refuses_what_der_forbids() {
        assert!(Der::new(&[0x30, 0x80, 0, 0]).next().is_err(), "indefinite length");
        assert!(Der::new(&[0x30, 0x05, 1]).next().is_err(), "truncated");
        assert!(Der::new(&[0x1f, 0x01, 0]).next().is_err(), "multi-byte tag");
        assert!(Der::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).next().is_err(), "5-byte length");
        let (tag, value, whole) = Der::new(&[0x04, 0x81, 0x01, 0xaa, 0xff]).next().unwrap();
        assert_eq!((tag, value, whole), (0x04, &[0xaa][..], &[0x04, 0x81, 0x01, 0xaa][..]));
    }

    #[test]
    fn generalized_times() {
        assert_eq!(generalized_time(b"20261206120000Z").unwrap(), 1_796_558_400);
        assert_eq!(generalized_time(b"20261206120000.5Z").unwrap(), 1_796_558_400);
        for bad in [&b"20261206120000"[..], b"2026120612000Z", b"20261306120000Z", b"2026120612000aZ"] {
            assert!(generalized_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_unknown_never_good() {
        for staple in [&[][..], &[0x30, 0x03, 0x0a, 0x01, 0x00], &[0x30, 0x03, 0x0a, 0x01, 0x06], &[0xff; 40]]
        {
            assert!(matches!(check_unknown(staple), StapleStatus::Unknown(_)), "{staple:?}");
        }
    }

    fn check_unknown(staple: &[u8]) -> StapleStatus {
        // Any certificate will do: the response is refused before it is used.
        let der = rcgen::generate_simple_self_signed(vec!["ocsp.test".into()]).unwrap().cert.der().clone();
        let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
        staple_status(staple, der.as_ref(), cert.public_key().raw, 0)
    }
}
