//! TLS interception in process (no root): a rustls client and a rustls server on
//! smoltcp hosts talk through real dataplane workers (`tlsgate_tests::netsim`), the
//! dataplane terminating TLS on both legs with a certificate forged by its CA.

use std::sync::Arc;

use tlsgate_certstore::pki_types::{CertificateDer, UnixTime};
use tlsgate_certstore::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tlsgate_certstore::{summarize, CaOptions, DecryptionCa};
use tlsgate_tests::netsim::{pattern, tls_exchange, Net};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

#[path = "support/tlsnet.rs"]
mod tlsnet;
use tlsnet::*;

#[test]
fn decrypts_and_reencrypts_with_a_forged_certificate() {
    let pki = origin();
    let setup = setup("strong", &[pki.root.pem()], &[]);
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    // 10 MB each way; the exchange compares both streams byte for byte.
    let request = pattern(10_000_000, 1);
    let out = exchange(&setup, server_config(chain, &pki.leaf.key, false), pki::SERVER, &request, 10_000_000);
    assert!(out.error.is_none(), "client error: {:?}", out.error);
    assert_eq!(out.response.as_ref().map(Vec::len), Some(10_000_000));
    // The client was shown a certificate for the server's name, issued by the
    // decryption CA (it only trusts that CA, so the handshake proves it too).
    let peer = summarize(out.peer.as_ref().expect("peer certificate")).unwrap();
    assert_eq!(peer.issuer, setup.ca.summary().subject);
    assert!(peer.dns_names.iter().any(|n| n == pki::SERVER), "{:?}", peer.dns_names);
    assert!(!peer.is_ca);
    assert_eq!(out.alpn.as_deref(), Some(&b"http/1.1"[..]), "the server's ALPN choice reaches the client");
    assert_eq!(counter(&out.summary, "tls_decrypted"), 1);
    assert_eq!(counter(&out.summary, "tls_aborted"), 0);
    assert_eq!(counter(&out.summary, "intercept_bytes_up"), request.len() as u64, "plaintext relayed up");
    assert_eq!(counter(&out.summary, "intercept_bytes_down"), 10_000_000, "plaintext relayed down");
    // The event: the client's JA4 (the hello this client config sends), the ALPN
    // and the key-exchange group of each leg; the log line carries the JA4.
    let mut hello = Vec::new();
    let name = tlsgate_certstore::pki_types::ServerName::try_from(pki::SERVER).unwrap();
    rustls::ClientConnection::new(client_config(&setup.ca, None), name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let ja4 = tlsgate_certstore::Ja4::from_records(&hello).unwrap().to_string();
    assert!(ja4.starts_with("t13d"), "{ja4}");
    let (log, events) = logs(&setup);
    let e = events.iter().find(|e| e["kind"] == "decrypted").expect("a decrypted event");
    assert_eq!(e["ja4"], ja4.as_str(), "{e}");
    assert_eq!(
        (e["alpn_client"].as_str(), e["alpn_server"].as_str()),
        (Some("http/1.1"), Some("http/1.1")),
        "{e}"
    );
    // The client (aws-lc-rs, like a browser of 2026) offers X25519MLKEM768 and the
    // appliance prefers it; this origin (ring) has X25519 only.
    assert_eq!(
        (e["group_client"].as_str(), e["group_server"].as_str()),
        (Some("X25519MLKEM768"), Some("X25519")),
        "{e}"
    );
    assert_eq!(e["ech_offered"], false);
    assert!(log.contains(&format!(" ja4 {ja4}")), "{log}");
}

/// SEED problem 1: the server speaks TLS 1.2 with AES-256-GCM suites only; the base
/// profile offers none of them.
#[test]
fn seed_problem_1_cipher_mismatch_then_strong_profile() {
    let pki = origin();
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let base = setup("base", &[pki.root.pem()], &[]);
    let out = exchange(&base, server_config(chain.clone(), &pki.leaf.key, true), pki::SERVER, b"GET /", 1000);
    let err = out.error.expect("the client must fail");
    assert!(err.contains("HandshakeFailure") || err.contains("handshake"), "client error: {err}");
    assert_eq!(counter(&out.summary, "tls_aborted"), 1);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 0);
    let (log, events) = logs(&base);
    assert!(
        log.contains(
            "SSL alert message received from server (0x228 = \"fatal : handshake failure\") in Session: x"
        ),
        "tls_proxy.log:\n{log}"
    );
    assert!(log.contains("ERROR TLS_Proxy - TLS problem ("), "tls_proxy.log:\n{log}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "abort");
    assert_eq!(events[0]["sni"], pki::SERVER, "{}", events[0]);
    assert_eq!(events[0]["leg"], "server");
    assert_eq!(
        (&events[0]["cause"], &events[0]["reason"]),
        (&"alert_received".into(), &"alert handshake_failure".into())
    );

    let strong = setup("strong", &[pki.root.pem()], &[]);
    let out = exchange(&strong, server_config(chain, &pki.leaf.key, true), pki::SERVER, b"GET /", 1000);
    assert!(out.error.is_none(), "strong profile: {:?}", out.error);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 1);
}

/// SEED problem 2: a self-signed server certificate without SAN
/// (`/unstructuredName=ciscoasa`) is refused; pinned, it is trusted.
#[test]
fn seed_problem_2_self_signed_then_pinned() {
    let asa = pki::ciscoasa();
    let cfg = server_config(vec![asa.der()], &asa.key, false);
    let plain = setup("strong", &[], &[]);
    let out = exchange(&plain, cfg.clone(), "asa.tg.test", b"GET /", 1000);
    assert!(out.error.is_some(), "the client must fail");
    assert_eq!(counter(&out.summary, "tls_aborted"), 1);
    let (log, events) = logs(&plain);
    for line in [
        "INFO TLS_Proxy - Certificate verification failure: self signed certificate (code 18, depth 0)",
        "INFO TLS_Proxy - Subject: /unstructuredName=ciscoasa",
        "INFO TLS_Proxy - Issuer: /unstructuredName=ciscoasa",
        "ERROR TLS_Proxy - TLS problem (",
    ] {
        assert!(log.contains(line), "missing {line:?} in tls_proxy.log:\n{log}");
    }
    assert_eq!(events[0]["verify_code"], 18);
    assert_eq!(
        (&events[0]["cause"], &events[0]["reason"]),
        (&"certificate".into(), &"self signed certificate".into())
    );
    // The chain the import would need is kept, named by its SHA-256.
    let sha = events[0]["chain_sha256"].as_str().expect("chain sha").to_string();
    let chain = plain.dir.0.join("events/chains").join(format!("{sha}.pem"));
    let pem = std::fs::read_to_string(&chain).expect("chain kept");
    assert!(pem.contains("BEGIN CERTIFICATE"));

    let pinned = setup("strong", &[], &[asa.pem()]);
    let out = exchange(&pinned, cfg, "asa.tg.test", b"GET /", 1000);
    assert!(out.error.is_none(), "pinned: {:?}", out.error);
    let peer = summarize(out.peer.as_ref().unwrap()).unwrap();
    assert!(
        peer.dns_names.iter().any(|n| n == "asa.tg.test"),
        "SNI added where no SAN covers it: {:?}",
        peer.dns_names
    );
    // A different self-signed server is still refused.
    let other = pki::ciscoasa();
    let again = setup("strong", &[], &[asa.pem()]);
    let out =
        exchange(&again, server_config(vec![other.der()], &other.key, false), "asa.tg.test", b"GET /", 10);
    assert!(out.error.is_some());
}

