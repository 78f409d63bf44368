//! Verification reasons, names and the trust store, with `openssl` as the reference.

mod support;

use std::net::IpAddr;

use support::openssl::{self, Check, Verdict};
use support::pki::{self, Pki, CHECK_TIME, OTHER, SERVER};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName};
use tlsgate_certstore::{
    chain_sha256, summarize, unix_time, verify_server_chain, Fingerprint, ImportAs, TrustKind, TrustStore,
    Verified, VerifyReason,
};

enum Name {
    Host(&'static str),
    Ip(&'static str),
}

struct Case {
    what: &'static str,
    leaf: CertificateDer<'static>,
    presented: Vec<CertificateDer<'static>>,
    trusted: Vec<CertificateDer<'static>>,
    name: Name,
    at: i64,
    /// (code, depth), or None for success.
    expect: Option<(u32, usize)>,
}

fn store_of(trusted: &[CertificateDer<'static>]) -> TrustStore {
    let mut store = TrustStore::without_system_bundle();
    for (i, der) in trusted.iter().enumerate() {
        store.import(&format!("ca{i}"), der.as_ref(), ImportAs::Ca).expect("import CA");
    }
    store
}

fn server_name(name: &Name) -> ServerName<'static> {
    match name {
        Name::Host(h) => ServerName::try_from(*h).expect("DNS name").to_owned(),
        Name::Ip(ip) => ServerName::IpAddress(ip.parse::<IpAddr>().expect("IP").into()),
    }
}

fn cases(p: &Pki) -> Vec<Case> {
    let (root, int) = (p.root.der(), p.intermediate.der());
    let case = |what, leaf: CertificateDer<'static>, presented: Vec<_>, trusted: Vec<_>, name, expect| Case {
        what,
        leaf,
        presented,
        trusted,
        name,
        at: CHECK_TIME,
        expect,
    };
    let mut v = vec![
        case("valid chain", p.leaf.der(), vec![int.clone()], vec![root.clone()], Name::Host(SERVER), None),
        case(
            "valid chain, root sent too",
            p.leaf.der(),
            vec![int.clone(), root.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            None,
        ),
        case(
            "valid chain, sent out of order",
            p.leaf.der(),
            vec![root.clone(), int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            None,
        ),
        case(
            "the seed: self-signed server",
            p.ciscoasa.der(),
            vec![],
            vec![root.clone()],
            Name::Host("asa.tg.test"),
            Some((18, 0)),
        ),
        case(
            "self-signed root in chain",
            p.leaf.der(),
            vec![int.clone(), root.clone()],
            vec![p.unknown_root.der()],
            Name::Host(SERVER),
            Some((19, 2)),
        ),
        case(
            "unknown CA",
            p.unknown_leaf.der(),
            vec![],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((20, 0)),
        ),
        case(
            "unknown CA, its root sent",
            p.unknown_leaf.der(),
            vec![p.unknown_root.der()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((19, 1)),
        ),
        case(
            "intermediate missing",
            p.leaf.der(),
            vec![],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((20, 0)),
        ),
        case(
            "root not trusted",
            p.leaf.der(),
            vec![int.clone()],
            vec![p.unknown_root.der()],
            Name::Host(SERVER),
            Some((20, 1)),
        ),
        case(
            "expired",
            p.expired_leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((10, 0)),
        ),
        case(
            "not yet valid",
            p.not_yet_valid_leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((9, 0)),
        ),
        case(
            "host name mismatch",
            p.leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(OTHER),
            Some((62, 0)),
        ),
        case(
            "leaf for another name",
            p.other_name_leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((62, 0)),
        ),
        case(
            "IP address mismatch",
            p.leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Ip("198.18.0.2"),
            Some((64, 0)),
        ),
        case(
            "issuer is not a CA",
            p.leaf_under_not_ca.der(),
            vec![p.not_ca.der()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((24, 1)),
        ),
        case(
            "EKU clientAuth only",
            p.client_auth_leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((26, 0)),
        ),
        case(
            "corrupted signature",
            p.bad_signature_leaf.clone(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((7, 0)),
        ),
        case(
            "unknown critical extension",
            p.critical_ext_leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((34, 0)),
        ),
        case(
            "path length exceeded",
            p.leaf_under_sub.der(),
            vec![p.sub_intermediate.der(), int.clone()],
            vec![root.clone()],
            Name::Host(SERVER),
            Some((25, 2)),
        ),
        case(
            "expired and wrong name: the name comes first",
            p.expired_leaf.der(),
            vec![int.clone()],
            vec![root.clone()],
            Name::Host(OTHER),
            Some((62, 0)),
        ),
        case(
            "self-signed and wrong name: self-signed comes first",
            p.ciscoasa.der(),
            vec![],
            vec![root.clone()],
            Name::Host(OTHER),
            Some((18, 0)),
        ),
    ];
    v.push(case(
        "self-signed, keyUsage without keyCertSign",
        p.self_signed_ku.der(),
        vec![],
        vec![root.clone()],
        Name::Host("appliance.tg.test"),
        Some((18, 0)),
    ));
    v.push(case(
        "self-signed CA as server certificate",
        p.self_signed_ca_server.der(),
        vec![],
        vec![root.clone()],
        Name::Host("appliance.tg.test"),
        Some((18, 0)),
    ));
    v.push(case(
        "self-signed CA as server certificate, trusted as CA",
        p.self_signed_ca_server.der(),
        vec![],
        vec![p.self_signed_ca_server.der()],
        Name::Host("appliance.tg.test"),
        None,
    ));
    v.push(case(
        "self-signed CA trusted as CA, other name",
        p.self_signed_ca_server.der(),
        vec![],
        vec![p.self_signed_ca_server.der()],
        Name::Host(OTHER),
        Some((62, 0)),
    ));
    let mut expired_ca = case(
        "self-signed CA trusted as CA, expired",
        p.self_signed_ca_server.der(),
        vec![],
        vec![p.self_signed_ca_server.der()],
        Name::Host("appliance.tg.test"),
        Some((10, 0)),
    );
    expired_ca.at = pki::VALID_TO + 1;
    v.push(expired_ca);
    let mut late = case(
        "everything expired: the root first",
        p.leaf.der(),
        vec![int.clone()],
        vec![root.clone()],
        Name::Host(SERVER),
        Some((10, 2)),
    );
    late.at = pki::VALID_TO + 86_400;
    v.push(late);
    v
}

#[test]
fn every_reason_matches_openssl_verify() {
    let p = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for c in cases(&p) {
        let trust = store_of(&c.trusted).snapshot();
        let ours =
            verify_server_chain(&trust, &c.leaf, &c.presented, &server_name(&c.name), unix_time(c.at as u64));
        let check = match c.name {
            Name::Host(h) => Check::Host(h),
            Name::Ip(ip) => Check::Ip(ip),
        };
        let reference =
            openssl::verify(dir.path(), &c.trusted, &c.presented, &c.leaf, check, Some(c.at), &[]);
        match (&ours, &reference) {
            (Ok(_), Verdict::Ok) => assert_eq!(c.expect, None, "{}", c.what),
            (Err(f), Verdict::Error { code, depth, text }) => {
                assert_eq!(
                    (f.reason.openssl3_code(), f.depth),
                    (*code, *depth),
                    "{}: ours {f} vs openssl {reference:?}",
                    c.what
                );
                assert_eq!(f.reason.openssl3_text(), text, "{}", c.what);
                assert_eq!(Some((f.code(), f.depth)), c.expect, "{}", c.what);
            }
            _ => panic!("{}: ours {ours:?} vs openssl {reference:?}", c.what),
        }
        report.push(format!("{:50} {:?}", c.what, reference));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn sha1_signature_is_68_as_in_openssl_at_security_level_1() {
    let p = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("int.pem"), p.intermediate.pem()).unwrap();
    std::fs::write(d.join("int.key"), p.intermediate.key_pem()).unwrap();
    std::fs::write(d.join("ext.cnf"), format!("subjectAltName=DNS:{SERVER}\nextendedKeyUsage=serverAuth\n"))
        .unwrap();
    let path = |f: &str| d.join(f).display().to_string();
    let (ok, _, err) = openssl::run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &path("leaf.key"),
        "-subj",
        "/CN=server.tg.test",
        "-out",
        &path("leaf.csr"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = openssl::run(&[
        "x509",
        "-req",
        "-in",
        &path("leaf.csr"),
        "-CA",
        &path("int.pem"),
        "-CAkey",
        &path("int.key"),
        "-sha1",
        "-days",
        "30",
        "-set_serial",
        "7",
        "-extfile",
        &path("ext.cnf"),
        "-out",
        &path("sha1.pem"),
    ]);
    assert!(ok, "{err}");
    let leaf =
        tlsgate_certstore::parse_certificates(&std::fs::read(d.join("sha1.pem")).unwrap()).unwrap().remove(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let trusted = vec![p.root.der()];
    let presented = vec![p.intermediate.der()];
    let reference = openssl::verify(
        d,
        &trusted,
        &presented,
        &leaf,
        Check::Host(SERVER),
        Some(now as i64),
        &["-auth_level", "1"],
    );
    let trust = store_of(&trusted).snapshot();
    let ours =
        verify_server_chain(&trust, &leaf, &presented, &server_name(&Name::Host(SERVER)), unix_time(now))
            .expect_err("SHA-1 is refused");
    assert_eq!(reference, Verdict::Error { code: 68, depth: 0, text: ours.reason.openssl3_text().into() });
    assert_eq!((ours.code(), ours.depth), (68, 0));
}

#[test]
fn an_imported_intermediate_anchors_chains_like_openssl_partial_chain() {
    let p = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let trusted = vec![p.intermediate.der()];
    let trust = store_of(&trusted).snapshot();
    let at = unix_time(CHECK_TIME as u64);
    let name = server_name(&Name::Host(SERVER));
    assert_eq!(verify_server_chain(&trust, &p.leaf.der(), &[], &name, at), Ok(Verified::Chain));
    let reference = openssl::verify(
        dir.path(),
        &trusted,
        &[],
        &p.leaf.der(),
        Check::Host(SERVER),
        Some(CHECK_TIME),
        &["-partial_chain"],
    );
    assert_eq!(reference, Verdict::Ok);
    // And the usual errors still come out under it.
    let f = verify_server_chain(&trust, &p.expired_leaf.der(), &[], &name, at).unwrap_err();
    assert_eq!((f.code(), f.depth), (10, 0));
}

#[test]
fn openssl_output_parser() {
    let v = openssl::parse_verify_output(
        false,
        "",
        "CN = x\nerror 18 at 0 depth lookup: self-signed certificate\nerror leaf.pem: verification failed\n",
    );
    assert_eq!(v, Verdict::Error { code: 18, depth: 0, text: "self-signed certificate".into() });
    assert_eq!(openssl::parse_verify_output(true, "leaf.pem: OK\n", ""), Verdict::Ok);
}

#[test]
fn the_seed_failure_is_recorded_in_full() {
    let p = Pki::generate();
    let trust = store_of(&[p.root.der()]).snapshot();
    let leaf = p.ciscoasa.der();
    let f = verify_server_chain(
        &trust,
        &leaf,
        &[],
        &server_name(&Name::Host("asa.tg.test")),
        unix_time(CHECK_TIME as u64),
    )
    .expect_err("self-signed");
    assert_eq!(
        f.log_lines(),
        [
            "Certificate verification failure: self signed certificate (code 18, depth 0)".to_owned(),
            "Subject: /unstructuredName=ciscoasa".to_owned(),
            "Issuer: /unstructuredName=ciscoasa".to_owned(),
        ]
    );
    assert_eq!(f.leaf_subject, "/unstructuredName=ciscoasa");
    assert_eq!(f.server_name, "asa.tg.test");
    assert_eq!(f.chain, vec![leaf.clone()]);
    assert_eq!(f.chain_sha256, chain_sha256(std::slice::from_ref(&leaf)));
    assert_eq!(f.leaf_fingerprint, Fingerprint::of(leaf.as_ref()));
    assert!(f.reason.is_untrusted());
    assert!(f.detail.as_deref().unwrap_or_default().contains("UnknownIssuer"), "{:?}", f.detail);
}

#[test]
fn subject_and_issuer_match_openssl_compat_names() {
    let p = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut certs = vec![p.ciscoasa.der(), p.root.der(), p.intermediate.der(), p.leaf.der(), p.not_ca.der()];

    // Names with the characters OpenSSL escapes, an unknown OID and several string types.
    let mut params = pki::leaf_params(SERVER, pki::VALID_FROM, pki::VALID_TO);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, rcgen::DnValue::PrintableString("US".try_into().unwrap()));
    dn.push(rcgen::DnType::OrganizationName, "Org/Sub+Unit, Inc.");
    dn.push(rcgen::DnType::OrganizationalUnitName, "Ünïcödé\ttab");
    dn.push(
        rcgen::DnType::CustomDnType(vec![1, 2, 840, 113_549, 1, 9, 1]),
        rcgen::DnValue::Ia5String("ops@tg.test".try_into().unwrap()),
    );
    dn.push(rcgen::DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 55_555, 7]), "custom");
    dn.push(
        rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25]),
        rcgen::DnValue::Ia5String("tg".try_into().unwrap()),
    );
    dn.push(rcgen::DnType::CommonName, "x=y");
    params.distinguished_name = dn;
    certs.push(pki::issue(params, &p.intermediate).der());

    // A multi-valued RDN, made by openssl itself.
    let d = dir.path();
    let (ok, _, err) = openssl::run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &d.join("mv.key").display().to_string(),
        "-out",
        &d.join("mv.pem").display().to_string(),
        "-days",
        "1",
        "-utf8",
        "-multivalue-rdn",
        "-subj",
        "/C=US/O=Org+OU=a\\+b/CN=mv",
        "-set_serial",
        "9",
    ]);
    assert!(ok, "{err}");
    certs.extend(tlsgate_certstore::parse_certificates(&std::fs::read(d.join("mv.pem")).unwrap()).unwrap());

    for der in &certs {
        let ours = summarize(der.as_ref()).unwrap();
        let (subject, issuer) = openssl::subject_issuer(d, der);
        assert_eq!(ours.subject, subject);
        assert_eq!(ours.issuer, issuer);
        assert_eq!(ours.fingerprint.to_string(), openssl::fingerprint(d, der));
    }
    assert_eq!(summarize(p.ciscoasa.der().as_ref()).unwrap().subject, "/unstructuredName=ciscoasa");
    assert_eq!(
        summarize(p.root.der().as_ref()).unwrap().subject,
        "/C=US/O=tlsgate tests/CN=tlsgate test root"
    );
}

#[test]
fn pinned_self_signed_passes_for_any_name_and_only_itself() {
    let p = Pki::generate();
    let mut store = TrustStore::without_system_bundle();
    store.import("root", p.root.pem().as_bytes(), ImportAs::Ca).unwrap();
    let at = unix_time(CHECK_TIME as u64);
    let asa = p.ciscoasa.der();

    // The seed: refused, and the failure holds what pinning needs.
    let failure =
        verify_server_chain(&store.snapshot(), &asa, &[], &server_name(&Name::Host("asa.tg.test")), at)
            .expect_err("not trusted yet");
    assert_eq!((failure.code(), failure.depth), (18, 0));
    let report = store.pin("asa", &failure.chain[0]).unwrap();
    assert_eq!(report.added.len(), 1);
    assert_eq!(report.added[0].kind, TrustKind::Pinned);

    let trust = store.snapshot();
    for name in [Name::Host("asa.tg.test"), Name::Host("anything.example"), Name::Ip("198.18.0.2")] {
        assert_eq!(
            verify_server_chain(&trust, &asa, &[], &server_name(&name), at),
            Ok(Verified::Pinned { name: "asa".into() })
        );
    }
    // Another self-signed certificate with the same subject is still refused.
    let other = verify_server_chain(
        &trust,
        &p.ciscoasa_other.der(),
        &[],
        &server_name(&Name::Host("asa.tg.test")),
        at,
    )
    .expect_err("different certificate");
    assert_eq!((other.code(), other.depth), (18, 0));
    // A pinned certificate is not a CA: what it signed is not trusted.
    let mut pin_root = TrustStore::without_system_bundle();
    pin_root.import("pinned-root", p.unknown_root.pem().as_bytes(), ImportAs::Pinned).unwrap();
    let f = verify_server_chain(
        &pin_root.snapshot(),
        &p.unknown_leaf.der(),
        &[],
        &server_name(&Name::Host(SERVER)),
        at,
    )
    .expect_err("pinning is exact");
    assert_eq!(f.code(), 20);
    // A pinned certificate past its notAfter is refused as expired.
    let late = unix_time((pki::VALID_TO + 1) as u64);
    let f = verify_server_chain(&trust, &asa, &[], &server_name(&Name::Host("asa.tg.test")), late)
        .expect_err("expired");
    assert_eq!((f.code(), f.depth), (10, 0));
    // Removing the pin restores the refusal.
    store.remove("asa").unwrap();
    assert!(verify_server_chain(&store.snapshot(), &asa, &[], &server_name(&Name::Host("asa.tg.test")), at)
        .is_err());
}

#[test]
fn import_list_remove() {
    let p = Pki::generate();
    let mut store = TrustStore::without_system_bundle();
    // A PEM bundle with an intermediate CA and a server certificate, filed
    // automatically.
    let bundle = format!("junk before\n{}{}", p.intermediate.pem(), p.ciscoasa.pem());
    let r = store.import("mixed", bundle.as_bytes(), ImportAs::Auto).unwrap();
    assert_eq!(r.added.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![TrustKind::Ca, TrustKind::Pinned]);
    // A self-signed CA:TRUE certificate is pinned by `auto`: anchoring chains with
    // it is an explicit choice (`ImportAs::Ca`).
    let r = store.import("root-auto", p.root.pem().as_bytes(), ImportAs::Auto).unwrap();
    assert_eq!(r.added.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![TrustKind::Pinned]);
    store.remove("root-auto").unwrap();
    // DER, single and concatenated; re-importing is a no-op.
    let r = store.import("root", p.root.der().as_ref(), ImportAs::Ca).unwrap();
    assert_eq!(r.added.len(), 1);
    let mut der_bundle = p.intermediate.der().to_vec();
    der_bundle.extend_from_slice(p.unknown_root.der().as_ref());
    let r = store.import("der-bundle", &der_bundle, ImportAs::Ca).unwrap();
    assert_eq!((r.added.len(), r.already_present.len()), (1, 1));
    assert_eq!(store.entries().len(), 4);

    // Refusals leave the store as it was.
    for (input, needle) in [
        (&b"garbage"[..], "not a certificate"),
        (&b""[..], "no certificate found"),
        (&[0x30, 0x82, 0x01][..], "cannot be parsed"),
        (p.leaf.key_pem().as_bytes(), "PRIVATE KEY"),
    ] {
        let err = store.import("bad", input, ImportAs::Auto).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let err = store.import("leaf-as-ca", p.leaf.pem().as_bytes(), ImportAs::Ca).unwrap_err().to_string();
    assert!(err.contains("not a CA certificate") && err.contains("/CN=server.tg.test"), "{err}");
    assert_eq!(store.entries().len(), 4);

    // Find and remove by name and by fingerprint (OpenSSL's form or plain hex).
    let root_fp = Fingerprint::of(p.root.der().as_ref());
    assert_eq!(store.find(&root_fp.to_string()).len(), 1);
    assert_eq!(store.remove(&root_fp.to_string()).unwrap().len(), 1);
    let asa_fp = Fingerprint::of(p.ciscoasa.der().as_ref()).to_hex();
    assert_eq!(store.remove(&asa_fp).unwrap()[0].summary.subject, "/unstructuredName=ciscoasa");
    assert_eq!(store.remove("der-bundle").unwrap().len(), 1);
    assert!(store.remove("der-bundle").is_err());
    assert_eq!(store.entries().len(), 1);
    assert_eq!(store.snapshot().ca_count(), 1);
}

#[test]
fn system_bundle_is_on_by_default_and_switchable() {
    let p = Pki::generate();
    let mut store = TrustStore::with_system_bundle().expect("Debian's ca-certificates bundle");
    assert!(store.system_bundle_enabled());
    let system = store.system_entries().len();
    assert!(system > 50, "only {system} system CAs");
    store.import("root", p.root.pem().as_bytes(), ImportAs::Ca).unwrap();
    let some_system_ca = store.system_entries()[0].summary.fingerprint;

    let on = store.snapshot();
    assert_eq!(on.ca_count(), system + 1);
    assert!(on.is_trusted_ca(&some_system_ca));

    store.set_system_bundle(false).unwrap();
    let off = store.snapshot();
    assert_eq!(off.ca_count(), 1);
    assert!(!off.is_trusted_ca(&some_system_ca));
    assert!(store.remove(&some_system_ca.to_string()).is_err(), "system CAs are switched, not removed");

    // Imported CAs verify either way; the fixture chain never leans on the bundle.
    let at = unix_time(CHECK_TIME as u64);
    for trust in [&on, &off] {
        let name = server_name(&Name::Host(SERVER));
        assert_eq!(
            verify_server_chain(trust, &p.leaf.der(), &[p.intermediate.der()], &name, at),
            Ok(Verified::Chain)
        );
        let f = verify_server_chain(trust, &p.unknown_leaf.der(), &[], &name, at).unwrap_err();
        assert_eq!(f.reason, VerifyReason::UnableToGetIssuerCertLocally);
    }
    store.set_system_bundle(true).unwrap();
    assert_eq!(store.snapshot().ca_count(), system + 1);
}

/// A pin scoped to names holds for them only; for any other name the certificate
/// is verified as if it were not pinned, and the failure says where it is pinned.
#[test]
fn a_pin_for_names_holds_for_those_names_only() {
    let p = Pki::generate();
    let mut store = TrustStore::without_system_bundle();
    let names = vec!["asa.tg.test".to_string(), "198.18.0.2".to_string()];
    store.import_for("asa", p.ciscoasa.pem().as_bytes(), ImportAs::Pinned, &names).unwrap();
    assert_eq!(store.entries()[0].names, names);
    let trust = store.snapshot();
    let at = unix_time(CHECK_TIME as u64);
    let asa = p.ciscoasa.der();
    for name in [Name::Host("asa.tg.test"), Name::Host("ASA.tg.test"), Name::Ip("198.18.0.2")] {
        assert_eq!(
            verify_server_chain(&trust, &asa, &[], &server_name(&name), at),
            Ok(Verified::Pinned { name: "asa".into() })
        );
    }
    for name in [Name::Host("bank.tg.test"), Name::Ip("198.18.0.3")] {
        let f =
            verify_server_chain(&trust, &asa, &[], &server_name(&name), at).expect_err("not for this name");
        assert_eq!((f.code(), f.depth), (18, 0));
        let detail = f.detail.clone().unwrap_or_default();
        assert!(detail.contains("pinned as \"asa\" for asa.tg.test, 198.18.0.2 only"), "{detail}");
    }
}

/// A chain issued by the appliance's own decryption CA is refused with its own
/// reason, even when that CA is (wrongly) trusted and the leaf is pinned.
#[test]
fn a_chain_to_our_own_decryption_ca_is_refused() {
    use tlsgate_certstore::{forge_leaf, CaOptions, DecryptionCa, LeafKey};
    let p = Pki::generate();
    let now =
        unix_time(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    let ca = DecryptionCa::generate(&CaOptions::default(), now).unwrap();
    let forged =
        forge_leaf(&ca, &LeafKey::generate().unwrap(), &p.leaf.der(), &server_name(&Name::Host(SERVER)), now)
            .unwrap();
    let mut store = TrustStore::without_system_bundle();
    store.import("our-ca", ca.cert_der().as_ref(), ImportAs::Ca).unwrap();
    store.pin("forged", &forged).unwrap();
    // Without the refusal both would pass.
    assert!(
        verify_server_chain(&store.snapshot(), &forged, &[], &server_name(&Name::Host(SERVER)), now).is_ok()
    );
    store.refuse_chains_to(ca.cert_der());
    let trust = store.snapshot();
    let f =
        verify_server_chain(&trust, &forged, &[], &server_name(&Name::Host(SERVER)), now).expect_err("loop");
    assert_eq!(f.reason, VerifyReason::OwnDecryptionCa);
    assert_eq!((f.code(), f.depth), (1001, 0));
    // The CA itself presented as an intermediate.
    let f = verify_server_chain(
        &trust,
        &forged,
        &[ca.cert_der().clone()],
        &server_name(&Name::Host(SERVER)),
        now,
    )
    .expect_err("loop");
    assert_eq!(f.reason, VerifyReason::OwnDecryptionCa);
    // Other servers are not affected.
    let mut ok = TrustStore::without_system_bundle();
    ok.import("root", p.root.pem().as_bytes(), ImportAs::Ca).unwrap();
    ok.refuse_chains_to(ca.cert_der());
    assert_eq!(
        verify_server_chain(
            &ok.snapshot(),
            &p.leaf.der(),
            &[p.intermediate.der()],
            &server_name(&Name::Host(SERVER)),
            at_check()
        ),
        Ok(Verified::Chain)
    );
}

fn at_check() -> tlsgate_certstore::pki_types::UnixTime {
    unix_time(CHECK_TIME as u64)
}

/// A CRL from the leaf's issuer that lists the leaf: the chain is refused as
/// revoked (code 23, as `openssl verify -crl_check` says); another leaf of the
/// same issuer passes; a CRL that is not DER is refused when added.
#[test]
fn a_crl_revokes_the_certificates_it_lists() {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
    };
    let p = Pki::generate();
    let mut revoked_params = pki::leaf_params(SERVER, pki::VALID_FROM, pki::VALID_TO);
    revoked_params.serial_number = Some(SerialNumber::from(vec![0x1a, 0x2b, 0x3c]));
    let revoked = pki::issue(revoked_params, &p.intermediate);
    let mut good_params = pki::leaf_params(SERVER, pki::VALID_FROM, pki::VALID_TO);
    good_params.serial_number = Some(SerialNumber::from(vec![0x4d, 0x5e]));
    let good = pki::issue(good_params, &p.intermediate);
    let crl = CertificateRevocationListParams {
        this_update: time::OffsetDateTime::from_unix_timestamp(pki::VALID_FROM).unwrap(),
        next_update: time::OffsetDateTime::from_unix_timestamp(pki::VALID_TO).unwrap(),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(vec![0x1a, 0x2b, 0x3c]),
            revocation_time: time::OffsetDateTime::from_unix_timestamp(pki::VALID_FROM + 60).unwrap(),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&p.intermediate.cert, &p.intermediate.key)
    .unwrap();
    let mut store = store_of(&[p.root.der()]);
    assert!(store.add_crl(b"not a CRL").unwrap_err().to_string().starts_with("CRL refused"));
    store.add_crl(crl.der()).unwrap();
    let trust = store.snapshot();
    let name = server_name(&Name::Host(SERVER));
    let f = verify_server_chain(&trust, &revoked.der(), &[p.intermediate.der()], &name, at_check())
        .expect_err("revoked");
    assert_eq!((f.reason, f.code(), f.depth), (VerifyReason::CertRevoked, 23, 0));
    assert_eq!(f.reason.text(), "certificate revoked");
    assert_eq!(
        verify_server_chain(&trust, &good.der(), &[p.intermediate.der()], &name, at_check()),
        Ok(Verified::Chain)
    );
    // openssl agrees.
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, t: String| {
        let f = dir.path().join(n);
        std::fs::write(&f, t).unwrap();
        f
    };
    let ca = w("ca.pem", format!("{}{}", p.root.pem(), p.intermediate.pem()));
    let crls = w("crl.pem", crl.pem().unwrap());
    let leaf = w("leaf.pem", revoked.pem());
    let out = std::process::Command::new("openssl")
        .args(["verify", "-crl_check", "-attime", &pki::CHECK_TIME.to_string(), "-CAfile"])
        .arg(&ca)
        .arg("-CRLfile")
        .arg(&crls)
        .arg(&leaf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("error 23") && text.contains("certificate revoked"), "{text}");
}

/// The http distribution points of a certificate (what the control plane will
/// fetch its issuer's CRL from): ldap and https are left out, duplicates once.
#[test]
fn crl_distribution_points_are_the_http_urls() {
    use rcgen::{CrlDistributionPoint, SerialNumber};
    let p = Pki::generate();
    let mut params = pki::leaf_params(SERVER, pki::VALID_FROM, pki::VALID_TO);
    params.serial_number = Some(SerialNumber::from(vec![7]));
    params.crl_distribution_points = vec![
        CrlDistributionPoint {
            uris: vec![
                "http://crl.tg.test/intermediate.crl".into(),
                "ldap://ldap.tg.test/cn=ca?certificateRevocationList".into(),
            ],
        },
        CrlDistributionPoint {
            uris: vec!["https://crl.tg.test/i.crl".into(), "HTTP://crl.tg.test/intermediate.crl".into()],
        },
    ];
    let leaf = pki::issue(params, &p.intermediate);
    assert_eq!(
        tlsgate_certstore::crl_distribution_points(leaf.der().as_ref()),
        vec!["HTTP://crl.tg.test/intermediate.crl".to_string(), "http://crl.tg.test/intermediate.crl".into()]
    );
    assert!(tlsgate_certstore::crl_distribution_points(p.leaf.der().as_ref()).is_empty());
    assert!(tlsgate_certstore::crl_distribution_points(b"junk").is_empty());
}
