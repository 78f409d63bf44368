//! The decryption CA (generate, import, export, refusals) and forged certificates
//! (contents, `openssl verify` against the CA, the cache).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use support::openssl::{self, Check, Verdict};
use support::pki::{self, Pki, OTHER, SERVER};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName, UnixTime};
use tlsgate_certstore::{
    forge_leaf, parse_certificates, summarize, unix_time, CaOptions, DecryptionCa, Error, ForgeCache,
    LeafKey, FORGED_BACKDATE_SECS, FORGED_MAX_LIFETIME_SECS, PKCS8_HINT,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn now() -> UnixTime {
    unix_time(now_secs() as u64)
}

fn host(name: &str) -> ServerName<'static> {
    ServerName::try_from(name).unwrap().to_owned()
}

fn openssl_ok(args: &[&str]) {
    let (ok, out, err) = openssl::run(args);
    assert!(ok, "openssl {args:?}: {out}{err}");
}

/// A CA certificate made by openssl for `key_path`.
fn openssl_ca(dir: &Path, key_path: &str, out: &str, ku: &str) -> String {
    let cert = dir.join(out).display().to_string();
    openssl_ok(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key_path,
        "-subj",
        "/O=Corp/CN=Corp decryption CA",
        "-days",
        "365",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        &format!("keyUsage=critical,{ku}"),
        "-out",
        &cert,
    ]);
    cert
}

#[test]
fn generated_ca_has_the_documented_properties() {
    let ca = DecryptionCa::generate(&CaOptions::default(), now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = openssl::text(dir.path(), ca.cert_der());
    for needle in [
        "Subject: CN = tlsgate decryption CA",
        "Issuer: CN = tlsgate decryption CA",
        "ASN1 OID: prime256v1",
        "Signature Algorithm: ecdsa-with-SHA256",
        "X509v3 Basic Constraints: critical",
        "CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical",
        "Certificate Sign, CRL Sign",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let s = ca.summary();
    assert!(s.is_ca && s.self_issued);
    assert_eq!(s.not_after - s.not_before, 3650 * 86_400 + 3600);
    assert!(s.not_before <= now_secs() && s.not_before >= now_secs() - 3700);
    assert!(!format!("{ca:?}").contains("PRIVATE"), "Debug hides the key");

    // Export: PEM and DER are the same certificate; openssl reads the PEM.
    let pem = ca.cert_pem();
    assert_eq!(parse_certificates(pem.as_bytes()).unwrap(), vec![ca.cert_der().clone()]);
    let (subject, _) = openssl::subject_issuer(dir.path(), ca.cert_der());
    assert_eq!(subject, "/CN=tlsgate decryption CA");
    assert_eq!(openssl::fingerprint(dir.path(), ca.cert_der()), ca.fingerprint().to_string());

    // Export → import round trip (PEM and DER), and the re-imported CA signs.
    let again = DecryptionCa::import(pem.as_bytes(), ca.key_pkcs8_pem().as_bytes(), now()).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());
    let der_key = parse_pem_body(&ca.key_pkcs8_pem());
    let again = DecryptionCa::import(ca.cert_der().as_ref(), &der_key, now()).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());

    let custom = CaOptions {
        organization: Some("Example Corp".into()),
        validity_days: 30,
        ..CaOptions::with_common_name("Example decrypt")
    };
    let c = DecryptionCa::generate(&custom, now()).unwrap();
    assert_eq!(c.summary().subject, "/O=Example Corp/CN=Example decrypt");
}

fn parse_pem_body(pem: &str) -> Vec<u8> {
    use tlsgate_certstore::pki_types::pem::PemObject;
    tlsgate_certstore::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .secret_pkcs8_der()
        .to_vec()
}

