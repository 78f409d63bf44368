//! Probes in process (no root): the appliance's own handshake with a server proves
//! the SNI of a do-not-decrypt rule, and confirms a server-leg failure before a
//! learned exclusion is made. The netsim's server answers probes as it answers its
//! clients (`Net::serve_probes`), so what a probe meets is what that server does.

use std::sync::Arc;
use std::time::Duration;

use smoltcp::socket::tcp::State;
use tlsgate_certstore::rustls::{self, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tlsgate_tests::netsim::{client_trusting, tls_exchange, tls_pump, Net};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

#[path = "support/tlsnet.rs"]
mod tlsnet;
use tlsnet::*;

/// A do-not-decrypt rule by SNI, and Decrypt-All; `settings` (JSON members) added.
fn bank_policy(settings: &str) -> String {
    format!(
        r#"{{ "rules": [
             {{ "name": "Bypass-Bank", "sni": ["bank.tg.test", "*.bank.tg.test"], "action": "do-not-decrypt" }},
             {{ "name": "Decrypt-All", "action": "decrypt" }} ],
           "settings": {{ "tls_ports": [443, 8443] {settings} }} }}"#
    )
}

/// A server whose certificate is valid for `name` (under the origin root).
fn server_for(pki: &pki::Pki, name: &str) -> Arc<ServerConfig> {
    let leaf = pki::issue(pki::leaf_params(name, pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    server_config(vec![leaf.der(), pki.intermediate.der()], &leaf.key, false)
}

fn issuer(out: &Option<tlsgate_certstore::pki_types::CertificateDer<'static>>) -> String {
    tlsgate_certstore::summarize(out.as_ref().expect("a peer certificate")).unwrap().issuer
}

/// The attack: the SNI of a do-not-decrypt rule sent to a server that does not own
/// the name. The probe gets `server.tg.test`'s certificate, which is not valid for
/// `bank.tg.test`: the flow is decided as if no SNI rule had matched (decrypt),
/// so the server leg meets the same certificate and the flow is aborted, never
/// relayed raw; the failed proof is cached (no second probe). A server that owns
/// the name (here on port 8443) proves it and is not decrypted.
#[test]
fn an_sni_rule_exempts_a_flow_only_when_the_server_proves_the_name() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&bank_policy("")));
    let root = pki.root.der();
    let mut net = Net::new(setup.config.clone(), 1);
    let impostor = server_for(&pki, pki::SERVER);
    for port in [41101, 41102] {
        let (_, err, _, _) = connect(
            &mut net,
            &setup,
            impostor.clone(),
            "bank.tg.test",
            443,
            port,
            Some(&root),
            b"GET /",
            100,
        );
        assert!(
            err.expect("inspected, and refused").contains("HandshakeFailure"),
            "our alert, not the raw server"
        );
    }
    let bank = server_for(&pki, "bank.tg.test");
    let (resp, err, peer, _) =
        connect(&mut net, &setup, bank, "bank.tg.test", 8443, 41103, Some(&root), b"GET /", 100);
    assert!(err.is_none() && resp.is_some(), "the real bank: {err:?}");
    let intermediate = tlsgate_certstore::summarize(&pki.intermediate.der()).unwrap().subject;
    assert_eq!(issuer(&peer), intermediate, "the bank's own chain: not decrypted");
    let summary = net.stop();
    assert_eq!(counter(&summary, "probes_started"), 2, "one per server; the failed proof is cached");
    assert_eq!((counter(&summary, "probes_not_proved"), counter(&summary, "probes_proved")), (1, 1));
    assert_eq!((counter(&summary, "sni_unproved"), counter(&summary, "tls_aborted")), (2, 2));
    assert_eq!(counter(&summary, "tls_not_decrypted"), 1);
    let (_, events) = logs(&setup);
    let aborts: Vec<_> = events.iter().filter(|e| e["kind"] == "abort").collect();
    assert_eq!(aborts.len(), 2, "{events:?}");
    assert_eq!(aborts[0]["rule"], "Decrypt-All", "decided without the SNI rule: {}", aborts[0]);
    assert_eq!(aborts[0]["verify_code"], 62, "hostname mismatch: {}", aborts[0]);
    let bypass = events.iter().find(|e| e["kind"] == "not_decrypted").expect("the bank's flow");
    assert_eq!((bypass["rule"].as_str(), bypass["dst_port"].as_u64()), (Some("Bypass-Bank"), Some(8443)));
}

