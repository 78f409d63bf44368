//! Forged server certificates: what the client sees in place of the server's.
//!
//! A forged leaf copies the subject CN and the subjectAltName DNS names and IP
//! addresses of the (verified) server certificate; when none of them covers the
//! requested name (a pinned certificate without SAN, as in the seed) the SNI, or
//! the destination IP without SNI, is added. It is valid from max(server notBefore,
//! now - 1 h, CA notBefore) to min(server notAfter, now + 7 days, CA notAfter):
//! a forged leaf never outlives the CA. It carries basicConstraints
//! CA:FALSE, keyUsage digitalSignature, extendedKeyUsage serverAuth, a random
//! serial, and is signed by the decryption CA over one P-256 key per worker
//! ([`LeafKey`]).
//!
//! [`ForgeCache`] keeps forged certificates per worker (no lock: `&mut self`),
//! keyed by (requested name, [`chain_sha256`] of the server chain), bounded with
//! the CLOCK second-chance policy.

use std::collections::HashMap;
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::ca::{offset_time, random_serial, secs, DecryptionCa};
use crate::cert::{self, chain_sha256, Fingerprint};
use crate::error::{Error, Result};
use crate::name;
use crate::tls::{self, CertifiedKey, SigningKey};
use crate::verify::server_name_text;

/// How long a forged certificate lives at most.
pub const FORGED_MAX_LIFETIME_SECS: i64 = 7 * 86_400;
/// How far back a forged certificate's notBefore reaches (client clock skew).
pub const FORGED_BACKDATE_SECS: i64 = 3_600;
/// A cached certificate closer than this to its notAfter is forged again.
pub const CACHE_REFRESH_MARGIN_SECS: i64 = 3_600;

/// The key pair of forged leaves: ECDSA P-256, generated once per worker and
/// reused for every forged certificate of that worker.
pub struct LeafKey {
    key: KeyPair,
    signing: Arc<dyn SigningKey>,
}

impl std::fmt::Debug for LeafKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeafKey(P-256, hidden)")
    }
}

impl LeafKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Generate(e.to_string()))?;
        let signing = tls::signing_key(key.serialized_der())?;
        Ok(LeafKey { key, signing })
    }

    /// The public key, SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public_key_der()
    }
}

/// Forges the certificate for `server_cert` (already verified) as requested under
/// `requested` (the SNI, or the destination IP address), valid at `now`.
pub fn forge_leaf(
    ca: &DecryptionCa,
    leaf_key: &LeafKey,
    server_cert: &CertificateDer<'_>,
    requested: &ServerName<'_>,
    now: UnixTime,
) -> Result<CertificateDer<'static>> {
    build_leaf(ca, &leaf_key.key, server_cert, requested, LeafNames::FromServer, now)
}

/// Which names a forged leaf carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafNames {
    /// The server certificate's (subjectAltName and CN), plus the requested name
    /// when they do not cover it: for a chain verified to a trusted CA.
    FromServer,
    /// Only the requested name: for a certificate trusted as it is (pinned) or
    /// not verified at all (validation off). Its other names were never checked,
    /// so they are not vouched for.
    RequestedOnly,
}

/// Issues the certificate for `server_cert` as requested under `requested`, over
/// a leaf public key given as SubjectPublicKeyInfo DER: what a signer outside
/// the packet path does. The signer builds the certificate itself (names from the
/// server certificate and the request, validity within the server's, the CA's
/// and a week, CA:FALSE, serverAuth); it never signs a blob it is handed.
pub fn issue_leaf(
    ca: &DecryptionCa,
    leaf_public_key: &[u8],
    server_cert: &CertificateDer<'_>,
    requested: &ServerName<'_>,
    names: LeafNames,
    now: UnixTime,
) -> Result<CertificateDer<'static>> {
    let spki = rcgen::SubjectPublicKeyInfo::from_der(leaf_public_key)
        .map_err(|e| Error::Forge(format!("leaf public key: {e}")))?;
    build_leaf(ca, &spki, server_cert, requested, names, now)
}

