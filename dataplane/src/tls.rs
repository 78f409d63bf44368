//! TLS interception on a TCP splice: the dataplane's rustls adapter.
//!
//! ```text
//!  client leg bytes ─► Hello: rustls Acceptor reads the ClientHello (bytes kept)
//!        ├─ not TLS / undecryptable ─► pass: replay the kept bytes raw, relay raw
//!        └─ decrypt ─► Server: rustls client to the server (client's SNI and ALPN,
//!                      the profile's suites, our verifier)
//!                         ├─ fails (alert, cipher mismatch, certificate) ─► fatal
//!                         │   alert to the client, close; the reason is kept
//!                         └─ up ─► forge (cache) ─► Both: rustls server to the client
//!                                  with the server's ALPN; plaintext relayed both ways
//! ```
//!
//! All rustls connection calls of the dataplane are in this module (its API moves
//! between releases); configurations come from `tlsgate-certstore`.

use std::io::Write;
use std::sync::Arc;

use smoltcp::socket::tcp;
use tlsgate_api::{Cause, EventKind, Leg, Outcome, Phase};
use tlsgate_certstore::pki_types::{IpAddr as PkiIp, ServerName, UnixTime};
use tlsgate_certstore::rustls::server::{Accepted, Acceptor};
use tlsgate_certstore::rustls::{self, ClientConfig, ClientConnection, ServerConnection};
use tlsgate_certstore::{
    client_config_noting_requests, server_config, CertRequests, CipherProfile, DecryptionCa, ForgeCache,
    LeafKey, ServerVerifier, SingleCertResolver, TrustStore, VerifyFailure,
};
use tlsgate_policy::{Action, CompiledPolicy, UndecryptableAction};

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
            system_bundle: true,
            profile: default_profile(),
            forge_cache: default_cache(),
            handshake_timeout_s: default_handshake_timeout(),
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

impl TlsConfig {
    /// Checks the profile name; files are read by [`TlsShared::load`].
    pub fn validate(&self) -> Result<(), String> {
        self.profile
            .parse::<CipherProfile>()
            .map(|_| ())
            .map_err(|_| format!("tls.profile: {:?} is neither \"base\" nor \"strong\"", self.profile))?;
        if self.forge_cache == 0 {
            return Err("tls.forge_cache: must be at least 1".into());
        }
        if !(1..=300).contains(&self.handshake_timeout_s) {
            return Err(format!("tls.handshake_timeout_s: {} is outside 1..=300", self.handshake_timeout_s));
        }
        Ok(())
    }
}

/// What every worker shares: CA, trust, configs. Loaded once at start.
pub struct TlsShared {
    /// The decryption CA.
    pub ca: Arc<DecryptionCa>,
    /// The verifier of server chains (one failure slot per thread).
    pub verifier: Arc<ServerVerifier>,
    /// Offered suites on both legs.
    pub profile: CipherProfile,
    client: Arc<ClientConfig>,
    /// Notes servers that ask for a client certificate.
    requests: Arc<CertRequests>,
    ports: Vec<u64>,
    cache: usize,
    /// [`TlsConfig::handshake_timeout_s`] in ms.
    pub handshake_timeout_ms: u64,
    /// Server-leg failures remembered for the undecryptable `pass` action, shared
    /// by the workers (consulted once per ClientHello, never on the fast path).
    pub remembered: Remembered,
}

/// Servers whose leg failed: (address, port, SNI) → (until, how it failed).
/// Later connections to them are passed through undecrypted until the entry
/// expires.
#[derive(Default)]
pub struct Remembered {
    map: std::sync::Mutex<std::collections::HashMap<ServerKey, (std::time::Instant, Outcome)>>,
}

/// A server as remembered: address, port, SNI.
pub type ServerKey = (std::net::IpAddr, u16, Option<String>);

impl Remembered {
    const MAX: usize = 65_536;

    /// Remembers a failure for `ttl`.
    pub fn insert(
        &self,
        key: (std::net::IpAddr, u16, Option<String>),
        ttl: std::time::Duration,
        reason: Outcome,
    ) {
        if let Ok(mut m) = self.map.lock() {
            let now = std::time::Instant::now();
            if m.len() >= Self::MAX {
                m.retain(|_, (until, _)| *until > now);
            }
            if m.len() < Self::MAX {
                m.insert(key, (now + ttl, reason));
            }
        }
    }

