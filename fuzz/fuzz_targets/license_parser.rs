//! Any bytes as a license file: parsing never panics; what parses also verifies
//! (and, signed by no one, is refused) without panicking.
#![no_main]

use std::sync::OnceLock;

/// A fixed vendor key (32 bytes, base64): nothing the fuzzer makes is signed by it.
const VENDOR_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn key() -> &'static tlsgate_certstore::VendorKey {
    static KEY: OnceLock<tlsgate_certstore::VendorKey> = OnceLock::new();
    KEY.get_or_init(|| tlsgate_certstore::VendorKey::from_base64(VENDOR_KEY).expect("fixed vendor key"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(l) = tlsgate_certstore::parse_license(data) {
        let _ = l.payload();
        let _ = l.verify(key(), "dev", 0);
        let _ = l.verify_signature_and_device(key(), "dev");
    }
});
