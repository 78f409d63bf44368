//! Server certificate verification: webpki decides, our own analysis explains.
//!
//! ```text
//!   presented chain ──► pinned? (SHA-256 of the leaf) ── yes ─► dates ─► Verified::Pinned
//!                          │ no
//!                          ▼
//!                    webpki: chain to a CA of the snapshot, serverAuth, dates, name
//!                          │ ok ─────────────────────────────────────► Verified::Chain
//!                          ▼ refused
//!                    analysis (OpenSSL's order) ─► first error: code, depth, subject, issuer
//!                          │ nothing found
//!                          ▼
//!                    webpki's error mapped to the nearest OpenSSL code
//! ```
//!
//! webpki is the authority on accept/refuse; it reports several distinct failures as
//! one `UnknownIssuer`, so [`analysis`] rebuilds the chain the way OpenSSL does
//! (trusted store first, then the presented certificates) and walks OpenSSL's checks
//! in OpenSSL's order to find the first error `openssl verify` would print.

mod analysis;
pub(crate) mod ocsp;

use std::fmt;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cert::{self, chain_sha256, Fingerprint};
use crate::name;
use crate::trust::TrustSnapshot;

/// The verify codes travel in event records, so their table is the api crate's.
pub use tlsgate_api::VerifyReason;

/// How a server chain was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verified {
    /// The chain leads to a trusted CA and the certificate is valid for the name.
    Chain,
    /// The server certificate is pinned (no chain or name check).
    Pinned {
        /// The trust store entry's name.
        name: String,
    },
}

/// Why and where a server chain was refused, and what was presented: everything the
/// TLS Abort event and the `tls_proxy.log` lines need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyFailure {
    /// The OpenSSL-style reason.
    pub reason: VerifyReason,
    /// Depth of the certificate the reason is about (0 = the server's own certificate).
    pub depth: usize,
    /// Subject of that certificate, OpenSSL one-line form.
    pub subject: String,
    /// Issuer of that certificate, OpenSSL one-line form.
    pub issuer: String,
    /// Subject of the server certificate (depth 0).
    pub leaf_subject: String,
    /// Issuer of the server certificate (depth 0).
    pub leaf_issuer: String,
    /// The name verified: the SNI, or the destination IP address when there was none.
    pub server_name: String,
    /// The chain as presented by the server, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// SHA-256 of the presented chain ([`chain_sha256`]).
    pub chain_sha256: Fingerprint,
    /// SHA-256 of the server certificate: what pinning it would add.
    pub leaf_fingerprint: Fingerprint,
    /// webpki's own verdict, when it says more than the code.
    pub detail: Option<String>,
}

impl VerifyFailure {
    /// OpenSSL's code.
    pub fn code(&self) -> u32 {
        self.reason.code()
    }

    /// The seed's log lines: `Certificate verification failure: self signed
    /// certificate (code 18, depth 0)`, `Subject: ...`, `Issuer: ...`.
    pub fn log_lines(&self) -> [String; 3] {
        [
            format!(
                "Certificate verification failure: {} (code {}, depth {})",
                self.reason.text(),
                self.reason.code(),
                self.depth
            ),
            format!("Subject: {}", self.subject),
            format!("Issuer: {}", self.issuer),
        ]
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate verify failed: {} (code {}, depth {}) subject {} issuer {} for {}",
            self.reason.text(),
            self.reason.code(),
            self.depth,
            self.subject,
            self.issuer,
            self.server_name
        )
    }
}

impl std::error::Error for VerifyFailure {}

/// Verifies a server's chain for `server_name` at `now` against `trust`.
///
/// `end_entity` is the server certificate, `intermediates` the rest of what the
/// server sent, in its order.
pub fn verify_server_chain(
    trust: &TrustSnapshot,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<Verified, Box<VerifyFailure>> {
    verify_server_chain_checking(
        trust,
        end_entity,
        intermediates,
        server_name,
        now,
        RevocationCheck::default(),
    )
}

/// The certificates a verified chain's path is made of: what a CRL may be
/// fetched for and who may sign it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPath {
    /// The server certificate, then the intermediates webpki's path uses, in
    /// order (certificates the server sent that the path does not use are left out).
    pub certs: Vec<CertificateDer<'static>>,
    /// The certificate of the trust store's CA that anchors the path.
    pub anchor: CertificateDer<'static>,
}

