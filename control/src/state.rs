//! The state directory: everything the control plane holds, in one file written
//! atomically.
//!
//! ```text
//!   <state_dir>/            0700
//!     state.json            0600  version, policy history + candidate, trust entries,
//!                                 decryption CA (certificate and key), licenses, audit
//!     state.json.tmp              only while a write is under way (removed at start)
//!     chains/<sha256>.pem         abort chains kept for `trust add --from-event`
//! ```
//!
//! One file, so a change that touches several parts (a policy commit and its
//! audit record, a CA with its key) is all or nothing. A write is: the new content
//! into `state.json.tmp` (mode 0600), `fsync`, `rename` over `state.json`, `fsync`
//! of the directory. A crash before the rename leaves the previous state, after it
//! the new one: never a torn file. [`crate::failpoint`] stops the daemon between
//! each step in tests. The key of the decryption CA is in this 0600 file, in a
//! 0700 directory, owned by root.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tlsgate_api::HistoryEntry;
use tlsgate_certstore::{DecryptionCa, ImportAs, TrustStore};
use tlsgate_policy::{Policy, PolicyStore};

use crate::error::{Error, Result};
use crate::failpoint;

/// The state file's format.
pub const FORMAT: u32 = 1;
/// Committed policies kept for rollback.
pub const POLICIES_KEPT: usize = 50;
/// Audit records kept.
pub const AUDIT_KEPT: usize = 1000;

/// Everything the control plane holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// [`FORMAT`].
    pub format: u32,
    /// The configuration version: every change that reaches the dataplane makes
    /// the next one.
    pub version: u64,
    /// Committed policies, oldest first (the last is running).
    pub policies: Vec<PolicyVersion>,
    /// The candidate being edited, when it differs from the running policy.
    pub candidate: Option<String>,
    /// Imported CAs and pinned server certificates.
    pub trust: Vec<TrustRecord>,
    /// Debian's CA bundle included.
    pub system_bundle: bool,
    /// The decryption CA.
    pub ca: Option<CaRecord>,
    /// License files, as loaded.
    pub licenses: Vec<String>,
    /// One record per change, oldest first.
    pub audit: Vec<HistoryEntry>,
    /// Operator accounts of the web console (`tlsgatectl user ...`).
    #[serde(default)]
    pub users: Vec<UserRecord>,
}

/// An operator account: its name and its password's Argon2id hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// `[a-z0-9_.-]`, 1-32.
    pub name: String,
    /// `$argon2id$v=19$...`.
    pub hash: String,
    /// When the password was set (unix seconds).
    pub changed: u64,
}

/// A committed policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyVersion {
    /// The configuration version it was committed under.
    pub version: u64,
    /// The policy, JSON.
    pub policy: String,
    /// The version whose policy it restored.
    pub rollback_of: Option<u64>,
}

/// A trust store entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRecord {
    /// The operator's name for it.
    pub name: String,
    /// `ca` or `pinned`.
    pub kind: String,
    /// The certificate, base64 DER.
    pub der: String,
    /// For `pinned`: the server names (or IP addresses) it holds for; empty: any
    /// name (`--any-name`, and entries pinned before pins had names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// The decryption CA.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaRecord {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Key, PKCS#8 PEM. Wiped from memory when the record goes (every copy of
    /// the state is a copy of it); never printed. Empty when the key is on a
    /// PKCS#11 token.
    pub key_pem: String,
    /// The `pkcs11:` URI of the key on a token (the key never leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<String>,
}

impl CaRecord {
    /// A CA whose key is in the state (PKCS#8 PEM).
    pub fn with_key(cert_pem: String, key_pem: String) -> CaRecord {
        CaRecord { cert_pem, key_pem, pkcs11: None }
    }

    /// The CA's certificate (DER) and its summary, without its key: what status,
    /// metrics, export and the trust checks need (a token is never touched).
    pub fn certificate(&self) -> Result<(Vec<u8>, tlsgate_certstore::CertSummary)> {
        let der = tlsgate_certstore::parse_certificates(self.cert_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or(Error::NoCertificate)?;
        let summary = tlsgate_certstore::summarize(der.as_ref())?;
        Ok((der.as_ref().to_vec(), summary))
    }

    /// The CA, ready to sign (its key from the state, or through its token).
    pub fn open(&self) -> Result<DecryptionCa> {
        let now = tlsgate_certstore::pki_types::UnixTime::now();
        match &self.pkcs11 {
            Some(uri) => {
                let key = crate::pkcs11::key_for(uri)?;
                Ok(DecryptionCa::import_with_remote_key(self.cert_pem.as_bytes(), Box::new(key), now)?)
            }
            None => Ok(DecryptionCa::import(self.cert_pem.as_bytes(), self.key_pem.as_bytes(), now)?),
        }
    }
}

impl std::fmt::Debug for CaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRecord")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"(hidden)")
            .field("pkcs11", &self.pkcs11.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl Drop for CaRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_pem);
    }
}

