//! The web console (`tlsgate-console`) with a real control plane, driven by
//! curl over HTTPS: the management certificate generated at first start,
//! logins checked by the control plane, session and CSRF cookies with their
//! flags, forms refused without their token, the login rate limit, logout.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tlsgate_tests::console::{add_user, CONTROL_EXTRA};
use tlsgate_tests::control::Control;
use tlsgate_tests::{run_cmd, Finished};

/// curl against the console, trusting its generated certificate, with a cookie jar.
fn curl(cacert: &Path, jar: &Path, port: u16, args: &[&str]) -> Finished {
    run_cmd(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "-", "-D", "/dev/stderr", "--cacert"])
            .arg(cacert)
            .arg("-b")
            .arg(jar)
            .arg("-c")
            .arg(jar)
            .args(args)
            .arg(format!(
                "https://localhost:{port}{}",
                args.last().copied().filter(|a| a.starts_with('/')).unwrap_or("/")
            )),
        Duration::from_secs(20),
    )
}

/// The login form, then its POST with `name` and `password` (form-encoded).
fn login(cacert: &Path, jar: &Path, port: u16, name: &str, password: &str) -> Finished {
    let form = curl(cacert, jar, port, &["/login"]);
    let token = csrf(&form.stdout);
    curl(cacert, jar, port, &["-d", &format!("csrf={token}&name={name}&password={password}"), "/login"])
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 64].to_string()
}