/// The path of a chain that verifies for `server_name` through a CA of `trust`
/// ([`Verified::Chain`]); `None` for a pinned certificate; the failure otherwise.
pub fn verified_path(
    trust: &TrustSnapshot,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<Option<ServerPath>, Box<VerifyFailure>> {
    match verify_server_chain(trust, end_entity, intermediates, server_name, now)? {
        Verified::Chain => {}
        Verified::Pinned { .. } => return Ok(None),
    }
    let unexplained = || {
        let finding = analysis::fallback(None, end_entity.as_ref(), intermediates, server_name);
        failure(finding, end_entity, intermediates, server_name, Some("no path to a CA of the store".into()))
    };
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| unexplained())?;
    // The same options as the server leg's verification, so that the same path
    // is found (a revoked intermediate makes webpki try another one).
    let crls: Vec<&webpki::CertRevocationList<'_>> = trust.crls.iter().collect();
    let crl_options = chain_crl_options(&crls);
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            crl_options,
            None,
        )
        .map_err(|_| unexplained())?;
    let index = trust.anchors.iter().position(|a| std::ptr::eq(a, path.anchor())).ok_or_else(unexplained)?;
    let mut certs = vec![end_entity.clone().into_owned()];
    certs.extend(path.intermediate_certificates().map(|c| c.der().into_owned()));
    Ok(Some(ServerPath { certs, anchor: trust.ca_certs[index].clone() }))
}

/// What the server leg knows and asks about revocation beyond the store's CRLs
/// (which are always checked, for every certificate of the chain).
#[derive(Clone, Copy, Debug, Default)]
pub struct RevocationCheck<'a> {
    /// The OCSP response the server stapled (empty: none). A valid one that says
    /// revoked refuses the chain (code 23); one that does not verify, is stale or
    /// names another certificate proves nothing (status unknown).
    pub staple: &'a [u8],
    /// Refuse a chain whose server certificate has no proved status — neither a
    /// good staple nor a fresh CRL of its issuer — with code 3 ("unable to get
    /// certificate CRL"): the policy's `unknown_status` is not `allow`.
    pub require_status: bool,
}

/// As [`verify_server_chain`], with the server's stapled OCSP response and the
/// policy's demand for a known revocation status. Pinned certificates are trusted
/// as they are: no revocation check.
pub fn verify_server_chain_checking(
    trust: &TrustSnapshot,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
    revocation: RevocationCheck<'_>,
) -> Result<Verified, Box<VerifyFailure>> {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let leaf_fp = Fingerprint::of(end_entity.as_ref());

    if let Some(finding) = analysis::issued_by_refused(trust, end_entity, intermediates) {
        return Err(failure(finding, end_entity, intermediates, server_name, None));
    }

    let mut pin_elsewhere = None;
    if let Some(pin) = trust.pinned.get(&leaf_fp) {
        if pin.covers(&server_name_text(server_name)) {
            // Trusted as it is; only its dates still count, as for a certificate
            // in OpenSSL's -CAfile.
            return match analysis::pinned_dates(end_entity.as_ref(), now_secs) {
                None => Ok(Verified::Pinned { name: pin.name.clone() }),
                Some(finding) => Err(failure(finding, end_entity, intermediates, server_name, None)),
            };
        }
        // Pinned for other names: verified as if it were not pinned.
        pin_elsewhere = Some(format!(
            "pinned as {:?} for {} only, not for {}",
            pin.name,
            pin.names.join(", "),
            server_name_text(server_name)
        ));
    }
    verify_unpinned(trust, end_entity, intermediates, server_name, now, now_secs, &leaf_fp, revocation)
        .map_err(|mut f| {
            if let Some(note) = pin_elsewhere {
                f.detail = Some(f.detail.map_or(note.clone(), |d| format!("{note}; {d}")));
            }
            f
        })
}

