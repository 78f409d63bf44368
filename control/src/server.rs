//! The control socket: a Unix socket (mode 0660 by default, group
//! `control.socket_group`), newline-delimited [`Frame`]s, peer credentials checked
//! on every connection (root, or a member of the configured group).
//!
//! ```text
//!  tlsgatectl ──request──► handle() ──response──►            (one thread per connection)
//!  dataplane ──DataplaneHello──► Link: snapshots, stats, captures go down;
//!                                      chains come up; answers matched by id
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_api::{Body, ErrorCode, Frame, Request, Response, MAX_LINE};

use crate::daemon::Daemon;
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

/// Binds the socket: removes a stale one, sets mode and group. Refuses to take
/// over a socket another daemon still answers on.
pub fn bind(daemon: &Daemon) -> Result<(UnixListener, Option<u32>), String> {
    let path = &daemon.cfg.socket;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!("{} is served by another running tlsgate-control", path.display()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = daemon.cfg.mode()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let gid = match &daemon.cfg.socket_group {
        None => None,
        Some(name) => {
            let g = nix::unistd::Group::from_name(name)
                .map_err(|e| format!("control.socket_group {name:?}: {e}"))?
                .ok_or_else(|| format!("control.socket_group: no group named {name:?}"))?;
            std::os::unix::fs::chown(path, None, Some(g.gid.as_raw()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(g.gid.as_raw())
        }
    };
    Ok((listener, gid))
}

/// Accepts connections until the daemon stops.
pub fn serve(daemon: Arc<Daemon>, listener: UnixListener, group: Option<u32>) {
    listener.set_nonblocking(true).ok();
    while !daemon.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let d = daemon.clone();
                let _ = std::thread::Builder::new().name("tg-conn".into()).spawn(move || {
                    stream.set_nonblocking(false).ok();
                    connection(&d, stream, group);
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

fn write_frame(stream: &mut UnixStream, f: &Frame) -> std::io::Result<()> {
    stream.write_all(f.encode().as_bytes())
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at EOF. An over-long
/// line is consumed and reported as too large.
fn read_line(
    r: &mut BufReader<UnixStream>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<String, usize>>> {
    buf.clear();
    let n = std::io::Read::take(&mut *r, MAX_LINE as u64 + 2).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") && buf.len() > MAX_LINE {
        // Skip the rest of the line.
        let mut rest = Vec::new();
        r.read_until(b'\n', &mut rest)?;
        return Ok(Some(Err(buf.len() + rest.len())));
    }
    Ok(Some(Ok(String::from_utf8_lossy(buf).into_owned())))
}

fn connection(d: &Arc<Daemon>, stream: UnixStream, group: Option<u32>) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "peer credentials");
            return;
        }
    };
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let permitted = allowed(&peer, group);
    let mut link: Option<Arc<Link>> = None;
    while let Ok(Some(line)) = read_line(&mut reader, &mut buf) {
        let line = match line {
            Ok(l) => l,
            Err(len) => {
                let resp = Response::error(
                    ErrorCode::TooLarge,
                    format!("line of {len} bytes exceeds the limit of {MAX_LINE}"),
                );
                let _ = write_frame(&mut out, &Frame::response(0, resp));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let frame = match Frame::decode(&line) {
            Ok(f) => f,
            Err(e) => {
                let resp = Response::error(e.code(), e.to_string());
                let _ = write_frame(&mut out, &Frame::response(Frame::id_of(&line), resp));
                continue;
            }
        };
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
        match (frame.body, &link) {
            // The dataplane's answers to our requests.
            (Body::Response(resp), Some(l)) => l.answered(frame.id, resp),
            (Body::Response(_), None) => {}
            (Body::Request(Request::DataplaneHello { workers, pid, version, running_version }), _) => {
                let Ok(w) = out.try_clone() else { break };
                let l = Arc::new(Link::new(w, pid, workers, running_version));
                tracing::info!(version = %version, running_version, "dataplane hello");
                let _ = l.respond(
                    frame.id,
                    Response::Done { message: "hello".into(), version: Some(d.version()) },
                );
                d.attach(l.clone());
                link = Some(l);
            }
            (Body::Request(Request::Chain { sha256, pem }), Some(l)) => {
                let _ = l.respond(frame.id, d.chain_from_dataplane(&sha256, &pem));
            }
            (Body::Request(Request::Ping), Some(l)) => {
                let _ = l.respond(
                    frame.id,
                    Response::Pong {
                        process: "tlsgate-control".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    },
                );
            }
            (Body::Request(req), None) => {
                let resp = d.handle(req, peer.uid);
                if write_frame(&mut out, &Frame::response(frame.id, resp)).is_err() {
                    break;
                }
            }
            (Body::Request(_), Some(l)) => {
                let _ = l.respond(
                    frame.id,
                    Response::error(ErrorCode::Unsupported, "not on the dataplane's connection"),
                );
            }
        }
    }
    if let Some(l) = link {
        d.detach(&l);
    }
}

/// Removes the socket file (at exit).
pub fn unbind(path: &Path) {
    let _ = std::fs::remove_file(path);
}