/// A name whose server does not answer the probe (it times out: a failed result,
/// cached too) is decided as if no SNI rule had matched: here its certificate is
/// valid, so the flow is decrypted, with a reason of its own in its event.
#[test]
fn an_unproved_but_valid_name_is_decrypted_with_its_reason() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&bank_policy("")));
    let mut net = Net::new(setup.config.clone(), 1);
    net.silence_probes();
    let bank = server_for(&pki, "bank.tg.test");
    let (resp, err, peer, _) =
        connect(&mut net, &setup, bank, "bank.tg.test", 443, 41111, Some(&pki.root.der()), b"GET /", 100);
    let held = net.elapsed();
    let summary = net.stop();
    assert!(err.is_none() && resp.is_some(), "{err:?}");
    assert_eq!(issuer(&peer), setup.ca.summary().subject, "decrypted");
    assert!(held >= Duration::from_secs(5), "the ClientHello was held for the probe timeout: {held:?}");
    assert_eq!((counter(&summary, "probes_not_proved"), counter(&summary, "sni_unproved")), (1, 1));
    let (_, events) = logs(&setup);
    assert_eq!(
        (events[0]["kind"].as_str(), events[0]["cause"].as_str()),
        (Some("decrypted"), Some("sni_unproved"))
    );
    assert_eq!(events[0]["rule"], "Decrypt-All");
}

/// `unproved_sni: block`: the impostor's flow is reset, with an event saying why.
#[test]
fn an_unproved_name_is_blocked_when_chosen() {
    let pki = origin();
    let policy = bank_policy(r#", "unproved_sni": "block""#);
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&policy));
    let out = exchange_on(&setup, server_for(&pki, pki::SERVER), "bank.tg.test", 443, None, b"GET /", 10);
    assert!(out.error.is_some(), "blocked");
    assert_eq!((counter(&out.summary, "tls_blocked"), counter(&out.summary, "tls_decrypted")), (1, 0));
    let (log, events) = logs(&setup);
    assert_eq!(
        (events[0]["kind"].as_str(), events[0]["cause"].as_str()),
        (Some("blocked"), Some("sni_unproved"))
    );
    assert!(log.contains("did not prove the SNI"), "{log}");
}

/// A certificate the server shows is valid for the name only under the trust
/// store: a self-signed "bank" proves nothing.
#[test]
fn a_self_signed_certificate_for_the_name_proves_nothing() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[], &[], Some(&bank_policy("")));
    let fake =
        pki::issue(pki::leaf_params("bank.tg.test", pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    // The trust store lacks the origin root: the chain is unknown.
    let cfg = server_config(vec![fake.der(), pki.intermediate.der()], &fake.key, false);
    let out = exchange_on(&setup, cfg, "bank.tg.test", 443, Some(&pki.root.der()), b"GET /", 10);
    // Decrypted as if no SNI rule matched: the server leg then fails on the
    // untrusted chain (block), so the client gets our alert, never the raw flow.
    assert!(out.error.is_some());
    assert_eq!(counter(&out.summary, "tls_not_decrypted"), 0, "never exempted");
    assert_eq!((counter(&out.summary, "probes_not_proved"), counter(&out.summary, "sni_unproved")), (1, 1));
}

fn pass_policy() -> &'static str {
    r#"{ "rules": [ { "name": "Decrypt-All", "action": "decrypt" } ], "settings": { "undecryptable": "pass" } }"#
}

/// A client-provoked failure never makes an exclusion: a ClientHello with a bogus
/// ALPN makes the server (which speaks http/1.1 only) refuse the server leg; the
/// probe, with the appliance's own ALPN, succeeds, so nothing is learned and the
/// next, ordinary client is decrypted.
#[test]
fn a_bogus_alpn_makes_no_exclusion() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(pass_policy()));
    let server = server_for(&pki, pki::SERVER);
    let mut net = Net::new(setup.config.clone(), 1);
    let mut bogus = (*client_config(&setup.ca, None)).clone();
    bogus.alpn_protocols = vec![b"bogus-proto".to_vec()];
    let (_, err, _, _) =
        tls_exchange(&mut net, server.clone(), Arc::new(bogus), pki::SERVER, 443, 41201, b"GET /", 10);
    assert!(err.expect("the attacker's flow fails").contains("HandshakeFailure"));
    let (resp, err, peer, _) = connect(&mut net, &setup, server, pki::SERVER, 443, 41202, None, b"GET /", 10);
    assert!(err.is_none() && resp.is_some(), "{err:?}");
    assert_eq!(issuer(&peer), setup.ca.summary().subject, "decrypted");
    let summary = net.stop();
    assert_eq!(counter(&summary, "probes_not_confirmed"), 1);
    assert_eq!(counter(&summary, "exclusions_learned"), 0);
    assert_eq!((counter(&summary, "tls_decrypted"), counter(&summary, "tls_passed_excluded")), (1, 0));
}

