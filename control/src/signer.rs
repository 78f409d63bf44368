//! The signer of forged leaves: the decryption CA's key stays in this process
//! (the dataplane, which parses packets, never holds it).
//!
//! ```text
//!  SignLeaves{id, name, server chain, leaf public key} ──► rate limit ──► verify the
//!  server chain again (trust store of the running version, our own CA refused)
//!  ──► build the leaf here (names and validity from the verified server
//!  certificate, CA:FALSE, serverAuth, within the CA's validity) ──► sign ──►
//!  issued.log ──► SignedLeaves{id, cert | error}
//! ```
//!
//! The signer never signs a blob it is handed: it gets a name, a chain and a
//! public key, and makes the certificate itself. It runs the trust store and the
//! policy's `certificate_validation` of the configuration version it was last
//! loaded with (each versioned change reloads it).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tlsgate_api::{LeafRequest, SignedLeaf, MAX_SIGN_BATCH};
use tlsgate_certstore::pki_types::{CertificateDer, ServerName, UnixTime};
use tlsgate_certstore::{
    issue_leaf, summarize, verify_server_chain, DecryptionCa, LeafNames, TrustSnapshot, Verified,
};

use crate::events::LogFile;
use crate::state::StateFile;

/// Leaves signed per second at most, and the burst allowed above it.
pub const RATE_PER_S: f64 = 500.0;
/// The burst.
pub const BURST: f64 = 2000.0;

/// What the signer signs with, for one configuration version.
struct Material {
    version: u64,
    /// The record `ca` was opened from: a new version with the same record
    /// reuses `ca` (no token work for a trust or policy change).
    record: crate::state::CaRecord,
    ca: Arc<DecryptionCa>,
    trust: Arc<TrustSnapshot>,
    validate: bool,
}

/// What a CA whose key could not be opened waits with.
struct Pending {
    version: u64,
    record: crate::state::CaRecord,
    trust: Arc<TrustSnapshot>,
    validate: bool,
    error: crate::Error,
    tried: Instant,
}

/// How often a CA key that could not be opened is tried again.
pub const RETRY_OPEN: std::time::Duration = std::time::Duration::from_secs(10);

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The signer.
pub struct Signer {
    material: Mutex<Option<Arc<Material>>>,
    /// A CA whose key could not be opened (a token that is down): tried again
    /// at most every [`RETRY_OPEN`] when leaves are asked for.
    pending: Mutex<Option<Pending>>,
    bucket: Mutex<Bucket>,
    issued: Mutex<LogFile>,
}

/// One line of `issued.log`.
#[derive(Serialize)]
struct Issued<'a> {
    time: u64,
    name: &'a str,
    serial: &'a str,
    sha256: String,
    not_after: i64,
    server_sha256: String,
    version: u64,
    unverified: bool,
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())
}

impl Signer {
    /// A signer logging to `log_dir/issued.log`, with nothing loaded yet.
    pub fn new(log_dir: &std::path::Path, max_bytes: u64, kept: usize) -> Signer {
        Signer {
            material: Mutex::new(None),
            pending: Mutex::new(None),
            bucket: Mutex::new(Bucket { tokens: BURST, at: Instant::now() }),
            issued: Mutex::new(LogFile::new(log_dir.join("issued.log"), max_bytes, kept)),
        }
    }

    /// Loads the CA, the trust store and the validation setting of `st` (called
    /// for every configuration version). Without a CA nothing is signed; a CA
    /// whose key cannot be opened (its token is down) is logged, refused with
    /// that reason, and tried again every [`RETRY_OPEN`].
    pub fn reload(&self, st: &StateFile) {
        let before = self.material.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let pending_before = self.pending.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut pending = None;
        let material = (|| {
            let record = st.ca.as_ref()?;
            let (ca_der, _) = record.certificate().ok()?;
            let mut trust = st.trust_store().ok()?;
            trust.refuse_chains_to(&CertificateDer::from(ca_der));
            let validate = tlsgate_policy::Policy::from_json(st.running_policy())
                .map_or(true, |p| p.settings.certificate_validation);
            let trust = trust.snapshot();
            if let Some(m) = before.filter(|m| m.record == *record) {
                let ca = m.ca.clone();
                return Some(Arc::new(Material {
                    version: st.version,
                    record: record.clone(),
                    ca,
                    trust,
                    validate,
                }));
            }
            // The same CA still pending: tried again when due, not at every
            // change (a token's PIN must not be retried at will).
            if let Some(p) = pending_before.filter(|p| p.record == *record) {
                pending = Some(Pending { version: st.version, trust, validate, ..p });
                return None;
            }
            match record.open() {
                Ok(ca) => Some(Arc::new(Material {
                    version: st.version,
                    record: record.clone(),
                    ca: Arc::new(ca),
                    trust,
                    validate,
                })),
                Err(error) => {
                    tracing::error!(%error, "signer: the decryption CA's key cannot be opened; new names are refused until it can");
                    pending = Some(Pending {
                        version: st.version,
                        record: record.clone(),
                        trust,
                        validate,
                        error,
                        tried: Instant::now(),
                    });
                    None
                }
            }
        })();
        *self.material.lock().unwrap_or_else(PoisonError::into_inner) = material;
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = pending;
    }

