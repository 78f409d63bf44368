//! The dataplane's connection to the control plane (`[control] socket`).
//!
//! ```text
//!  connect to the dataplane socket ──DataplaneHello{workers, pid, running version}──► tlsgate-control
//!          ◄──Snapshot{version, policy, tls}── apply: compile, build TLS state, LiveCell::set ──Applied──►
//!          ◄──Stats / Capture* ──────────────── answered from the published counters / the capturer
//!          ──Chain{sha256, pem}──► (the chain of every abort, for `trust add --from-event`)
//!          ──CrlDistributionPoints{name, chain, urls}──► (verified chains naming CRLs: the control plane fetches)
//!  lost ──► keep forwarding on the last snapshot; reconnect every second
//! ```
//!
//! A snapshot that cannot be applied is answered with an error and changes
//! nothing: the dataplane keeps the configuration it runs.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tlsgate_api::framing::Read;
use tlsgate_api::{
    write_frame, Body, ErrorCode, Frame, FrameReader, Request, Response, Snapshot, TlsSnapshot,
};

use crate::capture::Capturer;
use crate::events::ChainStore;
use crate::intercept::tls::{SignerLink, TlsConfig, TlsShared, Verification};
use crate::live::{Live, LiveCell};
use crate::run::{compile, warn_validation_off};
use crate::status::StatsSource;
use crate::Error;

/// What the link needs.
pub struct LinkSetup {
    /// The control socket.
    pub socket: PathBuf,
    /// Where the workers take their configuration.
    pub live: Arc<LiveCell>,
    /// TLS tunables (forge cache, handshake timeout, ports).
    pub tls: TlsConfig,
    /// Counters.
    pub stats: StatsSource,
    /// Abort chains to send up.
    pub chains: Option<Arc<ChainStore>>,
    /// Packet captures.
    pub capturer: Arc<Capturer>,
    /// Workers.
    pub workers: usize,
    /// The workers' clock and its epoch (learned exclusions expire in its ms).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The workers' epoch.
    pub epoch: std::time::Instant,
    /// The queues to the signer (the control plane signs forged leaves).
    pub signer: Arc<SignerLink>,
    /// Splices per worker at most (`[intercept] max_per_worker`), for explain.
    pub max_per_worker: usize,
    /// `[admission]`, for explain.
    pub admission: crate::intercept::admission::AdmissionConfig,
}

/// Applies snapshots, keeping the TLS state when its material did not change.
pub struct Applier {
    live: Arc<LiveCell>,
    tunables: TlsConfig,
    signer: Arc<SignerLink>,
    last_tls: Option<(TlsSnapshot, Verification, Arc<TlsShared>)>,
}

impl Applier {
    /// An applier writing into `live`.
    pub fn new(live: Arc<LiveCell>, tunables: TlsConfig, signer: Arc<SignerLink>) -> Applier {
        Applier { live, tunables, signer, last_tls: None }
    }

    /// Compiles and installs a snapshot; on error nothing changes.
    pub fn apply(&mut self, snap: &Snapshot) -> Result<(), Error> {
        let policy = compile(&snap.policy, snap.version).map_err(Error::SnapshotPolicy)?;
        let v = Verification::of(Some(&policy));
        let tls = match &snap.tls {
            None => None,
            Some(t) => match &self.last_tls {
                Some((prev, before, shared)) if prev == t && *before == v => Some(shared.clone()),
                _ => {
                    let shared = TlsShared::from_snapshot(&self.tunables, t, v, self.signer.clone())?;
                    warn_validation_off(v.validate);
                    Some(shared)
                }
            },
        };
        self.last_tls = snap.tls.clone().zip(tls.clone()).map(|(t, s)| (t, v, s));
        tracing::info!(
            version = snap.version,
            rules = policy.rule_count(),
            tls = tls.as_ref().map_or("off (no decryption CA)", |t| t.profile.as_str()),
            "configuration applied"
        );
        self.live.set(Live { version: snap.version, policy: Some(Arc::new(policy)), tls });
        Ok(())
    }
}

