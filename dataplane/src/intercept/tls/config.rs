//! The TLS material every worker shares ([`TlsShared`]: the decryption CA, the
//! verifier over the trust store, the client configuration towards servers, the
//! remembered server failures) and the `[tls]` section it is loaded from.

use std::sync::Arc;

use tlsgate_api::Outcome;

use super::servers::ServerMap;
use crate::Error;
use tlsgate_certstore::pki_types::UnixTime;
use tlsgate_certstore::rustls::ClientConfig;
use tlsgate_certstore::{
    client_config_noting_requests, CaOptions, CertRequests, CipherProfile, DecryptionCa, ServerVerifier,
    TrustStore, VerifyReason,
};
use tlsgate_policy::{CertAction, CertificateActions, CompiledPolicy};

/// Settings of TLS interception (`[tls]`). With a control plane (`[control]`) the
/// CA, trust and profile come from its snapshots and only the tunables here count
/// (the section may then be left out).
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Intercepted flows to these destination ports are decrypted (others are
    /// spliced as plain TCP).
    #[serde(default = "default_tls_ports")]
    pub ports: Vec<u16>,
    /// Decryption CA certificate (PEM); required without a control plane.
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Decryption CA key (PEM); required without a control plane.
    #[serde(default)]
    pub ca_key: Option<std::path::PathBuf>,
    /// Extra trusted CA certificates (PEM or DER files, bundles allowed).
    #[serde(default)]
    pub trust: Vec<std::path::PathBuf>,
    /// Server certificates trusted exactly as they are.
    #[serde(default)]
    pub pinned: Vec<std::path::PathBuf>,
    /// Certificate revocation lists (PEM or DER files) the server leg checks
    /// chains against: a certificate one lists is refused as revoked (code 23).
    /// Without a control plane; with one, its snapshots carry them.
    #[serde(default)]
    pub crls: Vec<std::path::PathBuf>,
    /// Include the system CA bundle (Debian's ca-certificates).
    #[serde(default = "yes")]
    pub system_bundle: bool,
    /// Cipher-suite profile offered on both legs: `base` or `strong`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Forged certificates cached per worker.
    #[serde(default = "default_cache")]
    pub forge_cache: usize,
    /// Seconds from both TCP legs being up until both TLS sessions are: the
    /// ClientHello, the server's handshake and the client's handshake together.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_s: u64,
    /// Probes (the appliance's own handshakes that prove an SNI or confirm a
    /// failure): how they run.
    #[serde(default)]
    pub probe: ProbeConfig,
    /// A new name while the control plane's signer is unreachable or overloaded:
    /// `block` (reset, the default) or `pass` (relayed raw, with an event).
    #[serde(default)]
    pub signer_unavailable: SignerUnavailable,
    /// New names (forge-cache misses) one client address may have the control
    /// plane sign per second, per worker; above it its new names fail with
    /// `signer_unavailable` (the signer's own limit is for everyone).
    #[serde(default = "default_new_names_per_s")]
    pub signer_new_names_per_s: u32,
    /// The burst above that rate.
    #[serde(default = "default_new_names_burst")]
    pub signer_new_names_burst: u32,
    /// The cryptography under rustls on both legs: `aws-lc-rs` (default:
    /// X25519MLKEM768 preferred, X25519 as the fallback) or `ring` (no
    /// post-quantum group).
    #[serde(default = "default_crypto")]
    pub crypto: String,
}

fn default_crypto() -> String {
    "aws-lc-rs".into()
}

fn default_new_names_per_s() -> u32 {
    50
}
fn default_new_names_burst() -> u32 {
    200
}

/// What a flow gets when its certificate cannot be signed now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignerUnavailable {
    /// Reset the client (fail closed).
    #[default]
    Block,
    /// Relay the flow raw, undecrypted, with a `passed` event.
    Pass,
}

/// `[tls.probe]`: the appliance's own handshakes with servers.
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Seconds a probe may take (a client's ClientHello is held meanwhile).
    pub timeout_s: u64,
    /// First source port of the reserved range probes use (from the client's
    /// address; a port whose 4-tuple is in the flow table is skipped).
    pub port_base: u16,
    /// Ports in the reserved range.
    pub ports: u16,
    /// Probes in flight per client source (address, IPv6 /64) and worker.
    pub per_source: u32,
    /// Probes in flight per server address and worker.
    pub per_destination: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { timeout_s: 5, port_base: 61_440, ports: 4_000, per_source: 4, per_destination: 8 }
    }
}

