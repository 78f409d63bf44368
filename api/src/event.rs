//! The event record: one fixed-size [`EventRecord`] per finished (or refused)
//! connection, written by a dataplane worker into its event ring
//! ([`crate::ring`]) and read by the control plane.
//!
//! The record is `#[repr(C)]`, 1152 bytes, with no padding, no pointers and every
//! field fixed-size, so it can be copied in and out of shared memory as plain bytes
//! ([`bytemuck::Pod`]). Integers are in host byte order (the ring never leaves the
//! host). Text fields are UTF-8, NUL-padded, and truncated on a character boundary
//! when too long: write them with [`set_text`], read them with [`text`]. Any byte
//! pattern is a valid record, so a reader never trusts one: enum-like bytes are
//! decoded with `TryFrom<u8>` and [`text`] stops at the first invalid UTF-8 byte.
//!
//! Layout (offsets in bytes; changing it means bumping
//! [`crate::ring::RING_LAYOUT_VERSION`]):
//!
//! ```text
//!    0 event_id u64        8 time_ns u64         16 config_version u64
//!   24 connection_id u64  32 bytes_up u64       40 bytes_down u64
//!   48 session_id u32     52 tls_version u16    54 cipher_suite u16
//!   56 verify_code u16    58 src_port u16       60 dst_port u16
//!   62 kind  63 worker  64 leg  65 phase  66 ip_version  67 alert_sent
//!   68 alert_received  69 verify_depth  70 inside_port  71 outside_port   (u8 each)
//!   72 src_ip [16]        88 dst_ip [16]       104 chain_sha256 [32]
//!  136 sni [256]         392 rule [64]         456 server_cert_subject [160]
//!  616 server_cert_issuer [160]                776 error_detail [192]
//!  968 verify_text [48] 1016 cause u8  1017 cause_detail u8  1018 reserved [2]
//! 1020 rule_index u32
//! 1024 ja4 [40]         1064 alpn_client [16] 1080 alpn_server [16]
//! 1096 group_client u16 1098 group_server u16 1100 ech_offered u8
//! 1101 reserved [51]
//! 1152 end
//! ```

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytemuck::{Pod, Zeroable};
use serde_json::Value;

use crate::outcome::{Cause, Outcome};

/// `alert_sent` / `alert_received` value meaning "no alert".
pub const ALERT_NONE: u8 = 0xff;

/// Defines a `#[repr(u8)]` enum with a stable `name()` and `TryFrom<u8>`.
macro_rules! u8_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:literal => $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $var = $val,)+
        }

        impl $name {
            /// Stable lower-case name, as written in JSON and logs.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$var => $text,)+
                }
            }

            /// Name of a raw byte: the variant's name, or `unknown(<byte>)`.
            pub fn label(raw: u8) -> Cow<'static, str> {
                match Self::try_from(raw) {
                    Ok(v) => v.name().into(),
                    Err(_) => format!("unknown({raw})").into(),
                }
            }
        }

        impl TryFrom<u8> for $name {
            type Error = crate::Error;
            fn try_from(value: u8) -> Result<Self, crate::Error> {
                match value {
                    $($val => Ok(Self::$var),)+
                    _ => Err(crate::Error::UnknownValue { field: stringify!($name), value }),
                }
            }
        }
    };
}

u8_enum! {
    /// What happened to the connection (`EventRecord::kind`).
    EventKind {
        /// Decrypted and relayed to its normal end.
        Decrypted = 1 => "decrypted",
        /// TLS abort: handshake failure or certificate validation error (the seed's
        /// "TLS Abort" event).
        Abort = 2 => "abort",
        /// Reset by a peer.
        Reset = 3 => "reset",
        /// Idle or handshake timeout.
        Timeout = 4 => "timeout",
        /// Blocked by policy.
        Blocked = 5 => "blocked",
        /// Could not be decrypted and was passed through undecrypted.
        Passed = 6 => "passed",
        /// Not decrypted because a do-not-decrypt rule matched (by SNI or address).
        NotDecrypted = 7 => "not_decrypted",
        /// A learned exclusion was made (the appliance's own probe confirmed the
        /// server supports no mode it offers); later flows to it are passed.
        ExclusionLearned = 8 => "exclusion_learned",
    }
}

