//! The intercept path in process (no root): a smoltcp client and server host talk
//! through real dataplane workers over memory ports (`tlsgate_tests::netsim`).

use std::time::Duration;

use smoltcp::socket::tcp::State;
use tlsgate_dataplane::config::Config;
use tlsgate_dataplane::wire::parse::tcp_flags::{ACK, RST, SYN};
use tlsgate_tests::netsim::{pattern, tcp_seq, Net};

fn config(ports: &[u16]) -> Config {
    config_with(ports, "buffer_kib = 64")
}

/// Spliced `ports`, with `intercept` lines.
fn config_with(ports: &[u16], intercept: &str) -> Config {
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n\
         [intercept]\nports = [{}]\n{intercept}\nconnect_timeout_s = 3\n",
        ports.join(",")
    );
    Config::from_toml(&toml).expect("test config")
}

fn counter(s: &tlsgate_dataplane::run::Summary, name: &str) -> u64 {
    intercept_counter(s, name)
}

fn intercept_counter(s: &tlsgate_dataplane::run::Summary, name: &str) -> u64 {
    s.stats.workers.iter().map(|w| w.get(name)).sum()
}

fn syn_seq(frames: &[Vec<u8>]) -> u32 {
    frames.iter().filter_map(|f| tcp_seq(f)).find(|(_, fl)| fl & (SYN | ACK) == SYN).expect("a SYN").0
}

/// Transfers `up` bytes client→server and `down` bytes back over one connection,
/// then both close; returns what each side received.
fn transfer(net: &mut Net, port: u16, up: &[u8], down: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ss = net.server.tcp(256 * 1024);
    net.server.sock(ss).listen(port).unwrap();
    let cs = net.client.tcp(256 * 1024);
    net.client.connect(cs, 40000, port);
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let (mut sent_up, mut sent_down) = (0, 0);
    net.run_until(Duration::from_secs(60), |n| {
        let c = n.client.sock(cs);
        if c.can_send() && sent_up < up.len() {
            sent_up += c.send_slice(&up[sent_up..]).unwrap();
        }
        if sent_up == up.len() && at_client.len() == down.len() && c.state() == State::Established {
            c.close();
        }
        while let Ok(b) = c.recv(|b| (b.len(), b.to_vec())) {
            if b.is_empty() {
                break;
            }
            at_client.extend(b);
        }
        let s = n.server.sock(ss);
        while let Ok(b) = s.recv(|b| (b.len(), b.to_vec())) {
            if b.is_empty() {
                break;
            }
            at_server.extend(b);
        }
        if s.can_send() && sent_down < down.len() {
            sent_down += s.send_slice(&down[sent_down..]).unwrap();
        }
        if s.state() == State::CloseWait && sent_down == down.len() {
            s.close();
        }
        let cst = n.client.sock(cs).state();
        let sst = n.server.sock(ss).state();
        matches!(cst, State::TimeWait | State::Closed) && matches!(sst, State::Closed | State::TimeWait)
    });
    (at_server, at_client)
}

#[test]
fn splice_relays_both_ways_with_its_own_sequence_numbers() {
    let mut net = Net::new(config(&[80]), 1);
    net.record();
    let up = pattern(1_000_000, 1);
    let down = pattern(1_500_000, 2);
    let (at_server, at_client) = transfer(&mut net, 80, &up, &down);
    assert!(at_server == up, "server got {} of {} bytes, intact: false", at_server.len(), up.len());
    assert!(at_client == down, "client got {} of {} bytes, intact: false", at_client.len(), down.len());
    // Terminated, not forwarded: the server leg's SYN is the appliance's own.
    let client_isn = syn_seq(&net.client.sent);
    let server_leg_isn = syn_seq(&net.server.seen);
    assert_ne!(
        client_isn, server_leg_isn,
        "the SYN reaching the server must be the splice's, not the client's"
    );
    let s = net.stop();
    assert_eq!(intercept_counter(&s, "intercept_created"), 1);
    assert_eq!(intercept_counter(&s, "intercept_closed"), 1);
    assert_eq!(intercept_counter(&s, "intercept_active"), 0, "buffers freed once both legs closed");
    assert_eq!(intercept_counter(&s, "intercept_bytes_up"), up.len() as u64);
    assert_eq!(intercept_counter(&s, "intercept_bytes_down"), down.len() as u64);
}

