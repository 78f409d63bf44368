//! The control plane with a real `tlsgate-control` process and `tlsgatectl`, and a
//! dataplane (in process, `netsim`) connected to it: snapshots, the seed's two
//! problems solved with our commands, refusals that change nothing, crash safety
//! of the state directory, events across control-plane restarts, captures and
//! metrics.

use std::time::Duration;

use tlsgate_certstore::pki_types::PrivateKeyDer;
use tlsgate_dataplane::config::Config;
use tlsgate_tests::control::{
    configured, connect, dataplane, exported_ca, settle, write, Control, DECRYPT_ALL, DEVICE,
};
use tlsgate_tests::netsim::{client_trusting, origin_server, tls_exchange, Net};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn key(k: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(k.serialize_der().into())
}

/// `trust add --from-event ID`, retried while the abort's chain is still on its
/// way up the link.
fn trust_from_event(c: &Control, id: &str) -> tlsgate_tests::Finished {
    let mut out = c.ctl(&["trust", "add", "--from-event", id]);
    for _ in 0..100 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        out = c.ctl(&["trust", "add", "--from-event", id]);
    }
    out
}

fn aborts(c: &Control) -> Vec<serde_json::Value> {
    c.json(&["events", "list", "--kind", "abort"])["events"].as_array().cloned().unwrap_or_default()
}

