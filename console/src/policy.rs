//! The policy: the ordered rules of the candidate (add above or below a rule,
//! remove), what a commit would change, commit, the history with rollback,
//! and why a flow would (not) be decrypted (`policy explain`, answered from the
//! dataplane's compiled matcher).

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use tlsgate_api::{Request, Response as Answer};

use crate::html::{csrf_field, date, error, esc, outcome, page};
use crate::{Console, CsrfForm, Session};

/// A rule's conditions, for the table.
fn conditions(rule: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for key in ["source", "destination", "ports", "sni", "ja4"] {
        if let Some(v) = rule.get(key).and_then(|v| v.as_array()) {
            let items: Vec<String> =
                v.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect();
            parts.push(format!("{key} {}", items.join(", ")));
        }
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join("; ")
    }
}

fn rules_of(text: &str) -> (Vec<serde_json::Value>, String) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let rules = v.get("rules").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    let default = v.get("default_action").and_then(|d| d.as_str()).unwrap_or("do-not-decrypt").to_string();
    (rules, default)
}

async fn policy_page(c: &Arc<Console>, s: &Session, result: &str) -> Result<Response, Response> {
    let mut body = result.to_string();
    let running = c.call(s, Request::PolicyShow { candidate: false }).await?;
    let candidate = c.call(s, Request::PolicyShow { candidate: true }).await?;
    let (version, differs) = match &running {
        Answer::Policy { version, candidate_differs, .. } => (*version, *candidate_differs),
        Answer::Error { message, .. } => {
            body.push_str(&error(message));
            (0, false)
        }
        _ => (0, false),
    };
    body.push_str(&format!("<p>The running policy was committed in configuration version <b id=\"policy-version\">{version}</b>.</p>"));
    let Answer::Policy { text, .. } = candidate else {
        return Ok(page("Policy", Some(s), &body));
    };
    let (rules, default) = rules_of(&text);
    if differs {
        body.push_str("<h2>Not committed yet</h2>");
        match c.call(s, Request::PolicyDiff { text: None }).await? {
            Answer::Diff { lines, warnings } => {
                body.push_str(&format!("<pre id=\"diff\">{}</pre>", esc(&lines.join("\n"))));
                for w in &warnings {
                    body.push_str(&format!("<p class=\"error\">warning: {}</p>", esc(w)));
                }
            }
            Answer::Error { message, .. } => body.push_str(&error(&message)),
            _ => {}
        }
        body.push_str(&format!(
            "<form method=\"post\" action=\"/policy/commit\">{}<button type=\"submit\" id=\"commit\">Commit</button> \
             the candidate becomes the running policy, the next configuration version</form>",
            csrf_field(s)
        ));
    }
    body.push_str(&format!(
        "<h2>Rules{}</h2><table id=\"rules\"><tr><th>#</th><th>Name</th><th>Matches</th><th>Action</th><th></th></tr>",
        if differs { " (candidate)" } else { "" }
    ));
    let mut names = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let name = r.get("name").and_then(|n| n.as_str()).unwrap_or("").to_string();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/policy/rules/remove\">{}\
             <input type=\"hidden\" name=\"name\" value=\"{}\"><button type=\"submit\">Remove</button></form></td></tr>",
            i + 1,
            esc(&name),
            esc(&conditions(r)),
            esc(r.get("action").and_then(|a| a.as_str()).unwrap_or("")),
            csrf_field(s),
            esc(&name)
        ));
        names.push(name);
    }
    body.push_str(&format!(
        "<tr><td></td><td colspan=\"2\">default action</td><td>{}</td><td></td></tr></table>",
        esc(&default)
    ));
    let positions: String = std::iter::once("<option value=\"end\">at the end</option>".to_string())
        .chain(names.iter().flat_map(|n| {
            [
                format!("<option value=\"above:{0}\">above {0}</option>", esc(n)),
                format!("<option value=\"below:{0}\">below {0}</option>", esc(n)),
            ]
        }))
        .collect();
    body.push_str(&format!(
        "<h2>Add a rule</h2><form method=\"post\" action=\"/policy/rules\">{}\
         <p><label>Name <input name=\"name\" id=\"rule-name\" required></label> \
         <label>Action <select name=\"action\" id=\"rule-action\"><option>decrypt</option><option>do-not-decrypt</option>\
         <option>block</option></select></label> <label>Position <select name=\"position\" id=\"rule-position\">{positions}</select></label></p>\
         <p>Each field a list, commas between items; empty: any.<br>\
         <label>Source <input name=\"source\" placeholder=\"198.18.0.0/24, object or group\"></label> \
         <label>Destination <input name=\"destination\"></label> <label>Ports <input name=\"ports\" placeholder=\"443, 8000-8080\"></label><br>\
         <label>SNI <input name=\"sni\" id=\"rule-sni\" placeholder=\"*.example.com\"></label> <label>JA4 <input name=\"ja4\"></label></p>\
         <p><button type=\"submit\" id=\"rule-add\">Add to the candidate</button></p></form>",
        csrf_field(s)
    ));
    body.push_str("<h2>Why would a flow (not) be decrypted?</h2>");
    body.push_str(
        "<form method=\"get\" action=\"/policy/explain\"><label>Client <input name=\"client\" id=\"explain-client\" required></label> \
         <label>Server <input name=\"server\" id=\"explain-server\" required></label> \
         <label>Port <input name=\"port\" id=\"explain-port\" value=\"443\" size=\"5\"></label> \
         <label>SNI <input name=\"sni\" id=\"explain-sni\"></label> <label>JA4 <input name=\"ja4\"></label> \
         <button type=\"submit\" id=\"explain\">Explain</button></form>",
    );
    body.push_str("<h2>History</h2>");
    match c.call(s, Request::PolicyHistory).await? {
        Answer::History { entries } => {
            body.push_str("<table id=\"history\"><tr><th>Version</th><th>Time</th><th>Who</th><th>What</th><th></th></tr>");
            for h in entries.iter().rev() {
                let who = h.operator.clone().unwrap_or_else(|| format!("uid {}", h.uid));
                let rollback = if h.policy_kept && h.version != version {
                    format!(
                        "<form method=\"post\" action=\"/policy/rollback\">{}<input type=\"hidden\" name=\"version\" value=\"{}\">\
                         <button type=\"submit\">Roll back to this policy</button></form>",
                        csrf_field(s),
                        h.version
                    )
                } else {
                    String::new()
                };
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{rollback}</td></tr>",
                    h.version,
                    esc(&date(h.time as i64)),
                    esc(&who),
                    esc(&h.what)
                ));
            }
            body.push_str("</table>");
        }
        Answer::Error { message, .. } => body.push_str(&error(&message)),
        _ => {}
    }
    Ok(page("Policy", Some(s), &body))
}

