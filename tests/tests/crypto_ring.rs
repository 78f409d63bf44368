//! `tls.crypto = "ring"`: the appliance's legs on ring, which has no
//! post-quantum group, fall back to X25519 with a client and an origin that both
//! offer X25519MLKEM768. A test binary of its own: the crypto library is
//! process-wide (one per dataplane), so no other test may run beside it.

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

#[path = "support/tlsnet.rs"]
mod tlsnet;
use tlsnet::*;

#[test]
fn with_ring_both_legs_fall_back_to_x25519() {
    let pki = origin();
    let chain = vec![pki.leaf.der(), pki.intermediate.der()];
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(pki.leaf.key.serialize_der().into());
    let mut setup = setup("strong", &[pki.root.pem()], &[]);
    setup.config.tls.as_mut().unwrap().crypto = "ring".into();
    let server = tlsgate_tests::netsim::origin_server_pq(chain, key);
    let out = exchange(&setup, server, pki::SERVER, b"GET /", 1000);
    assert!(out.error.is_none(), "{:?}", out.error);
    let (_, events) = logs(&setup);
    let e = events.iter().find(|e| e["kind"] == "decrypted").expect("a decrypted event");
    let groups = (e["group_client"].as_str(), e["group_server"].as_str());
    assert_eq!(groups, (Some("X25519"), Some("X25519")), "{e}");
    assert_eq!(tlsgate_certstore::CryptoLib::current(), tlsgate_certstore::CryptoLib::Ring);
}
