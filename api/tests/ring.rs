//! The event ring end to end: ordering, wrap-around, drops and gaps, persistence
//! across restarts of either side, two threads, two processes, and refusal of
//! files that are not this build's rings.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tlsgate_api::event::{set_text, text, ALERT_NONE};
use tlsgate_api::{Cause, Consumer, EventKind, EventRecord, Leg, Outcome, Phase, Producer, VerifyReason};

fn ring_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("events.0")
}

/// A record whose content is derived from `n`, touching both ends of the record
/// so a torn copy would show.
fn numbered(n: u64) -> EventRecord {
    let mut r = EventRecord::new(EventKind::Passed);
    r.event_id = n;
    r.bytes_down = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    r.error_detail[184..].copy_from_slice(&(!n).to_le_bytes());
    r
}

/// The `n` of a record made by [`numbered`]; panics if it is inconsistent.
fn check(r: &EventRecord) -> u64 {
    let n = r.event_id;
    assert_eq!(r.bytes_down, n.wrapping_mul(0x9e37_79b9_7f4a_7c15), "record {n} torn");
    assert_eq!(r.error_detail[184..], (!n).to_le_bytes(), "record {n} torn");
    n
}

fn drain(c: &mut Consumer) -> Vec<u64> {
    std::iter::from_fn(|| c.pop()).map(|r| check(&r)).collect()
}

#[test]
fn records_come_out_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 16).unwrap();
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(c.pop(), None);
    for n in 0..10 {
        assert!(p.try_push(&numbered(n)));
    }
    assert_eq!(c.pending(), 10);
    assert_eq!(drain(&mut c), (0..10).collect::<Vec<_>>());
    assert_eq!((p.dropped(), c.dropped(), c.take_gap()), (0, 0, 0));
}

#[test]
fn peeked_records_stay_until_advanced_even_across_a_consumer_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 16).unwrap();
    for n in 0..3 {
        assert!(p.try_push(&numbered(n)));
    }
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(c.peek().map(|r| check(&r)), Some(0));
    assert_eq!(c.peek().map(|r| check(&r)), Some(0), "peek does not consume");
    assert!(c.advance());
    assert_eq!(c.peek().map(|r| check(&r)), Some(1));
    // A consumer that stops after peeking (before storing) leaves the record.
    drop(c);
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(drain(&mut c), vec![1, 2]);
    assert_eq!(c.peek(), None);
    assert!(!c.advance(), "nothing to advance over");
}

#[test]
fn wraps_around_many_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 8).unwrap();
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    let (mut next_in, mut next_out) = (0, 0);
    // Batches of 1..=8 push and pop, so the indices cross the end of the slots
    // at every offset, for ~500 laps.
    for round in 0..1000 {
        for _ in 0..(round % 8 + 1) {
            assert!(p.try_push(&numbered(next_in)));
            next_in += 1;
        }
        for n in drain(&mut c) {
            assert_eq!(n, next_out);
            next_out += 1;
        }
    }
    assert_eq!(next_out, next_in);
    assert!(next_in > 8 * 500);
    assert_eq!(p.dropped(), 0);
}

#[test]
fn full_ring_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 4).unwrap();
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    let pushed: Vec<bool> = (0..10).map(|n| p.try_push(&numbered(n))).collect();
    assert_eq!(pushed, [true, true, true, true, false, false, false, false, false, false]);
    assert_eq!((p.dropped(), c.dropped()), (6, 6));
    assert_eq!(c.take_gap(), 6);
    assert_eq!(c.take_gap(), 0);
    // The oldest records are kept, the newest refused.
    assert_eq!(drain(&mut c), [0, 1, 2, 3]);
    assert!(p.try_push(&numbered(10)));
    assert_eq!(drain(&mut c), [10]);
    for n in 11..20 {
        p.try_push(&numbered(n));
    }
    assert_eq!(c.take_gap(), 5);
    assert_eq!(c.dropped(), 11);
    assert_eq!(drain(&mut c), [11, 12, 13, 14]);
}

#[test]
fn gap_is_reported_once_across_consumer_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 2).unwrap();
    for n in 0..5 {
        p.try_push(&numbered(n));
    }
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(c.take_gap(), 3);
    assert_eq!(drain(&mut c), [0, 1]);
    drop(c);
    // While no consumer runs the ring fills and drops again.
    for n in 5..9 {
        p.try_push(&numbered(n));
    }
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(c.take_gap(), 2, "only the drops the first consumer did not report");
    assert_eq!(drain(&mut c), [5, 6]);
}