u8_enum! {
    /// Which side of the proxy an error came from (`EventRecord::leg`).
    Leg {
        /// Not tied to a side (or no error).
        None = 0 => "none",
        /// The client leg (inside, the appliance acting as server).
        Client = 1 => "client",
        /// The server leg (outside, the appliance acting as client).
        Server = 2 => "server",
    }
}

u8_enum! {
    /// How far the connection got (`EventRecord::phase`).
    Phase {
        /// Unknown / not applicable.
        None = 0 => "none",
        /// TCP connection to the server.
        TcpConnect = 1 => "tcp_connect",
        /// Waiting for or parsing the client's ClientHello.
        ClientHello = 2 => "client_hello",
        /// The appliance's handshake with the server.
        ServerHandshake = 3 => "server_handshake",
        /// The appliance's handshake with the client (forged certificate).
        ClientHandshake = 4 => "client_handshake",
        /// Both handshakes done, relaying application data.
        Relay = 5 => "relay",
    }
}

/// One event, exactly as it lies in the ring.
///
/// Build one with [`EventRecord::new`] and assign fields; `Zeroable::zeroed()`
/// also works but leaves the alerts at 0 (`close_notify`), not [`ALERT_NONE`].
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct EventRecord {
    /// Unique across workers and restarts; see [`make_event_id`].
    pub event_id: u64,
    /// When the event happened, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Version of the configuration snapshot the flow was decided under.
    pub config_version: u64,
    /// The dataplane's flow id ("Connection ID" in the seed).
    pub connection_id: u64,
    /// Bytes from the client toward the server ("Bytes sent" in the seed).
    pub bytes_up: u64,
    /// Bytes from the server toward the client ("Bytes received").
    pub bytes_down: u64,
    /// TLS proxy session, printed `x<hex>` ("Session: x2fd1f6").
    pub session_id: u32,
    /// Negotiated or attempted TLS version, wire value (0x0303 = TLS 1.2); 0 none.
    pub tls_version: u16,
    /// Server cipher suite, wire value; 0 none.
    pub cipher_suite: u16,
    /// Certificate verification result code (OpenSSL numbering, 18 = self
    /// signed); 0 none.
    pub verify_code: u16,
    /// Client port.
    pub src_port: u16,
    /// Server port.
    pub dst_port: u16,
    /// An [`EventKind`].
    pub kind: u8,
    /// Worker that wrote the record.
    pub worker: u8,
    /// A [`Leg`].
    pub leg: u8,
    /// A [`Phase`].
    pub phase: u8,
    /// 4 or 6 (0 unknown); see [`EventRecord::set_addrs`].
    pub ip_version: u8,
    /// TLS alert description the appliance sent; [`ALERT_NONE`] if none.
    pub alert_sent: u8,
    /// TLS alert description the appliance received; [`ALERT_NONE`] if none.
    pub alert_received: u8,
    /// Depth in the chain of the certificate that failed verification.
    pub verify_depth: u8,
    /// Dataplane port index of the inside interface.
    pub inside_port: u8,
    /// Dataplane port index of the outside interface.
    pub outside_port: u8,
    /// Client address, 16 bytes; IPv4 stored IPv4-mapped (`::ffff:a.b.c.d`).
    pub src_ip: [u8; 16],
    /// Server address, as `src_ip`.
    pub dst_ip: [u8; 16],
    /// SHA-256 of the server's certificate chain as kept by the control plane;
    /// all zero when no chain was kept.
    pub chain_sha256: [u8; 32],
    /// Requested server name (SNI); 256 bytes hold any DNS name.
    pub sni: [u8; 256],
    /// Name of the decryption rule that matched.
    pub rule: [u8; 64],
    /// Server certificate subject, e.g. `/unstructuredName=ciscoasa`.
    pub server_cert_subject: [u8; 160],
    /// Server certificate issuer.
    pub server_cert_issuer: [u8; 160],
    /// Our own error text ("Error details").
    pub error_detail: [u8; 192],
    /// Verification result as text, e.g. `self signed certificate`.
    pub verify_text: [u8; 48],
    /// Why the flow ended: a [`Cause`] code (0: none recorded). Write it with
    /// [`EventRecord::set_outcome`], which also fills the fields the cause names.
    pub cause: u8,
    /// A detail of the cause: the [`crate::outcome::AdmissionReason`] of an
    /// admission.
    pub cause_detail: u8,
    reserved: [u8; 2],
    /// The policy rule of a [`Cause::Policy`]: 0 the default action, `i + 1` rule
    /// `i` of the policy of `config_version`.
    pub rule_index: u32,
    /// The client's JA4 fingerprint (`t13d1516h2_8daaf6152771_e5627efa2ab1`); empty
    /// when no ClientHello was read.
    pub ja4: [u8; 40],
    /// ALPN protocol agreed on the client leg (`h2`), empty when none.
    pub alpn_client: [u8; 16],
    /// ALPN protocol agreed on the server leg.
    pub alpn_server: [u8; 16],
    /// Key-exchange group of the client leg (IANA named group, 0x11ec =
    /// X25519MLKEM768, 0x001d = X25519); 0 none.
    pub group_client: u16,
    /// Key-exchange group of the server leg.
    pub group_server: u16,
    /// 1 when the ClientHello offered `encrypted_client_hello` (real or GREASE).
    pub ech_offered: u8,
    reserved_tail: [u8; 51],
}

