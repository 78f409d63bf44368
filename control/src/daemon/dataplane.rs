//! Requests forwarded to the dataplane: stats, captures, learned exclusions.

use super::*;

impl Daemon {
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn dataplane_request(&self, req: Request, uid: u32) -> Response {
        let _ = uid;
        match req {
            Request::ExclusionsClear { server } => match self.link() {
                Some(link) => {
                    let resp = link.call(req, DATAPLANE_TIMEOUT);
                    if let Response::Exclusions { cleared: Some(n), .. } = &resp {
                        let which = server.map_or("all servers".to_string(), |s| s.to_string());
                        tracing::warn!(uid, cleared = n, "learned exclusions cleared ({which})");
                    }
                    resp
                }
                None => Response::error(ErrorCode::Unavailable, "the dataplane is not connected"),
            },
            Request::CaptureStart(spec) if spec.keylog => {
                // Session keys leave the appliance with such a capture: every
                // request is audited, allowed or refused (by the dataplane's file).
                let what = format!(
                    "capture with key log: host {}, port {:?}, file {}",
                    spec.host, spec.port, spec.file
                );
                let resp = match self.link() {
                    Some(link) => link.call(Request::CaptureStart(spec), DATAPLANE_TIMEOUT),
                    None => Response::error(ErrorCode::Unavailable, "the dataplane is not connected"),
                };
                let (outcome, detail) = match &resp {
                    Response::Error { message, .. } => {
                        (crate::audit::Outcome::Refused, format!("{what}: {message}"))
                    }
                    _ => (crate::audit::Outcome::Allowed, what),
                };
                self.audit.record(uid, -1, "capture_keylog", outcome, &detail);
                resp
            }
            Request::Stats
            | Request::CaptureStart(_)
            | Request::CaptureStop { .. }
            | Request::CaptureList
            | Request::ExclusionsList => match self.link() {
                Some(link) => link.call(req, DATAPLANE_TIMEOUT),
                None => Response::error(ErrorCode::Unavailable, "the dataplane is not connected"),
            },
            other => unsupported(other),
        }
    }
}