#[test]
fn consumer_opened_later_sees_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut p = Producer::create(ring_path(&dir), 8).unwrap();
        for n in 0..3 {
            assert!(p.try_push(&numbered(n)));
        }
    } // the producer is gone; the file stays
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(drain(&mut c), [0, 1, 2]);
    // A consumer restart resumes after what was read.
    let mut p = Producer::create(ring_path(&dir), 8).unwrap();
    p.try_push(&numbered(3));
    drop(c);
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(drain(&mut c), [3]);
}

#[test]
fn new_producer_keeps_unread_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 8).unwrap();
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    for n in 0..6 {
        p.try_push(&numbered(n));
    }
    assert_eq!(c.pop().map(|r| check(&r)), Some(0));
    drop(p);
    let mut p = Producer::create(ring_path(&dir), 8).unwrap();
    assert!(!c.is_replaced(), "same layout and capacity: the file is reused");
    p.try_push(&numbered(6));
    assert_eq!(drain(&mut c), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn producer_with_another_capacity_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 8).unwrap();
    p.try_push(&numbered(0));
    let c = Consumer::open(ring_path(&dir)).unwrap();
    drop(p);
    let mut p = Producer::create(ring_path(&dir), 16).unwrap();
    assert_eq!(p.capacity(), 16);
    assert!(c.is_replaced());
    drop(c);
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    assert_eq!(c.capacity(), 16);
    assert_eq!(c.pop(), None, "records of the old layout are gone");
    p.try_push(&numbered(1));
    assert_eq!(drain(&mut c), [1]);
}

#[test]
fn a_record_crosses_the_ring_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 1).unwrap();
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    let r = seed_abort();
    assert!(p.try_push(&r));
    assert!(!p.try_push(&r), "capacity 1 is full");
    let back = c.pop().unwrap();
    assert_eq!(back, r);
    assert_eq!(back.to_json(), r.to_json());
}

#[test]
fn two_threads_a_million_records() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::create(ring_path(&dir), 4096).unwrap();
    let mut c = Consumer::open(ring_path(&dir)).unwrap();
    let started = Instant::now();
    let producer = std::thread::spawn(move || {
        let (mut pushed, mut sum) = (0u64, 0u64);
        for n in 0..N {
            if p.try_push(&numbered(n)) {
                pushed += 1;
                sum = sum.wrapping_add(n);
            }
        }
        (pushed, sum, p.dropped())
    });
    let (mut received, mut sum, mut last) = (0u64, 0u64, None);
    while received + c.dropped() < N {
        match c.pop() {
            Some(r) => {
                let n = check(&r);
                assert!(last < Some(n), "{n} after {last:?}");
                last = Some(n);
                received += 1;
                sum = sum.wrapping_add(n);
            }
            None => std::hint::spin_loop(),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "stuck at {received}");
    }
    let (pushed, pushed_sum, dropped) = producer.join().unwrap();
    assert_eq!(c.pop(), None);
    assert_eq!((received, sum), (pushed, pushed_sum));
    assert_eq!(received + dropped, N);
    assert_eq!(c.take_gap(), dropped);
    assert!(received > 0);
    eprintln!("two threads: {received} received, {dropped} dropped");
}

const CHILD_ENV: &str = "TLSGATE_EVENT_RING_CHILD";
const CHILD_N: u64 = 200_000;
const CHILD_CAP: u32 = 1024;

/// The producer half of `two_processes`; does nothing unless started by it.
#[test]
fn two_processes_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut p = Producer::create(&path, CHILD_CAP).unwrap();
    let (mut pushed, mut sum) = (0u64, 0u64);
    for n in 0..CHILD_N {
        if p.try_push(&numbered(n)) {
            pushed += 1;
            sum = sum.wrapping_add(n);
        } else {
            // Dropped (and counted); a refused push is so much cheaper than a pop
            // that without a pause nearly everything after the first lap drops.
            std::thread::yield_now();
        }
    }
    println!("CHILD-PUSHED {pushed} {sum}");
}

