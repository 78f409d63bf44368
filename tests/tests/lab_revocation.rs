//! Revocation through the lab with both appliance processes: an origin CA that
//! revokes the server's certificate and serves its CRL over HTTP from
//! `tg-server`, which the control plane reaches over a management veth of its
//! own. Root only.
//!
//! ```text
//!   [P-client] curl ──► dataplane ──► [P-server] nginx :443 (leaf with CRL DP http://MGMT.2/crl/…)
//!   root ns: tlsgate-control ──P-mgt MGMT.1/30 ⇄ P-m0 MGMT.2/30──► nginx :80 /crl/intermediate.crl
//! ```

use std::time::{Duration, Instant};

use tlsgate_tests::control::{write, Control};
use tlsgate_tests::{
    netns_run, require_root, run_cmd, serial, Dataplane, Finished, Lab, Nginx, NginxTls, TempDir,
};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

fn ip(args: &[&str]) {
    run_cmd(std::process::Command::new("ip").args(args), Duration::from_secs(10)).expect_success("ip");
}

/// The management veth's root end: deleted when dropped (and its peer with it).
struct Veth(String);

impl Veth {
    fn clear(name: &str) {
        let _ =
            run_cmd(std::process::Command::new("ip").args(["link", "del", name]), Duration::from_secs(10));
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        Veth::clear(&self.0);
    }
}

const REVOKED_SERIAL: &[u8] = &[0x52, 0x45, 0x56];

/// The lab, the management veth, nginx serving a leaf with serial `serial`
/// (whose distribution points are the CRL on the management address and a
/// loopback URL) and the CRL revoking [`REVOKED_SERIAL`], both appliance
/// processes with `settings` in the Decrypt-All policy.
struct Setup {
    dp: Dataplane,
    c: Control,
    nginx: Nginx,
    veth: Veth,
    lab: Lab,
    mgmt: String,
    ca: std::path::PathBuf,
    _files: TempDir,
}

impl Setup {
    fn up(prefix: &str, net: &str, mgmt: &str, serial: &[u8], settings: &str) -> Setup {
        use rcgen::{
            CertificateRevocationListParams, CrlDistributionPoint, KeyIdMethod, RevocationReason,
            RevokedCertParams, SerialNumber,
        };
        let lab = Lab::up(prefix, net);
        let (mgt, m0) = (format!("{prefix}-mgt"), format!("{prefix}-m0"));
        Veth::clear(&mgt); // a crashed run's
        ip(&["link", "add", &mgt, "type", "veth", "peer", "name", &m0, "netns", &lab.server_ns()]);
        let veth = Veth(mgt.clone());
        ip(&["addr", "add", &format!("{mgmt}.1/30"), "dev", &mgt]);
        ip(&["link", "set", &mgt, "up"]);
        ip(&["-n", &lab.server_ns(), "addr", "add", &format!("{mgmt}.2/30"), "dev", &m0]);
        ip(&["-n", &lab.server_ns(), "link", "set", &m0, "up"]);

        let files = TempDir::new("revocation");
        let www = files.join("www");
        std::fs::create_dir_all(www.join("crl")).unwrap();
        std::fs::write(www.join("index.html"), "revocation lab\n").unwrap();
        let origin = pki::Pki::generate();
        let mut params = pki::leaf_params(pki::SERVER, pki::VALID_FROM, pki::VALID_TO);
        params.serial_number = Some(SerialNumber::from(serial.to_vec()));
        params.crl_distribution_points = vec![
            CrlDistributionPoint { uris: vec![format!("http://{mgmt}.2/crl/intermediate.crl")] },
            CrlDistributionPoint { uris: vec!["http://127.0.0.1:9469/metrics".into()] },
        ];
        let leaf = pki::issue(params, &origin.intermediate);
        let now = time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(9u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(REVOKED_SERIAL.to_vec()),
                revocation_time: now - time::Duration::minutes(30),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&origin.intermediate.cert, &origin.intermediate.key)
        .unwrap();
        std::fs::write(www.join("crl/intermediate.crl"), crl.der()).unwrap();

        let chain = write(files.path(), "chain.pem", &format!("{}{}", leaf.pem(), origin.intermediate.pem()));
        let key = write(files.path(), "leaf.key", &leaf.key_pem());
        let root = write(files.path(), "root.pem", &origin.root.pem());
        let extra = format!("listen {mgmt}.2:80;");
        let nginx = Nginx::start_with(&lab, &www, Some(&NginxTls { cert: chain, key, extra }));
        // The lab's addresses are not globally routable: the management network
        // is named as one that may serve CRLs.
        let c = Control::start(prefix, &format!("crl_networks = [\"{mgmt}.0/30\"]\n"));
        c.ok(&["ca", "generate"]);
        c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
        let policy = format!(
            r#"{{ "rules": [ {{ "name": "Decrypt-All", "action": "decrypt" }} ], "settings": {{ {settings} }} }}"#
        );
        let policy = write(c.dir.path(), "policy.json", &policy);
        c.ok(&["policy", "load", policy.to_str().unwrap()]);
        c.ok(&["policy", "commit"]);
        let ca = c.dir.join("decryption-ca.pem");
        c.ok(&["ca", "export", "--out", ca.to_str().unwrap()]);
        let dp = Dataplane::start(&lab, &format!("[tls]\nhandshake_timeout_s = 10\n{}", c.dataplane_toml()));
        c.wait_applied(Duration::from_secs(15));
        Setup { dp, c, nginx, veth, lab, mgmt: mgmt.to_string(), ca, _files: files }
    }