#[test]
fn imports_rsa_and_ecdsa_in_every_key_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |f: &str| d.join(f).display().to_string();
    // RSA: PKCS#8 (genpkey's output), PKCS#1 (-traditional), DER.
    openssl_ok(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &p("rsa.p8")]);
    openssl_ok(&["rsa", "-in", &p("rsa.p8"), "-traditional", "-out", &p("rsa.p1")]);
    openssl_ok(&["rsa", "-in", &p("rsa.p8"), "-traditional", "-outform", "DER", "-out", &p("rsa.p1.der")]);
    let rsa_ca = openssl_ca(d, &p("rsa.p8"), "rsa-ca.pem", "keyCertSign,cRLSign");
    // ECDSA P-256: SEC1 (ecparam), PKCS#8, SEC1 DER; P-384 too.
    openssl_ok(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &p("ec.sec1")]);
    openssl_ok(&["pkcs8", "-topk8", "-nocrypt", "-in", &p("ec.sec1"), "-out", &p("ec.p8")]);
    openssl_ok(&["ec", "-in", &p("ec.sec1"), "-outform", "DER", "-out", &p("ec.sec1.der")]);
    let ec_ca = openssl_ca(d, &p("ec.p8"), "ec-ca.pem", "keyCertSign,cRLSign");
    openssl_ok(&["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", &p("p384.sec1")]);
    let p384_ca = openssl_ca(d, &p("p384.sec1"), "p384-ca.pem", "keyCertSign");

    let read = |f: &str| std::fs::read(f).unwrap();
    for (cert, key) in [
        (&rsa_ca, p("rsa.p8")),
        (&rsa_ca, p("rsa.p1")),
        (&rsa_ca, p("rsa.p1.der")),
        (&ec_ca, p("ec.p8")),
        (&ec_ca, p("ec.sec1")),
        (&ec_ca, p("ec.sec1.der")),
        (&p384_ca, p("p384.sec1")),
    ] {
        let ca =
            DecryptionCa::import(&read(cert), &read(&key), now()).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(ca.summary().subject, "/O=Corp/CN=Corp decryption CA");
        // The imported CA signs certificates that openssl accepts.
        let leaf_key = LeafKey::generate().unwrap();
        let p = Pki::generate();
        let forged = forge_leaf(&ca, &leaf_key, &p.leaf.der(), &host(SERVER), now()).unwrap();
        let v = openssl::verify(
            d,
            &[ca.cert_der().clone()],
            &[],
            &forged,
            Check::Host(SERVER),
            Some(now_secs()),
            &[],
        );
        assert_eq!(v, Verdict::Ok, "{key}");
    }

    // Refused keys name the conversion command.
    openssl_ok(&["pkcs8", "-topk8", "-in", &p("ec.sec1"), "-passout", "pass:secret", "-out", &p("ec.enc")]);
    let err = DecryptionCa::import(&read(&ec_ca), &read(&p("ec.enc")), now()).unwrap_err();
    assert!(matches!(err, Error::EncryptedKey), "{err}");
    assert!(err.to_string().contains(PKCS8_HINT));
    openssl_ok(&["ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", &p("p521.sec1")]);
    let p521_ca = openssl_ca(d, &p("p521.sec1"), "p521-ca.pem", "keyCertSign");
    let err = DecryptionCa::import(&read(&p521_ca), &read(&p("p521.sec1")), now()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedKey { .. }), "{err}");
    assert!(err.to_string().contains(PKCS8_HINT), "{err}");
}

