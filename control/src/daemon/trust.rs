//! The trust store: add (files, events), list, show, remove, the system bundle; abort chains kept.

use super::*;

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
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn trust_request(&self, req: Request, uid: u32) -> Response {
        let _ = uid;
        match req {
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
            other => unsupported(other),
        }
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
            // From the certificate alone: a token that is down must not open
            // this guard.
            if let Some(own) = st.ca_summary() {
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
                if !pinned && matches!(scope, PinScope::Names(_) | PinScope::AnyName) {
                    // A CA is trusted for what it issues: names would restrict nothing.
                    return Err(invalid(format!(
                        "{} is a CA: names (and --any-name) apply to pinned server certificates only; \
                         import it without them, or pin the server's own certificate",
                        e.summary.subject
                    )));
                }
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
        let Some(sha) = event.chain_sha256.as_deref() else {
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
        let server = if event.sni.is_empty() { event.dst_ip.clone() } else { event.sni.clone() };
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
            Err(e) => return Response::error(ErrorCode::Internal, e.to_string()),
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
            Err(e) => Response::error(ErrorCode::Invalid, e.to_string()),
        }
    }
}
