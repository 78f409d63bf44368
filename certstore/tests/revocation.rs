//! Revocation of server certificates: stapled OCSP responses made by `openssl
//! ocsp` (good, revoked, unknown, stale, foreign, SHA-1, delegated responder), and
//! the demand for a known status (`require_status`: a good staple or a fresh CRL).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateRevocationListParams, ExtendedKeyUsagePurpose, KeyIdMethod, KeyUsagePurpose, SerialNumber,
};
use support::pki::{self, Issued, Pki, SERVER};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName};
use tlsgate_certstore::{
    unix_time, verify_server_chain_checking, ImportAs, RevocationCheck, TrustStore, Verified, VerifyFailure,
    VerifyReason,
};

const GOOD_SERIAL: &[u8] = &[0x4d, 0x5e];
const REVOKED_SERIAL: &[u8] = &[0x1a, 0x2b, 0x3c];

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn leaf(serial: &[u8], by: &Issued) -> Issued {
    let mut params = pki::leaf_params(SERVER, pki::VALID_FROM, pki::VALID_TO);
    params.serial_number = Some(SerialNumber::from(serial.to_vec()));
    pki::issue(params, by)
}

fn hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02X}")).collect()
}

/// A responder workspace: the intermediate's `index.txt` (good and revoked
/// serials), and files for `openssl ocsp`.
struct Responder {
    dir: tempfile::TempDir,
}

