//! In-memory rustls handshakes through our configurations: the seed's two failures
//! and their fixes, and the forged certificate towards the client.

mod support;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use support::handshake::{handshake, Outcome};
use support::pki::{Issued, Pki, SERVER};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName, UnixTime};
use tlsgate_certstore::rustls::crypto::ring as ring_provider;
use tlsgate_certstore::rustls::{
    self, AlertDescription, CertificateError, ClientConnection, PeerIncompatible, RootCertStore,
    ServerConnection,
};
use tlsgate_certstore::{
    client_config, server_config, CaOptions, CipherProfile, DecryptionCa, ForgeCache, ImportAs, LeafKey,
    ServerVerifier, SingleCertResolver, TrustStore, VerifyFailure,
};

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

fn host(name: &str) -> ServerName<'static> {
    ServerName::try_from(name).unwrap().to_owned()
}

/// A plain rustls server (the "real" server) with `suites` (all of rustls' when None).
fn real_server(
    chain: Vec<CertificateDer<'static>>,
    key: &Issued,
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> ServerConnection {
    let mut provider = ring_provider::default_provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match &suites {
        Some(s) => {
            provider.cipher_suites = s.clone();
            &[&rustls::version::TLS12]
        }
        None => rustls::ALL_VERSIONS,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key.key_der())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    ServerConnection::new(Arc::new(config)).unwrap()
}

/// A plain rustls client (the "real" client) trusting `ca`.
fn real_client(ca: &CertificateDer<'static>, name: &str, alpn: &[&[u8]]) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    ClientConnection::new(Arc::new(config), host(name)).unwrap()
}

fn trust_root(p: &Pki) -> TrustStore {
    let mut store = TrustStore::without_system_bundle();
    store.import("test root", p.root.pem().as_bytes(), ImportAs::Ca).unwrap();
    store
}

/// Our server leg: a client connection with our verifier and profile.
fn our_client(verifier: &Arc<ServerVerifier>, profile: CipherProfile, name: &str) -> ClientConnection {
    let config =
        client_config(profile, Arc::clone(verifier), &[b"h2".to_vec(), b"http/1.1".to_vec()]).unwrap();
    ClientConnection::new(config, host(name)).unwrap()
}

fn chain(p: &Pki) -> Vec<CertificateDer<'static>> {
    vec![p.leaf.der(), p.intermediate.der()]
}