/// SEED problem 2 with our commands: a self-signed server (no SAN,
/// `/unstructuredName=ciscoasa`) is refused; `trust add --from-event ID` pins its
/// certificate from the abort's kept chain; the next connection is decrypted; a
/// different self-signed server is still refused.
#[test]
fn seed_problem_2_fixed_with_trust_add_from_event() {
    let c = configured("seed2");
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    let asa = pki::ciscoasa();
    let srv = origin_server(vec![asa.der()], key(&asa.key), false);

    let err = connect(&mut net, srv.clone(), client.clone(), "asa.tg.test", 41001).expect("refused");
    assert!(err.contains("HandshakeFailure"), "our fatal alert: {err}");
    let events = settle(&c, &mut net, |e: &[serde_json::Value]| e.iter().any(|e| e["kind"] == "abort"));
    let abort = events.iter().find(|e| e["kind"] == "abort").unwrap();
    assert_eq!(abort["verify_code"], 18);
    assert_eq!(abort["server_cert_subject"], "/unstructuredName=ciscoasa");
    assert_eq!(abort["config_version"], c.status().config_version, "{abort}");
    let log = c.proxy_log();
    for line in [
        "INFO TLS_Proxy - Certificate verification failure: self signed certificate (code 18, depth 0)",
        "INFO TLS_Proxy - Subject: /unstructuredName=ciscoasa",
        "INFO TLS_Proxy - Issuer: /unstructuredName=ciscoasa",
        "ERROR TLS_Proxy - TLS problem (",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
    // tlsgatectl finds it, and shows it like the seed's panel.
    let listed = aborts(&c);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["event_id"].as_u64().unwrap().to_string();
    let panel = c.ok(&["events", "show", &id]);
    for needle in [
        "Source",
        "Destination",
        "Transaction",
        "TLS",
        "Error details",
        "self signed certificate (code 18, depth 0)",
        "tlsgatectl trust add --from-event",
    ] {
        assert!(panel.contains(needle), "{needle:?} not in\n{panel}");
    }
    // The chain arrives over the link; the one-command fix.
    let out = trust_from_event(&c, &id);
    assert!(out.status.success(), "trust add --from-event: {out:?}");
    assert!(out.stdout.contains("pinned /unstructuredName=ciscoasa"), "{}", out.stdout);
    c.wait_applied(Duration::from_secs(10));

    assert_eq!(connect(&mut net, srv, client.clone(), "asa.tg.test", 41002), None, "decrypted after pinning");
    let other = pki::ciscoasa();
    let err = connect(
        &mut net,
        origin_server(vec![other.der()], key(&other.key), false),
        client,
        "asa.tg.test",
        41003,
    );
    assert!(err.is_some(), "another self-signed server is still refused");
    let events = settle(&c, &mut net, |e: &[serde_json::Value]| e.len() >= 3);
    let mut by_port: Vec<(u64, &str)> =
        events.iter().map(|e| (e["src_port"].as_u64().unwrap(), e["kind"].as_str().unwrap())).collect();
    by_port.sort_unstable();
    assert_eq!(by_port, [(41001, "abort"), (41002, "decrypted"), (41003, "abort")], "{events:#?}");
    let s = net.stop();
    assert_eq!(s.stats.workers[0].get("tls_decrypted"), 1);
    // The audit says who and what.
    let history = c.ok(&["policy", "history"]);
    assert!(history.contains("trust entry asa.tg.test (event"), "{history}");
    files_closed_to_others(&c);
}

/// A pin made from an event holds for that event's SNI only: the same server
/// certificate under another SNI is refused (so its key cannot buy forged
/// certificates for any host). A self-signed file naming no server is not pinned
/// for any name by default. The decryption CA cannot be trusted, and a server chain
/// ending at it is refused with its own reason.
#[test]
fn pins_hold_for_their_names_and_chains_to_our_own_ca_are_refused() {
    let c = configured("pins");
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    let asa = pki::ciscoasa();
    let srv = origin_server(vec![asa.der()], key(&asa.key), false);
    assert!(connect(&mut net, srv.clone(), client.clone(), "asa.tg.test", 47001).is_some());
    settle(&c, &mut net, |e: &[serde_json::Value]| e.iter().any(|e| e["kind"] == "abort"));
    let id = aborts(&c)[0]["event_id"].as_u64().unwrap().to_string();
    let out = trust_from_event(&c, &id);
    assert!(out.stdout.contains("for asa.tg.test"), "{out:?}");
    c.wait_applied(Duration::from_secs(10));
    assert!(c.ok(&["trust", "list"]).contains("asa.tg.test"));
    assert_eq!(connect(&mut net, srv.clone(), client.clone(), "asa.tg.test", 47002), None, "decrypted");
    // Another SNI to the same certificate: refused, as if it were not pinned.
    let err = connect(&mut net, srv.clone(), client.clone(), "bank.tg.test", 47003);
    assert!(err.is_some_and(|e| e.contains("HandshakeFailure")));
    let events = settle(&c, &mut net, |e: &[serde_json::Value]| {
        e.iter().any(|e| e["src_port"] == 47003 && e["kind"] == "abort")
    });
    let bank = events.iter().find(|e| e["src_port"] == 47003).unwrap();
    assert_eq!(bank["verify_code"], 18, "{bank}");

    // A self-signed certificate from a file: it names no server, so it is not
    // pinned for every name by default.
    let other = pki::ciscoasa();
    let file = write(c.dir.path(), "other-asa.pem", &other.pem());
    let r = c.ctl(&["trust", "add", file.to_str().unwrap()]);
    assert!(!r.status.success() && r.stderr.contains("--for NAME"), "{}", r.stderr);
    let out = c.ok(&["trust", "add", file.to_str().unwrap(), "--for", "asa2.tg.test", "--name", "asa2"]);
    assert!(out.contains("pinned /unstructuredName=ciscoasa") && out.contains("for asa2.tg.test"), "{out}");
    let out =
        c.ok(&["trust", "add", file.to_str().unwrap(), "--as", "pinned", "--any-name", "--name", "asa3"]);
    assert!(out.contains("already trusted") || out.contains("for any name"), "{out}");

    // A pinned certificate that names more servers than its pin: the forged
    // leaf carries only the requested name (its other names were never vouched
    // for by anyone).
    let multi =
        rcgen::generate_simple_self_signed(vec!["multi.tg.test".into(), "bank.tg.test".into()]).unwrap();
    let file = write(c.dir.path(), "multi.pem", &multi.cert.pem());
    c.ok(&["trust", "add", file.to_str().unwrap(), "--for", "multi.tg.test", "--name", "multi"]);
    c.wait_applied(Duration::from_secs(10));
    let srv_multi = origin_server(vec![multi.cert.der().clone()], key(&multi.key_pair), false);
    let (resp, err, leaf, _) =
        tls_exchange(&mut net, srv_multi, client.clone(), "multi.tg.test", 443, 47010, b"GET /", 2000);
    assert!(resp.is_some() && err.is_none(), "{err:?}");
    let seen = tlsgate_certstore::summarize(leaf.expect("the forged leaf").as_ref()).unwrap();
    assert_eq!(seen.dns_names, vec!["multi.tg.test".to_string()], "{seen:?}");

    // Our own CA: not importable into the trust store, and a server chain that
    // ends at it is refused (code 1001), even with its root in the trust store.
    let pki = pki::Pki::generate();
    let cert = write(c.dir.path(), "own-ca.pem", &pki.root.pem());
    let key_file = write(c.dir.path(), "own-ca.key", &pki.root.key_pem());
    // Trusted first, then imported as the decryption CA: refused the other way
    // round too.
    c.ok(&["trust", "add", cert.to_str().unwrap(), "--as", "ca", "--name", "soon-ours"]);
    let r = c.ctl(&["ca", "import", cert.to_str().unwrap(), key_file.to_str().unwrap()]);
    assert!(!r.status.success() && r.stderr.contains("soon-ours"), "{}", r.stderr);
    c.ok(&["trust", "remove", "soon-ours"]);
    c.ok(&["ca", "import", cert.to_str().unwrap(), key_file.to_str().unwrap()]);
    let r = c.ctl(&["trust", "add", cert.to_str().unwrap(), "--as", "ca"]);
    assert!(!r.status.success() && r.stderr.contains("decryption CA"), "{}", r.stderr);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    let srv = origin_server(vec![pki.leaf.der(), pki.intermediate.der()], key(&pki.leaf.key), false);
    assert!(connect(&mut net, srv, client, pki::SERVER, 47004).is_some());
    let events = settle(&c, &mut net, |e: &[serde_json::Value]| {
        e.iter().any(|e| e["src_port"] == 47004 && e["kind"] == "abort")
    });
    let own = events.iter().find(|e| e["src_port"] == 47004).unwrap();
    assert_eq!(own["verify_code"], 1001, "{own}");
    assert!(c.proxy_log().contains("issued by this appliance's own decryption CA (code 1001, depth 1)"));
    drop(net.stop());
}

/// Every file the two processes wrote (state, kept chains, rings, logs) is
/// closed to other users: state and chains 0600, rings and logs 0640.
fn files_closed_to_others(c: &Control) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&c.state_dir()), 0o700);
    assert_eq!(mode(&c.state_dir().join("state.json")), 0o600);
    let mut seen = 0;
    for (dir, want) in [(c.state_dir().join("chains"), 0o600), (c.events_dir(), 0o640), (c.log_dir(), 0o640)]
    {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                assert_eq!(mode(&e.path()), want, "{}", e.path().display());
                seen += 1;
            }
        }
    }
    for name in ["tls_proxy.log", "events.jsonl", "audit.log"] {
        assert!(c.log_dir().join(name).exists(), "{name}");
    }
    assert!(seen >= 5, "chains, rings and logs were checked");
}