/// Certificate failures and timeouts never make an exclusion, even with
/// `undecryptable: pass`: no probe is even started, and the next connection to
/// the server is intercepted (and fails) again.
#[test]
fn certificate_failures_make_no_exclusion() {
    let asa = pki::ciscoasa();
    let cfg = server_config(vec![asa.der()], &asa.key, false);
    let setup = setup_with_policy("strong", &[], &[], Some(pass_policy()));
    let mut net = Net::new(setup.config.clone(), 1);
    for port in [41301, 41302] {
        let (_, err, _, _) =
            connect(&mut net, &setup, cfg.clone(), "asa.tg.test", 443, port, None, b"GET /", 10);
        assert!(err.expect("aborted").contains("HandshakeFailure"), "intercepted and refused");
    }
    let summary = net.stop();
    assert_eq!((counter(&summary, "tls_aborted"), counter(&summary, "probes_started")), (2, 0));
}

#[test]
fn a_server_timeout_makes_no_exclusion() {
    let mut setup = setup_with_policy("strong", &[], &[], Some(pass_policy()));
    setup.config.tls.as_mut().unwrap().handshake_timeout_s = 1;
    let mut net = Net::new(setup.config.clone(), 1);
    let ss = net.server.tcp(16 * 1024);
    net.server.sock(ss).listen(443).unwrap();
    let cs = net.client.tcp(16 * 1024);
    net.client.connect(cs, 41401, 443);
    let mut conn =
        ClientConnection::new(client_config(&setup.ca, None), "silent.tg.test".try_into().unwrap()).unwrap();
    let mut failed = false;
    net.run_until(Duration::from_secs(20), |n| {
        failed |= tls_pump(n.client.sock(cs), &mut conn).is_err();
        failed
    });
    net.client.sock(cs).close();
    let summary = net.stop();
    assert_eq!((counter(&summary, "tls_aborted"), counter(&summary, "probes_started")), (1, 0));
}

/// A server that requires a client certificate supports no mode the appliance
/// offers: the probe meets the same demand and the exclusion is made.
#[test]
fn a_server_requiring_a_client_certificate_is_excluded() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(pass_policy()));
    let mut roots = RootCertStore::empty();
    roots.add(pki.root.der()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(pki.leaf.key.serialize_der().into());
    let cfg = Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![pki.leaf.der(), pki.intermediate.der()], key)
            .unwrap(),
    );
    let mut net = Net::new(setup.config.clone(), 1);
    let (_, err, _, _) = connect(&mut net, &setup, cfg.clone(), pki::SERVER, 443, 41501, None, b"GET /", 10);
    assert!(err.is_some());
    let (_, err, _, _) = connect(&mut net, &setup, cfg, pki::SERVER, 443, 41502, None, b"GET /", 10);
    // Passed raw: the client meets the server's own certificate and its demand.
    assert!(err.is_some());
    let summary = net.stop();
    assert_eq!((counter(&summary, "exclusions_learned"), counter(&summary, "tls_passed_excluded")), (1, 1));
    let (_, events) = logs(&setup);
    let learned = events.iter().find(|e| e["kind"] == "exclusion_learned").expect("learned");
    assert!(learned["error_detail"].as_str().unwrap().contains("client certificate"), "{learned}");
}