const POLICY: &str = r#"{
  "rules": [
    { "name": "Block-8443", "destination": ["198.18.0.2"], "ports": [8443], "action": "block" },
    { "name": "Bypass-9443", "destination": ["198.18.0.0/24"], "ports": [9443], "action": "do-not-decrypt" },
    { "name": "Bypass-Bank", "sni": ["bank.tg.test"], "action": "do-not-decrypt" },
    { "name": "Decrypt-All", "action": "decrypt" }
  ],
  "settings": { "tls_ports": [443, 8443, 9443] }
}"#;

/// The decryption policy decides: by SNI a flow is relayed untouched (the client
/// sees the origin's own certificate), by address and port a SYN is reset, and the
/// rest is decrypted.
#[test]
fn policy_decides_decrypt_bypass_by_sni_and_block() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(POLICY));
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let root = pki.root.der();

    // SNI bank.tg.test: do-not-decrypt. The origin serves server.tg.test's cert, so
    // the client (which trusts the origin root too) checks the name it asked for:
    // use a certificate for the bank's name.
    let bank =
        pki::issue(pki::leaf_params("bank.tg.test", pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    let bank_cfg = server_config(vec![bank.der(), pki.intermediate.der()], &bank.key, false);
    let out = exchange_on(&setup, bank_cfg, "bank.tg.test", 443, Some(&root), b"GET /", 5000);
    assert!(out.error.is_none(), "bank: {:?}", out.error);
    let peer = summarize(out.peer.as_ref().unwrap()).unwrap();
    assert_eq!(peer.issuer, summarize(&pki.intermediate.der()).unwrap().subject, "the origin's own chain");
    assert_eq!(counter(&out.summary, "tls_not_decrypted"), 1);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 0);

    // Any other name: decrypted with a forged certificate.
    let cfg = server_config(chain.clone(), &pki.leaf.key, false);
    let out = exchange_on(&setup, cfg, pki::SERVER, 443, None, b"GET /", 5000);
    assert!(out.error.is_none(), "decrypt: {:?}", out.error);
    assert_eq!(summarize(out.peer.as_ref().unwrap()).unwrap().issuer, setup.ca.summary().subject);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 1);

    // Port 8443 on the server: blocked at SYN, the client gets a RST.
    let cfg = server_config(chain, &pki.leaf.key, false);
    let out = exchange_on(&setup, cfg, pki::SERVER, 8443, None, b"GET /", 10);
    assert!(out.error.is_some(), "blocked flow must fail");
    assert_eq!(counter(&out.summary, "policy_blocked"), 1);
    assert_eq!(counter(&out.summary, "intercept_created"), 0, "never terminated");

    // Port 9443: do-not-decrypt by address at SYN: the fast path, never terminated;
    // the client meets the origin's own certificate.
    let bank_cfg = server_config(vec![bank.der(), pki.intermediate.der()], &bank.key, false);
    let out = exchange_on(&setup, bank_cfg, "bank.tg.test", 9443, Some(&root), b"GET /", 5000);
    assert!(out.error.is_none(), "bypass by address: {:?}", out.error);
    let peer = summarize(out.peer.as_ref().unwrap()).unwrap();
    assert_eq!(peer.issuer, summarize(&pki.intermediate.der()).unwrap().subject, "the origin's own chain");
    assert_eq!(counter(&out.summary, "intercept_created"), 0, "never terminated");
    assert!(out.summary.stats.workers[0].get("flows_created") >= 1, "a fast-path flow");
    assert_eq!(out.summary.stats.workers[0].rule_hits.get("Bypass-9443"), Some(&1), "counted per rule");
    assert_eq!(counter(&out.summary, "syn_not_decrypted"), 1, "a TLS port bypassed at SYN (coverage)");

    // One event per flow end, in order, with the rule that decided (the bypass at
    // SYN gives none: the fast path is counted, not logged).
    let (_, events) = logs(&setup);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["not_decrypted", "decrypted", "blocked"], "{events:?}");
    assert_eq!(events[0]["rule"], "Bypass-Bank");
    assert_eq!(events[0]["sni"], "bank.tg.test");
    assert_eq!(events[1]["rule"], "Decrypt-All");
    assert_eq!(events[2]["dst_port"], 8443);
}

/// The first failure operators meet: a client without the decryption CA rejects the
/// forged certificate. It is its own reason (client leg), not a server failure.
#[test]
fn client_rejecting_the_forged_certificate_is_a_client_leg_abort() {
    let pki = origin();
    let setup = setup("strong", &[pki.root.pem()], &[]);
    let other_ca =
        DecryptionCa::generate(&CaOptions::with_common_name("not the appliance"), UnixTime::now()).unwrap();
    // The client trusts some other CA only.
    let client_setup = Setup { dir: tempdir::Dir::new("client"), ca: other_ca, config: setup.config.clone() };
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let out = exchange(&client_setup, server_config(chain, &pki.leaf.key, false), pki::SERVER, b"GET /", 10);
    let err = out.error.expect("the client must refuse");
    assert!(err.contains("UnknownIssuer") || err.contains("certificate"), "{err}");
    assert_eq!(counter(&out.summary, "tls_aborted"), 1);
    let (log, events) = logs(&setup);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "abort");
    assert_eq!(events[0]["leg"], "client", "{}", events[0]);
    // rustls' client refuses an unknown issuer with the unknown_ca alert.
    assert_eq!(
        (&events[0]["cause"], &events[0]["reason"]),
        (&"alert_received".into(), &"alert unknown_ca".into())
    );
    assert!(log.contains("while connecting to client"), "{log}");
}

