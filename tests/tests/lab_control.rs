//! The seed's two problems in the lab, as an operator meets and solves them: real
//! `nginx` in the server namespace, real `curl` in the client namespace, and both
//! appliance processes running — `tlsgate-dataplane` on DPDK `net_af_packet`
//! connected to `tlsgate-control`, driven with `tlsgatectl`. Root only (lab tests:
//! `TLSGATE_SKIP_LAB=1` skips them). Build the binaries first (`make build`).

use std::time::Duration;

use tlsgate_tests::control::{write, Control, DECRYPT_ALL, DEVICE};
use tlsgate_tests::{netns_run, require_root, serial, Dataplane, Finished, Lab, Nginx, NginxTls, TempDir};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A control plane with a CA (exported for curl), the Decrypt-All policy and a
/// connected dataplane.
fn appliance(lab: &Lab, tag: &str) -> (Control, Dataplane, String) {
    let c = Control::start(tag, "");
    c.ok(&["ca", "generate"]);
    let policy = write(c.dir.path(), "policy.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let ca = c.dir.join("decryption-ca.pem");
    c.ok(&["ca", "export", "--out", ca.to_str().unwrap()]);
    let dp = Dataplane::start(lab, &format!("[tls]\nhandshake_timeout_s = 5\n{}", c.dataplane_toml()));
    c.wait_applied(Duration::from_secs(15));
    (c, dp, ca.display().to_string())
}

fn curl(lab: &Lab, ca: &str, name: &str) -> Finished {
    let resolve = format!("{name}:443:{}", lab.server_addr());
    netns_run(
        &lab.client_ns(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("https://{name}/"),
        ],
        Duration::from_secs(15),
    )
}

/// nginx serving `www` over HTTPS with a certificate for `server.tg.test` from a
/// fresh origin PKI (`extra`: more ssl directives); the origin root's file.
fn origin_nginx(
    lab: &Lab,
    files: &TempDir,
    www: &std::path::Path,
    extra: &str,
) -> (Nginx, std::path::PathBuf) {
    let origin = pki::Pki::generate();
    let chain =
        write(files.path(), "chain.pem", &format!("{}{}", origin.leaf.pem(), origin.intermediate.pem()));
    let key = write(files.path(), "leaf.key", &origin.leaf.key_pem());
    let root = write(files.path(), "root.pem", &origin.root.pem());
    (Nginx::start_with(lab, www, Some(&NginxTls { cert: chain, key, extra: extra.into() })), root)
}

fn site(files: &TempDir) -> std::path::PathBuf {
    let www = files.join("www");
    std::fs::create_dir_all(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "hello through tlsgate\n").expect("index");
    www
}

/// The seed's first server (nginx, TLS 1.2, AES-256-GCM suites only) and an
/// appliance trusting its origin root: (nginx, origin root, control, dataplane,
/// decryption CA file).
fn seed1_appliance(
    lab: &Lab,
    files: &TempDir,
    tag: &str,
) -> (Nginx, std::path::PathBuf, Control, Dataplane, String) {
    let www = site(files);
    let (nginx, root) = origin_nginx(
        lab,
        files,
        &www,
        "ssl_protocols TLSv1.2; ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384;",
    );
    let (c, dp, ca) = appliance(lab, tag);
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    (nginx, root, c, dp, ca)
}

/// SEED problem 1: nginx speaks TLS 1.2 with only
/// ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384. Without a license
/// curl fails; `events list --kind abort` shows the handshake failure and
/// `tls_proxy.log` the alert and TLS-problem lines; a strong-crypto license later,
/// the next curl succeeds through decryption.
#[test]
fn seed_problem_1_in_the_lab() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt8", "198.18.18");
    let files = TempDir::new("seed1");
    let (nginx, _root, c, dp, ca) = seed1_appliance(&lab, &files, "lab-seed1");
    c.wait_applied(Duration::from_secs(10));

    let first = curl(&lab, &ca, pki::SERVER);
    assert!(!first.status.success(), "without the license curl fails: {first:?}");
    let listed = c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "abort"));
    let abort = listed.iter().find(|e| e["kind"] == "abort").unwrap();
    assert_eq!(abort["alert_received"]["name"], "handshake_failure", "{abort}");
    let text = c.ok(&["events", "list", "--kind", "abort"]);
    assert!(text.contains("abort") && text.contains(pki::SERVER), "{text}");
    let log = c.proxy_log();
    assert!(
        log.contains("INFO TLS_Proxy - SSL alert message received from server (0x228 = \"fatal : handshake failure\") in Session: x"),
        "{log}"
    );
    assert!(log.contains("ERROR TLS_Proxy - TLS problem ("), "{log}");

    let lic = c.license("TG-LAB-1", &["strong-crypto"], now() - 60, now() + 86_400, DEVICE);
    c.ok(&["license", "load", lic.to_str().unwrap()]);
    c.wait_applied(Duration::from_secs(10));
    let second = curl(&lab, &ca, pki::SERVER);
    assert!(second.status.success(), "with the license: {second:?}\nnginx:\n{}", nginx.error_log());
    assert_eq!(second.stdout, "hello through tlsgate\n");
    let events = c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "decrypted"));
    let decrypted = events.iter().find(|e| e["kind"] == "decrypted").unwrap();
    assert_eq!(decrypted["tls_version"], "TLSv1.2");
    assert_eq!(decrypted["config_version"], c.status().config_version);
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// A learned exclusion, as an operator meets it: the seed's first server (TLS 1.2,
/// AES-256 only) under the base profile, with `undecryptable: pass` chosen. The
/// first curl fails; the appliance's own probe meets the same failure and the
/// exclusion is made (`exclusion_learned` event, `tlsgatectl exclusions list`);
/// the next curl is relayed raw (it meets the origin's own certificate). A block
/// rule committed later wins over the exclusion; `exclusions clear` removes it.
#[test]
fn learned_exclusion_in_the_lab() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt14", "198.18.24");
    let files = TempDir::new("exclusion");
    let (nginx, root, c, dp, ca) = seed1_appliance(&lab, &files, "lab-exclusion");
    let policy = write(
        c.dir.path(),
        "pass.json",
        r#"{ "rules": [ { "name": "Decrypt-All", "action": "decrypt" } ], "settings": { "undecryptable": "pass" } }"#,
    );
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    c.wait_applied(Duration::from_secs(10));
    assert_eq!(c.ok(&["exclusions", "list"]), "no learned exclusions\n");

    let first = curl(&lab, &ca, pki::SERVER);
    assert!(!first.status.success(), "the first connection is aborted: {first:?}");
    let events =
        c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "exclusion_learned"));
    let learned = events.iter().find(|e| e["kind"] == "exclusion_learned").unwrap();
    assert_eq!(learned["sni"], pki::SERVER, "{learned}");
    let listed = c.ok(&["exclusions", "list"]);
    assert!(listed.contains(&lab.server_addr()) && listed.contains("alert_received"), "{listed}");

    // Relayed raw: curl meets the origin's chain (it trusts the origin root only).
    let second = curl(&lab, &root.display().to_string(), pki::SERVER);
    assert!(second.status.success(), "passed by the exclusion: {second:?}\nnginx:\n{}", nginx.error_log());
    let events = c.wait_events(Duration::from_secs(10), |e| {
        e.iter().any(|e| e["cause"] == "excluded" && e["kind"] == "passed")
    });
    assert!(events.iter().any(|e| e["kind"] == "passed"), "{events:?}");

    // The policy comes first: a block rule for the name wins over the exclusion.
    c.ok(&[
        "policy",
        "rule",
        "add",
        "Block-Server",
        "--action",
        "block",
        "--sni",
        pki::SERVER,
        "--above",
        "Decrypt-All",
    ]);
    c.ok(&["policy", "commit"]);
    c.wait_applied(Duration::from_secs(10));
    let third = curl(&lab, &root.display().to_string(), pki::SERVER);
    assert!(!third.status.success(), "blocked: {third:?}");
    c.wait_events(Duration::from_secs(10), |e| {
        e.iter().any(|e| e["kind"] == "blocked" && e["rule"] == "Block-Server")
    });

    let cleared = c.ok(&["exclusions", "clear", "--server", &lab.server_addr()]);
    assert!(cleared.starts_with("1 learned exclusion(s) cleared"), "{cleared}");
    assert_eq!(c.ok(&["exclusions", "list"]), "no learned exclusions\n");
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// SEED problem 2: nginx with a self-signed certificate like the seed's (no SAN,
/// `/unstructuredName=ciscoasa`). curl fails; the event shows `self signed
/// certificate (code 18, depth 0)` with subject and issuer; `tlsgatectl trust add
/// --from-event ID`; the next curl succeeds, and a different self-signed server is
/// still refused.
#[test]
fn seed_problem_2_in_the_lab() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt9", "198.18.19");
    let files = TempDir::new("seed2");
    let www = site(&files);
    let asa = pki::ciscoasa();
    let cert = write(files.path(), "asa.pem", &asa.pem());
    let key = write(files.path(), "asa.key", &asa.key_pem());
    let nginx = Nginx::start_with(&lab, &www, Some(&NginxTls { cert, key, extra: String::new() }));
    let (c, dp, ca) = appliance(&lab, "lab-seed2");

    let first = curl(&lab, &ca, "asa.tg.test");
    assert!(!first.status.success(), "curl must fail: {first:?}");
    let events = c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "abort"));
    let abort = events.iter().find(|e| e["kind"] == "abort").unwrap();
    let id = abort["event_id"].as_u64().unwrap().to_string();
    let panel = c.ok(&["events", "show", &id]);
    for needle in [
        "self signed certificate (code 18, depth 0)",
        "/unstructuredName=ciscoasa",
        "Server certificate issuer",
        "tlsgatectl trust add --from-event",
    ] {
        assert!(panel.contains(needle), "{needle:?} not in\n{panel}");
    }
    // The issue-8 attack: a self-signed server used to get a raw tunnel from its
    // second connection on. It is aborted again, never passed.
    let again = curl(&lab, "/dev/null", "asa.tg.test");
    assert!(!again.status.success(), "{again:?}");
    let events =
        c.wait_events(Duration::from_secs(10), |e| e.iter().filter(|e| e["kind"] == "abort").count() == 2);
    assert!(!events.iter().any(|e| e["kind"] == "passed"), "{events:?}");
    let log = c.proxy_log();
    for line in [
        "Certificate verification failure: self signed certificate (code 18, depth 0)",
        "Subject: /unstructuredName=ciscoasa",
        "Issuer: /unstructuredName=ciscoasa",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
    // One command instead of the seed's three manual steps (the chain may still be
    // on its way up the link for a moment).
    let mut fixed = c.ctl(&["trust", "add", "--from-event", &id]);
    for _ in 0..50 {
        if fixed.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        fixed = c.ctl(&["trust", "add", "--from-event", &id]);
    }
    assert!(fixed.status.success(), "{fixed:?}");
    c.wait_applied(Duration::from_secs(10));
    let second = curl(&lab, &ca, "asa.tg.test");
    assert!(
        second.status.success(),
        "after trust add --from-event: {second:?}\nnginx:\n{}",
        nginx.error_log()
    );
    assert_eq!(second.stdout, "hello through tlsgate\n");
    drop(nginx);

    // Another self-signed server at the same address is still refused.
    let other = pki::ciscoasa();
    let cert = write(files.path(), "other.pem", &other.pem());
    let key = write(files.path(), "other.key", &other.key_pem());
    let nginx = Nginx::start_with(&lab, &www, Some(&NginxTls { cert, key, extra: String::new() }));
    let third = curl(&lab, &ca, "asa.tg.test");
    assert!(!third.status.success(), "a different self-signed certificate: {third:?}");
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// The control plane is killed and restarted while curl runs through the lab: the
/// dataplane keeps decrypting on its snapshot and every event is logged once.
#[test]
fn control_plane_restart_during_lab_traffic_loses_no_event() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt10", "198.18.20");
    let files = TempDir::new("restart");
    let www = site(&files);
    let (nginx, root) = origin_nginx(&lab, &files, &www, "");
    let (mut c, dp, ca) = appliance(&lab, "lab-restart");
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    c.wait_applied(Duration::from_secs(10));
    let mut ok = 0;
    for round in 0..3 {
        for _ in 0..8 {
            let r = curl(&lab, &ca, pki::SERVER);
            assert!(r.status.success(), "round {round}: {r:?}");
            ok += 1;
        }
        match round {
            0 => c.kill(),
            1 => c.restart(None),
            _ => {}
        }
    }
    let events = c.wait_events(Duration::from_secs(15), |e| e.len() >= ok);
    let s =
        dp.wait_stats(Duration::from_secs(5), |s| s.workers.iter().all(|w| w.get("intercept_active") == 0));
    let produced: u64 = s.workers.iter().map(|w| w.get("tls_decrypted")).sum();
    assert_eq!(produced, ok as u64);
    let mut ids: Vec<u64> = events.iter().map(|e| e["event_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((events.len(), ids.len()), (ok, ok), "produced = logged, each once");
    assert_eq!(c.status().events_lost, 0);
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// Key custody, checked in the real processes: after decrypted connections (the
/// first forge signed by the control plane, the next from the cache) the
/// dataplane's memory holds no byte sequence of the decryption CA's private key —
/// neither its PKCS#8 encoding nor the raw private scalar — while the control
/// plane logged the leaf it signed.
#[test]
fn the_dataplane_never_holds_the_ca_key() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt16", "198.18.26");
    let files = TempDir::new("custody");
    let www = site(&files);
    let (nginx, root) = origin_nginx(&lab, &files, &www, "");
    let (c, dp, ca) = appliance(&lab, "lab-custody");
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    c.wait_applied(Duration::from_secs(10));
    for _ in 0..3 {
        let r = curl(&lab, &ca, pki::SERVER);
        assert!(r.status.success() && r.stdout.contains("hello through tlsgate"), "{r:?}");
    }
    let issued = std::fs::read_to_string(c.log_dir().join("issued.log")).unwrap_or_default();
    assert_eq!(
        issued.lines().filter(|l| l.contains(pki::SERVER)).count(),
        1,
        "one leaf signed, then cached: {issued}"
    );

    // The key, from the control plane's state (root reads it).
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.state_dir().join("state.json")).unwrap()).unwrap();
    let key_pem = state["ca"]["key_pem"].as_str().expect("the CA key in the state").to_string();
    let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let pkcs8 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(body).expect("PKCS#8")
    };
    // The P-256 private scalar: the OCTET STRING of 32 bytes after `02 01 01 04 20`
    // in the ECPrivateKey the PKCS#8 wraps.
    let at = pkcs8.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("ECPrivateKey");
    let scalar = pkcs8[at + 5..at + 37].to_vec();
    let needles: [(&str, &[u8]); 3] = [
        ("PKCS#8 DER", &pkcs8),
        ("private scalar", &scalar),
        ("PEM", key_pem.lines().nth(1).unwrap().as_bytes()),
    ];

    let pid = dp.pid().expect("the dataplane runs");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0u64;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        if b - a > 1 << 30 {
            continue; // hugepage pools: packet buffers, scanned below by what they hold
        }
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scanned += b - a;
        for (what, needle) in &needles {
            assert!(
                !buf.windows(needle.len()).any(|w| w == *needle),
                "the dataplane's memory holds the CA key ({what}) in {line}"
            );
        }
    }
    assert!(scanned > 10 << 20, "scanned {scanned} bytes of the dataplane");
    // The scan itself can find a key that is there: the control plane holds it.
    let cpid = c.proc.as_ref().unwrap().pid();
    let cmaps = std::fs::read_to_string(format!("/proc/{cpid}/maps")).unwrap();
    let mut cmem = std::fs::File::open(format!("/proc/{cpid}/mem")).unwrap();
    let mut found = false;
    for line in cmaps.lines().filter(|l| l.contains("[heap]") || l.split_whitespace().count() == 5) {
        let range = line.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = vec![0u8; (b - a) as usize];
        if cmem.seek(SeekFrom::Start(a)).is_ok() && cmem.read_exact(&mut buf).is_ok() {
            found |= buf.windows(scalar.len()).any(|w| w == scalar.as_slice());
        }
    }
    assert!(found, "the scan finds the key where it is (the control plane)");
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}
