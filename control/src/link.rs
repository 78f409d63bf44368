//! The connection a dataplane opened to the dataplane socket, as the control
//! plane uses it: requests down (snapshots, stats, captures) with their answers
//! matched by id, and what the dataplane asks (its hello, abort chains) handled by
//! the connection's reader (`server`).
//!
//! ```text
//!  callers ──send──► bounded queue (QUEUE frames) ──► writer thread ──► socket (WRITE_TIMEOUT)
//!                      full: refused at once            idle KEEPALIVE: ping
//!                                                       write fails or times out: link closed
//! ```
//!
//! Nothing that calls the link ever waits on the socket: a dataplane that stops
//! reading fills the queue, later sends are refused with a message, and the
//! writer's timeout closes the link (the reader then detaches it), so `status`,
//! commits and the rest of the control plane go on.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tlsgate_api::{ErrorCode, Frame, Request, Response, MAX_LINE};

/// Frames waiting for the writer.
pub const QUEUE: usize = 64;
/// A ping goes down when nothing else did for this long.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// The dataplane is gone when nothing came up for this long (it answers pings).
pub const LINK_IDLE: Duration = Duration::from_secs(35);
/// A write to the dataplane that cannot complete in this long closes the link.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected dataplane.
pub struct Link {
    queue: SyncSender<String>,
    stream: UnixStream,
    closed: Arc<AtomicBool>,
    waiting: Mutex<HashMap<u64, SyncSender<Response>>>,
    next_id: AtomicU64,
    /// The configuration version the dataplane acknowledged last.
    pub applied: AtomicU64,
    /// Its process id (the kernel's, from the socket).
    pub pid: u32,
    /// Its workers.
    pub workers: u32,
}

impl Link {
    /// A link writing to `stream` (a clone of the connection the reader reads),
    /// with its writer thread.
    pub fn new(stream: UnixStream, pid: u32, workers: u32, running_version: u64) -> Arc<Link> {
        let (queue, rx) = sync_channel(QUEUE);
        let closed = Arc::new(AtomicBool::new(false));
        if let Ok(w) = stream.try_clone() {
            let closed = closed.clone();
            let spawned = std::thread::Builder::new()
                .name("tg-link-write".into())
                .spawn(move || writer(w, rx, &closed));
            if spawned.is_err() {
                tracing::error!("cannot start the link's writer thread");
            }
        }
        Arc::new(Link {
            queue,
            stream,
            closed,
            waiting: Mutex::new(HashMap::new()),
            // Our ids start high up so they never meet the dataplane's own request
            // ids in logs.
            next_id: AtomicU64::new(1 << 32),
            applied: AtomicU64::new(running_version),
            pid,
            workers,
        })
    }

    fn enqueue(&self, frame: &Frame) -> std::io::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the dataplane link is closed"));
        }
        let line = frame.encode();
        if line.len() > MAX_LINE + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a frame of {} bytes exceeds the limit of {MAX_LINE}", line.len()),
            ));
        }
        self.queue.try_send(line).map_err(|e| match e {
            TrySendError::Full(_) => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("the dataplane is not reading ({QUEUE} frames queued)"),
            ),
            TrySendError::Disconnected(_) => {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the dataplane link is closed")
            }
        })
    }

    /// Sends a request and waits for its answer.
    pub fn call(&self, req: Request, timeout: Duration) -> Response {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        if let Err(e) = self.enqueue(&Frame::request(id, req)) {
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
        self.enqueue(&Frame::request(id, req))
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
        self.enqueue(&Frame::response(id, resp))
    }

    /// Closes the connection (both directions): the reader ends, the writer ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Whether the link was closed (by either side or a failed write).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// The writer thread: the queue to the socket, a ping when idle; a failed or
/// timed-out write closes the connection.
fn writer(mut w: UnixStream, rx: Receiver<String>, closed: &AtomicBool) {
    w.set_write_timeout(Some(WRITE_TIMEOUT)).ok();
    loop {
        let line = match rx.recv_timeout(KEEPALIVE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => Frame::request(0, Request::Ping).encode(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = w.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "writing to the dataplane failed: closing its link");
            closed.store(true, Ordering::Relaxed);
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}
