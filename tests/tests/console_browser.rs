//! The web console in Debian's headless Chromium, driven through the DevTools
//! protocol (`headless_chrome`) with real clicks and keystrokes, against a real
//! control plane and a dataplane (in process) that intercepts: the seed's two
//! problems fixed in the console, each proven by the next connection being
//! decrypted; the events list updating itself; policy explain; the history
//! naming the operator. Screenshots of each page go to
//! `target/test-artifacts/console-*.png` (copied to `docs/images/`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use tlsgate_certstore::pki_types::PrivateKeyDer;
use tlsgate_tests::console::{add_user, Console, CONTROL_EXTRA};
use tlsgate_tests::control::{
    configured_with, connect, dataplane, exported_ca, settle, write, Control, DEVICE,
};
use tlsgate_tests::netsim::{client_trusting, origin_server};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn key(k: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(k.serialize_der().into())
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shot(tab: &Tab, name: &str) {
    let png =
        tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true).expect("screenshot");
    std::fs::write(artifacts().join(format!("console-{name}.png")), png).unwrap();
}

/// The base64 SHA-256 of the console certificate's public key: Chromium
/// accepts that one self-signed certificate, no other.
fn spki_hash(cert: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The newest event id of `kind`, once logged.
fn newest(c: &Control, kind: &str) -> u64 {
    c.logged_events()
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["event_id"].as_u64())
        .max()
        .unwrap()
}