/// After a server-leg failure that is not a certificate's (here no suite in
/// common: SEED problem 1), with the undecryptable action `pass` chosen, the
/// appliance's own handshake (a probe) meets the same failure: a learned exclusion
/// is made, with its event, and later connections to that server (address, port,
/// SNI) are passed through undecrypted: the client meets the server's own
/// certificate, and the event says why. (A certificate failure follows its
/// check's action instead.)
#[test]
fn a_failure_the_probe_confirms_makes_a_learned_exclusion() {
    let pki = origin();
    let cfg = server_config(vec![pki.leaf.der(), pki.intermediate.der()], &pki.leaf.key, true);
    let policy = r#"{ "rules": [ { "name": "Decrypt-All", "action": "decrypt" } ],
                      "settings": { "undecryptable": "pass" } }"#;
    let setup = setup_with_policy("base", &[pki.root.pem()], &[], Some(policy));
    let mut net = Net::new(setup.config.clone(), 1);
    let (_, first, _, _) =
        connect(&mut net, &setup, cfg.clone(), pki::SERVER, 443, 41001, None, b"GET /", 10);
    let first = first.expect("first connection aborts");
    assert!(first.contains("HandshakeFailure"), "our alert: {first}");
    let (_, second, _, _) = connect(&mut net, &setup, cfg, pki::SERVER, 443, 41002, None, b"GET /", 10);
    // The client trusts the decryption CA, so a forged certificate would have been
    // accepted: failing on the certificate means it met the server's own one.
    let second = second.expect("the client does not trust the self-signed server");
    assert!(second.contains("invalid peer certificate"), "passed through: {second}");
    assert_eq!(net.prober.as_ref().map(|p| p.accepted), Some(1), "one probe reached the server");
    let summary = net.stop();
    assert_eq!(counter(&summary, "tls_aborted"), 1);
    assert_eq!(counter(&summary, "exclusions_learned"), 1);
    assert_eq!(counter(&summary, "tls_passed_excluded"), 1);
    assert_eq!(counter(&summary, "tls_passed_remembered"), 0);
    let (log, events) = logs(&setup);
    let mut kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["abort", "exclusion_learned", "passed"], "{events:?}");
    let learned = events.iter().find(|e| e["kind"] == "exclusion_learned").unwrap();
    assert_eq!((learned["sni"].as_str(), learned["cause"].as_str()), (Some(pki::SERVER), Some("excluded")));
    let detail = learned["error_detail"].as_str().unwrap();
    assert!(detail.contains("handshake_failure") && detail.contains("43200 s"), "{detail}");
    let src_port = learned["src_port"].as_u64().unwrap();
    assert!((61_440..65_440).contains(&src_port), "from the reserved range: {learned}");
    let passed = events.iter().find(|e| e["kind"] == "passed").unwrap();
    assert_eq!(passed["cause"], "excluded", "{passed}");
    assert!(log.contains("exclusion_learned"), "{log}");
}

/// By default (`undecryptable: block`, and without a policy) a server-leg failure
/// is not remembered: the next connection to that server is intercepted again and
/// fails again, never passed.
#[test]
fn by_default_a_failed_server_is_not_passed_later() {
    let asa = pki::ciscoasa();
    let cfg = server_config(vec![asa.der()], &asa.key, false);
    let setup = setup("strong", &[], &[]);
    let mut net = Net::new(setup.config.clone(), 1);
    for port in [41011, 41012] {
        let (_, err, _, _) =
            connect(&mut net, &setup, cfg.clone(), "asa.tg.test", 443, port, None, b"GET /", 10);
        let err = err.expect("aborted");
        assert!(err.contains("HandshakeFailure"), "intercepted and refused, not passed: {err}");
    }
    let summary = net.stop();
    assert_eq!((counter(&summary, "tls_aborted"), counter(&summary, "tls_passed_remembered")), (2, 0));
}

