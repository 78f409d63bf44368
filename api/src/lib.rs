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
//! [`Request`] or the [`Response`] to one, matched by `id`. One request enum
//! serves the whole protocol (`docs/control-socket.md`):
//!
//! ```text
//!   tlsgatectl ──request──► tlsgate-control ──response──►          (status, license, trust, ca, policy, events, capture)
//!   tlsgate-dataplane ──DataplaneHello──► tlsgate-control          (the dataplane connects)
//!        ◄── Snapshot{version, policy, tls} ── Applied{version} ──►
//!        ◄── Stats, Capture* ── answers ──►
//!        ── Chain{sha256, pem} ──►                                  (abort chains)
//! ```
//!
//! The framing is symmetric: either side of a connection may send requests. The
//! dataplane's own status socket answers the same frames (`Stats`, `Ping`).
//!
//! Every frame carries the protocol version [`PROTOCOL_VERSION`]; a peer answers a
//! frame of another version, or one it cannot decode, with [`Response::Error`] and
//! keeps the connection. Every refusal has an [`ErrorCode`] and a message.
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
//! ring: it travels on the channel ([`Request::Chain`]), keyed by the SHA-256 the
//! record carries. [`log`] has the `tls_proxy.log` line shapes both processes write.

#![deny(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod counters;
pub mod coverage;
mod error;
pub mod event;
pub mod explain;
pub mod framing;
pub mod log;
pub mod outcome;
pub mod ring;
mod stats;
pub mod verify;
pub use error::{Error, Result};
pub use event::{AlertView, EventKind, EventRecord, EventView, Leg, Phase};
pub use framing::{write_frame, FrameReader};
pub use outcome::{AdmissionReason, Cause, Outcome};
pub use ring::{Consumer, Producer};
pub use stats::{PortStats, WorkerStats};
pub use verify::VerifyReason;

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
// A frame lives only while it is encoded or handled, one at a time per
// connection: the size of the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Body {
    /// Asks the peer to do something.
    Request(Request),
    /// Answers the request with the same `id`.
    Response(Response),
}

