//! The control plane's requests: what each one does to the state, and the
//! snapshots that follow.
//!
//! Every change is made on a copy of the state: checked, written to the state
//! directory, and only then taken as the running state. A refusal (bad input, a
//! name that does not exist, a write that failed) leaves everything as it was and
//! answers with an error code and a message naming what was wrong. A change that
//! reaches the dataplane (policy commit or rollback, trust, CA, license) makes the
//! next configuration version, with an audit record (who: the peer's uid; when;
//! what), and is sent to the dataplane as a [`Snapshot`].
//!
//! [`Daemon::handle`] dispatches each request to its area: `license`, `trust`
//! (and abort chains), `ca`, `policy`, `queries` (events), `dataplane`
//! (forwarded: stats, captures, exclusions).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tlsgate_api::{
    CertInfo, ControlStatus, ErrorCode, LicenseInfo, PinnedCert, Request, Response, Snapshot, TlsSnapshot,
    TrustAs,
};
use tlsgate_certstore::pki_types::{CertificateDer, UnixTime};
use tlsgate_certstore::{
    parse_certificates, parse_license, summarize, CaOptions, CertSummary, DecryptionCa, ImportAs, License,
    TrustEntry, VendorKey, FEATURE_STRONG_CRYPTO,
};
use tlsgate_policy::{Policy, PolicyDiff, Position, Rule};

use crate::audit::AuditLog;
use crate::config::ControlConfig;
use crate::crl::{CrlCache, FetchRules};
use crate::error::{Error, Result};
use crate::events::{EventLog, EventSettings, Filter};
use crate::link::Link;
use crate::signer::Signer;
use crate::state::{b64, to_b64, CaRecord, StateDir, StateFile, TrustRecord};
use tlsgate_api::coverage::Counts;

/// How long a request forwarded to the dataplane may take.
pub const DATAPLANE_TIMEOUT: Duration = Duration::from_secs(5);

/// The control plane.
pub struct Daemon {
    /// Its configuration.
    pub cfg: ControlConfig,
    /// This appliance's device id.
    pub device_id: String,
    vendor: Option<VendorKey>,
    dir: StateDir,
    state: Mutex<StateFile>,
    started: Instant,
    link: Mutex<Option<Arc<Link>>>,
    /// Events.
    pub events: Arc<EventLog>,
    /// The security audit log.
    pub audit: AuditLog,
    /// The signer of forged leaves (the CA's key stays here).
    pub signer: Signer,
    /// Set when the daemon should stop.
    pub stop: Arc<AtomicBool>,
    /// The cipher profile of the last snapshot made.
    snapshot_profile: Mutex<Option<&'static str>>,
    /// CRLs fetched from the distribution points of verified chains.
    pub crls: Arc<CrlCache>,
    /// Syslog collectors.
    pub forwarders: Vec<Arc<crate::syslog::Forwarder>>,
    /// The web console's uid (`console_user`).
    pub console_uid: Option<u32>,
    /// The web console's sessions (opened by its user's logins).
    console_sessions: Mutex<std::collections::HashMap<String, users::ConsoleSession>>,
    /// Failed console logins per account.
    login_failures: Mutex<users::Failures>,
    /// Coverage counters sampled over time (`coverage --since`).
    coverage: Mutex<std::collections::VecDeque<(u64, Counts, u64)>>,
}

/// Coverage samples kept: a day at one a minute.
pub const COVERAGE_SAMPLES: usize = 1440;

/// The area modules: each serves its requests (`handle` dispatches).
mod ca;
mod console;
mod dataplane;
mod license;
mod policy;
mod queries;
mod trust;
mod users;

/// A request nobody here serves.
fn unsupported(other: Request) -> Response {
    Response::error(ErrorCode::Unsupported, format!("not served by tlsgate-control: {other:?}"))
}

/// A refusal.
struct No(ErrorCode, String);

fn invalid(m: impl std::fmt::Display) -> No {
    No(ErrorCode::Invalid, m.to_string())
}

fn not_found(m: impl std::fmt::Display) -> No {
    No(ErrorCode::NotFound, m.to_string())
}