/// A client without SNI (connecting by address): the server is verified against its
/// destination IP, and the forged certificate names that IP.
#[test]
fn without_sni_the_server_is_named_by_its_address() {
    let pki = origin();
    let setup = setup("strong", &[pki.root.pem()], &[]);
    // rcgen makes an IP SAN of a name that parses as an address.
    let by_ip = pki::issue(pki::leaf_params("198.18.0.2", pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    let cfg = server_config(vec![by_ip.der(), pki.intermediate.der()], &by_ip.key, false);
    let out = exchange(&setup, cfg, "198.18.0.2", b"GET /", 2000);
    assert!(out.error.is_none(), "client error: {:?}", out.error);
    let peer = summarize(out.peer.as_ref().unwrap()).unwrap();
    assert_eq!(peer.issuer, setup.ca.summary().subject);
    assert!(peer.ip_addresses.iter().any(|a| a.to_string() == "198.18.0.2"), "{:?}", peer.ip_addresses);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 1);
    let (_, events) = logs(&setup);
    assert_eq!(events[0]["sni"], "", "no SNI was sent");
}

/// The other certificate failures operators meet, each with its OpenSSL-style
/// reason in the event and the log: an expired server certificate, a certificate
/// for another name, and one from a CA the trust store does not hold.
#[test]
fn expired_wrong_host_and_unknown_issuer_are_server_leg_aborts() {
    let pki = origin();
    let setup = setup("strong", &[pki.root.pem()], &[]);
    let cases = [
        (
            vec![pki.expired_leaf.der(), pki.intermediate.der()],
            &pki.expired_leaf.key,
            pki::SERVER,
            10,
            "certificate has expired",
        ),
        (vec![pki.leaf.der(), pki.intermediate.der()], &pki.leaf.key, "www.tg.test", 62, "Hostname mismatch"),
        (
            vec![pki.unknown_leaf.der()],
            &pki.unknown_leaf.key,
            pki::SERVER,
            20,
            "unable to get local issuer certificate",
        ),
    ];
    for (i, (chain, key, sni, code, text)) in cases.into_iter().enumerate() {
        let out = exchange(&setup, server_config(chain, key, false), sni, b"GET /", 10);
        assert!(out.error.is_some(), "case {code}: the client must fail");
        assert_eq!(counter(&out.summary, "tls_aborted"), 1, "case {code}");
        assert_eq!(counter(&out.summary, "tls_decrypted"), 0, "case {code}");
        let (log, events) = logs(&setup);
        let e = &events[i];
        assert_eq!((e["kind"].as_str(), e["leg"].as_str()), (Some("abort"), Some("server")), "{e}");
        assert_eq!(e["verify_code"], code, "{e}");
        assert_eq!(e["verify_text"], text, "{e}");
        assert_eq!((e["cause"].as_str(), e["reason"].as_str()), (Some("certificate"), Some(text)), "{e}");
        assert_eq!(e["phase"], "server_handshake", "{e}");
        let line = format!("Certificate verification failure: {text} (code {code}, depth 0)");
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
}

/// An origin that requires a client certificate: the appliance has none to give,
/// the server refuses, and the abort says why.
#[test]
fn a_server_requiring_a_client_certificate_is_named() {
    let pki = origin();
    let setup = setup("strong", &[pki.root.pem()], &[]);
    let mut roots = RootCertStore::empty();
    roots.add(pki.root.der()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(pki.leaf.key.serialize_der().into());
    let cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.leaf.der(), pki.intermediate.der()], key)
        .unwrap();
    let out = exchange(&setup, Arc::new(cfg), pki::SERVER, b"GET /", 10);
    assert!(out.error.is_some(), "the client must fail");
    let (log, events) = logs(&setup);
    assert_eq!(events[0]["kind"], "abort");
    assert_eq!(events[0]["cause"], "client_cert_required", "{}", events[0]);
    let detail = events[0]["error_detail"].as_str().unwrap();
    assert!(detail.contains("requires a client certificate"), "{detail}");
    assert!(log.contains("requires a client certificate"), "{log}");
}

/// A dataplane with a 1 s handshake timeout, a server that accepts TCP on 443 and
/// then says nothing, and a client socket connecting from `client_port`.
fn silent_pair(client_port: u16) -> (Setup, Net, smoltcp::iface::SocketHandle) {
    let mut setup = setup("strong", &[], &[]);
    setup.config.tls.as_mut().unwrap().handshake_timeout_s = 1;
    let mut net = Net::new(setup.config.clone(), 1);
    let ss = net.server.tcp(16 * 1024);
    net.server.sock(ss).listen(443).unwrap();
    let cs = net.client.tcp(16 * 1024);
    net.client.connect(cs, client_port, 443);
    (setup, net, cs)
}

/// A server that accepts TCP but never answers the TLS handshake: after
/// `tls.handshake_timeout_s` the server leg fails like any other server-leg
/// failure (fatal alert to the client, event, remembered).
#[test]
fn a_silent_server_times_out_the_handshake() {
    let (setup, mut net, cs) = silent_pair(42001);
    let client = client_config(&setup.ca, None);
    let mut cconn = rustls::ClientConnection::new(client, "silent.tg.test".try_into().unwrap()).unwrap();

    let mut error = None;
    net.run_until(std::time::Duration::from_secs(20), |n| {
        if let Err(e) = tlsgate_tests::netsim::tls_pump(n.client.sock(cs), &mut cconn) {
            error = Some(e.to_string());
        }
        error.is_some()
    });
    assert!(
        net.elapsed() >= std::time::Duration::from_secs(1),
        "not before the timeout: {:?}",
        net.elapsed()
    );
    assert!(error.unwrap().contains("HandshakeFailure"), "our fatal alert");
    net.client.sock(cs).close();
    let summary = net.stop();
    assert_eq!(counter(&summary, "tls_aborted"), 1);
    let (_, events) = logs(&setup);
    assert_eq!(events[0]["kind"], "abort");
    assert_eq!(events[0]["leg"], "server");
    assert_eq!(events[0]["cause"], "server_timeout", "{}", events[0]);
    let detail = events[0]["error_detail"].as_str().unwrap();
    assert!(detail.contains("did not complete the TLS handshake in time: timeout 1 s"), "{detail}");
}

/// A client that opens TCP and never sends its ClientHello is reset after the
/// handshake timeout, with a timeout event in the ClientHello phase.
#[test]
fn a_client_without_a_client_hello_is_reset_after_the_timeout() {
    let (setup, mut net, cs) = silent_pair(42002);
    net.run_until(std::time::Duration::from_secs(20), |n| {
        n.client.sock(cs).state() == smoltcp::socket::tcp::State::Closed
    });
    let summary = net.stop();
    assert_eq!(counter(&summary, "intercept_timeout"), 1);
    let (_, events) = logs(&setup);
    assert_eq!(events[0]["kind"], "timeout", "{}", events[0]);
    assert_eq!(events[0]["phase"], "client_hello", "{}", events[0]);
    assert_eq!(events[0]["cause"], "client_timeout", "{}", events[0]);
}

/// `certificate_validation: false` (labs only): a server the trust store would
/// refuse is decrypted, and the event and the log say what was ignored.
#[test]
fn with_validation_off_a_refused_chain_is_decrypted_and_reported() {
    let policy = r#"{ "rules": [ { "name": "Decrypt-All", "action": "decrypt" } ],
                      "settings": { "certificate_validation": false } }"#;
    let setup = setup_with_policy("strong", &[], &[], Some(policy));
    let asa = pki::ciscoasa();
    let out =
        exchange(&setup, server_config(vec![asa.der()], &asa.key, false), "asa.tg.test", b"GET /", 1000);
    assert!(out.error.is_none(), "decrypted anyway: {:?}", out.error);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 1);
    assert_eq!(counter(&out.summary, "tls_unverified"), 1);
    let (log, events) = logs(&setup);
    assert_eq!(events[0]["kind"], "decrypted");
    assert_eq!(events[0]["verify_code"], 18);
    assert!(
        log.contains("WARN TLS_Proxy - Certificate verification failure ignored (validation is off): self signed certificate (code 18, depth 0)"),
        "{log}"
    );
}