/// Requests one tlsgate process sends another: `tlsgatectl` to the control plane,
/// the control plane to the dataplane (snapshots, stats, captures) and the
/// dataplane to the control plane (its hello, abort chains). One enum for the
/// whole protocol; each variant says who serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// Liveness check; answered with [`Response::Pong`]. Both processes.
    Ping,
    /// The dataplane's counters; answered with [`Response::Stats`]. The dataplane,
    /// and the control plane (which asks the dataplane).
    Stats,
    /// Control plane: dataplane connected, configuration version, license, CA
    /// expiry, uptime ([`Response::Status`]).
    Status,
    /// Control plane: load a license file (its text).
    LicenseLoad {
        /// The license file.
        text: String,
    },
    /// Control plane: the licenses held and the cipher profile they give.
    LicenseShow,
    /// Control plane: remove a license by serial.
    LicenseRemove {
        /// Its serial.
        serial: String,
    },
    /// Control plane: add CA or server certificates (PEM or DER, bundles).
    TrustAdd {
        /// The file's bytes, base64.
        data: String,
        /// Name of the entry (default: derived from the certificate).
        name: Option<String>,
        /// How to file the certificates.
        #[serde(default)]
        kind: TrustAs,
        /// The server names (or IP addresses) a pinned certificate is trusted
        /// for (none given: the names in the certificate itself).
        #[serde(default)]
        names: Vec<String>,
        /// Pin for any name (an explicit choice: whoever holds the pinned
        /// certificate's key can then be any server).
        #[serde(default)]
        any_name: bool,
    },
    /// Control plane: pin the server certificate of the chain an abort event kept,
    /// for the event's SNI (its destination address when it had none).
    TrustAddFromEvent {
        /// The event id.
        event_id: u64,
        /// Name of the entry.
        name: Option<String>,
        /// Pin for any name instead.
        #[serde(default)]
        any_name: bool,
    },
    /// Control plane: the trust store.
    TrustList,
    /// Control plane: one entry, with its certificate.
    TrustShow {
        /// Its name.
        name: String,
    },
    /// Control plane: remove an entry.
    TrustRemove {
        /// Its name.
        name: String,
    },
    /// Control plane: include Debian's CA bundle or not.
    TrustSystem {
        /// On or off.
        enabled: bool,
    },
    /// Control plane: generate a new decryption CA (replaces the current one).
    CaGenerate {
        /// Its common name.
        common_name: Option<String>,
    },
    /// Control plane: import a decryption CA.
    CaImport {
        /// Certificate file bytes, base64 (PEM or DER).
        cert: String,
        /// Key file bytes, base64 (PEM or DER).
        key: String,
    },
    /// Control plane: a decryption CA whose key is on a PKCS#11 token (the key
    /// never leaves it): with the CA's certificate, or a new self-signed one
    /// made with that key.
    CaImportPkcs11 {
        /// The key's `pkcs11:` URI (token, object, module-path, pin-value or
        /// pin-source).
        uri: String,
        /// The CA certificate, base64 (PEM or DER); none: a new one.
        cert: Option<String>,
        /// The new certificate's common name.
        common_name: Option<String>,
    },
    /// Control plane: the decryption CA certificate, for clients.
    CaExport {
        /// DER instead of PEM.
        #[serde(default)]
        der: bool,
    },
    /// Control plane: the running policy (or the candidate).
    PolicyShow {
        /// Show the candidate.
        #[serde(default)]
        candidate: bool,
    },
    /// Control plane: replace the candidate with a policy (JSON text).
    PolicyLoad {
        /// The policy.
        text: String,
    },
    /// Control plane: validate a policy without loading it.
    PolicyCheck {
        /// The policy.
        text: String,
    },
    /// Control plane: what a commit would change (of the candidate, or of `text`).
    PolicyDiff {
        /// A policy to compare with the running one instead of the candidate.
        text: Option<String>,
    },
    /// Control plane: insert a rule into the candidate.
    PolicyRuleAdd {
        /// The rule, in the policy file's rule format.
        rule: serde_json::Value,
        /// Insert above this rule.
        above: Option<String>,
        /// Insert below this rule.
        below: Option<String>,
    },
    /// Control plane: remove a rule from the candidate.
    PolicyRuleRemove {
        /// Its name.
        name: String,
    },
    /// Control plane: the candidate becomes the running policy, next version.
    PolicyCommit,
    /// Control plane: commit the policy of an earlier version as a new version.
    PolicyRollback {
        /// The version to restore.
        version: u64,
    },
    /// Control plane: committed versions with their audit records.
    PolicyHistory,
    /// Control plane: recent events, newest last.
    EventsList {
        /// Only events after this time (ns since the epoch).
        since_ns: Option<u64>,
        /// Only events after this event id (for `events tail`).
        after_id: Option<u64>,
        /// Only this kind (`abort`, `decrypted`, …).
        kind: Option<String>,
        /// Only events with this address (client or server) or SNI.
        host: Option<String>,
        /// At most this many (the newest).
        limit: Option<usize>,
    },
    /// Control plane: one event.
    EventsShow {
        /// Its id.
        id: u64,
    },
    /// Control plane and dataplane: capture a host's flows (both legs) to pcapng.
    CaptureStart(CaptureSpec),
    /// Control plane and dataplane: stop a capture (all when no id).
    CaptureStop {
        /// The capture.
        id: Option<u32>,
    },
    /// Control plane and dataplane: captures running or finished.
    CaptureList,
    /// Control plane and dataplane: the learned exclusions (servers the
    /// appliance's own probe found to support no mode it offers, passed
    /// undecrypted until they expire).
    ExclusionsList,
    /// Control plane and dataplane: removes learned exclusions (of one server
    /// address, or all); the servers are probed again on their next failure.
    ExclusionsClear {
        /// Only this server's.
        server: Option<std::net::IpAddr>,
    },
    /// Why a flow would (not) be decrypted: the policy's decisions, the rule
    /// that decides and why each earlier one does not, learned exclusions and
    /// admission limits (answered by the dataplane from what it runs; without
    /// one, by the control plane from the committed policy).
    PolicyExplain {
        /// The client's address.
        client: std::net::IpAddr,
        /// The server's address.
        server: std::net::IpAddr,
        /// The server's port.
        port: u16,
        /// The SNI of the ClientHello.
        sni: Option<String>,
        /// The client's JA4.
        ja4: Option<String>,
    },
    /// Adds an operator account of the web console.
    UserAdd {
        /// `[a-z0-9_.-]`, 1-32.
        name: String,
        /// At least 12 characters; kept only as its Argon2id hash.
        password: Secret,
    },
    /// Removes an account.
    UserRemove {
        /// Its name.
        name: String,
    },
    /// Sets an account's password.
    UserPasswd {
        /// Its name.
        name: String,
        /// The new password.
        password: Secret,
    },
    /// The accounts (names and when their passwords were set).
    UserList,
    /// Checks an account's password (the console's login): `done`, or refused
    /// (`permission_denied`, one text whatever was wrong); failures are limited
    /// per account.
    UserLogin {
        /// Its name.
        name: String,
        /// The password given.
        password: Secret,
        /// The address the login came from (the console's client): failures
        /// lock the account for that address, not for everyone.
        #[serde(default)]
        from: Option<std::net::IpAddr>,
    },
    /// Ends a console session ([`Response::LoggedIn`]'s).
    UserLogout {
        /// The session.
        session: Secret,
    },
    /// The web console, for a logged-in operator: `request` is served as if
    /// the operator asked, and audited with the operator's name. Served only to
    /// the console's uid (`control.console_user`), and only for what the
    /// console's pages do.
    OnBehalf {
        /// The operator account.
        operator: String,
        /// The session its login opened ([`Response::LoggedIn`]).
        session: Secret,
        /// What the operator asked for.
        request: Box<Request>,
    },
    /// Decryption coverage: the share of TLS flows decrypted and why the others
    /// were not, since `since` (unix seconds; none: since the dataplane started).
    Coverage {
        /// From when.
        since: Option<u64>,
    },
    /// Dataplane to control plane, first on its connection: it is the dataplane.
    DataplaneHello {
        /// Its workers.
        workers: u32,
        /// Its process id.
        pid: u32,
        /// Its version.
        version: String,
        /// The configuration version it runs (0: none from the control plane yet).
        running_version: u64,
    },
    /// Control plane to dataplane: the configuration to run from now on.
    Snapshot(Box<Snapshot>),
    /// Dataplane to control plane: the server chain of an abort, by its SHA-256.
    Chain {
        /// SHA-256 of the chain (hex), as in the event.
        sha256: String,
        /// The certificates, PEM, leaf first.
        pem: String,
    },
    /// Dataplane to control plane: a server chain that verified and names CRL
    /// distribution points (`http://` URLs in `urls`). The control plane checks
    /// the chain again and fetches the CRLs of the points it names itself; the
    /// dataplane never fetches. Answered with `Done`.
    CrlDistributionPoints {
        /// The name it was verified for: the SNI, or the server's address.
        name: String,
        /// The chain, base64 DER, leaf first.
        chain: Vec<String>,
        /// The distribution points the dataplane read from it.
        urls: Vec<String>,
        /// The server proved it holds the certificate's key (the handshake
        /// completed); `false` for a chain refused at verification (an unknown
        /// status under `unknown_status = block`), which anyone can replay.
        #[serde(default)]
        proven: bool,
    },
    /// Dataplane to control plane: certificates to issue for verified servers
    /// (the decryption CA's key never enters the dataplane). Answered with
    /// [`Response::SignedLeaves`].
    SignLeaves {
        /// At most [`MAX_SIGN_BATCH`].
        leaves: Vec<LeafRequest>,
    },
}