/// What a change did.
struct Change {
    message: String,
    /// It reaches the dataplane: next version, audit record, snapshot.
    versioned: bool,
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A certificate summary as shown.
pub fn cert_info(name: &str, kind: &str, s: &CertSummary, pem: Option<String>) -> CertInfo {
    CertInfo {
        name: name.to_string(),
        kind: kind.to_string(),
        subject: s.subject.clone(),
        issuer: s.issuer.clone(),
        fingerprint: s.fingerprint.to_hex(),
        not_before: s.not_before,
        not_after: s.not_after,
        pem,
        names: Vec::new(),
    }
}

impl Daemon {
    /// Opens the state directory and the event log.
    pub fn open(cfg: ControlConfig) -> Result<Daemon> {
        let device_id = cfg.device_id()?;
        let (cfg_log_dir, cfg_max, cfg_kept) = (cfg.log_dir.clone(), cfg.max_log_bytes, cfg.log_files_kept);
        crate::pkcs11::set_configured(&cfg.pkcs11_keys);
        let dir = StateDir::open(&cfg.state_dir)?;
        let state = dir.load(now_s())?;
        let events = EventLog::open(EventSettings {
            events_dir: cfg.events_dir.clone(),
            log_dir: cfg.log_dir.clone(),
            max_log_bytes: cfg.max_log_bytes,
            log_files_kept: cfg.log_files_kept,
            indexed: cfg.events_indexed,
            chains_dir: dir.chains(),
            chains_kept: cfg.chains_kept,
        })?;
        let crls = Arc::new(CrlCache::new(FetchRules::of(&cfg), cfg.crl_fetch));
        let spool = cfg.state_dir.join("syslog");
        let forwarders = cfg
            .syslog
            .iter()
            .map(|c| crate::syslog::Forwarder::open(c.clone(), &spool).map_err(Error::file(&spool)))
            .collect::<Result<Vec<_>>>()?;
        events.forward_to(forwarders.clone());
        let console_uid = Daemon::console_uid(&cfg)?;
        Ok(Daemon {
            console_uid,
            forwarders,
            crls,
            coverage: Mutex::new(std::collections::VecDeque::new()),
            login_failures: Mutex::new(users::Failures::default()),
            console_sessions: Mutex::new(std::collections::HashMap::new()),
            vendor: cfg.vendor_key(),
            cfg,
            device_id,
            dir,
            state: Mutex::new(state),
            started: Instant::now(),
            link: Mutex::new(None),
            events: Arc::new(events),
            signer: Signer::new(&cfg_log_dir, cfg_max, cfg_kept),
            audit: AuditLog::open(cfg_log_dir, cfg_max, cfg_kept),
            stop: Arc::new(AtomicBool::new(false)),
            snapshot_profile: Mutex::new(None),
        })
    }

    fn state(&self) -> MutexGuard<'_, StateFile> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current configuration version.
    pub fn version(&self) -> u64 {
        self.state().version
    }

    /// The dataplane link, if one is connected.
    pub fn link(&self) -> Option<Arc<Link>> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A dataplane said hello: it becomes the link and gets the current snapshot
    /// at once. Refused while another dataplane's connection is open (one
    /// dataplane at a time); the message names the one connected.
    pub fn attach(&self, link: Arc<Link>) -> Result<()> {
        {
            let mut cur = self.link.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(l) = cur.as_ref().filter(|l| !l.is_closed()) {
                return Err(Error::DataplaneConnected { pid: l.pid });
            }
            *cur = Some(link.clone());
        }
        tracing::info!(pid = link.pid, workers = link.workers, "dataplane connected");
        self.push_snapshot_to(&link);
        Ok(())
    }

