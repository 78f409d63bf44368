//! Licenses: issuing, parsing, verification (signature, device, dates), refusals.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tlsgate_certstore::{
    parse_license, pkcs8_pem, Error, License, LicenseError, LicensePayload, LicenseState, SignedLicense,
    VendorKey, VendorSigner, FEATURE_STRONG_CRYPTO,
};

const DEVICE: &str = "4f1c9a2e";
/// 2026-01-01T00:00:00Z.
const NOT_BEFORE: i64 = 1_767_225_600;
/// 2027-01-01T00:00:00Z.
const NOT_AFTER: i64 = 1_798_761_600;
const MID: i64 = NOT_BEFORE + 86_400;

fn payload() -> LicensePayload {
    LicensePayload {
        serial: "TG-0001".into(),
        device_id: DEVICE.into(),
        features: vec![FEATURE_STRONG_CRYPTO.into()],
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2027-01-01T00:00:00Z".into(),
    }
}

fn signer() -> VendorSigner {
    VendorSigner::generate().expect("generate").0
}

/// A license file from raw parts, signed or not.
fn file_of(payload: &[u8], sig: &[u8]) -> String {
    format!("{{\"payload\":\"{}\",\"sig\":\"{}\"}}", STANDARD.encode(payload), STANDARD.encode(sig))
}

/// The (payload bytes, signature bytes) of an issued license file.
fn parts_of(file: &str) -> (Vec<u8>, Vec<u8>) {
    let v: serde_json::Value = serde_json::from_str(file).expect("license JSON");
    let payload = STANDARD.decode(v["payload"].as_str().expect("payload")).expect("payload base64");
    let sig = STANDARD.decode(v["sig"].as_str().expect("sig")).expect("sig base64");
    (payload, sig)
}

fn malformed(text: &[u8]) -> String {
    match parse_license(text).map_err(lic) {
        Err(LicenseError::Malformed(m)) => m,
        Err(e) => panic!("expected Malformed for {:?}, got {e:?}", String::from_utf8_lossy(text)),
        Ok(_) => panic!("expected Malformed for {:?}, got a license", String::from_utf8_lossy(text)),
    }
}

/// A payload JSON object, unsigned, as a license file.
fn file_with_payload_json(json: &str) -> String {
    file_of(json.as_bytes(), &[0u8; 64])
}

fn verify(file: &str, key: &VendorKey, device: &str, now: i64) -> Result<License, LicenseError> {
    parse_license(file.as_bytes()).map_err(lic)?.verify(key, device, now).map_err(lic)
}

/// The license refusal an error carries; any other error fails the test.
fn lic(e: Error) -> LicenseError {
    match e.license() {
        Some(l) => l.clone(),
        None => panic!("expected a license error, got {e:?}"),
    }
}

#[test]
fn round_trip_issue_parse_verify() {
    let (signer, _der) = VendorSigner::generate().unwrap();
    let file = signer.issue(&payload()).unwrap();
    assert!(file.ends_with('\n'));
    assert_eq!(file.trim_end().lines().count(), 1, "one line: {file:?}");

    let signed: SignedLicense = parse_license(file.as_bytes()).unwrap();
    assert_eq!(signed.payload(), &payload());

    let key = VendorKey::from_base64(&signer.public_key().to_base64()).unwrap();
    assert_eq!(key, signer.public_key());
    let license = signed.verify(&key, DEVICE, MID).unwrap();
    assert_eq!(license.payload, payload());
    assert_eq!(license.not_before, NOT_BEFORE);
    assert_eq!(license.not_after, NOT_AFTER);
    assert_eq!(license.text, file.trim());
    assert!(license.has_feature(FEATURE_STRONG_CRYPTO));
    assert!(!license.has_feature("something-else"));
    assert!(license.is_valid_at(MID));
    assert_eq!(license.state_at(MID), LicenseState::Valid);

    // The stored text loads again to the same license.
    assert_eq!(verify(&license.text, &key, DEVICE, MID).unwrap(), license);
}

#[test]
fn no_features_and_time_offsets() {
    let signer = signer();
    let p = LicensePayload {
        features: vec![],
        not_before: "2026-01-01T01:00:00+01:00".into(),
        not_after: "2026-12-31T23:59:59.5-00:00".into(),
        ..payload()
    };
    let license = verify(&signer.issue(&p).unwrap(), &signer.public_key(), DEVICE, MID).unwrap();
    assert_eq!(license.not_before, NOT_BEFORE);
    assert_eq!(license.not_after, NOT_AFTER - 1);
    assert!(!license.has_feature(FEATURE_STRONG_CRYPTO));
}

