//! Moving bytes between a splice's legs: raw (a plain splice, or a flow the TLS
//! layer passed through), and through the TLS layer (handshakes, then plaintext).

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tlsgate_api::{Leg, Phase};

use super::{ix, legs, Splice, SpliceState};
use crate::clock::Clock;
use crate::intercept::tls::{TlsAction, TlsFlow, TlsWorker};

impl Splice {
    /// Relays raw bytes both ways, the client's replayed bytes first.
    pub(super) fn relay_raw(&mut self, now_ms: u64) {
        if !self.replay.is_empty() {
            let s = self.sockets.get_mut::<tcp::Socket>(self.server_sock);
            let n = s.send_slice(&self.replay).unwrap_or(0);
            self.replay.drain(..n);
            self.relayed[0] += n as u64;
        }
        let moved_up =
            if self.replay.is_empty() { self.relay(self.client_sock, self.server_sock, 0) } else { 0 };
        let moved_down = self.relay(self.server_sock, self.client_sock, 1);
        if moved_up + moved_down > 0 {
            self.last_data_ms = now_ms;
        }
    }

    /// Runs the TLS layer; true when the splice finished.
    pub(super) fn pump_tls(&mut self, w: &mut TlsWorker, now_ms: u64, clock: &dyn Clock) -> bool {
        let handshaking = matches!(self.state, SpliceState::Handshaking);
        let (client, server) = legs(&mut self.sockets, self.client_sock, self.server_sock);
        let before = (client.recv_queue(), server.recv_queue());
        let Some(flow) = self.tls.as_mut() else { return false };
        if self.hs_phase == Some(Phase::ClientHello)
            && self.hs_since_ms == u64::MAX
            && client.recv_queue() > 0
        {
            // The ClientHello's first byte: its deadline starts now.
            self.hs_since_ms = now_ms;
        }
        let timed_out =
            handshaking && now_ms.saturating_sub(self.hs_since_ms.min(now_ms)) > self.handshake_timeout_ms;
        let action = if timed_out {
            flow.give_up(self.addrs, self.policy.as_deref(), self.handshake_timeout_ms / 1000, now_ms)
        } else {
            flow.pump(client, server, self.addrs, w, self.policy.as_deref(), now_ms, clock)
        };
        if let Some(moved) = flow.plaintext_moved() {
            self.relayed = moved;
        }
        if handshake_over(flow) && handshaking {
            self.state = SpliceState::Relaying;
        }
        let phase = flow.handshaking();
        if phase != self.hs_phase {
            // A new phase, a new deadline (the ClientHello's from its first byte).
            self.hs_phase = phase;
            let waiting = phase == Some(Phase::ClientHello) && before.0 == 0 && client.recv_queue() == 0;
            self.hs_since_ms = if waiting { u64::MAX } else { now_ms };
        }
        if (client.recv_queue(), server.recv_queue()) != before {
            self.last_data_ms = now_ms;
        }
        match action {
            TlsAction::Continue => {
                // A TCP FIN without close_notify: carry the close across.
                let fin_in = self.fin_in;
                let fin = |s: &tcp::Socket<'_>, leg: Leg| fin_in[ix(leg)] && s.recv_queue() == 0;
                if fin(client, Leg::Client) && !self.fin_from[ix(Leg::Client)] {
                    self.fin_from[ix(Leg::Client)] = true;
                    self.closed[ix(Leg::Server)] = true;
                    server.close();
                }
                if fin(server, Leg::Server) && !self.fin_from[ix(Leg::Server)] {
                    self.fin_from[ix(Leg::Server)] = true;
                    self.closed[ix(Leg::Client)] = true;
                    client.close();
                }
                false
            }
            TlsAction::PassRaw(bytes) => {
                self.replay = bytes;
                self.state = SpliceState::Relaying;
                false
            }
            TlsAction::Abort { to_client, end } => {
                let _ = client.send_slice(&to_client);
                client.close();
                server.abort();
                self.closed = [true, true];
                self.fin_from = [true, true];
                // Let the alert and FIN go out; the legs finish as they close.
                self.state = SpliceState::Closing(end);
                false
            }
            TlsAction::Reset(end) => {
                client.abort();
                server.abort();
                self.finish(end);
                true
            }
            TlsAction::Closed => {
                for (i, sock) in [client, server].into_iter().enumerate() {
                    if !self.closed[i] {
                        self.closed[i] = true;
                        sock.close();
                    }
                }
                self.fin_from = [true, true];
                false
            }
        }
    }

    /// Moves what `to` can take from `from` (straight from one socket buffer into
    /// the other); carries a FIN across once `from`'s peer has finished and
    /// everything is relayed. `dir`: 0 up, 1 down.
    pub(super) fn relay(&mut self, from: SocketHandle, to: SocketHandle, dir: usize) -> usize {
        let mut moved = 0;
        {
            let (client, server) = legs(&mut self.sockets, self.client_sock, self.server_sock);
            let (f, t) = if dir == 0 { (client, server) } else { (server, client) };
            while t.may_send() && t.send_capacity() > t.send_queue() && f.can_recv() {
                let n = f
                    .recv(|buf| {
                        let n = t.send_slice(buf).unwrap_or(0);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                moved += n;
            }
        }
        self.relayed[dir] += moved as u64;
        let f = self.sockets.get::<tcp::Socket>(from);
        let from_leg = if dir == 0 { Leg::Client } else { Leg::Server };
        let peer_finished = self.fin_in[ix(from_leg)] && f.recv_queue() == 0;
        if peer_finished && !self.fin_from[ix(from_leg)] {
            self.fin_from[ix(from_leg)] = true;
            let to_leg = if dir == 0 { Leg::Server } else { Leg::Client };
            self.closed[ix(to_leg)] = true;
            self.sockets.get_mut::<tcp::Socket>(to).close();
        }
        moved
    }
}

/// The TLS handshakes are over: relaying plaintext, or passed raw.
fn handshake_over(flow: &TlsFlow) -> bool {
    flow.handshaking().is_none()
}
