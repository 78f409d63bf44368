//! `make bench-intercept`: the intercept path's cost on one worker, beside the
//! crypto ceiling measured in the same run with the library in use, for both
//! libraries (`tls.crypto`: aws-lc-rs, then ring).
//!
//! The worker is polled by the simulation itself (`Net::inline`): after the
//! simulated client and server (smoltcp + rustls hosts) have run, their frames are
//! handed to the worker and its polls are timed. The figure is the time spent in
//! the worker's polls: what a connection or a byte costs a core that polls,
//! without the idle polling, sleeps and core sharing of a threaded run on this
//! 2-core machine.
//!
//! The crypto ceiling of a scenario counts the public-key operations its
//! connections really needed, from the dataplane's counters (resumed legs send no
//! certificate, cached chains are not verified again, cached forged certificates
//! are not signed again): a key exchange per leg (X25519MLKEM768 with the
//! client and X25519 with the origin on aws-lc-rs; X25519 on both with ring), ECDSA P-256 verifications (3 for a full
//! server handshake — leaf, intermediate, handshake signature — 1 with a cached
//! chain, 0 resumed), ECDSA signatures (1 per client-leg full handshake, 1 per
//! forged certificate). Ratio = ceiling / measured (goal ≥ 0.7).
//!
//! ```text
//! cargo bench -p tlsgate-tests --bench intercept
//! TG_BENCH=handshakes,goodput,packets,memory TG_BENCH_N=300   # parts, connections
//! TG_BENCH_CRYPTO=aws-lc-rs TG_BENCH_SCENARIO=3                # one library, one scenario
//! TG_BENCH_BUFFER_MAX_KIB=16                                   # buffers never grow
//! ```

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use smoltcp::socket::tcp::State;
use tlsgate_api::DataplaneStats;
use tlsgate_certstore::pki_types::{ServerName, UnixTime};
use tlsgate_certstore::rustls::{self, ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use tlsgate_certstore::{CaOptions, DecryptionCa};
use tlsgate_dataplane::config::Config;
use tlsgate_tests::netsim::{rss_bytes, tls_exchange, tls_exchange_forgotten, tls_pump, Net};

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

/// Seconds per public-key operation, timed on this core with the library the
/// appliance uses (through rustls' provider: what its handshakes call).
struct Crypto {
    /// One key exchange on each leg, together: the client leg as a server with
    /// the library's first group (X25519MLKEM768 with aws-lc-rs, which the
    /// client offers), the server leg as a client that offers that group and
    /// completes with X25519 (the bench's origin has only X25519).
    kx_both: f64,
    verify: f64,
    sign: f64,
}

fn crypto(lib: tlsgate_certstore::CryptoLib) -> Crypto {
    use rustls::crypto::{aws_lc_rs, ring as ring_provider, CryptoProvider};
    use rustls::SignatureScheme;
    let provider: CryptoProvider = match lib {
        tlsgate_certstore::CryptoLib::AwsLcRs => aws_lc_rs::default_provider(),
        _ => ring_provider::default_provider(),
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let public = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let der = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into());
    let key = provider.key_provider.load_private_key(der).unwrap();
    let signer = key.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256]).unwrap();
    let msg = [7u8; 128];
    let sig = signer.sign(&msg).unwrap();
    let alg = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == SignatureScheme::ECDSA_NISTP256_SHA256)
        .unwrap()
        .1[0];
    let sign = per_op(2000, || {
        let _ = signer.sign(&msg).unwrap();
    });
    let verify = per_op(2000, || alg.verify_signature(&public, &msg, &sig).unwrap());
    let first = provider.kx_groups[0];
    let x25519 = provider.kx_groups.iter().find(|g| g.name() == rustls::NamedGroup::X25519).unwrap();
    let client_share = first.start().unwrap().pub_key().to_vec();
    let origin_share = x25519.start().unwrap().pub_key().to_vec();
    let kx_both = per_op(1000, || {
        // Client leg: the appliance answers the client's share.
        let _ = first.start_and_complete(&client_share).unwrap();
        // Server leg: the appliance offers its first group, the origin picks X25519.
        let mine = first.start().unwrap();
        let _ = match mine.hybrid_component() {
            Some(_) => mine.complete_hybrid_component(&origin_share).unwrap(),
            None => mine.complete(&origin_share).unwrap(),
        };
    });
    Crypto { kx_both, verify, sign }
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
    dir: std::path::PathBuf,
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
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nstats_interval_s = 0\n\
         [intercept]\nports = [443]\nmax_per_worker = 20000\nbuffer_kib = 16\n{}\
         [admission]\nmemory_budget_mib = 8192\nhalf_open_per_source = 100000\nhalf_open_per_nat_source = 100000\n\
         [tls]\nca_cert = {}\nca_key = {}\nsystem_bundle = false\nprofile = \"strong\"\ntrust = [{}]\n",
        // TG_BENCH_BUFFER_MAX_KIB: how far buffers may grow (default: the
        // configuration's; 16 turns growth off).
        std::env::var("TG_BENCH_BUFFER_MAX_KIB").map_or(String::new(), |v| format!("buffer_max_kib = {v}\n")),
        w("ca.pem", &ca.cert_pem()),
        w("ca.key", &ca.key_pkcs8_pem()),
        w("root.pem", &pki.root.pem()),
    );
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let client = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    (Bench { dir, config: Config::from_toml(&toml).unwrap(), client }, pki)
}

