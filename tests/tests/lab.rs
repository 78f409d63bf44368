//! End-to-end lab tests: real clients and servers in network namespaces talking
//! through the DPDK dataplane (`net_af_packet` on the lab's veth ends).
//!
//! Each test builds its own lab (prefix `tgtN`, 198.18.1N.0/24), starts its own
//! dataplane and tears everything down again, also on failure. They need root; set
//! `TLSGATE_SKIP_LAB=1` to skip them elsewhere. Build the dataplane first
//! (`cargo build -p tlsgate-dataplane --bin tlsgate-dataplane`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tlsgate_api::DataplaneStats;
use tlsgate_tests::{
    drops, netns_run, netns_spawn, require_root, run_cmd, serial, sha256_file, sum, Dataplane, DpOptions,
    Lab, Nginx, TempDir, Transfer,
};

fn xfer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tg-xfer"))
}

fn frames_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tg-frames"))
}

/// Most TCP payload one frame carries at MTU 1500 (no TCP options).
const MSS_MAX: u64 = 1460;

/// Every frame received has been sent out of the other port (nothing in flight).
fn balanced(s: &DataplaneStats) -> bool {
    sum(s, |w| w.get("rx_packets_inside")) == sum(s, |w| w.get("tx_packets_outside"))
        && sum(s, |w| w.get("rx_packets_outside")) == sum(s, |w| w.get("tx_packets_inside"))
}

/// Every frame received was forwarded or dropped (with a reason).
fn accounted(s: &DataplaneStats) -> bool {
    sum(s, |w| w.per_port("rx_packets").iter().sum())
        == sum(s, |w| w.per_port("tx_packets").iter().sum()) + drops(s).values().sum::<u64>()
}

/// Asserts a clean stop: exit status 0 on SIGTERM, within 5 s, with the summary line.
fn assert_clean_stop(dp: Dataplane) {
    let stopped = dp.stop();
    assert!(
        stopped.status.success() && !stopped.killed && stopped.log.contains("stopped:"),
        "the dataplane did not stop cleanly on SIGTERM ({}, killed: {}):\n{}",
        stopped.status,
        stopped.killed,
        stopped.log
    );
}

