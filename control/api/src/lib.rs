//! `tlsgate-api`: the contract between tlsgate's processes.
//!
//! Both `tlsgate-dataplane` and `tlsgate-control` depend on this crate; neither
//! depends on the other.
//!
//! ```text
//!   tlsgatectl / tlsgate-control ◄── one stream connection ──► tlsgate-dataplane
//!              newline-delimited JSON, one [`Frame`] per line, either side may ask
//! ```
//!
//! # The channel
//!
//! A connection carries [`Frame`]s, one JSON object per line. A frame is either a
//! [`Request`] or the [`Response`] to one, matched by `id`. The protocol is
//! symmetric on purpose: today the dataplane *listens* on its status socket and
//! answers requests (stats, ping); the control-plane issue turns the same
//! connection around — the dataplane *connects* to the control socket and then both
//! sides send requests on it (snapshots and commands go down, acknowledgements and
//! stats come up). Nothing in the framing assumes who connected.
//!
//! Every frame carries the protocol version [`PROTOCOL_VERSION`]; a peer answers a
//! frame of another version, or one it cannot decode, with [`Response::Error`] and
//! keeps the connection.
//!
//! # Events
//!
//! Besides the channel, dataplane workers report what happened to each connection
//! (decrypted, aborted, blocked, passed, …) as [`EventRecord`]s: fixed-size
//! (1024-byte) `#[repr(C)]` plain-old-data records, written into one shared-memory
//! ring per worker and drained by the control plane, which turns them into
//! `tls_proxy.log` lines, the JSON-lines event log ([`EventRecord::to_json`]) and
//! event queries.
//!
//! ```text
//!   worker 0 ──Producer::try_push──► ring file 0 ──Consumer::pop──┐
//!   worker 1 ──Producer::try_push──► ring file 1 ──Consumer::pop──┼─► tlsgate-control
//!        never blocks; full ⇒ dropped and counted   take_gap() ───┘   (log, queries)
//! ```
//!
//! - [`event`]: the record, its enums ([`EventKind`], [`Leg`], [`Phase`]), text
//!   fields ([`event::set_text`], [`event::text`]), event ids
//!   ([`event::make_event_id`]) and names of TLS alerts and versions.
//! - [`ring`]: the single-producer/single-consumer ring in a memory-mapped file
//!   ([`Producer`], [`Consumer`]). Records survive a consumer restart and a
//!   producer restart with the same layout. It is the only module with `unsafe`
//!   code; the crate root denies it everywhere else.
//!
//! Variable-size data (an abort's certificate chain) does not go through the
//! ring: it travels on the channel, keyed by the SHA-256 the record carries.

#![deny(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod event;
pub mod ring;
mod stats;
pub use event::{EventKind, EventRecord, Leg, Phase, UnknownValue};
pub use ring::{Consumer, Producer, RingError};
pub use stats::{PortStats, WorkerStats};

/// Version of the channel protocol spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line a peer accepts (bytes, newline excluded); longer lines are refused.
pub const MAX_LINE: usize = 1 << 20;

/// One line on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    /// Protocol version of the sender.
    pub v: u32,
    /// Chosen by the requester, echoed in the response.
    pub id: u64,
    /// What the frame carries.
    #[serde(flatten)]
    pub body: Body,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// Asks the peer to do something.
    Request(Request),
    /// Answers the request with the same `id`.
    Response(Response),
}

/// Requests one tlsgate process sends another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// Liveness check; answered with [`Response::Pong`].
    Ping,
    /// The dataplane's counters; answered with [`Response::Stats`].
    Stats,
}

/// Responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// Name of the answering process (`tlsgate-dataplane`).
        process: String,
        /// Its version.
        version: String,
    },
    /// Answer to [`Request::Stats`].
    Stats(DataplaneStats),
    /// The request was refused; nothing changed.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The line was not a frame (bad JSON, unknown field, unknown operation).
    BadRequest,
    /// The frame's protocol version is not spoken here.
    UnsupportedVersion,
    /// The line exceeded [`MAX_LINE`].
    TooLarge,
    /// The request is valid but this process does not serve it.
    Unsupported,
}

