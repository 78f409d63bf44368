//! Helpers of the in-process TLS tests (`tls_intercept`, `probes`): a dataplane
//! config with a fresh decryption CA, origin servers, clients, one exchange through
//! the netsim, the dataplane's events.

#![allow(dead_code)]

use std::sync::Arc;

use tlsgate_certstore::pki_types::{CertificateDer, UnixTime};
use tlsgate_certstore::rustls::{ClientConfig, ServerConfig};
use tlsgate_certstore::{CaOptions, DecryptionCa};
use tlsgate_dataplane::config::Config;
use tlsgate_dataplane::run::Summary;
use tlsgate_tests::netsim::{client_trusting, origin_server, tls_exchange, Net, Seen};

pub struct Setup {
    pub dir: tempdir::Dir,
    pub ca: DecryptionCa,
    pub config: Config,
}

pub mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("tg-tls-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A dataplane config intercepting port 443 with a fresh decryption CA, trusting
/// `trust` (PEM) and pinning `pinned` (PEM), with `profile`.
pub fn setup(profile: &str, trust: &[String], pinned: &[String]) -> Setup {
    setup_with_policy(profile, trust, pinned, None)
}

/// As [`setup`], the flows chosen by `policy` (JSON) instead of `intercept.ports`.
pub fn setup_with_policy(profile: &str, trust: &[String], pinned: &[String], policy: Option<&str>) -> Setup {
    let dir = tempdir::Dir::new(profile);
    let ca = DecryptionCa::generate(&CaOptions::default(), UnixTime::now()).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        format!("{:?}", p.display().to_string())
    };
    let ca_cert = write("ca.pem", &ca.cert_pem());
    let ca_key = write("ca.key", &ca.key_pkcs8_pem());
    let trust: Vec<String> =
        trust.iter().enumerate().map(|(i, t)| write(&format!("trust{i}.pem"), t)).collect();
    let pinned: Vec<String> =
        pinned.iter().enumerate().map(|(i, t)| write(&format!("pin{i}.pem"), t)).collect();
    let selection = match policy {
        Some(json) => format!("[policy]\nfile = {}\n[intercept]\n", write("policy.json", json)),
        None => "[intercept]\nports = [443]\n".to_string(),
    };
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n\
         {selection}connect_timeout_s = 5\n\
         [tls]\nca_cert = {ca_cert}\nca_key = {ca_key}\nsystem_bundle = false\nprofile = \"{profile}\"\n\
         trust = [{}]\npinned = [{}]\n[events]\ndir = {:?}\n",
        trust.join(","),
        pinned.join(","),
        dir.0.join("events").display().to_string()
    );
    Setup { dir, ca, config: Config::from_toml(&toml).expect("config") }
}

pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: &rcgen::KeyPair,
    tls12_aes256_only: bool,
) -> Arc<ServerConfig> {
    let key = tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    origin_server(chain, key, tls12_aes256_only)
}

pub fn client_config(ca: &DecryptionCa, extra_root: Option<&CertificateDer<'static>>) -> Arc<ClientConfig> {
    let mut roots = vec![ca.cert_der().clone()];
    roots.extend(extra_root.cloned());
    client_trusting(&roots)
}

/// What a client saw of one connection.
pub struct Outcome {
    /// The response bytes received, when the exchange completed.
    pub response: Option<Vec<u8>>,
    /// The client's error (e.g. an alert received), when it failed.
    pub error: Option<String>,
    /// The certificate the client was shown.
    pub peer: Option<CertificateDer<'static>>,
    pub alpn: Option<Vec<u8>>,
    pub summary: Summary,
}

/// One client connection to `sni` through the dataplane; the server answers
/// `response_len` bytes after reading `request`.
pub fn exchange(
    setup: &Setup,
    server: Arc<ServerConfig>,
    sni: &str,
    request: &[u8],
    response_len: usize,
) -> Outcome {
    exchange_on(setup, server, sni, 443, None, request, response_len)
}

/// [`exchange`] to `port`, the client trusting `root` besides the decryption CA.
pub fn exchange_on(
    setup: &Setup,
    server: Arc<ServerConfig>,
    sni: &str,
    port: u16,
    root: Option<&CertificateDer<'static>>,
    request: &[u8],
    response_len: usize,
) -> Outcome {
    let mut net = Net::new(setup.config.clone(), 1);
    let (response, error, peer, alpn) =
        connect(&mut net, setup, server, sni, port, 40443, root, request, response_len);
    let summary = net.stop();
    Outcome { response, error, peer, alpn, summary }
}

/// One client connection through a running `net` (the netsim's TLS exchange).
#[allow(clippy::too_many_arguments)]
pub fn connect(
    net: &mut Net,
    setup: &Setup,
    server: Arc<ServerConfig>,
    sni: &str,
    port: u16,
    client_port: u16,
    root: Option<&CertificateDer<'static>>,
    request: &[u8],
    response_len: usize,
) -> Seen {
    let client = client_config(&setup.ca, root);
    tls_exchange(net, server, client, sni, port, client_port, request, response_len)
}

/// The dataplane's `tls_proxy.log` and events so far.
pub fn logs(setup: &Setup) -> (String, Vec<serde_json::Value>) {
    let dir = setup.dir.0.join("events");
    let log = std::fs::read_to_string(dir.join("tls_proxy.log")).unwrap_or_default();
    let events = std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("event line is JSON"))
        .collect();
    (log, events)
}

pub fn counter(s: &Summary, name: &str) -> u64 {
    s.stats.workers.iter().map(|w| w.get(name)).sum()
}

pub fn origin() -> crate::pki::Pki {
    crate::pki::Pki::generate()
}