fn build_leaf(
    ca: &DecryptionCa,
    leaf_key: &impl rcgen::PublicKeyData,
    server_cert: &CertificateDer<'_>,
    requested: &ServerName<'_>,
    names: LeafNames,
    now: UnixTime,
) -> Result<CertificateDer<'static>> {
    let server = cert::parse_der(server_cert.as_ref())
        .map_err(|e| Error::Forge(format!("server certificate: {e}")))?;
    let (dns, ips) = match names {
        LeafNames::FromServer => cert::san_names(&server),
        LeafNames::RequestedOnly => (Vec::new(), Vec::new()),
    };
    let covered = names == LeafNames::FromServer
        && webpki::EndEntityCert::try_from(server_cert)
            .map(|ee| ee.verify_is_valid_for_subject_name(requested).is_ok())
            .unwrap_or(false);

    let mut sans = Vec::with_capacity(dns.len() + ips.len() + 1);
    for d in dns {
        if let Ok(ia5) = d.try_into() {
            sans.push(SanType::DnsName(ia5));
        }
    }
    sans.extend(ips.into_iter().map(SanType::IpAddress));
    if !covered {
        sans.push(san_for(requested)?);
    }
    let cn = match names {
        LeafNames::FromServer => {
            name::common_name(server.subject()).unwrap_or_else(|| server_name_text(requested))
        }
        LeafNames::RequestedOnly => server_name_text(requested),
    };

    let now_s = secs(now);
    // Within the origin's validity, the CA's own (a leaf never outlives its
    // issuer), and a week from now.
    let ca_validity = ca.summary();
    let not_before = server
        .validity()
        .not_before
        .timestamp()
        .max(now_s - FORGED_BACKDATE_SECS)
        .max(ca_validity.not_before);
    let not_after = server
        .validity()
        .not_after
        .timestamp()
        .min(now_s + FORGED_MAX_LIFETIME_SECS)
        .min(ca_validity.not_after);
    if not_after <= not_before || not_after <= now_s {
        return Err(Error::Forge(format!(
            "the server certificate is not valid now (notBefore {}, notAfter {}, now {now_s})",
            server.validity().not_before.timestamp(),
            server.validity().not_after.timestamp()
        )));
    }
    sign_leaf(ca, leaf_key, cn, sans, not_before, not_after)
}

/// A throw-away leaf for checking a CA when it is configured.
pub(crate) fn forge_for_trial(
    ca: &DecryptionCa,
    leaf_key: &LeafKey,
    requested: &ServerName<'_>,
    now: UnixTime,
) -> Result<CertificateDer<'static>> {
    let now_s = secs(now);
    let not_after = (now_s + 86_400).min(ca.summary().not_after);
    sign_leaf(
        ca,
        &leaf_key.key,
        server_name_text(requested),
        vec![san_for(requested)?],
        now_s - 60,
        not_after,
    )
}

fn san_for(requested: &ServerName<'_>) -> Result<SanType> {
    Ok(match requested {
        ServerName::IpAddress(ip) => SanType::IpAddress(std::net::IpAddr::from(*ip)),
        other => SanType::DnsName(
            server_name_text(other).try_into().map_err(|e| Error::Forge(format!("requested name: {e}")))?,
        ),
    })
}

fn sign_leaf(
    ca: &DecryptionCa,
    leaf_key: &impl rcgen::PublicKeyData,
    common_name: String,
    sans: Vec<SanType>,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateDer<'static>> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?.into());
    params.not_before = offset_time(not_before)?;
    params.not_after = offset_time(not_after)?;
    let (issuer, issuer_key) = ca.signer();
    let cert = params.signed_by(leaf_key, issuer, issuer_key).map_err(|e| Error::Forge(e.to_string()))?;
    Ok(cert.der().clone())
}

/// Counters of a [`ForgeCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForgeCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that forged a certificate (absent, or too close to its notAfter).
    pub misses: u64,
    /// Entries pushed out to stay within the capacity.
    pub evictions: u64,
    /// Forging failures.
    pub errors: u64,
    /// Entries now.
    pub len: usize,
    /// Most entries kept.
    pub capacity: usize,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct CacheKey {
    name: String,
    chain: Fingerprint,
}

struct Slot {
    key: CacheKey,
    value: Arc<CertifiedKey>,
    not_after: i64,
    referenced: bool,
}

/// A worker's cache of forged certificates, ready for a rustls server config.
pub struct ForgeCache {
    /// The CA that signs here; `None`: leaves are signed elsewhere and
    /// [`ForgeCache::insert_signed`] brings them.
    ca: Option<Arc<DecryptionCa>>,
    /// What follows a leaf to the client: the CA's certificate (and its chain).
    sent_chain: Vec<CertificateDer<'static>>,
    leaf_key: LeafKey,
    capacity: usize,
    slots: Vec<Slot>,
    index: HashMap<CacheKey, usize>,
    hand: usize,
    stats: ForgeCacheStats,
}

impl std::fmt::Debug for ForgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeCache").field("local", &self.ca.is_some()).field("stats", &self.stats()).finish()
    }
}

impl ForgeCache {
    /// A cache holding at most `capacity` (at least 1) certificates signed by `ca`
    /// over `leaf_key`.
    pub fn new(ca: Arc<DecryptionCa>, leaf_key: LeafKey, capacity: usize) -> Self {
        let sent_chain = ca.sent_chain().to_vec();
        Self::build(Some(ca), sent_chain, leaf_key, capacity)
    }

    /// A cache of leaves signed elsewhere over `leaf_key` (a signer outside the
    /// packet path), sent to clients followed by `sent_chain` (the CA's
    /// certificate and its chain).
    pub fn remote(sent_chain: Vec<CertificateDer<'static>>, leaf_key: LeafKey, capacity: usize) -> Self {
        Self::build(None, sent_chain, leaf_key, capacity)
    }

    fn build(
        ca: Option<Arc<DecryptionCa>>,
        sent_chain: Vec<CertificateDer<'static>>,
        leaf_key: LeafKey,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        ForgeCache {
            ca,
            sent_chain,
            leaf_key,
            capacity,
            slots: Vec::with_capacity(capacity.min(4096)),
            index: HashMap::with_capacity(capacity.min(4096)),
            hand: 0,
            stats: ForgeCacheStats { capacity, ..ForgeCacheStats::default() },
        }
    }