/// A transfer whose send buffer fills (the client acknowledges slower than the
/// server sends) doubles its buffers, up to `buffer_max_kib`: 16 → 32 → 64 KiB is
/// two doublings. An exchange of a few bytes keeps the full buffers it got. Every
/// byte charged comes back when the splices end.
#[test]
fn a_bulk_transfer_doubles_its_buffers_up_to_buffer_max_kib() {
    let cfg = || config_with(&[80], "buffer_kib = 16\nbuffer_max_kib = 64");
    let mut net = Net::new(cfg(), 1);
    let (up, down) = (pattern(1_000, 1), pattern(1_000, 2));
    assert_eq!(transfer(&mut net, 80, &up, &down), (up, down));
    let s = net.stop();
    assert_eq!((counter(&s, "buffers_grown"), counter(&s, "buffers_doubled")), (1, 0));

    let mut net = Net::new(cfg(), 1);
    let (up, down) = (pattern(1_000, 3), pattern(3_000_000, 4));
    let (at_server, at_client) = transfer(&mut net, 80, &up, &down);
    assert!(at_server == up && at_client == down, "intact both ways");
    let s = net.stop();
    assert_eq!((counter(&s, "buffers_grown"), counter(&s, "buffers_doubled")), (1, 2));
    assert_eq!(counter(&s, "memory_charged_bytes"), 0, "all charges came back");
}

