//! `tg-xfer`: a bounded TCP bulk transfer with end-to-end checksums, for the lab tests.
//!
//! ```text
//! tg-xfer serve ADDR:PORT              accept one connection, read to EOF,
//!                                      print "<bytes> <sha256hex>", exit
//! tg-xfer send ADDR:PORT BYTES SEED [--rate MBIT/S]
//!                                      send BYTES bytes of a deterministic xorshift
//!                                      stream (paced to MBIT/S if given), shut down
//!                                      writing, wait for the server to close, print
//!                                      "<bytes> <sha256hex>"
//! ```
//!
//! Progress goes to stderr: `serve` prints `listening ADDR` once bound (the test waits
//! for it), `send` prints `local ADDR` once connected. Every step has a deadline
//! (`TG_XFER_TIMEOUT_S`, default 60 s): no accept, a stalled read or write, or a
//! refused connection ends the program with status 1 instead of hanging.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tlsgate_tests::hex;

const CHUNK: usize = 256 * 1024;

fn timeout() -> Duration {
    let s = std::env::var("TG_XFER_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(60u64);
    Duration::from_secs(s.max(1))
}

/// The deterministic byte stream (the project's xorshift64).
struct Stream {
    rng: tlsgate_dataplane::wire::build::XorShift,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Stream { rng: tlsgate_dataplane::wire::build::XorShift::new(seed) }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        self.rng.fill(buf);
    }
}

fn serve(addr: SocketAddr) -> Result<(), String> {
    let limit = timeout();
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    eprintln!("listening {addr}");
    let deadline = Instant::now() + limit;
    let (mut conn, peer) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!("no connection within {limit:?}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    eprintln!("accepted {peer}");
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {n} bytes: {e}")),
        }
    }
    println!("{n} {}", hex(&h.finalize()));
    Ok(())
}

fn send(addr: SocketAddr, bytes: u64, seed: u64, rate_mbps: Option<f64>) -> Result<(), String> {
    let limit = timeout();
    let mut conn = TcpStream::connect_timeout(&addr, limit.min(Duration::from_secs(10)))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    eprintln!("local {}", conn.local_addr().map_err(|e| e.to_string())?);
    conn.set_write_timeout(Some(limit)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let mut stream = Stream::new(seed);
    let mut h = Sha256::new();
    // Paced: small chunks, each sent when the rate allows.
    let chunk = if rate_mbps.is_some() { 16 * 1024 } else { CHUNK };
    let mut buf = vec![0u8; chunk];
    let mut left = bytes;
    let start = Instant::now();
    while left > 0 {
        let k = (left.min(chunk as u64)) as usize;
        stream.fill(&mut buf[..k]);
        if let Some(r) = rate_mbps {
            let due = start + Duration::from_secs_f64((bytes - left) as f64 * 8.0 / (r * 1e6));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        conn.write_all(&buf[..k]).map_err(|e| format!("write after {} bytes: {e}", bytes - left))?;
        h.update(&buf[..k]);
        left -= k as u64;
    }
    conn.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    // The server closes after reading to EOF: wait for that, so "sent" means "the
    // server has seen the end".
    let mut sink = [0u8; 512];
    loop {
        match conn.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => return Err("the server sent data".into()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the server to close: {e}")),
        }
    }
    println!("{bytes} {}", hex(&h.finalize()));
    Ok(())
}

fn usage() -> ExitCode {
    eprintln!("usage: tg-xfer serve ADDR:PORT | tg-xfer send ADDR:PORT BYTES SEED [--rate MBIT/S]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse_addr = |s: &str| s.parse::<SocketAddr>().map_err(|e| format!("{s:?}: {e}"));
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr] => parse_addr(addr).and_then(serve),
        ["send", addr, bytes, seed, ref rest @ ..] => {
            let rate = match rest {
                [] => None,
                ["--rate", r] => match r.parse::<f64>() {
                    Ok(r) if r > 0.0 => Some(r),
                    _ => return usage(),
                },
                _ => return usage(),
            };
            match (parse_addr(addr), bytes.parse(), seed.parse()) {
                (Ok(a), Ok(b), Ok(s)) => send(a, b, s, rate),
                _ => return usage(),
            }
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tg-xfer: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_deterministic_in_8_byte_multiples() {
        let mut a = Stream::new(7);
        let mut whole = vec![0u8; 1000];
        a.fill(&mut whole);
        let mut b = Stream::new(7);
        let mut parts = vec![0u8; 1000];
        for c in parts.chunks_mut(200) {
            b.fill(c);
        }
        assert_eq!(whole, parts);
        let mut c = Stream::new(8);
        let mut other = vec![0u8; 1000];
        c.fill(&mut other);
        assert_ne!(whole, other);
    }
}
