//! Licenses: the vendor signs, the appliance verifies.
//!
//! A license file is one JSON object (surrounding whitespace accepted, other
//! top-level fields refused, at most 64 KiB):
//!
//! ```text
//! {"payload": "<base64 of the payload JSON bytes>",
//!  "sig":     "<base64 of the Ed25519 signature over exactly those bytes>"}
//! ```
//!
//! Both values are standard base64 with padding. The payload, once decoded, is a
//! JSON object with exactly these fields (others refused):
//!
//! ```text
//! {"serial": "TG-0001", "device_id": "4f1c...", "features": ["strong-crypto"],
//!  "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}
//! ```
//!
//! - `serial`: 1 to 64 characters;
//! - `device_id`: not empty, the identifier of the one appliance the license is for;
//! - `features`: a list of strings, possibly empty ([`FEATURE_STRONG_CRYPTO`], ...);
//! - `not_before`, `not_after`: RFC 3339 times, `not_before` strictly before
//!   `not_after`; the license is valid in `[not_before, not_after)`.
//!
//! No string may hold control characters. The vendor public key
//! ([`VendorKey`]) is the raw 32-byte Ed25519 public key, written as base64 in
//! the configuration.
//!
//! Loading is in two steps: [`parse_license`] checks the structure, the base64,
//! the payload JSON and its fields, and gives a [`SignedLicense`]; then
//! [`SignedLicense::verify`] checks, in this order, the signature over the exact
//! decoded payload bytes, the device, and the dates, and gives a [`License`].
//! [`SignedLicense::verify_signature_and_device`] skips the dates, for a stored
//! license that is shown (and reported as expired) after it expired.
//!
//! [`VendorSigner`] is the vendor side (the key generator and the issuing tool;
//! tests make their own keys).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cert::{looks_like_pem, pem_encode, pem_labels};

/// The feature that enables the strong cipher profile.
pub const FEATURE_STRONG_CRYPTO: &str = "strong-crypto";

/// The largest license file accepted, in bytes.
const MAX_LICENSE_BYTES: usize = 64 * 1024;
/// The longest serial accepted, in characters.
const MAX_SERIAL_CHARS: usize = 64;
/// Length of an Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
const SIGNATURE_LEN: usize = 64;

/// Why a license (or a key for licenses) is refused: the data of
/// [`Error::License`](crate::Error::License).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LicenseError {
    /// Not a license file: the text says exactly what is wrong (not JSON, a
    /// missing field, a value that is not base64, a payload field, the dates ...).
    Malformed(String),

    /// The signature does not verify with the vendor key (forged or altered).
    BadSignature,

    /// The license is for another device.
    WrongDevice {
        /// The license's serial.
        serial: String,
        /// The device the license is for.
        licensed: String,
        /// This appliance's device identifier.
        this: String,
    },

    /// The license has expired.
    Expired {
        /// The license's serial.
        serial: String,
        /// The end of validity, RFC 3339 as written in the license.
        not_after: String,
    },

    /// The license is not valid yet.
    NotYetValid {
        /// The license's serial.
        serial: String,
        /// The start of validity, RFC 3339 as written in the license.
        not_before: String,
    },

    /// The configured vendor public key, or a vendor signing key, is unusable.
    BadVendorKey(String),
}

impl fmt::Display for LicenseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LicenseError::Malformed(a) => write!(f, "malformed license file: {a}"),
            LicenseError::BadSignature => {
                write!(f, "license signature does not verify with the vendor key (forged or altered)")
            }
            LicenseError::WrongDevice { serial, licensed, this } => {
                write!(f, "license {serial} is for device {licensed}, this appliance is {this}")
            }
            LicenseError::Expired { serial, not_after } => {
                write!(f, "license {serial} expired at {not_after}")
            }
            LicenseError::NotYetValid { serial, not_before } => {
                write!(f, "license {serial} is not valid before {not_before}")
            }
            LicenseError::BadVendorKey(a) => write!(f, "unusable vendor key: {a}"),
        }
    }
}

fn malformed(text: impl Into<String>) -> LicenseError {
    LicenseError::Malformed(text.into())
}

/// The vendor's public key (configuration): a raw 32-byte Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VendorKey([u8; PUBLIC_KEY_LEN]);

