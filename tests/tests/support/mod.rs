//! Helpers the lab test files share: the test PKI, an origin for
//! `server.tg.test` and the appliance's decryption CA as files, curl through the
//! appliance.

#![allow(dead_code)]

use std::time::Duration;

use tlsgate_tests::{netns_run, Finished, Lab, TempDir};

#[allow(dead_code)]
#[path = "../../../certstore/tests/support/pki.rs"]
pub mod pki;

pub fn write_file(files: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = files.join(name);
    std::fs::write(&p, text).expect("writing a test file");
    p
}

/// A fresh decryption CA in `files`: (certificate, key) paths.
pub fn decryption_ca(files: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = tlsgate_certstore::DecryptionCa::generate(
        &tlsgate_certstore::CaOptions::default(),
        tlsgate_certstore::pki_types::UnixTime::now(),
    )
    .expect("decryption CA");
    (
        write_file(files, "decryption-ca.pem", &ca.cert_pem()),
        write_file(files, "decryption-ca.key", &ca.key_pkcs8_pem()),
    )
}

/// An origin for `server.tg.test` (root → intermediate → leaf naming the name and
/// the lab server's address) and a decryption CA, as files in `files`.
pub struct Origin {
    /// nginx's certificate chain and key.
    pub tls: tlsgate_tests::NginxTls,
    /// The origin's root (the dataplane trusts it).
    pub root: std::path::PathBuf,
    /// The decryption CA (clients trust it).
    pub ca_cert: std::path::PathBuf,
    /// Its key.
    pub ca_key: std::path::PathBuf,
}

impl Origin {
    /// Generated into `files`.
    pub fn new(lab: &Lab, files: &TempDir) -> Origin {
        Origin::with_names(lab, files, &[])
    }

    /// As [`Origin::new`], the server's certificate naming `names` too.
    pub fn with_names(lab: &Lab, files: &TempDir, names: &[&str]) -> Origin {
        let origin = pki::Pki::generate();
        let mut params = pki::leaf_params(pki::SERVER, pki::VALID_FROM, pki::VALID_TO);
        params.subject_alt_names.push(rcgen::SanType::IpAddress(lab.server_addr().parse().expect("address")));
        for name in names {
            params.subject_alt_names.push(rcgen::SanType::DnsName((*name).try_into().expect("a DNS name")));
        }
        let leaf = pki::issue(params, &origin.intermediate);
        let write = |name: &str, text: &str| write_file(files, name, text);
        let cert = write("server-chain.pem", &format!("{}{}", leaf.pem(), origin.intermediate.pem()));
        let key = write("server.key", &leaf.key_pem());
        let root = write("origin-root.pem", &origin.root.pem());
        let (ca_cert, ca_key) = decryption_ca(files);
        Origin { tls: tlsgate_tests::NginxTls { cert, key, extra: String::new() }, root, ca_cert, ca_key }
    }

    /// The dataplane's `[intercept]` and `[tls]`: port 443 decrypted, trusting the
    /// origin's root only.
    pub fn dataplane_toml(&self) -> String {
        self.dataplane_toml_with("")
    }

    /// As [`Origin::dataplane_toml`], the flows chosen by the policy in `policy`.
    pub fn dataplane_toml_with_policy(&self, policy: &std::path::Path) -> String {
        format!(
            "[policy]\nfile = {:?}\n[tls]\nca_cert = {:?}\nca_key = {:?}\ntrust = [{:?}]\n\
             system_bundle = false\nprofile = \"strong\"\n",
            policy.display().to_string(),
            self.ca_cert.display().to_string(),
            self.ca_key.display().to_string(),
            self.root.display().to_string()
        )
    }

    /// As [`Origin::dataplane_toml`], with more lines in `[intercept]`.
    pub fn dataplane_toml_with(&self, intercept: &str) -> String {
        format!(
            "[intercept]\nports = [443]\n{intercept}\n[tls]\nca_cert = {:?}\nca_key = {:?}\ntrust = [{:?}]\n\
             system_bundle = false\nprofile = \"strong\"\n",
            self.ca_cert.display().to_string(),
            self.ca_key.display().to_string(),
            self.root.display().to_string()
        )
    }
}

/// `curl https://server.tg.test/` from the client namespace, from `source` (an
/// address of the client namespace; `None`: its first), trusting only the
/// decryption CA: decrypted and re-encrypted, or it fails.
pub fn curl_https(lab: &Lab, origin: &Origin, source: Option<&str>, timeout_s: u64) -> Finished {
    let resolve = format!("{}:443:{}", pki::SERVER, lab.server_addr());
    let ca = origin.ca_cert.display().to_string();
    let url = format!("https://{}/", pki::SERVER);
    let max = timeout_s.to_string();
    let mut args =
        vec!["curl", "-sS", "--max-time", &max, "--cacert", &ca, "--resolve", &resolve, "-o", "/dev/null"];
    args.extend(["-w", "%{http_code}"]);
    if let Some(s) = source {
        args.extend(["--interface", s]);
    }
    args.push(&url);
    netns_run(&lab.client_ns(), &args, Duration::from_secs(timeout_s + 5))
}