fn default_handshake_timeout() -> u64 {
    15
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ports: default_tls_ports(),
            ca_cert: None,
            ca_key: None,
            trust: Vec::new(),
            pinned: Vec::new(),
            crls: Vec::new(),
            system_bundle: true,
            profile: default_profile(),
            forge_cache: default_cache(),
            handshake_timeout_s: default_handshake_timeout(),
            probe: ProbeConfig::default(),
            signer_unavailable: SignerUnavailable::Block,
            signer_new_names_per_s: default_new_names_per_s(),
            signer_new_names_burst: default_new_names_burst(),
            crypto: default_crypto(),
        }
    }
}

fn default_tls_ports() -> Vec<u16> {
    vec![443]
}
fn yes() -> bool {
    true
}
fn default_profile() -> String {
    "base".into()
}
fn default_cache() -> usize {
    4096
}

/// The CRLs of a file: its PEM `X509 CRL` blocks, or the file itself as DER. A
/// damaged block is an error (its revocations must not be lost silently).
fn crl_ders(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine as _;
    let Ok(text) = std::str::from_utf8(bytes) else { return Ok(vec![bytes.to_vec()]) };
    if !text.contains("-----BEGIN X509 CRL-----") {
        return Ok(vec![bytes.to_vec()]);
    }
    text.split("-----BEGIN X509 CRL-----")
        .skip(1)
        .enumerate()
        .map(|(i, b)| {
            let body =
                b.split("-----END X509 CRL-----").next().filter(|_| b.contains("-----END X509 CRL-----"));
            let body: String = body
                .ok_or(format!("PEM block {} has no END line", i + 1))?
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| format!("PEM block {}: {e}", i + 1))
        })
        .collect()
}

/// Makes `cfg.crypto` the library of the configurations built from now on.
fn install_crypto(cfg: &TlsConfig) -> Result<(), Error> {
    let lib = cfg
        .crypto
        .parse::<tlsgate_certstore::CryptoLib>()
        .map_err(|e| Error::Invalid(format!("tls.crypto: {e}")))?;
    lib.install();
    Ok(())
}

impl TlsConfig {
    /// Checks the profile name; files are read by [`TlsShared::load`].
    pub fn validate(&self) -> Result<(), Error> {
        self.profile.parse::<CipherProfile>().map(|_| ()).map_err(|_| {
            Error::Invalid(format!("tls.profile: {:?} is neither \"base\" nor \"strong\"", self.profile))
        })?;
        if self.signer_new_names_per_s == 0 || self.signer_new_names_burst == 0 {
            return Err(Error::Invalid(
                "tls.signer_new_names_per_s and tls.signer_new_names_burst: at least 1".into(),
            ));
        }
        self.crypto.parse::<tlsgate_certstore::CryptoLib>().map_err(|_| {
            Error::Invalid(format!("tls.crypto: {:?} is neither \"aws-lc-rs\" nor \"ring\"", self.crypto))
        })?;
        if self.forge_cache == 0 {
            return Err(Error::Invalid("tls.forge_cache: must be at least 1".into()));
        }
        let p = &self.probe;
        if !(1..=60).contains(&p.timeout_s) {
            return Err(Error::Invalid(format!("tls.probe.timeout_s: {} is outside 1..=60", p.timeout_s)));
        }
        if p.ports == 0 || u32::from(p.port_base) + u32::from(p.ports) > 65_536 || p.port_base < 1024 {
            return Err(Error::Invalid(format!(
                "tls.probe.port_base/ports: {}+{} is not a range of 1024..=65535",
                p.port_base, p.ports
            )));
        }
        if p.per_source == 0 || p.per_destination == 0 {
            return Err(Error::Invalid("tls.probe.per_source/per_destination: at least 1".into()));
        }
        if !(1..=300).contains(&self.handshake_timeout_s) {
            return Err(Error::Invalid(format!(
                "tls.handshake_timeout_s: {} is outside 1..=300",
                self.handshake_timeout_s
            )));
        }
        Ok(())
    }
}

/// The subject of the untrust CA.
pub const UNTRUST_CA_NAME: &str = "tlsgate untrusted: the server's certificate failed verification";

/// How server certificates are checked: the policy's validation switch and its
/// action for each check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Validation on (`false`: labs only, every chain accepted and reported).
    pub validate: bool,
    /// What each failed check leads to.
    pub actions: CertificateActions,
}

impl Default for Verification {
    fn default() -> Self {
        Verification { validate: true, actions: CertificateActions::default() }
    }
}

