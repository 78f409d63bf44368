//! Harness for tlsgate's end-to-end lab tests (`tests/tests/lab.rs`).
//!
//! The lab is the one of `scripts/lab.sh`: two network namespaces joined through the
//! dataplane, which drives the two root-namespace veth ends with DPDK `net_af_packet`.
//!
//! ```text
//!   [ns P-client] P-c0 NET.1 <-> P-cli | tlsgate-dataplane | P-srv <-> P-s0 NET.2 [ns P-server]
//! ```
//!
//! Everything a test starts is owned by a guard that tears it down on drop, also when
//! the test panics:
//!
//! * [`Lab`]: `lab.sh up` on creation, `lab.sh down` on drop (same prefix and /24).
//! * [`Dataplane`]: the `tlsgate-dataplane` binary with a generated configuration in a
//!   private temporary directory (unique DPDK `--file-prefix`, status socket there);
//!   SIGTERM, then SIGKILL after 5 s, on drop.
//! * [`Proc`]: any child process (`ip netns exec …`); SIGKILL on drop.
//! * [`TempDir`]: a directory under `/tmp`, removed on drop.
//!
//! Declare the [`Lab`] first in a test so it drops last, after the processes that run
//! in its namespaces. Take [`serial`] before anything else: lab tests share the two
//! cores of the machine and run one at a time.
//!
//! Lab tests need root. [`require_root`] panics with a clear message when not root,
//! unless `TLSGATE_SKIP_LAB=1` is set, in which case it returns `false` and the test
//! returns early.
//!
//! Every external command is bounded: [`Proc::wait_timeout`], [`netns_run`] and
//! [`run_cmd`] kill what overruns its deadline.

#![forbid(unsafe_code)]

pub mod console;
pub mod control;
pub mod netsim;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tlsgate_api::{Body, DataplaneStats, Frame, Request, Response, WorkerStats};

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The effective user id, read from `/proc/self/status` (no `libc` needed).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `true` when lab tests can run. Not root: panics, unless `TLSGATE_SKIP_LAB=1`, in
/// which case it prints why and returns `false` (the caller then returns early).
pub fn require_root() -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    if std::env::var("TLSGATE_SKIP_LAB").is_ok_and(|v| v == "1") {
        eprintln!("skipped: not root and TLSGATE_SKIP_LAB=1");
        return false;
    }
    panic!("lab tests need root (CI runs as root); set TLSGATE_SKIP_LAB=1 to skip them");
}

