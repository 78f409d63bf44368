//! A real browser through the appliance: headless Chromium (Debian's `chromium`)
//! in the lab's client namespace with an NSS database of its own, loading
//! `https://server.tg.test/` from nginx (HTTP/2) through both appliance
//! processes. Root only; skipped, saying so, where Chromium cannot start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tlsgate_tests::control::{write, Control, DECRYPT_ALL};
use tlsgate_tests::{
    netns_run, require_root, run_cmd, serial, Dataplane, Finished, Lab, Nginx, NginxTls, TempDir,
};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

/// Whether Chromium runs here (its version, or why not).
fn chromium() -> Result<String, String> {
    let out = std::process::Command::new("chromium").arg("--version").output().map_err(|e| e.to_string())?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && v.starts_with("Chromium") {
        Ok(v)
    } else {
        Err(format!("chromium --version: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A browser profile: HOME with an NSS database (`$HOME/.pki/nssdb`) that trusts
/// `ca` when given (the decryption CA), and nothing else of the lab's.
fn profile(dir: &Path, ca: Option<&Path>) -> PathBuf {
    let home = dir.join("home");
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db_arg = format!("sql:{}", db.display());
    run_cmd(
        std::process::Command::new("certutil").args(["-N", "-d", &db_arg, "--empty-password"]),
        Duration::from_secs(20),
    )
    .expect_success("certutil -N");
    if let Some(ca) = ca {
        run_cmd(
            std::process::Command::new("certutil")
                .args(["-A", "-d", &db_arg, "-n", "tlsgate decryption CA", "-t", "C,,", "-i"])
                .arg(ca),
            Duration::from_secs(20),
        )
        .expect_success("certutil -A");
    }
    home
}

/// Headless Chromium in the client namespace, `server.tg.test` mapped to the lab
/// server (no DNS), no background traffic; `what` is `--dump-dom` or
/// `--screenshot=FILE`.
fn browse(lab: &Lab, home: &Path, what: &str) -> Finished {
    let resolver = format!("--host-resolver-rules=MAP {} {}", pki::SERVER, lab.server_addr());
    let data = home.join("chromium-data");
    netns_run(
        &lab.client_ns(),
        &[
            "env",
            &format!("HOME={}", home.display()),
            "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--window-size=1024,640",
            &format!("--user-data-dir={}", data.display()),
            &resolver,
            what,
            &format!("https://{}/", pki::SERVER),
        ],
        Duration::from_secs(60),
    )
}

/// The appliance (both processes, Decrypt-All, the decryption CA exported) and
/// nginx serving a page over HTTPS with HTTP/2, its origin root trusted by the
/// appliance.
fn setup(lab: &Lab, files: &TempDir, tag: &str) -> (Control, Dataplane, Nginx, PathBuf) {
    let www = files.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("index.html"),
        "<!DOCTYPE html><html><head><title>tlsgate lab</title></head>\
         <body><h1>hello through tlsgate</h1><p>served by nginx over HTTP/2, decrypted and re-encrypted.</p></body></html>\n",
    )
    .unwrap();
    let origin = pki::Pki::generate();
    let chain =
        write(files.path(), "chain.pem", &format!("{}{}", origin.leaf.pem(), origin.intermediate.pem()));
    let key = write(files.path(), "leaf.key", &origin.leaf.key_pem());
    let root = write(files.path(), "root.pem", &origin.root.pem());
    let nginx = Nginx::start_with(lab, &www, Some(&NginxTls { cert: chain, key, extra: String::new() }));
    let c = Control::start(tag, "");
    c.ok(&["ca", "generate"]);
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    let policy = write(c.dir.path(), "policy.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let ca = c.dir.join("decryption-ca.pem");
    c.ok(&["ca", "export", "--out", ca.to_str().unwrap()]);
    let dp = Dataplane::start(lab, &format!("[tls]\nhandshake_timeout_s = 10\n{}", c.dataplane_toml()));
    c.wait_applied(Duration::from_secs(15));
    (c, dp, nginx, ca)
}

/// Where test artifacts (the screenshot) are kept: `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium trusting the decryption CA (and not the origin's CA) loads the page
/// over HTTP/2 through the appliance: the DOM is the page, a screenshot is kept,
/// and the event shows ALPN h2 and the key-exchange group on each leg
/// (X25519MLKEM768 with Chromium; X25519 with nginx, TLS 1.2, when not resumed)
/// and Chromium's JA4.
#[test]
fn chromium_loads_a_page_over_h2_through_the_appliance() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let version = match chromium() {
        Ok(v) => v,
        Err(why) => {
            eprintln!("skipped: Chromium cannot start here: {why}");
            return;
        }
    };
    let lab = Lab::up("tgt17", "198.18.27");
    let files = TempDir::new("chromium-ok");
    let (c, dp, nginx, ca) = setup(&lab, &files, "lab-chromium");
    let home = profile(files.path(), Some(&ca));
    let dom = browse(&lab, &home, "--dump-dom");
    assert!(
        dom.stdout.contains("<h1>hello through tlsgate</h1>"),
        "{version}: the page's DOM: {}\n{}\nnginx: {}",
        dom.stdout,
        dom.stderr,
        nginx.error_log()
    );
    let shot = artifacts().join("chromium-through-tlsgate.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse(&lab, &home, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2000, "a screenshot: {}", out.stderr);
    let events = c
        .wait_events(Duration::from_secs(10), |e| e.iter().filter(|e| e["kind"] == "decrypted").count() >= 2);
    let decrypted: Vec<_> = events.iter().filter(|e| e["kind"] == "decrypted").collect();
    for e in &decrypted {
        assert_eq!((e["alpn_client"].as_str(), e["alpn_server"].as_str()), (Some("h2"), Some("h2")), "{e}");
        assert_eq!(e["group_client"], "X25519MLKEM768", "{e}");
    }
    // nginx on OpenSSL 3.0 (TLS 1.3, no post-quantum group): X25519, also when
    // the server leg resumed (TLS 1.3 resumption keeps a key exchange).
    for e in &decrypted {
        assert_eq!(
            (e["tls_version"].as_str(), e["group_server"].as_str()),
            (Some("TLSv1.3"), Some("X25519")),
            "{e}"
        );
    }
    let e = decrypted[0];
    let ja4 = e["ja4"].as_str().unwrap_or_default();
    assert!(ja4.starts_with("t13d"), "{e}");
    assert_eq!(e["sni"], pki::SERVER);
    eprintln!("{version}: JA4 {ja4}, ech_offered {}, screenshot {}", e["ech_offered"], shot.display());
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// The first failure operators meet: Chromium whose NSS database does not trust
/// the decryption CA refuses the forged certificate; the event is a client-leg
/// abort with the alert Chromium sent.
#[test]
fn chromium_without_the_decryption_ca_is_a_client_leg_abort() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    if let Err(why) = chromium() {
        eprintln!("skipped: Chromium cannot start here: {why}");
        return;
    }
    let lab = Lab::up("tgt18", "198.18.28");
    let files = TempDir::new("chromium-untrusted");
    let (c, dp, nginx, _ca) = setup(&lab, &files, "lab-chromium-untrusted");
    let home = profile(files.path(), None);
    let dom = browse(&lab, &home, "--dump-dom");
    assert!(!dom.stdout.contains("hello through tlsgate"), "the page must not load: {}", dom.stdout);
    let events = c.wait_events(Duration::from_secs(15), |e| e.iter().any(|e| e["kind"] == "abort"));
    let e = events.iter().find(|e| e["kind"] == "abort").unwrap();
    assert_eq!((e["leg"].as_str(), e["phase"].as_str()), (Some("client"), Some("client_handshake")), "{e}");
    assert!(e["alert_received"]["name"].is_string(), "the client's alert: {e}");
    eprintln!("Chromium's alert: {}; error_detail: {}", e["alert_received"], e["error_detail"]);
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// HTTP/2 on both legs with many streams: `h2load` (nghttp2, which does not
/// check certificates) sends 200 requests,
/// 20 at a time, over one connection through the appliance; all succeed, and the
/// flow is one decrypted connection with ALPN h2 on both legs.
#[test]
fn h2load_runs_many_streams_over_one_decrypted_connection() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt19", "198.18.29");
    let files = TempDir::new("h2load");
    let (c, dp, nginx, _ca) = setup(&lab, &files, "lab-h2load");
    // The name (SNI server.tg.test: the origin's certificate is for it), the
    // connection to the lab server's address.
    let url = format!("https://{}/index.html", pki::SERVER);
    let connect_to = format!("--connect-to={}:443", lab.server_addr());
    let out = netns_run(
        &lab.client_ns(),
        &["h2load", "-n", "200", "-c", "1", "-m", "20", &connect_to, &url],
        Duration::from_secs(60),
    );
    assert!(
        out.stdout.contains("requests: 200 total, 200 started, 200 done, 200 succeeded"),
        "{}\n{}\nnginx: {}\nevents: {:#?}",
        out.stdout,
        out.stderr,
        nginx.error_log(),
        c.logged_events()
    );
    assert!(out.stdout.contains("Application protocol: h2"), "{}", out.stdout);
    let events = c.wait_events(Duration::from_secs(15), |e| e.iter().any(|e| e["kind"] == "decrypted"));
    let decrypted: Vec<_> = events.iter().filter(|e| e["kind"] == "decrypted").collect();
    assert_eq!(decrypted.len(), 1, "one connection: {events:#?}");
    let e = decrypted[0];
    assert_eq!((e["alpn_client"].as_str(), e["alpn_server"].as_str()), (Some("h2"), Some("h2")), "{e}");
    assert!(e["bytes_down"].as_u64().unwrap_or(0) > 200 * 100, "200 responses relayed: {e}");
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}

/// QUIC in the lab, with a UDP sender standing in for a browser's Initial
/// packets: under Decrypt-All, UDP 443 to the server never arrives (`quic =
/// block`, the default: browsers fall back to TCP) while UDP to another port
/// does, and the same client over TCP is decrypted; after `quic: pass` is
/// committed it arrives, counted.
#[test]
fn quic_is_blocked_until_the_policy_passes_it() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt20", "198.18.30");
    let files = TempDir::new("quic");
    let (c, dp, nginx, ca) = setup(&lab, &files, "lab-quic");
    // The server counts datagrams on 443 and 4433 for 3 s; the client sends 5
    // "Initials" of 1200 bytes to each.
    let receive = |expect: &str| {
        let mut server = tlsgate_tests::netns_spawn(
            &lab.server_ns(),
            &[
                "/usr/bin/python3",
                "-c",
                "import socket,sys,time\n\
                 socks=[]\n\
                 for p in (443,4433):\n\
                 \x20 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((sys.argv[1],p)); s.setblocking(False); socks.append(s)\n\
                 n={443:0,4433:0}; end=time.time()+3\n\
                 while time.time()<end:\n\
                 \x20 for s in socks:\n\
                 \x20   try:\n\
                 \x20     s.recv(2048); n[s.getsockname()[1]]+=1\n\
                 \x20   except BlockingIOError: pass\n\
                 \x20 time.sleep(0.005)\n\
                 print(n[443], n[4433])\n",
                &lab.server_addr(),
            ],
        );
        std::thread::sleep(Duration::from_millis(500));
        let send = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for p in (443,4433):\n  for i in range(5): s.sendto(b'\\xc3'*1200,('{}',p))\n",
            lab.server_addr()
        );
        netns_run(&lab.client_ns(), &["/usr/bin/python3", "-c", &send], Duration::from_secs(10))
            .expect_success("UDP sender");
        let out = server.wait_or_kill(Duration::from_secs(10));
        assert_eq!(out.stdout.trim(), expect, "datagrams received on 443 and 4433: {out:?}");
    };
    receive("0 5");
    let s = dp.wait_stats(Duration::from_secs(5), |s| s.total_drops().get("quic").copied() == Some(5));
    assert_eq!(s.total_drops().get("quic"), Some(&5), "{:?}", s.total_drops());
    // The fallback a browser takes: the same server over TCP, decrypted.
    let resolve = format!("{}:443:{}", pki::SERVER, lab.server_addr());
    let url = format!("https://{}/", pki::SERVER);
    let ca_path = ca.display().to_string();
    let tcp = netns_run(
        &lab.client_ns(),
        &["curl", "-sS", "--max-time", "10", "--cacert", &ca_path, "--resolve", &resolve, &url],
        Duration::from_secs(15),
    );
    assert!(tcp.stdout.contains("hello through tlsgate"), "TCP after QUIC was blocked: {tcp:?}");
    c.wait_events(Duration::from_secs(10), |e| e.iter().any(|e| e["kind"] == "decrypted"));

    let pass = write(
        c.dir.path(),
        "quic-pass.json",
        r#"{"rules": [{"name": "Decrypt-All", "action": "decrypt"}], "settings": {"quic": "pass"}}"#,
    );
    c.ok(&["policy", "load", pass.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    c.wait_applied(Duration::from_secs(10));
    receive("5 5");
    let s = dp.wait_stats(Duration::from_secs(5), |s| {
        s.workers.iter().map(|w| w.get("quic_passed")).sum::<u64>() >= 1
    });
    assert!(s.workers.iter().map(|w| w.get("quic_passed")).sum::<u64>() >= 1);
    drop(nginx);
    drop(dp);
    drop(c);
    lab.teardown();
}
