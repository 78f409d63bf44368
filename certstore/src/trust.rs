//! The trust store: CA certificates (the system bundle and imported CAs) and pinned
//! server certificates.
//!
//! A [`TrustStore`] is the editable set the control plane keeps; a [`TrustSnapshot`]
//! is the immutable, indexed form a verifier reads, built once per configuration
//! version and shared (`Arc`) by every worker.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::cert::{self, CertSummary, Fingerprint};
use crate::error::{Error, Result};
use crate::name;

/// Debian's bundle of the CAs that `ca-certificates` trusts.
pub const SYSTEM_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a trust store entry is trusted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustKind {
    /// A CA from the system bundle: anchors chains.
    SystemCa,
    /// An imported CA: anchors chains.
    Ca,
    /// A pinned server certificate: trusted as the server certificate it is (same
    /// SHA-256), without a chain, for the names of its entry ([`TrustEntry::names`];
    /// none: any name).
    Pinned,
}

impl TrustKind {
    /// `system-ca`, `ca` or `pinned`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SystemCa => "system-ca",
            Self::Ca => "ca",
            Self::Pinned => "pinned",
        }
    }
}

/// How [`TrustStore::import`] files certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportAs {
    /// CA certificates (basicConstraints CA:TRUE) that are not self-signed as CAs;
    /// self-signed certificates and leaves pinned. (A self-signed CA:TRUE
    /// certificate is what appliances present as their own server certificate:
    /// anchoring chains with it takes [`ImportAs::Ca`], an explicit choice.)
    Auto,
    /// Every certificate as a CA; a certificate that is not a CA is refused.
    Ca,
    /// Every certificate pinned as a server certificate.
    Pinned,
}

/// One certificate of the trust store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TrustEntry {
    /// The operator's name for it (for the system bundle: the subject).
    pub name: String,
    /// What it is trusted for.
    pub kind: TrustKind,
    /// Subject, issuer, fingerprint, validity.
    pub summary: CertSummary,
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// For a pinned certificate: the server names (DNS names, or IP addresses
    /// as text) it is trusted for; empty: any name.
    pub names: Vec<String>,
}

/// What an import did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ImportReport {
    /// Entries added.
    pub added: Vec<TrustEntry>,
    /// Certificates of the input already in the store with the same kind (left as they were).
    pub already_present: Vec<TrustEntry>,
}

/// The editable trust store.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    system_enabled: bool,
    system: Vec<TrustEntry>,
    entries: Vec<TrustEntry>,
    /// Certificates whose chains are refused ([`TrustStore::refuse_chains_to`]).
    refused: Vec<CertificateDer<'static>>,
    /// Certificate revocation lists (DER), checked for every certificate of a
    /// chain they are authoritative for ([`TrustStore::add_crl`]).
    crls: Vec<Vec<u8>>,
}

impl TrustStore {
    /// An empty store with the system bundle off.
    pub fn without_system_bundle() -> Self {
        Self::default()
    }

    /// A store with the system bundle ([`SYSTEM_BUNDLE_PATH`]) loaded and on: the default.
    pub fn with_system_bundle() -> Result<Self> {
        let mut store = Self::default();
        store.load_system_bundle(SYSTEM_BUNDLE_PATH)?;
        Ok(store)
    }

    /// Loads (or reloads) the system bundle from `path` and turns it on. Returns
    /// how many CAs it holds. Certificates of the bundle that cannot serve as trust
    /// anchors are skipped.
    pub fn load_system_bundle(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        let certs = cert::parse_certificates(&bytes)?;
        let mut system = Vec::with_capacity(certs.len());
        let mut seen = HashSet::new();
        for der in certs {
            if webpki::anchor_from_trusted_cert(&der).is_err() {
                continue;
            }
            let Ok(summary) = cert::summarize(der.as_ref()) else { continue };
            if seen.insert(summary.fingerprint) {
                system.push(TrustEntry {
                    name: summary.subject.clone(),
                    kind: TrustKind::SystemCa,
                    summary,
                    der,
                    names: Vec::new(),
                });
            }
        }
        self.system = system;
        self.system_enabled = true;
        Ok(self.system.len())
    }

    /// Turns the system bundle on or off. Turning it on loads [`SYSTEM_BUNDLE_PATH`]
    /// if no bundle was loaded yet.
    pub fn set_system_bundle(&mut self, enabled: bool) -> Result<()> {
        if enabled && self.system.is_empty() {
            self.load_system_bundle(SYSTEM_BUNDLE_PATH)?;
        }
        self.system_enabled = enabled;
        Ok(())
    }