#[allow(clippy::too_many_arguments)]
fn verify_unpinned(
    trust: &TrustSnapshot,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
    now_secs: i64,
    leaf_fp: &Fingerprint,
    revocation: RevocationCheck<'_>,
) -> Result<Verified, Box<VerifyFailure>> {
    if trust.is_trusted_ca(leaf_fp) {
        // The server presents a certificate that is itself a trusted CA (a
        // self-signed appliance certificate imported as a CA). webpki refuses a CA as
        // end entity; OpenSSL trusts it directly and still checks purpose, name and
        // dates, which the analysis does.
        let name_ok = webpki::EndEntityCert::try_from(end_entity)
            .map(|ee| ee.verify_is_valid_for_subject_name(server_name).is_ok())
            .unwrap_or(false);
        return match analysis::first_error(
            trust,
            end_entity.as_ref(),
            intermediates,
            server_name,
            name_ok,
            now_secs,
        ) {
            None => Ok(Verified::Chain),
            Some(finding) => Err(failure(finding, end_entity, intermediates, server_name, None)),
        };
    }

    let webpki_result = webpki_verify(trust, end_entity, intermediates, server_name, now, revocation);
    let (chain_err, name_ok) = match webpki_result {
        WebpkiVerdict::Ok => return Ok(Verified::Chain),
        WebpkiVerdict::Status(reason, detail) => {
            let finding = match cert::parse_der(end_entity.as_ref()) {
                Ok(leaf) => analysis::Finding::at(reason, 0, &leaf),
                Err(_) => analysis::fallback(None, end_entity.as_ref(), intermediates, server_name),
            };
            return Err(failure(finding, end_entity, intermediates, server_name, Some(detail)));
        }
        WebpkiVerdict::Chain(e, name_ok) => (Some(e), name_ok),
        WebpkiVerdict::Name(e) => (Some(e), false),
    };
    let finding =
        analysis::first_error(trust, end_entity.as_ref(), intermediates, server_name, name_ok, now_secs)
            .unwrap_or_else(|| {
                analysis::fallback(chain_err.as_ref(), end_entity.as_ref(), intermediates, server_name)
            });
    let detail = chain_err.map(|e| format!("webpki: {e}"));
    Err(failure(finding, end_entity, intermediates, server_name, detail))
}

enum WebpkiVerdict {
    Ok,
    /// Chain refused; whether the name matched.
    Chain(webpki::Error, bool),
    /// Chain accepted, name refused.
    Name(webpki::Error),
    /// Chain and name accepted, the server certificate's revocation status
    /// refused it: revoked (by its staple), or unknown where it must be known.
    Status(VerifyReason, String),
}

fn webpki_verify(
    trust: &TrustSnapshot,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
    revocation: RevocationCheck<'_>,
) -> WebpkiVerdict {
    let ee = match webpki::EndEntityCert::try_from(end_entity) {
        Ok(ee) => ee,
        Err(e) => return WebpkiVerdict::Chain(e, false),
    };
    let name = ee.verify_is_valid_for_subject_name(server_name);
    // Revocation by the store's CRLs, for every certificate of the chain a list
    // is authoritative for; no list for a certificate: not refused for that.
    let crls: Vec<&webpki::CertRevocationList<'_>> = trust.crls.iter().collect();
    let crl_options = chain_crl_options(&crls);
    let chain = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust.anchors,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        crl_options,
        None,
    );
    match (chain, name) {
        (Ok(path), Ok(())) => {
            let issuer_spki = path.issuer_spki();
            match leaf_status(trust, &ee, end_entity, issuer_spki.as_ref(), intermediates, now, revocation) {
                LeafStatus::Proved | LeafStatus::Unchecked => WebpkiVerdict::Ok,
                LeafStatus::Revoked(why) => WebpkiVerdict::Status(VerifyReason::CertRevoked, why),
                LeafStatus::Unknown(why) => WebpkiVerdict::Status(VerifyReason::UnableToGetCrl, why),
            }
        }
        (Ok(path), Err(e)) => {
            // A staple that proves the certificate revoked says more than the
            // name: a revoked certificate is never decrypted under `untrust`.
            let issuer_spki = path.issuer_spki();
            let staple_only = RevocationCheck { require_status: false, ..revocation };
            match leaf_status(trust, &ee, end_entity, issuer_spki.as_ref(), intermediates, now, staple_only) {
                LeafStatus::Revoked(why) => WebpkiVerdict::Status(VerifyReason::CertRevoked, why),
                _ => WebpkiVerdict::Name(e),
            }
        }
        (Err(e), name) => WebpkiVerdict::Chain(e, name.is_ok()),
    }
}

