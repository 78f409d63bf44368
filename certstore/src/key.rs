//! Private keys for the decryption CA: PEM or DER in, PKCS#8 out.
//!
//! The certificate generator (rcgen over ring) signs only with PKCS#8 keys. PKCS#1
//! (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`) keys are converted here by
//! wrapping them in a PKCS#8 envelope; an encrypted key, or one that cannot be
//! converted, is refused with an error that names the `openssl pkcs8` command.

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::cert::{looks_like_pem, pem_labels};
use crate::error::{Error, Result};

/// DER of OID 1.2.840.113549.1.1.1 (rsaEncryption).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER of OID 1.2.840.10045.2.1 (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// Reads the first private key of `input` (PEM or DER) as PKCS#8.
pub(crate) fn parse_private_key(input: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>> {
    if !looks_like_pem(input) {
        if input.first() == Some(&0x30) {
            // DER: PKCS#8, or a bare PKCS#1 / SEC1 structure.
            return Ok(match classify_der_key(input) {
                DerKey::Pkcs8 => PrivatePkcs8KeyDer::from(input.to_vec()),
                DerKey::Pkcs1 => wrap_pkcs1(input),
                DerKey::Sec1 => wrap_sec1(input)?,
                DerKey::Unknown => {
                    return Err(Error::UnsupportedKey {
                        detail: "DER input is not a known private key".into(),
                    })
                }
            });
        }
        return Err(Error::NoPrivateKey);
    }
    let labels = pem_labels(input);
    let text = String::from_utf8_lossy(input);
    if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::EncryptedKey);
    }
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(input) {
        let (kind, der) = item.map_err(|e| Error::UnsupportedKey { detail: format!("bad PEM: {e}") })?;
        match kind {
            SectionKind::PrivateKey => return Ok(PrivatePkcs8KeyDer::from(der)),
            SectionKind::RsaPrivateKey => return Ok(wrap_pkcs1(&der)),
            SectionKind::EcPrivateKey => return wrap_sec1(&der),
            _ => {}
        }
    }
    if labels.is_empty() {
        Err(Error::NoPrivateKey)
    } else {
        Err(Error::UnsupportedKey {
            detail: format!("found PEM blocks {labels:?} but no \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\""),
        })
    }
}

enum DerKey {
    Pkcs8,
    Pkcs1,
    Sec1,
    Unknown,
}

/// Tells PKCS#8 (version 0, then an AlgorithmIdentifier SEQUENCE), PKCS#1 (version
/// 0, then the modulus INTEGER) and SEC1 (version 1, then an OCTET STRING) apart.
fn classify_der_key(der: &[u8]) -> DerKey {
    let Some((0x30, body, _)) = read_tlv(der) else { return DerKey::Unknown };
    let Some((0x02, version, rest)) = read_tlv(body) else { return DerKey::Unknown };
    match (version, read_tlv(rest)) {
        ([0], Some((0x30, _, _))) => DerKey::Pkcs8,
        ([0], Some((0x02, _, _))) => DerKey::Pkcs1,
        ([1], Some((0x04, _, _))) => DerKey::Sec1,
        _ => DerKey::Unknown,
    }
}

/// PKCS#1 RSAPrivateKey → PKCS#8 PrivateKeyInfo.
fn wrap_pkcs1(pkcs1: &[u8]) -> PrivatePkcs8KeyDer<'static> {
    let mut alg = tlv(0x06, OID_RSA_ENCRYPTION);
    alg.extend_from_slice(&[0x05, 0x00]);
    pkcs8(&tlv(0x30, &alg), pkcs1)
}

/// SEC1 ECPrivateKey → PKCS#8 PrivateKeyInfo; the curve comes from the key's own
/// `[0] parameters`, without which the key cannot be converted.
fn wrap_sec1(sec1: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>> {
    let refuse = |why: &str| Error::UnsupportedKey { detail: format!("EC PRIVATE KEY {why}") };
    let (_, body, _) = read_tlv(sec1).filter(|t| t.0 == 0x30).ok_or_else(|| refuse("is not DER"))?;
    let mut rest = body;
    let mut curve = None;
    while let Some((tag, content, after)) = read_tlv(rest) {
        if tag == 0xa0 {
            curve = read_tlv(content).filter(|t| t.0 == 0x06).map(|t| t.1.to_vec());
        }
        rest = after;
    }
    let curve = curve.ok_or_else(|| refuse("does not name its curve"))?;
    let mut alg = tlv(0x06, OID_EC_PUBLIC_KEY);
    alg.extend_from_slice(&tlv(0x06, &curve));
    Ok(pkcs8(&tlv(0x30, &alg), sec1))
}

fn pkcs8(alg_id: &[u8], private_key: &[u8]) -> PrivatePkcs8KeyDer<'static> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(alg_id);
    body.extend_from_slice(&tlv(0x04, private_key));
    PrivatePkcs8KeyDer::from(tlv(0x30, &body))
}

/// DER tag-length-value with a single-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one DER TLV with a single-byte tag: (tag, content, rest).
pub(crate) fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trip_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let enc = tlv(0x04, &content);
            let (tag, got, rest) = read_tlv(&enc).unwrap();
            assert_eq!((tag, got.len(), rest.len()), (0x04, len, 0));
        }
    }

    #[test]
    fn encrypted_and_missing_keys_are_refused_with_the_hint() {
        let enc = crate::cert::pem_encode("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]);
        let err = parse_private_key(enc.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::EncryptedKey));
        assert!(err.to_string().contains(crate::error::PKCS8_HINT));
        assert!(matches!(parse_private_key(b"nothing"), Err(Error::NoPrivateKey)));
        let cert_only = crate::cert::pem_encode("CERTIFICATE", &[0x30, 0x00]);
        let err = parse_private_key(cert_only.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8 -nocrypt"), "{err}");
    }
}