/// Bytes on a TLS port that are not a complete ClientHello the appliance can read
/// follow the undecryptable action, `block` by default: not TLS, more than 64 KiB
/// without a complete ClientHello, a piece of one then FIN. Each is reset, counted
/// by its reason, and has its event; with `undecryptable: pass` chosen they are
/// passed raw instead.
#[test]
fn bytes_without_a_complete_client_hello_are_blocked_by_default() {
    let hello = {
        let setup = setup("strong", &[], &[]);
        let cfg = client_config(&setup.ca, None);
        let mut c = rustls::ClientConnection::new(cfg, "server.tg.test".try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    };
    let mut too_large = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
    too_large.resize(5 + 0x4000, 0);
    while too_large.len() <= 70_000 {
        too_large.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
        too_large.resize(too_large.len() + 0x4000, 0);
    }
    let cases: [(&str, Vec<u8>, bool, &str); 3] = [
        ("not TLS", b"GET / HTTP/1.1\r\nHost: server.tg.test\r\n\r\n".to_vec(), false, "not_tls"),
        ("a piece, then FIN", hello[..60].to_vec(), true, "hello_incomplete"),
        ("more than 64 KiB", too_large, false, "hello_too_large"),
    ];
    for pass in [false, true] {
        let settings = if pass { r#", "settings": { "undecryptable": "pass" }"# } else { "" };
        let policy =
            format!(r#"{{ "rules": [ {{ "name": "Decrypt-All", "action": "decrypt" }} ]{settings} }}"#);
        let setup = setup_with_policy("strong", &[], &[], Some(&policy));
        let mut net = Net::new(setup.config.clone(), 1);
        let mut servers = Vec::new();
        for (i, (name, bytes, fin, _)) in cases.iter().enumerate() {
            let ss = net.server.tcp(128 * 1024);
            net.server.sock(ss).listen(443).unwrap();
            servers.push(ss);
            let cs = net.client.tcp(128 * 1024);
            net.client.connect(cs, 43000 + i as u16, 443);
            let mut sent = 0;
            net.run_until(std::time::Duration::from_secs(30), |n| {
                let c = n.client.sock(cs);
                if c.can_send() && sent < bytes.len() {
                    sent += c.send_slice(&bytes[sent..]).unwrap();
                }
                if sent == bytes.len() && *fin && c.state() == smoltcp::socket::tcp::State::Established {
                    c.close();
                }
                let s = n.server.sock(ss);
                let passed = s.recv_queue() > 0 || s.state() == smoltcp::socket::tcp::State::CloseWait;
                let reset = c.state() == smoltcp::socket::tcp::State::Closed;
                if pass {
                    passed
                } else {
                    reset
                }
            });
            if pass {
                // Relayed raw: both sides close, so the flow ends and has its event.
                net.client.sock(cs).close();
                net.server.sock(ss).close();
                net.run_until(std::time::Duration::from_secs(30), |n| {
                    use smoltcp::socket::tcp::State::{Closed, TimeWait};
                    matches!(n.client.sock(cs).state(), Closed | TimeWait)
                        && matches!(n.server.sock(ss).state(), Closed | TimeWait)
                });
            } else {
                assert!(net.server.sock(servers[i]).recv_queue() == 0, "{name}: nothing reached the server");
            }
        }
        let summary = net.stop();
        let (_, events) = logs(&setup);
        let kind = if pass { "passed" } else { "blocked" };
        for (_, _, _, cause) in &cases {
            assert!(
                events.iter().any(|e| e["kind"] == kind && e["cause"] == *cause),
                "a {kind} event with cause {cause}: {events:?}"
            );
            assert_eq!(counter(&summary, &format!("undecryptable_{cause}")), 1, "{cause}");
        }
        assert_eq!(counter(&summary, if pass { "tls_passed" } else { "tls_blocked" }), 3);
    }
}

/// A ClientHello begun and finished after the handshake timeout is the client's
/// timeout (phase client_hello): the server leg never saw a ClientHello, nothing is
/// remembered, and the next connection is intercepted as usual.
#[test]
fn a_late_client_hello_is_a_client_timeout() {
    let (setup, mut net, cs) = silent_pair(42003);
    let client = client_config(&setup.ca, None);
    let mut hello = Vec::new();
    rustls::ClientConnection::new(client, "server.tg.test".try_into().unwrap())
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    net.run_until(std::time::Duration::from_secs(10), |n| {
        n.client.sock(cs).state() == smoltcp::socket::tcp::State::Established
    });
    net.client.sock(cs).send_slice(&hello[..1]).unwrap();
    let t0 = net.elapsed();
    // The rest only after the timeout (1 s): the splice is gone by then.
    net.run_until(std::time::Duration::from_secs(20), |n| {
        if n.elapsed() - t0 > std::time::Duration::from_millis(1500) {
            let _ = n.client.sock(cs).send_slice(&hello[1..]);
        }
        n.client.sock(cs).state() == smoltcp::socket::tcp::State::Closed
    });
    let waited = net.elapsed() - t0;
    assert!(waited >= std::time::Duration::from_secs(1), "not before the timeout: {waited:?}");
    let summary = net.stop();
    assert_eq!(counter(&summary, "tls_passed_remembered"), 0);
    let (_, events) = logs(&setup);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e["kind"].as_str(), e["leg"].as_str(), e["phase"].as_str(), e["cause"].as_str()),
        (Some("timeout"), Some("client"), Some("client_hello"), Some("client_timeout")),
        "{e}"
    );
}

/// A client that accepts any server certificate, as a user clicking through the
/// browser's warning would: the test sees what it was shown.
#[derive(Debug)]
struct ClickThrough(
    rustls::crypto::WebPkiSupportedAlgorithms,
    std::sync::Mutex<Vec<CertificateDer<'static>>>,
);

impl rustls::client::danger::ServerCertVerifier for ClickThrough {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &tlsgate_certstore::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.1.lock().unwrap().push(end_entity.clone().into_owned());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn click_through() -> (Arc<ClientConfig>, Arc<ClickThrough>) {
    let provider = rustls::crypto::ring::default_provider();
    let verifier = Arc::new(ClickThrough(provider.signature_verification_algorithms, Default::default()));
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    (Arc::new(cfg), verifier)
}

fn policy_with_certificate_actions(actions: &str) -> String {
    format!(
        r#"{{ "rules": [ {{ "name": "Decrypt-All", "action": "decrypt" }} ],
             "settings": {{ "certificate_actions": {{ {actions} }} }} }}"#
    )
}