impl Responder {
    fn new(p: &Pki) -> Responder {
        let dir = tempfile::tempdir().unwrap();
        let r = Responder { dir };
        let index = format!(
            "V\t391231235959Z\t\t{}\tunknown\t/CN={SERVER}\nR\t391231235959Z\t200101000000Z,keyCompromise\t{}\tunknown\t/CN={SERVER}\n",
            hex(GOOD_SERIAL),
            hex(REVOKED_SERIAL)
        );
        r.write("index.txt", &index);
        r.write("issuer.pem", &p.intermediate.pem());
        r.write("issuer.key", &p.intermediate.key_pem());
        r
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl ocsp`'s response about `cert`, signed by `signer` (default: the
    /// issuer) with `extra` options.
    fn respond(&self, cert: &Issued, signer: Option<&Issued>, extra: &[&str]) -> Vec<u8> {
        let leaf = self.write("leaf.pem", &cert.pem());
        let (rsigner, rkey) = match signer {
            Some(s) => (self.write("signer.pem", &s.pem()), self.write("signer.key", &s.key_pem())),
            None => (self.path("issuer.pem"), self.path("issuer.key")),
        };
        run(Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-issuer"])
            .arg(self.path("issuer.pem"))
            .arg("-cert")
            .arg(&leaf)
            .arg("-reqout")
            .arg(self.path("req.der")));
        run(Command::new("openssl")
            .args(["ocsp", "-index"])
            .arg(self.path("index.txt"))
            .arg("-CA")
            .arg(self.path("issuer.pem"))
            .arg("-rsigner")
            .arg(&rsigner)
            .arg("-rkey")
            .arg(&rkey)
            .arg("-reqin")
            .arg(self.path("req.der"))
            .arg("-respout")
            .arg(self.path("resp.der"))
            .args(extra));
        std::fs::read(self.path("resp.der")).unwrap()
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("openssl");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// What `openssl ocsp -respin` reads from `resp` about `cert` ("good", "revoked", "unknown").
fn openssl_reads(r: &Responder, resp: &[u8], cert: &Issued, chain: &Path) -> String {
    let resp_path = r.dir.path().join("check.der");
    std::fs::write(&resp_path, resp).unwrap();
    let leaf = r.write("check-leaf.pem", &cert.pem());
    let out = Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-respin"])
        .arg(&resp_path)
        .arg("-issuer")
        .arg(r.path("issuer.pem"))
        .arg("-cert")
        .arg(&leaf)
        .arg("-CAfile")
        .arg(chain)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn store(p: &Pki) -> TrustStore {
    let mut store = TrustStore::without_system_bundle();
    store.import("root", p.root.der().as_ref(), ImportAs::Ca).unwrap();
    store
}

fn check(
    store: &TrustStore,
    p: &Pki,
    cert: &Issued,
    staple: &[u8],
    require_status: bool,
    at: i64,
) -> Result<Verified, Box<VerifyFailure>> {
    let name = ServerName::try_from(SERVER).unwrap();
    let intermediates: [CertificateDer<'static>; 1] = [p.intermediate.der()];
    verify_server_chain_checking(
        &store.snapshot(),
        &cert.der(),
        &intermediates,
        &name,
        unix_time(at as u64),
        RevocationCheck { staple, require_status },
    )
}

fn reason(r: Result<Verified, Box<VerifyFailure>>) -> (VerifyReason, String) {
    let f = r.expect_err("refused");
    (f.reason, f.detail.unwrap_or_default())
}

/// A stapled response says good or revoked when the issuer signed it, it names the
/// certificate and it is fresh; anything else proves nothing — accepted as unknown
/// when no status is required, refused with code 3 when one is. `openssl ocsp`
/// reads the same status from each response.
#[test]
fn stapled_ocsp_responses() {
    let p = Pki::generate();
    let store = store(&p);
    let r = Responder::new(&p);
    let chain = r.write("chain.pem", &format!("{}{}", p.root.pem(), p.intermediate.pem()));
    let good = leaf(GOOD_SERIAL, &p.intermediate);
    let revoked = leaf(REVOKED_SERIAL, &p.intermediate);
    let unlisted = leaf(&[0x77], &p.intermediate);
    let t = now();

    let good_resp = r.respond(&good, None, &["-ndays", "1"]);
    assert!(openssl_reads(&r, &good_resp, &good, &chain).contains(": good"));
    assert_eq!(check(&store, &p, &good, &good_resp, true, t), Ok(Verified::Chain));

    let revoked_resp = r.respond(&revoked, None, &["-ndays", "1"]);
    assert!(openssl_reads(&r, &revoked_resp, &revoked, &chain).contains(": revoked"));
    for require in [false, true] {
        let (why, detail) = reason(check(&store, &p, &revoked, &revoked_resp, require, t));
        assert_eq!(
            (why, why.code(), detail.as_str()),
            (VerifyReason::CertRevoked, 23, "OCSP staple: revoked")
        );
    }
    // Revoked says more than a name that does not match (no `untrust` for it).
    let other = ServerName::try_from(pki::OTHER).unwrap();
    let f = verify_server_chain_checking(
        &store.snapshot(),
        &revoked.der(),
        &[p.intermediate.der()],
        &other,
        unix_time(t as u64),
        RevocationCheck { staple: &revoked_resp, require_status: false },
    )
    .expect_err("refused");
    assert_eq!(f.reason, VerifyReason::CertRevoked);
    // Revoked stays revoked when the response is old.
    let (why, _) = reason(check(&store, &p, &revoked, &revoked_resp, false, t + 10 * 86_400));
    assert_eq!(why, VerifyReason::CertRevoked);

    // Unknown to the responder; stale; about another certificate; SHA-1; signed by
    // a stranger: accepted when no status is required, code 3 when one is.
    let unknown_resp = r.respond(&unlisted, None, &["-ndays", "1"]);
    assert!(openssl_reads(&r, &unknown_resp, &unlisted, &chain).contains(": unknown"));
    let stranger_root =
        pki::self_signed(pki::leaf_params("stranger.tg.test", pki::VALID_FROM, pki::VALID_TO));
    let sha1_resp = r.respond(&good, None, &["-ndays", "1", "-rmd", "sha1"]);
    let stranger_resp = r.respond(&good, Some(&stranger_root), &["-ndays", "1"]);
    let cases: [(&str, &Issued, &[u8], i64, &str); 6] = [
        ("unknown", &unlisted, &unknown_resp, t, "does not know the certificate"),
        ("stale", &good, &good_resp, t + 3 * 86_400, "stale"),
        ("another certificate", &unlisted, &good_resp, t, "no response for this certificate"),
        ("SHA-1", &good, &sha1_resp, t, "signed with 1.2.840.10045.4.1"),
        ("stranger", &good, &stranger_resp, t, "not signed by the issuer"),
        ("damaged", &good, &good_resp[..good_resp.len() - 3], t, "truncated"),
    ];
    for (what, cert, staple, at, why) in cases {
        assert_eq!(
            check(&store, &p, cert, staple, false, at),
            Ok(Verified::Chain),
            "{what}: no status required"
        );
        let (reason_now, detail) = reason(check(&store, &p, cert, staple, true, at));
        assert_eq!((reason_now, reason_now.code()), (VerifyReason::UnableToGetCrl, 3), "{what}");
        assert!(detail.contains(why) && detail.contains("no CRL"), "{what}: {detail}");
    }
    let (_, detail) = reason(check(&store, &p, &good, &[], true, t));
    assert_eq!(detail, "no OCSP staple, no CRL");
}

/// A responder certificate the issuer signed for id-kp-OCSPSigning may sign for
/// it; the same key without that purpose may not.
#[test]
fn delegated_responders_need_the_ocsp_signing_purpose() {
    let p = Pki::generate();
    let store = store(&p);
    let r = Responder::new(&p);
    let good = leaf(GOOD_SERIAL, &p.intermediate);
    let responder = |eku: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = pki::leaf_params("ocsp.tg.test", pki::VALID_FROM, pki::VALID_TO);
        params.extended_key_usages = eku;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        pki::issue(params, &p.intermediate)
    };
    let delegated = responder(vec![ExtendedKeyUsagePurpose::OcspSigning]);
    let resp = r.respond(&good, Some(&delegated), &["-ndays", "1"]);
    assert_eq!(check(&store, &p, &good, &resp, true, now()), Ok(Verified::Chain));

    let server_only = responder(vec![ExtendedKeyUsagePurpose::ServerAuth]);
    let resp = r.respond(&good, Some(&server_only), &["-ndays", "1"]);
    let (why, detail) = reason(check(&store, &p, &good, &resp, true, now()));
    assert_eq!(why, VerifyReason::UnableToGetCrl);
    assert!(detail.contains("not signed by the issuer"), "{detail}");
}

/// Without a staple, a fresh CRL of the issuer proves the status (listed: code
/// 23; not listed: good); a CRL past its nextUpdate proves nothing.
#[test]
fn a_fresh_crl_proves_the_status() {
    let p = Pki::generate();
    let good = leaf(GOOD_SERIAL, &p.intermediate);
    let t = now();
    let crl = |next_update: i64| {
        CertificateRevocationListParams {
            this_update: time::OffsetDateTime::from_unix_timestamp(t - 86_400).unwrap(),
            next_update: time::OffsetDateTime::from_unix_timestamp(next_update).unwrap(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&p.intermediate.cert, &p.intermediate.key)
        .unwrap()
    };
    let mut fresh = store(&p);
    fresh.add_crl(crl(t + 86_400).der()).unwrap();
    assert_eq!(check(&fresh, &p, &good, &[], true, t), Ok(Verified::Chain));

    let mut stale = store(&p);
    stale.add_crl(crl(t - 3600).der()).unwrap();
    let (why, detail) = reason(check(&stale, &p, &good, &[], true, t));
    assert_eq!(why, VerifyReason::UnableToGetCrl);
    assert!(detail.contains("no usable CRL"), "{detail}");
    assert_eq!(check(&stale, &p, &good, &[], false, t), Ok(Verified::Chain), "not required: accepted");
}

/// A fetched CRL is kept only when the issuer of a certificate of the verified
/// path issued and signed it, and it is current: an impostor's list with the
/// same issuer name — also when the server appended the impostor to its chain —
/// a stranger's list, an expired list and bytes that are no CRL are refused,
/// naming why.
#[test]
fn fetched_crls_are_checked_against_the_path() {
    let p = Pki::generate();
    let store = store(&p);
    let trust = store.snapshot();
    let good = leaf(GOOD_SERIAL, &p.intermediate);
    let t = now();
    let name = ServerName::try_from(SERVER).unwrap();
    let crl_by = |issuer: &Issued, next_update: i64| {
        CertificateRevocationListParams {
            this_update: time::OffsetDateTime::from_unix_timestamp(t - 60).unwrap(),
            next_update: time::OffsetDateTime::from_unix_timestamp(next_update).unwrap(),
            crl_number: SerialNumber::from(2u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer.cert, &issuer.key)
        .unwrap()
    };
    // An impostor: the intermediate's name, its own key, appended by the server.
    let mut params = pki::leaf_params("x", pki::VALID_FROM, pki::VALID_TO);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name = p.intermediate.cert.params().distinguished_name.clone();
    let impostor = pki::self_signed(params.clone());
    let presented = [p.intermediate.der(), impostor.der()];
    let path = tlsgate_certstore::verified_path(&trust, &good.der(), &presented, &name, unix_time(t as u64))
        .unwrap()
        .expect("a path through a CA");
    assert_eq!(path.certs, vec![good.der(), p.intermediate.der()], "the impostor is not on the path");
    assert_eq!(path.anchor, p.root.der());

    let facts = tlsgate_certstore::check_crl(&path, crl_by(&p.intermediate, t + 86_400).der(), t).unwrap();
    assert_eq!((facts.this_update, facts.next_update, facts.revoked), (t - 60, t + 86_400, 0));
    assert!(facts.issuer.contains("tlsgate test intermediate"), "{}", facts.issuer);
    // The root's list covers the intermediate (the root anchors the path).
    tlsgate_certstore::check_crl(&path, crl_by(&p.root, t + 86_400).der(), t).unwrap();

    let e = tlsgate_certstore::check_crl(&path, crl_by(&impostor, t + 86_400).der(), t).unwrap_err();
    assert!(e.to_string().contains("not signed by"), "{e}");
    let e = tlsgate_certstore::check_crl(&path, crl_by(&p.intermediate, t - 10).der(), t).unwrap_err();
    assert!(e.to_string().contains("expired: nextUpdate"), "{e}");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "stranger");
    let stranger = pki::self_signed(params);
    let e = tlsgate_certstore::check_crl(&path, crl_by(&stranger, t + 86_400).der(), t).unwrap_err();
    assert!(e.to_string().contains("the issuer of no certificate of the path"), "{e}");
    assert!(tlsgate_certstore::check_crl(&path, b"<html>", t).is_err());
}
