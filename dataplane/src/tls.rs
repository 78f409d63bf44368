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

use std::io::{Read, Write};
use std::sync::Arc;

use smoltcp::socket::tcp;
use tlsgate_certstore::pki_types::{IpAddr as PkiIp, ServerName, UnixTime};
use tlsgate_certstore::rustls::server::{Accepted, Acceptor};
use tlsgate_certstore::rustls::{self, ClientConfig, ClientConnection, ServerConnection};
use tlsgate_certstore::{
    client_config, server_config, CipherProfile, DecryptionCa, ForgeCache, LeafKey, ServerVerifier,
    SingleCertResolver, TrustStore, VerifyFailure,
};
use tlsgate_policy::{Action, CompiledPolicy, UndecryptableAction};

/// Settings of TLS interception (`[tls]`).
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Intercepted flows to these destination ports are decrypted (others are
    /// spliced as plain TCP).
    #[serde(default = "default_tls_ports")]
    pub ports: Vec<u16>,
    /// Decryption CA certificate (PEM).
    pub ca_cert: std::path::PathBuf,
    /// Decryption CA key (PEM).
    pub ca_key: std::path::PathBuf,
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
    ports: Vec<u64>,
    cache: usize,
    /// Server-leg failures remembered for the undecryptable `pass` action, shared
    /// by the workers (consulted once per ClientHello, never on the fast path).
    pub remembered: Remembered,
}

/// Servers whose leg failed: (address, port, SNI) → (until, reason). Later
/// connections to them are passed through undecrypted until the entry expires.
#[derive(Default)]
pub struct Remembered {
    map: std::sync::Mutex<std::collections::HashMap<ServerKey, (std::time::Instant, String)>>,
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
        reason: String,
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