fn brief(s: &DataplaneStats) -> String {
    s.workers
        .iter()
        .map(|w| {
            format!(
                "w{}: rx {:?} tx {:?} flows_created {} handover out/in {}/{} drops {:?}",
                w.worker,
                w.per_port("rx_packets"),
                w.per_port("tx_packets"),
                w.get("flows_created"),
                w.get("handover_out"),
                w.get("handover_in"),
                w.drops
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn ping_and_100mb_transfer_through_dpdk() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::up("tgt1", "198.18.11");
    let dp = Dataplane::start(&lab, "");

    lab.ping(3).expect_success("ping through the dataplane");

    const BYTES: u64 = 100_000_000;
    let r = Transfer::start(&lab, xfer(), 5001, BYTES, 1).finish(Duration::from_secs(45));
    assert_eq!(r.sent.0, BYTES, "client sent {r:?}");
    assert_eq!(r.received, r.sent, "server received other bytes than the client sent");

    let s = dp.wait_stats(Duration::from_secs(3), balanced);
    let fwd_out = sum(&s, |w| w.get("tx_packets_outside"));
    assert!(
        fwd_out >= BYTES / MSS_MAX,
        "only {fwd_out} frames forwarded inside→outside for {BYTES} bytes: {}",
        brief(&s)
    );
    assert!(sum(&s, |w| w.get("tx_bytes_outside")) >= BYTES, "{}", brief(&s));
    assert!(sum(&s, |w| w.get("flows_created")) >= 1, "{}", brief(&s));
    assert!(balanced(&s), "received and forwarded frames differ: {}", brief(&s));
    assert_eq!(drops(&s), BTreeMap::new(), "drops: {}", brief(&s));
    eprintln!(
        "100 MB in {:.2} s ({:.0} Mbit/s); {fwd_out} frames inside→outside, {} outside→inside; \
         nic-missed {:?}",
        r.elapsed.as_secs_f64(),
        BYTES as f64 * 8.0 / r.elapsed.as_secs_f64() / 1e6,
        sum(&s, |w| w.get("tx_packets_inside")),
        s.ports.iter().map(|p| p.imissed).collect::<Vec<_>>()
    );

    assert_clean_stop(dp);
    lab.teardown();
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

/// `FILES/www` holding `file`: 5 MB of deterministic noise from `seed` (nothing
/// compresses it); returns the folder and the file's SHA-256.
fn www_with_file(files: &TempDir, seed: u64) -> (std::path::PathBuf, (u64, String)) {
    let www = files.join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    let data = tlsgate_dataplane::wire::build::XorShift::new(seed).bytes(5_000_000);
    std::fs::write(www.join("file"), &data).expect("writing the file to serve");
    let original = sha256_file(&www.join("file"));
    (www, original)
}

/// nginx in the server namespace serves 5 MB; curl in the client namespace fetches
/// it through a dataplane configured with `extra` TOML. Returns the final counters.
fn curl_5mb(prefix: &str, net: &str, extra: &str) -> DataplaneStats {
    let t0 = Instant::now();
    let lab = Lab::up(prefix, net);
    let files = TempDir::new("www");
    let (www, original) = www_with_file(&files, 0x2545_f491);

    let dp = Dataplane::start(&lab, extra);
    let nginx = Nginx::start(&lab, &www);
    let out = files.join("download");
    let url = format!("http://{}/file", lab.server_addr());
    let out_s = out.display().to_string();
    let curl = netns_run(
        &lab.client_ns(),
        &["curl", "-sS", "--max-time", "20", "-o", &out_s, "-w", "%{http_code} %{size_download}", &url],
        Duration::from_secs(25),
    );
    assert!(curl.status.success(), "curl failed: {curl:?}\nnginx error log:\n{}", nginx.error_log());
    assert_eq!(curl.stdout.trim(), "200 5000000", "curl: {curl:?}");
    assert_eq!(sha256_file(&out), original, "downloaded file differs from the original");

    drop(nginx);
    let s = dp.wait_stats(Duration::from_secs(3), |s| sum(s, |w| w.get("intercept_active")) == 0);
    assert_eq!(drops(&s), BTreeMap::new(), "drops: {}", brief(&s));
    assert_clean_stop(dp);
    lab.teardown();
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
    s
}

fn intercept(s: &DataplaneStats, name: &str) -> u64 {
    sum(s, |w| w.get(name))
}

#[test]
fn curl_through_lab() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let s = curl_5mb("tgt2", "198.18.12", "");
    assert!(balanced(&s), "every frame forwarded: {}", brief(&s));
    assert!(sum(&s, |w| w.get("flows_created")) >= 1, "{}", brief(&s));
    assert!(sum(&s, |w| w.get("tx_bytes_inside")) >= 5_000_000, "outside→inside bytes: {}", brief(&s));
    assert_eq!(intercept(&s, "intercept_created"), 0);
}

/// The same download with port 80 intercepted: TCP terminated on both legs by the
/// smoltcp splice, real curl and nginx at the ends. Linux's receive window grows
/// past the splice's 64 KiB send buffer with the download, so its buffers double
/// on the way (`intercept.buffer_max_kib`), and the file arrives intact.
#[test]
fn curl_through_tcp_splice() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let s = curl_5mb("tgt5", "198.18.15", "[intercept]\nports = [80]\n");
    assert_eq!(intercept(&s, "intercept_created"), 1, "{}", brief(&s));
    let doubled = intercept(&s, "buffers_doubled");
    assert!(doubled >= 1, "a bulk download grows its buffers: {doubled} doublings; {}", brief(&s));
    assert_eq!(intercept(&s, "intercept_closed"), 1, "both legs closed with FINs: {}", brief(&s));
    assert!(intercept(&s, "intercept_bytes_down") >= 5_000_000, "{}", brief(&s));
    assert!(intercept(&s, "intercept_bytes_up") > 50, "the request: {}", brief(&s));
}

/// Clients that ask for a big file and read it at 10 kB/s (`curl --limit-rate`)
/// fill their splices' send buffers, but what waits for their closed windows is
/// not in flight: their buffers grow only as far as the window their own kernel
/// offered (Linux: past 64 KiB, so once, to 128 KiB), not to the maximum. A
/// second, ordinary client beside them downloads the file intact, its splice
/// growing to 512 KiB (three doublings), and every charge comes back.
#[test]
fn slow_readers_grow_no_further_than_their_window_and_a_second_client_downloads() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt23", "198.18.33");
    let files = TempDir::new("www-slow");
    let (www, original) = www_with_file(&files, 0x5eed_5107);
    let dp = Dataplane::start(&lab, "[intercept]\nports = [80]\n");
    let nginx = Nginx::start(&lab, &www);
    let url = format!("http://{}/file", lab.server_addr());
    let mut slow: Vec<_> = (0..4)
        .map(|_| {
            netns_spawn(
                &lab.client_ns(),
                &["curl", "-sS", "--limit-rate", "10k", "--max-time", "6", "-o", "/dev/null", &url],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let out = files.join("download");
    let out_s = out.display().to_string();
    let curl = netns_run(
        &lab.client_ns(),
        &["curl", "-sS", "--max-time", "20", "-o", &out_s, "-w", "%{http_code} %{size_download}", &url],
        Duration::from_secs(25),
    );
    assert_eq!(curl.stdout.trim(), "200 5000000", "the second client: {curl:?}");
    assert_eq!(sha256_file(&out), original, "downloaded file differs from the original");
    for p in &mut slow {
        // curl gives up after 6 s (exit 28): still reading at 10 kB/s.
        let f = p.wait_or_kill(Duration::from_secs(15));
        assert_eq!(f.status.code(), Some(28), "a slow reader: {f:?}");
    }
    drop(nginx);
    let s = dp.wait_stats(Duration::from_secs(5), |s| sum(s, |w| w.get("intercept_active")) == 0);
    let doubled = intercept(&s, "buffers_doubled");
    assert_eq!(intercept(&s, "intercept_created"), 5, "{}", brief(&s));
    assert!(
        (3..=3 + 4).contains(&doubled),
        "three for the ordinary client, at most one per slow reader: {doubled}"
    );
    assert_eq!(intercept(&s, "memory_charged_bytes"), 0, "every charge came back");
    assert_clean_stop(dp);
    lab.teardown();
}

#[test]
fn forwarding_survives_malformed_burst() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::up("tgt3", "198.18.13");
    let tmp = TempDir::new("frames");
    let pcap = tmp.join("malformed.pcap");
    const FRAMES: u64 = 2000;
    let gen = run_cmd(
        Command::new(frames_bin()).arg("malformed").arg(&pcap).arg(FRAMES.to_string()).arg("7"),
        Duration::from_secs(20),
    )
    .expect_success("tg-frames");
    let expected: BTreeMap<String, u64> =
        serde_json::from_str(gen.stdout.trim()).unwrap_or_else(|e| panic!("tg-frames output {gen:?}: {e}"));
    assert_eq!(expected.values().sum::<u64>(), FRAMES, "{expected:?}");

    let dp = Dataplane::start(&lab, "");
    // 20 MB paced to 64 Mbit/s (2.5 s) so the 1-second burst lands inside it.
    const BYTES: u64 = 20_000_000;
    let mut transfer = Transfer::start_paced(&lab, xfer(), 5003, BYTES, 3, Some(64));
    let sent = tlsgate_tests::inject(&lab, &pcap, 2000);
    assert_eq!(sent, FRAMES, "inject-frames.py sent {sent} of {FRAMES}");
    assert!(transfer.sending(), "the transfer ended before the malformed burst did; nothing overlapped");
    let r = transfer.finish(Duration::from_secs(40));
    assert_eq!(r.sent.0, BYTES, "{r:?}");
    assert_eq!(r.received, r.sent, "transfer damaged by the malformed burst");
    lab.ping(3).expect_success("ping after the malformed burst");

    let s = dp.wait_stats(Duration::from_secs(5), |s| drops(s) == expected && accounted(s));
    assert_eq!(
        drops(&s),
        expected,
        "drop counters (left) differ from the frames injected (right); ports: {:?}",
        s.ports.iter().map(|p| (p.ipackets, p.imissed)).collect::<Vec<_>>()
    );
    assert!(accounted(&s), "frames neither forwarded nor dropped: {}", brief(&s));
    eprintln!(
        "20 MB in {:.2} s with {FRAMES} malformed frames injected; drops by reason {expected:?}",
        r.elapsed.as_secs_f64()
    );

    assert_clean_stop(dp);
    lab.teardown();
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn two_workers_software_steering() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::up("tgt4", "198.18.14");
    let dp = Dataplane::start_with(
        &lab,
        &DpOptions { lcores: "0-1".into(), qpairs: 2, mem_mb: 512, mbufs: 16383, ..DpOptions::default() },
    );
    lab.ping(3).expect_success("ping through two workers");

    // One 20 MB transfer, then three short ones: four connections with four
    // ephemeral ports. Which worker owns which is the keyed hash's secret (drawn
    // at start-up: nobody outside can compute it).
    const PORT: u16 = 5004;
    let mut elapsed = Duration::ZERO;
    for (i, bytes) in [20_000_000u64, 1_000_000, 1_000_000, 1_000_000].into_iter().enumerate() {
        let port = PORT + i as u16;
        let r = Transfer::start(&lab, xfer(), port, bytes, 40 + i as u64).finish(Duration::from_secs(30));
        assert_eq!(r.sent.0, bytes, "{r:?}");
        assert_eq!(r.received, r.sent, "transfer {i} through two workers damaged");
        elapsed += r.elapsed;
    }
    lab.ping(2).expect_success("ping after the transfers");

    let s = dp.wait_stats(Duration::from_secs(3), |s| {
        balanced(s) && sum(s, |w| w.get("handover_out")) == sum(s, |w| w.get("handover_in"))
    });
    assert_eq!(s.workers.len(), 2, "expected two workers: {}", brief(&s));
    // ICMP is not tracked: one flow per TCP connection in all tables together, so
    // both directions of each connection reached the same worker (a direction
    // steered elsewhere would be midstream there, counted and untracked).
    assert_eq!(sum(&s, |w| w.get("flows_created")), 4, "{}", brief(&s));
    assert_eq!(sum(&s, |w| w.get("untracked_midstream")), 0, "{}", brief(&s));
    assert_eq!(
        sum(&s, |w| w.get("handover_out")),
        sum(&s, |w| w.get("handover_in")),
        "frames handed over but not received: {}",
        brief(&s)
    );
    assert!(balanced(&s), "{}", brief(&s));
    assert_eq!(drops(&s), BTreeMap::new(), "drops: {}", brief(&s));
    eprintln!("two workers: 23 MB over 4 connections in {:.2} s; {}", elapsed.as_secs_f64(), brief(&s));

    assert_clean_stop(dp);
    lab.teardown();
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

mod support;
use support::{decryption_ca, pki, write_file, Origin};

/// Port reuse never stalls a connection (issue 8, item 10). A client binds its
/// source ports from a range of four in turn, so every connection reuses a 4-tuple
/// that an intercepted flow used a moment before; nginx closes first (`Connection:
/// close`) and holds that 4-tuple in TIME_WAIT. Each new SYN must start a new
/// splice at once (not meet the old one's tombstone), and the server leg's SYN
/// must get past nginx's TIME_WAIT (it carries a newer TCP timestamp): no
/// connection waits for a SYN retransmission (1 s).
#[test]
fn port_reuse_never_stalls_a_connection() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    const CONNECTIONS: usize = 300;
    let lab = Lab::up("tgt11", "198.18.21");
    let files = TempDir::new("reuse");
    let www = files.join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "reuse\n").expect("index");
    let origin = Origin::new(&lab, &files);
    let dp = Dataplane::start(&lab, &origin.dataplane_toml());
    let nginx = Nginx::start_with(&lab, &www, Some(&origin.tls));

    let client = tlsgate_tests::repo_root().join("scripts/tests/reuse-client.py");
    let t0 = Instant::now();
    let out = netns_run(
        &lab.client_ns(),
        &[
            client.display().to_string(),
            lab.server_addr(),
            pki::SERVER.to_string(),
            origin.ca_cert.display().to_string(),
            format!("--count={CONNECTIONS}"),
            "--ports=40000-40003".to_string(),
        ],
        Duration::from_secs(240),
    );
    let elapsed = t0.elapsed();
    let time_wait =
        netns_run(&lab.server_ns(), &["ss", "-Htan", "state", "time-wait"], Duration::from_secs(5));
    let mut connect: Vec<f64> = Vec::new();
    let mut ports = std::collections::BTreeSet::new();
    for line in out.stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(
            f.len() == 3 && f[2] == "200",
            "a connection failed: {line:?}\n{}\n{}",
            out.stderr,
            nginx.error_log()
        );
        ports.insert(f[0].to_string());
        connect.push(f[1].parse().expect("time_connect"));
    }
    assert_eq!(connect.len(), CONNECTIONS, "{}{}", out.stdout, out.stderr);
    connect.sort_by(f64::total_cmp);
    let pct = |p: f64| connect[((connect.len() as f64 * p) as usize).min(connect.len() - 1)] * 1000.0;
    eprintln!(
        "{CONNECTIONS} connections from ports {ports:?} in {:.1} s: connect p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms; the origin holds {} 4-tuples in TIME_WAIT",
        elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        time_wait.stdout.lines().count()
    );
    assert!(
        time_wait.stdout.lines().any(|l| l.contains(":4000")),
        "the origin should hold the reused 4-tuples in TIME_WAIT: {}",
        time_wait.stdout
    );
    let s = dp.wait_stats(Duration::from_secs(5), |s| intercept(s, "intercept_active") == 0);
    assert_eq!(intercept(&s, "tls_decrypted"), CONNECTIONS as u64, "{}", brief(&s));
    assert!(
        intercept(&s, "reused_4tuple") >= CONNECTIONS as u64 / 2,
        "most connections reuse a 4-tuple: {:?}",
        s.workers[0].counters
    );
    assert!(
        pct(1.0) < 1000.0,
        "a connection waited for a SYN retransmission: max connect {:.0} ms",
        pct(1.0)
    );
    drop(nginx);
    assert_clean_stop(dp);
    lab.teardown();
}

/// TLS interception with real programs: nginx serves HTTPS for `server.tg.test`
/// with a certificate from a test CA the appliance trusts; curl in the client
/// namespace trusts only the appliance's decryption CA and still gets the file;
/// `openssl s_client` shows the forged chain.
#[test]
fn https_through_tls_interception() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt6", "198.18.16");
    let files = TempDir::new("tls");
    let www = files.join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    let data = tlsgate_dataplane::wire::build::XorShift::new(0x7151).bytes(3_000_000);
    std::fs::write(www.join("file"), &data).expect("writing the file to serve");

    let origin = Origin::new(&lab, &files);
    let ca_cert = origin.ca_cert.clone();
    let dp = Dataplane::start(&lab, &origin.dataplane_toml());
    let nginx = Nginx::start_with(&lab, &www, Some(&origin.tls));

    let out = files.join("download");
    let resolve = format!("{}:443:{}", pki::SERVER, lab.server_addr());
    let url = format!("https://{}/file", pki::SERVER);
    let (ca_s, out_s) = (ca_cert.display().to_string(), out.display().to_string());
    let curl = netns_run(
        &lab.client_ns(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            &ca_s,
            "--resolve",
            &resolve,
            "-o",
            &out_s,
            "-w",
            "%{http_code} %{size_download}",
            &url,
        ],
        Duration::from_secs(25),
    );
    assert!(curl.status.success(), "curl failed: {curl:?}\nnginx:\n{}", nginx.error_log());
    assert_eq!(curl.stdout.trim(), "200 3000000", "curl: {curl:?}");
    assert!(std::fs::read(&out).expect("download") == data, "the decrypted, re-encrypted file differs");

    // The chain the client sees: a leaf for server.tg.test issued by the decryption CA.
    let connect = format!("{}:443", lab.server_addr());
    let s_client = netns_run(
        &lab.client_ns(),
        &[
            "sh",
            "-c",
            &format!(
                "openssl s_client -connect {connect} -servername {} -CAfile {ca_s} -verify_hostname {} \
                 -verify_return_error </dev/null",
                pki::SERVER,
                pki::SERVER
            ),
        ],
        Duration::from_secs(15),
    );
    let text = format!("{}{}", s_client.stdout, s_client.stderr);
    assert!(text.contains("tlsgate decryption CA"), "issuer not the decryption CA: {text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains(pki::SERVER), "{text}");

    // Without SNI (the client connects by address): the server is verified against
    // its address, and the forged certificate names that address.
    let by_ip = format!("https://{}/file", lab.server_addr());
    let out_ip = files.join("download-by-ip");
    let out_ip_s = out_ip.display().to_string();
    let curl = netns_run(
        &lab.client_ns(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            &ca_s,
            "-o",
            &out_ip_s,
            "-w",
            "%{http_code}",
            &by_ip,
        ],
        Duration::from_secs(25),
    );
    assert!(curl.status.success(), "curl by address failed: {curl:?}");
    assert_eq!(curl.stdout.trim(), "200", "curl: {curl:?}");
    assert!(std::fs::read(&out_ip).expect("download") == data);
    let s_client = netns_run(
        &lab.client_ns(),
        &[
            "sh",
            "-c",
            &format!(
                "openssl s_client -connect {connect} -noservername -CAfile {ca_s} -verify_ip {} \
                 -verify_return_error </dev/null",
                lab.server_addr()
            ),
        ],
        Duration::from_secs(15),
    );
    let text = format!("{}{}", s_client.stdout, s_client.stderr);
    assert!(text.contains("tlsgate decryption CA"), "issuer not the decryption CA: {text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "forged for the address: {text}");

    drop(nginx);
    let s = dp.wait_stats(Duration::from_secs(5), |s| intercept(s, "intercept_active") == 0);
    assert_eq!(intercept(&s, "tls_decrypted"), 4, "curl and s_client, by name and address: {}", brief(&s));
    assert_eq!(intercept(&s, "tls_aborted"), 0, "{}", brief(&s));
    assert_clean_stop(dp);
    lab.teardown();
}

/// SEED problem 2 with real programs: nginx with a self-signed certificate like the
/// seed's (no SAN, `/unstructuredName=ciscoasa`). curl fails, `tls_proxy.log` has
/// the seed's lines, the chain is kept by its SHA-256; pinning that file fixes it.
#[test]
fn self_signed_server_then_pinned_from_the_kept_chain() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt7", "198.18.17");
    let files = TempDir::new("asa");
    let www = files.join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "asa\n").expect("index");
    let asa = pki::ciscoasa();
    let write = |name: &str, text: &str| write_file(&files, name, text);
    let cert = write("asa.pem", &asa.pem());
    let key = write("asa.key", &asa.key_pem());
    let (ca_cert, ca_key) = decryption_ca(&files);
    let events = files.join("events");
    let config = |pinned: &str| {
        format!(
            "[intercept]\nports = [443]\n[tls]\nca_cert = {:?}\nca_key = {:?}\nsystem_bundle = false\n\
             profile = \"strong\"\npinned = [{pinned}]\n[events]\ndir = {:?}\n",
            ca_cert.display().to_string(),
            ca_key.display().to_string(),
            events.display().to_string()
        )
    };
    let nginx =
        Nginx::start_with(&lab, &www, Some(&tlsgate_tests::NginxTls { cert, key, extra: String::new() }));
    let resolve = format!("asa.tg.test:443:{}", lab.server_addr());
    let ca_s = ca_cert.display().to_string();
    let curl = |lab: &Lab| {
        netns_run(
            &lab.client_ns(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca_s,
                "--resolve",
                &resolve,
                "https://asa.tg.test/",
            ],
            Duration::from_secs(15),
        )
    };

    let dp = Dataplane::start(&lab, &config(""));
    let first = curl(&lab);
    assert!(!first.status.success(), "curl must fail against an untrusted server: {first:?}");
    let s = dp.wait_stats(Duration::from_secs(5), |s| intercept(s, "tls_aborted") == 1);
    assert_eq!(intercept(&s, "tls_aborted"), 1, "{}", brief(&s));
    assert_clean_stop(dp);
    let log = std::fs::read_to_string(events.join("tls_proxy.log")).expect("tls_proxy.log");
    for line in [
        "Certificate verification failure: self signed certificate (code 18, depth 0)",
        "Subject: /unstructuredName=ciscoasa",
        "Issuer: /unstructuredName=ciscoasa",
        "ERROR TLS_Proxy - TLS problem (",
    ] {
        assert!(log.contains(line), "missing {line:?} in tls_proxy.log:\n{log}");
    }
    let event: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(events.join("events.jsonl"))
            .expect("events")
            .lines()
            .last()
            .expect("an event"),
    )
    .expect("JSON");
    let sha = event["chain_sha256"].as_str().expect("chain kept").to_string();
    let kept = events.join("chains").join(format!("{sha}.pem"));
    assert!(kept.exists(), "{kept:?}");

    // The fix: trust exactly that certificate.
    let dp = Dataplane::start(&lab, &config(&format!("{:?}", kept.display().to_string())));
    let second = curl(&lab);
    assert!(second.status.success(), "curl after pinning: {second:?}\nnginx:\n{}", nginx.error_log());
    assert_eq!(second.stdout, "asa\n");
    let s = dp.wait_stats(Duration::from_secs(5), |s| intercept(s, "intercept_active") == 0);
    assert_eq!(intercept(&s, "tls_decrypted"), 1, "{}", brief(&s));
    drop(nginx);
    assert_clean_stop(dp);
    lab.teardown();
}