const _: () = assert!(std::mem::size_of::<EventRecord>() == EventRecord::SIZE);
const _: () = assert!(EventRecord::SIZE % 64 == 0);

/// Builds an event id: `start_unix_s << 28` plus `seq << 8 | worker`.
///
/// `start_unix_s` is when the dataplane started (seconds since the epoch) and
/// `seq` the worker's own event counter from 0. The low byte makes ids of
/// different workers distinct; the start time makes ids of different runs
/// distinct as long as no worker averages more than 2^20 events per second over
/// its run (far above any handshake rate) and the clock does not step back across
/// a restart. Ids of one worker increase with `seq`. Good until the year 4147.
pub fn make_event_id(start_unix_s: u64, worker: u8, seq: u64) -> u64 {
    (start_unix_s << 28).wrapping_add(seq << 8 | u64::from(worker))
}

/// Writes `s` into a NUL-padded text field, truncated on a UTF-8 character
/// boundary (and at an embedded NUL). Returns whether all of `s` fit.
pub fn set_text<const N: usize>(field: &mut [u8; N], s: &str) -> bool {
    let whole = s.split('\0').next().unwrap_or("");
    let mut n = whole.len().min(N);
    while !whole.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&whole.as_bytes()[..n]);
    field[n..].fill(0);
    n == s.len()
}

/// Reads a NUL-padded text field: the bytes before the first NUL, cut before the
/// first invalid UTF-8 byte (a record is never trusted to be well formed).
pub fn text<const N: usize>(field: &[u8; N]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(N);
    match std::str::from_utf8(&field[..end]) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&field[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Name of a TLS alert description (RFC 8446 §6), `None` for unlisted codes and
/// [`ALERT_NONE`].
pub fn alert_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return None,
    })
}

/// Name of a TLS protocol version wire value, as the seed prints it (`TLSv1`).
pub fn tls_version_name(v: u16) -> Option<&'static str> {
    Some(match v {
        0x0300 => "SSLv3",
        0x0301 => "TLSv1",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        _ => return None,
    })
}

impl EventRecord {
    /// Size of a record in bytes (a multiple of a 64-byte cache line).
    pub const SIZE: usize = 1152;

    /// An all-zero record of this kind with no alerts.
    pub fn new(kind: EventKind) -> Self {
        EventRecord {
            kind: kind as u8,
            alert_sent: ALERT_NONE,
            alert_received: ALERT_NONE,
            ..Zeroable::zeroed()
        }
    }

    /// The kind, if the byte names one.
    pub fn kind(&self) -> Result<EventKind, crate::Error> {
        EventKind::try_from(self.kind)
    }