impl VendorKey {
    /// The key from its base64 form (standard alphabet, padded; surrounding
    /// whitespace ignored). Anything but 32 bytes is refused.
    pub fn from_base64(text: &str) -> Result<VendorKey, crate::Error> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| LicenseError::BadVendorKey(format!("the vendor public key is not base64: {e}")))?;
        let bytes: [u8; PUBLIC_KEY_LEN] = raw.as_slice().try_into().map_err(|_| {
            LicenseError::BadVendorKey(format!(
                "the vendor public key is {} bytes, an Ed25519 public key is {PUBLIC_KEY_LEN} (raw, in base64)",
                raw.len()
            ))
        })?;
        Ok(VendorKey(bytes))
    }

    /// The base64 form, as written in the configuration.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

/// The vendor's signing key (the vendor's tool; tests make their own).
pub struct VendorSigner(Ed25519KeyPair);

impl fmt::Debug for VendorSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorSigner").field("public_key", &self.public_key().to_base64()).finish()
    }
}

impl VendorSigner {
    /// A new random signing key, with its PKCS#8 DER to keep (see [`pkcs8_pem`]).
    pub fn generate() -> Result<(VendorSigner, Vec<u8>), crate::Error> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
            LicenseError::BadVendorKey("cannot generate an Ed25519 key (no randomness)".into())
        })?;
        let der = doc.as_ref().to_vec();
        Ok((VendorSigner::from_pkcs8(&der)?, der))
    }

    /// The signing key from an unencrypted PKCS#8 DER Ed25519 private key (v1, as
    /// `openssl genpkey -algorithm ed25519` writes, or v2 with the public key).
    pub fn from_pkcs8(der: &[u8]) -> Result<VendorSigner, crate::Error> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map(VendorSigner).map_err(|e| {
            LicenseError::BadVendorKey(format!(
                "the signing key is not an unencrypted PKCS#8 Ed25519 private key ({e})"
            ))
            .into()
        })
    }

    /// The signing key from a key file: a PEM `PRIVATE KEY` block, PKCS#8 DER, or
    /// the base64 of the PKCS#8 DER.
    pub fn from_key_file(bytes: &[u8]) -> Result<VendorSigner, crate::Error> {
        if looks_like_pem(bytes) {
            for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
                let (kind, der) = item.map_err(|e| {
                    LicenseError::BadVendorKey(format!("the signing key file is bad PEM: {e}"))
                })?;
                if kind == SectionKind::PrivateKey {
                    return VendorSigner::from_pkcs8(&der);
                }
            }
            let labels = pem_labels(bytes);
            let hint = if labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY") {
                "; decrypt it first: `openssl pkcs8 -in key.pem -nocrypt -out key-plain.pem`"
            } else {
                ""
            };
            return Err(LicenseError::BadVendorKey(format!(
                "the signing key file has PEM blocks {labels:?} but no \"PRIVATE KEY\"{hint}"
            ))
            .into());
        }
        if bytes.first() == Some(&0x30) {
            return VendorSigner::from_pkcs8(bytes);
        }
        let text: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        match STANDARD.decode(&text) {
            Ok(der) if !der.is_empty() => VendorSigner::from_pkcs8(&der),
            _ => Err(LicenseError::BadVendorKey(
                "the signing key file is neither a PEM \"PRIVATE KEY\" block, PKCS#8 DER, \
                 nor base64 of PKCS#8 DER"
                    .into(),
            )
            .into()),
        }
    }

    /// The public key that verifies this key's licenses.
    pub fn public_key(&self) -> VendorKey {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(self.0.public_key().as_ref());
        VendorKey(bytes)
    }

    /// A license file for `payload`: the JSON text of the module format, one line
    /// and a newline. The payload is checked as [`parse_license`] checks it.
    pub fn issue(&self, payload: &LicensePayload) -> Result<String, crate::Error> {
        check_payload(payload)?;
        let bytes = serde_json::to_vec(payload).map_err(|e| malformed(format!("payload: {e}")))?;
        let sig = self.0.sign(&bytes);
        let file = LicenseFile { payload: STANDARD.encode(&bytes), sig: STANDARD.encode(sig.as_ref()) };
        let mut text = serde_json::to_string(&file).map_err(|e| malformed(e.to_string()))?;
        text.push('\n');
        Ok(text)
    }
}

/// PEM text (`PRIVATE KEY`) of a PKCS#8 DER key, as [`VendorSigner::generate`]
/// gives it, to write to the vendor's key file.
pub fn pkcs8_pem(der: &[u8]) -> String {
    pem_encode("PRIVATE KEY", der)
}