/// One request frame on the control socket, sent by python3 as `user` (or
/// root): the answer line.
fn raw_request(c: &Control, user: Option<&str>, req: tlsgate_api::Request) -> String {
    let line = tlsgate_api::Frame::request(7, req).encode();
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
                  s.sendall(sys.stdin.buffer.read())\nprint(s.makefile().readline())";
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([&format!("--reuid={u}"), "--regid=nogroup", "--clear-groups", "/usr/bin/python3"]);
            c
        }
        None => Command::new("/usr/bin/python3"),
    };
    let mut child = cmd
        .args(["-c", script])
        .arg(c.socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Log in, see the status page, and the refusals that keep it safe.
#[test]
fn console_login_session_csrf_and_logout() {
    let c = Control::start("console", CONTROL_EXTRA);
    c.ok(&["ca", "generate"]);
    add_user(&c, "alice", "correct horse battery");
    let mut console = tlsgate_tests::console::Console::start(&c);
    let (port, cacert) = (console.port, console.cacert.clone());
    let state = c.dir.join("console");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(state.join("console.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let jar = c.dir.join("jar");

    // Not logged in: the status page sends to the login form.
    let r = curl(&cacert, &jar, port, &["/"]);
    assert!(r.stderr.contains("HTTP/1.1 303") && r.stderr.contains("location: /login"), "{}", r.stderr);
    let form = curl(&cacert, &jar, port, &["/login"]);
    assert!(form.stderr.contains("HTTP/1.1 200"), "{}", form.stderr);
    for h in
        ["tg_login=", "Secure", "HttpOnly", "SameSite=Strict", "content-security-policy: default-src 'none'"]
    {
        assert!(form.stderr.contains(h), "{h} not in:\n{}", form.stderr);
    }
    let token = csrf(&form.stdout);

    // A form without its token; a wrong password.
    let r = curl(
        &cacert,
        &c.dir.join("other-jar"),
        port,
        &["-d", &format!("csrf={token}&name=alice&password=correct+horse+battery"), "/login"],
    );
    assert!(r.stderr.contains("HTTP/1.1 403"), "no token cookie: {}", r.stderr);
    let r = curl(
        &cacert,
        &jar,
        port,
        &["-d", &format!("csrf={token}&name=alice&password=wrong+password+here"), "/login"],
    );
    assert!(
        r.stderr.contains("HTTP/1.1 401") && r.stdout.contains("login refused"),
        "{}{}",
        r.stderr,
        r.stdout
    );

    // The right password: a session.
    let token = csrf(&r.stdout);
    let r = curl(
        &cacert,
        &jar,
        port,
        &["-d", &format!("csrf={token}&name=alice&password=correct+horse+battery"), "/login"],
    );
    assert!(r.stderr.contains("HTTP/1.1 303") && r.stderr.contains("location: /"), "{}", r.stderr);
    let session = r
        .stderr
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: __host-tg_session="))
        .expect("a session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(session.contains(flag), "{session}");
    }
    let status = curl(&cacert, &jar, port, &["/"]);
    assert!(
        status.stdout.contains("Configuration version") && status.stdout.contains("alice"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("tlsgate decryption CA"), "{}", status.stdout);
    assert!(status.stdout.contains("not connected"), "no dataplane here: {}", status.stdout);

    // Events: the list and one event in the seed's panel groups, escaped.
    std::fs::create_dir_all(c.events_dir()).unwrap();
    let mut ring = tlsgate_api::Producer::create(c.events_dir().join("ring-0.ev"), 64).unwrap();
    let mut r = tlsgate_api::EventRecord::new(tlsgate_api::EventKind::Abort);
    r.event_id = 4242;
    r.time_ns = 1_796_558_400_000_000_000;
    r.set_outcome(&tlsgate_api::Outcome::new(
        tlsgate_api::EventKind::Abort,
        tlsgate_api::Leg::Server,
        tlsgate_api::Phase::ServerHandshake,
        tlsgate_api::Cause::Certificate {
            reason: tlsgate_api::VerifyReason::DepthZeroSelfSignedCert,
            depth: 0,
        },
    ));
    r.set_addrs("198.18.0.1:40000".parse().unwrap(), "198.18.0.2:443".parse().unwrap());
    tlsgate_api::event::set_text(&mut r.sni, "<script>x</script>.tg.test");
    tlsgate_api::event::set_text(&mut r.server_cert_subject, "/unstructuredName=ciscoasa");
    assert!(ring.try_push(&r));
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let l = curl(&cacert, &jar, port, &["/events"]);
        if l.stdout.contains("4242") || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        list.stdout.contains("href=\"/events/4242\"") && list.stdout.contains("self signed certificate"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("&lt;script&gt;") && !list.stdout.contains("<script>"),
        "escaped: {}",
        list.stdout
    );
    let panel = curl(&cacert, &jar, port, &["/events/4242"]);
    for group in [
        "<h2>Source</h2>",
        "<h2>Destination</h2>",
        "<h2>Transaction</h2>",
        "<h2>TLS</h2>",
        "<h2>Error details</h2>",
    ] {
        assert!(panel.stdout.contains(group), "{group} not in {}", panel.stdout);
    }
    assert!(panel.stdout.contains("self signed certificate (code 18, depth 0)"), "{}", panel.stdout);
    let none = curl(&cacert, &jar, port, &["/events/999999"]);
    assert!(none.stderr.contains("HTTP/1.1 404"), "{}", none.stderr);
    let filtered = curl(&cacert, &jar, port, &["/events?kind=decrypted"]);
    assert!(filtered.stdout.contains("No events."), "{}", filtered.stdout);

    // The policy: a rule added above the one there, the diff, a commit; the
    // history names the operator. A bad rule is refused naming its field and
    // changes nothing; a form without the session's token is refused.
    let policy = curl(&cacert, &jar, port, &["/policy"]);
    let token = csrf(&policy.stdout);
    let r = curl(
        &cacert,
        &jar,
        port,
        &[
            "-d",
            &format!("csrf={token}&name=Bypass-Bank&action=do-not-decrypt&position=end&sni=bank.tg.test"),
            "/policy/rules",
        ],
    );
    assert!(r.stdout.contains("class=\"ok\" id=\"result\""), "{}", r.stdout);
    assert!(r.stdout.contains("Not committed yet") && r.stdout.contains("Bypass-Bank"), "{}", r.stdout);
    let before = std::fs::read(c.dir.join("state").join("state.json")).unwrap();
    let r = curl(
        &cacert,
        &jar,
        port,
        &[
            "-d",
            &format!("csrf={token}&name=Bad&action=decrypt&position=above:Bypass-Bank&ports=99999"),
            "/policy/rules",
        ],
    );
    assert!(r.stdout.contains("class=\"error\" id=\"result\"") && r.stdout.contains("99999"), "{}", r.stdout);
    assert_eq!(std::fs::read(c.dir.join("state").join("state.json")).unwrap(), before, "nothing changed");
    let r = curl(&cacert, &jar, port, &["-d", "csrf=00", "/policy/commit"]);
    assert!(r.stderr.contains("HTTP/1.1 403"), "{}", r.stderr);
    let r = curl(&cacert, &jar, port, &["-d", &format!("csrf={token}"), "/policy/commit"]);
    assert!(r.stdout.contains("configuration version"), "{}", r.stdout);
    let history = c.ok(&["policy", "history"]);
    assert!(history.contains("[console: alice]"), "{history}");
    let audit = c.ok(&["policy", "show"]);
    assert!(audit.contains("Bypass-Bank"), "committed: {audit}");
    let r = curl(
        &cacert,
        &jar,
        port,
        &["/policy/explain?client=198.18.0.1&server=198.18.0.2&port=443&sni=bank.tg.test"],
    );
    assert!(r.stdout.contains("do-not-decrypt (rule Bypass-Bank)"), "{}", r.stdout);

    // The console's uid gets only what its pages do, only on behalf of an
    // existing account; nobody else may ask on anyone's behalf.
    let behalf = |operator: &str, request: tlsgate_api::Request| tlsgate_api::Request::OnBehalf {
        operator: operator.into(),
        session: tlsgate_api::Secret("0".repeat(64)),
        request: Box::new(request),
    };
    for (who, req, refusal) in [
        (
            Some("nobody"),
            behalf(
                "alice",
                tlsgate_api::Request::UserAdd {
                    name: "mallory".into(),
                    password: tlsgate_api::Secret("mallory's password".into()),
                },
            ),
            "may not ask for user_add",
        ),
        (
            Some("nobody"),
            behalf(
                "alice",
                tlsgate_api::Request::TrustAdd {
                    data: String::new(),
                    name: None,
                    kind: tlsgate_api::TrustAs::Pinned,
                    names: vec![],
                    any_name: true,
                },
            ),
            "may not ask for trust_add",
        ),
        (Some("nobody"), behalf("alice", tlsgate_api::Request::UserList), "may not ask for user_list"),
        // Allowed, but only with the session alice's login opened.
        (
            Some("nobody"),
            behalf("alice", tlsgate_api::Request::CaExport { der: false }),
            "no such operator session",
        ),
        (Some("nobody"), tlsgate_api::Request::CaGenerate { common_name: None }, "asks only on behalf"),
        (Some("nobody"), behalf("ghost", tlsgate_api::Request::Status), "no such operator session"),
        (None, behalf("alice", tlsgate_api::Request::Status), "served only to the web console"),
    ] {
        let answer = raw_request(&c, who, req);
        assert!(answer.contains("permission_denied") && answer.contains(refusal), "{refusal}: {answer}");
    }
    assert!(!c.ok(&["user", "list"]).contains("mallory"));
    let audit = std::fs::read_to_string(c.dir.join("log").join("audit.log")).unwrap();
    assert!(audit.contains("user_add for \\\"alice\\\": not a console request"), "{audit}");

    // An answer axum makes itself carries the headers too.
    let r = curl(&cacert, &jar, port, &["-X", "PUT", "/"]);
    assert!(
        r.stderr.contains("HTTP/1.1 405") && r.stderr.contains("content-security-policy"),
        "{}",
        r.stderr
    );

    // Logout needs the session's token.
    let r = curl(
        &cacert,
        &jar,
        port,
        &["-d", "csrf=0000000000000000000000000000000000000000000000000000000000000000", "/logout"],
    );
    assert!(r.stderr.contains("HTTP/1.1 403"), "{}", r.stderr);
    let token = csrf(&status.stdout);
    let r = curl(&cacert, &jar, port, &["-d", &format!("csrf={token}"), "/logout"]);
    assert!(r.stderr.contains("HTTP/1.1 303") && r.stderr.contains("location: /login"), "{}", r.stderr);
    let r = curl(&cacert, &jar, port, &["/"]);
    assert!(r.stderr.contains("location: /login"), "logged out: {}", r.stderr);

    // A new password ends the account's sessions.
    let r = login(&cacert, &jar, port, "alice", "correct+horse+battery");
    assert!(r.stderr.contains("HTTP/1.1 303"), "{}", r.stderr);
    let mut passwd = Command::new(tlsgate_tests::control::tlsgatectl_binary())
        .arg("--socket")
        .arg(c.socket())
        .args(["user", "passwd", "alice"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        passwd.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    }
    assert!(passwd.wait().unwrap().success());
    let r = curl(&cacert, &jar, port, &["/policy"]);
    assert!(r.stderr.contains("location: /login"), "the session ended with the password: {}", r.stderr);

    // Guesses lock the account for their address only: five wrong passwords
    // from 127.0.0.1, and alice still logs in from 127.0.0.2.
    for _ in 0..5 {
        let r = login(&cacert, &jar, port, "alice", "wrong+wrong+wrong");
        assert!(r.stderr.contains("HTTP/1.1 401"), "{}", r.stderr);
    }
    let r = login(&cacert, &jar, port, "alice", "correct+horse+battery");
    assert!(r.stderr.contains("HTTP/1.1 401"), "locked from here: {}", r.stderr);
    let other_jar = c.dir.join("jar2");
    let form = curl(&cacert, &other_jar, port, &["--interface", "127.0.0.2", "/login"]);
    let token = csrf(&form.stdout);
    let r = curl(
        &cacert,
        &other_jar,
        port,
        &[
            "--interface",
            "127.0.0.2",
            "-d",
            &format!("csrf={token}&name=alice&password=correct+horse+battery"),
            "/login",
        ],
    );
    assert!(r.stderr.contains("HTTP/1.1 303"), "not locked from elsewhere: {}", r.stderr);

    // Removing the account ends its sessions.
    let jar = other_jar;
    c.ok(&["user", "remove", "alice"]);
    let r = curl(&cacert, &jar, port, &["/"]);
    assert!(r.stderr.contains("location: /login"), "the removed account's session ended: {}", r.stderr);

    // Logins are limited per client address.
    let mut limited = false;
    for _ in 0..12 {
        let r = login(&cacert, &jar, port, "bob", "guess+guess+guess");
        if r.stderr.contains("HTTP/1.1 429") {
            limited = true;
            break;
        }
    }
    assert!(limited, "the login limit never answered 429");
    console.proc.kill();
}
