//! The Both state: both sessions up (or the client's handshake with the forged
//! certificate under way); plaintext relayed between them. Also the plumbing
//! between smoltcp sockets and rustls connections that every state uses.

use std::io::Write;

use smoltcp::socket::tcp;
use tlsgate_api::Phase;
use tlsgate_certstore::rustls::{self, ClientConnection, ServerConnection};

use super::{client, server, Ctx, Step, TlsAction, TlsState};

/// A fatal TLS alert record (plaintext record layer, as sent before keys exist).
pub fn fatal_alert(description: u8) -> Vec<u8> {
    vec![21, 3, 3, 0, 2, 2, description]
}

/// `handshake_failure`.
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// Writes into a smoltcp socket's send buffer, as far as it has room.
pub(super) struct SockWriter<'a, 'b>(pub(super) &'a mut tcp::Socket<'b>);

impl Write for SockWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.send_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(std::io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(_) => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn room(s: &tcp::Socket<'_>) -> usize {
    if s.may_send() {
        s.send_capacity() - s.send_queue()
    } else {
        0
    }
}

/// Moves TLS records from a smoltcp socket into a rustls connection and back, as
/// far as each side has room. Also used by the tests' simulated hosts.
pub fn pump_conn<D>(
    sock: &mut tcp::Socket<'_>,
    conn: &mut rustls::ConnectionCommon<D>,
) -> Result<(), rustls::Error> {
    // Hand rustls only what it takes: the rest stays in the socket (its window
    // closes: back-pressure) until the plaintext has been consumed.
    while sock.can_recv() && conn.wants_read() {
        let taken = sock
            .recv(|buf| {
                let mut rd = &buf[..];
                let n = conn.read_tls(&mut rd).unwrap_or(0);
                (n, n)
            })
            .unwrap_or(0);
        if taken == 0 {
            break;
        }
        conn.process_new_packets()?;
    }
    while conn.wants_write() && room(sock) > 0 {
        if conn.write_tls(&mut SockWriter(sock)).is_err() {
            break;
        }
    }
    Ok(())
}

pub(super) fn step(
    mut to_client: Box<ServerConnection>,
    mut to_server: Box<ClientConnection>,
    mut closed: [bool; 2],
    mut moved: [u64; 2],
    cx: &mut Ctx<'_, '_, '_>,
) -> Step {
    let phase = if to_client.is_handshaking() { Phase::ClientHandshake } else { Phase::Relay };
    if let Err(e) = pump_conn(cx.client, &mut *to_client) {
        let _ = to_client.write_tls(&mut SockWriter(cx.client));
        let end = client::error(&e, phase);
        return (TlsState::Failed, Some(TlsAction::Abort { to_client: Vec::new(), end }));
    }
    if let Err(e) = pump_conn(cx.server, &mut *to_server) {
        let _ = to_server.write_tls(&mut SockWriter(cx.server));
        // TLS 1.3: our (empty) client certificate goes with our Finished, so a
        // server insisting on one refuses only after our handshake ended.
        let phase = if cx.info.cert_requested { Phase::ServerHandshake } else { phase };
        let end = server::error(&e, cx.info, None, phase);
        if cx.info.cert_requested {
            // A server-leg handshake failure like any other.
            let shared = cx.w.shared.clone();
            server::learn(&shared, cx.policy, cx.addrs, cx.info, &end, cx.now_ms);
        }
        return (TlsState::Failed, Some(TlsAction::Abort { to_client: Vec::new(), end }));
    }
    // Plaintext client → server, then server → client, bounded by what the other
    // side accepts (rustls' buffer limit gives back-pressure).
    let up = move_plain(&mut *to_client, &mut *to_server, &mut closed[0]);
    let down = move_plain(&mut *to_server, &mut *to_client, &mut closed[1]);
    moved[0] += up as u64;
    moved[1] += down as u64;
    // Write what was produced.
    while to_server.wants_write() && room(cx.server) > 0 {
        if to_server.write_tls(&mut SockWriter(cx.server)).is_err() {
            break;
        }
    }
    while to_client.wants_write() && room(cx.client) > 0 {
        if to_client.write_tls(&mut SockWriter(cx.client)).is_err() {
            break;
        }
    }
    if !to_client.is_handshaking() {
        cx.info.client_resumed = to_client.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    }
    let done = closed[0] && closed[1] && !to_client.wants_write() && !to_server.wants_write();
    let next = TlsState::Both { to_client, to_server, closed, moved };
    if done {
        return (next, Some(TlsAction::Closed));
    }
    if (up > 0 || down > 0) && (cx.client.can_recv() || cx.server.can_recv()) {
        return (next, None);
    }
    (next, Some(TlsAction::Continue))
}
/// Moves plaintext from `from` to `to` without an intermediate copy (rustls'
/// buffered reader hands its chunks straight to the other side's writer, which
/// takes what its buffer limit allows: back-pressure); forwards close_notify once.
/// Returns the bytes handed to `to`.
fn move_plain<A, B>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
    closed: &mut bool,
) -> usize {
    use std::io::BufRead;
    let mut moved = 0;
    loop {
        let mut reader = from.reader();
        let n = match reader.fill_buf() {
            Ok([]) => {
                // close_notify from this side: pass it on once.
                if !*closed {
                    *closed = true;
                    to.send_close_notify();
                }
                return moved;
            }
            Ok(chunk) => to.writer().write(chunk).unwrap_or(0),
            Err(_) => return moved, // WouldBlock: nothing buffered (or an unclean EOF)
        };
        if n == 0 {
            return moved;
        }
        reader.consume(n);
        moved += n;
    }
}