    /// The dataplane's connection closed.
    pub fn detach(&self, link: &Arc<Link>) {
        let mut l = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        if l.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, link)) {
            tracing::warn!("dataplane disconnected (it keeps forwarding on its last snapshot)");
            *l = None;
        }
    }

    /// The snapshot of a state.
    pub fn snapshot(&self, st: &StateFile) -> Snapshot {
        *self.snapshot_profile.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.profile(st));
        self.signer.reload(st);
        if let Ok(trust) = st.trust_store() {
            self.crls.set_trust(trust.snapshot());
        }
        let tls = st.ca.as_ref().map(|ca| TlsSnapshot {
            ca_cert_pem: ca.cert_pem.clone(),
            cas: st.trust.iter().filter(|r| r.kind == "ca").map(|r| r.der.clone()).collect(),
            pinned: st
                .trust
                .iter()
                .filter(|r| r.kind == "pinned")
                .map(|r| PinnedCert { name: r.name.clone(), der: r.der.clone(), names: r.names.clone() })
                .collect(),
            system_bundle: st.system_bundle,
            profile: self.profile(st).to_string(),
            crls: Vec::new(),
        });
        let mut snap = Snapshot { version: st.version, policy: st.running_policy().to_string(), tls };
        // The CRLs take what the rest of the snapshot leaves of a frame (with a
        // margin for the frame's envelope and the JSON around each list).
        let rest = serde_json::to_string(&snap).map_or(tlsgate_api::MAX_LINE, |t| t.len());
        if let Some(tls) = snap.tls.as_mut() {
            let budget = (tlsgate_api::MAX_LINE * 9 / 10).saturating_sub(rest);
            tls.crls = self.crls.snapshot_crls(budget);
        }
        snap
    }

    fn push_snapshot_to(&self, link: &Link) {
        let snap = self.snapshot(&self.state());
        let version = snap.version;
        if let Err(e) = link.post(Request::Snapshot(Box::new(snap))) {
            tracing::warn!(version, error = %e, "sending the snapshot failed");
        }
    }

    /// Sends the current snapshot to the dataplane, if one is connected (the
    /// CRL fetcher calls it when its lists changed).
    pub fn push_snapshot(&self) {
        if let Some(link) = self.link() {
            self.push_snapshot_to(&link);
        }
    }

    /// Makes a change on a copy of the state; see the module documentation.
    fn change(&self, uid: u32, f: impl FnOnce(&mut StateFile, u64) -> Result<Change, No>) -> Response {
        let mut st = self.state();
        let mut next = st.clone();
        let version = st.version + 1;
        let change = match f(&mut next, version) {
            Ok(c) => c,
            Err(No(code, message)) => return Response::error(code, message),
        };
        if change.versioned {
            next.version = version;
            next.audit(version, now_s(), uid, change.message.clone());
        }
        if next == *st {
            return Response::Done { message: change.message, version: None };
        }
        if let Err(e) = self.dir.save(&next) {
            return Response::error(
                ErrorCode::Internal,
                format!("writing the state in {}: {e}; nothing changed", self.dir.path().display()),
            );
        }
        *st = next;
        drop(st);
        if change.versioned {
            tracing::info!(version, uid, "{}", change.message);
            self.push_snapshot();
            Response::Done { message: change.message, version: Some(version) }
        } else {
            Response::Done { message: change.message, version: None }
        }
    }

    /// Serves one request from a peer with uid `uid`.
    pub fn handle(&self, req: Request, uid: u32) -> Response {
        match req {
            Request::Ping => Response::Pong {
                process: "tlsgate-control".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::Status => Response::Status(self.status()),
            Request::Coverage { since } => self.coverage(since),
            Request::ExclusionsClear { .. }
            | Request::Stats
            | Request::CaptureStart(_)
            | Request::CaptureStop { .. }
            | Request::CaptureList
            | Request::ExclusionsList => self.dataplane_request(req, uid),
            Request::UserAdd { .. }
            | Request::UserRemove { .. }
            | Request::UserPasswd { .. }
            | Request::UserList
            | Request::UserLogin { .. }
            | Request::UserLogout { .. } => self.user_request(req, uid),
            Request::LicenseLoad { .. } | Request::LicenseShow | Request::LicenseRemove { .. } => {
                self.license_request(req, uid)
            }
            Request::TrustAdd { .. }
            | Request::TrustAddFromEvent { .. }
            | Request::TrustList
            | Request::TrustShow { .. }
            | Request::TrustRemove { .. }
            | Request::TrustSystem { .. } => self.trust_request(req, uid),
            Request::CaGenerate { .. }
            | Request::CaImport { .. }
            | Request::CaImportPkcs11 { .. }
            | Request::CaExport { .. } => self.ca_request(req, uid),
            Request::PolicyShow { .. }
            | Request::PolicyLoad { .. }
            | Request::PolicyCheck { .. }
            | Request::PolicyDiff { .. }
            | Request::PolicyRuleAdd { .. }
            | Request::PolicyRuleRemove { .. }
            | Request::PolicyCommit
            | Request::PolicyRollback { .. }
            | Request::PolicyHistory
            | Request::PolicyExplain { .. } => self.policy_request(req, uid),
            Request::EventsList { .. } | Request::EventsShow { .. } => self.events_request(req, uid),
            Request::OnBehalf { .. } => Response::error(
                ErrorCode::PermissionDenied,
                "on_behalf is served only to the web console's user (control.console_user)",
            ),
            Request::DataplaneHello { .. }
            | Request::Snapshot(_)
            | Request::Chain { .. }
            | Request::CrlDistributionPoints { .. } => Response::error(
                ErrorCode::Unsupported,
                "dataplane requests are only served on the dataplane's own connection",
            ),
            other => unsupported(other),
        }
    }

    fn status(&self) -> ControlStatus {
        let st = self.state();
        let link = self.link();
        ControlStatus {
            uptime_s: self.started.elapsed().as_secs_f64(),
            config_version: st.version,
            dataplane_connected: link.is_some(),
            dataplane_version: link.as_ref().map_or(0, |l| l.applied.load(Ordering::Relaxed)),
            dataplane_pid: link.as_ref().map(|l| l.pid),
            profile: self.profile(&st).into(),
            licenses: self.license_infos(&st),
            ca: st.ca_summary().map(|s| cert_info("", "decryption-ca", &s, None)),
            events_logged: self.events.logged(),
            events_lost: self.events.lost(),
            device_id: self.device_id.clone(),
            crls: self.crls.infos(),
        }
    }

    /// Takes a coverage sample from the dataplane (every minute, and at each
    /// `coverage` request); the dataplane's counters, or why not.
    pub fn sample_coverage(&self) -> std::result::Result<(u64, Counts, u64), Box<Response>> {
        let link = self.link().ok_or_else(|| {
            Box::new(Response::error(ErrorCode::Unavailable, "the dataplane is not connected"))
        })?;
        let stats = match link.call(Request::Stats, DATAPLANE_TIMEOUT) {
            Response::Stats(s) => s,
            other => return Err(Box::new(other)),
        };
        let now = now_s();
        let counts = Counts::of(&stats);
        let started = now.saturating_sub(stats.uptime_s as u64);
        let mut samples = self.coverage.lock().unwrap_or_else(PoisonError::into_inner);
        // Another dataplane run (its start moved, or a counter went down): older
        // samples count nothing now.
        if samples
            .back()
            .is_some_and(|(_, last, at)| counts.since(last).is_none() || at.abs_diff(started) > 2)
        {
            samples.clear();
        }
        if samples.back().is_none_or(|(t, ..)| *t < now) {
            samples.push_back((now, counts.clone(), started));
        }
        while samples.len() > COVERAGE_SAMPLES {
            samples.pop_front();
        }
        Ok((now, counts, started))
    }

    /// Coverage since `since` (none: since the dataplane started).
    fn coverage(&self, since: Option<u64>) -> Response {
        let (now, counts, started) = match self.sample_coverage() {
            Ok(s) => s,
            Err(resp) => return *resp,
        };
        let Some(t) = since else {
            return Response::Coverage(counts.report(started, now, None));
        };
        let samples = self.coverage.lock().unwrap_or_else(PoisonError::into_inner);
        // The last sample at or before `t` (samples of an earlier dataplane run
        // are gone); else, when `t` is before this run, since it started; else
        // the first sample after `t`.
        let (base, note) = match samples.iter().rev().find(|(at, ..)| *at <= t) {
            Some(s) => (Some(s), None),
            None if t < started => {
                (None, Some("the dataplane started after the time asked: since it started"))
            }
            None => (samples.front(), Some("no sample that old: from the oldest")),
        };
        match base.and_then(|(at, c, _)| counts.since(c).map(|d| (*at, d))) {
            Some((at, delta)) => {
                let note = note.map(String::from).or_else(|| {
                    (at != t).then(|| {
                        format!(
                            "from the nearest sample ({at}); samples are taken every minute and kept a day"
                        )
                    })
                });
                Response::Coverage(delta.report(at, now, note))
            }
            None => Response::Coverage(counts.report(started, now, note.map(String::from))),
        }
    }

    /// Expiry of the decryption CA and of the licenses (unix seconds), for metrics.
    pub fn expiries(&self) -> (Option<i64>, Vec<(String, i64, bool)>) {
        let st = self.state();
        let now = now_s() as i64;
        let ca = st.ca_summary().map(|s| s.not_after);
        let lic = self
            .licenses(&st)
            .into_iter()
            .flatten()
            .map(|l| (l.payload.serial.clone(), l.not_after, l.is_valid_at(now)))
            .collect();
        (ca, lic)
    }
}