#[test]
fn two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);
    drop(Producer::create(&path, CHILD_CAP).unwrap()); // so the consumer can open it now
    let mut c = Consumer::open(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "two_processes_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (mut received, mut sum, mut last, mut polls) = (0u64, 0u64, None, 0u64);
    let status = loop {
        match c.pop() {
            Some(r) => {
                let n = check(&r);
                assert!(last < Some(n), "{n} after {last:?}");
                last = Some(n);
                received += 1;
                sum = sum.wrapping_add(n);
                continue;
            }
            None if received + c.dropped() == CHILD_N => break child.wait().unwrap(),
            None => std::hint::spin_loop(),
        }
        polls += 1;
        if polls % 1024 != 0 {
            continue;
        }
        if let Some(status) = child.try_wait().unwrap() {
            // Exited: whatever it pushed is in the ring now.
            received += drain(&mut c).into_iter().inspect(|&n| sum = sum.wrapping_add(n)).count() as u64;
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "stuck at {received}");
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "child failed: {out}");
    let report = out.split("CHILD-PUSHED ").nth(1).expect(&out);
    let mut words = report.split_whitespace();
    let (pushed, pushed_sum) = (words.next().unwrap(), words.next().unwrap());
    assert_eq!((received, sum), (pushed.parse().unwrap(), pushed_sum.parse().unwrap()));
    assert_eq!(received + c.dropped(), CHILD_N);
    assert!(received > 0);
    eprintln!("two processes: {received} received, {} dropped", c.dropped());
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

fn refusal(path: &Path) -> String {
    let e = Consumer::open(path).err().expect("must be refused");
    assert!(matches!(e, tlsgate_api::Error::RingBadHeader { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&*path.to_string_lossy()), "message must name the file: {msg}");
    msg
}

#[test]
fn foreign_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(&dir);

    std::fs::write(&path, vec![0u8; 256 + 4 * 1024]).unwrap();
    assert!(refusal(&path).contains("bad magic"));

    std::fs::write(&path, b"short").unwrap();
    assert!(refusal(&path).contains("shorter than the 256-byte header"));

    let fresh = |path: &Path| drop(Producer::create(path, 4).unwrap());
    fresh(&path);
    patch(&path, 0, b"TGEVRINX");
    assert!(refusal(&path).contains("bad magic \"TGEVRINX\""));

    fresh(&path);
    patch(&path, 12, &512u32.to_ne_bytes());
    let msg = refusal(&path);
    assert!(msg.contains("record size 512 bytes") && msg.contains("1152"), "{msg}");

    fresh(&path);
    patch(&path, 8, &99u32.to_ne_bytes());
    assert!(refusal(&path).contains("layout version 99"));

    fresh(&path);
    patch(&path, 16, &8u32.to_ne_bytes()); // claims 8 records, file holds 4
    assert!(refusal(&path).contains("a ring of 8 records is"));

    let missing = dir.path().join("nope");
    let e = Consumer::open(&missing).err().unwrap();
    assert!(e.to_string().contains("nope") && e.to_string().contains("open"), "{e}");

    // A producer replaces any such file with a good ring.
    patch(&path, 0, b"garbage!");
    let mut p = Producer::create(&path, 4).unwrap();
    p.try_push(&numbered(7));
    assert_eq!(drain(&mut Consumer::open(&path).unwrap()), [7]);
}

#[cfg(target_os = "linux")]
#[test]
fn second_producer_or_consumer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = Producer::create(ring_path(&dir), 4).unwrap();
    let e = Producer::create(ring_path(&dir), 4).err().unwrap();
    assert!(matches!(e, tlsgate_api::Error::RingBusy { role: "producer", .. }), "{e}");
    let c = Consumer::open(ring_path(&dir)).unwrap();
    let e = Consumer::open(ring_path(&dir)).err().unwrap();
    assert!(matches!(e, tlsgate_api::Error::RingBusy { role: "consumer", .. }), "{e}");
    assert!(e.to_string().contains("already open by another consumer"), "{e}");
    drop((p, c));
    Producer::create(ring_path(&dir), 4).unwrap();
    Consumer::open(ring_path(&dir)).unwrap();
}

/// Problem 1 and 2 of SEED.md in one record.
fn seed_abort() -> EventRecord {
    let mut r = EventRecord::new(EventKind::Abort);
    r.event_id = 42;
    r.time_ns = 1_391_577_702_189_000_000;
    r.worker = 3;
    r.leg = Leg::Server as u8;
    r.phase = Phase::ServerHandshake as u8;
    r.set_addrs("10.1.1.10:64193".parse().unwrap(), "172.16.1.1:443".parse().unwrap());
    r.tls_version = 0x0301;
    r.cipher_suite = 0xc02f;
    r.alert_received = 40;
    r.set_outcome(&Outcome::new(
        EventKind::Abort,
        Leg::Server,
        Phase::ServerHandshake,
        Cause::Certificate { reason: VerifyReason::DepthZeroSelfSignedCert, depth: 0 },
    ));
    r.config_version = 89;
    r.connection_id = 390_891;
    r.session_id = 0x2fd1f6;
    r.inside_port = 0;
    r.outside_port = 1;
    r.bytes_up = 179;
    r.bytes_down = 7;
    r.chain_sha256 = [0xab; 32];
    set_text(&mut r.sni, "server.example.test");
    set_text(&mut r.rule, "Decrypt-All");
    set_text(&mut r.server_cert_subject, "/unstructuredName=ciscoasa");
    set_text(&mut r.server_cert_issuer, "/unstructuredName=ciscoasa");
    set_text(
        &mut r.error_detail,
        "error:14077410:SSL routines:SSL23_GET_SERVER_HELLO:sslv3 alert handshake failure",
    );
    r
}

