//! Starts the workers on a backend and runs them until stopped: the stats line, the
//! status socket and the optional measurement window (`--duration`, `--warmup`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tlsgate_drivers::Backend;

use crate::clock::{Clock, Secrets};
use crate::config::Config;
use crate::counters::Published;
use crate::live::{Live, LiveCell};
use crate::status::{spawn_server, stats_line, StatsSource, Totals};
use crate::worker::{Steering, Worker, WorkerSettings};
use crate::Error;

/// Run options from the command line (and, for the simulation, its clock).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Start the measurement window this long after start.
    pub warmup: Duration,
    /// The workers' clock (default: the system's).
    pub clock: Option<Arc<dyn Clock>>,
    /// The keys (default: drawn from the operating system at start).
    pub secrets: Option<Secrets>,
}

/// Rates over the measurement window.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Window length.
    pub seconds: f64,
    /// Frames received in the window.
    pub rx: u64,
    /// Frames transmitted in the window.
    pub tx: u64,
    /// Final totals.
    pub totals: Totals,
    /// Final counters.
    pub stats: tlsgate_api::DataplaneStats,
}

impl Summary {
    /// Transmitted frames per second, in millions.
    pub fn tx_mpps(&self) -> f64 {
        self.tx as f64 / self.seconds.max(1e-9) / 1e6
    }
}

/// The workers' settings from the configuration, with the decryption policy and
/// the TLS interception state loaded once for all workers (events are the
/// caller's), keys drawn at random unless `secrets` are given.
pub fn worker_settings(
    cfg: &Config,
    workers: usize,
    symmetric_rss: bool,
    secrets: Option<Secrets>,
) -> Result<WorkerSettings, Error> {
    let secrets = match secrets {
        Some(s) => s,
        None => Secrets::random().map_err(Error::Keys)?,
    };
    let mut settings = WorkerSettings::new(cfg, workers, symmetric_rss, secrets);
    let mut live = Live::default();
    if let Some(p) = &cfg.policy {
        let text =
            std::fs::read_to_string(&p.file).map_err(|source| Error::Io { path: p.file.clone(), source })?;
        let compiled =
            compile(&text, 1).map_err(|source| Error::PolicyFile { path: p.file.clone(), source })?;
        tracing::info!(rules = compiled.rule_count(), version = 1, "decryption policy loaded");
        live.version = 1;
        live.policy = Some(Arc::new(compiled));
    }
    // Without a control plane the CA and trust come from the [tls] files; with
    // one, from its snapshots (until the first arrives, a local [tls] with files
    // still serves).
    if let Some(t) = cfg.tls.as_ref().filter(|t| cfg.control.is_none() || t.ca_cert.is_some()) {
        let v = crate::intercept::tls::Verification::of(live.policy.as_deref());
        let shared = crate::intercept::tls::TlsShared::load(t, v)?;
        tracing::info!(
            profile = shared.profile.as_str(),
            ca = %shared.ca_subject,
            "TLS interception on"
        );
        warn_validation_off(v.validate);
        live.tls = Some(shared);
    }
    settings.live = LiveCell::new(live);
    Ok(settings)
}

/// Parses, validates and compiles a policy under `version`, warning about what an
/// operator must know.
pub fn compile_policy(text: &str, version: u64) -> Result<tlsgate_policy::CompiledPolicy, Error> {
    Ok(compile(text, version)?)
}

/// [`compile_policy`], with the policy crate's error for the caller to place.
pub(crate) fn compile(
    text: &str,
    version: u64,
) -> Result<tlsgate_policy::CompiledPolicy, tlsgate_policy::Error> {
    let policy = tlsgate_policy::Policy::from_json(text)?;
    for w in policy.warnings() {
        tracing::warn!(version, "policy: {w}");
    }
    tlsgate_policy::CompiledPolicy::compile(policy, version)
}

/// Says loudly that certificate validation is off.
pub fn warn_validation_off(validate: bool) {
    if !validate {
        tracing::warn!(
            "certificate validation is OFF (policy settings): servers are not verified; every \
             connection that would have been refused is decrypted anyway and its event says why"
        );
    }
}

