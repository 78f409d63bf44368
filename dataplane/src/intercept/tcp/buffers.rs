//! A splice's buffers: small until the connection is used (no payload byte yet:
//! what a flood of half-open connections costs), then full if the memory budget
//! holds them (patched smoltcp swaps them, `third_party/smoltcp/TLSGATE.md`).

use smoltcp::socket::tcp;

use super::Splice;

/// A splice's buffers: small until the connection is used (a payload byte either
/// way), then full (`intercept.buffer_kib` each) if the memory budget holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffers {
    /// No payload byte yet: small buffers, a slot of its source's quota, and the
    /// first-byte deadline.
    Small,
    /// Used, but the budget had no room for full buffers yet: small buffers (slow,
    /// working); growing is tried again with the next payload.
    UsedSmall,
    /// Full buffers.
    Full,
}

/// Small buffers of a half-open splice: the client leg's receive buffer holds a
/// ClientHello of several segments (post-quantum ones are ~2 KiB); nothing is
/// sent before the connection is used, so the send buffers only carry the
/// handshakes.
pub(super) const SMALL_CLIENT_RX: usize = 4096;
/// The server leg's receive buffer while half-open (a server that speaks first
/// makes the splice used).
pub(super) const SMALL_SERVER_RX: usize = 1024;
/// A send buffer while half-open.
pub(super) const SMALL_TX: usize = 256;

/// Bytes of the four buffers of a half-open splice.
pub const SMALL_BUFFERS: usize = SMALL_CLIENT_RX + SMALL_SERVER_RX + 2 * SMALL_TX;

impl Splice {
    /// Its buffers: small until used, then full.
    pub fn buffers(&self) -> Buffers {
        self.buffers
    }

    /// The connection is used, but its buffers stay small for now (the memory
    /// budget is spent).
    pub fn stay_small(&mut self) {
        self.buffers = Buffers::UsedSmall;
    }

    /// Gives both legs full buffers of `bytes` each (patched smoltcp: what the small
    /// ones hold moves over; the window offered grows). A socket that cannot swap
    /// yet (out-of-order data waiting) keeps its small buffers until the next try.
    /// Returns whether both legs have full buffers.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let full = self.enlarge(bytes);
        self.buffers = if full { Buffers::Full } else { Buffers::UsedSmall };
        full
    }

    /// Gives both legs buffers of at least `bytes` each, where a socket can swap
    /// now; returns whether both have them.
    fn enlarge(&mut self, bytes: usize) -> bool {
        for h in [self.client_sock, self.server_sock] {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.recv_capacity() < bytes {
                let _ = s.replace_buffers(
                    tcp::SocketBuffer::new(vec![0; bytes]),
                    tcp::SocketBuffer::new(vec![0; bytes]),
                );
            }
        }
        [self.client_sock, self.server_sock]
            .iter()
            .all(|h| self.sockets.get::<tcp::Socket>(*h).recv_capacity() >= bytes)
    }

    /// Bytes of its four buffers.
    pub fn buffer_bytes(&self) -> usize {
        [self.client_sock, self.server_sock]
            .iter()
            .map(|h| {
                let s = self.sockets.get::<tcp::Socket>(*h);
                s.recv_capacity() + s.send_capacity()
            })
            .sum()
    }

    /// With full buffers, a leg's send buffer is at least half full: that much
    /// of what the splice relays waits for the peer's acknowledgement, so its
    /// buffers may hold a bulk transfer back (a path whose bandwidth × delay is
    /// near what they hold). Linux sizes its receive buffers from a similar
    /// signal (twice what arrived in a round trip).
    pub fn send_buffer_pressed(&self) -> bool {
        self.buffers == Buffers::Full
            && [self.client_sock, self.server_sock].iter().any(|h| {
                let s = self.sockets.get::<tcp::Socket>(*h);
                s.send_queue() >= s.send_capacity() / 2
            })
    }

    /// Doubles the buffers of a splice whose send buffer is pressed
    /// ([`Splice::send_buffer_pressed`]), up to `max` bytes each. Returns the bytes
    /// its buffers grew by (0: at `max` already, or not now: a socket with
    /// out-of-order data waiting keeps its buffers until the next try).
    pub fn double(&mut self, max: usize) -> usize {
        let now = [self.client_sock, self.server_sock]
            .iter()
            .map(|h| self.sockets.get::<tcp::Socket>(*h).recv_capacity())
            .min()
            .unwrap_or(0);
        let to = now.saturating_mul(2).min(max);
        if to <= now {
            return 0;
        }
        let before = self.buffer_bytes();
        self.enlarge(to);
        self.buffer_bytes().saturating_sub(before)
    }
}