/// Waits for the control plane to hold the chain event `id` kept.
fn chain_kept(c: &Control, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = c.json(&["events", "show", &id.to_string()]);
        let sha = e["events"][0]["chain_sha256"].as_str().unwrap_or("").to_ascii_lowercase();
        if !sha.is_empty() && c.dir.join("state").join("chains").join(format!("{sha}.pem")).exists() {
            return;
        }
        assert!(Instant::now() < deadline, "the chain of event {id} never arrived: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(tab: &Tab, selector: &str) -> String {
    tab.wait_for_element(selector).unwrap_or_else(|e| panic!("{selector}: {e}")).get_inner_text().unwrap()
}

fn click(tab: &Tab, selector: &str) {
    tab.wait_for_element(selector).unwrap_or_else(|e| panic!("{selector}: {e}")).click().unwrap();
}

fn type_into(tab: &Tab, selector: &str, value: &str) {
    click(tab, selector);
    tab.type_str(value).unwrap();
}

/// Log in; fix SEED problem 2 by clicking "Trust this server certificate" on
/// its abort and SEED problem 1 by following "Load license" and loading one;
/// after each, the next connection is decrypted.
#[test]
fn console_in_chromium_fixes_both_seed_problems_with_clicks() {
    if !Path::new("/usr/bin/chromium").exists() {
        panic!("Debian's chromium is needed (scripts/install-deps.sh installs it)");
    }
    let c = configured_with("browser", CONTROL_EXTRA);
    let origin = pki::Pki::generate();
    let root = write(c.dir.path(), "origin-root.pem", &origin.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    add_user(&c, "alice", "correct horse battery");
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);

    // SEED problem 2: a self-signed server; SEED problem 1: a server that
    // accepts only what the base profile lacks.
    let asa = pki::ciscoasa();
    let asa_srv = origin_server(vec![asa.der()], key(&asa.key), false);
    assert!(connect(&mut net, asa_srv.clone(), client.clone(), "asa.tg.test", 43001).is_some());
    let strong_srv =
        origin_server(vec![origin.leaf.der(), origin.intermediate.der()], key(&origin.leaf.key), true);
    assert!(connect(&mut net, strong_srv.clone(), client.clone(), pki::SERVER, 43002).is_some());
    settle(&c, &mut net, |e: &[serde_json::Value]| e.iter().filter(|e| e["kind"] == "abort").count() >= 2);
    let events = c.logged_events();
    let id_of = |port: u64| {
        events.iter().find(|e| e["src_port"] == port).and_then(|e| e["event_id"].as_u64()).expect("its abort")
    };
    let (asa_abort, cipher_abort) = (id_of(43001), id_of(43002));
    chain_kept(&c, asa_abort);

    let console = Console::start(&c);
    let spki = format!("--ignore-certificate-errors-spki-list={}", spki_hash(&console.cacert));
    let args: Vec<&OsStr> = [
        spki.as_str(),
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some("/usr/bin/chromium".into()))
            .sandbox(false)
            .headless(true)
            .ignore_certificate_errors(false)
            .window_size(Some((1280, 900)))
            .idle_browser_timeout(Duration::from_secs(120))
            .args(args)
            .build()
            .unwrap(),
    )
    .expect("chromium starts");
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(15));
    let base = format!("https://localhost:{}", console.port);

    // Log in.
    tab.navigate_to(&format!("{base}/")).unwrap().wait_until_navigated().unwrap();
    type_into(&tab, "#name", "alice");
    type_into(&tab, "#password", "correct horse battery");
    shot(&tab, "login");
    click(&tab, "#login");
    let status = text(&tab, "#status");
    assert!(status.contains("connected (pid") && status.contains("Configuration version"), "{status}");
    assert!(text(&tab, "#coverage").contains("TLS flows decrypted"));
    shot(&tab, "status");

    // The events list; the certificate abort in the seed's panel; one click.
    click(&tab, "#nav-events");
    click(&tab, &format!("#event-{asa_abort}"));
    let panel = text(&tab, "body");
    for needle in [
        "Source",
        "Destination",
        "Transaction",
        "TLS",
        "Error details",
        "self signed certificate (code 18, depth 0)",
    ] {
        assert!(panel.contains(needle), "{needle} not in {panel}");
    }
    shot(&tab, "event-certificate");
    let before = c.status().config_version;
    click(&tab, "#trust");
    let result = text(&tab, "#result");
    assert!(result.contains("pinned /unstructuredName=ciscoasa"), "{result}");
    shot(&tab, "trusted");
    let after = c.wait_applied(Duration::from_secs(10));
    assert!(after.config_version > before);
    assert_eq!(
        connect(&mut net, asa_srv, client.clone(), "asa.tg.test", 43003),
        None,
        "decrypted after the click"
    );

    // The cipher mismatch: "Load license", the license pasted, one click.
    tab.navigate_to(&format!("{base}/events/{cipher_abort}")).unwrap().wait_until_navigated().unwrap();
    let panel = text(&tab, "body");
    assert!(panel.contains("0x228 handshake_failure"), "{panel}");
    shot(&tab, "event-cipher");
    click(&tab, "#load-license");
    let lic = c.license("TG-0042", &["strong-crypto"], now() - 60, now() + 86_400, DEVICE);
    // Pasted (the DevTools protocol's insertText), as an operator pastes a file.
    click(&tab, "#license-text");
    tab.send_character(std::fs::read_to_string(lic).unwrap().trim()).unwrap();
    click(&tab, "#license-load");
    let result = text(&tab, "#result");
    assert!(result.contains("cipher profile strong"), "{result}");
    assert_eq!(text(&tab, "#profile"), "strong");
    shot(&tab, "licenses");
    c.wait_applied(Duration::from_secs(10));
    assert_eq!(
        connect(&mut net, strong_srv.clone(), client.clone(), pki::SERVER, 43004),
        None,
        "strong decrypts"
    );
    settle(&c, &mut net, |e: &[serde_json::Value]| {
        e.iter().filter(|e| e["kind"] == "decrypted").count() >= 2
    });

    // The list updates itself: an event that happens while the page is open appears.
    click(&tab, "#nav-events");
    tab.wait_for_element(&format!("#event-{}", newest(&c, "decrypted"))).unwrap();
    assert_eq!(connect(&mut net, strong_srv, client, pki::SERVER, 43005), None);
    settle(&c, &mut net, |e: &[serde_json::Value]| e.iter().any(|e| e["src_port"] == 43005));
    let live = newest(&c, "decrypted");
    tab.wait_for_element_with_custom_timeout(&format!("#event-{live}"), Duration::from_secs(10))
        .expect("the new event appears without a reload");
    shot(&tab, "events");

    // Certificates: the pin made by the click; the CA to export.
    click(&tab, "#nav-certificates");
    let trust = text(&tab, "#trust");
    assert!(trust.contains("asa.tg.test") && trust.contains("origin root"), "{trust}");
    tab.wait_for_element("#ca-export").unwrap();
    shot(&tab, "certificates");

    // Policy: explain a flow; the history names the operator.
    click(&tab, "#nav-policy");
    let history = text(&tab, "#history");
    assert!(history.contains("alice") && history.contains("trust entry asa.tg.test"), "{history}");
    shot(&tab, "policy");
    type_into(&tab, "#explain-client", "198.18.0.1");
    type_into(&tab, "#explain-server", "198.18.0.2");
    type_into(&tab, "#explain-sni", "asa.tg.test");
    click(&tab, "#explain");
    let why = text(&tab, "#explanation");
    assert!(why.contains("decrypt (rule Decrypt-All)"), "{why}");
    shot(&tab, "explain");
    let cli_history = c.ok(&["policy", "history"]);
    assert!(cli_history.contains("[console: alice] trust entry asa.tg.test"), "{cli_history}");

    drop(tab);
    drop(browser);
    drop(net.stop());
    let mut console = console;
    console.proc.kill();
}
