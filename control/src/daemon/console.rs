//! The web console's uid (`control.console_user`). `tlsgate-console` is a
//! client of this socket like `tlsgatectl`, but a web server is what an
//! attacker on the management network reaches first, so its uid gets less
//! than an operator's: it may check logins, and ask on behalf of a named,
//! existing operator account for what its pages do. It can add no account,
//! touch no CA key, remove no trust or license, and start no key log. Each
//! such request is served and audited as the operator's (the history's and
//! `audit.log`'s `operator`).

use super::*;
use crate::audit::Outcome;

/// What the console's pages ask for, and nothing more.
fn console_may(req: &Request) -> bool {
    match req {
        // The event page's capture: never a key log, a bounded count, its own names.
        Request::CaptureStart(spec) => {
            !spec.keylog && spec.count.is_some_and(|n| n <= 200) && spec.file.starts_with("console-")
        }
        // Pins for the certificate's (or the event's) names only, never any name.
        Request::TrustAdd { any_name, .. } | Request::TrustAddFromEvent { any_name, .. } => !any_name,
        Request::Status
        | Request::Coverage { .. }
        | Request::EventsList { .. }
        | Request::EventsShow { .. }
        | Request::TrustList
        | Request::CaExport { der: false }
        | Request::LicenseLoad { .. }
        | Request::LicenseShow
        | Request::PolicyShow { .. }
        | Request::PolicyDiff { text: None }
        | Request::PolicyRuleAdd { .. }
        | Request::PolicyRuleRemove { .. }
        | Request::PolicyCommit
        | Request::PolicyRollback { .. }
        | Request::PolicyHistory
        | Request::PolicyExplain { .. } => true,
        _ => false,
    }
}

/// Views the pages refresh (not audited one by one: the events list asks every 3 s).
fn view(req: &Request) -> bool {
    matches!(
        req,
        Request::Status
            | Request::Coverage { .. }
            | Request::EventsList { .. }
            | Request::EventsShow { .. }
            | Request::TrustList
            | Request::LicenseShow
            | Request::PolicyShow { .. }
            | Request::PolicyDiff { .. }
            | Request::PolicyHistory
            | Request::PolicyExplain { .. }
    )
}

/// The request's name, as on the wire (`op`).
fn op(req: &Request) -> String {
    serde_json::to_value(req)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

impl Daemon {
    /// The console user's uid, looked up at start; `console_user` naming root
    /// or nobody that exists is refused.
    pub(super) fn console_uid(cfg: &ControlConfig) -> Result<Option<u32>> {
        let Some(name) = &cfg.console_user else { return Ok(None) };
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| Error::config("console_user", format!("{name:?}: {e}")))?
            .ok_or_else(|| Error::config("console_user", format!("no user named {name:?}")))?;
        if user.uid.is_root() {
            return Err(Error::config(
                "console_user",
                format!("{name:?} is root: give the console a user of its own"),
            ));
        }
        Ok(Some(user.uid.as_raw()))
    }

    /// Serves a request from a peer: the console's uid gets [`console_may`]'s
    /// requests on an operator's behalf, and logins; others, everything.
    pub fn handle_peer(&self, req: Request, uid: u32, pid: i32) -> Response {
        if Some(uid) != self.console_uid {
            if let Request::OnBehalf { .. } = req {
                self.audit.record(uid, pid, "on_behalf", Outcome::Refused, "not the console's uid");
                return Response::error(
                    ErrorCode::PermissionDenied,
                    "on_behalf is served only to the web console's user (control.console_user)",
                );
            }
            return self.handle(req, uid);
        }
        match req {
            Request::Ping | Request::UserLogin { .. } | Request::UserLogout { .. } => self.handle(req, uid),
            Request::OnBehalf { operator, session, request } => {
                let what = op(&request);
                let who: String = operator.chars().take(32).collect();
                if !console_may(&request) {
                    let detail = format!("{what} for {who:?}: not a console request");
                    self.audit.record(uid, pid, "on_behalf", Outcome::Refused, &detail);
                    return Response::error(
                        ErrorCode::PermissionDenied,
                        format!(
                            "the web console may not ask for {what} with these parameters: use tlsgatectl"
                        ),
                    );
                }
                // Only for an operator who logged in: the session the login opened.
                let hash = self.console_sessions().get(&session.0).and_then(|s| {
                    (s.user == operator && s.opened.elapsed() < super::users::SESSION_LIFETIME)
                        .then(|| s.hash.clone())
                });
                // The account as it was at the login: same name, same password.
                let live = hash
                    .is_some_and(|h| self.state().users.iter().any(|u| u.name == operator && u.hash == h));
                if !live {
                    let detail = format!("{what} for {who:?}: no such session");
                    self.audit.record(uid, pid, "on_behalf", Outcome::Refused, &detail);
                    return Response::error(ErrorCode::PermissionDenied, NO_SESSION);
                }
                let quiet = view(&request);
                let r = crate::audit::as_operator(&operator, || self.handle(*request, uid));
                if !quiet {
                    let (outcome, detail) = match &r {
                        Response::Error { message, .. } => (Outcome::Refused, format!("{what}: {message}")),
                        _ => (Outcome::Allowed, what),
                    };
                    crate::audit::as_operator(&operator, || {
                        self.audit.record(uid, pid, "on_behalf", outcome, &detail)
                    });
                }
                r
            }
            other => {
                let detail = format!("{} without an operator", op(&other));
                self.audit.record(uid, pid, "console_request", Outcome::Refused, &detail);
                Response::error(
                    ErrorCode::PermissionDenied,
                    "the web console's user asks only on behalf of an operator (on_behalf)",
                )
            }
        }
    }
}

/// The refusal of an `on_behalf` without a live session (the console then
/// ends its own and asks for a new login).
pub const NO_SESSION: &str = "no such operator session: log in again";