fn server(
    chain: Vec<tlsgate_certstore::pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
    resumption: bool,
) -> Arc<ServerConfig> {
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    if !resumption {
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
    }
    Arc::new(cfg)
}

fn intercept(s: &DataplaneStats, name: &str) -> u64 {
    s.workers.iter().map(|w| w.get(name)).sum()
}

fn rx_frames(s: &DataplaneStats) -> u64 {
    s.workers.iter().map(|w| w.get("rx_packets_inside") + w.get("rx_packets_outside")).sum()
}

/// What `n` connections cost the worker, and what their crypto needed.
struct Scenario {
    worker_us: f64,
    ceiling_us: f64,
    counts: String,
}

fn connections(
    b: &Bench,
    c: &Crypto,
    srv: &Arc<ServerConfig>,
    n: u16,
    sni: impl Fn(u16) -> String,
) -> Scenario {
    let mut net = Net::inline(b.config.clone());
    for i in 0..n {
        let (resp, err, _, _) =
            tls_exchange(&mut net, srv.clone(), b.client.clone(), &sni(i), 443, 20000 + i, b"GET /", 100);
        assert!(err.is_none() && resp.is_some(), "connection {i}: {err:?}");
    }
    let spent = net.worker_time().as_secs_f64();
    let s = net.stop().stats;
    assert_eq!(intercept(&s, "tls_decrypted"), u64::from(n));
    let nf = f64::from(n);
    let resumed = intercept(&s, "tls_server_resumed") as f64;
    let cached = intercept(&s, "tls_chain_cached") as f64;
    let client_resumed = intercept(&s, "tls_client_resumed") as f64;
    let forged = intercept(&s, "forge_cache_misses") as f64;
    let verifies = 3.0 * (nf - resumed - cached) + cached;
    let signs = (nf - client_resumed) + forged;
    Scenario {
        worker_us: spent / nf * 1e6,
        ceiling_us: (nf * c.kx_both + verifies * c.verify + signs * c.sign) / nf * 1e6,
        counts: format!(
            "origin resumed {resumed}, chain cached {cached}, client resumed {client_resumed}, forged {forged}; \
             {:.1} frames in per connection",
            rx_frames(&s) as f64 / nf
        ),
    }
}

/// An idle decrypted connection the hosts then forget (it stays open in the worker).
fn open_idle(net: &mut Net, b: &Bench, srv: &Arc<ServerConfig>, i: u16) {
    let (resp, err, _, _) =
        tls_exchange_forgotten(net, srv.clone(), b.client.clone(), "idle.tg.test", 443, 10000 + i, b"hi", 10);
    assert!(err.is_none() && resp.is_some(), "idle {i}: {err:?}");
}

/// One decrypted connection exchanging `size`-byte requests and echoes.
struct Active {
    cs: smoltcp::iface::SocketHandle,
    ss: smoltcp::iface::SocketHandle,
    cconn: ClientConnection,
    sconn: rustls::ServerConnection,
}

impl Active {
    fn open(net: &mut Net, b: &Bench, srv: &Arc<ServerConfig>) -> Active {
        let ss = net.server.tcp(64 * 1024);
        net.server.sock(ss).listen(443).unwrap();
        let cs = net.client.tcp(64 * 1024);
        net.client.connect(cs, 60000, 443);
        let mut sconn = rustls::ServerConnection::new(srv.clone()).unwrap();
        let mut cconn =
            ClientConnection::new(b.client.clone(), ServerName::try_from("active.tg.test").unwrap()).unwrap();
        net.run_until(Duration::from_secs(30), |n| {
            let _ = tls_pump(n.client.sock(cs), &mut cconn);
            let _ = tls_pump(n.server.sock(ss), &mut sconn);
            !cconn.is_handshaking() && !sconn.is_handshaking()
        });
        Active { cs, ss, cconn, sconn }
    }