/// A splice grown by a 2 MB download (16 → 32 → 64 KiB), then `quiet_ms` of
/// virtual time without data, then `then`; the connection stays open. Returns
/// the final counters.
fn grown_then_quiet(quiet_ms: usize, then: After) -> tlsgate_dataplane::run::Summary {
    let mut net = Net::new(config_with(&[80], "buffer_kib = 16\nbuffer_max_kib = 64"), 1);
    let ss = net.server.tcp(256 * 1024);
    net.server.sock(ss).listen(80).unwrap();
    let cs = net.client.tcp(256 * 1024);
    net.client.connect(cs, 40000, 80);
    net.run_until(Duration::from_secs(20), |n| {
        n.client.sock(cs).state() == State::Established && n.server.sock(ss).state() == State::Established
    });
    net.client.sock(cs).send_slice(b"GET").unwrap();
    let burst = |net: &mut Net, seed: u64| {
        let data = pattern(2_000_000, seed);
        let (mut sent, mut got) = (0, Vec::new());
        net.run_until(Duration::from_secs(60), |n| {
            let s = n.server.sock(ss);
            let _ = s.recv(|b| (b.len(), ()));
            if sent < data.len() && s.can_send() {
                sent += s.send_slice(&data[sent..]).unwrap();
            }
            while let Ok(b) = n.client.sock(cs).recv(|b| (b.len(), b.to_vec())) {
                if b.is_empty() {
                    break;
                }
                got.extend(b);
            }
            got.len() == data.len()
        });
        assert!(got == data, "the burst arrived intact");
    };
    burst(&mut net, 5);
    if then == After::Stall {
        // The client stops reading; the server fills the splice's send buffer
        // towards it, which then cannot empty.
        let more = pattern(400_000, 6);
        let mut sent = 0;
        for _ in 0..500 {
            let s = net.server.sock(ss);
            if sent < more.len() && s.can_send() {
                sent += s.send_slice(&more[sent..]).unwrap();
            }
            net.step();
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    for _ in 0..quiet_ms {
        net.step(); // 1 ms of virtual time each, nothing sent
                    // Real time for the worker to see each virtual millisecond.
        std::thread::sleep(Duration::from_micros(50));
    }
    if then == After::Burst {
        burst(&mut net, 7);
    }
    net.stop()
}

#[derive(PartialEq)]
enum After {
    Nothing,
    Burst,
    Stall,
}

/// After 2 s without data, a splice whose buffers grew gives its send buffers
/// back, and exactly their charge comes back; its receive buffers keep their
/// size (the window they offered stands). Not after 1.5 s.
#[test]
fn a_quiet_bulk_transfer_gives_its_send_buffers_back() {
    const FULL: u64 = (4 * 16 + 52) * 1024; // four 16 KiB buffers, stack and TLS
    let s = grown_then_quiet(1500, After::Nothing);
    assert_eq!((counter(&s, "buffers_doubled"), counter(&s, "buffers_shrunk")), (2, 0));
    assert_eq!(counter(&s, "memory_charged_bytes"), FULL + 4 * 48 * 1024, "all four grown");

    let s = grown_then_quiet(3000, After::Nothing);
    assert_eq!((counter(&s, "buffers_doubled"), counter(&s, "buffers_shrunk")), (2, 1));
    assert_eq!(counter(&s, "memory_charged_bytes"), FULL + 2 * 48 * 1024, "the receive buffers stay grown");
}

/// The next burst grows the send buffers again (alone: 16 → 32 → 64), charged
/// exactly.
#[test]
fn a_bulk_transfer_grows_its_send_buffers_again_after_a_quiet_spell() {
    let s = grown_then_quiet(3000, After::Burst);
    assert_eq!((counter(&s, "buffers_doubled"), counter(&s, "buffers_shrunk")), (4, 1));
    assert_eq!(counter(&s, "memory_charged_bytes"), (4 * 16 + 52) * 1024 + 4 * 48 * 1024);
}

/// A send buffer that still holds data (its reader stopped) is not given back;
/// the other leg's, empty, is.
#[test]
fn a_send_buffer_holding_data_is_not_given_back() {
    let s = grown_then_quiet(3000, After::Stall);
    assert_eq!((counter(&s, "buffers_doubled"), counter(&s, "buffers_shrunk")), (2, 1));
    assert_eq!(
        counter(&s, "memory_charged_bytes"),
        (4 * 16 + 52) * 1024 + 3 * 48 * 1024,
        "the client leg's send buffer, holding data, kept its 64 KiB"
    );
}

#[test]
fn other_ports_take_the_fast_path_untouched() {
    let mut net = Net::new(config(&[80]), 1);
    net.record();
    let up = pattern(100_000, 3);
    let down = pattern(50_000, 4);
    let (at_server, at_client) = transfer(&mut net, 8080, &up, &down);
    assert!(at_server == up && at_client == down);
    assert_eq!(syn_seq(&net.client.sent), syn_seq(&net.server.seen), "forwarded as is");
    let s = net.stop();
    assert_eq!(intercept_counter(&s, "intercept_created"), 0);
}

#[test]
fn server_refusal_reaches_the_client_as_a_reset_without_a_syn_ack() {
    let mut net = Net::new(config(&[80]), 1);
    net.record();
    // No listener on the server: its stack answers the splice's SYN with RST.
    let cs = net.client.tcp(4096);
    net.client.connect(cs, 40001, 80);
    net.run_until(Duration::from_secs(10), |n| n.client.sock(cs).state() == State::Closed);
    let flags: Vec<u8> = net.client.seen.iter().filter_map(|f| tcp_seq(f)).map(|(_, f)| f).collect();
    assert!(flags.iter().all(|f| f & (SYN | ACK) != SYN | ACK), "the client never saw a SYN-ACK: {flags:?}");
    assert!(flags.iter().any(|f| f & RST != 0), "the client got a RST: {flags:?}");
    let s = net.stop();
    assert_eq!(intercept_counter(&s, "intercept_server_refused"), 1);
}

#[test]
fn a_client_reset_mid_stream_resets_the_server_leg() {
    let mut net = Net::new(config(&[80]), 1);
    let ss = net.server.tcp(65536);
    net.server.sock(ss).listen(80).unwrap();
    let cs = net.client.tcp(65536);
    net.client.connect(cs, 40002, 80);
    let data = pattern(20_000, 5);
    let mut sent = 0;
    let mut got = 0;
    net.run_until(Duration::from_secs(20), |n| {
        let c = n.client.sock(cs);
        if c.can_send() && sent < data.len() {
            sent += c.send_slice(&data[sent..]).unwrap();
        }
        let s = n.server.sock(ss);
        while let Ok(k) = s.recv(|b| (b.len(), b.len())) {
            if k == 0 {
                break;
            }
            got += k;
        }
        got == data.len()
    });
    net.client.sock(cs).abort();
    net.run_until(Duration::from_secs(10), |n| n.server.sock(ss).state() == State::Closed);
    let s = net.stop();
    assert_eq!(intercept_counter(&s, "intercept_reset"), 1);
}

#[test]
fn a_thousand_concurrent_spliced_connections() {
    let mut net = Net::new(config(&[80]), 2);
    const N: usize = 1000;
    let mut pairs = Vec::new();
    for i in 0..N {
        let ss = net.server.tcp(32 * 1024);
        net.server.sock(ss).listen(80).unwrap();
        let cs = net.client.tcp(32 * 1024);
        net.client.connect(cs, 40000 + i as u16, 80);
        pairs.push((cs, ss, pattern(10_000, i as u64 + 10), 0usize, Vec::new()));
    }
    net.run_until(Duration::from_secs(120), |n| {
        let mut done = 0;
        for (cs, ss, data, sent, got) in pairs.iter_mut() {
            let c = n.client.sock(*cs);
            if c.can_send() && *sent < data.len() {
                *sent += c.send_slice(&data[*sent..]).unwrap();
            }
            let s = n.server.sock(*ss);
            while let Ok(b) = s.recv(|b| (b.len(), b.to_vec())) {
                if b.is_empty() {
                    break;
                }
                got.extend(b);
            }
            if got.len() == data.len() {
                done += 1;
            }
        }
        done == N
    });
    for (_, _, data, _, got) in &pairs {
        assert!(got == data);
    }
    let s = net.stop();
    assert_eq!(intercept_counter(&s, "intercept_created"), N as u64);
    assert_eq!(intercept_counter(&s, "intercept_bytes_up"), 0, "counted when a splice ends; all still open");
    assert_eq!(intercept_counter(&s, "intercept_active"), N as u64);
}
