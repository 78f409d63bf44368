//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything an operation of this crate can fail with. The texts are the ones
/// operators see (and tests match): each variant's message names the file, the
/// field or the part that is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be read.
    #[error("{path}: {source}")]
    ConfigRead {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A configuration file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    ConfigParse {
        /// The file (empty for text that came from no file).
        path: String,
        /// toml's message (line, column, field).
        message: String,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("{path}: {message}")]
    ConfigInvalid {
        /// The file (empty for text that came from no file).
        path: String,
        /// The message of [`Error::Invalid`], naming the field.
        message: String,
    },
    /// A setting is not valid; the message names the field
    /// (`intercept.buffer_kib: 1 is outside 4..=4096`).
    #[error("{0}")]
    Invalid(String),
    /// The packet I/O backend's settings (`[dpdk]`) are not valid.
    #[error(transparent)]
    Driver(#[from] tlsgate_drivers::Error),
    /// A capture cannot be started: its file name, or the capture directory.
    #[error("{0}")]
    Capture(String),
    /// A file or directory could not be read or created.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The events directory could not be created.
    #[error("events.dir {}: {source}", .path.display())]
    EventsDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The status socket could not be bound.
    #[error("status socket {}: {source}", .path.display())]
    StatusSocket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An event ring could not be created.
    #[error(transparent)]
    Ring(#[from] tlsgate_api::Error),
    /// A decryption policy is not valid.
    #[error(transparent)]
    Policy(#[from] tlsgate_policy::Error),
    /// The policy file (`[policy] file`) is not a valid policy.
    #[error("{}: {source}", .path.display())]
    PolicyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: tlsgate_policy::Error,
    },
    /// A control-plane snapshot's policy is not valid.
    #[error("policy: {0}")]
    SnapshotPolicy(tlsgate_policy::Error),
    /// The TLS interception state (decryption CA, trust, profile) could not be
    /// made; the message names the setting or the snapshot part and the cause.
    #[error("{0}")]
    Tls(String),
    /// A worker's leaf key could not be generated.
    #[error("leaf key: {0}")]
    LeafKey(tlsgate_certstore::Error),
    /// The dataplane's keys could not be drawn from the system's randomness.
    #[error("drawing the dataplane's keys: {0}")]
    Keys(io::Error),
    /// A thread could not be started (or another system call failed).
    #[error(transparent)]
    System(#[from] io::Error),
    /// A thread the dataplane waits for panicked.
    #[error("{0} thread panicked")]
    Panicked(&'static str),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
