//! JA4 client fingerprints (FoxIO's specification), from the ClientHello as the
//! client sent it.
//!
//! `JA4 = a_b_c`:
//! - `a`: `t` (TCP), the highest version offered (`supported_versions` when
//!   present, else the hello's own version: `13`, `12`, `11`, `10`, `s3`, `s2`,
//!   `00` for anything else), `d` when the hello carries an SNI extension (else
//!   `i`), the number of cipher suites and of extensions (two digits each, at
//!   most 99, GREASE values not counted, SNI and ALPN counted), and the first and
//!   last character of the first ALPN value (`00` when there is none; a byte
//!   `0x80` or above writes `9`; a control byte at either end makes it `99`).
//! - `b`: the first 12 hex digits of the SHA-256 of the cipher suites, GREASE
//!   removed, as 4-digit lowercase hex, sorted, comma-separated
//!   (`000000000000` when there are none).
//! - `c`: the same over the extensions, GREASE, SNI (`0000`) and ALPN (`0010`)
//!   removed, sorted; then `_` and the signature algorithms in the order the
//!   client sent them (GREASE removed), when it sent any.
//!
//! [`Ja4::raw`] is JA4_r: the same with the lists themselves instead of their
//! hashes. A fingerprint is something the client claims: anyone can send any
//! ClientHello.

use std::fmt;

/// A client's JA4 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4 {
    a: String,
    ciphers: String,
    extensions: String,
    ech: bool,
    server_name: Option<String>,
}

impl Ja4 {
    /// The fingerprint of a ClientHello in TLS records as the client sent them
    /// (handshake records; a hello split over several records is joined).
    /// `None` when the bytes hold no complete, well-formed ClientHello.
    pub fn from_records(records: &[u8]) -> Option<Ja4> {
        let mut handshake = Vec::new();
        let mut rest = records;
        while rest.len() >= 5 {
            let (kind, len) = (rest[0], usize::from(u16::from_be_bytes([rest[3], rest[4]])));
            if kind != 22 || rest.len() < 5 + len {
                break;
            }
            handshake.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
            if handshake.len() >= 4 {
                let body_len = usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]);
                if handshake.len() >= 4 + body_len {
                    if handshake[0] != 1 {
                        return None;
                    }
                    return Ja4::from_hello(&handshake[4..4 + body_len]);
                }
            }
        }
        None
    }

    /// The fingerprint of a ClientHello message body (after its 4-byte handshake
    /// header). `None` when it is malformed: a fingerprint of a broken hello
    /// would match nothing another tool computes.
    pub fn from_hello(body: &[u8]) -> Option<Ja4> {
        let h = Hello::parse(body)?;
        let grease = |v: &u16| v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff;
        let version = h.versions.iter().copied().filter(|v| !grease(v)).max().unwrap_or(h.legacy_version);
        let version = match version {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            0xfeff => "d1",
            0xfefd => "d2",
            0xfefc => "d3",
            _ => "00",
        };
        let mut ciphers: Vec<u16> = h.ciphers.iter().copied().filter(|c| !grease(c)).collect();
        let extensions: Vec<u16> = h.extensions.iter().copied().filter(|e| !grease(e)).collect();
        let alpn = match h.alpn.as_deref() {
            None | Some([]) => "00".to_string(),
            Some(v) => {
                let end = |b: u8| match b {
                    0x20..=0x7e => Some(b as char),
                    0x80.. => Some('9'),
                    _ => None,
                };
                match (end(v[0]), end(v[v.len() - 1])) {
                    (Some(f), Some(l)) => format!("{f}{l}"),
                    _ => "99".to_string(),
                }
            }
        };
        let a = format!(
            "t{version}{}{:02}{:02}{alpn}",
            if h.sni { 'd' } else { 'i' },
            ciphers.len().min(99),
            extensions.len().min(99)
        );
        ciphers.sort_unstable();
        let mut sorted: Vec<u16> = extensions.into_iter().filter(|e| *e != 0x0000 && *e != 0x0010).collect();
        sorted.sort_unstable();
        let hex = |v: &[u16]| v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",");
        let mut ext = hex(&sorted);
        let sigs: Vec<u16> = h.signature_algorithms.iter().copied().filter(|s| !grease(s)).collect();
        if !sigs.is_empty() {
            ext.push('_');
            ext.push_str(&hex(&sigs));
        }
        let ech = h.extensions.contains(&0xfe0d);
        Some(Ja4 { a, ciphers: hex(&ciphers), extensions: ext, ech, server_name: h.server_name })
    }

    /// The host name of the hello's server_name extension, when it has one that
    /// is printable ASCII (what the policy matches: `tlsgatectl policy explain
    /// --pcap` reads it from captures).
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether the hello offered `encrypted_client_hello` (0xfe0d): real, or
    /// GREASE (Chromium always sends one). Only recorded: never decided on.
    pub fn offers_ech(&self) -> bool {
        self.ech
    }

    /// JA4_r: the lists instead of their hashes.
    pub fn raw(&self) -> String {
        format!("{}_{}_{}", self.a, self.ciphers, self.extensions)
    }
}

