//! The test PKI, generated with rcgen every run (no committed key material).
//!
//! ```text
//!   root "tlsgate test root" ─┬─ intermediate (pathlen 0) ─┬─ leaf server.tg.test
//!                              │                            ├─ expired leaf (2019..2021)
//!                              │                            ├─ not-yet-valid leaf (2045..2050)
//!                              │                            ├─ leaf for other.tg.test
//!                              │                            ├─ leaf with EKU clientAuth only
//!                              │                            ├─ leaf with an unknown critical extension
//!                              │                            ├─ leaf with a corrupted signature
//!                              │                            └─ sub-intermediate (CA) ── leaf (pathlen exceeded)
//!                              └─ "not a CA" (CA:FALSE) ── leaf
//!   unknown root ── leaf server.tg.test
//!   self-signed, no SAN, /unstructuredName=ciscoasa (twice, different keys)
//! ```
//!
//! Dates are fixed (2020-01-01 .. 2040-01-01 for the valid ones), so a check at
//! [`CHECK_TIME`] is deterministic and the certificates are also valid for the
//! handshake tests that run at the real time.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose,
};
use tlsgate_certstore::pem_encode;
use tlsgate_certstore::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// 2020-01-01T00:00:00Z.
pub const VALID_FROM: i64 = 1_577_836_800;
/// 2040-01-01T00:00:00Z.
pub const VALID_TO: i64 = 2_208_988_800;
/// 2026-06-01T00:00:00Z: when the verify tests check.
pub const CHECK_TIME: i64 = 1_780_272_000;

/// The name the valid leaf is for.
pub const SERVER: &str = "server.tg.test";
/// Another name.
pub const OTHER: &str = "other.tg.test";

/// OID of PKCS#9 unstructuredName, the seed's `/unstructuredName=ciscoasa`.
pub const UNSTRUCTURED_NAME: &[u64] = &[1, 2, 840, 113_549, 1, 9, 2];

/// A certificate with its key.
pub struct Issued {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Issued {
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", self.key.serialized_der())
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialized_der().to_vec()))
    }
}

/// Every fixture.
pub struct Pki {
    pub root: Issued,
    pub intermediate: Issued,
    pub leaf: Issued,
    pub expired_leaf: Issued,
    pub not_yet_valid_leaf: Issued,
    pub other_name_leaf: Issued,
    pub client_auth_leaf: Issued,
    pub critical_ext_leaf: Issued,
    /// The leaf's DER with one bit of its signature flipped.
    pub bad_signature_leaf: CertificateDer<'static>,
    pub sub_intermediate: Issued,
    pub leaf_under_sub: Issued,
    pub not_ca: Issued,
    pub leaf_under_not_ca: Issued,
    pub unknown_root: Issued,
    pub unknown_leaf: Issued,
    pub ciscoasa: Issued,
    pub ciscoasa_other: Issued,
    /// Self-signed server certificate with SAN, keyUsage digitalSignature, EKU serverAuth.
    pub self_signed_ku: Issued,
    /// Self-signed server certificate that is also a CA (as many appliances make).
    pub self_signed_ca_server: Issued,
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

fn time(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("time")
}

fn dn(pairs: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in pairs {
        dn.push(t.clone(), *v);
    }
    dn
}

fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&[
        (DnType::CountryName, "US"),
        (DnType::OrganizationName, "tlsgate tests"),
        (DnType::CommonName, cn),
    ]);
    p.is_ca = IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time(VALID_FROM);
    p.not_after = time(VALID_TO);
    p
}

/// A server leaf for `dns` with the usual extensions.
pub fn leaf_params(dns: &str, from: i64, to: i64) -> CertificateParams {
    let mut p = CertificateParams::new(vec![dns.to_owned()]).expect("SAN");
    p.distinguished_name = dn(&[(DnType::CommonName, dns)]);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = time(from);
    p.not_after = time(to);
    p
}

pub fn self_signed(params: CertificateParams) -> Issued {
    let key = key();
    let cert = params.self_signed(&key).expect("self-signed");
    Issued { cert, key }
}

pub fn issue(params: CertificateParams, by: &Issued) -> Issued {
    let key = key();
    let cert = params.signed_by(&key, &by.cert, &by.key).expect("signed");
    Issued { cert, key }
}

/// The seed's certificate: self-signed, no extensions, `/unstructuredName=ciscoasa`.
pub fn ciscoasa() -> Issued {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&[(DnType::CustomDnType(UNSTRUCTURED_NAME.to_vec()), "ciscoasa")]);
    p.not_before = time(VALID_FROM);
    p.not_after = time(VALID_TO);
    self_signed(p)
}

impl Pki {
    pub fn generate() -> Pki {
        let root = self_signed(ca_params("tlsgate test root", None));
        let intermediate = issue(ca_params("tlsgate test intermediate", Some(0)), &root);
        let leaf = issue(leaf_params(SERVER, VALID_FROM, VALID_TO), &intermediate);
        let expired_leaf = issue(leaf_params(SERVER, 1_546_300_800, 1_609_459_200), &intermediate);
        let not_yet_valid_leaf = issue(leaf_params(SERVER, 2_366_841_600, 2_524_608_000), &intermediate);
        let other_name_leaf = issue(leaf_params(OTHER, VALID_FROM, VALID_TO), &intermediate);
        let mut p = leaf_params(SERVER, VALID_FROM, VALID_TO);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_auth_leaf = issue(p, &intermediate);
        let mut p = leaf_params(SERVER, VALID_FROM, VALID_TO);
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55_555, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions = vec![ext];
        let critical_ext_leaf = issue(p, &intermediate);

        let mut bad = leaf.der().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let bad_signature_leaf = CertificateDer::from(bad);

        let sub_intermediate = issue(ca_params("tlsgate test sub-intermediate", None), &intermediate);
        let leaf_under_sub = issue(leaf_params(SERVER, VALID_FROM, VALID_TO), &sub_intermediate);

        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&[(DnType::CommonName, "tlsgate not a CA")]);
        p.is_ca = IsCa::ExplicitNoCa;
        p.not_before = time(VALID_FROM);
        p.not_after = time(VALID_TO);
        let not_ca = issue(p, &root);
        let leaf_under_not_ca = issue(leaf_params(SERVER, VALID_FROM, VALID_TO), &not_ca);

        let unknown_root = self_signed(ca_params("tlsgate unknown root", None));
        let unknown_leaf = issue(leaf_params(SERVER, VALID_FROM, VALID_TO), &unknown_root);

        Pki {
            root,
            intermediate,
            leaf,
            expired_leaf,
            not_yet_valid_leaf,
            other_name_leaf,
            client_auth_leaf,
            critical_ext_leaf,
            bad_signature_leaf,
            sub_intermediate,
            leaf_under_sub,
            not_ca,
            leaf_under_not_ca,
            unknown_root,
            unknown_leaf,
            ciscoasa: ciscoasa(),
            ciscoasa_other: ciscoasa(),
            self_signed_ku: self_signed(leaf_params("appliance.tg.test", VALID_FROM, VALID_TO)),
            self_signed_ca_server: {
                let mut p = leaf_params("appliance.tg.test", VALID_FROM, VALID_TO);
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign];
                self_signed(p)
            },
        }
    }
}
