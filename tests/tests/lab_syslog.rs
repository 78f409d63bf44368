//! Events to an existing pipeline: rsyslog with its RELP input (`rsyslog-relp`)
//! in a network namespace of its own receives every event as OCSF in RFC 5424
//! syslog, at least once, across a collector outage and a control-plane
//! restart. Root only (the namespace); the dataplane runs in process.
//!
//! ```text
//!   dataplane (netsim) ──rings──► tlsgate-control ──spool──► RELP ──P-syl 198.18.43.1/30 ⇄ P-syl0 198.18.43.2/30──►
//!                                                                       [ns P-syslog] rsyslogd imrelp :2514 → received.log
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_certstore::pki_types::PrivateKeyDer;
use tlsgate_certstore::rustls::{ClientConfig, ServerConfig};
use tlsgate_dataplane::config::Config;
use tlsgate_tests::control::{write, Control, DECRYPT_ALL};
use tlsgate_tests::netsim::{client_trusting, origin_server, tls_exchange, Net};
use tlsgate_tests::{netns_spawn, require_root, run_cmd, serial, Proc, TempDir};

#[allow(dead_code)]
#[path = "../../certstore/tests/support/pki.rs"]
mod pki;

const NS: &str = "tgt23-syslog";
const ROOT_IF: &str = "tgt23-syl";
const NS_IF: &str = "tgt23-syl0";

fn ip(args: &[&str]) {
    run_cmd(std::process::Command::new("ip").args(args), Duration::from_secs(10)).expect_success("ip");
}

/// The collector's namespace and link; removed when dropped.
struct CollectorNet;

impl CollectorNet {
    fn up() -> CollectorNet {
        CollectorNet::down();
        ip(&["netns", "add", NS]);
        ip(&["link", "add", ROOT_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS]);
        ip(&["addr", "add", "198.18.43.1/30", "dev", ROOT_IF]);
        ip(&["link", "set", ROOT_IF, "up"]);
        ip(&["-n", NS, "addr", "add", "198.18.43.2/30", "dev", NS_IF]);
        ip(&["-n", NS, "link", "set", NS_IF, "up"]);
        ip(&["-n", NS, "link", "set", "lo", "up"]);
        CollectorNet
    }

    fn down() {
        for args in [&["link", "del", ROOT_IF][..], &["netns", "del", NS]] {
            let _ = run_cmd(std::process::Command::new("ip").args(args), Duration::from_secs(10));
        }
    }
}

impl Drop for CollectorNet {
    fn drop(&mut self) {
        CollectorNet::down();
    }
}