/// `untrusted_issuer: untrust` (PAN-OS's forward-untrust): a self-signed server is
/// decrypted anyway, but the client is shown a certificate from the untrust CA,
/// which it does not trust (a browser warns; here the client trusting only the
/// decryption CA refuses it). A user who clicks through is still inspected: the
/// exchange is decrypted and reported with the verify fields.
#[test]
fn a_check_with_the_untrust_action_forges_from_the_untrust_ca() {
    let asa = pki::ciscoasa();
    let server = server_config(vec![asa.der()], &asa.key, false);
    let policy = policy_with_certificate_actions(r#""untrusted_issuer": "untrust""#);
    let setup = setup_with_policy("strong", &[], &[], Some(&policy));
    let mut net = Net::new(setup.config.clone(), 1);
    // A client trusting the decryption CA refuses the untrust CA's certificate.
    let (_, err, _, _) =
        connect(&mut net, &setup, server.clone(), "asa.tg.test", 443, 41501, None, b"GET /", 10);
    let err = err.expect("the untrust CA is not trusted");
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "{err}");
    // One who clicks through: decrypted and relayed.
    let (client, shown) = click_through();
    let (response, err, _, _) =
        tls_exchange(&mut net, server, client, "asa.tg.test", 443, 41502, b"GET /", 1000);
    assert!(err.is_none(), "{err:?}");
    let issuer = summarize(&shown.1.lock().unwrap()[0]).unwrap().issuer;
    assert!(issuer.contains("tlsgate untrusted"), "forged by the untrust CA: {issuer}");
    assert_eq!(response.map(|r| r.len()), Some(1000), "inspection goes on");
    let summary = net.stop();
    assert_eq!((counter(&summary, "tls_untrusted"), counter(&summary, "tls_decrypted")), (2, 1));
    let (_, events) = logs(&setup);
    let decrypted = events.iter().find(|e| e["kind"] == "decrypted").expect("a decrypted event");
    assert_eq!((decrypted["verify_code"].as_u64(), decrypted["cause"].as_str()), (Some(18), Some("closed")));
    assert!(decrypted["error_detail"].as_str().unwrap().contains("untrust CA"), "{decrypted}");
}

/// `untrusted_issuer: pass`: the failing flow is aborted (not replayed), later ones
/// to that server are relayed raw, each with an event; an `expired` check left at
/// `block` still blocks, and other servers are decrypted as usual.
#[test]
fn a_check_with_the_pass_action_passes_later_flows_with_events() {
    let asa = pki::ciscoasa();
    let server = server_config(vec![asa.der()], &asa.key, false);
    let policy = policy_with_certificate_actions(r#""untrusted_issuer": "pass""#);
    let setup = setup_with_policy("strong", &[], &[], Some(&policy));
    let mut net = Net::new(setup.config.clone(), 1);
    let (_, first, _, _) =
        connect(&mut net, &setup, server.clone(), "asa.tg.test", 443, 41601, None, b"GET /", 10);
    assert!(first.expect("aborted").contains("HandshakeFailure"), "the failing flow is aborted");
    for port in [41602, 41603] {
        let (_, later, _, _) =
            connect(&mut net, &setup, server.clone(), "asa.tg.test", 443, port, None, b"GET /", 10);
        assert!(
            later.expect("raw").contains("invalid peer certificate"),
            "relayed raw: the server's own certificate"
        );
    }
    let summary = net.stop();
    assert_eq!((counter(&summary, "tls_aborted"), counter(&summary, "tls_passed_remembered")), (1, 2));
    let (_, events) = logs(&setup);
    assert_eq!(events.iter().filter(|e| e["kind"] == "passed").count(), 2, "{events:?}");
}

/// Post-quantum hybrid key exchange on both legs: against an origin that speaks
/// X25519MLKEM768 (a rustls server on aws-lc-rs) both legs use it, and the
/// origin's ALPN (h2) is negotiated with the client. (`tls.crypto = "ring"`, the
/// fallback to X25519, is in `crypto_ring.rs`: the library is process-wide.)
#[test]
fn x25519mlkem768_on_both_legs() {
    let pki = origin();
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(pki.leaf.key.serialize_der().into());
    let setup = setup("strong", &[pki.root.pem()], &[]);
    let server = tlsgate_tests::netsim::origin_server_pq(chain, key);
    let out = exchange(&setup, server, pki::SERVER, b"GET /", 1000);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.alpn.as_deref(), Some(&b"h2"[..]));
    let (_, events) = logs(&setup);
    let e = events.iter().find(|e| e["kind"] == "decrypted").expect("a decrypted event");
    let groups = (e["group_client"].as_str(), e["group_server"].as_str());
    assert_eq!(groups, (Some("X25519MLKEM768"), Some("X25519MLKEM768")), "{e}");
    assert_eq!((e["alpn_client"].as_str(), e["alpn_server"].as_str()), (Some("h2"), Some("h2")), "{e}");
}

/// A ClientHello larger than one segment (a post-quantum key share and 150 ALPN
/// values: about 3 KB) is read whole: the policy sees its SNI (a block rule for
/// it resets the flow) and another name is decrypted.
#[test]
fn a_client_hello_over_several_segments_is_read_whole() {
    let pki = origin();
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let policy = r#"{"rules": [
        {"name": "Block-Big", "action": "block", "sni": ["blocked.tg.test"]},
        {"name": "Decrypt-All", "action": "decrypt"}]}"#;
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(policy));
    let mut client = (*client_config(&setup.ca, None)).clone();
    client.alpn_protocols = (0..150).map(|i| format!("proto-{i:04}").into_bytes()).collect();
    client.alpn_protocols.push(b"http/1.1".to_vec());
    let client = Arc::new(client);
    let mut hello = Vec::new();
    let name = tlsgate_certstore::pki_types::ServerName::try_from(pki::SERVER).unwrap();
    rustls::ClientConnection::new(client.clone(), name).unwrap().write_tls(&mut hello).unwrap();
    assert!(hello.len() > 2 * 1460, "a hello of {} bytes spans segments", hello.len());
    let mut net = Net::new(setup.config.clone(), 1);
    let server = server_config(chain, &pki.leaf.key, false);
    let (resp, err, _, _) =
        tls_exchange(&mut net, server.clone(), client.clone(), pki::SERVER, 443, 40501, b"GET /", 100);
    assert!(err.is_none() && resp.is_some(), "decrypted: {err:?}");
    let (resp, err, _, _) =
        tls_exchange(&mut net, server, client, "blocked.tg.test", 443, 40502, b"GET /", 100);
    assert!(resp.is_none() && err.is_some(), "blocked by its SNI");
    let summary = net.stop();
    assert_eq!(counter(&summary, "tls_decrypted"), 1);
    assert_eq!(counter(&summary, "tls_blocked"), 1);
    let (_, events) = logs(&setup);
    let blocked = events.iter().find(|e| e["kind"] == "blocked").expect("a blocked event");
    let (sni, rule) = (blocked["sni"].as_str(), blocked["rule"].as_str());
    assert_eq!((sni, rule), (Some("blocked.tg.test"), Some("Block-Big")), "{blocked}");
    assert!(blocked["ja4"].as_str().is_some_and(|j| j.starts_with("t13d")), "{blocked}");
}