/// Runs the link until `stop`.
pub fn spawn(setup: LinkSetup, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("tg-control".into()).spawn(move || {
        let mut applier = Applier::new(setup.live.clone(), setup.tls.clone(), setup.signer.clone());
        let mut outage_logged = false;
        while !stop.load(Ordering::Relaxed) {
            match UnixStream::connect(&setup.socket) {
                Ok(stream) => {
                    outage_logged = false;
                    tracing::info!(socket = %setup.socket.display(), "connected to the control plane");
                    let ended = session(&setup, &mut applier, stream, &stop);
                    setup.signer.set_connected(false);
                    if let Err(e) = ended {
                        tracing::warn!(
                            error = %e,
                            version = setup.live.current().version,
                            "control plane connection lost: forwarding on the last configuration"
                        );
                    }
                }
                Err(e) => {
                    if !outage_logged {
                        tracing::warn!(socket = %setup.socket.display(), error = %e,
                            "control plane not reachable: forwarding on the last configuration; retrying");
                        outage_logged = true;
                    }
                }
            }
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

fn session(
    setup: &LinkSetup,
    applier: &mut Applier,
    stream: UnixStream,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    // Short: requests for the signer wait for this loop (a cold forge's latency).
    stream.set_read_timeout(Some(Duration::from_millis(2)))?;
    // A control plane that stops reading cannot hold this thread: the write
    // fails, the session ends and the link reconnects.
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut out = stream.try_clone()?;
    let mut reader = FrameReader::new(stream);
    let hello_id = 1u64;
    let hello = Request::DataplaneHello {
        workers: setup.workers as u32,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        running_version: setup.live.current().version,
    };
    write_frame(&mut out, &Frame::request(hello_id, hello))?;
    let mut next_id = hello_id;
    let mut send = |out: &mut UnixStream, req: Request| -> std::io::Result<u64> {
        next_id += 1;
        write_frame(out, &Frame::request(next_id, req)).map(|()| next_id)
    };
    // Sign batches sent and not answered: request id → leaf ids.
    let mut batches: std::collections::HashMap<u64, Vec<u64>> = std::collections::HashMap::new();
    let mut hello_done = false;
    while !stop.load(Ordering::Relaxed) {
        if let Some(chains) = &setup.chains {
            while let Some((sha256, pem)) = chains.take() {
                // A chain too large for a frame is not kept (the session goes on).
                if too_large(send(&mut out, Request::Chain { sha256: sha256.clone(), pem }))?.is_none() {
                    tracing::warn!(sha256 = %sha256, "an abort chain too large to send up: not kept");
                }
            }
        }
        if hello_done {
            loop {
                let leaves = setup.signer.batch();
                if leaves.is_empty() {
                    break;
                }
                let ids: Vec<u64> = leaves.iter().map(|l| l.id).collect();
                match too_large(send(&mut out, Request::SignLeaves { leaves }))? {
                    Some(id) => {
                        batches.insert(id, ids);
                    }
                    None => setup.signer.refuse(&ids, "the request is too large to send to the signer"),
                }
            }
            while let Some((name, chain, urls, proven)) = setup.signer.take_crl_points() {
                let req = Request::CrlDistributionPoints { name, chain, urls, proven };
                if too_large(send(&mut out, req))?.is_none() {
                    tracing::warn!("a chain with CRL distribution points too large to report");
                }
            }
        }
        let frame = match reader.read_frame() {
            Ok(Read::Frame(f)) => *f,
            Ok(Read::Eof) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed by the control plane",
                ))
            }
            Ok(Read::Invalid { id, error }) => {
                write_frame(
                    &mut out,
                    &Frame::response(id, Response::error(error.code(), error.to_string())),
                )?;
                continue;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue
            }
            Err(e) => return Err(e),
        };
        let req = match frame.body {
            Body::Request(req) => req,
            Body::Response(Response::Error { code, message }) if frame.id == hello_id => {
                tracing::error!(?code, error = %message, socket = %setup.socket.display(), "the control plane refused this dataplane");
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message));
            }
            Body::Response(_) if frame.id == hello_id => {
                hello_done = true;
                setup.signer.set_connected(true);
                continue;
            }
            Body::Response(Response::SignedLeaves { leaves }) => {
                batches.remove(&frame.id);
                setup.signer.deliver(leaves);
                continue;
            }
            Body::Response(Response::Error { message, .. }) => {
                if let Some(ids) = batches.remove(&frame.id) {
                    tracing::warn!(error = %message, leaves = ids.len(), "the signer refused a batch");
                    setup.signer.refuse(&ids, &message);
                } else {
                    tracing::warn!(error = %message, "the control plane refused a request (an abort chain, CRL points)");
                }
                continue;
            }
            Body::Response(_) => continue, // answers to chains
        };
        let resp = match req {
            Request::Snapshot(snap) => match applier.apply(&snap) {
                Ok(()) => Response::Applied { version: snap.version },
                Err(e) => {
                    tracing::error!(version = snap.version, error = %e, "snapshot refused: keeping the running configuration");
                    Response::error(ErrorCode::Invalid, format!("snapshot {} refused: {e}", snap.version))
                }
            },
            Request::Stats => Response::Stats(setup.stats.snapshot()),
            Request::Ping => Response::Pong {
                process: "tlsgate-dataplane".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::CaptureStart(spec) => setup.capturer.start(spec),
            Request::CaptureStop { id } => setup.capturer.stop(id),
            Request::CaptureList => setup.capturer.list(),
            Request::ExclusionsList => exclusions(setup, None),
            Request::PolicyExplain { client, server, port, sni, ja4 } => {
                explain(setup, client, server, port, sni.as_deref(), ja4.as_deref())
            }
            Request::ExclusionsClear { server } => exclusions(setup, Some(server)),
            other => {
                Response::error(ErrorCode::Unsupported, format!("not served by the dataplane: {other:?}"))
            }
        };
        if too_large(write_frame(&mut out, &Frame::response(frame.id, resp)))?.is_none() {
            // An answer over the frame limit (a long list) is refused, not fatal.
            let resp = Response::error(ErrorCode::TooLarge, "the answer exceeds the frame limit (1 MiB)");
            write_frame(&mut out, &Frame::response(frame.id, resp))?;
        }
    }
    Ok(())
}

