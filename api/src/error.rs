//! The crate's one error type: what a frame decode, an event ring or an event
//! record's raw byte can fail with.

use std::io;
use std::path::PathBuf;

use crate::ring::MAX_CAPACITY;
use crate::{ErrorCode, MAX_LINE, PROTOCOL_VERSION};

/// Everything an operation of this crate can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line is not valid JSON for a frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A frame's protocol version differs from ours.
    #[error("unsupported protocol version {got} (this peer speaks {PROTOCOL_VERSION})")]
    Version {
        /// Version in the frame.
        got: u32,
    },
    /// A line longer than [`MAX_LINE`].
    #[error("line of {0} bytes exceeds the limit of {MAX_LINE}")]
    TooLarge(usize),
    /// A byte that should name an enum variant (`EventKind`, `Leg`, `Phase`,
    /// `Cause`) did not.
    #[error("unknown {field} value {value}")]
    UnknownValue {
        /// Which enum.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A system call on an event ring file failed.
    #[error("event ring {}: {op}: {source}", .path.display())]
    RingIo {
        /// The ring file.
        path: PathBuf,
        /// What was being done (`open`, `mmap`, …).
        op: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// The file is not an event ring this build can use.
    #[error("event ring {}: {what}", .path.display())]
    RingBadHeader {
        /// The ring file.
        path: PathBuf,
        /// What is wrong, with the found and the expected value.
        what: String,
    },
    /// Another process (or handle) already is this ring's producer or consumer.
    #[error("event ring {}: already open by another {role}", .path.display())]
    RingBusy {
        /// The ring file.
        path: PathBuf,
        /// `producer` or `consumer`.
        role: &'static str,
    },
    /// The requested ring capacity is not allowed.
    #[error("event ring {}: capacity {capacity} is not a power of two from 1 to {MAX_CAPACITY}", .path.display())]
    RingCapacity {
        /// The ring file.
        path: PathBuf,
        /// The capacity asked for.
        capacity: u32,
    },
}

impl Error {
    /// The error code a peer answers this failure with: the decode failures map to
    /// their own codes, anything else is [`ErrorCode::Internal`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Malformed(_) => ErrorCode::BadRequest,
            Error::Version { .. } => ErrorCode::UnsupportedVersion,
            Error::TooLarge(_) => ErrorCode::TooLarge,
            Error::UnknownValue { .. } => ErrorCode::BadRequest,
            Error::RingIo { .. }
            | Error::RingBadHeader { .. }
            | Error::RingBusy { .. }
            | Error::RingCapacity { .. } => ErrorCode::Internal,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