    /// Records how the flow ended: kind, leg, phase, the cause's code and the
    /// fields it names (an alert, a verify code and depth with its text, a rule).
    pub fn set_outcome(&mut self, o: &Outcome) {
        self.kind = o.kind as u8;
        self.leg = o.leg as u8;
        self.phase = o.phase as u8;
        self.cause = o.cause.code();
        match o.cause {
            Cause::AlertReceived(a) => self.alert_received = a,
            Cause::Certificate { reason, depth } => {
                self.verify_code = reason.code() as u16;
                self.verify_depth = depth;
                set_text(&mut self.verify_text, reason.text());
            }
            Cause::Policy { rule } => self.rule_index = rule.map_or(0, |r| r.saturating_add(1)),
            Cause::Admission(r) => self.cause_detail = r as u8,
            _ => {}
        }
    }

    /// How the flow ended, if every byte of it names something (a record is never
    /// trusted to be well formed).
    pub fn outcome(&self) -> Result<Outcome, crate::Error> {
        let cause = Cause::from_wire(
            self.cause,
            self.alert_received,
            (self.verify_code, self.verify_depth),
            self.rule_index,
            self.cause_detail,
        )
        .ok_or(crate::Error::UnknownValue { field: "Cause", value: self.cause })?;
        Ok(Outcome {
            kind: EventKind::try_from(self.kind)?,
            leg: Leg::try_from(self.leg)?,
            phase: Phase::try_from(self.phase)?,
            cause,
        })
    }

    /// The "Error details": the outcome's text, then the dataplane's own detail
    /// (`error_detail`, e.g. the TLS library's message) when there is one.
    pub fn error_text(&self) -> String {
        let detail = text(&self.error_detail);
        match (self.outcome(), detail) {
            (Ok(o), "") => o.text(),
            (Ok(o), d) => format!("{}: {d}", o.text()),
            (Err(_), d) => d.to_string(),
        }
    }

    /// Sets both endpoints: addresses, ports and `ip_version` (6 if either is
    /// IPv6, IPv4 addresses then read back IPv4-mapped).
    pub fn set_addrs(&mut self, src: SocketAddr, dst: SocketAddr) {
        self.ip_version = if src.is_ipv4() && dst.is_ipv4() { 4 } else { 6 };
        self.src_ip = ip_bytes(src.ip());
        self.dst_ip = ip_bytes(dst.ip());
        self.src_port = src.port();
        self.dst_port = dst.port();
    }

    /// Client address.
    pub fn src_ip(&self) -> IpAddr {
        ip_from(self.src_ip, self.ip_version)
    }

    /// Server address.
    pub fn dst_ip(&self) -> IpAddr {
        ip_from(self.dst_ip, self.ip_version)
    }