    /// The reason, when this server is remembered and the entry has not expired.
    pub fn get(&self, key: &ServerKey) -> Option<String> {
        let m = self.map.lock().ok()?;
        m.get(key).filter(|(until, _)| *until > std::time::Instant::now()).map(|(_, r)| r.clone())
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

impl TlsShared {
    /// Reads the CA and the trust files; every error names the file and the cause.
    pub fn load(cfg: &TlsConfig) -> Result<Arc<TlsShared>, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let ca = DecryptionCa::import(&read(&cfg.ca_cert)?, &read(&cfg.ca_key)?, now())
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
        let verifier = ServerVerifier::new(trust.snapshot());
        let client = client_config(profile, verifier.clone(), &[]).map_err(|e| format!("tls: {e}"))?;
        let mut ports = vec![0u64; 1024];
        for &p in &cfg.ports {
            ports[usize::from(p) / 64] |= 1 << (p % 64);
        }
        Ok(Arc::new(TlsShared {
            ca: Arc::new(ca),
            verifier,
            profile,
            client,
            ports,
            cache: cfg.forge_cache,
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
    /// The decryption policy, consulted with the SNI once the ClientHello is read.
    pub policy: Option<Arc<CompiledPolicy>>,
}

impl TlsWorker {
    /// A worker's state; generates its leaf key.
    pub fn new(shared: Arc<TlsShared>, policy: Option<Arc<CompiledPolicy>>) -> Result<Self, String> {
        let key = LeafKey::generate().map_err(|e| format!("leaf key: {e}"))?;
        let forge = ForgeCache::new(shared.ca.clone(), key, shared.cache);
        Ok(TlsWorker { shared, forge, policy })
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

/// Why an intercepted TLS flow was not decrypted to the end.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TlsEnd {
    /// Not TLS or not a ClientHello we can read: passed through raw.
    Undecryptable(String),
    /// The server leg failed: what happened, and for certificate failures the
    /// verifier's record.
    ServerFailed {
        /// rustls' error (alert received, no common suite, …).
        error: String,
        /// The alert the server sent, if it sent one.
        alert_received: Option<u8>,
        /// The certificate verification failure, when that was the cause.
        verify: Option<Box<VerifyFailure>>,
    },
    /// The client refused our (forged) side: its alert or error.
    ClientFailed(String),
    /// A policy rule said do-not-decrypt once the SNI was known: relayed untouched.
    NotDecrypted {
        /// The rule (None: the default action).
        rule: Option<String>,
    },
    /// The server's leg failed before (within `undecryptable_memory_s`): passed
    /// through undecrypted, with the remembered reason.
    Remembered(String),
    /// Reset after the ClientHello: a block rule, or undecryptable traffic with the
    /// `block` action.
    Blocked {
        /// Why.
        reason: String,
    },
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
    },
    /// Both sessions up (or handshaking with the client): plaintext relay.
    Both {
        /// Our server towards the client.
        to_client: Box<ServerConnection>,
        /// Our client towards the server.
        to_server: Box<ClientConnection>,
        /// Plaintext read from one side that the other has not taken yet
        /// (0: client → server, 1: server → client).
        pending: [Vec<u8>; 2],
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
    /// Switch to raw relay (the replay bytes go first), for this reason.
    PassRaw(Vec<u8>, TlsEnd),
    /// Send these bytes to the client, then close both legs.
    Abort {
        /// A TLS alert record for the client (may be empty).
        to_client: Vec<u8>,
        /// Why.
        end: TlsEnd,
    },
    /// Both sides sent close_notify or closed: close the legs.
    Closed,
    /// Reset both legs.
    Reset(TlsEnd),
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
    pub fn pump(
        &mut self,
        client: &mut tcp::Socket<'_>,
        server: &mut tcp::Socket<'_>,
        addrs: FlowAddrs,
        w: &mut TlsWorker,
    ) -> TlsAction {
        loop {
            let state = std::mem::replace(&mut self.state, TlsState::Failed);
            let (next, action) = step(state, client, server, addrs, w, &mut self.info);
            self.state = next;
            match action {
                Some(a) => return a,
                None => continue,
            }
        }
    }
}

impl TlsFlow {
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
    info: &mut TlsInfo,
) -> (TlsState, Option<TlsAction>) {
    let server_ip = addrs.server;
    match state {
        TlsState::Hello { mut acceptor, mut raw } => {
            let mut buf = [0u8; 4096];
            while client.can_recv() {
                let n = client.recv_slice(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
                let _ = acceptor.read_tls(&mut &buf[..n]);
            }
            match acceptor.accept() {
                Ok(None) => {
                    if raw.len() > 64 * 1024 || !client.may_recv() && !raw.is_empty() {
                        let why = TlsEnd::Undecryptable("no complete ClientHello".into());
                        return (TlsState::Raw { replay: Vec::new() }, Some(TlsAction::PassRaw(raw, why)));
                    }
                    (TlsState::Hello { acceptor, raw }, Some(TlsAction::Continue))
                }
                Ok(Some(accepted)) => {
                    let ch = accepted.client_hello();
                    let sni = ch.server_name().map(str::to_string);
                    info.sni = sni.clone();
                    let key = (addrs.server, addrs.port, sni.clone());
                    if let Some(reason) = w.shared.remembered.get(&key) {
                        let why = TlsEnd::Remembered(reason);
                        return (TlsState::Raw { replay: Vec::new() }, Some(TlsAction::PassRaw(raw, why)));
                    }
                    if let Some(policy) = &w.policy {
                        let v =
                            policy.decide_with_sni(addrs.client, addrs.server, addrs.port, sni.as_deref());
                        let rule = v.rule.and_then(|r| policy.rule_name(r)).map(str::to_string);
                        info.rule = rule.clone();
                        match v.action {
                            Action::DoNotDecrypt => {
                                let why = TlsEnd::NotDecrypted { rule };
                                return (
                                    TlsState::Raw { replay: Vec::new() },
                                    Some(TlsAction::PassRaw(raw, why)),
                                );
                            }
                            Action::Block => {
                                let reason = format!("rule {}", rule.unwrap_or_else(|| "(default)".into()));
                                return (
                                    TlsState::Failed,
                                    Some(TlsAction::Reset(TlsEnd::Blocked { reason })),
                                );
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
                                end: TlsEnd::ServerFailed {
                                    error: e.to_string(),
                                    alert_received: None,
                                    verify: None,
                                },
                            }),
                        ),
                    }
                }
                // Not a ClientHello we can read (not TLS, SSLv2, garbage): the
                // policy's undecryptable action (pass without a policy).
                Err((e, _alert)) => {
                    let block =
                        w.policy.as_ref().is_some_and(|p| p.undecryptable() == UndecryptableAction::Block);
                    if block {
                        let reason = format!("undecryptable: {e}");
                        return (TlsState::Failed, Some(TlsAction::Reset(TlsEnd::Blocked { reason })));
                    }
                    (
                        TlsState::Raw { replay: Vec::new() },
                        Some(TlsAction::PassRaw(
                            std::mem::take(&mut raw),
                            TlsEnd::Undecryptable(e.to_string()),
                        )),
                    )
                }
            }
        }
        TlsState::Server { accepted, mut conn, requested } => {
            if let Err(e) = pump_conn(server, &mut *conn) {
                // Flush our alert to the server, then report.
                let _ = conn.write_tls(&mut SockWriter(server));
                let verify = w.shared.verifier.take_failure();
                let alert_received = match &e {
                    rustls::Error::AlertReceived(a) => Some(u8::from(*a)),
                    _ => None,
                };
                // With the undecryptable action `pass` (the default), later
                // connections to this server are passed through for a while.
                let (pass, ttl) = match &w.policy {
                    Some(p) => (p.undecryptable() == UndecryptableAction::Pass, p.undecryptable_memory()),
                    None => (true, std::time::Duration::from_secs(3600)),
                };
                if pass {
                    let name = match &requested {
                        ServerName::DnsName(d) => Some(d.as_ref().to_string()),
                        _ => None,
                    };
                    w.shared.remembered.insert((addrs.server, addrs.port, name), ttl, e.to_string());
                }
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort {
                        to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                        end: TlsEnd::ServerFailed { error: e.to_string(), alert_received, verify },
                    }),
                );
            }
            if !server.may_recv() && conn.is_handshaking() {
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort {
                        to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                        end: TlsEnd::ServerFailed {
                            error: "server closed during the handshake".into(),
                            alert_received: None,
                            verify: None,
                        },
                    }),
                );
            }
            if conn.is_handshaking() {
                return (TlsState::Server { accepted, conn, requested }, Some(TlsAction::Continue));
            }
            // Server verified (the verifier ran inside the handshake): forge and
            // answer the client with the server's ALPN.
            info.version = conn.protocol_version().map_or(0, u16::from);
            info.suite = conn.negotiated_cipher_suite().map_or(0, |s| u16::from(s.suite()));
            let chain: Vec<_> = conn.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
            let alpn: Vec<Vec<u8>> = conn.alpn_protocol().map(|a| vec![a.to_vec()]).unwrap_or_default();
            let forged = match w.forge.get_or_forge(&requested, &chain, now()) {
                Ok(k) => k,
                Err(e) => {
                    return (
                        TlsState::Failed,
                        Some(TlsAction::Abort {
                            to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                            end: TlsEnd::ServerFailed {
                                error: format!("forging: {e}"),
                                alert_received: None,
                                verify: None,
                            },
                        }),
                    )
                }
            };
            let cfg = match server_config(w.shared.profile, Arc::new(SingleCertResolver(forged)), &alpn) {
                Ok(c) => c,
                Err(e) => {
                    return (
                        TlsState::Failed,
                        Some(TlsAction::Abort {
                            to_client: fatal_alert(ALERT_HANDSHAKE_FAILURE),
                            end: TlsEnd::ClientFailed(e.to_string()),
                        }),
                    )
                }
            };
            match accepted.into_connection(cfg) {
                Ok(to_client) => (
                    TlsState::Both {
                        to_client: Box::new(to_client),
                        to_server: conn,
                        pending: [Vec::new(), Vec::new()],
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
                        Some(TlsAction::Abort { to_client: out, end: TlsEnd::ClientFailed(e.to_string()) }),
                    )
                }
            }
        }
        TlsState::Both { mut to_client, mut to_server, mut pending, mut closed, mut moved } => {
            if let Err(e) = pump_conn(client, &mut *to_client) {
                let _ = to_client.write_tls(&mut SockWriter(client));
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort {
                        to_client: Vec::new(),
                        end: TlsEnd::ClientFailed(e.to_string()),
                    }),
                );
            }
            if let Err(e) = pump_conn(server, &mut *to_server) {
                let _ = to_server.write_tls(&mut SockWriter(server));
                return (
                    TlsState::Failed,
                    Some(TlsAction::Abort {
                        to_client: Vec::new(),
                        end: TlsEnd::ServerFailed {
                            error: e.to_string(),
                            alert_received: None,
                            verify: None,
                        },
                    }),
                );
            }
            let mut progress = false;
            // Plaintext client → server, then server → client, bounded by what the
            // other side accepts (rustls' buffer limit gives back-pressure).
            let up = move_plain(&mut *to_client, &mut *to_server, &mut pending[0], &mut closed[0]);
            let down = move_plain(&mut *to_server, &mut *to_client, &mut pending[1], &mut closed[1]);
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
            let done = closed[0] && closed[1] && !to_client.wants_write() && !to_server.wants_write();
            let next = TlsState::Both { to_client, to_server, pending, closed, moved };
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

/// Moves plaintext from `from` to `to`; forwards close_notify once. Returns the
/// bytes handed to `to`.
fn move_plain<A, B>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
    pending: &mut Vec<u8>,
    closed: &mut bool,
) -> usize {
    let mut moved = 0;
    loop {
        if !pending.is_empty() {
            let n = to.writer().write(pending).unwrap_or(0);
            if n == 0 {
                return moved;
            }
            pending.drain(..n);
            moved += n;
            continue;
        }
        let mut buf = [0u8; 16 * 1024];
        match from.reader().read(&mut buf) {
            Ok(0) => {
                // close_notify from this side: pass it on once.
                if !*closed {
                    *closed = true;
                    to.send_close_notify();
                }
                return moved;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(_) => return moved, // WouldBlock: nothing buffered yet
        }
    }
}