#[test]
fn surrounding_whitespace_is_accepted_and_trimmed() {
    let signer = signer();
    let file = signer.issue(&payload()).unwrap();
    let padded = format!("\n\t  {}  \r\n\n", file.trim());
    let license = verify(&padded, &signer.public_key(), DEVICE, MID).unwrap();
    assert_eq!(license.text, file.trim());
}

#[test]
fn signed_by_another_key_is_refused() {
    let vendor = signer();
    let forger = signer();
    let forged = forger.issue(&payload()).unwrap();
    let err = verify(&forged, &vendor.public_key(), DEVICE, MID).unwrap_err();
    assert_eq!(err, LicenseError::BadSignature);
    assert_eq!(err.to_string(), "license signature does not verify with the vendor key (forged or altered)");
}

#[test]
fn altered_payload_byte_is_refused() {
    let signer = signer();
    let (payload, sig) = parts_of(&signer.issue(&payload()).unwrap());
    let text = String::from_utf8(payload.clone()).unwrap();

    // The classic: move the license to another device, keep the signature.
    let moved = text.replace(DEVICE, "4f1c9a2f");
    assert_ne!(moved, text);
    let file = file_of(moved.as_bytes(), &sig);
    assert_eq!(parse_license(file.as_bytes()).unwrap().payload().device_id, "4f1c9a2f");
    assert_eq!(verify(&file, &signer.public_key(), "4f1c9a2f", MID).unwrap_err(), LicenseError::BadSignature);

    // One byte of the serial, and a later expiry.
    for (from, to) in [("TG-0001", "TG-0002"), ("2027-01-01", "2037-01-01")] {
        let altered = text.replace(from, to);
        assert_ne!(altered, text);
        let file = file_of(altered.as_bytes(), &sig);
        assert_eq!(verify(&file, &signer.public_key(), DEVICE, MID).unwrap_err(), LicenseError::BadSignature);
    }

    // The same JSON with other whitespace: the signature is over the exact bytes.
    let spaced = format!(" {text} ");
    let file = file_of(spaced.as_bytes(), &sig);
    assert_eq!(parse_license(file.as_bytes()).unwrap().payload(), &self::payload());
    assert_eq!(verify(&file, &signer.public_key(), DEVICE, MID).unwrap_err(), LicenseError::BadSignature);
}

#[test]
fn altered_signature_is_refused() {
    let signer = signer();
    let (payload, sig) = parts_of(&signer.issue(&payload()).unwrap());
    for i in [0, 17, 31, 32, 63] {
        let mut bad = sig.clone();
        bad[i] ^= 0x01;
        let file = file_of(&payload, &bad);
        assert_eq!(verify(&file, &signer.public_key(), DEVICE, MID).unwrap_err(), LicenseError::BadSignature);
    }
    let file = file_of(&payload, &[0u8; 64]);
    assert_eq!(verify(&file, &signer.public_key(), DEVICE, MID).unwrap_err(), LicenseError::BadSignature);
}

#[test]
fn wrong_device_is_refused() {
    let signer = signer();
    let p = LicensePayload { device_id: "abc".into(), ..payload() };
    let signed = parse_license(signer.issue(&p).unwrap().as_bytes()).unwrap();
    let err = lic(signed.verify(&signer.public_key(), "def", MID).unwrap_err());
    assert_eq!(
        err,
        LicenseError::WrongDevice { serial: "TG-0001".into(), licensed: "abc".into(), this: "def".into() }
    );
    assert_eq!(err.to_string(), "license TG-0001 is for device abc, this appliance is def");
    assert!(matches!(
        signed.verify_signature_and_device(&signer.public_key(), "def").map_err(lic),
        Err(LicenseError::WrongDevice { .. })
    ));
}

