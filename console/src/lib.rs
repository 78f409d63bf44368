//! `tlsgate-console`: the operator's web console. A process of its own and a
//! client of the control plane's operator socket: it holds no key of the
//! appliance and can change nothing `tlsgatectl` cannot; logins are checked by
//! the control plane (`user_login`, Argon2id hashes, a lock per account).
//!
//! ```text
//!  browser ──HTTPS (management certificate, generated at first start or imported)──► axum over hyper
//!     /login  GET form (CSRF token in a cookie and the form) · POST ──user_login──► tlsgate-control
//!             a session: random token, Secure; HttpOnly; SameSite=Strict cookie, its own CSRF token
//!     every other request ──on_behalf { operator, request }──► tlsgate-control (served only to
//!             control.console_user's uid, only what these pages do; audited with the operator's name)
//!     /              status: dataplane, configuration version, profile, CA expiry, coverage
//!     /events        the list (filtered; updates itself every 3 s), /events/ID the seed's panel,
//!                    POST /events/ID/trust (pin its kept certificate), /events/ID/capture
//!     /licenses      held licenses; POST: load one
//!     /certificates  decryption CA (ca.pem), trust store; POST: import
//!     /policy        rules of the candidate, diff, history; POST rules, rules/remove, commit,
//!                    rollback; GET /policy/explain
//!     /logout        POST with the session's CSRF token
//! ```
//!
//! Pages are rendered on the server (`html.rs`, every outside value escaped);
//! the one script (`/static/console.js`) only refreshes the events list. Every
//! answer carries a strict Content-Security-Policy (scripts from the console
//! only), `no-store` and `nosniff`; every POST carries the session's CSRF token.

// Handlers answer `Result<Response, Response>`: the error is the page to
// answer at once (the login form, a refusal), made once per request.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tlsgate_api::{Frame, FrameReader, Request, Response as Answer, Secret};

mod admin;
mod events;
mod html;
mod policy;

pub use html::esc;
use html::{cookie, date, page, row, secure, set_cookie};

/// `[console]` of `/etc/tlsgate/console.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The management address and port (required: the console is off unless configured).
    pub listen: SocketAddr,
    /// The control plane's operator socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Where the generated management certificate and key are kept (0700).
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// An imported management certificate chain (PEM) and its key (PKCS#8 PEM);
    /// default: generated at first start in `state_dir`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// A session ends after this long without a request.
    #[serde(default = "default_ttl")]
    pub session_idle_s: u64,
}

fn default_socket() -> PathBuf {
    "/run/tlsgate/control.sock".into()
}
fn default_state() -> PathBuf {
    "/var/lib/tlsgate-console".into()
}
fn default_ttl() -> u64 {
    900
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    console: ConsoleConfig,
}

impl ConsoleConfig {
    /// Reads `path`; the error names the file and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<ConsoleConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let file: ConfigFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let c = file.console;
        if c.cert.is_some() != c.key.is_some() {
            anyhow::bail!("{}: console.cert and console.key go together", path.display());
        }
        if !(60..=86_400).contains(&c.session_idle_s) {
            anyhow::bail!("{}: console.session_idle_s is outside 60..=86400", path.display());
        }
        Ok(c)
    }
}

/// One request to the control plane (a connection per request).
pub fn ask(socket: &Path, req: Request) -> Result<Answer, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("the control plane ({}): {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    tlsgate_api::write_frame(&mut s, &Frame::request(1, req)).map_err(|e| e.to_string())?;
    let mut r = FrameReader::new(s);
    match r.read_frame().map_err(|e| e.to_string())? {
        tlsgate_api::framing::Read::Frame(f) => match f.body {
            tlsgate_api::Body::Response(a) => Ok(a),
            _ => Err("a request where an answer was due".into()),
        },
        other => Err(format!("no answer: {other:?}")),
    }
}