/// Runs the dataplane on `backend` until `stop` is set, `opts.duration` passes or a
/// finite input (capture file) is exhausted.
pub fn run<B: Backend>(
    mut backend: B,
    cfg: &Config,
    stop: Arc<AtomicBool>,
    opts: &RunOptions,
) -> Result<Summary, Error> {
    let workers = backend.workers();
    let mut settings = worker_settings(cfg, workers, backend.symmetric_rss(), opts.secrets.clone())?;
    if let Some(clock) = &opts.clock {
        settings.clock = clock.clone();
    }
    tracing::info!(
        driver = backend.name(),
        workers,
        software_steering = settings.software_steering,
        lab = settings.lab,
        "forwarding"
    );
    warn_if_flow_tables_exceed_memory(cfg.flows.max_per_worker, workers);
    let mut drain = None;
    let drain_stop = Arc::new(AtomicBool::new(false));
    if let Some(e) = &cfg.events {
        std::fs::create_dir_all(&e.dir).map_err(|source| Error::EventsDir { path: e.dir.clone(), source })?;
        let chains = Arc::new(crate::events::ChainStore::default());
        if cfg.control.is_none() {
            drain = Some(crate::events::spawn_drain(e.clone(), workers, chains.clone(), drain_stop.clone())?);
            tracing::info!(dir = %e.dir.display(), "events: tls_proxy.log and events.jsonl");
        } else {
            tracing::info!(dir = %e.dir.display(), "events: rings for the control plane");
        }
        settings.events = Some((e.clone(), chains));
    }
    let capture_thread = settings.capturer.spawn(drain_stop.clone())?;
    let steering = Arc::new(Steering::new(workers, cfg.dataplane.handover_depth));
    let published: Vec<Arc<Published>> = (0..workers).map(|_| Arc::new(Published::default())).collect();
    let queues: Vec<Mutex<Option<B::Queues>>> =
        backend.take_queues().into_iter().map(|q| Mutex::new(Some(q))).collect();
    let epoch = settings.clock.now();
    let src = StatsSource {
        driver: backend.name(),
        workers: published.clone(),
        monitor: backend.monitor(),
        started: epoch,
    };
    if let Some(path) = &cfg.dataplane.status_socket {
        spawn_server(path, src.clone(), stop.clone())
            .map_err(|source| Error::StatusSocket { path: path.clone(), source })?;
        tracing::info!(socket = %path.display(), "status socket listening");
    }
    let link = match &cfg.control {
        None => None,
        Some(c) => Some(crate::link::spawn(
            crate::link::LinkSetup {
                socket: c.socket.clone(),
                live: settings.live.clone(),
                tls: cfg.tls.clone().unwrap_or_default(),
                stats: src.clone(),
                chains: settings.events.as_ref().map(|(_, chains)| chains.clone()),
                capturer: settings.capturer.clone(),
                workers,
                clock: settings.clock.clone(),
                epoch,
                signer: Arc::new(crate::intercept::tls::SignerLink::new(workers)),
                max_per_worker: cfg.intercept.max_per_worker,
                admission: cfg.admission.clone(),
            },
            drain_stop.clone(),
        )?),
    };

    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (src, stop, done, opts) = (src.clone(), stop.clone(), done.clone(), opts.clone());
        let interval = Duration::from_secs(cfg.dataplane.stats_interval_s);
        std::thread::Builder::new().name("tg-stats".into()).spawn(move || {
            let mut window_start: Option<(Instant, Totals)> =
                if opts.warmup.is_zero() { Some((epoch, Totals::default())) } else { None };
            let mut last = (Instant::now(), Totals::default());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let now = Instant::now();
                if window_start.is_none() && now.duration_since(epoch) >= opts.warmup {
                    window_start = Some((now, Totals::of(&src.snapshot())));
                }
                if opts.duration.is_some_and(|d| now.duration_since(epoch) >= d) {
                    stop.store(true, Ordering::Relaxed);
                }
                if !interval.is_zero() && now.duration_since(last.0) >= interval {
                    let s = src.snapshot();
                    let t = Totals::of(&s);
                    eprintln!("{}", stats_line(&last.1, &t, now.duration_since(last.0).as_secs_f64(), &s));
                    last = (now, t);
                }
            }
            window_start
        })?
    };

    backend.launch(|w| {
        let q = queues[w].lock().expect("queue slot").take().expect("one worker per queue");
        let mut worker =
            Worker::new(w, q, cfg, settings.clone(), steering.clone(), published[w].clone(), epoch);
        worker.run(&stop);
    });
    let end = Instant::now();
    done.store(true, Ordering::Relaxed);
    drain_stop.store(true, Ordering::Relaxed);
    if let Some(d) = drain {
        let _ = d.join();
    }
    if let Some(l) = link {
        let _ = l.join();
    }
    let _ = capture_thread.join();
    let window = monitor.join().map_err(|_| Error::Panicked("stats"))?;
    stop.store(true, Ordering::Relaxed);
    let stats = src.snapshot();
    let totals = Totals::of(&stats);
    let (start, base) = window.unwrap_or((epoch, Totals::default()));
    Ok(Summary {
        seconds: end.duration_since(start).as_secs_f64(),
        rx: totals.rx - base.rx,
        tx: totals.tx - base.tx,
        totals,
        stats,
    })
}

/// The flow tables' memory at `max_per_worker` flows on every worker (the peak
/// of the last doubling: old and new table), against the machine's memory: a
/// warning at start when it is more than half of it, instead of a surprise
/// under a flood (the tables then stop growing and new flows are refused as at
/// capacity).
fn warn_if_flow_tables_exceed_memory(max_per_worker: usize, workers: usize) {
    let peak = crate::flow::peak_table_bytes(max_per_worker).saturating_mul(workers as u64);
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    if let Some(total) = total.filter(|t| peak > t / 2) {
        tracing::warn!(
            flows_max_per_worker = max_per_worker,
            workers,
            table_mib = peak >> 20,
            memory_mib = total >> 20,
            "flow tables at flows.max_per_worker would take more than half of this machine's memory"
        );
    }
}