/// A policy rule by JA4: the fingerprint of a client whose hello differs (ALPN
/// `bot/1` only) is blocked after its ClientHello; the usual client is decrypted.
#[test]
fn a_ja4_rule_blocks_the_client_it_names() {
    let pki = origin();
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let probe = setup("strong", &[pki.root.pem()], &[]);
    let mut bot = (*client_config(&probe.ca, None)).clone();
    bot.alpn_protocols = vec![b"bot/1".to_vec()];
    let mut hello = Vec::new();
    let name = tlsgate_certstore::pki_types::ServerName::try_from(pki::SERVER).unwrap();
    rustls::ClientConnection::new(Arc::new(bot.clone()), name).unwrap().write_tls(&mut hello).unwrap();
    let bot_ja4 = tlsgate_certstore::Ja4::from_records(&hello).unwrap().to_string();
    let policy = format!(
        r#"{{"rules": [
            {{"name": "Block-Bot", "ja4": ["{bot_ja4}"], "action": "block"}},
            {{"name": "Decrypt-All", "action": "decrypt"}}]}}"#
    );
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&policy));
    let mut bot = (*client_config(&setup.ca, None)).clone();
    bot.alpn_protocols = vec![b"bot/1".to_vec()];
    let mut net = Net::new(setup.config.clone(), 1);
    let server = server_config(chain, &pki.leaf.key, false);
    let (resp, err, _, _) =
        tls_exchange(&mut net, server.clone(), Arc::new(bot), pki::SERVER, 443, 40601, b"GET /", 100);
    assert!(resp.is_none() && err.is_some(), "the named client is blocked");
    let good = client_config(&setup.ca, None);
    let (resp, err, _, _) = tls_exchange(&mut net, server, good, pki::SERVER, 443, 40602, b"GET /", 100);
    assert!(err.is_none() && resp.is_some(), "another client is decrypted: {err:?}");
    drop(net.stop());
    let (_, events) = logs(&setup);
    let blocked = events.iter().find(|e| e["kind"] == "blocked").expect("a blocked event");
    assert_eq!(
        (blocked["rule"].as_str(), blocked["ja4"].as_str()),
        (Some("Block-Bot"), Some(bot_ja4.as_str()))
    );
}

/// A client whose ClientHello offers Encrypted ClientHello as GREASE (as Chromium
/// always does): by default it is decrypted with the outer SNI and the event says
/// ECH was offered; under `ech: block` it is reset (cause `ech_blocked`) while a
/// client without ECH is still decrypted.
#[test]
fn ech_offered_is_recorded_and_blocked_only_when_the_policy_says_so() {
    use tlsgate_certstore::rustls::client::{EchGreaseConfig, EchMode};
    use tlsgate_certstore::rustls::crypto::{aws_lc_rs, hpke::Hpke};
    let pki = origin();
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let suite = aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_128;
    let (placeholder, _) = suite.generate_key_pair().unwrap();
    let ech_client = |ca: &DecryptionCa| {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_ech(EchMode::Grease(EchGreaseConfig::new(suite, placeholder.clone())))
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    for ech in ["decrypt", "block"] {
        let policy = format!(
            r#"{{"rules": [{{"name": "Decrypt-All", "action": "decrypt"}}], "settings": {{"ech": "{ech}"}}}}"#
        );
        let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&policy));
        let mut net = Net::new(setup.config.clone(), 1);
        let server = server_config(chain.clone(), &pki.leaf.key, false);
        let (resp, err, _, _) = tls_exchange(
            &mut net,
            server.clone(),
            ech_client(&setup.ca),
            pki::SERVER,
            443,
            40701,
            b"GET /",
            100,
        );
        let plain = client_config(&setup.ca, None);
        let (resp2, err2, _, _) =
            tls_exchange(&mut net, server, plain, pki::SERVER, 443, 40702, b"GET /", 100);
        assert!(err2.is_none() && resp2.is_some(), "{ech}: a client without ECH is decrypted: {err2:?}");
        drop(net.stop());
        let (_, events) = logs(&setup);
        let first = events.iter().find(|e| e["src_port"] == 40701).expect("an event for the ECH client");
        assert_eq!(first["ech_offered"], true, "{first}");
        if ech == "decrypt" {
            assert!(err.is_none() && resp.is_some(), "decrypted with the outer SNI: {err:?}");
            assert_eq!(
                (first["kind"].as_str(), first["sni"].as_str()),
                (Some("decrypted"), Some(pki::SERVER))
            );
        } else {
            assert!(resp.is_none() && err.is_some(), "reset under ech: block");
            assert_eq!(
                (first["kind"].as_str(), first["cause"].as_str()),
                (Some("blocked"), Some("ech_blocked"))
            );
        }
        let second = events.iter().find(|e| e["src_port"] == 40702).unwrap();
        assert_eq!(second["ech_offered"], false);
    }
}