/// The management certificate: imported, or the one generated at first start
/// (self-signed for the listen address and `localhost`, kept in `state_dir`).
pub fn management_cert(c: &ConsoleConfig) -> anyhow::Result<(String, String)> {
    if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        return Ok((read(cert)?, read(key)?));
    }
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&c.state_dir)?;
    let (cert_path, key_path) = (c.state_dir.join("console.pem"), c.state_dir.join("console.key"));
    if let (Ok(cert), Ok(key)) = (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
        return Ok((cert, key));
    }
    let mut names = vec!["localhost".to_string()];
    names.push(c.listen.ip().to_string());
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "tlsgate console");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(825);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Each file written whole under a temporary name, synced, then renamed; the
    // certificate last: a start that finds no certificate makes a new pair.
    let write = |p: &Path, text: &str| -> anyhow::Result<()> {
        use std::io::Write;
        let tmp = p.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix_o_nofollow())
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        Ok(())
    };
    write(&key_path, &key.serialize_pem())?;
    write(&cert_path, &cert.pem())?;
    tracing::info!(cert = %cert_path.display(), "management certificate generated");
    Ok((cert.pem(), key.serialize_pem()))
}

/// The SHA-256 fingerprint of the first certificate of a PEM chain
/// (`AA:BB:…`, as `openssl x509 -fingerprint -sha256` prints it): operators
/// compare it with what their browser shows before they trust it.
pub fn fingerprint(cert_pem: &str) -> String {
    tlsgate_certstore::parse_certificates(cert_pem.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|der| {
            ring::digest::digest(&ring::digest::SHA256, der.as_ref())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default()
}

/// `O_NOFOLLOW` (Linux).
fn nix_o_nofollow() -> i32 {
    0o400000
}

/// A logged-in operator.
#[derive(Clone)]
pub(crate) struct Session {
    /// The operator account.
    pub(crate) user: String,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    /// The control plane's session for this login (`on_behalf` carries it).
    control: Secret,
    seen: Instant,
    created: Instant,
}

/// A session ends this long after its login, used or not.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Password checks the console has under way at most (each costs the control
/// plane an Argon2id verification); more are answered 503 at once.
const LOGINS_IN_FLIGHT: usize = 8;
/// Connections at most, in all and per client address (IPv6 per /64).
const MAX_CONNECTIONS: usize = 256;
const CONNECTIONS_PER_ADDRESS: usize = 8;
/// A request (its body included) is answered within this, or its connection closed.
const REQUEST_TIME: Duration = Duration::from_secs(15);

/// The console's state.
pub struct Console {
    cfg: ConsoleConfig,
    sessions: Mutex<HashMap<String, Session>>,
    /// Login attempts per client address (IPv6 per /64): (since, count).
    attempts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    rng: ring::rand::SystemRandom,
    logins: Arc<tokio::sync::Semaphore>,
    /// Open connections per client address (IPv6 per /64).
    connections: Mutex<HashMap<IpAddr, usize>>,
    /// Where operators logged in from (IPv6 per /64), and when last.
    operators_at: Mutex<HashMap<IpAddr, Instant>>,
}

/// Connections kept for addresses operators logged in from.
const RESERVED: usize = 32;

/// The address a limit counts: IPv4 as is, IPv6 by its /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Login attempts per client address per minute.
pub const LOGINS_PER_MINUTE: u32 = 10;
/// Sessions at most.
const MAX_SESSIONS: usize = 1024;

impl Console {
    /// A console for `cfg`.
    pub fn new(cfg: ConsoleConfig) -> Arc<Console> {
        Arc::new(Console {
            cfg,
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
            logins: Arc::new(tokio::sync::Semaphore::new(LOGINS_IN_FLIGHT)),
            connections: Mutex::new(HashMap::new()),
            operators_at: Mutex::new(HashMap::new()),
        })
    }

    fn token(&self) -> String {
        let mut b = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let token = cookie(headers, "__Host-tg_session")?;
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = Duration::from_secs(self.cfg.session_idle_s);
        let mut ended = Vec::new();
        sessions.retain(|_, s| {
            let keep = s.seen.elapsed() < idle && s.created.elapsed() < SESSION_LIFETIME;
            if !keep {
                ended.push(s.control.clone());
            }
            keep
        });
        if !ended.is_empty() {
            // Their control-plane sessions end too.
            let socket = self.cfg.socket.clone();
            tokio::task::spawn_blocking(move || {
                for session in ended {
                    let _ = ask(&socket, Request::UserLogout { session });
                }
            });
        }
        let s = sessions.get_mut(&token)?;
        s.seen = Instant::now();
        Some((token, s.clone()))
    }

    /// Whether an operator logged in from `key` within a session's lifetime.
    fn logged_in_from(&self, key: IpAddr) -> bool {
        let at = self.operators_at.lock().unwrap_or_else(PoisonError::into_inner);
        at.get(&key).is_some_and(|t| t.elapsed() < SESSION_LIFETIME)
    }

    fn ask(&self, req: Request) -> Result<Answer, String> {
        ask(&self.cfg.socket, req)
    }

    /// The session of a page's request, or the login form to go to instead.
    pub(crate) fn logged_in(&self, headers: &HeaderMap) -> Result<Session, Response> {
        self.session(headers).map(|(_, s)| s).ok_or_else(|| secure(Redirect::to("/login").into_response()))
    }

    /// The session of a form's POST, which must carry that session's token.
    pub(crate) fn posted(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
        let s = self.logged_in(headers)?;
        if !same(csrf, &s.csrf) {
            return Err(secure(
                (StatusCode::FORBIDDEN, "a form without this session's token\n").into_response(),
            ));
        }
        Ok(s)
    }

    /// Asks the control plane on behalf of the session's operator. An answer
    /// that the account is gone ends its sessions (and sends to the login
    /// form); an unreachable control plane is an error answer.
    pub(crate) async fn call(self: &Arc<Self>, s: &Session, req: Request) -> Result<Answer, Response> {
        let c = self.clone();
        let req = Request::OnBehalf {
            operator: s.user.clone(),
            session: s.control.clone(),
            request: Box::new(req),
        };
        let answer = tokio::task::spawn_blocking(move || c.ask(req))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .unwrap_or_else(|e| Answer::error(tlsgate_api::ErrorCode::Internal, e));
        if let Answer::Error { code: tlsgate_api::ErrorCode::PermissionDenied, message } = &answer {
            if message.starts_with("no such operator session") {
                // This session only (another may be live for the same operator).
                self.sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, x| x.control != s.control);
                return Err(secure(Redirect::to("/login").into_response()));
            }
        }
        Ok(answer)
    }

    /// Whether `ip` may try to log in now (counted).
    fn may_try(&self, ip: IpAddr) -> bool {
        let ip = source(ip);
        let mut a = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if a.len() >= 4096 && !a.contains_key(&ip) {
            a.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
            if a.len() >= 4096 {
                // Logins from too many places at once: forget the oldest.
                if let Some(oldest) = a.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| *k) {
                    a.remove(&oldest);
                }
            }
        }
        let e = a.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= Duration::from_secs(60) {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        e.1 <= LOGINS_PER_MINUTE
    }
}

async fn login_form(State(c): State<Arc<Console>>) -> Response {
    login_page(&c, None, StatusCode::OK)
}

fn login_page(c: &Console, error: Option<&str>, status: StatusCode) -> Response {
    let csrf = c.token();
    let err = error.map_or(String::new(), |e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)));
    let body = format!(
        "{err}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <p><label>Name <input name=\"name\" id=\"name\" autocomplete=\"username\" required></label></p>\
         <p><label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
         <p><button type=\"submit\" id=\"login\">Log in</button></p></form>"
    );
    let mut r = page("Log in", None, &body);
    *r.status_mut() = status;
    set_cookie(&mut r, "__Host-tg_login", &csrf, 600);
    r
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    name: String,
    password: String,
}