    /// Whether the system bundle is on.
    pub fn system_bundle_enabled(&self) -> bool {
        self.system_enabled
    }

    /// The system bundle's CAs (whether on or off).
    pub fn system_entries(&self) -> &[TrustEntry] {
        &self.system
    }

    /// Imported CAs and pinned server certificates, in import order.
    pub fn entries(&self) -> &[TrustEntry] {
        &self.entries
    }

    /// Imports every certificate of `input` (PEM or DER, one or a bundle) under
    /// `name`; pinned ones for any name. Garbage, an unparsable certificate, or
    /// (with [`ImportAs::Ca`]) a certificate that is not a CA refuses the whole
    /// input, and nothing changes.
    pub fn import(&mut self, name: &str, input: &[u8], how: ImportAs) -> Result<ImportReport> {
        self.import_for(name, input, how, &[])
    }

    /// [`TrustStore::import`], with the certificates it pins trusted only for
    /// `names` (DNS names or IP addresses as text, compared without case; empty:
    /// any name).
    pub fn import_for(
        &mut self,
        name: &str,
        input: &[u8],
        how: ImportAs,
        names: &[String],
    ) -> Result<ImportReport> {
        check_name(name)?;
        let certs = cert::parse_certificates(input)?;
        let mut planned = Vec::with_capacity(certs.len());
        for der in certs {
            let summary = cert::summarize(der.as_ref())?;
            let kind = match how {
                ImportAs::Pinned => TrustKind::Pinned,
                ImportAs::Ca if !summary.is_ca => return Err(Error::NotCa { subject: summary.subject }),
                ImportAs::Ca => TrustKind::Ca,
                ImportAs::Auto if summary.is_ca && !summary.self_issued => TrustKind::Ca,
                ImportAs::Auto => TrustKind::Pinned,
            };
            if kind == TrustKind::Ca {
                webpki::anchor_from_trusted_cert(&der).map_err(|e| Error::BadCertificate {
                    index: planned.len() + 1,
                    reason: format!("cannot serve as a trust anchor: {e}"),
                })?;
            }
            let names = if kind == TrustKind::Pinned { names.to_vec() } else { Vec::new() };
            planned.push(TrustEntry { name: name.to_owned(), kind, summary, der, names });
        }
        let mut report = ImportReport::default();
        for entry in planned {
            let existing = self
                .entries
                .iter()
                .find(|e| e.kind == entry.kind && e.summary.fingerprint == entry.summary.fingerprint);
            match existing {
                Some(e) => report.already_present.push(e.clone()),
                None => {
                    self.entries.push(entry.clone());
                    report.added.push(entry);
                }
            }
        }
        Ok(report)
    }

    /// Pins one server certificate (DER), e.g. the leaf of the chain an aborted
    /// handshake recorded in [`crate::VerifyFailure::chain`]: the one-command form of
    /// the seed's fix.
    pub fn pin(&mut self, name: &str, der: &CertificateDer<'_>) -> Result<ImportReport> {
        self.import(name, der.as_ref(), ImportAs::Pinned)
    }

    /// Adds a certificate revocation list (DER): a certificate it lists is
    /// refused with [`crate::VerifyReason::CertRevoked`] (OpenSSL's code 23). A
    /// certificate no list is authoritative for is not refused for that; a list
    /// past its nextUpdate still counts (what it lists stays revoked; fetching a
    /// fresh one is the control plane's).
    pub fn add_crl(&mut self, der: &[u8]) -> Result<()> {
        webpki::OwnedCertRevocationList::from_der(der).map_err(|e| Error::Crl(format!("{e:?}")))?;
        self.crls.push(der.to_vec());
        Ok(())
    }

    /// How many CRLs the store holds.
    pub fn crl_count(&self) -> usize {
        self.crls.len()
    }

    /// Chains that contain `ca` or name it as an issuer are refused
    /// ([`crate::VerifyReason::OwnDecryptionCa`]), whatever else is trusted: the
    /// appliance's own decryption CA (a loop, or a forged leaf replayed).
    pub fn refuse_chains_to(&mut self, ca: &CertificateDer<'_>) {
        self.refused.push(ca.clone().into_owned());
    }