impl Verification {
    /// A policy's (without one: validation on, every failure blocked).
    pub fn of(policy: Option<&CompiledPolicy>) -> Self {
        policy.map_or_else(Verification::default, |p| Verification {
            validate: p.certificate_validation(),
            actions: p.certificate_actions(),
        })
    }

    /// The action for a failure of `reason`: its check's (reasons outside the five
    /// checks — a bad signature, a constraint broken — are always blocked).
    pub fn action(&self, reason: VerifyReason) -> CertAction {
        use VerifyReason as R;
        let a = &self.actions;
        match reason {
            R::CertHasExpired | R::CertNotYetValid => a.expired,
            R::DepthZeroSelfSignedCert
            | R::SelfSignedCertInChain
            | R::UnableToGetIssuerCertLocally
            | R::UnableToGetIssuerCert
            | R::UnableToVerifyLeafSignature => a.untrusted_issuer,
            R::HostnameMismatch | R::IpAddressMismatch => a.hostname_mismatch,
            R::CaMdTooWeak => a.weak,
            R::CertRevoked => a.revoked,
            R::UnableToGetCrl => a.unknown_status.as_cert_action().unwrap_or(CertAction::Block),
            _ => CertAction::Block,
        }
    }

    /// Whether a server certificate must have a known revocation status (a good
    /// OCSP staple or a fresh CRL): `unknown_status` is not `allow`.
    pub fn requires_status(&self) -> bool {
        self.validate && self.actions.unknown_status.as_cert_action().is_some()
    }

    fn untrusted_reasons(&self) -> Vec<VerifyReason> {
        VerifyReason::ALL.iter().copied().filter(|r| self.action(*r) == CertAction::Untrust).collect()
    }
}

/// Who signs forged leaves.
pub enum Signing {
    /// The dataplane holds the decryption CA's key: a dataplane without a control
    /// plane, configured with `[tls] ca_cert`/`ca_key` files.
    Local(Arc<DecryptionCa>),
    /// The control plane signs (the key never enters the dataplane); the CA's
    /// certificate follows each leaf to the client (`sent_chain`: empty for a
    /// self-signed CA).
    Remote {
        /// What follows a leaf to the client.
        sent_chain: Vec<tlsgate_certstore::pki_types::CertificateDer<'static>>,
        /// The queues to the signer.
        link: Arc<super::signer::SignerLink>,
    },
}

/// What every worker shares: CA, trust, configs. Loaded once at start.
pub struct TlsShared {
    /// Who signs forged leaves.
    pub signing: Signing,
    /// The decryption CA's subject (for logs).
    pub ca_subject: String,
    /// The untrust CA: forges for servers whose certificate failed a check with the
    /// action `untrust`. Clients do not trust it.
    pub untrust: Arc<DecryptionCa>,
    /// How server certificates are checked.
    pub verification: Verification,
    /// Chains (SHA-256) accepted with a failure under `untrust`: a session resumed
    /// with such a server (no chain verified this time) is forged by the untrust CA
    /// too.
    pub untrusted_chains: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// The verifier of server chains (one failure slot per thread).
    pub verifier: Arc<ServerVerifier>,
    /// Offered suites on both legs.
    pub profile: CipherProfile,
    pub(crate) client: Arc<ClientConfig>,
    /// The probes' client configuration: `client` without session resumption.
    pub(crate) probe_client: Arc<ClientConfig>,
    /// Notes servers that ask for a client certificate.
    pub(crate) requests: Arc<CertRequests>,
    ports: Vec<u64>,
    pub(super) cache: usize,
    /// [`TlsConfig::handshake_timeout_s`] in ms.
    pub handshake_timeout_ms: u64,
    /// How probes run.
    pub probe: ProbeConfig,
    /// A new name while the signer is unavailable.
    pub signer_unavailable: SignerUnavailable,
    /// New names per client address: (per second, burst).
    pub signer_per_source: (u32, u32),
    /// Their buckets, shared by the workers.
    pub new_names: super::client::SourceBuckets,
    /// Servers relayed raw after a failure whose action was `pass` (a certificate
    /// check's `pass`, or `undecryptable: pass` where no probe confirms: see
    /// [`TlsShared::exclusions`]).
    pub remembered: ServerMap<Outcome>,
    /// Learned exclusions: servers that support no mode the appliance offers,
    /// confirmed by its own probe (PAN-OS's local decryption exclusion cache).
    pub exclusions: ServerMap<Outcome>,
    /// Proofs of names: whether the server's certificate is valid for the SNI,
    /// from the appliance's own handshake (failed ones are kept too).
    pub proofs: ServerMap<bool>,
    /// Confirmations of server-leg failures by the appliance's own handshake:
    /// `true` made a learned exclusion, `false` did not (the failure was the
    /// client's doing, or the probe's own failure was not an unsupported mode).
    /// A server with an entry is not probed again until it expires.
    pub confirmations: ServerMap<bool>,
}

