//! In-memory TLS: a client and a server connection wired back to back, no sockets.

use tlsgate_certstore::rustls::{self, ClientConnection, ServerConnection};

/// How a handshake ended.
#[derive(Debug)]
pub struct Outcome {
    /// The client's error, if it failed.
    pub client: Option<rustls::Error>,
    /// The server's error, if it failed.
    pub server: Option<rustls::Error>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.client.is_none() && self.server.is_none()
    }
}

/// Moves every pending TLS record from `from` to `to`.
fn transfer(from: &mut impl WriteTls, to: &mut impl ReadTls) -> bool {
    let mut buf = Vec::new();
    while from.wants_write_tls() {
        if from.write_tls_to(&mut buf).unwrap_or(0) == 0 {
            break;
        }
    }
    if buf.is_empty() {
        return false;
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        if to.read_tls_from(&mut rd).unwrap_or(0) == 0 {
            break;
        }
    }
    true
}

trait WriteTls {
    fn wants_write_tls(&self) -> bool;
    fn write_tls_to(&mut self, out: &mut Vec<u8>) -> std::io::Result<usize>;
}
trait ReadTls {
    fn read_tls_from(&mut self, rd: &mut &[u8]) -> std::io::Result<usize>;
}

macro_rules! conn_io {
    ($t:ty) => {
        impl WriteTls for $t {
            fn wants_write_tls(&self) -> bool {
                self.wants_write()
            }
            fn write_tls_to(&mut self, out: &mut Vec<u8>) -> std::io::Result<usize> {
                self.write_tls(out)
            }
        }
        impl ReadTls for $t {
            fn read_tls_from(&mut self, rd: &mut &[u8]) -> std::io::Result<usize> {
                self.read_tls(rd)
            }
        }
    };
}
conn_io!(ClientConnection);
conn_io!(ServerConnection);

/// Drives both ends until both finished the handshake or one failed (and its alert
/// reached the other).
pub fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Outcome {
    let mut out = Outcome { client: None, server: None };
    for _ in 0..64 {
        let moved_cs = transfer(client, server);
        if out.server.is_none() {
            if let Err(e) = server.process_new_packets() {
                out.server = Some(e);
            }
        }
        let moved_sc = transfer(server, client);
        if out.client.is_none() {
            if let Err(e) = client.process_new_packets() {
                out.client = Some(e);
            }
        }
        let done = !client.is_handshaking() && !server.is_handshaking();
        if (done && !client.wants_write() && !server.wants_write()) || (!moved_cs && !moved_sc) {
            break;
        }
    }
    // Deliver a last alert the failing side may have queued.
    if out.client.is_some() && out.server.is_none() {
        transfer(client, server);
        if let Err(e) = server.process_new_packets() {
            out.server = Some(e);
        }
    }
    if out.server.is_some() && out.client.is_none() {
        transfer(server, client);
        if let Err(e) = client.process_new_packets() {
            out.client = Some(e);
        }
    }
    out
}
