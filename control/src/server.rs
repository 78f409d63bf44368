//! The two sockets of the control plane, both Unix sockets carrying
//! newline-delimited [`Frame`]s, with the peer's credentials checked on every
//! connection:
//!
//! ```text
//!  operator socket (0660, root or control.socket_group)
//!    tlsgatectl ──request──► Daemon::handle ──response──►      (one thread per connection)
//!    dataplane_hello here ──► refused, audited
//!  dataplane socket (0600, peer uid 0 — or the control plane's own uid)
//!    tlsgate-dataplane ──DataplaneHello──► Link (one at a time): snapshots, stats,
//!                        captures go down; chains (hashed again) come up
//! ```

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tlsgate_api::framing::Read;
use tlsgate_api::{write_frame, Body, ErrorCode, Frame, FrameReader, Request, Response};

use crate::audit::Outcome;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::link::Link;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id.
    pub pid: i32,
}

/// The peer's credentials (SO_PEERCRED).
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok(Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() })
}

/// Whether `peer` may use the socket: root, or `group` is its primary group or
/// one of its supplementary groups (read from `/proc/<pid>/status`).
pub fn allowed(peer: &Peer, group: Option<u32>) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Some(g) = group else { return false };
    if peer.gid == g {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{}/status", peer.pid)).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|gs| gs.split_whitespace().any(|x| x.parse::<u32>() == Ok(g)))
    })
}

/// Both sockets, bound.
pub struct Listeners {
    /// The operator socket.
    pub operator: UnixListener,
    /// The dataplane's socket.
    pub dataplane: UnixListener,
    /// The operator socket's group.
    pub group: Option<u32>,
}

/// Binds both sockets: removes stale ones, sets modes and the operator socket's
/// group. Refuses to take over a socket another daemon still answers on.
pub fn bind(daemon: &Daemon) -> Result<Listeners> {
    let gid = match &daemon.cfg.socket_group {
        None => None,
        Some(name) => {
            let g = nix::unistd::Group::from_name(name)
                .map_err(|source| Error::SocketGroup { name: name.clone(), source })?
                .ok_or_else(|| Error::config("socket_group", format!("no group named {name:?}")))?;
            Some(g.gid.as_raw())
        }
    };
    let operator = bind_one(&daemon.cfg.socket, daemon.cfg.mode()?, gid)?;
    let dataplane = bind_one(&daemon.cfg.dataplane_socket, 0o600, None)?;
    Ok(Listeners { operator, dataplane, group: gid })
}

fn bind_one(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::file(parent))?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::SocketInUse(path.to_path_buf()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(Error::file(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(Error::file(path))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).map_err(Error::file(path))?;
    }
    Ok(listener)
}

/// Connections served at once on the operator socket (root's are not held to
/// it); one more is answered `unavailable` and closed.
pub const MAX_OPERATOR_CONNECTIONS: usize = 128;
/// Of those, one user's (so that one user holding connections open cannot keep
/// the others out).
pub const MAX_CONNECTIONS_PER_USER: usize = 32;
/// Connections waiting on the dataplane socket (one dataplane, and a few
/// refusals in flight).
pub const MAX_DATAPLANE_CONNECTIONS: usize = 4;
/// An operator connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A write to a peer that cannot complete in this long closes its connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on the dataplane socket must say hello within this.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections on both sockets until the daemon stops.
pub fn serve(daemon: Arc<Daemon>, listeners: Listeners) {
    let Listeners { operator, dataplane, group } = listeners;
    let weak = Arc::downgrade(&daemon);
    let fetcher = crate::crl::spawn(daemon.crls.clone(), daemon.stop.clone(), move || {
        if let Some(d) = weak.upgrade() {
            d.push_snapshot();
        }
    });
    if let Err(e) = &fetcher {
        tracing::error!(error = %e, "cannot start the CRL fetcher");
    }
    let d = daemon.clone();
    let dp = std::thread::Builder::new()
        .name("tg-dp-accept".into())
        .spawn(move || accept_loop(&d, dataplane, MAX_DATAPLANE_CONNECTIONS, dataplane_connection));
    accept_loop(&daemon, operator, MAX_OPERATOR_CONNECTIONS, move |d, s| operator_connection(d, s, group));
    if let Ok(t) = dp {
        let _ = t.join();
    }
}

/// Connections being served: in all, and per peer uid.
#[derive(Default)]
struct Counts {
    all: usize,
    by_uid: HashMap<u32, usize>,
}

/// Counts a connection while it is served.
struct Slot(Arc<Mutex<Counts>>, u32);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        c.all -= 1;
        if let Some(n) = c.by_uid.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                c.by_uid.remove(&self.1);
            }
        }
    }
}

