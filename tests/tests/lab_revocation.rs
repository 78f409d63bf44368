//! Revocation through the lab with both appliance processes: an origin CA that
//! revokes the server's certificate and serves its CRL over HTTP from
//! `tg-server`, which the control plane reaches over a management veth of its
//! own. Root only.
//!
//! ```text
//!   [P-client] curl ──► dataplane ──► [P-server] nginx :443 (revoked leaf, CRL DP http://MGMT.2/crl/…)
//!   root ns: tlsgate-control ──P-mgt MGMT.1/30 ⇄ P-m0 MGMT.2/30──► nginx :80 /crl/intermediate.crl
//! ```

use std::time::{Duration, Instant};

use tlsgate_tests::control::{write, Control, DECRYPT_ALL};
use tlsgate_tests::{netns_run, require_root, run_cmd, serial, Dataplane, Lab, Nginx, NginxTls, TempDir};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

const MGMT: &str = "198.19.31";

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

/// The first connection to a server whose certificate names a CRL distribution
/// point is decrypted (status unknown, allowed by default) and reports the
/// point; the control plane fetches the CRL from `tg-server` over its
/// management veth, checks it against the chain and sends it to the dataplane;
/// the next connection is a server-leg abort with `certificate revoked (code
/// 23)`. A distribution point on loopback is refused, naming why.
#[test]
fn a_crl_fetched_by_the_control_plane_revokes_the_server() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    use rcgen::{
        CertificateRevocationListParams, CrlDistributionPoint, KeyIdMethod, RevocationReason,
        RevokedCertParams, SerialNumber,
    };
    let lab = Lab::up("tgt21", "198.18.31");
    let (mgt, m0) = (format!("{}-mgt", lab.prefix()), format!("{}-m0", lab.prefix()));
    Veth::clear(&mgt); // a crashed run's
    ip(&["link", "add", &mgt, "type", "veth", "peer", "name", &m0, "netns", &lab.server_ns()]);
    let veth = Veth(mgt.clone());
    ip(&["addr", "add", &format!("{MGMT}.1/30"), "dev", &mgt]);
    ip(&["link", "set", &mgt, "up"]);
    ip(&["-n", &lab.server_ns(), "addr", "add", &format!("{MGMT}.2/30"), "dev", &m0]);
    ip(&["-n", &lab.server_ns(), "link", "set", &m0, "up"]);

    let files = TempDir::new("revocation");
    let www = files.join("www");
    std::fs::create_dir_all(www.join("crl")).unwrap();
    std::fs::write(www.join("index.html"), "revocation lab\n").unwrap();
    let origin = pki::Pki::generate();
    let serial = vec![0x52, 0x45, 0x56];
    let mut params = pki::leaf_params(pki::SERVER, pki::VALID_FROM, pki::VALID_TO);
    params.serial_number = Some(SerialNumber::from(serial.clone()));
    params.crl_distribution_points = vec![
        CrlDistributionPoint { uris: vec![format!("http://{MGMT}.2/crl/intermediate.crl")] },
        CrlDistributionPoint { uris: vec!["http://127.0.0.1:9469/metrics".into()] },
    ];
    let revoked = pki::issue(params, &origin.intermediate);
    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(9u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(serial),
            revocation_time: now - time::Duration::minutes(30),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&origin.intermediate.cert, &origin.intermediate.key)
    .unwrap();
    std::fs::write(www.join("crl/intermediate.crl"), crl.der()).unwrap();

    let chain = write(files.path(), "chain.pem", &format!("{}{}", revoked.pem(), origin.intermediate.pem()));
    let key = write(files.path(), "leaf.key", &revoked.key_pem());
    let root = write(files.path(), "root.pem", &origin.root.pem());
    let extra = format!("listen {MGMT}.2:80;");
    let nginx = Nginx::start_with(&lab, &www, Some(&NginxTls { cert: chain, key, extra }));
    let c = Control::start("revocation", "");
    c.ok(&["ca", "generate"]);
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    let policy = write(c.dir.path(), "policy.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let ca = c.dir.join("decryption-ca.pem");
    c.ok(&["ca", "export", "--out", ca.to_str().unwrap()]);
    let dp = Dataplane::start(&lab, &format!("[tls]\nhandshake_timeout_s = 10\n{}", c.dataplane_toml()));
    c.wait_applied(Duration::from_secs(15));

    let curl = || {
        netns_run(
            &lab.client_ns(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                ca.to_str().unwrap(),
                "--resolve",
                &format!("{}:443:{}", pki::SERVER, lab.server_addr()),
                &format!("https://{}/", pki::SERVER),
            ],
            Duration::from_secs(20),
        )
    };
    let first = curl();
    assert!(first.status.success(), "unknown status, allowed: {first:?}\n{}", dp.log_text());

    // The control plane fetches the CRL (and refuses the loopback point).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = c.ok(&["status"]);
        if s.contains(&format!("http://{MGMT}.2/crl/intermediate.crl cached, 1 revoked")) {
            break s;
        }
        assert!(Instant::now() < deadline, "CRL not fetched:\n{s}\n{}", c.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.contains("http://127.0.0.1:9469/metrics failed: 127.0.0.1 is a loopback address"),
        "{status}"
    );

    // The next connection: a server-leg abort, certificate revoked.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = curl();
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "still decrypted after the CRL came:\n{}", c.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let events = c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "abort"));
    let abort = events.iter().find(|e| e["kind"] == "abort").unwrap();
    assert_eq!((abort["leg"].as_str(), abort["verify_code"].as_u64()), (Some("server"), Some(23)), "{abort}");
    assert!(c.proxy_log().contains("certificate revoked (code 23, depth 0)"), "{}", c.proxy_log());
    // nginx served the CRL to the control plane's management address.
    let access = std::fs::read_to_string(nginx.access_log_path()).unwrap_or_default();
    assert!(access.contains(&format!("{MGMT}.1 ")) && access.contains("/crl/intermediate.crl"), "{access}");

    drop(dp);
    drop(nginx);
    drop(c);
    drop(veth);
    lab.teardown();
}