#[test]
fn to_json_names_the_seed_fields() {
    let j = seed_abort().to_json();
    let o = j.as_object().unwrap();
    assert_eq!(o.len(), 35, "one key per field (ja4, ALPN and groups only when known): {j:#}");
    assert_eq!(j["ech_offered"], false);
    assert_eq!(j["cause"], "certificate");
    assert_eq!(j["reason"], "self signed certificate");
    assert!(j["rule_index"].is_null());
    assert_eq!(j["kind"], "abort");
    assert_eq!(j["leg"], "server");
    assert_eq!(j["phase"], "server_handshake");
    assert_eq!(j["src_ip"], "10.1.1.10");
    assert_eq!(j["src_port"], 64193);
    assert_eq!(j["dst_ip"], "172.16.1.1");
    assert_eq!(j["dst_port"], 443);
    assert_eq!(j["ip_version"], 4);
    assert_eq!(j["connection_id"], 390_891);
    assert_eq!(j["config_version"], 89);
    assert_eq!(j["bytes_up"], 179);
    assert_eq!(j["bytes_down"], 7);
    assert_eq!(j["session_id"], "x2fd1f6");
    assert_eq!(j["tls_version"], "TLSv1");
    assert_eq!(j["cipher_suite"], "0xc02f");
    assert_eq!(j["alert_received"]["code"], 40);
    assert_eq!(j["alert_received"]["name"], "handshake_failure");
    assert!(j["alert_sent"].is_null());
    assert_eq!(j["verify_code"], 18);
    assert_eq!(j["verify_depth"], 0);
    assert_eq!(j["verify_text"], "self signed certificate");
    assert_eq!(j["server_cert_issuer"], "/unstructuredName=ciscoasa");
    assert_eq!(j["server_cert_subject"], "/unstructuredName=ciscoasa");
    assert_eq!(j["sni"], "server.example.test");
    assert_eq!(j["rule"], "Decrypt-All");
    assert_eq!(
        j["error_detail"],
        "the server's certificate failed verification: self signed certificate (code 18, depth 0): \
         error:14077410:SSL routines:SSL23_GET_SERVER_HELLO:sslv3 alert handshake failure"
    );
    assert_eq!(j["chain_sha256"], "ab".repeat(32));
    assert_eq!(j["worker"], 3);
    assert_eq!(j["outside_port"], 1);

    // Absent values read as null, unknown bytes as unknown(n).
    let mut r = EventRecord::new(EventKind::Decrypted);
    r.kind = 200;
    r.alert_sent = 0;
    r.alert_received = 99;
    let j = r.to_json();
    assert_eq!(j["kind"], "unknown(200)");
    assert_eq!(j["alert_sent"]["name"], "close_notify");
    assert!(j["alert_received"]["name"].is_null());
    assert!(j["chain_sha256"].is_null() && j["tls_version"].is_null() && j["cipher_suite"].is_null());
    assert_eq!(j["src_ip"], "::");
    assert_eq!(ALERT_NONE, 0xff);
}

#[test]
fn text_fields_truncate_on_utf8_boundaries() {
    let mut r = EventRecord::new(EventKind::NotDecrypted);
    // 255 ASCII bytes then a two-byte character: 257 bytes for a 256-byte field.
    let sni = format!("{}é", "a".repeat(255));
    assert!(!set_text(&mut r.sni, &sni));
    assert_eq!(text(&r.sni), "a".repeat(255));
    // 48-byte field, 3-byte characters: 16 fit exactly, the 17th does not.
    let long = "€".repeat(17);
    assert!(!set_text(&mut r.verify_text, &long));
    assert_eq!(text(&r.verify_text), "€".repeat(16));
    // 64-byte field, 4-byte characters after one ASCII byte: 15 fit (61 bytes).
    assert!(!set_text(&mut r.rule, &format!("x{}", "😀".repeat(16))));
    assert_eq!(text(&r.rule), format!("x{}", "😀".repeat(15)));
    // Rewriting with something shorter clears the rest.
    assert!(set_text(&mut r.sni, "b"));
    assert_eq!(text(&r.sni), "b");
    assert!(r.sni[1..].iter().all(|&b| b == 0));
}
