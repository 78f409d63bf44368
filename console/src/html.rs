//! The pages' layout and the headers every answer carries. Pages are rendered
//! on the server; every value from outside goes through [`esc`].

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tlsgate_api::Response as Answer;

use crate::Session;

/// The value of cookie `name` (a token: 64 hex digits, or nothing).
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
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

/// The hidden field that carries the session's CSRF token in every form.
pub(crate) fn csrf_field(s: &Session) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", s.csrf)
}

/// A page: the layout around `body` (already escaped where it must be).
pub(crate) fn page(title: &str, user: Option<&Session>, body: &str) -> Response {
    let nav = match user {
        Some(s) => format!(
            "<nav><a href=\"/\" id=\"nav-status\">Status</a> <a href=\"/events\" id=\"nav-events\">Events</a> \
             <a href=\"/policy\" id=\"nav-policy\">Policy</a> <a href=\"/certificates\" id=\"nav-certificates\">Certificates</a> \
             <a href=\"/licenses\" id=\"nav-licenses\">Licenses</a> <span class=\"user\">{}</span>\
             <form method=\"post\" action=\"/logout\">{}\
             <button type=\"submit\" id=\"logout\">Log out</button></form></nav>",
            esc(&s.user),
            csrf_field(s)
        ),
        None => String::new(),
    };
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t} — tlsgate</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse;margin-bottom:1em}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}nav form,td form{{display:inline}}\
         nav a{{margin-right:1em}}.user{{margin:0 1em;color:#555}}.error{{color:#b00}}.ok{{color:#070}}\
         .actions form{{margin:.5em 0}}pre{{background:#f4f4f4;padding:.5em}}textarea{{width:60em;max-width:100%}}\
         code{{font-size:90%}}.panel{{display:grid;grid-template-columns:repeat(auto-fill,minmax(26em,1fr));gap:0 2em}}\
         .panel h2{{font-size:1.1em;margin:.6em 0 .3em}}</style><script src=\"/static/console.js\" defer></script></head>\
         <body>{nav}<h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    secure((StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// A page with a status other than 200.
pub(crate) fn page_status(status: StatusCode, title: &str, user: Option<&Session>, body: &str) -> Response {
    let mut r = page(title, user, body);
    *r.status_mut() = status;
    r
}

/// What a change answered, as a paragraph (`#result`, class `ok` or `error`).
pub(crate) fn outcome(a: &Answer) -> String {
    match a {
        Answer::Done { message, version: Some(v) } => {
            format!("<p class=\"ok\" id=\"result\">{} — configuration version {v}</p>", esc(message))
        }
        Answer::Done { message, version: None } => {
            format!("<p class=\"ok\" id=\"result\">{}</p>", esc(message))
        }
        Answer::Error { message, .. } => format!("<p class=\"error\" id=\"result\">{}</p>", esc(message)),
        _ => "<p class=\"ok\" id=\"result\">done</p>".into(),
    }
}

/// An error paragraph.
pub(crate) fn error(message: &str) -> String {
    format!("<p class=\"error\">{}</p>", esc(message))
}

/// The headers every answer carries.
pub(crate) fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("strict-transport-security", "max-age=31536000"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

pub(crate) fn set_cookie(r: &mut Response, name: &str, value: &str, max_age: u64) {
    let c = format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Unix seconds as an RFC 3339 date.
pub(crate) fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// A table row: a heading and a value, both escaped.
pub(crate) fn row(k: &str, v: &str) -> String {
    format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v))
}

/// The events page's script: the list updates itself.
pub(crate) const SCRIPT: &str = r#"// tlsgate console: the events list fetches its rows again every 3 s
// (rendered and escaped by the server, for this session only).
(function () {
  var rows = document.getElementById('event-rows');
  var live = document.getElementById('live');
  if (!rows || !live) { return; }
  var url = '/events/rows' + window.location.search;
  function tick() {
    fetch(url, { credentials: 'same-origin', cache: 'no-store', redirect: 'error' })
      .then(function (r) { if (r.status !== 200) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (html) { rows.innerHTML = html; live.textContent = 'live: updated ' + new Date().toLocaleTimeString(); })
      .catch(function () { live.textContent = 'not updating: log in again'; });
  }
  setInterval(tick, 3000);
})();
"#;