/// Probes are limited per source (`[tls.probe] per_source`): two ClientHellos
/// from one client that both need a proof at once start one probe; the other flow
/// is decided without a proof at once (decrypted), never held or exempted; the
/// probed one is proved and exempted.
#[test]
fn probes_over_the_per_source_limit_are_refused_and_the_flow_is_inspected() {
    let pki = origin();
    let mut setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&bank_policy("")));
    setup.config.tls.as_mut().unwrap().probe.per_source = 1;
    let mut net = Net::new(setup.config.clone(), 1);
    let bank = server_for(&pki, "*.bank.tg.test");
    net.serve_probes(bank.clone(), 443);
    let client = client_trusting(&[setup.ca.cert_der().clone(), pki.root.der()]);
    let mut legs = Vec::new();
    for (i, sni) in ["a.bank.tg.test", "b.bank.tg.test"].into_iter().enumerate() {
        let ss = net.server.tcp(64 * 1024);
        net.server.sock(ss).listen(443).unwrap();
        let cs = net.client.tcp(64 * 1024);
        net.client.connect(cs, 41601 + i as u16, 443);
        let cconn = ClientConnection::new(client.clone(), sni.to_string().try_into().unwrap()).unwrap();
        let sconn = ServerConnection::new(bank.clone()).unwrap();
        legs.push((cs, ss, cconn, sconn));
    }
    net.run_until(Duration::from_secs(30), |n| {
        let mut done = 0;
        for (cs, ss, c, s) in legs.iter_mut() {
            let _ = tls_pump(n.client.sock(*cs), c);
            let _ = tls_pump(n.server.sock(*ss), s);
            done += usize::from(!c.is_handshaking());
        }
        done == 2
    });
    // One was proved and exempted (the bank's own chain), the other decided
    // without a proof: decrypted, never held or exempted unproved.
    let mut issuers: Vec<String> = legs
        .iter()
        .map(|(_, _, c, _)| issuer(&c.peer_certificates().and_then(|p| p.first().cloned())))
        .collect();
    issuers.sort();
    let mut want = vec![
        setup.ca.summary().subject.clone(),
        tlsgate_certstore::summarize(&pki.intermediate.der()).unwrap().subject,
    ];
    want.sort();
    assert_eq!(issuers, want);
    for (cs, ..) in &legs {
        net.client.sock(*cs).abort();
    }
    for _ in 0..50 {
        net.step();
    }
    let states: Vec<State> = legs.iter().map(|(cs, ..)| net.client.sock(*cs).state()).collect();
    let summary = net.stop();
    assert_eq!(
        (counter(&summary, "probes_started"), counter(&summary, "probes_refused")),
        (1, 1),
        "{states:?}"
    );
    assert_eq!(counter(&summary, "sni_unproved"), 1);
}

/// A client of the inside that uses a port of the probes' reserved range to the
/// server a probe is talking to (Windows' ephemeral ports reach 65535): its
/// segments are not the server's answers. They are dropped and counted while the
/// probe runs (never fed to the probe, never answered); its SYN, retried, starts
/// a flow of its own once the probe ended, and it is decrypted.
#[test]
fn a_client_on_a_probe_port_waits_for_the_probe_and_is_decrypted() {
    let pki = origin();
    let setup = setup_with_policy("strong", &[pki.root.pem()], &[], Some(&bank_policy("")));
    let mut net = Net::new(setup.config.clone(), 1);
    // A flow whose SNI needs a proof: its probe (the first: port 61440 from the
    // client's address) gets no answer and runs for its 5 s timeout.
    let bank = server_for(&pki, "bank.tg.test");
    net.stall_next_probe(443, bank.clone());
    let ss = net.server.tcp(64 * 1024);
    net.server.sock(ss).listen(443).unwrap();
    let cs = net.client.tcp(64 * 1024);
    net.client.connect(cs, 41701, 443);
    let client = client_trusting(&[setup.ca.cert_der().clone(), pki.root.der()]);
    let mut cconn = ClientConnection::new(client, "bank.tg.test".try_into().unwrap()).unwrap();
    let mut sconn = ServerConnection::new(bank.clone()).unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        let _ = tls_pump(n.client.sock(cs), &mut cconn);
        let _ = tls_pump(n.server.sock(ss), &mut sconn);
        n.client.sock(cs).may_send() && n.client.sock(cs).send_queue() == 0 && !cconn.wants_write()
    });
    let started = net.elapsed();
    // Another connection from the same client, from port 61440, to the same server.
    let (resp, err, peer, _) = connect(
        &mut net,
        &setup,
        server_for(&pki, pki::SERVER),
        pki::SERVER,
        443,
        61_440,
        None,
        b"GET /",
        10,
    );
    let waited = net.elapsed() - started;
    net.client.sock(cs).abort();
    let summary = net.stop();
    assert!(err.is_none() && resp.is_some(), "{err:?}");
    assert_eq!(issuer(&peer), setup.ca.summary().subject, "decrypted");
    let drops = &summary.stats.workers[0].drops;
    assert!(drops.get("probe_port_collision").copied().unwrap_or(0) >= 1, "{drops:?}");
    assert!(waited >= Duration::from_secs(3), "it waited for the probe: {waited:?}");
    assert_eq!(counter(&summary, "probes_not_proved"), 1);
}

