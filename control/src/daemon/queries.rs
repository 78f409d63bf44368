//! Events: list and show (from the index).

use super::*;

impl Daemon {
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn events_request(&self, req: Request, uid: u32) -> Response {
        let _ = uid;
        match req {
            Request::EventsList { since_ns, after_id, kind, host, limit } => Response::Events {
                events: self.events.list(&Filter {
                    since_ns,
                    after_id,
                    kind,
                    host,
                    limit: Some(limit.unwrap_or(100)),
                }),
            },
            Request::EventsShow { id } => match self.events.get(id) {
                Some(e) => Response::Events { events: vec![e] },
                None => Response::error(
                    ErrorCode::NotFound,
                    format!("event {id} is not among the last {} events", self.cfg.events_indexed),
                ),
            },
            other => unsupported(other),
        }
    }
}
