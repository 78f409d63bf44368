//! `make bench-intercept`: the intercept path's cost on one worker, measured as the
//! worker thread's CPU time (the simulated client and server run on other threads
//! and are not counted), beside the crypto ceiling measured with ring in the same
//! run. The worker runs with `lab = true` so that it sleeps instead of spinning
//! when idle: its CPU time is then its work (plus a little polling).
//!
//! ```text
//! cargo bench -p tlsgate-tests --bench intercept
//! ```

use std::sync::Arc;
use std::time::Instant;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use tlsgate_certstore::pki_types::UnixTime;
use tlsgate_certstore::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tlsgate_certstore::{CaOptions, DecryptionCa};
use tlsgate_dataplane::config::Config;
use tlsgate_tests::netsim::{rss_bytes, thread_cpu_seconds, tls_exchange, Net};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

/// The public-key work one intercepted connection needs, timed with ring here.
/// Full: server leg X25519 + 3 ECDSA P-256 verifications (leaf, intermediate,
/// handshake signature); forging 1 ECDSA signature; client leg X25519 + 1 ECDSA
/// signature. Warm (forged certificate cached): the same without the forging
/// signature.
fn crypto_ceiling() -> (f64, f64) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let msg = [7u8; 128];
    let sig = key.sign(&rng, &msg).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    let sign = per_op(2000, || {
        let _ = key.sign(&rng, &msg).unwrap();
    });
    let verify = per_op(2000, || public.verify(&msg, sig.as_ref()).unwrap());
    let x25519 = per_op(2000, || {
        let mine = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng).unwrap();
        let peer = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng).unwrap();
        let peer_pub = peer.compute_public_key().unwrap();
        let _ = ring::agreement::agree_ephemeral(
            mine,
            &ring::agreement::UnparsedPublicKey::new(&ring::agreement::X25519, peer_pub.as_ref().to_vec()),
            |k| k.len(),
        );
    });
    // One X25519 "op" above is two key generations and one agreement: a leg needs one
    // generation and one agreement, so about two thirds of it.
    let kx = x25519 * 2.0 / 3.0;
    let warm = 2.0 * kx + 3.0 * verify + sign;
    (warm + sign, warm)
}

fn aes_gcm_ceiling_gbps() -> f64 {
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &[3; 16]).unwrap(),
    );
    let mut buf = vec![0u8; 16 * 1024];
    let n = 20_000u32;
    let t = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&i.to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut buf,
            )
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
    let secs = t.elapsed().as_secs_f64();
    // A decrypted byte is opened once (server leg) and sealed once (client leg).
    (f64::from(n) * buf.len() as f64 * 8.0 / secs / 1e9) / 2.0
}

struct Bench {
    _dir: std::path::PathBuf,
    config: Config,
    client: Arc<ClientConfig>,
}