/// A chain the trust store does not know proves nothing, even where `untrust`
/// lets such a server be decrypted: its handshake completes (the verifier
/// tolerates the check), and the proof is checked again, whole. TLS 1.2 (`base`)
/// and 1.3 (`strong`), where the verifier's note may come a pump before the
/// handshake completes. (Found by the attack review.)
#[test]
fn an_untrusted_chain_proves_nothing_under_untrust() {
    for profile in ["base", "strong"] {
        let pki = origin();
        let policy = bank_policy(r#", "certificate_actions": { "untrusted_issuer": "untrust" }"#);
        // The origin root is not in the trust store.
        let setup = setup_with_policy(profile, &[], &[], Some(&policy));
        let fake = server_for(&pki, "bank.tg.test");
        let out = exchange_on(&setup, fake, "bank.tg.test", 443, Some(&pki.root.der()), b"GET /", 100);
        assert_eq!(counter(&out.summary, "probes_not_proved"), 1, "{profile}");
        assert_eq!(counter(&out.summary, "tls_not_decrypted"), 0, "{profile}: never exempted");
        assert_eq!(counter(&out.summary, "tls_untrusted"), 1, "{profile}: decrypted with the untrust CA");
        assert!(out.error.is_some(), "{profile}: the client does not trust the untrust CA");
    }
}

/// A pinned certificate is trusted as it is for the server that shows it, but it
/// proves no name it does not carry. (Found by the attack review.)
#[test]
fn a_pinned_certificate_proves_no_other_name() {
    let other = pki::Pki::generate();
    let printer =
        pki::issue(pki::leaf_params("printer.tg.test", pki::VALID_FROM, pki::VALID_TO), &other.intermediate);
    let setup = setup_with_policy("strong", &[], &[printer.pem()], Some(&bank_policy("")));
    let cfg = server_config(vec![printer.der(), other.intermediate.der()], &printer.key, false);
    let out = exchange_on(&setup, cfg, "bank.tg.test", 443, None, b"GET /", 100);
    assert_eq!(counter(&out.summary, "probes_not_proved"), 1);
    assert_eq!(counter(&out.summary, "tls_not_decrypted"), 0, "never exempted");
}

/// A probe neither resumes nor leaves a session behind: a server whose chain
/// `untrust` tolerates, probed after a bogus-ALPN flow failed (`undecryptable:
/// pass`), is still met with the untrust CA by the next client, not resumed past
/// the verifier and forged by the trusted CA. (Found by the attack review.)
#[test]
fn a_probe_leaves_no_session_behind() {
    let pki = origin();
    let policy = r#"{ "rules": [ { "name": "Decrypt-All", "action": "decrypt" } ],
         "settings": { "undecryptable": "pass", "certificate_actions": { "untrusted_issuer": "untrust" } } }"#;
    let setup = setup_with_policy("base", &[], &[], Some(policy));
    let server = server_for(&pki, pki::SERVER);
    let mut net = Net::new(setup.config.clone(), 1);
    let mut bogus = (*client_config(&setup.ca, None)).clone();
    bogus.alpn_protocols = vec![b"bogus-proto".to_vec()];
    let (_, err, _, _) =
        tls_exchange(&mut net, server.clone(), Arc::new(bogus), pki::SERVER, 443, 41801, b"GET /", 10);
    assert!(err.is_some(), "the bogus ALPN's flow fails: a confirmation probe runs");
    let (_, err, _, _) = connect(&mut net, &setup, server, pki::SERVER, 443, 41802, None, b"GET /", 10);
    let summary = net.stop();
    assert!(err.is_some(), "the untrust CA, refused by the client");
    assert_eq!(counter(&summary, "probes_not_confirmed"), 1);
    assert_eq!((counter(&summary, "tls_untrusted"), counter(&summary, "tls_server_resumed")), (1, 0));
}