    /// `rounds` exchanges: the worker's ns per frame received.
    fn measure(&mut self, net: &mut Net, rounds: usize, size: usize) -> f64 {
        let (frames0, spent0) = (rx_frames(&net.inline_stats()), net.worker_time());
        let msg = vec![0x5a; size];
        let mut buf = vec![0u8; 64 * 1024];
        let Active { cs, ss, cconn, sconn } = self;
        for _ in 0..rounds {
            cconn.writer().write_all(&msg).unwrap();
            let (mut at_server, mut at_client) = (0, 0);
            net.run_until(Duration::from_secs(30), |n| {
                let _ = tls_pump(n.client.sock(*cs), cconn);
                let _ = tls_pump(n.server.sock(*ss), sconn);
                while let Ok(k) = sconn.reader().read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    at_server += k;
                    sconn.writer().write_all(&buf[..k]).unwrap();
                }
                let _ = tls_pump(n.server.sock(*ss), sconn);
                while let Ok(k) = cconn.reader().read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    at_client += k;
                }
                at_server == size && at_client == size
            });
        }
        for _ in 0..5 {
            net.step();
        }
        assert_eq!(net.client.sock(*cs).state(), State::Established);
        let frames = rx_frames(&net.inline_stats()) - frames0;
        (net.worker_time() - spent0).as_nanos() as f64 / frames as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per-frame cost of one busy decrypted connection with `few`, then `many`,
/// other decrypted connections open on the worker: medians of `batches` batches of
/// `rounds` request/response rounds each, in one simulation. Returns (ns at few,
/// flows open, ns at many, flows open).
fn per_packet(
    b: &Bench,
    srv: &Arc<ServerConfig>,
    few: u16,
    many: u16,
    batches: usize,
) -> (f64, u64, f64, u64) {
    let mut net = Net::inline(b.config.clone());
    for i in 0..few {
        open_idle(&mut net, b, srv, i);
    }
    let mut active = Active::open(&mut net, b, srv);
    let at_few = median((0..batches).map(|_| active.measure(&mut net, 400, 64)).collect());
    let open_few = intercept(&net.inline_stats(), "intercept_active");
    for i in few..many {
        open_idle(&mut net, b, srv, i);
    }
    let at_many = median((0..batches).map(|_| active.measure(&mut net, 400, 64)).collect());
    let open_many = intercept(&net.inline_stats(), "intercept_active");
    drop(net.stop());
    (at_few, open_few, at_many, open_many)
}

/// Memory of `n` idle decrypted flows in the worker: RSS growth per flow while the
/// hosts forget each connection (their memory is reused, so the growth is the
/// dataplane's, allocator overhead included).
fn memory_per_flow(b: &Bench, srv: &Arc<ServerConfig>, n: u16) -> (f64, u64) {
    let mut net = Net::inline(b.config.clone());
    // Warm the allocator and the simulation with a first batch.
    for i in 0..200 {
        open_idle(&mut net, b, srv, i);
    }
    let rss0 = rss_bytes().unwrap_or(0);
    for i in 200..200 + n {
        open_idle(&mut net, b, srv, i);
    }
    let rss1 = rss_bytes().unwrap_or(0);
    let open = intercept(&net.inline_stats(), "intercept_active");
    if std::env::var("TG_BENCH_DEBUG").is_ok() {
        eprintln!("rss {rss0} -> {rss1}");
    }
    drop(net.stop());
    (rss1.saturating_sub(rss0) as f64 / f64::from(n), open)
}