/// Counters of a running dataplane, as answered to [`Request::Stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneStats {
    /// Seconds since the dataplane started forwarding.
    pub uptime_s: f64,
    /// Packet I/O backend (`dpdk`, `pcap`, `memory`).
    pub driver: String,
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
    /// One entry per port (inside = 0, outside = 1).
    pub ports: Vec<PortStats>,
}

impl DataplaneStats {
    /// Sum of a per-worker drop reason over all workers.
    pub fn total_drops(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for w in &self.workers {
            for (k, v) in &w.drops {
                *out.entry(k.clone()).or_insert(0) += v;
            }
        }
        out
    }
}

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not valid JSON for a frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Spoken version differs.
    #[error("unsupported protocol version {got} (this peer speaks {PROTOCOL_VERSION})")]
    Version {
        /// Version in the frame.
        got: u32,
    },
    /// Line longer than [`MAX_LINE`].
    #[error("line of {0} bytes exceeds the limit of {MAX_LINE}")]
    TooLarge(usize),
}

impl DecodeError {
    /// The error code a peer answers this decode failure with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::BadRequest,
            DecodeError::Version { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
        }
    }
}

impl Frame {
    /// A request frame of this protocol version.
    pub fn request(id: u64, req: Request) -> Self {
        Frame { v: PROTOCOL_VERSION, id, body: Body::Request(req) }
    }

    /// A response frame of this protocol version.
    pub fn response(id: u64, resp: Response) -> Self {
        Frame { v: PROTOCOL_VERSION, id, body: Body::Response(resp) }
    }

    /// One line of JSON, newline included.
    pub fn encode(&self) -> String {
        let mut s = serde_json::to_string(self).expect("frames always serialize");
        s.push('\n');
        s
    }

    /// Decodes one line (with or without its newline).
    pub fn decode(line: &str) -> Result<Self, DecodeError> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.len() > MAX_LINE {
            return Err(DecodeError::TooLarge(line.len()));
        }
        // Read the version first so a newer peer's unknown request is reported as a
        // version mismatch, not as garbage.
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        if let Ok(VersionOnly { v }) = serde_json::from_str::<VersionOnly>(line) {
            if v != PROTOCOL_VERSION {
                return Err(DecodeError::Version { got: v });
            }
        }
        Ok(serde_json::from_str(line)?)
    }

    /// Best-effort id of a line that failed to decode, so the error can be matched.
    pub fn id_of(line: &str) -> u64 {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_u64()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let f = Frame::request(7, Request::Stats);
        let line = f.encode();
        assert_eq!(line, "{\"v\":1,\"id\":7,\"request\":{\"op\":\"stats\"}}\n");
        assert_eq!(Frame::decode(&line).unwrap(), f);
    }

    #[test]
    fn response_round_trip() {
        let mut stats = DataplaneStats { driver: "memory".into(), ..Default::default() };
        let mut w = WorkerStats { worker: 0, ..Default::default() };
        w.drops.insert("ipv4_truncated".into(), 3);
        stats.workers.push(w.clone());
        stats.workers.push(w);
        let f = Frame::response(9, Response::Stats(stats));
        let back = Frame::decode(&f.encode()).unwrap();
        assert_eq!(back, f);
        let Body::Response(Response::Stats(s)) = back.body else { panic!() };
        assert_eq!(s.total_drops()["ipv4_truncated"], 6);
    }

    #[test]
    fn refusals_are_classified() {
        let e = Frame::decode("{\"v\":2,\"id\":1,\"request\":{\"op\":\"stats\"}}").unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        let e = Frame::decode("{\"v\":1,\"id\":1,\"request\":{\"op\":\"reboot\"}}").unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        let e = Frame::decode("{\"v\":1,\"id\":1,\"request\":{\"op\":\"stats\"},\"x\":1}").unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        let e = Frame::decode("not json").unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        let long = "x".repeat(MAX_LINE + 1);
        assert_eq!(Frame::decode(&long).unwrap_err().code(), ErrorCode::TooLarge);
        assert_eq!(Frame::id_of("{\"v\":1,\"id\":42,\"request\":{\"op\":\"nope\"}}"), 42);
    }
}
