//! A real `tlsgate-control` for tests: its own configuration, state, socket, event
//! and log directories under a temporary directory, a vendor key pair for
//! licenses, and `tlsgatectl` to drive it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tlsgate_api::{ControlStatus, Request, Response};

use std::sync::Arc;

use tlsgate_certstore::pki_types::CertificateDer;
use tlsgate_certstore::rustls::{ClientConfig, ServerConfig};

use crate::netsim::{tls_exchange, Net};
use crate::{repo_root, run_cmd, Finished, Proc, TempDir};

/// The device id the test control planes use.
pub const DEVICE: &str = "tlsgate-test-device";

fn target_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { repo_root().join(p) } else { p })
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join(name)
}

/// `target/debug/tlsgatectl`.
pub fn tlsgatectl_binary() -> PathBuf {
    target_bin("tlsgatectl")
}

/// `target/debug/tlsgate-vendor` (the vendor's license tool).
pub fn vendor_binary() -> PathBuf {
    target_bin("tlsgate-vendor")
}

/// `target/debug/tlsgate-control`.
pub fn control_binary() -> PathBuf {
    target_bin("tlsgate-control")
}

/// A running control plane.
pub struct Control {
    /// Its directory (config, state, rings, logs, socket).
    pub dir: TempDir,
    /// Its process.
    pub proc: Option<Proc>,
    /// The vendor's private key file (for `tlsgate-vendor license issue`).
    pub vendor_key: PathBuf,
    /// Extra TOML of its `[control]` section.
    extra: String,
    /// Environment variables the daemon gets (e.g. `SOFTHSM2_CONF`).
    pub env: Vec<(String, String)>,
}

impl Control {
    /// Starts one (`extra`: more `[control]` lines, e.g. `metrics_listen`).
    pub fn start(tag: &str, extra: &str) -> Control {
        let dir = TempDir::new(&format!("control-{tag}"));
        let vendor_key = dir.join("vendor.key");
        let out = run_cmd(
            Command::new(vendor_binary()).args(["license", "keygen", "--out"]).arg(&vendor_key),
            Duration::from_secs(10),
        )
        .expect_success("tlsgate-vendor license keygen");
        let public = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("vendor public key (control.vendor_key): "))
            .expect("public key printed")
            .to_string();
        let toml = format!(
            "[control]\nstate_dir = {:?}\nsocket = {:?}\ndataplane_socket = {:?}\nevents_dir = {:?}\n\
             log_dir = {:?}\nvendor_key = {public:?}\ndevice_id = {DEVICE:?}\n",
            dir.join("state").display().to_string(),
            dir.join("control.sock").display().to_string(),
            dir.join("dataplane.sock").display().to_string(),
            dir.join("events").display().to_string(),
            dir.join("log").display().to_string(),
        );
        let extra = if extra.contains("metrics_listen") {
            extra.to_string()
        } else {
            format!("metrics_listen = \"\"\n{extra}")
        };
        std::fs::write(dir.join("control.toml"), format!("{toml}{extra}")).expect("writing control.toml");
        let mut c = Control { dir, proc: None, vendor_key, extra: String::new(), env: Vec::new() };
        c.extra = extra;
        c.restart(None);
        c
    }

    /// (Re)starts the daemon, with a fail-point armed when given; waits until its
    /// socket answers (unless a fail-point is armed: it may stop at once).
    pub fn restart(&mut self, failpoint: Option<&str>) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
        let mut cmd = Command::new(control_binary());
        cmd.arg("--config").arg(self.dir.join("control.toml")).env("TLSGATE_LOG", "info");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(f) = failpoint {
            cmd.env("TLSGATE_FAILPOINT", f);
        }
        self.proc = Some(Proc::spawn("tlsgate-control", &mut cmd));
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.ask(Request::Ping).is_err() {
            assert!(Instant::now() < deadline, "tlsgate-control did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr_text()).unwrap_or_default()
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// The dataplane's socket.
    pub fn dataplane_socket(&self) -> PathBuf {
        self.dir.join("dataplane.sock")
    }

    /// Where the dataplane writes its rings.
    pub fn events_dir(&self) -> PathBuf {
        self.dir.join("events")
    }

    /// `tls_proxy.log`, `events.jsonl`.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Where the dataplane writes captures.
    pub fn capture_dir(&self) -> PathBuf {
        self.dir.join("captures")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The TOML a dataplane needs to use this control plane.
    pub fn dataplane_toml(&self) -> String {
        format!(
            "[control]\nsocket = {:?}\n[events]\ndir = {:?}\n[capture]\ndir = {:?}\n",
            self.dataplane_socket().display().to_string(),
            self.events_dir().display().to_string(),
            self.capture_dir().display().to_string()
        )
    }

    /// One request over the socket.
    pub fn ask(&self, req: Request) -> Result<Response, String> {
        tlsgate_control::cli::ask(&self.socket(), req).map_err(|e| format!("{e:?}"))
    }

    /// `tlsgatectl --socket S ARGS` (not checked).
    pub fn ctl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Finished {
        run_cmd(
            Command::new(tlsgatectl_binary()).arg("--socket").arg(self.socket()).args(args),
            Duration::from_secs(30),
        )
    }

    /// `tlsgatectl` that must succeed.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let argv: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        self.ctl(args).expect_success(&format!("tlsgatectl {}", argv.join(" "))).stdout
    }

    /// `tlsgatectl --json ARGS` that must succeed, parsed.
    pub fn json<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<std::ffi::OsString> = vec!["--json".into()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("tlsgatectl --json: {e}: {out}"))
    }

    /// The control plane's status.
    pub fn status(&self) -> ControlStatus {
        match self.ask(Request::Status) {
            Ok(Response::Status(s)) => s,
            other => panic!("status: {other:?}"),
        }
    }

    /// Waits until a dataplane is connected and runs the current version.
    pub fn wait_applied(&self, timeout: Duration) -> ControlStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if s.dataplane_connected && s.dataplane_version == s.config_version {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the dataplane did not apply version {}: {s:?}\n{}",
                s.config_version,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Issues a license for this control plane's device (and `device`), valid from
    /// `from` to `to` (unix seconds), into a file.
    pub fn license(&self, serial: &str, features: &[&str], from: i64, to: i64, device: &str) -> PathBuf {
        let fmt = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let out = self.dir.join(&format!("{serial}.lic"));
        // tlsgate-vendor never overwrites a file: a serial issued again replaces it.
        let _ = std::fs::remove_file(&out);
        let mut args: Vec<String> = vec![
            "license".into(),
            "issue".into(),
            "--key".into(),
            self.vendor_key.display().to_string(),
            "--device".into(),
            device.into(),
            "--serial".into(),
            serial.into(),
            "--not-before".into(),
            fmt(from),
            "--not-after".into(),
            fmt(to),
            "--out".into(),
            out.display().to_string(),
        ];
        for f in features {
            args.push("--feature".into());
            args.push((*f).into());
        }
        run_cmd(Command::new(vendor_binary()).args(&args), Duration::from_secs(10))
            .expect_success("tlsgate-vendor license issue");
        out
    }

    /// The events logged so far (`events.jsonl`).
    pub fn logged_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log_dir().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event line is JSON"))
            .collect()
    }

    /// `tls_proxy.log` so far.
    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.log_dir().join("tls_proxy.log")).unwrap_or_default()
    }

    /// Waits until `pred` holds for the logged events.
    pub fn wait_events(
        &self,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.logged_events();
            if pred(&e) {
                return e;
            }
            assert!(Instant::now() < deadline, "events not as expected: {e:#?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
    }
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing a test file");
    p
}

