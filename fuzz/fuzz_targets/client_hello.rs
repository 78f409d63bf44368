//! Any bytes as the first bytes of a client leg: the ClientHello reader (rustls'
//! Acceptor, as the dataplane drives it) never panics.
#![no_main]
use tlsgate_certstore::rustls::server::Acceptor;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