/// A write that was refused for its size (`InvalidInput` from [`write_frame`]:
/// nothing was written) is `None`; other errors end the session.
fn too_large<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a flow would (not) be decrypted, by the policy running now, with the
/// learned exclusion that would pass it and what admission would do with its SYN.
fn explain(
    setup: &LinkSetup,
    client: std::net::IpAddr,
    server: std::net::IpAddr,
    port: u16,
    sni: Option<&str>,
    ja4: Option<&str>,
) -> Response {
    let live = setup.live.current();
    let Some(policy) = live.policy.as_ref() else {
        return Response::error(ErrorCode::Unavailable, "no policy running: nothing is decided yet");
    };
    let mut e = policy.explain(client, server, port, sni, ja4);
    if !e.tls_port || e.after_hello.action == "block" {
        return Response::Explained(e);
    }
    match live.tls.as_ref() {
        None => {
            e.notes.push("no TLS material (no decryption CA): a decrypt decision forwards uninspected".into())
        }
        Some(shared) => {
            let now_ms = setup.clock.now().saturating_duration_since(setup.epoch).as_millis() as u64;
            let hit =
                shared.exclusions.entries(now_ms).into_iter().find(|((s, p, n), ..)| {
                    *s == server && *p == port && (n.is_none() || n.as_deref() == sni)
                });
            let pass = policy.undecryptable() == tlsgate_policy::UndecryptableAction::Pass;
            e.notes.push(match (hit, pass) {
                (Some((_, left_ms, failure)), true) => format!(
                    "a learned exclusion passes this flow undecrypted for {} s more (the appliance's probe found: {})",
                    left_ms / 1000,
                    failure.text()
                ),
                (Some(_), false) => "a learned exclusion exists for this server, but undecryptable = block: \
                                     it is not applied"
                    .into(),
                (None, _) => "no learned exclusion for this server".into(),
            });
        }
    }
    if e.at_syn.action != "do-not-decrypt" {
        let a = &setup.admission;
        let stats = setup.stats.snapshot();
        let most = |name: &str| stats.workers.iter().map(|w| w.get(name)).max().unwrap_or(0);
        let budget = a.memory_budget_mib << 20;
        let full = most("intercept_active") as usize >= setup.max_per_worker
            || most("memory_charged_bytes") >= budget;
        e.notes.push(format!(
            "admission {} now: a worker has at most {} of {} splices and {} of {} MiB charged; a source may have {} half-open splices per worker ({} per NAT source); over a limit the SYN gets over_limit = {}",
            if full { "WOULD refuse its SYN" } else { "would admit it" },
            most("intercept_active"),
            setup.max_per_worker,
            most("memory_charged_bytes") >> 20,
            a.memory_budget_mib,
            a.half_open_per_source,
            a.half_open_per_nat_source,
            format!("{:?}", a.over_limit).to_lowercase()
        ));
    }
    Response::Explained(e)
}

/// The learned exclusions of the TLS material running now, after clearing those
/// of `clear` (`Some(None)`: all) along with their confirmations (so that those
/// servers are probed again on their next failure).
fn exclusions(setup: &LinkSetup, clear: Option<Option<std::net::IpAddr>>) -> Response {
    let Some(shared) = setup.live.current().tls.clone() else {
        return Response::error(ErrorCode::Unavailable, "no TLS material loaded: nothing is learned");
    };
    let now_ms = setup.clock.now().saturating_duration_since(setup.epoch).as_millis() as u64;
    let cleared = clear.map(|server| {
        shared.confirmations.clear(server);
        shared.exclusions.clear(server) as u64
    });
    let exclusions = shared
        .exclusions
        .entries(now_ms)
        .into_iter()
        .map(|((server, port, sni), left_ms, failure)| tlsgate_api::ExclusionInfo {
            server,
            port,
            sni,
            expires_in_s: left_ms.div_ceil(1000),
            cause: failure.cause.label().to_string(),
            reason: failure.text(),
        })
        .collect();
    Response::Exclusions { exclusions, cleared }
}
