//! Literals: addresses, CIDRs, ranges, ports and SNI patterns, parsed into numbers.
//!
//! Addresses become inclusive `u128` spans per family (IPv4 uses the low 32 bits), so
//! one interval type serves both families.

use std::net::IpAddr;

use crate::error::Problem;
use crate::model::PortSpec;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) family: Family,
    pub(crate) lo: u128,
    pub(crate) hi: u128,
}

/// An address as its family and number.
pub(crate) fn address_key(addr: IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// Whether a condition entry is an address literal rather than a name: it holds a ':'
/// (IPv6) or starts with a digit. Object and group names can be neither.
pub(crate) fn is_literal(text: &str) -> bool {
    text.contains(':') || text.starts_with(|c: char| c.is_ascii_digit())
}

/// Object and group names: a letter or '_' first, then letters, digits, '-', '_', '.'.
pub(crate) fn is_valid_object_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses `10.0.0.1`, `10.0.0.0/8`, `10.0.0.1-10.0.0.9`, and the same for IPv6.
pub(crate) fn parse_address_literal(text: &str) -> Result<Span, Problem> {
    let text = text.trim();
    if let Some((first, last)) = text.split_once('-') {
        let bad = || Problem::InvalidRange(text.to_string());
        let (fa, lo) = address_key(first.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let (fb, hi) = address_key(last.trim().parse::<IpAddr>().map_err(|_| bad())?);
        if fa != fb || lo > hi {
            return Err(bad());
        }
        return Ok(Span { family: fa, lo, hi });
    }
    if let Some((addr, prefix)) = text.split_once('/') {
        let bad = || Problem::InvalidCidr(text.to_string());
        let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let prefix: u32 = prefix.trim().parse().map_err(|_| bad())?;
        let (family, value) = address_key(ip);
        let bits: u32 = if family == Family::V4 { 32 } else { 128 };
        if prefix > bits {
            return Err(bad());
        }
        let host_bits = bits - prefix;
        let host_mask: u128 = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let lo = value & !host_mask;
        if lo != value {
            return Err(Problem::CidrHostBits(text.to_string(), format_cidr(family, lo, prefix)));
        }
        return Ok(Span { family, lo, hi: lo | host_mask });
    }
    let ip: IpAddr = text.parse().map_err(|_| Problem::InvalidAddress(text.to_string()))?;
    let (family, value) = address_key(ip);
    Ok(Span { family, lo: value, hi: value })
}

fn format_cidr(family: Family, value: u128, prefix: u32) -> String {
    match family {
        Family::V4 => format!("{}/{prefix}", std::net::Ipv4Addr::from(value as u32)),
        Family::V6 => format!("{}/{prefix}", std::net::Ipv6Addr::from(value)),
    }
}

/// Parses a port (`443`, `"443"`) or an inclusive range (`"8000-8080"`).
pub(crate) fn parse_port(spec: &PortSpec) -> Result<(u16, u16), Problem> {
    let bad = || Problem::InvalidPort(spec.to_string());
    match spec {
        PortSpec::Number(n) => u16::try_from(*n).map(|p| (p, p)).map_err(|_| bad()),
        PortSpec::Text(text) => {
            let one = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
            let (lo, hi) = match text.split_once('-') {
                Some((a, b)) => (one(a)?, one(b)?),
                None => {
                    let p = one(text)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(bad());
            }
            Ok((lo, hi))
        }
    }
}

/// An SNI pattern: an exact host name, or `*.suffix` matching one or more labels below
/// the suffix (not the suffix itself). Stored lower-case without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SniPattern {
    wildcard: bool,
    name: Box<str>,
}

impl SniPattern {
    /// Parses and normalises a pattern; see the type's description.
    pub(crate) fn parse(text: &str) -> Result<SniPattern, Problem> {
        let bad = || Problem::InvalidSni(text.to_string());
        let lower = text.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(SniPattern { wildcard, name: name.into() })
    }

    /// Heap bytes held (for memory estimates).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.name.len()
    }

    /// Whether `sni` (any case, trailing dot ignored) matches. Never panics on odd input.
    pub(crate) fn matches(&self, sni: &str) -> bool {
        let sni = sni.as_bytes();
        let sni = sni.strip_suffix(b".").unwrap_or(sni);
        let name = self.name.as_bytes();
        if !self.wildcard {
            return sni.eq_ignore_ascii_case(name);
        }
        // `<one or more labels>.<name>`: at least one byte, then a dot, then the name.
        if sni.len() < name.len() + 2 {
            return false;
        }
        let split = sni.len() - name.len();
        sni[split - 1] == b'.' && sni[split - 2] != b'.' && sni[split..].eq_ignore_ascii_case(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(text: &str) -> Span {
        parse_address_literal(text).unwrap()
    }

    #[test]
    fn addresses_cidrs_ranges() {
        assert_eq!(span("10.0.0.1"), Span { family: Family::V4, lo: 0x0a00_0001, hi: 0x0a00_0001 });
        assert_eq!(span("10.0.0.0/8"), Span { family: Family::V4, lo: 0x0a00_0000, hi: 0x0aff_ffff });
        assert_eq!(span("0.0.0.0/0"), Span { family: Family::V4, lo: 0, hi: u128::from(u32::MAX) });
        assert_eq!(span("::/0"), Span { family: Family::V6, lo: 0, hi: u128::MAX });
        assert_eq!(span("10.0.0.5/32").lo, span("10.0.0.5").lo);
        assert_eq!(span("2001:db8::/32").hi, 0x2001_0db8_ffff_ffff_ffff_ffff_ffff_ffff);
        assert_eq!(span(" 10.0.0.1 - 10.0.0.9 ").hi, 0x0a00_0009);
        assert_eq!(span("::1-::2").family, Family::V6);
    }

    #[test]
    fn bad_literals() {
        let err = |t: &str| parse_address_literal(t).unwrap_err();
        assert_eq!(err("10.0.0.0/33"), Problem::InvalidCidr("10.0.0.0/33".into()));
        assert_eq!(err("::/129"), Problem::InvalidCidr("::/129".into()));
        assert_eq!(err("10.0.0.1/8"), Problem::CidrHostBits("10.0.0.1/8".into(), "10.0.0.0/8".into()));
        assert_eq!(err("10.0.0.9-10.0.0.1"), Problem::InvalidRange("10.0.0.9-10.0.0.1".into()));
        assert_eq!(err("10.0.0.1-::1"), Problem::InvalidRange("10.0.0.1-::1".into()));
        assert_eq!(err("10.0.0.256"), Problem::InvalidAddress("10.0.0.256".into()));
        assert_eq!(err("fe80::1%eth0"), Problem::InvalidAddress("fe80::1%eth0".into()));
    }

    #[test]
    fn names_and_literals() {
        assert!(is_literal("10.0.0.1") && is_literal("fe80::1") && is_literal("::1"));
        assert!(!is_literal("web-srv"));
        assert!(is_valid_object_name("web-srv") && is_valid_object_name("_x.y"));
        assert!(!is_valid_object_name("1lan") && !is_valid_object_name("a b") && !is_valid_object_name(""));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port(&PortSpec::Number(443)), Ok((443, 443)));
        assert_eq!(parse_port(&PortSpec::Text("8000-8080".into())), Ok((8000, 8080)));
        assert_eq!(parse_port(&PortSpec::Text("0-65535".into())), Ok((0, 65535)));
        assert!(parse_port(&PortSpec::Number(65536)).is_err());
        assert!(parse_port(&PortSpec::Number(-1)).is_err());
        assert!(parse_port(&PortSpec::Text("9-1".into())).is_err());
        assert!(parse_port(&PortSpec::Text("http".into())).is_err());
    }

    #[test]
    fn sni_patterns() {
        let p = |t: &str| SniPattern::parse(t).unwrap();
        let wild = p("*.Example.COM.");
        assert!(wild.matches("www.example.com") && wild.matches("a.b.EXAMPLE.com."));
        assert!(!wild.matches("example.com") && !wild.matches("badexample.com"));
        assert!(!wild.matches(".example.com") && !wild.matches("..example.com"));
        let exact = p("example.com");
        assert!(exact.matches("EXAMPLE.com.") && !exact.matches("www.example.com"));
        assert!(!exact.matches("") && !wild.matches("é.example.co"));
        for bad in ["", "*", "*.", "foo.*.com", "a..b", "exa mple.com", "**.x", "*x.com"] {
            assert!(SniPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
