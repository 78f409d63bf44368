//! The attacks of issue 8, run against the lab as an inside attacker would, with
//! the attacker's tools; after (and during) each, a second, innocent client
//! address is still decrypted, and the dataplane's memory stays bounded.
//!
//! Root only (`TLSGATE_SKIP_LAB=1` skips). Each test builds its own lab
//! (`tgt12…`, 198.18.2N.0/24).

use std::time::{Duration, Instant};

use tlsgate_api::DataplaneStats;
use tlsgate_tests::{netns_run, netns_spawn, require_root, serial, sum, Dataplane, Lab, Nginx, TempDir};

mod support;
use support::{curl_https, Origin};

fn intercept(s: &DataplaneStats, name: &str) -> u64 {
    sum(s, |w| w.intercept.get(name).copied().unwrap_or(0))
}

/// (VmRSS, VmHWM) of a process, bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .expect("a memory field")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Address `host` of the lab's /24 (NET.host).
fn lab_addr(lab: &Lab, host: u8) -> String {
    let client = lab.client_addr();
    let (net, _) = client.rsplit_once('.').expect("a dotted address");
    format!("{net}.{host}")
}

/// A second client address in the lab's client namespace: NET.3.
fn second_client(lab: &Lab) -> String {
    let addr = lab_addr(lab, 3);
    let cidr = format!("{addr}/24");
    netns_run(
        &lab.client_ns(),
        &["ip", "addr", "add", &cidr, "dev", &lab.client_if()],
        Duration::from_secs(5),
    )
    .expect_success("adding the second client address");
    addr
}

/// The MAC address of the server's interface (frames to the server carry it).
fn server_mac(lab: &Lab) -> String {
    let path = format!("/sys/class/net/{}-s0/address", lab.prefix());
    let out =
        netns_run(&lab.server_ns(), &["cat", &path], Duration::from_secs(5)).expect_success("server MAC");
    out.stdout.trim().to_string()
}

/// SYN floods on the TLS port (issue 8): from one host as the issue ran it
/// (`hping3 -S -p 443 -i u200`), from one spoofed address that never answers (the
/// splices stay half-open: the source quota binds), and from 20,000 spoofed
/// addresses of 198.19.0.0/16 (the memory budget binds). During each, a client on a
/// second address gets its page decrypted (it may have to retry its SYN); after
/// each, at once. Nothing is forwarded uninspected, and the dataplane's peak RSS
/// stays within its baseline plus the configured budget.
#[test]
fn syn_floods_leave_a_second_client_decrypted_and_memory_bounded() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    const BUDGET_MIB: u64 = 64;
    let lab = Lab::up("tgt12", "198.18.22");
    let second = second_client(&lab);
    let files = TempDir::new("floods");
    let www = files.join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "inspected\n").expect("index");
    let origin = Origin::new(&lab, &files);
    let config = format!(
        "{}[admission]\nhalf_open_per_source = 64\nmemory_budget_mib = {BUDGET_MIB}\nfirst_byte_timeout_s = 3\n",
        origin.dataplane_toml_with("connect_timeout_s = 3")
    );
    let dp = Dataplane::start(&lab, &config);
    let nginx = Nginx::start_with(&lab, &www, Some(&origin.tls));
    let pid = dp.pid().expect("running");

    let decrypted = |dp: &Dataplane| intercept(&dp.stats(), "tls_decrypted");
    let ok = curl_https(&lab, &origin, Some(&second), 20);
    assert_eq!(ok.stdout, "200", "before the floods: {ok:?}\n{}", nginx.error_log());
    let (baseline, _) = rss(pid);
    let server = lab.server_addr();
    let flood = format!("{}/scripts/tests/syn-flood.py", tlsgate_tests::repo_root().display());
    let mac = server_mac(&lab);
    let iface = lab.client_if();
    let one_host: Vec<String> =
        ["hping3", "-q", "-S", "-p", "443", "-i", "u200", "-c", "20000", &server].map(String::from).to_vec();
    let spoofed = lab_addr(&lab, 9);
    let one_spoofed: Vec<String> =
        ["hping3", "-q", "-S", "-p", "443", "-i", "u200", "-c", "20000", "-a", &spoofed, &server]
            .map(String::from)
            .to_vec();
    let many: Vec<String> =
        ["python3", &flood, &iface, &mac, &server, "443", "--sources", "198.19.0.0/16", "--count", "20000"]
            .map(String::from)
            .to_vec();
    for (name, attack) in
        [("one host", one_host), ("one spoofed address", one_spoofed), ("20000 sources", many)]
    {
        let before = decrypted(&dp);
        let mut flood = netns_spawn(&lab.client_ns(), &attack);
        std::thread::sleep(Duration::from_millis(1000));
        let t0 = Instant::now();
        let during = curl_https(&lab, &origin, Some(&second), 25);
        let during_s = t0.elapsed().as_secs_f64();
        flood.wait_or_kill(Duration::from_secs(30));
        let after = curl_https(&lab, &origin, Some(&second), 20);
        let s = dp.stats();
        eprintln!(
            "{name}: the second client during the flood: {} in {during_s:.1} s, after: {}; half-open {}, \
             over quota {}, over budget {}, memory charged {} KiB, RSS {} MiB",
            during.stdout,
            after.stdout,
            intercept(&s, "half_open"),
            intercept(&s, "admission_source_quota"),
            intercept(&s, "admission_memory_budget"),
            intercept(&s, "memory_charged_bytes") >> 10,
            rss(pid).0 >> 20
        );
        assert_eq!(during.stdout, "200", "{name}: during the flood: {during:?}");
        assert_eq!(after.stdout, "200", "{name}: after the flood: {after:?}");
        assert_eq!(decrypted(&dp), before + 2, "{name}: both fetches decrypted");
    }
    let s = dp.stats();
    assert!(intercept(&s, "admission_source_quota") > 1000, "the spoofed source met its quota");
    assert!(intercept(&s, "admission_memory_budget") > 1000, "20000 sources met the budget");
    assert_eq!(intercept(&s, "over_limit_forwarded"), 0, "nothing forwarded uninspected");
    assert_eq!(sum(&s, |w| w.untracked_table_full), 0, "the flow table never failed open");
    let (now, peak) = rss(pid);
    eprintln!(
        "RSS: baseline {} MiB, peak {} MiB, now {} MiB (budget {BUDGET_MIB} MiB)",
        baseline >> 20,
        peak >> 20,
        now >> 20
    );
    assert!(peak <= baseline + (BUDGET_MIB << 20), "peak RSS {peak} over baseline {baseline} + budget");
    drop(nginx);
    drop(dp);
    lab.teardown();
}