/// SEED problem 1 with our commands: the server accepts only TLS 1.2 AES-256-GCM;
/// without a license the base profile fails with handshake_failure; a
/// strong-crypto license switches both legs to the strong profile at once.
#[test]
fn seed_problem_1_fixed_with_a_strong_crypto_license() {
    let c = configured("seed1");
    let pki = pki::Pki::generate();
    let root = write(c.dir.path(), "origin-root.pem", &pki.root.pem());
    // Names restrict pins, not CAs: a CA "for" a name is refused, not widened.
    let out = c.ctl(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--for", "server.tg.test"]);
    assert!(
        !out.status.success() && out.stderr.contains("apply to pinned server certificates only"),
        "{out:?}"
    );
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    let srv = origin_server(vec![pki.leaf.der(), pki.intermediate.der()], key(&pki.leaf.key), true);
    assert_eq!(c.status().profile, "base");

    let err = connect(&mut net, srv.clone(), client.clone(), pki::SERVER, 42001).expect("base profile fails");
    assert!(err.contains("HandshakeFailure"), "{err}");
    settle(&c, &mut net, |e: &[serde_json::Value]| e.iter().any(|e| e["kind"] == "abort"));
    let log = c.proxy_log();
    assert!(
        log.contains(
            "SSL alert message received from server (0x228 = \"fatal : handshake failure\") in Session: x"
        ),
        "{log}"
    );
    assert!(log.contains("ERROR TLS_Proxy - TLS problem ("), "{log}");

    let lic = c.license("TG-0001", &["strong-crypto"], now() - 60, now() + 86_400, DEVICE);
    let out = c.ok(&["license", "load", lic.to_str().unwrap()]);
    assert!(out.contains("cipher profile strong"), "{out}");
    c.wait_applied(Duration::from_secs(10));
    assert_eq!(c.status().profile, "strong");
    assert_eq!(connect(&mut net, srv, client, pki::SERVER, 42002), None, "strong profile decrypts");
    let events = settle(&c, &mut net, |e: &[serde_json::Value]| e.iter().any(|e| e["kind"] == "decrypted"));
    let decrypted = events.iter().find(|e| e["kind"] == "decrypted").unwrap();
    assert_eq!(decrypted["tls_version"], "TLSv1.2");
    drop(net.stop());
    let shown = c.ok(&["license", "show"]);
    assert!(shown.contains("TG-0001") && shown.contains("valid"), "{shown}");
}

/// Bad input is refused with a reason and a code, and nothing changes: the state
/// file is byte for byte the same.
#[test]
fn bad_inputs_are_refused_and_change_nothing() {
    let c = configured("bad");
    let state = || std::fs::read(c.state_dir().join("state.json")).unwrap();
    let before = state();
    let d = c.dir.path();
    let refused = |args: &[&str], needle: &str| {
        let out = c.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} must be refused: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {needle:?} not in {}", out.stderr);
    };
    // Licenses: malformed, forged (another vendor key), expired, another device.
    let garbage = write(d, "garbage.lic", "{\"payload\": \"not base64!\", \"sig\": \"\"}");
    refused(&["license", "load", garbage.to_str().unwrap()], "malformed license");
    let other = Control::start("other-vendor", "");
    let forged = other.license("TG-FORGED", &["strong-crypto"], now() - 60, now() + 3600, DEVICE);
    refused(&["license", "load", forged.to_str().unwrap()], "signature does not verify");
    let expired = c.license("TG-OLD", &["strong-crypto"], now() - 7200, now() - 3600, DEVICE);
    refused(&["license", "load", expired.to_str().unwrap()], "expired");
    let wrong = c.license("TG-WRONG", &["strong-crypto"], now() - 60, now() + 3600, "some-other-box");
    refused(&["license", "load", wrong.to_str().unwrap()], "this appliance is");
    // Certificates, keys, policies, rules, names.
    let junk =
        write(d, "junk.pem", "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
    refused(&["trust", "add", junk.to_str().unwrap()], "certificate refused");
    let leaf = write(d, "leaf.pem", &pki::Pki::generate().leaf.pem());
    refused(&["trust", "add", leaf.to_str().unwrap(), "--as", "ca"], "not a CA certificate");
    refused(&["ca", "import", junk.to_str().unwrap(), junk.to_str().unwrap()], "decryption CA refused");
    let bad_policy = write(d, "bad.json", r#"{"rules":[{"name":"X","action":"decrypt","sni":["*.*bad"]}]}"#);
    refused(&["policy", "load", bad_policy.to_str().unwrap()], "policy refused");
    refused(&["policy", "check", bad_policy.to_str().unwrap()], "policy refused");
    refused(&["policy", "rule", "add", "Y", "--action", "explode"], "rule");
    refused(&["policy", "rule", "add", "Y", "--action", "block", "--above", "Nope"], "Nope");
    refused(&["policy", "rule", "remove", "Nope"], "Nope");
    refused(&["policy", "rollback", "999"], "999");
    refused(&["trust", "remove", "nothing-by-that-name"], "nothing-by-that-name");
    refused(&["trust", "add", "--from-event", "12345"], "event 12345");
    refused(&["events", "show", "12345"], "event 12345");
    assert_eq!(state(), before, "nothing changed");

    // An unknown request, a malformed line and a frame of another version, on the
    // socket itself: each answered with its code; the connection stays usable.
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(c.socket()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for (line, code) in [
        ("{\"v\":1,\"id\":5,\"request\":{\"op\":\"reboot\"}}", "bad_request"),
        ("this is not json", "bad_request"),
        ("{\"v\":9,\"id\":6,\"request\":{\"op\":\"status\"}}", "unsupported_version"),
        ("{\"v\":1,\"id\":7,\"request\":{\"op\":\"snapshot\",\"version\":1,\"policy\":\"{}\",\"tls\":null}}", "unsupported"),
    ] {
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        r.read_line(&mut answer).unwrap();
        assert!(answer.contains(&format!("\"code\":\"{code}\"")), "{line} → {answer}");
    }
    // A line of 3 MiB: refused as too large, never held whole, and the
    // connection still serves.
    let long = vec![b'x'; 3 << 20];
    s.write_all(&long).unwrap();
    s.write_all(b"\n").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(
        answer.contains("\"code\":\"too_large\"") && answer.contains(&(3usize << 20).to_string()),
        "{answer}"
    );
    s.write_all(b"{\"v\":1,\"id\":8,\"request\":{\"op\":\"ping\"}}\n").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(answer.contains("pong"), "{answer}");
    assert_eq!(state(), before, "nothing changed");
}

/// A crash at any step of a state write leaves the previous or the new state, never
/// a torn one: the daemon is stopped dead at each fail-point while adding a trust
/// entry, restarted, and must read a whole state — without the entry before the
/// rename, with it after.
#[test]
fn a_crash_at_any_write_step_leaves_the_old_or_the_new_state() {
    let ca = write(
        std::env::temp_dir().as_path(),
        &format!("tg-fp-ca-{}.pem", std::process::id()),
        &pki::Pki::generate().root.pem(),
    );
    for (i, fp) in tlsgate_control::failpoint::NAMES.iter().enumerate() {
        let mut c = Control::start(&format!("fp{i}"), "");
        let before = c.status().config_version;
        c.restart(Some(fp));
        let out = c.ctl(&["trust", "add", ca.to_str().unwrap(), "--as", "ca", "--name", "crash test"]);
        assert!(!out.status.success(), "{fp}: the daemon must have stopped: {out:?}");
        let stopped = c.proc.as_mut().unwrap().wait_timeout(Duration::from_secs(5));
        assert!(stopped.is_some_and(|f| !f.status.success()), "{fp}: the daemon aborted");
        c.restart(None);
        let after = c.json(&["trust", "list"]);
        let present = after["entries"].as_array().unwrap().iter().any(|e| e["name"] == "crash test");
        let renamed =
            tlsgate_control::failpoint::NAMES.iter().position(|n| *n == "state-after-rename").unwrap();
        assert_eq!(present, i >= renamed, "{fp}: entry present = {present}");
        let v = c.status().config_version;
        assert_eq!(v, if present { before + 1 } else { before }, "{fp}");
        assert!(!c.state_dir().join("state.json.tmp").exists(), "{fp}: the partial write is gone");
    }
    let _ = std::fs::remove_file(ca);
}

/// The control plane is killed while traffic flows and restarted: the dataplane
/// keeps forwarding on its snapshot, the events produced meanwhile wait in the
/// ring, and every event is logged exactly once.
#[test]
fn events_survive_a_control_plane_restart() {
    let mut c = configured("restart");
    let pki = pki::Pki::generate();
    let root = write(c.dir.path(), "origin-root.pem", &pki.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    let srv = origin_server(vec![pki.leaf.der(), pki.intermediate.der()], key(&pki.leaf.key), false);
    let mut port = 43000;
    let mut run = |net: &mut Net, n: usize| {
        for _ in 0..n {
            port += 1;
            assert_eq!(connect(net, srv.clone(), client.clone(), pki::SERVER, port), None);
        }
    };
    run(&mut net, 10);
    c.kill();
    run(&mut net, 15); // no control plane: decrypted on the last snapshot
    c.restart(None);
    run(&mut net, 5);
    let events = settle(&c, &mut net, |e: &[serde_json::Value]| e.len() >= 30);
    let summary = net.stop();
    let produced = summary.stats.workers[0].get("tls_decrypted");
    assert_eq!(produced, 30);
    let mut ids: Vec<u64> = events.iter().map(|e| e["event_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((events.len(), ids.len()), (30, 30), "each event once");
    assert_eq!(c.status().events_lost, 0);
}

/// Captures: both legs of a decrypted flow, handshake included, in one pcapng with
/// an interface per port (read back with tshark when it is installed).
#[test]
fn capture_writes_both_legs_to_pcapng() {
    let c = configured("capture");
    let pki = pki::Pki::generate();
    let root = write(c.dir.path(), "origin-root.pem", &pki.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let out = c.ok(&["capture", "start", "--host", "198.18.0.2", "--port", "443", "handshake.pcapng"]);
    assert!(out.contains("running"), "{out}");
    let file = c.capture_dir().join("handshake.pcapng");
    // A path is refused: the dataplane (root) writes only into its capture
    // directory, and never over a file.
    for bad in ["/etc/passwd", "../state/state.json"] {
        let r = c.ctl(&["capture", "start", "--host", "198.18.0.2", bad]);
        assert!(!r.status.success() && r.stderr.contains("not a path"), "{bad}: {}", r.stderr);
    }
    let r = c.ctl(&["capture", "start", "--host", "198.18.0.2", "handshake.pcapng"]);
    assert!(!r.status.success() && r.stderr.contains("exists"), "{}", r.stderr);
    let client = client_trusting(&[exported_ca(&c)]);
    let srv = origin_server(vec![pki.leaf.der(), pki.intermediate.der()], key(&pki.leaf.key), false);
    assert_eq!(connect(&mut net, srv, client, pki::SERVER, 44001), None);
    // Unrelated traffic is not captured: another port.
    let listed = c.json(&["capture", "list"]);
    let packets = listed["captures"][0]["packets"].as_u64().unwrap();
    assert!(packets >= 16, "handshake and data on both legs: {listed}");
    let table = c.ok(&["capture", "list"]);
    assert!(table.contains("bytes") && table.contains("capture directory:"), "{table}");
    c.ok(&["capture", "stop"]);
    drop(net.stop());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..4], &0x0A0D_0D0Au32.to_le_bytes(), "a pcapng section header");
    if std::process::Command::new("tshark").arg("-v").output().is_ok() {
        // The two legs share one 4-tuple, so tshark's TCP reassembly cannot tell
        // them apart; read the raw payloads instead: a ClientHello record starts
        // 16 03 xx xx xx 01.
        let out = std::process::Command::new("tshark")
            .args([
                "-r",
                file.to_str().unwrap(),
                "-T",
                "fields",
                "-e",
                "frame.interface_name",
                "-e",
                "tcp.payload",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("inside") && text.contains("outside"), "both ports: {text}");
        let hellos: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, p)| {
                p.replace(':', "").starts_with("1603") && p.replace(':', "").get(10..12) == Some("01")
            })
            .map(|(iface, _)| iface)
            .collect();
        assert_eq!(hellos, ["inside", "outside"], "the client's ClientHello and the appliance's own: {text}");
    }
}

/// Prometheus: live counters of the dataplane and the control plane's own series;
/// `promtool check metrics` accepts the output.
#[test]
fn metrics_are_served_and_pass_promtool() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = Control::start("metrics", &format!("metrics_listen = \"127.0.0.1:{port}\"\n"));
    c.ok(&["ca", "generate"]);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let asa = pki::ciscoasa();
    let policy = write(c.dir.path(), "p.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    assert!(connect(
        &mut net,
        origin_server(vec![asa.der()], key(&asa.key), false),
        client,
        "asa.tg.test",
        45001
    )
    .is_some());
    settle(&c, &mut net, |e: &[serde_json::Value]| !e.is_empty());
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let body = scrape();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for needle in [
        "tlsgate_dataplane_connected 1",
        "tlsgate_rx_packets_total{port=\"inside\",worker=\"0\"}",
        "tlsgate_tls_handshake_failures_total{leg=\"server\",reason=\"self signed certificate\"} 1",
        "tlsgate_flow_verdicts_total{verdict=\"aborted\",worker=\"0\"} 1",
        "tlsgate_policy_rule_hits_total{rule=\"Decrypt-All\",worker=\"0\"}",
        "tlsgate_decryption_ca_expiry_timestamp_seconds",
        "tlsgate_config_version 3",
        "tlsgate_event_ring_drops_total 0",
        "tlsgate_port_imissed_total",
    ] {
        assert!(body.contains(needle), "{needle:?} not in\n{body}");
    }
    // Every counter of the table is exported, in its family, with its label and
    // help (drops only when they counted something).
    for k in tlsgate_api::counters::COUNTERS.iter().filter(|k| k.family.label != "reason") {
        let f = k.family;
        let series = match f.label {
            "" => format!("{}{{worker=\"0\"}} ", f.name),
            l => format!("{}{{{l}=\"{}\",worker=\"0\"}} ", f.name, k.label),
        };
        assert!(body.contains(&series), "{} ({series:?}) not in\n{body}", k.name);
        assert!(body.contains(&format!("# HELP {} {}\n", f.name, f.help)), "{}", f.name);
    }
    let text = body.split_once("\r\n\r\n").unwrap().1.to_string();
    let f = write(c.dir.path(), "metrics.txt", &text);
    if let Ok(out) = std::process::Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
    {
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(net.stop());
}

/// A peer that is neither root nor in the socket's group is refused (when the
/// tests run as root they can act as `nobody`).
#[test]
fn a_peer_without_permission_is_refused() {
    if tlsgate_tests::effective_uid() != Some(0) {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    // A socket anyone can connect to: the daemon's own check must refuse.
    let c = Control::start("perm", "socket_mode = \"0666\"\n");
    let before = c.status().config_version;
    // nobody must be able to reach the socket and the binary.
    let _ = std::process::Command::new("chmod").args(["755", c.dir.path().to_str().unwrap()]).status();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(tlsgate_tests::control::tlsgatectl_binary())
        .arg("--socket")
        .arg(c.socket())
        .args(["ca", "generate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission_denied") && stderr.contains("uid 65534"), "{stderr}");
    assert_eq!(c.status().config_version, before, "nothing changed");
    assert!(c.status().ca.is_none());
}

/// A strong-crypto license that expires switches both legs back to the base
/// profile on its own: a new configuration version, logged in the history.
#[test]
fn an_expiring_license_switches_back_to_base() {
    let c = configured("expiry");
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let lic = c.license("TG-SHORT", &["strong-crypto"], now() - 60, now() + 3, DEVICE);
    c.ok(&["license", "load", lic.to_str().unwrap()]);
    assert_eq!(c.status().profile, "strong");
    let strong_version = c.wait_applied(Duration::from_secs(10)).config_version;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    // The control plane checks the licenses once a second.
    while c.status().config_version == strong_version {
        assert!(std::time::Instant::now() < deadline, "the profile did not go back: {:?}", c.status());
        net.step();
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = c.wait_applied(Duration::from_secs(10));
    assert_eq!(s.config_version, strong_version + 1, "the expiry made a version");
    assert_eq!(s.profile, "base");
    assert!(s.licenses[0].state == "expired", "{:?}", s.licenses);
    let history = c.ok(&["policy", "history"]);
    assert!(history.contains("cipher profile strong → base"), "{history}");
    drop(net.stop());
}

/// Decryption coverage from the dataplane's counters: a decrypted flow, a
/// flow an SNI rule keeps undecrypted and a self-signed server (certificate
/// action) give a third decrypted, each other reason counted; `--since` the
/// first report's time counts only what came after; `/metrics` has the same
/// figures, and the packaged alert rules and dashboard use only series it serves.
#[test]
fn coverage_says_why_flows_were_not_decrypted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = Control::start("coverage", &format!("metrics_listen = \"127.0.0.1:{port}\"\n"));
    c.ok(&["ca", "generate"]);
    let origin = pki::Pki::generate();
    let root = write(c.dir.path(), "root.pem", &origin.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    let policy = r#"{ "rules": [
        { "name": "Bank", "sni": ["bank.tg.test"], "action": "do-not-decrypt" },
        { "name": "Decrypt-All", "action": "decrypt" } ] }"#;
    let policy = write(c.dir.path(), "p.json", policy);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let client = client_trusting(&[exported_ca(&c)]);
    let good =
        origin_server(vec![origin.leaf.der(), origin.intermediate.der()], key(&origin.leaf.key), false);
    let asa = pki::ciscoasa();
    assert_eq!(connect(&mut net, good.clone(), client.clone(), pki::SERVER, 46001), None, "decrypted");
    assert!(connect(
        &mut net,
        origin_server(vec![asa.der()], key(&asa.key), false),
        client.clone(),
        "asa.tg.test",
        46002
    )
    .is_some());
    // The bank's server proves its name to the appliance's probe: the SNI rule holds.
    let bank =
        pki::issue(pki::leaf_params("bank.tg.test", pki::VALID_FROM, pki::VALID_TO), &origin.intermediate);
    let bank = origin_server(vec![bank.der(), origin.intermediate.der()], key(&bank.key), false);
    net.serve_probes(bank.clone(), 443);
    let _ = connect(&mut net, bank, client.clone(), "bank.tg.test", 46003);
    settle(&c, &mut net, |e: &[serde_json::Value]| e.len() >= 3);

    let reason = |r: &serde_json::Value, name: &str| {
        r["reasons"].as_array().unwrap().iter().find(|x| x["reason"] == name).unwrap()["flows"]
            .as_u64()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let all = loop {
        // The workers publish their counters every few milliseconds.
        let r = c.json(&["coverage"]);
        if r["tls_flows"] == 3 || std::time::Instant::now() > deadline {
            break r;
        }
        net.step();
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((all["tls_flows"].as_u64(), all["decrypted"].as_u64()), (Some(3), Some(1)), "{all}");
    assert_eq!((reason(&all, "policy_sni"), reason(&all, "certificate_action")), (1, 1), "{all}");
    assert_eq!((reason(&all, "failure"), reason(&all, "policy_at_syn")), (0, 0), "{all}");
    assert!((all["share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    let text = c.ok(&["coverage"]);
    assert!(text.contains("decrypted") && text.contains("33.3 %") && text.contains("policy_sni"), "{text}");

    // Since the first report: only the next flow.
    let t = all["until"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(connect(&mut net, good, client, pki::SERVER, 46004), None);
    settle(&c, &mut net, |e: &[serde_json::Value]| e.len() >= 4);
    let since = time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let recent = loop {
        let r = c.json(&["coverage", "--since", &since]);
        if r["decrypted"] == 1 && r["tls_flows"] == 1 || std::time::Instant::now() > deadline {
            break r;
        }
        net.step();
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((recent["tls_flows"].as_u64(), recent["since"].as_i64()), (Some(1), Some(t)), "{recent}");

    // /metrics: the same figures; the packaged rules and dashboard use served series.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    for needle in [
        "tlsgate_coverage_flows_total{reason=\"decrypted\"} 2",
        "tlsgate_coverage_flows_total{reason=\"policy_sni\"} 1",
        "tlsgate_coverage_flows_total{reason=\"certificate_action\"} 1",
        "tlsgate_coverage_midstream_segments_total 0",
    ] {
        assert!(body.contains(needle), "{needle:?} not in\n{body}");
    }
    let root = tlsgate_tests::repo_root();
    let rules = std::fs::read_to_string(root.join("packaging/prometheus/tlsgate-alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("packaging/grafana/tlsgate-coverage.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    for text in [&rules, &dashboard] {
        for name in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tlsgate_"))
        {
            assert!(body.contains(&format!("# TYPE {name} ")), "{name} (packaging/) is not served");
        }
    }
    for args in [&["check", "rules", "tlsgate-alerts.yml"][..], &["test", "rules", "tlsgate-alerts.test.yml"]]
    {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(root.join("packaging/prometheus"))
            .output()
            .expect("promtool (scripts/install-deps.sh installs prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(net.stop());
}

/// `policy explain`: the decisions at SYN and after the ClientHello, the rule
/// that decides and why each earlier one does not, from the dataplane's running
/// policy (with its exclusions and admission), or from the committed policy
/// when no dataplane is connected; `--pcap` explains each TLS flow of a capture
/// of the appliance's own, SNI and JA4 read from the client's ClientHello.
#[test]
fn policy_explain_says_why() {
    let c = Control::start("explain", "");
    c.ok(&["ca", "generate"]);
    let origin = pki::Pki::generate();
    let root = write(c.dir.path(), "root.pem", &origin.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca", "--name", "origin root"]);
    let policy = r#"{ "rules": [
        { "name": "Block-8443", "destination": ["198.18.0.2"], "ports": [8443], "action": "block" },
        { "name": "Bank", "sni": ["bank.tg.test"], "action": "do-not-decrypt" },
        { "name": "Finance", "source": ["10.0.0.0/8"], "action": "do-not-decrypt" },
        { "name": "Decrypt-All", "action": "decrypt" } ],
      "settings": { "tls_ports": [443, 8443] } }"#;
    let policy = write(c.dir.path(), "p.json", policy);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let flow =
        ["policy", "explain", "--client", "198.18.0.1", "--server", "198.18.0.2", "--sni", pki::SERVER];
    let offline = c.ok(&flow);
    assert!(offline.contains("after the ClientHello: decrypt (rule Decrypt-All)"), "{offline}");
    assert!(offline.contains("the dataplane is not connected"), "{offline}");

    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let text = c.ok(&flow);
    for line in [
        "at SYN:              read the ClientHello (default action)",
        "after the ClientHello: decrypt (rule Decrypt-All)",
        "rule Block-8443 did not match: port 443 is not in [8443]",
        "rule Bank did not match: SNI server.tg.test matches none of [bank.tg.test]",
        "rule Finance did not match: source 198.18.0.1 is not in [10.0.0.0/8]",
        "note: no learned exclusion for this server",
        "note: admission would admit it now",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert!(!text.contains("not connected"), "{text}");
    let e =
        c.json(&["policy", "explain", "--client", "198.18.0.1", "--server", "198.18.0.2", "--port", "8443"]);
    assert_eq!(
        (e["at_syn"]["action"].as_str(), e["at_syn"]["rule"].as_str()),
        (Some("block"), Some("Block-8443")),
        "{e}"
    );
    let bad = c.ctl(&["policy", "explain", "--client", "198.18.0.1"]);
    assert!(!bad.status.success() && bad.stderr.contains("--server"), "{}", bad.stderr);

    // A capture of the appliance's own: the bank's flow, explained from its hello.
    c.ok(&["capture", "start", "--host", "198.18.0.2", "--port", "443", "bank.pcapng"]);
    let bank =
        pki::issue(pki::leaf_params("bank.tg.test", pki::VALID_FROM, pki::VALID_TO), &origin.intermediate);
    let bank = origin_server(vec![bank.der(), origin.intermediate.der()], key(&bank.key), false);
    net.serve_probes(bank.clone(), 443);
    let _ = connect(&mut net, bank, client_trusting(&[exported_ca(&c)]), "bank.tg.test", 47001);
    c.ok(&["capture", "stop"]);
    let file = c.capture_dir().join("bank.pcapng");
    let text = c.ok(&["policy", "explain", "--pcap", file.to_str().unwrap()]);
    assert!(text.contains("flow 198.18.0.1:47001 -> 198.18.0.2:443 sni bank.tg.test ja4 t13d"), "{text}");
    assert!(text.contains("after the ClientHello: do-not-decrypt (rule Bank)"), "{text}");
    assert!(text.contains("proves the name"), "{text}");
    // One entry per 4-tuple (both legs share it); the appliance's own probe of
    // the bank (from a reserved port) is a flow of the capture too.
    let json = c.json(&["policy", "explain", "--pcap", file.to_str().unwrap()]);
    let flows = json.as_array().unwrap();
    assert_eq!(flows[0]["client"], "198.18.0.1:47001", "{json}");
    assert_eq!(flows.iter().filter(|f| f["client"] == "198.18.0.1:47001").count(), 1, "{json}");
    drop(net.stop());
}

/// Key logs for captures: `capture start --keylog` is refused (and audited)
/// unless the dataplane's own configuration file allows it; allowed, it writes
/// `NAME.keys` (0600) beside the pcapng, and tshark, given it, decrypts both legs
/// (each interface read on its own: they share the 4-tuple) and shows the HTTP
/// request on each. A flow the capture does not match leaves no key.
#[test]
fn capture_keylog_decrypts_both_legs_in_tshark() {
    let c = configured("keylog");
    let pki = pki::Pki::generate();
    let root = write(c.dir.path(), "origin-root.pem", &pki.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    {
        let net = dataplane(&c);
        c.wait_applied(Duration::from_secs(10));
        let r = c.ctl(&["capture", "start", "--host", "198.18.0.2", "--keylog", "refused.pcapng"]);
        assert!(!r.status.success() && r.stderr.contains("allow_keylog = true"), "{}", r.stderr);
        assert!(!c.capture_dir().join("refused.pcapng").exists());
        drop(net.stop());
    }
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n\
         [intercept]\nconnect_timeout_s = 5\n[tls]\nhandshake_timeout_s = 5\n{}allow_keylog = true\n",
        c.dataplane_toml()
    );
    let mut net = Net::new(Config::from_toml(&toml).expect("dataplane config"), 1);
    c.wait_applied(Duration::from_secs(10));
    c.ok(&["capture", "start", "--host", "198.18.0.2", "--port", "443", "--keylog", "keys.pcapng"]);
    let client = client_trusting(&[exported_ca(&c)]);
    let srv = origin_server(vec![pki.leaf.der(), pki.intermediate.der()], key(&pki.leaf.key), false);
    let request = b"GET /keylog-test HTTP/1.1\r\nHost: server.tg.test\r\n\r\n";
    let (resp, err, _, _) =
        tls_exchange(&mut net, srv.clone(), client.clone(), pki::SERVER, 443, 48001, request, 100);
    assert!(err.is_none() && resp.is_some(), "{err:?}");
    c.ok(&["capture", "stop"]);
    // Not captured: no key for it.
    let (resp, _, _, _) = tls_exchange(&mut net, srv, client, pki::SERVER, 443, 48002, request, 100);
    assert!(resp.is_some());
    drop(net.stop());
    let keys = c.capture_dir().join("keys.pcapng.keys");
    let text = std::fs::read_to_string(&keys).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    let randoms: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(randoms.len(), 2, "both legs' client randoms, one flow: {text}");
    assert!(text.lines().all(|l| l.split_whitespace().count() == 3), "{text}");
    let audit = std::fs::read_to_string(c.log_dir().join("audit.log")).unwrap_or_default();
    assert!(
        audit.contains("capture_keylog") && audit.contains("refused.pcapng") && audit.contains("keys.pcapng"),
        "both uses audited: {audit}"
    );
    let pcap = c.capture_dir().join("keys.pcapng");
    for leg in ["inside", "outside"] {
        let part = c.dir.join(&format!("{leg}.pcapng"));
        let split = std::process::Command::new("tshark")
            .args(["-r", pcap.to_str().unwrap(), "-Y", &format!("frame.interface_name == \"{leg}\""), "-w"])
            .arg(&part)
            .output()
            .expect("tshark (scripts/install-deps.sh installs it)");
        assert!(split.status.success(), "{}", String::from_utf8_lossy(&split.stderr));
        let out = std::process::Command::new("tshark")
            .args(["-r", part.to_str().unwrap(), "-o", &format!("tls.keylog_file:{}", keys.display())])
            .args(["-Y", "http.request", "-T", "fields", "-e", "http.request.uri"])
            .output()
            .unwrap();
        let uris = String::from_utf8_lossy(&out.stdout);
        assert_eq!(uris.trim(), "/keylog-test", "{leg}: {uris}{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Operator accounts of the console: `tlsgatectl user add|passwd` read the
/// password from standard input and keep only its Argon2id hash; a login
/// (`user_login`, what the console asks) succeeds with the right password only,
/// an account refuses logins for a minute after five failures, and every
/// change and login is in `audit.log`; bad names and short passwords are
/// refused and change nothing.
#[test]
fn operator_accounts_and_logins() {
    use tlsgate_api::{Request, Response, Secret};
    let c = Control::start("users", "");
    let with_stdin = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(tlsgate_tests::control::tlsgatectl_binary())
            .arg("--socket")
            .arg(c.socket())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = with_stdin(&["user", "add", "alice"], "correct horse battery\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (args, input, why) in [
        (&["user", "add", "alice"][..], "another long password\n", "exists"),
        (&["user", "add", "Alice!"], "another long password\n", "1-32 characters"),
        (&["user", "add", "bob"], "short\n", "12 to 256 characters"),
        (&["user", "passwd", "carol"], "another long password\n", "no user carol"),
    ] {
        let out = with_stdin(args, input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    }
    assert!(c.ok(&["user", "list"]).starts_with("alice "), "only alice");
    let state = std::fs::read_to_string(c.state_dir().join("state.json")).unwrap();
    assert!(state.contains("$argon2id$") && !state.contains("correct horse"), "only the hash is kept");

    let login = |name: &str, password: &str| {
        c.ask(Request::UserLogin { name: name.into(), password: Secret(password.into()), from: None })
            .unwrap()
    };
    assert!(matches!(login("alice", "correct horse battery"), Response::Done { .. }));
    assert!(matches!(login("nobody", "correct horse battery"), Response::Error { .. }));
    for _ in 0..5 {
        assert!(matches!(login("alice", "wrong password here"), Response::Error { .. }));
    }
    let locked = login("alice", "correct horse battery");
    assert!(matches!(&locked, Response::Error { message, .. } if message.contains("locked")), "{locked:?}");
    // Locked for where the guesses came from, not for the operator elsewhere.
    let elsewhere = c.ask(Request::UserLogin {
        name: "alice".into(),
        password: Secret("correct horse battery".into()),
        from: Some("192.0.2.7".parse().unwrap()),
    });
    assert!(matches!(elsewhere, Ok(Response::Done { .. })), "{elsewhere:?}");

    let out = with_stdin(&["user", "passwd", "alice"], "a new long password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Guesses sent all at once get no more than the lock allows (the attempt is
    // counted before the password is checked).
    let wrong = |c: &Control| {
        std::fs::read_to_string(c.log_dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("bob: wrong name or password"))
            .count()
    };
    let socket = c.socket();
    let guesses: Vec<_> = (0..20)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let req = Request::UserLogin {
                    name: "bob".into(),
                    password: Secret("guess guess guess".into()),
                    from: None,
                };
                tlsgate_control::cli::ask(&socket, req).ok()
            })
        })
        .collect();
    for g in guesses {
        assert!(matches!(g.join().unwrap(), Some(Response::Error { .. })));
    }
    // Unknown names share one entry ("nobody" failed once above): four more
    // checked, the rest locked out.
    assert_eq!(wrong(&c), 4, "five checked in all, the rest locked out");
    c.ok(&["user", "remove", "alice"]);
    assert!(c.ok(&["user", "list"]).contains("no operator accounts"));
    let audit = std::fs::read_to_string(c.log_dir().join("audit.log")).unwrap();
    for action in ["user_add", "user_passwd", "user_remove", "\"login\""] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
    assert!(!audit.contains("correct horse"), "no password in the audit log");
}