    /// The loaded material; a pending CA is tried again when due.
    fn material(&self) -> Result<Arc<Material>, String> {
        if let Some(m) = self.material.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return Ok(m);
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = pending.as_mut() else { return Err("no decryption CA is configured".into()) };
        if p.tried.elapsed() < RETRY_OPEN {
            return Err(format!("the decryption CA's key is unavailable: {}", p.error));
        }
        p.tried = Instant::now();
        match p.record.open() {
            Ok(ca) => {
                tracing::info!("signer: the decryption CA's key is open again");
                let m = Arc::new(Material {
                    version: p.version,
                    record: p.record.clone(),
                    ca: Arc::new(ca),
                    trust: p.trust.clone(),
                    validate: p.validate,
                });
                *self.material.lock().unwrap_or_else(PoisonError::into_inner) = Some(m.clone());
                *pending = None;
                Ok(m)
            }
            Err(e) => {
                p.error = e;
                Err(format!("the decryption CA's key is unavailable: {}", p.error))
            }
        }
    }

    fn take_token(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * RATE_PER_S).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Signs a batch; every request gets an answer.
    pub fn sign(&self, leaves: Vec<LeafRequest>) -> Vec<SignedLeaf> {
        let refuse_all = |why: &str| {
            leaves.iter().map(|l| SignedLeaf { id: l.id, cert: None, error: Some(why.to_string()) }).collect()
        };
        if leaves.len() > MAX_SIGN_BATCH {
            return refuse_all(&format!("a batch of {} leaves exceeds {MAX_SIGN_BATCH}", leaves.len()));
        }
        let m = match self.material() {
            Ok(m) => m,
            Err(e) => return refuse_all(&e),
        };
        leaves
            .iter()
            .map(|l| match self.sign_one(&m, l) {
                Ok(cert) => SignedLeaf { id: l.id, cert: Some(cert), error: None },
                Err(e) => {
                    tracing::warn!(name = %l.name, error = %e, "signer refused a leaf");
                    SignedLeaf { id: l.id, cert: None, error: Some(e) }
                }
            })
            .collect()
    }

    fn sign_one(&self, m: &Material, l: &LeafRequest) -> Result<String, String> {
        if !self.take_token() {
            return Err(format!("rate limited ({RATE_PER_S} leaves/s)"));
        }
        let name = ServerName::try_from(l.name.clone()).map_err(|e| format!("name {:?}: {e}", l.name))?;
        let chain: Vec<CertificateDer<'static>> = l
            .chain
            .iter()
            .map(|c| b64(c).map(CertificateDer::from))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("server chain: {e}"))?;
        let Some((server, intermediates)) = chain.split_first() else {
            return Err("no server certificate".into());
        };
        let public_key = b64(&l.public_key).map_err(|e| format!("public key: {e}"))?;
        let now = UnixTime::now();
        // A chain to a trusted CA vouches for all of the server certificate's
        // names; a pinned certificate (trusted for the requested name only) or an
        // unverified one (validation off) for none but the requested one.
        let (unverified, names) = match verify_server_chain(&m.trust, server, intermediates, &name, now) {
            Ok(Verified::Chain) => (false, LeafNames::FromServer),
            Ok(_) => (false, LeafNames::RequestedOnly),
            Err(f) if !m.validate && f.reason != tlsgate_certstore::VerifyReason::OwnDecryptionCa => {
                (true, LeafNames::RequestedOnly)
            }
            Err(f) => return Err(format!("the server chain does not verify for {}: {}", l.name, f.reason)),
        };
        let leaf = issue_leaf(&m.ca, &public_key, server, &name, names, now).map_err(|e| e.to_string())?;
        let s = summarize(leaf.as_ref()).map_err(|e| e.to_string())?;
        let line = Issued {
            time: now.as_secs(),
            name: &l.name,
            serial: &s.serial,
            sha256: s.fingerprint.to_hex(),
            not_after: s.not_after,
            server_sha256: tlsgate_certstore::chain_sha256(&chain).to_hex(),
            version: m.version,
            unverified,
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
            text.push('\n');
            let _ = self.issued.lock().unwrap_or_else(PoisonError::into_inner).write(&text);
        }
        use base64::Engine as _;
        Ok(base64::engine::general_purpose::STANDARD.encode(leaf.as_ref()))
    }
}