    /// Removes the entries named `selector`, or the entry whose SHA-256 fingerprint
    /// it is (64 hex digits, colons allowed). System CAs cannot be removed (turn the
    /// bundle off instead). Returns what was removed.
    pub fn remove(&mut self, selector: &str) -> Result<Vec<TrustEntry>> {
        let by_fp = selector.parse::<Fingerprint>().ok();
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.name == selector || Some(e.summary.fingerprint) == by_fp);
        self.entries = kept;
        if removed.is_empty() {
            return Err(Error::NotFound(selector.to_owned()));
        }
        Ok(removed)
    }

    /// Entries whose name is `selector` or whose fingerprint it is.
    pub fn find(&self, selector: &str) -> Vec<&TrustEntry> {
        let by_fp = selector.parse::<Fingerprint>().ok();
        self.entries.iter().filter(|e| e.name == selector || Some(e.summary.fingerprint) == by_fp).collect()
    }

    /// The immutable form a verifier reads.
    pub fn snapshot(&self) -> Arc<TrustSnapshot> {
        let system = if self.system_enabled { self.system.as_slice() } else { &[] };
        let mut snap = TrustSnapshot::default();
        for entry in system.iter().chain(&self.entries) {
            match entry.kind {
                TrustKind::Pinned => {
                    let pin = Pin { name: entry.name.clone(), names: entry.names.clone() };
                    snap.pinned.insert(entry.summary.fingerprint, pin);
                }
                TrustKind::Ca | TrustKind::SystemCa => {
                    if !snap.ca_fingerprints.insert(entry.summary.fingerprint) {
                        continue;
                    }
                    let Ok(anchor) = webpki::anchor_from_trusted_cert(&entry.der) else { continue };
                    let Ok(parsed) = cert::parse_der(entry.der.as_ref()) else { continue };
                    let key = name::canonical(parsed.subject());
                    snap.by_subject.entry(key).or_default().push(snap.ca_certs.len());
                    snap.anchors.push(anchor.to_owned());
                    snap.ca_certs.push(entry.der.clone());
                }
            }
        }
        for der in &self.refused {
            if let Ok(parsed) = cert::parse_der(der.as_ref()) {
                snap.refused.push((Fingerprint::of(der.as_ref()), name::canonical(parsed.subject())));
            }
        }
        snap.crls = self
            .crls
            .iter()
            .filter_map(|d| webpki::OwnedCertRevocationList::from_der(d).ok())
            .map(webpki::CertRevocationList::from)
            .collect();
        Arc::new(snap)
    }
}

/// A pinned certificate in a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Pin {
    pub name: String,
    pub names: Vec<String>,
}

impl Pin {
    /// Whether it holds for `server_name` (text form).
    pub fn covers(&self, server_name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| n.eq_ignore_ascii_case(server_name))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(Error::BadName(name.to_owned()));
    }
    Ok(())
}

/// An immutable, indexed trust store for verification.
#[derive(Debug, Default)]
pub struct TrustSnapshot {
    pub(crate) anchors: Vec<TrustAnchor<'static>>,
    pub(crate) ca_certs: Vec<CertificateDer<'static>>,
    pub(crate) ca_fingerprints: HashSet<Fingerprint>,
    pub(crate) by_subject: HashMap<Vec<u8>, Vec<usize>>,
    pub(crate) pinned: HashMap<Fingerprint, Pin>,
    /// Fingerprint and canonical subject of each CA whose chains are refused.
    pub(crate) refused: Vec<(Fingerprint, Vec<u8>)>,
    /// Revocation lists checked for every chain.
    pub(crate) crls: Vec<webpki::CertRevocationList<'static>>,
}

impl TrustSnapshot {
    /// Whether `der` is one of the CA certificates that anchor chains.
    pub fn has_ca(&self, der: &CertificateDer<'_>) -> bool {
        self.ca_fingerprints.contains(&Fingerprint::of(der.as_ref()))
    }

    /// How many CA certificates anchor chains.
    pub fn ca_count(&self) -> usize {
        self.ca_certs.len()
    }

    /// How many server certificates are pinned.
    pub fn pinned_count(&self) -> usize {
        self.pinned.len()
    }

    /// The name of the pinned certificate with this fingerprint.
    pub fn pinned_name(&self, fingerprint: &Fingerprint) -> Option<&str> {
        self.pinned.get(fingerprint).map(|p| p.name.as_str())
    }

    /// Whether a CA with this fingerprint anchors chains.
    pub fn is_trusted_ca(&self, fingerprint: &Fingerprint) -> bool {
        self.ca_fingerprints.contains(fingerprint)
    }