    /// How it failed, when this server is remembered and the entry has not expired.
    pub fn get(&self, key: &ServerKey) -> Option<Outcome> {
        let m = self.map.lock().ok()?;
        m.get(key).filter(|(until, _)| *until > std::time::Instant::now()).map(|(_, r)| *r)
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

impl TlsShared {
    /// Reads the CA and the trust files; every error names the file and the cause.
    /// With `validate` false (the policy's `certificate_validation: false`) server
    /// chains are checked and their failures reported, but not refused.
    pub fn load(cfg: &TlsConfig, validate: bool) -> Result<Arc<TlsShared>, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let (Some(cert), Some(key)) = (&cfg.ca_cert, &cfg.ca_key) else {
            return Err("tls.ca_cert and tls.ca_key: required without a control plane".into());
        };
        let ca = DecryptionCa::import(&read(cert)?, &read(key)?, now())
            .map_err(|e| format!("tls.ca_cert/ca_key: {e}"))?;
        let mut trust = if cfg.system_bundle {
            TrustStore::with_system_bundle().map_err(|e| format!("tls.system_bundle: {e}"))?
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
                trust.import(&name, &read(p)?, how).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        let profile: CipherProfile =
            cfg.profile.parse().map_err(|_| format!("tls.profile: {:?}", cfg.profile))?;
        Self::build(cfg, ca, &trust, profile, validate)
    }

    /// From a control-plane snapshot (CA, trust, profile) and the local tunables.
    pub fn from_snapshot(
        cfg: &TlsConfig,
        snap: &tlsgate_api::TlsSnapshot,
        validate: bool,
    ) -> Result<Arc<TlsShared>, String> {
        use base64::Engine as _;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.decode(t).map_err(|e| e.to_string());
        let ca = DecryptionCa::import(snap.ca_cert_pem.as_bytes(), snap.ca_key_pem.as_bytes(), now())
            .map_err(|e| format!("decryption CA: {e}"))?;
        let mut trust = if snap.system_bundle {
            TrustStore::with_system_bundle().map_err(|e| format!("system bundle: {e}"))?
        } else {
            TrustStore::without_system_bundle()
        };
        for (i, der) in snap.cas.iter().enumerate() {
            trust
                .import(&format!("ca-{i}"), &b64(der)?, tlsgate_certstore::ImportAs::Ca)
                .map_err(|e| format!("trusted CA {i}: {e}"))?;
        }
        for (name, der) in &snap.pinned {
            trust
                .import(name, &b64(der)?, tlsgate_certstore::ImportAs::Pinned)
                .map_err(|e| format!("pinned {name}: {e}"))?;
        }
        let profile: CipherProfile =
            snap.profile.parse().map_err(|_| format!("profile {:?}", snap.profile))?;
        Self::build(cfg, ca, &trust, profile, validate)
    }

    fn build(
        cfg: &TlsConfig,
        ca: DecryptionCa,
        trust: &TrustStore,
        profile: CipherProfile,
        validate: bool,
    ) -> Result<Arc<TlsShared>, String> {
        let verifier = ServerVerifier::with_enforcement(trust.snapshot(), validate);
        let requests = Arc::new(CertRequests::default());
        let client = client_config_noting_requests(profile, verifier.clone(), requests.clone())
            .map_err(|e| format!("tls: {e}"))?;
        let mut ports = vec![0u64; 1024];
        for &p in &cfg.ports {
            ports[usize::from(p) / 64] |= 1 << (p % 64);
        }
        Ok(Arc::new(TlsShared {
            ca: Arc::new(ca),
            verifier,
            profile,
            client,
            requests,
            ports,
            cache: cfg.forge_cache,
            handshake_timeout_ms: cfg.handshake_timeout_s * 1000,
            remembered: Remembered::default(),
        }))
    }

    /// Whether flows to `port` are decrypted.
    pub fn is_tls_port(&self, port: u16) -> bool {
        self.ports[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }
}

/// A worker's TLS state: the shared settings and its own forged-certificate cache
/// (with the worker's reused leaf key).
pub struct TlsWorker {
    /// Shared settings.
    pub shared: Arc<TlsShared>,
    /// Forged certificates.
    pub forge: ForgeCache,
    /// Client-leg configurations per (forged certificate, ALPN): built once each,
    /// and their session caches let returning clients resume.
    configs: std::collections::HashMap<(usize, Vec<u8>), Arc<rustls::ServerConfig>>,
}

impl TlsWorker {
    /// The client-leg configuration for `forged` with the server's ALPN choice.
    fn server_config(
        &mut self,
        forged: Arc<tlsgate_certstore::CertifiedKey>,
        alpn: Option<&[u8]>,
    ) -> Result<Arc<rustls::ServerConfig>, tlsgate_certstore::Error> {
        // The map holds the certificate (through the config), so its address is not
        // reused while the entry exists.
        let key = (Arc::as_ptr(&forged) as usize, alpn.unwrap_or_default().to_vec());
        if let Some(c) = self.configs.get(&key) {
            return Ok(c.clone());
        }
        let protocols: Vec<Vec<u8>> = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
        let cfg = server_config(self.shared.profile, Arc::new(SingleCertResolver(forged)), &protocols)?;
        if self.configs.len() >= self.shared.cache {
            self.configs.clear();
        }
        self.configs.insert(key, cfg.clone());
        Ok(cfg)
    }
}

impl TlsWorker {
    /// A worker's state; generates its leaf key.
    pub fn new(shared: Arc<TlsShared>) -> Result<Self, String> {
        let key = LeafKey::generate().map_err(|e| format!("leaf key: {e}"))?;
        let forge = ForgeCache::new(shared.ca.clone(), key, shared.cache);
        Ok(TlsWorker { shared, forge, configs: Default::default() })
    }
}

/// The flow's endpoints, for policy decisions and naming the server.
#[derive(Debug, Clone, Copy)]
pub struct FlowAddrs {
    /// Client address.
    pub client: std::net::IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Server address.
    pub server: std::net::IpAddr,
    /// Server port.
    pub port: u16,
}

/// How a flow ended (or why it was passed or blocked), with what its event
/// carries beside the [`Outcome`].
#[derive(Debug, Clone)]
pub struct Ended {
    /// Kind, leg, phase and cause.
    pub outcome: Outcome,
    /// The TLS library's own message, when it adds to the outcome's text (shown
    /// after it, never parsed).
    pub detail: String,
    /// A certificate failure's subject, issuer and chain.
    pub verify: Option<Box<VerifyFailure>>,
}

impl Ended {
    /// An end without detail.
    pub fn new(kind: EventKind, leg: Leg, phase: Phase, cause: Cause) -> Self {
        Ended { outcome: Outcome::new(kind, leg, phase, cause), detail: String::new(), verify: None }
    }

    /// With the TLS library's message.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// Where the TLS layer of a splice stands.
pub enum TlsState {
    /// Reading the ClientHello.
    Hello {
        /// rustls' ClientHello reader.
        acceptor: Box<Acceptor>,
        /// The bytes read so far, to replay if the flow is passed through.
        raw: Vec<u8>,
    },
    /// Handshaking with the server; the client waits for our ServerHello.
    Server {
        /// The client's hello, answered once the server is verified.
        accepted: Box<Accepted>,
        /// Our client towards the server.
        conn: Box<ClientConnection>,
        /// What the client asked for (SNI or the server's IP).
        requested: ServerName<'static>,
        /// The TLS state `conn` was made with (its verifier holds this
        /// handshake's failure even if a new snapshot switched the worker's).
        shared: Arc<TlsShared>,
    },
    /// Both sessions up (or handshaking with the client): plaintext relay.
    Both {
        /// Our server towards the client.
        to_client: Box<ServerConnection>,
        /// Our client towards the server.
        to_server: Box<ClientConnection>,
        /// close_notify forwarded (0: to the server, 1: to the client).
        closed: [bool; 2],
        /// Plaintext bytes relayed (0: client → server, 1: server → client).
        moved: [u64; 2],
    },
    /// Passed through: relay raw bytes, starting with `replay` towards the server.
    Raw {
        /// Bytes already read from the client.
        replay: Vec<u8>,
    },
    /// Finished with a failure; the splice tears the legs down.
    Failed,
}

/// What a TLS pump step asks of the splice.
pub enum TlsAction {
    /// Keep going.
    Continue,
    /// Switch to raw relay (the replay bytes go first); the flow's outcome.
    PassRaw(Vec<u8>, Ended),
    /// Send these bytes to the client, then close both legs.
    Abort {
        /// A TLS alert record for the client (may be empty).
        to_client: Vec<u8>,
        /// Why.
        end: Ended,
    },
    /// Both sides sent close_notify or closed: close the legs.
    Closed,
    /// Reset both legs.
    Reset(Ended),
}

/// A fatal TLS alert record (plaintext record layer, as sent before keys exist).
pub fn fatal_alert(description: u8) -> Vec<u8> {
    vec![21, 3, 3, 0, 2, 2, description]
}

/// `handshake_failure`.
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// Writes into a smoltcp socket's send buffer, as far as it has room.
struct SockWriter<'a, 'b>(&'a mut tcp::Socket<'b>);

impl Write for SockWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.send_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(std::io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(_) => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn room(s: &tcp::Socket<'_>) -> usize {
    if s.may_send() {
        s.send_capacity() - s.send_queue()
    } else {
        0
    }
}

/// Moves TLS records from a smoltcp socket into a rustls connection and back, as
/// far as each side has room. Also used by the tests' simulated hosts.
pub fn pump_conn<D>(
    sock: &mut tcp::Socket<'_>,
    conn: &mut rustls::ConnectionCommon<D>,
) -> Result<(), rustls::Error> {
    // Hand rustls only what it takes: the rest stays in the socket (its window
    // closes: back-pressure) until the plaintext has been consumed.
    while sock.can_recv() && conn.wants_read() {
        let taken = sock
            .recv(|buf| {
                let mut rd = &buf[..];
                let n = conn.read_tls(&mut rd).unwrap_or(0);
                (n, n)
            })
            .unwrap_or(0);
        if taken == 0 {
            break;
        }
        conn.process_new_packets()?;
    }
    while conn.wants_write() && room(sock) > 0 {
        if conn.write_tls(&mut SockWriter(sock)).is_err() {
            break;
        }
    }
    Ok(())
}

/// The TLS layer of one splice: its state and what it learnt on the way.
pub struct TlsFlow {
    state: TlsState,
    /// What the flow learnt: SNI, server-leg version and suite, alert received.
    pub info: TlsInfo,
}

/// What a TLS flow learnt, for its event.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The client's SNI.
    pub sni: Option<String>,
    /// The policy rule that decided after the ClientHello (name).
    pub rule: Option<String>,
    /// TLS version of the server leg (wire value), once negotiated.
    pub version: u16,
    /// Cipher suite of the server leg (wire value), once negotiated.
    pub suite: u16,
    /// With certificate validation off: what the verifier would have refused.
    pub unverified: Option<Box<VerifyFailure>>,
    /// The server asked for a client certificate (none was sent).
    pub cert_requested: bool,
    /// The server leg resumed a session (no certificate was sent or verified).
    pub server_resumed: bool,
    /// The server's chain was accepted from the verifier's cache.
    pub chain_cached: bool,
    /// The client resumed a session with the appliance.
    pub client_resumed: bool,
    /// The forged certificate came from the worker's cache.
    pub forge_cached: bool,
}

impl TlsFlow {
    /// A flow starts by reading the ClientHello.
    pub fn new() -> Self {
        TlsFlow {
            state: TlsState::Hello { acceptor: Box::default(), raw: Vec::new() },
            info: TlsInfo::default(),
        }
    }

    /// Whether both TLS sessions came up.
    pub fn is_decrypting(&self) -> bool {
        matches!(self.state, TlsState::Both { .. })
    }

    /// Advances the TLS layer with the two legs' sockets. `server_ip` names the server
    /// when the client sent no SNI.
    /// `policy` is the one the flow was decided under at SYN (consulted again with
    /// the SNI).
    pub fn pump(
        &mut self,
        client: &mut tcp::Socket<'_>,
        server: &mut tcp::Socket<'_>,
        addrs: FlowAddrs,
        w: &mut TlsWorker,
        policy: Option<&CompiledPolicy>,
    ) -> TlsAction {
        loop {
            let state = std::mem::replace(&mut self.state, TlsState::Failed);
            let (next, action) = step(state, client, server, addrs, w, policy, &mut self.info);
            self.state = next;
            match action {
                Some(a) => return a,
                None => continue,
            }
        }
    }
}

impl TlsFlow {
    /// The handshake still under way, if any: reading the ClientHello, the
    /// server's handshake, or the client's (with the forged certificate).
    pub fn handshaking(&self) -> Option<tlsgate_api::Phase> {
        use tlsgate_api::Phase;
        match &self.state {
            TlsState::Hello { .. } => Some(Phase::ClientHello),
            TlsState::Server { .. } => Some(Phase::ServerHandshake),
            TlsState::Both { to_client, .. } if to_client.is_handshaking() => Some(Phase::ClientHandshake),
            _ => None,
        }
    }

    /// Gives up a handshake that did not finish within `timeout_s`: the client is
    /// reset (no ClientHello), the server leg fails as any server-leg failure does
    /// (fatal alert to the client, remembered), or the client leg fails.
    pub fn give_up(
        &mut self,
        addrs: FlowAddrs,
        policy: Option<&CompiledPolicy>,
        timeout_s: u64,
    ) -> TlsAction {
        let state = std::mem::replace(&mut self.state, TlsState::Failed);
        match state {
            TlsState::Hello { .. } => TlsAction::Reset(
                Ended::new(EventKind::Timeout, Leg::Client, Phase::ClientHello, Cause::ClientTimeout)
                    .detail(format!("timeout {timeout_s} s")),
            ),
            TlsState::Server { requested, shared, .. } => server_failed(
                &shared,
                policy,
                addrs,
                &requested,
                server_abort(Phase::ServerHandshake, Cause::ServerTimeout)
                    .detail(format!("timeout {timeout_s} s")),
            ),
            TlsState::Both { .. } => TlsAction::Abort {
                to_client: Vec::new(),
                end: Ended::new(EventKind::Abort, Leg::Client, Phase::ClientHandshake, Cause::ClientTimeout)
                    .detail(format!("timeout {timeout_s} s")),
            },
            other => {
                self.state = other;
                TlsAction::Continue
            }
        }
    }

    /// Plaintext bytes relayed so far (client → server, server → client).
    pub fn plaintext_moved(&self) -> [u64; 2] {
        match &self.state {
            TlsState::Both { moved, .. } => *moved,
            _ => [0; 2],
        }
    }
}

impl Default for TlsFlow {
    fn default() -> Self {
        Self::new()
    }
}

fn requested_name(sni: Option<&str>, ip: std::net::IpAddr) -> ServerName<'static> {
    sni.and_then(|s| ServerName::try_from(s.to_string()).ok())
        .unwrap_or(ServerName::IpAddress(PkiIp::from(ip)))
}

/// One state transition; `None` as action means "run again in the new state".
fn step(
    state: TlsState,
    client: &mut tcp::Socket<'_>,
    server: &mut tcp::Socket<'_>,
    addrs: FlowAddrs,
    w: &mut TlsWorker,
    policy: Option<&CompiledPolicy>,
    info: &mut TlsInfo,
) -> (TlsState, Option<TlsAction>) {
    let server_ip = addrs.server;
    match state {
        TlsState::Hello { mut acceptor, mut raw } => {
            while client.can_recv() {
                let n = client
                    .recv(|buf| {
                        raw.extend_from_slice(buf);
                        let _ = acceptor.read_tls(&mut &buf[..]);
                        (buf.len(), buf.len())
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
            }
            match acceptor.accept() {
                Ok(None) => {
                    if raw.len() > 64 * 1024 || !client.may_recv() && !raw.is_empty() {
                        let why =
                            Ended::new(EventKind::Passed, Leg::Client, Phase::ClientHello, Cause::NotTls)
                                .detail("no complete ClientHello");
                        return (TlsState::Raw { replay: Vec::new() }, Some(TlsAction::PassRaw(raw, why)));
                    }
                    (TlsState::Hello { acceptor, raw }, Some(TlsAction::Continue))
                }
                Ok(Some(accepted)) => {
                    let ch = accepted.client_hello();
                    let sni = ch.server_name().map(str::to_string);
                    info.sni = sni.clone();
                    let key = (addrs.server, addrs.port, sni.clone());
                    if let Some(before) = w.shared.remembered.get(&key) {
                        let why =
                            Ended::new(EventKind::Passed, Leg::Server, Phase::ClientHello, Cause::Remembered)
                                .detail(before.text());
                        return (TlsState::Raw { replay: Vec::new() }, Some(TlsAction::PassRaw(raw, why)));
                    }
                    if let Some(policy) = policy {
                        let v =
                            policy.decide_with_sni(addrs.client, addrs.server, addrs.port, sni.as_deref());
                        info.rule = v.rule.and_then(|r| policy.rule_name(r)).map(str::to_string);
                        let cause = Cause::Policy { rule: v.rule.map(|r| r.index() as u32) };
                        match v.action {
                            Action::DoNotDecrypt => {
                                let why =
                                    Ended::new(EventKind::NotDecrypted, Leg::None, Phase::ClientHello, cause);
                                return (
                                    TlsState::Raw { replay: Vec::new() },
                                    Some(TlsAction::PassRaw(raw, why)),
                                );
                            }
                            Action::Block => {
                                let why =
                                    Ended::new(EventKind::Blocked, Leg::None, Phase::ClientHello, cause);
                                return (TlsState::Failed, Some(TlsAction::Reset(why)));
                            }
                            _ => {}
                        }
                    }
                    let alpn: Vec<Vec<u8>> =
                        ch.alpn().map(|it| it.map(<[u8]>::to_vec).collect()).unwrap_or_default();
                    let requested = requested_name(sni.as_deref(), server_ip);
                    match ClientConnection::new_with_alpn(w.shared.client.clone(), requested.clone(), alpn) {
                        Ok(conn) => (
                            TlsState::Server {
                                shared: w.shared.clone(),
                                accepted: Box::new(accepted),
                                conn: Box::new(conn),
                                requested,
                            },
                            None,
                        ),
                        Err(e) => (
                            TlsState::Failed,
                            Some(TlsAction::Abort {
                                to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                                end: server_abort(Phase::ServerHandshake, Cause::Internal)
                                    .detail(e.to_string()),
                            }),
                        ),
                    }
                }
                // Not a ClientHello we can read (not TLS, SSLv2, garbage): the
                // policy's undecryptable action (pass without a policy).
                Err((e, _alert)) => {
                    let block = policy.is_some_and(|p| p.undecryptable() == UndecryptableAction::Block);
                    if block {
                        let why =
                            Ended::new(EventKind::Blocked, Leg::Client, Phase::ClientHello, Cause::NotTls)
                                .detail(e.to_string());
                        return (TlsState::Failed, Some(TlsAction::Reset(why)));
                    }
                    let why = Ended::new(EventKind::Passed, Leg::Client, Phase::ClientHello, Cause::NotTls)
                        .detail(e.to_string());
                    (
                        TlsState::Raw { replay: Vec::new() },
                        Some(TlsAction::PassRaw(std::mem::take(&mut raw), why)),
                    )
                }
            }
        }
        TlsState::Server { accepted, mut conn, requested, shared } => {
            let pumped = pump_conn(server, &mut *conn);
            // Per-thread notes of this pump's handshake messages (nothing else ran
            // on this thread in between).
            info.cert_requested |= shared.requests.take();
            info.chain_cached |= shared.verifier.take_cache_hit();
            if !shared.verifier.enforces() {
                if let Some(f) = shared.verifier.take_failure() {
                    info.unverified = Some(f);
                }
            }
            if let Err(e) = pumped {
                // Flush our alert to the server, then report.
                let _ = conn.write_tls(&mut SockWriter(server));
                let end = server_error(&e, info, shared.verifier.take_failure(), Phase::ServerHandshake);
                let action = server_failed(&shared, policy, addrs, &requested, end);
                return (TlsState::Failed, Some(action));
            }
            if !server.may_recv() && conn.is_handshaking() {
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort {
                        to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                        end: server_abort(Phase::ServerHandshake, Cause::HandshakeClosed),
                    }),
                );
            }
            if conn.is_handshaking() {
                return (TlsState::Server { accepted, conn, requested, shared }, Some(TlsAction::Continue));
            }
            // Server verified (the verifier ran inside the handshake): forge and
            // answer the client with the server's ALPN.
            info.server_resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            info.version = conn.protocol_version().map_or(0, u16::from);
            info.suite = conn.negotiated_cipher_suite().map_or(0, |s| u16::from(s.suite()));
            let chain: Vec<_> = conn.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
            let hits = w.forge.stats().hits;
            let forged = w.forge.get_or_forge(&requested, &chain, now());
            info.forge_cached = w.forge.stats().hits > hits;
            let forged = match forged {
                Ok(k) => k,
                Err(e) => {
                    return (
                        TlsState::Failed,
                        Some(TlsAction::Abort {
                            to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                            end: server_abort(Phase::ServerHandshake, Cause::Internal)
                                .detail(format!("forging: {e}")),
                        }),
                    )
                }
            };
            let cfg = match w.server_config(forged, conn.alpn_protocol()) {
                Ok(c) => c,
                Err(e) => {
                    return (
                        TlsState::Failed,
                        Some(TlsAction::Abort {
                            to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                            end: Ended::new(
                                EventKind::Abort,
                                Leg::Client,
                                Phase::ClientHandshake,
                                Cause::Internal,
                            )
                            .detail(e.to_string()),
                        }),
                    )
                }
            };
            match accepted.into_connection(cfg) {
                Ok(to_client) => (
                    TlsState::Both {
                        to_client: Box::new(to_client),
                        to_server: conn,
                        closed: [false; 2],
                        moved: [0; 2],
                    },
                    None,
                ),
                Err((e, mut alert)) => {
                    let mut out = Vec::new();
                    let _ = alert.write_all(&mut out);
                    (
                        TlsState::Failed,
                        Some(TlsAction::Abort {
                            to_client: out,
                            end: client_error(&e, Phase::ClientHandshake),
                        }),
                    )
                }
            }
        }
        TlsState::Both { mut to_client, mut to_server, mut closed, mut moved } => {
            let phase = if to_client.is_handshaking() { Phase::ClientHandshake } else { Phase::Relay };
            if let Err(e) = pump_conn(client, &mut *to_client) {
                let _ = to_client.write_tls(&mut SockWriter(client));
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort { to_client: Vec::new(), end: client_error(&e, phase) }),
                );
            }
            if let Err(e) = pump_conn(server, &mut *to_server) {
                let _ = to_server.write_tls(&mut SockWriter(server));
                // TLS 1.3: our (empty) client certificate goes with our Finished, so
                // a server insisting on one refuses only after our handshake ended.
                let phase = if info.cert_requested { Phase::ServerHandshake } else { phase };
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort {
                        to_client: Vec::new(),
                        end: server_error(&e, info, None, phase),
                    }),
                );
            }
            let mut progress = false;
            // Plaintext client → server, then server → client, bounded by what the
            // other side accepts (rustls' buffer limit gives back-pressure).
            let up = move_plain(&mut *to_client, &mut *to_server, &mut closed[0]);
            let down = move_plain(&mut *to_server, &mut *to_client, &mut closed[1]);
            moved[0] += up as u64;
            moved[1] += down as u64;
            progress |= up > 0 || down > 0;
            // Write what was produced.
            while to_server.wants_write() && room(server) > 0 {
                if to_server.write_tls(&mut SockWriter(server)).is_err() {
                    break;
                }
            }
            while to_client.wants_write() && room(client) > 0 {
                if to_client.write_tls(&mut SockWriter(client)).is_err() {
                    break;
                }
            }
            if !to_client.is_handshaking() {
                info.client_resumed = to_client.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            }
            let done = closed[0] && closed[1] && !to_client.wants_write() && !to_server.wants_write();
            let next = TlsState::Both { to_client, to_server, closed, moved };
            if done {
                return (next, Some(TlsAction::Closed));
            }
            if progress && (client.can_recv() || server.can_recv()) {
                return (next, None);
            }
            (next, Some(TlsAction::Continue))
        }
        other => (other, Some(TlsAction::Continue)),
    }
}

