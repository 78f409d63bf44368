//! Licenses (the held ones; load one) and certificates (the trust store;
//! import; the decryption CA's certificate to hand to clients).

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use tlsgate_api::{Request, Response as Answer, TrustAs};

use crate::html::{csrf_field, date, error, esc, outcome, page};
use crate::{Console, Session};

async fn licenses_page(c: &Arc<Console>, s: &Session, result: &str) -> Result<Response, Response> {
    let mut body = result.to_string();
    match c.call(s, Request::LicenseShow).await? {
        Answer::Licenses { device_id, profile, licenses } => {
            body.push_str(&format!(
                "<p>Device id <code id=\"device-id\">{}</code> · cipher profile <b id=\"profile\">{}</b></p>",
                esc(&device_id),
                esc(&profile)
            ));
            if licenses.is_empty() {
                body.push_str("<p>No licenses: the base profile (AES-128-GCM).</p>");
            } else {
                body.push_str("<table id=\"licenses\"><tr><th>Serial</th><th>Features</th><th>From</th><th>Until</th><th>State</th></tr>");
                for l in &licenses {
                    body.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&l.serial),
                        esc(&l.features.join(", ")),
                        esc(&l.not_before),
                        esc(&l.not_after),
                        esc(&l.state)
                    ));
                }
                body.push_str("</table>");
            }
        }
        Answer::Error { message, .. } => body.push_str(&error(&message)),
        _ => {}
    }
    body.push_str(&format!(
        "<h2>Load license</h2><form method=\"post\" action=\"/licenses\">{}\
         <p><label>The license file, as the vendor sent it<br>\
         <textarea name=\"text\" id=\"license-text\" rows=\"8\" required></textarea></label></p>\
         <p><button type=\"submit\" id=\"license-load\">Load license</button></p></form>",
        csrf_field(s)
    ));
    Ok(page("Licenses", Some(s), &body))
}

/// `GET /licenses`.
pub(crate) async fn licenses(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    licenses_page(&c, &s, "").await
}

#[derive(Deserialize)]
pub(crate) struct LicenseForm {
    csrf: String,
    text: String,
}

/// `POST /licenses`: load a license (checked by the control plane: signature,
/// device, dates).
pub(crate) async fn license_load(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<LicenseForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let a = c.call(&s, Request::LicenseLoad { text: f.text }).await?;
    licenses_page(&c, &s, &outcome(&a)).await
}

async fn certificates_page(c: &Arc<Console>, s: &Session, result: &str) -> Result<Response, Response> {
    let mut body = result.to_string();
    body.push_str("<h2>Decryption CA</h2>");
    match c.call(s, Request::CaExport { der: false }).await? {
        Answer::Ca { info, .. } => body.push_str(&format!(
            "<p>{} · expires {} · SHA-256 {} · <a href=\"/certificates/ca.pem\" id=\"ca-export\">Download \
             the certificate</a> (PEM, for clients' trust stores)</p>",
            esc(&info.subject),
            esc(&date(info.not_after)),
            esc(&info.fingerprint)
        )),
        Answer::Error { message, .. } => body.push_str(&error(&message)),
        _ => {}
    }
    body.push_str("<h2>Trust store</h2>");
    match c.call(s, Request::TrustList).await? {
        Answer::Trust { system_bundle, system_cas, entries } => {
            body.push_str(&format!(
                "<p>System CA bundle: {}</p>",
                if system_bundle { format!("included ({system_cas} CAs)") } else { "not included".into() }
            ));
            body.push_str("<table id=\"trust\"><tr><th>Name</th><th>Kind</th><th>Trusted for</th><th>Subject</th><th>Issuer</th><th>Until</th><th>SHA-256</th></tr>");
            for e in &entries {
                let scope = match (e.kind.as_str(), e.names.is_empty()) {
                    ("pinned", false) => e.names.join(", "),
                    ("pinned", true) => "any name".into(),
                    _ => "servers it issued".into(),
                };
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&e.name),
                    esc(&e.kind),
                    esc(&scope),
                    esc(&e.subject),
                    esc(&e.issuer),
                    esc(&date(e.not_after)),
                    esc(&e.fingerprint)
                ));
            }
            body.push_str("</table>");
        }
        Answer::Error { message, .. } => body.push_str(&error(&message)),
        _ => {}
    }
    body.push_str(&format!(
        "<h2>Import</h2><form method=\"post\" action=\"/certificates\">{}\
         <p><label>Certificates (PEM)<br><textarea name=\"pem\" id=\"import-pem\" rows=\"8\" required></textarea></label></p>\
         <p><label>As <select name=\"kind\" id=\"import-kind\"><option value=\"auto\">CAs as CAs, other certificates pinned</option>\
         <option value=\"ca\">CA</option><option value=\"pinned\">pinned server certificate</option></select></label> \
         <label>Name <input name=\"name\" id=\"import-name\" placeholder=\"from the certificate\"></label> \
         <label>Pinned for names <input name=\"names\" id=\"import-names\" placeholder=\"the certificate's own\"></label></p>\
         <p><button type=\"submit\" id=\"import\">Import</button></p></form>",
        csrf_field(s)
    ));
    Ok(page("Certificates", Some(s), &body))
}

/// `GET /certificates`.
pub(crate) async fn certificates(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    certificates_page(&c, &s, "").await
}

#[derive(Deserialize)]
pub(crate) struct ImportForm {
    csrf: String,
    pem: String,
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: String,
}

/// `POST /certificates`: import CA or server certificates.
pub(crate) async fn trust_import(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<ImportForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let kind = match f.kind.as_str() {
        "ca" => TrustAs::Ca,
        "pinned" => TrustAs::Pinned,
        _ => TrustAs::Auto,
    };
    let names: Vec<String> =
        f.names.split([',', ' ']).map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
    let name = Some(f.name.trim().to_string()).filter(|n| !n.is_empty());
    let data = base64::engine::general_purpose::STANDARD.encode(f.pem.as_bytes());
    let a = c.call(&s, Request::TrustAdd { data, name, kind, names, any_name: false }).await?;
    certificates_page(&c, &s, &outcome(&a)).await
}

/// `GET /certificates/ca.pem`: the decryption CA's certificate.
pub(crate) async fn ca_pem(State(c): State<Arc<Console>>, headers: HeaderMap) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    match c.call(&s, Request::CaExport { der: false }).await? {
        Answer::Ca { cert: Some(pem), .. } => Ok((
            [
                (header::CONTENT_TYPE, "application/x-pem-file"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"tlsgate-decryption-ca.pem\""),
            ],
            pem,
        )
            .into_response()),
        Answer::Error { message, .. } => Ok((StatusCode::NOT_FOUND, format!("{message}\n")).into_response()),
        _ => Ok((StatusCode::NOT_FOUND, "no decryption CA\n").into_response()),
    }
}