fn truncated_sha256(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.a, truncated_sha256(&self.ciphers), truncated_sha256(&self.extensions))
    }
}

/// What JA4 reads of a ClientHello.
struct Hello {
    legacy_version: u16,
    ciphers: Vec<u16>,
    extensions: Vec<u16>,
    sni: bool,
    server_name: Option<String>,
    alpn: Option<Vec<u8>>,
    versions: Vec<u16>,
    signature_algorithms: Vec<u16>,
}

/// A bounds-checked reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<Reader<'a>> {
        let n = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(n).map(Reader)
    }
    fn u16s(mut self) -> Option<Vec<u16>> {
        if !self.0.len().is_multiple_of(2) {
            return None;
        }
        let mut out = Vec::with_capacity(self.0.len() / 2);
        while !self.0.is_empty() {
            out.push(self.u16()?);
        }
        Some(out)
    }
}

impl Hello {
    fn parse(body: &[u8]) -> Option<Hello> {
        let mut r = Reader(body);
        let legacy_version = r.u16()?;
        r.take(32)?; // random
        r.vec(1)?; // session id
        let ciphers = r.vec(2)?.u16s()?;
        r.vec(1)?; // compression methods
        let mut h = Hello {
            legacy_version,
            ciphers,
            extensions: Vec::new(),
            sni: false,
            server_name: None,
            alpn: None,
            versions: Vec::new(),
            signature_algorithms: Vec::new(),
        };
        if r.0.is_empty() {
            return Some(h); // no extensions at all (allowed before TLS 1.3)
        }
        let mut exts = r.vec(2)?;
        if !r.0.is_empty() {
            return None;
        }
        while !exts.0.is_empty() {
            let kind = exts.u16()?;
            let mut data = exts.vec(2)?;
            h.extensions.push(kind);
            match kind {
                0x0000 => {
                    h.sni = true;
                    // server_name_list: name_type 0 (host_name), then the name.
                    let name = data.vec(2).and_then(|mut list| {
                        (list.take(1)? == [0]).then_some(())?;
                        list.vec(2).map(|n| n.0)
                    });
                    if let Some(name) = name.filter(|n| !n.is_empty() && n.iter().all(u8::is_ascii_graphic)) {
                        h.server_name = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
                0x0010 => {
                    let mut list = data.vec(2)?;
                    if !list.0.is_empty() {
                        h.alpn = Some(list.vec(1)?.0.to_vec());
                    }
                }
                0x002b => h.versions = data.vec(1)?.u16s()?,
                0x000d => h.signature_algorithms = data.vec(2)?.u16s()?,
                _ => {}
            }
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grease_values_are_the_sixteen_of_rfc_8701() {
        let grease = |v: u16| v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff;
        let all: Vec<u16> = (0..=u16::MAX).filter(|v| grease(*v)).collect();
        assert_eq!(all.len(), 16);
        assert_eq!((all[0], all[15]), (0x0a0a, 0xfafa));
        assert!(!grease(0x0a1a) && !grease(0x1a0a));
    }
}