#[test]
fn import_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Pki::generate();
    let t = now();
    // Not a CA.
    let err = DecryptionCa::import(p.leaf.pem().as_bytes(), p.leaf.key_pem().as_bytes(), t).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    assert!(err.to_string().contains("/CN=server.tg.test"), "{err}");
    let err =
        DecryptionCa::import(p.ciscoasa.pem().as_bytes(), p.ciscoasa.key_pem().as_bytes(), t).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    // A CA whose keyUsage forbids signing certificates.
    openssl_ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &d.join("k").display().to_string(),
    ]);
    let crl_only = openssl_ca(d, &d.join("k").display().to_string(), "crl-only.pem", "cRLSign");
    let err =
        DecryptionCa::import(&std::fs::read(crl_only).unwrap(), &std::fs::read(d.join("k")).unwrap(), t)
            .unwrap_err();
    assert!(matches!(err, Error::CaCannotSign { .. }), "{err}");
    // A key that is not the certificate's.
    let err =
        DecryptionCa::import(p.root.pem().as_bytes(), p.intermediate.key_pem().as_bytes(), t).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    // Garbage, and a key where the certificate should be.
    assert!(matches!(
        DecryptionCa::import(b"hello", p.root.key_pem().as_bytes(), t),
        Err(Error::NotCertificate(_))
    ));
    assert!(DecryptionCa::import(p.root.key_pem().as_bytes(), p.root.key_pem().as_bytes(), t).is_err());
    assert!(matches!(DecryptionCa::import(p.root.pem().as_bytes(), b"", t), Err(Error::NoPrivateKey)));
    // A CA that is not valid now.
    let err = DecryptionCa::import(
        p.root.pem().as_bytes(),
        p.root.key_pem().as_bytes(),
        unix_time(pki::VALID_TO as u64 + 1),
    )
    .unwrap_err();
    assert!(matches!(err, Error::CaUnusable(_)), "{err}");
    // The fixture root itself is fine.
    DecryptionCa::import(p.root.pem().as_bytes(), p.root.key_pem().as_bytes(), t).unwrap();
}

struct Forged {
    der: CertificateDer<'static>,
}

impl Forged {
    fn parsed(&self) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(self.der.as_ref()).unwrap().1
    }
}

#[test]
fn forged_certificate_contents() {
    let p = Pki::generate();
    let ca = DecryptionCa::generate(&CaOptions::default(), now()).unwrap();
    let leaf_key = LeafKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = now_secs();

    let forged = Forged { der: forge_leaf(&ca, &leaf_key, &p.leaf.der(), &host(SERVER), now()).unwrap() };
    let x = forged.parsed();
    let server = summarize(p.leaf.der().as_ref()).unwrap();
    let s = summarize(forged.der.as_ref()).unwrap();
    assert_eq!(s.subject, "/CN=server.tg.test");
    assert_eq!(s.issuer, ca.summary().subject);
    assert_eq!(
        x.issuer().as_raw(),
        x509_parser::parse_x509_certificate(ca.cert_der().as_ref()).unwrap().1.subject().as_raw()
    );
    assert_eq!(s.dns_names, vec![SERVER.to_owned()]);
    assert!(!s.is_ca);
    assert!(matches!(x.basic_constraints(), Ok(Some(bc)) if !bc.value.ca));
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth && !eku.any && eku.other.is_empty());
    let ku = x.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert!(s.not_after <= server.not_after && s.not_after <= t + FORGED_MAX_LIFETIME_SECS);
    assert!(s.not_before >= server.not_before && s.not_before >= t - FORGED_BACKDATE_SECS - 1);
    assert_eq!(x.public_key().raw, leaf_key.public_key_der().as_slice());
    let aki = x.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    assert!(aki.is_some(), "authority key identifier present");

    // The reference: openssl accepts it for the server name only.
    let trusted = [ca.cert_der().clone()];
    assert_eq!(
        openssl::verify(d, &trusted, &[], &forged.der, Check::Host(SERVER), Some(t), &[]),
        Verdict::Ok
    );
    match openssl::verify(d, &trusted, &[], &forged.der, Check::Host(OTHER), Some(t), &[]) {
        Verdict::Error { code: 62, depth: 0, .. } => {}
        other => panic!("other.tg.test must fail with 62: {other:?}"),
    }
    // A leaf never outlives the CA: a CA valid for one more day clips it.
    let short =
        DecryptionCa::generate(&CaOptions { validity_days: 1, ..CaOptions::default() }, now()).unwrap();
    let clipped = forge_leaf(&short, &leaf_key, &p.leaf.der(), &host(SERVER), now()).unwrap();
    let c = summarize(clipped.as_ref()).unwrap();
    assert!(c.not_after <= short.summary().not_after && c.not_before >= short.summary().not_before, "{c:?}");
    assert!(short.summary().not_after < t + FORGED_MAX_LIFETIME_SECS);
    // Serials differ although the key is shared.
    let again = forge_leaf(&ca, &leaf_key, &p.leaf.der(), &host(SERVER), now()).unwrap();
    assert_ne!(summarize(again.as_ref()).unwrap().serial, s.serial);
}