/// A password in a request: serialized as a plain string, never printed
/// (`Debug` says `<redacted>`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Most leaves in one [`Request::SignLeaves`].
pub const MAX_SIGN_BATCH: usize = 64;

/// One certificate the dataplane asks the signer for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafRequest {
    /// The dataplane's id for it (answered with it).
    pub id: u64,
    /// The name the client asked for: its SNI, or the server's IP address.
    pub name: String,
    /// The server's chain as it was verified, base64 DER, leaf first: the
    /// signer verifies it again and copies the leaf's names and validity.
    pub chain: Vec<String>,
    /// The leaf public key (SubjectPublicKeyInfo DER, base64): the worker keeps
    /// the private half.
    pub public_key: String,
}

/// One answer of [`Response::SignedLeaves`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedLeaf {
    /// The request's id.
    pub id: u64,
    /// The certificate, base64 DER; `None` when refused.
    pub cert: Option<String>,
    /// Why it was refused.
    pub error: Option<String>,
}

/// How [`Request::TrustAdd`] files certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrustAs {
    /// CA certificates that are not self-signed as CAs; others pinned.
    #[default]
    Auto,
    /// Every certificate as a CA.
    Ca,
    /// Every certificate pinned as a server certificate.
    Pinned,
}

/// A learned exclusion, as `tlsgatectl exclusions list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionInfo {
    /// The server's address.
    pub server: std::net::IpAddr,
    /// Its port.
    pub port: u16,
    /// The SNI (none: the client sent none).
    pub sni: Option<String>,
    /// Seconds until it expires.
    pub expires_in_s: u64,
    /// The failure the appliance's own probe met (the `cause` label).
    pub cause: String,
    /// The same, in words.
    pub reason: String,
}

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// Flows with this address on either side.
    pub host: std::net::IpAddr,
    /// And this port on either side.
    pub port: Option<u16>,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// The pcapng file's name in the dataplane's capture directory
    /// (`capture.dir`): a name, never a path.
    pub file: String,
    /// Also write the TLS session keys of both legs of the captured flows (NSS
    /// key-log lines) to `FILE.keys`: only where the dataplane's root-owned
    /// configuration allows it (`[capture] allow_keylog`).
    #[serde(default)]
    pub keylog: bool,
}

