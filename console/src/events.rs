//! Events: the list (filtered, updating itself), one event in the seed's panel
//! groups, and the fixes an abort offers: trust the server certificate it
//! kept (the pin rules of `tlsgatectl trust add --from-event`), load a license
//! (a cipher mismatch), capture the host's next handshakes.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tlsgate_api::{CaptureSpec, EventView, Request, Response as Answer};

use crate::html::{csrf_field, date, error, esc, outcome, page, page_status, row};
use crate::{Console, CsrfForm, Session};

#[derive(Deserialize)]
pub(crate) struct Filter {
    kind: Option<String>,
    host: Option<String>,
}

impl Filter {
    fn kind(&self) -> Option<String> {
        self.kind.clone().filter(|k| !k.is_empty() && k.len() <= 32)
    }
    fn host(&self) -> Option<String> {
        self.host.clone().filter(|h| !h.is_empty() && h.len() <= 255)
    }
}

/// The newest 100 events of the filter, newest first, as table rows.
async fn rows_of(c: &Arc<Console>, s: &Session, f: &Filter) -> Result<String, Response> {
    let req = Request::EventsList {
        since_ns: None,
        after_id: None,
        kind: f.kind(),
        host: f.host(),
        limit: Some(100),
    };
    Ok(match c.call(s, req).await? {
        Answer::Events { events } if events.is_empty() => {
            "<tr><td colspan=\"7\" id=\"no-events\">No events.</td></tr>".into()
        }
        Answer::Events { events } => events.iter().rev().map(event_row).collect(),
        Answer::Error { message, .. } => {
            format!("<tr><td colspan=\"7\" class=\"error\">{}</td></tr>", esc(&message))
        }
        _ => String::new(),
    })
}

fn event_row(e: &EventView) -> String {
    let reason = if e.verify_code != 0 { e.verify_text.clone() } else { e.error_detail.clone() };
    format!(
        "<tr><td><a href=\"/events/{id}\" id=\"event-{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}:{}</td><td>{}:{}</td><td>{}</td><td>{}</td></tr>",
        date((e.time_ns / 1_000_000_000) as i64),
        esc(&e.kind),
        esc(&e.src_ip),
        e.src_port,
        esc(&e.dst_ip),
        e.dst_port,
        esc(&e.sni),
        esc(&reason),
        id = e.event_id
    )
}

/// `GET /events?kind=&host=`.
pub(crate) async fn list(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    let rows = rows_of(&c, &s, &f).await?;
    let body = format!(
        "<form method=\"get\" action=\"/events\"><label>Kind <select name=\"kind\" id=\"kind\">{kinds}</select></label> \
         <label>Host or SNI <input name=\"host\" id=\"host\" value=\"{host}\"></label> <button type=\"submit\" id=\"filter\">Filter</button> \
         <span id=\"live\">live</span></form>\
         <table id=\"events\"><thead><tr><th>Id</th><th>Time</th><th>Kind</th><th>Client</th><th>Server</th><th>SNI</th><th>Reason</th></tr></thead>\
         <tbody id=\"event-rows\">{rows}</tbody></table>",
        kinds = ["", "abort", "decrypted", "blocked", "passed"]
            .iter()
            .map(|k| format!(
                "<option value=\"{k}\"{}>{}</option>",
                if f.kind().as_deref() == Some(*k) { " selected" } else { "" },
                if k.is_empty() { "any" } else { k }
            ))
            .collect::<String>(),
        host = esc(f.host().as_deref().unwrap_or("")),
    );
    Ok(page("Events", Some(&s), &body))
}

/// `GET /events/rows?kind=&host=`: the rows alone, for the page's script.
pub(crate) async fn rows(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Result<Response, Response> {
    let Ok(s) = c.logged_in(&headers) else {
        return Err((StatusCode::UNAUTHORIZED, "log in again\n").into_response());
    };
    let rows = rows_of(&c, &s, &f).await?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], rows).into_response())
}

async fn one(c: &Arc<Console>, s: &Session, id: u64) -> Result<Option<EventView>, Response> {
    Ok(match c.call(s, Request::EventsShow { id }).await? {
        Answer::Events { mut events } if !events.is_empty() => Some(events.swap_remove(0)),
        _ => None,
    })
}

/// Whether an abort is the seed's first problem: the server accepts none of
/// the ciphers offered (on the base profile: the strong-crypto license is
/// missing).
fn cipher_mismatch(e: &EventView) -> bool {
    e.kind == "abort"
        && e.leg == "server"
        && (e.cause.as_deref() == Some("no_shared_version_or_suite")
            || e.alert_received.as_ref().is_some_and(|a| a.name.as_deref() == Some("handshake_failure")))
}

/// Whether an abort is about the server's certificate, with the chain kept.
fn certificate_abort(e: &EventView) -> bool {
    e.kind == "abort" && e.cause.as_deref() == Some("certificate") && e.chain_sha256.is_some()
}