    /// curl from the client, trusting only the decryption CA.
    fn curl(&self) -> Finished {
        netns_run(
            &self.lab.client_ns(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                self.ca.to_str().unwrap(),
                "--resolve",
                &format!("{}:443:{}", pki::SERVER, self.lab.server_addr()),
                &format!("https://{}/", pki::SERVER),
            ],
            Duration::from_secs(20),
        )
    }

    /// Waits until `tlsgatectl status` shows the CRL cached and the loopback
    /// point refused (the fetcher takes one point at a time); the status text.
    fn wait_cached(&self) -> String {
        let want = format!("http://{}.2/crl/intermediate.crl cached, 1 revoked", self.mgmt);
        let refused = "http://127.0.0.1:9469/metrics failed: 127.0.0.1:9469 is a loopback address";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.c.ok(&["status"]);
            if s.contains(&want) && s.contains(refused) {
                return s;
            }
            assert!(Instant::now() < deadline, "CRL not fetched:\n{s}\n{}", self.c.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// curl until it succeeds (`ok`) or fails, within 15 s (the snapshot with the
    /// CRL reaching the dataplane).
    fn curl_until(&self, ok: bool) -> Finished {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.curl();
            if out.status.success() == ok {
                return out;
            }
            assert!(Instant::now() < deadline, "curl still {:?}:\n{}", out, self.c.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The verify codes of the abort events so far.
    fn abort_codes(&self) -> Vec<u64> {
        self.c
            .logged_events()
            .iter()
            .filter(|e| e["kind"] == "abort")
            .map(|e| {
                assert_eq!(e["leg"], "server", "{e}");
                e["verify_code"].as_u64().unwrap_or(0)
            })
            .collect()
    }

    fn down(self) {
        let access = std::fs::read_to_string(self.nginx.access_log_path()).unwrap_or_default();
        assert!(
            access.contains(&format!("{}.1 ", self.mgmt)) && access.contains("/crl/intermediate.crl"),
            "nginx served the CRL to the control plane's management address: {access}"
        );
        let Setup { dp, c, nginx, veth, lab, .. } = self;
        drop(dp);
        drop(nginx);
        drop(c);
        drop(veth);
        lab.teardown();
    }
}

/// The first connection to a server whose certificate names a CRL distribution
/// point is decrypted (status unknown, allowed by default) and reports the
/// point; the control plane fetches the CRL from `tg-server` over its
/// management veth, checks it against the path and sends it to the dataplane;
/// the next connection is a server-leg abort with `certificate revoked (code
/// 23)`. A distribution point on loopback is refused, naming why.
#[test]
fn a_crl_fetched_by_the_control_plane_revokes_the_server() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let s = Setup::up("tgt21", "198.18.31", "198.19.31", REVOKED_SERIAL, "");
    let first = s.curl();
    assert!(first.status.success(), "unknown status, allowed: {first:?}\n{}", s.dp.log_text());
    let status = s.wait_cached();
    assert!(
        status.contains("http://127.0.0.1:9469/metrics failed: 127.0.0.1:9469 is a loopback address"),
        "{status}"
    );
    s.curl_until(false);
    s.c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "abort"));
    assert_eq!(s.abort_codes().first(), Some(&23));
    assert!(s.c.proxy_log().contains("certificate revoked (code 23, depth 0)"), "{}", s.c.proxy_log());
    s.down();
}

/// With `unknown_status = block`, the first connection to a server whose
/// revocation status nobody proved yet is a server-leg abort (`unable to get
/// certificate CRL`, code 3) and still reports its distribution point; once
/// the control plane has the issuer's CRL (which does not list this server),
/// the server is decrypted.
#[test]
fn unknown_status_block_waits_for_the_crl() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let settings = r#""certificate_actions": { "unknown_status": "block" }"#;
    let s = Setup::up("tgt22", "198.18.32", "198.19.32", &[0x47, 0x4f, 0x4f, 0x44], settings);
    let first = s.curl();
    assert!(!first.status.success(), "status unknown: blocked");
    s.c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "abort"));
    assert_eq!(s.abort_codes(), vec![3]);
    assert!(
        s.c.proxy_log().contains("unable to get certificate CRL (code 3, depth 0)"),
        "{}",
        s.c.proxy_log()
    );
    s.wait_cached();
    let ok = s.curl_until(true);
    assert!(ok.stdout.contains("revocation lab"), "{ok:?}");
    s.down();
}