/// `GET /policy`.
pub(crate) async fn show(State(c): State<Arc<Console>>, headers: HeaderMap) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    policy_page(&c, &s, "").await
}

#[derive(Deserialize)]
pub(crate) struct RuleForm {
    csrf: String,
    name: String,
    action: String,
    position: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    ports: String,
    #[serde(default)]
    sni: String,
    #[serde(default)]
    ja4: String,
}

fn list(text: &str) -> Option<serde_json::Value> {
    let items: Vec<serde_json::Value> = text
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| serde_json::Value::String(x.to_string()))
        .collect();
    (!items.is_empty()).then_some(serde_json::Value::Array(items))
}

/// `POST /policy/rules`: a rule into the candidate (the control plane
/// validates it, naming the field that is wrong).
pub(crate) async fn rule_add(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<RuleForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let mut rule = serde_json::Map::new();
    rule.insert("name".into(), f.name.trim().into());
    for (k, v) in [
        ("source", &f.source),
        ("destination", &f.destination),
        ("ports", &f.ports),
        ("sni", &f.sni),
        ("ja4", &f.ja4),
    ] {
        if let Some(l) = list(v) {
            rule.insert(k.into(), l);
        }
    }
    rule.insert("action".into(), f.action.clone().into());
    let (above, below) = match f.position.split_once(':') {
        Some(("above", n)) => (Some(n.to_string()), None),
        Some(("below", n)) => (None, Some(n.to_string())),
        _ => (None, None),
    };
    let a =
        c.call(&s, Request::PolicyRuleAdd { rule: serde_json::Value::Object(rule), above, below }).await?;
    policy_page(&c, &s, &outcome(&a)).await
}

#[derive(Deserialize)]
pub(crate) struct NameForm {
    csrf: String,
    name: String,
}

/// `POST /policy/rules/remove`.
pub(crate) async fn rule_remove(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<NameForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let a = c.call(&s, Request::PolicyRuleRemove { name: f.name }).await?;
    policy_page(&c, &s, &outcome(&a)).await
}

/// `POST /policy/commit`.
pub(crate) async fn commit(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let a = c.call(&s, Request::PolicyCommit).await?;
    policy_page(&c, &s, &outcome(&a)).await
}

#[derive(Deserialize)]
pub(crate) struct VersionForm {
    csrf: String,
    version: u64,
}

/// `POST /policy/rollback`.
pub(crate) async fn rollback(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<VersionForm>,
) -> Result<Response, Response> {
    let s = c.posted(&headers, &f.csrf)?;
    let a = c.call(&s, Request::PolicyRollback { version: f.version }).await?;
    policy_page(&c, &s, &outcome(&a)).await
}

#[derive(Deserialize)]
pub(crate) struct ExplainQuery {
    client: String,
    server: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    sni: String,
    #[serde(default)]
    ja4: String,
}

/// `GET /policy/explain?client=&server=&port=&sni=&ja4=`.
pub(crate) async fn explain(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<ExplainQuery>,
) -> Result<Response, Response> {
    let s = c.logged_in(&headers)?;
    let title = "Policy explain";
    let (Ok(client), Ok(server)) = (q.client.trim().parse(), q.server.trim().parse()) else {
        return Ok(page(title, Some(&s), &error("client and server are IP addresses")));
    };
    let port = if q.port.trim().is_empty() { Ok(443) } else { q.port.trim().parse::<u16>() };
    let Ok(port) = port else { return Ok(page(title, Some(&s), &error("port is a number 0-65535"))) };
    let opt = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let req = Request::PolicyExplain { client, server, port, sni: opt(&q.sni), ja4: opt(&q.ja4) };
    let body = match c.call(&s, req).await? {
        Answer::Explained(e) => format!(
            "<p>{} → {}:{}{}</p><pre id=\"explanation\">{}</pre>",
            esc(q.client.trim()),
            esc(q.server.trim()),
            port,
            opt(&q.sni).map_or(String::new(), |n| format!(" SNI {}", esc(&n))),
            esc(&e.text())
        ),
        Answer::Error { message, .. } => error(&message),
        _ => String::new(),
    };
    Ok(page(title, Some(&s), &format!("{body}<p><a href=\"/policy\">Back to the policy</a></p>")))
}
