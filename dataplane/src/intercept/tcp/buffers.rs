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

/// Without data either way for this long, a splice whose buffers grew gives its
/// send buffers back (down to `intercept.buffer_kib`).
pub const SHRINK_AFTER_MS: u64 = 2000;

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
    /// now (nothing is allocated for one that cannot: out-of-order data waiting
    /// in a receive buffer that must grow); a send buffer that alone is too small
    /// grows alone. Returns whether both legs have them.
    fn enlarge(&mut self, bytes: usize) -> bool {
        for h in [self.client_sock, self.server_sock] {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.recv_capacity() < bytes {
                if s.can_replace_buffers() {
                    let tx = s.send_capacity().max(bytes);
                    let _ = s.replace_buffers(
                        tcp::SocketBuffer::new(vec![0; bytes]),
                        tcp::SocketBuffer::new(vec![0; tx]),
                    );
                }
            } else if s.send_capacity() < bytes {
                let _ = s.replace_send_buffer(tcp::SocketBuffer::new(vec![0; bytes]));
            }
        }
        [self.client_sock, self.server_sock].iter().all(|h| {
            let s = self.sockets.get::<tcp::Socket>(*h);
            s.recv_capacity() >= bytes && s.send_capacity() >= bytes
        })
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

    /// Whether its buffers should double now, and if so to what size and at what
    /// cost: with full buffers, a leg has half its send buffer or more in flight
    /// (sent, not yet acknowledged) and its peer offers a window larger than that
    /// buffer, so the buffer, not the peer, holds the transfer back (a path whose
    /// bandwidth × delay is near what it holds). Data that merely waits for a
    /// closed window (a slow reader) is not in flight and does not count. Both
    /// sockets must be able to swap now (a receive buffer that must grow: no
    /// out-of-order data waiting). Returns the size of each buffer after
    /// the doubling (at most `max`) and the bytes the four buffers grow by.
    pub fn doubling(&self, max: usize) -> Option<(usize, usize)> {
        if self.buffers != Buffers::Full {
            return None;
        }
        let legs = [self.client_sock, self.server_sock].map(|h| self.sockets.get::<tcp::Socket>(h));
        let held_back = legs.iter().any(|s| {
            let cap = s.send_capacity();
            s.bytes_in_flight() >= cap / 2 && s.remote_window() > cap
        });
        if !held_back {
            return None;
        }
        let now = legs.iter().map(|s| s.recv_capacity().min(s.send_capacity())).min().unwrap_or(0);
        let to = now.saturating_mul(2).min(max);
        // A receive buffer that must grow is swapped only without out-of-order
        // data waiting (a send buffer grows alone any time).
        if to <= now || legs.iter().any(|s| s.recv_capacity() < to && !s.can_replace_buffers()) {
            return None;
        }
        let more = legs
            .iter()
            .map(|s| to.saturating_sub(s.recv_capacity()) + to.saturating_sub(s.send_capacity()))
            .sum();
        Some((to, more))
    }

    /// Doubles its buffers to `to` bytes each, as [`Splice::doubling`] said;
    /// returns the bytes they grew by.
    pub fn double(&mut self, to: usize) -> usize {
        let before = self.buffer_bytes();
        self.enlarge(to);
        let grew = self.buffer_bytes().saturating_sub(before);
        if grew > 0 {
            self.send_grown = true;
        }
        grew
    }

    /// When a splice whose buffers grew should give its send buffers back:
    /// [`SHRINK_AFTER_MS`] after its last data, or after its last try (a send
    /// buffer still held data); `u64::MAX` when they did not grow.
    pub(super) fn shrink_due_ms(&self) -> u64 {
        if self.send_grown {
            self.last_data_ms.max(self.shrink_tried_ms) + SHRINK_AFTER_MS
        } else {
            u64::MAX
        }
    }

    /// A splice whose buffers grew and that has had no data for
    /// [`SHRINK_AFTER_MS`] gives its send buffers back down to `full` bytes each,
    /// where nothing is queued (patched smoltcp; tried again [`SHRINK_AFTER_MS`]
    /// later where something is). Its receive buffers keep their
    /// size: a smaller one would pull back the window already offered. Returns
    /// the bytes freed.
    pub fn shrink_idle(&mut self, now_ms: u64, full: usize) -> usize {
        if now_ms < self.shrink_due_ms() {
            return 0;
        }
        self.shrink_tried_ms = now_ms;
        let mut freed = 0;
        let mut all = true;
        for h in [self.client_sock, self.server_sock] {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            let cap = s.send_capacity();
            if cap > full {
                // Only an empty one (nothing unacknowledged): checked before
                // anything is allocated.
                if s.send_queue() == 0 && s.replace_send_buffer(tcp::SocketBuffer::new(vec![0; full])).is_ok()
                {
                    freed += cap - full;
                } else {
                    all = false;
                }
            }
        }
        if all {
            self.send_grown = false;
        }
        freed
    }
}