    /// Client address and port.
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(self.src_ip(), self.src_port)
    }

    /// Server address and port.
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(self.dst_ip(), self.dst_port)
    }

    /// The session as the seed prints it: `x2fd1f6`.
    pub fn session_label(&self) -> String {
        format!("x{:x}", self.session_id)
    }

    /// Whether a certificate chain was kept (`chain_sha256` not all zero).
    pub fn has_chain(&self) -> bool {
        self.chain_sha256 != [0; 32]
    }

    /// Every field by name: enums and alerts by name, addresses as text, the
    /// chain hash as hex (`null` when none), absent values as `null`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).unwrap_or(Value::Null)
    }

    /// The typed view of the record: what `events.jsonl`, `tlsgatectl events`
    /// and the console show.
    pub fn view(&self) -> EventView {
        let alert = |code: u8| {
            (code != ALERT_NONE).then(|| AlertView { code, name: alert_name(code).map(str::to_owned) })
        };
        let outcome = self.outcome();
        EventView {
            alert_received: alert(self.alert_received),
            alert_sent: alert(self.alert_sent),
            bytes_down: self.bytes_down,
            bytes_up: self.bytes_up,
            cause: outcome.as_ref().ok().map(|o| o.cause.label().to_owned()),
            chain_sha256: self.has_chain().then(|| hex(&self.chain_sha256)),
            cipher_suite: (self.cipher_suite != 0).then(|| format!("0x{:04x}", self.cipher_suite)),
            config_version: self.config_version,
            connection_id: self.connection_id,
            dst_ip: self.dst_ip().to_string(),
            dst_port: self.dst_port,
            error_detail: self.error_text(),
            event_id: self.event_id,
            inside_port: self.inside_port,
            ip_version: self.ip_version,
            kind: EventKind::label(self.kind).into_owned(),
            leg: Leg::label(self.leg).into_owned(),
            outside_port: self.outside_port,
            phase: Phase::label(self.phase).into_owned(),
            reason: outcome.as_ref().ok().map(|o| o.cause.reason().into_owned()),
            rule: text(&self.rule).to_owned(),
            rule_index: match outcome {
                Ok(Outcome { cause: Cause::Policy { rule }, .. }) => rule,
                _ => None,
            },
            server_cert_issuer: text(&self.server_cert_issuer).to_owned(),
            server_cert_subject: text(&self.server_cert_subject).to_owned(),
            session_id: self.session_label(),
            sni: text(&self.sni).to_owned(),
            src_ip: self.src_ip().to_string(),
            src_port: self.src_port,
            time_ns: self.time_ns,
            tls_version: match self.tls_version {
                0 => None,
                v => Some(tls_version_name(v).map_or_else(|| format!("0x{v:04x}"), str::to_owned)),
            },
            verify_code: self.verify_code,
            verify_depth: self.verify_depth,
            verify_text: text(&self.verify_text).to_owned(),
            worker: self.worker,
            ja4: Some(text(&self.ja4).to_owned()).filter(|s| !s.is_empty()),
            alpn_client: Some(text(&self.alpn_client).to_owned()).filter(|s| !s.is_empty()),
            alpn_server: Some(text(&self.alpn_server).to_owned()).filter(|s| !s.is_empty()),
            group_client: group_label(self.group_client),
            group_server: group_label(self.group_server),
            ech_offered: self.ech_offered != 0,
        }
    }
}

/// A named group as shown (`X25519MLKEM768`, `x25519`, `secp256r1`, or hex).
pub fn group_label(g: u16) -> Option<String> {
    Some(match g {
        0 => return None,
        0x11ec => "X25519MLKEM768".into(),
        0x001d => "X25519".into(),
        0x0017 => "secp256r1".into(),
        0x0018 => "secp384r1".into(),
        0x0019 => "secp521r1".into(),
        0x001e => "X448".into(),
        0x0100 => "ffdhe2048".into(),
        v => format!("0x{v:04x}"),
    })
}

/// A TLS alert in an event view.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertView {
    /// The alert description's code.
    pub code: u8,
    /// Its name (RFC 8446), when listed.
    pub name: Option<String>,
}

/// An event as people and tools see it: one line of `events.jsonl`, an element
/// of `tlsgatectl events`, the seed's panel. Fields in alphabetical order (the
/// JSON keys' order). Built from the record by [`EventRecord::view`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EventView {
    /// The alert the appliance received (either leg).
    pub alert_received: Option<AlertView>,
    /// The alert it sent.
    pub alert_sent: Option<AlertView>,
    /// ALPN agreed with the client (`h2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_client: Option<String>,
    /// ALPN agreed with the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_server: Option<String>,
    /// Bytes server → client.
    pub bytes_down: u64,
    /// Bytes client → server.
    pub bytes_up: u64,
    /// The cause's label (`Cause::label`).
    pub cause: Option<String>,
    /// SHA-256 of the server chain kept for `trust add --from-event`.
    pub chain_sha256: Option<String>,
    /// The server leg's cipher suite (`0x1301`).
    pub cipher_suite: Option<String>,
    /// The configuration version the flow was decided under.
    pub config_version: u64,
    /// The connection id.
    pub connection_id: u64,
    /// Server address.
    pub dst_ip: String,
    /// Server port.
    pub dst_port: u16,
    /// The ClientHello offered `encrypted_client_hello` (real or GREASE); the
    /// appliance terminates with the outer SNI.
    #[serde(default)]
    pub ech_offered: bool,
    /// The "Error details" text.
    pub error_detail: String,
    /// The event id.
    pub event_id: u64,
    /// Key-exchange group with the client (`X25519MLKEM768`, `X25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_client: Option<String>,
    /// Key-exchange group with the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_server: Option<String>,
    /// The inside port index.
    pub inside_port: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// The client's JA4 fingerprint, when its ClientHello was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// What happened (`abort`, `decrypted`, …).
    pub kind: String,
    /// The side the cause belongs to.
    pub leg: String,
    /// The outside port index.
    pub outside_port: u8,
    /// How far the connection got.
    pub phase: String,
    /// The cause, refined (the Prometheus `reason`).
    pub reason: Option<String>,
    /// The policy rule that decided.
    pub rule: String,
    /// That rule's index, when a rule decided.
    pub rule_index: Option<u32>,
    /// The server certificate's issuer.
    pub server_cert_issuer: String,
    /// The server certificate's subject.
    pub server_cert_subject: String,
    /// The session label.
    pub session_id: String,
    /// The client's SNI.
    pub sni: String,
    /// Client address.
    pub src_ip: String,
    /// Client port.
    pub src_port: u16,
    /// When (ns since the epoch).
    pub time_ns: u64,
    /// The server leg's TLS version (`TLSv1.3`).
    pub tls_version: Option<String>,
    /// OpenSSL's verify code of a certificate failure (0: none).
    pub verify_code: u16,
    /// Its depth.
    pub verify_depth: u8,
    /// Its text.
    pub verify_text: String,
    /// The worker.
    pub worker: u8,
}