async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if cookie(&headers, "__Host-tg_login").is_none_or(|t| t != f.csrf) {
        return login_page(&c, Some("the form expired: try again"), StatusCode::FORBIDDEN);
    }
    if !c.may_try(peer.ip()) {
        tracing::warn!(peer = %peer, "console login limited");
        return login_page(&c, Some("too many attempts: wait a minute"), StatusCode::TOO_MANY_REQUESTS);
    }
    let Ok(_slot) = c.logins.clone().try_acquire_owned() else {
        return login_page(&c, Some("too many logins at once: try again"), StatusCode::SERVICE_UNAVAILABLE);
    };
    let (c2, name) = (c.clone(), f.name.clone());
    let req = Request::UserLogin { name: f.name, password: Secret(f.password), from: Some(peer.ip()) };
    let answer =
        tokio::task::spawn_blocking(move || c2.ask(req)).await.unwrap_or_else(|e| Err(e.to_string()));
    match answer {
        Ok(Answer::LoggedIn { session: control }) => {
            let token = c.token();
            let session = Session {
                user: name.clone(),
                csrf: c.token(),
                control,
                seen: Instant::now(),
                created: Instant::now(),
            };
            {
                let mut s = c.sessions.lock().unwrap_or_else(PoisonError::into_inner);
                if s.len() >= MAX_SESSIONS {
                    if let Some(oldest) = s.iter().min_by_key(|(_, v)| v.seen).map(|(k, _)| k.clone()) {
                        s.remove(&oldest);
                    }
                }
                s.insert(token.clone(), session);
            }
            tracing::info!(user = %name, peer = %peer, "console login");
            {
                let mut at = c.operators_at.lock().unwrap_or_else(PoisonError::into_inner);
                if at.len() >= 1024 {
                    at.retain(|_, t| t.elapsed() < SESSION_LIFETIME);
                    if let Some(oldest) = at.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                        at.remove(&oldest);
                    }
                }
                at.insert(source(peer.ip()), Instant::now());
            }
            let mut r = secure(Redirect::to("/").into_response());
            set_cookie(&mut r, "__Host-tg_session", &token, c.cfg.session_idle_s);
            set_cookie(&mut r, "__Host-tg_login", "", 0);
            r
        }
        Ok(Answer::Done { .. }) => {
            tracing::error!(
                "the control plane does not know this process as the console (control.console_user)"
            );
            login_page(&c, Some("the control plane cannot check logins now"), StatusCode::SERVICE_UNAVAILABLE)
        }
        Ok(Answer::Error { code: tlsgate_api::ErrorCode::PermissionDenied, .. }) => {
            tracing::warn!(user = %name.chars().take(32).collect::<String>(), peer = %peer, "console login refused");
            login_page(&c, Some("login refused: wrong name or password, or locked"), StatusCode::UNAUTHORIZED)
        }
        // Details for the log, not for whoever is at the login form.
        Ok(other) => {
            tracing::error!(answer = ?other, "console login: the control plane answered otherwise");
            login_page(&c, Some("the control plane cannot check logins now"), StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(e) => {
            tracing::error!(error = %e, "console login: the control plane is unreachable");
            login_page(&c, Some("the control plane cannot check logins now"), StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// A form that carries only the session's CSRF token (logout, commit, the
/// event page's actions).
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: String,
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let Some((token, s)) = c.session(&headers) else { return secure(Redirect::to("/login").into_response()) };
    if !same(&f.csrf, &s.csrf) {
        return secure((StatusCode::FORBIDDEN, "a form without this session's token\n").into_response());
    }
    c.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(&token);
    let (c2, control) = (c.clone(), s.control.clone());
    let _ = tokio::task::spawn_blocking(move || c2.ask(Request::UserLogout { session: control })).await;
    let mut r = secure(Redirect::to("/login").into_response());
    set_cookie(&mut r, "__Host-tg_session", "", 0);
    r
}

async fn status(State(c): State<Arc<Console>>, headers: HeaderMap) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    let st = c.call(&s, Request::Status).await?;
    let cov = c.call(&s, Request::Coverage { since: None }).await?;
    let mut body = String::new();
    match st {
        Answer::Status(st) => {
            body.push_str("<table id=\"status\">");
            body.push_str(&row(
                "Dataplane",
                &if st.dataplane_connected {
                    format!(
                        "connected (pid {}), running version {}",
                        st.dataplane_pid.unwrap_or(0),
                        st.dataplane_version
                    )
                } else {
                    "not connected".into()
                },
            ));
            body.push_str(&row("Configuration version", &st.config_version.to_string()));
            body.push_str(&row("Cipher profile", &st.profile));
            body.push_str(&row(
                "Licenses",
                &if st.licenses.is_empty() {
                    "none (base profile)".into()
                } else {
                    st.licenses
                        .iter()
                        .map(|l| format!("{} {} until {}", l.serial, l.state, l.not_after))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            ));
            body.push_str(&row(
                "Decryption CA",
                &st.ca
                    .as_ref()
                    .map_or("none".into(), |ca| format!("{} (expires {})", ca.subject, date(ca.not_after))),
            ));
            body.push_str(&row("Events", &format!("{} logged, {} lost", st.events_logged, st.events_lost)));
            body.push_str("</table>");
        }
        Answer::Error { message, .. } => body.push_str(&html::error(&message)),
        _ => {}
    }
    if let Answer::Coverage(r) = cov {
        body.push_str("<h2>Decryption coverage</h2><table id=\"coverage\">");
        let share = r.share.map_or("-".into(), |s| format!("{:.1} %", s * 100.0));
        body.push_str(&row("TLS flows decrypted", &format!("{} of {} ({share})", r.decrypted, r.tls_flows)));
        for x in r.reasons.iter().filter(|x| x.flows > 0) {
            body.push_str(&row(&x.reason, &format!("{} — {}", x.flows, x.text)));
        }
        body.push_str("</table>");
    }
    Ok(page("Status", Some(&s), &body))
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The events page's script.
async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], html::SCRIPT).into_response()
}

/// The largest form body.
const MAX_FORM: usize = 64 << 10;

/// Gives a connection's place back when it ends.
struct Release(Arc<Console>, IpAddr);

impl Drop for Release {
    fn drop(&mut self) {
        let mut conns = self.0.connections.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = conns.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&self.1);
            }
        }
    }
}