/// What a license says (the signed payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a license payload object")]
pub struct LicensePayload {
    /// The license's serial number, 1 to 64 characters.
    #[serde(deserialize_with = "de_serial")]
    pub serial: String,
    /// The device the license is for.
    #[serde(deserialize_with = "de_device_id")]
    pub device_id: String,
    /// The licensed features ([`FEATURE_STRONG_CRYPTO`], ...), possibly none.
    #[serde(deserialize_with = "de_features")]
    pub features: Vec<String>,
    /// Start of validity, RFC 3339.
    #[serde(deserialize_with = "de_not_before")]
    pub not_before: String,
    /// End of validity (excluded), RFC 3339.
    #[serde(deserialize_with = "de_not_after")]
    pub not_after: String,
}

/// The license file's outer object.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a license file object {\"payload\": ..., \"sig\": ...}")]
struct LicenseFile {
    #[serde(deserialize_with = "de_payload")]
    payload: String,
    #[serde(deserialize_with = "de_sig")]
    sig: String,
}

/// A string, with the field named in serde's "expected ..." text.
struct Text(&'static str);

impl Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

fn de_payload<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(Text("\"payload\" as a base64 string"))
}

fn de_sig<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(Text("\"sig\" as a base64 string"))
}

fn de_serial<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(Text("serial as a string"))
}

fn de_device_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(Text("device_id as a string"))
}

fn de_not_before<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(Text("not_before as an RFC 3339 time string"))
}

fn de_not_after<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(Text("not_after as an RFC 3339 time string"))
}

/// One feature name (a string), named as such in errors.
struct Feature(String);

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Feature, D::Error> {
        d.deserialize_string(Text("each of features as a string")).map(Feature)
    }
}

struct Features;

impl<'de> Visitor<'de> for Features {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("features as a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(Feature(f)) = seq.next_element()? {
            out.push(f);
        }
        Ok(out)
    }
}

fn de_features<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(Features)
}

/// `T` from `bytes`, which must hold one JSON object (serde would also take an
/// array for a struct).
fn from_json_object<T: serde::de::DeserializeOwned>(
    what: &str,
    expecting: &str,
    bytes: &[u8],
) -> Result<T, LicenseError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(match serde_json::from_slice::<de::IgnoredAny>(bytes) {
            Ok(_) => malformed(format!("{what} is not a JSON object (expected {expecting})")),
            Err(e) => json_error(what, &e),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| json_error(what, &e))
}

/// A serde_json error as a [`LicenseError::Malformed`] about `what`.
fn json_error(what: &str, e: &serde_json::Error) -> LicenseError {
    match e.classify() {
        serde_json::error::Category::Data => malformed(format!("{what}: {e}")),
        _ => malformed(format!("{what} is not JSON: {e}")),
    }
}

fn check_text(field: &str, value: &str) -> Result<(), LicenseError> {
    if value.chars().any(char::is_control) {
        return Err(malformed(format!("{field}: contains control characters ({value:?})")));
    }
    Ok(())
}

fn parse_time(field: &str, value: &str) -> Result<i64, LicenseError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|e| malformed(format!("{field}: not an RFC 3339 time ({value:?}: {e})")))
}

/// The field checks; gives (not_before, not_after) in unix seconds.
fn check_payload(p: &LicensePayload) -> Result<(i64, i64), LicenseError> {
    if p.serial.is_empty() {
        return Err(malformed("serial: empty"));
    }
    let serial_chars = p.serial.chars().count();
    if serial_chars > MAX_SERIAL_CHARS {
        return Err(malformed(format!(
            "serial: {serial_chars} characters, at most {MAX_SERIAL_CHARS} are allowed"
        )));
    }
    check_text("serial", &p.serial)?;
    if p.device_id.is_empty() {
        return Err(malformed("device_id: empty"));
    }
    check_text("device_id", &p.device_id)?;
    for f in &p.features {
        check_text("features", f)?;
    }
    let not_before = parse_time("not_before", &p.not_before)?;
    let not_after = parse_time("not_after", &p.not_after)?;
    if not_before >= not_after {
        return Err(malformed(format!(
            "not_before is not before not_after ({} >= {})",
            p.not_before, p.not_after
        )));
    }
    Ok((not_before, not_after))
}

/// A parsed license file whose signature has not been checked yet: nothing in it
/// is to be trusted before [`SignedLicense::verify`].
#[derive(Clone, Debug)]
pub struct SignedLicense {
    payload: LicensePayload,
    payload_bytes: Vec<u8>,
    sig: [u8; SIGNATURE_LEN],
    not_before: i64,
    not_after: i64,
    text: String,
}

