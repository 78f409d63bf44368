//! Key custody and who may do what on the control plane's sockets, tried as a
//! member of the operator socket's group and as a second process on the
//! dataplane socket would try it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tlsgate_api::{Body, Frame, Request, Response};
use tlsgate_dataplane::config::Config;
use tlsgate_tests::control::Control;
use tlsgate_tests::netsim::Net;

/// A dataplane (one worker, memory ports) connected to `c`.
fn dataplane(c: &Control) -> Net {
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n{}",
        c.dataplane_toml()
    );
    Net::new(Config::from_toml(&toml).expect("dataplane config"), 1)
}

fn hello_line() -> String {
    Frame::request(
        1,
        Request::DataplaneHello { workers: 1, pid: 1, version: "impostor".into(), running_version: 0 },
    )
    .encode()
}

/// Everything the peer is sent within `wait`, until it is closed.
fn read_all(s: &UnixStream, wait: Duration) -> String {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut all = String::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => all.push_str(&line),
            Err(_) => {
                all.push_str(&line);
            }
        }
    }
    all
}

/// Runs `script` (python) as nobody:nogroup with `socket` and a hello line.
fn say_hello_as_nobody(script: &str, socket: &std::path::Path) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg(socket)
        .arg(hello_line())
        .output()
        .unwrap()
}

