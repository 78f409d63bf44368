//! The connection a dataplane opened to the control socket, as the control plane
//! uses it: requests down (snapshots, stats, captures) with their answers matched
//! by id, and what the dataplane asks (its hello, abort chains) handled by the
//! connection's reader (`server`).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tlsgate_api::{ErrorCode, Frame, Request, Response};

/// A connected dataplane.
pub struct Link {
    writer: Mutex<UnixStream>,
    waiting: Mutex<HashMap<u64, SyncSender<Response>>>,
    next_id: AtomicU64,
    /// The configuration version the dataplane acknowledged last.
    pub applied: AtomicU64,
    /// Its process id.
    pub pid: u32,
    /// Its workers.
    pub workers: u32,
}

impl Link {
    /// A link writing to `stream` (a clone of the connection the reader reads).
    pub fn new(stream: UnixStream, pid: u32, workers: u32, running_version: u64) -> Link {
        Link {
            writer: Mutex::new(stream),
            waiting: Mutex::new(HashMap::new()),
            // Our ids are odd-numbered from high up so they never meet the
            // dataplane's own request ids in logs.
            next_id: AtomicU64::new(1 << 32),
            applied: AtomicU64::new(running_version),
            pid,
            workers,
        }
    }

    fn send(&self, id: u64, req: Request) -> std::io::Result<()> {
        let line = Frame::request(id, req).encode();
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        w.write_all(line.as_bytes())
    }

    /// Sends a request and waits for its answer.
    pub fn call(&self, req: Request, timeout: Duration) -> Response {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        if let Err(e) = self.send(id, req) {
            self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return Response::error(ErrorCode::Unavailable, format!("the dataplane connection failed: {e}"));
        }
        let answer = rx.recv_timeout(timeout);
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        answer.unwrap_or_else(|_| {
            Response::error(
                ErrorCode::Unavailable,
                format!("the dataplane did not answer within {timeout:?}"),
            )
        })
    }

    /// Sends a request without waiting (its answer is still handled: an
    /// `applied` snapshot updates [`Link::applied`]).
    pub fn post(&self, req: Request) -> std::io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(id, req)
    }

    /// A response from the dataplane (called by the connection's reader).
    pub fn answered(&self, id: u64, resp: Response) {
        if let Response::Applied { version } = &resp {
            self.applied.fetch_max(*version, Ordering::Relaxed);
        }
        if let Some(tx) = self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
            let _ = tx.try_send(resp);
        }
    }

    /// Answers a request the dataplane sent.
    pub fn respond(&self, id: u64, resp: Response) -> std::io::Result<()> {
        let line = Frame::response(id, resp).encode();
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        w.write_all(line.as_bytes())
    }
}