/// Memory of `n` half-open intercepted flows (TCP up on both legs, not a payload
/// byte yet: small buffers, [`tlsgate_dataplane::intercept::admission`]): RSS
/// growth per flow.
fn memory_per_half_open(b: &Bench, n: u16) -> (f64, u64) {
    let mut net = Net::inline(b.config.clone());
    let ss = net.server.tcp(1024);
    net.server.sock(ss).listen(443).unwrap();
    let open = |net: &mut Net, from: u16, to: u16| {
        let mut socks = Vec::new();
        for i in from..to {
            let cs = net.client.tcp(1024);
            net.client.connect(cs, 40000 + i, 443);
            socks.push(cs);
            // The server side: a listener per connection, then the next one.
            net.run_until(Duration::from_secs(30), |n| {
                n.client.sock(cs).is_active() && n.client.sock(cs).may_send()
            });
            let done = net.server.tcp(1024);
            net.server.sock(done).listen(443).unwrap();
        }
        socks
    };
    let _warm = open(&mut net, 0, 200);
    let rss0 = rss_bytes().unwrap_or(0);
    let _socks = open(&mut net, 200, 200 + n);
    let rss1 = rss_bytes().unwrap_or(0);
    let half_open = intercept(&net.inline_stats(), "half_open");
    drop(net.stop());
    (rss1.saturating_sub(rss0) as f64 / f64::from(n), half_open)
}

/// `TG_BENCH=handshakes,goodput,packets,memory` (default: all) picks the parts;
/// `scale` runs only when named (`make bench-scale`).
fn part(name: &str) -> bool {
    std::env::var("TG_BENCH").map_or(name != "scale", |v| v.split(',').any(|p| p == name))
}

/// `make bench-scale`: `workers` workers at once, one per thread, each with its
/// own simulated hosts and `n` full handshakes (every name new). Returns each
/// worker's µs per connection (its polls' time, as in the handshakes part).
fn scale(b: &Bench, c: &Crypto, srv: &Arc<ServerConfig>, workers: usize, n: u16) -> Vec<f64> {
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..workers)
            .map(|w| s.spawn(move || connections(b, c, srv, n, |i| format!("w{w}-{i}.tg.test")).worker_us))
            .collect();
        runs.into_iter().map(|r| r.join().expect("a worker's run")).collect()
    })
}