/// rsyslogd with imrelp on 2514 in the namespace, writing each message's MSG
/// (the OCSF record) as a line of `dir/received.log`.
fn rsyslogd(dir: &Path) -> Proc {
    let conf = write(
        dir,
        "rsyslog.conf",
        &format!(
            "global(workDirectory=\"{d}\")\nmodule(load=\"imrelp\")\ninput(type=\"imrelp\" port=\"2514\")\n\
             template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
             action(type=\"omfile\" file=\"{d}/received.log\" template=\"msgonly\")\n",
            d = dir.display()
        ),
    );
    let pid = dir.join("rsyslogd.pid");
    let _ = std::fs::remove_file(&pid);
    let mut p =
        netns_spawn(NS, &["rsyslogd", "-n", "-f", conf.to_str().unwrap(), "-i", pid.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(
        &"198.18.43.2:2514".parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(p.try_status().is_none(), "rsyslogd exited: {}", p.stderr_text());
        assert!(Instant::now() < deadline, "rsyslogd did not listen: {}", p.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// The event ids rsyslog wrote (the OCSF `metadata.uid` of each line).
fn received(dir: &Path) -> BTreeSet<u64> {
    std::fs::read_to_string(dir.join("received.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter_map(|v| v["metadata"]["uid"].as_str().and_then(|u| u.parse().ok()))
        .collect()
}

/// The event ids the control plane logged.
fn produced(c: &Control) -> BTreeSet<u64> {
    c.logged_events().iter().filter_map(|e| e["event_id"].as_u64()).collect()
}

fn dataplane(c: &Control) -> Net {
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n\
         [intercept]\nconnect_timeout_s = 5\n[tls]\nhandshake_timeout_s = 5\n{}",
        c.dataplane_toml()
    );
    Net::new(Config::from_toml(&toml).expect("dataplane config"), 1)
}

/// `n` connections to a self-signed server: each is an abort event.
fn aborts(net: &mut Net, client: &Arc<ClientConfig>, srv: &Arc<ServerConfig>, first_port: u16, n: u16) {
    for port in first_port..first_port + n {
        let (resp, err, _, _) =
            tls_exchange(net, srv.clone(), client.clone(), "asa.tg.test", 443, port, b"GET /", 10);
        assert!(resp.is_none() && err.is_some(), "refused");
    }
}

/// Waits until `pred` holds, stepping the in-process dataplane meanwhile.
fn wait(net: &mut Net, what: &str, secs: u64, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        for _ in 0..10 {
            net.step();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event id the control plane logged reaches rsyslog: with the collector
/// up; while it is down (spooled); across a restart of the control plane with
/// events still spooled and more made while it was down; and the spool is empty
/// at the end. Each line is an OCSF Network Activity record with the TLS object.
#[test]
fn every_event_reaches_rsyslog_over_relp_at_least_once() {
    let _serial = serial();
    if !require_root() {
        return;
    }
    if std::process::Command::new("rsyslogd").arg("-v").output().is_err() {
        panic!("rsyslogd is missing: scripts/install-deps.sh installs rsyslog and rsyslog-relp");
    }
    let _net = CollectorNet::up();
    let files = TempDir::new("syslog");
    let extra = "[[control.syslog]]\nname = \"siem\"\ntarget = \"198.18.43.2:2514\"\n";
    let mut c = Control::start("syslog", extra);
    c.ok(&["ca", "generate"]);
    let policy = write(c.dir.path(), "policy.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let asa = pki::ciscoasa();
    let srv = origin_server(vec![asa.der()], PrivateKeyDer::Pkcs8(asa.key.serialize_der().into()), false);
    let ca = tlsgate_certstore::parse_certificates(c.ok(&["ca", "export"]).as_bytes()).unwrap().remove(0);
    let client = client_trusting(&[ca]);

    // The collector up: delivered.
    let mut collector = rsyslogd(files.path());
    aborts(&mut net, &client, &srv, 50001, 3);
    wait(&mut net, "3 events logged", 15, || produced(&c).len() == 3);
    wait(&mut net, "3 events received", 20, || received(files.path()) == produced(&c));
    let line = std::fs::read_to_string(files.path().join("received.log")).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["class_uid"].as_u64(), first["activity_name"].as_str()),
        (Some(4001), Some("Fail")),
        "{first}"
    );
    assert_eq!(first["tls"]["sni"], "asa.tg.test", "{first}");
    assert_eq!(first["unmapped"]["leg"], "server", "{first}");
    assert!(
        first["ja4_fingerprint_list"][0]["value"].as_str().is_some_and(|j| j.starts_with("t13")),
        "{first}"
    );

    // The collector down: spooled.
    collector.terminate(Duration::from_secs(5));
    aborts(&mut net, &client, &srv, 50011, 3);
    wait(&mut net, "6 events logged", 15, || produced(&c).len() == 6);
    let spool = c.state_dir().join("syslog/siem.spool");
    assert!(
        std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0) > 0,
        "spooled while the collector is down"
    );

    // The control plane restarts with events spooled; more come while it is down
    // (they wait in the dataplane's rings).
    c.kill();
    aborts(&mut net, &client, &srv, 50021, 2);
    c.restart(None);
    wait(&mut net, "8 events logged", 20, || produced(&c).len() == 8);

    // The collector back: everything arrives, and the spool empties.
    let mut collector = rsyslogd(files.path());
    wait(&mut net, "every event received", 60, || received(files.path()) == produced(&c));
    assert_eq!(received(files.path()).len(), 8);
    wait(&mut net, "the spool emptied", 10, || std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(1) == 0);
    collector.terminate(Duration::from_secs(5));
    drop(net.stop());
    drop(c);
}