/// A slot for a connection of `uid`, or why there is none.
fn take_slot(counts: &Arc<Mutex<Counts>>, uid: u32, limit: usize) -> Result<Slot, String> {
    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
    // Root is never locked out by others' connections (nor by its own).
    if uid == 0 {
        *c.by_uid.entry(uid).or_default() += 1;
        c.all += 1;
        return Ok(Slot(counts.clone(), uid));
    }
    if c.all >= limit {
        return Err(format!("{limit} connections are open: try again later"));
    }
    let mine = c.by_uid.entry(uid).or_default();
    if *mine >= MAX_CONNECTIONS_PER_USER.min(limit) {
        return Err(format!("uid {uid} has {} connections open: close some first", *mine));
    }
    *mine += 1;
    c.all += 1;
    Ok(Slot(counts.clone(), uid))
}

fn accept_loop(
    daemon: &Arc<Daemon>,
    listener: UnixListener,
    limit: usize,
    serve: impl Fn(&Arc<Daemon>, UnixStream) + Clone + Send + 'static,
) {
    listener.set_nonblocking(true).ok();
    let counts = Arc::new(Mutex::new(Counts::default()));
    while !daemon.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).ok();
                stream.set_write_timeout(Some(WRITE_TIMEOUT)).ok();
                let uid = peer_of(&stream).map_or(u32::MAX, |p| p.uid);
                let slot = match take_slot(&counts, uid, limit) {
                    Ok(s) => s,
                    Err(why) => {
                        tracing::warn!(uid, "connection refused: {why}");
                        stream.set_write_timeout(Some(Duration::from_millis(200))).ok();
                        let resp = Response::error(ErrorCode::Unavailable, why);
                        let _ = write_frame(&mut stream, &Frame::response(0, resp));
                        continue;
                    }
                };
                let d = daemon.clone();
                let serve = serve.clone();
                let _ = std::thread::Builder::new().name("tg-conn".into()).spawn(move || {
                    let _slot = slot;
                    serve(&d, stream);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The next frame; a line that is not a frame is answered with its error here
/// and skipped. `Ok(None)`: the peer closed, or sent nothing within the socket's
/// read timeout (the connection is then closed).
fn next_frame(reader: &mut FrameReader<UnixStream>, out: &mut UnixStream) -> std::io::Result<Option<Frame>> {
    loop {
        match reader.read_frame() {
            Ok(Read::Frame(f)) => return Ok(Some(*f)),
            Ok(Read::Eof) => return Ok(None),
            Ok(Read::Invalid { id, error }) => {
                write_frame(out, &Frame::response(id, Response::error(error.code(), error.to_string())))?;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

/// An operator's connection (`tlsgatectl`, scripts).
fn operator_connection(d: &Arc<Daemon>, stream: UnixStream, group: Option<u32>) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "peer credentials");
            return;
        }
    };
    stream.set_read_timeout(Some(IDLE_TIMEOUT)).ok();
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = FrameReader::new(stream);
    let permitted = allowed(&peer, group);
    while let Ok(Some(frame)) = next_frame(&mut reader, &mut out) {
        if !permitted {
            let resp = Response::error(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {} may not use the control socket (root{} only)",
                    peer.uid,
                    d.cfg.socket_group.as_ref().map_or(String::new(), |g| format!(" or group {g}"))
                ),
            );
            tracing::warn!(uid = peer.uid, pid = peer.pid, "control request refused: no permission");
            let _ = write_frame(&mut out, &Frame::response(frame.id, resp));
            break;
        }
        match frame.body {
            Body::Response(_) => {}
            Body::Request(Request::DataplaneHello { .. }) => {
                // Whoever says hello here would get the snapshots (and take the
                // link from the real dataplane): only the dataplane socket serves it.
                d.audit.record(
                    peer.uid,
                    peer.pid,
                    "dataplane_hello",
                    Outcome::Refused,
                    "on the operator socket",
                );
                let resp = Response::error(
                    ErrorCode::PermissionDenied,
                    format!(
                        "dataplane_hello is not served on the operator socket; the dataplane connects to {}",
                        d.cfg.dataplane_socket.display()
                    ),
                );
                let _ = write_frame(&mut out, &Frame::response(frame.id, resp));
                break;
            }
            Body::Request(req) => {
                let resp = d.handle_peer(req, peer.uid, peer.pid);
                if write_frame(&mut out, &Frame::response(frame.id, resp)).is_err() {
                    break;
                }
            }
        }
    }
}

/// A connection on the dataplane socket: a root peer's hello, then the link.
fn dataplane_connection(d: &Arc<Daemon>, stream: UnixStream) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "peer credentials");
            return;
        }
    };
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).ok();
    let Ok(mut out) = stream.try_clone() else { return };
    let Ok(link_stream) = stream.try_clone() else { return };
    let mut reader = FrameReader::new(stream);
    let refuse = |out: &mut UnixStream, id: u64, detail: String| {
        d.audit.record(peer.uid, peer.pid, "dataplane_hello", Outcome::Refused, &detail);
        let _ = write_frame(out, &Frame::response(id, Response::error(ErrorCode::PermissionDenied, detail)));
    };
    let Ok(Some(first)) = next_frame(&mut reader, &mut out) else { return };
    let own = nix::unistd::geteuid().as_raw();
    if peer.uid != 0 && peer.uid != own {
        refuse(&mut out, first.id, format!("uid {} may not use the dataplane socket (root only)", peer.uid));
        return;
    }
    let Body::Request(Request::DataplaneHello { workers, version, running_version, .. }) = first.body else {
        refuse(
            &mut out,
            first.id,
            "the dataplane socket serves a dataplane_hello first, and nothing else".into(),
        );
        return;
    };
    // The pid is the kernel's (SO_PEERCRED), not the one the hello claims.
    let link = Link::new(link_stream, peer.pid.max(0) as u32, workers, running_version);
    if let Err(e) = d.attach(link.clone()) {
        refuse(&mut out, first.id, format!("{e}: one dataplane at a time"));
        return;
    }
    let _ = link.respond(first.id, Response::Done { message: "hello".into(), version: Some(d.version()) });
    d.audit.record(
        peer.uid,
        peer.pid,
        "dataplane_hello",
        Outcome::Allowed,
        &format!("dataplane {version}, {workers} workers, running version {running_version}"),
    );
    // The link pings every KEEPALIVE; a dataplane that answers nothing for
    // LINK_IDLE is gone (or stuck) and its link is closed.
    reader.get_ref().set_read_timeout(Some(crate::link::LINK_IDLE)).ok();
    while let Ok(Some(frame)) = next_frame(&mut reader, &mut out) {
        match frame.body {
            // The dataplane's answers to our requests.
            Body::Response(resp) => link.answered(frame.id, resp),
            Body::Request(Request::Chain { sha256, pem }) => {
                let resp = d.chain_from_dataplane(&sha256, &pem);
                if let Response::Error { message, .. } = &resp {
                    d.audit.record(peer.uid, peer.pid, "chain", Outcome::Refused, message);
                }
                let _ = link.respond(frame.id, resp);
            }
            Body::Request(Request::CrlDistributionPoints { name, chain, urls, proven }) => {
                let resp = match d.crls.report(&name, &chain, proven) {
                    Ok(message) => Response::Done { message, version: None },
                    Err(e) => {
                        tracing::warn!(name, ?urls, error = %e, "CRL distribution points not followed");
                        Response::error(ErrorCode::Invalid, e)
                    }
                };
                let _ = link.respond(frame.id, resp);
            }
            Body::Request(Request::Ping) => {
                let _ = link.respond(
                    frame.id,
                    Response::Pong {
                        process: "tlsgate-control".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    },
                );
            }
            Body::Request(Request::SignLeaves { leaves }) => {
                let signed = d.signer.sign(leaves);
                let ids: Vec<u64> = signed.iter().map(|l| l.id).collect();
                if let Err(e) = link.respond(frame.id, Response::SignedLeaves { leaves: signed }) {
                    // Too large for a frame, or the link's queue is full: the
                    // flows waiting get a refusal rather than nothing.
                    tracing::warn!(error = %e, leaves = ids.len(), "signer: answer not sent; its leaves are refused");
                    let refused = ids
                        .into_iter()
                        .map(|id| tlsgate_api::SignedLeaf {
                            id,
                            cert: None,
                            error: Some(format!("the signer's answer was not sent: {e}")),
                        })
                        .collect();
                    if let Err(e) = link.respond(frame.id, Response::SignedLeaves { leaves: refused }) {
                        tracing::warn!(error = %e, "signer: the refusal was not sent either");
                    }
                }
            }
            Body::Request(_) => {
                let _ = link.respond(
                    frame.id,
                    Response::error(ErrorCode::Unsupported, "not on the dataplane's connection"),
                );
            }
        }
    }
    link.close();
    d.detach(&link);
}

/// Removes both socket files (at exit).
pub fn unbind(daemon: &Daemon) {
    let _ = std::fs::remove_file(&daemon.cfg.socket);
    let _ = std::fs::remove_file(&daemon.cfg.dataplane_socket);
}