#[test]
fn expired_is_refused_but_still_verifiable() {
    let signer = signer();
    let p = LicensePayload {
        not_before: "2025-01-01T00:00:00Z".into(),
        not_after: "2026-01-01T00:00:00Z".into(),
        ..payload()
    };
    let signed = parse_license(signer.issue(&p).unwrap().as_bytes()).unwrap();
    for now in [NOT_BEFORE, NOT_BEFORE + 1, NOT_AFTER] {
        let err = lic(signed.verify(&signer.public_key(), DEVICE, now).unwrap_err());
        assert_eq!(
            err,
            LicenseError::Expired { serial: "TG-0001".into(), not_after: "2026-01-01T00:00:00Z".into() }
        );
        assert_eq!(err.to_string(), "license TG-0001 expired at 2026-01-01T00:00:00Z");
    }
    let stored = signed.verify_signature_and_device(&signer.public_key(), DEVICE).unwrap();
    assert_eq!(stored.state_at(NOT_BEFORE), LicenseState::Expired);
    assert!(!stored.is_valid_at(NOT_BEFORE));
    assert!(stored.is_valid_at(NOT_BEFORE - 1));
}

#[test]
fn not_yet_valid_is_refused() {
    let signer = signer();
    let signed = parse_license(signer.issue(&payload()).unwrap().as_bytes()).unwrap();
    let err = lic(signed.verify(&signer.public_key(), DEVICE, NOT_BEFORE - 1).unwrap_err());
    assert_eq!(
        err,
        LicenseError::NotYetValid { serial: "TG-0001".into(), not_before: "2026-01-01T00:00:00Z".into() }
    );
    assert_eq!(err.to_string(), "license TG-0001 is not valid before 2026-01-01T00:00:00Z");
    assert!(signed.verify(&signer.public_key(), DEVICE, NOT_BEFORE).is_ok());
    assert!(signed.verify_signature_and_device(&signer.public_key(), DEVICE).is_ok());
}

#[test]
fn verification_order_is_signature_device_dates() {
    let vendor = signer();
    let forger = signer();
    let p = LicensePayload { device_id: "other".into(), ..payload() };
    // Forged, for another device, expired: the signature is what is reported.
    let forged = forger.issue(&p).unwrap();
    assert_eq!(
        verify(&forged, &vendor.public_key(), DEVICE, NOT_AFTER + 1).unwrap_err(),
        LicenseError::BadSignature
    );
    // Genuine, for another device, expired: the device.
    let genuine = vendor.issue(&p).unwrap();
    assert!(matches!(
        verify(&genuine, &vendor.public_key(), DEVICE, NOT_AFTER + 1),
        Err(LicenseError::WrongDevice { .. })
    ));
    // Genuine, this device, expired: the dates.
    assert!(matches!(
        verify(&genuine, &vendor.public_key(), "other", NOT_AFTER + 1),
        Err(LicenseError::Expired { .. })
    ));
}

#[test]
fn state_at_boundaries() {
    let signer = signer();
    let license = verify(&signer.issue(&payload()).unwrap(), &signer.public_key(), DEVICE, MID).unwrap();
    let cases = [
        (i64::MIN, LicenseState::NotYetValid),
        (NOT_BEFORE - 1, LicenseState::NotYetValid),
        (NOT_BEFORE, LicenseState::Valid),
        (NOT_AFTER - 1, LicenseState::Valid),
        (NOT_AFTER, LicenseState::Expired),
        (i64::MAX, LicenseState::Expired),
    ];
    for (now, state) in cases {
        assert_eq!(license.state_at(now), state, "at {now}");
        assert_eq!(license.is_valid_at(now), state == LicenseState::Valid, "at {now}");
    }
    assert_eq!(LicenseState::Valid.as_str(), "valid");
    assert_eq!(LicenseState::NotYetValid.as_str(), "not-yet-valid");
    assert_eq!(LicenseState::Expired.as_str(), "expired");
    assert_eq!(LicenseState::Expired.to_string(), "expired");
}