    /// The leaf public key (SubjectPublicKeyInfo DER) a remote signer signs over.
    pub fn leaf_public_key(&self) -> Vec<u8> {
        self.leaf_key.public_key_der()
    }

    /// Whether a certificate for `requested` is cached (for any server chain).
    pub fn has_name(&self, requested: &ServerName<'_>) -> bool {
        let name = server_name_text(requested);
        self.slots.iter().any(|s| s.key.name == name)
    }

    /// Whether this cache signs itself (holds a CA key).
    pub fn signs_locally(&self) -> bool {
        self.ca.is_some()
    }

    /// The cached certificate for `server_chain` requested under `requested`, if
    /// one is cached and not close to its notAfter (counted as a hit).
    pub fn lookup(
        &mut self,
        requested: &ServerName<'_>,
        server_chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<Arc<CertifiedKey>> {
        let key = CacheKey { name: server_name_text(requested), chain: chain_sha256(server_chain) };
        let i = *self.index.get(&key)?;
        let slot = &mut self.slots[i];
        if slot.not_after - CACHE_REFRESH_MARGIN_SECS > secs(now) {
            slot.referenced = true;
            self.stats.hits += 1;
            return Some(Arc::clone(&slot.value));
        }
        None
    }

    /// The forged certificate (with the CA's chain, if any, and the leaf key) for a
    /// verified server chain requested under `requested`: from the cache, or forged
    /// now (a cache without a CA answers only from the cache).
    pub fn get_or_forge(
        &mut self,
        requested: &ServerName<'_>,
        server_chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Arc<CertifiedKey>> {
        if let Some(hit) = self.lookup(requested, server_chain, now) {
            return Ok(hit);
        }
        let Some(server_cert) = server_chain.first() else {
            self.stats.errors += 1;
            return Err(Error::Forge("the server sent no certificate".into()));
        };
        self.stats.misses += 1;
        let Some(ca) = self.ca.clone() else {
            self.stats.errors += 1;
            return Err(Error::Forge("leaves are signed outside this process".into()));
        };
        let forged = match forge_leaf(&ca, &self.leaf_key, server_cert, requested, now) {
            Ok(f) => f,
            Err(e) => {
                self.stats.errors += 1;
                return Err(e);
            }
        };
        Ok(self.store(requested, server_chain, forged, now))
    }

    /// Takes in a leaf a remote signer issued for `server_chain` under
    /// `requested`; refused unless it is over this cache's leaf key (counted as a
    /// miss).
    pub fn insert_signed(
        &mut self,
        requested: &ServerName<'_>,
        server_chain: &[CertificateDer<'_>],
        leaf: CertificateDer<'static>,
        now: UnixTime,
    ) -> Result<Arc<CertifiedKey>> {
        self.stats.misses += 1;
        let parsed = cert::parse_der(leaf.as_ref()).map_err(|e| Error::Forge(format!("signed leaf: {e}")))?;
        if parsed.public_key().raw != self.leaf_key.public_key_der().as_slice() {
            self.stats.errors += 1;
            return Err(Error::Forge("the signed leaf is not over this worker's key".into()));
        }
        Ok(self.store(requested, server_chain, leaf, now))
    }

    fn store(
        &mut self,
        requested: &ServerName<'_>,
        server_chain: &[CertificateDer<'_>],
        forged: CertificateDer<'static>,
        now: UnixTime,
    ) -> Arc<CertifiedKey> {
        let key = CacheKey { name: server_name_text(requested), chain: chain_sha256(server_chain) };
        let not_after =
            cert::parse_der(forged.as_ref()).map(|c| c.validity().not_after.timestamp()).unwrap_or(secs(now));
        let mut chain = Vec::with_capacity(1 + self.sent_chain.len());
        chain.push(forged);
        chain.extend(self.sent_chain.iter().cloned());
        let value = tls::certified_key(chain, Arc::clone(&self.leaf_key.signing));
        let slot = Slot { key: key.clone(), value: Arc::clone(&value), not_after, referenced: false };
        if let Some(&i) = self.index.get(&key) {
            self.slots[i] = slot;
        } else if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
        } else {
            let victim = self.clock_victim();
            self.index.remove(&self.slots[victim].key);
            self.index.insert(key, victim);
            self.slots[victim] = slot;
            self.stats.evictions += 1;
        }
        value
    }

    /// CLOCK: advance the hand, clearing reference bits, to the first slot not
    /// referenced since the hand last passed.
    fn clock_victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[i].referenced {
                self.slots[i].referenced = false;
            } else {
                return i;
            }
        }
    }

    /// Counters and size.
    pub fn stats(&self) -> ForgeCacheStats {
        ForgeCacheStats { len: self.slots.len(), ..self.stats }
    }

    /// Drops every cached certificate (e.g. after the decryption CA changed).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
        self.hand = 0;
    }

    /// The CA signing this cache's certificates, when it signs locally.
    pub fn ca(&self) -> Option<&Arc<DecryptionCa>> {
        self.ca.as_ref()
    }
}
