//! Any bytes as the first bytes of a client leg: the ClientHello reader (rustls'
//! Acceptor, as the dataplane drives it) and the JA4 fingerprint never panic.
#![no_main]
use tlsgate_certstore::rustls::server::Acceptor;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The JA4 fingerprint of the same bytes (the dataplane computes it from what
    // the client sent): never a panic, and a fingerprint is always 36 bytes (an
    // ALPN character may itself be `_`: the underscores are not counted).
    if let Some(j) = tlsgate_certstore::Ja4::from_records(data) {
        let text = j.to_string();
        assert_eq!(text.len(), 36, "{text}");
    }
    let mut acceptor = Acceptor::default();
    let mut rd = data;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Ok(Some(accepted)) = acceptor.accept() {
        let ch = accepted.client_hello();
        let _ = ch.server_name();
        let _ = ch.alpn().map(|a| a.count());
        let _ = ch.cipher_suites().len();
    }
});