#[test]
fn forged_names_cover_the_request() {
    let p = Pki::generate();
    let ca = DecryptionCa::generate(&CaOptions::default(), now()).unwrap();
    let leaf_key = LeafKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = now_secs();
    let trusted = [ca.cert_der().clone()];

    // The seed's certificate has no SAN and no CN: the SNI becomes both.
    let asa = forge_leaf(&ca, &leaf_key, &p.ciscoasa.der(), &host("asa.tg.test"), now()).unwrap();
    let s = summarize(asa.as_ref()).unwrap();
    assert_eq!(
        (s.subject.as_str(), s.dns_names.clone()),
        ("/CN=asa.tg.test", vec!["asa.tg.test".to_owned()])
    );
    assert_eq!(
        openssl::verify(d, &trusted, &[], &asa, Check::Host("asa.tg.test"), Some(t), &[]),
        Verdict::Ok
    );

    // No SNI: the destination address.
    let ip = ServerName::IpAddress("198.18.0.2".parse::<std::net::IpAddr>().unwrap().into());
    let by_ip = forge_leaf(&ca, &leaf_key, &p.ciscoasa.der(), &ip, now()).unwrap();
    let s = summarize(by_ip.as_ref()).unwrap();
    assert_eq!(s.ip_addresses, vec!["198.18.0.2".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(openssl::verify(d, &trusted, &[], &by_ip, Check::Ip("198.18.0.2"), Some(t), &[]), Verdict::Ok);

    // A server name its SANs do not cover (a pinned certificate) is added; theirs are kept.
    let extra = forge_leaf(&ca, &leaf_key, &p.leaf.der(), &host("alias.tg.test"), now()).unwrap();
    let s = summarize(extra.as_ref()).unwrap();
    assert_eq!(s.dns_names, vec![SERVER.to_owned(), "alias.tg.test".to_owned()]);
    assert_eq!(s.subject, "/CN=server.tg.test");

    // A short-lived server certificate bounds the forged one.
    let short = pki::issue(pki::leaf_params(SERVER, t - 86_400, t + 7200), &p.intermediate);
    let f = forge_leaf(&ca, &leaf_key, &short.der(), &host(SERVER), now()).unwrap();
    assert_eq!(summarize(f.as_ref()).unwrap().not_after, t + 7200);
    // An expired one cannot be forged.
    let err = forge_leaf(&ca, &leaf_key, &p.expired_leaf.der(), &host(SERVER), now()).unwrap_err();
    assert!(matches!(err, Error::Forge(_)), "{err}");

    // Wildcards in the server certificate are copied and cover the request.
    let mut params = pki::leaf_params("*.wild.tg.test", pki::VALID_FROM, pki::VALID_TO);
    params.subject_alt_names.push(rcgen::SanType::IpAddress("198.18.0.9".parse().unwrap()));
    let wild = pki::issue(params, &p.intermediate);
    let f = forge_leaf(&ca, &leaf_key, &wild.der(), &host("a.wild.tg.test"), now()).unwrap();
    let s = summarize(f.as_ref()).unwrap();
    assert_eq!(s.dns_names, vec!["*.wild.tg.test".to_owned()]);
    assert_eq!(s.ip_addresses.len(), 1);
    let x = x509_parser::parse_x509_certificate(f.as_ref()).unwrap().1;
    let sans = x.subject_alternative_name().unwrap().unwrap().value.general_names.len();
    assert_eq!(sans, 2);
    assert!(matches!(
        x.subject_alternative_name().unwrap().unwrap().value.general_names[0],
        GeneralName::DNSName("*.wild.tg.test")
    ));
}

#[test]
fn intermediate_decryption_ca_sends_its_chain() {
    let p = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca = DecryptionCa::import(
        format!("{}{}", p.intermediate.pem(), p.root.pem()).as_bytes(),
        p.intermediate.key_pem().as_bytes(),
        now(),
    )
    .unwrap();
    let mut cache = ForgeCache::new(Arc::new(ca), LeafKey::generate().unwrap(), 4);
    let ck = cache.get_or_forge(&host("asa.tg.test"), &[p.ciscoasa.der()], now()).unwrap();
    assert_eq!(ck.cert.len(), 3, "leaf, intermediate CA, root");
    assert_eq!(ck.cert[1], p.intermediate.der());
    let v = openssl::verify(
        dir.path(),
        &[p.root.der()],
        &ck.cert[1..],
        &ck.cert[0],
        Check::Host("asa.tg.test"),
        Some(now_secs()),
        &[],
    );
    assert_eq!(v, Verdict::Ok);
}

#[test]
fn cache_hits_misses_and_bound() {
    let p = Pki::generate();
    let ca = Arc::new(DecryptionCa::generate(&CaOptions::default(), now()).unwrap());
    let mut cache = ForgeCache::new(Arc::clone(&ca), LeafKey::generate().unwrap(), 2);
    let t = now();
    let a_chain = [p.leaf.der(), p.intermediate.der()];
    let b_chain = [p.other_name_leaf.der(), p.intermediate.der()];
    let c_chain = [p.ciscoasa.der()];

    let a1 = cache.get_or_forge(&host(SERVER), &a_chain, t).unwrap();
    let a2 = cache.get_or_forge(&host(SERVER), &a_chain, t).unwrap();
    assert!(Arc::ptr_eq(&a1, &a2), "a hit returns the same certified key");
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.len, s.capacity), (1, 1, 1, 2));

    // The key is (requested name, chain hash): another name or another chain misses.
    let a_alias = cache.get_or_forge(&host("alias.tg.test"), &a_chain, t).unwrap();
    assert!(!Arc::ptr_eq(&a1, &a_alias));
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.evictions, s.len), (1, 2, 0, 2));

    // Full: A was used again, so CLOCK evicts the alias entry first.
    cache.get_or_forge(&host(SERVER), &a_chain, t).unwrap();
    cache.get_or_forge(&host(OTHER), &b_chain, t).unwrap();
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.evictions, s.len), (2, 3, 1, 2));
    let a3 = cache.get_or_forge(&host(SERVER), &a_chain, t).unwrap();
    assert!(Arc::ptr_eq(&a1, &a3), "the referenced entry survived");
    cache.get_or_forge(&host("asa.tg.test"), &c_chain, t).unwrap();
    cache.get_or_forge(&host("alias.tg.test"), &a_chain, t).unwrap();
    let s = cache.stats();
    assert_eq!(s.len, 2, "never above capacity");
    assert_eq!((s.hits, s.misses), (3, 5));
    assert_eq!(s.evictions, s.misses - 2);

    // A certificate close to its end is forged again rather than served.
    let short = pki::issue(pki::leaf_params(SERVER, now_secs() - 60, now_secs() + 1800), &p.intermediate);
    let before = cache.stats().misses;
    cache.get_or_forge(&host(SERVER), &[short.der()], t).unwrap();
    cache.get_or_forge(&host(SERVER), &[short.der()], t).unwrap();
    assert_eq!(cache.stats().misses, before + 2);

    // Failures are counted, not cached.
    assert!(cache.get_or_forge(&host(SERVER), &[p.expired_leaf.der()], t).is_err());
    assert!(cache.get_or_forge(&host(SERVER), &[], t).is_err());
    assert_eq!(cache.stats().errors, 2);
    cache.clear();
    assert_eq!(cache.stats().len, 0);
}
