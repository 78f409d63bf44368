//! `make bench-intercept` (second part): what moving the decryption CA's key out
//! of the dataplane costs.
//!
//! 1. The signer itself: `SignLeaves` round trips over the dataplane socket of a
//!    real `tlsgate-control` (one leaf per request; then batches of 64), each leaf
//!    for a new name, its chain verified again and a leaf built and signed.
//! 2. End to end, in the same run: connections through a dataplane (threaded,
//!    simulated hosts) whose leaves are signed by the control plane, beside the
//!    same dataplane signing locally (`[tls] ca_cert`/`ca_key`): wall time per
//!    connection with every name new (a cold forge each), and with one name (warm:
//!    the forge cache answers, no signer).
//!
//! ```text
//! cargo build -p tlsgate-control --bins && cargo bench -p tlsgate-tests --bench signer
//! TG_BENCH_N=200
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_api::{Body, Frame, LeafRequest, Request, Response};
use tlsgate_certstore::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tlsgate_certstore::{CaOptions, DecryptionCa, LeafKey};
use tlsgate_dataplane::config::Config;
use tlsgate_tests::control::{write, Control, DECRYPT_ALL};
use tlsgate_tests::netsim::{origin_server, tls_exchange, Net};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn frame(r: &mut BufReader<UnixStream>) -> Frame {
    let mut line = String::new();
    r.read_line(&mut line).expect("a frame");
    Frame::decode(&line).expect("a frame")
}

/// Round trips of `SignLeaves` with `batch` leaves, `rounds` times: (ms per round
/// trip p50, p99, µs per leaf).
fn signer_round_trips(c: &Control, chain: &[String], rounds: usize, batch: usize) -> (f64, f64, f64) {
    let s = UnixStream::connect(c.dataplane_socket()).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let hello = Request::DataplaneHello { workers: 1, pid: 1, version: "bench".into(), running_version: 0 };
    w.write_all(Frame::request(1, hello).encode().as_bytes()).unwrap();
    loop {
        let f = frame(&mut r);
        match f.body {
            Body::Request(Request::Snapshot(s)) => {
                let a = Frame::response(f.id, Response::Applied { version: s.version }).encode();
                w.write_all(a.as_bytes()).unwrap();
            }
            Body::Response(_) if f.id == 1 => break,
            _ => {}
        }
    }
    let key = b64(&LeafKey::generate().unwrap().public_key_der());
    let mut times = Vec::with_capacity(rounds);
    let mut id = 10u64;
    let all = Instant::now();
    for round in 0..rounds {
        let leaves = (0..batch)
            .map(|i| {
                id += 1;
                LeafRequest {
                    id,
                    name: format!("n{round}-{i}.tg.test"),
                    chain: chain.to_vec(),
                    public_key: key.clone(),
                }
            })
            .collect();
        let t = Instant::now();
        w.write_all(Frame::request(id, Request::SignLeaves { leaves }).encode().as_bytes()).unwrap();
        loop {
            let f = frame(&mut r);
            if let Body::Response(Response::SignedLeaves { leaves }) = f.body {
                assert!(leaves.iter().all(|l| l.cert.is_some()), "{leaves:?}");
                break;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let per_leaf = all.elapsed().as_secs_f64() * 1e6 / (rounds * batch) as f64;
    let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
    (p50, p99, per_leaf)
}

/// `n` connections through `net`: wall ms per connection.
fn run(
    net: &mut Net,
    srv: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    n: u16,
    base: u16,
    sni: impl Fn(u16) -> String,
) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        let (resp, err, _, _) =
            tls_exchange(net, srv.clone(), client.clone(), &sni(i), 443, base + i, b"GET /", 2000);
        assert!(err.is_none() && resp.is_some(), "connection {i}: {err:?}");
    }
    t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
}

fn main() {
    let n: u16 = std::env::var("TG_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let pki = pki::Pki::generate();
    let wild = pki::issue(pki::leaf_params("*.tg.test", pki::VALID_FROM, pki::VALID_TO), &pki.intermediate);
    let chain_der = vec![wild.der(), pki.intermediate.der()];
    let srv = origin_server(
        chain_der.clone(),
        tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(wild.key.serialize_der().into()),
        false,
    );
    let ca = DecryptionCa::generate(&CaOptions::default(), tlsgate_certstore::unix_time(now_s())).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let client = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(
            tlsgate_certstore::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let c = Control::start("bench-signer", "");
    let d = c.dir.path();
    let (cert, key) = (write(d, "ca.pem", &ca.cert_pem()), write(d, "ca.key", &ca.key_pkcs8_pem()));
    c.ok(&["ca", "import", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let root = write(d, "root.pem", &pki.root.pem());
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    let policy = write(d, "policy.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);

    println!("the signer (tlsgate-control), SignLeaves over the dataplane socket, every name new");
    let chain: Vec<String> = chain_der.iter().map(|c| b64(c.as_ref())).collect();
    let (p50, p99, per_leaf) = signer_round_trips(&c, &chain, 300, 1);
    println!(
        "  one leaf per request:  round trip p50 {p50:.2} ms, p99 {p99:.2} ms ({per_leaf:.0} µs per leaf)"
    );
    let (p50, p99, per_leaf) = signer_round_trips(&c, &chain, 20, 64);
    println!(
        "  64 leaves per request: round trip p50 {p50:.2} ms, p99 {p99:.2} ms ({per_leaf:.0} µs per leaf)"
    );
    // The signer's rate limit refills: let it before the end-to-end part; and the
    // bench's own link must be gone before a dataplane connects.
    std::thread::sleep(Duration::from_secs(3));
    while c.status().dataplane_connected {
        std::thread::sleep(Duration::from_millis(50));
    }

    let status = d.join("status.sock");
    let tls = format!(
        "[dataplane]\nstats_interval_s = 0\nstatus_socket = {:?}\n[intercept]\nconnect_timeout_s = 5\n",
        status.display().to_string()
    );
    let remote_cfg = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n{tls}[tls]\nhandshake_timeout_s = 5\n{}",
        c.dataplane_toml()
    );
    let local_cfg = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nstats_interval_s = 0\n\
         status_socket = {:?}\n[intercept]\nports = [443]\nconnect_timeout_s = 5\n\
         [tls]\nhandshake_timeout_s = 5\nca_cert = {:?}\nca_key = {:?}\nsystem_bundle = false\ntrust = [{:?}]\n",
        status.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
        root.display().to_string()
    );
    println!("end to end: {n} connections each, one worker, simulated hosts (wall ms per connection)");
    println!("{:<44} {:>12}", "", "wall ms");
    for (k, (label, cfg, remote)) in [
        ("signed in the worker (local CA files)", local_cfg, false),
        ("signed by the control plane", remote_cfg, true),
    ]
    .into_iter()
    .enumerate()
    {
        let base = 20000 + 2 * k as u16 * 1000;
        let mut net = Net::new(Config::from_toml(&cfg).expect("config"), 1);
        if remote {
            c.wait_applied(Duration::from_secs(10));
        }
        let wall = run(&mut net, &srv, &client, n, base, |i| format!("cold{i}.tg.test"));
        println!("{:<44} {:>12.2}", format!("{label}, every name new"), wall);
        let wall = run(&mut net, &srv, &client, n, base + 1000, |_| "warm.tg.test".into());
        println!("{:<44} {:>12.2}", format!("{label}, one name (warm)"), wall);
        drop(net.stop());
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