impl StateFile {
    /// A fresh appliance: version 1, a policy without rules that decrypts nothing
    /// (`do-not-decrypt`), the system CA bundle trusted, no decryption CA, no
    /// license.
    pub fn initial(now_s: u64) -> StateFile {
        StateFile {
            format: FORMAT,
            version: 1,
            policies: vec![PolicyVersion {
                version: 1,
                policy: Policy::default().to_json(),
                rollback_of: None,
            }],
            candidate: None,
            trust: Vec::new(),
            system_bundle: true,
            ca: None,
            licenses: Vec::new(),
            audit: vec![HistoryEntry {
                version: 1,
                time: now_s,
                uid: 0,
                operator: None,
                what: "initial state: no rules (do-not-decrypt), system CA bundle, no decryption CA".into(),
                policy_kept: true,
            }],
            users: Vec::new(),
        }
    }

    /// Checks what a hand-edited or damaged file could get wrong.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::StateFormat(self.format));
        }
        if self.policies.is_empty() {
            return Err(Error::NoPolicy);
        }
        for p in &self.policies {
            Policy::from_json(&p.policy)
                .map_err(|source| Error::PolicyVersion { version: p.version, source })?;
        }
        if let Some(c) = &self.candidate {
            Policy::from_json(c).map_err(Error::CandidatePolicy)?;
        }
        self.trust_store_without_system().map_err(|e| Error::Trust(Box::new(e)))?;
        match &self.ca {
            // A key in the state must match its certificate.
            Some(ca) if ca.pkcs11.is_none() => {
                ca.open().map_err(|e| Error::DecryptionCa(Box::new(e)))?;
            }
            // A token is not opened here: a token that is down (or a PIN file
            // changed) must not stop the control plane from starting. The
            // signer opens it, and says so when it cannot.
            Some(ca) => {
                ca.certificate().map_err(|e| Error::DecryptionCa(Box::new(e)))?;
                crate::pkcs11::Pkcs11Uri::configured(ca.pkcs11.as_deref().unwrap_or_default())
                    .map_err(|e| Error::DecryptionCa(Box::new(e)))?;
            }
            None => {}
        }
        Ok(())
    }

    /// The running policy's text.
    pub fn running_policy(&self) -> &str {
        self.policies.last().map_or("{}", |p| p.policy.as_str())
    }

    /// The candidate's text (the running policy when it has no edits).
    pub fn candidate_policy(&self) -> &str {
        self.candidate.as_deref().unwrap_or_else(|| self.running_policy())
    }

    /// The policy store these records describe.
    pub fn policy_store(&self) -> Result<PolicyStore> {
        let history = self
            .policies
            .iter()
            .map(|p| Policy::from_json(&p.policy).map(|pol| (p.version, pol)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut store = PolicyStore::restore(history, POLICIES_KEPT)?;
        if let Some(c) = &self.candidate {
            store.load_candidate_json(c).map_err(Error::Candidate)?;
        }
        Ok(store)
    }

    /// Takes the store's candidate and history back (after an edit or a commit).
    pub fn set_policies(&mut self, store: &PolicyStore) {
        self.policies = store
            .history()
            .map(|c| PolicyVersion {
                version: c.version,
                policy: c.policy.to_json(),
                rollback_of: c.rollback_of,
            })
            .collect();
        let candidate = store.candidate().to_json();
        self.candidate = (candidate != self.running_policy()).then_some(candidate);
    }

    /// The trust store without the system bundle (for checks and listing).
    pub fn trust_store_without_system(&self) -> Result<TrustStore> {
        let mut store = TrustStore::without_system_bundle();
        self.import_records(&mut store)?;
        Ok(store)
    }

    /// The trust store, with the system bundle when it is on.
    pub fn trust_store(&self) -> Result<TrustStore> {
        let mut store = if self.system_bundle {
            TrustStore::with_system_bundle().map_err(Error::SystemBundle)?
        } else {
            TrustStore::without_system_bundle()
        };
        self.import_records(&mut store)?;
        Ok(store)
    }

    fn import_records(&self, store: &mut TrustStore) -> Result<()> {
        for r in &self.trust {
            let entry = |e: Error| Error::TrustEntry { name: r.name.clone(), source: Box::new(e) };
            let der = b64(&r.der).map_err(entry)?;
            let how = if r.kind == "ca" { ImportAs::Ca } else { ImportAs::Pinned };
            store.import_for(&r.name, &der, how, &r.names).map_err(|e| entry(e.into()))?;
        }
        Ok(())
    }

    /// The decryption CA, ready to sign (for the signer; it opens a token).
    pub fn decryption_ca(&self) -> Result<Option<DecryptionCa>> {
        self.ca.as_ref().map(CaRecord::open).transpose()
    }

    /// The decryption CA's summary, from its certificate alone.
    pub fn ca_summary(&self) -> Option<tlsgate_certstore::CertSummary> {
        self.ca.as_ref()?.certificate().ok().map(|(_, s)| s)
    }

    /// Appends an audit record for version `version` (bounded).
    pub fn audit(&mut self, version: u64, now_s: u64, uid: u32, what: impl Into<String>) {
        let kept = self.policies.iter().any(|p| p.version == version);
        self.audit.push(HistoryEntry {
            version,
            time: now_s,
            uid,
            operator: crate::audit::operator(),
            what: what.into(),
            policy_kept: kept,
        });
        if self.audit.len() > AUDIT_KEPT {
            let extra = self.audit.len() - AUDIT_KEPT;
            self.audit.drain(..extra);
        }
    }
}

/// Decodes standard base64.
pub fn b64(text: &str) -> Result<Vec<u8>> {
    Ok(base64::engine::general_purpose::STANDARD.decode(text.trim())?)
}

/// Encodes standard base64.
pub fn to_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The state directory on disk.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: &Path) -> Result<StateDir> {
        let refused = |source| Error::StateDir { path: dir.to_path_buf(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(refused)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(refused)?;
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join("state.json.tmp")
    }

    /// Where abort chains are kept.
    pub fn chains(&self) -> PathBuf {
        self.dir.join("chains")
    }

    /// Reads the state; a missing file is a fresh appliance (written at once). A
    /// leftover `state.json.tmp` (a write that did not reach its rename) is removed:
    /// the state is the previous one. A file that cannot be read is an error: the
    /// daemon refuses to start rather than start empty.
    pub fn load(&self, now_s: u64) -> Result<StateFile> {
        let _ = fs::remove_file(self.tmp());
        let path = self.file();
        match fs::read(&path) {
            Ok(bytes) => {
                let state: StateFile = serde_json::from_slice(&bytes)
                    .map_err(|source| Error::NotStateFile { path: path.clone(), source })?;
                state.validate().map_err(|e| e.in_file(&path))?;
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = StateFile::initial(now_s);
                self.save(&state).map_err(Error::file(&path))?;
                Ok(state)
            }
            Err(e) => Err(Error::file(path)(e)),
        }
    }

    /// Writes the state atomically (see the module documentation).
    pub fn save(&self, state: &StateFile) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        failpoint::hit("state-before-write");
        let tmp = self.tmp();
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&text)?;
        failpoint::hit("state-after-write");
        f.sync_all()?;
        drop(f);
        failpoint::hit("state-after-fsync");
        fs::rename(&tmp, self.file())?;
        failpoint::hit("state-after-rename");
        File::open(&self.dir)?.sync_all()?;
        failpoint::hit("state-after-dir-fsync");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_gets_the_initial_state_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&dir.path().join("state")).unwrap();
        let s = sd.load(1000).unwrap();
        assert_eq!(s.version, 1);
        assert!(s.system_bundle && s.ca.is_none() && s.licenses.is_empty());
        let meta = fs::metadata(dir.path().join("state/state.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let meta = fs::metadata(dir.path().join("state")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(sd.load(2000).unwrap(), s, "read back as written");
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        sd.load(0).unwrap();
        fs::write(dir.path().join("state.json"), b"{\"format\": 1, \"vers").unwrap();
        let err = sd.load(0).unwrap_err().to_string();
        assert!(err.contains("not a tlsgate state file"), "{err}");
        assert_eq!(fs::read(dir.path().join("state.json")).unwrap(), b"{\"format\": 1, \"vers");
    }

    #[test]
    fn a_leftover_temporary_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let s = sd.load(0).unwrap();
        fs::write(dir.path().join("state.json.tmp"), b"half a write").unwrap();
        assert_eq!(sd.load(0).unwrap(), s);
        assert!(!dir.path().join("state.json.tmp").exists());
    }
}
