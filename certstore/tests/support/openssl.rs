//! The reference: Debian's `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use tlsgate_certstore::pem_encode;
use tlsgate_certstore::pki_types::CertificateDer;

/// What `openssl verify` said: OK, or its first `error N at D depth lookup: TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Error { code: u32, depth: usize, text: String },
}

/// Runs `openssl` with `args`, returning (status ok, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the `openssl` command is needed by these tests (Debian package openssl)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes certificates as one PEM file.
pub fn write_pem(dir: &Path, name: &str, certs: &[CertificateDer<'_>]) -> PathBuf {
    let path = dir.join(name);
    let text: String = certs.iter().map(|c| pem_encode("CERTIFICATE", c.as_ref())).collect();
    std::fs::write(&path, text).expect("write PEM");
    path
}

/// The name `openssl verify` checks.
pub enum Check<'a> {
    Host(&'a str),
    Ip(&'a str),
    None,
}

/// `openssl verify -CAfile <trusted> [-untrusted <untrusted>] -purpose sslserver
/// [-verify_hostname h | -verify_ip ip] [-attime t] [extra] leaf.pem`, with no
/// system store.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    dir: &Path,
    trusted: &[CertificateDer<'_>],
    untrusted: &[CertificateDer<'_>],
    leaf: &CertificateDer<'_>,
    check: Check<'_>,
    attime: Option<i64>,
    extra: &[&str],
) -> Verdict {
    let ca = write_pem(dir, "ca.pem", trusted);
    let leaf_path = write_pem(dir, "leaf.pem", std::slice::from_ref(leaf));
    let mut args: Vec<String> =
        vec!["verify".into(), "-no-CApath".into(), "-no-CAstore".into(), "-CAfile".into()];
    args.push(ca.display().to_string());
    if !untrusted.is_empty() {
        args.push("-untrusted".into());
        args.push(write_pem(dir, "untrusted.pem", untrusted).display().to_string());
    }
    args.extend(["-purpose".into(), "sslserver".into()]);
    match check {
        Check::Host(h) => args.extend(["-verify_hostname".into(), h.into()]),
        Check::Ip(ip) => args.extend(["-verify_ip".into(), ip.into()]),
        Check::None => {}
    }
    if let Some(t) = attime {
        args.extend(["-attime".into(), t.to_string()]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(leaf_path.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = run(&argv);
    parse_verify_output(ok, &stdout, &stderr)
}

/// Parses `openssl verify`'s output: the first `error N at D depth lookup: TEXT`.
pub fn parse_verify_output(ok: bool, stdout: &str, stderr: &str) -> Verdict {
    for line in stderr.lines().chain(stdout.lines()) {
        let Some(rest) = line.trim().strip_prefix("error ") else { continue };
        let mut words = rest.splitn(2, " at ");
        let (Some(code), Some(rest)) = (words.next(), words.next()) else { continue };
        let Ok(code) = code.trim().parse::<u32>() else { continue };
        let Some((depth, text)) = rest.split_once(" depth lookup: ") else { continue };
        let Ok(depth) = depth.trim().parse::<usize>() else { continue };
        return Verdict::Error { code, depth, text: text.trim().to_owned() };
    }
    assert!(
        ok && stdout.contains(": OK"),
        "openssl verify neither OK nor an error line:\n{stdout}\n{stderr}"
    );
    Verdict::Ok
}

/// `openssl x509 -noout -subject -issuer -nameopt compat` → (subject, issuer).
pub fn subject_issuer(dir: &Path, cert: &CertificateDer<'_>) -> (String, String) {
    let path = write_pem(dir, "name.pem", std::slice::from_ref(cert));
    let (ok, out, err) = run(&[
        "x509",
        "-in",
        &path.display().to_string(),
        "-noout",
        "-subject",
        "-issuer",
        "-nameopt",
        "compat",
    ]);
    assert!(ok, "openssl x509: {err}");
    let mut subject = None;
    let mut issuer = None;
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("subject=") {
            subject = Some(s.to_owned());
        } else if let Some(s) = line.strip_prefix("issuer=") {
            issuer = Some(s.to_owned());
        }
    }
    (subject.expect("subject line"), issuer.expect("issuer line"))
}

/// `openssl x509 -noout -fingerprint -sha256` → `AB:CD:...`.
pub fn fingerprint(dir: &Path, cert: &CertificateDer<'_>) -> String {
    let path = write_pem(dir, "fp.pem", std::slice::from_ref(cert));
    let (ok, out, err) =
        run(&["x509", "-in", &path.display().to_string(), "-noout", "-fingerprint", "-sha256"]);
    assert!(ok, "openssl x509: {err}");
    out.trim().split_once('=').expect("fingerprint line").1.to_owned()
}

/// `openssl x509 -noout -text`.
pub fn text(dir: &Path, cert: &CertificateDer<'_>) -> String {
    let path = write_pem(dir, "text.pem", std::slice::from_ref(cert));
    let (ok, out, err) = run(&["x509", "-in", &path.display().to_string(), "-noout", "-text"]);
    assert!(ok, "openssl x509: {err}");
    out
}