#[test]
fn malformed_file_structure() {
    let good_payload = serde_json::to_vec(&payload()).unwrap();
    let b64 = STANDARD.encode(&good_payload);
    let sig = STANDARD.encode([0u8; 64]);

    let cases: Vec<(String, &str)> = vec![
        ("".into(), "license file is not JSON"),
        ("hello".into(), "license file is not JSON"),
        ("{\"payload\":".into(), "license file is not JSON"),
        (format!("{{\"payload\":\"{b64}\",\"sig\":\"{sig}\"}} trailing"), "license file is not JSON"),
        ("[1,2]".into(), "license file is not a JSON object"),
        (format!("[\"{b64}\",\"{sig}\"]"), "license file is not a JSON object"),
        ("\"text\"".into(), "license file is not a JSON object"),
        (format!("{{\"payload\":\"{b64}\"}}"), "missing field `sig`"),
        (format!("{{\"sig\":\"{sig}\"}}"), "missing field `payload`"),
        (format!("{{\"payload\":\"{b64}\",\"sig\":\"{sig}\",\"extra\":1}}"), "unknown field `extra`"),
        (format!("{{\"payload\":\"{b64}\",\"sig\":\"{sig}\",\"sig\":\"{sig}\"}}"), "duplicate field `sig`"),
        (format!("{{\"payload\":5,\"sig\":\"{sig}\"}}"), "expected \"payload\" as a base64 string"),
        (format!("{{\"payload\":\"{b64}\",\"sig\":null}}"), "expected \"sig\" as a base64 string"),
        (format!("{{\"payload\":\"!!{b64}\",\"sig\":\"{sig}\"}}"), "\"payload\" is not base64"),
        (
            format!("{{\"payload\":\"{}\",\"sig\":\"{sig}\"}}", b64.trim_end_matches('=')),
            "\"payload\" is not base64",
        ),
        (format!("{{\"payload\":\"{b64}\",\"sig\":\"not base64\"}}"), "\"sig\" is not base64"),
        (
            format!("{{\"payload\":\"{b64}\",\"sig\":\"{}\"}}", STANDARD.encode([0u8; 63])),
            "\"sig\" is 63 bytes, an Ed25519 signature is 64",
        ),
    ];
    for (text, expect) in cases {
        let m = malformed(text.as_bytes());
        assert!(m.contains(expect), "{text:?}: {m:?} should name {expect:?}");
    }
    let m = malformed(&[0xff, 0xfe, b'{']);
    assert!(m.contains("not JSON") && m.contains("UTF-8"), "{m}");

    let big = format!("{{\"payload\":\"{}\",\"sig\":\"{sig}\"}}", "A".repeat(70_000));
    let m = malformed(big.as_bytes());
    assert!(m.contains("at most 65536"), "{m}");

    let err = parse_license(b"hello").err().unwrap();
    assert!(err.to_string().starts_with("malformed license file: license file is not JSON"), "{err}");
}