/// The console's routes.
pub fn app(c: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(status))
        .route("/events", axum::routing::get(events::list))
        .route("/events/rows", axum::routing::get(events::rows))
        .route("/events/{id}", axum::routing::get(events::show))
        .route("/events/{id}/trust", axum::routing::post(events::trust))
        .route("/events/{id}/capture", axum::routing::post(events::capture))
        .route("/licenses", axum::routing::get(admin::licenses).post(admin::license_load))
        .route("/certificates", axum::routing::get(admin::certificates).post(admin::trust_import))
        .route("/certificates/ca.pem", axum::routing::get(admin::ca_pem))
        .route("/policy", axum::routing::get(policy::show))
        .route("/policy/rules", axum::routing::post(policy::rule_add))
        .route("/policy/rules/remove", axum::routing::post(policy::rule_remove))
        .route("/policy/commit", axum::routing::post(policy::commit))
        .route("/policy/rollback", axum::routing::post(policy::rollback))
        .route("/policy/explain", axum::routing::get(policy::explain))
        .route("/static/console.js", axum::routing::get(script))
        .route("/login", axum::routing::get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n").into_response() })
        .with_state(c)
        // Forms are small (a license or a PEM chain at most); every answer
        // (axum's own 405/415/422 included) gets the headers.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        // A request that dawdles (a body sent a byte at a time) is answered 408
        // and its connection closed, so slow clients cannot hold the slots.
        .layer(axum::middleware::from_fn(
            |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(REQUEST_TIME, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => {
                        ([(header::CONNECTION, "close")], (StatusCode::REQUEST_TIMEOUT, "request too slow\n"))
                            .into_response()
                    }
                }
            },
        ))
        .layer(axum::middleware::map_response(|r: Response| async move { secure(r) }))
}

