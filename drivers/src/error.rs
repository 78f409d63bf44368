//! The crate's one error type.

use std::io;

use crate::pcapfile::MAX_RECORD;

/// Everything an operation of this crate can fail with: backend setup, a
/// configuration check, a capture file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// DPDK's EAL refused its arguments or failed to start.
    #[error("DPDK EAL initialisation failed: {0}")]
    Eal(String),
    /// A configured port does not exist.
    #[error("port {name:?} ({role}) not found; DPDK sees: {available}")]
    PortNotFound {
        /// Configured name.
        name: String,
        /// inside/outside.
        role: &'static str,
        /// Names of the ports DPDK found.
        available: String,
    },
    /// A DPDK call failed.
    #[error("{what} failed on port {port}: {reason}")]
    Port {
        /// Which call.
        what: &'static str,
        /// Port id.
        port: u16,
        /// rte_strerror text.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("invalid driver configuration: {0}")]
    Config(String),
    /// File I/O (pcap backend).
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A capture file is not valid pcap.
    #[error("{path}: {reason}")]
    Pcap {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is not valid; the message names the field
    /// (`dpdk.eal_args: ...`).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a capture stream failed.
    #[error(transparent)]
    PcapIo(#[from] io::Error),
    /// The capture is not a pcap file.
    #[error("not a pcap file (magic {0:#010x}); pcapng is not read, convert with `editcap -F pcap`")]
    PcapBadMagic(u32),
    /// The capture's link type is not Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    PcapLinkType(u32),
    /// A record header of the capture is damaged.
    #[error("record at byte {offset}: length {len} exceeds {MAX_RECORD}")]
    PcapBadRecord {
        /// File offset of the record header.
        offset: u64,
        /// Its length field.
        len: u32,
    },
    /// The capture ends inside a record.
    #[error("file truncated inside the record at byte {0}")]
    PcapTruncated(u64),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
