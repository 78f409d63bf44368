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
use crate::events::{EventLog, EventSettings, Filter};
use crate::link::Link;
use crate::signer::Signer;
use crate::state::{b64, to_b64, CaRecord, StateDir, StateFile, TrustRecord};

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
}

/// A refusal.
struct No(ErrorCode, String);

fn invalid(m: impl Into<String>) -> No {
    No(ErrorCode::Invalid, m.into())
}

fn not_found(m: impl Into<String>) -> No {
    No(ErrorCode::NotFound, m.into())
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

fn entry_info(e: &TrustEntry, with_pem: bool) -> CertInfo {
    let pem = with_pem.then(|| tlsgate_certstore::pem_encode("CERTIFICATE", e.der.as_ref()));
    CertInfo { names: e.names.clone(), ..cert_info(&e.name, e.kind.as_str(), &e.summary, pem) }
}

/// Which names a pinned certificate is trusted for.
#[derive(Debug, Clone)]
enum PinScope {
    /// These names.
    Names(Vec<String>),
    /// Those the certificate itself holds (its subjectAltName DNS names and
    /// addresses); refused when it holds none.
    OwnNames,
    /// Any name (`--any-name`).
    AnyName,
}

/// A name a pin may hold for: a DNS name or an IP address, as text.
fn check_pin_name(n: &str) -> Result<String, No> {
    let t = n.trim().trim_end_matches('.').to_ascii_lowercase();
    if t.parse::<std::net::IpAddr>().is_ok()
        || (!t.is_empty()
            && t.len() <= 253
            && tlsgate_certstore::pki_types::ServerName::try_from(t.as_str()).is_ok())
    {
        Ok(t)
    } else {
        Err(invalid(format!("--for {n:?}: not a DNS name or an IP address")))
    }
}

impl Daemon {
    /// Opens the state directory and the event log.
    pub fn open(cfg: ControlConfig) -> Result<Daemon, String> {
        let device_id = cfg.device_id()?;
        let (cfg_log_dir, cfg_max, cfg_kept) = (cfg.log_dir.clone(), cfg.max_log_bytes, cfg.log_files_kept);
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
        Ok(Daemon {
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
    pub fn attach(&self, link: Arc<Link>) -> Result<(), String> {
        {
            let mut cur = self.link.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(l) = cur.as_ref().filter(|l| !l.is_closed()) {
                return Err(format!("a dataplane (pid {}) is already connected", l.pid));
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

    /// The licenses held, each checked (signature, device) with its state now.
    fn licenses(&self, st: &StateFile) -> Vec<Result<License, String>> {
        st.licenses
            .iter()
            .map(|text| {
                let key = self.vendor.as_ref().ok_or("no vendor key configured")?;
                parse_license(text.as_bytes())
                    .and_then(|l| l.verify_signature_and_device(key, &self.device_id))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// The cipher profile the licenses give now.
    pub fn profile(&self, st: &StateFile) -> &'static str {
        let now = now_s() as i64;
        let strong = self
            .licenses(st)
            .iter()
            .flatten()
            .any(|l| l.is_valid_at(now) && l.has_feature(FEATURE_STRONG_CRYPTO));
        if strong {
            "strong"
        } else {
            "base"
        }
    }

    /// The snapshot of a state.
    pub fn snapshot(&self, st: &StateFile) -> Snapshot {
        *self.snapshot_profile.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.profile(st));
        self.signer.reload(st);
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
        });
        Snapshot { version: st.version, policy: st.running_policy().to_string(), tls }
    }

    fn push_snapshot_to(&self, link: &Link) {
        let snap = self.snapshot(&self.state());
        let version = snap.version;
        if let Err(e) = link.post(Request::Snapshot(Box::new(snap))) {
            tracing::warn!(version, error = %e, "sending the snapshot failed");
        }
    }

    fn push_snapshot(&self) {
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

    /// A license that expired (or became valid) changes the profile the last
    /// snapshot carried: a new version (called once a second).
    pub fn check_licenses(&self) {
        let profile = self.profile(&self.state());
        let sent = *self.snapshot_profile.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(before) = sent else {
            // No snapshot made yet (no dataplane so far): it will carry the profile.
            return;
        };
        if before != profile {
            let message = format!(
                "license state changed: cipher profile {before} → {profile} on both legs{}",
                if profile == "base" {
                    " (the strong-crypto license expired or is not yet valid)"
                } else {
                    ""
                }
            );
            tracing::warn!("{message}");
            self.change(0, |_, _| Ok(Change { message, versioned: true }));
            // Without a dataplane no snapshot was sent: note the profile anyway.
            *self.snapshot_profile.lock().unwrap_or_else(PoisonError::into_inner) = Some(profile);
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
            Request::ExclusionsClear { server } => match self.link() {
                Some(link) => {
                    let resp = link.call(req, DATAPLANE_TIMEOUT);
                    if let Response::Exclusions { cleared: Some(n), .. } = &resp {
                        let which = server.map_or("all servers".to_string(), |s| s.to_string());
                        tracing::warn!(uid, cleared = n, "learned exclusions cleared ({which})");
                    }
                    resp
                }
                None => Response::error(ErrorCode::Unavailable, "the dataplane is not connected"),
            },
            Request::Stats
            | Request::CaptureStart(_)
            | Request::CaptureStop { .. }
            | Request::CaptureList
            | Request::ExclusionsList => match self.link() {
                Some(link) => link.call(req, DATAPLANE_TIMEOUT),
                None => Response::error(ErrorCode::Unavailable, "the dataplane is not connected"),
            },
            Request::LicenseLoad { text } => self.license_load(uid, text),
            Request::LicenseShow => {
                let st = self.state();
                Response::Licenses {
                    device_id: self.device_id.clone(),
                    profile: self.profile(&st).into(),
                    licenses: self.license_infos(&st),
                }
            }
            Request::LicenseRemove { serial } => self.change(uid, |st, _| {
                let before = st.licenses.len();
                st.licenses
                    .retain(|t| parse_license(t.as_bytes()).map_or(true, |l| l.payload().serial != serial));
                if st.licenses.len() == before {
                    return Err(not_found(format!("no license with serial {serial:?}")));
                }
                Ok(Change { message: format!("license {serial} removed"), versioned: true })
            }),
            Request::TrustAdd { data, name, kind, names, any_name } => {
                self.trust_add(uid, data, name, kind, names, any_name)
            }
            Request::TrustAddFromEvent { event_id, name, any_name } => {
                self.trust_from_event(uid, event_id, name, any_name)
            }
            Request::TrustList => self.trust_list(None),
            Request::TrustShow { name } => self.trust_list(Some(name)),
            Request::TrustRemove { name } => self.change(uid, |st, _| {
                let store = st.trust_store_without_system().map_err(invalid)?;
                let gone: Vec<String> =
                    store.find(&name).iter().map(|e| e.summary.fingerprint.to_hex()).collect();
                if gone.is_empty() {
                    return Err(not_found(format!(
                        "no trust entry named {name:?} (nor with that fingerprint)"
                    )));
                }
                st.trust.retain(|r| {
                    let fp =
                        b64(&r.der).ok().and_then(|d| summarize(&d).ok()).map(|s| s.fingerprint.to_hex());
                    r.name != name && !fp.is_some_and(|f| gone.contains(&f))
                });
                Ok(Change {
                    message: format!("trust entry {name} removed ({} certificate(s))", gone.len()),
                    versioned: true,
                })
            }),
            Request::TrustSystem { enabled } => self.change(uid, |st, _| {
                if st.system_bundle == enabled {
                    return Ok(Change {
                        message: format!(
                            "the system CA bundle is already {}",
                            if enabled { "on" } else { "off" }
                        ),
                        versioned: false,
                    });
                }
                if enabled {
                    tlsgate_certstore::TrustStore::with_system_bundle()
                        .map_err(|e| invalid(format!("the system CA bundle cannot be read: {e}")))?;
                }
                st.system_bundle = enabled;
                Ok(Change {
                    message: format!("system CA bundle {}", if enabled { "on" } else { "off" }),
                    versioned: true,
                })
            }),
            Request::CaGenerate { common_name } => self.change(uid, |st, _| {
                let name = common_name.unwrap_or_else(|| "tlsgate decryption CA".into());
                let ca = DecryptionCa::generate(&CaOptions::with_common_name(name), UnixTime::now())
                    .map_err(|e| No(ErrorCode::Internal, format!("generating the CA: {e}")))?;
                let message = format!(
                    "decryption CA generated: {} (SHA-256 {}); clients must trust it: tlsgatectl ca export",
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord::with_key(ca.cert_pem(), ca.key_pkcs8_pem()));
                Ok(Change { message, versioned: true })
            }),
            Request::CaImport { cert, key } => self.change(uid, |st, _| {
                let cert = b64(&cert).map_err(|e| invalid(format!("certificate: {e}")))?;
                let key = b64(&key).map_err(|e| invalid(format!("key: {e}")))?;
                let ca = DecryptionCa::import(&cert, &key, UnixTime::now())
                    .map_err(|e| invalid(format!("decryption CA refused: {e}")))?;
                // The decryption CA must not be trusted for servers: a trust entry that
                // is this CA, or that it issued, is removed first.
                let own = ca.summary();
                for r in &st.trust {
                    let Some(s) = b64(&r.der).ok().and_then(|d| summarize(&d).ok()) else { continue };
                    if s.fingerprint == own.fingerprint || s.issuer == own.subject {
                        return Err(invalid(format!(
                            "decryption CA refused: trust entry {:?} ({}) is {} it; remove it first \
                             (tlsgatectl trust remove {:?}): the appliance's own CA must not vouch for servers",
                            r.name,
                            s.subject,
                            if s.fingerprint == own.fingerprint { "" } else { "issued by" },
                            r.name
                        )));
                    }
                }
                let message = format!(
                    "decryption CA imported: {} (SHA-256 {})",
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord::with_key(ca.cert_pem(), ca.key_pkcs8_pem()));
                Ok(Change { message, versioned: true })
            }),
            Request::CaImportPkcs11 { uri, cert, common_name } => self.change(uid, |st, _| {
                let parsed = crate::pkcs11::Pkcs11Uri::parse(&uri).map_err(|e| invalid(format!("--pkcs11: {e}")))?;
                if !self.cfg.pkcs11_modules.iter().any(|m| m.as_os_str() == parsed.module.as_str()) {
                    return Err(No(
                        ErrorCode::PermissionDenied,
                        format!(
                            "--pkcs11: module-path {} is not in control.pkcs11_modules (the root-owned \
                             configuration lists the PKCS#11 libraries this process may load)",
                            parsed.module
                        ),
                    ));
                }
                let key = crate::pkcs11::key_for(&uri).map_err(|e| invalid(format!("--pkcs11: {e}")))?;
                let now = UnixTime::now();
                let ca = match cert {
                    Some(c) => {
                        let c = b64(&c).map_err(|e| invalid(format!("certificate: {e}")))?;
                        DecryptionCa::import_with_remote_key(&c, Box::new(key), now)
                    }
                    None => DecryptionCa::generate_with_remote_key(
                        &CaOptions::with_common_name(common_name.unwrap_or_else(|| "tlsgate decryption CA".into())),
                        Box::new(key),
                        now,
                    ),
                }
                .map_err(|e| invalid(format!("decryption CA refused: {e}")))?;
                let message = format!(
                    "decryption CA with its key on PKCS#11 token {:?} (object {:?}): {} (SHA-256 {})",
                    parsed.token,
                    parsed.object,
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord { cert_pem: ca.cert_pem(), key_pem: String::new(), pkcs11: Some(uri) });
                Ok(Change { message, versioned: true })
            }),
            Request::CaExport { der } => match self.state().decryption_ca() {
                None => Response::error(
                    ErrorCode::NotFound,
                    "no decryption CA: tlsgatectl ca generate (or ca import)",
                ),
                Some(ca) => Response::Ca {
                    info: cert_info("", "decryption-ca", ca.summary(), None),
                    cert: Some(if der { to_b64(ca.cert_der().as_ref()) } else { ca.cert_pem() }),
                },
            },
            Request::PolicyShow { candidate } => {
                let st = self.state();
                let text = if candidate { st.candidate_policy() } else { st.running_policy() };
                Response::Policy {
                    version: st.policies.last().map_or(0, |p| p.version),
                    text: text.to_string(),
                    candidate_differs: st.candidate.is_some(),
                }
            }
            Request::PolicyLoad { text } => self.change(uid, |st, _| {
                let mut store = st.policy_store().map_err(invalid)?;
                store.load_candidate_json(&text).map_err(|e| invalid(format!("policy refused: {e}")))?;
                let lines = store.diff_candidate().lines().len();
                st.set_policies(&store);
                Ok(Change {
                    message: format!(
                        "candidate loaded ({lines} change(s) from the running policy); commit to run it"
                    ),
                    versioned: false,
                })
            }),
            Request::PolicyCheck { text } => match Policy::from_json(&text) {
                Ok(p) => Response::Diff {
                    lines: PolicyDiff::between(
                        &self
                            .state()
                            .policy_store()
                            .map_or_else(|_| Policy::default(), |s| s.running().policy().clone()),
                        &p,
                    )
                    .lines(),
                    warnings: p.warnings(),
                },
                Err(e) => Response::error(ErrorCode::Invalid, format!("policy refused: {e}")),
            },
            Request::PolicyDiff { text } => {
                let st = self.state();
                let store = match st.policy_store() {
                    Ok(s) => s,
                    Err(e) => return Response::error(ErrorCode::Internal, e),
                };
                match text {
                    None => Response::Diff {
                        lines: store.diff_candidate().lines(),
                        warnings: store.candidate().warnings(),
                    },
                    Some(t) => match Policy::from_json(&t) {
                        Ok(p) => Response::Diff {
                            lines: PolicyDiff::between(store.running().policy(), &p).lines(),
                            warnings: p.warnings(),
                        },
                        Err(e) => Response::error(ErrorCode::Invalid, format!("policy refused: {e}")),
                    },
                }
            }
            Request::PolicyRuleAdd { rule, above, below } => self.change(uid, |st, _| {
                let rule: Rule = serde_json::from_value(rule).map_err(|e| invalid(format!("rule: {e}")))?;
                let at = match (above, below) {
                    (Some(_), Some(_)) => return Err(invalid("give --above or --below, not both")),
                    (Some(a), None) => Position::Above(a),
                    (None, Some(b)) => Position::Below(b),
                    (None, None) => Position::Top,
                };
                let mut store = st.policy_store().map_err(invalid)?;
                let name = rule.name.clone();
                let mut candidate = store.candidate().clone();
                let index =
                    candidate.insert_rule(rule, &at).map_err(|e| invalid(format!("rule {name}: {e}")))?;
                candidate.validate().map_err(|e| invalid(format!("rule {name}: {e}")))?;
                *store.candidate_mut() = candidate;
                st.set_policies(&store);
                Ok(Change {
                    message: format!(
                        "rule {name} added to the candidate at position {}; commit to run it",
                        index + 1
                    ),
                    versioned: false,
                })
            }),
            Request::PolicyRuleRemove { name } => self.change(uid, |st, _| {
                let mut store = st.policy_store().map_err(invalid)?;
                store.candidate_mut().remove_rule(&name).map_err(|e| not_found(e.to_string()))?;
                st.set_policies(&store);
                Ok(Change {
                    message: format!("rule {name} removed from the candidate; commit to run it"),
                    versioned: false,
                })
            }),
            Request::PolicyCommit => self.change(uid, |st, version| {
                let mut store = st.policy_store().map_err(invalid)?;
                let diff = store.diff_candidate().lines();
                if diff.is_empty() {
                    return Ok(Change {
                        message: "nothing to commit: the candidate is the running policy".into(),
                        versioned: false,
                    });
                }
                store.commit_as(version).map_err(|e| invalid(format!("commit refused: {e}")))?;
                st.set_policies(&store);
                Ok(Change { message: format!("policy committed: {}", diff.join("; ")), versioned: true })
            }),
            Request::PolicyRollback { version: to } => {
                self.change(uid, |st, version| {
                    if to >= st.version {
                        return Err(not_found(format!(
                            "version {to} is not an earlier version (the current one is {})",
                            st.version
                        )));
                    }
                    let mut store = st.policy_store().map_err(invalid)?;
                    // The policy that ran at `to`: the newest commit at or before it.
                    let base =
                        store.history().filter(|c| c.version <= to).map(|c| c.version).last().ok_or_else(
                            || not_found(format!("version {to} is older than the policies kept")),
                        )?;
                    store.rollback_as(base, version).map_err(|e| not_found(e.to_string()))?;
                    st.set_policies(&store);
                    Ok(Change {
                        message: format!("policy rolled back to the one of version {to}"),
                        versioned: true,
                    })
                })
            }
            Request::PolicyHistory => Response::History { entries: self.state().audit.clone() },
            Request::EventsList { since_ns, after_id, kind, host, limit } => Response::Events {
                events: self.events.list(&Filter {
                    since_ns,
                    after_id,
                    kind,
                    host,
                    limit: Some(limit.unwrap_or(100)),
                }),
            },
            Request::EventsShow { id } => match self.events.get(id) {
                Some(e) => Response::Events { events: vec![e] },
                None => Response::error(
                    ErrorCode::NotFound,
                    format!("event {id} is not among the last {} events", self.cfg.events_indexed),
                ),
            },
            Request::DataplaneHello { .. } | Request::Snapshot(_) | Request::Chain { .. } => Response::error(
                ErrorCode::Unsupported,
                "dataplane requests are only served on the dataplane's own connection",
            ),
            other => {
                Response::error(ErrorCode::Unsupported, format!("not served by tlsgate-control: {other:?}"))
            }
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
            ca: st.decryption_ca().map(|ca| cert_info("", "decryption-ca", ca.summary(), None)),
            events_logged: self.events.logged(),
            events_lost: self.events.lost(),
            device_id: self.device_id.clone(),
        }
    }

    fn license_infos(&self, st: &StateFile) -> Vec<LicenseInfo> {
        let now = now_s() as i64;
        st.licenses
            .iter()
            .zip(self.licenses(st))
            .map(|(text, checked)| {
                let parsed = parse_license(text.as_bytes()).ok();
                let p = parsed.as_ref().map(|l| l.payload().clone());
                LicenseInfo {
                    serial: p.as_ref().map_or_else(|| "?".into(), |p| p.serial.clone()),
                    features: p.as_ref().map_or_else(Vec::new, |p| p.features.clone()),
                    not_before: p.as_ref().map_or_else(String::new, |p| p.not_before.clone()),
                    not_after: p.as_ref().map_or_else(String::new, |p| p.not_after.clone()),
                    state: match checked {
                        Ok(l) => l.state_at(now).as_str().to_string(),
                        Err(e) => format!("invalid: {e}"),
                    },
                }
            })
            .collect()
    }

    fn license_load(&self, uid: u32, text: String) -> Response {
        let Some(key) = self.vendor.as_ref() else {
            return Response::error(
                ErrorCode::Invalid,
                "license refused: no vendor key is configured (control.vendor_key)",
            );
        };
        let now = now_s() as i64;
        let license = match parse_license(text.as_bytes()).and_then(|l| l.verify(key, &self.device_id, now)) {
            Ok(l) => l,
            Err(e) => return Response::error(ErrorCode::Invalid, format!("license refused: {e}")),
        };
        self.change(uid, |st, _| {
            let serial = license.payload.serial.clone();
            st.licenses
                .retain(|t| parse_license(t.as_bytes()).map_or(true, |l| l.payload().serial != serial));
            st.licenses.push(license.text.clone());
            let strong = license.has_feature(FEATURE_STRONG_CRYPTO);
            Ok(Change {
                message: format!(
                    "license {serial} loaded (features: {}; valid until {}){}",
                    license.payload.features.join(", "),
                    license.payload.not_after,
                    if strong { ": cipher profile strong on both legs" } else { "" }
                ),
                versioned: true,
            })
        })
    }

    fn trust_add(
        &self,
        uid: u32,
        data: String,
        name: Option<String>,
        kind: TrustAs,
        names: Vec<String>,
        any_name: bool,
    ) -> Response {
        let bytes = match b64(&data) {
            Ok(b) => b,
            Err(e) => return Response::error(ErrorCode::BadRequest, format!("data: {e}")),
        };
        let how = match kind {
            TrustAs::Ca => ImportAs::Ca,
            TrustAs::Pinned => ImportAs::Pinned,
            _ => ImportAs::Auto,
        };
        let scope = match (any_name, names.is_empty()) {
            (true, true) => PinScope::AnyName,
            (true, false) => {
                return Response::error(ErrorCode::Invalid, "--for and --any-name: give one or the other")
            }
            (false, true) => PinScope::OwnNames,
            (false, false) => match names.iter().map(|n| check_pin_name(n)).collect::<Result<Vec<_>, _>>() {
                Ok(n) => PinScope::Names(n),
                Err(No(code, m)) => return Response::error(code, m),
            },
        };
        self.import(uid, &bytes, name, how, &scope)
    }

    fn import(
        &self,
        uid: u32,
        bytes: &[u8],
        name: Option<String>,
        how: ImportAs,
        scope: &PinScope,
    ) -> Response {
        self.change(uid, |st, _| {
            let certs =
                parse_certificates(bytes).map_err(|e| invalid(format!("certificate refused: {e}")))?;
            if let Some(ca) = st.decryption_ca() {
                let own = ca.summary();
                for c in &certs {
                    let s =
                        summarize(c.as_ref()).map_err(|e| invalid(format!("certificate refused: {e}")))?;
                    if s.fingerprint == own.fingerprint || s.issuer == own.subject {
                        return Err(invalid(format!(
                            "certificate refused: {} is {} this appliance's decryption CA; trusting it would \
                             let the appliance's own forged certificates pass as servers",
                            s.subject,
                            if s.fingerprint == own.fingerprint { "" } else { "issued by" }
                        )));
                    }
                }
            }
            let first =
                summarize(certs[0].as_ref()).map_err(|e| invalid(format!("certificate refused: {e}")))?;
            let name = name.unwrap_or_else(|| {
                first.common_name.clone().unwrap_or_else(|| first.fingerprint.to_hex()[..16].to_string())
            });
            if st.trust.iter().any(|r| r.name == name) {
                return Err(invalid(format!(
                    "a trust entry named {name:?} exists: give another --name or remove it first"
                )));
            }
            let mut store = st.trust_store_without_system().map_err(invalid)?;
            let report =
                store.import(&name, bytes, how).map_err(|e| invalid(format!("certificate refused: {e}")))?;
            if report.added.is_empty() {
                return Ok(Change {
                    message: format!(
                        "already trusted: {}",
                        report
                            .already_present
                            .iter()
                            .map(|e| e.summary.subject.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    versioned: false,
                });
            }
            let mut what = Vec::new();
            for e in &report.added {
                let pinned = e.kind != tlsgate_certstore::TrustKind::Ca;
                let names = match scope {
                    _ if !pinned => Vec::new(),
                    PinScope::Names(n) => n.clone(),
                    PinScope::AnyName => Vec::new(),
                    PinScope::OwnNames => {
                        let own: Vec<String> = e
                            .summary
                            .dns_names
                            .iter()
                            .map(|d| d.to_ascii_lowercase())
                            .chain(e.summary.ip_addresses.iter().map(ToString::to_string))
                            .collect();
                        if own.is_empty() {
                            return Err(invalid(format!(
                                "{} would be pinned, and it names no server (no subjectAltName): give \
                                 --for NAME (the name clients use; repeatable), --any-name, or --as ca to \
                                 trust it as a CA that anchors chains",
                                e.summary.subject
                            )));
                        }
                        own
                    }
                };
                let scope_text = match (pinned, names.is_empty()) {
                    (false, _) => String::new(),
                    (true, true) => ", for any name".to_string(),
                    (true, false) => format!(", for {}", names.join(", ")),
                };
                st.trust.push(TrustRecord {
                    name: name.clone(),
                    kind: if pinned { "pinned" } else { "ca" }.into(),
                    der: to_b64(e.der.as_ref()),
                    names,
                });
                what.push(format!(
                    "{} {} ({}){scope_text}",
                    e.kind.as_str(),
                    e.summary.subject,
                    &e.summary.fingerprint.to_hex()[..16]
                ));
            }
            Ok(Change { message: format!("trust entry {name} added: {}", what.join(", ")), versioned: true })
        })
    }

    fn trust_from_event(&self, uid: u32, event_id: u64, name: Option<String>, any_name: bool) -> Response {
        let Some(event) = self.events.get(event_id) else {
            return Response::error(
                ErrorCode::NotFound,
                format!("event {event_id} is not among the last {} events", self.cfg.events_indexed),
            );
        };
        let Some(sha) = event["chain_sha256"].as_str() else {
            return Response::error(
                ErrorCode::NotFound,
                format!("event {event_id} kept no certificate chain (only aborts of the server leg do)"),
            );
        };
        let Some(pem) = self.events.chain(sha) else {
            return Response::error(
                ErrorCode::NotFound,
                format!(
                    "the chain of event {event_id} (SHA-256 {sha}) is no longer held (the newest {} are kept): \
                     connect once more to reproduce the failure and run this again, or import the server's \
                     certificate file with tlsgatectl trust add FILE",
                    self.cfg.chains_kept
                ),
            );
        };
        let certs = match parse_certificates(pem.as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                return Response::error(ErrorCode::Internal, format!("the kept chain cannot be read: {e}"))
            }
        };
        let leaf: &CertificateDer<'_> = &certs[0];
        let server = event["sni"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map_or_else(|| event["dst_ip"].as_str().unwrap_or("server").to_string(), str::to_string);
        let name = name.unwrap_or_else(|| format!("{server} (event {event_id})"));
        // For the name the client asked for (or the address it went to), which is
        // what the event saw fail: the forged leaf takes the client's SNI, so a pin
        // for any name would let whoever holds this certificate's key be any server.
        let scope = if any_name {
            PinScope::AnyName
        } else {
            match check_pin_name(&server) {
                Ok(n) => PinScope::Names(vec![n]),
                Err(No(code, m)) => return Response::error(code, format!("event {event_id}: {m}")),
            }
        };
        self.import(uid, leaf.as_ref(), Some(name), ImportAs::Pinned, &scope)
    }

    fn trust_list(&self, one: Option<String>) -> Response {
        let st = self.state();
        let store = match st.trust_store_without_system() {
            Ok(s) => s,
            Err(e) => return Response::error(ErrorCode::Internal, e),
        };
        let system_cas = if st.system_bundle {
            tlsgate_certstore::TrustStore::with_system_bundle().map_or(0, |s| s.system_entries().len())
        } else {
            0
        };
        let entries: Vec<CertInfo> = match &one {
            None => store.entries().iter().map(|e| entry_info(e, false)).collect(),
            Some(n) => store.find(n).into_iter().map(|e| entry_info(e, true)).collect(),
        };
        if one.is_some() && entries.is_empty() {
            return Response::error(
                ErrorCode::NotFound,
                format!("no trust entry named {:?} (nor with that fingerprint)", one.unwrap_or_default()),
            );
        }
        Response::Trust { system_bundle: st.system_bundle, system_cas, entries }
    }

    /// A chain the dataplane kept for an abort.
    pub fn chain_from_dataplane(&self, sha256: &str, pem: &str) -> Response {
        // Hashed again here: `trust add --from-event` pins what is kept under the
        // event's hash, so a chain kept under a hash that is not its own would
        // let whoever sent it choose what gets pinned.
        let chain = match parse_certificates(pem.as_bytes()) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return Response::error(ErrorCode::Invalid, format!("chain {sha256}: no certificate")),
            Err(e) => return Response::error(ErrorCode::Invalid, format!("chain {sha256}: {e}")),
        };
        let actual = tlsgate_certstore::chain_sha256(&chain).to_hex();
        if !actual.eq_ignore_ascii_case(sha256) {
            return Response::error(
                ErrorCode::Invalid,
                format!("chain sent as {sha256} hashes to {actual}: refused, not kept"),
            );
        }
        match self.events.store_chain(&actual, pem) {
            Ok(()) => Response::Done { message: format!("chain {actual} kept"), version: None },
            Err(e) => Response::error(ErrorCode::Invalid, e),
        }
    }

    /// Expiry of the decryption CA and of the licenses (unix seconds), for metrics.
    pub fn expiries(&self) -> (Option<i64>, Vec<(String, i64, bool)>) {
        let st = self.state();
        let now = now_s() as i64;
        let ca = st.decryption_ca().map(|c| c.summary().not_after);
        let lic = self
            .licenses(&st)
            .into_iter()
            .flatten()
            .map(|l| (l.payload.serial.clone(), l.not_after, l.is_valid_at(now)))
            .collect();
        (ca, lic)
    }
}