/// Serializes the lab tests of one test binary (they would fight over two cores).
/// A test that panicked while holding the lock does not poison it for the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A number unique within this process.
pub fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A directory `/tmp/tgt-<pid>-<n>-<tag>`, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory; `tag` only helps a person find it.
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tgt-{}-{}-{tag}", std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a finished process left.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// Panics with the whole output unless the process exited with status 0.
    pub fn expect_success(self, what: &str) -> Finished {
        assert!(
            self.status.success(),
            "{what}: {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Sends `signal` (a name such as `TERM`) to `pid` with `kill(1)`.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A child process with its stdout and stderr collected in the background; killed
/// (SIGKILL) on drop if still running.
pub struct Proc {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Proc {
    /// Spawns `cmd` (stdin closed, stdout and stderr collected); `name` is used in
    /// messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), stdout.clone()),
            collect(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Proc { name: name.to_string(), child, exited: None, stdout, stderr, readers }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Standard output so far.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Standard error so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits until stderr contains `needle`; `false` if the process exits first or the
    /// timeout passes.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if self.try_status().is_some() || Instant::now() >= deadline {
                return self.stderr_text().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finished(&mut self, status: ExitStatus) -> Finished {
        // The pipes close when the process exits (nothing here leaves grandchildren
        // holding them); still, never wait for the readers for long.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Finished { status, stdout: self.stdout_text(), stderr: self.stderr_text() }
    }

    /// Waits for the exit at most `timeout`; `None` (process still running) on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(self.finished(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit at most `timeout`, killing the process and panicking with
    /// its output when it overruns.
    pub fn wait_or_kill(&mut self, timeout: Duration) -> Finished {
        if let Some(f) = self.wait_timeout(timeout) {
            return f;
        }
        self.kill();
        panic!(
            "{}: still running after {timeout:?}, killed\nstdout:\n{}\nstderr:\n{}",
            self.name,
            self.stdout_text(),
            self.stderr_text()
        );
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Finished {
        if self.try_status().is_none() {
            send_signal(self.pid(), "TERM");
        }
        match self.wait_timeout(grace) {
            Some(f) => f,
            None => {
                self.kill();
                let status = self.try_status().expect("killed and reaped");
                self.finished(status)
            }
        }
    }

    /// SIGKILL and reap (no-op once exited).
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ip netns exec NS ARGS…` as a [`Proc`] (`ip` execs the command: the pid is the
/// command's own).
pub fn netns_spawn<S: AsRef<std::ffi::OsStr>>(ns: &str, args: &[S]) -> Proc {
    let name = format!(
        "[{ns}] {}",
        args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    Proc::spawn(&name, Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Runs `ip netns exec NS ARGS…` to completion (killed and panicking after
/// `timeout`).
pub fn netns_run<S: AsRef<std::ffi::OsStr>>(ns: &str, args: &[S], timeout: Duration) -> Finished {
    netns_spawn(ns, args).wait_or_kill(timeout)
}

/// Runs `cmd` to completion (killed and panicking after `timeout`).
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Finished {
    let name = format!("{cmd:?}");
    Proc::spawn(&name, cmd).wait_or_kill(timeout)
}

/// The lab of `scripts/lab.sh` with its own prefix and /24; torn down on drop.
pub struct Lab {
    prefix: String,
    net: String,
}

impl Lab {
    /// `lab.sh down` (leftovers of a crashed run) then `lab.sh up` with
    /// `TG_LAB_PREFIX=prefix TG_LAB_NET=net`. Panics with the script's output on
    /// failure (the guard still tears down what was built).
    pub fn up(prefix: &str, net: &str) -> Lab {
        let lab = Lab { prefix: prefix.to_string(), net: net.to_string() };
        lab.script("down").expect_success("lab.sh down (before up)");
        lab.script("up").expect_success("lab.sh up");
        lab
    }

    fn script(&self, cmd: &str) -> Finished {
        run_cmd(
            Command::new("bash")
                .arg(repo_root().join("scripts/lab.sh"))
                .arg(cmd)
                .env("TG_LAB_PREFIX", &self.prefix)
                .env("TG_LAB_NET", &self.net),
            Duration::from_secs(30),
        )
    }

    /// Name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Client namespace (`P-client`).
    pub fn client_ns(&self) -> String {
        format!("{}-client", self.prefix)
    }

    /// Server namespace (`P-server`).
    pub fn server_ns(&self) -> String {
        format!("{}-server", self.prefix)
    }

    /// The client's interface in its namespace (`P-c0`).
    pub fn client_if(&self) -> String {
        format!("{}-c0", self.prefix)
    }

    /// The appliance's inside port (`P-cli`, root namespace).
    pub fn inside_port(&self) -> String {
        format!("{}-cli", self.prefix)
    }

    /// The appliance's outside port (`P-srv`, root namespace).
    pub fn outside_port(&self) -> String {
        format!("{}-srv", self.prefix)
    }

    /// The client's address (`NET.1`).
    pub fn client_addr(&self) -> String {
        format!("{}.1", self.net)
    }

    /// The server's address (`NET.2`).
    pub fn server_addr(&self) -> String {
        format!("{}.2", self.net)
    }

    /// `ping -c COUNT` from the client to the server; the whole output on success.
    pub fn ping(&self, count: u32) -> Finished {
        let c = count.to_string();
        netns_run(
            &self.client_ns(),
            &["ping", "-n", "-q", "-c", &c, "-i", "0.2", "-W", "2", &self.server_addr()],
            Duration::from_secs(u64::from(count) + 10),
        )
    }
}

impl Lab {
    /// Processes still running in the lab's namespaces (`ip netns pids`).
    pub fn pids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ns in [self.client_ns(), self.server_ns()] {
            let f = run_cmd(Command::new("ip").args(["netns", "pids", &ns]), Duration::from_secs(10));
            out.extend(f.stdout.split_whitespace().map(|p| format!("{ns}:{p}")));
        }
        out
    }

    /// Tears the lab down and checks that nothing is left: no process in its
    /// namespaces before, no namespace or link of its prefix after.
    pub fn teardown(self) {
        let pids = self.pids();
        let prefix = self.prefix.clone();
        drop(self);
        assert!(pids.is_empty(), "processes left running in the lab's namespaces: {pids:?}");
        let left = leftovers(&prefix);
        assert!(left.is_empty(), "lab.sh down left {left:?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!("lab.sh down failed ({}):\n{}{}", out.status, out.stdout, out.stderr);
        }
    }
}

/// How to start the dataplane beyond the lab's two ports.
#[derive(Debug, Clone)]
pub struct DpOptions {
    /// EAL lcore list (`-l`): one worker per lcore.
    pub lcores: String,
    /// af_packet queue pairs per port (`qpairs=`); must equal the number of lcores.
    pub qpairs: u32,
    /// EAL memory in MB (`-m`, without hugepages).
    pub mem_mb: u32,
    /// `dpdk.mbufs`.
    pub mbufs: u32,
    /// Extra lines inside `[dataplane]`.
    pub dataplane_extra: String,
    /// Extra TOML appended at the end (whole sections).
    pub extra: String,
}

impl Default for DpOptions {
    fn default() -> Self {
        DpOptions {
            lcores: "0".into(),
            qpairs: 1,
            mem_mb: 256,
            mbufs: 8191,
            dataplane_extra: String::new(),
            extra: String::new(),
        }
    }
}

/// The path of the dataplane binary (`$CARGO_TARGET_DIR` or `<root>/target`,
/// `debug/tlsgate-dataplane`).
pub fn dataplane_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { repo_root().join(p) } else { p })
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug/tlsgate-dataplane")
}

/// Panics if a source file the binary was built from (per cargo's dep-info file
/// next to it, `tlsgate-dataplane.d`) changed after the build: the tests link the
/// dataplane library from the current sources (to craft frames, compute flow owners)
/// and must drive a binary built from the same ones.
pub fn assert_fresh(bin: &Path) {
    let built = match std::fs::metadata(bin).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(_) => return,
    };
    let Ok(deps) = std::fs::read_to_string(bin.with_extension("d")) else { return };
    let Some((_, sources)) = deps.split_once(": ") else { return };
    let target = bin.parent().and_then(Path::parent).map(Path::to_path_buf);
    for src in sources.split_whitespace() {
        // Files build scripts generate (under the target directory) are rewritten
        // whenever a script reruns; they are not sources.
        if target.as_deref().is_some_and(|t| Path::new(src).starts_with(t)) {
            continue;
        }
        let changed = std::fs::metadata(src).and_then(|m| m.modified());
        if changed.is_ok_and(|t| t > built) {
            panic!(
                "{} is older than {src}: rebuild it first: cargo build -p tlsgate-dataplane --bin tlsgate-dataplane",
                bin.display()
            );
        }
    }
}

/// A running `tlsgate-dataplane` on a lab's two ports. Stopped (SIGTERM, SIGKILL
/// after 5 s) on drop; its temporary directory and DPDK runtime directory are removed.
pub struct Dataplane {
    child: Option<Child>,
    dir: TempDir,
    socket: PathBuf,
    log: PathBuf,
    file_prefix: String,
    next_id: AtomicU64,
}

/// How the dataplane ended.
#[derive(Debug)]
pub struct Stopped {
    /// Exit status.
    pub status: ExitStatus,
    /// Whether SIGKILL was needed (no exit within 5 s of SIGTERM).
    pub killed: bool,
    /// Everything it wrote on stderr (log lines, stats lines, the summary).
    pub log: String,
}

impl Dataplane {
    /// Starts the dataplane with one worker and `extra_toml` appended to the
    /// configuration.
    pub fn start(lab: &Lab, extra_toml: &str) -> Dataplane {
        Self::start_with(lab, &DpOptions { extra: extra_toml.to_string(), ..DpOptions::default() })
    }

    /// Starts the dataplane and waits (≤ 15 s) until its status socket answers a ping.
    pub fn start_with(lab: &Lab, opts: &DpOptions) -> Dataplane {
        let bin = dataplane_binary();
        assert!(
            bin.exists(),
            "{} not found; build it first: cargo build -p tlsgate-dataplane --bin tlsgate-dataplane",
            bin.display()
        );
        assert_fresh(&bin);
        let dir = TempDir::new("dp");
        let file_prefix = format!("tgt-{}-{}", std::process::id(), unique());
        let socket = dir.join("dp.sock");
        let log = dir.join("dataplane.log");
        let config = dir.join("dataplane.toml");
        let q = if opts.qpairs > 1 { format!(",qpairs={}", opts.qpairs) } else { String::new() };
        let text = format!(
            r#"driver = "dpdk"
[dataplane]
lab = true
stats_interval_s = 2
status_socket = "{socket}"
{dp_extra}
[flows]
max_per_worker = 65536
[dpdk]
eal_args = ["-l", "{lcores}", "--no-huge", "-m", "{mem}", "--no-pci", "--no-telemetry", "--file-prefix={file_prefix}", "--vdev=net_af_packet0,iface={inside}{q}", "--vdev=net_af_packet1,iface={outside}{q}"]
inside = "net_af_packet0"
outside = "net_af_packet1"
mbufs = {mbufs}
{extra}
"#,
            socket = socket.display(),
            dp_extra = opts.dataplane_extra,
            lcores = opts.lcores,
            mem = opts.mem_mb,
            inside = lab.inside_port(),
            outside = lab.outside_port(),
            mbufs = opts.mbufs,
            extra = opts.extra,
        );
        std::fs::write(&config, &text).expect("writing the dataplane configuration");
        let log_file = File::create(&log).expect("creating the dataplane log");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .env("TLSGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut dp =
            Dataplane { child: Some(child), dir, socket, log, file_prefix, next_id: AtomicU64::new(1) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = dp.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "the dataplane exited during start-up ({status}):\n{}\nconfiguration:\n{text}",
                    dp.log_text()
                );
            }
            if let Ok(Response::Pong { .. }) = dp.request(Request::Ping) {
                return dp;
            }
            if Instant::now() >= deadline {
                panic!("the dataplane's status socket did not answer within 15 s:\n{}", dp.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The DPDK `--file-prefix` of this instance.
    pub fn file_prefix(&self) -> &str {
        &self.file_prefix
    }

    /// The temporary directory holding the configuration, log and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything written on stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a fresh connection to the status socket (5 s timeout).
    pub fn request(&self, req: Request) -> Result<Response, String> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        s.write_all(Frame::request(id, req).encode().as_bytes()).map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        let frame = Frame::decode(&line).map_err(|e| format!("decode {line:?}: {e}"))?;
        if frame.id != id {
            return Err(format!("response id {} to request {id}", frame.id));
        }
        match frame.body {
            Body::Response(r) => Ok(r),
            Body::Request(r) => Err(format!("got a request instead of a response: {r:?}")),
        }
    }

    /// The counters (panics if the socket does not answer with stats).
    pub fn stats(&self) -> DataplaneStats {
        match self.request(Request::Stats) {
            Ok(Response::Stats(s)) => s,
            other => panic!("stats request: {other:?}\n{}", self.log_text()),
        }
    }

    /// Polls the counters (every 20 ms) until `pred` holds or `timeout` passes;
    /// returns the last snapshot either way (the caller asserts on it).
    pub fn wait_stats(&self, timeout: Duration, pred: impl Fn(&DataplaneStats) -> bool) -> DataplaneStats {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(&mut self) -> Option<Stopped> {
        let mut child = self.child.take()?;
        let mut killed = false;
        if child.try_wait().ok().flatten().is_none() {
            send_signal(child.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = child.try_wait().ok().flatten() {
                break s;
            }
            if Instant::now() >= deadline {
                killed = true;
                let _ = child.kill();
                break child.wait().expect("reaping the dataplane");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.file_prefix));
        Some(Stopped { status, killed, log: self.log_text() })
    }

    /// Stops the dataplane (SIGTERM, SIGKILL after 5 s) and returns how it ended.
    pub fn stop(mut self) -> Stopped {
        self.shutdown().expect("running")
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(stopped) = self.shutdown() {
            if std::thread::panicking() {
                let log = stopped.log;
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- dataplane ({}, killed: {}), last lines of its log:\n{}",
                    stopped.status,
                    stopped.killed,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// Sum of a per-worker counter over all workers.
pub fn sum(s: &DataplaneStats, f: impl Fn(&WorkerStats) -> u64) -> u64 {
    s.workers.iter().map(f).sum()
}

/// Every drop counter (all reasons), summed over workers; empty when nothing was
/// dropped.
pub fn drops(s: &DataplaneStats) -> BTreeMap<String, u64> {
    s.total_drops().into_iter().filter(|(_, v)| *v != 0).collect()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Length and SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> (u64, String) {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    (n, hex(&h.finalize()))
}

/// Parses a `<bytes> <sha256hex>` line (the last non-empty line of `text`).
pub fn parse_digest_line(text: &str) -> Option<(u64, String)> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut it = line.split_whitespace();
    let n = it.next()?.parse().ok()?;
    let digest = it.next()?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) && it.next().is_none())
        .then(|| (n, digest.to_string()))
}

/// A `tg-xfer` transfer from the lab's client to its server, started in the
/// background.
pub struct Transfer {
    server: Proc,
    client: Proc,
    started: Instant,
}

/// The outcome of a [`Transfer`].
#[derive(Debug, Clone)]
pub struct TransferResult {
    /// Bytes and SHA-256 the client sent.
    pub sent: (u64, String),
    /// Bytes and SHA-256 the server received.
    pub received: (u64, String),
    /// The client's TCP source port.
    pub client_port: u16,
    /// Wall time from start to both ends finished.
    pub elapsed: Duration,
}

impl Transfer {
    /// Starts `tg-xfer serve` in the server namespace, waits until it listens, then
    /// `tg-xfer send` in the client namespace. `xfer` is the tg-xfer binary.
    pub fn start(lab: &Lab, xfer: &Path, port: u16, bytes: u64, seed: u64) -> Transfer {
        Self::start_paced(lab, xfer, port, bytes, seed, None)
    }

    /// As [`Transfer::start`], the sender paced to `rate_mbps` Mbit/s when given.
    pub fn start_paced(
        lab: &Lab,
        xfer: &Path,
        port: u16,
        bytes: u64,
        seed: u64,
        rate_mbps: Option<u32>,
    ) -> Transfer {
        let addr = format!("{}:{port}", lab.server_addr());
        let mut server = netns_spawn(&lab.server_ns(), &[xfer.as_os_str(), "serve".as_ref(), addr.as_ref()]);
        assert!(
            server.wait_for_stderr("listening", Duration::from_secs(10)),
            "tg-xfer serve did not start listening:\n{}",
            server.stderr_text()
        );
        let mut args: Vec<String> =
            vec![xfer.display().to_string(), "send".into(), addr, bytes.to_string(), seed.to_string()];
        if let Some(r) = rate_mbps {
            args.extend(["--rate".to_string(), r.to_string()]);
        }
        let client = netns_spawn(&lab.client_ns(), &args);
        Transfer { server, client, started: Instant::now() }
    }

    /// Whether the sending side is still running.
    pub fn sending(&mut self) -> bool {
        self.client.try_status().is_none()
    }

    /// Waits for both ends (the whole transfer must finish within `timeout`) and
    /// parses what they printed; panics with their output on failure.
    pub fn finish(mut self, timeout: Duration) -> TransferResult {
        let deadline = self.started + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let client = self.client.wait_or_kill(left()).expect_success("tg-xfer send");
        let server =
            self.server.wait_or_kill(left() + Duration::from_secs(2)).expect_success("tg-xfer serve");
        let elapsed = self.started.elapsed();
        let sent = parse_digest_line(&client.stdout)
            .unwrap_or_else(|| panic!("tg-xfer send printed no digest: {client:?}"));
        let received = parse_digest_line(&server.stdout)
            .unwrap_or_else(|| panic!("tg-xfer serve printed no digest: {server:?}"));
        let client_port = client
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("local "))
            .and_then(|a| a.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("tg-xfer send did not name its local address: {client:?}"));
        TransferResult { sent, received, client_port, elapsed }
    }
}

/// TLS settings of a lab nginx.
pub struct NginxTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Key (PEM).
    pub key: PathBuf,
    /// More directives (`ssl_protocols …; ssl_ciphers …;`).
    pub extra: String,
}

/// nginx serving a directory in the lab's server namespace on `NET.2:80`: one
/// process (`master_process off`, `daemon off`), everything it writes in a
/// temporary directory; killed on drop.
pub struct Nginx {
    proc: Proc,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with `www` (a directory) as document root and waits (≤ 10 s) until
    /// it answers inside the server namespace.
    pub fn start(lab: &Lab, www: &Path) -> Nginx {
        Self::start_with(lab, www, None)
    }

    /// As [`Nginx::start`], also serving TLS on `NET.2:443` with `tls` (ALPN h2
    /// and http/1.1).
    pub fn start_with(lab: &Lab, www: &Path, tls: Option<&NginxTls>) -> Nginx {
        let dir = TempDir::new("nginx");
        let d = dir.path().display().to_string();
        let conf = dir.join("nginx.conf");
        let text = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    sendfile off;
    server {{
        listen {addr}:80;
        {tls}
        root {www};
    }}
}}
"#,
            addr = lab.server_addr(),
            www = www.display(),
            // TLS 1.3 as well as 1.2 unless the test says otherwise (Debian 12's
            // nginx 1.22 offers 1.2 only by default).
            tls = tls.map_or(String::new(), |t| format!(
                "listen {}:443 ssl http2; ssl_certificate {}; ssl_certificate_key {}; {} {}",
                lab.server_addr(),
                t.cert.display(),
                t.key.display(),
                if t.extra.contains("ssl_protocols") { "" } else { "ssl_protocols TLSv1.2 TLSv1.3;" },
                t.extra
            )),
        );
        std::fs::write(&conf, text).expect("writing nginx.conf");
        let conf_s = conf.display().to_string();
        let mut proc = netns_spawn(
            &lab.server_ns(),
            &["nginx", "-e", &format!("{d}/error.log"), "-p", &d, "-c", &conf_s],
        );
        let url = format!("http://{}/", lab.server_addr());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proc.try_status() {
                let err = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {}{}\n{err}", proc.stdout_text(), proc.stderr_text());
            }
            let probe = netns_run(
                &lab.server_ns(),
                &["curl", "-sS", "-o", "/dev/null", "--max-time", "2", &url],
                Duration::from_secs(5),
            );
            if probe.status.success() {
                return Nginx { proc, dir };
            }
            assert!(Instant::now() < deadline, "nginx did not answer within 10 s: {}", probe.stderr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where nginx writes its access log.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// Sends the frames of a pcap file on the lab client's interface (`P-c0`) with
/// `scripts/tests/inject-frames.py` at `pps` frames per second; returns how many it
/// sent.
pub fn inject(lab: &Lab, pcap: &Path, pps: u32) -> u64 {
    let script = repo_root().join("scripts/tests/inject-frames.py");
    let script = script.display().to_string();
    let pcap = pcap.display().to_string();
    let pps = pps.to_string();
    let out = netns_run(
        &lab.client_ns(),
        &["python3", &script, &lab.client_if(), &pcap, "--pps", &pps],
        Duration::from_secs(30),
    )
    .expect_success("inject-frames.py");
    parse_count(&out.stdout).unwrap_or_else(|| panic!("inject-frames.py printed no count: {out:?}"))
}

fn parse_count(text: &str) -> Option<u64> {
    text.lines().rev().find_map(|l| l.split_whitespace().next().and_then(|w| w.parse().ok()))
}

/// Leftovers of a lab prefix: namespaces and links whose names start with `prefix-`.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let p = format!("{prefix}-");
    let mut out = Vec::new();
    let ns = run_cmd(Command::new("ip").args(["netns", "list"]), Duration::from_secs(10));
    out.extend(
        ns.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&p))
            .map(String::from),
    );
    let links = run_cmd(Command::new("ip").args(["-o", "link", "show"]), Duration::from_secs(10));
    out.extend(
        links
            .stdout
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| n.starts_with(&p)),
    );
    out
}