/// The server leg's CRL check: every certificate of the chain a list is
/// authoritative for; no list for one, or a list past its nextUpdate: not
/// refused for that (a listed certificate is refused by any list).
fn chain_crl_options<'a>(
    crls: &'a [&'a webpki::CertRevocationList<'a>],
) -> Option<webpki::RevocationOptions<'a>> {
    webpki::RevocationOptionsBuilder::new(crls).ok().map(|b| {
        b.with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Allow)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build()
    })
}

/// The revocation status of a server certificate whose chain verified.
enum LeafStatus {
    /// Good by a valid staple or a fresh CRL of its issuer.
    Proved,
    /// Not asked for (and no staple said revoked).
    Unchecked,
    Revoked(String),
    Unknown(String),
}

fn leaf_status(
    trust: &TrustSnapshot,
    ee: &webpki::EndEntityCert<'_>,
    end_entity: &CertificateDer<'_>,
    issuer_spki: &[u8],
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    revocation: RevocationCheck<'_>,
) -> LeafStatus {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let staple = (!revocation.staple.is_empty())
        .then(|| ocsp::staple_status(revocation.staple, end_entity.as_ref(), issuer_spki, now_secs));
    let staple_note = match staple {
        Some(ocsp::StapleStatus::Revoked) => return LeafStatus::Revoked("OCSP staple: revoked".into()),
        Some(ocsp::StapleStatus::Good) => return LeafStatus::Proved,
        Some(ocsp::StapleStatus::Unknown(why)) => format!("OCSP staple proves nothing ({why})"),
        None => "no OCSP staple".to_owned(),
    };
    if !revocation.require_status {
        return LeafStatus::Unchecked;
    }
    // A CRL proves the status when it is authoritative for the server
    // certificate, signed by its issuer and not past its nextUpdate.
    let crls: Vec<&webpki::CertRevocationList<'_>> = trust.crls.iter().collect();
    let Ok(builder) = webpki::RevocationOptionsBuilder::new(&crls) else {
        return LeafStatus::Unknown(format!("{staple_note}, no CRL"));
    };
    let options = builder
        .with_depth(webpki::RevocationCheckDepth::EndEntity)
        .with_status_policy(webpki::UnknownStatusPolicy::Deny)
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    match ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust.anchors,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        Some(options),
        None,
    ) {
        Ok(_) => LeafStatus::Proved,
        Err(webpki::Error::CertRevoked) => LeafStatus::Revoked("revoked by a CRL".into()),
        Err(e) => LeafStatus::Unknown(format!("{staple_note}, no usable CRL ({e})")),
    }
}

fn failure(
    finding: analysis::Finding,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    detail: Option<String>,
) -> Box<VerifyFailure> {
    let mut chain = Vec::with_capacity(1 + intermediates.len());
    chain.push(end_entity.clone().into_owned());
    chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
    let (leaf_subject, leaf_issuer) = match cert::parse_der(end_entity.as_ref()) {
        Ok(c) => (name::openssl_oneline(c.subject()), name::openssl_oneline(c.issuer())),
        Err(_) => (String::new(), String::new()),
    };
    Box::new(VerifyFailure {
        reason: finding.reason,
        depth: finding.depth,
        subject: finding.subject,
        issuer: finding.issuer,
        leaf_subject,
        leaf_issuer,
        server_name: server_name_text(server_name),
        chain_sha256: chain_sha256(&chain),
        leaf_fingerprint: Fingerprint::of(end_entity.as_ref()),
        chain,
        detail,
    })
}

/// The name as text: a DNS name as is, an IP address in its usual form.
pub fn server_name_text(server_name: &ServerName<'_>) -> String {
    match server_name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// `UnixTime` for `secs` seconds since the epoch (a convenience for callers and tests).
pub fn unix_time(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}
