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