/// Revocation on the server leg: with a CRL from the origin's issuer
/// (`[tls] crls`) that lists the server's certificate, the flow is a server-leg
/// abort with the verify reason `certificate revoked (code 23)`; a certificate
/// the CRL does not list is decrypted.
#[test]
fn a_revoked_server_certificate_is_a_server_leg_abort() {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
    };
    let pki = origin();
    let leaf = |serial: Vec<u8>| {
        let mut params = pki::leaf_params(pki::SERVER, pki::VALID_FROM, pki::VALID_TO);
        params.serial_number = Some(SerialNumber::from(serial));
        pki::issue(params, &pki.intermediate)
    };
    let (revoked, good) = (leaf(vec![0x66, 0x01]), leaf(vec![0x66, 0x02]));
    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(vec![0x66, 0x01]),
            revocation_time: now - time::Duration::minutes(30),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&pki.intermediate.cert, &pki.intermediate.key)
    .unwrap();
    // A setup checking the CRL, and a connection to an origin showing `leaf`.
    let with_crl = |mut setup: Setup| {
        let crl_file = setup.dir.0.join("origin.crl");
        std::fs::write(&crl_file, crl.pem().unwrap()).unwrap();
        setup.config.tls.as_mut().unwrap().crls = vec![crl_file];
        setup
    };
    let to = |setup: &Setup, leaf: &pki::Issued| {
        let server = server_config(vec![leaf.der(), pki.intermediate.der()], &leaf.key, false);
        exchange(setup, server, pki::SERVER, b"GET /", 100)
    };
    let setup = with_crl(setup("strong", &[pki.root.pem()], &[]));
    let out = to(&setup, &revoked);
    assert!(out.error.is_some(), "the client never gets the revoked server");
    let (log, events) = logs(&setup);
    let e = events.iter().find(|e| e["kind"] == "abort").expect("an abort event");
    assert_eq!((e["leg"].as_str(), e["verify_code"].as_u64()), (Some("server"), Some(23)), "{e}");
    assert_eq!(e["verify_text"], "certificate revoked");
    assert!(
        log.contains("Certificate verification failure: certificate revoked (code 23, depth 0)"),
        "{log}"
    );
    let out = to(&setup, &good);
    assert!(out.error.is_none(), "a certificate the CRL does not list: {:?}", out.error);
    // `certificate_actions.revoked = "untrust"`: decrypted, the client shown a
    // certificate from the untrust CA (which it does not trust).
    let policy = r#"{"rules": [{"name": "Decrypt-All", "action": "decrypt"}],
        "settings": {"certificate_actions": {"revoked": "untrust"}}}"#;
    let untrust = with_crl(setup_with_policy("strong", &[pki.root.pem()], &[], Some(policy)));
    let out = to(&untrust, &revoked);
    assert!(out.error.as_deref().is_some_and(|e| e.contains("UnknownIssuer")), "{:?}", out.error);
    assert_eq!(counter(&out.summary, "tls_untrusted"), 1);
}

/// Revocation from the server's own stapled OCSP response (made by `openssl
/// ocsp`), and the policy's `unknown_status`: a staple saying revoked is a
/// server-leg abort with code 23; with `unknown_status = block`, a good staple is
/// decrypted and no staple (nor CRL) is an abort with code 3; by default (`allow`)
/// a server without either is decrypted.
#[test]
fn stapled_ocsp_and_the_unknown_status_action() {
    use rcgen::SerialNumber;
    let pki = origin();
    let leaf = |serial: Vec<u8>| {
        let mut params = pki::leaf_params(pki::SERVER, pki::VALID_FROM, pki::VALID_TO);
        params.serial_number = Some(SerialNumber::from(serial));
        pki::issue(params, &pki.intermediate)
    };
    let (good, revoked) = (leaf(vec![0x67, 0x01]), leaf(vec![0x67, 0x02]));
    let setup = setup("strong", &[pki.root.pem()], &[]);
    let dir = setup.dir.0.join("ocsp");
    std::fs::create_dir(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    file(
        "index.txt",
        "V\t391231235959Z\t\t6701\tunknown\t/CN=a\nR\t391231235959Z\t250101000000Z\t6702\tunknown\t/CN=b\n",
    );
    let (issuer, issuer_key) =
        (file("issuer.pem", &pki.intermediate.pem()), file("issuer.key", &pki.intermediate.key_pem()));
    let staple_for = |cert: &pki::Issued| {
        let leaf = file("leaf.pem", &cert.pem());
        let openssl = |args: Vec<std::ffi::OsString>| {
            let out = std::process::Command::new("openssl").args(args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        let p = |s: &std::path::Path| s.as_os_str().to_owned();
        let (req, resp) = (dir.join("req.der"), dir.join("resp.der"));
        openssl(vec![
            "ocsp".into(),
            "-no_nonce".into(),
            "-issuer".into(),
            p(&issuer),
            "-cert".into(),
            p(&leaf),
            "-reqout".into(),
            p(&req),
        ]);
        openssl(vec![
            "ocsp".into(),
            "-index".into(),
            p(&dir.join("index.txt")),
            "-CA".into(),
            p(&issuer),
            "-rsigner".into(),
            p(&issuer),
            "-rkey".into(),
            p(&issuer_key),
            "-reqin".into(),
            p(&req),
            "-respout".into(),
            p(&resp),
            "-ndays".into(),
            "1".into(),
        ]);
        std::fs::read(resp).unwrap()
    };
    let stapling = |cert: &pki::Issued, staple: Vec<u8>| {
        let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(cert.key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert_with_ocsp(vec![cert.der(), pki.intermediate.der()], key, staple)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    };
    let abort_code = |setup: &Setup| {
        let (log, events) = logs(setup);
        let e = events.iter().find(|e| e["kind"] == "abort").expect("an abort event").clone();
        assert_eq!(e["leg"], "server", "{e}");
        (e["verify_code"].as_u64(), e["verify_text"].as_str().unwrap_or_default().to_owned(), log)
    };

    // Default policy: a revoked staple is an abort (code 23); no staple is decrypted.
    let out = exchange(&setup, stapling(&revoked, staple_for(&revoked)), pki::SERVER, b"GET /", 100);
    assert!(out.error.is_some(), "the client never gets the revoked server");
    let (code, text, log) = abort_code(&setup);
    assert_eq!((code, text.as_str()), (Some(23), "certificate revoked"));
    assert!(log.contains("certificate revoked (code 23, depth 0)"), "{log}");
    let out = exchange(
        &setup,
        server_config(vec![good.der(), pki.intermediate.der()], &good.key, false),
        pki::SERVER,
        b"GET /",
        100,
    );
    assert!(out.error.is_none(), "unknown status, allowed by default: {:?}", out.error);

    // unknown_status = block: a good staple proves the status; none is code 3.
    let policy = r#"{"rules": [{"name": "Decrypt-All", "action": "decrypt"}],
        "settings": {"certificate_actions": {"unknown_status": "block"}}}"#;
    let strict = setup_with_policy("strong", &[pki.root.pem()], &[], Some(policy));
    let out = exchange(&strict, stapling(&good, staple_for(&good)), pki::SERVER, b"GET /", 100);
    assert!(out.error.is_none(), "a good staple: {:?}", out.error);
    assert_eq!(counter(&out.summary, "tls_decrypted"), 1);
    let out = exchange(
        &strict,
        server_config(vec![good.der(), pki.intermediate.der()], &good.key, false),
        pki::SERVER,
        b"GET /",
        100,
    );
    assert!(out.error.is_some(), "no staple, no CRL: refused");
    let (code, text, log) = abort_code(&strict);
    assert_eq!((code, text.as_str()), (Some(3), "unable to get certificate CRL"));
    assert!(log.contains("unable to get certificate CRL (code 3, depth 0)"), "{log}");
}