/// A capture, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    /// Its id.
    pub id: u32,
    /// What it captures.
    pub spec: CaptureSpec,
    /// Packets written so far.
    pub packets: u64,
    /// Packets the writer could not keep up with.
    pub dropped: u64,
    /// Still capturing.
    pub active: bool,
    /// Bytes written to its file.
    #[serde(default)]
    pub bytes: u64,
    /// Why it ended (`count`, `size cap`, `total cap`, `stopped`, `write error`).
    #[serde(default)]
    pub ended: Option<String>,
}

/// The configuration a dataplane runs: what the control plane commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The configuration version (stamped on every event of flows decided under it).
    pub version: u64,
    /// The decryption policy (JSON, `docs/policy.md`).
    pub policy: String,
    /// TLS interception material; none without a decryption CA.
    pub tls: Option<TlsSnapshot>,
}

/// The certificates and the cipher profile of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSnapshot {
    /// The decryption CA certificate (and the chain sent after it), PEM. Its key
    /// stays with the control plane's signer: snapshots carry no key.
    pub ca_cert_pem: String,
    /// Trusted CA certificates (base64 DER), besides the system bundle.
    pub cas: Vec<String>,
    /// Pinned server certificates.
    pub pinned: Vec<PinnedCert>,
    /// Include Debian's CA bundle.
    pub system_bundle: bool,
    /// `base` or `strong` (the strong-crypto license).
    pub profile: String,
    /// Certificate revocation lists (base64 DER) the server leg checks chains
    /// against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<String>,
}