fn setup() -> (Bench, pki::Pki) {
    let pki = pki::Pki::generate();
    let dir = std::env::temp_dir().join(format!("tg-bench-intercept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = DecryptionCa::generate(&CaOptions::default(), UnixTime::now()).unwrap();
    let w = |n: &str, t: &str| {
        let p = dir.join(n);
        std::fs::write(&p, t).unwrap();
        format!("{:?}", p.display().to_string())
    };
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nstats_interval_s = 0\nlab = true\n\
         [intercept]\nports = [443]\nmax_per_worker = 20000\nbuffer_kib = 16\n\
         [tls]\nca_cert = {}\nca_key = {}\nsystem_bundle = false\nprofile = \"strong\"\ntrust = [{}]\n",
        w("ca.pem", &ca.cert_pem()),
        w("ca.key", &ca.key_pkcs8_pem()),
        w("root.pem", &pki.root.pem())
    );
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let client = Arc::new(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    (Bench { _dir: dir, config: Config::from_toml(&toml).unwrap(), client }, pki)
}

fn server(
    chain: Vec<tlsgate_certstore::pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Arc<ServerConfig> {
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// Worker CPU seconds per connection over `n` connections named by `sni(i)`.
fn connections(b: &Bench, srv: &Arc<ServerConfig>, n: u16, sni: impl Fn(u16) -> String) -> f64 {
    let mut net = Net::new(b.config.clone(), 1);
    let before = thread_cpu_seconds("tg-dataplane").unwrap_or(0.0);
    for i in 0..n {
        let (resp, err, _, _) =
            tls_exchange(&mut net, srv.clone(), b.client.clone(), &sni(i), 443, 20000 + i, b"GET /", 100);
        assert!(err.is_none() && resp.is_some(), "connection {i}: {err:?}");
    }
    let after = thread_cpu_seconds("tg-dataplane").unwrap_or(0.0);
    drop(net.stop());
    (after - before) / f64::from(n)
}

fn main() {
    let (full_ceiling, warm_ceiling) = crypto_ceiling();
    let (b, pki) = setup();
    // A wildcard certificate, so every connection may ask for another name: each
    // name is a forged-certificate cache miss (a full handshake on both legs).
    let wild = pki::issue(pki::leaf_params("*.tg.test", pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    let srv = server(vec![wild.der(), pki.intermediate.der()], &wild.key);
    let n = 300;
    let full = connections(&b, &srv, n, |i| format!("h{i}.tg.test"));
    let warm = connections(&b, &srv, n, |_| "same.tg.test".to_string());

    println!("intercepted TLS connections, one worker (CPU time of the worker thread), {n} each");
    println!("{:<48} {:>10} {:>14} {:>8}", "", "µs/conn", "ceiling µs", "ratio");
    println!(
        "{:<48} {:>10.0} {:>14.0} {:>8.2}",
        "full handshakes (forged-cert cache miss)",
        full * 1e6,
        full_ceiling * 1e6,
        full_ceiling / full
    );
    println!(
        "{:<48} {:>10.0} {:>14.0} {:>8.2}",
        "warm forged-cert cache",
        warm * 1e6,
        warm_ceiling * 1e6,
        warm_ceiling / warm
    );
    println!("  (goal: ratio ≥ 0.7; session resumption and a verified-chain cache are not built yet)");

    // Goodput: one connection, 64 MB from the server, decrypted and re-encrypted.
    let mut net = Net::new(b.config.clone(), 1);
    let bytes = 64 << 20;
    let before = thread_cpu_seconds("tg-dataplane").unwrap_or(0.0);
    let (resp, err, _, _) =
        tls_exchange(&mut net, srv.clone(), b.client.clone(), "bulk.tg.test", 443, 30000, b"GET /", bytes);
    assert!(err.is_none() && resp.is_some(), "bulk: {err:?}");
    let cpu = thread_cpu_seconds("tg-dataplane").unwrap_or(0.0) - before;
    drop(net.stop());
    let gbps = bytes as f64 * 8.0 / cpu / 1e9;
    let ceiling = aes_gcm_ceiling_gbps();
    println!(
        "{:<48} {:>10.2} {:>14.2} {:>8.2}",
        "decrypted goodput, Gbit/s per worker CPU-second",
        gbps,
        ceiling,
        gbps / ceiling
    );
    println!(
        "  (ceiling: AES-128-GCM open + seal of 16 KiB records with ring on this core; goal ≥ 5 Gbit/s)"
    );

    // Memory per idle intercepted flow: 1000 open, idle TLS connections.
    let mut net = Net::new(b.config.clone(), 1);
    let idle = 1000u16;
    let rss0 = rss_bytes().unwrap_or(0);
    for i in 0..idle {
        let (resp, err, _, _) = tls_exchange_keep_open(&mut net, &srv, &b.client, i);
        assert!(err.is_none() && resp.is_some(), "idle {i}: {err:?}");
    }
    let rss1 = rss_bytes().unwrap_or(0);
    let stats = net.stop();
    let active: u64 =
        stats.stats.workers.iter().map(|w| w.intercept.get("active").copied().unwrap_or(0)).sum();
    println!(
        "{:<48} {:>10.0} KiB   ({} flows open; 4 x {} KiB buffers each; the simulated hosts' sockets are included)",
        "memory per idle intercepted TLS flow (RSS)",
        (rss1.saturating_sub(rss0)) as f64 / f64::from(idle) / 1024.0,
        active,
        16
    );
}

/// A connection that stays open: the exchange completes, nobody closes.
fn tls_exchange_keep_open(
    net: &mut Net,
    srv: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    i: u16,
) -> tlsgate_tests::netsim::Seen {
    tlsgate_tests::netsim::tls_exchange_open(
        net,
        srv.clone(),
        client.clone(),
        "idle.tg.test",
        443,
        40000 + i,
        b"GET /",
        10,
    )
}