/// Serves `app` over TLS on `cfg.listen` until the process ends.
pub async fn serve(c: Arc<Console>, cert_pem: String, key_pem: String) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let config = tlsgate_certstore::service_server_config(cert_pem.as_bytes(), key_pem.as_bytes())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind(c.cfg.listen).await?;
    tracing::info!(listen = %c.cfg.listen, "tlsgate-console serving");
    let app = app(c.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Full, in all or for this address: the connection is closed at once
        // (never a wait that would stop accepting others).
        let key = source(peer.ip());
        // The last RESERVED slots are for addresses an operator logged in from
        // (within 12 h): a flood from elsewhere cannot shut them out.
        if slots.available_permits() <= RESERVED && !c.logged_in_from(key) {
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        {
            let mut conns = c.connections.lock().unwrap_or_else(PoisonError::into_inner);
            let n = conns.entry(key).or_insert(0);
            if *n >= CONNECTIONS_PER_ADDRESS {
                continue;
            }
            *n += 1;
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        let c = c.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _count = Release(c, key);
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else {
                return;
            };
            // The peer's address for the login limit (axum's ConnectInfo).
            let service =
                hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(ConnectInfo(peer))));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).max_buf_size(32 << 10);
            let conn = http.serve_connection(TokioIo::new(tls), service);
            // A slow body or a dawdling client: the connection ends within a minute.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