/// A pinned server certificate in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedCert {
    /// The trust entry's name.
    pub name: String,
    /// The certificate, base64 DER.
    pub der: String,
    /// The server names (or IP addresses as text) it holds for; empty: any name.
    pub names: Vec<String>,
}

/// The control plane's state at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// Seconds since the control plane started.
    pub uptime_s: f64,
    /// The current configuration version.
    pub config_version: u64,
    /// Whether a dataplane is connected.
    pub dataplane_connected: bool,
    /// The configuration version the dataplane acknowledged last.
    pub dataplane_version: u64,
    /// The dataplane's process id, when connected.
    pub dataplane_pid: Option<u32>,
    /// The cipher profile in force (`base` / `strong`).
    pub profile: String,
    /// The licenses.
    pub licenses: Vec<LicenseInfo>,
    /// The decryption CA, if any.
    pub ca: Option<CertInfo>,
    /// Events written to the log since start.
    pub events_logged: u64,
    /// Events the rings reported lost since start.
    pub events_lost: u64,
    /// This appliance's device id (licenses name it).
    pub device_id: String,
    /// The CRLs the control plane fetches from distribution points.
    #[serde(default)]
    pub crls: Vec<CrlInfo>,
}

/// A CRL distribution point the control plane fetches, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlInfo {
    /// The `http://` URL.
    pub url: String,
    /// `cached` (a list in the snapshot), `pending` (not fetched yet), `failed`.
    pub state: String,
    /// Its issuer, when fetched.
    pub issuer: Option<String>,
    /// Certificates it lists.
    pub revoked: usize,
    /// Its size (DER bytes).
    pub bytes: usize,
    /// Its nextUpdate (unix seconds).
    pub next_update: Option<i64>,
    /// The last failure, if the last fetch failed.
    pub error: Option<String>,
}

/// A license, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseInfo {
    /// Serial.
    pub serial: String,
    /// Features.
    pub features: Vec<String>,
    /// Valid from (RFC 3339).
    pub not_before: String,
    /// Valid until (RFC 3339).
    pub not_after: String,
    /// `valid`, `expired`, `not-yet-valid`.
    pub state: String,
}

/// A certificate, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Entry name (trust store) or empty.
    pub name: String,
    /// `ca`, `system-ca`, `pinned`, `decryption-ca`.
    pub kind: String,
    /// Subject, OpenSSL one-line form.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// notBefore (unix seconds).
    pub not_before: i64,
    /// notAfter (unix seconds).
    pub not_after: i64,
    /// The certificate, PEM (when asked for one entry).
    pub pem: Option<String>,
    /// For a pinned certificate: the names it holds for (empty: any name).
    #[serde(default)]
    pub names: Vec<String>,
}

/// A committed configuration version, as listed by [`Request::PolicyHistory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The version.
    pub version: u64,
    /// When (unix seconds).
    pub time: u64,
    /// The peer's uid.
    pub uid: u32,
    /// The operator account, for a change made in the web console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// What changed.
    pub what: String,
    /// Whether this version's policy is kept (rollback possible).
    pub policy_kept: bool,
}

/// Responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// A login of the web console's user: the session that
    /// [`Request::OnBehalf`] must carry (it ends after 12 hours, at
    /// [`Request::UserLogout`], or when its account is removed or its password
    /// changed).
    LoggedIn {
        /// The session.
        session: Secret,
    },
    /// Answer to [`Request::Ping`].
    Pong {
        /// Name of the answering process (`tlsgate-dataplane`, `tlsgate-control`).
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
    /// Done; what changed, and the configuration version it made (if any).
    Done {
        /// For a person.
        message: String,
        /// The new configuration version, when the change made one.
        version: Option<u64>,
    },
    /// Answer to [`Request::Status`].
    Status(ControlStatus),
    /// Answer to [`Request::Coverage`].
    Coverage(coverage::CoverageReport),
    /// Answer to [`Request::UserList`].
    Users {
        /// (name, when its password was set, unix seconds).
        users: Vec<(String, u64)>,
    },
    /// Answer to [`Request::PolicyExplain`].
    Explained(explain::Explanation),
    /// Answer to [`Request::LicenseShow`].
    Licenses {
        /// This appliance's device id.
        device_id: String,
        /// The cipher profile they give.
        profile: String,
        /// The licenses held.
        licenses: Vec<LicenseInfo>,
    },
    /// Answer to [`Request::TrustList`] and [`Request::TrustShow`].
    Trust {
        /// Debian's bundle included.
        system_bundle: bool,
        /// System CAs (counted, not listed).
        system_cas: usize,
        /// The entries (imported CAs and pinned certificates).
        entries: Vec<CertInfo>,
    },
    /// Answer to the CA requests.
    Ca {
        /// The CA.
        info: CertInfo,
        /// `ca export`: the certificate (PEM, or base64 DER).
        cert: Option<String>,
    },
    /// Answer to [`Request::PolicyShow`].
    Policy {
        /// The running version.
        version: u64,
        /// The policy (JSON).
        text: String,
        /// Whether the candidate differs from the running policy.
        candidate_differs: bool,
    },
    /// Answer to [`Request::PolicyDiff`] and [`Request::PolicyCheck`].
    Diff {
        /// One line per change (empty: none).
        lines: Vec<String>,
        /// Warnings about the policy.
        warnings: Vec<String>,
    },
    /// Answer to [`Request::PolicyHistory`].
    History {
        /// Oldest first.
        entries: Vec<HistoryEntry>,
    },
    /// Answer to [`Request::EventsList`] and [`Request::EventsShow`].
    Events {
        /// The events.
        events: Vec<EventView>,
    },
    /// Answer to the capture requests.
    Captures {
        /// The captures.
        captures: Vec<CaptureInfo>,
        /// Bytes in the capture directory now (every file in it).
        #[serde(default)]
        used_bytes: u64,
        /// The capture directory's cap (`capture.max_total_bytes`).
        #[serde(default)]
        max_total_bytes: u64,
    },
    /// Answer to [`Request::ExclusionsList`] and [`Request::ExclusionsClear`].
    Exclusions {
        /// The learned exclusions alive now (after a clear: those left).
        exclusions: Vec<ExclusionInfo>,
        /// How many a clear removed.
        cleared: Option<u64>,
    },
    /// Answer to [`Request::Snapshot`]: the dataplane runs this version now.
    Applied {
        /// The version.
        version: u64,
    },
    /// Answer to [`Request::SignLeaves`], one per request, in any order.
    SignedLeaves {
        /// The answers.
        leaves: Vec<SignedLeaf>,
    },
}

impl Response {
    /// A refusal.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }
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
    /// The peer may not use this socket (not root, not in the configured group).
    PermissionDenied,
    /// What the request carries is invalid (certificate, key, license, policy,
    /// rule): the message names what; nothing changed.
    Invalid,
    /// What the request names does not exist (entry, rule, version, event, chain).
    NotFound,
    /// The dataplane is not connected, or did not answer in time.
    Unavailable,
    /// Writing the state failed; nothing changed.
    Internal,
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
    pub fn decode(line: &str) -> Result<Self, Error> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.len() > MAX_LINE {
            return Err(Error::TooLarge(line.len()));
        }
        // Read the version first so a newer peer's unknown request is reported as a
        // version mismatch, not as garbage.
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        if let Ok(VersionOnly { v }) = serde_json::from_str::<VersionOnly>(line) {
            if v != PROTOCOL_VERSION {
                return Err(Error::Version { got: v });
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