impl fmt::Debug for EventRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecord")
            .field("event_id", &self.event_id)
            .field("time_ns", &self.time_ns)
            .field("kind", &EventKind::label(self.kind))
            .field("worker", &self.worker)
            .field("leg", &Leg::label(self.leg))
            .field("phase", &Phase::label(self.phase))
            .field("src", &self.src())
            .field("dst", &self.dst())
            .field("tls_version", &format_args!("{:#06x}", self.tls_version))
            .field("cipher_suite", &format_args!("{:#06x}", self.cipher_suite))
            .field("alert_sent", &alert_label(self.alert_sent))
            .field("alert_received", &alert_label(self.alert_received))
            .field("verify", &(self.verify_code, self.verify_depth, text(&self.verify_text)))
            .field("config_version", &self.config_version)
            .field("connection_id", &self.connection_id)
            .field("session_id", &format_args!("x{:x}", self.session_id))
            .field("ports", &(self.inside_port, self.outside_port))
            .field("bytes", &(self.bytes_up, self.bytes_down))
            .field("chain_sha256", &format_args!("{}", hex(&self.chain_sha256)))
            .field("sni", &text(&self.sni))
            .field("rule", &text(&self.rule))
            .field("server_cert_subject", &text(&self.server_cert_subject))
            .field("server_cert_issuer", &text(&self.server_cert_issuer))
            .field("cause", &self.outcome().map(|o| o.cause))
            .field("error_detail", &text(&self.error_detail))
            .finish()
    }
}

impl PartialEq for EventRecord {
    fn eq(&self, other: &Self) -> bool {
        bytemuck::bytes_of(self) == bytemuck::bytes_of(other)
    }
}

impl Eq for EventRecord {}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn ip_from(bytes: [u8; 16], version: u8) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) if version == 4 => v4.into(),
        _ => v6.into(),
    }
}

