//! Any line as a control-socket frame: decoding never panics; what decodes
//! encodes again to a line that decodes to the same frame.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = tlsgate_api::Frame::decode(text) {
        let again = tlsgate_api::Frame::decode(&frame.encode()).expect("an encoded frame decodes");
        assert_eq!(again, frame);
    }
    let _ = tlsgate_api::Frame::id_of(text);
});