/// A policy decrypting everything (the seed's "Decrypt-All").
pub const DECRYPT_ALL: &str = r#"{ "rules": [ { "name": "Decrypt-All", "action": "decrypt" } ] }"#;

/// A dataplane (one worker, memory ports, in this process) connected to `c`.
pub fn dataplane(c: &Control) -> Net {
    let toml = format!(
        "driver = \"pcap\"\n[pcap]\ninside_rx = \"/dev/null\"\n[dataplane]\nlab = true\nstats_interval_s = 0\n\
         [intercept]\nconnect_timeout_s = 5\n[tls]\nhandshake_timeout_s = 5\n{}",
        c.dataplane_toml()
    );
    Net::new(tlsgate_dataplane::config::Config::from_toml(&toml).expect("dataplane config"), 1)
}

/// The decryption CA's certificate, as a client installs it.
pub fn exported_ca(c: &Control) -> CertificateDer<'static> {
    let pem = c.ok(&["ca", "export"]);
    tlsgate_certstore::parse_certificates(pem.as_bytes()).expect("CA PEM").remove(0)
}

/// A control plane (with `extra` configuration lines) with a decryption CA and
/// the Decrypt-All policy committed.
pub fn configured_with(tag: &str, extra: &str) -> Control {
    let c = Control::start(tag, extra);
    c.ok(&["ca", "generate"]);
    let policy = write(c.dir.path(), "policy.json", DECRYPT_ALL);
    c.ok(&["policy", "load", policy.to_str().expect("utf-8")]);
    let out = c.ok(&["policy", "commit"]);
    assert!(out.contains("configuration version"), "{out}");
    c
}

/// [`configured_with`] no extra lines.
pub fn configured(tag: &str) -> Control {
    configured_with(tag, "")
}

/// One TLS exchange through `net` from client port `port`: `None` when the
/// client got its answer, else what went wrong.
pub fn connect(
    net: &mut Net,
    srv: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
    port: u16,
) -> Option<String> {
    let (resp, err, _, _) = tls_exchange(net, srv, client, sni, 443, port, b"GET /", 2000);
    match (resp, err) {
        (Some(_), None) => None,
        (_, e) => Some(e.unwrap_or_else(|| "no response".into())),
    }
}

/// Waits for the logged events to satisfy `pred`, carrying the simulation's last
/// frames meanwhile (a flow's event comes when both of its legs have closed).
pub fn settle(
    c: &Control,
    net: &mut Net,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = c.logged_events();
        if pred(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "events not as expected: {e:#?}\n{}", c.log());
        for _ in 0..10 {
            net.step();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
