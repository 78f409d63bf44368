//! `tlsgate-console` for tests: started as `nobody` (the control plane's
//! `console_user`; the operator socket's group `nogroup`), with its generated
//! management certificate, against a [`Control`].

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::control::{tlsgatectl_binary, write, Control};
use crate::Proc;

/// The control plane's configuration lines a console needs.
pub const CONTROL_EXTRA: &str = "socket_group = \"nogroup\"\nconsole_user = \"nobody\"\n";

/// A running console.
pub struct Console {
    /// Its HTTPS port on 127.0.0.1.
    pub port: u16,
    /// Its generated management certificate (to trust).
    pub cacert: PathBuf,
    /// The process.
    pub proc: Proc,
}

/// The console binary, beside `tlsgatectl`.
pub fn binary() -> PathBuf {
    tlsgatectl_binary().with_file_name("tlsgate-console")
}

/// Adds operator account `name` with `password` (`tlsgatectl user add`, the
/// password on stdin).
pub fn add_user(c: &Control, name: &str, password: &str) {
    let mut add = Command::new(tlsgatectl_binary())
        .arg("--socket")
        .arg(c.socket())
        .args(["user", "add", name])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tlsgatectl user add");
    {
        use std::io::Write;
        add.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("password");
    }
    assert!(add.wait().expect("tlsgatectl").success(), "user add {name}");
}

impl Console {
    /// Starts the console for `c` (started with [`CONTROL_EXTRA`]) as nobody,
    /// and waits until it listens.
    pub fn start(c: &Control) -> Console {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
        let state = c.dir.join("console");
        std::fs::create_dir_all(&state).expect("console state dir");
        // nobody reaches the socket and its own directory, nothing else of the test's.
        let _ = Command::new("chmod").args(["755", c.dir.path().to_str().expect("utf-8")]).status();
        let _ = Command::new("chown").args(["nobody:nogroup", state.to_str().expect("utf-8")]).status();
        let cfg = write(
            c.dir.path(),
            "console.toml",
            &format!(
                "[console]\nlisten = \"127.0.0.1:{port}\"\nsocket = {:?}\nstate_dir = {:?}\n",
                c.socket().display().to_string(),
                state.display().to_string()
            ),
        );
        let mut proc = Proc::spawn(
            "tlsgate-console",
            Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(binary())
                .arg("--config")
                .arg(&cfg),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(proc.try_status().is_none(), "tlsgate-console exited: {}", proc.stderr_text());
            assert!(Instant::now() < deadline, "tlsgate-console did not listen: {}", proc.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        Console { port, cacert: state.join("console.pem"), proc }
    }
}
