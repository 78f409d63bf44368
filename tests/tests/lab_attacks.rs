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
    sum(s, |w| w.get(name))
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

/// nginx's document root with an index page.
fn site(files: &TempDir) -> std::path::PathBuf {
    let www = files.join("www");
    std::fs::create_dir(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "inspected\n").expect("index");
    www
}

/// A client on the second address gets its page, and it was decrypted.
fn second_is_decrypted(lab: &Lab, origin: &Origin, dp: &Dataplane, second: &str, after: &str) {
    let decrypted = || intercept(&dp.stats(), "tls_decrypted");
    let before = decrypted();
    let ok = curl_https(lab, origin, Some(second), 20);
    assert_eq!(ok.stdout, "200", "after {after}: {ok:?}");
    // Counted when the splice ends (both legs closed), a moment after curl exits.
    let s = dp.wait_stats(Duration::from_secs(5), |s| intercept(s, "tls_decrypted") > before);
    assert_eq!(intercept(&s, "tls_decrypted"), before + 1, "after {after}: decrypted");
}

/// `openssl s_client ARGS </dev/null` from the client namespace: what it printed.
fn s_client(lab: &Lab, args: &str) -> String {
    let out = netns_run(
        &lab.client_ns(),
        &["sh", "-c", &format!("openssl s_client {args} </dev/null")],
        Duration::from_secs(15),
    );
    format!("{}{}", out.stdout, out.stderr)
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
    let www = site(&files);
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
    assert_eq!(sum(&s, |w| w.get("untracked_table_full")), 0, "the flow table never failed open");
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

/// The crafted-ClientHello and odd-TCP attacks of issue 8, one after the other
/// against one appliance (no policy: its defaults, as `make run`'s lab): after
/// each, a client on a second address is still decrypted.
///
/// * A connection that sends its ClientHello only after the first-byte timeout:
///   closed as the client's timeout; nothing remembered.
/// * `openssl s_client -alpn bogus-proto`: nginx refuses the ALPN; the abort is
///   not remembered, so nothing is passed later.
/// * One byte of a ClientHello, then FIN; 70 KB of records of one ClientHello that
///   never completes:
///   blocked (reset), nothing reaches the server.
/// * A SYN in IPv4 fragments of 8 bytes (scapy), then data as if it had been accepted:
///   the fragments are dropped, the data is midstream on a TLS port and dropped.
#[test]
fn crafted_hellos_and_odd_tcp_leave_a_second_client_decrypted() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt13", "198.18.23");
    let second = second_client(&lab);
    let files = TempDir::new("hellos");
    let www = site(&files);
    let origin = Origin::new(&lab, &files);
    let events = files.join("events");
    let config = format!(
        "{}[events]\ndir = {:?}\n[admission]\nfirst_byte_timeout_s = 2\n",
        origin.dataplane_toml(),
        events.display().to_string()
    );
    let dp = Dataplane::start(&lab, &config);
    let nginx = Nginx::start_with(&lab, &www, Some(&origin.tls));
    let server = lab.server_addr();
    let check_second = |what: &str| second_is_decrypted(&lab, &origin, &dp, &second, what);
    check_second("nothing");

    // A ClientHello sent late (after the first-byte timeout, here 2 s): the
    // client's own timeout, never a server failure, nothing remembered.
    let late = format!(
        "import socket, time\n\
         s = socket.create_connection(('{server}', 443), timeout=10)\n\
         time.sleep(3)\n\
         try:\n    s.sendall(bytes.fromhex('16030100050100000100'))\n    print(repr(s.recv(100)))\n\
         except OSError as e:\n    print('closed', e)\n"
    );
    let py = netns_run(&lab.client_ns(), &["python3", "-c", &late], Duration::from_secs(20));
    assert!(py.status.success(), "{py:?}");
    assert_eq!(intercept(&dp.stats(), "first_byte_timeout"), 1, "{py:?}");
    check_second("a late ClientHello");

    // Bogus ALPN.
    let connect = format!("{server}:443");
    let ca = origin.ca_cert.display().to_string();
    let text = s_client(
        &lab,
        &format!("-alpn bogus-proto -servername server.tg.test -connect {connect} -CAfile {ca}"),
    );
    assert!(text.contains("alert handshake failure"), "the attacker got our alert: {text}");
    check_second("a bogus ALPN");
    // The attacker's own next connection is intercepted too (nothing remembered).
    let again = curl_https(&lab, &origin, None, 20);
    assert_eq!(again.stdout, "200", "{again:?}");

    // One byte then FIN; 70 KB without a complete ClientHello.
    let script = format!(
        "import socket\n\
         def go(data):\n    s=socket.create_connection(('{server}',443),timeout=10)\n    try:\n        \
         s.sendall(data)\n        s.shutdown(socket.SHUT_WR)\n        got=s.recv(65536)\n    \
         except OSError as e:\n        got=repr(e).encode()\n    print(len(data), got[:40])\n    s.close()\n\
         go(b'\\x16')\n\
         d = b'\\x16\\x03\\x01\\x40\\x00\\x01\\x00\\xff\\xff' + bytes(0x4000 - 4)\n\
         while len(d) <= 70000:\n    d += b'\\x16\\x03\\x01\\x40\\x00' + bytes(0x4000)\n\
         go(d)\n"
    );
    let py = netns_run(&lab.client_ns(), &["python3", "-c", &script], Duration::from_secs(30));
    assert!(py.status.success(), "{py:?}");
    check_second("a byte then FIN, and 70 KB without a ClientHello");

    // A fragmented SYN, then data as if it had been accepted.
    let mac = server_mac(&lab);
    let scapy = format!(
        "from scapy.all import Ether, IP, TCP, Raw, fragment, sendp\n\
         syn = IP(src='{c}', dst='{server}') / TCP(sport=4444, dport=443, flags='S', seq=1000)\n\
         frames = [Ether(dst='{mac}') / f for f in fragment(syn, fragsize=8)]\n\
         data = Ether(dst='{mac}') / IP(src='{c}', dst='{server}') / TCP(sport=4444, dport=443, flags='PA', seq=1001, ack=1) / Raw(b'\\x16\\x03\\x01\\x00\\x05hello')\n\
         sendp(frames + [data], iface='{iface}', verbose=False)\n\
         print(len(frames))\n",
        c = lab.client_addr(),
        iface = lab.client_if()
    );
    let capture = tlsgate_tests::netns_spawn(
        &lab.server_ns(),
        &["timeout", "4", "tcpdump", "-nli", &format!("{}-s0", lab.prefix()), "tcp port 4444"],
    );
    std::thread::sleep(Duration::from_millis(500));
    // Debian's python3 (python3-scapy), whatever else is first on PATH.
    let sent = netns_run(&lab.client_ns(), &["/usr/bin/python3", "-c", &scapy], Duration::from_secs(30));
    assert!(sent.status.success(), "scapy: {sent:?}");
    let fragments: u64 = sent.stdout.trim().parse().expect("fragments sent");
    assert!(fragments >= 2, "the SYN went in fragments");
    let mut capture = capture;
    let seen = capture.wait_or_kill(Duration::from_secs(10));
    // The attacker's own segments never reach the server: its SYN (seq 1000) and
    // its data (10 bytes). (The af_packet PMD asks the kernel to reassemble
    // fragments — PACKET_FANOUT_FLAG_DEFRAG — so in this lab the SYN may arrive
    // whole and be intercepted: the server then sees the splice's own SYN.)
    let leaked: Vec<&str> = seen
        .stdout
        .lines()
        .filter(|l| l.contains(".4444 >") && (l.contains("seq 1000,") || l.contains("length 10")))
        .collect();
    assert!(leaked.is_empty(), "the attacker's segments reached the server: {leaked:?}");
    check_second("a fragmented SYN and midstream data");

    let s = dp.stats();
    let drops = tlsgate_tests::drops(&s);
    let reassembled = intercept(&s, "intercept_created") > 4;
    if !reassembled {
        assert_eq!(drops.get("tcp_fragment"), Some(&fragments), "{drops:?}");
        assert_eq!(drops.get("midstream_tls"), Some(&1), "{drops:?}");
    }
    eprintln!(
        "fragmented SYN: {}",
        if reassembled { "reassembled by the kernel, intercepted" } else { "dropped" }
    );
    assert_eq!(intercept(&s, "tls_passed_remembered") + intercept(&s, "tls_passed"), 0, "nothing passed");
    assert_eq!(intercept(&s, "undecryptable_hello_incomplete"), 1, "one byte, then FIN");
    assert_eq!(
        intercept(&s, "undecryptable_hello_too_large"),
        1,
        "70 KB without a ClientHello: {:?}\n{}",
        s.workers[0].counters,
        py.stdout
    );
    drop(nginx);
    drop(dp);
    let log: Vec<serde_json::Value> = std::fs::read_to_string(events.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    let alpn = log.iter().find(|e| e["kind"] == "abort").expect("the bogus ALPN's abort");
    assert_eq!(alpn["reason"], "alert no_application_protocol", "{alpn}");
    assert!(log.iter().filter(|e| e["kind"] == "blocked").all(|e| e["bytes_up"] == 0), "{log:?}");
    lab.teardown();
}

/// The SNI of a do-not-decrypt rule sent to a server that does not own the name
/// (`openssl s_client -servername x.bank.tg.test` to the lab server, whose
/// certificate names `server.tg.test` and `bank.tg.test` only): the appliance's
/// own probe does not get a certificate valid for the name, so the rule does not
/// apply; the flow is decrypted, its server leg fails on the name, and the
/// attacker gets our alert, never a raw tunnel. `bank.tg.test` itself is proved
/// and relayed raw (the client meets the origin's chain); the probe's cost to
/// that first connection is printed. With `undecryptable: pass`, a bogus ALPN
/// (nginx refuses it) makes no exclusion: the probe, with the appliance's own
/// ALPN, succeeds. A second client address is decrypted after each.
#[test]
fn an_sni_of_a_do_not_decrypt_rule_to_any_address_is_inspected() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    let lab = Lab::up("tgt15", "198.18.25");
    let second = second_client(&lab);
    let files = TempDir::new("sni-proof");
    let www = site(&files);
    let origin = Origin::with_names(&lab, &files, &["bank.tg.test"]);
    let policy = support::write_file(
        &files,
        "policy.json",
        r#"{ "rules": [
              { "name": "Bypass-Bank", "sni": ["bank.tg.test", "*.bank.tg.test"], "action": "do-not-decrypt" },
              { "name": "Decrypt-All", "action": "decrypt" } ],
            "settings": { "undecryptable": "pass" } }"#,
    );
    let events = files.join("events");
    let config = format!(
        "{}[events]\ndir = {:?}\n",
        origin.dataplane_toml_with_policy(&policy),
        events.display().to_string()
    );
    let dp = Dataplane::start(&lab, &config);
    let nginx = Nginx::start_with(&lab, &www, Some(&origin.tls));
    let server = lab.server_addr();
    let check_second = |what: &str| second_is_decrypted(&lab, &origin, &dp, &second, what);
    check_second("nothing");

    // The bank itself: proved once, then the proof is cached. curl trusts the
    // origin's root only: a forged certificate would fail.
    let bank = |n: u32| {
        let resolve = format!("bank.tg.test:443:{server}");
        let root = origin.root.display().to_string();
        let out = netns_run(
            &lab.client_ns(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "15",
                "--cacert",
                &root,
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_connect} %{time_appconnect}",
                "https://bank.tg.test/",
            ],
            Duration::from_secs(20),
        );
        let f: Vec<&str> = out.stdout.split(' ').collect();
        assert_eq!(f[0], "200", "bank #{n}, relayed raw: {out:?}");
        let ms = |s: &str| s.parse::<f64>().expect("a time") * 1000.0;
        ms(f[2]) - ms(f[1])
    };
    let first_tls_ms = bank(1);
    let later_tls_ms: Vec<f64> = (2..=4).map(bank).collect();
    eprintln!(
        "probe cost: TLS handshake of the first connection {first_tls_ms:.2} ms (held for the probe), \
         later ones {later_tls_ms:.2?} ms (proof cached)"
    );
    let s = dp.stats();
    assert_eq!((intercept(&s, "probes_proved"), intercept(&s, "tls_not_decrypted")), (1, 4));

    // The attack.
    let root = origin.root.display().to_string();
    let text = s_client(&lab, &format!("-servername x.bank.tg.test -connect {server}:443 -CAfile {root}"));
    assert!(text.contains("alert handshake failure"), "the attacker got our alert: {text}");
    assert!(text.contains("no peer certificate available"), "no raw tunnel to the origin: {text}");
    check_second("an unproved SNI");

    // A bogus ALPN under undecryptable: pass.
    let text = s_client(&lab, &format!("-alpn bogus-proto -servername server.tg.test -connect {server}:443"));
    assert!(text.contains("alert handshake failure"), "the attacker got our alert: {text}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while intercept(&dp.stats(), "probes_not_confirmed") == 0 {
        assert!(
            Instant::now() < deadline,
            "the probe did not conclude: {:?}",
            dp.stats().workers[0].counters
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    check_second("a bogus ALPN");
    let again = curl_https(&lab, &origin, None, 20);
    assert_eq!(again.stdout, "200", "the attacker's next connection is decrypted: {again:?}");

    let s = dp.stats();
    assert_eq!(intercept(&s, "sni_unproved"), 1, "{:?}", s.workers[0].counters);
    assert_eq!(intercept(&s, "probes_not_proved"), 1);
    assert_eq!(intercept(&s, "exclusions_learned"), 0);
    assert_eq!(intercept(&s, "tls_passed_excluded") + intercept(&s, "tls_passed"), 0, "nothing passed");
    assert_eq!(intercept(&s, "tls_not_decrypted"), 4, "the bank's four only");
    drop(nginx);
    drop(dp);
    let log: Vec<serde_json::Value> = std::fs::read_to_string(events.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    let attack = log.iter().find(|e| e["sni"] == "x.bank.tg.test").expect("the attack's event");
    assert_eq!(
        (attack["kind"].as_str(), attack["rule"].as_str()),
        (Some("abort"), Some("Decrypt-All")),
        "{attack}"
    );
    lab.teardown();
}