/// Parses a license file: the structure, the base64, the payload JSON and the
/// payload's fields. The signature is not checked here.
pub fn parse_license(text: &[u8]) -> Result<SignedLicense, crate::Error> {
    if text.len() > MAX_LICENSE_BYTES {
        return Err(malformed(format!(
            "license file is {} bytes, at most {MAX_LICENSE_BYTES} are accepted",
            text.len()
        ))
        .into());
    }
    let text = std::str::from_utf8(text)
        .map_err(|e| malformed(format!("license file is not JSON (not UTF-8 text: {e})")))?
        .trim();
    let file: LicenseFile =
        from_json_object("license file", "{\"payload\": ..., \"sig\": ...}", text.as_bytes())?;
    let payload_bytes =
        STANDARD.decode(&file.payload).map_err(|e| malformed(format!("\"payload\" is not base64: {e}")))?;
    let sig_bytes =
        STANDARD.decode(&file.sig).map_err(|e| malformed(format!("\"sig\" is not base64: {e}")))?;
    let sig: [u8; SIGNATURE_LEN] = sig_bytes.as_slice().try_into().map_err(|_| {
        malformed(format!("\"sig\" is {} bytes, an Ed25519 signature is {SIGNATURE_LEN}", sig_bytes.len()))
    })?;
    let payload: LicensePayload = from_json_object(
        "payload",
        "{\"serial\", \"device_id\", \"features\", \"not_before\", \"not_after\"}",
        &payload_bytes,
    )?;
    let (not_before, not_after) = check_payload(&payload)?;
    Ok(SignedLicense { payload, payload_bytes, sig, not_before, not_after, text: text.to_owned() })
}

impl SignedLicense {
    /// What the license says (not yet verified).
    pub fn payload(&self) -> &LicensePayload {
        &self.payload
    }

    /// Signature, device and dates, in this order: everything the appliance checks
    /// before it accepts a license. `now_unix` is the time in unix seconds.
    pub fn verify(&self, key: &VendorKey, device_id: &str, now_unix: i64) -> Result<License, crate::Error> {
        let license = self.verify_signature_and_device(key, device_id)?;
        match license.state_at(now_unix) {
            LicenseState::Valid => Ok(license),
            LicenseState::NotYetValid => Err(LicenseError::NotYetValid {
                serial: license.payload.serial,
                not_before: license.payload.not_before,
            }
            .into()),
            LicenseState::Expired => Err(LicenseError::Expired {
                serial: license.payload.serial,
                not_after: license.payload.not_after,
            }
            .into()),
        }
    }

    /// Signature and device only: a stored license that expired later is still
    /// shown, and reported as expired ([`License::state_at`]).
    pub fn verify_signature_and_device(
        &self,
        key: &VendorKey,
        device_id: &str,
    ) -> Result<License, crate::Error> {
        UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(&self.payload_bytes, &self.sig)
            .map_err(|_| LicenseError::BadSignature)?;
        if self.payload.device_id != device_id {
            return Err(LicenseError::WrongDevice {
                serial: self.payload.serial.clone(),
                licensed: self.payload.device_id.clone(),
                this: device_id.to_owned(),
            }
            .into());
        }
        Ok(License {
            payload: self.payload.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            text: self.text.clone(),
        })
    }
}

/// Where a license stands at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LicenseState {
    /// `not_before <= now < not_after`.
    Valid,
    /// `now < not_before`.
    NotYetValid,
    /// `now >= not_after`.
    Expired,
}

impl LicenseState {
    /// `valid`, `not-yet-valid` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Valid => "valid",
            LicenseState::NotYetValid => "not-yet-valid",
            LicenseState::Expired => "expired",
        }
    }
}

impl fmt::Display for LicenseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A license whose signature and device were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct License {
    /// What it says.
    pub payload: LicensePayload,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity (excluded), unix seconds.
    pub not_after: i64,
    /// The license file as loaded, surrounding whitespace trimmed.
    pub text: String,
}

impl License {
    /// Whether the license grants feature `f`.
    pub fn has_feature(&self, f: &str) -> bool {
        self.payload.features.iter().any(|x| x == f)
    }

    /// Whether the license is valid at `now_unix`: `not_before <= now < not_after`.
    pub fn is_valid_at(&self, now_unix: i64) -> bool {
        self.state_at(now_unix) == LicenseState::Valid
    }

    /// Where the license stands at `now_unix`.
    pub fn state_at(&self, now_unix: i64) -> LicenseState {
        if now_unix < self.not_before {
            LicenseState::NotYetValid
        } else if now_unix >= self.not_after {
            LicenseState::Expired
        } else {
            LicenseState::Valid
        }
    }
}
