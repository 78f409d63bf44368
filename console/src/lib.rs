//! `tlsgate-console`: the operator's web console. A process of its own and a
//! client of the control plane's operator socket: it holds no key of the
//! appliance and can change nothing `tlsgatectl` cannot; logins are checked by
//! the control plane (`user_login`, Argon2id hashes, a lock per account).
//!
//! ```text
//!  browser ──HTTPS (management certificate, generated at first start or imported)──► axum over hyper
//!     /login  GET form (CSRF token in a cookie and the form) · POST ──user_login──► tlsgate-control
//!             a session: random token, Secure; HttpOnly; SameSite=Strict cookie, its own CSRF token
//!     /       status: dataplane, configuration version, profile, CA expiry, coverage
//!     /logout POST with the session's CSRF token
//! ```
//!
//! Every page is rendered on the server (no script); every answer carries a
//! strict Content-Security-Policy, `no-store` and `nosniff`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tlsgate_api::{Frame, FrameReader, Request, Response as Answer, Secret};

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

/// `O_NOFOLLOW` (Linux).
fn nix_o_nofollow() -> i32 {
    0o400000
}

/// A logged-in operator.
#[derive(Clone)]
struct Session {
    user: String,
    csrf: String,
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
const CONNECTIONS_PER_ADDRESS: usize = 16;

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
}

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
        sessions.retain(|_, s| s.seen.elapsed() < idle && s.created.elapsed() < SESSION_LIFETIME);
        let s = sessions.get_mut(&token)?;
        s.seen = Instant::now();
        Some((token, s.clone()))
    }

    fn ask(&self, req: Request) -> Result<Answer, String> {
        ask(&self.cfg.socket, req)
    }

    /// Whether `ip` may try to log in now (counted).
    fn may_try(&self, ip: IpAddr) -> bool {
        let ip = source(ip);
        let mut a = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if a.len() >= 4096 && !a.contains_key(&ip) {
            a.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
            if a.len() >= 4096 {
                return false; // logins from too many places at once: fail closed
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

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// HTML-escapes text.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: the layout around `body` (already escaped where it must be).
fn page(title: &str, user: Option<&Session>, body: &str) -> Response {
    let nav = match user {
        Some(s) => format!(
            "<nav><a href=\"/\">Status</a> <a href=\"/events\" id=\"nav-events\">Events</a> <span class=\"user\">{}</span>\
             <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"logout\">Log out</button></form></nav>",
            esc(&s.user),
            s.csrf
        ),
        None => String::new(),
    };
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t} — tlsgate</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}nav form{{display:inline}}\
         .user{{margin:0 1em;color:#555}}.error{{color:#b00}}</style></head>\
         <body>{nav}<h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    secure((StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// The headers every answer carries.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn set_cookie(r: &mut Response, name: &str, value: &str, max_age: u64) {
    let c = format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
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
    let req = Request::UserLogin { name: f.name, password: Secret(f.password) };
    let answer =
        tokio::task::spawn_blocking(move || c2.ask(req)).await.unwrap_or_else(|e| Err(e.to_string()));
    match answer {
        Ok(Answer::Done { .. }) => {
            let token = c.token();
            let session = Session {
                user: name.clone(),
                csrf: c.token(),
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
            let mut r = secure(Redirect::to("/").into_response());
            set_cookie(&mut r, "__Host-tg_session", &token, c.cfg.session_idle_s);
            set_cookie(&mut r, "__Host-tg_login", "", 0);
            r
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

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let Some((token, s)) = c.session(&headers) else { return secure(Redirect::to("/login").into_response()) };
    if f.csrf != s.csrf {
        return secure((StatusCode::FORBIDDEN, "a form without this session's token\n").into_response());
    }
    c.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(&token);
    let mut r = secure(Redirect::to("/login").into_response());
    set_cookie(&mut r, "__Host-tg_session", "", 0);
    r
}

/// Unix seconds as an RFC 3339 date.
fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn row(k: &str, v: &str) -> String {
    format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v))
}

async fn status(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((_, s)) = c.session(&headers) else { return secure(Redirect::to("/login").into_response()) };
    let (c2, user) = (c.clone(), s.user.clone());
    let (known, st, cov) = tokio::task::spawn_blocking(move || {
        let known = matches!(c2.ask(Request::UserList), Ok(Answer::Users { users }) if users.iter().any(|(n, _)| *n == user));
        (known, c2.ask(Request::Status), c2.ask(Request::Coverage { since: None }))
    })
    .await
    .unwrap_or_else(|e| (false, Err(e.to_string()), Err(String::new())));
    if !known {
        // The account was removed: its sessions end.
        c.sessions.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, x| x.user != s.user);
        return secure(Redirect::to("/login").into_response());
    }
    let mut body = String::new();
    match st {
        Ok(Answer::Status(st)) => {
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
        Ok(Answer::Error { message, .. }) | Err(message) => {
            body.push_str(&format!("<p class=\"error\">{}</p>", esc(&message)))
        }
        Ok(_) => {}
    }
    if let Ok(Answer::Coverage(r)) = cov {
        body.push_str("<h2>Decryption coverage</h2><table id=\"coverage\">");
        let share = r.share.map_or("-".into(), |s| format!("{:.1} %", s * 100.0));
        body.push_str(&row("TLS flows decrypted", &format!("{} of {} ({share})", r.decrypted, r.tls_flows)));
        for x in r.reasons.iter().filter(|x| x.flows > 0) {
            body.push_str(&row(&x.reason, &format!("{} — {}", x.flows, x.text)));
        }
        body.push_str("</table>");
    }
    page("Status", Some(&s), &body)
}

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

#[derive(Deserialize)]
struct EventsQuery {
    kind: Option<String>,
    host: Option<String>,
}

/// The newest events (100), filtered by kind and host.
async fn events(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    let Some((_, s)) = c.session(&headers) else { return Redirect::to("/login").into_response() };
    let kind = q.kind.filter(|k| !k.is_empty() && k.len() <= 32);
    let host = q.host.filter(|h| !h.is_empty() && h.len() <= 255);
    let req = Request::EventsList {
        since_ns: None,
        after_id: None,
        kind: kind.clone(),
        host: host.clone(),
        limit: Some(100),
    };
    let c2 = c.clone();
    let answer =
        tokio::task::spawn_blocking(move || c2.ask(req)).await.unwrap_or_else(|e| Err(e.to_string()));
    let mut body = format!(
        "<form method=\"get\" action=\"/events\"><label>Kind <input name=\"kind\" value=\"{}\"></label> \
         <label>Host or SNI <input name=\"host\" value=\"{}\"></label> <button type=\"submit\">Filter</button></form>",
        esc(kind.as_deref().unwrap_or("")),
        esc(host.as_deref().unwrap_or(""))
    );
    match answer {
        Ok(Answer::Events { events }) if events.is_empty() => {
            body.push_str("<p id=\"no-events\">No events.</p>")
        }
        Ok(Answer::Events { events }) => {
            body.push_str("<table id=\"events\"><tr><th>Id</th><th>Time</th><th>Kind</th><th>Client</th><th>Server</th><th>SNI</th><th>Reason</th></tr>");
            for e in events.iter().rev() {
                let reason = if e.verify_code != 0 { e.verify_text.clone() } else { e.error_detail.clone() };
                body.push_str(&format!(
                    "<tr><td><a href=\"/events/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}:{}</td><td>{}:{}</td><td>{}</td><td>{}</td></tr>",
                    date((e.time_ns / 1_000_000_000) as i64),
                    esc(&e.kind),
                    esc(&e.src_ip),
                    e.src_port,
                    esc(&e.dst_ip),
                    e.dst_port,
                    esc(&e.sni),
                    esc(&reason),
                    id = e.event_id
                ));
            }
            body.push_str("</table>");
        }
        Ok(_) | Err(_) => body.push_str("<p class=\"error\">The control plane cannot list events now.</p>"),
    }
    page("Events", Some(&s), &body)
}

/// One event, grouped like the seed's event panel.
async fn event(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Response {
    let Some((_, s)) = c.session(&headers) else { return Redirect::to("/login").into_response() };
    let c2 = c.clone();
    let answer = tokio::task::spawn_blocking(move || c2.ask(Request::EventsShow { id }))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let Ok(Answer::Events { events }) = answer else {
        let mut r = page("Event", Some(&s), "<p class=\"error\">No such event.</p>");
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let Some(e) = events.first() else {
        let mut r = page("Event", Some(&s), "<p class=\"error\">No such event.</p>");
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let group = |title: &str, rows: &[(&str, String)]| {
        let mut t = format!("<h2>{}</h2><table>", esc(title));
        for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
            t.push_str(&row(k, v));
        }
        t.push_str("</table>");
        t
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut body = String::new();
    body.push_str(&group("Source", &[("Address", e.src_ip.clone()), ("Port", e.src_port.to_string())]));
    body.push_str(&group(
        "Destination",
        &[
            ("Address", e.dst_ip.clone()),
            ("Port", e.dst_port.to_string()),
            ("Server name (SNI)", e.sni.clone()),
        ],
    ));
    body.push_str(&group(
        "Transaction",
        &[
            ("Event", e.event_id.to_string()),
            ("Time", date((e.time_ns / 1_000_000_000) as i64)),
            ("Kind", e.kind.clone()),
            ("Rule", e.rule.clone()),
            ("Session", e.session_id.clone()),
            ("Configuration version", e.config_version.to_string()),
        ],
    ));
    body.push_str(&group(
        "TLS",
        &[
            ("Version", opt(&e.tls_version)),
            ("Cipher suite", opt(&e.cipher_suite)),
            ("JA4", opt(&e.ja4)),
            ("ALPN (client / server)", format!("{} / {}", opt(&e.alpn_client), opt(&e.alpn_server))),
            ("Server certificate subject", e.server_cert_subject.clone()),
            ("Server certificate issuer", e.server_cert_issuer.clone()),
        ],
    ));
    let verify = if e.verify_code != 0 {
        format!("{} (code {}, depth {})", e.verify_text, e.verify_code, e.verify_depth)
    } else {
        String::new()
    };
    body.push_str(&group(
        "Error details",
        &[
            ("Leg", e.leg.clone()),
            ("Phase", e.phase.clone()),
            ("Verify", verify),
            ("Detail", e.error_detail.clone()),
        ],
    ));
    page(&format!("Event {}", e.event_id), Some(&s), &body)
}

/// The console's routes.
pub fn app(c: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(status))
        .route("/events", axum::routing::get(events))
        .route("/events/{id}", axum::routing::get(event))
        .route("/login", axum::routing::get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n").into_response() })
        .with_state(c)
        // Forms are small; every answer (axum's own 405/415/422 included) gets the headers.
        .layer(axum::extract::DefaultBodyLimit::max(8 << 10))
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
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let key = source(peer.ip());
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
