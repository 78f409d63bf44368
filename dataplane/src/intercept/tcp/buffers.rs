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
        for h in [self.client_sock, self.server_sock] {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.recv_capacity() < bytes {
                let _ = s.replace_buffers(
                    tcp::SocketBuffer::new(vec![0; bytes]),
                    tcp::SocketBuffer::new(vec![0; bytes]),
                );
            }
        }
        let full = [self.client_sock, self.server_sock]
            .iter()
            .all(|h| self.sockets.get::<tcp::Socket>(*h).recv_capacity() >= bytes);
        self.buffers = if full { Buffers::Full } else { Buffers::UsedSmall };
        full
    }
}