#[test]
fn malformed_payload() {
    let ok = r#""not_before":"2026-01-01T00:00:00Z","not_after":"2027-01-01T00:00:00Z""#;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "payload is not JSON"),
        ("".into(), "payload is not JSON"),
        ("[]".into(), "payload is not a JSON object"),
        (r#"["TG-1","d",[],"2026-01-01T00:00:00Z","2027-01-01T00:00:00Z"]"#.into(), "payload is not a JSON object"),
        (" [".into(), "payload is not JSON"),
        (
            format!(r#"{{"serial":"TG-1","device_id":"d","features":[],{ok},"extra":true}}"#),
            "unknown field `extra`",
        ),
        (format!(r#"{{"serial":"TG-1","features":[],{ok}}}"#), "missing field `device_id`"),
        (r#"{"serial":"TG-1","device_id":"d","features":[]}"#.into(), "missing field `not_before`"),
        (format!(r#"{{"serial":"TG-1","device_id":"d",{ok}}}"#), "missing field `features`"),
        (
            format!(r#"{{"serial":"TG-1","serial":"TG-2","device_id":"d","features":[],{ok}}}"#),
            "duplicate field `serial`",
        ),
        (format!(r#"{{"serial":1,"device_id":"d","features":[],{ok}}}"#), "expected serial as a string"),
        (format!(r#"{{"serial":"TG-1","device_id":null,"features":[],{ok}}}"#), "expected device_id as a string"),
        (format!(r#"{{"serial":"TG-1","device_id":"d","features":"x",{ok}}}"#), "features as a list of strings"),
        (format!(r#"{{"serial":"TG-1","device_id":"d","features":[1],{ok}}}"#), "each of features as a string"),
        (format!(r#"{{"serial":"","device_id":"d","features":[],{ok}}}"#), "serial: empty"),
        (
            format!(r#"{{"serial":"{}","device_id":"d","features":[],{ok}}}"#, "S".repeat(65)),
            "serial: 65 characters, at most 64",
        ),
        (format!(r#"{{"serial":"TG\n1","device_id":"d","features":[],{ok}}}"#), "serial: contains control characters"),
        (format!(r#"{{"serial":"TG-1","device_id":"","features":[],{ok}}}"#), "device_id: empty"),
        (
            r#"{"serial":"TG-1","device_id":"d","features":[],"not_before":"2026-01-01T00:00:00Z","not_after":"2027-13-01T00:00:00Z"}"#.into(),
            "not_after: not an RFC 3339 time",
        ),
        (
            r#"{"serial":"TG-1","device_id":"d","features":[],"not_before":"2026-01-01","not_after":"2027-01-01T00:00:00Z"}"#.into(),
            "not_before: not an RFC 3339 time",
        ),
        (
            r#"{"serial":"TG-1","device_id":"d","features":[],"not_before":5,"not_after":"2027-01-01T00:00:00Z"}"#.into(),
            "expected not_before as an RFC 3339 time string",
        ),
        (
            r#"{"serial":"TG-1","device_id":"d","features":[],"not_before":"2027-01-01T00:00:00Z","not_after":"2027-01-01T00:00:00Z"}"#.into(),
            "not_before is not before not_after",
        ),
        (
            r#"{"serial":"TG-1","device_id":"d","features":[],"not_before":"2027-01-01T00:00:00Z","not_after":"2026-01-01T00:00:00Z"}"#.into(),
            "not_before is not before not_after",
        ),
    ];
    for (json, expect) in cases {
        let m = malformed(file_with_payload_json(&json).as_bytes());
        assert!(m.contains(expect), "{json:?}: {m:?} should name {expect:?}");
    }
    // Not UTF-8 inside the payload.
    let m = malformed(file_of(b"{\"serial\":\"\xff\"}", &[0u8; 64]).as_bytes());
    assert!(m.contains("payload is not JSON"), "{m}");
}

#[test]
fn issue_refuses_what_parse_would_refuse() {
    let signer = signer();
    let bad = [
        (LicensePayload { serial: String::new(), ..payload() }, "serial: empty"),
        (LicensePayload { device_id: String::new(), ..payload() }, "device_id: empty"),
        (LicensePayload { not_after: "tomorrow".into(), ..payload() }, "not_after: not an RFC 3339 time"),
        (
            LicensePayload { not_after: payload().not_before, ..payload() },
            "not_before is not before not_after",
        ),
    ];
    for (p, expect) in bad {
        match signer.issue(&p).map_err(lic) {
            Err(LicenseError::Malformed(m)) => assert!(m.contains(expect), "{m:?} should name {expect:?}"),
            other => panic!("expected Malformed for {p:?}, got {other:?}"),
        }
    }
}

#[test]
fn vendor_key_from_base64() {
    let key = signer().public_key();
    let text = key.to_base64();
    assert_eq!(text.len(), 44);
    assert_eq!(VendorKey::from_base64(&text).unwrap(), key);
    assert_eq!(VendorKey::from_base64(&format!("  {text}\n")).unwrap(), key);

    for len in [0usize, 1, 31, 33, 44, 64] {
        match VendorKey::from_base64(&STANDARD.encode(vec![7u8; len])).map_err(lic) {
            Err(LicenseError::BadVendorKey(m)) => {
                assert!(m.contains(&format!("is {len} bytes")) && m.contains("32"), "{len}: {m}")
            }
            other => panic!("{len} bytes: expected BadVendorKey, got {other:?}"),
        }
    }
    match VendorKey::from_base64("not base64!").map_err(lic) {
        Err(e @ LicenseError::BadVendorKey(_)) => {
            assert!(
                e.to_string().starts_with("unusable vendor key: the vendor public key is not base64"),
                "{e}"
            )
        }
        other => panic!("expected BadVendorKey, got {other:?}"),
    }
}

#[test]
fn signer_from_key_file_pem_der_base64() {
    let (signer, der) = VendorSigner::generate().unwrap();
    let public = signer.public_key();
    let pem = pkcs8_pem(&der);
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(pem.trim_end().ends_with("-----END PRIVATE KEY-----"), "{pem}");

    let b64 = format!("{}\n", STANDARD.encode(&der));
    let wrapped: String = STANDARD
        .encode(&der)
        .as_bytes()
        .chunks(20)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    for (what, bytes) in [
        ("PEM", pem.as_bytes().to_vec()),
        ("PEM with text around", format!("my key\n{pem}\n").into_bytes()),
        ("DER", der.clone()),
        ("base64", b64.into_bytes()),
        ("wrapped base64", wrapped.into_bytes()),
    ] {
        let s = VendorSigner::from_key_file(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(s.public_key(), public, "{what}");
    }
    assert_eq!(VendorSigner::from_pkcs8(&der).unwrap().public_key(), public);

    // A key read back signs licenses the original public key accepts.
    let reread = VendorSigner::from_key_file(pem.as_bytes()).unwrap();
    assert!(verify(&reread.issue(&payload()).unwrap(), &public, DEVICE, MID).is_ok());

    // Keys written to a file and read back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor.pem");
    std::fs::write(&path, &pem).unwrap();
    let from_file = VendorSigner::from_key_file(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(from_file.public_key(), public);
}

#[test]
fn signer_refuses_unusable_keys() {
    let (_, der) = VendorSigner::generate().unwrap();
    let cert_pem = pkcs8_pem(&der).replace("PRIVATE KEY", "CERTIFICATE");
    let encrypted = pkcs8_pem(&der).replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
    let mut truncated = der.clone();
    truncated.truncate(der.len() - 3);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "neither a PEM"),
        ("garbage", b"hello world".to_vec(), "neither a PEM"),
        ("certificate PEM", cert_pem.into_bytes(), "no \"PRIVATE KEY\""),
        ("encrypted PEM", encrypted.into_bytes(), "decrypt it first"),
        ("truncated DER", truncated, "not an unencrypted PKCS#8 Ed25519 private key"),
        ("base64 of junk", STANDARD.encode([1u8, 2, 3]).into_bytes(), "not an unencrypted PKCS#8 Ed25519"),
    ];
    for (what, bytes, expect) in cases {
        match VendorSigner::from_key_file(&bytes).map_err(lic) {
            Err(LicenseError::BadVendorKey(m)) => {
                assert!(m.contains(expect), "{what}: {m:?} should say {expect:?}")
            }
            other => panic!("{what}: expected BadVendorKey, got {:?}", other.map(|s| s.public_key())),
        }
    }
    assert!(matches!(VendorSigner::from_pkcs8(b"\x30\x00").map_err(lic), Err(LicenseError::BadVendorKey(_))));
}

#[test]
fn signer_debug_shows_no_secret() {
    let (signer, der) = VendorSigner::generate().unwrap();
    let debug = format!("{signer:?}");
    assert!(debug.contains(&signer.public_key().to_base64()), "{debug}");
    assert!(!debug.contains(&STANDARD.encode(&der)), "{debug}");
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random change to `bytes`.
fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>) {
    const INTERESTING: &[u8] = b"{}[]\":,\\ \n0-9eE+=/AZaz\x00\xff\xc3";
    match rng.below(6) {
        0 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(bytes.len() + 1);
            bytes.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
        }
        2 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            bytes.remove(i);
        }
        3 => {
            let i = rng.below(bytes.len() + 1);
            bytes.truncate(i);
        }
        4 if !bytes.is_empty() => {
            let i = rng.below(bytes.len());
            bytes[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        _ if !bytes.is_empty() => {
            // Duplicate a slice (repeated fields, nesting).
            let a = rng.below(bytes.len());
            let b = (a + rng.below(32)).min(bytes.len());
            let piece = bytes[a..b].to_vec();
            let at = rng.below(bytes.len() + 1);
            bytes.splice(at..at, piece);
        }
        _ => bytes.push(b'{'),
    }
}

#[test]
fn parse_never_panics_on_mutations() {
    let signer = signer();
    let key = signer.public_key();
    let file = signer.issue(&payload()).unwrap();
    let (payload_bytes, sig) = parts_of(&file);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;

    for round in 0..4000 {
        let mut outer = file.clone().into_bytes();
        let mut inner = payload_bytes.clone();
        let candidate = if round % 2 == 0 {
            // Mutate the file text itself.
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut outer);
            }
            outer
        } else {
            // Mutate the payload JSON, keep the structure valid so the payload parser is reached.
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut inner);
            }
            file_of(&inner, &sig).into_bytes()
        };
        if let Ok(signed) = parse_license(&candidate) {
            let _ = signed.payload();
            for now in [0, MID, i64::MAX] {
                if let Ok(license) = signed.verify(&key, DEVICE, now) {
                    // What verifies says what the vendor signed.
                    assert_eq!(license.payload, payload(), "{:?}", String::from_utf8_lossy(&candidate));
                    accepted += 1;
                }
            }
            let _ = signed.verify_signature_and_device(&key, "other");
        }
    }
    // Whitespace-only changes to the file text still verify; most changes do not.
    assert!(accepted < 4000, "{accepted}");
}

#[test]
fn license_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<VendorKey>();
    send_sync::<VendorSigner>();
    send_sync::<SignedLicense>();
    send_sync::<License>();
    send_sync::<LicenseError>();
    send_sync::<Error>();
}
