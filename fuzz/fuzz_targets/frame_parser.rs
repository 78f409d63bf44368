//! Any bytes as a frame: the parser never panics, and what it accepts is consistent.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = tlsgate_dataplane::wire::parse::parse(data) {
        assert!(usize::from(p.l3_end) <= data.len());
        assert!(p.l4_offset <= p.l3_end || !p.is_ip());
        let key = tlsgate_dataplane::flow::FlowKey::of_frame(&p, data).0;
        let _ = tlsgate_dataplane::flow::FlowHasher::new([1, 2, 3, 4]).hash(&key);
    }
});