/// One frame from `r` (answers and requests alike).
fn frame(r: &mut BufReader<UnixStream>) -> Frame {
    let mut line = String::new();
    r.read_line(&mut line).expect("a frame");
    Frame::decode(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn audit(c: &Control) -> String {
    std::fs::read_to_string(c.log_dir().join("audit.log")).unwrap_or_default()
}

/// An origin PKI: (root PEM, server chain for *.tg.test, its key).
type Pki = (
    String,
    Vec<tlsgate_certstore::pki_types::CertificateDer<'static>>,
    tlsgate_certstore::pki_types::PrivateKeyDer<'static>,
);

/// Makes `c` decrypt everything to a test origin (its root trusted, the
/// "Decrypt-All" policy committed); the origin's PKI.
fn decrypt_all(c: &Control) -> Pki {
    let pki = rcgen_pki();
    let root = tlsgate_tests::control::write(c.dir.path(), "origin-root.pem", &pki.0);
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    let policy = tlsgate_tests::control::write(c.dir.path(), "p.json", tlsgate_tests::control::DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    pki
}

/// An innocent client, trusting only the decryption CA, through `net` to the
/// origin of `pki` under a name of its own (a cold forge: the leaf is signed by
/// the control plane): it gets its answer, and its flow ends `decrypted`.
fn an_innocent_client_is_decrypted(c: &Control, net: &mut Net, pki: &Pki, client_port: u16) {
    use tlsgate_tests::netsim::{client_trusting, origin_server, tls_exchange};
    let ca_pem = c.ok(&["ca", "export"]);
    let ca = tlsgate_certstore::parse_certificates(ca_pem.as_bytes()).unwrap().remove(0);
    let sni = format!("innocent{client_port}.tg.test");
    let server = origin_server(pki.1.clone(), pki.2.clone_key(), false);
    let (resp, err, _, _) =
        tls_exchange(net, server, client_trusting(&[ca]), &sni, 443, client_port, b"GET /", 2000);
    assert!(err.is_none() && resp.is_some_and(|r| r.len() == 2000), "the innocent client: {err:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = c.logged_events();
        if e.iter().any(|e| e["src_port"] == u64::from(client_port) && e["kind"] == "decrypted") {
            break;
        }
        assert!(Instant::now() < deadline, "no decrypted event for the innocent client: {e:#?}");
        for _ in 0..10 {
            net.step();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A member of the operator socket's group sends `dataplane_hello` there: it is
/// refused, gets no snapshot (no CA key), the refusal is audited with its uid,
/// and the real dataplane still gets its configuration.
#[test]
fn a_group_member_posing_as_the_dataplane_is_refused_and_gets_no_key() {
    if tlsgate_tests::effective_uid() != Some(0) {
        eprintln!("skipped: needs root to act as a group member");
        return;
    }
    let c = Control::start("impostor", "socket_group = \"nogroup\"\n");
    c.ok(&["ca", "generate"]);
    let _ = std::process::Command::new("chmod").args(["755", c.dir.path().to_str().unwrap()]).status();
    let script = "import socket,sys,time\n\
        s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode())\n\
        s.settimeout(2); data=b''\n\
        try:\n  while True:\n    d=s.recv(65536)\n    if not d: break\n    data+=d\n\
        except socket.timeout: pass\n\
        sys.stdout.write(data.decode())\n";
    let out = say_hello_as_nobody(script, &c.socket());
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(got.contains("permission_denied") && got.contains("dataplane.sock"), "{got}");
    assert!(!got.contains("snapshot") && !got.contains("PRIVATE KEY"), "the impostor got a snapshot: {got}");
    let a = audit(&c);
    assert!(
        a.lines().any(|l| l.contains("\"uid\":65534")
            && l.contains("\"action\":\"dataplane_hello\"")
            && l.contains("\"result\":\"refused\"")),
        "{a}"
    );
    // The dataplane socket itself is 0600 root: nobody cannot even connect.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(c.dataplane_socket()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = say_hello_as_nobody(script, &c.dataplane_socket());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("PermissionError"));
    // Even with the socket opened to everyone, the daemon's own check refuses a
    // peer that is not root.
    let _ = std::process::Command::new("chmod").arg("666").arg(c.dataplane_socket()).status();
    let out = say_hello_as_nobody(script, &c.dataplane_socket());
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.contains("permission_denied") && got.contains("uid 65534"), "{got}");
    assert!(!got.contains("snapshot"), "{got}");

    // The real dataplane is not disturbed: it attaches, and decrypts.
    let pki = decrypt_all(&c);
    let mut net = dataplane(&c);
    let s = c.wait_applied(Duration::from_secs(10));
    assert!(s.dataplane_connected);
    an_innocent_client_is_decrypted(&c, &mut net, &pki, 47001);
    drop(net.stop());
}

/// One dataplane at a time; its pid is the kernel's; a chain whose hash is not the
/// one it is sent under is refused and not kept.
#[test]
fn one_dataplane_at_a_time_and_chains_are_hashed_again() {
    let c = Control::start("one-dp", "");
    c.ok(&["ca", "generate"]);
    let first = UnixStream::connect(c.dataplane_socket()).unwrap();
    let mut w = first.try_clone().unwrap();
    let mut r = BufReader::new(first.try_clone().unwrap());
    w.write_all(hello_line().as_bytes()).unwrap();
    // The snapshot, then the answer to the hello.
    let mut saw_snapshot = false;
    loop {
        let f = frame(&mut r);
        match f.body {
            Body::Request(Request::Snapshot(s)) => {
                saw_snapshot = true;
                let ans = Frame::response(f.id, Response::Applied { version: s.version }).encode();
                w.write_all(ans.as_bytes()).unwrap();
            }
            Body::Response(Response::Done { .. }) if f.id == 1 => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_snapshot);
    let st = c.status();
    assert!(st.dataplane_connected);
    assert_eq!(st.dataplane_pid, Some(std::process::id()), "the kernel's pid, not the hello's (1)");

    // A second hello while the first connection is open.
    let second = UnixStream::connect(c.dataplane_socket()).unwrap();
    (&second).write_all(hello_line().as_bytes()).unwrap();
    let got = read_all(&second, Duration::from_secs(2));
    assert!(got.contains("permission_denied") && got.contains("already connected"), "{got}");
    assert!(!got.contains("snapshot"), "{got}");
    assert!(audit(&c).contains("already connected"));

    // A chain under another chain's hash.
    let pki = rcgen::generate_simple_self_signed(vec!["a.tg.test".into()]).unwrap();
    let pem = pki.cert.pem();
    let der = tlsgate_certstore::parse_certificates(pem.as_bytes()).unwrap();
    let real = tlsgate_certstore::chain_sha256(&der).to_hex();
    let fake = "ab".repeat(32);
    for (id, sha) in [(7u64, fake.clone()), (8, real.clone())] {
        let line = Frame::request(id, Request::Chain { sha256: sha, pem: pem.clone() }).encode();
        w.write_all(line.as_bytes()).unwrap();
    }
    let a = frame(&mut r);
    assert_eq!(a.id, 7);
    match a.body {
        Body::Response(Response::Error { message, .. }) => assert!(message.contains(&real), "{message}"),
        other => panic!("{other:?}"),
    }
    let b = frame(&mut r);
    assert!(matches!(b.body, Body::Response(Response::Done { .. })), "{b:?}");
    let chains = c.state_dir().join("chains");
    assert!(!chains.join(format!("{fake}.pem")).exists());
    assert!(chains.join(format!("{real}.pem")).exists());

    // The first goes away: a dataplane may connect again.
    drop((w, r, first));
    let net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    drop(net.stop());
}

/// Slowloris, as a member of the socket's group would try it: many connections
/// to the operator socket that send half a line and hold it, and many to
/// `/metrics` that send half a request. Root's `tlsgatectl status` and a scrape
/// are still answered; the attacker's own connections are capped.
#[test]
fn slow_peers_do_not_stop_the_sockets_from_serving_others() {
    if tlsgate_tests::effective_uid() != Some(0) {
        eprintln!("skipped: needs root to act as a group member");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = Control::start(
        "slowloris",
        &format!("socket_group = \"nogroup\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    let _ = std::process::Command::new("chmod").args(["755", c.dir.path().to_str().unwrap()]).status();
    // The attacker: 40 operator-socket connections (a partial line each) and 100
    // /metrics connections (partial headers), held for 8 s; it prints how many
    // of its socket connections were refused at once.
    let script = "import socket,sys,time\n\
        held=[]; refused=0\n\
        for i in range(40):\n\
        \x20 s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{\"v\":1,\"id\":1')\n\
        \x20 held.append(s)\n\
        time.sleep(0.5)\n\
        for s in held:\n\
        \x20 s.setblocking(False)\n\
        \x20 try:\n\
        \x20   if b'unavailable' in s.recv(4096): refused+=1\n\
        \x20 except BlockingIOError: pass\n\
        for i in range(100):\n\
        \x20 t=socket.create_connection(('127.0.0.1',int(sys.argv[2]))); t.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n')\n\
        \x20 held.append(t)\n\
        print(refused, flush=True)\n\
        time.sleep(8)\n";
    let mut attacker = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg(c.socket())
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut refused = String::new();
    BufReader::new(attacker.stdout.take().unwrap()).read_line(&mut refused).unwrap();
    let refused: usize = refused.trim().parse().unwrap();
    assert_eq!(refused, 40 - tlsgate_control::server::MAX_CONNECTIONS_PER_USER, "the attacker's own cap");
    // While it holds them: root is served at once on both.
    let t = Instant::now();
    assert!(c.status().config_version >= 1);
    assert!(t.elapsed() < Duration::from_secs(2), "status took {:?}", t.elapsed());
    let t = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tlsgate_config_version"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("scrape under slowloris: {:?}", t.elapsed());
    // And the dataplane attaches and decrypts an innocent client meanwhile (its
    // leaf signed over the dataplane socket), root's changes committing.
    c.ok(&["ca", "generate"]);
    let pki = decrypt_all(&c);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    an_innocent_client_is_decrypted(&c, &mut net, &pki, 47101);
    assert!(attacker.try_wait().unwrap().is_none(), "the attack lasted the whole check");
    drop(net.stop());
    let _ = attacker.kill();
    let _ = attacker.wait();
}

/// A dataplane that says hello and then stops reading: configuration changes
/// keep committing, `status` keeps answering at once, and the link is closed
/// when its writes time out.
#[test]
fn a_dataplane_that_stops_reading_does_not_stall_the_control_plane() {
    let c = Control::start("deaf-dp", "");
    c.ok(&["ca", "generate"]);
    let deaf = UnixStream::connect(c.dataplane_socket()).unwrap();
    (&deaf).write_all(hello_line().as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.status().dataplane_connected {
        assert!(Instant::now() < deadline, "not attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each change pushes a snapshot (the CA and the trust store); the deaf
    // dataplane's socket buffer and the link's queue fill up.
    let pki = rcgen::generate_simple_self_signed(vec!["deaf.tg.test".into()]).unwrap();
    let pem = tlsgate_tests::control::write(c.dir.path(), "p.pem", &pki.cert.pem());
    let mut slowest = Duration::ZERO;
    for i in 0..150 {
        let t = Instant::now();
        let on = if i % 2 == 0 { "on" } else { "off" };
        let r = c.ctl(&["trust", "system", on]);
        assert!(r.status.success(), "{}", r.stderr);
        if i == 0 {
            c.ok(&["trust", "add", pem.to_str().unwrap(), "--name", "deaf"]);
        }
        let s = c.status();
        slowest = slowest.max(t.elapsed());
        assert!(s.config_version > 1);
    }
    assert!(slowest < Duration::from_secs(2), "a change and a status took {slowest:?}");
    // The writer gives up (write timeout) and the link goes; the next dataplane
    // may attach.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status().dataplane_connected {
        assert!(Instant::now() < deadline, "the deaf link was never closed:\n{}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(deaf);
    let pki = decrypt_all(&c);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    an_innocent_client_is_decrypted(&c, &mut net, &pki, 47201);
    drop(net.stop());
}

/// The control plane (the signer) goes away: a name already forged keeps being
/// decrypted from the worker's cache; a new name is reset (`block`, the default)
/// with a `blocked` event naming the signer, or relayed raw with a `passed`
/// event under `tls.signer_unavailable = "pass"`.
#[test]
fn without_the_signer_cached_names_work_and_new_names_fail_closed() {
    use tlsgate_tests::netsim::{client_trusting, origin_server, tls_exchange};
    let mut c = Control::start("no-signer", "");
    c.ok(&["ca", "generate"]);
    let pki = rcgen_pki();
    let root = tlsgate_tests::control::write(c.dir.path(), "root.pem", &pki.0);
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    let policy = tlsgate_tests::control::write(c.dir.path(), "p.json", tlsgate_tests::control::DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let ca_pem = c.ok(&["ca", "export"]);
    let ca = tlsgate_certstore::parse_certificates(ca_pem.as_bytes()).unwrap().remove(0);
    let client = client_trusting(&[ca]);
    let srv = origin_server(pki.1.clone(), pki.2.clone_key(), false);
    for (pass, port) in [(false, 46000u16), (true, 46100)] {
        if pass {
            c.restart(None);
            // Event ids carry the dataplane's start second: a second dataplane
            // started within the same second would repeat the first one's ids.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let toml = format!(
            "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n\
             [intercept]\nconnect_timeout_s = 5\n[tls]\nhandshake_timeout_s = 5\nsigner_unavailable = {:?}\n{}",
            if pass { "pass" } else { "block" },
            c.dataplane_toml()
        );
        let mut net = Net::new(Config::from_toml(&toml).unwrap(), 1);
        c.wait_applied(Duration::from_secs(10));
        let (resp, err, _, _) =
            tls_exchange(&mut net, srv.clone(), client.clone(), "a.tg.test", 443, port, b"GET /", 2000);
        assert!(err.is_none() && resp.is_some(), "signed by the control plane: {err:?}");
        c.kill();
        std::thread::sleep(Duration::from_millis(300)); // the dataplane sees its link go
        let (resp, err, _, _) =
            tls_exchange(&mut net, srv.clone(), client.clone(), "a.tg.test", 443, port + 1, b"GET /", 2000);
        assert!(err.is_none() && resp.is_some(), "a cached name still works: {err:?}");
        let (resp, err, _, _) =
            tls_exchange(&mut net, srv.clone(), client.clone(), "b.tg.test", 443, port + 2, b"GET /", 2000);
        if pass {
            // Relayed raw: the client meets the origin's own certificate, which it
            // does not trust.
            assert!(resp.is_none() && err.as_deref().is_some_and(|e| e.contains("UnknownIssuer")), "{err:?}");
        } else {
            assert!(resp.is_none() && err.is_some(), "a new name is refused");
        }
        c.restart(None);
        // Carry the hosts' last frames (a relayed flow ends when both sides closed).
        let deadline = Instant::now() + Duration::from_secs(15);
        let events = loop {
            let e = c.logged_events();
            if e.iter().any(|e| e["src_port"] == u64::from(port + 2) && e["cause"] == "signer_unavailable") {
                break e;
            }
            assert!(Instant::now() < deadline, "no signer_unavailable event: {e:#?}");
            for _ in 0..10 {
                net.step();
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let b = events.iter().find(|e| e["src_port"] == u64::from(port + 2)).unwrap();
        assert_eq!(b["kind"], if pass { "passed" } else { "blocked" }, "{b}");
        drop(net.stop());
    }
}

/// A fresh origin PKI.
fn rcgen_pki() -> Pki {
    let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "custody test root");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["*.tg.test".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (
        ca.pem(),
        vec![leaf.der().clone()],
        tlsgate_certstore::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
}

/// The decryption CA's key on a PKCS#11 token (SoftHSM2): `ca import --pkcs11`
/// makes a CA certificate with the token's key (the key never leaves it), the
/// signer forges leaves through the token, `openssl verify` accepts a forged leaf
/// against the exported CA, and the state holds no key and no PIN. The request
/// names a key that root's `control.pkcs11_keys` lists: another library, token
/// or a PIN in the request is refused (an operator must not make the control
/// plane load a library, or read a file, of its choosing). A token that cannot
/// be opened at start does not stop the control plane.
#[test]
fn a_pkcs11_token_signs_the_forged_leaves() {
    use tlsgate_tests::netsim::{client_trusting, origin_server, tls_exchange};
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    assert!(std::path::Path::new(MODULE).exists(), "softhsm2 is installed by scripts/install-deps.sh");
    let mut c = Control::start("pkcs11", "");
    // A token with a P-256 key, in a SoftHSM2 store of this test's own.
    let d = c.dir.path().to_path_buf();
    std::fs::create_dir_all(d.join("tokens")).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            d.join("tokens").display()
        ),
    )
    .unwrap();
    let hsm = |args: &[&str]| {
        let out = std::process::Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    hsm(&["--init-token", "--free", "--label", "tlsgate", "--pin", "1234", "--so-pin", "5678"]);
    let key = rcgen::KeyPair::generate().unwrap();
    let key_file = tlsgate_tests::control::write(&d, "token-key.pem", &key.serialize_pem());
    hsm(&[
        "--import",
        key_file.to_str().unwrap(),
        "--token",
        "tlsgate",
        "--label",
        "ca",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    std::fs::remove_file(&key_file).unwrap();
    // Root's configuration names the key, its library and its PIN file.
    let pin = d.join("hsm.pin");
    let set_pin = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&pin, p).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    set_pin("9999\n");
    let configured =
        format!("pkcs11:token=tlsgate;object=ca?module-path={MODULE}&pin-source={}", pin.display());
    let mut toml = std::fs::read_to_string(d.join("control.toml")).unwrap();
    toml.push_str(&format!("pkcs11_keys = [{configured:?}]\n"));
    std::fs::write(d.join("control.toml"), toml).unwrap();
    c.env.push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
    c.restart(None);

    // A request names a configured key; never a library, a PIN or a file.
    for (uri, needle) in [
        ("pkcs11:token=tlsgate;object=ca?module-path=/tmp/evil.so", "control.pkcs11_keys"),
        ("pkcs11:token=other;object=ca", "control.pkcs11_keys"),
        ("pkcs11:token=tlsgate;object=ca?pin-source=/root/secret.pin", "gives no PIN"),
        ("pkcs11:token=tlsgate;object=ca?pin-value=1234", "gives no PIN"),
    ] {
        let r = c.ctl(&["ca", "import", "--pkcs11", uri]);
        assert!(!r.status.success() && r.stderr.contains(needle), "{uri}: {}", r.stderr);
    }
    let uri = "pkcs11:token=tlsgate;object=ca";
    let r = c.ctl(&["ca", "import", "--pkcs11", uri]);
    assert!(!r.status.success() && r.stderr.contains("login"), "a wrong PIN is named: {}", r.stderr);
    // Not tried again (a token locks its PIN after a few failures) until root
    // changes the file.
    let r = c.ctl(&["ca", "import", "--pkcs11", uri]);
    assert!(!r.status.success() && r.stderr.contains("not tried again"), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(20));
    set_pin("1234\n");
    let out = c.ok(&["ca", "import", "--pkcs11", uri, "--name", "tlsgate HSM CA"]);
    assert!(
        out.contains("PKCS#11 token \"tlsgate\"") && out.contains(MODULE) && !out.contains("1234"),
        "{out}"
    );
    let state = std::fs::read_to_string(c.state_dir().join("state.json")).unwrap();
    assert!(state.contains("\"key_pem\": \"\"") || state.contains("\"key_pem\":\"\""), "no key in the state");
    assert!(!state.contains("PRIVATE KEY") && !state.contains("1234"), "no key and no PIN in the state");
    // A token that cannot be opened at start (here: its PIN file changed) does
    // not stop the control plane from starting; the CA is still shown.
    set_pin("0000\n");
    c.restart(None);
    assert!(c.status().ca.is_some_and(|ca| ca.subject.contains("tlsgate HSM CA")));
    set_pin("1234\n");
    c.restart(None);

    let pki = rcgen_pki();
    let root = tlsgate_tests::control::write(&d, "root.pem", &pki.0);
    c.ok(&["trust", "add", root.to_str().unwrap(), "--as", "ca"]);
    let policy = tlsgate_tests::control::write(&d, "p.json", tlsgate_tests::control::DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().unwrap()]);
    c.ok(&["policy", "commit"]);
    let ca_pem = c.ok(&["ca", "export"]);
    let ca = tlsgate_certstore::parse_certificates(ca_pem.as_bytes()).unwrap().remove(0);
    let mut net = dataplane(&c);
    c.wait_applied(Duration::from_secs(10));
    let srv = origin_server(pki.1.clone(), pki.2.clone_key(), false);
    let (resp, err, leaf, _) =
        tls_exchange(&mut net, srv, client_trusting(&[ca]), "hsm.tg.test", 443, 45001, b"GET /", 2000);
    assert!(err.is_none() && resp.is_some(), "decrypted with a leaf the token signed: {err:?}");
    let leaf_pem = tlsgate_certstore::pem_encode("CERTIFICATE", leaf.unwrap().as_ref());
    let leaf_file = tlsgate_tests::control::write(&d, "leaf.pem", &leaf_pem);
    let ca_file = tlsgate_tests::control::write(&d, "ca.pem", &ca_pem);
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-verify_hostname", "hsm.tg.test", "-CAfile"])
        .arg(&ca_file)
        .arg(&leaf_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(net.stop());
}