fn aes256_only() -> Vec<rustls::SupportedCipherSuite> {
    vec![
        ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ring_provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
}

#[test]
fn seed_problem_1_base_profile_meets_a_server_without_common_suites() {
    let p = Pki::generate();
    let verifier = ServerVerifier::new(trust_root(&p).snapshot());

    let mut client = our_client(&verifier, CipherProfile::Base, SERVER);
    let mut server = real_server(chain(&p), &p.leaf, Some(aes256_only()));
    let out = handshake(&mut client, &mut server);
    assert_eq!(out.client, Some(rustls::Error::AlertReceived(AlertDescription::HandshakeFailure)), "{out:?}");
    assert_eq!(out.server, Some(rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon)));
    assert!(verifier.take_failure().is_none(), "not a certificate failure");

    // The fix: the strong-crypto license, i.e. the strong profile.
    let mut client = our_client(&verifier, CipherProfile::for_license(true), SERVER);
    let mut server = real_server(chain(&p), &p.leaf, Some(aes256_only()));
    let out = handshake(&mut client, &mut server);
    assert!(out.ok(), "{out:?}");
    let suite = client.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn profiles_offer_what_they_say() {
    assert_eq!(
        CipherProfile::Base.suite_names(),
        vec![
            "TLS13_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ]
    );
    let base = CipherProfile::Base.suite_names();
    assert!(!base.iter().any(|s| s.contains("AES_256") || s.contains("CHACHA")), "{base:?}");
    let strong = CipherProfile::Strong.suite_names();
    assert!(strong.iter().any(|s| s == "TLS13_AES_256_GCM_SHA384"), "{strong:?}");
    assert!(strong.iter().any(|s| s == "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"), "{strong:?}");
    assert_eq!("strong".parse::<CipherProfile>().unwrap(), CipherProfile::Strong);
    assert!("k9".parse::<CipherProfile>().is_err());
    assert_eq!(CipherProfile::for_license(false), CipherProfile::Base);

    // Base towards a TLS 1.3-capable server speaks TLS 1.3 with AES-128-GCM: it
    // no longer downgrades.
    let p = Pki::generate();
    let verifier = ServerVerifier::new(trust_root(&p).snapshot());
    let mut client = our_client(&verifier, CipherProfile::Base, SERVER);
    let mut server = real_server(chain(&p), &p.leaf, None);
    assert!(handshake(&mut client, &mut server).ok());
    assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(
        client.negotiated_cipher_suite().unwrap().suite(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    let mut client = our_client(&verifier, CipherProfile::Strong, SERVER);
    let mut server = real_server(chain(&p), &p.leaf, None);
    assert!(handshake(&mut client, &mut server).ok());
    assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn seed_problem_2_self_signed_server_then_pinned() {
    let p = Pki::generate();
    let mut store = trust_root(&p);
    let verifier = ServerVerifier::new(store.snapshot());

    let mut client = our_client(&verifier, CipherProfile::Strong, "asa.tg.test");
    let mut server = real_server(vec![p.ciscoasa.der()], &p.ciscoasa, None);
    let out = handshake(&mut client, &mut server);
    assert_eq!(
        out.client,
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        "{out:?}"
    );
    assert_eq!(
        out.server,
        Some(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
        "the seed's alert"
    );
    let failure = verifier.take_failure().expect("failure recorded");
    assert_eq!((failure.code(), failure.depth), (18, 0));
    assert_eq!(failure.reason.text(), "self signed certificate");
    assert_eq!(failure.subject, "/unstructuredName=ciscoasa");
    assert_eq!(failure.issuer, "/unstructuredName=ciscoasa");
    assert_eq!(failure.chain, vec![p.ciscoasa.der()]);
    assert!(verifier.take_failure().is_none(), "taking clears it");

    // The seed's fix in one step: pin the certificate the failure recorded.
    store.pin("asa", &failure.chain[0]).unwrap();
    let verifier = ServerVerifier::new(store.snapshot());
    let mut client = our_client(&verifier, CipherProfile::Strong, "asa.tg.test");
    let mut server = real_server(vec![p.ciscoasa.der()], &p.ciscoasa, None);
    let out = handshake(&mut client, &mut server);
    assert!(out.ok(), "{out:?}");
    assert!(verifier.take_failure().is_none());
}

fn failing_handshake(
    verifier: &Arc<ServerVerifier>,
    server_cert: &Issued,
    presented: Vec<CertificateDer<'static>>,
) -> Outcome {
    let mut client = our_client(verifier, CipherProfile::Strong, SERVER);
    let mut server = real_server(presented, server_cert, None);
    handshake(&mut client, &mut server)
}

#[test]
fn one_verifier_serves_many_connections_and_threads() {
    let p = Arc::new(Pki::generate());
    let verifier = ServerVerifier::new(trust_root(&p).snapshot());

    // One thread, several connections in turn: each failure is read after its own handshake.
    let out = failing_handshake(&verifier, &p.expired_leaf, vec![p.expired_leaf.der(), p.intermediate.der()]);
    assert_eq!(out.server, Some(rustls::Error::AlertReceived(AlertDescription::CertificateExpired)));
    let expired = verifier.take_failure().unwrap();
    assert_eq!((expired.code(), expired.depth), (10, 0));
    let out = failing_handshake(&verifier, &p.leaf, chain(&p));
    assert!(out.ok());
    assert!(verifier.take_failure().is_none());
    // A failure nobody took is cleared by the next verification on the thread.
    failing_handshake(&verifier, &p.unknown_leaf, vec![p.unknown_leaf.der()]);
    failing_handshake(&verifier, &p.leaf, chain(&p));
    assert!(verifier.take_failure().is_none());

    // Several worker threads share the verifier; each reads its own failure.
    let handles: Vec<_> = [(0usize, 20u32), (1, 62), (2, 26)]
        .into_iter()
        .map(|(which, code)| {
            let (p, verifier) = (Arc::clone(&p), Arc::clone(&verifier));
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let (cert, presented) = match which {
                        0 => (&p.unknown_leaf, vec![p.unknown_leaf.der()]),
                        1 => (&p.other_name_leaf, vec![p.other_name_leaf.der(), p.intermediate.der()]),
                        _ => (&p.client_auth_leaf, vec![p.client_auth_leaf.der(), p.intermediate.der()]),
                    };
                    assert!(failing_handshake(&verifier, cert, presented).client.is_some());
                    assert_eq!(verifier.take_failure().unwrap().code(), code);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn reasons_without_a_rustls_code_travel_in_the_error() {
    let p = Pki::generate();
    let verifier = ServerVerifier::new(trust_root(&p).snapshot());
    let out =
        failing_handshake(&verifier, &p.leaf_under_not_ca, vec![p.leaf_under_not_ca.der(), p.not_ca.der()]);
    let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) = out.client else {
        panic!("{out:?}")
    };
    let carried = other.0.downcast_ref::<VerifyFailure>().expect("the failure itself");
    assert_eq!((carried.code(), carried.depth), (24, 1));
    assert_eq!(carried.subject, "/CN=tlsgate not a CA");
    assert_eq!(out.server, Some(rustls::Error::AlertReceived(AlertDescription::CertificateUnknown)));
    assert_eq!(verifier.take_failure().as_deref(), Some(carried));
}

#[test]
fn forged_certificate_towards_the_client_and_the_whole_interception() {
    let p = Pki::generate();
    let ca = Arc::new(DecryptionCa::generate(&CaOptions::default(), now()).unwrap());
    let mut cache = ForgeCache::new(Arc::clone(&ca), LeafKey::generate().unwrap(), 16);
    let verifier = ServerVerifier::new(trust_root(&p).snapshot());

    // Server leg: our client config towards the real server, with the client's ALPN.
    let mut upstream = our_client(&verifier, CipherProfile::Strong, SERVER);
    let mut server = real_server(chain(&p), &p.leaf, None);
    assert!(handshake(&mut upstream, &mut server).ok());
    let server_chain: Vec<CertificateDer<'static>> =
        upstream.peer_certificates().unwrap().iter().map(|c| c.clone().into_owned()).collect();
    let alpn = upstream.alpn_protocol().map(<[u8]>::to_vec);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // Client leg: the forged certificate, the server's ALPN, both profiles.
    for profile in [CipherProfile::Strong, CipherProfile::Base] {
        let forged = cache.get_or_forge(&host(SERVER), &server_chain, now()).unwrap();
        let config =
            server_config(profile, Arc::new(SingleCertResolver(forged)), &[alpn.clone().unwrap()]).unwrap();
        let mut downstream = ServerConnection::new(config).unwrap();
        let mut client = real_client(ca.cert_der(), SERVER, &[b"h2", b"http/1.1"]);
        let out = handshake(&mut client, &mut downstream);
        assert!(out.ok(), "{profile}: {out:?}");
        assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(downstream.server_name(), Some(SERVER));
        let presented = client.peer_certificates().unwrap();
        assert_eq!(presented.len(), 1, "a self-signed decryption CA is not sent");
        assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3), "{profile}");
    }
    let s = cache.stats();
    assert_eq!((s.misses, s.hits), (1, 1));

    // A client that does not trust the decryption CA refuses the forged certificate.
    let forged = cache.get_or_forge(&host(SERVER), &server_chain, now()).unwrap();
    let config = server_config(CipherProfile::Strong, Arc::new(SingleCertResolver(forged)), &[]).unwrap();
    let mut downstream = ServerConnection::new(config).unwrap();
    let mut client = real_client(&p.root.der(), SERVER, &[]);
    let out = handshake(&mut client, &mut downstream);
    assert_eq!(out.client, Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)));
}