/// An abort of the server leg in `phase` for `cause`.
fn server_abort(phase: Phase, cause: Cause) -> Ended {
    Ended::new(EventKind::Abort, Leg::Server, phase, cause)
}

/// The end of a server leg that failed with rustls' error `e`: its certificate
/// (`verify`: the verifier's record), a client certificate it asked for, its
/// alert, parameters in common, or its protocol; rustls' message as the detail.
fn server_error(
    e: &rustls::Error,
    info: &TlsInfo,
    verify: Option<Box<VerifyFailure>>,
    phase: Phase,
) -> Ended {
    use rustls::Error as E;
    let cause = match (e, &verify) {
        (_, Some(v)) => Cause::Certificate { reason: v.reason, depth: v.depth.min(255) as u8 },
        _ if info.cert_requested => Cause::ClientCertRequired,
        (E::AlertReceived(a), _) => Cause::AlertReceived(u8::from(*a)),
        (E::PeerIncompatible(_), _) => Cause::NoSharedVersionOrSuite,
        (E::InvalidCertificate(_), _) => {
            Cause::Certificate { reason: tlsgate_certstore::VerifyReason::Unspecified, depth: 0 }
        }
        (E::PeerMisbehaved(_) | E::InvalidMessage(_) | E::InappropriateMessage { .. }, _)
        | (E::InappropriateHandshakeMessage { .. } | E::DecryptError | E::NoCertificatesPresented, _) => {
            Cause::PeerMisbehaved
        }
        _ => Cause::Internal,
    };
    let mut end = server_abort(phase, cause).detail(e.to_string());
    end.verify = verify;
    end
}