fn main() {
    let (b, pki) = setup();
    // A wildcard certificate, so every connection may ask for another name.
    let wild = pki::issue(pki::leaf_params("*.tg.test", pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    let chain = vec![wild.der(), pki.intermediate.der()];
    let resuming = server(chain.clone(), &wild.key, true);
    let plain = server(chain, &wild.key, false);
    let n = std::env::var("TG_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);

    if part("handshakes") {
        // Both libraries in one run (TG_BENCH_CRYPTO=aws-lc-rs or ring picks one).
        for lib in [tlsgate_certstore::CryptoLib::AwsLcRs, tlsgate_certstore::CryptoLib::Ring] {
            if std::env::var("TG_BENCH_CRYPTO").is_ok_and(|v| v != lib.as_str()) {
                continue;
            }
            lib.install();
            let c = crypto(lib);
            println!(
                "{} on this core: key exchanges of both legs {:.0} µs, ECDSA P-256 verify {:.0} µs, sign {:.0} µs",
                lib.as_str(),
                c.kx_both * 1e6,
                c.verify * 1e6,
                c.sign * 1e6
            );
            println!(
                "intercepted TLS connections, one worker, {n} per scenario, tls.crypto = {}",
                lib.as_str()
            );
            println!(
                "{:<58} {:>10} {:>11} {:>6} {:>12}",
                "", "worker µs", "ceiling µs", "ratio", "conn/worker-s"
            );
            let scenarios: [(&str, &dyn Fn() -> Scenario); 3] = [
                ("full handshakes (every name new)", &|| {
                    connections(&b, &c, &plain, n, |i| format!("h{i}.tg.test"))
                }),
                ("warm: forged cert + verified chain (origin: no resumption)", &|| {
                    connections(&b, &c, &plain, n, |_| "same.tg.test".into())
                }),
                ("warm: all caches (origin resumes)", &|| {
                    connections(&b, &c, &resuming, n, |_| "same.tg.test".into())
                }),
            ];
            // TG_BENCH_SCENARIO=1,2,3 picks scenarios (default: all).
            let picked = |i: usize| {
                std::env::var("TG_BENCH_SCENARIO")
                    .map_or(true, |v| v.split(',').any(|p| p == (i + 1).to_string()))
            };
            for (i, (name, run)) in scenarios.iter().enumerate() {
                if !picked(i) {
                    continue;
                }
                let s = run();
                println!(
                    "{:<58} {:>10.0} {:>11.0} {:>6.2} {:>12.0}",
                    name,
                    s.worker_us,
                    s.ceiling_us,
                    s.ceiling_us / s.worker_us,
                    1e6 / s.worker_us
                );
                println!("    ({})", s.counts);
            }
        }
        tlsgate_certstore::CryptoLib::AwsLcRs.install();
        println!("  (goal: ratio ≥ 0.7 of the ceiling's rate; the ceiling is timed with the library in use)");
    }

    if part("goodput") {
        // One connection, 64 MB from the server, decrypted and re-encrypted.
        let mut net = Net::inline(b.config.clone());
        let bytes = 64 << 20;
        let (resp, err, _, _) = tls_exchange(
            &mut net,
            plain.clone(),
            b.client.clone(),
            "bulk.tg.test",
            443,
            30000,
            b"GET /",
            bytes,
        );
        assert!(err.is_none() && resp.is_some(), "bulk: {err:?}");
        let gbps = bytes as f64 * 8.0 / net.worker_time().as_secs_f64() / 1e9;
        drop(net.stop());
        let ceiling = aes_gcm_ceiling_gbps();
        println!(
            "{:<58} {:>10.2} {:>11.2} {:>6.2}",
            "decrypted goodput, Gbit/s per worker second (64 MB)",
            gbps,
            ceiling,
            gbps / ceiling
        );
        println!(
            "  (ceiling: AES-128-GCM open + seal of 16 KiB records with ring on this core; goal ≥ 5 Gbit/s)"
        );
    }

    if part("packets") {
        // Per-frame cost with few and with many concurrent intercepted flows.
        let (few, few_open, many, many_open) = per_packet(&b, &resuming, 100, 10_000, 5);
        println!(
            "worker ns per frame, one connection's 64 B request/response rounds (median of 5 x 400): \
             {few:.0} with {few_open} flows open, {many:.0} with {many_open} open: {:.2}x (goal ≤ 1.2x)",
            many / few
        );
    }

    if part("scale") {
        let lib = tlsgate_certstore::CryptoLib::AwsLcRs;
        lib.install();
        let c = crypto(lib);
        let counts: Vec<usize> = std::env::var("TG_BENCH_WORKERS")
            .unwrap_or_else(|_| "1,2,4,8".into())
            .split(',')
            .filter_map(|w| w.trim().parse().ok())
            .collect();
        println!(
            "intercept: W workers at once, one thread each with its own simulated hosts, {n} full handshakes \
             per worker (every name new), tls.crypto = {}",
            lib.as_str()
        );
        println!(
            "{:<10} {:>16} {:>22} {:>10}",
            "workers", "µs/conn median", "conn/worker-s summed", "factor"
        );
        let mut base = None;
        for w in counts {
            let per = scale(&b, &c, &plain, w, n);
            let summed: f64 = per.iter().map(|us| 1e6 / us).sum();
            let one = *base.get_or_insert(summed);
            println!("{:<10} {:>16.0} {:>22.0} {:>9.2}x", w, median(per.clone()), summed, summed / one);
        }
        println!(
            "  (each worker's rate is over its own polls' time; the sum is the machine's rate when every worker\n   \
             has a core of its own, and the factor shows what running together costs each one: shared caches,\n   \
             memory, the allocator. Goal >= 7x at 8 workers, on a machine with 16 cores: with fewer than\n   \
             2 x W cores the workers and their simulated hosts share CPUs and the figure says only that\n   \
             the harness works)"
        );
    }

    let alone = |name: &str| std::env::var("TG_BENCH").as_deref() == Ok(name);
    if part("memory") && !alone("memory") {
        // Each in a fresh process: memory the other parts freed would be reused
        // and hide the growth.
        for which in ["memory", "halfopen"] {
            let out = std::process::Command::new(std::env::current_exe().expect("own path"))
                .arg("--bench")
                .env("TG_BENCH", which)
                .output()
                .expect("memory measurement");
            let text = String::from_utf8_lossy(&out.stdout);
            print!(
                "{}",
                text.lines()
                    .filter(|l| l.starts_with("memory"))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
        }
    } else if alone("halfopen") {
        let (bytes, half_open) = memory_per_half_open(&b, 2000);
        println!(
            "memory per half-open intercepted flow: {:.1} KiB (RSS growth over 2000 more TCP connections \
             without a payload byte, {half_open} half-open; small buffers until the first byte)",
            bytes / 1024.0
        );
    } else if part("memory") {
        let idle = 2000;
        let (bytes, open) = memory_per_flow(&b, &resuming, idle);
        println!(
            "memory per idle decrypted flow: {:.0} KiB (RSS growth over {idle} more flows, {open} open; \
             4 x 16 KiB TCP buffers allocated each, resident as far as touched)",
            bytes / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&b.dir);
}
