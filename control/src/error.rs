//! The crate's one error type: what loading the configuration or the state,
//! opening a token key, binding the sockets or a vendor command can fail with.
//! Its messages are the ones operators see (the daemon answers requests with
//! them, the binaries print them); a variant that wraps another error keeps that
//! error as its source.

use std::io;
use std::path::PathBuf;

/// Everything an operation of this crate can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file (or socket, or directory) could not be read, written or made.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another error, about a file: the configuration file, the state file, the
    /// vendor's key file.
    #[error("{}: {source}", .path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<Error>,
    },
    /// A write to standard output (or another system call on no file) failed.
    #[error(transparent)]
    Io(#[from] io::Error),

    /// The configuration file is not valid TOML for `[control]` (or names an
    /// unknown field).
    #[error("{}", .0.to_string().trim())]
    Toml(#[from] toml::de::Error),
    /// A configuration field is not acceptable; the message names it.
    #[error("control.{field}: {reason}")]
    Config {
        /// The field under `[control]` (`socket_mode`, `pkcs11_keys[0]`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// `control.socket_group` cannot be looked up.
    #[error("control.socket_group {name:?}: {source}")]
    SocketGroup {
        /// The group.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// No device id is configured and `/etc/machine-id` cannot be read.
    #[error("control.device_id is not set and /etc/machine-id: {0}")]
    MachineId(io::Error),
    /// No device id is configured and `/etc/machine-id` is empty.
    #[error("control.device_id is not set and /etc/machine-id is empty")]
    MachineIdEmpty,

    /// The state directory cannot be made (or its mode set).
    #[error("state directory {}: {source}", .path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The state file is not JSON of a state file.
    #[error("{}: not a tlsgate state file: {source}", .path.display())]
    NotStateFile {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The state file has a format this build does not read.
    #[error("format {0} (this build reads {f})", f = crate::state::FORMAT)]
    StateFormat(u32),
    /// The state holds no committed policy.
    #[error("no committed policy")]
    NoPolicy,
    /// A committed policy of the state is not valid.
    #[error("policy of version {version}: {source}")]
    PolicyVersion {
        /// Its configuration version.
        version: u64,
        /// Why.
        source: tlsgate_policy::Error,
    },
    /// The candidate policy of the state is not valid (as the state file is checked).
    #[error("candidate policy: {0}")]
    CandidatePolicy(tlsgate_policy::Error),
    /// The candidate policy cannot be loaded into the policy store.
    #[error("candidate: {0}")]
    Candidate(tlsgate_policy::Error),
    /// The trust entries of the state are not valid.
    #[error("trust: {0}")]
    Trust(Box<Error>),
    /// One trust entry is not valid.
    #[error("entry {name}: {source}")]
    TrustEntry {
        /// The entry's name.
        name: String,
        /// Why.
        source: Box<Error>,
    },
    /// Debian's CA bundle cannot be read.
    #[error("system bundle: {0}")]
    SystemBundle(tlsgate_certstore::Error),
    /// The decryption CA of the state is not valid.
    #[error("decryption CA: {0}")]
    DecryptionCa(Box<Error>),
    /// The decryption CA's record holds no certificate.
    #[error("no certificate")]
    NoCertificate,
    /// Text that should be base64 is not.
    #[error("not base64: {0}")]
    Base64(#[from] base64::DecodeError),

    /// An abort chain's name is not a SHA-256.
    #[error("chain sha256 {0:?} is not 64 hex digits")]
    ChainName(String),

    /// A socket is served by another daemon.
    #[error("{} is served by another running tlsgate-control", .0.display())]
    SocketInUse(PathBuf),
    /// A dataplane said hello while another one is connected.
    #[error("a dataplane (pid {pid}) is already connected")]
    DataplaneConnected {
        /// The connected dataplane's pid.
        pid: u32,
    },
    /// A license cannot be checked: no vendor key is configured.
    #[error("no vendor key configured")]
    NoVendorKey,

    /// A `pkcs11:` URI is not acceptable (as a URI, in `control.pkcs11_keys`, or
    /// in a request); the message names the part.
    #[error("{0}")]
    Pkcs11Uri(String),
    /// A `pin-source` file is refused (one message for every refusal: no oracle
    /// on files the caller cannot see).
    #[error("pin-source {}: not a regular file owned by root with mode 0600 or 0400 of at most {max} bytes", .0.display(), max = crate::pkcs11::MAX_PIN_FILE)]
    PinSource(PathBuf),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {what}: {source}")]
    Pkcs11 {
        /// The call and what it was about (`slots`, `module /usr/lib/…`, …).
        what: String,
        /// What the library said.
        source: cryptoki::error::Error,
    },
    /// The token, or the key on it, is not what the URI names or not usable.
    #[error("{0}")]
    Token(String),

    /// A decryption CA, a certificate, a license or a vendor key is refused.
    #[error(transparent)]
    Certstore(#[from] tlsgate_certstore::Error),
    /// A policy is not valid.
    #[error(transparent)]
    Policy(#[from] tlsgate_policy::Error),

    /// A vendor tool argument is not acceptable.
    #[error("{arg}: {reason}")]
    Arg {
        /// The option (`--not-before`, `--days`, …).
        arg: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A time cannot be written as RFC 3339.
    #[error(transparent)]
    TimeFormat(#[from] time::error::Format),
    /// `license issue --out`: the file exists, or is a link; it is never
    /// overwritten, nor a link followed.
    #[error("--out {}: the file exists (or is a link); tlsgate-vendor never overwrites a file: remove it or choose another name", .0.display())]
    OutExists(PathBuf),
    /// The vendor's private key file is readable by others than its owner.
    #[error("{}: the key file must be readable by its owner only (mode 0600 or 0400), not {mode:04o}", .path.display())]
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl Error {
    /// A configuration field's refusal.
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config { field: field.into(), reason: reason.into() }
    }

    /// An I/O failure on a path.
    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { path, source }
    }

    /// This error, about a file.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Error {
        Error::InFile { path: path.into(), source: Box::new(self) }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