/// `handshake_failure(40)`, `none`.
fn alert_label(code: u8) -> String {
    match (code, alert_name(code)) {
        (ALERT_NONE, _) => "none".into(),
        (_, Some(name)) => format!("{name}({code})"),
        (_, None) => format!("unknown({code})"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_surprises() {
        assert_eq!(std::mem::size_of::<EventRecord>(), 1152);
        assert_eq!(std::mem::align_of::<EventRecord>(), 8);
        let r = EventRecord::new(EventKind::Abort);
        let base = &r as *const _ as usize;
        assert_eq!(&r.kind as *const _ as usize - base, 62);
        assert_eq!(&r.src_ip as *const _ as usize - base, 72);
        assert_eq!(&r.sni as *const _ as usize - base, 136);
        assert_eq!(&r.verify_text as *const _ as usize - base, 968);
        assert_eq!(&r.cause as *const _ as usize - base, 1016);
        assert_eq!(&r.rule_index as *const _ as usize - base, 1020);
        assert_eq!(&r.ja4 as *const _ as usize - base, 1024);
        assert_eq!(&r.alpn_client as *const _ as usize - base, 1064);
        assert_eq!(&r.group_client as *const _ as usize - base, 1096);
        assert_eq!(&r.ech_offered as *const _ as usize - base, 1100);
    }

    #[test]
    fn enums_round_trip_through_bytes() {
        for v in 0..=255u8 {
            if let Ok(k) = EventKind::try_from(v) {
                assert_eq!(k as u8, v);
            }
        }
        assert_eq!(EventKind::try_from(7).ok(), Some(EventKind::NotDecrypted));
        let e = EventKind::try_from(0).unwrap_err();
        assert_eq!(e.to_string(), "unknown EventKind value 0");
        assert_eq!(Phase::try_from(3).map(Phase::name).ok(), Some("server_handshake"));
        assert_eq!(Leg::Server.name(), "server");
    }

    #[test]
    fn text_truncates_on_char_boundary() {
        let mut f = [0u8; 8];
        assert!(set_text(&mut f, "abc"));
        assert_eq!(text(&f), "abc");
        // "é" is two bytes: 8 bytes of "aaaaaaaé" would split it.
        assert!(!set_text(&mut f, "aaaaaaaé"));
        assert_eq!(text(&f), "aaaaaaa");
        assert_eq!(f[7], 0);
        // A three-byte character cut at every position.
        for pre in 0..8 {
            let s = format!("{}€x", "a".repeat(pre));
            let whole = set_text(&mut f, &s);
            let t = text(&f);
            assert!(s.starts_with(t));
            // Whole, or cut at most a three-byte character short of the field.
            assert!(whole && t == s || !whole && t.len() > 8 - 3, "{pre}: {t:?}");
        }
        // Exactly full: no NUL needed.
        assert!(set_text(&mut f, "12345678"));
        assert_eq!(text(&f), "12345678");
        // Embedded NUL ends the text.
        assert!(!set_text(&mut f, "ab\0cd"));
        assert_eq!(text(&f), "ab");
        // Garbage from shared memory reads as its valid prefix.
        let bad = [b'o', b'k', 0xff, b'x', 0, 0, 0, 0];
        assert_eq!(text(&bad), "ok");
    }

    #[test]
    fn addresses_read_back() {
        let mut r = EventRecord::new(EventKind::Abort);
        r.set_addrs("10.1.1.10:64193".parse().unwrap(), "172.16.1.1:443".parse().unwrap());
        assert_eq!(r.ip_version, 4);
        assert_eq!(r.src().to_string(), "10.1.1.10:64193");
        assert_eq!(r.dst_ip().to_string(), "172.16.1.1");
        r.set_addrs("[2001:db8::1]:5000".parse().unwrap(), "[2001:db8::2]:443".parse().unwrap());
        assert_eq!(r.ip_version, 6);
        assert_eq!(r.dst().to_string(), "[2001:db8::2]:443");
    }

    #[test]
    fn event_ids_are_distinct_and_ordered() {
        let a = make_event_id(1_700_000_000, 0, 0);
        assert_ne!(a, make_event_id(1_700_000_000, 1, 0));
        assert!(make_event_id(1_700_000_000, 0, 1) > a);
        // A full second of 2^20 events on one worker stays below the next start.
        assert!(make_event_id(1_700_000_000, 255, (1 << 20) - 1) < make_event_id(1_700_000_001, 0, 0));
    }

    #[test]
    fn debug_is_readable() {
        let mut r = EventRecord::new(EventKind::Abort);
        r.session_id = 0x2fd1f6;
        set_text(&mut r.sni, "example.test");
        let s = format!("{r:?}");
        assert!(s.contains("kind: \"abort\""), "{s}");
        assert!(s.contains("alert_sent: \"none\""), "{s}");
        assert!(s.contains("x2fd1f6"), "{s}");
        assert!(s.contains("\"example.test\""), "{s}");
    }
}