    /// Trusted CA certificates whose subject matches `canonical_name`.
    pub(crate) fn cas_named(&self, canonical_name: &[u8]) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.by_subject.get(canonical_name).into_iter().flatten().map(|&i| &self.ca_certs[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("corp-root").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn garbage_import_changes_nothing() {
        let mut store = TrustStore::without_system_bundle();
        assert!(store.import("junk", b"not a certificate", ImportAs::Auto).is_err());
        assert!(store.entries().is_empty());
        assert!(matches!(store.remove("junk"), Err(Error::NotFound(_))));
    }
}

/// What a fetched CRL says about itself, once [`check_crl`] accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlFacts {
    /// Its issuer, OpenSSL one-line form.
    pub issuer: String,
    /// What the list is authoritative for: SHA-256 over its issuer's name, its
    /// issuingDistributionPoint (a shard of a partitioned CRL) and its signer's
    /// key. One list per scope, the newest, goes to the dataplane.
    pub scope: [u8; 32],
    /// thisUpdate (unix seconds).
    pub this_update: i64,
    /// nextUpdate (unix seconds).
    pub next_update: i64,
    /// How many certificates it lists.
    pub revoked: usize,
}

/// Checks a CRL fetched from a distribution point of a verified `path`: one DER
/// CRL that webpki reads, issued by the issuer of a certificate of the path and
/// signed by that issuer — the next certificate of the path or its anchor —
/// whose keyUsage (when present) allows cRLSign; thisUpdate not in the future,
/// nextUpdate present and not past. Anything else is refused: cached, a list
/// that is not the issuer's own could only make chains fail, and an expired one
/// could hide a revocation.
pub fn check_crl(path: &crate::ServerPath, der: &[u8], now: i64) -> Result<CrlFacts> {
    let refuse = |m: String| Error::Crl(m);
    webpki::OwnedCertRevocationList::from_der(der).map_err(|e| refuse(format!("{e:?}")))?;
    let crl = match x509_parser::parse_x509_crl(der) {
        Ok(([], crl)) => crl,
        Ok((rest, _)) => return Err(refuse(format!("{} bytes after the CRL", rest.len()))),
        Err(e) => return Err(refuse(e.to_string())),
    };
    let issuer = crl.issuer().as_raw();
    let issuer_text = crate::name::openssl_oneline(crl.issuer());
    if !crate::verify::ocsp::STRONG_SIGNATURES.contains(&crl.signature_algorithm.algorithm.as_bytes()) {
        return Err(refuse(format!(
            "signed with {} (SHA-256 or better required)",
            crl.signature_algorithm.algorithm
        )));
    }
    let parsed: Vec<_> = path
        .certs
        .iter()
        .map(|c| crate::cert::parse_der(c.as_ref()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| refuse(format!("a certificate of the path: {e}")))?;
    let anchor = crate::cert::parse_der(path.anchor.as_ref()).map_err(refuse)?;
    let Some(depth) = parsed.iter().position(|c| c.issuer().as_raw() == issuer) else {
        return Err(refuse(format!("issued by {issuer_text}, the issuer of no certificate of the path")));
    };
    let signer = parsed.get(depth + 1).unwrap_or(&anchor);
    let may_sign_crls = signer.key_usage().ok().flatten().is_none_or(|ku| ku.value.crl_sign());
    if signer.subject().as_raw() != issuer
        || !may_sign_crls
        || crl.verify_signature(signer.public_key()).is_err()
    {
        return Err(refuse(format!("not signed by {issuer_text}, the issuer of the path's certificate")));
    }
    let this_update = crl.last_update().timestamp();
    if this_update > now + 300 {
        return Err(refuse(format!("thisUpdate {this_update} is in the future (now {now})")));
    }
    let next_update =
        crl.next_update().map(|t| t.timestamp()).ok_or_else(|| refuse("no nextUpdate".into()))?;
    if next_update <= now {
        return Err(refuse(format!("expired: nextUpdate {next_update} is past (now {now})")));
    }
    let idp = crl
        .extensions()
        .iter()
        .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT)
        .map_or(&[][..], |e| e.value);
    let mut scope = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [issuer, idp, signer.public_key().raw] {
        scope.update(&(part.len() as u32).to_be_bytes());
        scope.update(part);
    }
    let mut scope_hash = [0u8; 32];
    scope_hash.copy_from_slice(scope.finish().as_ref());
    Ok(CrlFacts {
        issuer: issuer_text,
        scope: scope_hash,
        this_update,
        next_update,
        revoked: crl.iter_revoked_certificates().count(),
    })
}