/// `GET /events/ID`: the seed's panel groups and the fixes.
pub(crate) async fn show(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    let Some(e) = one(&c, &s, id).await? else {
        return Ok(page_status(StatusCode::NOT_FOUND, "Event", Some(&s), &error("No such event.")));
    };
    let group = |title: &str, rows: &[(&str, String)]| {
        let mut t = format!("<section><h2>{}</h2><table class=\"group\">", esc(title));
        for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
            t.push_str(&row(k, v));
        }
        t.push_str("</table></section>");
        t
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let alert = |a: &Option<tlsgate_api::AlertView>| {
        a.as_ref().map_or(String::new(), |a| {
            format!("0x{:x} {}", 0x200 | u32::from(a.code), a.name.as_deref().unwrap_or(""))
        })
    };
    let mut body = String::new();
    let summary = if e.verify_code != 0 {
        format!("{} (code {}, depth {})", e.verify_text, e.verify_code, e.verify_depth)
    } else {
        e.error_detail.clone()
    };
    if !summary.is_empty() {
        body.push_str(&format!(
            "<p class=\"{}\" id=\"summary\">{}: {}</p>",
            if e.kind == "abort" || e.kind == "blocked" { "error" } else { "ok" },
            esc(&e.kind),
            esc(&summary)
        ));
    }
    body.push_str(&actions(&s, &e));
    body.push_str("<div class=\"panel\">");
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
            ("Cause", opt(&e.cause)),
            ("Alert sent", alert(&e.alert_sent)),
            ("Alert received", alert(&e.alert_received)),
            ("Certificate verification", verify),
            ("Error", e.error_detail.clone()),
            ("Server chain kept", opt(&e.chain_sha256)),
        ],
    ));
    body.push_str("</div>");
    Ok(page(&format!("Event {}", e.event_id), Some(&s), &body))
}

/// The fixes this event offers.
fn actions(s: &Session, e: &EventView) -> String {
    let mut out = String::from("<div class=\"actions\">");
    let host = if e.sni.is_empty() { e.dst_ip.clone() } else { e.sni.clone() };
    if certificate_abort(e) {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/events/{id}/trust\">{csrf}\
             <button type=\"submit\" id=\"trust\">Trust this server certificate</button> \
             pins the certificate this server showed, for {host} only (what \
             <code>tlsgatectl trust add --from-event {id}</code> does)</form>{warn}",
            id = e.event_id,
            csrf = csrf_field(s),
            host = esc(&host),
            warn = if e.sni.is_empty() {
                String::new()
            } else {
                format!(
                    "<p class=\"error\" id=\"trust-warning\">The name {} comes from the client's ClientHello, the \
                     certificate from the server at {}: trust it only if that address is really {}. \
                     Whoever holds this certificate's key is then trusted as {} at any address.</p>",
                    esc(&e.sni),
                    esc(&e.dst_ip),
                    esc(&e.sni),
                    esc(&e.sni)
                )
            },
        ));
    }
    if cipher_mismatch(e) {
        out.push_str(
            "<p><a href=\"/licenses\" id=\"load-license\">Load license</a> — the server accepts none of the \
             ciphers offered; a strong-crypto license adds AES-256-GCM and ChaCha20-Poly1305.</p>",
        );
    }
    if e.dst_ip.parse::<std::net::IpAddr>().is_ok() {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/events/{id}/capture\">{csrf}\
             <button type=\"submit\" id=\"capture\">Capture this host's handshake</button> \
             the next flows with {ip} port {port}, both legs, to pcapng (200 packets)</form>",
            id = e.event_id,
            csrf = csrf_field(s),
            ip = esc(&e.dst_ip),
            port = e.dst_port,
        ));
    }
    out.push_str("</div>");
    out
}

/// `POST /events/ID/trust`: pin the kept server certificate.
pub(crate) async fn trust(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let a = c.call(&s, Request::TrustAddFromEvent { event_id: id, name: None, any_name: false }).await?;
    let body = format!(
        "{}<p><a href=\"/events/{id}\">Back to event {id}</a> · <a href=\"/certificates\">Certificates</a> · \
         <a href=\"/events\">Events</a></p>",
        outcome(&a)
    );
    Ok(page("Trust this server certificate", Some(&s), &body))
}

/// `POST /events/ID/capture`: capture the event's server, both legs.
pub(crate) async fn capture(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let Some(e) = one(&c, &s, id).await? else {
        return Ok(page_status(StatusCode::NOT_FOUND, "Capture", Some(&s), &error("No such event.")));
    };
    let Ok(host) = e.dst_ip.parse() else {
        return Ok(page_status(
            StatusCode::BAD_REQUEST,
            "Capture",
            Some(&s),
            &error("the event has no server address"),
        ));
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let spec = CaptureSpec {
        host,
        port: Some(e.dst_port),
        count: Some(200),
        file: format!("console-event-{id}-{now}.pcapng"),
        keylog: false,
    };
    let a = c.call(&s, Request::CaptureStart(spec)).await?;
    let result = match &a {
        Answer::Captures { captures, .. } => captures.last().map_or_else(
            || "<p class=\"ok\" id=\"result\">capture started</p>".to_string(),
            |k| {
                format!(
                    "<p class=\"ok\" id=\"result\">capture {} started: {} (in the dataplane's capture directory; \
                     <code>tlsgatectl capture list</code>)</p>",
                    k.id,
                    esc(&k.spec.file)
                )
            },
        ),
        other => outcome(other),
    };
    Ok(page(
        "Capture this host's handshake",
        Some(&s),
        &format!("{result}<p><a href=\"/events/{id}\">Back to event {id}</a></p>"),
    ))
}