/// The end of a client leg that failed with rustls' error `e`.
fn client_error(e: &rustls::Error, phase: Phase) -> Ended {
    use rustls::Error as E;
    let cause = match e {
        E::AlertReceived(a) => Cause::AlertReceived(u8::from(*a)),
        E::PeerIncompatible(_) => Cause::NoSharedVersionOrSuite,
        E::PeerMisbehaved(_)
        | E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::DecryptError => Cause::PeerMisbehaved,
        _ => Cause::Internal,
    };
    Ended::new(EventKind::Abort, Leg::Client, phase, cause).detail(e.to_string())
}

/// A server-leg failure: a fatal alert for the client, and with the undecryptable
/// action `pass` (the default) the server remembered so that later connections to
/// it are passed through undecrypted for a while.
fn server_failed(
    shared: &TlsShared,
    policy: Option<&CompiledPolicy>,
    addrs: FlowAddrs,
    requested: &ServerName<'static>,
    end: Ended,
) -> TlsAction {
    let (pass, ttl) = match policy {
        Some(p) => (p.undecryptable() == UndecryptableAction::Pass, p.undecryptable_memory()),
        None => (true, std::time::Duration::from_secs(3600)),
    };
    if pass {
        let name = match requested {
            ServerName::DnsName(d) => Some(d.as_ref().to_string()),
            _ => None,
        };
        shared.remembered.insert((addrs.server, addrs.port, name), ttl, end.outcome);
    }
    TlsAction::Abort { to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE), end }
}

/// Moves plaintext from `from` to `to` without an intermediate copy (rustls'
/// buffered reader hands its chunks straight to the other side's writer, which
/// takes what its buffer limit allows: back-pressure); forwards close_notify once.
/// Returns the bytes handed to `to`.
fn move_plain<A, B>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
    closed: &mut bool,
) -> usize {
    use std::io::BufRead;
    let mut moved = 0;
    loop {
        let mut reader = from.reader();
        let n = match reader.fill_buf() {
            Ok([]) => {
                // close_notify from this side: pass it on once.
                if !*closed {
                    *closed = true;
                    to.send_close_notify();
                }
                return moved;
            }
            Ok(chunk) => to.writer().write(chunk).unwrap_or(0),
            Err(_) => return moved, // WouldBlock: nothing buffered (or an unclean EOF)
        };
        if n == 0 {
            return moved;
        }
        reader.consume(n);
        moved += n;
    }
}