/// The wall time when TLS material is loaded (the CA's validity is checked).
fn now() -> UnixTime {
    UnixTime::now()
}

impl TlsShared {
    /// Reads the CA and the trust files; every error names the file and the cause.
    /// `v`: how server chains are checked (with validation off they are checked and
    /// their failures reported, but not refused; a check whose action is `untrust`
    /// accepts its failures and the flow is forged by the untrust CA).
    pub fn load(cfg: &TlsConfig, v: Verification) -> Result<Arc<TlsShared>, Error> {
        install_crypto(cfg)?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| Error::Io { path: p.to_path_buf(), source })
        };
        let (Some(cert), Some(key)) = (&cfg.ca_cert, &cfg.ca_key) else {
            return Err(Error::Tls("tls.ca_cert and tls.ca_key: required without a control plane".into()));
        };
        let ca = DecryptionCa::import(&read(cert)?, &read(key)?, now())
            .map_err(|e| Error::Tls(format!("tls.ca_cert/ca_key: {e}")))?;
        let mut trust = if cfg.system_bundle {
            TrustStore::with_system_bundle().map_err(|e| Error::Tls(format!("tls.system_bundle: {e}")))?
        } else {
            TrustStore::without_system_bundle()
        };
        for (list, how) in [
            (&cfg.trust, tlsgate_certstore::ImportAs::Ca),
            (&cfg.pinned, tlsgate_certstore::ImportAs::Pinned),
        ] {
            for p in list {
                let name =
                    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
                trust
                    .import(&name, &read(p)?, how)
                    .map_err(|e| Error::Tls(format!("{}: {e}", p.display())))?;
            }
        }
        for p in &cfg.crls {
            for der in
                crl_ders(&read(p)?).map_err(|e| Error::Tls(format!("tls.crls: {}: {e}", p.display())))?
            {
                trust.add_crl(&der).map_err(|e| Error::Tls(format!("tls.crls: {}: {e}", p.display())))?;
            }
        }
        let profile: CipherProfile =
            cfg.profile.parse().map_err(|_| Error::Tls(format!("tls.profile: {:?}", cfg.profile)))?;
        let ca_cert = ca.cert_der().clone();
        let ca_subject = ca.summary().subject.clone();
        Self::build(cfg, Signing::Local(Arc::new(ca)), ca_cert, ca_subject, &trust, profile, v)
    }

    /// From a control-plane snapshot (CA, trust, profile) and the local tunables.
    /// The snapshot carries the CA's certificate only: leaves are signed by the
    /// control plane through `signer`.
    pub fn from_snapshot(
        cfg: &TlsConfig,
        snap: &tlsgate_api::TlsSnapshot,
        v: Verification,
        signer: Arc<super::signer::SignerLink>,
    ) -> Result<Arc<TlsShared>, Error> {
        install_crypto(cfg)?;
        use base64::Engine as _;
        let b64 = |t: &str| {
            base64::engine::general_purpose::STANDARD.decode(t).map_err(|e| Error::Tls(e.to_string()))
        };
        let certs = tlsgate_certstore::parse_certificates(snap.ca_cert_pem.as_bytes())
            .map_err(|e| Error::Tls(format!("decryption CA: {e}")))?;
        let ca_cert = certs[0].clone();
        let summary = tlsgate_certstore::summarize(ca_cert.as_ref())
            .map_err(|e| Error::Tls(format!("decryption CA: {e}")))?;
        let sent_chain = if summary.self_issued { Vec::new() } else { certs };
        let mut trust = if snap.system_bundle {
            TrustStore::with_system_bundle().map_err(|e| Error::Tls(format!("system bundle: {e}")))?
        } else {
            TrustStore::without_system_bundle()
        };
        for (i, der) in snap.cas.iter().enumerate() {
            trust
                .import(&format!("ca-{i}"), &b64(der)?, tlsgate_certstore::ImportAs::Ca)
                .map_err(|e| Error::Tls(format!("trusted CA {i}: {e}")))?;
        }
        for p in &snap.pinned {
            trust
                .import_for(&p.name, &b64(&p.der)?, tlsgate_certstore::ImportAs::Pinned, &p.names)
                .map_err(|e| Error::Tls(format!("pinned {}: {e}", p.name)))?;
        }
        for (i, der) in snap.crls.iter().enumerate() {
            trust.add_crl(&b64(der)?).map_err(|e| Error::Tls(format!("CRL {i}: {e}")))?;
        }
        let profile: CipherProfile =
            snap.profile.parse().map_err(|_| Error::Tls(format!("profile {:?}", snap.profile)))?;
        let signing = Signing::Remote { sent_chain, link: signer };
        Self::build(cfg, signing, ca_cert, summary.subject, &trust, profile, v)
    }

    fn build(
        cfg: &TlsConfig,
        signing: Signing,
        ca_cert: tlsgate_certstore::pki_types::CertificateDer<'static>,
        ca_subject: String,
        trust: &TrustStore,
        profile: CipherProfile,
        v: Verification,
    ) -> Result<Arc<TlsShared>, Error> {
        // The untrust CA: made here, never trusted by anyone (its key only signs the
        // certificates of servers whose own certificate failed a check whose action
        // is `untrust`).
        let untrust = DecryptionCa::generate(&CaOptions::with_common_name(UNTRUST_CA_NAME), now())
            .map_err(|e| Error::Tls(format!("untrust CA: {e}")))?;
        // A server chain issued by either of our CAs is a loop or a replayed forged
        // leaf: refused, whatever the trust store says.
        let mut trust = trust.clone();
        trust.refuse_chains_to(&ca_cert);
        trust.refuse_chains_to(untrust.cert_der());
        let verifier = ServerVerifier::with_tolerance(
            trust.snapshot(),
            v.validate,
            v.untrusted_reasons(),
            v.requires_status(),
        );
        let requests = Arc::new(CertRequests::default());
        let client = client_config_noting_requests(profile, verifier.clone(), requests.clone())
            .map_err(|e| Error::Tls(format!("tls: {e}")))?;
        // Probes neither resume nor leave sessions behind: a proof is a full
        // handshake, and a session a probe kept would let a server leg resume past
        // the verifier (and its untrust marking).
        let mut probe_client = (*client).clone();
        probe_client.resumption = tlsgate_certstore::rustls::client::Resumption::disabled();
        let mut ports = vec![0u64; 1024];
        for &p in &cfg.ports {
            ports[usize::from(p) / 64] |= 1 << (p % 64);
        }
        Ok(Arc::new(TlsShared {
            probe_client: Arc::new(probe_client),
            signing,
            ca_subject,
            untrust: Arc::new(untrust),
            verification: v,
            untrusted_chains: Default::default(),
            verifier,
            profile,
            client,
            requests,
            ports,
            cache: cfg.forge_cache,
            handshake_timeout_ms: cfg.handshake_timeout_s * 1000,
            probe: cfg.probe,
            signer_unavailable: cfg.signer_unavailable,
            signer_per_source: (cfg.signer_new_names_per_s, cfg.signer_new_names_burst),
            new_names: super::client::SourceBuckets::new(
                cfg.signer_new_names_per_s,
                cfg.signer_new_names_burst,
            ),
            remembered: ServerMap::default(),
            exclusions: ServerMap::default(),
            proofs: ServerMap::default(),
            confirmations: ServerMap::default(),
        }))
    }

    /// Whether flows to `port` are decrypted.
    pub fn is_tls_port(&self, port: u16) -> bool {
        self.ports[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM file of CRLs: every block is read; a damaged one is an error, not
    /// silently dropped (its revocations would be lost).
    #[test]
    fn crl_files_are_read_whole_or_refused() {
        let pem = |body: &str| format!("-----BEGIN X509 CRL-----\n{body}\n-----END X509 CRL-----\n");
        let two = format!("{}{}", pem("AAEC"), pem("AwQF"));
        assert_eq!(crl_ders(two.as_bytes()).unwrap(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        let damaged = format!("{}{}", pem("AAEC"), pem("not base64!"));
        assert!(crl_ders(damaged.as_bytes()).unwrap_err().contains("PEM block 2"));
        let cut = format!("{}-----BEGIN X509 CRL-----\nAwQF\n", pem("AAEC"));
        assert!(crl_ders(cut.as_bytes()).unwrap_err().contains("no END line"));
        assert_eq!(crl_ders(&[0x30, 0x03]).unwrap(), vec![vec![0x30, 0x03]], "DER as is");
    }
}
