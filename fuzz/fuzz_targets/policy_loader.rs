//! Any text as a policy: loading never panics; what validates also compiles and
//! decides.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = tlsgate_policy::Policy::from_json(text) {
        if let Ok(c) = tlsgate_policy::CompiledPolicy::compile(policy, 1) {
            let a = "198.18.0.1".parse().unwrap();
            let b = "198.18.0.2".parse().unwrap();
            let _ = c.decide_at_syn(a, b, 443);
            let _ = c.decide_with_sni(a, b, 443, Some("server.tg.test"));
        }
    }
});
